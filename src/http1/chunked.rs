//! The chunked transfer coding of HTTP/1.1, decoded incrementally in O(1) memory and encoded
//! one chunk at a time.
//!
//! Implements:
//! - [RFC 9112 §7.1](https://www.rfc-editor.org/rfc/rfc9112#section-7.1) chunked transfer
//!   coding: `chunk-size` (hex, overflow-checked), `chunk-data`, `last-chunk`, both directions.
//! - [§7.1.1](https://www.rfc-editor.org/rfc/rfc9112#section-7.1.1) chunk extensions: skipped,
//!   with BWS before `;`, bounded by [`ChunkedLimits::max_chunk_line_bytes`].
//! - [§7.1.2](https://www.rfc-editor.org/rfc/rfc9112#section-7.1.2) trailer section: field
//!   lines are checked byte by byte and discarded, bounded by
//!   [`ChunkedLimits::max_trailer_bytes`].
//! - [§7.1.3](https://www.rfc-editor.org/rfc/rfc9112#section-7.1.3) decoding chunked, with the
//!   body bounded by [`ChunkedLimits::max_body_bytes`] before any data is appended.
//!
//! Does not:
//! - accept a bare LF as a line terminator: [§2.2](https://www.rfc-editor.org/rfc/rfc9112#section-2.2)
//!   only says a recipient MAY, and parsers that disagree on it are how requests get smuggled
//!   ([§11.2](https://www.rfc-editor.org/rfc/rfc9112#section-11.2)); bare LF and bare CR are
//!   errors here.
//! - accept whitespace before `chunk-size`, or after it unless a `;` follows (the grammar only
//!   has BWS before `;`).
//! - check the `chunk-ext` grammar (token / quoted-string): extension bytes up to the CR are
//!   skipped, only control characters are rejected, which keeps the line end unambiguous.
//! - return trailer fields (§7.1.2: a recipient MAY discard them) or merge them into the header
//!   section.
//! - handle transfer codings other than chunked, or decide whether a message is chunked: the
//!   request head parser does that.
//!
//! The decoder's state is a few integers; it never buffers a line, so a peer cannot make it
//! allocate anything but the body it is allowed to send.

use std::fmt;

/// The `last-chunk` followed by an empty trailer section and the final CRLF: ends a chunked body
/// ([RFC 9112 §7.1](https://www.rfc-editor.org/rfc/rfc9112#section-7.1)).
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// Appends `data` as one chunk: `chunk-size` in lowercase hex, CRLF, the data, CRLF
/// ([RFC 9112 §7.1](https://www.rfc-editor.org/rfc/rfc9112#section-7.1)).
///
/// An empty `data` writes nothing, because a chunk of size zero is the `last-chunk` and would
/// end the body. Write [`LAST_CHUNK`] to end the body on purpose.
pub fn encode_chunk(data: &[u8], out: &mut Vec<u8>) {
    if data.is_empty() {
        return;
    }
    let size = format!("{:x}", data.len());
    out.reserve(size.len() + data.len() + 4);
    out.extend_from_slice(size.as_bytes());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// Limits that keep one peer's chunked body from exhausting the server
/// ([RFC 9112 §7.1](https://www.rfc-editor.org/rfc/rfc9112#section-7.1): HTTP/1.1 does not
/// bound a chunked body, so the recipient has to).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkedLimits {
    /// Largest decoded body, in bytes (the sum of all chunk sizes); a chunk-size that would
    /// exceed it fails with [`ChunkedError::BodyTooLarge`] (413) before its data is read.
    /// Default 1 MiB.
    pub max_body_bytes: u64,
    /// Longest chunk-size line, in bytes, counting the chunk-size, the chunk extensions and the
    /// CRLF; longer fails with [`ChunkedError::ChunkLineTooLong`] (400), as §7.1.1 asks a
    /// server to limit chunk extensions. Default 1024.
    pub max_chunk_line_bytes: usize,
    /// Largest trailer section, in bytes, counting every field line and its CRLF but not the
    /// final CRLF; larger fails with [`ChunkedError::TrailerSectionTooLarge`] (431).
    /// Default 8192.
    pub max_trailer_bytes: usize,
}

impl Default for ChunkedLimits {
    fn default() -> Self {
        ChunkedLimits { max_body_bytes: 1024 * 1024, max_chunk_line_bytes: 1024, max_trailer_bytes: 8192 }
    }
}

/// A chunked body that breaks RFC 9112 §7.1 or a [`ChunkedLimits`] bound. Every variant is the
/// peer's fault; the connection cannot be reused after it (the message boundary is lost).
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkedError {
    /// The chunk-size is not `1*HEXDIG`: empty, preceded by whitespace, or followed by a byte
    /// that is neither a hex digit, BWS, `;` nor CR (§7.1).
    InvalidChunkSize,
    /// The chunk-size does not fit in 64 bits (§7.1: recipients MUST prevent integer
    /// conversion overflows).
    ChunkSizeOverflow,
    /// Whitespace after the chunk-size not followed by `;`, or a control character inside a
    /// chunk extension (§7.1.1).
    InvalidChunkExtension,
    /// The chunk-size line, extensions included, exceeds
    /// [`ChunkedLimits::max_chunk_line_bytes`] (§7.1.1).
    ChunkLineTooLong,
    /// A chunk-size line or trailer line ended in a bare LF, or a CR was not followed by LF
    /// (§2.2, §7.1).
    InvalidLineEnding,
    /// The `chunk-data` was not followed by exactly CRLF (§7.1): the chunk-size lied.
    MissingCrlfAfterData,
    /// The trailer section exceeds [`ChunkedLimits::max_trailer_bytes`] (§7.1.2).
    TrailerSectionTooLarge,
    /// A trailer line is not a `field-line`: empty or non-token field name, whitespace before
    /// the colon, obsolete line folding, or a control character in the value (§7.1.2, §5).
    InvalidTrailer,
    /// The chunk sizes add up to more than [`ChunkedLimits::max_body_bytes`].
    BodyTooLarge,
}

impl ChunkedError {
    /// The status code to answer with before closing the connection.
    ///
    /// 413 (Content Too Large) for [`ChunkedError::BodyTooLarge`]; 431 (Request Header Fields
    /// Too Large, [RFC 6585 §5](https://www.rfc-editor.org/rfc/rfc6585#section-5)) for
    /// [`ChunkedError::TrailerSectionTooLarge`], because a trailer section is a field section
    /// and 431 tells the client exactly what to shrink, where 413 would blame the content;
    /// 400 (Bad Request) for every syntax error, [`ChunkedError::InvalidTrailer`] included, as
    /// RFC 9112 §5.1 and §5.2 prescribe for malformed field lines.
    pub fn status_hint(&self) -> u16 {
        match self {
            ChunkedError::BodyTooLarge => 413,
            ChunkedError::TrailerSectionTooLarge => 431,
            ChunkedError::InvalidChunkSize
            | ChunkedError::ChunkSizeOverflow
            | ChunkedError::InvalidChunkExtension
            | ChunkedError::ChunkLineTooLong
            | ChunkedError::InvalidLineEnding
            | ChunkedError::MissingCrlfAfterData
            | ChunkedError::InvalidTrailer => 400,
        }
    }
}

impl fmt::Display for ChunkedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ChunkedError::InvalidChunkSize => "invalid chunk-size",
            ChunkedError::ChunkSizeOverflow => "chunk-size does not fit in 64 bits",
            ChunkedError::InvalidChunkExtension => "invalid chunk extension",
            ChunkedError::ChunkLineTooLong => "chunk-size line too long",
            ChunkedError::InvalidLineEnding => "line not terminated by CRLF",
            ChunkedError::MissingCrlfAfterData => "chunk-data not followed by CRLF",
            ChunkedError::TrailerSectionTooLarge => "trailer section too large",
            ChunkedError::InvalidTrailer => "invalid trailer field line",
            ChunkedError::BodyTooLarge => "chunked body too large",
        })
    }
}

impl std::error::Error for ChunkedError {}

/// What one [`ChunkedDecoder::decode`] call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decoded {
    /// Input bytes consumed. Equal to the input length unless `done`: the decoder keeps no
    /// bytes back, so the caller never re-feeds anything.
    pub consumed: usize,
    /// The last-chunk, trailer section and final CRLF have been read: the body is complete and
    /// the input after `consumed` belongs to the next message.
    pub done: bool,
}

/// Where the decoder is in the `chunked-body` grammar (RFC 9112 §7.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading `chunk-size = 1*HEXDIG`. Next: more digits, or BWS / `;` / CR.
    ChunkSize { size: u64, has_digit: bool },
    /// BWS after the chunk-size (§7.1.1). Next: more BWS, or `;`.
    ChunkSizeBws { size: u64 },
    /// Skipping a chunk extension. Next: CR.
    ChunkExt { size: u64 },
    /// The chunk-size line's CR was read. Next: LF, then data or the trailer section.
    ChunkSizeLf { size: u64 },
    /// Copying `chunk-data`; `remaining` bytes to go (never 0). Next: its CR.
    ChunkData { remaining: u64 },
    /// Expecting the CR after `chunk-data`.
    ChunkDataCr,
    /// Expecting the LF after `chunk-data`. Next: the next chunk-size.
    ChunkDataLf,
    /// At the start of a trailer field line or of the final CRLF.
    TrailerLineStart,
    /// Reading a trailer field name. Next: `:`.
    TrailerName,
    /// Skipping a trailer field value. Next: CR.
    TrailerValue,
    /// A trailer field line's CR was read. Next: LF, then the next line.
    TrailerLf,
    /// The final CR was read. Next: LF, then done.
    FinalLf,
    /// The body is complete; no more input is consumed.
    Done,
    /// An error was returned; it is returned again on every call.
    Failed(ChunkedError),
}

/// Incremental decoder for one chunked message body
/// ([RFC 9112 §7.1.3](https://www.rfc-editor.org/rfc/rfc9112#section-7.1.3)).
///
/// Feed it the bytes after the message head with [`ChunkedDecoder::decode`], as they arrive,
/// until it reports `done`; then the rest of the input is the next message. Use one decoder per
/// message.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    limits: ChunkedLimits,
    state: State,
    /// Bytes of the current chunk-size line read so far.
    chunk_line_bytes: usize,
    /// Bytes of the trailer section read so far.
    trailer_bytes: usize,
    /// Sum of all complete chunk sizes read so far; never above `limits.max_body_bytes`.
    body_bytes: u64,
}

impl ChunkedDecoder {
    /// A decoder at the start of a chunked body. Next: [`ChunkedDecoder::decode`].
    pub fn new(limits: ChunkedLimits) -> Self {
        ChunkedDecoder {
            limits,
            state: State::ChunkSize { size: 0, has_digit: false },
            chunk_line_bytes: 0,
            trailer_bytes: 0,
            body_bytes: 0,
        }
    }

    /// Decodes as much of `input` as it can, appending chunk data to `body`.
    ///
    /// Returns how many bytes were consumed and whether the body is complete. Until it is, all
    /// of `input` is consumed: call again with the next bytes. Once it is, the bytes after the
    /// body are not consumed (they are the next pipelined message) and further calls consume
    /// nothing. On error, some chunk data may already have been appended to `body`; the
    /// message must be answered with [`ChunkedError::status_hint`] and the connection closed,
    /// and further calls return the same error.
    pub fn decode(&mut self, input: &[u8], body: &mut Vec<u8>) -> Result<Decoded, ChunkedError> {
        let mut rest = input;
        loop {
            match self.state {
                State::Done => break,
                State::Failed(error) => return Err(error),
                State::ChunkData { remaining } => {
                    if rest.is_empty() {
                        break;
                    }
                    // The total was checked against max_body_bytes when the chunk-size was read.
                    let take = usize::try_from(remaining).map_or(rest.len(), |r| r.min(rest.len()));
                    let (data, tail) = rest.split_at(take);
                    body.extend_from_slice(data);
                    rest = tail;
                    let remaining = remaining - take as u64;
                    self.state =
                        if remaining == 0 { State::ChunkDataCr } else { State::ChunkData { remaining } };
                }
                state => {
                    let Some((&byte, tail)) = rest.split_first() else {
                        break;
                    };
                    rest = tail;
                    self.state = match self.step(state, byte) {
                        Ok(next) => next,
                        Err(error) => State::Failed(error),
                    };
                }
            }
        }
        Ok(Decoded { consumed: input.len() - rest.len(), done: self.state == State::Done })
    }

    /// Consumes one byte of framing in `state` and returns the next state.
    fn step(&mut self, state: State, byte: u8) -> Result<State, ChunkedError> {
        match state {
            State::ChunkSize { .. }
            | State::ChunkSizeBws { .. }
            | State::ChunkExt { .. }
            | State::ChunkSizeLf { .. } => {
                // RFC 9112 §7.1.1: a server ought to limit the total length of chunk extensions.
                self.chunk_line_bytes += 1;
                if self.chunk_line_bytes > self.limits.max_chunk_line_bytes {
                    return Err(ChunkedError::ChunkLineTooLong);
                }
            }
            State::TrailerLineStart if byte != b'\r' => self.count_trailer_byte()?,
            State::TrailerName | State::TrailerValue | State::TrailerLf => self.count_trailer_byte()?,
            _ => {}
        }
        match state {
            State::ChunkSize { size, has_digit } => match (byte as char).to_digit(16) {
                // RFC 9112 §7.1: recipients MUST anticipate potentially large hexadecimal
                // numerals and prevent parsing errors due to integer conversion overflows.
                Some(digit) => {
                    let size = size
                        .checked_mul(16)
                        .and_then(|s| s.checked_add(u64::from(digit)))
                        .ok_or(ChunkedError::ChunkSizeOverflow)?;
                    // More digits only make the size larger: fail before any data is read.
                    if size > self.limits.max_body_bytes.saturating_sub(self.body_bytes) {
                        return Err(ChunkedError::BodyTooLarge);
                    }
                    Ok(State::ChunkSize { size, has_digit: true })
                }
                // RFC 9112 §7.1: chunk-size = 1*HEXDIG (nothing, not even whitespace, before it).
                None if !has_digit => Err(ChunkedError::InvalidChunkSize),
                None => {
                    // Within max_body_bytes, checked digit by digit above.
                    self.body_bytes += size;
                    Self::after_chunk_size(size, byte)
                }
            },
            State::ChunkSizeBws { size } => match byte {
                b' ' | b'\t' => Ok(State::ChunkSizeBws { size }),
                b';' => Ok(State::ChunkExt { size }),
                // RFC 9112 §7.1.1: chunk-ext = *( BWS ";" ... ): BWS only before a ';'.
                _ => Err(ChunkedError::InvalidChunkExtension),
            },
            State::ChunkExt { size } => match byte {
                b'\r' => Ok(State::ChunkSizeLf { size }),
                // RFC 9112 §2.2: bare LF is not taken as a line terminator (smuggling, §11.2).
                b'\n' => Err(ChunkedError::InvalidLineEnding),
                // RFC 9112 §7.1.1: chunk-ext-val = token / quoted-string, neither admits a CTL.
                b if b.is_ascii_control() && b != b'\t' => Err(ChunkedError::InvalidChunkExtension),
                // RFC 9112 §7.1.1: a recipient MUST ignore unrecognized chunk extensions.
                _ => Ok(State::ChunkExt { size }),
            },
            State::ChunkSizeLf { size } => match byte {
                b'\n' if size == 0 => Ok(State::TrailerLineStart),
                b'\n' => Ok(State::ChunkData { remaining: size }),
                // RFC 9112 §2.2: a recipient of a bare CR MUST consider that element invalid.
                _ => Err(ChunkedError::InvalidLineEnding),
            },
            // RFC 9112 §7.1: chunk = chunk-size [ chunk-ext ] CRLF chunk-data CRLF.
            State::ChunkDataCr if byte == b'\r' => Ok(State::ChunkDataLf),
            State::ChunkDataLf if byte == b'\n' => {
                self.chunk_line_bytes = 0;
                Ok(State::ChunkSize { size: 0, has_digit: false })
            }
            State::ChunkDataCr | State::ChunkDataLf => Err(ChunkedError::MissingCrlfAfterData),
            State::TrailerLineStart => match byte {
                b'\r' => Ok(State::FinalLf),
                b'\n' => Err(ChunkedError::InvalidLineEnding),
                b if is_tchar(b) => Ok(State::TrailerName),
                // RFC 9112 §5.2: a server MUST reject obs-fold (a line starting with SP or HTAB)
                // with 400 or replace it; an empty field name is not a token either.
                _ => Err(ChunkedError::InvalidTrailer),
            },
            State::TrailerName => match byte {
                b':' => Ok(State::TrailerValue),
                b if is_tchar(b) => Ok(State::TrailerName),
                // RFC 9112 §5.1: a server MUST reject, with 400, whitespace between a field
                // name and colon; a line without a colon is not a field-line.
                _ => Err(ChunkedError::InvalidTrailer),
            },
            State::TrailerValue => match byte {
                b'\r' => Ok(State::TrailerLf),
                b'\n' => Err(ChunkedError::InvalidLineEnding),
                // RFC 9110 §5.5: a recipient of CR, LF, or NUL within a field value MUST either
                // reject the message or replace them with SP; other CTLs are invalid too.
                b if b.is_ascii_control() && b != b'\t' => Err(ChunkedError::InvalidTrailer),
                // RFC 9112 §7.1.2: a recipient MAY selectively retain or discard trailer fields.
                _ => Ok(State::TrailerValue),
            },
            State::TrailerLf | State::FinalLf if byte != b'\n' => {
                // RFC 9112 §2.2: a recipient of a bare CR MUST consider that element invalid.
                Err(ChunkedError::InvalidLineEnding)
            }
            State::TrailerLf => Ok(State::TrailerLineStart),
            State::FinalLf => Ok(State::Done),
            // `decode` handles these states itself and never steps in them.
            State::ChunkData { .. } | State::Done | State::Failed(_) => Ok(state),
        }
    }

    /// The state after the first byte that follows a complete chunk-size.
    fn after_chunk_size(size: u64, byte: u8) -> Result<State, ChunkedError> {
        match byte {
            b'\r' => Ok(State::ChunkSizeLf { size }),
            // RFC 9112 §7.1.1: chunk-ext = *( BWS ";" BWS chunk-ext-name ... ).
            b' ' | b'\t' => Ok(State::ChunkSizeBws { size }),
            b';' => Ok(State::ChunkExt { size }),
            // RFC 9112 §2.2: bare LF is not taken as a line terminator (smuggling, §11.2).
            b'\n' => Err(ChunkedError::InvalidLineEnding),
            _ => Err(ChunkedError::InvalidChunkSize),
        }
    }

    /// Counts one byte of the trailer section against `max_trailer_bytes`.
    fn count_trailer_byte(&mut self) -> Result<(), ChunkedError> {
        self.trailer_bytes += 1;
        if self.trailer_bytes > self.limits.max_trailer_bytes {
            return Err(ChunkedError::TrailerSectionTooLarge);
        }
        Ok(())
    }
}

/// `tchar` of RFC 9110 §5.6.2, the characters of a `token` such as a field name (also what
/// event names are made of).
pub fn is_tchar(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `input` in one call.
    fn decode_whole(limits: ChunkedLimits, input: &[u8]) -> Result<(Vec<u8>, Decoded), ChunkedError> {
        let mut decoder = ChunkedDecoder::new(limits);
        let mut body = Vec::new();
        let decoded = decoder.decode(input, &mut body)?;
        Ok((body, decoded))
    }

    /// Decodes `input` cut into the given pieces, summing what each call consumed.
    fn decode_pieces(limits: ChunkedLimits, pieces: &[&[u8]]) -> Result<(Vec<u8>, Decoded), ChunkedError> {
        let mut decoder = ChunkedDecoder::new(limits);
        let mut body = Vec::new();
        let mut total = Decoded { consumed: 0, done: false };
        for piece in pieces {
            let decoded = decoder.decode(piece, &mut body)?;
            assert!(decoded.done || decoded.consumed == piece.len());
            total.consumed += decoded.consumed;
            total.done = decoded.done;
        }
        Ok((body, total))
    }

    /// Checks that every cut point and single bytes give the same result as one call.
    fn assert_split_invariant(input: &[u8]) {
        let limits = ChunkedLimits::default();
        let whole = decode_whole(limits, input);
        for cut in 0..=input.len() {
            let (a, b) = input.split_at(cut);
            assert_eq!(decode_pieces(limits, &[a, b]), whole, "cut at {cut}");
        }
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(decode_pieces(limits, &bytes), whole, "byte by byte");
    }

    fn error_of(input: &[u8]) -> ChunkedError {
        decode_whole(ChunkedLimits::default(), input).unwrap_err()
    }

    #[test]
    fn rfc9112_7_1_example_wikipedia() {
        let input = b"4\r\nWiki\r\n5\r\npedia\r\n0\r\n\r\n";
        let (body, decoded) = decode_whole(ChunkedLimits::default(), input).unwrap();
        assert_eq!(body, b"Wikipedia");
        assert_eq!(decoded, Decoded { consumed: input.len(), done: true });
    }

    #[test]
    fn rfc9112_7_1_uppercase_and_lowercase_hex() {
        let data = [b'x'; 0xab];
        let mut input = b"AB\r\n".to_vec();
        input.extend_from_slice(&data);
        input.extend_from_slice(b"\r\n0000\r\n\r\n");
        let (body, _) = decode_whole(ChunkedLimits::default(), &input).unwrap();
        assert_eq!(body.len(), 0xab);
        let (body, _) = decode_whole(ChunkedLimits::default(), b"0a\r\n0123456789\r\n0\r\n\r\n").unwrap();
        assert_eq!(body, b"0123456789");
    }

    #[test]
    fn rfc9112_7_1_leading_zeros_do_not_overflow() {
        let (body, decoded) =
            decode_whole(ChunkedLimits::default(), b"00000000000000000001\r\na\r\n0\r\n\r\n").unwrap();
        assert_eq!(body, b"a");
        assert!(decoded.done);
    }

    #[test]
    fn rfc9112_7_1_1_extensions_ignored() {
        let input = b"4;name=value\r\nWiki\r\n5 ; a ;b=\"q;\\\"x\" \t;c\r\npedia\r\n0;last\r\n\r\n";
        let (body, decoded) = decode_whole(ChunkedLimits::default(), input).unwrap();
        assert_eq!(body, b"Wikipedia");
        assert!(decoded.done);
    }

    #[test]
    fn rfc9112_7_1_2_trailer_section_discarded() {
        let input = b"4\r\nWiki\r\n0\r\nExpires: Wed, 21 Oct 2015 07:28:00 GMT\r\nX-Sum:\t1 \r\n\r\n";
        let (body, decoded) = decode_whole(ChunkedLimits::default(), input).unwrap();
        assert_eq!(body, b"Wiki");
        assert_eq!(decoded.consumed, input.len());
        assert!(decoded.done);
    }

    #[test]
    fn rfc9112_7_1_split_invariance() {
        assert_split_invariant(b"4\r\nWiki\r\n5;x=y\r\npedia\r\n0\r\nA: b\r\n\r\nGET / HTTP/1.1\r\n");
        assert_split_invariant(b"1a\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\n\r\n");
        assert_split_invariant(b"4\r\nWiki\r\n5\r\npedia\n0\r\n\r\n");
        assert_split_invariant(b"4\r\nWiki\r\n0\r\nBad Name: x\r\n\r\n");
    }

    #[test]
    fn rfc9112_7_1_pipelined_bytes_not_consumed() {
        let body_bytes = b"3\r\nabc\r\n0\r\n\r\n";
        let mut input = body_bytes.to_vec();
        input.extend_from_slice(b"GET /next HTTP/1.1\r\n\r\n");
        let mut decoder = ChunkedDecoder::new(ChunkedLimits::default());
        let mut body = Vec::new();
        let decoded = decoder.decode(&input, &mut body).unwrap();
        assert_eq!(decoded, Decoded { consumed: body_bytes.len(), done: true });
        // After done, nothing more is consumed.
        let again = decoder.decode(b"more", &mut body).unwrap();
        assert_eq!(again, Decoded { consumed: 0, done: true });
        assert_eq!(body, b"abc");
    }

    #[test]
    fn rfc9112_7_1_incomplete_body_consumes_everything() {
        let mut decoder = ChunkedDecoder::new(ChunkedLimits::default());
        let mut body = Vec::new();
        let decoded = decoder.decode(b"4\r\nWi", &mut body).unwrap();
        assert_eq!(decoded, Decoded { consumed: 5, done: false });
        assert_eq!(body, b"Wi");
    }

    #[test]
    fn rfc9112_7_1_chunk_size_required() {
        assert_eq!(error_of(b"\r\nabc\r\n"), ChunkedError::InvalidChunkSize);
        assert_eq!(error_of(b";ext\r\n"), ChunkedError::InvalidChunkSize);
        assert_eq!(error_of(b"x\r\n"), ChunkedError::InvalidChunkSize);
        assert_eq!(error_of(b"4x\r\nWiki\r\n"), ChunkedError::InvalidChunkSize);
        assert_eq!(error_of(b"-4\r\nWiki\r\n"), ChunkedError::InvalidChunkSize);
        assert_eq!(error_of(b"0x4\r\nWiki\r\n"), ChunkedError::InvalidChunkSize);
    }

    #[test]
    fn rfc9112_7_1_no_whitespace_before_chunk_size() {
        assert_eq!(error_of(b" 4\r\nWiki\r\n"), ChunkedError::InvalidChunkSize);
        assert_eq!(error_of(b"\t4\r\nWiki\r\n"), ChunkedError::InvalidChunkSize);
    }

    #[test]
    fn rfc9112_7_1_chunk_size_overflow() {
        let limits = ChunkedLimits { max_body_bytes: u64::MAX, ..ChunkedLimits::default() };
        // 16 hex digits fit; the limit rejects them, not the parser.
        let (_, decoded) = decode_whole(limits, b"ffffffffffffffff\r\n").unwrap();
        assert!(!decoded.done);
        assert_eq!(decode_whole(limits, b"10000000000000000\r\n"), Err(ChunkedError::ChunkSizeOverflow));
        assert_eq!(decode_whole(limits, b"fffffffffffffffff\r\n"), Err(ChunkedError::ChunkSizeOverflow));
    }

    #[test]
    fn rfc9112_7_1_1_bws_only_before_semicolon() {
        assert_eq!(error_of(b"4 \r\nWiki\r\n"), ChunkedError::InvalidChunkExtension);
        assert_eq!(error_of(b"4 x\r\nWiki\r\n"), ChunkedError::InvalidChunkExtension);
        assert_eq!(error_of(b"4;a\0b\r\nWiki\r\n"), ChunkedError::InvalidChunkExtension);
    }

    #[test]
    fn rfc9112_7_1_1_chunk_line_too_long() {
        let limits = ChunkedLimits { max_chunk_line_bytes: 16, ..ChunkedLimits::default() };
        // 16 bytes including CRLF is allowed, 17 is not.
        assert!(decode_whole(limits, b"4;aaaaaaaaaaaa\r\nWiki\r\n").is_ok());
        assert_eq!(decode_whole(limits, b"4;aaaaaaaaaaaaa\r\nWiki\r\n"), Err(ChunkedError::ChunkLineTooLong));
        // Leading zeros count too, so they cannot be unbounded.
        assert_eq!(decode_whole(limits, &[b'0'; 17]), Err(ChunkedError::ChunkLineTooLong));
    }

    #[test]
    fn rfc9112_2_2_bare_lf_rejected() {
        assert_eq!(error_of(b"4\nWiki\r\n"), ChunkedError::InvalidLineEnding);
        assert_eq!(error_of(b"4;ext\nWiki\r\n"), ChunkedError::InvalidLineEnding);
        assert_eq!(error_of(b"0\r\n\n"), ChunkedError::InvalidLineEnding);
        assert_eq!(error_of(b"0\r\nA: b\n\r\n"), ChunkedError::InvalidLineEnding);
    }

    #[test]
    fn rfc9112_2_2_bare_cr_rejected() {
        assert_eq!(error_of(b"4\rWiki\r\n"), ChunkedError::InvalidLineEnding);
        assert_eq!(error_of(b"0\r\n\rx"), ChunkedError::InvalidLineEnding);
        assert_eq!(error_of(b"0\r\nA: b\rc\r\n\r\n"), ChunkedError::InvalidLineEnding);
    }

    #[test]
    fn rfc9112_7_1_missing_crlf_after_data() {
        assert_eq!(error_of(b"4\r\nWikip\r\n"), ChunkedError::MissingCrlfAfterData);
        assert_eq!(error_of(b"4\r\nWiki\n0\r\n\r\n"), ChunkedError::MissingCrlfAfterData);
        assert_eq!(error_of(b"4\r\nWiki\rx"), ChunkedError::MissingCrlfAfterData);
    }

    #[test]
    fn rfc9112_7_1_2_trailer_section_too_large() {
        let limits = ChunkedLimits { max_trailer_bytes: 8, ..ChunkedLimits::default() };
        // "A: 1234\r\n" is 9 bytes; the final CRLF does not count.
        assert!(decode_whole(limits, b"0\r\nA: 123\r\n\r\n").unwrap().1.done);
        let error = decode_whole(limits, b"0\r\nA: 1234\r\n\r\n").unwrap_err();
        assert_eq!(error, ChunkedError::TrailerSectionTooLarge);
        assert_eq!(error.status_hint(), 431);
        // Many small lines add up.
        assert_eq!(
            decode_whole(limits, b"0\r\nA:\r\nB:\r\nC:\r\n\r\n"),
            Err(ChunkedError::TrailerSectionTooLarge)
        );
    }

    #[test]
    fn rfc9112_5_1_trailer_field_line_rules() {
        // Whitespace between field name and colon.
        assert_eq!(error_of(b"0\r\nA : b\r\n\r\n"), ChunkedError::InvalidTrailer);
        // obs-fold (§5.2).
        assert_eq!(error_of(b"0\r\nA: b\r\n c\r\n\r\n"), ChunkedError::InvalidTrailer);
        // Empty field name, no colon, non-token name.
        assert_eq!(error_of(b"0\r\n: b\r\n\r\n"), ChunkedError::InvalidTrailer);
        assert_eq!(error_of(b"0\r\nNoColon\r\n\r\n"), ChunkedError::InvalidTrailer);
        assert_eq!(error_of(b"0\r\nA(b): c\r\n\r\n"), ChunkedError::InvalidTrailer);
        // RFC 9110 §5.5: NUL in a field value.
        assert_eq!(error_of(b"0\r\nA: b\0c\r\n\r\n"), ChunkedError::InvalidTrailer);
        assert_eq!(ChunkedError::InvalidTrailer.status_hint(), 400);
    }

    #[test]
    fn rfc9112_7_1_body_limit_checked_before_data() {
        let limits = ChunkedLimits { max_body_bytes: 8, ..ChunkedLimits::default() };
        let mut decoder = ChunkedDecoder::new(limits);
        let mut body = Vec::new();
        // The size is rejected at its first digit over the limit, before any data arrives.
        let error = decoder.decode(b"ffffffff\r\n", &mut body).unwrap_err();
        assert_eq!(error, ChunkedError::BodyTooLarge);
        assert_eq!(error.status_hint(), 413);
        assert!(body.is_empty());
        // The error sticks.
        assert_eq!(decoder.decode(b"\r\n", &mut body), Err(error));

        // Exactly at the limit is fine; the cumulative total is what counts.
        assert!(decode_whole(limits, b"4\r\nWiki\r\n4\r\nWiki\r\n0\r\n\r\n").is_ok());
        let mut decoder = ChunkedDecoder::new(limits);
        let mut body = Vec::new();
        assert_eq!(
            decoder.decode(b"4\r\nWiki\r\n5\r\npedia\r\n0\r\n\r\n", &mut body),
            Err(ChunkedError::BodyTooLarge)
        );
        assert_eq!(body, b"Wiki");
    }

    #[test]
    fn rfc9112_7_1_errors_split_invariant() {
        for input in [
            &b"4\nWiki\r\n"[..],
            b"4\r\nWikip\r\n",
            b" 4\r\n",
            b"4 \r\n",
            b"10000000000000000\r\n",
            b"0\r\nA : b\r\n\r\n",
            b"0\r\nA: b\rc",
        ] {
            assert_split_invariant(input);
        }
    }

    #[test]
    fn rfc9112_7_1_encode_round_trip() {
        let messages: [&[u8]; 4] = [b"Wiki", b"pedia", &[0u8; 300], b"\r\n0\r\n\r\n"];
        let mut wire = Vec::new();
        for message in messages {
            encode_chunk(message, &mut wire);
        }
        wire.extend_from_slice(LAST_CHUNK);
        assert!(wire.starts_with(b"4\r\nWiki\r\n5\r\npedia\r\n12c\r\n"));
        let (body, decoded) = decode_whole(ChunkedLimits::default(), &wire).unwrap();
        assert_eq!(body, messages.concat());
        assert_eq!(decoded.consumed, wire.len());
        assert!(decoded.done);
    }

    #[test]
    fn rfc9112_7_1_encode_empty_writes_no_last_chunk() {
        let mut wire = Vec::new();
        encode_chunk(b"", &mut wire);
        assert!(wire.is_empty());
        encode_chunk(b"a", &mut wire);
        encode_chunk(b"", &mut wire);
        encode_chunk(b"b", &mut wire);
        assert_eq!(wire, b"1\r\na\r\n1\r\nb\r\n");
        let (body, decoded) = decode_whole(ChunkedLimits::default(), &wire).unwrap();
        assert_eq!(body, b"ab");
        assert!(!decoded.done);
    }
}
