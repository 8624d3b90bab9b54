//! Published messages: payload stored once, each wire format encoded at most once.
//!
//! Implements: the message a publish creates (channel, cursor id, optional event name, payload,
//! publish time) and a per-message cache of its wire encodings, so fanning one message out to
//! many subscribers of one transport costs reference counts, not copies or re-encoding.
//!
//! Does not: know any wire format. The transports pass their encoder to [`Message::encoded`].

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use crate::hub::channel_name::ChannelName;
use crate::hub::cursor::Cursor;

/// A message body as published: text (a WebSocket text frame, SSE data) or bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// UTF-8 text.
    Text(Arc<str>),
    /// Arbitrary bytes.
    Binary(Arc<[u8]>),
}

impl Payload {
    /// Length of the payload in bytes (for text: UTF-8 bytes).
    pub fn len_bytes(&self) -> usize {
        match self {
            Payload::Text(text) => text.len(),
            Payload::Binary(bytes) => bytes.len(),
        }
    }
}

/// A wire format a message is sent in; each is encoded at most once per message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// A bare WebSocket data frame carrying the payload.
    WsFrame,
    /// A WebSocket text frame carrying a JSON envelope (channel, id, event, data).
    WsEnvelopeFrame,
    /// One Server-Sent Events event (`id:`, `event:`, `data:` lines, blank line).
    SseEvent,
    /// One newline-delimited JSON line, as an HTTP/1.1 chunk of the stream transport.
    NdjsonChunk,
    /// One JSON envelope, as an element of a poll response body.
    JsonEnvelope,
    /// A WebSocket text frame carrying a JSON envelope that names the channel (`pushwire.v1`
    /// command mode, where one connection holds several channels).
    WsChannelEnvelopeFrame,
    /// A multi-channel event stream's event without its `id:` line: `data:` holding the JSON
    /// envelope that names the channel, then the blank line.
    SseChannelEvent,
    /// [`Encoding::NdjsonChunk`] with the envelope naming the channel.
    NdjsonChannelChunk,
    /// [`Encoding::JsonEnvelope`] naming the channel (a multi-channel poll answer's element).
    ChannelJsonEnvelope,
    /// [`Encoding::WsFrame`] for a permessage-deflate connection whose server window is
    /// `window_bits` (9 to 15): compressed with RSV1 when that pays, else the plain frame.
    WsDeflateFrame {
        /// The LZ77 window, in bits (RFC 7692 §7.1.2.1).
        window_bits: u8,
    },
    /// [`Encoding::WsEnvelopeFrame`] for a permessage-deflate connection, as
    /// [`Encoding::WsDeflateFrame`].
    WsDeflateEnvelopeFrame {
        /// The LZ77 window, in bits (RFC 7692 §7.1.2.1).
        window_bits: u8,
    },
}

impl Encoding {
    /// Number of wire formats.
    pub const COUNT: usize = 9;

    /// Number of permessage-deflate encodings: two framings times windows of 9 to 15 bits.
    const DEFLATE_COUNT: usize = 14;

    /// Slot of this encoding in a message's cache, below [`Self::COUNT`], or in its deflate
    /// cache, below [`Self::DEFLATE_COUNT`].
    fn slot(self) -> Slot {
        let window = |bits: u8| usize::from(bits.clamp(9, 15) - 9);
        match self {
            Encoding::WsDeflateFrame { window_bits } => Slot::Deflate(window(window_bits)),
            Encoding::WsDeflateEnvelopeFrame { window_bits } => Slot::Deflate(7 + window(window_bits)),
            plain => Slot::Plain(plain.index()),
        }
    }

    /// Slot of a plain encoding in a message's cache, below [`Self::COUNT`].
    fn index(self) -> usize {
        match self {
            Encoding::WsFrame => 0,
            Encoding::WsEnvelopeFrame => 1,
            Encoding::SseEvent => 2,
            Encoding::NdjsonChunk => 3,
            Encoding::JsonEnvelope => 4,
            Encoding::WsChannelEnvelopeFrame => 5,
            Encoding::SseChannelEvent => 6,
            Encoding::NdjsonChannelChunk => 7,
            Encoding::ChannelJsonEnvelope => 8,
            Encoding::WsDeflateFrame { .. } | Encoding::WsDeflateEnvelopeFrame { .. } => 0,
        }
    }
}

/// A message's permessage-deflate encodings, one slot per framing and window size.
type DeflateSlots = [OnceLock<Arc<[u8]>>; Encoding::DEFLATE_COUNT];

/// Where an encoding is cached.
enum Slot {
    Plain(usize),
    Deflate(usize),
}

/// One published message, shared (`Arc<Message>`) by the channel history and every delivery.
#[derive(Debug)]
pub struct Message {
    /// The channel it was published to.
    pub channel: ChannelName,
    /// Its position: the channel's epoch and the message's offset (from 1).
    pub id: Cursor,
    /// Optional event name (an SSE `event:` field, an envelope's `event`).
    pub event: Option<Arc<str>>,
    /// The body.
    pub payload: Payload,
    /// When the hub accepted it; history older than `Limits::max_history_age` is dropped.
    pub published_at: Instant,
    /// One lazily filled slot per [`Encoding`], indexed by `Encoding::index`.
    encodings: [OnceLock<Arc<[u8]>>; Encoding::COUNT],
    /// The permessage-deflate encodings, allocated when a deflate subscriber first needs one
    /// (one pointer per message otherwise).
    deflated: OnceLock<Box<DeflateSlots>>,
}

impl Message {
    /// A message with an empty encoding cache. The hub creates messages on publish; transports
    /// call this only to build messages for their own tests.
    pub fn new(
        channel: ChannelName,
        id: Cursor,
        event: Option<Arc<str>>,
        payload: Payload,
        published_at: Instant,
    ) -> Message {
        Message {
            channel,
            id,
            event,
            payload,
            published_at,
            encodings: Default::default(),
            deflated: OnceLock::new(),
        }
    }

    /// The message in wire format `encoding`, encoded on first use by `encode` and then shared
    /// (each wire format is encoded once per message, not once per subscriber). Later calls
    /// with the same `encoding` return the cached bytes and do not call `encode`; concurrent
    /// first calls from several threads still encode only once.
    pub fn encoded(&self, encoding: Encoding, encode: impl FnOnce(&Message) -> Vec<u8>) -> Arc<[u8]> {
        self.encoded_shared(encoding, |msg| Arc::from(encode(msg)))
    }

    /// [`Message::encoded`] with an encoder that may return bytes already shared, e.g. another
    /// encoding of the same message (a deflate encoding that did not pay is the plain frame).
    pub fn encoded_shared(
        &self,
        encoding: Encoding,
        encode: impl FnOnce(&Message) -> Arc<[u8]>,
    ) -> Arc<[u8]> {
        let slot = match encoding.slot() {
            Slot::Plain(i) => &self.encodings[i],
            Slot::Deflate(i) => &self.deflated.get_or_init(Default::default)[i],
        };
        Arc::clone(slot.get_or_init(|| encode(self)))
    }

    /// Bytes this message holds in a channel history: the payload plus the event name.
    pub(crate) fn history_bytes(&self) -> usize {
        let event_bytes = self.event.as_ref().map_or(0, |event| event.len());
        self.payload.len_bytes().saturating_add(event_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::cursor::Epoch;
    use std::cell::Cell;

    fn message(event: Option<&str>, payload: Payload) -> Message {
        Message::new(
            ChannelName::parse("news").unwrap(),
            Cursor { epoch: Epoch(7), offset: 1 },
            event.map(Arc::from),
            payload,
            crate::hub::tests::t0(),
        )
    }

    #[test]
    fn message_encoded_encodes_once_per_encoding() {
        let m = message(None, Payload::Text(Arc::from("hi")));
        let calls = Cell::new(0);
        let encode = |m: &Message| {
            calls.set(calls.get() + 1);
            format!("data: {}", m.id).into_bytes()
        };
        let first = m.encoded(Encoding::SseEvent, encode);
        let second = m.encoded(Encoding::SseEvent, encode);
        assert_eq!(calls.get(), 1);
        assert!(Arc::ptr_eq(&first, &second));
        assert_eq!(&first[..], b"data: 0000000000000007:1");

        let other = m.encoded(Encoding::JsonEnvelope, |_| b"{}".to_vec());
        assert_eq!(&other[..], b"{}");
        let again = m.encoded(Encoding::SseEvent, |_| unreachable!("already encoded"));
        assert!(Arc::ptr_eq(&first, &again));
    }

    #[test]
    fn deflate_encodings_cached_per_window_and_framing() {
        let m = message(None, Payload::Text(Arc::from("hi")));
        assert!(m.deflated.get().is_none(), "no deflate cache until a deflate subscriber asks");
        let plain = m.encoded(Encoding::WsFrame, |_| b"plain".to_vec());
        let shared = m.encoded_shared(Encoding::WsDeflateFrame { window_bits: 15 }, |_| Arc::clone(&plain));
        assert!(Arc::ptr_eq(&plain, &shared));
        let ten = m.encoded(Encoding::WsDeflateFrame { window_bits: 10 }, |_| b"ten".to_vec());
        let envelope = m.encoded(Encoding::WsDeflateEnvelopeFrame { window_bits: 10 }, |_| b"env".to_vec());
        assert_eq!((&ten[..], &envelope[..]), (&b"ten"[..], &b"env"[..]));
        let again = m.encoded(Encoding::WsDeflateFrame { window_bits: 10 }, |_| unreachable!("cached"));
        assert!(Arc::ptr_eq(&ten, &again));
        assert!(Arc::ptr_eq(
            &shared,
            &m.encoded(Encoding::WsDeflateFrame { window_bits: 15 }, |_| unreachable!())
        ));
    }

    #[test]
    fn message_encoded_once_across_threads() {
        let m = Arc::new(message(None, Payload::Binary(Arc::from(&b"x"[..]))));
        let calls = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|scope| {
            for _ in 0..8 {
                scope.spawn(|| {
                    m.encoded(Encoding::WsFrame, |_| {
                        calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        vec![0x82, 1, b'x']
                    })
                });
            }
        });
        assert_eq!(calls.into_inner(), 1);
    }

    #[test]
    fn encoding_indexes_are_distinct_and_in_range() {
        let all = [
            Encoding::WsFrame,
            Encoding::WsEnvelopeFrame,
            Encoding::SseEvent,
            Encoding::NdjsonChunk,
            Encoding::JsonEnvelope,
            Encoding::WsChannelEnvelopeFrame,
            Encoding::SseChannelEvent,
            Encoding::NdjsonChannelChunk,
            Encoding::ChannelJsonEnvelope,
        ];
        let mut seen = [false; Encoding::COUNT];
        for encoding in all {
            assert!(!std::mem::replace(&mut seen[encoding.index()], true));
        }
        assert!(seen.iter().all(|&s| s));
    }

    #[test]
    fn message_history_bytes_counts_payload_and_event() {
        assert_eq!(Payload::Text(Arc::from("héllo")).len_bytes(), 6);
        assert_eq!(message(None, Payload::Text(Arc::from("abc"))).history_bytes(), 3);
        let m = message(Some("tick"), Payload::Binary(Arc::from(&[1u8, 2][..])));
        assert_eq!(m.history_bytes(), 6);
    }
}
