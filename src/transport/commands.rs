//! The commands a `pushwire.v1` client sends in command mode (`/ws` only: a `/channels/a,b`
//! WebSocket takes no commands), one JSON object per text frame, and the replies that answer
//! them.
//!
//! ```text
//! {"type":"subscribe","channel":"a","since":"E:O","joins":true,"token":"JWT","info":{…},"req":1}
//! {"type":"unsubscribe","channel":"a","req":2}
//! {"type":"publish","channel":"a","data":"…","event":"x","except_self":true,"req":3}   ("data_b64" for binary)
//! {"type":"presence","channel":"a","req":4}                   ("presence_stats": the count only)
//! {"type":"refresh","token":"JWT","req":5}
//!
//! {"type":"ok","req":1,"channel":"a"}                         ("id":"E:O" added for a publish)
//! {"type":"error","req":1,"channel":"a","code":"not_allowed","reason":"…"}
//! ```
//!
//! Implements: JSON text ([RFC 8259](https://www.rfc-editor.org/rfc/rfc8259)) read with
//! `serde_json` into the typed [`Command`], every field checked (channel names, cursors, event
//! names, base64 per [RFC 4648 §4](https://www.rfc-editor.org/rfc/rfc4648#section-4), sizes);
//! unknown fields and unknown types are refused with a [`CommandError`] naming them. `req` (a
//! JSON string of at most [`MAX_REQ_BYTES`], or an integer of at most 20 digits) is echoed back
//! verbatim in the reply, so a client can match answers to commands; so is `channel` when it was
//! readable, even when the command was not.
//!
//! Bounded: the frame holding a command is bounded by the WebSocket message limit before it is
//! parsed; `info` by [`CommandLimits::max_info_bytes`], tokens by
//! [`CommandLimits::max_token_bytes`], event names by `max_event_name_bytes`.
//!
//! Does not: act on a command (see [`super::websocket`]) or check authorization.

use std::fmt;
use std::sync::Arc;

use base64::Engine as _;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::publish::{check_event_name, EventNameError};
use crate::hub::{ChannelName, Cursor, Payload};
use crate::protocol::envelope::write_json_string;

/// Longest `req` echoed back, in bytes of its JSON text.
pub const MAX_REQ_BYTES: usize = 64;

/// Bounds on what one command may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommandLimits {
    /// Longest `info` (client-supplied presence data, a JSON object), in bytes of its JSON text.
    pub max_info_bytes: usize,
    /// Longest token, in bytes.
    pub max_token_bytes: usize,
    /// Longest event name of a publish, in bytes.
    pub max_event_name_bytes: usize,
}

/// A command, checked.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Subscribe to a channel, from `since` (or from now).
    Subscribe {
        /// The channel.
        channel: ChannelName,
        /// Where the client's history ends; `None`: from now.
        since: Option<Cursor>,
        /// Send this connection join and leave events of the channel.
        joins: bool,
        /// A token for this channel (besides the connection's).
        token: Option<String>,
        /// Presence data shown to other members: a JSON object's text.
        info: Option<Box<str>>,
    },
    /// End a subscription.
    Unsubscribe {
        /// The channel.
        channel: ChannelName,
    },
    /// Publish a message.
    Publish {
        /// The channel.
        channel: ChannelName,
        /// The message.
        payload: Payload,
        /// The event name, a validated token other than `gap`.
        event: Option<String>,
        /// Do not deliver it to this connection.
        except_self: bool,
    },
    /// Read a channel's presence: its members (`presence`) or only their count
    /// (`presence_stats`).
    Presence {
        /// The channel.
        channel: ChannelName,
        /// Only the count.
        stats: bool,
    },
    /// Replace the connection's token.
    Refresh {
        /// The new token.
        token: String,
    },
}

impl Command {
    /// The channel the command names, if it names one.
    pub fn channel(&self) -> Option<&ChannelName> {
        match self {
            Command::Subscribe { channel, .. }
            | Command::Unsubscribe { channel }
            | Command::Publish { channel, .. }
            | Command::Presence { channel, .. } => Some(channel),
            Command::Refresh { .. } => None,
        }
    }
}

/// Why a command was refused, or failed; its [`CommandError::code`] is what the client reads.
/// The connection stays open for all of them.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CommandError {
    /// Not a JSON object, a field of the wrong type, an unknown field, a missing field, or a
    /// binary frame in command mode.
    BadCommand(String),
    /// `type` names no command.
    UnknownCommand,
    /// The channel name is not one.
    BadChannel,
    /// The `since` cursor does not parse.
    BadCursor,
    /// `info`, the token or the event name is over its limit, or the event name is no token.
    TooLarge(&'static str),
    /// The connection may not do this on this channel (no token, or one that does not grant it).
    NotAllowed(&'static str),
    /// The connection is at its channel limit.
    TooManyChannels,
    /// Already subscribed to the channel.
    AlreadySubscribed,
    /// Not subscribed to the channel.
    NotSubscribed,
    /// The token given is not valid (malformed, forged, expired).
    BadToken(&'static str),
    /// The server or its backend cannot take it now (capacity, backend down).
    Unavailable(String),
}

impl CommandError {
    /// The code written in the `error` reply.
    pub fn code(&self) -> &'static str {
        match self {
            CommandError::BadCommand(_) => "bad_command",
            CommandError::UnknownCommand => "unknown_command",
            CommandError::BadChannel => "bad_channel",
            CommandError::BadCursor => "bad_cursor",
            CommandError::TooLarge(_) => "too_large",
            CommandError::NotAllowed(_) => "not_allowed",
            CommandError::TooManyChannels => "too_many_channels",
            CommandError::AlreadySubscribed => "already_subscribed",
            CommandError::NotSubscribed => "not_subscribed",
            CommandError::BadToken(_) => "bad_token",
            CommandError::Unavailable(_) => "unavailable",
        }
    }
}

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CommandError::BadCommand(why) => write!(f, "bad command: {why}"),
            CommandError::UnknownCommand => f.write_str(
                "type must be subscribe, unsubscribe, publish, presence, presence_stats or refresh",
            ),
            CommandError::BadChannel => {
                f.write_str("channel names are 1 to 128 bytes of A-Z a-z 0-9 . _ ~ -, not . or ..")
            }
            CommandError::BadCursor => f.write_str("since must be a cursor EPOCH:OFFSET"),
            CommandError::TooLarge(what) => write!(f, "{what} is too large"),
            CommandError::NotAllowed(why) | CommandError::BadToken(why) => f.write_str(why),
            CommandError::TooManyChannels => f.write_str("too many channels on this connection"),
            CommandError::AlreadySubscribed => f.write_str("already subscribed"),
            CommandError::NotSubscribed => f.write_str("not subscribed"),
            CommandError::Unavailable(why) => f.write_str(why),
        }
    }
}

/// One command frame, read: its `req` and `channel` (for the reply, whatever else was wrong)
/// and the command or why it was refused.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// The `req` as its JSON text, to echo back; `None` when absent or unusable.
    pub req: Option<Box<str>>,
    /// The channel named, as given (already checked as a channel name only in `command`).
    pub channel: Option<ChannelName>,
    /// The command, or why it cannot be acted on.
    pub command: Result<Command, CommandError>,
}

/// Every field any command has; which ones a type allows is checked after.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw<'a> {
    #[serde(rename = "type")]
    kind: String,
    #[serde(borrow)]
    req: Option<&'a RawValue>,
    channel: Option<String>,
    since: Option<String>,
    joins: Option<bool>,
    token: Option<String>,
    #[serde(borrow)]
    info: Option<&'a RawValue>,
    data: Option<String>,
    data_b64: Option<String>,
    event: Option<String>,
    except_self: Option<bool>,
}

/// Reads one command frame's text.
pub fn parse(text: &str, limits: &CommandLimits) -> Request {
    // The `req` and `channel` are worth echoing even when the rest is wrong, so they are read
    // from a first, lenient pass when the strict one fails.
    let raw: Raw<'_> = match serde_json::from_str(text) {
        Ok(raw) => raw,
        Err(e) => {
            let (req, channel) = lenient_req_and_channel(text);
            return Request { req, channel, command: Err(CommandError::BadCommand(short(&e.to_string()))) };
        }
    };
    let req = raw.req.map(|r| r.get()).filter(|r| is_usable_req(r)).map(Box::from);
    let channel = raw.channel.as_deref().and_then(|c| ChannelName::parse(c).ok());
    let command = check(raw, limits);
    Request { req, channel, command }
}

/// A `req` is echoed back only when it is a string or an integer (not a float, which a reader
/// may not represent: `1e999`), and short.
fn is_usable_req(json: &str) -> bool {
    let digits = json.strip_prefix('-').unwrap_or(json);
    let integer = (1..=20).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit());
    json.len() <= MAX_REQ_BYTES && (json.starts_with('"') || integer)
}

fn lenient_req_and_channel(text: &str) -> (Option<Box<str>>, Option<ChannelName>) {
    #[derive(Deserialize)]
    struct Lenient<'a> {
        #[serde(borrow)]
        req: Option<&'a RawValue>,
        channel: Option<&'a RawValue>,
    }
    let Ok(lenient) = serde_json::from_str::<Lenient<'_>>(text) else { return (None, None) };
    let req = lenient.req.map(|r| r.get()).filter(|r| is_usable_req(r)).map(Box::from);
    let channel = lenient
        .channel
        .and_then(|c| serde_json::from_str::<&str>(c.get()).ok())
        .and_then(|c| ChannelName::parse(c).ok());
    (req, channel)
}

/// serde's messages can quote the input; keep the first line, bounded.
fn short(message: &str) -> String {
    let line = message.lines().next().unwrap_or_default();
    line.chars().take(120).collect()
}

fn check(raw: Raw<'_>, limits: &CommandLimits) -> Result<Command, CommandError> {
    let allowed: &[&str] = match raw.kind.as_str() {
        "subscribe" => &["channel", "since", "joins", "token", "info"],
        "unsubscribe" | "presence" | "presence_stats" => &["channel"],
        "publish" => &["channel", "data", "data_b64", "event", "except_self"],
        "refresh" => &["token"],
        _ => return Err(CommandError::UnknownCommand),
    };
    let present = [
        ("channel", raw.channel.is_some()),
        ("since", raw.since.is_some()),
        ("joins", raw.joins.is_some()),
        ("token", raw.token.is_some()),
        ("info", raw.info.is_some()),
        ("data", raw.data.is_some()),
        ("data_b64", raw.data_b64.is_some()),
        ("event", raw.event.is_some()),
        ("except_self", raw.except_self.is_some()),
    ];
    if let Some((field, _)) = present.iter().find(|(field, set)| *set && !allowed.contains(field)) {
        return Err(CommandError::BadCommand(format!("{} takes no {field}", raw.kind)));
    }
    let channel = || -> Result<ChannelName, CommandError> {
        let name = raw
            .channel
            .as_deref()
            .ok_or_else(|| CommandError::BadCommand(format!("{} needs a channel", raw.kind)))?;
        ChannelName::parse(name).map_err(|_| CommandError::BadChannel)
    };
    let token = |token: Option<String>| -> Result<Option<String>, CommandError> {
        match token {
            Some(t) if t.len() > limits.max_token_bytes => Err(CommandError::TooLarge("token")),
            token => Ok(token),
        }
    };
    match raw.kind.as_str() {
        "subscribe" => {
            let channel = channel()?;
            let since =
                raw.since.as_deref().map(Cursor::parse).transpose().map_err(|_| CommandError::BadCursor)?;
            let info = match raw.info {
                None => None,
                Some(info) if info.get().len() > limits.max_info_bytes => {
                    return Err(CommandError::TooLarge("info"))
                }
                Some(info) if !info.get().starts_with('{') => {
                    return Err(CommandError::BadCommand("info must be a JSON object".into()))
                }
                Some(info) => Some(Box::from(info.get())),
            };
            Ok(Command::Subscribe {
                channel,
                since,
                joins: raw.joins.unwrap_or(false),
                token: token(raw.token)?,
                info,
            })
        }
        "unsubscribe" => Ok(Command::Unsubscribe { channel: channel()? }),
        "presence" => Ok(Command::Presence { channel: channel()?, stats: false }),
        "presence_stats" => Ok(Command::Presence { channel: channel()?, stats: true }),
        "refresh" => match token(raw.token)? {
            Some(token) => Ok(Command::Refresh { token }),
            None => Err(CommandError::BadCommand("refresh needs a token".into())),
        },
        _ => {
            let channel = channel()?;
            let payload = match (raw.data, raw.data_b64) {
                (Some(text), None) => Payload::Text(Arc::from(text)),
                (None, Some(b64)) => {
                    // RFC 4648 §4 (standard alphabet, padded), as the server writes it.
                    let bytes = base64::engine::general_purpose::STANDARD
                        .decode(b64)
                        .map_err(|_| CommandError::BadCommand("data_b64 is not base64".into()))?;
                    Payload::Binary(Arc::from(bytes))
                }
                _ => return Err(CommandError::BadCommand("publish needs one of data and data_b64".into())),
            };
            if let Some(name) = &raw.event {
                match check_event_name(name, limits.max_event_name_bytes) {
                    Ok(()) => {}
                    Err(EventNameError::TooLong) => return Err(CommandError::TooLarge("event")),
                    Err(EventNameError::NotAToken | EventNameError::Reserved) => {
                        return Err(CommandError::BadCommand(
                            "event must be a token other than gap and token_expired".into(),
                        ))
                    }
                }
            }
            let event = raw.event;
            Ok(Command::Publish { channel, payload, event, except_self: raw.except_self.unwrap_or(false) })
        }
    }
}

/// The start of a reply object: `{"type":TYPE` then `"req"` and `"channel"` when known.
fn reply_start(out: &mut Vec<u8>, kind: &str, req: Option<&str>, channel: Option<&ChannelName>) {
    out.extend_from_slice(b"{\"type\":\"");
    out.extend_from_slice(kind.as_bytes());
    out.push(b'"');
    if let Some(req) = req {
        out.extend_from_slice(b",\"req\":");
        out.extend_from_slice(req.as_bytes());
    }
    if let Some(channel) = channel {
        // Channel names need no escaping (their alphabet is unreserved URL characters).
        out.extend_from_slice(b",\"channel\":\"");
        out.extend_from_slice(channel.as_str().as_bytes());
        out.push(b'"');
    }
}

/// `{"type":"ok",…}`, with the published message's `id` for a publish.
pub fn ok_reply(req: Option<&str>, channel: Option<&ChannelName>, id: Option<Cursor>) -> Vec<u8> {
    let mut out = Vec::with_capacity(96);
    reply_start(&mut out, "ok", req, channel);
    if let Some(id) = id {
        out.extend_from_slice(format!(",\"id\":\"{id}\"").as_bytes());
    }
    out.push(b'}');
    out
}

/// `{"type":"error",…,"code":CODE,"reason":TEXT}`.
pub fn error_reply(req: Option<&str>, channel: Option<&ChannelName>, error: &CommandError) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    reply_start(&mut out, "error", req, channel);
    out.extend_from_slice(b",\"code\":\"");
    out.extend_from_slice(error.code().as_bytes());
    out.extend_from_slice(b"\",\"reason\":");
    write_json_string(&mut out, &error.to_string());
    out.push(b'}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: CommandLimits =
        CommandLimits { max_info_bytes: 64, max_token_bytes: 32, max_event_name_bytes: 8 };

    fn cmd(text: &str) -> Result<Command, CommandError> {
        parse(text, &LIMITS).command
    }

    fn name(text: &str) -> ChannelName {
        ChannelName::parse(text).unwrap()
    }

    #[test]
    fn every_command_parses() {
        let c = cmd(
            r#"{"type":"subscribe","channel":"a","since":"0000000000000001:5","joins":true,"token":"t","info":{"nick":"x"}}"#,
        );
        assert_eq!(
            c,
            Ok(Command::Subscribe {
                channel: name("a"),
                since: Some(Cursor::parse("0000000000000001:5").unwrap()),
                joins: true,
                token: Some("t".into()),
                info: Some(r#"{"nick":"x"}"#.into()),
            })
        );
        assert_eq!(
            cmd(r#"{"type":"unsubscribe","channel":"a"}"#),
            Ok(Command::Unsubscribe { channel: name("a") })
        );
        assert_eq!(
            cmd(r#"{"type":"presence","channel":"a"}"#),
            Ok(Command::Presence { channel: name("a"), stats: false })
        );
        assert_eq!(
            cmd(r#"{"type":"presence_stats","channel":"a"}"#),
            Ok(Command::Presence { channel: name("a"), stats: true })
        );
        assert_eq!(cmd(r#"{"type":"refresh","token":"t"}"#), Ok(Command::Refresh { token: "t".into() }));
        let Ok(Command::Publish { payload: Payload::Binary(bytes), event, except_self, .. }) =
            cmd(r#"{"type":"publish","channel":"a","data_b64":"AAEC","event":"e","except_self":true}"#)
        else {
            panic!()
        };
        assert_eq!((&*bytes, event.as_deref(), except_self), (&[0u8, 1, 2][..], Some("e"), true));
        let Ok(Command::Publish { payload: Payload::Text(text), .. }) =
            cmd(r#"{"type":"publish","channel":"a","data":"hi"}"#)
        else {
            panic!()
        };
        assert_eq!(&*text, "hi");
    }

    #[test]
    fn req_and_channel_are_echoed_even_when_the_command_is_bad() {
        let r = parse(r#"{"type":"subscribe","channel":"a","since":"nope","req":7}"#, &LIMITS);
        assert_eq!(
            (r.req.as_deref(), r.channel, r.command),
            (Some("7"), Some(name("a")), Err(CommandError::BadCursor))
        );
        let r = parse(r#"{"type":"subscribe","channel":"a","colour":1,"req":"x"}"#, &LIMITS);
        assert_eq!((r.req.as_deref(), r.channel.is_some()), (Some("\"x\""), true));
        assert!(matches!(r.command, Err(CommandError::BadCommand(m)) if m.contains("colour")));
        // Objects and long strings are not echoed.
        let r = parse(&format!(r#"{{"type":"x","req":"{}"}}"#, "r".repeat(70)), &LIMITS);
        assert_eq!((r.req, r.command), (None, Err(CommandError::UnknownCommand)));
        assert_eq!(parse(r#"{"type":"x","req":{"a":1}}"#, &LIMITS).req, None);
        assert_eq!(parse(r#"{"type":"x","req":1.5e33333}"#, &LIMITS).req, None);
        assert_eq!(parse(r#"{"type":"x","req":-12}"#, &LIMITS).req.as_deref(), Some("-12"));
    }

    #[test]
    fn bad_commands_get_their_codes() {
        let code = |text: &str| cmd(text).unwrap_err().code();
        assert_eq!(code("not json"), "bad_command");
        assert_eq!(code("[1]"), "bad_command");
        assert_eq!(code(r#"{"channel":"a"}"#), "bad_command");
        assert_eq!(code(r#"{"type":"dance","channel":"a"}"#), "unknown_command");
        assert_eq!(code(r#"{"type":"subscribe","channel":"a b"}"#), "bad_channel");
        assert_eq!(code(r#"{"type":"subscribe"}"#), "bad_command");
        assert_eq!(code(r#"{"type":"unsubscribe","channel":"a","since":"x"}"#), "bad_command");
        assert_eq!(code(r#"{"type":"subscribe","channel":"a","info":[1]}"#), "bad_command");
        assert_eq!(
            code(&format!(r#"{{"type":"subscribe","channel":"a","info":{{"x":"{}"}}}}"#, "i".repeat(60))),
            "too_large"
        );
        assert_eq!(code(&format!(r#"{{"type":"refresh","token":"{}"}}"#, "t".repeat(33))), "too_large");
        assert_eq!(code(r#"{"type":"refresh"}"#), "bad_command");
        assert_eq!(code(r#"{"type":"publish","channel":"a"}"#), "bad_command");
        assert_eq!(code(r#"{"type":"publish","channel":"a","data":"x","data_b64":"AA=="}"#), "bad_command");
        assert_eq!(code(r#"{"type":"publish","channel":"a","data_b64":"!!"}"#), "bad_command");
        assert_eq!(code(r#"{"type":"publish","channel":"a","data":"x","event":"gap"}"#), "bad_command");
        let big = CommandLimits { max_event_name_bytes: 16, ..LIMITS };
        let token_expired = r#"{"type":"publish","channel":"a","data":"x","event":"token_expired"}"#;
        assert_eq!(parse(token_expired, &big).command.unwrap_err().code(), "bad_command");
        assert_eq!(code(r#"{"type":"publish","channel":"a","data":"x","event":"a b"}"#), "bad_command");
        assert_eq!(
            code(r#"{"type":"publish","channel":"a","data":"x","event":"longer-than-8"}"#),
            "too_large"
        );
        assert_eq!(code(r#"{"type":"subscribe","channel":"a","joins":"yes"}"#), "bad_command");
    }

    #[test]
    fn replies_echo_req_and_channel() {
        let a = name("a");
        let id = Cursor::parse("0000000000000001:5").unwrap();
        assert_eq!(
            String::from_utf8(ok_reply(Some("7"), Some(&a), Some(id))).unwrap(),
            r#"{"type":"ok","req":7,"channel":"a","id":"0000000000000001:5"}"#
        );
        assert_eq!(String::from_utf8(ok_reply(None, None, None)).unwrap(), r#"{"type":"ok"}"#);
        let e = error_reply(Some("\"x\""), Some(&a), &CommandError::NotAllowed("no token grants subscribe"));
        let v: serde_json::Value = serde_json::from_slice(&e).unwrap();
        assert_eq!(v["req"], "x");
        assert_eq!(v["code"], "not_allowed");
        assert_eq!(v["reason"], "no token grants subscribe");
    }
}
