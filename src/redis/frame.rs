//! The frames pushwire nodes exchange through Redis: a message with its cursor, a presence
//! join, a presence leave. One compact, binary-safe layout serves the pub/sub channel and the
//! history stream, so a history entry and a live message are the same bytes.
//!
//! Implements: the layout below, its encoders ([`message_tail`], [`encode_message`],
//! [`encode_join`], [`encode_leave`]) and a parser bounded by [`FrameLimits`]
//! ([`parse_frame`]). The Lua scripts build the same bytes (they prepend the cursor, which
//! only Redis knows at publish time); integration tests compare both byte for byte.
//!
//! | kind | layout (integers big-endian) |
//! |---|---|
//! | message | `'M'`, cursor length (u8), cursor text `EPOCH:OFFSET`, flags (u8: bit 0 set = binary, else UTF-8 text; other bits 0), event length (u16; 0 = no event), event name, payload (the rest) |
//! | join | `'J'`, member length (u8), member text, user id length (u16), user id (UTF-8, empty = anonymous), info (the rest) |
//! | leave | `'L'`, member length (u8), member text |
//! | part (a leave with the member's value) | `'P'`, then as a join |
//!
//! The first byte names the layout: a change of layout gets a new kind byte, and a node that
//! does not know it refuses the frame ([`ReplyError::UnknownFrameKind`]), so a rolling
//! upgrade deploys the parser before the writer. The node builds everything after the cursor
//! ([`message_tail`]) and the channel script prepends `'M'`, the length and the cursor: Lua
//! needs only string concatenation, and the epoch stays 16 hex digits in Lua (its numbers are
//! doubles and cannot hold 64 bits).
//!
//! Does not: carry the channel name (the pub/sub channel or the stream key says it), or
//! decide what to do with a frame (the broker does).

use std::fmt;
use std::sync::Arc;

use crate::hub::{Cursor, Payload};
use crate::redis::ReplyError;

/// Kind byte of a message frame.
pub const KIND_MESSAGE: u8 = b'M';
/// Kind byte of a join frame.
pub const KIND_JOIN: u8 = b'J';
/// Kind byte of a leave frame without the member's value (its value was gone).
pub const KIND_LEAVE: u8 = b'L';
/// Kind byte of a leave frame with the member's value ("part"), so watchers get the user id
/// and info of who left, as they do without Redis.
pub const KIND_PART: u8 = b'P';
/// Flag bit of a binary payload.
const FLAG_BINARY: u8 = 0x01;

/// Bounds on a frame from another node (through Redis), checked before copying anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameLimits {
    /// Largest payload, in bytes; a larger one is [`ReplyError::FrameTooLarge`]. Should be
    /// the largest message this node accepts from publishers. Default 1 MiB.
    pub max_payload_bytes: usize,
    /// Longest event name, in bytes. Default 255.
    pub max_event_bytes: usize,
    /// Longest presence user id, in bytes. Default 255.
    pub max_user_bytes: usize,
    /// Largest presence info, in bytes. Default 4 KiB.
    pub max_info_bytes: usize,
}

impl Default for FrameLimits {
    fn default() -> FrameLimits {
        FrameLimits {
            max_payload_bytes: 1 << 20,
            max_event_bytes: 255,
            max_user_bytes: 255,
            max_info_bytes: 4096,
        }
    }
}

/// One subscription in a channel's presence: the node's id and the connection's id.
///
/// Text form: `NODE-CONN`, each 16 lowercase hex digits (33 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PresenceMember {
    /// The node's id, drawn at random when the node starts.
    pub node: u64,
    /// The connection's id on that node.
    pub conn: u64,
}

impl PresenceMember {
    /// Length of the text form.
    pub const TEXT_BYTES: usize = 33;

    /// Parses the text form strictly (exactly 16 hex digits, `-`, 16 hex digits).
    pub fn parse(text: &[u8]) -> Option<PresenceMember> {
        if text.len() != Self::TEXT_BYTES || text[16] != b'-' {
            return None;
        }
        let hex = |digits: &[u8]| {
            digits.iter().try_fold(0u64, |n, &b| char::from(b).to_digit(16).map(|d| (n << 4) | u64::from(d)))
        };
        Some(PresenceMember { node: hex(&text[..16])?, conn: hex(&text[17..])? })
    }
}

impl fmt::Display for PresenceMember {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}-{:016x}", self.node, self.conn)
    }
}

/// What presence says about a member: the user id (empty when anonymous) and the info the
/// client supplied (opaque bytes, empty when none).
///
/// Encoding: user id length (u16, big-endian), user id (UTF-8), info (the rest).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceValue {
    /// The authenticated user id, or empty.
    pub user: Arc<str>,
    /// The client's info, or empty.
    pub info: Arc<[u8]>,
}

impl PresenceValue {
    /// Appends the encoding to `out`. The caller bounds the user id to 65 535 bytes.
    pub fn encode(&self, out: &mut Vec<u8>) {
        debug_assert!(self.user.len() <= usize::from(u16::MAX));
        out.extend_from_slice(&(self.user.len() as u16).to_be_bytes());
        out.extend_from_slice(self.user.as_bytes());
        out.extend_from_slice(&self.info);
    }

    /// Parses the encoding, within `limits.max_user_bytes` and `limits.max_info_bytes`.
    pub fn parse(bytes: &[u8], limits: &FrameLimits) -> Result<PresenceValue, ReplyError> {
        let [h, l, rest @ ..] = bytes else {
            return Err(ReplyError::FrameTruncated);
        };
        let user_len = usize::from(u16::from_be_bytes([*h, *l]));
        if user_len > rest.len() {
            return Err(ReplyError::FrameTruncated);
        }
        let (user, info) = rest.split_at(user_len);
        if user.len() > limits.max_user_bytes || info.len() > limits.max_info_bytes {
            return Err(ReplyError::FrameTooLarge);
        }
        let user = std::str::from_utf8(user).map_err(|_| ReplyError::FrameTextNotUtf8)?;
        Ok(PresenceValue { user: Arc::from(user), info: Arc::from(info) })
    }
}

/// A parsed frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A published message and its cursor.
    Message {
        /// The message's cursor: its channel epoch and offset.
        id: Cursor,
        /// The event name, if any.
        event: Option<Arc<str>>,
        /// The body.
        payload: Payload,
    },
    /// A member joined the channel's presence.
    Join {
        /// Who joined.
        member: PresenceMember,
        /// Their user id and info.
        value: PresenceValue,
    },
    /// A member left (unsubscribed, or expired because its node stopped refreshing it).
    Leave {
        /// Who left.
        member: PresenceMember,
        /// Their user id and info, when Redis still had them (a `'P'` frame).
        value: Option<PresenceValue>,
    },
}

/// Appends what the node sends the channel script for a publish: the message frame without
/// its kind byte and cursor (flags, event length, event, payload).
///
/// The caller has validated the event name (the transports allow at most
/// [`u16::MAX`] bytes of printable ASCII).
pub fn message_tail(event: Option<&str>, payload: &Payload, out: &mut Vec<u8>) {
    let (flags, bytes): (u8, &[u8]) = match payload {
        Payload::Text(text) => (0, text.as_bytes()),
        Payload::Binary(bytes) => (FLAG_BINARY, bytes),
    };
    let event = event.unwrap_or("").as_bytes();
    debug_assert!(event.len() <= usize::from(u16::MAX), "event names are validated by the transports");
    out.reserve(3 + event.len() + bytes.len());
    out.push(flags);
    out.extend_from_slice(&(event.len() as u16).to_be_bytes());
    out.extend_from_slice(event);
    out.extend_from_slice(bytes);
}

/// The whole message frame, as the channel script writes it.
pub fn encode_message(id: Cursor, event: Option<&str>, payload: &Payload) -> Vec<u8> {
    let cursor = id.to_string();
    let mut out = Vec::with_capacity(2 + cursor.len());
    out.push(KIND_MESSAGE);
    // A cursor's text is at most 37 bytes.
    out.push(cursor.len() as u8);
    out.extend_from_slice(cursor.as_bytes());
    message_tail(event, payload, &mut out);
    out
}

/// A join frame, as the presence script writes it.
pub fn encode_join(member: &PresenceMember, value: &PresenceValue) -> Vec<u8> {
    let mut out = encode_leave(member, Some(value));
    out[0] = KIND_JOIN;
    out
}

/// A leave frame, as the presence script writes it: with the member's value (`'P'`) when it
/// has one, else `'L'`.
pub fn encode_leave(member: &PresenceMember, value: Option<&PresenceValue>) -> Vec<u8> {
    let text = member.to_string();
    let mut out = Vec::with_capacity(2 + text.len());
    out.push(if value.is_some() { KIND_PART } else { KIND_LEAVE });
    // A member's text is 33 bytes.
    out.push(text.len() as u8);
    out.extend_from_slice(text.as_bytes());
    if let Some(value) = value {
        value.encode(&mut out);
    }
    out
}

/// Splits `n` bytes off the front of `bytes`, or fails with a truncated frame.
fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Result<&'a [u8], ReplyError> {
    if bytes.len() < n {
        return Err(ReplyError::FrameTruncated);
    }
    let (head, rest) = bytes.split_at(n);
    *bytes = rest;
    Ok(head)
}

/// Parses one frame (a pub/sub message payload or a history entry's `m` field). Every length
/// is checked against what remains and against `limits` before anything is copied.
///
/// Errors: [`ReplyError::FrameTruncated`], [`ReplyError::UnknownFrameKind`],
/// [`ReplyError::FrameBadCursor`], [`ReplyError::FrameBadEvent`],
/// [`ReplyError::FrameTextNotUtf8`], [`ReplyError::FrameTooLarge`],
/// [`ReplyError::FrameBadMember`], [`ReplyError::FrameBadFlags`].
pub fn parse_frame(mut bytes: &[u8], limits: &FrameLimits) -> Result<Frame, ReplyError> {
    let rest = &mut bytes;
    let kind = take(rest, 1)?[0];
    match kind {
        KIND_MESSAGE => {
            let cursor_len = usize::from(take(rest, 1)?[0]);
            let cursor =
                std::str::from_utf8(take(rest, cursor_len)?).map_err(|_| ReplyError::FrameBadCursor)?;
            let id = Cursor::parse(cursor).map_err(|_| ReplyError::FrameBadCursor)?;
            if id.offset == 0 {
                return Err(ReplyError::FrameBadCursor);
            }
            let flags = take(rest, 1)?[0];
            if flags & !FLAG_BINARY != 0 {
                return Err(ReplyError::FrameBadFlags(flags));
            }
            let event_len = take(rest, 2)?;
            let event_len = usize::from(u16::from_be_bytes([event_len[0], event_len[1]]));
            if event_len > limits.max_event_bytes {
                return Err(ReplyError::FrameTooLarge);
            }
            let event = take(rest, event_len)?;
            // Event names travel into SSE `event:` lines: never CR, LF, NUL or spaces.
            if !event.iter().all(u8::is_ascii_graphic) {
                return Err(ReplyError::FrameBadEvent);
            }
            let event =
                (!event.is_empty()).then(|| Arc::from(std::str::from_utf8(event).unwrap_or_default()));
            let body = std::mem::take(rest);
            if body.len() > limits.max_payload_bytes {
                return Err(ReplyError::FrameTooLarge);
            }
            let payload = if flags & FLAG_BINARY != 0 {
                Payload::Binary(Arc::from(body))
            } else {
                Payload::Text(Arc::from(std::str::from_utf8(body).map_err(|_| ReplyError::FrameTextNotUtf8)?))
            };
            Ok(Frame::Message { id, event, payload })
        }
        KIND_JOIN | KIND_LEAVE | KIND_PART => {
            let member_len = usize::from(take(rest, 1)?[0]);
            let member = PresenceMember::parse(take(rest, member_len)?).ok_or(ReplyError::FrameBadMember)?;
            if kind == KIND_LEAVE {
                if !rest.is_empty() {
                    return Err(ReplyError::FrameTrailingBytes);
                }
                return Ok(Frame::Leave { member, value: None });
            }
            let value = PresenceValue::parse(rest, limits)?;
            Ok(match kind {
                KIND_JOIN => Frame::Join { member, value },
                _ => Frame::Leave { member, value: Some(value) },
            })
        }
        other => Err(ReplyError::UnknownFrameKind(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::Epoch;

    fn id(offset: u64) -> Cursor {
        Cursor { epoch: Epoch(0x00c0_ffee_0000_0001), offset }
    }

    fn text(s: &str) -> Payload {
        Payload::Text(Arc::from(s))
    }

    #[test]
    fn frame_message_layout_is_byte_exact() {
        let frame = encode_message(id(42), Some("tick"), &text("hi"));
        let mut expected = vec![b'M', 19];
        expected.extend_from_slice(b"00c0ffee00000001:42");
        expected.extend_from_slice(&[0, 0, 4]);
        expected.extend_from_slice(b"tickhi");
        assert_eq!(frame, expected);
        let mut tail = Vec::new();
        message_tail(Some("tick"), &text("hi"), &mut tail);
        assert_eq!(tail, frame[21..]);
    }

    #[test]
    fn frame_message_round_trips_text_binary_and_no_event() {
        let limits = FrameLimits::default();
        for (event, payload) in [
            (None, text("")),
            (Some("e"), text("héllo\r\n\0")),
            (None, Payload::Binary(Arc::from(&[0u8, 0xFF, b'\r', b'\n'][..]))),
            (Some("a-b.c"), Payload::Binary(Arc::from(&[][..]))),
        ] {
            let frame = encode_message(id(u64::MAX), event, &payload);
            assert_eq!(
                parse_frame(&frame, &limits),
                Ok(Frame::Message { id: id(u64::MAX), event: event.map(Arc::from), payload })
            );
        }
    }

    #[test]
    fn frame_presence_round_trips() {
        let limits = FrameLimits::default();
        let member = PresenceMember { node: 0xabc, conn: u64::MAX };
        let value = PresenceValue { user: Arc::from("alice"), info: Arc::from(&b"{\"x\":1}"[..]) };
        assert_eq!(
            parse_frame(&encode_join(&member, &value), &limits),
            Ok(Frame::Join { member, value: value.clone() })
        );
        let anonymous = PresenceValue { user: Arc::from(""), info: Arc::from(&[][..]) };
        assert_eq!(
            parse_frame(&encode_join(&member, &anonymous), &limits),
            Ok(Frame::Join { member, value: anonymous })
        );
        assert_eq!(
            parse_frame(&encode_leave(&member, None), &limits),
            Ok(Frame::Leave { member, value: None })
        );
        let part = encode_leave(&member, Some(&value));
        assert_eq!(part[0], b'P');
        assert_eq!(part[1..], encode_join(&member, &value)[1..], "a part is laid out as a join");
        assert_eq!(parse_frame(&part, &limits), Ok(Frame::Leave { member, value: Some(value) }));
    }

    #[test]
    fn frame_rejections() {
        let limits =
            FrameLimits { max_payload_bytes: 4, max_event_bytes: 3, max_user_bytes: 2, max_info_bytes: 2 };
        let good = encode_message(id(1), Some("ev"), &text("abcd"));
        assert!(parse_frame(&good, &limits).is_ok());
        for cut in 0..25 {
            assert_eq!(parse_frame(&good[..cut], &limits), Err(ReplyError::FrameTruncated), "cut {cut}");
        }
        let cases: Vec<(Vec<u8>, ReplyError)> = vec![
            (b"X".to_vec(), ReplyError::UnknownFrameKind(b'X')),
            (encode_message(id(1), None, &text("abcde")), ReplyError::FrameTooLarge),
            (encode_message(id(1), Some("evnt"), &text("")), ReplyError::FrameTooLarge),
            (encode_message(id(1), Some("a b"), &text("")), ReplyError::FrameBadEvent),
            (encode_message(id(0), None, &text("")), ReplyError::FrameBadCursor),
            ([&b"M\x03abc\x00\x00\x00"[..]].concat(), ReplyError::FrameBadCursor),
            (
                [&b"M\x13"[..], b"00c0ffee00000001:\xff2", b"\x00\x00\x00"].concat(),
                ReplyError::FrameBadCursor,
            ),
            ([&good[..20], b"\x02"].concat(), ReplyError::FrameBadFlags(2)),
            ([&good[..20], b"\x00\x00\x00\xff"].concat(), ReplyError::FrameTextNotUtf8),
            (b"L\x01x".to_vec(), ReplyError::FrameBadMember),
            (
                [encode_leave(&PresenceMember { node: 1, conn: 2 }, None), b"x".to_vec()].concat(),
                ReplyError::FrameTrailingBytes,
            ),
        ];
        for (frame, error) in cases {
            assert_eq!(parse_frame(&frame, &limits), Err(error.clone()), "{frame:?}");
        }
        let member = PresenceMember { node: 1, conn: 2 };
        let long_user = PresenceValue { user: Arc::from("abc"), info: Arc::from(&[][..]) };
        assert_eq!(parse_frame(&encode_join(&member, &long_user), &limits), Err(ReplyError::FrameTooLarge));
        let long_info = PresenceValue { user: Arc::from(""), info: Arc::from(&b"abc"[..]) };
        assert_eq!(parse_frame(&encode_join(&member, &long_info), &limits), Err(ReplyError::FrameTooLarge));
        assert_eq!(
            parse_frame(&encode_leave(&member, Some(&long_info)), &limits),
            Err(ReplyError::FrameTooLarge)
        );
        assert_eq!(parse_frame(b"P\x01x", &limits), Err(ReplyError::FrameBadMember));
    }
}
