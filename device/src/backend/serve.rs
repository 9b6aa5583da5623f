//! Serving frontends: one connection after the other, the device reset between them.
//!
//! vhost-user-backend's `VhostUserDaemon` serves a single connection: its request handler
//! keeps per-connection state (owner, features, vrings) that a second frontend cannot reset,
//! and `serve()` stops its vring workers when the connection ends. So every connection gets a
//! fresh daemon over the same [`VhostUserGpuBackend`], while the GPU thread — and with it the
//! renderer and its GL context — lives on. When a connection ends, the daemon is dropped
//! (joining its vring worker), and the GPU thread resets the device (`VirtioGpu::reset()`),
//! forgets the vrings, the guest memory and the display socket.
//!
//! `--fd`: an inherited *listening* socket is served like `--socket-path`, connection after
//! connection. An inherited *connected* socket (what libvirt hands to QEMU's own backend) is
//! served until that frontend disconnects, then [`serve`] returns (the program exits, like
//! QEMU's backend): vhost-user-backend 0.24 cannot take over an existing connection, so
//! [`super::relay`] relays it through a private listener.

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::Arc;

use vhost::vhost_user::Error as VhostUserError;
use vhost::vhost_user::Listener;
use vhost_user_backend::{Error as DaemonError, VhostUserDaemon};
use vm_memory::{GuestMemoryAtomic, GuestMemoryMmap};

use super::gpu_thread::{Request, NUM_QUEUES};
use super::relay::PreparedRelay;
use super::{vring, BackendError, VhostUserGpuBackend};
use crate::cli::Endpoint;

/// Name of the daemon's threads.
const DAEMON_NAME: &str = "vhost-user-gpu";

/// Serves frontends on `endpoint`: on a listening socket until the listener fails (so only
/// with an error), on an inherited connected socket until that frontend disconnects.
pub fn serve(endpoint: &Endpoint, backend: Arc<VhostUserGpuBackend>) -> Result<(), BackendError> {
    serve_bound(bind(endpoint)?, backend)
}

/// A vhost-user endpoint whose file-system work is done (see [`bind`]).
pub enum BoundEndpoint {
    /// A listening socket (`--socket-path`, or an inherited listening `--fd`).
    Listening(Listener),
    /// An inherited connected socket (`--fd`), relayed through a private listener.
    Connected {
        /// The inherited descriptor's number, for the log.
        fd: RawFd,
        /// The relay, ready to serve.
        relay: PreparedRelay,
    },
}

impl std::fmt::Debug for BoundEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BoundEndpoint::Listening(l) => write!(f, "Listening({})", l.as_raw_fd()),
            BoundEndpoint::Connected { fd, .. } => write!(f, "Connected({fd})"),
        }
    }
}

/// Sets `endpoint` up for serving: binds and listens on `--socket-path` (replacing an existing
/// file there), takes over an inherited `--fd`, or prepares the relay of a connected one. After
/// this, serving opens and creates no file, so the daemon's sandbox can close in between.
pub fn bind(endpoint: &Endpoint) -> Result<BoundEndpoint, BackendError> {
    match endpoint {
        Endpoint::SocketPath(path) => {
            let listener = Listener::new(path, true).map_err(|source| BackendError::Socket {
                what: format!("listen on {}", path.display()),
                source,
            })?;
            log::info!("listening on {}", path.display());
            Ok(BoundEndpoint::Listening(listener))
        }
        Endpoint::Fd(fd) => match inherited_socket(*fd)? {
            Inherited::Listening(listener) => Ok(BoundEndpoint::Listening(listener)),
            Inherited::Connected(stream) => Ok(BoundEndpoint::Connected {
                fd: *fd,
                relay: super::relay::prepare(stream)?,
            }),
        },
    }
}

/// Serves frontends on a [`bind`]-prepared endpoint, as [`serve`] says.
pub fn serve_bound(
    bound: BoundEndpoint,
    backend: Arc<VhostUserGpuBackend>,
) -> Result<(), BackendError> {
    let mut listener = match bound {
        BoundEndpoint::Listening(listener) => listener,
        BoundEndpoint::Connected { fd, relay } => {
            log::info!("serving the frontend connected on fd {fd}");
            super::relay::serve_prepared(relay, &backend)?;
            log::info!("the frontend on fd {fd} is gone; exiting");
            return Ok(());
        }
    };
    loop {
        serve_one(&mut listener, &backend)?;
    }
}

/// Accepts one connection on `listener` and serves it until the frontend goes away.
/// Errors of the connection itself are logged; only a failing listener is an error.
pub fn serve_one(
    listener: &mut Listener,
    backend: &Arc<VhostUserGpuBackend>,
) -> Result<(), BackendError> {
    let mem = GuestMemoryAtomic::new(GuestMemoryMmap::new());
    let (daemon, vrings) =
        vring::collect_new(|| VhostUserDaemon::new(DAEMON_NAME.into(), backend.clone(), mem));
    let mut daemon = daemon.map_err(|e| BackendError::Daemon(e.to_string()))?;
    // The connection's vrings send their kick fds to the GPU thread (see `vring.rs`).
    if vrings.len() != NUM_QUEUES {
        drop(daemon);
        backend.close_exit_events();
        return Err(BackendError::Daemon(format!(
            "{} vrings created, {NUM_QUEUES} expected",
            vrings.len()
        )));
    }
    for (queue, v) in vrings.iter().enumerate() {
        v.attach(queue, backend.gpu_client());
    }
    backend.gpu().send(Request::Vrings(vrings))?;
    // Ok(connection result), or Err when no connection could be accepted.
    let outcome = match daemon.start(listener) {
        Ok(()) => {
            log::info!("frontend connected");
            Ok(match daemon.wait() {
                // The frontend closed the connection: the normal end.
                Ok(())
                | Err(DaemonError::HandleRequest(
                    VhostUserError::Disconnected | VhostUserError::PartialMessage,
                )) => Ok(()),
                Err(e) => Err(e.to_string()),
            })
        }
        Err(e) => Err(e.to_string()),
    };
    // Dropping the daemon stops and joins its vring worker; then its leaked exit eventfd can
    // be closed and the GPU thread can forget the connection.
    drop(daemon);
    backend.close_exit_events();
    backend.gpu().disconnect()?;
    match outcome {
        Ok(Ok(())) => {
            log::info!("frontend disconnected; device reset");
            Ok(())
        }
        Ok(Err(e)) => {
            log::warn!("connection ended: {e}; device reset");
            Ok(())
        }
        Err(e) => Err(BackendError::Daemon(e)),
    }
}

/// An inherited vhost-user socket.
enum Inherited {
    /// A listening socket: connections are accepted on it one after the other.
    Listening(Listener),
    /// A connected socket: one frontend.
    Connected(UnixStream),
}

impl std::fmt::Debug for Inherited {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Inherited::Listening(l) => write!(f, "Listening({})", l.as_raw_fd()),
            Inherited::Connected(s) => write!(f, "Connected({})", s.as_raw_fd()),
        }
    }
}

/// Takes over an inherited descriptor, refusing anything but a UNIX stream socket.
fn inherited_socket(fd: RawFd) -> Result<Inherited, BackendError> {
    let bad = |reason: &str| BackendError::BadFd {
        fd,
        reason: reason.to_string(),
    };
    if fd < 0 {
        return Err(bad("not a file descriptor"));
    }
    // SAFETY: fcntl(F_GETFD) only reads the descriptor flags; an invalid number gives EBADF.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(bad("not an open file descriptor"));
    }
    // SAFETY: the descriptor is open (checked above) and stays open for the borrow's life,
    // which ends within this function.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    if socket_option(borrowed, libc::SO_DOMAIN) != Some(libc::AF_UNIX)
        || socket_option(borrowed, libc::SO_TYPE) != Some(libc::SOCK_STREAM)
    {
        return Err(bad("not a UNIX stream socket"));
    }
    let listening = socket_option(borrowed, libc::SO_ACCEPTCONN) == Some(1);
    if listening {
        // SAFETY: the descriptor was handed to this process on the command line to be served;
        // it is an open listening UNIX stream socket (checked above) and nothing else in the
        // program owns it, so the listener becomes its only owner.
        let listener = unsafe { UnixListener::from_raw_fd(fd) };
        log::info!(
            "serving the inherited listening socket {}",
            listener.as_raw_fd()
        );
        Ok(Inherited::Listening(Listener::from(listener)))
    } else {
        // SAFETY: as above, for a connected UNIX stream socket.
        Ok(Inherited::Connected(unsafe { UnixStream::from_raw_fd(fd) }))
    }
}

/// An integer socket option, `None` when it cannot be read.
fn socket_option(fd: BorrowedFd<'_>, option: libc::c_int) -> Option<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `value` and `len` are valid for writes of the sizes given; the kernel writes at
    // most `len` bytes into `value`.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            option,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    (rc == 0).then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::IntoRawFd;

    #[test]
    fn inherited_fd_must_be_a_unix_stream_socket() {
        let (a, b) = UnixStream::pair().unwrap();
        let raw = a.into_raw_fd();
        match inherited_socket(raw) {
            Ok(Inherited::Connected(s)) => assert_eq!(s.as_raw_fd(), raw),
            other => panic!("a connected socket is served once: {other:?}"),
        }
        drop(b);

        let file = std::fs::File::open("/proc/self/status").unwrap();
        let e = inherited_socket(file.as_raw_fd()).unwrap_err().to_string();
        assert!(e.contains("not a UNIX stream socket"), "{e}");

        let e = inherited_socket(1_000_000).unwrap_err().to_string();
        assert!(e.contains("not an open"), "{e}");

        let path = std::env::temp_dir().join(format!("vugpu-fd-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let l = UnixListener::bind(&path).unwrap();
        let raw = l.into_raw_fd();
        let Ok(Inherited::Listening(listener)) = inherited_socket(raw) else {
            panic!("a listening socket must be accepted")
        };
        assert_eq!(listener.as_raw_fd(), raw);
        let _c = UnixStream::connect(&path).unwrap();
        assert!(listener.accept().unwrap().is_some());
        let _ = std::fs::remove_file(&path);
    }
}
