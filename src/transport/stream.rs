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
//! RFC 9112 §7.1: one JSON envelope per line (the polling envelope, see [`crate::protocol::envelope`]),
//! each line in its own chunk, encoded once per message with its chunk framing and shared by
//! every subscriber. A gap is the line `{"type":"gap","next":"EPOCH:OFFSET"}`. A heartbeat line
//! keeps idle proxies from closing the stream. The first line, `{"type":"open","next":CURSOR}`,
//! tells the client where its subscription starts (unless a gap line does). The stream ends
//! with the last-chunk only when the server ends it (slow consumer, drain, or after the line
//! `{"type":"token_expired"}` when the signed token that admitted it expires): never a
//! zero-length chunk otherwise (§7.1: a chunk of size zero is the last-chunk).
//!
//! Does not: serve HTTP/1.0 clients (they cannot receive chunked bodies; the router refuses
//! them with 400).

use std::sync::Arc;

use crate::http1::chunked::{encode_chunk, LAST_CHUNK};
use crate::http1::response::{write_head, Framing};
use crate::hub::{Cursor, Encoding, Message};

use super::feed::Wire;
use super::http_stream::{HttpStream, StreamFormat};
use super::Ctx;
use crate::protocol::envelope::{gap_envelope, message_envelope, open_envelope};
use crate::protocol::Transport;

/// The line `{"type":"token_expired"}` in its own chunk (0x19 = 25 bytes): the stream's token
/// expired and the last chunk follows.
pub const TOKEN_EXPIRED_CHUNK: &[u8] = b"19\r\n{\"type\":\"token_expired\"}\n\r\n";

/// One message as a chunk holding its envelope line, encoded once and shared.
pub fn encode_message(msg: &Message) -> Vec<u8> {
    let mut line = message_envelope(msg);
    line.push(b'\n');
    let mut out = Vec::with_capacity(line.len() + 12);
    encode_chunk(&line, &mut out);
    out
}

/// The chunked NDJSON format of a streaming response.
#[derive(Debug, Default)]
pub struct NdjsonFormat;

/// A chunked NDJSON response subscribed to one channel.
pub type StreamSession = HttpStream<NdjsonFormat>;

impl Wire for NdjsonFormat {
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

impl StreamFormat for NdjsonFormat {
    /// The line `{"type":"heartbeat"}` in its own chunk (0x15 = 21 bytes).
    const HEARTBEAT: &'static [u8] = b"15\r\n{\"type\":\"heartbeat\"}\n\r\n";
    /// RFC 9112 §7.1: the last-chunk (a chunk of size zero) ends the body; never sent before.
    const END: &'static [u8] = LAST_CHUNK;
    const TRANSPORT: Transport = Transport::Stream;
    const TOKEN_EXPIRED: &'static [u8] = TOKEN_EXPIRED_CHUNK;

    fn write_head(ctx: &mut Ctx<'_>) {
        let mut head = Vec::new();
        let fields = ctx.fields(&[
            ("Content-Type", "application/x-ndjson"),
            ("Cache-Control", "no-cache"),
            ("X-Accel-Buffering", "no"),
        ]);
        write_head(&mut head, 200, &fields, Framing::Chunked, false);
        ctx.out.push_owned(head);
    }
}

/// Queues one line as its own chunk.
fn write_line(mut line: Vec<u8>, ctx: &mut Ctx<'_>) {
    line.push(b'\n');
    let mut out = Vec::new();
    encode_chunk(&line, &mut out);
    ctx.out.push_owned(out);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc9112_7_1_heartbeat_is_one_well_formed_chunk() {
        let mut chunk = Vec::new();
        encode_chunk(b"{\"type\":\"heartbeat\"}\n", &mut chunk);
        assert_eq!(chunk, NdjsonFormat::HEARTBEAT);
    }

    #[test]
    fn rfc9112_7_1_token_expired_notice_is_one_well_formed_chunk() {
        let mut chunk = Vec::new();
        encode_chunk(b"{\"type\":\"token_expired\"}\n", &mut chunk);
        assert_eq!(chunk, TOKEN_EXPIRED_CHUNK);
    }
}
