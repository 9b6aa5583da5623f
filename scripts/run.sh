#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine, builds the daemon and runs it on a socket, with the default
# renderer (virglrenderer on Mesa llvmpipe: no GPU needed). Extra arguments go to the daemon.
#   scripts/run.sh                                  # serves /tmp/vhost-user-gpu.sock
#   scripts/run.sh --socket-path /run/gpu.sock --renderer software
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo build --release --locked -p vhost-user-gpu
export EGL_PLATFORM="${EGL_PLATFORM:-surfaceless}"
export RUST_LOG="${RUST_LOG:-info}"
args=("$@")
case " $* " in
    *" --socket-path "*|*" --fd "*|*" --print-capabilities "*|*" --help "*|*" -h "*) ;;
    *) args=(--socket-path /tmp/vhost-user-gpu.sock "${args[@]}") ;;
esac
exec target/release/vhost-user-gpu "${args[@]}"
