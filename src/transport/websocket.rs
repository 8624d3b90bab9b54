//! WebSocket: `GET /channels/{name}` with an RFC 6455 upgrade (or `?mode=ws`), and `GET /echo`.
//!
//! Implements, on top of the protocol core in [`crate::ws`]:
//! - **Channels.** Channel messages go out as text or binary frames matching how they were
//!   published; with the subprotocol `pushwire.v1` every server frame is instead a JSON text
//!   frame holding the envelope (`{"id":…,"event":…,"data"|"data_b64":…}`), so clients can
//!   resume. `?since=CURSOR` replays history first, with the gap rule. A gap is the text frame
//!   `{"type":"gap","next":"EPOCH:OFFSET"}` in both modes (a plain client that passed `since`
//!   asked for cursor semantics). A `pushwire.v1` subscription starts with
//!   `{"type":"open","next":"EPOCH:OFFSET"}`. Messages the client sends are published to the channel
//!   (unless `--ws-no-client-publish`), so two browsers on one channel are a chat room.
//! - **Command mode (`/ws`, issue #13).** With the subprotocol `pushwire.v1` (required) the
//!   client sends the commands of [`super::commands`] (subscribe with `since`, unsubscribe,
//!   publish with `except_self`, `req` echoed in the `ok`/`error` reply) and holds up to
//!   `max_channels_per_connection` channels ([`super::rooms`]); every message, `open` and `gap`
//!   frame names its `channel`. Per-command errors answer that command and keep the
//!   connection open. Each command is authorized per channel ([`super::rooms`]: the
//!   connection token from the upgrade, a subscribe's own `token`, `--channel-policy`); a
//!   `refresh` replaces the connection token, and one that expires closes the connection with
//!   4001 ([`CLOSE_TOKEN_EXPIRED`]). A one-channel or `/channels/a,b` connection admitted by a
//!   signed token is closed with 4001 when that token expires (it has no `refresh`: the client
//!   reconnects with a fresh token and its cursor). Each subscription is a presence member (with the
//!   token's user id and the `info` given); `presence` and `presence_stats` read a channel's
//!   members, and `joins: true` sends `join`/`leave` frames of the others.
//! - **Echo.** `/echo` sends every text and binary message back, for conformance tools and
//!   benchmarks, within its own (larger) limits.
//! - **Heartbeat.** A connection quiet for [`Limits::ping_interval`] is pinged (RFC 6455
//!   §5.5.2); when nothing comes back within [`Limits::pong_timeout`] it is closed.
//! - **Closing.** The server echoes a peer's close and then closes TCP first (§7.1.1). When the
//!   server starts the closing handshake (slow consumer 1008, heartbeat failure 1001) it waits
//!   [`Limits::close_timeout`] for the peer's close, then closes TCP anyway.
//!
//! - **permessage-deflate** (RFC 7692), when the handshake accepted an offer: compressed
//!   messages from the client are inflated with the event loop's codec; a channel message is
//!   compressed once per message and window size and shared by every deflate subscriber
//!   ([`Encoding::WsDeflateFrame`]), echoes are compressed per message; only at least
//!   `deflate_min_bytes` and only when smaller.
//!
//! Does not: fragment outgoing messages, or compress control frames and the short gap and
//! open envelopes.

use std::sync::Arc;
use std::time::Instant;

use crate::hub::{ChannelName, Command, Cursor, Encoding, HubError, Message, Payload, Replay, Since};
use crate::metrics::Metrics;
use crate::protocol::Transport;
use crate::ws::conn::{Incoming, RSV1};
use crate::ws::deflate::{Codec, SharedCodec};
use crate::ws::frame::{encode_frame, encode_frame_rsv};
use crate::ws::{Accepted, CloseCode, CloseFrame, MessageRef, OpCode, Role, WsConn};

use super::channels::{feed_start, Resolver};
use super::commands::{error_reply, parse, Command as V1Command, CommandError, CommandLimits};
use super::feed::{Feed, Wire};
use super::policy::Action as Grant;
use super::rooms::{presence_event, Action, Answer, Authority, Resume, Rooms, Start, CLOSE_TOKEN_EXPIRED};
use super::token::Claims;
use super::{CloseReason, Ctx, Flow};
use crate::hub::presence::{Joining, PresenceEvent};
use crate::hub::PresenceList;
use crate::protocol::envelope::{gap_envelope, message_envelope, open_envelope, with_channel};
use std::collections::VecDeque;

pub use crate::protocol::PROTOCOL_V1;

pub use super::limits::WebSocketLimits as Limits;

/// A plain frame: the payload as published, in a text or binary frame.
pub fn encode_plain_frame(msg: &Message) -> Vec<u8> {
    let mut out = Vec::with_capacity(msg.payload.len_bytes() + 10);
    match &msg.payload {
        Payload::Text(text) => encode_frame(true, OpCode::Text, text.as_bytes(), None, &mut out),
        Payload::Binary(bytes) => encode_frame(true, OpCode::Binary, bytes, None, &mut out),
    }
    out
}

/// A `pushwire.v1` frame: the JSON envelope in a text frame.
pub fn encode_envelope_frame(msg: &Message) -> Vec<u8> {
    let envelope = message_envelope(msg);
    let mut out = Vec::with_capacity(envelope.len() + 10);
    encode_frame(true, OpCode::Text, &envelope, None, &mut out);
    out
}

/// A command-mode frame: the envelope with the message's channel first.
pub fn encode_channel_envelope_frame(msg: &Message) -> Vec<u8> {
    let envelope = with_channel(&msg.channel, message_envelope(msg));
    let mut out = Vec::with_capacity(envelope.len() + 10);
    encode_frame(true, OpCode::Text, &envelope, None, &mut out);
    out
}

/// What a WebSocket connection serves, chosen by the route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WsTarget {
    /// `/echo`.
    Echo,
    /// One channel from a cursor (`/channels/{name}`).
    Channel(ChannelName, Since),
    /// `/ws`: `pushwire.v1` commands over any number of channels (up to the limit), with the
    /// connection token's claims when one was given.
    Commands(Option<Box<Claims>>),
    /// `/channels/a,b` (or `?channel=`): fixed channels from where each starts, delivered as
    /// command mode's labelled frames; the client sends nothing but control frames.
    Channels(Vec<ChannelName>, Resume),
}

/// The server role never masks, so its mask source is never called.
fn no_mask() -> [u8; 4] {
    [0; 4]
}

/// A permessage-deflate frame of `msg` for connections whose server window is `window_bits`:
/// the payload (or the `pushwire.v1` envelope) compressed in one frame with RSV1 (RFC 7692 §6,
/// §7.2.1), or `None` when it is below the codec's threshold or does not shrink.
pub fn encode_deflate_frame(msg: &Message, v1: bool, window_bits: u8, codec: &mut Codec) -> Option<Vec<u8>> {
    let envelope;
    let (opcode, payload) = match (&msg.payload, v1) {
        (_, true) => {
            envelope = message_envelope(msg);
            (OpCode::Text, &envelope[..])
        }
        (Payload::Text(text), false) => (OpCode::Text, text.as_bytes()),
        (Payload::Binary(bytes), false) => (OpCode::Binary, &bytes[..]),
    };
    let mut compressed = Vec::new();
    if !codec.compress(payload, window_bits, &mut compressed) {
        return None;
    }
    let mut out = Vec::with_capacity(compressed.len() + 10);
    encode_frame_rsv(RSV1, opcode, &compressed, None, &mut out);
    Some(out)
}

/// How channel messages are framed on this connection.
struct WsWire<'a> {
    ws: &'a mut WsConn,
    v1: bool,
    /// Command mode: every frame names this channel (and is not compressed).
    channel: Option<&'a ChannelName>,
    /// The loop's codec, used when the connection negotiated permessage-deflate.
    codec: &'a SharedCodec,
    metrics: &'a Metrics,
    /// Command mode: ids of this connection's `except_self` publishes not yet passed.
    skip: Option<&'a mut Vec<Cursor>>,
}

impl<'a> WsWire<'a> {
    /// The wire of `ws`, with the loop's codec and counters from `ctx`.
    fn new<'c: 'a>(ws: &'a mut WsConn, v1: bool, channel: Option<&'a ChannelName>, ctx: &Ctx<'c>) -> Self {
        WsWire { ws, v1, channel, codec: ctx.deflate, metrics: ctx.metrics, skip: None }
    }

    /// The wire, skipping the messages whose ids are in `skip` (each once).
    fn skipping(mut self, skip: &'a mut Vec<Cursor>) -> Self {
        self.skip = Some(skip);
        self
    }

    /// The frame without compression, shared by every plain subscriber.
    fn plain(&self, msg: &Message) -> Arc<[u8]> {
        if self.channel.is_some() {
            msg.encoded(Encoding::WsChannelEnvelopeFrame, encode_channel_envelope_frame)
        } else if self.v1 {
            msg.encoded(Encoding::WsEnvelopeFrame, encode_envelope_frame)
        } else {
            msg.encoded(Encoding::WsFrame, encode_plain_frame)
        }
    }
}

impl Wire for WsWire<'_> {
    fn encode(&self, msg: &Message) -> Arc<[u8]> {
        let Some(window_bits) =
            self.ws.deflate().and_then(|d| d.send_window_bits(true)).filter(|_| self.channel.is_none())
        else {
            return self.plain(msg);
        };
        let encoding = if self.v1 {
            Encoding::WsDeflateEnvelopeFrame { window_bits }
        } else {
            Encoding::WsDeflateFrame { window_bits }
        };
        // Compressed once per message and window size, then shared like the plain frame; a
        // message that does not shrink shares the plain frame itself.
        msg.encoded_shared(encoding, |msg| {
            let frame = {
                let mut codec = self.codec.lock();
                let before = codec.compressed_messages();
                let frame = encode_deflate_frame(msg, self.v1, window_bits, &mut codec);
                if codec.compressed_messages() != before {
                    Metrics::inc(&self.metrics.ws_deflate_compressions);
                }
                frame
            };
            frame.map_or_else(|| self.plain(msg), Arc::from)
        })
    }

    fn write_message(&mut self, bytes: Arc<[u8]>, ctx: &mut Ctx<'_>) {
        if bytes.first().is_some_and(|b| b & (RSV1 << 4) != 0) {
            Metrics::inc(&ctx.metrics.ws_deflate_frames_sent);
        }
        // Refused only after our close, when nothing more may be sent (§5.5.1).
        let _ = self.ws.send_prepared(bytes, ctx.out);
    }

    fn write_gap(&mut self, next: Cursor, ctx: &mut Ctx<'_>) {
        self.send_text(gap_envelope(next), ctx);
    }

    fn write_open(&mut self, start: Cursor, ctx: &mut Ctx<'_>) {
        // Plain frames carry no cursors, so only pushwire.v1 clients are told where they start.
        if self.v1 {
            self.send_text(open_envelope(start), ctx);
        }
    }

    fn suppressed(&mut self, msg: &Message) -> bool {
        let Some(skip) = self.skip.as_deref_mut() else { return false };
        match skip.iter().position(|&id| id == msg.id) {
            Some(i) => {
                skip.remove(i); // Oldest first, for MAX_SKIP's eviction.
                true
            }
            None => false,
        }
    }
}

impl WsWire<'_> {
    fn send_text(&mut self, json: Vec<u8>, ctx: &mut Ctx<'_>) {
        let json = match self.channel {
            Some(channel) => with_channel(channel, json),
            None => json,
        };
        send_json(self.ws, json, ctx);
    }
}

/// Sends a JSON text (replies and envelopes are written as UTF-8 by this crate).
fn send_json(ws: &mut WsConn, json: Vec<u8>, ctx: &mut Ctx<'_>) {
    let text = String::from_utf8(json).unwrap_or_default();
    let _ = ws.send_message(MessageRef::Text(&text), &mut no_mask, ctx.out);
}

/// A command mode reply made here: sent now, or held behind earlier commands still waiting for
/// the hub ([`Rooms::in_order`]).
fn send_in_order(ws: &mut WsConn, rooms: &mut Rooms, reply: Vec<u8>, ctx: &mut Ctx<'_>) {
    if let Some(reply) = rooms.in_order(reply) {
        send_json(ws, reply, ctx);
    }
}

/// The replies held behind the command the hub just answered ([`Rooms::take_ready`]).
fn send_ready(ws: &mut WsConn, rooms: &mut Rooms, ctx: &mut Ctx<'_>) {
    for reply in rooms.take_ready() {
        send_json(ws, reply, ctx);
    }
}

/// One WebSocket connection after its handshake.
#[derive(Debug)]
pub struct WsSession {
    ws: WsConn,
    /// What the connection serves.
    serving: Serving,
    v1: bool,
    client_publish: bool,
    /// Where the connection is in its heartbeat and closing handshake (see [`Liveness`]),
    /// kept as its kind and its instant beside the other fields: 17 bytes, not an enum's 24.
    liveness_kind: LivenessKind,
    liveness_at: Instant,
}

/// What a session serves: nothing (echo), one channel's feed, or command mode's channels
/// (boxed: a one-channel connection's size does not grow).
#[derive(Debug)]
enum Serving {
    Echo,
    Channel(Feed),
    Commands(Box<CommandMode>),
}

/// A command-mode connection's channels.
#[derive(Debug)]
struct CommandMode {
    rooms: Rooms,
    /// One feed per subscribed channel, in subscription order.
    feeds: Vec<Feed>,
    /// For each publish awaiting its id, oldest first: its channel when it is `except_self`.
    publishes: VecDeque<Option<ChannelName>>,
    /// Ids of this connection's `except_self` publishes not yet seen as deliveries.
    skip: Vec<Cursor>,
    /// The channel of each page read in flight, oldest first (a `Read` reply names none).
    reads: VecDeque<ChannelName>,
    /// When the connection's token expires, if it has one (close 4001 then).
    expires_at: Option<Instant>,
    /// A `/channels/a,b` connection: its channels were named (and authorized) by the request,
    /// and it takes no commands.
    fixed: bool,
    /// A fixed connection's compact `since`, while the channels' epochs are read.
    resolving: Option<Resolver>,
}

impl CommandMode {
    /// Reads the token's expiry from the channel set (after the start or a `refresh`).
    fn set_expiry(&mut self, ctx: &Ctx<'_>) {
        self.expires_at = self
            .rooms
            .token_expires_at()
            .map(|at| ctx.now + std::time::Duration::from_secs(at.saturating_sub(ctx.unix_now_s)));
    }

    /// Subscribes a fixed connection's channels, each from its start.
    fn subscribe_fixed(&mut self, channels: Vec<ChannelName>, starts: Vec<Start>, ctx: &mut Ctx<'_>) {
        if starts.contains(&Start::Lost) {
            Metrics::inc(&ctx.metrics.last_event_id_unreadable);
        }
        self.feeds = channels
            .into_iter()
            .zip(starts)
            .map(|(channel, start)| {
                let (feed, command) = Feed::starting(channel, feed_start(start), Transport::WebSocket);
                ctx.commands.push_back(command);
                feed
            })
            .collect();
    }
}

/// Most `except_self` ids a command-mode connection remembers.
const MAX_SKIP: usize = 64;

/// The kind of a [`Liveness`], one byte.
#[derive(Debug, Clone, Copy)]
enum LivenessKind {
    Quiet,
    Pinged,
    Closing,
}

/// Where a connection is in its heartbeat and its closing handshake.
#[derive(Debug, Clone, Copy)]
enum Liveness {
    /// Traffic last came at `since`; a ping is due a ping interval later.
    Quiet { since: Instant },
    /// A ping went out at `at`; some traffic must come back within the pong timeout.
    Pinged { at: Instant },
    /// The server sent its close; the peer's must come before `deadline`.
    Closing { deadline: Instant },
}

impl WsSession {
    /// True in command mode (`pushwire.v1`), whose channels [`WsSession::command_channels`]
    /// names, also when it names none.
    pub fn is_command_mode(&self) -> bool {
        matches!(self.serving, Serving::Commands(_))
    }

    /// A command-mode connection's channels (subscribed, or their `Subscribe` queued), in
    /// subscription order; none otherwise.
    pub fn command_channels(&self) -> impl Iterator<Item = &ChannelName> {
        let feeds: &[Feed] = match &self.serving {
            Serving::Commands(mode) => &mode.feeds,
            Serving::Echo | Serving::Channel(_) => &[],
        };
        feeds.iter().map(|f| &f.channel)
    }

    /// Writes the 101 response and, on a channel, queues the subscription.
    pub fn start(accepted: &Accepted, channel: WsTarget, may_publish: bool, ctx: &mut Ctx<'_>) -> WsSession {
        let limits = &ctx.config.websocket;
        let mut head = Vec::new();
        accepted.response_head(&mut head);
        ctx.out.push_owned(head);
        let ws_limits = if channel == WsTarget::Echo { limits.echo } else { limits.channel };
        let serving = match channel {
            WsTarget::Echo => Serving::Echo,
            WsTarget::Channel(channel, since) => {
                let feed = Feed::new(channel);
                ctx.commands.push_back(feed.subscribe(since, Transport::WebSocket));
                Serving::Channel(feed)
            }
            WsTarget::Commands(_) | WsTarget::Channels(..) => {
                let claims = match &channel {
                    WsTarget::Commands(claims) => claims.as_deref().cloned(),
                    _ => None,
                };
                let mut mode = CommandMode {
                    rooms: Rooms::new(ctx.config.transport.rooms, claims),
                    feeds: Vec::new(),
                    publishes: VecDeque::new(),
                    skip: Vec::new(),
                    reads: VecDeque::new(),
                    expires_at: None,
                    fixed: false,
                    resolving: None,
                };
                mode.set_expiry(ctx);
                if let WsTarget::Channels(channels, resume) = channel {
                    mode.fixed = true;
                    match Resolver::begin(&channels, resume, ctx) {
                        Ok(starts) => mode.subscribe_fixed(channels, starts, ctx),
                        Err(resolver) => {
                            mode.feeds = channels.into_iter().map(Feed::new).collect();
                            mode.resolving = Some(resolver);
                        }
                    }
                }
                Serving::Commands(Box::new(mode))
            }
        };

        WsSession {
            ws: WsConn::with_deflate(Role::Server, ws_limits, accepted.deflate),
            serving,
            v1: accepted.protocol.as_deref() == Some(PROTOCOL_V1),
            client_publish: may_publish,
            liveness_kind: LivenessKind::Quiet,
            liveness_at: ctx.now,
        }
    }

    /// Frames from the client. Whole frames are unmasked in place in `input` (which is
    /// consumed) and answered from there, without a copy.
    pub fn handle_input(&mut self, input: &mut [u8], ctx: &mut Ctx<'_>) -> Flow {
        if !matches!(self.liveness(), Liveness::Closing { .. }) {
            self.set_liveness(Liveness::Quiet { since: ctx.now });
        }
        // Control frames only (pings, pongs, a close): the session needs none of them, and an
        // empty Vec allocates nothing.
        let mut events = Vec::new();
        let mut pos = 0;
        // The loop's codec, for compressed messages; held for this input only.
        let deflate = ctx.deflate;
        let mut codec = deflate.lock();
        // Message by message, so each is answered (echoed, published) before later frames are
        // read: a message followed by a frame that fails the connection still gets its echo,
        // ahead of the close, however the bytes were split into reads.
        while pos < input.len() {
            match self.ws.handle_input_until_message(
                &mut input[pos..],
                &mut no_mask,
                &mut codec,
                &mut events,
                ctx.out,
            ) {
                Ok((used, message)) => {
                    pos += used;
                    if let Some(message) = message {
                        self.handle_message(message.as_message_ref(), &mut codec, ctx);
                        // A reassembled message's buffer goes back to the loop for the next one.
                        if let Incoming::Assembled(message) = message {
                            codec.spares.recycle(message.into_bytes());
                        }
                    }
                }
                // The core has already failed the connection (close frame queued, further input
                // discarded, RFC 6455 §7.1.7); the messages before the fault were answered.
                Err(_) => return Flow::Close(CloseReason::WebSocketFailed),
            }
            events.clear();
        }
        if self.ws.is_closed() {
            return Flow::Close(CloseReason::WebSocketClosed);
        }
        Flow::Continue
    }

    fn handle_message(&mut self, msg: MessageRef<'_>, codec: &mut Codec, ctx: &mut Ctx<'_>) {
        if let Serving::Commands(mode) = &self.serving {
            if mode.fixed {
                // The request named the channels; publishing and commands are `/ws`'s (§7.4.1:
                // 1008 for a message that violates the endpoint's policy).
                self.close(CloseCode::POLICY_VIOLATION, "this connection only receives; use /ws", ctx);
            } else if !self.ws.close_sent() {
                self.handle_command(msg, ctx);
            }
            return;
        }
        match &self.serving {
            Serving::Echo => {
                // The echo goes back compressed when permessage-deflate was negotiated and it pays.
                let _ = self.ws.send_message_compressed(msg, &mut no_mask, codec, ctx.out);
            }
            Serving::Channel(_) if !self.client_publish => {
                // Publishing needs --publish-token (or is off): a policy violation (§7.4.1).
                self.close(CloseCode::POLICY_VIOLATION, "publishing is not allowed", ctx);
            }
            Serving::Channel(feed) if !self.ws.close_sent() => {
                // The hub keeps its own copy (one allocation), whatever the message was borrowed from.
                let payload = match msg {
                    MessageRef::Text(text) => Payload::Text(Arc::from(text)),
                    MessageRef::Binary(bytes) => Payload::Binary(Arc::from(bytes)),
                };
                ctx.commands.push_back(Command::Publish {
                    channel: feed.channel.clone(),
                    event: None,
                    payload,
                });
            }
            Serving::Channel(_) | Serving::Commands(_) => {}
        }
    }

    /// One command-mode frame: a `pushwire.v1` command (a binary frame is a bad command).
    fn handle_command(&mut self, msg: MessageRef<'_>, ctx: &mut Ctx<'_>) {
        if matches!(&self.serving, Serving::Commands(mode) if mode.rooms.backlog_full()) {
            // As many replies held behind commands waiting for the hub as commands may wait:
            // more would be held without bound (§7.4.1: 1008 for a policy violation).
            self.close(CloseCode::POLICY_VIOLATION, "too many commands awaiting an answer", ctx);
            return;
        }
        let Serving::Commands(mode) = &mut self.serving else { return };
        let access = &ctx.config.access;
        let limits = CommandLimits {
            // The hub's presence bound, checked here first so that an oversized info is
            // refused before anything is queued.
            max_info_bytes: ctx.config.hub.presence.max_info_bytes,
            max_token_bytes: access.token_limits.max_token_bytes,
            max_event_name_bytes: ctx.config.transport.max_event_name_bytes,
        };
        let request = match msg {
            MessageRef::Text(text) => parse(text, &limits),
            MessageRef::Binary(_) => {
                let e = CommandError::BadCommand("command mode takes JSON text frames".into());
                return send_in_order(&mut self.ws, &mut mode.rooms, error_reply(None, None, &e), ctx);
            }
        };
        // Refused here, before the channel set records anything: publishing needs what a
        // one-channel connection's publishing needs (on a channel whose policy needs a signed
        // token, that token instead of the static one).
        let early = match &request.command {
            Ok(V1Command::Publish { channel, .. })
                if !ctx.config.websocket.client_publish
                    || (!self.client_publish
                        && !access.policies.needs_token(channel.as_str(), Grant::Publish)) =>
            {
                Some(CommandError::NotAllowed("publishing is not allowed on this connection"))
            }
            _ => None,
        };
        if let Some(e) = early {
            let reply = error_reply(request.req.as_deref(), request.channel.as_ref(), &e);
            return send_in_order(&mut self.ws, &mut mode.rooms, reply, ctx);
        }
        let auth = Authority {
            policies: &access.policies,
            key: access.token_key.as_ref(),
            token_limits: &access.token_limits,
            unix_now_s: ctx.unix_now_s,
        };
        let refresh = matches!(request.command, Ok(V1Command::Refresh { .. }));
        let outcome = mode.rooms.handle_request(request, &auth);
        if let Some(reason) = outcome.token_refusal {
            ctx.metrics.token_refused(reason);
            ctx.note_refused(None, || format!("command refused: token {reason}"));
        }
        if refresh {
            mode.set_expiry(ctx);
        }
        if let Some(reply) = outcome.reply {
            send_json(&mut self.ws, reply, ctx);
        }
        match outcome.action {
            None => {}
            Some(Action::Subscribe { channel, since, user, info, joins }) => {
                // Every command-mode subscriber is a presence member (README "Presence").
                let since = since.map_or(Since::Tail, Since::After);
                let member = Box::new(Joining { user, info, joins });
                ctx.commands.push_back(Command::SubscribeMember { channel: channel.clone(), since, member });
                mode.feeds.push(Feed::new(channel));
            }
            Some(Action::Unsubscribe { channel }) => {
                mode.feeds.retain(|f| f.channel != channel);
                ctx.commands.push_back(Command::Unsubscribe { channel, transport: Transport::WebSocket });
            }
            Some(Action::Publish { channel, event, payload, except_self }) => {
                mode.publishes.push_back(except_self.then(|| channel.clone()));
                ctx.commands.push_back(Command::Publish { channel, event, payload });
            }
            Some(Action::Presence { channel, list }) => {
                ctx.commands.push_back(Command::Presence { channel, list });
            }
        }
    }

    /// A channel's presence, read for a `presence` or `presence_stats` command.
    pub fn handle_presence_list(
        &mut self,
        _channel: ChannelName,
        list: PresenceList,
        ctx: &mut Ctx<'_>,
    ) -> Flow {
        if let Serving::Commands(mode) = &mut self.serving {
            if let Some(reply) = mode.rooms.handle_answer(Answer::Presence(list)) {
                send_json(&mut self.ws, reply, ctx);
            }
            send_ready(&mut self.ws, &mut mode.rooms, ctx);
        }
        Flow::Continue
    }

    /// A join or leave on a channel this connection subscribed to with `joins`: its frame,
    /// `{"type":"join"|"leave","channel":…,"member":{…}}`.
    pub fn handle_presence(&mut self, event: &PresenceEvent, ctx: &mut Ctx<'_>) -> Flow {
        let Serving::Commands(mode) = &self.serving else { return Flow::Continue };
        if !self.ws.close_sent() && mode.feeds.iter().any(|f| f.channel == event.channel) {
            send_json(&mut self.ws, presence_event(event), ctx);
        }
        Flow::Continue
    }

    /// The subscription's replay.
    pub fn handle_subscribed(&mut self, channel: ChannelName, replay: Replay, ctx: &mut Ctx<'_>) -> Flow {
        if let Serving::Commands(mode) = &mut self.serving {
            let start = replay.messages.first().map_or(replay.next, |m| m.id.before());
            let superseded = mode.rooms.oldest_is_superseded();
            if let Some(reply) = mode.rooms.handle_answer(Answer::Subscribed(Ok(start))) {
                send_json(&mut self.ws, reply, ctx);
            }
            // Absent when unsubscribed meanwhile, the feed of a later subscribe when subscribed
            // again: the ok above is all the client gets.
            let feed = mode.feeds.iter_mut().find(|f| f.channel == channel).filter(|_| !superseded);
            if let Some(feed) = feed {
                feed.share_name(channel.clone());
                let before = ctx.commands.len();
                let wire = &mut WsWire::new(&mut self.ws, true, Some(&channel), ctx).skipping(&mut mode.skip);
                feed.handle_replay(replay, true, wire, ctx);
                if ctx.commands.len() > before {
                    mode.reads.push_back(channel);
                }
            }
            // Replies of later commands held behind this one, after its replay.
            send_ready(&mut self.ws, &mut mode.rooms, ctx);
            return Flow::Continue;
        }
        if let Serving::Channel(feed) = &mut self.serving {
            feed.share_name(channel);
            feed.handle_replay(replay, true, &mut WsWire::new(&mut self.ws, self.v1, None, ctx), ctx);
        }
        Flow::Continue
    }

    /// A page read while catching up.
    pub fn handle_page(&mut self, replay: Replay, ctx: &mut Ctx<'_>) -> Flow {
        if let Serving::Commands(mode) = &mut self.serving {
            if let Some(resolver) = &mut mode.resolving {
                if let Some(starts) = resolver.handle_read(&replay) {
                    mode.resolving = None;
                    let channels = std::mem::take(&mut mode.feeds).into_iter().map(|f| f.channel).collect();
                    mode.subscribe_fixed(channels, starts, ctx);
                }
                return Flow::Continue;
            }
            let Some(channel) = mode.reads.pop_front() else { return Flow::Continue };
            if let Some(feed) = mode.feeds.iter_mut().find(|f| f.channel == channel) {
                let before = ctx.commands.len();
                let wire = &mut WsWire::new(&mut self.ws, true, Some(&channel), ctx).skipping(&mut mode.skip);
                feed.handle_page(replay, wire, ctx);
                if ctx.commands.len() > before {
                    mode.reads.push_back(channel);
                }
            }
            return Flow::Continue;
        }
        if let Serving::Channel(feed) = &mut self.serving {
            feed.handle_page(replay, &mut WsWire::new(&mut self.ws, self.v1, None, ctx), ctx);
        }
        Flow::Continue
    }

    /// A client's publish got its id: in command mode, the `ok` reply with the id (and, for
    /// `except_self`, the id this connection's delivery will be skipped at).
    pub fn handle_published(&mut self, id: Cursor, ctx: &mut Ctx<'_>) -> Flow {
        let Serving::Commands(mode) = &mut self.serving else { return Flow::Continue };
        let except_self = mode.publishes.pop_front().flatten();
        // Only on a channel this connection reads: no delivery would ever pass the id else.
        if except_self.is_some_and(|channel| mode.feeds.iter().any(|f| f.channel == channel)) {
            // Bounded: an id whose message never comes (unsubscribed meanwhile) is dropped
            // after MAX_SKIP newer ones.
            if mode.skip.len() >= MAX_SKIP {
                mode.skip.remove(0);
            }
            mode.skip.push(id);
        }
        if let Some(reply) = mode.rooms.handle_answer(Answer::Published(Ok(id))) {
            send_json(&mut self.ws, reply, ctx);
        }
        send_ready(&mut self.ws, &mut mode.rooms, ctx);
        Flow::Continue
    }

    /// The hub refused the subscription or a client's publish: the 101 is already written, so
    /// close with the matching code (1009 for a message too large, else 1011). In command mode
    /// the refused command (the oldest awaiting an answer) gets an `error` reply instead.
    pub fn handle_refused(&mut self, error: HubError, ctx: &mut Ctx<'_>) -> Flow {
        if let Serving::Commands(mode) = &mut self.serving {
            if let Some(refused) = mode.rooms.handle_refused(error) {
                if refused.was_publish {
                    mode.publishes.pop_front();
                }
                if let Some(channel) = &refused.unsubscribed {
                    mode.feeds.retain(|f| &f.channel != channel);
                }
                send_json(&mut self.ws, refused.reply, ctx);
                send_ready(&mut self.ws, &mut mode.rooms, ctx);
                return Flow::Continue;
            }
            // A page read failed: nothing to answer, the connection cannot go on exactly.
        }
        // RFC 6455 §7.4.1: 1009 for a message too big to process, 1011 for a condition that
        // prevented the server from fulfilling the request.
        let code = match error {
            HubError::MessageTooLarge => CloseCode::MESSAGE_TOO_BIG,
            _ => CloseCode::INTERNAL_ERROR,
        };
        self.close(code, "refused by the hub", ctx);
        Flow::Continue
    }

    /// A live message; a slow consumer gets close 1008 (policy violation).
    pub fn handle_delivery(&mut self, msg: &Arc<Message>, ctx: &mut Ctx<'_>) -> Flow {
        if let Serving::Commands(mode) = &mut self.serving {
            if self.ws.close_sent() {
                return Flow::Continue;
            }
            let Some(feed) = mode.feeds.iter_mut().find(|f| f.channel == msg.channel) else {
                return Flow::Continue;
            };
            // This connection's own except_self publishes are skipped by the wire, live or
            // from the history while the channel catches up (`Wire::suppressed`).
            let wire = &mut WsWire::new(&mut self.ws, true, Some(&msg.channel), ctx).skipping(&mut mode.skip);
            let flow = feed.handle_delivery(msg, wire, ctx);
            if let Flow::Close(reason) = flow {
                self.close(CloseCode::POLICY_VIOLATION, reason.as_str(), ctx);
            }
            return flow;
        }
        let Serving::Channel(feed) = &mut self.serving else { return Flow::Continue };
        if self.ws.close_sent() {
            return Flow::Continue;
        }
        let flow = feed.handle_delivery(msg, &mut WsWire::new(&mut self.ws, self.v1, None, ctx), ctx);
        if let Flow::Close(reason) = flow {
            self.close(CloseCode::POLICY_VIOLATION, reason.as_str(), ctx);
        }
        flow
    }

    /// The token that admitted a one-channel or fixed-channels connection expired: close 4001
    /// `token expired` (command mode, which can `refresh`, keeps its own expiry).
    pub fn handle_token_expired(&mut self, ctx: &mut Ctx<'_>) -> (bool, Flow) {
        if matches!(self.liveness(), Liveness::Closing { .. }) {
            return (false, Flow::Continue);
        }
        // Centrifugo's rule, as command mode's; 4001 is in RFC 6455 §7.4.2's private-use range.
        self.close(CloseCode(CLOSE_TOKEN_EXPIRED), "token expired", ctx);
        Metrics::inc(&ctx.metrics.token_expiry_closes);
        (true, Flow::Continue)
    }

    /// The server is shutting down: close 1001 (going away, RFC 6455 §7.4.1) and wait for the
    /// client's close.
    pub fn handle_drain(&mut self, ctx: &mut Ctx<'_>) -> Flow {
        self.close(CloseCode::GOING_AWAY, "server shutting down", ctx);
        Flow::Continue
    }

    /// The server API unsubscribes the connection's user from `channel`: a command-mode
    /// connection holding it leaves it and is told `{"type":"unsubscribe","channel":…,
    /// "reason":…}`; other WebSockets are left as they are.
    pub fn handle_unsubscribe(&mut self, channel: &ChannelName, reason: &str, ctx: &mut Ctx<'_>) -> Flow {
        if let Serving::Commands(mode) = &mut self.serving {
            if mode.rooms.remove(channel) {
                mode.feeds.retain(|f| &f.channel != channel);
                let transport = Transport::WebSocket;
                ctx.commands.push_back(Command::Unsubscribe { channel: channel.clone(), transport });
                let mut notice =
                    format!("{{\"type\":\"unsubscribe\",\"channel\":\"{}\",\"reason\":", channel.as_str())
                        .into_bytes();
                crate::protocol::envelope::write_json_string(&mut notice, reason);
                notice.push(b'}');
                send_json(&mut self.ws, notice, ctx);
            }
        }
        Flow::Continue
    }

    /// The server API disconnects the connection: close with its code and reason, then wait
    /// for the client's close.
    pub fn handle_disconnect(&mut self, code: u16, reason: &str, ctx: &mut Ctx<'_>) -> Flow {
        self.close(CloseCode(code), reason, ctx);
        Flow::Continue
    }

    /// Output drained: continue catching up.
    pub fn handle_drained(&mut self, ctx: &mut Ctx<'_>) {
        if let Serving::Channel(feed) = &mut self.serving {
            feed.handle_drained(ctx);
        }
        if let Serving::Commands(mode) = &mut self.serving {
            for feed in &mut mode.feeds {
                let before = ctx.commands.len();
                feed.handle_drained(ctx);
                if ctx.commands.len() > before {
                    mode.reads.push_back(feed.channel.clone());
                }
            }
        }
    }

    /// The next heartbeat or closing deadline, or the token's expiry.
    pub fn poll_timeout(&self, limits: &Limits) -> Option<Instant> {
        let liveness = match self.liveness() {
            Liveness::Quiet { since } => limits.ping_interval.map(|every| since + every),
            Liveness::Pinged { at } => Some(at + limits.pong_timeout),
            Liveness::Closing { deadline } => return Some(deadline),
        };
        match (&self.serving, liveness) {
            (Serving::Commands(mode), Some(at)) => Some(mode.expires_at.map_or(at, |e| e.min(at))),
            (Serving::Commands(mode), None) => mode.expires_at,
            (_, liveness) => liveness,
        }
    }

    /// Pings a quiet connection, closes one that stayed silent, ends a closing handshake the
    /// peer did not finish.
    pub fn handle_timeout(&mut self, ctx: &mut Ctx<'_>) -> Flow {
        let expired = match &self.serving {
            Serving::Commands(mode) => mode.expires_at.is_some_and(|at| ctx.now >= at),
            _ => false,
        };
        if expired && !matches!(self.liveness(), Liveness::Closing { .. }) {
            // Centrifugo's rule: a connection whose token expired without a `refresh` ends;
            // 4001 is in RFC 6455 §7.4.2's private-use range (4000-4999).
            Metrics::inc(&ctx.metrics.token_expiry_closes);
            ctx.metrics.token_expired(crate::metrics::Transport::WebSocket);
            self.close(CloseCode(CLOSE_TOKEN_EXPIRED), "token expired", ctx);
            return Flow::Continue;
        }
        let limits = &ctx.config.websocket;
        match self.liveness() {
            Liveness::Closing { deadline } if ctx.now >= deadline => {
                return Flow::Close(CloseReason::WebSocketCloseTimeout)
            }
            Liveness::Closing { .. } => {}
            Liveness::Pinged { at } if ctx.now >= at + limits.pong_timeout => {
                self.close(CloseCode::GOING_AWAY, "ping timeout", ctx);
            }
            Liveness::Pinged { .. } => {}
            Liveness::Quiet { since } => {
                if limits.ping_interval.is_some_and(|every| ctx.now >= since + every) {
                    // RFC 6455 §5.5.2: a ping may serve as a keepalive or to verify that the
                    // remote endpoint is still responsive.
                    let _ = self.ws.send_ping(b"", &mut no_mask, ctx.out);
                    self.set_liveness(Liveness::Pinged { at: ctx.now });
                }
            }
        }
        Flow::Continue
    }

    fn liveness(&self) -> Liveness {
        let at = self.liveness_at;
        match self.liveness_kind {
            LivenessKind::Quiet => Liveness::Quiet { since: at },
            LivenessKind::Pinged => Liveness::Pinged { at },
            LivenessKind::Closing => Liveness::Closing { deadline: at },
        }
    }

    fn set_liveness(&mut self, liveness: Liveness) {
        (self.liveness_kind, self.liveness_at) = match liveness {
            Liveness::Quiet { since } => (LivenessKind::Quiet, since),
            Liveness::Pinged { at } => (LivenessKind::Pinged, at),
            Liveness::Closing { deadline } => (LivenessKind::Closing, deadline),
        };
    }

    /// Starts the server's closing handshake (§7.1.2) and waits for the peer's close.
    fn close(&mut self, code: CloseCode, reason: &str, ctx: &mut Ctx<'_>) {
        let frame = CloseFrame { code, reason: reason.to_string() };
        if self.ws.send_close(Some(frame), &mut no_mask, ctx.out).is_ok() {
            self.set_liveness(Liveness::Closing { deadline: ctx.now + ctx.config.websocket.close_timeout });
        }
    }
}
