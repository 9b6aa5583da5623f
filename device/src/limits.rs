//! Every bound the device puts on what a guest or a frontend can make it do, one value each,
//! each with the attack or the fact that sets it.
//!
//! The modules that enforce a bound import it from here (some re-export it where it belongs to
//! their public face, e.g. `protocol::MAX_BACKING_ENTRIES`). The safe crates `virglrenderer` and
//! `gfxstream` keep the bounds of their own public API; where the device hands them something
//! bounded here, a compile-time check below pins the two together, so that the device never
//! passes on what the crate refuses, nor lets the crate allocate for more than the device offers.
//!
//! The costs at the end (`*_BYTES`) are what the host budget (`gpu/budget.rs`,
//! `--max-hostmem`) charges for the device's own records of guest-created objects.

use std::time::Duration;

// ---- the vhost-user transport ---------------------------------------------------------------

/// Largest virtqueue (SET_VRING_NUM above it is refused): QEMU uses 256 for virtio-gpu; 1024
/// leaves room without letting a frontend size rings at will.
pub const MAX_QUEUE_SIZE: usize = 1024;

/// Virtqueues of the device: controlq and cursorq (virtio-gpu has exactly two).
pub const NUM_QUEUES: usize = 2;

/// Largest vhost-user payload relayed for a connected `--fd`: messages on the main socket are at
/// most 4 KiB (vhost's `MAX_MSG_SIZE`), so more is a broken peer.
pub const MAX_RELAY_PAYLOAD: usize = 64 << 10;

/// Most descriptors relayed with one vhost-user message (vhost's `MAX_ATTACHED_FD_ENTRIES`).
pub const MAX_RELAY_FDS: usize = 32;

// ---- guest commands (checked when decoded, `protocol.rs`) --------------------------------------

/// Most `virtio_gpu_mem_entry`s in one ATTACH_BACKING / CREATE_BLOB (QEMU's bound): the list is
/// decoded into host memory; 16384 entries of 4 KiB pages describe 64 MiB, and the Linux driver
/// coalesces contiguous pages.
pub const MAX_BACKING_ENTRIES: u32 = 16384;

/// Largest SUBMIT_3D stream, copied into a host buffer before the renderer runs it: four times
/// Mesa's virgl command buffer (`VIRGL_MAX_CMDBUF_DWORDS`, 256 KiB); Venus submits are small.
pub const MAX_SUBMIT_3D_SIZE: u32 = 1 << 20;

/// Largest capset handed to the guest (GET_CAPSET builds it in one host buffer): VIRGL2 is 1376
/// bytes, Venus's a few hundred; a renderer announcing more is not offered.
pub const MAX_CAPSET_SIZE: u32 = 64 * 1024;

/// Rings per context with `VIRTIO_GPU_FLAG_INFO_RING_IDX` (`ring_idx` 0..=63, the spec's).
pub const MAX_RINGS: u8 = 64;

/// Most scanouts (the spec's `VIRTIO_GPU_MAX_SCANOUTS`; `--num-scanouts` is 1 to this).
pub const MAX_SCANOUTS: u32 = 16;
const _: () = assert!(MAX_SCANOUTS == crate::protocol::VIRTIO_GPU_MAX_SCANOUTS);
const _: () =
    assert!(MAX_SCANOUTS as usize == vhost::vhost_user::gpu_message::VIRTIO_GPU_MAX_SCANOUTS);

// ---- device state -------------------------------------------------------------------------

/// Default `--max-hostmem`: the host memory budget of everything a guest makes the device
/// allocate (`gpu/budget.rs`), QEMU's default `max_hostmem` for virtio-gpu.
pub const DEFAULT_MAX_HOSTMEM: u64 = 256 << 20;

/// Default most resources alive at once (more is ERR_OUT_OF_MEMORY): each id is a map entry
/// and a renderer object even when it costs no pixels (guest blobs).
pub const DEFAULT_MAX_RESOURCES: usize = 16384;

/// Default most contexts alive at once (more is ERR_OUT_OF_MEMORY): each is a GL or Vulkan
/// context inside the renderer library, whose memory the device cannot see.
pub const DEFAULT_MAX_CONTEXTS: usize = 1024;

/// Largest scanout width or height: a whole-scanout flush reads back `width * height * 4`
/// bytes (16384 x 16384 is 1 GiB, still charged to the budget); real modes stay far below.
pub const MAX_SCANOUT_DIMENSION: u32 = 16384;

/// Largest flush buffer kept between flushes (two 3840x2160 frames of 4 bytes a pixel); a
/// larger one is freed after its flush, so a single huge flush does not hold memory.
pub const FLUSH_BUFFER_KEEP_BYTES: usize = 64 << 20;

/// Most blobs mapped into the host-visible region at once: each is a mapping in the frontend's
/// process (QEMU makes a memory region per mapping), which the budget cannot see.
pub const MAX_BLOB_MAPPINGS: usize = 16384;

/// Most fenced entries held for their fences: a driver cannot have more chains outstanding
/// than its queues hold (two of at most [`MAX_QUEUE_SIZE`]); more means it reused descriptors
/// the device still holds. Beyond it a fenced command is answered at once.
pub const MAX_HELD_FENCES: usize = NUM_QUEUES * MAX_QUEUE_SIZE;

// ---- the display and the logs ----------------------------------------------------------------

/// Largest pixel payload of one VHOST_USER_GPU_UPDATE: the protocol has no bound (QEMU
/// allocates what the header says), so larger damage is split into several messages.
pub const MAX_UPDATE_PAYLOAD_BYTES: usize = 4 << 20;

/// Guest-triggerable log lines let through at `warn` per [`LOG_WINDOW`]: a guest repeating a
/// bad request must not flood the host's log.
pub const LOG_LINES_PER_WINDOW: u32 = 10;

/// The window of [`LOG_LINES_PER_WINDOW`].
pub const LOG_WINDOW: Duration = Duration::from_secs(1);

// ---- what the host budget charges for the device's own records --------------------------------

/// Charged per resource besides its pixels: the device's `ResourceState` and map slot (a test
/// pins them below half of this), the renderer's own record of the resource, and a blob
/// mapping's record.
pub const RESOURCE_RECORD_BYTES: u64 = 1024;

/// Charged per backing entry: `GuestBacking` keeps 24 bytes an entry (the entry and its start),
/// and per host range a library renderer keeps a 16-byte `iovec` besides our 16-byte range; an
/// entry crossing guest memory region boundaries is several ranges: 128 covers three (a test
/// pins the structs below it).
pub const BACKING_ENTRY_BYTES: u64 = 128;

/// Charged per backing besides its entries: the `GuestBacking` itself, the clone of the guest
/// memory map it holds (a few `Arc`ed regions) and the renderer's wrapper.
pub const BACKING_RECORD_BYTES: u64 = 256;

/// Charged per fenced entry held for its fence: a `HeldEntry`, doubled for the growth of the
/// timeline's `Vec` (a test pins it).
pub const HELD_FENCE_BYTES: u64 = 64;

/// Charged per context besides what its library allocates (not counted, see `gpu/budget.rs`):
/// the device's `ContextState` and map slot.
pub const CONTEXT_RECORD_BYTES: u64 = 256;

/// Charged per resource attached to a context: an entry of the context's set on our side and
/// of the library's per-context resource table.
pub const CONTEXT_ATTACHMENT_BYTES: u64 = 64;

/// Bytes per texel charged for a RESOURCE_CREATE_3D format the device does not know: no
/// gallium format but the 64-bit-per-channel ones (listed) has more.
pub const UNKNOWN_FORMAT_BYTES_PER_TEXEL: u64 = 16;

// ---- the safe crates' bounds, pinned against the device's -------------------------------------

#[cfg(feature = "virglrenderer")]
const _: () = {
    // One value each: the crate allocates for the capsets and streams the device passes on.
    assert!(virglrenderer::MAX_CAPSET_SIZE == MAX_CAPSET_SIZE);
    assert!(virglrenderer::MAX_SUBMIT_WORDS * 4 == MAX_SUBMIT_3D_SIZE as usize);
    assert!(virglrenderer::MAX_RING_IDX + 1 == MAX_RINGS as u32);
    // An entry crossing a guest memory region boundary becomes two ranges, so a backing of this
    // many entries can still exceed the crate's bound: the crate then refuses it (an error
    // response), nothing overflows.
    assert!(virglrenderer::MAX_BACKING_RANGES == MAX_BACKING_ENTRIES as usize);
};

#[cfg(feature = "gfxstream")]
const _: () = {
    assert!(gfxstream::MAX_RING_IDX as u32 + 1 == MAX_RINGS as u32);
    assert!(gfxstream::MAX_BACKING_ENTRIES == MAX_BACKING_ENTRIES as usize);
    assert!(gfxstream::MAX_SUBMIT_BYTES == MAX_SUBMIT_3D_SIZE as usize);
    assert!(gfxstream::MAX_CAPSET_SIZE == MAX_CAPSET_SIZE);
};
