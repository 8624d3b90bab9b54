//! Loopback tests of the five transports against the real server with real clients: curl for
//! SSE, the chunked stream and long polls; a raw RFC 6455 client for WebSocket. One channel
//! served by all five at once, resume after a disconnect on every transport, the gap signal
//! after eviction, and the slow-consumer policy.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::time::{Duration, Instant};

use common::*;
use pushwire::ws::OpCode;

fn url(server: &Server, path: &str) -> String {
    format!("http://{}{}", server.addr, path)
}

fn curl_sse(server: &Server, path: &str, extra: &[&str]) -> Lines {
    let url = url(server, path);
    let mut args = vec!["-sN", "--max-time", "20", "-H", "Accept: text/event-stream"];
    args.extend_from_slice(extra);
    args.push(&url);
    let lines = Lines::spawn("curl", &args);
    lines.until(|l| l.starts_with("retry:"));
    // The subscription's first id line: the opening cursor, or the id of a gap event.
    lines.until(|l| l.starts_with("id:"));
    lines
}

/// A curl reading a chunked stream, with the stream's first line (`open` or `gap`): it is
/// written only once the subscription exists, so publishes from then on reach it.
fn curl_stream(server: &Server, path: &str) -> (Lines, String) {
    let url = url(server, path);
    let lines =
        Lines::spawn("curl", &["-sN", "--max-time", "20", "-H", "Accept: application/x-ndjson", &url]);
    let first = lines.next().expect("the stream's first line");
    assert!(first.starts_with("{\"type\":\"open\"") || first.starts_with("{\"type\":\"gap\""), "{first}");
    (lines, first)
}

/// The tail cursor of a channel (creating it), via a short poll.
fn tail(server: &Server, channel: &str) -> String {
    json_field(&poll(server, channel, None).text(), "next").unwrap()
}

#[test]
fn html_sse_curl_streams_what_is_published() {
    let server = Server::start(&[]);
    let sse = curl_sse(&server, "/channels/a", &[]);
    let id = publish(&server, "a", "hello");
    assert_eq!(sse.until(|l| l.starts_with("id:")), format!("id: {id}"));
    assert_eq!(sse.next().as_deref(), Some("data: hello"));
    assert_eq!(sse.next().as_deref(), Some(""));
}

#[test]
fn rfc9112_7_1_stream_curl_receives_ndjson_lines() {
    let server = Server::start(&[]);
    let (stream, open) = curl_stream(&server, "/channels/s");
    assert_eq!(json_field(&open, "next"), Some(tail(&server, "s")));
    let id = publish(&server, "s", "hi");
    assert_eq!(stream.next().unwrap(), format!("{{\"id\":\"{id}\",\"data\":\"hi\"}}"));
}

#[test]
fn rfc6202_2_long_poll_with_curl_is_answered_by_a_publish() {
    let server = Server::start(&[]);
    let since = tail(&server, "lp");
    let url = url(&server, &format!("/channels/lp?wait=10&since={since}"));
    let lp = Lines::spawn("curl", &["-s", "--max-time", "20", &url]);
    // Whether the publish lands before or after the poll parks, the answer is the same.
    publish(&server, "lp", "woke");
    let answer = lp.next().unwrap();
    assert_eq!(data_values(&answer), vec!["woke"]);
}

#[test]
fn rfc6202_2_long_poll_times_out_with_the_same_next() {
    let server = Server::start(&["--longpoll-max-wait", "0.3"]);
    let since = tail(&server, "t");
    let res = exchange(
        &server,
        format!("GET /channels/t?wait=60&since={since} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes(),
    );
    assert!(res.text().contains("\"messages\":[]"), "{}", res.text());
    assert_eq!(json_field(&res.text(), "next"), Some(since));
}

#[test]
fn all_five_transports_receive_the_same_messages_on_one_channel() {
    let server = Server::start(&[]);
    let since = tail(&server, "all");
    let sse = curl_sse(&server, "/channels/all", &[]);
    let (stream, _) = curl_stream(&server, "/channels/all");
    let (mut ws, head) = RawWs::connect(&server, "/channels/all", &["pushwire.v1"]);
    assert!(head.contains("Sec-WebSocket-Protocol: pushwire.v1"), "{head}");
    assert_eq!(ws.recv_text(), format!("{{\"type\":\"open\",\"next\":\"{since}\"}}"));
    let lp_url = url(&server, &format!("/channels/all?wait=10&since={since}"));
    let lp = Lines::spawn("curl", &["-s", "--max-time", "20", &lp_url]);

    let id = publish(&server, "all", "to everyone");
    assert_eq!(sse.until(|l| l.starts_with("data:")), "data: to everyone");
    assert!(stream.next().unwrap().contains("\"data\":\"to everyone\""));
    let frame = ws.recv_text();
    assert_eq!(json_field(&frame, "id"), Some(id.clone()));
    assert_eq!(data_values(&lp.next().unwrap()), vec!["to everyone"]);
    assert_eq!(data_values(&poll(&server, "all", Some(&since)).text()), vec!["to everyone"]);
}

#[test]
fn rfc6455_websocket_plain_frames_and_client_publish() {
    let server = Server::start(&[]);
    let since = tail(&server, "chat");
    let (mut alice, head) = RawWs::connect(&server, "/channels/chat", &[]);
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    assert!(head.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo="));
    // The 101 is written in the same turn as the subscription: once it is read, bob is in.
    let (mut bob, _) = RawWs::connect(&server, "/channels/chat", &[]);
    alice.send(OpCode::Text, b"hi bob");
    assert_eq!(bob.recv_text(), "hi bob");
    assert_eq!(alice.recv_text(), "hi bob");
    alice.send(OpCode::Binary, &[0, 1, 2]);
    assert_eq!(bob.recv(), Some((OpCode::Binary, vec![0, 1, 2])));
    // What the chat said is history like any publish.
    let res = poll(&server, "chat", Some(&since));
    assert_eq!(data_values(&res.text()), vec!["hi bob"]);
    assert_eq!(json_field(&res.text(), "data_b64").as_deref(), Some("AAEC"));
}

#[test]
fn rfc6455_5_5_2_quiet_websocket_is_pinged_and_closed_without_an_answer() {
    let server = Server::start(&[
        "--ws-ping-interval",
        "0.2",
        "--ws-pong-timeout",
        "0.2",
        "--ws-close-timeout",
        "0.2",
    ]);
    let (mut ws, _) = RawWs::connect(&server, "/channels/hb", &[]);
    assert_eq!(ws.recv().map(|f| f.0), Some(OpCode::Ping));
    // No pong: the server starts the closing handshake (1001), then drops the connection.
    let (op, payload) = ws.recv().unwrap();
    assert_eq!(op, OpCode::Close);
    assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 1001);
    assert_eq!(ws.recv(), None);
}

/// Each transport: receive one, disconnect, publish two more, reconnect with the cursor, get
/// exactly the two missed, in order.
#[test]
fn resume_on_every_transport_returns_exactly_the_missed_messages() {
    let server = Server::start(&[]);

    // SSE with Last-Event-ID, as a browser reconnects.
    let first = publish(&server, "r-sse", "m1");
    publish(&server, "r-sse", "m2");
    publish(&server, "r-sse", "m3");
    let header = format!("Last-Event-ID: {first}");
    let sse = curl_sse(&server, "/channels/r-sse", &["-H", &header]);
    assert_eq!(sse.until(|l| l.starts_with("data:")), "data: m2");
    assert_eq!(sse.until(|l| l.starts_with("data:")), "data: m3");

    // Stream with ?since.
    let first = publish(&server, "r-st", "m1");
    publish(&server, "r-st", "m2");
    publish(&server, "r-st", "m3");
    let (stream, _) = curl_stream(&server, &format!("/channels/r-st?since={first}"));
    assert_eq!(data_values(&stream.next().unwrap()), vec!["m2"]);
    assert_eq!(data_values(&stream.next().unwrap()), vec!["m3"]);

    // Long poll and short poll with ?since.
    let first = publish(&server, "r-lp", "m1");
    publish(&server, "r-lp", "m2");
    publish(&server, "r-lp", "m3");
    let res = exchange(
        &server,
        format!("GET /channels/r-lp?wait=5&since={first} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes(),
    );
    assert_eq!(data_values(&res.text()), vec!["m2", "m3"]);
    assert_eq!(data_values(&poll(&server, "r-lp", Some(&first)).text()), vec!["m2", "m3"]);

    // WebSocket with ?since and pushwire.v1 envelopes.
    let first = publish(&server, "r-ws", "m1");
    publish(&server, "r-ws", "m2");
    publish(&server, "r-ws", "m3");
    let (mut ws, _) = RawWs::connect(&server, &format!("/channels/r-ws?since={first}"), &["pushwire.v1"]);
    assert_eq!(json_field(&ws.recv_text(), "next"), Some(first.clone()), "open");
    assert_eq!(data_values(&ws.recv_text()), vec!["m2"]);
    assert_eq!(data_values(&ws.recv_text()), vec!["m3"]);
}

#[test]
fn after_eviction_every_transport_signals_the_gap() {
    let server = Server::start(&["--history-messages", "2"]);
    let old = publish(&server, "g", "m1");
    for m in ["m2", "m3", "m4"] {
        publish(&server, "g", m);
    }
    let sse = curl_sse(&server, &format!("/channels/g?last_event_id={old}"), &[]);
    assert_eq!(sse.until(|l| l.starts_with("event:")), "event: gap");
    assert_eq!(sse.until(|l| l.starts_with("data:") && !l.contains("next")), "data: m3");

    let (stream, first) = curl_stream(&server, &format!("/channels/g?since={old}"));
    assert!(first.starts_with("{\"type\":\"gap\""), "{first}");
    assert_eq!(data_values(&stream.next().unwrap()), vec!["m3"]);

    let res = exchange(
        &server,
        format!("GET /channels/g?wait=5&since={old} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes(),
    );
    assert!(res.text().contains("\"gap\":true"));
    assert!(poll(&server, "g", Some(&old)).text().contains("\"gap\":true"));

    let (mut ws, _) = RawWs::connect(&server, &format!("/channels/g?since={old}"), &["pushwire.v1"]);
    assert!(ws.recv_text().starts_with("{\"type\":\"gap\""));
    assert_eq!(data_values(&ws.recv_text()), vec!["m3"]);
}

#[test]
fn slow_consumer_is_closed_at_the_bound_others_keep_receiving_and_it_resumes_without_loss() {
    let server = Server::start(&["--max-send-buffer-bytes", "65536", "--history-messages", "5000"]);
    let since = tail(&server, "slow");
    // A subscriber with a tiny receive window that never reads...
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&server.addr.into()).unwrap();
    let mut stalled: std::net::TcpStream = socket.into();
    stalled.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stalled
        .write_all(b"GET /channels/slow HTTP/1.1\r\nHost: t\r\nAccept: text/event-stream\r\n\r\n")
        .unwrap();
    // ...and one that reads everything.
    let fast = curl_sse(&server, "/channels/slow", &[]);
    // The stalled subscriber's request went first on its own connection; give the server a
    // moment to read it (its subscription is only observable through its socket).
    std::thread::sleep(Duration::from_millis(200));

    let payload = "x".repeat(4000);
    let count = 1500;
    let mut conn = server.connect();
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    for _ in 0..count {
        let req = format!(
            "POST /channels/slow HTTP/1.1\r\nHost: t\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{payload}",
            payload.len()
        );
        conn.write_all(req.as_bytes()).unwrap();
        assert_eq!(read_response(&mut reader, false).status, 201);
    }
    // The fast reader got all of them.
    for _ in 0..count {
        fast.until(|l| l.starts_with("data:"));
    }
    // The stalled one was cut off: draining its socket ends in EOF well before all messages.
    // Read it as a browser would: an event counts once its blank line arrives; a partial
    // event at EOF is discarded, and the last complete id is where to resume.
    let (mut events, mut last_id, mut pending_id, mut has_data) = (0, None, None, false);
    for line in BufReader::new(stalled).lines() {
        let Ok(line) = line else { break };
        if let Some(id) = line.strip_prefix("id: ") {
            pending_id = Some(id.to_string());
        } else if line.starts_with("data:") {
            has_data = true;
        } else if line.is_empty() {
            if pending_id.is_some() {
                last_id = pending_id.take();
            }
            events += usize::from(has_data);
            has_data = false;
        }
    }
    assert!(events < count, "the slow consumer was closed ({events} events before EOF)");
    // It resumes from its last id and gets exactly the rest.
    let last = last_id.unwrap_or(since);
    let res = poll(&server, "slow", Some(&last));
    assert!(res.text().contains("\"gap\":false"));
    let mut got = events + data_values(&res.text()).len();
    let mut next = json_field(&res.text(), "next").unwrap();
    while got < count {
        let page = poll(&server, "slow", Some(&next));
        let n = data_values(&page.text()).len();
        assert!(n > 0, "resume stalled at {got}");
        got += n;
        next = json_field(&page.text(), "next").unwrap();
    }
    assert_eq!(got, count);
}

#[test]
fn metrics_count_transports_messages_and_rejections() {
    let server = Server::start(&[]);
    let sse = curl_sse(&server, "/channels/m", &[]);
    publish(&server, "m", "x");
    sse.until(|l| l.starts_with("data:"));
    assert_eq!(exchange(&server, b"GET /nope HTTP/1.1\r\nHost: t\r\n\r\n").status, 404);
    let res = exchange(&server, b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(res.status, 200);
    assert!(res.header("content-type").unwrap().starts_with("text/plain"));
    let text = res.text();
    for line in [
        "pushwire_transport_connections_open{transport=\"sse\"} 1",
        "pushwire_messages_published_total 1",
        "pushwire_messages_delivered_total 1",
        "pushwire_requests_rejected_total{status=\"404\"} 1",
        "pushwire_channels 1",
        "pushwire_subscriptions 1",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
    }
    drop(sse);
}

#[test]
fn sigterm_drains_every_transport_and_exits_zero() {
    let mut server = Server::start(&["--drain-seconds", "1"]);
    let since = tail(&server, "d");
    let (mut ws, _) = RawWs::connect(&server, "/channels/d", &[]);
    let sse = curl_sse(&server, "/channels/d", &[]);
    let (stream, _) = curl_stream(&server, "/channels/d");
    let mut parked = server.connect();
    parked
        .write_all(format!("GET /channels/d?wait=30&since={since} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));

    let start = std::time::Instant::now();
    let ok = std::process::Command::new("kill").args(["-TERM", &server.pid().to_string()]).status().unwrap();
    assert!(ok.success());
    // The parked poll is answered (no messages, same next) and closed.
    let mut reader = BufReader::new(parked);
    let res = read_response(&mut reader, false);
    assert_eq!(res.status, 200);
    assert_eq!(json_field(&res.text(), "next"), Some(since));
    assert_eq!(res.header("connection"), Some("close"));
    // WebSocket: close 1001.
    let (op, payload) = loop {
        let frame = ws.recv().expect("a close frame");
        if frame.0 != OpCode::Ping {
            break frame;
        }
    };
    assert_eq!(op, OpCode::Close);
    assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 1001);
    // SSE and the stream end (curl sees EOF; the stream after its last-chunk).
    assert!(sse.rest_until_eof().iter().all(|l| l.is_empty()));
    assert!(stream.rest_until_eof().is_empty());
    let status = server.wait_exit(Duration::from_secs(5)).expect("exits after the drain");
    assert!(status.success(), "{status:?}");
    assert!(start.elapsed() < Duration::from_secs(4), "drained within the period: {:?}", start.elapsed());
    assert!(std::net::TcpStream::connect(server.addr).is_err(), "no longer accepting");
}

/// A draining server closes its listeners at once (while its subscribers are still being
/// ended over the drain period): a new client is refused, not left waiting on a listener
/// nobody accepts from.
#[test]
fn sigterm_closes_the_listeners_before_the_drain_ends() {
    let mut server = Server::start(&["--threads", "2", "--drain-seconds", "4"]);
    let subscribers: Vec<_> = (0..8).map(|_| SseClient::connect(&server, "/channels/d", "")).collect();
    let ok = std::process::Command::new("kill").args(["-TERM", &server.pid().to_string()]).status().unwrap();
    assert!(ok.success());
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match std::net::TcpStream::connect(server.addr) {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => break,
            _ if Instant::now() > deadline => panic!("still accepting handshakes 2 s into the drain"),
            _ => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    assert!(server.wait_exit(Duration::from_millis(1)).is_none(), "refused while still draining");
    drop(subscribers);
    assert!(server.wait_exit(IO_TIMEOUT).expect("exits after the drain").success());
}

#[test]
fn with_several_event_loops_every_subscriber_sees_every_message_in_channel_order() {
    every_subscriber_sees_every_message_in_channel_order(&Server::start(&["--threads", "4"]));
}

/// Each loop's open connections, from `pushwire_loop_connections{loop="N"}` in `/metrics`
/// (the metrics request counts itself on the loop that serves it).
fn loop_connections(server: &Server) -> Vec<u64> {
    let text = metrics_text(server);
    text.lines()
        .filter_map(|l| l.strip_prefix("pushwire_loop_connections{loop=\""))
        .map(|l| l.split_once("} ").expect("a sample").1.parse().expect("a count"))
        .collect()
}

/// socket(7) SO_REUSEPORT: every loop listens on the same address and the kernel picks one of
/// the group's listeners per connection by a hash of its 4-tuple. 200 connections from distinct
/// source ports fall on either of 2 loops like coin flips (mean 100, sd 7), so a loop holding
/// fewer than 20 (13 sd below) means the spread is broken (e.g. a loop not listening, or
/// accepting from every listener), not bad luck. The gauges go back down as they close.
#[test]
fn connections_spread_over_the_event_loops_reuseport_listeners() {
    let server = Server::start(&["--threads", "2"]);
    let conns: Vec<_> = (0..200).map(|_| server.connect()).collect();
    let deadline = Instant::now() + IO_TIMEOUT;
    let counts = loop {
        let counts = loop_connections(&server);
        assert_eq!(counts.len(), 2, "one gauge per loop: {counts:?}");
        // 200 held and the metrics request.
        if counts.iter().sum::<u64>() == 201 || Instant::now() > deadline {
            break counts;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(counts.iter().sum::<u64>(), 201, "every connection accepted: {counts:?}");
    assert!(counts.iter().all(|&n| n >= 20), "each loop holds at least 10%: {counts:?}");
    drop(conns);
    let deadline = Instant::now() + IO_TIMEOUT;
    while loop_connections(&server).iter().sum::<u64>() != 1 {
        assert!(
            Instant::now() < deadline,
            "closed connections are uncounted: {:?}",
            loop_connections(&server)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// socket(7) SO_REUSEPORT would let a second server of the same user join the first one's
/// listeners and take part of its connections; it must fail to start instead, and the first
/// one keeps every connection.
#[test]
fn a_second_server_on_a_busy_address_fails_to_start_instead_of_sharing_it() {
    let first = Server::start(&["--threads", "2"]);
    let mut second = std::process::Command::new(env!("CARGO_BIN_EXE_pushwire"))
        .args(["serve", "--threads", "2", "--listen", &first.addr.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + IO_TIMEOUT;
    let status = loop {
        if let Some(status) = second.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = second.kill();
            let _ = second.wait();
            panic!("a second server started on {}", first.addr);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut second.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success(), "{status:?}");
    assert!(stderr.contains("already in use"), "{stderr}");
    let conns: Vec<_> = (0..50).map(|_| first.connect()).collect();
    let deadline = Instant::now() + IO_TIMEOUT;
    while loop_connections(&first).iter().sum::<u64>() != 51 {
        assert!(Instant::now() < deadline, "the first server holds all 50: {:?}", loop_connections(&first));
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(conns);
}

#[test]
fn a_fan_out_written_in_slices_reaches_everyone_in_order_and_the_loop_then_rests() {
    // One connection written per turn: 8 subscribers take 8 turns per message, so publishes
    // land while a fan-out is half written and join the writes of the rest.
    let server = Server::start(&["--threads", "2", "--flush-slice-connections", "1"]);
    every_subscriber_sees_every_message_in_channel_order(&server);
    // Nothing is left for the next turn, so the loops wait again instead of polling at once.
    std::thread::sleep(Duration::from_millis(1500));
    let spent = cpu_ticks_in_one_second(server.pid());
    assert!(spent < 10, "an idle server spent {spent} ticks of CPU in 1 s");
}

/// 8 WebSocket subscribers, then 4 publishers on their own connections (so on different loops
/// when there are several) publishing 100 messages each at once: every subscriber gets all 400
/// in channel order.
fn every_subscriber_sees_every_message_in_channel_order(server: &Server) {
    let since = tail(server, "multi");
    let mut subscribers: Vec<RawWs> = (0..8)
        .map(|_| {
            let (mut ws, _) =
                RawWs::connect(server, &format!("/channels/multi?since={since}"), &["pushwire.v1"]);
            assert!(ws.recv_text().starts_with("{\"type\":\"open\""));
            ws
        })
        .collect();
    // Four publishers on their own connections (so on different loops) at once.
    let publishers: Vec<_> = (0..4)
        .map(|p| {
            let addr = server.addr;
            std::thread::spawn(move || {
                let mut conn = std::net::TcpStream::connect(addr).unwrap();
                conn.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                for i in 0..100 {
                    conn.write_all(publish_request("multi", &format!("p{p}-{i}")).as_bytes()).unwrap();
                    assert_eq!(read_response(&mut reader, false).status, 201);
                }
            })
        })
        .collect();
    for p in publishers {
        p.join().unwrap();
    }
    for ws in &mut subscribers {
        let offsets: Vec<u64> = (0..400)
            .map(|_| {
                let frame = ws.recv_text();
                assert!(!frame.contains("\"type\":\"gap\""), "{frame}");
                json_field(&frame, "id").unwrap().rsplit(':').next().unwrap().parse().unwrap()
            })
            .collect();
        assert_eq!(offsets, (1..=400).collect::<Vec<_>>());
    }
}

/// Issue #13 item 7 (HTML `#the-last-event-id-header`): a browser reconnecting with a
/// `Last-Event-ID` the server cannot read (garbage, not UTF-8) gets the stream from now with a
/// gap event first, not a 400 that would end its `EventSource`; nothing old is replayed, the
/// next publish arrives, and `/metrics` counts it.
#[test]
fn html_sse_unreadable_last_event_id_resumes_from_now_with_a_gap() {
    let server = Server::start(&[]);
    publish(&server, "lost", "old");
    for header in [&b"Last-Event-ID: garbage"[..], b"Last-Event-ID: \xc3\x28"] {
        let mut stream = server.connect();
        let mut req = b"GET /channels/lost HTTP/1.1\r\nHost: t\r\nAccept: text/event-stream\r\n".to_vec();
        req.extend_from_slice(header);
        req.extend_from_slice(b"\r\n\r\n");
        stream.write_all(&req).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut reader = BufReader::new(stream);
        let mut line = || {
            let mut l = String::new();
            assert!(reader.read_line(&mut l).unwrap() > 0, "closed early");
            l.trim_end().to_string()
        };
        assert!(line().starts_with("HTTP/1.1 200"));
        while !line().starts_with("event: gap") {}
        let data = line();
        assert!(data.starts_with("data: {\"next\":"), "{data}");
        publish(&server, "lost", "new");
        let mut seen = Vec::new();
        loop {
            let l = line();
            if let Some(d) = l.strip_prefix("data: ") {
                seen.push(d.to_string());
                break;
            }
        }
        assert_eq!(seen, ["new"], "nothing old is replayed");
    }
    let metrics = metrics_text(&server);
    assert!(metrics.contains("pushwire_last_event_id_unreadable_total 2"), "{metrics}");
}

/// `pushwire_{name}` sample lines of `/metrics`, as (line without the value, value).
fn metric_samples(server: &Server, name: &str) -> Vec<(String, f64)> {
    let text = metrics_text(server);
    let prefix = format!("pushwire_{name}");
    text.lines()
        .filter(|l| l.starts_with(&prefix))
        .map(|l| {
            let (key, value) = l.rsplit_once(' ').unwrap();
            (key.to_string(), value.parse().unwrap())
        })
        .collect()
}

#[test]
fn delivery_latency_histograms_count_each_write_in_prometheus_format() {
    let server = Server::start(&[]);
    let (mut ws, _) = RawWs::connect(&server, "/channels/latency", &[]);
    let (mut other, _) = RawWs::connect(&server, "/channels/latency", &[]);
    for i in 0..3 {
        publish(&server, "latency", &format!("m{i}"));
        // Each message is read before the next is published: one write per subscriber each.
        assert_eq!(ws.recv_text(), format!("m{i}"));
        assert_eq!(other.recv_text(), format!("m{i}"));
    }
    for (name, least) in [("delivery_write_seconds", 6.0), ("fanout_last_write_seconds", 3.0)] {
        // The loop merges its observations just after the writes: wait for them (bounded).
        let deadline = Instant::now() + IO_TIMEOUT;
        let samples = loop {
            let samples = metric_samples(&server, name);
            let count = samples.iter().find(|(k, _)| k.ends_with("_count")).map_or(0.0, |(_, v)| *v);
            if count >= least || Instant::now() > deadline {
                break samples;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let value = |key: &str| samples.iter().find(|(k, _)| k == key).map(|(_, v)| *v);
        let count = value(&format!("pushwire_{name}_count")).expect("a _count line");
        // Three fan-outs of two subscribers; a loop with both counts once per fan-out, two
        // loops (one subscriber each) count one each.
        assert!(count >= least && count <= 6.0, "{name}: {count}");
        assert_eq!(value(&format!("pushwire_{name}_bucket{{le=\"+Inf\"}}")), Some(count));
        let sum = value(&format!("pushwire_{name}_sum")).expect("a _sum line");
        assert!(sum > 0.0 && sum < count * 30.0, "{name}: sum {sum} s");
        // Buckets are cumulative: never decreasing, in increasing `le` order.
        let buckets: Vec<f64> =
            samples.iter().filter(|(k, _)| k.contains("_bucket{le=")).map(|(_, v)| *v).collect();
        assert_eq!(buckets.len(), 17);
        assert!(buckets.windows(2).all(|w| w[0] <= w[1]), "{name}: {buckets:?}");
    }
}
