//! The WebSocket protocol (RFC 6455) for both roles, as pure code: bytes in, events and bytes out.
//!
//! Layers, bottom up (each file maps to a range of RFC sections):
//!
//! | file | sections | what |
//! |------|----------|------|
//! | [`frame`] | [§5.2](https://www.rfc-editor.org/rfc/rfc6455#section-5.2) | frame header codec |
//! | [`mask`] | [§5.3](https://www.rfc-editor.org/rfc/rfc6455#section-5.3) | payload masking |
//! | [`utf8`] | [§8.1](https://www.rfc-editor.org/rfc/rfc6455#section-8.1) | incremental UTF-8 validation of text |
//! | [`close`] | [§5.5.1](https://www.rfc-editor.org/rfc/rfc6455#section-5.5.1), [§7.4](https://www.rfc-editor.org/rfc/rfc6455#section-7.4) | close codes and the close payload |
//! | [`handshake`] | [§4](https://www.rfc-editor.org/rfc/rfc6455#section-4) | opening handshake, server and client |
//! | [`deflate`] | [RFC 7692](https://www.rfc-editor.org/rfc/rfc7692) | permessage-deflate: negotiation and codec |
//! | [`reading`] | [§5.2](https://www.rfc-editor.org/rfc/rfc6455#section-5.2), [§5.4](https://www.rfc-editor.org/rfc/rfc6455#section-5.4) | a reader's state between reads, and the loop's spares for it |
//! | [`conn`] | [§5.4](https://www.rfc-editor.org/rfc/rfc6455#section-5.4), [§5.5](https://www.rfc-editor.org/rfc/rfc6455#section-5.5), [§7](https://www.rfc-editor.org/rfc/rfc6455#section-7) | the connection state machine |
//!
//! Reading order: `frame`, `mask`, `utf8`, `close`, `conn`; `handshake` stands alone and runs
//! before a [`WsConn`] exists.
//!
//! Implements: RFC 6455 framing, masking, fragmentation, control frames, the closing handshake
//! and "Fail the WebSocket Connection" (§7.1.7) for the server and the client role, the opening
//! handshake of §4 for both roles, the size limits of §10.4 ([`Limits`]), and permessage-deflate
//! (RFC 7692, [`deflate`]): RSV1 is accepted, on the first frame of a data message, once it was
//! negotiated.
//!
//! Does not: touch a socket, read the clock or draw randomness (mask keys and handshake nonces
//! come in as arguments); negotiate any other extension (RSV2 and RSV3 always fail the
//! connection, and so does RSV1 without permessage-deflate); fragment outgoing messages; reject
//! non-minimal payload length encodings (§5.2's "minimal number of bytes MUST be used" binds
//! the sender, and accepting them costs nothing); send pings on its own (the owner schedules
//! heartbeats).

pub mod close;
pub mod conn;
pub mod deflate;
pub mod frame;
pub mod handshake;
pub mod mask;
pub mod reading;
pub mod utf8;

use std::fmt;

pub use close::{CloseCode, CloseFrame};
pub use conn::{Event, Incoming, Message, MessageRef, SendError, WsConn};
pub use frame::{FrameHeader, OpCode};
pub use handshake::{Accepted, ClientRequest, HandshakeError, ServerOptions};
pub use utf8::Utf8Validator;

/// Which end of the connection this endpoint is; it decides who masks (RFC 6455 §5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Accepted the connection: sends unmasked frames, requires masked ones.
    Server,
    /// Opened the connection: sends masked frames, requires unmasked ones.
    Client,
}

/// Limits that keep one WebSocket peer from exhausting this endpoint
/// ([RFC 6455 §10.4](https://www.rfc-editor.org/rfc/rfc6455#section-10.4)).
///
/// Both are checked against the length a frame header declares, before any payload memory is
/// reserved; exceeding either fails the connection with close code 1009 (Message Too Big).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest payload of one frame, in bytes. Default 64 KiB.
    pub max_frame_payload_bytes: u64,
    /// Largest message after reassembling its fragments (§5.4), in bytes. Default 64 KiB.
    pub max_message_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_frame_payload_bytes: 64 * 1024, max_message_bytes: 64 * 1024 }
    }
}

impl Limits {
    /// Checks that both limits are nonzero. A frame limit above the message limit is allowed (the
    /// message limit then decides).
    pub fn validate(&self) -> Result<(), String> {
        if self.max_frame_payload_bytes == 0 {
            return Err("ws max_frame_payload_bytes must be greater than 0".to_string());
        }
        if self.max_message_bytes == 0 {
            return Err("ws max_message_bytes must be greater than 0".to_string());
        }
        Ok(())
    }
}

/// A rule of RFC 6455 the peer broke; each fails the connection with [`Error::close_code`].
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// Opcode 0x3-0x7 or 0xB-0xF (§5.2).
    ReservedOpCode(u8),
    /// A 64-bit payload length with its most significant bit set (§5.2).
    PayloadLengthMsbSet,
    /// A control frame without FIN (§5.5).
    FragmentedControlFrame,
    /// A control frame with more than 125 bytes of payload (§5.5).
    ControlFrameTooLong,
    /// RSV1, RSV2 or RSV3 set while no extension is negotiated (§5.2).
    ReservedBitsSet,
    /// A client frame without a masking key, received by a server (§5.1).
    UnmaskedClientFrame,
    /// A server frame with a masking key, received by a client (§5.1).
    MaskedServerFrame,
    /// A continuation frame while no fragmented message is open (§5.4).
    UnexpectedContinuation,
    /// A new text or binary frame while a fragmented message is open (§5.4).
    ExpectedContinuation,
    /// A frame payload larger than [`Limits::max_frame_payload_bytes`] (§10.4).
    FrameTooLarge {
        /// Payload length the header declared, in bytes.
        payload_bytes: u64,
        /// The limit, in bytes.
        max_bytes: u64,
    },
    /// A message larger than [`Limits::max_message_bytes`] (§10.4).
    MessageTooLarge {
        /// Message length including the frame just announced, in bytes.
        message_bytes: u64,
        /// The limit, in bytes.
        max_bytes: u64,
    },
    /// A text message that is not UTF-8 (§8.1), detected at the first impossible byte or at the
    /// end of the message.
    InvalidUtf8,
    /// A close frame payload of exactly one byte (§5.5.1: a body starts with a 2-byte code).
    InvalidClosePayload,
    /// A close code that must not appear on the wire (§7.4.1, §7.4.2).
    InvalidCloseCode(u16),
    /// A close reason that is not UTF-8 (§5.5.1).
    InvalidCloseReason,
    /// RFC 7692 §6: RSV1 ("Per-Message Compressed") on a continuation or control frame, where
    /// it has no meaning.
    CompressedBitMisplaced,
    /// A compressed message that inflates past [`Limits::max_message_bytes`] (RFC 7692 §7.2.2,
    /// RFC 6455 §10.4): a decompression bomb.
    InflatedTooLarge {
        /// The limit, in bytes.
        max_bytes: u64,
    },
    /// A compressed message that is not valid DEFLATE data (RFC 7692 §7.2.2).
    InvalidCompressedData,
}

impl From<deflate::InflateError> for Error {
    fn from(error: deflate::InflateError) -> Self {
        match error {
            deflate::InflateError::TooLarge { max_bytes } => Error::InflatedTooLarge { max_bytes },
            _ => Error::InvalidCompressedData,
        }
    }
}

impl Error {
    /// The status code of the close frame that fails the connection for this error
    /// (RFC 6455 §7.4.1): 1002 for protocol errors, 1007 for non-UTF-8 text, 1009 for sizes.
    /// Never 1005, 1006 or 1015, which MUST NOT be sent.
    pub fn close_code(&self) -> CloseCode {
        match self {
            Error::ReservedOpCode(_)
            | Error::PayloadLengthMsbSet
            | Error::FragmentedControlFrame
            | Error::ControlFrameTooLong
            | Error::ReservedBitsSet
            | Error::UnmaskedClientFrame
            | Error::MaskedServerFrame
            | Error::UnexpectedContinuation
            | Error::ExpectedContinuation
            | Error::InvalidClosePayload
            | Error::InvalidCloseCode(_)
            | Error::CompressedBitMisplaced => CloseCode::PROTOCOL_ERROR,
            // RFC 6455 §7.4.1: 1007 for "data within a message that was not consistent with the
            // type of the message (e.g., non-UTF-8 data within a text message)"; a close reason
            // is UTF-8 text by §5.5.1, so a broken one gets 1007 too (Autobahn 7.5.1 accepts
            // 1002 or 1007).
            Error::InvalidUtf8 | Error::InvalidCloseReason | Error::InvalidCompressedData => {
                CloseCode::INVALID_PAYLOAD
            }
            Error::FrameTooLarge { .. } | Error::MessageTooLarge { .. } | Error::InflatedTooLarge { .. } => {
                CloseCode::MESSAGE_TOO_BIG
            }
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::ReservedOpCode(op) => write!(f, "reserved opcode {op:#x} (RFC 6455 §5.2)"),
            Error::PayloadLengthMsbSet => {
                f.write_str("64-bit payload length has its most significant bit set (§5.2)")
            }
            Error::FragmentedControlFrame => f.write_str("fragmented control frame (§5.5)"),
            Error::ControlFrameTooLong => f.write_str("control frame payload longer than 125 bytes (§5.5)"),
            Error::ReservedBitsSet => f.write_str("RSV bits set without a negotiated extension (§5.2)"),
            Error::UnmaskedClientFrame => f.write_str("client frame is not masked (§5.1)"),
            Error::MaskedServerFrame => f.write_str("server frame is masked (§5.1)"),
            Error::UnexpectedContinuation => {
                f.write_str("continuation frame without a message to continue (§5.4)")
            }
            Error::ExpectedContinuation => {
                f.write_str("new data frame while a fragmented message is open (§5.4)")
            }
            Error::FrameTooLarge { payload_bytes, max_bytes } => {
                write!(f, "frame payload of {payload_bytes} bytes exceeds the limit of {max_bytes} (§10.4)")
            }
            Error::MessageTooLarge { message_bytes, max_bytes } => {
                write!(f, "message of {message_bytes} bytes exceeds the limit of {max_bytes} (§10.4)")
            }
            Error::InvalidUtf8 => f.write_str("text message is not valid UTF-8 (§8.1)"),
            Error::InvalidClosePayload => f.write_str("close frame payload of 1 byte (§5.5.1)"),
            Error::InvalidCloseCode(code) => {
                write!(f, "close code {code} is not allowed on the wire (§7.4)")
            }
            Error::InvalidCloseReason => f.write_str("close reason is not valid UTF-8 (§5.5.1)"),
            Error::CompressedBitMisplaced => {
                f.write_str("RSV1 on a continuation or control frame (RFC 7692 §6)")
            }
            Error::InflatedTooLarge { max_bytes } => {
                write!(f, "compressed message inflates past the limit of {max_bytes} bytes (§10.4)")
            }
            Error::InvalidCompressedData => {
                f.write_str("compressed message is not valid DEFLATE data (RFC 7692 §7.2.2)")
            }
        }
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_default_is_64_kib_and_valid() {
        let limits = Limits::default();
        assert_eq!(limits.max_frame_payload_bytes, 65536);
        assert_eq!(limits.max_message_bytes, 65536);
        assert!(limits.validate().is_ok());
    }

    #[test]
    fn limits_zero_is_invalid_frame_above_message_is_valid() {
        let zero_frame = Limits { max_frame_payload_bytes: 0, ..Limits::default() };
        assert!(zero_frame.validate().is_err());
        let zero_message = Limits { max_message_bytes: 0, ..Limits::default() };
        assert!(zero_message.validate().is_err());
        let frame_above = Limits { max_frame_payload_bytes: 1 << 20, max_message_bytes: 1 << 10 };
        assert!(frame_above.validate().is_ok());
    }

    #[test]
    fn rfc6455_7_4_1_error_close_codes_never_reserved() {
        let errors = [
            Error::ReservedOpCode(3),
            Error::PayloadLengthMsbSet,
            Error::FragmentedControlFrame,
            Error::ControlFrameTooLong,
            Error::ReservedBitsSet,
            Error::UnmaskedClientFrame,
            Error::MaskedServerFrame,
            Error::UnexpectedContinuation,
            Error::ExpectedContinuation,
            Error::FrameTooLarge { payload_bytes: 2, max_bytes: 1 },
            Error::MessageTooLarge { message_bytes: 2, max_bytes: 1 },
            Error::InvalidUtf8,
            Error::InvalidClosePayload,
            Error::InvalidCloseCode(1005),
            Error::InvalidCloseReason,
            Error::CompressedBitMisplaced,
            Error::InflatedTooLarge { max_bytes: 1 },
            Error::InvalidCompressedData,
        ];
        for e in &errors {
            let code = e.close_code();
            assert!(code.is_valid_on_wire(), "{e}: {code:?}");
            assert!(matches!(code.0, 1002 | 1007 | 1009), "{e}: {code:?}");
            assert!(!e.to_string().is_empty());
        }
        assert_eq!(Error::InvalidUtf8.close_code(), CloseCode::INVALID_PAYLOAD);
        assert_eq!(
            Error::FrameTooLarge { payload_bytes: 2, max_bytes: 1 }.close_code(),
            CloseCode::MESSAGE_TOO_BIG
        );
    }
}
