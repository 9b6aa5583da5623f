#!/usr/bin/env bash
# Host packages for the QEMU + Linux guest end-to-end tests on a fresh Debian 12 machine (run as root or
# with sudo): QEMU >= 8 is needed (Debian 12's QEMU 7.2 refuses vhost-user-gpu under TCG, "requires kvm"),
# so QEMU 10.0 comes from bookworm-backports. Also what scripts/guest/build.sh uses on the host:
# apt-get/dpkg (always there), gcc, readelf and the EGL/GBM/DRM headers for the guest programs.
set -euo pipefail

sudo_() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

qemu_pkgs=(qemu-system-x86 qemu-system-gui qemu-system-modules-opengl)
build_pkgs=(gcc binutils libc6-dev libegl-dev libgbm-dev libdrm-dev libgles-dev)

qemu_ok() {
    command -v qemu-system-x86_64 >/dev/null 2>&1 || return 1
    local major
    major="$(qemu-system-x86_64 --version | sed -n 's/^QEMU emulator version \([0-9]*\)\..*/\1/p')"
    [ -n "$major" ] && [ "$major" -ge 8 ] || return 1
    local p
    for p in "${qemu_pkgs[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || return 1
    done
}

build_ok() {
    local p
    for p in "${build_pkgs[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || return 1
    done
}

if qemu_ok && build_ok; then
    echo "install-host-deps: QEMU $(qemu-system-x86_64 --version | head -1 | awk '{print $4}') and build tools present"
    exit 0
fi

src=/etc/apt/sources.list.d/backports.sources
if ! grep -rqs "bookworm-backports" /etc/apt/sources.list /etc/apt/sources.list.d/; then
    echo "install-host-deps: adding $src"
    sudo_ tee "$src" >/dev/null <<'SRC'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
fi

sudo_ apt-get update -qq
# -t bookworm-backports, as on the development machines: QEMU 10 and the newer libraries it wants
# (Mesa, libdrm, ...) come from backports together; the -dev packages with them so that versions match.
sudo_ env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    -t bookworm-backports "${qemu_pkgs[@]}" "${build_pkgs[@]}"

qemu_ok || { echo "install-host-deps: QEMU >= 8 still missing" >&2; exit 1; }
echo "install-host-deps: QEMU $(qemu-system-x86_64 --version | head -1 | awk '{print $4}') ready"
