#!/usr/bin/env bash
# Builds the e2e guest: a Debian 12 kernel (linux-image-amd64) and an initramfs that is the whole root
# filesystem (busybox-static, Mesa's virgl driver, libEGL/libgbm/libdrm, kmscube, glmark2-es2-drm, our guest programs
# from scripts/guest/src, /init and the workloads). Everything comes from Debian packages fetched with
# `apt-get download` and unpacked with `dpkg -x`; nothing is installed on the host.
#
# Cached: the outputs are rebuilt only when an input changes (this directory's files or the resolved
# package versions). Cache directory: $VHOST_USER_GPU_GUEST_CACHE, default
# ${XDG_CACHE_HOME:-$HOME/.cache}/vhost-user-gpu-guest. Prints two lines on stdout:
#   KERNEL=<path to vmlinuz>
#   INITRD=<path to initrd>
#
# --vulkan: the Vulkan variant instead. Kernel (6.12) and Mesa (25.x, with the Venus ICD
# libvulkan_virtio.so and the gfxstream ICD libvulkan_gfxstream.so, plus lavapipe as an in-guest
# reference) from bookworm-backports, the Vulkan loader and vulkaninfo, and /e2e/bin/vkcheck
# (src/vkcheck.c, its shaders compiled with the glslangValidator of Debian's glslang-tools). Same GL
# programs and workloads as the default image, plus workloads/vulkan.sh. Cached beside the default
# image (out/vulkan-<key>); each variant keeps its newest build.
# Needs the host's apt lists (apt-get update, done by install-host-deps.sh), gcc, readelf and the
# EGL/GBM/GLES/DRM headers (scripts/guest/install-host-deps.sh installs them).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
variant=default
for a in "$@"; do
    case "$a" in
        --vulkan) variant=vulkan ;;
        -h|--help) sed -n '2,/^set /{/^set /d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
        *) echo "guest-build: unknown argument $a" >&2; exit 2 ;;
    esac
done
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
user_pkgs=(busybox-static kmscube glmark2-es2-drm libgl1-mesa-dri libegl-mesa0 libegl1 libgbm1 libgles2 libdrm2)
# Files of this directory that only the Vulkan variant uses (not in the default image nor its key).
vulkan_only=(src/vkcheck.c src/vkcheck_rect.vert src/vkcheck_rect.frag src/vkcheck_fill.comp
             workloads/vulkan.sh)
target=()
prefix=""
if [ "$variant" = vulkan ]; then
    # Backports first (-t: priority 990 for bookworm-backports): kernel 6.12, Mesa 25. libvulkan-dev
    # (headers, libvulkan.so) and glslang-tools (glslangValidator) are only used for building vkcheck.
    user_pkgs+=(mesa-vulkan-drivers libvulkan1 vulkan-tools libvulkan-dev glslang-tools)
    target=(-t bookworm-backports)
    prefix="vulkan-"
fi

resolve() { # prints "name version arch" for an `apt-get install` of $@ on an empty system
    apt-get -s "${apt_opts[@]}" "${target[@]}" install "$@" \
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
pkgs_file="$cache/out/${prefix}packages.txt.new"
resolve_all() {
    {
        resolve "${user_pkgs[@]}"
        resolve linux-image-amd64 | grep '^linux-image-[0-9]'
    } | sort -u > "$pkgs_file"
    grep -q '^linux-image-[0-9]' "$pkgs_file" && grep -q '^kmscube ' "$pkgs_file" || return 1
    if [ "$variant" = vulkan ]; then
        # Without bookworm-backports in the sources, this would quietly be Debian 12's 6.1 and 22.3.
        grep -q '^linux-image-[0-9][^ ]* [^ ]*bpo' "$pkgs_file" \
            && grep -q '^mesa-vulkan-drivers [^ ]*bpo' "$pkgs_file" || return 1
    fi
}
if ! resolve_all && ! { apt_update && resolve_all; }; then
    log "could not resolve the guest packages (Debian 12 'bookworm' apt sources needed$(
        [ "$variant" = default ] || echo ", with bookworm-backports: see scripts/install-deps.sh"))"
    exit 1
fi
kpkg="$(awk '/^linux-image-[0-9]/ {print $1; exit}' "$pkgs_file")"
kver="${kpkg#linux-image-}"

is_vulkan_only() {
    local v
    for v in "${vulkan_only[@]}"; do [ "$1" != "$v" ] || return 0; done
    return 1
}
compute_key() { # the inputs: resolved packages and this directory's files (those the variant uses)
    key="$( { echo "variant $variant"; cat "$pkgs_file"; cd "$here" && find build.sh mkrootfs.py init workloads src -type f \
              | LC_ALL=C sort | while read -r f; do
                  [ "$variant" = vulkan ] || ! is_vulkan_only "$f" || continue
                  echo "== $f"; cat "$f"
              done; } | sha256sum | cut -c1-16)"
    outdir="$cache/out/$prefix$key"
}
compute_key
if [ -f "$outdir/done" ]; then
    rm -f "$pkgs_file"
    log "cached ($prefix$key, kernel $kver)"
    echo "KERNEL=$outdir/vmlinuz"
    echo "INITRD=$outdir/initrd.img"
    exit 0
fi
log "building $prefix$key (kernel $kver, $(wc -l < "$pkgs_file") packages) in $cache"

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

bins=(--bin "$work/bin/fbpattern:/e2e/bin/fbpattern" --bin "$work/bin/glclear:/e2e/bin/glclear")
mkrootfs_opts=()
if [ "$variant" = vulkan ]; then
    # SPIR-V as C arrays (glslangValidator --vn), then vkcheck against the guest's Vulkan headers and
    # loader. glslangValidator from the downloaded glslang-tools (it needs only libstdc++).
    mkdir -p "$work/spv"
    for s in "$here"/src/vkcheck_*.vert "$here"/src/vkcheck_*.frag "$here"/src/vkcheck_*.comp; do
        n="$(basename "$s" | tr . _)"
        "$staging/usr/bin/glslangValidator" -V --target-env vulkan1.1 --vn "spv_$n" \
            -o "$work/spv/$n.h" "$s" > "$work/spv/$n.log" || { cat "$work/spv/$n.log" >&2; exit 1; }
    done
    gcc "${cflags[@]}" -o "$work/bin/vkcheck" "$here/src/vkcheck.c" -I"$work/spv" \
        -I"$staging/usr/include" -L"$staging/usr/lib/x86_64-linux-gnu" -lvulkan
    bins+=(--bin "$work/bin/vkcheck:/e2e/bin/vkcheck")
    mkrootfs_opts+=(--vulkan)
fi

log "assembling the initramfs"
adds=(--add "$here/init:/init")
for w in "$here"/workloads/*.sh; do
    [ "$variant" = vulkan ] || ! is_vulkan_only "workloads/$(basename "$w")" || continue
    adds+=(--add "$w:/e2e/workloads/$(basename "$w")")
done
python3 "$here/mkrootfs.py" --staging "$staging" --kver "$kver" --out "$work/initrd.cpio" \
    --manifest "$outdir.tmp/manifest.txt" "${adds[@]}" "${bins[@]}" "${mkrootfs_opts[@]}"
# Uncompressed: under TCG the kernel spends ~4 s unpacking a zstd archive of it; a plain one is
# just copied (measured: first guest line after 8.5 s instead of 12.4 s).
mv "$work/initrd.cpio" "$outdir.tmp/initrd.img"
cp "$staging/boot/vmlinuz-$kver" "$outdir.tmp/vmlinuz"
mv "$pkgs_file" "$outdir.tmp/packages.txt"
touch "$outdir.tmp/done"
rm -rf "$outdir"
mv "$outdir.tmp" "$outdir"
# Keep only the newest build of this variant (out/<key> for the default image, out/vulkan-<key>),
# and the packages that the kept builds of both variants were made of.
for d in "$cache"/out/*/; do
    d="${d%/}"
    [ "$d" != "$outdir" ] || continue
    case "$(basename "$d")" in vulkan-*) v=vulkan ;; *) v=default ;; esac
    if [ "$v" = "$variant" ]; then rm -rf "$d"; fi
done
declare -A keep=()
for p in "$cache"/out/*/packages.txt; do
    [ -f "$(dirname "$p")/done" ] || continue
    while read -r name ver arch; do keep["${name}_${ver//:/%3a}_${arch}.deb"]=1; done < "$p"
done
for f in "$cache"/debs/*.deb; do
    [ -n "${keep[$(basename "$f")]:-}" ] || rm -f "$f"
done
log "done in $((SECONDS - start)) s: initrd $(du -h "$outdir/initrd.img" | cut -f1)"
echo "KERNEL=$outdir/vmlinuz"
echo "INITRD=$outdir/initrd.img"
