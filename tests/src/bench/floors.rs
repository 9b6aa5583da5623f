//! The physical floors, measured in the same run as the backends: memcpy bandwidth (one
//! thread, buffers of a frame's size) and the round trip of an eventfd ping-pong between two
//! threads (the cost of one kick and one call when nothing else is done).

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

/// Seconds of one eventfd round trip between two threads (blocking reads), fastest batch.
pub fn eventfd_round_trip_seconds() -> Result<f64> {
    let ping = Arc::new(EventFd::new(0).map_err(|e| Error::io("eventfd", e))?);
    let pong = Arc::new(EventFd::new(0).map_err(|e| Error::io("eventfd", e))?);
    let total = PINGPONG_BATCH as u64 * PINGPONG_BATCHES as u64;
    let (pi, po) = (ping.clone(), pong.clone());
    let echo = std::thread::Builder::new()
        .name("floor-echo".into())
        .spawn(move || -> std::io::Result<()> {
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
    let best = t.into_iter().fold(f64::NAN, f64::min);
    if best.is_finite() && best > 0.0 {
        Ok(best)
    } else {
        Err(Error::Malformed(format!("ping-pong measured {best} s")))
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
}
