//! Response heads and complete small responses.
//!
//! Implements: the status line and field lines of
//! [RFC 9112 §4](https://www.rfc-editor.org/rfc/rfc9112#section-4), Content-Length framing
//! (§6.2), `Connection: close` when the server will close (§9.6), and HEAD responses without
//! content (RFC 9110 §9.3.2).
//!
//! Does not: write `Date` (see the README's relaxed rules), or take field values from the
//! peer: every value written here is produced by the server.

/// The reason phrase for the status codes pushwire sends.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        414 => "URI Too Long",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

/// How the body after a head is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// `Content-Length: n` (RFC 9112 §6.2).
    Length(usize),
    /// `Transfer-Encoding: chunked` (RFC 9112 §7.1).
    Chunked,
    /// The body ends when the server closes the connection (RFC 9112 §6.3 item 8).
    Close,
    /// No body and no framing field (101, 1xx).
    None,
}

/// Writes a status line and fields. `close` adds `Connection: close`; the caller must then close
/// the connection after the response.
pub fn write_head(out: &mut Vec<u8>, status: u16, fields: &[(&str, &str)], framing: Framing, close: bool) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(reason(status).as_bytes());
    out.extend_from_slice(b"\r\n");
    if status >= 200 {
        out.extend_from_slice(b"Server: pushwire\r\n");
    }
    for (name, value) in fields {
        debug_assert!(!value.contains(['\r', '\n']), "field values are server-made");
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    match framing {
        Framing::Length(n) => {
            out.extend_from_slice(b"Content-Length: ");
            out.extend_from_slice(n.to_string().as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        Framing::Chunked => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
        Framing::Close | Framing::None => {}
    }
    if close || framing == Framing::Close {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Writes a complete response with a Content-Length body. With `head_only` (a HEAD request) the
/// fields describe the body but the body is not sent (RFC 9110 §9.3.2).
pub fn write_full(
    out: &mut Vec<u8>,
    status: u16,
    fields: &[(&str, &str)],
    body: &[u8],
    head_only: bool,
    close: bool,
) {
    // RFC 9110 §8.6: a server MUST NOT send Content-Length in a 1xx or 204 response.
    let framing = if status == 204 || status < 200 { Framing::None } else { Framing::Length(body.len()) };
    write_head(out, status, fields, framing, close);
    if !head_only {
        out.extend_from_slice(body);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc9112_4_status_line_and_content_length() {
        let mut out = Vec::new();
        write_full(&mut out, 201, &[("Content-Type", "application/json")], b"{}", false, false);
        assert_eq!(
            out,
            b"HTTP/1.1 201 Created\r\nServer: pushwire\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
        );
    }

    #[test]
    fn rfc9110_9_3_2_head_response_has_length_but_no_content() {
        let mut out = Vec::new();
        write_full(&mut out, 200, &[], b"hello", true, true);
        assert_eq!(
            out,
            b"HTTP/1.1 200 OK\r\nServer: pushwire\r\nContent-Length: 5\r\nConnection: close\r\n\r\n"
        );
    }
}
