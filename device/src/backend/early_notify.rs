//! Early notification: whether the answers ready before a RESOURCE_FLUSH go out before it runs.
//!
//! A driver that sends TRANSFER_TO_HOST_2D then RESOURCE_FLUSH in one batch waits for the
//! transfer's answer. Publishing it before the flush runs lets the driver's thread work while
//! the flush sends its pixels to the display, when the two threads run on different CPUs (the
//! normal case: gpu-bench damage-64, the bench's thread on the other vCPU, x1.40). When the
//! driver's thread shares the daemon's CPU, the notification instead wakes it in the middle of
//! the flush: it preempts the daemon, finds its flush not answered yet and sleeps again, a pair
//! of context switches per frame for nothing (damage-64 on one CPU, x1.13 slower).
//!
//! The daemon cannot see where the frontend's thread runs, but it can see the effect: the GPU
//! thread's involuntary context switches (`getrusage(RUSAGE_THREAD)`) during an early-notified
//! flush. [`EarlyNotify`] notifies early, counts the flushes that were preempted in a window of
//! [`WINDOW`] and, when at least [`PREEMPTED_TO_STOP`] were, stops notifying early for the next
//! [`PAUSE`] flushes, then tries again (the frontend's thread may have moved).

/// Early-notified flushes judged together.
pub const WINDOW: u32 = 16;
/// Preempted flushes in a window that stop early notification.
pub const PREEMPTED_TO_STOP: u32 = 8;
/// Flushes without early notification after a window that stopped it.
pub const PAUSE: u32 = 1024;

/// The decision and what it learned so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EarlyNotify {
    /// Early-notified flushes judged in the current window.
    judged: u32,
    /// Of those, preempted ones.
    preempted: u32,
    /// Flushes left to run without early notification.
    paused: u32,
    /// Windows that stopped early notification (for the log and the tests).
    pauses: u64,
}

impl Default for EarlyNotify {
    fn default() -> Self {
        Self::new()
    }
}

impl EarlyNotify {
    /// Starts notifying early.
    pub fn new() -> Self {
        EarlyNotify {
            judged: 0,
            preempted: 0,
            paused: 0,
            pauses: 0,
        }
    }

    /// Called before a flush that has answers ready before it: whether to publish them now.
    /// A `false` counts the flush against the pause.
    pub fn before_flush(&mut self) -> bool {
        if self.paused > 0 {
            self.paused -= 1;
            return false;
        }
        true
    }

    /// Called after an early-notified flush ran: whether the GPU thread was preempted meanwhile.
    pub fn after_flush(&mut self, preempted: bool) {
        self.judged += 1;
        self.preempted += u32::from(preempted);
        if self.judged < WINDOW {
            return;
        }
        if self.preempted >= PREEMPTED_TO_STOP {
            self.paused = PAUSE;
            self.pauses += 1;
            log::debug!(
                "early notification: {} of {} flushes preempted, paused for {PAUSE} flushes",
                self.preempted,
                self.judged
            );
        }
        self.judged = 0;
        self.preempted = 0;
    }

    /// How many windows stopped early notification so far.
    pub fn pauses(&self) -> u64 {
        self.pauses
    }
}

/// The calling thread's involuntary context switches so far, or `None` where the kernel does
/// not say (then no flush counts as preempted: early notification stays on).
pub fn involuntary_switches() -> Option<i64> {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::uninit();
    // SAFETY: getrusage writes one `rusage` into the pointer it is given, a live local of that
    // type, and nothing else; it is initialised only when the call succeeds (checked below).
    let r = unsafe { libc::getrusage(libc::RUSAGE_THREAD, usage.as_mut_ptr()) };
    if r != 0 {
        return None;
    }
    // SAFETY: getrusage returned 0, so it filled the whole struct.
    let usage = unsafe { usage.assume_init() };
    Some(usage.ru_nivcsw)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_flushes(e: &mut EarlyNotify, n: u32, preempted: bool) -> u32 {
        let mut early = 0;
        for _ in 0..n {
            if e.before_flush() {
                early += 1;
                e.after_flush(preempted);
            }
        }
        early
    }

    #[test]
    fn notifies_early_while_the_flushes_are_not_preempted() {
        let mut e = EarlyNotify::new();
        assert_eq!(run_flushes(&mut e, 10_000, false), 10_000);
        assert_eq!(e.pauses(), 0);
    }

    #[test]
    fn a_window_of_preempted_flushes_pauses_it_then_it_tries_again() {
        let mut e = EarlyNotify::new();
        // One window, every flush preempted: the next PAUSE flushes are not notified early.
        assert_eq!(run_flushes(&mut e, WINDOW, true), WINDOW);
        assert_eq!(e.pauses(), 1);
        assert_eq!(run_flushes(&mut e, PAUSE, true), 0);
        // Then it tries again; the frontend moved to another CPU: it stays on.
        assert_eq!(run_flushes(&mut e, 3 * WINDOW, false), 3 * WINDOW);
        assert_eq!(e.pauses(), 1);
    }

    #[test]
    fn with_a_shared_cpu_only_one_window_in_a_pause_is_notified_early() {
        let mut e = EarlyNotify::new();
        let n = 10 * (PAUSE + WINDOW);
        let early = run_flushes(&mut e, n, true);
        assert_eq!(early, 10 * WINDOW);
        assert_eq!(e.pauses(), 10);
    }

    #[test]
    fn a_few_preempted_flushes_do_not_pause_it() {
        let mut e = EarlyNotify::new();
        let mut early = 0;
        for i in 0..(100 * WINDOW) {
            if e.before_flush() {
                early += 1;
                // Just under the threshold in every window.
                e.after_flush(i % WINDOW < PREEMPTED_TO_STOP - 1);
            }
        }
        assert_eq!(early, 100 * WINDOW);
        assert_eq!(e.pauses(), 0);
    }

    #[test]
    fn the_kernel_counts_this_threads_involuntary_switches() {
        let a = involuntary_switches().expect("getrusage(RUSAGE_THREAD)");
        let b = involuntary_switches().expect("getrusage(RUSAGE_THREAD)");
        assert!(a >= 0 && b >= a);
    }
}
