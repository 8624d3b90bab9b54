//! Blocking clients on `std::net`: the I/O drivers around the pure protocol cores.
//!
//! Implements: [`Subscriber`] ([`subscribe`]), one API over the five transports that
//! reconnects with backoff and resumes by cursor, exactly once and in order; [`Publisher`]
//! ([`publish`]) over HTTP or WebSocket; [`presence()`] ([`mod@presence`]), a channel's
//! members; [`http`], a minimal HTTP/1.1 client (RFC 9112) that
//! both share; [`crate::protocol::envelope`], reading pushwire's JSON; [`ws`], a blocking WebSocket client
//! (RFC 6455, client role) over
//! [`std::net::TcpStream`]; [`tls`], TLS under both for `wss://` and `https://` (`rustls`);
//! [`Url`], the `ws://` and `wss://` URIs of
//! [RFC 6455 §3](https://www.rfc-editor.org/rfc/rfc6455#section-3) (and `http://` and
//! `https://`, which name the same servers); [`Error`], everything a client call can fail with.
//!
//! This is one of the places allowed to do I/O (ARCHITECTURE.md, "Layer rules" and invariant 1
//! "Pure code does no I/O"): it owns the socket, the deadlines and the randomness (handshake
//! nonces, mask keys and backoff jitter are drawn here with `rand`, never in `crate::ws`). Every
//! protocol decision is made by the pure code it drives ([`crate::ws::handshake`],
//! [`crate::ws::WsConn`], [`crate::http1::head`]).
//!
//! Does not: follow redirects, use proxies, resolve names other than through the system resolver
//! (`ToSocketAddrs`), or accept user info in a URL.

pub mod http;
pub mod presence;
pub mod publish;
mod socket;
pub mod subscribe;
pub mod tls;
pub mod ws;

use std::fmt;
use std::io;

pub use self::http::{HttpConn, HttpOptions};
pub use self::presence::{presence, Presence, PresenceMember, PresenceOptions};
pub use self::publish::{PublishOptions, Publisher};
pub use self::subscribe::{Backoff, Item, SubscribeOptions, Subscriber, Timeouts, Transport};
pub use self::tls::TlsOptions;
pub use self::ws::{WsClient, WsOptions};
pub use crate::protocol::envelope::Payload;

/// Everything a client call can fail with; [`fmt::Display`] says what happened in one line.
#[non_exhaustive]
#[derive(Debug)]
pub enum Error {
    /// The URL could not be used; the text says why.
    InvalidUrl(String),
    /// An option is out of range (e.g. a zero limit); the text says which.
    InvalidOptions(String),
    /// TLS failed (`wss://`, `https://`): in the handshake, the server's certificate is not
    /// trusted or does not name the host, or no protocol version or cipher suite is in common;
    /// later, the server broke TLS. The text is rustls's reason.
    Tls(String),
    /// The operating system refused a socket operation (resolve, connect, read, write).
    Io(io::Error),
    /// A deadline passed while waiting; names what was awaited. After a timeout in
    /// [`WsClient::recv`] the connection is still usable (nothing was half-consumed).
    Timeout {
        /// What the client was waiting for, e.g. "the opening handshake response".
        waiting_for: &'static str,
    },
    /// The server's response head is not HTTP/1.1 syntax, or too large (RFC 9112 §4).
    InvalidResponse(crate::http1::Error),
    /// The opening handshake failed (RFC 6455 §4.1): a status other than 101, a wrong
    /// `Sec-WebSocket-Accept`, a subprotocol not offered, or a request field that would break
    /// the request head.
    Handshake(crate::ws::HandshakeError),
    /// The server broke RFC 6455; the client failed the connection (§7.1.7): it sent a close
    /// frame with [`crate::ws::Error::close_code`] and closed TCP.
    Protocol(crate::ws::Error),
    /// A send the caller must not make (e.g. a ping payload over 125 bytes); nothing was sent.
    Send(crate::ws::SendError),
    /// The connection is closed: the closing handshake finished, our close was already sent,
    /// or an earlier error ended it. Nothing more can be sent or received.
    Closed,
    /// The server closed TCP without a close frame: RFC 6455 §7.1.5 calls this close code 1006
    /// (abnormal closure).
    AbnormalClosure,
    /// The server answered with an HTTP status other than the one expected (e.g. 401, 404,
    /// 503); `reason` is the first line of its body.
    Http {
        /// The status code.
        status: u16,
        /// The first line of the answer's body, at most 200 characters.
        reason: String,
    },
    /// The server does not speak the transport asked for (wrong `Content-Type`, WebSocket
    /// subprotocol `pushwire.v1` not selected); the text says what came instead.
    NotPushwire(String),
    /// A message from the server is not in pushwire's format (JSON envelope, cursor, base64).
    InvalidMessage(String),
    /// An event stream went over the client's limits.
    EventStream(crate::sse::ParseError),
    /// The server closed the WebSocket connection with this close frame (e.g. 1001 when it
    /// shuts down, 1008 for a slow consumer or a refused publish).
    ClosedByServer(Option<crate::ws::CloseFrame>),
}

impl Error {
    /// True when trying again later may work: lost connections, timeouts, broken streams,
    /// 408, 429 and 5xx answers. False for refusals and misuse (bad URL or options, TLS, 4xx,
    /// a server that does not speak the transport). The subscriber retries exactly these.
    pub fn is_retryable(&self) -> bool {
        let status_retryable = |status: u16| status == 408 || status == 429 || status >= 500;
        match self {
            Error::InvalidUrl(_)
            | Error::InvalidOptions(_)
            | Error::Tls(_)
            | Error::Send(_)
            | Error::NotPushwire(_) => false,
            Error::Http { status, .. } => status_retryable(*status),
            Error::Handshake(crate::ws::HandshakeError::UnexpectedStatus(status)) => {
                status_retryable(*status)
            }
            Error::Handshake(_) => false,
            Error::Io(_)
            | Error::Timeout { .. }
            | Error::InvalidResponse(_)
            | Error::Protocol(_)
            | Error::Closed
            | Error::AbnormalClosure
            | Error::InvalidMessage(_)
            | Error::EventStream(_)
            | Error::ClosedByServer(_) => true,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidUrl(why) => write!(f, "invalid URL: {why}"),
            Error::InvalidOptions(why) => write!(f, "invalid options: {why}"),
            Error::Tls(why) => write!(f, "TLS failed: {why}"),
            Error::Io(e) => write!(f, "I/O error: {e}"),
            Error::Timeout { waiting_for } => write!(f, "timed out waiting for {waiting_for}"),
            Error::InvalidResponse(e) => write!(f, "the server's HTTP response is invalid: {e}"),
            Error::Handshake(e) => write!(f, "WebSocket opening handshake failed: {e}"),
            Error::Protocol(e) => write!(
                f,
                "the server broke the WebSocket protocol: {e}; connection failed with close code {}",
                e.close_code()
            ),
            Error::Send(e) => write!(f, "cannot send: {e}"),
            Error::Closed => f.write_str("the WebSocket connection is closed"),
            Error::AbnormalClosure => {
                f.write_str("the server closed the connection without a close frame (1006, abnormal closure)")
            }
            Error::Http { status, reason } if reason.is_empty() => write!(f, "the server answered {status}"),
            Error::Http { status, reason } => write!(f, "the server answered {status}: {reason}"),
            Error::NotPushwire(why) => write!(f, "the server does not speak this transport: {why}"),
            Error::InvalidMessage(why) => write!(f, "invalid message from the server: {why}"),
            Error::EventStream(e) => write!(f, "event stream refused: {e}"),
            Error::ClosedByServer(None) => f.write_str("the server closed the WebSocket connection"),
            Error::ClosedByServer(Some(frame)) => {
                write!(f, "the server closed the WebSocket connection with {}", frame.code.0)?;
                if !frame.reason.is_empty() {
                    write!(f, " ({})", frame.reason.escape_debug())?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io(e) => Some(e),
            Error::Handshake(e) => Some(e),
            Error::Protocol(e) => Some(e),
            Error::Send(e) => Some(e),
            Error::EventStream(e) => Some(e),
            _ => None,
        }
    }
}

impl From<crate::protocol::envelope::Invalid> for Error {
    fn from(e: crate::protocol::envelope::Invalid) -> Self {
        Error::InvalidMessage(e.0)
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Error::Io(e)
    }
}

/// A `ws://` or `wss://` (or `http://`, `https://`) URL split into what the opening handshake needs
/// ([RFC 6455 §3](https://www.rfc-editor.org/rfc/rfc6455#section-3)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    /// Host name or IP address; an IPv6 address without its brackets.
    pub host: String,
    /// TCP port; 80 (443 when secure) when the URL names none.
    pub port: u16,
    /// §3's secure flag: `wss://` or `https://`, so TLS runs under HTTP (§4.1).
    pub secure: bool,
    /// §3's "resource name": the path (at least `/`) and `?query` if any, as sent in the
    /// request line.
    pub resource_name: String,
}

/// The port of `ws://` and `http://` when the URL names none (RFC 6455 §3).
const DEFAULT_PORT: u16 = 80;

/// The port of `wss://` and `https://` when the URL names none (RFC 6455 §3).
const DEFAULT_SECURE_PORT: u16 = 443;

impl Url {
    /// Parses `ws[s]://host[:port][/path][?query]`; `http://` is taken as `ws://` and
    /// `https://` as `wss://` (the same server and port, as browsers do since the WHATWG
    /// WebSocket standard). Schemes are case-insensitive.
    pub fn parse(url: &str) -> Result<Url, Error> {
        let invalid = |why: &str| Error::InvalidUrl(format!("{why} in {url:?}"));
        let (scheme, rest) = url.split_once("://").ok_or_else(|| invalid("no scheme (expected ws://)"))?;
        let secure = match scheme.to_ascii_lowercase().as_str() {
            "ws" | "http" => false,
            "wss" | "https" => true,
            _ => return Err(invalid("scheme is not ws://, wss://, http:// or https://")),
        };
        let default_port = if secure { DEFAULT_SECURE_PORT } else { DEFAULT_PORT };
        // RFC 6455 §3: "Fragment identifiers are meaningless in the context of WebSocket URIs
        // and MUST NOT be used on these URIs."
        if rest.contains('#') {
            return Err(invalid("a fragment (#) is not allowed in a WebSocket URI"));
        }
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, resource) = rest.split_at(authority_end);
        if authority.contains('@') {
            return Err(invalid("user info (user@host) is not supported"));
        }
        let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
            let (host, after) =
                bracketed.split_once(']').ok_or_else(|| invalid("an IPv6 address without its closing ]"))?;
            if host.is_empty() || !host.bytes().all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.') {
                return Err(invalid("a malformed IPv6 address"));
            }
            match after {
                "" => (host, None),
                _ => (host, Some(after.strip_prefix(':').ok_or_else(|| invalid("junk after the ]"))?)),
            }
        } else {
            match authority.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(invalid("no host"));
        }
        // RFC 3986 §3.2.2 reg-name: unreserved, percent-encoded and sub-delims characters.
        if !host.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~%!$&'()*+,;=:".contains(&b)) {
            return Err(invalid("a character not allowed in a host name"));
        }
        let port = match port {
            // RFC 3986 §3.2.3: an empty port is the scheme's default.
            None | Some("") => default_port,
            Some(digits) => match digits.parse::<u16>() {
                Ok(port) if port != 0 && digits.bytes().all(|b| b.is_ascii_digit()) => port,
                _ => return Err(invalid("the port is not a number from 1 to 65535")),
            },
        };
        let resource_name = match resource {
            "" => "/".to_string(),
            query if query.starts_with('?') => format!("/{query}"),
            path => path.to_string(),
        };
        if !resource_name.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(invalid("spaces and non-ASCII characters in the path must be percent-encoded"));
        }
        Ok(Url { host: host.to_string(), port, secure, resource_name })
    }

    /// The `Host` field value (RFC 9112 §3.2): the host, bracketed when IPv6, and the port
    /// unless it is the scheme's default.
    pub fn host_header(&self) -> String {
        let host = if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        let default_port = if self.secure { DEFAULT_SECURE_PORT } else { DEFAULT_PORT };
        if self.port == default_port {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }

    /// The WebSocket URL of `resource_name` on this server: `wss://` when secure, else `ws://`.
    pub fn websocket_url(&self, resource_name: &str) -> String {
        let scheme = if self.secure { "wss" } else { "ws" };
        format!("{scheme}://{}{resource_name}", self.host_header())
    }
}

impl std::str::FromStr for Url {
    type Err = Error;

    fn from_str(s: &str) -> Result<Url, Error> {
        Url::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(host: &str, port: u16, resource_name: &str) -> Url {
        Url { host: host.to_string(), port, secure: false, resource_name: resource_name.to_string() }
    }

    fn secure(host: &str, port: u16, resource_name: &str) -> Url {
        Url { secure: true, ..url(host, port, resource_name) }
    }

    #[test]
    fn rfc6455_3_ws_uri_parts_and_defaults() {
        assert_eq!(Url::parse("ws://example.com").unwrap(), url("example.com", 80, "/"));
        assert_eq!(Url::parse("ws://example.com:8080/chat").unwrap(), url("example.com", 8080, "/chat"));
        assert_eq!(Url::parse("WS://a/b/c?x=1&y=%20").unwrap(), url("a", 80, "/b/c?x=1&y=%20"));
        // A query without a path gets the path "/" (§3: "/" if the path component is empty).
        assert_eq!(Url::parse("ws://a:81?x").unwrap(), url("a", 81, "/?x"));
        assert_eq!(Url::parse("ws://a:/p").unwrap(), url("a", 80, "/p"));
        assert_eq!(Url::parse("http://127.0.0.1:9/echo").unwrap(), url("127.0.0.1", 9, "/echo"));
        assert_eq!(Url::parse("ws://[::1]:9/x").unwrap(), url("::1", 9, "/x"));
        assert_eq!(Url::parse("ws://[::1]").unwrap(), url("::1", 80, "/"));
    }

    #[test]
    fn rfc6455_3_host_header_has_port_unless_default() {
        assert_eq!(url("a", 80, "/").host_header(), "a");
        assert_eq!(url("a", 8080, "/").host_header(), "a:8080");
        assert_eq!(url("::1", 8080, "/").host_header(), "[::1]:8080");
        assert_eq!(url("::1", 80, "/").host_header(), "[::1]");
    }

    #[test]
    fn rfc6455_3_wss_uri_sets_the_secure_flag_and_port_443() {
        assert_eq!(Url::parse("wss://example.com/").unwrap(), secure("example.com", 443, "/"));
        assert_eq!(Url::parse("https://example.com").unwrap(), secure("example.com", 443, "/"));
        assert_eq!(Url::parse("WSS://x:8443/a").unwrap(), secure("x", 8443, "/a"));
        assert_eq!(secure("x", 443, "/").host_header(), "x");
        assert_eq!(secure("x", 80, "/").host_header(), "x:80");
        assert_eq!(secure("x", 8443, "/").websocket_url("/c?since=1"), "wss://x:8443/c?since=1");
        assert_eq!(url("x", 80, "/").websocket_url("/c"), "ws://x/c");
    }

    #[test]
    fn rfc6455_3_fragment_must_not_be_used() {
        let err = Url::parse("ws://a/b#frag").unwrap_err();
        assert!(matches!(err, Error::InvalidUrl(_)));
        assert!(err.to_string().contains("fragment"), "{err}");
    }

    #[test]
    fn invalid_urls_say_why() {
        for (u, why) in [
            ("example.com/x", "no scheme"),
            ("ftp://a/", "scheme"),
            ("ws://", "no host"),
            ("ws:///path", "no host"),
            ("ws://a:0/", "port"),
            ("ws://a:65536/", "port"),
            ("ws://a:+80/", "port"),
            ("ws://a:x/", "port"),
            ("ws://user@a/", "user info"),
            ("ws://[::1/", "closing ]"),
            ("ws://[::1]x/", "junk"),
            ("ws://[zz]/", "IPv6"),
            ("ws://a b/", "host"),
            ("ws://a/b c", "percent-encoded"),
            ("ws://a/é", "percent-encoded"),
            ("ws://a/\r\nX: y", "percent-encoded"),
        ] {
            match Url::parse(u) {
                Err(Error::InvalidUrl(text)) => assert!(text.contains(why), "{u}: {text}"),
                other => panic!("{u}: {other:?}"),
            }
        }
    }

    #[test]
    fn error_messages_are_one_clear_line() {
        use crate::ws::{CloseCode, HandshakeError};
        let errors = [
            Error::InvalidUrl("no host in \"ws://\"".into()),
            Error::InvalidOptions("ws max_message_bytes must be greater than 0".into()),
            Error::Tls("invalid peer certificate: UnknownIssuer".into()),
            Error::Io(io::Error::new(io::ErrorKind::ConnectionRefused, "refused")),
            Error::Timeout { waiting_for: "a frame" },
            Error::InvalidResponse(crate::http1::Error::MalformedHead),
            Error::Handshake(HandshakeError::UnexpectedStatus(404)),
            Error::Protocol(crate::ws::Error::MaskedServerFrame),
            Error::Send(crate::ws::SendError::ControlPayloadTooLong),
            Error::Closed,
            Error::AbnormalClosure,
            Error::Http { status: 401, reason: "a bearer token is required".into() },
            Error::NotPushwire("the answer is \"text/html\", not text/event-stream".into()),
            Error::InvalidMessage("not JSON".into()),
            Error::EventStream(crate::sse::ParseError::LineTooLong),
            Error::ClosedByServer(Some(crate::ws::CloseFrame {
                code: CloseCode(1001),
                reason: "bye\n".into(),
            })),
            Error::ClosedByServer(None),
        ];
        for e in &errors {
            let text = e.to_string();
            assert!(!text.is_empty() && !text.contains('\n'), "{e:?}: {text}");
        }
        let protocol = Error::Protocol(crate::ws::Error::MaskedServerFrame).to_string();
        assert!(protocol.contains("masked") && protocol.contains("1002"), "{protocol}");
        assert_eq!(crate::ws::Error::MaskedServerFrame.close_code(), CloseCode::PROTOCOL_ERROR);
        assert!(Error::Handshake(HandshakeError::UnexpectedStatus(404)).to_string().contains("404"));
        assert!(Error::Timeout { waiting_for: "a frame" }.to_string().contains("timed out"));
        assert!(Error::Http { status: 503, reason: String::new() }.is_retryable());
        assert!(!Error::Http { status: 403, reason: String::new() }.is_retryable());
        assert!(Error::AbnormalClosure.is_retryable() && !Error::Tls(String::new()).is_retryable());
    }
}
