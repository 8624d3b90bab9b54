//! The push styles pushwire serves, and the routing of a request head to one of them.
//!
//! Implements: the URL space (`/`, `/healthz`, `/channels/{name}`), method checks with `Allow`
//! (RFC 9110 §15.5.6), the choice of transport for `GET /channels/{name}`, and one file per
//! transport: [`publish`] (HTTP POST), [`short_poll`] (an immediate answer), [`long_poll`]
//! (RFC 6202 §2), [`sse`] (HTML "Server-sent events"), [`stream`] (chunked NDJSON,
//! RFC 6202 §3), [`websocket`] (RFC 6455, channels and `/echo`). [`feed`] is what the
//! streaming ones share (cursor, catch-up, slow consumers); [`http_stream`] is the session of
//! SSE and the stream, which differ only in their format.
//!
//! # Choosing a transport
//!
//! `GET /channels/{name}` picks, in order: `?mode=ws|sse|stream|longpoll|poll` when given (for
//! clients that cannot set headers); `Upgrade: websocket`; `Accept: text/event-stream`;
//! `Accept: application/x-ndjson`; `?wait=SECONDS`; otherwise a short poll.
//!
//! Every transport subscribes and replays through the same hub commands, so the cursor
//! (`EPOCH:OFFSET`) and the gap rule are the same whichever way a client connects.
//!
//! Does not: touch sockets; the connection layer ([`crate::conn`]) feeds requests in and takes
//! responses out.

pub mod access;
pub mod commands;
pub mod feed;
pub mod http_stream;
pub mod limits;
pub mod long_poll;
pub mod pages;
pub mod policy;
pub mod publish;
pub mod short_poll;
pub mod sse;
pub mod stream;
pub mod token;
pub mod websocket;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::http1::head::{Headers, RequestHead};
use crate::http1::target::Target;
use crate::hub::{ChannelName, Command, Cursor, Since};
use crate::output::Output;
use crate::protocol::Transport;

pub use limits::Limits;

/// Why a connection ends, for logs (one byte in every connection).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The peer closed its side.
    PeerClosed,
    /// An idle keep-alive connection reached its timeout (RFC 9112 §9.5).
    Idle,
    /// The last response was answered with `Connection: close`.
    Done,
    /// A request broke HTTP framing or timed out.
    BadRequest,
    /// A graceful shutdown.
    Draining,
    /// A streaming subscriber could not keep up (see [`feed`]).
    SlowConsumer,
    /// The hub refused a command of a response already started.
    RefusedByHub,
    /// A long poll answered on a connection that does not stay open.
    LongPollAnswered,
    /// The WebSocket connection was failed (RFC 6455 §7.1.7).
    WebSocketFailed,
    /// The WebSocket closing handshake completed.
    WebSocketClosed,
    /// The peer did not answer the server's WebSocket close in time.
    WebSocketCloseTimeout,
}

impl CloseReason {
    /// The reason as logged (and, for a WebSocket policy close, sent in the close frame).
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::PeerClosed => "peer closed",
            CloseReason::Idle => "idle",
            CloseReason::Done => "done",
            CloseReason::BadRequest => "bad request",
            CloseReason::Draining => "draining",
            CloseReason::SlowConsumer => "slow consumer",
            CloseReason::RefusedByHub => "refused by the hub",
            CloseReason::LongPollAnswered => "long poll answered",
            CloseReason::WebSocketFailed => "websocket failed",
            CloseReason::WebSocketClosed => "websocket closed",
            CloseReason::WebSocketCloseTimeout => "websocket close timeout",
        }
    }
}

/// What a session handler gives back to the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Keep serving.
    Continue,
    /// The response is complete; the connection may read its next request.
    Complete,
    /// Close the connection once the output is flushed, for the reason given (for logs).
    Close(CloseReason),
}

/// What a session may touch while handling an input: the connection's output and command
/// queue, the configuration and the time.
#[derive(Debug)]
pub struct Ctx<'a> {
    /// Bytes to write.
    pub out: &'a mut Output,
    /// Hub commands for the event loop.
    pub commands: &'a mut CommandQueue,
    /// The server's configuration.
    pub config: &'a Config,
    /// The current time.
    pub now: Instant,
    /// Server-wide counters.
    pub metrics: &'a std::sync::Arc<crate::metrics::Metrics>,
    /// The allowed cross-origin request's origin, to name in CORS fields.
    pub cors_origin: Option<&'a str>,
}

/// Hub commands a connection queued for the event loop, oldest first. One pointer while empty
/// (every idle connection): the queue is allocated by the first command and freed once drained.
// Boxed on purpose: 8 bytes in every connection instead of a `VecDeque`'s 32.
#[allow(clippy::box_collection)]
#[derive(Debug, Default)]
pub struct CommandQueue(Option<Box<VecDeque<Command>>>);

impl CommandQueue {
    /// Queues `command` last.
    pub fn push_back(&mut self, command: Command) {
        self.0.get_or_insert_default().push_back(command);
    }

    /// Takes the oldest command; the queue's memory is released once it is empty.
    pub fn pop_front(&mut self) -> Option<Command> {
        let queue = self.0.as_mut()?;
        let command = queue.pop_front();
        if queue.is_empty() {
            self.0 = None;
        }
        command
    }

    /// True when no command waits.
    pub fn is_empty(&self) -> bool {
        self.0.as_ref().is_none_or(|q| q.is_empty())
    }

    /// True while the queue holds an allocation (only while commands wait).
    pub fn is_allocated(&self) -> bool {
        self.0.is_some()
    }
}

impl Ctx<'_> {
    /// `fields` plus the CORS fields of this request, if it is cross-origin.
    pub fn fields<'f>(&'f self, fields: &[(&'f str, &'f str)]) -> Vec<(&'f str, &'f str)> {
        with_cors(fields, self.cors_origin)
    }
}

/// `fields` plus `Access-Control-Allow-Origin` and `Vary: Origin` when `origin` is set.
pub fn with_cors<'f>(fields: &[(&'f str, &'f str)], origin: Option<&'f str>) -> Vec<(&'f str, &'f str)> {
    let mut all = fields.to_vec();
    if let Some(origin) = origin {
        all.push(("Access-Control-Allow-Origin", origin));
        all.push(("Vary", "Origin"));
    }
    all
}

/// What a request asks for, once its head is routed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `GET /`: the embedded page.
    Index,
    /// `GET /pushwire.js`: the browser client.
    ClientScript,
    /// `GET /healthz`.
    Healthz,
    /// `GET /metrics`: Prometheus text format.
    Metrics,
    /// `OPTIONS`: a CORS preflight (or a plain OPTIONS), answered 204.
    Preflight,
    /// `POST /channels/{name}`: publish the body.
    Publish {
        /// The channel.
        channel: ChannelName,
        /// The event name from `?event=`, validated.
        event: Option<String>,
    },
    /// `GET /channels/{name}`: answer at once with what follows `since`.
    ShortPoll {
        /// The channel.
        channel: ChannelName,
        /// Where the client's history ends.
        since: Since,
    },
    /// `GET /channels/{name}?wait=SECONDS`: answer when something follows `since`, or after
    /// `wait` with nothing.
    LongPoll {
        /// The channel.
        channel: ChannelName,
        /// Where the client's history ends.
        since: Since,
        /// How long to park (already capped).
        wait: Duration,
    },
    /// `GET /channels/{name}` as an event stream.
    Sse {
        /// The channel.
        channel: ChannelName,
        /// Where the client's history ends (`Last-Event-ID`, `last_event_id` or `since`).
        since: Since,
    },
    /// A WebSocket upgrade, accepted: on a channel, or `/echo` when `channel` is `None`.
    WebSocket {
        /// The channel and where the client's history ends.
        channel: Option<(ChannelName, Since)>,
        /// The handshake's answer.
        accepted: crate::ws::Accepted,
        /// Messages the client sends are published (publishing allowed and token given).
        may_publish: bool,
    },
    /// `GET /channels/{name}` as a chunked NDJSON stream.
    Stream {
        /// The channel.
        channel: ChannelName,
        /// Where the client's history ends.
        since: Since,
    },
}

/// A transport that owns the connection after its request: every push style is visible in one
/// `match`, dispatch is static.
#[derive(Debug)]
pub enum Session {
    /// A parked or answering long poll.
    LongPoll(long_poll::LongPollSession),
    /// An event stream.
    Sse(sse::SseSession),
    /// A chunked NDJSON stream.
    Stream(stream::StreamSession),
    /// A WebSocket connection (inline: with its mid-frame state out of line it is small, and
    /// a box would cost an idle subscriber a 112-byte allocation).
    WebSocket(websocket::WsSession),
}

/// What a connection does with bytes that arrive while a session owns it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputPolicy {
    /// Hand them to the session (WebSocket frames).
    Session,
    /// Keep them for the next request (pipelined behind a long poll).
    Buffer,
    /// Drop them (a stream's client has nothing to say).
    Discard,
}

impl Session {
    /// The subscription's replay, and the hub's copy of the channel's name (kept instead of
    /// the request's, so idle subscribers of a channel share one).
    pub fn handle_subscribed(
        &mut self,
        channel: ChannelName,
        replay: crate::hub::Replay,
        ctx: &mut Ctx<'_>,
    ) -> Flow {
        match self {
            Session::LongPoll(s) => s.handle_subscribed(replay, ctx),
            Session::Sse(s) => s.handle_subscribed(channel, replay, ctx),
            Session::Stream(s) => s.handle_subscribed(channel, replay, ctx),
            Session::WebSocket(s) => s.handle_subscribed(channel, replay, ctx),
        }
    }

    /// The answer to a read the session queued.
    pub fn handle_read(&mut self, replay: crate::hub::Replay, ctx: &mut Ctx<'_>) -> Flow {
        match self {
            Session::LongPoll(s) => s.handle_read(replay, ctx),
            Session::Sse(s) => s.handle_page(replay, ctx),
            Session::Stream(s) => s.handle_page(replay, ctx),
            Session::WebSocket(s) => s.handle_page(replay, ctx),
        }
    }

    /// A live message on the subscribed channel.
    pub fn handle_delivery(&mut self, msg: &std::sync::Arc<crate::hub::Message>, ctx: &mut Ctx<'_>) -> Flow {
        match self {
            Session::LongPoll(s) => s.handle_delivery(msg, ctx),
            Session::Sse(s) => s.handle_delivery(msg, ctx),
            Session::Stream(s) => s.handle_delivery(msg, ctx),
            Session::WebSocket(s) => s.handle_delivery(msg, ctx),
        }
    }

    /// Some output was written.
    pub fn handle_drained(&mut self, ctx: &mut Ctx<'_>) {
        match self {
            Session::LongPoll(_) => {}
            Session::Sse(s) => s.handle_drained(ctx),
            Session::Stream(s) => s.handle_drained(ctx),
            Session::WebSocket(s) => s.handle_drained(ctx),
        }
    }

    /// The session's next deadline.
    pub fn poll_timeout(&self, config: &Config) -> Option<Instant> {
        match self {
            Session::LongPoll(s) => s.poll_timeout(),
            Session::Sse(s) => s.poll_timeout(),
            Session::Stream(s) => s.poll_timeout(),
            Session::WebSocket(s) => s.poll_timeout(&config.websocket),
        }
    }

    /// A deadline passed (calls before it are harmless).
    pub fn handle_timeout(&mut self, ctx: &mut Ctx<'_>) -> Flow {
        match self {
            Session::LongPoll(s) => s.handle_timeout(ctx),
            Session::Sse(s) => s.handle_timeout(ctx),
            Session::Stream(s) => s.handle_timeout(ctx),
            Session::WebSocket(s) => s.handle_timeout(ctx),
        }
    }

    /// The server is shutting down: end the response or stream (WebSocket: close 1001).
    pub fn handle_drain(&mut self, ctx: &mut Ctx<'_>) -> Flow {
        match self {
            Session::LongPoll(s) => s.handle_drain(ctx),
            Session::Sse(s) => s.handle_drain(ctx),
            Session::Stream(s) => s.handle_drain(ctx),
            Session::WebSocket(s) => s.handle_drain(ctx),
        }
    }

    /// What to do with input while this session owns the connection.
    pub fn input_policy(&self) -> InputPolicy {
        match self {
            Session::WebSocket(_) => InputPolicy::Session,
            Session::LongPoll(_) => InputPolicy::Buffer,
            Session::Sse(_) | Session::Stream(_) => InputPolicy::Discard,
        }
    }

    /// Bytes from the peer (only for [`InputPolicy::Session`]); the session may change them in
    /// place (WebSocket unmasking) and consumes them all.
    pub fn handle_input(&mut self, input: &mut [u8], ctx: &mut Ctx<'_>) -> Flow {
        match self {
            Session::WebSocket(s) => s.handle_input(input, ctx),
            _ => Flow::Continue,
        }
    }

    /// A command the session queued was refused by the hub (`status` is the refusal's HTTP
    /// status). `None`: nothing has been written yet, so the connection answers with an HTTP
    /// error; otherwise the session has ended its response in its own format.
    pub fn handle_refused(&mut self, status: u16, ctx: &mut Ctx<'_>) -> Option<Flow> {
        match self {
            Session::WebSocket(s) => Some(s.handle_refused(status, ctx)),
            Session::Sse(s) => s.handle_refused(ctx),
            Session::Stream(s) => s.handle_refused(ctx),
            Session::LongPoll(_) => None,
        }
    }

    /// The transport, for logs and metrics.
    pub fn transport(&self) -> Transport {
        match self {
            Session::LongPoll(_) => Transport::LongPoll,
            Session::Sse(_) => Transport::Sse,
            Session::Stream(_) => Transport::Stream,
            Session::WebSocket(_) => Transport::WebSocket,
        }
    }
}

/// A request refused at routing, with its status and a short explanation for the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The status code.
    pub status: u16,
    /// Fields the answer must carry (`Allow` on a 405, `Sec-WebSocket-Version` on a 426).
    pub headers: &'static [(&'static str, &'static str)],
    /// A one-line explanation (server-made, never echoing the request).
    pub reason: &'static str,
}

impl Refusal {
    fn new(status: u16, reason: &'static str) -> Self {
        Refusal { status, headers: &[], reason }
    }
}

const CHANNEL_METHODS: &[(&str, &str)] = &[("Allow", "GET, HEAD, POST")];
const PAGE_METHODS: &[(&str, &str)] = &[("Allow", "GET, HEAD")];

/// Routes a request head.
pub fn route(head: &RequestHead, config: &Config) -> Result<Route, Refusal> {
    let limits = &config.transport;
    let target =
        Target::parse(&head.target).ok_or(Refusal::new(400, "request-target must be an absolute path"))?;
    let denied = |d: access::Denied| Refusal::new(d.status_hint(), d.reason());
    config.access.check_origin(head).map_err(denied)?;
    let method = head.method.as_str();
    // RFC 9110 §9.1: an origin server that receives a request method that is unrecognized or
    // not implemented SHOULD respond with 501; a known method the resource does not allow gets
    // 405 with Allow (§15.5.6). Method names are case-sensitive, so `get` is unrecognized.
    if !matches!(
        method,
        "GET" | "HEAD" | "POST" | "PUT" | "DELETE" | "CONNECT" | "OPTIONS" | "TRACE" | "PATCH"
    ) {
        return Err(Refusal::new(501, "method not implemented"));
    }
    if method == "OPTIONS" {
        return Ok(Route::Preflight);
    }
    let read_only = matches!(method, "GET" | "HEAD");
    // RFC 9110 §15.5.6: a 405 response MUST include an Allow header field.
    let not_allowed = |headers| Refusal { status: 405, headers, reason: "method not allowed" };
    match target.path {
        "/" | "/index.html" if read_only => Ok(Route::Index),
        "/pushwire.js" if read_only => Ok(Route::ClientScript),
        "/healthz" if read_only => Ok(Route::Healthz),
        "/metrics" if read_only => Ok(Route::Metrics),
        "/" | "/index.html" | "/pushwire.js" | "/healthz" | "/metrics" => Err(not_allowed(PAGE_METHODS)),
        "/echo" => websocket_route(head, &target, None, config),
        path => {
            let Some(name) = path.strip_prefix("/channels/") else {
                return Err(Refusal::new(404, "not found"));
            };
            let channel = ChannelName::parse(name).map_err(|_| {
                Refusal::new(400, "channel names are 1 to 128 bytes of A-Z a-z 0-9 . _ ~ -, not . or ..")
            })?;
            match method {
                "POST" => {
                    config.access.check_publish(head, &target).map_err(denied)?;
                    Ok(Route::Publish { channel, event: event_param(&target, limits)? })
                }
                "GET" | "HEAD" => {
                    config.access.check_subscribe(head, &target).map_err(denied)?;
                    subscribe_route(head, &target, channel, config)
                }
                _ => Err(not_allowed(CHANNEL_METHODS)),
            }
        }
    }
}

/// Picks the transport of a `GET /channels/{name}` (see the module docs for the order).
fn subscribe_route(
    head: &RequestHead,
    target: &Target<'_>,
    channel: ChannelName,
    config: &Config,
) -> Result<Route, Refusal> {
    let limits = &config.transport;
    let mode = match target.param("mode") {
        Some(Ok(m)) => {
            Transport::parse(&m).ok_or(Refusal::new(400, "mode must be ws, sse, stream, longpoll or poll"))?
        }
        Some(Err(_)) => return Err(Refusal::new(400, "bad percent-encoding in query")),
        None if head.has_token("upgrade", "websocket") => Transport::WebSocket,
        None if accepts(head, "text/event-stream") => Transport::Sse,
        None if accepts(head, "application/x-ndjson") => Transport::Stream,
        None if target.param("wait").is_some() => Transport::LongPoll,
        None => Transport::Poll,
    };
    // HEAD cannot stream or park: it gets the short poll's fields.
    let mode = if head.method == "HEAD" { Transport::Poll } else { mode };
    if limits.disabled.contains(&mode) {
        return Err(Refusal::new(403, "this transport is disabled on this server"));
    }
    let since = since_param(target)?;
    match mode {
        Transport::Poll => Ok(Route::ShortPoll { channel, since }),
        Transport::LongPoll => {
            let wait = match target.param("wait") {
                None => limits.longpoll_max_wait,
                Some(Ok(w)) => parse_wait(&w).ok_or(Refusal::new(400, "wait must be a number of seconds"))?,
                Some(Err(_)) => return Err(Refusal::new(400, "bad percent-encoding in query")),
            };
            Ok(Route::LongPoll { channel, since, wait: wait.min(limits.longpoll_max_wait) })
        }
        Transport::Sse => Ok(Route::Sse { channel, since: sse::since(head, target)? }),
        // RFC 9112 §7: a server MUST NOT send chunked to an HTTP/1.0 client.
        Transport::Stream if head.minor_version == 0 => Err(Refusal::new(400, "streaming needs HTTP/1.1")),
        Transport::Stream => Ok(Route::Stream { channel, since }),
        Transport::WebSocket => websocket_route(head, target, Some((channel, since)), config),
    }
}

/// Runs the opening handshake checks (RFC 6455 §4.2.1) for `/echo` or a channel.
fn websocket_route(
    head: &RequestHead,
    target: &Target<'_>,
    channel: Option<(ChannelName, Since)>,
    config: &Config,
) -> Result<Route, Refusal> {
    let options = crate::ws::ServerOptions {
        protocols: if channel.is_some() { vec![websocket::PROTOCOL_V1.to_string()] } else { Vec::new() },
        // The Origin policy was applied to every request before routing (see `access`).
        allowed_origins: None,
    };
    let may_publish = config.websocket.client_publish && config.access.check_publish(head, target).is_ok();
    match crate::ws::handshake::accept(head, &options) {
        Ok(accepted) => Ok(Route::WebSocket { channel, accepted, may_publish }),
        Err(e) => Err(Refusal {
            status: e.status_hint(),
            headers: e.extra_headers(),
            reason: "WebSocket handshake refused",
        }),
    }
}

/// True when the request's `Accept` lists `media` (RFC 9110 §12.5.1; parameters ignored).
fn accepts(head: &RequestHead, media: &str) -> bool {
    head.fields()
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("accept"))
        .flat_map(|h| h.value.split(|&b| b == b','))
        .any(|range| {
            let range = range.split(|&b| b == b';').next().unwrap_or_default().trim_ascii();
            range.eq_ignore_ascii_case(media.as_bytes())
        })
}

/// A `?wait=` value: decimal seconds, at most 6 digits before and 3 after the point.
fn parse_wait(text: &str) -> Option<Duration> {
    let (whole, frac) = text.split_once('.').unwrap_or((text, ""));
    let digits = |s: &str, max: usize| s.len() <= max && s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !digits(whole, 6) || !digits(frac, 3) {
        return None;
    }
    let millis: u64 = format!("{whole}{frac:0<3}").parse().ok()?;
    Some(Duration::from_millis(millis))
}

/// The `since` cursor of a request: absent means "from now".
pub fn since_param(target: &Target<'_>) -> Result<Since, Refusal> {
    match target.param("since") {
        None => Ok(Since::Tail),
        Some(Ok(text)) => Cursor::parse(&text)
            .map(Since::After)
            .map_err(|_| Refusal::new(400, "since must be a cursor EPOCH:OFFSET")),
        Some(Err(_)) => Err(Refusal::new(400, "bad percent-encoding in query")),
    }
}

/// The `event` name of a publish: an RFC 9110 §5.6.2 token, not the reserved `gap`.
fn event_param(target: &Target<'_>, limits: &Limits) -> Result<Option<String>, Refusal> {
    let Some(value) = target.param("event") else {
        return Ok(None);
    };
    let name = value.map_err(|_| Refusal::new(400, "bad percent-encoding in query"))?;
    if name.is_empty() || name.len() > limits.max_event_name_bytes || !name.bytes().all(is_tchar) {
        return Err(Refusal::new(400, "event must be a token of at most max-event-name-bytes"));
    }
    if name == "gap" {
        return Err(Refusal::new(400, "the event name gap is reserved for gap signals"));
    }
    Ok(Some(name))
}

/// RFC 9110 §5.6.2 tchar.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http1::head::Header;

    fn head(method: &str, target: &str) -> RequestHead {
        RequestHead {
            method: method.into(),
            target: target.into(),
            minor_version: 1,
            headers: vec![Header { name: "Host".into(), value: b"x".to_vec() }],
        }
    }

    fn status(method: &str, target: &str) -> u16 {
        route(&head(method, target), &Config::default()).unwrap_err().status
    }

    #[test]
    fn rfc9110_9_1_unrecognized_methods_are_501() {
        assert_eq!(status("BREW", "/channels/a"), 501);
        assert_eq!(status("get", "/healthz"), 501);
        assert_eq!(status("PUT", "/channels/a"), 405);
    }

    #[test]
    fn rfc9110_15_5_6_405_carries_allow() {
        let r = route(&head("DELETE", "/channels/a"), &Config::default()).unwrap_err();
        assert_eq!((r.status, r.headers), (405, CHANNEL_METHODS));
        assert_eq!(status("POST", "/healthz"), 405);
    }

    #[test]
    fn pages_are_routed_and_read_only() {
        let config = Config::default();
        assert_eq!(route(&head("GET", "/"), &config), Ok(Route::Index));
        assert_eq!(route(&head("GET", "/pushwire.js"), &config), Ok(Route::ClientScript));
        assert_eq!(route(&head("HEAD", "/pushwire.js?v=1"), &config), Ok(Route::ClientScript));
        let r = route(&head("POST", "/pushwire.js"), &config).unwrap_err();
        assert_eq!((r.status, r.headers), (405, PAGE_METHODS));
    }

    #[test]
    fn unknown_paths_are_404_and_bad_names_400() {
        assert_eq!(status("GET", "/nope"), 404);
        assert_eq!(status("GET", "/channels/"), 400);
        assert_eq!(status("GET", "/channels/a%20b"), 400);
        assert_eq!(status("GET", &format!("/channels/{}", "a".repeat(129))), 400);
    }

    #[test]
    fn publish_event_must_be_a_token_and_not_gap() {
        assert_eq!(status("POST", "/channels/a?event=gap"), 400);
        assert_eq!(status("POST", "/channels/a?event=a%20b"), 400);
        assert_eq!(status("POST", &format!("/channels/a?event={}", "e".repeat(65))), 400);
        let ok = route(&head("POST", "/channels/a?event=price"), &Config::default()).unwrap();
        assert!(matches!(ok, Route::Publish { event: Some(e), .. } if e == "price"));
    }

    #[test]
    fn transport_is_chosen_by_mode_then_headers_then_wait() {
        let mut h = head("GET", "/channels/a");
        h.headers
            .push(Header { name: "Accept".into(), value: b"text/html, text/event-stream;q=0.9".to_vec() });
        assert!(matches!(route(&h, &Config::default()), Ok(Route::Sse { .. })));
        h.target = "/channels/a?mode=poll".into();
        assert!(matches!(route(&h, &Config::default()), Ok(Route::ShortPoll { .. })));
        let mut n = head("GET", "/channels/a");
        n.headers.push(Header { name: "Accept".into(), value: b"application/x-ndjson".to_vec() });
        assert!(matches!(route(&n, &Config::default()), Ok(Route::Stream { .. })));
        let lp = route(&head("GET", "/channels/a?wait=2.5"), &Config::default()).unwrap();
        assert!(matches!(lp, Route::LongPoll { wait, .. } if wait == Duration::from_millis(2500)));
        let capped = route(&head("GET", "/channels/a?wait=999"), &Config::default()).unwrap();
        assert!(matches!(capped, Route::LongPoll { wait, .. } if wait == Duration::from_secs(30)));
        assert_eq!(status("GET", "/channels/a?wait=-1"), 400);
        assert_eq!(status("GET", "/channels/a?wait=1e3"), 400);
        assert_eq!(status("GET", "/channels/a?mode=carrier-pigeon"), 400);
    }

    #[test]
    fn disabled_transports_are_refused_with_403() {
        let mut config = Config::default();
        config.transport.disabled = vec![Transport::Sse];
        let r = route(&head("GET", "/channels/a?mode=sse"), &config).unwrap_err();
        assert_eq!(r.status, 403);
        assert!(route(&head("GET", "/channels/a?mode=stream"), &config).is_ok());
    }

    #[test]
    fn since_must_parse_as_a_cursor() {
        assert_eq!(status("GET", "/channels/a?since=nope"), 400);
        let ok = route(&head("GET", "/channels/a?since=00000000000000ab%3A7"), &Config::default()).unwrap();
        assert!(matches!(ok, Route::ShortPoll { since: Since::After(c), .. } if c.offset == 7));
    }
}
