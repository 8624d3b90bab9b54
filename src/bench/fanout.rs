//! `pushwire bench fanout`: one publisher, many subscribers, every delivery timed and counted.
//!
//! Implements: `-c` subscribers over one transport (WebSocket, SSE, the NDJSON stream or long
//! polling) on the subscribe URL; once every one is subscribed (pushwire: its opening cursor
//! arrived, see README "opens with its cursor"; with `--no-open-cursor`: its response head
//! arrived, then `--settle` seconds pass), a publisher thread POSTs `-k` messages to the publish
//! URL, as fast as the answers come or at `--rate` per second. Each payload carries the run's
//! random id, its sequence number and its publish time ([`super::payload`]), so a delivery is
//! recognized by its payload whatever message ids the server uses, and timed on arrival. The
//! run ends when every subscriber has every message, or `--timeout` seconds after the last
//! publish.
//!
//! Receiving: each client thread polls its subscribers on a 0.2 ms tick while deliveries flow
//! and blocks in its poll once none came for 2 ms (`POLL_TICK`), so that over loopback the
//! server does not pay a wake of the client per delivery.
//!
//! Reports: deliveries per second (first publish to last delivery), delivery latency
//! p50/p99/max, and missing and duplicate deliveries; the run fails if any is missing. The
//! measured window runs from the first publish until every client thread stopped receiving
//! (before any closing handshake): the CPU this process and (`--server-pid`) the server spent
//! in it, the server's CPU-seconds per million deliveries, and (`--server-metrics`) the
//! server's own p50/p99 from publish accepted to each subscriber's write and to a fan-out's
//! last write ([`super::window`]).
//!
//! Peers: the publish and subscribe URLs are separate (`--publish-url`, `--subscribe-url`), e.g.
//! Nchan's `POST /pub?id=NAME` and `GET /sub/NAME` with `--no-open-cursor`.
//!
//! Several nodes: `--subscribe-url` repeated N times spreads the subscribers over N servers
//! (e.g. pushwire nodes sharing one Redis, README "Many nodes"): client thread `t` opens its
//! share at the `(t mod N)`-th URL, so `--threads` must be a multiple of N and each URL gets
//! `-c / N` subscribers (±1 per thread). The publisher still posts to one URL.
//!
//! With `--threads N` the subscribers are spread over N client threads, each with its own poll
//! (the publisher is the main thread); each keeps its own latency histogram and delivery bits,
//! and the histograms are merged exactly at the end (counts per bucket added).
//!
//! Rooms (`--channels-per-subscriber K`, pushwire only): every subscriber holds K channels on
//! its one connection (`/channels/NAME,NAME.1,…,NAME.{K-1}`, README "Several channels on one
//! request") and the publisher sends message `i` to channel `i mod K`, so every subscriber still
//! gets every message while the server keeps K subscriptions per connection and writes the
//! labelled envelope and, over SSE, each connection's own composite `id:`. SSE and long polling
//! only: their first cursor covers every channel (a stream or WebSocket opens each channel with
//! its own line, which this client does not wait for).
//!
//! Rooms at random (`--channels N` with `--channels-per-subscriber K`): the channels are
//! `NAME, NAME.1, …, NAME.{N-1}`; every subscriber holds K distinct ones drawn at random, and
//! each message goes to one drawn at random, so a message reaches about `c × K / N`
//! subscribers (issue #13's "10,000 connections each join 10 of 1,000 channels"). The draws are
//! made once, before opening, from the run's id (SplitMix64), so each subscriber knows which
//! messages it must get: missing and duplicate deliveries are counted exactly as in the other
//! modes.
//!
//! Does not: resume subscribers that drop (a dropped subscriber's messages count as missing).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Barrier, OnceLock};
use std::time::{Duration, Instant};

use super::client::{
    open_all, subscriber_protocols, transport_parser, Clients, Opening, Received, Request, Wire,
};
use super::histogram::Histogram;
use super::payload::find_text;
use super::publisher::publish;
use super::report::Report;
use super::system::{ensure_open_files, source_addrs};
use super::url::Url;
use super::window::{ServerOptions, Window};
use super::{parse_seconds, OPEN_CONCURRENCY};
use crate::protocol::Transport;

/// Options of `pushwire bench fanout`.
#[derive(Debug, Clone, clap::Args)]
pub struct FanoutOptions {
    /// The channel: published to with POST and subscribed to with GET.
    #[arg(long, default_value = "http://127.0.0.1:8080/channels/bench")]
    pub url: String,
    /// Where to POST messages instead of --url (Nchan: http://HOST/pub?id=NAME).
    #[arg(long, value_name = "URL")]
    pub publish_url: Option<String>,
    /// Where subscribers GET instead of --url (Nchan: http://HOST/sub/NAME). Repeat to spread
    /// the subscribers over several servers: client thread t subscribes at the (t mod N)-th
    /// (--threads must be a multiple of N).
    #[arg(long = "subscribe-url", value_name = "URL")]
    pub subscribe_urls: Vec<String>,
    /// How subscribers receive.
    #[arg(long, value_parser = transport_parser(), default_value = "sse")]
    pub transport: Transport,
    /// Subscribers.
    #[arg(short = 'c', long, value_name = "COUNT", default_value_t = 10)]
    pub subscribers: usize,
    /// Messages to publish.
    #[arg(short = 'k', long, value_name = "COUNT", default_value_t = 100)]
    pub messages: u64,
    /// Message size in bytes (at least the marker, about 30 bytes).
    #[arg(long = "size", value_name = "BYTES", default_value_t = 64)]
    pub size_bytes: usize,
    /// Messages published per second (default: as fast as the server answers).
    #[arg(long, value_name = "PER_SECOND")]
    pub rate: Option<f64>,
    /// How long after the last publish to wait for deliveries, in seconds.
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds, default_value = "10")]
    pub timeout: Duration,
    /// The server sends no opening cursor (e.g. Nchan): a subscriber is ready once its response
    /// head arrives; WebSockets then offer no subprotocol.
    #[arg(long)]
    pub no_open_cursor: bool,
    /// Seconds to wait after every subscriber is ready, before publishing.
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds, default_value = "0")]
    pub settle: Duration,
    /// Spread subscribers over this many source addresses 127.0.0.1.. (0: as needed).
    #[arg(long, value_name = "COUNT", default_value_t = 0)]
    pub source_addrs: usize,
    /// Channels each subscriber holds on its one connection: --url's channel and K-1 more
    /// named CHANNEL.1 … (pushwire's `/channels/a,b`); messages go to them in turn. SSE and long
    /// polling only.
    #[arg(long, value_name = "K", default_value_t = 1)]
    pub channels_per_subscriber: usize,
    /// Rooms at random: N channels (--url's and NAME.1 … NAME.{N-1}); each subscriber holds
    /// --channels-per-subscriber of them drawn at random and each message goes to one drawn at
    /// random (0: off, messages go to a subscriber's channels in turn).
    #[arg(long = "channels", value_name = "N", default_value_t = 0)]
    pub channel_pool: usize,
    /// Client threads: the subscribers are spread over them (each its own poll), so that
    /// reading thousands of sockets is not one core's work; their latency histograms are merged.
    #[arg(long, value_name = "COUNT", default_value_t = 1)]
    pub threads: usize,
    /// Publish a JSON document of quotes (which compresses like real JSON) instead of `x`
    /// padding.
    #[arg(long)]
    pub json_payload: bool,
    /// WebSocket subscribers offer permessage-deflate (RFC 7692) and inflate what arrives.
    #[arg(long)]
    pub deflate: bool,
    /// The server under test: its CPU and (pushwire) its delivery latency histograms over the
    /// measured window.
    #[command(flatten)]
    pub server: ServerOptions,
}

/// Whether WebSocket subscribers offered permessage-deflate.
fn selected_deflate(options: &FanoutOptions) -> bool {
    options.deflate && options.transport == Transport::WebSocket
}

/// Most subscriber × message pairs tracked (one bit each: 128 MiB at most).
const MAX_TRACKED_DELIVERIES: u64 = 1 << 30;

impl FanoutOptions {
    fn validate(&self) -> Result<(), String> {
        if !(1..=1_000_000).contains(&self.subscribers) {
            return Err("-c must be between 1 and 1000000".into());
        }
        if self.messages == 0
            || self.messages.saturating_mul(self.subscribers as u64) > MAX_TRACKED_DELIVERIES
        {
            return Err(format!("-k must be at least 1 and -c × -k at most {MAX_TRACKED_DELIVERIES}"));
        }
        if self.size_bytes > 16 * 1024 * 1024 {
            return Err("--size must be at most 16777216 bytes".into());
        }
        if self.rate.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
            return Err("--rate must be a positive number".into());
        }
        if !(1..=64).contains(&self.threads) || self.threads > self.subscribers {
            return Err("--threads must be between 1 and 64, and at most -c".into());
        }
        if self.subscribe_urls.len() > 1 && !self.threads.is_multiple_of(self.subscribe_urls.len()) {
            return Err(format!(
                "--threads must be a multiple of the {} --subscribe-url given (each client thread \
                 subscribes at one of them)",
                self.subscribe_urls.len()
            ));
        }
        if self.timeout > Duration::from_secs(3600) || self.settle > Duration::from_secs(3600) {
            return Err("--timeout and --settle must be at most 3600 seconds".into());
        }
        if !(1..=64).contains(&self.channels_per_subscriber) {
            return Err("--channels-per-subscriber must be between 1 and 64 (the server's limit)".into());
        }
        if self.channel_pool > 0 && !(self.channels_per_subscriber..=100_000).contains(&self.channel_pool) {
            return Err("--channels must be at least --channels-per-subscriber and at most 100000".into());
        }
        if self.channels_per_subscriber > 1 || self.channel_pool > 0 {
            if !matches!(self.transport, Transport::Sse | Transport::LongPoll) {
                return Err("--channels-per-subscriber above 1 needs --transport sse or longpoll".into());
            }
            if self.publish_url.is_some() || !self.subscribe_urls.is_empty() || self.no_open_cursor {
                return Err("--channels-per-subscriber above 1 is for pushwire: only --url".into());
            }
        }
        Ok(())
    }

    /// The publish URLs (one per channel, used in turn) and the subscribe URLs (client thread
    /// `t` uses the `(t mod N)`-th).
    fn urls(&self) -> Result<(Vec<Url>, Vec<Url>), String> {
        let publish = Url::parse(self.publish_url.as_deref().unwrap_or(&self.url))?;
        let subscribe = match self.subscribe_urls.as_slice() {
            [] => vec![Url::parse(&self.url)?],
            urls => urls.iter().map(|u| Url::parse(u)).collect::<Result<Vec<_>, _>>()?,
        };
        let k = self.channels_per_subscriber;
        if k == 1 && self.channel_pool == 0 {
            return Ok((vec![publish], subscribe));
        }
        // Rooms: --url only (checked in `validate`), so one subscribe URL.
        let subscribe = &subscribe[0];
        let names = channel_names(subscribe, k)?;
        let publish =
            names.iter().map(|n| Url { path: format!("/channels/{n}"), ..subscribe.clone() }).collect();
        let subscribe = Url { path: format!("/channels/{}", names.join(",")), ..subscribe.clone() };
        Ok((publish, vec![subscribe]))
    }
}

/// `NAME, NAME.1, …, NAME.{n-1}` for `--url http://HOST/channels/NAME`.
fn channel_names(url: &Url, n: usize) -> Result<Vec<String>, String> {
    let name = url
        .path
        .strip_prefix("/channels/")
        .filter(|n| !n.is_empty() && !n.contains([',', '?', '/']))
        .ok_or("--channels-per-subscriber and --channels need --url http://HOST/channels/NAME")?;
    Ok(std::iter::once(name.to_string()).chain((1..n).map(|i| format!("{name}.{i}"))).collect())
}

/// SplitMix64 (Steele, Lea and Flood, 2014): the draws of a rooms run, reproducible from its id.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Rooms at random: each subscriber's path (its K channels), each message's publish URL, and
/// how many deliveries each subscriber must get.
struct RandomRooms {
    paths: Vec<String>,
    publish: Vec<Url>,
    expected: Vec<u64>,
}

impl RandomRooms {
    fn draw(options: &FanoutOptions, url: &Url, seed: u64) -> Result<RandomRooms, String> {
        let (n, k) = (options.channel_pool, options.channels_per_subscriber);
        let names = channel_names(url, n)?;
        let mut state = seed;
        let mut below = |n: usize| (splitmix64(&mut state) % n as u64) as usize;
        let mut per_channel = vec![0u64; n];
        let publish = (0..options.messages)
            .map(|_| {
                let c = below(n);
                per_channel[c] += 1;
                Url { path: format!("/channels/{}", names[c]), ..url.clone() }
            })
            .collect();
        let mut paths = Vec::with_capacity(options.subscribers);
        let mut expected = Vec::with_capacity(options.subscribers);
        for _ in 0..options.subscribers {
            // K distinct of N (K ≤ 64 ≤ N in practice: a few redraws at most).
            let mut chosen: Vec<usize> = Vec::with_capacity(k);
            while chosen.len() < k {
                let c = below(n);
                if !chosen.contains(&c) {
                    chosen.push(c);
                }
            }
            expected.push(chosen.iter().map(|&c| per_channel[c]).sum());
            let list: Vec<&str> = chosen.iter().map(|&c| names[c].as_str()).collect();
            paths.push(format!("/channels/{}", list.join(",")));
        }
        Ok(RandomRooms { paths, publish, expected })
    }
}

/// Which subscriber got which message: one bit per pair.
struct Deliveries {
    messages: u64,
    bits: Vec<u64>,
}

impl Deliveries {
    fn new(subscribers: usize, messages: u64) -> Deliveries {
        Deliveries { messages, bits: vec![0; (subscribers as u64 * messages).div_ceil(64) as usize] }
    }

    /// Marks `seq` delivered to `subscriber`; false if it already was.
    fn mark(&mut self, subscriber: usize, seq: u64) -> bool {
        let bit = subscriber as u64 * self.messages + seq;
        let (word, mask) = ((bit / 64) as usize, 1u64 << (bit % 64));
        let fresh = self.bits[word] & mask == 0;
        self.bits[word] |= mask;
        fresh
    }
}

/// While deliveries flow (one came less than this ago), a client thread with nothing to read
/// sleeps [`POLL_TICK`] and polls again instead of blocking in the poll; after this long
/// without one it blocks. See [`receive`].
const POLL_TICK_FOR: Duration = Duration::from_millis(2);
/// The sleep between polls while deliveries flow: the most it adds to a measured latency.
const POLL_TICK: Duration = Duration::from_micros(200);

/// What one client thread measured over its share of the subscribers.
struct Share {
    latency: Histogram,
    delivered: u64,
    duplicates: u64,
    closed_early: Vec<String>,
    last_delivery: Option<Instant>,
}

/// What the client threads share: the run's clock, and when (and what) the publisher finished.
struct Run {
    run_id: u64,
    /// Set once every thread's subscribers are ready and publishing starts.
    start: OnceLock<Instant>,
    /// Set when the publisher is done: the messages it published and when it finished.
    published: OnceLock<(u64, Instant)>,
    /// Set when the run is called off (a thread could not open its subscribers, the publisher
    /// failed): every thread stops.
    abandoned: AtomicBool,
    /// Every client thread and the publisher: all subscribers are ready.
    ready: Barrier,
    /// The same: every thread has stopped receiving (the measured window closes).
    received: Barrier,
    /// The same: the window's closing sample is taken, subscribers may close.
    sampled: Barrier,
}

/// The subscribers `first..first + count` of `options`, on their own poll, until every one has
/// every message or the timeout after the last publish.
fn subscribe_share(
    options: &FanoutOptions,
    plan: &Opening<'_>,
    expected: Option<u64>,
    run: &Run,
) -> Result<Share, String> {
    let mut clients = Clients::new().map_err(|e| e.to_string());
    let opened = clients.as_mut().map_err(|e| e.clone()).and_then(|clients| open_all(clients, plan));
    // Every thread reaches each barrier, opened or not, so none waits for ever.
    if opened.is_err() {
        run.abandoned.store(true, Ordering::SeqCst);
    }
    run.ready.wait();
    let share = match (opened, clients.as_mut()) {
        (Ok(_), Ok(clients)) => receive(options, plan.count, expected, clients, run),
        (Err(e), _) => Err(e),
        (_, Err(e)) => Err(e.clone()),
    };
    if share.is_err() {
        run.abandoned.store(true, Ordering::SeqCst);
    }
    // The measured window closes once every thread is here; the closing handshakes come after.
    run.received.wait();
    run.sampled.wait();
    if let (Ok(clients), true) = (clients.as_mut(), options.transport == Transport::WebSocket) {
        super::echo::close_all(clients, plan.count);
    }
    share
}

/// Receives on `clients` (subscribers `0..count` of this thread) from the start of publishing
/// until every one has every message (`expected` deliveries in all with random rooms), the
/// timeout after the last publish, or the run is called off.
fn receive(
    options: &FanoutOptions,
    count: usize,
    expected: Option<u64>,
    clients: &mut Clients,
    run: &Run,
) -> Result<Share, String> {
    let mut received = Vec::new();
    let start = loop {
        if run.abandoned.load(Ordering::SeqCst) {
            return Err("called off".into());
        }
        // Pings are answered while the others open and settle. What arrives in the turn during
        // which publishing starts is kept: it may be the first message.
        clients.turn(Duration::from_millis(20), &mut received).map_err(|e| e.to_string())?;
        if let Some(start) = run.start.get() {
            break *start;
        }
        received.clear();
    };
    let mut deliveries = Deliveries::new(count, options.messages);
    let mut share = Share {
        latency: Histogram::new(),
        delivered: 0,
        duplicates: 0,
        closed_early: Vec::new(),
        last_delivery: None,
    };
    let mut last_news = Instant::now();
    // A thread blocked in its poll is woken by the first bytes for it: over loopback that wake
    // is done by the server's send (it is in the server's CPU time, which a real subscriber
    // across a network never costs it), and a client faster than the server sleeps and wakes
    // once per delivery. Polling on a short tick while deliveries flow, as NIC drivers do with
    // interrupts (NAPI), leaves one wake per tick: 5,000 WebSocket subscribers at 5 messages/s,
    // client CPU 0.36-0.37 against 0.42-0.48 s and the server's last write of a fan-out 36-45
    // against 43-48 ms after the publish, in four A/B pairs; every server is measured so.
    loop {
        let now = Instant::now();
        let done = run.published.get().is_some_and(|&(messages, at)| {
            share.delivered >= expected.unwrap_or(messages * count as u64) || now >= at + options.timeout
        });
        if done || clients.open() == 0 || run.abandoned.load(Ordering::SeqCst) {
            break;
        }
        if received.is_empty() {
            clients.turn(Duration::ZERO, &mut received).map_err(|e| e.to_string())?;
        }
        if received.is_empty() {
            if now.duration_since(last_news) < POLL_TICK_FOR {
                std::thread::sleep(POLL_TICK);
            } else {
                clients.turn(Duration::from_millis(20), &mut received).map_err(|e| e.to_string())?;
            }
        }
        let now = Instant::now();
        if !received.is_empty() {
            last_news = now;
        }
        let now_us = now.duration_since(start).as_micros() as u64;
        for (index, news) in received.drain(..) {
            match news {
                Received::Data(data) => {
                    for (seq, sent_us) in find_text(run.run_id, &data) {
                        if seq >= options.messages {
                            continue;
                        }
                        if deliveries.mark(index, seq) {
                            share.delivered += 1;
                            share.latency.record(now_us.saturating_sub(sent_us));
                            share.last_delivery = Some(now);
                        } else {
                            share.duplicates += 1;
                        }
                    }
                }
                Received::Closed(reason) => share.closed_early.push(format!("subscriber {index}: {reason}")),
                Received::Opened | Received::Cursor => {}
            }
        }
    }
    Ok(share)
}

/// Runs the fan-out benchmark; `Err` when it could not run at all.
pub fn run(options: &FanoutOptions) -> Result<Report, String> {
    options.validate()?;
    let (mut publish_urls, subscribe_urls) = options.urls()?;
    let run_id: u64 = rand::random::<u32>().into();
    let rooms = match options.channel_pool {
        0 => None,
        _ => Some(RandomRooms::draw(options, &Url::parse(&options.url)?, run_id)?),
    };
    if let Some(rooms) = &rooms {
        publish_urls.clone_from(&rooms.publish);
    }
    let publish_url = &publish_urls[0];
    for url in &subscribe_urls {
        url.require_plain("fanout")?;
    }
    for url in &publish_urls {
        url.require_plain("fanout")?;
    }
    let window = Window::new(&options.server)?;
    ensure_open_files(options.subscribers)?;
    let wait_for_cursor = !options.no_open_cursor;
    // Per subscribe URL: the request its subscribers make, and the source addresses they use.
    let targets: Vec<(Request, Vec<std::net::IpAddr>)> = subscribe_urls
        .iter()
        .map(|url| {
            let request = Request {
                wire: Wire::Push(options.transport),
                host: url.host.clone(),
                path: url.path.clone(),
                protocols: subscriber_protocols(options.transport, wait_for_cursor),
                // A long poll answer holds a batch of messages in JSON.
                max_message_bytes: (options.size_bytes * 2 + 1024) * 128,
                deflate: options.deflate,
                tls: None,
            };
            let per_url = options.subscribers.div_ceil(subscribe_urls.len());
            (request, source_addrs(url.addr, per_url, options.source_addrs))
        })
        .collect();
    let run = Run {
        run_id,
        start: OnceLock::new(),
        published: OnceLock::new(),
        abandoned: AtomicBool::new(false),
        ready: Barrier::new(options.threads + 1),
        received: Barrier::new(options.threads + 1),
        sampled: Barrier::new(options.threads + 1),
    };
    // Each thread opens its share at the same rate limit, so the server's accept queue sees
    // at most `threads` × OPEN_CONCURRENCY connections opening.
    let opening_began = Instant::now();
    let (shares, published) = std::thread::scope(|scope| {
        let mut first = 0;
        let workers: Vec<_> = (0..options.threads)
            .map(|t| {
                let count = options.subscribers / options.threads
                    + usize::from(t < options.subscribers % options.threads);
                let share = first..first + count;
                first += count;
                let (paths, expected) = match &rooms {
                    Some(rooms) => (&rooms.paths[share.clone()], Some(rooms.expected[share].iter().sum())),
                    None => (&[][..], None),
                };
                let target = t % subscribe_urls.len();
                let (request, sources) = &targets[target];
                let plan = Opening {
                    addr: subscribe_urls[target].addr,
                    request,
                    paths,
                    count,
                    sources,
                    concurrency: OPEN_CONCURRENCY,
                    wait_for_cursor,
                    timeout: Duration::from_secs(10) + Duration::from_millis(options.subscribers as u64),
                };
                let run = &run;
                scope.spawn(move || subscribe_share(options, &plan, expected, run))
            })
            .collect();
        run.ready.wait();
        let opened_in = opening_began.elapsed();
        let published = if run.abandoned.load(Ordering::SeqCst) {
            Err("a client thread could not open its subscribers".to_string())
        } else {
            std::thread::sleep(options.settle);
            let opened = window.open();
            let start = Instant::now();
            let _ = run.start.set(start);
            let (count, size, json, rate) =
                (options.messages, options.size_bytes, options.json_payload, options.rate);
            let result = opened.and_then(|opened| {
                publish(&publish_urls, run.run_id, count, size, json, rate, start, &run.abandoned)
                    .map(|p| (p, opened))
            });
            match &result {
                Ok((p, _)) => {
                    let _ = run.published.set((p.messages, Instant::now()));
                }
                Err(_) => run.abandoned.store(true, Ordering::SeqCst),
            }
            result.map(|(p, opened)| (p, start, opened_in, opened))
        };
        // Every client thread has stopped receiving: the window closes before any closing
        // handshake.
        run.received.wait();
        let closed = window.close();
        run.sampled.wait();
        let shares: Vec<Result<Share, String>> = workers
            .into_iter()
            .map(|w| w.join().unwrap_or_else(|_| Err("a client thread panicked".into())))
            .collect();
        (shares, published.and_then(|p| closed.map(|closed| (p, closed))))
    });
    let ((published, start, opened_in, opened), closed) = match published {
        Ok(p) => p,
        // The threads' own errors say more (which connection failed, and why).
        Err(e) => return Err(shares.into_iter().find_map(Result::err).unwrap_or(e)),
    };
    let mut latency = Histogram::new();
    let (mut delivered, mut duplicates, mut closed_early, mut last_delivery) =
        (0u64, 0u64, Vec::new(), start);
    for share in shares {
        let share = share?;
        latency.merge(&share.latency);
        delivered += share.delivered;
        duplicates += share.duplicates;
        closed_early.extend(share.closed_early);
        last_delivery = last_delivery.max(share.last_delivery.unwrap_or(start));
    }

    let expected = match &rooms {
        Some(rooms) => rooms.expected.iter().sum(),
        None => published.messages * options.subscribers as u64,
    };
    let missing = expected.saturating_sub(delivered);
    let elapsed = last_delivery.duration_since(start).as_secs_f64().max(1e-6);
    let mut report = Report::new("fanout");
    report.text("publish_url", format!("http://{}{}", publish_url.host, publish_url.path));
    let subscribe_path = |url: &Url| rooms.as_ref().map_or(&url.path, |r| &r.paths[0]).clone();
    let shown: Vec<String> =
        subscribe_urls.iter().map(|url| format!("http://{}{}", url.host, subscribe_path(url))).collect();
    report.text("subscribe_url", shown.join(" "));
    report.count("subscribe_urls", subscribe_urls.len() as u64);
    report.text("transport", options.transport.name());
    report.count("subscribers", options.subscribers as u64);
    report.count("channels_per_subscriber", options.channels_per_subscriber as u64);
    report.count("channels", options.channel_pool.max(options.channels_per_subscriber) as u64);
    report.count("expected_deliveries", expected);
    report.count("threads", options.threads as u64);
    report.real("subscribe_s", opened_in.as_secs_f64());
    report.count("messages", published.messages);
    report.count("size_bytes", options.size_bytes as u64);
    report.text("payload", if options.json_payload { "json" } else { "padding" });
    report.text("deflate", if selected_deflate(options) { "offered" } else { "off" });
    report.real("publish_s", published.elapsed.as_secs_f64());
    report.real("publishes_per_s", published.messages as f64 / published.elapsed.as_secs_f64().max(1e-6));
    report.count("deliveries", delivered);
    report.real("elapsed_s", elapsed);
    report.real("deliveries_per_s", delivered as f64 / elapsed);
    report.latency(&latency);
    report.count("missing", missing);
    report.count("duplicates", duplicates);
    report.count("closed_early", closed_early.len() as u64);
    window.report(&opened, &closed, delivered, "deliveries", &mut report);
    if missing > 0 {
        let first = closed_early.first().map(|c| format!("; {c}")).unwrap_or_default();
        report.failure = Some(format!("{missing} of {expected} deliveries missing{first}"));
    }
    Ok(report)
}
