//! The `--redis` URL: `redis[s]://[[USER]:PASSWORD@]HOST[:PORT][/DB]`, and the commands that
//! open a connection with it.
//!
//! Implements: the `redis` scheme as registered with IANA
//! (<https://www.iana.org/assignments/uri-schemes/prov/redis>) on the generic syntax of
//! [RFC 3986 §3](https://www.rfc-editor.org/rfc/rfc3986#section-3): user info with
//! percent-encoded bytes (§2.1), a host that is a name, an IPv4 address or a bracketed IPv6
//! literal (§3.2.2), an optional port (default 6379), and an optional database number as the
//! path (default 0); the `rediss` scheme
//! (<https://www.iana.org/assignments/uri-schemes/prov/rediss>): the same over TLS
//! ([`RedisUrl::tls`]; the broker runs the handshake, with the host as the name the certificate
//! must carry); [`RedisUrl::handshake_commands`] (`AUTH` as Redis 6 ACLs take it, `SELECT`,
//! `CLIENT SETNAME`).
//!
//! Does not: Unix sockets (`unix://`), query parameters (TLS options such as a private CA come
//! from the command line: `--redis-ca-file`), or resolving the host name (the broker does).

use std::fmt;

use crate::redis::resp::Command;

/// A parsed `redis://` URL.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl {
    /// `rediss://`: the connections speak TLS, and the server's certificate must be valid
    /// for [`RedisUrl::host`].
    pub tls: bool,
    /// The host: a name, an IPv4 address, or an IPv6 address without brackets.
    pub host: String,
    /// The TCP port. Default 6379.
    pub port: u16,
    /// The database number for `SELECT`. Default 0.
    pub db: u32,
    /// The ACL user name (Redis 6+), if given before the password.
    pub username: Option<String>,
    /// The password, if given.
    pub password: Option<String>,
}

impl fmt::Debug for RedisUrl {
    /// Never prints the password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisUrl")
            .field("tls", &self.tls)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("db", &self.db)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .finish()
    }
}

impl fmt::Display for RedisUrl {
    /// The URL without its password, for logs and errors.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.tls { "rediss://" } else { "redis://" })?;
        if let Some(user) = &self.username {
            write!(f, "{user}@")?;
        }
        if self.host.contains(':') {
            write!(f, "[{}]:{}/{}", self.host, self.port, self.db)
        } else {
            write!(f, "{}:{}/{}", self.host, self.port, self.db)
        }
    }
}

impl RedisUrl {
    /// The URL with its password, if any, shown as `(redacted)` (`pushwire config show`).
    pub fn redacted(&self) -> String {
        let shown = self.to_string();
        if self.password.is_none() {
            return shown;
        }
        let scheme = if self.tls { "rediss://" } else { "redis://" };
        let rest = &shown[scheme.len()..];
        let user = self.username.as_deref().unwrap_or("");
        let rest = rest.strip_prefix(&format!("{user}@")).unwrap_or(rest);
        format!("{scheme}{user}:(redacted)@{rest}")
    }
}

/// Why a `--redis` URL was refused (an operator's mistake: the process exits with a usage
/// error before serving).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum UrlError {
    /// Neither `redis://` nor `rediss://`.
    UnsupportedScheme,
    /// No host between `//` and the port or path.
    MissingHost,
    /// A host with characters outside RFC 3986 §3.2.2, or an unclosed IPv6 bracket.
    InvalidHost,
    /// A port that is not 1 to 65535.
    InvalidPort,
    /// A path that is not `/` and a database number (0 to 2^32 - 1).
    InvalidDatabase,
    /// A `%` not followed by two hex digits, or user info that is not UTF-8 once decoded.
    InvalidPercentEncoding,
    /// A `?query` or `#fragment` (no parameters are supported).
    UnsupportedQuery,
    /// A user name without a password (`redis://user@host`): Redis `AUTH` needs both.
    UserWithoutPassword,
}

impl fmt::Display for UrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            UrlError::UnsupportedScheme => "the Redis URL must start with redis:// or rediss:// (TLS)",
            UrlError::MissingHost => "the Redis URL has no host",
            UrlError::InvalidHost => {
                "the Redis URL's host is not a name, an IPv4 address or a [bracketed] IPv6 address"
            }
            UrlError::InvalidPort => "the Redis URL's port is not 1-65535",
            UrlError::InvalidDatabase => "the Redis URL's path must be /DB with a database number",
            UrlError::InvalidPercentEncoding => {
                "the Redis URL's user or password has a bad %-escape or is not UTF-8"
            }
            UrlError::UnsupportedQuery => "the Redis URL takes no ?query or #fragment",
            UrlError::UserWithoutPassword => "the Redis URL names a user without a password (user:password@)",
        })
    }
}

impl std::error::Error for UrlError {}

impl RedisUrl {
    /// Parses `redis[s]://[[USER]:PASSWORD@]HOST[:PORT][/DB]`.
    pub fn parse(url: &str) -> Result<RedisUrl, UrlError> {
        let (tls, rest) = if let Some(rest) = url.strip_prefix("redis://") {
            (false, rest)
        } else if let Some(rest) = url.strip_prefix("rediss://") {
            (true, rest)
        } else {
            return Err(UrlError::UnsupportedScheme);
        };
        if rest.contains(['?', '#']) {
            return Err(UrlError::UnsupportedQuery);
        }
        // RFC 3986 §3.2: authority = [ userinfo "@" ] host [ ":" port ], ended by "/".
        let (authority, path) = match rest.find('/') {
            Some(slash) => (&rest[..slash], Some(&rest[slash + 1..])),
            None => (rest, None),
        };
        let (userinfo, hostport) = match authority.rfind('@') {
            Some(at) => (Some(&authority[..at]), &authority[at + 1..]),
            None => (None, authority),
        };
        let (username, password) = match userinfo {
            None => (None, None),
            Some(info) => match info.split_once(':') {
                Some((user, password)) => {
                    let user = percent_decode(user)?;
                    (Some(user).filter(|u| !u.is_empty()), Some(percent_decode(password)?))
                }
                None => return Err(UrlError::UserWithoutPassword),
            },
        };
        let (host, port) = split_host_port(hostport)?;
        let db = match path {
            None | Some("") => 0,
            Some(db) if !db.is_empty() && db.len() <= 10 && db.bytes().all(|b| b.is_ascii_digit()) => {
                db.parse().map_err(|_| UrlError::InvalidDatabase)?
            }
            Some(_) => return Err(UrlError::InvalidDatabase),
        };
        Ok(RedisUrl { tls, host, port, db, username, password })
    }

    /// The commands that open a connection, to pipeline before anything else: `AUTH` (with the
    /// user name when given, Redis 6 ACL style) if there is a password, `SELECT` if the
    /// database is not 0, and `CLIENT SETNAME name` so `CLIENT LIST` shows which node and
    /// role a connection is. Each answers `+OK`.
    pub fn handshake_commands(&self, client_name: &str) -> Vec<Command> {
        let mut commands = Vec::new();
        if let Some(password) = &self.password {
            commands.push(match &self.username {
                Some(user) => Command::new("AUTH").arg(user).arg(password),
                None => Command::new("AUTH").arg(password),
            });
        }
        if self.db != 0 {
            commands.push(Command::new("SELECT").arg(self.db.to_string()));
        }
        commands.push(Command::new("CLIENT").arg("SETNAME").arg(client_name));
        commands
    }
}

/// RFC 3986 §3.2.2 and §3.2.3: `host [":" port]`, with IPv6 in brackets.
fn split_host_port(hostport: &str) -> Result<(String, u16), UrlError> {
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (host, after) = v6.split_once(']').ok_or(UrlError::InvalidHost)?;
        if host.is_empty() || !host.bytes().all(|b| b.is_ascii_hexdigit() || matches!(b, b':' | b'.')) {
            return Err(UrlError::InvalidHost);
        }
        let port = match after {
            "" => None,
            _ => Some(after.strip_prefix(':').ok_or(UrlError::InvalidHost)?),
        };
        (host, port)
    } else {
        let (host, port) = match hostport.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (hostport, None),
        };
        // reg-name = *( unreserved / pct-encoded / sub-delims ): names and IPv4 here.
        if !host.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'~')) {
            return Err(UrlError::InvalidHost);
        }
        (host, port)
    };
    if host.is_empty() {
        return Err(UrlError::MissingHost);
    }
    let port = match port {
        None => 6379,
        Some(p) if !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()) => {
            p.parse::<u16>().ok().filter(|&p| p != 0).ok_or(UrlError::InvalidPort)?
        }
        Some(_) => return Err(UrlError::InvalidPort),
    };
    Ok((host.to_string(), port))
}

/// RFC 3986 §2.1: `%` HEXDIG HEXDIG is one byte; the result must be UTF-8.
fn percent_decode(text: &str) -> Result<String, UrlError> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or(UrlError::InvalidPercentEncoding)?;
            let hex = std::str::from_utf8(hex).map_err(|_| UrlError::InvalidPercentEncoding)?;
            if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(UrlError::InvalidPercentEncoding);
            }
            out.push(u8::from_str_radix(hex, 16).map_err(|_| UrlError::InvalidPercentEncoding)?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| UrlError::InvalidPercentEncoding)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(host: &str, port: u16, db: u32, username: Option<&str>, password: Option<&str>) -> RedisUrl {
        RedisUrl {
            tls: false,
            host: host.into(),
            port,
            db,
            username: username.map(Into::into),
            password: password.map(Into::into),
        }
    }

    #[test]
    fn redis_url_forms() {
        let cases = [
            ("redis://localhost", url("localhost", 6379, 0, None, None)),
            ("redis://127.0.0.1:6380", url("127.0.0.1", 6380, 0, None, None)),
            ("redis://127.0.0.1:6380/", url("127.0.0.1", 6380, 0, None, None)),
            ("redis://h/15", url("h", 6379, 15, None, None)),
            ("redis://:secret@h:1/2", url("h", 1, 2, None, Some("secret"))),
            ("redis://alice:s%40cr%3At@h", url("h", 6379, 0, Some("alice"), Some("s@cr:t"))),
            ("redis://a:p:q@h", url("h", 6379, 0, Some("a"), Some("p:q"))),
            ("redis://[::1]:7000/3", url("::1", 7000, 3, None, None)),
            ("redis://[::1]", url("::1", 6379, 0, None, None)),
            (
                "redis://redis-1.internal_net:65535/4294967295",
                url("redis-1.internal_net", 65535, u32::MAX, None, None),
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(RedisUrl::parse(text), Ok(expected), "{text}");
        }
    }

    #[test]
    fn redis_url_rejections() {
        use UrlError::*;
        let cases = [
            ("http://h", UnsupportedScheme),
            ("h:6379", UnsupportedScheme),
            ("REDIS://h", UnsupportedScheme),
            ("rediss:/h", UnsupportedScheme),
            ("rediss://", MissingHost),
            ("redis://", MissingHost),
            ("redis://:6379", MissingHost),
            ("redis://:pw@/1", MissingHost),
            ("redis://h:0", InvalidPort),
            ("redis://h:65536", InvalidPort),
            ("redis://h:", InvalidPort),
            ("redis://h:x", InvalidPort),
            ("redis://h/x", InvalidDatabase),
            ("redis://h/1/2", InvalidDatabase),
            ("redis://h/4294967296", InvalidDatabase),
            ("redis://h/-1", InvalidDatabase),
            ("redis://h?db=1", UnsupportedQuery),
            ("redis://h#x", UnsupportedQuery),
            ("redis://user@h", UserWithoutPassword),
            ("redis://:%zz@h", InvalidPercentEncoding),
            ("redis://:%4@h", InvalidPercentEncoding),
            ("redis://:%ff@h", InvalidPercentEncoding),
            ("redis://h h", InvalidHost),
            ("redis://[::1", InvalidHost),
            ("redis://[::1]x", InvalidHost),
            ("redis://[]:1", InvalidHost),
            ("redis://[g::1]", InvalidHost),
            ("redis://a,b", InvalidHost),
        ];
        for (text, error) in cases {
            assert_eq!(RedisUrl::parse(text), Err(error.clone()), "{text}");
            assert!(!error.to_string().is_empty());
        }
    }

    #[test]
    fn redis_url_display_and_debug_hide_the_password() {
        let parsed = RedisUrl::parse("redis://alice:hunter2@[::1]:7000/3").unwrap();
        assert_eq!(parsed.to_string(), "redis://alice@[::1]:7000/3");
        assert!(!format!("{parsed:?}").contains("hunter2"));
        assert_eq!(RedisUrl::parse("redis://h").unwrap().to_string(), "redis://h:6379/0");
        let secure = RedisUrl::parse("rediss://:hunter2@h").unwrap();
        assert_eq!(secure.to_string(), "rediss://h:6379/0");
        assert!(!format!("{secure:?}").contains("hunter2"));
        assert_eq!(parsed.redacted(), "redis://alice:(redacted)@[::1]:7000/3");
        assert_eq!(secure.redacted(), "rediss://:(redacted)@h:6379/0");
        assert_eq!(RedisUrl::parse("redis://h").unwrap().redacted(), "redis://h:6379/0");
    }

    #[test]
    fn rediss_url_is_the_same_form_over_tls() {
        let secure = RedisUrl::parse("rediss://alice:pw@redis.internal:6380/2").unwrap();
        assert_eq!(
            secure,
            RedisUrl { tls: true, ..url("redis.internal", 6380, 2, Some("alice"), Some("pw")) }
        );
        assert!(!RedisUrl::parse("redis://redis.internal").unwrap().tls);
    }

    #[test]
    fn redis_url_handshake_commands() {
        let plain = RedisUrl::parse("redis://h").unwrap();
        assert_eq!(plain.handshake_commands("n"), [Command::new("CLIENT").arg("SETNAME").arg("n")]);
        let full = RedisUrl::parse("redis://alice:pw@h/2").unwrap();
        assert_eq!(
            full.handshake_commands("n"),
            [
                Command::new("AUTH").arg("alice").arg("pw"),
                Command::new("SELECT").arg("2"),
                Command::new("CLIENT").arg("SETNAME").arg("n")
            ]
        );
        let password_only = RedisUrl::parse("redis://:pw@h").unwrap();
        assert_eq!(password_only.handshake_commands("n")[0], Command::new("AUTH").arg("pw"));
    }
}
