//! A seeded storm of random, mostly invalid commands (random types, ids, rectangles, offsets,
//! backing entries, chain shapes, fences, queues): every chain must come back with a well-formed
//! response, and the daemon must keep serving with bounded fds and memory. The seed is printed;
//! `VUGPU_STORM_SEED` and `VUGPU_STORM_COUNT` reproduce or lengthen a run.

mod common;

use common::*;
use vhost_user_gpu_tests::frontend::Segment;
use vhost_user_gpu_tests::protocol::{
    cmd, format, resp, Command, MemEntry, QueueId, Rect, CTRL_HDR_SIZE,
};
use vhost_user_gpu_tests::FrontendOptions;

/// Commands per run (each renderer).
const DEFAULT_COUNT: u32 = 1500;
/// Guest bytes the random backings point into (never the harness's rings or buffers).
const SCRATCH: u64 = 4 << 20;

/// xorshift64*: small, deterministic, good enough to pick test inputs.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    /// Mostly small values, sometimes edge values.
    fn dim(&mut self) -> u32 {
        match self.below(10) {
            0 => 0,
            1 => u32::MAX,
            2 => 1 << (16 + self.below(15)),
            _ => 1 + self.below(300) as u32,
        }
    }
    fn id(&mut self) -> u32 {
        match self.below(10) {
            0 => 0,
            1 => u32::MAX,
            _ => 1 + self.below(12) as u32,
        }
    }
}

fn random_command(r: &mut Rng, scratch: u64, mem_end: u64) -> Command {
    let rect = |r: &mut Rng| Rect::new(r.dim() % 400, r.dim() % 400, r.dim(), r.dim());
    let mut c = match r.below(16) {
        0 => Command::resource_create_2d(
            r.id(),
            [
                format::B8G8R8X8_UNORM,
                format::R8G8B8A8_UNORM,
                r.next() as u32,
            ][r.below(3) as usize],
            r.dim(),
            r.dim(),
        ),
        1 => Command::resource_unref(r.id()),
        2 => Command::set_scanout(r.below(18) as u32, r.id(), rect(r)),
        3 => Command::resource_flush(r.id(), rect(r)),
        4 => Command::transfer_to_host_2d(
            r.id(),
            rect(r),
            if r.chance(80) {
                r.below(1 << 20)
            } else {
                r.next()
            },
        ),
        5 => {
            let n = if r.chance(90) {
                1 + r.below(4)
            } else {
                r.below(64)
            };
            let entries: Vec<MemEntry> = (0..n)
                .map(|_| {
                    let addr = match r.below(10) {
                        0 => mem_end - r.below(8192),
                        1 => r.next(),
                        _ => scratch + r.below(SCRATCH - 65536),
                    };
                    MemEntry {
                        addr,
                        length: if r.chance(90) {
                            1 + r.below(65536) as u32
                        } else {
                            r.next() as u32
                        },
                    }
                })
                .collect();
            if r.chance(15) {
                Command::attach_backing_raw(r.id(), r.next() as u32, &entries)
            } else {
                Command::attach_backing(r.id(), &entries)
            }
        }
        6 => Command::detach_backing(r.id()),
        7 => Command::get_capset_info(r.below(4) as u32),
        8 => Command::get_capset(r.below(7) as u32, r.below(3) as u32, r.below(4096) as u32),
        9 => Command::get_edid(r.below(18) as u32),
        10 => Command::assign_uuid(r.id()),
        11 => Command::update_cursor(
            r.below(18) as u32,
            r.dim(),
            r.dim(),
            r.id(),
            (r.below(70) as u32, r.below(70) as u32),
        ),
        12 => Command::move_cursor(r.below(18) as u32, r.dim(), r.dim(), r.id()),
        13 => Command::resource_create_blob(
            r.id(),
            r.below(5) as u32,
            r.below(8) as u32,
            r.below(3),
            if r.chance(80) {
                r.below(1 << 16)
            } else {
                r.next()
            },
            &[MemEntry {
                addr: scratch + r.below(SCRATCH - 65536),
                length: r.below(65536) as u32,
            }],
        ),
        14 => Command::new(
            0x0100 + r.below(0x30) as u32,
            (0..r.below(64)).map(|_| r.next() as u8).collect(),
        ),
        _ => Command::new(r.next() as u32, Vec::new()),
    };
    if r.chance(30) {
        c = c.fenced(r.next());
    }
    if r.chance(5) {
        c = c.ring(r.below(80) as u8);
    }
    if r.chance(5) {
        let other = if c.queue == QueueId::Control {
            QueueId::Cursor
        } else {
            QueueId::Control
        };
        c = c.on_queue(other);
    }
    c
}

fn is_known_response(ty: u32) -> bool {
    (resp::OK_NODATA..=resp::OK_MAP_INFO).contains(&ty)
        || (resp::ERR_UNSPEC..=resp::ERR_INVALID_PARAMETER).contains(&ty)
}

fn random_command_storm_keeps_the_daemon_serving(rd: Renderer) {
    let seed = std::env::var("VUGPU_STORM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_0000_0000_0001u64 + rd as u64);
    let count: u32 = std::env::var("VUGPU_STORM_COUNT")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_COUNT);
    eprintln!("storm seed {seed}, {count} commands");
    let cmd = if is_qemu() {
        backend_command_for(rd)
    } else {
        backend_command_for(rd).arg("--max-hostmem").arg("64M")
    };
    let mut p = spawn(&cmd);
    let mut fe = connect(
        &p,
        FrontendOptions {
            queue_size: 64,
            ..FrontendOptions::default()
        },
    );
    let scratch = fe.memory().alloc(SCRATCH, 4096).unwrap();
    let mem_end = fe.memory().size();
    let mut rng = Rng(seed);
    let mut failures: Vec<String> = Vec::new();
    let mut kinds: std::collections::BTreeMap<&'static str, u32> = Default::default();
    let mut fds0 = None;
    let mut i = 0;
    while i < count {
        // Up to 8 chains in flight, some of odd shapes.
        let batch = (1 + rng.below(8) as u32).min(count - i);
        let mut pend = Vec::new();
        for _ in 0..batch {
            let c = random_command(&mut rng, scratch, mem_end);
            let mut bytes = c.to_bytes();
            let shape = rng.below(20);
            if shape == 0 && !bytes.is_empty() {
                bytes.truncate(rng.below(bytes.len() as u64) as usize);
            }
            let mut segs = vec![Segment::Bytes(bytes)];
            let resp_len = match shape {
                1 => 0,
                2 => rng.below(24) as u32,
                _ => c.response_len.max(CTRL_HDR_SIZE as u32),
            };
            if resp_len > 0 && !(c.queue == QueueId::Cursor && shape != 3) {
                segs.push(Segment::Writable(resp_len));
            }
            let what = format!(
                "#{i} {} (type {:#x}, shape {shape})",
                vhost_user_gpu_tests::protocol::type_name(c.hdr.ty),
                c.hdr.ty
            );
            let pd = fe.submit_segments(c.queue, &segs).check(&p, "submit");
            pend.push((pd, what, resp_len));
            i += 1;
        }
        fe.kick(QueueId::Control).unwrap();
        fe.kick(QueueId::Cursor).unwrap();
        for (pd, what, resp_len) in pend {
            match fe.wait(pd) {
                Ok(r) => {
                    let kind = if r.used_len == 0 {
                        "nothing written"
                    } else {
                        vhost_user_gpu_tests::protocol::type_name(r.ty())
                    };
                    *kinds.entry(kind).or_default() += 1;
                    if r.used_len > resp_len {
                        failures.push(format!(
                            "{what}: used_len {} > offered {resp_len}",
                            r.used_len
                        ));
                    } else if r.used_len as usize >= CTRL_HDR_SIZE && !is_known_response(r.ty()) {
                        failures.push(format!("{what}: unknown response {}", r.describe()));
                    } else if r.used_len != 0 && (r.used_len as usize) < CTRL_HDR_SIZE {
                        failures.push(format!("{what}: partial response of {} bytes", r.used_len));
                    }
                }
                Err(e) => panic!(
                    "storm seed {seed}: {what}: {e}\nfailures so far: {failures:#?}\n{}",
                    p.stderr_tail()
                ),
            }
        }
        if fds0.is_none() && i >= 100 {
            fds0 = Some(p.fd_count().unwrap());
        }
    }
    assert!(
        p.is_running(),
        "daemon died (seed {seed})\n{}",
        p.stderr_tail()
    );
    let alive = fe
        .request(&Command::get_display_info())
        .check(&p, "after the storm");
    assert_eq!(alive.ty(), resp::OK_DISPLAY_INFO);
    let r = fe
        .request(&Command::new(cmd::RESOURCE_CREATE_2D, Vec::new()))
        .check(&p, "after the storm");
    assert!(r.ty() >= resp::ERR_UNSPEC, "{}", r.describe());
    let fds = p.fd_count().unwrap();
    let fds0 = fds0.unwrap_or(fds);
    assert!(
        fds <= fds0 + 4,
        "fds grew from {fds0} to {fds} during the storm"
    );
    let mem = p.memory().unwrap();
    eprintln!("after the storm: {fds} fds, {mem:?}; responses {kinds:?}");
    // The storm must reach the success paths too, not only the first checks.
    let ok = kinds.get("OK_NODATA").copied().unwrap_or(0);
    assert!(
        ok >= count / 50,
        "only {ok} of {count} commands succeeded: {kinds:?}"
    );
    assert!(
        failures.is_empty(),
        "storm seed {seed}: {} malformed responses:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

per_renderer!(random_command_storm_keeps_the_daemon_serving);

/// 3D commands with random parameters on the virglrenderer renderer: contexts created, destroyed
/// and reused, resources attached and detached, random boxes and offsets, well-formed virgl
/// streams naming random (often wrong) handles and formats, and a few words of garbage.
#[test]
fn random_3d_storm_keeps_the_daemon_serving() {
    use vhost_user_gpu_tests::protocol::{Box3d, Resource3d, Transfer3d};
    use vhost_user_gpu_tests::virgl::{self, Stream};
    if virgl_opted_out() {
        return;
    }
    let seed = std::env::var("VUGPU_STORM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x3d3d_0000_0000_0001u64);
    let count: u32 = std::env::var("VUGPU_STORM_COUNT")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(600);
    eprintln!("3D storm seed {seed}, {count} commands");
    let mut p = spawn(
        &backend_command_for(Renderer::Virgl)
            .arg("--max-hostmem")
            .arg("64M"),
    );
    let mut fe = connect(&p, FrontendOptions::default());
    let scratch = fe.memory().alloc(SCRATCH, 4096).unwrap();
    let mut r = Rng(seed);
    let mut kinds: std::collections::BTreeMap<&'static str, u32> = Default::default();
    for i in 0..count {
        let ctx = 1 + r.below(3) as u32;
        let res = 1 + r.below(6) as u32;
        let c = match r.below(9) {
            0 => Command::ctx_create(
                ctx,
                [0, 1, 2, r.next() as u32][r.below(4) as usize],
                "storm",
            ),
            1 => Command::ctx_destroy(ctx),
            2 => Command::ctx_attach_resource(ctx, res),
            3 => Command::ctx_detach_resource(ctx, res),
            4 => Command::resource_create_3d(
                res,
                &Resource3d {
                    target: [2, 2, 2, 0, 1, 3, 4, r.next() as u32][r.below(8) as usize],
                    format: [1, 2, 67, 2, r.below(300) as u32][r.below(5) as usize],
                    bind: [
                        virgl::BIND_RENDER_TARGET | virgl::BIND_SAMPLER_VIEW,
                        r.next() as u32,
                    ][r.below(2) as usize],
                    width: r.dim() % 1024,
                    height: r.dim() % 1024,
                    depth: 1 + r.below(2) as u32,
                    array_size: 1 + r.below(2) as u32,
                    last_level: r.below(3) as u32,
                    nr_samples: r.below(2) as u32,
                    flags: r.below(2) as u32,
                },
            ),
            5 => Command::attach_backing(
                res,
                &[MemEntry {
                    addr: scratch + r.below(SCRATCH / 2),
                    length: r.below(SCRATCH / 2) as u32,
                }],
            ),
            6 | 7 => {
                let t = Transfer3d {
                    bx: Box3d {
                        x: r.below(300) as u32,
                        y: r.below(300) as u32,
                        z: r.below(2) as u32,
                        w: r.dim() % 2048,
                        h: r.dim() % 2048,
                        d: r.below(3) as u32,
                    },
                    offset: if r.chance(90) {
                        r.below(1 << 20)
                    } else {
                        r.next()
                    },
                    level: r.below(3) as u32,
                    stride: [0, 256, 4096, r.next() as u32][r.below(4) as usize],
                    layer_stride: r.below(2) as u32 * 65536,
                };
                if r.chance(50) {
                    Command::transfer_to_host_3d(ctx, res, &t)
                } else {
                    Command::transfer_from_host_3d(ctx, res, &t)
                }
            }
            _ => {
                let mut s = Stream::default();
                s.create_sub_ctx(r.below(3) as u32)
                    .set_sub_ctx(r.below(3) as u32)
                    .create_surface(
                        1 + r.below(3) as u32,
                        r.below(8) as u32,
                        [2, 1, r.below(300) as u32][r.below(3) as usize],
                    )
                    .set_framebuffer(&[1 + r.below(3) as u32])
                    .clear_color([0.1, 0.2, 0.3, 1.0]);
                let mut bytes = s.to_bytes();
                if r.chance(20) {
                    // A few words of noise after valid commands.
                    bytes.extend((0..4 * r.below(8)).map(|_| r.next() as u8));
                }
                Command::submit_3d(ctx, &bytes)
            }
        };
        let c = if r.chance(30) {
            c.fenced(r.below(1 << 40))
        } else {
            c
        };
        let what = format!(
            "#{i} {}",
            vhost_user_gpu_tests::protocol::type_name(c.hdr.ty)
        );
        let resp = fe
            .request(&c)
            .unwrap_or_else(|e| panic!("3D storm seed {seed}: {what}: {e}\n{}", p.stderr_tail()));
        assert!(
            is_known_response(resp.ty()) && resp.used_len as usize == CTRL_HDR_SIZE,
            "3D storm seed {seed}: {what}: {}",
            resp.describe()
        );
        *kinds
            .entry(vhost_user_gpu_tests::protocol::type_name(resp.ty()))
            .or_default() += 1;
    }
    assert!(
        p.is_running(),
        "daemon died (seed {seed})\n{}",
        p.stderr_tail()
    );
    let alive = fe
        .request(&Command::get_display_info())
        .check(&p, "after the 3D storm");
    assert_eq!(alive.ty(), resp::OK_DISPLAY_INFO);
    eprintln!(
        "after the 3D storm: {:?}; responses {kinds:?}",
        p.memory().unwrap()
    );
    let ok = kinds.get("OK_NODATA").copied().unwrap_or(0);
    assert!(
        ok >= count / 20,
        "only {ok} of {count} 3D commands succeeded: {kinds:?}"
    );
}
