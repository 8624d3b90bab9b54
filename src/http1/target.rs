//! Request-target splitting and query parameters.
//!
//! Implements: the origin-form and absolute-form of the request-target
//! ([RFC 9112 §3.2.1–§3.2.2](https://www.rfc-editor.org/rfc/rfc9112#section-3.2)), and
//! `application/x-www-form-urlencoded`-style query parameters with percent-decoding
//! ([RFC 3986 §2.1](https://www.rfc-editor.org/rfc/rfc3986#section-2.1), `+` as space as in the
//! WHATWG URL standard's form decoding).
//!
//! Does not: percent-decode the path (channel names are plain unreserved characters, so a `%`
//! in a path is simply not a valid channel name), or normalize dot-segments.

/// A request-target split into path and query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target<'a> {
    /// The absolute path, starting with `/` (empty for the asterisk-form).
    pub path: &'a str,
    /// The query without its `?`, if any.
    pub query: Option<&'a str>,
}

impl<'a> Target<'a> {
    /// Splits a request-target. Absolute-form (`http://host/path?q`) is reduced to its path,
    /// because a server MUST accept the absolute-form in requests (RFC 9112 §3.2.2).
    /// Returns `None` for the authority-form and anything not starting with `/`.
    pub fn parse(target: &'a str) -> Option<Target<'a>> {
        let rest = if target.starts_with('/') {
            target
        } else if let Some(after) = strip_scheme(target) {
            match after.find(['/', '?']) {
                Some(i) if after[i..].starts_with('/') => &after[i..],
                Some(i) => return Some(Target { path: "/", query: Some(&after[i + 1..]) }),
                None => "/",
            }
        } else {
            return None;
        };
        let path_end = rest.find(['?', '#']).unwrap_or(rest.len());
        let query = rest[path_end..].strip_prefix('?').map(|q| q.split('#').next().unwrap_or(""));
        Some(Target { path: &rest[..path_end], query })
    }

    /// The decoded value of the first query parameter called `name`; `Some(Err(()))` when its
    /// percent-encoding is broken or it does not decode to UTF-8.
    pub fn param(&self, name: &str) -> Option<Result<String, InvalidQuery>> {
        self.query?
            .split('&')
            .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
            .find(|(k, _)| decode(k).is_ok_and(|k| k == name))
            .map(|(_, v)| decode(v))
    }
}

fn strip_scheme(target: &str) -> Option<&str> {
    let lower = target.get(..8).unwrap_or(target).to_ascii_lowercase();
    if lower.starts_with("http://") {
        Some(&target[7..])
    } else if lower.starts_with("https://") {
        Some(&target[8..])
    } else {
        None
    }
}

/// A query parameter whose percent-encoding is broken or whose bytes are not UTF-8.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidQuery;

/// Percent-decodes one query component (`+` is a space).
pub fn decode(component: &str) -> Result<String, InvalidQuery> {
    let bytes = component.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).ok_or(InvalidQuery)?;
                let hi = (hex[0] as char).to_digit(16).ok_or(InvalidQuery)?;
                let lo = (hex[1] as char).to_digit(16).ok_or(InvalidQuery)?;
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| InvalidQuery)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc9112_3_2_1_origin_form_splits_path_and_query() {
        let t = Target::parse("/channels/a?since=x%3A1&wait=5").unwrap();
        assert_eq!(t.path, "/channels/a");
        assert_eq!(t.param("since"), Some(Ok("x:1".to_string())));
        assert_eq!(t.param("wait"), Some(Ok("5".to_string())));
        assert_eq!(t.param("missing"), None);
        assert_eq!(Target::parse("/").unwrap().query, None);
    }

    #[test]
    fn rfc9112_3_2_2_absolute_form_is_accepted() {
        let t = Target::parse("http://example.com/channels/a?x=1").unwrap();
        assert_eq!((t.path, t.query), ("/channels/a", Some("x=1")));
        assert_eq!(Target::parse("HTTPS://h").unwrap().path, "/");
        assert_eq!(Target::parse("example.com:80"), None);
    }

    #[test]
    fn rfc3986_2_1_bad_percent_encoding_is_an_error() {
        let t = Target::parse("/a?x=%zz&y=%4&z=%ff").unwrap();
        assert_eq!(t.param("x"), Some(Err(InvalidQuery)));
        assert_eq!(t.param("y"), Some(Err(InvalidQuery)));
        assert_eq!(t.param("z"), Some(Err(InvalidQuery)));
        assert_eq!(decode("a+b%20c"), Ok("a b c".to_string()));
    }

    #[test]
    fn fragment_is_not_part_of_the_query() {
        let t = Target::parse("/a?x=1#frag").unwrap();
        assert_eq!(t.param("x"), Some(Ok("1".to_string())));
    }
}
