//! Server-Sent Events: `GET /channels/{name}` with `Accept: text/event-stream` (or `?mode=sse`).
//!
//! ```text
//! HTTP/1.1 200 OK                      retry: 2000
//! Content-Type: text/event-stream
//! Cache-Control: no-cache              id: 9f0c…:7
//! X-Accel-Buffering: no                event: price        (only when published with ?event=)
//! Connection: close                    data: first line
//!                                      data: second line
//!                                      (blank line)
//! ```
//!
//! Implements: the server side of the WHATWG HTML standard's "Server-sent events"
//! (<https://html.spec.whatwg.org/multipage/server-sent-events.html>): the `text/event-stream`
//! response, one event per message with its cursor as `id` (so a browser's `EventSource` sends
//! it back as `Last-Event-ID` when it reconnects, `#the-last-event-id-header`), data split on
//! CR, LF and CRLF into `data:` lines (`#parsing-an-event-stream`), a `retry:` hint first, and a
//! comment line (`: keepalive`) every [`crate::transport::Limits::keepalive_interval`].
//!
//! - **Resume:** from the `Last-Event-ID` header (what browsers send on reconnect), else
//!   `?last_event_id=` or `?since=` (a first connection cannot set headers). A header that is
//!   not a cursor (not UTF-8, garbage, an id from another server) is answered from now with a
//!   gap event first and counted (`last_event_id_unreadable_total`), not refused: the browser
//!   sends it by itself, and a 400 would stop its `EventSource` reconnecting for good (HTML
//!   `#the-last-event-id-header` leaves its interpretation to the server; issue #13 item 7). A
//!   bad `?last_event_id=` or `?since=`, typed by a person, is still a 400.
//! - **Start:** right after the `retry:` hint, `id: CURSOR` and a blank line with no data: the
//!   browser records it as the last event ID without firing an event, so a client that loses the
//!   connection before its first message still resumes exactly.
//! - **Gap:** an event named `gap` whose data is `{"next":"EPOCH:OFFSET"}` and whose `id` is that
//!   cursor, so a browser reconnecting after it resumes from there and is not told twice.
//!   Publishing with the event name `gap` is refused.
//! - **Token expiry:** a stream admitted by a signed token (`--channel-policy`) ends when the
//!   token expires, after the event `token_expired` ([`TOKEN_EXPIRED_EVENT`], no `id:`): the
//!   client reconnects with a fresh token and its last event ID, and resumes exactly.
//! - **Binary messages:** the data is the payload in base64 (RFC 4648 §4) and the event type is
//!   `b64:` followed by the published event name or `message` (`:` is not a token character,
//!   so no published name can collide with it).
//! - **Body framing: close-delimited**, not chunked. An event stream has no natural end: every
//!   end is a reconnect, and the connection cannot carry another request while the stream is
//!   open. Without chunk framing each message's event bytes are written exactly as encoded once
//!   for every subscriber, with no per-message size line; and HTTP/1.0 clients are served the
//!   same way. The event-stream format delimits events itself, so a truncated body loses only
//!   an incomplete event, which the client discards and asks for again by its last id.
//!
//! Does not: send messages to clients that are behind faster than their send buffer drains
//! (see [`super::feed`]); a live subscriber that stops reading is closed as a slow consumer.

use std::sync::Arc;

use base64::Engine as _;

use crate::http1::head::{Headers, RequestHead};
use crate::http1::response::{write_head, Framing};
use crate::http1::target::Target;
use crate::hub::{Cursor, Encoding, Message, Payload, Since};

use super::feed::Start;
use crate::protocol::Transport;
use crate::sse::{encode_event, encode_retry};

use super::feed::Wire;
use super::http_stream::{HttpStream, StreamFormat};
use super::{since_param, Ctx, Refusal};

/// Where an SSE request starts: `Last-Event-ID` (an unreadable one is [`Start::Lost`]), else
/// `last_event_id`, else `since` (both refused when they do not parse).
pub fn since(head: &RequestHead, target: &Target<'_>) -> Result<Start, Refusal> {
    if let Some(value) = head.header("last-event-id").filter(|v| !v.is_empty()) {
        let cursor = std::str::from_utf8(value).ok().and_then(|text| Cursor::parse(text).ok());
        return Ok(cursor.map_or(Start::Lost, |c| Start::Since(Since::After(c))));
    }
    match target.param("last_event_id") {
        Some(Ok(text)) => {
            Cursor::parse(&text).map(|c| Since::After(c).into()).map_err(|_| Refusal::BadLastEventId)
        }
        Some(Err(_)) => Err(Refusal::BadQueryEncoding),
        None => since_param(target).map(Start::from),
    }
}

/// The event that ends a stream whose token expired: named `token_expired` (a name publishers
/// may not use), with no `id:` so the browser's last event ID stays that of the last message.
pub const TOKEN_EXPIRED_EVENT: &[u8] = b"event: token_expired\ndata: {\"type\":\"token_expired\"}\n\n";

/// One message as an event, encoded once and shared by every SSE subscriber.
pub fn encode_message(msg: &Message) -> Vec<u8> {
    let id = msg.id.to_string();
    let mut out = Vec::with_capacity(msg.payload.len_bytes() + 64);
    // Event names are validated tokens and ids are cursors, so neither holds CR, LF or NUL;
    // the encoder checks anyway and the fallback drops only the name.
    match &msg.payload {
        Payload::Text(text) => {
            if encode_event(Some(&id), msg.event.as_deref(), text, &mut out).is_err() {
                let _ = encode_event(Some(&id), None, text, &mut out);
            }
        }
        Payload::Binary(bytes) => {
            let event = format!("b64:{}", msg.event.as_deref().unwrap_or("message"));
            let data = base64::engine::general_purpose::STANDARD.encode(bytes);
            let _ = encode_event(Some(&id), Some(&event), &data, &mut out);
        }
    }
    out
}

/// The Server-Sent Events format of a streaming response.
#[derive(Debug, Default)]
pub struct SseFormat;

/// A Server-Sent Events response subscribed to one channel.
pub type SseSession = HttpStream<SseFormat>;

impl Wire for SseFormat {
    fn encode(&self, msg: &Message) -> Arc<[u8]> {
        msg.encoded(Encoding::SseEvent, encode_message)
    }

    fn write_message(&mut self, bytes: Arc<[u8]>, ctx: &mut Ctx<'_>) {
        ctx.out.push_shared(bytes);
    }

    fn write_gap(&mut self, next: Cursor, ctx: &mut Ctx<'_>) {
        let mut out = Vec::new();
        let _ =
            encode_event(Some(&next.to_string()), Some("gap"), &format!("{{\"next\":\"{next}\"}}"), &mut out);
        ctx.out.push_owned(out);
    }

    fn write_open(&mut self, start: Cursor, ctx: &mut Ctx<'_>) {
        // HTML "dispatch the event", step 1 sets the last event ID even when the data buffer is
        // empty, and step 3 then returns without firing: the browser now knows where it is.
        ctx.out.push_owned(format!("id: {start}\n\n").into_bytes());
    }
}

impl StreamFormat for SseFormat {
    /// A comment line: ignored by every event-stream parser.
    const HEARTBEAT: &'static [u8] = b": keepalive\n";
    /// The body is close-delimited: closing the connection ends it.
    const END: &'static [u8] = b"";
    const TRANSPORT: Transport = Transport::Sse;
    const TOKEN_EXPIRED: &'static [u8] = TOKEN_EXPIRED_EVENT;

    fn write_head(ctx: &mut Ctx<'_>) {
        let mut head = Vec::new();
        let fields = ctx.fields(&[
            ("Content-Type", "text/event-stream"),
            ("Cache-Control", "no-cache"),
            ("X-Accel-Buffering", "no"),
        ]);
        write_head(&mut head, 200, &fields, Framing::Close, true);
        encode_retry(ctx.config.transport.sse_retry.as_millis() as u64, &mut head);
        head.push(b'\n');
        ctx.out.push_owned(head);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::{ChannelName, Epoch};
    use crate::sse::{EventStreamParser, ParseLimits};
    use std::time::Instant;

    fn message(payload: Payload, event: Option<&str>) -> Message {
        Message::new(
            ChannelName::parse("c").unwrap(),
            Cursor { epoch: Epoch(0xab), offset: 3 },
            event.map(Arc::from),
            payload,
            Instant::now(),
        )
    }

    fn parse(bytes: &[u8]) -> Vec<crate::sse::Event> {
        let mut parser = EventStreamParser::new(ParseLimits::default());
        let mut events = Vec::new();
        parser.feed(bytes, &mut events).unwrap();
        events
    }

    #[test]
    fn html_sse_multi_line_data_round_trips_through_the_standard_parser() {
        let text = "line one\nline two\r\nline three\rend";
        let bytes = encode_message(&message(Payload::Text(Arc::from(text)), Some("price")));
        let events = parse(&bytes);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].event_type, "price");
        assert_eq!(events[0].data, "line one\nline two\nline three\nend");
        assert_eq!(events[0].last_event_id, "00000000000000ab:3");
    }

    #[test]
    fn html_sse_binary_payload_is_base64_with_b64_event_type() {
        let bytes = encode_message(&message(Payload::Binary(Arc::from(&b"\x00\xff"[..])), None));
        let events = parse(&bytes);
        assert_eq!(events[0].event_type, "b64:message");
        assert_eq!(events[0].data, "AP8=");
    }
}
