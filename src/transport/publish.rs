//! Publishing over HTTP: `POST /channels/{name}[?event=NAME]` with the message as the body.
//!
//! Implements: the text/binary decision from `Content-Type`
//! ([RFC 9110 §8.3](https://www.rfc-editor.org/rfc/rfc9110#section-8.3)) and the `201 Created`
//! answer `{"id":"EPOCH:OFFSET"}`.
//!
//! A body is a text message when its media type is `text/*`, `application/json`,
//! `application/*+json` or `application/x-www-form-urlencoded` (what `curl -d` sends; ASCII by
//! definition), and must then be UTF-8 (else 400). Anything else, or no Content-Type, is a
//! binary message.
//!
//! Does not: read the body (the connection layer does, within the body limit).

use std::sync::Arc;

use crate::http1::head::{Headers, RequestHead};
use crate::hub::{Cursor, Payload};

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
