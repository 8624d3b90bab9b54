//! HTTP chunked streaming: `GET /channels/{name}` with `Accept: application/x-ndjson` (or
//! `?mode=stream`).
//!
//! ```text
//! HTTP/1.1 200 OK
//! Content-Type: application/x-ndjson
//! Transfer-Encoding: chunked
//!
//! 2f\r\n{"id":"9f0c…:7","data":"hello"}\n\r\n        one chunk per message
//! 15\r\n{"type":"heartbeat"}\n\r\n                   on the keepalive interval
//! ```
//!
//! Implements: HTTP streaming as described by RFC 6202 §3
//! (<https://www.rfc-editor.org/rfc/rfc6202#section-3>) over the chunked transfer coding of
//! RFC 9112 §7.1: one JSON envelope per line (the polling envelope, see [`super::envelope`]),
//! each line in its own chunk, encoded once per message with its chunk framing and shared by
//! every subscriber. A gap is the line `{"type":"gap","next":"EPOCH:OFFSET"}`. A heartbeat line
//! keeps idle proxies from closing the stream. The first line, `{"type":"open","next":CURSOR}`,
//! tells the client where its subscription starts (unless a gap line does). The stream ends with the last-chunk only when
//! the server ends it (slow consumer): never a zero-length chunk otherwise (§7.1: a chunk of
//! size zero is the last-chunk).
//!
//! Does not: serve HTTP/1.0 clients (they cannot receive chunked bodies; the router refuses
//! them with 400).

use std::sync::Arc;
use std::time::Instant;

use crate::http1::chunked::{encode_chunk, LAST_CHUNK};
use crate::http1::response::{write_head, Framing};
use crate::hub::{ChannelName, Cursor, Encoding, Message, Replay, Since};

use super::envelope::{gap_envelope, message_envelope, open_envelope};
use super::feed::{Feed, Wire};
use super::{Ctx, Flow};

const HEARTBEAT: &[u8] = b"{\"type\":\"heartbeat\"}\n";

/// One message as a chunk holding its envelope line, encoded once and shared.
pub fn encode_message(msg: &Message) -> Vec<u8> {
    let mut line = message_envelope(msg);
    line.push(b'\n');
    let mut out = Vec::with_capacity(line.len() + 12);
    encode_chunk(&line, &mut out);
    out
}

struct StreamWire;

impl Wire for StreamWire {
    fn encode(&self, msg: &Message) -> Arc<[u8]> {
        msg.encoded(Encoding::NdjsonChunk, encode_message)
    }

    fn write_message(&mut self, bytes: Arc<[u8]>, ctx: &mut Ctx<'_>) {
        ctx.out.push_shared(bytes);
    }

    fn write_gap(&mut self, next: Cursor, ctx: &mut Ctx<'_>) {
        write_line(gap_envelope(next), ctx);
    }

    fn write_open(&mut self, start: Cursor, ctx: &mut Ctx<'_>) {
        write_line(open_envelope(start), ctx);
    }
}

/// Queues one line as its own chunk.
fn write_line(mut line: Vec<u8>, ctx: &mut Ctx<'_>) {
    line.push(b'\n');
    let mut out = Vec::new();
    encode_chunk(&line, &mut out);
    ctx.out.push_owned(out);
}

/// A chunked NDJSON response subscribed to one channel.
#[derive(Debug)]
pub struct StreamSession {
    feed: Feed,
    next_keepalive: Option<Instant>,
}

impl StreamSession {
    /// Queues the subscription; the response starts with its replay.
    pub fn start(channel: ChannelName, since: Since, ctx: &mut Ctx<'_>) -> StreamSession {
        let feed = Feed::new(channel);
        ctx.commands.push_back(feed.subscribe(since));
        StreamSession { feed, next_keepalive: None }
    }

    /// The subscription's replay: writes the response head and the replay.
    pub fn handle_subscribed(&mut self, replay: Replay, ctx: &mut Ctx<'_>) -> Flow {
        let mut head = Vec::new();
        let fields = ctx.fields(&[
            ("Content-Type", "application/x-ndjson"),
            ("Cache-Control", "no-cache"),
            ("X-Accel-Buffering", "no"),
        ]);
        write_head(&mut head, 200, &fields, Framing::Chunked, false);
        ctx.out.push_owned(head);
        self.next_keepalive = Some(ctx.now + ctx.config.transport.keepalive_interval);
        self.feed.handle_replay(replay, true, &mut StreamWire, ctx);
        Flow::Continue
    }

    /// A page read while catching up.
    pub fn handle_page(&mut self, replay: Replay, ctx: &mut Ctx<'_>) -> Flow {
        self.feed.handle_page(replay, &mut StreamWire, ctx);
        Flow::Continue
    }

    /// A live message; a slow consumer's response is ended with the last-chunk.
    pub fn handle_delivery(&mut self, msg: &Arc<Message>, ctx: &mut Ctx<'_>) -> Flow {
        let flow = self.feed.handle_delivery(msg, &mut StreamWire, ctx);
        if matches!(flow, Flow::Close(_)) {
            ctx.out.push_bytes(LAST_CHUNK);
        }
        flow
    }

    /// The server is shutting down: end the body with the last-chunk.
    pub fn handle_drain(&mut self, ctx: &mut Ctx<'_>) -> Flow {
        ctx.out.push_bytes(LAST_CHUNK);
        Flow::Close(super::DRAINING)
    }

    /// Output drained: continue catching up.
    pub fn handle_drained(&mut self, ctx: &mut Ctx<'_>) {
        self.feed.handle_drained(ctx);
    }

    /// When the next heartbeat is due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_keepalive
    }

    /// Writes the heartbeat line when due.
    pub fn handle_timeout(&mut self, ctx: &mut Ctx<'_>) -> Flow {
        if self.next_keepalive.is_some_and(|t| ctx.now >= t) {
            let mut out = Vec::new();
            encode_chunk(HEARTBEAT, &mut out);
            ctx.out.push_owned(out);
            self.next_keepalive = Some(ctx.now + ctx.config.transport.keepalive_interval);
        }
        Flow::Continue
    }
}
