//! The pure-Rust 2D renderer (being written).
