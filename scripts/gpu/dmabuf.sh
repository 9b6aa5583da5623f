#!/bin/bash
# dmabuf scanout on a GPU host that has no Rust toolchain and no network (the README's "dmabuf on
# a GPU" section): build here, carry a folder there, run everything in one go.
#
#   scripts/gpu/dmabuf.sh stage DIR   (here) build our binaries against the installed
#       libvirglrenderer and, if VIRGL_1X_PREFIX names an install prefix of a libvirglrenderer 1.x
#       built by hand (README), a second set against it; copy them (debug info stripped), the
#       shared libraries they need from this Debian 12 host (libvirglrenderer, libepoxy, libdrm,
#       libgbm and their few dependencies, and the glvnd dispatch libraries libEGL/libGL*, but no
#       EGL or GL driver) and this script into DIR (about 40 MiB).
#   DIR/dmabuf.sh run [OUTDIR]         (there) with the host's own EGL vendor (NVIDIA's, if its
#       glvnd JSON file is at the usual place in /usr/local/nvidia or /usr/share/glvnd): first
#       the CUDA control (cuda-dmabuf.py: can the kernel driver make a dmabuf at all?), then for
#       each library set: the probe (`dmabuf-probe egl`, the EGL control, and `dmabuf-probe
#       virgl`), the export test of the virglrenderer crate, the end-to-end dmabuf test
#       (tests/dmabuf.rs, with --ignored), the 3D, display and sandbox end-to-end tests (the
#       daemon's sandbox is on by default), and gpu-bench's 3D rows with the sandbox on and off
#       (the 3D rows check their pixels). Logs go to OUTDIR
#       (default /tmp/dmabuf-out): run.log and bench-<set>.json.
set -u

stage() {
    local dir=$1 root
    root=$(cd "$(dirname "$0")/../.." && pwd)
    mkdir -p "$dir" || exit 1
    dir=$(cd "$dir" && pwd)
    build_set() { # name target-dir [pkg-config path]
        local name=$1 tdir=$2 out="$dir/$1"
        mkdir -p "$out"
        (
            cd "$root" || exit 1
            export CARGO_TARGET_DIR=$tdir
            [ -n "${3:-}" ] && export PKG_CONFIG_PATH=$3
            cargo build --release -p vhost-user-gpu -p vhost-user-gpu-tests --bins || exit 1
            cargo test --release --no-run -p virglrenderer --test export \
                -p vhost-user-gpu-tests --test dmabuf --test virgl --test display --test sandbox \
                2>&1 | tee "$out/build.log" | grep -E '^ +Executable' || exit 1
        ) || return 1
        for b in vhost-user-gpu gpu-bench dmabuf-probe; do
            strip --strip-debug -o "$out/$b" "$tdir/release/$b" || return 1
        done
        sed -n 's|^ *Executable tests/\([a-z_]*\)\.rs (\(.*\))$|\1 \2|p' "$out/build.log" |
            while read -r t exe; do
                strip --strip-debug -o "$out/t-$t" "$root/${exe#"$root"/}" || exit 1
            done
    }
    build_set system "$root/target" || { echo "stage: building against the system library failed"; exit 1; }
    if [ -n "${VIRGL_1X_PREFIX:-}" ]; then
        build_set virgl1x "$root/target/virgl1x" "$VIRGL_1X_PREFIX/lib/pkgconfig" ||
            { echo "stage: building against $VIRGL_1X_PREFIX failed"; exit 1; }
        mkdir -p "$dir/lib1x"
        cp -L "$VIRGL_1X_PREFIX/lib/libvirglrenderer.so.1" "$dir/lib1x/" || exit 1
    fi
    mkdir -p "$dir/lib"
    local l
    for l in libvirglrenderer.so.1 libepoxy.so.0 libdrm.so.2 libgbm.so.1 libX11.so.6 \
        libvulkan.so.1 libva.so.2 libva-drm.so.2 libxcb.so.1 libXau.so.6 libXdmcp.so.6 \
        libbsd.so.0 libmd.so.0 libexpat.so.1 libEGL.so.1 libGLdispatch.so.0 libOpenGL.so.0 \
        libGL.so.1 libGLX.so.0 libGLESv2.so.2; do
        cp -L "/lib/x86_64-linux-gnu/$l" "$dir/lib/" || exit 1
    done
    cp "$0" "$dir/dmabuf.sh"
    cp "$(dirname "$0")/cuda-dmabuf.py" "$dir/" || exit 1
    du -sh "$dir"
}

run() {
    local here out set
    here=$(cd "$(dirname "$0")" && pwd)
    out=${1:-/tmp/dmabuf-out}
    mkdir -p "$out"
    exec > >(tee "$out/run.log") 2>&1
    for f in /usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json \
        /usr/share/glvnd/egl_vendor.d/10_nvidia.json; do
        if [ -e "$f" ]; then export __EGL_VENDOR_LIBRARY_FILENAMES=$f; break; fi
    done
    export EGL_PLATFORM=surfaceless
    echo "== host"; date; uname -r; cat /etc/os-release 2>/dev/null | head -2
    nvidia-smi -L 2>&1; head -1 /proc/driver/nvidia/version 2>&1
    ls -la /dev/nvidia* /dev/dri /dev/udmabuf /dev/dma_heap 2>&1; grep -i nvidia /proc/modules
    ls /sys/class/drm /sys/module 2>&1 | grep -i -E 'drm|nvidia|card|render'
    grep -E 'Modeset|EnableGpuFirmware' /proc/driver/nvidia/params 2>&1
    echo "== CUDA dmabuf export (nvidia.ko's own dmabufs, no EGL, no DRM)"
    timeout 60 python3 "$here/cuda-dmabuf.py"; echo "rc $?"
    echo "EGL vendor file: ${__EGL_VENDOR_LIBRARY_FILENAMES:-(none: the glvnd default)}"
    for set in system virgl1x; do
        [ -d "$here/$set" ] || continue
        local b=$here/$set ld=$here/lib
        [ "$set" = virgl1x ] && ld=$here/lib1x:$here/lib
        export LD_LIBRARY_PATH=$ld VHOST_USER_GPU_BIN=$b/vhost-user-gpu
        echo; echo "######## library set $set (LD_LIBRARY_PATH=$ld)"
        if [ "$set" = system ]; then
            echo "== dmabuf-probe egl"; timeout 60 "$b/dmabuf-probe" egl; echo "rc $?"
        fi
        echo "== dmabuf-probe virgl"; RUST_LOG=info timeout 60 "$b/dmabuf-probe" virgl; echo "rc $?"
        echo "== test export (virglrenderer crate)"
        timeout 60 "$b/t-export" --test-threads=1 --nocapture; echo "rc $?"
        echo "== test dmabuf (--ignored)"
        RUST_LOG=debug timeout 60 "$b/t-dmabuf" --ignored --nocapture; echo "rc $?"
        local t
        for t in virgl display sandbox; do
            echo "== test $t (daemon sandbox on, its default)"
            RUST_LOG=debug timeout 120 "$b/t-$t" --test-threads=2 2>&1 | tail -n 80
            echo "rc ${PIPESTATUS[0]}"
        done
        echo "== gpu-bench"
        timeout 240 "$b/gpu-bench" \
            --backend "virgl=$b/vhost-user-gpu --renderer virglrenderer --socket-path {sock}" \
            --backend "virgl-nosandbox=$b/vhost-user-gpu --renderer virglrenderer --sandbox off --socket-path {sock}" \
            --workloads scanout-1080p,3d-scanout,3d-submit,3d-readback \
            --warmup 1 --reps 3 --duration 0.5 --json "$out/bench-$set.json" 2>&1
        echo "rc $?"
    done
    echo "== done"; date
}

case "${1:-}" in
    stage) [ $# -eq 2 ] || { echo "usage: $0 stage DIR"; exit 2; }; stage "$2" ;;
    run) run "${2:-}" ;;
    *) echo "usage: $0 stage DIR | run [OUTDIR]"; exit 2 ;;
esac
