//! Fenced commands: the used entries held until the renderer completes their fence, per
//! timeline, and their release ([`VirtioGpu::poll_fences`]).
//!
//! # Decisions
//!
//! * **Fences.** A command with `VIRTIO_GPU_FLAG_FENCE` (successful or not) gets a renderer fence
//!   on its timeline: `(ctx_id, ring_idx)` with `VIRTIO_GPU_FLAG_INFO_RING_IDX` (made by that
//!   context's `RenderContext`), else the global timeline (made by the `Renderer`). Its response
//!   is written at once but the used entry is held until the renderer reports a fence with an id
//!   `>=` on that timeline (the spec's rule), so an error never overtakes earlier fenced work.
//!   Only when the renderer refuses the fence (or the ring's context does not exist) is the entry
//!   published at once. Destroying a context releases the entries held on its rings.
//! * **Budget.** Each held entry is charged to the host memory budget (`HELD_FENCE_BYTES`)
//!   before its command runs (`VirtioGpu::charge_fence`); over the budget the command is
//!   refused with ERR_OUT_OF_MEMORY and answered at once, unless it only frees memory (UNREF,
//!   DETACH_BACKING, CTX_DESTROY, CTX_DETACH_RESOURCE, UNMAP_BLOB), which runs and is held
//!   uncharged. The charge goes back when the entry is released.

use std::os::fd::BorrowedFd;

use super::budget::Charge;
use super::{UsedEntry, VirtioGpu};
use crate::protocol::{self, CtrlHeader};
use crate::renderer::{FenceId, RendererError};

pub use crate::limits::MAX_HELD_FENCES;

/// A fence timeline: `(ctx_id, Some(ring))`, or `(0, None)` for the global one.
pub(super) type TimelineKey = (u32, Option<u8>);

fn timeline(fence: &FenceId) -> TimelineKey {
    match fence.ring_idx {
        Some(r) => (fence.ctx_id, Some(r)),
        None => (0, None),
    }
}

#[derive(Debug)]
/// A fenced command's used entry, held until its fence completes.
pub(super) struct HeldEntry {
    fence_id: u64,
    entry: UsedEntry,
    /// Its charge to the host memory budget (none for an uncharged command that frees memory).
    pub(super) charge: Option<Charge>,
}

impl VirtioGpu {
    /// The renderer's fence poll fd (register it in the epoll loop), if it has one.
    pub fn fence_poll_fd(&self) -> Option<BorrowedFd<'_>> {
        self.renderer.poll_fd()
    }

    /// Let the renderer process completions and return every held entry whose fence has
    /// completed (all entries with id <= completed id on the same (ctx, ring) timeline).
    pub fn poll_fences(&mut self) -> Vec<UsedEntry> {
        self.collect_completions();
        std::mem::take(&mut self.ready)
    }

    /// Holds the used entry of a fenced command until its fence completes; returns it when it
    /// must be published at once (fence already complete, refused, on no valid timeline, or
    /// more than [`MAX_HELD_FENCES`] held).
    pub(super) fn hold_fenced(
        &mut self,
        header: &CtrlHeader,
        used: UsedEntry,
        charge: Option<Charge>,
    ) -> Option<UsedEntry> {
        let fence = FenceId {
            ctx_id: header.ctx_id,
            ring_idx: header.ring(),
            id: header.fence_id,
        };
        if fence.ring_idx.is_some_and(|r| r >= protocol::MAX_RINGS) {
            // Already answered ERR_INVALID_PARAMETER; there is no such timeline to wait on.
            self.budget.release_opt(charge);
            return Some(used);
        }
        let held: usize = self.pending.values().map(Vec::len).sum();
        if held >= MAX_HELD_FENCES {
            self.guest_error(format_args!(
                "fence {fence:?}: {held} fenced commands already held (more than the queues \
                 hold); answering at once"
            ));
            self.budget.release_opt(charge);
            return Some(used);
        }
        let created = match fence.ring_idx {
            None => self.renderer.create_fence(fence.ctx_id, fence.id),
            Some(ring) => match self.contexts.get_mut(&fence.ctx_id) {
                Some(c) => c.render.create_fence(ring, fence.id),
                None => Err(RendererError::InvalidContextId(fence.ctx_id)),
            },
        };
        if let Err(e) = created {
            // E.g. a fenced command of a context that does not exist: the guest's doing.
            self.guest_error(format_args!(
                "fence {fence:?} refused ({e}); answering at once"
            ));
            self.budget.release_opt(charge);
            return Some(used);
        }
        self.pending
            .entry(timeline(&fence))
            .or_default()
            .push(HeldEntry {
                fence_id: fence.id,
                entry: used,
                charge,
            });
        self.collect_completions();
        let pos = self.ready.iter().position(|e| *e == used)?;
        Some(self.ready.remove(pos))
    }

    /// Moves every held entry whose fence the renderer reports complete to `ready`, and gives
    /// its charge back.
    fn collect_completions(&mut self) {
        for done in self.renderer.poll() {
            let key = timeline(&done);
            let Some(list) = self.pending.remove(&key) else {
                continue;
            };
            let (complete, waiting): (Vec<HeldEntry>, Vec<HeldEntry>) =
                list.into_iter().partition(|h| h.fence_id <= done.id);
            for h in complete {
                self.ready.push(h.entry);
                self.budget.release_opt(h.charge);
            }
            if !waiting.is_empty() {
                self.pending.insert(key, waiting);
            }
        }
    }

    /// Releases every entry held on a ring of context `ctx` (being destroyed): `poll_fences`
    /// returns them.
    pub(super) fn release_context_rings(&mut self, ctx: u32) {
        let keys: Vec<TimelineKey> = self
            .pending
            .keys()
            .filter(|(c, r)| *c == ctx && r.is_some())
            .copied()
            .collect();
        for k in keys {
            for h in self.pending.remove(&k).unwrap_or_default() {
                self.ready.push(h.entry);
                self.budget.release_opt(h.charge);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::test_support::*;
    use crate::gpu::{GpuConfig, QueueKind, MAX_HELD_FENCES};
    use crate::limits::{CONTEXT_RECORD_BYTES, HELD_FENCE_BYTES, RESOURCE_RECORD_BYTES};
    use crate::protocol::tests::{hdr, le32s};
    use crate::protocol::*;

    #[test]
    fn fenced_commands_wait_for_their_fence() {
        let (mut h, log) = Harness::manual(GpuConfig::default());
        let dinfo = |fence| fenced(VIRTIO_GPU_CMD_GET_DISPLAY_INFO, &[], fence, 0, None);
        let a = h.send(&dinfo(1));
        let b = h.send(&dinfo(2));
        let c = h.send(&dinfo(3));
        assert!(a.used.is_none() && b.used.is_none() && c.used.is_none());
        // The response is already written, with the fence info.
        let ra = h.resp(&a, 24);
        assert_eq!(
            ra,
            hdr(
                VIRTIO_GPU_RESP_OK_DISPLAY_INFO,
                VIRTIO_GPU_FLAG_FENCE,
                1,
                0,
                0
            )
        );
        assert_eq!(log.borrow().fences.len(), 3);
        assert!(h.gpu.poll_fences().is_empty());
        // Completing fence 2 releases 1 and 2 (id <= 2), not 3.
        log.borrow_mut().complete.push(FenceId {
            ctx_id: 0,
            ring_idx: None,
            id: 2,
        });
        let released: Vec<u16> = h.gpu.poll_fences().iter().map(|e| e.head_index).collect();
        assert_eq!(released, vec![a.head, b.head]);
        assert!(h.gpu.poll_fences().is_empty());
        log.borrow_mut().complete.push(FenceId {
            ctx_id: 0,
            ring_idx: None,
            id: 3,
        });
        let released = h.gpu.poll_fences();
        assert_eq!(released.len(), 1);
        assert_eq!(released[0].head_index, c.head);
        assert_eq!(released[0].len, 408);
    }

    #[test]
    fn rings_are_independent_timelines() {
        let (mut h, log) = Harness::manual(GpuConfig::default());
        let mut cc = le32s(&[4, VIRTIO_GPU_CAPSET_VIRGL2]);
        cc.extend_from_slice(&[0u8; 64]);
        cc[8..12].copy_from_slice(b"test");
        let mut create = hdr(VIRTIO_GPU_CMD_CTX_CREATE, 0, 0, 1, 0);
        create.extend_from_slice(&cc);
        assert_eq!(h.cmd(&create), VIRTIO_GPU_RESP_OK_NODATA);
        assert_eq!(
            log.borrow().contexts,
            vec![(1, VIRTIO_GPU_CAPSET_VIRGL2, "test".to_string())]
        );
        let submit = |fence, ring| {
            let mut b = le32s(&[4, 0]);
            b.extend_from_slice(&[1, 2, 3, 4]);
            fenced(VIRTIO_GPU_CMD_SUBMIT_3D, &b, fence, 1, Some(ring))
        };
        let r0 = h.send(&submit(10, 0));
        let r1 = h.send(&submit(5, 1));
        let g = h.send(&fenced(VIRTIO_GPU_CMD_GET_DISPLAY_INFO, &[], 10, 1, None));
        assert!(r0.used.is_none() && r1.used.is_none() && g.used.is_none());
        assert_eq!(
            log.borrow().fences,
            vec![
                FenceId {
                    ctx_id: 1,
                    ring_idx: Some(0),
                    id: 10
                },
                FenceId {
                    ctx_id: 1,
                    ring_idx: Some(1),
                    id: 5
                },
                FenceId {
                    ctx_id: 1,
                    ring_idx: None,
                    id: 10
                },
            ]
        );
        assert_eq!(log.borrow().submits, vec![(1, vec![1, 2, 3, 4]); 2]);
        // The response header carries the ring.
        assert_eq!(
            h.resp(&r1, 24),
            hdr(
                VIRTIO_GPU_RESP_OK_NODATA,
                VIRTIO_GPU_FLAG_FENCE | VIRTIO_GPU_FLAG_INFO_RING_IDX,
                5,
                1,
                1
            )
        );
        // Ring 1 at 100 does not release ring 0 or the global timeline.
        log.borrow_mut().complete.push(FenceId {
            ctx_id: 1,
            ring_idx: Some(1),
            id: 100,
        });
        let rel = h.gpu.poll_fences();
        assert_eq!(
            rel.iter().map(|e| e.head_index).collect::<Vec<_>>(),
            vec![r1.head]
        );
        // Another context's ring 0 does not release context 1's ring 0.
        log.borrow_mut().complete.push(FenceId {
            ctx_id: 2,
            ring_idx: Some(0),
            id: 100,
        });
        assert!(h.gpu.poll_fences().is_empty());
        // Global completion releases the global entry only.
        log.borrow_mut().complete.push(FenceId {
            ctx_id: 0,
            ring_idx: None,
            id: 10,
        });
        assert_eq!(
            h.gpu
                .poll_fences()
                .iter()
                .map(|e| e.head_index)
                .collect::<Vec<_>>(),
            vec![g.head]
        );
        // Destroying the context answers what its rings still hold.
        let destroy = hdr(VIRTIO_GPU_CMD_CTX_DESTROY, 0, 0, 1, 0);
        assert_eq!(h.cmd(&destroy), VIRTIO_GPU_RESP_OK_NODATA);
        assert_eq!(
            h.gpu
                .poll_fences()
                .iter()
                .map(|e| e.head_index)
                .collect::<Vec<_>>(),
            vec![r0.head]
        );
    }

    #[test]
    fn held_fences_are_bounded() {
        // A guest re-posting descriptors the device still holds, with fences that never
        // complete: the held entries stop at MAX_HELD_FENCES, later ones are answered at once.
        let (mut h, log) = Harness::manual(GpuConfig::default());
        let dinfo = |fence| fenced(VIRTIO_GPU_CMD_GET_DISPLAY_INFO, &[], fence, 0, None);
        for fence in 0..MAX_HELD_FENCES as u64 {
            let r = h.send_on(QueueKind::Control, &dinfo(fence), 408);
            assert!(r.used.is_none(), "fenced command {fence} held");
        }
        let extra = h.send_on(QueueKind::Control, &dinfo(u64::MAX), 408);
        let used = extra.used.expect("answered at once beyond MAX_HELD_FENCES");
        assert_eq!((used.head_index, used.len), (extra.head, 408));
        assert_eq!(h.resp_type(&extra), VIRTIO_GPU_RESP_OK_DISPLAY_INFO);
        assert_eq!(log.borrow().fences.len(), MAX_HELD_FENCES);
        // Completing them releases every held entry; then fences are held again.
        log.borrow_mut().complete.push(FenceId {
            ctx_id: 0,
            ring_idx: None,
            id: u64::MAX,
        });
        assert_eq!(h.gpu.poll_fences().len(), MAX_HELD_FENCES);
        assert!(h.send_on(QueueKind::Control, &dinfo(1), 408).used.is_none());
    }

    #[test]
    fn fence_completed_immediately_is_published_at_once() {
        let (mut h, log) = Harness::manual(GpuConfig::default());
        // Pre-complete fence 7 on the global timeline: the renderer reports it at the first poll.
        log.borrow_mut().complete.push(FenceId {
            ctx_id: 0,
            ring_idx: None,
            id: 7,
        });
        let r = h.send(&fenced(VIRTIO_GPU_CMD_GET_DISPLAY_INFO, &[], 7, 0, None));
        assert_eq!(r.used.unwrap().head_index, r.head);
        // Software renderer: every fenced command completes at once.
        let mut s = Harness::software();
        let r = s.send(&fenced(
            VIRTIO_GPU_CMD_RESOURCE_CREATE_2D,
            &le32s(&[1, 1, 4, 4]),
            1,
            0,
            None,
        ));
        assert_eq!(r.used.unwrap().len, 24);
        assert_eq!(
            s.resp(&r, 24),
            hdr(VIRTIO_GPU_RESP_OK_NODATA, VIRTIO_GPU_FLAG_FENCE, 1, 0, 0)
        );
        // A refused fence is answered at once too.
        log.borrow_mut().refuse_fences = true;
        let r = h.send(&fenced(VIRTIO_GPU_CMD_GET_DISPLAY_INFO, &[], 8, 0, None));
        assert!(r.used.is_some());
    }

    #[test]
    fn failed_fenced_command_waits_for_earlier_work() {
        let (mut h, log) = Harness::manual(GpuConfig::default());
        let a = h.send(&fenced(VIRTIO_GPU_CMD_GET_DISPLAY_INFO, &[], 1, 0, None));
        // A bad command with fence 2: error response, held until fence 2 completes.
        let b = h.send(&fenced(
            VIRTIO_GPU_CMD_RESOURCE_FLUSH,
            &le32s(&[0, 0, 1, 1, 99, 0]),
            2,
            0,
            None,
        ));
        assert!(a.used.is_none() && b.used.is_none());
        assert_eq!(h.resp_type(&b), VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID);
        log.borrow_mut().complete.push(FenceId {
            ctx_id: 0,
            ring_idx: None,
            id: 2,
        });
        assert_eq!(h.gpu.poll_fences().len(), 2);
    }

    #[test]
    fn a_ring_fence_of_no_context_is_answered_at_once() {
        // Ring fences are made by the context; a command naming no live context has no ring
        // to wait on.
        let (mut h, log) = Harness::manual(GpuConfig::default());
        let r = h.send(&fenced(VIRTIO_GPU_CMD_GET_DISPLAY_INFO, &[], 1, 7, Some(0)));
        assert_eq!(r.used.map(|u| u.head_index), Some(r.head));
        assert_eq!(h.resp_type(&r), VIRTIO_GPU_RESP_OK_DISPLAY_INFO);
        assert!(log.borrow().fences.is_empty());
    }

    #[test]
    fn bad_ring_index_is_answered_at_once() {
        let (mut h, log) = Harness::manual(GpuConfig::default());
        let r = h.send(&hdr(
            VIRTIO_GPU_CMD_GET_DISPLAY_INFO,
            VIRTIO_GPU_FLAG_FENCE | VIRTIO_GPU_FLAG_INFO_RING_IDX,
            1,
            1,
            200,
        ));
        assert!(r.used.is_some());
        assert_eq!(h.resp_type(&r), VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER);
        assert!(log.borrow().fences.is_empty());
    }

    /// Each held entry is charged; at the limit a fenced command is refused (not run) with
    /// ERR_OUT_OF_MEMORY and answered at once, except one that frees memory; completion,
    /// CTX_DESTROY and reset give the charges back.
    #[test]
    fn held_fences_are_charged_and_refused_at_the_budget() {
        let limit = 3 * HELD_FENCE_BYTES + RESOURCE_RECORD_BYTES + 4;
        let (mut h, log) = Harness::manual(GpuConfig {
            max_hostmem: limit,
            ..GpuConfig::default()
        });
        assert_eq!(h.create_2d(1, 1, 1, 1), VIRTIO_GPU_RESP_OK_NODATA);
        let dinfo = |fence| fenced(VIRTIO_GPU_CMD_GET_DISPLAY_INFO, &[], fence, 0, None);
        for fence in 1..=3 {
            assert!(h.send(&dinfo(fence)).used.is_none(), "fence {fence} held");
        }
        assert_eq!(h.budget_used(), limit);
        // Over the budget: answered at once, with ERR_OUT_OF_MEMORY.
        let r = h.send(&dinfo(4));
        assert_eq!(r.used.map(|u| u.head_index), Some(r.head));
        assert_eq!(h.resp_type(&r), VIRTIO_GPU_RESP_ERR_OUT_OF_MEMORY);
        // A refused command does not run.
        let create = fenced(
            VIRTIO_GPU_CMD_RESOURCE_CREATE_2D,
            &le32s(&[2, 1, 1, 1]),
            4,
            0,
            None,
        );
        let r = h.send(&create);
        assert_eq!(h.resp_type(&r), VIRTIO_GPU_RESP_ERR_OUT_OF_MEMORY);
        assert!(r.used.is_some() && !h.gpu.resources.contains_key(&2));
        // One that frees memory runs, and is held (uncharged) behind the earlier fences.
        let unref = fenced(VIRTIO_GPU_CMD_RESOURCE_UNREF, &le32s(&[1, 0]), 5, 0, None);
        let r = h.send(&unref);
        assert!(r.used.is_none());
        assert_eq!(h.resp_type(&r), VIRTIO_GPU_RESP_OK_NODATA);
        assert!(!h.gpu.resources.contains_key(&1));
        assert_eq!(h.budget_used(), 3 * HELD_FENCE_BYTES);
        // Completion gives the charges back.
        log.borrow_mut().complete.push(FenceId {
            ctx_id: 0,
            ring_idx: None,
            id: 5,
        });
        assert_eq!(h.gpu.poll_fences().len(), 4);
        assert_eq!(h.budget_used(), 0);
        // So does CTX_DESTROY for the entries on its rings.
        let mut cc = le32s(&[4, VIRTIO_GPU_CAPSET_VIRGL2]);
        cc.extend_from_slice(&[0u8; 64]);
        let mut create = hdr(VIRTIO_GPU_CMD_CTX_CREATE, 0, 0, 1, 0);
        create.extend_from_slice(&cc);
        assert_eq!(h.cmd(&create), VIRTIO_GPU_RESP_OK_NODATA);
        for fence in 1..=2 {
            let r = h.send(&fenced(
                VIRTIO_GPU_CMD_SUBMIT_3D,
                &le32s(&[0, 0]),
                fence,
                1,
                Some(0),
            ));
            assert!(r.used.is_none());
        }
        assert_eq!(h.budget_used(), CONTEXT_RECORD_BYTES + 2 * HELD_FENCE_BYTES);
        let destroy = hdr(VIRTIO_GPU_CMD_CTX_DESTROY, 0, 0, 1, 0);
        assert_eq!(h.cmd(&destroy), VIRTIO_GPU_RESP_OK_NODATA);
        assert_eq!(h.gpu.poll_fences().len(), 2);
        assert_eq!(h.budget_used(), 0);
        // And reset.
        for fence in 6..=7 {
            assert!(h.send(&dinfo(fence)).used.is_none());
        }
        assert_eq!(h.budget_used(), 2 * HELD_FENCE_BYTES);
        h.gpu.reset();
        assert_eq!(h.budget_used(), 0);
    }
}
