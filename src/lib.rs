//! pushwire: a push server and its clients, hand-rolled on raw TCP.
//!
//! Browsers and services get fresh data from a server in five ways — short polling, long
//! polling, Server-Sent Events, HTTP chunked streaming and WebSocket — and pushwire serves all
//! of them over the same pub/sub channels, with one cursor (`EPOCH:OFFSET`) so a client that
//! reconnects either resumes exactly or is told there is a gap.
//!
//! # Layers
//!
//! ```text
//!   net/ (mio event loops, one per thread: sockets, clock, randomness;   [I/O]
//!         ConnStream per connection; LocalHub, the in-memory hub backend)
//!     │ bytes in/out, deadlines          │ LoopEvents from the backend's inbox
//!   conn.rs (one TCP connection)       fanout.rs (channel → connections, command pump) [pure]
//!     │ routed requests                  │ Command / Reply through hub::backend::HubBackend
//!   transport/ (route, endpoints, sessions: one file per push style)     [pure]
//!     │ wire formats            │ Subscribe / Publish / Read
//!   http1/ ws/ sse/ (codecs)    hub/ (channels, history, cursors)  protocol/ (names, envelope) [pure]
//!     ▲
//!   client/, bench/ (blocking clients, the load generator: sockets, clock, randomness) [I/O]
//! ```
//!
//! Pure layers never touch a socket, read the clock or draw randomness: time comes in as
//! `now: Instant`, entropy as arguments. That is what lets tests replay conversations byte by
//! byte with a fake clock and lets cargo-fuzz drive the parsers at full speed.
//!
//! # Reading order
//!
//! [`hub`] (the pub/sub core and its cursor/gap rules), [`http1`] (message syntax),
//! [`ws`] (RFC 6455 in both roles), [`sse`] (the event-stream format), [`conn`] (a connection's
//! life), [`transport`] (the push styles), [`fanout`] (one loop's pub/sub), [`net`] (the event
//! loops), [`client`] (blocking
//! clients driving the same protocol cores), [`bench`](mod@bench) (the load generator).
//!
//! # Spec map
//!
//! | spec | where |
//! |---|---|
//! | RFC 9112 HTTP/1.1 message syntax | [`http1::head`], [`http1::body`], [`http1::response`] |
//! | RFC 9112 §7.1 chunked coding | [`http1::chunked`] |
//! | RFC 9112 §9 connection management | [`conn`] |
//! | RFC 6202 §2 polling | [`transport::short_poll`], [`transport::long_poll`] |
//! | RFC 6202 §3 streaming | [`transport::stream`] |
//! | RFC 6455 WebSocket | [`ws`], [`transport::websocket`] |
//! | HTML "Server-sent events" | [`sse`], [`transport::sse`] |
//! | RFC 6454 origins, RFC 6750 bearer tokens | [`transport::access`] |

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod bench;
pub mod client;
pub mod config;
pub mod conn;
pub mod fanout;
#[doc(hidden)]
pub mod fuzzing;
pub mod http1;
pub mod hub;
pub mod metrics;
pub mod net;
pub mod output;
pub mod protocol;
pub mod redis;
pub mod sse;
pub mod transport;
pub mod ws;
