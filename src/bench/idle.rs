//! `pushwire bench idle`: what an idle subscription costs the server in memory.
//!
//! Implements: given the server's PID, opens and closes a few subscriptions first (a warm-up,
//! so that what the server pays once, such as its code pages faulted in on first use, is not
//! counted per connection), reads its resident set size (`VmRSS`, proc(5)), opens `-c`
//! WebSocket or SSE subscriptions and waits until each is subscribed (its opening cursor, or
//! its response head with `--no-open-cursor`), keeps them open for `--hold` seconds (answering
//! pings, reading heartbeats), reads the resident size again and reports the difference per
//! connection. Connections are spread over several loopback source addresses when one port
//! range is not enough, and RLIMIT_NOFILE is raised to fit them (or the run says what to raise).
//!
//! Does not: separate the server's own allocator slack from per-connection memory (a larger
//! `-c` gives a steadier figure), or measure anything without `--pid` but how long opening took.

use std::time::{Duration, Instant};

use super::client::{
    open_all, subscriber_protocols, transport_parser, Clients, Opening, Received, Request, Wire,
};
use super::report::Report;
use super::system::{ensure_open_files, open_files_limit_of, resident_bytes, source_addrs};
use super::url::Url;
use super::{parse_seconds, OPEN_CONCURRENCY};
use crate::protocol::Transport;

/// Subscriptions opened and closed before the baseline (see [`run`]).
const WARM_UP_CONNECTIONS: usize = 4;

/// Options of `pushwire bench idle`.
#[derive(Debug, Clone, clap::Args)]
pub struct IdleOptions {
    /// The channel to subscribe to.
    #[arg(long, default_value = "http://127.0.0.1:8080/channels/idle")]
    pub url: String,
    /// How the subscriptions are held: ws or sse.
    #[arg(long, value_parser = transport_parser(), default_value = "sse")]
    pub transport: Transport,
    /// Subscriptions to open.
    #[arg(short = 'c', long, value_name = "COUNT", default_value_t = 1000)]
    pub connections: usize,
    /// The server's process id, whose resident memory is read from /proc.
    #[arg(long, value_name = "PID")]
    pub pid: Option<u32>,
    /// How long to hold the subscriptions before measuring, in seconds.
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds, default_value = "2")]
    pub hold: Duration,
    /// The server sends no opening cursor (e.g. Nchan): subscribed once the head arrives.
    #[arg(long)]
    pub no_open_cursor: bool,
    /// Spread connections over this many source addresses 127.0.0.1.. (0: as needed).
    #[arg(long, value_name = "COUNT", default_value_t = 0)]
    pub source_addrs: usize,
}

/// Runs the idle-memory benchmark; `Err` when it could not run at all.
pub fn run(options: &IdleOptions) -> Result<Report, String> {
    if !matches!(options.transport, Transport::WebSocket | Transport::Sse) {
        return Err("idle holds ws or sse subscriptions".into());
    }
    if !(1..=1_000_000).contains(&options.connections) {
        return Err("-c must be between 1 and 1000000".into());
    }
    if options.hold > Duration::from_secs(3600) {
        return Err("--hold must be at most 3600 seconds".into());
    }
    let url = Url::parse(&options.url)?;
    url.require_plain("idle")?;
    let own_limit = ensure_open_files(options.connections)?;
    let server_limit = options.pid.and_then(open_files_limit_of);
    if let Some(limit) = server_limit.filter(|&l| l < options.connections as u64 + 16) {
        return Err(format!(
            "the server's RLIMIT_NOFILE is {limit}, too low for {} connections: raise it (`ulimit -n`) \
             before starting the server",
            options.connections
        ));
    }
    let wait_for_cursor = !options.no_open_cursor;
    let request = Request {
        wire: Wire::Push(options.transport),
        host: url.host.clone(),
        path: url.path.clone(),
        protocols: subscriber_protocols(options.transport, wait_for_cursor),
        max_message_bytes: 64 * 1024,
        deflate: false,
        tls: None,
    };
    let sources = source_addrs(url.addr, options.connections, options.source_addrs);
    // A few subscriptions like the measured ones, opened and closed before the baseline is
    // read: what the server pays once (the code that serves a subscription, faulted in from
    // its binary on first use; the channel itself) is then not divided among the measured
    // connections. Without it, 10,000 ws subscriptions to pushwire read 26 bytes more each,
    // all of it the binary's code pages (`/proc/PID/smaps`, 2026-12-05).
    let mut warm = Clients::new().map_err(|e| e.to_string())?;
    open_all(
        &mut warm,
        &Opening {
            addr: url.addr,
            request: &request,
            paths: &[],
            count: WARM_UP_CONNECTIONS,
            sources: &sources,
            concurrency: OPEN_CONCURRENCY,
            wait_for_cursor,
            timeout: Duration::from_secs(10),
        },
    )
    .map_err(|e| format!("warm-up: {e}"))?;
    drop(warm);
    // The server sees the warm-up connections end before the baseline.
    std::thread::sleep(Duration::from_millis(300));
    let rss_before = options.pid.map(resident_bytes).transpose()?;

    let mut clients = Clients::new().map_err(|e| e.to_string())?;
    let opened_in = open_all(
        &mut clients,
        &Opening {
            addr: url.addr,
            request: &request,
            paths: &[],
            count: options.connections,
            sources: &sources,
            concurrency: OPEN_CONCURRENCY,
            wait_for_cursor,
            timeout: Duration::from_secs(10) + Duration::from_millis(options.connections as u64),
        },
    )?;

    let mut closed_early = Vec::new();
    let mut received = Vec::new();
    let hold_until = Instant::now() + options.hold;
    while Instant::now() < hold_until {
        clients.turn(Duration::from_millis(100), &mut received).map_err(|e| e.to_string())?;
        for (index, news) in received.drain(..) {
            if let Received::Closed(reason) = news {
                closed_early.push(format!("connection {index}: {reason}"));
            }
        }
    }
    let rss_after = options.pid.map(resident_bytes).transpose()?;
    let own_rss = resident_bytes(std::process::id()).ok();
    if options.transport == Transport::WebSocket {
        super::echo::close_all(&mut clients, options.connections);
    }

    let mut report = Report::new("idle");
    report.text("url", options.url.clone());
    report.text("transport", options.transport.name());
    report.count("connections", options.connections as u64);
    report.count("warm_up_connections", WARM_UP_CONNECTIONS as u64);
    report.count("source_addrs", sources.len().max(1) as u64);
    report.real("open_s", opened_in.as_secs_f64());
    report.real("hold_s", options.hold.as_secs_f64());
    report.count("client_open_files_limit", own_limit);
    if let Some(limit) = server_limit {
        report.count("server_open_files_limit", limit);
    }
    if let (Some(before), Some(after)) = (rss_before, rss_after) {
        report.count("server_rss_before_bytes", before);
        report.count("server_rss_after_bytes", after);
        report.count("bytes_per_connection", after.saturating_sub(before) / options.connections as u64);
    }
    if let Some(rss) = own_rss {
        report.count("client_rss_bytes", rss);
    }
    report.count("closed_early", closed_early.len() as u64);
    if let Some(first) = closed_early.first() {
        report.failure = Some(format!("{} connections closed while held; {first}", closed_early.len()));
    }
    Ok(report)
}
