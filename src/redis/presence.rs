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

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::redis::frame::FrameLimits;
use crate::redis::keys::ChannelKeys;
use crate::redis::resp::{Command, Value};
use crate::redis::script::Invoke;
use crate::redis::ReplyError;

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

/// The presence script. KEYS: the presence sorted set, the info hash. ARGV: operation
/// (`add`, `remove`, `list`), ttl (ms), the pub/sub channel, how many expired members one
/// call removes at most, then for `add` member/value pairs, for `remove` members, for `list`
/// the most members to return.
///
/// Replies: `add` the number of new members, `remove` the number removed, `list` a flat
/// array member, value, member, value, ...
pub const PRESENCE_SCRIPT: &str = r#"-- pushwire presence v1 (src/redis/presence.rs)
local zkey, hkey = KEYS[1], KEYS[2]
local op, ttl, chan, max_prune = ARGV[1], tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
-- Members whose node stopped refreshing them: removed, and every node told.
local expired = redis.call('ZRANGEBYSCORE', zkey, '-inf', now, 'LIMIT', 0, max_prune)
for _, m in ipairs(expired) do
  redis.call('ZREM', zkey, m)
  redis.call('HDEL', hkey, m)
  redis.call('PUBLISH', chan, 'L' .. string.char(#m) .. m)
end
if op == 'add' then
  local added = 0
  for i = 5, #ARGV - 1, 2 do
    local m, v = ARGV[i], ARGV[i + 1]
    if #m > 255 then return redis.error_reply('PUSHWIRE member longer than 255 bytes') end
    redis.call('HSET', hkey, m, v)
    if redis.call('ZADD', zkey, now + ttl, m) == 1 then
      added = added + 1
      redis.call('PUBLISH', chan, 'J' .. string.char(#m) .. m .. v)
    end
  end
  redis.call('PEXPIRE', zkey, ttl)
  redis.call('PEXPIRE', hkey, ttl)
  return added
elseif op == 'remove' then
  local removed = 0
  for i = 5, #ARGV do
    local m = ARGV[i]
    if redis.call('ZREM', zkey, m) == 1 then
      removed = removed + 1
      redis.call('HDEL', hkey, m)
      redis.call('PUBLISH', chan, 'L' .. string.char(#m) .. m)
    end
  end
  return removed
elseif op == 'list' then
  local out = {}
  local members = redis.call('ZRANGE', zkey, 0, tonumber(ARGV[5]) - 1)
  for _, m in ipairs(members) do
    -- A member whose info is gone (evicted under maxmemory) is left out.
    local v = redis.call('HGET', hkey, m)
    if v then
      out[#out + 1] = m
      out[#out + 1] = v
    end
  end
  return out
end
return redis.error_reply('PUSHWIRE unknown presence operation')
"#;

/// How many expired members one presence call removes at most, so one call's time is
/// bounded; the next call removes more.
pub const MAX_PRUNE_PER_CALL: usize = 1000;

fn presence_command(keys: &ChannelKeys, invoke: Invoke, op: &str, ttl: Duration) -> Command {
    invoke
        .command(PRESENCE_SCRIPT, crate::redis::script::presence_script_sha1())
        .arg("2")
        .arg(&keys.presence)
        .arg(&keys.presence_info)
        .arg(op)
        .arg_u64(ttl_millis(ttl))
        .arg(&keys.pubsub)
        .arg_u64(MAX_PRUNE_PER_CALL as u64)
}

/// A ttl in whole milliseconds, at least 1 (Redis refuses a zero `PEXPIRE` as an expiry in
/// the past).
pub(crate) fn ttl_millis(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
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

/// The reply of `list`: members and their values. Members or values that do not parse are
/// errors (only pushwire writes these keys).
pub fn parse_list_reply(
    value: &Value,
    limits: &FrameLimits,
) -> Result<Vec<(PresenceMember, PresenceValue)>, ReplyError> {
    ReplyError::check(value)?;
    let items = value.as_array().ok_or(ReplyError::Unexpected("an array of members and values"))?;
    if items.len() % 2 != 0 {
        return Err(ReplyError::Unexpected("member and value pairs"));
    }
    items
        .chunks(2)
        .map(|pair| {
            let member =
                pair[0].as_bytes().and_then(PresenceMember::parse).ok_or(ReplyError::FrameBadMember)?;
            let value = pair[1].as_bytes().ok_or(ReplyError::Unexpected("a presence value"))?;
            Ok((member, PresenceValue::parse(value, limits)?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

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
            Value::BulkString(member.to_string().into_bytes()),
            Value::BulkString(encoded),
        ]);
        assert_eq!(parse_list_reply(&reply, &FrameLimits::default()), Ok(vec![(member, value)]));
        let odd = Value::Array(vec![Value::BulkString(member.to_string().into_bytes())]);
        assert!(parse_list_reply(&odd, &FrameLimits::default()).is_err());
        assert_eq!(parse_count_reply(&Value::Integer(3)), Ok(3));
        assert!(parse_count_reply(&Value::Integer(-1)).is_err());
        assert!(matches!(parse_count_reply(&Value::Error(b"ERR x".to_vec())), Err(ReplyError::Server(_))));
    }

    #[test]
    fn presence_ttl_is_whole_milliseconds_at_least_one() {
        assert_eq!(ttl_millis(Duration::ZERO), 1);
        assert_eq!(ttl_millis(Duration::from_micros(1500)), 1);
        assert_eq!(ttl_millis(Duration::from_secs(30)), 30_000);
    }
}
