//! Request body length and reading.
//!
//! Implements: [RFC 9112 §6.1](https://www.rfc-editor.org/rfc/rfc9112#section-6.1) and
//! [§6.3](https://www.rfc-editor.org/rfc/rfc9112#section-6.3) (message body length), with the
//! request-smuggling defences: both Content-Length and Transfer-Encoding, disagreeing
//! Content-Lengths, and a Transfer-Encoding whose final coding is not chunked are refused.
//!
//! Does not: decode transfer codings other than chunked (501), or keep trailers.

use super::chunked::ChunkedDecoder;
use super::head::{Headers, RequestHead};
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

fn fields<'a>(head: &'a RequestHead, name: &str) -> Vec<&'a [u8]> {
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
