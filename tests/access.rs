//! Loopback tests of the access rules: the Origin policy on every transport, CORS and its
//! preflight, and the publish and subscribe tokens.

mod common;

use common::*;
use pushwire::ws::OpCode;

fn get(server: &Server, target: &str, fields: &str) -> Response {
    exchange(server, format!("GET {target} HTTP/1.1\r\nHost: t\r\n{fields}\r\n").as_bytes())
}

#[test]
fn rfc6454_foreign_origins_are_refused_on_every_transport() {
    let server = Server::start(&[]);
    let evil = "Origin: https://evil.example\r\n";
    assert_eq!(get(&server, "/channels/a", evil).status, 403);
    assert_eq!(get(&server, "/channels/a?mode=sse", evil).status, 403);
    assert_eq!(get(&server, "/channels/a?wait=1", evil).status, 403);
    let upgrade = "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n";
    assert_eq!(get(&server, "/channels/a", &format!("{evil}{upgrade}")).status, 403);
    let post = b"POST /channels/a HTTP/1.1\r\nHost: t\r\nOrigin: https://evil.example\r\nContent-Type: text/plain\r\nContent-Length: 1\r\n\r\nx";
    assert_eq!(exchange(&server, post).status, 403, "no cross-site publish by a simple POST");
    // Non-browser clients (no Origin), the server's own origin and loopback origins pass.
    assert_eq!(get(&server, "/channels/a", "").status, 200);
    assert_eq!(get(&server, "/channels/a", "Origin: http://t\r\n").status, 200);
    let local = get(&server, "/channels/a", "Origin: http://localhost:5173\r\n");
    assert_eq!(local.status, 200);
    assert_eq!(local.header("access-control-allow-origin"), Some("http://localhost:5173"));
    assert_eq!(local.header("vary"), Some("Origin"));
}

#[test]
fn cors_preflight_is_answered_and_listed_origins_are_allowed() {
    let server = Server::start(&["--allow-origin", "https://app.example"]);
    let res = exchange(
        &server,
        b"OPTIONS /channels/a HTTP/1.1\r\nHost: t\r\nOrigin: https://app.example\r\nAccess-Control-Request-Method: POST\r\n\r\n",
    );
    assert_eq!(res.status, 204);
    assert_eq!(res.header("content-length"), None, "RFC 9110 §8.6: no Content-Length in a 204");
    assert_eq!(res.header("access-control-allow-origin"), Some("https://app.example"));
    assert!(res.header("access-control-allow-methods").unwrap().contains("POST"));
    assert!(res.header("access-control-allow-headers").unwrap().contains("Last-Event-ID"));
    let sse = get(&server, "/channels/a?mode=poll", "Origin: https://app.example\r\n");
    assert_eq!(sse.header("access-control-allow-origin"), Some("https://app.example"));
}

#[test]
fn rfc6750_2_1_publish_token_missing_401_wrong_403_right_201() {
    let server = Server::start(&["--publish-token", "s3cret"]);
    let post = |auth: &str| {
        let raw = format!("POST /channels/p HTTP/1.1\r\nHost: t\r\n{auth}Content-Type: text/plain\r\nContent-Length: 1\r\n\r\nx");
        exchange(&server, raw.as_bytes()).status
    };
    assert_eq!(post(""), 401);
    assert_eq!(post("Authorization: Bearer nope\r\n"), 403);
    assert_eq!(post("Authorization: Bearer s3cret\r\n"), 201);
    // Subscribing needs no token here.
    assert_eq!(get(&server, "/channels/p", "").status, 200);
    // A WebSocket without the token may listen but not publish: close 1008.
    let (mut ws, head) = RawWs::connect(&server, "/channels/p", &[]);
    assert!(head.starts_with("HTTP/1.1 101"));
    ws.send(OpCode::Text, b"sneaky");
    let (op, payload) = ws.recv().unwrap();
    assert_eq!(op, OpCode::Close);
    assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 1008);
    // With the token in the query (browsers cannot set fields on a WebSocket) it may.
    let (mut ws, _) = RawWs::connect(&server, "/channels/p?token=s3cret", &[]);
    ws.send(OpCode::Text, b"allowed");
    assert_eq!(ws.recv_text(), "allowed");
}

#[test]
fn subscribe_token_guards_every_subscription() {
    let server = Server::start(&["--subscribe-token", "letmein"]);
    assert_eq!(get(&server, "/channels/s", "").status, 401);
    assert_eq!(get(&server, "/channels/s?mode=sse&token=nope", "").status, 403);
    assert_eq!(get(&server, "/channels/s", "Authorization: Bearer letmein\r\n").status, 200);
}

#[test]
fn a_refused_websocket_subscription_ends_with_a_close_frame_not_an_http_answer() {
    let server = Server::start(&["--max-channels", "1"]);
    assert_eq!(get(&server, "/channels/first", "").status, 200);
    // The 101 is written before the hub answers; its refusal must be a WebSocket close.
    let (mut ws, head) = RawWs::connect(&server, "/channels/second", &[]);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let (op, payload) = ws.recv().expect("a close frame");
    assert_eq!(op, OpCode::Close);
    assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 1011);
    // An SSE request is refused before its head: a plain 503.
    assert_eq!(get(&server, "/channels/third?mode=sse", "").status, 503);
}
