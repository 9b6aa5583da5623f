//! Shared build-script code for the `-sys` crates (filled by issue 2).
