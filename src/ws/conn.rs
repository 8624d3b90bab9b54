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
use crate::ws::deflate::{Codec, PerMessageDeflate};
use crate::ws::frame::{
    encode_frame, encode_frame_rsv, FrameHeader, OpCode, MAX_CONTROL_PAYLOAD_BYTES, MAX_HEADER_BYTES,
};
use crate::ws::mask::apply_mask;
use crate::ws::reading::{Control, OpenMessage, ReadState};
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

impl Message {
    /// The payload's buffer (to give back to [`crate::ws::reading::Spares::recycle`] once the
    /// message was answered).
    pub fn into_bytes(self) -> Vec<u8> {
        match self {
            Message::Text(text) => text.into_bytes(),
            Message::Binary(bytes) => bytes,
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
    /// permessage-deflate, when the handshake negotiated it (RFC 7692).
    deflate: Option<PerMessageDeflate>,
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
            deflate: None,
        }
    }

    /// A connection that negotiated permessage-deflate with `deflate` (RFC 7692); `None` is
    /// [`WsConn::new`]. Compressed messages are inflated with the [`Codec`] passed to
    /// [`WsConn::handle_input`], [`WsConn::send_message_compressed`] compresses.
    pub fn with_deflate(role: Role, limits: Limits, deflate: Option<PerMessageDeflate>) -> Self {
        WsConn { deflate, ..WsConn::new(role, limits) }
    }

    /// The negotiated permessage-deflate parameters, if any.
    pub fn deflate(&self) -> Option<PerMessageDeflate> {
        self.deflate
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
        codec: &mut Codec,
        events: &mut Vec<Event>,
        out: &mut Output,
    ) -> Result<(), Error> {
        let mut input = input;
        while !input.is_empty() {
            let (used, message) = self.read_until_message(input, mask, codec, events, out)?;
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
        codec: &mut Codec,
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
            let progress = self.step(&mut rest, mask, codec, events, out)?;
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
        codec: &mut Codec,
        events: &mut Vec<Event>,
        out: &mut Output,
    ) -> Result<(usize, Option<Message>), Error> {
        let mut rest = input;
        // RFC 6455 §7.1.7 and §5.5.1, as in `handle_input_until_message`.
        while !(self.failed || self.close_received) {
            match self.step(&mut rest, mask, codec, events, out)? {
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
        codec: &mut Codec,
        events: &mut Vec<Event>,
        out: &mut Output,
    ) -> Result<Progress, Error> {
        let progress = self.advance(input, mask, codec, events, out);
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
        codec: &mut Codec,
        events: &mut Vec<Event>,
        out: &mut Output,
    ) -> Result<Progress, Error> {
        if input.is_empty() {
            return Ok(Progress::Exhausted);
        }
        // Between frames (no state kept) a header starts.
        let state = self.read.take().map_or_else(ReadState::header, |state| codec.spares.unbox(state));
        match state {
            ReadState::Header { mut buf, len } => {
                let take = input.len().min(MAX_HEADER_BYTES - len);
                buf[len..len + take].copy_from_slice(&input[..take]);
                match FrameHeader::parse(&buf[..len + take])? {
                    None => {
                        // Fewer than 14 bytes and still incomplete: all of `input` was taken.
                        self.read = Some(codec.spares.boxed(ReadState::Header { buf, len: len + take }));
                        *input = &input[take..];
                    }
                    Some((header, used)) => {
                        // The previous call could not parse `len` bytes, so `used > len`.
                        *input = input.get(used.saturating_sub(len)..).unwrap_or_default();
                        if let Some(message) = self.start_frame(header, mask, codec, events, out)? {
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
                if message.text && !message.compressed {
                    // RFC 6455 §8.1: invalid UTF-8 MUST fail the connection; checked as bytes
                    // arrive so it fails at the first impossible byte (1007).
                    message.utf8.feed(arrived)?;
                }
                let read = read + take as u64;
                if read == payload_len {
                    if let Some(message) = self.finish_data(fin, message, codec)? {
                        return Ok(Progress::Message(message));
                    }
                } else {
                    self.read = Some(codec.spares.boxed(ReadState::Data {
                        fin,
                        mask: key,
                        payload_len,
                        read,
                        message,
                    }));
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
                    self.read = Some(codec.spares.boxed(ReadState::Control {
                        control,
                        mask: key,
                        payload_len,
                        payload,
                    }));
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
        codec: &mut Codec,
        events: &mut Vec<Event>,
        out: &mut Output,
    ) -> Result<Option<Message>, Error> {
        // RFC 6455 §5.2: RSV1-3 "MUST be 0 unless an extension is negotiated that defines
        // meanings for non-zero values"; permessage-deflate gives RSV1 one (RFC 7692 §6).
        let compressed = header.rsv & RSV1 != 0;
        if header.rsv & !RSV1 != 0 || (compressed && self.deflate.is_none()) {
            return Err(Error::ReservedBitsSet);
        }
        // RFC 7692 §6: the "Per-Message Compressed" bit is set on "the first frame of the
        // message"; §6.1: "An endpoint MUST NOT set the "Per-Message Compressed" bit of
        // control frames and non-first fragments of a data message."
        if compressed && !matches!(header.opcode, OpCode::Text | OpCode::Binary) {
            return Err(Error::CompressedBitMisplaced);
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
                    compressed,
                    // A spare buffer of the loop's, when it has one: no allocation per message.
                    data: codec.spares.buffer(),
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
                return self.finish_data(header.fin, message, codec);
            }
            self.read = Some(codec.spares.boxed(ReadState::Data {
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
            self.read = Some(codec.spares.boxed(ReadState::Control {
                control,
                mask: header.mask,
                payload_len,
                payload,
            }));
        }
        Ok(None)
    }

    /// A data frame's payload is complete: keep the message open or return it.
    fn finish_data(
        &mut self,
        fin: bool,
        mut message: OpenMessage,
        codec: &mut Codec,
    ) -> Result<Option<Message>, Error> {
        if !fin {
            self.message = Some(Box::new(message));
            return Ok(None);
        }
        if message.compressed {
            // RFC 7692 §7.2.2: inflate the message's payload (after appending 00 00 ff ff), no
            // larger than the message limit (RFC 6455 §10.4). The peer resets its context per
            // message when it promised no context takeover; otherwise the context is kept.
            let resets = self.deflate.is_none_or(|d| d.receive_resets(self.role == Role::Server));
            let mut inflated = Vec::new();
            codec.decompress(&message.data, self.limits.max_message_bytes, resets, &mut inflated)?;
            message.data = inflated;
            if message.text {
                // RFC 6455 §8.1, on the inflated text.
                message.utf8.feed(&message.data)?;
            }
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

    /// Like [`WsConn::send_message`], but compressed with `codec` when permessage-deflate was
    /// negotiated, the payload is at least [`Codec::min_bytes`] and compression makes it
    /// smaller: one frame with RSV1 set (RFC 7692 §6, §7.2.1), compressed with the window this
    /// role was allowed (§7.1.2) and a fresh context. Otherwise the same as `send_message`.
    pub fn send_message_compressed<'m>(
        &mut self,
        msg: impl Into<MessageRef<'m>>,
        mask: &mut dyn FnMut() -> [u8; 4],
        codec: &mut Codec,
        out: &mut Output,
    ) -> Result<(), SendError> {
        self.check_open()?;
        let msg = msg.into();
        let window_bits = self.deflate.and_then(|d| d.send_window_bits(self.role == Role::Server));
        let (opcode, payload) = msg.frame_parts();
        let mut compressed = Vec::new();
        match window_bits {
            Some(bits) if codec.compress(payload, bits, &mut compressed) => {
                let key = self.mask_key(mask);
                out.push_with(MAX_HEADER_BYTES + compressed.len(), |tail| {
                    encode_frame_rsv(RSV1, opcode, &compressed, key, tail)
                });
                Ok(())
            }
            _ => self.send_message(msg, mask, out),
        }
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

/// The RSV1 bit in [`FrameHeader::rsv`]: "Per-Message Compressed" under permessage-deflate.
pub const RSV1: u8 = 0b100;

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
mod tests;
