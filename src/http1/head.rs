//! Request and response heads: an incremental end-of-head scan, then one `httparse` parse.
//!
//! Implements: [RFC 9112 §2.2](https://www.rfc-editor.org/rfc/rfc9112#section-2.2) (message
//! parsing, empty lines before the request line ignored), §3 (request line), §3.2 (Host), §4
//! (status line), §5 (field lines) through `httparse`, and the head size limits.
//!
//! The scanner remembers how far it has looked, so a head delivered one byte per read is
//! scanned once in total; `httparse` runs exactly once, on the complete head.
//!
//! Does not: accept obsolete line folding (httparse rejects it, RFC 9112 §5.2 allows that),
//! or interpret any field beyond Host (see [`super::body`] for framing).

use super::{Error, Limits, MAX_HEADERS_CAP};

/// One header field as received: the name as sent (compare case-insensitively), the raw value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Field name, as sent.
    pub name: String,
    /// Field value bytes, leading/trailing whitespace already trimmed by the parser.
    pub value: Vec<u8>,
}

/// A parsed request head (RFC 9112 §3), owned so the read buffer can be reused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    /// Method token, e.g. "GET" (case-sensitive, RFC 9110 §9.1).
    pub method: String,
    /// The request-target as sent, e.g. "/channels/a?since=x".
    pub target: String,
    /// HTTP/1.x minor version: 0 or 1.
    pub minor_version: u8,
    /// Header fields in the order received.
    pub headers: Vec<Header>,
}

/// A parsed response head (RFC 9112 §4), used by the client role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    /// Status code, e.g. 101.
    pub status: u16,
    /// Reason phrase as sent.
    pub reason: String,
    /// HTTP/1.x minor version: 0 or 1.
    pub minor_version: u8,
    /// Header fields in the order received.
    pub headers: Vec<Header>,
}

/// Field lookups shared by request and response heads.
pub trait Headers {
    /// All header fields.
    fn fields(&self) -> &[Header];

    /// The value of the first field named `name` (ASCII case-insensitive).
    fn header(&self, name: &str) -> Option<&[u8]> {
        self.fields().iter().find(|h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value.as_slice())
    }

    /// True when any field named `name` holds a comma-separated list element equal to `token`
    /// (ASCII case-insensitive, optional whitespace around elements; RFC 9110 §5.6.1).
    fn has_token(&self, name: &str, token: &str) -> bool {
        self.fields()
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(name))
            .flat_map(|h| h.value.split(|&b| b == b','))
            .any(|e| e.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    }
}

impl Headers for RequestHead {
    fn fields(&self) -> &[Header] {
        &self.headers
    }
}

impl Headers for ResponseHead {
    fn fields(&self) -> &[Header] {
        &self.headers
    }
}

impl RequestHead {
    /// True when the client asked for a persistent connection: HTTP/1.1 unless
    /// `Connection: close`, HTTP/1.0 only with `Connection: keep-alive` (RFC 9112 §9.3).
    pub fn keep_alive(&self) -> bool {
        if self.has_token("connection", "close") {
            return false;
        }
        self.minor_version >= 1 || self.has_token("connection", "keep-alive")
    }
}

/// Where a head ends, found incrementally over a growing buffer.
#[derive(Debug, Default, Clone)]
pub struct HeadScanner {
    /// Bytes already examined; the next scan resumes here.
    scanned: usize,
    /// True once the first line end (the end of the request line) has been seen.
    line_seen: bool,
}

impl HeadScanner {
    /// A scanner at the start of a head.
    pub fn new() -> Self {
        Self::default()
    }

    /// Looks at the bytes of `buf` not seen before. Returns the length of the head (through its
    /// blank line) when complete, `None` when more bytes are needed, or the limit that was
    /// crossed. `buf` must start at the head's first byte and only ever grow between calls.
    pub fn scan(&mut self, buf: &[u8], limits: &Limits) -> Result<Option<usize>, Error> {
        // RFC 9112 §2.2: a field line or the request line ends in CRLF; a recipient MAY
        // recognize a single LF as a line terminator (httparse does, so the scan does too).
        let start = self.scanned;
        for (i, &b) in buf.iter().enumerate().skip(start) {
            // The limits are checked at the byte that crosses them, so the outcome is the same
            // however the head is split across reads.
            self.check_length(i + 1, limits)?;
            if b != b'\n' {
                continue;
            }
            self.line_seen = true;
            let blank =
                (i >= 1 && buf[i - 1] == b'\n') || (i >= 2 && buf[i - 1] == b'\r' && buf[i - 2] == b'\n');
            if blank {
                self.scanned = i + 1;
                return Ok(Some(i + 1));
            }
        }
        self.scanned = buf.len();
        Ok(None)
    }

    /// Checks the limits for a head that has `len` bytes so far.
    fn check_length(&self, len: usize, limits: &Limits) -> Result<(), Error> {
        // RFC 9112 §3: a server that receives a request-target longer than any URI it wishes
        // to parse MUST respond with a 414 status code. The request line is method, target
        // and version; allow room for the other two before blaming the target.
        if !self.line_seen && len > limits.max_target_bytes + 32 {
            return Err(Error::TargetTooLong);
        }
        if len > limits.max_head_bytes {
            return Err(if self.line_seen { Error::HeadTooLarge } else { Error::TargetTooLong });
        }
        Ok(())
    }
}

/// Number of CR and LF bytes at the start of `buf`, which a server SHOULD ignore before a
/// request line (RFC 9112 §2.2).
pub fn leading_empty_lines(buf: &[u8]) -> usize {
    buf.iter().take_while(|&&b| b == b'\r' || b == b'\n').count()
}

fn to_headers(fields: &[httparse::Header<'_>]) -> Vec<Header> {
    fields.iter().map(|h| Header { name: h.name.to_string(), value: h.value.trim_ascii().to_vec() }).collect()
}

/// Parses a complete request head (as found by [`HeadScanner`]) and checks the rules that
/// apply to every request: the target length and Host.
pub fn parse_request_head(head: &[u8], limits: &Limits) -> Result<RequestHead, Error> {
    let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS_CAP];
    let mut req = httparse::Request::new(&mut storage[..limits.max_headers]);
    match req.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(Error::MalformedHead),
        Err(httparse::Error::TooManyHeaders) => return Err(Error::TooManyHeaders),
        // RFC 9110 §15.6.6: 505 for a major version the server does not support; a version
        // token that is not an HTTP-version at all (RFC 9112 §2.3) is malformed.
        Err(httparse::Error::Version) if names_an_http_version(head) => {
            return Err(Error::UnsupportedVersion)
        }
        Err(_) => return Err(Error::MalformedHead),
    }
    let (Some(method), Some(target), Some(minor_version)) = (req.method, req.path, req.version) else {
        return Err(Error::MalformedHead);
    };
    if target.len() > limits.max_target_bytes {
        return Err(Error::TargetTooLong);
    }
    let head = RequestHead {
        method: method.to_string(),
        target: target.to_string(),
        minor_version,
        headers: to_headers(req.headers),
    };
    let hosts: Vec<&[u8]> = head
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("host"))
        .map(|h| h.value.as_slice())
        .collect();
    // RFC 9112 §3.2: a server MUST respond with 400 to any HTTP/1.1 request that lacks a Host
    // header field and to any request that contains more than one Host field line or a Host
    // field with an invalid value.
    let host_ok = match hosts.as_slice() {
        [] => minor_version == 0,
        [one] => one.iter().all(|&b| b.is_ascii_graphic()),
        _ => false,
    };
    if !host_ok {
        return Err(Error::InvalidHost);
    }
    Ok(head)
}

/// True when the request line is well formed (RFC 9112 §3: method SP request-target SP
/// HTTP-version) and its version is an HTTP-version (§2.3: %s"HTTP" "/" DIGIT "." DIGIT, the
/// name case-sensitive), whatever its numbers.
fn names_an_http_version(head: &[u8]) -> bool {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut parts = line.split(|&b| b == b' ');
    let version = parts.nth(2).unwrap_or_default();
    parts.next().is_none()
        && matches!(version, [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
            if major.is_ascii_digit() && minor.is_ascii_digit())
}

/// Parses a complete response head (the client role). Returns the head and its length.
pub fn parse_response_head(buf: &[u8], limits: &Limits) -> Result<Option<(ResponseHead, usize)>, Error> {
    let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS_CAP];
    let mut res = httparse::Response::new(&mut storage[..limits.max_headers]);
    match res.parse(buf) {
        Ok(httparse::Status::Complete(len)) => {
            let (Some(status), Some(minor_version)) = (res.code, res.version) else {
                return Err(Error::MalformedHead);
            };
            Ok(Some((
                ResponseHead {
                    status,
                    reason: res.reason.unwrap_or("").to_string(),
                    minor_version,
                    headers: to_headers(res.headers),
                },
                len,
            )))
        }
        Ok(httparse::Status::Partial) if buf.len() > limits.max_head_bytes => Err(Error::HeadTooLarge),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(httparse::Error::TooManyHeaders) => Err(Error::TooManyHeaders),
        Err(httparse::Error::Version) => Err(Error::UnsupportedVersion),
        Err(_) => Err(Error::MalformedHead),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_all(input: &[u8], limits: &Limits) -> Result<Option<usize>, Error> {
        HeadScanner::new().scan(input, limits)
    }

    #[test]
    fn rfc9112_2_2_head_end_found_whole_and_byte_by_byte() {
        let limits = Limits::default();
        let req = b"GET / HTTP/1.1\r\nHost: a\r\n\r\nNEXT";
        assert_eq!(scan_all(req, &limits), Ok(Some(req.len() - 4)));
        let mut scanner = HeadScanner::new();
        let mut found = None;
        for end in 1..=req.len() {
            if let Some(n) = scanner.scan(&req[..end], &limits).unwrap() {
                found = Some((end, n));
                break;
            }
        }
        assert_eq!(found, Some((req.len() - 4, req.len() - 4)));
    }

    #[test]
    fn rfc9112_2_2_bare_lf_line_ends_recognized() {
        let req = b"GET / HTTP/1.1\nHost: a\n\n";
        assert_eq!(scan_all(req, &Limits::default()), Ok(Some(req.len())));
        assert!(parse_request_head(req, &Limits::default()).is_ok());
    }

    #[test]
    fn rfc9112_2_2_leading_empty_lines_skipped() {
        assert_eq!(leading_empty_lines(b"\r\n\r\nGET"), 4);
        assert_eq!(leading_empty_lines(b"GET"), 0);
    }

    #[test]
    fn rfc9112_3_target_too_long_is_414_before_head_completes() {
        let limits = Limits { max_target_bytes: 100, ..Limits::default() };
        let mut req = b"GET /".to_vec();
        req.extend(std::iter::repeat_n(b'a', 200));
        assert_eq!(scan_all(&req, &limits), Err(Error::TargetTooLong));
        assert_eq!(Error::TargetTooLong.status_hint(), 414);
        let mut whole = req.clone();
        whole.extend_from_slice(b" HTTP/1.1\r\nHost: a\r\n\r\n");
        let limits = Limits { max_target_bytes: 100, max_head_bytes: 4096, ..Limits::default() };
        assert_eq!(parse_request_head(&whole, &limits), Err(Error::TargetTooLong));
    }

    #[test]
    fn rfc9112_3_target_too_long_is_414_however_the_head_is_split() {
        // Found by the http_head fuzz target: a whole head whose request line passed the
        // target limit was found complete, while the same bytes fed in pieces gave 414.
        let limits = Limits { max_target_bytes: 100, ..Limits::default() };
        let mut req = b"GET /".to_vec();
        req.extend(std::iter::repeat_n(b'a', 200));
        req.extend_from_slice(b" HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(scan_all(&req, &limits), Err(Error::TargetTooLong));
        let mut scanner = HeadScanner::new();
        let byte_by_byte =
            (1..=req.len()).map(|end| scanner.scan(&req[..end], &limits)).find(|r| *r != Ok(None)).unwrap();
        assert_eq!(byte_by_byte, Err(Error::TargetTooLong));
        // A head that ends past max_head_bytes is 431 whole and in pieces.
        let limits = Limits { max_head_bytes: 256, ..Limits::default() };
        let mut big = b"GET / HTTP/1.1\r\nX: ".to_vec();
        big.extend(std::iter::repeat_n(b'a', 300));
        big.extend_from_slice(b"\r\n\r\n");
        assert_eq!(scan_all(&big, &limits), Err(Error::HeadTooLarge));
    }

    #[test]
    fn rfc6585_5_head_too_large_is_431() {
        let limits = Limits { max_head_bytes: 256, ..Limits::default() };
        let mut req = b"GET / HTTP/1.1\r\nX: ".to_vec();
        req.extend(std::iter::repeat_n(b'a', 300));
        assert_eq!(scan_all(&req, &limits), Err(Error::HeadTooLarge));
        assert_eq!(Error::HeadTooLarge.status_hint(), 431);
    }

    #[test]
    fn rfc6585_5_too_many_headers_is_431() {
        let limits = Limits { max_headers: 3, ..Limits::default() };
        let req = b"GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n";
        assert_eq!(parse_request_head(req, &limits), Err(Error::TooManyHeaders));
    }

    #[test]
    fn rfc9112_2_3_a_token_that_is_no_http_version_is_400() {
        for bad in ["HTTP/1", "http/1.1", "FOO/1.1", "b HTTP/1.1"] {
            let req = format!("GET /a {bad}\r\nHost: a\r\n\r\n");
            assert_eq!(
                parse_request_head(req.as_bytes(), &Limits::default()),
                Err(Error::MalformedHead),
                "{bad}"
            );
        }
    }

    #[test]
    fn rfc9110_15_6_6_other_versions_are_505() {
        let req = b"GET / HTTP/2.0\r\nHost: a\r\n\r\n";
        assert_eq!(parse_request_head(req, &Limits::default()), Err(Error::UnsupportedVersion));
        assert_eq!(Error::UnsupportedVersion.status_hint(), 505);
    }

    #[test]
    fn rfc9112_3_2_host_required_once_in_http11() {
        let limits = Limits::default();
        let missing = b"GET / HTTP/1.1\r\n\r\n";
        assert_eq!(parse_request_head(missing, &limits), Err(Error::InvalidHost));
        let twice = b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n";
        assert_eq!(parse_request_head(twice, &limits), Err(Error::InvalidHost));
        let http10 = b"GET / HTTP/1.0\r\n\r\n";
        assert!(parse_request_head(http10, &limits).is_ok());
    }

    #[test]
    fn malformed_request_line_is_400() {
        let limits = Limits::default();
        for bad in
            [&b"GET\r\n\r\n"[..], b"GET / HTTP/1.1 extra\r\nHost: a\r\n\r\n", b"G\x01T / HTTP/1.1\r\n\r\n"]
        {
            let err = parse_request_head(bad, &limits).unwrap_err();
            assert_eq!(err.status_hint(), 400, "{bad:?} gave {err:?}");
        }
    }

    #[test]
    fn rfc9110_5_6_1_token_lists_and_keep_alive() {
        let limits = Limits::default();
        let head = parse_request_head(
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\n\r\n",
            &limits,
        )
        .unwrap();
        assert!(head.has_token("connection", "upgrade"));
        assert!(head.keep_alive());
        let close =
            parse_request_head(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", &limits).unwrap();
        assert!(!close.keep_alive());
        let old = parse_request_head(b"GET / HTTP/1.0\r\n\r\n", &limits).unwrap();
        assert!(!old.keep_alive());
    }

    #[test]
    fn response_head_parses_and_reports_partial() {
        let limits = Limits::default();
        let res = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\nxx";
        let (head, len) = parse_response_head(res, &limits).unwrap().unwrap();
        assert_eq!(head.status, 101);
        assert_eq!(len, res.len() - 2);
        assert_eq!(head.header("upgrade"), Some(&b"websocket"[..]));
        assert_eq!(parse_response_head(&res[..10], &limits), Ok(None));
    }
}
