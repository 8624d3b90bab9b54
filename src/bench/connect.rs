//! `pushwire bench connect`: WebSocket opening handshakes per second.
//!
//! Implements: `-c` connections in total, at most `--concurrency` at a time, each going through
//! TCP connect, the opening handshake (RFC 6455 §4.1, the response verified), then the closing
//! handshake (§7.1.2) until the server closes TCP, so the TIME_WAIT state stays on the server's
//! side (§7.1.1) and the client's ports are not used up. A new connection starts as soon as one
//! ends.
//!
//! Reports: handshakes per second (completed connections over the whole run) and the latency
//! from starting the TCP connect to receiving the 101 answer, p50/p99/max. The run fails if any
//! handshake failed. With `--pid` it is also the churn benchmark: the server's resident memory
//! before and after the run (a second after the last close) tells whether opening and closing
//! connections leaks (`pushwire bench connect -c 100000 --concurrency 50 --pid PID`).
//!
//! Does not: send messages (see `echo`), or retry failures.

use std::time::{Duration, Instant};

use super::client::{Client, Clients, Received, Request, Wire};
use super::histogram::Histogram;
use super::report::Report;
use super::system::{connect_from, ensure_open_files, resident_bytes, source_addrs};
use super::url::Url;
use crate::protocol::Transport;

/// Options of `pushwire bench connect`.
#[derive(Debug, Clone, clap::Args)]
pub struct ConnectOptions {
    /// A WebSocket endpoint.
    #[arg(long, default_value = "ws://127.0.0.1:8080/echo")]
    pub url: String,
    /// Connections (handshakes) in total.
    #[arg(short = 'c', long, value_name = "COUNT", default_value_t = 1000)]
    pub total: u64,
    /// Connections open at the same time.
    #[arg(long, value_name = "COUNT", default_value_t = 10)]
    pub concurrency: usize,
    /// Spread connections over this many source addresses 127.0.0.1.. (0: the kernel picks).
    #[arg(long, value_name = "COUNT", default_value_t = 0)]
    pub source_addrs: usize,
    /// The server's process id: report its resident memory before and after the churn.
    #[arg(long)]
    pub pid: Option<u32>,
}

/// Longest a whole run may take.
const RUN_LIMIT: Duration = Duration::from_secs(600);

/// Runs the handshake benchmark; `Err` when it could not run at all.
pub fn run(options: &ConnectOptions) -> Result<Report, String> {
    if !(1..=10_000_000).contains(&options.total) || !(1..=100_000).contains(&options.concurrency) {
        return Err("-c must be between 1 and 10000000, --concurrency between 1 and 100000".into());
    }
    let url = Url::parse(&options.url)?;
    url.require_plain("connect")?;
    ensure_open_files(options.concurrency)?;
    let request = Request {
        wire: Wire::Push(Transport::WebSocket),
        host: url.host.clone(),
        path: url.path.clone(),
        protocols: Vec::new(),
        max_message_bytes: 64 * 1024,
        deflate: false,
        tls: None,
    };
    let sources = source_addrs(url.addr, options.concurrency, options.source_addrs);
    let mut clients = Clients::new().map_err(|e| e.to_string())?;
    // By connection index: when it started, and whether its 101 came.
    let mut started_at: Vec<Instant> = Vec::new();
    let mut opened: Vec<bool> = Vec::new();
    let mut latency = Histogram::new();
    let (mut started, mut handshakes, mut failures) = (0u64, 0u64, Vec::new());
    let mut received = Vec::new();
    let rss_before = options.pid.map(resident_bytes).transpose()?;
    let start = Instant::now();
    while handshakes + (failures.len() as u64) < options.total && start.elapsed() < RUN_LIMIT {
        while started < options.total && clients.open() < options.concurrency {
            let source = (!sources.is_empty()).then(|| sources[started as usize % sources.len()]);
            started += 1;
            let began = Instant::now();
            let client = connect_from(source, url.addr)
                .map_err(|e| format!("connect to {}: {e}", url.addr))
                .and_then(|stream| Client::start(stream, request.clone()));
            match client {
                Ok(client) => {
                    let index = clients.add(client).map_err(|e| e.to_string())?;
                    if index == started_at.len() {
                        started_at.push(began);
                        opened.push(false);
                    } else {
                        (started_at[index], opened[index]) = (began, false);
                    }
                }
                Err(e) => failures.push(e),
            }
        }
        clients.turn(Duration::from_millis(50), &mut received).map_err(|e| e.to_string())?;
        for (index, news) in received.drain(..) {
            match news {
                Received::Opened => {
                    latency.record(started_at[index].elapsed().as_micros() as u64);
                    opened[index] = true;
                    handshakes += 1;
                    if let Some(client) = clients.get_mut(index) {
                        client.send_close();
                    }
                    let mut ignored = Vec::new();
                    clients.flush(index, &mut ignored);
                }
                // The server closing TCP after the closing handshake is the normal end.
                Received::Closed(_) if opened[index] => {}
                Received::Closed(reason) => failures.push(format!("connection {index}: {reason}")),
                Received::Data(_) | Received::Cursor => {}
            }
        }
    }
    let elapsed = start.elapsed().as_secs_f64().max(1e-6);

    let mut report = Report::new("connect");
    report.text("url", options.url.clone());
    report.count("total", options.total);
    report.count("concurrency", options.concurrency as u64);
    report.count("handshakes", handshakes);
    report.real("elapsed_s", elapsed);
    report.real("handshakes_per_s", handshakes as f64 / elapsed);
    report.latency(&latency);
    report.count("failures", failures.len() as u64);
    if let (Some(pid), Some(before)) = (options.pid, rss_before) {
        // Let the server finish closing (lingering closes) before reading its memory again.
        std::thread::sleep(Duration::from_secs(1));
        let after = resident_bytes(pid)?;
        report.count("server_rss_before_bytes", before);
        report.count("server_rss_after_bytes", after);
        report.real("server_rss_growth_bytes", after as f64 - before as f64);
    }
    if handshakes < options.total {
        let first = failures.first().map(|f| format!("; {f}")).unwrap_or_default();
        report.failure =
            Some(format!("{} of {} handshakes failed{first}", options.total - handshakes, options.total));
    }
    Ok(report)
}
