//! Fuzz harnesses: one function per target of the cargo-fuzz crate in `fuzz/`, shared with the
//! stable test `tests/fuzz_regressions.rs`, which replays the committed seeds and regressions.
//!
//! Each harness turns arbitrary bytes into a run of pure protocol code and asserts properties,
//! not only the absence of panics: round trips (encode then parse), split invariance (input fed
//! whole or cut at points the input itself chooses gives the same result), bounded memory (no
//! event larger than its limit; limits are small and come from the input), and the hub's and
//! the connection's invariants. The first bytes of an input are parameters (limits, cut
//! points, a transport prefix); the rest is the data under test. A harness panics when a
//! property breaks; that is what the fuzzer reports.
//!
//! Implements: the harnesses `ws_frame_header`, `ws_conn_server`, `ws_conn_client`,
//! `ws_handshake`, `http_head`, `chunked_decode`, `response_body`, `sse_parse`, `cursor_parse`,
//! `hub_ops`, `conn_server`, `composite_cursor`, `v1_command`, `rooms_request`, `resp_decode`,
//! `redis_frame`, `redis_control`, `ws_inflate`, `ws_extensions`, `envelope`, `token_verify` and
//! `api_call`.
//!
//! Does not: belong to the server (it is `#[doc(hidden)]` and only called by fuzz targets and
//! tests), touch sockets, or draw randomness. It reads the clock once per run, only to have an
//! `Instant` to add fake durations to.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::conn::Conn;
use crate::http1::body::{BodyReader, ResponseBody};
use crate::http1::chunked::{encode_chunk, ChunkedDecoder, ChunkedError, ChunkedLimits, LAST_CHUNK};
use crate::http1::head::{parse_request_head, parse_response_head, HeadScanner, ResponseHead};
use crate::http1::Limits as HttpLimits;
use crate::hub::{ChannelName, Cursor, Epoch, Hub, HubError, Message, Payload, Replay, Since, SinkId};
use crate::output::Output;
use crate::sse::{encode_comment, encode_event, encode_retry, EventStreamParser, ParseError, ParseLimits};
use crate::ws::close::parse_close_payload;
use crate::ws::deflate::Codec;
use crate::ws::frame::{FrameHeader, OpCode, MAX_CONTROL_PAYLOAD_BYTES, MAX_HEADER_BYTES};
use crate::ws::handshake::{accept, accept_key, verify_response, ClientRequest, Selected, ServerOptions};
use crate::ws::mask::apply_mask;
use crate::ws::{Event as WsEvent, Message as WsMessage, Role, WsConn};

/// Reads parameters off the front of a fuzz input; past its end every read gives zeros.
struct Bytes<'a> {
    data: &'a [u8],
}

impl<'a> Bytes<'a> {
    fn new(data: &'a [u8]) -> Self {
        Bytes { data }
    }

    fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }

    fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.data.split_at(n.min(self.data.len()));
        self.data = rest;
        head
    }

    fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    fn rest(self) -> &'a [u8] {
        self.data
    }
}

/// How the data under test is cut for the split-invariance check, read from the input: either
/// pieces of one fixed size (1 to 16 bytes; size 1 is byte by byte) or up to 7 cut points.
enum Split {
    Every(usize),
    At(Vec<u16>),
}

impl Split {
    fn read(r: &mut Bytes<'_>) -> Split {
        let mode = r.u8();
        if mode & 0x80 != 0 {
            return Split::Every(usize::from(mode & 0x0F) + 1);
        }
        Split::At((0..mode % 8).map(|_| r.u16()).collect())
    }

    fn pieces<'a>(&self, data: &'a [u8]) -> Vec<&'a [u8]> {
        match self {
            Split::Every(size) => data.chunks(*size).collect(),
            Split::At(points) => {
                let mut cuts: Vec<usize> =
                    points.iter().map(|&p| usize::from(p) % (data.len() + 1)).collect();
                cuts.sort_unstable();
                let mut pieces = Vec::with_capacity(cuts.len() + 1);
                let mut start = 0;
                for cut in cuts {
                    pieces.push(&data[start..cut]);
                    start = cut;
                }
                pieces.push(&data[start..]);
                pieces
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// WebSocket

/// RFC 6455 §5.2 frame header: a parsed header re-encodes to a header that parses to the same
/// header, as long as the encoder says, and byte for byte like the input when the input used
/// the minimal length form; shorter prefixes need more bytes; an error is decided by a prefix
/// and stays the same whatever follows.
pub fn ws_frame_header(data: &[u8]) {
    match FrameHeader::parse(data) {
        Ok(Some((header, used))) => {
            assert!((2..=MAX_HEADER_BYTES).contains(&used) && used <= data.len());
            let mut encoded = Vec::new();
            header.encode(&mut encoded);
            assert_eq!(encoded.len(), header.encoded_len());
            assert_eq!(FrameHeader::parse(&encoded), Ok(Some((header, encoded.len()))));
            assert_eq!(FrameHeader::parse(&data[..used]), Ok(Some((header, used))));
            if used == header.encoded_len() {
                // Minimal length form: the encoder writes exactly the input's bytes.
                assert_eq!(encoded, &data[..used]);
            } else {
                // Only a non-minimal length form takes more bytes than the encoder writes.
                assert!(used > header.encoded_len());
            }
            if header.opcode.is_control() {
                assert!(header.fin && header.payload_len <= MAX_CONTROL_PAYLOAD_BYTES);
            }
            assert_eq!(header.payload_len >> 63, 0);
            for cut in 0..used {
                assert_eq!(FrameHeader::parse(&data[..cut]), Ok(None), "prefix of {cut} bytes");
            }
        }
        Ok(None) => assert!(data.len() < MAX_HEADER_BYTES),
        Err(error) => {
            let mut longer = data.to_vec();
            longer.extend_from_slice(&[0xFF; MAX_HEADER_BYTES]);
            assert_eq!(FrameHeader::parse(&longer), Err(error.clone()));
            assert!(error.close_code().is_valid_on_wire());
        }
    }
}

/// What one [`WsConn`] run produced.
#[derive(Debug, PartialEq, Eq)]
struct WsRun {
    events: Vec<WsEvent>,
    out: Vec<u8>,
    error: Option<crate::ws::Error>,
    closed: bool,
    close_sent: bool,
    close_received: bool,
}

fn run_ws(role: Role, limits: crate::ws::Limits, pieces: &[&[u8]]) -> WsRun {
    let mut conn = WsConn::new(role, limits);
    let mut events = Vec::new();
    let mut out = Output::new();
    let mut error = None;
    let mut events_at_error = 0;
    let mut key = 0u32;
    let mut mask = || {
        key = key.wrapping_add(0x0102_0304);
        key.to_be_bytes()
    };
    for piece in pieces {
        let result = conn.handle_input(piece, &mut mask, &mut Codec::default(), &mut events, &mut out);
        if let Err(e) = result {
            if error.is_none() {
                error = Some(e);
                events_at_error = events.len();
            }
            assert!(conn.is_closed(), "a failed connection is closed");
        }
    }
    if error.is_some() {
        // RFC 6455 §7.1.7: nothing is processed after the failure.
        assert_eq!(events.len(), events_at_error);
    }
    WsRun {
        events,
        out: out.take_vec(),
        error,
        closed: conn.is_closed(),
        close_sent: conn.close_sent(),
        close_received: conn.close_received(),
    }
}

/// Checks what a [`WsConn`] wrote: whole unfragmented frames, masked exactly in the client
/// role, valid control payloads, and nothing after a close frame.
fn check_ws_output(role: Role, mut wire: &[u8]) {
    let mut closed = false;
    while !wire.is_empty() {
        assert!(!closed, "nothing may follow a close frame (§5.5.1)");
        let (header, used) =
            FrameHeader::parse(wire).expect("output frames are valid").expect("output frames are whole");
        assert!(header.fin && header.rsv == 0);
        assert_eq!(header.mask.is_some(), role == Role::Client, "only a client masks (§5.1)");
        let end = usize::try_from(header.payload_len).ok().and_then(|n| n.checked_add(used));
        let end = end.filter(|&end| end <= wire.len()).expect("output frames are whole");
        let mut payload = wire[used..end].to_vec();
        if let Some(key) = header.mask {
            apply_mask(&mut payload, key, 0);
        }
        if header.opcode == OpCode::Close {
            let frame = parse_close_payload(&payload).expect("our close payload is valid");
            if let Some(frame) = frame {
                assert!(frame.code.is_valid_on_wire());
            }
            closed = true;
        }
        wire = &wire[end..];
    }
}

fn ws_conn(role: Role, data: &[u8]) {
    let mut r = Bytes::new(data);
    let limits = crate::ws::Limits {
        max_frame_payload_bytes: 1 + u64::from(r.u8()) * 4,
        max_message_bytes: 1 + u64::from(r.u16() % 2048),
    };
    let split = Split::read(&mut r);
    let input = r.rest();
    let whole = run_ws(role, limits, &[input]);
    let cut = run_ws(role, limits, &split.pieces(input));
    assert_eq!(whole, cut, "split invariance");
    for event in &whole.events {
        match event {
            WsEvent::Message(WsMessage::Text(text)) => {
                assert!(text.len() as u64 <= limits.max_message_bytes)
            }
            WsEvent::Message(WsMessage::Binary(bytes)) => {
                assert!(bytes.len() as u64 <= limits.max_message_bytes)
            }
            WsEvent::Ping(payload) | WsEvent::Pong(payload) => {
                assert!(payload.len() as u64 <= MAX_CONTROL_PAYLOAD_BYTES)
            }
            WsEvent::Close(_) => {}
        }
    }
    // A close event comes last, and only once.
    let closes = whole.events.iter().filter(|e| matches!(e, WsEvent::Close(_))).count();
    assert!(closes <= 1);
    if closes == 1 {
        assert!(matches!(whole.events.last(), Some(WsEvent::Close(_))));
        assert!(whole.close_received && whole.close_sent && whole.closed);
    }
    check_ws_output(role, &whole.out);
}

/// RFC 6455 §5-§7 in the server role: split invariance (same events, output bytes, error and
/// state whole or cut), no message over its limit, valid unmasked output.
pub fn ws_conn_server(data: &[u8]) {
    ws_conn(Role::Server, data);
}

/// RFC 6455 §5-§7 in the client role: as [`ws_conn_server`], with masked output.
pub fn ws_conn_client(data: &[u8]) {
    ws_conn(Role::Client, data);
}

/// RFC 6455 §4: the server's `accept` on arbitrary request heads and the client's
/// `verify_response` on arbitrary response heads never panic; an accepted handshake's key answer
/// matches `accept_key` and satisfies the client; a client request built from the input is
/// accepted by the server and the server's answer verified by the client.
pub fn ws_handshake(data: &[u8]) {
    let mut r = Bytes::new(data);
    let flags = r.u8();
    let known = ["chat", "pushwire.v1", "superchat"];
    let protocols: Vec<String> =
        known.iter().enumerate().filter(|(i, _)| flags & (1 << i) != 0).map(|(_, p)| p.to_string()).collect();
    let allowed_origins = (flags & 0x08 != 0).then(|| vec!["https://example.com".to_string()]);
    let deflate = flags & 0x10 != 0;
    let options = ServerOptions { protocols: protocols.clone(), allowed_origins, deflate };
    let limits = HttpLimits::default();
    let input = r.rest();

    // Server side, on the input as a request head.
    if let Ok(head) = parse_request_head(input, &limits) {
        if let Ok(accepted) = accept(&head, &options) {
            let keys: Vec<&[u8]> = head
                .headers
                .iter()
                .filter(|h| h.name.eq_ignore_ascii_case("Sec-WebSocket-Key"))
                .map(|h| h.value.as_slice())
                .collect();
            assert_eq!(keys.len(), 1, "exactly one key was accepted");
            assert_eq!(accepted.accept, accept_key(keys[0]));
            if let Some(protocol) = &accepted.protocol {
                assert!(protocols.contains(protocol), "only a protocol we speak");
            }
            // The client that sent this key accepts the server's answer.
            use base64::Engine as _;
            let nonce =
                base64::engine::general_purpose::STANDARD.decode(keys[0]).expect("accepted keys decode");
            let key: [u8; 16] = nonce.try_into().expect("accepted keys are 16 bytes");
            let request = ClientRequest {
                host: "h".into(),
                path: "/".into(),
                key,
                protocols: protocols.clone(),
                extra_headers: Vec::new(),
                deflate: true,
            };
            let mut response = Vec::new();
            accepted.response_head(&mut response);
            let (parsed, len) = parse_response_head(&response, &limits).unwrap().unwrap();
            assert_eq!(len, response.len());
            let selected = Selected { protocol: accepted.protocol.clone(), deflate: accepted.deflate };
            assert_eq!(verify_response(&parsed, &request), Ok(selected));
        }
    }

    // Client side, on the input as a response head.
    let request = ClientRequest {
        host: "h".into(),
        path: "/".into(),
        key: *b"the sample nonce",
        protocols: protocols.clone(),
        extra_headers: Vec::new(),
        deflate,
    };
    if let Ok(Some((head, len))) = parse_response_head(input, &limits) {
        assert!(len <= input.len());
        if let Ok(selected) = verify_response(&head, &request) {
            if let Some(protocol) = selected.protocol {
                assert!(protocols.contains(&protocol));
            }
            assert!(deflate || selected.deflate.is_none(), "no extension that was not offered");
        }
    }

    // A client request built from the input, through the server and back.
    let mut parts = input.split(|&b| b == 0);
    let host = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let path = format!("/{}", String::from_utf8_lossy(parts.next().unwrap_or_default()));
    let mut key = [0u8; 16];
    for (k, b) in key.iter_mut().zip(parts.next().unwrap_or_default()) {
        *k = *b;
    }
    let request =
        ClientRequest { host, path, key, protocols: protocols.clone(), extra_headers: Vec::new(), deflate };
    let mut wire = Vec::new();
    if request.encode(&mut wire).is_ok() {
        let head = parse_request_head(&wire, &limits).expect("an encoded client request parses");
        let accepted = accept(&head, &ServerOptions { allowed_origins: None, ..options })
            .expect("the server accepts an encoded client request");
        assert_eq!(accepted.accept, accept_key(request.key_base64().as_bytes()));
        // The client offers its protocols in order; the server picks the first it speaks.
        assert_eq!(accepted.protocol, protocols.first().cloned());
        let mut response = Vec::new();
        accepted.response_head(&mut response);
        let (parsed, _) = parse_response_head(&response, &limits).unwrap().unwrap();
        // Both ends agree on permessage-deflate: the server accepts the client's offer.
        assert_eq!(accepted.deflate.is_some(), deflate);
        assert_eq!(
            verify_response(&parsed, &request),
            Ok(Selected { protocol: accepted.protocol, deflate: accepted.deflate })
        );
    } else {
        assert!(wire.is_empty(), "a refused request writes nothing");
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP/1.1

fn http_limits(r: &mut Bytes<'_>) -> HttpLimits {
    let max_head_bytes = 256 + usize::from(r.u16() % 2048);
    HttpLimits {
        max_head_bytes,
        max_target_bytes: 1 + usize::from(r.u16()) % max_head_bytes,
        max_headers: 1 + usize::from(r.u8() % 32),
        max_body_bytes: u64::from(r.u16()),
        ..HttpLimits::default()
    }
}

/// RFC 9112 §2-§6 request heads: the incremental head scan finds the same end (or the same
/// limit error) whether the bytes come whole or in pieces; parsing never panics and respects
/// the target and field-count limits; body framing and routing of a parsed head never panic,
/// and a declared body is within the body limit.
pub fn http_head(data: &[u8]) {
    let mut r = Bytes::new(data);
    let limits = http_limits(&mut r);
    let split = Split::read(&mut r);
    let input = r.rest();

    let whole = HeadScanner::new().scan(input, &limits);
    let mut scanner = HeadScanner::new();
    let mut end = 0;
    let mut pieces_result = Ok(None);
    for piece in split.pieces(input) {
        end += piece.len();
        pieces_result = scanner.scan(&input[..end], &limits);
        if pieces_result != Ok(None) {
            break;
        }
    }
    assert_eq!(whole, pieces_result, "split invariance of the head scan");

    let _ = parse_request_head(input, &limits);
    let _ = parse_response_head(input, &limits);
    if let Ok(Some(len)) = whole {
        assert!(len <= limits.max_head_bytes && len <= input.len());
        if let Ok(head) = parse_request_head(&input[..len], &limits) {
            assert!(head.target.len() <= limits.max_target_bytes);
            assert!(head.headers.len() <= limits.max_headers);
            let _ = head.keep_alive();
            if let Ok(BodyReader::Length { remaining }) = BodyReader::for_request(&head, &limits) {
                assert!(remaining > 0 && remaining <= limits.max_body_bytes);
            }
            let _ = crate::transport::route(&head, &Config::default());
        }
    }
}

/// What one chunked decode produced: the body so far, and the consumed count and completion
/// or the error.
type ChunkedRun = (Vec<u8>, Result<(usize, bool), ChunkedError>);

fn decode_chunked(limits: ChunkedLimits, pieces: &[&[u8]]) -> ChunkedRun {
    let mut decoder = ChunkedDecoder::new(limits);
    let mut body = Vec::new();
    let mut consumed = 0;
    for piece in pieces {
        match decoder.decode(piece, &mut body) {
            Ok(decoded) => {
                consumed += decoded.consumed;
                if decoded.done {
                    assert!(decoded.consumed <= piece.len());
                    return (body, Ok((consumed, true)));
                }
                assert_eq!(decoded.consumed, piece.len(), "all input is consumed until done");
            }
            Err(e) => {
                // An error is returned again on every later call.
                assert_eq!(decoder.decode(b"0\r\n\r\n", &mut body), Err(e));
                return (body, Err(e));
            }
        }
    }
    (body, Ok((consumed, false)))
}

/// RFC 9112 §7.1 chunked decoding: split invariance (same body, consumed total, completion and
/// error), the body never over `max_body_bytes`; chunks encoded from the input decode back to
/// the same bytes, consuming exactly the encoded body.
pub fn chunked_decode(data: &[u8]) {
    let mut r = Bytes::new(data);
    let limits = ChunkedLimits {
        max_body_bytes: u64::from(r.u16() % 4096),
        max_chunk_line_bytes: 8 + usize::from(r.u8()),
        max_trailer_bytes: usize::from(r.u8()) * 4,
    };
    let split = Split::read(&mut r);
    let input = r.rest();
    let whole = decode_chunked(limits, &[input]);
    let cut = decode_chunked(limits, &split.pieces(input));
    assert_eq!(whole, cut, "split invariance");
    assert!(whole.0.len() as u64 <= limits.max_body_bytes, "body within its limit");

    // Round trip: the input's own bytes as chunks, sizes taken from the bytes themselves.
    let mut encoded = Vec::new();
    let mut expected = Vec::new();
    let mut rest = Bytes::new(input);
    while !rest.is_empty() {
        let size = usize::from(rest.u8() % 64);
        let chunk = rest.take(size);
        encode_chunk(chunk, &mut encoded);
        expected.extend_from_slice(chunk);
    }
    encoded.extend_from_slice(LAST_CHUNK);
    let body_len = encoded.len();
    encoded.extend_from_slice(b"GET / HTTP/1.1\r\n");
    let exact = ChunkedLimits { max_body_bytes: expected.len() as u64, ..ChunkedLimits::default() };
    let decoded = decode_chunked(exact, &[&encoded]);
    assert_eq!(decoded, (expected.clone(), Ok((body_len, true))), "round trip");
    assert_eq!(decode_chunked(exact, &split.pieces(&encoded)), decoded, "round trip in pieces");
    if !expected.is_empty() {
        let short = ChunkedLimits { max_body_bytes: expected.len() as u64 - 1, ..exact };
        assert_eq!(decode_chunked(short, &[&encoded]).1, Err(ChunkedError::BodyTooLarge));
    }
}

/// What one response-body read produced: the body so far, and the consumed count and
/// completion or the error.
type ResponseBodyRun = (Vec<u8>, Result<(usize, bool), crate::http1::Error>);

fn read_response_body(
    head: &ResponseHead,
    head_request: bool,
    limit: u64,
    pieces: &[&[u8]],
) -> ResponseBodyRun {
    let mut out = Vec::new();
    let mut body = match ResponseBody::for_response(head, head_request, limit) {
        Ok(body) => body,
        Err(e) => return (out, Err(e)),
    };
    let mut consumed = 0;
    for piece in pieces {
        match body.read(piece, &mut out) {
            Ok(progress) => {
                consumed += progress.consumed;
                if progress.done {
                    assert!(body.is_done() && progress.consumed <= piece.len());
                    return (out, Ok((consumed, true)));
                }
                assert_eq!(progress.consumed, piece.len(), "all input is consumed until done");
            }
            Err(e) => return (out, Err(e)),
        }
    }
    (out, Ok((consumed, body.is_done())))
}

/// RFC 9112 §6.3 response bodies, as the clients and the load generator read them: split
/// invariance (same body, consumed count and completion, or the same error), the body never over its
/// limit, a Content-Length body exactly its length, and an answer to `HEAD` (or a 204, 304 or
/// 1xx) without a body whatever follows.
pub fn response_body(data: &[u8]) {
    let mut r = Bytes::new(data);
    let limit = u64::from(r.u16());
    let head_request = r.u8() & 1 == 1;
    let split = Split::read(&mut r);
    let input = r.rest();
    let Ok(Some((head, len))) = parse_response_head(input, &HttpLimits::default()) else { return };
    let rest = &input[len..];
    let whole = read_response_body(&head, head_request, limit, &[rest]);
    let cut = read_response_body(&head, head_request, limit, &split.pieces(rest));
    // After an error the body so far is discarded by every caller: only the error must agree.
    match &whole.1 {
        Ok(_) => assert_eq!(whole, cut, "split invariance"),
        Err(e) => assert_eq!(cut.1.as_ref().err(), Some(e), "split invariance of the error"),
    }
    assert!(whole.0.len() as u64 <= limit && cut.0.len() as u64 <= limit, "body within its limit");
    if head_request || (100..200).contains(&head.status) || head.status == 204 || head.status == 304 {
        assert_eq!(whole, (Vec::new(), Ok((0, true))), "no body");
    }
    if let Ok(ResponseBody::Length { remaining }) = ResponseBody::for_response(&head, head_request, limit) {
        if let Ok((_, true)) = whole.1 {
            assert_eq!(whole.0.len() as u64, remaining, "a Content-Length body is its length");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Server-sent events

/// What one event-stream parse produced.
#[derive(Debug, PartialEq, Eq)]
struct SseRun {
    events: Vec<crate::sse::Event>,
    error: Option<ParseError>,
    last_event_id: String,
    retry: Option<u64>,
}

fn parse_sse(limits: ParseLimits, pieces: &[&[u8]]) -> SseRun {
    let mut parser = EventStreamParser::new(limits);
    let mut events = Vec::new();
    let mut error = None;
    for piece in pieces {
        if let Err(e) = parser.feed(piece, &mut events) {
            error = Some(e);
            break;
        }
    }
    parser.finish();
    SseRun { events, error, last_event_id: parser.last_event_id().to_string(), retry: parser.retry() }
}

/// HTML event streams: split invariance of the parser (same events, error, last event ID and
/// retry), events within the limits; events encoded from strings derived from the input parse
/// back to the same events, with CR and CRLF in data arriving as LF.
pub fn sse_parse(data: &[u8]) {
    let mut r = Bytes::new(data);
    let limits = ParseLimits {
        max_line_bytes: 1 + usize::from(r.u8()) * 4,
        max_data_bytes: 1 + usize::from(r.u16() % 4096),
    };
    let split = Split::read(&mut r);
    let input = r.rest();
    let whole = parse_sse(limits, &[input]);
    let cut = parse_sse(limits, &split.pieces(input));
    assert_eq!(whole, cut, "split invariance");
    for event in &whole.events {
        assert!(event.data.len() < limits.max_data_bytes);
        // A line decodes to at most three bytes of UTF-8 per byte received.
        assert!(event.event_type.len() <= 3 * limits.max_line_bytes.max("message".len()));
        assert!(event.last_event_id.len() <= 3 * limits.max_line_bytes);
    }

    // Round trip: groups of (id, event, data) split on 0xFE, a byte never in UTF-8. An empty
    // segment is `None`; otherwise the text after its first byte, which also picks whether a
    // retry field or a comment goes first.
    let mut wire = Vec::new();
    let mut expected = Vec::new();
    let mut expected_retry = None;
    let mut last_event_id = String::new();
    let segments: Vec<&[u8]> = input.split(|&b| b == 0xFE).collect();
    for group in segments.chunks(3) {
        let field = |i: usize| -> Option<String> {
            let segment = group.get(i)?;
            let (_, text) = segment.split_first()?;
            Some(String::from_utf8_lossy(text).into_owned())
        };
        let (id, event) = (field(0), field(1));
        let data = field(2).unwrap_or_default();
        let selector = group.first().and_then(|s| s.first()).copied().unwrap_or(0);
        if selector & 1 != 0 {
            let retry_ms = u64::from(selector) * 1000;
            encode_retry(retry_ms, &mut wire);
            expected_retry = Some(retry_ms);
        }
        if selector & 2 != 0 {
            let comment = event.clone().unwrap_or_default();
            let mut out = Vec::new();
            match encode_comment(&comment, &mut out) {
                Ok(()) => wire.extend_from_slice(&out),
                Err(_) => assert!(comment.contains(['\r', '\n']) && out.is_empty()),
            }
        }
        let mut out = Vec::new();
        match encode_event(id.as_deref(), event.as_deref(), &data, &mut out) {
            Ok(()) => {
                wire.extend_from_slice(&out);
                if let Some(id) = id {
                    last_event_id = id;
                }
                let event_type = match event {
                    Some(e) if !e.is_empty() => e,
                    _ => "message".to_string(),
                };
                let data = data.replace("\r\n", "\n").replace('\r', "\n");
                expected.push(crate::sse::Event { event_type, data, last_event_id: last_event_id.clone() });
            }
            Err(_) => {
                assert!(out.is_empty(), "a refused event writes nothing");
                let bad = |s: &Option<String>| s.as_ref().is_some_and(|s| s.contains(['\r', '\n', '\0']));
                assert!(bad(&id) || bad(&event));
            }
        }
    }
    let parsed = parse_sse(ParseLimits::default(), &[&wire]);
    assert_eq!(parsed.error, None);
    assert_eq!(parsed.events, expected, "round trip");
    assert_eq!(parsed.retry, expected_retry);
    assert_eq!(parse_sse(ParseLimits::default(), &split.pieces(&wire)), parsed, "round trip in pieces");
}

// ---------------------------------------------------------------------------------------------
// Hub

/// Cursor text: parse, display and parse again give the same cursor; the text form of any
/// parsed cursor is canonical (lowercase, 16 hex digits, offset without leading zeros) and
/// equal to the input up to case when the input was canonical; cursors built from the input's
/// numbers round-trip too.
pub fn cursor_parse(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(cursor) = Cursor::parse(&text) {
        let shown = cursor.to_string();
        assert_eq!(Cursor::parse(&shown), Ok(cursor));
        assert!(shown.len() <= Cursor::MAX_TEXT_BYTES);
        assert!(!shown.bytes().any(|b| b.is_ascii_uppercase()), "lowercase");
        let (epoch, offset) = shown.split_once(':').expect("EPOCH:OFFSET");
        assert_eq!(epoch.len(), 16);
        assert!(offset == "0" || !offset.starts_with('0'), "no leading zeros");
        let (_, input_offset) = text.split_once(':').expect("parsed text has a colon");
        if input_offset == "0" || !input_offset.starts_with('0') {
            assert!(shown.eq_ignore_ascii_case(&text), "{shown} vs {text}");
        }
    }
    let mut r = Bytes::new(data);
    let epoch = u64::from_be_bytes(std::array::from_fn(|_| r.u8()));
    let offset = u64::from_be_bytes(std::array::from_fn(|_| r.u8()));
    let cursor = Cursor { epoch: Epoch(epoch), offset };
    assert_eq!(Cursor::parse(&cursor.to_string()), Ok(cursor));
}

/// The hub as a model sees it: per channel name, the current incarnation's epoch and every
/// message it published, with its payload.
#[derive(Default)]
struct HubModel {
    /// Channel name -> (epoch, published payloads by offset - 1).
    channels: HashMap<String, (Epoch, Vec<Payload>)>,
    /// Every epoch ever seen: a new incarnation never reuses one.
    epochs: Vec<Epoch>,
    /// Subscription counts by (channel, sink index).
    subscriptions: HashMap<(String, u8), usize>,
    /// Cursors the hub handed out, to replay after.
    cursors: Vec<Cursor>,
    /// An expire ran since the channel was last seen (only then may its epoch change).
    expired_since_seen: HashMap<String, bool>,
}

impl HubModel {
    fn subscribed(&self, channel: &str) -> bool {
        self.subscriptions.iter().any(|((c, _), &n)| c == channel && n > 0)
    }

    /// Records that the hub answered with `epoch` for `channel`: a new epoch means a new
    /// incarnation, allowed only after an expire and without subscribers.
    fn see_epoch(&mut self, channel: &str, epoch: Epoch) {
        let expired = self.expired_since_seen.insert(channel.to_string(), false).unwrap_or(true);
        match self.channels.get(channel) {
            Some((current, _)) if *current == epoch => {}
            known => {
                if known.is_some() {
                    assert!(expired, "an epoch changes only when expire freed the channel");
                    assert!(!self.subscribed(channel), "a channel with subscribers is never freed");
                }
                assert!(!self.epochs.contains(&epoch), "every incarnation has a new epoch");
                self.epochs.push(epoch);
                self.channels.insert(channel.to_string(), (epoch, Vec::new()));
            }
        }
    }

    /// Checks a replay against the published messages: contiguous, exact payloads, within the
    /// bounds, and either exactly what follows `since` or flagged as a gap.
    fn check_replay(
        &mut self,
        channel: &str,
        since: Since,
        max_messages: usize,
        replay: &Replay,
        limits: &crate::hub::Limits,
        now: Instant,
    ) {
        self.see_epoch(channel, replay.next.epoch);
        let (epoch, published) = &self.channels[channel];
        let last = published.len() as u64;
        assert!(replay.messages.len() <= max_messages.min(limits.max_history_messages));
        let bytes: usize = replay.messages.iter().map(|m| m.history_bytes()).sum();
        assert!(bytes <= limits.max_history_bytes);
        for (i, m) in replay.messages.iter().enumerate() {
            assert_eq!(m.id.epoch, *epoch);
            assert!(m.id.offset >= 1 && m.id.offset <= last);
            assert_eq!(m.payload, published[(m.id.offset - 1) as usize], "the payload as published");
            assert!(now.saturating_duration_since(m.published_at) < limits.max_history_age);
            if i > 0 {
                assert_eq!(m.id.offset, replay.messages[i - 1].id.offset + 1, "contiguous");
            }
        }
        let first = replay.messages.first().map(|m| m.id.offset);
        match since {
            Since::Tail => {
                assert!(replay.messages.is_empty() && !replay.gap);
                assert_eq!(replay.next.offset, last);
            }
            Since::After(c) if c.epoch == *epoch && c.offset <= last => {
                if replay.gap {
                    // Messages after the cursor are gone: the first one returned is later.
                    if let Some(first) = first {
                        assert!(first > c.offset + 1, "a gap only when the next message is gone");
                    }
                } else {
                    if let Some(first) = first {
                        assert_eq!(first, c.offset + 1, "exactly the following messages");
                    } else if max_messages > 0 {
                        assert_eq!(c.offset, last, "nothing follows only at the tail");
                    }
                    assert_eq!(replay.next.offset, replay.messages.last().map_or(c.offset, |m| m.id.offset));
                }
            }
            // A foreign epoch or an offset never issued.
            Since::After(_) => assert!(replay.gap),
        }
        if let Some(m) = replay.messages.last() {
            assert_eq!(replay.next, m.id);
        }
        assert!(replay.next.offset <= last);
        self.cursors.push(replay.next);
        self.cursors.extend(replay.messages.iter().map(|m| m.id));
        if self.cursors.len() > 64 {
            self.cursors.drain(..32);
        }
    }
}

/// The hub under arbitrary operation sequences with small limits: offsets increase by one per
/// channel incarnation and epochs are never reused; every replay holds exactly the messages
/// published after its cursor or says there is a gap; history stays within its bounds; a
/// publish notifies exactly the sinks still subscribed.
pub fn hub_ops(data: &[u8]) {
    let mut r = Bytes::new(data);
    let limits = crate::hub::Limits {
        max_history_messages: 1 + usize::from(r.u8() % 8),
        max_history_age: Duration::from_millis(100 + u64::from(r.u8()) * 100),
        max_history_bytes: 1 + usize::from(r.u8()),
        max_total_history_bytes: 256 + usize::from(r.u8()),
        max_channels: 1 + usize::from(r.u8() % 4),
        presence: Default::default(),
    };
    let mut hub = Hub::new(limits, u64::from(r.u16()));
    let mut now = Instant::now();
    let names = ["a", "b", "c", "d", "e"];
    let mut model = HubModel::default();
    let mut ops = 0;
    while !r.is_empty() && ops < 512 {
        ops += 1;
        let op = r.u8();
        let name = names[usize::from(op >> 4) % names.len()];
        let channel = ChannelName::parse(name).unwrap();
        let sink = SinkId::new(op >> 6).unwrap();
        let since = |r: &mut Bytes<'_>, model: &HubModel| -> Since {
            let pick = r.u8();
            match pick % 4 {
                0 => Since::Tail,
                1 => Since::After(Cursor { epoch: Epoch(u64::from(r.u8())), offset: u64::from(r.u8() % 8) }),
                _ if model.cursors.is_empty() => Since::Tail,
                _ => {
                    let c = model.cursors[usize::from(pick >> 2) % model.cursors.len()];
                    // Sometimes one step back or ahead of a cursor the hub gave.
                    match pick >> 6 {
                        1 => Since::After(Cursor { offset: c.offset.saturating_sub(1), ..c }),
                        2 => Since::After(Cursor { offset: c.offset + 1, ..c }),
                        _ => Since::After(c),
                    }
                }
            }
        };
        match op % 8 {
            0 | 1 => {
                let len = usize::from(r.u8() % 48);
                let body = r.take(len);
                let payload = if op & 8 != 0 {
                    Payload::Binary(Arc::from(body))
                } else {
                    Payload::Text(Arc::from(String::from_utf8_lossy(body).as_ref()))
                };
                let event: Option<Arc<str>> = (op & 1 != 0).then(|| Arc::from("ev"));
                let stats = hub.stats();
                match hub.publish(&channel, event, payload.clone(), now) {
                    Ok(published) => {
                        let m = &published.message;
                        model.see_epoch(name, m.id.epoch);
                        let (_, messages) = model.channels.get_mut(name).unwrap();
                        messages.push(payload);
                        assert_eq!(m.id.offset, messages.len() as u64, "offsets increase by one");
                        for index in 0..SinkId::MAX_SINKS as u8 {
                            let sink = SinkId::new(index).unwrap();
                            let subscribed =
                                model.subscriptions.get(&(name.to_string(), index)).is_some_and(|&n| n > 0);
                            assert_eq!(published.sinks.contains(sink), subscribed, "notified iff subscribed");
                        }
                        model.cursors.push(m.id);
                    }
                    Err(HubError::TooManyChannels) => assert!(stats.channels >= limits.max_channels),
                    Err(HubError::MessageTooLarge) => {
                        assert!(payload.len_bytes() + usize::from(op & 1 != 0) * 2 > limits.max_history_bytes)
                    }
                    Err(_) => {}
                }
            }
            2 => {
                let since = since(&mut r, &model);
                let max_messages = usize::from(r.u8() % 5);
                if let Ok(replay) = hub.read(&channel, since, max_messages, now) {
                    model.check_replay(name, since, max_messages, &replay, &limits, now);
                }
            }
            3 => {
                let since = since(&mut r, &model);
                if let Ok(replay) = hub.subscribe(&channel, since, sink, crate::protocol::Transport::Sse, now)
                {
                    // Checked first: this subscribe may have created a new incarnation.
                    model.check_replay(name, since, usize::MAX, &replay, &limits, now);
                    *model.subscriptions.entry((name.to_string(), sink.index())).or_default() += 1;
                }
            }
            4 => {
                hub.unsubscribe(&channel, sink, crate::protocol::Transport::Sse, now);
                if let Some(n) = model.subscriptions.get_mut(&(name.to_string(), sink.index())) {
                    *n = n.saturating_sub(1);
                }
            }
            5 => {
                hub.expire(now);
                for seen in model.expired_since_seen.values_mut() {
                    *seen = true;
                }
            }
            _ => now += Duration::from_millis(u64::from(r.u8()) * 10),
        }
        let stats = hub.stats();
        assert!(stats.channels <= limits.max_channels);
        assert!(stats.history_bytes <= limits.max_total_history_bytes);
        assert!(stats.history_messages <= stats.channels * limits.max_history_messages);
        assert_eq!(stats.subscriptions, model.subscriptions.values().sum::<usize>());
    }
}

// ---------------------------------------------------------------------------------------------
// A whole connection

/// Request heads the first byte of a `conn_server` input picks from, so the fuzzer starts inside
/// every transport.
const CONN_PREFIXES: &[&[u8]] = &[
    b"GET /channels/c HTTP/1.1\r\nHost: t\r\n\r\n",
    b"GET /channels/c HTTP/1.1\r\nHost: t\r\nAccept: text/event-stream\r\n\r\n",
    b"GET /channels/c?wait=5 HTTP/1.1\r\nHost: t\r\n\r\n",
    b"GET /echo HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
      Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    b"GET /channels/c HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
      Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
      Sec-WebSocket-Protocol: pushwire.v1\r\n\r\n",
    b"GET /channels/c HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
      Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    b"POST /channels/c HTTP/1.1\r\nHost: t\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"GET /channels/c HTTP/1.1\r\nHost: t\r\nAccept: application/x-ndjson\r\n\r\n",
    b"",
];

/// A connection, a hub and a fake clock, driven the way the event loop drives them.
struct ConnRig {
    conn: Conn,
    hub: Hub,
    now: Instant,
    subscribed: Vec<ChannelName>,
}

impl ConnRig {
    fn run_commands(&mut self) {
        // Bounded: each command is answered at once, and a conn queues commands only in
        // answer to input, deliveries and replies, which this loop bounds in turn.
        for _ in 0..10_000 {
            let Some(command) = self.conn.poll_command() else { return };
            let from = crate::hub::backend::ConnAddr {
                sink: SinkId::new(0).unwrap(),
                conn: crate::hub::backend::ConnId::new(0, 0),
            };
            let applied = command.apply(&mut self.hub, from, self.now);
            if let Some(channel) = applied.subscribed {
                self.subscribed.push(channel);
            }
            if let Some(channel) = applied.unsubscribed {
                if let Some(i) = self.subscribed.iter().position(|c| *c == channel) {
                    self.subscribed.swap_remove(i);
                }
            }
            if let Some(reply) = applied.reply {
                self.conn.handle_reply(reply, self.now);
            }
            if let Some(published) = applied.published {
                self.deliver(&published.message);
            }
        }
        panic!("a connection keeps queueing hub commands");
    }

    fn deliver(&mut self, msg: &Arc<Message>) {
        if self.subscribed.contains(&msg.channel) {
            self.conn.handle_delivery(msg, self.now);
        }
    }
}

/// A whole server [`Conn`] with a real [`Hub`] and no sockets, under an arbitrary sequence of
/// bytes in, EOF, clock advances (with the deadlines they pass), deliveries of messages
/// published to the hub, output written in pieces and hub expiry, starting inside the
/// transport the first byte picks. Properties: no panic; queued output within the send-buffer
/// bound plus one response or message plus the last read (a WebSocket echo); after handling a
/// timeout the next deadline is in the future; a closed connection stays closed and wants
/// nothing more.
pub fn conn_server(data: &[u8]) {
    let mut r = Bytes::new(data);
    let mut config = Config::default();
    config.http.max_head_bytes = 1024;
    config.http.max_target_bytes = 256;
    config.http.max_headers = 16;
    config.http.max_body_bytes = 256;
    config.http.max_chunk_line_bytes = 32;
    config.http.max_trailer_bytes = 64;
    config.transport.max_batch_messages = 3;
    config.transport.max_send_buffer_bytes = 4096;
    config.transport.longpoll_max_wait = Duration::from_secs(5);
    config.websocket.channel = crate::ws::Limits { max_frame_payload_bytes: 256, max_message_bytes: 512 };
    config.websocket.echo = crate::ws::Limits { max_frame_payload_bytes: 256, max_message_bytes: 1024 };
    config.hub = crate::hub::Limits {
        max_history_messages: 8,
        max_history_age: Duration::from_secs(20),
        max_history_bytes: 2048,
        max_total_history_bytes: 4096,
        max_channels: 4,
        presence: Default::default(),
    };
    debug_assert_eq!(config.validate(), Ok(()));
    // One response: a page, a poll answer of a full batch (JSON escapes a byte in at most six),
    // or one message with its gap signal and its transport's head.
    let largest_message = 6 * config.http.max_body_bytes as usize + 512;
    let largest_response = crate::transport::pages::INDEX_HTML.len()
        + config.transport.max_batch_messages * largest_message
        + 1024;
    let bound = config.transport.max_send_buffer_bytes + largest_response;

    let now = Instant::now();
    let config = Arc::new(config);
    let mut rig = ConnRig {
        conn: Conn::new(Arc::clone(&config), Arc::new(crate::metrics::Metrics::default()), now),
        hub: Hub::new(config.hub, 7),
        now,
        subscribed: Vec::new(),
    };
    let prefix = CONN_PREFIXES[usize::from(r.u8()) % CONN_PREFIXES.len()];
    let mut last_read = prefix.len();
    rig.conn.handle_input(&mut prefix.to_vec(), rig.now);
    rig.run_commands();
    let mut ops = 0;
    let mut was_closed = false;
    loop {
        let output = rig.conn.pending_output().len_bytes();
        assert!(output <= bound + last_read, "output {output} over the bound {bound} + {last_read}");
        if was_closed {
            assert!(rig.conn.is_closed(), "a closed connection stays closed");
        }
        if rig.conn.is_closed() {
            was_closed = true;
            assert!(!rig.conn.wants_read() && rig.conn.poll_timeout().is_none());
        }
        if r.is_empty() || ops >= 256 {
            break;
        }
        ops += 1;
        last_read = 0;
        let op = r.u8();
        match op % 8 {
            // Bytes in, as one read: only while the connection wants to read.
            0..=2 => {
                let len = usize::from(r.u8());
                let bytes = r.take(len);
                if rig.conn.wants_read() {
                    last_read = bytes.len();
                    rig.conn.handle_input(&mut bytes.to_vec(), rig.now);
                }
            }
            3 => {
                if rig.conn.wants_read() {
                    rig.conn.handle_eof(rig.now);
                }
            }
            // The clock moves; a passed deadline is handled.
            4 => {
                rig.now += Duration::from_millis(u64::from(r.u16()) * 4);
                if rig.conn.poll_timeout().is_some_and(|t| t <= rig.now) {
                    rig.conn.handle_timeout(rig.now);
                    rig.run_commands();
                    if let Some(t) = rig.conn.poll_timeout() {
                        assert!(t > rig.now, "the next deadline is in the future after a timeout");
                    }
                }
            }
            // A message published elsewhere, delivered if subscribed.
            5 => {
                let len = usize::from(r.u8() % 128);
                let body = r.take(len);
                let payload = if op & 0x80 != 0 {
                    Payload::Binary(Arc::from(body))
                } else {
                    Payload::Text(Arc::from(String::from_utf8_lossy(body).as_ref()))
                };
                let name = if op & 0x40 != 0 { "c" } else { "d" };
                let channel = ChannelName::parse(name).unwrap();
                if let Ok(published) = rig.hub.publish(&channel, None, payload, rig.now) {
                    rig.deliver(&published.message);
                }
            }
            // The socket takes some of the output.
            6 => {
                let queued = rig.conn.pending_output().len_bytes();
                let n = match r.u8() {
                    0 => queued,
                    k => usize::from(k) * 16,
                };
                rig.conn.consume_output(n.min(queued), rig.now);
            }
            _ => rig.hub.expire(rig.now),
        }
        rig.run_commands();
    }
}

/// `composite_cursor`: the composite cursor parser against its writers. Byte 0 is the channel
/// count (1 to 8); the rest is the text. Whatever parses has that many entries and writes back
/// to text that parses to the same positions; any positions written in either form parse back.
pub fn composite_cursor(data: &[u8]) {
    use crate::hub::composite::{self, Composite};
    let mut params = Bytes::new(data);
    let channels = usize::from(params.u8() % 8) + 1;
    let text = String::from_utf8_lossy(params.rest());
    match Composite::parse(&text, channels) {
        Ok(Composite::Full(entries)) => {
            assert_eq!(entries.len(), channels);
            let mut shown = String::new();
            composite::write_full(&mut shown, entries.iter().copied());
            assert_eq!(Composite::parse(&shown, channels), Ok(Composite::Full(entries)));
        }
        Ok(Composite::Compact { offsets, .. }) => {
            assert_eq!(offsets.len(), channels);
            assert!(text.len() <= Composite::max_text_bytes(channels));
        }
        Err(_) => {}
    }
    // Positions drawn from the input round-trip through both forms.
    let mut r = Bytes::new(data);
    let cursors: Vec<Cursor> = (0..channels)
        .map(|_| Cursor {
            epoch: Epoch(u64::from_be_bytes(std::array::from_fn(|_| r.u8()))),
            offset: u64::from_be_bytes(std::array::from_fn(|_| r.u8())),
        })
        .collect();
    let mut compact = String::new();
    composite::write_compact(&mut compact, cursors.iter().copied());
    let Ok(Composite::Compact { epochs_hash, offsets }) = Composite::parse(&compact, channels) else {
        panic!("compact form does not parse: {compact}")
    };
    let epochs: Vec<Epoch> = cursors.iter().map(|c| c.epoch).collect();
    assert_eq!(Composite::resolve_compact(epochs_hash, &offsets, &epochs), Ok(cursors.clone()));
    let mut full = String::new();
    composite::write_full(&mut full, cursors.iter().copied().map(Some));
    let expected = Composite::Full(cursors.into_iter().map(Some).collect());
    assert_eq!(Composite::parse(&full, channels), Ok(expected));
}

/// `ws_inflate`: RFC 7692 §7.2 inflation of arbitrary data within a small message limit (from
/// the input): it never produces more than the limit nor reserves much past it, a failure
/// leaves nothing behind and the codec inflates a valid message right after; and the data,
/// compressed at the window size the input picks, inflates back to itself.
pub fn ws_inflate(data: &[u8]) {
    use crate::ws::deflate::{Codec, InflateError};
    let mut r = Bytes::new(data);
    let max_bytes = u64::from(r.u16() % 4096);
    let flags = r.u8();
    let window_bits = 9 + flags % 7;
    let reset = flags & 0x80 != 0;
    let data = r.rest();
    let mut codec = Codec::new(0);
    let mut out = Vec::new();
    match codec.decompress(data, max_bytes, reset, &mut out) {
        Ok(()) => assert!(out.len() as u64 <= max_bytes),
        Err(InflateError::TooLarge { max_bytes: limit }) => {
            assert_eq!(limit, max_bytes);
            assert!(out.is_empty());
        }
        Err(_) => assert!(out.is_empty()),
    }
    assert!(out.capacity() as u64 <= max_bytes + 1 + 256, "reserved {} for {max_bytes}", out.capacity());
    // RFC 7692 §7.2.3.1: "Hello", inflated by the same codec with a fresh context.
    let mut hello = Vec::new();
    codec.decompress(&[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00], 5, true, &mut hello).unwrap();
    assert_eq!(hello, b"Hello");
    // Round trip at the chosen window.
    let mut compressed = Vec::new();
    if codec.compress(data, window_bits, &mut compressed) {
        assert!(compressed.len() < data.len());
        let mut back = Vec::new();
        codec.decompress(&compressed, data.len() as u64, true, &mut back).unwrap();
        assert_eq!(back, data);
    } else {
        assert!(compressed.is_empty());
    }
}

/// `ws_extensions`: the `Sec-WebSocket-Extensions` grammar (RFC 6455 §9.1) and permessage-deflate
/// negotiation (RFC 7692 §7.1). A parsed list re-encodes to a list that parses to the same
/// extensions; the list bounds hold; whatever the server accepts, the client reading the
/// server's answer agrees on exactly the same parameters; the user-agent check never panics.
pub fn ws_extensions(data: &[u8]) {
    use crate::ws::deflate::extensions::{encode_extension, MAX_EXTENSIONS, MAX_PARAMS};
    use crate::ws::deflate::negotiate::{accept_offer, has_broken_deflate};
    use crate::ws::deflate::{negotiate_client, negotiate_server, parse_extensions};
    let _ = has_broken_deflate(data);
    let mut offers = Vec::new();
    if parse_extensions(data, &mut offers).is_err() {
        return;
    }
    assert!(offers.len() <= MAX_EXTENSIONS);
    assert!(offers.iter().all(|e| e.params.len() <= MAX_PARAMS));
    let encoded: Vec<String> = offers
        .iter()
        .map(|e| {
            let mut s = String::new();
            encode_extension(e, &mut s);
            s
        })
        .collect();
    let mut again = Vec::new();
    parse_extensions(encoded.join(", ").as_bytes(), &mut again).unwrap();
    assert_eq!(again, offers);
    if let Some(agreed) = negotiate_server(&offers, None) {
        assert!(agreed.server_no_context_takeover && agreed.client_no_context_takeover);
        // RFC 7692 §7.1.2.1: the answer states the server's window exactly when the accepted
        // (first acceptable) offer did, at most the value offered.
        let accepted = offers
            .iter()
            .filter(|o| o.name.eq_ignore_ascii_case("permessage-deflate"))
            .find_map(|o| accept_offer(&o.params).ok().map(|_| o))
            .unwrap();
        let offered = accepted.params.iter().find(|p| p.name.eq_ignore_ascii_case("server_max_window_bits"));
        assert_eq!(agreed.server_max_window_bits.is_some(), offered.is_some());
        assert!((9..=15).contains(&agreed.server_max_window_bits.map_or(15, |b| b.get())));
        let mut answer = Vec::new();
        parse_extensions(agreed.response_value().as_bytes(), &mut answer).unwrap();
        assert_eq!(negotiate_client(&answer), Ok(Some(agreed)));
    }
    // As an answer: a client accepts at most one valid permessage-deflate element.
    if let Ok(Some(agreed)) = negotiate_client(&offers) {
        assert_eq!(offers.len(), 1);
        assert!((8..=15).contains(&agreed.client_max_window_bits));
    }
}

/// `v1_command`: the `pushwire.v1` command parser. Whatever the text, the parse never panics,
/// an echoed `req` is short JSON, and a command that parses respects every limit and writes a
/// reply that is valid JSON echoing its `req` and `channel`.
pub fn v1_command(data: &[u8]) {
    use crate::transport::commands::{error_reply, ok_reply, parse, Command, CommandLimits, MAX_REQ_BYTES};
    let limits = CommandLimits { max_info_bytes: 64, max_token_bytes: 64, max_event_name_bytes: 16 };
    let text = String::from_utf8_lossy(data);
    let request = parse(&text, &limits);
    if let Some(req) = &request.req {
        assert!(req.len() <= MAX_REQ_BYTES);
        assert!(serde_json::from_str::<serde_json::Value>(req).is_ok(), "req {req} is JSON");
    }
    let reply = match &request.command {
        Ok(command) => {
            match command {
                Command::Subscribe { info, token, .. } => {
                    assert!(info
                        .as_ref()
                        .is_none_or(|i| i.len() <= limits.max_info_bytes && i.starts_with('{')));
                    assert!(token.as_ref().is_none_or(|t| t.len() <= limits.max_token_bytes));
                }
                Command::Publish { event, .. } => {
                    assert!(event.as_ref().is_none_or(|e| !e.is_empty()
                        && e.len() <= limits.max_event_name_bytes
                        && e != "gap"));
                }
                Command::Refresh { token } => assert!(token.len() <= limits.max_token_bytes),
                Command::Unsubscribe { .. } | Command::Presence { .. } => {}
            }
            assert_eq!(command.channel(), request.channel.as_ref());
            ok_reply(request.req.as_deref(), request.channel.as_ref(), None)
        }
        Err(e) => error_reply(request.req.as_deref(), request.channel.as_ref(), e),
    };
    let value: serde_json::Value = serde_json::from_slice(&reply).expect("replies are JSON");
    if let Some(req) = &request.req {
        assert_eq!(value["req"], serde_json::from_str::<serde_json::Value>(req).unwrap());
    }
}

// ---------------------------------------------------------------------------------------------
// Redis

/// What one RESP decode run produced: each value with the wire bytes it took, and the error.
type RespRun = (Vec<(crate::redis::resp::Value, usize)>, Option<crate::redis::resp::RespError>);

fn run_resp(limits: crate::redis::resp::Limits, pieces: &[&[u8]]) -> RespRun {
    use crate::redis::resp::{Decoded, Decoder};
    let mut decoder = Decoder::new(limits);
    let mut values = Vec::new();
    let mut taken = 0;
    for piece in pieces {
        let mut rest = *piece;
        loop {
            match decoder.decode(rest) {
                Ok(Decoded { consumed, value }) => {
                    assert!(consumed <= rest.len());
                    taken += consumed;
                    rest = &rest[consumed..];
                    // Between inputs the decoder holds at most one partial line or bulk string.
                    assert!(decoder.held_bytes() <= limits.max_bulk_bytes.max(limits.max_line_bytes + 3) + 2);
                    match value {
                        Some(value) => values.push((value, std::mem::take(&mut taken))),
                        None => {
                            assert!(rest.is_empty(), "no value: the whole input is consumed");
                            break;
                        }
                    }
                }
                Err(error) => return (values, Some(error)),
            }
        }
    }
    (values, None)
}

/// Checks one decoded value against the limits; returns its depth of nested arrays.
fn check_resp_value(value: &crate::redis::resp::Value, limits: &crate::redis::resp::Limits) -> usize {
    use crate::redis::resp::Value;
    match value {
        Value::SimpleString(text) | Value::Error(text) => {
            assert!(text.len() <= limits.max_line_bytes);
            assert!(!text.contains(&b'\r') && !text.contains(&b'\n'));
            0
        }
        Value::BulkString(bytes) => {
            assert!(bytes.len() <= limits.max_bulk_bytes);
            0
        }
        Value::Array(items) => {
            assert!(items.len() <= limits.max_array_elements);
            1 + items.iter().map(|item| check_resp_value(item, limits)).max().unwrap_or(0)
        }
        Value::Integer(_) | Value::NullBulkString | Value::NullArray => 0,
    }
}

/// RESP2 replies (`crate::redis::resp`): split invariance (the same values, each taking the
/// same bytes, and the same error, whole or cut), every value within the limits (bulk size,
/// array length, nesting depth, line length, and its wire bytes within `max_reply_bytes`),
/// what the decoder holds between inputs bounded, round trips (a value encodes to at most the
/// bytes it took and decodes back to itself), and the reply parsers of `crate::redis` never
/// panic on any decoded value.
pub fn resp_decode(data: &[u8]) {
    use crate::redis::resp::{Decoded, Decoder, Limits};
    let mut r = Bytes::new(data);
    let max_bulk_bytes = usize::from(r.u16() % 4096) + 1;
    let limits = Limits {
        max_bulk_bytes,
        max_array_elements: usize::from(r.u8() % 64) + 1,
        max_depth: usize::from(r.u8() % 8) + 1,
        max_line_bytes: usize::from(r.u8() % 128) + 1,
        max_reply_bytes: max_bulk_bytes + usize::from(r.u16()),
    };
    assert_eq!(limits.validate(), Ok(()));
    let split = Split::read(&mut r);
    let data = r.rest();
    let whole = run_resp(limits, &[data]);
    assert_eq!(run_resp(limits, &split.pieces(data)), whole, "split invariance");
    for (value, taken) in &whole.0 {
        assert!(check_resp_value(value, &limits) <= limits.max_depth);
        assert!(*taken <= limits.max_reply_bytes, "{taken} wire bytes");
        let mut encoded = Vec::new();
        value.encode(&mut encoded);
        assert!(encoded.len() <= *taken, "canonical form is never longer");
        let mut decoder = Decoder::new(limits);
        assert_eq!(
            decoder.decode(&encoded),
            Ok(Decoded { consumed: encoded.len(), value: Some(value.clone()) })
        );
        redis_parsers_never_panic(value);
    }
}

/// Runs every reply parser of `crate::redis` on `value`: errors are fine, panics are not.
fn redis_parsers_never_panic(value: &crate::redis::resp::Value) {
    use crate::redis::{frame::FrameLimits, history, info, presence, pubsub, script};
    let channel = ChannelName::parse("fuzz").expect("valid name");
    let limits = FrameLimits::default();
    let now = Instant::now();
    let _ = pubsub::parse_pubsub(value.clone());
    let _ = script::parse_publish_reply(value);
    let _ = info::parse_info(value);
    let _ = history::parse_entries(&channel, value, &limits, now);
    let _ = presence::parse_list_reply(value, &limits);
    let _ = presence::parse_count_reply(value);
    let epoch = epoch_of_read(value);
    for since in
        [Since::Tail, Since::After(Cursor { epoch, offset: 0 }), Since::After(Cursor { epoch, offset: 3 })]
    {
        if let Ok(read) = script::parse_read_reply(&channel, since, value, &limits, now) {
            // The gap rules' outputs are consistent with what the reply said.
            assert_eq!(read.replay.next.epoch, epoch);
            assert!(read.replay.next.offset <= read.last_offset);
            let offsets: Vec<u64> = read.replay.messages.iter().map(|m| m.id.offset).collect();
            assert!(offsets.windows(2).all(|w| w[1] == w[0] + 1), "contiguous {offsets:?}");
        }
    }
}

/// The epoch a channel script reply names (its first element), or 0.
fn epoch_of_read(value: &crate::redis::resp::Value) -> Epoch {
    let text =
        value.as_array().and_then(|items| items.first()).and_then(|v| v.as_bytes()).unwrap_or_default();
    Cursor::parse(&format!("{}:0", String::from_utf8_lossy(text))).map_or(Epoch(0), |c| c.epoch)
}

/// The frames nodes exchange through Redis (`crate::redis::frame`): parsing arbitrary bytes
/// never panics and respects the limits; a parsed frame re-encodes to a frame that parses to
/// the same frame (byte for byte when the input's cursor was canonical); frames built from the
/// input's bytes (cursor, event, text or binary payload, presence member and value) round-trip.
pub fn redis_frame(data: &[u8]) {
    use crate::redis::frame::{encode_join, encode_leave, encode_message, parse_frame, Frame, FrameLimits};
    use crate::redis::presence::{PresenceMember, PresenceValue};
    let mut r = Bytes::new(data);
    let limits = FrameLimits {
        max_payload_bytes: usize::from(r.u8()) * 4,
        max_event_bytes: usize::from(r.u8()),
        max_user_bytes: usize::from(r.u8()),
        max_info_bytes: usize::from(r.u8()) * 4,
    };
    let rest = r.rest();
    let reencoded = match parse_frame(rest, &limits) {
        Ok(Frame::Message { id, event, payload }) => {
            assert!(id.offset >= 1);
            assert!(payload.len_bytes() <= limits.max_payload_bytes);
            assert!(event.as_ref().is_none_or(|e| e.len() <= limits.max_event_bytes && !e.is_empty()));
            let bytes = encode_message(id, event.as_deref(), &payload);
            let cursor_len = usize::from(rest[1]);
            if rest[2..2 + cursor_len] == *id.to_string().as_bytes() {
                assert_eq!(bytes, rest, "canonical input re-encodes byte for byte");
            }
            Some(bytes)
        }
        Ok(Frame::Join { member, value }) => {
            assert!(value.user.len() <= limits.max_user_bytes && value.info.len() <= limits.max_info_bytes);
            Some(encode_join(&member, &value))
        }
        Ok(Frame::Leave { member, value }) => {
            assert!(value.as_ref().is_none_or(|v| {
                v.user.len() <= limits.max_user_bytes && v.info.len() <= limits.max_info_bytes
            }));
            Some(encode_leave(&member, value.as_ref()))
        }
        Err(_) => None,
    };
    if let Some(bytes) = reencoded {
        assert_eq!(parse_frame(&bytes, &limits), parse_frame(rest, &limits));
    }
    // Frames built from the input round-trip under generous limits.
    let mut r = Bytes::new(rest);
    let id = Cursor {
        epoch: Epoch(u64::from_be_bytes(std::array::from_fn(|_| r.u8()))),
        offset: u64::from_be_bytes(std::array::from_fn(|_| r.u8())).max(1),
    };
    let conn = u64::from(r.u16());
    let flags = r.u8();
    let event_len = usize::from(r.u8() % 32);
    let event: String = r.take(event_len).iter().map(|&b| char::from(b'!' + b % 94)).collect();
    let body = r.rest();
    let payload = match std::str::from_utf8(body) {
        Ok(text) if flags & 1 == 0 => Payload::Text(Arc::from(text)),
        _ => Payload::Binary(Arc::from(body)),
    };
    let generous = FrameLimits {
        max_payload_bytes: body.len(),
        max_event_bytes: 32,
        max_user_bytes: body.len(),
        max_info_bytes: body.len(),
    };
    let event = (!event.is_empty()).then_some(event);
    let frame = encode_message(id, event.as_deref(), &payload);
    assert_eq!(
        parse_frame(&frame, &generous),
        Ok(Frame::Message { id, event: event.as_deref().map(Arc::from), payload })
    );
    let member = PresenceMember { node: id.epoch.0, conn };
    let user = String::from_utf8_lossy(&body[..body.len().min(usize::from(flags))]).into_owned();
    let value = PresenceValue { user: Arc::from(user.as_str()), info: Arc::from(body) };
    let generous = FrameLimits { max_user_bytes: user.len(), ..generous };
    assert_eq!(
        parse_frame(&encode_join(&member, &value), &generous),
        Ok(Frame::Join { member, value: value.clone() })
    );
    assert_eq!(
        parse_frame(&encode_leave(&member, None), &generous),
        Ok(Frame::Leave { member, value: None })
    );
    let part = encode_leave(&member, Some(&value));
    assert_eq!(parse_frame(&part, &generous), Ok(Frame::Leave { member, value: Some(value) }));
}

/// The control frames nodes exchange through Redis (`crate::redis::control`): byte 0 sets the
/// frame and name bounds; parsing the rest never panics and respects them; a parsed frame
/// re-encodes to JSON that parses to the same frame.
pub fn redis_control(data: &[u8]) {
    use crate::redis::control::{encode, parse, Control, ControlLimits};
    let mut r = Bytes::new(data);
    let bound = r.u8();
    let limits = ControlLimits {
        max_frame_bytes: usize::from(bound) * 16,
        max_names: usize::from(bound % 16) + 1,
        ..ControlLimits::default()
    };
    let rest = r.rest();
    let Ok(frame) = parse(rest, &limits) else { return };
    assert!(rest.len() <= limits.max_frame_bytes && frame.from != 0);
    match &frame.control {
        Control::ChannelsReply { page, .. } => assert!(page.channels.len() <= limits.max_names),
        Control::ChannelsRequest { limit, .. } => assert!(*limit >= 1 && *limit < limits.max_names),
        Control::Disconnect { disconnect, .. } => {
            assert!(disconnect.reason.len() <= limits.max_reason_bytes);
            assert!((4000..=4999).contains(&disconnect.code));
        }
        _ => {}
    }
    let again = encode(&frame);
    let generous = ControlLimits { max_frame_bytes: again.len(), ..limits };
    assert_eq!(parse(&again, &generous), Ok(frame));
}

/// `rooms_request`: a connection's channel set (`transport/rooms.rs`) and the multi-channel
/// request forms. Byte 0 is the channel limit (1 to 8), byte 1 the number of channels a
/// composite cursor must have (1 to 8); the rest is lines: the first is a request-target whose
/// channel list must parse within the limit, without duplicates; the second is a
/// `Last-Event-ID` that never fails and always resumes every channel; each further line is a
/// `pushwire.v1` command applied to the set, answered by the hub (accepted or refused by a bit
/// of the line's length) at once or later (by another bit: later answers come, oldest first,
/// after a line of even length). Throughout, the set stays within its limit, never holds a
/// channel twice, every reply is a JSON object, and the replies come in the order of the
/// commands, each echoing its command's `req`, whether answered here or by the hub.
pub fn rooms_request(data: &[u8]) {
    use crate::http1::target::Target;
    use crate::transport::commands::{parse, CommandLimits};
    use crate::transport::policy::Policies;
    use crate::transport::rooms::{parse_channels, resume_points, Answer, Resume, RoomLimits, Rooms};
    use crate::transport::token::TokenLimits;
    let mut r = Bytes::new(data);
    let limits =
        RoomLimits { max_channels_per_connection: usize::from(r.u8() % 8) + 1, max_pending_commands: 4 };
    let channels = usize::from(r.u8() % 8) + 1;
    let text = String::from_utf8_lossy(r.rest()).into_owned();
    let mut lines = text.split('\n');
    if let Some(Some(Ok(list))) = lines.next().and_then(Target::parse).map(|t| parse_channels(&t, &limits)) {
        assert!(!list.is_empty() && list.len() <= limits.max_channels_per_connection);
        for (i, c) in list.iter().enumerate() {
            assert!(!list[..i].contains(c), "duplicate {c:?}");
        }
    }
    let header = lines.next().unwrap_or("");
    match resume_points(channels, None, Some(header.as_bytes())) {
        Ok(Resume::Each(starts)) => assert_eq!(starts.len(), channels),
        Ok(Resume::Compact { offsets, .. }) => assert_eq!(offsets.len(), channels),
        Err(e) => panic!("a Last-Event-ID is never refused: {e}"),
    }
    let command_limits = CommandLimits { max_info_bytes: 64, max_token_bytes: 256, max_event_name_bytes: 16 };
    let policies = Policies::default();
    let token_limits = TokenLimits::default();
    let auth = crate::transport::rooms::Authority {
        policies: &policies,
        key: None,
        token_limits: &token_limits,
        unix_now_s: 0,
    };
    let mut rooms = Rooms::new(limits, None);
    // The `req` of every command, in order, and of every reply sent, in order.
    let mut asked: Vec<serde_json::Value> = Vec::new();
    let mut replied: Vec<serde_json::Value> = Vec::new();
    let sent = |reply: &[u8], replied: &mut Vec<serde_json::Value>| {
        let value: serde_json::Value = serde_json::from_slice(reply).expect("replies are JSON");
        assert!(value.is_object());
        replied.push(value["req"].clone());
    };
    let mut later = std::collections::VecDeque::new();
    for line in lines.take(64) {
        if rooms.backlog_full() {
            // The connection is closed (1008) before the next command.
            break;
        }
        let request = parse(line, &command_limits);
        asked.push(
            request.req.as_deref().map_or(serde_json::Value::Null, |r| serde_json::from_str(r).unwrap()),
        );
        let outcome = rooms.handle_request(request, &auth);
        if let Some(reply) = &outcome.reply {
            sent(reply, &mut replied);
        }
        let accept = line.len() % 2 == 0;
        let answer = match outcome.action {
            Some(crate::transport::rooms::Action::Subscribe { .. }) => Some(Answer::Subscribed(if accept {
                Ok(Cursor { epoch: Epoch(1), offset: 0 })
            } else {
                Err(HubError::TooManyChannels)
            })),
            Some(crate::transport::rooms::Action::Publish { .. }) => Some(Answer::Published(if accept {
                Ok(Cursor { epoch: Epoch(1), offset: 1 })
            } else {
                Err(HubError::HistoryFull)
            })),
            Some(crate::transport::rooms::Action::Presence { .. }) => {
                Some(Answer::Presence(crate::hub::PresenceList { count: 0, members: Vec::new() }))
            }
            _ => None,
        };
        later.extend(answer);
        // Answered at once, or with the earlier ones still waiting.
        while (line.len() % 4 < 2 || later.len() > 3) && !later.is_empty() {
            let answer = later.pop_front().expect("not empty");
            let reply = rooms.handle_answer(answer).expect("an action awaiting an answer gets one");
            sent(&reply, &mut replied);
            for reply in rooms.take_ready() {
                sent(&reply, &mut replied);
            }
        }
        assert_eq!(replied[..], asked[..replied.len()], "replies in the order of the commands");
        let set = rooms.rooms();
        assert!(set.len() <= limits.max_channels_per_connection);
        for (i, room) in set.iter().enumerate() {
            assert!(!set[..i].iter().any(|r| r.channel == room.channel));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// What the clients read, and signed tokens

/// `envelope`: the JSON envelope (`crate::protocol::envelope`), the server's writers against
/// the clients' readers. Every reader takes the input as it is without panicking, and an
/// envelope read with its channel label is the envelope read without it. Then a message built
/// from the input (byte 0: text or binary, with or without an event name; then its cursor, and
/// any event name and text: quotes, backslashes, control characters) reads back as itself from
/// `message_envelope`, labelled by `with_channel`, and twice in a poll answer
/// (`short_poll::body`); its cursor round-trips in gap and open envelopes, and only the open
/// envelope is told as one by its first bytes.
pub fn envelope(data: &[u8]) {
    use crate::protocol::envelope::{
        gap_envelope, is_channel_open_envelope, is_open_envelope, message_envelope, open_envelope,
        parse_created, parse_envelope, parse_labelled_envelope, parse_multi_poll_answer, parse_poll_answer,
        parse_presence, with_channel, Envelope, Payload as Read, PollAnswer, Received,
    };
    if let Ok((_, labelled)) = parse_labelled_envelope(data) {
        assert_eq!(parse_envelope(data), Ok(labelled));
    }
    let _ = parse_poll_answer(data);
    let _ = parse_multi_poll_answer(data);
    let _ = parse_created(data);
    let _ = parse_presence(data);

    let mut r = Bytes::new(data);
    let flags = r.u8();
    let id = Cursor {
        epoch: Epoch(u64::from_be_bytes(std::array::from_fn(|_| r.u8()))),
        offset: u64::from_be_bytes(std::array::from_fn(|_| r.u8())),
    };
    let event_len = usize::from(r.u8() % 64);
    let event = (flags & 2 != 0).then(|| String::from_utf8_lossy(r.take(event_len)).into_owned());
    let body = r.rest();
    let (payload, read) = if flags & 1 == 0 {
        let text = String::from_utf8_lossy(body);
        (Payload::Text(Arc::from(&*text)), Read::Text(text.into_owned()))
    } else {
        (Payload::Binary(Arc::from(body)), Read::Binary(body.to_vec()))
    };
    let channel = ChannelName::parse("fuzz").expect("valid name");
    let message =
        Arc::new(Message::new(channel.clone(), id, event.as_deref().map(Arc::from), payload, Instant::now()));
    let expected = Received { id, event, payload: read };
    let json = message_envelope(&message);
    assert_eq!(parse_envelope(&json), Ok(Envelope::Message(expected.clone())));
    assert!(!is_open_envelope(&json));
    assert_eq!(
        parse_labelled_envelope(&with_channel(&channel, json)),
        Ok((Some("fuzz".to_string()), Envelope::Message(expected.clone())))
    );
    let gap = flags & 4 != 0;
    let answer = crate::transport::short_poll::body(&Replay {
        messages: vec![message.clone(), message],
        gap,
        next: id,
    });
    assert_eq!(
        parse_poll_answer(&answer),
        Ok(PollAnswer { messages: vec![expected.clone(), expected], next: id, gap })
    );
    let gap_json = gap_envelope(id);
    assert_eq!(parse_envelope(&gap_json), Ok(Envelope::Gap { next: id }));
    assert!(!is_open_envelope(&gap_json));
    let open = open_envelope(id);
    assert_eq!(parse_envelope(&open), Ok(Envelope::Open { next: id }));
    assert!(is_open_envelope(&open));
    assert!(is_channel_open_envelope(&with_channel(&channel, open)));
    assert!(!is_channel_open_envelope(&with_channel(&channel, gap_json)));
}

/// `token_verify`: signed tokens (`crate::transport::token`). Byte 0 bit 0 gives the key an
/// audience; bit 1 picks what the rest is: a whole token, or a header and claims (split at the
/// first NUL) that the harness signs with the key, so the claim checks run. Bytes 1–4 are the
/// clock, byte 5 the token limit in units of 32 bytes. A token over the limit is `TooLong` and
/// nothing else is; verifying never panics. A token that verifies has claims within their bounds (a
/// user id of 1 to `MAX_USER_ID_BYTES`, an expiry after now), is refused under another key, and its
/// claims signed again by `sign` verify to the same claims.
pub fn token_verify(data: &[u8]) {
    use crate::transport::token::{
        sign, sign_raw, verify, Grant, TokenError, TokenKey, TokenLimits, MAX_USER_ID_BYTES,
    };
    let mut r = Bytes::new(data);
    let flags = r.u8();
    let unix_now = u64::from(u32::from_be_bytes([r.u8(), r.u8(), r.u8(), r.u8()]));
    let limits = TokenLimits { max_token_bytes: usize::from(r.u8()) * 32 };
    let audience = (flags & 1 != 0).then(|| "pushwire".to_string());
    let key = TokenKey::new(&[7; TokenKey::MIN_SECRET_BYTES], audience.clone()).expect("long enough");
    let other = TokenKey::new(&[8; TokenKey::MIN_SECRET_BYTES], audience).expect("long enough");
    let rest = r.rest();
    let token = if flags & 2 == 0 {
        String::from_utf8_lossy(rest).into_owned()
    } else {
        let (header, claims) = rest.split_at(rest.iter().position(|&b| b == 0).unwrap_or(rest.len()));
        sign_raw(header, claims.get(1..).unwrap_or_default(), &key)
    };
    let verified = verify(&token, &key, unix_now, &limits);
    assert_eq!(verified == Err(TokenError::TooLong), token.len() > limits.max_token_bytes, "{verified:?}");
    let Ok(claims) = verified else { return };
    assert!(claims.expires_at > unix_now);
    assert!(claims.user.as_deref().is_none_or(|user| (1..=MAX_USER_ID_BYTES).contains(&user.len())));
    assert_eq!(verify(&token, &other, unix_now, &limits), Err(TokenError::BadSignature));
    let grant = Grant {
        user: claims.user.as_deref(),
        expires_at: claims.expires_at,
        subscribe: &claims.subscribe,
        publish: &claims.publish,
        presence: &claims.presence,
    };
    let again = sign(&grant, &key);
    let generous = TokenLimits { max_token_bytes: again.len() };
    assert_eq!(verify(&again, &key, unix_now, &generous).as_ref(), Ok(&claims));
}

/// `api_call`: the server API's request bodies and answers (`crate::transport::api`). Byte 0 picks
/// the call, byte 1 the bounds (1 to 8 channels per broadcast and per page, messages per history),
/// byte 2 which replies refuse; the rest is the body. Reading a body never panics: it is a 400 with
/// a reason, or commands within the bounds (a broadcast's channels distinct, an event name a token
/// other than the reserved names, a disconnect's reason within its bound). Answered by replies the
/// hub could give, with the body's text in every name, text and member the reply may carry, the
/// answer is never a 500: it is JSON with a success status, or a refused call's status and reason;
/// a history answer reads back, text for text, as a poll answer.
pub fn api_call(data: &[u8]) {
    use crate::hub::Command;
    use crate::protocol::envelope::parse_poll_answer;
    use crate::transport::api::{answer, handle, ApiAnswer, ApiLimits, Call, Pending, CLOSE_DISCONNECTED};
    const CALLS: [Call; 9] = [
        Call::Publish,
        Call::Broadcast,
        Call::History,
        Call::Presence,
        Call::PresenceStats,
        Call::Info,
        Call::Channels,
        Call::Disconnect,
        Call::Unsubscribe,
    ];
    let mut r = Bytes::new(data);
    let call = CALLS[usize::from(r.u8()) % CALLS.len()];
    let bound = usize::from(r.u8() % 8) + 1;
    let refusals = r.u8();
    let mut config = Config::default();
    config.api.limits = ApiLimits {
        max_broadcast_channels: bound,
        max_page_channels: bound,
        max_history_messages: bound,
        ..ApiLimits::default()
    };
    let body = r.rest();
    let submit = match handle(call, body, &config) {
        Ok(submit) => submit,
        Err(ApiAnswer::Error(status, reason)) => {
            assert!(status == 400 && !reason.is_empty(), "{status} {reason:?}");
            return;
        }
        Err(other) => panic!("a body is read into commands or refused: {other:?}"),
    };
    for command in &submit.commands {
        match command {
            Command::Publish { event, .. } => assert!(event.as_deref().is_none_or(|e| {
                !e.is_empty()
                    && e.len() <= config.transport.max_event_name_bytes
                    && !crate::transport::publish::RESERVED_EVENT_NAMES.contains(&e)
                    && e.bytes().all(crate::http1::chunked::is_tchar)
            })),
            Command::Read { max_messages, .. } => assert!((1..=bound).contains(max_messages)),
            Command::Channels { limit, .. } => assert!((1..=bound).contains(limit)),
            Command::Disconnect(disconnect) => {
                assert!(disconnect.reason.len() <= config.api.limits.max_reason_bytes);
                assert_eq!(disconnect.code, CLOSE_DISCONNECTED);
            }
            Command::Presence { .. } | Command::Info { .. } => {}
            other => panic!("the API never submits {other:?}"),
        }
    }
    if let Pending::Broadcast(channels) = &submit.pending {
        assert!(channels.len() == submit.commands.len() && channels.len() <= bound);
        for (i, channel) in channels.iter().enumerate() {
            assert!(!channels[..i].contains(channel), "{channel:?} twice");
        }
    }
    let text = String::from_utf8_lossy(body);
    let now = Instant::now();
    let history = match submit.commands.first() {
        Some(Command::Read { max_messages, .. }) if refusals & 1 == 0 => Some(*max_messages),
        _ => None,
    };
    let replies = submit
        .commands
        .iter()
        .enumerate()
        .map(|(i, command)| api_reply(command, (refusals >> (i % 8)) & 1 == 0, &text, now))
        .collect();
    let broadcast = matches!(submit.pending, Pending::Broadcast(_));
    let metrics = crate::metrics::Metrics::default();
    match answer(submit.pending, replies, &metrics) {
        ApiAnswer::Json(status, json) => {
            assert!(status == 200 || status == 202, "{status}");
            let value: serde_json::Value = serde_json::from_slice(&json).expect("answers are JSON");
            assert!(value.is_object());
            if let Some(count) = history {
                let poll = parse_poll_answer(&json).expect("a history answer is a poll answer");
                assert_eq!(poll.messages.len(), count);
                for m in poll.messages {
                    assert_eq!(m.payload, crate::protocol::envelope::Payload::Text(text.to_string()));
                    assert_eq!(m.event.as_deref(), Some(&*text));
                }
            }
        }
        ApiAnswer::Error(status, reason) => {
            assert!(!broadcast, "a broadcast answers each channel in its JSON");
            assert_eq!((status, reason), (503, HubError::BackendUnavailable.to_string()));
        }
    }
}

/// A reply the hub could give to `command`: `accept`ed, carrying `text` wherever the reply
/// carries a name or text, or refused as when Redis is down.
fn api_reply(command: &crate::hub::Command, accept: bool, text: &str, now: Instant) -> crate::hub::Reply {
    use crate::hub::backend::{ConnAddr, ConnId};
    use crate::hub::presence::Member;
    use crate::hub::{ChannelInfo, ChannelPage, Command, PresenceList, Reply, TransportCounts};
    fn result<T>(accept: bool, ok: T) -> Result<T, HubError> {
        if accept {
            Ok(ok)
        } else {
            Err(HubError::BackendUnavailable)
        }
    }
    let id = Cursor { epoch: Epoch(0xab), offset: 7 };
    // Whether a gap, a channel that exists, a page with more after it.
    let even = text.len().is_multiple_of(2);
    match command {
        Command::Publish { .. } => Reply::Published(result(accept, id)),
        Command::Read { channel, max_messages, .. } => {
            // One message, shared as the hub shares a message with every reader.
            let message =
                Message::new(channel.clone(), id, Some(Arc::from(text)), Payload::Text(Arc::from(text)), now);
            let message = Arc::new(message);
            let messages = vec![message; *max_messages];
            Reply::Read(result(accept, Replay { messages, gap: even, next: id }))
        }
        Command::Presence { channel, .. } => {
            let member = Member {
                node: 1,
                conn: ConnAddr { sink: SinkId::new(0).expect("sink 0"), conn: ConnId::new(1, 1) },
                user: Some(text.into()),
                info: Some(serde_json::json!({ "text": text }).to_string().into()),
                joins: false,
            };
            let members = vec![member.clone(), Member { user: None, info: None, ..member }];
            Reply::Presence {
                channel: channel.clone(),
                result: result(accept, PresenceList { count: 3, members }),
            }
        }
        Command::Info { channel } => {
            let info = even.then_some(ChannelInfo {
                subscribers: 3,
                by_transport: TransportCounts::default(),
                last: Some(id),
                history_messages: 2,
                history_bytes: None,
            });
            Reply::Info { channel: channel.clone(), result: result(accept, info) }
        }
        Command::Channels { prefix, limit, .. } => {
            let channels =
                (0..*limit).filter_map(|i| ChannelName::parse(&format!("{prefix}{i}")).ok()).collect();
            Reply::Channels(result(accept, ChannelPage { channels, more: even }))
        }
        Command::Disconnect(_) => Reply::Sent(result(accept, ())),
        other => panic!("the API never submits {other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_harness_accepts_empty_and_small_inputs() {
        let inputs: [&[u8]; 4] =
            [b"", b"\x00", b"\xff\xff\xff\xff", b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58"];
        for input in inputs {
            ws_frame_header(input);
            ws_conn_server(input);
            ws_conn_client(input);
            ws_handshake(input);
            http_head(input);
            chunked_decode(input);
            sse_parse(input);
            cursor_parse(input);
            hub_ops(input);
            conn_server(input);
            resp_decode(input);
            redis_frame(input);
            envelope(input);
            token_verify(input);
            api_call(input);
        }
    }

    #[test]
    fn split_pieces_cover_the_input_in_order() {
        let data: Vec<u8> = (0..50).collect();
        for split in [Split::Every(1), Split::Every(7), Split::At(vec![3, 900, 0, 49]), Split::At(vec![])] {
            assert_eq!(split.pieces(&data).concat(), data);
        }
    }
}
