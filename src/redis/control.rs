//! The nodes' control channel: the messages one node sends every other node of a deployment
//! through Redis pub/sub, so the server API acts cluster-wide (issue #17: "With the Redis
//! backend these act cluster-wide"), and the merging of their answers.
//!
//! Implements: the JSON form of [`ControlFrame`] ([`encode`], [`parse`], every field bounded
//! by [`ControlLimits`] before it is kept), the pub/sub names ([`control_channel`], every
//! node subscribes it; [`node_channel`], one node's replies), and the pure halves of a survey:
//! a node's local page of channel names ([`ChannelPage::of`]) and the merge of every node's page
//! ([`merge_pages`]).
//!
//! The messages (Centrifugo's design: one control channel, a node registry by heartbeat,
//! surveys answered on the asker's own channel):
//!
//! | `type` | sent on | meaning |
//! |---|---|---|
//! | `heartbeat` | control | the node is alive (every few seconds; `hello` on (re)subscribing: the others answer with their own heartbeat at once) |
//! | `disconnect` | control | the server API's `disconnect` / `unsubscribe`: every node (`to` null) or one node applies it to its own connections |
//! | `info_request` | control | the asker wants every node's subscriber counts of a channel |
//! | `info_reply` | the asker's node channel | one node's counts, by transport |
//! | `channels_request` | control | the asker wants every node's channel names with a subscriber, by prefix, after a name, at most `limit` |
//! | `channels_reply` | the asker's node channel | one node's smallest `limit` names at most, and whether it has more |
//!
//! Every frame names its sender (`from`, the node id of presence members); a node ignores its
//! own frames (it applied the call locally already). A frame of an unknown `type` (a newer
//! node) is [`ControlError`] and dropped by the broker, which counts it.
//!
//! Does not: send anything, keep the registry or the surveys (the broker does, see
//! [`crate::net::redis_broker`]), or read the clock.

use serde::{Deserialize, Serialize};

use crate::hub::backend::{Disconnect, DisconnectTarget};
use crate::hub::{ChannelName, ChannelPage, Cursor, TransportCounts};
use crate::protocol::Transport;
use crate::redis::info::Incarnation;
use crate::redis::keys::{ChannelKeys, Namespace};
use crate::redis::presence::{conn_addr, conn_number};
use crate::redis::resp::{Command, Value};
use crate::redis::ReplyError;

/// The transports a node counts in an `info_reply`, in the order of its `counts`.
pub const COUNTED: [Transport; 4] =
    [Transport::WebSocket, Transport::Sse, Transport::Stream, Transport::LongPoll];

/// Bounds on a control frame from another node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControlLimits {
    /// Longest frame, in bytes (a `channels_reply` of 1 001 names of the longest channel
    /// name fits well within it). Default 1 MiB.
    pub max_frame_bytes: usize,
    /// Most names in a `channels_reply`; a request's `limit` must be below it. Default 1 001
    /// (the server API's page of 1 000, plus one).
    pub max_names: usize,
    /// Longest disconnect reason (a WebSocket close frame's reason fits 123 bytes, RFC 6455
    /// §5.5). Default 123.
    pub max_reason_bytes: usize,
    /// Longest user id in a disconnect. Default 255.
    pub max_user_bytes: usize,
}

impl Default for ControlLimits {
    fn default() -> ControlLimits {
        ControlLimits {
            max_frame_bytes: 1 << 20,
            max_names: 1_001,
            max_reason_bytes: 123,
            max_user_bytes: 255,
        }
    }
}

/// One message between nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// The sender is alive; `hello`: it just (re)subscribed, answer with a heartbeat.
    Heartbeat {
        /// Answer at once.
        hello: bool,
    },
    /// End or unsubscribe connections: on every node (`to` is `None`) or on node `to` only.
    Disconnect {
        /// The one node that applies it.
        to: Option<u64>,
        /// What to apply (its `node` is `to`).
        disconnect: Disconnect,
    },
    /// Every node's subscriber counts of `channel`, answered on the sender's node channel.
    InfoRequest {
        /// The sender's survey id.
        id: u64,
        /// The channel.
        channel: ChannelName,
    },
    /// One node's subscriber counts for survey `id`.
    InfoReply {
        /// The survey.
        id: u64,
        /// Subscriptions by transport on the replying node.
        counts: TransportCounts,
    },
    /// Every node's channel names with a subscriber, answered on the sender's node channel.
    ChannelsRequest {
        /// The sender's survey id.
        id: u64,
        /// Names starting with this.
        prefix: String,
        /// Names after this one.
        after: Option<String>,
        /// The page size asked (each node answers up to `limit` names).
        limit: usize,
    },
    /// One node's page for survey `id`.
    ChannelsReply {
        /// The survey.
        id: u64,
        /// Its smallest matching names, in byte order.
        page: ChannelPage,
    },
}

/// A control message and its sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlFrame {
    /// The sending node's id (never 0).
    pub from: u64,
    /// The message.
    pub control: Control,
}

/// A control frame that breaks the rules (too large, bad JSON, a value out of bounds, an
/// unknown type); the reason is for logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlError(pub String);

impl std::fmt::Display for ControlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "bad control frame: {}", self.0)
    }
}

impl std::error::Error for ControlError {}

/// The pub/sub channel every node subscribes: `PREFIX:control` (no hash tag: never a
/// pushwire channel's name, which is `PREFIX:{CHANNEL}`).
pub fn control_channel(namespace: &Namespace) -> String {
    format!("{}:control", namespace.as_str())
}

/// The pub/sub channel of one node's survey replies: `PREFIX:node:NODE` (16 hex digits).
pub fn node_channel(namespace: &Namespace, node: u64) -> String {
    format!("{}:node:{node:016x}", namespace.as_str())
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum Wire {
    Heartbeat {
        from: u64,
        hello: bool,
    },
    Disconnect {
        from: u64,
        to: Option<u64>,
        user: Option<String>,
        conn: Option<u64>,
        code: u16,
        reason: String,
        channel: Option<String>,
    },
    InfoRequest {
        from: u64,
        id: u64,
        channel: String,
    },
    InfoReply {
        from: u64,
        id: u64,
        counts: [usize; 4],
    },
    ChannelsRequest {
        from: u64,
        id: u64,
        prefix: String,
        after: Option<String>,
        limit: usize,
    },
    ChannelsReply {
        from: u64,
        id: u64,
        channels: Vec<String>,
        more: bool,
    },
}

/// The frame as JSON text (one object, `type` first).
pub fn encode(frame: &ControlFrame) -> Vec<u8> {
    let from = frame.from;
    let wire = match &frame.control {
        Control::Heartbeat { hello } => Wire::Heartbeat { from, hello: *hello },
        Control::Disconnect { to, disconnect } => {
            let (user, conn) = match &disconnect.target {
                DisconnectTarget::User(user) => (Some(user.to_string()), None),
                DisconnectTarget::Conn(addr) => (None, Some(conn_number(*addr))),
            };
            Wire::Disconnect {
                from,
                to: *to,
                user,
                conn,
                code: disconnect.code,
                reason: disconnect.reason.to_string(),
                channel: disconnect.channel.as_ref().map(|c| c.as_str().to_string()),
            }
        }
        Control::InfoRequest { id, channel } => {
            Wire::InfoRequest { from, id: *id, channel: channel.as_str().to_string() }
        }
        Control::InfoReply { id, counts } => {
            Wire::InfoReply { from, id: *id, counts: COUNTED.map(|t| counts.get(t)) }
        }
        Control::ChannelsRequest { id, prefix, after, limit } => Wire::ChannelsRequest {
            from,
            id: *id,
            prefix: prefix.clone(),
            after: after.clone(),
            limit: *limit,
        },
        Control::ChannelsReply { id, page } => Wire::ChannelsReply {
            from,
            id: *id,
            channels: page.channels.iter().map(|c| c.as_str().to_string()).collect(),
            more: page.more,
        },
    };
    serde_json::to_vec(&wire).expect("plain values serialize")
}

fn bad(reason: impl Into<String>) -> ControlError {
    ControlError(reason.into())
}

fn channel(name: &str) -> Result<ChannelName, ControlError> {
    ChannelName::parse(name).map_err(|e| bad(format!("channel {name:?}: {e}")))
}

/// A prefix or `after`: at most a channel name's length, of its alphabet.
fn name_part(text: &str) -> Result<(), ControlError> {
    let alphabet = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'~' | b'-');
    if text.len() > ChannelName::MAX_BYTES || !text.bytes().all(alphabet) {
        return Err(bad("a name prefix out of the channel alphabet or too long"));
    }
    Ok(())
}

/// Reads a frame another node published, every part checked against `limits` (the length
/// first, before JSON is parsed).
pub fn parse(bytes: &[u8], limits: &ControlLimits) -> Result<ControlFrame, ControlError> {
    if bytes.len() > limits.max_frame_bytes {
        return Err(bad(format!("{} bytes, more than {}", bytes.len(), limits.max_frame_bytes)));
    }
    let wire: Wire = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
    let (from, control) = match wire {
        Wire::Heartbeat { from, hello } => (from, Control::Heartbeat { hello }),
        Wire::Disconnect { from, to, user, conn, code, reason, channel: ch } => {
            if reason.len() > limits.max_reason_bytes {
                return Err(bad("disconnect reason too long"));
            }
            // RFC 6455 §7.4.2: a server API disconnect closes with a private-use code.
            if !(4000..=4999).contains(&code) {
                return Err(bad("disconnect code outside 4000-4999"));
            }
            let target = match (user, conn) {
                (Some(user), None) if !user.is_empty() && user.len() <= limits.max_user_bytes => {
                    DisconnectTarget::User(user.into())
                }
                // Every number names a loop (6 bits, below `SinkId::MAX_SINKS`).
                (None, Some(conn)) => DisconnectTarget::Conn(conn_addr(conn)),
                _ => return Err(bad("disconnect names exactly one of a user (1-255 bytes) or a conn")),
            };
            let channel = ch.as_deref().map(channel).transpose()?;
            let disconnect = Disconnect { target, code, reason: reason.into(), channel, node: to };
            (from, Control::Disconnect { to, disconnect })
        }
        Wire::InfoRequest { from, id, channel: ch } => {
            (from, Control::InfoRequest { id, channel: channel(&ch)? })
        }
        Wire::InfoReply { from, id, counts: numbers } => {
            let mut counts = TransportCounts::default();
            for (transport, n) in COUNTED.into_iter().zip(numbers) {
                counts.set(transport, n);
            }
            (from, Control::InfoReply { id, counts })
        }
        Wire::ChannelsRequest { from, id, prefix, after, limit } => {
            name_part(&prefix)?;
            if let Some(after) = &after {
                name_part(after)?;
            }
            if limit == 0 || limit >= limits.max_names {
                return Err(bad(format!("limit {limit} outside 1..{}", limits.max_names)));
            }
            (from, Control::ChannelsRequest { id, prefix, after, limit })
        }
        Wire::ChannelsReply { from, id, channels, more } => {
            if channels.len() > limits.max_names {
                return Err(bad(format!("{} names, more than {}", channels.len(), limits.max_names)));
            }
            let channels = channels.iter().map(|c| channel(c)).collect::<Result<Vec<_>, _>>()?;
            (from, Control::ChannelsReply { id, page: ChannelPage { channels, more } })
        }
    };
    if from == 0 {
        return Err(bad("node id 0"));
    }
    Ok(ControlFrame { from, control })
}

/// Every node's page merged into one of at most `limit` names: each node gave its smallest
/// `limit` matches (and whether it had more), so the union holds the cluster's smallest
/// `limit`; a name on several nodes counts once.
pub fn merge_pages(pages: impl IntoIterator<Item = ChannelPage>, limit: usize) -> ChannelPage {
    let mut more = false;
    let mut all = Vec::new();
    for page in pages {
        more |= page.more;
        all.extend(page.channels);
    }
    all.sort_unstable_by(|a, b| a.as_str().cmp(b.as_str()));
    all.dedup();
    more |= all.len() > limit;
    all.truncate(limit);
    ChannelPage { channels: all, more }
}

/// `PUBLISH CHANNEL FRAME` (sent on the command connection; the reply is how many
/// subscribers received it).
pub fn publish_command(channel: &str, frame: &[u8]) -> Command {
    Command::new("PUBLISH").arg(channel).arg(frame)
}

/// `HMGET META epoch offset inc`: the channel's last cursor, for `info`.
pub fn meta_command(keys: &ChannelKeys) -> Command {
    Command::new("HMGET").arg(&keys.meta).arg("epoch").arg("offset").arg("inc")
}

/// The last cursor from [`meta_command`]'s reply: `None` when the channel has no meta, or a
/// meta written under another [`Incarnation`] than `current` (its next use starts a new
/// epoch, see [`crate::redis::script`]).
pub fn parse_meta_reply(value: &Value, current: Incarnation) -> Result<Option<Cursor>, ReplyError> {
    ReplyError::check(value)?;
    let Value::Array(fields) = value else { return Err(ReplyError::Unexpected("an HMGET array")) };
    let [epoch, offset, inc] = fields.as_slice() else {
        return Err(ReplyError::Unexpected("three HMGET fields"));
    };
    let (Some(epoch), Some(offset), Some(inc)) = (epoch.as_bytes(), offset.as_bytes(), inc.as_bytes()) else {
        return Ok(None);
    };
    if inc != current.to_string().as_bytes() {
        return Ok(None);
    }
    let text = |b: &[u8]| std::str::from_utf8(b).ok().map(str::to_string);
    let cursor = text(epoch)
        .zip(text(offset))
        .and_then(|(e, o)| Cursor::parse(&format!("{e}:{o}")).ok())
        .ok_or(ReplyError::Unexpected("a meta epoch and offset"))?;
    Ok(Some(cursor))
}

/// `XLEN HISTORY`: how many messages the channel's history holds, for `info`.
pub fn length_command(keys: &ChannelKeys) -> Command {
    Command::new("XLEN").arg(&keys.history)
}

/// The count from [`length_command`]'s reply.
pub fn parse_length_reply(value: &Value) -> Result<usize, ReplyError> {
    ReplyError::check(value)?;
    value.as_integer().and_then(|n| usize::try_from(n).ok()).ok_or(ReplyError::Unexpected("an XLEN count"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::backend::{ConnAddr, ConnId};
    use crate::hub::SinkId;

    fn name(text: &str) -> ChannelName {
        ChannelName::parse(text).unwrap()
    }

    fn round_trip(control: Control) {
        let frame = ControlFrame { from: 0xabc, control };
        let bytes = encode(&frame);
        assert_eq!(
            parse(&bytes, &ControlLimits::default()),
            Ok(frame),
            "{}",
            String::from_utf8_lossy(&bytes)
        );
    }

    #[test]
    fn control_frames_round_trip() {
        let addr = ConnAddr { sink: SinkId::new(3).unwrap(), conn: ConnId::new(7, 9) };
        let mut counts = TransportCounts::default();
        counts.set(Transport::Sse, 2);
        counts.set(Transport::LongPoll, 5);
        for control in [
            Control::Heartbeat { hello: true },
            Control::Disconnect {
                to: Some(5),
                disconnect: Disconnect {
                    target: DisconnectTarget::Conn(addr),
                    code: 4002,
                    reason: "bye".into(),
                    channel: None,
                    node: Some(5),
                },
            },
            Control::Disconnect {
                to: None,
                disconnect: Disconnect {
                    target: DisconnectTarget::User("alice".into()),
                    code: 4002,
                    reason: "kicked".into(),
                    channel: Some(name("room")),
                    node: None,
                },
            },
            Control::InfoRequest { id: 1, channel: name("news") },
            Control::InfoReply { id: 1, counts },
            Control::ChannelsRequest {
                id: 2,
                prefix: "room.".into(),
                after: Some("room.1".into()),
                limit: 10,
            },
            Control::ChannelsReply {
                id: 2,
                page: ChannelPage { channels: vec![name("a"), name("b")], more: true },
            },
        ] {
            round_trip(control);
        }
        assert_eq!(control_channel(&Namespace::default()), "pushwire:control");
        assert_eq!(node_channel(&Namespace::default(), 0xab), "pushwire:node:00000000000000ab");
        assert_eq!(Namespace::default().channel_of_pubsub(b"pushwire:control"), None);
    }

    #[test]
    fn control_frames_out_of_bounds_are_refused() {
        let limits = ControlLimits { max_frame_bytes: 400, max_names: 3, ..ControlLimits::default() };
        let refused = [
            r#"{"type":"heartbeat","from":0,"hello":false}"#.to_string(),
            r#"{"type":"heartbeat","from":1,"hello":false,"x":1}"#.into(),
            r#"{"type":"newer","from":1}"#.into(),
            r#"{"type":"info_request","from":1,"id":1,"channel":"a b"}"#.into(),
            r#"{"type":"channels_reply","from":1,"id":1,"channels":["a","b","c","d"],"more":false}"#.into(),
            r#"{"type":"channels_request","from":1,"id":1,"prefix":"","after":null,"limit":3}"#.into(),
            r#"{"type":"channels_request","from":1,"id":1,"prefix":"a/","after":null,"limit":1}"#.into(),
            r#"{"type":"disconnect","from":1,"to":null,"user":"a","conn":1,"code":4002,"reason":"","channel":null}"#
                .into(),
            r#"{"type":"disconnect","from":1,"to":null,"user":"a","conn":null,"code":1000,"reason":"","channel":null}"#
                .into(),
            format!(
                r#"{{"type":"disconnect","from":1,"to":null,"user":"a","conn":null,"code":4002,"reason":"{}","channel":null}}"#,
                "r".repeat(124)
            ),
            format!(r#"{{"type":"heartbeat","from":1,"hello":false,"pad":"{}"}}"#, "x".repeat(400)),
        ];
        for text in refused {
            assert!(parse(text.as_bytes(), &limits).is_err(), "{text}");
        }
    }

    #[test]
    fn meta_and_length_replies() {
        let inc = Incarnation::from_raw(0xfeed);
        let bulk = |t: &str| Value::BulkString(t.as_bytes().to_vec());
        let meta = |inc: &str| Value::Array(vec![bulk("00000000000000ab"), bulk("12"), bulk(inc)]);
        assert_eq!(
            parse_meta_reply(&meta("000000000000feed"), inc),
            Ok(Some(Cursor::parse("00000000000000ab:12").unwrap()))
        );
        assert_eq!(parse_meta_reply(&meta("000000000000beef"), inc), Ok(None), "another incarnation's");
        let missing = Value::Array(vec![Value::NullBulkString, Value::NullBulkString, Value::NullBulkString]);
        assert_eq!(parse_meta_reply(&missing, inc), Ok(None));
        let odd = Value::Array(vec![bulk("zz"), bulk("1"), bulk("000000000000feed")]);
        assert!(parse_meta_reply(&odd, inc).is_err());
        assert_eq!(parse_length_reply(&Value::Integer(7)), Ok(7));
        assert!(parse_length_reply(&Value::Integer(-1)).is_err());
        let keys = ChannelKeys::new(&Namespace::default(), &name("c"));
        assert_eq!(length_command(&keys), Command::new("XLEN").arg("pushwire:{c}:hist"));
    }

    #[test]
    fn pages_merge_to_the_smallest_names_of_every_node() {
        let a: Vec<ChannelName> = ["r.1", "r.3", "r.5", "x"].map(name).to_vec();
        let b: Vec<ChannelName> = ["r.2", "r.3", "r.4"].map(name).to_vec();
        let pa = ChannelPage::of(a.iter(), "r.", Some("r.1"), 2);
        assert_eq!((pa.channels.clone(), pa.more), (vec![name("r.3"), name("r.5")], false));
        let pb = ChannelPage::of(b.iter(), "r.", Some("r.1"), 2);
        assert_eq!((pb.channels.clone(), pb.more), (vec![name("r.2"), name("r.3")], true));
        let merged = merge_pages([pa, pb], 2);
        assert_eq!((merged.channels, merged.more), (vec![name("r.2"), name("r.3")], true));
        let last = merge_pages(
            [
                ChannelPage::of(a.iter(), "r.", Some("r.3"), 5),
                ChannelPage::of(b.iter(), "r.", Some("r.3"), 5),
            ],
            5,
        );
        assert_eq!((last.channels, last.more), (vec![name("r.4"), name("r.5")], false));
    }
}
