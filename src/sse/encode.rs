//! Writes server-sent events, retry fields and comments in the `text/event-stream` format.
//!
//! Implements: WHATWG HTML "Parsing an event stream" (`#parsing-an-event-stream`), the grammar
//! `field = 1*name-char [ colon [ space ] *any-char ] end-of-line`, every line ended by LF; and
//! "Authoring notes" (`#authoring-notes`): comment lines to keep proxies from timing out.
//!
//! Does not: write CR or CRLF line ends (LF is one of the three allowed), or check `retry`
//! against any range (any `u64` is a valid reconnection time in milliseconds).

use std::fmt;

/// A value that cannot be written as a field without changing its meaning. Caller misuse: the
/// peer never sees any of it, `out` is left untouched.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncodeError {
    /// The `id` contains CR or LF, which would end the field early and inject further fields
    /// (`any-char` excludes CR and LF).
    IdContainsLineBreak,
    /// The `id` contains NUL: "If the field value does not contain U+0000 NULL, then set the
    /// last event ID buffer to the field value. Otherwise, ignore the field."
    IdContainsNull,
    /// The `event` type contains CR or LF, which would end the field early and inject further
    /// fields (`any-char` excludes CR and LF).
    EventTypeContainsLineBreak,
    /// The `event` type contains NUL; not forbidden by the grammar, but never useful and
    /// refused for the same reason as in `id`.
    EventTypeContainsNull,
    /// The comment contains CR or LF, which would end the comment and turn the rest into
    /// fields.
    CommentContainsLineBreak,
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EncodeError::IdContainsLineBreak => "event id contains CR or LF",
            EncodeError::IdContainsNull => "event id contains NUL",
            EncodeError::EventTypeContainsLineBreak => "event type contains CR or LF",
            EncodeError::EventTypeContainsNull => "event type contains NUL",
            EncodeError::CommentContainsLineBreak => "comment contains CR or LF",
        })
    }
}

impl std::error::Error for EncodeError {}

/// Appends one event: an `id:` line if `id` is given, an `event:` line if `event` is given,
/// one `data:` line per line of `data`, and the blank line that dispatches the event.
///
/// `data` is split on CRLF, CR and LF, so each of them reaches the client as LF; an empty
/// `data` writes one empty `data:` line and is dispatched as an empty message. `Some("")` as
/// `id` resets the client's last event ID; `Some("")` as `event` means "message".
/// Fails, writing nothing, if `id` or `event` contains CR, LF or NUL.
pub fn encode_event(
    id: Option<&str>,
    event: Option<&str>,
    data: &str,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    if let Some(id) = id {
        // HTML #parsing-an-event-stream: any-char is a scalar value other than LF or CR.
        if id.contains(['\r', '\n']) {
            return Err(EncodeError::IdContainsLineBreak);
        }
        // HTML #event-stream-interpretation: an "id" field value containing U+0000 NULL is
        // ignored by the client.
        if id.contains('\0') {
            return Err(EncodeError::IdContainsNull);
        }
    }
    if let Some(event) = event {
        // HTML #parsing-an-event-stream: any-char is a scalar value other than LF or CR.
        if event.contains(['\r', '\n']) {
            return Err(EncodeError::EventTypeContainsLineBreak);
        }
        if event.contains('\0') {
            return Err(EncodeError::EventTypeContainsNull);
        }
    }
    out.reserve(data.len() + id.map_or(0, str::len) + event.map_or(0, str::len) + 24);
    if let Some(id) = id {
        write_field("id", id, out);
    }
    if let Some(event) = event {
        write_field("event", event, out);
    }
    // HTML #parsing-an-event-stream: lines are separated by CRLF, a single LF or a single CR,
    // so a value line ends at any of them; each becomes its own "data" field, which the client
    // joins with LF.
    let mut rest = data;
    // CR and LF are ASCII, so a byte scan finds them (str::find with a char set goes char by
    // char, far slower) and the split lands on a char boundary.
    while let Some(end) = rest.bytes().position(|b| b == b'\r' || b == b'\n') {
        let (line, tail) = rest.split_at(end);
        write_field("data", line, out);
        rest = match tail.strip_prefix("\r\n") {
            Some(after) => after,
            // The line break is one ASCII byte.
            None => tail.get(1..).unwrap_or_default(),
        };
    }
    write_field("data", rest, out);
    // HTML #event-stream-interpretation: "If the line is empty (a blank line) Dispatch the
    // event".
    out.push(b'\n');
    Ok(())
}

/// Appends a `retry:` field that sets the client's reconnection time, in milliseconds.
///
/// It takes effect when the client reads the line; it can be written alone or before an
/// event's fields.
pub fn encode_retry(retry_ms: u64, out: &mut Vec<u8>) {
    // HTML #event-stream-interpretation: "retry" is used only if it consists of ASCII digits.
    write_field("retry", &retry_ms.to_string(), out);
}

/// Appends a comment line `: text`, which the client ignores; send one every 15 seconds or
/// so to keep legacy proxies from dropping the connection (HTML `#authoring-notes`).
/// Fails, writing nothing, if `text` contains CR or LF.
pub fn encode_comment(text: &str, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    // HTML #parsing-an-event-stream: comment = colon *any-char end-of-line.
    if text.contains(['\r', '\n']) {
        return Err(EncodeError::CommentContainsLineBreak);
    }
    write_field("", text, out);
    Ok(())
}

/// Writes `name: value` LF, or `name:` LF for an empty value.
///
/// The space after the colon is always written before a non-empty value because the client
/// removes one leading space: a value that itself starts with a space keeps it.
fn write_field(name: &str, value: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(name.as_bytes());
    out.push(b':');
    if !value.is_empty() {
        out.push(b' ');
        out.extend_from_slice(value.as_bytes());
    }
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sse::{Event, EventStreamParser, ParseLimits};

    fn encoded(id: Option<&str>, event: Option<&str>, data: &str) -> String {
        let mut out = Vec::new();
        encode_event(id, event, data, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    fn parse_all(wire: &[u8]) -> (Vec<Event>, EventStreamParser) {
        let mut parser = EventStreamParser::new(ParseLimits::default());
        let mut events = Vec::new();
        parser.feed(wire, &mut events).unwrap();
        (events, parser)
    }

    #[test]
    fn html_parsing_an_event_stream_field_lines() {
        assert_eq!(encoded(None, None, "hello"), "data: hello\n\n");
        assert_eq!(encoded(Some("7"), Some("add"), "73857293"), "id: 7\nevent: add\ndata: 73857293\n\n");
        assert_eq!(encoded(None, None, ""), "data:\n\n");
        assert_eq!(encoded(Some(""), None, "x"), "id:\ndata: x\n\n");
    }

    #[test]
    fn html_parsing_an_event_stream_data_split_on_crlf_cr_lf() {
        assert_eq!(encoded(None, None, "a\r\nb\rc\nd"), "data: a\ndata: b\ndata: c\ndata: d\n\n");
        assert_eq!(encoded(None, None, "a\n"), "data: a\ndata:\n\n");
        assert_eq!(encoded(None, None, "\r\r\n"), "data:\ndata:\ndata:\n\n");
    }

    #[test]
    fn html_parsing_an_event_stream_no_line_break_or_null_in_id_or_event() {
        let mut out = Vec::new();
        let cases = [
            (Some("1\n"), None, EncodeError::IdContainsLineBreak),
            (Some("1\r2"), None, EncodeError::IdContainsLineBreak),
            (Some("1\0 2"), None, EncodeError::IdContainsNull),
            (None, Some("a\nb"), EncodeError::EventTypeContainsLineBreak),
            (None, Some("a\r"), EncodeError::EventTypeContainsLineBreak),
            (None, Some("a\0"), EncodeError::EventTypeContainsNull),
        ];
        for (id, event, error) in cases {
            assert_eq!(encode_event(id, event, "x", &mut out), Err(error));
        }
        assert_eq!(encode_comment("a\nb", &mut out), Err(EncodeError::CommentContainsLineBreak));
        assert!(out.is_empty());
    }

    #[test]
    fn html_authoring_notes_comment_and_retry() {
        let mut out = Vec::new();
        encode_comment("keep-alive", &mut out).unwrap();
        encode_comment("", &mut out).unwrap();
        encode_retry(2500, &mut out);
        assert_eq!(out, b": keep-alive\n:\nretry: 2500\n");
        let (events, parser) = parse_all(&out);
        assert!(events.is_empty());
        assert_eq!(parser.retry(), Some(2500));
    }

    #[test]
    fn html_event_stream_interpretation_round_trip() {
        let cases: [(Option<&str>, Option<&str>, &str); 10] = [
            (None, None, ""),
            (None, None, "plain"),
            (Some("42"), Some("update"), "line one\nline two"),
            (None, None, "crlf\r\nand cr\rand lf\nend"),
            (None, None, "\n\nempty lines\n\n"),
            (None, None, "  leading spaces\n kept"),
            (Some(" spaced id "), Some(" spaced "), ": not a comment"),
            (Some("ünï"), Some("cödé"), "héllo wörld 👋\n日本語"),
            (None, Some(""), "data: nested\nid: not a field\n\nevent: no"),
            (Some(""), None, "nul \0 in data is fine"),
        ];
        let mut wire = Vec::new();
        encode_retry(1000, &mut wire);
        for (id, event, data) in cases {
            encode_event(id, event, data, &mut wire).unwrap();
        }
        let (events, parser) = parse_all(&wire);
        assert_eq!(events.len(), cases.len());
        let mut last_event_id = "";
        for (&(id, event, data), parsed) in cases.iter().zip(&events) {
            if let Some(id) = id {
                last_event_id = id;
            }
            let event_type = match event {
                Some(event) if !event.is_empty() => event,
                _ => "message",
            };
            let expected = Event {
                event_type: event_type.to_owned(),
                data: data.replace("\r\n", "\n").replace('\r', "\n"),
                last_event_id: last_event_id.to_owned(),
            };
            assert_eq!(parsed, &expected);
        }
        assert_eq!(parser.retry(), Some(1000));
        assert_eq!(parser.last_event_id(), "");
    }
}
