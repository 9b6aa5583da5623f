#!/usr/bin/env bash
# The benchmark's smoke runs in CI (scripts/test.sh), each short and each judged, never assumed:
#
#   scripts/bench/smoke.sh peers   # scripts/bench/peers.sh in the sid chroot (vhost-device-gpu
#                                  # 0.2.0 from crates.io, ours, QEMU's C backend): cmd-rtt and
#                                  # 3d-submit, 1 round of 0.3 s, debug builds of ours and gpu-bench
#   scripts/bench/smoke.sh guest   # scripts/bench/guest-bench.py: 1 round, 1 s per glmark2 scene,
#                                  # ours-virgl (the debug daemon) and QEMU's in-process virgl
#   scripts/bench/smoke.sh vulkan  # scripts/bench/guest-bench.py --workload vulkan: 1 round, 1 s
#                                  # per part, ours-venus-sid (the sid debug daemon) and QEMU
#                                  # 11.1's in-process Venus
#
# peers passes when gpu-bench ran, no cell of its JSON report is "failed" (n/a, e.g. 3D on QEMU's
# 2D-only C backend, is allowed) and ours-virgl and vhost-device-gpu measured every workload.
# guest passes when every run gave a glmark2 score and the guest's GL_RENDERER names virgl on
# both (guest-bench.py --strict); vulkan when both rendered and computed exactly before and after
# their timed loops and the guest's Vulkan device is Venus (--strict). Prints "bench smoke NAME:
# passed|failed in N s".
set -euo pipefail
cd "$(dirname "$0")/../.."
what="${1:-}"
t0=$SECONDS
rc=0
mkdir -p target/bench
case "$what" in
    peers)
        json=target/bench/smoke-peers.json
        rm -f "$json"
        scripts/bench/peers.sh --debug --workloads cmd-rtt,3d-submit --warmup 0 --reps 1 \
            --duration 0.3 --no-direct --json "$json" || rc=$?
        if [ "$rc" = 0 ]; then
            python3 - "$json" <<'PY' || rc=$?
import json, sys
r = json.load(open(sys.argv[1]))
bad = []
for w in r["workloads"]:
    for b, e in w["results"].items():
        if e["status"] == "failed" or (b in ("ours-virgl", "vhost-device-gpu") and e["status"] != "ok"):
            bad.append(f"{w['name']} {b}: {e['status']}: {e.get('reason', '')}")
for x in bad:
    print(f"bench smoke peers: {x}", file=sys.stderr)
sys.exit(1 if bad else 0)
PY
        fi
        ;;
    guest)
        bin="${GUEST_BENCH_OURS:-$PWD/target/debug/vhost-user-gpu}"
        [ -x "$bin" ] || cargo build -q --locked -p vhost-user-gpu
        GUEST_BENCH_OURS="$bin" scripts/bench/guest-bench.py --rounds 1 --secs 1 \
            --backends ours-virgl,qemu-virgl-inprocess --strict \
            --json target/bench/smoke-guest.json || rc=$?
        ;;
    vulkan)
        # The sid chroot's debug daemon (built by "smoke.sh peers" or leg 3's e2e; built here
        # when missing).
        bin="${GUEST_BENCH_OURS_SID:-$PWD/target/sid/debug/vhost-user-gpu}"
        if [ ! -x "$bin" ]; then
            CARGO_TARGET_DIR="$PWD/target/sid" scripts/chroot/run.sh sid -- \
                cargo build -q --locked -p vhost-user-gpu
        fi
        GUEST_BENCH_OURS_SID="$bin" scripts/bench/guest-bench.py --workload vulkan --rounds 1 \
            --secs 1 --backends ours-venus-sid,qemu-venus-inprocess --strict \
            --json target/bench/smoke-vulkan.json || rc=$?
        ;;
    *)
        sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//' >&2
        exit 2
        ;;
esac
if [ "$rc" = 0 ]; then
    echo "bench smoke $what: passed in $((SECONDS - t0)) s"
else
    echo "bench smoke $what: FAILED (exit $rc) in $((SECONDS - t0)) s"
fi
exit "$rc"
