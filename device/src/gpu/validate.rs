//! The validation step between decode and execution: every command is checked here against
//! the queue it came on, the features the frontend negotiated and the device's state, before
//! the room that carries it out runs. Transfers leave it as typed, checked arguments
//! ([`CheckedTransfer2d`], [`CheckedTransfer3d`]), the only form in which a renderer accepts
//! them, so no unchecked guest value of a transfer reaches a C library and renderers do not
//! check again.
//!
//! | check | answer |
//! |---|---|
//! | a control command on the cursor queue or the reverse | ERR_UNSPEC |
//! | a command whose feature was not negotiated ([`required_features`]) | ERR_UNSPEC |
//! | a fence ring (INFO_RING_IDX) without CONTEXT_INIT | ERR_UNSPEC |
//! | a response that does not fit the writable part | ERR_UNSPEC |
//! | a transfer outside its resource, level, layers or backing | ERR_INVALID_PARAMETER |

use super::resources::ResourceState;
use super::{GpuError, GpuResult, QueueKind, VirtioGpu};
use crate::protocol::{
    CtrlHeader, GpuCommand, Rect, VIRTIO_GPU_CONTEXT_INIT_CAPSET_ID_MASK,
    VIRTIO_GPU_F_CONTEXT_INIT, VIRTIO_GPU_F_EDID, VIRTIO_GPU_F_RESOURCE_BLOB,
    VIRTIO_GPU_F_RESOURCE_UUID, VIRTIO_GPU_F_VIRGL,
};
use crate::renderer::{CheckedTransfer2d, CheckedTransfer3d, ResourceShape, Transfer3d};

/// The features (`VIRTIO_GPU_F_*` bits) a command needs: the one table of which command
/// belongs to which feature. Empty: part of the base device.
pub(super) fn required_features(cmd: &GpuCommand) -> &'static [u32] {
    use GpuCommand as C;
    match cmd {
        C::CtxCreate { context_init, .. }
            if context_init & VIRTIO_GPU_CONTEXT_INIT_CAPSET_ID_MASK != 0 =>
        {
            &[VIRTIO_GPU_F_VIRGL, VIRTIO_GPU_F_CONTEXT_INIT]
        }
        C::CtxCreate { .. }
        | C::CtxDestroy
        | C::CtxAttachResource { .. }
        | C::CtxDetachResource { .. }
        | C::ResourceCreate3d { .. }
        | C::TransferToHost3d { .. }
        | C::TransferFromHost3d { .. }
        | C::Submit3d { .. } => &[VIRTIO_GPU_F_VIRGL],
        C::GetEdid { .. } => &[VIRTIO_GPU_F_EDID],
        C::ResourceAssignUuid { .. } => &[VIRTIO_GPU_F_RESOURCE_UUID],
        C::ResourceCreateBlob { .. }
        | C::SetScanoutBlob { .. }
        | C::ResourceMapBlob { .. }
        | C::ResourceUnmapBlob { .. } => &[VIRTIO_GPU_F_RESOURCE_BLOB],
        _ => &[],
    }
}

impl ResourceState {
    /// The resource's shape as the transfer checks see it.
    fn shape(&self) -> ResourceShape<'_> {
        match (&self.create_3d, self.blob_size) {
            (Some(c), _) => ResourceShape::Texture(c),
            (None, Some(_)) => ResourceShape::Blob,
            (None, None) => ResourceShape::Plain2d {
                width: self.width,
                height: self.height,
            },
        }
    }
}

impl VirtioGpu {
    /// Checks `cmd` before it runs: its queue, the features it and its header need, and that
    /// its response fits the `writable` bytes of the chain.
    pub(super) fn validate(
        &self,
        queue: QueueKind,
        header: &CtrlHeader,
        cmd: &GpuCommand,
        writable: usize,
    ) -> GpuResult<()> {
        let on_cursor_queue = queue == QueueKind::Cursor;
        if cmd.is_cursor() != on_cursor_queue {
            return Err(GpuError::WrongQueue(cmd.name()));
        }
        for &bit in required_features(cmd) {
            self.require(bit, cmd.name())?;
        }
        if header.ring().is_some() {
            // Per-context rings (VIRTIO_GPU_FLAG_INFO_RING_IDX) come with CONTEXT_INIT.
            self.require(VIRTIO_GPU_F_CONTEXT_INIT, "fence rings (INFO_RING_IDX)")?;
        }
        // Cursor-queue buffers may have no writable part at all; anything else must be able to
        // take its response, checked before the command has any effect.
        let needed = cmd.response_size();
        if writable < needed && !(on_cursor_queue && writable == 0) {
            return Err(GpuError::ResponseTooLarge {
                needed,
                available: writable,
            });
        }
        Ok(())
    }

    /// TRANSFER_TO_HOST_2D's arguments, checked against resource `id` and its backing.
    pub(super) fn check_transfer_2d(
        &self,
        id: u32,
        rect: Rect,
        offset: u64,
    ) -> GpuResult<CheckedTransfer2d> {
        let res = self.resource(id)?;
        CheckedTransfer2d::check(rect, offset, res.shape(), res.backing_len)
            .map_err(GpuError::InvalidParameter)
    }

    /// A 3D transfer's arguments, checked: the context (0: none) exists, and the transfer
    /// against resource `id` and its backing.
    pub(super) fn check_transfer_3d(
        &self,
        ctx_id: u32,
        id: u32,
        transfer: &Transfer3d,
    ) -> GpuResult<CheckedTransfer3d> {
        if ctx_id != 0 {
            self.check_context(ctx_id)?;
        }
        let res = self.resource(id)?;
        CheckedTransfer3d::check(transfer, res.shape(), res.backing_len)
            .map_err(GpuError::InvalidParameter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_feature_command_is_in_the_table() {
        use GpuCommand as C;
        let virgl = [
            C::CtxDestroy,
            C::CtxAttachResource { resource_id: 1 },
            C::CtxDetachResource { resource_id: 1 },
            C::Submit3d {
                commands: Vec::new(),
            },
        ];
        for c in &virgl {
            assert_eq!(required_features(c), [VIRTIO_GPU_F_VIRGL]);
        }
        let ctx = |context_init| C::CtxCreate {
            context_init,
            debug_name: String::new(),
        };
        assert_eq!(required_features(&ctx(0)), [VIRTIO_GPU_F_VIRGL]);
        // Only reserved bits: no capset chosen, no CONTEXT_INIT needed.
        assert_eq!(required_features(&ctx(0x100)), [VIRTIO_GPU_F_VIRGL]);
        assert_eq!(
            required_features(&ctx(4)),
            [VIRTIO_GPU_F_VIRGL, VIRTIO_GPU_F_CONTEXT_INIT]
        );
        assert_eq!(
            required_features(&C::GetEdid { scanout_id: 0 }),
            [VIRTIO_GPU_F_EDID]
        );
        assert_eq!(
            required_features(&C::ResourceAssignUuid { resource_id: 1 }),
            [VIRTIO_GPU_F_RESOURCE_UUID]
        );
        assert_eq!(
            required_features(&C::ResourceUnmapBlob { resource_id: 1 }),
            [VIRTIO_GPU_F_RESOURCE_BLOB]
        );
        for base in [
            C::GetDisplayInfo,
            C::ResourceUnref { resource_id: 1 },
            C::ResourceDetachBacking { resource_id: 1 },
            C::GetCapsetInfo { index: 0 },
        ] {
            assert!(required_features(&base).is_empty(), "{}", base.name());
        }
    }
}
