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
//!   subscription; missing gives 401, wrong gives 403; compared in constant time;
//! - per-channel authorization with signed tokens ([`Access::check_channel`]): a channel whose
//!   `--channel-policy` needs a token for an action takes an HS256 token (same field or
//!   parameter) granting it, verified by [`super::token`]; missing: 401, invalid (malformed,
//!   forged, expired): 401 with `error="invalid_token"` (RFC 6750 §3.1), valid but not granting
//!   the channel: 403 `insufficient_scope`. On such a channel the signed token replaces the
//!   static `--publish-token`/`--subscribe-token` for that action;
//! - the connection token of command mode (`/ws`, [`Access::connection_token`]).
//!
//! Does not: reflect any client value that was not checked.

use crate::http1::head::{Headers, RequestHead};
use crate::http1::target::Target;

use super::policy::{Action, Policies};
use super::token::{verify, Claims, TokenError, TokenKey, TokenLimits};

/// Access policy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Access {
    /// Origins allowed besides the server's own and loopback ones; `*` allows all.
    pub allowed_origins: Vec<String>,
    /// Required to publish, when set.
    pub publish_token: Option<String>,
    /// Required to subscribe or poll, when set.
    pub subscribe_token: Option<String>,
    /// The key signed tokens are verified with (`--token-secret`, `--token-secret-file`);
    /// `None`: the server takes no signed tokens.
    pub token_key: Option<TokenKey>,
    /// Which channels need a signed token for what (`--channel-policy`, repeatable).
    pub policies: Policies,
    /// Token size limit.
    pub token_limits: TokenLimits,
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
    /// A signed token was needed and the one given is not valid (401, RFC 6750 §3.1
    /// `invalid_token`).
    BadToken(TokenError),
    /// The signed token is valid but does not grant this channel for this action (403, RFC
    /// 6750 §3.1 `insufficient_scope`).
    NotGranted,
}

impl Denied {
    /// The status that answers it.
    pub fn status_hint(self) -> u16 {
        match self {
            Denied::Origin | Denied::WrongToken | Denied::NotGranted => 403,
            Denied::MissingToken | Denied::BadToken(_) => 401,
        }
    }

    /// The reason it is counted under in `/metrics` (`pushwire_token_refusals_total`), for
    /// the refusals that are about tokens.
    pub fn token_reason(self) -> Option<&'static str> {
        match self {
            Denied::MissingToken => Some("missing"),
            Denied::WrongToken => Some("other"),
            Denied::BadToken(e) => Some(e.as_str()),
            Denied::NotGranted => Some("not_granted"),
            Denied::Origin => None,
        }
    }

    /// The `WWW-Authenticate` field of the answer (RFC 6750 §3: a 401 for a missing or
    /// invalid bearer token MUST carry it).
    pub fn headers(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Denied::MissingToken => &[("WWW-Authenticate", "Bearer")],
            Denied::BadToken(_) => &[("WWW-Authenticate", "Bearer error=\"invalid_token\"")],
            Denied::NotGranted => &[("WWW-Authenticate", "Bearer error=\"insufficient_scope\"")],
            Denied::Origin | Denied::WrongToken => &[],
        }
    }

    /// A short explanation for the body.
    pub fn reason(self) -> &'static str {
        match self {
            Denied::Origin => "origin not allowed",
            Denied::MissingToken => "a bearer token is required",
            Denied::WrongToken => "wrong token",
            Denied::BadToken(e) => e.reason(),
            Denied::NotGranted => "the token does not grant this channel",
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

    /// Checks `action` on `channel` against the channel policies: `None` when no policy asks
    /// for a token (the static tokens then apply), else the verified claims or why not. The
    /// token's size is checked before it is decoded.
    pub fn check_channel(
        &self,
        head: &RequestHead,
        target: &Target<'_>,
        channel: &str,
        action: Action,
        unix_now_s: u64,
    ) -> Option<Result<Claims, Denied>> {
        if !self.policies.needs_token(channel, action) {
            return None;
        }
        let Some(token) = bearer_token(head, target) else { return Some(Err(Denied::MissingToken)) };
        // Validated at startup: a policy needs a key (`Access::validate`).
        let key = self.token_key.as_ref()?;
        Some(match verify(&token, key, unix_now_s, &self.token_limits) {
            Ok(claims) if claims.grants(action, channel) => Ok(claims),
            Ok(_) => Err(Denied::NotGranted),
            Err(e) => Err(Denied::BadToken(e)),
        })
    }

    /// The connection token of a command-mode WebSocket: `Ok(None)` when the server takes no
    /// signed tokens or none was given, the claims of a valid one, or why it is refused.
    pub fn connection_token(
        &self,
        head: &RequestHead,
        target: &Target<'_>,
        unix_now_s: u64,
    ) -> Result<Option<Claims>, Denied> {
        let (Some(key), Some(token)) = (self.token_key.as_ref(), bearer_token(head, target)) else {
            return Ok(None);
        };
        verify(&token, key, unix_now_s, &self.token_limits).map(Some).map_err(Denied::BadToken)
    }

    /// Checks that the policies can be enforced: a `token` policy needs a key.
    pub fn validate(&self) -> Result<(), String> {
        if !self.policies.0.is_empty() && self.token_key.is_none() {
            return Err("--channel-policy needs --token-secret or --token-secret-file".into());
        }
        Ok(())
    }
}

/// The request's bearer token: `Authorization: Bearer TOKEN` (RFC 6750 §2.1), else `?token=`
/// (§2.3, for clients that cannot set fields: `EventSource`, browser WebSockets).
pub fn bearer_token(head: &RequestHead, target: &Target<'_>) -> Option<String> {
    // RFC 6750 §2.1: credentials = "Bearer" 1*SP b64token; the scheme is case-insensitive.
    let from_header = head.header("authorization").and_then(|v| {
        let v = std::str::from_utf8(v).ok()?;
        let (scheme, token) = v.split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| token.trim().to_string())
    });
    from_header.or_else(|| target.param("token").and_then(Result::ok))
}

fn check_token(required: Option<&str>, head: &RequestHead, target: &Target<'_>) -> Result<(), Denied> {
    let Some(required) = required else { return Ok(()) };
    match bearer_token(head, target) {
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
