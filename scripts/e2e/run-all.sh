#!/usr/bin/env bash
# Every QEMU + Linux guest end-to-end check against our daemon, with the software and the
# virglrenderer renderer. One summary line per check, then "N passed, N failed"; exit status 1 if
# any check failed. Logs and screendumps: $E2E_OUT (default target/e2e/<check>/).
#
#   scripts/e2e/run-all.sh                 # builds target/debug/vhost-user-gpu and the guest first
#   VHOST_USER_GPU_BIN=path scripts/e2e/run-all.sh   # use that daemon binary, build nothing
#   scripts/e2e/run-all.sh --qemu-backend  # the 2D checks against QEMU's C backend (reference run)
#   scripts/e2e/run-all.sh CHECK...        # only the named checks
# E2E_TIMEOUT: seconds per check (150); E2E_BUDGET: seconds for everything (780): a check that
# might overrun it is reported as failed without being started.
set -uo pipefail
cd "$(dirname "$0")/../.."

qemu_backend=0
only=()
for a in "$@"; do
    case "$a" in
        --qemu-backend) qemu_backend=1 ;;
        -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
        *) only+=("$a") ;;
    esac
done

start=$SECONDS
out="${E2E_OUT:-target/e2e}"
mkdir -p "$out"

scripts/guest/install-host-deps.sh >&2 || { echo "e2e: host dependencies missing"; echo "0 passed, 1 failed"; exit 1; }

if [ "$qemu_backend" = 1 ]; then
    sw="/usr/lib/qemu/vhost-user-gpu --socket-path {sock}"
    sw_daemon="" # QEMU's backend exits when its frontend disconnects: no reconnect check
    vg=""
else
    bin="${VHOST_USER_GPU_BIN:-}"
    if [ -z "$bin" ]; then
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
fi

# The guest, built once (cached across runs).
if ! guest="$(scripts/guest/build.sh)"; then
    echo "FAIL guest-build (scripts/guest/build.sh)"
    echo "0 passed, 1 failed"
    exit 1
fi
kernel="$(sed -n 's/^KERNEL=//p' <<<"$guest")"
initrd="$(sed -n 's/^INITRD=//p' <<<"$guest")"

# name | backend | run-guest.py arguments
checks=(
    "software-fbdev|$sw|--workload fbdev --check-screen fb-pattern --expect-feature virgl=no --expect-feature edid=yes --expect-feature cap_sets=0"
    "software-gl-fallback|$sw|--workload glclear --check-screen glclear --expect-feature virgl=no --expect-feature edid=yes --expect-feature cap_sets=0 --reject-gl-renderer virgl"
    "software-reconnect|$sw_daemon|--workload probe --boots 3 --expect-feature virgl=no"
    "virgl-fbdev|$vg|--workload fbdev --check-screen fb-pattern --expect-feature virgl=yes --expect-feature edid=yes --expect-feature cap_sets!=0"
    "virgl-glclear|$vg|--workload glclear --check-screen glclear --expect-feature virgl=yes --expect-feature edid=yes --expect-feature cap_sets!=0 --expect-gl-renderer virgl"
    "virgl-reconnect|$vg|--workload glclear --boots 2 --check-screen glclear --expect-feature virgl=yes --expect-gl-renderer virgl"
    "virgl-kmscube|$vg|--workload kmscube --check-screen animated --expect-feature virgl=yes --expect-feature edid=yes --expect-feature cap_sets!=0 --expect-gl-renderer virgl"
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
for c in "${checks[@]}"; do
    IFS='|' read -r name backend cargs <<<"$c"
    if [ "${#only[@]}" -gt 0 ] && [[ " ${only[*]} " != *" $name "* ]]; then
        continue
    fi
    [ -n "$backend" ] || continue # --qemu-backend: no such check against QEMU's backend
    # Stay inside CI's time limit: a check that could not finish within the budget is not started.
    if [ $((SECONDS - start + ${E2E_TIMEOUT:-150})) -gt "${E2E_BUDGET:-780}" ]; then
        echo "FAIL $name: not run, the e2e time budget (E2E_BUDGET=${E2E_BUDGET:-780} s) is spent"
        failed=$((failed + 1))
        continue
    fi
    t0=$SECONDS
    # shellcheck disable=SC2086
    if scripts/e2e/run-guest.py --backend "$backend" --kernel "$kernel" --initrd "$initrd" \
        --out "$out/$name" --timeout "${E2E_TIMEOUT:-150}" $cargs > "$out/$name.txt" 2> "$out/$name.stderr"; then
        echo "PASS $name ($((SECONDS - t0)) s)"
        passed=$((passed + 1))
    else
        why="$(grep -m1 'failure:' "$out/$name.txt" | sed 's/^ *failure: //')"
        echo "FAIL $name ($((SECONDS - t0)) s): ${why:-see $out/$name.stderr}; logs in $out/$name"
        failed=$((failed + 1))
    fi
done
echo "e2e: $((SECONDS - start)) s in all, logs in $out" >&2
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
