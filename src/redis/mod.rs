//! The pure parts of the Redis hub backend: the RESP codec, key names, the Lua scripts and the
//! commands that run them, the frames nodes exchange, and the parsing of every reply, so the
//! backend itself is one broker thread doing I/O around them.
//!
//! Implements:
//!
//! | file | what | reference |
//! |---|---|---|
//! | [`resp`] | RESP2 decoder (incremental, bounded) and command encoder | [RESP spec](https://redis.io/docs/latest/develop/reference/protocol-spec/) |
//! | [`keys`] | key and pub/sub names per channel, hash tags, cluster slots | [cluster spec, hash tags](https://redis.io/docs/latest/operate/oss_and_stack/reference/cluster-spec/#hash-tags) |
//! | [`frame`] | the message/join/leave framing on pub/sub and in the history | (pushwire's own) |
//! | [`script`] | the channel script (publish, read), incarnations, the guarantee, gap rules on replies | [EVALSHA](https://redis.io/docs/latest/commands/evalsha/), [XADD](https://redis.io/docs/latest/commands/xadd/) |
//! | [`history`] | `XRANGE` by offset, entries as hub messages | [XRANGE](https://redis.io/docs/latest/commands/xrange/) |
//! | [`sequence`] | per live channel: delivery order, duplicates, hole repair, epoch changes | (pushwire's own) |
//! | [`info`] | `run_id`, `master_replid`, role from `INFO`; the incarnation digest | [INFO](https://redis.io/docs/latest/commands/info/) |
//! | [`presence`] | presence keys, the presence script, join/leave | [ZADD](https://redis.io/docs/latest/commands/zadd/) |
//! | [`pubsub`] | `SUBSCRIBE`/`UNSUBSCRIBE`/`PING`, pushes classified | [Pub/Sub](https://redis.io/docs/latest/develop/interact/pubsub/) |
//! | [`url`] | `redis[s]://[USER:PASSWORD@]HOST:PORT[/DB]`, the connection handshake | [IANA `redis` scheme](https://www.iana.org/assignments/uri-schemes/prov/redis) |
//! | [`control`] | the nodes' control channel: cluster-wide disconnect, heartbeats, `info` / `channels` surveys | [Pub/Sub](https://redis.io/docs/latest/develop/interact/pubsub/), Centrifugo's node registry |
//! | [`shard`] | consistent hash of a channel over independent shards | [jump hash](https://arxiv.org/abs/1406.2294) |
//!
//! Reading order: `resp`, `keys`, `frame`, `script` (the heart: its docs state the guarantee),
//! `history`, `sequence`, `info`, `presence`, `pubsub`, `url`, `shard`.
//!
//! Errors: [`resp::RespError`] for the byte stream (the connection is closed), [`ReplyError`]
//! for well-formed replies the backend cannot use (the command fails; the connection stays),
//! [`url::UrlError`] for the operator's `--redis` URL (the process exits).
//!
//! Does not: open sockets, read the clock, draw randomness (the epoch candidate and the node
//! id come in as arguments), or hold any state across calls; the broker that does is
//! [`crate::net::redis_broker`].
//!
//! # How the broker uses these pieces
//!
//! One broker thread per node and shard (`--redis` server; [`shard::shard_of`] picks a
//! channel's, one shard is the common case) with its own `mio::Poll`, reached by the event
//! loops through the hub backend's queues and wakers (issue #12's seam). It keeps a
//! non-blocking command connection and one or more pub/sub connections:
//!
//! - **The command connection**, pipelined: on connect it sends
//!   [`url::RedisUrl::handshake_commands`], [`info::info_command`] (refusing a server whose
//!   role is not master, and taking the [`info::Incarnation`]), and [`script::load_commands`];
//!   then every `publish_command`, `read_command`, presence command and `XRANGE` in the order
//!   the loops asked, matching replies to requests by order (a FIFO of pending requests,
//!   bounded; a full FIFO answers 503 at once rather than stalling a loop). A
//!   [`ReplyError::NoScript`] re-sends that one request with [`script::Invoke::Source`]. A
//!   [`ReplyError::EpochCollision`] re-sends it with a new candidate. `READONLY`, `LOADING`,
//!   `MASTERDOWN` or a [`resp::RespError`] closes the connection (the pending requests fail
//!   with 503) and reconnects with backoff, re-reading `INFO`; so does an `INFO` re-read every
//!   few seconds that shows another incarnation (see the guarantee in [`script`]).
//! - **The pub/sub connections** (one by default; `--redis-pubsub-shards` spreads the
//!   channels over several with [`shard::shard_of`]): [`pubsub::subscribe_command`] when a
//!   channel's first local subscriber appears, [`pubsub::unsubscribe_command`] after a short
//!   linger (a few seconds) once the last one left, so a flapping subscriber does not churn;
//!   batched per turn (one `SUBSCRIBE` naming many channels). Never one connection per channel
//!   or per client. A periodic [`pubsub::ping_command`] detects a dead connection. Pushes go
//!   through [`pubsub::parse_pubsub`], [`keys::Namespace::channel_of_pubsub`] and
//!   [`frame::parse_frame`].
//!
//! Per live channel the broker keeps a [`sequence::ChannelSequence`] (the last cursor it
//! delivered, frames held during a repair), which applies these rules to each message frame
//! received on pub/sub:
//!
//! 1. same epoch, offset ≤ last: a duplicate (a repair read overlapping pub/sub): dropped;
//! 2. same epoch, offset = last + 1: delivered to the loops (the hub's `Published` shape), in
//!    offset order;
//! 3. same epoch, offset > last + 1: a hole (pub/sub dropped messages while the connection was
//!    cut, or a frame failed to parse): the frame is held, the missing range is read with
//!    [`history::xrange_command`] (or the script's `read`) and delivered first, then the held
//!    frames; entries gone from the history make the loops signal a gap;
//! 4. another epoch: the channel restarted (expiry, Redis restart, failover): a gap, then
//!    continue under the new epoch (reading its history from the start first, as 3).
//!
//! After a reconnect of the pub/sub connection, the broker re-subscribes every live channel,
//! waits for the `subscribe` confirmations, then reads each channel after its last delivered
//! cursor with the script's `read` (paging while `next.offset < last_offset`) and merges by
//! the rules above, so messages published while it was cut are delivered once, in order, or a
//! gap is reported. A subscriber resuming from a cursor is handled the same way: **subscribe
//! first, then read, then merge**: the live frames that arrive during the read are held and
//! delivered after the read's messages, minus duplicates, so nothing published between the
//! read and the subscription falls between the two. If the channel was already live, the
//! read serves only that subscriber's catch-up (the loops keep feeding it from `next`).
//!
//! Presence: the broker adds each local subscription with [`presence::add_command`] and
//! refreshes all of them every `ttl / 3` (one call per channel), removes them with
//! [`presence::remove_command`] on every way a subscription ends, and lists with
//! [`presence::list_command`]. Join and leave frames arrive on the channel's pub/sub like
//! messages, but outside the offset sequence (they have no cursor).
//!
//! # Redis Cluster with sharded pub/sub, on paper
//!
//! What would change to run on a Redis Cluster (7.0+) instead of independent shards:
//!
//! - **Routing by slot.** Every key of a channel and its pub/sub channel share the hash tag
//!   `{CHANNEL}` ([`keys`]), so one channel lives in one slot ([`keys::key_slot`]) and both
//!   scripts stay single-slot, as Cluster requires of scripts (all keys of one call in one
//!   slot, declared in KEYS). The broker would keep a slot → node map from `CLUSTER SHARDS`,
//!   one command connection per master, and follow `-MOVED slot host:port` (update the map)
//!   and `-ASK` (send `ASKING` then the command, once) replies, which [`ReplyError::Server`]
//!   already carries as text; a parser for the two redirections is small and pure.
//! - **Sharded pub/sub.** Classic `PUBLISH` in a cluster is broadcast to every node over the
//!   cluster bus: fine for a few nodes, costly at scale. `SPUBLISH`/`SSUBSCRIBE` (Redis 7.0)
//!   route a shard channel to its slot's shard only. The change: the script calls `SPUBLISH`
//!   instead of `PUBLISH` (allowed inside a script when the shard channel hashes to the same
//!   slot as the keys, which the hash tag guarantees), the broker sends `SSUBSCRIBE` /
//!   `SUNSUBSCRIBE` on a pub/sub connection *per shard* (a shard channel must be subscribed
//!   on a node serving its slot), and [`pubsub::parse_pubsub`] learns `smessage`,
//!   `ssubscribe` and `sunsubscribe`. When a slot migrates, Redis sends `sunsubscribe` for
//!   its shard channels: the broker treats it like a pub/sub reconnect for those channels
//!   (re-subscribe on the new owner, read, merge).
//! - **Incarnations per shard.** Each master has its own `run_id` and `master_replid`; the
//!   broker keeps one [`info::Incarnation`] per command connection, and a failover of one
//!   shard restarts the epochs of that shard's channels only. A slot migration moves the keys
//!   with their `inc` field, written under the source node's incarnation: at the first
//!   script call on the target the channel gets a new epoch (a gap, never reused offsets).
//! - **Unchanged:** the codec, the frames, the scripts' logic, the gap rules, and presence.
//!   [`shard`] is then unused (the cluster shards by slot), or keeps sharding across several
//!   clusters.
//! - Not possible in a cluster: multi-channel atomic operations (a publish to several
//!   channels is several scripts, ordered per channel only), which pushwire never needs.

pub mod control;
pub mod frame;
pub mod history;
pub mod info;
pub mod keys;
pub mod presence;
pub mod pubsub;
pub mod resp;
pub mod script;
pub mod sequence;
pub mod shard;
pub mod url;

use std::fmt;

use crate::redis::resp::Value;

/// A well-formed reply the backend cannot use: an error from Redis, a reply of another shape
/// than the command returns, or a frame from another node that breaks the framing rules. The
/// command fails (a publish answers [`ReplyError::status_hint`]); the connection stays usable.
/// A bad frame on pub/sub is dropped and counted, and the hole it leaves is repaired from the
/// history (where the same bytes then fail again, and become a gap).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReplyError {
    /// An error reply from Redis, with its text (`ERR ...`, `READONLY ...`, `LOADING ...`).
    Server(String),
    /// `NOSCRIPT`: the server does not have the script: send it again with
    /// [`script::Invoke::Source`].
    NoScript,
    /// The script drew an epoch equal to the stored one (probability 2^-64): send again with
    /// another candidate.
    EpochCollision,
    /// The channel used every offset the script can count (2^53 - 1).
    OffsetsExhausted,
    /// A reply of another shape than the command returns; names what was expected.
    Unexpected(&'static str),
    /// A history entry whose id disagrees with its frame, comes out of order, or belongs to
    /// another epoch than the one the script reported.
    EntryMismatch {
        /// The offset of the entry.
        entry_offset: u64,
    },
    /// `INFO` lacks a field pushwire needs.
    InfoFieldMissing(&'static str),
    /// A frame shorter than its lengths announce.
    FrameTruncated,
    /// A frame of a kind this node does not know (written by a newer node?).
    UnknownFrameKind(u8),
    /// A message frame whose cursor is not `EPOCH:OFFSET` with an offset of at least 1.
    FrameBadCursor,
    /// A message frame with flag bits this node does not know.
    FrameBadFlags(u8),
    /// An event name with bytes outside printable ASCII.
    FrameBadEvent,
    /// A text payload or a user id that is not UTF-8.
    FrameTextNotUtf8,
    /// A payload, event name, user id or info larger than its
    /// [`frame::FrameLimits`] bound.
    FrameTooLarge,
    /// A presence member that is not `NODE-CONN` in hex.
    FrameBadMember,
    /// Bytes after the end of a leave frame.
    FrameTrailingBytes,
}

impl ReplyError {
    /// `Err` for an error reply (classified), `Ok` for any other value.
    pub fn check(value: &Value) -> Result<(), ReplyError> {
        let Some(text) = value.as_error() else {
            return Ok(());
        };
        Err(if text.starts_with(b"NOSCRIPT") {
            ReplyError::NoScript
        } else if text.starts_with(b"PUSHWIRE epoch collision") {
            ReplyError::EpochCollision
        } else if text.starts_with(b"PUSHWIRE offsets exhausted") {
            ReplyError::OffsetsExhausted
        } else {
            ReplyError::Server(String::from_utf8_lossy(text).into_owned())
        })
    }

    /// The HTTP status for a publish or read that failed with this error: 503 (the backend
    /// cannot serve it now; the reason goes to the log and the metrics).
    pub fn status_hint(&self) -> u16 {
        503
    }

    /// The error code of a [`ReplyError::Server`] reply: its first word (`ERR`, `READONLY`,
    /// `LOADING`, `MOVED`, ...).
    pub fn server_code(&self) -> Option<&str> {
        match self {
            ReplyError::Server(text) => text.split(' ').next(),
            _ => None,
        }
    }
}

impl fmt::Display for ReplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplyError::Server(text) => write!(f, "redis error: {text}"),
            ReplyError::NoScript => f.write_str("redis does not have the script loaded"),
            ReplyError::EpochCollision => f.write_str("new epoch equal to the old one; retry"),
            ReplyError::OffsetsExhausted => f.write_str("channel offsets exhausted"),
            ReplyError::Unexpected(what) => write!(f, "unexpected redis reply: expected {what}"),
            ReplyError::EntryMismatch { entry_offset } => {
                write!(f, "history entry {entry_offset} disagrees with its frame or the channel")
            }
            ReplyError::InfoFieldMissing(field) => write!(f, "redis INFO has no {field}"),
            ReplyError::FrameTruncated => f.write_str("frame shorter than its lengths"),
            ReplyError::UnknownFrameKind(kind) => write!(f, "unknown frame kind {kind:#04x}"),
            ReplyError::FrameBadCursor => f.write_str("frame cursor is not EPOCH:OFFSET"),
            ReplyError::FrameBadFlags(flags) => write!(f, "unknown frame flags {flags:#04x}"),
            ReplyError::FrameBadEvent => f.write_str("frame event name is not printable ASCII"),
            ReplyError::FrameTextNotUtf8 => f.write_str("frame text is not UTF-8"),
            ReplyError::FrameTooLarge => f.write_str("frame part larger than its limit"),
            ReplyError::FrameBadMember => f.write_str("presence member is not NODE-CONN"),
            ReplyError::FrameTrailingBytes => f.write_str("bytes after the end of a frame"),
        }
    }
}

impl std::error::Error for ReplyError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_error_classifies_error_replies() {
        let check = |text: &str| ReplyError::check(&Value::Error(text.as_bytes().to_vec()));
        assert_eq!(check("NOSCRIPT No matching script. Please use EVAL."), Err(ReplyError::NoScript));
        assert_eq!(check("PUSHWIRE epoch collision"), Err(ReplyError::EpochCollision));
        assert_eq!(check("PUSHWIRE offsets exhausted"), Err(ReplyError::OffsetsExhausted));
        let readonly = check("READONLY You can't write against a read only replica.").unwrap_err();
        assert_eq!(readonly.server_code(), Some("READONLY"));
        assert_eq!(readonly.status_hint(), 503);
        assert!(readonly.to_string().contains("READONLY"));
        assert_eq!(ReplyError::check(&Value::Integer(1)), Ok(()));
        assert_eq!(ReplyError::NoScript.server_code(), None);
    }
}
