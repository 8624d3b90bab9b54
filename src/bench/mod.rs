//! `pushwire bench`: a load generator for pushwire and for peers that speak the same protocols.
//!
//! Implements four modes, each a bounded run (in connections, messages and seconds) that ends
//! with a [`report::Report`] printed as a table or as one JSON object:
//!
//! | mode | measures | module |
//! |---|---|---|
//! | `echo` | WebSocket messages/s and round-trip latency against any RFC 6455 echo server | [`echo`] |
//! | `fanout` | deliveries/s, publish-to-delivery latency and missing messages over ws, SSE, the NDJSON stream or long polling | [`fanout`] |
//! | `idle` | the server's resident memory per idle subscription (from `/proc/PID/status`) | [`idle`] |
//! | `connect` | WebSocket opening handshakes per second | [`connect`] |
//!
//! Many connections share one thread: [`client`] drives each connection as a small state
//! machine on a mio poll, speaking through the pure codecs of this crate ([`crate::ws`] in the
//! client role, [`crate::sse`], [`crate::http1`]). The fan-out publisher is a second thread with
//! one blocking keep-alive connection ([`publisher`]). Timing is measured in-process: every
//! payload carries its send time (microseconds since the run's start) and its sequence number,
//! so each message's latency is measured on arrival and no peer-specific message id is needed.
//!
//! `fanout --threads N` spreads the subscribers over N client threads, each with its own poll,
//! and merges their latency histograms exactly.
//!
//! `echo` also speaks `wss://` (rustls, [`client`]).
//!
//! Does not: speak TLS in `fanout`, `idle` or `connect` (no `https://`), HTTP/2, or follow redirects; claim any
//! performance target; spread `echo`, `idle` or `connect` over threads (a single client thread
//! may become the bottleneck before a server does: the reports say how fast the client went,
//! not how fast the server could go).
//!
//! This is I/O code (sockets, clock, randomness), like `src/net/` and the binary.

pub mod client;
pub mod connect;
pub mod echo;
pub mod fanout;
pub mod histogram;
pub mod idle;
pub mod payload;
pub mod publisher;
pub mod report;
pub mod system;
pub mod url;
pub mod window;

pub use report::Report;

use std::time::Duration;

/// Most connections in the middle of opening at once: keeps the server's accept queue from
/// overflowing when thousands connect (a listener's backlog is often 128; an overflow drops
/// the SYN and the kernel retries it only after a second).
pub const OPEN_CONCURRENCY: usize = 64;

/// Parses seconds, fractions allowed (`0.5`), for the `--duration`-like options.
pub fn parse_seconds(text: &str) -> Result<Duration, String> {
    let secs: f64 = text.parse().map_err(|_| format!("`{text}` is not a number of seconds"))?;
    Duration::try_from_secs_f64(secs).map_err(|_| format!("`{text}` is not a valid duration"))
}
