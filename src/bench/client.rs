//! Many client connections on one mio poll, each a small state machine over the pure codecs.
//!
//! Implements, in the client role: the WebSocket opening handshake (RFC 6455 §4.1) and frames
//! through [`WsConn`] (masked with fresh random keys, §5.3; pings answered, §5.5.2); an SSE
//! response read with the HTML event-stream parser; pushwire's chunked NDJSON stream; long
//! polling (RFC 6202 §2) as a short poll for the cursor, then `?wait=&since=` polls on the same
//! keep-alive connection. Response bodies are close-delimited, Content-Length or chunked
//! (RFC 9112 §6.3, §7.1), whichever the head says, so a peer that chunks its event stream works.
//!
//! Each connection reports what happened as [`Received`] values: the head accepted, pushwire's
//! opening cursor, one unit of data (a WebSocket message, an SSE event's data, an NDJSON line,
//! a poll answer body), or the end.
//!
//! A `wss://` connection ([`Request::tls`]) runs a rustls `ClientConnection` between the socket
//! and the same state machine: the TLS handshake first (RFC 6455 §4.1: "If /secure/ is true,
//! the client MUST perform a TLS handshake over the connection after opening the connection and
//! before sending the handshake data"), then every byte through TLS records.
//!
//! Does not: reconnect, follow redirects, send cookies or custom headers, or keep more than one
//! request outstanding per connection.

use std::io::{self, IoSlice, Read, Write};
use std::sync::Arc;
use std::time::Duration;

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use crate::http1::body::ResponseBody;
use crate::http1::head::{parse_response_head, HeadScanner, ResponseHead};
use crate::output::Output;
use crate::protocol::envelope::{is_channel_open_envelope, is_open_envelope};
use crate::protocol::Transport;
use crate::sse::{EventStreamParser, ParseLimits};
use crate::ws::deflate::Codec;

thread_local! {
    /// The permessage-deflate codec every WebSocket client of this thread inflates with.
    static CODEC: std::cell::RefCell<Codec> = std::cell::RefCell::new(Codec::default());
}
use crate::ws::handshake::{verify_response, ClientRequest};
use crate::ws::{self, Event, Role, WsConn};

/// What a bench connection speaks: one of pushwire's transports (the echo and connect clients
/// use WebSocket), or raw TCP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    /// A push transport; the bench speaks WebSocket, SSE, the NDJSON stream and long polling
    /// (a short poll for the cursor, then `?wait=25&since=CURSOR` again and again).
    Push(Transport),
    /// Raw TCP, each message preceded by its length as 4 bytes, big-endian: no HTTP, no
    /// WebSocket framing (`bench echo --protocol raw`, against a plain TCP echo).
    Raw,
}

/// The transports `--transport` accepts (named as in `?mode=`): ws, sse, stream, longpoll.
pub fn transport_parser() -> impl clap::builder::TypedValueParser<Value = Transport> {
    use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser as _};
    PossibleValuesParser::new([
        PossibleValue::new("ws").help("WebSocket (RFC 6455)"),
        PossibleValue::new("sse").help("Server-Sent Events (`Accept: text/event-stream`)"),
        PossibleValue::new("stream")
            .help("pushwire's chunked NDJSON stream (`Accept: application/x-ndjson`)"),
        PossibleValue::new("longpoll")
            .help("Long polling: a short poll for the cursor, then `?wait=25&since=CURSOR` again and again"),
    ])
    .try_map(|name: String| Transport::parse(&name).ok_or(format!("`{name}` is not a transport")))
}

/// The WebSocket subprotocols a push subscriber of `bench idle` and `bench fanout` offers:
/// `pushwire.v1` over WebSocket when it waits for the opening cursor, none otherwise.
pub fn subscriber_protocols(transport: Transport, wait_for_cursor: bool) -> Vec<String> {
    if wait_for_cursor && transport == Transport::WebSocket {
        vec!["pushwire.v1".to_string()]
    } else {
        Vec::new()
    }
}

/// What to ask for on a new connection.
#[derive(Debug, Clone)]
pub struct Request {
    /// The transport, which decides the request and how the response is read.
    pub wire: Wire,
    /// The `Host` field value.
    pub host: String,
    /// The request-target.
    pub path: String,
    /// WebSocket subprotocols to offer (e.g. `pushwire.v1` for the opening cursor).
    pub protocols: Vec<String>,
    /// Largest message, SSE event or NDJSON line accepted, in bytes.
    pub max_message_bytes: usize,
    /// WebSocket: offer permessage-deflate (RFC 7692) and inflate compressed messages.
    pub deflate: bool,
    /// `wss://`: speak TLS to this server; `None` for plain TCP.
    pub tls: Option<TlsTarget>,
}

/// Where a `wss://` connection's TLS goes: what it trusts and the name it checks.
#[derive(Debug, Clone)]
pub struct TlsTarget {
    /// The client configuration (trusted roots, protocol versions), shared by every connection.
    pub config: Arc<rustls::ClientConfig>,
    /// The server name sent (SNI, RFC 6066 §3) and checked against the certificate.
    pub name: rustls::pki_types::ServerName<'static>,
}

impl TlsTarget {
    /// The target for `url`'s host, trusting Mozilla's roots and the CA certificates in the PEM
    /// file `extra_roots_pem`; `None` when the URL is not `wss://`.
    pub fn for_url(
        url: &super::url::Url,
        extra_roots_pem: Option<&std::path::Path>,
    ) -> Result<Option<TlsTarget>, String> {
        if !url.secure {
            return Ok(None);
        }
        let options = crate::client::TlsOptions { extra_roots_pem: extra_roots_pem.map(Into::into) };
        let config = crate::client::tls::client_config(&options).map_err(|e| e.to_string())?;
        let name = rustls::pki_types::ServerName::try_from(url.hostname().to_string())
            .map_err(|e| format!("{:?} is not a TLS server name: {e}", url.hostname()))?;
        Ok(Some(TlsTarget { config, name }))
    }
}

/// What one connection reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    /// The response head was accepted: 101 for a WebSocket, 200 otherwise.
    Opened,
    /// pushwire's opening cursor arrived (or the first poll answer): the subscription exists.
    Cursor,
    /// One unit of data: a WebSocket message, an SSE event's data, an NDJSON line or a poll
    /// answer body.
    Data(Vec<u8>),
    /// The connection is over (and was dropped); why.
    Closed(String),
}

/// Largest response head read, in bytes.
const MAX_HEAD_BYTES: usize = 16 * 1024;
/// The length prefix of a raw message: a `u32`, big-endian.
const RAW_LENGTH_BYTES: usize = 4;
/// How long a long poll asks to wait, in seconds (below pushwire's 30 s cap).
const LONG_POLL_WAIT_S: u32 = 25;

/// What the body of a non-WebSocket response carries.
#[derive(Debug)]
enum BodyKind {
    /// An event stream; `cursor_seen` once the first event ID was reported.
    Sse { parser: EventStreamParser, cursor_seen: bool },
    /// NDJSON lines; `line` holds a partial line.
    Stream { line: Vec<u8> },
    /// A poll answer, collected whole; `first` for the short poll that finds the cursor.
    Poll { body: Vec<u8>, first: bool },
}

/// Where a connection is. Small (the head's state is boxed), so that a connection's hot fields
/// share a cache line or two: a fan-out reads thousands of connections once each per message.
#[derive(Debug)]
enum State {
    /// Waiting for the response head.
    Head(Box<HeadState>),
    /// Speaking WebSocket (inline: a `WsConn` between frames is a few words).
    Ws(WsConn),
    /// Reading a response body.
    Body(Box<BodyState>),
    /// Raw length-prefixed messages; `buf` holds a partial one.
    Raw { buf: Vec<u8> },
    /// Over; the connection is dropped after reporting why.
    Done,
}

/// Waiting for the response head: `buf` holds its bytes so far.
#[derive(Debug)]
struct HeadState {
    buf: Vec<u8>,
    scanner: HeadScanner,
    ws_request: Option<ClientRequest>,
    first_poll: bool,
}

/// Reading a response body: its framing and what it carries, in one box.
#[derive(Debug)]
struct BodyState {
    framing: ResponseBody,
    kind: BodyKind,
}

/// One client connection.
#[derive(Debug)]
pub struct Client {
    stream: TcpStream,
    /// `wss://`: the TLS connection between the socket and the state machine.
    tls: Option<Box<rustls::ClientConnection>>,
    /// Boxed: read only when a request is sent or a head arrives.
    request: Box<Request>,
    state: State,
    out: Output,
    connected: bool,
    /// The code of the peer's close frame, once it came (the server then closes TCP).
    close_received: Option<String>,
}

/// A fresh masking key for each frame (RFC 6455 §5.3: "MUST be unpredictable").
fn fresh_mask() -> [u8; 4] {
    rand::random()
}

impl Client {
    /// Wraps a connecting socket and queues the request; it goes out once connected.
    pub fn start(stream: TcpStream, request: Request) -> Result<Client, String> {
        let tls = match &request.tls {
            Some(target) => Some(Box::new(
                rustls::ClientConnection::new(target.config.clone(), target.name.clone())
                    .map_err(|e| format!("TLS: {e}"))?,
            )),
            None => None,
        };
        let mut client = Client {
            stream,
            tls,
            state: State::Done,
            out: Output::new(),
            connected: false,
            close_received: None,
            request: Box::new(request.clone()),
        };
        match request.wire {
            Wire::Push(Transport::WebSocket) => {
                // RFC 6455 §4.1: the nonce "MUST be a nonce consisting of a randomly selected
                // 16-byte value".
                let ws_request = ClientRequest {
                    host: request.host.clone(),
                    path: request.path.clone(),
                    key: rand::random(),
                    protocols: request.protocols.clone(),
                    extra_headers: Vec::new(),
                    deflate: request.deflate,
                };
                let mut head = Vec::new();
                ws_request.encode(&mut head).map_err(|e| e.to_string())?;
                client.out.push_owned(head);
                client.state = head_state(Some(ws_request), false);
            }
            Wire::Push(Transport::Sse) => client.send_get(&request.path, "text/event-stream", false),
            Wire::Push(Transport::Stream) => client.send_get(&request.path, "application/x-ndjson", false),
            // `poll` is not a bench transport (see `transport_parser`): a long poll.
            Wire::Push(Transport::LongPoll | Transport::Poll) => {
                client.send_get(&request.path, "application/json", true)
            }
            Wire::Raw => client.state = State::Raw { buf: Vec::new() },
        }
        Ok(client)
    }

    fn send_get(&mut self, path: &str, accept: &str, first_poll: bool) {
        let head = format!("GET {path} HTTP/1.1\r\nHost: {}\r\nAccept: {accept}\r\n\r\n", self.request.host);
        self.out.push_owned(head.into_bytes());
        self.state = head_state(None, first_poll);
    }

    /// Queues a WebSocket message, masked (or on a raw connection its bytes behind their
    /// length); false when the connection cannot send one.
    pub fn send_message(&mut self, message: &ws::Message) -> bool {
        match &mut self.state {
            State::Ws(conn) => conn.send_message(message, &mut fresh_mask, &mut self.out).is_ok(),
            State::Raw { .. } => {
                let bytes = match message {
                    ws::Message::Binary(bytes) => bytes.as_slice(),
                    ws::Message::Text(text) => text.as_bytes(),
                };
                let Ok(length) = u32::try_from(bytes.len()) else {
                    return false;
                };
                let mut frame = Vec::with_capacity(RAW_LENGTH_BYTES + bytes.len());
                frame.extend_from_slice(&length.to_be_bytes());
                frame.extend_from_slice(bytes);
                self.out.push_owned(frame);
                true
            }
            _ => false,
        }
    }

    /// Starts the WebSocket closing handshake (code 1000); the server then closes TCP. A raw
    /// connection shuts down its sending side instead, and the echo server closes on that EOF.
    pub fn send_close(&mut self) {
        match &mut self.state {
            State::Ws(conn) => {
                let frame = ws::CloseFrame { code: ws::CloseCode::NORMAL, reason: String::new() };
                let _ = conn.send_close(Some(frame), &mut fresh_mask, &mut self.out);
            }
            State::Raw { .. } => {
                let _ = self.stream.shutdown(std::net::Shutdown::Write);
            }
            _ => {}
        }
    }

    /// Writes what is queued until the socket would block. Before the connect completes there
    /// is nothing to do: the writable event that signals it calls this again.
    fn flush(&mut self) -> io::Result<()> {
        if self.tls.is_some() {
            return self.flush_tls();
        }
        while self.connected && !self.out.is_empty() {
            let mut slices = [IoSlice::new(&[]); 64];
            let n = self.out.io_slices(&mut slices);
            match crate::net::stream::send_vectored(&self.stream, &slices[..n]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(written) => self.out.consume(written),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.out.is_empty() {
            // Frees the queue's box: the check above, made after every read, then needs no
            // second cache line (a fan-out subscriber writes nothing after its request).
            self.out = Output::new();
        }
        Ok(())
    }

    /// [`Client::flush`] through TLS: the queued bytes go into rustls (which holds them until
    /// the handshake is done, and takes no more than its buffer limit), its records to the
    /// socket, until both are empty or the socket would block.
    fn flush_tls(&mut self) -> io::Result<()> {
        let Some(tls) = self.tls.as_mut() else {
            return Ok(());
        };
        while self.connected {
            while !self.out.is_empty() {
                let mut slices = [IoSlice::new(&[]); 64];
                let n = self.out.io_slices(&mut slices);
                let taken = tls.writer().write_vectored(&slices[..n])?;
                if taken == 0 {
                    break;
                }
                self.out.consume(taken);
            }
            if !tls.wants_write() {
                break;
            }
            match tls.write_tls(&mut self.stream) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// [`Client::handle_readable`] through TLS: records from the socket into rustls, the
    /// plaintext it yields to the state machine.
    fn handle_readable_tls(
        &mut self,
        scratch: &mut [u8],
        received: &mut Vec<Received>,
    ) -> Result<(), String> {
        loop {
            let Some(tls) = self.tls.as_mut() else {
                return Ok(());
            };
            let eof = match tls.read_tls(&mut self.stream) {
                Ok(0) => true,
                Ok(_) => false,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(format!("read: {e}")),
            };
            tls.process_new_packets().map_err(|e| format!("TLS: {e}"))?;
            loop {
                let Some(tls) = self.tls.as_mut() else {
                    return Ok(());
                };
                match tls.reader().read(scratch) {
                    // close_notify: the server ended the TLS stream.
                    Ok(0) => return Err(self.eof_reason()),
                    Ok(n) => {
                        self.handle_input(&scratch[..n], received)?;
                        if matches!(self.state, State::Done) {
                            return Err("finished".into());
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    // A TCP close without close_notify: the end, as for the crate's client.
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(self.eof_reason()),
                    Err(e) => return Err(format!("TLS read: {e}")),
                }
            }
            if eof {
                return Err(self.eof_reason());
            }
        }
    }

    /// The socket became writable: the connect finished (or failed), or room opened up.
    fn handle_writable(&mut self) -> Result<(), String> {
        if !self.connected {
            if let Some(e) = self.stream.take_error().map_err(|e| e.to_string())? {
                return Err(format!("connect: {e}"));
            }
            match self.stream.peer_addr() {
                Ok(_) => self.connected = true,
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return Ok(()),
                Err(e) => return Err(format!("connect: {e}")),
            }
        }
        self.flush().map_err(|e| format!("write: {e}"))
    }

    /// Reads until the socket is drained, handing the bytes to the state machine. A read that
    /// does not fill `scratch` drained it: the poll is edge-triggered (mio), and bytes that
    /// arrive after it raise a new event, so the read that would only say `WouldBlock` is
    /// skipped (half the reads of a fan-out, where each message is one short read), unless
    /// the peer's FIN was reported (`read_closed`): the EOF is then read now.
    fn handle_readable(
        &mut self,
        scratch: &mut [u8],
        read_closed: bool,
        received: &mut Vec<Received>,
    ) -> Result<(), String> {
        if self.tls.is_some() {
            return self.handle_readable_tls(scratch, received);
        }
        loop {
            match crate::net::stream::recv(&self.stream, scratch) {
                Ok(0) => return Err(self.eof_reason()),
                Ok(n) => {
                    self.handle_input(&scratch[..n], received)?;
                    if matches!(self.state, State::Done) {
                        return Err("finished".into());
                    }
                    if n < scratch.len() && !read_closed {
                        return Ok(());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("read: {e}")),
            }
        }
    }

    fn eof_reason(&self) -> String {
        if let Some(code) = &self.close_received {
            return format!("closed after a close frame ({code})");
        }
        match &self.state {
            State::Ws(_) => "EOF without a close frame".into(),
            State::Head(_) => "EOF before a response".into(),
            _ => "EOF".into(),
        }
    }

    fn handle_input(&mut self, input: &[u8], received: &mut Vec<Received>) -> Result<(), String> {
        match &mut self.state {
            State::Head(head) => {
                let HeadState { buf, scanner, .. } = &mut **head;
                buf.extend_from_slice(input);
                let limits = crate::http1::Limits { max_head_bytes: MAX_HEAD_BYTES, ..Default::default() };
                let Some(len) = scanner.scan(buf, &limits).map_err(|e| format!("response head: {e}"))? else {
                    return Ok(());
                };
                let Some((head, _)) = parse_response_head(&buf[..len], &limits).map_err(|e| e.to_string())?
                else {
                    return Err("malformed response head".into());
                };
                let rest = buf.split_off(len);
                let State::Head(head_state) = std::mem::replace(&mut self.state, State::Done) else {
                    unreachable!("matched above")
                };
                self.handle_head(&head, head_state.ws_request, head_state.first_poll)?;
                received.push(Received::Opened);
                // Even with nothing left: an empty Content-Length body is complete already.
                self.handle_input(&rest, received)
            }
            State::Ws(conn) => {
                let mut events = Vec::new();
                // One decompressor for every connection of this thread (reset per message, as
                // no_context_takeover allows), not one per connection.
                let result = CODEC.with_borrow_mut(|codec| {
                    conn.handle_input(input, &mut fresh_mask, codec, &mut events, &mut self.out)
                });
                for event in events {
                    match event {
                        Event::Message(ws::Message::Text(text)) => {
                            received.push(data_or_cursor(text.into_bytes()))
                        }
                        Event::Message(ws::Message::Binary(bytes)) => received.push(Received::Data(bytes)),
                        Event::Close(frame) => {
                            self.close_received =
                                Some(frame.map_or("no code".into(), |f| f.code.to_string()));
                        }
                        Event::Ping(_) | Event::Pong(_) => {}
                    }
                }
                result.map_err(|e| format!("WebSocket: {e}"))
            }
            State::Body(_) => self.handle_body(input, received),
            State::Raw { buf } => {
                buf.extend_from_slice(input);
                let max = self.request.max_message_bytes;
                let mut start = 0;
                while let Some(prefix) = buf.get(start..start + RAW_LENGTH_BYTES) {
                    let length = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
                    if length > max {
                        return Err(format!("raw message of {length} bytes is over {max}"));
                    }
                    let Some(message) = buf.get(start + RAW_LENGTH_BYTES..start + RAW_LENGTH_BYTES + length)
                    else {
                        break;
                    };
                    received.push(Received::Data(message.to_vec()));
                    start += RAW_LENGTH_BYTES + length;
                }
                buf.drain(..start);
                Ok(())
            }
            State::Done => Ok(()),
        }
    }

    /// Checks the head and moves to the state that reads what follows it.
    fn handle_head(
        &mut self,
        head: &ResponseHead,
        ws_request: Option<ClientRequest>,
        first_poll: bool,
    ) -> Result<(), String> {
        if let Some(ws_request) = ws_request {
            let selected = verify_response(head, &ws_request).map_err(|e| format!("handshake: {e}"))?;
            let limits = ws::Limits {
                max_frame_payload_bytes: self.request.max_message_bytes as u64,
                max_message_bytes: self.request.max_message_bytes as u64,
            };
            self.state = State::Ws(WsConn::with_deflate(Role::Client, limits, selected.deflate));
            return Ok(());
        }
        if head.status != 200 {
            return Err(format!("status {} {}", head.status, head.reason));
        }
        // RFC 9112 §6.3, read by the clients' reader; a stream never ends, so only a declared
        // length is held to the message bound (each event or line is bounded by its reader).
        let framing =
            ResponseBody::for_response(head, false, u64::MAX).map_err(|e| format!("response body: {e}"))?;
        if let ResponseBody::Length { remaining } = framing {
            if remaining > self.request.max_message_bytes as u64 {
                return Err(format!("response body of {remaining} bytes is over the limit"));
            }
        }
        let kind = match self.request.wire {
            Wire::Push(Transport::Sse) => {
                let limits = ParseLimits {
                    max_line_bytes: self.request.max_message_bytes + 1024,
                    max_data_bytes: self.request.max_message_bytes + 1024,
                };
                BodyKind::Sse { parser: EventStreamParser::new(limits), cursor_seen: false }
            }
            Wire::Push(Transport::Stream) => BodyKind::Stream { line: Vec::new() },
            Wire::Push(Transport::LongPoll | Transport::Poll | Transport::WebSocket) | Wire::Raw => {
                BodyKind::Poll { body: Vec::new(), first: first_poll }
            }
        };
        self.state = State::Body(Box::new(BodyState { framing, kind }));
        Ok(())
    }

    /// Removes the transfer framing, then reads the body as its transport says.
    fn handle_body(&mut self, input: &[u8], received: &mut Vec<Received>) -> Result<(), String> {
        let State::Body(body_state) = &mut self.state else {
            return Ok(());
        };
        let BodyState { framing, kind } = &mut **body_state;
        let mut body = Vec::new();
        let progress = framing.read(input, &mut body).map_err(|e| format!("response body: {e}"))?;
        if progress.consumed < input.len() {
            return Err("bytes after the response body".into());
        }
        let complete = progress.done;
        match kind {
            BodyKind::Sse { parser, cursor_seen } => {
                let mut events = Vec::new();
                parser.feed(&body, &mut events).map_err(|e| format!("event stream: {e}"))?;
                // pushwire opens with `id: CURSOR` and a blank line: the parser records the ID
                // without dispatching an event (HTML "dispatch the event", steps 1 and 3).
                if !*cursor_seen && !parser.last_event_id().is_empty() {
                    *cursor_seen = true;
                    received.push(Received::Cursor);
                }
                received.extend(events.into_iter().map(|e| Received::Data(e.data.into_bytes())));
            }
            BodyKind::Stream { line } => {
                // Read here, not for every event: the request is boxed apart from the hot fields.
                let max = self.request.max_message_bytes;
                let mut rest: &[u8] = &body;
                while let Some(end) = rest.iter().position(|&b| b == b'\n') {
                    line.extend_from_slice(&rest[..end]);
                    rest = &rest[end + 1..];
                    if !line.is_empty() {
                        received.push(data_or_cursor(std::mem::take(line)));
                    }
                }
                if line.len() + rest.len() > max {
                    return Err(format!("stream line over {max} bytes"));
                }
                line.extend_from_slice(rest);
            }
            BodyKind::Poll { body: answer, first } => {
                let max = self.request.max_message_bytes;
                if answer.len() + body.len() > max {
                    return Err(format!("poll answer over {max} bytes"));
                }
                answer.extend_from_slice(&body);
                if complete {
                    let answer = std::mem::take(answer);
                    let first = *first;
                    let next = json_string_field(&answer, "next").ok_or("poll answer without `next`")?;
                    received.push(if first { Received::Cursor } else { Received::Data(answer) });
                    let target = poll_target(&self.request.path, &next);
                    self.send_get(&target, "application/json", false);
                    self.flush().map_err(|e| format!("write: {e}"))?;
                }
                return Ok(());
            }
        }
        if complete {
            return Err("the response ended".into());
        }
        Ok(())
    }
}

fn head_state(ws_request: Option<ClientRequest>, first_poll: bool) -> State {
    State::Head(Box::new(HeadState { buf: Vec::new(), scanner: HeadScanner::new(), ws_request, first_poll }))
}

/// pushwire's `{"type":"open",…}` envelope (WebSocket `pushwire.v1`, the stream), also
/// labelled with its channel (a multi-channel WebSocket: open once its first channel is), or data.
fn data_or_cursor(bytes: Vec<u8>) -> Received {
    if is_open_envelope(&bytes) || is_channel_open_envelope(&bytes) {
        Received::Cursor
    } else {
        Received::Data(bytes)
    }
}

/// The next long poll: `wait` and `since` added to the subscribe target.
fn poll_target(path: &str, since: &str) -> String {
    let separator = if path.contains('?') { '&' } else { '?' };
    format!("{path}{separator}wait={LONG_POLL_WAIT_S}&since={since}")
}

/// The value of `"name":"…"` in a JSON text whose value holds no escapes (pushwire cursors).
fn json_string_field(json: &[u8], name: &str) -> Option<String> {
    let text = std::str::from_utf8(json).ok()?;
    let key = format!("\"{name}\":\"");
    let start = text.find(&key)? + key.len();
    let len = text[start..].find('"')?;
    let value = &text[start..start + len];
    value
        .bytes()
        .all(|b| b.is_ascii_graphic() && b != b'\\' && b != b'&' && b != b'#')
        .then(|| value.to_string())
}

/// Every client connection of a run, on one poll.
pub struct Clients {
    poll: Poll,
    events: Events,
    slots: Vec<Option<Client>>,
    /// Indexes of empty slots, reused before the table grows.
    free: Vec<usize>,
    scratch: Vec<u8>,
    open: usize,
}

impl Clients {
    /// An empty set with its poll.
    pub fn new() -> io::Result<Clients> {
        Ok(Clients {
            poll: Poll::new()?,
            events: Events::with_capacity(1024),
            slots: Vec::new(),
            free: Vec::new(),
            scratch: vec![0; 256 * 1024],
            open: 0,
        })
    }

    /// Registers `client`; returns its index, which [`Clients::turn`] reports with its news.
    /// The index of a connection that closed is given to a later one.
    pub fn add(&mut self, mut client: Client) -> io::Result<usize> {
        let index = self.free.pop().unwrap_or(self.slots.len());
        self.poll.registry().register(
            &mut client.stream,
            Token(index),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        if index == self.slots.len() {
            self.slots.push(Some(client));
        } else {
            self.slots[index] = Some(client);
        }
        self.open += 1;
        Ok(index)
    }

    /// Connections not yet closed.
    pub fn open(&self) -> usize {
        self.open
    }

    /// The connection at `index`, unless it closed.
    pub fn get_mut(&mut self, index: usize) -> Option<&mut Client> {
        self.slots.get_mut(index).and_then(Option::as_mut)
    }

    /// Writes what `index` has queued; a write error closes it and reports why in `received`.
    pub fn flush(&mut self, index: usize, received: &mut Vec<(usize, Received)>) {
        if let Some(client) = self.get_mut(index) {
            if let Err(e) = client.flush() {
                self.close(index, format!("write: {e}"), received);
            }
        }
    }

    /// Drops connection `index` now (TCP closes), without a report.
    pub fn drop_client(&mut self, index: usize) {
        if let Some(mut client) = self.slots.get_mut(index).and_then(Option::take) {
            let _ = self.poll.registry().deregister(&mut client.stream);
            self.free.push(index);
            self.open -= 1;
        }
    }

    fn close(&mut self, index: usize, reason: String, received: &mut Vec<(usize, Received)>) {
        if self.slots.get(index).is_some_and(Option::is_some) {
            self.drop_client(index);
            received.push((index, Received::Closed(reason)));
        }
    }

    /// Waits up to `timeout` for socket events and handles them: appends what each connection
    /// reported, with its index. A connection that ends is dropped after its `Closed`.
    pub fn turn(&mut self, timeout: Duration, received: &mut Vec<(usize, Received)>) -> io::Result<()> {
        match self.poll.poll(&mut self.events, Some(timeout)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(()),
            Err(e) => return Err(e),
        }
        let ready: Vec<(usize, bool, bool, bool)> = self
            .events
            .iter()
            .map(|e| (e.token().0, e.is_writable(), e.is_readable(), e.is_read_closed()))
            .collect();
        let mut news = Vec::new();
        for (index, writable, readable, read_closed) in ready {
            let Some(client) = self.slots.get_mut(index).and_then(Option::as_mut) else {
                continue;
            };
            let mut result = Ok(());
            if writable || !client.connected {
                let was_connected = client.connected;
                result = client.handle_writable();
                // A raw connection has no response head: it is open once connected.
                if !was_connected && client.connected && matches!(client.state, State::Raw { .. }) {
                    news.push(Received::Opened);
                }
            }
            if result.is_ok() && (readable || read_closed) && client.connected {
                result = client.handle_readable(&mut self.scratch, read_closed, &mut news);
                if result.is_ok() {
                    result = client.flush().map_err(|e| format!("write: {e}"));
                }
            }
            received.extend(news.drain(..).map(|r| (index, r)));
            if let Err(reason) = result {
                self.close(index, reason, received);
            }
        }
        Ok(())
    }
}

/// A batch of connections to open with [`open_all`].
#[derive(Debug, Clone)]
pub struct Opening<'a> {
    /// Where to connect.
    pub addr: std::net::SocketAddr,
    /// What each connection asks for.
    pub request: &'a Request,
    /// Each connection's own path instead of the request's, by index (empty: the request's
    /// for every one).
    pub paths: &'a [String],
    /// How many connections.
    pub count: usize,
    /// Source addresses to spread them over, round-robin; empty lets the kernel pick.
    pub sources: &'a [std::net::IpAddr],
    /// Most connections opening at the same time (keeps the server's accept queue short).
    pub concurrency: usize,
    /// Ready means the opening cursor arrived (pushwire), not just the response head.
    pub wait_for_cursor: bool,
    /// How long opening them all may take.
    pub timeout: Duration,
}

/// Opens the connections of `plan` and waits until every one is ready. Anything else a
/// connection sends meanwhile is dropped. Fails at the first connection that fails, or when
/// the timeout passes; returns how long it took.
pub fn open_all(clients: &mut Clients, plan: &Opening<'_>) -> Result<Duration, String> {
    let began = std::time::Instant::now();
    let deadline = began + plan.timeout;
    let (mut started, mut opened, mut ready) = (0, 0, 0);
    // Whether each connection (by index) was counted ready: a multi-channel WebSocket sends an
    // opening cursor per channel, and counts once.
    let mut counted: Vec<bool> = Vec::new();
    let mut received = Vec::new();
    while ready < plan.count {
        while started < plan.count && started - ready < plan.concurrency.max(1) {
            let source = (!plan.sources.is_empty()).then(|| plan.sources[started % plan.sources.len()]);
            let stream = super::system::connect_from(source, plan.addr)
                .map_err(|e| format!("connection {started}: connect to {}: {e}", plan.addr))?;
            let mut request = plan.request.clone();
            if let Some(path) = plan.paths.get(started) {
                request.path.clone_from(path);
            }
            clients.add(Client::start(stream, request)?).map_err(|e| e.to_string())?;
            started += 1;
        }
        let now = std::time::Instant::now();
        if now >= deadline {
            let hint = if plan.wait_for_cursor && opened > ready {
                " (the others had their response head but no opening cursor: a server other than \
                 pushwire needs --no-open-cursor)"
            } else {
                ""
            };
            return Err(format!(
                "only {ready} of {} connections were ready after {:.1} s{hint}",
                plan.count,
                plan.timeout.as_secs_f64()
            ));
        }
        clients
            .turn((deadline - now).min(Duration::from_millis(100)), &mut received)
            .map_err(|e| e.to_string())?;
        for (index, news) in received.drain(..) {
            if news == Received::Opened {
                opened += 1;
            }
            let became_ready = match news {
                Received::Opened => !plan.wait_for_cursor,
                Received::Cursor => plan.wait_for_cursor,
                _ => false,
            };
            if became_ready {
                if counted.len() <= index {
                    counted.resize(index + 1, false);
                }
                if !std::mem::replace(&mut counted[index], true) {
                    ready += 1;
                }
            }
            if let Received::Closed(reason) = news {
                let request = plan.request;
                let path = plan.paths.get(index).unwrap_or(&request.path);
                return Err(format!("connection {index} to {}{path}: {reason}", request.host));
            }
        }
    }
    Ok(began.elapsed())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc6202_2_next_long_poll_carries_wait_and_the_answers_cursor() {
        let answer = br#"{"messages":[{"id":"ab:3","data":"x"}],"next":"ab:3","gap":false}"#;
        let next = json_string_field(answer, "next").unwrap();
        assert_eq!(next, "ab:3");
        assert_eq!(poll_target("/channels/a", &next), "/channels/a?wait=25&since=ab:3");
        assert_eq!(
            poll_target("/channels/a?mode=longpoll", &next),
            "/channels/a?mode=longpoll&wait=25&since=ab:3"
        );
        // A cursor that would need escaping in a query is refused rather than sent.
        assert_eq!(json_string_field(br#"{"next":"a&b"}"#, "next"), None);
        assert_eq!(json_string_field(br#"{"messages":[]}"#, "next"), None);
    }

    /// A short read ends reading (the poll is edge-triggered), except when the event also
    /// reported the peer's FIN: data and FIN in one event must still end in `Closed`, or the
    /// connection would wait for an event that never comes.
    #[test]
    fn data_and_fin_in_one_event_are_both_reported() {
        use std::io::Write as _;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mut clients = Clients::new().unwrap();
        let request = Request {
            wire: Wire::Raw,
            host: addr.to_string(),
            path: String::new(),
            protocols: Vec::new(),
            max_message_bytes: 1024,
            deflate: false,
            tls: None,
        };
        let stream = TcpStream::connect(addr).unwrap();
        let index = clients.add(Client::start(stream, request).unwrap()).unwrap();
        let (mut peer, _) = listener.accept().unwrap();
        peer.write_all(&[0, 0, 0, 2, b'h', b'i']).unwrap();
        drop(peer);
        // Both are in the socket before the first poll: one event carries them.
        std::thread::sleep(Duration::from_millis(100));
        let mut received = Vec::new();
        for _ in 0..20 {
            clients.turn(Duration::from_millis(50), &mut received).unwrap();
            if received.iter().any(|(_, r)| matches!(r, Received::Closed(_))) {
                break;
            }
        }
        let news: Vec<&Received> = received.iter().filter(|(i, _)| *i == index).map(|(_, r)| r).collect();
        assert!(news.contains(&&Received::Data(b"hi".to_vec())), "{news:?}");
        assert!(matches!(news.last(), Some(Received::Closed(_))), "{news:?}");
    }

    #[test]
    fn pushwire_open_envelope_is_the_cursor() {
        assert_eq!(data_or_cursor(br#"{"type":"open","next":"e:0"}"#.to_vec()), Received::Cursor);
        assert_eq!(
            data_or_cursor(br#"{"channel":"a.1","type":"open","next":"e:0"}"#.to_vec()),
            Received::Cursor
        );
        let labelled = br#"{"channel":"a","id":"e:1","data":"{\"type\":\"open\"}"}"#.to_vec();
        assert_eq!(data_or_cursor(labelled.clone()), Received::Data(labelled));
        assert_eq!(data_or_cursor(b"pwbench:1:2:3;".to_vec()), Received::Data(b"pwbench:1:2:3;".to_vec()));
    }
}
