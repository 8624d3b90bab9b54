//! Incremental client-side parser of a `text/event-stream`, following the HTML standard's
//! interpretation steps one for one.
//!
//! Implements: WHATWG HTML "Interpreting an event stream" (`#event-stream-interpretation`):
//! UTF-8 decode with replacement and one leading BOM stripped, lines ended by CRLF, LF or CR
//! (also when a CRLF is split between two feeds), comments, fields with and without a colon,
//! `event`, `data`, `id` (ignored if it contains NUL), `retry` (ASCII digits only), and the
//! "dispatch the event" steps for web browsers (minus the `origin` and the task queue).
//!
//! Does not: dispatch an incomplete event at the end of the stream (the spec discards it, see
//! [`EventStreamParser::finish`]); accept lines or data beyond [`ParseLimits`], which the spec
//! leaves unbounded and a client must not.

use std::fmt;

/// The UTF-8 encoding of U+FEFF BYTE ORDER MARK.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Limits that keep one event stream from exhausting the client; the HTML standard sets none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseLimits {
    /// Longest line, in bytes as received, without its line end; longer fails with
    /// [`ParseError::LineTooLong`]. This also bounds the `event` type and `id` (after UTF-8
    /// replacement a line can decode to at most three times as many bytes). Default 64 KiB.
    pub max_line_bytes: usize,
    /// Largest data buffer, in bytes of UTF-8 (every `data` value plus one LF each); larger
    /// fails with [`ParseError::DataTooLarge`]. Default 1 MiB.
    pub max_data_bytes: usize,
}

impl Default for ParseLimits {
    fn default() -> Self {
        ParseLimits { max_line_bytes: 64 * 1024, max_data_bytes: 1024 * 1024 }
    }
}

/// An event stream that exceeds a [`ParseLimits`] bound. The HTML standard itself never
/// rejects a stream; the client closes the connection instead of growing without bound.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// A line is longer than [`ParseLimits::max_line_bytes`].
    LineTooLong,
    /// The data buffer would grow beyond [`ParseLimits::max_data_bytes`].
    DataTooLarge,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ParseError::LineTooLong => "event stream line too long",
            ParseError::DataTooLarge => "event stream data buffer too large",
        })
    }
}

impl std::error::Error for ParseError {}

/// One dispatched event: what a browser would deliver as a `MessageEvent`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The event type: the `event` field, or "message" when it was absent or empty.
    pub event_type: String,
    /// The `data` field values joined by LF.
    pub data: String,
    /// The last event ID string when the event was dispatched: the latest `id` seen on the
    /// stream, not necessarily in this event's block.
    pub last_event_id: String,
}

/// Incremental parser of one event stream (one HTTP response body).
///
/// Feed it the body bytes with [`EventStreamParser::feed`] as they arrive, in pieces of any
/// size; call [`EventStreamParser::finish`] at the end of the stream. Between calls it holds at
/// most one partial line and one event's buffers.
#[derive(Debug, Clone)]
pub struct EventStreamParser {
    limits: ParseLimits,
    /// How many bytes of a leading BOM were matched, while still at the start of the stream.
    bom_matched: Option<usize>,
    /// The bytes of the current, unterminated line.
    line: Vec<u8>,
    /// The last line ended with CR: an LF that comes next ends nothing.
    after_cr: bool,
    data_buffer: String,
    event_type_buffer: String,
    last_event_id_buffer: String,
    /// The event source's "last event ID string", set from the buffer on each dispatch.
    last_event_id: String,
    /// The reconnection time in milliseconds, once a valid `retry` field was seen.
    reconnection_time_ms: Option<u64>,
    /// The error returned earlier; every later call returns it again.
    failed: Option<ParseError>,
}

impl EventStreamParser {
    /// A parser at the start of a stream, with empty buffers ("They must be initialized to the
    /// empty string"). Next: [`EventStreamParser::feed`].
    pub fn new(limits: ParseLimits) -> Self {
        EventStreamParser {
            limits,
            bom_matched: Some(0),
            line: Vec::new(),
            after_cr: false,
            data_buffer: String::new(),
            event_type_buffer: String::new(),
            last_event_id_buffer: String::new(),
            last_event_id: String::new(),
            reconnection_time_ms: None,
            failed: None,
        }
    }

    /// Parses the next bytes of the stream, appending every event dispatched by a blank line
    /// to `events`.
    ///
    /// The bytes can be cut anywhere, even inside a UTF-8 character or between the CR and LF of
    /// a line end: the events are the same as if the whole stream came at once. Next: `feed`
    /// again, or [`EventStreamParser::finish`] at the end of the stream. On error the stream
    /// must be abandoned (events already dispatched stay in `events`); later calls return the
    /// same error.
    pub fn feed(&mut self, bytes: &[u8], events: &mut Vec<Event>) -> Result<(), ParseError> {
        if let Some(error) = self.failed {
            return Err(error);
        }
        let result = self.parse(bytes, events);
        if let Err(error) = result {
            self.failed = Some(error);
        }
        result
    }

    /// The end of the stream: the partial line and the pending event are discarded, not
    /// dispatched. HTML #event-stream-interpretation: "Once the end of the file is reached, any
    /// pending data must be discarded. (If the file ends in the middle of an event, before the
    /// final empty line, the incomplete event is not dispatched.)"
    ///
    /// [`EventStreamParser::last_event_id`] and [`EventStreamParser::retry`] keep their values,
    /// for the reconnection. A new connection's stream needs a new parser.
    pub fn finish(&mut self) {
        self.line.clear();
        self.after_cr = false;
        self.data_buffer.clear();
        self.event_type_buffer.clear();
    }

    /// The reconnection time in milliseconds from the last valid `retry` field, if any.
    pub fn retry(&self) -> Option<u64> {
        self.reconnection_time_ms
    }

    /// The last event ID string: the `id` in force at the last dispatch, which the client sends
    /// as `Last-Event-ID` when it reconnects (HTML `#the-last-event-id-header`); empty if none.
    pub fn last_event_id(&self) -> &str {
        &self.last_event_id
    }

    fn parse(&mut self, bytes: &[u8], events: &mut Vec<Event>) -> Result<(), ParseError> {
        let mut rest = self.strip_bom(bytes)?;
        while let Some((&first, tail)) = rest.split_first() {
            // HTML #event-stream-interpretation: a line ends with CRLF, with LF not preceded by
            // CR, or with CR not followed by LF. The line already ended at the CR.
            if std::mem::take(&mut self.after_cr) && first == b'\n' {
                rest = tail;
                continue;
            }
            match rest.iter().position(|&b| b == b'\r' || b == b'\n') {
                None => {
                    self.append_to_line(rest)?;
                    break;
                }
                Some(end) => {
                    let (line, line_end) = rest.split_at(end);
                    self.append_to_line(line)?;
                    self.after_cr = line_end.first() == Some(&b'\r');
                    rest = line_end.get(1..).unwrap_or_default();
                    self.process_line(events)?;
                }
            }
        }
        Ok(())
    }

    /// Removes a leading BOM, even one split across feeds, and returns the bytes after it.
    fn strip_bom<'a>(&mut self, mut bytes: &'a [u8]) -> Result<&'a [u8], ParseError> {
        // HTML #event-stream-interpretation: "The UTF-8 decode algorithm strips one leading
        // UTF-8 Byte Order Mark (BOM), if any."
        while let Some(matched) = self.bom_matched {
            let Some((&byte, tail)) = bytes.split_first() else {
                break;
            };
            if BOM.get(matched) == Some(&byte) {
                bytes = tail;
                self.bom_matched = Some(matched + 1).filter(|&n| n < BOM.len());
            } else {
                // Not a BOM after all: the bytes held back start the first line.
                self.bom_matched = None;
                self.append_to_line(BOM.get(..matched).unwrap_or_default())?;
            }
        }
        Ok(bytes)
    }

    fn append_to_line(&mut self, bytes: &[u8]) -> Result<(), ParseError> {
        if bytes.len() > self.limits.max_line_bytes.saturating_sub(self.line.len()) {
            return Err(ParseError::LineTooLong);
        }
        self.line.extend_from_slice(bytes);
        Ok(())
    }

    /// Processes the complete line held in `self.line`, then empties it.
    fn process_line(&mut self, events: &mut Vec<Event>) -> Result<(), ParseError> {
        let mut line = std::mem::take(&mut self.line);
        let result = self.process_line_bytes(&line, events);
        line.clear();
        self.line = line;
        result
    }

    fn process_line_bytes(&mut self, line: &[u8], events: &mut Vec<Event>) -> Result<(), ParseError> {
        // HTML #event-stream-interpretation: "Streams must be decoded using the UTF-8 decode
        // algorithm." Line ends are ASCII, so decoding line by line with replacement gives the
        // same characters as decoding the whole stream.
        let line = String::from_utf8_lossy(line);
        // "If the line is empty (a blank line) Dispatch the event".
        if line.is_empty() {
            self.dispatch_event(events);
            return Ok(());
        }
        match line.split_once(':') {
            // "If the line starts with a U+003A COLON character (:) Ignore the line."
            Some(("", _)) => Ok(()),
            // "If the line contains a U+003A COLON character (:)": field before the first
            // colon, value after it; "If value starts with a U+0020 SPACE character, remove
            // it from value."
            Some((field, value)) => {
                let value = value.strip_prefix(' ').unwrap_or(value);
                self.process_field(field, value)
            }
            // "Otherwise ... using the whole line as the field name, and the empty string as
            // the field value."
            None => self.process_field(&line, ""),
        }
    }

    /// HTML #event-stream-interpretation, "process the field". "Field names must be compared
    /// literally, with no case folding performed."
    fn process_field(&mut self, field: &str, value: &str) -> Result<(), ParseError> {
        match field {
            // "Set the event type buffer to the field value."
            "event" => {
                self.event_type_buffer.clear();
                self.event_type_buffer.push_str(value);
            }
            // "Append the field value to the data buffer, then append a single U+000A LINE
            // FEED (LF) character to the data buffer."
            "data" => {
                let grown = self.data_buffer.len().saturating_add(value.len()).saturating_add(1);
                if grown > self.limits.max_data_bytes {
                    return Err(ParseError::DataTooLarge);
                }
                self.data_buffer.push_str(value);
                self.data_buffer.push('\n');
            }
            // "If the field value does not contain U+0000 NULL, then set the last event ID
            // buffer to the field value. Otherwise, ignore the field."
            "id" if !value.contains('\0') => {
                self.last_event_id_buffer.clear();
                self.last_event_id_buffer.push_str(value);
            }
            // "If the field value consists of only ASCII digits, then interpret the field value
            // as an integer in base ten, and set the event stream's reconnection time to that
            // integer. Otherwise, ignore the field." An empty value, or one too large for a
            // u64 of milliseconds, fails to parse and is ignored as well.
            "retry" if value.bytes().all(|b| b.is_ascii_digit()) => {
                if let Ok(ms) = value.parse() {
                    self.reconnection_time_ms = Some(ms);
                }
            }
            // "Otherwise The field is ignored.", and so are the ignored "id" and "retry" above.
            _ => {}
        }
        Ok(())
    }

    /// HTML #event-stream-interpretation, "dispatch the event", the steps for web browsers.
    fn dispatch_event(&mut self, events: &mut Vec<Event>) {
        // 1. "Set the last event ID string of the event source to the value of the last event
        //    ID buffer. The buffer does not get reset".
        self.last_event_id.clone_from(&self.last_event_id_buffer);
        // 2. "If the data buffer is an empty string, set the data buffer and the event type
        //    buffer to the empty string and return."
        if self.data_buffer.is_empty() {
            self.event_type_buffer.clear();
            return;
        }
        // 3. "If the data buffer's last character is a U+000A LINE FEED (LF) character, then
        //    remove the last character from the data buffer."
        if self.data_buffer.ends_with('\n') {
            self.data_buffer.pop();
        }
        // 5-6. Type "message", unless the event type buffer has a value other than the empty
        //    string; lastEventId is the last event ID string.
        // 7. "Set the data buffer and the event type buffer to the empty string."
        let event_type = match std::mem::take(&mut self.event_type_buffer) {
            event_type if event_type.is_empty() => "message".to_owned(),
            event_type => event_type,
        };
        events.push(Event {
            event_type,
            data: std::mem::take(&mut self.data_buffer),
            last_event_id: self.last_event_id.clone(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a whole stream produced: events, reconnection time, last event ID.
    type Outcome = (Vec<Event>, Option<u64>, String);

    fn parse_pieces(limits: ParseLimits, pieces: &[&[u8]]) -> Result<Outcome, ParseError> {
        let mut parser = EventStreamParser::new(limits);
        let mut events = Vec::new();
        for piece in pieces {
            parser.feed(piece, &mut events)?;
        }
        parser.finish();
        Ok((events, parser.retry(), parser.last_event_id().to_owned()))
    }

    fn parse(input: &[u8]) -> Outcome {
        parse_pieces(ParseLimits::default(), &[input]).unwrap()
    }

    fn event(event_type: &str, data: &str, last_event_id: &str) -> Event {
        Event {
            event_type: event_type.to_owned(),
            data: data.to_owned(),
            last_event_id: last_event_id.to_owned(),
        }
    }

    fn messages(input: &[u8]) -> Vec<String> {
        parse(input).0.into_iter().map(|e| e.data).collect()
    }

    /// Checks that every cut point and single bytes give the same outcome as one feed.
    fn assert_split_invariant(limits: ParseLimits, input: &[u8]) {
        let whole = parse_pieces(limits, &[input]);
        for cut in 0..=input.len() {
            let (a, b) = input.split_at(cut);
            assert_eq!(parse_pieces(limits, &[a, b]), whole, "cut at {cut}");
        }
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(parse_pieces(limits, &bytes), whole, "byte by byte");
    }

    #[test]
    fn html_server_sent_events_intro_examples() {
        let stream = b"data: This is the first message.\n\ndata: This is the second message, it\ndata: has two lines.\n\ndata: This is the third message.\n\n";
        assert_eq!(
            messages(stream),
            [
                "This is the first message.",
                "This is the second message, it\nhas two lines.",
                "This is the third message."
            ]
        );
        let stream =
            b"event: add\ndata: 73857293\n\nevent: remove\ndata: 2153\n\nevent: add\ndata: 113411\n\n";
        assert_eq!(
            parse(stream).0,
            [event("add", "73857293", ""), event("remove", "2153", ""), event("add", "113411", "")]
        );
    }

    #[test]
    fn html_event_stream_interpretation_stock_example() {
        assert_eq!(parse(b"data: YHOO\ndata: +2\ndata: 10\n\n").0, [event("message", "YHOO\n+2\n10", "")]);
    }

    #[test]
    fn html_event_stream_interpretation_four_blocks_example() {
        let stream =
            b": test stream\n\ndata: first event\nid: 1\n\ndata:second event\nid\n\ndata:  third event\n\n";
        let (events, _, last_event_id) = parse(stream);
        assert_eq!(
            events,
            [
                event("message", "first event", "1"),
                event("message", "second event", ""),
                event("message", " third event", "")
            ]
        );
        assert_eq!(last_event_id, "");
        // "the end of the stream is not enough to trigger the dispatch of the last event".
        let unterminated = b": test stream\n\ndata: first event\nid: 1\n\ndata:  third event\n";
        let (events, _, last_event_id) = parse(unterminated);
        assert_eq!(events, [event("message", "first event", "1")]);
        assert_eq!(last_event_id, "1");
    }

    #[test]
    fn html_event_stream_interpretation_empty_data_example() {
        // "The first block fires events with the data set to the empty string, as would the
        // last block if it was followed by a blank line. The middle block fires an event with
        // the data set to a single newline character."
        assert_eq!(messages(b"data\n\ndata\ndata\n\ndata:"), ["", "\n"]);
        assert_eq!(messages(b"data\n\ndata\ndata\n\ndata:\n\n"), ["", "\n", ""]);
    }

    #[test]
    fn html_event_stream_interpretation_space_after_colon_example() {
        // "The following stream fires two identical events".
        let (events, _, _) = parse(b"data:test\n\ndata: test\n\n");
        assert_eq!(events, vec![event("message", "test", ""); 2]);
        // Only one space is removed.
        assert_eq!(messages(b"data:  two\n\n"), [" two"]);
    }

    #[test]
    fn html_event_stream_interpretation_comments_ignored() {
        assert_eq!(
            parse(b": hello\n:\n:data: no\ndata: yes\n: between\n\n").0,
            [event("message", "yes", "")]
        );
        assert!(parse(b": only a comment\n\n").0.is_empty());
    }

    #[test]
    fn html_event_stream_interpretation_field_without_colon() {
        // "data" alone appends an empty value; "event" alone resets the type to "message".
        assert_eq!(parse(b"event: x\nevent\ndata\n\n").0, [event("message", "", "")]);
    }

    #[test]
    fn html_event_stream_interpretation_event_type() {
        assert_eq!(parse(b"event: ping\ndata: 1\n\n").0, [event("ping", "1", "")]);
        // The event type buffer is reset after each dispatch, and when data is empty.
        assert_eq!(
            parse(b"event: a\n\ndata: 2\n\nevent: b\ndata: 3\n\ndata: 4\n\n").0,
            [event("message", "2", ""), event("b", "3", ""), event("message", "4", "")]
        );
        // "Field names must be compared literally, with no case folding performed."
        assert_eq!(parse(b"Event: x\nDATA: y\ndata: z\n\n").0, [event("message", "z", "")]);
    }

    #[test]
    fn html_event_stream_interpretation_unknown_fields_ignored() {
        assert_eq!(parse(b"foo: bar\ndata : spaced name\ndata: x\n\n").0, [event("message", "x", "")]);
    }

    #[test]
    fn html_event_stream_interpretation_id_with_null_ignored() {
        let (events, _, last_event_id) = parse(b"id: 1\ndata: a\n\nid: 2\0x\ndata: b\n\n");
        assert_eq!(events, [event("message", "a", "1"), event("message", "b", "1")]);
        assert_eq!(last_event_id, "1");
    }

    #[test]
    fn html_event_stream_interpretation_id_without_data_sets_last_event_id() {
        // Step 1 runs before step 2: a block with only an id updates the last event ID string.
        let (events, _, last_event_id) = parse(b"id: 7\n\n");
        assert!(events.is_empty());
        assert_eq!(last_event_id, "7");
        // An id whose block never ends is not in force.
        let (_, _, last_event_id) = parse(b"id: 7\n\nid: 8\ndata: x\n");
        assert_eq!(last_event_id, "7");
    }

    #[test]
    fn html_event_stream_interpretation_retry_ascii_digits_only() {
        assert_eq!(parse(b"retry: 3000\n").1, Some(3000));
        for ignored in [
            &b"retry: 3000\nretry: 1.5\n"[..],
            b"retry: 3000\nretry: -1\n",
            b"retry: 3000\nretry: 12a\n",
            b"retry: 3000\nretry:  12\n",
            b"retry: 3000\nretry: \xd9\xa1\n",
            b"retry: 3000\nretry:\n",
            b"retry: 3000\nretry: 99999999999999999999999\n",
        ] {
            assert_eq!(parse(ignored).1, Some(3000), "{ignored:?}");
        }
        assert_eq!(parse(b"retry: 3000\nretry: 0\n").1, Some(0));
        assert_eq!(parse(b"retry\n").1, None);
    }

    #[test]
    fn html_event_stream_interpretation_bom_stripped_once() {
        assert_eq!(messages(b"\xEF\xBB\xBFdata: a\n\n"), ["a"]);
        // Only one BOM is stripped: a second one is part of the field name.
        assert!(messages(b"\xEF\xBB\xBF\xEF\xBB\xBFdata: a\n\n").is_empty());
        // A BOM later in the stream is not stripped.
        assert_eq!(messages(b"data: a\n\n\xEF\xBB\xBFdata: b\n\n"), ["a"]);
        // Split across feeds.
        let pieces: [&[u8]; 3] = [b"\xEF", b"\xBB", b"\xBFdata: a\n\n"];
        let (events, _, _) = parse_pieces(ParseLimits::default(), &pieces).unwrap();
        assert_eq!(events, [event("message", "a", "")]);
        // A partial BOM is not stripped: its bytes decode to U+FFFD in the first line.
        assert_eq!(messages(b"\xEF\xBBdata\n\ndata: b\n\n"), ["b"]);
        assert_eq!(messages(b"\xEF\xBB\ndata: b\n\n"), ["b"]);
    }

    #[test]
    fn html_event_stream_interpretation_line_ends() {
        let expected = vec!["a\nb".to_owned(), "c".to_owned()];
        assert_eq!(messages(b"data: a\ndata: b\n\ndata: c\n\n"), expected);
        assert_eq!(messages(b"data: a\rdata: b\r\rdata: c\r\r"), expected);
        assert_eq!(messages(b"data: a\r\ndata: b\r\n\r\ndata: c\r\n\r\n"), expected);
        assert_eq!(messages(b"data: a\r\ndata: b\r\rdata: c\n\r\n"), expected);
        // CR LF is one line end even when split between feeds; LF CR is two.
        let pieces: [&[u8]; 3] = [b"data: a\r", b"\ndata: b\r", b"\n\r\n"];
        let (events, _, _) = parse_pieces(ParseLimits::default(), &pieces).unwrap();
        assert_eq!(events, [event("message", "a\nb", "")]);
        assert_eq!(messages(b"data: a\n\rdata: b\n\n"), ["a", "b"]);
    }

    #[test]
    fn html_event_stream_interpretation_utf8_with_replacement() {
        assert_eq!(messages("data: héllo 👋 日本\n\n".as_bytes()), ["héllo 👋 日本"]);
        // Invalid bytes become U+FFFD: a lone continuation byte, a truncated sequence, an
        // overlong encoding.
        assert_eq!(messages(b"data: a\x80b\xE6\x97c\xC0\xAF\n\n"), ["a\u{FFFD}b\u{FFFD}c\u{FFFD}\u{FFFD}"]);
        // A sequence cut by a line end is replaced, and the line still ends.
        assert_eq!(messages(b"data: \xF0\x9F\ndata: x\n\n"), ["\u{FFFD}\nx"]);
        // Multi-byte characters split across feeds.
        let stream = "data: 👋é\n\n".as_bytes();
        for cut in 6..10 {
            let (a, b) = stream.split_at(cut);
            let (events, _, _) = parse_pieces(ParseLimits::default(), &[a, b]).unwrap();
            assert_eq!(events, [event("message", "👋é", "")]);
        }
    }

    #[test]
    fn html_event_stream_interpretation_split_invariance() {
        let stream = b"\xEF\xBB\xBF: comment\r\nretry: 1500\r\nid: first\nevent: add\rdata: a\xF0\x9F\x91\x8Bb\r\ndata:  two\r\r\
id: 2\0ignored\ndata\n\nretry: x\r\ndata: \xC3\xA9\x80\r\nid\r\n\r\ndata: pending\r";
        let limits = ParseLimits::default();
        let (events, retry, last_event_id) = parse_pieces(limits, &[stream]).unwrap();
        assert_eq!(
            events,
            [
                event("add", "a👋b\n two", "first"),
                event("message", "", "first"),
                event("message", "é\u{FFFD}", "")
            ]
        );
        assert_eq!(retry, Some(1500));
        assert_eq!(last_event_id, "");
        assert_split_invariant(limits, stream);
        // Also for a stream that fails.
        let small = ParseLimits { max_line_bytes: 12, max_data_bytes: 16 };
        assert_split_invariant(small, b"data: 123456\n\ndata: 1234567\n\n");
        assert_split_invariant(small, b"data: 12345\ndata: 12345\ndata: 1\n\n");
    }

    #[test]
    fn html_event_stream_interpretation_finish_discards_pending() {
        let mut parser = EventStreamParser::new(ParseLimits::default());
        let mut events = Vec::new();
        parser
            .feed(b"id: 1\ndata: a\n\nid: 2\nevent: e\ndata: b\nretry: 9\ndata: partial", &mut events)
            .unwrap();
        parser.finish();
        // What was pending is gone: a blank line now dispatches nothing.
        parser.feed(b"\n", &mut events).unwrap();
        assert_eq!(events, [event("message", "a", "1")]);
        assert_eq!(parser.retry(), Some(9));
    }

    #[test]
    fn line_limit_checked_before_growing() {
        let limits = ParseLimits { max_line_bytes: 8, max_data_bytes: 1024 };
        // Exactly max_line_bytes is fine; the line end does not count.
        assert!(parse_pieces(limits, &[b"data: 12\r\n\r\n"]).is_ok());
        let mut parser = EventStreamParser::new(limits);
        let mut events = Vec::new();
        parser.feed(b"data: 1", &mut events).unwrap();
        assert_eq!(parser.feed(b"23", &mut events), Err(ParseError::LineTooLong));
        assert_eq!(parser.feed(b"\n\n", &mut events), Err(ParseError::LineTooLong));
        assert!(events.is_empty());
        // A partial BOM held back counts toward the first line.
        assert_eq!(parse_pieces(limits, &[b"\xEF\xBBdata: 1\n"]), Err(ParseError::LineTooLong));
    }

    #[test]
    fn data_limit_checked_before_growing() {
        let limits = ParseLimits { max_line_bytes: 1024, max_data_bytes: 8 };
        // "1234567" + LF is 8 bytes: allowed.
        assert_eq!(
            parse_pieces(limits, &[b"data: 1234567\n\n"]).unwrap().0,
            [event("message", "1234567", "")]
        );
        assert_eq!(parse_pieces(limits, &[b"data: 12345678\n\n"]), Err(ParseError::DataTooLarge));
        assert_eq!(parse_pieces(limits, &[b"data: 1234\ndata: 1234\n\n"]), Err(ParseError::DataTooLarge));
        // The buffer empties on dispatch, so the limit is per event.
        assert_eq!(parse_pieces(limits, &[b"data: 1234567\n\ndata: 1234567\n\n"]).unwrap().0.len(), 2);
    }
}
