//! Raw FFI bindings to `libgfxstream_backend`.
//!
//! This crate is a workspace member reserved for the gfxstream issue; it has no bindings yet and
//! exposes nothing.
