//! 3D through `--renderer virglrenderer`: capsets, contexts, a real virgl command stream in
//! SUBMIT_3D that clears a render target, read back with TRANSFER_FROM_HOST_3D and through the
//! scanout; fences (answered only after completion, per ring) and 3D error paths.

mod common;

use common::*;
use vhost_user_gpu_tests::display::DisplayEvent;
use vhost_user_gpu_tests::protocol::{
    capset, features, format, resp, Box3d, Command, MemEntry, Rect, Resource3d, Transfer3d,
    CTRL_HDR_SIZE, FLAG_FENCE, FLAG_INFO_RING_IDX,
};
use vhost_user_gpu_tests::virgl::{clear_stream, scanout_target, BIND_SAMPLER_VIEW};
use vhost_user_gpu_tests::{BackendProcess, FrontendOptions, GpuFrontend};

const W: u32 = 64;
const H: u32 = 48;
/// Clear colour; multiples of 1/255 so that the bytes are exact: R 0x33, G 0x66, B 0xcc.
const RGBA: [f32; 4] = [51.0 / 255.0, 102.0 / 255.0, 204.0 / 255.0, 1.0];
const XRGB: u32 = 0x0033_66cc;

fn start3d() -> Option<(BackendProcess, GpuFrontend)> {
    if virgl_opted_out() {
        return None;
    }
    let (p, fe) = start_on(Renderer::Virgl, FrontendOptions::default());
    assert_ne!(
        fe.features() & features::VIRGL,
        0,
        "VIRTIO_GPU_F_VIRGL not offered by {}: {:#x}",
        p.command_line(),
        fe.offered_features()
    );
    Some((p, fe))
}

fn target3d() -> Resource3d {
    scanout_target(W, H)
}

/// Context 1 with render target `id` attached and backed; returns the backing address.
fn setup(fe: &mut GpuFrontend, p: &BackendProcess, id: u32) -> u64 {
    fe.ok(&Command::ctx_create(1, 0, "harness"))
        .check(p, "CTX_CREATE");
    fe.ok(&Command::resource_create_3d(id, &target3d()))
        .check(p, "RESOURCE_CREATE_3D");
    fe.ok(&Command::ctx_attach_resource(1, id))
        .check(p, "CTX_ATTACH_RESOURCE");
    let size = W * H * 4;
    let backing = fe.memory().alloc(u64::from(size), 4096).unwrap();
    fe.ok(&Command::attach_backing(
        id,
        &[MemEntry {
            addr: backing,
            length: size,
        }],
    ))
    .check(p, "RESOURCE_ATTACH_BACKING");
    backing
}

fn whole() -> Transfer3d {
    Transfer3d {
        bx: Box3d {
            x: 0,
            y: 0,
            z: 0,
            w: W,
            h: H,
            d: 1,
        },
        stride: W * 4,
        ..Transfer3d::default()
    }
}

fn assert_cleared(bytes: &[u8]) {
    for (i, px) in bytes.chunks_exact(4).enumerate() {
        assert_eq!(
            [px[0], px[1], px[2]],
            [0xcc, 0x66, 0x33],
            "pixel {} ({},{}) B,G,R after the clear",
            i,
            i as u32 % W,
            i as u32 / W
        );
    }
}

#[test]
fn capsets_are_listed_and_readable() {
    let Some((p, mut fe)) = start3d() else { return };
    let n = fe.config().unwrap().num_capsets;
    assert!(n >= 1, "no capsets");
    let mut ids = Vec::new();
    for i in 0..n {
        let r = fe
            .expect(&Command::get_capset_info(i), resp::OK_CAPSET_INFO)
            .check(&p, "GET_CAPSET_INFO");
        assert_eq!(r.used_len as usize, CTRL_HDR_SIZE + 16);
        let info = r.capset_info().unwrap();
        assert!(
            [capset::VIRGL, capset::VIRGL2, capset::VENUS, capset::DRM].contains(&info.capset_id),
            "capset {i}: {info:?}"
        );
        // Venus versions start at 0; virgl's at 1.
        let min_version = u32::from(info.capset_id != capset::VENUS);
        assert!(
            info.max_version >= min_version && info.max_size > 0 && info.max_size <= 65536,
            "{info:?}"
        );
        let c = fe
            .expect(
                &Command::get_capset(info.capset_id, info.max_version, info.max_size),
                resp::OK_CAPSET,
            )
            .check(&p, "GET_CAPSET");
        assert_eq!(
            c.used_len,
            CTRL_HDR_SIZE as u32 + info.max_size,
            "GET_CAPSET length for {info:?}"
        );
        assert!(
            c.payload().iter().any(|&b| b != 0),
            "capset {info:?} is all zero"
        );
        ids.push(info.capset_id);
    }
    assert!(
        ids.contains(&capset::VIRGL) || ids.contains(&capset::VIRGL2),
        "{ids:?}"
    );
    let r = fe.request(&Command::get_capset_info(n)).unwrap();
    assert_resp(
        &r,
        resp::ERR_INVALID_PARAMETER,
        "capset index out of range",
        &p,
    );
    let r = fe
        .request(&Command::get_capset(capset::VIRGL2, 999, 64))
        .unwrap();
    assert_resp(
        &r,
        resp::ERR_INVALID_PARAMETER,
        "capset version out of range",
        &p,
    );
}

/// What GET_CAPSET_INFO answers for every capset index the config announces.
fn capset_infos(
    fe: &mut GpuFrontend,
    p: &BackendProcess,
) -> Vec<vhost_user_gpu_tests::protocol::CapsetInfo> {
    (0..fe.config().unwrap().num_capsets)
        .map(|i| {
            fe.expect(&Command::get_capset_info(i), resp::OK_CAPSET_INFO)
                .check(p, "GET_CAPSET_INFO")
                .capset_info()
                .unwrap()
        })
        .collect()
}

/// The library version the daemon logged ("virglrenderer X.Y.Z initialized"), as (major, minor).
fn logged_library_version(p: &BackendProcess) -> (u32, u32) {
    let err = p.stderr();
    let v = err
        .split("virglrenderer ")
        .skip(1)
        .find_map(|rest| rest.split_once(" initialized").map(|(v, _)| v.to_owned()))
        .unwrap_or_else(|| panic!("no 'virglrenderer X initialized' line:\n{err}"));
    let mut parts = v.split('.').map(|n| n.parse::<u32>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

/// Venus (capset 4) is offered by default only where the guest can use it: libvirglrenderer
/// 1.0 or newer with its render server, and a Venus capset of non-zero wire format version.
/// Below 1.0 it stays off (0.10's wire format 0 is refused by Mesa's Venus driver) and the
/// daemon says why; a CTX_CREATE for capset 4 is then refused.
#[test]
fn venus_is_offered_by_default_only_where_guests_can_use_it() {
    let Some((p, mut fe)) = start3d() else { return };
    let venus = capset_infos(&mut fe, &p)
        .into_iter()
        .find(|c| c.capset_id == capset::VENUS);
    let version = logged_library_version(&p);
    let server = std::path::Path::new("/usr/libexec/virgl_render_server").exists()
        || std::env::var_os("RENDER_SERVER_EXEC_PATH").is_some();
    if version >= (1, 0) && server {
        let info = venus.unwrap_or_else(|| {
            panic!(
                "library {version:?} with a render server: no Venus capset\n{}",
                p.stderr()
            )
        });
        let c = fe
            .expect(
                &Command::get_capset(info.capset_id, info.max_version, info.max_size),
                resp::OK_CAPSET,
            )
            .check(&p, "GET_CAPSET Venus");
        let wire = u32::from_le_bytes(c.payload()[..4].try_into().unwrap());
        assert_ne!(wire, 0, "Venus wire format version 0 offered");
        fe.ok(&Command::ctx_create(1, capset::VENUS, "venus"))
            .check(&p, "CTX_CREATE Venus");
    } else {
        assert!(venus.is_none(), "Venus offered on {version:?}: {venus:?}");
        let why = if version < (1, 0) {
            "older than 1.0"
        } else {
            "virgl-server"
        };
        assert!(
            p.stderr().contains("Venus (Vulkan) not offered") && p.stderr().contains(why),
            "no reason logged for leaving Venus out:\n{}",
            p.stderr()
        );
        let r = fe
            .request(&Command::ctx_create(1, capset::VENUS, "venus"))
            .unwrap();
        assert_resp(
            &r,
            resp::ERR_INVALID_PARAMETER,
            "CTX_CREATE for a capset not offered",
            &p,
        );
    }
}

#[test]
fn submit_3d_clear_then_transfer_from_host_shows_the_colour() {
    let Some((p, mut fe)) = start3d() else { return };
    let backing = setup(&mut fe, &p, 2);
    let stream = clear_stream(2, format::B8G8R8X8_UNORM, RGBA);
    let r = fe
        .request(&Command::submit_3d(1, &stream))
        .check(&p, "SUBMIT_3D");
    assert_resp(&r, resp::OK_NODATA, "SUBMIT_3D clear", &p);
    // Fenced read-back: when the response arrives the pixels must be in guest memory.
    let r = fe
        .request(&Command::transfer_from_host_3d(1, 2, &whole()).fenced(1))
        .check(&p, "TRANSFER_FROM_HOST_3D");
    assert_resp(&r, resp::OK_NODATA, "TRANSFER_FROM_HOST_3D", &p);
    assert_eq!(
        (r.hdr.flags & FLAG_FENCE, r.hdr.fence_id),
        (FLAG_FENCE, 1),
        "{}",
        r.describe()
    );
    let bytes = fe.memory().read(backing, (W * H * 4) as usize).unwrap();
    assert_cleared(&bytes);
}

#[test]
fn submit_3d_clear_then_scanout_shows_the_colour() {
    let Some((p, mut fe)) = start3d() else { return };
    let d = fe.display().unwrap();
    setup(&mut fe, &p, 2);
    fe.ok(&Command::submit_3d(1, &clear_stream(2, format::B8G8R8X8_UNORM, RGBA)).fenced(5))
        .check(&p, "SUBMIT_3D");
    let mark = d.mark();
    fe.ok(&Command::set_scanout(0, 2, Rect::new(0, 0, W, H)))
        .check(&p, "SET_SCANOUT");
    fe.ok(&Command::resource_flush(2, Rect::new(0, 0, W, H)))
        .check(&p, "RESOURCE_FLUSH");
    let (_, ev) = d
        .wait_event(mark, EVENT_TIMEOUT, "UPDATE or DMABUF_UPDATE", |e| {
            matches!(
                e,
                DisplayEvent::Update { .. } | DisplayEvent::DmabufUpdate { .. }
            )
        })
        .check(&p, "display after flush");
    match ev {
        DisplayEvent::Update { .. } => {
            std::thread::sleep(std::time::Duration::from_millis(100));
            let fb = d.framebuffer(0).expect("framebuffer");
            assert_eq!((fb.width, fb.height), (W, H));
            for y in 0..H {
                for x in 0..W {
                    assert_eq!(
                        fb.pixel(x, y).unwrap() & 0x00ff_ffff,
                        XRGB,
                        "display pixel ({x},{y})"
                    );
                }
            }
        }
        DisplayEvent::DmabufUpdate { scanout_id, .. } => {
            // A GPU host: the picture went as a dmabuf; its scanout message must precede.
            assert_eq!(scanout_id, 0);
            assert!(d
                .events_since(mark)
                .iter()
                .any(|e| matches!(e, DisplayEvent::DmabufScanout(s) if s.fd.is_some())));
        }
        _ => unreachable!(),
    }
}

#[test]
fn transfer_to_host_3d_round_trips_through_the_texture() {
    let Some((p, mut fe)) = start3d() else { return };
    let backing = setup(&mut fe, &p, 2);
    let size = (W * H * 4) as usize;
    let image: Vec<u8> = (0..size).map(|i| (i * 7 + 3) as u8).collect();
    fe.memory().write(backing, &image).unwrap();
    let r = fe
        .request(&Command::transfer_to_host_3d(1, 2, &whole()))
        .unwrap();
    assert_resp(&r, resp::OK_NODATA, "TRANSFER_TO_HOST_3D", &p);
    fe.memory().write(backing, &vec![0; size]).unwrap();
    let r = fe
        .request(&Command::transfer_from_host_3d(1, 2, &whole()).fenced(3))
        .unwrap();
    assert_resp(&r, resp::OK_NODATA, "TRANSFER_FROM_HOST_3D", &p);
    let back = fe.memory().read(backing, size).unwrap();
    // B8G8R8X8: the X byte need not survive.
    for (i, (a, b)) in image.chunks_exact(4).zip(back.chunks_exact(4)).enumerate() {
        assert_eq!(a[..3], b[..3], "pixel {i} after the round trip");
    }
    // A sub-box at an offset, with the backing's row stride: only that box comes back.
    fe.memory().write(backing, &vec![0; size]).unwrap();
    let sub = Transfer3d {
        bx: Box3d {
            x: 8,
            y: 4,
            z: 0,
            w: 16,
            h: 8,
            d: 1,
        },
        offset: u64::from(4 * W * 4 + 8 * 4),
        stride: W * 4,
        ..Transfer3d::default()
    };
    fe.ok(&Command::transfer_from_host_3d(1, 2, &sub))
        .check(&p, "sub-box read-back");
    let back = fe.memory().read(backing, size).unwrap();
    for y in 0..H {
        for x in 0..W {
            let o = ((y * W + x) * 4) as usize;
            let inside = (8..24).contains(&x) && (4..12).contains(&y);
            let want = if inside {
                &image[o..o + 3]
            } else {
                &[0u8, 0, 0][..]
            };
            assert_eq!(&back[o..o + 3], want, "({x},{y}) inside={inside}");
        }
    }
}

#[test]
fn fenced_submit_3d_completes_every_time() {
    // A fenced SUBMIT_3D must be answered once the renderer signals the fence, without the guest
    // sending anything else (a daemon that only looks at fences on the next queue event hangs).
    let Some((p, mut fe)) = start3d() else { return };
    setup(&mut fe, &p, 2);
    let stream = clear_stream(2, format::B8G8R8X8_UNORM, RGBA);
    for i in 1..=20u64 {
        let r = fe
            .request(&Command::submit_3d(1, &stream).fenced(i))
            .unwrap_or_else(|e| {
                panic!(
                    "fenced SUBMIT_3D #{i} (fence {i}): {e}\n{}",
                    p.stderr_tail()
                )
            });
        assert_resp(&r, resp::OK_NODATA, "fenced SUBMIT_3D", &p);
        assert_eq!((r.hdr.flags & FLAG_FENCE, r.hdr.fence_id), (FLAG_FENCE, i));
    }
    // An empty fenced submit too.
    let r = fe
        .request(&Command::submit_3d(1, &[]).fenced(1000))
        .check(&p, "empty fenced SUBMIT_3D");
    assert_eq!((r.ty(), r.hdr.fence_id), (resp::OK_NODATA, 1000));
}

#[test]
fn fences_on_rings_are_answered_after_completion_and_per_ring() {
    let Some((p, mut fe)) = start3d() else { return };
    assert_ne!(
        fe.features() & features::CONTEXT_INIT,
        0,
        "CONTEXT_INIT not offered: {:#x}",
        fe.offered_features()
    );
    // A context bound to the VIRGL2 capset (context_init low bits = capset id).
    fe.ok(&Command::ctx_create(1, capset::VIRGL2, "rings"))
        .check(&p, "CTX_CREATE with context_init");
    fe.ok(&Command::resource_create_3d(2, &target3d()))
        .check(&p, "create");
    fe.ok(&Command::ctx_attach_resource(1, 2))
        .check(&p, "attach");
    let backing = fe.memory().alloc(u64::from(W * H * 4), 4096).unwrap();
    fe.ok(&Command::attach_backing(
        2,
        &[MemEntry {
            addr: backing,
            length: W * H * 4,
        }],
    ))
    .check(&p, "backing");
    let stream = clear_stream(2, format::B8G8R8X8_UNORM, RGBA);
    // Ring 0 gets high fence ids, ring 1 low ones; each must come back with its own ring and id.
    let cmds = vec![
        Command::submit_3d(1, &stream).ctx(1).fenced(100).ring(0),
        Command::submit_3d(1, &[]).ctx(1).fenced(3).ring(1),
        Command::transfer_from_host_3d(1, 2, &whole())
            .fenced(101)
            .ring(0),
        Command::submit_3d(1, &[]).ctx(1).fenced(4).ring(1),
    ];
    let rs = fe.request_all(&cmds).check(&p, "fenced batch");
    for (c, r) in cmds.iter().zip(&rs) {
        assert_resp(r, resp::OK_NODATA, "fenced ring command", &p);
        assert_eq!(
            (
                r.hdr.flags & (FLAG_FENCE | FLAG_INFO_RING_IDX),
                r.hdr.fence_id,
                r.hdr.ring_idx,
                r.hdr.ctx_id
            ),
            (
                FLAG_FENCE | FLAG_INFO_RING_IDX,
                c.hdr.fence_id,
                c.hdr.ring_idx,
                1
            ),
            "{}",
            r.describe()
        );
    }
    assert_cleared(&fe.memory().read(backing, (W * H * 4) as usize).unwrap());
    let r = fe
        .request(&Command::submit_3d(1, &[]).fenced(1).ring(64))
        .unwrap();
    assert_resp(&r, resp::ERR_INVALID_PARAMETER, "ring_idx 64", &p);
}

#[test]
fn errors_3d_and_still_serving() {
    let Some((p, mut fe)) = start3d() else { return };
    setup(&mut fe, &p, 2);
    let mut failures = Vec::new();
    let mut case = |fe: &mut GpuFrontend, name: &str, c: Command, accepted: &[u32]| {
        match fe.request(&c) {
            Ok(r) if accepted.contains(&r.ty()) => {}
            Ok(r) => failures.push(format!("{name}: got {}", r.describe())),
            Err(e) => panic!("{name}: {e}\n{}", p.stderr_tail()),
        }
        let alive = fe
            .request(&Command::get_display_info())
            .check(&p, &format!("serving after {name}"));
        assert_eq!(alive.ty(), resp::OK_DISPLAY_INFO);
    };
    let bad_ctx = &[resp::ERR_INVALID_CONTEXT_ID];
    case(
        &mut fe,
        "submit to unknown ctx",
        Command::submit_3d(77, &[0; 8]),
        bad_ctx,
    );
    case(
        &mut fe,
        "destroy unknown ctx",
        Command::ctx_destroy(77),
        bad_ctx,
    );
    case(
        &mut fe,
        "attach to unknown ctx",
        Command::ctx_attach_resource(77, 2),
        bad_ctx,
    );
    case(
        &mut fe,
        "attach unknown resource",
        Command::ctx_attach_resource(1, 0xdead),
        &[resp::ERR_INVALID_RESOURCE_ID],
    );
    case(
        &mut fe,
        "ctx id 0",
        Command::ctx_create(0, 0, "zero"),
        &[resp::ERR_INVALID_CONTEXT_ID, resp::ERR_INVALID_PARAMETER],
    );
    case(
        &mut fe,
        "duplicate ctx",
        Command::ctx_create(1, 0, "dup"),
        &[
            resp::ERR_INVALID_CONTEXT_ID,
            resp::ERR_INVALID_PARAMETER,
            resp::ERR_UNSPEC,
        ],
    );
    case(
        &mut fe,
        "ctx with unknown capset",
        Command::ctx_create(9, 0xee, "cap"),
        &[resp::ERR_INVALID_PARAMETER, resp::ERR_UNSPEC],
    );
    case(
        &mut fe,
        "submit size beyond the chain",
        Command::submit_3d_raw(1, 4096, &[0; 16]),
        &[resp::ERR_INVALID_PARAMETER, resp::ERR_UNSPEC],
    );
    case(
        &mut fe,
        "submit size u32::MAX",
        Command::submit_3d_raw(1, u32::MAX, &[0; 16]),
        &[
            resp::ERR_INVALID_PARAMETER,
            resp::ERR_UNSPEC,
            resp::ERR_OUT_OF_MEMORY,
        ],
    );
    case(
        &mut fe,
        "submit size not a multiple of 4",
        Command::submit_3d_raw(1, 6, &[0; 8]),
        &[resp::ERR_INVALID_PARAMETER, resp::ERR_UNSPEC],
    );
    // Garbage words: virglrenderer rejects them; the device must answer (an error) and go on.
    let garbage: Vec<u8> = (0..256u32)
        .flat_map(|i| (i.wrapping_mul(0x9e37_79b9)).to_le_bytes())
        .collect();
    case(
        &mut fe,
        "garbage command stream",
        Command::submit_3d(1, &garbage),
        &[
            resp::ERR_INVALID_PARAMETER,
            resp::ERR_UNSPEC,
            resp::OK_NODATA,
        ],
    );
    case(
        &mut fe,
        "create_3d width 0",
        Command::resource_create_3d(
            3,
            &Resource3d {
                width: 0,
                ..target3d()
            },
        ),
        &[resp::ERR_INVALID_PARAMETER, resp::ERR_UNSPEC],
    );
    case(
        &mut fe,
        "create_3d bad target",
        Command::resource_create_3d(
            4,
            &Resource3d {
                target: 99,
                ..target3d()
            },
        ),
        &[resp::ERR_INVALID_PARAMETER, resp::ERR_UNSPEC],
    );
    case(
        &mut fe,
        "create_3d huge",
        Command::resource_create_3d(
            5,
            &Resource3d {
                width: 1 << 20,
                height: 1 << 20,
                ..target3d()
            },
        ),
        &[
            resp::ERR_INVALID_PARAMETER,
            resp::ERR_UNSPEC,
            resp::ERR_OUT_OF_MEMORY,
        ],
    );
    let mut outside = whole();
    outside.bx.x = W - 1;
    outside.bx.w = 2;
    case(
        &mut fe,
        "transfer_from_host_3d box outside",
        Command::transfer_from_host_3d(1, 2, &outside),
        &[resp::ERR_INVALID_PARAMETER, resp::ERR_UNSPEC],
    );
    let mut big = whole();
    big.offset = u64::MAX - 8;
    case(
        &mut fe,
        "transfer_from_host_3d offset overflow",
        Command::transfer_from_host_3d(1, 2, &big),
        &[resp::ERR_INVALID_PARAMETER, resp::ERR_UNSPEC],
    );
    case(
        &mut fe,
        "transfer_from_host_3d unknown resource",
        Command::transfer_from_host_3d(1, 0xdead, &whole()),
        &[resp::ERR_INVALID_RESOURCE_ID],
    );
    // Detach, destroy; the context's resources are released.
    case(
        &mut fe,
        "detach",
        Command::ctx_detach_resource(1, 2),
        &[resp::OK_NODATA],
    );
    case(
        &mut fe,
        "destroy",
        Command::ctx_destroy(1),
        &[resp::OK_NODATA],
    );
    case(
        &mut fe,
        "submit to destroyed ctx",
        Command::submit_3d(1, &[0; 8]),
        bad_ctx,
    );
    assert!(
        failures.is_empty(),
        "{} 3D error cases failed:\n{}\n{}",
        failures.len(),
        failures.join("\n"),
        p.stderr_tail()
    );
}

/// A zero-width 3D resource (a PIPE_BUFFER of width 0, which libvirglrenderer 0.10.4 accepts)
/// used as the cursor is refused; the device keeps serving (it used to panic the GPU thread on
/// a zero-length pixel row).
#[test]
fn cursor_from_a_zero_width_3d_resource_is_refused_and_the_device_serves_on() {
    let Some((p, mut fe)) = start3d() else { return };
    let buffer = Resource3d {
        target: 0, // PIPE_BUFFER
        format: format::R8G8B8A8_UNORM,
        bind: 0,
        width: 0,
        height: 1,
        depth: 1,
        array_size: 1,
        ..Resource3d::default()
    };
    fe.request(&Command::resource_create_3d(5, &buffer))
        .check(&p, "RESOURCE_CREATE_3D width 0");
    fe.request(&Command::update_cursor(0, 1, 1, 5, (0, 0)))
        .check(&p, "UPDATE_CURSOR on the zero-width resource");
    fe.expect(&Command::get_display_info(), resp::OK_DISPLAY_INFO)
        .check(&p, "GET_DISPLAY_INFO after the cursor update");
    assert!(
        !p.stderr().contains("panicked"),
        "the daemon panicked:\n{}",
        p.stderr_tail()
    );
}

/// The Venus capset ids the daemon offers, started with `extra` arguments.
fn venus_offered_with(extra: &[&str]) -> (bool, BackendProcess) {
    let mut cmd = ours("virglrenderer");
    for a in extra {
        cmd = cmd.arg(a);
    }
    let p = spawn(&cmd);
    let mut fe = connect(&p, FrontendOptions::default());
    let venus = capset_infos(&mut fe, &p)
        .iter()
        .any(|c| c.capset_id == capset::VENUS);
    (venus, p)
}

/// `--venus` and `--render-server`: on libvirglrenderer 1.x a missing render server leaves
/// Venus out with a log line naming the package (and `--venus on` refuses to start); on 0.10,
/// `--venus on` offers the wire-format-0 capset with a warning; `--venus off` never offers it.
#[test]
fn venus_options_and_a_missing_render_server() {
    if virgl_opted_out() {
        return;
    }
    let (venus, p) = venus_offered_with(&["--venus", "off"]);
    assert!(!venus, "--venus off offered Venus");
    let version = logged_library_version(&p);
    drop(p);
    if version >= (1, 0) {
        let (venus, p) =
            venus_offered_with(&["--render-server", "/nonexistent/virgl_render_server"]);
        assert!(!venus, "Venus offered without its render server");
        assert!(
            p.stderr().contains("/nonexistent/virgl_render_server")
                && p.stderr().contains("virgl-server"),
            "the log does not name the missing binary and its package:\n{}",
            p.stderr()
        );
        drop(p);
        let out = std::process::Command::new(&ours("virglrenderer").program)
            .args([
                "--renderer",
                "virglrenderer",
                "--venus",
                "on",
                "--render-server",
                "/nonexistent/virgl_render_server",
                "--socket-path",
                "/nonexistent/dir/gpu.sock",
            ])
            .env("EGL_PLATFORM", "surfaceless")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "--venus on started without a render server"
        );
        assert!(err.contains("virgl-server"), "no package named:\n{err}");
    } else {
        let (venus, p) = venus_offered_with(&["--venus", "on"]);
        assert!(venus, "--venus on did not offer Venus on {version:?}");
        assert!(
            p.stderr().contains("wire format version 0"),
            "no warning about wire format 0:\n{}",
            p.stderr()
        );
    }
}

/// Only what the frontend acked is served (QEMU's vhost-user-gpu-pci passes its guest VIRGL and
/// EDID only): a command of a feature that was not negotiated gets ERR_UNSPEC, the rest works.
#[test]
fn commands_of_features_not_negotiated_are_refused() {
    use vhost_user_gpu_tests::protocol::blob;
    if virgl_opted_out() {
        return;
    }
    // EDID only: no 3D, no blobs, no uuids, no context init.
    let (p, mut fe) = start_on(
        Renderer::Virgl,
        FrontendOptions {
            gpu_features: features::EDID,
            ..FrontendOptions::default()
        },
    );
    assert_eq!(fe.features() & features::ALL_GPU, features::EDID);
    let refused = [
        (Command::ctx_create(1, 0, "3d"), "CTX_CREATE without VIRGL"),
        (
            Command::resource_create_3d(3, &target3d()),
            "RESOURCE_CREATE_3D without VIRGL",
        ),
        (
            Command::resource_create_blob(4, blob::MEM_GUEST, 0, 0, 4096, &[]),
            "RESOURCE_CREATE_BLOB without RESOURCE_BLOB",
        ),
    ];
    for (cmd, what) in &refused {
        let r = fe.request(cmd).check(&p, what);
        assert_resp(&r, resp::ERR_UNSPEC, what, &p);
    }
    fe.ok(&Command::resource_create_2d(
        1,
        format::B8G8R8X8_UNORM,
        8,
        8,
    ))
    .check(&p, "RESOURCE_CREATE_2D");
    let r = fe
        .request(&Command::assign_uuid(1))
        .check(&p, "ASSIGN_UUID");
    assert_resp(
        &r,
        resp::ERR_UNSPEC,
        "ASSIGN_UUID without RESOURCE_UUID",
        &p,
    );
    let r = fe.request(&Command::get_edid(0)).check(&p, "GET_EDID");
    assert_resp(&r, resp::OK_EDID, "GET_EDID (negotiated)", &p);
    drop((p, fe));

    // VIRGL without CONTEXT_INIT: plain contexts, but neither a chosen capset nor fence rings.
    let (p, mut fe) = start_on(
        Renderer::Virgl,
        FrontendOptions {
            gpu_features: features::VIRGL | features::EDID,
            ..FrontendOptions::default()
        },
    );
    fe.ok(&Command::ctx_create(1, 0, "virgl"))
        .check(&p, "CTX_CREATE");
    let r = fe
        .request(&Command::ctx_create(2, capset::VIRGL2, "init"))
        .check(&p, "CTX_CREATE with context_init");
    assert_resp(
        &r,
        resp::ERR_UNSPEC,
        "context_init without CONTEXT_INIT",
        &p,
    );
    let r = fe
        .request(&Command::submit_3d(1, &[]).fenced(1).ring(0))
        .check(&p, "fenced SUBMIT_3D on a ring");
    assert_resp(
        &r,
        resp::ERR_UNSPEC,
        "INFO_RING_IDX without CONTEXT_INIT",
        &p,
    );
    fe.ok(&Command::submit_3d(1, &[]).fenced(2))
        .check(&p, "fenced SUBMIT_3D on the global timeline");
}

/// Every 3D transfer is checked before it reaches libvirglrenderer: box fields and strides
/// below 2^31 (0.10.4 reads a z of 2^31 as negative), the level within the resource's levels,
/// the box within that level's size and depth or layers, strides zero or at least a row (a
/// layer) of the box, and the bytes the transfer covers within the backing. Each bad one gets
/// ERR_INVALID_PARAMETER and the daemon serves on; good ones still work.
#[test]
fn three_d_transfers_are_checked_against_the_resource() {
    let Some((p, mut fe)) = start3d() else { return };
    let backing = setup(&mut fe, &p, 2); // 64x48 2D texture, one level
                                         // A 3D texture of 16x8x4 with levels 0..=2 (16x8x4, 8x4x2, 4x2x1).
    let volume = Resource3d {
        target: 3, // PIPE_TEXTURE_3D
        format: format::B8G8R8X8_UNORM,
        bind: BIND_SAMPLER_VIEW,
        width: 16,
        height: 8,
        depth: 4,
        array_size: 1,
        last_level: 2,
        ..Resource3d::default()
    };
    fe.ok(&Command::resource_create_3d(3, &volume))
        .check(&p, "RESOURCE_CREATE_3D volume");
    fe.ok(&Command::ctx_attach_resource(1, 3))
        .check(&p, "CTX_ATTACH_RESOURCE volume");
    fe.ok(&Command::attach_backing(
        3,
        &[MemEntry {
            addr: backing,
            length: W * H * 4,
        }],
    ))
    .check(&p, "RESOURCE_ATTACH_BACKING volume");
    let bx = |x, y, z, w, h, d| Box3d { x, y, z, w, h, d };
    let t = |b: Box3d, level: u32, stride: u32| Transfer3d {
        bx: b,
        level,
        stride,
        ..Transfer3d::default()
    };
    let at = |b: Box3d, stride: u32, layer_stride: u32, offset: u64| Transfer3d {
        bx: b,
        stride,
        layer_stride,
        offset,
        ..Transfer3d::default()
    };
    let backing_len = u64::from(W * H * 4);
    let bad: [(u32, Transfer3d, &str); 14] = [
        (
            2,
            at(bx(0, 0, 0, W, 2, 1), W * 4 - 1, 0, 0),
            "stride one byte short of a row",
        ),
        (
            3,
            at(bx(0, 0, 0, 16, 8, 2), 64, 64 * 8 - 1, 0),
            "layer stride one byte short of a layer",
        ),
        (
            2,
            at(bx(0, 0, 0, 1, 1, 1), 0, 0, backing_len - 3),
            "one pixel 3 bytes before the backing's end",
        ),
        (
            2,
            at(bx(0, 0, 0, W, H, 1), 0, 0, 4),
            "the whole target 4 bytes into the backing",
        ),
        (
            2,
            at(bx(0, 0, 0, 1, 1, 1), 0, 0, u64::MAX),
            "offset 2^64 - 1",
        ),
        (2, t(bx(0, 0, 0x8000_0000, 1, 1, 1), 0, 0), "z of 2^31"),
        (2, t(bx(0x8000_0000, 0, 0, 1, 1, 1), 0, 0), "x of 2^31"),
        (2, t(bx(0, 0, 0, W, H, 1), 0, 0x8000_0000), "stride of 2^31"),
        (
            2,
            t(bx(0, 0, 0, W + 1, H, 1), 0, 0),
            "box wider than the resource",
        ),
        (
            2,
            t(bx(0, 0, 1, 1, 1, 1), 0, 0),
            "second layer of a single-layer texture",
        ),
        (
            2,
            t(bx(0, 0, 0, 1, 1, 1), 1, 0),
            "level 1 of a single-level texture",
        ),
        (3, t(bx(0, 0, 0, 1, 1, 1), 3, 0), "level 3 of levels 0..=2"),
        (
            3,
            t(bx(0, 0, 0, 9, 1, 1), 1, 0),
            "9 wide at level 1 (8 wide)",
        ),
        (
            3,
            t(bx(0, 0, 1, 1, 1, 2), 1, 0),
            "depth 1..3 at level 1 (2 deep)",
        ),
    ];
    for (res, tr, what) in &bad {
        for cmd in [
            Command::transfer_to_host_3d(1, *res, tr),
            Command::transfer_from_host_3d(1, *res, tr),
        ] {
            let r = fe.request(&cmd).check(&p, what);
            assert_resp(&r, resp::ERR_INVALID_PARAMETER, what, &p);
        }
    }
    // In bounds: the whole 2D target, and the last level of the volume.
    fe.ok(&Command::transfer_from_host_3d(1, 2, &whole()))
        .check(&p, "TRANSFER_FROM_HOST_3D of the whole target");
    fe.ok(&Command::transfer_to_host_3d(
        1,
        3,
        &t(bx(0, 0, 0, 4, 2, 1), 2, 16),
    ))
    .check(&p, "TRANSFER_TO_HOST_3D of level 2");
    // In bounds to the last byte: one pixel that ends where the backing ends; strides of
    // exactly a row and a layer.
    fe.ok(&Command::transfer_to_host_3d(
        1,
        2,
        &at(bx(0, 0, 0, 1, 1, 1), 0, 0, backing_len - 4),
    ))
    .check(&p, "TRANSFER_TO_HOST_3D ending at the backing's end");
    fe.ok(&Command::transfer_from_host_3d(
        1,
        3,
        &at(bx(0, 0, 0, 16, 8, 2), 64, 64 * 8, 0),
    ))
    .check(
        &p,
        "TRANSFER_FROM_HOST_3D of two layers, strides of a row and a layer",
    );
}

/// `VIRGL_CCMD_PIPE_RESOURCE_CREATE` words (header, then target, format, bind, width, height,
/// depth, array size, last level, samples, flags, blob id).
fn pipe_resource_create(args: [u32; 11]) -> Vec<u8> {
    let mut words = vec![(11u32 << 16) | 48];
    words.extend(args);
    words.iter().flat_map(|w| w.to_le_bytes()).collect()
}

/// The fuzzer's find: one 48-byte command in a SUBMIT_3D stream made libvirglrenderer allocate
/// a 3.9 GB buffer. The device charges such resources before the stream reaches the library:
/// refused (out of memory) with the daemon's peak RSS unchanged, and a small one still goes.
#[test]
fn a_stream_that_makes_a_huge_resource_is_refused_before_the_library() {
    let Some((p, mut fe)) = start3d() else { return };
    setup(&mut fe, &p, 2);
    let huge = [
        0,
        0x3d,
        0x10,
        0xea01_0f01,
        0x0101_0100,
        0x0101_0100,
        0,
        0,
        0,
        6,
        1,
    ];
    for blob_id in 1..=4 {
        let mut args = huge;
        args[10] = blob_id;
        let r = fe
            .request(&Command::submit_3d(1, &pipe_resource_create(args)))
            .check(&p, "SUBMIT_3D of a 3.9 GB buffer");
        assert_eq!(r.ty(), resp::ERR_OUT_OF_MEMORY, "{}", r.describe());
    }
    let alive = fe
        .request(&Command::get_display_info())
        .check(&p, "serving after the refused streams");
    assert_eq!(alive.ty(), resp::OK_DISPLAY_INFO);
    let peak = p.memory().unwrap().hwm_kib;
    assert!(
        peak < 1 << 20,
        "the daemon's peak RSS is {peak} KiB: the library allocated the refused resource"
    );
    // A 4 KiB buffer is within the budget and goes to the library.
    let small = [0, 64, 0x10, 4096, 1, 1, 1, 0, 0, 0, 9];
    fe.ok(&Command::submit_3d(1, &pipe_resource_create(small)))
        .check(&p, "SUBMIT_3D of a 4 KiB buffer");
}
