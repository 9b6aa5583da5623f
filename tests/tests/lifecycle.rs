//! Lifecycle: the frontend disconnects and reconnects many times, a new SET_SOCKET replaces the
//! display, rings are stopped and restarted; the daemon serves each time and its fds and memory
//! do not grow. (QEMU's C backend exits when its frontend disconnects: these tests are for
//! backends that serve reconnects.)

mod common;

use std::time::Duration;

use common::*;
use vhost_user_gpu_tests::display::{DisplayConfig, DisplayEvent};
use vhost_user_gpu_tests::protocol::{format, resp, Command, MemEntry, Rect};
use vhost_user_gpu_tests::FrontendOptions;

/// Reconnect cycles of the leak test.
const CYCLES: usize = 50;
/// Cycles before the baseline is taken (allocator and thread warm-up).
const WARMUP: usize = 5;
/// Allowed fd growth over the measured cycles.
const FD_SLACK: usize = 2;
/// Allowed RSS growth over the measured cycles, KiB. Each cycle leaves a 1 MiB resource (never
/// unreffed) and maps 16 MiB of guest memory, so a leak of either shows well above this.
const RSS_SLACK_KIB: u64 = 12 * 1024;

fn small() -> FrontendOptions {
    FrontendOptions {
        memory_size: 16 << 20,
        queue_size: 64,
        ..FrontendOptions::default()
    }
}

/// One guest session: display info, a 512x512 resource with backing shown and flushed, left
/// alive on disconnect (the daemon must free it).
fn session(p: &vhost_user_gpu_tests::BackendProcess, i: usize, rd: Renderer) {
    let mut fe = connect(p, small());
    let r = fe
        .request(&Command::get_display_info())
        .check(p, "GET_DISPLAY_INFO");
    assert_eq!(r.ty(), resp::OK_DISPLAY_INFO, "cycle {i}: {}", r.describe());
    let d = fe.display().unwrap();
    let res = create_2d(&mut fe, p, 1, 512, 512);
    paint(&fe, p, &res, |x, y| pattern(x, y) ^ i as u32);
    fe.ok(&Command::transfer_to_host_2d(1, full(&res), 0))
        .check(p, "transfer");
    fe.ok(&Command::set_scanout(0, 1, full(&res)))
        .check(p, "set_scanout");
    let mark = d.mark();
    fe.ok(&Command::resource_flush(1, Rect::new(0, 0, 8, 8)))
        .check(p, "flush");
    d.wait_event(mark, EVENT_TIMEOUT, "UPDATE", |e| {
        matches!(e, DisplayEvent::Update { .. })
    })
    .check(p, "update");
    if rd == Renderer::Virgl {
        // A 3D context with a render target, cleared and left alive: the daemon must destroy it.
        use vhost_user_gpu_tests::protocol::Resource3d;
        use vhost_user_gpu_tests::virgl;
        fe.ok(&Command::ctx_create(1, 0, "session"))
            .check(p, "CTX_CREATE");
        let rt = Resource3d {
            target: virgl::TEXTURE_2D,
            format: format::B8G8R8X8_UNORM,
            bind: virgl::BIND_RENDER_TARGET | virgl::BIND_SAMPLER_VIEW,
            width: 256,
            height: 256,
            depth: 1,
            array_size: 1,
            ..Resource3d::default()
        };
        fe.ok(&Command::resource_create_3d(2, &rt))
            .check(p, "RESOURCE_CREATE_3D");
        fe.ok(&Command::ctx_attach_resource(1, 2))
            .check(p, "CTX_ATTACH_RESOURCE");
        let stream = virgl::clear_stream(2, format::B8G8R8X8_UNORM, [0.5, 0.5, 0.5, 1.0]);
        fe.ok(&Command::submit_3d(1, &stream).fenced(i as u64 + 1))
            .check(p, "SUBMIT_3D");
    }
    if i % 2 == 0 {
        // Half the sessions stop the rings first, as a VMM does on shutdown.
        fe.stop().check(p, "GET_VRING_BASE");
    }
    drop(fe);
}

fn reconnect_many_times_without_growth(rd: Renderer) {
    let mut p = spawn(&backend_command_for(rd));
    let mut base = None;
    for i in 0..CYCLES {
        session(&p, i, rd);
        assert!(
            p.is_running(),
            "daemon exited after disconnect {i}\n{}",
            p.stderr_tail()
        );
        if i + 1 == WARMUP {
            // Let the daemon finish tearing the connection down before measuring.
            std::thread::sleep(Duration::from_millis(200));
            base = Some((p.fd_count().unwrap(), p.memory().unwrap()));
        }
    }
    std::thread::sleep(Duration::from_millis(200));
    let (fd0, m0) = base.unwrap();
    let (fd1, m1) = (p.fd_count().unwrap(), p.memory().unwrap());
    eprintln!("after {WARMUP} cycles: {fd0} fds, {m0:?}; after {CYCLES}: {fd1} fds, {m1:?}");
    assert!(
        fd1 <= fd0 + FD_SLACK,
        "fd count grew from {fd0} to {fd1} over {} reconnects",
        CYCLES - WARMUP
    );
    assert!(
        m1.rss_kib <= m0.rss_kib + RSS_SLACK_KIB,
        "RSS grew from {} KiB to {} KiB over {} reconnects",
        m0.rss_kib,
        m1.rss_kib,
        CYCLES - WARMUP
    );
}

fn new_set_socket_replaces_the_display(rd: Renderer) {
    let (p, mut fe) = start_on(rd, FrontendOptions::default());
    let first = fe.display().unwrap();
    let res = create_2d(&mut fe, &p, 1, 32, 32);
    paint(&fe, &p, &res, pattern);
    fe.ok(&Command::transfer_to_host_2d(1, full(&res), 0))
        .check(&p, "transfer");
    fe.ok(&Command::set_scanout(0, 1, full(&res)))
        .check(&p, "set_scanout");
    // A second display socket (QEMU sends one at every DRIVER_OK), with other modes.
    let second = fe
        .set_socket(DisplayConfig {
            modes: vec![(800, 600)],
            ..DisplayConfig::default()
        })
        .check(&p, "second SET_SOCKET");
    second
        .wait_event(
            0,
            EVENT_TIMEOUT,
            "GET_PROTOCOL_FEATURES on the new socket",
            |e| matches!(e, DisplayEvent::GetProtocolFeatures),
        )
        .check(&p, "handshake on the new socket");
    second
        .wait_event(
            0,
            EVENT_TIMEOUT,
            "SET_PROTOCOL_FEATURES on the new socket",
            |e| matches!(e, DisplayEvent::SetProtocolFeatures(_)),
        )
        .check(&p, "handshake on the new socket");
    let info = fe
        .request(&Command::get_display_info())
        .unwrap()
        .display_info()
        .unwrap();
    assert_eq!(
        (info[0].rect.width, info[0].rect.height),
        (800, 600),
        "display info must come from the new peer"
    );
    // The scanout may have to be set again after a new socket; a flush must reach the new peer
    // only.
    fe.ok(&Command::set_scanout(0, 1, full(&res)))
        .check(&p, "set_scanout again");
    let old_mark = first.mark();
    let mark = second.mark();
    fe.ok(&Command::resource_flush(1, full(&res)))
        .check(&p, "flush");
    second
        .wait_event(mark, EVENT_TIMEOUT, "UPDATE on the new socket", |e| {
            matches!(e, DisplayEvent::Update { .. })
        })
        .check(&p, "update on new socket");
    assert!(
        !first
            .events_since(old_mark)
            .iter()
            .any(|e| matches!(e, DisplayEvent::Update { .. })),
        "the old display still gets updates"
    );
    // Closing the display socket: the daemon keeps serving the guest headless.
    fe.close_display();
    fe.ok(&Command::resource_flush(1, full(&res)))
        .check(&p, "flush without display");
    let r = fe
        .request(&Command::resource_create_2d(
            2,
            format::B8G8R8X8_UNORM,
            8,
            8,
        ))
        .unwrap();
    assert_eq!(r.ty(), resp::OK_NODATA);
}

fn stop_and_restart_rings_on_one_connection(rd: Renderer) {
    let (p, mut fe) = start_on(rd, FrontendOptions::default());
    fe.ok(&Command::resource_create_2d(
        1,
        format::B8G8R8X8_UNORM,
        8,
        8,
    ))
    .check(&p, "create");
    let bases = fe.stop().check(&p, "GET_VRING_BASE");
    assert_eq!(bases[0], 1, "one control chain was consumed");
    assert_eq!(bases[1], 0);
    drop(fe);
    // A new connection starts a new device: the old resources are gone.
    let mut fe = connect(&p, FrontendOptions::default());
    let r = fe
        .request(&Command::resource_create_2d(
            1,
            format::B8G8R8X8_UNORM,
            8,
            8,
        ))
        .unwrap();
    assert_eq!(
        r.ty(),
        resp::OK_NODATA,
        "resource 1 must not survive the old connection: {}",
        r.describe()
    );
}

fn disconnect_with_commands_in_flight_and_a_large_backing(rd: Renderer) {
    let p = spawn(&backend_command_for(rd));
    for round in 0..3 {
        let mut fe = connect(&p, small());
        let size = 4 << 20;
        let backing = fe.memory().alloc(size, 4096).unwrap();
        fe.ok(&Command::resource_create_2d(
            1,
            format::B8G8R8X8_UNORM,
            1024,
            1024,
        ))
        .check(&p, "create");
        fe.ok(&Command::attach_backing(
            1,
            &[MemEntry {
                addr: backing,
                length: size as u32,
            }],
        ))
        .check(&p, "attach");
        // Queue a burst and disconnect without waiting.
        for i in 0..32 {
            let pend = fe
                .submit(&Command::transfer_to_host_2d(
                    1,
                    Rect::new(0, i * 32, 1024, 32),
                    u64::from(i) * 32 * 4096,
                ))
                .unwrap();
            std::mem::forget(pend);
        }
        fe.kick(vhost_user_gpu_tests::protocol::QueueId::Control)
            .unwrap();
        drop(fe);
        let mut fe = connect(&p, small());
        let r = fe
            .request(&Command::get_display_info())
            .check(&p, &format!("serving after round {round}"));
        assert_eq!(r.ty(), resp::OK_DISPLAY_INFO);
    }
}

fn many_display_sockets_on_one_connection_do_not_leak(rd: Renderer) {
    // QEMU's order at every guest reboot: close the old display socket, send a new one.
    let (mut p, mut fe) = start_on(rd, FrontendOptions::default());
    let res = create_2d(&mut fe, &p, 1, 16, 16);
    paint(&fe, &p, &res, pattern);
    fe.ok(&Command::transfer_to_host_2d(1, full(&res), 0))
        .check(&p, "transfer");
    let mut base_fds = 0;
    for i in 0..30 {
        fe.close_display();
        let d = fe
            .set_socket(DisplayConfig::default())
            .check(&p, "SET_SOCKET");
        fe.ok(&Command::set_scanout(0, 1, full(&res)))
            .check(&p, "set_scanout");
        let mark = d.mark();
        fe.ok(&Command::resource_flush(1, full(&res)))
            .check(&p, "flush");
        d.wait_event(mark, EVENT_TIMEOUT, "UPDATE on the new socket", |e| {
            matches!(e, DisplayEvent::Update { .. })
        })
        .check(&p, &format!("update on display socket {i}"));
        if i == 4 {
            base_fds = p.fd_count().unwrap();
        }
    }
    std::thread::sleep(Duration::from_millis(100));
    let fds = p.fd_count().unwrap();
    assert!(
        fds <= base_fds + FD_SLACK,
        "daemon fds grew from {base_fds} to {fds} over 25 display sockets"
    );
    assert!(p.is_running());
}

fn set_socket_is_in_effect_once_acked(rd: Renderer) {
    // With REPLY_ACK, SET_SOCKET is acknowledged; the next guest command must already see the new
    // display (QEMU's guest goes on right after DRIVER_OK): GET_DISPLAY_INFO reports its modes.
    let (p, mut fe) = start_on(rd, FrontendOptions::default());
    assert!(fe.reply_ack(), "REPLY_ACK not negotiated");
    for i in 0..20u32 {
        fe.close_display();
        let (w, h) = (640 + 8 * i, 480 + 4 * i);
        fe.set_socket(DisplayConfig {
            modes: vec![(w, h)],
            ..DisplayConfig::default()
        })
        .check(&p, "SET_SOCKET");
        let modes = fe
            .request(&Command::get_display_info())
            .check(&p, "GET_DISPLAY_INFO")
            .display_info()
            .unwrap();
        assert_eq!(
            (modes[0].rect.width, modes[0].rect.height),
            (w, h),
            "display socket {i}: GET_DISPLAY_INFO right after the acked SET_SOCKET did not come \
             from the new display"
        );
    }
}

fn a_second_frontend_is_served_after_the_first_leaves(rd: Renderer) {
    // One frontend at a time: a second connection waits (it is not refused, and it does not
    // disturb the first), and is served once the first disconnects.
    let (p, mut first) = start_on(rd, FrontendOptions::default());
    first
        .ok(&Command::resource_create_2d(
            1,
            format::B8G8R8X8_UNORM,
            8,
            8,
        ))
        .check(&p, "first");
    let path = p.socket_path().to_path_buf();
    let (tx, rx) = std::sync::mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let r = vhost_user_gpu_tests::GpuFrontend::connect(&path, FrontendOptions::default())
            .and_then(|mut fe| {
                fe.request(&Command::resource_create_2d(
                    1,
                    format::B8G8R8X8_UNORM,
                    8,
                    8,
                ))
            });
        let _ = tx.send(r.map(|r| r.ty()));
    });
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        rx.try_recv().is_err(),
        "the second frontend was served while the first was connected"
    );
    // The first is undisturbed.
    let r = first
        .request(&Command::resource_create_2d(
            2,
            format::B8G8R8X8_UNORM,
            8,
            8,
        ))
        .check(&p, "first again");
    assert_eq!(r.ty(), resp::OK_NODATA);
    drop(first);
    let second = rx
        .recv_timeout(Duration::from_secs(10))
        .unwrap_or_else(|_| {
            panic!(
                "the second frontend was not served after the first left\n{}",
                p.stderr_tail()
            )
        });
    let ty = second.unwrap_or_else(|e| panic!("second frontend: {e}\n{}", p.stderr_tail()));
    assert_eq!(
        ty,
        resp::OK_NODATA,
        "resource 1 of the first frontend must be gone for the second"
    );
    waiter.join().unwrap();
}

per_renderer!(
    a_second_frontend_is_served_after_the_first_leaves,
    set_socket_is_in_effect_once_acked,
    many_display_sockets_on_one_connection_do_not_leak,
    reconnect_many_times_without_growth,
    new_set_socket_replaces_the_display,
    stop_and_restart_rings_on_one_connection,
    disconnect_with_commands_in_flight_and_a_large_backing,
);
