//! Waiting for a file descriptor to become readable, with a timeout.

use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// Wait until `fd` is readable (or hung up), at most `timeout`. Returns false on timeout.
pub fn wait_readable(fd: &impl AsRawFd, timeout: Duration) -> Result<bool> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let ms = i32::try_from(left.as_millis()).unwrap_or(i32::MAX);
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: `pfd` is a valid pollfd for the duration of the call and nfds is 1.
        let r = unsafe { libc::poll(&mut pfd, 1, ms) };
        if r > 0 {
            return Ok(true);
        }
        if r == 0 {
            return Ok(false);
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(Error::io("poll", e));
        }
    }
}
