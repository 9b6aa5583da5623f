//! Init: once per process, guarded against the library's hangs, inconsistent flags refused.

#[macro_use]
mod common;

#[cfg(gfxstream_found)]
use gfxstream::{Error, Gfxstream, InitOptions, RendererFlags};
#[cfg(gfxstream_found)]
use std::time::Duration;

library_test! {
    /// A second init fails with a typed error, also after the first instance was dropped.
    fn second_init_fails_even_after_teardown() {
        let gfx = common::init();
        let again = Gfxstream::init(&InitOptions::default());
        assert!(matches!(again, Err(Error::AlreadyInitialized)), "{again:?}");
        drop(gfx);
        let after = Gfxstream::init(&InitOptions::default());
        assert!(matches!(after, Err(Error::AlreadyInitialized)), "{after:?}");
    }
}

library_test! {
    /// Bad flags are refused before the library is touched, so a good init still works after.
    fn bad_flags_are_refused_before_init() {
        common::prepare_env();
        let bad = InitOptions {
            flags: RendererFlags::USE_EGL | RendererFlags::USE_GLES | RendererFlags::USE_SYSTEM_BLOB,
            ..InitOptions::default()
        };
        assert!(matches!(Gfxstream::init(&bad), Err(Error::InvalidFlags { .. })));
        let unknown = InitOptions {
            flags: RendererFlags::from_bits(0x19 | 0x1000),
            ..InitOptions::default()
        };
        assert!(matches!(Gfxstream::init(&unknown), Err(Error::InvalidFlags { .. })));
        Gfxstream::init(&InitOptions::default()).expect("init after refused flags");
    }
}

library_test! {
    /// The GLX path without an X display (where the library blocks forever) is refused.
    fn glx_without_display_is_refused() {
        common::prepare_env();
        std::env::remove_var("DISPLAY");
        std::env::remove_var("ANDROID_GFXSTREAM_EGL");
        std::env::remove_var("ANDROID_EGL_ON_EGL");
        let glx = InitOptions {
            flags: RendererFlags::USE_GLES,
            init_timeout: Duration::from_secs(5),
            ..InitOptions::default()
        };
        let err = Gfxstream::init(&glx);
        assert!(matches!(err, Err(Error::NoXDisplay)), "{err:?}");
    }
}

library_test! {
    /// Without a usable EGL display (Mesa's default platform on a host with no display) the
    /// library blocks in init; the watchdog turns that into an error.
    fn init_that_hangs_times_out() {
        let _ = env_logger::builder().is_test(true).try_init();
        std::env::remove_var("EGL_PLATFORM");
        std::env::remove_var("DISPLAY");
        std::env::remove_var("WAYLAND_DISPLAY");
        let options = InitOptions {
            init_timeout: Duration::from_secs(10),
            ..InitOptions::default()
        };
        let start = std::time::Instant::now();
        let err = Gfxstream::init(&options);
        assert!(matches!(err, Err(Error::InitTimedOut(_))), "{err:?}");
        assert!(start.elapsed() < Duration::from_secs(20));
    }
}

library_test! {
    /// The meson build has no snapshot support: the call reports an error (and does not crash).
    fn snapshot_is_reported_unsupported() {
        let gfx = common::init();
        let dir = std::env::temp_dir();
        let err = gfx.snapshot(&dir);
        assert!(matches!(err, Err(Error::Library { call: "stream_renderer_snapshot", errno: 22 })), "{err:?}");
        let err = gfx.restore(&dir);
        assert!(matches!(err, Err(Error::Library { call: "stream_renderer_restore", errno: 22 })), "{err:?}");
    }
}
