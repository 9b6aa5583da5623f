//! Target 1: the request decoder (`protocol::split_chain`, `decode_header`, `decode_command`)
//! over a descriptor chain built from the input (see `decode_one`).

fn main() {
    let mem = vhost_user_gpu_fuzz::guest_memory();
    afl::fuzz!(|data: &[u8]| {
        vhost_user_gpu_fuzz::decode_one(&mem, data);
    });
}
