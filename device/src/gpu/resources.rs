//! Resources: what the device knows of each (size, host memory, blob attributes, uuid), their
//! creation and destruction (RESOURCE_CREATE_2D, RESOURCE_CREATE_3D, RESOURCE_UNREF), guest
//! backing (RESOURCE_ATTACH_BACKING, RESOURCE_DETACH_BACKING), transfers (TRANSFER_TO_HOST_2D,
//! TRANSFER_TO_HOST_3D, TRANSFER_FROM_HOST_3D), RESOURCE_ASSIGN_UUID, and the host-memory
//! accounting every resource goes through.
//!
//! # Decisions
//!
//! * **Host memory.** Every resource's host memory is charged to the host memory budget
//!   ([`GpuConfig::max_hostmem`], `budget.rs`) at its real size before the renderer allocates
//!   anything: its record, its pixels (2D: `w * h * 4`; 3D: every level, layer and sample at
//!   the format's texel size) or a host blob's pages, and each backing's entry list (and the
//!   renderer's copy of the backing where it makes one). Exceeding it is ERR_OUT_OF_MEMORY.
//!   Guest blobs' pixels are guest memory; their record and entry list are charged.
//! * **Backing errors.** A backing entry outside guest memory is ERR_INVALID_PARAMETER (QEMU says
//!   ERR_UNSPEC; the guest did pass a bad parameter).
//!
//! [`GpuConfig::max_hostmem`]: super::GpuConfig::max_hostmem

use std::hash::{BuildHasher, Hasher};

use log::{debug, warn};

use vm_memory::GuestMemoryMmap;

use super::budget::{self, Charge, Use};
use super::{GpuError, GpuResult, VirtioGpu};
use crate::display::Display;
use crate::limits::RESOURCE_RECORD_BYTES;
use crate::protocol::{MemEntry, Rect, Response};
use crate::renderer::formats::PixelFormat;
use crate::renderer::{GuestBacking, ResourceCreate3d, Transfer3d};

/// What a resource is charged to the host memory budget, released with it (`budget.rs`).
#[derive(Debug)]
pub(super) struct ResourceCharges {
    /// Its record.
    pub(super) record: Charge,
    /// Its pixels, or a host blob's pages.
    pub(super) storage: Option<Charge>,
    /// Its backing's entry list.
    pub(super) backing: Option<Charge>,
    /// The renderer's copy of its backing.
    pub(super) staging: Option<Charge>,
}

/// What the device knows about one resource.
#[derive(Debug)]
pub(super) struct ResourceState {
    pub(super) width: u32,
    pub(super) height: u32,
    /// What it is charged to the host memory budget.
    pub(super) charges: ResourceCharges,
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
    /// Checks that a new resource `id` may be created and charges its record and `storage`
    /// (what and how many bytes; none for a guest blob).
    pub(super) fn reserve_resource(
        &mut self,
        id: u32,
        storage: Option<(Use, u64)>,
    ) -> GpuResult<ResourceCharges> {
        if id == 0 || self.resources.contains_key(&id) {
            return Err(GpuError::InvalidResourceId(id));
        }
        if self.resources.len() >= self.config.max_resources {
            return Err(GpuError::TooManyResources(self.config.max_resources));
        }
        let record = self.budget.charge(Use::Record, RESOURCE_RECORD_BYTES)?;
        let storage = match storage.map(|(what, bytes)| self.budget.charge(what, bytes)) {
            None => None,
            Some(Ok(c)) => Some(c),
            Some(Err(e)) => {
                self.budget.release(record);
                return Err(e.into());
            }
        };
        Ok(ResourceCharges {
            record,
            storage,
            backing: None,
            staging: None,
        })
    }

    /// Gives every charge of a resource back; returns the bytes.
    pub(super) fn release_resource_charges(&mut self, c: ResourceCharges) -> u64 {
        let mut bytes = c.record.bytes();
        self.budget.release(c.record);
        for charge in [c.storage, c.backing, c.staging].into_iter().flatten() {
            bytes += charge.bytes();
            self.budget.release(charge);
        }
        bytes
    }

    /// Charges the entry list of a backing of `entries` entries.
    pub(super) fn charge_backing(&mut self, entries: usize) -> GpuResult<Charge> {
        Ok(self
            .budget
            .charge(Use::Backing, budget::backing_metadata(entries))?)
    }

    /// RESOURCE_CREATE_2D: its record and pixels (`w * h * 4`) charged, then the renderer
    /// creates it.
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
        let charges =
            self.reserve_resource(id, Some((Use::Storage, budget::storage_2d(width, height))))?;
        if let Err(e) = self.renderer.resource_create_2d(id, format, width, height) {
            self.release_resource_charges(charges);
            return Err(e.into());
        }
        self.resources.insert(
            id,
            ResourceState {
                width,
                height,
                charges,
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

    /// RESOURCE_CREATE_3D: its record and storage (every level, layer and sample at the format's
    /// texel size, `budget::storage_3d`) charged, then the renderer creates it.
    pub(super) fn resource_create_3d(
        &mut self,
        resource_id: u32,
        args: ResourceCreate3d,
    ) -> GpuResult<Response> {
        let charges =
            self.reserve_resource(resource_id, Some((Use::Storage, budget::storage_3d(&args))))?;
        if let Err(e) = self.renderer.resource_create_3d(resource_id, &args) {
            self.release_resource_charges(charges);
            return Err(e.into());
        }
        self.resources.insert(
            resource_id,
            ResourceState {
                width: args.width,
                height: args.height,
                charges,
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
    /// disabled, its charges (and its attachments to contexts) are released.
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
            self.budget.release_opt(c.resources.remove(&id));
        }
        let released = self
            .resources
            .remove(&id)
            .map(|r| self.release_resource_charges(r.charges));
        self.renderer.resource_unref(id)?;
        if let Some(bytes) = released {
            self.trimmer.released(bytes);
            self.trimmer.maybe_trim();
        }
        Ok(Response::OkNoData)
    }

    /// RESOURCE_ATTACH_BACKING: the entry list charged (and the renderer's copy of the
    /// backing, where it makes one) before anything is built, then the guest ranges (checked to
    /// lie in guest memory) back the resource. A backing the renderer replaces gives its
    /// charges back.
    pub(super) fn attach_backing(
        &mut self,
        resource_id: u32,
        entries: Vec<MemEntry>,
        mem: &GuestMemoryMmap,
    ) -> GpuResult<Response> {
        self.resource(resource_id)?;
        let meta = self.charge_backing(entries.len())?;
        let backing = match GuestBacking::new(mem.clone(), entries) {
            Ok(b) => b,
            Err(e) => {
                self.budget.release(meta);
                return Err(e.into());
            }
        };
        let staging = if self.renderer.attach_backing_copies() {
            match self.budget.charge(Use::Staging, backing.len()) {
                Ok(c) => Some(c),
                Err(e) => {
                    self.budget.release(meta);
                    return Err(e.into());
                }
            }
        } else {
            None
        };
        let len = backing.len();
        if let Err(e) = self.renderer.attach_backing(resource_id, backing) {
            self.budget.release(meta);
            self.budget.release_opt(staging);
            return Err(e.into());
        }
        if let Some(r) = self.resources.get_mut(&resource_id) {
            r.backing_len = Some(len);
            let old_meta = r.charges.backing.replace(meta);
            let old_staging = std::mem::replace(&mut r.charges.staging, staging);
            self.budget.release_opt(old_meta);
            self.budget.release_opt(old_staging);
        }
        Ok(Response::OkNoData)
    }

    /// RESOURCE_DETACH_BACKING: the backing's charges are given back.
    pub(super) fn detach_backing(&mut self, resource_id: u32) -> GpuResult<Response> {
        self.resource(resource_id)?;
        self.renderer.detach_backing(resource_id)?;
        if let Some(r) = self.resources.get_mut(&resource_id) {
            r.backing_len = None;
            let meta = r.charges.backing.take();
            let staging = r.charges.staging.take();
            self.budget.release_opt(meta);
            self.budget.release_opt(staging);
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
        self.transfer_3d(ctx_id, resource_id, transfer, true)
    }

    /// TRANSFER_FROM_HOST_3D, in the context it names or (context 0) outside any.
    pub(super) fn transfer_from_host_3d(
        &mut self,
        ctx_id: u32,
        resource_id: u32,
        transfer: &Transfer3d,
    ) -> GpuResult<Response> {
        self.transfer_3d(ctx_id, resource_id, transfer, false)
    }

    /// Both 3D transfers: checked by the validation step, the resource handed to 3D work, then
    /// the transfer in the context the command names (or the renderer's, for context 0).
    fn transfer_3d(
        &mut self,
        ctx_id: u32,
        resource_id: u32,
        transfer: &Transfer3d,
        to_host: bool,
    ) -> GpuResult<Response> {
        let transfer = self.check_transfer_3d(ctx_id, resource_id, transfer)?;
        self.renderer.prepare_for_3d(resource_id)?;
        match (ctx_id, to_host) {
            (0, true) => self.renderer.transfer_to_host_3d(resource_id, &transfer)?,
            (0, false) => self
                .renderer
                .transfer_from_host_3d(resource_id, &transfer)?,
            (_, true) => self
                .context_mut(ctx_id)?
                .render
                .transfer_to_host_3d(resource_id, &transfer)?,
            (_, false) => self
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
    use crate::limits::{BACKING_ENTRY_BYTES, BACKING_RECORD_BYTES, RESOURCE_RECORD_BYTES};
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
        // Two resources' records, 64x64x4 and 100 bytes.
        let mut h = Harness::new(
            Box::new(SoftwareRenderer::new()),
            GpuConfig {
                max_hostmem: 2 * RESOURCE_RECORD_BYTES + 64 * 64 * 4 + 100,
                max_resources: 3,
                ..Default::default()
            },
        );
        assert_eq!(h.create_2d(1, 1, 64, 64), VIRTIO_GPU_RESP_OK_NODATA);
        // 100 bytes and a record are left: 5x5x4 fits exactly, 6x6x4 does not.
        assert_eq!(h.create_2d(2, 1, 6, 6), VIRTIO_GPU_RESP_ERR_OUT_OF_MEMORY);
        // A size whose allocation would be absurd is refused by accounting, not by the allocator.
        assert_eq!(
            h.create_2d(2, 1, u32::MAX, u32::MAX),
            VIRTIO_GPU_RESP_ERR_OUT_OF_MEMORY
        );
        assert_eq!(h.create_2d(2, 1, 5, 5), VIRTIO_GPU_RESP_OK_NODATA);
        assert_eq!(h.budget_used(), h.gpu.config.max_hostmem);
        // Freeing gives the memory back.
        h.cmd(&req(VIRTIO_GPU_CMD_RESOURCE_UNREF, &le32s(&[1, 0])));
        assert_eq!(h.create_2d(3, 1, 64, 64), VIRTIO_GPU_RESP_OK_NODATA);
        // Resource count: guest blobs cost no pixels but count (their record and entry list
        // are charged: resource 3 makes room for them).
        h.cmd(&req(VIRTIO_GPU_CMD_RESOURCE_UNREF, &le32s(&[3, 0])));
        assert_eq!(h.create_2d(3, 1, 4, 4), VIRTIO_GPU_RESP_OK_NODATA);
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
        assert_eq!(h.budget_used(), 0);
        assert_eq!(h.create_2d(1, 1, 64, 64), VIRTIO_GPU_RESP_OK_NODATA);
        assert_eq!(h.create_2d(2, 1, 5, 5), VIRTIO_GPU_RESP_OK_NODATA);
    }

    /// `n` backing entries of 4 bytes each at DATA_BASE.
    fn entries(n: usize) -> Vec<(u64, u32)> {
        (0..n as u64).map(|i| (DATA_BASE + 4 * i, 4)).collect()
    }

    #[test]
    fn backing_entry_lists_are_charged_until_detach_unref_and_reset() {
        let meta = |n: u64| n * BACKING_ENTRY_BYTES + BACKING_RECORD_BYTES;
        let res = RESOURCE_RECORD_BYTES + 8 * 8 * 4;
        let mut h = Harness::new(
            Box::new(SoftwareRenderer::new()),
            GpuConfig {
                max_hostmem: 2 * res + meta(100),
                ..Default::default()
            },
        );
        assert_eq!(h.create_2d(1, 1, 8, 8), VIRTIO_GPU_RESP_OK_NODATA);
        assert_eq!(h.create_2d(2, 1, 8, 8), VIRTIO_GPU_RESP_OK_NODATA);
        // 101 entries do not fit, 100 fit exactly.
        assert_eq!(
            h.attach(1, &entries(101)),
            VIRTIO_GPU_RESP_ERR_OUT_OF_MEMORY
        );
        assert_eq!(h.budget_used(), 2 * res);
        assert_eq!(h.attach(1, &entries(100)), VIRTIO_GPU_RESP_OK_NODATA);
        assert_eq!(h.budget_used(), 2 * res + meta(100));
        assert_eq!(h.attach(2, &entries(1)), VIRTIO_GPU_RESP_ERR_OUT_OF_MEMORY);
        // DETACH_BACKING gives it back.
        assert_eq!(h.detach(1), VIRTIO_GPU_RESP_OK_NODATA);
        assert_eq!(h.budget_used(), 2 * res);
        assert_eq!(h.attach(2, &entries(100)), VIRTIO_GPU_RESP_OK_NODATA);
        // So does RESOURCE_UNREF.
        assert_eq!(h.unref(2), VIRTIO_GPU_RESP_OK_NODATA);
        assert_eq!(h.budget_used(), res);
        assert_eq!(h.create_2d(2, 1, 8, 8), VIRTIO_GPU_RESP_OK_NODATA);
        assert_eq!(h.attach(1, &entries(10)), VIRTIO_GPU_RESP_OK_NODATA);
        // A backing outside guest memory, or one the renderer refuses (a second one), is not
        // charged.
        assert_eq!(
            h.attach(2, &[(1 << 40, 4)]),
            VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER
        );
        assert_eq!(
            h.attach(1, &entries(10)),
            VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER
        );
        assert_eq!(h.budget_used(), 2 * res + meta(10));
        h.gpu.reset();
        assert_eq!(h.budget_used(), 0);
    }

    /// Many resources each with a long backing list: the budget refuses the list before the
    /// device builds it, so what the lists hold on the host stays within the budget (the
    /// issue's 16384 x 16384 entries, scaled to the harness's request slots).
    #[test]
    fn many_backings_of_many_entries_are_refused_at_the_budget() {
        const ENTRIES: usize = 500;
        const LIMIT: u64 = 4 << 20;
        let mut h = Harness::new(
            Box::new(SoftwareRenderer::new()),
            GpuConfig {
                max_hostmem: LIMIT,
                ..Default::default()
            },
        );
        let list = entries(ENTRIES);
        let per_resource =
            RESOURCE_RECORD_BYTES + 4 + ENTRIES as u64 * BACKING_ENTRY_BYTES + BACKING_RECORD_BYTES;
        let mut attached = 0u64;
        let refused = loop {
            let id = attached as u32 + 1;
            assert_eq!(h.create_2d(id, 1, 1, 1), VIRTIO_GPU_RESP_OK_NODATA);
            let r = h.attach(id, &list);
            if r != VIRTIO_GPU_RESP_OK_NODATA {
                break r;
            }
            attached += 1;
            assert!(attached < 1000, "never refused");
        };
        assert_eq!(refused, VIRTIO_GPU_RESP_ERR_OUT_OF_MEMORY);
        // Exactly as many as the budget holds, and every entry charged what it costs.
        assert_eq!(attached, (LIMIT - RESOURCE_RECORD_BYTES - 4) / per_resource);
        assert!(h.budget_used() <= LIMIT);
        assert!(h.budget_used() >= attached * ENTRIES as u64 * BACKING_ENTRY_BYTES);
        // Unref gives all of it back; reset too.
        for id in 1..=attached as u32 + 1 {
            assert_eq!(h.unref(id), VIRTIO_GPU_RESP_OK_NODATA);
        }
        assert_eq!(h.budget_used(), 0);
        assert_eq!(h.create_2d(1, 1, 1, 1), VIRTIO_GPU_RESP_OK_NODATA);
        assert_eq!(h.attach(1, &list), VIRTIO_GPU_RESP_OK_NODATA);
        h.gpu.reset();
        assert_eq!(h.budget_used(), 0);
    }

    /// A renderer whose library copies every backing (gfxstream's staging copy): the copy is
    /// charged at the backing's length, refused at the limit, and freed with the backing.
    #[test]
    fn staging_copies_are_charged_when_the_renderer_copies_backings() {
        const BACKING: u32 = 64 << 10;
        let meta = BACKING_ENTRY_BYTES + BACKING_RECORD_BYTES;
        let res = RESOURCE_RECORD_BYTES + 16 * 16 * 4;
        let config = GpuConfig {
            max_hostmem: 2 * res + 2 * meta + u64::from(BACKING) + 1000,
            ..Default::default()
        };
        // Without a copy two backings fit; with it, one.
        for copies in [false, true] {
            let mut h = Harness::new(Box::new(StagingRenderer::new(copies)), config.clone());
            assert_eq!(h.create_2d(1, 1, 16, 16), VIRTIO_GPU_RESP_OK_NODATA);
            assert_eq!(h.create_2d(2, 1, 16, 16), VIRTIO_GPU_RESP_OK_NODATA);
            assert_eq!(
                h.attach(1, &[(DATA_BASE, BACKING)]),
                VIRTIO_GPU_RESP_OK_NODATA
            );
            let staging = if copies { u64::from(BACKING) } else { 0 };
            assert_eq!(h.budget_used(), 2 * res + meta + staging);
            let second = h.attach(2, &[(DATA_BASE, BACKING)]);
            if !copies {
                assert_eq!(second, VIRTIO_GPU_RESP_OK_NODATA);
                // A backing the renderer replaces (a 3D resource here) is charged once.
                assert_eq!(
                    h.create_3d(3, 2, 1, (1, 1, 1), 1, 0, 0),
                    VIRTIO_GPU_RESP_OK_NODATA
                );
                assert_eq!(h.attach(3, &[(DATA_BASE, 4)]), VIRTIO_GPU_RESP_OK_NODATA);
                assert_eq!(h.attach(3, &[(DATA_BASE, 4)]), VIRTIO_GPU_RESP_OK_NODATA);
                assert_eq!(
                    h.budget_used(),
                    2 * res + RESOURCE_RECORD_BYTES + 4 + 3 * meta
                );
                continue;
            }
            assert_eq!(second, VIRTIO_GPU_RESP_ERR_OUT_OF_MEMORY);
            assert_eq!(h.budget_used(), 2 * res + meta + staging);
            // DETACH_BACKING frees the copy.
            assert_eq!(h.detach(1), VIRTIO_GPU_RESP_OK_NODATA);
            assert_eq!(h.budget_used(), 2 * res);
            assert_eq!(
                h.attach(2, &[(DATA_BASE, BACKING)]),
                VIRTIO_GPU_RESP_OK_NODATA
            );
            // UNREF frees it.
            assert_eq!(h.unref(2), VIRTIO_GPU_RESP_OK_NODATA);
            assert_eq!(h.budget_used(), res);
            assert_eq!(
                h.attach(1, &[(DATA_BASE, BACKING)]),
                VIRTIO_GPU_RESP_OK_NODATA
            );
            // Reset frees everything.
            h.gpu.reset();
            assert_eq!(h.budget_used(), 0);
        }
    }

    /// 3D resources are charged every level, layer and sample at their format's size.
    #[test]
    fn resources_3d_are_charged_at_their_real_size() {
        // 256x256 B8G8R8A8 with a full mip chain is 349524 bytes; the old estimate (4 bytes a
        // texel of level 0) was 262144.
        let full_chain = 4 * (0..=8).map(|l| (256u64 >> l) * (256 >> l)).sum::<u64>();
        assert_eq!(full_chain, 349_524);
        let mut h = Harness::new(
            Box::new(StagingRenderer::new(false)),
            GpuConfig {
                max_hostmem: 2 * RESOURCE_RECORD_BYTES + full_chain + 256 * 256 * 4 - 1,
                ..Default::default()
            },
        );
        assert_eq!(
            h.create_3d(1, 2, 1, (256, 256, 1), 1, 8, 0),
            VIRTIO_GPU_RESP_OK_NODATA
        );
        assert_eq!(h.budget_used(), RESOURCE_RECORD_BYTES + full_chain);
        // What is left (a record and one byte less than a plain 256x256 level 0) takes neither
        // 4 samples, nor 4 layers, nor a 16-byte format, nor the plain level 0; 256x255 fits.
        for (format, layers, samples) in [(1, 1, 4), (1, 4, 0), (31, 1, 0)] {
            assert_eq!(
                h.create_3d(2, 2, format, (256, 256, 1), layers, 0, samples),
                VIRTIO_GPU_RESP_ERR_OUT_OF_MEMORY,
                "format {format}, {layers} layers, {samples} samples"
            );
        }
        assert_eq!(
            h.create_3d(2, 2, 1, (256, 256, 1), 1, 0, 0),
            VIRTIO_GPU_RESP_ERR_OUT_OF_MEMORY
        );
        assert_eq!(
            h.create_3d(2, 2, 1, (256, 255, 1), 1, 0, 0),
            VIRTIO_GPU_RESP_OK_NODATA
        );
        // Unref and reset give it back.
        assert_eq!(h.unref(1), VIRTIO_GPU_RESP_OK_NODATA);
        assert_eq!(h.budget_used(), RESOURCE_RECORD_BYTES + 256 * 255 * 4);
        h.gpu.reset();
        assert_eq!(h.budget_used(), 0);
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
