//! Resource and context churn: thousands of create/unref cycles must not grow fds or memory.

mod common;

use virglrenderer::format::B8G8R8A8_UNORM;
use virglrenderer::{Rect, Transfer, VirglRenderer};

/// Allowed RSS growth over the measured phase. A leak of one 64x64 texture's storage (16 KiB)
/// or its backing per cycle would be 80 MiB over 5000 cycles; allocator noise stays far below.
const MAX_RSS_GROWTH_KIB: u64 = 8 * 1024;
const CYCLES: u32 = 5000;

fn cycle(r: &VirglRenderer, ctx: &virglrenderer::Context, i: u32) {
    let id = 100 + (i % 7); // ids are reused all the time
    let res = r.create_resource_2d(id, B8G8R8A8_UNORM, 64, 64).unwrap();
    res.attach_backing(Box::new(common::pattern(64 * 64 * 4, i)))
        .unwrap();
    ctx.attach(&res).unwrap();
    res.transfer_write(
        None,
        &Transfer::rect_2d(
            Rect {
                x: 0,
                y: 0,
                width: 64,
                height: 64,
            },
            0,
        ),
    )
    .unwrap();
    drop(res);
}

#[test]
fn resource_churn_does_not_leak() {
    let _lock = common::lock();
    let r = common::renderer();
    let ctx = r.create_context(1, b"churn", None).unwrap();
    // Warm up caches and allocator pools first.
    for i in 0..500 {
        cycle(&r, &ctx, i);
    }
    let _ = r.poll();
    let fds_before = common::open_fds();
    let rss_before = common::rss_kib();
    for i in 0..CYCLES {
        cycle(&r, &ctx, i);
        if i % 100 == 0 {
            let _ = r.poll();
        }
    }
    let _ = r.poll();
    let fds_after = common::open_fds();
    let rss_after = common::rss_kib();
    eprintln!("fds {fds_before} -> {fds_after}, VmRSS {rss_before} KiB -> {rss_after} KiB");
    assert!(
        fds_after <= fds_before,
        "fd leak: {fds_before} -> {fds_after}"
    );
    assert!(
        rss_after <= rss_before + MAX_RSS_GROWTH_KIB,
        "memory grew from {rss_before} KiB to {rss_after} KiB"
    );
}

#[test]
fn context_churn_does_not_leak() {
    let _lock = common::lock();
    let r = common::renderer();
    for i in 0..200 {
        drop(r.create_context(1 + i % 5, b"warm", None).unwrap());
    }
    let fds_before = common::open_fds();
    let rss_before = common::rss_kib();
    for i in 0..1000 {
        let ctx = r.create_context(1 + i % 5, b"churn", None).unwrap();
        drop(ctx);
    }
    let fds_after = common::open_fds();
    let rss_after = common::rss_kib();
    eprintln!("fds {fds_before} -> {fds_after}, VmRSS {rss_before} KiB -> {rss_after} KiB");
    assert!(fds_after <= fds_before);
    assert!(rss_after <= rss_before + MAX_RSS_GROWTH_KIB);
}
