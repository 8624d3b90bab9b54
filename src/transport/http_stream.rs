//! What an HTTP response that streams a channel does, whatever its format: subscribe, write
//! the head, replay, deliver live messages, beat the heart, and end (slow consumer, drain, the
//! expiry of the token that admitted it).
//!
//! Implements: the session shared by [`super::sse`] (Server-Sent Events) and [`super::stream`]
//! (chunked NDJSON, RFC 6202 §3). A [`StreamFormat`] says how its head, messages, gap and
//! opening signals, heartbeat, token-expiry notice and end look on the wire; the cursor, catch-up and slow-consumer
//! rules are the [`Feed`]'s.
//!
//! Does not: read from the client (a streaming response's client has nothing more to say; the
//! connection discards its input).

use std::sync::Arc;
use std::time::Instant;

use crate::hub::{ChannelName, Message, Replay};
use crate::metrics::Metrics;
use crate::protocol::Transport;

use super::feed::{Feed, Start, Wire};
use super::{CloseReason, Ctx, Flow};

/// The wire format of a streaming response.
pub trait StreamFormat: Wire + Default {
    /// Writes the response head and anything that precedes the first message.
    fn write_head(ctx: &mut Ctx<'_>);
    /// Written on the keepalive interval, so idle proxies and clients see the stream alive.
    const HEARTBEAT: &'static [u8];
    /// Ends the body when the server ends the response (empty when the body is
    /// close-delimited).
    const END: &'static [u8];
    /// The transport this format is (counted per subscription by the hub).
    const TRANSPORT: Transport;
    /// Tells the client, before [`StreamFormat::END`], that the token that admitted the
    /// subscription expired (it should come back with a fresh one).
    const TOKEN_EXPIRED: &'static [u8];
}

/// A streaming response subscribed to one channel.
#[derive(Debug)]
pub struct HttpStream<F> {
    feed: Feed,
    format: F,
    next_keepalive: Option<Instant>,
}

impl<F: StreamFormat> HttpStream<F> {
    /// Queues the subscription; the response starts with its replay (after a gap signal for
    /// [`Start::Lost`], counted as an unreadable `Last-Event-ID`).
    pub fn start(channel: ChannelName, start: impl Into<Start>, ctx: &mut Ctx<'_>) -> Self {
        let start = start.into();
        if start == Start::Lost {
            Metrics::inc(&ctx.metrics.last_event_id_unreadable);
        }
        let (feed, command) = Feed::starting(channel, start, F::TRANSPORT);
        ctx.commands.push_back(command);
        HttpStream { feed, format: F::default(), next_keepalive: None }
    }

    /// The subscription's replay: writes the response head, then the replay.
    pub fn handle_subscribed(&mut self, channel: ChannelName, replay: Replay, ctx: &mut Ctx<'_>) -> Flow {
        self.feed.share_name(channel);
        F::write_head(ctx);
        self.next_keepalive = Some(ctx.now + ctx.config.transport.keepalive_interval);
        self.feed.handle_replay(replay, true, &mut self.format, ctx);
        Flow::Continue
    }

    /// A page read while catching up.
    pub fn handle_page(&mut self, replay: Replay, ctx: &mut Ctx<'_>) -> Flow {
        self.feed.handle_page(replay, &mut self.format, ctx);
        Flow::Continue
    }

    /// A live message; a slow consumer's response is ended.
    pub fn handle_delivery(&mut self, msg: &Arc<Message>, ctx: &mut Ctx<'_>) -> Flow {
        let flow = self.feed.handle_delivery(msg, &mut self.format, ctx);
        if matches!(flow, Flow::Close(_)) {
            ctx.out.push_bytes(F::END);
        }
        flow
    }

    /// The hub refused the subscription or a page read. Before the head is written the
    /// connection can still answer with an HTTP error (`None`); after it, the response ends.
    pub fn handle_refused(&mut self, ctx: &mut Ctx<'_>) -> Option<Flow> {
        self.next_keepalive?; // Set when the head is written.
        ctx.out.push_bytes(F::END);
        Some(Flow::Close(CloseReason::RefusedByHub))
    }

    /// The server is shutting down: end the response.
    pub fn handle_drain(&mut self, ctx: &mut Ctx<'_>) -> Flow {
        ctx.out.push_bytes(F::END);
        Flow::Close(CloseReason::Draining)
    }

    /// The token that admitted the subscription expired: the notice (once the head is
    /// written), then the end of the response.
    pub fn handle_token_expired(&mut self, ctx: &mut Ctx<'_>) -> (bool, Flow) {
        if self.next_keepalive.is_some() {
            ctx.out.push_bytes(F::TOKEN_EXPIRED);
            ctx.out.push_bytes(F::END);
        }
        (true, Flow::Close(CloseReason::TokenExpired))
    }

    /// Output drained: continue catching up.
    pub fn handle_drained(&mut self, ctx: &mut Ctx<'_>) {
        self.feed.handle_drained(ctx);
    }

    /// When the next heartbeat is due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_keepalive
    }

    /// Writes the heartbeat when due.
    pub fn handle_timeout(&mut self, ctx: &mut Ctx<'_>) -> Flow {
        if self.next_keepalive.is_some_and(|t| ctx.now >= t) {
            ctx.out.push_bytes(F::HEARTBEAT);
            self.next_keepalive = Some(ctx.now + ctx.config.transport.keepalive_interval);
        }
        Flow::Continue
    }
}
