//! Rendering contexts (3D): CTX_CREATE, CTX_DESTROY, CTX_ATTACH_RESOURCE, CTX_DETACH_RESOURCE,
//! SUBMIT_3D, and the capsets a context is made for (GET_CAPSET_INFO, GET_CAPSET).

use std::collections::HashMap;

use log::{debug, warn};

use super::budget::{self, Charge, Use};
use super::virgl_stream;
use super::{GpuError, GpuResult, VirtioGpu};
use crate::limits::{CONTEXT_ATTACHMENT_BYTES, CONTEXT_RECORD_BYTES, RESOURCE_RECORD_BYTES};
use crate::protocol::{
    Response, CTRL_HDR_SIZE, MAX_CAPSET_SIZE, VIRTIO_GPU_CAPSET_VIRGL, VIRTIO_GPU_CAPSET_VIRGL2,
    VIRTIO_GPU_CONTEXT_INIT_CAPSET_ID_MASK,
};
use crate::renderer::{CapsetInfo, RenderContext, Renderer, RendererCapabilities, RendererError};

/// One context: what the device knows about it, and the renderer's context, which the device
/// owns.
///
/// Dropping it destroys the renderer's context. Every context is dropped before the renderer is
/// reset or dropped (`VirtioGpu::reset`, `Drop for VirtioGpu`): a context never outlives its
/// renderer.
pub(super) struct ContextState {
    /// Its record's charge to the host memory budget.
    pub(super) record: Charge,
    /// The resources attached to it, each with its charge.
    pub(super) resources: HashMap<u32, Charge>,
    /// The renderer's context.
    pub(super) render: Box<dyn RenderContext>,
    /// Whether its SUBMIT_3D streams are virgl's (the VIRGL or VIRGL2 capset, or the default
    /// context of a renderer that offers them), which the device reads for allocations.
    pub(super) virgl_stream: bool,
    /// Resources its streams made with `VIRGL_CCMD_PIPE_RESOURCE_CREATE` that no blob took
    /// yet, in stream order: (blob id, the charge of their storage and record).
    pub(super) pipe_resources: Vec<(u32, Charge)>,
}

impl VirtioGpu {
    /// Context `ctx_id`, which must exist.
    pub(super) fn context_mut(&mut self, ctx_id: u32) -> GpuResult<&mut ContextState> {
        self.contexts
            .get_mut(&ctx_id)
            .ok_or(GpuError::InvalidContextId(ctx_id))
    }

    /// CTX_CREATE: for a capset offered (`context_init`), within `max_contexts`.
    pub(super) fn ctx_create(
        &mut self,
        ctx_id: u32,
        context_init: u32,
        name: &str,
    ) -> GpuResult<Response> {
        if ctx_id == 0 || self.contexts.contains_key(&ctx_id) {
            return Err(GpuError::InvalidContextId(ctx_id));
        }
        if self.contexts.len() >= self.config.max_contexts {
            return Err(GpuError::TooManyContexts(self.config.max_contexts));
        }
        let capset_id = context_init & VIRTIO_GPU_CONTEXT_INIT_CAPSET_ID_MASK;
        if context_init & !VIRTIO_GPU_CONTEXT_INIT_CAPSET_ID_MASK != 0 {
            debug!("CTX_CREATE: reserved context_init bits {context_init:#x} ignored");
        }
        if capset_id != 0 {
            // CONTEXT_INIT was negotiated: the validation step checked it.
            if !self.capsets.iter().any(|c| c.id == capset_id) {
                return Err(GpuError::InvalidParameter(format!(
                    "context with unknown capset {capset_id}"
                )));
            }
        }
        let record = self.budget.charge(Use::Context, CONTEXT_RECORD_BYTES)?;
        let render = match self.renderer.create_context(ctx_id, capset_id, name) {
            Ok(r) => r,
            Err(e) => {
                self.budget.release(record);
                return Err(e.into());
            }
        };
        let virgl_stream = match capset_id {
            0 => self
                .capsets
                .iter()
                .any(|c| c.id == VIRTIO_GPU_CAPSET_VIRGL || c.id == VIRTIO_GPU_CAPSET_VIRGL2),
            id => id == VIRTIO_GPU_CAPSET_VIRGL || id == VIRTIO_GPU_CAPSET_VIRGL2,
        };
        self.contexts.insert(
            ctx_id,
            ContextState {
                record,
                resources: HashMap::new(),
                render,
                virgl_stream,
                pipe_resources: Vec::new(),
            },
        );
        Ok(Response::OkNoData)
    }

    /// Gives back the charges of a context's record and attachments, and drops it (which
    /// destroys the renderer's context).
    pub(super) fn release_context_charges(&mut self, ctx: ContextState) {
        self.budget.release(ctx.record);
        for (_, c) in ctx.resources {
            self.budget.release(c);
        }
        for (_, c) in ctx.pipe_resources {
            self.budget.release(c);
        }
    }

    /// CTX_DESTROY: the entries held on its rings are answered, then the renderer's context is
    /// dropped, which destroys it, and its charges are given back.
    pub(super) fn ctx_destroy(&mut self, ctx_id: u32) -> GpuResult<Response> {
        let context = self
            .contexts
            .remove(&ctx_id)
            .ok_or(GpuError::InvalidContextId(ctx_id))?;
        // The context's rings cannot complete any more: answer what they hold.
        self.release_context_rings(ctx_id);
        self.release_context_charges(context);
        self.trimmer.dirty = true;
        self.trimmer.maybe_trim();
        Ok(Response::OkNoData)
    }

    /// CTX_ATTACH_RESOURCE.
    pub(super) fn ctx_attach_resource(
        &mut self,
        ctx_id: u32,
        resource_id: u32,
    ) -> GpuResult<Response> {
        self.check_context(ctx_id)?;
        self.resource(resource_id)?;
        // A renderer holding 2D resources on the host moves this one into its library.
        self.renderer.prepare_for_3d(resource_id)?;
        let attached = self
            .contexts
            .get(&ctx_id)
            .is_some_and(|c| c.resources.contains_key(&resource_id));
        let charge = if attached {
            None
        } else {
            Some(
                self.budget
                    .charge(Use::Attachment, CONTEXT_ATTACHMENT_BYTES)?,
            )
        };
        if let Err(e) = self
            .context_mut(ctx_id)?
            .render
            .attach_resource(resource_id)
        {
            self.budget.release_opt(charge);
            return Err(e.into());
        }
        match (self.contexts.get_mut(&ctx_id), charge) {
            (Some(c), Some(charge)) => {
                c.resources.insert(resource_id, charge);
            }
            (None, charge) => self.budget.release_opt(charge),
            (Some(_), None) => {}
        }
        Ok(Response::OkNoData)
    }

    /// CTX_DETACH_RESOURCE.
    pub(super) fn ctx_detach_resource(
        &mut self,
        ctx_id: u32,
        resource_id: u32,
    ) -> GpuResult<Response> {
        self.check_context(ctx_id)?;
        self.resource(resource_id)?;
        let context = self.context_mut(ctx_id)?;
        context.render.detach_resource(resource_id)?;
        let charge = context.resources.remove(&resource_id);
        self.budget.release_opt(charge);
        Ok(Response::OkNoData)
    }

    /// SUBMIT_3D: the command stream goes to the context's renderer context. In a virgl context, every resource the stream makes
    /// (`VIRGL_CCMD_PIPE_RESOURCE_CREATE`, which the library allocates as the stream runs) is
    /// charged first like a RESOURCE_CREATE_3D of the same description; over the budget, the
    /// stream is refused whole (`ERR_OUT_OF_MEMORY`) and the library never sees it.
    pub(super) fn submit_3d(&mut self, ctx_id: u32, commands: &[u8]) -> GpuResult<Response> {
        let creates = if self.context_mut(ctx_id)?.virgl_stream {
            virgl_stream::pipe_resource_creates(commands)
        } else {
            Vec::new()
        };
        let mut charged = Vec::with_capacity(creates.len());
        for c in &creates {
            let bytes = budget::storage_3d(&c.args).saturating_add(RESOURCE_RECORD_BYTES);
            match self.budget.charge(Use::Storage, bytes) {
                Ok(charge) => charged.push((c.blob_id, charge)),
                Err(e) => {
                    for (_, charge) in charged {
                        self.budget.release(charge);
                    }
                    return Err(e.into());
                }
            }
        }
        let context = self.context_mut(ctx_id)?;
        let submitted = context.render.submit(commands);
        // Also when the submit failed: the library may have run the commands before the
        // failing one, and what they made stays charged until a blob takes it or the context
        // goes.
        context.pipe_resources.extend(charged);
        submitted?;
        Ok(Response::OkNoData)
    }

    /// The charge of the first resource `ctx_id`'s streams made for `blob_id` that no blob took
    /// yet (the one the library gives a HOST3D blob of that id), taken out of the context.
    pub(super) fn take_pipe_resource(&mut self, ctx_id: u32, blob_id: u64) -> Option<Charge> {
        let context = self.contexts.get_mut(&ctx_id)?;
        let i = context
            .pipe_resources
            .iter()
            .position(|(id, _)| u64::from(*id) == blob_id)?;
        Some(context.pipe_resources.remove(i).1)
    }

    /// GET_CAPSET_INFO: the offered capset at `index`.
    pub(super) fn get_capset_info(&self, index: u32) -> GpuResult<Response> {
        let c = usize::try_from(index)
            .ok()
            .and_then(|i| self.capsets.get(i))
            .ok_or_else(|| GpuError::InvalidParameter(format!("capset index {index}")))?;
        Ok(Response::OkCapsetInfo {
            id: c.id,
            max_version: c.max_version,
            max_size: c.max_size,
        })
    }

    /// GET_CAPSET: an offered capset's data, at most its `max_size` and what fits `writable`
    /// bytes.
    pub(super) fn get_capset(
        &mut self,
        capset_id: u32,
        version: u32,
        writable: usize,
    ) -> GpuResult<Response> {
        let c = *self
            .capsets
            .iter()
            .find(|c| c.id == capset_id)
            .ok_or_else(|| GpuError::InvalidParameter(format!("capset {capset_id}")))?;
        if version > c.max_version {
            return Err(GpuError::InvalidParameter(format!(
                "capset {capset_id} version {version} > {}",
                c.max_version
            )));
        }
        let data = self.renderer.capset(capset_id, version)?;
        if data.len() > c.max_size as usize {
            return Err(GpuError::Renderer(RendererError::Library(format!(
                "capset {capset_id} of {} bytes exceeds its max_size {}",
                data.len(),
                c.max_size
            ))));
        }
        let needed = CTRL_HDR_SIZE + data.len();
        if needed > writable {
            return Err(GpuError::ResponseTooLarge {
                needed,
                available: writable,
            });
        }
        Ok(Response::OkCapset(data))
    }
}

/// The renderer's capsets the device offers: none without 3D, and none larger than
/// `MAX_CAPSET_SIZE`.
pub(super) fn offered_capsets(
    renderer: &dyn Renderer,
    caps: &RendererCapabilities,
) -> Vec<CapsetInfo> {
    if caps.three_d {
        renderer
            .capsets()
            .into_iter()
            .filter(|c| {
                let ok = c.max_size <= MAX_CAPSET_SIZE;
                if !ok {
                    warn!(
                        "capset {} of {} bytes exceeds MAX_CAPSET_SIZE, not offered",
                        c.id, c.max_size
                    );
                }
                ok
            })
            .collect()
    } else {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use crate::gpu::test_support::*;
    use crate::gpu::{GpuConfig, QueueKind};
    use crate::limits::{CONTEXT_ATTACHMENT_BYTES, CONTEXT_RECORD_BYTES, RESOURCE_RECORD_BYTES};
    use crate::protocol::tests::{hdr, le32s};
    use crate::protocol::*;

    #[test]
    fn contexts_and_capsets() {
        let (mut h, log) = Harness::manual(GpuConfig {
            max_contexts: 2,
            ..Default::default()
        });
        // Capset 0 is VIRGL2; the oversized VENUS capset is not offered.
        let r = h.send(&req(VIRTIO_GPU_CMD_GET_CAPSET_INFO, &le32s(&[0, 0])));
        assert_eq!(
            h.resp(&r, 40)[24..],
            le32s(&[VIRTIO_GPU_CAPSET_VIRGL2, 2, 8, 0])[..]
        );
        assert_eq!(
            h.cmd(&req(VIRTIO_GPU_CMD_GET_CAPSET_INFO, &le32s(&[1, 0]))),
            VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER
        );
        let r = h.send(&req(
            VIRTIO_GPU_CMD_GET_CAPSET,
            &le32s(&[VIRTIO_GPU_CAPSET_VIRGL2, 2]),
        ));
        assert_eq!(r.used.unwrap().len, 32);
        assert_eq!(
            h.resp(&r, 32)[24..],
            [2, 2, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff]
        );
        assert_eq!(
            h.cmd(&req(
                VIRTIO_GPU_CMD_GET_CAPSET,
                &le32s(&[VIRTIO_GPU_CAPSET_VIRGL2, 3])
            )),
            VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER
        );
        assert_eq!(
            h.cmd(&req(
                VIRTIO_GPU_CMD_GET_CAPSET,
                &le32s(&[VIRTIO_GPU_CAPSET_VENUS, 0])
            )),
            VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER
        );
        // Capset data that does not fit the response buffer.
        let r = h.send_on(
            QueueKind::Control,
            &req(
                VIRTIO_GPU_CMD_GET_CAPSET,
                &le32s(&[VIRTIO_GPU_CAPSET_VIRGL2, 2]),
            ),
            30,
        );
        assert_eq!(h.resp_type(&r), VIRTIO_GPU_RESP_ERR_UNSPEC);
        let ctx = |id: u32, init: u32| {
            let mut v = hdr(VIRTIO_GPU_CMD_CTX_CREATE, 0, 0, id, 0);
            v.extend_from_slice(&le32s(&[0, init]));
            v.extend_from_slice(&[0u8; 64]);
            v
        };
        assert_eq!(h.cmd(&ctx(0, 0)), VIRTIO_GPU_RESP_ERR_INVALID_CONTEXT_ID);
        assert_eq!(h.cmd(&ctx(1, 0)), VIRTIO_GPU_RESP_OK_NODATA);
        assert_eq!(h.cmd(&ctx(1, 0)), VIRTIO_GPU_RESP_ERR_INVALID_CONTEXT_ID);
        assert_eq!(h.cmd(&ctx(2, 99)), VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
        assert_eq!(h.cmd(&ctx(2, 0)), VIRTIO_GPU_RESP_OK_NODATA);
        assert_eq!(h.cmd(&ctx(3, 0)), VIRTIO_GPU_RESP_ERR_OUT_OF_MEMORY);
        assert_eq!(log.borrow().contexts.len(), 2);
        // Unknown contexts.
        let mut s = hdr(VIRTIO_GPU_CMD_SUBMIT_3D, 0, 0, 9, 0);
        s.extend_from_slice(&le32s(&[0, 0]));
        assert_eq!(h.cmd(&s), VIRTIO_GPU_RESP_ERR_INVALID_CONTEXT_ID);
        assert_eq!(
            h.cmd(&hdr(VIRTIO_GPU_CMD_CTX_DESTROY, 0, 0, 9, 0)),
            VIRTIO_GPU_RESP_ERR_INVALID_CONTEXT_ID
        );
        let mut at = hdr(VIRTIO_GPU_CMD_CTX_ATTACH_RESOURCE, 0, 0, 1, 0);
        at.extend_from_slice(&le32s(&[42, 0]));
        assert_eq!(h.cmd(&at), VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID);
        // Oversized submit.
        let mut s = hdr(VIRTIO_GPU_CMD_SUBMIT_3D, 0, 0, 1, 0);
        s.extend_from_slice(&le32s(&[MAX_SUBMIT_3D_SIZE + 4, 0]));
        assert_eq!(h.cmd(&s), VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
        // After a reset the contexts are gone.
        h.gpu.reset();
        assert_eq!(
            h.cmd(&hdr(VIRTIO_GPU_CMD_CTX_DESTROY, 0, 0, 1, 0)),
            VIRTIO_GPU_RESP_ERR_INVALID_CONTEXT_ID
        );
    }

    fn ctx_create(id: u32) -> Vec<u8> {
        let mut v = hdr(VIRTIO_GPU_CMD_CTX_CREATE, 0, 0, id, 0);
        v.extend_from_slice(&le32s(&[0, 0]));
        v.extend_from_slice(&[0u8; 64]);
        v
    }

    #[test]
    fn contexts_are_dropped_before_the_renderer_is_reset_or_dropped() {
        let (mut h, log) = Harness::manual(GpuConfig::default());
        for id in [1, 2, 3] {
            assert_eq!(h.cmd(&ctx_create(id)), VIRTIO_GPU_RESP_OK_NODATA);
        }
        // CTX_DESTROY drops the renderer's context.
        assert_eq!(
            h.cmd(&hdr(VIRTIO_GPU_CMD_CTX_DESTROY, 0, 0, 2, 0)),
            VIRTIO_GPU_RESP_OK_NODATA
        );
        assert_eq!(
            std::mem::take(&mut log.borrow_mut().lifecycle),
            ["context 2 dropped"]
        );
        // A reset drops the others, then resets the renderer.
        h.gpu.reset();
        let mut seen = std::mem::take(&mut log.borrow_mut().lifecycle);
        seen[..2].sort();
        assert_eq!(seen, ["context 1 dropped", "context 3 dropped", "reset"]);
        // The device going away drops its contexts, then the renderer.
        assert_eq!(h.cmd(&ctx_create(4)), VIRTIO_GPU_RESP_OK_NODATA);
        drop(h);
        assert_eq!(
            log.borrow().lifecycle,
            ["context 4 dropped", "renderer dropped"]
        );
    }

    #[test]
    fn context_commands_reach_the_context_they_name() {
        let (mut h, log) = Harness::manual(GpuConfig::default());
        assert_eq!(h.cmd(&ctx_create(1)), VIRTIO_GPU_RESP_OK_NODATA);
        assert_eq!(h.cmd(&ctx_create(2)), VIRTIO_GPU_RESP_OK_NODATA);
        let submit = |ctx: u32, byte: u8| {
            let mut v = hdr(VIRTIO_GPU_CMD_SUBMIT_3D, 0, 0, ctx, 0);
            v.extend_from_slice(&le32s(&[4, 0]));
            v.extend_from_slice(&[byte; 4]);
            v
        };
        assert_eq!(h.cmd(&submit(2, 0xb2)), VIRTIO_GPU_RESP_OK_NODATA);
        assert_eq!(h.cmd(&submit(1, 0xa1)), VIRTIO_GPU_RESP_OK_NODATA);
        assert_eq!(
            log.borrow().submits,
            [(2, vec![0xb2; 4]), (1, vec![0xa1; 4])]
        );
        // A destroyed context takes no more commands; the other still does.
        assert_eq!(
            h.cmd(&hdr(VIRTIO_GPU_CMD_CTX_DESTROY, 0, 0, 1, 0)),
            VIRTIO_GPU_RESP_OK_NODATA
        );
        assert_eq!(
            h.cmd(&submit(1, 0xa1)),
            VIRTIO_GPU_RESP_ERR_INVALID_CONTEXT_ID
        );
        assert_eq!(h.cmd(&submit(2, 0xb2)), VIRTIO_GPU_RESP_OK_NODATA);
        assert_eq!(log.borrow().submits.len(), 3);
    }

    /// Contexts and their attachments are charged; refused at the limit; CTX_DETACH_RESOURCE,
    /// CTX_DESTROY, RESOURCE_UNREF and reset give the charges back.
    #[test]
    fn contexts_and_attachments_are_charged() {
        let resources = 2 * (RESOURCE_RECORD_BYTES + 4);
        let limit = resources + 2 * CONTEXT_RECORD_BYTES + CONTEXT_ATTACHMENT_BYTES;
        let mut h = Harness::new(
            Box::new(StagingRenderer::new(false)),
            GpuConfig {
                max_hostmem: limit,
                ..GpuConfig::default()
            },
        );
        let attach = VIRTIO_GPU_CMD_CTX_ATTACH_RESOURCE;
        let detach = VIRTIO_GPU_CMD_CTX_DETACH_RESOURCE;
        assert_eq!(h.create_2d(1, 1, 1, 1), VIRTIO_GPU_RESP_OK_NODATA);
        assert_eq!(h.create_2d(2, 1, 1, 1), VIRTIO_GPU_RESP_OK_NODATA);
        assert_eq!(h.ctx_create(1, 0), VIRTIO_GPU_RESP_OK_NODATA);
        assert_eq!(h.ctx_create(2, 0), VIRTIO_GPU_RESP_OK_NODATA);
        assert_eq!(h.ctx_cmd(attach, 1, &[1, 0]), VIRTIO_GPU_RESP_OK_NODATA);
        assert_eq!(h.budget_used(), limit);
        assert_eq!(
            h.ctx_cmd(attach, 1, &[2, 0]),
            VIRTIO_GPU_RESP_ERR_OUT_OF_MEMORY
        );
        // Attaching again costs nothing more.
        assert_eq!(h.ctx_cmd(attach, 1, &[1, 0]), VIRTIO_GPU_RESP_OK_NODATA);
        assert_eq!(h.ctx_cmd(detach, 1, &[1, 0]), VIRTIO_GPU_RESP_OK_NODATA);
        assert_eq!(h.budget_used(), limit - CONTEXT_ATTACHMENT_BYTES);
        assert_eq!(h.ctx_cmd(attach, 1, &[2, 0]), VIRTIO_GPU_RESP_OK_NODATA);
        assert_eq!(h.ctx_create(3, 0), VIRTIO_GPU_RESP_ERR_OUT_OF_MEMORY);
        // CTX_DESTROY gives back the context and its attachments.
        assert_eq!(
            h.ctx_cmd(VIRTIO_GPU_CMD_CTX_DESTROY, 1, &[]),
            VIRTIO_GPU_RESP_OK_NODATA
        );
        assert_eq!(h.budget_used(), resources + CONTEXT_RECORD_BYTES);
        assert_eq!(h.ctx_create(3, 0), VIRTIO_GPU_RESP_OK_NODATA);
        // RESOURCE_UNREF gives back its attachments.
        assert_eq!(h.ctx_cmd(attach, 2, &[2, 0]), VIRTIO_GPU_RESP_OK_NODATA);
        assert_eq!(h.unref(2), VIRTIO_GPU_RESP_OK_NODATA);
        assert_eq!(
            h.budget_used(),
            RESOURCE_RECORD_BYTES + 4 + 2 * CONTEXT_RECORD_BYTES
        );
        h.gpu.reset();
        assert_eq!(h.budget_used(), 0);
    }
}
