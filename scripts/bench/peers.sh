#!/usr/bin/env bash
# The benchmark with the seed's own daemon beside ours, on the same libvirglrenderer: everything
# runs in the Debian sid chroot of scripts/chroot/setup.sh (libvirglrenderer 1.3.0, QEMU 11.1's C
# backend), so ours and the peer load the same library.
#
#   scripts/bench/peers.sh                      # prepare, then the whole table
#   scripts/bench/peers.sh --workloads cmd-rtt  # extra arguments go to gpu-bench
#   scripts/bench/peers.sh --prepare-only
#   scripts/bench/peers.sh --debug ...          # ours and gpu-bench from the debug profile (the CI
#                                               # smoke run: leg 3 has built them already)
#
# Prepared reproducibly, under target/peers/ (reused when present):
#   - rust-vmm's vhost-device-gpu 0.2.0 from crates.io (the daemon the seed presents), built in
#     the chroot with only its virglrenderer backend (its default features also want gfxstream
#     through rutabaga): cargo install --locked vhost-device-gpu@0.2.0 --no-default-features
#     --features backend-virgl;
#   - our daemon and gpu-bench, built in the chroot in release (CARGO_TARGET_DIR=target/sid).
# Backends in the table: ours-software, ours-virgl, vhost-device-gpu (virglrenderer), qemu-c
# (/usr/lib/qemu/vhost-user-gpu of the chroot's QEMU). vhost-device-gpu answers SET_SCANOUT with
# ERR_UNSPEC without a dmabuf (llvmpipe exports none here): its scanout rows are reported as
# failed, never dropped. Writes target/bench/peers.json.
set -euo pipefail
cd "$(dirname "$0")/../.."

PEER_VERSION=0.2.0
prepare_only=0
profile=release
while [ "$#" -gt 0 ]; do
    case "$1" in
        --prepare-only) prepare_only=1 ;;
        --debug) profile=debug ;;
        *) break ;;
    esac
    shift
done

scripts/chroot/setup.sh sid >&2
in_sid() { scripts/chroot/run.sh sid -- "$@"; }

peer_root="$PWD/target/peers/vhost-device-gpu-$PEER_VERSION"
peer="$peer_root/bin/vhost-device-gpu"
if [ ! -x "$peer" ]; then
    echo "peers: building vhost-device-gpu $PEER_VERSION from crates.io in the sid chroot" >&2
    t=$SECONDS
    in_sid cargo install --locked "vhost-device-gpu@$PEER_VERSION" --no-default-features \
        --features backend-virgl --root "$peer_root" >&2
    echo "peers: vhost-device-gpu built in $((SECONDS - t)) s" >&2
fi

echo "peers: building our daemon and gpu-bench in the sid chroot ($profile)" >&2
export CARGO_TARGET_DIR="$PWD/target/sid"
release=()
[ "$profile" = debug ] || release=(--release)
in_sid cargo build -q --locked "${release[@]}" -p vhost-user-gpu >&2
in_sid cargo build -q --locked "${release[@]}" -p vhost-user-gpu-tests --bin gpu-bench >&2
[ "$prepare_only" = 0 ] || exit 0

ours="$CARGO_TARGET_DIR/$profile/vhost-user-gpu"
mkdir -p target/bench
# EGL_PLATFORM=surfaceless for every backend: llvmpipe without a display.
exec env EGL_PLATFORM=surfaceless scripts/chroot/run.sh sid -- \
    "$CARGO_TARGET_DIR/$profile/gpu-bench" --warmup 1 --reps 5 --duration 1 \
    --json target/bench/peers.json \
    --backend "ours-software=$ours --renderer software --socket-path {sock}" \
    --backend "ours-virgl=$ours --renderer virglrenderer --socket-path {sock}" \
    --backend "vhost-device-gpu=$peer --gpu-mode virglrenderer --socket-path {sock}" \
    --backend "qemu-c=/usr/lib/qemu/vhost-user-gpu --socket-path {sock}" \
    "$@"
