//! The mio server: the only place (with the clients) that touches sockets and the clock.
//!
//! Implements: a listener, a slab of connections with generation-checked tokens, readiness
//! drained to `WouldBlock` under a per-turn read budget (with a revisit list for sockets the
//! budget cut off), vectored writes of each connection's bounded output, a timer heap whose
//! earliest deadline becomes the poll timeout, accept errors (EMFILE/ENFILE) survived by pausing
//! accepts, and a graceful drain on SIGINT/SIGTERM: the listener closes, every connection is
//! ended at its own instant spread over `drain_period` (parked long polls answered, streams
//! ended, WebSockets closed with 1001), and the process exits 0.
//!
//! Every protocol decision is made by [`crate::conn::Conn`]; this layer only moves bytes,
//! applies hub commands and schedules deadlines.
//!
//! Does not: run more than one event loop yet.

mod event_loop;
mod timers;

use std::io;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::config::Config;
use crate::hub::Hub;
use crate::metrics::Metrics;

pub use event_loop::EventLoop;

/// Event loop and socket limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Size of the per-loop read buffer shared by all connections, in bytes. Default 64 KiB.
    pub read_chunk_bytes: usize,
    /// Most bytes read from one connection per loop turn before others get their turn; the
    /// rest is read on the next turn. Default 256 KiB.
    pub read_budget_bytes: usize,
    /// Most open connections; a connection beyond it is answered 503 and closed at once.
    /// Default 10,000.
    pub max_connections: usize,
    /// How long accepting pauses after the process runs out of file descriptors
    /// (EMFILE/ENFILE), so the loop neither exits nor spins. Default 100 ms.
    pub accept_pause: Duration,
    /// How often expired history and idle channels are swept. Default 1 s.
    pub expire_interval: Duration,
    /// On SIGINT/SIGTERM, the period over which open connections are ended (spread evenly, so
    /// their clients do not reconnect elsewhere as one storm); the process exits when the last
    /// one is gone, at most one second after the period. Default 5 s.
    pub drain_period: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            read_chunk_bytes: 64 * 1024,
            read_budget_bytes: 256 * 1024,
            max_connections: 10_000,
            accept_pause: Duration::from_millis(100),
            expire_interval: Duration::from_secs(1),
            drain_period: Duration::from_secs(5),
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
        if self.max_connections == 0 {
            return Err("max connections must be at least 1".into());
        }
        Ok(())
    }
}

/// State shared by every event loop.
#[derive(Debug)]
pub struct Shared {
    /// The validated configuration.
    pub config: Arc<Config>,
    /// The channels.
    pub hub: Mutex<Hub>,
    /// Server-wide counters for `/metrics`.
    pub metrics: Arc<Metrics>,
}

/// Binds `listen` and serves until SIGINT or SIGTERM. `on_ready` gets the bound address
/// (useful with port 0) once the server accepts connections.
pub fn serve(config: Config, listen: SocketAddr, on_ready: impl FnOnce(SocketAddr)) -> io::Result<()> {
    config.validate().map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let listener = StdListener::bind(listen)?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    // The epoch seed is the one piece of randomness the hub needs: a restarted server draws a
    // new one, so cursors from before the restart are recognised as gaps.
    let hub = Hub::new(config.hub, rand::random());
    let shared = Arc::new(Shared {
        config: Arc::new(config),
        hub: Mutex::new(hub),
        metrics: Arc::new(Metrics::default()),
    });
    let mut event_loop = EventLoop::new(shared, listener)?;
    on_ready(addr);
    event_loop.run()
}
