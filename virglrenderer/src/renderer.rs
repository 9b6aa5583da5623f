//! The renderer: process-global library state, capsets, fences, and creation of contexts and
//! resources.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeSet, VecDeque};
use std::ffi::{c_int, c_void};
use std::marker::PhantomData;
use std::ops::BitOr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use virglrenderer_sys as sys;

use crate::backing::BackingMemory;
use crate::context::Context;
use crate::error::{Errno, Error, Result};
use crate::resource::{Attached, BlobCreate, BlobMem, Resource, ResourceCreate3d, ResourceKind};

/// Capset id of the original virgl capabilities (`VIRTIO_GPU_CAPSET_VIRGL`).
pub const CAPSET_VIRGL: u32 = 1;
/// Capset id of the extended virgl capabilities (`VIRTIO_GPU_CAPSET_VIRGL2`).
pub const CAPSET_VIRGL2: u32 = 2;
/// Capset id of Venus (Vulkan), available when the renderer was initialized with
/// [`RendererFlags::VENUS`].
pub const CAPSET_VENUS: u32 = 4;
/// Capset id of the DRM native-context capset, available with [`RendererFlags::DRM`].
pub const CAPSET_DRM: u32 = 6;

/// Largest capset this crate will allocate for: 64 KiB (the VIRGL2 capset is 1376 bytes, Venus's
/// a few hundred; virtio-gpu devices hand capsets to the guest in one response buffer).
pub const MAX_CAPSET_SIZE: u32 = 64 * 1024;
/// Largest number of backing ranges (iovecs) per resource; QEMU caps `nr_entries` the same.
pub const MAX_BACKING_RANGES: usize = 16 * 1024;
/// Longest context debug name passed to the library (the virtio-gpu `debug_name` field).
pub const MAX_CONTEXT_NAME_LEN: usize = 64;

/// Set while a renderer (or any handle of one) lives: the library is process-global.
static INITIALIZED: AtomicBool = AtomicBool::new(false);

/// Flags of `virgl_renderer_init` (`VIRGL_RENDERER_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RendererFlags(u32);

impl RendererFlags {
    /// Use EGL for the GL contexts.
    pub const USE_EGL: Self = Self(1);
    /// Wait for GPU fences in a library thread and signal [`VirglRenderer::poll_fd`].
    pub const THREAD_SYNC: Self = Self(1 << 1);
    /// Use GLX.
    pub const USE_GLX: Self = Self(1 << 2);
    /// Use a surfaceless EGL platform (no window system, no render node needed with llvmpipe).
    pub const USE_SURFACELESS: Self = Self(1 << 3);
    /// Use GLES instead of desktop GL.
    pub const USE_GLES: Self = Self(1 << 4);
    /// Blob resources must be exportable as fds (multi-process VMMs).
    pub const USE_EXTERNAL_BLOB: Self = Self(1 << 5);
    /// Enable the Venus (Vulkan) renderer.
    pub const VENUS: Self = Self(1 << 6);
    /// Disable the virgl (GL) renderer.
    pub const NO_VIRGL: Self = Self(1 << 7);
    /// With THREAD_SYNC: fence callbacks run on the library's threads (fences are still queued
    /// for [`VirglRenderer::poll`], and [`VirglRenderer::poll_fd`] is then this crate's own
    /// eventfd, which the callbacks signal). Needed to hear of the fences of Venus contexts in
    /// the render server without polling each context.
    pub const ASYNC_FENCE_CB: Self = Self(1 << 8);
    /// Run Venus in a separate render server process.
    pub const RENDER_SERVER: Self = Self(1 << 9);
    /// Enable the DRM native-context renderer.
    pub const DRM: Self = Self(1 << 10);
    /// Enable video encode/decode.
    pub const USE_VIDEO: Self = Self(1 << 11);
    /// Use a compatibility-profile GL context (library >= 1.0).
    #[cfg(virgl_1_0)]
    pub const COMPAT_PROFILE: Self = Self(1 << 13);

    #[cfg(not(virgl_1_0))]
    const KNOWN: u32 = (1 << 12) - 1;
    #[cfg(virgl_1_0)]
    const KNOWN: u32 = ((1 << 12) - 1) | (1 << 13);

    /// No flags.
    pub const fn empty() -> Self {
        Self(0)
    }

    /// `USE_EGL | USE_SURFACELESS`: headless GL, works with Mesa llvmpipe and no `/dev/dri`.
    pub const fn surfaceless() -> Self {
        Self(Self::USE_EGL.0 | Self::USE_SURFACELESS.0)
    }

    /// `USE_EGL | USE_SURFACELESS | USE_GLES`.
    pub const fn surfaceless_gles() -> Self {
        Self(Self::USE_EGL.0 | Self::USE_SURFACELESS.0 | Self::USE_GLES.0)
    }

    /// The raw bits.
    pub const fn bits(self) -> u32 {
        self.0
    }

    /// Flags from raw bits; `None` if a bit is unknown to the installed library version.
    pub const fn from_bits(bits: u32) -> Option<Self> {
        if bits & !Self::KNOWN == 0 {
            Some(Self(bits))
        } else {
            None
        }
    }

    /// Whether all flags of `other` are set.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }
}

impl BitOr for RendererFlags {
    type Output = Self;
    fn bitor(self, rhs: Self) -> Self {
        Self(self.0 | rhs.0)
    }
}

/// A completed fence, as reported by the library.
///
/// Completion of a fence implies completion of every earlier fence on the same timeline: the
/// library may report only the newest of several fences that completed together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fence {
    /// A global fence created with [`VirglRenderer::create_fence`].
    Global {
        /// The id it was created with.
        fence_id: u32,
    },
    /// A per-context fence created with [`Context::create_fence`].
    Context {
        /// The context.
        ctx_id: u32,
        /// The ring (timeline) index within the context.
        ring_idx: u32,
        /// The id it was created with.
        fence_id: u64,
    },
}

/// What the library's callbacks reach through their cookie: the fences they report, waiting to
/// be drained by the owner, and the render node handed over on request. Mutexes, because with
/// `ASYNC_FENCE_CB` the callbacks run on the library's sync thread.
#[derive(Debug, Default)]
struct FenceQueue {
    completed: Mutex<VecDeque<Fence>>,
    /// The DRM render node to give the library when it asks (`get_drm_fd`); it takes ownership.
    drm_fd: Mutex<Option<OwnedFd>>,
    /// With `ASYNC_FENCE_CB`: an eventfd the callbacks signal after queueing a fence (the
    /// renderer's [`poll_fd`](VirglRenderer::poll_fd) then).
    wake: Option<OwnedFd>,
}

impl FenceQueue {
    fn push(&self, fence: Fence) {
        let mut q = self.completed.lock().unwrap_or_else(|e| e.into_inner());
        q.push_back(fence);
        drop(q);
        if let Some(wake) = &self.wake {
            let one = 1u64.to_ne_bytes();
            // SAFETY: writes 8 bytes from a live buffer to an eventfd this queue owns. A full
            // counter (EAGAIN) still leaves the fd readable, which is all the reader needs.
            let _ = unsafe { libc::write(wake.as_raw_fd(), one.as_ptr().cast(), one.len()) };
        }
    }

    /// Resets the wake-up eventfd's counter (nonblocking; nothing to read is fine).
    fn clear_wake(&self) {
        if let Some(wake) = &self.wake {
            let mut buf = [0u8; 8];
            // SAFETY: reads at most 8 bytes into a live buffer from an eventfd this queue owns.
            let _ = unsafe { libc::read(wake.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        }
    }

    fn drain(&self) -> Vec<Fence> {
        let mut q = self.completed.lock().unwrap_or_else(|e| e.into_inner());
        q.drain(..).collect()
    }
}

/// `write_fence` callback (global fences).
unsafe extern "C" fn write_fence_cb(cookie: *mut c_void, fence: u32) {
    let cookie = AssertUnwindSafe(cookie);
    let result = catch_unwind(move || {
        let cookie = cookie;
        // SAFETY: the cookie is the `FenceQueue` boxed in `Inner`, passed to
        // `virgl_renderer_init` and freed only after `virgl_renderer_cleanup` returned.
        let queue = unsafe { &*(cookie.0 as *const FenceQueue) };
        queue.push(Fence::Global { fence_id: fence });
    });
    if result.is_err() {
        log::error!("panic in the virglrenderer write_fence callback (fence {fence})");
    }
}

/// `get_drm_fd` callback: hands the caller's render node over to the library (once).
unsafe extern "C" fn get_drm_fd_cb(cookie: *mut c_void) -> c_int {
    let cookie = AssertUnwindSafe(cookie);
    let result = catch_unwind(move || {
        let cookie = cookie;
        // SAFETY: as in `write_fence_cb`.
        let state = unsafe { &*(cookie.0 as *const FenceQueue) };
        let fd = state
            .drm_fd
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        // The library owns (and closes) the fd from here on.
        fd.map_or(-1, IntoRawFd::into_raw_fd)
    });
    result.unwrap_or_else(|_| {
        log::error!("panic in the virglrenderer get_drm_fd callback");
        -1
    })
}

/// Log callback (libvirglrenderer >= 1.0): the library's messages go to the `log` crate
/// (target `virglrenderer`) instead of stderr.
#[cfg(virgl_1_0)]
unsafe extern "C" fn log_cb(
    level: sys::virgl_log_level_flags,
    message: *const std::ffi::c_char,
    _user_data: *mut c_void,
) {
    let message = AssertUnwindSafe(message);
    let _ = catch_unwind(move || {
        let message = message;
        if message.0.is_null() {
            return;
        }
        // SAFETY: the library passes a NUL-terminated string valid for the call.
        let text = unsafe { std::ffi::CStr::from_ptr(message.0) }.to_string_lossy();
        let text = text.trim_end();
        match level {
            sys::VIRGL_LOG_LEVEL_ERROR => log::error!(target: "virglrenderer", "{text}"),
            sys::VIRGL_LOG_LEVEL_WARNING => log::warn!(target: "virglrenderer", "{text}"),
            sys::VIRGL_LOG_LEVEL_INFO => log::info!(target: "virglrenderer", "{text}"),
            _ => log::debug!(target: "virglrenderer", "{text}"),
        }
    });
}

/// `write_context_fence` callback (per-context fences).
unsafe extern "C" fn write_context_fence_cb(
    cookie: *mut c_void,
    ctx_id: u32,
    ring_idx: u32,
    fence_id: u64,
) {
    let cookie = AssertUnwindSafe(cookie);
    let result = catch_unwind(move || {
        let cookie = cookie;
        // SAFETY: as in `write_fence_cb`.
        let queue = unsafe { &*(cookie.0 as *const FenceQueue) };
        queue.push(Fence::Context {
            ctx_id,
            ring_idx,
            fence_id,
        });
    });
    if result.is_err() {
        log::error!("panic in the virglrenderer write_context_fence callback");
    }
}

/// State shared by the renderer and all its handles. Dropped (and the library cleaned up) when
/// the last of them goes.
pub(crate) struct Inner {
    flags: RendererFlags,
    /// The cookie of the callbacks: must outlive `virgl_renderer_cleanup`.
    fences: Box<FenceQueue>,
    /// The library keeps a pointer to the callbacks table: must outlive cleanup too.
    _callbacks: Box<sys::virgl_renderer_callbacks>,
    contexts: RefCell<BTreeSet<u32>>,
    resources: RefCell<BTreeSet<u32>>,
    /// Whether the GL renderer is a software rasterizer (decided on first use).
    software_gl: Cell<Option<bool>>,
    /// The library's GL context is current on the init thread: keep everything on it.
    _thread_affine: PhantomData<*const ()>,
}

impl Inner {
    pub(crate) fn release_context_id(&self, id: u32) {
        self.contexts.borrow_mut().remove(&id);
    }

    pub(crate) fn release_resource_id(&self, id: u32) {
        self.resources.borrow_mut().remove(&id);
    }

    fn capset_info(&self, capset_id: u32) -> Option<CapsetInfo> {
        let enabled = match capset_id {
            CAPSET_VIRGL | CAPSET_VIRGL2 => !self.flags.contains(RendererFlags::NO_VIRGL),
            CAPSET_VENUS => self.flags.contains(RendererFlags::VENUS),
            CAPSET_DRM => self.flags.contains(RendererFlags::DRM),
            _ => false,
        };
        if !enabled {
            return None;
        }
        let mut max_version = 0u32;
        let mut max_size = 0u32;
        // SAFETY: both out pointers are valid u32s on our stack.
        unsafe { sys::virgl_renderer_get_cap_set(capset_id, &mut max_version, &mut max_size) };
        if max_size == 0 {
            return None;
        }
        Some(CapsetInfo {
            capset_id,
            max_version,
            max_size,
        })
    }

    fn capset(&self, capset_id: u32, version: u32) -> Result<Vec<u8>> {
        let info = self
            .capset_info(capset_id)
            .ok_or(Error::UnknownCapset(capset_id))?;
        if info.max_size > MAX_CAPSET_SIZE {
            return Err(Error::TooLarge {
                what: "capset size",
                value: info.max_size.into(),
                max: MAX_CAPSET_SIZE.into(),
            });
        }
        if version > info.max_version {
            return Err(Error::InvalidArgument("capset version above the maximum"));
        }
        let mut data = vec![0u8; info.max_size as usize];
        // SAFETY: the library writes at most `max_size` bytes (the size it reported for this
        // capset) into the buffer, which has exactly that many.
        unsafe { sys::virgl_renderer_fill_caps(capset_id, version, data.as_mut_ptr().cast()) };
        Ok(data)
    }

    /// Whether GL runs on a software rasterizer (llvmpipe, softpipe), which cannot export
    /// dmabufs. The VIRGL2 capset carries the host GL_RENDERER string (virglrenderer writes
    /// "LLVMPIPE" in capitals there).
    pub(crate) fn software_gl(&self) -> bool {
        if let Some(v) = self.software_gl.get() {
            return v;
        }
        let v = match self.capset(CAPSET_VIRGL2, 2) {
            Ok(caps) => {
                let lower: Vec<u8> = caps.iter().map(u8::to_ascii_lowercase).collect();
                [&b"llvmpipe"[..], b"softpipe", b"swrast"]
                    .iter()
                    .any(|needle| lower.windows(needle.len()).any(|w| w == *needle))
            }
            Err(_) => false,
        };
        self.software_gl.set(Some(v));
        v
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let cookie: *mut c_void = (&*self.fences as *const FenceQueue).cast_mut().cast();
        // SAFETY: every context and resource handle holds an `Rc<Inner>`, so none is left; the
        // cookie and callbacks are still alive (fields drop after this body).
        unsafe { sys::virgl_renderer_cleanup(cookie) };
        INITIALIZED.store(false, Ordering::SeqCst);
        log::debug!("virglrenderer cleaned up");
    }
}

/// What a capset is (`GET_CAPSET_INFO`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CapsetInfo {
    /// The capset id.
    pub capset_id: u32,
    /// The highest version the renderer supports.
    pub max_version: u32,
    /// The size in bytes of the capset data.
    pub max_size: u32,
}

/// The libvirglrenderer instance of this process.
///
/// Created by [`VirglRenderer::init`]. Only one can exist at a time: the library's state is
/// process-global, so a second `init` while a renderer **or any of its handles** lives returns
/// [`Error::AlreadyInitialized`]. When the renderer and all its [`Context`]s and [`Resource`]s
/// are dropped, `virgl_renderer_cleanup` runs and a new renderer can be initialized (tested
/// with libvirglrenderer 0.10.4, 1.0.0, 1.1.0 and 1.3.0 on Mesa llvmpipe: re-init works, keeps
/// no fds, and the process's memory stays flat after Mesa's first ~10 init/cleanup cycles).
///
/// The type is neither `Send` nor `Sync`: the library makes its GL context current on the thread
/// that called `init`, and every call must come from that thread. A daemon creates it on a
/// dedicated GPU thread.
pub struct VirglRenderer {
    inner: Rc<Inner>,
}

impl std::fmt::Debug for VirglRenderer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VirglRenderer")
            .field("flags", &self.inner.flags)
            .finish_non_exhaustive()
    }
}

impl VirglRenderer {
    /// Initializes libvirglrenderer with `flags` on the calling thread. With
    /// [`RendererFlags::USE_EGL`] the library picks a render node itself, or renders without one
    /// (surfaceless, Mesa llvmpipe) when there is none.
    pub fn init(flags: RendererFlags) -> Result<Self> {
        Self::init_inner(flags, None)
    }

    /// Like [`init`](Self::init), on the DRM render node `render_node` (an open
    /// `/dev/dri/renderD*`), which the library takes over (with [`RendererFlags::USE_EGL`]). If
    /// the library cannot use it, init fails (no fallback to another GPU) and the fd is closed.
    pub fn init_with_render_node(flags: RendererFlags, render_node: OwnedFd) -> Result<Self> {
        Self::init_inner(flags, Some(render_node))
    }

    fn init_inner(flags: RendererFlags, render_node: Option<OwnedFd>) -> Result<Self> {
        if RendererFlags::from_bits(flags.bits()).is_none() {
            return Err(Error::UnknownFlags(flags.bits() & !RendererFlags::KNOWN));
        }
        if INITIALIZED
            .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            return Err(Error::AlreadyInitialized);
        }
        let has_render_node = render_node.is_some();
        let wake = if flags.contains(RendererFlags::ASYNC_FENCE_CB) {
            // SAFETY: plain integer arguments; the result is checked below.
            let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
            if fd < 0 {
                INITIALIZED.store(false, Ordering::SeqCst);
                return Err(Error::EventFd(std::io::Error::last_os_error()));
            }
            // SAFETY: `fd` was just created and is owned by nothing else.
            Some(unsafe { OwnedFd::from_raw_fd(fd) })
        } else {
            None
        };
        let fences = Box::new(FenceQueue {
            completed: Mutex::default(),
            drm_fd: Mutex::new(render_node),
            wake,
        });
        let mut callbacks = Box::new(sys::virgl_renderer_callbacks {
            // Version 3: write_context_fence is used; no external EGL display (version 4).
            version: 3,
            write_fence: Some(write_fence_cb),
            write_context_fence: Some(write_context_fence_cb),
            get_drm_fd: if has_render_node {
                Some(get_drm_fd_cb)
            } else {
                None
            },
            ..Default::default()
        });
        let cookie: *mut c_void = (&*fences as *const FenceQueue).cast_mut().cast();
        // SAFETY: a plain function pointer and no user data to free; process-global, set
        // before init so init's own messages are routed too.
        #[cfg(virgl_1_0)]
        unsafe {
            sys::virgl_set_log_callback(Some(log_cb), std::ptr::null_mut(), None)
        };
        let raw_flags = c_int::try_from(flags.bits()).map_err(|_| Error::UnknownFlags(flags.0))?;
        // SAFETY: the cookie and the callbacks table are boxed and kept in `Inner` until after
        // `virgl_renderer_cleanup`; the callbacks only read the cookie as a `FenceQueue`.
        let ret = unsafe { sys::virgl_renderer_init(cookie, raw_flags, &mut *callbacks) };
        if ret != 0 {
            // The library cleans itself up on a failed init.
            INITIALIZED.store(false, Ordering::SeqCst);
            return Err(Error::Init {
                flags: flags.bits(),
                errno: Errno::from_ret(ret),
            });
        }
        log::debug!("virglrenderer initialized with flags {:#x}", flags.bits());
        // A render node the library did not ask for is closed now.
        drop(
            fences
                .drm_fd
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take(),
        );
        let renderer = VirglRenderer {
            inner: Rc::new(Inner {
                flags,
                fences,
                _callbacks: callbacks,
                contexts: RefCell::new(BTreeSet::new()),
                resources: RefCell::new(BTreeSet::new()),
                software_gl: Cell::new(None),
                _thread_affine: PhantomData,
            }),
        };
        // Reading the VIRGL2 capset once finishes the library's set-up: besides detecting a
        // software rasterizer, it is where virglrenderer infers the caching type of mappable
        // host blobs (without it their map info stays "none" and mapping them fails).
        if !flags.contains(RendererFlags::NO_VIRGL) {
            let software = renderer.inner.software_gl();
            log::debug!("virglrenderer software GL: {software}");
        }
        Ok(renderer)
    }

    /// The flags the renderer was initialized with.
    pub fn flags(&self) -> RendererFlags {
        self.inner.flags
    }

    /// Whether GL runs on a software rasterizer (llvmpipe/softpipe); such a renderer cannot
    /// export scanouts as dmabufs, use [`Resource::read_pixels`] instead.
    pub fn is_software(&self) -> bool {
        self.inner.software_gl()
    }

    /// Size and version of a capset, or `None` when the renderer does not support it.
    pub fn capset_info(&self, capset_id: u32) -> Option<CapsetInfo> {
        self.inner.capset_info(capset_id)
    }

    /// The capsets this renderer supports, in id order (what `num_capsets` counts).
    pub fn capsets(&self) -> Vec<CapsetInfo> {
        [CAPSET_VIRGL, CAPSET_VIRGL2, CAPSET_VENUS, CAPSET_DRM]
            .into_iter()
            .filter_map(|id| self.capset_info(id))
            .collect()
    }

    /// The capset data (`GET_CAPSET`), `max_size` bytes.
    pub fn capset(&self, capset_id: u32, version: u32) -> Result<Vec<u8>> {
        self.inner.capset(capset_id, version)
    }

    /// Creates context `id` (chosen by the guest, non-zero). `capset_id` selects the context
    /// type (`VIRTIO_GPU_F_CONTEXT_INIT`); `None` creates a VIRGL2 context. `name` is a debug
    /// name of at most [`MAX_CONTEXT_NAME_LEN`] bytes.
    pub fn create_context(&self, id: u32, name: &[u8], capset_id: Option<u32>) -> Result<Context> {
        if id == 0 {
            return Err(Error::ZeroId("context"));
        }
        if name.len() > MAX_CONTEXT_NAME_LEN {
            return Err(Error::TooLarge {
                what: "context name length",
                value: name.len() as u64,
                max: MAX_CONTEXT_NAME_LEN as u64,
            });
        }
        if self.inner.contexts.borrow().contains(&id) {
            return Err(Error::ContextIdInUse(id));
        }
        // name.len() <= 64.
        let nlen = name.len() as u32;
        let ret = match capset_id {
            None => {
                // SAFETY: `name` is `nlen` readable bytes; the library copies them.
                unsafe { sys::virgl_renderer_context_create(id, nlen, name.as_ptr().cast()) }
            }
            Some(capset) => {
                if capset > sys::VIRGL_RENDERER_CONTEXT_FLAG_CAPSET_ID_MASK {
                    return Err(Error::InvalidArgument("capset id above 255"));
                }
                // SAFETY: as above.
                unsafe {
                    sys::virgl_renderer_context_create_with_flags(
                        id,
                        capset,
                        nlen,
                        name.as_ptr().cast(),
                    )
                }
            }
        };
        if ret != 0 {
            return Err(Error::Library {
                op: "virgl_renderer_context_create",
                errno: Errno::from_ret(ret),
            });
        }
        self.inner.contexts.borrow_mut().insert(id);
        Ok(Context::new(self.inner.clone(), id))
    }

    fn reserve_resource_id(&self, id: u32) -> Result<()> {
        if id == 0 {
            return Err(Error::ZeroId("resource"));
        }
        if self.inner.resources.borrow().contains(&id) {
            return Err(Error::ResourceIdInUse(id));
        }
        Ok(())
    }

    /// Creates a classic (3D) resource with id `id` (chosen by the guest, non-zero), without
    /// backing memory (attach it with [`Resource::attach_backing`]).
    pub fn create_resource(&self, id: u32, args: &ResourceCreate3d) -> Result<Resource> {
        self.reserve_resource_id(id)?;
        let mut raw = sys::virgl_renderer_resource_create_args {
            handle: id,
            target: args.target,
            format: args.format,
            bind: args.bind,
            width: args.width,
            height: args.height,
            depth: args.depth,
            array_size: args.array_size,
            last_level: args.last_level,
            nr_samples: args.nr_samples,
            flags: args.flags,
        };
        // SAFETY: `raw` is a valid argument struct; no iovecs are passed.
        let ret = unsafe { sys::virgl_renderer_resource_create(&mut raw, std::ptr::null_mut(), 0) };
        if ret != 0 {
            return Err(Error::Library {
                op: "virgl_renderer_resource_create",
                errno: Errno::from_ret(ret),
            });
        }
        self.inner.resources.borrow_mut().insert(id);
        Ok(Resource::new(
            self.inner.clone(),
            id,
            ResourceKind::Classic(*args),
            None,
        ))
    }

    /// Creates a 2D resource the way virtio-gpu's `RESOURCE_CREATE_2D` does on virgl: a
    /// `PIPE_TEXTURE_2D` render target (and sampler view) of `format` (a virtio-gpu/virgl
    /// format), row 0 at the top.
    pub fn create_resource_2d(
        &self,
        id: u32,
        format: u32,
        width: u32,
        height: u32,
    ) -> Result<Resource> {
        self.create_resource(id, &ResourceCreate3d::texture_2d(format, width, height))
    }

    /// Creates a blob resource (`RESOURCE_CREATE_BLOB`). `ctx` is the context that owns a
    /// host3d blob (required for [`BlobMem::Host3d`] and [`BlobMem::Host3dGuest`]);
    /// `backing` is the guest memory of a guest blob (required for [`BlobMem::Guest`] and
    /// [`BlobMem::Host3dGuest`], at least `size` bytes).
    pub fn create_blob(
        &self,
        id: u32,
        ctx: Option<&Context>,
        args: &BlobCreate,
        backing: Option<Box<dyn BackingMemory>>,
    ) -> Result<Resource> {
        self.reserve_resource_id(id)?;
        let needs_backing = matches!(args.mem, BlobMem::Guest | BlobMem::Host3dGuest);
        let needs_ctx = matches!(args.mem, BlobMem::Host3d | BlobMem::Host3dGuest);
        if needs_ctx && ctx.is_none() {
            return Err(Error::InvalidArgument("host3d blobs need a context"));
        }
        let attached = match (needs_backing, backing) {
            (true, Some(b)) => {
                let attached = Attached::new(b)?;
                if attached.total_len() < args.size {
                    return Err(Error::BufferTooSmall {
                        needed: args.size,
                        got: attached.total_len(),
                    });
                }
                Some(attached)
            }
            (true, None) => return Err(Error::NoBacking(id)),
            (false, Some(_)) => return Err(Error::InvalidArgument("host3d blobs take no backing")),
            (false, None) => None,
        };
        let (iov_ptr, num_iovs) = match &attached {
            Some(a) => a.raw_parts()?,
            None => (std::ptr::null(), 0),
        };
        let raw = sys::virgl_renderer_resource_create_blob_args {
            res_handle: id,
            ctx_id: ctx.map_or(0, Context::id),
            blob_mem: args.mem.raw(),
            blob_flags: args.flags,
            blob_id: args.blob_id,
            size: args.size,
            iovecs: iov_ptr,
            num_iovs,
        };
        // SAFETY: `raw` is valid; the iovecs (if any) point into the backing, which the
        // returned `Resource` owns until the library has released the resource.
        let ret = unsafe { sys::virgl_renderer_resource_create_blob(&raw) };
        if ret != 0 {
            return Err(Error::Library {
                op: "virgl_renderer_resource_create_blob",
                errno: Errno::from_ret(ret),
            });
        }
        self.inner.resources.borrow_mut().insert(id);
        Ok(Resource::new(
            self.inner.clone(),
            id,
            ResourceKind::Blob(*args),
            attached,
        ))
    }

    /// Creates a global fence with id `fence_id` on the renderer's main timeline; it is
    /// reported by [`poll`](Self::poll) once all commands submitted before it completed.
    pub fn create_fence(&self, fence_id: u32) -> Result<()> {
        // The library takes an int and stores it as u32 again: a bit-for-bit round trip.
        let ret = unsafe_create_fence(fence_id as c_int);
        if ret != 0 {
            return Err(Error::Library {
                op: "virgl_renderer_create_fence",
                errno: Errno::from_ret(ret),
            });
        }
        Ok(())
    }

    /// Lets the library check its fences (`virgl_renderer_poll`) and returns every fence that
    /// completed since the last call, in the order the library reported them.
    pub fn poll(&self) -> Vec<Fence> {
        self.inner.fences.clear_wake();
        // SAFETY: no arguments; runs on the renderer's thread (the type is !Send).
        unsafe { sys::virgl_renderer_poll() };
        self.inner.fences.drain()
    }

    /// Returns the fences already reported, without asking the library to check for more.
    pub fn take_completed_fences(&self) -> Vec<Fence> {
        self.inner.fences.drain()
    }

    /// An eventfd that is readable when a fence may have completed; then call
    /// [`poll`](Self::poll). With [`RendererFlags::ASYNC_FENCE_CB`] it is this crate's own,
    /// signalled by the fence callbacks (which then run on the library's threads: the only way
    /// to hear of fences of Venus contexts in the render server without polling each context);
    /// otherwise the library's (only with [`RendererFlags::THREAD_SYNC`]). `None` without either
    /// (then `poll` must be called periodically).
    pub fn poll_fd(&self) -> Option<BorrowedFd<'_>> {
        if let Some(wake) = &self.inner.fences.wake {
            return Some(wake.as_fd());
        }
        // SAFETY: no arguments.
        let fd = unsafe { sys::virgl_renderer_get_poll_fd() };
        if fd < 0 {
            return None;
        }
        // SAFETY: the fd belongs to the library and stays open until `virgl_renderer_cleanup`,
        // which cannot run while `self` is borrowed.
        Some(unsafe { BorrowedFd::borrow_raw(fd) })
    }
}

/// Wraps the FFI call so the cast stays in one place.
fn unsafe_create_fence(fence_id: c_int) -> c_int {
    // SAFETY: plain integer arguments (the ctx_id argument is unused by the library).
    unsafe { sys::virgl_renderer_create_fence(fence_id, 0) }
}
