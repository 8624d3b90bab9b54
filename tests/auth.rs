//! Loopback tests of per-channel authorization (issue #13 item 4): `--token-secret` and
//! `--channel-policy` against the real binary. Tokens are made by the tests' own signer
//! (`common::api::jwt_with`, on `hmac`/`sha2`, independent of the server's): the authorization
//! matrix (missing, malformed, forged, expired, wrong-channel and good tokens) on the
//! single-channel URL of all five transports and on `pushwire.v1` commands; expiry, `refresh`
//! and close 4001; the `/metrics` counters; and connections that are not affected by another
//! one's refusal.

mod common;

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use common::api::{jwt_with, unix_now, HS256_HEADER, SECRET};
use common::v1::V1;
use common::*;
use serde_json::{json, Value};

const POLICIES: [&str; 4] =
    ["--channel-policy", "private.*=token", "--channel-policy", "news.*=publish-token"];

fn server() -> Server {
    let mut flags = vec!["--token-secret", SECRET];
    flags.extend_from_slice(&POLICIES);
    Server::start(&flags)
}

/// A good token for `user` granting `channels` for every action, expiring in `ttl_s`.
fn token(user: &str, channels: &str, ttl_s: i64) -> String {
    let exp = unix_now() as i64 + ttl_s;
    let claims =
        json!({"sub":user,"exp":exp,"subscribe":[channels],"publish":[channels],"presence":[channels]});
    jwt_with(SECRET, HS256_HEADER, &claims)
}

/// The bad tokens of the matrix, with the `/metrics` reason each is counted under.
fn bad_tokens() -> Vec<(&'static str, String)> {
    let claims = json!({"sub":"mallory","exp":unix_now() + 600,"subscribe":["*"],"publish":["*"]});
    vec![
        ("malformed", "not-a-jwt".to_string()),
        ("bad_signature", jwt_with("some-other-secret-of-at-least-32-bytes", r#"{"alg":"HS256"}"#, &claims)),
        ("expired", token("alice", "private.*", -5)),
        (
            "unsupported_algorithm",
            format!(
                "{}.{}.",
                URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#),
                URL_SAFE_NO_PAD.encode(claims.to_string())
            ),
        ),
    ]
}

/// `GET`/`POST` on `target` with `fields` (whole lines) and the answer's head.
fn request(server: &Server, method: &str, target: &str, fields: &str) -> Response {
    let raw = if method == "POST" {
        format!("POST {target} HTTP/1.1\r\nHost: t\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n{fields}\r\nhello")
    } else {
        format!("{method} {target} HTTP/1.1\r\nHost: t\r\n{fields}\r\n")
    };
    exchange(server, raw.as_bytes())
}

/// The five single-channel URL forms of reading `channel`: (transport, target, fields).
fn read_forms(channel: &str) -> Vec<(&'static str, String, &'static str)> {
    let ws = "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
              Sec-WebSocket-Version: 13\r\n";
    vec![
        ("poll", format!("/channels/{channel}"), ""),
        ("longpoll", format!("/channels/{channel}?wait=0.05"), ""),
        ("sse", format!("/channels/{channel}"), "Accept: text/event-stream\r\n"),
        ("stream", format!("/channels/{channel}"), "Accept: application/x-ndjson\r\n"),
        ("ws", format!("/channels/{channel}"), ws),
    ]
}

fn with_query(target: &str, query: &str) -> String {
    if target.contains('?') {
        format!("{target}&{query}")
    } else {
        format!("{target}?{query}")
    }
}

#[test]
fn rfc6750_authorization_matrix_on_the_five_single_channel_transports() {
    let server = server();
    let good = token("alice", "private.a", 600);
    let other_channel = token("alice", "private.b", 600);
    let ok_status = |transport: &str| if transport == "ws" { 101 } else { 200 };
    for (transport, target, fields) in read_forms("private.a") {
        // Missing: 401 with the challenge (RFC 6750 §3).
        let r = request(&server, "GET", &target, fields);
        assert_eq!(r.status, 401, "{transport} without a token: {}", r.text());
        assert_eq!(r.header("www-authenticate"), Some("Bearer"), "{transport}");
        // Invalid (malformed, forged, expired, alg none): 401 invalid_token.
        for (why, bad) in bad_tokens() {
            let r = request(&server, "GET", &target, &format!("{fields}Authorization: Bearer {bad}\r\n"));
            assert_eq!(r.status, 401, "{transport} {why}: {}", r.text());
            assert_eq!(
                r.header("www-authenticate"),
                Some("Bearer error=\"invalid_token\""),
                "{transport} {why}"
            );
        }
        // Valid, for another channel: 403 insufficient_scope.
        let r =
            request(&server, "GET", &target, &format!("{fields}Authorization: Bearer {other_channel}\r\n"));
        assert_eq!(r.status, 403, "{transport} wrong channel: {}", r.text());
        assert!(r.text().contains("does not grant"), "{}", r.text());
        // Valid: served, from the field or from ?token= (EventSource and browser WebSockets).
        let r = request(&server, "GET", &target, &format!("{fields}Authorization: Bearer {good}\r\n"));
        assert_eq!(r.status, ok_status(transport), "{transport} good token: {}", r.text());
        let r = request(&server, "GET", &with_query(&target, &format!("token={good}")), fields);
        assert_eq!(r.status, ok_status(transport), "{transport} good ?token=: {}", r.text());
        // Unmatched channels stay anonymous.
        let open = target.replace("private.a", "public");
        assert_eq!(request(&server, "GET", &open, fields).status, ok_status(transport), "{transport} public");
    }
    // Publishing: a token granting only reading is not enough; `publish-token` channels are
    // read anonymously and published to with a token only.
    let reader_only = {
        let claims = json!({"sub":"r","exp":unix_now() + 600,"subscribe":["private.a"]});
        jwt_with(SECRET, HS256_HEADER, &claims)
    };
    let post = |target: &str, token: Option<&str>| {
        let fields = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
        request(&server, "POST", target, &fields).status
    };
    assert_eq!(post("/channels/private.a", None), 401);
    assert_eq!(post("/channels/private.a", Some(&reader_only)), 403);
    assert_eq!(post("/channels/private.a", Some(&good)), 201);
    assert_eq!(post("/channels/news.x", None), 401);
    assert_eq!(post("/channels/news.x", Some(&token("ed", "news.*", 60))), 201);
    assert_eq!(request(&server, "GET", "/channels/news.x", "").status, 200);
    assert_eq!(post("/channels/public", None), 201);

    // Counted by reason: 5 transports × (1 missing, 1 per bad token, 1 not granted) plus the
    // publishes.
    assert_eq!(metric(&server, "token_refusals_total{reason=\"missing\"}"), 5 + 2);
    assert_eq!(metric(&server, "token_refusals_total{reason=\"not_granted\"}"), 5 + 1);
    for (why, _) in bad_tokens() {
        assert_eq!(metric(&server, &format!("token_refusals_total{{reason=\"{why}\"}}")), 5, "{why}");
    }
}

fn v1(server: &Server, token: Option<&str>) -> V1 {
    V1::connect(server, token)
}

fn ask(c: &mut V1, command: Value) -> Value {
    c.ask(command)
}

#[test]
fn pushwire_v1_commands_are_authorized_per_channel() {
    let server = server();
    // A bad connection token is refused before the upgrade, with the HTTP answer.
    for (why, bad) in bad_tokens() {
        let (_, head) = RawWs::connect(&server, &format!("/ws?token={bad}"), &["pushwire.v1"]);
        assert!(head.starts_with("HTTP/1.1 401"), "{why}: {head}");
    }
    let mut anon = v1(&server, None);
    let sub = |channel: &str, token: Option<&str>, req: u64| {
        let mut c = json!({"type":"subscribe","channel":channel,"req":req});
        if let Some(t) = token {
            c["token"] = t.into();
        }
        c
    };
    let code = |reply: &Value| reply["code"].as_str().unwrap_or("ok").to_string();
    assert_eq!(code(&ask(&mut anon, sub("private.a", None, 1))), "not_allowed");
    for (i, (why, bad)) in bad_tokens().into_iter().enumerate() {
        let reply = ask(&mut anon, sub("private.a", Some(&bad), 10 + i as u64));
        assert_eq!(code(&reply), "bad_token", "{why}: {reply}");
        assert_eq!(reply["reason"], why, "{reply}");
        assert_eq!(reply["req"], 10 + i as u64);
    }
    let wrong = token("bob", "private.b", 600);
    assert_eq!(code(&ask(&mut anon, sub("private.a", Some(&wrong), 20))), "not_allowed");
    // A command's own token grants its subscription; the connection stays anonymous.
    assert_eq!(code(&ask(&mut anon, sub("private.b", Some(&wrong), 21))), "ok");
    let publish = |channel: &str, req: u64| json!({"type":"publish","channel":channel,"data":"x","req":req});
    assert_eq!(code(&ask(&mut anon, publish("private.b", 22))), "not_allowed");
    assert_eq!(code(&ask(&mut anon, publish("public", 23))), "ok");
    assert_eq!(code(&ask(&mut anon, sub("public", None, 24))), "ok");

    // The connection token grants what it names.
    let mut alice = v1(&server, Some(&token("alice", "private.*", 600)));
    assert_eq!(code(&ask(&mut alice, sub("private.a", None, 1))), "ok");
    assert_eq!(code(&ask(&mut alice, publish("private.a", 2))), "ok");
    assert_eq!(code(&ask(&mut alice, publish("news.today", 3))), "not_allowed");
    // The refusals did not disturb the other connections: both still receive.
    assert_eq!(code(&ask(&mut alice, publish("private.b", 4))), "ok");
    let frame = anon.message();
    assert_eq!(
        (frame["channel"].as_str(), frame["data"].as_str()),
        (Some("private.b"), Some("x")),
        "{frame}"
    );
    assert_eq!(metric(&server, "token_refusals_total{reason=\"not_granted\"}"), 2);
    assert_eq!(metric(&server, "token_refusals_total{reason=\"missing\"}"), 2);
    assert_eq!(metric(&server, "token_refusals_total{reason=\"bad_signature\"}"), 2);
    assert_eq!(metric(&server, "token_refusals_total{reason=\"expired\"}"), 2);
}

#[test]
fn centrifugo_token_expiry_closes_with_4001_unless_refreshed() {
    let server = server();
    let mut short = v1(&server, Some(&token("alice", "private.*", 2)));
    let mut refreshed = v1(&server, Some(&token("bob", "private.*", 2)));
    assert_eq!(ask(&mut short, json!({"type":"subscribe","channel":"private.a","req":1}))["type"], "ok");
    assert_eq!(ask(&mut refreshed, json!({"type":"subscribe","channel":"private.a","req":1}))["type"], "ok");
    // A bad refresh is an error and changes nothing; a good one moves the expiry.
    let bad = ask(&mut refreshed, json!({"type":"refresh","token":"garbage","req":2}));
    assert_eq!(bad["code"], "bad_token", "{bad}");
    let good = ask(&mut refreshed, json!({"type":"refresh","token":token("bob", "private.*", 600),"req":3}));
    assert_eq!(good, json!({"type":"ok","req":3}));
    // The short one is closed with 4001 once its token expired (within seconds, not at once).
    assert_eq!(short.close_frame(), (4001, "token expired".to_string()));
    // The refreshed one lives on past the first expiry and still gets its channel.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        ask(&mut refreshed, json!({"type":"publish","channel":"private.a","data":"after","req":4}))["type"],
        "ok"
    );
    let frame = refreshed.message();
    assert_eq!(frame["data"], "after", "{frame}");
    assert_eq!(metric(&server, "token_expiry_closes_total"), 1);
}

/// Reads a raw HTTP exchange on `target` to its end (the server closes, or `limit` passes):
/// the bytes and how long it lasted.
fn read_to_end(server: &Server, target: &str, fields: &str, limit: Duration) -> (String, Duration) {
    let mut stream = server.connect();
    stream.set_read_timeout(Some(limit)).unwrap();
    let raw = format!("GET {target} HTTP/1.1\r\nHost: t\r\n{fields}\r\n");
    let started = std::time::Instant::now();
    std::io::Write::write_all(&mut stream, raw.as_bytes()).unwrap();
    let mut bytes = Vec::new();
    let _ = std::io::Read::read_to_end(&mut stream, &mut bytes);
    (String::from_utf8_lossy(&bytes).into_owned(), started.elapsed())
}

/// The frames of a WebSocket on `target` until the server's close (or `limit`): the text
/// frames, the close code and reason, and how long it lasted.
fn ws_until_close(server: &Server, target: &str) -> (Vec<String>, Option<(u16, String)>, Duration) {
    let started = std::time::Instant::now();
    let (mut ws, head) = RawWs::connect(server, target, &["pushwire.v1"]);
    assert!(head.starts_with("HTTP/1.1 101"), "{target}: {head}");
    ws.stream.set_read_timeout(Some(IO_TIMEOUT * 3)).unwrap();
    let mut texts = Vec::new();
    while let Some((op, payload)) = ws.recv() {
        match op {
            pushwire::ws::OpCode::Text => texts.push(String::from_utf8(payload).unwrap()),
            pushwire::ws::OpCode::Close => {
                let code = u16::from_be_bytes([payload[0], payload[1]]);
                let reason = String::from_utf8_lossy(&payload[2..]).into_owned();
                return (texts, Some((code, reason)), started.elapsed());
            }
            _ => {}
        }
    }
    (texts, None, started.elapsed())
}

/// Issue #13 (an expired token on a live connection): every transport admitted by a signed
/// token ends when the token expires, one channel and `/channels/a,b` alike. A WebSocket
/// closes with 4001 `token expired`; an event stream ends after the event `token_expired`
/// (no `id:`, so the browser's last event ID still resumes exactly); a chunked stream ends
/// after the line `{"type":"token_expired"}` and its last chunk; a parked long poll is
/// answered empty with the same `next`, well before its `?wait=`. Each is counted in
/// `token_expiries_total` by transport; a connection whose token is still valid keeps going.
#[test]
fn every_transport_ends_when_the_token_that_admitted_it_expires() {
    let server = server();
    // Long-lived: must see a message published after all the short ones ended.
    let long = token("carol", "private.*", 600);
    let mut lasting = SseClient::connect(
        &server,
        &format!("/channels/private.a?token={long}"),
        "Accept: text/event-stream\r\n",
    );
    // 3 s: the requests reach the server before it (bounded generously for load).
    let short = token("alice", "private.*", 3);
    let http = [
        ("sse", "/channels/private.a".to_string(), "Accept: text/event-stream\r\n"),
        ("stream", "/channels/private.a".to_string(), "Accept: application/x-ndjson\r\n"),
        ("longpoll", "/channels/private.a?wait=60".to_string(), "Connection: close\r\n"),
        ("sse", "/channels/private.a,private.b?mode=sse".to_string(), ""),
        ("stream", "/channels/private.a,private.b?mode=stream".to_string(), ""),
        (
            "longpoll",
            "/channels/private.a,private.b?mode=longpoll&wait=60".to_string(),
            "Connection: close\r\n",
        ),
    ];
    let limit = Duration::from_secs(40);
    let ws_targets = ["/channels/private.a", "/channels/private.a,private.b?mode=ws"];
    let server = &server;
    let (http, ws) = std::thread::scope(|scope| {
        let http: Vec<_> = http
            .into_iter()
            .map(|(transport, target, fields)| {
                let target = with_query(&target, &format!("token={short}"));
                scope.spawn(move || {
                    let (text, elapsed) = read_to_end(server, &target, fields, limit);
                    (transport, target, text, elapsed)
                })
            })
            .collect();
        let ws: Vec<_> = ws_targets
            .iter()
            .map(|target| {
                let target = with_query(target, &format!("token={short}"));
                scope.spawn(move || (target.clone(), ws_until_close(server, &target)))
            })
            .collect();
        let http: Vec<_> = http.into_iter().map(|t| t.join().unwrap()).collect();
        let ws: Vec<_> = ws.into_iter().map(|t| t.join().unwrap()).collect();
        (http, ws)
    });
    for (transport, target, text, elapsed) in http {
        assert!(text.starts_with("HTTP/1.1 200"), "{target}: {text}");
        assert!(elapsed >= Duration::from_secs(1), "{target} ended after {elapsed:?}: {text}");
        assert!(elapsed < Duration::from_secs(35), "{target} ended after {elapsed:?}");
        match transport {
            "sse" => assert!(
                text.ends_with("event: token_expired\ndata: {\"type\":\"token_expired\"}\n\n"),
                "{target}: {text}"
            ),
            "stream" => assert!(
                text.ends_with("19\r\n{\"type\":\"token_expired\"}\n\r\n0\r\n\r\n"),
                "{target}: {text}"
            ),
            _ => {
                let body = &text[text.find("\r\n\r\n").unwrap() + 4..];
                let body: Value = serde_json::from_str(body).unwrap();
                assert_eq!(body["messages"], json!([]), "{target}: {body}");
            }
        }
    }
    for (target, (texts, close, elapsed)) in ws {
        assert_eq!(close, Some((4001, "token expired".to_string())), "{target}: {texts:?}");
        assert!(texts.iter().any(|t| t.contains("\"open\"")), "{target}: {texts:?}");
        assert!(elapsed >= Duration::from_secs(1), "{target} closed after {elapsed:?}");
    }
    for (transport, n) in [("sse", 2), ("stream", 2), ("longpoll", 2), ("websocket", 2)] {
        assert_eq!(metric(server, &format!("token_expiries_total{{transport=\"{transport}\"}}")), n);
    }
    assert_eq!(metric(server, "token_expiry_closes_total"), 2);
    // The connection admitted by the long-lived token was not touched.
    let published =
        request(server, "POST", "/channels/private.a", &format!("Authorization: Bearer {long}\r\n"));
    assert!((200..300).contains(&published.status), "{}", published.text());
    let event = loop {
        let event = lasting.next_event(IO_TIMEOUT).expect("the lasting stream's event");
        if event.data == "hello" {
            break event;
        }
    };
    assert!(event.id.is_some(), "{event:?}");
}

/// A long poll whose token is valid past its wait is answered by a publish, as any other.
#[test]
fn a_long_poll_whose_token_outlives_it_is_answered_by_a_publish() {
    let server = server();
    let long = token("alice", "private.*", 600);
    let poll = std::thread::spawn({
        let addr = server.addr;
        let long = long.clone();
        move || {
            let raw = format!(
                "GET /channels/private.c?wait=30 HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {long}\r\n\r\n"
            );
            let mut stream = std::net::TcpStream::connect(addr).unwrap();
            stream.set_read_timeout(Some(IO_TIMEOUT * 4)).unwrap();
            std::io::Write::write_all(&mut stream, raw.as_bytes()).unwrap();
            read_response(&mut std::io::BufReader::new(stream), false)
        }
    });
    std::thread::sleep(Duration::from_secs(3));
    let published =
        request(&server, "POST", "/channels/private.c", &format!("Authorization: Bearer {long}\r\n"));
    assert!((200..300).contains(&published.status), "{}", published.text());
    let answer = poll.join().unwrap();
    assert_eq!(answer.status, 200);
    assert!(answer.text().contains("hello"), "{}", answer.text());
}

/// The authorization matrix on the multi-channel form (`/channels/a,b`) of the five
/// transports: missing 401, each bad token 401 `invalid_token`, a token granting only one of
/// the channels 403, a good one served; each refusal counted by reason.
#[test]
fn rfc6750_authorization_matrix_on_the_multi_channel_form_of_the_five_transports() {
    let server = server();
    let ws = "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
              Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: pushwire.v1\r\n";
    let forms = [
        ("poll", "/channels/private.a,private.b?mode=poll", ""),
        ("longpoll", "/channels/private.a,private.b?mode=longpoll&wait=0.05", ""),
        ("sse", "/channels/private.a,private.b?mode=sse", "Connection: close\r\n"),
        ("stream", "/channels/private.a,private.b?mode=stream", "Connection: close\r\n"),
        ("ws", "/channels?channel=private.a&channel=private.b", ws),
    ];
    let good = token("alice", "private.*", 600);
    let one_only = token("alice", "private.a", 600);
    for (transport, target, fields) in forms {
        let r = request(&server, "GET", target, fields);
        assert_eq!(r.status, 401, "{transport} without a token: {}", r.text());
        for (why, bad) in bad_tokens() {
            let r = request(&server, "GET", &with_query(target, &format!("token={bad}")), fields);
            assert_eq!(r.status, 401, "{transport} {why}: {}", r.text());
            assert!(
                r.header("www-authenticate").is_some_and(|v| v.contains("invalid_token")),
                "{transport} {why}"
            );
        }
        let r = request(&server, "GET", &with_query(target, &format!("token={one_only}")), fields);
        assert_eq!(r.status, 403, "{transport} a token for one channel: {}", r.text());
        if matches!(transport, "poll" | "longpoll") {
            let r = request(&server, "GET", &with_query(target, &format!("token={good}")), fields);
            assert_eq!(r.status, 200, "{transport} good: {}", r.text());
        }
    }
    assert_eq!(metric(&server, "token_refusals_total{reason=\"missing\"}"), 5);
    assert_eq!(metric(&server, "token_refusals_total{reason=\"not_granted\"}"), 5);
    for (why, _) in bad_tokens() {
        assert_eq!(metric(&server, &format!("token_refusals_total{{reason=\"{why}\"}}")), 5, "{why}");
    }
}

#[test]
fn a_policy_without_a_secret_is_refused_at_startup() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pushwire"))
        .args(["serve", "--listen", "127.0.0.1:0", "--channel-policy", "private.*=token"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--token-secret"), "{out:?}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pushwire"))
        .args(["serve", "--listen", "127.0.0.1:0", "--token-secret", "short"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("32 bytes"), "{out:?}");
}

#[test]
fn the_secret_can_come_from_a_file() {
    let path = std::env::temp_dir().join(format!("pushwire-secret-{}", std::process::id()));
    std::fs::write(&path, format!("{SECRET}\n")).unwrap();
    let server = Server::start(&[
        "--token-secret-file",
        path.to_str().unwrap(),
        "--channel-policy",
        "private.*=token",
    ]);
    let good = token("alice", "private.a", 60);
    assert_eq!(request(&server, "GET", &format!("/channels/private.a?token={good}"), "").status, 200);
    assert_eq!(request(&server, "GET", "/channels/private.a", "").status, 401);
    let _ = std::fs::remove_file(path);
}
