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
//! - [`virgl`]: the few virgl command-stream words the 3D tests need.

pub mod backend_req;
pub mod bench;
pub mod display;
pub mod edid;
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
