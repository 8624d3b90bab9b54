//! The session contract: what a transport that owns a connection after its request answers
//! ([`Session`], one closed enum so every push style is visible in one `match`), what it may
//! touch while it does ([`Ctx`]) and what it gives back ([`Flow`], [`CloseReason`]).
//!
//! Implements: the dispatch of each call to the transport's own session type in
//! [`super::long_poll`], [`super::sse`], [`super::stream`], [`super::websocket`] and
//! [`super::channels`] ([`MultiStream`], [`MultiPoll`]: several channels on one request).
//!
//! Does not: route requests ([`mod@super::route`]) or own the connection's phase (`crate::conn`).

use std::collections::VecDeque;
use std::time::Instant;

use super::channels::{MultiPoll, MultiStream, StreamKind};
use super::{long_poll, sse, stream, websocket};
use crate::config::Config;
use crate::hub::{ChannelName, Command, HubError};
use crate::output::Output;
use crate::protocol::Transport;

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
    /// A streaming subscriber could not keep up (see [`super::feed`]).
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
    /// The server API's `disconnect` ended the connection.
    Disconnected,
    /// The signed token that admitted the subscription expired.
    TokenExpired,
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
            CloseReason::Disconnected => "disconnected by the server API",
            CloseReason::TokenExpired => "token expired",
        }
    }
}

/// A request or command the server refused, kept for the event loop's debug line (which
/// names the peer, issue #17): recorded only when [`Ctx::record_refusals`] is set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// The HTTP status answered; `None` for a refusal inside a session (a `pushwire.v1`
    /// command answered with an error reply).
    pub status: Option<u16>,
    /// Why, as the peer was told.
    pub reason: String,
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
    /// The current time in seconds since the Unix epoch (token expiries), from the loop's
    /// [`super::token::UnixClock`].
    pub unix_now_s: u64,
    /// Server-wide counters.
    pub metrics: &'a std::sync::Arc<crate::metrics::Metrics>,
    /// The event loop's permessage-deflate codec (see [`crate::conn::ConnEnv::deflate`]).
    pub deflate: &'a crate::ws::deflate::SharedCodec,
    /// The allowed cross-origin request's origin, to name in CORS fields.
    pub cors_origin: Option<&'a str>,
    /// Refusals are logged (debug): a handler that refuses something sets [`Ctx::refused`].
    pub record_refusals: bool,
    /// What the handler refused, for the log (see [`Ctx::note_refused`]).
    pub refused: Option<Refused>,
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

    /// The oldest command, left in the queue.
    pub fn front(&self) -> Option<&Command> {
        self.0.as_ref()?.front()
    }

    /// The commands waiting, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &Command> {
        self.0.iter().flat_map(|q| q.iter())
    }

    /// Takes out the oldest command that `f` picks, keeping the others in order.
    pub fn remove_first(&mut self, f: impl Fn(&Command) -> bool) -> Option<Command> {
        let queue = self.0.as_mut()?;
        let command = queue.remove(queue.iter().position(f)?);
        if queue.is_empty() {
            self.0 = None;
        }
        command
    }

    /// How many commands wait.
    pub fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |q| q.len())
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
    /// Records a refusal for the loop's debug line, when refusals are logged.
    pub fn note_refused(&mut self, status: Option<u16>, reason: impl FnOnce() -> String) {
        if self.record_refusals {
            self.refused = Some(Refused { status, reason: reason() });
        }
    }

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
    /// An event stream or chunked stream over several channels (boxed: rare, and larger).
    MultiStream(Box<MultiStream>),
    /// A short or long poll over several channels (boxed likewise).
    MultiPoll(Box<MultiPoll>),
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

/// The channels a multi-channel session named, and their transport: kept by its connection
/// once the session ends by closing, so that the loop, which records only each connection's
/// first subscription in its slot, can still find the others when it removes the connection
/// (see [`crate::fanout`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldChannels {
    /// The transport every one of them was subscribed with.
    pub transport: Transport,
    /// The channels, in the session's order.
    pub channels: Box<[ChannelName]>,
}

impl Session {
    /// The transport of a session whose channels [`Session::for_each_held_channel`] names (a
    /// multi-channel stream or long poll, a command-mode WebSocket), also while it names none;
    /// `None` for a single-channel session, whose one subscription is its slot's
    /// ([`crate::fanout`]).
    pub fn names_channels_as(&self) -> Option<Transport> {
        match self {
            Session::MultiStream(s) => Some(s.kind().transport()),
            Session::MultiPoll(s) if s.is_long() => Some(Transport::LongPoll),
            Session::WebSocket(s) if s.is_command_mode() => Some(Transport::WebSocket),
            Session::WebSocket(_)
            | Session::MultiPoll(_)
            | Session::LongPoll(_)
            | Session::Sse(_)
            | Session::Stream(_) => None,
        }
    }

    /// Calls `f` with every channel this session may hold a subscription to (subscribed, or
    /// its `Subscribe` queued) beyond a single-channel session's one, and its transport: a
    /// multi-channel stream's or long poll's channels, a command-mode WebSocket's. Nothing for
    /// a single-channel session (its one subscription is its slot's, [`crate::fanout`]).
    pub fn for_each_held_channel(&self, mut f: impl FnMut(&ChannelName, Transport)) {
        let Some(transport) = self.names_channels_as() else { return };
        match self {
            Session::MultiStream(s) => s.channels().for_each(|c| f(c, transport)),
            Session::MultiPoll(s) => s.channels().iter().for_each(|c| f(c, transport)),
            Session::WebSocket(s) => s.command_channels().for_each(|c| f(c, transport)),
            Session::LongPoll(_) | Session::Sse(_) | Session::Stream(_) => {}
        }
    }

    /// What [`Session::for_each_held_channel`] names, kept for after the session, also when
    /// that is no channel (so a late `Subscribed` is still judged by the channels it names);
    /// `None` for a single-channel session (no allocation for it).
    pub fn held_channels(&self) -> Option<HeldChannels> {
        let transport = self.names_channels_as()?;
        let mut channels = Vec::new();
        self.for_each_held_channel(|c, _| channels.push(c.clone()));
        Some(HeldChannels { transport, channels: channels.into_boxed_slice() })
    }

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
            Session::MultiStream(s) => s.handle_subscribed(channel, replay, ctx),
            Session::MultiPoll(s) => s.handle_subscribed(channel, replay, ctx),
        }
    }

    /// A publish the session queued got its id (only a command-mode WebSocket answers it).
    pub fn handle_published(&mut self, id: crate::hub::Cursor, ctx: &mut Ctx<'_>) -> Flow {
        match self {
            Session::WebSocket(s) => s.handle_published(id, ctx),
            Session::LongPoll(_)
            | Session::Sse(_)
            | Session::Stream(_)
            | Session::MultiStream(_)
            | Session::MultiPoll(_) => Flow::Continue,
        }
    }

    /// A channel's presence, read for the session (a `presence` command).
    pub fn handle_presence_list(
        &mut self,
        channel: ChannelName,
        list: crate::hub::PresenceList,
        ctx: &mut Ctx<'_>,
    ) -> Flow {
        match self {
            Session::WebSocket(s) => s.handle_presence_list(channel, list, ctx),
            Session::LongPoll(_)
            | Session::Sse(_)
            | Session::Stream(_)
            | Session::MultiStream(_)
            | Session::MultiPoll(_) => Flow::Continue,
        }
    }

    /// A join or leave on a channel the session asked join and leave events of.
    pub fn handle_presence(
        &mut self,
        event: &crate::hub::presence::PresenceEvent,
        ctx: &mut Ctx<'_>,
    ) -> Flow {
        match self {
            Session::WebSocket(s) => s.handle_presence(event, ctx),
            Session::LongPoll(_)
            | Session::Sse(_)
            | Session::Stream(_)
            | Session::MultiStream(_)
            | Session::MultiPoll(_) => Flow::Continue,
        }
    }

    /// The answer to a read the session queued.
    pub fn handle_read(&mut self, replay: crate::hub::Replay, ctx: &mut Ctx<'_>) -> Flow {
        match self {
            Session::LongPoll(s) => s.handle_read(replay, ctx),
            Session::Sse(s) => s.handle_page(replay, ctx),
            Session::Stream(s) => s.handle_page(replay, ctx),
            Session::WebSocket(s) => s.handle_page(replay, ctx),
            Session::MultiStream(s) => s.handle_read(replay, ctx),
            Session::MultiPoll(s) => s.handle_read(replay, ctx),
        }
    }

    /// A live message on the subscribed channel.
    pub fn handle_delivery(&mut self, msg: &std::sync::Arc<crate::hub::Message>, ctx: &mut Ctx<'_>) -> Flow {
        match self {
            Session::LongPoll(s) => s.handle_delivery(msg, ctx),
            Session::Sse(s) => s.handle_delivery(msg, ctx),
            Session::Stream(s) => s.handle_delivery(msg, ctx),
            Session::WebSocket(s) => s.handle_delivery(msg, ctx),
            Session::MultiStream(s) => s.handle_delivery(msg, ctx),
            Session::MultiPoll(s) => s.handle_delivery(msg, ctx),
        }
    }

    /// Some output was written.
    pub fn handle_drained(&mut self, ctx: &mut Ctx<'_>) {
        match self {
            Session::LongPoll(_) => {}
            Session::Sse(s) => s.handle_drained(ctx),
            Session::Stream(s) => s.handle_drained(ctx),
            Session::WebSocket(s) => s.handle_drained(ctx),
            Session::MultiStream(s) => s.handle_drained(ctx),
            Session::MultiPoll(_) => {}
        }
    }

    /// The session's next deadline.
    pub fn poll_timeout(&self, config: &Config) -> Option<Instant> {
        match self {
            Session::LongPoll(s) => s.poll_timeout(),
            Session::Sse(s) => s.poll_timeout(),
            Session::Stream(s) => s.poll_timeout(),
            Session::WebSocket(s) => s.poll_timeout(&config.websocket),
            Session::MultiStream(s) => s.poll_timeout(),
            Session::MultiPoll(s) => s.poll_timeout(),
        }
    }

    /// A deadline passed (calls before it are harmless).
    pub fn handle_timeout(&mut self, ctx: &mut Ctx<'_>) -> Flow {
        match self {
            Session::LongPoll(s) => s.handle_timeout(ctx),
            Session::Sse(s) => s.handle_timeout(ctx),
            Session::Stream(s) => s.handle_timeout(ctx),
            Session::WebSocket(s) => s.handle_timeout(ctx),
            Session::MultiStream(s) => s.handle_timeout(ctx),
            Session::MultiPoll(s) => s.handle_timeout(ctx),
        }
    }

    /// The server is shutting down: end the response or stream (WebSocket: close 1001).
    pub fn handle_drain(&mut self, ctx: &mut Ctx<'_>) -> Flow {
        match self {
            Session::LongPoll(s) => s.handle_drain(ctx),
            Session::Sse(s) => s.handle_drain(ctx),
            Session::Stream(s) => s.handle_drain(ctx),
            Session::WebSocket(s) => s.handle_drain(ctx),
            Session::MultiStream(s) => s.handle_drain(ctx),
            Session::MultiPoll(s) => s.handle_drain(ctx),
        }
    }

    /// The signed token that admitted the subscription expired (issue #13; Centrifugo's rule:
    /// the client comes back with a fresh token). A WebSocket closes with 4001 `token
    /// expired`; an event stream sends the event `token_expired` and ends; a chunked stream
    /// sends the line `{"type":"token_expired"}` and its last chunk; a parked long poll is
    /// answered as at the end of its wait (the connection stays open for the next request).
    /// Returns false when there was nothing left to end (a poll already answered, a WebSocket
    /// already closing).
    pub fn handle_token_expired(&mut self, ctx: &mut Ctx<'_>) -> (bool, Flow) {
        match self {
            Session::LongPoll(s) => s.handle_token_expired(ctx),
            Session::Sse(s) => s.handle_token_expired(ctx),
            Session::Stream(s) => s.handle_token_expired(ctx),
            Session::WebSocket(s) => s.handle_token_expired(ctx),
            Session::MultiStream(s) => s.handle_token_expired(ctx),
            Session::MultiPoll(s) => s.handle_token_expired(ctx),
        }
    }

    /// The server API disconnects the connection: a WebSocket is closed with `code` and
    /// `reason` (RFC 6455 §7.4.2 private-use code); the other transports end their response
    /// as for a drain (a parked poll is answered, a stream ends). The caller has turned
    /// keep-alive off.
    pub fn handle_disconnect(&mut self, code: u16, reason: &str, ctx: &mut Ctx<'_>) -> Flow {
        match self {
            Session::WebSocket(s) => s.handle_disconnect(code, reason, ctx),
            _ => self.handle_drain(ctx),
        }
    }

    /// The server API unsubscribes the connection from `channel`: only a command-mode
    /// WebSocket (which holds channels it chose) leaves it, with an `unsubscribe` notice.
    pub fn handle_unsubscribe(&mut self, channel: &ChannelName, reason: &str, ctx: &mut Ctx<'_>) -> Flow {
        match self {
            Session::WebSocket(s) => s.handle_unsubscribe(channel, reason, ctx),
            _ => Flow::Continue,
        }
    }

    /// What to do with input while this session owns the connection.
    pub fn input_policy(&self) -> InputPolicy {
        match self {
            Session::WebSocket(_) => InputPolicy::Session,
            Session::LongPoll(_) | Session::MultiPoll(_) => InputPolicy::Buffer,
            Session::Sse(_) | Session::Stream(_) | Session::MultiStream(_) => InputPolicy::Discard,
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

    /// A command the session queued was refused by the hub. `None`: nothing has been written
    /// yet, so the connection answers with an HTTP error (`HubError::status_hint`); otherwise
    /// the session has ended its response in its own format (a WebSocket with the close code
    /// that matches the refusal).
    pub fn handle_refused(&mut self, error: HubError, ctx: &mut Ctx<'_>) -> Option<Flow> {
        match self {
            Session::WebSocket(s) => Some(s.handle_refused(error, ctx)),
            Session::Sse(s) => s.handle_refused(ctx),
            Session::Stream(s) => s.handle_refused(ctx),
            Session::LongPoll(_) => None,
            Session::MultiStream(s) => Some(s.handle_refused(error, ctx)),
            Session::MultiPoll(s) => Some(s.handle_refused(error, ctx)),
        }
    }

    /// The transport, for logs and metrics.
    pub fn transport(&self) -> Transport {
        match self {
            Session::LongPoll(_) => Transport::LongPoll,
            Session::Sse(_) => Transport::Sse,
            Session::Stream(_) => Transport::Stream,
            Session::WebSocket(_) => Transport::WebSocket,
            Session::MultiStream(s) => match s.kind() {
                StreamKind::Sse => Transport::Sse,
                StreamKind::Ndjson => Transport::Stream,
            },
            Session::MultiPoll(s) if s.is_long() => Transport::LongPoll,
            Session::MultiPoll(_) => Transport::Poll,
        }
    }
}
