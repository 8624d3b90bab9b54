//! A WebSocket reader's state between reads, and the spares that keep it allocation-free.
//!
//! Implements: the state [`crate::ws::conn::WsConn`] keeps while a frame or a fragmented
//! message is incomplete (a header being collected, a data payload, a control payload; RFC 6455
//! [§5.2](https://www.rfc-editor.org/rfc/rfc6455#section-5.2),
//! [§5.4](https://www.rfc-editor.org/rfc/rfc6455#section-5.4)), and [`Spares`]: the boxes and
//! message buffers that state lives in, kept by an event loop (inside its
//! [`crate::ws::deflate::Codec`], which every reading call already borrows) and reused from
//! one message to the next, so a frame split across reads costs no allocation in steady state
//! while an idle connection still holds none.
//!
//! Does not: parse or check anything (that is `conn.rs`), or keep a spare past its bounds
//! ([`MAX_SPARE_STATES`], [`MAX_SPARE_BUFFERS`], [`MAX_SPARE_BUFFER_BYTES`]).

use crate::ws::frame::MAX_HEADER_BYTES;
use crate::ws::utf8::Utf8Validator;

/// Spare reader-state boxes kept (one per connection mid-frame at once, up to this many).
pub const MAX_SPARE_STATES: usize = 64;
/// Spare message buffers kept.
pub const MAX_SPARE_BUFFERS: usize = 16;
/// A message buffer larger than this is freed rather than kept (one huge message must not pin
/// its buffer in the loop for good).
pub const MAX_SPARE_BUFFER_BYTES: usize = 256 * 1024;

/// Reader-state boxes and message buffers given back after use, handed out again before a new
/// allocation is made. Bounded; empty until the first frame split across reads.
#[derive(Debug, Default)]
pub struct Spares {
    // The boxes are what is kept: each is handed out whole to a connection (one pointer there).
    #[allow(clippy::vec_box)]
    states: Vec<Box<ReadState>>,
    buffers: Vec<Vec<u8>>,
}

impl Spares {
    /// `state` in a box: a spare one when there is one.
    pub(crate) fn boxed(&mut self, state: ReadState) -> Box<ReadState> {
        match self.states.pop() {
            Some(mut spare) => {
                *spare = state;
                spare
            }
            None => Box::new(state),
        }
    }

    /// The state out of its box; the box becomes a spare (within [`MAX_SPARE_STATES`]).
    pub(crate) fn unbox(&mut self, mut boxed: Box<ReadState>) -> ReadState {
        let state = std::mem::replace(&mut *boxed, ReadState::header());
        if self.states.len() < MAX_SPARE_STATES {
            self.states.push(boxed);
        }
        state
    }

    /// An empty message buffer: a spare one (with its capacity) when there is one.
    pub(crate) fn buffer(&mut self) -> Vec<u8> {
        self.buffers.pop().unwrap_or_default()
    }

    /// Gives back a message's buffer once the message was answered (see
    /// [`crate::ws::conn::Message::into_bytes`]); kept within the bounds, else freed.
    pub fn recycle(&mut self, mut buffer: Vec<u8>) {
        if buffer.capacity() > 0
            && buffer.capacity() <= MAX_SPARE_BUFFER_BYTES
            && self.buffers.len() < MAX_SPARE_BUFFERS
        {
            buffer.clear();
            self.buffers.push(buffer);
        }
    }

    /// Spare boxes and buffers held (tests).
    pub fn held(&self) -> (usize, usize) {
        (self.states.len(), self.buffers.len())
    }
}

/// A data message between its first and its final fragment.
#[derive(Debug)]
pub(crate) struct OpenMessage {
    /// Text (validated as it arrives, or once inflated) or binary.
    pub(crate) text: bool,
    /// RSV1 was set on the first frame (RFC 7692 §6): the payload is DEFLATE data, inflated
    /// when the message is complete.
    pub(crate) compressed: bool,
    /// The unmasked payload so far.
    pub(crate) data: Vec<u8>,
    /// UTF-8 state across frame and read boundaries (text only).
    pub(crate) utf8: Utf8Validator,
}

/// The three control opcodes (§5.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Control {
    Close,
    Ping,
    Pong,
}

/// Where the reader is in the byte stream.
#[derive(Debug)]
pub(crate) enum ReadState {
    /// Collecting a frame header (at most 14 bytes). Next: `Data` or `Control` once complete.
    Header { buf: [u8; MAX_HEADER_BYTES], len: usize },
    /// Reading a data frame's payload into its message. Next: `Header` when the payload ends.
    Data { fin: bool, mask: Option<[u8; 4]>, payload_len: u64, read: u64, message: OpenMessage },
    /// Reading a control frame's payload (at most 125 bytes). Next: `Header`.
    Control { control: Control, mask: Option<[u8; 4]>, payload_len: usize, payload: Vec<u8> },
}

impl ReadState {
    pub(crate) fn header() -> Self {
        ReadState::Header { buf: [0; MAX_HEADER_BYTES], len: 0 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spares_are_reused_and_bounded() {
        let mut spares = Spares::default();
        let boxed = spares.boxed(ReadState::header());
        let address = &*boxed as *const ReadState;
        assert!(matches!(spares.unbox(boxed), ReadState::Header { len: 0, .. }));
        let again = spares.boxed(ReadState::Header { buf: [1; MAX_HEADER_BYTES], len: 3 });
        assert_eq!(&*again as *const ReadState, address, "the spare box is reused");
        spares.recycle(Vec::with_capacity(100));
        let buffer = spares.buffer();
        assert!(buffer.is_empty() && buffer.capacity() >= 100);
        spares.recycle(Vec::with_capacity(MAX_SPARE_BUFFER_BYTES + 1));
        for _ in 0..MAX_SPARE_BUFFERS + 3 {
            spares.recycle(Vec::with_capacity(8));
        }
        assert_eq!(spares.held(), (0, MAX_SPARE_BUFFERS));
    }
}
