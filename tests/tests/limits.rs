//! Bounds and queue handling: host memory accounting (--max-hostmem), a full virtqueue, ring
//! slots wrapping, many resources.

mod common;

use common::*;
use vhost_user_gpu_tests::protocol::{format, resp, Command, MemEntry, QueueId};
use vhost_user_gpu_tests::FrontendOptions;

fn max_hostmem_is_enforced_and_freed_on_unref(rd: Renderer) {
    if is_qemu() {
        return; // QEMU's backend has no --max-hostmem.
    }
    let p = spawn(&backend_command_for(rd).arg("--max-hostmem").arg("8M"));
    let mut fe = connect(&p, FrontendOptions::default());
    // 512x1024x4 = 2 MiB each: three fit in 8 MiB, a 4 MiB one then does not.
    for id in 1..=3 {
        fe.ok(&Command::resource_create_2d(
            id,
            format::B8G8R8X8_UNORM,
            512,
            1024,
        ))
        .check(&p, "create 2 MiB");
    }
    let r = fe
        .request(&Command::resource_create_2d(
            4,
            format::B8G8R8X8_UNORM,
            1024,
            1024,
        ))
        .unwrap();
    assert_resp(
        &r,
        resp::ERR_OUT_OF_MEMORY,
        "4 MiB beyond an 8 MiB limit with 6 MiB used",
        &p,
    );
    fe.ok(&Command::resource_unref(1)).check(&p, "unref");
    fe.ok(&Command::resource_unref(2)).check(&p, "unref");
    fe.ok(&Command::resource_create_2d(
        4,
        format::B8G8R8X8_UNORM,
        1024,
        1024,
    ))
    .check(&p, "4 MiB after freeing 4 MiB");
}

/// The daemon's anonymous resident memory (heap and anonymous mappings) in bytes.
fn rss_anon(p: &vhost_user_gpu_tests::BackendProcess) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", p.pid()))
        .unwrap_or_else(|e| panic!("status of the daemon: {e}"));
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no RssAnon in {status}"));
    kib << 10
}

/// Resources with the longest backing lists the protocol allows (16384 entries) are refused
/// once their lists' host memory reaches --max-hostmem (they used to be uncounted: 16384 such
/// resources held about 10 GiB of host heap under the default budget), the daemon's memory
/// stays within the budget, and unref and a reconnect (device reset) give it back.
fn long_backing_lists_are_refused_within_the_budget(rd: Renderer) {
    if is_qemu() {
        return; // QEMU's backend has no --max-hostmem.
    }
    const BUDGET: u64 = 16 << 20;
    let p = spawn(&backend_command_for(rd).arg("--max-hostmem").arg("16M"));
    let mut fe = connect(&p, FrontendOptions::default());
    // 16384 entries naming the same 4 bytes of one page of the connection's guest memory.
    let entries = |fe: &vhost_user_gpu_tests::GpuFrontend| {
        let addr = fe.memory().alloc(4096, 4096).unwrap();
        vec![MemEntry { addr, length: 4 }; 16384]
    };
    let list = entries(&fe);
    // Warm up (the renderer's first resource), then measure.
    fe.ok(&Command::resource_create_2d(
        1000,
        format::B8G8R8X8_UNORM,
        1,
        1,
    ))
    .check(&p, "warm-up create");
    fe.ok(&Command::attach_backing(1000, &list[..1]))
        .check(&p, "warm-up attach");
    fe.ok(&Command::resource_unref(1000))
        .check(&p, "warm-up unref");
    let before = rss_anon(&p);
    let fill = |fe: &mut vhost_user_gpu_tests::GpuFrontend, list: &[MemEntry]| -> u32 {
        for id in 1..=64u32 {
            fe.ok(&Command::resource_create_2d(
                id,
                format::B8G8R8X8_UNORM,
                1,
                1,
            ))
            .check(&p, "create 1x1");
            let r = fe.request(&Command::attach_backing(id, list)).unwrap();
            if r.hdr.ty != resp::OK_NODATA {
                assert_resp(&r, resp::ERR_OUT_OF_MEMORY, "a list past the budget", &p);
                return id - 1;
            }
        }
        panic!("64 lists of 16384 entries (128 MiB of host lists) were all accepted");
    };
    let attached = fill(&mut fe, &list);
    // Each list is charged 16384 x 128 bytes + 256: seven fit in 16 MiB with their records.
    assert_eq!(attached, 7, "lists accepted");
    let grown = rss_anon(&p).saturating_sub(before);
    eprintln!("daemon anonymous memory grew {grown} bytes for {attached} lists");
    assert!(grown <= BUDGET, "{grown} bytes past a {BUDGET}-byte budget");
    // Unref gives it back.
    for id in 1..=attached + 1 {
        fe.ok(&Command::resource_unref(id)).check(&p, "unref");
    }
    assert_eq!(fill(&mut fe, &list), attached, "lists accepted after unref");
    // So does the reset of a new connection (its resources are left behind here).
    drop(fe);
    let mut fe = connect(&p, FrontendOptions::default());
    let list = entries(&fe);
    assert_eq!(
        fill(&mut fe, &list),
        attached,
        "lists accepted after a reconnect"
    );
}

fn full_queue_and_wrapping_slots(rd: Renderer) {
    let (p, mut fe) = start_on(
        rd,
        FrontendOptions {
            queue_size: 64,
            ..FrontendOptions::default()
        },
    );
    // Each command takes 2 descriptors: 32 fill the 64-entry queue. Six rounds wrap the slots.
    for round in 0..6u32 {
        let cmds: Vec<Command> = (0..32)
            .map(|i| {
                Command::resource_create_2d(1 + round * 32 + i, format::B8G8R8X8_UNORM, 4, 4)
                    .fenced(u64::from(i))
            })
            .collect();
        let rs = fe.request_all(&cmds).check(&p, "full queue");
        for (i, r) in rs.iter().enumerate() {
            assert_resp(
                r,
                resp::OK_NODATA,
                &format!("round {round} command {i}"),
                &p,
            );
            assert_eq!(r.hdr.fence_id, i as u64);
        }
        assert_eq!(fe.queue(QueueId::Control).free_descriptors(), 64);
    }
    // 192 resources exist now; unref them all.
    let cmds: Vec<Command> = (1..=192).map(Command::resource_unref).collect();
    for chunk in cmds.chunks(32) {
        for r in fe.request_all(chunk).check(&p, "unref batch") {
            assert_resp(&r, resp::OK_NODATA, "unref", &p);
        }
    }
}

fn many_small_resources(rd: Renderer) {
    let (p, mut fe) = start_on(rd, FrontendOptions::default());
    let n = 2000u32;
    let cmds: Vec<Command> = (1..=n)
        .map(|id| Command::resource_create_2d(id, format::B8G8R8X8_UNORM, 1, 1))
        .collect();
    for chunk in cmds.chunks(100) {
        for r in fe.request_all(chunk).check(&p, "create batch") {
            assert_resp(&r, resp::OK_NODATA, "create 1x1", &p);
        }
    }
    let r = fe.request(&Command::resource_unref(n)).unwrap();
    assert_resp(&r, resp::OK_NODATA, "unref last", &p);
    let r = fe.request(&Command::resource_unref(n)).unwrap();
    assert_resp(&r, resp::ERR_INVALID_RESOURCE_ID, "unref twice", &p);
}

fn ring_indices_wrap_past_65535(rd: Renderer) {
    // Start both vrings at index 65500: the free-running u16 indices wrap after 36 chains.
    let base = 65500u16;
    let (p, mut fe) = start_on(
        rd,
        FrontendOptions {
            queue_size: 64,
            vring_base: base,
            ..FrontendOptions::default()
        },
    );
    let mut sent = 0u32;
    for round in 0..4u32 {
        let cmds: Vec<Command> = (0..32)
            .map(|i| {
                Command::resource_create_2d(1 + round * 32 + i, format::B8G8R8X8_UNORM, 4, 4)
                    .fenced(u64::from(round * 32 + i))
            })
            .collect();
        let rs = fe
            .request_all(&cmds)
            .check(&p, "batch across the index wrap");
        for (i, r) in rs.iter().enumerate() {
            assert_resp(
                r,
                resp::OK_NODATA,
                &format!("round {round} command {i}"),
                &p,
            );
            assert_eq!(r.hdr.fence_id, u64::from(round * 32) + i as u64);
        }
        sent += 32;
    }
    // Cursor queue too.
    for i in 0..40u32 {
        fe.request(&Command::move_cursor(0, i, i, 0))
            .check(&p, "cursor across the wrap");
    }
    let bases = fe.stop().check(&p, "GET_VRING_BASE");
    assert_eq!(
        bases[0],
        u32::from(base.wrapping_add(sent as u16)),
        "control queue base after {sent} chains"
    );
    assert_eq!(
        bases[1],
        u32::from(base.wrapping_add(40)),
        "cursor queue base after 40 chains"
    );
}

fn event_idx_every_completion_is_signalled(rd: Renderer) {
    let (p, mut fe) = start_on(
        rd,
        FrontendOptions {
            event_idx: true,
            queue_size: 64,
            ..FrontendOptions::default()
        },
    );
    assert_ne!(
        fe.features() & vhost_user_gpu_tests::protocol::features::RING_EVENT_IDX,
        0,
        "VIRTIO_RING_F_EVENT_IDX not offered: {:#x}",
        fe.offered_features()
    );
    // One at a time: each completion must be signalled (the driver asks with used_event).
    for id in 1..=40u32 {
        let pend = fe
            .submit(&Command::resource_create_2d(
                id,
                format::B8G8R8X8_UNORM,
                2,
                2,
            ))
            .unwrap();
        fe.kick(QueueId::Control).unwrap();
        let r = fe.wait_signalled(pend).check(&p, "signalled completion");
        assert_resp(&r, resp::OK_NODATA, "create", &p);
    }
    // Batches, across the ring end.
    for round in 0..4u32 {
        let pend: Vec<_> = (0..30u32)
            .map(|i| {
                fe.submit(&Command::resource_unref(1 + (round * 30 + i) % 40).fenced(u64::from(i)))
                    .unwrap()
            })
            .collect();
        fe.kick(QueueId::Control).unwrap();
        for p2 in pend {
            fe.wait_signalled(p2).check(&p, "signalled batch");
        }
    }
    // Cursor queue with event idx.
    for i in 0..70u32 {
        let pend = fe.submit(&Command::move_cursor(0, i, 0, 0)).unwrap();
        fe.kick(QueueId::Cursor).unwrap();
        fe.wait_signalled(pend)
            .check(&p, "signalled cursor completion");
    }
}

per_renderer!(
    max_hostmem_is_enforced_and_freed_on_unref,
    long_backing_lists_are_refused_within_the_budget,
    full_queue_and_wrapping_slots,
    many_small_resources,
    ring_indices_wrap_past_65535,
    event_idx_every_completion_is_signalled,
);
