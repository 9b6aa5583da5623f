#!/usr/bin/env python3
"""Can the NVIDIA kernel driver of this host make a dmabuf at all, without EGL or DRM?

A control for scripts/gpu/dmabuf.sh: CUDA's driver API exports device memory as a dmabuf fd
(cuMemGetHandleForAddressRange with CU_MEM_RANGE_HANDLE_TYPE_DMA_BUF_FD) through nvidia.ko alone,
while EGL's export of a GL texture (what libvirglrenderer uses) goes through the DRM side of the
driver. Prints the device's DMA_BUF_SUPPORTED attribute, the export's result and, for an fd, what
the kernel says it is. Needs the `cuda-bindings` Python package (the GPU machine's image has it).
"""
import os
import sys

try:
    from cuda.bindings import driver as cu
except ImportError as e:
    print(f"CUDA-DMABUF: skipped (no cuda.bindings: {e})")
    sys.exit(0)


def call(name, *args):
    r = getattr(cu, name)(*args)
    err, rest = r[0], r[1:]
    if err != cu.CUresult.CUDA_SUCCESS:
        msg = cu.cuGetErrorName(err)[1]
        raise RuntimeError(f"{name}: {msg.decode() if isinstance(msg, bytes) else msg}")
    return rest[0] if len(rest) == 1 else rest


def main():
    call("cuInit", 0)
    dev = call("cuDeviceGet", 0)
    name = call("cuDeviceGetName", 128, dev)
    if isinstance(name, bytes):
        name = name.split(b"\0")[0].decode()
    print(f"device: {name}")
    attr = cu.CUdevice_attribute.CU_DEVICE_ATTRIBUTE_DMA_BUF_SUPPORTED
    print(f"CU_DEVICE_ATTRIBUTE_DMA_BUF_SUPPORTED: {call('cuDeviceGetAttribute', attr, dev)}")
    ctx = call("cuDevicePrimaryCtxRetain", dev)
    call("cuCtxSetCurrent", ctx)
    size = 2 << 20
    ptr = call("cuMemAlloc", size)
    try:
        fd = call("cuMemGetHandleForAddressRange", ptr, size,
                  cu.CUmemRangeHandleType.CU_MEM_RANGE_HANDLE_TYPE_DMA_BUF_FD, 0)
    except RuntimeError as e:
        print(f"CUDA-DMABUF: no ({e})")
        return
    fd = int(fd)
    st = os.fstat(fd)
    print(f"fd {fd}: {os.readlink(f'/proc/self/fd/{fd}')}, size {st.st_size}")
    try:
        with open(f"/proc/self/fdinfo/{fd}") as f:
            print("fdinfo: " + " | ".join(l.strip() for l in f if l.strip()))
    except OSError as e:
        print(f"fdinfo: {e}")
    os.close(fd)
    print("CUDA-DMABUF: yes")


if __name__ == "__main__":
    try:
        main()
    except RuntimeError as e:
        print(f"CUDA-DMABUF: error ({e})")
