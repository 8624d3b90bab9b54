//! The RESP2 wire codec: an incremental decoder of Redis replies and an encoder of commands.
//!
//! Implements, from the [Redis serialization protocol specification][spec] (RESP2, the
//! protocol every Redis since 2.0 speaks by default):
//! - the five RESP2 types: [simple strings][ss] (`+`), [simple errors][se] (`-`),
//!   [integers][int] (`:`), [bulk strings][bulk] (`$`, with the [null bulk string][nullb]
//!   `$-1`) and [arrays][arr] (`*`, nested, with the [null array][nulla] `*-1`);
//! - pub/sub pushes, which RESP2 carries as ordinary arrays (`["message", channel, payload]`;
//!   classified by [`crate::redis::pubsub`]);
//! - [commands as arrays of bulk strings][send] ([`Command`]);
//! - bounds on everything a server sends ([`Limits`]), checked before memory is reserved, and
//!   one error per broken rule ([`RespError`]).
//!
//! The decoder is sans-I/O and incremental: hand it whatever bytes arrived, it consumes them
//! all and returns a value when one is complete, keeping at most one partial line (bounded by
//! [`Limits::max_line_bytes`]) and the partial value. Each input byte is examined once, so a
//! reply arriving byte by byte costs what it costs whole, and any cut of the input gives the
//! same values and the same error (split invariance, checked by the `resp_decode` fuzz target).
//!
//! Does not: speak RESP3 (`HELLO 3`). The broker never asks for it, so a RESP3 type byte
//! (`_ , # ! = ( % ~ > |`) from the server is [`RespError::UnknownType`]. RESP3's gains
//! (typed maps, pushes on the command connection, client-side caching) buy pushwire nothing:
//! it keeps pub/sub on a connection of its own anyway, so a slow pipelined history read never
//! delays a live delivery, and every reply it reads (arrays from scripts, bulk strings) is the
//! same in both versions. Leaving RESP3 out keeps the decoder, and what the fuzzer must cover,
//! to five types. Nor does it do inline commands (a server never sends them), or I/O.
//!
//! [spec]: https://redis.io/docs/latest/develop/reference/protocol-spec/
//! [ss]: https://redis.io/docs/latest/develop/reference/protocol-spec/#simple-strings
//! [se]: https://redis.io/docs/latest/develop/reference/protocol-spec/#simple-errors
//! [int]: https://redis.io/docs/latest/develop/reference/protocol-spec/#integers
//! [bulk]: https://redis.io/docs/latest/develop/reference/protocol-spec/#bulk-strings
//! [nullb]: https://redis.io/docs/latest/develop/reference/protocol-spec/#null-bulk-strings
//! [arr]: https://redis.io/docs/latest/develop/reference/protocol-spec/#arrays
//! [nulla]: https://redis.io/docs/latest/develop/reference/protocol-spec/#null-arrays
//! [send]: https://redis.io/docs/latest/develop/reference/protocol-spec/#sending-commands-to-a-redis-server

use std::fmt;

/// One RESP2 value, as the decoder returns it and [`Value::encode`] writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// `+OK\r\n`: a short status text (never CR or LF inside).
    SimpleString(Vec<u8>),
    /// `-ERR message\r\n`: the command failed; the text starts with an error code by
    /// convention (`ERR`, `WRONGTYPE`, `NOSCRIPT`, ...).
    Error(Vec<u8>),
    /// `:42\r\n`: a signed 64-bit integer.
    Integer(i64),
    /// `$5\r\nhello\r\n`: binary-safe bytes.
    BulkString(Vec<u8>),
    /// `$-1\r\n`: the null bulk string (a missing key or field).
    NullBulkString,
    /// `*2\r\n...`: an ordered list of values, possibly nested.
    Array(Vec<Value>),
    /// `*-1\r\n`: the null array (e.g. a timed-out blocking command).
    NullArray,
}

impl Value {
    /// The bytes of a bulk or simple string, else `None`.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::BulkString(bytes) | Value::SimpleString(bytes) => Some(bytes),
            _ => None,
        }
    }

    /// The integer, else `None`.
    pub fn as_integer(&self) -> Option<i64> {
        match self {
            Value::Integer(n) => Some(*n),
            _ => None,
        }
    }

    /// The elements of an array, else `None`.
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(items) => Some(items),
            _ => None,
        }
    }

    /// The error text of an error reply, else `None`.
    pub fn as_error(&self) -> Option<&[u8]> {
        match self {
            Value::Error(text) => Some(text),
            _ => None,
        }
    }

    /// Appends the wire form of the value to `out` (what a server would send). Simple strings
    /// and errors must not contain CR or LF (the decoder never produces such values).
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Value::SimpleString(text) => push_line(out, b'+', text),
            Value::Error(text) => push_line(out, b'-', text),
            Value::Integer(n) => push_line(out, b':', n.to_string().as_bytes()),
            Value::BulkString(bytes) => {
                push_line(out, b'$', bytes.len().to_string().as_bytes());
                out.extend_from_slice(bytes);
                out.extend_from_slice(b"\r\n");
            }
            Value::NullBulkString => out.extend_from_slice(b"$-1\r\n"),
            Value::Array(items) => {
                push_line(out, b'*', items.len().to_string().as_bytes());
                for item in items {
                    item.encode(out);
                }
            }
            Value::NullArray => out.extend_from_slice(b"*-1\r\n"),
        }
    }
}

fn push_line(out: &mut Vec<u8>, kind: u8, text: &[u8]) {
    out.push(kind);
    out.extend_from_slice(text);
    out.extend_from_slice(b"\r\n");
}

/// Bounds on what one Redis connection may make the decoder hold. Every one is checked when the
/// line that announces a size is complete, before any memory for the announced size is
/// reserved; exceeding one is a [`RespError`] and the connection must be closed.
///
/// A decoded value holds at most 32 bytes of memory per element plus its string bytes, and a
/// wire element takes at least 3 bytes (`+\r\n`), so one reply never holds more than about
/// 11 × [`Limits::max_reply_bytes`] (typical replies, made of bulk strings, hold about 1 ×).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest bulk string, in bytes (the spec's own bound is the server's
    /// `proto-max-bulk-len`, 512 MB by default). Must fit the largest message frame and the
    /// `INFO` text. Exceeded: [`RespError::BulkTooLarge`]. Default 8 MiB.
    pub max_bulk_bytes: usize,
    /// Most elements of one array (e.g. entries of one history page, presence members ×2).
    /// Exceeded: [`RespError::ArrayTooLong`]. Default 1 048 576.
    pub max_array_elements: usize,
    /// Most arrays nested in one another (a history page read by the channel script is 4
    /// deep). Exceeded: [`RespError::TooDeep`]. Default 16.
    pub max_depth: usize,
    /// Longest line (a simple string, an error text, an integer, a length), in bytes without
    /// the type byte and CRLF. Bounds the partial line kept between two inputs.
    /// Exceeded: [`RespError::LineTooLong`]. Default 16 KiB.
    pub max_line_bytes: usize,
    /// Most wire bytes of one top-level reply, nested values included.
    /// Exceeded: [`RespError::ReplyTooLarge`]. Default 32 MiB.
    pub max_reply_bytes: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_bulk_bytes: 8 << 20,
            max_array_elements: 1 << 20,
            max_depth: 16,
            max_line_bytes: 16 << 10,
            max_reply_bytes: 32 << 20,
        }
    }
}

impl Limits {
    /// Checks that every bound is at least 1 and a bulk string fits a reply.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_bulk_bytes == 0
            || self.max_array_elements == 0
            || self.max_depth == 0
            || self.max_line_bytes == 0
            || self.max_reply_bytes == 0
        {
            return Err("redis: every RESP limit must be at least 1".into());
        }
        if self.max_bulk_bytes > self.max_reply_bytes {
            return Err(format!(
                "redis: max_bulk_bytes ({}) exceeds max_reply_bytes ({})",
                self.max_bulk_bytes, self.max_reply_bytes
            ));
        }
        Ok(())
    }
}

/// A rule of RESP2 the server broke, or a [`Limits`] bound it crossed. All are peer faults, and
/// all have the same answer: the byte stream can no longer be trusted to be in step, so the
/// connection is closed (and counted, and reopened with backoff); every command in flight on
/// it fails.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RespError {
    /// The first byte of a value is not one of the RESP2 types `+ - : $ *`.
    UnknownType(u8),
    /// A line longer than [`Limits::max_line_bytes`].
    LineTooLong {
        /// The limit, in bytes.
        max_bytes: usize,
    },
    /// A line that does not end in CRLF, or holds a CR or LF before its end.
    LineNotCrlf,
    /// An integer line that is not an optional sign followed by decimal digits.
    InvalidInteger,
    /// An integer outside the signed 64-bit range.
    IntegerOutOfRange,
    /// A bulk string or array length that is neither `-1` nor decimal digits.
    InvalidLength,
    /// A bulk string longer than [`Limits::max_bulk_bytes`].
    BulkTooLarge {
        /// The announced length, in bytes.
        len: u64,
        /// The limit, in bytes.
        max_bytes: usize,
    },
    /// The two bytes after a bulk string's data are not CRLF.
    BulkMissingCrlf,
    /// An array with more elements than [`Limits::max_array_elements`].
    ArrayTooLong {
        /// The announced count.
        len: u64,
        /// The limit.
        max_elements: usize,
    },
    /// Arrays nested deeper than [`Limits::max_depth`].
    TooDeep {
        /// The limit.
        max_depth: usize,
    },
    /// A reply of more than [`Limits::max_reply_bytes`] wire bytes.
    ReplyTooLarge {
        /// The limit, in bytes.
        max_bytes: usize,
    },
}

impl fmt::Display for RespError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RespError::UnknownType(byte) => write!(f, "unknown RESP2 type byte {byte:#04x}"),
            RespError::LineTooLong { max_bytes } => write!(f, "RESP line longer than {max_bytes} bytes"),
            RespError::LineNotCrlf => f.write_str("RESP line not terminated by CRLF"),
            RespError::InvalidInteger => f.write_str("RESP integer is not [+-]digits"),
            RespError::IntegerOutOfRange => f.write_str("RESP integer outside 64-bit range"),
            RespError::InvalidLength => f.write_str("RESP length is neither -1 nor digits"),
            RespError::BulkTooLarge { len, max_bytes } => {
                write!(f, "RESP bulk string of {len} bytes exceeds the limit of {max_bytes}")
            }
            RespError::BulkMissingCrlf => f.write_str("RESP bulk string data not followed by CRLF"),
            RespError::ArrayTooLong { len, max_elements } => {
                write!(f, "RESP array of {len} elements exceeds the limit of {max_elements}")
            }
            RespError::TooDeep { max_depth } => write!(f, "RESP arrays nested deeper than {max_depth}"),
            RespError::ReplyTooLarge { max_bytes } => write!(f, "RESP reply exceeds {max_bytes} bytes"),
        }
    }
}

impl std::error::Error for RespError {}

/// An array whose elements are still arriving.
#[derive(Debug)]
struct OpenArray {
    items: Vec<Value>,
    /// Elements still to come (at least 1 while the array is open).
    remaining: usize,
}

/// The value being read when the input ran out.
#[derive(Debug)]
enum Partial {
    /// Between values: the next byte is a type byte.
    Idle,
    /// A line split across inputs: its bytes so far, type byte first.
    Line(Vec<u8>),
    /// A bulk string's data: the bytes so far (CRLF included once they arrive) and the
    /// announced length.
    Bulk { data: Vec<u8>, len: usize },
}

/// What reading one line gave.
enum LineStep {
    /// A complete scalar (or an empty or null aggregate).
    Value(Value),
    /// An array or a bulk string was opened; its contents follow.
    Opened,
    /// The input ended inside the line; its start is kept.
    NeedMore,
}

/// What a decode step made of the input, see [`Decoder::decode`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    /// Bytes of the input consumed; the caller drops them. Equals the input length when
    /// `value` is `None`.
    pub consumed: usize,
    /// The complete top-level value, if one ended within the consumed bytes.
    pub value: Option<Value>,
}

/// Reserve for a bulk string's data before it arrives, at most (it then grows with what
/// arrives), so a large announced length costs memory only as its bytes come in.
const BULK_INITIAL_RESERVE_BYTES: usize = 64 << 10;
/// Reserve for an array's elements before they arrive, at most.
const ARRAY_INITIAL_RESERVE: usize = 1024;

/// The incremental RESP2 reply decoder of one connection.
///
/// Feed it the bytes read from the socket with [`Decoder::decode`]; call again with the rest
/// of the input after each value it returns. After an error the decoder stays failed (the
/// stream is out of step) and returns the same error: close the connection and make a new
/// decoder for the next one.
#[derive(Debug)]
pub struct Decoder {
    limits: Limits,
    /// Open arrays, outermost first.
    stack: Vec<OpenArray>,
    partial: Partial,
    /// Wire bytes of the current top-level reply accounted for so far (a bulk string is
    /// accounted for in full when its length line is read).
    reply_bytes: usize,
    failed: Option<RespError>,
}

impl Decoder {
    /// A decoder between replies. `limits` should have passed [`Limits::validate`].
    pub fn new(limits: Limits) -> Decoder {
        Decoder { limits, stack: Vec::new(), partial: Partial::Idle, reply_bytes: 0, failed: None }
    }

    /// True between top-level values (nothing partial is held); a connection closed by the
    /// server at such a point lost no reply in the middle.
    pub fn is_idle(&self) -> bool {
        self.stack.is_empty() && matches!(self.partial, Partial::Idle) && self.failed.is_none()
    }

    /// Bytes of a partial line or bulk string held between inputs (the completed elements of
    /// open arrays are not counted): at most [`Limits::max_line_bytes`] + 2 for a line, and
    /// the bytes that arrived of a bulk string (at most [`Limits::max_bulk_bytes`] + 2).
    pub fn held_bytes(&self) -> usize {
        match &self.partial {
            Partial::Idle => 0,
            Partial::Line(line) => line.len(),
            Partial::Bulk { data, .. } => data.len(),
        }
    }

    /// Consumes a prefix of `input` and returns the next complete top-level value if it ends
    /// within it. Without a value, the whole input was consumed (partial lines and bulk data
    /// are kept inside); call again when more bytes arrive. With a value, call again with
    /// `&input[consumed..]` for the values pipelined behind it.
    ///
    /// Errors: one [`RespError`] per broken rule; the decoder then stays failed.
    pub fn decode(&mut self, input: &[u8]) -> Result<Decoded, RespError> {
        if let Some(error) = &self.failed {
            return Err(error.clone());
        }
        match self.step(input) {
            Ok(decoded) => Ok(decoded),
            Err(error) => {
                self.stack.clear();
                self.partial = Partial::Idle;
                self.failed = Some(error.clone());
                Err(error)
            }
        }
    }

    fn step(&mut self, input: &[u8]) -> Result<Decoded, RespError> {
        let mut pos = 0;
        loop {
            let value = match std::mem::replace(&mut self.partial, Partial::Idle) {
                Partial::Bulk { mut data, len } => {
                    let take = (len + 2 - data.len()).min(input.len() - pos);
                    data.extend_from_slice(&input[pos..pos + take]);
                    pos += take;
                    if data.len() < len + 2 {
                        self.partial = Partial::Bulk { data, len };
                        return Ok(Decoded { consumed: pos, value: None });
                    }
                    // RESP §Bulk strings: `$<length>\r\n<data>\r\n`: the data is followed by
                    // CRLF.
                    if data[len..] != *b"\r\n" {
                        return Err(RespError::BulkMissingCrlf);
                    }
                    data.truncate(len);
                    Value::BulkString(data)
                }
                Partial::Idle if pos == input.len() => return Ok(Decoded { consumed: pos, value: None }),
                Partial::Idle => match self.line(Vec::new(), input, &mut pos)? {
                    LineStep::Value(value) => value,
                    LineStep::Opened => continue,
                    LineStep::NeedMore => return Ok(Decoded { consumed: pos, value: None }),
                },
                Partial::Line(buffered) => match self.line(buffered, input, &mut pos)? {
                    LineStep::Value(value) => value,
                    LineStep::Opened => continue,
                    LineStep::NeedMore => return Ok(Decoded { consumed: pos, value: None }),
                },
            };
            if let Some(done) = self.complete(value) {
                self.reply_bytes = 0;
                return Ok(Decoded { consumed: pos, value: Some(done) });
            }
        }
    }

    /// Reads the rest of a line (`buffered` holds its start, type byte first) and interprets
    /// it.
    fn line(&mut self, mut buffered: Vec<u8>, input: &[u8], pos: &mut usize) -> Result<LineStep, RespError> {
        // Room for the type byte, the content, CR and LF; that many bytes without an LF is a
        // line too long, whatever comes next.
        let max_raw = 1 + self.limits.max_line_bytes + 2;
        if buffered.is_empty() {
            // RESP §RESP protocol description: "The first byte in an RESP-serialized payload
            // always identifies its type."
            let kind = input[*pos];
            if !matches!(kind, b'+' | b'-' | b':' | b'$' | b'*') {
                return Err(RespError::UnknownType(kind));
            }
        }
        let rest = &input[*pos..];
        let have = buffered.len();
        let window = &rest[..rest.len().min(max_raw - have)];
        let Some(lf) = window.iter().position(|&b| b == b'\n') else {
            if window.len() + have >= max_raw {
                return Err(RespError::LineTooLong { max_bytes: self.limits.max_line_bytes });
            }
            buffered.extend_from_slice(rest);
            *pos = input.len();
            self.partial = Partial::Line(buffered);
            return Ok(LineStep::NeedMore);
        };
        let line: &[u8] = if buffered.is_empty() {
            &rest[..=lf]
        } else {
            buffered.extend_from_slice(&rest[..=lf]);
            &buffered
        };
        *pos += lf + 1;
        self.account(line.len())?;
        // RESP §RESP protocol description: "The \r\n (CRLF) is the protocol's terminator,
        // which always separates its parts." §Simple strings: "The string mustn't contain a
        // CR (\r) or LF (\n) character".
        let kind = line[0];
        let text = match &line[1..] {
            [text @ .., b'\r', b'\n'] if !text.contains(&b'\r') => text,
            _ => return Err(RespError::LineNotCrlf),
        };
        match kind {
            b'+' => Ok(LineStep::Value(Value::SimpleString(text.to_vec()))),
            b'-' => Ok(LineStep::Value(Value::Error(text.to_vec()))),
            b':' => parse_integer(text).map(|n| LineStep::Value(Value::Integer(n))),
            b'$' => {
                // RESP §Null bulk strings: "$-1\r\n".
                let Some(len) = parse_length(text)? else {
                    return Ok(LineStep::Value(Value::NullBulkString));
                };
                if len > self.limits.max_bulk_bytes as u64 {
                    return Err(RespError::BulkTooLarge { len, max_bytes: self.limits.max_bulk_bytes });
                }
                // Checked against max_bulk_bytes (a usize) just above.
                let len = len as usize;
                self.account(len + 2)?;
                let data = Vec::with_capacity((len + 2).min(BULK_INITIAL_RESERVE_BYTES));
                self.partial = Partial::Bulk { data, len };
                Ok(LineStep::Opened)
            }
            _ => {
                // RESP §Null arrays: "*-1\r\n".
                let Some(len) = parse_length(text)? else {
                    return Ok(LineStep::Value(Value::NullArray));
                };
                if len > self.limits.max_array_elements as u64 {
                    return Err(RespError::ArrayTooLong {
                        len,
                        max_elements: self.limits.max_array_elements,
                    });
                }
                if self.stack.len() >= self.limits.max_depth {
                    return Err(RespError::TooDeep { max_depth: self.limits.max_depth });
                }
                if len == 0 {
                    return Ok(LineStep::Value(Value::Array(Vec::new())));
                }
                let len = len as usize;
                let items = Vec::with_capacity(len.min(ARRAY_INITIAL_RESERVE));
                self.stack.push(OpenArray { items, remaining: len });
                Ok(LineStep::Opened)
            }
        }
    }

    /// Counts `bytes` more wire bytes into the current reply.
    fn account(&mut self, bytes: usize) -> Result<(), RespError> {
        let total = self.reply_bytes.saturating_add(bytes);
        if total > self.limits.max_reply_bytes {
            return Err(RespError::ReplyTooLarge { max_bytes: self.limits.max_reply_bytes });
        }
        self.reply_bytes = total;
        Ok(())
    }

    /// Adds a finished value to the innermost open array, closing arrays that are then full;
    /// returns the top-level value once it is complete.
    fn complete(&mut self, mut value: Value) -> Option<Value> {
        loop {
            let Some(open) = self.stack.last_mut() else {
                return Some(value);
            };
            open.items.push(value);
            open.remaining -= 1;
            if open.remaining > 0 {
                return None;
            }
            // The array is full: it becomes the finished value of its parent.
            let full = self.stack.pop().map(|open| open.items).unwrap_or_default();
            value = Value::Array(full);
        }
    }
}

/// RESP §Integers: `:[<+|->]<value>\r\n`, "An optional plus (+) or minus (-) as the sign. One
/// or more decimal digits (0..9) as the integer's unsigned, base-10 value", a signed 64-bit
/// integer.
fn parse_integer(text: &[u8]) -> Result<i64, RespError> {
    let (negative, digits) = match text {
        [b'-', digits @ ..] => (true, digits),
        [b'+', digits @ ..] => (false, digits),
        digits => (false, digits),
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err(RespError::InvalidInteger);
    }
    // Accumulate negatively so i64::MIN parses.
    let mut n: i64 = 0;
    for &d in digits {
        n = n
            .checked_mul(10)
            .and_then(|n| n.checked_sub(i64::from(d - b'0')))
            .ok_or(RespError::IntegerOutOfRange)?;
    }
    if negative {
        Ok(n)
    } else {
        n.checked_neg().ok_or(RespError::IntegerOutOfRange)
    }
}

/// A bulk string or array length: `-1` (null, `None`) or decimal digits.
fn parse_length(text: &[u8]) -> Result<Option<u64>, RespError> {
    if text == b"-1" {
        return Ok(None);
    }
    if text.is_empty() || text.len() > 19 || !text.iter().all(u8::is_ascii_digit) {
        return Err(RespError::InvalidLength);
    }
    // At most 19 digits: fits a u64.
    Ok(Some(text.iter().fold(0u64, |n, &d| n * 10 + u64::from(d - b'0'))))
}

/// One command: RESP §Sending commands to a Redis server, "A client sends the Redis server an
/// array consisting of only bulk strings." Arguments are appended one by one, each written
/// once into the command's buffer; [`Command::encode`] then prefixes the array header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    argc: usize,
    /// The arguments, each as a bulk string.
    body: Vec<u8>,
}

impl Command {
    /// A command with its name as the first argument (`GET`, `EVALSHA`, ...).
    pub fn new(name: &str) -> Command {
        Command { argc: 0, body: Vec::new() }.arg(name)
    }

    /// Appends one argument (any bytes: bulk strings are binary-safe).
    pub fn arg(mut self, bytes: impl AsRef<[u8]>) -> Command {
        self.push_arg(bytes.as_ref());
        self
    }

    /// Appends one decimal integer argument.
    pub fn arg_u64(self, n: u64) -> Command {
        self.arg(n.to_string())
    }

    /// Appends one argument in place.
    pub fn push_arg(&mut self, bytes: &[u8]) {
        self.argc += 1;
        self.body.reserve(bytes.len() + 16);
        push_line(&mut self.body, b'$', bytes.len().to_string().as_bytes());
        self.body.extend_from_slice(bytes);
        self.body.extend_from_slice(b"\r\n");
    }

    /// Number of arguments, the name included.
    pub fn argc(&self) -> usize {
        self.argc
    }

    /// Appends the command's wire form (`*<argc>\r\n` then each bulk string) to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.reserve(self.body.len() + 16);
        push_line(out, b'*', self.argc.to_string().as_bytes());
        out.extend_from_slice(&self.body);
    }

    /// The command's wire form.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(bytes: &[u8]) -> Value {
        Value::BulkString(bytes.to_vec())
    }

    fn simple(text: &str) -> Value {
        Value::SimpleString(text.as_bytes().to_vec())
    }

    /// Decodes `wire` whole and at every single cut point, and byte by byte; all must agree.
    /// Returns the values and the error, if any.
    fn decode_all(limits: Limits, wire: &[u8]) -> (Vec<Value>, Option<RespError>) {
        let whole = run(limits, &[wire]);
        for cut in 0..=wire.len() {
            let (a, b) = wire.split_at(cut);
            assert_eq!(run(limits, &[a, b]), whole, "cut at {cut}");
        }
        let bytes: Vec<&[u8]> = wire.chunks(1).collect();
        assert_eq!(run(limits, &bytes), whole, "byte by byte");
        whole
    }

    fn run(limits: Limits, pieces: &[&[u8]]) -> (Vec<Value>, Option<RespError>) {
        let mut decoder = Decoder::new(limits);
        let mut values = Vec::new();
        for piece in pieces {
            let mut rest = *piece;
            loop {
                match decoder.decode(rest) {
                    Ok(Decoded { consumed, value }) => {
                        rest = &rest[consumed..];
                        match value {
                            Some(v) => values.push(v),
                            None => {
                                assert!(rest.is_empty(), "no value means all consumed");
                                break;
                            }
                        }
                    }
                    Err(e) => return (values, Some(e)),
                }
            }
        }
        (values, None)
    }

    fn one(wire: &[u8]) -> Value {
        let (values, error) = decode_all(Limits::default(), wire);
        assert_eq!(error, None, "{:?}", String::from_utf8_lossy(wire));
        assert_eq!(values.len(), 1);
        let value = values.into_iter().next().unwrap();
        let mut again = Vec::new();
        value.encode(&mut again);
        assert_eq!(again, wire, "encode gives the canonical wire form back");
        value
    }

    fn error(limits: Limits, wire: &[u8]) -> RespError {
        let (_, error) = decode_all(limits, wire);
        error.unwrap_or_else(|| panic!("{:?} should fail", String::from_utf8_lossy(wire)))
    }

    #[test]
    fn resp_simple_strings_ok_example() {
        assert_eq!(one(b"+OK\r\n"), simple("OK"));
        assert_eq!(one(b"+\r\n"), simple(""));
    }

    #[test]
    fn resp_simple_errors_examples() {
        assert_eq!(one(b"-Error message\r\n"), Value::Error(b"Error message".to_vec()));
        let wrongtype = b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n";
        assert_eq!(one(wrongtype).as_error().unwrap(), &wrongtype[1..wrongtype.len() - 2]);
        assert_eq!(
            one(b"-ERR unknown command 'asdf'\r\n").as_error(),
            Some(&b"ERR unknown command 'asdf'"[..])
        );
    }

    #[test]
    fn resp_integers_examples() {
        assert_eq!(one(b":0\r\n"), Value::Integer(0));
        assert_eq!(one(b":1000\r\n"), Value::Integer(1000));
        assert_eq!(one(b":-52\r\n"), Value::Integer(-52));
        assert_eq!(one(b":9223372036854775807\r\n"), Value::Integer(i64::MAX));
        assert_eq!(one(b":-9223372036854775808\r\n"), Value::Integer(i64::MIN));
        // The optional plus sign: accepted, written without.
        assert_eq!(decode_all(Limits::default(), b":+7\r\n").0, [Value::Integer(7)]);
        assert_eq!(decode_all(Limits::default(), b":-0\r\n").0, [Value::Integer(0)]);
    }

    #[test]
    fn resp_bulk_strings_examples() {
        assert_eq!(one(b"$5\r\nhello\r\n"), bulk(b"hello"));
        assert_eq!(one(b"$0\r\n\r\n"), bulk(b""));
        // Binary-safe: CR, LF and NUL inside the data.
        assert_eq!(one(b"$6\r\na\r\nb\0\n\r\n"), bulk(b"a\r\nb\0\n"));
    }

    #[test]
    fn resp_null_bulk_string() {
        assert_eq!(one(b"$-1\r\n"), Value::NullBulkString);
    }

    #[test]
    fn resp_arrays_examples() {
        assert_eq!(one(b"*0\r\n"), Value::Array(vec![]));
        assert_eq!(
            one(b"*2\r\n$5\r\nhello\r\n$5\r\nworld\r\n"),
            Value::Array(vec![bulk(b"hello"), bulk(b"world")])
        );
        assert_eq!(
            one(b"*3\r\n:1\r\n:2\r\n:3\r\n"),
            Value::Array(vec![Value::Integer(1), Value::Integer(2), Value::Integer(3)])
        );
        // Mixed types.
        assert_eq!(
            one(b"*5\r\n:1\r\n:2\r\n:3\r\n:4\r\n$5\r\nhello\r\n"),
            Value::Array(vec![
                Value::Integer(1),
                Value::Integer(2),
                Value::Integer(3),
                Value::Integer(4),
                bulk(b"hello")
            ])
        );
    }

    #[test]
    fn resp_nested_arrays_example() {
        let wire = b"*2\r\n*3\r\n:1\r\n:2\r\n:3\r\n*2\r\n+Hello\r\n-World\r\n";
        assert_eq!(
            one(wire),
            Value::Array(vec![
                Value::Array(vec![Value::Integer(1), Value::Integer(2), Value::Integer(3)]),
                Value::Array(vec![simple("Hello"), Value::Error(b"World".to_vec())]),
            ])
        );
        // Nested arrays ending together, and empty arrays inside.
        assert_eq!(
            one(b"*1\r\n*1\r\n*1\r\n*0\r\n"),
            Value::Array(vec![Value::Array(vec![Value::Array(vec![Value::Array(vec![])])])])
        );
    }

    #[test]
    fn resp_null_array_and_null_elements() {
        assert_eq!(one(b"*-1\r\n"), Value::NullArray);
        // The spec's "Null elements in arrays" example.
        assert_eq!(
            one(b"*3\r\n$5\r\nhello\r\n$-1\r\n$5\r\nworld\r\n"),
            Value::Array(vec![bulk(b"hello"), Value::NullBulkString, bulk(b"world")])
        );
    }

    #[test]
    fn resp_pubsub_message_and_subscribe_replies() {
        // What SUBSCRIBE answers, then a published message (RESP2 pushes are arrays).
        let wire = b"*3\r\n$9\r\nsubscribe\r\n$5\r\nfirst\r\n:1\r\n*3\r\n$7\r\nmessage\r\n$5\r\nfirst\r\n$5\r\nHello\r\n";
        let (values, error) = decode_all(Limits::default(), wire);
        assert_eq!(error, None);
        assert_eq!(
            values,
            [
                Value::Array(vec![bulk(b"subscribe"), bulk(b"first"), Value::Integer(1)]),
                Value::Array(vec![bulk(b"message"), bulk(b"first"), bulk(b"Hello")]),
            ]
        );
    }

    #[test]
    fn resp_pipelined_replies_come_out_in_order() {
        let wire = b"+OK\r\n:5\r\n$3\r\nabc\r\n*1\r\n$-1\r\n-ERR x\r\n";
        let (values, error) = decode_all(Limits::default(), wire);
        assert_eq!(error, None);
        assert_eq!(
            values,
            [
                simple("OK"),
                Value::Integer(5),
                bulk(b"abc"),
                Value::Array(vec![Value::NullBulkString]),
                Value::Error(b"ERR x".to_vec())
            ]
        );
    }

    #[test]
    fn resp_sending_commands_as_arrays_of_bulk_strings() {
        // The spec's example: "LLEN mylist" is sent as *2\r\n$4\r\nLLEN\r\n$6\r\nmylist\r\n.
        assert_eq!(Command::new("LLEN").arg("mylist").to_bytes(), b"*2\r\n$4\r\nLLEN\r\n$6\r\nmylist\r\n");
        let command = Command::new("SET").arg("k").arg(b"a\r\n\0".as_slice()).arg_u64(42);
        assert_eq!(command.argc(), 4);
        // A command is itself an array of bulk strings: the decoder reads it back.
        let value = one(&command.to_bytes());
        assert_eq!(value, Value::Array(vec![bulk(b"SET"), bulk(b"k"), bulk(b"a\r\n\0"), bulk(b"42")]));
    }

    #[test]
    fn resp_type_byte_unknown_fails_including_resp3_types() {
        for byte in [b'_', b',', b'#', b'!', b'=', b'(', b'%', b'~', b'>', b'|', b'a', b'\r', 0] {
            assert_eq!(error(Limits::default(), &[byte, b'\r', b'\n']), RespError::UnknownType(byte));
        }
        // Decided on the type byte alone.
        assert_eq!(error(Limits::default(), b"_"), RespError::UnknownType(b'_'));
    }

    #[test]
    fn resp_line_not_crlf_fails() {
        for wire in [&b"+OK\n"[..], b"+O\rK\r\n", b":1\n", b"$3\nabc\r\n", b"*1\n:1\r\n", b"+\r\r\n"] {
            assert_eq!(error(Limits::default(), wire), RespError::LineNotCrlf, "{wire:?}");
        }
    }

    #[test]
    fn resp_line_too_long_fails_before_buffering_more() {
        let limits = Limits { max_line_bytes: 4, ..Limits::default() };
        assert_eq!(decode_all(limits, b"+abcd\r\n").0, [simple("abcd")]);
        assert_eq!(error(limits, b"+abcde\r\n"), RespError::LineTooLong { max_bytes: 4 });
        // Without any LF: decided after max + 2 bytes of content, whatever follows.
        assert_eq!(error(limits, b"-abcdef"), RespError::LineTooLong { max_bytes: 4 });
        assert_eq!(run(limits, &[b"-abcde"]), (vec![], None), "max + 1 bytes may still end in CR");
    }

    #[test]
    fn resp_invalid_integer_fails() {
        for wire in [&b":\r\n"[..], b":-\r\n", b":+\r\n", b":1a\r\n", b": 1\r\n", b":1.5\r\n", b":--1\r\n"] {
            assert_eq!(error(Limits::default(), wire), RespError::InvalidInteger, "{wire:?}");
        }
        for wire in
            [&b":9223372036854775808\r\n"[..], b":-9223372036854775809\r\n", b":99999999999999999999999\r\n"]
        {
            assert_eq!(error(Limits::default(), wire), RespError::IntegerOutOfRange, "{wire:?}");
        }
    }

    #[test]
    fn resp_invalid_length_fails() {
        for wire in [
            &b"$\r\n"[..],
            b"$-2\r\n",
            b"$+1\r\nx\r\n",
            b"*-2\r\n",
            b"* 1\r\n",
            b"$12345678901234567890\r\n",
            b"*x\r\n",
        ] {
            assert_eq!(error(Limits::default(), wire), RespError::InvalidLength, "{wire:?}");
        }
    }

    #[test]
    fn resp_bulk_too_large_fails_on_the_length_line() {
        let limits = Limits { max_bulk_bytes: 3, ..Limits::default() };
        assert_eq!(decode_all(limits, b"$3\r\nabc\r\n").0, [bulk(b"abc")]);
        assert_eq!(error(limits, b"$4\r\n"), RespError::BulkTooLarge { len: 4, max_bytes: 3 });
        // A huge announced length reserves nothing.
        let e = error(Limits::default(), b"$9999999999999999999\r\n");
        assert_eq!(e, RespError::BulkTooLarge { len: 9_999_999_999_999_999_999, max_bytes: 8 << 20 });
    }

    #[test]
    fn resp_bulk_missing_crlf_fails() {
        for wire in [&b"$3\r\nabcd\r\n"[..], b"$3\r\nabc\n\r", b"$0\r\nxx", b"$1\r\na\rx"] {
            assert_eq!(error(Limits::default(), wire), RespError::BulkMissingCrlf, "{wire:?}");
        }
    }

    #[test]
    fn resp_array_too_long_fails_on_the_count_line() {
        let limits = Limits { max_array_elements: 2, ..Limits::default() };
        assert!(decode_all(limits, b"*2\r\n:1\r\n:2\r\n").1.is_none());
        assert_eq!(error(limits, b"*3\r\n"), RespError::ArrayTooLong { len: 3, max_elements: 2 });
    }

    #[test]
    fn resp_too_deep_fails() {
        let limits = Limits { max_depth: 2, ..Limits::default() };
        assert!(decode_all(limits, b"*1\r\n*1\r\n:1\r\n").1.is_none());
        assert_eq!(error(limits, b"*1\r\n*1\r\n*0\r\n"), RespError::TooDeep { max_depth: 2 });
    }

    #[test]
    fn resp_reply_too_large_fails_and_resets_per_reply() {
        let limits = Limits { max_reply_bytes: 12, max_bulk_bytes: 12, ..Limits::default() };
        // 12 bytes: "*1\r\n" + "$2\r\nab\r\n" = 4 + 8.
        assert_eq!(decode_all(limits, b"*1\r\n$2\r\nab\r\n").0.len(), 1);
        // Two such replies in a row: the count starts again at each.
        assert_eq!(decode_all(limits, b"*1\r\n$2\r\nab\r\n*1\r\n$2\r\nab\r\n").0.len(), 2);
        assert_eq!(error(limits, b"*1\r\n$3\r\nabc\r\n"), RespError::ReplyTooLarge { max_bytes: 12 });
        assert_eq!(error(limits, b"*4\r\n:1\r\n:2\r\n:3\r\n"), RespError::ReplyTooLarge { max_bytes: 12 });
    }

    #[test]
    fn resp_decoder_stays_failed_after_an_error() {
        let mut decoder = Decoder::new(Limits::default());
        assert_eq!(decoder.decode(b"?"), Err(RespError::UnknownType(b'?')));
        assert!(!decoder.is_idle());
        assert_eq!(decoder.decode(b"+OK\r\n"), Err(RespError::UnknownType(b'?')));
    }

    #[test]
    fn resp_decoder_is_idle_only_between_replies() {
        let mut decoder = Decoder::new(Limits::default());
        assert!(decoder.is_idle());
        assert_eq!(decoder.decode(b"*2\r\n:1\r").unwrap(), Decoded { consumed: 7, value: None });
        assert!(!decoder.is_idle());
        let done = decoder.decode(b"\n$1\r\nx\r\n").unwrap();
        assert_eq!(done.value, Some(Value::Array(vec![Value::Integer(1), bulk(b"x")])));
        assert!(decoder.is_idle());
    }

    #[test]
    fn resp_value_is_32_bytes_as_the_memory_bound_assumes() {
        assert!(std::mem::size_of::<Value>() <= 32);
    }

    #[test]
    fn resp_limits_validate() {
        assert_eq!(Limits::default().validate(), Ok(()));
        let ok = Limits::default();
        for bad in [
            Limits { max_bulk_bytes: 0, ..ok },
            Limits { max_array_elements: 0, ..ok },
            Limits { max_depth: 0, ..ok },
            Limits { max_line_bytes: 0, ..ok },
            Limits { max_reply_bytes: 0, ..ok },
            Limits { max_bulk_bytes: ok.max_reply_bytes + 1, ..ok },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn resp_error_display_names_the_rule() {
        let errors = [
            RespError::UnknownType(b'_'),
            RespError::LineTooLong { max_bytes: 1 },
            RespError::LineNotCrlf,
            RespError::InvalidInteger,
            RespError::IntegerOutOfRange,
            RespError::InvalidLength,
            RespError::BulkTooLarge { len: 2, max_bytes: 1 },
            RespError::BulkMissingCrlf,
            RespError::ArrayTooLong { len: 2, max_elements: 1 },
            RespError::TooDeep { max_depth: 1 },
            RespError::ReplyTooLarge { max_bytes: 1 },
        ];
        for e in errors {
            assert!(e.to_string().contains("RESP"), "{e}");
        }
    }
}
