//! One WebSocket connection after the handshake: bytes in, events and reply bytes out.
//!
//! Implements, for the server and the client role:
//! [§5.1](https://www.rfc-editor.org/rfc/rfc6455#section-5.1) (who masks),
//! [§5.2](https://www.rfc-editor.org/rfc/rfc6455#section-5.2) (RSV bits),
//! [§5.4](https://www.rfc-editor.org/rfc/rfc6455#section-5.4) (fragmentation, control frames
//! between fragments), [§5.5](https://www.rfc-editor.org/rfc/rfc6455#section-5.5) (close, ping,
//! pong), [§5.6](https://www.rfc-editor.org/rfc/rfc6455#section-5.6) and
//! [§8.1](https://www.rfc-editor.org/rfc/rfc6455#section-8.1) (text is UTF-8, checked as it
//! arrives), [§7.1.7](https://www.rfc-editor.org/rfc/rfc6455#section-7.1.7) (Fail the WebSocket
//! Connection) and [§10.4](https://www.rfc-editor.org/rfc/rfc6455#section-10.4) (size limits,
//! checked against declared lengths before memory is reserved).
//!
//! Does not: touch the socket or decide when TCP closes (the owner closes it once
//! [`WsConn::is_closed`]; the server first, §7.1.1), keep time (close and ping deadlines belong to
//! the owner), draw mask keys (the `mask` argument does), fragment outgoing messages, coalesce
//! pongs (every ping gets its pong, so output is the same however input is split; the owner's
//! slow-consumer bound on [`Output`] stops a peer that pings without reading).
//!
//! Memory: an idle connection holds no buffer. A whole unfragmented data frame found in the
//! caller's input is unmasked there in place ([`WsConn::handle_input_until_message`]); a message
//! buffer exists only while a fragmented or split data message is open, sized from declared frame
//! lengths within [`Limits::max_message_bytes`]; a control payload buffer holds at most 125 bytes
//! while a control frame is read.

use std::fmt;
use std::sync::Arc;

use crate::output::Output;
use crate::ws::close::{encode_close_payload, parse_close_payload, CloseFrame, MAX_CLOSE_REASON_BYTES};
use crate::ws::frame::{encode_frame, FrameHeader, OpCode, MAX_CONTROL_PAYLOAD_BYTES, MAX_HEADER_BYTES};
use crate::ws::mask::apply_mask;
use crate::ws::utf8::Utf8Validator;
use crate::ws::{Error, Limits, Role};

/// A complete data message (§5.6), reassembled from its fragments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A text message: valid UTF-8.
    Text(String),
    /// A binary message.
    Binary(Vec<u8>),
}

impl Message {
    /// The message borrowed, as [`WsConn::send_message`] takes it.
    pub fn as_message_ref(&self) -> MessageRef<'_> {
        match self {
            Message::Text(text) => MessageRef::Text(text),
            Message::Binary(bytes) => MessageRef::Binary(bytes),
        }
    }
}

/// A complete data message (§5.6), borrowed: from the input it was unmasked in, from a
/// [`Message`], or from the caller's own bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageRef<'a> {
    /// A text message: valid UTF-8.
    Text(&'a str),
    /// A binary message.
    Binary(&'a [u8]),
}

impl MessageRef<'_> {
    /// The opcode of its (unfragmented) frame and its payload.
    fn frame_parts(&self) -> (OpCode, &[u8]) {
        match self {
            MessageRef::Text(text) => (OpCode::Text, text.as_bytes()),
            MessageRef::Binary(bytes) => (OpCode::Binary, bytes),
        }
    }

    /// An owned copy.
    pub fn to_message(&self) -> Message {
        match self {
            MessageRef::Text(text) => Message::Text((*text).to_owned()),
            MessageRef::Binary(bytes) => Message::Binary(bytes.to_vec()),
        }
    }
}

impl<'a> From<&'a Message> for MessageRef<'a> {
    fn from(message: &'a Message) -> Self {
        message.as_message_ref()
    }
}

/// A data message completed by [`WsConn::handle_input_until_message`].
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming<'a> {
    /// One whole unfragmented frame found in the input, unmasked there in place: no copy, no
    /// allocation.
    InPlace(MessageRef<'a>),
    /// Reassembled in a message buffer: the message was fragmented (§5.4) or its frame was
    /// split across reads.
    Assembled(Message),
}

impl Incoming<'_> {
    /// The message, borrowed.
    pub fn as_message_ref(&self) -> MessageRef<'_> {
        match self {
            Incoming::InPlace(message) => *message,
            Incoming::Assembled(message) => message.as_message_ref(),
        }
    }
}

/// What the peer sent, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A complete data message.
    Message(Message),
    /// A ping with its payload; the pong was already queued (unless our close was sent).
    Ping(Vec<u8>),
    /// A pong with its payload, answered or unsolicited (§5.5.3); useful for heartbeats.
    Pong(Vec<u8>),
    /// The peer's close frame: its code and reason, or `None` for an empty body. Our close was
    /// queued as an echo if we had not sent one; [`WsConn::is_closed`] is now true.
    Close(Option<CloseFrame>),
}

/// A send the caller must not make; nothing was queued. Peer faults are [`Error`]s instead.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendError {
    /// Our close frame was already sent (or the connection failed): §5.5.1, nothing may follow it.
    CloseSent,
    /// A ping payload over 125 bytes or a close reason over 123 bytes (§5.5).
    ControlPayloadTooLong,
    /// A close code that must not be sent, e.g. 1005, 1006, 1015 (§7.4.1).
    InvalidCloseCode(u16),
    /// A prepared (unmasked) frame in the client role, which must mask every frame (§5.3).
    PreparedFrameInClientRole,
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::CloseSent => f.write_str("nothing may be sent after a close frame (RFC 6455 §5.5.1)"),
            SendError::ControlPayloadTooLong => {
                f.write_str("control frame payload over 125 bytes (close reason over 123) (§5.5)")
            }
            SendError::InvalidCloseCode(code) => {
                write!(f, "close code {code} must not be sent (§7.4)")
            }
            SendError::PreparedFrameInClientRole => {
                f.write_str("a client must mask every frame with a fresh key (§5.3)")
            }
        }
    }
}

impl std::error::Error for SendError {}

/// A data message between its first and its final fragment.
#[derive(Debug)]
struct OpenMessage {
    /// Text (validated as it arrives) or binary.
    text: bool,
    /// The unmasked payload so far.
    data: Vec<u8>,
    /// UTF-8 state across frame and read boundaries (text only).
    utf8: Utf8Validator,
}

/// The three control opcodes (§5.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Control {
    Close,
    Ping,
    Pong,
}

/// Where the reader is in the byte stream.
#[derive(Debug)]
enum ReadState {
    /// Collecting a frame header (at most 14 bytes). Next: `Data` or `Control` once complete.
    Header { buf: [u8; MAX_HEADER_BYTES], len: usize },
    /// Reading a data frame's payload into its message. Next: `Header` when the payload ends.
    Data { fin: bool, mask: Option<[u8; 4]>, payload_len: u64, read: u64, message: OpenMessage },
    /// Reading a control frame's payload (at most 125 bytes). Next: `Header`.
    Control { control: Control, mask: Option<[u8; 4]>, payload_len: usize, payload: Vec<u8> },
}

impl ReadState {
    fn header() -> Self {
        ReadState::Header { buf: [0; MAX_HEADER_BYTES], len: 0 }
    }
}

/// What one [`WsConn::step`] did.
enum Progress {
    /// `input` was empty.
    Exhausted,
    /// At least one byte or one finished frame, no message.
    Advanced,
    /// A data message completed.
    Message(Message),
}

/// Where a whole unfragmented data frame lies in the input (see [`WsConn::whole_frame`]).
struct WholeFrame {
    text: bool,
    mask: Option<[u8; 4]>,
    /// The payload's bytes in the input.
    payload: std::ops::Range<usize>,
}

/// The state of one WebSocket connection, either role.
///
/// Feed received bytes to [`WsConn::handle_input`]; send with the `send_*` methods; write what
/// lands in the [`Output`]; close TCP once [`WsConn::is_closed`].
#[derive(Debug)]
pub struct WsConn {
    role: Role,
    limits: Limits,
    /// Mid-frame state, out of line: `None` between frames (every idle connection), so a
    /// connection carries one pointer, not the header buffer and the payload being read.
    read: Option<Box<ReadState>>,
    /// A fragmented message waiting for its next data frame (control frames may come between);
    /// boxed for the same reason.
    message: Option<Box<OpenMessage>>,
    close_sent: bool,
    close_received: bool,
    failed: bool,
}

impl WsConn {
    /// A connection whose opening handshake just completed.
    pub fn new(role: Role, limits: Limits) -> Self {
        Self {
            role,
            limits,
            read: None,
            message: None,
            close_sent: false,
            close_received: false,
            failed: false,
        }
    }

    /// Consumes all of `input`: appends the events it completes to `events` and queues automatic
    /// replies in `out` (a pong for each ping, with the same payload; the echo of a close).
    ///
    /// `mask` gives a fresh key for each frame sent in the client role; the server role never
    /// calls it. Input after the peer's close or after a failure is discarded. On a peer fault
    /// the connection has already failed itself (its close frame is queued in `out`) and the
    /// error is returned for logging. Next: write `out`; close TCP once [`WsConn::is_closed`].
    ///
    /// An owner that answers messages (an echo) should use
    /// [`WsConn::handle_input_until_message`] instead, so its answers keep their place in `out`.
    pub fn handle_input(
        &mut self,
        input: &[u8],
        mask: &mut dyn FnMut() -> [u8; 4],
        events: &mut Vec<Event>,
        out: &mut Output,
    ) -> Result<(), Error> {
        let mut input = input;
        while !input.is_empty() {
            let (used, message) = self.read_until_message(input, mask, events, out)?;
            if let Some(message) = message {
                events.push(Event::Message(message));
            }
            input = &input[used..];
        }
        Ok(())
    }

    /// Like [`WsConn::handle_input`], but returns after the first data message it completes,
    /// with how many bytes of `input` it consumed (all of them when no message completes, or
    /// when the input is discarded after the peer's close or a failure). The message is not put
    /// in `events` but returned; control frames still are.
    ///
    /// An owner that answers messages calls it in a loop, answering each message before feeding
    /// the rest: its answer then goes out before anything the later frames cause (a pong, the
    /// echo of a close, the close frame of a failure), however the input was split into reads.
    /// Without this, a message followed in the same read by a frame that fails the connection
    /// could not be answered: the failure's close frame would already be queued (§5.5.1).
    ///
    /// A whole unfragmented data frame found in `input` is unmasked in place there and returned
    /// borrowed ([`Incoming::InPlace`]): no copy and no allocation. `input` is changed only
    /// within such frames, which are consumed. Fragmented messages, and frames split across
    /// calls, are reassembled in a buffer ([`Incoming::Assembled`]); either way the same
    /// messages, events and output result. Next: answer the message, then call again with the
    /// rest of `input`.
    pub fn handle_input_until_message<'a>(
        &mut self,
        input: &'a mut [u8],
        mask: &mut dyn FnMut() -> [u8; 4],
        events: &mut Vec<Event>,
        out: &mut Output,
    ) -> Result<(usize, Option<Incoming<'a>>), Error> {
        let mut pos = 0;
        // RFC 6455 §7.1.7: after failing, the endpoint "MUST NOT continue to attempt to process
        // data"; after the peer's close nothing more may come (§5.5.1).
        while !(self.failed || self.close_received) && pos < input.len() {
            if let Some(frame) = self.whole_frame(&input[pos..]) {
                let payload = pos + frame.payload.start..pos + frame.payload.end;
                let input: &'a mut [u8] = input;
                if let Some(key) = frame.mask {
                    apply_mask(&mut input[payload.clone()], key, 0);
                }
                let input: &'a [u8] = input;
                let bytes = &input[payload.clone()];
                let message = if frame.text {
                    // RFC 6455 §8.1: invalid UTF-8 MUST fail the connection (1007).
                    match std::str::from_utf8(bytes) {
                        Ok(text) => MessageRef::Text(text),
                        Err(_) => {
                            let error = Error::InvalidUtf8;
                            self.fail(&error, mask, out);
                            return Err(error);
                        }
                    }
                } else {
                    MessageRef::Binary(bytes)
                };
                return Ok((payload.end, Some(Incoming::InPlace(message))));
            }
            let mut rest = &input[pos..];
            let progress = self.step(&mut rest, mask, events, out)?;
            pos = input.len() - rest.len();
            match progress {
                Progress::Message(message) => return Ok((pos, Some(Incoming::Assembled(message)))),
                Progress::Advanced => {}
                Progress::Exhausted => break,
            }
        }
        Ok((input.len(), None))
    }

    /// [`WsConn::handle_input_until_message`] without unmasking in place: the first data
    /// message of `input` is reassembled and returned with how many bytes it took.
    fn read_until_message(
        &mut self,
        input: &[u8],
        mask: &mut dyn FnMut() -> [u8; 4],
        events: &mut Vec<Event>,
        out: &mut Output,
    ) -> Result<(usize, Option<Message>), Error> {
        let mut rest = input;
        // RFC 6455 §7.1.7 and §5.5.1, as in `handle_input_until_message`.
        while !(self.failed || self.close_received) {
            match self.step(&mut rest, mask, events, out)? {
                Progress::Message(message) => return Ok((input.len() - rest.len(), Some(message))),
                Progress::Advanced => {}
                Progress::Exhausted => break,
            }
        }
        Ok((input.len(), None))
    }

    /// A whole, final, unfragmented text or binary frame at the start of `input` that every
    /// rule of [`WsConn::start_frame`] accepts, while no frame or message is in progress: the
    /// frame that can be unmasked in place. Anything else (an error included) is `None` and
    /// goes through [`WsConn::step`], which gives the same result byte by byte.
    fn whole_frame(&self, input: &[u8]) -> Option<WholeFrame> {
        if self.read.is_some() || self.message.is_some() {
            return None;
        }
        let (header, used) = FrameHeader::parse(input).ok()??;
        let masked_as_required = header.mask.is_some() == (self.role == Role::Server);
        let accepted = header.fin
            && header.rsv == 0
            && matches!(header.opcode, OpCode::Text | OpCode::Binary)
            && masked_as_required
            && header.payload_len <= self.limits.max_frame_payload_bytes
            && header.payload_len <= self.limits.max_message_bytes;
        let end = usize::try_from(header.payload_len).ok()?.checked_add(used)?;
        (accepted && end <= input.len()).then_some(WholeFrame {
            text: header.opcode == OpCode::Text,
            mask: header.mask,
            payload: used..end,
        })
    }

    /// [`WsConn::advance`], failing the connection (§7.1.7) when a rule is broken.
    fn step(
        &mut self,
        input: &mut &[u8],
        mask: &mut dyn FnMut() -> [u8; 4],
        events: &mut Vec<Event>,
        out: &mut Output,
    ) -> Result<Progress, Error> {
        let progress = self.advance(input, mask, events, out);
        if let Err(error) = &progress {
            self.fail(error, mask, out);
        }
        progress
    }

    /// Advances the reader by at least one byte of `input` or one finished frame, completing
    /// at most one message.
    fn advance(
        &mut self,
        input: &mut &[u8],
        mask: &mut dyn FnMut() -> [u8; 4],
        events: &mut Vec<Event>,
        out: &mut Output,
    ) -> Result<Progress, Error> {
        if input.is_empty() {
            return Ok(Progress::Exhausted);
        }
        // Between frames (no state kept) a header starts.
        let state = self.read.take().map_or_else(ReadState::header, |state| *state);
        match state {
            ReadState::Header { mut buf, len } => {
                let take = input.len().min(MAX_HEADER_BYTES - len);
                buf[len..len + take].copy_from_slice(&input[..take]);
                match FrameHeader::parse(&buf[..len + take])? {
                    None => {
                        // Fewer than 14 bytes and still incomplete: all of `input` was taken.
                        self.read = Some(Box::new(ReadState::Header { buf, len: len + take }));
                        *input = &input[take..];
                    }
                    Some((header, used)) => {
                        // The previous call could not parse `len` bytes, so `used > len`.
                        *input = input.get(used.saturating_sub(len)..).unwrap_or_default();
                        if let Some(message) = self.start_frame(header, mask, events, out)? {
                            return Ok(Progress::Message(message));
                        }
                    }
                }
            }
            ReadState::Data { fin, mask: key, payload_len, read, mut message } => {
                let take =
                    usize::try_from(payload_len.saturating_sub(read)).unwrap_or(usize::MAX).min(input.len());
                let start = message.data.len();
                message.data.extend_from_slice(&input[..take]);
                *input = &input[take..];
                let arrived = &mut message.data[start..];
                if let Some(key) = key {
                    apply_mask(arrived, key, (read % 4) as usize);
                }
                if message.text {
                    // RFC 6455 §8.1: invalid UTF-8 MUST fail the connection; checked as bytes
                    // arrive so it fails at the first impossible byte (1007).
                    message.utf8.feed(arrived)?;
                }
                let read = read + take as u64;
                if read == payload_len {
                    if let Some(message) = self.finish_data(fin, message)? {
                        return Ok(Progress::Message(message));
                    }
                } else {
                    self.read =
                        Some(Box::new(ReadState::Data { fin, mask: key, payload_len, read, message }));
                }
            }
            ReadState::Control { control, mask: key, payload_len, mut payload } => {
                let start = payload.len();
                let take = payload_len.saturating_sub(start).min(input.len());
                payload.extend_from_slice(&input[..take]);
                *input = &input[take..];
                if let Some(key) = key {
                    apply_mask(&mut payload[start..], key, start);
                }
                if payload.len() == payload_len {
                    self.finish_control(control, payload, mask, events, out)?;
                } else {
                    self.read =
                        Some(Box::new(ReadState::Control { control, mask: key, payload_len, payload }));
                }
            }
        }
        Ok(Progress::Advanced)
    }

    /// Checks a complete header against the connection's rules and sets up reading its payload;
    /// returns the message an empty final frame completes.
    fn start_frame(
        &mut self,
        header: FrameHeader,
        mask: &mut dyn FnMut() -> [u8; 4],
        events: &mut Vec<Event>,
        out: &mut Output,
    ) -> Result<Option<Message>, Error> {
        // RFC 6455 §5.2: RSV1-3 "MUST be 0 unless an extension is negotiated that defines
        // meanings for non-zero values"; none is.
        if header.rsv != 0 {
            return Err(Error::ReservedBitsSet);
        }
        match (self.role, header.mask) {
            // RFC 6455 §5.1: "The server MUST close the connection upon receiving a frame that
            // is not masked."
            (Role::Server, None) => return Err(Error::UnmaskedClientFrame),
            // RFC 6455 §5.1: "A client MUST close a connection if it detects a masked frame."
            (Role::Client, Some(_)) => return Err(Error::MaskedServerFrame),
            _ => {}
        }
        let control = match header.opcode {
            OpCode::Continuation | OpCode::Text | OpCode::Binary => None,
            OpCode::Close => Some(Control::Close),
            OpCode::Ping => Some(Control::Ping),
            OpCode::Pong => Some(Control::Pong),
        };
        let message = match header.opcode {
            // RFC 6455 §5.4: a fragmented message is a first frame, then continuation frames;
            // a continuation without an open message breaks that order.
            OpCode::Continuation => Some(*self.message.take().ok_or(Error::UnexpectedContinuation)?),
            OpCode::Text | OpCode::Binary => {
                // RFC 6455 §5.4: "The fragments of one message MUST NOT be interleaved between
                // the fragments of another message".
                if self.message.is_some() {
                    return Err(Error::ExpectedContinuation);
                }
                Some(OpenMessage {
                    text: header.opcode == OpCode::Text,
                    data: Vec::new(),
                    utf8: Utf8Validator::new(),
                })
            }
            // RFC 6455 §5.4: "Control frames MAY be injected in the middle of a fragmented
            // message"; the open message stays in `self.message`.
            OpCode::Close | OpCode::Ping | OpCode::Pong => None,
        };
        // RFC 6455 §10.4: "implementations SHOULD impose a limit on frame sizes and the total
        // message size after reassembly"; checked on the declared length, before reserving.
        if header.payload_len > self.limits.max_frame_payload_bytes {
            return Err(Error::FrameTooLarge {
                payload_bytes: header.payload_len,
                max_bytes: self.limits.max_frame_payload_bytes,
            });
        }
        if let Some(mut message) = message {
            let message_bytes = (message.data.len() as u64).saturating_add(header.payload_len);
            if message_bytes > self.limits.max_message_bytes {
                return Err(Error::MessageTooLarge {
                    message_bytes,
                    max_bytes: self.limits.max_message_bytes,
                });
            }
            let max_bytes = usize::try_from(self.limits.max_message_bytes).unwrap_or(usize::MAX);
            // Only on targets with a usize narrower than the limit: such a message cannot be
            // held in memory, so it is too large.
            let needed = usize::try_from(message_bytes).map_err(|_| Error::MessageTooLarge {
                message_bytes,
                max_bytes: self.limits.max_message_bytes,
            })?;
            reserve_bounded(&mut message.data, needed, max_bytes);
            if header.payload_len == 0 {
                return self.finish_data(header.fin, message);
            }
            self.read = Some(Box::new(ReadState::Data {
                fin: header.fin,
                mask: header.mask,
                payload_len: header.payload_len,
                read: 0,
                message,
            }));
        } else if let Some(control) = control {
            // FrameHeader::parse already enforced §5.5: at most 125 bytes.
            let payload_len = header.payload_len.min(MAX_CONTROL_PAYLOAD_BYTES) as usize;
            let payload = Vec::with_capacity(payload_len);
            if payload_len == 0 {
                self.finish_control(control, payload, mask, events, out)?;
                return Ok(None);
            }
            self.read =
                Some(Box::new(ReadState::Control { control, mask: header.mask, payload_len, payload }));
        }
        Ok(None)
    }

    /// A data frame's payload is complete: keep the message open or return it.
    fn finish_data(&mut self, fin: bool, mut message: OpenMessage) -> Result<Option<Message>, Error> {
        if !fin {
            self.message = Some(Box::new(message));
            return Ok(None);
        }
        let message = if message.text {
            // RFC 6455 §8.1: a text message ending inside a code point is not UTF-8.
            message.utf8.finish()?;
            Message::Text(String::from_utf8(message.data).map_err(|_| Error::InvalidUtf8)?)
        } else {
            Message::Binary(message.data)
        };
        Ok(Some(message))
    }

    /// A control frame's payload is complete: answer it and report it.
    fn finish_control(
        &mut self,
        control: Control,
        payload: Vec<u8>,
        mask: &mut dyn FnMut() -> [u8; 4],
        events: &mut Vec<Event>,
        out: &mut Output,
    ) -> Result<(), Error> {
        match control {
            Control::Ping => {
                // RFC 6455 §5.5.2: "Upon receipt of a Ping frame, an endpoint MUST send a Pong
                // frame in response", with "identical Application data" (§5.5.3); §5.5.1: not
                // after our close.
                if !self.close_sent {
                    self.write_control(OpCode::Pong, &payload, mask, out);
                }
                events.push(Event::Ping(payload));
            }
            // RFC 6455 §5.5.3: "A response to an unsolicited Pong frame is not expected."
            Control::Pong => events.push(Event::Pong(payload)),
            Control::Close => {
                let frame = parse_close_payload(&payload)?;
                // RFC 6455 §5.5.1: "If an endpoint receives a Close frame and did not previously
                // send a Close frame, the endpoint MUST send a Close frame in response", typically
                // echoing the status code; an empty body is echoed empty.
                if !self.close_sent {
                    let mut echo = Vec::new();
                    if let Some(frame) = &frame {
                        echo.extend_from_slice(&frame.code.0.to_be_bytes());
                    }
                    self.write_control(OpCode::Close, &echo, mask, out);
                    self.close_sent = true;
                }
                self.close_received = true;
                self.message = None;
                events.push(Event::Close(frame));
            }
        }
        Ok(())
    }

    /// Queues one control frame, masked in the client role.
    fn write_control(
        &self,
        opcode: OpCode,
        payload: &[u8],
        mask: &mut dyn FnMut() -> [u8; 4],
        out: &mut Output,
    ) {
        let key = self.mask_key(mask);
        out.push_with(MAX_HEADER_BYTES + payload.len(), |tail| {
            encode_frame(true, opcode, payload, key, tail)
        });
    }

    /// A fresh key in the client role; `None` in the server role, which never masks (§5.1).
    fn mask_key(&self, mask: &mut dyn FnMut() -> [u8; 4]) -> Option<[u8; 4]> {
        match self.role {
            // RFC 6455 §5.3: the client MUST mask, with "a new masking key" for each frame.
            Role::Client => Some(mask()),
            // RFC 6455 §5.1: "A server MUST NOT mask any frames that it sends to the client."
            Role::Server => None,
        }
    }

    /// Refuses any send after our close frame.
    fn check_open(&self) -> Result<(), SendError> {
        // RFC 6455 §5.5.1: "After sending a Close frame, the endpoint MUST NOT send any further
        // data frames"; nor pings, whose pongs could not be answered.
        if self.close_sent {
            return Err(SendError::CloseSent);
        }
        Ok(())
    }

    /// Queues `msg` (a `&Message` or a [`MessageRef`]) as one unfragmented frame, masked with a
    /// fresh key in the client role, encoded straight into `out`'s owned tail (one copy of the
    /// payload, no allocation when the tail has room). Next: write `out`.
    pub fn send_message<'m>(
        &mut self,
        msg: impl Into<MessageRef<'m>>,
        mask: &mut dyn FnMut() -> [u8; 4],
        out: &mut Output,
    ) -> Result<(), SendError> {
        self.check_open()?;
        let msg = msg.into();
        let (opcode, payload) = msg.frame_parts();
        let key = self.mask_key(mask);
        out.push_with(MAX_HEADER_BYTES + payload.len(), |tail| {
            encode_frame(true, opcode, payload, key, tail)
        });
        Ok(())
    }

    /// Queues a ping (at most 125 bytes of payload, §5.5). The peer's pong arrives as
    /// [`Event::Pong`]. Next: write `out`.
    pub fn send_ping(
        &mut self,
        payload: &[u8],
        mask: &mut dyn FnMut() -> [u8; 4],
        out: &mut Output,
    ) -> Result<(), SendError> {
        self.check_open()?;
        if payload.len() as u64 > MAX_CONTROL_PAYLOAD_BYTES {
            return Err(SendError::ControlPayloadTooLong);
        }
        self.write_control(OpCode::Ping, payload, mask, out);
        Ok(())
    }

    /// Starts the closing handshake (§7.1.2): queues a close frame with `frame`'s code and
    /// reason, or an empty body for `None`. Nothing may be sent afterwards; keep reading until
    /// [`Event::Close`] (then [`WsConn::is_closed`]) or the owner's close deadline.
    pub fn send_close(
        &mut self,
        frame: Option<CloseFrame>,
        mask: &mut dyn FnMut() -> [u8; 4],
        out: &mut Output,
    ) -> Result<(), SendError> {
        self.check_open()?;
        let mut payload = Vec::new();
        if let Some(frame) = &frame {
            // RFC 6455 §7.4.1: 1005, 1006 and 1015 "MUST NOT be set as a status code in a
            // Close control frame by an endpoint".
            if !frame.code.is_valid_on_wire() {
                return Err(SendError::InvalidCloseCode(frame.code.0));
            }
            // RFC 6455 §5.5: control frame payloads MUST be 125 bytes or less.
            if frame.reason.len() > MAX_CLOSE_REASON_BYTES {
                return Err(SendError::ControlPayloadTooLong);
            }
            encode_close_payload(frame, &mut payload);
        }
        self.write_control(OpCode::Close, &payload, mask, out);
        self.close_sent = true;
        Ok(())
    }

    /// Queues a frame encoded once and shared by many connections (fan-out), e.g. with
    /// [`encode_frame`] and no mask key, then `Arc::from`. Server role only: a client must mask
    /// each frame with its own key (§5.3). The caller vouches that `frame` is one whole valid
    /// unmasked data frame. Next: write `out`.
    pub fn send_prepared(&mut self, frame: Arc<[u8]>, out: &mut Output) -> Result<(), SendError> {
        if self.role == Role::Client {
            return Err(SendError::PreparedFrameInClientRole);
        }
        self.check_open()?;
        out.push_shared(frame);
        Ok(())
    }

    /// Fails the connection (§7.1.7): queues a close frame with `error.close_code()` and its
    /// description as the reason, unless our close was already sent, then discards all further
    /// input. [`WsConn::handle_input`] calls it on peer faults; the owner may call it too.
    /// Next: write `out`, then close TCP.
    pub fn fail(&mut self, error: &Error, mask: &mut dyn FnMut() -> [u8; 4], out: &mut Output) {
        // RFC 6455 §7.1.7: the endpoint "SHOULD send a Close frame with an appropriate status
        // code", and MUST NOT send another after its first (§5.5.1).
        if !self.close_sent {
            let frame = CloseFrame { code: error.close_code(), reason: error.to_string() };
            let mut payload = Vec::new();
            encode_close_payload(&frame, &mut payload);
            self.write_control(OpCode::Close, &payload, mask, out);
            self.close_sent = true;
        }
        // RFC 6455 §7.1.7: "MUST NOT continue to attempt to process data (including a
        // responding Close frame) from the remote endpoint"; drop the buffers now.
        self.failed = true;
        self.read = None;
        self.message = None;
    }

    /// True when the connection is over: both close frames went (§7.1.2), or it failed. The
    /// owner then flushes `out` and closes TCP; the server closes first (§7.1.1), a client
    /// waits a while for the server to do so.
    pub fn is_closed(&self) -> bool {
        self.failed || (self.close_sent && self.close_received)
    }

    /// True once our close frame was queued (sent, echoed or sent by [`WsConn::fail`]).
    pub fn close_sent(&self) -> bool {
        self.close_sent
    }

    /// True once the peer's close frame arrived.
    pub fn close_received(&self) -> bool {
        self.close_received
    }
}

/// Makes room for `needed` bytes in total, growing at most to double the capacity and never
/// past `max_bytes` unless `needed` itself is larger (it is not: callers check the limit).
fn reserve_bounded(data: &mut Vec<u8>, needed: usize, max_bytes: usize) {
    if needed <= data.capacity() {
        return;
    }
    let target = needed.max(data.capacity().saturating_mul(2).min(max_bytes));
    data.reserve_exact(target - data.len());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ws::CloseCode;

    const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    /// The server role must never ask for a mask key.
    fn no_mask() -> [u8; 4] {
        panic!("the server role never masks")
    }

    /// Deterministic "fresh" keys for the client role.
    fn counter_mask() -> impl FnMut() -> [u8; 4] {
        let mut n = 0u32;
        move || {
            n = n.wrapping_add(0x0101_0101);
            n.to_be_bytes()
        }
    }

    fn server() -> WsConn {
        WsConn::new(Role::Server, Limits::default())
    }

    fn client() -> WsConn {
        WsConn::new(Role::Client, Limits::default())
    }

    /// A frame as a client sends it: masked with `KEY`.
    fn masked(fin: bool, opcode: OpCode, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_frame(fin, opcode, payload, Some(KEY), &mut out);
        out
    }

    /// A frame as a server sends it: unmasked.
    fn unmasked(fin: bool, opcode: OpCode, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_frame(fin, opcode, payload, None, &mut out);
        out
    }

    fn close_payload(code: u16, reason: &str) -> Vec<u8> {
        let mut p = code.to_be_bytes().to_vec();
        p.extend_from_slice(reason.as_bytes());
        p
    }

    /// What a run produced: events, output bytes, and the first error.
    type Run = (Vec<Event>, Vec<u8>, Option<Error>);

    /// Feeds `chunks` in order to `conn` (keys from `counter_mask` in the client role).
    fn feed(conn: &mut WsConn, chunks: &[&[u8]]) -> Run {
        let mut events = Vec::new();
        let mut out = Output::new();
        let mut first_error = None;
        let mut mask = counter_mask();
        for chunk in chunks {
            let result = if conn.role == Role::Server {
                conn.handle_input(chunk, &mut no_mask, &mut events, &mut out)
            } else {
                conn.handle_input(chunk, &mut mask, &mut events, &mut out)
            };
            if let Err(e) = result {
                first_error.get_or_insert(e);
            }
        }
        (events, out.take_vec(), first_error)
    }

    fn feed_server(input: &[u8]) -> Run {
        feed(&mut server(), &[input])
    }

    /// Decodes the frames a conn wrote: (opcode, unmasked payload, was masked).
    fn frames(mut wire: &[u8]) -> Vec<(OpCode, Vec<u8>, bool)> {
        let mut frames = Vec::new();
        while !wire.is_empty() {
            let (h, used) = FrameHeader::parse(wire).unwrap().unwrap();
            let end = used + h.payload_len as usize;
            let mut payload = wire[used..end].to_vec();
            if let Some(key) = h.mask {
                apply_mask(&mut payload, key, 0);
            }
            assert!(h.fin);
            frames.push((h.opcode, payload, h.mask.is_some()));
            wire = &wire[end..];
        }
        frames
    }

    /// Asserts that `out` is exactly one close frame with `code`.
    fn assert_failed_with(run: &Run, code: u16) {
        let (_, out, error) = run;
        let error = error.as_ref().expect("an error");
        assert_eq!(error.close_code(), CloseCode(code));
        let sent = frames(out);
        assert_eq!(sent.len(), 1, "{sent:?}");
        assert_eq!(sent[0].0, OpCode::Close);
        assert_eq!(&sent[0].1[..2], &code.to_be_bytes());
    }

    // §5.7 examples through a connection.

    #[test]
    fn rfc6455_5_7_examples_received_by_client() {
        let mut input = vec![0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
        input.extend_from_slice(&[0x01, 0x03, 0x48, 0x65, 0x6c, 0x80, 0x02, 0x6c, 0x6f]);
        input.extend_from_slice(&[0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]);
        input.extend_from_slice(&[0x82, 0x7E, 0x01, 0x00]);
        input.extend_from_slice(&[7; 256]);
        input.extend_from_slice(&[0x82, 0x7F, 0, 0, 0, 0, 0, 1, 0, 0]);
        input.extend_from_slice(&[9; 65536]);
        let (events, out, error) = feed(&mut client(), &[&input]);
        assert_eq!(error, None);
        assert_eq!(
            events,
            vec![
                Event::Message(Message::Text("Hello".into())),
                Event::Message(Message::Text("Hello".into())),
                Event::Ping(b"Hello".to_vec()),
                Event::Message(Message::Binary(vec![7; 256])),
                Event::Message(Message::Binary(vec![9; 65536])),
            ]
        );
        // The client's pong is masked, with the ping's payload.
        assert_eq!(frames(&out), vec![(OpCode::Pong, b"Hello".to_vec(), true)]);
    }

    #[test]
    fn rfc6455_5_7_masked_hello_and_pong_received_by_server() {
        let hello = [0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58];
        let pong = [0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58];
        let (events, out, error) = feed(&mut server(), &[&hello, &pong]);
        assert_eq!(error, None);
        assert_eq!(
            events,
            vec![Event::Message(Message::Text("Hello".into())), Event::Pong(b"Hello".to_vec()),]
        );
        assert!(out.is_empty());
    }

    #[test]
    fn rfc6455_5_7_server_sends_unmasked_examples() {
        let mut conn = server();
        let mut out = Output::new();
        conn.send_message(&Message::Text("Hello".into()), &mut no_mask, &mut out).unwrap();
        conn.send_ping(b"Hello", &mut no_mask, &mut out).unwrap();
        conn.send_message(&Message::Binary(vec![0; 256]), &mut no_mask, &mut out).unwrap();
        let wire = out.take_vec();
        assert_eq!(&wire[..7], &[0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]);
        assert_eq!(&wire[7..14], &[0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]);
        assert_eq!(&wire[14..18], &[0x82, 0x7E, 0x01, 0x00]);
        assert_eq!(wire.len(), 18 + 256);
    }

    // One test per rule.

    #[test]
    fn rfc6455_5_2_rsv_bits_without_extension_fail_1002() {
        for rsv in [0x40u8, 0x20, 0x10] {
            let mut frame = masked(true, OpCode::Text, b"x");
            frame[0] |= rsv;
            let run = feed_server(&frame);
            assert_eq!(run.2, Some(Error::ReservedBitsSet));
            assert!(run.0.is_empty());
            assert_failed_with(&run, 1002);
        }
    }

    #[test]
    fn rfc6455_5_2_reserved_opcode_fail_1002() {
        for op in (0x3..=0x7).chain(0xB..=0xF) {
            let run = feed_server(&[0x80 | op, 0x80, 1, 2, 3, 4]);
            assert_eq!(run.2, Some(Error::ReservedOpCode(op)));
            assert_failed_with(&run, 1002);
        }
    }

    #[test]
    fn rfc6455_5_2_payload_length_msb_set_fail_1002() {
        let run = feed_server(&[0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4]);
        assert_eq!(run.2, Some(Error::PayloadLengthMsbSet));
        assert_failed_with(&run, 1002);
    }

    #[test]
    fn rfc6455_5_1_server_fails_unmasked_client_frame_1002() {
        let run = feed_server(&unmasked(true, OpCode::Text, b"Hello"));
        assert_eq!(run.2, Some(Error::UnmaskedClientFrame));
        assert!(run.0.is_empty());
        assert_failed_with(&run, 1002);
    }

    #[test]
    fn rfc6455_5_1_client_fails_masked_server_frame_1002() {
        let run = feed(&mut client(), &[&masked(true, OpCode::Text, b"Hello")]);
        assert_eq!(run.2, Some(Error::MaskedServerFrame));
        assert_failed_with(&run, 1002);
        // The client's close is masked.
        assert!(frames(&run.1)[0].2);
    }

    #[test]
    fn rfc6455_10_4_frame_over_limit_fails_1009_before_allocating() {
        // A header declaring 2^40 bytes and no payload: fails at once, nothing reserved.
        let mut header = Vec::new();
        FrameHeader { fin: true, rsv: 0, opcode: OpCode::Binary, mask: Some(KEY), payload_len: 1 << 40 }
            .encode(&mut header);
        let run = feed_server(&header);
        assert_eq!(run.2, Some(Error::FrameTooLarge { payload_bytes: 1 << 40, max_bytes: 65536 }));
        assert_failed_with(&run, 1009);

        let run = feed_server(&masked(true, OpCode::Binary, &[0; 65537]));
        assert!(matches!(run.2, Some(Error::FrameTooLarge { .. })));
        let run = feed_server(&masked(true, OpCode::Binary, &[0; 65536]));
        assert_eq!(run.2, None);
    }

    #[test]
    fn rfc6455_10_4_message_over_limit_fails_1009() {
        let limits = Limits { max_frame_payload_bytes: 1000, max_message_bytes: 1500 };
        let mut input = masked(false, OpCode::Binary, &[1; 1000]);
        input.extend(masked(true, OpCode::Continuation, &[2; 501]));
        let run = feed(&mut WsConn::new(Role::Server, limits), &[&input]);
        assert_eq!(run.2, Some(Error::MessageTooLarge { message_bytes: 1501, max_bytes: 1500 }));
        assert_failed_with(&run, 1009);

        let mut input = masked(false, OpCode::Binary, &[1; 1000]);
        input.extend(masked(true, OpCode::Continuation, &[2; 500]));
        let run = feed(&mut WsConn::new(Role::Server, limits), &[&input]);
        assert_eq!(run.2, None);
        assert_eq!(run.0.len(), 1);
    }

    #[test]
    fn rfc6455_5_4_continuation_without_open_message_fail_1002() {
        let run = feed_server(&masked(true, OpCode::Continuation, b"lo"));
        assert_eq!(run.2, Some(Error::UnexpectedContinuation));
        assert_failed_with(&run, 1002);
        // Also right after a complete message.
        let mut input = masked(true, OpCode::Text, b"Hel");
        input.extend(masked(true, OpCode::Continuation, b"lo"));
        let run = feed_server(&input);
        assert_eq!(run.2, Some(Error::UnexpectedContinuation));
        assert_eq!(run.0, vec![Event::Message(Message::Text("Hel".into()))]);
    }

    #[test]
    fn rfc6455_5_4_data_frame_while_message_open_fail_1002() {
        let mut input = masked(false, OpCode::Text, b"Hel");
        input.extend(masked(true, OpCode::Binary, b"lo"));
        let run = feed_server(&input);
        assert_eq!(run.2, Some(Error::ExpectedContinuation));
        assert!(run.0.is_empty());
        assert_failed_with(&run, 1002);
    }

    #[test]
    fn rfc6455_5_4_control_frames_between_fragments() {
        let mut input = masked(false, OpCode::Text, b"Hel");
        input.extend(masked(true, OpCode::Ping, b"p"));
        input.extend(masked(false, OpCode::Continuation, b""));
        input.extend(masked(true, OpCode::Pong, b"q"));
        input.extend(masked(true, OpCode::Continuation, b"lo"));
        let (events, out, error) = feed_server(&input);
        assert_eq!(error, None);
        assert_eq!(
            events,
            vec![
                Event::Ping(b"p".to_vec()),
                Event::Pong(b"q".to_vec()),
                Event::Message(Message::Text("Hello".into())),
            ]
        );
        assert_eq!(frames(&out), vec![(OpCode::Pong, b"p".to_vec(), false)]);
    }

    #[test]
    fn rfc6455_5_5_control_frame_max_125_fail_1002() {
        let mut frame = vec![0x89, 0x80 | 126, 0, 126];
        frame.extend_from_slice(&KEY);
        frame.extend_from_slice(&[0; 126]);
        let run = feed_server(&frame);
        assert_eq!(run.2, Some(Error::ControlFrameTooLong));
        assert_failed_with(&run, 1002);
        // 125 bytes is fine.
        let run = feed_server(&masked(true, OpCode::Ping, &[5; 125]));
        assert_eq!(run.2, None);
        assert_eq!(frames(&run.1), vec![(OpCode::Pong, vec![5; 125], false)]);
    }

    #[test]
    fn rfc6455_5_5_fragmented_control_frame_fail_1002() {
        let run = feed_server(&masked(false, OpCode::Ping, b"x"));
        assert_eq!(run.2, Some(Error::FragmentedControlFrame));
        assert_failed_with(&run, 1002);
    }

    #[test]
    fn rfc6455_8_1_invalid_utf8_fails_fast_1007() {
        // The first fragment holds "κόσμε" then ED A0: the connection fails before the rest.
        let bad = b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited";
        let first = masked(false, OpCode::Text, bad);
        let mut conn = server();
        // Feed only the header and the payload up to A0, inside one unfinished frame.
        let header_len = 6;
        let run = feed(&mut conn, &[&first[..header_len + 13]]);
        assert_eq!(run.2, Some(Error::InvalidUtf8));
        assert_failed_with(&run, 1007);
        assert!(conn.is_closed());
    }

    #[test]
    fn rfc6455_8_1_text_ending_inside_code_point_fail_1007() {
        let mut input = masked(false, OpCode::Text, b"\xce\xba\xe1");
        input.extend(masked(true, OpCode::Continuation, b"\xbd"));
        let run = feed_server(&input);
        assert_eq!(run.2, Some(Error::InvalidUtf8));
        assert_failed_with(&run, 1007);
    }

    #[test]
    fn rfc6455_8_1_code_point_split_across_fragments_is_valid() {
        let text = "κόσμε".as_bytes();
        for cut in 0..=text.len() {
            let mut input = masked(false, OpCode::Text, &text[..cut]);
            input.extend(masked(true, OpCode::Continuation, &text[cut..]));
            let run = feed_server(&input);
            assert_eq!(run.2, None, "cut {cut}");
            assert_eq!(run.0, vec![Event::Message(Message::Text("κόσμε".into()))]);
        }
    }

    #[test]
    fn rfc6455_5_5_2_ping_answered_with_pong_same_payload() {
        let mut input = masked(true, OpCode::Ping, b"one");
        input.extend(masked(true, OpCode::Ping, b""));
        let (events, out, error) = feed_server(&input);
        assert_eq!(error, None);
        assert_eq!(events, vec![Event::Ping(b"one".to_vec()), Event::Ping(vec![])]);
        assert_eq!(frames(&out), vec![(OpCode::Pong, b"one".to_vec(), false), (OpCode::Pong, vec![], false)]);
    }

    #[test]
    fn rfc6455_5_5_3_unsolicited_pong_ignored() {
        let (events, out, error) = feed_server(&masked(true, OpCode::Pong, b"hb"));
        assert_eq!(error, None);
        assert_eq!(events, vec![Event::Pong(b"hb".to_vec())]);
        assert!(out.is_empty());
    }

    #[test]
    fn rfc6455_5_5_1_close_payload_one_byte_fail_1002() {
        let run = feed_server(&masked(true, OpCode::Close, &[3]));
        assert_eq!(run.2, Some(Error::InvalidClosePayload));
        assert_failed_with(&run, 1002);
    }

    #[test]
    fn rfc6455_7_4_invalid_close_code_fail_1002() {
        for code in [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000] {
            let run = feed_server(&masked(true, OpCode::Close, &close_payload(code, "")));
            assert_eq!(run.2, Some(Error::InvalidCloseCode(code)));
            assert_failed_with(&run, 1002);
        }
    }

    #[test]
    fn rfc6455_5_5_1_close_reason_invalid_utf8_fail_1007() {
        let mut payload = close_payload(1000, "");
        payload.extend_from_slice(b"\xce\xba\xed\xa0\x80");
        let run = feed_server(&masked(true, OpCode::Close, &payload));
        assert_eq!(run.2, Some(Error::InvalidCloseReason));
        assert_failed_with(&run, 1007);
    }

    #[test]
    fn rfc6455_5_5_1_close_echoed_with_same_code() {
        let mut conn = server();
        let run = feed(&mut conn, &[&masked(true, OpCode::Close, &close_payload(4000, "bye"))]);
        assert_eq!(run.2, None);
        assert_eq!(
            run.0,
            vec![Event::Close(Some(CloseFrame { code: CloseCode(4000), reason: "bye".into() }))]
        );
        assert_eq!(frames(&run.1), vec![(OpCode::Close, close_payload(4000, ""), false)]);
        assert!(conn.close_received() && conn.close_sent() && conn.is_closed());
    }

    #[test]
    fn rfc6455_5_5_1_empty_close_echoed_empty() {
        let mut conn = server();
        let run = feed(&mut conn, &[&masked(true, OpCode::Close, b"")]);
        assert_eq!(run.0, vec![Event::Close(None)]);
        assert_eq!(frames(&run.1), vec![(OpCode::Close, vec![], false)]);
        assert!(conn.is_closed());
    }

    #[test]
    fn rfc6455_5_5_1_input_after_close_received_is_ignored() {
        let mut input = masked(true, OpCode::Close, &close_payload(1000, ""));
        input.extend(masked(true, OpCode::Ping, b"late"));
        input.extend(masked(true, OpCode::Text, b"late"));
        input.extend([0xFF; 20]);
        let (events, out, error) = feed_server(&input);
        assert_eq!(error, None);
        assert_eq!(events.len(), 1);
        assert_eq!(frames(&out).len(), 1);
    }

    #[test]
    fn rfc6455_5_5_1_nothing_sent_after_close() {
        let mut conn = server();
        let mut out = Output::new();
        let bye = CloseFrame { code: CloseCode::GOING_AWAY, reason: "restart".into() };
        conn.send_close(Some(bye), &mut no_mask, &mut out).unwrap();
        let text = Message::Text("x".into());
        assert_eq!(conn.send_message(&text, &mut no_mask, &mut out), Err(SendError::CloseSent));
        assert_eq!(conn.send_ping(b"", &mut no_mask, &mut out), Err(SendError::CloseSent));
        assert_eq!(conn.send_close(None, &mut no_mask, &mut out), Err(SendError::CloseSent));
        assert_eq!(conn.send_prepared(Arc::from(&[0x81, 0][..]), &mut out), Err(SendError::CloseSent));
        assert_eq!(frames(&out.take_vec()), vec![(OpCode::Close, close_payload(1001, "restart"), false)]);
        // The peer still talks: messages arrive, pings get no pong, its close no echo.
        let mut input = masked(true, OpCode::Text, b"in flight");
        input.extend(masked(true, OpCode::Ping, b"p"));
        input.extend(masked(true, OpCode::Close, &close_payload(1001, "")));
        let (events, wire, error) = feed(&mut conn, &[&input]);
        assert_eq!(error, None);
        assert_eq!(
            events,
            vec![
                Event::Message(Message::Text("in flight".into())),
                Event::Ping(b"p".to_vec()),
                Event::Close(Some(CloseFrame { code: CloseCode::GOING_AWAY, reason: String::new() })),
            ]
        );
        assert!(wire.is_empty());
        assert!(conn.is_closed());
    }

    #[test]
    fn rfc6455_7_1_7_input_discarded_after_fail() {
        let mut conn = server();
        let mut bad = unmasked(true, OpCode::Text, b"x");
        bad.extend(masked(true, OpCode::Ping, b"p"));
        let (events, out, error) = feed(&mut conn, &[&bad]);
        assert_eq!(error, Some(Error::UnmaskedClientFrame));
        assert!(events.is_empty());
        assert_eq!(frames(&out).len(), 1);
        assert!(conn.is_closed());
        // Later input, even a valid close, is not processed and nothing more is sent.
        let later = [masked(true, OpCode::Ping, b"p"), masked(true, OpCode::Close, &close_payload(1000, ""))]
            .concat();
        let (events, out, error) = feed(&mut conn, &[&later]);
        assert_eq!((events, out, error), (vec![], vec![], None));
        assert!(!conn.close_received());
    }

    #[test]
    fn rfc6455_7_1_7_fail_after_close_sent_sends_no_second_close() {
        let mut conn = server();
        let mut out = Output::new();
        conn.send_close(None, &mut no_mask, &mut out).unwrap();
        out.take_vec();
        let run = feed(&mut conn, &[&masked(true, OpCode::Close, &[1])]);
        assert_eq!(run.2, Some(Error::InvalidClosePayload));
        assert!(run.1.is_empty());
        assert!(conn.is_closed());
    }

    #[test]
    fn rfc6455_7_4_1_never_send_1005_1006_1015() {
        for code in [1005, 1006, 1015, 0, 999, 5000] {
            let mut conn = server();
            let mut out = Output::new();
            let frame = CloseFrame { code: CloseCode(code), reason: String::new() };
            assert_eq!(
                conn.send_close(Some(frame), &mut no_mask, &mut out),
                Err(SendError::InvalidCloseCode(code))
            );
            assert!(out.is_empty() && !conn.close_sent());
        }
    }

    #[test]
    fn rfc6455_5_5_control_payload_limits_on_send() {
        let mut conn = server();
        let mut out = Output::new();
        assert_eq!(conn.send_ping(&[0; 126], &mut no_mask, &mut out), Err(SendError::ControlPayloadTooLong));
        let long = CloseFrame { code: CloseCode::NORMAL, reason: "x".repeat(124) };
        assert_eq!(
            conn.send_close(Some(long), &mut no_mask, &mut out),
            Err(SendError::ControlPayloadTooLong)
        );
        assert!(out.is_empty());
        conn.send_ping(&[0; 125], &mut no_mask, &mut out).unwrap();
    }

    #[test]
    fn rfc6455_5_3_prepared_frames_are_server_only() {
        let mut shared = Vec::new();
        encode_frame(true, OpCode::Text, b"fan-out", None, &mut shared);
        let shared: Arc<[u8]> = Arc::from(shared);
        let mut conn = server();
        let mut out = Output::new();
        conn.send_prepared(shared.clone(), &mut out).unwrap();
        assert_eq!(out.take_vec(), shared.to_vec());
        assert_eq!(client().send_prepared(shared, &mut out), Err(SendError::PreparedFrameInClientRole));
    }

    /// A conversation from a client covering every frame kind, fragments and a split code point.
    fn conversation() -> Vec<u8> {
        let text = "héllo κόσμε".as_bytes();
        let mut input = masked(false, OpCode::Text, &text[..2]);
        input.extend(masked(true, OpCode::Ping, b"p1"));
        input.extend(masked(false, OpCode::Continuation, &text[2..9]));
        input.extend(masked(true, OpCode::Continuation, &text[9..]));
        input.extend(masked(true, OpCode::Binary, &[0xB0; 300]));
        input.extend(masked(true, OpCode::Pong, b"hb"));
        input.extend(masked(true, OpCode::Text, b""));
        input.extend(masked(true, OpCode::Ping, b""));
        input.extend(masked(true, OpCode::Close, &close_payload(1000, "bye")));
        input.extend([0x81, 0x00, 0xFF]);
        input
    }

    fn assert_split_invariant(input: &[u8]) -> Run {
        let whole = feed_server(input);
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(feed(&mut server(), &bytes), whole, "byte by byte");
        for size in 2..=17 {
            let chunks: Vec<&[u8]> = input.chunks(size).collect();
            assert_eq!(feed(&mut server(), &chunks), whole, "chunks of {size}");
        }
        for cut in 0..=input.len() {
            let (a, b) = input.split_at(cut);
            assert_eq!(feed(&mut server(), &[a, b]), whole, "cut {cut}");
        }
        whole
    }

    #[test]
    fn split_invariance_of_a_conversation() {
        let (events, out, error) = assert_split_invariant(&conversation());
        assert_eq!(error, None);
        assert_eq!(
            events,
            vec![
                Event::Ping(b"p1".to_vec()),
                Event::Message(Message::Text("héllo κόσμε".into())),
                Event::Message(Message::Binary(vec![0xB0; 300])),
                Event::Pong(b"hb".to_vec()),
                Event::Message(Message::Text(String::new())),
                Event::Ping(vec![]),
                Event::Close(Some(CloseFrame { code: CloseCode::NORMAL, reason: "bye".into() })),
            ]
        );
        assert_eq!(
            frames(&out),
            vec![
                (OpCode::Pong, b"p1".to_vec(), false),
                (OpCode::Pong, vec![], false),
                (OpCode::Close, close_payload(1000, ""), false),
            ]
        );
    }

    #[test]
    fn split_invariance_of_a_failing_conversation() {
        let mut input = masked(true, OpCode::Text, b"ok");
        input.extend(masked(true, OpCode::Ping, b"p"));
        input.extend(masked(false, OpCode::Text, b"\xce\xba\xed\xa0\x80 and more"));
        input.extend(masked(true, OpCode::Continuation, b"tail"));
        let run = assert_split_invariant(&input);
        assert_eq!(run.2, Some(Error::InvalidUtf8));
        assert_eq!(run.0, vec![Event::Message(Message::Text("ok".into())), Event::Ping(b"p".to_vec())]);
        let sent = frames(&run.1);
        assert_eq!(sent.len(), 2);
        assert_eq!(sent[1].0, OpCode::Close);
        assert_eq!(&sent[1].1[..2], &1007u16.to_be_bytes());
    }

    /// What an owner driving [`WsConn::handle_input_until_message`] saw: messages and control
    /// events in order, the bytes written, the first error, and how many messages came
    /// unmasked in place.
    #[derive(Debug, Default)]
    struct OwnerRun {
        events: Vec<Event>,
        out: Vec<u8>,
        error: Option<Error>,
        in_place: usize,
    }

    /// An owner fed `chunks` (each copied, as from a socket) message by message; with `echo` it
    /// sends every message back where it ended (as `/echo` does).
    fn message_owner(chunks: &[&[u8]], echo: bool) -> OwnerRun {
        let mut conn = server();
        let mut out = Output::new();
        let mut events = Vec::new();
        let mut run = OwnerRun::default();
        for chunk in chunks {
            let mut input = chunk.to_vec();
            let mut pos = 0;
            while pos < input.len() {
                let result =
                    conn.handle_input_until_message(&mut input[pos..], &mut no_mask, &mut events, &mut out);
                run.events.append(&mut events);
                match result {
                    Ok((used, message)) => {
                        pos += used;
                        if let Some(message) = message {
                            run.in_place += usize::from(matches!(message, Incoming::InPlace(_)));
                            run.events.push(Event::Message(message.as_message_ref().to_message()));
                            if echo {
                                let _ = conn.send_message(message.as_message_ref(), &mut no_mask, &mut out);
                            }
                        }
                    }
                    Err(e) => {
                        run.error = Some(e);
                        run.out = out.take_vec();
                        return run;
                    }
                }
            }
        }
        run.out = out.take_vec();
        run
    }

    /// An echo owner: the bytes it writes and the first error.
    fn echo_owner(chunks: &[&[u8]]) -> (Vec<u8>, Option<Error>) {
        let run = message_owner(chunks, true);
        (run.out, run.error)
    }

    /// Whole unfragmented frames of several sizes and kinds, with control frames between.
    fn whole_frames() -> Vec<u8> {
        let mut input = masked(true, OpCode::Binary, &[0xAB; 32]);
        input.extend(masked(true, OpCode::Text, "κόσμε".as_bytes()));
        input.extend(masked(true, OpCode::Ping, b"p"));
        input.extend(masked(true, OpCode::Binary, &(0..1000).map(|i| i as u8).collect::<Vec<_>>()));
        input.extend(masked(true, OpCode::Text, b""));
        input.extend(masked(true, OpCode::Binary, &[7; 126]));
        input.extend(masked(true, OpCode::Text, &[b'x'; 125]));
        input
    }

    #[test]
    fn rfc6455_5_3_unmasking_in_place_is_split_invariant() {
        let mut failing = whole_frames();
        failing.extend(masked(true, OpCode::Text, b"\xce\xba\xed\xa0\x80 invalid"));
        failing.extend(masked(true, OpCode::Binary, b"never read"));
        let mut too_big = masked(true, OpCode::Binary, b"fits");
        too_big.extend(masked(true, OpCode::Binary, &vec![0; 70_000]));
        for input in [whole_frames(), conversation(), failing, too_big] {
            // In place, the same messages, events, output and error as reassembling everything
            // (`handle_input` never unmasks in place).
            let whole = message_owner(&[&input], false);
            let reassembled = feed_server(&input);
            assert_eq!(
                (&whole.events, &whole.out, &whole.error),
                (&reassembled.0, &reassembled.1, &reassembled.2)
            );
            // And the same however the input is split; byte by byte, nothing is in place.
            let bytes: Vec<&[u8]> = input.chunks(1).collect();
            let by_byte = message_owner(&bytes, false);
            assert_eq!(
                (&by_byte.events, &by_byte.out, &by_byte.error),
                (&whole.events, &whole.out, &whole.error)
            );
            assert_eq!(by_byte.in_place, 0);
            for cut in 0..=input.len() {
                let (a, b) = input.split_at(cut);
                let run = message_owner(&[a, b], false);
                assert_eq!(
                    (&run.events, &run.out, &run.error),
                    (&whole.events, &whole.out, &whole.error),
                    "cut {cut}"
                );
            }
        }
        // Fed whole, every unfragmented data frame is handed out in place.
        let run = message_owner(&[&whole_frames()], false);
        assert_eq!(run.error, None);
        assert_eq!(run.in_place, 6);
        assert_eq!(run.events[0], Event::Message(Message::Binary(vec![0xAB; 32])));
        assert_eq!(run.events[1], Event::Message(Message::Text("κόσμε".into())));
        assert_eq!(run.events[2], Event::Ping(b"p".to_vec()));
        // A fragmented message is reassembled; a whole frame after it is in place again.
        let conversation = message_owner(&[&conversation()], false);
        assert_eq!(conversation.in_place, 2);
    }

    #[test]
    fn rfc6455_5_3_unmasking_in_place_touches_only_the_frame_returned() {
        let first = masked(true, OpCode::Binary, b"first");
        let second = masked(true, OpCode::Text, b"second");
        let input = [first.clone(), second.clone()].concat();
        let mut conn = server();
        let (mut events, mut out) = (Vec::new(), Output::new());
        let mut bytes = input.clone();
        let (used, message) =
            conn.handle_input_until_message(&mut bytes, &mut no_mask, &mut events, &mut out).unwrap();
        assert_eq!(used, first.len());
        assert_eq!(message, Some(Incoming::InPlace(MessageRef::Binary(b"first"))));
        assert_eq!(&bytes[used..], &second[..]);
        // A partial frame is copied into the message buffer, its input left as it was.
        let mut partial = second[..4].to_vec();
        let (used, message) =
            conn.handle_input_until_message(&mut partial, &mut no_mask, &mut events, &mut out).unwrap();
        assert_eq!((used, message), (4, None));
        assert_eq!(partial, second[..4]);
        let mut rest = second[4..].to_vec();
        let (_, message) =
            conn.handle_input_until_message(&mut rest, &mut no_mask, &mut events, &mut out).unwrap();
        assert_eq!(message, Some(Incoming::Assembled(Message::Text("second".into()))));
        assert!(events.is_empty() && out.is_empty());
    }

    #[test]
    fn rfc6455_7_1_7_message_before_fault_is_returned_before_the_close() {
        let first = masked(true, OpCode::Text, b"ok");
        let mut bad = masked(true, OpCode::Text, b"rsv");
        bad[0] |= 0x20; // RSV2
        let input = [first.clone(), bad, masked(true, OpCode::Ping, b"p")].concat();
        let mut conn = server();
        let mut out = Output::new();
        let mut events = Vec::new();
        let mut bytes = input.clone();
        let (used, message) =
            conn.handle_input_until_message(&mut bytes, &mut no_mask, &mut events, &mut out).unwrap();
        assert_eq!(used, first.len());
        assert_eq!(message, Some(Incoming::InPlace(MessageRef::Text("ok"))));
        assert!(events.is_empty() && out.is_empty() && !conn.close_sent());
        let error = conn.handle_input_until_message(&mut bytes[used..], &mut no_mask, &mut events, &mut out);
        assert_eq!(error, Err(Error::ReservedBitsSet));
        assert!(events.is_empty());
        assert_failed_with(&(events, out.take_vec(), error.err()), 1002);
    }

    #[test]
    fn split_invariance_of_an_echo_owner_answers_before_later_frames() {
        let mut failing = masked(true, OpCode::Text, b"ok");
        failing.extend(masked(true, OpCode::Ping, b"p"));
        failing.extend(masked(false, OpCode::Text, b"\xce\xba\xed\xa0\x80 and more"));
        failing.extend(masked(true, OpCode::Continuation, b"tail"));
        for input in [conversation(), failing] {
            let whole = echo_owner(&[&input]);
            let bytes: Vec<&[u8]> = input.chunks(1).collect();
            assert_eq!(echo_owner(&bytes), whole, "byte by byte");
            for cut in 0..=input.len() {
                let (a, b) = input.split_at(cut);
                assert_eq!(echo_owner(&[a, b]), whole, "cut {cut}");
            }
        }
        // Each echo sits where its message ended: before the pong of a later ping, and before
        // the close that fails the connection.
        let (out, error) =
            echo_owner(&[&[masked(true, OpCode::Text, b"ok"), masked(true, OpCode::Ping, b"p")].concat()]);
        assert_eq!(error, None);
        assert_eq!(
            frames(&out),
            vec![(OpCode::Text, b"ok".to_vec(), false), (OpCode::Pong, b"p".to_vec(), false)]
        );
        let mut input = masked(true, OpCode::Text, b"ok");
        input.extend(masked(true, OpCode::Continuation, b"stray"));
        let (out, error) = echo_owner(&[&input]);
        assert_eq!(error, Some(Error::UnexpectedContinuation));
        let sent = frames(&out);
        assert_eq!(sent.len(), 2);
        assert_eq!(sent[0], (OpCode::Text, b"ok".to_vec(), false));
        assert_eq!((sent[1].0, &sent[1].1[..2]), (OpCode::Close, &1002u16.to_be_bytes()[..]));
    }

    #[test]
    fn client_round_trip_with_server() {
        let mut c = client();
        let mut s = server();
        let mut mask = counter_mask();
        let mut to_server = Output::new();
        let messages =
            [Message::Text("κόσμε".into()), Message::Binary(vec![1; 70_000 - 1]), Message::Binary(vec![])];
        let limits = Limits { max_frame_payload_bytes: 70_000, max_message_bytes: 70_000 };
        s.limits = limits;
        for m in &messages {
            c.send_message(m, &mut mask, &mut to_server).unwrap();
        }
        c.send_ping(b"are you there", &mut mask, &mut to_server).unwrap();
        c.send_close(None, &mut mask, &mut to_server).unwrap();
        let wire = to_server.take_vec();
        // Every client frame is masked, each with its own key.
        let keys: Vec<_> = {
            let mut keys = Vec::new();
            let mut rest = &wire[..];
            while let Some((h, used)) = FrameHeader::parse(rest).unwrap() {
                keys.push(h.mask.expect("client frames are masked"));
                rest = &rest[used + h.payload_len as usize..];
            }
            keys
        };
        assert_eq!(keys.len(), 5);
        assert!(keys.windows(2).all(|w| w[0] != w[1]));

        let (events, to_client, error) = feed(&mut s, &[&wire]);
        assert_eq!(error, None);
        let mut expected: Vec<Event> = messages.iter().cloned().map(Event::Message).collect();
        expected.push(Event::Ping(b"are you there".to_vec()));
        expected.push(Event::Close(None));
        assert_eq!(events, expected);
        assert!(s.is_closed());

        // The server's pong and close echo, decoded by the client.
        let (events, out, error) = feed(&mut c, &[&to_client]);
        assert_eq!(error, None);
        assert_eq!(events, vec![Event::Pong(b"are you there".to_vec()), Event::Close(None)]);
        assert!(out.is_empty());
        assert!(c.is_closed());
    }

    #[test]
    fn rfc6455_10_4_16_mib_message_allowed_with_16_mib_limit() {
        const SIXTEEN_MIB: usize = 16 << 20;
        let limits =
            Limits { max_frame_payload_bytes: SIXTEEN_MIB as u64, max_message_bytes: SIXTEEN_MIB as u64 };
        let payload: Vec<u8> = (0..SIXTEEN_MIB).map(|i| (i % 251) as u8).collect();
        let mut c = WsConn::new(Role::Client, limits);
        let mut wire = Output::new();
        c.send_message(&Message::Binary(payload.clone()), &mut counter_mask(), &mut wire).unwrap();
        let wire = wire.take_vec();
        let mut s = WsConn::new(Role::Server, limits);
        // Fed in 64 KiB reads, as a socket would deliver it.
        let chunks: Vec<&[u8]> = wire.chunks(65536).collect();
        let (events, _, error) = feed(&mut s, &chunks);
        assert_eq!(error, None);
        assert_eq!(events, vec![Event::Message(Message::Binary(payload))]);

        // One byte more, in two fragments, is too big.
        let mut input = masked(false, OpCode::Binary, &vec![0; SIXTEEN_MIB / 2]);
        input.extend(masked(true, OpCode::Continuation, &vec![0; SIXTEEN_MIB / 2 + 1]));
        let run = feed(&mut WsConn::new(Role::Server, limits), &[&input]);
        assert!(matches!(run.2, Some(Error::MessageTooLarge { .. })));
        assert_failed_with(&run, 1009);
    }

    #[test]
    fn reserve_bounded_never_exceeds_the_limit() {
        let mut data = Vec::new();
        for _ in 0..10 {
            let needed = data.len() + 100;
            reserve_bounded(&mut data, needed, 1000);
            data.resize(needed, 0);
            assert!(data.capacity() <= 1000);
        }
    }
}
