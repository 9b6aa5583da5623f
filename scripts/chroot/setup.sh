#!/usr/bin/env bash
# Creates, or reuses when complete, the Debian chroot for a second test leg (run as root):
#
#   scripts/chroot/setup.sh [trixie|sid]      # default trixie; prints the chroot's path last
#
# trixie: Debian 13 with trixie-backports (QEMU 11.1 and Mesa from backports, libvirglrenderer
# 1.1.0); sid: Debian unstable (QEMU 11.1, libvirglrenderer 1.3.0). debootstrap --variant=minbase
# from deb.debian.org, then the packages of scripts/chroot/<suite>-packages.txt with
# --no-install-recommends. The chroot lives in
# ${VHOST_USER_GPU_CHROOT_CACHE:-~/.cache/vhost-user-gpu-chroot}/<suite>; a stamp file holding a
# hash of the package list marks it complete, so a changed list re-runs apt only. Commands run in it
# through scripts/chroot/run.sh.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd -P)"
suite="${1:-trixie}"
case "$suite" in
    trixie) backports=trixie-backports ;;
    sid) backports="" ;;
    -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "chroot/setup: unknown suite '$suite' (trixie or sid)" >&2; exit 2 ;;
esac
list="$here/$suite-packages.txt"
mirror=http://deb.debian.org/debian
cache="${VHOST_USER_GPU_CHROOT_CACHE:-$HOME/.cache/vhost-user-gpu-chroot}"
root="$cache/$suite"
stamp="$root/.vhost-user-gpu-stamp"

if [ "$(id -u)" -ne 0 ]; then
    echo "chroot/setup: needs root (debootstrap, chroot)" >&2
    exit 1
fi

mapfile -t pkgs < <(grep -v -E '^\s*(#|$)' "$list")
# The stamp: suite, what is installed from where, and the list's hash.
want_stamp="suite=$suite backports=${backports:-none} packages=$(sha256sum "$list" | cut -c1-16)"

step_start=$SECONDS
step() { # step NAME: ends the previous step's timing
    local now=$SECONDS
    [ -z "${step_name:-}" ] || echo "chroot/setup: $step_name took $((now - step_start)) s" >&2
    step_name="$1"
    step_start=$now
}

mkdir -p "$cache"
# One setup per suite at a time (a second caller waits, then finds the chroot complete).
exec 9>"$cache/$suite.lock"
flock 9

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want_stamp" ]; then
    echo "chroot/setup: $root is complete ($want_stamp)" >&2
    "$here/run.sh" "$suite" -- sh -c 'qemu-system-x86_64 --version | head -1; dpkg-query -W libvirglrenderer-dev' >&2
    echo "$root"
    exit 0
fi

if [ ! -f "$root/.vhost-user-gpu-debootstrap-done" ]; then
    step "debootstrap"
    if ! command -v debootstrap >/dev/null 2>&1; then
        echo "chroot/setup: installing debootstrap on the host" >&2
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >&2
    fi
    # An older debootstrap may lack the suite's script: Debian's later suites all use sid's.
    script=()
    [ -e "/usr/share/debootstrap/scripts/$suite" ] || script=(/usr/share/debootstrap/scripts/sid)
    rm -rf "$root"  # a half-made tree from an interrupted run
    echo "chroot/setup: debootstrap --variant=minbase $suite $root $mirror" >&2
    debootstrap --variant=minbase "$suite" "$root" "$mirror" "${script[@]}" >&2
    touch "$root/.vhost-user-gpu-debootstrap-done"
fi

step "apt (sources, update, install)"
rm -f "$stamp"
{
    echo "deb $mirror $suite main"
    [ -z "$backports" ] || echo "deb $mirror $backports main"
} > "$root/etc/apt/sources.list"
cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt" 2>/dev/null || {
    mkdir -p "$root/etc/ssl/certs"
    cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
}
cp /etc/resolv.conf "$root/etc/resolv.conf" 2>/dev/null || true
# Signatures are still checked; only the Release files' Valid-Until is not: a mirror or cache that
# lags behind (sid's Release is valid for a week only) would otherwise stop apt-get update.
echo 'Acquire::Check-Valid-Until "false";' > "$root/etc/apt/apt.conf.d/99vhost-user-gpu"
# No daemons start inside the chroot.
printf '#!/bin/sh\nexit 101\n' > "$root/usr/sbin/policy-rc.d"
chmod 755 "$root/usr/sbin/policy-rc.d"

target=()
[ -z "$backports" ] || target=(-t "$backports")
export _VUGPU_CHROOT_SETUP=1
"$here/run.sh" "$suite" -- env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
"$here/run.sh" "$suite" -- env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
    --no-install-recommends "${target[@]}" "${pkgs[@]}" >&2
"$here/run.sh" "$suite" -- apt-get clean >&2
# The CA bundle again: the ca-certificates package regenerates it from its own list.
cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"

step "version check"
qemu_version="$("$here/run.sh" "$suite" -- qemu-system-x86_64 --version | head -1)"
# shellcheck disable=SC2016 # dpkg-query's own ${Version}
virgl_version="$("$here/run.sh" "$suite" -- dpkg-query -W -f='${Version}' libvirglrenderer-dev)"
# shellcheck disable=SC2016
mesa_version="$("$here/run.sh" "$suite" -- dpkg-query -W -f='${Version}' libgl1-mesa-dri)"
echo "chroot/setup: $qemu_version; libvirglrenderer-dev $virgl_version; Mesa $mesa_version" >&2
case "$qemu_version" in
    *"version 11.1."*) ;;
    *) echo "chroot/setup: expected QEMU 11.1.x in the $suite chroot, got: $qemu_version" >&2; exit 1 ;;
esac
[ -x "$root/usr/libexec/virgl_render_server" ] || {
    echo "chroot/setup: /usr/libexec/virgl_render_server missing (virgl-server)" >&2
    exit 1
}
echo "$want_stamp" > "$stamp"
step ""
echo "chroot/setup: $root ready" >&2
echo "$root"
