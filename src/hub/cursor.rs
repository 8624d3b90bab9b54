//! Cursors: where a client stands in a channel's message stream, as `EPOCH:OFFSET` text.
//!
//! Implements: the cursor text form `EPOCH:OFFSET` (16 hex digits, `:`, 1 to 20 decimal digits),
//! strict parsing and canonical (lowercase) formatting. The same text travels as a WebSocket
//! envelope id, an SSE `id:` field (echoed back as `Last-Event-ID`), and a poll `since` parameter.
//!
//! Does not: interpret a cursor against a channel (see [`crate::hub::Hub::read`] for the gap
//! rules) or compare cursors of different epochs (they have no order, so `Ord` is not derived).

use std::fmt;

/// One incarnation of a channel: a channel gets a fresh epoch when it is created, keeps it while
/// it lives, and a freed and re-created channel gets another one, so cursors from before carry a
/// foreign epoch and are answered with a gap.
///
/// Text form: exactly 16 hex digits, written lowercase (parsing accepts either case).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Epoch(pub u64);

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// A position in one channel incarnation: the client has seen every message up to and including
/// `offset` of `epoch`. Message offsets start at 1, so offset 0 means nothing seen.
///
/// Text form `EPOCH:OFFSET`, e.g. `00c0ffee00c0ffee:42`; [`fmt::Display`] writes it,
/// [`Cursor::parse`] reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cursor {
    /// The channel incarnation this offset counts in.
    pub epoch: Epoch,
    /// The offset of the last message seen (0: none).
    pub offset: u64,
}

/// Hex digits in the epoch part of the text form.
const EPOCH_DIGITS: usize = 16;
/// Most decimal digits in the offset part: `u64::MAX` has 20.
const MAX_OFFSET_DIGITS: usize = 20;

impl Cursor {
    /// The cursor just before this message: a subscription or poll from it delivers this
    /// message first (offset 0 stays 0, the start of the epoch).
    pub fn before(self) -> Cursor {
        Cursor { epoch: self.epoch, offset: self.offset.saturating_sub(1) }
    }

    /// Longest text form in bytes: 16 hex digits, `:`, 20 decimal digits.
    pub const MAX_TEXT_BYTES: usize = EPOCH_DIGITS + 1 + MAX_OFFSET_DIGITS;

    /// Parses the text form strictly: exactly 16 hex digits (either case), `:`, then 1 to 20 ASCII
    /// decimal digits whose value fits a `u64` (no sign, no spaces). The length is checked first,
    /// so arbitrarily long peer input costs nothing.
    pub fn parse(text: &str) -> Result<Cursor, CursorError> {
        let bytes = text.as_bytes();
        if bytes.len() > Self::MAX_TEXT_BYTES {
            return Err(CursorError::TooLong);
        }
        let (epoch_digits, rest) = bytes.split_at(bytes.len().min(EPOCH_DIGITS));
        if epoch_digits.len() != EPOCH_DIGITS {
            return Err(CursorError::EpochNotSixteenHexDigits);
        }
        let mut epoch: u64 = 0;
        for &byte in epoch_digits {
            let digit = char::from(byte).to_digit(16).ok_or(CursorError::EpochNotSixteenHexDigits)?;
            // 16 hex digits fill a u64 exactly, so this shift never drops a set bit.
            epoch = (epoch << 4) | u64::from(digit);
        }
        let offset_digits = match rest.split_first() {
            Some((b':', offset_digits)) => offset_digits,
            _ => return Err(CursorError::MissingColon),
        };
        // The length check above bounds the offset part to 20 digits.
        if offset_digits.is_empty() {
            return Err(CursorError::OffsetNotDecimal);
        }
        let mut offset: u64 = 0;
        for &byte in offset_digits {
            if !byte.is_ascii_digit() {
                return Err(CursorError::OffsetNotDecimal);
            }
            offset = offset
                .checked_mul(10)
                .and_then(|o| o.checked_add(u64::from(byte - b'0')))
                .ok_or(CursorError::OffsetOverflowsU64)?;
        }
        Ok(Cursor { epoch: Epoch(epoch), offset })
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.epoch, self.offset)
    }
}

/// Why a cursor text was rejected. A peer fault: the request is answered with 400.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CursorError {
    /// Longer than [`Cursor::MAX_TEXT_BYTES`].
    TooLong,
    /// The text does not start with exactly 16 hex digits.
    EpochNotSixteenHexDigits,
    /// No `:` right after the 16 epoch digits.
    MissingColon,
    /// The offset is empty or holds something other than ASCII decimal digits.
    OffsetNotDecimal,
    /// The offset is decimal but larger than `u64::MAX`.
    OffsetOverflowsU64,
}

impl CursorError {
    /// The HTTP status to answer with: always 400 (a malformed request).
    pub fn status_hint(self) -> u16 {
        400
    }
}

impl fmt::Display for CursorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CursorError::TooLong => "cursor longer than 37 bytes",
            CursorError::EpochNotSixteenHexDigits => "cursor epoch is not 16 hex digits",
            CursorError::MissingColon => "cursor has no ':' after the epoch",
            CursorError::OffsetNotDecimal => "cursor offset is not 1 to 20 decimal digits",
            CursorError::OffsetOverflowsU64 => "cursor offset does not fit in 64 bits",
        })
    }
}

impl std::error::Error for CursorError {}

#[cfg(test)]
mod tests {
    use super::*;

    fn cursor(epoch: u64, offset: u64) -> Cursor {
        Cursor { epoch: Epoch(epoch), offset }
    }

    #[test]
    fn cursor_text_form_example() {
        let c = Cursor::parse("00c0ffee00c0ffee:42").unwrap();
        assert_eq!(c, cursor(0x00c0_ffee_00c0_ffee, 42));
        assert_eq!(c.to_string(), "00c0ffee00c0ffee:42");
    }

    #[test]
    fn cursor_format_parse_round_trip() {
        for &(epoch, offset) in &[
            (0, 0),
            (1, 1),
            (u64::MAX, u64::MAX),
            (0xdead_beef_0000_0001, 1_000_000),
            (0x8000_0000_0000_0000, 9),
        ] {
            let c = cursor(epoch, offset);
            let text = c.to_string();
            assert!(text.len() <= Cursor::MAX_TEXT_BYTES);
            assert_eq!(Cursor::parse(&text), Ok(c), "{text}");
        }
        assert_eq!(cursor(u64::MAX, u64::MAX).to_string().len(), Cursor::MAX_TEXT_BYTES);
    }

    #[test]
    fn cursor_epoch_accepts_either_case_writes_lowercase() {
        let c = Cursor::parse("00C0FFEE00c0FfEe:7").unwrap();
        assert_eq!(c, cursor(0x00c0_ffee_00c0_ffee, 7));
        assert_eq!(c.to_string(), "00c0ffee00c0ffee:7");
    }

    #[test]
    fn cursor_offset_leading_zeros_accepted_up_to_20_digits() {
        assert_eq!(Cursor::parse("0000000000000001:00000000000000000042"), Ok(cursor(1, 42)));
        assert_eq!(Cursor::parse("0000000000000001:18446744073709551615"), Ok(cursor(1, u64::MAX)));
    }

    #[test]
    fn cursor_rejections() {
        use CursorError::*;
        let e = "00c0ffee00c0ffee";
        let cases: &[(String, CursorError)] = &[
            (String::new(), EpochNotSixteenHexDigits),
            ("0".repeat(15), EpochNotSixteenHexDigits),
            (e.to_string(), MissingColon),
            (format!("{e}:"), OffsetNotDecimal),
            (format!("{e}x1"), MissingColon),
            (format!("{e}:+1"), OffsetNotDecimal),
            (format!("{e}:-1"), OffsetNotDecimal),
            (format!("{e}: 1"), OffsetNotDecimal),
            (format!("{e}:1 "), OffsetNotDecimal),
            (format!("{e}:1a"), OffsetNotDecimal),
            (format!("{e}:1:2"), OffsetNotDecimal),
            (format!("{e}:18446744073709551616"), OffsetOverflowsU64),
            (format!("{e}:99999999999999999999"), OffsetOverflowsU64),
            (format!("{e}:{}", "1".repeat(21)), TooLong),
            (format!("{e}:1{}", " ".repeat(100)), TooLong),
            ("+0c0ffee00c0ffee:1".to_string(), EpochNotSixteenHexDigits),
            ("00c0ffee00c0ffeg:1".to_string(), EpochNotSixteenHexDigits),
            ("0c0ffee00c0ffee:1".to_string(), EpochNotSixteenHexDigits),
            ("000c0ffee00c0ffee:1".to_string(), MissingColon),
            (" 00c0ffee00c0ffe:1".to_string(), EpochNotSixteenHexDigits),
            // A multi-byte character where the epoch should be never panics on slicing.
            ("00c0ffee00c0ffé:1".to_string(), EpochNotSixteenHexDigits),
            (format!("{e}:１"), OffsetNotDecimal),
        ];
        for (text, error) in cases {
            assert_eq!(Cursor::parse(text), Err(*error), "{text:?}");
            assert_eq!(error.status_hint(), 400);
        }
    }
}
