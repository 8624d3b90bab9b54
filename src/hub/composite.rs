//! Composite cursors: where a client stands in several channels at once, as one text, for a
//! request that names several channels (`/channels/a,b,c`).
//!
//! Implements two text forms, each with one entry per channel of the request, in the request's
//! order (the request names the channels, so the entries do not):
//!
//! - **Full**: `EPOCH:OFFSET,EPOCH:OFFSET,,EPOCH:OFFSET`: each entry a [`Cursor`], or empty for
//!   "from now" (a channel the client has no position in yet). Exact on every channel; what
//!   poll answers return as `next` and what clients build for `?since=`.
//! - **Compact**: `HHHHHHHHHHHHHHHH.OFFSET.OFFSET.OFFSET`: 16 hex digits of [`epochs_hash`] over
//!   the channels' epochs, then each channel's offset. What a multi-channel event stream writes as
//!   its SSE `id:` (the browser sends back only the last id it saw, so the id must carry every
//!   channel; at 64 channels this is about 340 bytes where the full form would be 1,400). Exact
//!   while every channel keeps its epoch; when the hash no longer matches the channels' current
//!   epochs, the id cannot say which channel changed, and every channel of the set is answered
//!   with a gap.
//!
//! A single-channel request keeps the plain cursor `EPOCH:OFFSET`, which is also a full
//! composite of one entry.
//!
//! Does not: interpret positions against the hub (the session subscribes each channel with the
//! resulting [`crate::hub::Since`]), or name channels.

use std::fmt::{self, Write as _};

use super::cursor::{Cursor, CursorError, Epoch};

/// One or more channels' positions, parsed from either text form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Composite {
    /// One entry per channel: a cursor, or `None` for "from now".
    Full(Vec<Option<Cursor>>),
    /// The hash of the channels' epochs when the id was written, and each channel's offset.
    Compact {
        /// [`epochs_hash`] of the epochs the offsets count in.
        epochs_hash: u64,
        /// One offset per channel.
        offsets: Vec<u64>,
    },
}

/// Why a composite cursor text was rejected: a peer fault (400 for `?since=`; for a
/// `Last-Event-ID` the client is answered with a gap instead, see [`crate::transport`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CompositeError {
    /// Longer than [`Composite::max_text_bytes`] for the allowed entry count.
    TooLong,
    /// More entries than the request has channels, or fewer.
    WrongEntryCount,
    /// A full-form entry is not a cursor.
    Entry(CursorError),
    /// The compact form's hash is not 16 hex digits followed by `.`.
    BadHash,
    /// A compact-form offset is not 1 to 20 decimal digits fitting a `u64`.
    BadOffset,
}

impl CompositeError {
    /// The HTTP status to answer with: always 400 (a malformed request).
    pub fn status_hint(self) -> u16 {
        400
    }
}

impl fmt::Display for CompositeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CompositeError::TooLong => f.write_str("cursor list too long"),
            CompositeError::WrongEntryCount => f.write_str("cursor list needs one entry per channel"),
            CompositeError::Entry(e) => write!(f, "cursor list entry: {e}"),
            CompositeError::BadHash => f.write_str("compact cursor must start with 16 hex digits and '.'"),
            CompositeError::BadOffset => f.write_str("compact cursor offsets must be decimal u64s"),
        }
    }
}

impl std::error::Error for CompositeError {}

/// Hex digits of the compact form's hash.
const HASH_DIGITS: usize = 16;
/// Most decimal digits of an offset (`u64::MAX` has 20).
const MAX_OFFSET_DIGITS: usize = 20;

impl Composite {
    /// Longest text either form can take for `channels` entries: the full form's, each entry a
    /// longest cursor plus its comma. The length is checked before anything is parsed.
    pub fn max_text_bytes(channels: usize) -> usize {
        channels.saturating_mul(Cursor::MAX_TEXT_BYTES + 1)
    }

    /// Parses either form; it must have exactly `channels` entries. The length is checked
    /// first and entries are counted before the list is allocated, so peer input is bounded by
    /// the caller's channel count.
    pub fn parse(text: &str, channels: usize) -> Result<Composite, CompositeError> {
        if text.len() > Self::max_text_bytes(channels) {
            return Err(CompositeError::TooLong);
        }
        // The forms differ at byte 16: ':' (a full-form cursor), '.' (the compact hash), or
        // ',' / end (a full form whose first entry is empty).
        match text.as_bytes().get(HASH_DIGITS) {
            Some(b'.') => Self::parse_compact(text, channels),
            _ => Self::parse_full(text, channels),
        }
    }

    fn parse_full(text: &str, channels: usize) -> Result<Composite, CompositeError> {
        if text.split(',').count() != channels {
            return Err(CompositeError::WrongEntryCount);
        }
        let entries = text
            .split(',')
            .map(|entry| match entry {
                "" => Ok(None),
                entry => Cursor::parse(entry).map(Some).map_err(CompositeError::Entry),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Composite::Full(entries))
    }

    fn parse_compact(text: &str, channels: usize) -> Result<Composite, CompositeError> {
        let (hash, offsets) = text.split_at(HASH_DIGITS);
        if !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(CompositeError::BadHash);
        }
        let epochs_hash = u64::from_str_radix(hash, 16).map_err(|_| CompositeError::BadHash)?;
        // `offsets` starts with the '.' that parse() saw at byte 16.
        let offsets = &offsets[1..];
        if offsets.split('.').count() != channels {
            return Err(CompositeError::WrongEntryCount);
        }
        let offsets = offsets.split('.').map(parse_offset).collect::<Result<Vec<_>, _>>()?;
        Ok(Composite::Compact { epochs_hash, offsets })
    }

    /// The number of entries (channels).
    pub fn len(&self) -> usize {
        match self {
            Composite::Full(entries) => entries.len(),
            Composite::Compact { offsets, .. } => offsets.len(),
        }
    }

    /// True when there are no entries (never, for a parsed composite: a request names at least
    /// one channel).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Where each channel starts, given the channels' current epochs (in the same order; the
    /// session learns them before subscribing). Full entries are their cursors; a compact
    /// composite resumes at its offsets when its hash matches `current` and is `Err(Mismatch)`
    /// otherwise: the caller answers every channel with a gap.
    pub fn resolve_compact(hash: u64, offsets: &[u64], current: &[Epoch]) -> Result<Vec<Cursor>, Mismatch> {
        if current.len() != offsets.len() || epochs_hash(current.iter().copied()) != hash {
            return Err(Mismatch);
        }
        Ok(current.iter().zip(offsets).map(|(&epoch, &offset)| Cursor { epoch, offset }).collect())
    }
}

/// A compact composite whose epochs are not the channels' current ones: at least one channel
/// was re-created since the id was written, and which one cannot be told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mismatch;

fn parse_offset(text: &str) -> Result<u64, CompositeError> {
    if text.is_empty() || text.len() > MAX_OFFSET_DIGITS || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(CompositeError::BadOffset);
    }
    text.parse().map_err(|_| CompositeError::BadOffset)
}

/// A 64-bit hash of a list of epochs, order-sensitive: SplitMix64's finaliser folded over the
/// list. Not cryptographic (a client may resume from any position it likes anyway); it only has
/// to make an accidental match of changed epochs unlikely (2^-64).
pub fn epochs_hash(epochs: impl IntoIterator<Item = Epoch>) -> u64 {
    epochs.into_iter().fold(0x243f_6a88_85a3_08d3, |h, epoch| mix(h ^ epoch.0))
}

fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Appends the full form of `entries` (`None`: an empty entry, "from now").
pub fn write_full(out: &mut String, entries: impl IntoIterator<Item = Option<Cursor>>) {
    for (i, entry) in entries.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        if let Some(cursor) = entry {
            let _ = write!(out, "{cursor}");
        }
    }
}

/// Appends the compact form of `cursors` (every channel has a position). The cursors are
/// walked twice (the epochs' hash, then the offsets), so a caller holding them in its own
/// structures (a stream's feeds) need not collect them first.
pub fn write_compact<I>(out: &mut String, cursors: I)
where
    I: IntoIterator<Item = Cursor>,
    I::IntoIter: Clone,
{
    let cursors = cursors.into_iter();
    let _ = write!(out, "{:016x}", epochs_hash(cursors.clone().map(|c| c.epoch)));
    for cursor in cursors {
        let _ = write!(out, ".{}", cursor.offset);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(epoch: u64, offset: u64) -> Cursor {
        Cursor { epoch: Epoch(epoch), offset }
    }

    #[test]
    fn full_form_round_trips_with_empty_entries() {
        let entries = vec![Some(c(1, 5)), None, Some(c(0xfeed, 0))];
        let mut text = String::new();
        write_full(&mut text, entries.iter().copied());
        assert_eq!(text, "0000000000000001:5,,000000000000feed:0");
        assert_eq!(Composite::parse(&text, 3), Ok(Composite::Full(entries)));
        assert_eq!(Composite::parse(",", 2), Ok(Composite::Full(vec![None, None])));
    }

    #[test]
    fn a_plain_cursor_is_a_full_composite_of_one() {
        assert_eq!(Composite::parse("0000000000000001:7", 1), Ok(Composite::Full(vec![Some(c(1, 7))])));
    }

    #[test]
    fn compact_form_round_trips_and_resolves_against_the_same_epochs() {
        let cursors = [c(1, 5), c(2, 0), c(u64::MAX, u64::MAX)];
        let mut text = String::new();
        write_compact(&mut text, cursors);
        assert_eq!(text.len(), 16 + 3 + 1 + 1 + 20);
        let Ok(Composite::Compact { epochs_hash, offsets }) = Composite::parse(&text, 3) else {
            panic!("{text}")
        };
        assert_eq!(offsets, [5, 0, u64::MAX]);
        let epochs = [Epoch(1), Epoch(2), Epoch(u64::MAX)];
        assert_eq!(Composite::resolve_compact(epochs_hash, &offsets, &epochs), Ok(cursors.to_vec()));
        // One channel re-created: the hash no longer matches, and nothing says which one.
        let changed = [Epoch(1), Epoch(3), Epoch(u64::MAX)];
        assert_eq!(Composite::resolve_compact(epochs_hash, &offsets, &changed), Err(Mismatch));
        // Order matters: the same epochs in another order are other channels.
        let swapped = [Epoch(2), Epoch(1), Epoch(u64::MAX)];
        assert_eq!(Composite::resolve_compact(epochs_hash, &offsets, &swapped), Err(Mismatch));
    }

    #[test]
    fn compact_is_shorter_than_full_at_many_channels() {
        let cursors: Vec<Cursor> = (0..64).map(|i| c(0x9e37_79b9_7f4a_7c15 ^ i, 1000 + i)).collect();
        let (mut compact, mut full) = (String::new(), String::new());
        write_compact(&mut compact, cursors.iter().copied());
        write_full(&mut full, cursors.iter().copied().map(Some));
        assert!(compact.len() * 3 < full.len(), "{} vs {}", compact.len(), full.len());
        assert!(full.len() <= Composite::max_text_bytes(64));
    }

    #[test]
    fn entry_count_must_match_the_channels() {
        assert_eq!(Composite::parse("0000000000000001:5", 2), Err(CompositeError::WrongEntryCount));
        assert_eq!(Composite::parse("0000000000000001:5,,", 2), Err(CompositeError::WrongEntryCount));
        assert_eq!(Composite::parse("0123456789abcdef.1.2", 3), Err(CompositeError::WrongEntryCount));
        assert_eq!(Composite::parse("", 2), Err(CompositeError::WrongEntryCount));
    }

    #[test]
    fn rejections() {
        use CompositeError::*;
        let long = "0000000000000001:5,".repeat(3);
        assert_eq!(Composite::parse(&long, 1), Err(TooLong));
        assert_eq!(Composite::parse("0000000000000001:x", 1), Err(Entry(CursorError::OffsetNotDecimal)));
        assert_eq!(Composite::parse("0123456789abcdeg.1", 1), Err(BadHash));
        assert_eq!(Composite::parse("0123456789abcdef.", 1), Err(BadOffset));
        assert_eq!(Composite::parse("0123456789abcdef.1.", 2), Err(BadOffset));
        assert_eq!(Composite::parse("0123456789abcdef.+1", 1), Err(BadOffset));
        assert_eq!(Composite::parse("0123456789abcdef.18446744073709551616", 1), Err(BadOffset));
        // A multi-byte character before the separator never panics on slicing.
        assert!(Composite::parse("0123456789abcdé.1", 1).is_err());
        assert!(Composite::parse("0123456789abcde\u{e9}1", 1).is_err());
    }
}
