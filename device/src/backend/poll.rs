//! Adaptive polling: how long the GPU thread keeps looking for new work before it sleeps.
//!
//! A guest's command stream comes in bursts: the driver waits for an answer, then sends the next
//! command. When the daemon sleeps in `epoll_wait` between them, every command pays a wake-up of
//! the daemon's thread on top of the wake-up of the driver's; where the two run on different
//! CPUs that wake-up is an inter-processor interrupt (in a VM, a vCPU leaving its halt: 30 us and
//! more on the machines the benchmark runs on). Polling for a short while after a batch, as QEMU's
//! IOThreads do (`poll-max-ns`), takes the next command of a burst without that wake-up.
//!
//! The window adapts like QEMU's (`util/aio-posix.c`): it starts at zero, grows (4 us, then
//! doubling) while events keep arriving within the maximum, stays while they arrive within the
//! window, and drops to zero as soon as an event took longer than the maximum (an idle guest),
//! so an idle device never spins. The maximum is `--poll-max-us`; 0 turns polling off.

use std::time::Duration;

/// The first window after a wait that would have been caught by polling.
pub const POLL_START: Duration = Duration::from_micros(4);

/// The current polling window and its bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdaptivePoll {
    window: Duration,
    max: Duration,
}

impl AdaptivePoll {
    /// A poller that never polls longer than `max` (zero: never polls).
    pub fn new(max: Duration) -> Self {
        AdaptivePoll {
            window: Duration::ZERO,
            max,
        }
    }

    /// How long to poll before sleeping.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// Changes the bound; the window shrinks to it at once.
    pub fn set_max(&mut self, max: Duration) {
        self.max = max;
        self.window = self.window.min(max);
    }

    /// Learns from one wait: `waited` is the time from the start of polling to the event that
    /// ended the wait (polled or slept for).
    pub fn record(&mut self, waited: Duration) {
        if waited <= self.window {
            // Caught while polling: the window is right.
        } else if waited > self.max {
            // Polling would have been wasted: the guest went quiet.
            self.window = Duration::ZERO;
        } else {
            // Slept for something a longer window would have caught.
            self.window = self.window.saturating_mul(2).max(POLL_START).min(self.max);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: Duration = Duration::from_micros(64);

    #[test]
    fn starts_without_polling() {
        assert_eq!(AdaptivePoll::new(MAX).window(), Duration::ZERO);
    }

    #[test]
    fn grows_by_doubling_up_to_the_maximum() {
        let mut p = AdaptivePoll::new(MAX);
        let mut seen = Vec::new();
        for _ in 0..7 {
            p.record(Duration::from_micros(60));
            seen.push(p.window().as_micros());
        }
        assert_eq!(seen, [4, 8, 16, 32, 64, 64, 64]);
    }

    #[test]
    fn keeps_a_window_that_catches_the_events() {
        let mut p = AdaptivePoll::new(MAX);
        for _ in 0..4 {
            p.record(Duration::from_micros(20));
        }
        assert_eq!(p.window(), Duration::from_micros(32));
        for _ in 0..10 {
            p.record(Duration::from_micros(20));
        }
        assert_eq!(p.window(), Duration::from_micros(32));
    }

    #[test]
    fn an_idle_guest_stops_polling() {
        let mut p = AdaptivePoll::new(MAX);
        for _ in 0..5 {
            p.record(Duration::from_micros(10));
        }
        assert!(p.window() > Duration::ZERO);
        p.record(Duration::from_millis(500));
        assert_eq!(p.window(), Duration::ZERO);
        p.record(Duration::from_secs(3));
        assert_eq!(p.window(), Duration::ZERO);
    }

    #[test]
    fn a_zero_maximum_never_polls() {
        let mut p = AdaptivePoll::new(Duration::ZERO);
        for waited in [0, 1, 3, 100] {
            p.record(Duration::from_micros(waited));
            assert_eq!(p.window(), Duration::ZERO);
        }
    }

    #[test]
    fn lowering_the_maximum_bounds_the_window() {
        let mut p = AdaptivePoll::new(MAX);
        for _ in 0..6 {
            p.record(Duration::from_micros(50));
        }
        assert_eq!(p.window(), MAX);
        p.set_max(Duration::from_micros(10));
        assert_eq!(p.window(), Duration::from_micros(10));
        p.set_max(Duration::ZERO);
        assert_eq!(p.window(), Duration::ZERO);
    }
}
