//! Error paths: unknown ids, bad rectangles, out-of-range backing addresses, overflowing sizes,
//! too many entries, wrong queue, truncated descriptors. Each must get the right
//! VIRTIO_GPU_RESP_ERR_* and leave the daemon serving (checked after every case).
//!
//! Where the spec names no single code, the accepted set is listed with the case.

mod common;

use common::*;
use vhost_user_gpu_tests::frontend::Segment;
use vhost_user_gpu_tests::protocol::{
    cmd, format, put32, resp, type_name, Command, CtrlHdr, MemEntry, QueueId, Rect, Response,
    CTRL_HDR_SIZE, FLAG_FENCE,
};
use vhost_user_gpu_tests::{BackendProcess, FrontendOptions, GpuFrontend};

const UNKNOWN: u32 = 0xdead;

/// Runs cases, collecting every mismatch, and fails once at the end with all of them.
struct Cases<'a> {
    p: &'a BackendProcess,
    fe: GpuFrontend,
    failures: Vec<String>,
}

impl<'a> Cases<'a> {
    fn new(p: &'a BackendProcess, fe: GpuFrontend) -> Self {
        Cases {
            p,
            fe,
            failures: Vec::new(),
        }
    }

    /// The daemon must still answer a plain command correctly.
    fn alive(&mut self, after: &str) {
        match self.fe.request(&Command::get_display_info()) {
            Ok(r) if r.ty() == resp::OK_DISPLAY_INFO => {}
            Ok(r) => self.failures.push(format!(
                "after {after}: GET_DISPLAY_INFO answered {}",
                r.describe()
            )),
            Err(e) => {
                panic!(
                    "daemon stopped serving after {after}: {e}\nfailures so far: {:#?}\n{}",
                    self.failures,
                    self.p.stderr_tail()
                );
            }
        }
    }

    fn check_response(&mut self, name: &str, r: &Response, accepted: &[u32]) {
        if !accepted.contains(&r.ty()) {
            let names: Vec<_> = accepted.iter().map(|t| type_name(*t)).collect();
            self.failures.push(format!(
                "{name}: expected one of {names:?}, got {}",
                r.describe()
            ));
        } else if r.used_len as usize != CTRL_HDR_SIZE {
            self.failures.push(format!(
                "{name}: error response used_len {} != 24",
                r.used_len
            ));
        }
    }

    /// Send `c`, expect a response type in `accepted`, then check the daemon still serves.
    fn case(&mut self, name: &str, c: Command, accepted: &[u32]) {
        match self.fe.request(&c) {
            Ok(r) => self.check_response(name, &r, accepted),
            Err(e) => self.failures.push(format!("{name}: {e}")),
        }
        self.alive(name);
    }

    /// Send a hand-built chain; it must be used (returned) with an error type in `accepted`, or,
    /// when `may_be_empty`, with nothing written.
    fn chain(
        &mut self,
        name: &str,
        q: QueueId,
        segs: &[Segment],
        accepted: &[u32],
        may_be_empty: bool,
    ) {
        let res = self.fe.submit_segments(q, segs).and_then(|pend| {
            self.fe.kick(q)?;
            self.fe.wait(pend)
        });
        match res {
            Ok(r) if r.used_len == 0 && may_be_empty => {}
            Ok(r) => self.check_response(name, &r, accepted),
            Err(e) => self
                .failures
                .push(format!("{name}: chain not returned: {e}")),
        }
        self.alive(name);
    }

    fn ok(&mut self, c: Command) {
        let name = type_name(c.hdr.ty);
        if let Err(e) = self.fe.ok(&c) {
            panic!("setup {name} failed: {e}\n{}", self.p.stderr_tail());
        }
    }

    fn finish(self) {
        assert!(
            self.failures.is_empty(),
            "{} error-path cases failed:\n{}\n{}",
            self.failures.len(),
            self.failures.join("\n"),
            self.p.stderr_tail()
        );
    }
}

const INVALID_ID: &[u32] = &[resp::ERR_INVALID_RESOURCE_ID];
const INVALID_PARAM: &[u32] = &[resp::ERR_INVALID_PARAMETER];
/// Guest addresses that are not guest memory: spec-wise an unspecified error or a bad parameter.
const BAD_ADDR: &[u32] = &[resp::ERR_UNSPEC, resp::ERR_INVALID_PARAMETER];
/// A resource too large for the host: out of memory or a bad parameter.
const TOO_BIG: &[u32] = &[resp::ERR_OUT_OF_MEMORY, resp::ERR_INVALID_PARAMETER];
/// A malformed request (short body, unknown command): unspecified or bad parameter.
const MALFORMED: &[u32] = &[resp::ERR_UNSPEC, resp::ERR_INVALID_PARAMETER];

fn unknown_ids_and_bad_parameters(rd: Renderer) {
    let (p, fe) = start_on(rd, FrontendOptions::default());
    let mut c = Cases::new(&p, fe);
    let backing = c.fe.memory().alloc(64 * 64 * 4, 4096).unwrap();
    c.ok(Command::resource_create_2d(
        1,
        format::B8G8R8X8_UNORM,
        64,
        64,
    ));

    // Unknown resource ids.
    c.case(
        "unref unknown",
        Command::resource_unref(UNKNOWN),
        INVALID_ID,
    );
    c.case(
        "flush unknown",
        Command::resource_flush(UNKNOWN, Rect::new(0, 0, 1, 1)),
        INVALID_ID,
    );
    c.case(
        "transfer unknown",
        Command::transfer_to_host_2d(UNKNOWN, Rect::new(0, 0, 1, 1), 0),
        INVALID_ID,
    );
    c.case(
        "attach unknown",
        Command::attach_backing(
            UNKNOWN,
            &[MemEntry {
                addr: backing,
                length: 4096,
            }],
        ),
        INVALID_ID,
    );
    c.case(
        "detach unknown",
        Command::detach_backing(UNKNOWN),
        INVALID_ID,
    );
    c.case(
        "set_scanout unknown resource",
        Command::set_scanout(0, UNKNOWN, Rect::new(0, 0, 1, 1)),
        INVALID_ID,
    );
    c.case(
        "cursor on ctrlq is not a control command",
        Command::update_cursor(0, 0, 0, 1, (0, 0))
            .on_queue(QueueId::Control)
            .response_len(24),
        MALFORMED,
    );

    // Creation.
    c.case(
        "create id 0",
        Command::resource_create_2d(0, format::B8G8R8X8_UNORM, 4, 4),
        INVALID_ID,
    );
    c.case(
        "create duplicate id",
        Command::resource_create_2d(1, format::B8G8R8X8_UNORM, 4, 4),
        INVALID_ID,
    );
    // (Distinct ids, so that one wrongly accepted creation does not spoil the next case.)
    c.case(
        "create bad format",
        Command::resource_create_2d(2, 999, 4, 4),
        INVALID_PARAM,
    );
    c.case(
        "create width 0",
        Command::resource_create_2d(3, format::B8G8R8X8_UNORM, 0, 4),
        INVALID_PARAM,
    );
    c.case(
        "create height 0",
        Command::resource_create_2d(4, format::B8G8R8X8_UNORM, 4, 0),
        INVALID_PARAM,
    );
    c.case(
        "create huge",
        Command::resource_create_2d(5, format::B8G8R8X8_UNORM, 65536, 65536),
        TOO_BIG,
    );
    c.case(
        "create overflowing",
        Command::resource_create_2d(6, format::B8G8R8X8_UNORM, u32::MAX, u32::MAX),
        TOO_BIG,
    );

    // Scanouts.
    c.case(
        "set_scanout id 16",
        Command::set_scanout(16, 1, Rect::new(0, 0, 64, 64)),
        &[resp::ERR_INVALID_SCANOUT_ID],
    );
    c.case(
        "set_scanout id MAX",
        Command::set_scanout(u32::MAX, 1, Rect::new(0, 0, 64, 64)),
        &[resp::ERR_INVALID_SCANOUT_ID],
    );
    c.case(
        "set_scanout rect outside",
        Command::set_scanout(0, 1, Rect::new(32, 32, 64, 64)),
        INVALID_PARAM,
    );
    c.case(
        "set_scanout rect overflow",
        Command::set_scanout(0, 1, Rect::new(u32::MAX, 0, 2, 2)),
        INVALID_PARAM,
    );
    c.case(
        "get_edid scanout 16",
        Command::get_edid(16),
        &[resp::ERR_INVALID_PARAMETER, resp::ERR_INVALID_SCANOUT_ID],
    );

    // Transfers and flushes without backing / outside the resource.
    c.case(
        "transfer without backing",
        Command::transfer_to_host_2d(1, Rect::new(0, 0, 64, 64), 0),
        &[
            resp::ERR_UNSPEC,
            resp::ERR_INVALID_PARAMETER,
            resp::ERR_INVALID_RESOURCE_ID,
        ],
    );
    c.ok(Command::attach_backing(
        1,
        &[MemEntry {
            addr: backing,
            length: 64 * 64 * 4,
        }],
    ));
    c.case(
        "attach twice",
        Command::attach_backing(
            1,
            &[MemEntry {
                addr: backing,
                length: 4096,
            }],
        ),
        &[resp::ERR_UNSPEC, resp::ERR_INVALID_PARAMETER],
    );
    c.case(
        "transfer rect outside",
        Command::transfer_to_host_2d(1, Rect::new(60, 0, 8, 8), 0),
        INVALID_PARAM,
    );
    c.case(
        "transfer rect overflow",
        Command::transfer_to_host_2d(1, Rect::new(1, 1, u32::MAX, 1), 0),
        INVALID_PARAM,
    );
    c.case(
        "transfer offset beyond backing",
        Command::transfer_to_host_2d(1, Rect::new(0, 0, 8, 8), 64 * 64 * 4),
        &[resp::ERR_INVALID_PARAMETER, resp::ERR_UNSPEC],
    );
    c.case(
        "transfer offset overflow",
        Command::transfer_to_host_2d(1, Rect::new(0, 0, 8, 8), u64::MAX - 3),
        &[resp::ERR_INVALID_PARAMETER, resp::ERR_UNSPEC],
    );
    c.case(
        "flush rect outside",
        Command::resource_flush(1, Rect::new(0, 60, 64, 8)),
        INVALID_PARAM,
    );
    c.case(
        "flush rect overflow",
        Command::resource_flush(1, Rect::new(u32::MAX, u32::MAX, 2, 2)),
        INVALID_PARAM,
    );

    // Capsets and unknown commands.
    c.case(
        "get_capset unknown id",
        Command::get_capset(UNKNOWN, 1, 64),
        INVALID_PARAM,
    );
    c.case(
        "unknown command 0x0999",
        Command::new(0x0999, vec![0; 8]),
        &[resp::ERR_UNSPEC],
    );
    c.case(
        "unknown command 0x1100 (a response type)",
        Command::new(resp::OK_NODATA, Vec::new()),
        &[resp::ERR_UNSPEC],
    );

    // Errors of fenced commands still carry the fence.
    match c.fe.request(&Command::resource_unref(UNKNOWN).fenced(77)) {
        Ok(r) => {
            if (r.ty(), r.hdr.flags & FLAG_FENCE, r.hdr.fence_id)
                != (resp::ERR_INVALID_RESOURCE_ID, FLAG_FENCE, 77)
            {
                c.failures.push(format!("fenced error: {}", r.describe()));
            }
        }
        Err(e) => c.failures.push(format!("fenced error: {e}")),
    }
    c.finish();
}

fn bad_backing_entries(rd: Renderer) {
    let (p, fe) = start_on(rd, FrontendOptions::default());
    let mut c = Cases::new(&p, fe);
    let mem_size = c.fe.memory().size();
    let good = c.fe.memory().alloc(16 * 16 * 4, 4096).unwrap();
    let mut next = 1u32;
    let mut fresh = |c: &mut Cases| {
        next += 1;
        c.ok(Command::resource_create_2d(
            next,
            format::B8G8R8X8_UNORM,
            16,
            16,
        ));
        next
    };
    let id = fresh(&mut c);
    c.case(
        "entry beyond guest memory",
        Command::attach_backing(
            id,
            &[MemEntry {
                addr: mem_size + 4096,
                length: 4096,
            }],
        ),
        BAD_ADDR,
    );
    let id = fresh(&mut c);
    c.case(
        "entry straddling the end of guest memory",
        Command::attach_backing(
            id,
            &[MemEntry {
                addr: mem_size - 2048,
                length: 4096,
            }],
        ),
        BAD_ADDR,
    );
    let id = fresh(&mut c);
    c.case(
        "entry address overflows",
        Command::attach_backing(
            id,
            &[MemEntry {
                addr: u64::MAX - 100,
                length: 4096,
            }],
        ),
        BAD_ADDR,
    );
    let id = fresh(&mut c);
    c.case(
        "entry at 2^63",
        Command::attach_backing(
            id,
            &[MemEntry {
                addr: 1 << 63,
                length: 1,
            }],
        ),
        BAD_ADDR,
    );
    let id = fresh(&mut c);
    c.case(
        "nr_entries larger than the entries sent",
        Command::attach_backing_raw(
            id,
            4,
            &[MemEntry {
                addr: good,
                length: 1024,
            }],
        ),
        MALFORMED,
    );
    let id = fresh(&mut c);
    c.case(
        "nr_entries = 2^31",
        Command::attach_backing_raw(
            id,
            1 << 31,
            &[MemEntry {
                addr: good,
                length: 1024,
            }],
        ),
        &[
            resp::ERR_UNSPEC,
            resp::ERR_INVALID_PARAMETER,
            resp::ERR_OUT_OF_MEMORY,
        ],
    );
    let id = fresh(&mut c);
    c.case(
        "nr_entries = u32::MAX",
        Command::attach_backing_raw(id, u32::MAX, &[]),
        &[
            resp::ERR_UNSPEC,
            resp::ERR_INVALID_PARAMETER,
            resp::ERR_OUT_OF_MEMORY,
        ],
    );
    // Too many entries, all present in the chain: 20000 entries of one byte each (QEMU caps at
    // 16384; a device must bound it somewhere and refuse, not allocate without limit).
    let id = fresh(&mut c);
    let many: Vec<MemEntry> = (0..20000u64)
        .map(|i| MemEntry {
            addr: good + (i % 4096),
            length: 1,
        })
        .collect();
    c.case(
        "20000 entries",
        Command::attach_backing(id, &many),
        &[
            resp::ERR_UNSPEC,
            resp::ERR_INVALID_PARAMETER,
            resp::ERR_OUT_OF_MEMORY,
        ],
    );
    // A backing that is too small for the transfer.
    let id = fresh(&mut c);
    c.ok(Command::attach_backing(
        id,
        &[MemEntry {
            addr: good,
            length: 100,
        }],
    ));
    c.case(
        "transfer beyond a short backing",
        Command::transfer_to_host_2d(id, Rect::new(0, 0, 16, 16), 0),
        &[resp::ERR_INVALID_PARAMETER, resp::ERR_UNSPEC],
    );
    c.finish();
}

fn malformed_chains(rd: Renderer) {
    let (p, fe) = start_on(rd, FrontendOptions::default());
    let mut c = Cases::new(&p, fe);
    let mem_size = c.fe.memory().size();
    let create = Command::resource_create_2d(5, format::B8G8R8X8_UNORM, 8, 8).to_bytes();
    let q = QueueId::Control;
    c.chain(
        "request shorter than a header",
        q,
        &[Segment::Bytes(vec![0; 10]), Segment::Writable(24)],
        MALFORMED,
        true,
    );
    c.chain(
        "empty request",
        q,
        &[Segment::Bytes(Vec::new()), Segment::Writable(24)],
        MALFORMED,
        true,
    );
    c.chain(
        "create with a short body",
        q,
        &[
            Segment::Bytes(create[..CTRL_HDR_SIZE + 8].to_vec()),
            Segment::Writable(24),
        ],
        MALFORMED,
        false,
    );
    c.chain(
        "no response buffer",
        q,
        &[Segment::Bytes(create.clone())],
        &[],
        true,
    );
    c.chain(
        "response buffer of 8 bytes",
        q,
        &[
            Segment::Bytes(Command::get_display_info().to_bytes()),
            Segment::Writable(8),
        ],
        &[],
        true,
    );
    c.chain(
        "readable descriptor outside guest memory",
        q,
        &[
            Segment::At {
                addr: mem_size + 0x1000,
                len: 64,
                writable: false,
            },
            Segment::Writable(24),
        ],
        MALFORMED,
        true,
    );
    c.chain(
        "writable descriptor outside guest memory",
        q,
        &[
            Segment::Bytes(Command::get_display_info().to_bytes()),
            Segment::At {
                addr: u64::MAX - 8,
                len: 408,
                writable: true,
            },
        ],
        &[],
        true,
    );
    c.chain(
        "readable after writable",
        q,
        &[Segment::Writable(24), Segment::Bytes(create.clone())],
        MALFORMED,
        true,
    );
    // A request split over several descriptors is legal and must work.
    let mut parts = Vec::new();
    for chunk in create.chunks(7) {
        parts.push(Segment::Bytes(chunk.to_vec()));
    }
    parts.push(Segment::Writable(12));
    parts.push(Segment::Writable(12));
    c.chain(
        "request split over 6 descriptors (legal)",
        q,
        &parts,
        &[resp::OK_NODATA],
        false,
    );

    // Control commands on the cursor queue must not execute.
    let r = c.fe.request(
        &Command::resource_create_2d(9, format::B8G8R8X8_UNORM, 4, 4).on_queue(QueueId::Cursor),
    );
    if let Err(e) = r {
        c.failures.push(format!(
            "control command on the cursor queue not returned: {e}"
        ));
    }
    match c.fe.request(&Command::resource_create_2d(9, format::B8G8R8X8_UNORM, 4, 4)) {
        Ok(r) if r.ty() == resp::OK_NODATA => {}
        Ok(r) => c.failures.push(format!("a control command on the cursor queue was executed: create of id 9 on ctrlq now gives {}", r.describe())),
        Err(e) => c.failures.push(format!("create after wrong-queue: {e}")),
    }
    // Odd header fields: a context id on a 2D command is ignored; unknown flags are ignored.
    let mut body = Vec::new();
    CtrlHdr {
        ty: cmd::RESOURCE_CREATE_2D,
        flags: 0x80,
        fence_id: 0,
        ctx_id: 99,
        ring_idx: 0,
    }
    .encode(&mut body);
    for v in [10, format::B8G8R8X8_UNORM, 4, 4] {
        put32(&mut body, v);
    }
    c.chain(
        "unknown header flag bits",
        q,
        &[Segment::Bytes(body), Segment::Writable(24)],
        &[resp::OK_NODATA, resp::ERR_INVALID_PARAMETER],
        false,
    );
    c.finish();
}

per_renderer!(
    unknown_ids_and_bad_parameters,
    bad_backing_entries,
    malformed_chains,
);
