//! Fences: global and per-context, delivered in order through `poll`, and the THREAD_SYNC fd.

mod common;

use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use virglrenderer::format::B8G8R8A8_UNORM;
use virglrenderer::protocol::{CommandBuffer, PIPE_CLEAR_COLOR0};
use virglrenderer::{Error, Fence, RendererFlags, ResourceCreate3d, VirglRenderer};

/// Polls until `pred` holds for the fences collected so far (or 10 s pass).
fn collect_until(r: &VirglRenderer, pred: impl Fn(&[Fence]) -> bool) -> Vec<Fence> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut all = Vec::new();
    while !pred(&all) {
        assert!(Instant::now() < deadline, "fences not signalled: {all:?}");
        all.extend(r.poll());
        std::thread::sleep(Duration::from_millis(1));
    }
    all
}

fn busy_work(r: &VirglRenderer, ctx: &virglrenderer::Context, id: u32) -> virglrenderer::Resource {
    let res = r
        .create_resource(id, &ResourceCreate3d::texture_2d(B8G8R8A8_UNORM, 256, 256))
        .unwrap();
    ctx.attach(&res).unwrap();
    let mut cmd = CommandBuffer::new();
    cmd.create_surface(id, id, B8G8R8A8_UNORM, 0, 0, 0)
        .set_framebuffer_state(0, &[id])
        .clear(PIPE_CLEAR_COLOR0, [0.5, 0.5, 0.5, 1.0], 1.0, 0);
    ctx.submit(cmd.words()).unwrap();
    res
}

#[test]
fn global_fences_signal_in_order() {
    let _lock = common::lock();
    let r = common::renderer();
    let ctx = r.create_context(1, b"f", None).unwrap();
    let mut keep = Vec::new();
    for id in 1..=20u32 {
        keep.push(busy_work(&r, &ctx, id));
        r.create_fence(id).unwrap();
    }
    let got = collect_until(&r, |f| f.contains(&Fence::Global { fence_id: 20 }));
    let ids: Vec<u32> = got
        .iter()
        .map(|f| match f {
            Fence::Global { fence_id } => *fence_id,
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    // The library may report only the newest of several completed fences, but never out of
    // order and never twice.
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    assert_eq!(ids.last(), Some(&20));
    // Nothing more arrives.
    std::thread::sleep(Duration::from_millis(20));
    assert!(r.poll().is_empty());
}

#[test]
fn context_fences_signal_in_order() {
    let _lock = common::lock();
    let r = common::renderer();
    let a = r.create_context(1, b"a", None).unwrap();
    let b = r.create_context(2, b"b", None).unwrap();
    let mut keep = Vec::new();
    let big = 1u64 << 40; // u64 fence ids survive.
    for i in 1..=10u64 {
        keep.push(busy_work(&r, &a, i as u32));
        a.create_fence(0, big + i, false).unwrap();
        b.create_fence(0, i, false).unwrap();
    }
    let got = collect_until(&r, |f| {
        f.contains(&Fence::Context {
            ctx_id: 1,
            ring_idx: 0,
            fence_id: big + 10,
        }) && f.contains(&Fence::Context {
            ctx_id: 2,
            ring_idx: 0,
            fence_id: 10,
        })
    });
    for ctx in [1u32, 2] {
        let ids: Vec<u64> = got
            .iter()
            .filter_map(|f| match f {
                Fence::Context {
                    ctx_id, fence_id, ..
                } if *ctx_id == ctx => Some(*fence_id),
                _ => None,
            })
            .collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "ctx {ctx}: {ids:?}");
    }
    // Non-mergeable fences are each reported.
    assert_eq!(got.len(), 20, "{got:?}");
}

#[test]
fn virgl_contexts_have_one_ring() {
    let _lock = common::lock();
    let r = common::renderer();
    let a = r.create_context(1, b"a", None).unwrap();
    match a.create_fence(1, 1, false) {
        Err(Error::Library { errno, .. }) => assert_eq!(errno.0, libc::EINVAL),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        a.create_fence(64, 1, false),
        Err(Error::TooLarge { .. })
    ));
}

#[test]
fn no_poll_fd_without_thread_sync() {
    let _lock = common::lock();
    let r = common::renderer();
    assert!(r.poll_fd().is_none());
}

/// Waits on `fd` and drains `poll()` until every fence of `want` arrived (or 10 s pass).
fn poll_fd_until(r: &VirglRenderer, fd: i32, want: &[Fence]) {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !want.iter().all(|w| got.contains(w)) {
        assert!(Instant::now() < deadline, "fences not signalled: {got:?}");
        // SAFETY: one valid pollfd on the stack.
        let n = unsafe { libc::poll(&mut pfd, 1, 1000) };
        assert!(n >= 0);
        if n > 0 {
            assert!(pfd.revents & libc::POLLIN != 0);
            got.extend(r.poll());
        }
    }
}

/// With ASYNC_FENCE_CB the callbacks run on the library's threads and signal this crate's own
/// eventfd, for global and per-context fences alike.
#[test]
fn async_fence_callbacks_signal_the_crates_poll_fd() {
    let _lock = common::lock();
    let r = common::renderer_with(RendererFlags::THREAD_SYNC | RendererFlags::ASYNC_FENCE_CB);
    let fd = r
        .poll_fd()
        .expect("ASYNC_FENCE_CB gives a poll fd")
        .as_raw_fd();
    let ctx = r.create_context(1, b"async", None).unwrap();
    let _res = busy_work(&r, &ctx, 1);
    r.create_fence(5).unwrap();
    ctx.create_fence(0, 9, false).unwrap();
    let want = [
        Fence::Global { fence_id: 5 },
        Fence::Context {
            ctx_id: 1,
            ring_idx: 0,
            fence_id: 9,
        },
    ];
    poll_fd_until(&r, fd, &want);
    // poll() consumed the wake-up: the fd is quiet until the next fence.
    std::thread::sleep(Duration::from_millis(20));
    assert!(r.poll().is_empty());
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd on the stack.
    let n = unsafe { libc::poll(&mut pfd, 1, 0) };
    assert_eq!(n, 0, "poll fd still readable after poll()");
}

#[test]
fn thread_sync_poll_fd_becomes_readable() {
    let _lock = common::lock();
    let r = common::renderer_with(RendererFlags::THREAD_SYNC);
    let fd = r
        .poll_fd()
        .expect("THREAD_SYNC gives a poll fd")
        .as_raw_fd();
    let ctx = r.create_context(1, b"ts", None).unwrap();
    let _res = busy_work(&r, &ctx, 1);
    r.create_fence(77).unwrap();
    poll_fd_until(&r, fd, &[Fence::Global { fence_id: 77 }]);
}
