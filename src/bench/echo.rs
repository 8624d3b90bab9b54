//! `pushwire bench echo`: WebSocket round trips against any RFC 6455 echo server.
//!
//! Implements: `-c` connections each keeping `-w` binary messages of `-s` bytes in flight for
//! `--duration` seconds. With `--protocol raw` the same messages go over plain TCP, each behind
//! its length as 4 bytes big-endian (a `tcp://` URL), against any TCP echo: the machine's limit
//! for the same load without HTTP or WebSocket framing. Every message carries its send time and sequence number (see
//! [`super::payload`]), so each echo's round-trip latency is measured when it comes back; every
//! frame is masked with a fresh random key (RFC 6455 §5.3). After the duration no new messages
//! are sent; the ones in flight get `--drain` seconds to return, then each connection is closed
//! with the closing handshake (§7.1.2). A `wss://` URL runs the same over TLS (rustls, the
//! `ring` provider, as the crate's client): each connection's TLS handshake completes before
//! the measured window opens; `--cacert` adds a CA to trust (a test certificate).
//!
//! Reports: echoed messages per second (over the time from the first send to the last echo),
//! payload bytes per second in each direction, latency p50/p99/max, and messages lost or
//! changed; the CPU this process and (with `--server-pid`) the server spent from the first send
//! to the last echo, and the server's CPU-seconds per million messages ([`super::window`]).
//! The run fails if any was lost, changed, or a connection closed early.
//!
//! Does not: fragment messages, send text, or check the padding bytes.

use std::time::{Duration, Instant};

use super::client::{open_all, Clients, Opening, Received, Request, TlsTarget, Wire};
use super::histogram::Histogram;
use super::payload::{decode_binary, encode_binary, BINARY_HEADER_BYTES};
use super::report::Report;
use super::system::{ensure_open_files, source_addrs};
use super::url::Url;
use super::window::{ServerOptions, Window};
use super::{parse_seconds, OPEN_CONCURRENCY};
use crate::protocol::Transport;
use crate::ws;

/// What the echo connections speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EchoProtocol {
    /// WebSocket binary messages (RFC 6455), to a `ws://` URL.
    Ws,
    /// Plain TCP, each message behind a 4-byte big-endian length, to a `tcp://` URL.
    Raw,
}

/// Options of `pushwire bench echo`.
#[derive(Debug, Clone, clap::Args)]
pub struct EchoOptions {
    /// The echo endpoint: `ws://` or `wss://` (`tcp://HOST:PORT` with `--protocol raw`).
    #[arg(long, default_value = "ws://127.0.0.1:8080/echo")]
    pub url: String,
    /// WebSocket, or raw length-prefixed messages over TCP (against a plain TCP echo).
    #[arg(long, value_enum, default_value = "ws")]
    pub protocol: EchoProtocol,
    /// WebSocket connections.
    #[arg(short = 'c', long, value_name = "COUNT", default_value_t = 10)]
    pub connections: usize,
    /// Message size in bytes (at least 16: send time and sequence number).
    #[arg(short = 's', long = "size", value_name = "BYTES", default_value_t = 64)]
    pub size_bytes: usize,
    /// Messages in flight per connection.
    #[arg(short = 'w', long, value_name = "COUNT", default_value_t = 1)]
    pub in_flight: usize,
    /// How long to send, in seconds.
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds, default_value = "5")]
    pub duration: Duration,
    /// How long messages still in flight after the duration may take to come back, in seconds.
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds, default_value = "5")]
    pub drain: Duration,
    /// Spread connections over this many source addresses 127.0.0.1.. (0: as needed).
    #[arg(long, value_name = "COUNT", default_value_t = 0)]
    pub source_addrs: usize,
    /// wss://: a PEM file of CA certificates to trust besides Mozilla's roots.
    #[arg(long, value_name = "PATH")]
    pub cacert: Option<std::path::PathBuf>,
    /// The server under test (its CPU over the measured window).
    #[command(flatten)]
    pub server: ServerOptions,
}

impl EchoOptions {
    fn validate(&self) -> Result<(), String> {
        if !(1..=100_000).contains(&self.connections) {
            return Err("-c must be between 1 and 100000".into());
        }
        if !(BINARY_HEADER_BYTES..=16 * 1024 * 1024).contains(&self.size_bytes) {
            return Err(format!("-s must be between {BINARY_HEADER_BYTES} and 16777216 bytes"));
        }
        if !(1..=10_000).contains(&self.in_flight) {
            return Err("-w must be between 1 and 10000".into());
        }
        if self.duration.is_zero() || self.duration > Duration::from_secs(3600) {
            return Err("--duration must be more than 0 and at most 3600 seconds".into());
        }
        Ok(())
    }
}

/// Runs the echo benchmark; `Err` when it could not run at all.
pub fn run(options: &EchoOptions) -> Result<Report, String> {
    options.validate()?;
    let url = Url::parse(&options.url)?;
    if url.secure && options.protocol == EchoProtocol::Raw {
        return Err("--protocol raw takes a tcp:// URL, not wss://".into());
    }
    let tls = TlsTarget::for_url(&url, options.cacert.as_deref())?;
    let window = Window::new(&options.server)?;
    ensure_open_files(options.connections)?;
    let request = Request {
        wire: match options.protocol {
            EchoProtocol::Ws => Wire::Push(Transport::WebSocket),
            EchoProtocol::Raw => Wire::Raw,
        },
        host: url.host.clone(),
        path: url.path.clone(),
        protocols: Vec::new(),
        max_message_bytes: options.size_bytes,
        deflate: false,
        tls,
    };
    let mut clients = Clients::new().map_err(|e| e.to_string())?;
    let sources = source_addrs(url.addr, options.connections, options.source_addrs);
    open_all(
        &mut clients,
        &Opening {
            addr: url.addr,
            request: &request,
            paths: &[],
            count: options.connections,
            sources: &sources,
            concurrency: OPEN_CONCURRENCY,
            wait_for_cursor: false,
            timeout: Duration::from_secs(10) + Duration::from_millis(options.connections as u64),
        },
    )?;

    let opened = window.open()?;
    let start = Instant::now();
    let stop_sending = start + options.duration;
    let give_up = stop_sending + options.drain;
    let mut next_seq = vec![0u64; options.connections];
    let mut in_flight = 0usize;
    let mut received = Vec::new();
    for (index, seq) in next_seq.iter_mut().enumerate() {
        for _ in 0..options.in_flight {
            in_flight += send_next(&mut clients, index, seq, start, options.size_bytes);
        }
        clients.flush(index, &mut received);
    }
    let mut latency = Histogram::new();
    let (mut echoed, mut changed, mut closed_early) = (0u64, 0u64, Vec::new());
    let mut last_echo = start;
    loop {
        let now = Instant::now();
        if now >= give_up || (now >= stop_sending && in_flight == 0) || clients.open() == 0 {
            break;
        }
        clients
            .turn((give_up - now).min(Duration::from_millis(50)), &mut received)
            .map_err(|e| e.to_string())?;
        let now = Instant::now();
        let now_us = now.duration_since(start).as_micros() as u64;
        let mut to_flush = Vec::new();
        for (index, news) in received.drain(..) {
            match news {
                Received::Data(bytes) => {
                    in_flight = in_flight.saturating_sub(1);
                    match decode_binary(&bytes) {
                        Some((_, sent_us)) if bytes.len() == options.size_bytes && sent_us <= now_us => {
                            latency.record(now_us - sent_us);
                            echoed += 1;
                            last_echo = now;
                        }
                        _ => changed += 1,
                    }
                    if now < stop_sending {
                        in_flight +=
                            send_next(&mut clients, index, &mut next_seq[index], start, options.size_bytes);
                        to_flush.push(index);
                    }
                }
                Received::Closed(reason) => closed_early.push(format!("connection {index}: {reason}")),
                Received::Opened | Received::Cursor => {}
            }
        }
        for index in to_flush {
            clients.flush(index, &mut received);
        }
    }
    let lost = in_flight as u64;
    let closed = window.close()?;
    close_all(&mut clients, options.connections);

    let elapsed = last_echo.duration_since(start).as_secs_f64().max(1e-6);
    let mut report = Report::new("echo");
    report.text("url", options.url.clone());
    report.text(
        "protocol",
        match (options.protocol, url.secure) {
            (EchoProtocol::Raw, _) => "raw",
            (EchoProtocol::Ws, false) => "ws",
            (EchoProtocol::Ws, true) => "wss",
        },
    );
    report.count("connections", options.connections as u64);
    report.count("size_bytes", options.size_bytes as u64);
    report.count("in_flight", options.in_flight as u64);
    report.real("elapsed_s", elapsed);
    report.count("messages", echoed);
    report.real("messages_per_s", echoed as f64 / elapsed);
    report.real("bytes_per_s", (echoed * options.size_bytes as u64) as f64 / elapsed);
    report.latency(&latency);
    report.count("lost", lost);
    report.count("changed", changed);
    report.count("closed_early", closed_early.len() as u64);
    window.report(&opened, &closed, echoed, "messages", &mut report);
    if lost > 0 || changed > 0 || !closed_early.is_empty() {
        let first = closed_early.first().map(|c| format!("; {c}")).unwrap_or_default();
        report.failure =
            Some(format!("{lost} lost, {changed} changed, {} closed early{first}", closed_early.len()));
    }
    Ok(report)
}

/// Queues the next message on connection `index`; returns 1 if it was queued, else 0.
fn send_next(clients: &mut Clients, index: usize, seq: &mut u64, start: Instant, size_bytes: usize) -> usize {
    let Some(client) = clients.get_mut(index) else {
        return 0;
    };
    let sent_us = start.elapsed().as_micros() as u64;
    let message = ws::Message::Binary(encode_binary(*seq, sent_us, size_bytes));
    *seq += 1;
    usize::from(client.send_message(&message))
}

/// Starts the closing handshake on every connection and waits (at most 2 s) for the server to
/// close them (RFC 6455 §7.1.1: the server closes TCP first).
pub(crate) fn close_all(clients: &mut Clients, count: usize) {
    let mut received = Vec::new();
    for index in 0..count {
        if let Some(client) = clients.get_mut(index) {
            client.send_close();
        }
        clients.flush(index, &mut received);
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    while clients.open() > 0 && Instant::now() < deadline {
        if clients.turn(Duration::from_millis(50), &mut received).is_err() {
            break;
        }
        received.clear();
    }
}
