//! Guest blobs (VIRTIO_GPU_F_RESOURCE_BLOB, BLOB_MEM_GUEST): creation, SET_SCANOUT_BLOB and
//! flushes that read the guest's memory directly, and the blob error paths.

mod common;

use common::*;
use vhost_user_gpu_tests::display::DisplayEvent;
use vhost_user_gpu_tests::protocol::{blob, features, format, resp, Command, MemEntry, Rect};
use vhost_user_gpu_tests::{BackendProcess, FrontendOptions, GpuFrontend};

const W: u32 = 48;
const H: u32 = 20;

fn start_blob(rd: Renderer) -> (BackendProcess, GpuFrontend) {
    let (p, fe) = start_on(rd, FrontendOptions::default());
    assert_ne!(
        fe.features() & features::RESOURCE_BLOB,
        0,
        "RESOURCE_BLOB not offered by {}: {:#x}",
        p.command_line(),
        fe.offered_features()
    );
    (p, fe)
}

/// A guest blob of W*H*4 bytes in two entries; returns the entries.
fn guest_blob(fe: &mut GpuFrontend, p: &BackendProcess, id: u32) -> Vec<MemEntry> {
    let size = W * H * 4;
    let half = size / 2;
    let a = fe.memory().alloc(u64::from(half), 4096).unwrap();
    let b = fe.memory().alloc(u64::from(size - half), 4096).unwrap();
    let entries = vec![
        MemEntry {
            addr: a,
            length: half,
        },
        MemEntry {
            addr: b,
            length: size - half,
        },
    ];
    let r = fe
        .request(&Command::resource_create_blob(
            id,
            blob::MEM_GUEST,
            blob::FLAG_USE_SHAREABLE,
            0,
            u64::from(size),
            &entries,
        ))
        .check(p, "RESOURCE_CREATE_BLOB");
    assert_resp(&r, resp::OK_NODATA, "RESOURCE_CREATE_BLOB guest", p);
    entries
}

fn write_linear(fe: &GpuFrontend, entries: &[MemEntry], f: impl Fn(u32, u32) -> u32) {
    let image: Vec<u8> = (0..W * H)
        .flat_map(|i| f(i % W, i / W).to_le_bytes())
        .collect();
    let mut off = 0usize;
    for e in entries {
        fe.memory()
            .write(e.addr, &image[off..off + e.length as usize])
            .unwrap();
        off += e.length as usize;
    }
}

fn scanout_blob(id: u32) -> Command {
    Command::set_scanout_blob(
        0,
        id,
        Rect::new(0, 0, W, H),
        W,
        H,
        format::B8G8R8X8_UNORM,
        [W * 4, 0, 0, 0],
        [0; 4],
    )
}

fn wait_frame(fe: &GpuFrontend, p: &BackendProcess, mark: usize, f: impl Fn(u32, u32) -> u32) {
    let d = fe.display().unwrap();
    let deadline = std::time::Instant::now() + EVENT_TIMEOUT;
    loop {
        d.wait_event(mark, EVENT_TIMEOUT, "UPDATE", |e| {
            matches!(e, DisplayEvent::Update { .. })
        })
        .check(p, "update after flush");
        let fb = d.framebuffer(0).expect("framebuffer");
        let ok = fb.width == W
            && fb.height == H
            && (0..H).all(|y| {
                (0..W).all(|x| fb.pixel(x, y).unwrap() & 0xff_ffff == f(x, y) & 0xff_ffff)
            });
        if ok {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the display never showed the blob's pixels; first row: {:06x?}",
            &fb.pixels[..W.min(8) as usize]
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn guest_blob_scanout_reads_guest_memory(rd: Renderer) {
    let (p, mut fe) = start_blob(rd);
    let entries = guest_blob(&mut fe, &p, 1);
    write_linear(&fe, &entries, pattern);
    let d = fe.display().unwrap();
    let mark = d.mark();
    fe.ok(&scanout_blob(1)).check(&p, "SET_SCANOUT_BLOB");
    fe.ok(&Command::resource_flush(1, Rect::new(0, 0, W, H)))
        .check(&p, "flush");
    wait_frame(&fe, &p, mark, pattern);
    // The guest changes its memory; a flush alone (no transfer) shows it.
    write_linear(&fe, &entries, |x, y| !pattern(x, y));
    let mark = d.mark();
    fe.ok(&Command::resource_flush(1, Rect::new(0, 0, W, H)))
        .check(&p, "second flush");
    wait_frame(&fe, &p, mark, |x, y| !pattern(x, y));
    fe.ok(&Command::set_scanout(0, 0, Rect::default()))
        .check(&p, "disable");
    fe.ok(&Command::resource_unref(1)).check(&p, "unref blob");
}

fn blob_error_paths(rd: Renderer) {
    let (p, mut fe) = start_blob(rd);
    let mem = fe.memory().clone();
    let a = mem.alloc(64 * 1024, 4096).unwrap();
    let e = |len: u32| {
        vec![MemEntry {
            addr: a,
            length: len,
        }]
    };
    let mut failures = Vec::new();
    let mut case = |fe: &mut GpuFrontend, name: &str, c: Command, accepted: &[u32]| {
        match fe.request(&c) {
            Ok(r) if accepted.contains(&r.ty()) => {}
            Ok(r) => failures.push(format!("{name}: got {}", r.describe())),
            Err(err) => panic!("{name}: {err}\n{}", p.stderr_tail()),
        }
        let alive = fe
            .request(&Command::get_display_info())
            .check(&p, &format!("serving after {name}"));
        assert_eq!(alive.ty(), resp::OK_DISPLAY_INFO);
    };
    let inval = &[resp::ERR_INVALID_PARAMETER];
    let inval_or_unspec = &[resp::ERR_INVALID_PARAMETER, resp::ERR_UNSPEC];
    case(
        &mut fe,
        "blob size 0",
        Command::resource_create_blob(2, blob::MEM_GUEST, 0, 0, 0, &e(4096)),
        inval,
    );
    case(
        &mut fe,
        "blob larger than its entries",
        Command::resource_create_blob(3, blob::MEM_GUEST, 0, 0, 8192, &e(4096)),
        inval,
    );
    case(
        &mut fe,
        "blob_mem 0",
        Command::resource_create_blob(4, 0, 0, 0, 4096, &e(4096)),
        inval,
    );
    case(
        &mut fe,
        "blob_mem 99",
        Command::resource_create_blob(5, 99, 0, 0, 4096, &e(4096)),
        inval,
    );
    case(
        &mut fe,
        "blob id 0",
        Command::resource_create_blob(0, blob::MEM_GUEST, 0, 0, 4096, &e(4096)),
        &[resp::ERR_INVALID_RESOURCE_ID],
    );
    case(
        &mut fe,
        "blob entry outside memory",
        Command::resource_create_blob(
            6,
            blob::MEM_GUEST,
            0,
            0,
            4096,
            &[MemEntry {
                addr: mem.size(),
                length: 4096,
            }],
        ),
        &[resp::ERR_INVALID_PARAMETER, resp::ERR_UNSPEC],
    );
    case(
        &mut fe,
        "blob size overflow",
        Command::resource_create_blob(7, blob::MEM_GUEST, 0, 0, u64::MAX, &e(4096)),
        &[resp::ERR_INVALID_PARAMETER, resp::ERR_OUT_OF_MEMORY],
    );
    if fe.features() & features::VIRGL == 0 {
        case(
            &mut fe,
            "HOST3D blob without VIRGL",
            Command::resource_create_blob(
                8,
                blob::MEM_HOST3D,
                blob::FLAG_USE_MAPPABLE,
                1,
                4096,
                &[],
            ),
            inval_or_unspec,
        );
    }
    // A valid blob, then bad scanouts of it.
    let good = vec![MemEntry {
        addr: a,
        length: W * H * 4,
    }];
    case(
        &mut fe,
        "valid blob",
        Command::resource_create_blob(9, blob::MEM_GUEST, 0, 0, u64::from(W * H * 4), &good),
        &[resp::OK_NODATA],
    );
    let sb = |scanout: u32, w: u32, h: u32, fmt: u32, stride: u32, offset: u32| {
        Command::set_scanout_blob(
            scanout,
            9,
            Rect::new(0, 0, w, h),
            w,
            h,
            fmt,
            [stride, 0, 0, 0],
            [offset, 0, 0, 0],
        )
    };
    case(
        &mut fe,
        "scanout blob stride too small",
        sb(0, W, H, format::B8G8R8X8_UNORM, W * 4 - 4, 0),
        inval,
    );
    case(
        &mut fe,
        "scanout blob larger than the blob",
        sb(0, W, H + 1, format::B8G8R8X8_UNORM, W * 4, 0),
        inval,
    );
    case(
        &mut fe,
        "scanout blob offset beyond",
        sb(0, W, H, format::B8G8R8X8_UNORM, W * 4, 4096),
        inval,
    );
    case(
        &mut fe,
        "scanout blob bad format",
        sb(0, W, H, 999, W * 4, 0),
        inval,
    );
    case(
        &mut fe,
        "scanout blob bad scanout",
        sb(16, W, H, format::B8G8R8X8_UNORM, W * 4, 0),
        &[resp::ERR_INVALID_SCANOUT_ID],
    );
    case(
        &mut fe,
        "scanout blob stride overflow",
        sb(0, W, H, format::B8G8R8X8_UNORM, u32::MAX, 0),
        inval,
    );
    case(
        &mut fe,
        "map a guest blob",
        Command::resource_map_blob(9, 0),
        inval_or_unspec,
    );
    case(
        &mut fe,
        "unmap a blob never mapped",
        Command::resource_unmap_blob(9),
        inval_or_unspec,
    );
    case(
        &mut fe,
        "map unknown resource",
        Command::resource_map_blob(0xdead, 0),
        &[resp::ERR_INVALID_RESOURCE_ID],
    );
    assert!(
        failures.is_empty(),
        "{} blob cases failed:\n{}\n{}",
        failures.len(),
        failures.join("\n"),
        p.stderr_tail()
    );
}

per_renderer!(guest_blob_scanout_reads_guest_memory, blob_error_paths);
