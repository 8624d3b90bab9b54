//! The one contract every streaming transport keeps: where a subscriber is in its channel, how
//! it catches up, and when it is a slow consumer.
//!
//! A subscription starts with the hub's replay (everything after the client's cursor, or a gap
//! flag) and continues with live deliveries. Replay and registration happen atomically in the
//! hub, but a delivery queued just before the subscription may still reach the new subscriber,
//! so deliveries at or before the cursor are skipped; a delivery beyond the next offset means
//! lost messages, and the subscriber is told of the gap instead of silently skipping.
//!
//! **Catching up.** A replay can be far larger than a connection's send buffer. The feed writes
//! replayed messages only while they fit under [`crate::transport::Limits::max_send_buffer_bytes`],
//! then *catches up*: each time the output drains below half the bound it reads the next page
//! after its cursor from the hub's history (live deliveries are ignored meanwhile; they are in
//! the history, and if they leave it first the hub reports the gap). A page that reaches the
//! tail makes the feed live again. A live subscriber whose next message does not fit is a
//! **slow consumer**: its connection is closed and its client resumes from its cursor, losing
//! nothing while the history covers it.
//!
//! Does not: choose a wire format; a [`Wire`] writes messages and gaps in its own.

use std::sync::Arc;

use crate::hub::{ChannelName, Command, Cursor, Message, Replay, Since};
use crate::protocol::Transport;

use super::{CloseReason, Ctx, Flow};
use crate::metrics::Metrics;

/// What a transport should do with one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Already sent (it was replayed): skip it.
    Skip,
    /// The next message: send it.
    Send,
    /// Messages between the cursor and this one are missing: signal a gap, then send it.
    GapThenSend,
}

/// Where a subscription starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// As the hub answers this [`Since`] (see the hub's gap rules).
    Since(Since),
    /// From now, with a gap signal first: the client had a position the server cannot read
    /// (an unreadable `Last-Event-ID`, issue #13 item 7). Nothing is replayed, so nothing the
    /// client already has is sent twice; the gap tells it that it may have missed messages.
    Lost,
}

impl From<Since> for Start {
    fn from(since: Since) -> Start {
        Start::Since(since)
    }
}

/// How one transport puts messages and gap signals on the wire.
pub trait Wire {
    /// The message in this wire format, encoded once per message and shared by every
    /// subscriber (see [`Message::encoded`]).
    fn encode(&self, msg: &Message) -> Arc<[u8]>;
    /// Queues an encoded message.
    fn write_message(&mut self, bytes: Arc<[u8]>, ctx: &mut Ctx<'_>);
    /// Queues an encoded message whose id is `id`: a wire that writes a per-connection id
    /// beside the shared bytes (a multi-channel SSE `id:`) needs it; others just write it.
    fn write_message_at(&mut self, id: Cursor, bytes: Arc<[u8]>, ctx: &mut Ctx<'_>) {
        let _ = id;
        self.write_message(bytes, ctx);
    }
    /// Queues the signal that messages before `next` may have been lost.
    fn write_gap(&mut self, next: Cursor, ctx: &mut Ctx<'_>);
    /// Queues the subscription's starting cursor, so a client that loses the connection
    /// before its first message can still resume exactly.
    fn write_open(&mut self, start: Cursor, ctx: &mut Ctx<'_>);

    /// True for a message this connection must not be sent (its own `except_self` publish):
    /// the cursor moves past it unsent, on a live delivery and in a replay alike.
    fn suppressed(&mut self, _msg: &Message) -> bool {
        false
    }
}

/// Whether the feed takes live deliveries or reads the history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Waiting for the subscription's replay; `lost`: signal a gap before it ([`Start::Lost`]).
    Starting {
        /// The client's position could not be read.
        lost: bool,
    },
    /// Up to date: deliveries are written as they come.
    Live,
    /// Behind: pages are read from the history as the output drains.
    CatchingUp {
        /// A read of the next page is queued or in flight.
        reading: bool,
    },
}

/// A subscriber's position in a channel.
#[derive(Debug, Clone)]
pub struct Feed {
    /// The channel subscribed to.
    pub channel: ChannelName,
    /// The last message the client has been sent (or where its history ends); meaningless
    /// while [`Mode::Starting`] (see [`Feed::cursor`]: an `Option` would take 8 bytes more).
    cursor: Cursor,
    mode: Mode,
}

impl Feed {
    /// A feed for `channel`, waiting for its replay.
    pub fn new(channel: ChannelName) -> Feed {
        Feed {
            channel,
            cursor: Cursor { epoch: crate::hub::Epoch(0), offset: 0 },
            mode: Mode::Starting { lost: false },
        }
    }

    /// A feed for `channel` and the command that starts it from `start`, held by `transport`.
    pub fn starting(channel: ChannelName, start: Start, transport: Transport) -> (Feed, Command) {
        let mut feed = Feed::new(channel);
        let since = match start {
            Start::Since(since) => since,
            Start::Lost => {
                feed.mode = Mode::Starting { lost: true };
                Since::Tail
            }
        };
        let command = feed.subscribe(since, transport);
        (feed, command)
    }

    /// The last message the client has been sent (or where its history ends); `None` until
    /// the subscription's replay.
    pub fn cursor(&self) -> Option<Cursor> {
        (!matches!(self.mode, Mode::Starting { .. })).then_some(self.cursor)
    }

    /// The cursor as it stands, also while starting: where a multi-channel stream's
    /// composite id puts this channel. Meaningful once the replay is written, or once
    /// [`Feed::set_start`] gave it the replay's start.
    pub fn position(&self) -> Cursor {
        self.cursor
    }

    /// Where the client starts, known before the replay is written: a multi-channel stream
    /// writes every channel's start in one id before any channel's replay (the replay sets the
    /// same cursor again).
    pub fn set_start(&mut self, start: Cursor) {
        self.cursor = start;
    }

    /// Keeps `channel`, the hub's copy of the same name, instead of the request's own copy, so
    /// that every subscriber of a channel shares one allocation.
    pub fn share_name(&mut self, channel: ChannelName) {
        if channel == self.channel {
            self.channel = channel;
        }
    }

    /// The command that starts the subscription, held by `transport`.
    pub fn subscribe(&self, since: Since, transport: Transport) -> Command {
        Command::Subscribe { channel: self.channel.clone(), since, transport }
    }

    /// Decides what to do with a live `msg`, and advances the cursor past it unless skipped.
    pub fn step(&mut self, msg: &Message) -> Step {
        let step = match self.cursor() {
            None => Step::Send,
            Some(c) if msg.id.epoch != c.epoch => Step::GapThenSend,
            Some(c) if msg.id.offset <= c.offset => Step::Skip,
            Some(c) if msg.id.offset == c.offset + 1 => Step::Send,
            Some(_) => Step::GapThenSend,
        };
        if step != Step::Skip {
            self.cursor = msg.id;
        }
        step
    }

    /// Writes a replay (the subscription's, or a page read while catching up). `reached_tail`
    /// says whether the hub had nothing after the replay's last message.
    pub fn handle_replay(
        &mut self,
        replay: Replay,
        reached_tail: bool,
        wire: &mut impl Wire,
        ctx: &mut Ctx<'_>,
    ) {
        // The client continues from just before the first message of the replay (after a gap:
        // the oldest message still available).
        let start = replay.messages.first().map_or(replay.next, |m| m.id.before());
        self.cursor = start;
        if replay.gap || self.mode == (Mode::Starting { lost: true }) {
            Metrics::inc(&ctx.metrics.gaps_signalled);
            wire.write_gap(start, ctx);
        } else if matches!(self.mode, Mode::Starting { .. }) {
            wire.write_open(start, ctx);
        }
        let bound = ctx.config.transport.max_send_buffer_bytes;
        let mut all_written = true;
        for msg in &replay.messages {
            if wire.suppressed(msg) {
                self.cursor = msg.id;
                continue;
            }
            let bytes = wire.encode(msg);
            if ctx.out.len_bytes() + bytes.len() > bound && !ctx.out.is_empty() {
                all_written = false;
                break;
            }
            self.cursor = msg.id;
            wire.write_message_at(msg.id, bytes, ctx);
            Metrics::inc(&ctx.metrics.messages_delivered);
        }
        self.mode =
            if all_written && reached_tail { Mode::Live } else { Mode::CatchingUp { reading: false } };
        self.handle_drained(ctx);
    }

    /// A live delivery. Returns [`Flow::Close`] for a slow consumer.
    pub fn handle_delivery(&mut self, msg: &Arc<Message>, wire: &mut impl Wire, ctx: &mut Ctx<'_>) -> Flow {
        if self.mode != Mode::Live {
            return Flow::Continue; // The history has it; the next page will.
        }
        let step = self.step(msg);
        if step == Step::Skip {
            return Flow::Continue;
        }
        if wire.suppressed(msg) {
            // Unsent, but a hole before it is still signalled.
            if step == Step::GapThenSend {
                Metrics::inc(&ctx.metrics.gaps_signalled);
                wire.write_gap(msg.id.before(), ctx);
            }
            return Flow::Continue;
        }
        let bytes = wire.encode(msg);
        if ctx.out.len_bytes() + bytes.len() > ctx.config.transport.max_send_buffer_bytes
            && !ctx.out.is_empty()
        {
            Metrics::inc(&ctx.metrics.slow_consumer_closes);
            return Flow::Close(CloseReason::SlowConsumer);
        }
        if step == Step::GapThenSend {
            Metrics::inc(&ctx.metrics.gaps_signalled);
            wire.write_gap(msg.id.before(), ctx);
        }
        wire.write_message_at(msg.id, bytes, ctx);
        Metrics::inc(&ctx.metrics.messages_delivered);
        Flow::Continue
    }

    /// The output drained a little: while catching up, ask for the next page once the output
    /// is below half the bound.
    pub fn handle_drained(&mut self, ctx: &mut Ctx<'_>) {
        let Mode::CatchingUp { reading: false } = self.mode else {
            return;
        };
        if ctx.out.is_past_half(ctx.config.transport.max_send_buffer_bytes) {
            return;
        }
        let cursor = self.cursor;
        self.mode = Mode::CatchingUp { reading: true };
        ctx.commands.push_back(Command::Read {
            channel: self.channel.clone(),
            since: Since::After(cursor),
            max_messages: ctx.config.transport.max_batch_messages,
        });
    }

    /// The reply to a page read queued by [`Feed::handle_drained`].
    pub fn handle_page(&mut self, replay: Replay, wire: &mut impl Wire, ctx: &mut Ctx<'_>) {
        let reached_tail = replay.messages.len() < ctx.config.transport.max_batch_messages;
        self.handle_replay(replay, reached_tail, wire, ctx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::{Epoch, Payload};
    use std::time::Instant;

    fn msg(epoch: u64, offset: u64) -> Arc<Message> {
        Arc::new(Message::new(
            ChannelName::parse("c").unwrap(),
            Cursor { epoch: Epoch(epoch), offset },
            None,
            Payload::Text(Arc::from("x")),
            Instant::now(),
        ))
    }

    #[test]
    fn replayed_messages_are_skipped_next_is_sent_holes_are_gaps() {
        let mut feed = Feed::new(ChannelName::parse("c").unwrap());
        feed.cursor = Cursor { epoch: Epoch(1), offset: 5 };
        feed.mode = Mode::Live;
        assert_eq!(feed.step(&msg(1, 4)), Step::Skip);
        assert_eq!(feed.step(&msg(1, 5)), Step::Skip);
        assert_eq!(feed.step(&msg(1, 6)), Step::Send);
        assert_eq!(feed.step(&msg(1, 8)), Step::GapThenSend);
        assert_eq!(feed.cursor().unwrap().offset, 8);
        assert_eq!(feed.step(&msg(2, 1)), Step::GapThenSend);
    }
}
