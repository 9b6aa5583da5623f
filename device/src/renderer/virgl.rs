//! The virglrenderer renderer (being written).
