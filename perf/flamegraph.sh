#!/usr/bin/env bash
# Where does streamgate spend its CPU? Runs the proxy in front of a fresh nginx-rtmp origin
# under one load-generator workload, samples it, and writes to perf/results/flame-<workload>/:
#   report.txt   the hottest functions (perf report, or callgrind_annotate)
#   stacks.folded + flame.svg   the flamegraph (perf only)
# Uses Debian's linux-perf with the software cpu-clock event (this VM has no hardware
# counters); where perf cannot sample, falls back to valgrind --tool=callgrind, which counts
# instructions and is repeatable run to run.
#
# usage: perf/flamegraph.sh [churn|fanout|bulk] [seconds]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
need_cargo
apt_install gcc pkg-config ffmpeg nginx libnginx-mod-rtmp linux-perf valgrind python3
workload=${1:-churn}
seconds=${2:-15}
case "$workload" in
  churn) load_args=(--publishers 1 --paced --churn 50) ;;
  fanout) load_args=(--publishers 1 --paced --players 200) ;;
  bulk) load_args=(--publishers 1 --players 1) ;;
  *) echo "unknown workload $workload (churn, fanout, bulk)" >&2; exit 2 ;;
esac
cargo build --release --locked --bins
out=perf/results/flame-$workload
mkdir -p "$out"
tmp=$(mktemp -d)
trap 'nginx -p "$tmp" -c "$tmp/nginx.conf" -s quit 2>/dev/null || true; kill $(jobs -p) 2>/dev/null || true; rm -rf "$tmp"' EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
origin=$(port); rtmp=$(port); api=$(port)
mkdir -p "$tmp/logs"
cat > "$tmp/nginx.conf" <<CONF
load_module /usr/lib/nginx/modules/ngx_rtmp_module.so;
worker_processes 1; daemon on; pid $tmp/nginx.pid; error_log $tmp/logs/error.log warn;
events { worker_connections 4096; }
rtmp { server { listen 127.0.0.1:$origin; chunk_size 4096; application live { live on; record off; } } }
CONF
nginx -p "$tmp" -c "$tmp/nginx.conf"
ffmpeg -v error -y -f lavfi -i testsrc2=size=1280x720:rate=25 -f lavfi -i sine -c:v libx264 -preset ultrafast \
  -b:v 2M -g 50 -pix_fmt yuv420p -c:a aac -t 20 -f flv "$tmp/media.flv"

./target/release/streamgate --rtmp-server 127.0.0.1:$rtmp --system-api 127.0.0.1:$api --log-level warn &
proxy=$!
sleep 1
curl -s -XPOST "127.0.0.1:$api/api/v1/srs/register" \
  -d "{\"ip\":\"127.0.0.1\",\"server\":\"flame\",\"service\":\"o\",\"pid\":\"1\",\"rtmp\":[\"$origin\"]}" >/dev/null
load() { ./target/release/streamgate-load --url "rtmp://127.0.0.1:$rtmp/live" --flv "$tmp/media.flv" --duration "$1" "${load_args[@]}" >/dev/null; }

if perf record -F 999 -e cpu-clock -g -p "$proxy" -o "$tmp/perf.data" -- sleep 0.2 >/dev/null 2>&1; then
  perf record -F 999 -e cpu-clock -g -p "$proxy" -o "$tmp/perf.data" >/dev/null 2>&1 &
  rec=$!
  load "$seconds"
  kill -INT $rec; wait $rec || true
  perf report -i "$tmp/perf.data" --stdio --no-children --percent-limit 1 2>/dev/null > "$out/report.txt"
  perf script -i "$tmp/perf.data" 2>/dev/null | python3 perf/flame.py "$out/stacks.folded" "$out/flame.svg"
  echo "wrote $out/report.txt, $out/stacks.folded, $out/flame.svg" >&2
else
  kill $proxy; wait $proxy || true
  valgrind --tool=callgrind --callgrind-out-file="$tmp/callgrind.out" ./target/release/streamgate \
    --rtmp-server 127.0.0.1:$rtmp --system-api 127.0.0.1:$api --shards 1 --log-level warn &
  proxy=$!
  sleep 5
  curl -s -XPOST "127.0.0.1:$api/api/v1/srs/register" \
    -d "{\"ip\":\"127.0.0.1\",\"server\":\"flame\",\"service\":\"o\",\"pid\":\"1\",\"rtmp\":[\"$origin\"]}" >/dev/null
  load "$seconds"
  kill -TERM $proxy; wait $proxy || true
  callgrind_annotate "$tmp/callgrind.out" | head -80 > "$out/report.txt"
  echo "perf cannot sample here; wrote the callgrind profile to $out/report.txt" >&2
fi
head -60 "$out/report.txt"
