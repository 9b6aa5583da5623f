//! Whether the frontend's thread shares the GPU thread's CPU, judged from the GPU thread's own
//! preemptions, and the two decisions that depend on it.
//!
//! - **Early notification.** A driver that sends TRANSFER_TO_HOST_2D then RESOURCE_FLUSH in one
//!   batch waits for the transfer's answer. Publishing it before the flush runs lets the
//!   driver's thread work while the flush sends its pixels to the display when the two threads
//!   run on different CPUs (gpu-bench damage-64, the bench's thread on the other vCPU: x1.40).
//!   When they share a CPU, the notification instead wakes the driver's thread in the middle of
//!   the flush: it preempts the daemon, finds its flush not answered yet and sleeps again, a
//!   pair of context switches per frame for nothing (damage-64 on one CPU: x1.13 slower).
//! - **Spinning while polling** (`gpu_thread.rs`, `POLL_SPIN`). Between two looks at its epoll
//!   the polling GPU thread spins for a moment on the queues' available rings: a chain is then
//!   answered before the frontend's thread, on another CPU, has gone to sleep, and the
//!   frontend's wake-up from an idle vCPU (12-20 us on the VMs measured) is not paid (gpu-bench
//!   cmd-rtt across two vCPUs 16.68 → 3.59 us, churn x1.72). On a shared CPU the spin only
//!   keeps the frontend from running (damage-64 on one CPU 0.95x): there the thread yields at
//!   once, as before.
//!
//! The daemon cannot see where the frontend's thread runs, but it can see the effect: the GPU
//! thread's involuntary context switches (`getrusage(RUSAGE_THREAD)`: a preemption, or a
//! `sched_yield` that let another thread run) while it does the thing that matters. A
//! [`CpuSharing`] counts the preempted tries in a window of [`WINDOW`] and, when at least
//! [`PREEMPTED_TO_STOP`] were, assumes a shared CPU for the next [`PAUSE`] occasions, then tries
//! again (the frontend's thread may have moved).

/// Tries judged together.
pub const WINDOW: u32 = 16;
/// Preempted tries in a window that make the thread assume a shared CPU.
pub const PREEMPTED_TO_STOP: u32 = 8;
/// Occasions handled as on a shared CPU after such a window.
pub const PAUSE: u32 = 1024;

/// The guess and what it learned so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuSharing {
    /// Tries judged in the current window.
    judged: u32,
    /// Of those, preempted ones.
    preempted: u32,
    /// Occasions left to handle as on a shared CPU.
    paused: u32,
    /// Windows that found a shared CPU (for the log and the tests).
    pauses: u64,
    /// What is decided, for the log.
    what: &'static str,
}

impl CpuSharing {
    /// Starts by assuming the frontend runs on another CPU; `what` names the decision in the
    /// log.
    pub fn new(what: &'static str) -> Self {
        CpuSharing {
            judged: 0,
            preempted: 0,
            paused: 0,
            pauses: 0,
            what,
        }
    }

    /// Called at each occasion: `true` to act as if the frontend ran on another CPU (and then
    /// [`CpuSharing::record`] what happened), `false` while a shared CPU is assumed (the
    /// occasion counts against the pause).
    pub fn try_alone(&mut self) -> bool {
        if self.paused > 0 {
            self.paused -= 1;
            return false;
        }
        true
    }

    /// Records a try: whether the GPU thread was switched out involuntarily meanwhile.
    pub fn record(&mut self, preempted: bool) {
        self.judged += 1;
        self.preempted += u32::from(preempted);
        if self.judged < WINDOW {
            return;
        }
        if self.preempted >= PREEMPTED_TO_STOP {
            self.paused = PAUSE;
            self.pauses += 1;
            log::debug!(
                "{}: {} of {} tries preempted, a shared CPU assumed for {PAUSE} occasions",
                self.what,
                self.preempted,
                self.judged
            );
        }
        self.judged = 0;
        self.preempted = 0;
    }

    /// How many windows found a shared CPU so far.
    pub fn pauses(&self) -> u64 {
        self.pauses
    }
}

/// The calling thread's involuntary context switches so far, or `None` where the kernel does
/// not say (then no try counts as preempted).
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

/// A try in progress: the switch count when it began.
#[derive(Debug, Clone, Copy)]
pub struct Try(Option<i64>);

impl Try {
    /// Begins a try now.
    pub fn begin() -> Self {
        Try(involuntary_switches())
    }

    /// Whether the thread was switched out involuntarily since [`Try::begin`].
    pub fn preempted(self) -> bool {
        match (self.0, involuntary_switches()) {
            (Some(before), Some(after)) => after > before,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(c: &mut CpuSharing, n: u32, preempted: bool) -> u32 {
        let mut alone = 0;
        for _ in 0..n {
            if c.try_alone() {
                alone += 1;
                c.record(preempted);
            }
        }
        alone
    }

    #[test]
    fn stays_alone_while_the_tries_are_not_preempted() {
        let mut c = CpuSharing::new("test");
        assert_eq!(run(&mut c, 10_000, false), 10_000);
        assert_eq!(c.pauses(), 0);
    }

    #[test]
    fn a_window_of_preempted_tries_pauses_it_then_it_tries_again() {
        let mut c = CpuSharing::new("test");
        // One window, every try preempted: the next PAUSE occasions assume a shared CPU.
        assert_eq!(run(&mut c, WINDOW, true), WINDOW);
        assert_eq!(c.pauses(), 1);
        assert_eq!(run(&mut c, PAUSE, true), 0);
        // Then it tries again; the frontend moved to another CPU: it stays alone.
        assert_eq!(run(&mut c, 3 * WINDOW, false), 3 * WINDOW);
        assert_eq!(c.pauses(), 1);
    }

    #[test]
    fn with_a_shared_cpu_only_one_window_in_a_pause_is_tried() {
        let mut c = CpuSharing::new("test");
        let n = 10 * (PAUSE + WINDOW);
        assert_eq!(run(&mut c, n, true), 10 * WINDOW);
        assert_eq!(c.pauses(), 10);
    }

    #[test]
    fn a_few_preempted_tries_do_not_pause_it() {
        let mut c = CpuSharing::new("test");
        let mut alone = 0;
        for i in 0..(100 * WINDOW) {
            if c.try_alone() {
                alone += 1;
                // Just under the threshold in every window.
                c.record(i % WINDOW < PREEMPTED_TO_STOP - 1);
            }
        }
        assert_eq!(alone, 100 * WINDOW);
        assert_eq!(c.pauses(), 0);
    }

    #[test]
    fn the_kernel_counts_this_threads_involuntary_switches() {
        let a = involuntary_switches().expect("getrusage(RUSAGE_THREAD)");
        let b = involuntary_switches().expect("getrusage(RUSAGE_THREAD)");
        assert!(a >= 0 && b >= a);
    }

    fn pin_to(cpu: libc::c_int) {
        // SAFETY: cpu_set_t is plain data; all zeroes is the empty set.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: CPU_SET bounds-checks `cpu` against the set's size.
        unsafe { libc::CPU_SET(usize::try_from(cpu).unwrap(), &mut set) };
        // SAFETY: reads size_of::<cpu_set_t>() bytes from `set`, a live local.
        let r = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
        assert_eq!(r, 0);
    }

    #[test]
    fn a_yield_to_another_thread_on_the_cpu_counts_as_preempted() {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::Arc;
        // SAFETY: sched_getcpu has no preconditions.
        let cpu = unsafe { libc::sched_getcpu() };
        pin_to(cpu);
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let other = std::thread::spawn(move || {
            pin_to(cpu);
            while !s.load(Ordering::Relaxed) {
                std::hint::spin_loop();
            }
        });
        // The other thread is runnable on this CPU: a yield lets it run.
        let t = Try::begin();
        for _ in 0..100 {
            std::thread::yield_now();
        }
        let preempted = t.preempted();
        stop.store(true, Ordering::Relaxed);
        other.join().unwrap();
        assert!(preempted);
    }
}
