//! Safe binding to `libgfxstream_backend`.
//!
//! This crate is a workspace member reserved for the gfxstream issue; it exposes nothing yet.
