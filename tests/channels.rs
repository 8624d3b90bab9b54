//! Loopback tests of multi-channel HTTP requests (issue #13, `/channels/a,b,c` and repeated
//! `?channel=`) on every transport against the real server: three channels with interleaved
//! publishes, each message once, labelled and in channel order; exact resume with the composite
//! cursor after a disconnect; a gap on exactly the channel whose history was exceeded; and the
//! limits and bad composite ids answered with 400 (an unreadable `Last-Event-ID` with a gap).

mod common;

use std::time::Duration;

use common::*;
use pushwire::ws::OpCode;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(10);

fn get(server: &Server, target: &str, fields: &str) -> Response {
    exchange(server, format!("GET {target} HTTP/1.1\r\nHost: t\r\n{fields}\r\n").as_bytes())
}

fn json(text: &str) -> Value {
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// `(channel, data)` of each message of a multi-channel poll answer.
fn poll_messages(answer: &Value) -> Vec<(String, String)> {
    answer["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["channel"].as_str().unwrap().to_string(), m["data"].as_str().unwrap().to_string()))
        .collect()
}

fn pair(channel: &str, data: &str) -> (String, String) {
    (channel.to_string(), data.to_string())
}

/// Publishes `rounds` rounds on the three channels, interleaved.
fn publish_rounds(server: &Server, channels: &[&str], rounds: std::ops::Range<u32>) -> Vec<(String, String)> {
    let mut sent = Vec::new();
    for round in rounds {
        for channel in channels.iter().rev() {
            let data = format!("{channel}-{round}");
            publish(server, channel, &data);
            sent.push(pair(channel, &data));
        }
    }
    sent
}

/// Per channel, the data in the order received.
fn per_channel(seen: &[(String, String)], channel: &str) -> Vec<String> {
    seen.iter().filter(|(c, _)| c == channel).map(|(_, d)| d.clone()).collect()
}

fn assert_each_once_in_channel_order(
    seen: &[(String, String)],
    sent: &[(String, String)],
    channels: &[&str],
) {
    assert_eq!(seen.len(), sent.len(), "{seen:?}");
    for channel in channels {
        assert_eq!(per_channel(seen, channel), per_channel(sent, channel), "channel {channel}");
    }
}

#[test]
fn html_sse_three_channels_labelled_and_browser_resume_is_exact_per_channel() {
    let server = Server::start(&[]);
    let channels = ["sa", "sb", "sc"];
    let mut sse = SseClient::connect(&server, "/channels/sa,sb,sc", "");
    let sent = publish_rounds(&server, &channels, 0..3);
    let mut seen = Vec::new();
    let mut last_id = String::new();
    for _ in 0..sent.len() {
        let event = sse.next_event(WAIT).expect("an event");
        assert_eq!(event.event, None, "messages are plain `message` events");
        let data = json(&event.data);
        seen.push(pair(data["channel"].as_str().unwrap(), data["data"].as_str().unwrap()));
        last_id = event.id.expect("every event carries the composite id");
    }
    assert_each_once_in_channel_order(&seen, &sent, &channels);
    // The compact id: 16 hex digits, then one offset per channel.
    let parts: Vec<&str> = last_id.split('.').collect();
    assert_eq!((parts.len(), parts[0].len()), (4, 16), "{last_id}");
    drop(sse);

    // Missed while disconnected, on two of the three channels.
    publish(&server, "sb", "sb-missed");
    publish(&server, "sa", "sa-missed");
    let mut again =
        SseClient::connect(&server, "/channels/sa,sb,sc", &format!("Last-Event-ID: {last_id}\r\n"));
    let first = json(&again.next_event(WAIT).unwrap().data);
    let second = json(&again.next_event(WAIT).unwrap().data);
    assert_eq!((first["channel"].as_str(), first["data"].as_str()), (Some("sa"), Some("sa-missed")));
    assert_eq!((second["channel"].as_str(), second["data"].as_str()), (Some("sb"), Some("sb-missed")));
    publish(&server, "sc", "sc-live");
    assert_eq!(json(&again.next_event(WAIT).unwrap().data)["data"], "sc-live", "nothing else, nothing twice");
}

#[test]
fn html_sse_curl_with_repeated_channel_parameters() {
    let server = Server::start(&[]);
    let url = format!("http://{}/channels?channel=qa&channel=qb", server.addr);
    let lines = Lines::curl_sse(&url);
    lines.until(|l| l.starts_with("id:"));
    lines.until(|l| l.is_empty());
    publish(&server, "qb", "to-b");
    publish(&server, "qa", "to-a");
    let id = lines.until(|l| l.starts_with("id:"));
    assert!(id.len() > "id: ".len() + 16, "{id}");
    let data = lines.until(|l| l.starts_with("data:"));
    assert_eq!(json(&data["data:".len()..])["channel"], "qb");
    let data = lines.until(|l| l.starts_with("data:"));
    assert_eq!(json(&data["data:".len()..])["channel"], "qa");
}

#[test]
fn rfc9112_7_1_stream_curl_three_channels_and_resume_with_a_full_composite() {
    let server = Server::start(&[]);
    let channels = ["ta", "tb", "tc"];
    let url = format!("http://{}/channels/ta,tb,tc", server.addr);
    let lines =
        Lines::spawn("curl", &["-sN", "--max-time", "20", "-H", "Accept: application/x-ndjson", &url]);
    let mut cursors = std::collections::HashMap::new();
    for channel in channels {
        let open = json(&lines.next().unwrap());
        assert_eq!((open["type"].as_str(), open["channel"].as_str()), (Some("open"), Some(channel)));
        cursors.insert(channel.to_string(), open["next"].as_str().unwrap().to_string());
    }
    let sent = publish_rounds(&server, &channels, 0..3);
    let mut seen = Vec::new();
    for _ in 0..sent.len() {
        let line = json(&lines.next().unwrap());
        let channel = line["channel"].as_str().unwrap().to_string();
        cursors.insert(channel.clone(), line["id"].as_str().unwrap().to_string());
        seen.push((channel, line["data"].as_str().unwrap().to_string()));
    }
    assert_each_once_in_channel_order(&seen, &sent, &channels);
    drop(lines);
    publish(&server, "tc", "tc-missed");
    let since: Vec<&str> = channels.iter().map(|c| cursors[*c].as_str()).collect();
    let url = format!("http://{}/channels/ta,tb,tc?since={}", server.addr, since.join(","));
    let lines =
        Lines::spawn("curl", &["-sN", "--max-time", "20", "-H", "Accept: application/x-ndjson", &url]);
    for channel in channels {
        assert_eq!(json(&lines.next().unwrap())["channel"], channel, "the opens come first");
    }
    let missed = json(&lines.next().unwrap());
    assert_eq!((missed["channel"].as_str(), missed["data"].as_str()), (Some("tc"), Some("tc-missed")));
}

#[test]
fn rfc6202_2_long_poll_on_three_channels_is_answered_by_any_and_resumes_exactly() {
    let server = Server::start(&[]);
    let first = json(&get(&server, "/channels/la,lb,lc?mode=poll", "").text());
    let mut next = first["next"].as_str().unwrap().to_string();
    assert_eq!(next.split(',').count(), 3, "{next}");
    let waiter = {
        let (addr, next) = (server.addr, next.clone());
        std::thread::spawn(move || {
            let url = format!("http://{addr}/channels/la,lb,lc?wait=15&since={next}");
            let out =
                std::process::Command::new("curl").args(["-s", "--max-time", "20", &url]).output().unwrap();
            String::from_utf8(out.stdout).unwrap()
        })
    };
    // Parked: a publish on the second channel answers it (published until it has).
    let mut sent = Vec::new();
    for i in 0.. {
        std::thread::sleep(Duration::from_millis(200));
        let data = format!("lb-{i}");
        publish(&server, "lb", &data);
        sent.push(pair("lb", &data));
        if waiter.is_finished() || i > 50 {
            break;
        }
    }
    let answer = json(&waiter.join().unwrap());
    assert_eq!(answer["gaps"], serde_json::json!([]));
    let got = poll_messages(&answer);
    assert!(!got.is_empty() && got.iter().all(|(c, _)| c == "lb"), "{answer}");
    next = answer["next"].as_str().unwrap().to_string();
    // Interleaved publishes, then polls from `next` until all are collected: exactly once.
    sent.extend(publish_rounds(&server, &["la", "lb", "lc"], 0..3));
    let mut seen = got;
    while seen.len() < sent.len() {
        let answer = json(&get(&server, &format!("/channels/la,lb,lc?wait=5&since={next}"), "").text());
        seen.extend(poll_messages(&answer));
        next = answer["next"].as_str().unwrap().to_string();
    }
    assert_each_once_in_channel_order(&seen, &sent, &["la", "lb", "lc"]);
}

#[test]
fn short_poll_on_three_channels_with_repeated_parameters_resumes_exactly() {
    let server = Server::start(&[]);
    let base = "/channels?channel=pa&channel=pb&channel=pc";
    let first = json(&get(&server, base, "").text());
    let since = first["next"].as_str().unwrap().to_string();
    let sent = publish_rounds(&server, &["pa", "pb", "pc"], 0..3);
    let answer = json(&get(&server, &format!("{base}&since={since}"), "").text());
    let seen = poll_messages(&answer);
    assert_each_once_in_channel_order(&seen, &sent, &["pa", "pb", "pc"]);
    // Channel order within the answer: the request's, each channel's in offset order.
    assert_eq!(seen[0], pair("pa", "pa-0"));
    let again = json(&get(&server, &format!("{base}&since={}", answer["next"].as_str().unwrap()), "").text());
    assert_eq!(again["messages"], serde_json::json!([]), "nothing twice");
}

#[test]
fn a_gap_is_reported_on_exactly_the_channel_whose_history_was_exceeded() {
    let server = Server::start(&["--history-messages", "2"]);
    let start = json(&get(&server, "/channels/ga,gb,gc?mode=poll", "").text());
    let since = start["next"].as_str().unwrap().to_string();
    for m in ["gb-1", "gb-2", "gb-3", "gb-4"] {
        publish(&server, "gb", m);
    }
    publish(&server, "ga", "ga-1");

    // Short and long poll: `gaps` names gb only; gb resumes at its oldest kept message.
    for mode in ["mode=poll", "wait=5"] {
        let answer = json(&get(&server, &format!("/channels/ga,gb,gc?{mode}&since={since}"), "").text());
        assert_eq!(answer["gaps"], serde_json::json!(["gb"]), "{mode}: {answer}");
        assert_eq!(poll_messages(&answer), vec![pair("ga", "ga-1"), pair("gb", "gb-3"), pair("gb", "gb-4")]);
    }

    // The chunked stream: one gap line, for gb.
    let url = format!("http://{}/channels/ga,gb,gc?since={since}", server.addr);
    let lines =
        Lines::spawn("curl", &["-sN", "--max-time", "20", "-H", "Accept: application/x-ndjson", &url]);
    let mut kinds = Vec::new();
    while kinds.len() < 6 {
        let line = json(&lines.next().unwrap());
        kinds.push(format!(
            "{}:{}",
            line["channel"].as_str().unwrap(),
            line["type"].as_str().or(line["data"].as_str()).unwrap()
        ));
    }
    assert_eq!(kinds, ["ga:open", "ga:ga-1", "gb:gap", "gb:gb-3", "gb:gb-4", "gc:open"]);

    // SSE: one `gap` event, naming gb.
    let mut sse = SseClient::connect(&server, &format!("/channels/ga,gb,gc?since={since}"), "");
    let mut events = Vec::new();
    for _ in 0..4 {
        let event = sse.next_event(WAIT).unwrap();
        let data = json(&event.data);
        events.push(format!("{}:{}", event.event.unwrap_or_default(), data["channel"].as_str().unwrap()));
    }
    assert_eq!(events, [":ga", "gap:gb", ":gb", ":gb"]);

    // The WebSocket: one gap frame, naming gb.
    let (mut ws, head) = RawWs::connect(&server, &format!("/channels/ga,gb,gc?since={since}"), &[]);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let mut frames = Vec::new();
    for _ in 0..6 {
        let frame = json(&ws.recv_text());
        frames.push(format!(
            "{}:{}",
            frame["channel"].as_str().unwrap(),
            frame["type"].as_str().or(frame["data"].as_str()).unwrap()
        ));
    }
    assert_eq!(frames, ["ga:open", "ga:ga-1", "gb:gap", "gb:gb-3", "gb:gb-4", "gc:open"]);
}

#[test]
fn rfc6455_plain_websocket_on_channels_gets_labelled_frames_resumes_and_refuses_messages() {
    let server = Server::start(&[]);
    let channels = ["wa", "wb", "wc"];
    let (mut ws, head) = RawWs::connect(&server, "/channels/wa,wb,wc", &[]);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    ws.stream.set_read_timeout(Some(WAIT)).unwrap();
    let mut cursors = Vec::new();
    for channel in channels {
        let open = json(&ws.recv_text());
        assert_eq!((open["type"].as_str(), open["channel"].as_str()), (Some("open"), Some(channel)));
        cursors.push(open["next"].as_str().unwrap().to_string());
    }
    let sent = publish_rounds(&server, &channels, 0..2);
    let mut seen = Vec::new();
    for _ in 0..sent.len() {
        let frame = json(&ws.recv_text());
        let i = channels.iter().position(|c| frame["channel"] == *c).unwrap();
        cursors[i] = frame["id"].as_str().unwrap().to_string();
        seen.push(pair(frame["channel"].as_str().unwrap(), frame["data"].as_str().unwrap()));
    }
    assert_each_once_in_channel_order(&seen, &sent, &channels);
    // The client may not publish here: close 1008 (RFC 6455 §7.4.1).
    ws.send(OpCode::Text, b"hello");
    let (opcode, payload) = ws.recv().unwrap();
    assert_eq!((opcode, u16::from_be_bytes([payload[0], payload[1]])), (OpCode::Close, 1008));

    publish(&server, "wa", "wa-missed");
    let (mut ws, _) =
        RawWs::connect(&server, &format!("/channels/wa,wb,wc?since={}", cursors.join(",")), &[]);
    let frames: Vec<Value> = (0..4).map(|_| json(&ws.recv_text())).collect();
    assert_eq!(frames[0]["type"], "open");
    assert_eq!((frames[1]["channel"].as_str(), frames[1]["data"].as_str()), (Some("wa"), Some("wa-missed")));
    assert_eq!((frames[2]["type"].as_str(), frames[3]["type"].as_str()), (Some("open"), Some("open")));
}

#[test]
fn a_compact_since_resolves_against_the_channels_epochs_on_every_transport() {
    let server = Server::start(&[]);
    let mut sse = SseClient::connect(&server, "/channels/ka,kb", "");
    publish(&server, "ka", "ka-1");
    let id = sse.next_event(WAIT).unwrap().id.unwrap();
    drop(sse);
    publish(&server, "kb", "kb-1");
    // A poll, a stream and a WebSocket from the SSE's compact id: exactly kb-1.
    let answer = json(&get(&server, &format!("/channels/ka,kb?mode=poll&since={id}"), "").text());
    assert_eq!(poll_messages(&answer), vec![pair("kb", "kb-1")]);
    assert_eq!(answer["gaps"], serde_json::json!([]));
    let (mut ws, _) = RawWs::connect(&server, &format!("/channels/ka,kb?since={id}"), &[]);
    let frames: Vec<Value> = (0..3).map(|_| json(&ws.recv_text())).collect();
    assert_eq!(frames[2]["data"], "kb-1", "{frames:?}");
    // A compact id from other epochs: every channel restarts with a gap.
    let foreign = format!("0123456789abcdef.{}", id.split_once('.').unwrap().1);
    let answer = json(&get(&server, &format!("/channels/ka,kb?mode=poll&since={foreign}"), "").text());
    assert_eq!(answer["gaps"], serde_json::json!(["ka", "kb"]));
}

#[test]
fn max_channels_per_connection_bounds_http_channel_lists_too() {
    let server = Server::start(&["--max-channels-per-connection", "2"]);
    assert_eq!(get(&server, "/channels/a,b?mode=poll", "").status, 200);
    let res = get(&server, "/channels/a,b,c?mode=poll", "");
    assert_eq!(res.status, 400);
    assert!(res.text().contains("too many channels"), "{}", res.text());
    assert_eq!(get(&server, "/channels?channel=a&channel=b&channel=c", "").status, 400);
    // Above 64 it raises the /ws limit only: an HTTP list stays at 64 (its composite id).
    let server = Server::start(&["--max-channels-per-connection", "100"]);
    let names = |n: usize| (0..n).map(|i| format!("c{i}")).collect::<Vec<_>>().join(",");
    assert_eq!(get(&server, &format!("/channels/{}?mode=poll", names(64)), "").status, 200);
    assert_eq!(get(&server, &format!("/channels/{}?mode=poll", names(65)), "").status, 400);
}

#[test]
fn limits_and_bad_composite_ids_are_400_and_an_unreadable_last_event_id_is_a_gap() {
    let server = Server::start(&[]);
    let many: Vec<String> = (0..65).map(|i| format!("c{i}")).collect();
    let res = get(&server, &format!("/channels/{}", many.join(",")), "");
    assert_eq!(res.status, 400);
    assert!(res.text().contains("too many channels"), "{}", res.text());
    let query: Vec<String> = many.iter().map(|c| format!("channel={c}")).collect();
    assert_eq!(get(&server, &format!("/channels?{}", query.join("&")), "").status, 400);
    let ok: Vec<String> = (0..64).map(|i| format!("c{i}")).collect();
    assert_eq!(get(&server, &format!("/channels/{}?mode=poll", ok.join(",")), "").status, 200);
    for (target, why) in [
        ("/channels/a,a", "named twice"),
        ("/channels/a,b%20c", "channel names"),
        ("/channels", "at least one channel"),
        ("/channels/a,b?since=x", "since must"),
        ("/channels/a,b?since=0000000000000001:1", "since must"),
        ("/channels/a,b?since=0000000000000001:1,,", "since must"),
        ("/channels/a,b?since=0123456789abcdef.1", "since must"),
        ("/channels/a,b?since=0123456789abcdeg.1.2", "since must"),
    ] {
        let res = get(&server, target, "");
        assert_eq!(res.status, 400, "{target}");
        assert!(res.text().contains(why), "{target}: {}", res.text());
    }
    let long = format!("/channels/a,b?since={}", "0000000000000001:1,".repeat(40));
    assert_eq!(get(&server, &long, "").status, 400, "longer than the composite bound");
    let res = exchange(&server, b"POST /channels/a,b HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\n\r\nx");
    assert_eq!(res.status, 400);
    // Issue #13 item 7: the browser's header is never refused.
    let mut sse = SseClient::connect(&server, "/channels/ua,ub", "Last-Event-ID: garbage\r\n");
    let gaps: Vec<String> = (0..2)
        .map(|_| {
            let event = sse.next_event(WAIT).unwrap();
            assert_eq!(event.event.as_deref(), Some("gap"));
            json(&event.data)["channel"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(gaps, ["ua", "ub"]);
}

#[test]
fn every_channel_of_a_request_passes_its_own_policy() {
    let server = Server::start(&[
        "--token-secret",
        "an-hs256-test-secret-of-32-bytes-or-more",
        "--channel-policy",
        "private.*=token",
    ]);
    // An open channel does not carry a private one along: 401 before anything is served.
    for target in ["/channels/open,private.x?mode=poll", "/channels?channel=private.x&channel=open"] {
        let res = get(&server, target, "");
        assert_eq!(res.status, 401, "{target}");
        assert!(res.header("www-authenticate").is_some_and(|v| v.starts_with("Bearer")), "{target}");
    }
    assert_eq!(get(&server, "/channels/open,other?mode=poll", "").status, 200);
}

/// A TCP proxy whose open connections can all be cut (FIN both ways) at once.
struct CutProxy {
    addr: std::net::SocketAddr,
    open: std::sync::Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
}

impl CutProxy {
    fn start(upstream: std::net::SocketAddr) -> CutProxy {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let open = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let open2 = open.clone();
        // Ends when the test process does (the listener blocks in accept).
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(server) = std::net::TcpStream::connect(upstream) else { continue };
                open2.lock().unwrap().push(client.try_clone().unwrap());
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || pipe(client, server));
                std::thread::spawn(move || pipe(s2, c2));
            }
        });
        CutProxy { addr, open }
    }

    fn cut(&self) {
        for s in self.open.lock().unwrap().drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }
}

fn pipe(mut from: std::net::TcpStream, mut to: std::net::TcpStream) {
    let _ = std::io::copy(&mut from, &mut to);
    let _ = to.shutdown(std::net::Shutdown::Both);
    let _ = from.shutdown(std::net::Shutdown::Both);
}

#[test]
fn the_rust_client_on_three_channels_resumes_exactly_after_a_cut_on_every_transport() {
    use pushwire::client::{Backoff, Item, Payload, SubscribeOptions, Subscriber, Timeouts, Transport};
    use pushwire::hub::Cursor;
    let server = Server::start(&["--longpoll-max-wait", "2"]);
    let proxy = CutProxy::start(server.addr);
    let channels = ["ca", "cb", "cc"];
    for transport in
        [Transport::WebSocket, Transport::Sse, Transport::Stream, Transport::LongPoll, Transport::Poll]
    {
        let start = json(&get(&server, "/channels/ca,cb,cc?mode=poll", "").text());
        let since_each =
            start["next"].as_str().unwrap().split(',').map(|c| Some(Cursor::parse(c).unwrap())).collect();
        let options = SubscribeOptions {
            transport,
            since_each,
            timeouts: Timeouts { read: Duration::from_secs(5), ..Timeouts::default() },
            backoff: Backoff { base: Duration::from_millis(10), cap: Duration::from_millis(200) },
            poll_interval: Duration::from_millis(50),
            long_poll_wait: Duration::from_secs(1),
            ..SubscribeOptions::default()
        };
        let url = format!("http://{}/channels/ca,cb,cc", proxy.addr);
        let mut sub = Subscriber::connect(&url, options).unwrap();
        let recv = |n: usize, sub: &mut Subscriber| -> Vec<(String, String)> {
            (0..n)
                .map(|_| match sub.recv().unwrap() {
                    Item::Message { channel: Some(c), payload: Payload::Text(t), .. } => (c, t),
                    other => panic!("{transport:?}: {other:?}"),
                })
                .collect()
        };
        let mut sent = publish_rounds(&server, &channels, 0..2);
        let mut seen = recv(sent.len(), &mut sub);
        proxy.cut();
        sent.extend(publish_rounds(&server, &channels, 2..4));
        seen.extend(recv(6, &mut sub));
        assert_each_once_in_channel_order(&seen, &sent, &channels);
        // A poll's idle keep-alive connection that was cut is replaced before the next poll,
        // without a failed request: only the streaming transports must count a reconnect.
        let streaming = matches!(transport, Transport::WebSocket | Transport::Sse | Transport::Stream);
        assert!(!streaming || sub.reconnects() >= 1, "{transport:?}: the cut was not noticed");
        let cursors = sub.channel_cursors();
        assert_eq!(cursors.len(), 3);
        assert!(cursors.iter().all(|(_, c)| c.is_some_and(|c| c.offset >= 4)), "{transport:?}: {cursors:?}");
    }
}

#[test]
fn the_cli_sub_takes_channel_repeated_or_a_list_and_prints_each_channel() {
    let server = Server::start(&[]);
    for transport in ["ws", "sse", "stream", "longpoll", "poll"] {
        let base = format!("http://{}", server.addr);
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_pushwire"))
            .args(["sub", &base, "--channel", "ma", "--channel", "mb,mc", "--transport", transport])
            .args(["--count", "6", "--poll-interval", "0.1"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let out = std::thread::spawn(move || child.wait_with_output().unwrap());
        // Rounds until the client has printed six messages (it starts from now, so the first
        // rounds may come before it is subscribed).
        for round in 0..100 {
            if out.is_finished() {
                break;
            }
            for channel in ["mc", "ma", "mb"] {
                publish(&server, channel, &format!("{channel}-{round}"));
            }
            std::thread::sleep(Duration::from_millis(150));
        }
        let out = out.join().unwrap();
        assert!(out.status.success(), "{transport}");
        let lines: Vec<(String, String)> = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| {
                let (c, d) = l.split_once('\t').unwrap_or_else(|| panic!("{transport}: {l}"));
                (c.to_string(), d.to_string())
            })
            .collect();
        assert_eq!(lines.len(), 6, "{transport}: {lines:?}");
        for (channel, data) in &lines {
            assert!(data.starts_with(&format!("{channel}-")), "{transport}: {channel} {data}");
        }
        // Each channel's rounds are consecutive: nothing lost or repeated once it started.
        for channel in ["ma", "mb", "mc"] {
            let rounds: Vec<u32> = lines
                .iter()
                .filter(|(c, _)| c == channel)
                .map(|(_, d)| d.rsplit('-').next().unwrap().parse().unwrap())
                .collect();
            assert!(rounds.windows(2).all(|w| w[1] == w[0] + 1), "{transport}: {channel} {rounds:?}");
        }
    }
}
