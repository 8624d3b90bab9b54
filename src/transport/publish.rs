//! Publishing over HTTP: `POST /channels/{name}[?event=NAME]` with the message as the body.
//!
//! Implements: the text/binary decision from `Content-Type`
//! ([RFC 9110 §8.3](https://www.rfc-editor.org/rfc/rfc9110#section-8.3)) and the `201 Created`
//! answer `{"id":"EPOCH:OFFSET"}`; and the event-name rule every publish path shares
//! ([`check_event_name`]: `?event=`, the `pushwire.v1` `publish` command, the server API).
//!
//! A body is a text message when its media type is `text/*`, `application/json`,
//! `application/*+json` or `application/x-www-form-urlencoded` (what `curl -d` sends; ASCII by
//! definition), and must then be UTF-8 (else 400). Anything else, or no Content-Type, is a
//! binary message.
//!
//! Does not: read the body (the connection layer does, within the body limit).

use std::sync::Arc;

use crate::http1::chunked::is_tchar;
use crate::http1::head::{Headers, RequestHead};
use crate::hub::{Cursor, Payload};

/// The event names the server writes itself (a gap, a token's expiry): no publisher may use
/// them, so those events cannot be spoofed.
pub const RESERVED_EVENT_NAMES: [&str; 2] = ["gap", "token_expired"];

/// Why a publish's event name is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventNameError {
    /// Longer than `max_event_name_bytes`.
    TooLong,
    /// Empty, or not an RFC 9110 §5.6.2 token.
    NotAToken,
    /// One of [`RESERVED_EVENT_NAMES`].
    Reserved,
}

/// Checks a publish's event name against `max_bytes` and the rules above.
pub fn check_event_name(name: &str, max_bytes: usize) -> Result<(), EventNameError> {
    if name.len() > max_bytes {
        return Err(EventNameError::TooLong);
    }
    // RFC 9110 §5.6.2: token = 1*tchar (an SSE `event:` field carries it as is).
    if name.is_empty() || !name.bytes().all(is_tchar) {
        return Err(EventNameError::NotAToken);
    }
    if RESERVED_EVENT_NAMES.contains(&name) {
        return Err(EventNameError::Reserved);
    }
    Ok(())
}

/// True when the request's media type makes its body a text message.
pub fn is_text(head: &RequestHead) -> bool {
    let Some(value) = head.header("content-type") else {
        return false;
    };
    // RFC 9110 §8.3.1: type and subtype are case-insensitive; parameters follow a ';'.
    let media = value.split(|&b| b == b';').next().unwrap_or_default().trim_ascii().to_ascii_lowercase();
    media.starts_with(b"text/")
        || media == b"application/json"
        || (media.starts_with(b"application/") && media.ends_with(b"+json"))
        || media == b"application/x-www-form-urlencoded"
}

/// The message payload for a body; `None` when a text body is not UTF-8.
pub fn payload(text: bool, body: Vec<u8>) -> Option<Payload> {
    if text {
        String::from_utf8(body).ok().map(|s| Payload::Text(Arc::from(s)))
    } else {
        Some(Payload::Binary(Arc::from(body)))
    }
}

/// The body of the `201` answer.
pub fn created_body(id: Cursor) -> Vec<u8> {
    format!("{{\"id\":\"{id}\"}}\n").into_bytes()
}
