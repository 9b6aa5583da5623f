#!/usr/bin/env bash
# A newcomer's demo: builds the daemon (release) and the Linux guest, boots the guest under QEMU with
# our vhost-user-gpu daemon and `--renderer virglrenderer`, runs kmscube there (OpenGL ES through
# Mesa's virgl driver in the guest, virglrenderer on the host) and writes a PNG of the guest's screen.
#
#   scripts/demo.sh [OUTPUT.png]      (default: target/demo/guest-screen.png)
#   VHOST_USER_GPU_BIN=path scripts/demo.sh   # use that daemon binary instead of a release build
#
# Needs a Debian 12 machine prepared with scripts/install-deps.sh (QEMU 10 from bookworm-backports
# included). The first run downloads and builds the guest (about a minute); later runs reuse it.
set -euo pipefail
cd "$(dirname "$0")/.."

png="$(realpath -m "${1:-target/demo/guest-screen.png}")"
out=target/demo
mkdir -p "$out" "$(dirname "$png")"

echo "== installing QEMU 10 if missing"
scripts/guest/install-host-deps.sh
bin="${VHOST_USER_GPU_BIN:-target/release/vhost-user-gpu}"
if [ -z "${VHOST_USER_GPU_BIN:-}" ]; then
    echo "== cargo build --release -p vhost-user-gpu"
    cargo build --release -p vhost-user-gpu
fi
echo "== building the guest (cached)"
guest="$(scripts/guest/build.sh)"
kernel="$(sed -n 's/^KERNEL=//p' <<<"$guest")"
initrd="$(sed -n 's/^INITRD=//p' <<<"$guest")"

echo "== booting the guest with our daemon (--renderer virglrenderer); kmscube renders through virgl"
status=0
scripts/e2e/run-guest.py \
    --backend "$bin --socket-path {sock} --renderer virglrenderer" \
    --kernel "$kernel" --initrd "$initrd" --out "$out" \
    --workload kmscube --check-screen animated --expect-gl-renderer virgl --expect-feature virgl=yes \
    --png "$png" || status=$?

grep -h -E '^(E2E-GL-RENDERER|E2E-KMSCUBE-FRAMES|kmscube:   version: "OpenGL)' "$out/serial.log" 2>/dev/null || true
echo "serial console: $out/serial.log, daemon log: $out/backend.log"
if [ -f "$png" ] && [ "$status" -eq 0 ]; then
    echo "The guest's screen: $png"
else
    tail -n 5 "$out/backend.log" 2>/dev/null | sed 's/^/daemon: /' >&2
    echo "demo FAILED (see above); screen, if any: $png" >&2
    exit 1
fi
