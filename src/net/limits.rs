//! The event loop's and sockets' limits, a leaf (it names no other part of the server but the
//! pure hub's [`crate::hub::SinkId`], whose `MAX_SINKS` bounds the threads) so that
//! [`crate::config`] composes it without importing the event loop.

use std::time::Duration;

use crate::hub::SinkId;

/// File descriptors kept for everything but client connections: stdio, the signal pipe, a
/// TLS certificate being reloaded, the Redis broker's poll, waker and connections, logs.
pub const RESERVED_FDS: u64 = 32;

/// File descriptors each event loop keeps besides its connections: its `epoll`, its waker, its
/// plain and TLS listeners, with room to spare.
pub const RESERVED_FDS_PER_LOOP: u64 = 8;

/// The default `--max-connections` for a soft open-file limit of `soft_limit` with `threads`
/// event loops: the limit minus [`RESERVED_FDS`] and [`RESERVED_FDS_PER_LOOP`] per loop (at
/// least 1). Past it a connection is answered 503 instead of failing `accept` with EMFILE.
pub fn max_connections_for_open_files(soft_limit: u64, threads: usize) -> usize {
    let reserved = RESERVED_FDS + RESERVED_FDS_PER_LOOP * threads as u64;
    usize::try_from(soft_limit.saturating_sub(reserved)).unwrap_or(usize::MAX).max(1)
}

/// Event loop and socket limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Size of the per-loop read buffer shared by all connections, in bytes. Default 64 KiB.
    pub read_chunk_bytes: usize,
    /// Most bytes read from one connection per loop turn before others get their turn; the
    /// rest is read on the next turn. Default 256 KiB.
    pub read_budget_bytes: usize,
    /// Connections with delivered messages written per loop turn before the loop polls again
    /// (a fan-out to more is written over several turns, and what is published meanwhile
    /// shares their writes). Default 256.
    pub flush_slice_connections: usize,
    /// Most open connections; a connection beyond it is answered 503 and closed at once,
    /// without disturbing the others. Default 10,000 here; `pushwire serve` derives its default
    /// from the open-file limit instead ([`max_connections_for_open_files`]).
    pub max_connections: usize,
    /// Most open connections from one client address; beyond it, 503 and close. Default 1,000.
    pub max_connections_per_ip: usize,
    /// SO_SNDBUF of accepted sockets, in bytes; `None` keeps the kernel's autotuning (on
    /// Linux up to `tcp_wmem`'s maximum, 4 MiB by default). The kernel's buffer sits in front
    /// of `max_send_buffer_bytes`: a smaller one makes a stalled subscriber a slow consumer
    /// sooner, at some cost in throughput on long, fast paths. Default `None`.
    pub socket_send_buffer_bytes: Option<usize>,
    /// How long accepting pauses after the process runs out of file descriptors
    /// (EMFILE/ENFILE), so the loop neither exits nor spins. Default 100 ms.
    pub accept_pause: Duration,
    /// Event loops, each on its own thread with its own `Poll` and listener. Default: the
    /// number of cores. At most 64 (one hub sink each).
    pub threads: usize,
    /// How often expired history and idle channels are swept. Default 1 s.
    pub expire_interval: Duration,
    /// On SIGINT/SIGTERM, the period over which open connections are ended (spread evenly, so
    /// their clients do not reconnect elsewhere as one storm); the process exits when the last
    /// one is gone, at most one second after the period. Default 5 s.
    pub drain_period: Duration,
    /// How long a TLS client has from its connection to the end of the handshake; slower ones
    /// are closed (counted in `/metrics`). Default 10 s.
    pub tls_handshake_timeout: Duration,
    /// Most TLS handshakes in progress per event loop; a TLS connection beyond it is closed at
    /// once (counted), so a handshake flood costs bounded memory and work while established
    /// connections are served. Default 256.
    pub max_tls_handshakes: usize,
    /// Most TLS sessions the server remembers for resumption by session id (TLS 1.2 clients
    /// without tickets); the oldest go first. Tickets cost the server nothing per session.
    /// Default 1,024.
    pub tls_session_cache_entries: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            read_chunk_bytes: 64 * 1024,
            read_budget_bytes: 256 * 1024,
            flush_slice_connections: 256,
            max_connections: 10_000,
            max_connections_per_ip: 1_000,
            socket_send_buffer_bytes: None,
            accept_pause: Duration::from_millis(100),
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()).min(64),
            expire_interval: Duration::from_secs(1),
            drain_period: Duration::from_secs(5),
            tls_handshake_timeout: Duration::from_secs(10),
            max_tls_handshakes: 256,
            tls_session_cache_entries: 1024,
        }
    }
}

impl Limits {
    /// Checks the limits once at startup.
    pub fn validate(&self) -> Result<(), String> {
        if self.read_chunk_bytes < 1024 {
            return Err("read chunk bytes must be at least 1024".into());
        }
        if self.read_budget_bytes < self.read_chunk_bytes {
            return Err("read budget bytes must be at least the read chunk bytes".into());
        }
        if self.threads == 0 || self.threads > SinkId::MAX_SINKS {
            return Err(format!("threads must be between 1 and {}", SinkId::MAX_SINKS));
        }
        if self.flush_slice_connections == 0 {
            return Err("flush slice connections must be at least 1".into());
        }
        if self.max_connections == 0 || self.max_connections_per_ip == 0 {
            return Err("max connections must be at least 1".into());
        }
        if self.max_tls_handshakes == 0 || self.tls_session_cache_entries == 0 {
            return Err("max TLS handshakes and TLS session cache entries must be at least 1".into());
        }
        if self.tls_handshake_timeout.is_zero() {
            return Err("the TLS handshake timeout must be more than 0".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_connections_follow_the_open_file_limit_minus_the_reserve() {
        assert_eq!(max_connections_for_open_files(1024, 1), 1024 - 40);
        assert_eq!(max_connections_for_open_files(20_000, 2), 20_000 - 48);
        assert_eq!(max_connections_for_open_files(1 << 20, 64), (1 << 20) - 32 - 512);
        assert_eq!(max_connections_for_open_files(10, 4), 1, "never zero");
    }
}
