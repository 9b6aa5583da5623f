//! The virtio-gpu wire format, written independently of the device crate (a second
//! implementation, so that a shared misreading of the spec cannot hide a bug).
//!
//! Everything is little endian; layouts follow the virtio spec (device-types/gpu) and the Linux
//! UAPI `virtio_gpu.h`. A [`Command`] is a control header plus a typed body; [`Response`] parses
//! what the device wrote into the writable part of a chain.

use crate::error::{Error, Result};

/// Size of `struct virtio_gpu_ctrl_hdr`.
pub const CTRL_HDR_SIZE: usize = 24;
/// Maximum number of scanouts (`VIRTIO_GPU_MAX_SCANOUTS`).
pub const MAX_SCANOUTS: usize = 16;
/// Size of `struct virtio_gpu_resp_display_info`.
pub const RESP_DISPLAY_INFO_SIZE: usize = CTRL_HDR_SIZE + MAX_SCANOUTS * 24;
/// Size of `struct virtio_gpu_resp_edid`.
pub const RESP_EDID_SIZE: usize = CTRL_HDR_SIZE + 8 + 1024;
/// Size of one `struct virtio_gpu_mem_entry`.
pub const MEM_ENTRY_SIZE: usize = 16;

/// `VIRTIO_GPU_FLAG_FENCE`.
pub const FLAG_FENCE: u32 = 1 << 0;
/// `VIRTIO_GPU_FLAG_INFO_RING_IDX`.
pub const FLAG_INFO_RING_IDX: u32 = 1 << 1;
/// `VIRTIO_GPU_RESOURCE_FLAG_Y_0_TOP`.
pub const RESOURCE_FLAG_Y_0_TOP: u32 = 1;

/// Command types (`enum virtio_gpu_ctrl_type`, requests).
pub mod cmd {
    #![allow(missing_docs)]
    pub const GET_DISPLAY_INFO: u32 = 0x0100;
    pub const RESOURCE_CREATE_2D: u32 = 0x0101;
    pub const RESOURCE_UNREF: u32 = 0x0102;
    pub const SET_SCANOUT: u32 = 0x0103;
    pub const RESOURCE_FLUSH: u32 = 0x0104;
    pub const TRANSFER_TO_HOST_2D: u32 = 0x0105;
    pub const RESOURCE_ATTACH_BACKING: u32 = 0x0106;
    pub const RESOURCE_DETACH_BACKING: u32 = 0x0107;
    pub const GET_CAPSET_INFO: u32 = 0x0108;
    pub const GET_CAPSET: u32 = 0x0109;
    pub const GET_EDID: u32 = 0x010a;
    pub const RESOURCE_ASSIGN_UUID: u32 = 0x010b;
    pub const RESOURCE_CREATE_BLOB: u32 = 0x010c;
    pub const SET_SCANOUT_BLOB: u32 = 0x010d;
    pub const CTX_CREATE: u32 = 0x0200;
    pub const CTX_DESTROY: u32 = 0x0201;
    pub const CTX_ATTACH_RESOURCE: u32 = 0x0202;
    pub const CTX_DETACH_RESOURCE: u32 = 0x0203;
    pub const RESOURCE_CREATE_3D: u32 = 0x0204;
    pub const TRANSFER_TO_HOST_3D: u32 = 0x0205;
    pub const TRANSFER_FROM_HOST_3D: u32 = 0x0206;
    pub const SUBMIT_3D: u32 = 0x0207;
    pub const RESOURCE_MAP_BLOB: u32 = 0x0208;
    pub const RESOURCE_UNMAP_BLOB: u32 = 0x0209;
    pub const UPDATE_CURSOR: u32 = 0x0300;
    pub const MOVE_CURSOR: u32 = 0x0301;
}

/// Response types (`enum virtio_gpu_ctrl_type`, responses).
pub mod resp {
    #![allow(missing_docs)]
    pub const OK_NODATA: u32 = 0x1100;
    pub const OK_DISPLAY_INFO: u32 = 0x1101;
    pub const OK_CAPSET_INFO: u32 = 0x1102;
    pub const OK_CAPSET: u32 = 0x1103;
    pub const OK_EDID: u32 = 0x1104;
    pub const OK_RESOURCE_UUID: u32 = 0x1105;
    pub const OK_MAP_INFO: u32 = 0x1106;
    pub const ERR_UNSPEC: u32 = 0x1200;
    pub const ERR_OUT_OF_MEMORY: u32 = 0x1201;
    pub const ERR_INVALID_SCANOUT_ID: u32 = 0x1202;
    pub const ERR_INVALID_RESOURCE_ID: u32 = 0x1203;
    pub const ERR_INVALID_CONTEXT_ID: u32 = 0x1204;
    pub const ERR_INVALID_PARAMETER: u32 = 0x1205;
}

/// A readable name for a command or response type (for assertion messages).
pub fn type_name(ty: u32) -> &'static str {
    match ty {
        cmd::GET_DISPLAY_INFO => "GET_DISPLAY_INFO",
        cmd::RESOURCE_CREATE_2D => "RESOURCE_CREATE_2D",
        cmd::RESOURCE_UNREF => "RESOURCE_UNREF",
        cmd::SET_SCANOUT => "SET_SCANOUT",
        cmd::RESOURCE_FLUSH => "RESOURCE_FLUSH",
        cmd::TRANSFER_TO_HOST_2D => "TRANSFER_TO_HOST_2D",
        cmd::RESOURCE_ATTACH_BACKING => "RESOURCE_ATTACH_BACKING",
        cmd::RESOURCE_DETACH_BACKING => "RESOURCE_DETACH_BACKING",
        cmd::GET_CAPSET_INFO => "GET_CAPSET_INFO",
        cmd::GET_CAPSET => "GET_CAPSET",
        cmd::GET_EDID => "GET_EDID",
        cmd::RESOURCE_ASSIGN_UUID => "RESOURCE_ASSIGN_UUID",
        cmd::RESOURCE_CREATE_BLOB => "RESOURCE_CREATE_BLOB",
        cmd::SET_SCANOUT_BLOB => "SET_SCANOUT_BLOB",
        cmd::CTX_CREATE => "CTX_CREATE",
        cmd::CTX_DESTROY => "CTX_DESTROY",
        cmd::CTX_ATTACH_RESOURCE => "CTX_ATTACH_RESOURCE",
        cmd::CTX_DETACH_RESOURCE => "CTX_DETACH_RESOURCE",
        cmd::RESOURCE_CREATE_3D => "RESOURCE_CREATE_3D",
        cmd::TRANSFER_TO_HOST_3D => "TRANSFER_TO_HOST_3D",
        cmd::TRANSFER_FROM_HOST_3D => "TRANSFER_FROM_HOST_3D",
        cmd::SUBMIT_3D => "SUBMIT_3D",
        cmd::RESOURCE_MAP_BLOB => "RESOURCE_MAP_BLOB",
        cmd::RESOURCE_UNMAP_BLOB => "RESOURCE_UNMAP_BLOB",
        cmd::UPDATE_CURSOR => "UPDATE_CURSOR",
        cmd::MOVE_CURSOR => "MOVE_CURSOR",
        resp::OK_NODATA => "OK_NODATA",
        resp::OK_DISPLAY_INFO => "OK_DISPLAY_INFO",
        resp::OK_CAPSET_INFO => "OK_CAPSET_INFO",
        resp::OK_CAPSET => "OK_CAPSET",
        resp::OK_EDID => "OK_EDID",
        resp::OK_RESOURCE_UUID => "OK_RESOURCE_UUID",
        resp::OK_MAP_INFO => "OK_MAP_INFO",
        resp::ERR_UNSPEC => "ERR_UNSPEC",
        resp::ERR_OUT_OF_MEMORY => "ERR_OUT_OF_MEMORY",
        resp::ERR_INVALID_SCANOUT_ID => "ERR_INVALID_SCANOUT_ID",
        resp::ERR_INVALID_RESOURCE_ID => "ERR_INVALID_RESOURCE_ID",
        resp::ERR_INVALID_CONTEXT_ID => "ERR_INVALID_CONTEXT_ID",
        resp::ERR_INVALID_PARAMETER => "ERR_INVALID_PARAMETER",
        _ => "UNKNOWN",
    }
}

/// Device feature bits (`VIRTIO_GPU_F_*`) and the transport bits a frontend acks.
pub mod features {
    #![allow(missing_docs)]
    pub const VIRGL: u64 = 1 << 0;
    pub const EDID: u64 = 1 << 1;
    pub const RESOURCE_UUID: u64 = 1 << 2;
    pub const RESOURCE_BLOB: u64 = 1 << 3;
    pub const CONTEXT_INIT: u64 = 1 << 4;
    /// All virtio-gpu device feature bits this harness knows.
    pub const ALL_GPU: u64 = VIRGL | EDID | RESOURCE_UUID | RESOURCE_BLOB | CONTEXT_INIT;
    /// `VIRTIO_F_VERSION_1`.
    pub const VERSION_1: u64 = 1 << 32;
    /// `VHOST_USER_F_PROTOCOL_FEATURES`.
    pub const PROTOCOL_FEATURES: u64 = 1 << 30;
    /// `VIRTIO_RING_F_EVENT_IDX`.
    pub const RING_EVENT_IDX: u64 = 1 << 29;
}

/// Pixel formats (`enum virtio_gpu_formats`).
pub mod format {
    #![allow(missing_docs)]
    pub const B8G8R8A8_UNORM: u32 = 1;
    pub const B8G8R8X8_UNORM: u32 = 2;
    pub const A8R8G8B8_UNORM: u32 = 3;
    pub const X8R8G8B8_UNORM: u32 = 4;
    pub const R8G8B8A8_UNORM: u32 = 67;
    pub const X8B8G8R8_UNORM: u32 = 68;
    pub const A8B8G8R8_UNORM: u32 = 121;
    pub const R8G8B8X8_UNORM: u32 = 134;
}

/// Capset ids.
pub mod capset {
    #![allow(missing_docs)]
    pub const VIRGL: u32 = 1;
    pub const VIRGL2: u32 = 2;
    pub const GFXSTREAM: u32 = 3;
    pub const VENUS: u32 = 4;
    pub const CROSS_DOMAIN: u32 = 5;
    pub const DRM: u32 = 6;
}

/// Blob memory types and flags.
pub mod blob {
    #![allow(missing_docs)]
    pub const MEM_GUEST: u32 = 1;
    pub const MEM_HOST3D: u32 = 2;
    pub const MEM_HOST3D_GUEST: u32 = 3;
    pub const FLAG_USE_MAPPABLE: u32 = 1;
    pub const FLAG_USE_SHAREABLE: u32 = 2;
    pub const FLAG_USE_CROSS_DEVICE: u32 = 4;
}

/// Which virtqueue a command goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QueueId {
    /// Queue 0.
    Control,
    /// Queue 1.
    Cursor,
}

impl QueueId {
    /// The vring index.
    pub fn index(self) -> usize {
        match self {
            QueueId::Control => 0,
            QueueId::Cursor => 1,
        }
    }
}

/// A rectangle (`struct virtio_gpu_rect`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rect {
    /// Left.
    pub x: u32,
    /// Top.
    pub y: u32,
    /// Width.
    pub width: u32,
    /// Height.
    pub height: u32,
}

impl Rect {
    /// A rectangle.
    pub const fn new(x: u32, y: u32, width: u32, height: u32) -> Self {
        Rect {
            x,
            y,
            width,
            height,
        }
    }
}

/// A 3D box (`struct virtio_gpu_box`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Box3d {
    /// x, y, z.
    pub x: u32,
    #[allow(missing_docs)]
    pub y: u32,
    #[allow(missing_docs)]
    pub z: u32,
    /// w, h, d.
    pub w: u32,
    #[allow(missing_docs)]
    pub h: u32,
    #[allow(missing_docs)]
    pub d: u32,
}

/// One `struct virtio_gpu_mem_entry`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemEntry {
    /// Guest physical address.
    pub addr: u64,
    /// Length in bytes.
    pub length: u32,
}

/// `struct virtio_gpu_ctrl_hdr`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CtrlHdr {
    /// Command or response type.
    pub ty: u32,
    /// FLAG_FENCE, FLAG_INFO_RING_IDX.
    pub flags: u32,
    /// Fence id.
    pub fence_id: u64,
    /// 3D context id.
    pub ctx_id: u32,
    /// Ring index (with FLAG_INFO_RING_IDX).
    pub ring_idx: u8,
}

impl CtrlHdr {
    /// Append the 24 wire bytes.
    pub fn encode(&self, out: &mut Vec<u8>) {
        put32(out, self.ty);
        put32(out, self.flags);
        put64(out, self.fence_id);
        put32(out, self.ctx_id);
        out.push(self.ring_idx);
        out.extend_from_slice(&[0; 3]);
    }

    /// Parse the first 24 bytes.
    pub fn decode(b: &[u8]) -> Option<Self> {
        if b.len() < CTRL_HDR_SIZE {
            return None;
        }
        Some(CtrlHdr {
            ty: get32(b, 0),
            flags: get32(b, 4),
            fence_id: get64(b, 8),
            ctx_id: get32(b, 16),
            ring_idx: b[20],
        })
    }
}

/// Append a little-endian u32.
pub fn put32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

/// Append a little-endian u64.
pub fn put64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

/// Read a little-endian u32 at `off` (0 when out of range: callers check lengths first).
pub fn get32(b: &[u8], off: usize) -> u32 {
    b.get(off..off + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
        .unwrap_or(0)
}

/// Read a little-endian u64 at `off` (0 when out of range).
pub fn get64(b: &[u8], off: usize) -> u64 {
    let lo = u64::from(get32(b, off));
    let hi = u64::from(get32(b, off + 4));
    lo | (hi << 32)
}

fn put_rect(out: &mut Vec<u8>, r: Rect) {
    put32(out, r.x);
    put32(out, r.y);
    put32(out, r.width);
    put32(out, r.height);
}

/// One virtio-gpu request: header, body, the queue it goes to and the size of the writable
/// response buffer the driver offers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Command {
    /// The control header (type, flags, fence, context, ring).
    pub hdr: CtrlHdr,
    /// Everything after the header.
    pub body: Vec<u8>,
    /// Target queue.
    pub queue: QueueId,
    /// Bytes of writable buffer to offer for the response.
    pub response_len: u32,
}

impl Command {
    /// A command of type `ty` with `body` after the header, on the control queue, offering the
    /// response size that type needs.
    pub fn new(ty: u32, body: Vec<u8>) -> Self {
        let response_len = match ty {
            cmd::GET_DISPLAY_INFO => RESP_DISPLAY_INFO_SIZE,
            cmd::GET_CAPSET_INFO => CTRL_HDR_SIZE + 16,
            cmd::GET_CAPSET => CTRL_HDR_SIZE + 4096,
            cmd::GET_EDID => RESP_EDID_SIZE,
            cmd::RESOURCE_ASSIGN_UUID => CTRL_HDR_SIZE + 16,
            cmd::RESOURCE_MAP_BLOB => CTRL_HDR_SIZE + 8,
            // Like Linux, no response buffer for the cursor queue.
            cmd::UPDATE_CURSOR | cmd::MOVE_CURSOR => 0,
            _ => CTRL_HDR_SIZE,
        } as u32;
        let queue = match ty {
            cmd::UPDATE_CURSOR | cmd::MOVE_CURSOR => QueueId::Cursor,
            _ => QueueId::Control,
        };
        Command {
            hdr: CtrlHdr {
                ty,
                ..CtrlHdr::default()
            },
            body,
            queue,
            response_len,
        }
    }

    /// Set FLAG_FENCE with `fence_id`.
    pub fn fenced(mut self, fence_id: u64) -> Self {
        self.hdr.flags |= FLAG_FENCE;
        self.hdr.fence_id = fence_id;
        self
    }

    /// Set FLAG_INFO_RING_IDX with `ring_idx`.
    pub fn ring(mut self, ring_idx: u8) -> Self {
        self.hdr.flags |= FLAG_INFO_RING_IDX;
        self.hdr.ring_idx = ring_idx;
        self
    }

    /// Set the context id.
    pub fn ctx(mut self, ctx_id: u32) -> Self {
        self.hdr.ctx_id = ctx_id;
        self
    }

    /// Send it to another queue (e.g. to test a command on the wrong queue).
    pub fn on_queue(mut self, queue: QueueId) -> Self {
        self.queue = queue;
        self
    }

    /// Offer `len` bytes for the response instead of the default.
    pub fn response_len(mut self, len: u32) -> Self {
        self.response_len = len;
        self
    }

    /// Header and body as the bytes the device reads.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(CTRL_HDR_SIZE + self.body.len());
        self.hdr.encode(&mut out);
        out.extend_from_slice(&self.body);
        out
    }

    /// GET_DISPLAY_INFO.
    pub fn get_display_info() -> Self {
        Self::new(cmd::GET_DISPLAY_INFO, Vec::new())
    }

    /// RESOURCE_CREATE_2D.
    pub fn resource_create_2d(resource_id: u32, format: u32, width: u32, height: u32) -> Self {
        let mut b = Vec::new();
        for v in [resource_id, format, width, height] {
            put32(&mut b, v);
        }
        Self::new(cmd::RESOURCE_CREATE_2D, b)
    }

    /// RESOURCE_UNREF.
    pub fn resource_unref(resource_id: u32) -> Self {
        Self::new(cmd::RESOURCE_UNREF, id_pad(resource_id))
    }

    /// SET_SCANOUT.
    pub fn set_scanout(scanout_id: u32, resource_id: u32, r: Rect) -> Self {
        let mut b = Vec::new();
        put_rect(&mut b, r);
        put32(&mut b, scanout_id);
        put32(&mut b, resource_id);
        Self::new(cmd::SET_SCANOUT, b)
    }

    /// RESOURCE_FLUSH.
    pub fn resource_flush(resource_id: u32, r: Rect) -> Self {
        let mut b = Vec::new();
        put_rect(&mut b, r);
        put32(&mut b, resource_id);
        put32(&mut b, 0);
        Self::new(cmd::RESOURCE_FLUSH, b)
    }

    /// TRANSFER_TO_HOST_2D.
    pub fn transfer_to_host_2d(resource_id: u32, r: Rect, offset: u64) -> Self {
        let mut b = Vec::new();
        put_rect(&mut b, r);
        put64(&mut b, offset);
        put32(&mut b, resource_id);
        put32(&mut b, 0);
        Self::new(cmd::TRANSFER_TO_HOST_2D, b)
    }

    /// RESOURCE_ATTACH_BACKING with the entries inline after the fixed part.
    pub fn attach_backing(resource_id: u32, entries: &[MemEntry]) -> Self {
        Self::attach_backing_raw(resource_id, entries.len() as u32, entries)
    }

    /// RESOURCE_ATTACH_BACKING whose `nr_entries` may disagree with the entries sent.
    pub fn attach_backing_raw(resource_id: u32, nr_entries: u32, entries: &[MemEntry]) -> Self {
        let mut b = Vec::new();
        put32(&mut b, resource_id);
        put32(&mut b, nr_entries);
        put_entries(&mut b, entries);
        Self::new(cmd::RESOURCE_ATTACH_BACKING, b)
    }

    /// RESOURCE_DETACH_BACKING.
    pub fn detach_backing(resource_id: u32) -> Self {
        Self::new(cmd::RESOURCE_DETACH_BACKING, id_pad(resource_id))
    }

    /// GET_CAPSET_INFO.
    pub fn get_capset_info(index: u32) -> Self {
        Self::new(cmd::GET_CAPSET_INFO, id_pad(index))
    }

    /// GET_CAPSET, offering `max_size` bytes of capset data for the response.
    pub fn get_capset(capset_id: u32, version: u32, max_size: u32) -> Self {
        let mut b = Vec::new();
        put32(&mut b, capset_id);
        put32(&mut b, version);
        Self::new(cmd::GET_CAPSET, b).response_len(CTRL_HDR_SIZE as u32 + max_size)
    }

    /// GET_EDID.
    pub fn get_edid(scanout_id: u32) -> Self {
        Self::new(cmd::GET_EDID, id_pad(scanout_id))
    }

    /// RESOURCE_ASSIGN_UUID.
    pub fn assign_uuid(resource_id: u32) -> Self {
        Self::new(cmd::RESOURCE_ASSIGN_UUID, id_pad(resource_id))
    }

    /// RESOURCE_CREATE_BLOB with inline entries.
    pub fn resource_create_blob(
        resource_id: u32,
        blob_mem: u32,
        blob_flags: u32,
        blob_id: u64,
        size: u64,
        entries: &[MemEntry],
    ) -> Self {
        let mut b = Vec::new();
        put32(&mut b, resource_id);
        put32(&mut b, blob_mem);
        put32(&mut b, blob_flags);
        put32(&mut b, entries.len() as u32);
        put64(&mut b, blob_id);
        put64(&mut b, size);
        put_entries(&mut b, entries);
        Self::new(cmd::RESOURCE_CREATE_BLOB, b)
    }

    /// SET_SCANOUT_BLOB.
    #[allow(clippy::too_many_arguments)]
    pub fn set_scanout_blob(
        scanout_id: u32,
        resource_id: u32,
        r: Rect,
        width: u32,
        height: u32,
        format: u32,
        strides: [u32; 4],
        offsets: [u32; 4],
    ) -> Self {
        let mut b = Vec::new();
        put_rect(&mut b, r);
        for v in [scanout_id, resource_id, width, height, format, 0] {
            put32(&mut b, v);
        }
        for v in strides.iter().chain(offsets.iter()) {
            put32(&mut b, *v);
        }
        Self::new(cmd::SET_SCANOUT_BLOB, b)
    }

    /// CTX_CREATE (`context_init` carries the capset id in its low 8 bits).
    pub fn ctx_create(ctx_id: u32, context_init: u32, name: &str) -> Self {
        let name = name.as_bytes();
        let n = name.len().min(64);
        let mut b = Vec::new();
        put32(&mut b, n as u32);
        put32(&mut b, context_init);
        let mut dn = [0u8; 64];
        dn[..n].copy_from_slice(&name[..n]);
        b.extend_from_slice(&dn);
        Self::new(cmd::CTX_CREATE, b).ctx(ctx_id)
    }

    /// CTX_DESTROY.
    pub fn ctx_destroy(ctx_id: u32) -> Self {
        Self::new(cmd::CTX_DESTROY, Vec::new()).ctx(ctx_id)
    }

    /// CTX_ATTACH_RESOURCE.
    pub fn ctx_attach_resource(ctx_id: u32, resource_id: u32) -> Self {
        Self::new(cmd::CTX_ATTACH_RESOURCE, id_pad(resource_id)).ctx(ctx_id)
    }

    /// CTX_DETACH_RESOURCE.
    pub fn ctx_detach_resource(ctx_id: u32, resource_id: u32) -> Self {
        Self::new(cmd::CTX_DETACH_RESOURCE, id_pad(resource_id)).ctx(ctx_id)
    }

    /// RESOURCE_CREATE_3D.
    pub fn resource_create_3d(resource_id: u32, p: &Resource3d) -> Self {
        let mut b = Vec::new();
        for v in [
            resource_id,
            p.target,
            p.format,
            p.bind,
            p.width,
            p.height,
            p.depth,
            p.array_size,
            p.last_level,
            p.nr_samples,
            p.flags,
            0,
        ] {
            put32(&mut b, v);
        }
        Self::new(cmd::RESOURCE_CREATE_3D, b)
    }

    /// TRANSFER_TO_HOST_3D.
    pub fn transfer_to_host_3d(ctx_id: u32, resource_id: u32, t: &Transfer3d) -> Self {
        Self::new(cmd::TRANSFER_TO_HOST_3D, transfer3d_body(resource_id, t)).ctx(ctx_id)
    }

    /// TRANSFER_FROM_HOST_3D.
    pub fn transfer_from_host_3d(ctx_id: u32, resource_id: u32, t: &Transfer3d) -> Self {
        Self::new(cmd::TRANSFER_FROM_HOST_3D, transfer3d_body(resource_id, t)).ctx(ctx_id)
    }

    /// SUBMIT_3D with a command stream (`size` = stream length).
    pub fn submit_3d(ctx_id: u32, stream: &[u8]) -> Self {
        Self::submit_3d_raw(ctx_id, stream.len() as u32, stream)
    }

    /// SUBMIT_3D whose `size` field may disagree with the stream sent.
    pub fn submit_3d_raw(ctx_id: u32, size: u32, stream: &[u8]) -> Self {
        let mut b = Vec::new();
        put32(&mut b, size);
        put32(&mut b, 0);
        b.extend_from_slice(stream);
        Self::new(cmd::SUBMIT_3D, b).ctx(ctx_id)
    }

    /// RESOURCE_MAP_BLOB.
    pub fn resource_map_blob(resource_id: u32, offset: u64) -> Self {
        let mut b = id_pad(resource_id);
        put64(&mut b, offset);
        Self::new(cmd::RESOURCE_MAP_BLOB, b)
    }

    /// RESOURCE_UNMAP_BLOB.
    pub fn resource_unmap_blob(resource_id: u32) -> Self {
        Self::new(cmd::RESOURCE_UNMAP_BLOB, id_pad(resource_id))
    }

    /// UPDATE_CURSOR (cursor queue).
    pub fn update_cursor(
        scanout_id: u32,
        x: u32,
        y: u32,
        resource_id: u32,
        hot: (u32, u32),
    ) -> Self {
        Self::new(
            cmd::UPDATE_CURSOR,
            cursor_body(scanout_id, x, y, resource_id, hot),
        )
    }

    /// MOVE_CURSOR (cursor queue). Like Linux, the driver repeats the current cursor's
    /// `resource_id` (QEMU's backend hides the cursor on a move with resource 0).
    pub fn move_cursor(scanout_id: u32, x: u32, y: u32, resource_id: u32) -> Self {
        Self::new(
            cmd::MOVE_CURSOR,
            cursor_body(scanout_id, x, y, resource_id, (0, 0)),
        )
    }
}

/// Parameters of RESOURCE_CREATE_3D.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Resource3d {
    /// Gallium `pipe_texture_target` (2 = PIPE_TEXTURE_2D).
    pub target: u32,
    /// virtio-gpu / virgl format.
    pub format: u32,
    /// Gallium bind flags.
    pub bind: u32,
    #[allow(missing_docs)]
    pub width: u32,
    #[allow(missing_docs)]
    pub height: u32,
    #[allow(missing_docs)]
    pub depth: u32,
    #[allow(missing_docs)]
    pub array_size: u32,
    #[allow(missing_docs)]
    pub last_level: u32,
    #[allow(missing_docs)]
    pub nr_samples: u32,
    /// RESOURCE_FLAG_Y_0_TOP.
    pub flags: u32,
}

/// Parameters of TRANSFER_TO/FROM_HOST_3D.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Transfer3d {
    /// Box.
    pub bx: Box3d,
    /// Offset in the backing.
    pub offset: u64,
    /// Mip level.
    pub level: u32,
    /// Row stride in the backing (0 = tightly packed).
    pub stride: u32,
    /// Layer stride in the backing.
    pub layer_stride: u32,
}

fn transfer3d_body(resource_id: u32, t: &Transfer3d) -> Vec<u8> {
    let mut b = Vec::new();
    for v in [t.bx.x, t.bx.y, t.bx.z, t.bx.w, t.bx.h, t.bx.d] {
        put32(&mut b, v);
    }
    put64(&mut b, t.offset);
    for v in [resource_id, t.level, t.stride, t.layer_stride] {
        put32(&mut b, v);
    }
    b
}

fn cursor_body(scanout_id: u32, x: u32, y: u32, resource_id: u32, hot: (u32, u32)) -> Vec<u8> {
    let mut b = Vec::new();
    for v in [scanout_id, x, y, 0, resource_id, hot.0, hot.1, 0] {
        put32(&mut b, v);
    }
    b
}

fn id_pad(id: u32) -> Vec<u8> {
    let mut b = Vec::new();
    put32(&mut b, id);
    put32(&mut b, 0);
    b
}

fn put_entries(b: &mut Vec<u8>, entries: &[MemEntry]) {
    for e in entries {
        put64(b, e.addr);
        put32(b, e.length);
        put32(b, 0);
    }
}

/// One scanout of OK_DISPLAY_INFO.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DisplayMode {
    /// The rectangle.
    pub rect: Rect,
    /// Non-zero when enabled.
    pub enabled: u32,
    /// Flags.
    pub flags: u32,
}

/// OK_CAPSET_INFO payload.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CapsetInfo {
    /// Capset id.
    pub capset_id: u32,
    /// Highest version.
    pub max_version: u32,
    /// Size of the capset data.
    pub max_size: u32,
}

/// What the device wrote for one chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// The parsed header (all zero when fewer than 24 bytes were written).
    pub hdr: CtrlHdr,
    /// The bytes written, `used_len` long (or the whole writable area if `used_len` is larger).
    pub bytes: Vec<u8>,
    /// The length the device put in the used ring.
    pub used_len: u32,
}

impl Response {
    /// Build from the writable bytes and the used length.
    pub fn from_bytes(mut bytes: Vec<u8>, used_len: u32) -> Self {
        if (used_len as usize) < bytes.len() {
            bytes.truncate(used_len as usize);
        }
        let hdr = CtrlHdr::decode(&bytes).unwrap_or_default();
        Response {
            hdr,
            bytes,
            used_len,
        }
    }

    /// The response type.
    pub fn ty(&self) -> u32 {
        self.hdr.ty
    }

    /// Everything after the header.
    pub fn payload(&self) -> &[u8] {
        self.bytes.get(CTRL_HDR_SIZE..).unwrap_or(&[])
    }

    /// Fail unless the type is `ty`.
    pub fn expect_type(&self, ty: u32) -> Result<&Self> {
        if self.hdr.ty == ty {
            Ok(self)
        } else {
            Err(Error::UnexpectedResponse {
                expected: format!("{} ({ty:#x})", type_name(ty)),
                got: self.describe(),
            })
        }
    }

    /// A one-line description for messages.
    pub fn describe(&self) -> String {
        format!(
            "{} ({:#x}) flags {:#x} fence {} ctx {} ring {} used_len {}",
            type_name(self.hdr.ty),
            self.hdr.ty,
            self.hdr.flags,
            self.hdr.fence_id,
            self.hdr.ctx_id,
            self.hdr.ring_idx,
            self.used_len
        )
    }

    /// Parse OK_DISPLAY_INFO.
    pub fn display_info(&self) -> Result<Vec<DisplayMode>> {
        self.expect_type(resp::OK_DISPLAY_INFO)?;
        self.expect_len(RESP_DISPLAY_INFO_SIZE)?;
        let p = self.payload();
        Ok((0..MAX_SCANOUTS)
            .map(|i| {
                let o = i * 24;
                DisplayMode {
                    rect: Rect::new(
                        get32(p, o),
                        get32(p, o + 4),
                        get32(p, o + 8),
                        get32(p, o + 12),
                    ),
                    enabled: get32(p, o + 16),
                    flags: get32(p, o + 20),
                }
            })
            .collect())
    }

    /// Parse OK_CAPSET_INFO.
    pub fn capset_info(&self) -> Result<CapsetInfo> {
        self.expect_type(resp::OK_CAPSET_INFO)?;
        self.expect_len(CTRL_HDR_SIZE + 16)?;
        let p = self.payload();
        Ok(CapsetInfo {
            capset_id: get32(p, 0),
            max_version: get32(p, 4),
            max_size: get32(p, 8),
        })
    }

    /// Parse OK_EDID: the EDID bytes (`size` long).
    pub fn edid(&self) -> Result<Vec<u8>> {
        self.expect_type(resp::OK_EDID)?;
        self.expect_len(RESP_EDID_SIZE)?;
        let p = self.payload();
        let size = get32(p, 0) as usize;
        if size > 1024 {
            return Err(Error::Malformed(format!("EDID size {size} > 1024")));
        }
        Ok(p[8..8 + size].to_vec())
    }

    /// Parse OK_RESOURCE_UUID.
    pub fn uuid(&self) -> Result<[u8; 16]> {
        self.expect_type(resp::OK_RESOURCE_UUID)?;
        self.expect_len(CTRL_HDR_SIZE + 16)?;
        let mut u = [0u8; 16];
        u.copy_from_slice(&self.payload()[..16]);
        Ok(u)
    }

    /// Parse OK_MAP_INFO: the map_info word.
    pub fn map_info(&self) -> Result<u32> {
        self.expect_type(resp::OK_MAP_INFO)?;
        self.expect_len(CTRL_HDR_SIZE + 8)?;
        Ok(get32(self.payload(), 0))
    }

    /// Fail unless at least `len` bytes were written.
    pub fn expect_len(&self, len: usize) -> Result<()> {
        if self.bytes.len() < len {
            return Err(Error::Malformed(format!(
                "{}: {} bytes written, {len} expected",
                self.describe(),
                self.bytes.len()
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_sizes_match_the_spec() {
        let sizes = [
            (Command::get_display_info(), 24),
            (Command::resource_create_2d(1, 1, 1, 1), 40),
            (Command::resource_unref(1), 32),
            (Command::set_scanout(0, 1, Rect::default()), 48),
            (Command::resource_flush(1, Rect::default()), 48),
            (Command::transfer_to_host_2d(1, Rect::default(), 0), 56),
            (Command::attach_backing(1, &[]), 32),
            (Command::detach_backing(1), 32),
            (Command::get_capset_info(0), 32),
            (Command::get_capset(1, 1, 0), 32),
            (Command::get_edid(0), 32),
            (Command::assign_uuid(1), 32),
            (Command::resource_create_blob(1, 1, 0, 0, 0, &[]), 56),
            (
                Command::set_scanout_blob(0, 1, Rect::default(), 0, 0, 0, [0; 4], [0; 4]),
                96,
            ),
            (Command::ctx_create(1, 0, "x"), 96),
            (Command::ctx_destroy(1), 24),
            (Command::ctx_attach_resource(1, 1), 32),
            (Command::ctx_detach_resource(1, 1), 32),
            (Command::resource_create_3d(1, &Resource3d::default()), 72),
            (
                Command::transfer_to_host_3d(1, 1, &Transfer3d::default()),
                72,
            ),
            (
                Command::transfer_from_host_3d(1, 1, &Transfer3d::default()),
                72,
            ),
            (Command::submit_3d(1, &[]), 32),
            (Command::resource_map_blob(1, 0), 40),
            (Command::resource_unmap_blob(1), 32),
            (Command::update_cursor(0, 0, 0, 1, (0, 0)), 56),
            (Command::move_cursor(0, 0, 0, 0), 56),
        ];
        for (c, size) in sizes {
            assert_eq!(c.to_bytes().len(), size, "{}", type_name(c.hdr.ty));
        }
        assert_eq!(
            Command::attach_backing(1, &[MemEntry { addr: 1, length: 2 }])
                .to_bytes()
                .len(),
            48
        );
    }

    #[test]
    fn header_round_trip() {
        let c = Command::resource_unref(7)
            .fenced(0x1_0000_0002)
            .ring(5)
            .ctx(9);
        let h = CtrlHdr::decode(&c.to_bytes()).unwrap();
        assert_eq!(h.flags, FLAG_FENCE | FLAG_INFO_RING_IDX);
        assert_eq!(h.fence_id, 0x1_0000_0002);
        assert_eq!(h.ring_idx, 5);
        assert_eq!(h.ctx_id, 9);
        assert_eq!(c.queue, QueueId::Control);
        assert_eq!(Command::move_cursor(0, 1, 2, 0).queue, QueueId::Cursor);
    }
}
