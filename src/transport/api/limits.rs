//! The server API's settings: its key and its bounds (a leaf: `crate::config` composes it).
//!
//! Implements: [`ApiConfig`] (the key, off when absent) and [`ApiLimits`] (request body size,
//! channels per broadcast, page sizes), with the constant-time key check.
//!
//! Does not: parse requests (see [`super`]).

use sha2::{Digest, Sha256};

/// Bounds on what one server API request may ask for; each is checked before the memory it
/// would need is reserved (the body before it is read, counts before anything is looked up).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiLimits {
    /// Largest request body, in bytes; a larger declared length (or chunked body) gets 413
    /// before it is read. Default 1 MiB.
    pub max_body_bytes: u64,
    /// Most channels of one `broadcast`; more gets 400. Default 1 000.
    pub max_broadcast_channels: usize,
    /// Most channels one `channels` page lists (`limit` is capped to it). Default 1 000.
    pub max_page_channels: usize,
    /// Most messages one `history` call returns (`limit` is capped to it). Default 1 000.
    pub max_history_messages: usize,
    /// Longest `reason` of a `disconnect`, in bytes (it must fit a WebSocket close frame's
    /// 123 bytes, RFC 6455 §5.5); longer gets 400. Default 120.
    pub max_reason_bytes: usize,
}

impl Default for ApiLimits {
    fn default() -> Self {
        ApiLimits {
            max_body_bytes: 1 << 20,
            max_broadcast_channels: 1_000,
            max_page_channels: 1_000,
            max_history_messages: 1_000,
            max_reason_bytes: 120,
        }
    }
}

/// The API key, compared by its SHA-256 digest so the comparison takes the same time whatever
/// the guess (its length included). Printed redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey {
    digest: [u8; 32],
}

impl ApiKey {
    /// The key `text` (at least 16 bytes: a shorter key is refused at startup).
    pub fn new(text: &str) -> Result<ApiKey, String> {
        if text.len() < 16 {
            return Err("--api-key must be at least 16 bytes".into());
        }
        Ok(ApiKey { digest: Sha256::digest(text.as_bytes()).into() })
    }

    /// True when `guess` is the key; the time taken does not depend on where they differ.
    pub fn matches(&self, guess: &[u8]) -> bool {
        let guess: [u8; 32] = Sha256::digest(guess).into();
        guess.iter().zip(&self.digest).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(redacted)")
    }
}

/// The server API: off unless a key is configured.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApiConfig {
    /// `Authorization: apikey KEY` must carry this key; `None`: `/api/…` is 404.
    pub key: Option<ApiKey>,
    /// Request bounds.
    pub limits: ApiLimits,
}

impl ApiConfig {
    /// Checks the bounds: each at least 1, the reason within a close frame.
    pub fn validate(&self) -> Result<(), String> {
        let l = &self.limits;
        if l.max_body_bytes == 0 || l.max_broadcast_channels == 0 || l.max_page_channels == 0 {
            return Err("api: body, broadcast and page limits must be at least 1".into());
        }
        if l.max_history_messages == 0 {
            return Err("api: max_history_messages must be at least 1".into());
        }
        // RFC 6455 §5.5: a control frame's payload is at most 125 bytes, 2 of them the code.
        if l.max_reason_bytes > 123 {
            return Err("api: max_reason_bytes must be at most 123 (a close frame's reason)".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_matches_only_itself_and_is_never_printed() {
        let key = ApiKey::new("0123456789abcdef").unwrap();
        assert!(key.matches(b"0123456789abcdef"));
        assert!(!key.matches(b"0123456789abcdeF"));
        assert!(!key.matches(b"0123456789abcdef0"));
        assert!(!key.matches(b""));
        assert!(!format!("{key:?}").contains("0123"));
        assert!(ApiKey::new("short").is_err());
    }

    #[test]
    fn defaults_are_valid_and_a_long_reason_limit_is_refused() {
        assert_eq!(ApiConfig::default().validate(), Ok(()));
        let mut config = ApiConfig::default();
        config.limits.max_reason_bytes = 124;
        assert!(config.validate().is_err());
    }
}
