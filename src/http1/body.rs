//! Message body length and reading, both ways.
//!
//! Implements: [RFC 9112 §6.1](https://www.rfc-editor.org/rfc/rfc9112#section-6.1) and
//! [§6.3](https://www.rfc-editor.org/rfc/rfc9112#section-6.3) (message body length). For a
//! request ([`BodyReader`], the server's side), with the request-smuggling defences: both
//! Content-Length and Transfer-Encoding, disagreeing Content-Lengths, and a Transfer-Encoding
//! whose final coding is not chunked are refused. For a response ([`ResponseBody`], shared by
//! the clients and the load generator): no body after `HEAD`, 1xx, 204 and 304 (item 1),
//! chunked as the final coding (item 3), an agreeing Content-Length (items 5 and 6), otherwise
//! until the server closes (item 8).
//!
//! Does not: decode transfer codings other than chunked (501), or keep trailers.

use super::chunked::{ChunkedDecoder, ChunkedError, ChunkedLimits};
use super::head::{Headers, RequestHead, ResponseHead};
use super::{Error, Limits};

/// How a request body is delimited.
#[derive(Debug)]
pub enum BodyReader {
    /// No body (neither Content-Length nor Transfer-Encoding, or a length of zero).
    Empty,
    /// `remaining` more bytes by Content-Length (RFC 9112 §6.3 item 6).
    Length {
        /// Bytes still to read.
        remaining: u64,
    },
    /// A chunked body (RFC 9112 §7.1).
    Chunked(ChunkedDecoder),
}

/// What one call to [`BodyReader::read`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyProgress {
    /// Input bytes used; the rest belong to the next request (pipelining).
    pub consumed: usize,
    /// True once the whole body has been read.
    pub done: bool,
}

impl BodyReader {
    /// Decides how the body of `head` is delimited, refusing ambiguous framing and bodies
    /// whose declared length is over [`Limits::max_body_bytes`].
    pub fn for_request(head: &RequestHead, limits: &Limits) -> Result<BodyReader, Error> {
        let te: Vec<&[u8]> = fields(head, "transfer-encoding");
        let cl: Vec<&[u8]> = fields(head, "content-length");
        if !te.is_empty() {
            // RFC 9112 §6.1: a server MAY reject a request that contains both Content-Length
            // and Transfer-Encoding; such a message might indicate an attempt to perform
            // request smuggling. pushwire always rejects it.
            if !cl.is_empty() {
                return Err(Error::ContentLengthWithTransferEncoding);
            }
            let codings: Vec<&[u8]> = te
                .iter()
                .flat_map(|v| v.split(|&b| b == b','))
                .map(|c| c.trim_ascii())
                .filter(|c| !c.is_empty())
                .collect();
            let chunked = |c: &&[u8]| c.eq_ignore_ascii_case(b"chunked");
            return match codings.as_slice() {
                [only] if chunked(only) => Ok(BodyReader::Chunked(ChunkedDecoder::new(limits.chunked()))),
                // RFC 9112 §6.3 item 4: if chunked is not the final coding of a request, the
                // server MUST respond with 400 and then close the connection.
                [.., last] if !chunked(last) => Err(Error::ChunkedNotFinal),
                [] => Err(Error::ChunkedNotFinal),
                // RFC 9112 §6.1: a server that receives a transfer coding it does not
                // understand SHOULD respond with 501 (chunked applied twice is also refused:
                // a sender MUST NOT apply chunked more than once).
                _ => Err(Error::UnsupportedTransferCoding),
            };
        }
        if cl.is_empty() {
            return Ok(BodyReader::Empty);
        }
        // RFC 9112 §6.3 item 5: a Content-Length with a list of differing values or an invalid
        // value is an unrecoverable error; identical repeated values may be accepted
        // (RFC 9110 §8.6).
        let mut length: Option<u64> = None;
        for value in cl.iter().flat_map(|v| v.split(|&b| b == b',')) {
            let value = value.trim_ascii();
            if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
                return Err(Error::InvalidContentLength);
            }
            let n = value.iter().fold(0u64, |n, &d| n * 10 + u64::from(d - b'0'));
            if length.is_some_and(|l| l != n) {
                return Err(Error::InvalidContentLength);
            }
            length = Some(n);
        }
        match length {
            Some(0) | None => Ok(BodyReader::Empty),
            Some(n) if n > limits.max_body_bytes => Err(Error::BodyTooLarge),
            Some(n) => Ok(BodyReader::Length { remaining: n }),
        }
    }

    /// True when a body follows the head.
    pub fn expects_body(&self) -> bool {
        !matches!(self, BodyReader::Empty)
    }

    /// Reads body bytes from `input` into `body`.
    pub fn read(&mut self, input: &[u8], body: &mut Vec<u8>) -> Result<BodyProgress, Error> {
        match self {
            BodyReader::Empty => Ok(BodyProgress { consumed: 0, done: true }),
            BodyReader::Length { remaining } => {
                let take = usize::try_from(*remaining).unwrap_or(usize::MAX).min(input.len());
                body.extend_from_slice(&input[..take]);
                *remaining -= take as u64;
                Ok(BodyProgress { consumed: take, done: *remaining == 0 })
            }
            BodyReader::Chunked(decoder) => {
                let d = decoder.decode(input, body).map_err(Error::Chunked)?;
                Ok(BodyProgress { consumed: d.consumed, done: d.done })
            }
        }
    }
}

/// How the rest of a response body is delimited (RFC 9112 §6.3), and reading it from the bytes
/// that follow the head.
#[derive(Debug)]
pub enum ResponseBody {
    /// No (more) body: read whole.
    Done,
    /// `remaining` more bytes by Content-Length.
    Length {
        /// Bytes still to come.
        remaining: u64,
    },
    /// A chunked body (§7.1).
    Chunked(ChunkedDecoder),
    /// The body ends when the server closes the connection.
    UntilClose {
        /// Body bytes received so far.
        received: u64,
        /// Most body bytes accepted.
        limit: u64,
    },
}

impl ResponseBody {
    /// How the body of `head` is delimited; `head_request` for an answer to `HEAD`. `limit`
    /// bounds the body whatever its framing (give `u64::MAX` for a stream bounded per message
    /// by its reader); a declared length over it is refused before anything is read.
    pub fn for_response(head: &ResponseHead, head_request: bool, limit: u64) -> Result<ResponseBody, Error> {
        // §6.3 item 1: no body after HEAD, 1xx, 204 and 304.
        if head_request || (100..200).contains(&head.status) || head.status == 204 || head.status == 304 {
            return Ok(ResponseBody::Done);
        }
        if let Some(te) = head.header("transfer-encoding") {
            let last = te.split(|&b| b == b',').next_back().unwrap_or_default().trim_ascii();
            // §6.3 item 3: chunked as the final coding delimits the body; otherwise the body
            // runs until the server closes the connection.
            if last.eq_ignore_ascii_case(b"chunked") {
                let limits = ChunkedLimits {
                    max_body_bytes: limit,
                    max_chunk_line_bytes: 1024,
                    max_trailer_bytes: 8 * 1024,
                };
                return Ok(ResponseBody::Chunked(ChunkedDecoder::new(limits)));
            }
            return Ok(ResponseBody::UntilClose { received: 0, limit });
        }
        let lengths = fields(head, "content-length");
        if let Some(first) = lengths.first() {
            // §6.3 item 5: differing or invalid Content-Length values make the response
            // invalid; the client MUST discard it and close the connection.
            let parse = |v: &[u8]| std::str::from_utf8(v).ok().and_then(|t| t.parse::<u64>().ok());
            let length = parse(first).ok_or(Error::InvalidContentLength)?;
            if lengths.iter().any(|v| parse(v) != Some(length)) {
                return Err(Error::InvalidContentLength);
            }
            if length > limit {
                return Err(Error::BodyTooLarge);
            }
            return Ok(if length == 0 {
                ResponseBody::Done
            } else {
                ResponseBody::Length { remaining: length }
            });
        }
        Ok(ResponseBody::UntilClose { received: 0, limit })
    }

    /// True once the whole body was read.
    pub fn is_done(&self) -> bool {
        matches!(self, ResponseBody::Done)
    }

    /// Reads body bytes from `input` into `out`; `consumed` may stop short of `input` only
    /// once the body is done (what follows is not this body's).
    pub fn read(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<BodyProgress, Error> {
        let progress = match self {
            ResponseBody::Done => BodyProgress { consumed: 0, done: true },
            ResponseBody::Length { remaining } => {
                let take = usize::try_from(*remaining).unwrap_or(usize::MAX).min(input.len());
                out.extend_from_slice(&input[..take]);
                *remaining -= take as u64;
                BodyProgress { consumed: take, done: *remaining == 0 }
            }
            ResponseBody::UntilClose { received, limit } => {
                *received += input.len() as u64;
                if *received > *limit {
                    return Err(Error::BodyTooLarge);
                }
                out.extend_from_slice(input);
                BodyProgress { consumed: input.len(), done: false }
            }
            ResponseBody::Chunked(decoder) => {
                let d = decoder.decode(input, out).map_err(|e| match e {
                    ChunkedError::BodyTooLarge => Error::BodyTooLarge,
                    e => Error::Chunked(e),
                })?;
                BodyProgress { consumed: d.consumed, done: d.done }
            }
        };
        if progress.done {
            *self = ResponseBody::Done;
        }
        Ok(progress)
    }

    /// The server closed the connection: the end of a close-delimited body, a truncated one
    /// otherwise (false).
    pub fn handle_eof(&mut self) -> bool {
        match self {
            ResponseBody::Done => true,
            ResponseBody::UntilClose { .. } => {
                *self = ResponseBody::Done;
                true
            }
            ResponseBody::Length { .. } | ResponseBody::Chunked(_) => false,
        }
    }
}

fn fields<'a>(head: &'a impl Headers, name: &str) -> Vec<&'a [u8]> {
    head.fields().iter().filter(|h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value.as_slice()).collect()
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::http1::head::parse_request_head;

    fn reader(head: &str) -> Result<BodyReader, Error> {
        let limits = Limits::default();
        let head = parse_request_head(head.as_bytes(), &limits).unwrap();
        BodyReader::for_request(&head, &limits)
    }

    #[test]
    fn rfc9112_6_1_content_length_with_transfer_encoding_is_400() {
        let err =
            reader("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n")
                .unwrap_err();
        assert_eq!(err, Error::ContentLengthWithTransferEncoding);
        assert_eq!(err.status_hint(), 400);
    }

    #[test]
    fn rfc9112_6_3_conflicting_content_lengths_are_400() {
        for h in [
            "Content-Length: 3\r\nContent-Length: 4",
            "Content-Length: 3, 4",
            "Content-Length: -1",
            "Content-Length: 0x10",
            "Content-Length: ",
        ] {
            let err = reader(&format!("POST / HTTP/1.1\r\nHost: a\r\n{h}\r\n\r\n")).unwrap_err();
            assert_eq!(err, Error::InvalidContentLength, "{h}");
        }
        let same = reader("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 3\r\n\r\n").unwrap();
        assert!(matches!(same, BodyReader::Length { remaining: 3 }));
    }

    #[test]
    fn rfc9112_6_3_chunked_not_final_is_400_unknown_coding_is_501() {
        let err =
            reader("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n").unwrap_err();
        assert_eq!(err.status_hint(), 400);
        let err =
            reader("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n").unwrap_err();
        assert_eq!(err.status_hint(), 501);
        let ok = reader("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n").unwrap();
        assert!(matches!(ok, BodyReader::Chunked(_)));
    }

    #[test]
    fn rfc9110_15_5_14_declared_length_over_limit_is_413_before_reading() {
        let err = reader("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999\r\n\r\n").unwrap_err();
        assert_eq!(err.status_hint(), 413);
    }

    #[test]
    fn content_length_body_leaves_pipelined_bytes() {
        let mut r = reader("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n").unwrap();
        let mut body = Vec::new();
        let p = r.read(b"hel", &mut body).unwrap();
        assert_eq!(p, BodyProgress { consumed: 3, done: false });
        let p = r.read(b"loGET /", &mut body).unwrap();
        assert_eq!(p, BodyProgress { consumed: 2, done: true });
        assert_eq!(body, b"hello");
    }
}
