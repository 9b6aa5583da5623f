//! Rendering contexts (3D): CTX_CREATE, CTX_DESTROY, CTX_ATTACH_RESOURCE, CTX_DETACH_RESOURCE,
//! SUBMIT_3D, and the capsets a context is made for (GET_CAPSET_INFO, GET_CAPSET).

use std::collections::HashSet;

use log::debug;

use super::{GpuError, GpuResult, VirtioGpu};
use crate::protocol::{Response, VIRTIO_GPU_CONTEXT_INIT_CAPSET_ID_MASK};

#[derive(Debug)]
/// What the device knows about one context.
pub(super) struct ContextState {
    /// The resources attached to it.
    pub(super) resources: HashSet<u32>,
}

impl VirtioGpu {
    pub(super) fn ctx_create(
        &mut self,
        ctx_id: u32,
        context_init: u32,
        name: &str,
    ) -> GpuResult<Response> {
        self.require_3d("CTX_CREATE")?;
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
            if !self.caps.context_init {
                return Err(GpuError::InvalidParameter(
                    "context_init without CONTEXT_INIT".into(),
                ));
            }
            if !self.capsets.iter().any(|c| c.id == capset_id) {
                return Err(GpuError::InvalidParameter(format!(
                    "context with unknown capset {capset_id}"
                )));
            }
        }
        self.renderer.context_create(ctx_id, capset_id, name)?;
        self.contexts.insert(
            ctx_id,
            ContextState {
                resources: HashSet::new(),
            },
        );
        Ok(Response::OkNoData)
    }
}

#[cfg(test)]
mod tests {
    use crate::gpu::test_support::*;
    use crate::gpu::{GpuConfig, QueueKind};
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
}
