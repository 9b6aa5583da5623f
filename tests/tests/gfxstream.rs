//! End to end through `--renderer gfxstream`: the gfxstream capsets, a context created with a
//! gfxstream capset (CONTEXT_INIT), 2D and 3D resources, a scanout whose pixels reach the display
//! peer, and fences answered only after completion; host blobs mapped into the host-visible
//! region (`--hostmem`, vhost-user SHMEM_MAP/UNMAP), written through the frontend's mapping and
//! found again in a second mapping.
//!
//! These need libgfxstream_backend. Where pkg-config did not find it when this crate was built,
//! every test here is compiled as an ignored test that says so (reported as skipped; forced to
//! run, it fails). Where it was found, the daemon must have been built with
//! `cargo build -p vhost-user-gpu --features gfxstream` (and `LD_LIBRARY_PATH` must reach the
//! library when it is not in a system directory): a daemon without it fails these tests.

mod common;

/// A test that needs libgfxstream_backend (see the module docs).
macro_rules! gfxstream_test {
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
mod found {
    pub use super::common::*;
    pub use vhost_user_gpu_tests::backend_req::ShmemEvent;
    pub use vhost_user_gpu_tests::display::DisplayEvent;
    pub use vhost_user_gpu_tests::protocol::{
        blob, features, format, resp, Command, MemEntry, Rect, CTRL_HDR_SIZE, FLAG_FENCE,
        FLAG_INFO_RING_IDX,
    };
    pub use vhost_user_gpu_tests::{BackendProcess, FrontendOptions, GpuFrontend};

    /// `VIRTGPU_CAPSET_GFXSTREAM_VULKAN`, `_GLES`, `_COMPOSER` and their sizes.
    pub const CAPSETS: [(u32, u32); 3] = [(3, 104), (8, 16), (9, 16)];
    /// The GLES capset id, for CONTEXT_INIT.
    pub const GLES: u32 = 8;

    /// Our daemon with `--renderer gfxstream`, connected; 3D and CONTEXT_INIT offered.
    pub fn start() -> (BackendProcess, GpuFrontend) {
        start_with(&[])
    }

    /// [`start`] with more daemon arguments.
    pub fn start_with(args: &[&str]) -> (BackendProcess, GpuFrontend) {
        let mut cmd = ours("gfxstream").env("EGL_PLATFORM", "surfaceless");
        for a in args {
            cmd = cmd.arg(a);
        }
        let p = spawn(&cmd);
        let fe = connect(&p, FrontendOptions::default());
        let want = features::VIRGL | features::CONTEXT_INIT;
        assert_eq!(
            fe.features() & want,
            want,
            "VIRGL and CONTEXT_INIT not offered by {}: {:#x}",
            p.command_line(),
            fe.offered_features()
        );
        (p, fe)
    }
}
#[cfg(gfxstream_found)]
use found::*;

gfxstream_test! {
    /// GET_CAPSET_INFO lists exactly the gfxstream capsets; GET_CAPSET returns their data, and a
    /// context can be created on each of them (and not on a virgl capset).
    fn capsets_and_contexts() {
        let (p, mut fe) = start();
        let n = fe.config().unwrap().num_capsets;
        assert_eq!(n, 3, "num_capsets");
        for (i, (id, size)) in CAPSETS.iter().enumerate() {
            let r = fe
                .expect(&Command::get_capset_info(i as u32), resp::OK_CAPSET_INFO)
                .check(&p, "GET_CAPSET_INFO");
            let info = r.capset_info().unwrap();
            assert_eq!((info.capset_id, info.max_size), (*id, *size), "{info:?}");
            let c = fe
                .expect(
                    &Command::get_capset(*id, info.max_version, *size),
                    resp::OK_CAPSET,
                )
                .check(&p, "GET_CAPSET");
            assert_eq!(c.used_len, CTRL_HDR_SIZE as u32 + size);
            // protocolVersion 1, ringSize 12288.
            let data = c.payload();
            assert_eq!(&data[..8], &[1, 0, 0, 0, 0, 0x30, 0, 0], "capset {id}");
            let ctx = i as u32 + 1;
            fe.ok(&Command::ctx_create(ctx, *id, "e2e"))
                .check(&p, "CTX_CREATE with a gfxstream capset");
        }
        let r = fe.request(&Command::ctx_create(7, 1, "virgl")).unwrap();
        assert_resp(&r, resp::ERR_INVALID_PARAMETER, "CTX_CREATE on the virgl capset", &p);
        fe.ok(&Command::ctx_destroy(2)).check(&p, "CTX_DESTROY");
    }
}

gfxstream_test! {
    /// A 2D resource held by a gfxstream colour buffer: transfer, scanout, flush; the display
    /// peer gets exactly the transferred pixels, also after a partial transfer.
    fn scanout_reaches_the_display() {
        let (p, mut fe) = start();
        let d = fe.display().unwrap();
        let (w, h) = (64u32, 32u32);
        let r = create_2d(&mut fe, &p, 2, w, h);
        paint(&fe, &p, &r, pattern);
        fe.ok(&Command::transfer_to_host_2d(2, Rect::new(0, 0, w, h), 0))
            .check(&p, "TRANSFER_TO_HOST_2D");
        fe.ok(&Command::set_scanout(0, 2, Rect::new(0, 0, w, h)))
            .check(&p, "SET_SCANOUT");
        let mark = d.mark();
        fe.ok(&Command::resource_flush(2, Rect::new(0, 0, w, h)))
            .check(&p, "RESOURCE_FLUSH");
        d.wait_event(mark, EVENT_TIMEOUT, "UPDATE", |e| {
            matches!(e, DisplayEvent::Update { .. })
        })
        .check(&p, "display after flush");
        std::thread::sleep(std::time::Duration::from_millis(100));
        let fb = d.framebuffer(0).expect("framebuffer");
        assert_eq!((fb.width, fb.height), (w, h));
        for y in 0..h {
            for x in 0..w {
                assert_eq!(
                    fb.pixel(x, y).unwrap() & 0x00ff_ffff,
                    pattern(x, y) & 0x00ff_ffff,
                    "display pixel ({x},{y})"
                );
            }
        }

        // A sub-rectangle at its linear offset: only it changes on the display.
        paint(&fe, &p, &r, |_, _| 0x0012_3456);
        let rect = Rect::new(8, 4, 16, 8);
        let offset = u64::from(rect.y * w * 4 + rect.x * 4);
        fe.ok(&Command::transfer_to_host_2d(2, rect, offset))
            .check(&p, "partial TRANSFER_TO_HOST_2D");
        let mark = d.mark();
        fe.ok(&Command::resource_flush(2, Rect::new(0, 0, w, h)))
            .check(&p, "RESOURCE_FLUSH");
        d.wait_event(mark, EVENT_TIMEOUT, "UPDATE", |e| {
            matches!(e, DisplayEvent::Update { .. })
        })
        .check(&p, "display after the second flush");
        std::thread::sleep(std::time::Duration::from_millis(100));
        let fb = d.framebuffer(0).expect("framebuffer");
        for y in 0..h {
            for x in 0..w {
                let inside = (8..24).contains(&x) && (4..12).contains(&y);
                let want = if inside { 0x0012_3456 } else { pattern(x, y) & 0x00ff_ffff };
                assert_eq!(fb.pixel(x, y).unwrap() & 0x00ff_ffff, want, "pixel ({x},{y})");
            }
        }
    }
}

gfxstream_test! {
    /// Fenced commands on the global timeline and on a context ring are answered with their
    /// fence; SUBMIT_3D is checked (a too-short command is refused) and the daemon keeps serving.
    fn fences_and_submissions() {
        let (p, mut fe) = start();
        fe.ok(&Command::ctx_create(1, GLES, "fences"))
            .check(&p, "CTX_CREATE");
        let mut placeholder = 0xf002u32.to_le_bytes().to_vec();
        placeholder.resize(12, 0);
        let cmds = vec![
            Command::submit_3d(1, &placeholder).ctx(1).fenced(10).ring(0),
            Command::submit_3d(1, &placeholder).fenced(3),
            Command::submit_3d(1, &placeholder).ctx(1).fenced(11).ring(1),
        ];
        let rs = fe.request_all(&cmds).check(&p, "fenced batch");
        for (c, r) in cmds.iter().zip(&rs) {
            assert_resp(r, resp::OK_NODATA, "fenced SUBMIT_3D", &p);
            let flags = c.hdr.flags & (FLAG_FENCE | FLAG_INFO_RING_IDX);
            assert_eq!(
                (r.hdr.flags & (FLAG_FENCE | FLAG_INFO_RING_IDX), r.hdr.fence_id),
                (flags, c.hdr.fence_id),
                "{}",
                r.describe()
            );
        }
        let r = fe
            .request(&Command::submit_3d(1, &0xf002u32.to_le_bytes()))
            .unwrap();
        assert_resp(&r, resp::ERR_INVALID_PARAMETER, "short SUBMIT_3D", &p);
        let alive = fe
            .request(&Command::get_display_info())
            .check(&p, "serving");
        assert_eq!(alive.ty(), resp::OK_DISPLAY_INFO);
    }
}

gfxstream_test! {
    /// A 3D resource backed by guest memory: TRANSFER_TO_HOST_3D then TRANSFER_FROM_HOST_3D
    /// into another backing returns the same bytes.
    fn resource_3d_round_trip() {
        use vhost_user_gpu_tests::protocol::{Box3d, Resource3d, Transfer3d};
        let (p, mut fe) = start();
        fe.ok(&Command::ctx_create(1, GLES, "3d")).check(&p, "CTX_CREATE");
        let (w, h) = (32u32, 16u32);
        let size = w * h * 4;
        let res = Resource3d {
            target: 2,
            format: format::R8G8B8A8_UNORM,
            bind: (1 << 1) | (1 << 3),
            width: w,
            height: h,
            depth: 1,
            array_size: 1,
            ..Resource3d::default()
        };
        fe.ok(&Command::resource_create_3d(5, &res)).check(&p, "RESOURCE_CREATE_3D");
        fe.ok(&Command::ctx_attach_resource(1, 5)).check(&p, "CTX_ATTACH_RESOURCE");
        let backing = fe.memory().alloc(u64::from(size), 4096).unwrap();
        let bytes: Vec<u8> = (0..size).map(|i| (i * 7 + 1) as u8).collect();
        fe.memory().write(backing, &bytes).unwrap();
        fe.ok(&Command::attach_backing(5, &[MemEntry { addr: backing, length: size }]))
            .check(&p, "RESOURCE_ATTACH_BACKING");
        let t = Transfer3d {
            bx: Box3d { x: 0, y: 0, z: 0, w, h, d: 1 },
            stride: w * 4,
            ..Transfer3d::default()
        };
        fe.ok(&Command::transfer_to_host_3d(1, 5, &t)).check(&p, "TRANSFER_TO_HOST_3D");
        fe.memory().write(backing, &vec![0u8; size as usize]).unwrap();
        fe.ok(&Command::transfer_from_host_3d(1, 5, &t).fenced(1))
            .check(&p, "TRANSFER_FROM_HOST_3D");
        let back = fe.memory().read(backing, size as usize).unwrap();
        assert!(back == bytes, "3D round trip differs");
    }
}

gfxstream_test! {
    /// Host blobs through the host-visible region (`--hostmem 64M`, a frontend that acked
    /// SHMEM and BACKEND_REQ): a mappable HOST3D ring blob (blob_id 0) of a GLES context is
    /// mapped at a page-aligned offset (OK_MAP_INFO with gfxstream's CACHED type, a writable
    /// SHMEM_MAP of exactly that range, the fd mapped by the frontend), written by the "guest"
    /// through the frontend's mapping and read back by the renderer (SET_SCANOUT_BLOB +
    /// RESOURCE_FLUSH: the display peer shows exactly those bytes, read through the renderer's
    /// own handle of the blob; gfxstream has no transfers for blobs), unmapped (SHMEM_UNMAP of
    /// that range), and mapped again at another offset, where the bytes are still there. Bad offsets, overlaps and non-mappable blobs are
    /// refused with ERR_INVALID_PARAMETER, nothing reaches the frontend, and the daemon serves on.
    fn host_blob_is_mapped_written_unmapped_and_mapped_again() {
        use std::time::Duration;
        const REGION: u64 = 64 << 20;
        const SHMID: u8 = 1;
        const BLOB: u64 = 64 << 10;
        const AT: u64 = 2 << 20;
        const AGAIN: u64 = 8 << 20;
        const WAIT: Duration = Duration::from_secs(5);

        let (p, mut fe) = start_with(&["--hostmem", "64M"]);
        assert_eq!(fe.shmem_regions(), &[(SHMID, REGION)], "region");
        assert_ne!(fe.features() & features::RESOURCE_BLOB, 0, "RESOURCE_BLOB not offered");
        fe.ok(&Command::ctx_create(1, GLES, "blob")).check(&p, "CTX_CREATE");
        let host_blob = |id: u32, flags: u32, size: u64| {
            Command::resource_create_blob(id, blob::MEM_HOST3D, flags, 0, size, &[]).ctx(1)
        };
        let mappable = blob::FLAG_USE_MAPPABLE;
        fe.ok(&host_blob(10, mappable, BLOB)).check(&p, "RESOURCE_CREATE_BLOB (mappable)");
        fe.ok(&Command::ctx_attach_resource(1, 10)).check(&p, "CTX_ATTACH_RESOURCE");
        fe.ok(&host_blob(11, mappable, 4096)).check(&p, "RESOURCE_CREATE_BLOB (second)");
        fe.ok(&host_blob(12, 0, 4096)).check(&p, "RESOURCE_CREATE_BLOB (not mappable)");

        let refuse = |fe: &mut GpuFrontend, c: &Command, ty: u32, what: &str| {
            let r = fe.request(c).check(&p, what);
            assert_resp(&r, ty, what, &p);
            let alive = fe.request(&Command::get_display_info()).check(&p, what);
            assert_eq!(alive.ty(), resp::OK_DISPLAY_INFO, "serving after {what}");
        };
        let inval = resp::ERR_INVALID_PARAMETER;
        let map = Command::resource_map_blob;
        for (what, c) in [
            ("unaligned offset", map(10, AT + 0x800)),
            ("offset past the region", map(10, REGION)),
            ("straddling the end of the region", map(10, REGION - 0x1000)),
            ("overflowing offset", map(10, u64::MAX - 0xfff)),
            ("a blob created without MAPPABLE", map(12, 0)),
            ("unmap before map", Command::resource_unmap_blob(10)),
        ] {
            refuse(&mut fe, &c, inval, what);
        }
        refuse(&mut fe, &map(0xdead, 0), resp::ERR_INVALID_RESOURCE_ID, "unknown resource");
        assert!(
            fe.backend_req().unwrap().state().events.is_empty(),
            "refused maps reached the frontend: {:?}",
            fe.backend_req().unwrap().state().events
        );

        let map_ok = |fe: &mut GpuFrontend, id: u32, at: u64, len: u64| {
            let mark = fe.backend_req().unwrap().mark();
            let r = fe.request(&map(id, at)).check(&p, "RESOURCE_MAP_BLOB");
            assert_resp(&r, resp::OK_MAP_INFO, "RESOURCE_MAP_BLOB", &p);
            let info = u32::from_le_bytes(r.payload()[0..4].try_into().unwrap());
            // STREAM_RENDERER_MAP_CACHE_CACHED = VIRTIO_GPU_MAP_CACHE_CACHED.
            assert_eq!(info, 1, "map_info of blob {id}");
            let ev = fe
                .backend_req()
                .unwrap()
                .wait_event(mark, WAIT, |e| matches!(e, ShmemEvent::Map { .. }))
                .check(&p, "SHMEM_MAP");
            assert_eq!(
                ev,
                ShmemEvent::Map {
                    shmid: SHMID,
                    fd_offset: 0,
                    shm_offset: at,
                    len,
                    writable: true,
                    mapped: true,
                },
                "{:?}",
                fe.backend_req().unwrap().state().errors
            );
        };
        map_ok(&mut fe, 10, AT, BLOB);

        // Overlapping the live mapping (either end) and mapping it twice are refused.
        for (what, c) in [
            ("overlapping the start", map(11, AT)),
            ("overlapping the end", map(11, AT + BLOB - 0x1000)),
            ("inside", map(11, AT + 0x4000)),
            ("mapped twice", map(10, AT + BLOB)),
        ] {
            let mark = fe.backend_req().unwrap().mark();
            refuse(&mut fe, &c, inval, what);
            assert_eq!(fe.backend_req().unwrap().mark(), mark, "{what} reached the frontend");
        }
        // Right before and right after it are fine.
        map_ok(&mut fe, 11, AT + BLOB, 4096);
        fe.ok(&Command::resource_unmap_blob(11)).check(&p, "unmap 11");
        map_ok(&mut fe, 11, AT - 4096, 4096);

        // The guest writes through the region; it reads back what it wrote.
        let data: Vec<u8> = (0..BLOB as u32).map(|i| (i.wrapping_mul(31) ^ (i >> 8)) as u8).collect();
        let ch = fe.backend_req().unwrap();
        ch.write(SHMID, AT, &data).check(&p, "write through the mapping");
        assert!(ch.read(SHMID, AT, data.len()).check(&p, "read") == data);

        // The renderer reads the same memory through its own handle: a scanout of an image in
        // the blob shows exactly the bytes the guest wrote through the region.
        const W: u32 = 32;
        const H: u32 = 16;
        const IMAGE: u32 = 0x4000;
        let want = |x: u32, y: u32| {
            let at = (IMAGE + (y * W + x) * 4) as usize;
            u32::from_le_bytes(data[at..at + 4].try_into().unwrap()) & 0x00ff_ffff
        };
        let d = fe.display().unwrap();
        let mark = d.mark();
        fe.ok(&Command::set_scanout_blob(
            0,
            10,
            Rect::new(0, 0, W, H),
            W,
            H,
            format::B8G8R8X8_UNORM,
            [W * 4, 0, 0, 0],
            [IMAGE, 0, 0, 0],
        ))
        .check(&p, "SET_SCANOUT_BLOB of the host blob");
        fe.ok(&Command::resource_flush(10, Rect::new(0, 0, W, H)))
            .check(&p, "RESOURCE_FLUSH of the host blob");
        d.wait_event(mark, WAIT, "UPDATE", |e| {
            matches!(e, DisplayEvent::Update { .. })
        })
        .check(&p, "display update of the host blob scanout");
        let fb = d.framebuffer(0).expect("framebuffer");
        assert_eq!((fb.width, fb.height), (W, H));
        for y in 0..H {
            for x in 0..W {
                assert_eq!(fb.pixel(x, y).unwrap() & 0x00ff_ffff, want(x, y), "pixel ({x},{y})");
            }
        }
        fe.ok(&Command::set_scanout_blob(0, 0, Rect::new(0, 0, 0, 0), 0, 0, 0, [0; 4], [0; 4]))
            .check(&p, "disable the scanout");

        // Unmapped: exactly that range goes, and the frontend's region no longer has it.
        let mark = fe.backend_req().unwrap().mark();
        fe.ok(&Command::resource_unmap_blob(10)).check(&p, "RESOURCE_UNMAP_BLOB");
        let ev = fe
            .backend_req()
            .unwrap()
            .wait_event(mark, WAIT, |e| matches!(e, ShmemEvent::Unmap { .. }))
            .check(&p, "SHMEM_UNMAP");
        assert_eq!(
            ev,
            ShmemEvent::Unmap { shmid: SHMID, shm_offset: AT, len: BLOB, unmapped: true }
        );
        assert!(fe.backend_req().unwrap().read(SHMID, AT, 4).is_err(), "still mapped");
        refuse(&mut fe, &Command::resource_unmap_blob(10), inval, "unmap twice");

        // Mapped again elsewhere: a fresh SHMEM_MAP of the renderer's memory with the guest's bytes.
        map_ok(&mut fe, 10, AGAIN, BLOB);
        let back = fe
            .backend_req()
            .unwrap()
            .read(SHMID, AGAIN, data.len())
            .check(&p, "read the second mapping");
        assert!(back == data, "the blob did not keep the bytes written through the first mapping");

        // Unref of a mapped blob unmaps it first.
        let mark = fe.backend_req().unwrap().mark();
        fe.ok(&Command::resource_unref(10)).check(&p, "unref a mapped blob");
        let ev = fe
            .backend_req()
            .unwrap()
            .wait_event(mark, WAIT, |e| matches!(e, ShmemEvent::Unmap { .. }))
            .check(&p, "SHMEM_UNMAP on unref");
        assert_eq!(
            ev,
            ShmemEvent::Unmap { shmid: SHMID, shm_offset: AGAIN, len: BLOB, unmapped: true }
        );
        assert!(
            fe.backend_req().unwrap().state().errors.is_empty(),
            "{:?}",
            fe.backend_req().unwrap().state().errors
        );
        let alive = fe.request(&Command::get_display_info()).check(&p, "serving");
        assert_eq!(alive.ty(), resp::OK_DISPLAY_INFO);
    }
}
