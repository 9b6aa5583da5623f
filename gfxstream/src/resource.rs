//! Resources: creation, backing, transfers, blobs (map, export, map info, Vulkan info), info.

use std::os::fd::{FromRawFd, OwnedFd};
use std::ptr::{self, NonNull};
use std::sync::Arc;

use gfxstream_sys as sys;

use crate::error::{check, Error, Result};
use crate::protocol::{
    bind, format, target, MAX_BACKING_BYTES, MAX_BACKING_ENTRIES, MAX_DIMENSION,
};
use crate::renderer::{Gfxstream, Shared};

/// How the library stores a classic resource (its `GetResourceType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Storage {
    /// `PIPE_BUFFER` with exactly `bind::CUSTOM`: a host pipe.
    Pipe,
    /// `R8_UNORM` with `bind::LINEAR` and none of the image binds: a GL buffer.
    Buffer,
    /// Everything else: a GL colour buffer.
    ColorBuffer,
}

fn storage(args: &ResourceCreateArgs) -> Storage {
    let image_binds = bind::SAMPLER_VIEW | bind::RENDER_TARGET | bind::SCANOUT | bind::CURSOR;
    if args.target == target::PIPE_BUFFER && args.bind == bind::CUSTOM {
        Storage::Pipe
    } else if args.format == format::R8_UNORM
        && args.bind & image_binds == 0
        && args.bind & bind::LINEAR != 0
    {
        Storage::Buffer
    } else {
        Storage::ColorBuffer
    }
}

/// Bytes per pixel of the colour-buffer formats whose transfers this binding allows (the
/// library's own format table).
fn bytes_per_pixel(virgl_format: u32) -> Option<u64> {
    match virgl_format {
        format::B8G8R8A8_UNORM
        | format::B8G8R8X8_UNORM
        | format::R8G8B8A8_UNORM
        | format::R8G8B8X8_UNORM => Some(4),
        format::B5G6R5_UNORM => Some(2),
        format::R8_UNORM => Some(1),
        _ => None,
    }
}

/// The bytes the library reads or writes from its staging copy on a transfer: the whole image
/// (rows padded to 4 bytes, to stay on the safe side of GL's default pack alignment) for a colour
/// buffer, `width * height` for a buffer, `width` for a pipe. `None` for a colour-buffer format
/// of unknown size (transfers refused).
fn staging_size(args: &ResourceCreateArgs) -> Option<u64> {
    let (w, h) = (u64::from(args.width), u64::from(args.height));
    match storage(args) {
        Storage::Pipe => Some(w),
        Storage::Buffer => w.checked_mul(h),
        Storage::ColorBuffer => {
            let row = w
                .checked_mul(bytes_per_pixel(args.format)?)?
                .checked_add(3)?
                & !3;
            row.checked_mul(h)
        }
    }
}

/// `stream_renderer_resource_create_args` less the id: a classic (non-blob) resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ResourceCreateArgs {
    /// Gallium target ([`crate::target`]).
    pub target: u32,
    /// Virgl format ([`crate::format`]).
    pub format: u32,
    /// Virgl bind flags ([`crate::bind`]).
    pub bind: u32,
    /// Width in texels (bytes for buffers).
    pub width: u32,
    /// Height.
    pub height: u32,
    /// Depth.
    pub depth: u32,
    /// Array size.
    pub array_size: u32,
    /// Last mip level.
    pub last_level: u32,
    /// Sample count.
    pub nr_samples: u32,
    /// Resource flags.
    pub flags: u32,
}

/// A region of a resource to transfer, in texels (`stream_renderer_box`). The library uses
/// only `x`, `y`, `w`, `h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TransferBox {
    /// Left.
    pub x: u32,
    /// Top.
    pub y: u32,
    /// Front.
    pub z: u32,
    /// Width.
    pub w: u32,
    /// Height.
    pub h: u32,
    /// Depth.
    pub d: u32,
}

/// Blob memory types (`STREAM_BLOB_MEM_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum BlobMem {
    /// Guest memory.
    Guest = 1,
    /// Host memory.
    Host3d = 2,
    /// Host memory shadowed in the guest.
    Host3dGuest = 3,
}

/// Blob flags (`STREAM_BLOB_FLAG_*`).
pub mod blob_flags {
    /// The guest may map it.
    pub const USE_MAPPABLE: u32 = 1;
    /// It may be shared.
    pub const USE_SHAREABLE: u32 = 2;
    /// It may be shared with other devices.
    pub const USE_CROSS_DEVICE: u32 = 4;
    /// Not supported by this binding (the library needs a handle with it).
    pub const CREATE_GUEST_HANDLE: u32 = 8;
    pub(crate) const ALLOWED: u32 = USE_MAPPABLE | USE_SHAREABLE | USE_CROSS_DEVICE;
}

/// The arguments of a blob ([`crate::Context::create_blob`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobArgs {
    /// Memory type.
    pub mem: BlobMem,
    /// [`blob_flags`].
    pub flags: u32,
    /// 0 for a host ring blob, else the id the context's commands prepared.
    pub blob_id: u64,
    /// Size in bytes, 1..=[`crate::MAX_BLOB_SIZE`].
    pub size: u64,
}

/// Memory that backs a resource. The library keeps the region addresses and reads or writes
/// them during transfers, on the thread that calls the transfer, until the backing is detached
/// or the resource dropped; the resource owns the value for that long.
///
/// # Safety
///
/// Every region [`Self::regions`] returns must be valid for reads and writes of its full length,
/// at the same address, for as long as the value is alive, and nothing else may access it in a
/// way that conflicts with the library's accesses.
pub unsafe trait BackingMemory: Send {
    /// The regions, in order (called once, when the backing is attached).
    fn regions(&mut self) -> Vec<(NonNull<u8>, usize)>;
}

// SAFETY: the heap buffer of a `Vec` does not move while the `Vec` is not resized, and once
// attached the vector is owned by the resource and not touched again.
unsafe impl BackingMemory for Vec<u8> {
    fn regions(&mut self) -> Vec<(NonNull<u8>, usize)> {
        NonNull::new(self.as_mut_ptr())
            .map(|p| vec![(p, self.len())])
            .unwrap_or_default()
    }
}

/// How the host maps a blob (`STREAM_RENDERER_MAP_CACHE_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapCaching {
    /// `MAP_CACHE_NONE`.
    None,
    /// `MAP_CACHE_CACHED`.
    Cached,
    /// `MAP_CACHE_UNCACHED`.
    Uncached,
    /// `MAP_CACHE_WC`.
    WriteCombined,
}

impl MapCaching {
    /// The virtio-gpu `map_info` value.
    pub fn map_info(self) -> u32 {
        match self {
            MapCaching::None => sys::STREAM_RENDERER_MAP_CACHE_NONE,
            MapCaching::Cached => sys::STREAM_RENDERER_MAP_CACHE_CACHED,
            MapCaching::Uncached => sys::STREAM_RENDERER_MAP_CACHE_UNCACHED,
            MapCaching::WriteCombined => sys::STREAM_RENDERER_MAP_CACHE_WC,
        }
    }
}

/// What kind of handle an exported blob is (`STREAM_HANDLE_TYPE_MEM_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandleKind {
    /// An opaque (Vulkan) memory fd.
    OpaqueFd,
    /// A dmabuf.
    Dmabuf,
    /// A shared-memory fd (memfd), mappable with `mmap`.
    Shm,
    /// Another value the library used.
    Other(u32),
}

impl HandleKind {
    fn from_raw(raw: u32) -> HandleKind {
        match raw {
            sys::STREAM_HANDLE_TYPE_MEM_OPAQUE_FD => HandleKind::OpaqueFd,
            sys::STREAM_HANDLE_TYPE_MEM_DMABUF => HandleKind::Dmabuf,
            sys::STREAM_HANDLE_TYPE_MEM_SHM => HandleKind::Shm,
            other => HandleKind::Other(other),
        }
    }
}

/// A blob exported as a file descriptor (it can be exported once: the library hands the
/// descriptor over).
#[derive(Debug)]
pub struct ExportedBlob {
    /// The descriptor, now owned by the caller.
    pub fd: OwnedFd,
    /// What it is.
    pub kind: HandleKind,
}

/// `stream_renderer_vulkan_info`: where a blob's memory lives in host Vulkan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VulkanInfo {
    /// The memory type index.
    pub memory_index: u32,
    /// `VkPhysicalDeviceIDProperties::deviceUUID`.
    pub device_uuid: [u8; 16],
    /// `VkPhysicalDeviceIDProperties::driverUUID`.
    pub driver_uuid: [u8; 16],
}

/// `stream_renderer_resource_info`: layout of a classic resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResourceInfo {
    /// Virgl format.
    pub virgl_format: u32,
    /// Width.
    pub width: u32,
    /// Height.
    pub height: u32,
    /// Depth.
    pub depth: u32,
    /// Flags.
    pub flags: u32,
    /// Row stride of the linear layout in bytes.
    pub stride: u32,
    /// DRM fourcc of the format.
    pub drm_fourcc: u32,
}

#[derive(Debug)]
enum Kind {
    Classic(ResourceCreateArgs),
    Blob { size: u64 },
}

/// A gfxstream resource. Dropping it unrefs it (and drops its backing afterwards).
pub struct Resource {
    shared: Arc<Shared>,
    id: u32,
    kind: Kind,
    backing: Option<Box<dyn BackingMemory>>,
    /// Total bytes of `backing` (the size of the library's staging copy).
    backing_len: u64,
}

impl std::fmt::Debug for Resource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resource")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("backed", &self.backing.is_some())
            .finish()
    }
}

impl Gfxstream {
    /// Creates classic resource `id`. Refused: id 0, an id in use (the library would replace
    /// the resource), a zero size, an edge above [`MAX_DIMENSION`], and a buffer whose
    /// `width * height` overflows the library's 32-bit size.
    pub fn create_resource(&self, id: u32, args: &ResourceCreateArgs) -> Result<Resource> {
        if id == 0 {
            return Err(Error::ZeroId("resource"));
        }
        let bad = Error::InvalidDimensions {
            id,
            width: args.width,
            height: args.height,
            depth: args.depth,
        };
        let edges_ok = [args.width, args.height]
            .iter()
            .all(|&e| (1..=MAX_DIMENSION).contains(&e))
            && args.depth <= MAX_DIMENSION;
        let buffer_ok =
            args.target != target::PIPE_BUFFER || args.width.checked_mul(args.height).is_some();
        if !edges_ok || !buffer_ok {
            return Err(bad);
        }
        let mut raw = sys::stream_renderer_resource_create_args {
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
        let mut ids = self.shared().lock();
        if ids.resources.contains(&id) {
            return Err(Error::ResourceExists(id));
        }
        // SAFETY: `raw` is valid for the call; no iovecs.
        let ret = unsafe { sys::stream_renderer_resource_create(&mut raw, ptr::null_mut(), 0) };
        check("stream_renderer_resource_create", ret)?;
        ids.resources.insert(id);
        Ok(Resource {
            shared: Arc::clone(self.shared()),
            id,
            kind: Kind::Classic(*args),
            backing: None,
            backing_len: 0,
        })
    }
}

impl Resource {
    pub(crate) fn new_blob(shared: Arc<Shared>, id: u32, size: u64) -> Resource {
        Resource {
            shared,
            id,
            kind: Kind::Blob { size },
            backing: None,
            backing_len: 0,
        }
    }

    /// The resource id.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The creation arguments of a classic resource (`None` for a blob).
    pub fn create_args(&self) -> Option<&ResourceCreateArgs> {
        match &self.kind {
            Kind::Classic(a) => Some(a),
            Kind::Blob { .. } => None,
        }
    }

    /// The size of a blob (`None` for a classic resource).
    pub fn blob_size(&self) -> Option<u64> {
        match self.kind {
            Kind::Blob { size } => Some(size),
            Kind::Classic(_) => None,
        }
    }

    /// Attaches backing memory (replacing any earlier one). The library allocates a staging
    /// copy as large as the backing: at most [`MAX_BACKING_ENTRIES`] regions and
    /// [`MAX_BACKING_BYTES`] bytes are accepted.
    pub fn attach_backing(&mut self, mut backing: Box<dyn BackingMemory>) -> Result<()> {
        let regions = backing.regions();
        let total = regions
            .iter()
            .try_fold(0u64, |acc, &(_, len)| acc.checked_add(len as u64));
        let bad = Error::InvalidBacking {
            id: self.id,
            entries: regions.len(),
            bytes: total.unwrap_or(u64::MAX),
        };
        let total = match total {
            Some(t) if t > 0 && t <= MAX_BACKING_BYTES && regions.len() <= MAX_BACKING_ENTRIES => t,
            _ => return Err(bad),
        };
        let mut iovecs: Vec<libc::iovec> = regions
            .iter()
            .map(|&(p, len)| libc::iovec {
                iov_base: p.as_ptr().cast(),
                iov_len: len,
            })
            .collect();
        {
            let _lock = self.shared.lock();
            // SAFETY: `iovecs` is valid for the call and the library copies the array; the
            // regions stay valid while `backing` lives (trait contract), which the resource
            // keeps until it detaches or unrefs. The count is bounded above.
            let ret = unsafe {
                sys::stream_renderer_resource_attach_iov(
                    self.id as i32,
                    iovecs.as_mut_ptr(),
                    iovecs.len() as i32,
                )
            };
            check("stream_renderer_resource_attach_iov", ret)?;
        }
        // The previous backing (if any) is dropped only now that the library no longer uses it.
        self.backing = Some(backing);
        self.backing_len = total;
        Ok(())
    }

    /// Detaches the backing and returns it.
    pub fn detach_backing(&mut self) -> Option<Box<dyn BackingMemory>> {
        let backing = self.backing.take()?;
        let _lock = self.shared.lock();
        // SAFETY: the library ignores both out-pointers (null is accepted).
        unsafe {
            sys::stream_renderer_resource_detach_iov(
                self.id as i32,
                ptr::null_mut(),
                ptr::null_mut(),
            )
        };
        Some(backing)
    }

    /// Whether a backing is attached.
    pub fn has_backing(&self) -> bool {
        self.backing.is_some()
    }

    fn check_transfer(&self, bx: &TransferBox, what: &'static str) -> Result<()> {
        let args = match &self.kind {
            Kind::Classic(a) => a,
            Kind::Blob { .. } => return Err(Error::WrongResourceKind { id: self.id, what }),
        };
        if self.backing.is_none() {
            return Err(Error::NoBacking(self.id));
        }
        // The library reads or writes its whole staging copy (as large as the backing) with the
        // resource's full size, before any bounds check of its own: a backing smaller than the
        // resource would overflow it.
        let need = staging_size(args).ok_or(Error::WrongResourceKind {
            id: self.id,
            what: "transfer (format of unknown size)",
        })?;
        if self.backing_len < need {
            return Err(Error::BackingTooSmall {
                id: self.id,
                have: self.backing_len,
                need,
            });
        }
        let fits = |start: u32, len: u32, limit: u32| {
            len > 0 && start.checked_add(len).is_some_and(|end| end <= limit)
        };
        if !fits(bx.x, bx.w, args.width) || !fits(bx.y, bx.h, args.height) {
            return Err(Error::BoxOutOfBounds {
                id: self.id,
                x: bx.x,
                y: bx.y,
                w: bx.w,
                h: bx.h,
                width: args.width,
                height: args.height,
            });
        }
        Ok(())
    }

    fn raw_box(bx: &TransferBox) -> sys::stream_renderer_box {
        sys::stream_renderer_box {
            x: bx.x,
            y: bx.y,
            z: bx.z,
            w: bx.w,
            h: bx.h,
            d: bx.d,
        }
    }

    /// Copies `bx` into the resource, from `src` (laid out like the backing, starting at
    /// `offset`) or, with `None`, from the attached backing. A backing must be attached either
    /// way: the library sizes its staging copy from it.
    pub fn transfer_write(&self, bx: &TransferBox, offset: u64, src: Option<&[u8]>) -> Result<()> {
        self.check_transfer(bx, "transfer")?;
        let mut raw = Self::raw_box(bx);
        let mut iov = src.map(|s| libc::iovec {
            // The library only reads from the iovec in this direction.
            iov_base: s.as_ptr().cast_mut().cast(),
            iov_len: s.len(),
        });
        let (iov_ptr, count) = match iov.as_mut() {
            Some(v) => (v as *mut libc::iovec, 1),
            None => (ptr::null_mut(), 0),
        };
        let _lock = self.shared.lock();
        // SAFETY: `raw` and the optional single iovec (over `src`, borrowed for the call) are
        // valid for the call; the library only reads `src`.
        let ret = unsafe {
            sys::stream_renderer_transfer_write_iov(
                self.id, 0, 0, 0, 0, &mut raw, offset, iov_ptr, count,
            )
        };
        check("stream_renderer_transfer_write_iov", ret)
    }

    /// Copies `bx` out of the resource, into `dst` (laid out like the backing, starting at
    /// `offset`) or, with `None`, into the attached backing.
    pub fn transfer_read(
        &self,
        bx: &TransferBox,
        offset: u64,
        dst: Option<&mut [u8]>,
    ) -> Result<()> {
        self.check_transfer(bx, "transfer")?;
        let mut raw = Self::raw_box(bx);
        let mut iov = dst.map(|d| libc::iovec {
            iov_base: d.as_mut_ptr().cast(),
            iov_len: d.len(),
        });
        let (iov_ptr, count) = match iov.as_mut() {
            Some(v) => (v as *mut libc::iovec, 1),
            None => (ptr::null_mut(), 0),
        };
        let _lock = self.shared.lock();
        // SAFETY: `raw` and the optional single iovec (over `dst`, mutably borrowed for the
        // call) are valid for the call.
        let ret = unsafe {
            sys::stream_renderer_transfer_read_iov(
                self.id, 0, 0, 0, 0, &mut raw, offset, iov_ptr, count,
            )
        };
        check("stream_renderer_transfer_read_iov", ret)
    }

    /// The layout the library reports for a classic resource.
    pub fn info(&self) -> Result<ResourceInfo> {
        let mut raw = sys::stream_renderer_resource_info::default();
        {
            let _lock = self.shared.lock();
            // SAFETY: `raw` is a valid out-pointer.
            let ret = unsafe { sys::stream_renderer_resource_get_info(self.id as i32, &mut raw) };
            check("stream_renderer_resource_get_info", ret)?;
        }
        Ok(ResourceInfo {
            virgl_format: raw.virgl_format,
            width: raw.width,
            height: raw.height,
            depth: raw.depth,
            flags: raw.flags,
            stride: raw.stride,
            drm_fourcc: raw.drm_fourcc as u32,
        })
    }

    /// Posts the resource to the library's display. The work completes on the global fence
    /// ring, asynchronously on a library thread.
    pub fn flush(&self) {
        let _lock = self.shared.lock();
        // SAFETY: plain value.
        unsafe { sys::stream_renderer_flush(self.id) };
    }

    /// How the host maps this blob.
    pub fn map_caching(&self) -> Result<MapCaching> {
        let mut info = 0u32;
        {
            let _lock = self.shared.lock();
            // SAFETY: `info` is a valid out-pointer.
            let ret = unsafe { sys::stream_renderer_resource_map_info(self.id, &mut info) };
            check("stream_renderer_resource_map_info", ret)?;
        }
        Ok(match info & sys::STREAM_RENDERER_MAP_CACHE_MASK {
            sys::STREAM_RENDERER_MAP_CACHE_CACHED => MapCaching::Cached,
            sys::STREAM_RENDERER_MAP_CACHE_UNCACHED => MapCaching::Uncached,
            sys::STREAM_RENDERER_MAP_CACHE_WC => MapCaching::WriteCombined,
            _ => MapCaching::None,
        })
    }

    /// Where this blob's memory lives in host Vulkan (blobs made from Vulkan memory only).
    pub fn vulkan_info(&self) -> Result<VulkanInfo> {
        let mut raw = sys::stream_renderer_vulkan_info::default();
        {
            let _lock = self.shared.lock();
            // SAFETY: `raw` is a valid out-pointer.
            let ret = unsafe { sys::stream_renderer_vulkan_info(self.id, &mut raw) };
            check("stream_renderer_vulkan_info", ret)?;
        }
        Ok(VulkanInfo {
            memory_index: raw.memory_index,
            device_uuid: raw.device_id.device_uuid,
            driver_uuid: raw.device_id.driver_uuid,
        })
    }

    /// Exports the blob as a file descriptor (the library hands it over: once per blob).
    pub fn export(&self) -> Result<ExportedBlob> {
        let mut raw = sys::stream_renderer_handle::default();
        {
            let _lock = self.shared.lock();
            // SAFETY: `raw` is a valid out-pointer.
            let ret = unsafe { sys::stream_renderer_export_blob(self.id, &mut raw) };
            check("stream_renderer_export_blob", ret)?;
        }
        let fd = i32::try_from(raw.os_handle)
            .ok()
            .filter(|fd| *fd >= 0)
            .ok_or(Error::BadHandle {
                id: self.id,
                handle: raw.os_handle,
            })?;
        // SAFETY: the library transferred ownership of this open descriptor to us.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(ExportedBlob {
            fd,
            kind: HandleKind::from_raw(raw.handle_type),
        })
    }

    /// Maps the blob into this process (host blobs without external-blob mode).
    pub fn map(&self) -> Result<Mapping<'_>> {
        if !matches!(self.kind, Kind::Blob { .. }) {
            return Err(Error::WrongResourceKind {
                id: self.id,
                what: "map",
            });
        }
        let mut hva: *mut libc::c_void = ptr::null_mut();
        let mut size = 0u64;
        {
            let _lock = self.shared.lock();
            // SAFETY: both out-pointers are valid.
            let ret = unsafe { sys::stream_renderer_resource_map(self.id, &mut hva, &mut size) };
            check("stream_renderer_resource_map", ret)?;
        }
        let ptr = NonNull::new(hva.cast::<u8>()).ok_or(Error::BadMapping(self.id))?;
        let len = usize::try_from(size)
            .ok()
            .filter(|l| *l > 0)
            .ok_or(Error::BadMapping(self.id))?;
        Ok(Mapping {
            resource: self,
            ptr,
            len,
        })
    }
}

impl Drop for Resource {
    fn drop(&mut self) {
        let mut ids = self.shared.lock();
        ids.resources.remove(&self.id);
        // SAFETY: plain value; the library detaches it from its contexts and frees it. The
        // backing is dropped after this (fields drop after `drop`), so the library never sees
        // freed memory.
        unsafe { sys::stream_renderer_resource_unref(self.id) };
    }
}

/// A blob mapped into this process. Unmapped when dropped; it borrows its resource, which
/// therefore outlives it. The memory is shared with the library (and, through an address-space
/// graphics ring, with its render threads): a read is a snapshot of bytes others may be writing.
#[derive(Debug)]
pub struct Mapping<'a> {
    resource: &'a Resource,
    ptr: NonNull<u8>,
    len: usize,
}

impl Mapping<'_> {
    /// The mapping's size in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the mapping is empty (never: an empty mapping is refused).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn range(&self, offset: u64, len: usize) -> Result<usize> {
        usize::try_from(offset)
            .ok()
            .and_then(|o| o.checked_add(len).filter(|end| *end <= self.len).map(|_| o))
            .ok_or(Error::MappingOutOfBounds {
                id: self.resource.id,
                offset,
                len,
                size: self.len as u64,
            })
    }

    /// Copies `buf.len()` bytes at `offset` out of the mapping.
    pub fn read(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let start = self.range(offset, buf.len())?;
        // SAFETY: `start + buf.len() <= len`, inside the mapping the library keeps alive while
        // the resource lives (which outlives the slice, used for this copy only).
        let src = unsafe {
            vm_memory::VolatileSlice::new(self.ptr.as_ptr().wrapping_add(start), buf.len())
        };
        // Volatile, as vm-memory reads guest memory: the guest (through its mapping of the
        // blob) and the library's threads may write it concurrently.
        src.copy_to(buf);
        Ok(())
    }

    /// Copies `buf` into the mapping at `offset`.
    pub fn write(&self, offset: u64, buf: &[u8]) -> Result<()> {
        let start = self.range(offset, buf.len())?;
        // SAFETY: as in `read`; the mapping is writable host memory.
        let dst = unsafe {
            vm_memory::VolatileSlice::new(self.ptr.as_ptr().wrapping_add(start), buf.len())
        };
        dst.copy_from(buf);
        Ok(())
    }
}

impl Drop for Mapping<'_> {
    fn drop(&mut self) {
        let _lock = self.resource.shared.lock();
        // SAFETY: plain value; the library's unmap does nothing but look the resource up.
        let ret = unsafe { sys::stream_renderer_resource_unmap(self.resource.id) };
        if ret != 0 {
            log::warn!(
                "gfxstream: unmap of resource {} failed: {ret}",
                self.resource.id
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(target: u32, format: u32, bind: u32, width: u32, height: u32) -> ResourceCreateArgs {
        ResourceCreateArgs {
            target,
            format,
            bind,
            width,
            height,
            ..ResourceCreateArgs::default()
        }
    }

    #[test]
    fn storage_follows_the_library() {
        let t2d = target::PIPE_TEXTURE_2D;
        assert_eq!(
            storage(&args(target::PIPE_BUFFER, 0, bind::CUSTOM, 8, 1)),
            Storage::Pipe
        );
        assert_eq!(
            storage(&args(
                target::PIPE_BUFFER,
                format::R8_UNORM,
                bind::LINEAR,
                8,
                1
            )),
            Storage::Buffer
        );
        assert_eq!(
            storage(&args(
                t2d,
                format::R8_UNORM,
                bind::LINEAR | bind::SCANOUT,
                8,
                1
            )),
            Storage::ColorBuffer
        );
        assert_eq!(
            storage(&args(t2d, format::B8G8R8A8_UNORM, bind::LINEAR, 8, 1)),
            Storage::ColorBuffer
        );
    }

    #[test]
    fn staging_sizes() {
        let t2d = target::PIPE_TEXTURE_2D;
        let rgba = args(t2d, format::R8G8B8A8_UNORM, bind::SAMPLER_VIEW, 64, 64);
        assert_eq!(staging_size(&rgba), Some(64 * 64 * 4));
        // 565 with an odd width: rows padded to 4 bytes.
        let rgb565 = args(t2d, format::B5G6R5_UNORM, bind::SAMPLER_VIEW, 3, 2);
        assert_eq!(staging_size(&rgb565), Some(16));
        let buffer = args(target::PIPE_BUFFER, format::R8_UNORM, bind::LINEAR, 100, 3);
        assert_eq!(staging_size(&buffer), Some(300));
        let pipe = args(target::PIPE_BUFFER, 0, bind::CUSTOM, 4096, 1);
        assert_eq!(staging_size(&pipe), Some(4096));
        // Unknown formats: no transfers.
        assert_eq!(
            staging_size(&args(t2d, 163, bind::SAMPLER_VIEW, 2, 2)),
            None
        );
        let max = args(t2d, format::R8G8B8A8_UNORM, 0, u32::MAX, u32::MAX);
        // Overflow gives no size (and creation refuses such edges anyway).
        assert_eq!(staging_size(&max), None);
    }
}
