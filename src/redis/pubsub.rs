//! The pub/sub connection: `SUBSCRIBE`, `UNSUBSCRIBE` and `PING` commands, and the pushes a
//! subscribed connection receives, classified.
//!
//! Implements: [Redis Pub/Sub][pubsub] in RESP2, where a subscribed connection receives
//! arrays whose first element names the kind: `["subscribe", channel, count]`,
//! `["unsubscribe", channel, count]`, `["message", channel, payload]`, and `["pong", data]`
//! answering a `PING` ("a client subscribed ... can only use SUBSCRIBE, SSUBSCRIBE,
//! PSUBSCRIBE, UNSUBSCRIBE, SUNSUBSCRIBE, PUNSUBSCRIBE, PING, RESET, and QUIT").
//!
//! Does not: pattern subscriptions (`PSUBSCRIBE`: pushwire subscribes channel by channel),
//! sharded pub/sub (see the Cluster notes in [`crate::redis`]), or parse frames (see
//! [`crate::redis::frame`]).
//!
//! [pubsub]: https://redis.io/docs/latest/develop/interact/pubsub/

use crate::redis::resp::{Command, Value};
use crate::redis::ReplyError;

/// `SUBSCRIBE` to the pub/sub channels named (at least one): one `subscribe` push comes back
/// per channel, in order.
pub fn subscribe_command<'a>(channels: impl IntoIterator<Item = &'a str>) -> Command {
    channels.into_iter().fold(Command::new("SUBSCRIBE"), Command::arg)
}

/// `UNSUBSCRIBE` from the pub/sub channels named (at least one: without arguments Redis would
/// unsubscribe from all, which the broker never means).
pub fn unsubscribe_command<'a>(channels: impl IntoIterator<Item = &'a str>) -> Command {
    channels.into_iter().fold(Command::new("UNSUBSCRIBE"), Command::arg)
}

/// `PING` on a subscribed connection: answered by a `pong` push, in order with the messages
/// (a liveness probe that also proves every message published before it was delivered).
pub fn ping_command(token: &[u8]) -> Command {
    Command::new("PING").arg(token)
}

/// One push on a subscribed connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PubSubEvent {
    /// A message published on `channel`.
    Message {
        /// The pub/sub channel name.
        channel: Vec<u8>,
        /// The published bytes (a frame, for pushwire's channels).
        payload: Vec<u8>,
    },
    /// A `SUBSCRIBE` took effect; `count` channels are now subscribed on this connection.
    Subscribed {
        /// The pub/sub channel name.
        channel: Vec<u8>,
        /// Channels subscribed on the connection.
        count: i64,
    },
    /// An `UNSUBSCRIBE` took effect; `count` channels remain.
    Unsubscribed {
        /// The pub/sub channel name.
        channel: Vec<u8>,
        /// Channels still subscribed on the connection.
        count: i64,
    },
    /// The answer to [`ping_command`], with its token.
    Pong(Vec<u8>),
}

/// Classifies one value received on a subscribed connection. An error reply (e.g. a refused
/// command) is [`ReplyError::Server`]; an array of another shape is
/// [`ReplyError::Unexpected`].
pub fn parse_pubsub(value: Value) -> Result<PubSubEvent, ReplyError> {
    ReplyError::check(&value)?;
    let Value::Array(items) = value else {
        return Err(ReplyError::Unexpected("a pub/sub push array"));
    };
    let mut items = items.into_iter();
    let kind = items.next();
    let kind = kind.as_ref().and_then(Value::as_bytes).ok_or(ReplyError::Unexpected("a pub/sub kind"))?;
    let bytes = |v: Option<Value>| match v {
        Some(Value::BulkString(b)) => Ok(b),
        _ => Err(ReplyError::Unexpected("a pub/sub bulk string")),
    };
    let count =
        |v: Option<Value>| v.and_then(|v| v.as_integer()).ok_or(ReplyError::Unexpected("a pub/sub count"));
    let event = match kind {
        b"message" => PubSubEvent::Message { channel: bytes(items.next())?, payload: bytes(items.next())? },
        b"subscribe" => {
            PubSubEvent::Subscribed { channel: bytes(items.next())?, count: count(items.next())? }
        }
        b"unsubscribe" => {
            PubSubEvent::Unsubscribed { channel: bytes(items.next())?, count: count(items.next())? }
        }
        b"pong" => PubSubEvent::Pong(bytes(items.next())?),
        _ => return Err(ReplyError::Unexpected("message, subscribe, unsubscribe or pong")),
    };
    if items.next().is_some() {
        return Err(ReplyError::Unexpected("no more pub/sub elements"));
    }
    Ok(event)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(b: &str) -> Value {
        Value::BulkString(b.as_bytes().to_vec())
    }

    #[test]
    fn pubsub_commands() {
        assert_eq!(subscribe_command(["a", "b"]), Command::new("SUBSCRIBE").arg("a").arg("b"));
        assert_eq!(unsubscribe_command(["a"]), Command::new("UNSUBSCRIBE").arg("a"));
        assert_eq!(ping_command(b"7").to_bytes(), b"*2\r\n$4\r\nPING\r\n$1\r\n7\r\n");
    }

    #[test]
    fn pubsub_pushes_from_the_spec() {
        let cases = [
            (
                Value::Array(vec![bulk("subscribe"), bulk("first"), Value::Integer(1)]),
                PubSubEvent::Subscribed { channel: b"first".to_vec(), count: 1 },
            ),
            (
                Value::Array(vec![bulk("message"), bulk("first"), bulk("Hello")]),
                PubSubEvent::Message { channel: b"first".to_vec(), payload: b"Hello".to_vec() },
            ),
            (
                Value::Array(vec![bulk("unsubscribe"), bulk("first"), Value::Integer(0)]),
                PubSubEvent::Unsubscribed { channel: b"first".to_vec(), count: 0 },
            ),
            (Value::Array(vec![bulk("pong"), bulk("7")]), PubSubEvent::Pong(b"7".to_vec())),
        ];
        for (value, event) in cases {
            assert_eq!(parse_pubsub(value), Ok(event));
        }
    }

    #[test]
    fn pubsub_odd_pushes_are_errors() {
        let cases = [
            Value::Integer(1),
            Value::Array(vec![]),
            Value::Array(vec![bulk("pmessage"), bulk("p"), bulk("c"), bulk("x")]),
            Value::Array(vec![bulk("message"), bulk("c")]),
            Value::Array(vec![bulk("message"), bulk("c"), Value::Integer(1)]),
            Value::Array(vec![bulk("subscribe"), bulk("c"), bulk("1")]),
            Value::Array(vec![bulk("pong"), bulk("x"), bulk("y")]),
        ];
        for value in cases {
            assert!(matches!(parse_pubsub(value.clone()), Err(ReplyError::Unexpected(_))), "{value:?}");
        }
        assert_eq!(
            parse_pubsub(Value::Error(b"ERR only (P|S)SUBSCRIBE / ... allowed".to_vec())),
            Err(ReplyError::Server("ERR only (P|S)SUBSCRIBE / ... allowed".into()))
        );
    }
}
