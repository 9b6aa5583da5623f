//! The crate's error type.

use std::time::Duration;

/// Errors of the safe gfxstream binding.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `stream_renderer_init` was already called in this process. The library keeps global state
    /// that teardown does not reset: it cannot be initialised a second time, even after the first
    /// instance was dropped.
    #[error(
        "gfxstream was already initialised in this process (the library cannot be initialised \
         twice, even after teardown)"
    )]
    AlreadyInitialized,
    /// The renderer flags are inconsistent or contain unknown bits.
    #[error("invalid gfxstream renderer flags {flags:#x}: {reason}")]
    InvalidFlags {
        /// The flags asked for.
        flags: u32,
        /// What is wrong with them.
        reason: &'static str,
    },
    /// The GLX path (no `USE_EGL` flag) was asked for, but `DISPLAY` is not set: the library
    /// would block forever in init.
    #[error(
        "gfxstream without the USE_EGL flag renders through GLX and needs an X display, but \
         DISPLAY is not set (use the EGL flag, with EGL_PLATFORM=surfaceless on a headless host)"
    )]
    NoXDisplay,
    /// `stream_renderer_init` did not return in time. The library blocks forever when it cannot
    /// create its renderer (no usable EGL display or GLES config); the init thread stays blocked
    /// and the process should exit.
    #[error(
        "gfxstream init did not return within {0:?}: the library blocks forever when it finds no \
         usable EGL display (on a headless Mesa host set EGL_PLATFORM=surfaceless)"
    )]
    InitTimedOut(Duration),
    /// The init thread could not be spawned.
    #[error("could not spawn the gfxstream init thread: {0}")]
    InitThread(#[source] std::io::Error),
    /// The init thread ended without reporting a result.
    #[error("the gfxstream init thread ended without a result")]
    InitThreadLost,
    /// The fence eventfd could not be created.
    #[error("could not create the fence eventfd: {0}")]
    EventFd(#[source] std::io::Error),
    /// A string argument contains a NUL byte.
    #[error("{0} contains a NUL byte")]
    NulByte(&'static str),
    /// A library call failed. `errno` is positive whatever sign the library used (it mixes
    /// `-EINVAL`, `+EINVAL` and `+ENOENT`).
    #[error("{call} failed: {}", std::io::Error::from_raw_os_error(*.errno))]
    Library {
        /// The C function.
        call: &'static str,
        /// The error number, made positive.
        errno: i32,
    },
    /// Id 0 is reserved (resource and context ids start at 1).
    #[error("{0} id 0 is reserved")]
    ZeroId(&'static str),
    /// A resource with this id already exists (the library would silently replace it).
    #[error("resource {0} already exists")]
    ResourceExists(u32),
    /// A context with this id already exists (the library would silently replace it).
    #[error("context {0} already exists")]
    ContextExists(u32),
    /// No context with this id exists.
    #[error("context {0} does not exist")]
    UnknownContext(u32),
    /// A context's debug name is longer than [`crate::MAX_CONTEXT_NAME`].
    #[error("context name of {0} bytes is longer than the limit")]
    NameTooLong(usize),
    /// A fence ring index above [`crate::MAX_RING_IDX`].
    #[error("ring index {0} is out of range")]
    InvalidRingIndex(u8),
    /// Resource dimensions that are zero, above [`crate::MAX_DIMENSION`] or overflow.
    #[error("resource {id}: invalid size {width}x{height}x{depth}")]
    InvalidDimensions {
        /// The resource id.
        id: u32,
        /// Width.
        width: u32,
        /// Height.
        height: u32,
        /// Depth.
        depth: u32,
    },
    /// A transfer box that is empty or not inside the resource.
    #[error("resource {id}: transfer box {x},{y} {w}x{h} is empty or outside {width}x{height}")]
    BoxOutOfBounds {
        /// The resource id.
        id: u32,
        /// Box left.
        x: u32,
        /// Box top.
        y: u32,
        /// Box width.
        w: u32,
        /// Box height.
        h: u32,
        /// Resource width.
        width: u32,
        /// Resource height.
        height: u32,
    },
    /// Transfers and blob operations that do not apply to this kind of resource.
    #[error("resource {id}: {what} is not possible on this kind of resource")]
    WrongResourceKind {
        /// The resource id.
        id: u32,
        /// The operation.
        what: &'static str,
    },
    /// The resource has no backing memory attached (transfers need one: the library sizes its
    /// staging copy from it).
    #[error("resource {0} has no backing attached")]
    NoBacking(u32),
    /// The backing is smaller than the resource: the library would overflow its staging copy.
    #[error("resource {id}: backing of {have} bytes is smaller than the {need} bytes the resource needs")]
    BackingTooSmall {
        /// The resource id.
        id: u32,
        /// Bytes attached.
        have: u64,
        /// Bytes needed.
        need: u64,
    },
    /// A backing with no regions, too many regions or too many bytes.
    #[error("resource {id}: invalid backing ({entries} regions, {bytes} bytes)")]
    InvalidBacking {
        /// The resource id.
        id: u32,
        /// Number of regions.
        entries: usize,
        /// Total bytes (saturated).
        bytes: u64,
    },
    /// A submitted command that is too short or too long for its opcode.
    #[error("command {opcode:#x} of {len} bytes: expected at least {min} and at most {max}")]
    BadCommandLength {
        /// The opcode (0 when the buffer has no room for one).
        opcode: u32,
        /// The length given.
        len: usize,
        /// The minimum length for the opcode.
        min: usize,
        /// [`crate::MAX_SUBMIT_BYTES`].
        max: usize,
    },
    /// A command opcode gfxstream does not know.
    #[error("unknown gfxstream command opcode {0:#x}")]
    UnknownCommand(u32),
    /// The library reported a capset larger than [`crate::MAX_CAPSET_SIZE`].
    #[error("capset {id} of {size} bytes is larger than the limit")]
    CapsetTooLarge {
        /// The capset id.
        id: u32,
        /// The size the library reported.
        size: u32,
    },
    /// The library does not know this capset.
    #[error("capset {0} is not supported by gfxstream")]
    UnsupportedCapset(u32),
    /// Blob arguments this binding refuses (unknown memory type or flags, zero or oversized size,
    /// or `CREATE_GUEST_HANDLE`, for which the library dereferences a handle this API has no way
    /// to give).
    #[error("resource {id}: unsupported blob arguments: {reason}")]
    InvalidBlob {
        /// The resource id.
        id: u32,
        /// What is wrong.
        reason: &'static str,
    },
    /// `stream_renderer_create_blob` reported success (it always does) but created nothing.
    #[error("resource {0}: the library did not create the blob (see its log)")]
    BlobNotCreated(u32),
    /// A mapping the library returned is null or empty, or an access is outside it.
    #[error("resource {id}: mapping access at {offset}+{len} is outside the {size}-byte mapping")]
    MappingOutOfBounds {
        /// The resource id.
        id: u32,
        /// Offset asked for.
        offset: u64,
        /// Length asked for.
        len: usize,
        /// Mapping size.
        size: u64,
    },
    /// The library returned an invalid mapping (null address, or a size that does not fit).
    #[error("resource {0}: the library returned an invalid mapping")]
    BadMapping(u32),
    /// The library exported a handle that is not a file descriptor.
    #[error("resource {id}: the library exported an invalid handle {handle}")]
    BadHandle {
        /// The resource id.
        id: u32,
        /// The raw value.
        handle: i64,
    },
}

/// Results of this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// Normalises a library return code: 0 is success, anything else (positive or negative) is an
/// [`Error::Library`] with a positive errno.
pub(crate) fn check(call: &'static str, ret: libc::c_int) -> Result<()> {
    if ret == 0 {
        Ok(())
    } else {
        Err(Error::Library {
            call,
            errno: ret.checked_abs().unwrap_or(libc::EINVAL),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn return_codes_are_normalised() {
        assert!(check("f", 0).is_ok());
        for ret in [-22, 22] {
            match check("f", ret) {
                Err(Error::Library { call, errno }) => {
                    assert_eq!(call, "f");
                    assert_eq!(errno, 22);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(matches!(
            check("f", i32::MIN),
            Err(Error::Library {
                errno: libc::EINVAL,
                ..
            })
        ));
    }
}
