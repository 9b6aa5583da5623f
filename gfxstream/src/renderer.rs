//! The library instance: init (once per process, with a watchdog), capsets, contexts, fences,
//! snapshot; and the lock that serialises every library call.

use std::collections::HashSet;
use std::ffi::CString;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use gfxstream_sys as sys;
use vmm_sys_util::eventfd::EventFd;

use crate::context::Context;
use crate::error::{check, Error, Result};
use crate::fence::{self, CompletedFence, FenceRing};
use crate::protocol::{Capset, RendererFlags, MAX_CAPSET_SIZE, MAX_CONTEXT_NAME, MAX_RING_IDX};

/// Set by the first [`Gfxstream::init`] of the process and never cleared: the library cannot be
/// initialised again, even after teardown.
static INIT_CLAIMED: AtomicBool = AtomicBool::new(false);

/// How long [`InitOptions::default`] lets init run before giving up.
pub const DEFAULT_INIT_TIMEOUT: Duration = Duration::from_secs(30);

/// Ids the library knows, tracked because it validates neither (it silently replaces a context
/// or resource created twice with the same id).
#[derive(Debug, Default)]
pub(crate) struct Ids {
    pub(crate) contexts: HashSet<u32>,
    pub(crate) resources: HashSet<u32>,
}

/// What every handle shares: the lock held around every library call. The library takes no
/// locks of its own around its resource and context tables.
#[derive(Debug)]
pub(crate) struct Shared {
    ids: Mutex<Ids>,
}

impl Shared {
    /// Locks the library for one call (or a short sequence of calls).
    pub(crate) fn lock(&self) -> MutexGuard<'_, Ids> {
        self.ids.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // The last handle is gone: every context and resource was destroyed by its own drop.
        let _guard = self.lock();
        // SAFETY: init succeeded (a `Shared` exists only then) and no other call can be in
        // flight: this is the last reference.
        unsafe { sys::stream_renderer_teardown() };
    }
}

/// How to initialise the library.
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// Renderer flags; [`RendererFlags::validate`] must accept them.
    pub flags: RendererFlags,
    /// The display size the library is told about (`WIN0_WIDTH`/`WIN0_HEIGHT`), if any.
    pub display_size: Option<(u32, u32)>,
    /// `"Name:enabled,Other:disabled"` feature overrides (an unknown name fails init).
    pub renderer_features: Option<String>,
    /// How long init may run before [`Error::InitTimedOut`].
    pub init_timeout: Duration,
}

impl Default for InitOptions {
    /// EGL, GLES and Vulkan (the host needs a Vulkan driver; lavapipe will do), no display
    /// size, no feature overrides, [`DEFAULT_INIT_TIMEOUT`].
    fn default() -> Self {
        InitOptions {
            flags: RendererFlags::USE_EGL | RendererFlags::USE_GLES | RendererFlags::USE_VK,
            display_size: None,
            renderer_features: None,
            init_timeout: DEFAULT_INIT_TIMEOUT,
        }
    }
}

/// What `stream_renderer_get_cap_set` reports for a capset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CapsetInfo {
    /// The capset.
    pub capset: Capset,
    /// The highest version. The library never writes it: this is always 0, and the capset's
    /// contents ignore the version asked for.
    pub max_version: u32,
    /// Its size in bytes.
    pub max_size: u32,
}

/// The gfxstream renderer of this process.
///
/// There is at most one per process ([`Error::AlreadyInitialized`] otherwise, also after it was
/// dropped). Every library call made through it, its [`Context`]s and its
/// [`Resource`](crate::Resource)s is serialised by one lock, so the handles may be used from any
/// thread. The library is torn down when the last of them is dropped.
#[derive(Debug)]
pub struct Gfxstream {
    shared: Arc<Shared>,
    event: &'static EventFd,
    /// The flags of init: which guest APIs the library serves.
    flags: RendererFlags,
}

/// A `stream_renderer_param` list that owns what its pointers point to.
struct InitParams {
    params: Vec<sys::stream_renderer_param>,
    _features: Option<CString>,
}

impl Gfxstream {
    /// Initialises the library.
    ///
    /// Before calling it: refuses inconsistent flags, and the GLX path without `DISPLAY` (where
    /// the library would block forever). Init then runs on its own thread; if it does not return
    /// within `init_timeout` (the library blocks forever when it finds no usable EGL display),
    /// [`Error::InitTimedOut`] is returned and that thread stays blocked: the process should
    /// exit. A failed init also uses up the process's one init (the library's state after a
    /// failure is not known to be clean). Init sets environment variables (`setenv`): call it
    /// before starting threads that read the environment.
    pub fn init(options: &InitOptions) -> Result<Gfxstream> {
        options.flags.validate()?;
        let egl = options.flags.contains(RendererFlags::USE_EGL)
            || ["ANDROID_GFXSTREAM_EGL", "ANDROID_EGL_ON_EGL"]
                .iter()
                .any(|v| std::env::var(v).as_deref() == Ok("1"));
        if !egl && std::env::var_os("DISPLAY").is_none() {
            return Err(Error::NoXDisplay);
        }
        let features = options
            .renderer_features
            .as_deref()
            .map(CString::new)
            .transpose()
            .map_err(|_| Error::NulByte("renderer features"))?;
        let event = fence::event()?;
        if INIT_CLAIMED.swap(true, Ordering::SeqCst) {
            return Err(Error::AlreadyInitialized);
        }
        let params = Self::params(options, features);
        Self::run_init(params, options.init_timeout)?;
        log::info!(
            "gfxstream initialised with flags {:#x}",
            options.flags.bits()
        );
        Ok(Gfxstream {
            shared: Arc::new(Shared {
                ids: Mutex::new(Ids::default()),
            }),
            event,
            flags: options.flags,
        })
    }

    fn params(options: &InitOptions, features: Option<CString>) -> InitParams {
        let fence_cb: sys::stream_renderer_fence_callback = Some(fence::fence_callback);
        let debug_cb: sys::stream_renderer_debug_callback = Some(fence::debug_callback);
        let param = |key: u32, value: u64| sys::stream_renderer_param {
            key: u64::from(key),
            value,
        };
        let mut params = vec![
            // The callbacks use a process-global table, not the cookie.
            param(sys::STREAM_RENDERER_PARAM_USER_DATA, 0),
            param(
                sys::STREAM_RENDERER_PARAM_RENDERER_FLAGS,
                u64::from(options.flags.bits()),
            ),
            param(
                sys::STREAM_RENDERER_PARAM_FENCE_CALLBACK,
                fence_cb.map_or(0, |f| f as usize as u64),
            ),
            param(
                sys::STREAM_RENDERER_PARAM_DEBUG_CALLBACK,
                debug_cb.map_or(0, |f| f as usize as u64),
            ),
        ];
        if let Some((w, h)) = options.display_size {
            params.push(param(sys::STREAM_RENDERER_PARAM_WIN0_WIDTH, u64::from(w)));
            params.push(param(sys::STREAM_RENDERER_PARAM_WIN0_HEIGHT, u64::from(h)));
        }
        if let Some(f) = &features {
            params.push(param(
                sys::STREAM_RENDERER_PARAM_RENDERER_FEATURES,
                f.as_ptr() as usize as u64,
            ));
        }
        InitParams {
            params,
            _features: features,
        }
    }

    /// Runs `stream_renderer_init` on a thread of its own, waiting at most `timeout`.
    fn run_init(params: InitParams, timeout: Duration) -> Result<()> {
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("gfxstream-init".into())
            .spawn(move || {
                let mut params = params;
                let count = params.params.len() as u64;
                // SAFETY: `params.params` is a valid array of `count` parameters; the pointers in
                // it (callbacks: 'static functions; features: a CString owned by `params`)
                // outlive the call, and the library copies what it keeps.
                let ret = unsafe { sys::stream_renderer_init(params.params.as_mut_ptr(), count) };
                let _ = tx.send(ret);
            })
            .map_err(Error::InitThread)?;
        match rx.recv_timeout(timeout) {
            Ok(ret) => check("stream_renderer_init", ret),
            Err(RecvTimeoutError::Timeout) => {
                log::error!("gfxstream init is still blocked after {timeout:?}");
                Err(Error::InitTimedOut(timeout))
            }
            Err(RecvTimeoutError::Disconnected) => Err(Error::InitThreadLost),
        }
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The flags the library was initialised with.
    pub fn flags(&self) -> RendererFlags {
        self.flags
    }

    /// Whether the library serves `capset` as initialised: the Vulkan capset needs
    /// [`RendererFlags::USE_VK`] and the GLES one [`RendererFlags::USE_GLES`]. The library
    /// itself answers every capset whatever the flags, and a guest driver given the Vulkan capset
    /// of a library without Vulkan waits forever for replies that never come.
    pub fn serves(&self, capset: Capset) -> bool {
        match capset {
            Capset::Vulkan => self.flags.contains(RendererFlags::USE_VK),
            Capset::Gles => self.flags.contains(RendererFlags::USE_GLES),
            Capset::Composer => true,
        }
    }

    /// What the library reports for `capset`, or `None` if it does not answer it or does not
    /// serve it as initialised ([`serves`](Self::serves)).
    pub fn capset_info(&self, capset: Capset) -> Option<CapsetInfo> {
        if !self.serves(capset) {
            return None;
        }
        let (mut max_version, mut max_size) = (0u32, 0u32);
        {
            let _lock = self.shared.lock();
            // SAFETY: both out-pointers are valid u32s (initialised: the library may leave them
            // untouched).
            unsafe {
                sys::stream_renderer_get_cap_set(capset.id(), &mut max_version, &mut max_size)
            };
        }
        (max_size != 0).then_some(CapsetInfo {
            capset,
            max_version,
            max_size,
        })
    }

    /// The capset's contents (`version` is passed on; the library ignores it).
    pub fn capset(&self, capset: Capset, version: u32) -> Result<Vec<u8>> {
        let info = self
            .capset_info(capset)
            .ok_or(Error::UnsupportedCapset(capset.id()))?;
        if info.max_size > MAX_CAPSET_SIZE {
            return Err(Error::CapsetTooLarge {
                id: capset.id(),
                size: info.max_size,
            });
        }
        let mut data = vec![0u8; info.max_size as usize];
        let _lock = self.shared.lock();
        // SAFETY: `data` has the `max_size` bytes the library writes for this capset.
        unsafe { sys::stream_renderer_fill_caps(capset.id(), version, data.as_mut_ptr().cast()) };
        Ok(data)
    }

    /// Creates context `ctx_id` (`capset`: the guest's `context_init` capset, or `None` for 0).
    /// Id 0 and an id in use are refused: the library would accept both.
    pub fn create_context(
        &self,
        ctx_id: u32,
        name: &str,
        capset: Option<Capset>,
    ) -> Result<Context> {
        if ctx_id == 0 {
            return Err(Error::ZeroId("context"));
        }
        if name.len() > MAX_CONTEXT_NAME {
            return Err(Error::NameTooLong(name.len()));
        }
        if let Some(c) = capset.filter(|&c| !self.serves(c)) {
            return Err(Error::UnsupportedCapset(c.id()));
        }
        let mut ids = self.shared.lock();
        if ids.contexts.contains(&ctx_id) {
            return Err(Error::ContextExists(ctx_id));
        }
        let init = capset.map_or(0, Capset::id);
        // SAFETY: `name` is valid for `name.len()` bytes (the library copies it and needs no
        // NUL); the length fits u32 (bounded above).
        let ret = unsafe {
            sys::stream_renderer_context_create(
                ctx_id,
                name.len() as u32,
                name.as_ptr().cast(),
                init,
            )
        };
        check("stream_renderer_context_create", ret)?;
        ids.contexts.insert(ctx_id);
        Ok(Context::new(Arc::clone(&self.shared), ctx_id))
    }

    /// Queues a fence on `ring`; it is reported by [`Self::completed_fences`] once every earlier
    /// task of that ring is done (at once, from inside this call, when there is none).
    pub fn create_fence(&self, ring: FenceRing, fence_id: u64) -> Result<()> {
        let ids = self.shared.lock();
        let mut raw = sys::stream_renderer_fence {
            flags: sys::STREAM_RENDERER_FLAG_FENCE,
            fence_id,
            ctx_id: 0,
            ring_idx: 0,
        };
        if let FenceRing::Context { ctx_id, ring_idx } = ring {
            if ring_idx > MAX_RING_IDX {
                return Err(Error::InvalidRingIndex(ring_idx));
            }
            if !ids.contexts.contains(&ctx_id) {
                return Err(Error::UnknownContext(ctx_id));
            }
            raw.flags |= sys::STREAM_RENDERER_FLAG_FENCE_RING_IDX;
            raw.ctx_id = ctx_id;
            raw.ring_idx = ring_idx;
        }
        // SAFETY: `raw` is a valid fence for the call. The callback this may run inline only
        // touches the fence table, never this lock or the library.
        let ret = unsafe { sys::stream_renderer_create_fence(&raw) };
        check("stream_renderer_create_fence", ret)
    }

    /// An eventfd that is readable when fences have completed: register it in the event loop,
    /// then call [`Self::completed_fences`].
    pub fn fence_fd(&self) -> BorrowedFd<'_> {
        // SAFETY: the eventfd is process-global and never closed, so it outlives the borrow.
        unsafe { BorrowedFd::borrow_raw(self.event.as_raw_fd()) }
    }

    /// For every timeline with completions since the last call, the highest completed fence id.
    pub fn completed_fences(&self) -> Vec<CompletedFence> {
        fence::drain()
    }

    /// Saves the renderer state into `dir` (suspend, snapshot, resume). The meson build of the
    /// library has no snapshot support and fails this with `EINVAL`.
    pub fn snapshot(&self, dir: &Path) -> Result<()> {
        let dir = CString::new(dir.as_os_str().as_bytes()).map_err(|_| Error::NulByte("path"))?;
        let _lock = self.shared.lock();
        // SAFETY: no arguments.
        check("stream_renderer_suspend", unsafe {
            sys::stream_renderer_suspend()
        })?;
        // SAFETY: `dir` is a NUL-terminated string valid for the call.
        let snap = check("stream_renderer_snapshot", unsafe {
            sys::stream_renderer_snapshot(dir.as_ptr())
        });
        // SAFETY: no arguments.
        let resume = check("stream_renderer_resume", unsafe {
            sys::stream_renderer_resume()
        });
        snap.and(resume)
    }

    /// Restores the renderer state saved by [`Self::snapshot`] (same support caveat).
    pub fn restore(&self, dir: &Path) -> Result<()> {
        let dir = CString::new(dir.as_os_str().as_bytes()).map_err(|_| Error::NulByte("path"))?;
        let _lock = self.shared.lock();
        // SAFETY: `dir` is a NUL-terminated string valid for the call.
        check("stream_renderer_restore", unsafe {
            sys::stream_renderer_restore(dir.as_ptr())
        })
    }
}
