//! The harness against an independent backend, QEMU's C `vhost-user-gpu` (2D): where QEMU
//! behaves correctly the harness must agree with it, which checks the harness itself (a frontend
//! bug that our daemon happened to mirror would show here). QEMU's C backend serves one
//! connection and exits, so every test spawns its own.
//!
//! Known QEMU differences, not tested here (the main suites show them with VUGPU_BACKEND=qemu):
//! GET_CAPSET_INFO out of range gives ERR_UNSPEC, width-0 resources are accepted, GET_EDID of a
//! bad scanout hangs its control queue, an UPDATE_CURSOR with resource 0 sends a CURSOR_UPDATE
//! instead of CURSOR_POS_HIDE, a zero-length descriptor stops its queue, UPDATE carries the
//! resource's own byte order instead of x8r8g8b8 for formats other than B8G8R8A8/B8G8R8X8, and it
//! exits on disconnect.

use std::time::Duration;

use vhost_user_gpu_tests::display::{
    DisplayConfig, DisplayEvent, PROTOCOL_F_DMABUF2, PROTOCOL_F_EDID,
};
use vhost_user_gpu_tests::protocol::{features, format, resp, Command, MemEntry, Rect, FLAG_FENCE};
use vhost_user_gpu_tests::{edid, BackendCommand, BackendProcess, FrontendOptions, GpuFrontend};

fn qemu(modes: Vec<(u32, u32)>) -> (BackendProcess, GpuFrontend) {
    let cmd =
        BackendCommand::qemu().unwrap_or_else(|e| panic!("{e} (Debian package qemu-system-gui)"));
    let p = BackendProcess::spawn(&cmd).unwrap_or_else(|e| panic!("{e}"));
    let fe = GpuFrontend::connect(
        p.socket_path(),
        FrontendOptions {
            display: Some(DisplayConfig {
                modes,
                ..DisplayConfig::default()
            }),
            ..FrontendOptions::default()
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", p.stderr_tail()));
    (p, fe)
}

fn pattern(x: u32, y: u32) -> u32 {
    (x * 3) & 0xff | ((y * 5) & 0xff) << 8 | 0x80_0000
}

#[test]
fn qemu_handshake_display_info_and_edid() {
    let (p, mut fe) = qemu(vec![(800, 600), (640, 480)]);
    let d = fe.display().unwrap();
    d.wait_event(0, Duration::from_secs(5), "SET_PROTOCOL_FEATURES", |e| {
        matches!(e, DisplayEvent::SetProtocolFeatures(_))
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", p.stderr_tail()));
    assert_eq!(
        d.state().acked_features,
        Some(PROTOCOL_F_EDID | PROTOCOL_F_DMABUF2)
    );
    assert_ne!(fe.features() & features::EDID, 0);
    let modes = fe
        .request(&Command::get_display_info())
        .unwrap()
        .display_info()
        .unwrap();
    assert_eq!((modes[0].rect.width, modes[0].rect.height), (800, 600));
    assert_eq!((modes[1].rect.width, modes[1].rect.height), (640, 480));
    let e = fe
        .expect(&Command::get_edid(1), resp::OK_EDID)
        .unwrap()
        .edid()
        .unwrap();
    // QEMU forwards the display's EDID unchanged.
    assert_eq!(e, edid::generate(640, 480).to_vec());
}

#[test]
fn qemu_partial_flush_is_pixel_exact() {
    let (p, mut fe) = qemu(vec![(64, 32)]);
    let d = fe.display().unwrap();
    let size = 64 * 32 * 4;
    let backing = fe.memory().alloc(size, 4096).unwrap();
    fe.ok(&Command::resource_create_2d(
        1,
        format::B8G8R8X8_UNORM,
        64,
        32,
    ))
    .unwrap();
    fe.ok(&Command::attach_backing(
        1,
        &[MemEntry {
            addr: backing,
            length: size as u32,
        }],
    ))
    .unwrap();
    let mem = fe.memory().clone();
    let write = |f: &dyn Fn(u32, u32) -> u32| {
        let b: Vec<u8> = (0..64 * 32)
            .flat_map(|i| f(i % 64, i / 64).to_le_bytes())
            .collect();
        mem.write(backing, &b).unwrap();
    };
    write(&|_, _| 0x0011_2233);
    fe.ok(&Command::transfer_to_host_2d(1, Rect::new(0, 0, 64, 32), 0))
        .unwrap();
    fe.ok(&Command::set_scanout(0, 1, Rect::new(0, 0, 64, 32)))
        .unwrap();
    let first = d.mark();
    fe.ok(&Command::resource_flush(1, Rect::new(0, 0, 64, 32)))
        .unwrap();
    // The backend sends UPDATEs asynchronously: wait for the full-frame one, so that it cannot be
    // taken for the partial flush's UPDATE below.
    d.wait_event(first, Duration::from_secs(5), "full-frame UPDATE", |e| {
        matches!(
            e,
            DisplayEvent::Update {
                width: 64,
                height: 32,
                ..
            }
        )
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", p.stderr_tail()));
    write(&pattern);
    fe.ok(&Command::transfer_to_host_2d(1, Rect::new(0, 0, 64, 32), 0))
        .unwrap();
    let mark = d.mark();
    let rect = Rect::new(5, 6, 20, 10);
    let r = fe
        .request(&Command::resource_flush(1, rect).fenced(9))
        .unwrap();
    assert_eq!(
        (r.ty(), r.hdr.flags & FLAG_FENCE, r.hdr.fence_id),
        (resp::OK_NODATA, FLAG_FENCE, 9)
    );
    let (_, ev) = d
        .wait_event(mark, Duration::from_secs(5), "UPDATE", |e| {
            matches!(e, DisplayEvent::Update { .. })
        })
        .unwrap_or_else(|e| panic!("{e}\n{}", p.stderr_tail()));
    let DisplayEvent::Update {
        x,
        y,
        width,
        height,
        ..
    } = ev
    else {
        unreachable!()
    };
    assert_eq!(Rect::new(x, y, width, height), rect);
    std::thread::sleep(Duration::from_millis(50));
    let fb = d.framebuffer(0).unwrap();
    for yy in 0..32 {
        for xx in 0..64 {
            let inside = (5..25).contains(&xx) && (6..16).contains(&yy);
            let want = if inside { pattern(xx, yy) } else { 0x0011_2233 };
            assert_eq!(fb.pixel(xx, yy).unwrap() & 0xff_ffff, want, "({xx},{yy})");
        }
    }
}

#[test]
fn qemu_agrees_on_basic_error_codes() {
    let (p, mut fe) = qemu(vec![(64, 32)]);
    let cases = [
        (Command::resource_unref(42), resp::ERR_INVALID_RESOURCE_ID),
        (
            Command::resource_create_2d(0, format::B8G8R8X8_UNORM, 4, 4),
            resp::ERR_INVALID_RESOURCE_ID,
        ),
        (
            Command::resource_create_2d(1, 999, 4, 4),
            resp::ERR_INVALID_PARAMETER,
        ),
        (
            Command::set_scanout(16, 1, Rect::new(0, 0, 1, 1)),
            resp::ERR_INVALID_SCANOUT_ID,
        ),
        (
            Command::resource_flush(42, Rect::new(0, 0, 1, 1)),
            resp::ERR_INVALID_RESOURCE_ID,
        ),
    ];
    for (c, want) in cases {
        let r = fe
            .request(&c)
            .unwrap_or_else(|e| panic!("{e}\n{}", p.stderr_tail()));
        assert_eq!(r.ty(), want, "{}", r.describe());
    }
}
