//! Who may use the server: the Origin policy, CORS, and bearer tokens.
//!
//! Implements:
//! - the `Origin` check ([RFC 6454](https://www.rfc-editor.org/rfc/rfc6454), RFC 6455 §4.2.2 and
//!   §10.2 for WebSocket): a request without `Origin` (a non-browser client) is allowed; a
//!   browser's request is allowed when its origin is the server's own (its host equals `Host`),
//!   a loopback origin (`localhost`, `127.0.0.1`, `[::1]`), or listed with `--allow-origin`
//!   (`*` allows every origin). Anything else is refused with 403 on every transport, so a
//!   foreign page can neither read channels nor publish to them with a "simple" cross-origin
//!   POST;
//! - CORS for the HTTP transports (<https://fetch.spec.whatwg.org/#http-cors-protocol>): an
//!   allowed cross-origin request gets `Access-Control-Allow-Origin` naming its (checked) origin
//!   and `Vary: Origin`; a preflight `OPTIONS` is answered 204 with the methods and fields the
//!   API uses;
//! - bearer tokens ([RFC 6750 §2.1](https://www.rfc-editor.org/rfc/rfc6750#section-2.1), or
//!   `?token=` for clients that cannot set fields, like `EventSource` and browser WebSockets):
//!   `--publish-token` guards publishing over HTTP and WebSocket, `--subscribe-token` every
//!   subscription; missing gives 401, wrong gives 403; compared in constant time.
//!
//! Does not: authenticate per channel, or reflect any client value that was not checked.

use crate::http1::head::{Headers, RequestHead};
use crate::http1::target::Target;

/// Access policy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Access {
    /// Origins allowed besides the server's own and loopback ones; `*` allows all.
    pub allowed_origins: Vec<String>,
    /// Required to publish, when set.
    pub publish_token: Option<String>,
    /// Required to subscribe or poll, when set.
    pub subscribe_token: Option<String>,
}

/// Why a request is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// The browser origin is not allowed (403).
    Origin,
    /// A token is required and none was given (401).
    MissingToken,
    /// The token given is not the right one (403).
    WrongToken,
}

impl Denied {
    /// The status that answers it.
    pub fn status_hint(self) -> u16 {
        match self {
            Denied::Origin | Denied::WrongToken => 403,
            Denied::MissingToken => 401,
        }
    }

    /// A short explanation for the body.
    pub fn reason(self) -> &'static str {
        match self {
            Denied::Origin => "origin not allowed",
            Denied::MissingToken => "a bearer token is required",
            Denied::WrongToken => "wrong token",
        }
    }
}

impl Access {
    /// The request's origin when it is allowed and cross-origin (to be named in CORS fields);
    /// `Ok(None)` for requests without `Origin`.
    pub fn check_origin(&self, head: &RequestHead) -> Result<Option<String>, Denied> {
        let Some(origin) = head.header("origin") else { return Ok(None) };
        // Only a visible-ASCII origin can be allowed, so nothing else is ever written back.
        let origin = std::str::from_utf8(origin).ok().filter(|o| o.bytes().all(|b| b.is_ascii_graphic()));
        let Some(origin) = origin else { return Err(Denied::Origin) };
        let host = origin.split_once("://").map(|(_, host)| host).unwrap_or("");
        let own = head.header("host").is_some_and(|h| h.eq_ignore_ascii_case(host.as_bytes()));
        let loopback = ["localhost", "127.0.0.1", "[::1]"].iter().any(|name| {
            host.eq_ignore_ascii_case(name)
                || host.strip_prefix(name).is_some_and(|port| {
                    port.strip_prefix(':')
                        .is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
                })
        });
        let listed = self.allowed_origins.iter().any(|o| o == "*" || o.eq_ignore_ascii_case(origin));
        if own || loopback || listed {
            Ok(Some(origin.to_string()))
        } else {
            Err(Denied::Origin)
        }
    }

    /// Checks the publish token, if one is required.
    pub fn check_publish(&self, head: &RequestHead, target: &Target<'_>) -> Result<(), Denied> {
        check_token(self.publish_token.as_deref(), head, target)
    }

    /// Checks the subscribe token, if one is required.
    pub fn check_subscribe(&self, head: &RequestHead, target: &Target<'_>) -> Result<(), Denied> {
        check_token(self.subscribe_token.as_deref(), head, target)
    }
}

fn check_token(required: Option<&str>, head: &RequestHead, target: &Target<'_>) -> Result<(), Denied> {
    let Some(required) = required else { return Ok(()) };
    // RFC 6750 §2.1: credentials = "Bearer" 1*SP b64token; the scheme is case-insensitive.
    let from_header = head.header("authorization").and_then(|v| {
        let v = std::str::from_utf8(v).ok()?;
        let (scheme, token) = v.split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| token.trim().to_string())
    });
    let given = from_header.or_else(|| target.param("token").and_then(Result::ok));
    match given {
        None => Err(Denied::MissingToken),
        Some(token) if constant_time_eq(token.as_bytes(), required.as_bytes()) => Ok(()),
        Some(_) => Err(Denied::WrongToken),
    }
}

/// Compares without an early exit, so the time taken does not tell how much of a guess was
/// right (only the length, which a token's length does not protect anyway).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The fields of a preflight answer (Fetch "CORS-preflight request").
pub const PREFLIGHT_FIELDS: &[(&str, &str)] = &[
    ("Access-Control-Allow-Methods", "GET, HEAD, POST"),
    ("Access-Control-Allow-Headers", "Content-Type, Authorization, Last-Event-ID, Accept"),
    ("Access-Control-Max-Age", "600"),
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http1::head::Header;

    fn head(fields: &[(&str, &str)]) -> RequestHead {
        RequestHead {
            method: "GET".into(),
            target: "/".into(),
            minor_version: 1,
            headers: fields
                .iter()
                .map(|(n, v)| Header { name: n.to_string(), value: v.as_bytes().to_vec() })
                .collect(),
        }
    }

    #[test]
    fn rfc6454_own_loopback_and_listed_origins_are_allowed_others_refused() {
        let access = Access { allowed_origins: vec!["https://app.example".into()], ..Access::default() };
        let check =
            |origin: &str| access.check_origin(&head(&[("Host", "push.example:8080"), ("Origin", origin)]));
        assert_eq!(check("http://push.example:8080"), Ok(Some("http://push.example:8080".into())));
        assert!(check("http://localhost:3000").is_ok());
        assert!(check("http://127.0.0.1").is_ok());
        assert!(check("https://app.example").is_ok());
        assert_eq!(check("https://evil.example"), Err(Denied::Origin));
        assert_eq!(check("http://localhost.evil.example"), Err(Denied::Origin));
        assert_eq!(check("null"), Err(Denied::Origin));
        assert_eq!(access.check_origin(&head(&[("Host", "x")])), Ok(None));
        let all = Access { allowed_origins: vec!["*".into()], ..Access::default() };
        assert!(all.check_origin(&head(&[("Host", "x"), ("Origin", "https://any.example")])).is_ok());
    }

    #[test]
    fn rfc6750_2_1_bearer_token_missing_401_wrong_403() {
        let access = Access { publish_token: Some("s3cret".into()), ..Access::default() };
        let target = Target::parse("/channels/a").unwrap();
        assert_eq!(access.check_publish(&head(&[]), &target), Err(Denied::MissingToken));
        assert_eq!(
            access.check_publish(&head(&[("Authorization", "Bearer nope")]), &target),
            Err(Denied::WrongToken)
        );
        assert_eq!(access.check_publish(&head(&[("Authorization", "bearer s3cret")]), &target), Ok(()));
        let query = Target::parse("/channels/a?token=s3cret").unwrap();
        assert_eq!(access.check_publish(&head(&[]), &query), Ok(()));
        assert_eq!(access.check_subscribe(&head(&[]), &target), Ok(()), "no subscribe token required");
        assert_eq!(Denied::MissingToken.status_hint(), 401);
    }

    #[test]
    fn constant_time_eq_compares_whole_values() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
