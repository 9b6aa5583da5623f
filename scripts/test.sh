#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit and integration tests (cargo-nextest: one process per
# test, since libvirglrenderer holds process-global state), then the QEMU + Linux guest end-to-end tests.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh

export EGL_PLATFORM="${EGL_PLATFORM:-surfaceless}"

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

if [ -x scripts/e2e/run-all.sh ] && [ "${SKIP_GUEST_E2E:-0}" != 1 ]; then
    echo "== QEMU + Linux guest end-to-end"
    scripts/e2e/run-all.sh
fi
