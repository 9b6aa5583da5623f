#!/usr/bin/env bash
# Every QEMU + Linux guest end-to-end check against our daemon, with the software, virglrenderer
# and (where built) gfxstream renderers. One summary line per check, then "N passed, N failed,
# N skipped"; exit status 1 if any check failed. Logs and screendumps: $E2E_OUT (default
# target/e2e/<check>/, target/e2e-<suite>/<check>/ with --suite).
#
#   scripts/e2e/run-all.sh                 # builds target/debug/vhost-user-gpu and the guests first
#   scripts/e2e/run-all.sh --suite trixie  # the daemon built and run in the Debian 13 chroot
#                                          # (libvirglrenderer 1.1.0), QEMU 11.1 for every check
#   VHOST_USER_GPU_BIN=path scripts/e2e/run-all.sh   # use that daemon binary, build nothing
#   scripts/e2e/run-all.sh --qemu-backend  # the 2D checks against QEMU's C backend (reference run)
#   scripts/e2e/run-all.sh CHECK...        # only the named checks
# The Vulkan checks run QEMU 11.1 from the trixie chroot (scripts/chroot/setup.sh) with its
# vhost-user-test-device-pci, the only QEMU device that maps the host-visible region.
# E2E_TIMEOUT: seconds per check (150); E2E_BUDGET: seconds for everything (900): a check that
# might overrun it is reported as failed without being started.
set -uo pipefail
cd "$(dirname "$0")/../.."

qemu_backend=0
suite=""
only=()
while [ "$#" -gt 0 ]; do
    case "$1" in
        --qemu-backend) qemu_backend=1 ;;
        --suite) suite="${2:?--suite needs a name}"; shift ;;
        -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
        *) only+=("$1") ;;
    esac
    shift
done

start=$SECONDS
out="${E2E_OUT:-target/e2e${suite:+-$suite}}"
mkdir -p "$out"

scripts/guest/install-host-deps.sh >&2 || { echo "e2e: host dependencies missing"; echo "0 passed, 1 failed"; exit 1; }

# QEMU 11.1 (trixie chroot): every check with --suite, the Vulkan checks always.
vk_suite="${suite:-trixie}"
if ! scripts/chroot/setup.sh "$vk_suite" >&2; then
    echo "FAIL chroot (scripts/chroot/setup.sh $vk_suite)"
    echo "0 passed, 1 failed"
    exit 1
fi
in_suite=()
[ -z "$suite" ] || in_suite=(--qemu-chroot "$suite" --backend-chroot "$suite")

gfx=""
if [ "$qemu_backend" = 1 ]; then
    sw="/usr/lib/qemu/vhost-user-gpu --socket-path {sock}"
    sw_daemon="" # QEMU's backend exits when its frontend disconnects: no reconnect check
    vg=""
else
    bin="${VHOST_USER_GPU_BIN:-}"
    if [ -z "$bin" ] && [ -n "$suite" ]; then
        echo "e2e: cargo build -p vhost-user-gpu in the $suite chroot" >&2
        if ! CARGO_TARGET_DIR="target/$suite" scripts/chroot/run.sh "$suite" -- \
                cargo build -q --locked -p vhost-user-gpu >&2; then
            echo "FAIL build (cargo build -p vhost-user-gpu in the $suite chroot)"
            echo "0 passed, 1 failed"
            exit 1
        fi
        bin="target/$suite/debug/vhost-user-gpu"
    elif [ -z "$bin" ]; then
        echo "e2e: cargo build -p vhost-user-gpu" >&2
        if ! cargo build -q -p vhost-user-gpu >&2; then
            echo "FAIL build (cargo build -p vhost-user-gpu)"
            echo "0 passed, 1 failed"
            exit 1
        fi
        bin=target/debug/vhost-user-gpu
    fi
    sw="$bin --socket-path {sock} --renderer software"
    sw_daemon="$sw"
    vg="$bin --socket-path {sock} --renderer virglrenderer"
    # gfxstream where pkg-config finds libgfxstream_backend on the host (it is packaged nowhere:
    # see the README); otherwise its check is reported as skipped.
    if [ -z "$suite" ] && pkg-config --exists gfxstream_backend 2>/dev/null; then
        echo "e2e: cargo build -p vhost-user-gpu --features gfxstream" >&2
        if CARGO_TARGET_DIR=target/gfxstream cargo build -q -p vhost-user-gpu --features gfxstream >&2; then
            gfx="env LD_LIBRARY_PATH=$(pkg-config --variable=libdir gfxstream_backend) target/gfxstream/debug/vhost-user-gpu --socket-path {sock} --renderer gfxstream"
        else
            echo "FAIL build (cargo build -p vhost-user-gpu --features gfxstream)"
            echo "0 passed, 1 failed"
            exit 1
        fi
    fi
fi

# The guests, built once (cached across runs): Debian 12 for the display checks, its Vulkan
# variant (kernel 6.12, Mesa 25 with the Venus and gfxstream drivers) for the Vulkan ones.
guest_of() { # guest_of [--vulkan]: sets kernel and initrd
    local g
    g="$(scripts/guest/build.sh "$@")" || return 1
    kernel="$(sed -n 's/^KERNEL=//p' <<<"$g")"
    initrd="$(sed -n 's/^INITRD=//p' <<<"$g")"
}
if ! guest_of; then
    echo "FAIL guest-build (scripts/guest/build.sh)"
    echo "0 passed, 1 failed"
    exit 1
fi
gl_kernel="$kernel" gl_initrd="$initrd"
if ! guest_of --vulkan; then
    echo "FAIL guest-build (scripts/guest/build.sh --vulkan)"
    echo "0 passed, 1 failed"
    exit 1
fi
vk_kernel="$kernel" vk_initrd="$initrd"

# Venus: the guest's driver finds the device and vkcheck's render and compute checks pass where
# the library can run it (1.x with its render server); on 0.10 the capset is not offered (its
# wire format 0 is refused by Mesa's Venus driver), the daemon says why and the driver finds
# no device.
vk_args="--workload vulkan --gpu-device test-device --qemu-chroot $vk_suite --timeout 400"
if [ -n "$suite" ]; then
    venus="venus-vulkan|${vg:+$vg --hostmem 256M}|vk|$vk_args --guest-arg vkicd=virtio --expect-vulkan pass --expect-feature cap_sets=3"
else
    venus="venus-not-offered|${vg:+$vg --hostmem 256M}|vk|$vk_args --guest-arg vkicd=virtio --expect-vulkan no-device --expect-feature cap_sets=2 --expect-backend-log Venus+(Vulkan)+not+offered"
fi
gfx_check="gfxstream-vulkan|${gfx:+$gfx --hostmem 256M}|vk|$vk_args --guest-arg vkicd=gfxstream --expect-vulkan pass"

# -display dbus,gl=on (the D-Bus checks of our daemon) needs a DRM render node on the host.
dbus_gl=""
if compgen -G "/dev/dri/renderD*" >/dev/null; then dbus_gl=1; fi

# name | backend | guest (gl or vk) | run-guest.py arguments ("+" in an argument stands for a space)
checks=(
    "software-fbdev|$sw|gl|--workload fbdev --check-screen fb-pattern --expect-feature virgl=no --expect-feature edid=yes --expect-feature cap_sets=0"
    "software-gl-fallback|$sw|gl|--workload glclear --check-screen glclear --expect-feature virgl=no --expect-feature edid=yes --expect-feature cap_sets=0 --reject-gl-renderer virgl"
    "software-reconnect|$sw_daemon|gl|--workload probe --boots 3 --expect-feature virgl=no"
    "virgl-fbdev|$vg|gl|--workload fbdev --check-screen fb-pattern --expect-feature virgl=yes --expect-feature edid=yes --expect-feature cap_sets!=0"
    "virgl-glclear|$vg|gl|--workload glclear --check-screen glclear --expect-feature virgl=yes --expect-feature edid=yes --expect-feature cap_sets!=0 --expect-gl-renderer virgl"
    "virgl-reconnect|$vg|gl|--workload glclear --boots 2 --check-screen glclear --expect-feature virgl=yes --expect-gl-renderer virgl"
    "virgl-kmscube|$vg|gl|--workload kmscube --check-screen animated --expect-feature virgl=yes --expect-feature edid=yes --expect-feature cap_sets!=0 --expect-gl-renderer virgl"
    "$venus"
    "$gfx_check"
    # QEMU's D-Bus display (-display dbus on a private bus, scripts/dbus/display-client.py as the
    # listener): the reference runs QEMU's own virtio-gpu-pci (2D, gl=off) and checks the client;
    # ours need gl=on (QEMU refuses a vhost-user-gpu console on a display without DMABUF), i.e.
    # a DRM render node: SKIP without one.
    # Host leg only (QEMU 10's ui-dbus; the chroots do not install QEMU's display modules).
    "dbus-reference-fbdev|none|gl|--qemu-gpu virtio-gpu-pci --workload fbdev --check-screen fb-pattern --dbus-client --dbus-map"
    "dbus-software-fbdev|${dbus_gl:+$sw}|gl|--workload fbdev --check-screen fb-pattern --dbus-client --expect-feature virgl=no --expect-feature edid=yes"
    "dbus-virgl-glclear|${dbus_gl:+$vg}|gl|--workload glclear --check-screen glclear --dbus-client --expect-feature virgl=yes --expect-gl-renderer virgl"
)

passed=0
failed=0
if [ "${#only[@]}" -eq 0 ] || [[ " ${only[*]} " == *" checker-selftest "* ]]; then
    if scripts/e2e/selftest.py > "$out/checker-selftest.txt" 2>&1; then
        echo "PASS checker-selftest"
        passed=$((passed + 1))
    else
        echo "FAIL checker-selftest: $(tail -n +2 "$out/checker-selftest.txt" | head -1)"
        failed=$((failed + 1))
    fi
fi
skipped=0
for c in "${checks[@]}"; do
    IFS='|' read -r name backend guest cargs <<<"$c"
    if [ "${#only[@]}" -gt 0 ] && [[ " ${only[*]} " != *" $name "* ]]; then
        continue
    fi
    if [[ "$name" == dbus-* ]] && [ -n "$suite" ]; then
        echo "SKIP $name: the D-Bus display checks run on the host leg (QEMU 10's ui-dbus)"
        skipped=$((skipped + 1))
        continue
    fi
    if [ -z "$backend" ]; then
        if [ "$name" = gfxstream-vulkan ] && [ "$qemu_backend" = 0 ]; then
            echo "SKIP $name: libgfxstream_backend not found by pkg-config${suite:+ (host leg only)}"
            skipped=$((skipped + 1))
        elif [[ "$name" == dbus-* ]] && [ -z "$dbus_gl" ] && { [ "$qemu_backend" = 0 ] || [ "$name" = dbus-software-fbdev ]; }; then
            echo "SKIP $name: vhost-user-gpu-pci needs -display dbus,gl=on, whose listener exports every surface as a dmabuf: needs a DRM render node (no /dev/dri/renderD* here; see scripts/e2e/README.md)"
            skipped=$((skipped + 1))
        fi
        continue # --qemu-backend: no such check against QEMU's backend
    fi
    # Stay inside CI's time limit: a check that could not finish within the budget is not started.
    if [ $((SECONDS - start + ${E2E_TIMEOUT:-150})) -gt "${E2E_BUDGET:-900}" ]; then
        echo "FAIL $name: not run, the e2e time budget (E2E_BUDGET=${E2E_BUDGET:-900} s) is spent"
        failed=$((failed + 1))
        continue
    fi
    if [ "$guest" = vk ]; then
        kernel="$vk_kernel" initrd="$vk_initrd"
    else
        kernel="$gl_kernel" initrd="$gl_initrd"
    fi
    read -r -a argv <<<"$cargs"
    argv=("${argv[@]//+/ }")
    t0=$SECONDS
    if scripts/e2e/run-guest.py --backend "$backend" --kernel "$kernel" --initrd "$initrd" \
        --out "$out/$name" --timeout "${E2E_TIMEOUT:-150}" "${in_suite[@]}" "${argv[@]}" \
        > "$out/$name.txt" 2> "$out/$name.stderr"; then
        echo "PASS $name ($((SECONDS - t0)) s)"
        passed=$((passed + 1))
    else
        why="$(grep -m1 'failure:' "$out/$name.txt" | sed 's/^ *failure: //')"
        echo "FAIL $name ($((SECONDS - t0)) s): ${why:-see $out/$name.stderr}; logs in $out/$name"
        # CI keeps only this output: the check's own report and the ends of its logs.
        {
            sed 's/^/    | /' "$out/$name.txt"
            echo "    --- last lines of $out/$name.stderr:"
            tail -n 25 "$out/$name.stderr" | sed 's/^/    | /'
            for log in "$out/$name"/backend.log "$out/$name"/qemu.log; do
                [ -f "$log" ] || continue
                echo "    --- last lines of $log:"
                tail -n 15 "$log" | sed 's/^/    | /'
            done
        } >&2
        failed=$((failed + 1))
    fi
done
echo "e2e: $((SECONDS - start)) s in all, logs in $out" >&2
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
