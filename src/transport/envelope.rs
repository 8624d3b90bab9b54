//! The JSON envelope: how one channel message looks in polling responses, the chunked stream
//! and the `pushwire.v1` WebSocket subprotocol.
//!
//! ```text
//! {"id":"EPOCH:OFFSET","event":"NAME","data":"text"}       a text message (event only when set)
//! {"id":"EPOCH:OFFSET","data_b64":"AAEC"}                  a binary message, standard base64
//! {"type":"gap","next":"EPOCH:OFFSET"}                     messages were lost before `next`
//! {"type":"open","next":"EPOCH:OFFSET"}                    a subscription starts after `next`
//! ```
//!
//! Implements: JSON text ([RFC 8259](https://www.rfc-editor.org/rfc/rfc8259)) for strings with
//! the escapes of §7, and base64 ([RFC 4648 §4](https://www.rfc-editor.org/rfc/rfc4648#section-4)).
//!
//! Does not: parse JSON (the server never reads JSON).

use base64::Engine as _;

use crate::hub::{Cursor, Message, Payload};

/// Appends `s` as a JSON string (RFC 8259 §7: quotation mark, reverse solidus and the control
/// characters U+0000 to U+001F MUST be escaped).
pub fn write_json_string(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if escape.is_empty() {
            out.extend_from_slice(format!("\\u{b:04x}").as_bytes());
        } else {
            out.extend_from_slice(escape);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// The envelope of one message, without a trailing newline.
pub fn message_envelope(msg: &Message) -> Vec<u8> {
    let mut out = Vec::with_capacity(msg.payload.len_bytes() + 64);
    out.extend_from_slice(b"{\"id\":\"");
    out.extend_from_slice(msg.id.to_string().as_bytes());
    out.push(b'"');
    if let Some(event) = &msg.event {
        out.extend_from_slice(b",\"event\":");
        write_json_string(&mut out, event);
    }
    match &msg.payload {
        Payload::Text(text) => {
            out.extend_from_slice(b",\"data\":");
            write_json_string(&mut out, text);
        }
        Payload::Binary(bytes) => {
            out.extend_from_slice(b",\"data_b64\":\"");
            out.extend_from_slice(base64::engine::general_purpose::STANDARD.encode(bytes).as_bytes());
            out.push(b'"');
        }
    }
    out.push(b'}');
    out
}

/// The envelope that signals a gap: messages before `next` may have been lost.
pub fn gap_envelope(next: Cursor) -> Vec<u8> {
    format!("{{\"type\":\"gap\",\"next\":\"{next}\"}}").into_bytes()
}

/// The envelope that starts a subscription: messages after `next` follow.
pub fn open_envelope(next: Cursor) -> Vec<u8> {
    format!("{{\"type\":\"open\",\"next\":\"{next}\"}}").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc8259_7_strings_escape_quotes_backslash_and_controls() {
        let mut out = Vec::new();
        write_json_string(&mut out, "a\"b\\c\nd\u{1}é");
        assert_eq!(String::from_utf8(out).unwrap(), "\"a\\\"b\\\\c\\nd\\u0001é\"");
    }
}
