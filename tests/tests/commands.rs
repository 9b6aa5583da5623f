//! Every 2D command's success path, with its exact response (type, flags, fence, used length).
//! Runs against `VUGPU_BACKEND` (default: our daemon with `--renderer software`).

mod common;

use common::*;
use vhost_user_gpu_tests::display::DisplayConfig;
use vhost_user_gpu_tests::protocol::{
    features, format, resp, Command, MemEntry, Rect, CTRL_HDR_SIZE, FLAG_FENCE,
    RESP_DISPLAY_INFO_SIZE, RESP_EDID_SIZE,
};
use vhost_user_gpu_tests::{edid, FrontendOptions};

/// A pixel value that is not in `pattern`'s range of a small image.
const OLD: u32 = 0x0011_2233;

/// An exact OK_NODATA: type, no flags, fence 0, 24 bytes.
fn assert_nodata(
    r: &vhost_user_gpu_tests::protocol::Response,
    what: &str,
    p: &vhost_user_gpu_tests::BackendProcess,
) {
    assert_resp(r, resp::OK_NODATA, what, p);
    assert_eq!(r.used_len as usize, CTRL_HDR_SIZE, "{what}: used length");
    assert_eq!(
        (r.hdr.flags, r.hdr.fence_id, r.hdr.ctx_id),
        (0, 0, 0),
        "{what}: header {}",
        r.describe()
    );
}

fn features_and_config(rd: Renderer) {
    let (p, fe) = start_on(rd, FrontendOptions::default());
    let offered = fe.offered_features();
    assert_ne!(
        offered & features::VERSION_1,
        0,
        "VIRTIO_F_VERSION_1 not offered: {offered:#x}"
    );
    assert_ne!(offered & features::PROTOCOL_FEATURES, 0);
    let proto = fe.offered_protocol_features();
    use vhost::vhost_user::VhostUserProtocolFeatures as P;
    for f in [P::CONFIG, P::MQ] {
        assert!(
            proto.contains(f),
            "protocol feature {f:?} not offered: {proto:?}"
        );
    }
    let cfg = fe.config().expect("CONFIG negotiated");
    if !is_qemu() {
        // QEMU's C backend leaves num_scanouts to QEMU (0 in its config space).
        assert_eq!(cfg.num_scanouts, 1, "{cfg:?}");
        match rd {
            Renderer::Software => {
                assert_eq!(
                    cfg.num_capsets, 0,
                    "the software renderer has no capsets: {cfg:?}"
                );
                assert_eq!(
                    offered & features::VIRGL,
                    0,
                    "software must not offer VIRGL"
                );
            }
            Renderer::Virgl => {
                assert!(cfg.num_capsets >= 1, "virglrenderer has capsets: {cfg:?}");
                assert_ne!(
                    offered & features::VIRGL,
                    0,
                    "virglrenderer must offer VIRGL"
                );
            }
        }
    }
    assert_eq!((cfg.events_read, cfg.events_clear), (0, 0));
    drop(p);
}

fn get_display_info_reports_the_display_peer_modes(rd: Renderer) {
    let (p, mut fe) = start_on(rd, FrontendOptions::default());
    let r = fe
        .request(&Command::get_display_info())
        .check(&p, "GET_DISPLAY_INFO");
    assert_resp(&r, resp::OK_DISPLAY_INFO, "GET_DISPLAY_INFO", &p);
    assert_eq!(r.used_len as usize, RESP_DISPLAY_INFO_SIZE);
    assert_eq!(r.hdr.flags, 0);
    let modes = r.display_info().unwrap();
    assert_eq!(modes[0].rect, Rect::new(0, 0, 1024, 768));
    assert_eq!(modes[0].enabled, 1);
    for (i, m) in modes.iter().enumerate().skip(1) {
        assert_eq!(m.enabled, 0, "scanout {i} enabled: {m:?}");
    }
}

fn get_edid_returns_a_valid_edid_for_the_mode(rd: Renderer) {
    let opts = FrontendOptions {
        display: Some(DisplayConfig {
            modes: vec![(1280, 800)],
            ..DisplayConfig::default()
        }),
        ..FrontendOptions::default()
    };
    let (p, mut fe) = start_on(rd, opts);
    assert_ne!(
        fe.features() & features::EDID,
        0,
        "VIRTIO_GPU_F_EDID not offered: {:#x}",
        fe.offered_features()
    );
    let r = fe.request(&Command::get_edid(0)).check(&p, "GET_EDID");
    assert_resp(&r, resp::OK_EDID, "GET_EDID", &p);
    assert_eq!(r.used_len as usize, RESP_EDID_SIZE);
    let e = r.edid().unwrap();
    assert!(edid::is_valid(&e), "invalid EDID {e:02x?}");
    assert_eq!(edid::preferred_mode(&e), Some((1280, 800)));
}

fn get_edid_without_display_edid_support_does_not_ask_the_display(rd: Renderer) {
    // The display peer offers no GPU protocol features: the daemon must not send GET_EDID on the
    // socket (QEMU would never answer), and must still answer the guest.
    let opts = FrontendOptions {
        display: Some(DisplayConfig {
            protocol_features: 0,
            modes: vec![(1024, 768)],
            answer_edid: false,
        }),
        ..FrontendOptions::default()
    };
    let (p, mut fe) = start_on(rd, opts);
    let d = fe.display().unwrap();
    // Let the GPU-socket handshake happen first (it may run after SET_SOCKET is acked).
    d.wait_event(0, EVENT_TIMEOUT, "GET_PROTOCOL_FEATURES", |e| {
        matches!(
            e,
            vhost_user_gpu_tests::display::DisplayEvent::GetProtocolFeatures
        )
    })
    .check(&p, "handshake");
    let _ = d.wait_event(
        0,
        std::time::Duration::from_millis(500),
        "SET_PROTOCOL_FEATURES",
        |e| {
            matches!(
                e,
                vhost_user_gpu_tests::display::DisplayEvent::SetProtocolFeatures(_)
            )
        },
    );
    let r = fe
        .request(&Command::get_edid(0))
        .check(&p, "GET_EDID without display EDID support");
    if r.ty() == resp::OK_EDID {
        let e = r.edid().unwrap();
        assert!(edid::is_valid(&e), "invalid EDID {e:02x?}");
    } else {
        assert_resp(&r, resp::ERR_UNSPEC, "GET_EDID without an EDID source", &p);
    }
    let st = d.state();
    assert!(
        !st.events
            .iter()
            .any(|e| matches!(e, vhost_user_gpu_tests::display::DisplayEvent::GetEdid(_))),
        "GET_EDID was sent to a display that did not negotiate PROTOCOL_F_EDID"
    );
    assert!(
        matches!(st.acked_features, None | Some(0)),
        "SET_PROTOCOL_FEATURES must ack only what was offered: {:?}",
        st.acked_features
    );
}

fn response_lengths_are_exact_with_oversized_buffers(rd: Renderer) {
    let (p, mut fe) = start_on(rd, FrontendOptions::default());
    for (c, len) in [
        (
            Command::get_display_info().response_len(1000),
            RESP_DISPLAY_INFO_SIZE,
        ),
        (
            Command::resource_create_2d(1, format::B8G8R8X8_UNORM, 4, 4).response_len(512),
            CTRL_HDR_SIZE,
        ),
        (Command::get_edid(0).response_len(2048), RESP_EDID_SIZE),
        (
            Command::resource_unref(999).response_len(100),
            CTRL_HDR_SIZE,
        ),
    ] {
        let r = fe.request(&c).check(&p, "oversized response buffer");
        assert_eq!(
            r.used_len as usize,
            len,
            "{}: used_len for {}",
            r.describe(),
            vhost_user_gpu_tests::protocol::type_name(c.hdr.ty)
        );
    }
    // A response split over three writable descriptors is legal.
    use vhost_user_gpu_tests::frontend::Segment;
    let pend = fe
        .submit_segments(
            vhost_user_gpu_tests::protocol::QueueId::Control,
            &[
                Segment::Bytes(Command::get_display_info().to_bytes()),
                Segment::Writable(10),
                Segment::Writable(100),
                Segment::Writable(298),
            ],
        )
        .unwrap();
    fe.kick(vhost_user_gpu_tests::protocol::QueueId::Control)
        .unwrap();
    let r = fe.wait(pend).check(&p, "split response");
    assert_eq!(r.used_len as usize, RESP_DISPLAY_INFO_SIZE);
    let modes = r.display_info().unwrap();
    assert_eq!(modes[0].rect, Rect::new(0, 0, 1024, 768));
}

fn resource_lifecycle_2d_each_answered_ok_nodata(rd: Renderer) {
    let (p, mut fe) = start_on(rd, FrontendOptions::default());
    let (w, h) = (64u32, 32u32);
    let size = w * h * 4;
    let backing = fe.memory().alloc(u64::from(size), 4096).unwrap();
    let steps = [
        (
            "create",
            Command::resource_create_2d(1, format::B8G8R8X8_UNORM, w, h),
        ),
        (
            "attach",
            Command::attach_backing(
                1,
                &[MemEntry {
                    addr: backing,
                    length: size,
                }],
            ),
        ),
        (
            "transfer",
            Command::transfer_to_host_2d(1, Rect::new(0, 0, w, h), 0),
        ),
        (
            "set_scanout",
            Command::set_scanout(0, 1, Rect::new(0, 0, w, h)),
        ),
        ("flush", Command::resource_flush(1, Rect::new(0, 0, w, h))),
        ("scanout off", Command::set_scanout(0, 0, Rect::default())),
        ("detach", Command::detach_backing(1)),
        ("unref", Command::resource_unref(1)),
    ];
    for (what, c) in steps {
        let r = fe.request(&c).check(&p, what);
        assert_nodata(&r, what, &p);
    }
    // The id is free again.
    let r = fe
        .request(&Command::resource_create_2d(
            1,
            format::B8G8R8X8_UNORM,
            w,
            h,
        ))
        .unwrap();
    assert_nodata(&r, "create again", &p);
}

fn every_2d_format_is_accepted_and_displayed_as_xrgb(rd: Renderer) {
    // Each 2D format: create, fill, transfer, scan out, flush; the display (x8r8g8b8) must show
    // the guest's colours. Byte order in memory per format (gallium/virgl names are in memory
    // order): B8G8R8* = B,G,R,x; A8R8G8B8/X8R8G8B8 = x,R,G,B; R8G8B8* = R,G,B,x;
    // A8B8G8R8/X8B8G8R8 = x,B,G,R. All failing formats are listed at once.
    use vhost_user_gpu_tests::display::DisplayEvent;
    let (p, mut fe) = start_on(rd, FrontendOptions::default());
    let d = fe.display().unwrap();
    let formats = [
        ("B8G8R8A8", format::B8G8R8A8_UNORM, [2, 1, 0]),
        ("B8G8R8X8", format::B8G8R8X8_UNORM, [2, 1, 0]),
        ("A8R8G8B8", format::A8R8G8B8_UNORM, [1, 2, 3]),
        ("X8R8G8B8", format::X8R8G8B8_UNORM, [1, 2, 3]),
        ("R8G8B8A8", format::R8G8B8A8_UNORM, [0, 1, 2]),
        ("X8B8G8R8", format::X8B8G8R8_UNORM, [3, 2, 1]),
        ("A8B8G8R8", format::A8B8G8R8_UNORM, [3, 2, 1]),
        ("R8G8B8X8", format::R8G8B8X8_UNORM, [0, 1, 2]),
    ];
    let (w, h) = (8u32, 4u32);
    let mut failures = Vec::new();
    for (i, (name, f, rgb_bytes)) in formats.into_iter().enumerate() {
        let id = 10 + i as u32;
        let r = fe
            .request(&Command::resource_create_2d(id, f, w, h))
            .unwrap();
        if r.ty() != resp::OK_NODATA {
            failures.push(format!(
                "{name} ({f}): RESOURCE_CREATE_2D answered {}",
                r.describe()
            ));
            continue;
        }
        let size = w * h * 4;
        let backing = fe.memory().alloc(u64::from(size), 4096).unwrap();
        let bytes: Vec<u8> = (0..size)
            .map(|b| (b * 29 + i as u32 * 7) as u8 | 1)
            .collect();
        fe.memory().write(backing, &bytes).unwrap();
        let setup = [
            Command::attach_backing(
                id,
                &[MemEntry {
                    addr: backing,
                    length: size,
                }],
            ),
            Command::transfer_to_host_2d(id, Rect::new(0, 0, w, h), 0),
            Command::set_scanout(0, id, Rect::new(0, 0, w, h)),
        ];
        for c in setup {
            let r = fe.request(&c).unwrap();
            assert_nodata(
                &r,
                &format!(
                    "{name}: {}",
                    vhost_user_gpu_tests::protocol::type_name(c.hdr.ty)
                ),
                &p,
            );
        }
        let mark = d.mark();
        fe.ok(&Command::resource_flush(id, Rect::new(0, 0, w, h)))
            .check(&p, "flush");
        d.wait_event(mark, EVENT_TIMEOUT, "UPDATE", |e| {
            matches!(e, DisplayEvent::Update { .. })
        })
        .check(&p, "update");
        std::thread::sleep(std::time::Duration::from_millis(50));
        let fb = d.framebuffer(0).expect("framebuffer");
        let mut bad = None;
        for y in 0..h {
            for x in 0..w {
                let o = ((y * w + x) * 4) as usize;
                let want = (u32::from(bytes[o + rgb_bytes[0]]) << 16)
                    | (u32::from(bytes[o + rgb_bytes[1]]) << 8)
                    | u32::from(bytes[o + rgb_bytes[2]]);
                let got = fb.pixel(x, y).unwrap_or(0) & 0xff_ffff;
                if got != want && bad.is_none() {
                    bad = Some(format!("{name} ({f}): pixel ({x},{y}) shows {got:06x}, guest bytes {:02x?} mean {want:06x}", &bytes[o..o + 4]));
                }
            }
        }
        failures.extend(bad);
        fe.ok(&Command::set_scanout(0, 0, Rect::default()))
            .check(&p, "scanout off");
    }
    assert!(
        failures.is_empty(),
        "{} formats failed:\n{}\n{}",
        failures.len(),
        failures.join("\n"),
        p.stderr_tail()
    );
}

fn backing_in_several_entries_and_transfer_at_offset(rd: Renderer) {
    // A 32x8 resource whose backing is split into 4 page-unaligned pieces far apart; a transfer of
    // a sub-rectangle at the right offset must land exactly on the display.
    let (p, mut fe) = start_on(rd, FrontendOptions::default());
    let (w, h) = (32u32, 8u32);
    let stride = w * 4;
    let total = stride * h;
    let pieces = [100u32, 300, 124, total - 524];
    let mut entries = Vec::new();
    for len in pieces {
        let a = fe.memory().alloc(u64::from(len) + 64, 64).unwrap() + 8;
        entries.push(MemEntry {
            addr: a,
            length: len,
        });
    }
    fe.ok(&Command::resource_create_2d(
        3,
        format::B8G8R8X8_UNORM,
        w,
        h,
    ))
    .check(&p, "create");
    let r = fe.request(&Command::attach_backing(3, &entries)).unwrap();
    assert_nodata(&r, "attach 4 entries", &p);
    // Write a linear image across the pieces.
    let write_image = |fe: &vhost_user_gpu_tests::GpuFrontend, f: &dyn Fn(u32, u32) -> u32| {
        let image: Vec<u8> = (0..w * h)
            .flat_map(|i| f(i % w, i / w).to_le_bytes())
            .collect();
        let mut off = 0usize;
        for e in &entries {
            fe.memory()
                .write(e.addr, &image[off..off + e.length as usize])
                .unwrap();
            off += e.length as usize;
        }
    };
    // First the whole resource holds OLD (the content of a new resource is undefined).
    write_image(&fe, &|_, _| OLD);
    fe.ok(&Command::transfer_to_host_2d(3, Rect::new(0, 0, w, h), 0))
        .check(&p, "full transfer");
    write_image(&fe, &pattern);
    fe.ok(&Command::set_scanout(0, 3, Rect::new(0, 0, w, h)))
        .check(&p, "set_scanout");
    // Transfer only rows 2..6, columns 4..20 (offset = y * stride + x * 4, as Linux does).
    let rect = Rect::new(4, 2, 16, 4);
    let offset = u64::from(rect.y * stride + rect.x * 4);
    let r = fe
        .request(&Command::transfer_to_host_2d(3, rect, offset))
        .unwrap();
    assert_nodata(&r, "transfer sub-rect", &p);
    let d = fe.display().unwrap();
    let mark = d.mark();
    fe.ok(&Command::resource_flush(3, Rect::new(0, 0, w, h)))
        .check(&p, "flush");
    d.wait_event(mark, EVENT_TIMEOUT, "UPDATE", |e| {
        matches!(
            e,
            vhost_user_gpu_tests::display::DisplayEvent::Update { .. }
        )
    })
    .check(&p, "update");
    std::thread::sleep(std::time::Duration::from_millis(100));
    let fb = d.framebuffer(0).expect("scanout 0 framebuffer");
    for y in 0..h {
        for x in 0..w {
            let inside =
                x >= rect.x && x < rect.x + rect.width && y >= rect.y && y < rect.y + rect.height;
            let want = if inside { pattern(x, y) } else { OLD };
            assert_eq!(
                fb.pixel(x, y).unwrap() & 0x00ff_ffff,
                want & 0x00ff_ffff,
                "pixel ({x},{y}) inside={inside}"
            );
        }
    }
}

fn fenced_commands_echo_fence_and_flag(rd: Renderer) {
    let (p, mut fe) = start_on(rd, FrontendOptions::default());
    let r = fe
        .request(
            &Command::resource_create_2d(5, format::B8G8R8X8_UNORM, 8, 8).fenced(0x1_2345_6789),
        )
        .unwrap();
    assert_resp(&r, resp::OK_NODATA, "fenced create", &p);
    assert_eq!(r.hdr.flags & FLAG_FENCE, FLAG_FENCE, "{}", r.describe());
    assert_eq!(
        r.hdr.fence_id, 0x1_2345_6789,
        "fence id must be copied in full (64 bits)"
    );
    let r = fe
        .request(&Command::resource_unref(5).fenced(u64::MAX))
        .unwrap();
    assert_resp(&r, resp::OK_NODATA, "fenced unref", &p);
    assert_eq!(
        (r.hdr.flags & FLAG_FENCE, r.hdr.fence_id),
        (FLAG_FENCE, u64::MAX)
    );
    // Fences on a series of commands come back in order, each with its id.
    let cmds: Vec<Command> = (0..16)
        .map(|i| {
            Command::resource_create_2d(100 + i, format::B8G8R8X8_UNORM, 4, 4)
                .fenced(1000 + u64::from(i))
        })
        .collect();
    let rs = fe.request_all(&cmds).unwrap();
    for (i, r) in rs.iter().enumerate() {
        assert_resp(r, resp::OK_NODATA, "batch", &p);
        assert_eq!(r.hdr.fence_id, 1000 + i as u64);
    }
}

fn resource_uuid_when_offered(rd: Renderer) {
    let (p, mut fe) = start_on(rd, FrontendOptions::default());
    if fe.offered_features() & features::RESOURCE_UUID == 0 {
        assert!(
            is_qemu(),
            "our daemon should offer VIRTIO_GPU_F_RESOURCE_UUID"
        );
        return;
    }
    fe.ok(&Command::resource_create_2d(
        1,
        format::B8G8R8X8_UNORM,
        4,
        4,
    ))
    .unwrap();
    fe.ok(&Command::resource_create_2d(
        2,
        format::B8G8R8X8_UNORM,
        4,
        4,
    ))
    .unwrap();
    let a = fe
        .expect(&Command::assign_uuid(1), resp::OK_RESOURCE_UUID)
        .check(&p, "uuid 1");
    let b = fe
        .expect(&Command::assign_uuid(2), resp::OK_RESOURCE_UUID)
        .check(&p, "uuid 2");
    assert_eq!(a.used_len as usize, CTRL_HDR_SIZE + 16);
    let (ua, ub) = (a.uuid().unwrap(), b.uuid().unwrap());
    assert_ne!(ua, ub);
    assert_ne!(ua, [0; 16]);
}

fn capset_index_out_of_range(rd: Renderer) {
    let (p, mut fe) = start_on(rd, FrontendOptions::default());
    let n = fe.config().map(|c| c.num_capsets).unwrap_or(0);
    // Index num_capsets is out of range on every device.
    let r = fe.request(&Command::get_capset_info(n)).unwrap();
    assert_resp(
        &r,
        resp::ERR_INVALID_PARAMETER,
        "GET_CAPSET_INFO out of range",
        &p,
    );
}

fn get_edid_the_display_never_answers_does_not_wedge_the_device(rd: Renderer) {
    // The display negotiates PROTOCOL_F_EDID but never answers GET_EDID, as QEMU does for a
    // scanout at or above its max_outputs: the guest still gets an answer, the daemon drops the
    // socket after its reply timeout and serves on (headless).
    let opts = FrontendOptions {
        display: Some(DisplayConfig {
            answer_edid: false,
            ..DisplayConfig::default()
        }),
        ..FrontendOptions::default()
    };
    let (p, mut fe) = start_on(rd, opts);
    let d = fe.display().unwrap();
    d.wait_event(0, EVENT_TIMEOUT, "SET_PROTOCOL_FEATURES", |e| {
        matches!(
            e,
            vhost_user_gpu_tests::display::DisplayEvent::SetProtocolFeatures(_)
        )
    })
    .check(&p, "handshake");
    let start = std::time::Instant::now();
    let r = fe
        .request(&Command::get_edid(0))
        .check(&p, "GET_EDID the display never answers");
    if r.ty() == resp::OK_EDID {
        assert!(edid::is_valid(&r.edid().unwrap()), "invalid EDID");
    } else {
        assert_resp(&r, resp::ERR_UNSPEC, "GET_EDID without an answer", &p);
    }
    assert!(
        start.elapsed() < std::time::Duration::from_secs(4),
        "GET_EDID took {:?}",
        start.elapsed()
    );
    let r = fe
        .request(&Command::get_display_info())
        .check(&p, "GET_DISPLAY_INFO after the unanswered GET_EDID");
    assert_resp(&r, resp::OK_DISPLAY_INFO, "GET_DISPLAY_INFO", &p);
    assert!(
        p.stderr().contains("no reply within"),
        "the daemon does not say why it went headless:\n{}",
        p.stderr_tail()
    );
}

per_renderer!(
    get_edid_the_display_never_answers_does_not_wedge_the_device,
    get_edid_without_display_edid_support_does_not_ask_the_display,
    response_lengths_are_exact_with_oversized_buffers,
    features_and_config,
    get_display_info_reports_the_display_peer_modes,
    get_edid_returns_a_valid_edid_for_the_mode,
    resource_lifecycle_2d_each_answered_ok_nodata,
    every_2d_format_is_accepted_and_displayed_as_xrgb,
    backing_in_several_entries_and_transfer_at_offset,
    fenced_commands_echo_fence_and_flag,
    resource_uuid_when_offered,
    capset_index_out_of_range,
);
