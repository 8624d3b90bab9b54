//! Counters and gauges served at `/metrics` in the Prometheus text exposition format
//! (<https://prometheus.io/docs/instrumenting/exposition_formats/#text-based-format>).
//!
//! Implements: one `Metrics` of atomics shared by every event loop and connection; gauges
//! counted up and down by their owner (a connection counts itself open under its transport in
//! `Conn::set_phase` and uncounts itself there or when it is dropped, whatever ends it: a guard
//! would cost every connection a pointer); the rejected-request counters by status; and the
//! rendering of a snapshot with the hub's figures.
//!
//! Does not: keep histograms or per-channel series (unbounded label sets are a memory hazard).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

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
    /// Command-mode connections closed because their token expired (close 4001).
    pub token_expiry_closes: AtomicU64,
    /// Server TLS (all zero without `--tls-cert`).
    pub tls: TlsMetrics,
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
        out
    }
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
