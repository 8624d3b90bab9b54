//! Allocations per message in steady state, counted by a global allocator (issue #16).
//!
//! This is its own test binary so that its counting allocator affects nothing else. The server
//! runs in this process (`pushwire::net::serve` on a port-0 loopback listener, one event
//! loop); the clients are raw blocking sockets on the test's thread that allocate nothing while
//! a window is counted, so what is counted is what the server's loop allocates. After a warm-up
//! (buffers reach their working size, the loop's `Cork` holds its spare outputs) every
//! scenario echoes or fans out a fixed number of messages and divides the allocations counted
//! over that window by the messages (or deliveries) it carried.
//!
//! Targets (README "Performance"): **0 allocations per echoed message** (WebSocket `/echo`,
//! 32 B to 16 KiB, text and binary, several messages in flight so that reads cut frames), and
//! **0 allocations per subscriber per delivery** on the fan-out path (the difference between a
//! fan-out to many and to few subscribers, per extra delivery). What a publish itself
//! allocates (the message, its one encoding, the inbox hand-over) is reported, not a target.
//! A window passes with at most [`POOL_GROWTH_ALLOWANCE`] allocations in all (pools reaching a
//! new high-water mark), thousands fewer than one per message.

use std::alloc::System;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{mpsc, Mutex, OnceLock};
use std::time::Duration;

use pushwire::config::Config;
use pushwire::net::{serve, Listen};
use pushwire::ws::frame::encode_frame;
use pushwire::ws::{FrameHeader, OpCode};
use stats_alloc::{StatsAlloc, INSTRUMENTED_SYSTEM};

/// Counts every allocation and reallocation, in every thread (`stats_alloc`: no `unsafe` here).
#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Allocations and reallocations so far, by any thread. The clients below allocate nothing
/// while a window is counted (their buffers are sized before it), so a window's count is the
/// server's.
fn allocations() -> u64 {
    let stats = GLOBAL.stats();
    (stats.allocations + stats.reallocations) as u64
}

/// The scenarios share the counter: they run one at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Every read gives up after this long, so a broken server fails the test instead of hanging.
const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// The server in this process, one event loop, on a free loopback port (started once).
fn server() -> SocketAddr {
    static ADDR: OnceLock<SocketAddr> = OnceLock::new();
    *ADDR.get_or_init(start_server)
}

fn start_server() -> SocketAddr {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut config = Config::default();
        config.net.threads = 1;
        let listen = Listen::plain("127.0.0.1:0".parse().unwrap());
        serve(config, listen, |bound| tx.send(bound.plain.unwrap()).unwrap()).unwrap();
    });
    rx.recv_timeout(IO_TIMEOUT).expect("the server starts")
}

fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_nodelay(true).unwrap();
    stream
}

/// Opens a WebSocket on `path`; returns it once the 101 head is read (nothing follows it here).
fn upgrade(addr: SocketAddr, path: &str) -> TcpStream {
    let mut stream = connect(addr);
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    stream.write_all(req.as_bytes()).unwrap();
    let head = read_head(&mut stream);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    stream
}

/// Reads one response head byte by byte (so nothing after it is consumed).
fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).expect("read a response head");
        head.push(byte[0]);
    }
    String::from_utf8(head).unwrap()
}

/// Reads one unmasked server frame into `buf` (reused); returns its opcode and payload range.
fn read_frame(stream: &mut TcpStream, buf: &mut Vec<u8>) -> (OpCode, std::ops::Range<usize>) {
    buf.clear();
    buf.resize(2, 0);
    stream.read_exact(&mut buf[..2]).unwrap();
    let extra = match buf[1] & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    buf.resize(2 + extra, 0);
    stream.read_exact(&mut buf[2..]).unwrap();
    let (header, len) = FrameHeader::parse(buf).unwrap().expect("a whole header");
    let total = len + header.payload_len as usize;
    buf.resize(total, 0);
    stream.read_exact(&mut buf[len..]).unwrap();
    (header.opcode, len..total)
}

/// Echoes `rounds` batches of `in_flight` messages on each connection; each batch is written in
/// one call (so the server's reads cut frames at arbitrary points) and read back whole.
fn echo_rounds(conns: &mut [TcpStream], batch: &[u8], expected: &[u8], back: &mut [u8], rounds: usize) {
    for _ in 0..rounds {
        for conn in conns.iter_mut() {
            conn.write_all(batch).unwrap();
        }
        for conn in conns.iter_mut() {
            conn.read_exact(back).unwrap();
            assert!(back == expected, "the echo differs from what was sent");
        }
    }
}

/// Allocations a window may count without a single message or delivery allocating: the loop's
/// pools (the `Cork`'s spare outputs, the reader's `Spares`) grow once when a window reaches a
/// new high-water mark of connections served at once, which a loaded machine can make happen
/// after the warm-up. One allocation per message would count thousands.
const POOL_GROWTH_ALLOWANCE: u64 = 16;

/// Allocations the server makes while echoing at `size` bytes, and the messages echoed.
fn echo_allocations(addr: SocketAddr, opcode: OpCode, size: usize) -> (u64, usize) {
    const CONNECTIONS: usize = 4;
    const IN_FLIGHT: usize = 8;
    const WARM_UP_ROUNDS: usize = 50;
    const ROUNDS: usize = 250;
    let payload: Vec<u8> = (0..size).map(|i| b'a' + (i % 26) as u8).collect();
    let (mut batch, mut expected) = (Vec::new(), Vec::new());
    for i in 0..IN_FLIGHT {
        let mask = [i as u8, 0x5a, 0xa5, 0x3c];
        encode_frame(true, opcode, &payload, Some(mask), &mut batch);
        encode_frame(true, opcode, &payload, None, &mut expected);
    }
    let mut conns: Vec<TcpStream> = (0..CONNECTIONS).map(|_| upgrade(addr, "/echo")).collect();
    let mut back = vec![0u8; expected.len()];
    echo_rounds(&mut conns, &batch, &expected, &mut back, WARM_UP_ROUNDS);
    let before = allocations();
    echo_rounds(&mut conns, &batch, &expected, &mut back, ROUNDS);
    let after = allocations();
    (after - before, CONNECTIONS * IN_FLIGHT * ROUNDS)
}

#[test]
fn echo_allocates_nothing_per_message() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let addr = server();
    let mut failures = Vec::new();
    for opcode in [OpCode::Binary, OpCode::Text] {
        for size in [32, 125, 126, 1024, 4096, 16 * 1024] {
            let (allocations, messages) = echo_allocations(addr, opcode, size);
            let per_message = allocations as f64 / messages as f64;
            eprintln!("echo {opcode:?} {size} B: {allocations} allocations for {messages} messages ({per_message:.4} each)");
            if allocations > POOL_GROWTH_ALLOWANCE {
                failures.push(format!("{opcode:?} {size} B: {per_message:.4}"));
            }
        }
    }
    assert!(failures.is_empty(), "the echo allocates per message (target 0): {failures:?}");
}

/// A keep-alive HTTP publisher on one connection.
struct Publisher {
    stream: TcpStream,
    request: Vec<u8>,
}

impl Publisher {
    fn new(addr: SocketAddr, channel: &str, body: &[u8]) -> Publisher {
        let mut request = format!(
            "POST /channels/{channel} HTTP/1.1\r\nHost: t\r\nContent-Type: application/octet-stream\r\n\
             Content-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        request.extend_from_slice(body);
        Publisher { stream: connect(addr), request }
    }

    /// Publishes once and reads the `201` and its body into `buf` (reused: no allocation).
    fn publish(&mut self, buf: &mut Vec<u8>) {
        self.stream.write_all(&self.request).unwrap();
        buf.clear();
        let mut byte = [0u8; 1];
        while !buf.ends_with(b"\r\n\r\n") {
            self.stream.read_exact(&mut byte).expect("read a response head");
            buf.push(byte[0]);
        }
        assert!(buf.starts_with(b"HTTP/1.1 201"), "{}", String::from_utf8_lossy(buf));
        let name = b"content-length:";
        let at =
            buf.windows(name.len()).position(|w| w.eq_ignore_ascii_case(name)).expect("a Content-Length");
        let length = buf[at + name.len()..]
            .iter()
            .skip_while(|b| **b == b' ')
            .take_while(|b| b.is_ascii_digit())
            .fold(0usize, |n, b| n * 10 + usize::from(b - b'0'));
        let mut body = [0u8; 256];
        self.stream.read_exact(&mut body[..length]).unwrap();
    }
}

/// Allocations the server makes while `messages` publishes reach `subscribers` WebSockets.
fn fanout_allocations(addr: SocketAddr, channel: &str, subscribers: usize, messages: usize) -> u64 {
    let body = [b'x'; 64];
    let mut subs: Vec<TcpStream> =
        (0..subscribers).map(|_| upgrade(addr, &format!("/channels/{channel}"))).collect();
    let mut publisher = Publisher::new(addr, channel, &body);
    let (mut frame, mut head) = (Vec::with_capacity(1024), Vec::with_capacity(1024));
    let mut round = |subs: &mut [TcpStream]| {
        publisher.publish(&mut head);
        for sub in subs.iter_mut() {
            let (opcode, payload) = read_frame(sub, &mut frame);
            assert_eq!(opcode, OpCode::Binary);
            assert_eq!(&frame[payload], &body[..]);
        }
    };
    // A subscription is live once its first delivery arrives; then warm up.
    for _ in 0..50 {
        round(&mut subs);
    }
    let before = allocations();
    for _ in 0..messages {
        round(&mut subs);
    }
    allocations() - before
}

#[test]
fn fanout_allocates_nothing_per_subscriber_per_delivery() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let addr = server();
    const MESSAGES: usize = 200;
    const FEW: usize = 2;
    const MANY: usize = 64;
    let few = fanout_allocations(addr, "alloc-few", FEW, MESSAGES);
    let many = fanout_allocations(addr, "alloc-many", MANY, MESSAGES);
    let per_publish = few as f64 / MESSAGES as f64;
    let per_extra_delivery = many.saturating_sub(few) as f64 / (MESSAGES * (MANY - FEW)) as f64;
    eprintln!(
        "fan-out: {per_publish:.2} allocations per publish to {FEW} subscribers, {:.2} to {MANY}; \
         {per_extra_delivery:.4} per subscriber per delivery",
        many as f64 / MESSAGES as f64
    );
    assert!(
        many.saturating_sub(few) <= POOL_GROWTH_ALLOWANCE,
        "fan-out allocates per subscriber per delivery (target 0): {per_extra_delivery:.4}"
    );
}
