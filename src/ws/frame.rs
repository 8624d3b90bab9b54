//! The frame header codec: the 2 to 14 bytes in front of every payload.
//!
//! Implements: [RFC 6455 §5.2](https://www.rfc-editor.org/rfc/rfc6455#section-5.2) (base
//! framing: FIN, RSV1-3, opcode, MASK, the three payload length forms, masking key) and the
//! header-level rules of [§5.5](https://www.rfc-editor.org/rfc/rfc6455#section-5.5) (control
//! frames are not fragmented and carry at most 125 bytes).
//!
//! Does not: check RSV bits, masking direction, fragmentation order or size limits (those depend
//! on the connection's role and state: [`crate::ws::conn`]); hold payload bytes.

use crate::ws::mask::apply_mask;
use crate::ws::Error;

/// The longest header: 2 bytes, an 8-byte extended length and a 4-byte masking key.
pub const MAX_HEADER_BYTES: usize = 14;

/// Largest payload of a control frame (§5.5).
pub const MAX_CONTROL_PAYLOAD_BYTES: u64 = 125;

/// The frame's opcode (§5.2); reserved values are rejected by [`FrameHeader::parse`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpCode {
    /// 0x0: continues a fragmented message (§5.4).
    Continuation,
    /// 0x1: first frame of a text message (UTF-8, §5.6).
    Text,
    /// 0x2: first frame of a binary message.
    Binary,
    /// 0x8: starts or answers the closing handshake (§5.5.1).
    Close,
    /// 0x9: asks for a pong (§5.5.2).
    Ping,
    /// 0xA: answers a ping or serves as a heartbeat (§5.5.3).
    Pong,
}

impl OpCode {
    /// The 4-bit wire value.
    pub fn as_u8(self) -> u8 {
        match self {
            OpCode::Continuation => 0x0,
            OpCode::Text => 0x1,
            OpCode::Binary => 0x2,
            OpCode::Close => 0x8,
            OpCode::Ping => 0x9,
            OpCode::Pong => 0xA,
        }
    }

    /// The opcode for a 4-bit wire value; reserved values fail with [`Error::ReservedOpCode`].
    pub fn from_u8(value: u8) -> Result<OpCode, Error> {
        match value {
            0x0 => Ok(OpCode::Continuation),
            0x1 => Ok(OpCode::Text),
            0x2 => Ok(OpCode::Binary),
            0x8 => Ok(OpCode::Close),
            0x9 => Ok(OpCode::Ping),
            0xA => Ok(OpCode::Pong),
            // RFC 6455 §5.2: "If an unknown opcode is received, the receiving endpoint MUST
            // _Fail the WebSocket Connection_."
            other => Err(Error::ReservedOpCode(other)),
        }
    }

    /// True for close, ping and pong: opcodes with the most significant bit set (§5.5).
    pub fn is_control(self) -> bool {
        self.as_u8() & 0x8 != 0
    }
}

/// One frame header as on the wire (§5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// FIN: this is the final fragment of a message.
    pub fin: bool,
    /// RSV1, RSV2, RSV3 as the low 3 bits (RSV1 = 0b100).
    pub rsv: u8,
    /// The opcode.
    pub opcode: OpCode,
    /// The masking key, present exactly when the MASK bit is set.
    pub mask: Option<[u8; 4]>,
    /// Payload length in bytes (at most 2^63 - 1).
    pub payload_len: u64,
}

impl FrameHeader {
    /// Parses a header from the front of `buf`.
    ///
    /// Returns `Ok(None)` when `buf` holds too few bytes to decide (call again with more), or the
    /// header and how many bytes of `buf` it occupies (the payload follows). Errors on a reserved
    /// opcode, a 64-bit length with its most significant bit set, a fragmented control frame
    /// and a control frame over 125 bytes. The checks run in wire order, so a prefix that fails
    /// fails the same way whatever follows it.
    pub fn parse(buf: &[u8]) -> Result<Option<(FrameHeader, usize)>, Error> {
        let &[b0, b1, ..] = buf else {
            return Ok(None);
        };
        let fin = b0 & 0x80 != 0;
        let rsv = (b0 >> 4) & 0x7;
        let opcode = OpCode::from_u8(b0 & 0x0F)?;
        // RFC 6455 §5.5: "All control frames ... MUST NOT be fragmented."
        if opcode.is_control() && !fin {
            return Err(Error::FragmentedControlFrame);
        }
        let masked = b1 & 0x80 != 0;
        let (payload_len, mut used) = match b1 & 0x7F {
            126 => {
                let Some(&[h, l]) = buf.get(2..4) else {
                    return Ok(None);
                };
                (u64::from(u16::from_be_bytes([h, l])), 4)
            }
            127 => {
                let Some(bytes) = buf.get(2..10) else {
                    return Ok(None);
                };
                let mut be = [0u8; 8];
                be.copy_from_slice(bytes);
                let len = u64::from_be_bytes(be);
                // RFC 6455 §5.2: 64-bit length "(the most significant bit MUST be 0)".
                if len >> 63 != 0 {
                    return Err(Error::PayloadLengthMsbSet);
                }
                (len, 10)
            }
            short => (u64::from(short), 2),
        };
        // RFC 6455 §5.5: "All control frames MUST have a payload length of 125 bytes or less."
        if opcode.is_control() && payload_len > MAX_CONTROL_PAYLOAD_BYTES {
            return Err(Error::ControlFrameTooLong);
        }
        let mask = if masked {
            let Some(&[k0, k1, k2, k3]) = buf.get(used..used + 4) else {
                return Ok(None);
            };
            used += 4;
            Some([k0, k1, k2, k3])
        } else {
            None
        };
        let header = FrameHeader { fin, rsv, opcode, mask, payload_len };
        Ok(Some((header, used)))
    }

    /// Bytes [`FrameHeader::encode`] writes: 2, plus 2 or 8 for an extended length, plus 4 for a
    /// masking key.
    pub fn encoded_len(&self) -> usize {
        let length_bytes = match self.payload_len {
            0..=125 => 0,
            126..=0xFFFF => 2,
            _ => 8,
        };
        2 + length_bytes + if self.mask.is_some() { 4 } else { 0 }
    }

    /// Appends the header to `out`, with the length in its minimal form.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut b0 = self.opcode.as_u8() | ((self.rsv & 0x7) << 4);
        if self.fin {
            b0 |= 0x80;
        }
        let mask_bit = if self.mask.is_some() { 0x80 } else { 0 };
        out.push(b0);
        // RFC 6455 §5.2: "the minimal number of bytes MUST be used to encode the length".
        match self.payload_len {
            len @ 0..=125 => out.push(mask_bit | len as u8),
            len @ 126..=0xFFFF => {
                out.push(mask_bit | 126);
                out.extend_from_slice(&(len as u16).to_be_bytes());
            }
            len => {
                out.push(mask_bit | 127);
                // RFC 6455 §5.2: the most significant bit MUST be 0 (a caller bug otherwise).
                debug_assert!(len >> 63 == 0, "payload length over 2^63 - 1");
                out.extend_from_slice(&len.to_be_bytes());
            }
        }
        if let Some(key) = self.mask {
            out.extend_from_slice(&key);
        }
    }
}

/// Appends one whole frame to `out`: the header, then a copy of `payload`, masked with `mask`
/// when a key is given (the client role, §5.3). RSV bits are 0.
pub fn encode_frame(fin: bool, opcode: OpCode, payload: &[u8], mask: Option<[u8; 4]>, out: &mut Vec<u8>) {
    encode_frame_with(fin, 0, opcode, payload, mask, out);
}

/// Appends one whole final frame with RSV bits `rsv` (RSV1 = 0b100; an extension such as
/// permessage-deflate must have been negotiated), like [`encode_frame`].
pub fn encode_frame_rsv(rsv: u8, opcode: OpCode, payload: &[u8], mask: Option<[u8; 4]>, out: &mut Vec<u8>) {
    encode_frame_with(true, rsv, opcode, payload, mask, out);
}

fn encode_frame_with(
    fin: bool,
    rsv: u8,
    opcode: OpCode,
    payload: &[u8],
    mask: Option<[u8; 4]>,
    out: &mut Vec<u8>,
) {
    let header = FrameHeader { fin, rsv, opcode, mask, payload_len: payload.len() as u64 };
    out.reserve(header.encoded_len() + payload.len());
    header.encode(out);
    let start = out.len();
    out.extend_from_slice(payload);
    if let Some(key) = mask {
        apply_mask(&mut out[start..], key, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    /// Parses `wire` as one whole frame: the header, and the unmasked payload.
    fn parse_whole(wire: &[u8]) -> (FrameHeader, Vec<u8>) {
        let (header, used) = FrameHeader::parse(wire).unwrap().unwrap();
        assert_eq!(used, header.encoded_len());
        let mut payload = wire[used..].to_vec();
        assert_eq!(payload.len() as u64, header.payload_len);
        if let Some(key) = header.mask {
            apply_mask(&mut payload, key, 0);
        }
        // Every strict prefix of the header needs more bytes.
        for cut in 0..used {
            assert_eq!(FrameHeader::parse(&wire[..cut]), Ok(None), "cut {cut}");
        }
        (header, payload)
    }

    fn encoded(fin: bool, opcode: OpCode, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
        let mut out = Vec::new();
        encode_frame(fin, opcode, payload, mask, &mut out);
        out
    }

    #[test]
    fn rfc6455_5_7_single_frame_unmasked_text() {
        let wire = [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
        let (h, payload) = parse_whole(&wire);
        assert!(h.fin);
        assert_eq!((h.opcode, h.mask, h.rsv), (OpCode::Text, None, 0));
        assert_eq!(payload, b"Hello");
        assert_eq!(encoded(true, OpCode::Text, b"Hello", None), wire);
    }

    #[test]
    fn rfc6455_5_7_single_frame_masked_text() {
        let wire = [0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58];
        let (h, payload) = parse_whole(&wire);
        assert_eq!((h.fin, h.opcode, h.mask), (true, OpCode::Text, Some(KEY)));
        assert_eq!(payload, b"Hello");
        assert_eq!(encoded(true, OpCode::Text, b"Hello", Some(KEY)), wire);
    }

    #[test]
    fn rfc6455_5_7_fragmented_unmasked_text() {
        let first = [0x01, 0x03, 0x48, 0x65, 0x6c];
        let second = [0x80, 0x02, 0x6c, 0x6f];
        let (h1, p1) = parse_whole(&first);
        assert_eq!((h1.fin, h1.opcode), (false, OpCode::Text));
        assert_eq!(p1, b"Hel");
        let (h2, p2) = parse_whole(&second);
        assert_eq!((h2.fin, h2.opcode), (true, OpCode::Continuation));
        assert_eq!(p2, b"lo");
        assert_eq!(encoded(false, OpCode::Text, b"Hel", None), first);
        assert_eq!(encoded(true, OpCode::Continuation, b"lo", None), second);
    }

    #[test]
    fn rfc6455_5_7_unmasked_ping_and_masked_pong() {
        let ping = [0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
        let (h, payload) = parse_whole(&ping);
        assert_eq!((h.fin, h.opcode, h.mask), (true, OpCode::Ping, None));
        assert_eq!(payload, b"Hello");
        assert_eq!(encoded(true, OpCode::Ping, b"Hello", None), ping);

        let pong = [0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58];
        let (h, payload) = parse_whole(&pong);
        assert_eq!((h.fin, h.opcode, h.mask), (true, OpCode::Pong, Some(KEY)));
        assert_eq!(payload, b"Hello");
        assert_eq!(encoded(true, OpCode::Pong, b"Hello", Some(KEY)), pong);
    }

    #[test]
    fn rfc6455_5_7_256_bytes_binary_16_bit_length() {
        let payload = vec![0xAB; 256];
        let mut wire = vec![0x82, 0x7E, 0x01, 0x00];
        wire.extend_from_slice(&payload);
        let (h, parsed) = parse_whole(&wire);
        assert_eq!((h.opcode, h.payload_len, h.mask), (OpCode::Binary, 256, None));
        assert_eq!(parsed, payload);
        assert_eq!(encoded(true, OpCode::Binary, &payload, None), wire);
    }

    #[test]
    fn rfc6455_5_7_64_kib_binary_64_bit_length() {
        let payload = vec![0xCD; 65536];
        let mut wire = vec![0x82, 0x7F, 0, 0, 0, 0, 0, 1, 0, 0];
        wire.extend_from_slice(&payload);
        let (h, parsed) = parse_whole(&wire);
        assert_eq!((h.opcode, h.payload_len), (OpCode::Binary, 65536));
        assert_eq!(parsed, payload);
        assert_eq!(encoded(true, OpCode::Binary, &payload, None), wire);
    }

    #[test]
    fn rfc6455_5_2_length_form_boundaries_round_trip() {
        for (len, header_bytes) in [(0, 2), (125, 2), (126, 4), (65535, 4), (65536, 10)] {
            for mask in [None, Some(KEY)] {
                let h = FrameHeader { fin: true, rsv: 0b101, opcode: OpCode::Binary, mask, payload_len: len };
                let mut out = Vec::new();
                h.encode(&mut out);
                let expected = header_bytes + if mask.is_some() { 4 } else { 0 };
                assert_eq!(out.len(), expected);
                assert_eq!(h.encoded_len(), expected);
                assert_eq!(FrameHeader::parse(&out), Ok(Some((h, expected))));
            }
        }
        let max = FrameHeader {
            fin: false,
            rsv: 0,
            opcode: OpCode::Continuation,
            mask: Some(KEY),
            payload_len: (1 << 63) - 1,
        };
        let mut out = Vec::new();
        max.encode(&mut out);
        assert_eq!(out.len(), MAX_HEADER_BYTES);
        assert_eq!(FrameHeader::parse(&out), Ok(Some((max, MAX_HEADER_BYTES))));
    }

    #[test]
    fn rfc6455_5_2_reserved_opcode_fail() {
        for op in (0x3..=0x7).chain(0xB..=0xF) {
            assert_eq!(FrameHeader::parse(&[0x80 | op, 0x00]), Err(Error::ReservedOpCode(op)));
        }
    }

    #[test]
    fn rfc6455_5_2_payload_length_msb_set_fail() {
        let wire = [0x82, 0x7F, 0x80, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(FrameHeader::parse(&wire[..9]), Ok(None));
        assert_eq!(FrameHeader::parse(&wire), Err(Error::PayloadLengthMsbSet));
    }

    #[test]
    fn rfc6455_5_5_fragmented_control_frame_fail() {
        for op in [0x8, 0x9, 0xA] {
            assert_eq!(FrameHeader::parse(&[op, 0x00]), Err(Error::FragmentedControlFrame));
        }
    }

    #[test]
    fn rfc6455_5_5_control_frame_max_125() {
        assert!(FrameHeader::parse(&[0x89, 125]).unwrap().is_some());
        assert_eq!(FrameHeader::parse(&[0x89, 126, 0, 126]), Err(Error::ControlFrameTooLong));
        assert_eq!(FrameHeader::parse(&[0x88, 127, 0, 0, 0, 0, 0, 0, 1, 0]), Err(Error::ControlFrameTooLong));
    }

    #[test]
    fn opcode_is_control() {
        assert!(!OpCode::Continuation.is_control());
        assert!(!OpCode::Text.is_control());
        assert!(!OpCode::Binary.is_control());
        assert!(OpCode::Close.is_control());
        assert!(OpCode::Ping.is_control());
        assert!(OpCode::Pong.is_control());
    }

    #[test]
    fn parse_never_panics_on_short_or_odd_input() {
        for b0 in 0..=255u8 {
            for b1 in [0u8, 1, 125, 126, 127, 0x80, 0xFE, 0xFF] {
                let wire = [b0, b1, 0xFF, 0xFF, 0xFF];
                for cut in 0..=wire.len() {
                    let _ = FrameHeader::parse(&wire[..cut]);
                }
            }
        }
    }
}
