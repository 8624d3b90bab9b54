//! The server API (issue #17 item 2) over loopback against the real binary: every call with a
//! good, a missing and a wrong key; broadcast delivered once per channel with the cursors it
//! returned; bad JSON, unknown fields, wrong types, oversized bodies; 404 and 405.

mod common;

use std::io::{BufReader, Write};

use common::api::{call, call_raw, jwt, wait_info, wait_presence, KEY, SECRET};
use common::v1::V1;
use common::*;
use serde_json::{json, Value};

fn server(extra: &[&str]) -> Server {
    let mut flags = vec!["--api-key", KEY];
    flags.extend_from_slice(extra);
    Server::start(&flags)
}

/// Every call answers 401 without a key (with the challenge) and 403 with a wrong one.
fn assert_key_checked(server: &Server, call: &str, body: &Value) {
    let body = body.to_string();
    let missing = call_raw(server, call, None, body.as_bytes());
    assert_eq!(missing.status, 401, "{call}: {}", missing.text());
    assert!(missing.header("www-authenticate").is_some_and(|v| v.starts_with("apikey")), "{call}");
    let bearer = call_raw(server, call, Some(&format!("Bearer {KEY}")), body.as_bytes());
    assert_eq!(bearer.status, 401, "{call}: another scheme is no key");
    let wrong = call_raw(server, call, Some("apikey test-api-key-0123456788"), body.as_bytes());
    assert_eq!(wrong.status, 403, "{call}: {}", wrong.text());
    assert!(wrong.text().contains("wrong API key"), "{}", wrong.text());
}

#[test]
fn api_is_off_without_a_key() {
    let server = Server::start(&[]);
    let res = call_raw(&server, "publish", Some(&format!("apikey {KEY}")), br#"{"channel":"a","data":"x"}"#);
    assert_eq!(res.status, 404, "{}", res.text());
}

#[test]
fn publish_with_good_missing_and_wrong_key() {
    let server = server(&[]);
    let body = json!({"channel":"p","data":"hello"});
    assert_key_checked(&server, "publish", &body);
    let tail = json_field(&poll(&server, "p", None).text(), "next").unwrap();
    let (status, json) = call(&server, "publish", body);
    assert_eq!(status, 200, "{json}");
    assert_eq!(json["channel"], "p");
    let id = json["id"].as_str().unwrap();
    let polled = poll(&server, "p", Some(&tail)).text();
    assert_eq!(data_values(&polled), ["hello"], "only the good key published");
    assert_eq!(json_field(&polled, "id").as_deref(), Some(id));
    // Any other JSON value is sent as its text; an event name is checked.
    let (status, json) = call(&server, "publish", json!({"channel":"p","data":{"n":1},"event":"tick"}));
    assert_eq!(status, 200, "{json}");
    let polled = poll(&server, "p", Some(id)).text();
    assert!(polled.contains(r#""data":"{\"n\":1}""#) && polled.contains(r#""event":"tick""#), "{polled}");
}

#[test]
fn broadcast_to_100_channels_is_delivered_once_on_each_with_the_returned_cursors() {
    let server = server(&["--max-channels-per-connection", "128"]);
    let channels: Vec<String> = (0..100).map(|i| format!("bc{i}")).collect();
    let body = json!({"channels":channels,"data":"to all"});
    assert_key_checked(&server, "broadcast", &body);
    let mut subscriber = V1::connect(&server, None);
    for (i, channel) in channels.iter().enumerate() {
        let ok = subscriber.ask(json!({"type":"subscribe","channel":channel,"req":i}));
        assert_eq!(ok["type"], "ok", "{ok}");
    }
    let (status, json) = call(&server, "broadcast", body);
    assert_eq!(status, 200, "{json}");
    let results = json["results"].as_array().unwrap();
    assert_eq!(results.len(), 100);
    let mut expected = std::collections::HashMap::new();
    for (result, channel) in results.iter().zip(&channels) {
        assert_eq!(result["channel"], channel.as_str(), "in the order named");
        expected.insert(channel.clone(), result["id"].as_str().expect("a cursor each").to_string());
    }
    // Each channel delivers the message once, with the cursor the broadcast returned.
    for _ in 0..100 {
        let message = subscriber.message();
        let channel = message["channel"].as_str().unwrap().to_string();
        assert_eq!(message["data"], "to all");
        let id =
            expected.remove(&channel).unwrap_or_else(|| panic!("{channel} delivered twice or never named"));
        assert_eq!(message["id"], id.as_str());
    }
    assert!(expected.is_empty());
    // Nothing more: a publish after it is the next frame.
    let (_, after) = call(&server, "publish", json!({"channel":"bc7","data":"after"}));
    let next = subscriber.message();
    assert_eq!((next["data"].clone(), next["id"].clone()), (json!("after"), after["id"].clone()));
}

#[test]
fn history_after_a_cursor_with_a_limit() {
    let server = server(&[]);
    let first = publish(&server, "h", "one");
    publish(&server, "h", "two");
    publish(&server, "h", "three");
    let body = json!({"channel":"h","since":first,"limit":1});
    assert_key_checked(&server, "history", &body);
    let (status, json) = call(&server, "history", body);
    assert_eq!(status, 200, "{json}");
    assert_eq!(json["channel"], "h");
    assert_eq!(json["messages"].as_array().unwrap().len(), 1);
    assert_eq!(json["messages"][0]["data"], "two");
    assert_eq!(json["gap"], false);
    let (_, rest) = call(&server, "history", json!({"channel":"h","since":json["next"]}));
    assert_eq!(rest["messages"][0]["data"], "three");
    // A cursor of another epoch is a gap, answered with what remains.
    let (_, gap) = call(&server, "history", json!({"channel":"h","since":"0123456789abcdef:1"}));
    assert_eq!((gap["gap"].clone(), gap["messages"].as_array().unwrap().len()), (json!(true), 3));
}

#[test]
fn presence_and_presence_stats() {
    let server = server(&[]);
    let mut member = V1::connect(&server, None);
    let ok = member.ask(json!({"type":"subscribe","channel":"room","req":1,"info":{"name":"ann"}}));
    assert_eq!(ok["type"], "ok", "{ok}");
    let body = json!({"channel":"room"});
    assert_key_checked(&server, "presence", &body);
    assert_key_checked(&server, "presence_stats", &body);
    let (status, json) = call(&server, "presence", body.clone());
    assert_eq!(status, 200, "{json}");
    assert_eq!(json["count"], 1);
    assert_eq!(json["members"][0]["info"]["name"], "ann");
    assert!(json["members"][0]["id"].is_string());
    let (status, json) = call(&server, "presence_stats", body);
    assert_eq!((status, json["count"].clone()), (200, json!(1)));
}

#[test]
fn bad_json_unknown_fields_wrong_types_and_bad_values_are_400_with_a_reason() {
    let server = server(&[]);
    let auth = format!("apikey {KEY}");
    for (call, body, reason) in [
        ("publish", &br#"{"channel":"a","data":"x""#[..], "EOF"),
        ("publish", b"not json", "expected"),
        ("publish", br#"{"channel":"a","data":"x","extra":1}"#, "unknown field `extra`"),
        ("publish", br#"{"channel":["a"],"data":"x"}"#, "invalid type"),
        ("publish", br#"{"data":"x"}"#, "missing field `channel`"),
        ("publish", br#"{"channel":"a b","data":"x"}"#, "channel"),
        ("publish", br#"{"channel":"a","data":"x","event":"no spaces"}"#, "event"),
        ("broadcast", br#"{"channels":"a","data":"x"}"#, "invalid type"),
        ("broadcast", br#"{"channels":[],"data":"x"}"#, "at least one"),
        ("history", br#"{"channel":"a","since":"nope"}"#, "since"),
        ("history", br#"{"channel":"a","since":"0123456789abcdef:1","limit":"2"}"#, "invalid type"),
        ("presence", br#"{"channel":"a","list":true}"#, "unknown field `list`"),
    ] {
        let res = call_raw(&server, call, Some(&auth), body);
        assert_eq!(res.status, 400, "{call} {}: {}", String::from_utf8_lossy(body), res.text());
        let json: Value = serde_json::from_slice(&res.body).unwrap();
        assert!(json["error"].as_str().unwrap().contains(reason), "{call}: {json}");
    }
}

#[test]
fn too_many_broadcast_channels_and_oversized_bodies_are_refused() {
    let server = server(&["--api-max-broadcast-channels", "3", "--api-max-body-bytes", "200"]);
    let (status, json) = call(&server, "broadcast", json!({"channels":["a","b","c","d"],"data":"x"}));
    assert_eq!(status, 400);
    assert!(json["error"].as_str().unwrap().contains("max-broadcast-channels"), "{json}");
    // A declared length over the limit is refused before the body is read.
    let mut stream = server.connect();
    let head = format!(
        "POST /api/publish HTTP/1.1\r\nHost: t\r\nAuthorization: apikey {KEY}\r\nContent-Length: 201\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).unwrap();
    let res = read_response(&mut BufReader::new(stream), false);
    assert_eq!(res.status, 413, "{}", res.text());
    // A chunked body is cut at the limit too.
    let mut stream = server.connect();
    let chunk = "x".repeat(150);
    let raw = format!(
        "POST /api/publish HTTP/1.1\r\nHost: t\r\nAuthorization: apikey {KEY}\r\nTransfer-Encoding: chunked\r\n\r\n96\r\n{chunk}\r\n96\r\n{chunk}\r\n0\r\n\r\n"
    );
    stream.write_all(raw.as_bytes()).unwrap();
    let res = read_response(&mut BufReader::new(stream), false);
    assert_eq!(res.status, 413, "{}", res.text());
    // Within the limit (and over the API's own, not the publish limit) it is read.
    let (status, _) = call(&server, "publish", json!({"channel":"a","data":"small"}));
    assert_eq!(status, 200);
}

#[test]
fn unknown_calls_are_404_and_other_methods_405_with_allow() {
    let server = server(&[]);
    let (status, json) = call(&server, "nope", json!({}));
    assert_eq!(status, 404, "{json}");
    let res = call_raw(&server, "nope", None, b"{}");
    assert_eq!(res.status, 401, "the key is checked before the call");
    let res = exchange(
        &server,
        format!("GET /api/publish HTTP/1.1\r\nHost: t\r\nAuthorization: apikey {KEY}\r\n\r\n").as_bytes(),
    );
    assert_eq!(res.status, 405);
    assert_eq!(res.header("allow"), Some("POST"));
}

#[test]
fn info_gives_subscribers_last_cursor_and_history_size() {
    let server = server(&[]);
    let body = json!({"channel":"inf"});
    assert_key_checked(&server, "info", &body);
    let (status, json) = call(&server, "info", body.clone());
    assert_eq!(status, 200, "{json}");
    assert_eq!((json["exists"].clone(), json["last"].clone()), (json!(false), Value::Null));
    let zero = json!({"websocket":0,"sse":0,"stream":0,"long_poll":0});
    assert_eq!(json["transports"], zero, "{json}");
    publish(&server, "inf", "12345");
    let last = publish(&server, "inf", "abc");
    let _sse = SseClient::connect(&server, "/channels/inf", "Accept: text/event-stream\r\n");
    let mut ws = V1::connect(&server, None);
    assert_eq!(ws.ask(json!({"type":"subscribe","channel":"inf","req":1}))["type"], "ok");
    let (_, json) = call(&server, "info", body);
    assert_eq!(json["exists"], true);
    assert_eq!(json["subscribers"], 2, "{json}");
    assert_eq!(json["last"], last.as_str());
    assert_eq!(json["history_messages"], 2);
    assert_eq!(json["history_bytes"], 8);
}

/// Issue #17 "channel info: subscribers by transport": one subscriber of each transport, each
/// counted under its own; a short poll holds nothing; a subscriber that leaves is uncounted.
#[test]
fn info_counts_subscribers_by_transport() {
    let server = server(&[]);
    let ch = "bytr";
    let (_ws, _) = RawWs::connect(&server, &format!("/channels/{ch}"), &[]);
    let mut v1 = V1::connect(&server, None);
    assert_eq!(v1.ask(json!({"type":"subscribe","channel":ch,"req":1}))["type"], "ok");
    let sse = SseClient::connect(&server, &format!("/channels/{ch}"), "Accept: text/event-stream\r\n");
    let _stream = open_request(
        &server,
        &format!("GET /channels/{ch} HTTP/1.1\r\nHost: t\r\nAccept: application/x-ndjson\r\n\r\n"),
    );
    let mut long_poll = server.connect();
    long_poll
        .write_all(format!("GET /channels/{ch}?wait=30 HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
        .unwrap();
    assert_eq!(poll(&server, ch, None).status, 200, "a short poll is answered and holds nothing");
    let all = json!({"websocket":2,"sse":1,"stream":1,"long_poll":1});
    let info = wait_info(&server, ch, |info| info["transports"] == all);
    assert_eq!(info["subscribers"], 5, "{info}");
    drop(sse);
    let fewer = json!({"websocket":2,"sse":0,"stream":1,"long_poll":1});
    let info = wait_info(&server, ch, |info| info["transports"] == fewer);
    assert_eq!(info["subscribers"], 4, "{info}");
    // The long poll is answered by a message and ends its subscription.
    publish(&server, ch, "m");
    let answer = read_response(&mut BufReader::new(long_poll), false);
    assert_eq!(answer.status, 200);
    let answered = json!({"websocket":2,"sse":0,"stream":1,"long_poll":0});
    wait_info(&server, ch, |info| info["transports"] == answered);
}

#[test]
fn channels_lists_names_by_prefix_a_page_at_a_time() {
    let server = server(&[]);
    for name in ["room.1", "room.2", "room.3", "other"] {
        publish(&server, name, "x");
    }
    let body = json!({"prefix":"room.","limit":2});
    assert_key_checked(&server, "channels", &body);
    let (status, page) = call(&server, "channels", body);
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["channels"], json!(["room.1", "room.2"]));
    assert_eq!(page["next"], "room.2");
    let (_, rest) = call(&server, "channels", json!({"prefix":"room.","after":page["next"],"limit":2}));
    assert_eq!((rest["channels"].clone(), rest["next"].clone()), (json!(["room.3"]), Value::Null));
    let (status, bad) = call(&server, "channels", json!({"prefix":"a b"}));
    assert_eq!(status, 400, "{bad}");
}

#[test]
fn disconnect_by_user_closes_websocket_with_4002_and_ends_sse_and_long_poll() {
    let server = server(&["--token-secret", SECRET]);
    let alice = jwt("alice");
    let mut ws = V1::connect(&server, Some(&alice));
    assert_eq!(ws.ask(json!({"type":"subscribe","channel":"d.ws","req":1}))["type"], "ok");
    let mut sse = open_sse(&server, "d.sse", Some(&alice));
    let mut long_poll = server.connect();
    long_poll
        .write_all(format!("GET /channels/d.lp?wait=30&token={alice} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
        .unwrap();
    wait_info(&server, "d.lp", |info| info["subscribers"] == 1);
    // Bob's subscription is not touched.
    let bob = SseClient::connect(&server, &format!("/channels/d.bob?token={}", jwt("bob")), "");
    let body = json!({"user":"alice","reason":"account closed"});
    assert_key_checked(&server, "disconnect", &body);
    let (status, json) = call(&server, "disconnect", body);
    assert_eq!((status, json), (202, json!({"sent":true})));
    // RFC 6455 §7.4.2: the private-use code and the reason reach the WebSocket client.
    assert_eq!(ws.close_frame(), (4002, "account closed".to_string()));
    // The event stream ends (EOF, not a timeout).
    assert!(closed_by_server(&mut sse), "the SSE response ended");
    // The parked long poll is answered, with Connection: close, and the connection closes.
    let mut reader = BufReader::new(long_poll);
    let answer = read_response(&mut reader, false);
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("connection"), Some("close"));
    assert!(closed_by_server(&mut reader));
    let mut bob = bob;
    publish(&server, "d.bob", "still here");
    assert_eq!(
        bob.next_event(std::time::Duration::from_secs(10)).map(|e| e.data).as_deref(),
        Some("still here")
    );
}

#[test]
fn disconnect_by_the_connection_id_presence_shows() {
    let server = server(&[]);
    let mut member = V1::connect(&server, None);
    assert_eq!(member.ask(json!({"type":"subscribe","channel":"dc","req":1}))["type"], "ok");
    // An SSE subscriber of the same channel is no member and stays.
    let mut watcher = SseClient::connect(&server, "/channels/dc", "");
    let (_, presence) = call(&server, "presence", json!({"channel":"dc"}));
    let id = presence["members"][0]["id"].clone();
    assert!(id.is_string(), "{presence}");
    let (status, _) = call(&server, "disconnect", json!({"client":id}));
    assert_eq!(status, 202);
    assert_eq!(member.close_frame(), (4002, "disconnected".to_string()));
    wait_presence(&server, "dc", 0);
    publish(&server, "dc", "after");
    assert_eq!(
        watcher.next_event(std::time::Duration::from_secs(10)).map(|e| e.data).as_deref(),
        Some("after")
    );
    for (body, reason) in [
        (json!({"client":"nope"}), "connection id"),
        (json!({"user":"a","client":"000000000000000000"}), "exactly one"),
        (json!({}), "exactly one"),
        (json!({"user":"a","reason":"r".repeat(121)}), "reason"),
    ] {
        let (status, json) = call(&server, "disconnect", body);
        assert_eq!(status, 400);
        assert!(json["error"].as_str().unwrap().contains(reason), "{json}");
    }
}

#[test]
fn unsubscribe_takes_a_user_off_one_channel_with_a_notice() {
    let server = server(&["--token-secret", SECRET]);
    let mut alice = V1::connect(&server, Some(&jwt("alice")));
    let mut bob = V1::connect(&server, Some(&jwt("bob")));
    for channel in ["u.a", "u.b"] {
        assert_eq!(alice.ask(json!({"type":"subscribe","channel":channel,"req":1}))["type"], "ok");
    }
    assert_eq!(bob.ask(json!({"type":"subscribe","channel":"u.a","req":1}))["type"], "ok");
    let body = json!({"user":"alice","channel":"u.a","reason":"kicked"});
    assert_key_checked(&server, "unsubscribe", &body);
    let (status, _) = call(&server, "unsubscribe", body);
    assert_eq!(status, 202);
    assert_eq!(alice.next(), json!({"type":"unsubscribe","channel":"u.a","reason":"kicked"}));
    wait_presence(&server, "u.a", 1);
    publish(&server, "u.a", "after");
    publish(&server, "u.b", "b after");
    let next = alice.message();
    assert_eq!(
        (next["channel"].clone(), next["data"].clone()),
        (json!("u.b"), json!("b after")),
        "u.a is gone"
    );
    let bobs = bob.message();
    assert_eq!((bobs["channel"].clone(), bobs["data"].clone()), (json!("u.a"), json!("after")));
    let (status, json) = call(&server, "unsubscribe", json!({"user":"alice"}));
    assert_eq!(status, 400, "{json}");
}
