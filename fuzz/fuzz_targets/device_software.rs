//! Target 2: the device with the software renderer, driven by a device script (the crate
//! doc's format). A fresh device per input, over guest memory cleared per input.

use vhost_user_gpu::gpu::{GpuConfig, VirtioGpu};
use vhost_user_gpu::renderer::software::SoftwareRenderer;
use vhost_user_gpu_fuzz::{
    clear_memory, guest_memory, run_ops, CheckingDisplay, CheckingMapper, DeviceInput,
    HOST_VISIBLE_SIZE,
};

fn main() {
    let mem = guest_memory();
    afl::fuzz!(|data: &[u8]| {
        let Some(input) = DeviceInput::parse(data) else {
            return;
        };
        clear_memory(&mem);
        let config = GpuConfig {
            num_scanouts: input.num_scanouts(),
            edid: input.edid(),
            // Smaller than the daemon's default so that one input stays fast.
            max_hostmem: 32 << 20,
            host_visible_size: HOST_VISIBLE_SIZE,
            ..GpuConfig::default()
        };
        let mut gpu = VirtioGpu::new(Box::new(SoftwareRenderer::new()), config);
        gpu.set_shared_memory(Some(Box::new(CheckingMapper::default())));
        if let Some(acked) = input.acked {
            gpu.set_acked_features(acked);
        }
        let mut display = CheckingDisplay::new(input.num_scanouts());
        run_ops(&mut gpu, &mem, &mut display, input.ops);
        gpu.reset();
    });
}
