//! One subscriber API over the five transports, which reconnects and resumes by itself.
//!
//! ```no_run
//! use pushwire::client::{Item, Payload, Subscriber, SubscribeOptions, Transport};
//!
//! let options = SubscribeOptions { transport: Transport::Sse, ..SubscribeOptions::default() };
//! let mut sub = Subscriber::connect("http://127.0.0.1:8080/channels/news", options)?;
//! for item in &mut sub {
//!     match item? {
//!         Item::Message { id, payload: Payload::Text(text), .. } => println!("{id} {text}"),
//!         Item::Message { .. } => {}
//!         Item::Gap { next, .. } => eprintln!("messages were lost; now at {next}"),
//!     }
//! }
//! # Ok::<(), pushwire::client::Error>(())
//! ```
//!
//! Implements, per [`Transport`], the client side of the README's transports table:
//! - **WebSocket** ([RFC 6455](https://www.rfc-editor.org/rfc/rfc6455)): [`super::WsClient`]
//!   offering `pushwire.v1`, so every frame is a JSON envelope with its cursor; resumes with
//!   `?since=`.
//! - **SSE** (WHATWG HTML "Server-sent events"): the body parsed by
//!   [`crate::sse::EventStreamParser`]; resumes with `Last-Event-ID`
//!   (`#the-last-event-id-header`), and waits at least the server's `retry:` reconnection time
//!   before reconnecting (`#sse-processing-model`).
//! - **Stream** ([RFC 6202 §3](https://www.rfc-editor.org/rfc/rfc6202#section-3)): the chunked
//!   body ([RFC 9112 §7.1](https://www.rfc-editor.org/rfc/rfc9112#section-7.1)) split into
//!   NDJSON lines; resumes with `?since=`.
//! - **Long poll** and **short poll** ([RFC 6202 §2](https://www.rfc-editor.org/rfc/rfc6202#section-2)):
//!   one request after another on a persistent connection, each `?since=` the previous
//!   answer's `next`.
//!
//! **Exactly once, in order.** The subscriber keeps the cursor of the last item it returned.
//! Every reconnection resumes from it, and anything at or before it is skipped, so a message
//! that was in flight when a connection broke is neither lost nor repeated. When the server
//! cannot resume (history exceeded, server restarted with a new epoch) it says so and the
//! subscriber returns [`Item::Gap`]; a message that skips offsets without such a signal is
//! preceded by a gap the subscriber makes up itself, so a loss is never silent.
//!
//! **Reconnecting.** A lost connection, a timeout, a 5xx, 408 or 429 is retried after a delay
//! drawn with "full jitter" (uniform between zero and `min(cap, base × 2^attempt)`, see
//! [`Backoff`]); the attempt count restarts once a connection delivers something. Other
//! refusals (400, 401, 403, 404, a server that does not speak the transport) are returned as
//! errors.
//!
//! Does not: follow redirects, or multiplex several channels on one connection.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use base64::Engine as _;

use crate::hub::Cursor;
use crate::sse::{EventStreamParser, ParseLimits};
use crate::ws::{self, Event};

use super::http::{with_query, Body, HttpConn, HttpOptions};
use super::{Error, TlsOptions, Url, WsClient, WsOptions};
use crate::protocol::envelope::{
    parse_envelope, parse_labelled_envelope, parse_multi_poll_answer, parse_poll_answer, Envelope, Payload,
    Received,
};

pub use crate::protocol::PROTOCOL_V1;

/// Query parameters the subscriber sets itself; removed from the URL it is given.
const OWN_PARAMS: &[&str] = &["mode", "since", "wait", "last_event_id"];

/// How a subscriber connects (the README's transports table; `WebSocket` offers `pushwire.v1`).
pub use crate::protocol::Transport;

/// Deadlines of every blocking step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP connect plus the response head (or WebSocket handshake). Default 10 s.
    pub connect: Duration,
    /// Longest silence on an open connection before it is given up and reconnected; above the
    /// server's heartbeat (`--keepalive-interval`, 15 s) and ping interval (25 s). A long
    /// poll waits this much beyond its `wait`. Default 60 s.
    pub read: Duration,
    /// Longest any one write may block. Default 10 s.
    pub write: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(10),
            read: Duration::from_secs(60),
            write: Duration::from_secs(10),
        }
    }
}

/// Exponential backoff with full jitter between reconnection attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The ceiling of the first attempt's delay. Default 250 ms.
    pub base: Duration,
    /// The largest ceiling. Default 30 s.
    pub cap: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { base: Duration::from_millis(250), cap: Duration::from_secs(30) }
    }
}

impl Backoff {
    /// The ceiling of attempt `attempt` (from 0): `min(cap, base × 2^attempt)`.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// "Full jitter": `unit` (uniform in `[0, 1)`) times the ceiling of `attempt`, so many
    /// clients cut off at once do not come back at once.
    pub fn delay(&self, attempt: u32, unit: f64) -> Duration {
        self.ceiling(attempt).mul_f64(unit.clamp(0.0, 1.0))
    }
}

/// How to subscribe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscribeOptions {
    /// The transport. Default WebSocket.
    pub transport: Transport,
    /// Resume after this cursor; `None` starts from now (the subscription's opening cursor).
    pub since: Option<Cursor>,
    /// On a multi-channel URL (`/channels/a,b`): where each channel starts, in the URL's
    /// order (`None` or a missing entry: from now). Ignored for one channel (see `since`).
    pub since_each: Vec<Option<Cursor>>,
    /// Sent as `Authorization: Bearer TOKEN` (RFC 6750 §2.1).
    pub token: Option<String>,
    /// Connect, read and write deadlines.
    pub timeouts: Timeouts,
    /// Delays between reconnection attempts.
    pub backoff: Backoff,
    /// Short poll: the pause after an answer without messages. Default 1 s.
    pub poll_interval: Duration,
    /// Long poll: the `?wait=` asked for. Default 25 s (the server caps it).
    pub long_poll_wait: Duration,
    /// Largest message accepted, in payload bytes (base64 and JSON overhead are allowed for on
    /// top). Larger fails the connection, which is then retried. Default 16 MiB.
    pub max_message_bytes: usize,
    /// What `https://` and `wss://` connections trust. Default: Mozilla's roots only.
    pub tls: TlsOptions,
}

impl Default for SubscribeOptions {
    fn default() -> Self {
        SubscribeOptions {
            transport: Transport::WebSocket,
            since: None,
            since_each: Vec::new(),
            token: None,
            timeouts: Timeouts::default(),
            backoff: Backoff::default(),
            poll_interval: Duration::from_secs(1),
            long_poll_wait: Duration::from_secs(25),
            max_message_bytes: 16 * 1024 * 1024,
            tls: TlsOptions::default(),
        }
    }
}

/// What a subscriber yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// The next message of the channel.
    Message {
        /// Its channel, on a multi-channel subscription (`/channels/a,b`); else `None`.
        channel: Option<String>,
        /// Its cursor.
        id: Cursor,
        /// Its event name, if published with one.
        event: Option<String>,
        /// Its body.
        payload: Payload,
    },
    /// Messages were lost (history exceeded, or the channel's epoch changed); the subscriber
    /// continues after `next`.
    Gap {
        /// The channel that lost messages, on a multi-channel subscription; else `None`.
        channel: Option<String>,
        /// Where the subscription now stands.
        next: Cursor,
    },
}

/// One open connection of a subscriber.
#[derive(Debug)]
enum Link {
    Ws(Box<WsClient>),
    Sse {
        http: HttpConn,
        body: Body,
        parser: Box<EventStreamParser>,
    },
    Stream {
        http: HttpConn,
        body: Body,
        line: Vec<u8>,
    },
    /// Polls: the persistent connection, when there is one.
    Poll(Option<HttpConn>),
}

/// A subscription to one channel that survives lost connections; see the module docs.
///
/// Made by [`Subscriber::connect`]; then [`Subscriber::recv`] (or iterate) for each item.
#[derive(Debug)]
pub struct Subscriber {
    url: Url,
    options: SubscribeOptions,
    cursor: Option<Cursor>,
    link: Option<Link>,
    ready: VecDeque<Item>,
    /// Failed attempts since a connection last delivered something.
    attempt: u32,
    /// The current connection delivered something (an item or its opening cursor).
    productive: bool,
    /// The server's SSE `retry:` reconnection time.
    retry_hint: Option<Duration>,
    reconnect_at: Option<Instant>,
    next_poll_at: Option<Instant>,
    reconnects: u64,
    /// A fatal error was returned: the iterator ends.
    finished: bool,
    /// A multi-channel subscription's channels (the URL's `/channels/a,b,c`); empty for one.
    channels: Vec<String>,
    /// Each channel's cursor, on a multi-channel subscription.
    cursors: Vec<Option<Cursor>>,
    /// A multi-channel event stream's last `id:` (the composite cursor), sent back as
    /// `Last-Event-ID` as a browser would.
    sse_id: Option<String>,
}

impl Subscriber {
    /// Parses `url` (`http://` or `ws://`, naming a channel: `/channels/NAME`), checks the
    /// options and opens the first connection. Errors of this first connection are returned
    /// as they are (nothing is retried yet), so a wrong URL or a server that is down is
    /// reported at once. Next: [`Subscriber::recv`].
    pub fn connect(url: &str, options: SubscribeOptions) -> Result<Subscriber, Error> {
        let url = Url::parse(url)?;
        if options.backoff.base.is_zero() || options.backoff.cap < options.backoff.base {
            return Err(Error::InvalidOptions("backoff base must be positive and at most the cap".into()));
        }
        if options.timeouts.connect.is_zero()
            || options.timeouts.read.is_zero()
            || options.timeouts.write.is_zero()
        {
            return Err(Error::InvalidOptions("timeouts must be positive".into()));
        }
        if options.max_message_bytes == 0 {
            return Err(Error::InvalidOptions("max message bytes must be positive".into()));
        }
        let mut sub = Subscriber::unconnected(url, options);
        sub.link = Some(sub.open()?);
        Ok(sub)
    }

    /// A subscriber at `options.since` with no connection yet.
    fn unconnected(url: Url, options: SubscribeOptions) -> Subscriber {
        // `/channels/a,b,c`: several channels (`,` is not in the channel alphabet).
        let path = url.resource_name.split('?').next().unwrap_or_default();
        let channels: Vec<String> = match path.strip_prefix("/channels/") {
            Some(list) if list.contains(',') => list.split(',').map(String::from).collect(),
            _ => Vec::new(),
        };
        let cursors = (0..channels.len()).map(|i| options.since_each.get(i).copied().flatten()).collect();
        Subscriber {
            cursors,
            channels,
            sse_id: None,
            url,
            cursor: options.since,
            options,
            link: None,
            ready: VecDeque::new(),
            attempt: 0,
            productive: false,
            retry_hint: None,
            reconnect_at: None,
            next_poll_at: None,
            reconnects: 0,
            finished: false,
        }
    }

    /// The cursor of the last item returned (or the starting one): where a new subscriber
    /// would resume.
    pub fn cursor(&self) -> Option<Cursor> {
        self.cursor
    }

    /// A multi-channel subscription's channels and where each stands (empty for one channel).
    pub fn channel_cursors(&self) -> Vec<(String, Option<Cursor>)> {
        self.channels.iter().cloned().zip(self.cursors.iter().copied()).collect()
    }

    fn is_multi(&self) -> bool {
        !self.channels.is_empty()
    }

    /// The `since` to send: the cursor, or on several channels the full composite
    /// (`E:O,,E:O`), when there is a position at all.
    fn since_text(&self) -> Option<String> {
        if !self.is_multi() {
            return self.cursor.map(|c| c.to_string());
        }
        self.cursors.iter().any(Option::is_some).then(|| {
            let entries: Vec<String> =
                self.cursors.iter().map(|c| c.map(|c| c.to_string()).unwrap_or_default()).collect();
            entries.join(",")
        })
    }

    /// How many times a connection was lost and retried.
    pub fn reconnects(&self) -> u64 {
        self.reconnects
    }

    /// Blocks until the next item, reconnecting as often as needed. Errors only for what
    /// retrying cannot fix ([`Error::is_retryable`] is false): the subscription is then over.
    pub fn recv(&mut self) -> Result<Item, Error> {
        // Each turn returns, or reads, or (re)connects after a bounded delay.
        loop {
            if let Some(item) = self.ready.pop_front() {
                return Ok(item);
            }
            let result = match self.link.take() {
                None => {
                    if let Some(at) = self.reconnect_at.take() {
                        std::thread::sleep(at.saturating_duration_since(Instant::now()));
                    }
                    self.open().map(|link| self.link = Some(link))
                }
                Some(mut link) => {
                    let result = self.pump(&mut link);
                    if result.is_ok() {
                        self.link = Some(link);
                    }
                    result
                }
            };
            match result {
                Ok(()) => {}
                Err(e) if !e.is_retryable() => {
                    self.finished = true;
                    return Err(e);
                }
                Err(e) => self.lost(&e),
            }
        }
    }

    /// The connection is gone: schedules the next attempt.
    fn lost(&mut self, error: &Error) {
        self.link = None;
        if std::mem::take(&mut self.productive) {
            self.attempt = 0;
        }
        let mut delay = self.options.backoff.delay(self.attempt, rand::random::<f64>());
        // HTML #sse-processing-model: wait the event source's reconnection time, then
        // reconnect (a user agent may add exponential backoff, which the jitter does).
        if self.options.transport == Transport::Sse {
            if let Some(hint) = self.retry_hint {
                delay = delay.max(hint);
            }
        }
        self.attempt = self.attempt.saturating_add(1);
        self.reconnects += 1;
        self.reconnect_at = Some(Instant::now() + delay);
        self.next_poll_at = None;
        log::warn!(
            "{} subscription: {error}; reconnecting in {} ms",
            self.options.transport.name(),
            delay.as_millis()
        );
    }

    fn http_options(&self, read: Duration, max_body_bytes: u64) -> HttpOptions {
        let t = &self.options.timeouts;
        HttpOptions {
            connect_timeout: t.connect,
            read_timeout: read,
            write_timeout: t.write,
            max_body_bytes,
            tls: self.options.tls.clone(),
        }
    }

    /// Allowance for one message in its encoding: base64 (4/3) plus JSON and framing.
    fn encoded_limit(&self) -> usize {
        self.options.max_message_bytes.saturating_mul(4) / 3 + 4096
    }

    fn authorization(&self) -> Option<String> {
        self.options.token.as_ref().map(|t| format!("Bearer {t}"))
    }

    /// The request target: the URL's path and query without our own parameters, plus `add`.
    fn target(&self, add: &[(&str, String)]) -> String {
        with_query(&self.url.resource_name, OWN_PARAMS, add)
    }

    /// Opens a connection for the transport, resuming from the cursor.
    fn open(&mut self) -> Result<Link, Error> {
        let since: Vec<(&str, String)> = self.since_text().map(|c| ("since", c)).into_iter().collect();
        let auth = self.authorization();
        match self.options.transport {
            Transport::WebSocket => {
                let url = self.url.websocket_url(&self.target(&since));
                let frame_bytes = self.encoded_limit() as u64;
                let options = WsOptions {
                    protocols: vec![PROTOCOL_V1.to_string()],
                    headers: auth.map(|a| ("Authorization".to_string(), a)).into_iter().collect(),
                    connect_timeout: self.options.timeouts.connect,
                    read_timeout: Some(self.options.timeouts.read),
                    write_timeout: Some(self.options.timeouts.write),
                    close_timeout: Duration::from_secs(2),
                    limits: ws::Limits {
                        max_frame_payload_bytes: frame_bytes,
                        max_message_bytes: frame_bytes,
                    },
                    tls: self.options.tls.clone(),
                    // permessage-deflate offered (WsOptions::default).
                    ..WsOptions::default()
                };
                let ws = WsClient::connect(&url, &options)?;
                if ws.protocol() != Some(PROTOCOL_V1) {
                    return Err(Error::NotPushwire("the WebSocket server did not select pushwire.v1".into()));
                }
                Ok(Link::Ws(Box::new(ws)))
            }
            Transport::Sse => {
                let mut fields = vec![("Accept", "text/event-stream".to_string())];
                // HTML #the-last-event-id-header: the reconnection request carries the last
                // event ID string.
                let mut add = vec![("mode", "sse".to_string())];
                if self.is_multi() {
                    match &self.sse_id {
                        Some(id) => fields.push(("Last-Event-ID", id.clone())),
                        None => add.extend(since),
                    }
                } else if let Some(cursor) = self.cursor {
                    fields.push(("Last-Event-ID", cursor.to_string()));
                }
                let target = self.target(&add);
                let (http, body) = self.open_stream(&target, fields, auth, "text/event-stream")?;
                let line = self.encoded_limit();
                let limits = ParseLimits { max_line_bytes: line, max_data_bytes: line };
                Ok(Link::Sse { http, body, parser: Box::new(EventStreamParser::new(limits)) })
            }
            Transport::Stream => {
                let mut add = vec![("mode", "stream".to_string())];
                add.extend(since);
                let target = self.target(&add);
                let fields = vec![("Accept", "application/x-ndjson".to_string())];
                let (http, body) = self.open_stream(&target, fields, auth, "application/x-ndjson")?;
                Ok(Link::Stream { http, body, line: Vec::new() })
            }
            Transport::LongPoll | Transport::Poll => {
                let read = self.options.timeouts.read + self.options.long_poll_wait;
                let options = self.http_options(read, self.encoded_limit() as u64 * 100);
                Ok(Link::Poll(Some(HttpConn::connect(&self.url, &options)?)))
            }
        }
    }

    /// Sends a streaming GET and checks its answer: 200 with `content_type`.
    fn open_stream(
        &self,
        target: &str,
        mut fields: Vec<(&'static str, String)>,
        auth: Option<String>,
        content_type: &str,
    ) -> Result<(HttpConn, Body), Error> {
        fields.push(("Cache-Control", "no-cache".into()));
        if let Some(auth) = auth {
            fields.push(("Authorization", auth));
        }
        let fields: Vec<(&str, &str)> = fields.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let options = self.http_options(self.options.timeouts.connect, u64::MAX);
        let mut http = HttpConn::connect(&self.url, &options)?;
        http.send_request("GET", target, &fields, b"")?;
        let head = http.read_head()?;
        if head.status != 200 {
            return Err(refused(&mut http, head));
        }
        use crate::http1::head::Headers;
        let media = head.header("content-type").unwrap_or_default();
        let media = media.split(|&b| b == b';').next().unwrap_or_default().trim_ascii();
        if !media.eq_ignore_ascii_case(content_type.as_bytes()) {
            return Err(Error::NotPushwire(format!(
                "the answer is {:?}, not {content_type}",
                String::from_utf8_lossy(media)
            )));
        }
        let body = http.body_framing(&head, false, u64::MAX)?;
        http.set_read_timeout(self.options.timeouts.read);
        Ok((http, body))
    }

    /// Reads from the connection and queues what arrives; `Err` when it is lost.
    fn pump(&mut self, link: &mut Link) -> Result<(), Error> {
        match link {
            Link::Ws(ws) => match ws.recv()? {
                Event::Message(ws::Message::Text(text)) => {
                    self.accept_json(text.as_bytes())?;
                    Ok(())
                }
                Event::Message(ws::Message::Binary(_)) => {
                    Err(Error::InvalidMessage("a binary frame in pushwire.v1 (envelopes are text)".into()))
                }
                Event::Ping(_) | Event::Pong(_) => Ok(()),
                Event::Close(frame) => Err(Error::ClosedByServer(frame)),
            },
            Link::Sse { http, body, parser } => {
                let mut data = Vec::new();
                if !http.read_body(body, &mut data)? {
                    parser.finish();
                    return Err(ended());
                }
                let mut events = Vec::new();
                parser.feed(&data, &mut events).map_err(Error::EventStream)?;
                if let Some(ms) = parser.retry() {
                    self.retry_hint = Some(Duration::from_millis(ms));
                }
                if self.is_multi() {
                    // Each event's data is a labelled envelope (a gap's too); its id is the
                    // composite cursor, kept for `Last-Event-ID`.
                    for event in events {
                        self.accept_json(event.data.as_bytes())?;
                    }
                    if !parser.last_event_id().is_empty() {
                        self.productive = true;
                        self.sse_id = Some(parser.last_event_id().to_string());
                    }
                    return Ok(());
                }
                for event in events {
                    let envelope = sse_envelope(event)?;
                    self.accept(envelope);
                }
                // The opening `id:` line without data: the browser records it, so do we.
                if !parser.last_event_id().is_empty() {
                    let next = Cursor::parse(parser.last_event_id())
                        .map_err(|e| Error::InvalidMessage(format!("an SSE id that is not a cursor: {e}")))?;
                    self.accept(Envelope::Open { next });
                }
                Ok(())
            }
            Link::Stream { http, body, line } => {
                let start = line.len();
                if !http.read_body(body, line)? {
                    return Err(ended());
                }
                let mut from = 0;
                let mut scan = start;
                while let Some(i) = line[scan..].iter().position(|&b| b == b'\n') {
                    let end = scan + i;
                    let json = line[from..end].to_vec();
                    self.accept_json(&json)?;
                    from = end + 1;
                    scan = from;
                }
                line.drain(..from);
                if line.len() > self.encoded_limit() {
                    return Err(Error::InvalidMessage("a stream line over the message limit".into()));
                }
                Ok(())
            }
            Link::Poll(conn) => self.poll(conn),
        }
    }

    /// One short or long poll.
    fn poll(&mut self, conn: &mut Option<HttpConn>) -> Result<(), Error> {
        if let Some(at) = self.next_poll_at.take() {
            std::thread::sleep(at.saturating_duration_since(Instant::now()));
        }
        let mut http = match conn.take().and_then(|mut http| http.is_reusable().then_some(http)) {
            Some(http) => http,
            None => {
                let read = self.options.timeouts.read + self.options.long_poll_wait;
                HttpConn::connect(&self.url, &self.http_options(read, self.encoded_limit() as u64 * 100))?
            }
        };
        let mut add = vec![("mode", self.options.transport.name().to_string())];
        if let Some(since) = self.since_text() {
            add.push(("since", since));
        }
        if self.options.transport == Transport::LongPoll {
            add.push(("wait", self.options.long_poll_wait.as_secs().max(1).to_string()));
        }
        let target = self.target(&add);
        let auth = self.authorization();
        let fields: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
        let response = http.request("GET", &target, &fields, b"")?;
        if response.head.status != 200 {
            return Err(Error::Http { status: response.head.status, reason: response.body_summary() });
        }
        if self.is_multi() {
            let answer = parse_multi_poll_answer(&response.body)?;
            if answer.next.len() != self.channels.len() {
                return Err(Error::InvalidMessage(
                    "a poll answer whose next has the wrong entry count".into(),
                ));
            }
            let had_messages = !answer.messages.is_empty();
            for channel in &answer.gaps {
                let first = answer.messages.iter().find(|(c, _)| c == channel).map(|(_, m)| m.id.before());
                let Some(i) = self.channels.iter().position(|c| c == channel) else { continue };
                let Some(next) = first.or(answer.next[i]) else { continue };
                self.accept_on(Some(i), Envelope::Gap { next });
            }
            let mut delivered = vec![false; self.channels.len()];
            for (channel, msg) in answer.messages {
                if let Some(i) = self.channels.iter().position(|c| *c == channel) {
                    delivered[i] = true;
                    self.accept_on(Some(i), Envelope::Message(msg));
                }
            }
            for (i, next) in answer.next.into_iter().enumerate() {
                if !delivered[i] && next.is_some() {
                    self.cursors[i] = next;
                }
            }
            self.productive = true;
            self.attempt = 0;
            if self.options.transport == Transport::Poll && !had_messages {
                self.next_poll_at = Some(Instant::now() + self.options.poll_interval);
            }
            *conn = Some(http);
            return Ok(());
        }
        let answer = parse_poll_answer(&response.body)?;
        if answer.gap {
            // As in the streaming transports: the client stands just before the oldest
            // message still available.
            let next = answer.messages.first().map_or(answer.next, |m| m.id.before());
            self.accept(Envelope::Gap { next });
        }
        let had_messages = !answer.messages.is_empty();
        for msg in answer.messages {
            self.accept(Envelope::Message(msg));
        }
        if self.cursor.is_none() || !had_messages {
            self.cursor = Some(answer.next);
        }
        self.productive = true;
        self.attempt = 0;
        if self.options.transport == Transport::Poll && !had_messages {
            self.next_poll_at = Some(Instant::now() + self.options.poll_interval);
        }
        *conn = Some(http);
        Ok(())
    }

    /// One JSON envelope (a frame or a line): on several channels, the channel it names.
    fn accept_json(&mut self, json: &[u8]) -> Result<(), Error> {
        if !self.is_multi() {
            let envelope = parse_envelope(json)?;
            self.accept(envelope);
            return Ok(());
        }
        let (channel, envelope) = parse_labelled_envelope(json)?;
        if matches!(envelope, Envelope::Heartbeat | Envelope::Other) {
            return Ok(());
        }
        let i = channel.and_then(|c| self.channels.iter().position(|n| *n == c)).ok_or_else(|| {
            Error::InvalidMessage("an envelope naming no channel of the subscription".into())
        })?;
        self.accept_on(Some(i), envelope);
        Ok(())
    }

    /// Applies one envelope to the cursor, queuing the item it makes, if any.
    fn accept(&mut self, envelope: Envelope) {
        self.accept_on(None, envelope);
    }

    /// Applies one envelope to channel `i`'s cursor (`None`: the single channel's).
    fn accept_on(&mut self, i: Option<usize>, envelope: Envelope) {
        let channel = i.map(|i| self.channels[i].clone());
        let cursor = match i {
            Some(i) => &mut self.cursors[i],
            None => &mut self.cursor,
        };
        match envelope {
            Envelope::Message(Received { id, event, payload }) => {
                self.productive = true;
                match *cursor {
                    // Already returned (replayed after a reconnection, or in flight twice).
                    Some(c) if c.epoch == id.epoch && id.offset <= c.offset => return,
                    // Offsets skipped (or a new epoch) without the server's gap signal.
                    Some(c) if c.epoch != id.epoch || id.offset > c.offset + 1 => {
                        self.ready.push_back(Item::Gap { channel: channel.clone(), next: id.before() });
                    }
                    _ => {}
                }
                *cursor = Some(id);
                self.ready.push_back(Item::Message { channel, id, event, payload });
            }
            Envelope::Gap { next } => {
                self.productive = true;
                *cursor = Some(next);
                self.ready.push_back(Item::Gap { channel, next });
            }
            Envelope::Open { next } => {
                self.productive = true;
                if cursor.is_none() {
                    *cursor = Some(next);
                }
            }
            Envelope::Heartbeat | Envelope::Other => {}
        }
    }
}

impl Iterator for Subscriber {
    type Item = Result<Item, Error>;

    /// The next item; after an error that ends the subscription, `None`.
    fn next(&mut self) -> Option<Result<Item, Error>> {
        if self.finished {
            return None;
        }
        Some(self.recv())
    }
}

/// The server ended a stream that has no normal end.
fn ended() -> Error {
    Error::Io(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the server ended the stream"))
}

/// A non-200 answer as an error, with the first line of its body.
fn refused(http: &mut HttpConn, head: crate::http1::head::ResponseHead) -> Error {
    let mut text = Vec::new();
    if let Ok(mut body) = http.body_framing(&head, false, 4096) {
        while text.len() < 4096 && matches!(http.read_body(&mut body, &mut text), Ok(true)) {}
    }
    let response = super::http::Response { head, body: text };
    Error::Http { status: response.head.status, reason: response.body_summary() }
}

/// One SSE event as an envelope (see [`crate::transport::sse`] for the encoding).
fn sse_envelope(event: crate::sse::Event) -> Result<Envelope, Error> {
    let id = Cursor::parse(&event.last_event_id)
        .map_err(|e| Error::InvalidMessage(format!("an SSE id that is not a cursor: {e}")))?;
    if event.event_type == "gap" {
        return Ok(Envelope::Gap { next: id });
    }
    let name = |n: &str| (n != "message").then(|| n.to_string());
    let (event, payload) = match event.event_type.strip_prefix("b64:") {
        Some(n) => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(event.data.as_bytes())
                .map_err(|_| Error::InvalidMessage("a b64: event whose data is not base64".into()))?;
            (name(n), Payload::Binary(bytes))
        }
        None => (name(&event.event_type), Payload::Text(event.data)),
    };
    Ok(Envelope::Message(Received { id, event, payload }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_full_jitter_stays_under_the_exponential_ceiling() {
        let b = Backoff { base: Duration::from_millis(100), cap: Duration::from_secs(1) };
        assert_eq!(b.ceiling(0), Duration::from_millis(100));
        assert_eq!(b.ceiling(3), Duration::from_millis(800));
        assert_eq!(b.ceiling(4), Duration::from_secs(1));
        assert_eq!(b.ceiling(u32::MAX), Duration::from_secs(1));
        assert_eq!(b.delay(2, 0.0), Duration::ZERO);
        assert_eq!(b.delay(2, 0.5), Duration::from_millis(200));
        assert!(b.delay(9, 0.999_999) <= Duration::from_secs(1));
    }

    /// A subscriber that never connected, at `since`, to drive [`Subscriber::accept`].
    fn detached(since: Option<Cursor>) -> Subscriber {
        let url = Url::parse("http://127.0.0.1:1/channels/c").unwrap();
        Subscriber::unconnected(url, SubscribeOptions { since, ..SubscribeOptions::default() })
    }

    fn msg(epoch: u64, offset: u64) -> Envelope {
        let id = Cursor { epoch: crate::hub::Epoch(epoch), offset };
        Envelope::Message(Received { id, event: None, payload: Payload::Text(offset.to_string()) })
    }

    fn offsets(sub: &mut Subscriber) -> Vec<(bool, u64)> {
        sub.ready
            .drain(..)
            .map(|item| match item {
                Item::Message { id, .. } => (false, id.offset),
                Item::Gap { next, .. } => (true, next.offset),
            })
            .collect()
    }

    #[test]
    fn messages_at_or_before_the_cursor_are_skipped_and_holes_are_gaps() {
        let mut sub = detached(Some(Cursor { epoch: crate::hub::Epoch(1), offset: 2 }));
        for envelope in [msg(1, 1), msg(1, 2), msg(1, 3), msg(1, 3), msg(1, 4), msg(1, 2)] {
            sub.accept(envelope);
        }
        assert_eq!(offsets(&mut sub), [(false, 3), (false, 4)]);
        // A hole, or another epoch, without the server's signal: a made-up gap first.
        sub.accept(msg(1, 7));
        sub.accept(msg(2, 1));
        assert_eq!(offsets(&mut sub), [(true, 6), (false, 7), (true, 0), (false, 1)]);
        // The server's own gap moves the cursor; an open does not once there is one.
        sub.accept(Envelope::Gap { next: Cursor { epoch: crate::hub::Epoch(3), offset: 5 } });
        sub.accept(Envelope::Open { next: Cursor { epoch: crate::hub::Epoch(3), offset: 9 } });
        sub.accept(msg(3, 6));
        assert_eq!(offsets(&mut sub), [(true, 5), (false, 6)]);
    }

    #[test]
    fn the_opening_cursor_starts_a_subscription_from_now() {
        let mut sub = detached(None);
        sub.accept(Envelope::Open { next: Cursor { epoch: crate::hub::Epoch(1), offset: 4 } });
        sub.accept(msg(1, 4));
        sub.accept(msg(1, 5));
        assert_eq!(offsets(&mut sub), [(false, 5)]);
        assert!(sub.productive);
    }

    #[test]
    fn transports_parse_by_mode_name() {
        for t in
            [Transport::WebSocket, Transport::Sse, Transport::LongPoll, Transport::Poll, Transport::Stream]
        {
            assert_eq!(Transport::parse(t.name()), Some(t));
        }
        assert_eq!(Transport::parse("carrier-pigeon"), None);
    }

    #[test]
    fn html_sse_events_map_to_envelopes() {
        let event = |t: &str, data: &str| crate::sse::Event {
            event_type: t.into(),
            data: data.into(),
            last_event_id: "00000000000000ab:2".into(),
        };
        let id = Cursor::parse("00000000000000ab:2").unwrap();
        assert_eq!(
            sse_envelope(event("message", "hi")).unwrap(),
            Envelope::Message(Received { id, event: None, payload: Payload::Text("hi".into()) })
        );
        assert_eq!(
            sse_envelope(event("b64:tick", "AAE=")).unwrap(),
            Envelope::Message(Received {
                id,
                event: Some("tick".into()),
                payload: Payload::Binary(vec![0, 1])
            })
        );
        assert_eq!(sse_envelope(event("gap", "{}")).unwrap(), Envelope::Gap { next: id });
    }
}
