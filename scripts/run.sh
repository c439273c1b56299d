#!/usr/bin/env bash
# Installs what is missing, builds the release binary and starts streamgate with the in-memory
# registry on the default ports, then prints every listener it started and how to publish and
# play through them. Extra arguments go to streamgate (try --help).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

need_cargo
apt_install gcc pkg-config
# Transcoding (cargo feature `transcode`, on by default): FFmpeg 5.1's libraries for ffmpeg-next, and
# libclang for its bindgen (tests/transcode.rs, src/transcode/).
apt_install libavcodec-dev libavformat-dev libavutil-dev libswscale-dev libswresample-dev libavfilter-dev libavdevice-dev libclang-dev
cargo build --release --locked

# streamgate's log goes through scripts/announce.sh, which prints every listener's address and
# how to use it once streamgate has bound them all.
exec ./target/release/streamgate "$@" 2> >(scripts/announce.sh)
