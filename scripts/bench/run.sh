#!/bin/sh
# Reproduce the README's benchmark table: build our daemon and gpu-bench in release, then run
# every workload on ours (--renderer software and virglrenderer) and QEMU's C backend
# (/usr/lib/qemu/vhost-user-gpu, when installed), interleaved, 1 warm-up round + 5 kept rounds
# of 1 s each. Writes target/bench/report.json and target/bench/report.png (the chart needs
# python3-venv; the script installs matplotlib itself). Extra arguments go to gpu-bench, e.g.
#   scripts/bench/run.sh --workloads scanout-1080p,cmd-rtt --reps 9
#   scripts/bench/run.sh --backend ours='target/release/vhost-user-gpu --renderer software {sock}' \
#       --backend other='/path/to/vhost-device-gpu --socket-path {sock} --gpu-mode virglrenderer'
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
cargo build --release -p vhost-user-gpu
cargo build --release -p vhost-user-gpu-tests --bin gpu-bench
mkdir -p target/bench
exec target/release/gpu-bench --warmup 1 --reps 5 --duration 1 \
    --json target/bench/report.json --png target/bench/report.png "$@"
