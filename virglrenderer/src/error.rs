//! The crate's error type.

use std::fmt;

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// A library errno, printed with its name when it is a known one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Errno(pub i32);

impl Errno {
    /// Converts a library return code (`-EINVAL`, `EINVAL` or `-1`, depending on the function)
    /// to a positive errno.
    pub fn from_ret(ret: i32) -> Self {
        Errno(ret.checked_abs().unwrap_or(i32::MAX))
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "errno {} ({})",
            self.0,
            std::io::Error::from_raw_os_error(self.0)
        )
    }
}

/// Everything that can fail in the safe binding.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A renderer (or a handle of one) is still alive in this process; libvirglrenderer holds
    /// process-global state, so only one renderer may exist at a time.
    #[error("a virglrenderer instance is already initialized in this process")]
    AlreadyInitialized,
    /// `virgl_renderer_init` failed (for example no EGL display: try the surfaceless flags).
    #[error("virgl_renderer_init(flags {flags:#x}) failed: {errno}")]
    Init {
        /// The flags passed.
        flags: u32,
        /// The library's return code as an errno.
        errno: Errno,
    },
    /// The eventfd that `ASYNC_FENCE_CB` fence callbacks signal could not be made.
    #[error("cannot create the fence eventfd: {0}")]
    EventFd(#[source] std::io::Error),
    /// Flag bits unknown to the installed library version were passed to `init`.
    #[error("unknown renderer flag bits {0:#x}")]
    UnknownFlags(u32),
    /// A library call returned an error.
    #[error("{op} failed: {errno}")]
    Library {
        /// The library function that failed.
        op: &'static str,
        /// The library's return code as an errno (`-1` returns show as errno 1).
        errno: Errno,
    },
    /// Id 0 is reserved by the library (contexts and resources start at 1).
    #[error("{0} id 0 is reserved")]
    ZeroId(&'static str),
    /// A context with this id already exists.
    #[error("context id {0} is already in use")]
    ContextIdInUse(u32),
    /// A resource with this id already exists.
    #[error("resource id {0} is already in use")]
    ResourceIdInUse(u32),
    /// A caller-supplied value exceeds a documented bound of this crate.
    #[error("{what} is {value}, more than the maximum {max}")]
    TooLarge {
        /// What was too large.
        what: &'static str,
        /// The value given.
        value: u64,
        /// The bound.
        max: u64,
    },
    /// A caller-supplied argument is invalid.
    #[error("invalid argument: {0}")]
    InvalidArgument(&'static str),
    /// A caller buffer is too small for the requested transfer.
    #[error("buffer of {got} bytes is too small, {needed} needed")]
    BufferTooSmall {
        /// Bytes the operation needs.
        needed: u64,
        /// Bytes the buffer has.
        got: u64,
    },
    /// A rectangle lies (partly) outside the resource.
    #[error("rectangle {x},{y} {width}x{height} is outside resource {resource} ({res_width}x{res_height})")]
    OutOfBounds {
        /// The resource id.
        resource: u32,
        /// Rectangle left edge.
        x: u32,
        /// Rectangle top edge.
        y: u32,
        /// Rectangle width.
        width: u32,
        /// Rectangle height.
        height: u32,
        /// Resource width.
        res_width: u32,
        /// Resource height.
        res_height: u32,
    },
    /// The resource already has backing memory attached.
    #[error("resource {0} already has backing memory attached")]
    BackingAlreadyAttached(u32),
    /// The operation needs backing memory and the resource has none.
    #[error("resource {0} has no backing memory attached")]
    NoBacking(u32),
    /// The operation only applies to blob resources.
    #[error("resource {0} is not a blob resource")]
    NotBlob(u32),
    /// The operation only applies to classic (non-blob) resources.
    #[error("resource {0} is a blob resource")]
    IsBlob(u32),
    /// The blob is already mapped.
    #[error("resource {0} is already mapped")]
    AlreadyMapped(u32),
    /// The blob is not mapped.
    #[error("resource {0} is not mapped")]
    NotMapped(u32),
    /// The capset is not known to (or not enabled in) this renderer.
    #[error("capset {0} is not supported by this renderer")]
    UnknownCapset(u32),
    /// The library exported a handle of an unknown type (the fd was closed).
    #[error("exported handle of unknown type {0}")]
    UnknownHandleType(u32),
    /// The pixel format has no known size (read-back needs bytes per pixel).
    #[error("virgl format {0} is not supported for this operation")]
    UnsupportedFormat(u32),
    /// The renderer cannot export a dmabuf for this resource; read the pixels back instead.
    #[error("dmabuf export is not possible: {0}")]
    DmabufUnsupported(&'static str),
}
