//! A vhost-user-gpu frontend test harness: it drives any vhost-user-gpu backend binary (ours,
//! QEMU's `contrib/vhost-user-gpu`, rust-vmm's `vhost-device-gpu`) over its real socket, as a VMM
//! would.
//!
//! - [`process`]: spawn a backend command with a socket in a private temp dir, capture its
//!   output, measure its fds and memory, kill it on drop.
//! - [`frontend`]: vhost-user negotiation, guest memory ([`memory`], a shared memfd), both split
//!   virtqueues ([`virtq`]), SET_SOCKET, the backend-request channel ([`backend_req`]), and
//!   submitting virtio-gpu commands.
//! - [`protocol`]: the virtio-gpu wire format (independent of the device crate).
//! - [`display`]: the display peer behind SET_SOCKET, recording every message and painting
//!   framebuffers; [`edid`] builds the EDID it answers.
//! - [`egl`]: EGL and GL looked up at run time, to export and import dmabufs and read them back.
//! - [`virgl`]: the few virgl command-stream words the 3D tests need.
//!
//! A session, start to finish:
//!
//! ```no_run
//! use std::time::Duration;
//! use vhost_user_gpu_tests::display::DisplayEvent;
//! use vhost_user_gpu_tests::protocol::{format, resp, Command, MemEntry, Rect};
//! use vhost_user_gpu_tests::{BackendCommand, BackendProcess, FrontendOptions, GpuFrontend};
//!
//! # fn main() -> vhost_user_gpu_tests::Result<()> {
//! // `{socket}` is replaced by a socket path in a private temp dir (else `--socket-path` is added).
//! let cmd = BackendCommand::ours()?.arg("--renderer").arg("software");
//! let backend = BackendProcess::spawn(&cmd)?;
//! let mut fe = GpuFrontend::connect(backend.socket_path(), FrontendOptions::default())?;
//! let display = fe.display()?;
//!
//! let backing = fe.memory().alloc(64 * 64 * 4, 4096)?;
//! fe.memory().write(backing, &[0x80; 64 * 64 * 4])?;
//! fe.ok(&Command::resource_create_2d(1, format::B8G8R8X8_UNORM, 64, 64))?;
//! fe.ok(&Command::attach_backing(1, &[MemEntry { addr: backing, length: 64 * 64 * 4 }]))?;
//! fe.ok(&Command::transfer_to_host_2d(1, Rect::new(0, 0, 64, 64), 0))?;
//! fe.ok(&Command::set_scanout(0, 1, Rect::new(0, 0, 64, 64)))?;
//! let mark = display.mark();
//! let r = fe.request(&Command::resource_flush(1, Rect::new(0, 0, 64, 64)).fenced(1))?;
//! assert_eq!((r.ty(), r.hdr.fence_id), (resp::OK_NODATA, 1));
//! display.wait_event(mark, Duration::from_secs(5), "UPDATE", |e| {
//!     matches!(e, DisplayEvent::Update { .. })
//! })?;
//! assert_eq!(display.framebuffer(0).unwrap().pixel(3, 3), Some(0x8080_8080));
//! println!("{} fds, {:?}", backend.fd_count()?, backend.memory()?);
//! # Ok(())
//! # }
//! ```

pub mod backend_req;
pub mod bench;
pub mod display;
pub mod edid;
pub mod egl;
pub mod error;
pub mod frontend;
pub mod memory;
pub mod poll;
pub mod process;
pub mod protocol;
pub mod virgl;
pub mod virtq;

pub use error::{Error, Result};
pub use frontend::{FrontendOptions, GpuFrontend, Pending, Segment};
pub use process::{BackendCommand, BackendProcess};
