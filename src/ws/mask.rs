//! Payload masking: XOR with a 4-byte key, the same operation masks and unmasks.
//!
//! Implements: [RFC 6455 §5.3](https://www.rfc-editor.org/rfc/rfc6455#section-5.3)
//! ("octet i of the transformed data is the XOR of octet i of the original data with octet at
//! index i modulo 4 of the masking key"), for a payload that arrives in pieces (`offset`).
//!
//! Does not: choose keys (the caller draws them; §5.3 requires them to be unpredictable) or
//! decide who masks (see [`crate::ws::conn`]).

/// XORs `buf` with `key`, where `buf[0]` is octet `offset` of the frame payload (§5.3).
///
/// Word at a time: the key is rotated to `offset`, repeated into a `u64`, and applied to 8-byte
/// chunks (unaligned loads through `from_ne_bytes`, so any buffer alignment works), then byte by
/// byte to the tail. Gives exactly the bytes of [`apply_mask_bytewise`].
pub fn apply_mask(buf: &mut [u8], key: [u8; 4], offset: usize) {
    let mut key = key;
    key.rotate_left(offset % 4);
    let [k0, k1, k2, k3] = key;
    let key_word = u64::from_ne_bytes([k0, k1, k2, k3, k0, k1, k2, k3]);
    let mut chunks = buf.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let masked = u64::from_ne_bytes(word) ^ key_word;
        chunk.copy_from_slice(&masked.to_ne_bytes());
    }
    // The tail starts at a multiple of 8 bytes, so key index 0 lines up with its first byte.
    for (byte, k) in chunks.into_remainder().iter_mut().zip(key.iter().cycle()) {
        *byte ^= k;
    }
}

/// XORs `buf` with `key` one byte at a time, where `buf[0]` is octet `offset` of the payload:
/// the reference for [`apply_mask`], written as §5.3 states it.
pub fn apply_mask_bytewise(buf: &mut [u8], key: [u8; 4], offset: usize) {
    for (i, byte) in buf.iter_mut().enumerate() {
        // RFC 6455 §5.3: j = i MOD 4; transformed-octet-i = original-octet-i XOR masking-key-octet-j.
        // Wrapping keeps the index exact modulo 4 because 2^usize::BITS is a multiple of 4.
        *byte ^= key[offset.wrapping_add(i) % 4];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc6455_5_3_fast_mask_matches_bytewise_at_every_offset_length_alignment() {
        let key = [0x37, 0xfa, 0x21, 0x3d];
        let source: Vec<u8> = (0..320u32).map(|i| (i * 7 + 3) as u8).collect();
        for offset in 0..8 {
            for len in 0..=300 {
                for align in 0..8 {
                    let mut fast = source.clone();
                    let mut slow = source.clone();
                    apply_mask(&mut fast[align..align + len], key, offset);
                    apply_mask_bytewise(&mut slow[align..align + len], key, offset);
                    assert_eq!(fast, slow, "offset {offset} len {len} align {align}");
                }
            }
        }
    }

    #[test]
    fn rfc6455_5_3_masking_in_pieces_equals_masking_whole() {
        let key = [1, 2, 3, 4];
        let data: Vec<u8> = (0..100u8).collect();
        let mut whole = data.clone();
        apply_mask(&mut whole, key, 0);
        for cut in 0..=data.len() {
            let mut pieces = data.clone();
            let (a, b) = pieces.split_at_mut(cut);
            apply_mask(a, key, 0);
            apply_mask(b, key, cut);
            assert_eq!(pieces, whole, "cut {cut}");
        }
    }

    #[test]
    fn rfc6455_5_7_masked_hello() {
        let mut payload = *b"Hello";
        apply_mask(&mut payload, [0x37, 0xfa, 0x21, 0x3d], 0);
        assert_eq!(payload, [0x7f, 0x9f, 0x4d, 0x51, 0x58]);
        apply_mask(&mut payload, [0x37, 0xfa, 0x21, 0x3d], 0);
        assert_eq!(&payload, b"Hello");
    }

    #[test]
    fn bytewise_offset_near_usize_max_stays_exact() {
        let key = [1, 2, 4, 8];
        let mut a = [0u8; 8];
        let mut b = [0u8; 8];
        apply_mask_bytewise(&mut a, key, usize::MAX);
        apply_mask(&mut b, key, usize::MAX);
        assert_eq!(a, b);
        assert_eq!(a[0], 8);
    }
}
