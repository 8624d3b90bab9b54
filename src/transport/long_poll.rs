//! Long polling: `GET /channels/{name}?wait=SECONDS[&since=CURSOR]`.
//!
//! Implements: HTTP long polling as RFC 6202 §2 describes it
//! (<https://www.rfc-editor.org/rfc/rfc6202#section-2>): when messages follow `since` the
//! answer comes at once, exactly like a short poll; otherwise the request is *parked* (no
//! thread, no busy loop: the connection just waits for a delivery or its deadline) until a
//! publish on the channel, then answered with everything available up to the batch limit, or
//! answered after `wait` with an empty list and the same `next`. The answer is the short-poll
//! JSON body, and the connection stays usable for the next poll.
//!
//! Nothing is kept per client between polls (RFC 6202 §2.2 notes the cost of state held for
//! clients that come back): the cursor carries everything, so any server can answer the next
//! poll. A parked client that disconnects is noticed by EOF and forgotten.
//!
//! Does not: cap `wait` itself; the router caps it at
//! [`crate::transport::Limits::longpoll_max_wait`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::http1::response::write_full;
use crate::hub::{ChannelName, Command, Cursor, Message, Replay, Since};
use crate::protocol::Transport;

use super::short_poll::{body, count};
use super::{CloseReason, Ctx, Flow};
use crate::metrics::Metrics;

/// Where a long poll is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting for the subscription's replay.
    Subscribing,
    /// Nothing followed the cursor `next`: waiting for a delivery or the deadline (counted as
    /// parked in the metrics while here; see [`LongPollSession::uncount`]).
    Parked,
    /// A delivery came: waiting for the read that collects everything available.
    Reading,
}

/// One parked (or about to be parked) poll.
#[derive(Debug)]
pub struct LongPollSession {
    channel: ChannelName,
    deadline: Instant,
    /// Where the client's history ends, while [`State::Parked`] (beside the state rather than
    /// in it, which keeps the session, and so every connection, 16 bytes smaller).
    next: Cursor,
    state: State,
    keep_alive: bool,
    head_only: bool,
}

impl LongPollSession {
    /// Queues the subscription that either answers at once or parks the poll.
    pub fn start(
        channel: ChannelName,
        since: Since,
        wait: Duration,
        keep_alive: bool,
        head_only: bool,
        ctx: &mut Ctx<'_>,
    ) -> LongPollSession {
        ctx.commands.push_back(Command::Subscribe {
            channel: channel.clone(),
            since,
            transport: Transport::LongPoll,
        });
        LongPollSession {
            channel,
            deadline: ctx.now + wait,
            next: Cursor { epoch: crate::hub::Epoch(0), offset: 0 },
            state: State::Subscribing,
            keep_alive,
            head_only,
        }
    }

    /// True while parked (for metrics).
    pub fn is_parked(&self) -> bool {
        self.state == State::Parked
    }

    /// Uncounts a parked poll that ends without an answer (its connection closed): the owner
    /// calls it when it drops the session.
    pub fn uncount(&self, metrics: &Metrics) {
        if self.is_parked() {
            metrics.unpark();
        }
    }

    fn leave_parked(&mut self, ctx: &Ctx<'_>) {
        self.uncount(ctx.metrics);
        self.state = State::Reading;
    }

    /// The subscription's replay: answer now if anything (or a gap) is there, else park.
    pub fn handle_subscribed(&mut self, mut replay: Replay, ctx: &mut Ctx<'_>) -> Flow {
        if replay.messages.is_empty() && !replay.gap && ctx.now < self.deadline {
            self.next = replay.next;
            self.state = State::Parked;
            ctx.metrics.count_parked();
            return Flow::Continue;
        }
        let max = ctx.config.transport.max_batch_messages;
        if replay.messages.len() > max {
            replay.messages.truncate(max);
            replay.next = replay.messages[max - 1].id;
        }
        self.answer(&replay, ctx)
    }

    /// A live message: collect everything available with one read.
    pub fn handle_delivery(&mut self, msg: &Arc<Message>, ctx: &mut Ctx<'_>) -> Flow {
        if self.is_parked() {
            let next = self.next;
            // A delivery queued before the subscription may repeat what the replay had.
            if msg.id.epoch == next.epoch && msg.id.offset <= next.offset {
                return Flow::Continue;
            }
            self.leave_parked(ctx);
            ctx.commands.push_back(Command::Read {
                channel: self.channel.clone(),
                since: Since::After(next),
                max_messages: ctx.config.transport.max_batch_messages,
            });
        }
        Flow::Continue
    }

    /// The read started by a delivery.
    pub fn handle_read(&mut self, replay: Replay, ctx: &mut Ctx<'_>) -> Flow {
        self.answer(&replay, ctx)
    }

    /// When the wait ends.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.is_parked().then_some(self.deadline)
    }

    /// At the deadline, answers with no messages and the same `next`.
    pub fn handle_timeout(&mut self, ctx: &mut Ctx<'_>) -> Flow {
        if self.is_parked() && ctx.now >= self.deadline {
            return self.answer(&Replay { messages: Vec::new(), gap: false, next: self.next }, ctx);
        }
        Flow::Continue
    }

    /// The token that admitted the poll expired: a parked poll is answered now as at its
    /// deadline (no messages, the same `next`); the connection stays for the next request,
    /// which brings a fresh token.
    pub fn handle_token_expired(&mut self, ctx: &mut Ctx<'_>) -> (bool, Flow) {
        if self.is_parked() {
            return (true, self.answer(&Replay { messages: Vec::new(), gap: false, next: self.next }, ctx));
        }
        (false, Flow::Continue)
    }

    /// The server is shutting down: a parked poll is answered now (no messages, the same
    /// `next`), with `Connection: close`.
    pub fn handle_drain(&mut self, ctx: &mut Ctx<'_>) -> Flow {
        self.keep_alive = false;
        if self.is_parked() {
            return self.answer(&Replay { messages: Vec::new(), gap: false, next: self.next }, ctx);
        }
        Flow::Continue
    }

    /// Writes the answer and ends the subscription; the connection reads the next request.
    fn answer(&mut self, replay: &Replay, ctx: &mut Ctx<'_>) -> Flow {
        self.leave_parked(ctx);
        count(replay, ctx.metrics);
        let mut out = Vec::new();
        let fields = ctx.fields(&[("Content-Type", "application/json"), ("Cache-Control", "no-store")]);
        write_full(&mut out, 200, &fields, &body(replay), self.head_only, !self.keep_alive);
        ctx.out.push_owned(out);
        ctx.commands.push_back(Command::Unsubscribe {
            channel: self.channel.clone(),
            transport: Transport::LongPoll,
        });
        if self.keep_alive {
            Flow::Complete
        } else {
            Flow::Close(CloseReason::LongPollAnswered)
        }
    }
}
