//! Counters and gauges served at `/metrics` in the Prometheus text exposition format
//! (<https://prometheus.io/docs/instrumenting/exposition_formats/#text-based-format>).
//!
//! Implements: one `Metrics` of atomics shared by every event loop and connection; gauges
//! counted up and down by their owner (a connection counts itself open under its transport in
//! `Conn::serve` and uncounts itself in `Conn::set_phase` when it leaves serving, which its drop
//! also goes through, whatever ends it: a guard would cost every connection a pointer); the
//! rejected-request counters by status; and the rendering of a snapshot with the hub's figures.
//!
//! Latency histograms, with fixed buckets ([`LATENCY_BUCKETS_US`]): two filled by the event
//! loops, and with `--redis` a third, `pushwire_redis_publish_seconds`, filled by the broker
//! threads (summed over the `--redis` servers). Each event loop and broker fills its own
//! [`LocalHistogram`] (plain integers, no atomics, no allocation) and merges it into a shared
//! [`LatencyHistogram`] once per turn, so the hot path pays an add per observation.
//!
//! Does not: keep per-channel series (unbounded label sets are a memory hazard), or quantiles
//! (Prometheus computes them from the buckets: `histogram_quantile`).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::hub::HubStats;

pub use crate::protocol::Transport;

/// The transports a connection is counted under while its session lasts, with their metric
/// label (a short poll is answered at once and never counted as open).
const TRANSPORTS: [(Transport, &str); 4] = [
    (Transport::WebSocket, "websocket"),
    (Transport::Sse, "sse"),
    (Transport::Stream, "stream"),
    (Transport::LongPoll, "longpoll"),
];

/// The statuses rejected requests are counted by; others count as `other`.
const REJECTED: [u16; 16] = [400, 401, 403, 404, 405, 408, 413, 414, 426, 429, 431, 500, 501, 503, 505, 0];

/// Why a bearer or signed token was refused, as counted by [`Metrics::token_refused`]:
/// `missing` (none given where one is needed), `not_granted` (valid, but not for that channel
/// and action), the token errors of `transport::token` (`bad_signature` is a forged token),
/// and `other`.
const TOKEN_REASONS: [&str; 10] = [
    "missing",
    "not_granted",
    "too_long",
    "malformed",
    "unsupported_algorithm",
    "bad_signature",
    "expired",
    "not_yet_valid",
    "bad_claims",
    "other",
];

/// Upper bounds of the latency histograms' buckets, in microseconds (rendered in seconds, as
/// Prometheus' `le` labels); one more bucket, `+Inf`, takes the rest.
pub const LATENCY_BUCKETS_US: [u64; 16] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    2_500_000, 5_000_000, 10_000_000,
];

/// Observations one event loop made since its last merge, without atomics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocalHistogram {
    /// Per bucket (not cumulative); the last is `+Inf`.
    buckets: [u64; LATENCY_BUCKETS_US.len() + 1],
    sum_us: u64,
    count: u64,
}

impl LocalHistogram {
    /// Records one latency.
    pub fn observe(&mut self, latency: Duration) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        let i = LATENCY_BUCKETS_US.iter().position(|&bound| us <= bound).unwrap_or(LATENCY_BUCKETS_US.len());
        self.buckets[i] += 1;
        self.sum_us = self.sum_us.saturating_add(us);
        self.count += 1;
    }

    /// Observations recorded.
    pub fn count(&self) -> u64 {
        self.count
    }
}

/// A latency histogram shared by the event loops, in the Prometheus histogram model
/// (<https://prometheus.io/docs/concepts/metric_types/#histogram>).
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    buckets: [AtomicU64; LATENCY_BUCKETS_US.len() + 1],
    sum_us: AtomicU64,
    count: AtomicU64,
}

impl LatencyHistogram {
    /// Adds a loop's observations and clears them (a loop calls it once per turn, when it has
    /// any).
    pub fn merge(&self, local: &mut LocalHistogram) {
        if local.count == 0 {
            return;
        }
        for (shared, n) in self.buckets.iter().zip(&local.buckets) {
            if *n > 0 {
                shared.fetch_add(*n, Ordering::Relaxed);
            }
        }
        self.sum_us.fetch_add(local.sum_us, Ordering::Relaxed);
        self.count.fetch_add(local.count, Ordering::Relaxed);
        *local = LocalHistogram::default();
    }

    /// What was merged so far, as plain integers.
    pub fn snapshot(&self) -> LocalHistogram {
        LocalHistogram {
            buckets: self.buckets.each_ref().map(|b| b.load(Ordering::Relaxed)),
            sum_us: self.sum_us.load(Ordering::Relaxed),
            count: self.count.load(Ordering::Relaxed),
        }
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let snapshot = self.snapshot();
        render_histogram(out, name, help, &snapshot.buckets, snapshot.sum_us);
    }
}

impl LocalHistogram {
    /// Per bucket (not cumulative), the last `+Inf`.
    pub fn buckets(&self) -> [u64; LATENCY_BUCKETS_US.len() + 1] {
        self.buckets
    }

    /// The sum of the observations, in microseconds.
    pub fn sum_us(&self) -> u64 {
        self.sum_us
    }
}

// A backend's histograms are carried by the pure hub in arrays of this size.
const _: () = assert!(LATENCY_BUCKETS_US.len() + 1 == crate::hub::backend::LATENCY_BUCKETS);

/// Appends the histogram `pushwire_{name}` in the text format: cumulative `_bucket` lines
/// with `le` in seconds, then `_sum` (seconds) and `_count`.
fn render_histogram(out: &mut String, name: &str, help: &str, buckets: &[u64], sum_us: u64) {
    {
        let _ = writeln!(out, "# HELP pushwire_{name} {help}\n# TYPE pushwire_{name} histogram");
        let mut cumulative = 0;
        for (i, bucket) in buckets.iter().enumerate() {
            cumulative += bucket;
            match LATENCY_BUCKETS_US.get(i) {
                Some(us) => {
                    let _ =
                        writeln!(out, "pushwire_{name}_bucket{{le=\"{}\"}} {cumulative}", *us as f64 / 1e6);
                }
                None => {
                    let _ = writeln!(out, "pushwire_{name}_bucket{{le=\"+Inf\"}} {cumulative}");
                }
            }
        }
        let sum_s = sum_us as f64 / 1e6;
        let _ = writeln!(out, "pushwire_{name}_sum {sum_s}\npushwire_{name}_count {cumulative}");
    }
}

/// Server-wide counters.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Connections accepted.
    pub connections_accepted: AtomicU64,
    /// Connections open now.
    pub connections_open: AtomicU64,
    /// Connections refused at the connection limit.
    pub connections_refused: AtomicU64,
    open_by_transport: [AtomicU64; TRANSPORTS.len() + 1],
    /// Connections open on each event loop, indexed by its sink (empty outside a server):
    /// shows how the kernel spread them over the loops' SO_REUSEPORT listeners.
    open_by_loop: Box<[AtomicU64]>,
    /// Messages published (HTTP and WebSocket).
    pub messages_published: AtomicU64,
    /// Messages written to subscribers (each subscriber counts).
    pub messages_delivered: AtomicU64,
    /// Bytes read from sockets.
    pub bytes_in: AtomicU64,
    /// Bytes written to sockets.
    pub bytes_out: AtomicU64,
    /// Long polls parked now.
    pub longpolls_parked: AtomicU64,
    /// Subscribers closed for not reading fast enough.
    pub slow_consumer_closes: AtomicU64,
    /// Gap signals sent, on every transport.
    pub gaps_signalled: AtomicU64,
    /// Channel messages compressed for permessage-deflate subscribers: once per message and
    /// window size, however many subscribers receive it.
    pub ws_deflate_compressions: AtomicU64,
    /// Channel messages delivered in compressed WebSocket frames (RSV1), each subscriber counting.
    pub ws_deflate_frames_sent: AtomicU64,
    /// SSE requests whose `Last-Event-ID` could not be read, answered from now with a gap.
    pub last_event_id_unreadable: AtomicU64,
    rejected: [AtomicU64; REJECTED.len()],
    token_refusals: [AtomicU64; TOKEN_REASONS.len()],
    /// WebSocket connections closed because their token expired (close 4001).
    pub token_expiry_closes: AtomicU64,
    /// Subscriptions ended because the signed token that admitted them expired, by transport.
    token_expiries: [AtomicU64; TRANSPORTS.len() + 1],
    /// Server TLS (all zero without `--tls-cert`).
    pub tls: TlsMetrics,
    /// Publish accepted (the message's `published_at`) → the loop's write of each subscriber
    /// that carried it (once per write; a write carrying several messages counts from the
    /// oldest), measured after the write's slice.
    pub delivery_write_latency: LatencyHistogram,
    /// Publish accepted → the last subscriber's write of the fan-out on a loop (once per
    /// message and event loop with subscribers).
    pub fanout_last_write_latency: LatencyHistogram,
}

/// Counters of the server's TLS listener (`net::tls`).
#[derive(Debug, Default)]
pub struct TlsMetrics {
    /// TLS handshakes in progress now (bounded per event loop by `max_tls_handshakes`).
    pub handshakes_in_progress: AtomicU64,
    /// TLS handshakes completed.
    pub handshakes_completed: AtomicU64,
    /// Of those, sessions resumed from a ticket or the session cache.
    pub handshakes_resumed: AtomicU64,
    /// Connections that broke the TLS protocol before or during the handshake.
    pub handshake_failures: AtomicU64,
    /// Handshakes not completed within `tls_handshake_timeout`.
    pub handshake_timeouts: AtomicU64,
    /// TLS connections closed at once because `max_tls_handshakes` were in progress.
    pub handshakes_refused: AtomicU64,
    /// Clients that spoke plain HTTP to the TLS port (answered 400).
    pub plain_http_refused: AtomicU64,
    /// Certificate reloads (SIGHUP) that took effect.
    pub reloads: AtomicU64,
    /// Certificate reloads that failed (the previous pair stayed).
    pub reload_failures: AtomicU64,
}

impl Metrics {
    /// Counters for a server of `loops` event loops (see [`Metrics::open_on_loop`]).
    pub fn with_loops(loops: usize) -> Metrics {
        Metrics { open_by_loop: (0..loops).map(|_| AtomicU64::new(0)).collect(), ..Metrics::default() }
    }

    /// Counts a connection as open on event loop `index` until [`Metrics::close_on_loop`]
    /// (ignored past the loops given to [`Metrics::with_loops`]).
    pub fn open_on_loop(&self, index: usize) {
        if let Some(c) = self.open_by_loop.get(index) {
            Self::inc(c);
        }
    }

    /// Uncounts a connection counted by [`Metrics::open_on_loop`].
    pub fn close_on_loop(&self, index: usize) {
        if let Some(c) = self.open_by_loop.get(index) {
            c.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Adds one to a counter.
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a request answered with an error status.
    pub fn reject(&self, status: u16) {
        let i = REJECTED.iter().position(|&s| s == status).unwrap_or(REJECTED.len() - 1);
        Self::inc(&self.rejected[i]);
    }

    /// Counts a refused token or authorization by its reason (one of `TOKEN_REASONS`; any
    /// other counts as `other`).
    pub fn token_refused(&self, reason: &str) {
        let i = TOKEN_REASONS.iter().position(|&r| r == reason).unwrap_or(TOKEN_REASONS.len() - 1);
        Self::inc(&self.token_refusals[i]);
    }

    /// Counts a connection as open under `transport` until [`Metrics::close_transport`] (its
    /// owner keeps track: a guard holding the counters would cost every connection 16 bytes).
    pub fn open_transport(&self, transport: Transport) {
        Self::inc(&self.open_by_transport[transport_index(transport)]);
    }

    /// Uncounts a connection counted by [`Metrics::open_transport`].
    pub fn close_transport(&self, transport: Transport) {
        self.open_by_transport[transport_index(transport)].fetch_sub(1, Ordering::Relaxed);
    }

    /// Counts a subscription (a connection, or a parked poll) ended because the signed token
    /// that admitted it expired.
    pub fn token_expired(&self, transport: Transport) {
        Self::inc(&self.token_expiries[transport_index(transport)]);
    }

    /// Counts a long poll as parked until [`Metrics::unpark`].
    pub fn count_parked(&self) {
        Self::inc(&self.longpolls_parked);
    }

    /// Uncounts a long poll counted by [`Metrics::count_parked`].
    pub fn unpark(&self) {
        self.longpolls_parked.fetch_sub(1, Ordering::Relaxed);
    }

    /// The Prometheus text exposition of the counters and of the hub's figures.
    pub fn render(&self, hub: &HubStats) -> String {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, samples: &[(String, u64)]| {
            let _ = writeln!(out, "# HELP pushwire_{name} {help}\n# TYPE pushwire_{name} {kind}");
            for (labels, value) in samples {
                let _ = writeln!(out, "pushwire_{name}{labels} {value}");
            }
        };
        let one = |v: u64| [(String::new(), v)];
        metric(
            "connections_accepted_total",
            "counter",
            "Connections accepted.",
            &one(load(&self.connections_accepted)),
        );
        metric("connections_open", "gauge", "Connections open.", &one(load(&self.connections_open)));
        metric(
            "connections_refused_total",
            "counter",
            "Connections refused at the connection limit.",
            &one(load(&self.connections_refused)),
        );
        let by_transport: Vec<_> = TRANSPORTS
            .iter()
            .zip(&self.open_by_transport)
            .map(|((_, name), c)| (format!("{{transport=\"{name}\"}}"), load(c)))
            .collect();
        metric("transport_connections_open", "gauge", "Connections served by each transport.", &by_transport);
        let by_loop: Vec<_> = self
            .open_by_loop
            .iter()
            .enumerate()
            .map(|(i, c)| (format!("{{loop=\"{i}\"}}"), load(c)))
            .collect();
        if !by_loop.is_empty() {
            metric("loop_connections", "gauge", "Connections open on each event loop.", &by_loop);
        }
        metric("channels", "gauge", "Channels in the hub.", &one(hub.channels as u64));
        metric(
            "subscriptions",
            "gauge",
            "Subscriptions (per event loop and channel).",
            &one(hub.subscriptions as u64),
        );
        metric(
            "history_messages",
            "gauge",
            "Messages held in channel histories.",
            &one(hub.history_messages as u64),
        );
        metric("history_bytes", "gauge", "Bytes held in channel histories.", &one(hub.history_bytes as u64));
        metric(
            "messages_published_total",
            "counter",
            "Messages published.",
            &one(load(&self.messages_published)),
        );
        metric(
            "messages_delivered_total",
            "counter",
            "Messages written to subscribers.",
            &one(load(&self.messages_delivered)),
        );
        metric("bytes_in_total", "counter", "Bytes read from sockets.", &one(load(&self.bytes_in)));
        metric("bytes_out_total", "counter", "Bytes written to sockets.", &one(load(&self.bytes_out)));
        metric(
            "longpolls_parked",
            "gauge",
            "Long polls waiting for a message.",
            &one(load(&self.longpolls_parked)),
        );
        metric(
            "slow_consumer_closes_total",
            "counter",
            "Subscribers closed for not reading.",
            &one(load(&self.slow_consumer_closes)),
        );
        metric("gaps_signalled_total", "counter", "Gap signals sent.", &one(load(&self.gaps_signalled)));
        metric(
            "ws_deflate_compressions_total",
            "counter",
            "Channel messages compressed for permessage-deflate (once per message and window).",
            &one(load(&self.ws_deflate_compressions)),
        );
        metric(
            "ws_deflate_frames_sent_total",
            "counter",
            "Channel messages delivered in compressed WebSocket frames.",
            &one(load(&self.ws_deflate_frames_sent)),
        );
        metric(
            "last_event_id_unreadable_total",
            "counter",
            "SSE requests whose Last-Event-ID could not be read (answered from now with a gap).",
            &one(load(&self.last_event_id_unreadable)),
        );
        let rejected: Vec<_> = REJECTED
            .iter()
            .zip(&self.rejected)
            .map(|(s, c)| {
                let status = if *s == 0 { "other".to_string() } else { s.to_string() };
                (format!("{{status=\"{status}\"}}"), load(c))
            })
            .collect();
        metric("requests_rejected_total", "counter", "Requests answered with an error status.", &rejected);
        let tokens: Vec<_> = TOKEN_REASONS
            .iter()
            .zip(&self.token_refusals)
            .map(|(r, c)| (format!("{{reason=\"{r}\"}}"), load(c)))
            .collect();
        metric(
            "token_refusals_total",
            "counter",
            "Requests and commands refused for a missing, invalid or insufficient token.",
            &tokens,
        );
        metric(
            "token_expiry_closes_total",
            "counter",
            "WebSocket connections closed with 4001 because their token expired.",
            &one(load(&self.token_expiry_closes)),
        );
        let expiries: Vec<_> = TRANSPORTS
            .iter()
            .zip(&self.token_expiries)
            .map(|((_, name), c)| (format!("{{transport=\"{name}\"}}"), load(c)))
            .collect();
        metric(
            "token_expiries_total",
            "counter",
            "Subscriptions ended because the signed token that admitted them expired.",
            &expiries,
        );
        let tls = &self.tls;
        for (name, kind, help, value) in [
            (
                "tls_handshakes_in_progress",
                "gauge",
                "TLS handshakes in progress.",
                &tls.handshakes_in_progress,
            ),
            ("tls_handshakes_total", "counter", "TLS handshakes completed.", &tls.handshakes_completed),
            ("tls_handshakes_resumed_total", "counter", "TLS sessions resumed.", &tls.handshakes_resumed),
            ("tls_handshake_failures_total", "counter", "TLS protocol failures.", &tls.handshake_failures),
            ("tls_handshake_timeouts_total", "counter", "TLS handshakes timed out.", &tls.handshake_timeouts),
            (
                "tls_handshakes_refused_total",
                "counter",
                "TLS connections refused at the bound on handshakes in progress.",
                &tls.handshakes_refused,
            ),
            (
                "tls_plain_http_refused_total",
                "counter",
                "Plain HTTP requests on the TLS port.",
                &tls.plain_http_refused,
            ),
            ("tls_reloads_total", "counter", "Certificate reloads that took effect.", &tls.reloads),
            (
                "tls_reload_failures_total",
                "counter",
                "Certificate reloads that failed (the previous pair stays).",
                &tls.reload_failures,
            ),
        ] {
            metric(name, kind, help, &one(load(value)));
        }
        self.delivery_write_latency.render(
            &mut out,
            "delivery_write_seconds",
            "Publish accepted to each subscriber's write that carried it (per write).",
        );
        self.fanout_last_write_latency.render(
            &mut out,
            "fanout_last_write_seconds",
            "Publish accepted to the last subscriber's write of its fan-out (per message and event loop).",
        );
        if let Some(redis) = &hub.backend {
            render_backend(&mut out, redis);
        }
        out
    }
}

/// The Redis backend's figures (`pushwire_redis_*`), present with `--redis` only.
fn render_backend(out: &mut String, b: &crate::hub::backend::BackendFigures) {
    let _ = writeln!(
        out,
        "# HELP pushwire_redis_up Whether each connection to Redis is ready.\n# TYPE pushwire_redis_up gauge"
    );
    let _ = writeln!(out, "pushwire_redis_up{{connection=\"command\"}} {}", u8::from(b.command_up));
    let _ = writeln!(out, "pushwire_redis_up{{connection=\"pubsub\"}} {}", u8::from(b.pubsub_up));
    for (name, kind, help, value) in [
        ("reconnects_total", "counter", "Connections to Redis ready again after being lost.", b.reconnects),
        ("disconnects_total", "counter", "Connections to Redis lost or closed.", b.disconnects),
        ("commands_in_flight", "gauge", "Commands sent to Redis and not yet answered.", b.commands_in_flight),
        ("pubsub_channels", "gauge", "Channels subscribed on the pub/sub connection.", b.pubsub_channels),
        ("published_total", "counter", "Publishes Redis answered with a cursor.", b.published),
        ("failed_total", "counter", "Requests to the Redis backend answered with an error.", b.failed),
        ("timeouts_total", "counter", "Redis commands or connections timed out.", b.timeouts),
        ("repair_reads_total", "counter", "History reads that repaired live delivery.", b.repair_reads),
        ("epoch_changes_total", "counter", "Live channels that moved to a new epoch.", b.epoch_changes),
        ("bad_frames_total", "counter", "Pub/sub frames that did not parse.", b.bad_frames),
        (
            "presence_writes_total",
            "counter",
            "Presence script calls for this node's members.",
            b.presence_writes,
        ),
        ("nodes", "gauge", "Other nodes heard on the control channel lately.", b.nodes),
        ("bad_control_frames_total", "counter", "Control frames that did not parse.", b.bad_control_frames),
        (
            "survey_timeouts_total",
            "counter",
            "Surveys answered without every node's reply.",
            b.survey_timeouts,
        ),
        (
            "survey_late_replies_total",
            "counter",
            "Survey replies that came after their survey was answered.",
            b.survey_late_replies,
        ),
    ] {
        let _ = writeln!(
            out,
            "# HELP pushwire_redis_{name} {help}\n# TYPE pushwire_redis_{name} {kind}\npushwire_redis_{name} {value}"
        );
    }
    render_histogram(
        out,
        "redis_publish_seconds",
        "Publish round trip to Redis (sent to answered).",
        &b.publish_latency_buckets,
        b.publish_latency_sum_us,
    );
}

/// A transport's slot; a short poll (answered at once, never counted open) gets the last
/// slot, which is not rendered.
fn transport_index(transport: Transport) -> usize {
    TRANSPORTS.iter().position(|(t, _)| *t == transport).unwrap_or(TRANSPORTS.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_histograms_merge_exactly_and_render_cumulative_buckets_in_seconds() {
        let metrics = Metrics::default();
        let mut local = LocalHistogram::default();
        for us in [50, 100, 101, 2_000, 20_000_000] {
            local.observe(Duration::from_micros(us));
        }
        assert_eq!(local.count(), 5);
        metrics.fanout_last_write_latency.merge(&mut local);
        assert_eq!(local, LocalHistogram::default(), "merging clears the loop's copy");
        local.observe(Duration::from_micros(100));
        metrics.fanout_last_write_latency.merge(&mut local);
        let text = metrics.render(&HubStats::default());
        assert!(text.contains("# TYPE pushwire_fanout_last_write_seconds histogram\n"), "{text}");
        // 50, 100, 100 are at most 100 us; 101 adds at 250 us; 2,000 at 2.5 ms; 20 s only at +Inf.
        for line in [
            "pushwire_fanout_last_write_seconds_bucket{le=\"0.0001\"} 3\n",
            "pushwire_fanout_last_write_seconds_bucket{le=\"0.00025\"} 4\n",
            "pushwire_fanout_last_write_seconds_bucket{le=\"0.001\"} 4\n",
            "pushwire_fanout_last_write_seconds_bucket{le=\"0.0025\"} 5\n",
            "pushwire_fanout_last_write_seconds_bucket{le=\"10\"} 5\n",
            "pushwire_fanout_last_write_seconds_bucket{le=\"+Inf\"} 6\n",
            "pushwire_fanout_last_write_seconds_sum 20.002351\n",
            "pushwire_fanout_last_write_seconds_count 6\n",
            "pushwire_delivery_write_seconds_count 0\n",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
    }

    #[test]
    fn per_loop_gauges_count_each_loop_apart_and_render_one_line_per_loop() {
        let metrics = Metrics::with_loops(2);
        metrics.open_on_loop(1);
        metrics.open_on_loop(1);
        metrics.open_on_loop(0);
        metrics.open_on_loop(2); // no such loop: ignored
        metrics.close_on_loop(1);
        let text = metrics.render(&HubStats::default());
        assert!(text.contains("# TYPE pushwire_loop_connections gauge\n"), "{text}");
        assert!(text.contains("pushwire_loop_connections{loop=\"0\"} 1\n"), "{text}");
        assert!(text.contains("pushwire_loop_connections{loop=\"1\"} 1\n"), "{text}");
        assert!(!text.contains("loop=\"2\""), "{text}");
        let text = Metrics::default().render(&HubStats::default());
        assert!(!text.contains("pushwire_loop_connections"), "no loops, no series: {text}");
    }

    #[test]
    fn gauges_count_until_uncounted_and_render_in_text_format() {
        let metrics = Metrics::default();
        metrics.open_transport(Transport::Sse);
        metrics.count_parked();
        metrics.reject(404);
        metrics.reject(999);
        let text = metrics.render(&HubStats::default());
        assert!(text.contains("pushwire_transport_connections_open{transport=\"sse\"} 1\n"), "{text}");
        assert!(text.contains("pushwire_longpolls_parked 1\n"));
        assert!(text.contains("pushwire_requests_rejected_total{status=\"404\"} 1\n"));
        assert!(text.contains("pushwire_requests_rejected_total{status=\"other\"} 1\n"));
        assert!(text.contains("# TYPE pushwire_connections_open gauge\n"));
        assert!(text.contains("pushwire_tls_reload_failures_total 0\n"), "{text}");
        metrics.close_transport(Transport::Sse);
        metrics.unpark();
        let text = metrics.render(&HubStats::default());
        assert!(text.contains("pushwire_transport_connections_open{transport=\"sse\"} 0\n"));
        assert!(text.contains("pushwire_longpolls_parked 0\n"));
    }
}
