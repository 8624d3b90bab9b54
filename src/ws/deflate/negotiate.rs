//! permessage-deflate negotiation: which offer a server accepts, what a client offers and how it
//! checks the answer.
//!
//! Implements: [RFC 7692 §5](https://www.rfc-editor.org/rfc/rfc7692#section-5) (the server
//! accepts at most one offer, in the client's order; a declined offer is skipped) and
//! [§7.1](https://www.rfc-editor.org/rfc/rfc7692#section-7.1) (the four parameters, each at most
//! once, the window bits as `8`..`15` without leading zeros; an offer with an unknown, repeated
//! or ill-formed parameter is declined by the server, and fails the handshake when a server
//! answers with it, §7.1 and RFC 6455 §9.1).
//!
//! Decisions:
//! - The server always answers `server_no_context_takeover; client_no_context_takeover`
//!   (§7.1.1.1 and §7.1.1.2 let it add both unasked), so both ends reset their context per
//!   message and no connection holds zlib state between messages.
//! - `server_max_window_bits=8` is declined: zlib (and zlib-rs) silently widens a raw deflate
//!   window of 8 bits to 9, which would break the promise (the same choice as zlib users such as
//!   Python `websockets` and Node `ws`).
//! - Safari 15.0 to 15.3 mishandle `client_no_context_takeover` (their messages fail to inflate);
//!   like uWebSockets, the server declines the extension for those user agents
//!   ([`has_broken_deflate`]).
//! - The client offers `permessage-deflate; client_max_window_bits` ([`CLIENT_OFFER`]) and
//!   accepts any valid answer. It compresses with the window the server allows, resets its
//!   compressor per message (always allowed) and keeps its decompressor's context unless the
//!   server promised `server_no_context_takeover`. An answer limiting the client to 8 bits is
//!   honoured by sending uncompressed messages only.
//!
//! Does not: parse the field (see [`super::extensions`]) or compress anything (see
//! [`super::codec`]).

use std::fmt;
use std::num::NonZeroU8;

use super::extensions::{Extension, Param};

/// The extension name (RFC 7692 §6).
pub const PERMESSAGE_DEFLATE: &str = "permessage-deflate";

/// What the client role offers: the extension, and that it can take a window limit.
pub const CLIENT_OFFER: &str = "permessage-deflate; client_max_window_bits";

/// The negotiated parameters of one connection (RFC 7692 §7.1); both roles see the same values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PerMessageDeflate {
    /// The server resets its compression context after each message (§7.1.1.1).
    pub server_no_context_takeover: bool,
    /// The client resets its compression context after each message (§7.1.1.2).
    pub client_no_context_takeover: bool,
    /// The largest LZ77 window the server compresses with, in bits, 8 to 15, as the answer
    /// states it (§7.1.2.1); `None` when it is not stated: 15. The server states it exactly when
    /// the offer did, since it accepts such an offer only "by including" it. (`NonZeroU8`:
    /// no byte more than a `u8` in every WebSocket connection.)
    pub server_max_window_bits: Option<NonZeroU8>,
    /// The largest LZ77 window the client compresses with, in bits, 8 to 15 (§7.1.2.2).
    pub client_max_window_bits: u8,
}

impl PerMessageDeflate {
    /// The window this role compresses with, in bits; `None` when it must not compress because
    /// zlib cannot honour an 8-bit window.
    pub fn send_window_bits(&self, server: bool) -> Option<u8> {
        let bits = if server {
            self.server_max_window_bits.map_or(15, NonZeroU8::get)
        } else {
            self.client_max_window_bits
        };
        (bits >= 9).then_some(bits)
    }

    /// True when this role's decompressor must start each message afresh: the peer promised to
    /// reset its compressor.
    pub fn receive_resets(&self, server: bool) -> bool {
        if server {
            self.client_no_context_takeover
        } else {
            self.server_no_context_takeover
        }
    }

    /// The server's `Sec-WebSocket-Extensions` answer for these parameters.
    pub fn response_value(&self) -> String {
        let mut value = String::from(PERMESSAGE_DEFLATE);
        if self.server_no_context_takeover {
            value.push_str("; server_no_context_takeover");
        }
        if self.client_no_context_takeover {
            value.push_str("; client_no_context_takeover");
        }
        if let Some(bits) = self.server_max_window_bits {
            value.push_str(&format!("; server_max_window_bits={bits}"));
        }
        if self.client_max_window_bits != 15 {
            value.push_str(&format!("; client_max_window_bits={}", self.client_max_window_bits));
        }
        value
    }
}

/// Why a permessage-deflate offer or answer is not acceptable.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NegotiateError {
    /// A parameter RFC 7692 does not define (§7.1).
    UnknownParam(String),
    /// A parameter given twice (§7.1: "MUST NOT have more than one").
    DuplicateParam(String),
    /// A parameter value outside its ABNF: a value on a flag, a missing or non-decimal window,
    /// a window outside 8..=15 or with a leading zero (§7.1.1, §7.1.2).
    InvalidValue(String),
    /// `server_max_window_bits=8`, which zlib cannot honour (server role).
    UnsupportedWindow,
    /// A response with an extension other than permessage-deflate, or more than one (client
    /// role, RFC 6455 §4.1 and §9.1).
    NotOffered,
}

impl fmt::Display for NegotiateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NegotiateError::UnknownParam(p) => {
                write!(f, "unknown permessage-deflate parameter {p:?} (RFC 7692 §7.1)")
            }
            NegotiateError::DuplicateParam(p) => {
                write!(f, "permessage-deflate parameter {p:?} given twice (RFC 7692 §7.1)")
            }
            NegotiateError::InvalidValue(p) => {
                write!(f, "invalid value for permessage-deflate parameter {p:?} (RFC 7692 §7.1)")
            }
            NegotiateError::UnsupportedWindow => {
                f.write_str("server_max_window_bits=8 is not supported by zlib")
            }
            NegotiateError::NotOffered => {
                f.write_str("the server selected an extension the client did not offer (RFC 6455 §9.1)")
            }
        }
    }
}

impl std::error::Error for NegotiateError {}

/// The parameters an offer or an answer named, each at most once (§7.1).
#[derive(Debug, Default)]
struct Params {
    server_no_context_takeover: bool,
    client_no_context_takeover: bool,
    server_max_window_bits: Option<u8>,
    /// `Some(None)`: present without a value (an offer's hint).
    client_max_window_bits: Option<Option<u8>>,
}

/// A window size value: `8`..`15`, no leading zero (RFC 7692 §7.1.2.1:
/// `server-max-window-bits = ("8" / "9" / "10" / "11" / "12" / "13" / "14" / "15")`, the same for
/// the client's).
fn window_bits(param: &Param) -> Result<u8, NegotiateError> {
    let invalid = || NegotiateError::InvalidValue(param.name.clone());
    let value = param.value.as_deref().ok_or_else(invalid)?;
    match value {
        "8" | "9" | "10" | "11" | "12" | "13" | "14" | "15" => value.parse().map_err(|_| invalid()),
        _ => Err(invalid()),
    }
}

/// Reads the parameters of one permessage-deflate element, rejecting unknown, repeated and
/// ill-formed ones.
fn read_params(params: &[Param]) -> Result<Params, NegotiateError> {
    let mut out = Params::default();
    for param in params {
        let name = param.name.to_ascii_lowercase();
        let duplicate = || NegotiateError::DuplicateParam(param.name.clone());
        let flag = |set: bool| {
            if set {
                Err(duplicate())
            } else if param.value.is_some() {
                // RFC 7692 §7.1.1.1 and §7.1.1.2: the no_context_takeover parameters "MUST NOT
                // have a value".
                Err(NegotiateError::InvalidValue(param.name.clone()))
            } else {
                Ok(true)
            }
        };
        // RFC 7692 §7.1: a server "MUST decline" an offer with an unknown parameter, a
        // parameter with an invalid value, or "multiple parameters with the same name".
        match name.as_str() {
            "server_no_context_takeover" => {
                out.server_no_context_takeover = flag(out.server_no_context_takeover)?
            }
            "client_no_context_takeover" => {
                out.client_no_context_takeover = flag(out.client_no_context_takeover)?
            }
            "server_max_window_bits" => {
                if out.server_max_window_bits.is_some() {
                    return Err(duplicate());
                }
                out.server_max_window_bits = Some(window_bits(param)?);
            }
            "client_max_window_bits" => {
                if out.client_max_window_bits.is_some() {
                    return Err(duplicate());
                }
                // RFC 7692 §7.1.2.2: in an offer this parameter "may have no value".
                let bits = if param.value.is_some() { Some(window_bits(param)?) } else { None };
                out.client_max_window_bits = Some(bits);
            }
            _ => return Err(NegotiateError::UnknownParam(param.name.clone())),
        }
    }
    Ok(out)
}

/// Checks one permessage-deflate offer and gives the parameters the server accepts it with.
pub fn accept_offer(params: &[Param]) -> Result<PerMessageDeflate, NegotiateError> {
    let offer = read_params(params)?;
    let server_max_window_bits = match offer.server_max_window_bits {
        // zlib widens a raw 8-bit window to 9, so the promise could not be kept.
        Some(8) => return Err(NegotiateError::UnsupportedWindow),
        // RFC 7692 §7.1.2.1: a server accepts "by including" the parameter with "the same or
        // smaller value" (15 included: Python websockets fails the handshake without it).
        other => other.and_then(NonZeroU8::new),
    };
    Ok(PerMessageDeflate {
        server_no_context_takeover: true,
        client_no_context_takeover: true,
        server_max_window_bits,
        // The server inflates with a 15-bit window, which reads any smaller one; it does not
        // limit the client.
        client_max_window_bits: 15,
    })
}

/// The server's choice among a request's extension offers (in the client's order of
/// preference, RFC 7692 §5): the first acceptable permessage-deflate offer, or `None` when there
/// is none, the extension is off, or the user agent is one with broken deflate.
pub fn negotiate_server(offers: &[Extension], user_agent: Option<&[u8]>) -> Option<PerMessageDeflate> {
    if user_agent.is_some_and(has_broken_deflate) {
        return None;
    }
    offers
        .iter()
        .filter(|offer| offer.name.eq_ignore_ascii_case(PERMESSAGE_DEFLATE))
        .find_map(|offer| accept_offer(&offer.params).ok())
}

/// The client's check of a server's answer to [`CLIENT_OFFER`]: `None` when the server selected
/// no extension, the parameters to use when it selected permessage-deflate once, validly.
pub fn negotiate_client(response: &[Extension]) -> Result<Option<PerMessageDeflate>, NegotiateError> {
    let selected = match response {
        [] => return Ok(None),
        [one] if one.name.eq_ignore_ascii_case(PERMESSAGE_DEFLATE) => one,
        // RFC 6455 §9.1: the server "MUST NOT" answer with an extension not offered; §4.1: the
        // client then MUST fail the connection. We offered permessage-deflate once.
        _ => return Err(NegotiateError::NotOffered),
    };
    let answer = read_params(&selected.params)?;
    let client_max_window_bits = match answer.client_max_window_bits {
        // RFC 7692 §7.1.2.2: in a response the parameter MUST have a value.
        Some(None) => return Err(NegotiateError::InvalidValue("client_max_window_bits".into())),
        Some(Some(bits)) => bits,
        None => 15,
    };
    Ok(Some(PerMessageDeflate {
        server_no_context_takeover: answer.server_no_context_takeover,
        client_no_context_takeover: answer.client_no_context_takeover,
        server_max_window_bits: answer.server_max_window_bits.and_then(NonZeroU8::new),
        client_max_window_bits,
    }))
}

/// True for Safari 15.0 to 15.3, whose permessage-deflate breaks with
/// `client_no_context_takeover`: a user agent with ` Version/15.N ` (N at most 3, digits only)
/// followed by ` Safari/` (the test uWebSockets uses).
pub fn has_broken_deflate(user_agent: &[u8]) -> bool {
    const VERSION: &[u8] = b" Version/15.";
    let Some(start) = find(user_agent, VERSION, 0).map(|at| at + VERSION.len()) else { return false };
    let Some(end) = user_agent[start..].iter().position(|&b| b == b' ').map(|len| start + len) else {
        return false;
    };
    let minor = &user_agent[start..end];
    if minor.is_empty() || minor.len() > 3 || !minor.iter().all(u8::is_ascii_digit) {
        return false;
    }
    let minor: u32 = minor.iter().fold(0, |n, &d| n * 10 + u32::from(d - b'0'));
    minor <= 3 && find(user_agent, b" Safari/", end).is_some()
}

/// The first index at or after `from` where `needle` starts in `haystack`.
fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    haystack.get(from..)?.windows(needle.len()).position(|w| w == needle).map(|at| at + from)
}

#[cfg(test)]
mod tests {
    use super::super::extensions::parse_extensions;
    use super::*;

    fn offers(value: &str) -> Vec<Extension> {
        let mut out = Vec::new();
        parse_extensions(value.as_bytes(), &mut out).unwrap();
        out
    }

    fn server(value: &str) -> Option<PerMessageDeflate> {
        negotiate_server(&offers(value), None)
    }

    fn bits(n: u8) -> Option<NonZeroU8> {
        NonZeroU8::new(n)
    }

    const DEFAULT: PerMessageDeflate = PerMessageDeflate {
        server_no_context_takeover: true,
        client_no_context_takeover: true,
        server_max_window_bits: None,
        client_max_window_bits: 15,
    };

    #[test]
    fn rfc7692_7_1_every_parameter_accepted() {
        assert_eq!(server("permessage-deflate"), Some(DEFAULT));
        assert_eq!(server("permessage-deflate; server_no_context_takeover"), Some(DEFAULT));
        assert_eq!(server("permessage-deflate; client_no_context_takeover"), Some(DEFAULT));
        assert_eq!(server("permessage-deflate; client_max_window_bits"), Some(DEFAULT));
        assert_eq!(server("permessage-deflate; client_max_window_bits=9"), Some(DEFAULT));
        assert_eq!(server("permessage-deflate; client_max_window_bits=8"), Some(DEFAULT));
        assert_eq!(
            server("Permessage-Deflate; Server_Max_Window_Bits=10; client_max_window_bits"),
            Some(PerMessageDeflate { server_max_window_bits: bits(10), ..DEFAULT })
        );
        assert_eq!(
            server("permessage-deflate; server_max_window_bits=\"12\""),
            Some(PerMessageDeflate { server_max_window_bits: bits(12), ..DEFAULT })
        );
    }

    #[test]
    fn rfc7692_7_1_1_answer_names_both_no_context_takeovers() {
        assert_eq!(
            DEFAULT.response_value(),
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
        );
        assert_eq!(
            PerMessageDeflate { server_max_window_bits: bits(11), ..DEFAULT }.response_value(),
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=11"
        );
    }

    #[test]
    fn rfc7692_7_1_2_1_a_server_window_offered_is_stated_in_the_answer_even_at_15() {
        let agreed = server("permessage-deflate; server_max_window_bits=15; client_max_window_bits").unwrap();
        assert_eq!(agreed, PerMessageDeflate { server_max_window_bits: bits(15), ..DEFAULT });
        assert_eq!(
            agreed.response_value(),
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=15"
        );
        assert_eq!(agreed.send_window_bits(true), Some(15));
        // Not offered: not stated (15 is then the default).
        assert!(!server("permessage-deflate").unwrap().response_value().contains("server_max_window_bits"));
    }

    #[test]
    fn rfc7692_7_1_bad_values_declined() {
        for bad in [
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; client_no_context_takeover=\"x\"",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=7",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=010",
            "permessage-deflate; server_max_window_bits=abc",
            "permessage-deflate; client_max_window_bits=0",
            "permessage-deflate; client_max_window_bits=16",
            "permessage-deflate; foo",
            "permessage-deflate; foo=bar",
        ] {
            assert_eq!(server(bad), None, "{bad}");
        }
    }

    #[test]
    fn rfc7692_7_1_duplicates_declined() {
        for bad in [
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; client_no_context_takeover; client_no_context_takeover",
            "permessage-deflate; server_max_window_bits=10; server_max_window_bits=10",
            "permessage-deflate; client_max_window_bits; client_max_window_bits=10",
        ] {
            assert_eq!(server(bad), None, "{bad}");
        }
    }

    #[test]
    fn rfc7692_7_1_2_1_server_window_of_8_declined_as_zlib_does() {
        assert_eq!(server("permessage-deflate; server_max_window_bits=8"), None);
        assert_eq!(
            accept_offer(&offers("x; server_max_window_bits=8")[0].params),
            Err(NegotiateError::UnsupportedWindow)
        );
    }

    #[test]
    fn rfc7692_5_first_acceptable_of_several_offers_wins() {
        assert_eq!(
            server("permessage-deflate; server_max_window_bits=8, permessage-deflate; server_max_window_bits=9, permessage-deflate"),
            Some(PerMessageDeflate { server_max_window_bits: bits(9), ..DEFAULT })
        );
        assert_eq!(
            server("x-webkit-deflate-frame, permessage-deflate; foo, permessage-deflate"),
            Some(DEFAULT)
        );
        assert_eq!(server("x-webkit-deflate-frame"), None);
        assert_eq!(server(""), None);
    }

    #[test]
    fn safari_15_0_to_15_3_declined() {
        let ua = |v: &str| {
            format!("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/{v} Safari/605.1.15")
        };
        for broken in ["15.0", "15.1", "15.2", "15.3"] {
            assert!(has_broken_deflate(ua(broken).as_bytes()), "{broken}");
            assert_eq!(negotiate_server(&offers("permessage-deflate"), Some(ua(broken).as_bytes())), None);
        }
        for fine in ["15.4", "15.6", "16.0", "14.1", "15.3.1"] {
            assert!(!has_broken_deflate(ua(fine).as_bytes()), "{fine}");
        }
        let chrome = b"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36";
        assert!(!has_broken_deflate(chrome));
        assert!(!has_broken_deflate(b" Version/15.1"));
        assert!(!has_broken_deflate(b" Version/15.1 Mobile"));
    }

    #[test]
    fn rfc7692_7_1_client_reads_answers() {
        assert_eq!(negotiate_client(&[]), Ok(None));
        assert_eq!(negotiate_client(&offers(&DEFAULT.response_value())), Ok(Some(DEFAULT)));
        assert_eq!(
            negotiate_client(&offers(
                "permessage-deflate; client_max_window_bits=9; server_max_window_bits=8"
            )),
            Ok(Some(PerMessageDeflate {
                server_no_context_takeover: false,
                client_no_context_takeover: false,
                server_max_window_bits: bits(8),
                client_max_window_bits: 9,
            }))
        );
        // §7.1.2.2: a response's client_max_window_bits needs a value.
        assert!(negotiate_client(&offers("permessage-deflate; client_max_window_bits")).is_err());
        assert!(negotiate_client(&offers("permessage-deflate; bogus")).is_err());
        assert!(negotiate_client(&offers(
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover"
        ))
        .is_err());
        assert_eq!(negotiate_client(&offers("x-other")), Err(NegotiateError::NotOffered));
        assert_eq!(
            negotiate_client(&offers("permessage-deflate, permessage-deflate")),
            Err(NegotiateError::NotOffered)
        );
    }

    #[test]
    fn rfc7692_7_1_2_window_used_for_sending() {
        let p = PerMessageDeflate { server_max_window_bits: bits(10), client_max_window_bits: 8, ..DEFAULT };
        assert_eq!(p.send_window_bits(true), Some(10));
        assert_eq!(p.send_window_bits(false), None);
        assert!(DEFAULT.receive_resets(true) && DEFAULT.receive_resets(false));
    }
}
