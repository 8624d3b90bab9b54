//! Hostile clients against the real server while a well-behaved one is served: slowloris
//! (requests trickled one byte at a time, never finished) and a connection flood past the
//! global and per-address connection limits.
//!
//! Both are bounded in count and time. The test process stays far below 1,024 descriptors
//! (about 260 at the peak), so it runs under the common default soft limit without raising it.

mod common;

use std::io::{BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::*;

/// The delivery latency a well-behaved subscriber must see, under attack or not.
const MAX_LATENCY: Duration = Duration::from_secs(1);

/// The soft limit on open descriptors of this process, where /proc tells it.
fn fd_soft_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

fn assert_fd_budget(needed: u64) {
    if let Some(limit) = fd_soft_limit() {
        assert!(needed + 64 < limit, "this test needs about {needed} descriptors; the soft limit is {limit}");
    }
}

/// A publisher on one keep-alive connection, opened before any attack so that it never needs
/// a new connection slot.
struct Publisher {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Publisher {
    fn connect(stream: TcpStream) -> Publisher {
        let reader = BufReader::new(stream.try_clone().unwrap());
        Publisher { stream, reader }
    }

    /// Publishes `data` to `channel`; returns the new id.
    fn publish(&mut self, channel: &str, data: &str) -> String {
        self.stream.write_all(publish_request(channel, data).as_bytes()).unwrap();
        let res = read_response(&mut self.reader, false);
        assert_eq!(res.status, 201, "{}", res.text());
        json_field(&res.text(), "id").expect("an id")
    }

    /// The server's count of open connections, from /metrics.
    fn connections_open(&mut self) -> u64 {
        self.stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        let res = read_response(&mut self.reader, false);
        let text = res.text();
        let line = text.lines().find(|l| l.starts_with("pushwire_connections_open ")).expect("the gauge");
        line.rsplit(' ').next().unwrap().parse().unwrap()
    }
}

/// Publishes one message and checks that the subscriber gets it, with its id, within
/// [`MAX_LATENCY`]. Returns the latency.
fn check_delivery(publisher: &mut Publisher, sse: &mut SseClient, channel: &str, data: &str) -> Duration {
    let start = Instant::now();
    let id = publisher.publish(channel, data);
    let event = sse
        .next_event(MAX_LATENCY.saturating_sub(start.elapsed()))
        .unwrap_or_else(|| panic!("{data}: not delivered within {MAX_LATENCY:?}"));
    let latency = start.elapsed();
    assert_eq!((event.id.as_deref(), event.data.as_str()), (Some(id.as_str()), data));
    assert!(latency < MAX_LATENCY, "{data}: delivered after {latency:?}");
    latency
}

/// One slowloris connection: what it has written and what came back.
struct Slow {
    stream: TcpStream,
    written: usize,
    first_byte_at: Option<Instant>,
    answer: Vec<u8>,
    answer_at: Option<Instant>,
    eof: bool,
    error: Option<std::io::Error>,
}

impl Slow {
    /// Reads whatever the server sent, without blocking.
    fn read_available(&mut self) {
        let mut buf = [0u8; 1024];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => {
                    self.eof = true;
                    return;
                }
                Ok(n) => {
                    self.answer_at.get_or_insert_with(Instant::now);
                    self.answer.extend_from_slice(&buf[..n]);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) => {
                    self.error = Some(e);
                    self.eof = true;
                    return;
                }
            }
        }
    }
}

#[test]
fn rfc9110_15_5_9_slowloris_gets_408_while_a_subscriber_keeps_its_latency() {
    const SLOW: usize = 50;
    const TRICKLE: Duration = Duration::from_millis(200);
    let request_timeout = Duration::from_secs(1);
    assert_fd_budget(SLOW as u64 + 10);
    let server = Server::start(&["--request-timeout", "1"]);
    let mut sse = SseClient::connect(&server, "/channels/live", "");
    let mut publisher = Publisher::connect(server.connect());

    // A request that never ends: a field value that grows by one byte per tick.
    let prefix = b"GET /channels/live HTTP/1.1\r\nHost: t\r\nX-Slow: ";
    let mut slow: Vec<Slow> = (0..SLOW)
        .map(|_| {
            let stream = server.connect();
            stream.set_nonblocking(true).unwrap();
            Slow {
                stream,
                written: 0,
                first_byte_at: None,
                answer: Vec::new(),
                answer_at: None,
                eof: false,
                error: None,
            }
        })
        .collect();

    let start = Instant::now();
    // Bounded: the request timeout, plus the linger and scheduling slack.
    let limit = request_timeout + Duration::from_secs(4);
    let mut latencies = Vec::new();
    let mut tick = 0;
    while start.elapsed() < limit && slow.iter().any(|s| !s.eof) {
        let tick_start = Instant::now();
        for s in slow.iter_mut().filter(|s| !s.eof) {
            s.read_available();
            // Once answered, stop sending: the server is closing this connection.
            if s.answer.is_empty() && !s.eof {
                let byte = prefix.get(s.written).copied().unwrap_or(b'a');
                match s.stream.write(&[byte]) {
                    Ok(_) => {
                        s.written += 1;
                        s.first_byte_at.get_or_insert(tick_start);
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(e) => {
                        s.error = Some(e);
                        s.eof = true;
                    }
                }
            }
        }
        latencies.push(check_delivery(&mut publisher, &mut sse, "live", &format!("tick-{tick}")));
        // A fresh connection is served too.
        assert_eq!(exchange(&server, b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n").status, 200, "tick {tick}");
        tick += 1;
        std::thread::sleep(TRICKLE.saturating_sub(tick_start.elapsed()));
    }

    for (i, s) in slow.iter().enumerate() {
        let answer = String::from_utf8_lossy(&s.answer);
        assert!(s.error.is_none(), "slow {i}: {:?} after {answer:?}", s.error);
        assert!(answer.starts_with("HTTP/1.1 408 "), "slow {i}: {answer:?}");
        assert!(answer.contains("\r\nConnection: close\r\n"), "slow {i}: {answer:?}");
        assert!(s.eof, "slow {i} was not closed within {limit:?}");
        let waited = s.answer_at.unwrap() - s.first_byte_at.unwrap();
        // The deadline runs from the first byte; the tick adds up to one trickle interval.
        assert!(waited >= request_timeout - TRICKLE, "slow {i}: 408 after only {waited:?}");
        assert!(waited < request_timeout + Duration::from_secs(2), "slow {i}: 408 after {waited:?}");
        // Only the first bytes of the request were ever sent: it never finished.
        assert!(s.written < 20, "slow {i} wrote {} bytes", s.written);
    }
    assert!(latencies.len() >= 5, "only {} deliveries checked", latencies.len());
    let worst = latencies.iter().max().unwrap();
    assert!(*worst < MAX_LATENCY, "worst latency {worst:?}");
    // After the attack, the subscriber is still there and everything still works.
    check_delivery(&mut publisher, &mut sse, "live", "after");
}

/// A connection from `source` (a loopback address: on Linux all of 127.0.0.0/8 reaches the
/// server), with read and write deadlines.
fn connect_from(server: &Server, source: [u8; 4]) -> TcpStream {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket.bind(&SocketAddr::from((source, 0)).into()).unwrap();
    socket.connect_timeout(&server.addr.into(), IO_TIMEOUT).expect("connect");
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    stream
}

/// Opens `count` connections from `source` and holds them. Returns those the server kept
/// (no answer) and checks that exactly `refused` were answered 503 and closed.
fn open_and_hold(
    server: &Server,
    source: [u8; 4],
    count: usize,
    refused: usize,
    check: &mut impl FnMut(),
) -> Vec<TcpStream> {
    let mut pending: Vec<TcpStream> = Vec::new();
    for i in 0..count {
        pending.push(connect_from(server, source));
        if i % 25 == 24 {
            check();
        }
    }
    for stream in &pending {
        stream.set_nonblocking(true).unwrap();
    }
    // A refused connection gets its 503 at once; wait until all of them have it.
    let mut refusals = 0;
    let deadline = Instant::now() + Duration::from_secs(5);
    while refusals < refused && Instant::now() < deadline {
        let mut i = 0;
        while i < pending.len() {
            let mut buf = [0u8; 512];
            match (&pending[i]).read(&mut buf) {
                Err(e) if e.kind() == ErrorKind::WouldBlock => i += 1,
                Ok(n) => {
                    let answer = String::from_utf8_lossy(&buf[..n]);
                    assert!(answer.starts_with("HTTP/1.1 503 "), "{source:?}: {answer:?}");
                    refusals += 1;
                    pending.swap_remove(i);
                }
                Err(e) => panic!("{source:?}: {e}"),
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(refusals, refused, "{source:?}: connections refused out of {count}");
    // No late refusal among those kept.
    std::thread::sleep(Duration::from_millis(100));
    for stream in &pending {
        let mut buf = [0u8; 1];
        let r = (&*stream).read(&mut buf);
        assert!(
            matches!(&r, Err(e) if e.kind() == ErrorKind::WouldBlock),
            "{source:?}: a held connection got {r:?}"
        );
        stream.set_nonblocking(false).unwrap();
    }
    pending
}

/// Opens and closes `count` connections from `source` as fast as possible, in four styles:
/// dropped at once, dropped mid-request, dropped without reading the answer, and answered.
/// `at_limit`: the server is full, so the answered ones must be 503s.
fn churn(server: &Server, source: [u8; 4], count: usize, at_limit: bool, check: &mut impl FnMut()) {
    for i in 0..count {
        let mut stream = connect_from(server, source);
        match i % 4 {
            0 => {}
            1 => {
                let _ = stream.write_all(b"GET /healthz HT");
            }
            2 => {
                let _ = stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n");
            }
            _ => {
                let status = if at_limit {
                    read_response(&mut BufReader::new(stream), false).status
                } else {
                    stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
                    read_response(&mut BufReader::new(stream), false).status
                };
                assert_eq!(status, if at_limit { 503 } else { 200 }, "churn {i}");
            }
        }
        if i % 25 == 24 {
            check();
        }
    }
}

#[test]
fn connection_flood_past_both_limits_gets_503_without_disturbing_a_subscriber() {
    const MAX: usize = 200;
    const PER_IP: usize = 120;
    const FROM_A: usize = 150; // from 127.0.0.1, which also holds the subscriber and publisher
    const FROM_B: usize = 100; // from 127.0.0.2
    assert_fd_budget((FROM_A + FROM_B) as u64 + 10);
    let server = Server::start(&[
        "--max-connections",
        &MAX.to_string(),
        "--max-connections-per-ip",
        &PER_IP.to_string(),
        "--threads",
        "2",
        // Held connections send nothing; keep them past the test's length.
        "--request-timeout",
        "60",
    ]);
    const A: [u8; 4] = [127, 0, 0, 1];
    const B: [u8; 4] = [127, 0, 0, 2];
    const C: [u8; 4] = [127, 0, 0, 3];
    // The well-behaved client connects before the flood: two connections from 127.0.0.1.
    let mut sse = SseClient::on(connect_from(&server, A), "/channels/flood", "");
    let mut publisher = Publisher::connect(connect_from(&server, A));
    let mut round = 0;
    let mut latencies = Vec::new();
    let mut check = || {
        round += 1;
        latencies.push(check_delivery(&mut publisher, &mut sse, "flood", &format!("round-{round}")));
    };

    // Connections opened and closed rapidly, under the limits: all served, all released.
    churn(&server, C, 200, false, &mut check);
    let deadline = Instant::now() + Duration::from_secs(5);
    while publisher.connections_open() != 2 {
        assert!(Instant::now() < deadline, "closed connections were not all released");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut check = || {
        round += 1;
        latencies.push(check_delivery(&mut publisher, &mut sse, "flood", &format!("round-{round}")));
    };

    // Past the per-address limit: 127.0.0.1 already holds 2 of its 120.
    let held_a = open_and_hold(&server, A, FROM_A, FROM_A - (PER_IP - 2), &mut check);
    // Past the global limit: 120 are open, so 80 more fit.
    let held_b = open_and_hold(&server, B, FROM_B, FROM_B - (MAX - PER_IP), &mut check);
    assert_eq!(held_a.len() + held_b.len() + 2, MAX);
    // At the limit, new connections are refused however they behave.
    churn(&server, C, 100, true, &mut check);
    check();
    assert_eq!(publisher.connections_open(), MAX as u64);

    // Every held connection is still served.
    for (i, stream) in held_a.iter().chain(&held_b).enumerate() {
        let mut stream = stream.try_clone().unwrap();
        stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        let res = read_response(&mut BufReader::new(stream), false);
        assert_eq!(res.status, 200, "held connection {i}");
    }

    // Once the flood ends, new connections are accepted again.
    drop(held_a);
    drop(held_b);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut stream = connect_from(&server, C);
        stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        match read_response(&mut BufReader::new(stream), false).status {
            200 => break,
            503 if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            status => panic!("after the flood: {status}"),
        }
    }
    let latency = check_delivery(&mut publisher, &mut sse, "flood", "after");
    latencies.push(latency);
    let worst = latencies.iter().max().unwrap();
    assert!(*worst < MAX_LATENCY, "worst latency {worst:?} over {} deliveries", latencies.len());
}

/// The server's peak resident size so far (`VmHWM`, proc(5)), in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn a_pipelined_publish_flood_does_not_pile_up_queued_deliveries() {
    const SUBSCRIBERS: usize = 200;
    const PUBLISHES: usize = 5_000;
    assert_fd_budget(SUBSCRIBERS as u64 + 10);
    // One connection written per turn, so deliveries wait in connection queues as long as
    // they can: the queue of each may hold one write's worth of messages, not the flood.
    let server = Server::start(&["--threads", "1", "--flush-slice-connections", "1"]);
    let subscribers: Vec<_> = (0..SUBSCRIBERS)
        .map(|_| {
            // Returns once the opening cursor arrived: the subscription is live.
            let mut sse = SseClient::connect(&server, "/channels/flood", "");
            std::thread::spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(60);
                let mut received = 0;
                while Instant::now() < deadline {
                    match sse.next_event(Duration::from_secs(1)) {
                        Some(event) if event.data == "last" => return received + 1,
                        Some(_) => received += 1,
                        None => {}
                    }
                }
                received
            })
        })
        .collect();
    let before_kib = peak_rss_kib(server.pid());

    // Every publish in one pipelined stream: a turn reads hundreds of them.
    let mut publisher = server.connect();
    let mut drain = publisher.try_clone().unwrap();
    let drainer = std::thread::spawn(move || std::io::copy(&mut drain, &mut std::io::sink()));
    let flood: String =
        (1..PUBLISHES).map(|i| publish_request("flood", &format!("message number {i:05}"))).collect();
    publisher.write_all(flood.as_bytes()).unwrap();
    publisher.write_all(publish_request("flood", "last").as_bytes()).unwrap();

    for subscriber in subscribers {
        assert_eq!(subscriber.join().unwrap(), PUBLISHES, "every subscriber gets every message");
    }
    let grown_kib = peak_rss_kib(server.pid()) - before_kib;
    publisher.shutdown(std::net::Shutdown::Both).unwrap();
    let _ = drainer.join();
    // Queued without a bound: about 5,000 entries of 24-32 bytes on each of 200 connections
    // (24-48 MiB, ring growth included). Bounded by one write (64 entries) each: far below.
    assert!(grown_kib < 12 * 1024, "the server's peak grew by {grown_kib} KiB during the flood");
}
