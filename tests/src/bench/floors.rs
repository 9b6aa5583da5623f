//! The physical floors, measured in the same run as the backends: memcpy bandwidth (one
//! thread, buffers of a frame's size) and the round trip of an eventfd ping-pong between two
//! threads (the cost of one kick and one call when nothing else is done). Beside them, two
//! figures for the two threads on two different CPUs, where the scheduler may put a frontend and
//! a daemon: the same ping-pong, and a round trip where one side polls (as our daemon does
//! between commands) and only the other sleeps.

use std::sync::Arc;
use std::time::Instant;

use vmm_sys_util::eventfd::EventFd;

use crate::error::{Error, Result};

/// Copies timed per memcpy measurement (the fastest is kept: a floor is a best case).
pub const MEMCPY_TRIALS: usize = 9;
/// Round trips per ping-pong batch.
pub const PINGPONG_BATCH: u32 = 2000;
/// Batches (the fastest batch is kept).
pub const PINGPONG_BATCHES: usize = 9;

/// Median of a slice (sorted copy); None when empty.
pub fn median(v: &[f64]) -> Option<f64> {
    percentile(v, 50.0)
}

/// The `p`th percentile (nearest rank) of a slice; None when empty.
pub fn percentile(v: &[f64], p: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * s.len() as f64).ceil() as usize;
    Some(s[rank.clamp(1, s.len()) - 1])
}

/// Seconds one memcpy of `bytes` takes (fastest of [`MEMCPY_TRIALS`], source and destination
/// touched first so that page faults are not counted).
pub fn memcpy_seconds(bytes: usize) -> f64 {
    let src: Vec<u8> = (0..bytes).map(|i| (i * 7) as u8).collect();
    let mut dst = vec![1u8; bytes];
    let mut t = Vec::with_capacity(MEMCPY_TRIALS);
    for _ in 0..MEMCPY_TRIALS {
        let s = Instant::now();
        dst.copy_from_slice(&src);
        std::hint::black_box(&mut dst);
        t.push(s.elapsed().as_secs_f64());
    }
    t.into_iter().fold(f64::NAN, f64::min)
}

/// Seconds of one eventfd round trip between two threads (blocking reads), fastest batch: the
/// better of the scheduler's placement and both threads on the CPU the caller runs on (a wake-up
/// on the same CPU needs no inter-processor interrupt; on a VM the two differ by about 2x).
pub fn eventfd_round_trip_seconds() -> Result<f64> {
    let free = ping_pong(None, None)?;
    // SAFETY: sched_getcpu has no preconditions.
    let cpu = unsafe { libc::sched_getcpu() };
    let pinned = usize::try_from(cpu)
        .ok()
        .and_then(|cpu| ping_pong(Some(cpu), Some(cpu)).ok());
    Ok(pinned.map_or(free, |p| p.min(free)))
}

/// Seconds of one eventfd round trip with the two threads pinned to two different CPUs the
/// caller may run on (the first two of its affinity set; the fastest batch), or `None` with
/// fewer than two CPUs. Not a floor: what a kick and a call cost when the scheduler puts the
/// frontend's thread and the daemon's thread on different CPUs (on a VM, a wake-up of an idle
/// vCPU).
pub fn eventfd_round_trip_cross_cpu_seconds() -> Option<f64> {
    let (_, a, b) = two_cpus()?;
    ping_pong(Some(a), Some(b)).ok()
}

/// The caller's affinity set and its first two CPUs (`None` with fewer than two).
fn two_cpus() -> Option<(libc::cpu_set_t, usize, usize)> {
    let set = current_affinity().ok()?;
    // SAFETY: CPU_ISSET reads the set, bounds-checked against its size.
    let mut cpus = (0..libc::CPU_SETSIZE as usize).filter(|&c| unsafe { libc::CPU_ISSET(c, &set) });
    let (a, b) = (cpus.next()?, cpus.next()?);
    Some((set, a, b))
}

/// Seconds of one round trip across two CPUs where one side polls and the other sleeps: the
/// calling thread, on the first CPU of its affinity set, stores a sequence number and sleeps on
/// an eventfd; a thread on the second CPU spins until it sees the number and writes the eventfd.
/// Fastest batch; `None` with fewer than two CPUs. This is what a polling daemon and a frontend
/// that sleeps on its call eventfd cannot go below when the scheduler puts them on different
/// CPUs: one cache line across and one wake-up of the sleeping thread (on a VM, of an idle vCPU).
pub fn polled_round_trip_cross_cpu_seconds() -> Option<f64> {
    let (set, a, b) = two_cpus()?;
    set_affinity(&cpu_set_of(a)).ok()?;
    let r = polled_ping_pong(b);
    let _ = set_affinity(&set);
    r.ok()
}

fn polled_ping_pong(echo_cpu: usize) -> Result<f64> {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let seq = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let pong = Arc::new(EventFd::new(0).map_err(|e| Error::io("eventfd", e))?);
    let (s, st, po) = (seq.clone(), stop.clone(), pong.clone());
    let echo = std::thread::Builder::new()
        .name("floor-poll-echo".into())
        .spawn(move || -> std::io::Result<()> {
            // Unpinned on failure: the measurement still ends.
            let _ = set_affinity(&cpu_set_of(echo_cpu));
            let mut seen = 0u64;
            while !st.load(Ordering::Acquire) {
                let now = s.load(Ordering::Acquire);
                if now != seen {
                    seen = now;
                    po.write(1)?;
                } else {
                    std::hint::spin_loop();
                }
            }
            Ok(())
        })
        .map_err(|e| Error::io("spawn echo thread", e))?;
    let mut t = Vec::with_capacity(PINGPONG_BATCHES);
    let mut res = Ok(());
    let mut n = 0u64;
    'outer: for _ in 0..PINGPONG_BATCHES {
        let start = Instant::now();
        for _ in 0..PINGPONG_BATCH {
            n += 1;
            seq.store(n, Ordering::Release);
            if let Err(e) = pong.read() {
                res = Err(Error::io("polled ping-pong", e));
                break 'outer;
            }
        }
        t.push(start.elapsed().as_secs_f64() / f64::from(PINGPONG_BATCH));
    }
    stop.store(true, Ordering::Release);
    let _ = echo.join();
    res?;
    fastest_batch(t, "polled ping-pong")
}

fn cpu_set_of(cpu: usize) -> libc::cpu_set_t {
    // SAFETY: cpu_set_t is plain data; all zeroes is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: CPU_SET bounds-checks `cpu` against the set's size.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    set
}

fn current_affinity() -> std::io::Result<libc::cpu_set_t> {
    // SAFETY: cpu_set_t is plain data; all zeroes is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: writes at most size_of::<cpu_set_t>() bytes into `set`, a live local.
    let r = unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if r == 0 {
        Ok(set)
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn set_affinity(set: &libc::cpu_set_t) -> std::io::Result<()> {
    // SAFETY: reads size_of::<cpu_set_t>() bytes from `set`, a live reference.
    let r = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), set) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// One ping-pong measurement, the calling thread pinned to `pin` and the echo thread to
/// `echo_pin` if given (the caller's affinity is restored afterwards).
fn ping_pong(pin: Option<usize>, echo_pin: Option<usize>) -> Result<f64> {
    let restore = match pin {
        Some(cpu) => {
            let old = current_affinity().map_err(|e| Error::io("sched_getaffinity", e))?;
            set_affinity(&cpu_set_of(cpu)).map_err(|e| Error::io("sched_setaffinity", e))?;
            Some(old)
        }
        None => None,
    };
    let r = ping_pong_inner(echo_pin);
    if let Some(old) = restore {
        set_affinity(&old).map_err(|e| Error::io("restore affinity", e))?;
    }
    r
}

fn ping_pong_inner(pin: Option<usize>) -> Result<f64> {
    let ping = Arc::new(EventFd::new(0).map_err(|e| Error::io("eventfd", e))?);
    let pong = Arc::new(EventFd::new(0).map_err(|e| Error::io("eventfd", e))?);
    let total = PINGPONG_BATCH as u64 * PINGPONG_BATCHES as u64;
    let (pi, po) = (ping.clone(), pong.clone());
    let echo = std::thread::Builder::new()
        .name("floor-echo".into())
        .spawn(move || -> std::io::Result<()> {
            if let Some(cpu) = pin {
                // Unpinned on failure: the measurement still ends (the caller keeps the better).
                let _ = set_affinity(&cpu_set_of(cpu));
            }
            let mut seen = 0u64;
            while seen < total {
                seen += pi.read()?;
                po.write(1)?;
            }
            Ok(())
        })
        .map_err(|e| Error::io("spawn echo thread", e))?;
    let mut t = Vec::with_capacity(PINGPONG_BATCHES);
    let mut res = Ok(());
    'outer: for _ in 0..PINGPONG_BATCHES {
        let s = Instant::now();
        for _ in 0..PINGPONG_BATCH {
            if let Err(e) = ping.write(1).and_then(|_| pong.read()) {
                res = Err(Error::io("eventfd ping-pong", e));
                break 'outer;
            }
        }
        t.push(s.elapsed().as_secs_f64() / f64::from(PINGPONG_BATCH));
    }
    if res.is_err() {
        // Unblock the echo thread so it can be joined.
        let _ = ping.write(total);
    }
    let _ = echo.join();
    res?;
    fastest_batch(t, "ping-pong")
}

/// The fastest of the batches' seconds per round trip (a floor is a best case).
fn fastest_batch(t: Vec<f64>, what: &str) -> Result<f64> {
    let best = t.into_iter().fold(f64::NAN, f64::min);
    if best.is_finite() && best > 0.0 {
        Ok(best)
    } else {
        Err(Error::Malformed(format!("{what} measured {best} s")))
    }
}

/// The floors of one run.
#[derive(Clone, Debug)]
pub struct Floors {
    /// Bytes per second of one memcpy of a 1920x1080x4 frame.
    pub memcpy_bps_1080p: f64,
    /// Bytes per second of one memcpy of a 3840x2160x4 frame.
    pub memcpy_bps_2160p: f64,
    /// Seconds of one eventfd round trip.
    pub eventfd_rtt_s: f64,
    /// Seconds of one eventfd round trip across two CPUs (not a floor; `None`: one CPU).
    pub eventfd_rtt_cross_cpu_s: Option<f64>,
    /// Seconds of one round trip across two CPUs with one side polling and the other sleeping
    /// (the floor of a polling daemon whose frontend runs on another CPU; `None`: one CPU).
    pub polled_rtt_cross_cpu_s: Option<f64>,
}

impl Floors {
    /// Measure them now.
    pub fn measure() -> Result<Self> {
        let b1 = 1920 * 1080 * 4;
        let b2 = 3840 * 2160 * 4;
        Ok(Floors {
            memcpy_bps_1080p: b1 as f64 / memcpy_seconds(b1),
            memcpy_bps_2160p: b2 as f64 / memcpy_seconds(b2),
            eventfd_rtt_s: eventfd_round_trip_seconds()?,
            eventfd_rtt_cross_cpu_s: eventfd_round_trip_cross_cpu_seconds(),
            polled_rtt_cross_cpu_s: polled_round_trip_cross_cpu_seconds(),
        })
    }

    /// Memcpy seconds for `bytes` at the bandwidth measured for the nearest size (small copies
    /// use the 1080p bandwidth, which is the cache-friendlier, higher one: a lower floor).
    pub fn memcpy_s(&self, bytes: u64) -> f64 {
        let bw = if bytes > 1920 * 1080 * 4 {
            self.memcpy_bps_2160p
        } else {
            self.memcpy_bps_1080p
        };
        bytes as f64 / bw
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(median(&v), Some(50.0));
        assert_eq!(percentile(&v, 99.0), Some(99.0));
        assert_eq!(percentile(&[3.0], 99.0), Some(3.0));
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn floors_are_positive() {
        assert!(memcpy_seconds(1 << 20) > 0.0);
        let rtt = eventfd_round_trip_seconds().unwrap();
        assert!(rtt > 0.0 && rtt < 0.01, "{rtt}");
    }

    #[test]
    fn the_polled_round_trip_needs_two_cpus_and_ends() {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let before = current_affinity().unwrap();
        match polled_round_trip_cross_cpu_seconds() {
            Some(rtt) => assert!(rtt > 0.0 && rtt < 0.01, "{rtt}"),
            None => assert_eq!(cpus, 1, "two CPUs and no measurement"),
        }
        // The caller's affinity is given back.
        let after = current_affinity().unwrap();
        // SAFETY: CPU_EQUAL compares two live sets.
        assert!(unsafe { libc::CPU_EQUAL(&before, &after) });
    }
}
