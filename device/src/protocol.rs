//! The virtio-gpu wire protocol: constants, wire structs, the request decoder and the response
//! encoder.
//!
//! # Descriptor layout
//!
//! A request is one descriptor chain: first the device-readable descriptors holding the request
//! (`virtio_gpu_ctrl_hdr` followed by the command's body, and for ATTACH_BACKING /
//! CREATE_BLOB the `virtio_gpu_mem_entry` array, for SUBMIT_3D the command stream), then the
//! device-writable descriptors receiving the response. [`split_chain`] checks that order over the
//! whole chain before anything is read (a readable descriptor after a writable one is refused),
//! and [`decode_command`] reads the header and body, checking every count and size against the
//! bounds below, so that the device logic (`gpu/`) only ever sees a typed, bounded
//! [`GpuCommand`].
//!
//! # Which error for which malformation
//!
//! * A request too short for its header or body, an unknown command type or a broken chain
//!   (readable after writable descriptors) gets `VIRTIO_GPU_RESP_ERR_UNSPEC`, as QEMU answers
//!   a short read; the spec names no better code for "this is not a request".
//! * A well-formed request carrying a value outside a bound (too many backing entries, a
//!   SUBMIT_3D larger than [`MAX_SUBMIT_3D_SIZE`], a ring index >= 64, a debug name longer than
//!   64 bytes) gets `VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER`.
//! * A response buffer smaller than the response: nothing can be delivered; the device writes an
//!   ERR_UNSPEC header if at least a header fits (see `write_response` in `gpu/mod.rs`).
//!
//! # SUBMIT_3D's `padding`
//!
//! crosvm and rutabaga reinterpret the `padding` field after `size` as `num_in_fences`,
//! followed by that many u64 fence ids. That is not in the spec; here the field is padding as
//! the spec says, and the command stream starts right after the 32-byte request. A non-zero value
//! is logged and ignored.

use std::io::Read;
use std::mem::size_of;
use std::ops::Deref;

use log::debug;
use virtio_queue::{DescriptorChain, Reader, Writer};
use vm_memory::{ByteValued, GuestMemoryMmap, Le32, Le64};

pub use virtio_bindings::virtio_gpu::{
    VIRTIO_GPU_BLOB_FLAG_USE_CROSS_DEVICE, VIRTIO_GPU_BLOB_FLAG_USE_MAPPABLE,
    VIRTIO_GPU_BLOB_FLAG_USE_SHAREABLE, VIRTIO_GPU_BLOB_MEM_GUEST, VIRTIO_GPU_BLOB_MEM_HOST3D,
    VIRTIO_GPU_BLOB_MEM_HOST3D_GUEST, VIRTIO_GPU_CAPSET_CROSS_DOMAIN, VIRTIO_GPU_CAPSET_DRM,
    VIRTIO_GPU_CAPSET_GFXSTREAM_VULKAN, VIRTIO_GPU_CAPSET_VENUS, VIRTIO_GPU_CAPSET_VIRGL,
    VIRTIO_GPU_CAPSET_VIRGL2, VIRTIO_GPU_CONTEXT_INIT_CAPSET_ID_MASK, VIRTIO_GPU_EVENT_DISPLAY,
    VIRTIO_GPU_FLAG_FENCE, VIRTIO_GPU_FLAG_INFO_RING_IDX, VIRTIO_GPU_F_CONTEXT_INIT,
    VIRTIO_GPU_F_EDID, VIRTIO_GPU_F_RESOURCE_BLOB, VIRTIO_GPU_F_RESOURCE_UUID, VIRTIO_GPU_F_VIRGL,
    VIRTIO_GPU_MAP_CACHE_CACHED, VIRTIO_GPU_MAP_CACHE_MASK, VIRTIO_GPU_MAP_CACHE_NONE,
    VIRTIO_GPU_MAP_CACHE_UNCACHED, VIRTIO_GPU_MAP_CACHE_WC, VIRTIO_GPU_MAX_SCANOUTS,
    VIRTIO_GPU_RESOURCE_FLAG_Y_0_TOP,
};

// Command types (spec 5.7.6.7, `enum virtio_gpu_ctrl_type`).
/// GET_DISPLAY_INFO.
pub const VIRTIO_GPU_CMD_GET_DISPLAY_INFO: u32 = 0x0100;
/// RESOURCE_CREATE_2D.
pub const VIRTIO_GPU_CMD_RESOURCE_CREATE_2D: u32 = 0x0101;
/// RESOURCE_UNREF.
pub const VIRTIO_GPU_CMD_RESOURCE_UNREF: u32 = 0x0102;
/// SET_SCANOUT.
pub const VIRTIO_GPU_CMD_SET_SCANOUT: u32 = 0x0103;
/// RESOURCE_FLUSH.
pub const VIRTIO_GPU_CMD_RESOURCE_FLUSH: u32 = 0x0104;
/// TRANSFER_TO_HOST_2D.
pub const VIRTIO_GPU_CMD_TRANSFER_TO_HOST_2D: u32 = 0x0105;
/// RESOURCE_ATTACH_BACKING.
pub const VIRTIO_GPU_CMD_RESOURCE_ATTACH_BACKING: u32 = 0x0106;
/// RESOURCE_DETACH_BACKING.
pub const VIRTIO_GPU_CMD_RESOURCE_DETACH_BACKING: u32 = 0x0107;
/// GET_CAPSET_INFO.
pub const VIRTIO_GPU_CMD_GET_CAPSET_INFO: u32 = 0x0108;
/// GET_CAPSET.
pub const VIRTIO_GPU_CMD_GET_CAPSET: u32 = 0x0109;
/// GET_EDID.
pub const VIRTIO_GPU_CMD_GET_EDID: u32 = 0x010a;
/// RESOURCE_ASSIGN_UUID.
pub const VIRTIO_GPU_CMD_RESOURCE_ASSIGN_UUID: u32 = 0x010b;
/// RESOURCE_CREATE_BLOB.
pub const VIRTIO_GPU_CMD_RESOURCE_CREATE_BLOB: u32 = 0x010c;
/// SET_SCANOUT_BLOB.
pub const VIRTIO_GPU_CMD_SET_SCANOUT_BLOB: u32 = 0x010d;
/// CTX_CREATE.
pub const VIRTIO_GPU_CMD_CTX_CREATE: u32 = 0x0200;
/// CTX_DESTROY.
pub const VIRTIO_GPU_CMD_CTX_DESTROY: u32 = 0x0201;
/// CTX_ATTACH_RESOURCE.
pub const VIRTIO_GPU_CMD_CTX_ATTACH_RESOURCE: u32 = 0x0202;
/// CTX_DETACH_RESOURCE.
pub const VIRTIO_GPU_CMD_CTX_DETACH_RESOURCE: u32 = 0x0203;
/// RESOURCE_CREATE_3D.
pub const VIRTIO_GPU_CMD_RESOURCE_CREATE_3D: u32 = 0x0204;
/// TRANSFER_TO_HOST_3D.
pub const VIRTIO_GPU_CMD_TRANSFER_TO_HOST_3D: u32 = 0x0205;
/// TRANSFER_FROM_HOST_3D.
pub const VIRTIO_GPU_CMD_TRANSFER_FROM_HOST_3D: u32 = 0x0206;
/// SUBMIT_3D.
pub const VIRTIO_GPU_CMD_SUBMIT_3D: u32 = 0x0207;
/// RESOURCE_MAP_BLOB.
pub const VIRTIO_GPU_CMD_RESOURCE_MAP_BLOB: u32 = 0x0208;
/// RESOURCE_UNMAP_BLOB.
pub const VIRTIO_GPU_CMD_RESOURCE_UNMAP_BLOB: u32 = 0x0209;
/// UPDATE_CURSOR (cursorq).
pub const VIRTIO_GPU_CMD_UPDATE_CURSOR: u32 = 0x0300;
/// MOVE_CURSOR (cursorq).
pub const VIRTIO_GPU_CMD_MOVE_CURSOR: u32 = 0x0301;

// Response types.
/// Success without data.
pub const VIRTIO_GPU_RESP_OK_NODATA: u32 = 0x1100;
/// Success with `virtio_gpu_resp_display_info`.
pub const VIRTIO_GPU_RESP_OK_DISPLAY_INFO: u32 = 0x1101;
/// Success with `virtio_gpu_resp_capset_info`.
pub const VIRTIO_GPU_RESP_OK_CAPSET_INFO: u32 = 0x1102;
/// Success with capset data.
pub const VIRTIO_GPU_RESP_OK_CAPSET: u32 = 0x1103;
/// Success with `virtio_gpu_resp_edid`.
pub const VIRTIO_GPU_RESP_OK_EDID: u32 = 0x1104;
/// Success with `virtio_gpu_resp_resource_uuid`.
pub const VIRTIO_GPU_RESP_OK_RESOURCE_UUID: u32 = 0x1105;
/// Success with `virtio_gpu_resp_map_info`.
pub const VIRTIO_GPU_RESP_OK_MAP_INFO: u32 = 0x1106;
/// Unspecified error.
pub const VIRTIO_GPU_RESP_ERR_UNSPEC: u32 = 0x1200;
/// Out of (host) memory.
pub const VIRTIO_GPU_RESP_ERR_OUT_OF_MEMORY: u32 = 0x1201;
/// Invalid scanout id.
pub const VIRTIO_GPU_RESP_ERR_INVALID_SCANOUT_ID: u32 = 0x1202;
/// Invalid resource id.
pub const VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID: u32 = 0x1203;
/// Invalid context id.
pub const VIRTIO_GPU_RESP_ERR_INVALID_CONTEXT_ID: u32 = 0x1204;
/// Invalid parameter.
pub const VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER: u32 = 0x1205;

// Formats (`enum virtio_gpu_formats`).
/// B8G8R8A8_UNORM.
pub const VIRTIO_GPU_FORMAT_B8G8R8A8_UNORM: u32 = 1;
/// B8G8R8X8_UNORM.
pub const VIRTIO_GPU_FORMAT_B8G8R8X8_UNORM: u32 = 2;
/// A8R8G8B8_UNORM.
pub const VIRTIO_GPU_FORMAT_A8R8G8B8_UNORM: u32 = 3;
/// X8R8G8B8_UNORM.
pub const VIRTIO_GPU_FORMAT_X8R8G8B8_UNORM: u32 = 4;
/// R8G8B8A8_UNORM.
pub const VIRTIO_GPU_FORMAT_R8G8B8A8_UNORM: u32 = 67;
/// X8B8G8R8_UNORM.
pub const VIRTIO_GPU_FORMAT_X8B8G8R8_UNORM: u32 = 68;
/// A8B8G8R8_UNORM.
pub const VIRTIO_GPU_FORMAT_A8B8G8R8_UNORM: u32 = 121;
/// R8G8B8X8_UNORM.
pub const VIRTIO_GPU_FORMAT_R8G8B8X8_UNORM: u32 = 134;

/// The shared memory id of the host-visible region (`VIRTIO_GPU_SHM_ID_HOST_VISIBLE`).
pub const VIRTIO_GPU_SHM_ID_HOST_VISIBLE: u8 = 1;

// The bounds of guest-supplied counts and sizes this decoder enforces (one value each, with
// their reasons, in `limits.rs`).
pub use crate::limits::{MAX_BACKING_ENTRIES, MAX_CAPSET_SIZE, MAX_RINGS, MAX_SUBMIT_3D_SIZE};

/// Size of the EDID blob inside `virtio_gpu_resp_edid`.
pub const EDID_BLOB_SIZE: usize = 1024;

/// Size of `virtio_gpu_ctx_create::debug_name`.
pub const CTX_DEBUG_NAME_SIZE: usize = 64;

// ---------------------------------------------------------------------------------------------
// Wire structs. All fields are little endian (`Le32`/`Le64`, alignment 1 for the purposes of
// `ByteValued`: they are plain integers of their size). Each struct is `repr(C)` and its fields
// are laid out so that no implicit padding exists; the explicit `padding` fields of the spec are
// part of the struct. Sizes are pinned by tests below.
// ---------------------------------------------------------------------------------------------

/// `struct virtio_gpu_ctrl_hdr` (24 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CtrlHdrWire {
    /// Command or response type.
    pub type_: Le32,
    /// `VIRTIO_GPU_FLAG_*`.
    pub flags: Le32,
    /// Fence id.
    pub fence_id: Le64,
    /// Context id.
    pub ctx_id: Le32,
    /// Ring index (with `VIRTIO_GPU_FLAG_INFO_RING_IDX`).
    pub ring_idx: u8,
    /// Padding.
    pub padding: [u8; 3],
}
// SAFETY: repr(C); 4+4+8+4+1+3 bytes with the u64 at offset 8: no implicit padding, and every
// bit pattern is a valid value of each integer field.
unsafe impl ByteValued for CtrlHdrWire {}

/// `struct virtio_gpu_rect` (16 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RectWire {
    /// X.
    pub x: Le32,
    /// Y.
    pub y: Le32,
    /// Width.
    pub width: Le32,
    /// Height.
    pub height: Le32,
}
// SAFETY: repr(C), four 4-byte integers: no padding, every bit pattern valid.
unsafe impl ByteValued for RectWire {}

/// `struct virtio_gpu_resource_create_2d` without its header.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ResourceCreate2dWire {
    /// Resource id.
    pub resource_id: Le32,
    /// `VIRTIO_GPU_FORMAT_*`.
    pub format: Le32,
    /// Width.
    pub width: Le32,
    /// Height.
    pub height: Le32,
}
// SAFETY: repr(C), 4-byte integers only: no padding, every bit pattern valid.
unsafe impl ByteValued for ResourceCreate2dWire {}

/// The `{ le32 resource_id; le32 padding; }` body shared by RESOURCE_UNREF,
/// RESOURCE_DETACH_BACKING, RESOURCE_ASSIGN_UUID, CTX_ATTACH/DETACH_RESOURCE and
/// RESOURCE_UNMAP_BLOB; also GET_CAPSET_INFO's `{capset_index, padding}`, GET_CAPSET's
/// `{capset_id, capset_version}` and GET_EDID's `{scanout, padding}`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct IdPairWire {
    /// First field (resource id, capset index/id, scanout).
    pub first: Le32,
    /// Second field (padding, or capset version).
    pub second: Le32,
}
// SAFETY: repr(C), two 4-byte integers: no padding, every bit pattern valid.
unsafe impl ByteValued for IdPairWire {}

/// `struct virtio_gpu_set_scanout` without its header.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SetScanoutWire {
    /// Rectangle of the resource shown.
    pub r: RectWire,
    /// Scanout id.
    pub scanout_id: Le32,
    /// Resource id (0 disables the scanout).
    pub resource_id: Le32,
}
// SAFETY: repr(C), 4-byte integers only: no padding, every bit pattern valid.
unsafe impl ByteValued for SetScanoutWire {}

/// `struct virtio_gpu_resource_flush` without its header.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ResourceFlushWire {
    /// Damaged rectangle.
    pub r: RectWire,
    /// Resource id.
    pub resource_id: Le32,
    /// Padding.
    pub padding: Le32,
}
// SAFETY: repr(C), 4-byte integers only: no padding, every bit pattern valid.
unsafe impl ByteValued for ResourceFlushWire {}

/// `struct virtio_gpu_transfer_to_host_2d` without its header.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct TransferToHost2dWire {
    /// Rectangle.
    pub r: RectWire,
    /// Byte offset of the rectangle's first pixel in the backing.
    pub offset: Le64,
    /// Resource id.
    pub resource_id: Le32,
    /// Padding.
    pub padding: Le32,
}
// SAFETY: repr(C); the 16-byte rect is followed by the u64 at offset 16 and two u32: no
// implicit padding, every bit pattern valid.
unsafe impl ByteValued for TransferToHost2dWire {}

/// `struct virtio_gpu_resource_attach_backing` without its header.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct AttachBackingWire {
    /// Resource id.
    pub resource_id: Le32,
    /// Number of `virtio_gpu_mem_entry` that follow.
    pub nr_entries: Le32,
}
// SAFETY: repr(C), two 4-byte integers: no padding, every bit pattern valid.
unsafe impl ByteValued for AttachBackingWire {}

/// `struct virtio_gpu_mem_entry` (16 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct MemEntryWire {
    /// Guest physical address.
    pub addr: Le64,
    /// Length in bytes.
    pub length: Le32,
    /// Padding.
    pub padding: Le32,
}
// SAFETY: repr(C), u64 then two u32: no implicit padding, every bit pattern valid.
unsafe impl ByteValued for MemEntryWire {}

/// `struct virtio_gpu_resource_create_blob` without its header.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct CreateBlobWire {
    /// Resource id.
    pub resource_id: Le32,
    /// `VIRTIO_GPU_BLOB_MEM_*`.
    pub blob_mem: Le32,
    /// `VIRTIO_GPU_BLOB_FLAG_*`.
    pub blob_flags: Le32,
    /// Number of `virtio_gpu_mem_entry` that follow.
    pub nr_entries: Le32,
    /// Context-local blob id.
    pub blob_id: Le64,
    /// Size in bytes.
    pub size: Le64,
}
// SAFETY: repr(C), four u32 then two u64 at offsets 16 and 24: no padding, every bit pattern
// valid.
unsafe impl ByteValued for CreateBlobWire {}

/// `struct virtio_gpu_set_scanout_blob` without its header.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SetScanoutBlobWire {
    /// Rectangle of the image shown.
    pub r: RectWire,
    /// Scanout id.
    pub scanout_id: Le32,
    /// Resource id.
    pub resource_id: Le32,
    /// Image width.
    pub width: Le32,
    /// Image height.
    pub height: Le32,
    /// `VIRTIO_GPU_FORMAT_*`.
    pub format: Le32,
    /// Padding.
    pub padding: Le32,
    /// Plane strides.
    pub strides: [Le32; 4],
    /// Plane offsets.
    pub offsets: [Le32; 4],
}
// SAFETY: repr(C), 4-byte integers only: no padding, every bit pattern valid.
unsafe impl ByteValued for SetScanoutBlobWire {}

/// `struct virtio_gpu_ctx_create` without its header.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct CtxCreateWire {
    /// Length of the debug name.
    pub nlen: Le32,
    /// Low 8 bits: the capset id (CONTEXT_INIT).
    pub context_init: Le32,
    /// Debug name.
    pub debug_name: [u8; CTX_DEBUG_NAME_SIZE],
}
impl Default for CtxCreateWire {
    fn default() -> Self {
        CtxCreateWire {
            nlen: Le32::default(),
            context_init: Le32::default(),
            debug_name: [0; CTX_DEBUG_NAME_SIZE],
        }
    }
}
// SAFETY: repr(C), two u32 then 64 bytes: no padding, every bit pattern valid.
unsafe impl ByteValued for CtxCreateWire {}

/// `struct virtio_gpu_resource_create_3d` without its header.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ResourceCreate3dWire {
    /// Resource id.
    pub resource_id: Le32,
    /// Target.
    pub target: Le32,
    /// Format.
    pub format: Le32,
    /// Bind flags.
    pub bind: Le32,
    /// Width.
    pub width: Le32,
    /// Height.
    pub height: Le32,
    /// Depth.
    pub depth: Le32,
    /// Array size.
    pub array_size: Le32,
    /// Last level.
    pub last_level: Le32,
    /// Samples.
    pub nr_samples: Le32,
    /// Flags.
    pub flags: Le32,
    /// Padding.
    pub padding: Le32,
}
// SAFETY: repr(C), 4-byte integers only: no padding, every bit pattern valid.
unsafe impl ByteValued for ResourceCreate3dWire {}

/// `struct virtio_gpu_box` (24 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct BoxWire {
    /// X.
    pub x: Le32,
    /// Y.
    pub y: Le32,
    /// Z.
    pub z: Le32,
    /// Width.
    pub w: Le32,
    /// Height.
    pub h: Le32,
    /// Depth.
    pub d: Le32,
}
// SAFETY: repr(C), 4-byte integers only: no padding, every bit pattern valid.
unsafe impl ByteValued for BoxWire {}

/// `struct virtio_gpu_transfer_host_3d` without its header.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct TransferHost3dWire {
    /// Box.
    pub box_: BoxWire,
    /// Byte offset into the backing.
    pub offset: Le64,
    /// Resource id.
    pub resource_id: Le32,
    /// Mip level.
    pub level: Le32,
    /// Stride.
    pub stride: Le32,
    /// Layer stride.
    pub layer_stride: Le32,
}
// SAFETY: repr(C); the 24-byte box puts the u64 at offset 24, then four u32: no padding,
// every bit pattern valid.
unsafe impl ByteValued for TransferHost3dWire {}

/// `struct virtio_gpu_resource_map_blob` without its header.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct MapBlobWire {
    /// Resource id.
    pub resource_id: Le32,
    /// Padding.
    pub padding: Le32,
    /// Offset in the host-visible region.
    pub offset: Le64,
}
// SAFETY: repr(C), two u32 then a u64 at offset 8: no padding, every bit pattern valid.
unsafe impl ByteValued for MapBlobWire {}

/// `struct virtio_gpu_update_cursor` without its header (cursor_pos + resource + hotspot).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct UpdateCursorWire {
    /// `cursor_pos.scanout_id`.
    pub scanout_id: Le32,
    /// `cursor_pos.x`.
    pub x: Le32,
    /// `cursor_pos.y`.
    pub y: Le32,
    /// `cursor_pos.padding`.
    pub pos_padding: Le32,
    /// Resource id (0 hides the cursor).
    pub resource_id: Le32,
    /// Hotspot x.
    pub hot_x: Le32,
    /// Hotspot y.
    pub hot_y: Le32,
    /// Padding.
    pub padding: Le32,
}
// SAFETY: repr(C), 4-byte integers only: no padding, every bit pattern valid.
unsafe impl ByteValued for UpdateCursorWire {}

/// `struct virtio_gpu_display_one` (24 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct DisplayOneWire {
    /// Rectangle.
    pub r: RectWire,
    /// Enabled.
    pub enabled: Le32,
    /// Flags.
    pub flags: Le32,
}
// SAFETY: repr(C), 4-byte integers only: no padding, every bit pattern valid.
unsafe impl ByteValued for DisplayOneWire {}

/// `struct virtio_gpu_resp_capset_info` without its header.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct CapsetInfoWire {
    /// Capset id.
    pub capset_id: Le32,
    /// Max version.
    pub capset_max_version: Le32,
    /// Max size.
    pub capset_max_size: Le32,
    /// Padding.
    pub padding: Le32,
}
// SAFETY: repr(C), 4-byte integers only: no padding, every bit pattern valid.
unsafe impl ByteValued for CapsetInfoWire {}

/// `struct virtio_gpu_config` as of virtio 1.4 (20 bytes). `blob_alignment` is valid only with
/// `VIRTIO_GPU_F_BLOB_ALIGNMENT`, which the device does not offer: it reads as 0. Frontends
/// built on the 1.4 layout (QEMU 11.1's vhost-user-gpu-pci) read all 20 bytes and leave the
/// whole config zeroed when GET_CONFIG refuses that size.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ConfigWire {
    /// Pending events.
    pub events_read: Le32,
    /// Events to clear (write-only for the driver).
    pub events_clear: Le32,
    /// Number of scanouts.
    pub num_scanouts: Le32,
    /// Number of capsets.
    pub num_capsets: Le32,
    /// Blob alignment (BLOB_ALIGNMENT only; 0 here).
    pub blob_alignment: Le32,
}
// SAFETY: repr(C), 4-byte integers only: no padding, every bit pattern valid.
unsafe impl ByteValued for ConfigWire {}

/// Size of the control header.
pub const CTRL_HDR_SIZE: usize = size_of::<CtrlHdrWire>();
/// Size of `virtio_gpu_resp_display_info`.
pub const RESP_DISPLAY_INFO_SIZE: usize =
    CTRL_HDR_SIZE + VIRTIO_GPU_MAX_SCANOUTS as usize * size_of::<DisplayOneWire>();
/// Size of `virtio_gpu_resp_capset_info`.
pub const RESP_CAPSET_INFO_SIZE: usize = CTRL_HDR_SIZE + size_of::<CapsetInfoWire>();
/// Size of `virtio_gpu_resp_edid`.
pub const RESP_EDID_SIZE: usize = CTRL_HDR_SIZE + 8 + EDID_BLOB_SIZE;
/// Size of `virtio_gpu_resp_resource_uuid`.
pub const RESP_RESOURCE_UUID_SIZE: usize = CTRL_HDR_SIZE + 16;
/// Size of `virtio_gpu_resp_map_info`.
pub const RESP_MAP_INFO_SIZE: usize = CTRL_HDR_SIZE + 8;

// ---------------------------------------------------------------------------------------------
// Decoded (host-endian) types.
// ---------------------------------------------------------------------------------------------

/// A rectangle (`virtio_gpu_rect`), host endian.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Rect {
    /// X.
    pub x: u32,
    /// Y.
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

    fn from_wire(w: &RectWire) -> Self {
        Rect::new(
            w.x.to_native(),
            w.y.to_native(),
            w.width.to_native(),
            w.height.to_native(),
        )
    }

    /// Whether the rectangle has no pixels.
    pub fn is_empty(&self) -> bool {
        self.width == 0 || self.height == 0
    }

    /// Whether the rectangle lies inside a `width` x `height` area (checked arithmetic: a
    /// rectangle whose end overflows u32 is not inside anything).
    pub fn is_inside(&self, width: u32, height: u32) -> bool {
        matches!(self.x.checked_add(self.width), Some(r) if r <= width)
            && matches!(self.y.checked_add(self.height), Some(b) if b <= height)
    }

    /// The intersection of two rectangles, `None` when it is empty. Works on rectangles whose
    /// end would overflow u32 (computed in u64).
    pub fn intersect(&self, other: &Rect) -> Option<Rect> {
        let x0 = self.x.max(other.x);
        let y0 = self.y.max(other.y);
        let x1 = (u64::from(self.x) + u64::from(self.width))
            .min(u64::from(other.x) + u64::from(other.width));
        let y1 = (u64::from(self.y) + u64::from(self.height))
            .min(u64::from(other.y) + u64::from(other.height));
        if x1 <= u64::from(x0) || y1 <= u64::from(y0) {
            return None;
        }
        // x1 - x0 <= other.width (a u32) and likewise for y.
        Some(Rect::new(
            x0,
            y0,
            (x1 - u64::from(x0)) as u32,
            (y1 - u64::from(y0)) as u32,
        ))
    }
}

/// A box (`virtio_gpu_box`), host endian.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Box3d {
    /// X.
    pub x: u32,
    /// Y.
    pub y: u32,
    /// Z.
    pub z: u32,
    /// Width.
    pub w: u32,
    /// Height.
    pub h: u32,
    /// Depth.
    pub d: u32,
}

/// A decoded control header.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CtrlHeader {
    /// Command type.
    pub type_: u32,
    /// `VIRTIO_GPU_FLAG_*`.
    pub flags: u32,
    /// Fence id.
    pub fence_id: u64,
    /// Context id.
    pub ctx_id: u32,
    /// Ring index.
    pub ring_idx: u8,
}

impl CtrlHeader {
    fn from_wire(w: &CtrlHdrWire) -> Self {
        CtrlHeader {
            type_: w.type_.to_native(),
            flags: w.flags.to_native(),
            fence_id: w.fence_id.to_native(),
            ctx_id: w.ctx_id.to_native(),
            ring_idx: w.ring_idx,
        }
    }

    /// Whether the request carries `VIRTIO_GPU_FLAG_FENCE`.
    pub fn is_fenced(&self) -> bool {
        self.flags & VIRTIO_GPU_FLAG_FENCE != 0
    }

    /// The ring of a fenced request with `VIRTIO_GPU_FLAG_INFO_RING_IDX`, else `None`.
    pub fn ring(&self) -> Option<u8> {
        (self.is_fenced() && self.flags & VIRTIO_GPU_FLAG_INFO_RING_IDX != 0)
            .then_some(self.ring_idx)
    }
}

/// A validated `virtio_gpu_mem_entry` (the renderer's [`crate::renderer::BackingEntry`]).
pub type MemEntry = crate::renderer::BackingEntry;

/// The cursor fields of UPDATE_CURSOR / MOVE_CURSOR.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CursorCommand {
    /// Scanout id.
    pub scanout_id: u32,
    /// X.
    pub x: u32,
    /// Y.
    pub y: u32,
    /// Cursor resource (UPDATE_CURSOR; 0 hides).
    pub resource_id: u32,
    /// Hotspot x.
    pub hot_x: u32,
    /// Hotspot y.
    pub hot_y: u32,
}

/// A decoded, bounded virtio-gpu command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GpuCommand {
    /// GET_DISPLAY_INFO.
    GetDisplayInfo,
    /// RESOURCE_CREATE_2D.
    ResourceCreate2d {
        /// Resource id.
        resource_id: u32,
        /// `VIRTIO_GPU_FORMAT_*`.
        format: u32,
        /// Width.
        width: u32,
        /// Height.
        height: u32,
    },
    /// RESOURCE_UNREF.
    ResourceUnref {
        /// Resource id.
        resource_id: u32,
    },
    /// SET_SCANOUT.
    SetScanout {
        /// Scanout id.
        scanout_id: u32,
        /// Resource id (0 disables).
        resource_id: u32,
        /// Rectangle of the resource shown.
        rect: Rect,
    },
    /// RESOURCE_FLUSH.
    ResourceFlush {
        /// Resource id.
        resource_id: u32,
        /// Damage.
        rect: Rect,
    },
    /// TRANSFER_TO_HOST_2D.
    TransferToHost2d {
        /// Resource id.
        resource_id: u32,
        /// Rectangle.
        rect: Rect,
        /// Backing offset of the rectangle's first pixel.
        offset: u64,
    },
    /// RESOURCE_ATTACH_BACKING.
    ResourceAttachBacking {
        /// Resource id.
        resource_id: u32,
        /// At most [`MAX_BACKING_ENTRIES`] entries.
        entries: Vec<MemEntry>,
    },
    /// RESOURCE_DETACH_BACKING.
    ResourceDetachBacking {
        /// Resource id.
        resource_id: u32,
    },
    /// GET_CAPSET_INFO.
    GetCapsetInfo {
        /// Capset index.
        index: u32,
    },
    /// GET_CAPSET.
    GetCapset {
        /// Capset id.
        capset_id: u32,
        /// Version.
        version: u32,
    },
    /// GET_EDID.
    GetEdid {
        /// Scanout id.
        scanout_id: u32,
    },
    /// RESOURCE_ASSIGN_UUID.
    ResourceAssignUuid {
        /// Resource id.
        resource_id: u32,
    },
    /// RESOURCE_CREATE_BLOB.
    ResourceCreateBlob {
        /// Resource id.
        resource_id: u32,
        /// `VIRTIO_GPU_BLOB_MEM_*`.
        blob_mem: u32,
        /// `VIRTIO_GPU_BLOB_FLAG_*`.
        blob_flags: u32,
        /// Context-local blob id.
        blob_id: u64,
        /// Size in bytes.
        size: u64,
        /// At most [`MAX_BACKING_ENTRIES`] entries.
        entries: Vec<MemEntry>,
    },
    /// SET_SCANOUT_BLOB.
    SetScanoutBlob {
        /// Scanout id.
        scanout_id: u32,
        /// Resource id (0 disables).
        resource_id: u32,
        /// Rectangle of the image shown.
        rect: Rect,
        /// Image width.
        width: u32,
        /// Image height.
        height: u32,
        /// `VIRTIO_GPU_FORMAT_*`.
        format: u32,
        /// Plane strides.
        strides: [u32; 4],
        /// Plane offsets.
        offsets: [u32; 4],
    },
    /// CTX_CREATE.
    CtxCreate {
        /// `context_init` (low 8 bits: capset id).
        context_init: u32,
        /// Debug name (lossy UTF-8, at most 64 bytes).
        debug_name: String,
    },
    /// CTX_DESTROY.
    CtxDestroy,
    /// CTX_ATTACH_RESOURCE.
    CtxAttachResource {
        /// Resource id.
        resource_id: u32,
    },
    /// CTX_DETACH_RESOURCE.
    CtxDetachResource {
        /// Resource id.
        resource_id: u32,
    },
    /// RESOURCE_CREATE_3D.
    ResourceCreate3d {
        /// Resource id.
        resource_id: u32,
        /// Arguments.
        args: crate::renderer::ResourceCreate3d,
    },
    /// TRANSFER_TO_HOST_3D.
    TransferToHost3d {
        /// Resource id.
        resource_id: u32,
        /// Transfer.
        transfer: crate::renderer::Transfer3d,
    },
    /// TRANSFER_FROM_HOST_3D.
    TransferFromHost3d {
        /// Resource id.
        resource_id: u32,
        /// Transfer.
        transfer: crate::renderer::Transfer3d,
    },
    /// SUBMIT_3D.
    Submit3d {
        /// The command stream, at most [`MAX_SUBMIT_3D_SIZE`] bytes.
        commands: Vec<u8>,
    },
    /// RESOURCE_MAP_BLOB.
    ResourceMapBlob {
        /// Resource id.
        resource_id: u32,
        /// Offset in the host-visible region.
        offset: u64,
    },
    /// RESOURCE_UNMAP_BLOB.
    ResourceUnmapBlob {
        /// Resource id.
        resource_id: u32,
    },
    /// UPDATE_CURSOR.
    UpdateCursor(CursorCommand),
    /// MOVE_CURSOR.
    MoveCursor(CursorCommand),
}

impl GpuCommand {
    /// The command's spec name, for logs.
    pub fn name(&self) -> &'static str {
        match self {
            GpuCommand::GetDisplayInfo => "GET_DISPLAY_INFO",
            GpuCommand::ResourceCreate2d { .. } => "RESOURCE_CREATE_2D",
            GpuCommand::ResourceUnref { .. } => "RESOURCE_UNREF",
            GpuCommand::SetScanout { .. } => "SET_SCANOUT",
            GpuCommand::ResourceFlush { .. } => "RESOURCE_FLUSH",
            GpuCommand::TransferToHost2d { .. } => "TRANSFER_TO_HOST_2D",
            GpuCommand::ResourceAttachBacking { .. } => "RESOURCE_ATTACH_BACKING",
            GpuCommand::ResourceDetachBacking { .. } => "RESOURCE_DETACH_BACKING",
            GpuCommand::GetCapsetInfo { .. } => "GET_CAPSET_INFO",
            GpuCommand::GetCapset { .. } => "GET_CAPSET",
            GpuCommand::GetEdid { .. } => "GET_EDID",
            GpuCommand::ResourceAssignUuid { .. } => "RESOURCE_ASSIGN_UUID",
            GpuCommand::ResourceCreateBlob { .. } => "RESOURCE_CREATE_BLOB",
            GpuCommand::SetScanoutBlob { .. } => "SET_SCANOUT_BLOB",
            GpuCommand::CtxCreate { .. } => "CTX_CREATE",
            GpuCommand::CtxDestroy => "CTX_DESTROY",
            GpuCommand::CtxAttachResource { .. } => "CTX_ATTACH_RESOURCE",
            GpuCommand::CtxDetachResource { .. } => "CTX_DETACH_RESOURCE",
            GpuCommand::ResourceCreate3d { .. } => "RESOURCE_CREATE_3D",
            GpuCommand::TransferToHost3d { .. } => "TRANSFER_TO_HOST_3D",
            GpuCommand::TransferFromHost3d { .. } => "TRANSFER_FROM_HOST_3D",
            GpuCommand::Submit3d { .. } => "SUBMIT_3D",
            GpuCommand::ResourceMapBlob { .. } => "RESOURCE_MAP_BLOB",
            GpuCommand::ResourceUnmapBlob { .. } => "RESOURCE_UNMAP_BLOB",
            GpuCommand::UpdateCursor(_) => "UPDATE_CURSOR",
            GpuCommand::MoveCursor(_) => "MOVE_CURSOR",
        }
    }

    /// Whether this is a cursor-queue command.
    pub fn is_cursor(&self) -> bool {
        matches!(
            self,
            GpuCommand::UpdateCursor(_) | GpuCommand::MoveCursor(_)
        )
    }

    /// The size of the successful response this command gets (for GET_CAPSET: its header only;
    /// the data size is known when the capset is looked up).
    pub fn response_size(&self) -> usize {
        match self {
            GpuCommand::GetDisplayInfo => RESP_DISPLAY_INFO_SIZE,
            GpuCommand::GetCapsetInfo { .. } => RESP_CAPSET_INFO_SIZE,
            GpuCommand::GetEdid { .. } => RESP_EDID_SIZE,
            GpuCommand::ResourceAssignUuid { .. } => RESP_RESOURCE_UUID_SIZE,
            GpuCommand::ResourceMapBlob { .. } => RESP_MAP_INFO_SIZE,
            _ => CTRL_HDR_SIZE,
        }
    }
}

/// An error response code (`VIRTIO_GPU_RESP_ERR_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    /// ERR_UNSPEC.
    Unspec,
    /// ERR_OUT_OF_MEMORY.
    OutOfMemory,
    /// ERR_INVALID_SCANOUT_ID.
    InvalidScanoutId,
    /// ERR_INVALID_RESOURCE_ID.
    InvalidResourceId,
    /// ERR_INVALID_CONTEXT_ID.
    InvalidContextId,
    /// ERR_INVALID_PARAMETER.
    InvalidParameter,
}

impl ErrorCode {
    /// The wire value.
    pub fn code(self) -> u32 {
        match self {
            ErrorCode::Unspec => VIRTIO_GPU_RESP_ERR_UNSPEC,
            ErrorCode::OutOfMemory => VIRTIO_GPU_RESP_ERR_OUT_OF_MEMORY,
            ErrorCode::InvalidScanoutId => VIRTIO_GPU_RESP_ERR_INVALID_SCANOUT_ID,
            ErrorCode::InvalidResourceId => VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID,
            ErrorCode::InvalidContextId => VIRTIO_GPU_RESP_ERR_INVALID_CONTEXT_ID,
            ErrorCode::InvalidParameter => VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER,
        }
    }
}

/// Why a chain could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// A device-readable descriptor follows a device-writable one.
    #[error("descriptor chain has a readable descriptor after a writable one")]
    ReadableAfterWritable,
    /// The chain's buffers could not be mapped (address outside guest memory, overflow).
    #[error("descriptor chain buffers are invalid: {0}")]
    Chain(#[source] virtio_queue::Error),
    /// The readable part is shorter than the control header.
    #[error("request of {available} bytes is shorter than the control header")]
    ShortHeader {
        /// Readable bytes.
        available: usize,
    },
    /// Unknown command type.
    #[error("unknown command type {0:#x}")]
    UnknownCommand(u32),
    /// The readable part is shorter than the command's body.
    #[error("{command} needs {needed} more bytes, {available} available")]
    ShortBody {
        /// Command name.
        command: &'static str,
        /// Bytes needed after the header.
        needed: usize,
        /// Bytes available after the header.
        available: usize,
    },
    /// Too many memory entries.
    #[error("{nr} backing entries (at most {MAX_BACKING_ENTRIES})")]
    TooManyEntries {
        /// Entries requested.
        nr: u32,
    },
    /// SUBMIT_3D larger than the bound.
    #[error("SUBMIT_3D of {size} bytes (at most {MAX_SUBMIT_3D_SIZE})")]
    SubmitTooLarge {
        /// Size requested.
        size: u32,
    },
    /// A ring index of 64 or more.
    #[error("ring index {0} (at most 63)")]
    InvalidRingIdx(u8),
    /// A context debug name longer than its field.
    #[error("context debug name length {0} (at most {CTX_DEBUG_NAME_SIZE})")]
    DebugNameTooLong(u32),
    /// Reading guest memory failed.
    #[error("reading the request failed: {0}")]
    Io(#[source] std::io::Error),
}

impl DecodeError {
    /// The error response this decoding failure gets (see the module doc).
    pub fn error_code(&self) -> ErrorCode {
        match self {
            DecodeError::ReadableAfterWritable
            | DecodeError::Chain(_)
            | DecodeError::ShortHeader { .. }
            | DecodeError::UnknownCommand(_)
            | DecodeError::ShortBody { .. }
            | DecodeError::Io(_) => ErrorCode::Unspec,
            DecodeError::TooManyEntries { .. }
            | DecodeError::SubmitTooLarge { .. }
            | DecodeError::InvalidRingIdx(_)
            | DecodeError::DebugNameTooLong(_) => ErrorCode::InvalidParameter,
        }
    }
}

/// Checks the whole chain's layout (every readable descriptor before every writable one) and
/// returns a reader over its readable part and a writer over its writable part.
pub fn split_chain<'a, M>(
    chain: &DescriptorChain<M>,
    mem: &'a GuestMemoryMmap,
) -> Result<(Reader<'a>, Writer<'a>), DecodeError>
where
    M: Deref<Target = GuestMemoryMmap> + Clone,
{
    let mut seen_writable = false;
    for desc in chain.clone() {
        if desc.is_write_only() {
            seen_writable = true;
        } else if seen_writable {
            return Err(DecodeError::ReadableAfterWritable);
        }
    }
    let reader = chain.clone().reader(mem).map_err(DecodeError::Chain)?;
    let writer = chain.clone().writer(mem).map_err(DecodeError::Chain)?;
    Ok((reader, writer))
}

/// The command type of a chain (the header's first field) without checking anything else, or
/// `None` when it cannot be read. Only a scheduling hint: the chain is decoded and checked when
/// it runs, and the guest may change the field in between. It reads the first four bytes of the
/// first descriptor and nothing else (no reader is built on this per-command path), so a header
/// whose first descriptor is shorter than four bytes gives `None`.
pub fn peek_command_type<M>(chain: &DescriptorChain<M>) -> Option<u32>
where
    M: Deref<Target = GuestMemoryMmap> + Clone,
{
    use vm_memory::Bytes;
    let first = chain.clone().next()?;
    if first.is_write_only() || (first.len() as usize) < size_of::<Le32>() {
        return None;
    }
    chain
        .memory()
        .read_obj::<Le32>(first.addr())
        .ok()
        .map(|t| t.to_native())
}

/// Reads and decodes the control header.
pub fn decode_header(reader: &mut Reader<'_>) -> Result<CtrlHeader, DecodeError> {
    let available = reader.available_bytes();
    if available < CTRL_HDR_SIZE {
        return Err(DecodeError::ShortHeader { available });
    }
    let wire: CtrlHdrWire = reader.read_obj().map_err(DecodeError::Io)?;
    Ok(CtrlHeader::from_wire(&wire))
}

fn read_body<T: ByteValued>(
    reader: &mut Reader<'_>,
    command: &'static str,
) -> Result<T, DecodeError> {
    let available = reader.available_bytes();
    let needed = size_of::<T>();
    if available < needed {
        return Err(DecodeError::ShortBody {
            command,
            needed,
            available,
        });
    }
    reader.read_obj().map_err(DecodeError::Io)
}

fn read_entries(
    reader: &mut Reader<'_>,
    command: &'static str,
    nr: u32,
) -> Result<Vec<MemEntry>, DecodeError> {
    if nr > MAX_BACKING_ENTRIES {
        return Err(DecodeError::TooManyEntries { nr });
    }
    // nr <= 16384, so this cannot overflow.
    let needed = nr as usize * size_of::<MemEntryWire>();
    let available = reader.available_bytes();
    if available < needed {
        return Err(DecodeError::ShortBody {
            command,
            needed,
            available,
        });
    }
    let mut entries = Vec::with_capacity(nr as usize);
    for _ in 0..nr {
        let e: MemEntryWire = reader.read_obj().map_err(DecodeError::Io)?;
        entries.push(MemEntry {
            addr: e.addr.to_native(),
            len: e.length.to_native(),
        });
    }
    Ok(entries)
}

fn resource_of(reader: &mut Reader<'_>, command: &'static str) -> Result<u32, DecodeError> {
    let body: IdPairWire = read_body(reader, command)?;
    Ok(body.first.to_native())
}

fn cursor_of(reader: &mut Reader<'_>, command: &'static str) -> Result<CursorCommand, DecodeError> {
    let c: UpdateCursorWire = read_body(reader, command)?;
    Ok(CursorCommand {
        scanout_id: c.scanout_id.to_native(),
        x: c.x.to_native(),
        y: c.y.to_native(),
        resource_id: c.resource_id.to_native(),
        hot_x: c.hot_x.to_native(),
        hot_y: c.hot_y.to_native(),
    })
}

fn transfer_3d_of(
    reader: &mut Reader<'_>,
    command: &'static str,
) -> Result<(u32, crate::renderer::Transfer3d), DecodeError> {
    let t: TransferHost3dWire = read_body(reader, command)?;
    Ok((
        t.resource_id.to_native(),
        crate::renderer::Transfer3d {
            box3d: Box3d {
                x: t.box_.x.to_native(),
                y: t.box_.y.to_native(),
                z: t.box_.z.to_native(),
                w: t.box_.w.to_native(),
                h: t.box_.h.to_native(),
                d: t.box_.d.to_native(),
            },
            offset: t.offset.to_native(),
            level: t.level.to_native(),
            stride: t.stride.to_native(),
            layer_stride: t.layer_stride.to_native(),
        },
    ))
}

/// Decodes the command after `header` from the rest of the readable part, checking every bound.
pub fn decode_command(
    header: &CtrlHeader,
    reader: &mut Reader<'_>,
) -> Result<GpuCommand, DecodeError> {
    if let Some(ring) = header.ring() {
        if ring >= MAX_RINGS {
            return Err(DecodeError::InvalidRingIdx(ring));
        }
    }
    let cmd = match header.type_ {
        VIRTIO_GPU_CMD_GET_DISPLAY_INFO => GpuCommand::GetDisplayInfo,
        VIRTIO_GPU_CMD_RESOURCE_CREATE_2D => {
            let b: ResourceCreate2dWire = read_body(reader, "RESOURCE_CREATE_2D")?;
            GpuCommand::ResourceCreate2d {
                resource_id: b.resource_id.to_native(),
                format: b.format.to_native(),
                width: b.width.to_native(),
                height: b.height.to_native(),
            }
        }
        VIRTIO_GPU_CMD_RESOURCE_UNREF => GpuCommand::ResourceUnref {
            resource_id: resource_of(reader, "RESOURCE_UNREF")?,
        },
        VIRTIO_GPU_CMD_SET_SCANOUT => {
            let b: SetScanoutWire = read_body(reader, "SET_SCANOUT")?;
            GpuCommand::SetScanout {
                scanout_id: b.scanout_id.to_native(),
                resource_id: b.resource_id.to_native(),
                rect: Rect::from_wire(&b.r),
            }
        }
        VIRTIO_GPU_CMD_RESOURCE_FLUSH => {
            let b: ResourceFlushWire = read_body(reader, "RESOURCE_FLUSH")?;
            GpuCommand::ResourceFlush {
                resource_id: b.resource_id.to_native(),
                rect: Rect::from_wire(&b.r),
            }
        }
        VIRTIO_GPU_CMD_TRANSFER_TO_HOST_2D => {
            let b: TransferToHost2dWire = read_body(reader, "TRANSFER_TO_HOST_2D")?;
            GpuCommand::TransferToHost2d {
                resource_id: b.resource_id.to_native(),
                rect: Rect::from_wire(&b.r),
                offset: b.offset.to_native(),
            }
        }
        VIRTIO_GPU_CMD_RESOURCE_ATTACH_BACKING => {
            let b: AttachBackingWire = read_body(reader, "RESOURCE_ATTACH_BACKING")?;
            GpuCommand::ResourceAttachBacking {
                resource_id: b.resource_id.to_native(),
                entries: read_entries(reader, "RESOURCE_ATTACH_BACKING", b.nr_entries.to_native())?,
            }
        }
        VIRTIO_GPU_CMD_RESOURCE_DETACH_BACKING => GpuCommand::ResourceDetachBacking {
            resource_id: resource_of(reader, "RESOURCE_DETACH_BACKING")?,
        },
        VIRTIO_GPU_CMD_GET_CAPSET_INFO => {
            let b: IdPairWire = read_body(reader, "GET_CAPSET_INFO")?;
            GpuCommand::GetCapsetInfo {
                index: b.first.to_native(),
            }
        }
        VIRTIO_GPU_CMD_GET_CAPSET => {
            let b: IdPairWire = read_body(reader, "GET_CAPSET")?;
            GpuCommand::GetCapset {
                capset_id: b.first.to_native(),
                version: b.second.to_native(),
            }
        }
        VIRTIO_GPU_CMD_GET_EDID => {
            let b: IdPairWire = read_body(reader, "GET_EDID")?;
            GpuCommand::GetEdid {
                scanout_id: b.first.to_native(),
            }
        }
        VIRTIO_GPU_CMD_RESOURCE_ASSIGN_UUID => GpuCommand::ResourceAssignUuid {
            resource_id: resource_of(reader, "RESOURCE_ASSIGN_UUID")?,
        },
        VIRTIO_GPU_CMD_RESOURCE_CREATE_BLOB => {
            let b: CreateBlobWire = read_body(reader, "RESOURCE_CREATE_BLOB")?;
            GpuCommand::ResourceCreateBlob {
                resource_id: b.resource_id.to_native(),
                blob_mem: b.blob_mem.to_native(),
                blob_flags: b.blob_flags.to_native(),
                blob_id: b.blob_id.to_native(),
                size: b.size.to_native(),
                entries: read_entries(reader, "RESOURCE_CREATE_BLOB", b.nr_entries.to_native())?,
            }
        }
        VIRTIO_GPU_CMD_SET_SCANOUT_BLOB => {
            let b: SetScanoutBlobWire = read_body(reader, "SET_SCANOUT_BLOB")?;
            GpuCommand::SetScanoutBlob {
                scanout_id: b.scanout_id.to_native(),
                resource_id: b.resource_id.to_native(),
                rect: Rect::from_wire(&b.r),
                width: b.width.to_native(),
                height: b.height.to_native(),
                format: b.format.to_native(),
                strides: b.strides.map(|s| s.to_native()),
                offsets: b.offsets.map(|o| o.to_native()),
            }
        }
        VIRTIO_GPU_CMD_CTX_CREATE => {
            let b: CtxCreateWire = read_body(reader, "CTX_CREATE")?;
            let nlen = b.nlen.to_native();
            let name = usize::try_from(nlen)
                .ok()
                .and_then(|n| b.debug_name.get(..n))
                .ok_or(DecodeError::DebugNameTooLong(nlen))?;
            // The guest may or may not include a terminating NUL.
            let name = name.split(|&c| c == 0).next().unwrap_or_default();
            GpuCommand::CtxCreate {
                context_init: b.context_init.to_native(),
                debug_name: String::from_utf8_lossy(name).into_owned(),
            }
        }
        VIRTIO_GPU_CMD_CTX_DESTROY => GpuCommand::CtxDestroy,
        VIRTIO_GPU_CMD_CTX_ATTACH_RESOURCE => GpuCommand::CtxAttachResource {
            resource_id: resource_of(reader, "CTX_ATTACH_RESOURCE")?,
        },
        VIRTIO_GPU_CMD_CTX_DETACH_RESOURCE => GpuCommand::CtxDetachResource {
            resource_id: resource_of(reader, "CTX_DETACH_RESOURCE")?,
        },
        VIRTIO_GPU_CMD_RESOURCE_CREATE_3D => {
            let b: ResourceCreate3dWire = read_body(reader, "RESOURCE_CREATE_3D")?;
            GpuCommand::ResourceCreate3d {
                resource_id: b.resource_id.to_native(),
                args: crate::renderer::ResourceCreate3d {
                    target: b.target.to_native(),
                    format: b.format.to_native(),
                    bind: b.bind.to_native(),
                    width: b.width.to_native(),
                    height: b.height.to_native(),
                    depth: b.depth.to_native(),
                    array_size: b.array_size.to_native(),
                    last_level: b.last_level.to_native(),
                    nr_samples: b.nr_samples.to_native(),
                    flags: b.flags.to_native(),
                },
            }
        }
        VIRTIO_GPU_CMD_TRANSFER_TO_HOST_3D => {
            let (resource_id, transfer) = transfer_3d_of(reader, "TRANSFER_TO_HOST_3D")?;
            GpuCommand::TransferToHost3d {
                resource_id,
                transfer,
            }
        }
        VIRTIO_GPU_CMD_TRANSFER_FROM_HOST_3D => {
            let (resource_id, transfer) = transfer_3d_of(reader, "TRANSFER_FROM_HOST_3D")?;
            GpuCommand::TransferFromHost3d {
                resource_id,
                transfer,
            }
        }
        VIRTIO_GPU_CMD_SUBMIT_3D => {
            let b: IdPairWire = read_body(reader, "SUBMIT_3D")?;
            let size = b.first.to_native();
            if b.second.to_native() != 0 {
                debug!(
                    "SUBMIT_3D padding {} ignored (in-fences are not part of the spec)",
                    b.second.to_native()
                );
            }
            if size > MAX_SUBMIT_3D_SIZE {
                return Err(DecodeError::SubmitTooLarge { size });
            }
            // size <= 1 MiB.
            let needed = size as usize;
            let available = reader.available_bytes();
            if available < needed {
                return Err(DecodeError::ShortBody {
                    command: "SUBMIT_3D",
                    needed,
                    available,
                });
            }
            let mut commands = vec![0u8; needed];
            reader.read_exact(&mut commands).map_err(DecodeError::Io)?;
            GpuCommand::Submit3d { commands }
        }
        VIRTIO_GPU_CMD_RESOURCE_MAP_BLOB => {
            let b: MapBlobWire = read_body(reader, "RESOURCE_MAP_BLOB")?;
            GpuCommand::ResourceMapBlob {
                resource_id: b.resource_id.to_native(),
                offset: b.offset.to_native(),
            }
        }
        VIRTIO_GPU_CMD_RESOURCE_UNMAP_BLOB => GpuCommand::ResourceUnmapBlob {
            resource_id: resource_of(reader, "RESOURCE_UNMAP_BLOB")?,
        },
        VIRTIO_GPU_CMD_UPDATE_CURSOR => {
            GpuCommand::UpdateCursor(cursor_of(reader, "UPDATE_CURSOR")?)
        }
        VIRTIO_GPU_CMD_MOVE_CURSOR => GpuCommand::MoveCursor(cursor_of(reader, "MOVE_CURSOR")?),
        other => return Err(DecodeError::UnknownCommand(other)),
    };
    Ok(cmd)
}

/// One scanout's entry of the GET_DISPLAY_INFO response.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DisplayInfoEntry {
    /// Rectangle.
    pub rect: Rect,
    /// Enabled.
    pub enabled: bool,
}

/// A response to encode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    /// OK_NODATA.
    OkNoData,
    /// OK_DISPLAY_INFO (at most 16 entries; the rest are zero).
    OkDisplayInfo(Vec<DisplayInfoEntry>),
    /// OK_CAPSET_INFO.
    OkCapsetInfo {
        /// Capset id.
        id: u32,
        /// Max version.
        max_version: u32,
        /// Max size.
        max_size: u32,
    },
    /// OK_CAPSET with its data.
    OkCapset(Vec<u8>),
    /// OK_EDID with the blob (at most 1024 bytes).
    OkEdid(Vec<u8>),
    /// OK_RESOURCE_UUID.
    OkResourceUuid([u8; 16]),
    /// OK_MAP_INFO.
    OkMapInfo(u32),
    /// An error.
    Err(ErrorCode),
}

impl Response {
    fn type_code(&self) -> u32 {
        match self {
            Response::OkNoData => VIRTIO_GPU_RESP_OK_NODATA,
            Response::OkDisplayInfo(_) => VIRTIO_GPU_RESP_OK_DISPLAY_INFO,
            Response::OkCapsetInfo { .. } => VIRTIO_GPU_RESP_OK_CAPSET_INFO,
            Response::OkCapset(_) => VIRTIO_GPU_RESP_OK_CAPSET,
            Response::OkEdid(_) => VIRTIO_GPU_RESP_OK_EDID,
            Response::OkResourceUuid(_) => VIRTIO_GPU_RESP_OK_RESOURCE_UUID,
            Response::OkMapInfo(_) => VIRTIO_GPU_RESP_OK_MAP_INFO,
            Response::Err(e) => e.code(),
        }
    }

    /// The encoded size in bytes.
    pub fn encoded_len(&self) -> usize {
        match self {
            Response::OkNoData | Response::Err(_) => CTRL_HDR_SIZE,
            Response::OkDisplayInfo(_) => RESP_DISPLAY_INFO_SIZE,
            Response::OkCapsetInfo { .. } => RESP_CAPSET_INFO_SIZE,
            Response::OkCapset(d) => CTRL_HDR_SIZE + d.len(),
            Response::OkEdid(_) => RESP_EDID_SIZE,
            Response::OkResourceUuid(_) => RESP_RESOURCE_UUID_SIZE,
            Response::OkMapInfo(_) => RESP_MAP_INFO_SIZE,
        }
    }

    /// Encodes the response. When `request` carried `VIRTIO_GPU_FLAG_FENCE`, the header gets
    /// FENCE, the fence id and the context id, and with `VIRTIO_GPU_FLAG_INFO_RING_IDX` also that
    /// flag and the ring index. All bytes are initialised (no stale host data reaches the guest).
    pub fn encode(&self, request: Option<&CtrlHeader>) -> Vec<u8> {
        let mut hdr = CtrlHdrWire {
            type_: self.type_code().into(),
            ..Default::default()
        };
        if let Some(req) = request.filter(|r| r.is_fenced()) {
            let mut flags = VIRTIO_GPU_FLAG_FENCE;
            hdr.fence_id = req.fence_id.into();
            hdr.ctx_id = req.ctx_id.into();
            if let Some(ring) = req.ring() {
                flags |= VIRTIO_GPU_FLAG_INFO_RING_IDX;
                hdr.ring_idx = ring;
            }
            hdr.flags = flags.into();
        }
        let mut out = Vec::with_capacity(self.encoded_len());
        out.extend_from_slice(hdr.as_slice());
        match self {
            Response::OkNoData | Response::Err(_) => {}
            Response::OkDisplayInfo(entries) => {
                for i in 0..VIRTIO_GPU_MAX_SCANOUTS as usize {
                    let one =
                        entries
                            .get(i)
                            .map_or_else(DisplayOneWire::default, |e| DisplayOneWire {
                                r: RectWire {
                                    x: e.rect.x.into(),
                                    y: e.rect.y.into(),
                                    width: e.rect.width.into(),
                                    height: e.rect.height.into(),
                                },
                                enabled: u32::from(e.enabled).into(),
                                flags: 0.into(),
                            });
                    out.extend_from_slice(one.as_slice());
                }
            }
            Response::OkCapsetInfo {
                id,
                max_version,
                max_size,
            } => {
                let info = CapsetInfoWire {
                    capset_id: (*id).into(),
                    capset_max_version: (*max_version).into(),
                    capset_max_size: (*max_size).into(),
                    padding: 0.into(),
                };
                out.extend_from_slice(info.as_slice());
            }
            Response::OkCapset(data) => out.extend_from_slice(data),
            Response::OkEdid(blob) => {
                let n = blob.len().min(EDID_BLOB_SIZE);
                // n <= 1024.
                out.extend_from_slice(&(n as u32).to_le_bytes());
                out.extend_from_slice(&0u32.to_le_bytes());
                out.extend_from_slice(&blob[..n]);
                out.resize(RESP_EDID_SIZE, 0);
            }
            Response::OkResourceUuid(uuid) => out.extend_from_slice(uuid),
            Response::OkMapInfo(info) => {
                out.extend_from_slice(&info.to_le_bytes());
                out.extend_from_slice(&0u32.to_le_bytes());
            }
        }
        out
    }
}

/// Encodes the config space.
pub fn encode_config(num_scanouts: u32, num_capsets: u32, events_read: u32) -> Vec<u8> {
    let c = ConfigWire {
        events_read: events_read.into(),
        events_clear: 0.into(),
        num_scanouts: num_scanouts.into(),
        num_capsets: num_capsets.into(),
        blob_alignment: 0.into(),
    };
    c.as_slice().to_vec()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::{Bytes, GuestAddress};

    /// Where test requests and responses live in the test guest memory.
    pub const REQ_ADDR: u64 = 0x10_0000;
    /// Response buffer address.
    pub const RESP_ADDR: u64 = 0x20_0000;
    /// Writable descriptor flag.
    pub const WRITE: u16 = virtio_bindings::virtio_ring::VRING_DESC_F_WRITE as u16;

    /// A test guest memory of 16 MiB.
    pub fn test_mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x100_0000)]).unwrap()
    }

    /// Builds a control header's bytes.
    pub fn hdr(type_: u32, flags: u32, fence_id: u64, ctx_id: u32, ring_idx: u8) -> Vec<u8> {
        CtrlHdrWire {
            type_: type_.into(),
            flags: flags.into(),
            fence_id: fence_id.into(),
            ctx_id: ctx_id.into(),
            ring_idx,
            padding: [0; 3],
        }
        .as_slice()
        .to_vec()
    }

    /// Little-endian u32s as bytes.
    pub fn le32s(v: &[u32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    /// Decodes `request` placed in one readable descriptor with a writable descriptor of
    /// `resp_len` bytes.
    fn decode_bytes(
        request: &[u8],
        resp_len: u32,
    ) -> Result<(CtrlHeader, GpuCommand), DecodeError> {
        let mem = test_mem();
        mem.write_slice(request, GuestAddress(REQ_ADDR)).unwrap();
        let q = MockSplitQueue::new(&mem, 16);
        let descs = [
            RawDescriptor::from(SplitDescriptor::new(REQ_ADDR, request.len() as u32, 0, 0)),
            RawDescriptor::from(SplitDescriptor::new(RESP_ADDR, resp_len, WRITE, 0)),
        ];
        let chain = q.build_desc_chain(&descs).unwrap();
        let (mut r, w) = split_chain(&chain, &mem)?;
        assert_eq!(w.available_bytes(), resp_len as usize);
        let h = decode_header(&mut r)?;
        let c = decode_command(&h, &mut r)?;
        Ok((h, c))
    }

    #[test]
    fn peek_command_type_reads_the_type_only() {
        let mem = test_mem();
        let q = MockSplitQueue::new(&mem, 16);
        let flush = req(VIRTIO_GPU_CMD_RESOURCE_FLUSH, &le32s(&[1, 2, 3, 4, 9, 0]));
        mem.write_slice(&flush, GuestAddress(REQ_ADDR)).unwrap();
        let descs = [
            RawDescriptor::from(SplitDescriptor::new(REQ_ADDR, flush.len() as u32, 0, 0)),
            RawDescriptor::from(SplitDescriptor::new(RESP_ADDR, 24, WRITE, 0)),
        ];
        let chain = q.build_desc_chain(&descs).unwrap();
        assert_eq!(
            peek_command_type(&chain),
            Some(VIRTIO_GPU_CMD_RESOURCE_FLUSH)
        );
        // Fewer than 4 readable bytes, or none: no type.
        let short = [RawDescriptor::from(SplitDescriptor::new(REQ_ADDR, 2, 0, 0))];
        assert_eq!(
            peek_command_type(&q.build_desc_chain(&short).unwrap()),
            None
        );
        let write_only = [RawDescriptor::from(SplitDescriptor::new(
            RESP_ADDR, 24, WRITE, 0,
        ))];
        assert_eq!(
            peek_command_type(&q.build_desc_chain(&write_only).unwrap()),
            None
        );
    }

    fn decode_ok(request: &[u8]) -> GpuCommand {
        decode_bytes(request, 4096).unwrap().1
    }

    fn req(type_: u32, body: &[u8]) -> Vec<u8> {
        let mut v = hdr(type_, 0, 0, 0, 0);
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn wire_sizes_match_the_spec() {
        // Request sizes from the spec / QEMU's QEMU_BUILD_BUG_ONs (header included).
        assert_eq!(CTRL_HDR_SIZE, 24);
        assert_eq!(size_of::<RectWire>(), 16);
        assert_eq!(CTRL_HDR_SIZE + size_of::<ResourceCreate2dWire>(), 40);
        assert_eq!(CTRL_HDR_SIZE + size_of::<IdPairWire>(), 32);
        assert_eq!(CTRL_HDR_SIZE + size_of::<SetScanoutWire>(), 48);
        assert_eq!(CTRL_HDR_SIZE + size_of::<ResourceFlushWire>(), 48);
        assert_eq!(CTRL_HDR_SIZE + size_of::<TransferToHost2dWire>(), 56);
        assert_eq!(CTRL_HDR_SIZE + size_of::<AttachBackingWire>(), 32);
        assert_eq!(size_of::<MemEntryWire>(), 16);
        assert_eq!(CTRL_HDR_SIZE + size_of::<CreateBlobWire>(), 56);
        assert_eq!(CTRL_HDR_SIZE + size_of::<SetScanoutBlobWire>(), 96);
        assert_eq!(CTRL_HDR_SIZE + size_of::<CtxCreateWire>(), 96);
        assert_eq!(CTRL_HDR_SIZE + size_of::<ResourceCreate3dWire>(), 72);
        assert_eq!(size_of::<BoxWire>(), 24);
        assert_eq!(CTRL_HDR_SIZE + size_of::<TransferHost3dWire>(), 72);
        assert_eq!(CTRL_HDR_SIZE + size_of::<MapBlobWire>(), 40);
        assert_eq!(CTRL_HDR_SIZE + size_of::<UpdateCursorWire>(), 56);
        // Responses.
        assert_eq!(RESP_DISPLAY_INFO_SIZE, 408);
        assert_eq!(RESP_CAPSET_INFO_SIZE, 40);
        assert_eq!(RESP_EDID_SIZE, 1056);
        assert_eq!(RESP_RESOURCE_UUID_SIZE, 40);
        assert_eq!(RESP_MAP_INFO_SIZE, 32);
        assert_eq!(size_of::<ConfigWire>(), 20);
        // Cross-check against the virtio-bindings layouts.
        use virtio_bindings::virtio_gpu as vb;
        assert_eq!(CTRL_HDR_SIZE, size_of::<vb::virtio_gpu_ctrl_hdr>());
        assert_eq!(
            CTRL_HDR_SIZE + size_of::<SetScanoutBlobWire>(),
            size_of::<vb::virtio_gpu_set_scanout_blob>()
        );
        assert_eq!(
            CTRL_HDR_SIZE + size_of::<TransferHost3dWire>(),
            size_of::<vb::virtio_gpu_transfer_host_3d>()
        );
        assert_eq!(RESP_EDID_SIZE, size_of::<vb::virtio_gpu_resp_edid>());
        assert_eq!(
            RESP_DISPLAY_INFO_SIZE,
            size_of::<vb::virtio_gpu_resp_display_info>()
        );
    }

    #[test]
    fn decodes_every_command() {
        assert_eq!(
            decode_ok(&req(VIRTIO_GPU_CMD_GET_DISPLAY_INFO, &[])),
            GpuCommand::GetDisplayInfo
        );
        assert_eq!(
            decode_ok(&req(
                VIRTIO_GPU_CMD_RESOURCE_CREATE_2D,
                &le32s(&[7, 2, 640, 480])
            )),
            GpuCommand::ResourceCreate2d {
                resource_id: 7,
                format: 2,
                width: 640,
                height: 480
            }
        );
        assert_eq!(
            decode_ok(&req(VIRTIO_GPU_CMD_RESOURCE_UNREF, &le32s(&[7, 0]))),
            GpuCommand::ResourceUnref { resource_id: 7 }
        );
        assert_eq!(
            decode_ok(&req(
                VIRTIO_GPU_CMD_SET_SCANOUT,
                &le32s(&[1, 2, 3, 4, 5, 6])
            )),
            GpuCommand::SetScanout {
                scanout_id: 5,
                resource_id: 6,
                rect: Rect::new(1, 2, 3, 4)
            }
        );
        assert_eq!(
            decode_ok(&req(
                VIRTIO_GPU_CMD_RESOURCE_FLUSH,
                &le32s(&[1, 2, 3, 4, 9, 0])
            )),
            GpuCommand::ResourceFlush {
                resource_id: 9,
                rect: Rect::new(1, 2, 3, 4)
            }
        );
        let mut t2d = le32s(&[1, 2, 3, 4]);
        t2d.extend_from_slice(&0x1_0000_0010u64.to_le_bytes());
        t2d.extend_from_slice(&le32s(&[9, 0]));
        assert_eq!(
            decode_ok(&req(VIRTIO_GPU_CMD_TRANSFER_TO_HOST_2D, &t2d)),
            GpuCommand::TransferToHost2d {
                resource_id: 9,
                rect: Rect::new(1, 2, 3, 4),
                offset: 0x1_0000_0010
            }
        );
        let mut ab = le32s(&[9, 2]);
        for (a, l) in [(0x1000u64, 0x100u32), (0x5000, 0x20)] {
            ab.extend_from_slice(&a.to_le_bytes());
            ab.extend_from_slice(&le32s(&[l, 0]));
        }
        assert_eq!(
            decode_ok(&req(VIRTIO_GPU_CMD_RESOURCE_ATTACH_BACKING, &ab)),
            GpuCommand::ResourceAttachBacking {
                resource_id: 9,
                entries: vec![
                    MemEntry {
                        addr: 0x1000,
                        len: 0x100
                    },
                    MemEntry {
                        addr: 0x5000,
                        len: 0x20
                    }
                ]
            }
        );
        assert_eq!(
            decode_ok(&req(
                VIRTIO_GPU_CMD_RESOURCE_DETACH_BACKING,
                &le32s(&[9, 0])
            )),
            GpuCommand::ResourceDetachBacking { resource_id: 9 }
        );
        assert_eq!(
            decode_ok(&req(VIRTIO_GPU_CMD_GET_CAPSET_INFO, &le32s(&[1, 0]))),
            GpuCommand::GetCapsetInfo { index: 1 }
        );
        assert_eq!(
            decode_ok(&req(VIRTIO_GPU_CMD_GET_CAPSET, &le32s(&[2, 1]))),
            GpuCommand::GetCapset {
                capset_id: 2,
                version: 1
            }
        );
        assert_eq!(
            decode_ok(&req(VIRTIO_GPU_CMD_GET_EDID, &le32s(&[3, 0]))),
            GpuCommand::GetEdid { scanout_id: 3 }
        );
        assert_eq!(
            decode_ok(&req(VIRTIO_GPU_CMD_RESOURCE_ASSIGN_UUID, &le32s(&[4, 0]))),
            GpuCommand::ResourceAssignUuid { resource_id: 4 }
        );
        let mut cb = le32s(&[5, VIRTIO_GPU_BLOB_MEM_GUEST, 1, 1]);
        cb.extend_from_slice(&77u64.to_le_bytes());
        cb.extend_from_slice(&4096u64.to_le_bytes());
        cb.extend_from_slice(&0x8000u64.to_le_bytes());
        cb.extend_from_slice(&le32s(&[4096, 0]));
        assert_eq!(
            decode_ok(&req(VIRTIO_GPU_CMD_RESOURCE_CREATE_BLOB, &cb)),
            GpuCommand::ResourceCreateBlob {
                resource_id: 5,
                blob_mem: VIRTIO_GPU_BLOB_MEM_GUEST,
                blob_flags: 1,
                blob_id: 77,
                size: 4096,
                entries: vec![MemEntry {
                    addr: 0x8000,
                    len: 4096
                }]
            }
        );
        let sb = le32s(&[0, 0, 64, 32, 1, 5, 64, 32, 4, 0, 256, 0, 0, 0, 16, 0, 0, 0]);
        assert_eq!(
            decode_ok(&req(VIRTIO_GPU_CMD_SET_SCANOUT_BLOB, &sb)),
            GpuCommand::SetScanoutBlob {
                scanout_id: 1,
                resource_id: 5,
                rect: Rect::new(0, 0, 64, 32),
                width: 64,
                height: 32,
                format: 4,
                strides: [256, 0, 0, 0],
                offsets: [16, 0, 0, 0]
            }
        );
        let mut cc = le32s(&[5, 2]);
        let mut name = [0u8; 64];
        name[..5].copy_from_slice(b"hello");
        cc.extend_from_slice(&name);
        assert_eq!(
            decode_ok(&req(VIRTIO_GPU_CMD_CTX_CREATE, &cc)),
            GpuCommand::CtxCreate {
                context_init: 2,
                debug_name: "hello".into()
            }
        );
        assert_eq!(
            decode_ok(&req(VIRTIO_GPU_CMD_CTX_DESTROY, &[])),
            GpuCommand::CtxDestroy
        );
        assert_eq!(
            decode_ok(&req(VIRTIO_GPU_CMD_CTX_ATTACH_RESOURCE, &le32s(&[3, 0]))),
            GpuCommand::CtxAttachResource { resource_id: 3 }
        );
        assert_eq!(
            decode_ok(&req(VIRTIO_GPU_CMD_CTX_DETACH_RESOURCE, &le32s(&[3, 0]))),
            GpuCommand::CtxDetachResource { resource_id: 3 }
        );
        assert_eq!(
            decode_ok(&req(
                VIRTIO_GPU_CMD_RESOURCE_CREATE_3D,
                &le32s(&[3, 2, 1, 8, 64, 32, 1, 1, 0, 0, 1, 0])
            )),
            GpuCommand::ResourceCreate3d {
                resource_id: 3,
                args: crate::renderer::ResourceCreate3d {
                    target: 2,
                    format: 1,
                    bind: 8,
                    width: 64,
                    height: 32,
                    depth: 1,
                    array_size: 1,
                    last_level: 0,
                    nr_samples: 0,
                    flags: 1
                }
            }
        );
        let mut t3 = le32s(&[1, 2, 3, 4, 5, 6]);
        t3.extend_from_slice(&99u64.to_le_bytes());
        t3.extend_from_slice(&le32s(&[3, 1, 256, 4096]));
        let transfer = crate::renderer::Transfer3d {
            box3d: Box3d {
                x: 1,
                y: 2,
                z: 3,
                w: 4,
                h: 5,
                d: 6,
            },
            offset: 99,
            level: 1,
            stride: 256,
            layer_stride: 4096,
        };
        assert_eq!(
            decode_ok(&req(VIRTIO_GPU_CMD_TRANSFER_TO_HOST_3D, &t3)),
            GpuCommand::TransferToHost3d {
                resource_id: 3,
                transfer
            }
        );
        assert_eq!(
            decode_ok(&req(VIRTIO_GPU_CMD_TRANSFER_FROM_HOST_3D, &t3)),
            GpuCommand::TransferFromHost3d {
                resource_id: 3,
                transfer
            }
        );
        let mut sub = le32s(&[8, 0]);
        sub.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(
            decode_ok(&req(VIRTIO_GPU_CMD_SUBMIT_3D, &sub)),
            GpuCommand::Submit3d {
                commands: vec![1, 2, 3, 4, 5, 6, 7, 8]
            }
        );
        let mut mb = le32s(&[6, 0]);
        mb.extend_from_slice(&0x2000u64.to_le_bytes());
        assert_eq!(
            decode_ok(&req(VIRTIO_GPU_CMD_RESOURCE_MAP_BLOB, &mb)),
            GpuCommand::ResourceMapBlob {
                resource_id: 6,
                offset: 0x2000
            }
        );
        assert_eq!(
            decode_ok(&req(VIRTIO_GPU_CMD_RESOURCE_UNMAP_BLOB, &le32s(&[6, 0]))),
            GpuCommand::ResourceUnmapBlob { resource_id: 6 }
        );
        let cur = le32s(&[1, 10, 20, 0, 8, 3, 4, 0]);
        let cc = CursorCommand {
            scanout_id: 1,
            x: 10,
            y: 20,
            resource_id: 8,
            hot_x: 3,
            hot_y: 4,
        };
        assert_eq!(
            decode_ok(&req(VIRTIO_GPU_CMD_UPDATE_CURSOR, &cur)),
            GpuCommand::UpdateCursor(cc)
        );
        assert_eq!(
            decode_ok(&req(VIRTIO_GPU_CMD_MOVE_CURSOR, &cur)),
            GpuCommand::MoveCursor(cc)
        );
    }

    /// Full body sizes of the fixed-size commands; each one truncated by one byte must fail.
    #[test]
    fn every_short_body_is_refused() {
        let cases: &[(u32, usize)] = &[
            (VIRTIO_GPU_CMD_RESOURCE_CREATE_2D, 16),
            (VIRTIO_GPU_CMD_RESOURCE_UNREF, 8),
            (VIRTIO_GPU_CMD_SET_SCANOUT, 24),
            (VIRTIO_GPU_CMD_RESOURCE_FLUSH, 24),
            (VIRTIO_GPU_CMD_TRANSFER_TO_HOST_2D, 32),
            (VIRTIO_GPU_CMD_RESOURCE_ATTACH_BACKING, 8),
            (VIRTIO_GPU_CMD_RESOURCE_DETACH_BACKING, 8),
            (VIRTIO_GPU_CMD_GET_CAPSET_INFO, 8),
            (VIRTIO_GPU_CMD_GET_CAPSET, 8),
            (VIRTIO_GPU_CMD_GET_EDID, 8),
            (VIRTIO_GPU_CMD_RESOURCE_ASSIGN_UUID, 8),
            (VIRTIO_GPU_CMD_RESOURCE_CREATE_BLOB, 32),
            (VIRTIO_GPU_CMD_SET_SCANOUT_BLOB, 72),
            (VIRTIO_GPU_CMD_CTX_CREATE, 72),
            (VIRTIO_GPU_CMD_CTX_ATTACH_RESOURCE, 8),
            (VIRTIO_GPU_CMD_CTX_DETACH_RESOURCE, 8),
            (VIRTIO_GPU_CMD_RESOURCE_CREATE_3D, 48),
            (VIRTIO_GPU_CMD_TRANSFER_TO_HOST_3D, 48),
            (VIRTIO_GPU_CMD_TRANSFER_FROM_HOST_3D, 48),
            (VIRTIO_GPU_CMD_SUBMIT_3D, 8),
            (VIRTIO_GPU_CMD_RESOURCE_MAP_BLOB, 16),
            (VIRTIO_GPU_CMD_RESOURCE_UNMAP_BLOB, 8),
            (VIRTIO_GPU_CMD_UPDATE_CURSOR, 32),
            (VIRTIO_GPU_CMD_MOVE_CURSOR, 32),
        ];
        for &(t, len) in cases {
            // The full body decodes (zeroes are valid everywhere).
            decode_bytes(&req(t, &vec![0u8; len]), 4096)
                .unwrap_or_else(|e| panic!("{t:#x} full body: {e}"));
            let err = decode_bytes(&req(t, &vec![0u8; len - 1]), 4096).unwrap_err();
            assert!(
                matches!(err, DecodeError::ShortBody { .. }),
                "{t:#x}: {err:?}"
            );
            assert_eq!(err.error_code(), ErrorCode::Unspec);
        }
    }

    #[test]
    fn short_header_and_unknown_command() {
        let err = decode_bytes(&[0u8; 23], 64).unwrap_err();
        assert!(matches!(err, DecodeError::ShortHeader { available: 23 }));
        assert_eq!(err.error_code(), ErrorCode::Unspec);
        let err = decode_bytes(&req(0x0999, &[]), 64).unwrap_err();
        assert!(matches!(err, DecodeError::UnknownCommand(0x999)));
        assert_eq!(err.error_code(), ErrorCode::Unspec);
        // A response type sent as a command is unknown too.
        assert!(matches!(
            decode_bytes(&req(VIRTIO_GPU_RESP_OK_NODATA, &[]), 64).unwrap_err(),
            DecodeError::UnknownCommand(_)
        ));
    }

    #[test]
    fn entry_counts_are_bounded_and_checked() {
        let err = decode_bytes(
            &req(
                VIRTIO_GPU_CMD_RESOURCE_ATTACH_BACKING,
                &le32s(&[1, MAX_BACKING_ENTRIES + 1]),
            ),
            64,
        )
        .unwrap_err();
        assert!(matches!(err, DecodeError::TooManyEntries { .. }));
        assert_eq!(err.error_code(), ErrorCode::InvalidParameter);
        let err = decode_bytes(
            &req(
                VIRTIO_GPU_CMD_RESOURCE_ATTACH_BACKING,
                &le32s(&[1, u32::MAX]),
            ),
            64,
        )
        .unwrap_err();
        assert!(matches!(err, DecodeError::TooManyEntries { .. }));
        // Claims 2 entries, carries 1.
        let mut ab = le32s(&[1, 2]);
        ab.extend_from_slice(&[0u8; 16]);
        assert!(matches!(
            decode_bytes(&req(VIRTIO_GPU_CMD_RESOURCE_ATTACH_BACKING, &ab), 64).unwrap_err(),
            DecodeError::ShortBody {
                needed: 32,
                available: 16,
                ..
            }
        ));
        // Same for blobs.
        let mut cb = le32s(&[5, 1, 0, MAX_BACKING_ENTRIES + 1]);
        cb.extend_from_slice(&[0u8; 16]);
        assert!(matches!(
            decode_bytes(&req(VIRTIO_GPU_CMD_RESOURCE_CREATE_BLOB, &cb), 64).unwrap_err(),
            DecodeError::TooManyEntries { .. }
        ));
    }

    #[test]
    fn submit_size_is_bounded_and_checked() {
        let err = decode_bytes(
            &req(
                VIRTIO_GPU_CMD_SUBMIT_3D,
                &le32s(&[MAX_SUBMIT_3D_SIZE + 1, 0]),
            ),
            64,
        )
        .unwrap_err();
        assert!(matches!(err, DecodeError::SubmitTooLarge { .. }));
        assert_eq!(err.error_code(), ErrorCode::InvalidParameter);
        assert!(matches!(
            decode_bytes(&req(VIRTIO_GPU_CMD_SUBMIT_3D, &le32s(&[u32::MAX, 0])), 64).unwrap_err(),
            DecodeError::SubmitTooLarge { .. }
        ));
        // Claims 16 bytes, carries 8.
        let mut s = le32s(&[16, 0]);
        s.extend_from_slice(&[0u8; 8]);
        assert!(matches!(
            decode_bytes(&req(VIRTIO_GPU_CMD_SUBMIT_3D, &s), 64).unwrap_err(),
            DecodeError::ShortBody { .. }
        ));
        // Non-zero padding is ignored per spec: the stream starts right after the request.
        let mut s = le32s(&[4, 3]);
        s.extend_from_slice(&[9, 9, 9, 9]);
        assert_eq!(
            decode_ok(&req(VIRTIO_GPU_CMD_SUBMIT_3D, &s)),
            GpuCommand::Submit3d {
                commands: vec![9, 9, 9, 9]
            }
        );
    }

    #[test]
    fn ring_index_and_debug_name_are_bounded() {
        let mut r = hdr(
            VIRTIO_GPU_CMD_GET_DISPLAY_INFO,
            VIRTIO_GPU_FLAG_FENCE | VIRTIO_GPU_FLAG_INFO_RING_IDX,
            1,
            1,
            64,
        );
        let err = decode_bytes(&r, 408).unwrap_err();
        assert!(matches!(err, DecodeError::InvalidRingIdx(64)));
        assert_eq!(err.error_code(), ErrorCode::InvalidParameter);
        r = hdr(
            VIRTIO_GPU_CMD_GET_DISPLAY_INFO,
            VIRTIO_GPU_FLAG_FENCE | VIRTIO_GPU_FLAG_INFO_RING_IDX,
            1,
            1,
            63,
        );
        let (h, _) = decode_bytes(&r, 408).unwrap();
        assert_eq!(h.ring(), Some(63));
        // Without FENCE the ring index means nothing.
        r = hdr(
            VIRTIO_GPU_CMD_GET_DISPLAY_INFO,
            VIRTIO_GPU_FLAG_INFO_RING_IDX,
            0,
            0,
            200,
        );
        assert_eq!(decode_bytes(&r, 408).unwrap().0.ring(), None);

        let mut cc = le32s(&[65, 0]);
        cc.extend_from_slice(&[b'a'; 64]);
        let err = decode_bytes(&req(VIRTIO_GPU_CMD_CTX_CREATE, &cc), 64).unwrap_err();
        assert!(matches!(err, DecodeError::DebugNameTooLong(65)));
        let mut cc = le32s(&[64, 0]);
        cc.extend_from_slice(&[b'a'; 64]);
        assert_eq!(
            decode_ok(&req(VIRTIO_GPU_CMD_CTX_CREATE, &cc)),
            GpuCommand::CtxCreate {
                context_init: 0,
                debug_name: "a".repeat(64)
            }
        );
    }

    #[test]
    fn chain_layout_is_validated() {
        let mem = test_mem();
        let request = req(VIRTIO_GPU_CMD_GET_DISPLAY_INFO, &[]);
        mem.write_slice(&request, GuestAddress(REQ_ADDR)).unwrap();
        let q = MockSplitQueue::new(&mem, 16);
        // writable, then readable: refused.
        let descs = [
            RawDescriptor::from(SplitDescriptor::new(RESP_ADDR, 408, WRITE, 0)),
            RawDescriptor::from(SplitDescriptor::new(REQ_ADDR, 24, 0, 0)),
        ];
        let chain = q.build_desc_chain(&descs).unwrap();
        assert!(matches!(
            split_chain(&chain, &mem),
            Err(DecodeError::ReadableAfterWritable)
        ));
        // A descriptor outside guest memory is refused.
        let descs = [
            RawDescriptor::from(SplitDescriptor::new(0x2_0000_0000, 24, 0, 0)),
            RawDescriptor::from(SplitDescriptor::new(RESP_ADDR, 408, WRITE, 0)),
        ];
        let chain = q.build_desc_chain(&descs).unwrap();
        assert!(matches!(
            split_chain(&chain, &mem),
            Err(DecodeError::Chain(_))
        ));
        // No writable part: decoding works, the writer is empty (the device decides).
        let descs = [RawDescriptor::from(SplitDescriptor::new(
            REQ_ADDR, 24, 0, 0,
        ))];
        let chain = q.build_desc_chain(&descs).unwrap();
        let (mut r, w) = split_chain(&chain, &mem).unwrap();
        assert_eq!(w.available_bytes(), 0);
        let h = decode_header(&mut r).unwrap();
        assert_eq!(
            decode_command(&h, &mut r).unwrap(),
            GpuCommand::GetDisplayInfo
        );
        // A request split over several readable descriptors decodes.
        let body = le32s(&[7, 2, 640, 480]);
        let full = req(VIRTIO_GPU_CMD_RESOURCE_CREATE_2D, &body);
        mem.write_slice(&full[..10], GuestAddress(REQ_ADDR))
            .unwrap();
        mem.write_slice(&full[10..], GuestAddress(REQ_ADDR + 0x1000))
            .unwrap();
        let descs = [
            RawDescriptor::from(SplitDescriptor::new(REQ_ADDR, 10, 0, 0)),
            RawDescriptor::from(SplitDescriptor::new(REQ_ADDR + 0x1000, 30, 0, 0)),
            RawDescriptor::from(SplitDescriptor::new(RESP_ADDR, 24, WRITE, 0)),
        ];
        let chain = q.build_desc_chain(&descs).unwrap();
        let (mut r, _) = split_chain(&chain, &mem).unwrap();
        let h = decode_header(&mut r).unwrap();
        assert_eq!(
            decode_command(&h, &mut r).unwrap(),
            GpuCommand::ResourceCreate2d {
                resource_id: 7,
                format: 2,
                width: 640,
                height: 480
            }
        );
    }

    #[test]
    fn responses_copy_fence_info() {
        let plain = Response::OkNoData.encode(None);
        assert_eq!(plain, hdr(VIRTIO_GPU_RESP_OK_NODATA, 0, 0, 0, 0));
        let req_h = CtrlHeader {
            type_: VIRTIO_GPU_CMD_SUBMIT_3D,
            flags: VIRTIO_GPU_FLAG_FENCE | VIRTIO_GPU_FLAG_INFO_RING_IDX,
            fence_id: 0x1_2345_6789,
            ctx_id: 3,
            ring_idx: 5,
        };
        let r = Response::Err(ErrorCode::InvalidContextId).encode(Some(&req_h));
        assert_eq!(
            r,
            hdr(
                VIRTIO_GPU_RESP_ERR_INVALID_CONTEXT_ID,
                VIRTIO_GPU_FLAG_FENCE | VIRTIO_GPU_FLAG_INFO_RING_IDX,
                0x1_2345_6789,
                3,
                5
            )
        );
        // Unfenced requests do not get fence info even if fields are set.
        let unfenced = CtrlHeader { flags: 0, ..req_h };
        assert_eq!(
            Response::OkNoData.encode(Some(&unfenced)),
            hdr(VIRTIO_GPU_RESP_OK_NODATA, 0, 0, 0, 0)
        );
    }

    #[test]
    fn typed_responses_encode() {
        let d = Response::OkDisplayInfo(vec![DisplayInfoEntry {
            rect: Rect::new(0, 0, 1024, 768),
            enabled: true,
        }])
        .encode(None);
        assert_eq!(d.len(), 408);
        assert_eq!(&d[24..48], &le32s(&[0, 0, 1024, 768, 1, 0])[..]);
        assert!(d[48..].iter().all(|&b| b == 0));
        let c = Response::OkCapsetInfo {
            id: 2,
            max_version: 2,
            max_size: 1376,
        }
        .encode(None);
        assert_eq!(c.len(), 40);
        assert_eq!(&c[24..], &le32s(&[2, 2, 1376, 0])[..]);
        let e = Response::OkEdid(vec![1, 2, 3]).encode(None);
        assert_eq!(e.len(), 1056);
        assert_eq!(&e[24..35], &[3, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3]);
        let u = Response::OkResourceUuid([7; 16]).encode(None);
        assert_eq!((u.len(), &u[24..]), (40, &[7u8; 16][..]));
        let m = Response::OkMapInfo(VIRTIO_GPU_MAP_CACHE_WC).encode(None);
        assert_eq!(&m[24..], &le32s(&[3, 0])[..]);
        let cap = Response::OkCapset(vec![5; 10]).encode(None);
        assert_eq!(cap.len(), 34);
        for r in [
            Response::OkNoData,
            Response::OkMapInfo(1),
            Response::OkCapset(vec![1; 3]),
            Response::OkEdid(vec![0; 2000]),
        ] {
            assert_eq!(r.encode(None).len(), r.encoded_len());
        }
        assert_eq!(
            encode_config(2, 1, 1),
            le32s(&[VIRTIO_GPU_EVENT_DISPLAY, 0, 2, 1, 0])
        );
    }

    #[test]
    fn rect_helpers_use_checked_arithmetic() {
        assert!(Rect::new(0, 0, 10, 10).is_inside(10, 10));
        assert!(!Rect::new(1, 0, 10, 10).is_inside(10, 10));
        assert!(!Rect::new(u32::MAX, 0, 2, 1).is_inside(u32::MAX, 1));
        assert_eq!(
            Rect::new(0, 0, 10, 10).intersect(&Rect::new(5, 5, 10, 10)),
            Some(Rect::new(5, 5, 5, 5))
        );
        assert_eq!(
            Rect::new(0, 0, 5, 5).intersect(&Rect::new(5, 0, 5, 5)),
            None
        );
        assert_eq!(
            Rect::new(u32::MAX - 1, 0, u32::MAX, 1).intersect(&Rect::new(0, 0, u32::MAX, 1)),
            Some(Rect::new(u32::MAX - 1, 0, 1, 1))
        );
    }
}
