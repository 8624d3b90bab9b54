//! One mio event loop: accept, read, hand bytes to `Conn`, apply hub commands, write, time out.

use std::collections::{HashMap, VecDeque};
use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, TcpListener as StdListener};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use log::{debug, info, warn};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use slab::Slab;

use super::timers::{ConnId, Tick, Timers};
use super::tls::{TlsAcceptor, TlsStream, TlsStreamError};
use super::{IpEntry, Shared};
use crate::conn::{Conn, ConnEnv};
use crate::http1::response::write_full;
use crate::hub::{ChannelName, SinkId};
use crate::metrics::Metrics;
use crate::output::Cork;

const LISTENER: Token = Token(usize::MAX);
/// The TLS listener's token, when plain and TLS listeners are both served.
const TLS_LISTENER: Token = Token(usize::MAX - 3);
const SIGNALS: Token = Token(usize::MAX - 1);
/// The token of the loop's `mio::Waker`, woken when other loops leave deliveries in its inbox
/// or the server starts draining.
pub const WAKER: Token = Token(usize::MAX - 2);
/// Most connections accepted in one turn, so a connection flood cannot starve the others.
const ACCEPTS_PER_TURN: usize = 128;
/// Most buffers handed to one `write_vectored` call.
const MAX_IO_SLICES: usize = 64;

/// One accepted connection and what the loop knows about its socket.
struct Slot {
    conn: Conn,
    stream: TcpStream,
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
    /// Queued in the loop's `dirty` list: output from deliveries waits for its slice's write.
    dirty: bool,
    /// The peer's address, counted against the per-IP limit.
    ip_entry: IpEntry,
    /// The TLS session of a connection to the TLS listener (boxed: rustls' state is large,
    /// and plain connections pay 8 bytes for it).
    tls: Option<Box<TlsConn>>,
}

/// A TLS connection's session and what the loop tracks of its handshake.
struct TlsConn {
    stream: TlsStream,
    /// Until the handshake completes: when it must be done by. The connection counts against
    /// `max_tls_handshakes` while this is set.
    handshake_deadline: Option<Instant>,
    /// `close_notify` was queued (sent before shutting the write side).
    close_notify_sent: bool,
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

/// The channels one connection is subscribed to. Every session subscribes to one channel, so
/// that one is held inline (no allocation per idle subscriber, 16 bytes in the slot); further
/// ones, which only a connection between two requests' subscriptions can hold, are kept by the
/// loop in [`Overflow`], keyed by connection. There are overflow entries only while the inline
/// one is set.
#[derive(Debug, Default)]
struct Subscriptions(Option<ChannelName>);

/// The loop's subscriptions beyond each connection's first.
type Overflow = HashMap<ConnId, Vec<ChannelName>>;

impl Subscriptions {
    fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    fn push(&mut self, channel: ChannelName, id: ConnId, overflow: &mut Overflow) {
        match &self.0 {
            None => self.0 = Some(channel),
            Some(_) => overflow.entry(id).or_default().push(channel),
        }
    }

    /// Forgets one subscription to `channel`; false when there was none.
    fn remove(&mut self, channel: &ChannelName, id: ConnId, overflow: &mut Overflow) -> bool {
        let Some(first) = &self.0 else { return false };
        if first == channel {
            // The next one, if any, moves inline.
            self.0 = None;
            if let Some(more) = overflow.get_mut(&id) {
                self.0 = more.pop();
                if more.is_empty() {
                    overflow.remove(&id);
                }
            }
            return true;
        }
        let Some(more) = overflow.get_mut(&id) else { return false };
        let Some(i) = more.iter().position(|c| c == channel) else { return false };
        more.swap_remove(i);
        if more.is_empty() {
            overflow.remove(&id);
        }
        true
    }

    /// Takes every subscription out, leaving none.
    fn take_all(&mut self, id: ConnId, overflow: &mut Overflow) -> Vec<ChannelName> {
        let mut all = overflow.remove(&id).unwrap_or_default();
        all.extend(self.0.take());
        all
    }
}

/// Which connections of this loop are subscribed to which channel.
#[derive(Default)]
struct Fanout {
    subscribers: HashMap<ChannelName, Vec<ConnId>>,
    /// Subscriptions beyond a connection's first (see [`Subscriptions`]).
    overflow: Overflow,
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
    /// Connections with output from deliveries, oldest first, written a slice per turn.
    dirty: VecDeque<ConnId>,
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
        let env = Arc::new(ConnEnv { config: shared.config.clone(), metrics: shared.metrics.clone() });
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
            let accept_pending = self.listeners.iter().any(|l| l.pending);
            let busy = !self.revisit.is_empty()
                || !self.dirty.is_empty()
                || (accept_pending && self.accept_paused_until.is_none());
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
                            for inbox in &self.shared.inboxes {
                                let _ = inbox.waker.wake();
                            }
                        }
                    }
                    // Woken for deliveries (taken from the inbox in `fan_out`) or the drain.
                    WAKER => {}
                    token => self.service(conn_id(token), event.is_readable() || event.is_read_closed(), now),
                }
            }
            if self.drain_deadline.is_none() && self.shared.draining.load(Ordering::SeqCst) {
                self.begin_drain(now);
            }
            for id in revisit {
                self.service(id, true, now);
            }
            self.accept(now);
            self.fire_timers(now);
            self.fan_out(now);
            if now >= self.next_expire {
                // Loop 0 sweeps the shared hub; every loop moves its own timer on, or a loop
                // whose sweep time has passed would poll with a zero timeout forever.
                if self.sink.index() == 0 {
                    self.shared.hub.lock().unwrap_or_else(|e| e.into_inner()).expire(now);
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
        for listener in &mut self.listeners {
            let _ = self.poll.registry().deregister(&mut listener.socket);
            listener.pending = false;
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
        let tls = match tls {
            None => None,
            // A flood of handshakes is refused here, before any TLS state exists, so it costs
            // established connections nothing but the accepts.
            Some(_) if self.tls_handshakes >= self.shared.config.net.max_tls_handshakes => {
                Metrics::inc(&self.shared.metrics.tls.handshakes_refused);
                debug!("{peer}: refused, {} TLS handshakes in progress", self.tls_handshakes);
                return;
            }
            Some(acceptor) => match acceptor.accept() {
                Ok(session) => Some(Box::new(TlsConn {
                    stream: session,
                    handshake_deadline: Some(now + self.shared.config.net.tls_handshake_timeout),
                    close_notify_sent: false,
                })),
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
            debug!("{peer}: refused, connection limit reached");
            if tls.is_some() {
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
        entry.insert(Slot {
            conn: Conn::with_env(self.env.clone(), now),
            stream,
            generation,
            interest: Interest::READABLE,
            scheduled: None,
            read_pending: false,
            write_shut: false,
            subscriptions: Subscriptions::default(),
            dirty: false,
            ip_entry,
            tls,
        });
        if self.slots[key].tls.is_some() {
            self.tls_handshakes += 1;
            self.shared.metrics.tls.handshakes_in_progress.fetch_add(1, Ordering::Relaxed);
        }
        Metrics::inc(&self.shared.metrics.connections_accepted);
        debug!("{peer}: accepted as {key}");
        self.reschedule(ConnId::new(key, generation));
    }

    /// Reads (if readable), applies commands, writes, and updates the connection's
    /// registration and deadline.
    fn service(&mut self, id: ConnId, readable: bool, now: Instant) {
        let Some(slot) = self.slots.get_mut(id.key()).filter(|s| s.generation == id.generation) else {
            return; // A stale token of a closed connection.
        };
        if readable || slot.read_pending {
            slot.read_pending = false;
            // Answers go into the loop's spare buffers, not freshly allocated ones.
            slot.conn.lend_output(&mut self.cork);
            let mut budget = self.shared.config.net.read_budget_bytes;
            while slot.conn.wants_read() {
                if budget == 0 {
                    slot.read_pending = true;
                    break;
                }
                let read = match &mut slot.tls {
                    None => slot.stream.read(&mut self.scratch),
                    Some(tls) => {
                        let read = tls.stream.read(&mut slot.stream, &mut self.scratch);
                        if tls.handshake_deadline.is_some() && tls.stream.take_handshake_finished() {
                            tls.handshake_deadline = None;
                            self.tls_handshakes -= 1;
                            let metrics = &self.shared.metrics.tls;
                            metrics.handshakes_in_progress.fetch_sub(1, Ordering::Relaxed);
                            Metrics::inc(&metrics.handshakes_completed);
                            if tls.stream.handshake_kind() == Some(rustls::HandshakeKind::Resumed) {
                                Metrics::inc(&metrics.handshakes_resumed);
                            }
                        }
                        read
                    }
                };
                match read {
                    Ok(0) => {
                        slot.conn.handle_eof(now);
                        break;
                    }
                    Ok(n) => {
                        budget = budget.saturating_sub(n);
                        self.shared.metrics.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
                        slot.conn.handle_input(&mut self.scratch[..n], now);
                        apply_commands(&self.shared, self.sink, id, slot, &mut self.fanout, now);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        match TlsStreamError::of(&e) {
                            Some(TlsStreamError::PlainHttp) => {
                                Metrics::inc(&self.shared.metrics.tls.plain_http_refused)
                            }
                            Some(_) => Metrics::inc(&self.shared.metrics.tls.handshake_failures),
                            None => {}
                        }
                        debug!("read: {e}");
                        return self.remove(id.key());
                    }
                }
            }
            if !slot.conn.wants_read() && !slot.conn.is_closed() {
                // Backpressure: come back once output drains.
                slot.read_pending = true;
            }
        }
        // Flushing can let a session queue more (a catching-up feed reads its next page).
        loop {
            apply_commands(&self.shared, self.sink, id, slot, &mut self.fanout, now);
            if let Err(e) = Self::flush(slot, &self.shared.metrics, now) {
                debug!("write: {e}");
                return self.remove(id.key());
            }
            if !slot.conn.has_commands() {
                break;
            }
        }
        // Written out: the buffers go back to the loop (an idle connection holds none).
        slot.conn.reclaim_output(&mut self.cork);
        if slot.conn.is_closed() {
            return self.remove(id.key());
        }
        let tls_wants_write = slot.tls.as_ref().is_some_and(|t| t.stream.wants_write());
        let want = if slot.conn.pending_output().is_empty() && !tls_wants_write {
            Interest::READABLE
        } else {
            Interest::READABLE | Interest::WRITABLE
        };
        if want != slot.interest {
            if let Err(e) =
                self.poll.registry().reregister(&mut slot.stream, token(id.key(), id.generation), want)
            {
                debug!("reregister: {e}");
                return self.remove(id.key());
            }
            slot.interest = want;
        }
        if slot.read_pending && slot.conn.wants_read() {
            self.revisit.push(id);
        }
        self.reschedule(id);
    }

    /// Hands each delivery of this turn to the connections subscribed to its channel, then
    /// flushes each of them once (several messages in one write).
    fn fan_out(&mut self, now: Instant) {
        // Until the inbox stays empty: servicing a connection can resume pipelined requests
        // that publish, and this loop's own publishes do not wake it.
        loop {
            let inbox = &self.shared.inboxes[self.sink.index() as usize];
            let batch = inbox.take();
            if batch.is_empty() && self.dirty.is_empty() {
                return;
            }
            for msg in batch {
                let Some(ids) = self.fanout.subscribers.get(&msg.channel) else { continue };
                for id in ids.clone() {
                    let Some(slot) = self.slots.get_mut(id.key()).filter(|s| s.generation == id.generation)
                    else {
                        continue;
                    };
                    // Many deliveries can arrive in one turn (an inbox batch): write what is
                    // queued before the next one is judged against the send bound, so only a
                    // peer whose socket will not take the bytes counts as a slow consumer; and
                    // once a full write's worth of messages waits, so a publisher outrunning a
                    // sliced fan-out cannot pile up queue entries on connections not yet written.
                    // A write error is found again when the connection is serviced below.
                    let pending = slot.conn.pending_output();
                    if pending.len_bytes() > self.shared.config.transport.max_send_buffer_bytes / 2
                        || pending.segment_count() >= MAX_IO_SLICES
                    {
                        let _ = Self::flush(slot, &self.shared.metrics, now);
                    }
                    slot.conn.handle_delivery(&msg, now);
                    apply_commands(&self.shared, self.sink, id, slot, &mut self.fanout, now);
                    if !slot.dirty {
                        slot.dirty = true;
                        self.dirty.push_back(id);
                    }
                }
            }
            // Written in slices: the loop polls between them, so its other connections (and a
            // publisher) are answered during a large fan-out, and a message published meanwhile
            // joins the output of every connection not yet written: one write carries both.
            for _ in 0..self.shared.config.net.flush_slice_connections {
                let Some(id) = self.dirty.pop_front() else { break };
                if let Some(slot) = self.slots.get_mut(id.key()).filter(|s| s.generation == id.generation) {
                    slot.dirty = false;
                    self.service(id, false, now);
                }
            }
            if !self.dirty.is_empty() {
                return; // The next turn polls without waiting and goes on.
            }
        }
    }

    /// Writes as much output as the socket takes; shuts the write side once a closing
    /// connection's output is flushed.
    fn flush(slot: &mut Slot, metrics: &Metrics, now: Instant) -> io::Result<()> {
        while !slot.conn.pending_output().is_empty() {
            let mut slices = [IoSlice::new(&[]); MAX_IO_SLICES];
            let count = slot.conn.pending_output().io_slices(&mut slices);
            let written = match &mut slot.tls {
                None => slot.stream.write_vectored(&slices[..count]),
                Some(tls) => tls.stream.write_vectored(&mut slot.stream, &slices[..count]),
            };
            match written {
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
        if let Some(tls) = &mut slot.tls {
            if slot.conn.wants_write_shutdown() && !tls.close_notify_sent {
                // RFC 8446 §6.1: close_notify before the write side is closed.
                tls.close_notify_sent = true;
                tls.stream.send_close_notify();
            }
            match tls.stream.flush_tls(&mut slot.stream) {
                Ok(()) => {}
                // The rest goes when the socket is writable; the shutdown waits for it.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        if slot.conn.wants_write_shutdown() && !slot.write_shut {
            slot.write_shut = true;
            let _ = slot.stream.shutdown(Shutdown::Write);
        }
        Ok(())
    }

    fn reschedule(&mut self, id: ConnId) {
        let Some(slot) = self.slots.get_mut(id.key()) else {
            return;
        };
        let handshake = slot.tls.as_ref().and_then(|t| t.handshake_deadline);
        let next = match (slot.conn.poll_timeout(), handshake) {
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
            if slot.tls.as_ref().and_then(|t| t.handshake_deadline).is_some_and(|d| d <= now) {
                Metrics::inc(&self.shared.metrics.tls.handshake_timeouts);
                debug!("closing {}: TLS handshake timeout", id.key());
                self.remove(id.key());
                continue;
            }
            slot.conn.handle_timeout(now);
            self.service(id, false, now);
        }
    }

    fn remove(&mut self, key: usize) {
        let mut slot = self.slots.remove(key);
        let _ = self.poll.registry().deregister(&mut slot.stream);
        self.shared.metrics.connections_open.fetch_sub(1, Ordering::Relaxed);
        self.shared.release_ip(slot.ip_entry);
        if slot.tls.as_ref().is_some_and(|t| t.handshake_deadline.is_some()) {
            self.tls_handshakes -= 1;
            self.shared.metrics.tls.handshakes_in_progress.fetch_sub(1, Ordering::Relaxed);
        }
        if !slot.subscriptions.is_empty() {
            let id = ConnId::new(key, slot.generation);
            let now = Instant::now();
            let mut hub = self.shared.hub.lock().unwrap_or_else(|e| e.into_inner());
            for channel in slot.subscriptions.take_all(id, &mut self.fanout.overflow) {
                hub.unsubscribe(&channel, self.sink, now);
                self.fanout.forget(&channel, id);
            }
        }
        debug!("closed {key}: {}", slot.conn.close_reason().unwrap_or("error"));
    }
}

impl Fanout {
    fn forget(&mut self, channel: &ChannelName, id: ConnId) {
        if let Some(ids) = self.subscribers.get_mut(channel) {
            ids.retain(|i| *i != id);
            if ids.is_empty() {
                self.subscribers.remove(channel);
            }
        }
    }
}

/// Applies a connection's queued hub commands: replies go back to it, subscriptions are
/// recorded for fan-out, and new messages are queued for delivery on every loop that has
/// subscribers for them.
fn apply_commands(
    shared: &Shared,
    sink: SinkId,
    id: ConnId,
    slot: &mut Slot,
    fanout: &mut Fanout,
    now: Instant,
) {
    while let Some(command) = slot.conn.poll_command() {
        let mut hub = shared.hub.lock().unwrap_or_else(|e| e.into_inner());
        let applied = command.apply(&mut hub, sink, now);
        if let Some(published) = applied.published {
            Metrics::inc(&shared.metrics.messages_published);
            // Still under the hub's lock: offsets reach every loop's inbox (this loop's too) in
            // the order the hub assigned them, so each loop sees a channel in order.
            for target in published.sinks.iter() {
                shared.inboxes[target.index() as usize].push(published.message.clone(), target != sink);
            }
        }
        drop(hub);
        if let Some(channel) = applied.subscribed {
            fanout.subscribers.entry(channel.clone()).or_default().push(id);
            slot.subscriptions.push(channel, id, &mut fanout.overflow);
        }
        if let Some(channel) = applied.unsubscribed {
            if slot.subscriptions.remove(&channel, id, &mut fanout.overflow) {
                fanout.forget(&channel, id);
            }
        }
        if let Some(reply) = applied.reply {
            slot.conn.handle_reply(reply, now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(text: &str) -> ChannelName {
        ChannelName::parse(text).unwrap()
    }

    /// Issue #7 (idle connection memory): the slab holds one `Slot` per connection. The socket
    /// is left out (mio's `TcpStream` is larger in debug builds). Issue #15: the TLS session
    /// is one pointer (8 bytes, `None` on plain connections).
    #[test]
    fn slot_size_stays_pinned() {
        use std::mem::size_of;
        let slot = size_of::<Slot>() - size_of::<TcpStream>();
        assert!(slot <= 192, "Slot is {slot} bytes besides its socket");
        assert_eq!(size_of::<Option<Box<TlsConn>>>(), 8);
        assert_eq!(size_of::<Subscriptions>(), 16);
        assert_eq!(size_of::<ConnId>(), 8);
    }

    #[test]
    fn one_subscription_is_inline_and_several_are_kept() {
        let mut overflow = Overflow::new();
        let id = ConnId::new(3, 1);
        let other = ConnId::new(3, 2);
        let mut subs = Subscriptions::default();
        assert!(subs.is_empty() && !subs.remove(&name("a"), id, &mut overflow));
        subs.push(name("a"), id, &mut overflow);
        assert!(subs.0.is_some() && overflow.is_empty());
        subs.push(name("b"), id, &mut overflow);
        subs.push(name("a"), id, &mut overflow);
        // Another connection's subscriptions are apart.
        let mut theirs = Subscriptions::default();
        theirs.push(name("x"), other, &mut overflow);
        theirs.push(name("b"), other, &mut overflow);
        assert!(subs.remove(&name("a"), id, &mut overflow) && !subs.is_empty());
        assert!(!subs.remove(&name("c"), id, &mut overflow));
        assert!(!subs.remove(&name("x"), id, &mut overflow));
        let mut left = subs.take_all(id, &mut overflow);
        left.sort_by(|x, y| x.as_str().cmp(y.as_str()));
        assert_eq!(left, [name("a"), name("b")]);
        assert!(subs.is_empty());
        subs.push(name("a"), id, &mut overflow);
        assert!(subs.remove(&name("a"), id, &mut overflow) && subs.is_empty());
        // Removing the inline one moves the next one inline.
        assert!(theirs.remove(&name("x"), other, &mut overflow));
        assert_eq!(theirs.0.as_ref().map(|c| c.as_str()), Some("b"));
        assert!(overflow.is_empty());
        assert!(theirs.remove(&name("b"), other, &mut overflow) && theirs.is_empty());
    }
}
