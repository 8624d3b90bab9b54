//! permessage-deflate (RFC 7692) end to end against the real server: negotiation in the 101,
//! compressed frames (RSV1) on the wire both ways, a channel message compressed once for many
//! subscribers (the `pushwire_ws_deflate_compressions_total` metric), the threshold, the inflate bound
//! (close 1009) and `--ws-no-deflate`. The peer here is raw TCP with flate2 used directly, so
//! pushwire's own codec is not checking itself.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;

use common::{publish, Server};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use pushwire::ws::{FrameHeader, OpCode};

/// A raw WebSocket client that offers permessage-deflate.
struct DeflateWs {
    stream: TcpStream,
    buf: Vec<u8>,
}

/// One frame as received: RSV bits, opcode, payload.
struct Frame {
    rsv: u8,
    opcode: OpCode,
    payload: Vec<u8>,
}

/// `data` compressed as RFC 7692 §7.2.1 says, by flate2 directly.
fn deflate(data: &[u8]) -> Vec<u8> {
    let mut c = Compress::new(Compression::default(), false);
    let mut out = Vec::with_capacity(data.len() + 64);
    c.compress_vec(data, &mut out, FlushCompress::Sync).unwrap();
    assert_eq!(&out[out.len() - 4..], [0, 0, 0xff, 0xff]);
    out.truncate(out.len() - 4);
    out
}

/// RFC 7692 §7.2.2, by flate2 directly.
fn inflate(data: &[u8]) -> Vec<u8> {
    let mut d = Decompress::new(false);
    let mut input = data.to_vec();
    input.extend_from_slice(&[0, 0, 0xff, 0xff]);
    let mut out = Vec::with_capacity(1 << 20);
    d.decompress_vec(&input, &mut out, FlushDecompress::Sync).unwrap();
    out
}

impl DeflateWs {
    fn connect(server: &Server, path: &str, offer: Option<&str>) -> (DeflateWs, String) {
        let extra = offer.map_or(String::new(), |offer| format!("Sec-WebSocket-Extensions: {offer}\r\n"));
        let (stream, buf, head) = common::upgrade(server, path, &extra);
        (DeflateWs { stream, buf }, head)
    }

    fn send(&mut self, rsv: u8, opcode: OpCode, payload: &[u8]) {
        let key = [9, 8, 7, 6];
        let header =
            FrameHeader { fin: true, rsv, opcode, mask: Some(key), payload_len: payload.len() as u64 };
        let mut out = Vec::new();
        header.encode(&mut out);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        self.stream.write_all(&out).unwrap();
    }

    fn recv(&mut self) -> Option<Frame> {
        let mut chunk = [0u8; 65536];
        loop {
            if let Some((header, len)) = FrameHeader::parse(&self.buf).expect("valid frame") {
                let total = len + header.payload_len as usize;
                if self.buf.len() >= total {
                    let payload = self.buf[len..total].to_vec();
                    self.buf.drain(..total);
                    if header.opcode == OpCode::Ping {
                        continue;
                    }
                    return Some(Frame { rsv: header.rsv, opcode: header.opcode, payload });
                }
            }
            let n = self.stream.read(&mut chunk).expect("read frame");
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

const OFFER: &str = "permessage-deflate; client_max_window_bits";

/// A 1 KiB JSON message like a push server carries.
fn json_kib() -> String {
    let mut s = String::from("{\"items\":[");
    let mut i = 0;
    while s.len() < 1000 {
        s += &format!("{{\"id\":{i},\"symbol\":\"ABC\",\"price\":101.25,\"side\":\"buy\"}},");
        i += 1;
    }
    s.pop();
    s + "]}"
}

#[test]
fn rfc7692_5_echo_negotiates_and_compresses_both_ways() {
    let server = Server::start(&[]);
    let (mut ws, head) = DeflateWs::connect(&server, "/echo", Some(OFFER));
    assert!(
        head.contains(
            "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover\r\n"
        ),
        "{head}"
    );
    let text = json_kib();
    // RFC 7692 §6: RSV1 on a compressed message.
    ws.send(0b100, OpCode::Text, &deflate(text.as_bytes()));
    let echo = ws.recv().unwrap();
    assert_eq!((echo.rsv, echo.opcode), (0b100, OpCode::Text));
    assert!(echo.payload.len() < text.len() / 2);
    assert_eq!(inflate(&echo.payload), text.as_bytes());
    // Below the 128-byte threshold: echoed uncompressed, even when it came compressed.
    ws.send(0b100, OpCode::Text, &deflate(b"short"));
    let echo = ws.recv().unwrap();
    assert_eq!((echo.rsv, echo.payload), (0, b"short".to_vec()));
    // An uncompressed message on a deflate connection is fine too.
    ws.send(0, OpCode::Binary, &[1, 2, 3]);
    assert_eq!(ws.recv().unwrap().payload, [1, 2, 3]);
}

#[test]
fn rfc7692_broadcast_to_many_subscribers_is_compressed_once() {
    let server = Server::start(&[]);
    let mut subscribers: Vec<DeflateWs> =
        (0..20).map(|_| DeflateWs::connect(&server, "/channels/ticks", Some(OFFER)).0).collect();
    let (mut plain, head) = DeflateWs::connect(&server, "/channels/ticks", None);
    assert!(!head.contains("Sec-WebSocket-Extensions"), "{head}");
    let before = common::metric(&server, "ws_deflate_compressions_total");
    let text = json_kib();
    publish(&server, "ticks", &text);
    let mut frames = Vec::new();
    for ws in &mut subscribers {
        let frame = ws.recv().unwrap();
        assert_eq!((frame.rsv, frame.opcode), (0b100, OpCode::Text));
        assert_eq!(inflate(&frame.payload), text.as_bytes());
        frames.push(frame.payload);
    }
    assert!(frames.windows(2).all(|w| w[0] == w[1]), "every subscriber got the same bytes");
    let frame = plain.recv().unwrap();
    assert_eq!((frame.rsv, frame.payload), (0, text.as_bytes().to_vec()));
    assert_eq!(
        common::metric(&server, "ws_deflate_compressions_total") - before,
        1,
        "compressed once for 20"
    );
    assert!(common::metric(&server, "ws_deflate_frames_sent_total") >= 20);
}

#[test]
fn rfc7692_7_1_2_1_server_window_offer_is_answered_and_honoured() {
    let server = Server::start(&[]);
    let (mut ws, head) = DeflateWs::connect(
        &server,
        "/echo",
        Some("permessage-deflate; server_max_window_bits=8, permessage-deflate; server_max_window_bits=10"),
    );
    assert!(head.contains("; server_max_window_bits=10\r\n"), "{head}");
    let text = json_kib();
    ws.send(0b100, OpCode::Text, &deflate(text.as_bytes()));
    let echo = ws.recv().unwrap();
    assert_eq!(echo.rsv, 0b100);
    // A 10-bit window inflates with a decompressor limited to 10 bits.
    let mut d = Decompress::new_with_window_bits(false, 10);
    let mut input = echo.payload.clone();
    input.extend_from_slice(&[0, 0, 0xff, 0xff]);
    let mut out = Vec::with_capacity(4096);
    d.decompress_vec(&input, &mut out, FlushDecompress::Sync).unwrap();
    assert_eq!(out, text.as_bytes());
}

#[test]
fn rfc6455_10_4_decompression_bomb_closes_1009() {
    let server = Server::start(&[]);
    let (mut ws, _) = DeflateWs::connect(&server, "/channels/bomb", Some(OFFER));
    // 1 MiB of zeros is about 1 KiB compressed, within the 64 KiB frame limit, but inflates far
    // past the 64 KiB message limit.
    let bomb = deflate(&vec![0u8; 1 << 20]);
    assert!(bomb.len() < 4096);
    ws.send(0b100, OpCode::Text, &bomb);
    let close = ws.recv().unwrap();
    assert_eq!(close.opcode, OpCode::Close);
    assert_eq!(u16::from_be_bytes([close.payload[0], close.payload[1]]), 1009);
}

#[test]
fn rfc7692_6_1_rsv1_on_a_continuation_fails_1002() {
    let server = Server::start(&[]);
    let (mut ws, _) = DeflateWs::connect(&server, "/echo", Some(OFFER));
    let key = [1, 2, 3, 4];
    let mut out = Vec::new();
    FrameHeader { fin: false, rsv: 0, opcode: OpCode::Text, mask: Some(key), payload_len: 0 }
        .encode(&mut out);
    FrameHeader { fin: true, rsv: 0b100, opcode: OpCode::Continuation, mask: Some(key), payload_len: 0 }
        .encode(&mut out);
    ws.stream.write_all(&out).unwrap();
    let close = ws.recv().unwrap();
    assert_eq!(close.opcode, OpCode::Close);
    assert_eq!(u16::from_be_bytes([close.payload[0], close.payload[1]]), 1002);
}

#[test]
fn ws_no_deflate_declines_every_offer() {
    let server = Server::start(&["--ws-no-deflate"]);
    let (mut ws, head) = DeflateWs::connect(&server, "/echo", Some(OFFER));
    assert!(!head.contains("Sec-WebSocket-Extensions"), "{head}");
    // RFC 6455 §5.2: without the extension RSV1 fails the connection.
    ws.send(0b100, OpCode::Text, &deflate(b"hello"));
    let close = ws.recv().unwrap();
    assert_eq!(close.opcode, OpCode::Close);
    assert_eq!(u16::from_be_bytes([close.payload[0], close.payload[1]]), 1002);
}

#[test]
fn pushwire_client_compresses_and_inflates_against_the_server() {
    use pushwire::client::{WsClient, WsOptions};
    use pushwire::ws::{Event, Message};
    let server = Server::start(&[]);
    let mut ws = WsClient::connect(&format!("ws://{}/echo", server.addr), &WsOptions::default()).unwrap();
    assert!(ws.deflate().is_some());
    let text = json_kib();
    ws.send(&Message::Text(text.clone())).unwrap();
    assert_eq!(ws.recv().unwrap(), Event::Message(Message::Text(text)));
    let off = WsOptions { deflate: false, ..WsOptions::default() };
    let plain = WsClient::connect(&format!("ws://{}/echo", server.addr), &off).unwrap();
    assert!(plain.deflate().is_none());
}
