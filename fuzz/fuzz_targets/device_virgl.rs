//! Target 3: the device with the virglrenderer renderer (EGL surfaceless, Mesa llvmpipe),
//! driven by a device script (the crate doc's format). libvirglrenderer holds process-global
//! state: it is initialised once per process, on the first input, and the device is reset after
//! every input as a guest reset does.

use std::panic::AssertUnwindSafe;

use vhost_user_gpu::gpu::{GpuConfig, VirtioGpu};
use vhost_user_gpu::renderer::virgl::VirglGpuRenderer;
use vhost_user_gpu_fuzz::{
    clear_memory, guest_memory, run_ops, CheckingDisplay, CheckingMapper, DeviceInput,
    HOST_VISIBLE_SIZE,
};

/// Scanouts of the virgl device (fixed: the device lives across inputs).
const SCANOUTS: u32 = 2;

fn device() -> VirtioGpu {
    if std::env::var_os("EGL_PLATFORM").is_none() {
        std::env::set_var("EGL_PLATFORM", "surfaceless");
    }
    let renderer = VirglGpuRenderer::new(VirglGpuRenderer::default_flags())
        .expect("virglrenderer initialises (EGL_PLATFORM=surfaceless, Mesa llvmpipe)");
    let config = GpuConfig {
        num_scanouts: SCANOUTS,
        max_hostmem: 32 << 20,
        host_visible_size: HOST_VISIBLE_SIZE,
        ..GpuConfig::default()
    };
    VirtioGpu::new(Box::new(renderer), config)
}

fn main() {
    let mem = guest_memory();
    let mut gpu: AssertUnwindSafe<Option<VirtioGpu>> = AssertUnwindSafe(None);
    afl::fuzz!(|data: &[u8]| {
        let Some(input) = DeviceInput::parse(data) else {
            return;
        };
        let gpu = gpu.get_or_insert_with(device);
        clear_memory(&mem);
        gpu.set_shared_memory(Some(Box::new(CheckingMapper::default())));
        gpu.set_acked_features(input.acked.unwrap_or(gpu.device_features()));
        let mut display = CheckingDisplay::new(SCANOUTS);
        run_ops(gpu, &mem, &mut display, input.ops);
        gpu.reset();
        gpu.set_shared_memory(None);
    });
}
