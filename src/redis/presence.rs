//! Cluster-wide presence: who is subscribed to a channel, on every node, with expiry so a
//! node that dies leaves no ghost members; and the join and leave frames every node receives.
//!
//! Implements: the presence member and value encodings, [`PRESENCE_SCRIPT`] (one Lua script
//! for add/refresh, remove and list) and its command builders and reply parsers.
//!
//! # Data
//!
//! Per channel, two keys ([`ChannelKeys::presence`], [`ChannelKeys::presence_info`]):
//! a sorted set member → expiry time in milliseconds, and a hash member → value. A member is
//! one subscription: the node's id and the connection's id ([`PresenceMember`], text
//! `NODE-CONN`, 16 hex digits each), so members of different nodes never collide and a node
//! knows its own. The value is the user id and the client's info ([`PresenceValue`]).
//!
//! # Expiry
//!
//! Times are Redis's clock (`TIME` inside the script), never a node's, so nodes with skewed
//! clocks agree. `add` sets a member's expiry to now + `ttl`; each node re-adds its live
//! members every `ttl / 3` (one call per channel with all of them). Every call first removes
//! up to `max_prune` members whose expiry has passed and publishes a leave frame for each: a
//! node that died (kill -9) stops refreshing, and its members are gone at most `ttl` after
//! its last refresh, as soon as any node touches the channel's presence. Both keys get a key
//! expiry of `ttl` on every `add`, so if every node dies the keys vanish by themselves.
//!
//! # Join and leave
//!
//! The script publishes a join frame when `add` creates a member (not on a refresh) and a
//! leave frame when `remove` deletes one or a member expires, on the channel's pub/sub
//! channel, so subscribers of the channel on every node receive them in order with the
//! messages.
//!
//! Does not: hold presence in memory (the broker may cache it), or decide who may see it.

use std::time::Duration;

use crate::hub::backend::{ConnAddr, ConnId};
use crate::hub::SinkId;
use crate::redis::frame::FrameLimits;
use crate::redis::keys::ChannelKeys;
use crate::redis::resp::{Command, Value};
use crate::redis::script::{presence_script_sha1, ttl_millis, Invoke};
use crate::redis::ReplyError;

// The member and value travel in join and leave frames, so `frame.rs` defines them; the script
// lives with the other Lua scripts in `script.rs`.
pub use crate::redis::frame::{PresenceMember, PresenceValue};
pub use crate::redis::script::PRESENCE_SCRIPT;

/// The connection part of a [`PresenceMember`] for a connection of this node: its event loop
/// (6 bits), slab key (26 bits) and generation (32 bits). Keys at or above 2^26 (67 million
/// connections on one loop, beyond any open-file limit) would alias.
pub fn conn_number(addr: ConnAddr) -> u64 {
    u64::from(addr.sink.index()) << 58
        | ((addr.conn.key() as u64) & ((1 << 26) - 1)) << 32
        | u64::from(addr.conn.generation)
}

/// The connection a [`conn_number`] names (every number names one: 6 bits of loop index are
/// below [`SinkId::MAX_SINKS`]).
pub fn conn_addr(number: u64) -> ConnAddr {
    let sink = SinkId::new((number >> 58) as u8).expect("6 bits are below MAX_SINKS");
    let key = ((number >> 32) & ((1 << 26) - 1)) as usize;
    ConnAddr { sink, conn: ConnId::new(key, number as u32) }
}

/// How many expired members one presence call removes at most, so one call's time is
/// bounded; the next call removes more.
pub const MAX_PRUNE_PER_CALL: usize = 1000;

fn presence_command(keys: &ChannelKeys, invoke: Invoke, op: &str, ttl: Duration) -> Command {
    invoke
        .command(PRESENCE_SCRIPT, presence_script_sha1())
        .arg("2")
        .arg(&keys.presence)
        .arg(&keys.presence_info)
        .arg(op)
        .arg_u64(ttl_millis(ttl))
        .arg(&keys.pubsub)
        .arg_u64(MAX_PRUNE_PER_CALL as u64)
}

/// Adds (or refreshes) `members` with expiry `ttl`: one call per channel per refresh round.
/// Reply: the number of members that were new (joins published); parse with
/// [`parse_count_reply`].
pub fn add_command(
    keys: &ChannelKeys,
    members: &[(PresenceMember, PresenceValue)],
    ttl: Duration,
    invoke: Invoke,
) -> Command {
    let mut command = presence_command(keys, invoke, "add", ttl);
    let mut value = Vec::new();
    for (member, v) in members {
        command.push_arg(member.to_string().as_bytes());
        value.clear();
        v.encode(&mut value);
        command.push_arg(&value);
    }
    command
}

/// Removes `members` (their subscriptions ended). Reply: the number removed (leaves
/// published); parse with [`parse_count_reply`].
pub fn remove_command(keys: &ChannelKeys, members: &[PresenceMember], invoke: Invoke) -> Command {
    // The ttl is not used by `remove`; 1 ms keeps the argument list uniform.
    let mut command = presence_command(keys, invoke, "remove", Duration::from_millis(1));
    for member in members {
        command.push_arg(member.to_string().as_bytes());
    }
    command
}

/// Lists at most `max_members` live members, oldest expiry first. Parse with
/// [`parse_list_reply`].
pub fn list_command(keys: &ChannelKeys, max_members: usize, invoke: Invoke) -> Command {
    presence_command(keys, invoke, "list", Duration::from_millis(1)).arg_u64(max_members as u64)
}

/// The integer reply of `add` and `remove`.
pub fn parse_count_reply(value: &Value) -> Result<u64, ReplyError> {
    ReplyError::check(value)?;
    value.as_integer().and_then(|n| u64::try_from(n).ok()).ok_or(ReplyError::Unexpected("a count"))
}

/// A channel's presence as `list` read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    /// How many members the channel has, those past the most listed included.
    pub count: u64,
    /// The members listed and their values.
    pub members: Vec<(PresenceMember, PresenceValue)>,
}

/// The reply of `list`: the member count, then members and their values. Members or values
/// that do not parse are errors (only pushwire writes these keys).
pub fn parse_list_reply(value: &Value, limits: &FrameLimits) -> Result<Listing, ReplyError> {
    ReplyError::check(value)?;
    let items = value.as_array().ok_or(ReplyError::Unexpected("an array of members and values"))?;
    let [count, pairs @ ..] = items else {
        return Err(ReplyError::Unexpected("a member count"));
    };
    let count =
        count.as_integer().and_then(|n| u64::try_from(n).ok()).ok_or(ReplyError::Unexpected("a count"))?;
    if pairs.len() % 2 != 0 {
        return Err(ReplyError::Unexpected("member and value pairs"));
    }
    let members = pairs
        .chunks(2)
        .map(|pair| {
            let member =
                pair[0].as_bytes().and_then(PresenceMember::parse).ok_or(ReplyError::FrameBadMember)?;
            let value = pair[1].as_bytes().ok_or(ReplyError::Unexpected("a presence value"))?;
            Ok((member, PresenceValue::parse(value, limits)?))
        })
        .collect::<Result<_, ReplyError>>()?;
    Ok(Listing { count, members })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn presence_member_text_form() {
        let member = PresenceMember { node: 0x0123_4567_89ab_cdef, conn: 7 };
        let text = member.to_string();
        assert_eq!(text, "0123456789abcdef-0000000000000007");
        assert_eq!(text.len(), PresenceMember::TEXT_BYTES);
        assert_eq!(PresenceMember::parse(text.as_bytes()), Some(member));
        assert_eq!(PresenceMember::parse(b"0123456789ABCDEF-0000000000000007"), Some(member));
        for bad in [
            &b""[..],
            b"0123456789abcdef_0000000000000007",
            b"0123456789abcdeg-0000000000000007",
            b"0123456789abcdef-000000000000007",
        ] {
            assert_eq!(PresenceMember::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn presence_value_encoding() {
        let value = PresenceValue { user: Arc::from("bob"), info: Arc::from(&b"\x00\xff"[..]) };
        let mut out = Vec::new();
        value.encode(&mut out);
        assert_eq!(out, b"\x00\x03bob\x00\xff");
        assert_eq!(PresenceValue::parse(&out, &FrameLimits::default()), Ok(value));
        assert_eq!(PresenceValue::parse(b"\x00", &FrameLimits::default()), Err(ReplyError::FrameTruncated));
        assert_eq!(
            PresenceValue::parse(b"\x00\x02a", &FrameLimits::default()),
            Err(ReplyError::FrameTruncated)
        );
        assert_eq!(
            PresenceValue::parse(b"\x00\x01\xff", &FrameLimits::default()),
            Err(ReplyError::FrameTextNotUtf8)
        );
    }

    #[test]
    fn presence_list_reply_parsing() {
        let member = PresenceMember { node: 1, conn: 2 };
        let value = PresenceValue { user: Arc::from("u"), info: Arc::from(&b"i"[..]) };
        let mut encoded = Vec::new();
        value.encode(&mut encoded);
        let reply = Value::Array(vec![
            Value::Integer(3),
            Value::BulkString(member.to_string().into_bytes()),
            Value::BulkString(encoded),
        ]);
        assert_eq!(
            parse_list_reply(&reply, &FrameLimits::default()),
            Ok(Listing { count: 3, members: vec![(member, value)] }),
            "a count past the members listed"
        );
        let odd = Value::Array(vec![Value::Integer(1), Value::BulkString(member.to_string().into_bytes())]);
        assert!(parse_list_reply(&odd, &FrameLimits::default()).is_err());
        let no_count = Value::Array(vec![]);
        assert!(parse_list_reply(&no_count, &FrameLimits::default()).is_err());
        let bad_count = Value::Array(vec![Value::Integer(-1)]);
        assert!(parse_list_reply(&bad_count, &FrameLimits::default()).is_err());
        assert_eq!(parse_count_reply(&Value::Integer(3)), Ok(3));
        assert!(parse_count_reply(&Value::Integer(-1)).is_err());
        assert!(matches!(parse_count_reply(&Value::Error(b"ERR x".to_vec())), Err(ReplyError::Server(_))));
    }

    #[test]
    fn presence_conn_number_round_trips_every_loop_key_and_generation() {
        for (sink, key, generation) in [(0u8, 0usize, 0u32), (63, (1 << 26) - 1, u32::MAX), (5, 12_345, 7)] {
            let addr = ConnAddr { sink: SinkId::new(sink).unwrap(), conn: ConnId::new(key, generation) };
            assert_eq!(conn_addr(conn_number(addr)), addr);
        }
        assert_eq!(conn_addr(u64::MAX).sink.index(), 63, "every number names a loop");
    }

    #[test]
    fn presence_ttl_is_whole_milliseconds_at_least_one() {
        assert_eq!(ttl_millis(Duration::ZERO), 1);
        assert_eq!(ttl_millis(Duration::from_micros(1500)), 1);
        assert_eq!(ttl_millis(Duration::from_secs(30)), 30_000);
    }
}
