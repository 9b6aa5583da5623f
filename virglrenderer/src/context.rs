//! Rendering contexts (`CTX_CREATE`): command submission, resource attachment, per-context
//! fences.

use std::ffi::c_int;
use std::rc::Rc;

use virglrenderer_sys as sys;

use crate::error::{Errno, Error, Result};
use crate::renderer::Inner;
use crate::resource::Resource;

/// Largest command stream accepted by [`Context::submit`], in 32-bit words: 256 Ki words (1 MiB),
/// four times Mesa's virgl command buffer (`VIRGL_MAX_CMDBUF_DWORDS`).
pub const MAX_SUBMIT_WORDS: usize = 256 * 1024;

/// Largest ring index of a per-context fence (virtio-gpu allows 64 rings, 0..=63).
pub const MAX_RING_IDX: u32 = 63;

/// A rendering context of the library. Dropping it destroys the context
/// (`virgl_renderer_context_destroy`), which also detaches its resources.
pub struct Context {
    inner: Rc<Inner>,
    id: u32,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context").field("id", &self.id).finish()
    }
}

impl Context {
    pub(crate) fn new(inner: Rc<Inner>, id: u32) -> Self {
        Context { inner, id }
    }

    /// The context id.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Submits a command stream (`SUBMIT_3D`), at most [`MAX_SUBMIT_WORDS`] words. The library
    /// decodes and validates it; a malformed stream gives [`Error::Library`] with `EINVAL`.
    pub fn submit(&self, words: &[u32]) -> Result<()> {
        if words.len() > MAX_SUBMIT_WORDS {
            return Err(Error::TooLarge {
                what: "command stream (words)",
                value: words.len() as u64,
                max: MAX_SUBMIT_WORDS as u64,
            });
        }
        if words.is_empty() {
            return Ok(());
        }
        // words.len() <= MAX_SUBMIT_WORDS < i32::MAX.
        let ndw = words.len() as c_int;
        let ctx_id = c_int::try_from(self.id).map_err(|_| Error::InvalidArgument("context id"))?;
        // SAFETY: the buffer holds `ndw` words; the library only reads it (its decoder takes a
        // const buffer) and does not keep the pointer after returning.
        let ret = unsafe {
            sys::virgl_renderer_submit_cmd(words.as_ptr().cast_mut().cast(), ctx_id, ndw)
        };
        if ret != 0 {
            return Err(Error::Library {
                op: "virgl_renderer_submit_cmd",
                errno: Errno::from_ret(ret),
            });
        }
        Ok(())
    }

    /// Submits a little-endian byte stream (as it arrives from the guest); its length must be a
    /// multiple of 4.
    pub fn submit_bytes(&self, bytes: &[u8]) -> Result<()> {
        if bytes.len() % 4 != 0 {
            return Err(Error::InvalidArgument(
                "command stream length is not a multiple of 4",
            ));
        }
        if bytes.len() / 4 > MAX_SUBMIT_WORDS {
            return Err(Error::TooLarge {
                what: "command stream (words)",
                value: (bytes.len() / 4) as u64,
                max: MAX_SUBMIT_WORDS as u64,
            });
        }
        let words: Vec<u32> = bytes
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        self.submit(&words)
    }

    /// Makes `resource` usable by this context's command stream (`CTX_ATTACH_RESOURCE`).
    pub fn attach(&self, resource: &Resource) -> Result<()> {
        let (ctx, res) = self.ids(resource)?;
        // SAFETY: integer arguments; the library ignores unknown ids.
        unsafe { sys::virgl_renderer_ctx_attach_resource(ctx, res) };
        Ok(())
    }

    /// Removes `resource` from this context (`CTX_DETACH_RESOURCE`).
    pub fn detach(&self, resource: &Resource) -> Result<()> {
        let (ctx, res) = self.ids(resource)?;
        // SAFETY: integer arguments; the library ignores unknown ids.
        unsafe { sys::virgl_renderer_ctx_detach_resource(ctx, res) };
        Ok(())
    }

    fn ids(&self, resource: &Resource) -> Result<(c_int, c_int)> {
        let ctx = c_int::try_from(self.id).map_err(|_| Error::InvalidArgument("context id"))?;
        let res =
            c_int::try_from(resource.id()).map_err(|_| Error::InvalidArgument("resource id"))?;
        Ok((ctx, res))
    }

    /// Creates a per-context fence `fence_id` on ring `ring_idx`; it is reported by
    /// [`VirglRenderer::poll`](crate::VirglRenderer::poll) as [`Fence::Context`](crate::Fence)
    /// when the work submitted before it on this context completed. Virgl (GL) contexts have
    /// one ring only (ring 0; others give `EINVAL`). With `mergeable` the library may skip
    /// reporting a fence when a later one on the same ring completes too.
    pub fn create_fence(&self, ring_idx: u32, fence_id: u64, mergeable: bool) -> Result<()> {
        if ring_idx > MAX_RING_IDX {
            return Err(Error::TooLarge {
                what: "ring index",
                value: ring_idx.into(),
                max: MAX_RING_IDX.into(),
            });
        }
        let flags = if mergeable {
            sys::VIRGL_RENDERER_FENCE_FLAG_MERGEABLE
        } else {
            0
        };
        // SAFETY: integer arguments; the context exists (this handle keeps it alive).
        let ret =
            unsafe { sys::virgl_renderer_context_create_fence(self.id, flags, ring_idx, fence_id) };
        if ret != 0 {
            return Err(Error::Library {
                op: "virgl_renderer_context_create_fence",
                errno: Errno::from_ret(ret),
            });
        }
        Ok(())
    }
}

impl Drop for Context {
    fn drop(&mut self) {
        // SAFETY: the context exists (created by us, destroyed only here).
        unsafe { sys::virgl_renderer_context_destroy(self.id) };
        self.inner.release_context_id(self.id);
    }
}
