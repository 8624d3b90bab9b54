//! `client::Subscriber` against the real server through a cutting proxy, on loopback: for every
//! transport, a connection cut mid-stream (FIN, and RST by `SO_LINGER` 0) while messages are
//! published is resumed from the cursor so that every message arrives exactly once and in
//! order; with a history of 2 messages and 10 published while cut, the subscriber reports a gap
//! and continues with what the history still holds.
//!
//! Every wait has a deadline; the proxy's threads end with it.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use pushwire::client::{
    Backoff, Item, Payload, PublishOptions, Publisher, SubscribeOptions, Subscriber, Timeouts, Transport,
};
use pushwire::hub::Cursor;

use common::{Server, IO_TIMEOUT};

/// How a proxied connection is cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cut {
    /// Both sockets shut down and closed: the client reads EOF.
    Fin,
    /// The client's socket closed with `SO_LINGER` 0: the client gets a reset.
    Rst,
}

struct ProxyState {
    upstream: SocketAddr,
    /// New connections are closed at once while set.
    blocked: AtomicBool,
    /// Bumped by each cut; connections opened before it end.
    generation: AtomicU64,
    rst: AtomicBool,
    stop: AtomicBool,
    accepted: AtomicUsize,
    /// Connections being copied right now.
    active: AtomicUsize,
}

/// A TCP proxy between the subscriber and the server that can cut its connections.
struct Proxy {
    addr: SocketAddr,
    state: Arc<ProxyState>,
}

impl Proxy {
    fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(ProxyState {
            upstream,
            blocked: AtomicBool::new(false),
            generation: AtomicU64::new(0),
            rst: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            accepted: AtomicUsize::new(0),
            active: AtomicUsize::new(0),
        });
        let shared = Arc::clone(&state);
        std::thread::spawn(move || {
            // Bounded by `stop`, set when the proxy is dropped.
            while !shared.stop.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((client, _)) => {
                        client.set_nonblocking(false).unwrap();
                        if shared.blocked.load(Ordering::SeqCst) {
                            continue; // dropped: closed at once
                        }
                        shared.accepted.fetch_add(1, Ordering::SeqCst);
                        let Ok(server) = TcpStream::connect(shared.upstream) else { continue };
                        let state = Arc::clone(&shared);
                        state.active.fetch_add(1, Ordering::SeqCst);
                        std::thread::spawn(move || {
                            pump(client, server, &state);
                            state.active.fetch_sub(1, Ordering::SeqCst);
                        });
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(2))
                    }
                    Err(_) => return,
                }
            }
        });
        Proxy { addr, state }
    }

    fn url(&self, channel: &str) -> String {
        format!("http://{}/channels/{channel}", self.addr)
    }

    fn block(&self, blocked: bool) {
        self.state.blocked.store(blocked, Ordering::SeqCst);
    }

    /// Cuts every open connection and returns once they are closed; call it blocked, so no
    /// new connection is counted as open.
    fn cut(&self, how: Cut) {
        self.state.rst.store(how == Cut::Rst, Ordering::SeqCst);
        self.state.generation.fetch_add(1, Ordering::SeqCst);
        let deadline = std::time::Instant::now() + IO_TIMEOUT;
        while self.state.active.load(Ordering::SeqCst) > 0 {
            assert!(std::time::Instant::now() < deadline, "the proxy's connections did not end");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn accepted(&self) -> usize {
        self.state.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        self.state.generation.fetch_add(1, Ordering::SeqCst);
    }
}

/// Copies bytes both ways until either side ends or a cut comes.
fn pump(client: TcpStream, server: TcpStream, state: &ProxyState) {
    let generation = state.generation.load(Ordering::SeqCst);
    let poll = Some(Duration::from_millis(2));
    for s in [&client, &server] {
        s.set_read_timeout(poll).unwrap();
        s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        s.set_nodelay(true).unwrap();
    }
    let mut buf = vec![0u8; 64 * 1024];
    let (mut from_client, mut from_server) = (&client, &server);
    // Bounded: ends on EOF, an error, a cut or the proxy's drop.
    loop {
        if state.generation.load(Ordering::SeqCst) != generation {
            if state.rst.load(Ordering::SeqCst) {
                // SO_LINGER with a zero timeout: close() sends RST instead of FIN.
                socket2::SockRef::from(&client).set_linger(Some(Duration::ZERO)).unwrap();
            } else {
                let _ = client.shutdown(std::net::Shutdown::Both);
            }
            return; // both sockets dropped: closed
        }
        for (from, to) in [(&mut from_client, &server), (&mut from_server, &client)] {
            match from.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    if (&*to).write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => return,
            }
        }
    }
}

/// A subscriber on its own thread, its items on a channel so every wait has a deadline.
fn subscribe(url: String, transport: Transport, since: Cursor) -> mpsc::Receiver<Item> {
    let options = SubscribeOptions {
        transport,
        since: Some(since),
        timeouts: Timeouts { read: IO_TIMEOUT, ..Timeouts::default() },
        backoff: Backoff { base: Duration::from_millis(20), cap: Duration::from_millis(200) },
        poll_interval: Duration::from_millis(50),
        long_poll_wait: Duration::from_secs(5),
        ..SubscribeOptions::default()
    };
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut sub = Subscriber::connect(&url, options).expect("first connection");
        // Bounded: ends when the test drops the receiver (after the next item).
        loop {
            let item = sub.recv().expect("subscriber gave up");
            if tx.send(item).is_err() {
                return;
            }
        }
    });
    rx
}

fn publisher(server: &Server) -> Publisher {
    Publisher::connect(&format!("http://{}/channels/c", server.addr), PublishOptions::default()).unwrap()
}

fn text(s: &str) -> Payload {
    Payload::Text(s.to_string())
}

/// The next message's text, failing on a gap or after the deadline.
fn next_text(items: &mpsc::Receiver<Item>) -> (Cursor, String) {
    match items.recv_timeout(IO_TIMEOUT).expect("an item in time") {
        Item::Message { id, payload: Payload::Text(t), .. } => (id, t),
        other => panic!("expected a text message, got {other:?}"),
    }
}

fn server_flags(history: &str) -> Vec<&str> {
    vec!["--threads", "1", "--sse-retry", "0.05", "--history-messages", history]
}

/// Publishes 5 and reads them, publishes 5 more and cuts at once (some are in flight), keeps
/// the proxy closed while 5 more are published, then expects the 10 after the first 5, each
/// exactly once and in order, and nothing more.
fn resume_exactly_once(transport: Transport, how: Cut) {
    let server = Server::start(&server_flags("1000"));
    let proxy = Proxy::start(server.addr);
    let mut publisher = publisher(&server);
    let start = publisher.publish(&text("m0"), None).unwrap();
    let items = subscribe(proxy.url("c"), transport, start);
    let mut published = Vec::new();
    for i in 1..=5 {
        published.push(publisher.publish(&text(&format!("m{i}")), None).unwrap());
    }
    for i in 1..=5 {
        assert_eq!(next_text(&items), (published[i - 1], format!("m{i}")));
    }
    for i in 6..=10 {
        published.push(publisher.publish(&text(&format!("m{i}")), None).unwrap());
    }
    proxy.block(true);
    proxy.cut(how);
    for i in 11..=15 {
        published.push(publisher.publish(&text(&format!("m{i}")), None).unwrap());
    }
    std::thread::sleep(Duration::from_millis(100));
    proxy.block(false);
    for i in 6..=15 {
        assert_eq!(next_text(&items), (published[i - 1], format!("m{i}")), "{transport:?} {how:?}");
    }
    assert!(proxy.accepted() >= 2, "{transport:?} {how:?}: the subscriber never reconnected");
    // Nothing is repeated after the resumption.
    assert!(items.recv_timeout(Duration::from_millis(300)).is_err());
}

/// With 2 messages of history and 10 published while cut, the subscriber reports a gap and
/// continues with the 2 the history holds.
fn gap_when_history_is_exceeded(transport: Transport) {
    let server = Server::start(&server_flags("2"));
    let proxy = Proxy::start(server.addr);
    let mut publisher = publisher(&server);
    let start = publisher.publish(&text("m0"), None).unwrap();
    let items = subscribe(proxy.url("c"), transport, start);
    let first = publisher.publish(&text("m1"), None).unwrap();
    assert_eq!(next_text(&items), (first, "m1".to_string()));
    proxy.block(true);
    proxy.cut(Cut::Fin);
    let mut published = Vec::new();
    for i in 2..=11 {
        published.push(publisher.publish(&text(&format!("m{i}")), None).unwrap());
    }
    std::thread::sleep(Duration::from_millis(100));
    proxy.block(false);
    match items.recv_timeout(IO_TIMEOUT).expect("a gap in time") {
        Item::Gap { next, .. } => assert_eq!(next, published[7], "{transport:?}: resumes before m10"),
        other => panic!("{transport:?}: expected a gap, got {other:?}"),
    }
    assert_eq!(next_text(&items), (published[8], "m10".to_string()));
    assert_eq!(next_text(&items), (published[9], "m11".to_string()));
    assert!(items.recv_timeout(Duration::from_millis(300)).is_err());
}

#[test]
fn websocket_resumes_after_fin_exactly_once() {
    resume_exactly_once(Transport::WebSocket, Cut::Fin);
}

#[test]
fn websocket_resumes_after_rst_exactly_once() {
    resume_exactly_once(Transport::WebSocket, Cut::Rst);
}

#[test]
fn html_sse_resumes_after_fin_exactly_once() {
    resume_exactly_once(Transport::Sse, Cut::Fin);
}

#[test]
fn html_sse_resumes_after_rst_exactly_once() {
    resume_exactly_once(Transport::Sse, Cut::Rst);
}

#[test]
fn stream_resumes_after_fin_exactly_once() {
    resume_exactly_once(Transport::Stream, Cut::Fin);
}

#[test]
fn stream_resumes_after_rst_exactly_once() {
    resume_exactly_once(Transport::Stream, Cut::Rst);
}

#[test]
fn long_poll_resumes_after_fin_exactly_once() {
    resume_exactly_once(Transport::LongPoll, Cut::Fin);
}

#[test]
fn long_poll_resumes_after_rst_exactly_once() {
    resume_exactly_once(Transport::LongPoll, Cut::Rst);
}

#[test]
fn short_poll_resumes_after_fin_exactly_once() {
    resume_exactly_once(Transport::Poll, Cut::Fin);
}

#[test]
fn short_poll_resumes_after_rst_exactly_once() {
    resume_exactly_once(Transport::Poll, Cut::Rst);
}

#[test]
fn websocket_reports_gap_when_history_is_exceeded() {
    gap_when_history_is_exceeded(Transport::WebSocket);
}

#[test]
fn html_sse_reports_gap_when_history_is_exceeded() {
    gap_when_history_is_exceeded(Transport::Sse);
}

#[test]
fn stream_reports_gap_when_history_is_exceeded() {
    gap_when_history_is_exceeded(Transport::Stream);
}

#[test]
fn long_poll_reports_gap_when_history_is_exceeded() {
    gap_when_history_is_exceeded(Transport::LongPoll);
}

#[test]
fn short_poll_reports_gap_when_history_is_exceeded() {
    gap_when_history_is_exceeded(Transport::Poll);
}
