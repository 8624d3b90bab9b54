//! Several channels on one HTTP response (issue #13): `GET /channels/a,b,c` or
//! `GET /channels?channel=a&channel=b`, as an event stream, a chunked NDJSON stream, a long
//! poll or a short poll (the request forms are parsed by [`super::rooms::parse_channels`]).
//!
//! Implements:
//! - **Labelled messages.** Every message is the JSON envelope with the channel first
//!   (`{"channel":"a","id":"EPOCH:OFFSET","data":"…"}`), encoded once per message and format
//!   and shared by every subscriber ([`Encoding::SseChannelEvent`],
//!   [`Encoding::NdjsonChannelChunk`], [`Encoding::ChannelJsonEnvelope`]). Gaps and the
//!   stream's `open` lines name their channel too: a gap is per channel.
//! - **Exact resume per channel.** An event stream's `id:` is the composite cursor of every
//!   channel ([`crate::hub::composite`]): the compact form `HASH.O1.O2.O3` once every channel
//!   has a position (always, after the opening `id:` that follows the replays), so the
//!   browser's `Last-Event-ID` resumes each channel exactly. A poll answer's `next` is the full
//!   form `E:O,E:O,E:O`. `?since=` takes either form; a compact one is resolved against the
//!   channels' current epochs first (one history read per channel, [`Resolver`]), and when the
//!   epochs changed every channel restarts with a gap. An unreadable `Last-Event-ID` is a gap on
//!   every channel, never a refusal (issue #13 item 7).
//! - The cursor, catch-up and slow-consumer rules are each channel's [`Feed`]'s.
//!
//! Does not: subscribe to channels after the request (that is `/ws` command mode), or publish.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use crate::http1::chunked::{encode_chunk, LAST_CHUNK};
use crate::http1::response::{write_full, write_head, Framing};
use crate::hub::composite::{write_compact, write_full as write_full_composite};
use crate::hub::{ChannelName, Command, Cursor, Encoding, Epoch, HubError, Message, Replay, Since};
use crate::metrics::Metrics;
use crate::protocol::envelope::{gap_envelope, message_envelope, open_envelope, with_channel};
use crate::protocol::Transport;
use crate::sse::{encode_event, encode_retry};

use super::feed::{self, Feed, Wire};
use super::rooms::{Resume, Start};
use super::short_poll::count;
use super::{CloseReason, Ctx, Flow};

/// A channel's start as a [`Feed`] takes it.
pub fn feed_start(start: Start) -> feed::Start {
    match start {
        Start::Tail => feed::Start::Since(Since::Tail),
        Start::After(cursor) => feed::Start::Since(Since::After(cursor)),
        Start::Lost => feed::Start::Lost,
    }
}

/// Learns the channels' current epochs for a compact composite `since`: one history read per
/// channel, answered in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolver {
    resume: Resume,
    epochs: Vec<Epoch>,
    channels: usize,
}

impl Resolver {
    /// Each channel's start, at once (`Ok`), or a resolver whose reads are queued (`Err`).
    pub fn begin(
        channels: &[ChannelName],
        resume: Resume,
        ctx: &mut Ctx<'_>,
    ) -> Result<Vec<Start>, Resolver> {
        if let Resume::Each(starts) = resume {
            return Ok(starts);
        }
        for channel in channels {
            ctx.commands.push_back(Command::Read {
                channel: channel.clone(),
                since: Since::Tail,
                max_messages: 1,
            });
        }
        Err(Resolver { resume, epochs: Vec::with_capacity(channels.len()), channels: channels.len() })
    }

    /// One read's answer; the starts once every channel answered.
    pub fn handle_read(&mut self, replay: &Replay) -> Option<Vec<Start>> {
        self.epochs.push(replay.next.epoch);
        (self.epochs.len() == self.channels).then(|| self.resume.clone().resolve(&self.epochs))
    }
}

/// The JSON envelope of `msg` naming its channel.
pub fn channel_envelope(msg: &Message) -> Vec<u8> {
    with_channel(&msg.channel, message_envelope(msg))
}

/// A multi-channel event stream's event without its `id:` line.
pub fn encode_sse_channel_event(msg: &Message) -> Vec<u8> {
    let json = String::from_utf8(channel_envelope(msg)).unwrap_or_default();
    let mut out = Vec::with_capacity(json.len() + 8);
    // JSON text escapes CR and LF, so this is one `data:` line.
    let _ = encode_event(None, None, &json, &mut out);
    out
}

/// A multi-channel NDJSON stream's chunk for `msg`.
pub fn encode_ndjson_channel_chunk(msg: &Message) -> Vec<u8> {
    let mut line = channel_envelope(msg);
    line.push(b'\n');
    let mut out = Vec::with_capacity(line.len() + 12);
    encode_chunk(&line, &mut out);
    out
}

/// The wire format of a multi-channel streaming response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    /// `text/event-stream`.
    Sse,
    /// Chunked `application/x-ndjson`.
    Ndjson,
}

impl StreamKind {
    /// The transport this stream is.
    pub fn transport(self) -> Transport {
        match self {
            StreamKind::Sse => Transport::Sse,
            StreamKind::Ndjson => Transport::Stream,
        }
    }

    fn heartbeat(self) -> &'static [u8] {
        match self {
            StreamKind::Sse => b": keepalive\n",
            StreamKind::Ndjson => b"15\r\n{\"type\":\"heartbeat\"}\n\r\n",
        }
    }

    /// RFC 9112 §7.1: the last-chunk ends a chunked body; an event stream is close-delimited.
    fn end(self) -> &'static [u8] {
        match self {
            StreamKind::Sse => b"",
            StreamKind::Ndjson => LAST_CHUNK,
        }
    }

    fn write_head(self, ctx: &mut Ctx<'_>) {
        let mut head = Vec::new();
        let (content_type, framing) = match self {
            StreamKind::Sse => ("text/event-stream", Framing::Close),
            StreamKind::Ndjson => ("application/x-ndjson", Framing::Chunked),
        };
        let fields = ctx.fields(&[
            ("Content-Type", content_type),
            ("Cache-Control", "no-cache"),
            ("X-Accel-Buffering", "no"),
        ]);
        write_head(&mut head, 200, &fields, framing, self == StreamKind::Sse);
        if self == StreamKind::Sse {
            encode_retry(ctx.config.transport.sse_retry.as_millis() as u64, &mut head);
            head.push(b'\n');
        }
        ctx.out.push_owned(head);
    }
}

/// One channel's view of a multi-channel stream: writes its messages, gaps and opening in the
/// stream's format. An event's `id:` names every channel's position: the other channels' as
/// their feeds hold them (`before` and `after` this one), this one's as the call names it (its
/// feed is the one being stepped). Each cursor is kept once, in its feed: no second list of
/// positions per connection (issue #13's bytes per idle subscription).
struct ChannelWire<'a> {
    kind: StreamKind,
    channel: ChannelName,
    before: &'a [Feed],
    after: &'a [Feed],
}

impl<'a> ChannelWire<'a> {
    /// Feed `i` of `feeds`, and the wire it writes through; `None` when there is no such feed.
    fn of(kind: StreamKind, feeds: &'a mut [Feed], i: usize) -> Option<(&'a mut Feed, ChannelWire<'a>)> {
        let (before, rest) = feeds.split_at_mut(i);
        let (feed, after) = rest.split_first_mut()?;
        let channel = feed.channel.clone();
        Some((feed, ChannelWire { kind, channel, before, after }))
    }

    /// The compact composite id with this channel at `this`. Every channel has a position
    /// once the stream is streaming (each feed's start is set before any replay is written).
    fn composite(&self, this: Cursor) -> String {
        let mut id = String::new();
        let cursors = self
            .before
            .iter()
            .map(Feed::position)
            .chain(std::iter::once(this))
            .chain(self.after.iter().map(Feed::position));
        write_compact(&mut id, cursors);
        id
    }

    fn write_line(&self, json: Vec<u8>, ctx: &mut Ctx<'_>) {
        let mut line = with_channel(&self.channel, json);
        line.push(b'\n');
        let mut out = Vec::new();
        encode_chunk(&line, &mut out);
        ctx.out.push_owned(out);
    }
}

impl Wire for ChannelWire<'_> {
    fn encode(&self, msg: &Message) -> Arc<[u8]> {
        match self.kind {
            StreamKind::Sse => msg.encoded(Encoding::SseChannelEvent, encode_sse_channel_event),
            StreamKind::Ndjson => msg.encoded(Encoding::NdjsonChannelChunk, encode_ndjson_channel_chunk),
        }
    }

    fn write_message(&mut self, bytes: Arc<[u8]>, ctx: &mut Ctx<'_>) {
        ctx.out.push_shared(bytes);
    }

    fn write_message_at(&mut self, id: Cursor, bytes: Arc<[u8]>, ctx: &mut Ctx<'_>) {
        if self.kind == StreamKind::Sse {
            // The event's `id:` is this connection's own (every channel's position), written
            // before the shared `data:` line and blank line that dispatch the event.
            ctx.out.push_owned(format!("id: {}\n", self.composite(id)).into_bytes());
        }
        ctx.out.push_shared(bytes);
    }

    fn write_gap(&mut self, next: Cursor, ctx: &mut Ctx<'_>) {
        match self.kind {
            StreamKind::Sse => {
                let data =
                    String::from_utf8(with_channel(&self.channel, gap_envelope(next))).unwrap_or_default();
                let mut out = Vec::new();
                let _ = encode_event(Some(&self.composite(next)), Some("gap"), &data, &mut out);
                ctx.out.push_owned(out);
            }
            StreamKind::Ndjson => self.write_line(gap_envelope(next), ctx),
        }
    }

    fn write_open(&mut self, start: Cursor, ctx: &mut Ctx<'_>) {
        // An event stream tells its start once, as one `id:` for every channel (see
        // `MultiStream::handle_subscribed`).
        if self.kind == StreamKind::Ndjson {
            self.write_line(open_envelope(start), ctx);
        }
    }
}

/// Where a multi-channel stream is.
#[derive(Debug)]
enum StreamPhase {
    /// Reading the channels' epochs for a compact `since`.
    Resolving(Resolver),
    /// Waiting for every channel's replay (kept until all are in, so that the first `id:`
    /// already names every channel).
    Subscribing(Vec<Option<Replay>>),
    /// The head is written; deliveries flow.
    Streaming,
}

/// An event stream or NDJSON stream over several channels.
#[derive(Debug)]
pub struct MultiStream {
    kind: StreamKind,
    /// One feed per channel, in the request's order (the composite id's order); each holds its
    /// channel's cursor, the only copy.
    feeds: Vec<Feed>,
    phase: StreamPhase,
    /// The feed of each page read in flight, oldest first (a `Read` reply names no channel).
    reads: VecDeque<usize>,
    next_keepalive: Option<Instant>,
}

impl MultiStream {
    /// Starts the stream: resolves a compact `since` or subscribes every channel at once.
    pub fn start(
        kind: StreamKind,
        channels: Vec<ChannelName>,
        resume: Resume,
        ctx: &mut Ctx<'_>,
    ) -> MultiStream {
        let mut stream = MultiStream {
            kind,
            feeds: channels.into_iter().map(Feed::new).collect(),
            phase: StreamPhase::Streaming,
            reads: VecDeque::new(),
            next_keepalive: None,
        };
        let channels: Vec<ChannelName> = stream.feeds.iter().map(|f| f.channel.clone()).collect();
        match Resolver::begin(&channels, resume, ctx) {
            Ok(starts) => stream.subscribe(starts, ctx),
            Err(resolver) => stream.phase = StreamPhase::Resolving(resolver),
        }
        stream
    }

    fn subscribe(&mut self, starts: Vec<Start>, ctx: &mut Ctx<'_>) {
        if starts.contains(&Start::Lost) {
            Metrics::inc(&ctx.metrics.last_event_id_unreadable);
        }
        for (feed, start) in self.feeds.iter_mut().zip(starts) {
            let (started, command) =
                Feed::starting(feed.channel.clone(), feed_start(start), self.kind.transport());
            *feed = started;
            ctx.commands.push_back(command);
        }
        self.phase = StreamPhase::Subscribing(vec![None; self.feeds.len()]);
    }

    /// One channel's replay; once all are in, the head, every replay and the opening id.
    pub fn handle_subscribed(&mut self, channel: ChannelName, replay: Replay, ctx: &mut Ctx<'_>) -> Flow {
        let StreamPhase::Subscribing(replays) = &mut self.phase else { return Flow::Continue };
        let Some(i) = self.feeds.iter().position(|f| f.channel == channel) else { return Flow::Continue };
        self.feeds[i].share_name(channel);
        replays[i] = Some(replay);
        if replays.iter().any(Option::is_none) {
            return Flow::Continue;
        }
        let StreamPhase::Subscribing(replays) = std::mem::replace(&mut self.phase, StreamPhase::Streaming)
        else {
            return Flow::Continue;
        };
        self.kind.write_head(ctx);
        self.next_keepalive = Some(ctx.now + ctx.config.transport.keepalive_interval);
        // Every channel's start, before any replay, so that every `id:` written by a replay
        // names every channel.
        for (feed, replay) in self.feeds.iter_mut().zip(&replays) {
            if let Some(r) = replay {
                feed.set_start(r.messages.first().map_or(r.next, |m| m.id.before()));
            }
        }
        if self.kind == StreamKind::Sse {
            // HTML "dispatch the event", step 1 sets the last event ID even with no data, so
            // the browser knows where every channel starts before its first message.
            let mut id = String::new();
            write_compact(&mut id, self.feeds.iter().map(Feed::position));
            ctx.out.push_owned(format!("id: {id}\n\n").into_bytes());
        }
        for (i, replay) in replays.into_iter().enumerate() {
            let Some(replay) = replay else { continue };
            let before = ctx.commands.len();
            let Some((feed, mut wire)) = ChannelWire::of(self.kind, &mut self.feeds, i) else { continue };
            feed.handle_replay(replay, true, &mut wire, ctx);
            if ctx.commands.len() > before {
                self.reads.push_back(i);
            }
        }
        Flow::Continue
    }

    /// A read's answer: an epoch for the resolver, or a page while a channel catches up.
    pub fn handle_read(&mut self, replay: Replay, ctx: &mut Ctx<'_>) -> Flow {
        if let StreamPhase::Resolving(resolver) = &mut self.phase {
            if let Some(starts) = resolver.handle_read(&replay) {
                self.subscribe(starts, ctx);
            }
            return Flow::Continue;
        }
        let Some(i) = self.reads.pop_front() else { return Flow::Continue };
        let before = ctx.commands.len();
        let Some((feed, mut wire)) = ChannelWire::of(self.kind, &mut self.feeds, i) else {
            return Flow::Continue;
        };
        feed.handle_page(replay, &mut wire, ctx);
        if ctx.commands.len() > before {
            self.reads.push_back(i);
        }
        Flow::Continue
    }

    /// A live message of one of the channels; a slow consumer's response is ended.
    pub fn handle_delivery(&mut self, msg: &Arc<Message>, ctx: &mut Ctx<'_>) -> Flow {
        if !matches!(self.phase, StreamPhase::Streaming) {
            return Flow::Continue; // The replay that starts the channel has it.
        }
        let Some(i) = self.feeds.iter().position(|f| f.channel == msg.channel) else { return Flow::Continue };
        let Some((feed, mut wire)) = ChannelWire::of(self.kind, &mut self.feeds, i) else {
            return Flow::Continue;
        };
        let flow = feed.handle_delivery(msg, &mut wire, ctx);
        if matches!(flow, Flow::Close(_)) {
            ctx.out.push_bytes(self.kind.end());
        }
        flow
    }

    /// Output drained: channels catching up read their next page.
    pub fn handle_drained(&mut self, ctx: &mut Ctx<'_>) {
        if !matches!(self.phase, StreamPhase::Streaming) {
            return;
        }
        for (i, feed) in self.feeds.iter_mut().enumerate() {
            let before = ctx.commands.len();
            feed.handle_drained(ctx);
            if ctx.commands.len() > before {
                self.reads.push_back(i);
            }
        }
    }

    /// The hub refused a subscription or a read. Before the head, the response is an HTTP
    /// error with `Connection: close` (closing ends the subscriptions already made); after
    /// it, the stream ends.
    pub fn handle_refused(&mut self, error: HubError, ctx: &mut Ctx<'_>) -> Flow {
        if self.next_keepalive.is_none() {
            let mut out = Vec::new();
            let fields = ctx.fields(&[("Content-Type", "text/plain")]);
            let body = format!("{error}\n");
            write_full(&mut out, error.status_hint(), &fields, body.as_bytes(), false, true);
            ctx.out.push_owned(out);
        } else {
            ctx.out.push_bytes(self.kind.end());
        }
        Flow::Close(CloseReason::RefusedByHub)
    }

    /// The server is shutting down: end the response.
    pub fn handle_drain(&mut self, ctx: &mut Ctx<'_>) -> Flow {
        ctx.out.push_bytes(self.kind.end());
        Flow::Close(CloseReason::Draining)
    }

    /// The token that admitted the stream expired: the format's notice (once the head is
    /// written: `event: token_expired` or the line `{"type":"token_expired"}`), then the end.
    pub fn handle_token_expired(&mut self, ctx: &mut Ctx<'_>) -> (bool, Flow) {
        if self.next_keepalive.is_some() {
            ctx.out.push_bytes(match self.kind {
                StreamKind::Sse => super::sse::TOKEN_EXPIRED_EVENT,
                StreamKind::Ndjson => super::stream::TOKEN_EXPIRED_CHUNK,
            });
            ctx.out.push_bytes(self.kind.end());
        }
        (true, Flow::Close(CloseReason::TokenExpired))
    }

    /// When the next heartbeat is due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_keepalive
    }

    /// Writes the heartbeat when due.
    pub fn handle_timeout(&mut self, ctx: &mut Ctx<'_>) -> Flow {
        if self.next_keepalive.is_some_and(|t| ctx.now >= t) {
            ctx.out.push_bytes(self.kind.heartbeat());
            self.next_keepalive = Some(ctx.now + ctx.config.transport.keepalive_interval);
        }
        Flow::Continue
    }

    /// The transport, for metrics.
    pub fn kind(&self) -> StreamKind {
        self.kind
    }

    /// The channels, in the request's order.
    pub fn channels(&self) -> impl Iterator<Item = &ChannelName> {
        self.feeds.iter().map(|f| &f.channel)
    }
}

/// Where a multi-channel poll is.
#[derive(Debug)]
enum PollPhase {
    /// Reading the channels' epochs for a compact `since`.
    Resolving(Resolver),
    /// Waiting for every channel's read (short) or subscription (long).
    Collecting,
    /// Long poll: nothing followed any cursor; waiting for a delivery or the deadline.
    Parked,
    /// Long poll: a delivery came on this channel; waiting for the read that collects it.
    Reading(usize),
    /// Answered.
    Done,
}

/// A short or long poll over several channels:
/// `{"messages":[{"channel":"a","id":…,"data":…},…],"next":"E:O,E:O","gaps":["b"]}`.
#[derive(Debug)]
pub struct MultiPoll {
    channels: Vec<ChannelName>,
    /// `None`: a short poll (reads, answered at once); else the long poll's deadline.
    deadline: Option<Instant>,
    phase: PollPhase,
    replays: Vec<Option<Replay>>,
    /// Channels whose client position could not be read: reported as gaps.
    lost: Vec<bool>,
    keep_alive: bool,
    head_only: bool,
}

impl MultiPoll {
    /// Starts a poll: `deadline` `None` for a short poll.
    pub fn start(
        channels: Vec<ChannelName>,
        resume: Resume,
        deadline: Option<Instant>,
        keep_alive: bool,
        head_only: bool,
        ctx: &mut Ctx<'_>,
    ) -> MultiPoll {
        let n = channels.len();
        let mut poll = MultiPoll {
            channels,
            deadline,
            phase: PollPhase::Collecting,
            replays: vec![None; n],
            lost: vec![false; n],
            keep_alive,
            head_only,
        };
        match Resolver::begin(&poll.channels, resume, ctx) {
            Ok(starts) => poll.collect(starts, ctx),
            Err(resolver) => poll.phase = PollPhase::Resolving(resolver),
        }
        poll
    }

    /// The channels, in the request's order.
    pub fn channels(&self) -> &[ChannelName] {
        &self.channels
    }

    /// True for a long poll.
    pub fn is_long(&self) -> bool {
        self.deadline.is_some()
    }

    /// True while parked (for metrics).
    pub fn is_parked(&self) -> bool {
        matches!(self.phase, PollPhase::Parked)
    }

    /// Uncounts a parked poll dropped unanswered (its connection closed).
    pub fn uncount(&self, metrics: &Metrics) {
        if self.is_parked() {
            metrics.unpark();
        }
    }

    fn collect(&mut self, starts: Vec<Start>, ctx: &mut Ctx<'_>) {
        let max_messages = ctx.config.transport.max_batch_messages;
        for (i, start) in starts.into_iter().enumerate() {
            let since = match start {
                Start::After(cursor) => Since::After(cursor),
                Start::Tail => Since::Tail,
                Start::Lost => {
                    self.lost[i] = true;
                    Since::Tail
                }
            };
            let channel = self.channels[i].clone();
            ctx.commands.push_back(if self.is_long() {
                Command::Subscribe { channel, since, transport: Transport::LongPoll }
            } else {
                Command::Read { channel, since, max_messages }
            });
        }
        self.phase = PollPhase::Collecting;
    }

    /// A long poll's subscription replay.
    pub fn handle_subscribed(&mut self, channel: ChannelName, replay: Replay, ctx: &mut Ctx<'_>) -> Flow {
        let Some(i) = self.channels.iter().position(|c| *c == channel) else { return Flow::Continue };
        self.replays[i] = Some(replay);
        self.collected(ctx)
    }

    /// A read: an epoch for the resolver, a short poll's channel, or a long poll's collection.
    pub fn handle_read(&mut self, replay: Replay, ctx: &mut Ctx<'_>) -> Flow {
        match &mut self.phase {
            PollPhase::Resolving(resolver) => {
                if let Some(starts) = resolver.handle_read(&replay) {
                    self.collect(starts, ctx);
                }
                Flow::Continue
            }
            PollPhase::Collecting => {
                // Reads are answered in the order they were queued.
                if let Some(slot) = self.replays.iter_mut().find(|r| r.is_none()) {
                    *slot = Some(replay);
                }
                self.collected(ctx)
            }
            PollPhase::Reading(i) => {
                let i = *i;
                self.replays[i] = Some(replay);
                self.answer(ctx)
            }
            PollPhase::Parked | PollPhase::Done => Flow::Continue,
        }
    }

    fn collected(&mut self, ctx: &mut Ctx<'_>) -> Flow {
        if self.replays.iter().any(Option::is_none) {
            return Flow::Continue;
        }
        let max = ctx.config.transport.max_batch_messages;
        for replay in self.replays.iter_mut().flatten() {
            if replay.messages.len() > max {
                replay.messages.truncate(max);
                replay.next = replay.messages[max - 1].id;
            }
        }
        let news = self.replays.iter().flatten().any(|r| r.gap || !r.messages.is_empty());
        let waits = self.deadline.is_some_and(|d| ctx.now < d);
        if news || self.lost.contains(&true) || !waits {
            return self.answer(ctx);
        }
        self.phase = PollPhase::Parked;
        ctx.metrics.count_parked();
        Flow::Continue
    }

    fn next_of(&self, i: usize) -> Option<Cursor> {
        self.replays[i].as_ref().map(|r| r.next)
    }

    /// A live message while parked: read everything after the channel's cursor.
    pub fn handle_delivery(&mut self, msg: &Arc<Message>, ctx: &mut Ctx<'_>) -> Flow {
        if !self.is_parked() {
            return Flow::Continue;
        }
        let Some(i) = self.channels.iter().position(|c| *c == msg.channel) else { return Flow::Continue };
        let Some(next) = self.next_of(i) else { return Flow::Continue };
        // A delivery queued before the subscription may repeat what the replay had.
        if msg.id.epoch == next.epoch && msg.id.offset <= next.offset {
            return Flow::Continue;
        }
        ctx.metrics.unpark();
        self.phase = PollPhase::Reading(i);
        ctx.commands.push_back(Command::Read {
            channel: self.channels[i].clone(),
            since: Since::After(next),
            max_messages: ctx.config.transport.max_batch_messages,
        });
        Flow::Continue
    }

    /// When the wait ends.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadline.filter(|_| self.is_parked())
    }

    /// At the deadline, answers with no messages and the same cursors.
    pub fn handle_timeout(&mut self, ctx: &mut Ctx<'_>) -> Flow {
        if self.is_parked() && self.deadline.is_some_and(|d| ctx.now >= d) {
            ctx.metrics.unpark();
            return self.answer(ctx);
        }
        Flow::Continue
    }

    /// The token that admitted the poll expired: a parked poll is answered now, as at its
    /// deadline (the connection stays for the next request, with a fresh token).
    pub fn handle_token_expired(&mut self, ctx: &mut Ctx<'_>) -> (bool, Flow) {
        if self.is_parked() {
            ctx.metrics.unpark();
            return (true, self.answer(ctx));
        }
        (false, Flow::Continue)
    }

    /// The server is shutting down: a parked poll is answered now, with `Connection: close`.
    pub fn handle_drain(&mut self, ctx: &mut Ctx<'_>) -> Flow {
        self.keep_alive = false;
        if self.is_parked() {
            ctx.metrics.unpark();
            return self.answer(ctx);
        }
        Flow::Continue
    }

    /// The hub refused a command: an HTTP error (nothing is written before the answer).
    pub fn handle_refused(&mut self, error: HubError, ctx: &mut Ctx<'_>) -> Flow {
        if self.is_parked() {
            ctx.metrics.unpark();
        }
        self.phase = PollPhase::Done;
        let mut out = Vec::new();
        let fields = ctx.fields(&[("Content-Type", "text/plain")]);
        write_full(
            &mut out,
            error.status_hint(),
            &fields,
            format!("{error}\n").as_bytes(),
            self.head_only,
            true,
        );
        ctx.out.push_owned(out);
        Flow::Close(CloseReason::RefusedByHub)
    }

    /// Writes the answer (every channel's messages in request order, each channel's in offset
    /// order) and ends the long poll's subscriptions.
    fn answer(&mut self, ctx: &mut Ctx<'_>) -> Flow {
        self.phase = PollPhase::Done;
        let mut body = b"{\"messages\":[".to_vec();
        let mut first = true;
        for replay in self.replays.iter().flatten() {
            count(replay, ctx.metrics);
            for msg in &replay.messages {
                if !first {
                    body.push(b',');
                }
                first = false;
                body.extend_from_slice(&msg.encoded(Encoding::ChannelJsonEnvelope, channel_envelope));
            }
        }
        let mut next = String::new();
        write_full_composite(&mut next, (0..self.channels.len()).map(|i| self.next_of(i)));
        body.extend_from_slice(b"],\"next\":\"");
        body.extend_from_slice(next.as_bytes());
        body.extend_from_slice(b"\",\"gaps\":[");
        let mut first = true;
        for (i, channel) in self.channels.iter().enumerate() {
            let gap = self.lost[i] || self.replays[i].as_ref().is_some_and(|r| r.gap);
            if gap {
                if self.lost[i] {
                    Metrics::inc(&ctx.metrics.gaps_signalled);
                }
                if !first {
                    body.push(b',');
                }
                first = false;
                body.push(b'"');
                body.extend_from_slice(channel.as_str().as_bytes());
                body.push(b'"');
            }
        }
        body.extend_from_slice(b"]}\n");
        let mut out = Vec::new();
        let fields = ctx.fields(&[("Content-Type", "application/json"), ("Cache-Control", "no-store")]);
        write_full(&mut out, 200, &fields, &body, self.head_only, !self.keep_alive);
        ctx.out.push_owned(out);
        if self.is_long() {
            for channel in &self.channels {
                ctx.commands.push_back(Command::Unsubscribe {
                    channel: channel.clone(),
                    transport: Transport::LongPoll,
                });
            }
        }
        if self.keep_alive {
            Flow::Complete
        } else {
            Flow::Close(CloseReason::LongPollAnswered)
        }
    }
}
