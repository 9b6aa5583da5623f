#!/usr/bin/env bash
# Short bounded fuzz runs of the three AFL++ targets in fuzz/ (see fuzz/README.md): builds them
# with cargo-afl (installed from crates.io if missing; its install builds the AFL++ it ships),
# then runs each target for FUZZ_SECONDS (default 60) from its seed corpus in fuzz/corpus/, the
# three at once. Exits non-zero when any target saved a crash (or, with FUZZ_FAIL_ON_HANG=1, a
# hang); the crashing inputs are printed as hex and kept under FUZZ_OUT.
#
#   FUZZ_SECONDS=60 FUZZ_OUT=target/fuzz-ci scripts/fuzz.sh [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
seconds="${FUZZ_SECONDS:-60}"
out="${FUZZ_OUT:-$root/target/fuzz-ci}"
targets=("$@")
[ "${#targets[@]}" -gt 0 ] || targets=(decode device_software device_virgl)
t0=$SECONDS

# The cargo-afl version pinned here is the one fuzz/Cargo.lock has for the `afl` crate.
afl_version=0.18.2
if ! cargo afl --version 2>/dev/null | grep -q "^cargo-afl $afl_version "; then
    echo "== cargo install cargo-afl $afl_version"
    cargo install --locked cargo-afl --version "$afl_version"
fi
# The install builds AFL++ (from the source the crate ships) unless that failed; then build it now.
if cargo afl fuzz -h 2>&1 | grep -q "was not built"; then
    cargo afl config --build --force
fi

echo "== cargo fmt --check (fuzz/)"
(cd fuzz && cargo fmt -- --check)

# --target: the instrumentation flags then reach only the target's crates, not the build
# scripts and proc macros (bindgen, clap_derive), which halves the build. No --locked: a crate the
# device gains later is added to fuzz/Cargo.lock instead of failing the run (pinned ones stay).
host="$(rustc -vV | sed -n 's/^host: //p')"
echo "== cargo afl build (fuzz/, $host)"
(cd fuzz && cargo afl build --release --target "$host" \
    $(printf -- '--bin %s ' "${targets[@]}"))
bin="$root/fuzz/target/$host/release"
t_build=$((SECONDS - t0))

export EGL_PLATFORM="${EGL_PLATFORM:-surfaceless}"
export AFL_NO_UI=1 AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1
# No terminal in CI; affinity binding would fail with more fuzzers than free cores.
export AFL_NO_AFFINITY=1
rm -rf "$out"
mkdir -p "$out"
pids=()
for t in "${targets[@]}"; do
    # libvirglrenderer's init (EGL, llvmpipe) and its shader compiles are slow: a longer timeout.
    case "$t" in device_virgl) timeout_ms=5000 ;; *) timeout_ms=2000 ;; esac
    echo "== afl-fuzz $t for ${seconds}s"
    cargo afl fuzz -i "fuzz/corpus/$t" -o "$out/$t" -x fuzz/dict/virtio-gpu.dict \
        -t "$timeout_ms" -V "$seconds" \
        -- "$bin/$t" >"$out/$t.log" 2>&1 &
    pids+=($!)
done
status=0
for i in "${!targets[@]}"; do
    if ! wait "${pids[$i]}"; then
        echo "== afl-fuzz ${targets[$i]} failed; the end of its log:"
        tail -n 30 "$out/${targets[$i]}.log"
        status=1
    fi
done

for t in "${targets[@]}"; do
    stats="$out/$t/default/fuzzer_stats"
    [ -f "$stats" ] || { echo "== $t: no fuzzer_stats"; status=1; continue; }
    get() { sed -n "s/^$1 *: //p" "$stats"; }
    echo "== $t: $(get execs_done) execs, $(get execs_per_sec)/s, corpus $(get corpus_count)," \
        "edges $(get edges_found) ($(get bitmap_cvg)), stability $(get stability)," \
        "crashes $(get saved_crashes), hangs $(get saved_hangs)"
    for f in "$out/$t/default/crashes"/id:*; do
        [ -e "$f" ] || continue
        echo "== CRASH in $t: $f"
        od -A x -t x1z "$f" | head -n 40
        echo "   reproduce: fuzz/target/$host/release/$t < $f"
        status=1
    done
    for f in "$out/$t/default/hangs"/id:*; do
        [ -e "$f" ] || continue
        echo "== HANG in $t: $f"
        if [ "${FUZZ_FAIL_ON_HANG:-0}" = 1 ]; then status=1; fi
    done
done
echo "== fuzz: build ${t_build}s, total $((SECONDS - t0))s"
exit "$status"
