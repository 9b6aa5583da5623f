//! The test harness the rooms' tests share: a [`Harness`] that sends requests through real
//! descriptor chains (a mock split queue over test guest memory) and reads the responses back,
//! request builders, a [`RecordingDisplay`], renderer test doubles ([`ManualFenceRenderer`]: fences
//! completed by hand; [`HostBlobRenderer`]: host blobs that export as fds; [`StagingRenderer`]:
//! 3D resources that are only recorded, and optionally a library-side copy of every backing, as
//! gfxstream makes) and a [`RecordingMapper`] for the host-visible region.

use std::cell::RefCell;
use std::collections::HashSet;
use std::os::fd::BorrowedFd;
use std::rc::Rc;

use drm_fourcc::DrmFourcc;
use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::{Queue, QueueOwnedT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::{GpuConfig, QueueKind, SharedMemoryMapper, UsedEntry, VirtioGpu};
use crate::display::{Display, DisplayMode, DmabufScanout, CURSOR_SIZE};
use crate::protocol::tests::{hdr, le32s, test_mem, WRITE};
use crate::protocol::*;
use crate::renderer::software::SoftwareRenderer;
use crate::renderer::{
    BlobHandleKind, CapsetInfo, CreateBlob, ExportedBlob, FenceId, GuestBacking, RenderContext,
    Renderer, RendererCapabilities, RendererError, ResourceCreate3d,
};

/// One call the device made on the display.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Call {
    Scanout(u32, u32, u32),
    Update(u32, u32, u32, u32, u32, Vec<u8>),
    DmabufScanout(u32, u32, u32, u32, u32),
    DmabufUpdate(u32, u32, u32, u32, u32),
    CursorUpdate(u32, u32, u32, u32, u32, Vec<u32>),
    CursorMove(u32, u32, u32),
    CursorHide(u32, u32, u32),
}

/// A display that records what the device tells it.
#[derive(Default)]
pub(crate) struct RecordingDisplay {
    pub(crate) calls: Vec<Call>,
    pub(crate) modes: Option<Vec<DisplayMode>>,
    pub(crate) edid: Option<Vec<u8>>,
    pub(crate) dmabuf: bool,
}

impl Display for RecordingDisplay {
    fn display_info(&mut self) -> Option<Vec<DisplayMode>> {
        self.modes.clone()
    }
    fn edid(&mut self, _scanout_id: u32) -> Option<Vec<u8>> {
        self.edid.clone()
    }
    fn scanout(&mut self, scanout_id: u32, width: u32, height: u32) {
        self.calls.push(Call::Scanout(scanout_id, width, height));
    }
    fn update(&mut self, s: u32, x: u32, y: u32, w: u32, h: u32, pixels: &[u8]) {
        // The display is x8r8g8b8: the fourth byte of a pixel means nothing to it (rows of a
        // B8G8R8X8 resource go out with the guest's byte there), so it is recorded as 0xff.
        let mut pixels = pixels.to_vec();
        for p in pixels.chunks_exact_mut(4) {
            p[3] = 0xff;
        }
        self.calls.push(Call::Update(s, x, y, w, h, pixels));
    }
    fn supports_dmabuf(&self) -> bool {
        self.dmabuf
    }
    fn dmabuf_scanout(&mut self, scanout_id: u32, scanout: &DmabufScanout<'_>) {
        assert_eq!(
            (scanout.fd_width, scanout.fd_height, scanout.fd_stride),
            (16, 8, 64)
        );
        assert_eq!(scanout.fourcc, DrmFourcc::Xrgb8888 as u32);
        self.calls.push(Call::DmabufScanout(
            scanout_id,
            scanout.x,
            scanout.y,
            scanout.width,
            scanout.height,
        ));
    }
    fn dmabuf_update(&mut self, s: u32, x: u32, y: u32, w: u32, h: u32) {
        self.calls.push(Call::DmabufUpdate(s, x, y, w, h));
    }
    fn cursor_update(
        &mut self,
        s: u32,
        x: u32,
        y: u32,
        hot_x: u32,
        hot_y: u32,
        image: &[u32; (CURSOR_SIZE * CURSOR_SIZE) as usize],
    ) {
        self.calls
            .push(Call::CursorUpdate(s, x, y, hot_x, hot_y, image.to_vec()));
    }
    fn cursor_move(&mut self, s: u32, x: u32, y: u32) {
        self.calls.push(Call::CursorMove(s, x, y));
    }
    fn cursor_hide(&mut self, s: u32, x: u32, y: u32) {
        self.calls.push(Call::CursorHide(s, x, y));
    }
}

/// What the 3D test double saw, and the fences the test completes by hand.
#[derive(Default)]
pub(crate) struct DoubleLog {
    pub(crate) fences: Vec<FenceId>,
    pub(crate) complete: Vec<FenceId>,
    pub(crate) refuse_fences: bool,
    pub(crate) contexts: Vec<(u32, u32, String)>,
    pub(crate) submits: Vec<(u32, Vec<u8>)>,
    /// Contexts dropped, renderer resets and the renderer's drop, in order.
    pub(crate) lifecycle: Vec<String>,
}

impl DoubleLog {
    /// Records `fence`, unless fences are refused.
    fn fence(&mut self, fence: FenceId) -> crate::renderer::Result<()> {
        if self.refuse_fences {
            return Err(RendererError::Library("refused".into()));
        }
        self.fences.push(fence);
        Ok(())
    }
}

/// A context of [`ManualFenceRenderer`]: records submits and ring fences in the shared log.
struct ManualFenceContext {
    ctx_id: u32,
    log: Rc<RefCell<DoubleLog>>,
}

impl Drop for ManualFenceContext {
    fn drop(&mut self) {
        self.log
            .borrow_mut()
            .lifecycle
            .push(format!("context {} dropped", self.ctx_id));
    }
}

impl Drop for ManualFenceRenderer {
    fn drop(&mut self) {
        self.log
            .borrow_mut()
            .lifecycle
            .push("renderer dropped".into());
    }
}

impl RenderContext for ManualFenceContext {
    fn attach_resource(&mut self, _id: u32) -> crate::renderer::Result<()> {
        Ok(())
    }
    fn detach_resource(&mut self, _id: u32) -> crate::renderer::Result<()> {
        Ok(())
    }
    fn submit(&mut self, commands: &[u8]) -> crate::renderer::Result<()> {
        self.log
            .borrow_mut()
            .submits
            .push((self.ctx_id, commands.to_vec()));
        Ok(())
    }
    fn create_fence(&mut self, ring_idx: u8, fence_id: u64) -> crate::renderer::Result<()> {
        self.log.borrow_mut().fence(FenceId {
            ctx_id: self.ctx_id,
            ring_idx: Some(ring_idx),
            id: fence_id,
        })
    }
}

/// A test double: the software renderer for 2D plus fake 3D (contexts, submits, one capset)
/// whose fences complete only when the test pushes them into `complete`.
pub(crate) struct ManualFenceRenderer {
    inner: SoftwareRenderer,
    log: Rc<RefCell<DoubleLog>>,
}

impl Renderer for ManualFenceRenderer {
    fn name(&self) -> &'static str {
        "manual-fence test double"
    }
    fn capabilities(&self) -> RendererCapabilities {
        RendererCapabilities {
            three_d: true,
            context_init: true,
            blob_guest: true,
            blob_host: false,
        }
    }
    fn capsets(&self) -> Vec<CapsetInfo> {
        vec![
            CapsetInfo {
                id: VIRTIO_GPU_CAPSET_VIRGL2,
                max_version: 2,
                max_size: 8,
            },
            CapsetInfo {
                id: VIRTIO_GPU_CAPSET_VENUS,
                max_version: 0,
                max_size: MAX_CAPSET_SIZE + 1,
            },
        ]
    }
    fn capset(&mut self, id: u32, version: u32) -> crate::renderer::Result<Vec<u8>> {
        Ok(vec![
            id as u8,
            version as u8,
            0xaa,
            0xbb,
            0xcc,
            0xdd,
            0xee,
            0xff,
        ])
    }
    fn resource_create_2d(
        &mut self,
        id: u32,
        format: u32,
        width: u32,
        height: u32,
    ) -> crate::renderer::Result<()> {
        self.inner.resource_create_2d(id, format, width, height)
    }
    fn resource_unref(&mut self, id: u32) -> crate::renderer::Result<()> {
        self.inner.resource_unref(id)
    }
    fn attach_backing(&mut self, id: u32, b: GuestBacking) -> crate::renderer::Result<()> {
        self.inner.attach_backing(id, b)
    }
    fn detach_backing(&mut self, id: u32) -> crate::renderer::Result<()> {
        self.inner.detach_backing(id)
    }
    fn transfer_to_host_2d(
        &mut self,
        id: u32,
        t: &crate::renderer::CheckedTransfer2d,
    ) -> crate::renderer::Result<()> {
        self.inner.transfer_to_host_2d(id, t)
    }
    fn create_context(
        &mut self,
        ctx_id: u32,
        capset_id: u32,
        name: &str,
    ) -> crate::renderer::Result<Box<dyn RenderContext>> {
        self.log
            .borrow_mut()
            .contexts
            .push((ctx_id, capset_id, name.to_string()));
        Ok(Box::new(ManualFenceContext {
            ctx_id,
            log: self.log.clone(),
        }))
    }
    fn create_fence(&mut self, ctx_id: u32, fence_id: u64) -> crate::renderer::Result<()> {
        self.log.borrow_mut().fence(FenceId {
            ctx_id,
            ring_idx: None,
            id: fence_id,
        })
    }
    fn poll(&mut self) -> Vec<FenceId> {
        std::mem::take(&mut self.log.borrow_mut().complete)
    }
    fn reset(&mut self) {
        self.log.borrow_mut().lifecycle.push("reset".into());
        self.inner.reset();
    }
    fn read_pixels(&mut self, id: u32, rect: Rect, out: &mut [u8]) -> crate::renderer::Result<()> {
        self.inner.read_pixels(id, rect, out)
    }
    fn export_dmabuf(&mut self, id: u32) -> crate::renderer::Result<crate::renderer::Dmabuf> {
        // Resource 77 "exports" (any fd stands in for the dmabuf); the others cannot.
        if id != 77 {
            return Err(RendererError::Unsupported("dmabuf export"));
        }
        let file =
            std::fs::File::open("/dev/null").map_err(|e| RendererError::Library(e.to_string()))?;
        Ok(crate::renderer::Dmabuf {
            fd: file.into(),
            width: 16,
            height: 8,
            stride: 64,
            fourcc: DrmFourcc::Xrgb8888 as u32,
            modifier: None,
            flags: 0,
        })
    }
}

/// A test double for the host memory budget: the software renderer for 2D, plus 3D resources
/// and contexts that are only recorded (ids kept, nothing allocated); with `copies`, it reports
/// that its library copies every attached backing ([`Renderer::attach_backing_copies`], as
/// gfxstream does), so that the device charges a staging copy.
pub(crate) struct StagingRenderer {
    inner: SoftwareRenderer,
    copies: bool,
    /// The 3D resources and the backing attached to each (its length).
    three_d: std::collections::HashMap<u32, Option<u64>>,
}

/// The contexts of [`StagingRenderer`]: every call succeeds, nothing is kept.
struct RecordedContext;

impl RenderContext for RecordedContext {
    fn attach_resource(&mut self, _: u32) -> crate::renderer::Result<()> {
        Ok(())
    }
    fn detach_resource(&mut self, _: u32) -> crate::renderer::Result<()> {
        Ok(())
    }
    fn submit(&mut self, _: &[u8]) -> crate::renderer::Result<()> {
        Ok(())
    }
    fn create_fence(&mut self, _: u8, _: u64) -> crate::renderer::Result<()> {
        Ok(())
    }
}

impl StagingRenderer {
    pub(crate) fn new(copies: bool) -> Self {
        StagingRenderer {
            inner: SoftwareRenderer::new(),
            copies,
            three_d: Default::default(),
        }
    }
}

impl Renderer for StagingRenderer {
    fn name(&self) -> &'static str {
        "staging-copy test double"
    }
    fn capabilities(&self) -> RendererCapabilities {
        RendererCapabilities {
            three_d: true,
            context_init: true,
            blob_guest: true,
            blob_host: false,
        }
    }
    fn resource_create_2d(
        &mut self,
        id: u32,
        f: u32,
        w: u32,
        h: u32,
    ) -> crate::renderer::Result<()> {
        self.inner.resource_create_2d(id, f, w, h)
    }
    fn resource_create_3d(&mut self, id: u32, _: &ResourceCreate3d) -> crate::renderer::Result<()> {
        self.three_d.insert(id, None);
        Ok(())
    }
    fn resource_unref(&mut self, id: u32) -> crate::renderer::Result<()> {
        if self.three_d.remove(&id).is_some() {
            return Ok(());
        }
        self.inner.resource_unref(id)
    }
    fn attach_backing(&mut self, id: u32, b: GuestBacking) -> crate::renderer::Result<()> {
        match self.three_d.get_mut(&id) {
            // Replaces an earlier backing, like libvirglrenderer.
            Some(backing) => {
                *backing = Some(b.len());
                Ok(())
            }
            None => self.inner.attach_backing(id, b),
        }
    }
    fn attach_backing_copies(&self) -> bool {
        self.copies
    }
    fn detach_backing(&mut self, id: u32) -> crate::renderer::Result<()> {
        match self.three_d.get_mut(&id) {
            Some(backing) => {
                *backing = None;
                Ok(())
            }
            None => self.inner.detach_backing(id),
        }
    }
    fn transfer_to_host_2d(
        &mut self,
        id: u32,
        t: &crate::renderer::CheckedTransfer2d,
    ) -> crate::renderer::Result<()> {
        self.inner.transfer_to_host_2d(id, t)
    }
    fn create_context(
        &mut self,
        _: u32,
        _: u32,
        _: &str,
    ) -> crate::renderer::Result<Box<dyn RenderContext>> {
        Ok(Box::new(RecordedContext))
    }
    fn create_fence(&mut self, _: u32, _: u64) -> crate::renderer::Result<()> {
        Ok(())
    }
    fn poll(&mut self) -> Vec<FenceId> {
        Vec::new()
    }
    fn create_blob(
        &mut self,
        id: u32,
        args: &CreateBlob,
        backing: Option<GuestBacking>,
    ) -> crate::renderer::Result<()> {
        self.inner.create_blob(id, args, backing)
    }
    fn read_pixels(&mut self, id: u32, r: Rect, o: &mut [u8]) -> crate::renderer::Result<()> {
        self.inner.read_pixels(id, r, o)
    }
}

pub(crate) const QUEUE_SIZE: u16 = 256;

pub(crate) const REQ_BASE: u64 = 0x10_0000;

pub(crate) const RESP_BASE: u64 = 0x40_0000;

/// Guest pages for backings.
pub(crate) const DATA_BASE: u64 = 0x80_0000;

pub(crate) struct Harness {
    pub(crate) mem: GuestMemoryMmap,
    pub(crate) next: u16,
    pub(crate) display: RecordingDisplay,
    pub(crate) gpu: VirtioGpu,
}

pub(crate) struct Reply {
    pub(crate) used: Option<UsedEntry>,
    pub(crate) head: u16,
    pub(crate) resp_addr: u64,
}

impl Harness {
    pub(crate) fn new(renderer: Box<dyn Renderer>, config: GpuConfig) -> Self {
        Harness {
            mem: test_mem(),
            next: 0,
            display: RecordingDisplay::default(),
            gpu: VirtioGpu::new(renderer, config),
        }
    }

    pub(crate) fn software() -> Self {
        Self::new(Box::new(SoftwareRenderer::new()), GpuConfig::default())
    }

    pub(crate) fn manual(config: GpuConfig) -> (Self, Rc<RefCell<DoubleLog>>) {
        let log = Rc::new(RefCell::new(DoubleLog::default()));
        let r = ManualFenceRenderer {
            inner: SoftwareRenderer::new(),
            log: log.clone(),
        };
        (Self::new(Box::new(r), config), log)
    }

    /// Sends `request` on `queue` with a writable buffer of `resp_len` bytes (none if 0).
    pub(crate) fn send_on(&mut self, queue: QueueKind, request: &[u8], resp_len: u32) -> Reply {
        // Each chain goes into a fresh mock queue, so slots can be reused.
        let k = self.next;
        self.next = (self.next + 1) % (QUEUE_SIZE / 2);
        let req_addr = REQ_BASE + u64::from(k) * 0x2000;
        let resp_addr = RESP_BASE + u64::from(k) * 0x2000;
        self.mem
            .write_slice(request, GuestAddress(req_addr))
            .unwrap();
        // Fill the response buffer with garbage to see what is written.
        self.mem
            .write_slice(&vec![0xcc; resp_len as usize], GuestAddress(resp_addr))
            .unwrap();
        let head = 2 * k;
        let mut descs = vec![RawDescriptor::from(SplitDescriptor::new(
            req_addr,
            request.len() as u32,
            if resp_len > 0 {
                virtio_bindings::virtio_ring::VRING_DESC_F_NEXT as u16
            } else {
                0
            },
            head + 1,
        ))];
        if resp_len > 0 {
            descs.push(RawDescriptor::from(SplitDescriptor::new(
                resp_addr, resp_len, WRITE, 0,
            )));
        }
        let mut q = MockSplitQueue::new(&self.mem, QUEUE_SIZE);
        // Only this chain is made available (one avail entry per fresh mock queue).
        q.add_desc_chains(&descs, head).unwrap();
        let _ = &mut q;
        let mut queue_obj: Queue = q.create_queue().unwrap();
        let chain = queue_obj.iter(&self.mem).unwrap().next().unwrap();
        assert_eq!(chain.head_index(), head);
        let used = self.gpu.process_chain(queue, chain, &mut self.display);
        Reply {
            used,
            head,
            resp_addr,
        }
    }

    pub(crate) fn send(&mut self, request: &[u8]) -> Reply {
        self.send_on(QueueKind::Control, request, 2048)
    }

    pub(crate) fn resp(&self, r: &Reply, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        self.mem
            .read_slice(&mut v, GuestAddress(r.resp_addr))
            .unwrap();
        v
    }

    pub(crate) fn resp_type(&self, r: &Reply) -> u32 {
        u32::from_le_bytes(self.resp(r, 4).try_into().unwrap())
    }

    /// Sends and returns the response type, asserting the entry is published at once.
    pub(crate) fn cmd(&mut self, request: &[u8]) -> u32 {
        let r = self.send(request);
        let used = r.used.expect("unfenced command published at once");
        assert_eq!(used.head_index, r.head);
        assert!(used.len >= 24);
        self.resp_type(&r)
    }

    pub(crate) fn create_2d(&mut self, id: u32, format: u32, w: u32, h: u32) -> u32 {
        self.cmd(&req(
            VIRTIO_GPU_CMD_RESOURCE_CREATE_2D,
            &le32s(&[id, format, w, h]),
        ))
    }

    pub(crate) fn attach(&mut self, id: u32, entries: &[(u64, u32)]) -> u32 {
        let mut b = le32s(&[id, entries.len() as u32]);
        for (a, l) in entries {
            b.extend_from_slice(&a.to_le_bytes());
            b.extend_from_slice(&le32s(&[*l, 0]));
        }
        self.cmd(&req(VIRTIO_GPU_CMD_RESOURCE_ATTACH_BACKING, &b))
    }

    /// RESOURCE_CREATE_3D of a `target` texture of `format`, `w` x `h` x `depth`,
    /// `array_size` layers, levels `0..=last_level`, `samples` samples.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn create_3d(
        &mut self,
        id: u32,
        target: u32,
        format: u32,
        (w, h, depth): (u32, u32, u32),
        array_size: u32,
        last_level: u32,
        samples: u32,
    ) -> u32 {
        self.cmd(&req(
            VIRTIO_GPU_CMD_RESOURCE_CREATE_3D,
            &le32s(&[
                id, target, format, 0, w, h, depth, array_size, last_level, samples, 0, 0,
            ]),
        ))
    }

    /// CTX_CREATE of context `ctx` with capset `capset` (0: the renderer's default).
    pub(crate) fn ctx_create(&mut self, ctx: u32, capset: u32) -> u32 {
        let mut v = hdr(VIRTIO_GPU_CMD_CTX_CREATE, 0, 0, ctx, 0);
        v.extend_from_slice(&le32s(&[4, capset]));
        let mut name = [0u8; 64];
        name[..4].copy_from_slice(b"test");
        v.extend_from_slice(&name);
        self.cmd(&v)
    }

    /// A context command (`CTX_DESTROY` and the like) of context `ctx` with body `body`.
    pub(crate) fn ctx_cmd(&mut self, type_: u32, ctx: u32, body: &[u32]) -> u32 {
        let mut v = hdr(type_, 0, 0, ctx, 0);
        v.extend_from_slice(&le32s(body));
        self.cmd(&v)
    }

    pub(crate) fn unref(&mut self, id: u32) -> u32 {
        self.cmd(&req(VIRTIO_GPU_CMD_RESOURCE_UNREF, &le32s(&[id, 0])))
    }

    pub(crate) fn detach(&mut self, id: u32) -> u32 {
        self.cmd(&req(
            VIRTIO_GPU_CMD_RESOURCE_DETACH_BACKING,
            &le32s(&[id, 0]),
        ))
    }

    /// Bytes charged to the device's host memory budget.
    pub(crate) fn budget_used(&self) -> u64 {
        self.gpu.budget.used()
    }

    pub(crate) fn transfer(&mut self, id: u32, r: Rect, offset: u64) -> u32 {
        let mut b = le32s(&[r.x, r.y, r.width, r.height]);
        b.extend_from_slice(&offset.to_le_bytes());
        b.extend_from_slice(&le32s(&[id, 0]));
        self.cmd(&req(VIRTIO_GPU_CMD_TRANSFER_TO_HOST_2D, &b))
    }

    pub(crate) fn set_scanout(&mut self, scanout: u32, id: u32, r: Rect) -> u32 {
        self.cmd(&req(
            VIRTIO_GPU_CMD_SET_SCANOUT,
            &le32s(&[r.x, r.y, r.width, r.height, scanout, id]),
        ))
    }

    pub(crate) fn flush(&mut self, id: u32, r: Rect) -> u32 {
        self.cmd(&req(
            VIRTIO_GPU_CMD_RESOURCE_FLUSH,
            &le32s(&[r.x, r.y, r.width, r.height, id, 0]),
        ))
    }
}

pub(crate) fn req(type_: u32, body: &[u8]) -> Vec<u8> {
    let mut v = hdr(type_, 0, 0, 0, 0);
    v.extend_from_slice(body);
    v
}

pub(crate) fn fenced(type_: u32, body: &[u8], fence: u64, ctx: u32, ring: Option<u8>) -> Vec<u8> {
    let mut flags = VIRTIO_GPU_FLAG_FENCE;
    if ring.is_some() {
        flags |= VIRTIO_GPU_FLAG_INFO_RING_IDX;
    }
    let mut v = hdr(type_, flags, fence, ctx, ring.unwrap_or(0));
    v.extend_from_slice(body);
    v
}

/// Pixel (x, y) of the guest image used below: B, G, R, X bytes.
pub(crate) fn px(x: u32, y: u32) -> [u8; 4] {
    [x as u8, y as u8, (x ^ y) as u8, 0x77]
}

/// Writes a w x h B8G8R8X8 image (stride w*4) at DATA_BASE.
pub(crate) fn write_image(h: &Harness, w: u32, ht: u32) {
    for y in 0..ht {
        for x in 0..w {
            h.mem
                .write_slice(
                    &px(x, y),
                    GuestAddress(DATA_BASE + u64::from((y * w + x) * 4)),
                )
                .unwrap();
        }
    }
}

/// The XRGB8888 bytes the display must get for rect `r` of that image.
pub(crate) fn expected(r: Rect) -> Vec<u8> {
    let mut v = Vec::new();
    for y in r.y..r.y + r.height {
        for x in r.x..r.x + r.width {
            let p = px(x, y);
            v.extend_from_slice(&[p[0], p[1], p[2], 0xff]);
        }
    }
    v
}

// ---- host blobs and the host-visible region ---------------------------------------------

/// What the recording mapper was asked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ShmCall {
    Map {
        offset: u64,
        len: u64,
        writable: bool,
    },
    Unmap {
        offset: u64,
        len: u64,
    },
}

#[derive(Default)]
pub(crate) struct ShmLog {
    pub(crate) calls: Vec<ShmCall>,
    /// The descriptor offset of each map call.
    pub(crate) fd_offsets: Vec<u64>,
    pub(crate) refuse: bool,
}

pub(crate) struct RecordingMapper(Rc<RefCell<ShmLog>>);

impl SharedMemoryMapper for RecordingMapper {
    fn map(
        &mut self,
        _fd: BorrowedFd<'_>,
        fd_offset: u64,
        shm_offset: u64,
        len: u64,
        writable: bool,
    ) -> std::io::Result<()> {
        let mut log = self.0.borrow_mut();
        if log.refuse {
            return Err(std::io::Error::other("refused by the test"));
        }
        log.fd_offsets.push(fd_offset);
        log.calls.push(ShmCall::Map {
            offset: shm_offset,
            len,
            writable,
        });
        Ok(())
    }
    fn unmap(&mut self, shm_offset: u64, len: u64) -> std::io::Result<()> {
        self.0.borrow_mut().calls.push(ShmCall::Unmap {
            offset: shm_offset,
            len,
        });
        Ok(())
    }
}

/// Map info the double reports: CACHED plus a bit outside the cache mask.
pub(crate) const DOUBLE_MAP_INFO: u32 = VIRTIO_GPU_MAP_CACHE_CACHED | 0x100;

/// A host blob the double cannot export.
pub(crate) const NO_EXPORT: u32 = 66;

/// A host blob the double exports as a dmabuf (the others as shared memory).
pub(crate) const DMABUF_BLOB: u32 = 88;

/// Host blobs (this id and the next) the double exports as a 4 KiB regular file, whatever
/// the blob's size.
pub(crate) const SHORT_FILE_BLOB: u32 = 99;

/// A host blob the double exports as an opaque fd laid out like the memory files of Mesa's
/// lavapipe: 8 KiB of memory after a 4 KiB header.
pub(crate) const MESA_FILE_BLOB: u32 = 77;

/// Host blobs that export as an fd (a memfd), except [`NO_EXPORT`].
pub(crate) struct HostBlobRenderer {
    inner: SoftwareRenderer,
    /// The blobs, made by the renderer or by one of its contexts.
    blobs: Rc<RefCell<HashSet<u32>>>,
}

/// A context of [`HostBlobRenderer`]: makes blobs, fences nothing.
struct HostBlobContext {
    blobs: Rc<RefCell<HashSet<u32>>>,
}

impl RenderContext for HostBlobContext {
    fn attach_resource(&mut self, _id: u32) -> crate::renderer::Result<()> {
        Ok(())
    }
    fn detach_resource(&mut self, _id: u32) -> crate::renderer::Result<()> {
        Ok(())
    }
    fn submit(&mut self, _commands: &[u8]) -> crate::renderer::Result<()> {
        Ok(())
    }
    fn create_fence(&mut self, _ring_idx: u8, _fence_id: u64) -> crate::renderer::Result<()> {
        Ok(())
    }
    fn create_blob(
        &mut self,
        id: u32,
        _args: &CreateBlob,
        _backing: Option<GuestBacking>,
    ) -> crate::renderer::Result<()> {
        self.blobs.borrow_mut().insert(id);
        Ok(())
    }
}

impl Renderer for HostBlobRenderer {
    fn name(&self) -> &'static str {
        "host-blob test double"
    }
    fn capabilities(&self) -> RendererCapabilities {
        RendererCapabilities {
            three_d: true,
            context_init: true,
            blob_guest: true,
            blob_host: true,
        }
    }
    fn resource_create_2d(
        &mut self,
        id: u32,
        f: u32,
        w: u32,
        h: u32,
    ) -> crate::renderer::Result<()> {
        self.inner.resource_create_2d(id, f, w, h)
    }
    fn resource_unref(&mut self, id: u32) -> crate::renderer::Result<()> {
        if self.blobs.borrow_mut().remove(&id) {
            return Ok(());
        }
        self.inner.resource_unref(id)
    }
    fn attach_backing(&mut self, id: u32, b: GuestBacking) -> crate::renderer::Result<()> {
        self.inner.attach_backing(id, b)
    }
    fn detach_backing(&mut self, id: u32) -> crate::renderer::Result<()> {
        self.inner.detach_backing(id)
    }
    fn transfer_to_host_2d(
        &mut self,
        id: u32,
        t: &crate::renderer::CheckedTransfer2d,
    ) -> crate::renderer::Result<()> {
        self.inner.transfer_to_host_2d(id, t)
    }
    fn create_context(
        &mut self,
        _: u32,
        _: u32,
        _: &str,
    ) -> crate::renderer::Result<Box<dyn RenderContext>> {
        Ok(Box::new(HostBlobContext {
            blobs: self.blobs.clone(),
        }))
    }
    fn create_fence(&mut self, _: u32, _: u64) -> crate::renderer::Result<()> {
        Ok(())
    }
    fn poll(&mut self) -> Vec<FenceId> {
        Vec::new()
    }
    fn create_blob(
        &mut self,
        id: u32,
        _args: &CreateBlob,
        _backing: Option<GuestBacking>,
    ) -> crate::renderer::Result<()> {
        self.blobs.borrow_mut().insert(id);
        Ok(())
    }
    fn export_blob(&mut self, id: u32) -> crate::renderer::Result<ExportedBlob> {
        if id == NO_EXPORT || !self.blobs.borrow().contains(&id) {
            return Err(RendererError::Library("no fd for this blob".into()));
        }
        if id == MESA_FILE_BLOB {
            return crate::renderer::export::test_files::mesa_memory_file(8192, 4096)
                .map(|f| ExportedBlob::new(f.into(), BlobHandleKind::OpaqueFd))
                .map_err(|e| RendererError::Library(e.to_string()));
        }
        let file = if id == SHORT_FILE_BLOB || id == SHORT_FILE_BLOB + 1 {
            let path =
                std::env::temp_dir().join(format!("vugpu-short-blob-{}-{id}", std::process::id()));
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&path)
                .map_err(|e| RendererError::Library(e.to_string()))?;
            let _ = std::fs::remove_file(&path);
            f.set_len(4096)
                .map_err(|e| RendererError::Library(e.to_string()))?;
            f
        } else {
            std::fs::File::open("/dev/null").map_err(|e| RendererError::Library(e.to_string()))?
        };
        Ok(ExportedBlob::new(
            file.into(),
            if id == DMABUF_BLOB {
                BlobHandleKind::Dmabuf
            } else {
                BlobHandleKind::Shm
            },
        ))
    }
    fn map_info(&mut self, _id: u32) -> crate::renderer::Result<u32> {
        Ok(DOUBLE_MAP_INFO)
    }
    fn read_pixels(&mut self, id: u32, r: Rect, o: &mut [u8]) -> crate::renderer::Result<()> {
        self.inner.read_pixels(id, r, o)
    }
}

pub(crate) const REGION: u64 = 1 << 20;

pub(crate) fn host_blob_harness(region: u64) -> (Harness, Rc<RefCell<ShmLog>>) {
    host_blob_harness_with(GpuConfig {
        host_visible_size: region,
        ..GpuConfig::default()
    })
}

/// [`host_blob_harness`] with `config`.
pub(crate) fn host_blob_harness_with(config: GpuConfig) -> (Harness, Rc<RefCell<ShmLog>>) {
    let r = HostBlobRenderer {
        inner: SoftwareRenderer::new(),
        blobs: Rc::new(RefCell::new(HashSet::new())),
    };
    let mut h = Harness::new(Box::new(r), config);
    // The tests assume 4 KiB pages.
    h.gpu.map_alignment = 4096;
    let mut name = [0u8; 64];
    name[..4].copy_from_slice(b"test");
    let mut body = le32s(&[4, 0]);
    body.extend_from_slice(&name);
    let mut ctx = hdr(VIRTIO_GPU_CMD_CTX_CREATE, 0, 0, 1, 0);
    ctx.extend_from_slice(&body);
    assert_eq!(h.cmd(&ctx), VIRTIO_GPU_RESP_OK_NODATA);
    (h, Rc::new(RefCell::new(ShmLog::default())))
}

pub(crate) fn install(h: &mut Harness, log: &Rc<RefCell<ShmLog>>) {
    h.gpu
        .set_shared_memory(Some(Box::new(RecordingMapper(log.clone()))));
}

pub(crate) fn create_blob_cmd(
    id: u32,
    mem: u32,
    flags: u32,
    size: u64,
    entries: &[(u64, u32)],
) -> Vec<u8> {
    let mut v = hdr(VIRTIO_GPU_CMD_RESOURCE_CREATE_BLOB, 0, 0, 1, 0);
    v.extend_from_slice(&le32s(&[id, mem, flags, entries.len() as u32]));
    v.extend_from_slice(&u64::from(id).to_le_bytes());
    v.extend_from_slice(&size.to_le_bytes());
    for (a, l) in entries {
        v.extend_from_slice(&a.to_le_bytes());
        v.extend_from_slice(&le32s(&[*l, 0]));
    }
    v
}

pub(crate) fn map_cmd(id: u32, offset: u64) -> Vec<u8> {
    let mut b = le32s(&[id, 0]);
    b.extend_from_slice(&offset.to_le_bytes());
    req(VIRTIO_GPU_CMD_RESOURCE_MAP_BLOB, &b)
}

pub(crate) fn unmap_cmd(id: u32) -> Vec<u8> {
    req(VIRTIO_GPU_CMD_RESOURCE_UNMAP_BLOB, &le32s(&[id, 0]))
}

pub(crate) const MAPPABLE: u32 = VIRTIO_GPU_BLOB_FLAG_USE_MAPPABLE;
