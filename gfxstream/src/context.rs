//! Contexts: command submission, resource attachment and blob creation.

use std::ptr;
use std::sync::Arc;

use gfxstream_sys as sys;

use crate::error::{check, Error, Result};
use crate::protocol::{validate_command, MAX_BLOB_SIZE};
use crate::renderer::Shared;
use crate::resource::{BlobArgs, BlobMem, Resource};

/// A gfxstream context (a guest process's rendering context). Dropping it destroys it.
#[derive(Debug)]
pub struct Context {
    shared: Arc<Shared>,
    id: u32,
}

impl Context {
    pub(crate) fn new(shared: Arc<Shared>, id: u32) -> Context {
        Context { shared, id }
    }

    /// The context id.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Makes `resource` usable by this context's commands.
    pub fn attach_resource(&self, resource: &Resource) {
        let _lock = self.shared.lock();
        // SAFETY: plain values; the library looks both ids up and only logs unknown ones. Ids fit
        // `int`: the library's own ids are u32 it casts the same way.
        unsafe { sys::stream_renderer_ctx_attach_resource(self.id as i32, resource.id() as i32) };
    }

    /// Undoes [`Self::attach_resource`].
    pub fn detach_resource(&self, resource: &Resource) {
        let _lock = self.shared.lock();
        // SAFETY: as in `attach_resource`.
        unsafe { sys::stream_renderer_ctx_detach_resource(self.id as i32, resource.id() as i32) };
    }

    /// Submits one guest command buffer (`SUBMIT_3D`). It is checked first: the library reads a
    /// whole command struct after checking only for 4 bytes, and fails unknown opcodes.
    pub fn submit(&self, commands: &[u8]) -> Result<()> {
        validate_command(commands)?;
        // The library takes a mutable pointer; give it a copy rather than cast away `const`.
        let mut buf = commands.to_vec();
        let mut cmd = sys::stream_renderer_command {
            ctx_id: self.id,
            // Bounded by MAX_SUBMIT_BYTES in `validate_command`.
            cmd_size: buf.len() as u32,
            cmd: buf.as_mut_ptr(),
            num_in_fences: 0,
            fences: ptr::null_mut(),
        };
        let _lock = self.shared.lock();
        // SAFETY: `cmd` points to `buf`, `cmd_size` bytes long, valid for the call; no in-fences.
        check("stream_renderer_submit_cmd", unsafe {
            sys::stream_renderer_submit_cmd(&mut cmd)
        })
    }

    /// Creates blob resource `id` in this context.
    ///
    /// `blob_id == 0` makes a host "ring blob" of `size` bytes (mappable with
    /// [`Resource::map`] unless the renderer uses external blobs, exportable with
    /// [`Resource::export`] if it does); another `blob_id` takes the blob the context's
    /// commands prepared. The library reports success even when it created nothing: this checks
    /// that the resource exists afterwards ([`Error::BlobNotCreated`]).
    pub fn create_blob(&self, id: u32, args: &BlobArgs) -> Result<Resource> {
        let invalid = |reason| Err(Error::InvalidBlob { id, reason });
        if id == 0 {
            return Err(Error::ZeroId("resource"));
        }
        if args.size == 0 || args.size > MAX_BLOB_SIZE {
            return invalid("size is zero or above MAX_BLOB_SIZE");
        }
        if args.flags & !crate::resource::blob_flags::ALLOWED != 0 {
            return invalid("unknown flags, or CREATE_GUEST_HANDLE (not supported)");
        }
        let raw = sys::stream_renderer_create_blob {
            blob_mem: args.mem as u32,
            blob_flags: args.flags,
            blob_id: args.blob_id,
            size: args.size,
        };
        let mut ids = self.shared.lock();
        if ids.resources.contains(&id) {
            return Err(Error::ResourceExists(id));
        }
        // SAFETY: `raw` is valid for the call; the iovecs and the handle are unused by the
        // library except with CREATE_GUEST_HANDLE, which is refused above.
        let ret = unsafe {
            sys::stream_renderer_create_blob(self.id, id, &raw, ptr::null(), 0, ptr::null())
        };
        check("stream_renderer_create_blob", ret)?;
        // Every blob the library creates has memory, so map_info succeeds on it; it fails
        // (unknown resource) when creation failed. The id was free before the call.
        let mut info = 0u32;
        // SAFETY: `info` is a valid out-pointer.
        let ret = unsafe { sys::stream_renderer_resource_map_info(id, &mut info) };
        if ret != 0 {
            log::warn!(
                "gfxstream: blob {id} (blob_id {}) was not created",
                args.blob_id
            );
            return Err(Error::BlobNotCreated(id));
        }
        ids.resources.insert(id);
        Ok(Resource::new_blob(Arc::clone(&self.shared), id, args.size))
    }
}

impl Drop for Context {
    fn drop(&mut self) {
        let mut ids = self.shared.lock();
        ids.contexts.remove(&self.id);
        // SAFETY: plain value; the context exists (created by us, destroyed only here).
        unsafe { sys::stream_renderer_context_destroy(self.id) };
    }
}

/// [`BlobMem`] must match the header.
const _: () = {
    assert!(BlobMem::Guest as u32 == sys::STREAM_BLOB_MEM_GUEST);
    assert!(BlobMem::Host3d as u32 == sys::STREAM_BLOB_MEM_HOST3D);
    assert!(BlobMem::Host3dGuest as u32 == sys::STREAM_BLOB_MEM_HOST3D_GUEST);
};
