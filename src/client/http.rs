//! A minimal blocking HTTP/1.1 client: requests and responses on one `TcpStream` (`http://`) or
//! TLS over it (`https://`, [`super::tls`]), shared by the subscriber and publisher drivers.
//!
//! Implements: the request line and `Host`
//! ([RFC 9112 §3](https://www.rfc-editor.org/rfc/rfc9112#section-3), §3.2), the response head
//! through [`crate::http1::head::parse_response_head`] (§4), the response body length of
//! [§6.3](https://www.rfc-editor.org/rfc/rfc9112#section-6.3) (none after `HEAD`, 1xx, 204 and
//! 304; chunked when it is the final coding, decoded by [`crate::http1::chunked::ChunkedDecoder`] (§7.1), all read by [`Body`] (`http1::body::ResponseBody`, shared with the load generator); else
//! Content-Length; else delimited by the close), persistent connections (§9.3: reused only when
//! the response allows it and its body was read whole), every body bounded by a byte limit and
//! every connect, read and write bounded by a timeout.
//!
//! Does not: follow redirects, use proxies, send `Expect: 100-continue`, keep
//! trailers, decode content codings, or pipeline requests.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::time::{Duration, Instant};

use crate::http1::head::{parse_response_head, HeadScanner, Headers, ResponseHead};

use super::socket::io_error;
use super::tls::{self, Stream, TlsOptions};
use super::{Error, Url};

/// Bytes asked of the socket per read.
const READ_CHUNK_BYTES: usize = 16 * 1024;

/// Timeouts, size bounds and TLS trust of one HTTP connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpOptions {
    /// Deadline for the TCP connect.
    pub connect_timeout: Duration,
    /// Longest wait for any one read (the server's silence); a long poll's read timeout must
    /// exceed its `wait`.
    pub read_timeout: Duration,
    /// Longest any one write may block.
    pub write_timeout: Duration,
    /// Largest response body read whole by [`HttpConn::request`], in bytes; larger fails with
    /// [`Error::InvalidResponse`] (`BodyTooLarge`) before it is read.
    pub max_body_bytes: u64,
    /// What an `https://` connection trusts. Default: Mozilla's roots only.
    pub tls: TlsOptions,
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(10),
            max_body_bytes: 16 * 1024 * 1024,
            tls: TlsOptions::default(),
        }
    }
}

/// How the rest of a response body is delimited (RFC 9112 §6.3): the reader shared with the
/// load generator.
pub use crate::http1::body::ResponseBody as Body;

/// A complete response: its head and its whole body.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status line and fields.
    pub head: ResponseHead,
    /// The body, dechunked.
    pub body: Vec<u8>,
}

impl Response {
    /// The body as text for an error message, at most 200 characters: the reason of a JSON
    /// error body (`{"error":"…"}`, what pushwire answers), else the body's first line.
    pub fn body_summary(&self) -> String {
        #[derive(serde::Deserialize)]
        struct ErrorBody {
            error: String,
        }
        let text = match serde_json::from_slice::<ErrorBody>(&self.body) {
            Ok(body) => body.error,
            Err(_) => String::from_utf8_lossy(&self.body).into_owned(),
        };
        let line = text.lines().next().unwrap_or("").trim();
        line.chars().take(200).collect()
    }
}

/// One HTTP/1.1 connection, client role. Next: [`HttpConn::request`], or
/// [`HttpConn::send_request`] then [`HttpConn::read_head`] then [`HttpConn::read_body`] for a
/// body that is read as it arrives (event streams, chunked streams).
#[derive(Debug)]
pub struct HttpConn {
    stream: Stream,
    host: String,
    /// Bytes received and not yet consumed.
    buf: Vec<u8>,
    options: HttpOptions,
    /// The socket's read timeout, to change it only when needed.
    socket_read_timeout: Duration,
    /// The last response allows another request on this connection and was read whole.
    reusable: bool,
}

/// True when `value` can go in a request head without breaking it (no CR, LF, NUL or other
/// control characters except tab).
fn is_field_safe(value: &str) -> bool {
    value.bytes().all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}

impl HttpConn {
    /// Connects to the server of `url` (`http://` and `ws://` name the same server, and
    /// `https://` and `wss://` the same one over TLS) within [`HttpOptions::connect_timeout`],
    /// TLS handshake included.
    pub fn connect(url: &Url, options: &HttpOptions) -> Result<HttpConn, Error> {
        let deadline = Instant::now() + options.connect_timeout;
        let stream = tls::connect(url, &options.tls, deadline)?;
        stream.tcp().set_nodelay(true)?;
        stream.tcp().set_write_timeout(Some(options.write_timeout))?;
        stream.tcp().set_read_timeout(Some(options.read_timeout))?;
        Ok(HttpConn {
            stream,
            host: url.host_header(),
            buf: Vec::new(),
            options: options.clone(),
            socket_read_timeout: options.read_timeout,
            reusable: false,
        })
    }

    /// True when the connection may carry another request: the last response was read whole,
    /// allowed persistence (§9.3), and the server has not closed the idle connection since.
    pub fn is_reusable(&mut self) -> bool {
        if !self.reusable || !self.buf.is_empty() {
            return false;
        }
        // A read without blocking: EOF or an error means the server closed it while idle;
        // nothing to read (WouldBlock) means it is still open.
        self.stream.is_idle_open()
    }

    /// Changes the timeout of each read (e.g. above a long poll's wait).
    pub fn set_read_timeout(&mut self, timeout: Duration) {
        self.options.read_timeout = timeout;
    }

    /// Writes a request: `method target HTTP/1.1`, `Host`, `fields`, `Content-Length` when a
    /// body is given (or the method is POST), and the body. Field names and values with CR, LF
    /// or other control characters are refused with [`Error::InvalidOptions`] before anything
    /// is sent.
    pub fn send_request(
        &mut self,
        method: &str,
        target: &str,
        fields: &[(&str, &str)],
        body: &[u8],
    ) -> Result<(), Error> {
        self.reusable = false;
        let mut head = format!("{method} {target} HTTP/1.1\r\nHost: {}\r\n", self.host);
        if !target.bytes().all(|b| b.is_ascii_graphic()) || !method.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(Error::InvalidOptions(format!("cannot send the request line {method} {target:?}")));
        }
        for (name, value) in fields {
            // RFC 9110 §5.5: field values never contain CR, LF or NUL; a name is a token.
            if name.is_empty()
                || !name.bytes().all(|b| b.is_ascii_graphic() && b != b':')
                || !is_field_safe(value)
            {
                return Err(Error::InvalidOptions(format!("the header field {name:?} cannot be sent")));
            }
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        if !body.is_empty() || method == "POST" {
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        head.push_str("\r\n");
        let mut request = head.into_bytes();
        request.extend_from_slice(body);
        self.stream.write_all(&request).map_err(|e| io_error(e, "the server to accept the request"))
    }

    /// Reads a response head, skipping interim 1xx responses other than 101 (RFC 9110 §15.2).
    pub fn read_head(&mut self) -> Result<ResponseHead, Error> {
        let limits = crate::http1::Limits::default();
        // Bounded: each interim response consumes at least its head, and each read at least
        // one byte within the read timeout; the scanner bounds the head size.
        loop {
            let mut scanner = HeadScanner::new();
            let end = loop {
                let found = scanner.scan(&self.buf, &limits).map_err(|e| match e {
                    crate::http1::Error::TargetTooLong => {
                        Error::InvalidResponse(crate::http1::Error::HeadTooLarge)
                    }
                    e => Error::InvalidResponse(e),
                })?;
                if let Some(end) = found {
                    break end;
                }
                if self.fill("a response head")? == 0 {
                    return Err(Error::Io(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the server closed the connection before answering",
                    )));
                }
            };
            let (head, len) = parse_response_head(&self.buf[..end], &limits)
                .map_err(Error::InvalidResponse)?
                .ok_or(Error::InvalidResponse(crate::http1::Error::MalformedHead))?;
            self.buf.drain(..len);
            if (100..200).contains(&head.status) && head.status != 101 {
                continue;
            }
            return Ok(head);
        }
    }

    /// How the body of `head` is delimited (RFC 9112 §6.3, [`Body::for_response`]);
    /// `head_request` for an answer to `HEAD`. `limit` bounds a Content-Length or
    /// close-delimited body; a chunked body is bounded by it too (a stream that never ends
    /// should be given `u64::MAX` and be bounded per message by its reader).
    pub fn body_framing(&self, head: &ResponseHead, head_request: bool, limit: u64) -> Result<Body, Error> {
        Body::for_response(head, head_request, limit).map_err(Error::InvalidResponse)
    }

    /// Reads the next piece of the body into `out`. Returns `false` once the body is complete
    /// (nothing appended), `true` while it may continue. Errors: a read timeout, an EOF inside
    /// a Content-Length or chunked body, malformed chunking, a body over its limit.
    pub fn read_body(&mut self, body: &mut Body, out: &mut Vec<u8>) -> Result<bool, Error> {
        // Bounded: each turn consumes buffered bytes or reads at least one within the timeout.
        loop {
            if body.is_done() {
                return Ok(false);
            }
            if self.buf.is_empty() && self.fill("the response body")? == 0 {
                if body.handle_eof() {
                    return Ok(false);
                }
                return Err(Error::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the server closed the connection in the middle of the response body",
                )));
            }
            let before = out.len();
            let progress = body.read(&self.buf, out).map_err(Error::InvalidResponse)?;
            self.buf.drain(..progress.consumed);
            if out.len() > before {
                return Ok(true);
            }
        }
    }

    /// Sends a request and reads its whole response, bounded by [`HttpOptions::max_body_bytes`].
    /// The connection is reusable afterwards when the response allows it
    /// ([`HttpConn::is_reusable`]).
    pub fn request(
        &mut self,
        method: &str,
        target: &str,
        fields: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Response, Error> {
        self.send_request(method, target, fields, body)?;
        let head = self.read_head()?;
        let mut framing = self.body_framing(&head, method == "HEAD", self.options.max_body_bytes)?;
        let until_close = matches!(framing, Body::UntilClose { .. });
        let mut out = Vec::new();
        while self.read_body(&mut framing, &mut out)? {}
        // RFC 9112 §9.3: HTTP/1.1 persists unless `Connection: close`; HTTP/1.0 needs
        // `keep-alive`. A close-delimited body ends the connection anyway.
        let persistent = if head.has_token("connection", "close") {
            false
        } else {
            head.minor_version >= 1 || head.has_token("connection", "keep-alive")
        };
        self.reusable = persistent && !until_close && head.status != 101;
        Ok(Response { head, body: out })
    }

    /// Closes the connection (both directions; TLS `close_notify` first when over TLS).
    pub fn shutdown(&mut self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }

    /// One read into `buf`; 0 means EOF.
    fn fill(&mut self, waiting_for: &'static str) -> Result<usize, Error> {
        if self.socket_read_timeout != self.options.read_timeout {
            self.stream.tcp().set_read_timeout(Some(self.options.read_timeout))?;
            self.socket_read_timeout = self.options.read_timeout;
        }
        let mut chunk = [0u8; READ_CHUNK_BYTES];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io_error(e, waiting_for)),
            }
        }
    }
}

/// Percent-encodes a query value (RFC 3986 §2.1): everything but unreserved characters.
pub fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `resource_name` with the query parameters named in `drop` removed and `add` appended
/// (values percent-encoded).
pub fn with_query(resource_name: &str, drop: &[&str], add: &[(&str, String)]) -> String {
    let (path, query) = resource_name.split_once('?').unwrap_or((resource_name, ""));
    let mut pairs: Vec<String> = query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .filter(|pair| !drop.contains(&pair.split_once('=').map_or(*pair, |(k, _)| k)))
        .map(str::to_string)
        .collect();
    pairs.extend(add.iter().map(|(k, v)| format!("{k}={}", percent_encode(v))));
    if pairs.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{}", pairs.join("&"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// Serves `response` to one connection and returns the connection's URL.
    fn one_shot(response: &'static [u8]) -> Url {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut req = [0u8; 1024];
            let _ = s.read(&mut req);
            let _ = s.write_all(response);
        });
        Url::parse(&format!("http://127.0.0.1:{port}/x")).unwrap()
    }

    fn get(response: &'static [u8]) -> Result<Response, Error> {
        let url = one_shot(response);
        let options =
            HttpOptions { read_timeout: Duration::from_secs(5), max_body_bytes: 16, ..Default::default() };
        HttpConn::connect(&url, &options)?.request("GET", "/x", &[], b"")
    }

    #[test]
    fn rfc9112_6_3_content_length_chunked_and_close_delimited_bodies() {
        let r = get(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloEXTRA").unwrap();
        assert_eq!(r.body, b"hello");
        let r = get(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhe\r\n3\r\nllo\r\n0\r\n\r\n")
            .unwrap();
        assert_eq!(r.body, b"hello");
        let r = get(b"HTTP/1.0 200 OK\r\n\r\nhello").unwrap();
        assert_eq!(r.body, b"hello");
        let r = get(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n").unwrap();
        assert_eq!((r.head.status, r.body.len()), (204, 0));
    }

    #[test]
    fn error_bodies_are_summarized_by_their_reason() {
        let summary = |body: &str| {
            let head =
                ResponseHead { status: 401, reason: String::new(), minor_version: 1, headers: Vec::new() };
            Response { head, body: body.as_bytes().to_vec() }.body_summary()
        };
        assert_eq!(summary(r#"{"error":"a bearer token is required"}"#), "a bearer token is required");
        assert_eq!(summary("not ready: draining\nmore"), "not ready: draining");
        assert_eq!(summary(r#"{"error":1}"#), r#"{"error":1}"#);
        assert_eq!(summary(&"x".repeat(300)).len(), 200);
    }

    #[test]
    fn rfc9112_6_3_bodies_over_the_limit_and_bad_lengths_are_refused() {
        let too_long = get(b"HTTP/1.1 200 OK\r\nContent-Length: 17\r\n\r\n").unwrap_err();
        assert!(too_long.to_string().contains("too large"), "{too_long}");
        let close = get(b"HTTP/1.0 200 OK\r\n\r\n0123456789abcdefXYZ").unwrap_err();
        assert!(close.to_string().contains("too large"), "{close}");
        let chunked = get(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n11\r\n").unwrap_err();
        assert!(chunked.to_string().contains("too large"), "{chunked}");
        let conflicting =
            get(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab").unwrap_err();
        assert!(conflicting.to_string().contains("Content-Length"), "{conflicting}");
        let truncated = get(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc").unwrap_err();
        assert!(matches!(truncated, Error::Io(_)), "{truncated}");
    }

    #[test]
    fn read_timeout_is_a_timeout_error() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = Url::parse(&format!("http://{}/", listener.local_addr().unwrap())).unwrap();
        let options = HttpOptions { read_timeout: Duration::from_millis(50), ..Default::default() };
        let err = HttpConn::connect(&url, &options).unwrap().request("GET", "/", &[], b"").unwrap_err();
        assert!(matches!(err, Error::Timeout { .. }), "{err}");
        drop(listener);
    }

    #[test]
    fn request_fields_with_line_breaks_are_refused() {
        let url = one_shot(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
        let mut conn = HttpConn::connect(&url, &HttpOptions::default()).unwrap();
        let err = conn.send_request("GET", "/", &[("Authorization", "Bearer a\r\nX: y")], b"").unwrap_err();
        assert!(matches!(err, Error::InvalidOptions(_)), "{err}");
    }

    #[test]
    fn rfc3986_query_rebuilt_with_encoded_values() {
        assert_eq!(with_query("/c?since=x&a=1", &["since"], &[("mode", "sse".into())]), "/c?a=1&mode=sse");
        assert_eq!(with_query("/c", &[], &[("since", "00:1".into())]), "/c?since=00%3A1");
        assert_eq!(with_query("/c?mode=ws", &["mode"], &[]), "/c");
    }
}
