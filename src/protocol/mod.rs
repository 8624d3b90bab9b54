//! pushwire's own vocabulary, shared by the server, the clients and the load generator: the
//! push styles ([`Transport`], named as in `?mode=`), the `pushwire.v1` WebSocket subprotocol
//! name ([`PROTOCOL_V1`]) and the JSON envelope both ways ([`envelope`]).
//!
//! Implements: the names of README's transports table; nothing here does I/O.
//!
//! Does not: route requests (`crate::transport::route`), or frame bytes on the wire (each
//! spec folder does).

pub mod envelope;

/// The WebSocket subprotocol whose frames are JSON envelopes carrying cursors
/// ([RFC 6455 §1.9](https://www.rfc-editor.org/rfc/rfc6455#section-1.9)).
pub const PROTOCOL_V1: &str = "pushwire.v1";

/// The push styles a subscriber can use (README's transports table): what `?mode=` selects,
/// what the server counts open connections under, what a client or the load generator speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// WebSocket (RFC 6455).
    WebSocket,
    /// Server-Sent Events (`Accept: text/event-stream`).
    Sse,
    /// pushwire's chunked NDJSON stream (`Accept: application/x-ndjson`).
    Stream,
    /// Long poll (`?wait=`).
    LongPoll,
    /// Short poll.
    Poll,
}

impl Transport {
    /// Every transport, in the order of README's table.
    pub const ALL: [Transport; 5] =
        [Transport::WebSocket, Transport::Sse, Transport::Stream, Transport::LongPoll, Transport::Poll];

    /// The transport named as in `?mode=`: `ws`, `sse`, `stream`, `longpoll`, `poll`.
    pub fn parse(name: &str) -> Option<Transport> {
        Transport::ALL.into_iter().find(|t| t.name() == name)
    }

    /// Its `?mode=` name.
    pub fn name(self) -> &'static str {
        match self {
            Transport::WebSocket => "ws",
            Transport::Sse => "sse",
            Transport::Stream => "stream",
            Transport::LongPoll => "longpoll",
            Transport::Poll => "poll",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mode_names_round_trip() {
        for t in Transport::ALL {
            assert_eq!(Transport::parse(t.name()), Some(t));
        }
        assert_eq!(Transport::parse("WS"), None);
        assert_eq!(Transport::parse("websocket"), None);
    }
}
