//! Raw FFI bindings to libvirglrenderer (filled by issue 2).
