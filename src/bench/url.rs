//! The few URLs the load generator understands: `ws://`, `http://`, `tcp://` (the raw
//! length-prefixed echo) and `wss://` (`bench echo` over TLS), host, port, path.
//!
//! Implements: the `scheme://authority/path?query` split of RFC 3986 §3 for these schemes,
//! name resolution of the host (std's resolver), the `Host` field value of RFC 9112 §3.2, and
//! the default ports of RFC 6455 §3 (80, and 443 for `wss://`).
//!
//! Does not: handle `https://`, user info, IPv6 zone ids, or fragments.

use std::net::{SocketAddr, ToSocketAddrs};

/// A parsed `ws://`, `http://`, `tcp://` or `wss://` URL; the first three mean the same TCP
/// connection here, `wss://` the same with TLS over it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    /// `wss://`: TLS over the TCP connection (RFC 6455 §3, the /secure/ flag).
    pub secure: bool,
    /// The authority as written (`host[:port]`): the `Host` field value.
    pub host: String,
    /// The resolved address to connect to.
    pub addr: SocketAddr,
    /// The request-target: the path and query, starting with `/`.
    pub path: String,
}

impl Url {
    /// Parses and resolves `text`; the port defaults to 80 (443 for `wss://`).
    pub fn parse(text: &str) -> Result<Url, String> {
        let secure = text.starts_with("wss://");
        let rest = text
            .strip_prefix("ws://")
            .or_else(|| text.strip_prefix("wss://"))
            .or_else(|| text.strip_prefix("http://"))
            .or_else(|| text.strip_prefix("tcp://"))
            .ok_or_else(|| format!("`{text}`: only ws://, wss://, http:// and tcp:// URLs are supported"))?;
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) if rest[i..].starts_with('/') => (&rest[..i], rest[i..].to_string()),
            Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
            None => (rest, "/".to_string()),
        };
        if authority.is_empty() || authority.contains('@') {
            return Err(format!("`{text}`: expected scheme://host[:port]/path"));
        }
        let with_port = if authority.ends_with(']') || !authority.contains(':') {
            format!("{authority}:{}", if secure { 443 } else { 80 })
        } else {
            authority.to_string()
        };
        let addr = with_port
            .to_socket_addrs()
            .map_err(|e| format!("`{text}`: cannot resolve {with_port}: {e}"))?
            .next()
            .ok_or_else(|| format!("`{text}`: {with_port} resolves to no address"))?;
        Ok(Url { secure, host: authority.to_string(), addr, path })
    }

    /// The host without its port: the TLS server name (RFC 6066 §3) of a `wss://` URL.
    pub fn hostname(&self) -> &str {
        match self.host.rsplit_once(':') {
            Some((name, port)) if !port.contains(']') => name.trim_start_matches('[').trim_end_matches(']'),
            _ => self.host.trim_start_matches('[').trim_end_matches(']'),
        }
    }

    /// Fails for a `wss://` URL: `mode` has no TLS client (only `bench echo` has).
    pub fn require_plain(&self, mode: &str) -> Result<(), String> {
        if self.secure {
            return Err(format!("`bench {mode}` speaks no TLS: only `bench echo` takes a wss:// URL"));
        }
        Ok(())
    }

    /// The target with `name=value` appended to its query (`value` must need no escaping).
    pub fn path_with_param(&self, name: &str, value: &str) -> String {
        let separator = if self.path.contains('?') { '&' } else { '?' };
        format!("{}{separator}{name}={value}", self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3986_3_authority_path_and_query_are_split() {
        let url = Url::parse("ws://127.0.0.1:9000/echo").unwrap();
        assert_eq!(url.host, "127.0.0.1:9000");
        assert_eq!(url.addr, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(url.path, "/echo");
        let url = Url::parse("http://127.0.0.1/pub?id=a").unwrap();
        assert_eq!(url.addr.port(), 80);
        assert_eq!(url.path, "/pub?id=a");
        assert_eq!(url.path_with_param("wait", "5"), "/pub?id=a&wait=5");
        assert_eq!(Url::parse("http://127.0.0.1:1?x=1").unwrap().path, "/?x=1");
        assert_eq!(Url::parse("http://127.0.0.1:1").unwrap().path, "/");
        assert_eq!(Url::parse("tcp://127.0.0.1:7").unwrap().addr, "127.0.0.1:7".parse().unwrap());
    }

    #[test]
    fn rfc6455_3_wss_is_secure_with_port_443_by_default() {
        let url = Url::parse("wss://127.0.0.1/echo").unwrap();
        assert!(url.secure);
        assert_eq!(url.addr.port(), 443);
        assert_eq!(url.hostname(), "127.0.0.1");
        let url = Url::parse("wss://localhost:9443/echo").unwrap();
        assert_eq!(
            (url.hostname(), url.addr.port(), url.host.as_str()),
            ("localhost", 9443, "localhost:9443")
        );
        assert!(!Url::parse("ws://127.0.0.1/").unwrap().secure);
        assert_eq!(Url::parse("ws://[::1]:80/").unwrap().hostname(), "::1");
        assert!(Url::parse("wss://127.0.0.1/").unwrap().require_plain("fanout").is_err());
    }

    #[test]
    fn https_and_user_info_are_refused() {
        assert!(Url::parse("https://127.0.0.1/").is_err());
        assert!(Url::parse("http://u@127.0.0.1/").is_err());
        assert!(Url::parse("http:///x").is_err());
    }
}
