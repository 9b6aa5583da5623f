#!/usr/bin/env bash
# Installs everything the build and the test suite need on a fresh Debian 12 machine (run as root).
# The Debian package list is scripts/debian-packages.txt; the guest end-to-end tests add QEMU from
# bookworm-backports (scripts/guest/install-host-deps.sh).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

sudo_() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

mapfile -t pkgs < <(grep -v -E '^\s*(#|$)' "$here/debian-packages.txt")
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# On Debian 12 the tested set takes Mesa (llvmpipe, lavapipe) and QEMU 10 from bookworm-backports
# (QEMU 7.2 refuses vhost-user-gpu under TCG); libvirglrenderer stays Debian 12's 0.10.4.
apt_target=()
added_backports=0
if [ -r /etc/os-release ] && . /etc/os-release && [ "${VERSION_CODENAME:-}" = bookworm ]; then
    apt_target=(-t bookworm-backports)
    if ! grep -rqs "bookworm-backports" /etc/apt/sources.list /etc/apt/sources.list.d/; then
        echo "install-deps: adding bookworm-backports to the apt sources"
        sudo_ tee /etc/apt/sources.list.d/backports.sources >/dev/null <<'SRC'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
        added_backports=1
    fi
fi
if [ "${#missing[@]}" -gt 0 ] || [ "$added_backports" = 1 ]; then
    sudo_ apt-get update -qq
    sudo_ env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${apt_target[@]}" "${pkgs[@]}"
fi

if [ -x "$here/guest/install-host-deps.sh" ]; then
    "$here/guest/install-host-deps.sh"
fi

if ! command -v cargo >/dev/null 2>&1; then
    echo "cargo not found: install a Rust toolchain (rustup) first" >&2
    exit 1
fi
if ! cargo nextest --version >/dev/null 2>&1; then
    cargo install --locked cargo-nextest
fi
