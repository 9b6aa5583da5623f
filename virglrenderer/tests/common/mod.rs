//! Helpers shared by the integration tests. The library is process-global: nextest
//! (`cargo nextest run -p virglrenderer`) runs every test in its own process; under plain
//! `cargo test` the tests of one file share a process, so each test first takes [`lock`].

#![allow(dead_code)]

use std::sync::{Mutex, MutexGuard};

use virglrenderer::{RendererFlags, VirglRenderer};

static LIBRARY: Mutex<()> = Mutex::new(());

/// Serializes the tests of one process. Bind it first in a test (`let _lock = lock();`) so it
/// is dropped after every renderer handle.
pub fn lock() -> MutexGuard<'static, ()> {
    LIBRARY.lock().unwrap_or_else(|e| e.into_inner())
}

/// Initializes a headless renderer (surfaceless EGL; Mesa llvmpipe when there is no GPU).
pub fn renderer() -> VirglRenderer {
    renderer_with(RendererFlags::empty())
}

/// Like [`renderer`], with extra flags.
pub fn renderer_with(extra: RendererFlags) -> VirglRenderer {
    // Mesa's EGL picks the platform from the display call virglrenderer makes; the variable only
    // keeps a stray X11/Wayland environment from interfering.
    std::env::set_var("EGL_PLATFORM", "surfaceless");
    let _ = env_logger::builder().is_test(true).try_init();
    VirglRenderer::init(RendererFlags::surfaceless() | extra)
        .expect("virgl_renderer_init with USE_EGL|USE_SURFACELESS")
}

/// Number of open fds of this process.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Resident set size of this process in KiB.
pub fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// A deterministic byte pattern.
pub fn pattern(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(12345);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 7) as u8
        })
        .collect()
}
