//! The vhost-user virtio-gpu device: the virtio-gpu command set over vhost-user, with pluggable
//! renderers. See `DESIGN.md` for how a guest command travels through the modules.

pub mod backend;
pub mod cli;
pub mod display;
pub mod gpu;
pub mod limits;
pub mod log_limit;
pub mod protocol;
pub mod renderer;
pub mod sandbox;
pub mod virgl_format;
