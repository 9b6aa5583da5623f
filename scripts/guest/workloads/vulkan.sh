#!/bin/sh
# Vulkan through one of Mesa's ICDs (the --vulkan guest image only): vulkaninfo --summary, then
# /e2e/bin/vkcheck (render and compute checks with exact results). The ICD comes from the kernel
# command line, e2e.vkicd=virtio|gfxstream|lvp (default virtio = Venus), via /init as E2E_VKICD.
# The exit status is vkcheck's. Lines for the host:
#   E2E-VK-ICD: <name> <json>
#   E2E-VK: <vulkaninfo --summary line>       (its output, all of it)
#   E2E-VKCHECK: <vkcheck line>               (VKCHECK-DEVICE/-RENDER/-COMPUTE/-BENCH/-STEP/-ERROR/-RESULT)
#   E2E-VKCHECK-EXIT: <status>
icd="${E2E_VKICD:-virtio}"
case "$icd" in
    virtio|venus) json=/usr/share/vulkan/icd.d/virtio_icd.json ;;
    gfxstream) json=/usr/share/vulkan/icd.d/gfxstream_vk_icd.json ;;
    lvp|lavapipe) json=/usr/share/vulkan/icd.d/lvp_icd.json ;;
    *) echo "E2E-VK-ICD: unknown '$icd' (virtio, gfxstream or lvp)"; exit 2 ;;
esac
[ -r "$json" ] || { echo "E2E-VK-ICD: $json missing (not the --vulkan guest image?)"; exit 2; }
echo "E2E-VK-ICD: $icd $json"
export VK_DRIVER_FILES="$json"  # loader >= 1.3.207
export VK_ICD_FILENAMES="$json" # older loaders
export VN_DEBUG="${E2E_VN_DEBUG:-init}" # Venus: report what it finds (renderer, capset, memory)
[ -z "${E2E_VN_PERF:-}" ] || export VN_PERF="$E2E_VN_PERF" # Venus performance switches (e2e.vnperf=)
export MESA_SHADER_CACHE_DISABLE=true
export XDG_RUNTIME_DIR=/tmp # vulkaninfo complains otherwise
ls -l /dev/dri 2>&1 | sed 's/^/E2E-VK: /'

# Each program runs with a time limit, so that a driver stuck in the kernel or waiting for the host
# is reported and the workload still ends. vkcheck has its own fence timeouts and watchdog too.
run_limited() { # SECONDS LOGFILE PROGRAM ARGS...: the exit status, 124 when killed
    limit=$1; log=$2; shift 2
    "$@" > "$log" 2>&1 &
    pid=$!
    ( sleep "$limit"; kill -9 "$pid" 2>/dev/null ) &
    killer=$!
    wait "$pid"
    rc=$?
    if kill "$killer" 2>/dev/null; then :; else [ $rc -ne 137 ] || rc=124; fi
    return $rc
}

run_limited 120 /tmp/vulkaninfo.log vulkaninfo --summary
rc=$?
sed 's/^/E2E-VK: /' /tmp/vulkaninfo.log
echo "E2E-VK: vulkaninfo exit status $rc$( [ $rc -ne 124 ] || echo ' (killed after 120 s)')"

# e2e.vkbench=SECONDS (the benchmark): vkcheck also times its render and compute submissions.
run_limited 300 /tmp/vkcheck.log /e2e/bin/vkcheck --timeout 60 --watchdog 280 ${E2E_VKBENCH:+--bench "$E2E_VKBENCH"}
rc=$?
sed 's/^/E2E-VKCHECK: /' /tmp/vkcheck.log
echo "E2E-VKCHECK-EXIT: $rc$( [ $rc -ne 124 ] || echo ' (killed after 300 s)')"
exit $rc
