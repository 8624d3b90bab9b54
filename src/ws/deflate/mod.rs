//! permessage-deflate ([RFC 7692](https://www.rfc-editor.org/rfc/rfc7692)), as pure code.
//!
//! | file | sections | what |
//! |------|----------|------|
//! | [`extensions`] | [RFC 6455 §9.1](https://www.rfc-editor.org/rfc/rfc6455#section-9.1) | the `Sec-WebSocket-Extensions` grammar |
//! | [`negotiate`] | [§5](https://www.rfc-editor.org/rfc/rfc7692#section-5), [§7.1](https://www.rfc-editor.org/rfc/rfc7692#section-7.1) | offers, answers, parameters |
//! | [`codec`] | [§7.2](https://www.rfc-editor.org/rfc/rfc7692#section-7.2) | compressing and inflating one message |
//!
//! The frame side (RSV1 on the first frame of a compressed message, §6 and §6.1) lives in
//! [`crate::ws::conn`], which takes the negotiated [`PerMessageDeflate`] and a [`Codec`].
//!
//! Implements: negotiation for both roles, the per-message compression and decompression of
//! §7.2 with window sizes 9 to 15, inflation bounded by the message limit.
//!
//! Does not: keep a compression context across messages on the sending side (the server asks
//! both ends for no context takeover; a client keeps its inflate context when the server keeps
//! its own); compress control frames (§6.1 forbids it); support other extensions
//! (`x-webkit-deflate-frame`, bbf-usp): they are declined.

pub mod codec;
pub mod extensions;
pub mod negotiate;

pub use codec::{Codec, InflateError, SharedCodec};
pub use extensions::{parse_extensions, Extension, ExtensionsError, Param};
pub use negotiate::{negotiate_client, negotiate_server, NegotiateError, PerMessageDeflate, CLIENT_OFFER};
