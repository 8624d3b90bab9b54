//! The push styles pushwire serves, and the routing of a request head to one of them.
//!
//! Implements: [`mod@route`] (a request head to a [`Route`] or a typed [`Refusal`], `refusal.rs`,
//! with the [`access`] verdict decided once), [`session`] (the contract of a transport that
//! owns a connection), and one file per transport: [`publish`] (HTTP POST), [`short_poll`] (an immediate answer), [`long_poll`]
//! (RFC 6202 §2), [`sse`] (HTML "Server-sent events"), [`stream`] (chunked NDJSON,
//! RFC 6202 §3), [`websocket`] (RFC 6455, channels and `/echo`). [`feed`] is what the
//! streaming ones share (cursor, catch-up, slow consumers); [`http_stream`] is the session of
//! SSE and the stream, which differ only in their format.
//!
//! # Choosing a transport
//!
//! `GET /channels/{name}` picks, in order: `?mode=ws|sse|stream|longpoll|poll` when given (for
//! clients that cannot set headers); `Upgrade: websocket`; `Accept: text/event-stream`;
//! `Accept: application/x-ndjson`; `?wait=SECONDS`; otherwise a short poll.
//!
//! Every transport subscribes and replays through the same hub commands, so the cursor
//! (`EPOCH:OFFSET`) and the gap rule are the same whichever way a client connects.
//!
//! Does not: touch sockets; the connection layer ([`crate::conn`]) feeds requests in and takes
//! responses out.

pub mod access;
pub mod api;
pub mod channels;
pub mod commands;
pub mod endpoint;
pub mod feed;
pub mod http_stream;
pub mod limits;
pub mod long_poll;
pub mod pages;
pub mod policy;
pub mod publish;
pub mod refusal;
pub mod rooms;
pub mod route;
pub mod session;
pub mod short_poll;
pub mod sse;
pub mod stream;
pub mod token;
pub mod websocket;

pub use limits::Limits;
pub use refusal::Refusal;
pub use route::{route, route_request, since_param, Route, Routed};
pub use session::{with_cors, CloseReason, CommandQueue, Ctx, Flow, InputPolicy, Refused, Session};
