#!/usr/bin/env bash
# Installs what is missing, builds the release binary and starts streamgate with the in-memory
# registry on the default ports. Extra arguments go to streamgate (try --help).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

need_cargo
apt_install gcc pkg-config
cargo build --release --locked

cat >&2 <<'HELP'
streamgate is starting on the default ports:
  RTMP 11935 | System API 12025

Register an origin (an SRS heartbeat does this by itself; see README), for example an
nginx-rtmp or SRS listening for RTMP on 127.0.0.1:1935:

  curl -X POST http://127.0.0.1:12025/api/v1/srs/register -H 'Content-Type: application/json' \
       -d '{"device_id":"origin1","ip":"127.0.0.1","server":"srv1","service":"svc1","pid":"1","rtmp":["1935"]}'

Registration is accepted from this host only until you pass --register-allow CIDR (or turn
auth on with --http-api-auth-enabled on and a token); see "Security defaults" in the README.

  curl http://127.0.0.1:12025/api/v1/origins      # what is registered, alive and proven
  curl http://127.0.0.1:12025/api/v1/streams      # which stream is pinned where

Publish and play through the proxy:

  ffmpeg -re -f lavfi -i testsrc=size=640x360:rate=25 -c:v libx264 -g 50 -f flv rtmp://127.0.0.1:11935/live/demo
  ffprobe rtmp://127.0.0.1:11935/live/demo

Stop with Ctrl-C (connections drain for up to --grace-quit-timeout).
HELP
exec ./target/release/streamgate "$@"
