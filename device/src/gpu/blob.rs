//! Blob resources and the host-visible region: RESOURCE_CREATE_BLOB, RESOURCE_MAP_BLOB,
//! RESOURCE_UNMAP_BLOB, the [`SharedMemoryMapper`] the backend installs, and the bookkeeping of
//! live mappings (offset, length, their bound).
//!
//! # Decisions
//!
//! * **Blob mapping.** RESOURCE_MAP_BLOB needs the host-visible shared memory region
//!   (`VIRTIO_GPU_SHM_ID_HOST_VISIBLE`, [`GpuConfig::host_visible_size`] bytes) and a
//!   [`SharedMemoryMapper`] (the backend installs one when the frontend gave a backend-request
//!   channel). The blob must be a host blob (HOST3D or HOST3D_GUEST) created with
//!   BLOB_FLAG_USE_MAPPABLE and not mapped yet; the offset must be page aligned, and the mapping
//!   (the blob's size rounded up to a page) must lie inside the region without overlapping a
//!   live one (else ERR_INVALID_PARAMETER). The renderer exports the blob as an fd, the mapper
//!   asks the frontend to map it (SHMEM_MAP) and the guest gets the renderer's map_info
//!   (OK_MAP_INFO). No region, no mapper, an export the renderer cannot do, or a frontend that
//!   refuses the mapping: ERR_UNSPEC. UNMAP_BLOB, unref of a mapped blob and a guest reset send
//!   SHMEM_UNMAP; a disconnect forgets the mappings (the frontend's region went with it).
//!
//! [`GpuConfig::host_visible_size`]: super::GpuConfig::host_visible_size

use std::os::fd::{AsFd, BorrowedFd};

use log::{debug, warn};
use vm_memory::GuestMemoryMmap;

use super::budget::{self, Charge, Use};
use super::resources::ResourceState;
use super::{GpuError, GpuResult, VirtioGpu};
use crate::protocol::{
    self, Response, VIRTIO_GPU_BLOB_FLAG_USE_MAPPABLE, VIRTIO_GPU_BLOB_MEM_GUEST,
    VIRTIO_GPU_BLOB_MEM_HOST3D, VIRTIO_GPU_BLOB_MEM_HOST3D_GUEST, VIRTIO_GPU_MAP_CACHE_MASK,
};
use crate::renderer::{CreateBlob, GuestBacking, RendererError};

pub use crate::limits::MAX_BLOB_MAPPINGS;

/// Alignment of RESOURCE_MAP_BLOB offsets and of mapping lengths, in bytes, when the host's page
/// size cannot be read. The device uses the host page size (`sysconf(_SC_PAGESIZE)`): the
/// frontend maps the blob with `mmap(MAP_FIXED)`, which needs page-aligned addresses.
pub const DEFAULT_MAP_ALIGNMENT: u64 = 4096;

/// The host-visible shared memory region as the device reaches it: the backend implements it
/// over vhost-user's backend-request channel (SHMEM_MAP / SHMEM_UNMAP to the frontend, which
/// maps the fd into the region it exposes to the guest). The device (`gpu/`) never talks
/// vhost-user itself; tests use recording doubles.
///
/// Offsets and lengths are checked by the device (inside the region, page aligned, no overlap)
/// before a call.
pub trait SharedMemoryMapper {
    /// Maps `len` bytes of `fd` from `fd_offset` at `shm_offset` of the host-visible region.
    /// Returns once the frontend has mapped it (or refused).
    fn map(
        &mut self,
        fd: BorrowedFd<'_>,
        fd_offset: u64,
        shm_offset: u64,
        len: u64,
        writable: bool,
    ) -> std::io::Result<()>;
    /// Removes the mapping at `shm_offset` of `len` bytes.
    fn unmap(&mut self, shm_offset: u64, len: u64) -> std::io::Result<()>;
}

/// One live mapping in the host-visible region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct BlobMap {
    resource_id: u32,
    /// Length in bytes (page aligned).
    len: u64,
}

impl VirtioGpu {
    /// Installs (or, with `None`, removes) the host-visible region's mapper: the backend calls
    /// it when the frontend hands over a backend-request channel and when the connection ends.
    /// Mappings made through an earlier mapper are forgotten (its frontend and region are gone);
    /// the blobs stay and may be mapped again.
    pub fn set_shared_memory(&mut self, mapper: Option<Box<dyn SharedMemoryMapper>>) {
        if !self.blob_maps.is_empty() {
            debug!(
                "forgetting {} blob mapping(s) of the previous region",
                self.blob_maps.len()
            );
        }
        self.blob_maps.clear();
        for r in self.resources.values_mut() {
            r.mapped_at = None;
        }
        self.shm = mapper;
    }

    /// Size of the host-visible shared memory region (0: none).
    pub fn host_visible_size(&self) -> u64 {
        self.config.host_visible_size
    }

    /// Whether RESOURCE_MAP_BLOB can work now: a region and a mapper.
    pub fn host_visible_region(&self) -> bool {
        self.config.host_visible_size > 0 && self.shm.is_some()
    }

    /// Asks the frontend to unmap every live mapping (guest reset) and forgets them.
    pub(super) fn unmap_all(&mut self) {
        let maps = std::mem::take(&mut self.blob_maps);
        for (offset, m) in maps {
            if let Some(r) = self.resources.get_mut(&m.resource_id) {
                r.mapped_at = None;
            }
            if let Some(shm) = self.shm.as_mut() {
                if let Err(e) = shm.unmap(offset, m.len) {
                    warn!(
                        "reset: SHMEM_UNMAP of blob {} at {offset:#x}: {e}",
                        m.resource_id
                    );
                }
            }
        }
    }

    /// RESOURCE_CREATE_BLOB: a guest blob (guest memory), or a host blob of context `ctx_id`.
    /// Its record, a host blob's pages (its size rounded up to host pages) and the entry list
    /// of its backing are charged to the host memory budget before anything is built.
    pub(super) fn create_blob(
        &mut self,
        ctx_id: u32,
        resource_id: u32,
        args: CreateBlob,
        entries: Vec<protocol::MemEntry>,
        mem: &GuestMemoryMmap,
    ) -> GpuResult<Response> {
        if args.size == 0 {
            return Err(GpuError::InvalidParameter("blob of size 0".into()));
        }
        // (host pages, whether it has a backing)
        let (host_pages, with_backing) = match args.blob_mem {
            VIRTIO_GPU_BLOB_MEM_GUEST => (None, true),
            VIRTIO_GPU_BLOB_MEM_HOST3D | VIRTIO_GPU_BLOB_MEM_HOST3D_GUEST => {
                if !self.caps.blob_host {
                    return Err(GpuError::NotOffered("host blobs"));
                }
                self.check_context(ctx_id)?;
                let pages = (
                    Use::HostBlob,
                    budget::host_blob(args.size, self.map_alignment),
                );
                if args.blob_mem == VIRTIO_GPU_BLOB_MEM_HOST3D {
                    if !entries.is_empty() {
                        debug!(
                            "HOST3D blob {resource_id}: {} entries ignored",
                            entries.len()
                        );
                    }
                    (Some(pages), false)
                } else {
                    (Some(pages), true)
                }
            }
            other => return Err(GpuError::InvalidParameter(format!("blob_mem {other}"))),
        };
        let mut charges = self.reserve_resource(resource_id, host_pages)?;
        let backing = if with_backing {
            match self.blob_backing(resource_id, &args, entries, mem) {
                Ok((meta, backing)) => {
                    charges.backing = Some(meta);
                    Some(backing)
                }
                Err(e) => {
                    self.release_resource_charges(charges);
                    return Err(e);
                }
            }
        } else {
            None
        };
        // Made in the context the command names (host blobs always name one); a guest blob may
        // name none, and without 3D there are no contexts to name.
        let created = if ctx_id != 0 && self.caps.three_d {
            match self.contexts.get_mut(&ctx_id) {
                Some(c) => c.render.create_blob(resource_id, &args, backing),
                None => Err(RendererError::InvalidContextId(ctx_id)),
            }
        } else {
            self.renderer.create_blob(resource_id, &args, backing)
        };
        if let Err(e) = created {
            self.release_resource_charges(charges);
            return Err(e.into());
        }
        // A HOST3D blob of a resource the context's stream made (VIRGL_CCMD_PIPE_RESOURCE_CREATE)
        // is that resource's storage: it keeps the larger of that charge and its pages' charge.
        if args.blob_mem == VIRTIO_GPU_BLOB_MEM_HOST3D {
            if let Some(pipe) = self.take_pipe_resource(ctx_id, args.blob_id) {
                match charges.storage.take() {
                    Some(pages) if pages.bytes() >= pipe.bytes() => {
                        self.budget.release(pipe);
                        charges.storage = Some(pages);
                    }
                    pages => {
                        self.budget.release_opt(pages);
                        charges.storage = Some(pipe);
                    }
                }
            }
        }
        self.resources.insert(
            resource_id,
            ResourceState {
                width: 0,
                height: 0,
                charges,
                blob_size: Some(args.size),
                blob_mem: args.blob_mem,
                blob_flags: args.blob_flags,
                mapped_at: None,
                uuid: None,
                create_3d: None,
                backing_len: None,
            },
        );
        Ok(Response::OkNoData)
    }

    /// The backing of a new blob: its entry list charged, then built from `entries` and checked
    /// to cover the blob.
    fn blob_backing(
        &mut self,
        resource_id: u32,
        args: &CreateBlob,
        entries: Vec<protocol::MemEntry>,
        mem: &GuestMemoryMmap,
    ) -> GpuResult<(Charge, GuestBacking)> {
        let meta = self.charge_backing(entries.len())?;
        match GuestBacking::new(mem.clone(), entries) {
            Ok(b) if b.len() >= args.size => Ok((meta, b)),
            Ok(b) => {
                self.budget.release(meta);
                Err(GpuError::InvalidParameter(format!(
                    "blob {resource_id} of {} bytes with {} bytes of backing",
                    args.size,
                    b.len()
                )))
            }
            Err(e) => {
                self.budget.release(meta);
                Err(e.into())
            }
        }
    }

    /// RESOURCE_MAP_BLOB: the checks of the module doc, then the renderer's export is mapped
    /// into the host-visible region through the [`SharedMemoryMapper`].
    pub(super) fn map_blob(&mut self, resource_id: u32, offset: u64) -> GpuResult<Response> {
        let res = self.resource(resource_id)?;
        let size = res.blob_size.ok_or_else(|| {
            GpuError::InvalidParameter(format!("resource {resource_id} is not a blob"))
        })?;
        if res.blob_mem == VIRTIO_GPU_BLOB_MEM_GUEST {
            return Err(GpuError::InvalidParameter(format!(
                "blob {resource_id} is a guest blob (guest memory is mapped by the guest)"
            )));
        }
        if res.blob_flags & VIRTIO_GPU_BLOB_FLAG_USE_MAPPABLE == 0 {
            return Err(GpuError::InvalidParameter(format!(
                "blob {resource_id} was not created MAPPABLE"
            )));
        }
        if let Some(at) = res.mapped_at {
            return Err(GpuError::InvalidParameter(format!(
                "blob {resource_id} is already mapped at {at:#x}"
            )));
        }
        if !self.host_visible_region() {
            return Err(GpuError::NotOffered(
                "blob mapping (no host-visible shared memory region)",
            ));
        }
        let region = self.config.host_visible_size;
        let align = self.map_alignment;
        if offset % align != 0 {
            return Err(GpuError::InvalidParameter(format!(
                "map offset {offset:#x} is not aligned to {align:#x}"
            )));
        }
        let len = size
            .checked_next_multiple_of(align)
            .filter(|&l| l <= region)
            .ok_or_else(|| {
                GpuError::InvalidParameter(format!(
                    "blob {resource_id} of {size} bytes does not fit the {region}-byte region"
                ))
            })?;
        let end = offset
            .checked_add(len)
            .filter(|&e| e <= region)
            .ok_or_else(|| {
                GpuError::InvalidParameter(format!(
                    "mapping {offset:#x}+{len:#x} outside the {region:#x}-byte region"
                ))
            })?;
        // The live mapping starting last before `end` is the only one that can overlap.
        if let Some((&at, m)) = self.blob_maps.range(..end).next_back() {
            if at + m.len > offset {
                return Err(GpuError::InvalidParameter(format!(
                    "mapping {offset:#x}+{len:#x} overlaps blob {} at {at:#x}+{:#x}",
                    m.resource_id, m.len
                )));
            }
        }
        if self.blob_maps.len() >= MAX_BLOB_MAPPINGS {
            return Err(GpuError::Renderer(RendererError::OutOfMemory(format!(
                "{MAX_BLOB_MAPPINGS} blobs mapped"
            ))));
        }
        let map_info = self.renderer.map_info(resource_id)? & VIRTIO_GPU_MAP_CACHE_MASK;
        let exported = self.renderer.export_blob(resource_id)?;
        debug!(
            "blob {resource_id}: exported as {:?} (memory at {:#x}), mapping {len:#x} bytes at \
             {offset:#x}",
            exported.kind, exported.offset
        );
        // The memory of a host driver's handle can start after a header (export.rs): the
        // mapping starts there, page-aligned as mmap needs, and the file must cover it.
        let fd_end = (exported.offset % host_page_size() == 0)
            .then(|| exported.offset.checked_add(len))
            .flatten()
            .ok_or_else(|| {
                GpuError::Renderer(RendererError::Library(format!(
                    "blob {resource_id}: its memory starts at {:#x}, not page-aligned",
                    exported.offset
                )))
            })?;
        check_export_covers(exported.fd.as_fd(), fd_end).map_err(|e| {
            GpuError::Renderer(RendererError::Library(format!(
                "blob {resource_id}: exported handle does not cover the mapping: {e}"
            )))
        })?;
        let shm = self
            .shm
            .as_mut()
            .ok_or(GpuError::NotOffered("blob mapping (no mapper)"))?;
        shm.map(exported.fd.as_fd(), exported.offset, offset, len, true)
            .map_err(|e| {
                GpuError::Renderer(RendererError::Library(format!(
                    "the frontend did not map blob {resource_id}: {e}"
                )))
            })?;
        self.blob_maps.insert(offset, BlobMap { resource_id, len });
        if let Some(r) = self.resources.get_mut(&resource_id) {
            r.mapped_at = Some(offset);
        }
        Ok(Response::OkMapInfo(map_info))
    }

    /// RESOURCE_UNMAP_BLOB (and RESOURCE_UNREF of a mapped blob): SHMEM_UNMAP of its range.
    pub(super) fn unmap_blob(&mut self, resource_id: u32) -> GpuResult<Response> {
        let res = self.resource(resource_id)?;
        if res.blob_size.is_none() {
            return Err(GpuError::InvalidParameter(format!(
                "resource {resource_id} is not a blob"
            )));
        }
        let offset = res.mapped_at.ok_or_else(|| {
            GpuError::InvalidParameter(format!("blob {resource_id} is not mapped"))
        })?;
        if let Some(r) = self.resources.get_mut(&resource_id) {
            r.mapped_at = None;
        }
        let Some(m) = self.blob_maps.remove(&offset) else {
            return Ok(Response::OkNoData);
        };
        if let Some(shm) = self.shm.as_mut() {
            shm.unmap(offset, m.len).map_err(|e| {
                GpuError::Renderer(RendererError::Library(format!(
                    "the frontend did not unmap blob {resource_id}: {e}"
                )))
            })?;
        }
        Ok(Response::OkNoData)
    }
}

/// Refuses to hand the frontend a shared-memory file smaller than the mapping it is asked to make:
/// pages past the end of a memfd/shm file would fault (SIGBUS) in the frontend when the guest
/// touches them. The guest's blob size is checked by the renderer library; this does not rely on
/// it. Handles that are not regular files (dmabufs, devices) have no meaningful size and pass.
fn check_export_covers(fd: BorrowedFd<'_>, len: u64) -> std::io::Result<()> {
    let meta = std::fs::File::from(fd.try_clone_to_owned()?).metadata()?;
    if meta.is_file() {
        let covered = meta
            .len()
            .checked_next_multiple_of(4096)
            .unwrap_or(u64::MAX);
        if covered < len {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("file of {} bytes, mapping of {len} bytes", meta.len()),
            ));
        }
    }
    Ok(())
}

/// The host's page size, [`DEFAULT_MAP_ALIGNMENT`] if it cannot be read.
pub(super) fn host_page_size() -> u64 {
    // SAFETY: sysconf only reads a system value.
    let v = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(v)
        .ok()
        .filter(|v| v.is_power_of_two())
        .unwrap_or(DEFAULT_MAP_ALIGNMENT)
}

#[cfg(test)]
mod tests {
    use crate::gpu::test_support::*;
    use crate::gpu::GpuConfig;
    use crate::limits::{
        BACKING_ENTRY_BYTES, BACKING_RECORD_BYTES, CONTEXT_RECORD_BYTES, RESOURCE_RECORD_BYTES,
    };
    use crate::protocol::tests::{hdr, le32s};
    use crate::protocol::*;

    #[test]
    fn map_blob_checks_the_region_and_maps_through_the_mapper() {
        let (mut h, log) = host_blob_harness(REGION);
        let ok = VIRTIO_GPU_RESP_OK_NODATA;
        let inval = VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER;
        assert_eq!(
            h.cmd(&create_blob_cmd(
                10,
                VIRTIO_GPU_BLOB_MEM_HOST3D,
                MAPPABLE,
                5000,
                &[]
            )),
            ok
        );
        // No mapper yet (no backend-request channel): ERR_UNSPEC, nothing asked.
        assert_eq!(h.cmd(&map_cmd(10, 0x1000)), VIRTIO_GPU_RESP_ERR_UNSPEC);
        install(&mut h, &log);
        assert!(h.gpu.host_visible_region());
        // Blobs that cannot be mapped.
        assert_eq!(
            h.cmd(&create_blob_cmd(
                11,
                VIRTIO_GPU_BLOB_MEM_GUEST,
                MAPPABLE,
                4096,
                &[(DATA_BASE, 4096)]
            )),
            ok
        );
        assert_eq!(
            h.cmd(&create_blob_cmd(
                12,
                VIRTIO_GPU_BLOB_MEM_HOST3D,
                0,
                4096,
                &[]
            )),
            ok
        );
        assert_eq!(h.create_2d(14, VIRTIO_GPU_FORMAT_B8G8R8X8_UNORM, 4, 4), ok);
        assert_eq!(h.cmd(&map_cmd(11, 0)), inval, "guest blob");
        assert_eq!(h.cmd(&map_cmd(12, 0)), inval, "not MAPPABLE");
        assert_eq!(h.cmd(&map_cmd(14, 0)), inval, "not a blob");
        assert_eq!(
            h.cmd(&map_cmd(999, 0)),
            VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID
        );
        // Bad offsets: unaligned, past the end, overflowing.
        assert_eq!(h.cmd(&map_cmd(10, 0x800)), inval);
        assert_eq!(
            h.cmd(&map_cmd(10, REGION - 0x1000)),
            inval,
            "8 KiB at the last page"
        );
        assert_eq!(h.cmd(&map_cmd(10, REGION)), inval);
        assert_eq!(h.cmd(&map_cmd(10, !0xfff)), inval);
        assert!(log.borrow().calls.is_empty());
        // A good one: the size rounded up to pages, map info masked to the cache type.
        let r = h.send(&map_cmd(10, 0x1000));
        assert_eq!(h.resp_type(&r), VIRTIO_GPU_RESP_OK_MAP_INFO);
        let body = h.resp(&r, 32);
        assert_eq!(
            u32::from_le_bytes(body[24..28].try_into().unwrap()),
            VIRTIO_GPU_MAP_CACHE_CACHED
        );
        assert_eq!(
            log.borrow().calls,
            vec![ShmCall::Map {
                offset: 0x1000,
                len: 0x2000,
                writable: true
            }]
        );
        assert_eq!(h.cmd(&map_cmd(10, 0x8000)), inval, "already mapped");
        // Overlaps with 0x1000..0x3000 are refused; neighbours are fine.
        assert_eq!(
            h.cmd(&create_blob_cmd(
                13,
                VIRTIO_GPU_BLOB_MEM_HOST3D,
                MAPPABLE,
                4096,
                &[]
            )),
            ok
        );
        assert_eq!(h.cmd(&map_cmd(13, 0x2000)), inval, "inside");
        assert_eq!(
            h.cmd(&create_blob_cmd(
                15,
                VIRTIO_GPU_BLOB_MEM_HOST3D_GUEST,
                MAPPABLE,
                0x4000,
                &[(DATA_BASE, 0x4000)]
            )),
            ok
        );
        assert_eq!(h.cmd(&map_cmd(15, 0)), inval, "covers it");
        let r = h.send(&map_cmd(13, 0));
        assert_eq!(h.resp_type(&r), VIRTIO_GPU_RESP_OK_MAP_INFO);
        let r = h.send(&map_cmd(15, 0x3000));
        assert_eq!(h.resp_type(&r), VIRTIO_GPU_RESP_OK_MAP_INFO);
        // Unmap, and unmap again.
        log.borrow_mut().calls.clear();
        assert_eq!(h.cmd(&unmap_cmd(10)), ok);
        assert_eq!(h.cmd(&unmap_cmd(10)), inval);
        assert_eq!(h.cmd(&unmap_cmd(12)), inval);
        assert_eq!(
            log.borrow().calls,
            vec![ShmCall::Unmap {
                offset: 0x1000,
                len: 0x2000
            }]
        );
        // The freed range can be used again.
        let r = h.send(&map_cmd(10, 0x1000));
        assert_eq!(h.resp_type(&r), VIRTIO_GPU_RESP_OK_MAP_INFO);
        // Unref of a mapped blob unmaps it first.
        log.borrow_mut().calls.clear();
        assert_eq!(
            h.cmd(&req(VIRTIO_GPU_CMD_RESOURCE_UNREF, &le32s(&[13, 0]))),
            ok
        );
        assert_eq!(
            log.borrow().calls,
            vec![ShmCall::Unmap {
                offset: 0,
                len: 0x1000
            }]
        );
        // A guest reset unmaps what is left.
        log.borrow_mut().calls.clear();
        h.gpu.reset();
        let mut calls = log.borrow().calls.clone();
        calls.sort_by_key(|c| match c {
            ShmCall::Map { offset, .. } | ShmCall::Unmap { offset, .. } => *offset,
        });
        assert_eq!(
            calls,
            vec![
                ShmCall::Unmap {
                    offset: 0x1000,
                    len: 0x2000
                },
                ShmCall::Unmap {
                    offset: 0x3000,
                    len: 0x4000
                }
            ]
        );
    }

    /// A host driver's handle whose memory starts after a header (lavapipe's exported Vulkan
    /// memory) is mapped from there: mapped from 0, the guest saw its memory 4 KiB off.
    #[test]
    fn a_driver_handle_is_mapped_from_where_its_memory_starts() {
        let (mut h, log) = host_blob_harness(REGION);
        install(&mut h, &log);
        assert_eq!(
            h.cmd(&create_blob_cmd(
                MESA_FILE_BLOB,
                VIRTIO_GPU_BLOB_MEM_HOST3D,
                MAPPABLE,
                8192,
                &[]
            )),
            VIRTIO_GPU_RESP_OK_NODATA
        );
        let r = h.send(&map_cmd(MESA_FILE_BLOB, 0x2000));
        assert_eq!(h.resp_type(&r), VIRTIO_GPU_RESP_OK_MAP_INFO);
        assert_eq!(log.borrow().fd_offsets, vec![4096]);
        assert_eq!(
            log.borrow().calls,
            vec![ShmCall::Map {
                offset: 0x2000,
                len: 8192,
                writable: true
            }]
        );
    }

    #[test]
    fn an_exported_file_shorter_than_the_mapping_is_not_mapped() {
        let (mut h, log) = host_blob_harness(REGION);
        install(&mut h, &log);
        // The blob claims 64 KiB; the renderer hands out a 4 KiB file: the frontend would fault
        // on the pages past its end, so nothing is sent to it.
        assert_eq!(
            h.cmd(&create_blob_cmd(
                SHORT_FILE_BLOB,
                VIRTIO_GPU_BLOB_MEM_HOST3D,
                MAPPABLE,
                65536,
                &[]
            )),
            VIRTIO_GPU_RESP_OK_NODATA
        );
        assert_eq!(
            h.cmd(&map_cmd(SHORT_FILE_BLOB, 0)),
            VIRTIO_GPU_RESP_ERR_UNSPEC
        );
        assert!(log.borrow().calls.is_empty());
        // A blob the file covers maps.
        assert_eq!(
            h.cmd(&create_blob_cmd(
                SHORT_FILE_BLOB + 1,
                VIRTIO_GPU_BLOB_MEM_HOST3D,
                MAPPABLE,
                4096,
                &[]
            )),
            VIRTIO_GPU_RESP_OK_NODATA
        );
        let r = h.send(&map_cmd(SHORT_FILE_BLOB + 1, 0));
        assert_eq!(h.resp_type(&r), VIRTIO_GPU_RESP_OK_MAP_INFO);
    }

    #[test]
    fn failed_exports_and_refused_maps_leave_no_mapping() {
        let (mut h, log) = host_blob_harness(REGION);
        install(&mut h, &log);
        let ok = VIRTIO_GPU_RESP_OK_NODATA;
        assert_eq!(
            h.cmd(&create_blob_cmd(
                NO_EXPORT,
                VIRTIO_GPU_BLOB_MEM_HOST3D,
                MAPPABLE,
                4096,
                &[]
            )),
            ok
        );
        assert_eq!(
            h.cmd(&create_blob_cmd(
                20,
                VIRTIO_GPU_BLOB_MEM_HOST3D,
                MAPPABLE,
                4096,
                &[]
            )),
            ok
        );
        assert_eq!(h.cmd(&map_cmd(NO_EXPORT, 0)), VIRTIO_GPU_RESP_ERR_UNSPEC);
        log.borrow_mut().refuse = true;
        assert_eq!(h.cmd(&map_cmd(20, 0)), VIRTIO_GPU_RESP_ERR_UNSPEC);
        log.borrow_mut().refuse = false;
        assert!(log.borrow().calls.is_empty());
        // Offset 0 is still free, and the refused blob is not mapped.
        assert_eq!(h.cmd(&unmap_cmd(20)), VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
        let r = h.send(&map_cmd(20, 0));
        assert_eq!(h.resp_type(&r), VIRTIO_GPU_RESP_OK_MAP_INFO);
        // A new connection's mapper starts empty: the mapping is forgotten, not unmapped.
        log.borrow_mut().calls.clear();
        h.gpu.set_shared_memory(None);
        assert!(!h.gpu.host_visible_region());
        assert_eq!(h.cmd(&map_cmd(20, 0)), VIRTIO_GPU_RESP_ERR_UNSPEC);
        install(&mut h, &log);
        let r = h.send(&map_cmd(20, 0));
        assert_eq!(h.resp_type(&r), VIRTIO_GPU_RESP_OK_MAP_INFO);
        assert_eq!(log.borrow().calls.len(), 1);
    }

    #[test]
    fn no_region_no_mapping() {
        let (mut h, log) = host_blob_harness(0);
        install(&mut h, &log);
        assert!(!h.gpu.host_visible_region());
        assert_eq!(
            h.cmd(&create_blob_cmd(
                10,
                VIRTIO_GPU_BLOB_MEM_HOST3D,
                MAPPABLE,
                4096,
                &[]
            )),
            VIRTIO_GPU_RESP_OK_NODATA
        );
        assert_eq!(h.cmd(&map_cmd(10, 0)), VIRTIO_GPU_RESP_ERR_UNSPEC);
        assert!(log.borrow().calls.is_empty());
    }

    #[test]
    fn a_blob_is_made_in_the_context_its_command_names() {
        let in_ctx = |id: u32, mem: u32, ctx: u32| {
            let mut cmd = create_blob_cmd(id, mem, 0, 4096, &[(DATA_BASE, 4096)]);
            if mem == VIRTIO_GPU_BLOB_MEM_HOST3D {
                cmd = create_blob_cmd(id, mem, 0, 4096, &[]);
            }
            cmd[16..20].copy_from_slice(&ctx.to_le_bytes());
            cmd
        };
        // 3D: context 1 exists.
        let (mut h, _) = host_blob_harness(REGION);
        let ok = VIRTIO_GPU_RESP_OK_NODATA;
        let no_ctx = VIRTIO_GPU_RESP_ERR_INVALID_CONTEXT_ID;
        assert_eq!(h.cmd(&in_ctx(1, VIRTIO_GPU_BLOB_MEM_GUEST, 1)), ok);
        assert_eq!(h.cmd(&in_ctx(2, VIRTIO_GPU_BLOB_MEM_GUEST, 0)), ok);
        assert_eq!(h.cmd(&in_ctx(3, VIRTIO_GPU_BLOB_MEM_GUEST, 2)), no_ctx);
        assert_eq!(h.cmd(&in_ctx(3, VIRTIO_GPU_BLOB_MEM_HOST3D, 1)), ok);
        assert_eq!(h.cmd(&in_ctx(4, VIRTIO_GPU_BLOB_MEM_HOST3D, 0)), no_ctx);
        assert_eq!(h.cmd(&in_ctx(4, VIRTIO_GPU_BLOB_MEM_HOST3D, 2)), no_ctx);
        // The refused ids were not taken.
        assert_eq!(h.cmd(&in_ctx(4, VIRTIO_GPU_BLOB_MEM_GUEST, 0)), ok);
        // Without 3D there are no contexts: the id a guest blob names means nothing.
        let mut soft = Harness::software();
        assert_eq!(soft.cmd(&in_ctx(1, VIRTIO_GPU_BLOB_MEM_GUEST, 7)), ok);
    }

    /// Host blobs are charged whole pages, guest blobs their record and entry list; refused at
    /// the limit, given back on UNREF and reset.
    #[test]
    fn blobs_are_charged_whole_pages_and_entry_lists() {
        // The harness's context, two records and 12 KiB of pages.
        let ctx = CONTEXT_RECORD_BYTES;
        let limit = ctx + 2 * RESOURCE_RECORD_BYTES + 4096 + 8192;
        let (mut h, _) = host_blob_harness_with(GpuConfig {
            max_hostmem: limit,
            ..GpuConfig::default()
        });
        h.gpu.map_alignment = 4096;
        let host = VIRTIO_GPU_BLOB_MEM_HOST3D;
        assert_eq!(
            h.cmd(&create_blob_cmd(1, host, 0, 1, &[])),
            VIRTIO_GPU_RESP_OK_NODATA
        );
        assert_eq!(h.budget_used(), ctx + RESOURCE_RECORD_BYTES + 4096);
        assert_eq!(
            h.cmd(&create_blob_cmd(2, host, 0, 8193, &[])),
            VIRTIO_GPU_RESP_ERR_OUT_OF_MEMORY
        );
        assert_eq!(
            h.cmd(&create_blob_cmd(2, host, 0, 8192, &[])),
            VIRTIO_GPU_RESP_OK_NODATA
        );
        assert_eq!(h.budget_used(), limit);
        assert_eq!(h.unref(1), VIRTIO_GPU_RESP_OK_NODATA);
        assert_eq!(h.budget_used(), ctx + RESOURCE_RECORD_BYTES + 8192);
        // A guest blob: its record and its entry list.
        let guest = VIRTIO_GPU_BLOB_MEM_GUEST;
        let entries = [(DATA_BASE, 4096), (DATA_BASE + 4096, 4096)];
        assert_eq!(
            h.cmd(&create_blob_cmd(3, guest, 0, 8192, &entries)),
            VIRTIO_GPU_RESP_OK_NODATA
        );
        assert_eq!(
            h.budget_used(),
            ctx + 2 * RESOURCE_RECORD_BYTES + 8192 + 2 * BACKING_ENTRY_BYTES + BACKING_RECORD_BYTES
        );
        // A backing too short for its blob is not charged.
        assert_eq!(h.unref(3), VIRTIO_GPU_RESP_OK_NODATA);
        assert_eq!(
            h.cmd(&create_blob_cmd(3, guest, 0, 8193, &entries)),
            VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER
        );
        assert_eq!(h.budget_used(), ctx + RESOURCE_RECORD_BYTES + 8192);
        h.gpu.reset();
        assert_eq!(h.budget_used(), 0);
    }

    /// A SUBMIT_3D stream's `VIRGL_CCMD_PIPE_RESOURCE_CREATE` is charged before the library
    /// sees it (the fuzzer's 3.9 GB buffer is refused), its HOST3D blob takes the charge over,
    /// and what no blob took goes with the context.
    #[test]
    fn a_stream_s_pipe_resources_are_charged_and_taken_by_their_blob() {
        let ctx = CONTEXT_RECORD_BYTES;
        let (mut h, _) = host_blob_harness_with(GpuConfig {
            max_hostmem: 1 << 20,
            ..GpuConfig::default()
        });
        h.gpu.contexts.get_mut(&1).unwrap().virgl_stream = true;
        let submit = |h: &mut Harness, args: [u32; 11]| {
            let mut words = vec![(11 << 16) | 48];
            words.extend(args);
            let stream: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
            let mut cmd = hdr(VIRTIO_GPU_CMD_SUBMIT_3D, 0, 0, 1, 0);
            cmd.extend(le32s(&[stream.len() as u32, 0]));
            cmd.extend(stream);
            h.cmd(&cmd)
        };
        // The fuzzer's buffer: 0xea010f01 bytes wide.
        let huge = [
            0,
            0x3d,
            0x10,
            0xea01_0f01,
            0x0101_0100,
            0x0101_0100,
            0,
            0,
            0,
            6,
            1,
        ];
        assert_eq!(submit(&mut h, huge), VIRTIO_GPU_RESP_ERR_OUT_OF_MEMORY);
        assert_eq!(h.budget_used(), ctx);
        // A 256x256 RGBA texture (format 1: 4 bytes a texel) for blob 7, and a 16 KiB buffer
        // (format 64, R8) for blob 8.
        let texture = 256 * 256 * 4;
        assert_eq!(
            submit(&mut h, [2, 1, 2, 256, 256, 1, 1, 0, 0, 0, 7]),
            VIRTIO_GPU_RESP_OK_NODATA
        );
        assert_eq!(
            submit(&mut h, [0, 64, 0x10, 16384, 1, 1, 1, 0, 0, 0, 8]),
            VIRTIO_GPU_RESP_OK_NODATA
        );
        let buffer = 16384;
        let pending = 2 * RESOURCE_RECORD_BYTES + texture + buffer;
        assert_eq!(h.budget_used(), ctx + pending);
        // Blob 7's resource, a HOST3D blob of one page: it keeps the texture's charge.
        let host = VIRTIO_GPU_BLOB_MEM_HOST3D;
        let mut blob = create_blob_cmd(1, host, 0, 4096, &[]);
        blob[40..48].copy_from_slice(&7u64.to_le_bytes());
        assert_eq!(h.cmd(&blob), VIRTIO_GPU_RESP_OK_NODATA);
        assert_eq!(h.budget_used(), ctx + pending + RESOURCE_RECORD_BYTES);
        assert_eq!(h.unref(1), VIRTIO_GPU_RESP_OK_NODATA);
        assert_eq!(
            h.budget_used(),
            ctx + RESOURCE_RECORD_BYTES + buffer,
            "the blob took blob 7's charge"
        );
        // Blob 8 is never taken: the context's end gives its charge back.
        let mut destroy = hdr(VIRTIO_GPU_CMD_CTX_DESTROY, 0, 0, 1, 0);
        destroy.extend(le32s(&[]));
        assert_eq!(h.cmd(&destroy), VIRTIO_GPU_RESP_OK_NODATA);
        assert_eq!(h.budget_used(), 0);
    }
}
