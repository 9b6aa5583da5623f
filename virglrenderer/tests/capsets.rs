//! Capsets (GET_CAPSET_INFO / GET_CAPSET).

mod common;

use virglrenderer::{Error, CAPSET_VENUS, CAPSET_VIRGL, CAPSET_VIRGL2};

#[test]
fn virgl2_capset_reads() {
    let _lock = common::lock();
    let r = common::renderer();
    let info = r.capset_info(CAPSET_VIRGL2).expect("VIRGL2 capset");
    assert_eq!(info.max_version, 2);
    assert!(info.max_size > 1000, "size {}", info.max_size);
    let data = r.capset(CAPSET_VIRGL2, 2).unwrap();
    assert_eq!(data.len(), info.max_size as usize);
    // The first word of the caps union is max_version.
    assert_eq!(u32::from_le_bytes([data[0], data[1], data[2], data[3]]), 2);
    // Non-trivial: most of it is filled in (limits, format masks, renderer string).
    let nonzero = data.iter().filter(|&&b| b != 0).count();
    assert!(nonzero > 200, "only {nonzero} non-zero bytes");
}

#[test]
fn virgl_capset_reads() {
    let _lock = common::lock();
    let r = common::renderer();
    let info = r.capset_info(CAPSET_VIRGL).expect("VIRGL capset");
    assert_eq!(info.max_version, 1);
    let data = r.capset(CAPSET_VIRGL, 1).unwrap();
    assert_eq!(data.len(), info.max_size as usize);
    assert_eq!(u32::from_le_bytes([data[0], data[1], data[2], data[3]]), 1);
}

#[test]
fn unknown_and_disabled_capsets() {
    let _lock = common::lock();
    let r = common::renderer();
    assert!(r.capset_info(99).is_none());
    assert!(matches!(r.capset(99, 0), Err(Error::UnknownCapset(99))));
    // Venus was not enabled at init.
    assert!(r.capset_info(CAPSET_VENUS).is_none());
    assert!(matches!(
        r.capset(CAPSET_VIRGL2, 3),
        Err(Error::InvalidArgument(_))
    ));
    let ids: Vec<u32> = r.capsets().iter().map(|c| c.capset_id).collect();
    assert_eq!(ids, vec![CAPSET_VIRGL, CAPSET_VIRGL2]);
}

#[test]
fn venus_capset_when_enabled() {
    let _lock = common::lock();
    // From 1.0 on, Debian's builds run Venus in the render server (package virgl-server; a
    // library built elsewhere finds it through RENDER_SERVER_EXEC_PATH): without it the Venus
    // capset is listed but left unfilled. 0.10 runs Venus in-process.
    let flags = if virglrenderer::LIBRARY_AT_LEAST_1_0 {
        virglrenderer::RendererFlags::VENUS
            | virglrenderer::RendererFlags::RENDER_SERVER
            | virglrenderer::RendererFlags::THREAD_SYNC
            | virglrenderer::RendererFlags::ASYNC_FENCE_CB
    } else {
        virglrenderer::RendererFlags::VENUS
    };
    let r = common::renderer_with(flags);
    // Debian's libvirglrenderer is built with Venus. For a library built without it (e.g. a
    // local `meson -Dvenus=false` build) set VIRGLRENDERER_TEST_NO_VENUS=1: the test then
    // checks that the capset is absent instead.
    if std::env::var_os("VIRGLRENDERER_TEST_NO_VENUS").is_some() {
        assert!(r.capset_info(CAPSET_VENUS).is_none());
        assert!(r.create_context(1, b"venus", Some(CAPSET_VENUS)).is_err());
        return;
    }
    let info = r
        .capset_info(CAPSET_VENUS)
        .expect("Venus capset with the VENUS flag");
    assert!(info.max_size > 0);
    let data = r.capset(CAPSET_VENUS, info.max_version).unwrap();
    assert_eq!(data.len(), info.max_size as usize);
    assert!(data.iter().any(|&b| b != 0), "Venus capset left unfilled");
    let ids: Vec<u32> = r.capsets().iter().map(|c| c.capset_id).collect();
    assert_eq!(ids, vec![CAPSET_VIRGL, CAPSET_VIRGL2, CAPSET_VENUS]);
    // A Venus context (CONTEXT_INIT with capset 4) next to a virgl one.
    let v = r.create_context(1, b"venus", Some(CAPSET_VENUS)).unwrap();
    let g = r.create_context(2, b"virgl", None).unwrap();
    assert_eq!((v.id(), g.id()), (1, 2));
}
