#!/usr/bin/env bash
# The whole test suite, in three legs:
#  1. this machine (Debian 12, libvirglrenderer 0.10.4): formatting, lints, rustdoc, unit and
#     integration tests (cargo-nextest: one process per test, since libvirglrenderer holds
#     process-global state), doc tests, then the QEMU + Linux guest end-to-end tests (QEMU 10 for
#     the display checks, QEMU 11.1 from the Debian 13 chroot for the Vulkan ones);
#  2. a Debian 13 chroot (libvirglrenderer 1.1.0, its Venus render server, QEMU 11.1): the
#     workspace built there, the whole nextest suite, and the guest tests (Venus in a guest);
#  3. a Debian sid chroot (libvirglrenderer 1.3.0): build and nextest.
# Then the benchmark's three smoke runs (scripts/bench/smoke.sh), each judged passed or failed:
# the peer set-up (vhost-device-gpu 0.2.0 from crates.io built in the sid chroot, one short
# gpu-bench round beside ours and QEMU's C backend), one GL guest workload (glmark2, 1 round of
# 1 s scenes, ours-virgl and QEMU's in-process virgl) and the Vulkan guest workload (vkcheck
# --bench through Venus, 1 s per part, ours in the sid chroot and QEMU 11.1's in-process Venus).
# Leg 1 also runs a short bounded fuzzing run of the three targets (scripts/fuzz.sh).
# Each leg prints how long its parts took. SKIP_GUEST_E2E=1 skips the guest tests, SKIP_FUZZ=1
# the fuzzing run and SKIP_CHROOT_LEGS=1 legs 2 and 3 (CI skips none).
set -euo pipefail
cd "$(dirname "$0")/.."
t_start=$SECONDS
legs=()
took() { legs+=("$1 $(( (SECONDS - $2) / 60 )) min $(( (SECONDS - $2) % 60 )) s"); }
trap 'echo "== times: ${legs[*]/%/;} total $(( (SECONDS - t_start) / 60 )) min"' EXIT
# Later legs still run when an earlier one fails; the exit status says whether any failed.
failed=()
run_leg() { # run_leg NAME CMD...
    local name="$1" t=$SECONDS
    shift
    "$@" || failed+=("$name")
    took "$name" "$t"
}

t=$SECONDS
scripts/install-deps.sh
took "install-deps" "$t"

export EGL_PLATFORM="${EGL_PLATFORM:-surfaceless}"

leg1() {
    echo "== cargo fmt --check"
    cargo fmt --all -- --check
    echo "== cargo clippy"
    cargo clippy --workspace --all-targets --locked -- -D warnings
    echo "== cargo doc"
    RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked -q
    echo "== cargo nextest"
    cargo nextest run --workspace --locked --no-fail-fast
    echo "== doc tests"
    cargo test --workspace --doc --locked -q
}
run_leg "leg 1 build+tests" bash -c "set -euo pipefail; $(declare -f leg1); leg1"

if [ "${SKIP_FUZZ:-0}" != 1 ]; then
    echo "== fuzzing: the three AFL++ targets, ${FUZZ_SECONDS:-60} s each at once (scripts/fuzz.sh)"
    run_leg "leg 1 fuzz" scripts/fuzz.sh
fi

if [ "${SKIP_GUEST_E2E:-0}" != 1 ]; then
    echo "== QEMU + Linux guest end-to-end (libvirglrenderer 0.10.4)"
    run_leg "leg 1 guests" scripts/e2e/run-all.sh
fi

if [ "${SKIP_CHROOT_LEGS:-0}" != 1 ]; then
    echo "== leg 2: Debian 13 chroot (libvirglrenderer 1.1.0, QEMU 11.1)"
    run_leg "leg 2 build+nextest" scripts/chroot/test-leg.sh trixie
    if [ "${SKIP_GUEST_E2E:-0}" != 1 ]; then
        echo "== leg 2: QEMU 11.1 + Linux guest end-to-end (libvirglrenderer 1.1.0)"
        run_leg "leg 2 guests" scripts/e2e/run-all.sh --suite trixie
    fi
    echo "== leg 3: Debian sid chroot (libvirglrenderer 1.3.0)"
    run_leg "leg 3 build+nextest" scripts/chroot/test-leg.sh sid
    echo "== benchmark smoke: peers in the sid chroot (scripts/bench/smoke.sh peers)"
    run_leg "bench smoke peers" scripts/bench/smoke.sh peers
    if [ "${SKIP_GUEST_E2E:-0}" != 1 ]; then
        echo "== benchmark smoke: the Vulkan guest workload through Venus (scripts/bench/smoke.sh vulkan)"
        run_leg "bench smoke vulkan" scripts/bench/smoke.sh vulkan
    fi
fi
if [ "${SKIP_GUEST_E2E:-0}" != 1 ]; then
    echo "== benchmark smoke: one guest workload (scripts/bench/smoke.sh guest)"
    run_leg "bench smoke guest" scripts/bench/smoke.sh guest
fi

if [ "${#failed[@]}" -gt 0 ]; then
    echo "== FAILED: ${failed[*]}"
    exit 1
fi
echo "== all legs passed"
