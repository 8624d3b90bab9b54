//! The opening handshake: an HTTP/1.1 Upgrade to WebSocket, checked and answered.
//!
//! Implements: [RFC 6455 §4](https://www.rfc-editor.org/rfc/rfc6455#section-4) for both roles:
//! the server reads a parsed request head ([`accept`], §4.2.1), checks the Origin against an
//! allowlist (§4.2.2, §10.2), selects a subprotocol (§4.2.2) and writes the 101 response
//! ([`Accepted::response_head`]); the client writes the request ([`ClientRequest::encode`],
//! §4.1) and checks the response ([`verify_response`], §4.1). The accept key is computed as §1.3
//! and §4.2.2 define it ([`accept_key`]).
//!
//! Does not: parse HTTP (it takes [`RequestHead`] / [`ResponseHead`] from `crate::http1`), write
//! error responses (the caller answers [`HandshakeError::status_hint`] with
//! [`HandshakeError::extra_headers`]), know extensions other than permessage-deflate (the
//! server declines them; negotiation itself lives in [`crate::ws::deflate`]), or draw the
//! client's nonce
//! (the caller passes 16 random bytes).

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use sha1::{Digest, Sha1};

use crate::http1::head::{Headers, RequestHead, ResponseHead};
use crate::ws::deflate::{
    negotiate_client, negotiate_server, parse_extensions, NegotiateError, PerMessageDeflate, CLIENT_OFFER,
};

/// The GUID appended to the key before hashing (RFC 6455 §1.3).
const WEBSOCKET_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// The `Sec-WebSocket-Accept` value for a `Sec-WebSocket-Key` value as sent (its base64 text):
/// base64 of the SHA-1 of the key concatenated with the GUID (§1.3, §4.2.2 item 5.4).
pub fn accept_key(key: &[u8]) -> String {
    let mut sha1 = Sha1::new();
    sha1.update(key);
    sha1.update(WEBSOCKET_GUID.as_bytes());
    STANDARD.encode(sha1.finalize())
}

/// What the server accepts; the hook for command-line flags such as `--allow-origin`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerOptions {
    /// Subprotocols the server speaks. The first one the client offers wins, in the client's
    /// order of preference (§4.1), so the order of this list does not matter. Empty: none.
    pub protocols: Vec<String>,
    /// Origins allowed to connect, compared ASCII case-insensitively with the `Origin` field
    /// (e.g. `https://example.com`). `None` allows every origin. A request without `Origin`
    /// is allowed: only browsers send it, and it protects browsers' users (§10.2); other
    /// clients can send any value they like.
    pub allowed_origins: Option<Vec<String>>,
    /// Accept a permessage-deflate offer (RFC 7692). Default false (for this struct; the
    /// server's configuration turns it on).
    pub deflate: bool,
}

/// A handshake the server accepted: write [`Accepted::response_head`], then speak WebSocket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// The `Sec-WebSocket-Accept` value.
    pub accept: String,
    /// The subprotocol selected, if any.
    pub protocol: Option<String>,
    /// permessage-deflate, when an offer was accepted (RFC 7692 §5).
    pub deflate: Option<PerMessageDeflate>,
}

impl Accepted {
    /// Appends the whole 101 response head (§4.2.2 item 5), ending with the blank line.
    pub fn response_head(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"HTTP/1.1 101 Switching Protocols\r\n");
        out.extend_from_slice(b"Upgrade: websocket\r\n");
        out.extend_from_slice(b"Connection: Upgrade\r\n");
        out.extend_from_slice(b"Sec-WebSocket-Accept: ");
        out.extend_from_slice(self.accept.as_bytes());
        out.extend_from_slice(b"\r\n");
        if let Some(protocol) = &self.protocol {
            out.extend_from_slice(b"Sec-WebSocket-Protocol: ");
            out.extend_from_slice(protocol.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        if let Some(deflate) = &self.deflate {
            // RFC 7692 §5: the server accepts one offer by naming it, with its parameters, in
            // the response's Sec-WebSocket-Extensions.
            out.extend_from_slice(b"Sec-WebSocket-Extensions: ");
            out.extend_from_slice(deflate.response_value().as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
    }
}

/// A rule of the opening handshake (§4) that a request, a response or a caller broke.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandshakeError {
    /// The request method is not GET (§4.2.1 item 1).
    NotGet,
    /// The request is HTTP/1.0 (§4.2.1 item 1 requires HTTP/1.1 or higher).
    NotHttp11,
    /// The request has no `Host` field (§4.2.1 item 2).
    MissingHost,
    /// No `Upgrade` field with the token `websocket` (§4.2.1 item 3, §4.1 for a response).
    MissingUpgradeWebsocket,
    /// No `Connection` field with the token `Upgrade` (§4.2.1 item 4, §4.1 for a response).
    MissingConnectionUpgrade,
    /// `Sec-WebSocket-Version` is missing, repeated or not 13 (§4.2.1 item 6, §4.2.2).
    UnsupportedVersion,
    /// `Sec-WebSocket-Key` is missing, repeated, or not base64 of exactly 16 bytes
    /// (§4.2.1 item 5, §11.3.1).
    InvalidKey,
    /// The `Origin` is not in [`ServerOptions::allowed_origins`] (§4.2.2, §10.2).
    OriginNotAllowed,
    /// Client role: the response status is not 101 (§4.1).
    UnexpectedStatus(u16),
    /// Client role: `Sec-WebSocket-Accept` is missing or does not match the key (§4.1).
    AcceptMismatch,
    /// Client role: the response selects a subprotocol the request did not offer, or more than
    /// one (§4.1, §11.3.4).
    ProtocolNotOffered,
    /// Client role: the response selects an extension the request did not offer (§4.1, §9.1).
    ExtensionNotOffered,
    /// Client role: the response's permessage-deflate answer breaks RFC 7692 §7.1 (an unknown,
    /// repeated or ill-formed parameter) or the §9.1 grammar.
    InvalidExtensionAnswer,
    /// Caller misuse: a field of a [`ClientRequest`] would break the request head (CR, LF, NUL,
    /// or a character outside its grammar); names the field.
    InvalidRequestField(&'static str),
}

impl HandshakeError {
    /// The status code a server answers this error with: 405, 400, 426 or 403. Client-role
    /// variants, which describe the server's response, give 502 (a gateway relaying the failure
    /// would send it); caller misuse gives 500.
    pub fn status_hint(&self) -> u16 {
        match self {
            HandshakeError::NotGet => 405,
            HandshakeError::NotHttp11
            | HandshakeError::MissingHost
            | HandshakeError::MissingUpgradeWebsocket
            | HandshakeError::MissingConnectionUpgrade
            | HandshakeError::InvalidKey => 400,
            HandshakeError::UnsupportedVersion => 426,
            HandshakeError::OriginNotAllowed => 403,
            HandshakeError::UnexpectedStatus(_)
            | HandshakeError::AcceptMismatch
            | HandshakeError::ProtocolNotOffered
            | HandshakeError::ExtensionNotOffered
            | HandshakeError::InvalidExtensionAnswer => 502,
            HandshakeError::InvalidRequestField(_) => 500,
        }
    }

    /// Header fields the error response must carry besides the usual ones.
    pub fn extra_headers(&self) -> &'static [(&'static str, &'static str)] {
        match self {
            // RFC 9110 §15.5.6: a 405 response MUST generate an Allow header field.
            HandshakeError::NotGet => &[("Allow", "GET")],
            // RFC 6455 §4.2.2: on a version mismatch the server MUST answer with "a
            // |Sec-WebSocket-Version| header field indicating the version(s) the server is
            // capable of understanding".
            HandshakeError::UnsupportedVersion => &[("Sec-WebSocket-Version", "13")],
            _ => &[],
        }
    }
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandshakeError::NotGet => f.write_str("a WebSocket handshake must use GET (RFC 6455 §4.2.1)"),
            HandshakeError::NotHttp11 => {
                f.write_str("a WebSocket handshake needs HTTP/1.1 or higher (§4.2.1)")
            }
            HandshakeError::MissingHost => f.write_str("the request has no Host field (§4.2.1)"),
            HandshakeError::MissingUpgradeWebsocket => {
                f.write_str("no Upgrade field with the token \"websocket\" (§4.2.1, §4.1)")
            }
            HandshakeError::MissingConnectionUpgrade => {
                f.write_str("no Connection field with the token \"Upgrade\" (§4.2.1, §4.1)")
            }
            HandshakeError::UnsupportedVersion => {
                f.write_str("Sec-WebSocket-Version must be exactly one field with value 13 (§4.2.1)")
            }
            HandshakeError::InvalidKey => {
                f.write_str("Sec-WebSocket-Key must be one field holding base64 of 16 bytes (§4.2.1)")
            }
            HandshakeError::OriginNotAllowed => f.write_str("the Origin is not allowed (§10.2)"),
            HandshakeError::UnexpectedStatus(status) => {
                write!(f, "the server answered {status} instead of 101 (§4.1)")
            }
            HandshakeError::AcceptMismatch => {
                f.write_str("Sec-WebSocket-Accept is missing or does not match the key sent (§4.1)")
            }
            HandshakeError::ProtocolNotOffered => {
                f.write_str("the server selected a subprotocol that was not offered (§4.1)")
            }
            HandshakeError::InvalidExtensionAnswer => {
                f.write_str("the server's permessage-deflate answer is invalid (RFC 7692 §7.1)")
            }
            HandshakeError::ExtensionNotOffered => {
                f.write_str("the server selected an extension that was not offered (§4.1)")
            }
            HandshakeError::InvalidRequestField(field) => write!(
                f,
                "the client request's {field} contains characters that would break the request head"
            ),
        }
    }
}

impl std::error::Error for HandshakeError {}

/// Checks a client's opening handshake (§4.2.1) and decides the server's answer (§4.2.2).
///
/// On success write [`Accepted::response_head`] and hand the connection to a
/// [`crate::ws::WsConn`] in the server role; on error answer
/// [`HandshakeError::status_hint`] with [`HandshakeError::extra_headers`].
pub fn accept(head: &RequestHead, options: &ServerOptions) -> Result<Accepted, HandshakeError> {
    // RFC 6455 §4.2.1: the request MUST be "An HTTP/1.1 or higher GET request".
    if head.method != "GET" {
        return Err(HandshakeError::NotGet);
    }
    if head.minor_version < 1 {
        return Err(HandshakeError::NotHttp11);
    }
    // RFC 6455 §4.2.1 item 2: "A |Host| header field containing the server's authority."
    if head.header("Host").is_none() {
        return Err(HandshakeError::MissingHost);
    }
    // RFC 6455 §4.2.1 item 3: "An |Upgrade| header field containing the value "websocket",
    // treated as an ASCII case-insensitive value."
    if !head.has_token("Upgrade", "websocket") {
        return Err(HandshakeError::MissingUpgradeWebsocket);
    }
    // RFC 6455 §4.2.1 item 4: "A |Connection| header field that includes the token "Upgrade",
    // treated as an ASCII case-insensitive value."
    if !head.has_token("Connection", "upgrade") {
        return Err(HandshakeError::MissingConnectionUpgrade);
    }
    // RFC 6455 §4.2.1 item 6: "A |Sec-WebSocket-Version| header field, with a value of 13."
    // Checked before the key: a client of another version may format its key differently.
    match single_field(head, "Sec-WebSocket-Version") {
        Some(b"13") => {}
        _ => return Err(HandshakeError::UnsupportedVersion),
    }
    // RFC 6455 §4.2.1 item 5: "A |Sec-WebSocket-Key| header field with a base64-encoded value
    // that, when decoded, is 16 bytes in length"; §11.3.1: it "MUST NOT appear more than once".
    let key = single_field(head, "Sec-WebSocket-Key").ok_or(HandshakeError::InvalidKey)?;
    // 16 bytes are exactly 24 base64 characters; checking first bounds the decoder's allocation.
    if key.len() != 24 || STANDARD.decode(key).map(|k| k.len()) != Ok(16) {
        return Err(HandshakeError::InvalidKey);
    }
    // RFC 6455 §4.2.2: "If the server does not wish to accept this connection, it MUST return an
    // appropriate HTTP error code (e.g., 403 Forbidden)" (the Origin check of §10.2).
    if let (Some(allowed), Some(origin)) = (&options.allowed_origins, head.header("Origin")) {
        if !allowed.iter().any(|a| a.as_bytes().eq_ignore_ascii_case(origin)) {
            return Err(HandshakeError::OriginNotAllowed);
        }
    }
    // RFC 6455 §4.2.2: the subprotocol "MUST be derived from the client's handshake,
    // specifically by selecting one of the values from the |Sec-WebSocket-Protocol| field".
    // The client lists them "ordered by preference" (§4.1), so its first one we speak wins.
    let protocol = head
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("Sec-WebSocket-Protocol"))
        .flat_map(|h| h.value.split(|&b| b == b','))
        .map(|offered| offered.trim_ascii())
        .find_map(|offered| options.protocols.iter().find(|p| p.as_bytes() == offered))
        .cloned();
    let deflate = if options.deflate { negotiate_deflate(head) } else { None };
    Ok(Accepted { accept: accept_key(key), protocol, deflate })
}

/// The permessage-deflate offer the server accepts from the request's
/// `Sec-WebSocket-Extensions` fields, if any (RFC 7692 §5). A field list that breaks the §9.1
/// grammar is declined as a whole: the handshake goes on without extensions.
fn negotiate_deflate(head: &RequestHead) -> Option<PerMessageDeflate> {
    let mut offers = Vec::new();
    for field in head.headers.iter().filter(|h| h.name.eq_ignore_ascii_case("Sec-WebSocket-Extensions")) {
        parse_extensions(&field.value, &mut offers).ok()?;
    }
    negotiate_server(&offers, head.header("User-Agent"))
}

/// The value of the only field named `name`; `None` when absent or repeated.
fn single_field<'a>(head: &'a impl Headers, name: &str) -> Option<&'a [u8]> {
    let mut fields = head.fields().iter().filter(|h| h.name.eq_ignore_ascii_case(name));
    match (fields.next(), fields.next()) {
        (Some(field), None) => Some(&field.value),
        _ => None,
    }
}

/// The opening handshake request of the client role (§4.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientRequest {
    /// The `Host` value: host, and port when not the default.
    pub host: String,
    /// The request-target: path and query, starting with `/`.
    pub path: String,
    /// The nonce; the caller draws it fresh and at random for each connection (§4.1 item 7).
    pub key: [u8; 16],
    /// Subprotocols offered, most preferred first; empty offers none.
    pub protocols: Vec<String>,
    /// More header fields (e.g. `Origin`, `Authorization`), written as given.
    pub extra_headers: Vec<(String, String)>,
    /// Offer permessage-deflate ([`CLIENT_OFFER`], RFC 7692).
    pub deflate: bool,
}

/// What the server selected in its 101 response (§4.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selected {
    /// The subprotocol, if any.
    pub protocol: Option<String>,
    /// permessage-deflate and its parameters, when the server accepted the offer.
    pub deflate: Option<PerMessageDeflate>,
}

impl ClientRequest {
    /// The `Sec-WebSocket-Key` value: base64 of [`ClientRequest::key`].
    pub fn key_base64(&self) -> String {
        STANDARD.encode(self.key)
    }

    /// Appends the whole request head, ending with the blank line. Fails, writing nothing, when
    /// a field holds CR, LF or another character outside its grammar (header injection).
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), HandshakeError> {
        if !self.path.starts_with('/') || !is_visible_ascii(&self.path) {
            return Err(HandshakeError::InvalidRequestField("path"));
        }
        if !is_visible_ascii(&self.host) {
            return Err(HandshakeError::InvalidRequestField("host"));
        }
        // RFC 6455 §4.1: subprotocol values MUST be tokens (RFC 2616 §2.2, now RFC 9110 §5.6.2).
        if !self.protocols.iter().all(|p| is_token(p)) {
            return Err(HandshakeError::InvalidRequestField("protocols"));
        }
        for (name, value) in &self.extra_headers {
            if !is_token(name) {
                return Err(HandshakeError::InvalidRequestField("extra header name"));
            }
            if value.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0)) {
                return Err(HandshakeError::InvalidRequestField("extra header value"));
            }
        }
        out.extend_from_slice(b"GET ");
        out.extend_from_slice(self.path.as_bytes());
        out.extend_from_slice(b" HTTP/1.1\r\n");
        let mut line = |name: &str, value: &str| {
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        };
        line("Host", &self.host);
        line("Upgrade", "websocket");
        line("Connection", "Upgrade");
        line("Sec-WebSocket-Key", &self.key_base64());
        line("Sec-WebSocket-Version", "13");
        if !self.protocols.is_empty() {
            line("Sec-WebSocket-Protocol", &self.protocols.join(", "));
        }
        if self.deflate {
            line("Sec-WebSocket-Extensions", CLIENT_OFFER);
        }
        for (name, value) in &self.extra_headers {
            line(name, value);
        }
        out.extend_from_slice(b"\r\n");
        Ok(())
    }
}

/// True for a non-empty string of visible ASCII (0x21-0x7E): no spaces, controls, CR or LF.
fn is_visible_ascii(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic())
}

/// True for an RFC 9110 §5.6.2 token.
fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Checks the server's response to `request` (§4.1); returns the subprotocol and the extension
/// it selected.
///
/// On success speak WebSocket with a [`crate::ws::WsConn`] in the client role over the bytes
/// after the response head; on error the client MUST fail the connection (close TCP).
pub fn verify_response(head: &ResponseHead, request: &ClientRequest) -> Result<Selected, HandshakeError> {
    // RFC 6455 §4.1: "If the status code received from the server is not 101, the client
    // handles the response per HTTP procedures."
    if head.status != 101 {
        return Err(HandshakeError::UnexpectedStatus(head.status));
    }
    // RFC 6455 §4.1: if the |Upgrade| field "contains a value that is not an ASCII
    // case-insensitive match for the value "websocket", the client MUST _Fail_".
    match head.header("Upgrade") {
        Some(v) if v.eq_ignore_ascii_case(b"websocket") => {}
        _ => return Err(HandshakeError::MissingUpgradeWebsocket),
    }
    // RFC 6455 §4.1: if |Connection| "doesn't contain a token that is an ASCII case-insensitive
    // match for the value "Upgrade", the client MUST _Fail the WebSocket Connection_."
    if !head.has_token("Connection", "upgrade") {
        return Err(HandshakeError::MissingConnectionUpgrade);
    }
    // RFC 6455 §4.1: if |Sec-WebSocket-Accept| is missing or "contains a value other than the
    // base64-encoded SHA-1 of the concatenation of the |Sec-WebSocket-Key| (as a string, not
    // base64-decoded) with [the GUID]", the client MUST _Fail the WebSocket Connection_.
    let expected = accept_key(request.key_base64().as_bytes());
    if head.header("Sec-WebSocket-Accept") != Some(expected.as_bytes()) {
        return Err(HandshakeError::AcceptMismatch);
    }
    // RFC 6455 §4.1: an extension "not present in the client's handshake" MUST fail the
    // connection; this client offers permessage-deflate at most.
    let mut answer = Vec::new();
    for field in head.headers.iter().filter(|h| h.name.eq_ignore_ascii_case("Sec-WebSocket-Extensions")) {
        parse_extensions(&field.value, &mut answer).map_err(|_| HandshakeError::InvalidExtensionAnswer)?;
    }
    let deflate = match negotiate_client(&answer) {
        Ok(Some(_)) if !request.deflate => return Err(HandshakeError::ExtensionNotOffered),
        Ok(deflate) => deflate,
        Err(NegotiateError::NotOffered) => return Err(HandshakeError::ExtensionNotOffered),
        // RFC 7692 §7.1: a client MUST fail the connection on an answer it cannot accept.
        Err(_) => return Err(HandshakeError::InvalidExtensionAnswer),
    };
    // RFC 6455 §4.1: a subprotocol "that was not present in the client's handshake" MUST fail
    // the connection; §11.3.4: the field "MUST NOT appear more than once in an HTTP response".
    let mut fields = head.headers.iter().filter(|h| h.name.eq_ignore_ascii_case("Sec-WebSocket-Protocol"));
    let protocol = match (fields.next(), fields.next()) {
        (None, _) => None,
        (Some(selected), None) => Some(
            request
                .protocols
                .iter()
                .find(|p| p.as_bytes() == selected.value)
                .cloned()
                .ok_or(HandshakeError::ProtocolNotOffered)?,
        ),
        (Some(_), Some(_)) => return Err(HandshakeError::ProtocolNotOffered),
    };
    Ok(Selected { protocol, deflate })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http1::head::Header;

    /// The §1.3 key, "the sample nonce" in base64.
    const SAMPLE_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

    fn fields(pairs: &[(&str, &str)]) -> Vec<Header> {
        pairs
            .iter()
            .map(|(name, value)| Header { name: name.to_string(), value: value.as_bytes().to_vec() })
            .collect()
    }

    fn request(pairs: &[(&str, &str)]) -> RequestHead {
        RequestHead {
            method: "GET".to_string(),
            target: "/chat".to_string(),
            minor_version: 1,
            headers: fields(pairs),
        }
    }

    /// The §1.3 example request, without Origin and subprotocols.
    fn sample(extra: &[(&str, &str)]) -> RequestHead {
        let mut pairs = vec![
            ("Host", "server.example.com"),
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", SAMPLE_KEY),
            ("Sec-WebSocket-Version", "13"),
        ];
        pairs.extend_from_slice(extra);
        request(&pairs)
    }

    fn without(head: &RequestHead, name: &str) -> RequestHead {
        let mut head = head.clone();
        head.headers.retain(|h| !h.name.eq_ignore_ascii_case(name));
        head
    }

    fn replaced(head: &RequestHead, name: &str, value: &str) -> RequestHead {
        let mut head = without(head, name);
        head.headers.extend(fields(&[(name, value)]));
        head
    }

    #[test]
    fn rfc6455_1_3_accept_key_vector() {
        assert_eq!(accept_key(SAMPLE_KEY.as_bytes()), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn rfc6455_4_2_2_accepts_sample_and_writes_101() {
        let accepted = accept(&sample(&[]), &ServerOptions::default()).unwrap();
        assert_eq!(accepted.accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        assert_eq!(accepted.protocol, None);
        let mut out = Vec::new();
        accepted.response_head(&mut out);
        assert_eq!(
            out,
            b"HTTP/1.1 101 Switching Protocols\r\n\
              Upgrade: websocket\r\n\
              Connection: Upgrade\r\n\
              Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
        );
    }

    #[test]
    fn rfc6455_4_2_1_tokens_are_case_insensitive_list_elements() {
        let head = replaced(&sample(&[]), "Upgrade", "h2c, WebSocket");
        let head = replaced(&head, "Connection", "keep-alive, UPGRADE");
        assert!(accept(&head, &ServerOptions::default()).is_ok());
    }

    #[test]
    fn rfc6455_4_2_1_not_get_405() {
        let mut head = sample(&[]);
        head.method = "POST".to_string();
        let err = accept(&head, &ServerOptions::default()).unwrap_err();
        assert_eq!(err, HandshakeError::NotGet);
        assert_eq!(err.status_hint(), 405);
        assert_eq!(err.extra_headers(), &[("Allow", "GET")]);
    }

    #[test]
    fn rfc6455_4_2_1_http_1_0_400() {
        let mut head = sample(&[]);
        head.minor_version = 0;
        let err = accept(&head, &ServerOptions::default()).unwrap_err();
        assert_eq!((err.clone(), err.status_hint()), (HandshakeError::NotHttp11, 400));
    }

    #[test]
    fn rfc6455_4_2_1_missing_fields_400() {
        let opts = ServerOptions::default();
        let head = sample(&[]);
        for (name, expected) in [
            ("Host", HandshakeError::MissingHost),
            ("Upgrade", HandshakeError::MissingUpgradeWebsocket),
            ("Connection", HandshakeError::MissingConnectionUpgrade),
            ("Sec-WebSocket-Key", HandshakeError::InvalidKey),
        ] {
            let err = accept(&without(&head, name), &opts).unwrap_err();
            assert_eq!(err, expected, "{name}");
            assert_eq!(err.status_hint(), 400, "{name}");
        }
        let err = accept(&replaced(&head, "Connection", "keep-alive"), &opts).unwrap_err();
        assert_eq!(err, HandshakeError::MissingConnectionUpgrade);
        let err = accept(&replaced(&head, "Upgrade", "h2c"), &opts).unwrap_err();
        assert_eq!(err, HandshakeError::MissingUpgradeWebsocket);
    }

    #[test]
    fn rfc6455_4_2_2_unsupported_version_426_with_version_header() {
        let opts = ServerOptions::default();
        let head = sample(&[]);
        for head in [
            replaced(&head, "Sec-WebSocket-Version", "8"),
            without(&head, "Sec-WebSocket-Version"),
            sample(&[("Sec-WebSocket-Version", "13")]),
        ] {
            let err = accept(&head, &opts).unwrap_err();
            assert_eq!(err, HandshakeError::UnsupportedVersion);
            assert_eq!(err.status_hint(), 426);
            assert_eq!(err.extra_headers(), &[("Sec-WebSocket-Version", "13")]);
        }
    }

    #[test]
    fn rfc6455_4_2_1_key_must_be_base64_of_16_bytes() {
        let opts = ServerOptions::default();
        let head = sample(&[]);
        for bad in [
            "",
            "dGhlIHNhbXBsZSBub25jZQ",       // no padding
            "dGhlIHNhbXBsZSBub25jZSE=",     // 17 bytes
            "dGhlIHNhbXBsZSBub25j",         // 15 bytes
            "dGhlIHNhbXBsZSBub25jZQ=!",     // not base64
            "dGhlIHNhbXBsZSBub25jZQ==dGhl", // too long
        ] {
            let err = accept(&replaced(&head, "Sec-WebSocket-Key", bad), &opts).unwrap_err();
            assert_eq!(err, HandshakeError::InvalidKey, "{bad:?}");
        }
    }

    #[test]
    fn rfc6455_11_3_1_repeated_key_400() {
        let head = sample(&[("Sec-WebSocket-Key", SAMPLE_KEY)]);
        let err = accept(&head, &ServerOptions::default()).unwrap_err();
        assert_eq!(err, HandshakeError::InvalidKey);
    }

    #[test]
    fn rfc6455_10_2_origin_allowlist_403() {
        let opts = ServerOptions {
            allowed_origins: Some(vec!["https://example.com".to_string()]),
            ..ServerOptions::default()
        };
        let ok = sample(&[("Origin", "HTTPS://EXAMPLE.COM")]);
        assert!(accept(&ok, &opts).is_ok());
        let bad = sample(&[("Origin", "https://evil.example")]);
        let err = accept(&bad, &opts).unwrap_err();
        assert_eq!((err.clone(), err.status_hint()), (HandshakeError::OriginNotAllowed, 403));
        // No Origin: not a browser, allowed.
        assert!(accept(&sample(&[]), &opts).is_ok());
        // No allowlist: every origin.
        assert!(accept(&bad, &ServerOptions::default()).is_ok());
    }

    #[test]
    fn rfc6455_4_2_2_subprotocol_in_client_preference_order() {
        let opts = ServerOptions {
            protocols: vec!["chat".to_string(), "superchat".to_string()],
            ..ServerOptions::default()
        };
        let head =
            sample(&[("Sec-WebSocket-Protocol", "v10.stomp, superchat"), ("Sec-WebSocket-Protocol", "chat")]);
        let accepted = accept(&head, &opts).unwrap();
        assert_eq!(accepted.protocol.as_deref(), Some("superchat"));
        let mut out = Vec::new();
        accepted.response_head(&mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.ends_with("Sec-WebSocket-Protocol: superchat\r\n\r\n"), "{text}");

        let none = sample(&[("Sec-WebSocket-Protocol", "mqtt")]);
        let accepted = accept(&none, &opts).unwrap();
        assert_eq!(accepted.protocol, None);
        let mut out = Vec::new();
        accepted.response_head(&mut out);
        assert!(!String::from_utf8(out).unwrap().contains("Sec-WebSocket-Protocol"));
    }

    fn client_request() -> ClientRequest {
        let mut key = [0u8; 16];
        key.copy_from_slice(b"the sample nonce");
        ClientRequest {
            host: "server.example.com".to_string(),
            path: "/chat?x=1".to_string(),
            key,
            protocols: vec!["chat".to_string(), "superchat".to_string()],
            extra_headers: vec![("Origin".to_string(), "http://example.com".to_string())],
            deflate: false,
        }
    }

    fn response(pairs: &[(&str, &str)]) -> ResponseHead {
        ResponseHead {
            status: 101,
            reason: "Switching Protocols".to_string(),
            minor_version: 1,
            headers: fields(pairs),
        }
    }

    fn sample_response(extra: &[(&str, &str)]) -> ResponseHead {
        let mut pairs = vec![
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        ];
        pairs.extend_from_slice(extra);
        response(&pairs)
    }

    #[test]
    fn rfc6455_4_1_client_request_bytes() {
        let mut out = Vec::new();
        client_request().encode(&mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "GET /chat?x=1 HTTP/1.1\r\n\
             Host: server.example.com\r\n\
             Upgrade: websocket\r\n\
             Connection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Protocol: chat, superchat\r\n\
             Origin: http://example.com\r\n\r\n"
        );
    }

    #[test]
    fn client_request_rejects_header_injection() {
        type Spoil = fn(&mut ClientRequest);
        let cases: [(Spoil, &str); 6] = [
            (|r| r.extra_headers[0].1.push_str("\r\nX: y"), "extra header value"),
            (|r| r.extra_headers[0].0.push('\n'), "extra header name"),
            (|r| r.host.push_str("\r\n"), "host"),
            (|r| r.path = "/a b".to_string(), "path"),
            (|r| r.path = "chat".to_string(), "path"),
            (|r| r.protocols.push("a,b".to_string()), "protocols"),
        ];
        for (spoil, field) in cases {
            let mut req = client_request();
            spoil(&mut req);
            let mut out = Vec::new();
            assert_eq!(req.encode(&mut out), Err(HandshakeError::InvalidRequestField(field)));
            assert!(out.is_empty());
        }
    }

    #[test]
    fn rfc6455_4_1_client_accepts_valid_response() {
        let req = client_request();
        assert_eq!(
            verify_response(&sample_response(&[]), &req),
            Ok(Selected { protocol: None, deflate: None })
        );
        let chosen = sample_response(&[("Sec-WebSocket-Protocol", "superchat")]);
        assert_eq!(
            verify_response(&chosen, &req),
            Ok(Selected { protocol: Some("superchat".to_string()), deflate: None })
        );
    }

    fn deflate_offer() -> RequestHead {
        sample(&[(
            "Sec-WebSocket-Extensions",
            "x-webkit-deflate-frame, permessage-deflate; client_max_window_bits",
        )])
    }

    fn deflate_options() -> ServerOptions {
        ServerOptions { deflate: true, ..ServerOptions::default() }
    }

    #[test]
    fn rfc7692_5_server_accepts_an_offer_and_names_it_in_the_response() {
        let accepted = accept(&deflate_offer(), &deflate_options()).unwrap();
        assert!(accepted.deflate.is_some());
        let mut out = Vec::new();
        accepted.response_head(&mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("\r\nSec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover\r\n"),
            "{text}"
        );
        // Off: the offer is ignored and the response names no extension.
        let plain = accept(&deflate_offer(), &ServerOptions::default()).unwrap();
        assert_eq!(plain.deflate, None);
        let mut out = Vec::new();
        plain.response_head(&mut out);
        assert!(!String::from_utf8(out).unwrap().contains("Extensions"));
    }

    #[test]
    fn rfc7692_5_bad_offers_are_declined_not_refused() {
        for value in [
            "permessage-deflate; bogus",
            "permessage-deflate;;",
            "permessage-deflate; server_max_window_bits=8",
        ] {
            let accepted =
                accept(&sample(&[("Sec-WebSocket-Extensions", value)]), &deflate_options()).unwrap();
            assert_eq!(accepted.deflate, None, "{value}");
        }
        // Two fields form one list; the first acceptable offer wins.
        let head = sample(&[
            ("Sec-WebSocket-Extensions", "permessage-deflate; server_max_window_bits=8"),
            ("Sec-WebSocket-Extensions", "permessage-deflate; server_max_window_bits=10"),
        ]);
        assert_eq!(
            accept(&head, &deflate_options())
                .unwrap()
                .deflate
                .unwrap()
                .server_max_window_bits
                .map(|b| b.get()),
            Some(10)
        );
        // Safari 15.0-15.3 (uWebSockets' rule).
        let safari = sample(&[
            ("Sec-WebSocket-Extensions", "permessage-deflate"),
            ("User-Agent", "Mozilla/5.0 (Macintosh) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/15.1 Safari/605.1.15"),
        ]);
        assert_eq!(accept(&safari, &deflate_options()).unwrap().deflate, None);
    }

    #[test]
    fn rfc7692_5_client_offers_and_reads_the_answer() {
        let mut req = client_request();
        req.deflate = true;
        let mut out = Vec::new();
        req.encode(&mut out).unwrap();
        assert!(String::from_utf8(out)
            .unwrap()
            .contains("\r\nSec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"));
        let answer = sample_response(&[(
            "Sec-WebSocket-Extensions",
            "permessage-deflate; server_no_context_takeover",
        )]);
        let selected = verify_response(&answer, &req).unwrap();
        assert!(selected.deflate.unwrap().server_no_context_takeover);
        for bad in
            ["permessage-deflate; x=1", "permessage-deflate; client_max_window_bits", "permessage-deflate; ;"]
        {
            let answer = sample_response(&[("Sec-WebSocket-Extensions", bad)]);
            assert_eq!(verify_response(&answer, &req), Err(HandshakeError::InvalidExtensionAnswer), "{bad}");
        }
        let other = sample_response(&[("Sec-WebSocket-Extensions", "x-webkit-deflate-frame")]);
        assert_eq!(verify_response(&other, &req), Err(HandshakeError::ExtensionNotOffered));
    }

    #[test]
    fn rfc6455_4_1_client_fails_bad_responses() {
        let req = client_request();
        let mut not_101 = sample_response(&[]);
        not_101.status = 200;
        let cases = [
            (not_101, HandshakeError::UnexpectedStatus(200)),
            (
                response(&[
                    ("Connection", "Upgrade"),
                    ("Sec-WebSocket-Accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
                ]),
                HandshakeError::MissingUpgradeWebsocket,
            ),
            (
                response(&[
                    ("Upgrade", "websocket"),
                    ("Sec-WebSocket-Accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
                ]),
                HandshakeError::MissingConnectionUpgrade,
            ),
            (
                response(&[
                    ("Upgrade", "websocket"),
                    ("Connection", "Upgrade"),
                    ("Sec-WebSocket-Accept", "AAAA"),
                ]),
                HandshakeError::AcceptMismatch,
            ),
            (
                response(&[("Upgrade", "websocket"), ("Connection", "Upgrade")]),
                HandshakeError::AcceptMismatch,
            ),
            (sample_response(&[("Sec-WebSocket-Protocol", "mqtt")]), HandshakeError::ProtocolNotOffered),
            (
                sample_response(&[("Sec-WebSocket-Protocol", "chat"), ("Sec-WebSocket-Protocol", "chat")]),
                HandshakeError::ProtocolNotOffered,
            ),
            (
                sample_response(&[("Sec-WebSocket-Extensions", "permessage-deflate")]),
                HandshakeError::ExtensionNotOffered,
            ),
        ];
        for (head, expected) in cases {
            let err = verify_response(&head, &req).unwrap_err();
            assert_eq!(err, expected);
            assert!(!err.to_string().is_empty());
        }
        let mut no_offer = client_request();
        no_offer.protocols.clear();
        let chosen = sample_response(&[("Sec-WebSocket-Protocol", "chat")]);
        assert_eq!(verify_response(&chosen, &no_offer), Err(HandshakeError::ProtocolNotOffered));
    }

    #[test]
    fn rfc6455_4_round_trip_client_to_server_to_client() {
        let req = client_request();
        let opts = ServerOptions {
            protocols: vec!["superchat".to_string()],
            allowed_origins: Some(vec!["http://example.com".to_string()]),
            deflate: false,
        };
        // What the integrator's head parser would produce from `req.encode`.
        let mut head =
            sample(&[("Sec-WebSocket-Protocol", "chat, superchat"), ("Origin", "http://example.com")]);
        head.headers = head
            .headers
            .into_iter()
            .map(|mut h| {
                if h.name == "Sec-WebSocket-Key" {
                    h.value = req.key_base64().into_bytes();
                }
                h
            })
            .collect();
        let accepted = accept(&head, &opts).unwrap();
        let resp = sample_response(&[("Sec-WebSocket-Protocol", "superchat")]);
        assert_eq!(accepted.accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        assert_eq!(verify_response(&resp, &req), Ok(Selected { protocol: accepted.protocol, deflate: None }));
    }
}
