#!/usr/bin/env bash
# A soak run through the release build (perf/soak.py): one live stream with fan-out and churn,
# RSS and descriptors sampled every 10 s; installs
# what is missing, builds release, runs it; the summary goes to perf/results/soak-*.md.
#
# usage: perf/soak.sh [--hours H | --minutes M] [--relay splice|copy] [--every S]
#            [--load-players N] [--churn-every S] [--churn-players N] [--warmup-minutes M]
#            [--out PATH|-]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
need_cargo
apt_install gcc pkg-config ffmpeg nginx libnginx-mod-rtmp rtmpdump python3
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
cargo build --release --locked --bins
# `perf/soak.sh 30` is `--minutes 30`.
if [[ "${1:-}" =~ ^[0-9]+([.][0-9]+)?$ ]]; then set -- --minutes "$@"; fi
exec python3 perf/soak.py "$@"
