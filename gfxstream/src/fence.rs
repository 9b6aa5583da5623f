//! Fence completion: the library's callbacks and the hand-over to the owner's thread.
//!
//! The library calls the fence callback on its own worker threads, and sometimes synchronously
//! inside `stream_renderer_create_fence` (when the ring has no pending work), always with its
//! timelines mutex held. The callback therefore only records the completion in a process-global
//! table and signals an eventfd; it never calls back into the library. The owner drains the table
//! with [`crate::Gfxstream::completed_fences`] when the eventfd ([`crate::Gfxstream::fence_fd`])
//! is readable.
//!
//! The table keeps, per timeline, the highest completed fence id: completion is in order on a
//! timeline and virtio-gpu completes every fence up to that id, so nothing is lost, and the
//! table is bounded by the number of timelines however many fences the guest creates.

use std::collections::BTreeMap;
use std::ffi::{c_void, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Mutex, OnceLock, PoisonError};

use gfxstream_sys as sys;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::error::{Error, Result};

/// The timeline a fence is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FenceRing {
    /// The device-wide timeline (a virtio-gpu fence without `INFO_RING_IDX`).
    Global,
    /// A context's ring (`INFO_RING_IDX`), `ring_idx` 0..=[`crate::MAX_RING_IDX`].
    Context {
        /// The context id.
        ctx_id: u32,
        /// The ring index.
        ring_idx: u8,
    },
}

/// A fence the library reported as signalled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CompletedFence {
    /// Its timeline.
    pub ring: FenceRing,
    /// The highest completed fence id on that timeline.
    pub fence_id: u64,
}

/// The process-global completion table and its eventfd.
struct FenceTable {
    completed: Mutex<BTreeMap<FenceRing, u64>>,
    event: OnceLock<EventFd>,
}

/// There is one library instance per process, so one table.
static TABLE: FenceTable = FenceTable {
    completed: Mutex::new(BTreeMap::new()),
    event: OnceLock::new(),
};

/// Creates the eventfd (once per process) and returns it.
pub(crate) fn event() -> Result<&'static EventFd> {
    if let Some(e) = TABLE.event.get() {
        return Ok(e);
    }
    let fd = EventFd::new(EFD_NONBLOCK).map_err(Error::EventFd)?;
    Ok(TABLE.event.get_or_init(|| fd))
}

/// Records a completion and wakes the owner. Runs on library threads: no allocation beyond the
/// table's node, no call into the library.
fn record(fence: CompletedFence) {
    let mut table = TABLE
        .completed
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let entry = table.entry(fence.ring).or_insert(fence.fence_id);
    *entry = (*entry).max(fence.fence_id);
    drop(table);
    if let Some(e) = TABLE.event.get() {
        // EAGAIN (counter saturated) only means it is already readable.
        let _ = e.write(1);
    }
}

/// Takes every completion recorded since the last call.
pub(crate) fn drain() -> Vec<CompletedFence> {
    if let Some(e) = TABLE.event.get() {
        // Non-blocking: EAGAIN when nothing was signalled.
        let _ = e.read();
    }
    let mut table = TABLE
        .completed
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    std::mem::take(&mut *table)
        .into_iter()
        .map(|(ring, fence_id)| CompletedFence { ring, fence_id })
        .collect()
}

/// Turns the library's fence into ours.
fn from_raw(fence: &sys::stream_renderer_fence) -> CompletedFence {
    let ring = if fence.flags & sys::STREAM_RENDERER_FLAG_FENCE_RING_IDX != 0 {
        FenceRing::Context {
            ctx_id: fence.ctx_id,
            ring_idx: fence.ring_idx,
        }
    } else {
        FenceRing::Global
    };
    CompletedFence {
        ring,
        fence_id: fence.fence_id,
    }
}

/// `STREAM_RENDERER_PARAM_FENCE_CALLBACK`.
pub(crate) unsafe extern "C" fn fence_callback(
    _user_data: *mut c_void,
    fence: *mut sys::stream_renderer_fence,
) {
    if fence.is_null() {
        return;
    }
    // SAFETY: the library passes a fence that is valid for the duration of the call; it is
    // copied out at once.
    let raw = unsafe { *fence };
    // A panic must not unwind into C.
    let _ = catch_unwind(|| record(from_raw(&raw)));
}

/// `STREAM_RENDERER_PARAM_DEBUG_CALLBACK`: the library's log lines go to `log` (target
/// `gfxstream`) instead of stdout/stderr.
pub(crate) unsafe extern "C" fn debug_callback(
    _user_data: *mut c_void,
    debug: *mut sys::stream_renderer_debug,
) {
    if debug.is_null() {
        return;
    }
    // SAFETY: the library passes a valid struct for the duration of the call.
    let raw = unsafe { *debug };
    if raw.message.is_null() {
        return;
    }
    // SAFETY: `message` is a NUL-terminated string valid for the duration of the call.
    let message = unsafe { CStr::from_ptr(raw.message) };
    let _ = catch_unwind(AssertUnwindSafe(|| {
        let level = match raw.debug_type {
            sys::STREAM_RENDERER_DEBUG_ERROR => log::Level::Error,
            sys::STREAM_RENDERER_DEBUG_WARN => log::Level::Warn,
            sys::STREAM_RENDERER_DEBUG_INFO => log::Level::Info,
            _ => log::Level::Debug,
        };
        log::log!(target: "gfxstream", level, "{}", message.to_string_lossy().trim_end());
    }));
}
