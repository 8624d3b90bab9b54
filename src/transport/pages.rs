//! The embedded pages: the page at `/` and the health check.
//!
//! Does not: read files at run time; everything is compiled in, so the server runs from its
//! binary alone.

/// The page served at `/`.
pub const INDEX_HTML: &[u8] = include_bytes!("pages/index.html");

/// The body of `GET /healthz`.
pub const HEALTHZ: &[u8] = b"ok\n";
