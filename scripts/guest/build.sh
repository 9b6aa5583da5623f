#!/usr/bin/env bash
# Builds the e2e guest: a Debian 12 kernel (linux-image-amd64) and an initramfs that is the whole root
# filesystem (busybox-static, Mesa's virgl driver, libEGL/libgbm/libdrm, kmscube, our guest programs
# from scripts/guest/src, /init and the workloads). Everything comes from Debian packages fetched with
# `apt-get download` and unpacked with `dpkg -x`; nothing is installed on the host.
#
# Cached: the outputs are rebuilt only when an input changes (this directory's files or the resolved
# package versions). Cache directory: $VHOST_USER_GPU_GUEST_CACHE, default
# ${XDG_CACHE_HOME:-$HOME/.cache}/vhost-user-gpu-guest. Prints two lines on stdout:
#   KERNEL=<path to vmlinuz>
#   INITRD=<path to initrd>
# Needs the host's apt lists (apt-get update, done by install-host-deps.sh), gcc, readelf and the
# EGL/GBM/GLES/DRM headers (scripts/guest/install-host-deps.sh installs them).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cache="${VHOST_USER_GPU_GUEST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vhost-user-gpu-guest}"
mkdir -p "$cache/debs" "$cache/apt/cache/archives/partial" "$cache/out"
: > "$cache/apt/status"

log() { echo "guest-build: $*" >&2; }
start=$SECONDS

# A private apt view: the host's package lists, but an empty dpkg status, so that versions are
# resolved as for an empty Debian 12 system (bookworm, -updates, -security; backports have
# priority 100 and are not chosen) whatever the host has installed.
apt_opts=(-o "Dir::State::status=$cache/apt/status" -o "Dir::Cache=$cache/apt/cache"
          -o Debug::NoLocking=1 -o APT::Install-Recommends=false -o APT::Install-Suggests=false
          -o APT::Get::AllowUnauthenticated=false)
# As root, apt would try to drop to _apt for downloading into our (root-owned) cache and warn.
[ "$(id -u)" -ne 0 ] || apt_opts+=(-o APT::Sandbox::User=root)
# Guest user space. Their dependencies come along; the rootfs keeps only what the ELF closure needs.
user_pkgs=(busybox-static kmscube libgl1-mesa-dri libegl-mesa0 libegl1 libgbm1 libgles2 libdrm2)

resolve() { # prints "name version arch" for an `apt-get install` of $@ on an empty system
    apt-get -s "${apt_opts[@]}" install "$@" \
        | sed -n 's/^Inst \([^ ]*\) (\([^ ]*\) [^[]*\[\([a-z0-9]\+\)\]).*/\1 \2 \3/p'
}
sudo_() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
apt_updated=0
apt_update() { # once per run: the host's package lists may be missing or stale
    [ "$apt_updated" = 0 ] || return 1
    apt_updated=1
    log "apt-get update"
    sudo_ apt-get update -qq >&2
}
pkgs_file="$cache/out/packages.txt.new"
resolve_all() {
    {
        resolve "${user_pkgs[@]}"
        resolve linux-image-amd64 | grep '^linux-image-[0-9]'
    } | sort -u > "$pkgs_file"
    grep -q '^linux-image-[0-9]' "$pkgs_file" && grep -q '^kmscube ' "$pkgs_file"
}
if ! resolve_all && ! { apt_update && resolve_all; }; then
    log "could not resolve the guest packages (Debian 12 'bookworm' apt sources needed)"
    exit 1
fi
kpkg="$(awk '/^linux-image-[0-9]/ {print $1; exit}' "$pkgs_file")"
kver="${kpkg#linux-image-}"

compute_key() { # the inputs: resolved packages and this directory's files
    key="$( { cat "$pkgs_file"; cd "$here" && find build.sh mkrootfs.py init workloads src -type f \
              | LC_ALL=C sort | while read -r f; do echo "== $f"; cat "$f"; done; } | sha256sum | cut -c1-16)"
    outdir="$cache/out/$key"
}
compute_key
if [ -f "$outdir/done" ]; then
    rm -f "$pkgs_file"
    log "cached ($key, kernel $kver)"
    echo "KERNEL=$outdir/vmlinuz"
    echo "INITRD=$outdir/initrd.img"
    exit 0
fi
log "building $key (kernel $kver, $(wc -l < "$pkgs_file") packages) in $cache"

# Download what is missing.
want=()
while read -r name ver arch; do
    f="$cache/debs/${name}_${ver//:/%3a}_${arch}.deb"
    [ -s "$f" ] || want+=("$name=$ver")
done < "$pkgs_file"
if [ "${#want[@]}" -gt 0 ]; then
    log "downloading ${#want[@]} packages"
    if ! (cd "$cache/debs" && apt-get "${apt_opts[@]}" -q download "${want[@]}" >&2); then
        # Stale lists name versions the mirror no longer has: refresh, resolve again, retry.
        apt_update && resolve_all || exit 1
        want=()
        while read -r name ver arch; do
            f="$cache/debs/${name}_${ver//:/%3a}_${arch}.deb"
            [ -s "$f" ] || want+=("$name=$ver")
        done < "$pkgs_file"
        (cd "$cache/debs" && apt-get "${apt_opts[@]}" -q download "${want[@]}" >&2)
        compute_key
        kpkg="$(awk '/^linux-image-[0-9]/ {print $1; exit}' "$pkgs_file")"
        kver="${kpkg#linux-image-}"
    fi
fi

work="$(mktemp -d "$cache/work.XXXXXX")"
trap 'rm -rf "$work"' EXIT
staging="$work/staging"
mkdir -p "$staging" "$work/bin" "$outdir.tmp"
rm -rf "${outdir:?}.tmp"/*
log "unpacking"
while read -r name ver arch; do
    dpkg -x "$cache/debs/${name}_${ver//:/%3a}_${arch}.deb" "$staging"
done < "$pkgs_file"

log "compiling the guest programs"
cflags=(-O2 -Wall -Wextra -Werror)
gcc "${cflags[@]}" -o "$work/bin/fbpattern" "$here/src/fbpattern.c"
# shellcheck disable=SC2046
gcc "${cflags[@]}" -o "$work/bin/glclear" "$here/src/glclear.c" \
    $(pkg-config --cflags --libs egl glesv2 gbm libdrm)

log "assembling the initramfs"
adds=(--add "$here/init:/init")
for w in "$here"/workloads/*.sh; do adds+=(--add "$w:/e2e/workloads/$(basename "$w")"); done
python3 "$here/mkrootfs.py" --staging "$staging" --kver "$kver" --out "$work/initrd.cpio" \
    --manifest "$outdir.tmp/manifest.txt" "${adds[@]}" \
    --bin "$work/bin/fbpattern:/e2e/bin/fbpattern" --bin "$work/bin/glclear:/e2e/bin/glclear"
# Uncompressed: under TCG the kernel spends ~4 s unpacking a zstd archive of it; a plain one is
# just copied (measured: first guest line after 8.5 s instead of 12.4 s).
mv "$work/initrd.cpio" "$outdir.tmp/initrd.img"
cp "$staging/boot/vmlinuz-$kver" "$outdir.tmp/vmlinuz"
mv "$pkgs_file" "$outdir.tmp/packages.txt"
touch "$outdir.tmp/done"
rm -rf "$outdir"
mv "$outdir.tmp" "$outdir"
# Keep only the newest build and the packages it was made of.
for d in "$cache"/out/*/; do
    [ "${d%/}" = "$outdir" ] || rm -rf "${d%/}"
done
declare -A keep=()
while read -r name ver arch; do keep["${name}_${ver//:/%3a}_${arch}.deb"]=1; done < "$outdir/packages.txt"
for f in "$cache"/debs/*.deb; do
    [ -n "${keep[$(basename "$f")]:-}" ] || rm -f "$f"
done
log "done in $((SECONDS - start)) s: initrd $(du -h "$outdir/initrd.img" | cut -f1)"
echo "KERNEL=$outdir/vmlinuz"
echo "INITRD=$outdir/initrd.img"
