//! Signed tokens: JSON Web Tokens signed with HMAC-SHA-256 (HS256), carrying a user id, an
//! expiry and the channels they grant for each [`Action`].
//!
//! ```text
//! header  {"alg":"HS256","typ":"JWT"}
//! claims  {"sub":"alice","exp":1767225600,"subscribe":["chat.*"],"publish":["chat.*"],"presence":["chat.*"]}
//! token   BASE64URL(header) "." BASE64URL(claims) "." BASE64URL(HMAC-SHA-256(key, first two parts))
//! ```
//!
//! Implements:
//! - the JWS compact serialization ([RFC 7515 §7.1](https://www.rfc-editor.org/rfc/rfc7515#section-7.1))
//!   with base64url without padding (§2), verified per §5.2: the header is a JSON object whose
//!   `alg` is `HS256` ([RFC 7518 §3.2](https://www.rfc-editor.org/rfc/rfc7518#section-3.2));
//!   every other algorithm, `none` included, is refused, so a token cannot choose how it is
//!   checked; a `crit` header is refused (§4.1.11: extensions we do not understand); the MAC is
//!   compared in constant time before any claim is read;
//! - the claims of [RFC 7519 §4.1](https://www.rfc-editor.org/rfc/rfc7519#section-4.1): `exp`
//!   (required here; NumericDate, §2), `nbf`, `sub` (the user id), `aud` (refused unless it
//!   names the configured audience, §4.1.3); and pushwire's own `subscribe`, `publish` and
//!   `presence`: lists of [`ChannelPattern`]s;
//! - [`sign`], for the `pushwire token` command and for tests.
//!
//! Bounded: a token longer than [`TokenLimits::max_token_bytes`] is refused before it is
//! decoded; a user id is at most [`MAX_USER_ID_BYTES`].
//!
//! Does not: read requests (see [`super::access`]), read the clock (`unix_now` comes in), or
//! support asymmetric algorithms or key rotation.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use serde::Deserialize;
use sha2::Sha256;

use super::policy::{Action, ChannelPattern};

/// Wall-clock seconds for pure code that only gets a monotonic `now`: an anchor taken once by
/// the I/O layer (an `Instant` and the Unix time at that instant), advanced by monotonic time.
/// Token expiries (`exp`, RFC 7519 §4.1.4) are whole seconds, so drift between the two clocks
/// over a server's life (NTP slews by parts per million) does not matter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnixClock {
    at: std::time::Instant,
    unix_s: u64,
}

impl UnixClock {
    /// The clock that reads `unix_s` at `at`.
    pub fn new(at: std::time::Instant, unix_s: u64) -> UnixClock {
        UnixClock { at, unix_s }
    }

    /// Seconds since the Unix epoch at `now` (never before the anchor's).
    pub fn unix_s(&self, now: std::time::Instant) -> u64 {
        self.unix_s + now.saturating_duration_since(self.at).as_secs()
    }
}

/// Longest user id (`sub`), in bytes.
pub const MAX_USER_ID_BYTES: usize = 128;

/// Token limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenLimits {
    /// Longest token accepted, in bytes; longer is refused before decoding. Default 4096
    /// (a token rides in a request field or query, within the head limit).
    pub max_token_bytes: usize,
}

impl Default for TokenLimits {
    fn default() -> Self {
        TokenLimits { max_token_bytes: 4096 }
    }
}

/// The key tokens are signed with, and the audience they must name if they name one.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenKey {
    secret: Vec<u8>,
    /// The `aud` a token must name when it carries one (RFC 7519 §4.1.3); `None`: tokens
    /// carrying `aud` are refused.
    pub audience: Option<String>,
}

impl fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never in logs.
        f.debug_struct("TokenKey").field("secret", &"<redacted>").field("audience", &self.audience).finish()
    }
}

impl TokenKey {
    /// Shortest secret accepted, in bytes: RFC 7518 §3.2 requires a key of the hash's size
    /// (256 bits) or larger for HS256.
    pub const MIN_SECRET_BYTES: usize = 32;

    /// A key from `secret`, at least [`Self::MIN_SECRET_BYTES`] long.
    pub fn new(secret: &[u8], audience: Option<String>) -> Result<TokenKey, String> {
        // RFC 7518 §3.2: a key of the same size as the hash output (256 bits) or larger MUST
        // be used with this algorithm.
        if secret.len() < Self::MIN_SECRET_BYTES {
            return Err(format!("token secret must be at least {} bytes", Self::MIN_SECRET_BYTES));
        }
        Ok(TokenKey { secret: secret.to_vec(), audience })
    }

    fn mac(&self) -> Hmac<Sha256> {
        // HMAC takes keys of any length; the length was checked in `new`.
        <Hmac<Sha256> as KeyInit>::new_from_slice(&self.secret).expect("HMAC accepts any key length")
    }
}

/// What a verified token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// The user id (`sub`), if any.
    pub user: Option<Box<str>>,
    /// When the token expires, in seconds since the Unix epoch.
    pub expires_at: u64,
    /// Channels the token grants reading.
    pub subscribe: Vec<ChannelPattern>,
    /// Channels the token grants publishing to.
    pub publish: Vec<ChannelPattern>,
    /// Channels whose presence the token grants.
    pub presence: Vec<ChannelPattern>,
}

impl Claims {
    /// True when the token grants `action` on `channel`.
    pub fn grants(&self, action: Action, channel: &str) -> bool {
        let patterns = match action {
            Action::Subscribe => &self.subscribe,
            Action::Publish => &self.publish,
            Action::Presence => &self.presence,
        };
        patterns.iter().any(|p| p.matches(channel))
    }
}

/// Why a token was refused; all answered 401 with `error="invalid_token"` (RFC 6750 §3.1),
/// and counted by [`TokenError::as_str`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenError {
    /// Longer than [`TokenLimits::max_token_bytes`].
    TooLong,
    /// Not three base64url parts, or a part that is not the JSON it should be.
    Malformed,
    /// The header names an algorithm other than HS256, or critical extensions.
    UnsupportedAlgorithm,
    /// The signature is not the key's.
    BadSignature,
    /// `exp` has passed (or is missing: a token must expire).
    Expired,
    /// `nbf` is still ahead.
    NotYetValid,
    /// A claim has the wrong type, a pattern is not a channel pattern, the user id is too
    /// long, or `aud` does not name this server.
    BadClaims,
}

impl TokenError {
    /// The reason as counted in `/metrics` and written in errors.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenError::TooLong => "too_long",
            TokenError::Malformed => "malformed",
            TokenError::UnsupportedAlgorithm => "unsupported_algorithm",
            TokenError::BadSignature => "bad_signature",
            TokenError::Expired => "expired",
            TokenError::NotYetValid => "not_yet_valid",
            TokenError::BadClaims => "bad_claims",
        }
    }

    /// The explanation written in answers (the [`fmt::Display`] text).
    pub fn reason(self) -> &'static str {
        match self {
            TokenError::TooLong => "token too long",
            TokenError::Malformed => "token is not a JWT",
            TokenError::UnsupportedAlgorithm => "token algorithm must be HS256",
            TokenError::BadSignature => "token signature is wrong",
            TokenError::Expired => "token expired",
            TokenError::NotYetValid => "token not valid yet",
            TokenError::BadClaims => "token claims are not valid",
        }
    }

    /// The HTTP status: always 401 (RFC 6750 §3.1: `invalid_token`).
    pub fn status_hint(self) -> u16 {
        401
    }
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

impl std::error::Error for TokenError {}

#[derive(Deserialize)]
struct Header {
    alg: String,
    typ: Option<String>,
    crit: Option<serde_json::Value>,
}

/// A NumericDate (RFC 7519 §2): seconds since the epoch, possibly with a fraction.
#[derive(Deserialize)]
#[serde(untagged)]
enum NumericDate {
    Whole(u64),
    Fraction(f64),
}

impl NumericDate {
    /// Whole seconds, rounded down (a fraction never extends a token).
    fn seconds(&self) -> Option<u64> {
        match *self {
            NumericDate::Whole(s) => Some(s),
            NumericDate::Fraction(f) if f.is_finite() && f >= 0.0 => Some(f as u64),
            NumericDate::Fraction(_) => None,
        }
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
struct RawClaims {
    sub: Option<String>,
    exp: Option<NumericDate>,
    nbf: Option<NumericDate>,
    aud: Option<Audience>,
    #[serde(default)]
    subscribe: Vec<String>,
    #[serde(default)]
    publish: Vec<String>,
    #[serde(default)]
    presence: Vec<String>,
}

/// Verifies `token` with `key` at `unix_now` (seconds since the Unix epoch) and returns its
/// claims. The signature is checked before any claim is read.
pub fn verify(
    token: &str,
    key: &TokenKey,
    unix_now: u64,
    limits: &TokenLimits,
) -> Result<Claims, TokenError> {
    if token.len() > limits.max_token_bytes {
        return Err(TokenError::TooLong);
    }
    let mut parts = token.split('.');
    let (Some(header_b64), Some(claims_b64), Some(signature_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed);
    };
    let header_json = URL_SAFE_NO_PAD.decode(header_b64).map_err(|_| TokenError::Malformed)?;
    let header: Header = serde_json::from_slice(&header_json).map_err(|_| TokenError::Malformed)?;
    // RFC 7515 §4.1.11: a recipient that does not understand the extensions listed in `crit`
    // MUST reject the JWS; we understand none.
    if header.alg != "HS256" || header.crit.is_some() {
        return Err(TokenError::UnsupportedAlgorithm);
    }
    if header.typ.is_some_and(|t| !t.eq_ignore_ascii_case("JWT")) {
        return Err(TokenError::Malformed);
    }
    let signature = URL_SAFE_NO_PAD.decode(signature_b64).map_err(|_| TokenError::Malformed)?;
    let mut mac = key.mac();
    mac.update(&token.as_bytes()[..header_b64.len() + 1 + claims_b64.len()]);
    // Constant-time comparison (the `hmac` crate's verify).
    mac.verify_slice(&signature).map_err(|_| TokenError::BadSignature)?;
    let claims_json = URL_SAFE_NO_PAD.decode(claims_b64).map_err(|_| TokenError::Malformed)?;
    let raw: RawClaims = serde_json::from_slice(&claims_json).map_err(|_| TokenError::BadClaims)?;
    // RFC 7519 §4.1.4: the current time MUST be before the expiration time.
    let expires_at = raw.exp.as_ref().and_then(NumericDate::seconds).ok_or(TokenError::Expired)?;
    if unix_now >= expires_at {
        return Err(TokenError::Expired);
    }
    // RFC 7519 §4.1.5: the JWT MUST NOT be accepted for processing before `nbf`.
    if let Some(nbf) = &raw.nbf {
        if nbf.seconds().is_none_or(|nbf| unix_now < nbf) {
            return Err(TokenError::NotYetValid);
        }
    }
    // RFC 7519 §4.1.3: if the principal does not identify itself with a value in `aud` when
    // the claim is present, the JWT MUST be rejected.
    if let Some(aud) = &raw.aud {
        let names: &[String] = match aud {
            Audience::One(one) => std::slice::from_ref(one),
            Audience::Many(many) => many,
        };
        if !key.audience.as_ref().is_some_and(|ours| names.contains(ours)) {
            return Err(TokenError::BadClaims);
        }
    }
    if raw.sub.as_ref().is_some_and(|s| s.is_empty() || s.len() > MAX_USER_ID_BYTES) {
        return Err(TokenError::BadClaims);
    }
    let patterns = |texts: Vec<String>| {
        texts
            .iter()
            .map(|t| ChannelPattern::parse(t))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| TokenError::BadClaims)
    };
    Ok(Claims {
        user: raw.sub.map(String::into_boxed_str),
        expires_at,
        subscribe: patterns(raw.subscribe)?,
        publish: patterns(raw.publish)?,
        presence: patterns(raw.presence)?,
    })
}

/// What [`sign`] puts in a token.
#[derive(Debug, Clone, Default)]
pub struct Grant<'a> {
    /// The user id (`sub`).
    pub user: Option<&'a str>,
    /// Expiry, seconds since the Unix epoch.
    pub expires_at: u64,
    /// Channel patterns granted for reading.
    pub subscribe: &'a [ChannelPattern],
    /// Channel patterns granted for publishing.
    pub publish: &'a [ChannelPattern],
    /// Channel patterns granted for presence.
    pub presence: &'a [ChannelPattern],
}

/// Signs a token granting `grant` with `key` (for `pushwire token` and tests).
pub fn sign(grant: &Grant<'_>, key: &TokenKey) -> String {
    let texts = |patterns: &[ChannelPattern]| patterns.iter().map(ToString::to_string).collect::<Vec<_>>();
    let mut claims = serde_json::json!({
        "exp": grant.expires_at,
        "subscribe": texts(grant.subscribe),
        "publish": texts(grant.publish),
        "presence": texts(grant.presence),
    });
    if let Some(user) = grant.user {
        claims["sub"] = serde_json::Value::from(user);
    }
    if let Some(audience) = &key.audience {
        claims["aud"] = serde_json::Value::from(audience.as_str());
    }
    sign_raw(br#"{"alg":"HS256","typ":"JWT"}"#, claims.to_string().as_bytes(), key)
}

/// Signs any header and claims bytes (tests use it to forge every kind of bad token).
pub fn sign_raw(header: &[u8], claims: &[u8], key: &TokenKey) -> String {
    let mut token = URL_SAFE_NO_PAD.encode(header);
    token.push('.');
    token.push_str(&URL_SAFE_NO_PAD.encode(claims));
    let mut mac = key.mac();
    mac.update(token.as_bytes());
    let signature = mac.finalize().into_bytes();
    token.push('.');
    token.push_str(&URL_SAFE_NO_PAD.encode(signature));
    token
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;

    fn key() -> TokenKey {
        TokenKey::new(b"0123456789abcdef0123456789abcdef", None).unwrap()
    }

    fn patterns(texts: &[&str]) -> Vec<ChannelPattern> {
        texts.iter().map(|t| ChannelPattern::parse(t).unwrap()).collect()
    }

    fn good() -> String {
        let (sub, publ) = (patterns(&["chat.*"]), patterns(&["chat.lobby"]));
        sign(
            &Grant {
                user: Some("alice"),
                expires_at: NOW + 60,
                subscribe: &sub,
                publish: &publ,
                presence: &sub,
            },
            &key(),
        )
    }

    fn check(token: &str) -> Result<Claims, TokenError> {
        verify(token, &key(), NOW, &TokenLimits::default())
    }

    #[test]
    fn rfc7519_signed_token_round_trips_with_its_grants() {
        let claims = check(&good()).unwrap();
        assert_eq!(claims.user.as_deref(), Some("alice"));
        assert_eq!(claims.expires_at, NOW + 60);
        assert!(claims.grants(Action::Subscribe, "chat.random"));
        assert!(claims.grants(Action::Publish, "chat.lobby"));
        assert!(!claims.grants(Action::Publish, "chat.random"));
        assert!(!claims.grants(Action::Subscribe, "news"));
        assert!(claims.grants(Action::Presence, "chat.x"));
    }

    /// RFC 7515 §3.3's example key and token (HS256, "joe"): the signature checks out, and the
    /// token is refused only for its claims (its `exp` passed in 2011).
    #[test]
    fn rfc7515_a_1_example_signature_verifies() {
        let jwk_k = "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow";
        let secret = URL_SAFE_NO_PAD.decode(jwk_k).unwrap();
        let key = TokenKey::new(&secret, None).unwrap();
        let token = "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9.\
                     eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.\
                     dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        assert_eq!(
            verify(token, &key, 1_300_000_000, &TokenLimits::default()).map(|c| c.expires_at),
            Ok(1_300_819_380)
        );
        assert_eq!(verify(token, &key, 1_300_819_380, &TokenLimits::default()), Err(TokenError::Expired));
        let mut forged = token.to_string();
        forged.replace_range(forged.len() - 1.., "Y");
        assert_eq!(
            verify(&forged, &key, 1_300_000_000, &TokenLimits::default()),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn rfc7518_3_2_short_secrets_are_refused() {
        assert!(TokenKey::new(&[7; 31], None).is_err());
    }

    #[test]
    fn rfc7515_alg_must_be_hs256_none_and_crit_are_refused() {
        let claims = format!(r#"{{"exp":{}}}"#, NOW + 60);
        for header in [r#"{"alg":"none"}"#, r#"{"alg":"HS512"}"#, r#"{"alg":"HS256","crit":["x"]}"#] {
            let token = sign_raw(header.as_bytes(), claims.as_bytes(), &key());
            assert_eq!(check(&token), Err(TokenError::UnsupportedAlgorithm), "{header}");
        }
        // `alg: none` with an empty signature, the classic forgery.
        let unsigned = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#),
            URL_SAFE_NO_PAD.encode(claims.as_bytes())
        );
        assert_eq!(check(&unsigned), Err(TokenError::UnsupportedAlgorithm));
        let typ = sign_raw(br#"{"alg":"HS256","typ":"JOSE+JSON"}"#, claims.as_bytes(), &key());
        assert_eq!(check(&typ), Err(TokenError::Malformed));
    }

    #[test]
    fn rfc7519_4_1_4_exp_is_required_and_strict() {
        let at =
            |exp: &str| sign_raw(br#"{"alg":"HS256"}"#, format!(r#"{{"exp":{exp}}}"#).as_bytes(), &key());
        assert_eq!(check(&at(&NOW.to_string())), Err(TokenError::Expired));
        assert!(check(&at(&(NOW + 1).to_string())).is_ok());
        assert!(check(&at(&format!("{}.5", NOW + 1))).is_ok());
        assert_eq!(check(&at("-1")), Err(TokenError::Expired));
        let none = sign_raw(br#"{"alg":"HS256"}"#, b"{}", &key());
        assert_eq!(check(&none), Err(TokenError::Expired));
    }

    #[test]
    fn rfc7519_4_1_5_nbf_in_the_future_is_refused() {
        let claims = format!(r#"{{"exp":{},"nbf":{}}}"#, NOW + 60, NOW + 10);
        let token = sign_raw(br#"{"alg":"HS256"}"#, claims.as_bytes(), &key());
        assert_eq!(check(&token), Err(TokenError::NotYetValid));
        assert!(verify(&token, &key(), NOW + 10, &TokenLimits::default()).is_ok());
    }

    #[test]
    fn rfc7519_4_1_3_aud_must_name_us() {
        let claims = format!(r#"{{"exp":{},"aud":["other","pushwire"]}}"#, NOW + 60);
        let token = sign_raw(br#"{"alg":"HS256"}"#, claims.as_bytes(), &key());
        assert_eq!(check(&token), Err(TokenError::BadClaims));
        let ours = TokenKey::new(b"0123456789abcdef0123456789abcdef", Some("pushwire".into())).unwrap();
        assert!(verify(&token, &ours, NOW, &TokenLimits::default()).is_ok());
    }

    #[test]
    fn malformed_and_oversized_tokens_are_refused_before_decoding() {
        assert_eq!(check(&"a".repeat(4097)), Err(TokenError::TooLong));
        for bad in ["", "a", "a.b", "a.b.c.d", "!!.!!.!!", "e30.e30.e30="] {
            assert!(matches!(check(bad), Err(TokenError::Malformed)), "{bad}");
        }
        let mut wrong_key = good();
        let other = TokenKey::new(b"another secret of at least 32 bytes!", None).unwrap();
        assert_eq!(verify(&wrong_key, &other, NOW, &TokenLimits::default()), Err(TokenError::BadSignature));
        wrong_key.insert(wrong_key.find('.').unwrap() + 1, 'A');
        assert_eq!(check(&wrong_key), Err(TokenError::BadSignature));
    }

    #[test]
    fn bad_claims_are_refused_after_the_signature() {
        for claims in [
            format!(r#"{{"exp":{},"subscribe":["a b"]}}"#, NOW + 60),
            format!(r#"{{"exp":{},"subscribe":"chat.*"}}"#, NOW + 60),
            format!(r#"{{"exp":{},"sub":""}}"#, NOW + 60),
            format!(r#"{{"exp":{},"sub":"{}"}}"#, NOW + 60, "u".repeat(129)),
            "[]".to_string(),
        ] {
            let token = sign_raw(br#"{"alg":"HS256"}"#, claims.as_bytes(), &key());
            assert_eq!(check(&token), Err(TokenError::BadClaims), "{claims}");
        }
    }

    #[test]
    fn the_secret_never_reaches_debug_output() {
        assert!(!format!("{:?}", key()).contains("0123456789abcdef"));
    }
}
