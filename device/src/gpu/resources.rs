//! Resources: what the device knows of each (size, host memory, blob attributes, uuid), their
//! creation and destruction (RESOURCE_CREATE_2D, RESOURCE_CREATE_3D, RESOURCE_UNREF), guest
//! backing (RESOURCE_ATTACH_BACKING, RESOURCE_DETACH_BACKING), transfers (TRANSFER_TO_HOST_2D,
//! TRANSFER_TO_HOST_3D, TRANSFER_FROM_HOST_3D), RESOURCE_ASSIGN_UUID, and the host-memory
//! accounting every resource goes through.
//!
//! # Decisions
//!
//! * **Host memory.** Every resource's host memory (2D: `w * h * 4`; 3D: an estimate of
//!   `w * h * depth * layers * 4`; host blobs: their size) is reserved against
//!   [`GpuConfig::max_hostmem`] before the renderer allocates anything; exceeding it is
//!   ERR_OUT_OF_MEMORY. Guest blobs use guest memory and cost nothing here.
//! * **Backing errors.** A backing entry outside guest memory is ERR_INVALID_PARAMETER (QEMU says
//!   ERR_UNSPEC; the guest did pass a bad parameter).
//!
//! [`GpuConfig::max_hostmem`]: super::GpuConfig::max_hostmem

use std::hash::{BuildHasher, Hasher};

use log::{debug, warn};

use vm_memory::GuestMemoryMmap;

use super::{GpuError, GpuResult, VirtioGpu};
use crate::display::Display;
use crate::protocol::{MemEntry, Rect, Response};
use crate::renderer::formats::{PixelFormat, BYTES_PER_PIXEL};
use crate::renderer::{GuestBacking, ResourceCreate3d, Transfer3d};

/// What the device knows about one resource.
#[derive(Debug)]
pub(super) struct ResourceState {
    pub(super) width: u32,
    pub(super) height: u32,
    /// Host memory reserved for it.
    pub(super) hostmem: u64,
    /// Size of a blob resource, `None` for 2D/3D resources.
    pub(super) blob_size: Option<u64>,
    /// `VIRTIO_GPU_BLOB_MEM_*` and `VIRTIO_GPU_BLOB_FLAG_*` of a blob (0 otherwise).
    pub(super) blob_mem: u32,
    pub(super) blob_flags: u32,
    /// Offset in the host-visible region while the blob is mapped (RESOURCE_MAP_BLOB).
    pub(super) mapped_at: Option<u64>,
    pub(super) uuid: Option<[u8; 16]>,
    /// How a RESOURCE_CREATE_3D resource was made (its levels, depth and layers bound 3D
    /// transfers); `None` for 2D resources and blobs.
    pub(super) create_3d: Option<ResourceCreate3d>,
    /// Bytes of guest backing attached with RESOURCE_ATTACH_BACKING (`None`: none attached).
    pub(super) backing_len: Option<u64>,
}

impl VirtioGpu {
    /// Checks that a new resource `id` may be created and reserves `hostmem` bytes.
    pub(super) fn reserve_resource(&mut self, id: u32, hostmem: u64) -> GpuResult<()> {
        if id == 0 || self.resources.contains_key(&id) {
            return Err(GpuError::InvalidResourceId(id));
        }
        if self.resources.len() >= self.config.max_resources {
            return Err(GpuError::TooManyResources(self.config.max_resources));
        }
        match self.hostmem_used.checked_add(hostmem) {
            Some(total) if total <= self.config.max_hostmem => {
                self.hostmem_used = total;
                Ok(())
            }
            _ => Err(GpuError::HostMemory {
                requested: hostmem,
                used: self.hostmem_used,
                max: self.config.max_hostmem,
            }),
        }
    }

    /// Gives back `bytes` of reserved host memory.
    pub(super) fn release_hostmem(&mut self, bytes: u64) {
        self.hostmem_used = self.hostmem_used.saturating_sub(bytes);
    }

    /// RESOURCE_CREATE_2D: host memory reserved (`w * h * 4`), then the renderer creates it.
    pub(super) fn resource_create_2d(
        &mut self,
        id: u32,
        format: u32,
        width: u32,
        height: u32,
    ) -> GpuResult<Response> {
        if PixelFormat::from_virtio(format).is_none() {
            return Err(GpuError::InvalidParameter(format!("format {format}")));
        }
        if width == 0 || height == 0 {
            return Err(GpuError::InvalidParameter(format!("size {width}x{height}")));
        }
        // Cannot overflow: u32 * u32 * 4 < 2^66... so check it.
        let hostmem = u64::from(width)
            .checked_mul(u64::from(height))
            .and_then(|v| v.checked_mul(u64::from(BYTES_PER_PIXEL)))
            .unwrap_or(u64::MAX);
        self.reserve_resource(id, hostmem)?;
        if let Err(e) = self.renderer.resource_create_2d(id, format, width, height) {
            self.release_hostmem(hostmem);
            return Err(e.into());
        }
        self.resources.insert(
            id,
            ResourceState {
                width,
                height,
                hostmem,
                blob_size: None,
                blob_mem: 0,
                blob_flags: 0,
                mapped_at: None,
                uuid: None,
                create_3d: None,
                backing_len: None,
            },
        );
        Ok(Response::OkNoData)
    }

    /// RESOURCE_CREATE_3D: host memory reserved (an estimate), then the renderer creates it.
    pub(super) fn resource_create_3d(
        &mut self,
        resource_id: u32,
        args: ResourceCreate3d,
    ) -> GpuResult<Response> {
        // An estimate: 4 bytes per texel of every layer, mip levels and samples aside.
        let hostmem = u64::from(args.width)
            .checked_mul(u64::from(args.height))
            .and_then(|v| v.checked_mul(u64::from(args.depth.max(1))))
            .and_then(|v| v.checked_mul(u64::from(args.array_size.max(1))))
            .and_then(|v| v.checked_mul(u64::from(BYTES_PER_PIXEL)))
            .unwrap_or(u64::MAX);
        self.reserve_resource(resource_id, hostmem)?;
        if let Err(e) = self.renderer.resource_create_3d(resource_id, &args) {
            self.release_hostmem(hostmem);
            return Err(e.into());
        }
        self.resources.insert(
            resource_id,
            ResourceState {
                width: args.width,
                height: args.height,
                hostmem,
                blob_size: None,
                blob_mem: 0,
                blob_flags: 0,
                mapped_at: None,
                uuid: None,
                create_3d: Some(args),
                backing_len: None,
            },
        );
        Ok(Response::OkNoData)
    }

    /// RESOURCE_UNREF: a mapped blob is unmapped first, the scanouts showing the resource are
    /// disabled, its host memory is released.
    pub(super) fn resource_unref(
        &mut self,
        id: u32,
        display: &mut dyn Display,
    ) -> GpuResult<Response> {
        if self.resource(id)?.mapped_at.is_some() {
            debug!("unref of mapped blob {id}: unmapping it first");
            if let Err(e) = self.unmap_blob(id) {
                warn!("unref of blob {id}: unmap: {e}");
            }
        }
        let showing: Vec<usize> = self
            .scanouts
            .iter()
            .enumerate()
            .filter(|(_, s)| s.resource_id == id)
            .map(|(i, _)| i)
            .collect();
        for i in showing {
            debug!("scanout {i} loses resource {id}");
            self.disable_scanout(i, display);
        }
        for c in self.contexts.values_mut() {
            c.resources.remove(&id);
        }
        let res = self.resources.remove(&id);
        if let Some(r) = &res {
            self.release_hostmem(r.hostmem);
        }
        self.renderer.resource_unref(id)?;
        if let Some(r) = &res {
            self.trimmer.released(r.hostmem);
            self.trimmer.maybe_trim();
        }
        Ok(Response::OkNoData)
    }

    /// RESOURCE_ATTACH_BACKING: the guest ranges (checked to lie in guest memory) back the
    /// resource.
    pub(super) fn attach_backing(
        &mut self,
        resource_id: u32,
        entries: Vec<MemEntry>,
        mem: &GuestMemoryMmap,
    ) -> GpuResult<Response> {
        self.resource(resource_id)?;
        let backing = GuestBacking::new(mem.clone(), entries)?;
        let len = backing.len();
        self.renderer.attach_backing(resource_id, backing)?;
        if let Some(res) = self.resources.get_mut(&resource_id) {
            res.backing_len = Some(len);
        }
        Ok(Response::OkNoData)
    }

    /// RESOURCE_DETACH_BACKING.
    pub(super) fn detach_backing(&mut self, resource_id: u32) -> GpuResult<Response> {
        self.resource(resource_id)?;
        self.renderer.detach_backing(resource_id)?;
        if let Some(res) = self.resources.get_mut(&resource_id) {
            res.backing_len = None;
        }
        Ok(Response::OkNoData)
    }

    /// TRANSFER_TO_HOST_2D: guest backing -> the resource, inside the resource and the backing
    /// (checked by the validation step).
    pub(super) fn transfer_to_host_2d(
        &mut self,
        resource_id: u32,
        rect: Rect,
        offset: u64,
    ) -> GpuResult<Response> {
        let transfer = self.check_transfer_2d(resource_id, rect, offset)?;
        self.renderer.transfer_to_host_2d(resource_id, &transfer)?;
        Ok(Response::OkNoData)
    }

    /// TRANSFER_TO_HOST_3D, in the context it names or (context 0) outside any.
    pub(super) fn transfer_to_host_3d(
        &mut self,
        ctx_id: u32,
        resource_id: u32,
        transfer: &Transfer3d,
    ) -> GpuResult<Response> {
        let transfer = self.check_transfer_3d(ctx_id, resource_id, transfer)?;
        match ctx_id {
            0 => self.renderer.transfer_to_host_3d(resource_id, &transfer)?,
            _ => self
                .context_mut(ctx_id)?
                .render
                .transfer_to_host_3d(resource_id, &transfer)?,
        }
        Ok(Response::OkNoData)
    }

    /// TRANSFER_FROM_HOST_3D, in the context it names or (context 0) outside any.
    pub(super) fn transfer_from_host_3d(
        &mut self,
        ctx_id: u32,
        resource_id: u32,
        transfer: &Transfer3d,
    ) -> GpuResult<Response> {
        let transfer = self.check_transfer_3d(ctx_id, resource_id, transfer)?;
        match ctx_id {
            0 => self
                .renderer
                .transfer_from_host_3d(resource_id, &transfer)?,
            _ => self
                .context_mut(ctx_id)?
                .render
                .transfer_from_host_3d(resource_id, &transfer)?,
        }
        Ok(Response::OkNoData)
    }

    /// RESOURCE_ASSIGN_UUID: the resource's uuid, made at the first request.
    pub(super) fn assign_uuid(&mut self, resource_id: u32) -> GpuResult<Response> {
        self.resource(resource_id)?;
        let fresh = self.new_uuid(resource_id);
        let res = self
            .resources
            .get_mut(&resource_id)
            .ok_or(GpuError::InvalidResourceId(resource_id))?;
        Ok(Response::OkResourceUuid(*res.uuid.get_or_insert(fresh)))
    }

    /// A fresh RFC 4122 version 4 uuid for `resource_id`.
    fn new_uuid(&mut self, resource_id: u32) -> [u8; 16] {
        // Random per device instance (RandomState's keys), unique per call (counter).
        self.uuid_counter = self.uuid_counter.wrapping_add(1);
        let mut out = [0u8; 16];
        for (i, chunk) in out.chunks_exact_mut(8).enumerate() {
            let mut h = self.uuid_keys.build_hasher();
            h.write_u32(resource_id);
            h.write_u64(self.uuid_counter);
            h.write_usize(i);
            chunk.copy_from_slice(&h.finish().to_le_bytes());
        }
        // RFC 4122 version 4, variant 1.
        out[6] = (out[6] & 0x0f) | 0x40;
        out[8] = (out[8] & 0x3f) | 0x80;
        out
    }
}

#[cfg(test)]
mod tests {
    use crate::gpu::test_support::*;
    use crate::gpu::GpuConfig;
    use crate::protocol::tests::le32s;
    use crate::protocol::*;
    use crate::renderer::software::SoftwareRenderer;

    #[test]
    fn resource_errors() {
        let mut h = Harness::software();
        // id 0, bad format, zero size, duplicate.
        assert_eq!(
            h.create_2d(0, 1, 4, 4),
            VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID
        );
        assert_eq!(
            h.create_2d(1, 77, 4, 4),
            VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER
        );
        assert_eq!(
            h.create_2d(1, 1, 0, 4),
            VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER
        );
        assert_eq!(h.create_2d(1, 1, 4, 4), VIRTIO_GPU_RESP_OK_NODATA);
        assert_eq!(
            h.create_2d(1, 1, 4, 4),
            VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID
        );
        // Unknown resources everywhere.
        assert_eq!(
            h.attach(9, &[(DATA_BASE, 64)]),
            VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID
        );
        assert_eq!(
            h.transfer(9, Rect::new(0, 0, 1, 1), 0),
            VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID
        );
        assert_eq!(
            h.set_scanout(0, 9, Rect::new(0, 0, 1, 1)),
            VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID
        );
        assert_eq!(
            h.cmd(&req(VIRTIO_GPU_CMD_RESOURCE_UNREF, &le32s(&[9, 0]))),
            VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID
        );
        assert_eq!(
            h.cmd(&req(
                VIRTIO_GPU_CMD_RESOURCE_DETACH_BACKING,
                &le32s(&[9, 0])
            )),
            VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID
        );
        // Transfer without backing, rects outside, overflowing rects.
        assert_eq!(
            h.transfer(1, Rect::new(0, 0, 4, 4), 0),
            VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER
        );
        // Backing outside guest memory.
        assert_eq!(
            h.attach(1, &[(0xffff_ffff_0000, 64)]),
            VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER
        );
        assert_eq!(h.attach(1, &[(DATA_BASE, 64)]), VIRTIO_GPU_RESP_OK_NODATA);
        assert_eq!(
            h.transfer(1, Rect::new(u32::MAX, 0, 2, 1), 0),
            VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER
        );
        assert_eq!(
            h.transfer(1, Rect::new(0, 0, 4, 4), 1),
            VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER
        );
        // Scanout checks.
        assert_eq!(
            h.set_scanout(1, 1, Rect::new(0, 0, 4, 4)),
            VIRTIO_GPU_RESP_ERR_INVALID_SCANOUT_ID
        );
        assert_eq!(
            h.set_scanout(0, 1, Rect::new(1, 0, 4, 4)),
            VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER
        );
        assert_eq!(
            h.set_scanout(0, 1, Rect::new(0, 0, 0, 4)),
            VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER
        );
        // SET_SCANOUT with resource 0 disables.
        assert_eq!(
            h.set_scanout(0, 0, Rect::default()),
            VIRTIO_GPU_RESP_OK_NODATA
        );
        assert_eq!(h.display.calls.last(), Some(&Call::Scanout(0, 0, 0)));
        // 3D commands are not offered by the software renderer.
        assert_eq!(
            h.cmd(&req(VIRTIO_GPU_CMD_SUBMIT_3D, &le32s(&[0, 0]))),
            VIRTIO_GPU_RESP_ERR_UNSPEC
        );
        assert_eq!(
            h.cmd(&req(VIRTIO_GPU_CMD_GET_CAPSET_INFO, &le32s(&[0, 0]))),
            VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER
        );
        // Unknown and malformed commands.
        assert_eq!(h.cmd(&req(0x0777, &[])), VIRTIO_GPU_RESP_ERR_UNSPEC);
        assert_eq!(
            h.cmd(&req(VIRTIO_GPU_CMD_RESOURCE_CREATE_2D, &le32s(&[1, 2]))),
            VIRTIO_GPU_RESP_ERR_UNSPEC
        );
    }

    #[test]
    fn host_memory_and_resource_count_are_bounded() {
        let mut h = Harness::new(
            Box::new(SoftwareRenderer::new()),
            GpuConfig {
                max_hostmem: 64 * 64 * 4 + 100,
                max_resources: 3,
                ..Default::default()
            },
        );
        assert_eq!(h.create_2d(1, 1, 64, 64), VIRTIO_GPU_RESP_OK_NODATA);
        // 100 bytes are left: 5x5x4 fits exactly, 6x6x4 does not.
        assert_eq!(h.create_2d(2, 1, 6, 6), VIRTIO_GPU_RESP_ERR_OUT_OF_MEMORY);
        // A size whose allocation would be absurd is refused by accounting, not by the allocator.
        assert_eq!(
            h.create_2d(2, 1, u32::MAX, u32::MAX),
            VIRTIO_GPU_RESP_ERR_OUT_OF_MEMORY
        );
        assert_eq!(h.create_2d(2, 1, 5, 5), VIRTIO_GPU_RESP_OK_NODATA);
        // Freeing gives the memory back.
        h.cmd(&req(VIRTIO_GPU_CMD_RESOURCE_UNREF, &le32s(&[1, 0])));
        assert_eq!(h.create_2d(3, 1, 64, 64), VIRTIO_GPU_RESP_OK_NODATA);
        // Resource count: guest blobs cost no host memory but count.
        write_image(&h, 2, 2);
        let blob = |id: u32| {
            let mut b = le32s(&[id, VIRTIO_GPU_BLOB_MEM_GUEST, 0, 1]);
            b.extend_from_slice(&0u64.to_le_bytes());
            b.extend_from_slice(&16u64.to_le_bytes());
            b.extend_from_slice(&DATA_BASE.to_le_bytes());
            b.extend_from_slice(&le32s(&[16, 0]));
            req(VIRTIO_GPU_CMD_RESOURCE_CREATE_BLOB, &b)
        };
        assert_eq!(h.cmd(&blob(4)), VIRTIO_GPU_RESP_OK_NODATA);
        assert_eq!(h.cmd(&blob(5)), VIRTIO_GPU_RESP_ERR_OUT_OF_MEMORY);
        h.cmd(&req(VIRTIO_GPU_CMD_RESOURCE_UNREF, &le32s(&[2, 0])));
        assert_eq!(h.cmd(&blob(5)), VIRTIO_GPU_RESP_OK_NODATA);
        // Reset frees everything.
        h.gpu.reset();
        assert_eq!(h.create_2d(1, 1, 64, 64), VIRTIO_GPU_RESP_OK_NODATA);
        assert_eq!(h.create_2d(2, 1, 5, 5), VIRTIO_GPU_RESP_OK_NODATA);
    }

    #[test]
    fn partial_transfer_updates_only_its_rectangle() {
        let mut h = Harness::software();
        let (w, ht) = (5u32, 4u32);
        write_image(&h, w, ht);
        h.create_2d(3, VIRTIO_GPU_FORMAT_B8G8R8X8_UNORM, w, ht);
        h.attach(3, &[(DATA_BASE, w * ht * 4)]);
        let r = Rect::new(1, 2, 3, 1);
        assert_eq!(
            h.transfer(3, r, u64::from((2 * w + 1) * 4)),
            VIRTIO_GPU_RESP_OK_NODATA
        );
        h.set_scanout(0, 3, Rect::new(0, 0, w, ht));
        h.display.calls.clear();
        h.flush(3, Rect::new(0, 0, w, ht));
        let mut want = vec![0u8; (w * ht * 4) as usize];
        for y in 0..ht {
            for x in 0..w {
                let i = ((y * w + x) * 4) as usize;
                let p = if y == 2 && (1..4).contains(&x) {
                    let p = px(x, y);
                    [p[0], p[1], p[2], 0xff]
                } else {
                    [0, 0, 0, 0xff]
                };
                want[i..i + 4].copy_from_slice(&p);
            }
        }
        assert_eq!(h.display.calls, vec![Call::Update(0, 0, 0, w, ht, want)]);
    }

    #[test]
    fn uuid_is_stable_per_resource_and_v4() {
        let mut h = Harness::software();
        h.create_2d(1, 1, 4, 4);
        h.create_2d(2, 1, 4, 4);
        let uuid = |h: &mut Harness, id: u32| {
            let r = h.send(&req(VIRTIO_GPU_CMD_RESOURCE_ASSIGN_UUID, &le32s(&[id, 0])));
            let v = h.resp(&r, 40);
            assert_eq!(&v[0..4], &VIRTIO_GPU_RESP_OK_RESOURCE_UUID.to_le_bytes());
            v[24..40].to_vec()
        };
        let a = uuid(&mut h, 1);
        assert_eq!(a, uuid(&mut h, 1));
        let b = uuid(&mut h, 2);
        assert_ne!(a, b);
        assert_eq!(a[6] >> 4, 4);
        assert_eq!(a[8] >> 6, 2);
        assert_eq!(
            h.cmd(&req(VIRTIO_GPU_CMD_RESOURCE_ASSIGN_UUID, &le32s(&[7, 0]))),
            VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID
        );
    }
}
