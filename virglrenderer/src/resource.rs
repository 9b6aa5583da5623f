//! Resources: creation arguments, backing memory, transfers, read-back, blobs and exports.

use std::cell::{Cell, RefCell};
use std::ffi::{c_int, c_uint};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;
use std::rc::Rc;

use drm_fourcc::DrmFourcc;
use virglrenderer_sys as sys;

use crate::backing::BackingMemory;
use crate::context::Context;
use crate::error::{Errno, Error, Result};
use crate::format;
use crate::renderer::{Inner, MAX_BACKING_RANGES};

/// Arguments of a classic resource (`RESOURCE_CREATE_3D`, or 2D with [`texture_2d`]).
///
/// [`texture_2d`]: ResourceCreate3d::texture_2d
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResourceCreate3d {
    /// Texture target (`format::PIPE_TEXTURE_2D`, ...).
    pub target: u32,
    /// Virgl format (`format::B8G8R8X8_UNORM`, ...).
    pub format: u32,
    /// Bind flags (`format::BIND_*`).
    pub bind: u32,
    /// Width in texels.
    pub width: u32,
    /// Height in texels.
    pub height: u32,
    /// Depth in texels.
    pub depth: u32,
    /// Number of array layers.
    pub array_size: u32,
    /// Highest mip level.
    pub last_level: u32,
    /// Number of samples (0 or 1: single-sampled).
    pub nr_samples: u32,
    /// Resource flags (`format::RESOURCE_FLAG_Y_0_TOP`).
    pub flags: u32,
}

impl ResourceCreate3d {
    /// A single-level `PIPE_TEXTURE_2D` render target and sampler view, row 0 at the top: what
    /// virtio-gpu's `RESOURCE_CREATE_2D` becomes on virgl.
    pub fn texture_2d(format: u32, width: u32, height: u32) -> Self {
        ResourceCreate3d {
            target: format::PIPE_TEXTURE_2D,
            format,
            bind: format::BIND_RENDER_TARGET | format::BIND_SAMPLER_VIEW,
            width,
            height,
            depth: 1,
            array_size: 1,
            last_level: 0,
            nr_samples: 0,
            flags: format::RESOURCE_FLAG_Y_0_TOP,
        }
    }
}

/// Where a blob's memory lives (`VIRTIO_GPU_BLOB_MEM_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobMem {
    /// Guest memory (the backing is passed at creation).
    Guest,
    /// Host memory allocated by a context (`blob_id` names the allocation).
    Host3d,
    /// Host allocation with guest backing.
    Host3dGuest,
}

impl BlobMem {
    /// From the virtio-gpu value.
    pub fn from_raw(v: u32) -> Option<Self> {
        match v {
            sys::VIRGL_RENDERER_BLOB_MEM_GUEST => Some(BlobMem::Guest),
            sys::VIRGL_RENDERER_BLOB_MEM_HOST3D => Some(BlobMem::Host3d),
            sys::VIRGL_RENDERER_BLOB_MEM_HOST3D_GUEST => Some(BlobMem::Host3dGuest),
            _ => None,
        }
    }

    /// The virtio-gpu / library value.
    pub fn raw(self) -> u32 {
        match self {
            BlobMem::Guest => sys::VIRGL_RENDERER_BLOB_MEM_GUEST,
            BlobMem::Host3d => sys::VIRGL_RENDERER_BLOB_MEM_HOST3D,
            BlobMem::Host3dGuest => sys::VIRGL_RENDERER_BLOB_MEM_HOST3D_GUEST,
        }
    }
}

/// `VIRTIO_GPU_BLOB_FLAG_USE_MAPPABLE`.
pub const BLOB_FLAG_USE_MAPPABLE: u32 = sys::VIRGL_RENDERER_BLOB_FLAG_USE_MAPPABLE;
/// `VIRTIO_GPU_BLOB_FLAG_USE_SHAREABLE`.
pub const BLOB_FLAG_USE_SHAREABLE: u32 = sys::VIRGL_RENDERER_BLOB_FLAG_USE_SHAREABLE;
/// `VIRTIO_GPU_BLOB_FLAG_USE_CROSS_DEVICE`.
pub const BLOB_FLAG_USE_CROSS_DEVICE: u32 = sys::VIRGL_RENDERER_BLOB_FLAG_USE_CROSS_DEVICE;

/// Arguments of a blob resource (`RESOURCE_CREATE_BLOB`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobCreate {
    /// Where the memory lives.
    pub mem: BlobMem,
    /// `BLOB_FLAG_*` bits.
    pub flags: u32,
    /// Context-local id of a host3d allocation (made by an earlier SUBMIT_3D).
    pub blob_id: u64,
    /// Size in bytes.
    pub size: u64,
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum ResourceKind {
    Classic(ResourceCreate3d),
    Blob(BlobCreate),
}

/// A 3D box of a resource, in texels (`virgl_box`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Box3d {
    /// Left edge.
    pub x: u32,
    /// Top edge.
    pub y: u32,
    /// Front edge (layer or depth slice).
    pub z: u32,
    /// Width.
    pub w: u32,
    /// Height.
    pub h: u32,
    /// Depth (1 for 2D).
    pub d: u32,
}

/// A rectangle in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rect {
    /// Left edge.
    pub x: u32,
    /// Top edge.
    pub y: u32,
    /// Width.
    pub width: u32,
    /// Height.
    pub height: u32,
}

/// Parameters of a transfer between a resource and memory (`TRANSFER_*_HOST_3D`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Transfer {
    /// The box of the resource.
    pub bbox: Box3d,
    /// Mip level.
    pub level: u32,
    /// Bytes per row in memory; 0 lets the library use the tightly packed stride.
    pub stride: u32,
    /// Bytes per layer in memory; 0: packed.
    pub layer_stride: u32,
    /// Byte offset into the memory where the box's first texel is.
    pub offset: u64,
}

impl Transfer {
    /// A 2D rectangle of level 0, packed rows, at memory offset `offset`.
    pub fn rect_2d(rect: Rect, offset: u64) -> Self {
        Transfer {
            bbox: Box3d {
                x: rect.x,
                y: rect.y,
                z: 0,
                w: rect.width,
                h: rect.height,
                d: 1,
            },
            level: 0,
            stride: 0,
            layer_stride: 0,
            offset,
        }
    }

    fn raw_box(&self) -> sys::virgl_box {
        sys::virgl_box {
            x: self.bbox.x,
            y: self.bbox.y,
            z: self.bbox.z,
            w: self.bbox.w,
            h: self.bbox.h,
            d: self.bbox.d,
        }
    }
}

/// Backing memory attached to a resource, with the iovec array the library points into.
pub(crate) struct Attached {
    iovecs: Vec<libc::iovec>,
    total_len: u64,
    memory: Box<dyn BackingMemory>,
}

impl Attached {
    pub(crate) fn new(mut memory: Box<dyn BackingMemory>) -> Result<Self> {
        let ranges = memory.ranges();
        if ranges.len() > MAX_BACKING_RANGES {
            return Err(Error::TooLarge {
                what: "number of backing ranges",
                value: ranges.len() as u64,
                max: MAX_BACKING_RANGES as u64,
            });
        }
        let mut total_len = 0u64;
        for r in &ranges {
            total_len = total_len
                .checked_add(r.len() as u64)
                .ok_or(Error::InvalidArgument("backing length overflows"))?;
        }
        let iovecs = ranges.into_iter().map(|r| r.to_iovec()).collect();
        Ok(Attached {
            iovecs,
            total_len,
            memory,
        })
    }

    pub(crate) fn total_len(&self) -> u64 {
        self.total_len
    }

    /// Pointer and count of the iovec array (count bounded by MAX_BACKING_RANGES).
    pub(crate) fn raw_parts(&self) -> Result<(*const libc::iovec, u32)> {
        let n = u32::try_from(self.iovecs.len())
            .map_err(|_| Error::InvalidArgument("too many ranges"))?;
        Ok((self.iovecs.as_ptr(), n))
    }
}

/// The kind of an exported handle (`VIRGL_RENDERER_BLOB_FD_TYPE_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandleKind {
    /// A Linux dmabuf.
    Dmabuf,
    /// An opaque fd (only the same driver can import it).
    Opaque,
    /// A shared-memory fd (memfd), mappable by anyone.
    Shm,
}

/// An exported resource handle: an owned fd and what it is.
#[derive(Debug)]
pub struct ExportedHandle {
    /// The fd (closed when dropped).
    pub fd: OwnedFd,
    /// What the fd is.
    pub kind: HandleKind,
}

/// A resource exported as a dmabuf for scanout.
#[derive(Debug)]
pub struct Dmabuf {
    /// The dmabuf fd.
    pub fd: OwnedFd,
    /// Pixel format, when known.
    pub fourcc: Option<DrmFourcc>,
    /// Width in pixels (0 when unknown, for blobs).
    pub width: u32,
    /// Height in pixels (0 when unknown, for blobs).
    pub height: u32,
    /// Bytes per row.
    pub stride: u32,
    /// Byte offset of the first pixel.
    pub offset: u32,
    /// Format modifier, when the library reports one.
    pub modifier: Option<u64>,
}

/// What the library knows about a classic resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResourceInfo {
    /// Virgl format.
    pub virgl_format: u32,
    /// The format as a DRM fourcc (from the library, or derived from the virgl format).
    pub drm_fourcc: Option<DrmFourcc>,
    /// Width in texels.
    pub width: u32,
    /// Height in texels.
    pub height: u32,
    /// Depth in texels.
    pub depth: u32,
    /// Resource flags.
    pub flags: u32,
    /// Whether row 0 is the top row (`RESOURCE_FLAG_Y_0_TOP`); otherwise the image is stored
    /// bottom-up (GL convention) and a display must flip it.
    pub y_0_top: bool,
    /// Bytes per row of the host storage (0 when the library does not know).
    pub stride: u32,
    /// Byte offset of the first texel in the host storage (0: the library reports none).
    pub offset: u32,
    /// Format modifier (libvirglrenderer >= 1.0 reports it; `None` on 0.10).
    pub modifier: Option<u64>,
    /// The GL texture name (internal to the library's GL context).
    pub tex_id: u32,
}

/// Caching of a mapped blob (`VIRTIO_GPU_MAP_CACHE_*`).
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
    /// A value this crate does not know.
    Unknown(u32),
}

impl MapCaching {
    /// Decodes the caching bits of a map-info value.
    pub fn from_map_info(map_info: u32) -> Self {
        match map_info & sys::VIRGL_RENDERER_MAP_CACHE_MASK {
            sys::VIRGL_RENDERER_MAP_CACHE_NONE => MapCaching::None,
            sys::VIRGL_RENDERER_MAP_CACHE_CACHED => MapCaching::Cached,
            sys::VIRGL_RENDERER_MAP_CACHE_UNCACHED => MapCaching::Uncached,
            sys::VIRGL_RENDERER_MAP_CACHE_WC => MapCaching::WriteCombined,
            other => MapCaching::Unknown(other),
        }
    }
}

#[derive(Clone, Copy)]
struct Mapping {
    ptr: NonNull<u8>,
    len: u64,
    /// Made by this crate with `mmap` on the exported fd (the library could not map the
    /// resource itself), so it is removed with `munmap`, not `virgl_renderer_resource_unmap`.
    own: bool,
}

impl Mapping {
    /// Removes the mapping.
    ///
    /// # Safety
    /// `self` must be the live mapping of resource `id`, and nothing may refer into it any more.
    unsafe fn remove(self, id: u32) -> c_int {
        if self.own {
            // SAFETY: (caller) `ptr`/`len` are a live mmap of this crate with nothing referring
            // into it; len fits usize because it was mapped with it.
            unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len as usize) }
        } else {
            // SAFETY: (caller) the library mapped the resource and nothing refers to the mapping.
            unsafe { sys::virgl_renderer_resource_unmap(id) }
        }
    }
}

/// A resource of the library. Dropping it detaches its backing, unmaps it, unreferences it in
/// the library (`virgl_renderer_resource_unref`) and then drops the backing memory.
pub struct Resource {
    inner: Rc<Inner>,
    id: u32,
    kind: ResourceKind,
    backing: RefCell<Option<Attached>>,
    mapping: Cell<Option<Mapping>>,
}

impl std::fmt::Debug for Resource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resource")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("has_backing", &self.has_backing())
            .finish()
    }
}

fn lib_err(op: &'static str, ret: c_int) -> Error {
    Error::Library {
        op,
        errno: Errno::from_ret(ret),
    }
}

impl Resource {
    pub(crate) fn new(
        inner: Rc<Inner>,
        id: u32,
        kind: ResourceKind,
        backing: Option<Attached>,
    ) -> Self {
        Resource {
            inner,
            id,
            kind,
            backing: RefCell::new(backing),
            mapping: Cell::new(None),
        }
    }

    /// The resource id.
    pub fn id(&self) -> u32 {
        self.id
    }

    fn raw_id(&self) -> Result<c_int> {
        c_int::try_from(self.id).map_err(|_| Error::InvalidArgument("resource id above i32::MAX"))
    }

    /// Whether this is a blob resource.
    pub fn is_blob(&self) -> bool {
        matches!(self.kind, ResourceKind::Blob(_))
    }

    /// The creation arguments of a classic resource.
    pub fn create_args(&self) -> Option<&ResourceCreate3d> {
        match &self.kind {
            ResourceKind::Classic(a) => Some(a),
            ResourceKind::Blob(_) => None,
        }
    }

    /// The creation arguments of a blob resource.
    pub fn blob_args(&self) -> Option<&BlobCreate> {
        match &self.kind {
            ResourceKind::Blob(a) => Some(a),
            ResourceKind::Classic(_) => None,
        }
    }

    /// Whether backing memory is attached.
    pub fn has_backing(&self) -> bool {
        self.backing.borrow().is_some()
    }

    /// Total bytes of the attached backing (0 without backing).
    pub fn backing_len(&self) -> u64 {
        self.backing
            .borrow()
            .as_ref()
            .map_or(0, Attached::total_len)
    }

    /// Attaches backing memory (`RESOURCE_ATTACH_BACKING`). The resource owns it until
    /// [`detach_backing`](Self::detach_backing) or drop. At most [`MAX_BACKING_RANGES`]
    /// ranges. On error the memory is dropped.
    pub fn attach_backing(&self, memory: Box<dyn BackingMemory>) -> Result<()> {
        if self.is_blob() {
            return Err(Error::IsBlob(self.id));
        }
        if self.has_backing() {
            return Err(Error::BackingAlreadyAttached(self.id));
        }
        let attached = Attached::new(memory)?;
        let (ptr, n) = attached.raw_parts()?;
        let n = c_int::try_from(n).map_err(|_| Error::InvalidArgument("too many ranges"))?;
        let id = self.raw_id()?;
        // SAFETY: the iovecs describe memory the `BackingMemory` contract keeps valid while the
        // value lives; both the iovec array and the memory are stored in `self.backing` and only
        // released after the library detached them (detach_backing / Drop). The library does
        // not write to the iovec array.
        let ret = unsafe { sys::virgl_renderer_resource_attach_iov(id, ptr.cast_mut(), n) };
        if ret != 0 {
            return Err(lib_err("virgl_renderer_resource_attach_iov", ret));
        }
        *self.backing.borrow_mut() = Some(attached);
        Ok(())
    }

    /// Detaches the backing memory (`RESOURCE_DETACH_BACKING`) and gives it back.
    pub fn detach_backing(&self) -> Option<Box<dyn BackingMemory>> {
        if self.is_blob() {
            return None;
        }
        let attached = self.backing.borrow_mut().take()?;
        self.library_detach();
        Some(attached.memory)
    }

    fn library_detach(&self) {
        if let Ok(id) = self.raw_id() {
            // SAFETY: null out-pointers are allowed (the library checks them); afterwards the
            // library holds no pointer into our iovecs.
            unsafe {
                sys::virgl_renderer_resource_detach_iov(
                    id,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                )
            };
        }
    }

    fn ctx_id(ctx: Option<&Context>) -> u32 {
        ctx.map_or(0, Context::id)
    }

    fn raw_level(level: u32) -> Result<c_int> {
        c_int::try_from(level).map_err(|_| Error::InvalidArgument("mip level"))
    }

    /// Copies a box from the attached backing into the resource (`TRANSFER_TO_HOST_*`). The
    /// library checks the box and stride against the backing's size.
    pub fn transfer_write(&self, ctx: Option<&Context>, t: &Transfer) -> Result<()> {
        if !self.has_backing() {
            return Err(Error::NoBacking(self.id));
        }
        let mut bx = t.raw_box();
        // SAFETY: null iovecs make the library use the attached backing, which is alive.
        let ret = unsafe {
            sys::virgl_renderer_transfer_write_iov(
                self.id,
                Self::ctx_id(ctx),
                Self::raw_level(t.level)?,
                t.stride,
                t.layer_stride,
                &mut bx,
                t.offset,
                std::ptr::null_mut(),
                0,
            )
        };
        if ret != 0 {
            return Err(lib_err("virgl_renderer_transfer_write_iov", ret));
        }
        Ok(())
    }

    /// Copies a box from the resource into the attached backing (`TRANSFER_FROM_HOST_3D`).
    pub fn transfer_read(&self, ctx: Option<&Context>, t: &Transfer) -> Result<()> {
        if !self.has_backing() {
            return Err(Error::NoBacking(self.id));
        }
        let mut bx = t.raw_box();
        // SAFETY: null iovecs make the library use the attached backing, which is alive.
        let ret = unsafe {
            sys::virgl_renderer_transfer_read_iov(
                self.id,
                Self::ctx_id(ctx),
                t.level,
                t.stride,
                t.layer_stride,
                &mut bx,
                t.offset,
                std::ptr::null_mut(),
                0,
            )
        };
        if ret != 0 {
            return Err(lib_err("virgl_renderer_transfer_read_iov", ret));
        }
        Ok(())
    }

    /// Copies a box from `data` (laid out as `t` says) into the resource. The library checks
    /// that the box fits in `data`.
    pub fn write_from(&self, ctx: Option<&Context>, t: &Transfer, data: &[u8]) -> Result<()> {
        let mut bx = t.raw_box();
        let mut iov = libc::iovec {
            iov_base: data.as_ptr().cast_mut().cast(),
            iov_len: data.len(),
        };
        // SAFETY: the iovec covers `data`, which outlives the call; a write transfer only reads
        // from it; the library does not keep the pointer.
        let ret = unsafe {
            sys::virgl_renderer_transfer_write_iov(
                self.id,
                Self::ctx_id(ctx),
                Self::raw_level(t.level)?,
                t.stride,
                t.layer_stride,
                &mut bx,
                t.offset,
                &mut iov,
                1 as c_uint,
            )
        };
        if ret != 0 {
            return Err(lib_err("virgl_renderer_transfer_write_iov", ret));
        }
        Ok(())
    }

    /// Copies a box of the resource into `data` (laid out as `t` says). The library checks
    /// that the box fits in `data`.
    pub fn read_into(&self, ctx: Option<&Context>, t: &Transfer, data: &mut [u8]) -> Result<()> {
        let mut bx = t.raw_box();
        let mut iov = libc::iovec {
            iov_base: data.as_mut_ptr().cast(),
            iov_len: data.len(),
        };
        // SAFETY: the iovec covers `data`, exclusively borrowed for the call; the library
        // writes within it (after checking the bounds) and does not keep the pointer.
        let ret = unsafe {
            sys::virgl_renderer_transfer_read_iov(
                self.id,
                Self::ctx_id(ctx),
                t.level,
                t.stride,
                t.layer_stride,
                &mut bx,
                t.offset,
                &mut iov,
                1,
            )
        };
        if ret != 0 {
            return Err(lib_err("virgl_renderer_transfer_read_iov", ret));
        }
        Ok(())
    }

    /// Reads the pixels of `rect` (level 0, layer 0) into `dst`, row `r` at
    /// `dst[r * dst_stride..]`: the scanout path for renderers that cannot export a dmabuf.
    /// The rectangle must lie inside the resource, `dst_stride` must hold a row, and `dst`
    /// must hold `(height - 1) * dst_stride + width * bytes_per_pixel` bytes. Rows come in the
    /// resource's storage order (see [`ResourceInfo::y_0_top`]).
    pub fn read_pixels(&self, rect: Rect, dst: &mut [u8], dst_stride: u32) -> Result<()> {
        let args = self.create_args().ok_or(Error::IsBlob(self.id))?;
        let bpp =
            format::bytes_per_pixel(args.format).ok_or(Error::UnsupportedFormat(args.format))?;
        let out_of_bounds = || Error::OutOfBounds {
            resource: self.id,
            x: rect.x,
            y: rect.y,
            width: rect.width,
            height: rect.height,
            res_width: args.width,
            res_height: args.height,
        };
        let right = rect.x.checked_add(rect.width).ok_or_else(out_of_bounds)?;
        let bottom = rect.y.checked_add(rect.height).ok_or_else(out_of_bounds)?;
        if right > args.width || bottom > args.height {
            return Err(out_of_bounds());
        }
        if rect.width == 0 || rect.height == 0 {
            return Ok(());
        }
        let row_bytes = u64::from(rect.width) * u64::from(bpp);
        if u64::from(dst_stride) < row_bytes {
            return Err(Error::InvalidArgument("stride smaller than a row"));
        }
        let needed = u64::from(rect.height - 1) * u64::from(dst_stride) + row_bytes;
        if needed > dst.len() as u64 {
            return Err(Error::BufferTooSmall {
                needed,
                got: dst.len() as u64,
            });
        }
        let t = Transfer {
            stride: dst_stride,
            ..Transfer::rect_2d(rect, 0)
        };
        self.read_into(None, &t, dst)
    }

    /// What the library knows about this (classic) resource: format, size, stride and, on
    /// libvirglrenderer >= 1.0, the modifier.
    pub fn info(&self) -> Result<ResourceInfo> {
        let id = self.raw_id()?;
        #[cfg(not(virgl_1_0))]
        let (info, modifier) = {
            let mut info = sys::virgl_renderer_resource_info::default();
            // SAFETY: `info` is a valid out struct.
            let ret = unsafe { sys::virgl_renderer_resource_get_info(id, &mut info) };
            if ret != 0 {
                return Err(lib_err("virgl_renderer_resource_get_info", ret));
            }
            (info, None)
        };
        #[cfg(virgl_1_0)]
        let (info, modifier) = {
            let mut ext = sys::virgl_renderer_resource_info_ext {
                version: sys::VIRGL_RENDERER_RESOURCE_INFO_EXT_VERSION as c_int,
                ..Default::default()
            };
            // SAFETY: `ext` is a valid out struct of the installed header's layout.
            let ret = unsafe { sys::virgl_renderer_resource_get_info_ext(id, &mut ext) };
            if ret != 0 {
                return Err(lib_err("virgl_renderer_resource_get_info_ext", ret));
            }
            (ext.base, Some(ext.modifiers))
        };
        let drm_fourcc = u32::try_from(info.drm_fourcc)
            .ok()
            .filter(|&f| f != 0)
            .and_then(|f| DrmFourcc::try_from(f).ok())
            .or_else(|| format::drm_fourcc(info.virgl_format));
        Ok(ResourceInfo {
            virgl_format: info.virgl_format,
            drm_fourcc,
            width: info.width,
            height: info.height,
            depth: info.depth,
            flags: info.flags,
            y_0_top: info.flags & format::RESOURCE_FLAG_Y_0_TOP != 0,
            stride: info.stride,
            offset: 0,
            modifier,
            tex_id: info.tex_id,
        })
    }

    /// Exports the resource as a dmabuf for scanout.
    ///
    /// Blob resources are exported with `virgl_renderer_resource_export_blob` (and must come
    /// out as a dmabuf). Classic resources use `virgl_renderer_get_fd_for_texture2`, but only
    /// on a hardware GL renderer: on a software rasterizer (Mesa llvmpipe, surfaceless) the
    /// export cannot work (and `virgl_renderer_get_fd_for_texture` was seen to crash there), so
    /// this returns [`Error::DmabufUnsupported`] without calling the library; use
    /// [`read_pixels`](Self::read_pixels) instead.
    pub fn export_dmabuf(&self) -> Result<Dmabuf> {
        if self.is_blob() {
            let h = self.export_blob()?;
            if h.kind != HandleKind::Dmabuf {
                return Err(Error::DmabufUnsupported(
                    "the blob exports as a non-dmabuf fd",
                ));
            }
            return Ok(Dmabuf {
                fd: h.fd,
                fourcc: None,
                width: 0,
                height: 0,
                stride: 0,
                offset: 0,
                modifier: None,
            });
        }
        if self.inner.software_gl() {
            return Err(Error::DmabufUnsupported(
                "the GL renderer is a software rasterizer (llvmpipe/softpipe)",
            ));
        }
        let info = self.info()?;
        let mut fd: c_int = -1;
        let mut stride: c_int = 0;
        let mut offset: c_int = 0;
        // SAFETY: out pointers to locals; the texture id comes from the library.
        let ret = unsafe {
            sys::virgl_renderer_get_fd_for_texture2(info.tex_id, &mut fd, &mut stride, &mut offset)
        };
        if ret != 0 || fd < 0 {
            return Err(lib_err("virgl_renderer_get_fd_for_texture2", ret));
        }
        // SAFETY: on success the library returns a new fd that the caller owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Dmabuf {
            fd,
            fourcc: info.drm_fourcc,
            width: info.width,
            height: info.height,
            stride: u32::try_from(stride).unwrap_or(0),
            offset: u32::try_from(offset).unwrap_or(0),
            modifier: info.modifier,
        })
    }

    /// Exports a blob resource's memory (`virgl_renderer_resource_export_blob`).
    pub fn export_blob(&self) -> Result<ExportedHandle> {
        if !self.is_blob() {
            return Err(Error::NotBlob(self.id));
        }
        let mut fd_type = 0u32;
        let mut fd: c_int = -1;
        // SAFETY: out pointers to locals.
        let ret =
            unsafe { sys::virgl_renderer_resource_export_blob(self.id, &mut fd_type, &mut fd) };
        if ret != 0 || fd < 0 {
            return Err(lib_err("virgl_renderer_resource_export_blob", ret));
        }
        // SAFETY: on success the library hands over a new fd.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let kind = match fd_type {
            sys::VIRGL_RENDERER_BLOB_FD_TYPE_DMABUF => HandleKind::Dmabuf,
            sys::VIRGL_RENDERER_BLOB_FD_TYPE_OPAQUE => HandleKind::Opaque,
            sys::VIRGL_RENDERER_BLOB_FD_TYPE_SHM => HandleKind::Shm,
            other => return Err(Error::UnknownHandleType(other)),
        };
        Ok(ExportedHandle { fd, kind })
    }

    /// The map-info value of a mappable blob (`VIRTIO_GPU_MAP_CACHE_*` in the low bits), as
    /// the guest gets it in `RESP_OK_MAP_INFO`; see [`MapCaching::from_map_info`]. The library
    /// knows it only where it could infer the caching type from the GL driver (Mesa's drivers);
    /// elsewhere, NVIDIA's driver for one, it answers `EINVAL`.
    pub fn map_info(&self) -> Result<u32> {
        if !self.is_blob() {
            return Err(Error::NotBlob(self.id));
        }
        let mut info = 0u32;
        // SAFETY: out pointer to a local.
        let ret = unsafe { sys::virgl_renderer_resource_get_map_info(self.id, &mut info) };
        if ret != 0 {
            return Err(lib_err("virgl_renderer_resource_get_map_info", ret));
        }
        Ok(info)
    }

    /// Maps a mappable blob into this process (`RESOURCE_MAP_BLOB`) and returns its size. The
    /// mapping is read and written with [`read_mapped`](Self::read_mapped) /
    /// [`write_mapped`](Self::write_mapped) and removed by [`unmap`](Self::unmap) or drop.
    pub fn map(&self) -> Result<u64> {
        if !self.is_blob() {
            return Err(Error::NotBlob(self.id));
        }
        if self.mapping.get().is_some() {
            return Err(Error::AlreadyMapped(self.id));
        }
        let mut ptr: *mut std::ffi::c_void = std::ptr::null_mut();
        let mut len = 0u64;
        // SAFETY: out pointers to locals.
        let ret = unsafe { sys::virgl_renderer_resource_map(self.id, &mut ptr, &mut len) };
        if ret != 0 {
            let lib = lib_err("virgl_renderer_resource_map", ret);
            return match self.map_exported_fd() {
                Some(m) => {
                    self.mapping.set(Some(m));
                    Ok(m.len)
                }
                None => Err(lib),
            };
        }
        let ptr = NonNull::new(ptr.cast::<u8>()).ok_or(Error::Library {
            op: "virgl_renderer_resource_map",
            errno: Errno(libc::EFAULT),
        })?;
        self.mapping.set(Some(Mapping {
            ptr,
            len,
            own: false,
        }));
        Ok(len)
    }

    /// The fallback of [`map`](Self::map) for a blob the library cannot map itself (0.10.4
    /// maps an opaque-fd Venus blob only through its Vulkan allocator, which is not set up
    /// in-process): `mmap` of the fd the blob exports, when the kernel allows it (a memfd or a
    /// dmabuf; lavapipe's opaque fds are memfds). `None` when that is not possible either.
    fn map_exported_fd(&self) -> Option<Mapping> {
        let size = self.blob_args()?.size;
        let len = usize::try_from(size).ok().filter(|&l| l > 0)?;
        let handle = self.export_blob().ok()?;
        // The exported memory must cover the blob's declared size: pages past the end of the
        // file would fault (SIGBUS) when read. 0.10.4 checks the size only for dmabufs.
        // SAFETY: lseek on an fd we own for the call; no memory is passed.
        let end = unsafe { libc::lseek(handle.fd.as_raw_fd(), 0, libc::SEEK_END) };
        if u64::try_from(end).map_or(true, |end| end < size) {
            log::warn!(
                "resource {}: its exported {:?} memory ({end} bytes) is smaller than the blob \
                 ({size} bytes): not mapped",
                self.id,
                handle.kind
            );
            return None;
        }
        // SAFETY: a fresh shared mapping of `len` bytes of an fd we own for the call; the
        // kernel picks the address; the result is checked before use. The fd may be closed
        // afterwards (the mapping keeps the file).
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                handle.fd.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            log::debug!(
                "resource {}: mmap of its exported {:?} fd: {}",
                self.id,
                handle.kind,
                std::io::Error::last_os_error()
            );
            return None;
        }
        Some(Mapping {
            ptr: NonNull::new(p.cast::<u8>())?,
            len: size,
            own: true,
        })
    }

    /// Removes the mapping made by [`map`](Self::map).
    pub fn unmap(&self) -> Result<()> {
        let Some(m) = self.mapping.take() else {
            return Err(Error::NotMapped(self.id));
        };
        // SAFETY: `m` is the resource's live mapping (taken above); nothing refers to it any
        // more (accesses copy in and out).
        let ret = unsafe { m.remove(self.id) };
        if ret != 0 {
            return Err(lib_err("virgl_renderer_resource_unmap", ret));
        }
        Ok(())
    }

    fn mapped_range(&self, offset: u64, len: usize) -> Result<NonNull<u8>> {
        let m = self.mapping.get().ok_or(Error::NotMapped(self.id))?;
        let end = offset
            .checked_add(len as u64)
            .ok_or(Error::InvalidArgument("offset overflows"))?;
        if end > m.len {
            return Err(Error::BufferTooSmall {
                needed: end,
                got: m.len,
            });
        }
        let offset = usize::try_from(offset).map_err(|_| Error::InvalidArgument("offset"))?;
        // SAFETY: offset + len <= the mapping's length, so the result is inside the mapping.
        Ok(unsafe { m.ptr.add(offset) })
    }

    /// Copies `dst.len()` bytes at `offset` of the mapped blob into `dst`.
    pub fn read_mapped(&self, offset: u64, dst: &mut [u8]) -> Result<()> {
        let src = self.mapped_range(offset, dst.len())?;
        // SAFETY: `src..src+len` lies inside the live mapping (checked), which outlives the
        // slice (used for this copy only).
        let src = unsafe { vm_memory::VolatileSlice::new(src.as_ptr(), dst.len()) };
        // Volatile, as vm-memory reads guest memory: the guest (through its own mapping of the
        // blob) and the library's threads may write the memory concurrently.
        src.copy_to(dst);
        Ok(())
    }

    /// Copies `src` to `offset` of the mapped blob.
    pub fn write_mapped(&self, offset: u64, src: &[u8]) -> Result<()> {
        let dst = self.mapped_range(offset, src.len())?;
        // SAFETY: `dst..dst+len` lies inside the live, writable mapping (checked), which
        // outlives the slice (used for this copy only).
        let dst = unsafe { vm_memory::VolatileSlice::new(dst.as_ptr(), src.len()) };
        // Volatile: the memory is shared with the guest and the library's threads.
        dst.copy_from(src);
        Ok(())
    }
}

impl Drop for Resource {
    fn drop(&mut self) {
        if let Some(m) = self.mapping.take() {
            // SAFETY: `m` is the resource's live mapping and nothing refers to it.
            unsafe { m.remove(self.id) };
        }
        let backing = self.backing.borrow_mut().take();
        if backing.is_some() {
            self.library_detach();
        }
        // SAFETY: the resource exists (created by us, unreferenced only here); its backing was
        // detached above and is dropped only after this call.
        unsafe { sys::virgl_renderer_resource_unref(self.id) };
        self.inner.release_resource_id(self.id);
        drop(backing);
    }
}
