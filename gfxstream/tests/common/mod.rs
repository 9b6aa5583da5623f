//! Shared by the library tests.
//!
//! Every test initialises the library, which works once per process: run them under
//! cargo-nextest (one process per test). Where pkg-config did not find `gfxstream_backend` at
//! build time, [`library_test!`] compiles each test to an ignored test whose reason says so, so
//! that the run reports them as skipped (and forcing them with `--run-ignored` fails them).

#![allow(dead_code)]

/// Declares a test that needs the library: the real test where it was found, an ignored one that
/// fails if forced to run where it was not.
macro_rules! library_test {
    ($(#[doc = $doc:literal])* fn $name:ident() $body:block) => {
        $(#[doc = $doc])*
        #[test]
        #[cfg(gfxstream_found)]
        fn $name() $body

        $(#[doc = $doc])*
        #[test]
        #[cfg(not(gfxstream_found))]
        #[ignore = "libgfxstream_backend was not found by pkg-config at build time"]
        fn $name() {
            panic!("libgfxstream_backend was not found by pkg-config at build time");
        }
    };
}

#[cfg(gfxstream_found)]
pub use found::*;

#[cfg(gfxstream_found)]
mod found {
    use std::time::{Duration, Instant};

    use gfxstream::{CompletedFence, Gfxstream, InitOptions};

    /// Logs to the test output; headless Mesa needs the surfaceless EGL platform.
    pub fn prepare_env() {
        let _ = env_logger::builder().is_test(true).try_init();
        if std::env::var_os("EGL_PLATFORM").is_none() {
            std::env::set_var("EGL_PLATFORM", "surfaceless");
        }
    }

    /// Initialises the library with the default flags (EGL, GLES and Vulkan).
    pub fn init() -> Gfxstream {
        prepare_env();
        Gfxstream::init(&InitOptions::default())
            .expect("gfxstream init (run these tests under cargo-nextest: one process per test)")
    }

    /// Collects completed fences until `done` says so, waiting on the fence fd (at most 10 s).
    pub fn wait_fences(
        gfx: &Gfxstream,
        mut done: impl FnMut(&[CompletedFence]) -> bool,
    ) -> Vec<CompletedFence> {
        use std::os::fd::AsRawFd;
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut all = Vec::new();
        loop {
            all.extend(gfx.completed_fences());
            if done(&all) || Instant::now() > deadline {
                return all;
            }
            let mut pfd = libc::pollfd {
                fd: gfx.fence_fd().as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd for the call.
            unsafe { libc::poll(&mut pfd, 1, 100) };
        }
    }
}
