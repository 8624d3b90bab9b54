//! The embedded pages: the page at `/`, its client script and the health check.
//!
//! Does not: read files at run time; everything is compiled in, so the server runs from its
//! binary alone.

/// The page served at `/`.
pub const INDEX_HTML: &[u8] = include_bytes!("pages/index.html");

/// The browser client served at `/pushwire.js` (used by the page; see the file's header).
pub const PUSHWIRE_JS: &[u8] = include_bytes!("pages/pushwire.js");

/// The body of `GET /healthz`.
pub const HEALTHZ: &[u8] = b"ok\n";
