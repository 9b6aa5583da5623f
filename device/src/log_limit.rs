//! Rate limits for log lines a guest can trigger.
//!
//! A guest that repeats a bad request (a bogus available-ring index, a broken chain) as fast as
//! it can kick must not flood the host's log. A [`LogLimiter`] lets a few lines per window
//! through and counts the rest, so the next line that gets through says how many were dropped.

use std::time::{Duration, Instant};

/// Lines let through per window by [`LogLimiter::default`].
pub use crate::limits::LOG_LINES_PER_WINDOW as LINES_PER_WINDOW;
/// The window of [`LogLimiter::default`].
pub use crate::limits::LOG_WINDOW as WINDOW;

/// At most `per_window` lines per `window`; the rest are counted.
#[derive(Debug)]
pub struct LogLimiter {
    per_window: u32,
    window: Duration,
    window_start: Option<Instant>,
    in_window: u32,
    suppressed: u64,
}

impl Default for LogLimiter {
    fn default() -> Self {
        Self::new(LINES_PER_WINDOW, WINDOW)
    }
}

impl LogLimiter {
    /// A limiter letting `per_window` lines through per `window`.
    pub const fn new(per_window: u32, window: Duration) -> Self {
        LogLimiter {
            per_window,
            window,
            window_start: None,
            in_window: 0,
            suppressed: 0,
        }
    }

    /// Whether a line may be logged at `now`: `Some(n)` with the number of lines suppressed
    /// since the last one that got through (to be mentioned in it), `None` to drop this one.
    pub fn allow_at(&mut self, now: Instant) -> Option<u64> {
        let expired = match self.window_start {
            Some(start) => now.saturating_duration_since(start) >= self.window,
            None => true,
        };
        if expired {
            self.window_start = Some(now);
            self.in_window = 0;
        }
        if self.in_window >= self.per_window {
            self.suppressed = self.suppressed.saturating_add(1);
            return None;
        }
        self.in_window += 1;
        Some(std::mem::take(&mut self.suppressed))
    }

    /// [`allow_at`](Self::allow_at) now.
    pub fn allow(&mut self) -> Option<u64> {
        self.allow_at(Instant::now())
    }
}

/// " (N similar lines suppressed)" for a line that got through after `suppressed` were
/// dropped, or nothing.
pub fn suppressed_note(suppressed: u64) -> String {
    if suppressed == 0 {
        String::new()
    } else {
        format!(" ({suppressed} similar lines suppressed)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_cut_to_the_window_and_the_dropped_lines_are_counted() {
        let mut l = LogLimiter::new(3, Duration::from_secs(1));
        let t0 = Instant::now();
        let through: Vec<_> = (0..1000).filter_map(|_| l.allow_at(t0)).collect();
        assert_eq!(through, vec![0, 0, 0]);
        // The next window lets lines through again, the first one saying how many were dropped.
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(l.allow_at(t1), Some(997));
        assert_eq!(l.allow_at(t1), Some(0));
        assert_eq!(suppressed_note(997), " (997 similar lines suppressed)");
        assert_eq!(suppressed_note(0), "");
    }

    #[test]
    fn a_steady_trickle_below_the_limit_is_never_cut() {
        let mut l = LogLimiter::new(2, Duration::from_secs(1));
        let t0 = Instant::now();
        for i in 0..100u64 {
            assert_eq!(l.allow_at(t0 + Duration::from_secs(i)), Some(0));
        }
    }
}
