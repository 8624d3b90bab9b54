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
//! Every protocol decision is made by [`crate::conn::Conn`], and which connection holds which
//! channel by [`crate::fanout`]; this layer only moves bytes (through each connection's
//! [`stream::ConnStream`]), moves hub commands to the backend and its events back, and
//! schedules deadlines.
//!
//! With `threads` > 1 each loop runs on its own thread with its own listener (SO_REUSEPORT).
//! The loops reach the channels only through a [`crate::hub::backend::HubBackend`] in
//! [`Shared`]; the one `serve` uses is [`LocalHub`], the hub behind a mutex. A publish on one
//! loop reaches the others through their [`Inbox`] and `mio::Waker`, pushed while the hub's
//! lock is held so every loop sees a channel's messages in order, and one wake carries every
//! event queued before the loop drains its inbox.
//!
//! Does not: move connections between loops, or bound an inbox (a loop drains its inbox every
//! turn; the bound on what a slow loop can queue is the publish rate).

mod event_loop;
pub mod limits;
mod local_hub;
pub mod open_files;
pub mod redis_broker;
pub mod stream;
mod timers;
pub mod tls;

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener as StdListener};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use crate::config::Config;
use crate::hub::backend::{ConnAddr, Disconnect, HubBackend, LoopEvent, Submitted};
use crate::hub::Reply;
use crate::hub::{Hub, SinkId};
use crate::metrics::Metrics;

use tls::TlsAcceptor;

pub use event_loop::EventLoop;
use event_loop::WAKER;
pub use limits::Limits;
pub use local_hub::LocalHub;
use mio::{Poll, Waker};
use socket2::{Domain, Protocol, Socket, Type};

/// State shared by every event loop.
#[derive(Debug)]
pub struct Shared {
    /// The validated configuration.
    pub config: Arc<Config>,
    /// The channels, reached only through the backend (see [`crate::hub::backend`]).
    pub backend: Arc<dyn HubBackend>,
    /// Server-wide counters for `/metrics`.
    pub metrics: Arc<Metrics>,
    /// One inbox per event loop, indexed by its sink (the backend holds them too).
    pub inboxes: Arc<[Inbox]>,
    /// Set once on SIGINT/SIGTERM; every loop then drains.
    pub draining: AtomicBool,
    /// Open connections per client address.
    per_ip: Mutex<PerIp>,
    /// The TLS configuration, when a listener speaks TLS.
    pub tls: Option<Arc<TlsAcceptor>>,
}

/// Open connections per client address. Each address counted has an entry whose index its
/// connections keep ([`IpEntry`], 4 bytes) instead of the address itself (17).
#[derive(Debug, Default)]
struct PerIp {
    /// The address and its count of open connections (at least 1).
    entries: slab::Slab<(IpAddr, usize)>,
    by_ip: HashMap<IpAddr, u32>,
}

/// A connection's place in the per-address count, given by [`Shared::admit_ip`] and handed back
/// to [`Shared::release_ip`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpEntry(u32);

impl Shared {
    /// Counts a new connection from `ip`; `None` (and not counted) past the per-IP limit.
    pub fn admit_ip(&self, ip: IpAddr) -> Option<IpEntry> {
        let mut per_ip = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        let PerIp { entries, by_ip } = &mut *per_ip;
        if let Some(&index) = by_ip.get(&ip) {
            let count = &mut entries[index as usize].1;
            if *count >= self.config.net.max_connections_per_ip {
                return None;
            }
            *count += 1;
            return Some(IpEntry(index));
        }
        // The limit is at least 1, so a first connection is always admitted. Entries number at
        // most the open connections, far below u32::MAX.
        let index = u32::try_from(entries.vacant_key()).ok()?;
        entries.insert((ip, 1));
        by_ip.insert(ip, index);
        Some(IpEntry(index))
    }

    /// Uncounts a connection admitted as `entry`.
    pub fn release_ip(&self, entry: IpEntry) {
        let mut per_ip = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        let PerIp { entries, by_ip } = &mut *per_ip;
        let Some((ip, count)) = entries.get_mut(entry.0 as usize) else { return };
        *count -= 1;
        if *count == 0 {
            by_ip.remove(ip);
            entries.remove(entry.0 as usize);
        }
    }
}

/// What the hub backend hands one event loop (deliveries, and replies it answered `Later`),
/// and the waker that tells the loop.
#[derive(Debug)]
pub struct Inbox {
    events: Mutex<Vec<LoopEvent>>,
    /// Wakes the loop's `Poll`.
    pub waker: Waker,
}

impl Inbox {
    /// Queues an event. With `wake`, wakes the loop unless it was already woken for earlier
    /// ones: one wake carries every event queued until the loop drains its inbox. (A loop
    /// queuing for itself needs no wake: it drains its inbox every turn.)
    pub fn push(&self, event: LoopEvent, wake: bool) {
        let mut events = self.events.lock().unwrap_or_else(|e| e.into_inner());
        let first = events.is_empty();
        events.push(event);
        drop(events);
        if first && wake {
            let _ = self.waker.wake();
        }
    }

    /// Takes everything queued.
    pub fn take(&self) -> Vec<LoopEvent> {
        std::mem::take(&mut *self.events.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// Hands a server API `disconnect` to every event loop of this node (each ends its matching
/// connections): what the in-memory hub does with `Command::Disconnect`, and the Redis
/// backend for a connection of this node (it publishes any other to every node).
pub fn send_disconnect(inboxes: &[Inbox], from: ConnAddr, disconnect: Arc<Disconnect>) -> Submitted {
    for (index, inbox) in inboxes.iter().enumerate() {
        inbox.push(LoopEvent::Disconnect(disconnect.clone()), index != usize::from(from.sink.index()));
    }
    Submitted::Reply(Reply::Sent(Ok(())))
}

/// Where to listen: plain HTTP, TLS, or both (each on its own address).
#[derive(Debug, Clone)]
pub struct Listen {
    /// The plain HTTP address.
    pub plain: Option<SocketAddr>,
    /// The TLS address and the configuration it serves.
    pub tls: Option<(SocketAddr, Arc<TlsAcceptor>)>,
}

impl Listen {
    /// Plain HTTP on `addr` only.
    pub fn plain(addr: SocketAddr) -> Listen {
        Listen { plain: Some(addr), tls: None }
    }
}

/// The addresses bound (with the ports picked for port 0), handed to `on_ready`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bound {
    /// The plain HTTP address.
    pub plain: Option<SocketAddr>,
    /// The TLS address.
    pub tls: Option<SocketAddr>,
}

/// Binds the addresses of `listen` and serves with `config.net.threads` event loops until
/// SIGINT or SIGTERM, then drains; SIGHUP reloads the TLS certificate. `on_ready` gets the
/// bound addresses (useful with port 0) once the server accepts connections.
pub fn serve(config: Config, listen: Listen, on_ready: impl FnOnce(Bound)) -> io::Result<()> {
    let limits = config.hub;
    let local = move |inboxes| {
        // The epoch seed is the one piece of randomness the hub needs: a restarted server
        // draws a new one, so cursors from before the restart are recognised as gaps.
        let hub = Hub::new(limits, rand::random());
        Ok(Arc::new(LocalHub::new(hub, inboxes)) as Arc<dyn HubBackend>)
    };
    serve_with(config, listen, local, on_ready)
}

/// [`serve`] with the hub backend `backend` makes from the loops' inboxes (one per loop,
/// indexed by its [`SinkId`]; the backend pushes its [`LoopEvent`]s there and wakes the loop):
/// how a backend other than [`LocalHub`] (a Redis broker's) is plugged in.
pub fn serve_with(
    config: Config,
    listen: Listen,
    backend: impl FnOnce(Arc<[Inbox]>) -> io::Result<Arc<dyn HubBackend>>,
    on_ready: impl FnOnce(Bound),
) -> io::Result<()> {
    config.validate().map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let threads = config.net.threads;
    // Every loop has its own listening sockets on the same addresses (SO_REUSEPORT): the kernel
    // spreads new connections over them, and no loop hands sockets to another.
    let mut per_loop: Vec<Vec<(StdListener, bool)>> = (0..threads).map(|_| Vec::new()).collect();
    let mut bind = |addr: SocketAddr, secure: bool| -> io::Result<SocketAddr> {
        if addr.port() != 0 {
            refuse_if_listened(addr)?;
        }
        let first = reuseport_listener(addr)?;
        let addr = first.local_addr()?;
        per_loop[0].push((first, secure));
        for listeners in per_loop.iter_mut().skip(1) {
            listeners.push((reuseport_listener(addr)?, secure));
        }
        Ok(addr)
    };
    let bound = Bound {
        plain: listen.plain.map(|addr| bind(addr, false)).transpose()?,
        tls: listen.tls.as_ref().map(|(addr, _)| bind(*addr, true)).transpose()?,
    };
    let polls = (0..threads).map(|_| Poll::new()).collect::<io::Result<Vec<_>>>()?;
    let inboxes = polls
        .iter()
        .map(|poll| Ok(Inbox { events: Mutex::new(Vec::new()), waker: Waker::new(poll.registry(), WAKER)? }))
        .collect::<io::Result<Arc<[Inbox]>>>()?;
    let backend = backend(inboxes.clone())?;
    let shared = Arc::new(Shared {
        config: Arc::new(config),
        backend,
        metrics: Arc::new(Metrics::with_loops(threads)),
        inboxes,
        draining: AtomicBool::new(false),
        per_ip: Mutex::new(PerIp::default()),
        tls: listen.tls.map(|(_, acceptor)| acceptor),
    });
    let mut loops = Vec::new();
    for (i, (poll, listeners)) in polls.into_iter().zip(per_loop).enumerate() {
        let sink = SinkId::new(i as u8).ok_or_else(|| io::Error::other("too many event loops"))?;
        loops.push(EventLoop::new(shared.clone(), sink, poll, listeners)?);
    }
    on_ready(bound);
    let handles: Vec<_> = loops
        .into_iter()
        .enumerate()
        .map(|(i, mut event_loop)| {
            std::thread::Builder::new().name(format!("pushwire-loop-{i}")).spawn(move || event_loop.run())
        })
        .collect::<io::Result<_>>()?;
    let mut result = Ok(());
    for handle in handles {
        match handle.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => result = Err(e),
            Err(_) => result = Err(io::Error::other("an event loop panicked")),
        }
    }
    result
}

/// Fails with `AddrInUse` when something already listens on `addr`.
///
/// socket(7), SO_REUSEPORT: any later socket of the same effective user that sets the option
/// may bind the same address and join the group, and the kernel then spreads new connections
/// over every listener of the group by a hash of the 4-tuple. So a second `pushwire serve` (or
/// a forgotten one) on a busy address would start without error and silently take its share
/// of the other's connections (measured: two 2-loop servers on one port got 196 and 204 of
/// 400). A probe without SO_REUSEPORT conflicts with any listener there; it has SO_REUSEADDR,
/// so the TIME_WAIT connections of a server that just stopped do not count. It is closed
/// before the loops' listeners bind (a process binding in between still joins; the probe is a
/// guard against mistakes, not against a hostile process of the same user).
fn refuse_if_listened(addr: SocketAddr) -> io::Result<()> {
    let probe = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    probe.set_reuse_address(true)?;
    probe.bind(&addr.into()).map_err(|e| io::Error::new(e.kind(), format!("{addr} is already in use: {e}")))
}

/// A non-blocking listener with SO_REUSEADDR and SO_REUSEPORT.
fn reuseport_listener(addr: SocketAddr) -> io::Result<StdListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}
