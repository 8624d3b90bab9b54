//! Chaos: 200 subscribers spread over all five transports on one channel, a publisher sending
//! 2,500 messages (and every fifth round one more on a second channel, 500 in all, which a
//! quarter of the subscribers also hold: `/channels/chaos,chaos2` on one connection, resuming
//! with the composite cursor), and a fault injector between the subscribers and the server that cuts
//! random connections (FIN and RST) and makes a fifth of them read slowly (so the server closes
//! them as slow consumers). Every subscriber is the library's `Subscriber`, which reconnects
//! and resumes from its cursor.
//!
//! With a history large enough, every subscriber must end with every message exactly once and
//! in order. With a small history, the only deviation allowed is an explicit gap: offsets still
//! increase, and every jump is announced by a gap item naming where the stream continues.
//!
//! Bounded: the publisher stops at 2,500 messages, the injector stops when the subscribers are
//! done, and a subscriber gives up (failing the test) when it gets no item for 30 s, or after
//! 600 s in all. The publisher sets the pace, so a slow machine makes the test longer, not red.

mod common;

use std::io::{BufReader, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use pushwire::client::{Backoff, Item, SubscribeOptions, Subscriber, Timeouts, Transport};
use pushwire::hub::Cursor;

use common::*;

const SUBSCRIBERS: usize = 200;
const MESSAGES: u64 = 2_500;
/// Messages on the second channel (one every fifth round).
const MESSAGES2: u64 = MESSAGES / 5;
const TRANSPORTS: [Transport; 5] =
    [Transport::WebSocket, Transport::Sse, Transport::Stream, Transport::LongPoll, Transport::Poll];
/// How long a subscriber may go without an item before it counts as stuck. The publisher sets
/// the pace (about 20 ms a message on CI's 2 cores, twice that on a loaded machine), so the
/// test fails on a lack of progress rather than on a slow machine.
const STALL: Duration = Duration::from_secs(30);
/// The most a subscriber may take in all, so the test stops by itself.
const DEADLINE: Duration = Duration::from_secs(600);

/// A proxy in front of the server whose connections the injector can cut; a slow proxy also
/// delivers the server's bytes in small sips through a small receive window.
struct FaultyProxy {
    addr: SocketAddr,
    /// The client-side sockets of open connections (clones), for the injector.
    open: Arc<Mutex<Vec<TcpStream>>>,
    stop: Arc<AtomicBool>,
    cuts: Arc<AtomicU64>,
}

impl FaultyProxy {
    fn start(upstream: SocketAddr, slow: bool) -> FaultyProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let open = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (open2, stop2) = (open.clone(), stop.clone());
        thread::spawn(move || {
            while !stop2.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((client, _)) => {
                        client.set_nonblocking(false).unwrap();
                        let Some(server) = connect_upstream(upstream, slow) else { continue };
                        open2.lock().unwrap().push(client.try_clone().unwrap());
                        let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                        thread::spawn(move || copy(client, server, None));
                        // A slow reader stops for 3 s after each second of reading: long enough
                        // for its backlog to pass the server's bound even when a loaded machine
                        // publishes at a fifth of CI's pace.
                        thread::spawn(move || copy(s2, c2, slow.then_some(Duration::from_secs(3))));
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => thread::sleep(Duration::from_millis(1)),
                    Err(_) => return,
                }
            }
        });
        FaultyProxy { addr, open, stop, cuts: Arc::new(AtomicU64::new(0)) }
    }
}

/// Cuts one of `open` at random: half with FIN, half with RST.
fn cut_one(open: &Mutex<Vec<TcpStream>>, cuts: &AtomicU64, seed: &mut u64) {
    let mut open = open.lock().unwrap();
    if open.is_empty() {
        return;
    }
    let index = (xorshift(seed) % open.len() as u64) as usize;
    let victim = open.swap_remove(index);
    drop(open);
    if xorshift(seed).is_multiple_of(2) {
        let _ = victim.shutdown(Shutdown::Both); // FIN
    } else {
        // SO_LINGER 0 then close: RST. Waking the copy threads by shutting their read sides
        // sends nothing; when the last clone is dropped, the socket resets.
        let _ = socket2::SockRef::from(&victim).set_linger(Some(Duration::ZERO));
        let _ = victim.shutdown(Shutdown::Read);
    }
    cuts.fetch_add(1, Ordering::SeqCst);
}

impl Drop for FaultyProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for s in self.open.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

fn connect_upstream(upstream: SocketAddr, slow: bool) -> Option<TcpStream> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).ok()?;
    if slow {
        // A small window, so the server's own send bound is what fills up.
        socket.set_recv_buffer_size(4096).ok()?;
    }
    socket.connect(&upstream.into()).ok()?;
    Some(socket.into())
}

/// Copies `from` to `to` until either ends; with `stall`, a reader that stops for that long
/// after every second of reading (a paused tab, a GC pause, a radio asleep), so the server's
/// send bound fills up while the publisher goes on.
fn copy(mut from: TcpStream, mut to: TcpStream, stall: Option<Duration>) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut reading_since = Instant::now();
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
        if let Some(pause) = stall {
            if reading_since.elapsed() > Duration::from_secs(1) {
                thread::sleep(pause);
                reading_since = Instant::now();
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
    let _ = from.shutdown(Shutdown::Read);
}

fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// What one subscriber saw: each message's offset, and each gap's `next` offset, in order.
#[derive(Debug, Default)]
struct Seen {
    items: Vec<(bool, u64)>, // (is_gap, offset)
    /// The second channel's, for a multi-channel subscriber.
    items2: Option<Vec<(bool, u64)>>,
    reconnects: u64,
}

fn run_subscriber(
    url: String,
    transport: Transport,
    since: Cursor,
    since2: Option<Cursor>,
    done: Arc<AtomicU64>,
) -> Result<Seen, String> {
    let options = SubscribeOptions {
        transport,
        since: Some(since),
        since_each: since2.map(|s2| vec![Some(since), Some(s2)]).unwrap_or_default(),
        timeouts: Timeouts { read: Duration::from_secs(5), ..Timeouts::default() },
        backoff: Backoff { base: Duration::from_millis(10), cap: Duration::from_millis(300) },
        poll_interval: Duration::from_millis(30),
        long_poll_wait: Duration::from_secs(2),
        ..SubscribeOptions::default()
    };
    let start = Instant::now();
    // The library returns the first connection's error as it is (a wrong URL should not be
    // retried forever); here the injector may cut that one too, so try again like an app would.
    let mut attempts = 0;
    let mut sub = loop {
        match Subscriber::connect(&url, options.clone()) {
            Ok(sub) => break sub,
            Err(_) if attempts < 20 => {
                attempts += 1;
                thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(format!("{transport:?}: connect: {e}")),
        }
    };
    let mut seen = Seen { items2: since2.map(|_| Vec::new()), ..Seen::default() };
    let (mut last, mut last2) = (0, if since2.is_some() { 0 } else { MESSAGES2 });
    loop {
        let asked = Instant::now();
        let item = sub.recv().map_err(|e| format!("{transport:?}: {e}"))?;
        let waited = asked.elapsed();
        if waited > STALL || start.elapsed() > DEADLINE {
            let items = seen.items.len();
            return Err(format!("{transport:?}: {items} items, then none for {waited:?}"));
        }
        match item {
            Item::Message { channel, id, .. } => {
                if channel.as_deref() == Some("chaos2") {
                    seen.items2.get_or_insert_default().push((false, id.offset));
                    last2 = id.offset;
                } else {
                    seen.items.push((false, id.offset));
                    last = id.offset;
                }
                if last == MESSAGES && last2 == MESSAGES2 {
                    break;
                }
            }
            Item::Gap { channel, next } if channel.as_deref() == Some("chaos2") => {
                seen.items2.get_or_insert_default().push((true, next.offset))
            }
            Item::Gap { next, .. } => seen.items.push((true, next.offset)),
        }
    }
    seen.reconnects = sub.reconnects();
    done.fetch_add(1, Ordering::SeqCst);
    Ok(seen)
}

/// Runs the whole scenario; returns what each subscriber saw, with its transport.
fn chaos(history: &str) -> Vec<(Transport, Seen)> {
    let server = Server::start(&[
        "--history-messages",
        history,
        "--max-send-buffer-bytes",
        "4096",
        // Without it, the kernel's autotuned send buffer (up to 4 MiB) absorbs a stalled
        // reader's backlog before the server's own bound does.
        "--socket-send-buffer-bytes",
        "8192",
        "--max-connections-per-ip",
        "5000",
        "--longpoll-max-wait",
        "2",
    ]);
    let since = Cursor::parse(&json_field(&poll(&server, "chaos", None).text(), "next").unwrap()).unwrap();
    let since2 = Cursor::parse(&json_field(&poll(&server, "chaos2", None).text(), "next").unwrap()).unwrap();
    let proxies = [FaultyProxy::start(server.addr, false), FaultyProxy::start(server.addr, true)];
    let done = Arc::new(AtomicU64::new(0));
    let subscribers: Vec<_> = (0..SUBSCRIBERS)
        .map(|i| {
            let transport = TRANSPORTS[i % TRANSPORTS.len()];
            // Every fifth subscriber (of each transport) reads slowly.
            let proxy = &proxies[usize::from((i / TRANSPORTS.len()).is_multiple_of(5))];
            // A quarter of each transport's subscribers hold both channels on one connection.
            let multi = (i / TRANSPORTS.len()) % 4 == 1;
            let path = if multi { "chaos,chaos2" } else { "chaos" };
            let url = format!("http://{}/channels/{path}", proxy.addr);
            let since2 = multi.then_some(since2);
            let done = done.clone();
            (transport, thread::spawn(move || run_subscriber(url, transport, since, since2, done)))
        })
        .collect();

    // The fault injector: a cut every few milliseconds until every subscriber is done.
    let stop_injector = Arc::new(AtomicBool::new(false));
    let injector = {
        let stop = stop_injector.clone();
        // Faults on some connections, slowness on others: only the fast proxy's are cut.
        let proxies = [(proxies[0].open.clone(), proxies[0].cuts.clone())];
        thread::spawn(move || {
            let mut seed = 0x9e37_79b9_7f4a_7c15u64;
            let start = Instant::now();
            while !stop.load(Ordering::SeqCst) && start.elapsed() < DEADLINE {
                thread::sleep(Duration::from_millis(10));
                for (open, cuts) in &proxies {
                    cut_one(open, cuts, &mut seed);
                }
            }
        })
    };

    // The publisher, straight to the server on one keep-alive connection.
    let mut conn = server.connect();
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    for i in 1..=MESSAGES {
        // 200 bytes, so a stalled reader's backlog outgrows the buffers in its way.
        let body = format!("m{i:-<199}");
        conn.write_all(publish_request("chaos", &body).as_bytes()).unwrap();
        assert_eq!(read_response(&mut reader, false).status, 201);
        if i % 5 == 0 {
            conn.write_all(publish_request("chaos2", &body).as_bytes()).unwrap();
            assert_eq!(read_response(&mut reader, false).status, 201);
        }
    }

    let results: Vec<_> = subscribers.into_iter().map(|(t, h)| (t, h.join().unwrap())).collect();
    stop_injector.store(true, Ordering::SeqCst);
    injector.join().unwrap();
    let cuts: u64 = proxies.iter().map(|p| p.cuts.load(Ordering::SeqCst)).sum();
    let failures: Vec<_> = results.iter().filter_map(|(_, r)| r.as_ref().err()).collect();
    assert!(failures.is_empty(), "{} subscribers failed: {failures:#?}", failures.len());
    let results: Vec<_> = results.into_iter().map(|(t, r)| (t, r.unwrap())).collect();
    let reconnects: u64 = results.iter().map(|(_, s)| s.reconnects).sum();
    assert!(cuts > 100, "the injector cut only {cuts} connections");
    assert!(reconnects > 100, "subscribers reconnected only {reconnects} times");
    // The slow readers made the server close slow consumers (who then resumed).
    let metrics = metrics_text(&server);
    let slow: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("pushwire_slow_consumer_closes_total "))
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(slow > 0, "no slow consumer was closed: the slow readers were not slow enough");
    eprintln!("chaos (history {history}): {cuts} cuts, {reconnects} reconnects, {slow} slow-consumer closes");
    results
}

#[test]
fn chaos_with_enough_history_every_subscriber_gets_every_message_exactly_once_in_order() {
    let results = chaos("10000");
    let exact = |items: &[(bool, u64)], total: u64| {
        items.iter().map(|&(gap, o)| if gap { u64::MAX } else { o }).eq(1..=total)
    };
    for (transport, seen) in &results {
        assert!(
            exact(&seen.items, MESSAGES),
            "{transport:?}: not exactly 1..={MESSAGES} in order: gap or hole"
        );
        if let Some(items2) = &seen.items2 {
            assert!(exact(items2, MESSAGES2), "{transport:?}: chaos2 not exactly 1..={MESSAGES2} in order");
        }
    }
    let multi = results.iter().filter(|(_, s)| s.items2.is_some()).count();
    assert!(multi >= SUBSCRIBERS / 5, "only {multi} multi-channel subscribers");
}

#[test]
fn chaos_with_a_small_history_the_only_deviation_is_an_explicit_gap() {
    let results = chaos("50");
    let mut gaps = 0;
    // Per channel: offsets increase by one, or jump only right after a gap naming the jump.
    let mut check = |transport: &Transport, items: &[(bool, u64)], total: u64| {
        let mut last = 0u64;
        let mut announced: Option<u64> = None;
        for &(gap, offset) in items {
            if gap {
                assert!(offset >= last, "{transport:?}: a gap going backwards");
                announced = Some(offset);
                gaps += 1;
                continue;
            }
            let expected = announced.take().unwrap_or(last) + 1;
            assert_eq!(offset, expected, "{transport:?}: after {last}, {offset} without a gap announcing it");
            last = offset;
        }
        assert_eq!(last, total, "{transport:?}: did not reach the last message");
    };
    for (transport, seen) in &results {
        check(transport, &seen.items, MESSAGES);
        if let Some(items2) = &seen.items2 {
            check(transport, items2, MESSAGES2);
        }
    }
    eprintln!("{gaps} gaps signalled");
}
