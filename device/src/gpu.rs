//! The virtio-gpu device state machine (being filled in; the public interface is pinned in
//! DESIGN.md).

use std::ops::Deref;
use std::os::fd::BorrowedFd;

use virtio_queue::DescriptorChain;
use vm_memory::GuestMemoryMmap;

use crate::display::Display;
use crate::protocol::{self, ErrorCode, Response};
use crate::renderer::Renderer;

/// Device configuration (bounds and defaults).
#[derive(Clone, Debug)]
pub struct GpuConfig {
    /// Number of scanouts, 1..=16.
    pub num_scanouts: u32,
    /// Most host memory all resources together may use, in bytes.
    pub max_hostmem: u64,
    /// Most resources alive at once.
    pub max_resources: usize,
    /// Most contexts alive at once.
    pub max_contexts: usize,
    /// Offer `VIRTIO_GPU_F_EDID`.
    pub edid: bool,
    /// Width of scanout 0 when the display cannot tell.
    pub default_width: u32,
    /// Height of scanout 0 when the display cannot tell.
    pub default_height: u32,
}

impl Default for GpuConfig {
    fn default() -> Self {
        GpuConfig {
            num_scanouts: 1,
            max_hostmem: 256 << 20,
            max_resources: 16384,
            max_contexts: 1024,
            edid: true,
            default_width: 1024,
            default_height: 768,
        }
    }
}

/// Which virtqueue a chain came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QueueKind {
    /// Queue 0, controlq.
    Control,
    /// Queue 1, cursorq.
    Cursor,
}

/// A used-ring entry to publish: the chain's head index and the bytes written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UsedEntry {
    /// The queue.
    pub queue: QueueKind,
    /// Head descriptor index of the chain.
    pub head_index: u16,
    /// Bytes written into the chain's writable part.
    pub len: u32,
}

/// The virtio-gpu device.
pub struct VirtioGpu {
    renderer: Box<dyn Renderer>,
    config: GpuConfig,
}

impl VirtioGpu {
    /// A device on `renderer` with `config`.
    pub fn new(renderer: Box<dyn Renderer>, config: GpuConfig) -> Self {
        VirtioGpu { renderer, config }
    }

    /// VIRTIO_GPU_F_* bits this device offers (what the renderer really supports).
    pub fn device_features(&self) -> u64 {
        0
    }

    /// The virtio-gpu config space (virtio_gpu_config, little endian bytes).
    pub fn config_space(&self) -> Vec<u8> {
        protocol::encode_config(self.config.num_scanouts, 0, 0)
    }

    /// Decode, validate and execute one chain; the response is written into the chain's
    /// writable descriptors at once. Returns Some(entry) to publish now, or None when the
    /// command carries a fence that has not completed yet (published later by `poll_fences`).
    pub fn process_chain<M>(
        &mut self,
        queue: QueueKind,
        chain: DescriptorChain<M>,
        display: &mut dyn Display,
    ) -> Option<UsedEntry>
    where
        M: Deref<Target = GuestMemoryMmap> + Clone,
    {
        let _ = display;
        let head_index = chain.head_index();
        let mem = chain.memory();
        let len = match protocol::split_chain(&chain, mem) {
            Ok((_, mut w)) => {
                let bytes = Response::Err(ErrorCode::Unspec).encode(None);
                if w.available_bytes() >= bytes.len() {
                    use std::io::Write;
                    w.write_all(&bytes).map(|_| bytes.len() as u32).unwrap_or(0)
                } else {
                    0
                }
            }
            Err(_) => 0,
        };
        Some(UsedEntry {
            queue,
            head_index,
            len,
        })
    }

    /// The renderer's fence poll fd (register it in the epoll loop), if it has one.
    pub fn fence_poll_fd(&self) -> Option<BorrowedFd<'_>> {
        self.renderer.poll_fd()
    }

    /// Let the renderer process completions and return every held entry whose fence has
    /// completed (all entries with id <= completed id on the same (ctx, ring) timeline).
    pub fn poll_fences(&mut self) -> Vec<UsedEntry> {
        let _ = self.renderer.poll();
        Vec::new()
    }

    /// Guest reset / frontend disconnect: drop every resource, context, scanout and pending
    /// fence.
    pub fn reset(&mut self) {
        self.renderer.reset();
    }
}
