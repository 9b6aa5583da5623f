//! (module being written; see DESIGN.md)
