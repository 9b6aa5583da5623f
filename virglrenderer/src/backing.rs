//! Backing memory of resources (the guest pages of `RESOURCE_ATTACH_BACKING`).
//!
//! libvirglrenderer keeps the iovec array and the memory it points to for as long as the
//! backing stays attached, and reads or writes it on every transfer. A [`Resource`] therefore
//! takes ownership of a [`BackingMemory`] value when the backing is attached and only gives it
//! up (or drops it) after the library has been told to detach it: the memory outlives the
//! attachment by construction.
//!
//! [`Resource`]: crate::Resource

use std::ptr::NonNull;

/// One contiguous range of host memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostRange {
    ptr: NonNull<u8>,
    len: usize,
}

impl HostRange {
    /// A range of `len` bytes at `ptr`.
    ///
    /// # Safety
    ///
    /// `ptr..ptr + len` must be one mapped region of host memory that is valid for reads and
    /// writes for as long as the [`BackingMemory`] value returning this range lives (moving that
    /// value must not move or unmap the memory).
    pub unsafe fn new(ptr: NonNull<u8>, len: usize) -> Self {
        HostRange { ptr, len }
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the range is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub(crate) fn to_iovec(self) -> libc::iovec {
        libc::iovec {
            iov_base: self.ptr.as_ptr().cast(),
            iov_len: self.len,
        }
    }
}

/// Host memory that can back a resource.
///
/// # Safety
///
/// Implementors guarantee that every [`HostRange`] returned by [`ranges`](Self::ranges) stays
/// mapped and valid for reads and writes for as long as the value lives, including after the
/// value is moved, and that nothing frees or remaps it meanwhile. The renderer may read and
/// write the ranges at any time while they are attached (guest memory is shared with the guest
/// anyway; owned buffers must not be accessed through other references meanwhile).
pub unsafe trait BackingMemory {
    /// The ranges, in order; called once when the backing is attached.
    fn ranges(&mut self) -> Vec<HostRange>;
}

// SAFETY: the Vec's heap buffer stays in place while the Vec is moved, and is freed only when the
// Vec is dropped; the resource owns it while attached, so nobody can push to it (reallocate) or
// access it through another reference meanwhile.
unsafe impl BackingMemory for Vec<u8> {
    fn ranges(&mut self) -> Vec<HostRange> {
        match NonNull::new(self.as_mut_ptr()) {
            // SAFETY: the buffer is `self.len()` initialised bytes, valid while the Vec lives.
            Some(ptr) if !self.is_empty() => vec![unsafe { HostRange::new(ptr, self.len()) }],
            _ => Vec::new(),
        }
    }
}

/// Several owned buffers as one scattered backing (tests use it to mimic guest pages).
#[derive(Debug, Default)]
pub struct ScatteredBuffers(pub Vec<Vec<u8>>);

// SAFETY: each inner Vec keeps its heap buffer in place while the outer Vec is moved; the value is
// owned by the resource while attached (see the `Vec<u8>` impl).
unsafe impl BackingMemory for ScatteredBuffers {
    fn ranges(&mut self) -> Vec<HostRange> {
        self.0.iter_mut().flat_map(|b| b.ranges()).collect()
    }
}
