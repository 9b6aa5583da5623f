//! Target 2: the device with the software renderer, driven by a device script (the crate
//! doc's format). A fresh device per input, over guest memory cleared per input.

fn main() {
    let mem = vhost_user_gpu_fuzz::guest_memory();
    afl::fuzz!(|data: &[u8]| {
        vhost_user_gpu_fuzz::software_input(&mem, data, None);
    });
}
