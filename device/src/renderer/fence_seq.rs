//! Library fence ids for the guest's fences.
//!
//! A renderer library that reports completions asynchronously (gfxstream signals them from its
//! own threads, into a process-global table) can report a fence of the previous guest after a
//! reset, when the next guest's fences on the same timeline reuse the same ids. Handing the
//! library ids of our own, never reused, instead of the guest's makes such a late completion
//! name no pending fence: it is dropped instead of releasing the next guest's commands early.

use std::collections::{HashMap, VecDeque};

use super::FenceId;

/// A timeline: (context, ring), the global one (0, `None`).
type Timeline = (u32, Option<u8>);

/// The guest's pending fences per timeline, each with the library id it was created with.
#[derive(Debug)]
pub struct FenceSeq {
    next: u64,
    pending: HashMap<Timeline, VecDeque<(u64, FenceId)>>,
}

/// `fence` as its timeline names it: global fences (no ring) belong to no context.
fn on_timeline(fence: FenceId) -> FenceId {
    match fence.ring_idx {
        Some(_) => fence,
        None => FenceId { ctx_id: 0, ..fence },
    }
}

impl Default for FenceSeq {
    fn default() -> Self {
        FenceSeq {
            next: 1,
            pending: HashMap::new(),
        }
    }
}

impl FenceSeq {
    /// The library id for `fence` (fresh: ids increase for the life of the value, across
    /// [`clear`](Self::clear)), recorded as pending on its timeline.
    pub fn issue(&mut self, fence: FenceId) -> u64 {
        let id = self.next;
        self.next = self.next.wrapping_add(1).max(1);
        let fence = on_timeline(fence);
        self.pending
            .entry((fence.ctx_id, fence.ring_idx))
            .or_default()
            .push_back((id, fence));
        id
    }

    /// Forgets the fence last [`issue`](Self::issue)d on its timeline (the library refused it).
    pub fn withdraw(&mut self, fence: FenceId) {
        let fence = on_timeline(fence);
        if let Some(q) = self.pending.get_mut(&(fence.ctx_id, fence.ring_idx)) {
            q.pop_back();
        }
    }

    /// The library completed `id` on timeline (`ctx_id`, `ring_idx`; the global one is (0,
    /// `None`)): that fence and every earlier one of the timeline, in order. An id no pending fence has (a completion from
    /// before [`clear`](Self::clear), or a repeated one) completes nothing.
    pub fn complete(&mut self, ctx_id: u32, ring_idx: Option<u8>, id: u64) -> Vec<FenceId> {
        let Some(q) = self.pending.get_mut(&(ctx_id, ring_idx)) else {
            return Vec::new();
        };
        if !q.iter().any(|&(i, _)| i == id) {
            return Vec::new();
        }
        let mut done = Vec::new();
        while let Some((i, fence)) = q.pop_front() {
            done.push(fence);
            if i == id {
                break;
            }
        }
        done
    }

    /// Forgets every pending fence (device reset); ids keep increasing.
    pub fn clear(&mut self) {
        self.pending.clear();
    }

    /// How many fences are pending.
    pub fn len(&self) -> usize {
        self.pending.values().map(VecDeque::len).sum()
    }

    /// Whether no fence is pending.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fence(ctx_id: u32, ring_idx: Option<u8>, id: u64) -> FenceId {
        FenceId {
            ctx_id,
            ring_idx,
            id,
        }
    }

    #[test]
    fn completions_release_their_timeline_in_order() {
        let mut s = FenceSeq::default();
        let a1 = s.issue(fence(2, Some(0), 1));
        let a2 = s.issue(fence(2, Some(0), 2));
        let b1 = s.issue(fence(2, Some(1), 1));
        let g = s.issue(fence(3, None, 7)); // a global fence, whatever context sent it
        assert_eq!(s.len(), 4);
        assert_eq!(
            s.complete(2, Some(0), a2),
            vec![fence(2, Some(0), 1), fence(2, Some(0), 2)]
        );
        assert!(s.complete(2, Some(0), a1).is_empty(), "already released");
        assert!(
            s.complete(2, Some(1), a1).is_empty(),
            "another timeline's id"
        );
        assert_eq!(s.complete(2, Some(1), b1), vec![fence(2, Some(1), 1)]);
        assert_eq!(s.complete(0, None, g), vec![fence(0, None, 7)]);
        assert!(s.is_empty());
    }

    /// A completion the library reports after a reset, for a fence of the guest before it,
    /// does not release the next guest's fence with the same guest id.
    #[test]
    fn a_completion_from_before_a_reset_releases_nothing() {
        let mut s = FenceSeq::default();
        let old = s.issue(fence(2, Some(0), 5));
        s.clear();
        let new = s.issue(fence(2, Some(0), 5));
        assert_ne!(old, new);
        assert!(s.complete(2, Some(0), old).is_empty());
        assert_eq!(s.len(), 1);
        assert_eq!(s.complete(2, Some(0), new), vec![fence(2, Some(0), 5)]);
    }

    #[test]
    fn a_withdrawn_fence_is_not_pending() {
        let mut s = FenceSeq::default();
        let id = s.issue(fence(1, Some(3), 9));
        s.withdraw(fence(1, Some(3), 9));
        assert!(s.is_empty());
        assert!(s.complete(1, Some(3), id).is_empty());
    }
}
