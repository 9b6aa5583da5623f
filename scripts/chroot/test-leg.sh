#!/usr/bin/env bash
# The second CI leg: the workspace built and its nextest suite run inside a Debian chroot, against
# that suite's libvirglrenderer (trixie: 1.1.0, sid: 1.3.0) and Mesa (run as root):
#
#   scripts/chroot/test-leg.sh [trixie|sid]     # default trixie
#
# scripts/chroot/setup.sh SUITE first (cached), then inside the chroot `cargo build --workspace`
# and `cargo nextest run --workspace --locked --no-fail-fast` with CARGO_TARGET_DIR=target/SUITE
# (apart from the host's target/: the linked library differs) and EGL_PLATFORM=surfaceless.
# Prints the time of each step; exit status is nextest's (or the first failing step's).
set -euo pipefail
cd "$(dirname "$0")/../.."

suite="${1:-trixie}"
case "$suite" in
    -h|--help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
esac
t0=$SECONDS
timings=()
timed() { # timed NAME CMD...: runs CMD, records how long it took
    local name="$1" start=$SECONDS rc=0
    shift
    "$@" || rc=$?
    timings+=("$name $((SECONDS - start)) s")
    echo "test-leg($suite): $name took $((SECONDS - start)) s (exit $rc)" >&2
    return "$rc"
}
report() { echo "test-leg($suite): ${timings[*]/%/;} total $((SECONDS - t0)) s" >&2; }
trap report EXIT

timed setup scripts/chroot/setup.sh "$suite" >/dev/null
root="${VHOST_USER_GPU_CHROOT_CACHE:-$HOME/.cache/vhost-user-gpu-chroot}/$suite"

# cargo-nextest: the host's binary when it is not part of ~/.cargo (which is mounted anyway).
if ! [ -x "$HOME/.cargo/bin/cargo-nextest" ] && ! [ -x "$root/usr/local/bin/cargo-nextest" ]; then
    nextest="$(command -v cargo-nextest || true)"
    [ -n "$nextest" ] || { echo "test-leg: cargo-nextest not found on the host" >&2; exit 1; }
    install -m 755 "$nextest" "$root/usr/local/bin/cargo-nextest"
fi

export CARGO_TARGET_DIR="target/$suite" EGL_PLATFORM=surfaceless
in_chroot() { scripts/chroot/run.sh "$suite" -- "$@"; }

# shellcheck disable=SC2016 # expanded inside the chroot
in_chroot sh -c 'echo "test-leg: $(rustc --version); $(qemu-system-x86_64 --version | head -1);" \
    "libvirglrenderer $(pkg-config --modversion virglrenderer); Mesa $(dpkg-query -W -f="\${Version}" libgl1-mesa-dri)"' >&2
timed build in_chroot cargo build --workspace --locked
timed nextest in_chroot cargo nextest run --workspace --locked --no-fail-fast
