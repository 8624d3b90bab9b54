//! One mio event loop: accept, read, hand bytes to `Conn`, apply hub commands, write, time out.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};
use std::net::TcpListener as StdListener;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use log::{debug, info, warn};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use slab::Slab;

use super::stream::{self, ConnStream, TlsConn};
use super::timers::{ConnId, Tick, Timers};
use super::tls::{TlsAcceptor, TlsStreamError};
use super::{IpEntry, Shared};
use crate::conn::{Conn, ConnEnv};
use crate::fanout::{self, Fanout, SlotSubscriptions, Subscriptions};
use crate::http1::response::write_full;
use crate::hub::backend::{ConnAddr, Disconnect, DisconnectTarget, LoopEvent};
use crate::hub::{Command, Reply, SinkId};
use crate::metrics::{LocalHistogram, Metrics};
use crate::output::{Cork, MAX_IO_SLICES};
use crate::protocol::Transport;

const LISTENER: Token = Token(usize::MAX);
/// The TLS listener's token.
const TLS_LISTENER: Token = Token(usize::MAX - 3);
const SIGNALS: Token = Token(usize::MAX - 1);
/// The token of the loop's `mio::Waker`, woken when other loops leave deliveries in its inbox
/// or the server starts draining.
pub const WAKER: Token = Token(usize::MAX - 2);
/// Most connections accepted in one turn, so a connection flood cannot starve the others.
const ACCEPTS_PER_TURN: usize = 128;

/// The log target of the one debug line per refused request, connection or handshake
/// (`RUST_LOG=pushwire::refused=debug` shows only those; README "Logs").
pub const REFUSED_TARGET: &str = "pushwire::refused";

/// Logs one refusal: who (`peer`, `None` when the socket no longer knows it), the HTTP status
/// answered (`None`: none was, e.g. a connection closed at once or a refused command) and why.
fn log_refused(peer: Option<std::net::SocketAddr>, status: Option<u16>, reason: &str) {
    let peer = peer.map_or_else(|| "unknown".to_owned(), |p| p.to_string());
    let shown = status.map_or_else(|| "no status".to_owned(), |s| s.to_string());
    debug!(target: REFUSED_TARGET, peer = peer.as_str(), status = status, reason = reason;
        "refused {peer}: {shown}, {reason}");
}

/// One accepted connection and what the loop knows about its socket.
struct Slot {
    conn: Conn,
    stream: ConnStream,
    generation: u32,
    /// Interest currently registered with the poll.
    interest: Interest,
    /// The earliest deadline already pushed to the timer heap.
    scheduled: Option<Tick>,
    /// Reading stopped before `WouldBlock` (budget or backpressure): readiness will not be
    /// reported again, so the loop must come back by itself.
    read_pending: bool,
    write_shut: bool,
    /// Channels this connection is subscribed to (usually one, held inline).
    subscriptions: Subscriptions,
    /// The transport of the inline subscription (apart, so this byte fills padding).
    subscribed_as: Transport,
    /// Queued in the loop's `dirty` list: output from deliveries waits for its slice's write.
    dirty: bool,
    /// The peer's address, counted against the per-IP limit.
    ip_entry: IpEntry,
}

/// A listening socket of the loop.
struct Listener {
    socket: TcpListener,
    token: Token,
    /// Set for the TLS listener: its connections speak TLS.
    tls: Option<Arc<TlsAcceptor>>,
    /// Readiness was reported and accepting has not yet seen `WouldBlock`.
    pending: bool,
}

fn token(key: usize, generation: u32) -> Token {
    Token((generation as usize) << 32 | key)
}

fn conn_id(token: Token) -> ConnId {
    ConnId::new(token.0 & 0xffff_ffff, (token.0 >> 32) as u32)
}

/// A single-threaded mio event loop serving connections from one listener.
pub struct EventLoop {
    shared: Arc<Shared>,
    /// The configuration and counters, shared by every connection of the loop.
    env: Arc<ConnEnv>,
    sink: SinkId,
    poll: Poll,
    listeners: Vec<Listener>,
    signals: Option<Signals>,
    slots: Slab<Slot>,
    next_generation: u32,
    timers: Timers,
    /// Connections to service again this turn without a readiness event.
    revisit: Vec<ConnId>,
    /// The per-loop read buffer shared by all connections.
    scratch: Vec<u8>,
    /// The per-loop output buffers, lent to the connection being serviced.
    cork: Cork,
    fanout: Fanout,
    /// Connections with output from deliveries, oldest first, written a slice per turn, each
    /// with the publish time of the first message queued on it (`None` for a reply).
    dirty: VecDeque<(ConnId, Option<Instant>)>,
    /// Entries ever pushed to and popped from `dirty`: a fan-out is written out once the pops
    /// reach the pushes counted when its last subscriber was queued.
    dirty_pushed: u64,
    dirty_popped: u64,
    /// Fan-outs not yet written out: their publish time and the `dirty_pushed` mark.
    fanouts: VecDeque<(Instant, u64)>,
    /// The publish times of the deliveries written by the current slice (reused, no allocation).
    slice_published: Vec<Instant>,
    /// The latencies this loop observed since it last merged them into the shared metrics.
    delivery_write_latency: LocalHistogram,
    fanout_last_write_latency: LocalHistogram,
    accept_paused_until: Option<Instant>,
    /// TLS handshakes in progress on this loop (at most `max_tls_handshakes`).
    tls_handshakes: usize,
    /// Accepting failed with EMFILE/ENFILE and has not succeeded since (warn once).
    out_of_descriptors: bool,
    next_expire: Instant,
    /// Set by SIGINT/SIGTERM: when the drain must be over.
    drain_deadline: Option<Instant>,
}

impl EventLoop {
    /// Loop number `sink` serving `listeners` (already non-blocking; each marked true when it
    /// speaks TLS with `shared.tls`) with `poll`, whose waker is in `shared.inboxes[sink]`.
    /// Loop 0 also takes the signals and sweeps the hub.
    pub fn new(
        shared: Arc<Shared>,
        sink: SinkId,
        poll: Poll,
        listeners: Vec<(StdListener, bool)>,
    ) -> io::Result<Self> {
        let listeners = listeners
            .into_iter()
            .map(|(socket, secure)| {
                let mut socket = TcpListener::from_std(socket);
                let token = if secure { TLS_LISTENER } else { LISTENER };
                poll.registry().register(&mut socket, token, Interest::READABLE)?;
                let tls = if secure {
                    Some(shared.tls.clone().ok_or_else(|| io::Error::other("a TLS listener without TLS"))?)
                } else {
                    None
                };
                Ok(Listener { socket, token, tls, pending: false })
            })
            .collect::<io::Result<Vec<_>>>()?;
        let signals = if sink.index() == 0 {
            let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP])?;
            poll.registry().register(&mut signals, SIGNALS, Interest::READABLE)?;
            Some(signals)
        } else {
            None
        };
        let scratch = vec![0; shared.config.net.read_chunk_bytes];
        let started = Instant::now();
        let next_expire = started + shared.config.net.expire_interval;
        // The wall clock is read once here; tokens' expiries are seconds from it (`UnixClock`).
        let unix_s =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let clock = crate::transport::token::UnixClock::new(started, unix_s);
        // The filter cannot change while running: whether refusals are logged is read once.
        let record_refusals = log::log_enabled!(target: REFUSED_TARGET, log::Level::Debug);
        let env = ConnEnv::new(shared.config.clone(), shared.metrics.clone())
            .with_unix_clock(clock)
            .with_refusals_recorded(record_refusals);
        let env = Arc::new(env);
        Ok(EventLoop {
            shared,
            env,
            sink,
            poll,
            listeners,
            signals,
            slots: Slab::new(),
            next_generation: 0,
            timers: Timers::new(started),
            revisit: Vec::new(),
            scratch,
            cork: Cork::new(),
            fanout: Fanout::default(),
            dirty: VecDeque::new(),
            dirty_pushed: 0,
            dirty_popped: 0,
            fanouts: VecDeque::new(),
            slice_published: Vec::new(),
            delivery_write_latency: LocalHistogram::default(),
            fanout_last_write_latency: LocalHistogram::default(),
            accept_paused_until: None,
            tls_handshakes: 0,
            out_of_descriptors: false,
            next_expire,
            drain_deadline: None,
        })
    }

    /// Runs until SIGINT or SIGTERM, then drains the connections and returns.
    pub fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        loop {
            let now = Instant::now();
            if let Some(deadline) = self.drain_deadline {
                if self.slots.is_empty() || now >= deadline {
                    break;
                }
            }
            let mut deadline =
                self.timers.next_deadline().map_or(self.next_expire, |t| t.min(self.next_expire));
            if let Some(t) = self.accept_paused_until {
                deadline = deadline.min(t);
            }
            let busy = !self.revisit.is_empty()
                || !self.dirty.is_empty()
                || (self.listeners.iter().any(|l| l.pending) && self.accept_paused_until.is_none());
            let timeout = if busy {
                Some(std::time::Duration::ZERO)
            } else {
                Some(deadline.saturating_duration_since(now))
            };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let now = Instant::now();
            let revisit = std::mem::take(&mut self.revisit);
            for event in events.iter() {
                match event.token() {
                    LISTENER | TLS_LISTENER => {
                        for listener in self.listeners.iter_mut().filter(|l| l.token == event.token()) {
                            listener.pending = true;
                        }
                    }
                    SIGNALS => {
                        let (mut stop, mut reload) = (false, false);
                        for signal in
                            self.signals.as_mut().map(|s| s.pending().collect::<Vec<_>>()).unwrap_or_default()
                        {
                            match signal {
                                SIGHUP => reload = true,
                                _ => stop = true,
                            }
                        }
                        if reload {
                            self.reload_tls();
                        }
                        if stop && !self.shared.draining.swap(true, Ordering::SeqCst) {
                            // Every other loop learns of the drain through its waker.
                            for inbox in self.shared.inboxes.iter() {
                                let _ = inbox.waker.wake();
                            }
                        }
                    }
                    // Woken for the inbox (drained in `fan_out`) or the drain.
                    WAKER => {}
                    token => {
                        let read = match (event.is_readable(), event.is_read_closed()) {
                            (_, true) => Read::UntilWouldBlock,
                            (true, false) => Read::UntilShort,
                            (false, false) => Read::No,
                        };
                        self.service(conn_id(token), read, now)
                    }
                }
            }
            if self.drain_deadline.is_none() && self.shared.draining.load(Ordering::SeqCst) {
                self.begin_drain(now);
            }
            for id in revisit {
                self.service(id, Read::UntilWouldBlock, now);
            }
            self.accept(now);
            self.fire_timers(now);
            self.fan_out(now);
            if now >= self.next_expire {
                // Loop 0 sweeps the shared hub; every loop moves its own timer on, or a loop
                // whose sweep time has passed would poll with a zero timeout forever.
                if self.sink.index() == 0 {
                    self.shared.backend.expire(now);
                }
                self.next_expire = now + self.shared.config.net.expire_interval;
            }
        }
        info!("stopped; {} connections were still open", self.slots.len());
        Ok(())
    }

    /// Stops accepting and schedules every connection's end over the drain period.
    fn begin_drain(&mut self, now: Instant) {
        let period = self.shared.config.net.drain_period;
        info!("draining {} connections over {period:?}", self.slots.len());
        // Closed, not only deregistered: an open listener stays in the SO_REUSEPORT group
        // (socket(7)), so the kernel would go on completing handshakes for it that nobody
        // accepts (clients hang until the process exits). Closed, new clients are refused at
        // once, and the address is free for a server that takes over.
        for mut listener in self.listeners.drain(..) {
            let _ = self.poll.registry().deregister(&mut listener.socket);
        }
        self.drain_deadline = Some(now + period + std::time::Duration::from_secs(1));
        let ids: Vec<ConnId> = self.slots.iter().map(|(key, s)| ConnId::new(key, s.generation)).collect();
        let count = ids.len().max(1) as u32;
        for (i, id) in ids.into_iter().enumerate() {
            if let Some(slot) = self.slots.get_mut(id.key()) {
                slot.conn.begin_drain(now + period * i as u32 / count);
            }
            self.reschedule(id);
        }
    }

    /// On SIGHUP: loads the TLS certificate and key again (new handshakes use them; open
    /// connections keep theirs). A pair that fails to load leaves the current one in place.
    fn reload_tls(&mut self) {
        let Some(tls) = &self.shared.tls else {
            info!("SIGHUP: no TLS certificate to reload");
            return;
        };
        match tls.reload() {
            Ok(()) => {
                Metrics::inc(&self.shared.metrics.tls.reloads);
                info!("SIGHUP: reloaded the TLS certificate from {}", tls.files().cert_pem.display());
            }
            Err(e) => {
                Metrics::inc(&self.shared.metrics.tls.reload_failures);
                warn!("SIGHUP: TLS reload failed, keeping the current certificate: {e}");
            }
        }
    }

    fn accept(&mut self, now: Instant) {
        if self.drain_deadline.is_some() {
            return;
        }
        if let Some(until) = self.accept_paused_until {
            if now < until {
                return;
            }
            self.accept_paused_until = None;
        }
        for i in 0..self.listeners.len() {
            if self.listeners[i].pending && !self.accept_from(i, now) {
                return;
            }
        }
    }

    /// Accepts from listener `i` until `WouldBlock` or the per-turn budget; false when accepting
    /// paused (out of descriptors).
    fn accept_from(&mut self, i: usize, now: Instant) -> bool {
        for _ in 0..ACCEPTS_PER_TURN {
            match self.listeners[i].socket.accept() {
                Ok((stream, peer)) => {
                    self.out_of_descriptors = false;
                    let tls = self.listeners[i].tls.clone();
                    self.admit(stream, peer, tls.as_deref(), now)
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.listeners[i].pending = false;
                    return true;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if matches!(e.raw_os_error(), Some(23 | 24)) => {
                    // EMFILE (24) / ENFILE (23): out of descriptors. Pause instead of exiting
                    // or spinning on a listener that stays readable.
                    if !self.out_of_descriptors {
                        warn!("accept: {e}; pausing accepts until descriptors are free");
                        self.out_of_descriptors = true;
                    }
                    self.accept_paused_until = Some(now + self.shared.config.net.accept_pause);
                    return false;
                }
                Err(e) => {
                    // ECONNABORTED and friends concern one connection only.
                    debug!("accept: {e}");
                }
            }
        }
        // Budget used up: more may be waiting, so come back next turn.
        true
    }

    fn admit(
        &mut self,
        mut stream: TcpStream,
        peer: std::net::SocketAddr,
        tls: Option<&TlsAcceptor>,
        now: Instant,
    ) {
        let session = match tls {
            None => None,
            // A flood of handshakes is refused here, before any TLS state exists, so it costs
            // established connections nothing but the accepts.
            Some(_) if self.tls_handshakes >= self.shared.config.net.max_tls_handshakes => {
                Metrics::inc(&self.shared.metrics.tls.handshakes_refused);
                let reason =
                    format!("{} TLS handshakes in progress (--max-tls-handshakes)", self.tls_handshakes);
                log_refused(Some(peer), None, &reason);
                return;
            }
            Some(acceptor) => match acceptor.accept() {
                Ok(session) => Some(session),
                Err(e) => {
                    warn!("{peer}: TLS session: {e}");
                    return;
                }
            },
        };
        // Both limits are global (shared by every loop); counting first and undoing on refusal
        // keeps them exact when several loops accept at once.
        let limits = &self.shared.config.net;
        let open = self.shared.metrics.connections_open.fetch_add(1, Ordering::Relaxed) as usize + 1;
        let ip_entry = if open <= limits.max_connections { self.shared.admit_ip(peer.ip()) } else { None };
        let Some(ip_entry) = ip_entry else {
            self.shared.metrics.connections_open.fetch_sub(1, Ordering::Relaxed);
            Metrics::inc(&self.shared.metrics.connections_refused);
            let reason = if open > limits.max_connections {
                format!("{} connections open (--max-connections)", limits.max_connections)
            } else {
                format!(
                    "{} connections from this address (--max-connections-per-ip)",
                    limits.max_connections_per_ip
                )
            };
            // A TLS client gets no 503 (it would not read one): the connection just closes.
            log_refused(Some(peer), session.is_none().then_some(503), &reason);
            if session.is_some() {
                return; // A plain 503 means nothing to a TLS client: just close.
            }
            // Best effort: one non-blocking write of a 503, then close.
            let mut bytes = Vec::new();
            write_full(
                &mut bytes,
                503,
                &[("Content-Type", "text/plain")],
                b"too many connections\n",
                false,
                true,
            );
            let _ = stream.write(&bytes);
            return;
        };
        let _ = stream.set_nodelay(true);
        if let Some(bytes) = self.shared.config.net.socket_send_buffer_bytes {
            let _ = socket2::SockRef::from(&stream).set_send_buffer_size(bytes);
        }
        self.next_generation = self.next_generation.wrapping_add(1);
        let generation = self.next_generation;
        let entry = self.slots.vacant_entry();
        let key = entry.key();
        if let Err(e) = self.poll.registry().register(&mut stream, token(key, generation), Interest::READABLE)
        {
            warn!("register: {e}");
            self.shared.metrics.connections_open.fetch_sub(1, Ordering::Relaxed);
            self.shared.release_ip(ip_entry);
            return;
        }
        let stream = match session {
            None => ConnStream::Plain(stream),
            Some(session) => {
                self.tls_handshakes += 1;
                self.shared.metrics.tls.handshakes_in_progress.fetch_add(1, Ordering::Relaxed);
                let deadline = now + self.shared.config.net.tls_handshake_timeout;
                ConnStream::Tls(Box::new(TlsConn::new(stream, session, deadline)))
            }
        };
        self.shared.metrics.open_on_loop(self.sink.index().into());
        entry.insert(Slot {
            conn: Conn::with_env(self.env.clone(), now),
            stream,
            generation,
            interest: Interest::READABLE,
            scheduled: None,
            read_pending: false,
            write_shut: false,
            subscriptions: Subscriptions::default(),
            subscribed_as: Transport::Poll,
            dirty: false,
            ip_entry,
        });
        Metrics::inc(&self.shared.metrics.connections_accepted);
        debug!("{peer}: accepted as {key}");
        self.reschedule(ConnId::new(key, generation));
    }

    /// One connection's turn, as named steps: read into the connection, pump its commands
    /// and write from it, then register the interest it now has and reschedule it.
    fn service(&mut self, id: ConnId, read: Read, now: Instant) {
        let Some(slot) = live(&mut self.slots, id) else {
            return; // A stale token of a closed connection.
        };
        let mut pump = Pump { shared: &self.shared, sink: self.sink, fanout: &mut self.fanout };
        let turn = read_into_conn(slot, id, read, &mut self.scratch, &mut self.cork, &mut pump, now)
            .and_then(|()| pump_and_write(slot, id, &mut pump, now));
        if let Some(resumed) = slot.stream.take_handshake_finished() {
            self.tls_handshakes -= 1;
            let metrics = &self.shared.metrics.tls;
            metrics.handshakes_in_progress.fetch_sub(1, Ordering::Relaxed);
            Metrics::inc(&metrics.handshakes_completed);
            if resumed {
                Metrics::inc(&metrics.handshakes_resumed);
            }
        }
        // Written out: the buffers go back to the loop (an idle connection holds none).
        slot.conn.reclaim_output(&mut self.cork);
        log_conn_refusals(slot);
        if turn.is_err() || slot.conn.is_closed() {
            return self.remove(id.key());
        }
        if self.update_interest(id).is_err() {
            return self.remove(id.key());
        }
        self.come_back(id);
    }

    /// Comes back this turn when reading stopped early with the connection still wanting to
    /// read (readiness will not be reported again), and at its next deadline.
    fn come_back(&mut self, id: ConnId) {
        let slot = &self.slots[id.key()];
        if slot.read_pending && slot.conn.wants_read() {
            self.revisit.push(id);
        }
        self.reschedule(id);
    }

    /// Registers for what the connection and its stream now wait for ([`stream::interest`]).
    fn update_interest(&mut self, id: ConnId) -> Result<(), Gone> {
        let slot = &mut self.slots[id.key()];
        let want = stream::interest(!slot.conn.pending_output().is_empty(), &slot.stream);
        if want != slot.interest {
            if let Err(e) =
                self.poll.registry().reregister(&mut slot.stream, token(id.key(), id.generation), want)
            {
                debug!("reregister: {e}");
                return Err(Gone);
            }
            slot.interest = want;
        }
        Ok(())
    }

    /// Drains the inbox: hands each delivery to the connections subscribed to its channel and
    /// each reply to its connection, then writes the connections so touched a slice at a time
    /// (several messages in one write).
    fn fan_out(&mut self, now: Instant) {
        // Until the inbox stays empty: servicing a connection can resume pipelined requests
        // that publish, and this loop's own publishes do not wake it.
        loop {
            let inbox = &self.shared.inboxes[self.sink.index() as usize];
            let batch = inbox.take();
            if batch.is_empty() && self.dirty.is_empty() {
                return;
            }
            for event in batch {
                match event {
                    LoopEvent::Delivery(msg) => {
                        let mut delivered = false;
                        for id in self.fanout.subscribers(&msg.channel).to_vec() {
                            let Some(slot) = live(&mut self.slots, id) else { continue };
                            delivered = true;
                            // A write error is found again when the connection is serviced.
                            let max_bytes = self.shared.config.transport.max_send_buffer_bytes;
                            if fanout::write_before_delivery(slot.conn.pending_output(), max_bytes) {
                                let _ = write_from_conn(slot, &self.shared.metrics, now);
                            }
                            // Into a spare queue of the loop's: no allocation per delivery.
                            slot.conn.lend_output(&mut self.cork);
                            slot.conn.handle_delivery(&msg, now);
                            Pump { shared: &self.shared, sink: self.sink, fanout: &mut self.fanout }
                                .commands(id, slot, now);
                            if !slot.dirty {
                                slot.dirty = true;
                                self.dirty.push_back((id, Some(msg.published_at)));
                                self.dirty_pushed += 1;
                            }
                        }
                        if delivered {
                            self.fanouts.push_back((msg.published_at, self.dirty_pushed));
                        }
                    }
                    LoopEvent::Reply { conn: id, reply } => self.hand_reply(id, *reply, now),
                    LoopEvent::Disconnect(disconnect) => self.disconnect(&disconnect, now),
                    LoopEvent::Presence(event) => {
                        for addr in event.notify.iter().filter(|a| a.sink == self.sink) {
                            let id = addr.conn;
                            let Some(slot) = live(&mut self.slots, id) else { continue };
                            slot.conn.handle_presence(&event, now);
                            if !slot.dirty {
                                slot.dirty = true;
                                self.dirty.push_back((id, None));
                                self.dirty_pushed += 1;
                            }
                        }
                    }
                }
            }
            // Written in slices: the loop polls between them, so its other connections (and a
            // publisher) are answered during a large fan-out, and a message published meanwhile
            // joins the output of every connection not yet written: one write carries both.
            self.slice_published.clear();
            for _ in 0..self.shared.config.net.flush_slice_connections {
                let Some((id, published_at)) = self.dirty.pop_front() else { break };
                self.dirty_popped += 1;
                if let Some(slot) = live(&mut self.slots, id) {
                    slot.dirty = false;
                    self.service(id, Read::No, now);
                    self.slice_published.extend(published_at);
                }
            }
            self.observe_slice();
            if !self.dirty.is_empty() {
                return; // The next turn polls without waiting and goes on.
            }
        }
    }

    /// Records the latencies of the slice just written, with one clock read for the slice:
    /// each subscriber write's, and each fan-out's whose last subscriber it wrote; merges them
    /// into the shared histograms.
    fn observe_slice(&mut self) {
        if self.slice_published.is_empty() && self.fanouts.front().is_none_or(|f| f.1 > self.dirty_popped) {
            return;
        }
        let written = Instant::now();
        for published_at in self.slice_published.drain(..) {
            self.delivery_write_latency.observe(written.saturating_duration_since(published_at));
        }
        while let Some(&(published_at, mark)) = self.fanouts.front() {
            if mark > self.dirty_popped {
                break;
            }
            self.fanouts.pop_front();
            self.fanout_last_write_latency.observe(written.saturating_duration_since(published_at));
        }
        let metrics = &self.shared.metrics;
        metrics.delivery_write_latency.merge(&mut self.delivery_write_latency);
        metrics.fanout_last_write_latency.merge(&mut self.fanout_last_write_latency);
    }

    /// A reply the backend answered `Later`: handed to its connection, whose commands held for
    /// it are then pumped, and which is written with the next slice. A subscription that
    /// started for a connection that is gone is ended ([`Fanout::reply_to_gone`]).
    fn hand_reply(&mut self, id: ConnId, reply: Reply, now: Instant) {
        let from = ConnAddr { sink: self.sink, conn: id };
        let Some(slot) = live(&mut self.slots, id) else {
            if let Some(unsubscribe) = self.fanout.reply_to_gone(id, reply) {
                self.shared.backend.submit(from, unsubscribe, now);
            }
            return;
        };
        let metrics = &self.shared.metrics;
        let published = matches!(reply, Reply::Published(_));
        fanout::handle_late_reply(
            &mut slot.conn,
            &mut SlotSubscriptions { channels: &mut slot.subscriptions, transport: &mut slot.subscribed_as },
            &mut self.fanout,
            &*self.shared.backend,
            from,
            reply,
            metrics,
            now,
        );
        Pump { shared: &self.shared, sink: self.sink, fanout: &mut self.fanout }.commands(
            id,
            &mut self.slots[id.key()],
            now,
        );
        if published && !self.slots[id.key()].dirty {
            // A publisher waits for this answer before its next publish (one keep-alive
            // request at a time): written now, not behind the connections of a fan-out
            // already queued, which would hold every publish for the time of a whole fan-out
            // (the in-memory hub answers a publish at once, too).
            self.service(id, Read::No, now);
        } else {
            self.mark_dirty(id);
        }
    }

    /// A server API `disconnect`: ends this loop's connections it names (one by address, or
    /// every one of a user); each is written with the next slice. Costs one step per
    /// connection of the loop for a user (an operator's call, not a per-message path).
    fn disconnect(&mut self, disconnect: &Disconnect, now: Instant) {
        let ids: Vec<ConnId> = match &disconnect.target {
            DisconnectTarget::Conn(addr) if addr.sink == self.sink => vec![addr.conn],
            DisconnectTarget::Conn(_) => Vec::new(),
            DisconnectTarget::User(user) => self
                .slots
                .iter()
                .filter(|(_, s)| s.conn.user() == Some(&**user))
                .map(|(key, s)| ConnId::new(key, s.generation))
                .collect(),
        };
        for id in ids {
            let Some(slot) = live(&mut self.slots, id) else { continue };
            match &disconnect.channel {
                Some(channel) => slot.conn.handle_unsubscribe(channel, &disconnect.reason, now),
                None => slot.conn.handle_disconnect(disconnect.code, &disconnect.reason, now),
            }
            Pump { shared: &self.shared, sink: self.sink, fanout: &mut self.fanout }.commands(
                id,
                &mut self.slots[id.key()],
                now,
            );
            self.mark_dirty(id);
        }
    }

    /// Queues the connection for the next slice's write, once.
    fn mark_dirty(&mut self, id: ConnId) {
        let slot = &mut self.slots[id.key()];
        if !slot.dirty {
            slot.dirty = true;
            self.dirty.push_back((id, None));
            self.dirty_pushed += 1;
        }
    }

    /// Schedules the connection's next deadline (unless an earlier one is already scheduled).
    fn reschedule(&mut self, id: ConnId) {
        let Some(slot) = self.slots.get_mut(id.key()) else {
            return;
        };
        let next = match (slot.conn.poll_timeout(), slot.stream.handshake_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if let Some(at) = next {
            let at = self.timers.tick(at);
            if slot.scheduled.is_none_or(|s| at < s) {
                slot.scheduled = Some(at);
                self.timers.push(at, id);
            }
        }
    }

    fn fire_timers(&mut self, now: Instant) {
        while let Some((at, id)) = self.timers.pop_due(now) {
            let Some(slot) = self.slots.get_mut(id.key()).filter(|s| s.generation == id.generation) else {
                continue;
            };
            if slot.scheduled != Some(at) {
                continue; // Superseded by an earlier entry that already fired.
            }
            slot.scheduled = None;
            if slot.stream.handshake_deadline().is_some_and(|d| d <= now) {
                Metrics::inc(&self.shared.metrics.tls.handshake_timeouts);
                log_refused(slot.stream.tcp().peer_addr().ok(), None, "TLS handshake timeout");
                self.remove(id.key());
                continue;
            }
            slot.conn.handle_timeout(now);
            self.service(id, Read::No, now);
        }
    }

    fn remove(&mut self, key: usize) {
        let mut slot = self.slots.remove(key);
        let _ = self.poll.registry().deregister(&mut slot.stream);
        self.shared.metrics.connections_open.fetch_sub(1, Ordering::Relaxed);
        self.shared.metrics.close_on_loop(self.sink.index().into());
        self.shared.release_ip(slot.ip_entry);
        if slot.stream.handshake_deadline().is_some() {
            self.tls_handshakes -= 1;
            self.shared.metrics.tls.handshakes_in_progress.fetch_sub(1, Ordering::Relaxed);
        }
        // The connection's subscriptions end with it (whatever closed it).
        let id = ConnId::new(key, slot.generation);
        let subs =
            &mut SlotSubscriptions { channels: &mut slot.subscriptions, transport: &mut slot.subscribed_as };
        let channels = self.fanout.remove_conn(id, subs, &slot.conn);
        if !channels.is_empty() {
            let now = Instant::now();
            let from = ConnAddr { sink: self.sink, conn: id };
            for (channel, transport) in channels {
                self.shared.backend.submit(from, Command::Unsubscribe { channel, transport }, now);
            }
        }
        debug!("closed {key}: {}", slot.conn.close_reason().unwrap_or("error"));
    }
}

/// Logs the refusals the connection recorded (only when refusal lines are enabled: see
/// [`ConnEnv::record_refusals`]). Called before writing the answers that carry them, while the
/// socket still knows its peer (a client that read its 4xx and left makes it forget).
fn log_conn_refusals(slot: &mut Slot) {
    let mut peer = None;
    while let Some(refused) = slot.conn.poll_refused() {
        let peer = *peer.get_or_insert_with(|| slot.stream.tcp().peer_addr().ok());
        log_refused(peer, refused.status, &refused.reason);
    }
}

/// What a connection's turn reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Read {
    /// Nothing was reported readable (a write, a timer, a delivery): only reading left
    /// pending (`read_pending`) goes on, until the socket would block.
    No,
    /// Until the socket would block: the poll reported the peer's FIN (its EOF is read now),
    /// or reading left pending is resumed.
    UntilWouldBlock,
    /// The poll reported readable without a FIN: a plain TCP read that returns less than it
    /// asked for drained the socket (the poll is edge-triggered, and bytes that arrive after
    /// it raise a new event), so reading ends there without the `recv` that would only say
    /// `WouldBlock`.
    UntilShort,
}

/// A step found that the connection cannot go on (an I/O error, logged where found).
struct Gone;

/// The slot `id` names, unless it is gone (its slot now holds another connection).
fn live(slots: &mut Slab<Slot>, id: ConnId) -> Option<&mut Slot> {
    slots.get_mut(id.key()).filter(|s| s.generation == id.generation)
}

/// Reads what the socket has into the connection (when it is readable or reading was left
/// pending), within the per-turn read budget, pumping its commands after each read. Reading
/// stops early when the budget is spent or the connection wants no more input (backpressure);
/// `read_pending` then brings the loop back. A short plain read ends it ([`Read::UntilShort`]).
fn read_into_conn(
    slot: &mut Slot,
    id: ConnId,
    read: Read,
    scratch: &mut [u8],
    cork: &mut Cork,
    pump: &mut Pump<'_>,
    now: Instant,
) -> Result<(), Gone> {
    if read == Read::No && !slot.read_pending {
        return Ok(());
    }
    let short_read_drains = read == Read::UntilShort && slot.stream.short_read_drains();
    slot.read_pending = false;
    // Answers go into the loop's spare buffers, not freshly allocated ones.
    slot.conn.lend_output(cork);
    let mut budget = pump.shared.config.net.read_budget_bytes;
    while slot.conn.wants_read() {
        if budget == 0 {
            slot.read_pending = true;
            break;
        }
        match slot.stream.read(scratch) {
            Ok(0) => {
                slot.conn.handle_eof(now);
                break;
            }
            Ok(n) => {
                budget = budget.saturating_sub(n);
                pump.shared.metrics.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
                slot.conn.handle_input(&mut scratch[..n], now);
                pump.commands(id, slot, now);
                log_conn_refusals(slot);
                if short_read_drains && n < scratch.len() {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                let tls = &pump.shared.metrics.tls;
                let refused = TlsStreamError::of(&e);
                match refused {
                    Some(TlsStreamError::PlainHttp) => Metrics::inc(&tls.plain_http_refused),
                    Some(_) => Metrics::inc(&tls.handshake_failures),
                    None => {}
                }
                if refused.is_some() {
                    log_refused(slot.stream.tcp().peer_addr().ok(), None, &format!("TLS: {e}"));
                } else {
                    debug!("read: {e}");
                }
                return Err(Gone);
            }
        }
    }
    if !slot.conn.wants_read() && !slot.conn.is_closed() {
        // Backpressure: come back once output drains.
        slot.read_pending = true;
    }
    Ok(())
}

/// Pumps the connection's commands and writes its output, again while writing lets it queue
/// more commands (a catching-up feed reads its next page as its output drains), unless its
/// commands are held for a subscribe's answer ([`fanout::pump`]; the answer pumps them).
fn pump_and_write(slot: &mut Slot, id: ConnId, pump: &mut Pump<'_>, now: Instant) -> Result<(), Gone> {
    loop {
        let held = pump.commands(id, slot, now);
        log_conn_refusals(slot);
        if let Err(e) = write_from_conn(slot, &pump.shared.metrics, now) {
            debug!("write: {e}");
            return Err(Gone);
        }
        if held || !slot.conn.has_commands() {
            return Ok(());
        }
    }
}

/// Writes as much of the connection's output as the stream takes; shuts the write side once a
/// closing connection's output is written.
fn write_from_conn(slot: &mut Slot, metrics: &Metrics, now: Instant) -> io::Result<()> {
    slot.stream.flush_records()?;
    while !slot.conn.pending_output().is_empty() {
        let mut slices = [IoSlice::new(&[]); MAX_IO_SLICES];
        let count = slot.conn.pending_output().io_slices(&mut slices);
        match slot.stream.write_vectored(&slices[..count]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                metrics.bytes_out.fetch_add(n as u64, Ordering::Relaxed);
                slot.conn.consume_output(n, now);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    slot.stream.flush_records()?;
    if slot.conn.wants_write_shutdown() && !slot.write_shut {
        slot.write_shut = slot.stream.shutdown_write();
    }
    Ok(())
}

/// What pumping a connection's commands needs besides the connection: the backend (in
/// `shared`), this loop's number and its fan-out table.
struct Pump<'a> {
    shared: &'a Shared,
    sink: SinkId,
    fanout: &'a mut Fanout,
}

impl Pump<'_> {
    /// Takes the connection's queued hub commands to the backend ([`fanout::pump`]); true
    /// when some stay queued, held for a subscribe's answer.
    fn commands(&mut self, id: ConnId, slot: &mut Slot, now: Instant) -> bool {
        let from = ConnAddr { sink: self.sink, conn: id };
        let backend = &*self.shared.backend;
        fanout::pump(
            &mut slot.conn,
            &mut SlotSubscriptions { channels: &mut slot.subscriptions, transport: &mut slot.subscribed_as },
            self.fanout,
            backend,
            from,
            &self.shared.metrics,
            now,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue #7 (idle connection memory): the slab holds one `Slot` per connection. The socket
    /// is left out (mio's `TcpStream` is larger in debug builds).
    #[test]
    fn slot_size_stays_pinned() {
        use std::mem::size_of;
        let slot = size_of::<Slot>() - size_of::<ConnStream>();
        assert!(slot <= 168, "Slot is {slot} bytes besides its socket");
        assert_eq!(size_of::<Subscriptions>(), 8);
        assert_eq!(size_of::<ConnId>(), 8);
    }
}
