//! The channel script: one Lua script that publishes into a channel or reads its history,
//! creating the channel's epoch when missing and starting a new one when the data was written
//! by another Redis incarnation.
//!
//! Implements: [`CHANNEL_SCRIPT`], how scripts are invoked ([`Invoke`]: `EVALSHA` with the
//! SHA-1 computed here, `EVAL` with the source after a `NOSCRIPT` error, `SCRIPT LOAD` once per
//! connection), the publish and read commands and their reply parsers, and the gap rules of
//! [`crate::hub`] applied to what the script returns ([`parse_read_reply`]).
//!
//! # What the script does (KEYS: meta hash, history stream)
//!
//! 1. Reads the meta hash: `epoch`, `offset`, `inc`. If the hash is missing, or its `inc` is
//!    not the caller's [`Incarnation`], it starts a new epoch: the caller's candidate (random
//!    64 bits drawn by the node, folded with the incarnation: [`epoch_candidate`]; refused with `PUSHWIRE epoch collision` in the 2^-64 case
//!    where it equals the stored one, and the node retries with another), offset 0, and the
//!    history stream deleted (its ids restart at 1).
//! 2. `pub`: offset + 1; the frame `'M' len EPOCH:OFFSET` + the node's tail
//!    ([`crate::redis::frame`]); `XADD hist MAXLEN ~ N OFFSET-0 m FRAME`; `HSET meta offset`;
//!    `PEXPIRE` both keys by the history ttl; `PUBLISH` the frame on the channel's pub/sub
//!    channel. Replies `[epoch, offset, created]`. Redis runs a script atomically, so every
//!    node hands out the same `EPOCH:OFFSET` and pub/sub carries the frames in offset order.
//! 3. `read`: refreshes the meta's expiry (so a polled epoch stays valid, as in the
//!    in-memory hub; a node with subscribers of the channel refreshes it too, every third of
//!    the ttl: [`touch_command`]) and returns `[epoch, last offset, created, entries]`, the
//!    entries being `XRANGE` from the first offset after the caller's cursor (from the oldest
//!    for a cursor of another epoch; none for the tail), with `COUNT`. Meta and entries come
//!    from one atomic step, so the gap rules see a consistent channel.
//!
//! Stream entry ids are `OFFSET-0`: the millisecond part of a stream id is a free 64-bit
//! number, ids compare by it first, and the incomplete id `N` in `XRANGE key N +` means `N-0`,
//! so "from offset N" is a plain range. `MAXLEN ~` trims whole macro nodes, keeping at least
//! the configured number of messages (a few more at times), in O(1) amortized.
//!
//! # Incarnations and the guarantee
//!
//! A Redis restart from an RDB or AOF file, or a failover to a replica that lagged, can roll a
//! channel's meta back: offsets already handed out would be handed out again for other
//! messages under the same epoch, and a client's cursor would silently skip them. To prevent
//! it, the meta records the [`Incarnation`] (a digest of the server's `run_id`, new at every
//! process start, and `master_replid`, new at every promotion of a replica) that created its
//! epoch, and every script call passes the incarnation of the server it runs on (read with
//! `INFO` on the same connection right after connecting, see [`crate::redis::info`]). Data from
//! another incarnation gets a new epoch at its first publish or read.
//!
//! **Guarantee:** an `EPOCH:OFFSET` names at most one message, ever. Two publishes that return
//! the same epoch ran on the same Redis process during one stint as master, which applies
//! scripts in one order, so their offsets differ. Hence a client resuming from any cursor gets
//! exactly the messages after it, or an explicit gap. Costs and limits:
//! - Every channel gets a new epoch after *any* restart or failover, even when nothing was
//!   lost (a clean `SHUTDOWN SAVE`): clients resync once (a gap) instead of resuming. We pay a
//!   false gap to never need to tell a complete snapshot from an old one.
//! - The epoch changes lazily, at the channel's first publish or read in the new incarnation;
//!   until then nothing is delivered under the old one (no script ran there).
//! - The incarnation a call passes is the one read on its connection. A connection that
//!   outlives a demotion of its server (a manual `REPLICAOF` that does not disconnect
//!   clients; Sentinel does: it kills normal clients of the instances it reconfigures) still
//!   carries the old incarnation when the server is promoted again. That is only harmful if,
//!   meanwhile, the server re-synced from a replica that lagged and never wrote the channel
//!   (its meta then carries the old incarnation). The broker narrows it: it reconnects on
//!   `READONLY`, `MASTERDOWN` and `LOADING` replies, and re-reads `INFO` every few seconds,
//!   reconnecting when the incarnation changed.
//! - Not covered: operations that load old data into a running master (`DEBUG RELOAD`,
//!   `RESTORE` of pushwire keys by hand), and split-brain writes accepted by an old master that
//!   a partition isolated (Redis's own limit; `min-replicas-to-write` narrows it). Both need an
//!   operator acting on the data directly.
//! - A channel whose meta is gone (expired, or lost in a restart without persistence) has no
//!   stored epoch to compare with: its new epoch is new because the candidate is 64 random
//!   bits folded with the incarnation ([`epoch_candidate`]), as the in-memory hub's epochs
//!   are new because its seed is random.
//! - Offsets are exact up to 2^53 - 1 per epoch (Lua numbers are doubles); the script refuses
//!   to go past with `PUSHWIRE offsets exhausted`.
//!
//! Does not: send anything, or keep the SHA's load state (the broker does: one `SCRIPT LOAD`
//! per connection, `EVAL` on `NOSCRIPT`).

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use sha1::{Digest, Sha1};

use crate::hub::{ChannelName, Cursor, Epoch, Message, Payload, Replay, Since};
use crate::redis::frame::{message_tail, FrameLimits};
use crate::redis::history::parse_entries;
use crate::redis::info::Incarnation;
use crate::redis::keys::ChannelKeys;
use crate::redis::resp::{Command, Value};
use crate::redis::ReplyError;

/// The channel script (see the module docs). KEYS: meta, history. ARGV: operation (`pub` or
/// `read`), incarnation, epoch candidate (16 hex digits), ttl (ms), then for `pub`: MAXLEN,
/// pub/sub channel, frame tail; for `read`: cursor epoch (empty for the tail), cursor offset,
/// COUNT.
pub const CHANNEL_SCRIPT: &str = r#"-- pushwire channel v1 (src/redis/script.rs)
local meta, hist = KEYS[1], KEYS[2]
local op, inc, candidate, ttl = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local stored = redis.call('HMGET', meta, 'epoch', 'offset', 'inc')
local epoch, offset, created = stored[1], tonumber(stored[2]), 0
local function start_epoch()
  if candidate == epoch then return false end
  epoch, offset, created = candidate, 0, 1
  redis.call('DEL', hist)
  redis.call('HSET', meta, 'epoch', epoch, 'offset', 0, 'inc', inc)
  return true
end
-- No channel, or one written under another Redis incarnation (a restart or a failover may
-- have rolled it back): a new epoch, so no offset is ever handed out twice.
if not epoch or not offset or stored[3] ~= inc then
  if not start_epoch() then return redis.error_reply('PUSHWIRE epoch collision') end
end
redis.call('PEXPIRE', meta, ttl)
if op == 'pub' then
  if offset >= 9007199254740991 then return redis.error_reply('PUSHWIRE offsets exhausted') end
  local function append()
    offset = offset + 1
    local id = string.format('%.0f', offset)
    local cursor = epoch .. ':' .. id
    local frame = 'M' .. string.char(#cursor) .. cursor .. ARGV[7]
    local added = redis.pcall('XADD', hist, 'MAXLEN', '~', ARGV[5], id .. '-0', 'm', frame)
    if type(added) == 'table' and added.err then return nil end
    return frame
  end
  local frame = append()
  if not frame then
    -- The stream is ahead of the meta (something else wrote it): start over, never reuse.
    if not start_epoch() then return redis.error_reply('PUSHWIRE epoch collision') end
    redis.call('PEXPIRE', meta, ttl)
    frame = append()
  end
  redis.call('HSET', meta, 'offset', string.format('%.0f', offset))
  redis.call('PEXPIRE', hist, ttl)
  redis.call('PUBLISH', ARGV[6], frame)
  return {epoch, offset, created}
elseif op == 'read' then
  local entries = {}
  local since_epoch, since_offset = ARGV[5], tonumber(ARGV[6])
  if since_epoch ~= '' then
    local start = nil
    if since_epoch ~= epoch then
      start = '-'
    elseif since_offset < offset then
      start = string.format('%.0f', since_offset + 1)
    end
    if start then entries = redis.call('XRANGE', hist, start, '+', 'COUNT', ARGV[7]) end
  end
  return {epoch, offset, created, entries}
end
return redis.error_reply('PUSHWIRE unknown channel operation')
"#;

/// Lowercase hex SHA-1 of a script: what `SCRIPT LOAD` returns and `EVALSHA` takes.
pub fn script_sha1(source: &str) -> String {
    Sha1::digest(source.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-1 of [`CHANNEL_SCRIPT`].
pub fn channel_script_sha1() -> &'static str {
    static SHA: OnceLock<String> = OnceLock::new();
    SHA.get_or_init(|| script_sha1(CHANNEL_SCRIPT))
}

/// The presence script. KEYS: the presence sorted set, the info hash. ARGV: operation
/// (`add`, `remove`, `list`), ttl (ms), the pub/sub channel, how many expired members one
/// call removes at most, then for `add` member/value pairs, for `remove` members, for `list`
/// the most members to return.
///
/// Replies: `add` the number of new members, `remove` the number removed, `list` a flat
/// array: the number of members (all of them, past the most listed too), then member, value,
/// member, value, ...
pub const PRESENCE_SCRIPT: &str = r#"-- pushwire presence v1 (src/redis/presence.rs)
local zkey, hkey = KEYS[1], KEYS[2]
local op, ttl, chan, max_prune = ARGV[1], tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
-- A member gone from the set: its value deleted, and every node told who left, with the
-- value when it is still there ('P', laid out as a join), else without ('L').
local function leave(m)
  local v = redis.call('HGET', hkey, m)
  redis.call('HDEL', hkey, m)
  if v then
    redis.call('PUBLISH', chan, 'P' .. string.char(#m) .. m .. v)
  else
    redis.call('PUBLISH', chan, 'L' .. string.char(#m) .. m)
  end
end
-- Members whose node stopped refreshing them: removed, and every node told.
local expired = redis.call('ZRANGEBYSCORE', zkey, '-inf', now, 'LIMIT', 0, max_prune)
for _, m in ipairs(expired) do
  redis.call('ZREM', zkey, m)
  leave(m)
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
      leave(m)
    end
  end
  return removed
elseif op == 'list' then
  local out = {redis.call('ZCARD', zkey)}
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

/// A ttl in whole milliseconds, at least 1 (Redis refuses a zero `PEXPIRE` as an expiry in
/// the past).
pub fn ttl_millis(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// SHA-1 of [`PRESENCE_SCRIPT`].
pub fn presence_script_sha1() -> &'static str {
    static SHA: OnceLock<String> = OnceLock::new();
    SHA.get_or_init(|| script_sha1(PRESENCE_SCRIPT))
}

/// `SCRIPT LOAD` for each of pushwire's scripts: send once after connecting (pipelined with
/// the handshake); each reply is the script's SHA-1.
pub fn load_commands() -> [Command; 2] {
    [
        Command::new("SCRIPT").arg("LOAD").arg(CHANNEL_SCRIPT),
        Command::new("SCRIPT").arg("LOAD").arg(PRESENCE_SCRIPT),
    ]
}

/// How a script is invoked: by SHA-1 (the normal case), or with its source (after a
/// `NOSCRIPT` reply, e.g. when the server restarted or `SCRIPT FLUSH` ran between the load and
/// the call; `EVAL` also loads it for the next `EVALSHA`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invoke {
    /// `EVALSHA sha1 ...`.
    Sha,
    /// `EVAL source ...`.
    Source,
}

impl Invoke {
    /// The command's first two arguments for the script `source` whose SHA-1 is `sha1`.
    pub fn command(self, source: &str, sha1: &str) -> Command {
        match self {
            Invoke::Sha => Command::new("EVALSHA").arg(sha1),
            Invoke::Source => Command::new("EVAL").arg(source),
        }
    }
}

/// The epoch candidate for a script call: the node's `random` 64 bits folded with the
/// incarnation (an XOR, a bijection, so a random input stays uniformly random). Randomness
/// alone makes a repeat 2^-64 unlikely; the fold also keeps a node whose generator repeats
/// itself (a fixed seed, a cloned VM) from drawing an epoch it drew under an earlier Redis
/// incarnation, where a channel whose meta was lost (a restart without persistence) could
/// otherwise get its old epoch back and old cursors would look valid.
pub fn epoch_candidate(random: u64, incarnation: Incarnation) -> Epoch {
    Epoch(random ^ incarnation.raw())
}

/// What every channel script call needs besides its operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScriptContext {
    /// The incarnation of the server the connection talks to (read by `INFO` after connecting).
    pub incarnation: Incarnation,
    /// The epoch to use if the script starts one: [`epoch_candidate`] of 64 random bits drawn
    /// by the node per call.
    pub epoch_candidate: Epoch,
    /// How long a channel's keys live after its last publish (the meta: after its last read
    /// too); Redis forgets the channel after that, and its next use starts a new epoch.
    pub history_ttl: Duration,
}

fn channel_command(keys: &ChannelKeys, context: &ScriptContext, op: &str, invoke: Invoke) -> Command {
    invoke
        .command(CHANNEL_SCRIPT, channel_script_sha1())
        .arg("2")
        .arg(&keys.meta)
        .arg(&keys.history)
        .arg(op)
        .arg(context.incarnation.to_string())
        .arg(context.epoch_candidate.to_string())
        .arg_u64(ttl_millis(context.history_ttl))
}

/// Publishes one message: the history keeps about `max_history_messages` (`MAXLEN ~`).
/// Parse the reply with [`parse_publish_reply`].
pub fn publish_command(
    keys: &ChannelKeys,
    context: &ScriptContext,
    max_history_messages: usize,
    event: Option<&str>,
    payload: &Payload,
    invoke: Invoke,
) -> Command {
    let mut tail = Vec::new();
    message_tail(event, payload, &mut tail);
    channel_command(keys, context, "pub", invoke)
        .arg_u64(max_history_messages as u64)
        .arg(&keys.pubsub)
        .arg(tail)
}

/// Reads at most `max_messages` (at least 1) of the history after `since`, with the channel's
/// epoch and last offset. Parse the reply with [`parse_read_reply`].
pub fn read_command(
    keys: &ChannelKeys,
    context: &ScriptContext,
    since: Since,
    max_messages: usize,
    invoke: Invoke,
) -> Command {
    let (epoch, offset) = match since {
        Since::Tail => (String::new(), 0),
        Since::After(cursor) => (cursor.epoch.to_string(), cursor.offset),
    };
    channel_command(keys, context, "read", invoke)
        .arg(epoch)
        .arg_u64(offset)
        .arg_u64(max_messages.max(1) as u64)
}

/// `PEXPIRE meta ttl`: keeps a channel's epoch while subscribers on some node wait for its next
/// message, as the in-memory hub keeps a channel that has subscribers (its meta would else
/// expire `ttl` after the last publish or read, and the next publish would start a new epoch:
/// a gap where nothing was lost). A meta already gone stays gone (`PEXPIRE` creates nothing).
/// The reply is an integer, 1 or 0.
pub fn touch_command(keys: &ChannelKeys, ttl: Duration) -> Command {
    Command::new("PEXPIRE").arg(&keys.meta).arg_u64(ttl_millis(ttl))
}

/// The reply to a publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishReply {
    /// The message's cursor.
    pub id: Cursor,
    /// True when this publish started a new epoch (the channel was new, expired, or from
    /// another Redis incarnation): subscribers holding the old epoch have a gap.
    pub new_epoch: bool,
}

/// Parses `[epoch, offset, created]`.
pub fn parse_publish_reply(value: &Value) -> Result<PublishReply, ReplyError> {
    ReplyError::check(value)?;
    match value.as_array() {
        Some([epoch, offset, created]) => {
            let epoch = parse_epoch(epoch)?;
            let offset = positive(offset)?;
            if offset == 0 {
                return Err(ReplyError::Unexpected("an offset of at least 1"));
            }
            Ok(PublishReply { id: Cursor { epoch, offset }, new_epoch: flag(created)? })
        }
        _ => Err(ReplyError::Unexpected("[epoch, offset, created]")),
    }
}

/// The reply to a read, as the hub's [`Replay`] plus what paging needs.
#[derive(Debug, Clone)]
pub struct ReadReply {
    /// Messages, gap flag and the cursor to go on from, by the hub's rules.
    pub replay: Replay,
    /// The channel's last offset when the read ran: while `replay.next.offset` is below it
    /// (same epoch), more pages follow.
    pub last_offset: u64,
    /// True when this read started a new epoch.
    pub new_epoch: bool,
}

/// Parses `[epoch, last offset, created, entries]` for a read after `since`, applying the cursor
/// and gap rules of [`crate::hub`] (its module docs have the table) to what Redis holds:
///
/// - `Tail`: no messages, no gap, `next` the tail `epoch:last`.
/// - another epoch: the oldest messages, gap; `next` the last returned, or the tail.
/// - same epoch, offset above `last`: no messages, gap, `next` the tail.
/// - same epoch, offset `last`: nothing, no gap, `next` the cursor itself.
/// - same epoch, offset below `last`: the messages after it; a gap when the first one returned
///   is not offset + 1 (evicted or expired: `next` the last returned, or the tail when none is
///   left).
///
/// A page stops before the first hole in the offsets (which only a hand-made `XDEL` can make);
/// the next page then starts at the hole and reports it as a gap. Messages get
/// `published_at = received_at`.
pub fn parse_read_reply(
    channel: &ChannelName,
    since: Since,
    value: &Value,
    limits: &FrameLimits,
    received_at: Instant,
) -> Result<ReadReply, ReplyError> {
    ReplyError::check(value)?;
    let Some([epoch, last, created, entries]) = value.as_array() else {
        return Err(ReplyError::Unexpected("[epoch, last offset, created, entries]"));
    };
    let epoch = parse_epoch(epoch)?;
    let last = positive(last)?;
    let new_epoch = flag(created)?;
    let mut messages = parse_entries(channel, entries, limits, received_at)?;
    if let Some(wrong) = messages.iter().find(|m| m.id.epoch != epoch || m.id.offset > last) {
        return Err(ReplyError::EntryMismatch { entry_offset: wrong.id.offset });
    }
    if let Some(hole) = messages.windows(2).position(|w| w[1].id.offset != w[0].id.offset + 1) {
        messages.truncate(hole + 1);
    }
    let tail = Cursor { epoch, offset: last };
    let last_returned = messages.last().map(|m: &Arc<Message>| m.id);
    let (gap, next) = match since {
        Since::Tail => (false, tail),
        Since::After(c) if c.epoch != epoch => (true, last_returned.unwrap_or(tail)),
        Since::After(c) if c.offset > last => (true, tail),
        Since::After(c) if c.offset == last => (false, c),
        Since::After(c) => match messages.first() {
            None => (true, tail),
            Some(first) => (first.id.offset != c.offset + 1, last_returned.unwrap_or(tail)),
        },
    };
    // The script returns no entries in the rows that take none.
    let takes_none = match since {
        Since::Tail => true,
        Since::After(c) => c.epoch == epoch && c.offset >= last,
    };
    if takes_none && !messages.is_empty() {
        return Err(ReplyError::Unexpected("no entries at or after the tail"));
    }
    Ok(ReadReply { replay: Replay { messages, gap, next }, last_offset: last, new_epoch })
}

/// An epoch as the script returns it: 16 hex digits.
fn parse_epoch(value: &Value) -> Result<Epoch, ReplyError> {
    let text = value.as_bytes().ok_or(ReplyError::Unexpected("an epoch"))?;
    let text = std::str::from_utf8(text).map_err(|_| ReplyError::Unexpected("an epoch"))?;
    // Reuse the cursor parser for the 16-hex-digit rule.
    Cursor::parse(&format!("{text}:0"))
        .map(|c| c.epoch)
        .map_err(|_| ReplyError::Unexpected("a 16-hex-digit epoch"))
}

fn positive(value: &Value) -> Result<u64, ReplyError> {
    value
        .as_integer()
        .and_then(|n| u64::try_from(n).ok())
        .ok_or(ReplyError::Unexpected("a non-negative integer"))
}

fn flag(value: &Value) -> Result<bool, ReplyError> {
    match value.as_integer() {
        Some(0) => Ok(false),
        Some(1) => Ok(true),
        _ => Err(ReplyError::Unexpected("0 or 1")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redis::frame::encode_message;
    use crate::redis::keys::Namespace;

    const E: Epoch = Epoch(0x1111_2222_3333_4444);

    fn channel() -> ChannelName {
        ChannelName::parse("news").unwrap()
    }

    fn bulk(bytes: impl Into<Vec<u8>>) -> Value {
        Value::BulkString(bytes.into())
    }

    fn entry(epoch: Epoch, offset: u64) -> Value {
        let frame =
            encode_message(Cursor { epoch, offset }, None, &Payload::Text(Arc::from(format!("m{offset}"))));
        Value::Array(vec![bulk(format!("{offset}-0")), Value::Array(vec![bulk("m"), bulk(frame)])])
    }

    fn reply(epoch: Epoch, last: u64, offsets: &[u64]) -> Value {
        Value::Array(vec![
            bulk(epoch.to_string()),
            Value::Integer(last as i64),
            Value::Integer(0),
            Value::Array(offsets.iter().map(|&o| entry(epoch, o)).collect()),
        ])
    }

    fn read(since: Since, value: &Value) -> Result<(Vec<u64>, bool, Cursor), ReplyError> {
        let now = Instant::now();
        let r = parse_read_reply(&channel(), since, value, &FrameLimits::default(), now)?;
        Ok((r.replay.messages.iter().map(|m| m.id.offset).collect(), r.replay.gap, r.replay.next))
    }

    fn at(epoch: Epoch, offset: u64) -> Since {
        Since::After(Cursor { epoch, offset })
    }

    fn c(epoch: Epoch, offset: u64) -> Cursor {
        Cursor { epoch, offset }
    }

    #[test]
    fn script_sha1_matches_a_known_digest() {
        // SHA-1("return 1"), as `SCRIPT LOAD "return 1"` answers.
        assert_eq!(script_sha1("return 1"), "e0e1f9fabfc9d4800c877a703b823ac0578ff8db");
        assert_eq!(channel_script_sha1().len(), 40);
        assert_ne!(channel_script_sha1(), presence_script_sha1());
    }

    #[test]
    fn epoch_candidate_folds_the_incarnation() {
        let a = Incarnation::from_raw(0x00ff);
        let b = Incarnation::from_raw(0xff00);
        assert_eq!(epoch_candidate(0x1234, a), Epoch(0x1234 ^ 0x00ff));
        // The same draw under two incarnations gives two epochs.
        assert_ne!(epoch_candidate(7, a), epoch_candidate(7, b));
        // A bijection for each incarnation: distinct draws, distinct epochs.
        assert_ne!(epoch_candidate(7, a), epoch_candidate(8, a));
    }

    #[test]
    fn invoke_evalsha_or_eval() {
        assert_eq!(
            Invoke::Sha.command("return 1", "abc").to_bytes(),
            b"*2\r\n$7\r\nEVALSHA\r\n$3\r\nabc\r\n"
        );
        assert_eq!(
            Invoke::Source.command("return 1", "abc").to_bytes(),
            b"*2\r\n$4\r\nEVAL\r\n$8\r\nreturn 1\r\n"
        );
    }

    #[test]
    fn publish_command_arguments() {
        let keys = ChannelKeys::new(&Namespace::default(), &channel());
        let context = ScriptContext {
            incarnation: Incarnation::from_raw(0xab),
            epoch_candidate: E,
            history_ttl: Duration::from_secs(300),
        };
        let payload = Payload::Text(Arc::from("hi"));
        let command = publish_command(&keys, &context, 1000, Some("ev"), &payload, Invoke::Sha);
        let mut expected = Command::new("EVALSHA").arg(channel_script_sha1());
        for arg in ["2", "pushwire:{news}:meta", "pushwire:{news}:hist", "pub", "00000000000000ab"] {
            expected.push_arg(arg.as_bytes());
        }
        let expected = expected
            .arg("1111222233334444")
            .arg("300000")
            .arg("1000")
            .arg("pushwire:{news}")
            .arg(b"\x00\x00\x02evhi");
        assert_eq!(command, expected);
    }

    #[test]
    fn publish_reply_parsing() {
        let ok = Value::Array(vec![bulk("1111222233334444"), Value::Integer(7), Value::Integer(1)]);
        assert_eq!(parse_publish_reply(&ok), Ok(PublishReply { id: c(E, 7), new_epoch: true }));
        assert_eq!(
            parse_publish_reply(&Value::Error(b"NOSCRIPT No matching script.".to_vec())),
            Err(ReplyError::NoScript)
        );
        assert_eq!(
            parse_publish_reply(&Value::Error(b"PUSHWIRE epoch collision".to_vec())),
            Err(ReplyError::EpochCollision)
        );
        for bad in [
            Value::Array(vec![bulk("xyz"), Value::Integer(7), Value::Integer(0)]),
            Value::Array(vec![bulk("1111222233334444"), Value::Integer(0), Value::Integer(0)]),
            Value::Array(vec![bulk("1111222233334444"), Value::Integer(-1), Value::Integer(0)]),
            Value::Array(vec![bulk("1111222233334444"), Value::Integer(1), Value::Integer(2)]),
            Value::Integer(1),
        ] {
            assert!(matches!(parse_publish_reply(&bad), Err(ReplyError::Unexpected(_))), "{bad:?}");
        }
    }

    #[test]
    fn read_reply_follows_the_hub_gap_table() {
        let other = Epoch(9);
        // History holds 4..=6 of 6 (1..=3 evicted).
        assert_eq!(read(Since::Tail, &reply(E, 6, &[])), Ok((vec![], false, c(E, 6))));
        assert_eq!(read(at(other, 2), &reply(E, 6, &[4, 5, 6])), Ok((vec![4, 5, 6], true, c(E, 6))));
        assert_eq!(read(at(other, 2), &reply(E, 6, &[4])), Ok((vec![4], true, c(E, 4))), "paged");
        assert_eq!(read(at(other, 2), &reply(E, 6, &[])), Ok((vec![], true, c(E, 6))), "expired history");
        assert_eq!(read(at(E, 9), &reply(E, 6, &[])), Ok((vec![], true, c(E, 6))), "from the future");
        assert_eq!(read(at(E, 6), &reply(E, 6, &[])), Ok((vec![], false, c(E, 6))), "up to date");
        assert_eq!(read(at(E, 3), &reply(E, 6, &[4, 5, 6])), Ok((vec![4, 5, 6], false, c(E, 6))), "exact");
        assert_eq!(read(at(E, 4), &reply(E, 6, &[5])), Ok((vec![5], false, c(E, 5))), "a page");
        assert_eq!(read(at(E, 1), &reply(E, 6, &[4, 5, 6])), Ok((vec![4, 5, 6], true, c(E, 6))), "evicted");
        assert_eq!(read(at(E, 1), &reply(E, 6, &[])), Ok((vec![], true, c(E, 6))), "all expired");
        assert_eq!(read(at(E, 0), &reply(E, 0, &[])), Ok((vec![], false, c(E, 0))), "empty channel");
        // A hole inside a page: the page stops before it.
        assert_eq!(read(at(E, 3), &reply(E, 9, &[4, 5, 8, 9])), Ok((vec![4, 5], false, c(E, 5))));
    }

    #[test]
    fn read_reply_refuses_inconsistent_entries() {
        let wrong_epoch = Value::Array(vec![
            bulk(E.to_string()),
            Value::Integer(6),
            Value::Integer(0),
            Value::Array(vec![entry(Epoch(1), 5)]),
        ]);
        assert_eq!(read(at(E, 4), &wrong_epoch), Err(ReplyError::EntryMismatch { entry_offset: 5 }));
        assert_eq!(read(at(E, 4), &reply(E, 4, &[5])), Err(ReplyError::EntryMismatch { entry_offset: 5 }));
        assert!(matches!(read(Since::Tail, &reply(E, 6, &[6])), Err(ReplyError::Unexpected(_))));
        assert!(matches!(read(Since::Tail, &Value::Array(vec![])), Err(ReplyError::Unexpected(_))));
    }

    #[test]
    fn read_command_arguments() {
        let keys = ChannelKeys::new(&Namespace::default(), &channel());
        let context = ScriptContext {
            incarnation: Incarnation::from_raw(1),
            epoch_candidate: E,
            history_ttl: Duration::from_millis(1500),
        };
        let tail = read_command(&keys, &context, Since::Tail, 0, Invoke::Source);
        let wire = tail.to_bytes();
        assert!(wire.starts_with(b"*12\r\n$4\r\nEVAL\r\n"));
        assert!(wire.ends_with(b"$4\r\nread\r\n$16\r\n0000000000000001\r\n$16\r\n1111222233334444\r\n$4\r\n1500\r\n$0\r\n\r\n$1\r\n0\r\n$1\r\n1\r\n"));
        let after = read_command(&keys, &context, at(E, 42), 100, Invoke::Sha).to_bytes();
        assert!(after.ends_with(b"$16\r\n1111222233334444\r\n$2\r\n42\r\n$3\r\n100\r\n"));
    }
}
