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
# tests/grpc.rs: the reference's Python gRPC client (stubs made by grpcio-tools) and the
# Prometheus text parser.
pip_install grpcio==1.85.3 grpcio-tools==1.85.1 prometheus_client==0.26.0

cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --locked "$@"
