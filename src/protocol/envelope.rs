//! The JSON envelope, both ways: how one channel message looks in polling responses, the
//! chunked stream and the `pushwire.v1` WebSocket subprotocol, written by the server's
//! transports and read by the clients (`crate::client`) and tests.
//!
//! ```text
//! {"id":"EPOCH:OFFSET","event":"NAME","data":"text"}       a text message (event only when set)
//! {"id":"EPOCH:OFFSET","data_b64":"AAEC"}                  a binary message, standard base64
//! {"type":"gap","next":"EPOCH:OFFSET"}                     messages were lost before `next`
//! {"type":"open","next":"EPOCH:OFFSET"}                    a subscription starts after `next`
//! {"type":"heartbeat"}                                     the stream is alive (stream only)
//! {"messages":[…],"next":"EPOCH:OFFSET","gap":false}       a poll answer
//! {"channel":"a","id":…,"data":…}                         any of these on a multi-channel
//!                                                          connection: the channel first
//! {"messages":[…],"next":"E:O,E:O","gaps":["b"]}           a multi-channel poll answer
//! {"type":"presence","channel":"a","count":N,"members":[…]}  a channel's presence
//! ```
//!
//! Implements: writing JSON text ([RFC 8259](https://www.rfc-editor.org/rfc/rfc8259)) for
//! strings with the escapes of §7, and base64
//! ([RFC 4648 §4](https://www.rfc-editor.org/rfc/rfc4648#section-4)); reading those shapes back
//! through `serde_json`, with cursors checked by [`Cursor::parse`]. Pure: no I/O.
//!
//! Does not: parse JSON on the server (the server never reads an envelope), bound the input size
//! when reading (the client drivers do before parsing), or accept other shapes: an unknown
//! `type` is [`Envelope::Other`], ignored by the subscriber for forward compatibility.

use base64::Engine as _;
use serde_json::Value;

use crate::hub::{Cursor, Message, Payload as HubPayload};

/// Appends `s` as a JSON string (RFC 8259 §7: quotation mark, reverse solidus and the control
/// characters U+0000 to U+001F MUST be escaped).
pub fn write_json_string(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if escape.is_empty() {
            out.extend_from_slice(format!("\\u{b:04x}").as_bytes());
        } else {
            out.extend_from_slice(escape);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// The envelope of one message, without a trailing newline.
pub fn message_envelope(msg: &Message) -> Vec<u8> {
    let mut out = Vec::with_capacity(msg.payload.len_bytes() + 64);
    out.extend_from_slice(b"{\"id\":\"");
    out.extend_from_slice(msg.id.to_string().as_bytes());
    out.push(b'"');
    if let Some(event) = &msg.event {
        out.extend_from_slice(b",\"event\":");
        write_json_string(&mut out, event);
    }
    match &msg.payload {
        HubPayload::Text(text) => {
            out.extend_from_slice(b",\"data\":");
            write_json_string(&mut out, text);
        }
        HubPayload::Binary(bytes) => {
            out.extend_from_slice(b",\"data_b64\":\"");
            out.extend_from_slice(base64::engine::general_purpose::STANDARD.encode(bytes).as_bytes());
            out.push(b'"');
        }
    }
    out.push(b'}');
    out
}

/// `{"channel":"NAME",` followed by the rest of the JSON object `json` (which starts with `{`).
pub fn with_channel(channel: &crate::hub::ChannelName, json: Vec<u8>) -> Vec<u8> {
    let mut out = Vec::with_capacity(json.len() + channel.as_str().len() + 14);
    // Channel names need no JSON escaping (their alphabet is unreserved URL characters).
    out.extend_from_slice(b"{\"channel\":\"");
    out.extend_from_slice(channel.as_str().as_bytes());
    out.extend_from_slice(b"\",");
    out.extend_from_slice(&json[1..]);
    out
}

/// The envelope that signals a gap: messages before `next` may have been lost.
pub fn gap_envelope(next: Cursor) -> Vec<u8> {
    format!("{{\"type\":\"gap\",\"next\":\"{next}\"}}").into_bytes()
}

/// How [`open_envelope`] starts: its own type first, so a reader can tell it without parsing.
const OPEN_PREFIX: &[u8] = b"{\"type\":\"open\"";

/// The envelope that starts a subscription: messages after `next` follow.
pub fn open_envelope(next: Cursor) -> Vec<u8> {
    format!("{{\"type\":\"open\",\"next\":\"{next}\"}}").into_bytes()
}

/// True for an envelope written by [`open_envelope`], told by its first bytes without parsing
/// (the load generator reads every line and frame with this; [`parse_envelope`] reads it whole).
pub fn is_open_envelope(bytes: &[u8]) -> bool {
    bytes.starts_with(OPEN_PREFIX)
}

/// True for an [`open_envelope`] labelled with its channel by [`with_channel`]
/// (`{"channel":"a","type":"open",…}`: a multi-channel WebSocket's or stream's), told the same
/// way.
pub fn is_channel_open_envelope(bytes: &[u8]) -> bool {
    let Some(rest) = bytes.strip_prefix(b"{\"channel\":\"") else { return false };
    // Channel names hold no quote (their alphabet is unreserved URL characters).
    let Some(end) = rest.iter().position(|&b| b == b'"') else { return false };
    rest[end + 1..].strip_prefix(b",").is_some_and(|rest| rest.starts_with(&OPEN_PREFIX[1..]))
}

/// A message body as received (the reader's side of [`crate::hub::Payload`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// A text message.
    Text(String),
    /// A binary message.
    Binary(Vec<u8>),
}

/// One channel message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// Its cursor.
    pub id: Cursor,
    /// Its event name, if it was published with one.
    pub event: Option<String>,
    /// Its body.
    pub payload: Payload,
}

/// One line of a stream or one `pushwire.v1` frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Envelope {
    /// A message.
    Message(Received),
    /// Messages before `next` may have been lost.
    Gap {
        /// Where the client now stands.
        next: Cursor,
    },
    /// The subscription starts after `next`.
    Open {
        /// Where the subscription starts.
        next: Cursor,
    },
    /// A heartbeat.
    Heartbeat,
    /// A `type` this client does not know.
    Other,
}

/// A short or long poll's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PollAnswer {
    /// The messages after the cursor polled with.
    pub messages: Vec<Received>,
    /// The cursor to poll from next.
    pub next: Cursor,
    /// Messages were lost between the cursor polled with and the first message (or `next`).
    pub gap: bool,
}

/// Why an envelope or poll answer could not be read: a one-line, human-readable reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid(pub String);

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Invalid {}

fn invalid(what: &str) -> Invalid {
    Invalid(what.to_string())
}

fn cursor_field(value: &Value, name: &str) -> Result<Cursor, Invalid> {
    let text =
        value.get(name).and_then(Value::as_str).ok_or_else(|| invalid(&format!("no \"{name}\" cursor")))?;
    Cursor::parse(text).map_err(|e| invalid(&format!("\"{name}\" is not a cursor: {e}")))
}

fn message(value: &Value) -> Result<Received, Invalid> {
    let id = cursor_field(value, "id")?;
    let event = match value.get("event") {
        None | Some(Value::Null) => None,
        Some(Value::String(name)) => Some(name.clone()),
        Some(_) => return Err(invalid("\"event\" is not a string")),
    };
    let payload = if let Some(data) = value.get("data") {
        Payload::Text(data.as_str().ok_or_else(|| invalid("\"data\" is not a string"))?.to_string())
    } else if let Some(b64) = value.get("data_b64") {
        let b64 = b64.as_str().ok_or_else(|| invalid("\"data_b64\" is not a string"))?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|_| invalid("\"data_b64\" is not base64"))?;
        Payload::Binary(bytes)
    } else {
        return Err(invalid("a message without \"data\" or \"data_b64\""));
    };
    Ok(Received { id, event, payload })
}

fn parse_json(json: &[u8]) -> Result<Value, Invalid> {
    serde_json::from_slice(json).map_err(|e| Invalid(format!("not JSON: {e}")))
}

/// Parses one envelope (an NDJSON line without its LF, or a `pushwire.v1` text frame).
pub fn parse_envelope(json: &[u8]) -> Result<Envelope, Invalid> {
    let value = parse_json(json)?;
    if !value.is_object() {
        return Err(invalid("an envelope that is not a JSON object"));
    }
    match value.get("type").map(|t| t.as_str()) {
        None => message(&value).map(Envelope::Message),
        Some(Some("gap")) => Ok(Envelope::Gap { next: cursor_field(&value, "next")? }),
        Some(Some("open")) => Ok(Envelope::Open { next: cursor_field(&value, "next")? }),
        Some(Some("heartbeat")) => Ok(Envelope::Heartbeat),
        Some(Some(_)) => Ok(Envelope::Other),
        Some(None) => Err(invalid("\"type\" is not a string")),
    }
}

/// Parses a poll answer.
pub fn parse_poll_answer(json: &[u8]) -> Result<PollAnswer, Invalid> {
    let value = parse_json(json)?;
    let messages = value
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("a poll answer without a \"messages\" array"))?
        .iter()
        .map(message)
        .collect::<Result<Vec<_>, _>>()?;
    let next = cursor_field(&value, "next")?;
    let gap =
        value.get("gap").and_then(Value::as_bool).ok_or_else(|| invalid("a poll answer without \"gap\""))?;
    Ok(PollAnswer { messages, next, gap })
}

/// Parses one envelope of a multi-channel connection: the channel it names (`None` when it
/// names none) and the envelope.
pub fn parse_labelled_envelope(json: &[u8]) -> Result<(Option<String>, Envelope), Invalid> {
    let envelope = parse_envelope(json)?;
    let value = parse_json(json)?;
    let channel = match value.get("channel") {
        None => None,
        Some(Value::String(name)) => Some(name.clone()),
        Some(_) => return Err(invalid("\"channel\" is not a string")),
    };
    Ok((channel, envelope))
}

/// A multi-channel poll's answer (`/channels/a,b`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MultiPollAnswer {
    /// Each message with its channel.
    pub messages: Vec<(String, Received)>,
    /// Each channel's cursor, in the request's order (the full composite form).
    pub next: Vec<Option<Cursor>>,
    /// The channels whose history was exceeded.
    pub gaps: Vec<String>,
}

/// Parses a multi-channel poll answer.
pub fn parse_multi_poll_answer(json: &[u8]) -> Result<MultiPollAnswer, Invalid> {
    let value = parse_json(json)?;
    let messages = value
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("a poll answer without a \"messages\" array"))?
        .iter()
        .map(|m| {
            let channel = m
                .get("channel")
                .and_then(Value::as_str)
                .ok_or_else(|| invalid("a message without \"channel\""))?;
            Ok((channel.to_string(), message(m)?))
        })
        .collect::<Result<Vec<_>, Invalid>>()?;
    let next = value.get("next").and_then(Value::as_str).ok_or_else(|| invalid("no \"next\" cursor list"))?;
    let next = next
        .split(',')
        .map(|entry| match entry {
            "" => Ok(None),
            entry => Cursor::parse(entry).map(Some).map_err(|e| invalid(&format!("\"next\" entry: {e}"))),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let gaps = value
        .get("gaps")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("a poll answer without \"gaps\""))?
        .iter()
        .map(|g| g.as_str().map(String::from).ok_or_else(|| invalid("a \"gaps\" entry is not a string")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(MultiPollAnswer { messages, next, gaps })
}

/// The `id` of a publish's `201` answer, `{"id":"EPOCH:OFFSET"}`.
pub fn parse_created(json: &[u8]) -> Result<Cursor, Invalid> {
    cursor_field(&parse_json(json)?, "id")
}

/// One presence member, as `GET /channels/NAME/presence` and the `presence` command list it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceMember {
    /// The connection's id (hex), unique on the server.
    pub id: String,
    /// The user id (`sub`) of the signed token the member subscribed with, if any.
    pub user: Option<String>,
    /// The client-supplied info, as its JSON text (an object), if any.
    pub info: Option<String>,
}

/// A channel's presence: its members and their count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presence {
    /// The channel.
    pub channel: String,
    /// How many members the server counted (may exceed `members.len()` when the list is
    /// capped).
    pub count: u64,
    /// The members listed.
    pub members: Vec<PresenceMember>,
}

/// Parses a presence answer: `{"channel":"a","count":N,"members":[{"id":…,"user":…,"info":…}]}`.
pub fn parse_presence(json: &[u8]) -> Result<Presence, Invalid> {
    let value = parse_json(json)?;
    let channel = value
        .get("channel")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("a presence answer without a \"channel\""))?
        .to_string();
    let count = value
        .get("count")
        .and_then(Value::as_u64)
        .ok_or_else(|| invalid("a presence answer without \"count\""))?;
    let members = value
        .get("members")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("a presence answer without a \"members\" array"))?
        .iter()
        .map(|member| {
            let id = member
                .get("id")
                .and_then(Value::as_str)
                .ok_or_else(|| invalid("a presence member without an \"id\""))?
                .to_string();
            let user = match member.get("user") {
                None | Some(Value::Null) => None,
                Some(Value::String(user)) => Some(user.clone()),
                Some(_) => return Err(invalid("a presence member's \"user\" is not a string")),
            };
            let info = match member.get("info") {
                None | Some(Value::Null) => None,
                Some(info @ Value::Object(_)) => Some(info.to_string()),
                Some(_) => return Err(invalid("a presence member's \"info\" is not an object")),
            };
            Ok(PresenceMember { id, user, info })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Presence { channel, count, members })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presence_answers_read_back_with_optional_user_and_info() {
        let json = br#"{"type":"presence","channel":"room","count":2,"members":[{"id":"01","user":"al\"ice","info":{"n":1}},{"id":"02"}]}"#;
        let presence = parse_presence(json).unwrap();
        assert_eq!(presence.channel, "room");
        assert_eq!(presence.count, 2);
        assert_eq!(
            presence.members,
            vec![
                PresenceMember {
                    id: "01".into(),
                    user: Some("al\"ice".into()),
                    info: Some(r#"{"n":1}"#.into())
                },
                PresenceMember { id: "02".into(), user: None, info: None },
            ]
        );
        assert!(parse_presence(br#"{"channel":"a","count":1,"members":[{"user":"x"}]}"#).is_err());
        assert!(parse_presence(br#"{"channel":"a","members":[]}"#).is_err());
        assert!(parse_presence(b"nope").is_err());
    }

    #[test]
    fn rfc8259_7_strings_escape_quotes_backslash_and_controls() {
        let mut out = Vec::new();
        write_json_string(&mut out, "a\"b\\c\nd\u{1}é");
        assert_eq!(String::from_utf8(out).unwrap(), "\"a\\\"b\\\\c\\nd\\u0001é\"");
    }
    use crate::hub::Epoch;

    fn c(offset: u64) -> Cursor {
        Cursor { epoch: Epoch(0xab), offset }
    }

    #[test]
    fn the_open_envelope_is_told_by_its_first_bytes() {
        let open = open_envelope(Cursor { epoch: Epoch(0xab), offset: 0 });
        assert!(is_open_envelope(&open));
        assert_eq!(
            parse_envelope(&open).unwrap(),
            Envelope::Open { next: Cursor { epoch: Epoch(0xab), offset: 0 } }
        );
        assert!(!is_open_envelope(&gap_envelope(Cursor { epoch: Epoch(0xab), offset: 0 })));
        assert!(!is_open_envelope(b"pwbench:1:2:3;"));
    }

    #[test]
    fn envelopes_of_every_shape_parse() {
        let text = br#"{"id":"00000000000000ab:3","event":"tick","data":"a\"b\n"}"#;
        assert_eq!(
            parse_envelope(text).unwrap(),
            Envelope::Message(Received {
                id: c(3),
                event: Some("tick".into()),
                payload: Payload::Text("a\"b\n".into())
            })
        );
        let binary = br#"{"id":"00000000000000ab:4","data_b64":"AAEC"}"#;
        assert_eq!(
            parse_envelope(binary).unwrap(),
            Envelope::Message(Received { id: c(4), event: None, payload: Payload::Binary(vec![0, 1, 2]) })
        );
        assert_eq!(
            parse_envelope(br#"{"type":"gap","next":"00000000000000ab:9"}"#).unwrap(),
            Envelope::Gap { next: c(9) }
        );
        assert_eq!(
            parse_envelope(br#"{"type":"open","next":"00000000000000ab:0"}"#).unwrap(),
            Envelope::Open { next: c(0) }
        );
        assert_eq!(parse_envelope(br#"{"type":"heartbeat"}"#).unwrap(), Envelope::Heartbeat);
        assert_eq!(parse_envelope(br#"{"type":"future"}"#).unwrap(), Envelope::Other);
    }

    #[test]
    fn malformed_envelopes_say_why() {
        for (json, why) in [
            (&b"nope"[..], "not JSON"),
            (b"[1]", "not a JSON object"),
            (br#"{"id":"x:1","data":"a"}"#, "not a cursor"),
            (br#"{"id":"00000000000000ab:1"}"#, "without"),
            (br#"{"id":"00000000000000ab:1","data_b64":"*"}"#, "base64"),
            (br#"{"type":"gap"}"#, "next"),
        ] {
            let err = parse_envelope(json).unwrap_err().to_string();
            assert!(err.contains(why), "{err}");
        }
    }

    #[test]
    fn poll_answers_and_created_ids_parse() {
        let json = br#"{"messages":[{"id":"00000000000000ab:1","data":"hi"}],"next":"00000000000000ab:1","gap":true}"#;
        let answer = parse_poll_answer(json).unwrap();
        assert_eq!((answer.messages.len(), answer.next, answer.gap), (1, c(1), true));
        assert_eq!(parse_created(b"{\"id\":\"00000000000000ab:7\"}\n").unwrap(), c(7));
    }
}
