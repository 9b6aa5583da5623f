//! The `Renderer` trait: the one seam between the device and a renderer (being written).

pub mod software;
#[cfg(feature = "virglrenderer")]
pub mod virgl;
