//! The bad-input matrix: malformed and hostile inputs against the real server, one table row
//! each with its expected answer (an HTTP status, with a field where the rules demand one, or a
//! WebSocket close code) and whether the server must close the connection afterwards.
//!
//! After every row a well-behaved client must still be served: a publish and a poll from its
//! cursor round-trip, and a WebSocket echo client connected before the first row still echoes.
//! An SSE subscriber stays connected for the whole matrix and must have received every message
//! those checks published, in order, with the ids the publishes returned. A row that keeps the
//! connection must answer a further request on it.
//!
//! Three servers keep the run short: one on the defaults (every limit at its default), one with
//! publish and subscribe tokens for the access rows, and one serving TLS beside plain HTTP
//! (`--tls-listen`, a test CA made at test time) for garbage and truncated ClientHellos on its
//! TLS port, while the well-behaved client keeps being served on the plain one.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Duration;

use common::*;
use pushwire::ws::OpCode;

/// What a row sends.
enum Input {
    /// Raw bytes on a new connection.
    Raw(Vec<u8>),
    /// Raw bytes after a good WebSocket handshake on the path.
    Ws(&'static str, Vec<u8>),
    /// A few steps on a WebSocket after a good handshake on the path; the expected close
    /// follows them.
    WsScript(&'static str, fn(&mut RawWs)),
    /// Raw bytes on a new connection to the TLS port, then the end of the client's output.
    Tls(Vec<u8>),
    /// A few steps on a `pushwire.v1` WebSocket (`/ws` command mode), then the expected answer.
    V1(fn(&mut RawWs)),
}

/// What the server must answer.
enum Expect {
    /// This HTTP status.
    Status(u16),
    /// This HTTP status carrying this field with this value.
    StatusWith(u16, &'static str, &'static str),
    /// A WebSocket close frame with this code, then the TCP close (RFC 6455 §7.1.7 "Fail the
    /// WebSocket Connection", or the server's answer to the client's close, §7.1.1).
    CloseCode(u16),
    /// The server starts the closing handshake with this code; once the client answers with
    /// its own close, the server closes TCP (§7.1.2, §5.5.1).
    ClosingHandshake(u16),
    /// A fatal TLS alert record with this AlertDescription (RFC 8446 §6), then the TCP close.
    TlsAlert(u8),
    /// The `close_notify` alert (RFC 8446 §6.1), then the TCP close: the client went away in
    /// the middle of its ClientHello.
    CloseNotify,
    /// The TCP close with nothing sent (rustls sends no alert for these).
    SilentClose,
    /// `pushwire.v1`: an `error` reply with this code to the command (and its `req`, 7), and
    /// the connection stays open: a further `subscribe` is answered `ok` (issue #13: per-command
    /// errors answer that command, only protocol violations close).
    CommandError(&'static str),
    /// A `200` event stream whose first events are a `gap` on each of these channels: an
    /// unreadable `Last-Event-ID` is answered from now with a gap, never refused (issue #13
    /// item 7; HTML "server-sent events": a browser stops reconnecting after an error status).
    GapOn(&'static [&'static str]),
}

struct Case {
    name: &'static str,
    input: Input,
    expect: Expect,
    /// The server must close the connection after its answer; otherwise it must answer
    /// another request on it.
    closes: bool,
}

const CLOSES: bool = true;
const KEEPS: bool = false;

fn raw(name: &'static str, bytes: impl Into<Vec<u8>>, expect: Expect, closes: bool) -> Case {
    Case { name, input: Input::Raw(bytes.into()), expect, closes }
}

fn ws(name: &'static str, path: &'static str, bytes: Vec<u8>, code: u16) -> Case {
    Case { name, input: Input::Ws(path, bytes), expect: Expect::CloseCode(code), closes: CLOSES }
}

fn ws_script(name: &'static str, path: &'static str, script: fn(&mut RawWs), code: u16) -> Case {
    Case { name, input: Input::WsScript(path, script), expect: Expect::CloseCode(code), closes: CLOSES }
}

/// A `pushwire.v1` row: `script` sends a bad command, answered `error` with `code`.
fn v1(name: &'static str, script: fn(&mut RawWs), code: &'static str) -> Case {
    Case { name, input: Input::V1(script), expect: Expect::CommandError(code), closes: KEEPS }
}

/// A `pushwire.v1` row that violates the protocol: closed with `code`.
fn v1_closes(name: &'static str, script: fn(&mut RawWs), code: u16) -> Case {
    Case { name, input: Input::V1(script), expect: Expect::CloseCode(code), closes: CLOSES }
}

/// Sends one command frame's text.
fn command(ws: &mut RawWs, text: &str) {
    ws.send(OpCode::Text, text.as_bytes());
}

/// The next text frame as JSON.
fn reply(ws: &mut RawWs) -> serde_json::Value {
    let text = ws.recv_text();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Subscribes to `channel` and reads its `ok` and its `open`.
fn v1_subscribe(ws: &mut RawWs, channel: &str) {
    command(ws, &format!(r#"{{"type":"subscribe","channel":"{channel}","req":"s"}}"#));
    let ok = reply(ws);
    assert_eq!((ok["type"].as_str(), ok["channel"].as_str()), (Some("ok"), Some(channel)), "{ok}");
    let open = reply(ws);
    assert_eq!((open["type"].as_str(), open["channel"].as_str()), (Some("open"), Some(channel)), "{open}");
}

/// `GET target` as an event stream with `fields`.
fn sse_get(target: &str, fields: &str) -> Vec<u8> {
    get(target, &format!("Accept: text/event-stream\r\n{fields}"))
}

fn gap_on(name: &'static str, bytes: Vec<u8>, channels: &'static [&'static str]) -> Case {
    Case { name, input: Input::Raw(bytes), expect: Expect::GapOn(channels), closes: KEEPS }
}

use Expect::{CloseCode, CloseNotify, ClosingHandshake, SilentClose, Status, StatusWith, TlsAlert};
use Expect::{CommandError, GapOn};

/// `GET target` with `fields` (each ending in CRLF).
fn get(target: &str, fields: &str) -> Vec<u8> {
    format!("GET {target} HTTP/1.1\r\nHost: t\r\n{fields}\r\n").into_bytes()
}

/// `GET target` with `fields` and then one field line given as bytes (without its CRLF).
fn get_bytes(target: &str, fields: &str, line: &[u8]) -> Vec<u8> {
    let mut req = format!("GET {target} HTTP/1.1\r\nHost: t\r\n{fields}").into_bytes();
    req.extend_from_slice(line);
    req.extend_from_slice(b"\r\n\r\n");
    req
}

/// `POST target` with `fields` and a Content-Length body.
fn post(target: &str, fields: &str, body: &[u8]) -> Vec<u8> {
    let mut req =
        format!("POST {target} HTTP/1.1\r\nHost: t\r\n{fields}Content-Length: {}\r\n\r\n", body.len())
            .into_bytes();
    req.extend_from_slice(body);
    req
}

/// A chunked `POST /channels/a` whose body is `body` as written.
fn chunked(body: &[u8]) -> Vec<u8> {
    let mut req = b"POST /channels/a HTTP/1.1\r\nHost: t\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"
        .to_vec();
    req.extend_from_slice(body);
    req
}

/// `POST /channels/a` with the field lines `fields` and the bytes after the head.
fn framed(fields: &str, rest: &[u8]) -> Vec<u8> {
    let mut req = format!("POST /channels/a HTTP/1.1\r\nHost: t\r\n{fields}\r\n").into_bytes();
    req.extend_from_slice(rest);
    req
}

const UPGRADE: &str = "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n";
const KEY: &str = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";

/// A masked frame: `b0` is FIN, RSV and opcode as sent; the length is encoded minimally.
fn frame(b0: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = header(b0, payload.len() as u64);
    let key = [1u8, 2, 3, 4];
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    out
}

/// A masked frame's header (with its mask key) declaring `len` payload bytes, none of which
/// follow.
fn header(b0: u8, len: u64) -> Vec<u8> {
    let mut out = vec![b0];
    match len {
        0..=125 => out.push(0x80 | len as u8),
        126..=0xffff => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            out.push(0x80 | 127);
            out.extend_from_slice(&len.to_be_bytes());
        }
    }
    out.extend_from_slice(&[1, 2, 3, 4]);
    out
}

/// A close frame with `code` and `reason`.
fn close_frame(code: u16, reason: &[u8]) -> Vec<u8> {
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(reason);
    frame(0x88, &payload)
}

const FIN_TEXT: u8 = 0x81;
const FIN_BINARY: u8 = 0x82;

/// The rows run against a server on the defaults.
fn default_server_cases() -> Vec<Case> {
    let a = "a".repeat(17 * 1024);
    vec![
        // The server API is off without --api-key (issue #17).
        raw("api when off", post("/api/publish", "", br#"{"channel":"a","data":"x"}"#), Status(404), CLOSES),
        // --- HTTP heads (RFC 9112 §2-§5).
        raw("garbage request line", "GARBAGE\r\n\r\n", Status(400), CLOSES),
        raw("binary junk", &b"\x00\x01\x02\xff\r\n\r\n"[..], Status(400), CLOSES),
        raw("NUL in the method", &b"G\x00T /healthz HTTP/1.1\r\nHost: t\r\n\r\n"[..], Status(400), CLOSES),
        raw("NUL in the target", &b"GET /heal\x00thz HTTP/1.1\r\nHost: t\r\n\r\n"[..], Status(400), CLOSES),
        raw(
            "NUL in a field value",
            &b"GET /healthz HTTP/1.1\r\nHost: t\r\nX: a\x00b\r\n\r\n"[..],
            Status(400),
            CLOSES,
        ),
        raw(
            "NUL in a field name",
            &b"GET /healthz HTTP/1.1\r\nHost: t\r\nX\x00Y: 1\r\n\r\n"[..],
            Status(400),
            CLOSES,
        ),
        raw("obs-fold", "GET /healthz HTTP/1.1\r\nHost: t\r\nX: a\r\n b\r\n\r\n", Status(400), CLOSES),
        raw("whitespace before the colon", "GET /healthz HTTP/1.1\r\nHost : t\r\n\r\n", Status(400), CLOSES),
        raw(
            "field line without a colon",
            "GET /healthz HTTP/1.1\r\nHost: t\r\nJunk\r\n\r\n",
            Status(400),
            CLOSES,
        ),
        raw(
            "request line with four parts",
            "GET /healthz HTTP/1.1 x\r\nHost: t\r\n\r\n",
            Status(400),
            CLOSES,
        ),
        raw("HTTP/0.9 request line", "GET /healthz\r\n\r\n", Status(400), CLOSES),
        // A long but complete method is only an unknown method (RFC 9110 §9.1: 501).
        raw(
            "1000-byte method",
            format!("{} /healthz HTTP/1.1\r\nHost: t\r\n\r\n", "M".repeat(1000)),
            Status(501),
            KEEPS,
        ),
        raw("overlong method, no line end", "M".repeat(9000), Status(414), CLOSES),
        // Method names are case-sensitive (RFC 9110 §9.1): `get` is unrecognized.
        raw("lowercase method", "get /healthz HTTP/1.1\r\nHost: t\r\n\r\n", Status(501), KEEPS),
        raw("version HTTP/1.2", "GET /healthz HTTP/1.2\r\nHost: t\r\n\r\n", Status(505), CLOSES),
        raw("version HTTP/2.0", "GET /healthz HTTP/2.0\r\nHost: t\r\n\r\n", Status(505), CLOSES),
        // RFC 9112 §2.3: not an HTTP-version at all (the name is case-sensitive): malformed.
        raw("version HTTP/1", "GET /healthz HTTP/1\r\nHost: t\r\n\r\n", Status(400), CLOSES),
        raw("version http/1.1", "GET /healthz http/1.1\r\nHost: t\r\n\r\n", Status(400), CLOSES),
        raw("version HTTP/1.1x", "GET /healthz HTTP/1.1x\r\nHost: t\r\n\r\n", Status(400), CLOSES),
        raw("missing Host", "GET /healthz HTTP/1.1\r\n\r\n", Status(400), CLOSES),
        raw("duplicate Host", "GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", Status(400), CLOSES),
        raw("Host with a space", "GET /healthz HTTP/1.1\r\nHost: a b\r\n\r\n", Status(400), CLOSES),
        raw("65 fields", get("/healthz", &"X: 1\r\n".repeat(64)), Status(431), CLOSES),
        raw("10,000 fields", get("/healthz", &"X: 1\r\n".repeat(10_000)), Status(431), CLOSES),
        raw("17 KiB field value", get("/healthz", &format!("X: {a}\r\n")), Status(431), CLOSES),
        raw(
            "20 KiB field name",
            get("/healthz", &format!("{}: 1\r\n", "X".repeat(20 * 1024))),
            Status(431),
            CLOSES,
        ),
        raw("9,000-byte target", get(&format!("/{}", "a".repeat(9000)), ""), Status(414), CLOSES),
        raw("authority-form target", "GET t:80 HTTP/1.1\r\nHost: t\r\n\r\n", Status(400), KEEPS),
        raw("asterisk-form GET", "GET * HTTP/1.1\r\nHost: t\r\n\r\n", Status(400), KEEPS),
        // RFC 9112 §2.2: empty lines before a request line are skipped, without a buffer.
        raw(
            "64 KiB of empty lines, then a request",
            "\r\n".repeat(32 * 1024) + "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n",
            Status(200),
            KEEPS,
        ),
        // --- Bodies (RFC 9112 §6, §7.1).
        raw(
            "Content-Length and Transfer-Encoding",
            framed("Content-Length: 3\r\nTransfer-Encoding: chunked\r\n", b"abc"),
            Status(400),
            CLOSES,
        ),
        raw(
            "two different Content-Lengths",
            framed("Content-Length: 3\r\nContent-Length: 4\r\n", b"abcd"),
            Status(400),
            CLOSES,
        ),
        raw("Content-Length list 3, 4", framed("Content-Length: 3, 4\r\n", b"abcd"), Status(400), CLOSES),
        raw("negative Content-Length", framed("Content-Length: -1\r\n", b""), Status(400), CLOSES),
        raw("Content-Length with a plus sign", framed("Content-Length: +3\r\n", b"abc"), Status(400), CLOSES),
        raw("hex Content-Length", framed("Content-Length: 0x3\r\n", b"abc"), Status(400), CLOSES),
        raw(
            "Content-Length overflowing u64",
            framed("Content-Length: 18446744073709551616\r\n", b""),
            Status(400),
            CLOSES,
        ),
        raw(
            "Content-Length of 19 nines",
            framed("Content-Length: 9999999999999999999\r\n", b""),
            Status(413),
            CLOSES,
        ),
        raw(
            "Transfer-Encoding chunked twice",
            framed("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n"),
            Status(501),
            CLOSES,
        ),
        raw(
            "Transfer-Encoding gzip, chunked",
            framed("Transfer-Encoding: gzip, chunked\r\n", b"0\r\n\r\n"),
            Status(501),
            CLOSES,
        ),
        raw(
            "Transfer-Encoding identity",
            framed("Transfer-Encoding: identity\r\n", b""),
            Status(400),
            CLOSES,
        ),
        raw("chunk size overflowing u64", chunked(b"fffffffffffffffffffff\r\n"), Status(413), CLOSES),
        raw("chunk size not hex", chunked(b"zz\r\nx\r\n0\r\n\r\n"), Status(400), CLOSES),
        raw(
            "chunk size of 2,000 leading zeros",
            chunked(&[&[b'0'; 2000][..], b"1\r\nx\r\n0\r\n\r\n"].concat()),
            Status(400),
            CLOSES,
        ),
        raw(
            "chunk extension flood",
            chunked(&[&b"1"[..], &b";a=b".repeat(1000), b"\r\nx\r\n0\r\n\r\n"].concat()),
            Status(400),
            CLOSES,
        ),
        raw("control byte in a chunk extension", chunked(b"1;a\x01b\r\nx\r\n0\r\n\r\n"), Status(400), CLOSES),
        raw("bare LF in chunked", chunked(b"4\nWiki\n0\n\n"), Status(400), CLOSES),
        raw("chunk data longer than its size", chunked(b"1\r\nxy\r\n0\r\n\r\n"), Status(400), CLOSES),
        raw(
            "trailer section too large",
            chunked(&[&b"1\r\nx\r\n0\r\nX-T: "[..], &[b'a'; 9000], b"\r\n\r\n"].concat()),
            Status(431),
            CLOSES,
        ),
        raw("trailer line without a colon", chunked(b"1\r\nx\r\n0\r\nJunk\r\n\r\n"), Status(400), CLOSES),
        // Sent whole: the server answers before reading it and must linger so the answer arrives.
        raw(
            "70,000-byte body over the limit",
            post("/channels/a", "Content-Type: text/plain\r\n", &[b'a'; 70_000]),
            Status(413),
            CLOSES,
        ),
        raw(
            "chunked body over the limit in 4 KiB chunks",
            chunked(&format!("1000\r\n{}\r\n", "a".repeat(4096)).repeat(17).into_bytes()),
            Status(413),
            CLOSES,
        ),
        raw(
            "100-continue with a body over the limit",
            framed("Expect: 100-continue\r\nContent-Length: 70000\r\n", b""),
            Status(413),
            CLOSES,
        ),
        raw(
            "text body not UTF-8",
            post("/channels/a", "Content-Type: text/plain\r\n", b"\xff\xfe"),
            Status(400),
            KEEPS,
        ),
        // --- WebSocket handshakes (RFC 6455 §4.2.1, §4.2.2).
        raw(
            "WebSocket version 8",
            get(
                "/echo",
                &format!("Upgrade: websocket\r\nConnection: Upgrade\r\n{KEY}Sec-WebSocket-Version: 8\r\n"),
            ),
            StatusWith(426, "Sec-WebSocket-Version", "13"),
            KEEPS,
        ),
        raw(
            "WebSocket version missing",
            get("/echo", &format!("Upgrade: websocket\r\nConnection: Upgrade\r\n{KEY}")),
            StatusWith(426, "Sec-WebSocket-Version", "13"),
            KEEPS,
        ),
        raw(
            "WebSocket version 13, 8",
            get(
                "/channels/a",
                &format!(
                    "Upgrade: websocket\r\nConnection: Upgrade\r\n{KEY}Sec-WebSocket-Version: 13, 8\r\n"
                ),
            ),
            StatusWith(426, "Sec-WebSocket-Version", "13"),
            KEEPS,
        ),
        raw(
            "WebSocket key not base64",
            get("/echo", &format!("{UPGRADE}Sec-WebSocket-Key: !!!!!!!!!!!!!!!!!!!!!!==\r\n")),
            Status(400),
            KEEPS,
        ),
        raw(
            "WebSocket key of 15 bytes",
            get("/echo", &format!("{UPGRADE}Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAA\r\n")),
            Status(400),
            KEEPS,
        ),
        raw(
            "WebSocket key of 17 bytes",
            get("/echo", &format!("{UPGRADE}Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAAA=\r\n")),
            Status(400),
            KEEPS,
        ),
        raw("WebSocket key missing", get("/echo", UPGRADE), Status(400), KEEPS),
        raw("WebSocket key twice", get("/echo", &format!("{UPGRADE}{KEY}{KEY}")), Status(400), KEEPS),
        raw(
            "WebSocket without Upgrade",
            get("/echo", &format!("Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n{KEY}")),
            Status(400),
            KEEPS,
        ),
        raw(
            "WebSocket without Connection",
            get("/echo", &format!("Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n{KEY}")),
            Status(400),
            KEEPS,
        ),
        raw(
            "WebSocket on a channel without Connection",
            get("/channels/a", &format!("Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n{KEY}")),
            Status(400),
            KEEPS,
        ),
        raw(
            "WebSocket upgrade by POST",
            format!("POST /echo HTTP/1.1\r\nHost: t\r\n{UPGRADE}{KEY}\r\n"),
            StatusWith(405, "Allow", "GET"),
            KEEPS,
        ),
        raw(
            "WebSocket upgrade over HTTP/1.0",
            format!("GET /echo HTTP/1.0\r\nHost: t\r\n{UPGRADE}{KEY}\r\n"),
            Status(400),
            CLOSES,
        ),
        raw(
            "WebSocket upgrade with a bad cursor",
            get("/channels/a?since=nope", &format!("{UPGRADE}{KEY}")),
            Status(400),
            KEEPS,
        ),
        // --- WebSocket frames after a good handshake (RFC 6455 §5, §7.4, §8.1).
        ws("unmasked frame", "/echo", vec![FIN_TEXT, 2, b'h', b'i'], 1002),
        ws("RSV1 without an extension", "/echo", frame(FIN_TEXT | 0x40, b"hi"), 1002),
        ws("RSV2 and RSV3", "/echo", frame(FIN_TEXT | 0x30, b"hi"), 1002),
        ws("reserved data opcode 0x3", "/echo", frame(0x83, b"hi"), 1002),
        ws("reserved control opcode 0xB", "/echo", frame(0x8B, b"hi"), 1002),
        ws("fragmented ping", "/echo", frame(0x09, b"hi"), 1002),
        ws("126-byte ping", "/echo", frame(0x89, &[b'p'; 126]), 1002),
        ws("126-byte close", "/echo", close_frame(1000, &[b'r'; 124]), 1002),
        ws("frame over the channel limit", "/channels/a", header(FIN_BINARY, 100_000), 1009),
        ws(
            "message over the channel limit in fragments",
            "/channels/a",
            [frame(0x02, &[b'a'; 40_000]), frame(0x80, &[b'a'; 40_000])].concat(),
            1009,
        ),
        ws("17 MiB frame on /echo", "/echo", header(FIN_BINARY, 17 << 20), 1009),
        ws("continuation without a start", "/echo", frame(0x80, b"hi"), 1002),
        ws(
            "new message inside a fragmented one",
            "/echo",
            [frame(0x01, b"a"), frame(FIN_TEXT, b"b")].concat(),
            1002,
        ),
        ws("invalid UTF-8 text", "/echo", frame(FIN_TEXT, b"\xff\xfe"), 1007),
        ws(
            "invalid UTF-8 across fragments",
            "/echo",
            [frame(0x01, b"\xce"), frame(0x80, b"\xff")].concat(),
            1007,
        ),
        ws("text ending inside a UTF-8 sequence", "/echo", frame(FIN_TEXT, b"ok\xe2\x82"), 1007),
        ws("close with a 1-byte payload", "/echo", frame(0x88, b"\x03"), 1002),
        ws("close with code 1005", "/echo", close_frame(1005, b""), 1002),
        ws("close with code 1006", "/echo", close_frame(1006, b""), 1002),
        ws("close with code 999", "/echo", close_frame(999, b""), 1002),
        ws("close with code 5000", "/echo", close_frame(5000, b""), 1002),
        ws("close reason not UTF-8", "/echo", close_frame(1000, b"\xff"), 1007),
        ws(
            "64-bit length with the MSB set",
            "/echo",
            [&[FIN_BINARY, 0xff, 0x80][..], &[0; 7], &[1, 2, 3, 4]].concat(),
            1002,
        ),
        ws(
            "64-bit length with the MSB set on a channel",
            "/channels/a",
            [&[FIN_BINARY, 0xff, 0x80][..], &[0; 7], &[1, 2, 3, 4]].concat(),
            1002,
        ),
        ws("an HTTP request after the upgrade", "/echo", get("/healthz", ""), 1002),
        ws_script(
            "a good message, then an unmasked frame",
            "/echo",
            |ws| {
                ws.send(OpCode::Text, b"first");
                assert_eq!(ws.recv_text(), "first");
                ws.stream.write_all(&[FIN_TEXT, 1, b'x']).unwrap();
            },
            1002,
        ),
        ws_script(
            "a ping answered, then invalid UTF-8 in one write",
            "/echo",
            |ws| {
                ws.stream.write_all(&[frame(0x89, b"p"), frame(FIN_TEXT, b"\xc0\xaf")].concat()).unwrap();
                assert_eq!(ws.recv(), Some((OpCode::Pong, b"p".to_vec())));
            },
            1007,
        ),
        ws_script(
            "a clean close is answered 1000",
            "/echo",
            |ws| {
                ws.stream.write_all(&close_frame(1000, b"bye")).unwrap();
            },
            1000,
        ),
        // --- Cursors.
        raw(
            "since with a 15-digit epoch",
            get("/channels/a?since=0123456789abcde%3A1", ""),
            Status(400),
            KEEPS,
        ),
        raw(
            "since with a 17-digit epoch",
            get("/channels/a?since=0123456789abcdef0%3A1", ""),
            Status(400),
            KEEPS,
        ),
        raw(
            "since with a non-hex epoch",
            get("/channels/a?since=0123456789abcdeg%3A1", ""),
            Status(400),
            KEEPS,
        ),
        raw(
            "since with an overflowing offset",
            get("/channels/a?since=0123456789abcdef%3A18446744073709551616", ""),
            Status(400),
            KEEPS,
        ),
        raw("since without a colon", get("/channels/a?since=0123456789abcdef1", ""), Status(400), KEEPS),
        raw(
            "since with a negative offset",
            get("/channels/a?since=0123456789abcdef%3A-1", ""),
            Status(400),
            KEEPS,
        ),
        raw(
            "since with an empty offset",
            get("/channels/a?since=0123456789abcdef%3A", ""),
            Status(400),
            KEEPS,
        ),
        // An unreadable Last-Event-ID header is not refused but answered from now with a gap
        // (issue #13 item 7): tests/transports.rs html_sse_unreadable_last_event_id_*.
        raw("last_event_id garbage", get("/channels/a?mode=sse&last_event_id=x%3A1", ""), Status(400), KEEPS),
        raw(
            "since garbage on a stream",
            get("/channels/a?since=x", "Accept: application/x-ndjson\r\n"),
            Status(400),
            KEEPS,
        ),
        raw("since garbage on a long poll", get("/channels/a?wait=1&since=x", ""), Status(400), KEEPS),
        // --- Composite cursors (issue #13: `/channels/a,b`, README "Several channels on one
        // request"): a bad `?since=` is a 400; a bad `Last-Event-ID` is a gap on every channel.
        raw("composite since garbage", get("/channels/a,b?since=nope", ""), Status(400), KEEPS),
        raw(
            "composite since with one entry for two channels",
            get("/channels/a,b?since=0123456789abcdef%3A1", ""),
            Status(400),
            KEEPS,
        ),
        raw(
            "composite since with three entries for two channels",
            get("/channels/a,b?since=0123456789abcdef%3A1,,", ""),
            Status(400),
            KEEPS,
        ),
        raw(
            "composite since with a bad entry",
            get("/channels/a,b?since=0123456789abcdef%3A1,0123456789abcdef%3Ax", ""),
            Status(400),
            KEEPS,
        ),
        raw(
            "compact since with a non-hex hash",
            get("/channels/a,b?since=0123456789abcdeg.1.2", ""),
            Status(400),
            KEEPS,
        ),
        raw(
            "compact since with an offset past u64",
            get("/channels/a,b?since=0123456789abcdef.1.18446744073709551616", ""),
            Status(400),
            KEEPS,
        ),
        raw(
            "compact since with an empty offset",
            get("/channels/a,b?since=0123456789abcdef.1.", ""),
            Status(400),
            KEEPS,
        ),
        raw(
            "composite since longer than the channels allow",
            get(&format!("/channels/a,b?since={}", "1".repeat(200)), ""),
            Status(400),
            KEEPS,
        ),
        raw(
            "composite since garbage on a multi-channel stream",
            get("/channels/a,b?since=x", "Accept: application/x-ndjson\r\n"),
            Status(400),
            KEEPS,
        ),
        raw(
            "composite since garbage on a multi-channel event stream",
            sse_get("/channels/a,b?since=x", ""),
            Status(400),
            KEEPS,
        ),
        raw(
            "composite since garbage on a multi-channel long poll",
            get("/channels/a,b?wait=1&since=x", ""),
            Status(400),
            KEEPS,
        ),
        gap_on(
            "Last-Event-ID garbage on one channel",
            sse_get("/channels/a", "Last-Event-ID: x\r\n"),
            &["a"],
        ),
        gap_on(
            "Last-Event-ID garbage on two channels",
            sse_get("/channels/a,b", "Last-Event-ID: garbage\r\n"),
            &["a", "b"],
        ),
        gap_on(
            "Last-Event-ID with one entry for two channels",
            sse_get("/channels/a,b", "Last-Event-ID: 0123456789abcdef.1\r\n"),
            &["a", "b"],
        ),
        gap_on(
            "Last-Event-ID compact with a bad offset",
            sse_get("/channels/a,b", "Last-Event-ID: 0123456789abcdef.1.-2\r\n"),
            &["a", "b"],
        ),
        gap_on(
            "Last-Event-ID longer than the channels allow",
            sse_get("/channels/a,b", &format!("Last-Event-ID: {}\r\n", "9".repeat(300))),
            &["a", "b"],
        ),
        // --- `pushwire.v1` commands on `/ws` (README "Several channels on one WebSocket"): each
        // bad command is answered `error` and the connection stays; only a protocol violation
        // closes it.
        v1("malformed JSON command", |ws| command(ws, r#"{"type":"subscribe","req":7"#), "bad_command"),
        v1("a JSON command that is not an object", |ws| command(ws, r#"[7]"#), "bad_command"),
        v1(
            "a binary command",
            |ws| ws.send(OpCode::Binary, br#"{"type":"subscribe","req":7}"#),
            "bad_command",
        ),
        v1("unknown command", |ws| command(ws, r#"{"type":"dance","req":7}"#), "unknown_command"),
        v1(
            "unknown field in a command",
            |ws| command(ws, r#"{"type":"subscribe","channel":"a","colour":"red","req":7}"#),
            "bad_command",
        ),
        v1(
            "bad channel name in a command",
            |ws| command(ws, r#"{"type":"subscribe","channel":"a b","req":7}"#),
            "bad_channel",
        ),
        v1(
            "129-byte channel name in a command",
            |ws| command(ws, &format!(r#"{{"type":"subscribe","channel":"{}","req":7}}"#, "c".repeat(129))),
            "bad_channel",
        ),
        v1(
            "bad cursor in a command",
            |ws| command(ws, r#"{"type":"subscribe","channel":"a","since":"x:1","req":7}"#),
            "bad_cursor",
        ),
        v1(
            "oversized info in a command",
            |ws| {
                let info = format!(r#"{{"k":"{}"}}"#, "i".repeat(2048));
                command(ws, &format!(r#"{{"type":"subscribe","channel":"a","info":{info},"req":7}}"#));
            },
            "too_large",
        ),
        v1(
            "unsubscribe from a channel not subscribed",
            |ws| command(ws, r#"{"type":"unsubscribe","channel":"a","req":7}"#),
            "not_subscribed",
        ),
        v1(
            "too many channels",
            |ws| {
                for i in 0..64 {
                    v1_subscribe(ws, &format!("many.{i}"));
                }
                command(ws, r#"{"type":"subscribe","channel":"many.64","req":7}"#);
            },
            "too_many_channels",
        ),
        v1_closes(
            "oversized command frame",
            |ws| {
                command(ws, &format!(r#"{{"type":"publish","channel":"a","data":"{}"}}"#, "d".repeat(70_000)))
            },
            1009,
        ),
        v1_closes(
            "unmasked command frame",
            |ws| ws.stream.write_all(&[FIN_TEXT, 2, b'{', b'}']).unwrap(),
            1002,
        ),
        // --- Channel names.
        raw("empty channel name", get("/channels/", ""), Status(400), KEEPS),
        raw("129-byte channel name", get(&format!("/channels/{}", "c".repeat(129)), ""), Status(400), KEEPS),
        raw("channel name with %2F", get("/channels/a%2Fb", ""), Status(400), KEEPS),
        raw("channel name ..", get("/channels/..", ""), Status(400), KEEPS),
        raw("channel name .", get("/channels/.", ""), Status(400), KEEPS),
        raw("channel name in raw UTF-8", get("/channels/\u{fc}ber", ""), Status(400), KEEPS),
        raw("channel name percent-encoded UTF-8", get("/channels/%C3%BCber", ""), Status(400), KEEPS),
        raw("publish to a bad channel name", post("/channels/a$b", "", b"x"), Status(400), CLOSES),
        // --- Query strings.
        raw("bad percent-encoding", get("/channels/a?since=%zz", ""), Status(400), KEEPS),
        raw("truncated percent-encoding in mode", get("/channels/a?mode=%4", ""), Status(400), KEEPS),
        raw(
            "percent-encoded non-UTF-8 event name",
            post("/channels/a?event=%ff", "", b"x"),
            Status(400),
            CLOSES,
        ),
        raw("wait negative", get("/channels/a?wait=-1", ""), Status(400), KEEPS),
        raw("wait huge", get("/channels/a?wait=99999999999999999999", ""), Status(400), KEEPS),
        raw("wait non-numeric", get("/channels/a?wait=soon", ""), Status(400), KEEPS),
        raw("wait with an exponent", get("/channels/a?wait=1e3", ""), Status(400), KEEPS),
        raw("wait empty", get("/channels/a?wait=", ""), Status(400), KEEPS),
        raw("unknown mode", get("/channels/a?mode=carrier-pigeon", ""), Status(400), KEEPS),
        raw("event=gap", post("/channels/a?event=gap", "", b"x"), Status(400), CLOSES),
        raw(
            "event name of 65 bytes",
            post(&format!("/channels/a?event={}", "e".repeat(65)), "", b"x"),
            Status(400),
            CLOSES,
        ),
        raw("event name with a space", post("/channels/a?event=a%20b", "", b"x"), Status(400), CLOSES),
        raw("event name with a newline", post("/channels/a?event=a%0Ab", "", b"x"), Status(400), CLOSES),
        // --- Methods (RFC 9110 §15.5.6).
        raw(
            "DELETE on a channel",
            "DELETE /channels/a HTTP/1.1\r\nHost: t\r\n\r\n",
            StatusWith(405, "Allow", "GET, HEAD, POST"),
            KEEPS,
        ),
        raw(
            "PUT on a channel",
            "PUT /channels/a HTTP/1.1\r\nHost: t\r\n\r\n",
            StatusWith(405, "Allow", "GET, HEAD, POST"),
            KEEPS,
        ),
        raw(
            "PATCH on a channel",
            "PATCH /channels/a HTTP/1.1\r\nHost: t\r\n\r\n",
            StatusWith(405, "Allow", "GET, HEAD, POST"),
            KEEPS,
        ),
        // The body is left unread: the connection cannot be reused.
        raw(
            "PUT on a channel with a body",
            "PUT /channels/a HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc",
            StatusWith(405, "Allow", "GET, HEAD, POST"),
            CLOSES,
        ),
        raw("POST on /healthz", post("/healthz", "", b""), StatusWith(405, "Allow", "GET, HEAD"), KEEPS),
        raw("unknown path", get("/nope", ""), Status(404), KEEPS),
        raw("unknown path under /channels", get("/channelsx/a", ""), Status(404), KEEPS),
        // --- Access: the Origin policy (RFC 6454, RFC 6455 §10.2).
        raw(
            "foreign Origin on a poll",
            get("/channels/a", "Origin: https://evil.example\r\n"),
            Status(403),
            KEEPS,
        ),
        raw(
            "foreign Origin on SSE",
            get("/channels/a", "Origin: https://evil.example\r\nAccept: text/event-stream\r\n"),
            Status(403),
            KEEPS,
        ),
        raw(
            "foreign Origin on a WebSocket",
            get("/channels/a", &format!("Origin: https://evil.example\r\n{UPGRADE}{KEY}")),
            Status(403),
            KEEPS,
        ),
        raw(
            "foreign Origin on /echo",
            get("/echo", &format!("Origin: https://evil.example\r\n{UPGRADE}{KEY}")),
            Status(403),
            KEEPS,
        ),
        raw(
            "foreign Origin on a publish",
            post("/channels/a", "Origin: https://evil.example\r\nContent-Type: text/plain\r\n", b"x"),
            Status(403),
            CLOSES,
        ),
        raw("Origin null", get("/channels/a", "Origin: null\r\n"), Status(403), KEEPS),
        raw(
            "Origin localhost as a prefix",
            get("/channels/a", "Origin: http://localhost.evil.example\r\n"),
            Status(403),
            KEEPS,
        ),
        raw(
            "Origin not UTF-8",
            get_bytes("/channels/a", "", b"Origin: http://\xe9vil.example"),
            Status(403),
            KEEPS,
        ),
        raw(
            "Origin not ASCII",
            get("/channels/a", "Origin: http://\u{e9}vil.example\r\n"),
            Status(403),
            KEEPS,
        ),
    ]
}

/// The rows run against a server started with `--publish-token pub --subscribe-token sub`
/// (and `--api-key`, for the server API rows).
fn token_server_cases() -> Vec<Case> {
    let text = "Content-Type: text/plain\r\n";
    let mut cases = vec![
        raw("publish without a token", post("/channels/a", text, b"x"), Status(401), CLOSES),
        raw(
            "publish with a wrong token",
            post("/channels/a", &format!("{text}Authorization: Bearer nope\r\n"), b"x"),
            Status(403),
            CLOSES,
        ),
        raw(
            "publish with the subscribe token",
            post("/channels/a", &format!("{text}Authorization: Bearer sub\r\n"), b"x"),
            Status(403),
            CLOSES,
        ),
        raw(
            "publish with Basic credentials",
            post("/channels/a", &format!("{text}Authorization: Basic cHViOg==\r\n"), b"x"),
            Status(401),
            CLOSES,
        ),
        raw(
            "publish with an empty Bearer",
            post("/channels/a", &format!("{text}Authorization: Bearer \r\n"), b"x"),
            Status(401),
            CLOSES,
        ),
        raw(
            "publish with a wrong query token",
            post("/channels/a?token=nope", text, b"x"),
            Status(403),
            CLOSES,
        ),
        raw(
            "publish with a token longer than the real one",
            post("/channels/a", &format!("{text}Authorization: Bearer pubpub\r\n"), b"x"),
            Status(403),
            CLOSES,
        ),
        raw("poll without a token", get("/channels/a", ""), Status(401), KEEPS),
        raw(
            "poll with a wrong token",
            get("/channels/a", "Authorization: Bearer nope\r\n"),
            Status(403),
            KEEPS,
        ),
        raw(
            "poll with the publish token",
            get("/channels/a", "Authorization: Bearer pub\r\n"),
            Status(403),
            KEEPS,
        ),
        raw("long poll without a token", get("/channels/a?wait=1", ""), Status(401), KEEPS),
        raw("SSE without a token", get("/channels/a", "Accept: text/event-stream\r\n"), Status(401), KEEPS),
        raw("SSE with a wrong query token", get("/channels/a?mode=sse&token=nope", ""), Status(403), KEEPS),
        raw(
            "stream without a token",
            get("/channels/a", "Accept: application/x-ndjson\r\n"),
            Status(401),
            KEEPS,
        ),
        raw("WebSocket without a token", get("/channels/a", &format!("{UPGRADE}{KEY}")), Status(401), KEEPS),
        raw(
            "WebSocket with a wrong token",
            get("/channels/a?token=nope", &format!("{UPGRADE}{KEY}")),
            Status(403),
            KEEPS,
        ),
        raw("bad percent-encoding in the token", get("/channels/a?token=%zz", ""), Status(401), KEEPS),
        // RFC 6455 §7.4.1: 1008 for a message that violates the server's policy.
        Case {
            name: "WebSocket publish without the publish token",
            input: Input::WsScript("/channels/a?token=sub", |ws| ws.send(OpCode::Text, b"sneaky")),
            expect: ClosingHandshake(1008),
            closes: CLOSES,
        },
    ];
    cases.extend(api_cases());
    cases
}

/// The server API rows (issue #17), on the server started with `--api-key API_KEY`: a refused
/// request with a body closes (its body is unread), a 400 after reading it keeps.
fn api_cases() -> Vec<Case> {
    let key = format!("Authorization: apikey {API_KEY}\r\n");
    let publish = br#"{"channel":"a","data":"x"}"#;
    vec![
        raw(
            "api without a key",
            post("/api/publish", "", publish),
            StatusWith(401, "www-authenticate", "apikey realm=\"pushwire api\""),
            CLOSES,
        ),
        raw(
            "api with a wrong key",
            post("/api/publish", "Authorization: apikey nope\r\n", publish),
            Status(403),
            CLOSES,
        ),
        raw(
            "api with a bearer token",
            post("/api/publish", "Authorization: Bearer pub\r\n", publish),
            Status(401),
            CLOSES,
        ),
        raw("api unknown call", post("/api/nope", &key, publish), Status(404), CLOSES),
        raw("api GET", get("/api/publish", &key), StatusWith(405, "allow", "POST"), KEEPS),
        raw("api bad JSON", post("/api/publish", &key, b"{\"channel\":"), Status(400), KEEPS),
        raw(
            "api unknown field",
            post("/api/publish", &key, br#"{"channel":"a","data":1,"x":1}"#),
            Status(400),
            KEEPS,
        ),
        raw(
            "api wrong type",
            post("/api/broadcast", &key, br#"{"channels":7,"data":1}"#),
            Status(400),
            KEEPS,
        ),
        raw(
            "api not UTF-8",
            post("/api/publish", &key, b"{\"channel\":\"\xff\",\"data\":1}"),
            Status(400),
            KEEPS,
        ),
        raw(
            "api bad channel",
            post("/api/publish", &key, br#"{"channel":"..","data":1}"#),
            Status(400),
            KEEPS,
        ),
        raw(
            "api deeply nested data is opaque text (no recursion)",
            post(
                "/api/publish",
                &key,
                &[&b"{\"channel\":\"a\",\"data\":"[..], &[b'['; 4000], &[b']'; 4000], b"}"].concat(),
            ),
            Status(200),
            KEEPS,
        ),
        raw(
            "api body over the API limit",
            format!("POST /api/publish HTTP/1.1\r\nHost: t\r\n{key}Content-Length: 1048577\r\n\r\n"),
            Status(413),
            CLOSES,
        ),
    ]
}

/// A real ClientHello from a rustls client (TLS 1.3 and 1.2, ALPN `http/1.1`).
fn client_hello() -> Vec<u8> {
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut conn = rustls::ClientConnection::new(std::sync::Arc::new(config), name).unwrap();
    let mut hello = Vec::new();
    conn.write_tls(&mut hello).unwrap();
    hello
}

/// A TLS record (RFC 8446 §5.1) of `content_type` holding `body`, with version 0x0301.
fn record(content_type: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![content_type, 0x03, 0x01];
    out.extend_from_slice(&(body.len() as u16).to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// RFC 8446 §6 AlertDescription the rows expect (rustls answers every malformed first
/// flight with it, an oversized record included, where §5.1 names `record_overflow`).
const DECODE_ERROR: u8 = 50;

/// The rows run against the TLS port of a server that serves TLS and plain HTTP.
fn tls_port_cases() -> Vec<Case> {
    let tls = |name, bytes: Vec<u8>, expect| Case { name, input: Input::Tls(bytes), expect, closes: CLOSES };
    let hello = client_hello();
    // The ClientHello's handshake message (after the 5-byte record header).
    let message = &hello[5..];
    // The handshake message claims 64 bytes more than its record holds: rustls waits for the
    // rest (a handshake message may span records, RFC 8446 §5.1), and the client then goes.
    // (Flipping a bit of the length instead made the row depend on that bit's value in this
    // run's ClientHello: shorter claims are a decode error, longer ones a wait.)
    let mut wrong_length = hello.clone();
    let claimed = u32::from_be_bytes([0, hello[6], hello[7], hello[8]]) + 64;
    wrong_length[6..9].copy_from_slice(&claimed.to_be_bytes()[1..]);
    let mut garbage = hello.clone();
    for b in &mut garbage[9..] {
        *b = b.wrapping_mul(31).wrapping_add(7);
    }
    let mut old_version = hello.clone();
    old_version[1..3].copy_from_slice(&[0x02, 0x00]); // an SSL 2.0-era record version
    vec![
        // The sniff before rustls: a first byte that is not a handshake record is plain HTTP
        // or something else, answered with a plain 400.
        tls("plain HTTP to the TLS port", get("/channels/a", ""), Status(400)),
        tls("binary garbage to the TLS port", vec![0u8, 1, 2, 3, 0xff, 0xfe], Status(400)),
        tls("an application-data record first", record(0x17, b"hello"), Status(400)),
        // RFC 8446 §5.1: the length MUST NOT exceed 2^14 bytes (+256 for ciphertext).
        tls(
            "a handshake record longer than 2^14 + 256",
            vec![0x16, 0x03, 0x01, 0xff, 0xff, 1],
            TlsAlert(DECODE_ERROR),
        ),
        tls("a handshake message of an unknown type and 16 MiB", record(0x16, &[0xff; 5]), SilentClose),
        tls("a ClientHello with its bytes scrambled", garbage, TlsAlert(DECODE_ERROR)),
        tls(
            "a ClientHello that claims 64 bytes more than its record, then the client goes",
            wrong_length,
            CloseNotify,
        ),
        tls("a ClientHello in an SSL 2.0-era record", old_version, TlsAlert(DECODE_ERROR)),
        tls("an empty handshake record", record(0x16, &[]), TlsAlert(DECODE_ERROR)),
        tls("a truncated ClientHello, then the client goes", hello[..hello.len() / 2].to_vec(), CloseNotify),
        tls("only a record header, then the client goes", hello[..5].to_vec(), CloseNotify),
        tls("one byte, then the client goes", vec![0x16], CloseNotify),
        tls("a ClientHello cut to its message header", record(0x16, &message[..4]), CloseNotify),
    ]
}

/// The server API key of the token server.
const API_KEY: &str = "matrix-api-key-0123456789";

/// A well-behaved client: publishes and polls after every row, echoes on a WebSocket opened
/// before the first row, and keeps an SSE subscription open for the whole matrix.
struct WellBehaved {
    publish_auth: &'static str,
    subscribe_auth: &'static str,
    /// The cursor of the last message polled.
    since: String,
    /// (id, data) of every message published by the checks, in order.
    published: Vec<(String, String)>,
    echo: RawWs,
    sse: SseClient,
}

const WATCHED: &str = "watched";

impl WellBehaved {
    fn start(server: &Server, publish_auth: &'static str, subscribe_auth: &'static str) -> WellBehaved {
        let sse = SseClient::connect(server, &format!("/channels/{WATCHED}"), subscribe_auth);
        let tail = exchange(server, &get(&format!("/channels/{WATCHED}"), subscribe_auth));
        assert_eq!(tail.status, 200, "{}", tail.text());
        let since = json_field(&tail.text(), "next").expect("next");
        let (echo, head) = RawWs::connect(server, "/echo", &[]);
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        WellBehaved { publish_auth, subscribe_auth, since, published: Vec::new(), echo, sse }
    }

    /// One round: publish, poll it back from the last cursor, echo on the WebSocket.
    fn check(&mut self, server: &Server, round: usize) -> Result<(), String> {
        let data = format!("round-{round}");
        let res = exchange(
            server,
            &post(
                &format!("/channels/{WATCHED}"),
                &format!("{}Content-Type: text/plain\r\n", self.publish_auth),
                data.as_bytes(),
            ),
        );
        if res.status != 201 {
            return Err(format!("publish answered {}: {}", res.status, res.text()));
        }
        let id = json_field(&res.text(), "id").ok_or("no id in the publish answer")?;
        let target = format!("/channels/{WATCHED}?since={}", self.since.replace(':', "%3A"));
        let polled = exchange(server, &get(&target, self.subscribe_auth));
        if polled.status != 200 || data_values(&polled.text()) != [data.clone()] {
            return Err(format!("poll answered {}: {}", polled.status, polled.text()));
        }
        if json_field(&polled.text(), "next").as_deref() != Some(id.as_str()) {
            return Err(format!("poll's next is not the published id {id}: {}", polled.text()));
        }
        self.since = id.clone();
        self.published.push((id, data.clone()));
        self.echo.send(OpCode::Text, data.as_bytes());
        match self.echo.recv() {
            Some((OpCode::Text, payload)) if payload == data.as_bytes() => Ok(()),
            other => Err(format!("echo answered {other:?}")),
        }
    }

    /// The SSE subscriber received every published message, in order, and nothing else.
    fn finish(mut self) {
        for (i, (id, data)) in self.published.iter().enumerate() {
            let event =
                self.sse.next_event(IO_TIMEOUT).unwrap_or_else(|| panic!("SSE: event {i} ({data}) missing"));
            assert_eq!(
                (event.id.as_deref(), event.data.as_str()),
                (Some(id.as_str()), data.as_str()),
                "SSE event {i}"
            );
        }
        assert_eq!(self.sse.next_event(Duration::from_millis(200)), None, "SSE: more events than published");
    }
}

/// Sends a row's input and checks the server's answer; `tls` is the server's TLS port.
fn run_case(server: &Server, tls: Option<SocketAddr>, case: &Case) {
    match &case.input {
        Input::Tls(bytes) if matches!(case.expect, TlsAlert(_) | CloseNotify | SilentClose) => {
            let mut stream = TcpStream::connect(tls.expect("a TLS port")).unwrap();
            stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
            let _ = stream.write_all(bytes);
            let _ = stream.shutdown(Shutdown::Write);
            let mut answer = Vec::new();
            // A reset after the alert is a close too; what arrived before it is kept.
            let _ = stream.read_to_end(&mut answer);
            match case.expect {
                // RFC 8446 §6: an alert record is content type 21, two bytes: level (2 =
                // fatal) and description.
                TlsAlert(description) => assert_eq!(
                    answer,
                    [21, 3, 3, 0, 2, 2, description],
                    "expected the fatal alert {description} alone"
                ),
                CloseNotify => assert_eq!(answer, [21, 3, 3, 0, 2, 1, 0], "expected close_notify alone"),
                _ => assert!(answer.is_empty(), "bytes from the server: {answer:?}"),
            }
        }
        Input::Raw(_) | Input::Tls(_) => {
            let (bytes, mut stream) = match &case.input {
                Input::Raw(bytes) => (bytes, server.connect()),
                Input::Tls(bytes) => {
                    let stream = TcpStream::connect(tls.expect("a TLS port")).unwrap();
                    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
                    (bytes, stream)
                }
                _ => unreachable!(),
            };
            // A server that answers early may close before everything is written; the answer
            // must still arrive (RFC 9112 §9.6 lingering close).
            let _ = stream.write_all(bytes);
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            if let GapOn(channels) = case.expect {
                return expect_gaps(reader, channels);
            }
            let res = read_response(&mut reader, false);
            let (status, field) = match case.expect {
                Status(status) => (status, None),
                StatusWith(status, name, value) => (status, Some((name, value))),
                CloseCode(_) | ClosingHandshake(_) | TlsAlert(_) | CloseNotify | SilentClose
                | CommandError(_) | GapOn(_) => {
                    unreachable!("raw rows expect a status")
                }
            };
            assert_eq!(res.status, status, "answer: {}", res.text());
            if let Some((name, value)) = field {
                assert_eq!(res.header(name), Some(value), "field {name}");
            }
            if case.closes {
                assert_eq!(res.header("connection"), Some("close"), "a closing answer says so");
                let mut rest = Vec::new();
                reader.read_to_end(&mut rest).expect("the server closes the connection");
                assert!(rest.is_empty(), "bytes after the answer: {:?}", String::from_utf8_lossy(&rest));
            } else {
                stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
                let next = read_response(&mut reader, false);
                assert_eq!((next.status, next.text().as_str()), (200, "ok\n"), "the connection still serves");
            }
        }
        Input::Ws(..) | Input::WsScript(..) | Input::V1(_) => {
            let (path, protocols): (&str, &[&str]) = match &case.input {
                Input::Ws(path, _) | Input::WsScript(path, _) => (path, &[]),
                _ => ("/ws", &["pushwire.v1"]),
            };
            let (mut ws, head) = RawWs::connect(server, path, protocols);
            assert!(head.starts_with("HTTP/1.1 101"), "{head}");
            ws.stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
            match &case.input {
                Input::Ws(_, bytes) => ws.stream.write_all(bytes).unwrap(),
                Input::WsScript(_, script) | Input::V1(script) => script(&mut ws),
                Input::Raw(_) | Input::Tls(_) => unreachable!(),
            }
            let (code, answer) = match case.expect {
                CloseCode(code) => (code, false),
                ClosingHandshake(code) => (code, true),
                CommandError(code) => return expect_command_error(ws, code),
                Status(_) | StatusWith(..) | TlsAlert(_) | CloseNotify | SilentClose | GapOn(_) => {
                    unreachable!("WebSocket rows expect a close code")
                }
            };
            let (op, payload) = ws.recv().expect("a close frame");
            assert_eq!(op, OpCode::Close, "payload {:?}", String::from_utf8_lossy(&payload));
            assert!(payload.len() >= 2, "close without a code");
            assert_eq!(
                u16::from_be_bytes([payload[0], payload[1]]),
                code,
                "close reason {:?}",
                String::from_utf8_lossy(&payload[2..])
            );
            if answer {
                ws.send(OpCode::Close, &payload[..2]);
            }
            // RFC 6455 §7.1.1: the server closes the TCP connection first.
            assert_eq!(ws.recv(), None, "the server closes the connection after its close frame");
        }
    }
}

/// A `pushwire.v1` row's answer: `error` with `code` (and the `req` 7 when the command had one
/// readable), then the connection still serves a good command.
fn expect_command_error(mut ws: RawWs, code: &str) {
    let error = reply(&mut ws);
    assert_eq!((error["type"].as_str(), error["code"].as_str()), (Some("error"), Some(code)), "{error}");
    assert!(error["req"].is_null() || error["req"] == 7, "the req is echoed: {error}");
    command(&mut ws, r#"{"type":"presence_stats","channel":"after.error","req":"p"}"#);
    let stats = reply(&mut ws);
    assert_eq!(
        (stats["type"].as_str(), stats["req"].as_str()),
        (Some("presence_stats"), Some("p")),
        "{stats}"
    );
}

/// A `GapOn` row's answer: `200`, then a `gap` event naming each of `channels` (in any
/// order, before any message), each with its composite `id:`.
fn expect_gaps(mut reader: BufReader<TcpStream>, channels: &[&str]) {
    let mut line = || {
        let mut l = String::new();
        assert!(reader.read_line(&mut l).expect("read the event stream") > 0, "closed early");
        l.trim_end().to_string()
    };
    let status = line();
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    while !line().is_empty() {} // The head's fields.
    let mut gaps = Vec::new();
    let mut event = None;
    while gaps.len() < channels.len() {
        let l = line();
        if let Some(name) = l.strip_prefix("event: ") {
            event = Some(name.to_string());
        } else if let Some(data) = l.strip_prefix("data: ") {
            assert_eq!(event.as_deref(), Some("gap"), "an event before the gaps: {data}");
            let data: serde_json::Value = serde_json::from_str(data).unwrap();
            gaps.push(data["channel"].as_str().unwrap_or(channels[0]).to_string());
        } else if l.is_empty() {
            event = None;
        }
    }
    gaps.sort();
    assert_eq!(gaps, channels, "one gap per channel");
}

/// Runs every row, with the well-behaved checks after each; reports all failures at once.
fn run_matrix(flags: &[&str], publish_auth: &'static str, subscribe_auth: &'static str, cases: Vec<Case>) {
    let (server, tls) = if flags.contains(&"--tls-cert") {
        let (server, tls) = Server::start_tls(flags);
        (server, Some(tls))
    } else {
        (Server::start(flags), None)
    };
    let mut client = WellBehaved::start(&server, publish_auth, subscribe_auth);
    let mut failures = Vec::new();
    for (round, case) in cases.iter().enumerate() {
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| run_case(&server, tls, case))) {
            failures.push(format!("{}: {}", case.name, panic_text(&panic)));
        }
        if let Err(e) = client.check(&server, round) {
            failures.push(format!("after {}: the well-behaved client failed: {e}", case.name));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} rows failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    client.finish();
}

fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "panic".into())
}

#[test]
fn bad_input_matrix_on_the_default_server() {
    let cases = default_server_cases();
    assert!(cases.len() >= 100, "{} rows", cases.len());
    run_matrix(&[], "", "", cases);
}

#[test]
fn bad_input_matrix_on_a_server_with_tokens() {
    run_matrix(
        &["--publish-token", "pub", "--subscribe-token", "sub", "--api-key", API_KEY],
        "Authorization: Bearer pub\r\n",
        "Authorization: Bearer sub\r\n",
        token_server_cases(),
    );
}

#[test]
fn rfc8446_bad_input_matrix_on_a_tls_port() {
    let pki = common::pki::TestPki::new("matrix", &["localhost"]);
    let mut flags = pki.flags();
    flags.extend(["--tls-listen".to_string(), "127.0.0.1:0".to_string()]);
    run_matrix(&flags.iter().map(String::as_str).collect::<Vec<_>>(), "", "", tls_port_cases());
}
