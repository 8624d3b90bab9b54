//! The server API (issue #17 item 2): what an application backend calls to publish, inspect
//! and disconnect, as JSON over `POST /api/CALL`, the way Centrifugo's server API and Nchan's
//! channel-info endpoints serve a backend.
//!
//! Implements:
//! - access ([`route`]): off (404) unless `--api-key` is set; then every `/api/…` request
//!   carries `Authorization: apikey KEY` (missing: 401 with `WWW-Authenticate: apikey`, wrong:
//!   403; compared in constant time by [`ApiKey::matches`]); an unknown call is 404, a method
//!   other than POST 405 with `Allow: POST` (RFC 9110 §15.5.6);
//! - the request bodies ([`handle`]): JSON read by `serde_json` into structs that deny unknown
//!   fields, within [`ApiLimits::max_body_bytes`] (checked from the framing before the body is
//!   read, 413); bad JSON, an unknown field or a wrong type is 400 with serde's reason;
//! - each call as hub [`Command`]s, answered once every reply is in ([`answer`]):
//!   `publish` (one `Publish`), `broadcast` (one `Publish` per channel, each answered with its
//!   own cursor or error), `history` (`Read` after a cursor), `presence` and `presence_stats`
//!   (`Presence`), `info` (`Info`: subscribers, in total and per transport, last cursor,
//!   history length and bytes, without
//!   creating the channel), `channels` (`Channels`: names by prefix, a bounded page after a
//!   name), `disconnect` (`Disconnect`, handed to every event loop: a connection by its
//!   presence id, or every connection whose signed token's `sub` is the user; a WebSocket is
//!   closed with [`CLOSE_DISCONNECTED`] and the reason, SSE, stream and polls end their
//!   response), `unsubscribe` (the same `Disconnect` with a channel: a command-mode WebSocket
//!   leaves it with an `unsubscribe` notice).
//!
//! Every call goes through the hub backend, so with `--redis` every call acts cluster-wide:
//! the Redis backend publishes `disconnect` / `unsubscribe` to the other nodes and surveys
//! them for `info` / `channels` ([`crate::redis::control`]; README "Server API").
//!
//! Does not: parse JSON itself (serde_json does). The fuzz target `api_call` checks what is
//! built around it: bodies read into bounded commands or a 400, answers that are JSON.

pub mod limits;

use std::sync::Arc;

use serde::Deserialize;
use serde_json::value::RawValue;

pub use limits::{ApiConfig, ApiKey, ApiLimits};

use super::publish::check_event_name;
use super::refusal::Refusal;
use super::{rooms, short_poll};
use crate::config::Config;
use crate::http1::head::{Headers, RequestHead};
use crate::hub::backend::{ConnAddr, ConnId, Disconnect, DisconnectTarget};
use crate::hub::Command;
use crate::hub::{ChannelInfo, ChannelName, Cursor, HubError, Payload, Reply, Since, SinkId};
use crate::metrics::Metrics;
use crate::protocol::envelope::write_json_string;
use crate::protocol::Transport;

/// Longest `user` of a `disconnect` or `unsubscribe`, in bytes (the Redis control frame's
/// bound, [`crate::redis::control::ControlLimits::max_user_bytes`]).
pub const MAX_USER_BYTES: usize = 255;

/// Every API call is a POST (RFC 9110 §15.5.6: a 405 carries `Allow`).
pub const API_METHODS: &[(&str, &str)] = &[("Allow", "POST")];

/// An API call, by its path `/api/NAME`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    /// `POST /api/publish`: one message to one channel.
    Publish,
    /// `POST /api/broadcast`: one message to many channels.
    Broadcast,
    /// `POST /api/history`: a channel's messages after a cursor.
    History,
    /// `POST /api/presence`: a channel's members.
    Presence,
    /// `POST /api/presence_stats`: a channel's member count.
    PresenceStats,
    /// `POST /api/info`: a channel's subscribers, last cursor and history size.
    Info,
    /// `POST /api/channels`: channel names by prefix, a page at a time.
    Channels,
    /// `POST /api/disconnect`: end a connection, or every connection of a user.
    Disconnect,
    /// `POST /api/unsubscribe`: take a user (or a connection) off a channel.
    Unsubscribe,
}

/// The WebSocket close code of a server API `disconnect` (RFC 6455 §7.4.2: 4000-4999 are for
/// private use; 4001 is a token's expiry).
pub const CLOSE_DISCONNECTED: u16 = 4002;

impl Call {
    /// The call named by `path` (`/api/NAME`), if any.
    pub fn from_path(path: &str) -> Option<Call> {
        Some(match path.strip_prefix("/api/")? {
            "publish" => Call::Publish,
            "broadcast" => Call::Broadcast,
            "history" => Call::History,
            "presence" => Call::Presence,
            "presence_stats" => Call::PresenceStats,
            "info" => Call::Info,
            "channels" => Call::Channels,
            "disconnect" => Call::Disconnect,
            "unsubscribe" => Call::Unsubscribe,
            _ => return None,
        })
    }
}

/// Routes `/api` and `/api/…` to its call: the key first (so that nothing about the API shows
/// without it), then the call, then the method.
pub fn route(head: &RequestHead, path: &str, method: &str, config: &Config) -> Result<Call, Refusal> {
    let Some(key) = &config.api.key else { return Err(Refusal::NotFound) };
    match api_key(head) {
        None => return Err(Refusal::ApiKeyMissing),
        Some(given) if !key.matches(given) => return Err(Refusal::ApiKeyWrong),
        Some(_) => {}
    }
    let call = Call::from_path(path).ok_or(Refusal::NotFound)?;
    if method != "POST" {
        return Err(Refusal::MethodNotAllowed { allow: API_METHODS });
    }
    Ok(call)
}

/// The key of `Authorization: apikey KEY` (the scheme case-insensitive, RFC 9110 §11.1).
fn api_key(head: &RequestHead) -> Option<&[u8]> {
    let value = head.header("authorization")?.trim_ascii();
    let space = value.iter().position(|&b| b == b' ')?;
    let (scheme, key) = value.split_at(space);
    scheme.eq_ignore_ascii_case(b"apikey").then(|| key.trim_ascii())
}

/// What an API call answers with: a JSON body or an error (`{"error":REASON}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiAnswer {
    /// A JSON body with its status.
    Json(u16, Vec<u8>),
    /// An error with its status and a one-line reason.
    Error(u16, String),
}

impl ApiAnswer {
    fn bad_request(reason: impl Into<String>) -> ApiAnswer {
        ApiAnswer::Error(400, reason.into())
    }
}

/// What a call waits for: the commands' replies, in order, answer it.
#[derive(Debug)]
pub enum Pending {
    /// One `Published`.
    Publish(ChannelName),
    /// One `Published` per channel, in this order.
    Broadcast(Vec<ChannelName>),
    /// One `Read`.
    History(ChannelName),
    /// One `Presence` (listed or counted).
    Presence {
        /// The members too, or only the count.
        list: bool,
    },
    /// One `Info`.
    Info,
    /// One `Channels`.
    Channels,
    /// One `Disconnect`.
    Disconnect,
}

/// A call read from its body: the commands to submit and what their replies answer.
#[derive(Debug)]
pub struct Submit {
    /// Submitted in order; each has exactly one reply.
    pub commands: Vec<Command>,
    /// How the replies are answered ([`answer`]).
    pub pending: Pending,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishBody {
    channel: String,
    data: Box<RawValue>,
    #[serde(default)]
    event: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BroadcastBody {
    channels: Vec<String>,
    data: Box<RawValue>,
    #[serde(default)]
    event: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryBody {
    channel: String,
    since: String,
    #[serde(default)]
    limit: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChannelBody {
    channel: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChannelsBody {
    #[serde(default)]
    prefix: String,
    #[serde(default)]
    after: Option<String>,
    #[serde(default)]
    limit: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DisconnectBody {
    #[serde(default)]
    client: Option<String>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    reason: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UnsubscribeBody {
    #[serde(default)]
    client: Option<String>,
    #[serde(default)]
    user: Option<String>,
    channel: String,
    #[serde(default)]
    reason: Option<String>,
}

/// A connection id as presence shows it: `LLKKKKKKKKGGGGGGGG` (loop, slot, generation in hex),
/// optionally after a node id (16 hex digits) and `-` (the Redis backend's form: the call is
/// applied on that node only).
fn parse_client(text: &str) -> Option<(Option<u64>, ConnAddr)> {
    let (node, local) = match text.split_once('-') {
        Some((node, local)) => {
            if node.len() != 16 || !node.bytes().all(|b| b.is_ascii_hexdigit()) {
                return None;
            }
            (Some(u64::from_str_radix(node, 16).ok()?), local)
        }
        None => (None, text),
    };
    if local.len() != 18 || !local.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let sink = SinkId::new(u8::from_str_radix(&local[..2], 16).ok()?)?;
    let key = u32::from_str_radix(&local[2..10], 16).ok()?;
    let generation = u32::from_str_radix(&local[10..], 16).ok()?;
    Some((node, ConnAddr { sink, conn: ConnId::new(key as usize, generation) }))
}

/// A prefix or `after` of `channels`: at most a channel name's length, of its alphabet.
fn name_part(what: &str, text: &str) -> Result<(), ApiAnswer> {
    let alphabet = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'~' | b'-');
    if text.len() > ChannelName::MAX_BYTES || !text.bytes().all(alphabet) {
        return Err(ApiAnswer::bad_request(format!(
            "{what} must be at most {} bytes of A-Z a-z 0-9 . _ ~ -",
            ChannelName::MAX_BYTES
        )));
    }
    Ok(())
}

/// Reads `body` as JSON of shape `T`: bad JSON, unknown fields and wrong types are 400.
fn parse<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, ApiAnswer> {
    serde_json::from_slice(body).map_err(|e| ApiAnswer::bad_request(format!("bad request body: {e}")))
}

fn channel(name: &str) -> Result<ChannelName, ApiAnswer> {
    ChannelName::parse(name).map_err(|e| ApiAnswer::bad_request(format!("channel {name:?}: {e}")))
}

/// The message of `data`: a JSON string is the text itself, any other JSON value its text.
fn payload(data: &RawValue) -> Payload {
    let text = match serde_json::from_str::<String>(data.get()) {
        Ok(string) => string,
        Err(_) => data.get().to_string(),
    };
    Payload::Text(Arc::from(text))
}

/// An event name: an RFC 9110 §5.6.2 token of at most `max_event_name_bytes`, not a reserved
/// name (`transport::publish::check_event_name`).
fn event(name: Option<String>, config: &Config) -> Result<Option<Arc<str>>, ApiAnswer> {
    let Some(name) = name else { return Ok(None) };
    check_event_name(&name, config.transport.max_event_name_bytes)
        .map_err(|e| ApiAnswer::bad_request(Refusal::from(e).reason()))?;
    Ok(Some(Arc::from(name)))
}

/// Reads a call's body into the commands that answer it, or answers at once (400).
pub fn handle(call: Call, body: &[u8], config: &Config) -> Result<Submit, ApiAnswer> {
    let limits = &config.api.limits;
    let one = |command, pending| Submit { commands: vec![command], pending };
    Ok(match call {
        Call::Publish => {
            let body: PublishBody = parse(body)?;
            let channel = channel(&body.channel)?;
            let command = Command::Publish {
                channel: channel.clone(),
                event: event(body.event, config)?,
                payload: payload(&body.data),
            };
            one(command, Pending::Publish(channel))
        }
        Call::Broadcast => {
            let body: BroadcastBody = parse(body)?;
            if body.channels.is_empty() {
                return Err(ApiAnswer::bad_request("channels must name at least one channel"));
            }
            // Within the body limit already; the count is the API's own bound.
            if body.channels.len() > limits.max_broadcast_channels {
                return Err(ApiAnswer::bad_request(format!(
                    "channels names {} channels, more than max-broadcast-channels ({})",
                    body.channels.len(),
                    limits.max_broadcast_channels
                )));
            }
            let channels = body.channels.iter().map(|c| channel(c)).collect::<Result<Vec<_>, _>>()?;
            let mut seen: Vec<&ChannelName> = channels.iter().collect();
            seen.sort_unstable_by(|a, b| a.as_str().cmp(b.as_str()));
            if let Some(twice) = seen.windows(2).find(|w| w[0] == w[1]) {
                return Err(ApiAnswer::bad_request(format!(
                    "channel {:?} is named twice",
                    twice[0].as_str()
                )));
            }
            let event = event(body.event, config)?;
            // One payload shared by every channel's message.
            let payload = payload(&body.data);
            let commands = channels
                .iter()
                .map(|channel| Command::Publish {
                    channel: channel.clone(),
                    event: event.clone(),
                    payload: payload.clone(),
                })
                .collect();
            Submit { commands, pending: Pending::Broadcast(channels) }
        }
        Call::History => {
            let body: HistoryBody = parse(body)?;
            let channel = channel(&body.channel)?;
            let since = Cursor::parse(&body.since)
                .map_err(|e| ApiAnswer::bad_request(format!("since {:?}: {e}", body.since)))?;
            let limit = body.limit.unwrap_or(limits.max_history_messages);
            if limit == 0 {
                return Err(ApiAnswer::bad_request("limit must be at least 1"));
            }
            let command = Command::Read {
                channel: channel.clone(),
                since: Since::After(since),
                max_messages: limit.min(limits.max_history_messages),
            };
            one(command, Pending::History(channel))
        }
        Call::Info => {
            let body: ChannelBody = parse(body)?;
            one(Command::Info { channel: channel(&body.channel)? }, Pending::Info)
        }
        Call::Channels => {
            let body: ChannelsBody = parse(body)?;
            name_part("prefix", &body.prefix)?;
            if let Some(after) = &body.after {
                name_part("after", after)?;
            }
            let limit = body.limit.unwrap_or(limits.max_page_channels);
            if limit == 0 {
                return Err(ApiAnswer::bad_request("limit must be at least 1"));
            }
            let command = Command::Channels {
                prefix: body.prefix,
                after: body.after,
                limit: limit.min(limits.max_page_channels),
            };
            one(command, Pending::Channels)
        }
        Call::Disconnect | Call::Unsubscribe => {
            let (body, channel) = if call == Call::Disconnect {
                (parse::<DisconnectBody>(body)?, None)
            } else {
                let b: UnsubscribeBody = parse(body)?;
                let channel = channel(&b.channel)?;
                (DisconnectBody { client: b.client, user: b.user, reason: b.reason }, Some(channel))
            };
            let (target, node) = match (body.client, body.user) {
                (Some(client), None) => {
                    let (node, addr) = parse_client(&client).ok_or_else(|| {
                        ApiAnswer::bad_request(format!(
                            "client {client:?} is not a connection id from presence"
                        ))
                    })?;
                    (DisconnectTarget::Conn(addr), node)
                }
                (None, Some(user)) if !user.is_empty() => {
                    // What another node accepts in a control frame (and a token's `sub` longer
                    // than this matches no connection anywhere).
                    if user.len() > MAX_USER_BYTES {
                        return Err(ApiAnswer::bad_request(format!(
                            "user is {} bytes, more than {MAX_USER_BYTES}",
                            user.len()
                        )));
                    }
                    (DisconnectTarget::User(user.into()), None)
                }
                _ => return Err(ApiAnswer::bad_request("name exactly one of client or user (not empty)")),
            };
            let reason = body.reason.unwrap_or_else(|| "disconnected".into());
            // RFC 6455 §5.5: a close frame's reason fits 123 bytes.
            if reason.len() > limits.max_reason_bytes {
                return Err(ApiAnswer::bad_request(format!(
                    "reason is {} bytes, more than {}",
                    reason.len(),
                    limits.max_reason_bytes
                )));
            }
            let disconnect =
                Disconnect { target, code: CLOSE_DISCONNECTED, reason: reason.into(), channel, node };
            one(Command::Disconnect(Arc::new(disconnect)), Pending::Disconnect)
        }
        Call::Presence | Call::PresenceStats => {
            let body: ChannelBody = parse(body)?;
            let list = call == Call::Presence;
            one(Command::Presence { channel: channel(&body.channel)?, list }, Pending::Presence { list })
        }
    })
}

fn hub_error(e: HubError) -> ApiAnswer {
    ApiAnswer::Error(e.status_hint(), e.to_string())
}

/// `{"channel":NAME,"id":CURSOR}` or `{"channel":NAME,"error":REASON,"status":N}`.
fn write_published(out: &mut Vec<u8>, channel: &ChannelName, result: Result<Cursor, HubError>) {
    out.extend_from_slice(b"{\"channel\":\"");
    out.extend_from_slice(channel.as_str().as_bytes());
    match result {
        Ok(id) => out.extend_from_slice(format!("\",\"id\":\"{id}\"}}").as_bytes()),
        Err(e) => {
            out.extend_from_slice(b"\",\"error\":");
            write_json_string(out, &e.to_string());
            out.extend_from_slice(format!(",\"status\":{}}}", e.status_hint()).as_bytes());
        }
    }
}

/// The transports `info` counts, by their name in its answer. A short poll holds no
/// subscription (it reads and answers at once), so it has no count.
pub const INFO_TRANSPORTS: [(Transport, &str); 4] = [
    (Transport::WebSocket, "websocket"),
    (Transport::Sse, "sse"),
    (Transport::Stream, "stream"),
    (Transport::LongPoll, "long_poll"),
];

/// `{"channel":NAME,"exists":…,"subscribers":N,"transports":{"websocket":N,…},"last":…,
/// "history_messages":N,"history_bytes":N}` (zeros and `"last":null` for no such channel).
fn write_info(out: &mut Vec<u8>, channel: &ChannelName, info: Option<&ChannelInfo>) {
    out.extend_from_slice(b"{\"channel\":\"");
    out.extend_from_slice(channel.as_str().as_bytes());
    let subscribers = info.map_or(0, |i| i.subscribers);
    out.extend_from_slice(
        format!("\",\"exists\":{},\"subscribers\":{subscribers},\"transports\":{{", info.is_some())
            .as_bytes(),
    );
    for (i, (transport, name)) in INFO_TRANSPORTS.iter().enumerate() {
        let count = info.map_or(0, |info| info.by_transport.get(*transport));
        let comma = if i > 0 { "," } else { "" };
        out.extend_from_slice(format!("{comma}\"{name}\":{count}").as_bytes());
    }
    let last = match info.and_then(|i| i.last) {
        Some(cursor) => format!("\"{cursor}\""),
        None => "null".into(),
    };
    let messages = info.map_or(0, |i| i.history_messages);
    let bytes = match info.map_or(Some(0), |i| i.history_bytes) {
        Some(bytes) => bytes.to_string(),
        None => "null".into(),
    };
    let text = format!("}},\"last\":{last},\"history_messages\":{messages},\"history_bytes\":{bytes}}}\n");
    out.extend_from_slice(text.as_bytes());
}

/// The answer once every reply of the call is in (`replies` in the commands' order).
pub fn answer(pending: Pending, replies: Vec<Reply>, metrics: &Metrics) -> ApiAnswer {
    let unexpected = |reply: &Reply| ApiAnswer::Error(500, format!("unexpected hub reply {reply:?}"));
    let mut replies = replies.into_iter();
    match pending {
        Pending::Publish(channel) => match replies.next() {
            Some(Reply::Published(Ok(id))) => {
                let mut out = Vec::with_capacity(64);
                write_published(&mut out, &channel, Ok(id));
                out.push(b'\n');
                ApiAnswer::Json(200, out)
            }
            Some(Reply::Published(Err(e))) => hub_error(e),
            other => unexpected(&other.unwrap_or(Reply::Ready(Ok(())))),
        },
        Pending::Broadcast(channels) => {
            let mut out = Vec::with_capacity(16 + channels.len() * 64);
            out.extend_from_slice(b"{\"results\":[");
            for (i, channel) in channels.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                let result = match replies.next() {
                    Some(Reply::Published(result)) => result,
                    other => return unexpected(&other.unwrap_or(Reply::Ready(Ok(())))),
                };
                write_published(&mut out, channel, result);
            }
            out.extend_from_slice(b"]}\n");
            ApiAnswer::Json(200, out)
        }
        Pending::History(channel) => match replies.next() {
            Some(Reply::Read(Ok(replay))) => {
                short_poll::count(&replay, metrics);
                // `{"channel":NAME,"messages":[…],"next":…,"gap":…}`: the poll answer, named.
                let poll = short_poll::body(&replay);
                let mut out = Vec::with_capacity(poll.len() + 32);
                out.extend_from_slice(b"{\"channel\":\"");
                out.extend_from_slice(channel.as_str().as_bytes());
                out.extend_from_slice(b"\",");
                out.extend_from_slice(&poll[1..]);
                ApiAnswer::Json(200, out)
            }
            Some(Reply::Read(Err(e))) => hub_error(e),
            other => unexpected(&other.unwrap_or(Reply::Ready(Ok(())))),
        },
        Pending::Presence { list } => match replies.next() {
            Some(Reply::Presence { channel, result: Ok(presence) }) => {
                let mut out = if list {
                    rooms::presence_reply(None, &channel, &presence)
                } else {
                    rooms::presence_stats_reply(None, &channel, presence.count)
                };
                out.push(b'\n');
                ApiAnswer::Json(200, out)
            }
            Some(Reply::Presence { result: Err(e), .. }) => hub_error(e),
            other => unexpected(&other.unwrap_or(Reply::Ready(Ok(())))),
        },
        Pending::Info => match replies.next() {
            Some(Reply::Info { channel, result: Ok(info) }) => {
                let mut out = Vec::with_capacity(200);
                write_info(&mut out, &channel, info.as_ref());
                ApiAnswer::Json(200, out)
            }
            Some(Reply::Info { result: Err(e), .. }) => hub_error(e),
            other => unexpected(&other.unwrap_or(Reply::Ready(Ok(())))),
        },
        Pending::Disconnect => match replies.next() {
            // Handed to every event loop of this node (with Redis: published to the other nodes
            // too); how many matched is not counted.
            Some(Reply::Sent(Ok(()))) => ApiAnswer::Json(202, b"{\"sent\":true}\n".to_vec()),
            Some(Reply::Sent(Err(e))) => hub_error(e),
            other => unexpected(&other.unwrap_or(Reply::Ready(Ok(())))),
        },
        Pending::Channels => match replies.next() {
            Some(Reply::Channels(Ok(page))) => {
                let mut out = Vec::with_capacity(32 + page.channels.len() * 24);
                out.extend_from_slice(b"{\"channels\":[");
                for (i, name) in page.channels.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    // Names are of the URL-safe alphabet: nothing to escape.
                    out.push(b'"');
                    out.extend_from_slice(name.as_str().as_bytes());
                    out.push(b'"');
                }
                out.extend_from_slice(b"],\"next\":");
                match page.channels.last().filter(|_| page.more) {
                    Some(last) => {
                        out.push(b'"');
                        out.extend_from_slice(last.as_str().as_bytes());
                        out.push(b'"');
                    }
                    None => out.extend_from_slice(b"null"),
                }
                out.extend_from_slice(b"}\n");
                ApiAnswer::Json(200, out)
            }
            Some(Reply::Channels(Err(e))) => hub_error(e),
            other => unexpected(&other.unwrap_or(Reply::Ready(Ok(())))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http1::head::Header;

    fn config() -> Config {
        let mut config = Config::default();
        config.api.key = Some(ApiKey::new("0123456789abcdef").unwrap());
        config
    }

    fn head(method: &str, path: &str, auth: Option<&str>) -> RequestHead {
        let mut headers = vec![Header { name: "Host".into(), value: b"x".to_vec() }];
        if let Some(auth) = auth {
            headers.push(Header { name: "Authorization".into(), value: auth.as_bytes().to_vec() });
        }
        RequestHead { method: method.into(), target: path.into(), minor_version: 1, headers }
    }

    fn status(method: &str, path: &str, auth: Option<&str>, config: &Config) -> Result<Call, u16> {
        route(&head(method, path, auth), path, method, config).map_err(|refusal| refusal.status())
    }

    #[test]
    fn the_api_is_404_without_a_key_and_checks_the_key_before_the_call() {
        let key = Some("apikey 0123456789abcdef");
        assert_eq!(status("POST", "/api/publish", key, &Config::default()), Err(404));
        let config = config();
        assert_eq!(status("POST", "/api/publish", key, &config), Ok(Call::Publish));
        assert_eq!(
            status("POST", "/api/publish", Some("APIKEY  0123456789abcdef "), &config),
            Ok(Call::Publish)
        );
        assert_eq!(status("POST", "/api/publish", None, &config), Err(401));
        assert_eq!(status("POST", "/api/publish", Some("Bearer 0123456789abcdef"), &config), Err(401));
        assert_eq!(status("POST", "/api/publish", Some("apikey wrong"), &config), Err(403));
        assert_eq!(status("POST", "/api/nope", None, &config), Err(401), "the key first");
        assert_eq!(status("POST", "/api/nope", key, &config), Err(404));
        // RFC 9110 §15.5.6: 405 with Allow.
        let refusal = route(&head("GET", "/api/publish", key), "/api/publish", "GET", &config).unwrap_err();
        assert_eq!((refusal.status(), refusal.headers()), (405, API_METHODS));
        let missing =
            route(&head("POST", "/api/publish", None), "/api/publish", "POST", &config).unwrap_err();
        assert_eq!(missing.headers(), super::super::refusal::API_CHALLENGE);
    }

    fn bad(call: Call, body: &str) -> String {
        match handle(call, body.as_bytes(), &config()) {
            Err(ApiAnswer::Error(400, reason)) => reason,
            other => panic!("{body}: {other:?}"),
        }
    }

    #[test]
    fn bad_json_unknown_fields_and_wrong_types_are_400_with_a_reason() {
        assert!(bad(Call::Publish, "{").contains("EOF"));
        assert!(bad(Call::Publish, r#"{"channel":"a","data":1,"x":2}"#).contains("unknown field `x`"));
        assert!(bad(Call::Publish, r#"{"channel":1,"data":1}"#).contains("invalid type"));
        assert!(bad(Call::Publish, r#"{"channel":"a"}"#).contains("missing field `data`"));
        assert!(bad(Call::Publish, r#"{"channel":"a b","data":1}"#).contains("channel"));
        assert!(bad(Call::Publish, r#"{"channel":"a","data":1,"event":"gap"}"#).contains("reserved"));
        let token_expired = r#"{"channel":"a","data":1,"event":"token_expired"}"#;
        assert!(bad(Call::Publish, token_expired).contains("reserved"), "a server signal cannot be spoofed");
        assert!(bad(Call::Broadcast, r#"{"channels":[],"data":1}"#).contains("at least one"));
        assert!(bad(Call::Broadcast, r#"{"channels":["a","b","a"],"data":1}"#).contains("twice"));
        let many: Vec<String> = (0..1001).map(|i| format!("\"c{i}\"")).collect();
        let body = format!("{{\"channels\":[{}],\"data\":1}}", many.join(","));
        assert!(bad(Call::Broadcast, &body).contains("max-broadcast-channels"));
        assert!(bad(Call::History, r#"{"channel":"a","since":"x"}"#).contains("since"));
        assert!(
            bad(Call::History, r#"{"channel":"a","since":"0000000000000001:0","limit":0}"#).contains("limit")
        );
        assert!(bad(Call::History, r#"{"channel":"a","since":"0000000000000001:0","limit":-1}"#)
            .contains("invalid"));
    }

    #[test]
    fn a_client_id_names_its_node_when_it_has_a_node_part() {
        let (node, addr) = parse_client("00000000000000ab-030000000500000007").unwrap();
        assert_eq!(node, Some(0xab));
        assert_eq!((addr.sink.index(), addr.conn.key(), addr.conn.generation), (3, 5, 7));
        assert_eq!(parse_client("030000000500000007").map(|(node, _)| node), Some(None));
        for bad in ["ab-030000000500000007", "00000000000000ab-0300000005", "x-y", "-030000000500000007"] {
            assert!(parse_client(bad).is_none(), "{bad}");
        }
        let Ok(Submit { mut commands, .. }) =
            handle(Call::Disconnect, br#"{"client":"00000000000000ab-030000000500000007"}"#, &config())
        else {
            panic!()
        };
        let Some(Command::Disconnect(disconnect)) = commands.pop() else { panic!() };
        assert_eq!(disconnect.node, Some(0xab));
        let long = format!(r#"{{"user":"{}"}}"#, "u".repeat(MAX_USER_BYTES + 1));
        assert!(bad(Call::Disconnect, &long).contains("user is 256 bytes"));
    }

    #[test]
    fn a_string_is_sent_as_its_text_and_other_json_as_written() {
        let text = |body: &str| match handle(Call::Publish, body.as_bytes(), &config()) {
            Ok(Submit { mut commands, .. }) => match commands.pop() {
                Some(Command::Publish { payload: Payload::Text(text), .. }) => text.to_string(),
                other => panic!("{other:?}"),
            },
            Err(e) => panic!("{e:?}"),
        };
        assert_eq!(text(r#"{"channel":"a","data":"hi \"you\""}"#), "hi \"you\"");
        assert_eq!(text(r#"{"channel":"a","data":{"n": 1}}"#), r#"{"n": 1}"#);
    }

    #[test]
    fn a_broadcast_answers_each_channel_with_its_own_cursor_or_error() {
        let Ok(Submit { commands, pending }) =
            handle(Call::Broadcast, br#"{"channels":["a","b"],"data":"x"}"#, &config())
        else {
            panic!()
        };
        assert_eq!(commands.len(), 2);
        let id = Cursor::parse("00000000000000ab:3").unwrap();
        let replies = vec![Reply::Published(Ok(id)), Reply::Published(Err(HubError::HistoryFull))];
        let ApiAnswer::Json(200, body) = answer(pending, replies, &Metrics::default()) else { panic!() };
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["results"][0]["id"], "00000000000000ab:3");
        assert_eq!(json["results"][1]["channel"], "b");
        assert_eq!(json["results"][1]["status"], 503);
    }
}
