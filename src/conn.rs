//! One TCP connection's life, the same for every transport: read a request head, maybe a body,
//! route it, answer it, and either read the next request (keep-alive, pipelining) or close.
//!
//! Implements: HTTP/1.1 connection management ([RFC 9112 §9](https://www.rfc-editor.org/rfc/rfc9112#section-9)):
//! persistence and pipelining (§9.3), closing after an error that leaves the stream unframed,
//! a graceful close that stops writing first and discards input for a while (§9.6), the
//! request deadline (slowloris) and the keep-alive idle timeout; `Expect: 100-continue`
//! (RFC 9110 §10.1.1).
//!
//! The connection is sans-I/O. The event loop calls, in any order:
//! - [`Conn::handle_input`] with bytes read, [`Conn::handle_eof`] when the peer stops sending;
//! - [`Conn::poll_command`] until `None`, applying each [`Command`] to the hub and passing any
//!   [`Reply`] back with [`Conn::handle_reply`];
//! - [`Conn::handle_timeout`] once [`Conn::poll_timeout`] has passed;
//! - [`Conn::pending_output`] / [`Conn::consume_output`] to write; [`Conn::wants_read`],
//!   [`Conn::wants_write_shutdown`] and [`Conn::is_closed`] to know what to do with the socket.
//!
//! Does not: touch sockets, read the clock (`now` comes in), or draw randomness.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::http1::body::BodyReader;
use crate::http1::head::{leading_empty_lines, parse_request_head, HeadScanner, Headers, RequestHead};
use crate::http1::response::{write_full, write_head, Framing};
use crate::http1::Error as HttpError;
use crate::hub::presence::PresenceEvent;
use crate::hub::{ChannelName, Command, Message, Reply};
use crate::metrics::{Metrics, Transport};
use crate::output::{Cork, Output};
use crate::protocol::envelope::write_json_string;
use crate::transport::channels::{MultiPoll, MultiStream, StreamKind};
use crate::transport::endpoint::{self, Answer, Endpoint};
use crate::transport::long_poll::LongPollSession;
use crate::transport::session::HeldChannels;
use crate::transport::sse::SseSession;
use crate::transport::stream::StreamSession;
use crate::transport::token::UnixClock;
use crate::transport::websocket::WsSession;
use crate::transport::{
    publish, route_request, with_cors, CloseReason, CommandQueue, Ctx, Flow, InputPolicy, Refused, Route,
    Session,
};
use crate::ws::deflate::SharedCodec;

/// How a response must be written.
#[derive(Debug, Clone, Copy)]
struct AnswerTo {
    /// Keep the connection for another request afterwards.
    keep_alive: bool,
    /// A HEAD request: fields only, no content (RFC 9110 §9.3.2).
    head_only: bool,
}

/// A request whose body is being read.
#[derive(Debug)]
struct BodyState {
    request: Request,
    reader: BodyReader,
    body: Vec<u8>,
    /// When the request's first byte arrived.
    started: Instant,
}

/// What the response to the current request needs to remember.
#[derive(Debug)]
struct Request {
    route: Route,
    /// The body is a text message (publish only).
    text: bool,
    to: AnswerTo,
    /// A server API call waiting for several replies (see [`Collect`]).
    collect: Option<Collect>,
}

/// The replies a server API call has received so far; it is answered once `expected` are in.
#[derive(Debug)]
struct Collect {
    pending: crate::transport::api::Pending,
    replies: Vec<Reply>,
    expected: usize,
}

/// Where the connection is in its life.
#[derive(Debug)]
enum Phase {
    /// Reading a request head (RFC 9112 §2–§5).
    /// Accepts: input, EOF, the request or idle deadline. Next: ReadingBody, Awaiting, or
    /// Closing after an error.
    ReadingHead {
        scanner: HeadScanner,
        /// While `idle`, when the connection became idle (accepted, or a response finished);
        /// then when the first byte of this request arrived.
        since: Instant,
        /// No byte of a request has arrived yet.
        idle: bool,
    },
    /// Reading a request body (RFC 9112 §6).
    /// Accepts: input, EOF, the request deadline. Next: Awaiting, or Closing on error.
    /// (Boxed, like `Awaiting`'s request: rare, short states, so that every connection,
    /// idle ones included, is no larger than its common states need.)
    ReadingBody(Box<BodyState>),
    /// Waiting for the hub's reply to a queued command; further input is only buffered.
    /// Next: ReadingHead (keep-alive) or Closing.
    Awaiting { request: Box<Request> },
    /// A transport owns the connection (a parked long poll, an event stream, a chunked stream).
    /// Accepts: hub replies and deliveries, the session's deadlines, output drained, EOF.
    /// Next: ReadingHead when a poll response completes on keep-alive; Closing on error, EOF
    /// or slow consumer.
    /// (Counted under its transport in the metrics while here: see [`Conn::set_phase`].)
    /// (How its response is answered is [`Conn`]'s `serving_to`, beside the phase: the enum
    /// then needs no room for it.)
    Serving { session: Session },
    /// Output is flushed, then the write side shut; input is discarded until EOF or
    /// `deadline` (RFC 9112 §9.6). Next: Closed.
    Closing { deadline: Instant },
    /// Done; the event loop drops the connection.
    Closed,
}

impl Phase {
    /// Waiting for a request, idle since `now`.
    fn idle(now: Instant) -> Phase {
        Phase::ReadingHead { scanner: HeadScanner::new(), since: now, idle: true }
    }
}

/// What every connection of a server shares: its configuration and counters. One pointer in
/// each [`Conn`]: an event loop makes one for all its connections ([`Conn::with_env`]).
#[derive(Debug)]
pub struct ConnEnv {
    /// The validated configuration.
    pub config: Arc<Config>,
    /// Server-wide counters.
    pub metrics: Arc<Metrics>,
    /// The loop's permessage-deflate compressor and decompressor, lent to the WebSocket
    /// connection being served (reset per message: connections hold no zlib state).
    pub deflate: SharedCodec,
    /// Wall-clock seconds for token expiries; `None` (tests): the Unix time reads 0.
    pub unix_clock: Option<UnixClock>,
    /// Keep each refusal (an HTTP error answered, a command refused) for the loop to log
    /// ([`Conn::poll_refused`]); off unless its log line is enabled.
    pub record_refusals: bool,
}

impl ConnEnv {
    /// The environment of one event loop.
    pub fn new(config: Arc<Config>, metrics: Arc<Metrics>) -> ConnEnv {
        let deflate = SharedCodec::new(config.websocket.deflate_min_bytes);
        ConnEnv { config, metrics, deflate, unix_clock: None, record_refusals: false }
    }

    /// The environment, keeping refusals for the loop's log when `record` is set.
    pub fn with_refusals_recorded(mut self, record: bool) -> ConnEnv {
        self.record_refusals = record;
        self
    }

    /// The environment with the wall clock the I/O layer read (see [`UnixClock`]).
    pub fn with_unix_clock(mut self, clock: UnixClock) -> ConnEnv {
        self.unix_clock = Some(clock);
        self
    }

    /// Seconds since the Unix epoch at `now`.
    pub fn unix_now_s(&self, now: Instant) -> u64 {
        self.unix_clock.map_or(0, |c| c.unix_s(now))
    }
}

/// One TCP connection, sans-I/O.
#[derive(Debug)]
pub struct Conn {
    env: Arc<ConnEnv>,
    phase: Phase,
    out: Output,
    commands: CommandQueue,
    /// True until the first request has been answered (a new connection gets the shorter
    /// request timeout as its idle limit).
    first_request: bool,
    /// How the response of a `Serving` phase is answered (meaningless in other phases).
    serving_to: AnswerTo,
    /// The peer will send nothing more.
    peer_eof: bool,
    /// State few connections have (buffered input, a cross-origin request, a shutdown), out of
    /// line; `None` when it would be all empty.
    rare: Option<Box<Rare>>,
    /// The drain has begun: no more keep-alive.
    draining: bool,
    close_reason: Option<CloseReason>,
}

/// What only some connections need, kept out of line so that every connection, idle ones
/// included, does not carry it.
#[derive(Debug, Default)]
struct Rare {
    /// The current request's allowed cross-origin `Origin`, named in CORS fields.
    cors_origin: Option<Box<str>>,
    /// When the server, shutting down, ends this connection (graceful drain).
    drain_at: Option<Instant>,
    /// Input not yet consumed: empty unless a head or body is incomplete or requests are
    /// pipelined behind one being answered.
    inbuf: Vec<u8>,
    /// Refusals not yet taken by the loop ([`Conn::poll_refused`]), oldest first; recorded
    /// only when [`ConnEnv::record_refusals`] is set.
    refused: std::collections::VecDeque<Refused>,
    /// The user id (`sub`) of the last request's valid signed token, which the server API's
    /// `disconnect` by user matches.
    user: Option<Box<str>>,
    /// When the signed token that admitted the current request's subscription expires: a
    /// session still serving then is ended (`Session::handle_token_expired`).
    token_expires_at: Option<Instant>,
    /// The channels of a multi-channel session that ended by closing: the loop ends the
    /// subscriptions it recorded for them when it removes the connection
    /// ([`Conn::for_each_held_channel`]).
    held: Option<HeldChannels>,
}

impl Rare {
    fn is_empty(&self) -> bool {
        self.cors_origin.is_none()
            && self.drain_at.is_none()
            && self.inbuf.is_empty()
            && self.refused.is_empty()
            && self.user.is_none()
            && self.token_expires_at.is_none()
            && self.held.is_none()
    }
}

/// The current request's allowed cross-origin `Origin`, if any (a function of the field, so
/// that it can be borrowed beside the connection's other fields).
fn cors_origin(rare: &Option<Box<Rare>>) -> Option<&str> {
    rare.as_deref()?.cors_origin.as_deref()
}

impl Conn {
    /// A connection accepted at `now`.
    pub fn new(config: Arc<Config>, metrics: Arc<Metrics>, now: Instant) -> Self {
        Self::with_env(Arc::new(ConnEnv::new(config, metrics)), now)
    }

    /// A connection accepted at `now`, sharing `env` with the other connections of its loop
    /// (what a server uses: [`Conn::new`] allocates an environment for each connection).
    pub fn with_env(env: Arc<ConnEnv>, now: Instant) -> Self {
        Conn {
            env,
            phase: Phase::idle(now),
            out: Output::new(),
            commands: CommandQueue::default(),
            first_request: true,
            serving_to: AnswerTo { keep_alive: false, head_only: false },
            peer_eof: false,
            rare: None,
            draining: false,
            close_reason: None,
        }
    }

    /// Feeds bytes read from the socket. They may be changed in place (a WebSocket session
    /// unmasks whole frames where they lie instead of copying them). Then call
    /// [`Conn::poll_command`].
    pub fn handle_input(&mut self, data: &mut [u8], now: Instant) {
        match &self.phase {
            Phase::Closing { .. } | Phase::Closed => return, // RFC 9112 §9.6: discarded.
            // An event stream or chunked stream reads nothing more from its client.
            Phase::Serving { session, .. } if session.input_policy() == InputPolicy::Discard => return,
            _ => {}
        }
        if !self.has_input() {
            let used = self.process(data, now);
            if used < data.len() {
                // Bounded: the loop reads only while `wants_read`, one read chunk at a time.
                self.rare.get_or_insert_default().inbuf.extend_from_slice(&data[used..]);
            }
        } else {
            self.rare.get_or_insert_default().inbuf.extend_from_slice(data);
            self.process_buffered(now);
        }
    }

    /// The peer closed its sending side (read returned 0).
    pub fn handle_eof(&mut self, now: Instant) {
        self.peer_eof = true;
        match &self.phase {
            Phase::Closing { .. } | Phase::Closed => {
                self.set_phase(Phase::Closed);
            }
            // A request being answered still gets its answer; the connection closes after.
            Phase::Awaiting { .. } => {}
            // A parked poll or a stream whose client left: forget it (RFC 6202 §2.2).
            Phase::Serving { .. } => {
                self.close_reason = Some(CloseReason::PeerClosed);
                self.set_phase(Phase::Closed);
            }
            // Nothing (or only part of a request) was sent: there is nothing to answer.
            Phase::ReadingHead { .. } | Phase::ReadingBody(_) => {
                self.close_reason.get_or_insert(CloseReason::PeerClosed);
                self.begin_closing(now);
            }
        }
    }

    /// True when commands wait to be polled.
    pub fn has_commands(&self) -> bool {
        !self.commands.is_empty()
    }

    /// The next hub command to apply, if any.
    pub fn poll_command(&mut self) -> Option<Command> {
        // The queue releases its allocation once empty: an idle connection holds none.
        self.commands.pop_front()
    }

    /// The next hub command, left queued: the loop holds back an `Unsubscribe` (and what
    /// follows it) while the answer to its channel's `Subscribe` is still to come
    /// ([`crate::fanout::pump`]).
    pub fn peek_command(&self) -> Option<&Command> {
        self.commands.front()
    }

    /// True when an `Unsubscribe` of `channel` is queued (not yet polled).
    pub fn has_queued_unsubscribe(&self, channel: &ChannelName) -> bool {
        self.commands.iter().any(|c| is_unsubscribe(c, channel))
    }

    /// Takes the first queued `Unsubscribe` of `channel` out of the queue, unsent: the
    /// subscription it ends was refused, so there is nothing to end. False when none is queued.
    pub fn drop_queued_unsubscribe(&mut self, channel: &ChannelName) -> bool {
        self.commands.remove_first(|c| is_unsubscribe(c, channel)).is_some()
    }

    /// The hub's reply to the last command polled. Then call [`Conn::poll_command`] again:
    /// pipelined requests may queue more.
    pub fn handle_reply(&mut self, reply: Reply, now: Instant) {
        match &mut self.phase {
            Phase::Awaiting { request } if request.collect.is_some() => {
                let collect = request.collect.as_mut().expect("checked");
                collect.replies.push(reply);
                if collect.replies.len() < collect.expected {
                    return;
                }
                let Phase::Awaiting { request } = self.set_phase(Phase::Closed) else { unreachable!() };
                let Collect { pending, replies, .. } = request.collect.expect("checked");
                let answer = endpoint::answer_api(pending, replies, &self.env.metrics);
                self.send_answer(request.to, answer, now);
            }
            Phase::Awaiting { .. } => {
                let Phase::Awaiting { request } = self.set_phase(Phase::Closed) else { unreachable!() };
                self.answer(request.to, reply, now)
            }
            Phase::Serving { .. } => {
                let to = self.serving_to;
                match reply {
                    Reply::Subscribed { channel, replay: Ok(replay), .. } => {
                        self.drive(now, |s, ctx| s.handle_subscribed(channel, replay, ctx))
                    }
                    Reply::Read(Ok(replay)) => self.drive(now, |s, ctx| s.handle_read(replay, ctx)),
                    // The hub refused: a session that has not written anything yet is answered
                    // with an HTTP error; one that has (a WebSocket's 101, a stream's head) ends
                    // in its own format.
                    Reply::Presence { channel, result: Ok(list) } => {
                        self.drive(now, |s, ctx| s.handle_presence_list(channel, list, ctx))
                    }
                    Reply::Subscribed { replay: Err(e), .. }
                    | Reply::Presence { result: Err(e), .. }
                    | Reply::Read(Err(e))
                    | Reply::Published(Err(e)) => {
                        self.note_refused(Some(e.status_hint()), &e.to_string());
                        let mut ended = false;
                        self.drive(now, |s, ctx| match s.handle_refused(e, ctx) {
                            Some(flow) => {
                                ended = true;
                                flow
                            }
                            None => Flow::Continue,
                        });
                        if !ended {
                            self.respond_error_noted(to, e.status_hint(), &[], &e.to_string(), now)
                        }
                    }
                    Reply::Published(Ok(id)) => self.drive(now, |s, ctx| s.handle_published(id, ctx)),
                    Reply::Stats(_)
                    | Reply::Ready(_)
                    | Reply::Info { .. }
                    | Reply::Channels(_)
                    | Reply::Sent(_) => {}
                }
            }
            // Replies for a connection already closing are dropped.
            _ => {}
        }
        // Requests pipelined behind this one were only buffered while it was answered.
        if self.has_input() {
            self.process_buffered(now);
        }
    }

    /// A live message on a channel this connection is subscribed to.
    pub fn handle_delivery(&mut self, msg: &Arc<Message>, now: Instant) {
        self.drive(now, |s, ctx| s.handle_delivery(msg, ctx));
    }

    /// A presence member joined or left a channel this connection asked join and leave events
    /// of.
    pub fn handle_presence(&mut self, event: &PresenceEvent, now: Instant) {
        self.drive(now, |s, ctx| s.handle_presence(event, ctx));
    }

    /// Calls `f` with every channel this connection's multi-channel session may hold a
    /// subscription to, with its transport: while it serves, and after it ended by closing.
    /// The loop records only a connection's first subscription in its slot; it finds the
    /// others here ([`crate::fanout::Fanout::remove_conn`]), so it keeps no list of them.
    pub fn for_each_held_channel(&self, mut f: impl FnMut(&ChannelName, crate::protocol::Transport)) {
        match &self.phase {
            Phase::Serving { session } => session.for_each_held_channel(f),
            _ => {
                if let Some(held) = self.rare.as_deref().and_then(|r| r.held.as_ref()) {
                    held.channels.iter().for_each(|c| f(c, held.transport));
                }
            }
        }
    }

    /// True when this connection's session (serving, or ended by closing) is one whose
    /// channels [`Conn::for_each_held_channel`] names, also when it names none now: a
    /// multi-channel stream or long poll, a command-mode WebSocket.
    pub fn names_channels(&self) -> bool {
        match &self.phase {
            Phase::Serving { session } => session.names_channels_as().is_some(),
            _ => self.rare.as_deref().is_some_and(|r| r.held.is_some()),
        }
    }

    /// True when [`Conn::for_each_held_channel`] names `channel`.
    pub fn holds_channel(&self, channel: &ChannelName) -> bool {
        let mut held = false;
        self.for_each_held_channel(|c, _| held |= c == channel);
        held
    }

    /// The user id of the last request's valid signed token (its `sub`), if any.
    pub fn user(&self) -> Option<&str> {
        self.rare.as_deref()?.user.as_deref()
    }

    /// The server API disconnects this connection: a session ends in its own way (a
    /// WebSocket closes with `code` and `reason`, a stream or parked poll ends its response)
    /// and the connection closes; an idle one closes; a request being read or answered
    /// finishes first, with `Connection: close`.
    pub fn handle_disconnect(&mut self, code: u16, reason: &str, now: Instant) {
        match &self.phase {
            Phase::Serving { .. } => {
                self.serving_to.keep_alive = false;
                self.close_reason.get_or_insert(CloseReason::Disconnected);
                self.drive(now, |s, ctx| s.handle_disconnect(code, reason, ctx));
            }
            Phase::ReadingHead { idle: true, .. } => {
                self.close_reason.get_or_insert(CloseReason::Disconnected);
                self.begin_closing(now);
            }
            Phase::ReadingHead { .. } | Phase::ReadingBody(_) | Phase::Awaiting { .. } => {
                self.close_reason.get_or_insert(CloseReason::Disconnected);
                self.draining = true;
            }
            Phase::Closing { .. } | Phase::Closed => {}
        }
    }

    /// The server API unsubscribes this connection from `channel` (a command-mode WebSocket
    /// leaves it with a notice; see `Session::handle_unsubscribe`).
    pub fn handle_unsubscribe(&mut self, channel: &crate::hub::ChannelName, reason: &str, now: Instant) {
        self.drive(now, |s, ctx| s.handle_unsubscribe(channel, reason, ctx));
    }

    /// Records the user id of the current request's signed token (`None`: none).
    fn set_user(&mut self, user: Option<Box<str>>) {
        match (&mut self.rare, user) {
            (None, None) => {}
            (Some(rare), user) => {
                rare.user = user;
                if rare.is_empty() {
                    self.rare = None;
                }
            }
            (None, user) => self.rare = Some(Box::new(Rare { user, ..Rare::default() })),
        }
    }

    /// Records when the signed token that admitted the current request expires (`None`: no
    /// such token).
    fn set_token_expiry(&mut self, at: Option<Instant>) {
        match (&mut self.rare, at) {
            (None, None) => {}
            (Some(rare), at) => {
                rare.token_expires_at = at;
                if rare.is_empty() {
                    self.rare = None;
                }
            }
            (None, at) => self.rare = Some(Box::new(Rare { token_expires_at: at, ..Rare::default() })),
        }
    }

    /// When a session's token expires, while one serves.
    fn token_expiry(&self) -> Option<Instant> {
        match self.phase {
            Phase::Serving { .. } => self.rare.as_deref()?.token_expires_at,
            _ => None,
        }
    }

    /// The server is shutting down: at `at` (spread over the drain period by the loop, so
    /// clients do not all reconnect at once) the connection ends its response or stream and
    /// closes.
    pub fn begin_drain(&mut self, at: Instant) {
        self.rare.get_or_insert_default().drain_at = Some(at);
    }

    /// True when input waits in the buffer.
    fn has_input(&self) -> bool {
        self.rare.as_deref().is_some_and(|r| !r.inbuf.is_empty())
    }

    fn drain_at(&self) -> Option<Instant> {
        self.rare.as_deref()?.drain_at
    }

    /// Sets the current request's allowed cross-origin `Origin` (`None`: not cross-origin).
    fn set_cors_origin(&mut self, origin: Option<Box<str>>) {
        match (&mut self.rare, origin) {
            (None, None) => {}
            (Some(rare), origin) => {
                rare.cors_origin = origin;
                if rare.is_empty() {
                    self.rare = None;
                }
            }
            (None, origin) => self.rare = Some(Box::new(Rare { cors_origin: origin, ..Rare::default() })),
        }
    }

    /// When [`Conn::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let own = match (self.phase_timeout(), self.token_expiry()) {
            (Some(t), Some(e)) => Some(t.min(e)),
            (t, e) => t.or(e),
        };
        match (own, self.drain_at()) {
            (Some(t), Some(d)) if !self.draining => Some(t.min(d)),
            (None, Some(d)) if !self.draining => Some(d),
            _ => own,
        }
    }

    fn phase_timeout(&self) -> Option<Instant> {
        let http = &self.env.config.http;
        match &self.phase {
            Phase::ReadingHead { since, idle: false, .. } => Some(*since + http.request_timeout),
            Phase::ReadingBody(state) => Some(state.started + http.request_timeout),
            Phase::ReadingHead { since, idle: true, .. } => {
                Some(*since + if self.first_request { http.request_timeout } else { http.keep_alive_timeout })
            }
            Phase::Serving { session, .. } => session.poll_timeout(&self.env.config),
            Phase::Awaiting { .. } | Phase::Closed => None,
            Phase::Closing { deadline } => Some(*deadline),
        }
    }

    /// Acts on a passed deadline (a call before it is harmless).
    pub fn handle_timeout(&mut self, now: Instant) {
        if !self.draining && self.drain_at().is_some_and(|d| now >= d) {
            return self.drain(now);
        }
        if self.token_expiry().is_some_and(|e| now >= e) {
            return self.token_expired(now);
        }
        if self.phase_timeout().is_none_or(|t| now < t) {
            return;
        }
        match &self.phase {
            // RFC 9110 §15.5.9: 408 means the server would like to close this unused
            // connection; a slow sender gets it and the connection closes (slowloris).
            Phase::ReadingHead { idle: false, .. } | Phase::ReadingBody(_) => {
                self.fail_request(&HttpError::RequestTimeout, now)
            }
            // RFC 9112 §9.5: a server can close an idle connection at any time.
            Phase::ReadingHead { idle: true, .. } => {
                self.close_reason = Some(CloseReason::Idle);
                self.begin_closing(now);
            }
            Phase::Serving { .. } => self.drive(now, |s, ctx| s.handle_timeout(ctx)),
            Phase::Closing { .. } => {
                self.set_phase(Phase::Closed);
            }
            Phase::Awaiting { .. } | Phase::Closed => {}
        }
    }

    /// The signed token that admitted the serving session expired: the session ends in its
    /// own way (README "Signed tokens"), counted by transport.
    fn token_expired(&mut self, now: Instant) {
        self.set_token_expiry(None);
        let Some(transport) = self.transport() else { return };
        let mut ended = false;
        self.drive(now, |s, ctx| {
            let (did_end, flow) = s.handle_token_expired(ctx);
            ended = did_end;
            flow
        });
        if ended {
            self.env.metrics.token_expired(transport);
        }
    }

    /// The transport serving this connection, once one does (for logs and metrics).
    pub fn transport(&self) -> Option<Transport> {
        match &self.phase {
            Phase::Serving { session, .. } => Some(session.transport()),
            _ => None,
        }
    }

    /// Bytes waiting to be written.
    pub fn pending_output(&self) -> &Output {
        &self.out
    }

    /// Lends the loop's spare output buffers to this connection if its output holds none, so
    /// what it writes next needs no allocation. Next: feed input, write, [`Conn::reclaim_output`].
    pub fn lend_output(&mut self, cork: &mut Cork) {
        cork.lend(&mut self.out);
    }

    /// Gives output buffers back to the loop once everything was written: an idle connection
    /// holds no write buffer. Output still queued stays.
    pub fn reclaim_output(&mut self, cork: &mut Cork) {
        cork.reclaim(&mut self.out);
    }

    /// Reports that `n` bytes of [`Conn::pending_output`] were written. Writing can unblock
    /// reading (see [`Conn::wants_read`]).
    pub fn consume_output(&mut self, n: usize, now: Instant) {
        self.out.consume(n);
        if matches!(self.phase, Phase::Serving { .. }) {
            self.drive(now, |s, ctx| {
                s.handle_drained(ctx);
                Flow::Continue
            });
        }
        if self.has_input() && self.accepts_input() {
            self.process_buffered(now);
        }
    }

    /// True while the loop should read from the socket. False while too much output is queued
    /// (the peer must read first) or too much input is buffered.
    pub fn wants_read(&self) -> bool {
        match self.phase {
            Phase::Closed => false,
            Phase::Closing { .. } => true,
            _ => !self.peer_eof && self.accepts_input(),
        }
    }

    /// True when all output is written and the connection is closing: the loop shuts down the
    /// socket's write side (once) and keeps reading until EOF or the deadline (RFC 9112 §9.6).
    pub fn wants_write_shutdown(&self) -> bool {
        matches!(self.phase, Phase::Closing { .. }) && self.out.is_empty()
    }

    /// True when the loop should drop the connection.
    pub fn is_closed(&self) -> bool {
        matches!(self.phase, Phase::Closed)
    }

    /// Why the connection is closing, for logs.
    pub fn close_reason(&self) -> Option<&'static str> {
        self.close_reason.map(CloseReason::as_str)
    }

    /// The oldest refusal not yet taken, for the loop's log line (recorded only when the
    /// environment's [`ConnEnv::record_refusals`] is set). Call until `None` after handing
    /// the connection input, replies or timeouts.
    pub fn poll_refused(&mut self) -> Option<Refused> {
        let rare = self.rare.as_deref_mut()?;
        let refused = rare.refused.pop_front();
        if rare.is_empty() {
            self.rare = None;
        }
        refused
    }

    fn note_refused(&mut self, status: Option<u16>, reason: &str) {
        if self.env.record_refusals {
            let refused = Refused { status, reason: reason.to_owned() };
            self.rare.get_or_insert_default().refused.push_back(refused);
        }
    }

    fn accepts_input(&self) -> bool {
        let http = &self.env.config.http;
        self.out.len_bytes() < self.env.config.transport.max_send_buffer_bytes
            && (self.rare.as_ref().map_or(0, |r| r.inbuf.len()) as u64)
                < http.max_head_bytes as u64 + http.max_body_bytes
    }

    fn process_buffered(&mut self, now: Instant) {
        let Some(rare) = &mut self.rare else { return };
        let mut buf = std::mem::take(&mut rare.inbuf);
        if buf.is_empty() {
            return;
        }
        let used = self.process(&mut buf, now);
        // All used (or a closing connection's input, discarded): the allocation is released, an
        // idle connection holds no read buffer.
        if used < buf.len() && !matches!(self.phase, Phase::Closing { .. } | Phase::Closed) {
            buf.drain(..used);
            self.rare.get_or_insert_default().inbuf = buf;
        } else if self.rare.as_deref().is_some_and(Rare::is_empty) {
            self.rare = None;
        }
    }

    /// Runs the request state machine over `input`; returns how many bytes it used.
    fn process(&mut self, input: &mut [u8], now: Instant) -> usize {
        let mut pos = 0;
        loop {
            if !self.accepts_input() {
                return pos;
            }
            match &mut self.phase {
                Phase::ReadingHead { scanner, since, idle } => {
                    if *idle {
                        // RFC 9112 §2.2: a server SHOULD ignore at least one empty line
                        // received prior to the request-line.
                        pos += leading_empty_lines(&input[pos..]);
                        if pos == input.len() {
                            return pos;
                        }
                        *since = now;
                        *idle = false;
                    }
                    match scanner.scan(&input[pos..], &self.env.config.http) {
                        Ok(None) => return pos,
                        Ok(Some(len)) => {
                            let head = &input[pos..pos + len];
                            pos += len;
                            self.start_request(head, now);
                        }
                        Err(e) => {
                            self.fail_request(&e, now);
                            return input.len();
                        }
                    }
                }
                Phase::ReadingBody(state) => match state.reader.read(&input[pos..], &mut state.body) {
                    Ok(progress) => {
                        pos += progress.consumed;
                        if !progress.done {
                            return pos;
                        }
                        let Phase::ReadingBody(state) = self.set_phase(Phase::Closed) else { unreachable!() };
                        self.dispatch(state.request, state.body, now);
                    }
                    Err(e) => {
                        self.fail_request(&e, now);
                        return input.len();
                    }
                },
                Phase::Serving { session, .. } if session.input_policy() == InputPolicy::Session => {
                    let input = &mut input[pos..];
                    let len = input.len();
                    self.drive(now, |s, ctx| s.handle_input(input, ctx));
                    return pos + len;
                }
                Phase::Awaiting { .. } | Phase::Serving { .. } => return pos,
                Phase::Closing { .. } | Phase::Closed => return input.len(),
            }
        }
    }

    /// A complete head arrived: check framing, route, then read the body or dispatch.
    fn start_request(&mut self, head_bytes: &[u8], now: Instant) {
        self.set_cors_origin(None);
        let head = match parse_request_head(head_bytes, &self.env.config.http) {
            Ok(head) => head,
            Err(e) => return self.fail_request(&e, now),
        };
        // Routed once, with the access verdict: an allowed cross-origin request is answered
        // (refused or not) with CORS fields naming its origin.
        let routed = route_request(&head, &self.env.config, self.env.unix_now_s(now));
        // Whose connection this is, for the server API's `disconnect` by user: the `sub` of a
        // valid signed token, on any transport.
        let access = &self.env.config.access;
        let user = match (&access.token_key, crate::http1::target::Target::parse(&head.target)) {
            (Some(_), Some(target)) => access
                .connection_token(&head, &target, self.env.unix_now_s(now))
                .ok()
                .flatten()
                .and_then(|claims| claims.user),
            _ => None,
        };
        self.set_user(user);
        let unix_now_s = self.env.unix_now_s(now);
        let expiry =
            routed.token_expires_at.map(|at| now + Duration::from_secs(at.saturating_sub(unix_now_s)));
        self.set_token_expiry(expiry);
        self.set_cors_origin(routed.cors_origin.map(String::into_boxed_str));
        // Framing first: if the body's length is unknown, the stream cannot be trusted and
        // the connection closes after the answer.
        // A server API request's body has the API's own bound (checked from the framing,
        // before it is read).
        let api_http;
        let http = match &routed.route {
            Ok(Route::Api(_)) => {
                let max_body_bytes = self.env.config.api.limits.max_body_bytes;
                api_http = crate::http1::Limits { max_body_bytes, ..self.env.config.http.clone() };
                &api_http
            }
            _ => &self.env.config.http,
        };
        let reader = match BodyReader::for_request(&head, http) {
            Ok(reader) => reader,
            Err(e) => return self.fail_request(&e, now),
        };
        let to = AnswerTo { keep_alive: head.keep_alive(), head_only: head.method == "HEAD" };
        let route = match routed.route {
            Ok(route) => route,
            Err(refusal) => {
                if let Some(reason) = refusal.token_reason() {
                    self.env.metrics.token_refused(reason);
                }
                // A refused request with a body leaves unread bytes: close after answering.
                let to = AnswerTo { keep_alive: to.keep_alive && !reader.expects_body(), ..to };
                return self.respond_error(to, refusal.status(), refusal.headers(), refusal.reason(), now);
            }
        };
        let request = Request { text: publish::is_text(&head), route, to, collect: None };
        if reader.expects_body() {
            if expects_continue(&head) {
                // RFC 9110 §10.1.1: a server that receives 100-continue SHOULD send an
                // interim 100 response if it intends to read the content.
                let mut interim = Vec::new();
                write_head(&mut interim, 100, &[], Framing::None, false);
                self.out.push_owned(interim);
            }
            self.set_phase(Phase::ReadingBody(Box::new(BodyState {
                request,
                reader,
                body: Vec::new(),
                started: now,
            })));
        } else {
            self.dispatch(request, Vec::new(), now);
        }
    }

    /// Answers a request that waited for the hub.
    fn answer(&mut self, to: AnswerTo, reply: Reply, now: Instant) {
        let answer = endpoint::answer_reply(reply, &self.env.metrics);
        self.send_answer(to, answer, now);
    }

    /// Writes an endpoint's complete answer.
    fn send_answer(&mut self, to: AnswerTo, answer: Answer, now: Instant) {
        match answer {
            Answer::Full { status, fields, body } => {
                if status >= 400 {
                    // The body says why (`/readyz`'s `not ready: …`).
                    self.note_refused(Some(status), String::from_utf8_lossy(&body).trim_end());
                }
                self.respond(to, status, &fields, &body, now)
            }
            Answer::Error { status, reason } => self.respond_error(to, status, &[], &reason, now),
        }
    }

    /// Runs a session handler and acts on the flow it returns.
    fn drive(&mut self, now: Instant, handler: impl FnOnce(&mut Session, &mut Ctx<'_>) -> Flow) {
        let Phase::Serving { session } = &mut self.phase else {
            return;
        };
        let to = self.serving_to;
        let mut ctx = Ctx {
            out: &mut self.out,
            commands: &mut self.commands,
            config: &self.env.config,
            now,
            unix_now_s: self.env.unix_now_s(now),
            metrics: &self.env.metrics,
            deflate: &self.env.deflate,
            cors_origin: cors_origin(&self.rare),
            record_refusals: self.env.record_refusals,
            refused: None,
        };
        let flow = handler(session, &mut ctx);
        if let Some(refused) = ctx.refused.take() {
            self.rare.get_or_insert_default().refused.push_back(refused);
        }
        match flow {
            Flow::Continue => {}
            Flow::Complete if to.keep_alive && !self.peer_eof && !self.draining => {
                self.set_phase(Phase::idle(now));
                self.first_request = false;
                if self.has_input() {
                    self.process_buffered(now);
                }
            }
            Flow::Complete => {
                self.close_reason.get_or_insert(CloseReason::Done);
                self.begin_closing(now);
            }
            Flow::Close(reason) => {
                self.close_reason.get_or_insert(reason);
                self.begin_closing(now);
            }
        }
    }

    /// A whole request is here: answer it, queue the hub command that answers it, or hand the
    /// connection to a session.
    fn dispatch(&mut self, request: Request, body: Vec<u8>, now: Instant) {
        let cross_origin = cors_origin(&self.rare).is_some();
        if matches!(request.route, Route::Readyz) && (self.draining || self.drain_at().is_some()) {
            // Shutting down: a load balancer must stop sending new clients here.
            return self.send_answer(request.to, endpoint::not_ready("draining"), now);
        }
        match endpoint::handle(&request.route, request.text, body, cross_origin, &self.env.config) {
            Some(Endpoint::Answer(answer)) => return self.send_answer(request.to, answer, now),
            Some(Endpoint::Await(command)) => {
                self.commands.push_back(command);
                self.set_phase(Phase::Awaiting { request: Box::new(request) });
                return;
            }
            Some(Endpoint::AwaitApi(submit)) => {
                let expected = submit.commands.len();
                for command in submit.commands {
                    self.commands.push_back(command);
                }
                let collect =
                    Collect { pending: submit.pending, replies: Vec::with_capacity(expected), expected };
                let request = Request { collect: Some(collect), ..request };
                self.set_phase(Phase::Awaiting { request: Box::new(request) });
                return;
            }
            None => {}
        }
        match &request.route {
            Route::LongPoll { channel, since, wait } => {
                let (keep_alive, head_only) = (request.to.keep_alive, request.to.head_only);
                let session = LongPollSession::start(
                    channel.clone(),
                    *since,
                    *wait,
                    keep_alive,
                    head_only,
                    &mut self.ctx(now),
                );
                self.serve(Session::LongPoll(session), request.to);
            }
            Route::Sse { channel, since } => {
                let session = SseSession::start(channel.clone(), *since, &mut self.ctx(now));
                self.serve(Session::Sse(session), request.to);
            }
            Route::WebSocket { channel, accepted, may_publish } => {
                let session = WsSession::start(accepted, channel.clone(), *may_publish, &mut self.ctx(now));
                self.serve(Session::WebSocket(session), request.to);
            }
            Route::Stream { channel, since } => {
                let session = StreamSession::start(channel.clone(), *since, &mut self.ctx(now));
                self.serve(Session::Stream(session), request.to);
            }
            Route::Channels { channels, mode, resume, wait } => {
                let (channels, resume) = (channels.clone(), resume.clone());
                let ctx = &mut self.ctx(now);
                let session = match mode {
                    Transport::Sse | Transport::Stream => {
                        let kind = if *mode == Transport::Sse { StreamKind::Sse } else { StreamKind::Ndjson };
                        Session::MultiStream(Box::new(MultiStream::start(kind, channels, resume, ctx)))
                    }
                    _ => {
                        let deadline = (*mode == Transport::LongPoll).then(|| now + *wait);
                        let (keep_alive, head_only) = (request.to.keep_alive, request.to.head_only);
                        let poll = MultiPoll::start(channels, resume, deadline, keep_alive, head_only, ctx);
                        Session::MultiPoll(Box::new(poll))
                    }
                };
                self.serve(session, request.to);
            }
            // Answered above.
            Route::Index
            | Route::ClientScript
            | Route::Healthz
            | Route::Readyz
            | Route::Metrics
            | Route::Preflight
            | Route::Publish { .. }
            | Route::ShortPoll { .. }
            | Route::Presence { .. }
            | Route::Api(_) => {}
        }
    }

    /// Answers an HTTP-level error and closes: the stream is not trustworthy after it.
    fn fail_request(&mut self, error: &HttpError, now: Instant) {
        self.close_reason = Some(CloseReason::BadRequest);
        let to = AnswerTo { keep_alive: false, head_only: false };
        self.respond_error(to, error.status_hint(), &[], &error.to_string(), now);
    }

    /// Answers an error (a JSON body naming `reason`) and keeps the refusal for the log.
    fn respond_error(
        &mut self,
        to: AnswerTo,
        status: u16,
        headers: &[(&str, &str)],
        reason: &str,
        now: Instant,
    ) {
        self.note_refused(Some(status), reason);
        self.respond_error_noted(to, status, headers, reason, now)
    }

    /// [`Conn::respond_error`] for a refusal already kept for the log.
    fn respond_error_noted(
        &mut self,
        to: AnswerTo,
        status: u16,
        headers: &[(&str, &str)],
        reason: &str,
        now: Instant,
    ) {
        self.env.metrics.reject(status);
        let mut body = Vec::new();
        body.extend_from_slice(b"{\"error\":");
        write_json_string(&mut body, reason);
        body.extend_from_slice(b"}\n");
        let mut fields = vec![("Content-Type", "application/json")];
        fields.extend_from_slice(headers);
        self.respond(to, status, &fields, &body, now);
    }

    /// Writes a complete response, then reads the next request or closes.
    fn respond(&mut self, to: AnswerTo, status: u16, fields: &[(&str, &str)], body: &[u8], now: Instant) {
        let keep_alive = to.keep_alive && !self.peer_eof && !self.draining;
        let mut bytes = Vec::with_capacity(body.len() + 160);
        let fields = with_cors(fields, cors_origin(&self.rare));
        write_full(&mut bytes, status, &fields, body, to.head_only, !keep_alive);
        self.out.push_owned(bytes);
        if keep_alive {
            self.set_phase(Phase::idle(now));
            self.first_request = false;
        } else {
            self.close_reason.get_or_insert(CloseReason::Done);
            self.begin_closing(now);
        }
    }

    fn ctx(&mut self, now: Instant) -> Ctx<'_> {
        Ctx {
            out: &mut self.out,
            commands: &mut self.commands,
            config: &self.env.config,
            now,
            unix_now_s: self.env.unix_now_s(now),
            metrics: &self.env.metrics,
            deflate: &self.env.deflate,
            cors_origin: cors_origin(&self.rare),
            record_refusals: self.env.record_refusals,
            refused: None,
        }
    }

    /// Hands the connection to a transport session.
    fn serve(&mut self, session: Session, to: AnswerTo) {
        self.env.metrics.open_transport(session.transport());
        self.serving_to = to;
        self.set_phase(Phase::Serving { session });
    }

    /// Ends the connection for a shutdown: idle connections close, a request in progress is
    /// answered with `Connection: close`, sessions end in their own way.
    fn drain(&mut self, now: Instant) {
        self.draining = true;
        self.close_reason.get_or_insert(CloseReason::Draining);
        match &mut self.phase {
            Phase::ReadingHead { idle: true, .. } => self.begin_closing(now),
            Phase::ReadingHead { .. } | Phase::ReadingBody(_) | Phase::Awaiting { .. } => {}
            Phase::Serving { .. } => {
                self.serving_to.keep_alive = false;
                self.drive(now, |s, ctx| s.handle_drain(ctx));
            }
            Phase::Closing { .. } | Phase::Closed => {}
        }
    }

    /// Moves to `phase` and returns the phase left: the only writer of `self.phase`. Leaving
    /// `Serving` uncounts the transport (a `Conn` keeps that count itself, with no guard in
    /// every connection).
    fn set_phase(&mut self, phase: Phase) -> Phase {
        if let Phase::Serving { session, .. } = &self.phase {
            // Ending by closing, a multi-channel session's channels are kept until the loop
            // removes the connection (a poll that completes on keep-alive queued its own
            // `Unsubscribe`s).
            if matches!(phase, Phase::Closing { .. } | Phase::Closed) {
                if let Some(held) = session.held_channels() {
                    self.rare.get_or_insert_default().held = Some(held);
                }
            }
            self.env.metrics.close_transport(session.transport());
            if let Session::LongPoll(poll) = session {
                poll.uncount(&self.env.metrics);
            }
            if let Session::MultiPoll(poll) = session {
                poll.uncount(&self.env.metrics);
            }
        }
        std::mem::replace(&mut self.phase, phase)
    }

    fn begin_closing(&mut self, now: Instant) {
        self.set_phase(Phase::Closing { deadline: now + self.env.config.http.close_linger });
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.set_phase(Phase::Closed);
    }
}

fn is_unsubscribe(command: &Command, channel: &ChannelName) -> bool {
    matches!(command, Command::Unsubscribe { channel: c, .. } if c == channel)
}

fn expects_continue(head: &RequestHead) -> bool {
    head.minor_version >= 1 && head.header("expect").is_some_and(|v| v.eq_ignore_ascii_case(b"100-continue"))
}

#[cfg(test)]
mod tests;
