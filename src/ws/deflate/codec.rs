//! Compressing and inflating whole messages for permessage-deflate.
//!
//! Implements: [RFC 7692 §7.2.1](https://www.rfc-editor.org/rfc/rfc7692#section-7.2.1)
//! (compress with DEFLATE, flush to a byte boundary with an empty stored block, remove its
//! trailing `00 00 ff ff`) and [§7.2.2](https://www.rfc-editor.org/rfc/rfc7692#section-7.2.2)
//! (append `00 00 ff ff` and inflate), window sizes of 9 to 15 bits (§7.1.2), and inflation
//! bounded by the message limit (a decompression bomb is [`InflateError::TooLarge`], close code
//! 1009, RFC 6455 §10.4).
//!
//! Memory: a [`Codec`] allocates zlib state on first use only: one compressor per window size
//! used, one decompressor. An event loop keeps one [`SharedCodec`] for all its connections and
//! resets it per message (every server connection negotiated no context takeover), so an idle
//! connection holds no zlib state at all. The codec also carries the loop's [`Spares`], the
//! reader states and message buffers of frames split across reads (not zlib's, but borrowed
//! the same way, by every reading call).
//!
//! Does not: frame anything (see [`crate::ws::conn`]), or keep a compression context across
//! messages (always allowed to a sender, §7.1.1).

use std::fmt;
use std::sync::{Mutex, MutexGuard};

use crate::ws::reading::Spares;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// The empty stored block a sync flush ends with, removed by the sender and put back by the
/// receiver (RFC 7692 §7.2.1, §7.2.2).
pub const TRAILER: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// The compression level: zlib's default, a good ratio at moderate CPU (the server compresses a
/// published message once for all its subscribers).
const LEVEL: u32 = 6;

/// Smallest payload compressed by default, in bytes: below it the frame grows or barely
/// shrinks and the CPU is wasted.
pub const DEFAULT_MIN_BYTES: usize = 128;

/// An inflate failure; each fails the connection with [`InflateError::close_code`].
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InflateError {
    /// The message inflates to more than the message limit (RFC 6455 §10.4): 1009.
    TooLarge {
        /// The limit, in bytes.
        max_bytes: u64,
    },
    /// The payload is not valid DEFLATE data (RFC 7692 §7.2.2): 1007.
    Corrupt,
}

impl InflateError {
    /// The close code: 1009 for a message too big, 1007 for data inconsistent with its type.
    pub fn close_code(&self) -> u16 {
        match self {
            InflateError::TooLarge { .. } => 1009,
            InflateError::Corrupt => 1007,
        }
    }
}

impl fmt::Display for InflateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InflateError::TooLarge { max_bytes } => {
                write!(f, "compressed message inflates past the {max_bytes}-byte limit (RFC 6455 §10.4)")
            }
            InflateError::Corrupt => {
                f.write_str("compressed message is not valid DEFLATE data (RFC 7692 §7.2.2)")
            }
        }
    }
}

impl std::error::Error for InflateError {}

/// Compressors (one per window size, 9 to 15 bits) and a decompressor, each made on first use.
pub struct Codec {
    /// Payloads shorter than this are sent uncompressed.
    min_bytes: usize,
    /// Index `bits - 9`.
    compressors: [Option<Box<Compress>>; 7],
    decompressor: Option<Box<Decompress>>,
    /// The decompressor finished a stream (a final block) or failed: reset before reuse.
    decompressor_dirty: bool,
    /// Messages compressed since creation, for the metrics.
    compressed_messages: u64,
    /// The loop's spare reader states and message buffers (see [`crate::ws::reading`]): they
    /// travel with the codec because every reading call of a `WsConn` already borrows it, once
    /// per input, from the loop.
    pub spares: Spares,
}

impl fmt::Debug for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Codec")
            .field("min_bytes", &self.min_bytes)
            .field("compressors", &self.compressors.iter().filter(|c| c.is_some()).count())
            .field("decompressor", &self.decompressor.is_some())
            .finish()
    }
}

impl Default for Codec {
    fn default() -> Self {
        Codec::new(DEFAULT_MIN_BYTES)
    }
}

impl Codec {
    /// A codec that compresses payloads of at least `min_bytes`; allocates nothing yet.
    pub fn new(min_bytes: usize) -> Codec {
        Codec {
            min_bytes,
            compressors: Default::default(),
            decompressor: None,
            decompressor_dirty: false,
            compressed_messages: 0,
            spares: Spares::default(),
        }
    }

    /// Payloads shorter than this are sent uncompressed.
    pub fn min_bytes(&self) -> usize {
        self.min_bytes
    }

    /// How many messages [`Codec::compress`] compressed (kept or not).
    pub fn compressed_messages(&self) -> u64 {
        self.compressed_messages
    }

    /// Compresses `payload` as one message with a fresh context and a window of `window_bits`
    /// (9 to 15; others are clamped), appending the DEFLATE data without its trailing
    /// `00 00 ff ff` to `out`. Returns false, with `out` as it was, when `payload` is shorter
    /// than the threshold or the result would not be smaller: send it uncompressed then.
    pub fn compress(&mut self, payload: &[u8], window_bits: u8, out: &mut Vec<u8>) -> bool {
        if payload.len() < self.min_bytes {
            return false;
        }
        self.compressed_messages += 1;
        let bits = window_bits.clamp(9, 15);
        let compressor = self.compressors[usize::from(bits - 9)].get_or_insert_with(|| {
            Box::new(Compress::new_with_window_bits(Compression::new(LEVEL), false, bits))
        });
        // RFC 7692 §7.1.1: a sender may always start a message with an empty context.
        compressor.reset();
        let start = out.len();
        // Worth keeping only when smaller than the payload; give up past that size.
        let limit = start + payload.len();
        out.reserve(payload.len() / 2 + 16);
        let mut input = payload;
        loop {
            if out.len() == out.capacity() {
                if out.len() >= limit + TRAILER.len() {
                    out.truncate(start);
                    return false;
                }
                out.reserve((out.len() - start).max(64));
            }
            let before = compressor.total_in();
            // RFC 7692 §7.2.1: "Compress all the octets of the payload of the message using
            // DEFLATE" and flush so that the data ends on a byte boundary with an empty block.
            match compressor.compress_vec(input, out, FlushCompress::Sync) {
                Ok(_) => {}
                Err(_) => {
                    out.truncate(start);
                    return false;
                }
            }
            let used = (compressor.total_in() - before) as usize;
            input = &input[used..];
            // The flush is complete when input is used up and zlib left spare room.
            if input.is_empty() && out.len() < out.capacity() {
                break;
            }
        }
        // RFC 7692 §7.2.1: "Remove 4 octets (that are 0x00 0x00 0xff 0xff) from the tail end."
        if out.len() >= start + TRAILER.len() && out[out.len() - TRAILER.len()..] == TRAILER {
            out.truncate(out.len() - TRAILER.len());
        }
        if out.len() - start >= payload.len() {
            out.truncate(start);
            return false;
        }
        true
    }

    /// Inflates one message's compressed payload `data` (RFC 7692 §7.2.2), appending it to
    /// `out`; fails once the output would pass `max_bytes`, having reserved at most that much.
    /// `reset` starts from an empty context (the peer promised no context takeover); otherwise
    /// the context of the previous message is kept.
    pub fn decompress(
        &mut self,
        data: &[u8],
        max_bytes: u64,
        reset: bool,
        out: &mut Vec<u8>,
    ) -> Result<(), InflateError> {
        let max = usize::try_from(max_bytes).unwrap_or(usize::MAX);
        let decompressor =
            self.decompressor.get_or_insert_with(|| Box::new(Decompress::new_with_window_bits(false, 15)));
        if reset || self.decompressor_dirty {
            decompressor.reset(false);
            self.decompressor_dirty = false;
        }
        let start = out.len();
        let result = inflate(decompressor, data, start, max, out);
        if result.is_err() {
            out.truncate(start);
            self.decompressor_dirty = true;
        }
        match result {
            Ok(true) => {
                // The sender ended the stream (a final block): the next message starts afresh.
                self.decompressor_dirty = true;
                Ok(())
            }
            Ok(false) => Ok(()),
            Err(error) => Err(error.with_max(max_bytes)),
        }
    }
}

impl InflateError {
    fn with_max(self, max_bytes: u64) -> InflateError {
        match self {
            InflateError::TooLarge { .. } => InflateError::TooLarge { max_bytes },
            other => other,
        }
    }
}

/// Feeds `data` then [`TRAILER`] to `decompressor`; true when the stream ended.
fn inflate(
    decompressor: &mut Decompress,
    data: &[u8],
    start: usize,
    max: usize,
    out: &mut Vec<u8>,
) -> Result<bool, InflateError> {
    // RFC 7692 §7.2.2: "Append 4 octets of 0x00 0x00 0xff 0xff to the tail end of the payload
    // of the message" and decompress.
    for mut input in [data, &TRAILER[..]] {
        loop {
            if out.len() == out.capacity() {
                let have = out.len() - start;
                // RFC 6455 §10.4: the inflated message is bounded like any other; one byte past
                // the limit proves it too large.
                if have > max {
                    return Err(InflateError::TooLarge { max_bytes: 0 });
                }
                let grow = have.max(256).min(max + 1 - have);
                out.reserve_exact(grow);
            }
            let (before_in, before_out) = (decompressor.total_in(), decompressor.total_out());
            let status = decompressor
                .decompress_vec(input, out, FlushDecompress::Sync)
                .map_err(|_| InflateError::Corrupt)?;
            if out.len() - start > max {
                return Err(InflateError::TooLarge { max_bytes: 0 });
            }
            let used = (decompressor.total_in() - before_in) as usize;
            input = &input[used..];
            if status == Status::StreamEnd {
                // Anything after the final block (the trailer, or more) is ignored, as zlib
                // users do.
                return Ok(true);
            }
            let produced = decompressor.total_out() - before_out;
            if input.is_empty() && out.len() < out.capacity() {
                break;
            }
            if used == 0 && produced == 0 && out.len() < out.capacity() {
                // No progress with room to spare: truncated or stuck data.
                return Err(InflateError::Corrupt);
            }
        }
    }
    Ok(false)
}

/// The codec of one event loop, lent to the connection being served. The lock is never
/// contended (one loop, one thread); it makes the loop's environment shareable.
#[derive(Debug, Default)]
pub struct SharedCodec(Mutex<Codec>);

impl SharedCodec {
    /// A shared codec compressing payloads of at least `min_bytes`.
    pub fn new(min_bytes: usize) -> SharedCodec {
        SharedCodec(Mutex::new(Codec::new(min_bytes)))
    }

    /// The codec, for the duration of one message. A panic while it was held (none is known)
    /// only leaves state that the next message's reset clears.
    pub fn lock(&self) -> MutexGuard<'_, Codec> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Incompressible bytes (xorshift64).
    fn noise(len: usize) -> Vec<u8> {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    fn inflate_all(data: &[u8]) -> Result<Vec<u8>, InflateError> {
        let mut out = Vec::new();
        Codec::new(0).decompress(data, 1 << 20, true, &mut out).map(|()| out)
    }

    #[test]
    fn rfc7692_7_2_3_1_hello_compressed() {
        // "A message "Hello" compressed and sent in one frame": 0xf2 0x48 0xcd 0xc9 0xc9 0x07 0x00.
        assert_eq!(inflate_all(&[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]).unwrap(), b"Hello");
    }

    #[test]
    fn rfc7692_7_2_3_2_context_takeover_second_message() {
        // Two "Hello" messages with context takeover: the second is 0xf2 0x00 0x11 0x00 0x00.
        let mut codec = Codec::new(0);
        let mut out = Vec::new();
        codec.decompress(&[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00], 100, true, &mut out).unwrap();
        out.clear();
        codec.decompress(&[0xf2, 0x00, 0x11, 0x00, 0x00], 100, false, &mut out).unwrap();
        assert_eq!(out, b"Hello");
        // Without the context the reference cannot be resolved.
        assert_eq!(
            codec.decompress(&[0xf2, 0x00, 0x11, 0x00, 0x00], 100, true, &mut Vec::new()),
            Err(InflateError::Corrupt)
        );
    }

    #[test]
    fn rfc7692_7_2_3_3_deflate_block_with_no_compression() {
        // "Hello" in a stored block: 0x00 0x05 0x00 0xfa 0xff 0x48 0x65 0x6c 0x6c 0x6f 0x00.
        let data = [0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00];
        assert_eq!(inflate_all(&data).unwrap(), b"Hello");
    }

    #[test]
    fn rfc7692_7_2_3_4_bfinal_set() {
        // With BFINAL set: 0xf3 0x48 0xcd 0xc9 0xc9 0x07 0x00 0x00; the next message resets.
        let mut codec = Codec::new(0);
        let mut out = Vec::new();
        codec.decompress(&[0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00], 100, false, &mut out).unwrap();
        assert_eq!(out, b"Hello");
        out.clear();
        codec.decompress(&[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00], 100, false, &mut out).unwrap();
        assert_eq!(out, b"Hello");
    }

    #[test]
    fn rfc7692_7_2_3_5_two_deflate_blocks_in_one_message() {
        // 0xf2 0x48 0x05 0x00 0x00 0x00 0xff 0xff 0xca 0xc9 0xc9 0x07 0x00: "He" then "llo".
        let data = [0xf2, 0x48, 0x05, 0x00, 0x00, 0x00, 0xff, 0xff, 0xca, 0xc9, 0xc9, 0x07, 0x00];
        assert_eq!(inflate_all(&data).unwrap(), b"Hello");
    }

    #[test]
    fn rfc7692_7_2_3_6_empty_message() {
        // "An empty message compressed": 0x00 (an empty stored block without its trailer).
        assert_eq!(inflate_all(&[0x00]).unwrap(), b"");
        assert_eq!(inflate_all(&[0x02, 0x00]).unwrap(), b"");
        let mut out = Vec::new();
        assert!(Codec::new(0).compress(b"", 15, &mut out) || out.is_empty());
    }

    #[test]
    fn rfc7692_7_2_1_compress_strips_trailer_and_round_trips_at_every_window() {
        let payload = br#"{"id":"1:42","event":"tick","data":{"price":101.25,"symbol":"ABC"}}"#.repeat(20);
        for bits in 9..=15 {
            let mut codec = Codec::new(0);
            let mut out = Vec::new();
            assert!(codec.compress(&payload, bits, &mut out));
            assert_ne!(out[out.len() - 4..], TRAILER);
            assert!(out.len() < payload.len() / 4, "{bits}: {}", out.len());
            assert_eq!(inflate_all(&out).unwrap(), payload);
            // Reset per message: the same input compresses to the same bytes.
            let mut again = Vec::new();
            assert!(codec.compress(&payload, bits, &mut again));
            assert_eq!(again, out);
        }
    }

    #[test]
    fn rfc7692_7_1_2_window_bits_are_honoured() {
        // A repeat 600 bytes back can be referenced with a 10-bit window (1024) but not with a
        // 9-bit one (512): the 9-bit output must be larger.
        let mut block = noise(600);
        block.extend_from_within(..);
        let (mut nine, mut ten) = (Vec::new(), Vec::new());
        assert!(!Codec::new(0).compress(&block, 9, &mut nine) || nine.len() > 1100, "{}", nine.len());
        assert!(Codec::new(0).compress(&block, 10, &mut ten));
        assert!(ten.len() < 700, "{}", ten.len());
    }

    #[test]
    fn compress_only_above_threshold_and_when_smaller() {
        let mut codec = Codec::new(128);
        let mut out = Vec::new();
        assert!(!codec.compress(&[b'a'; 127], 15, &mut out));
        assert!(out.is_empty());
        assert!(codec.compress(&[b'a'; 128], 15, &mut out));
        // Random bytes do not shrink.
        let mut out = vec![1, 2, 3];
        assert!(!codec.compress(&noise(4096), 15, &mut out));
        assert_eq!(out, [1, 2, 3]);
    }

    #[test]
    fn rfc6455_10_4_inflation_bounded_by_message_limit() {
        let mut codec = Codec::new(0);
        let mut bomb = Vec::new();
        assert!(codec.compress(&vec![0u8; 1 << 20], 15, &mut bomb));
        assert!(bomb.len() < 2048);
        let mut out = Vec::new();
        assert_eq!(
            codec.decompress(&bomb, 1000, true, &mut out),
            Err(InflateError::TooLarge { max_bytes: 1000 })
        );
        assert!(out.capacity() <= 1001 + 256, "{}", out.capacity());
        assert!(out.is_empty());
        assert_eq!(InflateError::TooLarge { max_bytes: 1 }.close_code(), 1009);
        // Exactly at the limit is fine.
        let mut exact = Vec::new();
        assert!(codec.compress(&[7u8; 1000], 15, &mut exact));
        codec.decompress(&exact, 1000, true, &mut out).unwrap();
        assert_eq!(out.len(), 1000);
    }

    #[test]
    fn rfc7692_7_2_2_corrupt_data_fails_1007_and_the_codec_recovers() {
        let mut codec = Codec::new(0);
        assert_eq!(
            codec.decompress(&[0xff, 0xff, 0xff], 100, true, &mut Vec::new()),
            Err(InflateError::Corrupt)
        );
        assert_eq!(InflateError::Corrupt.close_code(), 1007);
        let mut out = Vec::new();
        codec.decompress(&[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00], 100, false, &mut out).unwrap();
        assert_eq!(out, b"Hello");
    }
}
