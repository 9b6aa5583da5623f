//! Host blobs end to end: the host-visible shared memory region (`--hostmem`, vhost-user SHMEM),
//! RESOURCE_MAP_BLOB / RESOURCE_UNMAP_BLOB over SHMEM_MAP / SHMEM_UNMAP, against the real daemon.
//!
//! The harness frontend answers GET_SHMEM_CONFIG by reserving the region in its own address
//! space and maps every fd the daemon sends at the requested offset (`backend_req.rs`), so the
//! test can write and read the blob's memory the way a guest would through the region.
//!
//! Which host blobs can be mapped (measured on Debian 12's libvirglrenderer 0.10.4, Mesa 25
//! llvmpipe/lavapipe):
//! * Venus contexts (CONTEXT_INIT capset 4): a HOST3D blob with blob_id 0 and exactly
//!   BLOB_FLAG_USE_MAPPABLE is shared memory of the context (what Mesa's Venus driver uses for
//!   its command and reply streams); it exports as a SHM fd and maps. The test writes a Venus
//!   command (vkEnumerateInstanceVersion) into the blob through the mapping, has the renderer
//!   execute it from there (vkExecuteCommandStreamsMESA) and reads the renderer's reply, which it
//!   wrote into the same blob, back through the mapping.
//! * Venus `VkDeviceMemory`: the test creates an instance, a device and a host-visible
//!   allocation over the Venus protocol (replies read through a mapped shared-memory blob),
//!   makes the memory a HOST3D blob (blob_id = its object id) and maps it: lavapipe's memory
//!   exports as an opaque fd (a memfd), which the frontend maps. The guest draws into it through
//!   the region and SET_SCANOUT_BLOB + RESOURCE_FLUSH show exactly those pixels on the display
//!   peer (read back through a fresh export of the renderer's memory).
//! * virgl (GL) contexts: a HOST3D blob of a buffer made with VIRGL_CCMD_PIPE_RESOURCE_CREATE is
//!   created and mappable inside the library, but 0.10.4 can export only GBM buffers of a
//!   minigbm build as an fd (`vrend_pipe_resource_export_fd`); Debian's build is not one, so
//!   MAP_BLOB answers ERR_UNSPEC there, and the test checks that this is all that happens.
//!
//! Run: `cargo nextest run -p vhost-user-gpu-tests --test hostmem`.

mod common;

use std::time::Duration;

use common::*;
use vhost::vhost_user::VhostUserProtocolFeatures;
use vhost_user_gpu_tests::backend_req::ShmemEvent;
use vhost_user_gpu_tests::display::DisplayEvent;
use vhost_user_gpu_tests::protocol::{
    blob, capset, features, format, resp, Command, MemEntry, Rect,
};
use vhost_user_gpu_tests::{BackendCommand, BackendProcess, FrontendOptions, GpuFrontend};

/// The region size the daemon is started with.
const REGION: u64 = 64 << 20;
/// virtio-gpu's host-visible region id.
const SHMID: u8 = 1;
const WAIT: Duration = Duration::from_secs(5);

fn daemon(renderer: &str, hostmem: Option<&str>) -> (BackendProcess, GpuFrontend) {
    let mut cmd: BackendCommand = ours(renderer);
    if let Some(size) = hostmem {
        cmd = cmd.arg("--hostmem").arg(size);
    }
    let p = spawn(&cmd);
    let fe = connect(&p, FrontendOptions::default());
    (p, fe)
}

/// The daemon with a 64 MiB region and Venus asked for by name (`--venus on`: also on
/// libvirglrenderer 0.10, whose wire format 0 the protocol these tests speak accepts).
fn venus_daemon() -> BackendCommand {
    ours("virglrenderer")
        .arg("--hostmem")
        .arg("64M")
        .arg("--venus")
        .arg("on")
}

fn alive(fe: &mut GpuFrontend, p: &BackendProcess, after: &str) {
    let r = fe
        .request(&Command::get_display_info())
        .check(p, &format!("serving after {after}"));
    assert_eq!(r.ty(), resp::OK_DISPLAY_INFO, "after {after}");
}

fn expect(fe: &mut GpuFrontend, p: &BackendProcess, c: &Command, ty: u32, what: &str) -> Vec<u8> {
    let r = fe.request(c).check(p, what);
    assert_eq!(
        r.ty(),
        ty,
        "{what}: got {}\n{}",
        r.describe(),
        p.stderr_tail()
    );
    r.payload().to_vec()
}

fn map(id: u32, offset: u64) -> Command {
    Command::resource_map_blob(id, offset)
}

#[test]
fn no_region_without_hostmem() {
    let (p, mut fe) = daemon("software", None);
    let offered = fe.offered_protocol_features();
    assert!(
        !offered.contains(VhostUserProtocolFeatures::SHMEM),
        "SHMEM offered without --hostmem: {offered:?}"
    );
    assert!(fe.shmem_regions().is_empty());
    assert!(fe.backend_req().is_none());
    alive(&mut fe, &p, "connect");
}

#[test]
fn hostmem_offers_the_region_at_shmid_1() {
    let (p, mut fe) = daemon("software", Some("64M"));
    let offered = fe.offered_protocol_features();
    for f in [
        VhostUserProtocolFeatures::SHMEM,
        VhostUserProtocolFeatures::BACKEND_REQ,
        VhostUserProtocolFeatures::BACKEND_SEND_FD,
        VhostUserProtocolFeatures::REPLY_ACK,
    ] {
        assert!(offered.contains(f), "{f:?} not offered: {offered:?}");
    }
    assert_eq!(fe.shmem_regions(), &[(SHMID, REGION)]);
    // The software renderer has no host blobs; guest blobs are guest memory and never mapped.
    let a = fe.memory().alloc(4096, 4096).unwrap();
    let entries = [MemEntry {
        addr: a,
        length: 4096,
    }];
    expect(
        &mut fe,
        &p,
        &Command::resource_create_blob(
            1,
            blob::MEM_GUEST,
            blob::FLAG_USE_MAPPABLE,
            0,
            4096,
            &entries,
        ),
        resp::OK_NODATA,
        "guest blob",
    );
    expect(
        &mut fe,
        &p,
        &map(1, 0),
        resp::ERR_INVALID_PARAMETER,
        "map a guest blob",
    );
    let r = fe
        .request(&Command::resource_create_blob(
            2,
            blob::MEM_HOST3D,
            blob::FLAG_USE_MAPPABLE,
            0,
            4096,
            &[],
        ))
        .check(&p, "host blob on software");
    assert!(
        [resp::ERR_UNSPEC, resp::ERR_INVALID_PARAMETER].contains(&r.ty()),
        "host blob on the software renderer: {}",
        r.describe()
    );
    assert!(fe.backend_req().unwrap().state().events.is_empty());
    alive(&mut fe, &p, "blob requests");
}

#[test]
fn bad_hostmem_is_refused() {
    let out = std::process::Command::new(ours("software").program)
        .args(["--socket-path", "/nonexistent/s", "--hostmem", "4097"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("4096"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---- Venus: shared-memory host blobs ---------------------------------------------------------

/// Venus command type numbers (venus-protocol's VkCommandTypeEXT).
const VK_CREATE_INSTANCE: u32 = 0;
const VK_ENUMERATE_PHYSICAL_DEVICES: u32 = 2;
const VK_CREATE_DEVICE: u32 = 11;
const VK_ALLOCATE_MEMORY: u32 = 21;
const VK_ENUMERATE_INSTANCE_VERSION: u32 = 137;
/// VkStructureType values.
const VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO: u32 = 1;
const VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO: u32 = 2;
const VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO: u32 = 3;
const VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO: u32 = 5;
const VK_SET_REPLY_COMMAND_STREAM_MESA: u32 = 178;
const VK_EXECUTE_COMMAND_STREAMS_MESA: u32 = 180;
/// VK_COMMAND_GENERATE_REPLY_BIT_EXT.
const GENERATE_REPLY: u32 = 1;

/// A Venus command stream: 4-byte words, `size_t` and array sizes as 8 bytes.
#[derive(Default)]
struct Venus(Vec<u8>);

impl Venus {
    fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    /// VkCommandStreamDescriptionMESA {resourceId, offset, size}.
    fn stream(&mut self, res: u32, offset: u64, size: u64) -> &mut Self {
        self.u32(res).u64(offset).u64(size)
    }
    fn f32(&mut self, v: f32) -> &mut Self {
        self.u32(v.to_bits())
    }
    /// vkCreateInstance(no app info, no layers, no extensions) -> `instance`.
    fn create_instance(&mut self, instance: u64) -> &mut Self {
        self.u32(VK_CREATE_INSTANCE)
            .u32(GENERATE_REPLY)
            .u64(1) // pCreateInfo
            .u32(VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO)
            .u64(0) // pNext
            .u32(0) // flags
            .u64(0) // pApplicationInfo
            .u32(0)
            .u64(0) // no layers
            .u32(0)
            .u64(0) // no extensions
            .u64(0) // pAllocator
            .u64(1)
            .u64(instance)
    }
    /// vkEnumeratePhysicalDevices(instance, count 1) -> `physical`.
    fn enumerate_physical_devices(&mut self, instance: u64, physical: u64) -> &mut Self {
        self.u32(VK_ENUMERATE_PHYSICAL_DEVICES)
            .u32(GENERATE_REPLY)
            .u64(instance)
            .u64(1)
            .u32(1)
            .u64(1)
            .u64(physical)
    }
    /// vkCreateDevice(physical, one queue of family 0) -> `device`.
    fn create_device(&mut self, physical: u64, device: u64) -> &mut Self {
        self.u32(VK_CREATE_DEVICE)
            .u32(GENERATE_REPLY)
            .u64(physical)
            .u64(1) // pCreateInfo
            .u32(VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO)
            .u64(0)
            .u32(0) // flags
            .u32(1)
            .u64(1) // one queue create info
            .u32(VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO)
            .u64(0)
            .u32(0) // flags
            .u32(0) // family
            .u32(1)
            .u64(1)
            .f32(1.0) // one queue, priority 1
            .u32(0)
            .u64(0) // no layers
            .u32(0)
            .u64(0) // no extensions
            .u64(0) // pEnabledFeatures
            .u64(0) // pAllocator
            .u64(1)
            .u64(device)
    }
    /// vkAllocateMemory(device, size, type 0) -> `memory`.
    fn allocate_memory(&mut self, device: u64, size: u64, memory: u64) -> &mut Self {
        self.u32(VK_ALLOCATE_MEMORY)
            .u32(GENERATE_REPLY)
            .u64(device)
            .u64(1)
            .u32(VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO)
            .u64(0)
            .u64(size)
            .u32(0) // memoryTypeIndex
            .u64(0) // pAllocator
            .u64(1)
            .u64(memory)
    }
    fn enumerate_instance_version(&mut self) -> &mut Self {
        // pApiVersion: a non-null output pointer.
        self.u32(VK_ENUMERATE_INSTANCE_VERSION)
            .u32(GENERATE_REPLY)
            .u64(1)
    }
    fn set_reply_stream(&mut self, res: u32, offset: u64, size: u64) -> &mut Self {
        self.u32(VK_SET_REPLY_COMMAND_STREAM_MESA)
            .u32(0)
            .u64(1)
            .stream(res, offset, size)
    }
    fn execute_streams(&mut self, res: u32, offset: u64, size: u64) -> &mut Self {
        // streamCount 1, pStreams[1], no reply positions, no dependencies, flags 0.
        self.u32(VK_EXECUTE_COMMAND_STREAMS_MESA)
            .u32(0)
            .u32(1)
            .u64(1)
            .stream(res, offset, size)
            .u64(0)
            .u32(0)
            .u64(0)
            .u32(0)
    }
}

fn capset_ids(fe: &mut GpuFrontend, p: &BackendProcess) -> Vec<u32> {
    let n = fe.config().expect("config").num_capsets;
    (0..n)
        .map(|i| {
            let b = expect(
                fe,
                p,
                &Command::get_capset_info(i),
                resp::OK_CAPSET_INFO,
                "GET_CAPSET_INFO",
            );
            u32::from_le_bytes(b[0..4].try_into().unwrap())
        })
        .collect()
}

fn create_host_shm_blob(fe: &mut GpuFrontend, p: &BackendProcess, ctx: u32, id: u32, size: u64) {
    expect(
        fe,
        p,
        &Command::resource_create_blob(id, blob::MEM_HOST3D, blob::FLAG_USE_MAPPABLE, 0, size, &[])
            .ctx(ctx),
        resp::OK_NODATA,
        "RESOURCE_CREATE_BLOB (Venus shared memory)",
    );
    expect(
        fe,
        p,
        &Command::ctx_attach_resource(ctx, id),
        resp::OK_NODATA,
        "CTX_ATTACH_RESOURCE",
    );
}

fn map_ok(fe: &mut GpuFrontend, p: &BackendProcess, id: u32, offset: u64, len: u64) -> u32 {
    map_from(fe, p, id, offset, len, |fd_offset| fd_offset == 0)
}

/// Like [`map_ok`], for a blob whose exported handle may keep its memory after a header (a host
/// Vulkan driver's: lavapipe's memory files start it 4 KiB in), where `fd_ok` says which
/// descriptor offsets are right.
fn map_from(
    fe: &mut GpuFrontend,
    p: &BackendProcess,
    id: u32,
    offset: u64,
    len: u64,
    fd_ok: impl Fn(u64) -> bool,
) -> u32 {
    let ch_mark = fe.backend_req().unwrap().mark();
    let b = expect(
        fe,
        p,
        &map(id, offset),
        resp::OK_MAP_INFO,
        "RESOURCE_MAP_BLOB",
    );
    let ev = fe
        .backend_req()
        .unwrap()
        .wait_event(ch_mark, WAIT, |e| matches!(e, ShmemEvent::Map { .. }))
        .check(p, "SHMEM_MAP");
    let fd_offset = match ev {
        ShmemEvent::Map { fd_offset, .. } => fd_offset,
        _ => unreachable!("waited for a Map"),
    };
    assert!(
        fd_ok(fd_offset),
        "SHMEM_MAP at descriptor offset {fd_offset:#x}"
    );
    assert_eq!(
        ev,
        ShmemEvent::Map {
            shmid: SHMID,
            fd_offset,
            shm_offset: offset,
            len,
            writable: true,
            mapped: true,
        },
        "{:?}",
        fe.backend_req().unwrap().state().errors
    );
    u32::from_le_bytes(b[0..4].try_into().unwrap())
}

#[test]
fn venus_shared_memory_blob_is_mapped_written_executed_and_unmapped() {
    if virgl_opted_out() {
        return;
    }
    let p = spawn(&venus_daemon());
    let mut fe = connect(&p, FrontendOptions::default());
    assert_eq!(fe.shmem_regions(), &[(SHMID, REGION)]);
    assert_ne!(fe.features() & features::CONTEXT_INIT, 0);
    let caps = capset_ids(&mut fe, &p);
    assert!(
        caps.contains(&capset::VENUS),
        "no Venus capset ({caps:?}): the library lacks Venus or no Vulkan driver (lavapipe) \
         is installed\n{}",
        p.stderr_tail()
    );
    expect(
        &mut fe,
        &p,
        &Command::ctx_create(1, capset::VENUS, "venus"),
        resp::OK_NODATA,
        "CTX_CREATE Venus",
    );
    const BLOB: u64 = 64 << 10;
    create_host_shm_blob(&mut fe, &p, 1, 10, BLOB);

    // Rejected: each with the right error, nothing sent to the frontend, the daemon alive.
    let inval = resp::ERR_INVALID_PARAMETER;
    for (what, c, ty) in [
        ("unaligned offset", map(10, 0x800), inval),
        ("past the region", map(10, REGION), inval),
        ("straddling the end", map(10, REGION - 0x1000), inval),
        ("overflowing", map(10, u64::MAX - 0xfff), inval),
        (
            "unknown resource",
            map(0xdead, 0),
            resp::ERR_INVALID_RESOURCE_ID,
        ),
        ("unmap before map", Command::resource_unmap_blob(10), inval),
    ] {
        expect(&mut fe, &p, &c, ty, what);
        alive(&mut fe, &p, what);
    }
    assert!(fe.backend_req().unwrap().state().events.is_empty());

    // Mapped at 1 MiB: the renderer's cache type, a writable SHMEM_MAP of the whole blob.
    const AT: u64 = 1 << 20;
    let info = map_ok(&mut fe, &p, 10, AT, BLOB);
    assert_eq!(
        info & 0xf,
        1,
        "map_info {info:#x}: Venus shared memory is CACHED"
    );
    // Overlaps and a second map of the same blob are refused.
    create_host_shm_blob(&mut fe, &p, 1, 11, 4096);
    for (what, c) in [
        ("overlapping the end", map(11, AT + BLOB - 0x1000)),
        ("overlapping the start", map(11, AT)),
        ("mapped twice", map(10, 0)),
    ] {
        expect(&mut fe, &p, &c, inval, what);
        alive(&mut fe, &p, what);
    }
    // Right next to it is fine.
    map_ok(&mut fe, &p, 11, AT + BLOB, 4096);

    // The guest writes a Venus command into the blob through the region...
    let ch = fe.backend_req().unwrap();
    let mut cmd = Venus::default();
    cmd.enumerate_instance_version();
    let cmd = cmd.0;
    ch.write(SHMID, AT, &cmd)
        .check(&p, "write through the mapping");
    // ...poisons the reply area...
    const REPLY: u64 = 0x8000;
    ch.write(SHMID, AT + REPLY, &[0xa5; 64]).check(&p, "poison");
    // ...and has the renderer execute it from the blob, replying into the blob.
    let mut submit = Venus::default();
    submit
        .set_reply_stream(10, REPLY, 0x1000)
        .execute_streams(10, 0, cmd.len() as u64);
    expect(
        &mut fe,
        &p,
        &Command::submit_3d(1, &submit.0),
        resp::OK_NODATA,
        "SUBMIT_3D (execute the stream in the blob)",
    );
    // The renderer's reply, read through the mapping: {command type, VK_SUCCESS, pointer 1,
    // version}.
    let reply = read_reply(&mut fe, &p, AT + REPLY, 20);
    let word = |i: usize| u32::from_le_bytes(reply[i..i + 4].try_into().unwrap());
    assert_eq!(word(0), VK_ENUMERATE_INSTANCE_VERSION, "reply {reply:02x?}");
    assert_eq!(word(4), 0, "VkResult of vkEnumerateInstanceVersion");
    assert_eq!(u64::from_le_bytes(reply[8..16].try_into().unwrap()), 1);
    let version = word(16);
    assert!(
        version >> 22 == 1 && (version >> 12) & 0x3ff >= 1,
        "API version {version:#x}: expected Vulkan 1.1 or later"
    );

    // A scanout of the host blob: the guest draws into it through the region, the display
    // peer gets exactly those pixels (read back from the renderer's own mapping of the blob,
    // since shared memory is no dmabuf).
    const W: u32 = 32;
    const H: u32 = 16;
    const IMAGE: u64 = 0x4000;
    let px = |x: u32, y: u32| 0x0040_0000 | (y << 8) | x;
    let image: Vec<u8> = (0..W * H)
        .flat_map(|i| px(i % W, i / W).to_le_bytes())
        .collect();
    fe.backend_req()
        .unwrap()
        .write(SHMID, AT + IMAGE, &image)
        .check(&p, "draw through the mapping");
    let d = fe.display().unwrap();
    let mark = d.mark();
    expect(
        &mut fe,
        &p,
        &Command::set_scanout_blob(
            0,
            10,
            Rect::new(0, 0, W, H),
            W,
            H,
            format::B8G8R8X8_UNORM,
            [W * 4, 0, 0, 0],
            [IMAGE as u32, 0, 0, 0],
        ),
        resp::OK_NODATA,
        "SET_SCANOUT_BLOB of the host blob",
    );
    expect(
        &mut fe,
        &p,
        &Command::resource_flush(10, Rect::new(0, 0, W, H)),
        resp::OK_NODATA,
        "RESOURCE_FLUSH of the host blob",
    );
    d.wait_event(mark, WAIT, "UPDATE", |e| {
        matches!(e, DisplayEvent::Update { .. })
    })
    .check(&p, "update of the host blob scanout");
    let fb = d.framebuffer(0).expect("framebuffer");
    assert_eq!((fb.width, fb.height), (W, H));
    for y in 0..H {
        for x in 0..W {
            assert_eq!(
                fb.pixel(x, y).unwrap() & 0xff_ffff,
                px(x, y),
                "pixel ({x}, {y})"
            );
        }
    }
    expect(
        &mut fe,
        &p,
        &Command::set_scanout_blob(0, 0, Rect::new(0, 0, 0, 0), 0, 0, 0, [0; 4], [0; 4]),
        resp::OK_NODATA,
        "disable the scanout",
    );

    // A fence on the Venus context's ring 0 (the per-context timeline Venus uses) completes and
    // comes back with the guest's full 64-bit id.
    let mut again = Venus::default();
    again
        .set_reply_stream(10, REPLY, 0x1000)
        .execute_streams(10, 0, cmd.len() as u64);
    let fence = (7u64 << 40) | 3;
    let r = fe
        .request(&Command::submit_3d(1, &again.0).fenced(fence).ring(0))
        .check(&p, "fenced SUBMIT_3D on ring 0");
    assert_eq!(r.ty(), resp::OK_NODATA, "{}", r.describe());
    assert_eq!(r.hdr.fence_id, fence);
    assert_eq!((r.hdr.ctx_id, r.hdr.ring_idx), (1, 0));

    // Unmap: SHMEM_UNMAP of exactly the mapping; the range is gone from the region.
    let mark = fe.backend_req().unwrap().mark();
    expect(
        &mut fe,
        &p,
        &Command::resource_unmap_blob(10),
        resp::OK_NODATA,
        "RESOURCE_UNMAP_BLOB",
    );
    let ev = fe
        .backend_req()
        .unwrap()
        .wait_event(mark, WAIT, |e| matches!(e, ShmemEvent::Unmap { .. }))
        .check(&p, "SHMEM_UNMAP");
    assert_eq!(
        ev,
        ShmemEvent::Unmap {
            shmid: SHMID,
            shm_offset: AT,
            len: BLOB,
            unmapped: true
        }
    );
    assert!(fe.backend_req().unwrap().read(SHMID, AT, 4).is_err());
    expect(
        &mut fe,
        &p,
        &Command::resource_unmap_blob(10),
        inval,
        "unmap twice",
    );
    // The freed range takes another mapping (the same blob again).
    map_ok(&mut fe, &p, 10, AT, BLOB);

    // Unref of a mapped blob unmaps it first.
    let mark = fe.backend_req().unwrap().mark();
    expect(
        &mut fe,
        &p,
        &Command::resource_unref(11),
        resp::OK_NODATA,
        "unref mapped blob",
    );
    let ev = fe
        .backend_req()
        .unwrap()
        .wait_event(mark, WAIT, |e| matches!(e, ShmemEvent::Unmap { .. }))
        .check(&p, "SHMEM_UNMAP on unref");
    assert_eq!(
        ev,
        ShmemEvent::Unmap {
            shmid: SHMID,
            shm_offset: AT + BLOB,
            len: 4096,
            unmapped: true
        }
    );
    assert!(
        fe.backend_req().unwrap().state().errors.is_empty(),
        "{:?}",
        fe.backend_req().unwrap().state().errors
    );
    alive(&mut fe, &p, "the whole sequence");
}

// ---- virgl (GL) host blobs -------------------------------------------------------------------

/// VIRGL_CCMD_PIPE_RESOURCE_CREATE.
const CCMD_PIPE_RESOURCE_CREATE: u32 = 48;
/// PIPE_BUFFER, VIRGL_FORMAT_R8_UNORM, VIRGL_BIND_VERTEX_BUFFER.
const PIPE_BUFFER: u32 = 0;
const R8_UNORM: u32 = 64;
const BIND_VERTEX_BUFFER: u32 = 1 << 4;
/// VIRGL_RESOURCE_FLAG_MAP_PERSISTENT | VIRGL_RESOURCE_FLAG_MAP_COHERENT.
const MAP_PERSISTENT_COHERENT: u32 = (1 << 1) | (1 << 2);

#[test]
fn virgl_gl_host_blob_is_created_but_has_no_fd_to_map() {
    if virgl_opted_out() {
        return;
    }
    let (p, mut fe) = daemon("virglrenderer", Some("64M"));
    expect(
        &mut fe,
        &p,
        &Command::ctx_create(1, 0, "gl"),
        resp::OK_NODATA,
        "CTX_CREATE",
    );
    let size = 4096u32;
    let words = [
        CCMD_PIPE_RESOURCE_CREATE | (11 << 16),
        PIPE_BUFFER,
        R8_UNORM,
        BIND_VERTEX_BUFFER,
        size,
        1,
        1,
        1,
        0,
        0,
        MAP_PERSISTENT_COHERENT,
        7, // blob_id
    ];
    let stream: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
    expect(
        &mut fe,
        &p,
        &Command::submit_3d(1, &stream),
        resp::OK_NODATA,
        "PIPE_RESOURCE_CREATE",
    );
    expect(
        &mut fe,
        &p,
        &Command::resource_create_blob(
            5,
            blob::MEM_HOST3D,
            blob::FLAG_USE_MAPPABLE,
            7,
            size.into(),
            &[],
        )
        .ctx(1),
        resp::OK_NODATA,
        "RESOURCE_CREATE_BLOB of a GL buffer",
    );
    // The checks come first...
    expect(
        &mut fe,
        &p,
        &map(5, 0x10),
        resp::ERR_INVALID_PARAMETER,
        "unaligned",
    );
    // ...then the export, which libvirglrenderer 0.10.4 cannot do for GL buffers without
    // minigbm: ERR_UNSPEC, nothing sent to the frontend, the daemon alive and saying why.
    expect(&mut fe, &p, &map(5, 0), resp::ERR_UNSPEC, "map a GL blob");
    assert!(fe.backend_req().unwrap().state().events.is_empty());
    alive(&mut fe, &p, "the failed map");
    let log = p.stderr();
    assert!(
        log.contains("virgl_renderer_resource_export_blob"),
        "the daemon's log does not say why: {}",
        p.stderr_tail()
    );
}

/// Reads `len` bytes of a Venus reply at `at` in the region once the renderer wrote it (its
/// first word is no longer the 0xa5 poison). Where Venus runs in libvirglrenderer's render
/// server (1.x) the command executes in another process after SUBMIT_3D is answered, so the
/// reply lands a few milliseconds later.
fn read_reply(fe: &mut GpuFrontend, p: &BackendProcess, at: u64, len: usize) -> Vec<u8> {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let r = fe
            .backend_req()
            .unwrap()
            .read(SHMID, at, len)
            .check(p, "read the reply");
        if r[..4] != [0xa5; 4] || std::time::Instant::now() > deadline {
            return r;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Runs one Venus command with a reply into blob `stream` (mapped at `at`) and returns the
/// reply's command type and VkResult.
fn venus_call(
    fe: &mut GpuFrontend,
    p: &BackendProcess,
    stream: u32,
    at: u64,
    slot: u64,
    cmd: &mut Venus,
) -> (u32, i32) {
    let reply = 0x1000 * (slot + 1);
    fe.backend_req()
        .unwrap()
        .write(SHMID, at + reply, &[0xa5; 8])
        .check(p, "poison the reply");
    let mut s = Venus::default();
    s.set_reply_stream(stream, reply, 0x1000);
    s.0.extend_from_slice(&cmd.0);
    expect(
        fe,
        p,
        &Command::submit_3d(1, &s.0),
        resp::OK_NODATA,
        "SUBMIT_3D (Venus)",
    );
    let r = read_reply(fe, p, at + reply, 8);
    (
        u32::from_le_bytes(r[0..4].try_into().unwrap()),
        i32::from_le_bytes(r[4..8].try_into().unwrap()),
    )
}

/// A daemon with a Venus context 1, a reply blob 10 mapped at 0, and a `VkDeviceMemory` of
/// `size` bytes made over the Venus protocol; returns the memory's object id (its blob id).
fn venus_device_memory(size: u64) -> (BackendProcess, GpuFrontend, u64) {
    let cmd = venus_daemon().env("RUST_LOG", "info,vhost_user_gpu::gpu=debug");
    let p = spawn(&cmd);
    let mut fe = connect(&p, FrontendOptions::default());
    expect(
        &mut fe,
        &p,
        &Command::ctx_create(1, capset::VENUS, "venus"),
        resp::OK_NODATA,
        "CTX_CREATE Venus",
    );
    // Replies go to a shared-memory blob mapped at 0.
    create_host_shm_blob(&mut fe, &p, 1, 10, 64 << 10);
    map_ok(&mut fe, &p, 10, 0, 64 << 10);
    let (instance, physical, device, memory) = (1u64, 2u64, 3u64, 4u64);
    let steps: [(&str, Venus, u32, &[i32]); 4] = [
        (
            "vkCreateInstance",
            {
                let mut v = Venus::default();
                v.create_instance(instance);
                v
            },
            VK_CREATE_INSTANCE,
            &[0],
        ),
        (
            "vkEnumeratePhysicalDevices",
            {
                let mut v = Venus::default();
                v.enumerate_physical_devices(instance, physical);
                v
            },
            VK_ENUMERATE_PHYSICAL_DEVICES,
            &[0, 5], // VK_SUCCESS, VK_INCOMPLETE (more than one device)
        ),
        (
            "vkCreateDevice",
            {
                let mut v = Venus::default();
                v.create_device(physical, device);
                v
            },
            VK_CREATE_DEVICE,
            &[0],
        ),
        (
            "vkAllocateMemory",
            {
                let mut v = Venus::default();
                v.allocate_memory(device, size, memory);
                v
            },
            VK_ALLOCATE_MEMORY,
            &[0],
        ),
    ];
    for (slot, (name, mut c, ty, ok)) in steps.into_iter().enumerate() {
        let (rty, result) = venus_call(&mut fe, &p, 10, 0, slot as u64, &mut c);
        assert_eq!(
            rty,
            ty,
            "{name}: reply of another command\n{}",
            p.stderr_tail()
        );
        assert!(
            ok.contains(&result),
            "{name}: VkResult {result}\n{}",
            p.stderr_tail()
        );
    }
    (p, fe, memory)
}

/// A blob declared larger than the Vulkan memory behind it (libvirglrenderer 0.10.4 checks the
/// size only for dmabufs), shown and flushed: the daemon's read-back must not map and touch
/// past the end of the exported file (SIGBUS of the whole daemon). The flush fails, the daemon
/// serves on. A library that refuses the blob at creation is fine too.
#[test]
fn a_venus_blob_larger_than_its_memory_is_not_read_past_its_end() {
    if virgl_opted_out() {
        return;
    }
    let (p, mut fe, memory) = venus_device_memory(64 << 10);
    const DECLARED: u64 = 16 << 20;
    let r = fe
        .request(
            &Command::resource_create_blob(
                20,
                blob::MEM_HOST3D,
                blob::FLAG_USE_MAPPABLE,
                memory,
                DECLARED,
                &[],
            )
            .ctx(1),
        )
        .check(&p, "RESOURCE_CREATE_BLOB larger than its memory");
    if r.ty() != resp::OK_NODATA {
        eprintln!("the library refused the oversized blob: {}", r.describe());
        alive(&mut fe, &p, "the refused blob");
        return;
    }
    // 2048x2048 pixels of 4 bytes: the whole 16 MiB the guest declared.
    const W: u32 = 2048;
    fe.request(&Command::set_scanout_blob(
        0,
        20,
        Rect::new(0, 0, W, W),
        W,
        W,
        format::B8G8R8X8_UNORM,
        [W * 4, 0, 0, 0],
        [0; 4],
    ))
    .check(&p, "SET_SCANOUT_BLOB of the oversized blob");
    fe.request(&Command::resource_flush(20, Rect::new(0, 0, W, W)))
        .check(&p, "RESOURCE_FLUSH of the oversized blob");
    alive(&mut fe, &p, "the flush of the oversized blob");
}

#[test]
fn venus_device_memory_blob_is_mapped_and_scanned_out() {
    if virgl_opted_out() {
        return;
    }
    const SIZE: u64 = 64 << 10;
    let (p, mut fe, memory) = venus_device_memory(SIZE);
    // The VkDeviceMemory as a host blob (blob_id = its object id), mapped into the region.
    expect(
        &mut fe,
        &p,
        &Command::resource_create_blob(
            20,
            blob::MEM_HOST3D,
            blob::FLAG_USE_MAPPABLE,
            memory,
            SIZE,
            &[],
        )
        .ctx(1),
        resp::OK_NODATA,
        "RESOURCE_CREATE_BLOB of a VkDeviceMemory",
    );
    const AT: u64 = 1 << 20;
    // Where lavapipe's exported memory starts in its file: page-aligned, past its header. The
    // scanout below reads the memory through the library, so a wrong offset shows as wrong
    // pixels there.
    let info = map_from(&mut fe, &p, 20, AT, SIZE, |o| o % 4096 == 0 && o <= 4096);
    let kind = p
        .stderr()
        .lines()
        .find(|l| l.contains("blob 20: exported as"))
        .map(str::to_owned)
        .unwrap_or_default();
    eprintln!("VkDeviceMemory blob: map_info {info:#x}; {kind}");
    // The guest draws into the Vulkan memory through the region; the scanout (read back
    // through the renderer's own mapping of that memory) shows exactly that.
    const W: u32 = 64;
    const H: u32 = 32;
    let px = |x: u32, y: u32| 0x0080_0000 | (y << 8) | (x ^ 0x5a);
    let image: Vec<u8> = (0..W * H)
        .flat_map(|i| px(i % W, i / W).to_le_bytes())
        .collect();
    fe.backend_req()
        .unwrap()
        .write(SHMID, AT, &image)
        .check(&p, "draw through the mapping");
    let d = fe.display().unwrap();
    let mark = d.mark();
    expect(
        &mut fe,
        &p,
        &Command::set_scanout_blob(
            0,
            20,
            Rect::new(0, 0, W, H),
            W,
            H,
            format::B8G8R8X8_UNORM,
            [W * 4, 0, 0, 0],
            [0; 4],
        ),
        resp::OK_NODATA,
        "SET_SCANOUT_BLOB of the Vulkan memory",
    );
    expect(
        &mut fe,
        &p,
        &Command::resource_flush(20, Rect::new(0, 0, W, H)),
        resp::OK_NODATA,
        "RESOURCE_FLUSH",
    );
    d.wait_event(mark, WAIT, "UPDATE", |e| {
        matches!(e, DisplayEvent::Update { .. })
    })
    .check(&p, "update");
    let fb = d.framebuffer(0).expect("framebuffer");
    for y in 0..H {
        for x in 0..W {
            assert_eq!(
                fb.pixel(x, y).unwrap() & 0xff_ffff,
                px(x, y),
                "pixel ({x}, {y})"
            );
        }
    }
    expect(
        &mut fe,
        &p,
        &Command::resource_unmap_blob(20),
        resp::OK_NODATA,
        "unmap",
    );
    alive(&mut fe, &p, "the Vulkan memory blob");
}

#[test]
fn frontend_without_shmem_gets_no_mappings() {
    if virgl_opted_out() {
        return;
    }
    // BACKEND_REQ but not SHMEM (what QEMU 10.0 negotiates): the daemon has a channel but may
    // not send SHMEM_MAP on it; MAP_BLOB fails cleanly.
    let opts = FrontendOptions {
        protocol_features: FrontendOptions::default().protocol_features
            - VhostUserProtocolFeatures::SHMEM,
        ..FrontendOptions::default()
    };
    let p = spawn(&venus_daemon());
    let mut fe = connect(&p, opts);
    assert!(fe.shmem_regions().is_empty());
    assert!(fe.backend_req().is_some());
    expect(
        &mut fe,
        &p,
        &Command::ctx_create(1, capset::VENUS, "venus"),
        resp::OK_NODATA,
        "CTX_CREATE Venus",
    );
    create_host_shm_blob(&mut fe, &p, 1, 10, 4096);
    expect(
        &mut fe,
        &p,
        &map(10, 0),
        resp::ERR_UNSPEC,
        "map without SHMEM",
    );
    assert!(fe.backend_req().unwrap().state().events.is_empty());
    alive(&mut fe, &p, "map without SHMEM");
}

#[test]
fn reset_unmaps_and_a_new_connection_starts_clean() {
    use vhost::vhost_user::VhostUserFrontend;
    if virgl_opted_out() {
        return;
    }
    let p = spawn(&venus_daemon());
    let opts = FrontendOptions {
        protocol_features: FrontendOptions::default().protocol_features
            | VhostUserProtocolFeatures::RESET_DEVICE,
        ..FrontendOptions::default()
    };
    let mut fe = connect(&p, opts);
    expect(
        &mut fe,
        &p,
        &Command::ctx_create(1, capset::VENUS, "venus"),
        resp::OK_NODATA,
        "CTX_CREATE Venus",
    );
    create_host_shm_blob(&mut fe, &p, 1, 10, 64 << 10);
    map_ok(&mut fe, &p, 10, 0x20000, 64 << 10);
    // RESET_DEVICE: the device drops the guest's state and unmaps what it had mapped.
    let mark = fe.backend_req().unwrap().mark();
    fe.vhost()
        .reset_device()
        .unwrap_or_else(|e| panic!("RESET_DEVICE: {e}\n{}", p.stderr_tail()));
    let ev = fe
        .backend_req()
        .unwrap()
        .wait_event(mark, WAIT, |e| matches!(e, ShmemEvent::Unmap { .. }))
        .check(&p, "SHMEM_UNMAP on reset");
    assert_eq!(
        ev,
        ShmemEvent::Unmap {
            shmid: SHMID,
            shm_offset: 0x20000,
            len: 64 << 10,
            unmapped: true
        }
    );
    drop(fe);
    // The next frontend gets a fresh region and device: the same ids and offset work again.
    let mut fe = connect(&p, FrontendOptions::default());
    assert_eq!(fe.shmem_regions(), &[(SHMID, REGION)]);
    expect(
        &mut fe,
        &p,
        &Command::ctx_create(1, capset::VENUS, "venus"),
        resp::OK_NODATA,
        "CTX_CREATE Venus again",
    );
    create_host_shm_blob(&mut fe, &p, 1, 10, 64 << 10);
    map_ok(&mut fe, &p, 10, 0x20000, 64 << 10);
    alive(&mut fe, &p, "reconnect");
}
