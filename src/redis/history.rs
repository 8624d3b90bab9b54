//! Reading a channel's history stream directly: `XRANGE` by offset and its reply as hub
//! messages.
//!
//! Implements: [`xrange_command`] (entries from an offset on, with `COUNT`) and
//! [`parse_entries`] (the `XRANGE` reply, also what the channel script's `read` returns
//! inside its reply). Entry ids are `OFFSET-0` and the one field `m` holds the message frame
//! ([`crate::redis::frame`]), which carries its own cursor: the parser checks that the id and
//! the frame agree.
//!
//! When to use which: a resume needs the channel's epoch and last offset from the same instant
//! as the entries (the gap rules depend on them), so it goes through the channel script's
//! `read` ([`crate::redis::script::read_command`]). Repairing a hole in live deliveries may use
//! a bare `XRANGE` ([`xrange_command`]): each entry carries its epoch, so entries of a newer
//! epoch (the channel was restarted meanwhile) are recognised and treated as a gap by the
//! caller, never delivered under the old one.
//!
//! Does not: apply the gap rules (see [`crate::redis::script::parse_read_reply`]).

use std::sync::Arc;
use std::time::Instant;

use crate::hub::{ChannelName, Message};
use crate::redis::frame::{parse_frame, Frame, FrameLimits};
use crate::redis::keys::ChannelKeys;
use crate::redis::resp::{Command, Value};
use crate::redis::ReplyError;

/// `XRANGE hist (after + 1) + COUNT count`: at most `count` (at least 1) entries with offsets
/// above `after`, oldest first.
pub fn xrange_command(keys: &ChannelKeys, after: u64, count: usize) -> Command {
    Command::new("XRANGE")
        .arg(&keys.history)
        .arg_u64(after.saturating_add(1))
        .arg("+")
        .arg("COUNT")
        .arg_u64(count.max(1) as u64)
}

/// Parses an `XRANGE` reply (`[[id, [field, value, ...]], ...]`) into messages of `channel`,
/// oldest first, each stamped `published_at = received_at`. Checks: ids are `OFFSET-0` with
/// strictly increasing offsets, each entry has an `m` field holding a message frame whose
/// offset is the id's. Epochs are not checked here (the caller compares them with its own).
pub fn parse_entries(
    channel: &ChannelName,
    value: &Value,
    limits: &FrameLimits,
    received_at: Instant,
) -> Result<Vec<Arc<Message>>, ReplyError> {
    ReplyError::check(value)?;
    let entries = value.as_array().ok_or(ReplyError::Unexpected("an array of stream entries"))?;
    let mut messages: Vec<Arc<Message>> = Vec::with_capacity(entries.len());
    for entry in entries {
        let Some([id, fields]) = entry.as_array() else {
            return Err(ReplyError::Unexpected("a stream entry [id, fields]"));
        };
        let offset =
            id.as_bytes().and_then(parse_entry_id).ok_or(ReplyError::Unexpected("an entry id OFFSET-0"))?;
        let fields = fields.as_array().ok_or(ReplyError::Unexpected("entry fields"))?;
        let frame = fields
            .chunks(2)
            .find(|pair| pair.len() == 2 && pair[0].as_bytes() == Some(b"m"))
            .and_then(|pair| pair[1].as_bytes())
            .ok_or(ReplyError::Unexpected("an entry field m"))?;
        let Frame::Message { id, event, payload } = parse_frame(frame, limits)? else {
            return Err(ReplyError::Unexpected("a message frame in the history"));
        };
        let in_order = messages.last().is_none_or(|prev| prev.id.offset < offset);
        if id.offset != offset || !in_order {
            return Err(ReplyError::EntryMismatch { entry_offset: offset });
        }
        messages.push(Arc::new(Message::new(channel.clone(), id, event, payload, received_at)));
    }
    Ok(messages)
}

/// `OFFSET-0` → OFFSET (decimal, no sign, no leading `+`).
fn parse_entry_id(id: &[u8]) -> Option<u64> {
    let digits = id.strip_suffix(b"-0")?;
    if digits.is_empty() || digits.len() > 20 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::{Cursor, Epoch, Payload};
    use crate::redis::frame::encode_message;
    use crate::redis::keys::Namespace;

    fn channel() -> ChannelName {
        ChannelName::parse("news").unwrap()
    }

    fn bulk(bytes: impl Into<Vec<u8>>) -> Value {
        Value::BulkString(bytes.into())
    }

    fn entry(id: &str, fields: Vec<Value>) -> Value {
        Value::Array(vec![bulk(id), Value::Array(fields)])
    }

    fn frame(offset: u64) -> Vec<u8> {
        encode_message(
            Cursor { epoch: Epoch(5), offset },
            Some("e"),
            &Payload::Binary(Arc::from(&[offset as u8][..])),
        )
    }

    fn parse(value: &Value) -> Result<Vec<Arc<Message>>, ReplyError> {
        parse_entries(&channel(), value, &FrameLimits::default(), Instant::now())
    }

    #[test]
    fn xrange_command_from_the_offset_after() {
        let keys = ChannelKeys::new(&Namespace::default(), &channel());
        assert_eq!(
            xrange_command(&keys, 41, 100),
            Command::new("XRANGE").arg("pushwire:{news}:hist").arg("42").arg("+").arg("COUNT").arg("100")
        );
        assert_eq!(xrange_command(&keys, u64::MAX, 0), xrange_command(&keys, u64::MAX - 1, 1));
    }

    #[test]
    fn parse_entries_builds_hub_messages() {
        let reply = Value::Array(vec![
            entry("7-0", vec![bulk("m"), bulk(frame(7))]),
            entry("8-0", vec![bulk("x"), bulk("ignored"), bulk("m"), bulk(frame(8))]),
        ]);
        let messages = parse(&reply).unwrap();
        assert_eq!(messages.len(), 2);
        assert_eq!(messages[1].id, Cursor { epoch: Epoch(5), offset: 8 });
        assert_eq!(messages[1].event.as_deref(), Some("e"));
        assert_eq!(messages[1].payload, Payload::Binary(Arc::from(&[8u8][..])));
        assert_eq!(messages[0].channel, channel());
        assert!(parse(&Value::Array(vec![])).unwrap().is_empty());
    }

    #[test]
    fn parse_entries_rejections() {
        let cases = [
            (Value::Integer(1), "not an array"),
            (Value::Array(vec![bulk("7-0")]), "entry not a pair"),
            (Value::Array(vec![entry("7-1", vec![bulk("m"), bulk(frame(7))])]), "sequence not 0"),
            (Value::Array(vec![entry("x-0", vec![bulk("m"), bulk(frame(7))])]), "id not decimal"),
            (Value::Array(vec![entry("7-0", vec![bulk("n"), bulk(frame(7))])]), "no m field"),
            (Value::Array(vec![entry("7-0", vec![bulk("m")])]), "m without value"),
        ];
        for (value, why) in cases {
            assert!(matches!(parse(&value), Err(ReplyError::Unexpected(_))), "{why}");
        }
        let mismatch = Value::Array(vec![entry("6-0", vec![bulk("m"), bulk(frame(7))])]);
        assert_eq!(parse(&mismatch).unwrap_err(), ReplyError::EntryMismatch { entry_offset: 6 });
        let backwards = Value::Array(vec![
            entry("7-0", vec![bulk("m"), bulk(frame(7))]),
            entry("7-0", vec![bulk("m"), bulk(frame(7))]),
        ]);
        assert_eq!(parse(&backwards).unwrap_err(), ReplyError::EntryMismatch { entry_offset: 7 });
        let bad_frame = Value::Array(vec![entry("7-0", vec![bulk("m"), bulk("Zzz")])]);
        assert_eq!(parse(&bad_frame).unwrap_err(), ReplyError::UnknownFrameKind(b'Z'));
        assert_eq!(
            parse(&Value::Error(b"WRONGTYPE x".to_vec())).unwrap_err(),
            ReplyError::Server("WRONGTYPE x".into())
        );
    }

    #[test]
    fn entry_ids() {
        assert_eq!(parse_entry_id(b"1-0"), Some(1));
        assert_eq!(parse_entry_id(b"18446744073709551615-0"), Some(u64::MAX));
        for bad in [&b"-0"[..], b"1", b"1-00", b"+1-0", b"18446744073709551616-0", b"1-0 "] {
            assert_eq!(parse_entry_id(bad), None, "{bad:?}");
        }
    }
}
