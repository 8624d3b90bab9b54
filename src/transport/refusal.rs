//! Why a request is refused before any transport serves it, as a type: each refusal knows its
//! HTTP status, the fields its answer must carry and a one-line explanation for the body
//! (server-made, never echoing the request).
//!
//! Implements: the statuses of RFC 9110 §15.5 for the routing rules of [`super::route()`], and
//! of RFC 6455 §4.2.1-§4.2.2 for a refused opening handshake (through
//! [`HandshakeError::status_hint`]).
//!
//! Does not: refuse what happens after routing (the hub's refusals are `crate::hub::HubError`,
//! answered by the session in its own format).

use super::access::Denied;
use super::publish::EventNameError;
use super::rooms::ChannelsError;
use crate::ws::HandshakeError;

/// The `WWW-Authenticate` challenge of a server API 401 (RFC 9110 §11.6.1: a 401 MUST carry
/// one).
pub const API_CHALLENGE: &[(&str, &str)] = &[("WWW-Authenticate", "apikey realm=\"pushwire api\"")];

/// A request refused at routing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The request-target is not an absolute path (RFC 9112 §3.2.1): 400.
    BadTarget,
    /// A method the server does not implement (RFC 9110 §9.1): 501.
    MethodNotImplemented,
    /// A known method the resource does not allow (RFC 9110 §15.5.6): 405 with `Allow`.
    MethodNotAllowed {
        /// The `Allow` field.
        allow: &'static [(&'static str, &'static str)],
    },
    /// No such path: 404.
    NotFound,
    /// A channel name outside the allowed alphabet or length: 400.
    BadChannelName,
    /// `?mode=` names no transport: 400.
    BadMode,
    /// A query parameter with broken percent-encoding: 400.
    BadQueryEncoding,
    /// The transport is disabled with `--disable`: 403.
    TransportDisabled,
    /// `?wait=` is not a number of seconds: 400.
    BadWait,
    /// The chunked stream asked for over HTTP/1.0 (RFC 9112 §7): 400.
    StreamNeedsHttp11,
    /// `?since=` is not a cursor: 400.
    BadSince,
    /// `?last_event_id=` is not a cursor: 400 (an unreadable `Last-Event-ID` header is a gap).
    BadLastEventId,
    /// `?event=` is not a token of at most `max_event_name_bytes`: 400.
    BadEventName,
    /// `?event=gap`, reserved for gap signals: 400.
    ReservedEventName,
    /// The access policy refused the request: 401 or 403 (see [`Denied`]).
    Denied(Denied),
    /// The WebSocket opening handshake was refused (its status and fields).
    Handshake(HandshakeError),
    /// `/ws` without the `pushwire.v1` subprotocol offered: 400 (command mode speaks only it).
    CommandsNeedV1,
    /// A multi-channel request's channel list is empty, too long, malformed or repeats a
    /// channel (issue #13; the count is checked before any name is copied).
    BadChannelList(ChannelsError),
    /// A multi-channel request's `since` is not a composite cursor for its channels.
    BadCompositeSince,
    /// Publishing takes one channel: `POST /channels/a,b` is not a resource.
    PublishNeedsOneChannel,
    /// A server API request without `Authorization: apikey KEY`: 401 with a challenge.
    ApiKeyMissing,
    /// A server API request with another key: 403.
    ApiKeyWrong,
}

impl Refusal {
    /// The status code of the answer.
    pub fn status(&self) -> u16 {
        match self {
            Refusal::MethodNotImplemented => 501,
            Refusal::MethodNotAllowed { .. } => 405,
            Refusal::NotFound => 404,
            Refusal::TransportDisabled | Refusal::ApiKeyWrong => 403,
            Refusal::ApiKeyMissing => 401,
            Refusal::Denied(denied) => denied.status_hint(),
            Refusal::Handshake(e) => e.status_hint(),
            Refusal::BadTarget
            | Refusal::BadChannelName
            | Refusal::BadMode
            | Refusal::BadQueryEncoding
            | Refusal::BadWait
            | Refusal::StreamNeedsHttp11
            | Refusal::BadSince
            | Refusal::BadLastEventId
            | Refusal::BadEventName
            | Refusal::ReservedEventName
            | Refusal::CommandsNeedV1
            | Refusal::BadChannelList(_)
            | Refusal::BadCompositeSince
            | Refusal::PublishNeedsOneChannel => 400,
        }
    }

    /// Fields the answer must carry (`Allow` on a 405, `Sec-WebSocket-Version` on a 426).
    pub fn headers(&self) -> &'static [(&'static str, &'static str)] {
        match self {
            Refusal::MethodNotAllowed { allow } => allow,
            Refusal::Handshake(e) => e.extra_headers(),
            Refusal::Denied(denied) => denied.headers(),
            Refusal::ApiKeyMissing => API_CHALLENGE,
            _ => &[],
        }
    }

    /// For a refusal about a token, the reason it is counted under in `/metrics`.
    pub fn token_reason(&self) -> Option<&'static str> {
        match self {
            Refusal::Denied(denied) => denied.token_reason(),
            _ => None,
        }
    }

    /// A one-line explanation for the body.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::BadTarget => "request-target must be an absolute path",
            Refusal::MethodNotImplemented => "method not implemented",
            Refusal::MethodNotAllowed { .. } => "method not allowed",
            Refusal::NotFound => "not found",
            Refusal::BadChannelName => "channel names are 1 to 128 bytes of A-Z a-z 0-9 . _ ~ -, not . or ..",
            Refusal::BadMode => "mode must be ws, sse, stream, longpoll or poll",
            Refusal::BadQueryEncoding => "bad percent-encoding in query",
            Refusal::TransportDisabled => "this transport is disabled on this server",
            Refusal::BadWait => "wait must be a number of seconds",
            Refusal::StreamNeedsHttp11 => "streaming needs HTTP/1.1",
            Refusal::BadSince => "since must be a cursor EPOCH:OFFSET",
            Refusal::BadLastEventId => "last_event_id must be a cursor EPOCH:OFFSET",
            Refusal::BadEventName => "event must be a token of at most max-event-name-bytes",
            Refusal::ReservedEventName => "the event names gap and token_expired are reserved for the server's signals",
            Refusal::Denied(denied) => denied.reason(),
            Refusal::Handshake(_) => "WebSocket handshake refused",
            Refusal::CommandsNeedV1 => "/ws needs the WebSocket subprotocol pushwire.v1",
            Refusal::BadChannelList(e) => e.as_str(),
            Refusal::BadCompositeSince => {
                "since must hold one cursor EPOCH:OFFSET (or nothing) per channel, comma-separated, or a compact id HASH.O1.O2"
            }
            Refusal::PublishNeedsOneChannel => "publish to one channel at a time",
            Refusal::ApiKeyMissing => "the server API needs Authorization: apikey KEY",
            Refusal::ApiKeyWrong => "wrong API key",
        }
    }
}

/// `?event=` and the server API answer a refused event name with 400 and its reason.
impl From<EventNameError> for Refusal {
    fn from(error: EventNameError) -> Refusal {
        match error {
            EventNameError::TooLong | EventNameError::NotAToken => Refusal::BadEventName,
            EventNameError::Reserved => Refusal::ReservedEventName,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_refusal_knows_its_status_and_fields() {
        assert_eq!(Refusal::MethodNotImplemented.status(), 501);
        let allow: &[(&str, &str)] = &[("Allow", "GET")];
        let not_allowed = Refusal::MethodNotAllowed { allow };
        assert_eq!((not_allowed.status(), not_allowed.headers()), (405, allow));
        assert_eq!(Refusal::Denied(Denied::MissingToken).status(), 401);
        assert_eq!(Refusal::Denied(Denied::Origin).status(), 403);
        assert_eq!(Refusal::TransportDisabled.status(), 403);
        assert_eq!(Refusal::BadSince.status(), 400);
        assert!(Refusal::BadSince.headers().is_empty());
    }
}
