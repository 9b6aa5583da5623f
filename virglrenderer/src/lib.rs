//! Safe binding to libvirglrenderer (filled by issue 2).
