#!/usr/bin/env bash
# One benchmark scenario side by side: direct to the origin, streamgate --relay splice,
# streamgate --relay copy and HAProxy in TCP mode, against one origin (nginx-rtmp for the RTMP
# scenarios, streamgate-load origin-flv for the HTTP-FLV ones).
# Installs what is missing, builds release, runs perf/run.py; the table is appended to
# perf/results/<date>-<commit>.md (or --out PATH; --out - only prints it) and printed.
#
# usage: perf/scenario.sh fanout|bulk|churn|idle|httpflv|httpflv-churn|edge-churn [--duration S]
#            [--targets direct,splice,copy,splice-batch,edge,edge-merge,haproxy,...]
#            [--players-with load|rtmpdump] [--load-args "--players 50"] [--out PATH|-]
# (every option is perf/run.py's: perf/run.py --help)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
need_cargo
apt_install gcc pkg-config ffmpeg nginx libnginx-mod-rtmp haproxy python3
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
cargo build --release --locked --bins
exec python3 perf/run.py "$@"
