#!/usr/bin/env bash
# The "idle" scenario side by side (direct, streamgate splice, streamgate copy, HAProxy); see perf/run.py.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
need_cargo
apt_install gcc pkg-config ffmpeg nginx libnginx-mod-rtmp haproxy python3
ulimit -n 65536 2>/dev/null || true
cargo build --release --locked --bins
exec python3 perf/run.py idle "$@"
