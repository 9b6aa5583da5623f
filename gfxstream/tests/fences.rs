//! Fences: global and per-context, inline and from library threads, handed over by eventfd.

#[macro_use]
mod common;

#[cfg(gfxstream_found)]
use gfxstream::{bind, format, target, Capset, Error, FenceRing, ResourceCreateArgs};

library_test! {
    /// A fence on the global timeline and one on a context ring are both delivered, with their
    /// timeline and id, and the eventfd wakes the waiter.
    fn global_and_context_fences_are_delivered() {
        let gfx = common::init();
        let ctx = gfx.create_context(3, "fences", Some(Capset::Gles)).expect("context");
        let ring = FenceRing::Context { ctx_id: 3, ring_idx: 2 };
        gfx.create_fence(FenceRing::Global, 11).expect("global fence");
        gfx.create_fence(ring, 42).expect("context fence");
        let got = common::wait_fences(&gfx, |f| f.len() >= 2);
        assert!(got.iter().any(|f| f.ring == FenceRing::Global && f.fence_id == 11), "{got:?}");
        assert!(got.iter().any(|f| f.ring == ring && f.fence_id == 42), "{got:?}");
        // Later fences on the same timeline report the higher id.
        gfx.create_fence(ring, 43).expect("fence");
        gfx.create_fence(ring, 44).expect("fence");
        let got = common::wait_fences(&gfx, |f| f.iter().any(|f| f.fence_id == 44));
        assert!(got.iter().any(|f| f.ring == ring && f.fence_id == 44), "{got:?}");
        assert!(gfx.completed_fences().is_empty());

        // Refused: a ring of no context, an index past 63.
        let err = gfx.create_fence(FenceRing::Context { ctx_id: 9, ring_idx: 0 }, 1);
        assert!(matches!(err, Err(Error::UnknownContext(9))), "{err:?}");
        let err = gfx.create_fence(FenceRing::Context { ctx_id: 3, ring_idx: 64 }, 1);
        assert!(matches!(err, Err(Error::InvalidRingIndex(64))), "{err:?}");
        drop(ctx);
    }
}

library_test! {
    /// A fence behind GPU work (a flush posts the colour buffer on a library thread) is
    /// delivered asynchronously, after the work.
    fn fence_behind_gpu_work_is_delivered() {
        let gfx = common::init();
        let args = ResourceCreateArgs {
            target: target::PIPE_TEXTURE_2D,
            format: format::B8G8R8A8_UNORM,
            bind: bind::SAMPLER_VIEW | bind::RENDER_TARGET | bind::SCANOUT,
            width: 32,
            height: 32,
            depth: 1,
            array_size: 1,
            ..ResourceCreateArgs::default()
        };
        let res = gfx.create_resource(1, &args).expect("resource");
        res.flush();
        gfx.create_fence(FenceRing::Global, 5).expect("fence");
        let got = common::wait_fences(&gfx, |f| !f.is_empty());
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].ring, FenceRing::Global);
        assert_eq!(got[0].fence_id, 5);
    }
}
