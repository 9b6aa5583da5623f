//! Serving an inherited, already *connected* vhost-user socket (`--fd N` as libvirt passes it).
//!
//! vhost-user-backend 0.24's `VhostUserDaemon` can only accept on a listener or connect to a
//! path; it cannot take over an existing connection. So the daemon accepts on a private listener
//! (in a fresh directory only this user can enter), this module connects to it, and relays
//! vhost-user messages between that connection and the inherited socket, in both directions,
//! passing the attached file descriptors (memory regions, kick/call eventfds, the GPU socket)
//! along with the message they came with.
//!
//! The relay is message-aware: it reads a message's 12-byte header together with its
//! descriptors (as the vhost-user library itself does), then the payload the header announces,
//! and forwards the whole message with its descriptors in one `sendmsg`, so a descriptor can
//! never be attached to a different message than the one it came with.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;

use vhost::vhost_user::Listener;
use vmm_sys_util::sock_ctrl_msg::ScmSocket;

use super::serve::serve_one;
use super::{BackendError, VhostUserGpuBackend};

/// Size of a vhost-user message header (request, flags, size: three native `u32`s).
const HEADER_SIZE: usize = 12;

pub use crate::limits::{MAX_RELAY_FDS, MAX_RELAY_PAYLOAD};

/// Serves the frontend on the connected socket `frontend` until it disconnects:
/// [`prepare`], then [`serve_prepared`].
pub fn serve_connected(
    frontend: UnixStream,
    backend: &Arc<VhostUserGpuBackend>,
) -> Result<(), BackendError> {
    serve_prepared(prepare(frontend)?, backend)
}

/// A connected frontend and the private listener it is relayed through, set up and ready to
/// serve: the file-system work (the directory and the socket path, both already removed again)
/// is done, so that serving needs none (the daemon's sandbox closes in between).
pub struct PreparedRelay {
    frontend: UnixStream,
    daemon_side: UnixStream,
    listener: Listener,
}

impl std::fmt::Debug for PreparedRelay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PreparedRelay(frontend {})", self.frontend.as_raw_fd())
    }
}

/// Makes the private listener in a fresh directory, connects to it (the connection waits in
/// the listener's queue until [`serve_prepared`] accepts it) and removes the socket path and the
/// directory again: nothing else can connect, and nothing is left to clean up.
pub fn prepare(frontend: UnixStream) -> Result<PreparedRelay, BackendError> {
    let dir = private_dir().map_err(|e| BackendError::Daemon(format!("relay directory: {e}")))?;
    let path = dir.join("relay.sock");
    let result = (|| {
        let listener = Listener::new(&path, true).map_err(|source| BackendError::Socket {
            what: format!("listen on {}", path.display()),
            source,
        })?;
        let daemon_side = UnixStream::connect(&path)
            .map_err(|e| BackendError::Daemon(format!("connect to {}: {e}", path.display())))?;
        Ok(PreparedRelay {
            frontend,
            daemon_side,
            listener,
        })
    })();
    let _ = std::fs::remove_file(&path);
    let _ = std::fs::remove_dir(&dir);
    result
}

/// Serves a [`prepare`]d relay until the frontend disconnects.
pub fn serve_prepared(
    relay: PreparedRelay,
    backend: &Arc<VhostUserGpuBackend>,
) -> Result<(), BackendError> {
    let PreparedRelay {
        frontend,
        daemon_side,
        mut listener,
    } = relay;
    // The daemon accepts the connection made in `prepare` (it is queued on the listener).
    let relays = start_relays(frontend, daemon_side)?;
    let served = serve_one(&mut listener, backend);
    for relay in relays {
        if relay.join().is_err() {
            log::error!("a relay thread panicked");
        }
    }
    served
}

/// A new directory only this user can use, for the private listener.
fn private_dir() -> io::Result<PathBuf> {
    let base = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let dir = base.join(format!("vhost-user-gpu-{}-{nanos}", std::process::id()));
    std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
    Ok(dir)
}

/// Starts the two relay threads (frontend → daemon, daemon → frontend).
fn start_relays(
    frontend: UnixStream,
    daemon_side: UnixStream,
) -> Result<Vec<JoinHandle<()>>, BackendError> {
    let clone_err = |e: io::Error| BackendError::Daemon(format!("relay socket: {e}"));
    let frontend_rx = frontend.try_clone().map_err(clone_err)?;
    let daemon_rx = daemon_side.try_clone().map_err(clone_err)?;
    let spawn = |name: &str, from: UnixStream, to: UnixStream| {
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || relay(&from, &to))
            .map_err(BackendError::SpawnThread)
    };
    Ok(vec![
        spawn("relay-to-daemon", frontend_rx, daemon_side)?,
        spawn("relay-to-frontend", daemon_rx, frontend)?,
    ])
}

/// Relays messages from `from` to `to` until either side closes or breaks; then shuts both
/// down so that the other direction ends too.
fn relay(from: &UnixStream, to: &UnixStream) {
    loop {
        match relay_one(from, to) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => {
                log::debug!("relay: {e}");
                break;
            }
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

/// Relays one message. `Ok(false)` at a clean end of stream.
fn relay_one(from: &UnixStream, to: &UnixStream) -> io::Result<bool> {
    let mut header = [0u8; HEADER_SIZE];
    let (got, fds) = recv_with_fds(from, &mut header)?;
    if got == 0 {
        return Ok(false);
    }
    // The rest of the header (no descriptors come with it: they arrive with its first byte).
    (&*from).read_exact(&mut header[got..])?;
    let size = u32::from_ne_bytes([header[8], header[9], header[10], header[11]]) as usize;
    if size > MAX_RELAY_PAYLOAD {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("message payload of {size} bytes"),
        ));
    }
    let mut message = Vec::with_capacity(HEADER_SIZE + size);
    message.extend_from_slice(&header);
    message.resize(HEADER_SIZE + size, 0);
    (&*from).read_exact(&mut message[HEADER_SIZE..])?;
    let raw: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
    let sent = to.send_with_fds(&[&message[..]], &raw)?;
    // The descriptors went with the first byte; the rest (if the socket took less) follows.
    (&*to).write_all(&message[sent..])?;
    // `fds` are closed here: the receiver got its own copies.
    Ok(true)
}

/// `recvmsg` into `buf`, with any SCM_RIGHTS descriptors that come along (at most
/// [`MAX_RELAY_FDS`]).
fn recv_with_fds(sock: &UnixStream, buf: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
    let mut fds = [-1 as RawFd; MAX_RELAY_FDS];
    let mut iov = [libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    }];
    // SAFETY: the only iovec points at `buf`, valid for writes of `buf.len()` bytes for the
    // call's duration; `fds` has room for MAX_RELAY_FDS descriptors.
    let (bytes, nfds) = unsafe { sock.recv_with_fds(&mut iov, &mut fds) }?;
    let owned = fds
        .iter()
        .take(nfds.min(MAX_RELAY_FDS))
        .map(|&fd| {
            // SAFETY: recvmsg installed these descriptors in this process for us; nothing
            // else refers to them.
            unsafe { OwnedFd::from_raw_fd(fd) }
        })
        .collect();
    Ok((bytes, owned))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(request: u32, payload: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&request.to_ne_bytes());
        m.extend_from_slice(&1u32.to_ne_bytes());
        m.extend_from_slice(&(payload.len() as u32).to_ne_bytes());
        m.extend_from_slice(payload);
        m
    }

    #[test]
    fn messages_and_descriptors_are_relayed_together() {
        let (front, front_peer) = UnixStream::pair().unwrap();
        let (daemon, daemon_peer) = UnixStream::pair().unwrap();
        let relays = start_relays(front_peer, daemon_peer).unwrap();

        // Two messages back to back, the second with a descriptor.
        let file = std::fs::File::open("/proc/self/status").unwrap();
        (&front).write_all(&message(1, b"abcd")).unwrap();
        front
            .send_with_fds(&[&message(2, b"xy")[..]], &[file.as_raw_fd()])
            .unwrap();
        let mut buf = [0u8; 16];
        let (n, fds) = recv_with_fds(&daemon, &mut buf[..16]).unwrap();
        assert_eq!(n, 16);
        assert!(fds.is_empty(), "the first message has no descriptor");
        assert_eq!(&buf[12..16], b"abcd");
        let mut buf = [0u8; 14];
        let (n, fds) = recv_with_fds(&daemon, &mut buf).unwrap();
        assert_eq!(n, 14);
        assert_eq!(fds.len(), 1);
        assert_eq!(&buf[12..14], b"xy");

        // The other direction.
        (&daemon).write_all(&message(3, &[9; 8])).unwrap();
        let mut buf = [0u8; 20];
        (&front).read_exact(&mut buf).unwrap();
        assert_eq!(u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]), 3);

        // An oversized message breaks the relay; both ends are closed.
        (&front)
            .write_all(&{
                let mut h = message(4, &[]);
                h[8..12].copy_from_slice(&(MAX_RELAY_PAYLOAD as u32 + 1).to_ne_bytes());
                h
            })
            .unwrap();
        let mut b = [0u8; 1];
        assert_eq!((&daemon).read(&mut b).unwrap(), 0);
        assert_eq!((&front).read(&mut b).unwrap(), 0);
        for r in relays {
            r.join().unwrap();
        }
    }

    #[test]
    fn a_closing_frontend_ends_both_directions() {
        let (front, front_peer) = UnixStream::pair().unwrap();
        let (daemon, daemon_peer) = UnixStream::pair().unwrap();
        let relays = start_relays(front_peer, daemon_peer).unwrap();
        drop(front);
        let mut b = [0u8; 1];
        assert_eq!((&daemon).read(&mut b).unwrap(), 0);
        for r in relays {
            r.join().unwrap();
        }
    }
}
