#!/usr/bin/env bash
# Runs a command as root inside the Debian chroot made by scripts/chroot/setup.sh SUITE:
#
#   scripts/chroot/run.sh trixie [--] CMD...
#
# The command runs in a private mount namespace (unshare -m), so the bind mounts below exist only
# for it and its children and vanish with them; concurrent calls (a QEMU and a daemon at once) each
# get their own. Mounted into the chroot: /proc, /sys, /dev (with /dev/pts and /dev/shm), /tmp,
# this repository, $HOME/.cargo and $HOME/.rustup (the host's Rust toolchain) and the guest image
# cache, each at the same absolute path. The working directory stays the caller's; the caller's
# environment passes through, with PATH, CARGO_HOME and RUSTUP_HOME set for the chroot.
# VHOST_USER_GPU_CHROOT_CACHE: where the chroots live (default ~/.cache/vhost-user-gpu-chroot).
set -euo pipefail

usage() { sed -n '2,4p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

[ "$#" -ge 1 ] || usage
suite="$1"
shift
[ "${1:-}" != "--" ] || shift
[ "$#" -ge 1 ] || usage
case "$suite" in *[!a-z0-9-]*|"") echo "chroot/run: bad suite name '$suite'" >&2; exit 2 ;; esac

cache="${VHOST_USER_GPU_CHROOT_CACHE:-$HOME/.cache/vhost-user-gpu-chroot}"
root="$cache/$suite"
repo="$(cd "$(dirname "$0")/../.." && pwd -P)"
guest_cache="${VHOST_USER_GPU_GUEST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vhost-user-gpu-guest}"

if [ "$(id -u)" -ne 0 ]; then
    echo "chroot/run: needs root (mounts and chroot)" >&2
    exit 1
fi
# setup.sh runs its apt steps through this script before the chroot is complete.
if [ ! -f "$root/.vhost-user-gpu-stamp" ] && [ "${_VUGPU_CHROOT_SETUP:-}" != 1 ]; then
    echo "chroot/run: no complete chroot at $root: run scripts/chroot/setup.sh $suite first" >&2
    exit 1
fi

if [ "${_VUGPU_CHROOT_NS:-}" != "$root" ]; then
    # Re-run this script in a new mount namespace; exec keeps the caller's pid (and process
    # group), so a signal sent to it reaches the command in the end.
    export _VUGPU_CHROOT_NS="$root"
    exec unshare --mount --propagation private -- "$0" "$suite" -- "$@"
fi
unset _VUGPU_CHROOT_NS

# bind SRC: SRC at the same path inside the chroot (a directory; made on both sides if missing).
bind() {
    local src="$1" flag="${2:---bind}"
    mkdir -p "$src" "$root$src"
    mount "$flag" "$src" "$root$src"
}

mount -t proc proc "$root/proc"
bind /sys --rbind
bind /dev --rbind   # brings /dev/pts, /dev/shm, /dev/mqueue along
bind /tmp
bind "$repo"
bind "$HOME/.cargo"
bind "$HOME/.rustup"
bind "$guest_cache"

# Stay in the caller's directory when the chroot has it (it does for everything mounted above).
cwd="$(pwd -P)"
[ -d "$root$cwd" ] || { echo "chroot/run: $cwd is not in the chroot; running in /" >&2; cwd=/; }

export PATH="$HOME/.cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
export CARGO_HOME="$HOME/.cargo" RUSTUP_HOME="$HOME/.rustup"
unset _VUGPU_CHROOT_SETUP
# shellcheck disable=SC2016
exec chroot "$root" /bin/sh -c 'cd "$0" && exec "$@"' "$cwd" "$@"
