#!/usr/bin/env bash
# One benchmark scenario side by side: direct to the origin, streamgate --relay splice,
# streamgate --relay copy and HAProxy in TCP mode, against one nginx-rtmp origin.
# Installs what is missing, builds release, runs perf/run.py; the table is appended to
# perf/results/<date>-<commit>.md and printed.
#
# usage: perf/scenario.sh fanout|bulk|churn|idle [--duration S] [--targets direct,splice,...]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
need_cargo
apt_install gcc pkg-config ffmpeg nginx libnginx-mod-rtmp haproxy python3
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
cargo build --release --locked --bins
exec python3 perf/run.py "$@"
