//! HTTP/1.1 message syntax for the server and the clients: request heads, bodies, responses.
//!
//! Implements:
//! - finding the end of a head incrementally, then parsing it once with `httparse`
//!   ([RFC 9112 §2](https://www.rfc-editor.org/rfc/rfc9112#section-2)), so a head that arrives
//!   in many small reads costs linear, not quadratic, time ([`head`]);
//! - message body length ([RFC 9112 §6](https://www.rfc-editor.org/rfc/rfc9112#section-6)),
//!   including the smuggling rules for Content-Length and Transfer-Encoding ([`body`]);
//! - the chunked transfer coding in both directions
//!   ([RFC 9112 §7.1](https://www.rfc-editor.org/rfc/rfc9112#section-7.1), [`chunked`]);
//! - request-target splitting and query decoding
//!   ([RFC 3986 §2.1, §3.4](https://www.rfc-editor.org/rfc/rfc3986#section-3.4), [`target`]);
//! - response heads ([RFC 9112 §4](https://www.rfc-editor.org/rfc/rfc9112#section-4), [`response`]).
//!
//! Does not: touch sockets or clocks (the connection layer owns deadlines), support transfer
//! codings other than chunked (answered with 501), HTTP/2, or `Date` header generation (see the
//! README's list of relaxed rules).

pub mod body;
pub mod chunked;
pub mod head;
pub mod response;
pub mod target;

use std::fmt;
use std::time::Duration;

/// Limits that keep one HTTP peer from exhausting the server
/// ([RFC 9112 §2.3](https://www.rfc-editor.org/rfc/rfc9112#section-2.3), RFC 9110 §15.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest request head (request line and fields), in bytes; larger gets 431. Default 16 KiB.
    pub max_head_bytes: usize,
    /// Longest request-target, in bytes; longer gets 414. Default 8 KiB.
    pub max_target_bytes: usize,
    /// Most header fields in one head; more gets 431. Default 64, at most [`MAX_HEADERS_CAP`].
    pub max_headers: usize,
    /// Largest request body (the publish limit), in bytes; larger gets 413. Default 64 KiB.
    pub max_body_bytes: u64,
    /// Longest chunk-size line including extensions, in bytes; longer gets 400. Default 1 KiB.
    pub max_chunk_line_bytes: usize,
    /// Largest trailer section of a chunked body, in bytes; larger gets an error. Default 8 KiB.
    pub max_trailer_bytes: usize,
    /// Time allowed from a request's first byte to the end of its head and body; a slower
    /// sender gets 408 and the connection closes (slowloris). Default 10 s.
    pub request_timeout: Duration,
    /// How long a keep-alive connection may sit idle between requests. Default 60 s.
    pub keep_alive_timeout: Duration,
    /// After the server's last byte, how long a closing connection keeps reading and
    /// discarding input before it is dropped, so the peer sees the response rather than a
    /// reset (RFC 9112 §9.6). Default 2 s.
    pub close_linger: Duration,
}

/// Upper bound for [`Limits::max_headers`]: the parser's field array lives on the stack.
pub const MAX_HEADERS_CAP: usize = 256;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_head_bytes: 16 * 1024,
            max_target_bytes: 8 * 1024,
            max_headers: 64,
            max_body_bytes: 64 * 1024,
            max_chunk_line_bytes: 1024,
            max_trailer_bytes: 8 * 1024,
            request_timeout: Duration::from_secs(10),
            keep_alive_timeout: Duration::from_secs(60),
            close_linger: Duration::from_secs(2),
        }
    }
}

impl Limits {
    /// Checks that the limits make sense together; called once at startup.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_head_bytes < 256 {
            return Err("max head bytes must be at least 256".into());
        }
        if self.max_target_bytes == 0 || self.max_target_bytes > self.max_head_bytes {
            return Err("max target bytes must be between 1 and the max head bytes".into());
        }
        if self.max_headers == 0 || self.max_headers > MAX_HEADERS_CAP {
            return Err(format!("max headers must be between 1 and {MAX_HEADERS_CAP}"));
        }
        if self.max_chunk_line_bytes < 8 {
            return Err("max chunk line bytes must be at least 8".into());
        }
        if self.request_timeout.is_zero() || self.keep_alive_timeout.is_zero() {
            return Err("HTTP timeouts must be positive".into());
        }
        Ok(())
    }

    /// The chunked decoder's share of these limits.
    pub fn chunked(&self) -> chunked::ChunkedLimits {
        chunked::ChunkedLimits {
            max_body_bytes: self.max_body_bytes,
            max_chunk_line_bytes: self.max_chunk_line_bytes,
            max_trailer_bytes: self.max_trailer_bytes,
        }
    }
}

/// A request the server cannot serve, named after the rule it breaks; each knows its status.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The head does not follow the message syntax (RFC 9112 §2.2, §3, §5).
    MalformedHead,
    /// The request-target is longer than [`Limits::max_target_bytes`] (RFC 9112 §3).
    TargetTooLong,
    /// The head is larger than [`Limits::max_head_bytes`] (RFC 6585 §5).
    HeadTooLarge,
    /// More header fields than [`Limits::max_headers`] (RFC 6585 §5).
    TooManyHeaders,
    /// A version other than HTTP/1.0 or HTTP/1.1 (RFC 9110 §15.6.6).
    UnsupportedVersion,
    /// An HTTP/1.1 request without exactly one valid Host field (RFC 9112 §3.2).
    InvalidHost,
    /// Both Content-Length and Transfer-Encoding (RFC 9112 §6.1, request smuggling).
    ContentLengthWithTransferEncoding,
    /// Content-Length values that disagree or are not a number (RFC 9112 §6.3 item 5).
    InvalidContentLength,
    /// A transfer coding other than a single final `chunked` (RFC 9112 §6.1, §7).
    UnsupportedTransferCoding,
    /// `chunked` is not the final coding, so the body length is unknown (RFC 9112 §6.3 item 4).
    ChunkedNotFinal,
    /// The body is larger than [`Limits::max_body_bytes`] (RFC 9110 §15.5.14).
    BodyTooLarge,
    /// The chunked body is malformed (RFC 9112 §7.1).
    Chunked(chunked::ChunkedError),
    /// The request did not arrive within [`Limits::request_timeout`] (RFC 9110 §15.5.9).
    RequestTimeout,
}

impl Error {
    /// The status code that answers this error.
    pub fn status_hint(&self) -> u16 {
        match self {
            Error::MalformedHead
            | Error::InvalidHost
            | Error::ContentLengthWithTransferEncoding
            | Error::InvalidContentLength
            | Error::ChunkedNotFinal => 400,
            Error::RequestTimeout => 408,
            Error::BodyTooLarge => 413,
            Error::TargetTooLong => 414,
            Error::HeadTooLarge | Error::TooManyHeaders => 431,
            Error::UnsupportedTransferCoding => 501,
            Error::UnsupportedVersion => 505,
            Error::Chunked(e) => e.status_hint(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            Error::MalformedHead => "malformed request head",
            Error::TargetTooLong => "request-target too long",
            Error::HeadTooLarge => "request head too large",
            Error::TooManyHeaders => "too many header fields",
            Error::UnsupportedVersion => "HTTP version not supported",
            Error::InvalidHost => "missing, repeated or invalid Host",
            Error::ContentLengthWithTransferEncoding => "both Content-Length and Transfer-Encoding",
            Error::InvalidContentLength => "invalid or conflicting Content-Length",
            Error::UnsupportedTransferCoding => "unsupported transfer coding",
            Error::ChunkedNotFinal => "chunked is not the final transfer coding",
            Error::BodyTooLarge => "request body too large",
            Error::Chunked(e) => return write!(f, "bad chunked body: {e}"),
            Error::RequestTimeout => "request not received in time",
        };
        f.write_str(text)
    }
}

impl std::error::Error for Error {}
