//! Loopback tests of the HTTP API against the real server: publish, short poll, resume, gaps,
//! keep-alive, pipelining, and every malformed input and limit of the foundation.

mod common;

use std::io::{BufReader, Read, Write};
use std::time::{Duration, Instant};

use common::*;

#[test]
fn publish_then_poll_with_cursor_returns_exactly_that_message() {
    let server = Server::start(&[]);
    let tail = poll(&server, "a", None);
    assert_eq!(tail.status, 200);
    assert!(tail.text().contains("\"messages\":[]"), "{}", tail.text());
    let since = json_field(&tail.text(), "next").unwrap();

    let id = publish(&server, "a", "hi");
    let res = poll(&server, "a", Some(&since));
    assert_eq!(res.status, 200);
    assert_eq!(res.header("content-type"), Some("application/json"));
    assert_eq!(data_values(&res.text()), vec!["hi"]);
    assert_eq!(json_field(&res.text(), "id").as_deref(), Some(id.as_str()));
    assert_eq!(json_field(&res.text(), "next").as_deref(), Some(id.as_str()));
    assert!(res.text().contains("\"gap\":false"));

    // Polling from the returned cursor gives nothing more.
    let again = poll(&server, "a", Some(&id));
    assert!(again.text().contains("\"messages\":[]"), "{}", again.text());
}

#[test]
fn poll_without_since_starts_from_now() {
    let server = Server::start(&[]);
    publish(&server, "now", "old");
    let res = poll(&server, "now", None);
    assert!(res.text().contains("\"messages\":[]"), "{}", res.text());
    let next = json_field(&res.text(), "next").unwrap();
    publish(&server, "now", "new");
    assert_eq!(data_values(&poll(&server, "now", Some(&next)).text()), vec!["new"]);
}

#[test]
fn resume_returns_the_missed_messages_in_order() {
    let server = Server::start(&[]);
    let first = publish(&server, "r", "one");
    publish(&server, "r", "two");
    publish(&server, "r", "three");
    let res = poll(&server, "r", Some(&first));
    assert_eq!(data_values(&res.text()), vec!["two", "three"]);
    assert!(res.text().contains("\"gap\":false"));
}

#[test]
fn cursor_older_than_history_answers_gap_with_what_remains() {
    let server = Server::start(&["--history-messages", "2"]);
    let first = publish(&server, "g", "m1");
    for m in ["m2", "m3", "m4"] {
        publish(&server, "g", m);
    }
    let res = poll(&server, "g", Some(&first));
    assert!(res.text().contains("\"gap\":true"), "{}", res.text());
    assert_eq!(data_values(&res.text()), vec!["m3", "m4"]);
}

#[test]
fn cursor_of_another_epoch_answers_gap() {
    let server = Server::start(&[]);
    publish(&server, "e", "x");
    let res = poll(&server, "e", Some("0123456789abcdef:1"));
    assert!(res.text().contains("\"gap\":true"), "{}", res.text());
    assert_eq!(data_values(&res.text()), vec!["x"]);
}

#[test]
fn binary_bodies_travel_as_base64() {
    let server = Server::start(&[]);
    let since = json_field(&poll(&server, "b", None).text(), "next").unwrap();
    let raw = b"POST /channels/b HTTP/1.1\r\nHost: t\r\nContent-Type: application/octet-stream\r\nContent-Length: 3\r\n\r\n\x00\x01\xff";
    assert_eq!(exchange(&server, raw).status, 201);
    let res = poll(&server, "b", Some(&since));
    assert_eq!(json_field(&res.text(), "data_b64").as_deref(), Some("AAH/"));
}

#[test]
fn event_names_are_kept() {
    let server = Server::start(&[]);
    let since = json_field(&poll(&server, "ev", None).text(), "next").unwrap();
    let raw = b"POST /channels/ev?event=price HTTP/1.1\r\nHost: t\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\n42";
    assert_eq!(exchange(&server, raw).status, 201);
    assert_eq!(json_field(&poll(&server, "ev", Some(&since)).text(), "event").as_deref(), Some("price"));
}

#[test]
fn max_event_name_bytes_flag_bounds_event_names() {
    let server = Server::start(&["--max-event-name-bytes", "5"]);
    let publish = |event: &str| {
        let raw =
            format!("POST /channels/ev?event={event} HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\n\r\nx");
        exchange(&server, raw.as_bytes())
    };
    assert_eq!(publish("price").status, 201);
    let refused = publish("prices");
    assert_eq!(refused.status, 400);
    assert!(refused.text().contains("max-event-name-bytes"), "{}", refused.text());
}

#[test]
fn rfc9112_7_1_chunked_publish_body() {
    let server = Server::start(&[]);
    let since = json_field(&poll(&server, "c", None).text(), "next").unwrap();
    let raw = b"POST /channels/c HTTP/1.1\r\nHost: t\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nWiki\r\n5;ext=1\r\npedia\r\n0\r\n\r\n";
    assert_eq!(exchange(&server, raw).status, 201);
    assert_eq!(data_values(&poll(&server, "c", Some(&since)).text()), vec!["Wikipedia"]);
}

#[test]
fn rfc9110_10_1_1_expect_100_continue_gets_an_interim_response() {
    let server = Server::start(&[]);
    let mut stream = server.connect();
    stream
        .write_all(b"POST /channels/x HTTP/1.1\r\nHost: t\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n")
        .unwrap();
    let mut interim = [0u8; 25];
    stream.read_exact(&mut interim).unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    stream.write_all(b"hi").unwrap();
    assert_eq!(read_response(&mut BufReader::new(stream), false).status, 201);
}

#[test]
fn rfc9112_9_3_keep_alive_and_pipelining() {
    let server = Server::start(&[]);
    let mut stream = server.connect();
    // Three requests in one write: answers come back in order on the same connection.
    stream
        .write_all(
            b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n\
              POST /channels/p HTTP/1.1\r\nHost: t\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\nabc\
              GET /nope HTTP/1.1\r\nHost: t\r\n\r\n",
        )
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    assert_eq!(read_response(&mut reader, false).status, 200);
    assert_eq!(read_response(&mut reader, false).status, 201);
    assert_eq!(read_response(&mut reader, false).status, 404);
    // The connection is still usable afterwards.
    stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    assert_eq!(read_response(&mut reader, false).text(), "ok\n");
    stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").unwrap();
    let last = read_response(&mut reader, false);
    assert_eq!(last.header("connection"), Some("close"));
    assert!(closed_by_server(&mut reader));
}

#[test]
fn rfc9110_9_3_2_head_has_length_but_no_body() {
    let server = Server::start(&[]);
    let mut stream = server.connect();
    stream.write_all(b"HEAD / HTTP/1.1\r\nHost: t\r\n\r\nGET /healthz HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let mut reader = BufReader::new(stream);
    let head = read_response(&mut reader, true);
    assert_eq!(head.status, 200);
    assert!(head.header("content-length").unwrap().parse::<usize>().unwrap() > 100);
    // Had a body been sent, this would read it as the next response and fail.
    assert_eq!(read_response(&mut reader, false).text(), "ok\n");
}

#[test]
fn index_page_and_health_check() {
    let server = Server::start(&[]);
    let index = exchange(&server, b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(index.status, 200);
    assert!(index.text().contains("pushwire"));
    let script = exchange(&server, b"GET /pushwire.js HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(script.status, 200);
    assert_eq!(script.header("content-type"), Some("text/javascript; charset=utf-8"));
    assert!(script.text().contains("class Pushwire extends Reconnecting"));
    assert!(script.text().contains("class PushwireClient extends Reconnecting"));
    assert_eq!(exchange(&server, b"GET /healthz HTTP/1.0\r\n\r\n").text(), "ok\n");
}

/// Each malformed input, its expected status, and whether the server must close afterwards.
fn malformed_cases() -> Vec<(&'static str, Vec<u8>, u16)> {
    let long_target = format!("GET /{} HTTP/1.1\r\nHost: t\r\n\r\n", "a".repeat(9000));
    let big_head = format!("GET / HTTP/1.1\r\nHost: t\r\nX: {}\r\n\r\n", "a".repeat(17000));
    let many = format!("GET / HTTP/1.1\r\nHost: t\r\n{}\r\n", "X: 1\r\n".repeat(65));
    let chunked_big = format!(
        "POST /channels/a HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n",
        70 * 1024
    );
    vec![
        ("garbage request line", b"GARBAGE\r\n\r\n".to_vec(), 400),
        ("binary junk", b"\x00\x01\x02\r\n\r\n".to_vec(), 400),
        ("missing Host", b"GET / HTTP/1.1\r\n\r\n".to_vec(), 400),
        ("two Hosts", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n".to_vec(), 400),
        (
            "Content-Length with Transfer-Encoding",
            b"POST /channels/a HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec(),
            400,
        ),
        (
            "conflicting Content-Lengths",
            b"POST /channels/a HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabc".to_vec(),
            400,
        ),
        ("non-numeric Content-Length", b"POST /channels/a HTTP/1.1\r\nHost: t\r\nContent-Length: 3x\r\n\r\n".to_vec(), 400),
        ("body too large", b"POST /channels/a HTTP/1.1\r\nHost: t\r\nContent-Length: 70000\r\n\r\n".to_vec(), 413),
        ("chunked body too large", chunked_big.into_bytes(), 413),
        (
            "invalid chunk size",
            b"POST /channels/a HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n".to_vec(),
            400,
        ),
        ("target too long", long_target.into_bytes(), 414),
        ("head too large", big_head.into_bytes(), 431),
        ("too many headers", many.into_bytes(), 431),
        (
            "unknown transfer coding",
            b"POST /channels/a HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip, chunked\r\n\r\n".to_vec(),
            501,
        ),
        ("chunked not final", b"POST /channels/a HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, gzip\r\n\r\n".to_vec(), 400),
        ("HTTP/2.0", b"GET / HTTP/2.0\r\nHost: t\r\n\r\n".to_vec(), 505),
        ("HTTP/1.2", b"GET / HTTP/1.2\r\nHost: t\r\n\r\n".to_vec(), 505),
        ("unknown path", b"GET /nope HTTP/1.1\r\nHost: t\r\n\r\n".to_vec(), 404),
        ("DELETE on a channel", b"DELETE /channels/a HTTP/1.1\r\nHost: t\r\n\r\n".to_vec(), 405),
        ("POST on the page", b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n".to_vec(), 405),
        ("bad channel name", b"GET /channels/a$b HTTP/1.1\r\nHost: t\r\n\r\n".to_vec(), 400),
        ("dot-segment channel name", b"GET /channels/.. HTTP/1.1\r\nHost: t\r\n\r\n".to_vec(), 400),
        ("channel name too long", format!("GET /channels/{} HTTP/1.1\r\nHost: t\r\n\r\n", "c".repeat(129)).into_bytes(), 400),
        ("since that does not parse", b"GET /channels/a?since=12 HTTP/1.1\r\nHost: t\r\n\r\n".to_vec(), 400),
        ("since with bad escapes", b"GET /channels/a?since=%zz HTTP/1.1\r\nHost: t\r\n\r\n".to_vec(), 400),
        (
            "text body not UTF-8",
            b"POST /channels/a HTTP/1.1\r\nHost: t\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\n\xff\xfe".to_vec(),
            400,
        ),
        ("reserved event name", b"POST /channels/a?event=gap HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\n\r\nx".to_vec(), 400),
        ("authority-form target", b"GET example.com:80 HTTP/1.1\r\nHost: t\r\n\r\n".to_vec(), 400),
    ]
}

#[test]
fn every_malformed_input_gets_its_status_and_the_server_keeps_serving() {
    let server = Server::start(&[]);
    for (name, raw, status) in malformed_cases() {
        let res = exchange(&server, &raw);
        assert_eq!(res.status, status, "{name}: {}", res.text());
        if status == 405 {
            assert!(res.header("allow").is_some(), "{name}: 405 without Allow");
        }
        let health = exchange(&server, b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n");
        assert_eq!(health.status, 200, "after {name}");
    }
}

#[test]
fn errors_that_leave_the_stream_unframed_close_the_connection() {
    let server = Server::start(&[]);
    let mut stream = server.connect();
    stream
        .write_all(b"POST /channels/a HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\nabc")
        .unwrap();
    let mut reader = BufReader::new(stream);
    let res = read_response(&mut reader, false);
    assert_eq!(res.status, 400);
    assert_eq!(res.header("connection"), Some("close"));
    assert!(closed_by_server(&mut reader));
}

#[test]
fn slow_request_gets_408_and_is_closed() {
    let server = Server::start(&["--request-timeout", "0.5"]);
    let mut stream = server.connect();
    let start = Instant::now();
    stream.write_all(b"GET / HTTP/1.1\r\nHo").unwrap();
    let mut reader = BufReader::new(stream);
    let res = read_response(&mut reader, false);
    assert_eq!(res.status, 408);
    assert!(start.elapsed() >= Duration::from_millis(400));
    assert!(closed_by_server(&mut reader));
    // Others are unaffected.
    assert_eq!(exchange(&server, b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n").status, 200);
}

/// A client that sends its requests and then its FIN (a half-close: it will send nothing
/// more) gets every answer, then the server's close at once, not at the keep-alive timeout
/// (60 s): the FIN usually comes in the same poll event as the bytes, and must not be missed
/// when a short read ends reading.
#[test]
fn rfc9112_9_6_requests_then_the_clients_fin_are_answered_then_closed() {
    let server = Server::start(&[]);
    for _ in 0..20 {
        let mut stream = server.connect();
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\nGET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
        stream.shutdown(std::net::Shutdown::Write).unwrap();
        let mut reader = BufReader::new(stream);
        assert_eq!(read_response(&mut reader, false).status, 200);
        assert_eq!(read_response(&mut reader, false).status, 200);
        assert!(closed_by_server(&mut reader), "the connection stays open after the client's FIN");
    }
}

#[test]
fn idle_keep_alive_connection_is_closed_quietly() {
    let server = Server::start(&["--keep-alive-timeout", "0.3"]);
    let mut stream = server.connect();
    stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let mut reader = BufReader::new(stream);
    assert_eq!(read_response(&mut reader, false).status, 200);
    let mut rest = Vec::new();
    reader.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "no bytes after an idle close: {rest:?}");
}

#[test]
fn sigint_stops_the_server_cleanly() {
    let mut server = Server::start(&[]);
    assert_eq!(exchange(&server, b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n").status, 200);
    let ok = std::process::Command::new("kill").args(["-INT", &server.pid().to_string()]).status().unwrap();
    assert!(ok.success());
    let status = server.wait_exit(Duration::from_secs(5)).expect("server exits after SIGINT");
    assert!(status.success(), "{status:?}");
}

#[test]
fn invalid_configuration_is_refused_at_startup() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pushwire"))
        .args(["serve", "--listen", "127.0.0.1:0", "--max-headers", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("max headers"));
}

#[test]
fn connections_past_the_global_and_per_ip_limits_get_503_without_disturbing_others() {
    for flag in ["--max-connections", "--max-connections-per-ip"] {
        let server = Server::start(&[flag, "3", "--threads", "2"]);
        let held: Vec<_> = (0..3).map(|_| server.connect()).collect();
        // Make sure all three are accepted before the fourth arrives.
        for stream in &held {
            let mut stream = stream.try_clone().unwrap();
            stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
            assert_eq!(read_response(&mut BufReader::new(stream), false).status, 200);
        }
        let mut extra = BufReader::new(server.connect());
        assert_eq!(read_response(&mut extra, false).status, 503, "{flag}");
        // The held connections still work, and a freed slot is usable again.
        let mut first = held[0].try_clone().unwrap();
        first.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").unwrap();
        let mut reader = BufReader::new(first);
        assert_eq!(read_response(&mut reader, false).status, 200);
        assert!(closed_by_server(&mut reader));
        drop(held);
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(exchange(&server, b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n").status, 200, "{flag}");
    }
}

#[test]
fn out_of_file_descriptors_the_server_neither_exits_nor_spins_and_recovers() {
    let server = Server::start(&["--threads", "1"]);
    // A small descriptor limit on the running server: it has a few already (stdio, epoll,
    // listener, signal pipe, waker), so 40 connections exhaust it.
    let ok = std::process::Command::new("prlimit")
        .args([&format!("--pid={}", server.pid()), "--nofile=32:32"])
        .status()
        .expect("prlimit (util-linux)");
    assert!(ok.success());
    let held: Vec<_> = (0..40).map(|_| server.connect()).collect();
    std::thread::sleep(Duration::from_millis(300));
    // Connections past the limit wait in the kernel's backlog; the loop pauses accepting.
    let spent = cpu_ticks_in_one_second(server.pid());
    assert!(spent < 20, "the loop spins while out of descriptors: {spent} ticks in 1 s");
    drop(held);
    // Descriptors come back: the server accepts and serves again.
    let res = exchange(&server, b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(res.status, 200);
}

#[test]
fn an_idle_server_with_several_loops_does_not_spin() {
    let server = Server::start(&["--threads", "2"]);
    assert_eq!(exchange(&server, b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n").status, 200);
    // Past the hub sweep interval (1 s), when every loop has had a timer come due.
    std::thread::sleep(Duration::from_millis(1500));
    let spent = cpu_ticks_in_one_second(server.pid());
    assert!(spent < 10, "an idle server spent {spent} ticks of CPU in 1 s");
}
