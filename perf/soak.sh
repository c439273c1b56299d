#!/usr/bin/env bash
# A soak run of one live stream through the release build for hours (perf/soak.py): installs
# what is missing, builds release, runs it; the summary goes to perf/results/soak-*.md.
#
# usage: perf/soak.sh [--hours H | --minutes M] [--relay splice|copy] [--every S]
#            [--load-players N] [--out PATH|-]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
need_cargo
apt_install gcc pkg-config ffmpeg nginx libnginx-mod-rtmp rtmpdump python3
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
cargo build --release --locked --bins
exec python3 perf/soak.py "$@"
