//! The `text/event-stream` format of server-sent events: an encoder for the server and an
//! incremental parser for the client.
//!
//! Implements (WHATWG HTML Living Standard, "Server-sent events",
//! <https://html.spec.whatwg.org/multipage/server-sent-events.html>):
//! - "Parsing an event stream" (`#parsing-an-event-stream`): the `stream` grammar, written by
//!   [`encode_event`], [`encode_retry`] and [`encode_comment`], which never put CR, LF or NUL
//!   where the grammar or the interpretation would misread them.
//! - "Interpreting an event stream" (`#event-stream-interpretation`): followed step by step by
//!   [`EventStreamParser`], with the spec's own buffers (`data_buffer`, `event_type_buffer`,
//!   `last_event_id_buffer`) and `dispatch_event`.
//!
//! Does not:
//! - do anything of the `EventSource` processing model (`#sse-processing-model`): connecting,
//!   reconnecting after [`EventStreamParser::retry`] milliseconds, sending `Last-Event-ID`
//!   (`#the-last-event-id-header`) from [`EventStreamParser::last_event_id`], checking the
//!   `text/event-stream` MIME type; the transport and client driver do.
//! - set the `origin` of events (a browser concern).
//!
//! Round trip: what [`encode_event`] writes, [`EventStreamParser`] reads back as the same
//! event type, id and data, except that every CRLF and CR in the data comes back as LF (the
//! format has no way to tell line ends apart).

mod encode;
mod parse;

pub use encode::{encode_comment, encode_event, encode_retry, EncodeError};
pub use parse::{Event, EventStreamParser, ParseError, ParseLimits};
