//! Writes the seed corpus: `seeds <dir>` fills `<dir>/decode`, `<dir>/device_software` and
//! `<dir>/device_virgl` with the request sequences of the device's unit tests (one request of
//! each command type; 2D upload and scanout; cursor; blobs; 3D contexts, transfers, a virgl
//! clear and fences; odd chains), in the formats of the crate doc. With `--replay` after the
//! directory it then runs the device seeds on the software and the virgl device and prints each
//! request type with its response type.

use std::path::Path;

use vhost_user_gpu::gpu::VirtioGpu;
use vhost_user_gpu::protocol::*;
use vhost_user_gpu_fuzz::{
    guest_memory, hdr, le32s, req, software_input, virgl_device, virgl_input, Script, DATA_ADDR,
    HIGH, REQ_ADDR, RESP_ADDR,
};
use virglrenderer::format::{
    B8G8R8X8_UNORM, BIND_RENDER_TARGET, BIND_SAMPLER_VIEW, PIPE_BUFFER, PIPE_TEXTURE_2D, R8_UNORM,
};
use virglrenderer::protocol::{
    CommandBuffer, PIPE_CLEAR_COLOR0, VIRGL_RESOURCE_FLAG_MAP_COHERENT,
    VIRGL_RESOURCE_FLAG_MAP_PERSISTENT,
};

const WRITE: u16 = 2;
const NEXT: u16 = 1;
const INDIRECT: u16 = 4;

fn u64le(v: u64) -> Vec<u8> {
    v.to_le_bytes().to_vec()
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

fn create_2d(id: u32, w: u32, h: u32) -> Vec<u8> {
    req(
        VIRTIO_GPU_CMD_RESOURCE_CREATE_2D,
        0,
        &le32s(&[id, VIRTIO_GPU_FORMAT_B8G8R8X8_UNORM, w, h]),
    )
}

fn attach(id: u32, entries: &[(u64, u32)]) -> Vec<u8> {
    let mut b = le32s(&[id, entries.len() as u32]);
    for &(a, l) in entries {
        b.extend(u64le(a));
        b.extend(le32s(&[l, 0]));
    }
    req(VIRTIO_GPU_CMD_RESOURCE_ATTACH_BACKING, 0, &b)
}

fn transfer_2d(id: u32, r: [u32; 4], offset: u64) -> Vec<u8> {
    req(
        VIRTIO_GPU_CMD_TRANSFER_TO_HOST_2D,
        0,
        &cat(&[&le32s(&r), &u64le(offset), &le32s(&[id, 0])]),
    )
}

fn set_scanout(scanout: u32, id: u32, r: [u32; 4]) -> Vec<u8> {
    req(
        VIRTIO_GPU_CMD_SET_SCANOUT,
        0,
        &cat(&[&le32s(&r), &le32s(&[scanout, id])]),
    )
}

fn flush(id: u32, r: [u32; 4]) -> Vec<u8> {
    req(
        VIRTIO_GPU_CMD_RESOURCE_FLUSH,
        0,
        &cat(&[&le32s(&r), &le32s(&[id, 0])]),
    )
}

fn id_cmd(type_: u32, ctx: u32, id: u32) -> Vec<u8> {
    req(type_, ctx, &le32s(&[id, 0]))
}

fn cursor(type_: u32, scanout: u32, x: u32, y: u32, id: u32) -> Vec<u8> {
    req(type_, 0, &le32s(&[scanout, x, y, 0, id, 3, 4, 0]))
}

fn ctx_create(ctx: u32, capset: u32, name: &str) -> Vec<u8> {
    let mut n = [0u8; CTX_DEBUG_NAME_SIZE];
    n[..name.len()].copy_from_slice(name.as_bytes());
    req(
        VIRTIO_GPU_CMD_CTX_CREATE,
        ctx,
        &cat(&[&le32s(&[name.len() as u32, capset]), &n]),
    )
}

fn create_3d(id: u32, w: u32, h: u32) -> Vec<u8> {
    req(
        VIRTIO_GPU_CMD_RESOURCE_CREATE_3D,
        0,
        &le32s(&[
            id,
            PIPE_TEXTURE_2D,
            B8G8R8X8_UNORM,
            BIND_RENDER_TARGET | BIND_SAMPLER_VIEW,
            w,
            h,
            1,
            1,
            0,
            0,
            0,
            0,
        ]),
    )
}

fn transfer_3d(type_: u32, ctx: u32, id: u32, b: [u32; 6], offset: u64, stride: u32) -> Vec<u8> {
    req(
        type_,
        ctx,
        &cat(&[&le32s(&b), &u64le(offset), &le32s(&[id, 0, stride, 0])]),
    )
}

fn submit(ctx: u32, commands: &[u8], fence: Option<u64>) -> Vec<u8> {
    let body = cat(&[&le32s(&[commands.len() as u32, 0]), commands]);
    match fence {
        None => req(VIRTIO_GPU_CMD_SUBMIT_3D, ctx, &body),
        Some(f) => cat(&[
            &hdr(VIRTIO_GPU_CMD_SUBMIT_3D, VIRTIO_GPU_FLAG_FENCE, f, ctx, 0),
            &body,
        ]),
    }
}

fn clear_stream(res: u32) -> Vec<u8> {
    let mut cmd = CommandBuffer::new();
    cmd.create_sub_ctx(1)
        .set_sub_ctx(1)
        .create_surface(1, res, B8G8R8X8_UNORM, 0, 0, 0)
        .set_framebuffer_state(0, &[1])
        .clear(PIPE_CLEAR_COLOR0, [1.0, 0.0, 0.0, 1.0], 1.0, 0);
    cmd.to_bytes()
}

fn create_blob(
    id: u32,
    mem: u32,
    flags: u32,
    blob_id: u64,
    size: u64,
    entries: &[(u64, u32)],
) -> Vec<u8> {
    create_blob_in(0, id, mem, flags, blob_id, size, entries)
}

fn create_blob_in(
    ctx: u32,
    id: u32,
    mem: u32,
    flags: u32,
    blob_id: u64,
    size: u64,
    entries: &[(u64, u32)],
) -> Vec<u8> {
    let mut b = cat(&[
        &le32s(&[id, mem, flags, entries.len() as u32]),
        &u64le(blob_id),
        &u64le(size),
    ]);
    for &(a, l) in entries {
        b.extend(u64le(a));
        b.extend(le32s(&[l, 0]));
    }
    req(VIRTIO_GPU_CMD_RESOURCE_CREATE_BLOB, ctx, &b)
}

fn scanout_blob(scanout: u32, id: u32, w: u32, h: u32) -> Vec<u8> {
    req(
        VIRTIO_GPU_CMD_SET_SCANOUT_BLOB,
        0,
        &le32s(&[
            0,
            0,
            w,
            h,
            scanout,
            id,
            w,
            h,
            VIRTIO_GPU_FORMAT_B8G8R8X8_UNORM,
            0,
            w * 4,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
        ]),
    )
}

/// One request of each command type, valid-looking bodies.
fn one_of_each() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        (
            "get_display_info",
            req(VIRTIO_GPU_CMD_GET_DISPLAY_INFO, 0, &[]),
        ),
        ("create_2d", create_2d(1, 64, 64)),
        ("unref", id_cmd(VIRTIO_GPU_CMD_RESOURCE_UNREF, 0, 1)),
        ("set_scanout", set_scanout(0, 1, [0, 0, 64, 64])),
        ("flush", flush(1, [0, 0, 64, 64])),
        ("transfer_2d", transfer_2d(1, [0, 0, 64, 64], 0)),
        ("attach", attach(1, &[(DATA_ADDR, 0x4000), (HIGH, 0x1000)])),
        (
            "detach",
            id_cmd(VIRTIO_GPU_CMD_RESOURCE_DETACH_BACKING, 0, 1),
        ),
        (
            "capset_info",
            req(VIRTIO_GPU_CMD_GET_CAPSET_INFO, 0, &le32s(&[0, 0])),
        ),
        (
            "capset",
            req(
                VIRTIO_GPU_CMD_GET_CAPSET,
                0,
                &le32s(&[VIRTIO_GPU_CAPSET_VIRGL2, 2]),
            ),
        ),
        ("edid", req(VIRTIO_GPU_CMD_GET_EDID, 0, &le32s(&[0, 0]))),
        (
            "assign_uuid",
            id_cmd(VIRTIO_GPU_CMD_RESOURCE_ASSIGN_UUID, 0, 1),
        ),
        (
            "create_blob",
            create_blob(
                2,
                VIRTIO_GPU_BLOB_MEM_GUEST,
                VIRTIO_GPU_BLOB_FLAG_USE_MAPPABLE,
                0,
                0x4000,
                &[(DATA_ADDR, 0x4000)],
            ),
        ),
        ("scanout_blob", scanout_blob(0, 2, 64, 64)),
        (
            "ctx_create",
            ctx_create(1, VIRTIO_GPU_CAPSET_VIRGL2, "fuzz"),
        ),
        ("ctx_destroy", req(VIRTIO_GPU_CMD_CTX_DESTROY, 1, &[])),
        (
            "ctx_attach",
            id_cmd(VIRTIO_GPU_CMD_CTX_ATTACH_RESOURCE, 1, 3),
        ),
        (
            "ctx_detach",
            id_cmd(VIRTIO_GPU_CMD_CTX_DETACH_RESOURCE, 1, 3),
        ),
        ("create_3d", create_3d(3, 64, 64)),
        (
            "transfer_to_3d",
            transfer_3d(
                VIRTIO_GPU_CMD_TRANSFER_TO_HOST_3D,
                1,
                3,
                [0, 0, 0, 64, 64, 1],
                0,
                256,
            ),
        ),
        (
            "transfer_from_3d",
            transfer_3d(
                VIRTIO_GPU_CMD_TRANSFER_FROM_HOST_3D,
                1,
                3,
                [0, 0, 0, 64, 64, 1],
                0,
                256,
            ),
        ),
        ("submit_3d", submit(1, &clear_stream(3), Some(7))),
        (
            "map_blob",
            req(
                VIRTIO_GPU_CMD_RESOURCE_MAP_BLOB,
                0,
                &cat(&[&le32s(&[2, 0]), &u64le(0)]),
            ),
        ),
        (
            "unmap_blob",
            id_cmd(VIRTIO_GPU_CMD_RESOURCE_UNMAP_BLOB, 0, 2),
        ),
        (
            "update_cursor",
            cursor(VIRTIO_GPU_CMD_UPDATE_CURSOR, 0, 10, 20, 1),
        ),
        (
            "move_cursor",
            cursor(VIRTIO_GPU_CMD_MOVE_CURSOR, 0, 30, 40, 0),
        ),
        (
            "fenced_ring",
            cat(&[&hdr(
                VIRTIO_GPU_CMD_GET_DISPLAY_INFO,
                VIRTIO_GPU_FLAG_FENCE | VIRTIO_GPU_FLAG_INFO_RING_IDX,
                5,
                1,
                2,
            )]),
        ),
    ]
}

fn is_cursor(name: &str) -> bool {
    name.ends_with("_cursor")
}

fn write(dir: &Path, target: &str, name: &str, bytes: &[u8]) {
    let d = dir.join(target);
    std::fs::create_dir_all(&d).expect("corpus dir");
    std::fs::write(d.join(name), bytes).expect("seed file");
}

/// The 2D path of the unit tests: upload an image, show it, flush, detach, unref.
fn script_2d(s: &mut Script) {
    let image: Vec<u8> = (0..64 * 16 * 4).map(|i| (i * 7) as u8).collect();
    s.write(DATA_ADDR as u32, &image)
        .ctrl(&create_2d(1, 64, 16), 24)
        .ctrl(
            &attach(1, &[(DATA_ADDR, 0x800), (DATA_ADDR + 0x800, 0x800)]),
            24,
        )
        .ctrl(&transfer_2d(1, [0, 0, 64, 16], 0), 24)
        .ctrl(&transfer_2d(1, [8, 4, 16, 8], 4 * (4 * 64 + 8)), 24)
        .ctrl(&set_scanout(0, 1, [0, 0, 64, 16]), 24)
        .ctrl(&flush(1, [0, 0, 64, 16]), 24)
        .ctrl(&flush(1, [4, 4, 8, 8]), 24)
        .ctrl(&req(VIRTIO_GPU_CMD_GET_DISPLAY_INFO, 0, &[]), 408)
        .ctrl(&req(VIRTIO_GPU_CMD_GET_EDID, 0, &le32s(&[0, 0])), 1056)
        .ctrl(&id_cmd(VIRTIO_GPU_CMD_RESOURCE_ASSIGN_UUID, 0, 1), 40)
        .ctrl(&set_scanout(0, 0, [0, 0, 0, 0]), 24)
        .ctrl(&id_cmd(VIRTIO_GPU_CMD_RESOURCE_DETACH_BACKING, 0, 1), 24)
        .ctrl(&id_cmd(VIRTIO_GPU_CMD_RESOURCE_UNREF, 0, 1), 24);
}

fn script_cursor(s: &mut Script) {
    s.ctrl(&create_2d(5, 64, 64), 24)
        .ctrl(&attach(5, &[(DATA_ADDR, 0x4000)]), 24)
        .ctrl(&transfer_2d(5, [0, 0, 64, 64], 0), 24)
        .cursor(&cursor(VIRTIO_GPU_CMD_UPDATE_CURSOR, 0, 10, 20, 5), 0)
        .cursor(&cursor(VIRTIO_GPU_CMD_MOVE_CURSOR, 0, 30, 40, 0), 24)
        .cursor(&cursor(VIRTIO_GPU_CMD_UPDATE_CURSOR, 0, 0, 0, 0), 0);
}

fn script_blob(s: &mut Script) {
    s.ctrl(
        &create_blob(
            2,
            VIRTIO_GPU_BLOB_MEM_GUEST,
            VIRTIO_GPU_BLOB_FLAG_USE_MAPPABLE,
            0,
            0x4000,
            &[(DATA_ADDR, 0x2000), (HIGH, 0x2000)],
        ),
        24,
    )
    .ctrl(&scanout_blob(0, 2, 64, 64), 24)
    .ctrl(&flush(2, [0, 0, 64, 64]), 24)
    .ctrl(
        &req(
            VIRTIO_GPU_CMD_RESOURCE_MAP_BLOB,
            0,
            &cat(&[&le32s(&[2, 0]), &u64le(0)]),
        ),
        32,
    )
    .ctrl(&id_cmd(VIRTIO_GPU_CMD_RESOURCE_UNMAP_BLOB, 0, 2), 24)
    .ctrl(&id_cmd(VIRTIO_GPU_CMD_RESOURCE_UNREF, 0, 2), 24);
}

fn script_3d(s: &mut Script) {
    let stream = clear_stream(3);
    s.ctrl(&req(VIRTIO_GPU_CMD_GET_CAPSET_INFO, 0, &le32s(&[0, 0])), 40)
        .ctrl(
            &req(
                VIRTIO_GPU_CMD_GET_CAPSET,
                0,
                &le32s(&[VIRTIO_GPU_CAPSET_VIRGL2, 2]),
            ),
            4096,
        )
        .ctrl(&ctx_create(1, VIRTIO_GPU_CAPSET_VIRGL2, "fuzz"), 24)
        .ctrl(&create_3d(3, 64, 64), 24)
        .ctrl(&attach(3, &[(DATA_ADDR, 0x4000)]), 24)
        .ctrl(&id_cmd(VIRTIO_GPU_CMD_CTX_ATTACH_RESOURCE, 1, 3), 24)
        .ctrl(&submit(1, &stream, Some(1)), 24)
        .ctrl(
            &transfer_3d(
                VIRTIO_GPU_CMD_TRANSFER_FROM_HOST_3D,
                1,
                3,
                [0, 0, 0, 64, 64, 1],
                0,
                256,
            ),
            24,
        )
        .ctrl(
            &transfer_3d(
                VIRTIO_GPU_CMD_TRANSFER_TO_HOST_3D,
                1,
                3,
                [0, 0, 0, 32, 32, 1],
                0,
                256,
            ),
            24,
        )
        .ctrl(&set_scanout(0, 3, [0, 0, 64, 64]), 24)
        .ctrl(&flush(3, [0, 0, 64, 64]), 24)
        .poll()
        .ctrl(
            &cat(&[
                &hdr(
                    VIRTIO_GPU_CMD_CTX_DETACH_RESOURCE,
                    VIRTIO_GPU_FLAG_FENCE | VIRTIO_GPU_FLAG_INFO_RING_IDX,
                    2,
                    1,
                    1,
                ),
                &le32s(&[3, 0]),
            ]),
            24,
        )
        .poll()
        .ctrl(&req(VIRTIO_GPU_CMD_CTX_DESTROY, 1, &[]), 24)
        .ctrl(&id_cmd(VIRTIO_GPU_CMD_RESOURCE_UNREF, 0, 3), 24)
        .reset();
}

/// A host blob: a context-local buffer made by the virgl stream, a HOST3D blob of it, mapped
/// into the host-visible region and unmapped.
fn script_host_blob(s: &mut Script) {
    let args = virglrenderer::ResourceCreate3d {
        target: PIPE_BUFFER,
        format: R8_UNORM,
        bind: BIND_RENDER_TARGET,
        width: 4096,
        height: 1,
        depth: 1,
        array_size: 1,
        last_level: 0,
        nr_samples: 0,
        flags: VIRGL_RESOURCE_FLAG_MAP_PERSISTENT | VIRGL_RESOURCE_FLAG_MAP_COHERENT,
    };
    let mut cmd = CommandBuffer::new();
    cmd.pipe_resource_create(&args, 1);
    let blob_flags = VIRTIO_GPU_BLOB_FLAG_USE_MAPPABLE | VIRTIO_GPU_BLOB_FLAG_USE_SHAREABLE;
    s.ctrl(&ctx_create(1, VIRTIO_GPU_CAPSET_VIRGL2, "blob"), 24)
        .ctrl(&submit(1, &cmd.to_bytes(), None), 24)
        .ctrl(
            &create_blob_in(1, 10, VIRTIO_GPU_BLOB_MEM_HOST3D, blob_flags, 1, 4096, &[]),
            24,
        )
        .ctrl(
            &req(
                VIRTIO_GPU_CMD_RESOURCE_MAP_BLOB,
                0,
                &cat(&[&le32s(&[10, 0]), &u64le(0x1000)]),
            ),
            32,
        )
        .ctrl(&id_cmd(VIRTIO_GPU_CMD_RESOURCE_UNMAP_BLOB, 0, 10), 24)
        .ctrl(&id_cmd(VIRTIO_GPU_CMD_RESOURCE_UNREF, 0, 10), 24)
        .ctrl(&req(VIRTIO_GPU_CMD_CTX_DESTROY, 1, &[]), 24);
}

/// Chains of several descriptors: header split over two, an indirect table, a readable
/// descriptor after a writable one.
fn script_chains(s: &mut Script) {
    let request = create_2d(1, 16, 16);
    s.write(REQ_ADDR as u32, &request)
        .chain(
            false,
            &[
                (REQ_ADDR, 10, NEXT, 1),
                (REQ_ADDR + 10, request.len() as u32 - 10, NEXT, 2),
                (RESP_ADDR, 24, WRITE, 0),
            ],
        )
        .chain(
            false,
            &[
                (RESP_ADDR, 24, WRITE | NEXT, 1),
                (REQ_ADDR, request.len() as u32, 0, 0),
            ],
        );
    // An indirect table at DATA_ADDR: the request and the response.
    let mut table = Vec::new();
    for (a, l, f, n) in [
        (REQ_ADDR, request.len() as u32, NEXT, 1u16),
        (RESP_ADDR, 24, WRITE, 0),
    ] {
        table.extend(u64le(a));
        table.extend(le32s(&[l]));
        table.extend(f.to_le_bytes());
        table.extend(n.to_le_bytes());
    }
    s.write(DATA_ADDR as u32, &table)
        .chain(false, &[(DATA_ADDR, 32, INDIRECT, 0)]);
}

/// Replays the device seeds of `target` as the target runs them (on `virgl`'s device for
/// `device_virgl`, on a fresh software device per seed for `device_software`) and prints each
/// request's response.
fn replay(dir: &Path, target: &str, mut virgl: Option<&mut VirtioGpu>) {
    let mem = guest_memory();
    let mut names: Vec<_> = std::fs::read_dir(dir.join(target))
        .expect("corpus dir")
        .map(|e| e.expect("dir entry").path())
        .collect();
    names.sort();
    for path in names {
        let data = std::fs::read(&path).expect("seed");
        let mut trace = Vec::new();
        match virgl.as_deref_mut() {
            Some(gpu) => virgl_input(gpu, &mem, &data, Some(&mut trace)),
            None => software_input(&mem, &data, Some(&mut trace)),
        }
        let line: Vec<String> = trace
            .iter()
            .map(|(c, r)| format!("{c:#x}:{r:#x}"))
            .collect();
        println!(
            "{target}/{}: {}",
            path.file_name().unwrap_or_default().to_string_lossy(),
            line.join(" ")
        );
    }
}

fn main() {
    let dir = std::env::args()
        .nth(1)
        .expect("usage: seeds <corpus dir> [--replay]");
    let dir = Path::new(&dir);
    for (name, request) in one_of_each() {
        // decode: the plain layout (byte 0 = 0).
        write(dir, "decode", name, &cat(&[&[0], &request]));
    }
    // decode: a header split over two descriptors, then a response (raw layout).
    let request = create_2d(1, 16, 16);
    let mut raw = vec![0x80 | 2];
    for (a, l, f, n) in [
        (REQ_ADDR, 8u32, NEXT, 1u16),
        (REQ_ADDR + 8, request.len() as u32 - 8, NEXT, 2),
        (RESP_ADDR, 24, WRITE, 0),
    ] {
        raw.extend(u64le(a));
        raw.extend(le32s(&[l]));
        raw.extend(f.to_le_bytes());
        raw.extend(n.to_le_bytes());
    }
    raw.extend(&request);
    write(dir, "decode", "split_header", &raw);

    for target in ["device_software", "device_virgl"] {
        for (name, request) in one_of_each() {
            let mut s = Script::new(0);
            if is_cursor(name) {
                s.cursor(&request, 24);
            } else {
                s.ctrl(&request, 4096);
            }
            write(dir, target, &format!("one_{name}"), s.bytes());
        }
        let mut s = Script::new(1);
        script_2d(&mut s);
        write(dir, target, "seq_2d", s.bytes());
        let mut s = Script::new(0);
        script_cursor(&mut s);
        write(dir, target, "seq_cursor", s.bytes());
        let mut s = Script::new(0);
        script_blob(&mut s);
        write(dir, target, "seq_blob", s.bytes());
        let mut s = Script::new(0);
        script_chains(&mut s);
        write(dir, target, "seq_chains", s.bytes());
        // Only EDID and UUIDs acked: the blob and 3D commands are refused.
        let mut s = Script::with_acked(2, 1 << VIRTIO_GPU_F_EDID | 1 << VIRTIO_GPU_F_RESOURCE_UUID);
        script_blob(&mut s);
        write(dir, target, "seq_blob_not_acked", s.bytes());
        // The display answers: two scanouts' modes and an EDID longer than the response holds.
        let mut s = Script::new(1);
        s.display(
            &[(0, 0, 1280, 800, true), (1280, 0, 640, 480, true)],
            &[0xa5; 1100],
        )
        .ctrl(&req(VIRTIO_GPU_CMD_GET_DISPLAY_INFO, 0, &[]), 408)
        .ctrl(&req(VIRTIO_GPU_CMD_GET_EDID, 0, &le32s(&[1, 0])), 1056)
        .ctrl(&create_2d(1, 640, 480), 24)
        .ctrl(&set_scanout(1, 1, [0, 0, 640, 480]), 24)
        .ctrl(&flush(1, [0, 0, 64, 64]), 24);
        write(dir, target, "seq_display", s.bytes());
    }
    let mut s = Script::new(0);
    script_3d(&mut s);
    write(dir, "device_virgl", "seq_3d", s.bytes());
    let mut s = Script::new(0);
    script_2d(&mut s);
    s.reset();
    script_3d(&mut s);
    write(dir, "device_virgl", "seq_2d_3d", s.bytes());
    let mut s = Script::new(0);
    script_host_blob(&mut s);
    write(dir, "device_virgl", "seq_host_blob", s.bytes());

    if std::env::args().nth(2).as_deref() == Some("--replay") {
        replay(dir, "device_software", None);
        let mut gpu = virgl_device();
        replay(dir, "device_virgl", Some(&mut gpu));
    }
}
