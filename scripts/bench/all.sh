#!/usr/bin/env bash
# Every table of the README's "Benchmark" section in one command, on a fresh Debian 12 machine
# (run as root: the sid chroot needs it):
#
#   scripts/bench/all.sh [--reps N] [--duration S] [--warmup N] [--guest-rounds N]
#                        [--guest-secs S] [--no-pinned]
#
# 1. packages (scripts/install-deps.sh: the build, QEMU 10 from bookworm-backports);
# 2. host: scripts/bench/run.sh, gpu-bench on ours-software, ours-virgl, QEMU's C backend and the
#    virgl-direct floor (libvirglrenderer 0.10.4, QEMU 10);
# 3. peers: scripts/bench/peers.sh, in the Debian sid chroot (libvirglrenderer 1.3.0, QEMU 11.1;
#    made by scripts/chroot/setup.sh sid): ours, rust-vmm's vhost-device-gpu 0.2.0 from crates.io,
#    QEMU's C backend;
# 3b. one CPU: the wake-up-bound workloads (cmd-rtt, damage-64, churn) and 3d-submit again, host
#    and peers, with every process on one CPU (taskset -c LAST): on a VM a wake-up across vCPUs
#    costs far more than one on the same vCPU (README "Benchmark": measured 60-95 us across runs against
#    2 us per eventfd round trip on the 2-vCPU machine), and where the scheduler puts the bench's
#    thread and a daemon's thread decides those rows in the default run; pinned, every backend
#    gets the same placement. --no-pinned leaves this step out;
# 4. guest: scripts/bench/guest-bench.py, glmark2 in the test guest on every backend of
#    guest-bench.py --list, QEMU's in-process virtio-gpu-gl among them (the guest image is built
#    and cached by scripts/guest/build.sh); then --workload pageflip (kmscube's KMS page flips
#    on the same backends); then --workload vulkan: vkcheck --bench in the Vulkan
#    guest image through Venus (ours, QEMU 11.1's in-process venus=on, vhost-device-gpu) and the
#    guest's own lavapipe.
# Defaults are the scripts' own: gpu-bench 1 warm-up + 5 reps of 1 s, guest 3 rounds of 3 s per
# scene. A step that fails does not stop the later ones; its section says so and the exit status
# is 1. Writes target/bench/tables.md (markdown for the README: settings, commit, versions, the
# three tables, each step's time) plus the scripts' own JSON (report.json, peers.json,
# guest.json, guest-pageflip.json, guest-vulkan.json) and report.png.
set -euo pipefail
cd "$(dirname "$0")/../.."
reps=5 duration=1 warmup=1 guest_rounds=3 guest_secs=3 pinned=1
# The commit the binaries are built from (the tree as it is at the start).
commit="$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . 2>/dev/null || echo '+uncommitted')"
cmdline="scripts/bench/all.sh${*:+ $*}"
while [ "$#" -gt 0 ]; do
    case "$1" in
        --reps) reps="$2"; shift ;;
        --duration) duration="$2"; shift ;;
        --warmup) warmup="$2"; shift ;;
        --guest-rounds) guest_rounds="$2"; shift ;;
        --guest-secs) guest_secs="$2"; shift ;;
        --no-pinned) pinned=0 ;;
        -h|--help) sed -n '2,27p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "bench/all: unknown argument $1 (--help)" >&2; exit 2 ;;
    esac
    shift
done
out=target/bench
mkdir -p "$out"
t_all=$SECONDS
failed=()
times=()
step() { # step NAME OUTFILE CMD...: stdout into OUTFILE, stderr shown, time and status recorded
    local name="$1" file="$2" t=$SECONDS rc=0
    shift 2
    echo "== bench/all: $name: $*" >&2
    "$@" > "$file" || rc=$?
    times+=("$name $((SECONDS - t)) s")
    echo "== bench/all: $name took $((SECONDS - t)) s (exit $rc)" >&2
    if [ "$rc" != 0 ]; then
        failed+=("$name")
        echo "**$name failed (exit $rc)**: see the log above; the table may be partial." >> "$file"
    fi
}

step install /dev/stderr scripts/install-deps.sh
gpu_args=(--warmup "$warmup" --reps "$reps" --duration "$duration")
step host "$out/host.md" scripts/bench/run.sh "${gpu_args[@]}"
step peers "$out/peers.md" scripts/bench/peers.sh "${gpu_args[@]}"
cpu_last=$(( $(nproc) - 1 ))
pinned_workloads=cmd-rtt,damage-64,churn,3d-submit
if [ "$pinned" = 1 ]; then
    step host-1cpu "$out/host-1cpu.md" taskset -c "$cpu_last" target/release/gpu-bench \
        "${gpu_args[@]}" --workloads "$pinned_workloads" --json "$out/host-1cpu.json"
    step peers-1cpu "$out/peers-1cpu.md" taskset -c "$cpu_last" scripts/bench/peers.sh \
        "${gpu_args[@]}" --workloads "$pinned_workloads" --json "$out/peers-1cpu.json"
fi
# The host's release daemon (run.sh) and the sid build (peers.sh) are what guest-bench runs.
step guest "$out/guest.md" scripts/bench/guest-bench.py --rounds "$guest_rounds" \
    --secs "$guest_secs"
step guest-pageflip "$out/guest-pageflip.md" scripts/bench/guest-bench.py --workload pageflip \
    --rounds "$guest_rounds"
step guest-vulkan "$out/guest-vulkan.md" scripts/bench/guest-bench.py --workload vulkan \
    --rounds "$guest_rounds" --secs "$guest_secs"

cpu="$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)"
mem="$(awk '/MemTotal/ {printf "%.0f GB", $2 / 1048576}' /proc/meminfo)"
ver() { dpkg-query -W -f='${Version}' "$1" 2>/dev/null || echo "?"; }
in_sid() { scripts/chroot/run.sh sid -- "$@" 2>/dev/null; }
# shellcheck disable=SC2016 # dpkg-query's own ${Version}
sid_virgl="$(in_sid dpkg-query -W -f='${Version}' libvirglrenderer-dev || echo '?')"
# shellcheck disable=SC2016
sid_mesa="$(in_sid dpkg-query -W -f='${Version}' libgl1-mesa-dri || echo '?')"
sid_qemu="$(in_sid qemu-system-x86_64 --version | head -1 | awk '{print $4}' || echo '?')"
{
    echo "# Benchmark tables"
    echo
    echo "\`$cmdline\` at commit $commit, $(date -u '+%Y-%m-%d %H:%M UTC'), $((SECONDS - t_all)) s in all"
    echo "($(IFS=';'; echo "${times[*]}" | sed 's/;/, /g'))."
    echo "Machine: $cpu, $(nproc) CPUs, $mem, $(. /etc/os-release && echo "$PRETTY_NAME"), no GPU."
    echo "Host: QEMU $(ver qemu-system-x86), libvirglrenderer $(ver libvirglrenderer-dev), Mesa $(ver libgl1-mesa-dri)."
    echo "sid chroot: QEMU $sid_qemu, libvirglrenderer $sid_virgl, Mesa $sid_mesa."
    [ "${#failed[@]}" = 0 ] || echo "**Failed steps: ${failed[*]}.**"
    echo
    echo "## Host: gpu-bench (scripts/bench/run.sh ${gpu_args[*]})"
    echo
    cat "$out/host.md"
    echo
    echo "## Peers on libvirglrenderer $sid_virgl (scripts/bench/peers.sh ${gpu_args[*]}, sid chroot)"
    echo
    cat "$out/peers.md"
    echo
    if [ "$pinned" = 1 ]; then
        echo "## One CPU: host, every process on CPU $cpu_last (taskset -c $cpu_last; gpu-bench ${gpu_args[*]} --workloads $pinned_workloads)"
        echo
        cat "$out/host-1cpu.md"
        echo
        echo "## One CPU: peers on libvirglrenderer $sid_virgl (taskset -c $cpu_last scripts/bench/peers.sh ${gpu_args[*]} --workloads $pinned_workloads)"
        echo
        cat "$out/peers-1cpu.md"
        echo
    fi
    echo "## Guest workloads (scripts/bench/guest-bench.py --rounds $guest_rounds --secs $guest_secs)"
    echo
    cat "$out/guest.md"
    echo
    echo "## Page flips in the guest (scripts/bench/guest-bench.py --workload pageflip --rounds $guest_rounds)"
    echo
    cat "$out/guest-pageflip.md"
    echo
    echo "## Vulkan guest workload (scripts/bench/guest-bench.py --workload vulkan --rounds $guest_rounds --secs $guest_secs)"
    echo
    cat "$out/guest-vulkan.md"
} > "$out/tables.md"
echo "bench/all: wrote $out/tables.md ($((SECONDS - t_all)) s)" >&2
[ "${#failed[@]}" = 0 ]
