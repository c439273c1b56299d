#!/usr/bin/env bash
# Installs what the tests need (Debian packages, once), then runs every check and test:
# rustfmt, clippy with warnings as errors, and cargo test (unit + integration tests that start
# the real binary and real peers on loopback).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

need_cargo
# gcc/pkg-config build glommio's liburing shim; the peers are real programs used by the tests.
apt_install gcc pkg-config ca-certificates procps curl ffmpeg nginx libnginx-mod-rtmp rtmpdump
apt_install srt-tools python3 python3-venv  # SRT and WebRTC peers (tests/srt_proxy.rs, tests/webrtc_proxy.rs)
apt_install redis-server redis-tools  # redis mode (tests/redis_mode.rs starts its own redis-server)
apt_install gstreamer1.0-tools gstreamer1.0-plugins-good gstreamer1.0-plugins-bad  # GStreamer rtmp2src plays through the edge (tests/edge.rs)
# Transcoding (cargo feature `transcode`, on by default): FFmpeg 5.1's libraries for ffmpeg-next, and
# libclang for its bindgen (tests/transcode.rs, src/transcode/).
apt_install libavcodec-dev libavformat-dev libavutil-dev libswscale-dev libswresample-dev libavfilter-dev libavdevice-dev libclang-dev
apt_install iproute2  # ss(8): tests/access.rs reads the keepalive timers of the relayed sockets
# The dashboard in real browsers (tests/dashboard.rs): Chromium over the DevTools pipe, Firefox
# over WebDriver BiDi.
apt_install chromium firefox-esr
# One venv for the Python peers (tests find target/py): aiortc for tests/webrtc/peer.py; grpcio,
# grpcio-tools (stubs) and prometheus_client (text parser) for tests/grpc/*.py; websockets for
# tests/dashboard/bidi.py (Firefox's BiDi WebSocket).
python_venv target/py aiortc==1.16.0 grpcio==1.85.3 grpcio-tools==1.85.1 prometheus_client==0.26.0 websockets==17.4

cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --locked "$@"
