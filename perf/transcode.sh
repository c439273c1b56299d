#!/usr/bin/env bash
# The transcode scenario (perf/transcode.py): streamgate's in-process ladder against the ffmpeg
# CLI doing the same ladder, one run. Installs what is missing, builds release, appends the table
# to perf/results/<date>-transcode.md (or --out PATH; --out - only prints it).
#
# usage: perf/transcode.sh [--seconds 30] [--preset veryfast] [--out PATH|-]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
need_cargo
apt_install gcc pkg-config ffmpeg nginx libnginx-mod-rtmp python3
apt_install libavcodec-dev libavformat-dev libavutil-dev libswscale-dev libswresample-dev libavfilter-dev libavdevice-dev libclang-dev
cargo build --release --locked --bin streamgate
exec python3 perf/transcode.py "$@"
