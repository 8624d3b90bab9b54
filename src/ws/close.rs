//! Close codes and the payload of a close frame.
//!
//! Implements: [RFC 6455 §5.5.1](https://www.rfc-editor.org/rfc/rfc6455#section-5.5.1) (the
//! body: a 2-byte status code, then a UTF-8 reason) and
//! [§7.4](https://www.rfc-editor.org/rfc/rfc6455#section-7.4) (which codes may appear on the
//! wire), plus 1012-1014 from the IANA "WebSocket Close Code Number Registry" (§11.7).
//!
//! Does not: run the closing handshake ([`crate::ws::conn`] does).

use std::fmt;

use crate::ws::frame::MAX_CONTROL_PAYLOAD_BYTES;
use crate::ws::Error;

/// Longest close reason that fits a control frame after the 2-byte code (§5.5).
pub const MAX_CLOSE_REASON_BYTES: usize = MAX_CONTROL_PAYLOAD_BYTES as usize - 2;

/// A close status code (§7.4), as on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CloseCode(pub u16);

impl CloseCode {
    /// 1000: the purpose of the connection was fulfilled.
    pub const NORMAL: CloseCode = CloseCode(1000);
    /// 1001: the endpoint is going away (server shutdown, page navigation).
    pub const GOING_AWAY: CloseCode = CloseCode(1001);
    /// 1002: the peer broke the protocol.
    pub const PROTOCOL_ERROR: CloseCode = CloseCode(1002);
    /// 1003: a data type this endpoint cannot accept (e.g. binary for a text-only endpoint).
    pub const UNSUPPORTED_DATA: CloseCode = CloseCode(1003);
    /// 1005: no status code was present. MUST NOT be sent (§7.4.1); for reporting only.
    pub const NO_STATUS_RECEIVED: CloseCode = CloseCode(1005);
    /// 1006: closed without a close frame. MUST NOT be sent (§7.4.1); for reporting only.
    pub const ABNORMAL_CLOSURE: CloseCode = CloseCode(1006);
    /// 1007: data inconsistent with the message type (e.g. non-UTF-8 text).
    pub const INVALID_PAYLOAD: CloseCode = CloseCode(1007);
    /// 1008: a message violates the endpoint's policy.
    pub const POLICY_VIOLATION: CloseCode = CloseCode(1008);
    /// 1009: a message too big to process (§10.4).
    pub const MESSAGE_TOO_BIG: CloseCode = CloseCode(1009);
    /// 1010: the client expected an extension the server did not negotiate.
    pub const MANDATORY_EXTENSION: CloseCode = CloseCode(1010);
    /// 1011: the server hit an unexpected condition.
    pub const INTERNAL_ERROR: CloseCode = CloseCode(1011);
    /// 1015: the TLS handshake failed. MUST NOT be sent (§7.4.1); for reporting only.
    pub const TLS_HANDSHAKE: CloseCode = CloseCode(1015);

    /// True for codes an endpoint may send and must accept: 1000-1003, 1007-1011, 1012-1014
    /// (registered with IANA after RFC 6455: service restart, try again later, bad gateway) and
    /// 3000-4999 (libraries and applications).
    pub fn is_valid_on_wire(self) -> bool {
        // RFC 6455 §7.4.1: 1005, 1006 and 1015 "MUST NOT be set as a status code in a Close
        // control frame by an endpoint"; §7.4.2: 0-999 "are not used", 1000-2999 are reserved
        // for the protocol and its registered extensions.
        matches!(self.0, 1000..=1003 | 1007..=1014 | 3000..=4999)
    }
}

impl fmt::Display for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The body of a close frame that carries one (§5.5.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseFrame {
    /// The status code.
    pub code: CloseCode,
    /// Why, for humans; may be empty. At most [`MAX_CLOSE_REASON_BYTES`] go on the wire.
    pub reason: String,
}

/// Parses a received close payload: `None` for an empty one, which carries no status.
///
/// Fails on a 1-byte payload and on a code not valid on the wire (close code 1002), and on a
/// reason that is not UTF-8 (1007).
pub fn parse_close_payload(payload: &[u8]) -> Result<Option<CloseFrame>, Error> {
    let (code, reason) = match payload {
        [] => return Ok(None),
        // RFC 6455 §5.5.1: "If there is a body, the first two bytes of the body MUST be a 2-byte
        // unsigned integer ... representing a status code".
        [_] => return Err(Error::InvalidClosePayload),
        [hi, lo, reason @ ..] => (u16::from_be_bytes([*hi, *lo]), reason),
    };
    // RFC 6455 §7.4.1: 1005, 1006, 1015 MUST NOT be sent; §7.4.2: 0-999 and unassigned codes
    // below 3000 are not valid, so the peer broke the protocol.
    if !CloseCode(code).is_valid_on_wire() {
        return Err(Error::InvalidCloseCode(code));
    }
    // RFC 6455 §5.5.1: the body after the code "MUST be UTF-8-encoded data"; §8.1 makes invalid
    // UTF-8 fail the connection.
    let reason = std::str::from_utf8(reason).map_err(|_| Error::InvalidCloseReason)?;
    Ok(Some(CloseFrame { code: CloseCode(code), reason: reason.to_string() }))
}

/// Appends the close payload for `frame`: the code, big-endian, then the reason cut to at most
/// [`MAX_CLOSE_REASON_BYTES`] at a character boundary, so the frame is always a valid control
/// frame. The caller checks [`CloseCode::is_valid_on_wire`].
pub fn encode_close_payload(frame: &CloseFrame, out: &mut Vec<u8>) {
    out.extend_from_slice(&frame.code.0.to_be_bytes());
    let mut end = frame.reason.len().min(MAX_CLOSE_REASON_BYTES);
    while !frame.reason.is_char_boundary(end) {
        end -= 1;
    }
    out.extend_from_slice(&frame.reason.as_bytes()[..end]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc6455_7_4_valid_and_invalid_codes() {
        // Autobahn 7.7.x valid codes.
        for code in [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999] {
            assert!(CloseCode(code).is_valid_on_wire(), "{code}");
        }
        // Autobahn 7.9.x invalid codes, plus the edges.
        for code in [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535] {
            assert!(!CloseCode(code).is_valid_on_wire(), "{code}");
        }
    }

    #[test]
    fn rfc6455_7_4_1_reserved_codes_never_valid_on_wire() {
        for code in [CloseCode::NO_STATUS_RECEIVED, CloseCode::ABNORMAL_CLOSURE, CloseCode::TLS_HANDSHAKE] {
            assert!(!code.is_valid_on_wire());
        }
    }

    #[test]
    fn rfc6455_5_5_1_empty_payload_has_no_status() {
        assert_eq!(parse_close_payload(&[]), Ok(None));
    }

    #[test]
    fn rfc6455_5_5_1_one_byte_payload_fail() {
        assert_eq!(parse_close_payload(&[3]), Err(Error::InvalidClosePayload));
    }

    #[test]
    fn rfc6455_7_4_invalid_close_code_fail() {
        assert_eq!(parse_close_payload(&[0x03, 0xED]), Err(Error::InvalidCloseCode(1005)));
        assert_eq!(parse_close_payload(&[0x00, 0x00, b'x']), Err(Error::InvalidCloseCode(0)));
    }

    #[test]
    fn rfc6455_5_5_1_close_reason_invalid_utf8_fail() {
        let mut payload = vec![0x03, 0xE8];
        payload.extend_from_slice(b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80");
        assert_eq!(parse_close_payload(&payload), Err(Error::InvalidCloseReason));
    }

    #[test]
    fn rfc6455_5_5_1_round_trip() {
        let frame = CloseFrame { code: CloseCode::GOING_AWAY, reason: "κόσμε".to_string() };
        let mut out = Vec::new();
        encode_close_payload(&frame, &mut out);
        assert_eq!(&out[..2], &[0x03, 0xE9]);
        assert_eq!(parse_close_payload(&out), Ok(Some(frame)));
    }

    #[test]
    fn rfc6455_5_5_long_reason_cut_at_char_boundary() {
        let frame = CloseFrame {
            code: CloseCode::NORMAL,
            // 2-byte characters: 123 is odd, so the cut falls inside one and moves back.
            reason: "é".repeat(100),
        };
        let mut out = Vec::new();
        encode_close_payload(&frame, &mut out);
        assert_eq!(out.len(), 2 + 122);
        let parsed = parse_close_payload(&out).unwrap().unwrap();
        assert_eq!(parsed.reason, "é".repeat(61));
    }
}
