//! The `Sec-WebSocket-Extensions` field: a list of extensions, each with parameters.
//!
//! Implements: the grammar of [RFC 6455 §9.1](https://www.rfc-editor.org/rfc/rfc6455#section-9.1)
//! (`extension-list = 1#extension`, `extension = extension-token *( ";" extension-param )`,
//! `extension-param = token [ "=" (token | quoted-string) ]`, a quoted value unescaped and then
//! required to be a token) with the optional whitespace of RFC 9110 §5.6.3 around separators, and
//! the rule that several fields of the same name form one comma-separated list (RFC 9110 §5.3).
//! Empty list elements (`a, , b`) are skipped as RFC 9110 §5.6.1 asks of recipients.
//!
//! Does not: know what any extension or parameter means (see [`super::negotiate`]), or accept
//! more than [`MAX_EXTENSIONS`] extensions or [`MAX_PARAMS`] parameters per extension (the head
//! limit of the HTTP layer already bounds the bytes; these bound the parsed list).

use std::fmt;

/// Most extensions one field list may hold; more is [`ExtensionsError::TooManyExtensions`].
/// Browsers offer one or two; 16 leaves room for tools that offer variants.
pub const MAX_EXTENSIONS: usize = 16;

/// Most parameters one extension may carry; more is [`ExtensionsError::TooManyParams`].
/// permessage-deflate defines four.
pub const MAX_PARAMS: usize = 8;

/// One extension of the list, with its parameters in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extension {
    /// The extension token, e.g. `permessage-deflate`, as sent (compare case-insensitively).
    pub name: String,
    /// Its parameters in order, duplicates kept (their meaning is the extension's business).
    pub params: Vec<Param>,
}

/// One `extension-param`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param {
    /// The parameter name, a token.
    pub name: String,
    /// The value after `=`, unquoted; `None` when the parameter has no value.
    pub value: Option<String>,
}

/// A field value that breaks the §9.1 grammar or the list bounds.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExtensionsError {
    /// A character where a token, `;`, `,` or `=` was expected, at this byte offset.
    Syntax(usize),
    /// A quoted-string without its closing quote.
    UnterminatedQuote,
    /// A quoted value that is not a token once unescaped (§9.1).
    QuotedValueNotToken,
    /// More than [`MAX_EXTENSIONS`] extensions.
    TooManyExtensions,
    /// More than [`MAX_PARAMS`] parameters on one extension.
    TooManyParams,
}

impl fmt::Display for ExtensionsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExtensionsError::Syntax(at) => {
                write!(f, "Sec-WebSocket-Extensions: unexpected character at byte {at} (RFC 6455 §9.1)")
            }
            ExtensionsError::UnterminatedQuote => {
                f.write_str("Sec-WebSocket-Extensions: unterminated quoted-string (RFC 6455 §9.1)")
            }
            ExtensionsError::QuotedValueNotToken => {
                f.write_str("Sec-WebSocket-Extensions: a quoted value must be a token (RFC 6455 §9.1)")
            }
            ExtensionsError::TooManyExtensions => {
                write!(f, "Sec-WebSocket-Extensions: more than {MAX_EXTENSIONS} extensions")
            }
            ExtensionsError::TooManyParams => {
                write!(f, "Sec-WebSocket-Extensions: more than {MAX_PARAMS} parameters on one extension")
            }
        }
    }
}

impl std::error::Error for ExtensionsError {}

/// True for an RFC 9110 §5.6.2 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// True for a non-empty RFC 9110 §5.6.2 token.
pub fn is_token(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&b| is_tchar(b))
}

/// A cursor over one field value.
struct Scanner<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Scanner<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    /// Skips RFC 9110 OWS (spaces and horizontal tabs).
    fn skip_ows(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.pos += 1;
        }
    }

    /// A token, or a syntax error at the current position.
    fn token(&mut self) -> Result<String, ExtensionsError> {
        let start = self.pos;
        while self.peek().is_some_and(is_tchar) {
            self.pos += 1;
        }
        if start == self.pos {
            return Err(ExtensionsError::Syntax(self.pos));
        }
        // Tokens are ASCII, so this never fails.
        Ok(String::from_utf8_lossy(&self.bytes[start..self.pos]).into_owned())
    }

    /// A quoted-string (RFC 9110 §5.6.4), unescaped; the opening quote is next.
    fn quoted(&mut self) -> Result<String, ExtensionsError> {
        self.pos += 1;
        let mut value = Vec::new();
        loop {
            match self.peek() {
                None => return Err(ExtensionsError::UnterminatedQuote),
                Some(b'"') => {
                    self.pos += 1;
                    break;
                }
                Some(b'\\') => {
                    let escaped =
                        self.bytes.get(self.pos + 1).copied().ok_or(ExtensionsError::UnterminatedQuote)?;
                    value.push(escaped);
                    self.pos += 2;
                }
                Some(b) => {
                    value.push(b);
                    self.pos += 1;
                }
            }
        }
        // RFC 6455 §9.1: "the value after quoted-string unescaping MUST conform to the 'token'
        // ABNF".
        if !is_token(&value) {
            return Err(ExtensionsError::QuotedValueNotToken);
        }
        Ok(String::from_utf8_lossy(&value).into_owned())
    }
}

/// Parses one `Sec-WebSocket-Extensions` field value and appends its extensions to `out`
/// (call it once per field, in order, to read several fields as one list).
pub fn parse_extensions(value: &[u8], out: &mut Vec<Extension>) -> Result<(), ExtensionsError> {
    let mut s = Scanner { bytes: value, pos: 0 };
    loop {
        s.skip_ows();
        match s.peek() {
            None => return Ok(()),
            // RFC 9110 §5.6.1: a recipient MUST accept and ignore empty list elements.
            Some(b',') => {
                s.pos += 1;
                continue;
            }
            Some(_) => {}
        }
        if out.len() == MAX_EXTENSIONS {
            return Err(ExtensionsError::TooManyExtensions);
        }
        let name = s.token()?;
        let mut params = Vec::new();
        loop {
            s.skip_ows();
            match s.peek() {
                None => break,
                Some(b',') => {
                    s.pos += 1;
                    break;
                }
                Some(b';') => {
                    s.pos += 1;
                    s.skip_ows();
                    if params.len() == MAX_PARAMS {
                        return Err(ExtensionsError::TooManyParams);
                    }
                    let name = s.token()?;
                    s.skip_ows();
                    let value = if s.peek() == Some(b'=') {
                        s.pos += 1;
                        s.skip_ows();
                        Some(if s.peek() == Some(b'"') { s.quoted()? } else { s.token()? })
                    } else {
                        None
                    };
                    params.push(Param { name, value });
                }
                Some(_) => return Err(ExtensionsError::Syntax(s.pos)),
            }
        }
        out.push(Extension { name, params });
    }
}

/// Appends an extension as a field value element: `name; p1; p2=v`.
pub fn encode_extension(extension: &Extension, out: &mut String) {
    out.push_str(&extension.name);
    for param in &extension.params {
        out.push_str("; ");
        out.push_str(&param.name);
        if let Some(value) = &param.value {
            out.push('=');
            out.push_str(value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(value: &str) -> Result<Vec<Extension>, ExtensionsError> {
        let mut out = Vec::new();
        parse_extensions(value.as_bytes(), &mut out).map(|()| out)
    }

    fn ext(name: &str, params: &[(&str, Option<&str>)]) -> Extension {
        Extension {
            name: name.into(),
            params: params
                .iter()
                .map(|(n, v)| Param { name: (*n).into(), value: v.map(Into::into) })
                .collect(),
        }
    }

    #[test]
    fn rfc6455_9_1_extension_list_with_params() {
        assert_eq!(
            parse("permessage-deflate; client_max_window_bits, foo;bar=1 ; baz=\"x\"").unwrap(),
            vec![
                ext("permessage-deflate", &[("client_max_window_bits", None)]),
                ext("foo", &[("bar", Some("1")), ("baz", Some("x"))]),
            ]
        );
    }

    #[test]
    fn rfc6455_9_1_several_fields_form_one_list() {
        let mut out = Vec::new();
        parse_extensions(b"a", &mut out).unwrap();
        parse_extensions(b"b; c", &mut out).unwrap();
        assert_eq!(out, vec![ext("a", &[]), ext("b", &[("c", None)])]);
    }

    #[test]
    fn rfc9110_5_6_1_empty_elements_and_ows_are_skipped() {
        assert_eq!(parse(" , a ,, b\t, ").unwrap(), vec![ext("a", &[]), ext("b", &[])]);
        assert_eq!(parse("").unwrap(), vec![]);
    }

    #[test]
    fn rfc6455_9_1_quoted_value_is_unescaped_and_must_be_a_token() {
        assert_eq!(parse("a; b=\"1\\0\"").unwrap(), vec![ext("a", &[("b", Some("10"))])]);
        assert_eq!(parse("a; b=\"1 0\""), Err(ExtensionsError::QuotedValueNotToken));
        assert_eq!(parse("a; b=\"\""), Err(ExtensionsError::QuotedValueNotToken));
        assert_eq!(parse("a; b=\"10"), Err(ExtensionsError::UnterminatedQuote));
        assert_eq!(parse("a; b=\"10\\"), Err(ExtensionsError::UnterminatedQuote));
    }

    #[test]
    fn rfc6455_9_1_syntax_errors() {
        for bad in ["a b", ";a", "a;", "a; =1", "a; b=", "a; b==1", "a/b", "a; b=1 c", "\"a\""] {
            assert!(matches!(parse(bad), Err(ExtensionsError::Syntax(_))), "{bad:?}");
        }
    }

    #[test]
    fn list_bounds() {
        let many = vec!["x"; MAX_EXTENSIONS + 1].join(",");
        assert_eq!(parse(&many), Err(ExtensionsError::TooManyExtensions));
        assert_eq!(parse(&vec!["x"; MAX_EXTENSIONS].join(",")).unwrap().len(), MAX_EXTENSIONS);
        let params = format!("x{}", "; p".repeat(MAX_PARAMS + 1));
        assert_eq!(parse(&params), Err(ExtensionsError::TooManyParams));
    }

    #[test]
    fn encode_then_parse_round_trips() {
        let e = ext(
            "permessage-deflate",
            &[("server_no_context_takeover", None), ("server_max_window_bits", Some("10"))],
        );
        let mut s = String::new();
        encode_extension(&e, &mut s);
        assert_eq!(s, "permessage-deflate; server_no_context_takeover; server_max_window_bits=10");
        assert_eq!(parse(&s).unwrap(), vec![e]);
    }
}
