#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine, builds the daemon and runs it on a socket, with the default
# renderer (virglrenderer on Mesa llvmpipe: no GPU needed), sandboxed (it prints the daemon's
# Seccomp line once start-up is over). Extra arguments go to the daemon.
#   scripts/run.sh                                  # serves /tmp/vhost-user-gpu.sock
#   scripts/run.sh --socket-path /run/gpu.sock --renderer software
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo build --release --locked -p vhost-user-gpu
export EGL_PLATFORM="${EGL_PLATFORM:-surfaceless}"
export RUST_LOG="${RUST_LOG:-info}"
args=("$@")
case " $* " in
    *" --socket-path "*|*" --fd "*|*" --print-capabilities "*|*" --help "*|*" -h "*) ;;
    *) args=(--socket-path /tmp/vhost-user-gpu.sock "${args[@]}") ;;
esac
case " ${args[*]} " in
    *" --print-capabilities "*|*" --help "*|*" -h "*) exec target/release/vhost-user-gpu "${args[@]}" ;;
esac
# The daemon runs sandboxed (--sandbox on, the default) once its renderer is initialised and its
# socket listens: print its Seccomp line then (2 = filtered), so that anyone can check it.
target/release/vhost-user-gpu "${args[@]}" &
pid=$!
trap 'kill -TERM "$pid" 2>/dev/null' INT TERM HUP
tries=300 # 30 s: a renderer's start-up can be slow
case " ${args[*]} " in *" --sandbox off "*|*" --sandbox=off "*) tries=20 ;; esac
for _ in $(seq "$tries"); do
    kill -0 "$pid" 2>/dev/null || break
    grep -q '^Seccomp:[[:space:]]*2' "/proc/$pid/status" 2>/dev/null && break
    sleep 0.1
done
if seccomp="$(grep '^Seccomp:' "/proc/$pid/status" 2>/dev/null)"; then
    echo "run.sh: daemon pid $pid: $(echo "$seccomp" | tr -s '[:space:]' ' ')(2: sandboxed;" \
        "check again with: grep Seccomp /proc/$pid/status)" >&2
fi
set +e
wait "$pid"
rc=$?
# A trapped signal ends the first wait early: wait for the daemon's own exit.
if kill -0 "$pid" 2>/dev/null; then
    wait "$pid"
    rc=$?
fi
exit "$rc"
