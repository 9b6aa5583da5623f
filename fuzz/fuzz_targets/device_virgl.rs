//! Target 3: the device with the virglrenderer renderer (EGL surfaceless, Mesa llvmpipe),
//! driven by a device script (the crate doc's format). libvirglrenderer holds process-global
//! state: it is initialised once per process, on the first input (after the fork server's fork),
//! and the device is reset after every input as a guest reset does.

use std::panic::AssertUnwindSafe;

use vhost_user_gpu::gpu::VirtioGpu;
use vhost_user_gpu_fuzz::{guest_memory, virgl_device, virgl_input};

fn main() {
    let mem = guest_memory();
    let mut gpu: AssertUnwindSafe<Option<VirtioGpu>> = AssertUnwindSafe(None);
    afl::fuzz!(|data: &[u8]| {
        let gpu = gpu.get_or_insert_with(virgl_device);
        virgl_input(gpu, &mem, data, None);
    });
}
