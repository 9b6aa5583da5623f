//! Handing the C heap's free memory back to the system after large releases: [`HeapTrimmer`]
//! (RESOURCE_UNREF, CTX_DESTROY and a reset tell it what was freed) and its bounds
//! `TRIM_AFTER_RELEASED_BYTES` and `TRIM_MIN_INTERVAL`.

/// Host memory released by RESOURCE_UNREF (as accounted against `max_hostmem`) after which the
/// C heap's free memory is handed back to the system (see `HeapTrimmer`).
pub const TRIM_AFTER_RELEASED_BYTES: u64 = 64 << 20;

/// Shortest time between two hand-backs of free heap memory (`HeapTrimmer`): a guest that
/// destroys contexts in a loop costs at most one `malloc_trim` a second.
pub const TRIM_MIN_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// Hands the C heap's free memory back to the system after large releases.
///
/// glibc's `free` keeps freed memory in its arenas (the GL driver's textures, shader variants
/// and per-context state are freed there when a guest destroys resources and contexts), so
/// the process's RSS stays at its high-water mark: measured with llvmpipe, a 10,000-command
/// 3D storm left 216 MiB of anonymous RSS after every resource and context was gone, of which
/// `malloc_trim(0)` returned 170 MiB; the live heap (valgrind) was the same after 1,500 and
/// 6,000 commands, i.e. nothing leaked. So after a guest reset, a context destroy, or once
/// [`TRIM_AFTER_RELEASED_BYTES`] of resources were unreferenced, the device trims the heap, at
/// most once per [`TRIM_MIN_INTERVAL`] (QEMU trims the same way after RCU frees).
#[derive(Debug, Default)]
pub(super) struct HeapTrimmer {
    /// Host memory of resources unreferenced since the last trim.
    released: u64,
    /// Whether a context was destroyed (or the device reset) since the last trim.
    pub(super) dirty: bool,
    /// When the heap was last trimmed.
    pub(super) last: Option<std::time::Instant>,
}

impl HeapTrimmer {
    /// Records `bytes` of resources released.
    pub(super) fn released(&mut self, bytes: u64) {
        self.released = self.released.saturating_add(bytes);
        if self.released >= TRIM_AFTER_RELEASED_BYTES {
            self.dirty = true;
        }
    }

    /// Trims the heap if something large was freed and the last trim is old enough; returns
    /// whether it trimmed.
    pub(super) fn maybe_trim(&mut self) -> bool {
        if !self.dirty || self.last.is_some_and(|t| t.elapsed() < TRIM_MIN_INTERVAL) {
            return false;
        }
        self.dirty = false;
        self.released = 0;
        self.last = Some(std::time::Instant::now());
        release_free_heap();
        true
    }
}

/// Returns the C heap's free memory to the system (glibc's `malloc_trim`; elsewhere nothing).
fn release_free_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim only releases free memory of the allocator's arenas; it takes no
        // pointers and is thread safe (it locks each arena).
        let trimmed = unsafe { libc::malloc_trim(0) };
        log::debug!("heap trimmed (memory returned: {})", trimmed != 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heap_trims_after_large_releases_at_most_once_per_interval() {
        let mut t = HeapTrimmer::default();
        assert!(!t.maybe_trim(), "nothing freed yet");
        t.released(TRIM_AFTER_RELEASED_BYTES - 1);
        assert!(!t.maybe_trim(), "below the threshold");
        t.released(1);
        assert!(t.maybe_trim(), "threshold reached");
        assert_eq!(t.released, 0);
        // Right after a trim: a destroyed context waits for the interval.
        t.dirty = true;
        assert!(!t.maybe_trim(), "within TRIM_MIN_INTERVAL");
        assert!(t.dirty, "still owed");
        t.last = Some(std::time::Instant::now() - TRIM_MIN_INTERVAL);
        assert!(t.maybe_trim(), "after the interval");
        assert!(!t.maybe_trim(), "nothing new freed");
        // Released bytes saturate instead of overflowing.
        t.released(u64::MAX);
        t.released(u64::MAX);
        assert_eq!(t.released, u64::MAX);
    }
}
