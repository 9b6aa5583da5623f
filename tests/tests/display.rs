//! The display path: SET_SCANOUT + TRANSFER + FLUSH put exactly the guest's pixels, and only the
//! flushed rectangle, on the display peer; cursor update/move/hide; several scanouts.

mod common;

use std::time::Duration;

use common::*;
use vhost_user_gpu_tests::display::{DisplayConfig, DisplayEvent, DisplayView, CURSOR_DIM};
use vhost_user_gpu_tests::protocol::{format, Command, Rect};
use vhost_user_gpu_tests::{BackendProcess, FrontendOptions, GpuFrontend};

const OLD: u32 = 0x0011_2233;

fn is_update(e: &DisplayEvent, scanout: u32) -> bool {
    matches!(e, DisplayEvent::Update { scanout_id, .. } if *scanout_id == scanout)
}

/// Union of the UPDATE rectangles for `scanout` since `mark`.
fn updates_since(d: &DisplayView, mark: usize, scanout: u32) -> Vec<Rect> {
    d.events_since(mark)
        .into_iter()
        .filter_map(|e| match e {
            DisplayEvent::Update {
                scanout_id,
                x,
                y,
                width,
                height,
                ..
            } if scanout_id == scanout => Some(Rect::new(x, y, width, height)),
            _ => None,
        })
        .collect()
}

/// Wait until the UPDATEs since `mark` cover `rect` (pixel by pixel), then a short grace period
/// for stray ones.
fn wait_covered(d: &DisplayView, p: &BackendProcess, mark: usize, scanout: u32, rect: Rect) {
    let deadline = std::time::Instant::now() + EVENT_TIMEOUT;
    loop {
        let rs = updates_since(d, mark, scanout);
        let covered = (rect.y..rect.y + rect.height).all(|y| {
            (rect.x..rect.x + rect.width).all(|x| {
                rs.iter()
                    .any(|r| x >= r.x && x < r.x + r.width && y >= r.y && y < r.y + r.height)
            })
        });
        if covered {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "UPDATEs for scanout {scanout} never covered {rect:?}: got {rs:?}\nerrors: {:?}\n{}",
            d.state().errors,
            p.stderr_tail()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(100));
}

fn show(fe: &mut GpuFrontend, p: &BackendProcess, scanout: u32, r: &Res2d) {
    fe.ok(&Command::set_scanout(scanout, r.id, full(r)))
        .check(p, "SET_SCANOUT");
}

fn assert_fb(d: &DisplayView, scanout: u32, w: u32, h: u32, want: impl Fn(u32, u32) -> u32) {
    let fb = d.framebuffer(scanout).unwrap_or_else(|| {
        panic!(
            "no framebuffer for scanout {scanout}: events {:?}",
            d.events_since(0).len()
        )
    });
    assert_eq!((fb.width, fb.height), (w, h), "scanout {scanout} size");
    let mut bad = Vec::new();
    for y in 0..h {
        for x in 0..w {
            let got = fb.pixel(x, y).unwrap_or(0) & 0x00ff_ffff;
            let exp = want(x, y) & 0x00ff_ffff;
            if got != exp && bad.len() < 8 {
                bad.push(format!("({x},{y}): got {got:06x} want {exp:06x}"));
            }
        }
    }
    assert!(bad.is_empty(), "scanout {scanout} pixels differ: {bad:?}");
    assert!(
        d.state().errors.is_empty(),
        "display protocol errors: {:?}",
        d.state().errors
    );
}

fn scanout_transfer_flush_shows_exact_pixels(rd: Renderer) {
    let (p, mut fe) = start_on(rd, FrontendOptions::default());
    let d = fe.display().unwrap();
    let r = create_2d(&mut fe, &p, 1, 96, 40);
    paint(&fe, &p, &r, pattern);
    fe.ok(&Command::transfer_to_host_2d(1, full(&r), 0))
        .check(&p, "transfer");
    let mark = d.mark();
    show(&mut fe, &p, 0, &r);
    d.wait_event(mark, EVENT_TIMEOUT, "SCANOUT 96x40", |e| {
        matches!(
            e,
            DisplayEvent::Scanout {
                scanout_id: 0,
                width: 96,
                height: 40
            }
        )
    })
    .check(&p, "SCANOUT message");
    let mark = d.mark();
    fe.ok(&Command::resource_flush(1, full(&r)))
        .check(&p, "flush");
    wait_covered(&d, &p, mark, 0, full(&r));
    assert_fb(&d, 0, 96, 40, pattern);
}

fn flush_sends_only_the_flushed_rectangle(rd: Renderer) {
    let (p, mut fe) = start_on(rd, FrontendOptions::default());
    let d = fe.display().unwrap();
    let r = create_2d(&mut fe, &p, 1, 64, 64);
    paint(&fe, &p, &r, |_, _| OLD);
    fe.ok(&Command::transfer_to_host_2d(1, full(&r), 0))
        .check(&p, "transfer");
    show(&mut fe, &p, 0, &r);
    let mark = d.mark();
    fe.ok(&Command::resource_flush(1, full(&r)))
        .check(&p, "flush");
    wait_covered(&d, &p, mark, 0, full(&r));
    // New content everywhere in the host copy, but flush only a rectangle.
    paint(&fe, &p, &r, pattern);
    fe.ok(&Command::transfer_to_host_2d(1, full(&r), 0))
        .check(&p, "transfer 2");
    let rect = Rect::new(10, 20, 17, 9);
    let mark = d.mark();
    fe.ok(&Command::resource_flush(1, rect))
        .check(&p, "partial flush");
    wait_covered(&d, &p, mark, 0, rect);
    for u in updates_since(&d, mark, 0) {
        assert!(
            u.x >= rect.x
                && u.y >= rect.y
                && u.x + u.width <= rect.x + rect.width
                && u.y + u.height <= rect.y + rect.height,
            "UPDATE {u:?} outside the flushed rectangle {rect:?}"
        );
    }
    assert_fb(&d, 0, 64, 64, |x, y| {
        let inside =
            x >= rect.x && x < rect.x + rect.width && y >= rect.y && y < rect.y + rect.height;
        if inside {
            pattern(x, y)
        } else {
            OLD
        }
    });
}

fn flush_of_a_resource_not_on_a_scanout_sends_nothing(rd: Renderer) {
    let (p, mut fe) = start_on(rd, FrontendOptions::default());
    let d = fe.display().unwrap();
    let shown = create_2d(&mut fe, &p, 1, 16, 16);
    let hidden = create_2d(&mut fe, &p, 2, 16, 16);
    show(&mut fe, &p, 0, &shown);
    let mark = d.mark();
    fe.ok(&Command::resource_flush(hidden.id, full(&hidden)))
        .check(&p, "flush hidden");
    fe.ok(&Command::resource_flush(shown.id, full(&shown)))
        .check(&p, "flush shown");
    wait_covered(&d, &p, mark, 0, full(&shown));
    let n = updates_since(&d, mark, 0)
        .iter()
        .map(|r| r.width * r.height)
        .sum::<u32>();
    assert_eq!(
        n,
        16 * 16,
        "only the shown resource's 256 pixels may be sent"
    );
}

fn scanout_disable_is_forwarded(rd: Renderer) {
    let (p, mut fe) = start_on(rd, FrontendOptions::default());
    let d = fe.display().unwrap();
    let r = create_2d(&mut fe, &p, 1, 32, 32);
    show(&mut fe, &p, 0, &r);
    let mark = d.mark();
    fe.ok(&Command::set_scanout(0, 0, Rect::default()))
        .check(&p, "disable");
    d.wait_event(mark, EVENT_TIMEOUT, "SCANOUT disable", |e| {
        matches!(
            e,
            DisplayEvent::Scanout {
                scanout_id: 0,
                width: 0,
                ..
            }
        ) || matches!(e, DisplayEvent::DmabufScanout(s) if s.scanout_id == 0 && s.fd.is_none())
    })
    .check(&p, "disable message");
    // Unref of a resource that is on a scanout must also be safe; then flush of it fails.
    show(&mut fe, &p, 0, &r);
    fe.ok(&Command::resource_unref(1))
        .check(&p, "unref shown resource");
    let again = fe.request(&Command::resource_flush(1, full(&r))).unwrap();
    assert_resp(
        &again,
        vhost_user_gpu_tests::protocol::resp::ERR_INVALID_RESOURCE_ID,
        "flush after unref",
        &p,
    );
}

/// A 64x64 cursor resource with a recognisable ARGB image.
fn cursor_image(x: u32, y: u32) -> u32 {
    0xff00_0000 | (x << 16) | (y << 8) | ((x + y) & 0xff)
}

fn cursor_update_move_hide(rd: Renderer) {
    let (p, mut fe) = start_on(rd, FrontendOptions::default());
    let d = fe.display().unwrap();
    let screen = create_2d(&mut fe, &p, 1, 128, 128);
    show(&mut fe, &p, 0, &screen);
    let c = create_2d_fmt(&mut fe, &p, 7, 64, 64, format::B8G8R8A8_UNORM);
    paint(&fe, &p, &c, cursor_image);
    fe.ok(&Command::transfer_to_host_2d(7, full(&c), 0))
        .check(&p, "transfer cursor");

    let mark = d.mark();
    let r = fe
        .request(&Command::update_cursor(0, 30, 40, 7, (5, 6)))
        .check(&p, "UPDATE_CURSOR");
    assert_eq!(
        r.used_len, 0,
        "cursor queue: no response buffer was offered"
    );
    let (_, ev) = d
        .wait_event(mark, EVENT_TIMEOUT, "CURSOR_UPDATE", |e| {
            matches!(e, DisplayEvent::CursorUpdate { .. })
        })
        .check(&p, "cursor update");
    let DisplayEvent::CursorUpdate {
        scanout_id,
        x,
        y,
        hot_x,
        hot_y,
        image,
    } = ev
    else {
        unreachable!()
    };
    assert_eq!((scanout_id, x, y, hot_x, hot_y), (0, 30, 40, 5, 6));
    assert_eq!(image.len(), CURSOR_DIM * CURSOR_DIM);
    for yy in 0..64u32 {
        for xx in 0..64u32 {
            assert_eq!(
                image[(yy * 64 + xx) as usize],
                cursor_image(xx, yy),
                "cursor pixel ({xx},{yy})"
            );
        }
    }

    let mark = d.mark();
    fe.request(&Command::move_cursor(0, 100, 7, 7))
        .check(&p, "MOVE_CURSOR");
    d.wait_event(mark, EVENT_TIMEOUT, "CURSOR_POS 100,7", |e| {
        matches!(
            e,
            DisplayEvent::CursorPos {
                scanout_id: 0,
                x: 100,
                y: 7
            }
        )
    })
    .check(&p, "cursor move");

    let mark = d.mark();
    fe.request(&Command::update_cursor(0, 0, 0, 0, (0, 0)))
        .check(&p, "hide");
    d.wait_event(mark, EVENT_TIMEOUT, "CURSOR_POS_HIDE", |e| {
        matches!(e, DisplayEvent::CursorHide { scanout_id: 0 })
    })
    .check(&p, "cursor hide");
}

fn cursor_with_an_unknown_resource_or_scanout_is_not_shown(rd: Renderer) {
    let (p, mut fe) = start_on(rd, FrontendOptions::default());
    let d = fe.display().unwrap();
    let screen = create_2d(&mut fe, &p, 1, 128, 128);
    show(&mut fe, &p, 0, &screen);
    let small = create_2d(&mut fe, &p, 8, 32, 32);
    let mark = d.mark();
    fe.request(&Command::update_cursor(0, 1, 1, 0xdead, (0, 0)))
        .check(&p, "cursor unknown resource");
    // (A cursor resource that is not 64x64 is a driver error the spec leaves open: a device may
    // refuse or pad it, so it is not checked here.)
    fe.request(&Command::update_cursor(9, 1, 1, small.id, (0, 0)))
        .check(&p, "cursor on scanout 9");
    // A good update after them is shown, and it is the first CURSOR_UPDATE.
    let c = create_2d_fmt(&mut fe, &p, 7, 64, 64, format::B8G8R8A8_UNORM);
    paint(&fe, &p, &c, cursor_image);
    fe.ok(&Command::transfer_to_host_2d(7, full(&c), 0))
        .check(&p, "transfer cursor");
    fe.request(&Command::update_cursor(0, 2, 3, 7, (1, 1)))
        .check(&p, "good cursor");
    let (i, ev) = d
        .wait_event(mark, EVENT_TIMEOUT, "CURSOR_UPDATE", |e| {
            matches!(e, DisplayEvent::CursorUpdate { .. })
        })
        .check(&p, "good cursor update");
    assert!(
        matches!(ev, DisplayEvent::CursorUpdate { x: 2, y: 3, .. }),
        "first CURSOR_UPDATE is not the good one: {:?}",
        vhost_user_gpu_tests::display::summarize(&[ev])
    );
    let before: Vec<_> = d.events_since(mark).into_iter().take(i - mark).collect();
    assert!(
        !before.iter().any(|e| matches!(
            e,
            DisplayEvent::CursorUpdate { .. } | DisplayEvent::CursorPos { scanout_id: 9, .. }
        )),
        "bad cursor updates reached the display: {:?}",
        vhost_user_gpu_tests::display::summarize(&before)
    );
    let r = fe.request(&Command::get_display_info()).unwrap();
    assert_eq!(
        r.ty(),
        vhost_user_gpu_tests::protocol::resp::OK_DISPLAY_INFO
    );
}

fn headless_and_no_display_socket_still_serve(rd: Renderer) {
    // No SET_SOCKET at all: default mode, flushes go nowhere, commands succeed.
    let (p, mut fe) = start_on(
        rd,
        FrontendOptions {
            display: None,
            ..FrontendOptions::default()
        },
    );
    let info = fe
        .request(&Command::get_display_info())
        .check(&p, "display info without socket");
    let modes = info.display_info().unwrap();
    assert_eq!(
        modes[0].enabled, 1,
        "scanout 0 must be enabled with the default mode: {:?}",
        modes[0]
    );
    assert!(modes[0].rect.width > 0 && modes[0].rect.height > 0);
    let r = create_2d(&mut fe, &p, 1, 32, 32);
    show(&mut fe, &p, 0, &r);
    fe.ok(&Command::resource_flush(1, full(&r)))
        .check(&p, "headless flush");
    drop(fe);
    drop(p);
    if is_qemu() {
        return; // QEMU's backend has no --headless.
    }
    // --headless: a SET_SOCKET is accepted but the display gets nothing.
    let p = spawn(&backend_command_for(rd).arg("--headless"));
    let mut fe = connect(&p, FrontendOptions::default());
    let d = fe.display().unwrap();
    let r = create_2d(&mut fe, &p, 1, 32, 32);
    show(&mut fe, &p, 0, &r);
    fe.ok(&Command::resource_flush(1, full(&r)))
        .check(&p, "headless flush");
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        !d.events_since(0).iter().any(|e| matches!(
            e,
            DisplayEvent::Update { .. } | DisplayEvent::Scanout { .. }
        )),
        "--headless sent pixels to the display: {:?}",
        vhost_user_gpu_tests::display::summarize(&d.events_since(0))
    );
}

fn several_scanouts_each_get_their_own_pixels(rd: Renderer) {
    let modes = vec![(64, 48), (32, 16), (40, 40)];
    let cmd = if is_qemu() {
        backend_command_for(rd)
    } else {
        backend_command_for(rd).arg("--num-scanouts").arg("3")
    };
    let p = spawn(&cmd);
    let mut fe = connect(
        &p,
        FrontendOptions {
            display: Some(DisplayConfig {
                modes: modes.clone(),
                ..DisplayConfig::default()
            }),
            ..FrontendOptions::default()
        },
    );
    let d = fe.display().unwrap();
    if !is_qemu() {
        assert_eq!(fe.config().unwrap().num_scanouts, 3);
    }
    let info = fe
        .request(&Command::get_display_info())
        .unwrap()
        .display_info()
        .unwrap();
    for (i, &(w, h)) in modes.iter().enumerate() {
        assert_eq!(
            (info[i].rect.width, info[i].rect.height, info[i].enabled),
            (w, h, 1),
            "scanout {i}"
        );
    }
    let mut res = Vec::new();
    for (i, &(w, h)) in modes.iter().enumerate() {
        let r = create_2d(&mut fe, &p, 10 + i as u32, w, h);
        let salt = (i as u32 + 1) * 0x40;
        paint(&fe, &p, &r, |x, y| pattern(x, y) ^ salt);
        fe.ok(&Command::transfer_to_host_2d(r.id, full(&r), 0))
            .check(&p, "transfer");
        show(&mut fe, &p, i as u32, &r);
        res.push(r);
    }
    let mark = d.mark();
    for r in &res {
        fe.ok(&Command::resource_flush(r.id, full(r)))
            .check(&p, "flush");
    }
    for (i, r) in res.iter().enumerate() {
        wait_covered(&d, &p, mark, i as u32, full(r));
        let salt = (i as u32 + 1) * 0x40;
        assert_fb(&d, i as u32, r.w, r.h, |x, y| pattern(x, y) ^ salt);
    }
    // The same resource on two scanouts: one flush updates both.
    show(&mut fe, &p, 1, &res[0]);
    let mark = d.mark();
    fe.ok(&Command::resource_flush(res[0].id, full(&res[0])))
        .check(&p, "flush shared");
    wait_covered(&d, &p, mark, 0, full(&res[0]));
    wait_covered(&d, &p, mark, 1, full(&res[0]));
    assert!(d.events_since(mark).iter().any(|e| is_update(e, 1)));
}

fn scanout_with_an_offset_shows_that_part_of_the_resource(rd: Renderer) {
    // SET_SCANOUT's rectangle picks a part of the resource: the display is that size, its
    // pixel (0,0) is the resource's (r.x, r.y), and UPDATEs are in scanout coordinates.
    let (p, mut fe) = start_on(rd, FrontendOptions::default());
    let d = fe.display().unwrap();
    let res = create_2d(&mut fe, &p, 1, 64, 64);
    paint(&fe, &p, &res, |_, _| OLD);
    fe.ok(&Command::transfer_to_host_2d(1, full(&res), 0))
        .check(&p, "transfer");
    let view = Rect::new(8, 4, 32, 16);
    let mark = d.mark();
    fe.ok(&Command::set_scanout(0, 1, view))
        .check(&p, "set_scanout with offset");
    d.wait_event(mark, EVENT_TIMEOUT, "SCANOUT 32x16", |e| {
        matches!(
            e,
            DisplayEvent::Scanout {
                scanout_id: 0,
                width: 32,
                height: 16
            }
        )
    })
    .check(&p, "SCANOUT of the rectangle's size");
    let mark = d.mark();
    fe.ok(&Command::resource_flush(1, full(&res)))
        .check(&p, "flush");
    wait_covered(&d, &p, mark, 0, Rect::new(0, 0, 32, 16));
    // New content; flush a rectangle that overlaps the view's top-left corner only.
    paint(&fe, &p, &res, pattern);
    fe.ok(&Command::transfer_to_host_2d(1, full(&res), 0))
        .check(&p, "transfer 2");
    let mark = d.mark();
    fe.ok(&Command::resource_flush(1, Rect::new(0, 0, 12, 8)))
        .check(&p, "corner flush");
    wait_covered(&d, &p, mark, 0, Rect::new(0, 0, 4, 4));
    for u in updates_since(&d, mark, 0) {
        assert!(
            u.x + u.width <= 4 && u.y + u.height <= 4,
            "UPDATE {u:?} beyond the flushed part of the view"
        );
    }
    assert_fb(&d, 0, 32, 16, |x, y| {
        if x < 4 && y < 4 {
            pattern(x + 8, y + 4)
        } else {
            OLD
        }
    });
}

per_renderer!(
    scanout_with_an_offset_shows_that_part_of_the_resource,
    cursor_with_an_unknown_resource_or_scanout_is_not_shown,
    headless_and_no_display_socket_still_serve,
    scanout_transfer_flush_shows_exact_pixels,
    flush_sends_only_the_flushed_rectangle,
    flush_of_a_resource_not_on_a_scanout_sends_nothing,
    scanout_disable_is_forwarded,
    cursor_update_move_hide,
    several_scanouts_each_get_their_own_pixels,
);
