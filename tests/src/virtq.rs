//! The driver side of a split virtqueue laid out in shared guest memory.
//!
//! Layout (virtio 1.x, 2.7): descriptor table (16 bytes per entry, 16-aligned), available ring
//! (`flags, idx, ring[N], used_event`, 2-aligned) and used ring (`flags, idx, ring[N] of {id, len},
//! avail_event`, 4-aligned). The driver publishes a chain by writing its descriptors, then the
//! ring slot, then (release) the avail index; it reads the used index with acquire ordering.
//! No indirect descriptors. With VIRTIO_RING_F_EVENT_IDX the driver keeps `used_event` (the
//! avail ring's last field) equal to the next used index it has not seen, so that every new used
//! entry is signalled; kicks are sent unconditionally (an extra kick is harmless).

use std::collections::HashMap;
use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::error::{Error, Result};
use crate::memory::GuestMemory;
use crate::poll::wait_readable;

/// VIRTQ_DESC_F_NEXT.
pub const DESC_F_NEXT: u16 = 1;
/// VIRTQ_DESC_F_WRITE.
pub const DESC_F_WRITE: u16 = 2;
/// Largest queue size the driver builds.
pub const MAX_QUEUE_SIZE: u16 = 32768;

/// One buffer of a chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Desc {
    /// Guest address.
    pub addr: u64,
    /// Length in bytes.
    pub len: u32,
    /// Device-writable.
    pub writable: bool,
}

/// A used-ring entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Used {
    /// Head descriptor index of the chain.
    pub head: u16,
    /// Bytes the device wrote.
    pub len: u32,
}

/// The guest addresses of one queue's three parts.
#[derive(Clone, Copy, Debug)]
pub struct QueueLayout {
    /// Number of entries.
    pub size: u16,
    /// Descriptor table.
    pub desc: u64,
    /// Available ring.
    pub avail: u64,
    /// Used ring.
    pub used: u64,
}

impl QueueLayout {
    /// Bytes needed for a queue of `size` entries laid out contiguously (with alignment).
    pub fn bytes(size: u16) -> u64 {
        let n = u64::from(size);
        let desc = 16 * n;
        let avail = 6 + 2 * n;
        let used = 6 + 8 * n;
        (desc + avail).next_multiple_of(4) + used
    }

    /// Lay a queue out at `base` (16-aligned).
    pub fn at(base: u64, size: u16) -> Self {
        let n = u64::from(size);
        let desc = base;
        let avail = desc + 16 * n;
        let used = (avail + 6 + 2 * n).next_multiple_of(4);
        QueueLayout {
            size,
            desc,
            avail,
            used,
        }
    }
}

/// A split virtqueue, driver side.
pub struct SplitQueue {
    mem: Arc<GuestMemory>,
    layout: QueueLayout,
    free: Vec<u16>,
    chains: HashMap<u16, Vec<u16>>,
    next_avail: u16,
    last_used: u16,
    done: HashMap<u16, u32>,
    kick: EventFd,
    call: EventFd,
    event_idx: bool,
    signals: u64,
}

impl SplitQueue {
    /// Allocate and zero a queue of `size` entries (a power of two) in `mem`.
    pub fn new(mem: Arc<GuestMemory>, size: u16) -> Result<Self> {
        Self::with_base(mem, size, 0, false)
    }

    /// A queue whose avail and used indices start at `base` (what SET_VRING_BASE tells the
    /// device; a base near 65535 makes the free-running u16 indices wrap early), maintaining
    /// `used_event` when `event_idx` was negotiated.
    pub fn with_base(mem: Arc<GuestMemory>, size: u16, base: u16, event_idx: bool) -> Result<Self> {
        if !size.is_power_of_two() || size > MAX_QUEUE_SIZE {
            return Err(Error::Memory(format!("bad queue size {size}")));
        }
        let at = mem.alloc(QueueLayout::bytes(size), 4096)?;
        let layout = QueueLayout::at(at, size);
        let kick = EventFd::new(EFD_NONBLOCK).map_err(|e| Error::io("eventfd", e))?;
        let call = EventFd::new(EFD_NONBLOCK).map_err(|e| Error::io("eventfd", e))?;
        mem.store_u16(layout.avail + 2, base, Ordering::Release)?;
        mem.store_u16(layout.used + 2, base, Ordering::Release)?;
        let q = SplitQueue {
            mem,
            layout,
            free: (0..size).rev().collect(),
            chains: HashMap::new(),
            next_avail: base,
            last_used: base,
            done: HashMap::new(),
            kick,
            call,
            event_idx,
            signals: 0,
        };
        q.publish_used_event()?;
        Ok(q)
    }

    /// With EVENT_IDX: ask to be signalled for the next used entry (`used_event = last_used`).
    fn publish_used_event(&self) -> Result<()> {
        if self.event_idx {
            let at = self.layout.avail + 4 + 2 * u64::from(self.layout.size);
            self.mem.store_u16(at, self.last_used, Ordering::Release)?;
            fence(Ordering::SeqCst);
        }
        Ok(())
    }

    /// How many times the call eventfd fired while the driver waited.
    pub fn signals(&self) -> u64 {
        self.signals
    }

    /// The layout.
    pub fn layout(&self) -> QueueLayout {
        self.layout
    }

    /// The kick eventfd (given to the backend with SET_VRING_KICK).
    pub fn kick_fd(&self) -> &EventFd {
        &self.kick
    }

    /// The call eventfd (given to the backend with SET_VRING_CALL).
    pub fn call_fd(&self) -> &EventFd {
        &self.call
    }

    /// The next avail index the driver will publish (for SET_VRING_BASE after a restart).
    pub fn avail_idx(&self) -> u16 {
        self.next_avail
    }

    /// Descriptors not in flight.
    pub fn free_descriptors(&self) -> usize {
        self.free.len()
    }

    /// Chains published and not yet collected.
    pub fn in_flight(&self) -> usize {
        self.chains.len()
    }

    /// Write a chain's descriptors and publish it in the avail ring (no kick). Returns the head.
    pub fn add_chain(&mut self, descs: &[Desc]) -> Result<u16> {
        if descs.is_empty() {
            return Err(Error::Memory("empty chain".into()));
        }
        if descs.len() > self.free.len() {
            return Err(Error::Exhausted("descriptors"));
        }
        let ids: Vec<u16> = (0..descs.len()).filter_map(|_| self.free.pop()).collect();
        for (i, d) in descs.iter().enumerate() {
            let mut flags = if d.writable { DESC_F_WRITE } else { 0 };
            let next = if i + 1 < ids.len() {
                flags |= DESC_F_NEXT;
                ids[i + 1]
            } else {
                0
            };
            let mut raw = [0u8; 16];
            raw[0..8].copy_from_slice(&d.addr.to_le_bytes());
            raw[8..12].copy_from_slice(&d.len.to_le_bytes());
            raw[12..14].copy_from_slice(&flags.to_le_bytes());
            raw[14..16].copy_from_slice(&next.to_le_bytes());
            self.mem
                .write(self.layout.desc + 16 * u64::from(ids[i]), &raw)?;
        }
        let head = ids[0];
        let slot = u64::from(self.next_avail % self.layout.size);
        self.mem
            .write(self.layout.avail + 4 + 2 * slot, &head.to_le_bytes())?;
        self.next_avail = self.next_avail.wrapping_add(1);
        fence(Ordering::SeqCst);
        self.mem
            .store_u16(self.layout.avail + 2, self.next_avail, Ordering::Release)?;
        self.chains.insert(head, ids);
        Ok(head)
    }

    /// Notify the device.
    pub fn kick(&self) -> Result<()> {
        self.kick.write(1).map_err(|e| Error::io("kick eventfd", e))
    }

    /// Collect every new used entry (freeing its descriptors) into the done set.
    pub fn collect_used(&mut self) -> Result<Vec<Used>> {
        let mut out = Vec::new();
        loop {
            let before = out.len();
            self.collect_used_up_to_idx(&mut out)?;
            if out.len() == before {
                return Ok(out);
            }
            // With EVENT_IDX a driver re-checks the ring after moving used_event: the device
            // may have published more entries (and decided not to signal them) before it could
            // see the new value, as Linux's virtqueue_enable_cb does.
            self.publish_used_event()?;
        }
    }

    fn collect_used_up_to_idx(&mut self, out: &mut Vec<Used>) -> Result<()> {
        let idx = self.mem.load_u16(self.layout.used + 2, Ordering::Acquire)?;
        while self.last_used != idx {
            let slot = u64::from(self.last_used % self.layout.size);
            let e = self.mem.read(self.layout.used + 4 + 8 * slot, 8)?;
            let id = u32::from_le_bytes([e[0], e[1], e[2], e[3]]);
            let len = u32::from_le_bytes([e[4], e[5], e[6], e[7]]);
            self.last_used = self.last_used.wrapping_add(1);
            let head = u16::try_from(id)
                .ok()
                .filter(|h| self.chains.contains_key(h))
                .ok_or_else(|| {
                    Error::Malformed(format!("used id {id} is not a chain in flight"))
                })?;
            if let Some(ids) = self.chains.remove(&head) {
                self.free.extend(ids);
            }
            self.done.insert(head, len);
            out.push(Used { head, len });
        }
        Ok(())
    }

    /// Has the chain at `head` been used? Returns its length, without waiting.
    pub fn try_take(&mut self, head: u16) -> Result<Option<u32>> {
        self.collect_used()?;
        Ok(self.done.remove(&head))
    }

    /// Wait until the chain at `head` is used, at most `timeout`. The used ring is also polled
    /// every 50 ms, so a device that forgets to signal is slow here, not stuck (see
    /// [`SplitQueue::wait_signalled`]).
    pub fn wait_for(&mut self, head: u16, timeout: Duration) -> Result<u32> {
        self.wait(head, timeout, true)
    }

    /// Like [`SplitQueue::wait_for`], but the used ring is only looked at after the call
    /// eventfd fired: a device that publishes without signalling makes this time out.
    pub fn wait_signalled(&mut self, head: u16, timeout: Duration) -> Result<u32> {
        self.wait(head, timeout, false)
    }

    fn wait(&mut self, head: u16, timeout: Duration, poll: bool) -> Result<u32> {
        let deadline = Instant::now() + timeout;
        // Signalled mode looks at the ring only after a signal (entries collected earlier are
        // in `done`).
        let mut look = poll;
        loop {
            if look {
                if let Some(len) = self.try_take(head)? {
                    return Ok(len);
                }
            } else if let Some(len) = self.done.remove(&head) {
                return Ok(len);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::Timeout {
                    what: format!(
                        "used entry for head {head}{}",
                        if poll { "" } else { " (signalled)" }
                    ),
                    timeout_ms: timeout.as_millis(),
                });
            }
            let slice = if poll {
                left.min(Duration::from_millis(50))
            } else {
                left
            };
            let fired = wait_readable(&self.call, slice)?;
            if fired {
                // Non-blocking: EAGAIN just means someone else consumed it.
                if self.call.read().is_ok() {
                    self.signals += 1;
                }
            }
            look = poll || fired;
        }
    }

    /// Forget in-flight state (after the backend was stopped and the ring is to be reused from
    /// scratch: GET_VRING_BASE then a new SET_VRING_BASE with [`SplitQueue::avail_idx`]).
    pub fn used_idx(&self) -> u16 {
        self.last_used
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_and_publish() {
        let mem = Arc::new(GuestMemory::new(8 << 20).unwrap());
        let mut q = SplitQueue::new(mem.clone(), 8).unwrap();
        let l = q.layout();
        assert_eq!(l.avail, l.desc + 128);
        assert_eq!(l.used % 4, 0);
        let h = q
            .add_chain(&[
                Desc {
                    addr: 0x10000,
                    len: 24,
                    writable: false,
                },
                Desc {
                    addr: 0x20000,
                    len: 24,
                    writable: true,
                },
            ])
            .unwrap();
        assert_eq!(mem.load_u16(l.avail + 2, Ordering::Acquire).unwrap(), 1);
        let d = mem.read(l.desc + 16 * u64::from(h), 16).unwrap();
        assert_eq!(u16::from_le_bytes([d[12], d[13]]), DESC_F_NEXT);
        // Play the device: publish used {h, 24}.
        mem.write(l.used + 4, &[h as u8, 0, 0, 0, 24, 0, 0, 0])
            .unwrap();
        mem.store_u16(l.used + 2, 1, Ordering::Release).unwrap();
        assert_eq!(q.wait_for(h, Duration::from_millis(100)).unwrap(), 24);
        assert_eq!(q.free_descriptors(), 8);
    }
}
