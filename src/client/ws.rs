//! A blocking WebSocket client: [`crate::ws`] in the client role, driven over a `TcpStream`
//! (`ws://`) or TLS over it (`wss://`, [`super::tls`]).
//!
//! Implements, as the I/O layer around the pure core:
//! [RFC 6455 §4.1](https://www.rfc-editor.org/rfc/rfc6455#section-4.1) (the opening handshake:
//! a fresh random 16-byte nonce per connection, the response checked by
//! [`crate::ws::handshake::verify_response`], and the bytes that arrived behind the 101 head fed
//! to the connection), §5.3 (a fresh random masking key for every frame sent),
//! [§7.1.1](https://www.rfc-editor.org/rfc/rfc6455#section-7.1.1) (after the closing handshake
//! the client waits for the server to close TCP first, within [`WsOptions::close_timeout`]),
//! §7.1.7 (a server that breaks the protocol gets a close frame with the matching code, then
//! TCP is closed) and deadlines on every blocking step.
//!
//! permessage-deflate ([RFC 7692](https://www.rfc-editor.org/rfc/rfc7692)) is offered unless
//! [`WsOptions::deflate`] is off; when the server accepts, messages of at least 128 bytes go out
//! compressed when that makes them smaller, and compressed messages are inflated within
//! [`WsOptions::limits`].
//!
//! Input is decoded message by message: the bytes after a complete message wait until the
//! application has taken it with [`WsClient::recv`], so a message that arrived right before a
//! frame breaking the protocol is handed over, and can be answered, before the failure closes
//! the connection (§7.1.7 still holds: nothing is processed after the faulty frame).
//!
//! Does not: fragment outgoing messages,
//! send pings on its own (call [`WsClient::send_ping`]), reconnect, or follow redirects. Name
//! resolution uses the system resolver, which has no deadline of its own.
//!
//! ```no_run
//! use pushwire::client::{WsClient, WsOptions};
//! use pushwire::ws::{CloseCode, Event, Message};
//!
//! let mut ws = WsClient::connect("ws://127.0.0.1:8080/echo", &WsOptions::default())?;
//! ws.send(&Message::Text("hello".into()))?;
//! if let Event::Message(Message::Text(text)) = ws.recv()? {
//!     assert_eq!(text, "hello");
//! }
//! ws.close(CloseCode::NORMAL, "bye")?;
//! # Ok::<(), pushwire::client::Error>(())
//! ```

use std::collections::VecDeque;
use std::io::{self, IoSlice, Read, Write};
use std::net::Shutdown;
use std::time::{Duration, Instant};

use crate::http1::head::{parse_response_head, HeadScanner, ResponseHead};
use crate::output::Output;
use crate::ws::deflate::{Codec, PerMessageDeflate};
use crate::ws::handshake::{verify_response, ClientRequest};
use crate::ws::{self, CloseCode, CloseFrame, Event, Message, Role, SendError, WsConn};

use super::socket::{io_error, remaining};
use super::tls::{self, Stream, TlsOptions};
use super::{Error, Url};

/// Bytes asked of the socket per read.
const READ_CHUNK_BYTES: usize = 16 * 1024;

/// How a [`WsClient`] connects and what it accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsOptions {
    /// Subprotocols offered (`Sec-WebSocket-Protocol`), most preferred first; the server picks
    /// at most one ([`WsClient::protocol`]). Each must be an RFC 9110 token. Default: none.
    pub protocols: Vec<String>,
    /// More request header fields, e.g. `Origin` or `Authorization`. Default: none.
    pub headers: Vec<(String, String)>,
    /// Deadline for the TCP connect and the whole opening handshake together. Default 10 s.
    pub connect_timeout: Duration,
    /// How long one [`WsClient::recv`] waits for the server; `None` waits without end.
    /// Default `None` (a push client may wait long for the next message).
    pub read_timeout: Option<Duration>,
    /// How long one write may block when the server does not read; `None` blocks without end.
    /// A write that times out ends the connection (a frame may be half sent). Default 10 s.
    pub write_timeout: Option<Duration>,
    /// How long [`WsClient::close`] waits for the server's close frame and then for the server
    /// to close TCP; also how long the client waits for TCP to close after the server's close
    /// or a failure (§7.1.1). Default 5 s.
    pub close_timeout: Duration,
    /// Largest frame and message accepted from the server (§10.4); larger fails the connection
    /// with 1009. Default: [`ws::Limits::default`] (64 KiB each).
    pub limits: ws::Limits,
    /// What a `wss://` connection trusts. Default: Mozilla's roots only.
    pub tls: TlsOptions,
    /// Offer permessage-deflate (RFC 7692). Default true.
    pub deflate: bool,
}

impl Default for WsOptions {
    fn default() -> Self {
        WsOptions {
            protocols: Vec::new(),
            headers: Vec::new(),
            connect_timeout: Duration::from_secs(10),
            read_timeout: None,
            write_timeout: Some(Duration::from_secs(10)),
            close_timeout: Duration::from_secs(5),
            limits: ws::Limits::default(),
            tls: TlsOptions::default(),
            deflate: true,
        }
    }
}

/// One WebSocket connection, client role, blocking.
///
/// Made by [`WsClient::connect`]; [`WsClient::send`] and [`WsClient::recv`] in any order;
/// [`WsClient::close`] to end it politely (dropping it closes TCP without a close frame).
#[derive(Debug)]
pub struct WsClient {
    stream: Stream,
    conn: WsConn,
    protocol: Option<String>,
    /// Bytes the core queued (frames sent, pongs, the close echo) and not yet written.
    out: Output,
    /// Received bytes behind the last message decoded, decoded once the application has taken
    /// the events before them; at most one read's worth.
    pending: Vec<u8>,
    /// permessage-deflate's compressor and decompressor (allocated on first use).
    codec: Codec,
    /// Events decoded but not yet returned by [`WsClient::recv`].
    events: VecDeque<Event>,
    /// A protocol error the server made, returned after the events decoded before it.
    failure: Option<ws::Error>,
    /// The TCP connection is over: EOF seen, shut down by us, or a write failed.
    tcp_done: bool,
    read_buf: Vec<u8>,
    /// The socket's current read timeout, to set it only when it changes.
    socket_read_timeout: Option<Duration>,
    read_timeout: Option<Duration>,
    close_timeout: Duration,
}

/// A fresh masking key for each frame sent.
fn random_mask() -> [u8; 4] {
    // RFC 6455 §5.3: "The masking key needs to be unpredictable; thus, the masking key MUST be
    // derived from a strong source of entropy" (rand's thread RNG is a seeded CSPRNG).
    rand::random()
}

/// Reads until the response head is complete; returns it and the bytes that came after it.
fn read_response_head(stream: &mut Stream, deadline: Instant) -> Result<(ResponseHead, Vec<u8>), Error> {
    const WAITING_FOR: &str = "the opening handshake response";
    let limits = crate::http1::Limits::default();
    let mut buf = Vec::new();
    let mut scanner = HeadScanner::new();
    let mut chunk = [0u8; 4096];
    // Bounded: the scanner fails once `buf` passes `max_head_bytes`, and the deadline bounds time.
    loop {
        stream.tcp().set_read_timeout(Some(remaining(deadline, WAITING_FOR)?))?;
        let n = match stream.read(&mut chunk) {
            Ok(0) => {
                return Err(Error::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the server closed the connection before answering the opening handshake",
                )))
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_error(e, WAITING_FOR)),
        };
        buf.extend_from_slice(&chunk[..n]);
        // The scanner blames a long first line on the request-target; in a response it is
        // simply a head too large.
        let end = scanner.scan(&buf, &limits).map_err(|e| match e {
            crate::http1::Error::TargetTooLong => Error::InvalidResponse(crate::http1::Error::HeadTooLarge),
            e => Error::InvalidResponse(e),
        })?;
        if let Some(end) = end {
            let (head, len) = parse_response_head(&buf[..end], &limits)
                .map_err(Error::InvalidResponse)?
                .ok_or(Error::InvalidResponse(crate::http1::Error::MalformedHead))?;
            return Ok((head, buf.split_off(len)));
        }
    }
}

impl WsClient {
    /// Connects to a `ws://` or `wss://` URL and performs the TLS handshake when secure, then
    /// the opening handshake (§4.1), all within [`WsOptions::connect_timeout`].
    ///
    /// Fails with [`Error::InvalidUrl`] before connecting, [`Error::Tls`] when the TLS
    /// handshake fails (e.g. an untrusted certificate),
    /// [`Error::Handshake`] when the server refuses (e.g. `UnexpectedStatus(404)`) or answers
    /// wrongly, [`Error::InvalidResponse`] for a malformed response head. Next: `send`, `recv`.
    pub fn connect(url: &str, options: &WsOptions) -> Result<WsClient, Error> {
        let url = Url::parse(url)?;
        options.limits.validate().map_err(Error::InvalidOptions)?;
        let request = ClientRequest {
            host: url.host_header(),
            path: url.resource_name.clone(),
            // RFC 6455 §4.1: the nonce "MUST be selected randomly for each connection".
            key: rand::random(),
            protocols: options.protocols.clone(),
            extra_headers: options.headers.clone(),
            deflate: options.deflate,
        };
        let mut head = Vec::new();
        request.encode(&mut head).map_err(Error::Handshake)?;

        let deadline = Instant::now() + options.connect_timeout;
        let mut stream = tls::connect(&url, &options.tls, deadline)?;
        stream.tcp().set_nodelay(true)?;
        stream
            .tcp()
            .set_write_timeout(Some(remaining(deadline, "the opening handshake request to be sent")?))?;
        stream.write_all(&head).map_err(|e| io_error(e, "the opening handshake request to be sent"))?;
        let (response, after_head) = read_response_head(&mut stream, deadline)?;
        // RFC 6455 §4.1: a response that fails these checks MUST _Fail the WebSocket
        // Connection_; no connection exists yet, so dropping the stream closes TCP.
        let selected = verify_response(&response, &request).map_err(Error::Handshake)?;
        stream.tcp().set_write_timeout(options.write_timeout)?;

        let mut client = WsClient {
            stream,
            conn: WsConn::with_deflate(Role::Client, options.limits, selected.deflate),
            protocol: selected.protocol,
            out: Output::new(),
            pending: Vec::new(),
            codec: Codec::default(),
            events: VecDeque::new(),
            failure: None,
            tcp_done: false,
            read_buf: vec![0; READ_CHUNK_BYTES],
            socket_read_timeout: Some(Duration::ZERO), // unknown: set on the first read
            read_timeout: options.read_timeout,
            close_timeout: options.close_timeout,
        };
        // Frames the server sent right behind its 101 arrived in the same reads as the head.
        client.pending = after_head;
        Ok(client)
    }

    /// The permessage-deflate parameters the server accepted, if any (RFC 7692).
    pub fn deflate(&self) -> Option<PerMessageDeflate> {
        self.conn.deflate()
    }

    /// The subprotocol the server selected, if any (§4.1, `Sec-WebSocket-Protocol`).
    pub fn protocol(&self) -> Option<&str> {
        self.protocol.as_deref()
    }

    /// Changes how long one [`WsClient::recv`] waits; `None` waits without end.
    pub fn set_read_timeout(&mut self, timeout: Option<Duration>) {
        self.read_timeout = timeout;
    }

    /// Sends one message as one frame, masked with a fresh random key (§5.3), and writes it out
    /// before returning. Fails with [`Error::Closed`] once our close frame was sent. Next:
    /// `recv` for answers.
    pub fn send(&mut self, msg: &Message) -> Result<(), Error> {
        self.check_usable()?;
        self.conn
            .send_message_compressed(msg, &mut random_mask, &mut self.codec, &mut self.out)
            .map_err(send_error)?;
        self.flush()
    }

    /// Sends a ping (at most 125 bytes of payload, §5.5); the server's pong comes back as
    /// [`Event::Pong`] from `recv`.
    pub fn send_ping(&mut self, payload: &[u8]) -> Result<(), Error> {
        self.check_usable()?;
        self.conn.send_ping(payload, &mut random_mask, &mut self.out).map_err(send_error)?;
        self.flush()
    }

    /// Reads until the server's next event: a message, a ping (its pong is already sent), a
    /// pong, or the server's close (the echo is already sent; the client then waits up to
    /// [`WsOptions::close_timeout`] for the server to close TCP, §7.1.1).
    ///
    /// Errors: [`Error::Timeout`] after [`WsOptions::read_timeout`] with nothing complete (the
    /// connection stays usable); [`Error::Protocol`] when the server broke RFC 6455 (the client
    /// has sent its close frame with the matching code and closed TCP);
    /// [`Error::AbnormalClosure`] when TCP ended without a close frame; [`Error::Closed`] after
    /// the connection ended.
    pub fn recv(&mut self) -> Result<Event, Error> {
        // Bounded: each turn returns, or reads at least one byte, within the read timeout.
        loop {
            if let Some(event) = self.events.pop_front() {
                if matches!(event, Event::Close(_)) {
                    self.finish_tcp();
                }
                return Ok(event);
            }
            if let Some(error) = self.failure.take() {
                // RFC 6455 §7.1.7: after a failure the endpoint "MUST NOT continue to attempt to
                // process data"; half-closing tells the server at once that nothing follows our
                // close frame, then the client waits briefly for the server's end of TCP.
                let _ = self.stream.shutdown(Shutdown::Write);
                self.finish_tcp();
                return Err(Error::Protocol(error));
            }
            if !self.pending.is_empty() {
                self.feed_pending()?;
                continue;
            }
            if self.tcp_done || self.conn.is_closed() {
                return Err(Error::Closed);
            }
            let n = self.read_some(self.read_timeout, "a WebSocket frame")?;
            if n == 0 {
                self.tcp_done = true;
                return Err(Error::AbnormalClosure);
            }
            self.feed_read_buf(n)?;
        }
    }

    /// Performs the closing handshake (§7.1.2): sends a close frame with `code` and `reason`
    /// (at most 123 bytes), reads until the server's close frame, discarding messages that
    /// still arrive, then waits for the server to close TCP (§7.1.1) and closes it too, all
    /// within [`WsOptions::close_timeout`].
    ///
    /// `Ok` when the server's close frame arrived (also when it had arrived before this call).
    /// Errors: [`Error::Send`] for a code that must not be sent (1005, 1006, 1015) or a long
    /// reason (nothing sent); [`Error::Timeout`] or [`Error::AbnormalClosure`] when the server
    /// did not answer with a close frame (TCP is closed anyway); [`Error::Closed`] when the
    /// connection had already ended otherwise.
    pub fn close(&mut self, code: CloseCode, reason: &str) -> Result<(), Error> {
        if self.conn.close_received() {
            self.finish_tcp();
            return Ok(());
        }
        self.check_usable()?;
        let frame = CloseFrame { code, reason: reason.to_string() };
        self.conn.send_close(Some(frame), &mut random_mask, &mut self.out).map_err(send_error)?;
        self.flush()?;
        let deadline = Instant::now() + self.close_timeout;
        let result = self.await_close(deadline);
        if matches!(result, Err(Error::Protocol(_))) {
            // Failed while closing (§7.1.7): nothing follows our close frame.
            let _ = self.stream.shutdown(Shutdown::Write);
        }
        self.finish_tcp_by(deadline);
        result
    }

    /// Starts the closing handshake (§7.1.2) without waiting: sends a close frame with `code`
    /// and `reason` (at most 123 bytes). Unlike [`WsClient::close`], messages that still arrive
    /// are not discarded: call [`WsClient::recv`] until it returns [`Event::Close`] (the
    /// server's answer; TCP is then ended as in `recv`) or an error. Fails like `close` for a
    /// code that must not be sent or a long reason (nothing sent), or [`Error::Closed`].
    pub fn send_close(&mut self, code: CloseCode, reason: &str) -> Result<(), Error> {
        self.check_usable()?;
        let frame = CloseFrame { code, reason: reason.to_string() };
        self.conn.send_close(Some(frame), &mut random_mask, &mut self.out).map_err(send_error)?;
        self.flush()
    }

    /// After our close: reads until the server's close frame or `deadline`.
    fn await_close(&mut self, deadline: Instant) -> Result<(), Error> {
        const WAITING_FOR: &str = "the server's close frame";
        // Bounded: each turn consumes a queued event or reads at least one byte before `deadline`.
        loop {
            // RFC 6455 §7.1.2: after sending a close the endpoint waits for the peer's; data
            // frames may still arrive before it and are dropped here.
            while let Some(event) = self.events.pop_front() {
                if matches!(event, Event::Close(_)) {
                    return Ok(());
                }
            }
            if let Some(error) = self.failure.take() {
                return Err(Error::Protocol(error));
            }
            if !self.pending.is_empty() {
                self.feed_pending()?;
                continue;
            }
            if self.tcp_done {
                return Err(Error::Closed);
            }
            let n = self.read_some(Some(remaining(deadline, WAITING_FOR)?), WAITING_FOR)?;
            if n == 0 {
                self.tcp_done = true;
                return Err(Error::AbnormalClosure);
            }
            self.feed_read_buf(n)?;
        }
    }

    /// Fails unless frames may still be sent.
    fn check_usable(&self) -> Result<(), Error> {
        if self.tcp_done || self.conn.close_sent() {
            return Err(Error::Closed);
        }
        Ok(())
    }

    /// One read into `read_buf` with `timeout`; 0 means EOF. A failure other than a timeout
    /// ends the connection.
    fn read_some(&mut self, timeout: Option<Duration>, waiting_for: &'static str) -> Result<usize, Error> {
        // A zero timeout would mean "no timeout" to the OS, and std refuses it.
        if timeout.is_some_and(|t| t.is_zero()) {
            return Err(Error::Timeout { waiting_for });
        }
        if self.socket_read_timeout != timeout {
            self.stream.tcp().set_read_timeout(timeout)?;
            self.socket_read_timeout = timeout;
        }
        loop {
            match self.stream.read(&mut self.read_buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let error = io_error(e, waiting_for);
                    if !matches!(error, Error::Timeout { .. }) {
                        self.tcp_done = true;
                    }
                    return Err(error);
                }
            }
        }
    }

    /// Feeds the first `n` bytes of `read_buf` to the core (called with nothing pending).
    fn feed_read_buf(&mut self, n: usize) -> Result<(), Error> {
        let mut buf = std::mem::take(&mut self.read_buf);
        let result = self.feed(&mut buf[..n]);
        self.read_buf = buf;
        result
    }

    /// Feeds the bytes left behind the last message.
    fn feed_pending(&mut self) -> Result<(), Error> {
        let mut pending = std::mem::take(&mut self.pending);
        let result = self.feed(&mut pending);
        if self.pending.is_empty() {
            // Keep the allocation when nothing new was left behind.
            pending.clear();
            self.pending = pending;
        }
        result
    }

    /// Hands received bytes to the core up to the first complete message, queues the events,
    /// keeps the bytes after that message in `pending`, and writes the core's automatic replies
    /// (pongs, the close echo, the close frame of a failure).
    fn feed(&mut self, input: &mut [u8]) -> Result<(), Error> {
        let mut events = Vec::new();
        // One message at a time: the application takes (and may answer) it before later
        // frames are decoded, so a message followed by a faulty frame is delivered and can be
        // echoed before the failure's close frame goes out.
        match self.conn.handle_input_until_message(
            input,
            &mut random_mask,
            &mut self.codec,
            &mut events,
            &mut self.out,
        ) {
            Ok((used, message)) => {
                self.events.extend(events);
                if let Some(message) = message {
                    self.events.push_back(Event::Message(message.as_message_ref().to_message()));
                }
                self.pending.extend_from_slice(&input[used..]);
            }
            // On a peer fault the core has failed the connection: its close frame (1002, 1007
            // or 1009) is queued and further input is discarded (§7.1.7).
            Err(error) => {
                self.events.extend(events);
                self.failure = Some(error);
            }
        }
        match self.flush() {
            // The server may have closed TCP already after breaking the protocol; the close
            // frame was best effort, the protocol error is what the caller must learn.
            Err(_) if self.failure.is_some() => Ok(()),
            result => result,
        }
    }

    /// Writes everything the core queued. A failed write ends the connection: a frame may be
    /// half sent.
    fn flush(&mut self) -> Result<(), Error> {
        // Bounded: each turn writes at least one byte or returns.
        while !self.out.is_empty() {
            let mut slices = [IoSlice::new(&[]); 8];
            let count = self.out.io_slices(&mut slices);
            match self.stream.write_vectored(&slices[..count]) {
                Ok(0) => {
                    self.tcp_done = true;
                    return Err(Error::Io(io::ErrorKind::WriteZero.into()));
                }
                Ok(written) => self.out.consume(written),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.tcp_done = true;
                    let _ = self.stream.shutdown(Shutdown::Both);
                    return Err(io_error(e, "the server to accept our frames"));
                }
            }
        }
        Ok(())
    }

    /// Ends TCP after the closing handshake or a failure, waiting at most `close_timeout`.
    fn finish_tcp(&mut self) {
        let deadline = Instant::now() + self.close_timeout;
        self.finish_tcp_by(deadline);
    }

    /// Waits until `deadline` for the server to close TCP, discarding input, then closes it.
    fn finish_tcp_by(&mut self, deadline: Instant) {
        if self.tcp_done {
            return;
        }
        // RFC 6455 §7.1.1: "The underlying TCP connection, in most normal cases, SHOULD be
        // closed first by the server, so that it holds the TIME_WAIT state and not the client";
        // the client waits for that, and closes it itself when it takes too long.
        // Bounded: each turn reads at least one byte before `deadline`, or ends.
        while let Ok(left) = remaining(deadline, "the server to close TCP") {
            match self.read_some(Some(left), "the server to close TCP") {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        let _ = self.stream.shutdown(Shutdown::Both);
        self.tcp_done = true;
    }
}

/// Sending after our close is [`Error::Closed`]; other refusals are caller misuse.
fn send_error(e: SendError) -> Error {
    match e {
        SendError::CloseSent => Error::Closed,
        e => Error::Send(e),
    }
}
