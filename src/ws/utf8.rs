//! Incremental UTF-8 validation of a text message that arrives in pieces.
//!
//! Implements: [RFC 6455 §8.1](https://www.rfc-editor.org/rfc/rfc6455#section-8.1) ("When an
//! endpoint is to interpret a byte stream as UTF-8 but finds that the byte stream is not, in
//! fact, a valid UTF-8 stream, that endpoint MUST _Fail the WebSocket Connection_"), failing at
//! the first byte that no valid continuation could follow (overlong forms, surrogates, code
//! points above U+10FFFF, stray continuation bytes), whatever the split of the input.
//!
//! Does not: copy or decode text; validate the close reason, which is one slice
//! ([`crate::ws::close`] uses `std::str::from_utf8`).

use crate::ws::Error;

/// Validates UTF-8 fed in arbitrary pieces, holding at most 3 bytes of an incomplete code point.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Utf8Validator {
    /// The bytes of a code point cut by the end of the last piece.
    partial: [u8; 3],
    /// How many bytes of `partial` are in use (0 to 3).
    partial_len: u8,
}

impl Utf8Validator {
    /// A validator at the start of a message.
    pub fn new() -> Self {
        Self::default()
    }

    /// Validates the next piece of the message. Fails as soon as the bytes seen so far cannot be
    /// the prefix of valid UTF-8. After an error the validator is in an unspecified state: call
    /// [`Utf8Validator::reset`] before reusing it.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<(), Error> {
        let mut rest = bytes;
        if self.partial_len > 0 {
            // Complete the pending code point with at most 3 more bytes, then go on in bulk.
            let held = usize::from(self.partial_len);
            let mut joined = [0u8; 6];
            joined[..held].copy_from_slice(&self.partial[..held]);
            let take = rest.len().min(joined.len() - held);
            joined[held..held + take].copy_from_slice(&rest[..take]);
            let joined = &joined[..held + take];
            let valid_up_to = match std::str::from_utf8(joined) {
                Ok(_) => joined.len(),
                Err(e) if e.valid_up_to() > 0 => e.valid_up_to(),
                Err(e) if e.error_len().is_none() => {
                    // Still a valid prefix of one code point: `rest` was exhausted.
                    self.hold(joined);
                    return Ok(());
                }
                Err(_) => return Err(Error::InvalidUtf8),
            };
            // The pending code point is complete; the bytes after it are checked in bulk below.
            self.partial_len = 0;
            rest = rest.get(valid_up_to.saturating_sub(held)..).unwrap_or_default();
        }
        match std::str::from_utf8(rest) {
            Ok(_) => Ok(()),
            // `error_len() == None`: the input ends inside a code point that may still be valid.
            Err(e) if e.error_len().is_none() => {
                self.hold(rest.get(e.valid_up_to()..).unwrap_or_default());
                Ok(())
            }
            Err(_) => Err(Error::InvalidUtf8),
        }
    }

    /// Ends the message: fails if it ends inside a code point. Leaves the validator reset.
    pub fn finish(&mut self) -> Result<(), Error> {
        let incomplete = self.partial_len > 0;
        self.reset();
        if incomplete {
            Err(Error::InvalidUtf8)
        } else {
            Ok(())
        }
    }

    /// Forgets any pending bytes, ready for a new message.
    pub fn reset(&mut self) {
        self.partial_len = 0;
    }

    /// Keeps the bytes of an incomplete code point (1 to 3 bytes, as `from_utf8` guarantees).
    fn hold(&mut self, tail: &[u8]) {
        let n = tail.len().min(self.partial.len());
        self.partial[..n].copy_from_slice(&tail[..n]);
        self.partial_len = n as u8;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whole-message result of feeding `pieces` then finishing.
    fn run(pieces: &[&[u8]]) -> Result<(), Error> {
        let mut v = Utf8Validator::new();
        for piece in pieces {
            v.feed(piece)?;
        }
        v.finish()
    }

    /// Autobahn-style vectors (Markus Kuhn's UTF-8 decoder capability and stress test).
    const VALID: &[&[u8]] = &[
        b"",
        b"Hello-\xc2\xb5@\xc3\x9f\xc3\xb6\xc3\xa4\xc3\xbc\xc3\xa0\xc3\xa1-UTF-8!!",
        // "κόσμε"
        b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5",
        b"\x00",
        b"\xc2\x80",
        b"\xe0\xa0\x80",
        b"\xf0\x90\x80\x80",
        b"\x7f",
        b"\xdf\xbf",
        b"\xef\xbf\xbf",
        b"\xf4\x8f\xbf\xbf",
        b"\xed\x9f\xbf",
        b"\xee\x80\x80",
        b"\xef\xbf\xbd",
    ];

    const INVALID: &[&[u8]] = &[
        // "κόσμε" then a surrogate, then "edited" (Autobahn 6.3.1)
        b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80\x65\x64\x69\x74\x65\x64",
        b"\xf4\x90\x80\x80",
        b"\xf8\x88\x80\x80\x80",
        b"\xfc\x84\x80\x80\x80\x80",
        b"\x80",
        b"\xbf",
        b"\x80\xbf\x80",
        b"\xc0\x20",
        b"\xe0\x80\x20",
        b"\xf0\x80\x80",
        b"\xfe",
        b"\xff",
        b"\xc0\xaf",
        b"\xe0\x80\xaf",
        b"\xf0\x80\x80\xaf",
        b"\xc1\xbf",
        b"\xe0\x9f\xbf",
        b"\xf0\x8f\xbf\xbf",
        b"\xed\xa0\x80",
        b"\xed\xbf\xbf",
        b"\xed\xa0\x80\xed\xb0\x80",
        // Incomplete at the end of the message.
        b"\xce\xba\xe1\xbd",
        b"\xc2",
        b"\xe0\xa0",
        b"\xf0\x90\x80",
        b"Hello\xf4\x8f\xbf",
    ];

    #[test]
    fn rfc6455_8_1_vectors_whole() {
        for v in VALID {
            assert_eq!(run(&[v]), Ok(()), "{v:x?}");
        }
        for v in INVALID {
            assert_eq!(run(&[v]), Err(Error::InvalidUtf8), "{v:x?}");
        }
    }

    #[test]
    fn rfc6455_8_1_split_invariance_every_cut_and_byte_by_byte() {
        for v in VALID.iter().chain(INVALID) {
            let whole = run(&[v]);
            for cut in 0..=v.len() {
                assert_eq!(run(&[&v[..cut], &v[cut..]]), whole, "{v:x?} cut {cut}");
                for cut2 in cut..=v.len() {
                    let three = [&v[..cut], &v[cut..cut2], &v[cut2..]];
                    assert_eq!(run(&three), whole, "{v:x?} cuts {cut} {cut2}");
                }
            }
            let bytes: Vec<&[u8]> = v.chunks(1).collect();
            assert_eq!(run(&bytes), whole, "{v:x?} byte by byte");
        }
    }

    /// Index of the byte whose `feed` fails when fed one byte at a time.
    fn failing_byte(input: &[u8]) -> Option<usize> {
        let mut v = Utf8Validator::new();
        input.iter().position(|b| v.feed(&[*b]).is_err())
    }

    #[test]
    fn rfc6455_8_1_fails_fast_on_the_impossible_byte() {
        // Above U+10FFFF: F4 90 can start nothing.
        assert_eq!(failing_byte(b"\xf4\x90\x80\x80"), Some(1));
        // A surrogate: ED A0.
        assert_eq!(failing_byte(b"\xed\xa0\x80"), Some(1));
        // Never a lead byte.
        assert_eq!(failing_byte(b"\xc0\x80"), Some(0));
        assert_eq!(failing_byte(b"\xc1\xbf"), Some(0));
        assert_eq!(failing_byte(b"\xf5\x80"), Some(0));
        assert_eq!(failing_byte(b"\xff"), Some(0));
        // Overlong 3- and 4-byte forms fail on the second byte.
        assert_eq!(failing_byte(b"\xe0\x80\xaf"), Some(1));
        assert_eq!(failing_byte(b"\xf0\x80\x80\xaf"), Some(1));
        // A lead byte cut short by an ASCII byte.
        assert_eq!(failing_byte(b"\xe1\xbd\x41"), Some(2));
        // A stray continuation byte after valid text.
        assert_eq!(failing_byte(b"ok\x80"), Some(2));
        // Autobahn 6.3.1 fails inside the message, on A0, before "edited" arrives.
        assert_eq!(INVALID[0][12], 0xa0);
        assert_eq!(failing_byte(INVALID[0]), Some(12));
        // Valid prefixes are accepted until the end.
        assert_eq!(failing_byte(b"\xf4\x8f\xbf"), None);
    }

    #[test]
    fn rfc6455_8_1_fails_fast_in_bulk_pieces() {
        let mut v = Utf8Validator::new();
        assert_eq!(v.feed(b"abc\xce"), Ok(()));
        assert_eq!(v.feed(b"\xba\xed"), Ok(()));
        assert_eq!(v.feed(b"\xa0"), Err(Error::InvalidUtf8));
    }

    #[test]
    fn finish_and_reset_start_a_new_message() {
        let mut v = Utf8Validator::new();
        assert_eq!(v.feed(b"\xe1\xbd"), Ok(()));
        assert_eq!(v.finish(), Err(Error::InvalidUtf8));
        assert_eq!(v.feed(b"\xb9"), Err(Error::InvalidUtf8));
        v.reset();
        assert_eq!(v.feed(b"\xe1\xbd"), Ok(()));
        v.reset();
        assert_eq!(v.feed(b"ok"), Ok(()));
        assert_eq!(v.finish(), Ok(()));
    }
}
