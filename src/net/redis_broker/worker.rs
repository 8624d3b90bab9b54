//! The broker thread: its `mio::Poll`, the command and pub/sub connections, and the live
//! channels (see the module docs of [`super`] for the behaviour).

use std::collections::{HashMap, HashSet, VecDeque};
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use mio::{Events, Poll, Token};

use super::link::{Link, ReadOutcome, TlsSetup};
use super::order::AnswerOrder;
use super::{
    BrokerConfig, BrokerError, BrokerEvent, BrokerOutbox, BrokerRequest, BrokerStats, Limits, Queue,
};
use crate::hub::backend::{ConnAddr, ConnId, Disconnect};
use crate::hub::presence::{Change, Joining, Member, PresenceEvent};
use crate::hub::{
    ChannelInfo, ChannelName, ChannelPage, Cursor, Epoch, Message, Payload, PresenceList, Replay, Since,
    SinkId, TransportCounts,
};
use crate::metrics::LocalHistogram;
use crate::protocol::Transport;
use crate::redis::control::{
    self, control_channel, length_command, merge_pages, meta_command, node_channel, parse_length_reply,
    parse_meta_reply, Control, ControlFrame,
};
use crate::redis::frame::{parse_frame, Frame};
use crate::redis::info::{info_command, parse_info, Incarnation};
use crate::redis::keys::ChannelKeys;
use crate::redis::presence::{
    add_command, conn_addr, conn_number, list_command, parse_count_reply, parse_list_reply, remove_command,
    PresenceMember, PresenceValue,
};
use crate::redis::pubsub::{parse_pubsub, ping_command, subscribe_command, unsubscribe_command, PubSubEvent};
use crate::redis::resp::{Command, Value};
use crate::redis::script::{
    epoch_candidate, load_commands, parse_publish_reply, parse_read_reply, publish_command, read_command,
    touch_command, Invoke, ScriptContext,
};
use crate::redis::sequence::{ChannelSequence, SequenceAction};
use crate::redis::shard::shard_of;
use crate::redis::ReplyError;

/// The token of the broker's waker.
pub(super) const WAKER: Token = Token(0);
const COMMAND: Token = Token(1);
/// The token of pub/sub connection (shard) 0; shard `i` has `PUBSUB_FIRST + i`.
const PUBSUB_FIRST: usize = 2;
/// Most pub/sub channels named in one `SUBSCRIBE` or `UNSUBSCRIBE`.
const CHANNELS_PER_COMMAND: usize = 1_000;
/// Most reads one subscriber's replay takes (pages, and reads again to reach live delivery).
const MAX_REPLAY_ROUNDS: u32 = 1_000;
/// How often live channels are scanned for lingers, retries and waiting subscribers.
const CHANNEL_SCAN_INTERVAL: Duration = Duration::from_millis(50);
/// Most channel metas one scan refreshes (`Pending::MetaTouch`); the rest wait for the next
/// scan, so a node that subscribed many channels at once spreads their refreshes out.
const MAX_TOUCHES_PER_SCAN: usize = 1_000;
/// Most presence members named in one script call (a refresh of a larger room is several).
const MEMBERS_PER_CALL: usize = 1_000;
/// Least time between a pub/sub connection's `PING` and a probe `PING` sent because one of
/// this node's publishes to its channels was answered (see [`Worker::probe_pubsub`]).
const PROBE_MIN_GAP: Duration = Duration::from_millis(100);

/// A command sent on the command connection, waiting for its reply.
#[derive(Debug)]
enum Pending {
    /// `AUTH`, `SELECT`, `CLIENT SETNAME`: `+OK`.
    Handshake,
    /// `INFO`: right after connecting (`initial`), then every `info_interval`.
    Info { initial: bool },
    /// `SET PREFIX:shard INDEX/COUNT NX GET`: this server's place in the shard list and its length
    /// ([`crate::redis::shard::claim_command`]).
    ShardClaim,
    /// `SCRIPT LOAD`; the connection is ready after the `last` one.
    ScriptLoad { last: bool },
    Publish {
        sink: SinkId,
        token: u64,
        /// Its place among the connection's answers (`AnswerOrder::ticket`), kept on a resend.
        ticket: u64,
        channel: ChannelName,
        event: Option<Arc<str>>,
        payload: Payload,
        invoke: Invoke,
        retried: bool,
    },
    Read {
        sink: SinkId,
        token: u64,
        ticket: u64,
        channel: ChannelName,
        since: Since,
        max_messages: usize,
        invoke: Invoke,
    },
    /// A read the channel's sequence asked for (live channel `id`).
    SequenceRead { channel: ChannelName, id: u64, since: Since, invoke: Invoke },
    /// A subscriber's replay, one page or round of it.
    SubscribeRead(Box<SubscribeRead>),
    /// Presence members added (or refreshed) or removed; the reply is a count.
    PresenceWrite { channel: ChannelName, batch: PresenceBatch, invoke: Invoke },
    /// A presence list asked by a loop.
    PresenceList { sink: SinkId, token: u64, ticket: u64, channel: ChannelName, list: bool, invoke: Invoke },
    /// A `PUBLISH` on a control or node channel; `answer`: a server API disconnect waits.
    ControlPublish { command: Command, answer: Option<DisconnectAnswer> },
    /// An `info` survey's read of the channel's meta (`HMGET`).
    SurveyMeta { survey: u64 },
    /// An `info` survey's read of the history length (`XLEN`).
    SurveyLength { survey: u64 },
    /// `PEXPIRE` of a channel's meta that has subscribers here (`touch_command`).
    MetaTouch { channel: ChannelName },
}

/// Who waits for a control `disconnect` to be published, and what this node applies then.
#[derive(Debug)]
struct DisconnectAnswer {
    sink: SinkId,
    token: u64,
    ticket: u64,
    /// Applied on this node once published (a user's disconnect: every node's).
    local: Option<Arc<Disconnect>>,
}

/// A server API `info` or `channels` asked of every node, waiting for their replies.
#[derive(Debug)]
struct Survey {
    sink: SinkId,
    token: u64,
    /// Nodes of the registry that have not answered yet.
    waiting: HashSet<u64>,
    /// Nodes that answered (one reply each is merged).
    answered: HashSet<u64>,
    deadline: Instant,
    kind: SurveyKind,
}

#[derive(Debug)]
enum SurveyKind {
    Info {
        channel: ChannelName,
        /// Subscriptions summed over this node and the nodes that answered.
        counts: TransportCounts,
        /// The last cursor from Redis, once read.
        meta: Option<Result<Option<Cursor>, BrokerError>>,
        /// The history length from Redis, once read.
        length: Option<Result<usize, BrokerError>>,
    },
    Channels {
        limit: usize,
        /// This node's page and each answer's.
        pages: Vec<ChannelPage>,
    },
}

/// One presence script call's members.
#[derive(Debug)]
enum PresenceBatch {
    Add(Vec<(PresenceMember, PresenceValue)>),
    Remove(Vec<PresenceMember>),
}

/// A presence change of this node queued during a turn, written at its end (consecutive
/// changes of one kind on one channel share a call).
#[derive(Debug)]
enum PresenceOp {
    Add(PresenceMember, PresenceValue),
    Remove(PresenceMember),
}

/// A presence member on this node.
#[derive(Debug)]
struct LocalMember {
    value: PresenceValue,
    /// It receives join and leave events.
    joins: bool,
}

#[derive(Debug)]
struct SubscribeRead {
    channel: ChannelName,
    sink: SinkId,
    token: u64,
    transport: Transport,
    /// The connection, when it joined presence with the subscription.
    member: Option<ConnId>,
    /// Where this round reads from.
    since: Since,
    /// What the rounds so far gathered.
    replay: Option<Replay>,
    rounds: u32,
    invoke: Invoke,
}

#[derive(Debug)]
struct InFlight {
    pending: Pending,
    sent_at: Instant,
}

/// This node's publishes to one channel whose answers are not handed over yet (see
/// `Live::held`).
#[derive(Debug, Default)]
struct Publishing {
    /// Sent and not answered by Redis.
    in_flight: usize,
    /// Answered with a cursor, the answer waiting behind an earlier one of its connection
    /// (`AnswerOrder`).
    behind: usize,
}

/// A connection's lifecycle around its [`Link`].
#[derive(Debug)]
struct Connection {
    link: Option<Link>,
    /// Handshake done (and for the command connection: `INFO` and scripts).
    ready: bool,
    /// When to try connecting again while `link` is `None`.
    retry_at: Option<Instant>,
    backoff: Duration,
    /// A read stopped on its budget: read again without waiting.
    read_pending: bool,
    /// It was ready once: being ready again is a reconnect.
    was_ready: bool,
    /// Set at connect; the connection must be ready by then.
    setup_deadline: Option<Instant>,
}

impl Connection {
    fn new(now: Instant, limits: &Limits) -> Connection {
        Connection {
            link: None,
            ready: false,
            retry_at: Some(now),
            backoff: limits.reconnect_min,
            read_pending: false,
            was_ready: false,
            setup_deadline: None,
        }
    }
}

/// One pub/sub connection (a shard of the live channels: [`shard_of`] the channel name over
/// [`BrokerConfig::pubsub_shards`]) and the (un)subscriptions it has to send.
#[derive(Debug)]
struct PubSub {
    conn: Connection,
    /// Replies still expected for the handshake.
    handshake_left: usize,
    /// When the next periodic `PING` is due.
    next_ping_at: Option<Instant>,
    /// A `PING` is waiting for its pong (one at a time), due by then.
    pong_deadline: Option<Instant>,
    /// When the last `PING` was sent.
    last_ping_at: Option<Instant>,
    to_subscribe: Vec<ChannelName>,
    to_unsubscribe: Vec<String>,
    /// Shard 0 only: `SUBSCRIBE` the control and node channels at the next flush.
    control_to_subscribe: bool,
}

impl PubSub {
    fn new(now: Instant, limits: &Limits) -> PubSub {
        PubSub {
            conn: Connection::new(now, limits),
            handshake_left: 0,
            next_ping_at: None,
            pong_deadline: None,
            last_ping_at: None,
            to_subscribe: Vec::new(),
            to_unsubscribe: Vec::new(),
            control_to_subscribe: false,
        }
    }
}

/// A subscriber waiting for its channel to be live before its replay is read.
#[derive(Debug)]
struct Waiter {
    sink: SinkId,
    token: u64,
    transport: Transport,
    member: Option<ConnId>,
    since: Since,
    deadline: Instant,
}

/// A channel subscribed (or being subscribed) on pub/sub for subscribers on this node.
#[derive(Debug)]
struct Live {
    /// Distinguishes this life of the channel from a later one (replies to reads of an
    /// earlier life are dropped).
    id: u64,
    keys: ChannelKeys,
    /// The pub/sub connection that carries it.
    shard: usize,
    /// Subscriptions per sink (only sinks with at least one).
    sinks: Vec<(SinkId, usize)>,
    /// The same subscriptions per transport (the server API's `info`).
    by_transport: TransportCounts,
    /// `SUBSCRIBE` confirmed on the current pub/sub connection.
    subscribed: bool,
    sequence: ChannelSequence,
    /// The sequence's first read, sent when `SUBSCRIBE` is confirmed.
    first_read: Option<Since>,
    /// A sequence read failed: retried when the command connection is ready.
    read_failed: bool,
    waiting: Vec<Waiter>,
    /// No subscriber left: unsubscribed from pub/sub at this instant.
    linger_until: Option<Instant>,
    /// This node's presence members of the channel (refreshed every third of the ttl).
    members: HashMap<ConnAddr, LocalMember>,
    /// How many of them receive join and leave events.
    watchers: usize,
    /// The cursor of the last publish of this node to the channel answered (see `held`).
    answered: Option<Cursor>,
    /// Messages ready for the sinks but held until this node's publishes in flight to the
    /// channel are answered, so a sink always gets a publish's answer before the message's
    /// delivery (`except_self` skips the delivery by the id the answer carries), whichever
    /// connection Redis answers on first, and while an answer of this node's waits behind an
    /// earlier one of its connection (`Publishing::behind`). Released as the answers are
    /// handed over; bounded in time by `request_timeout` (a late answer closes the connection
    /// and fails the publishes).
    held: VecDeque<Arc<Message>>,
    /// The epoch of the last message handed to the sinks (a change is counted).
    last_epoch: Option<Epoch>,
    /// When the channel's meta is next refreshed while it has subscribers (every third of the
    /// history ttl, so its epoch outlives a quiet spell as it does without Redis); `None`
    /// until the first scan that sees a subscriber.
    touch_at: Option<Instant>,
}

impl Live {
    fn subscriptions(&self) -> usize {
        self.sinks.iter().map(|&(_, n)| n).sum()
    }

    /// Live delivery has a known starting point: a subscriber's replay can be merged.
    fn is_settled(&self) -> bool {
        self.subscribed && self.sequence.delivered().is_some()
    }
}

struct Worker {
    config: BrokerConfig,
    /// For `rediss://`: every connection speaks TLS.
    tls: Option<TlsSetup>,
    poll: Poll,
    queue: Arc<Queue>,
    stats: Arc<BrokerStats>,
    outbox: Arc<dyn BrokerOutbox>,
    cmd: Connection,
    pending: VecDeque<InFlight>,
    /// Each connection's answers in the order of its requests (publishes, reads, presence
    /// lists, disconnects, and the refusals of any request), by sink and token.
    order: AnswerOrder<(SinkId, u64), (BrokerEvent, Option<ChannelName>)>,
    incarnation: Option<Incarnation>,
    next_info_at: Option<Instant>,
    /// The pub/sub connections, one per shard.
    subs: Vec<PubSub>,
    ping_count: u64,
    /// Presence changes of this turn, in order.
    presence_ops: Vec<(ChannelName, PresenceOp)>,
    /// This node's publishes not handed over yet, per channel.
    publishing: HashMap<ChannelName, Publishing>,
    next_presence_refresh_at: Instant,
    channels: HashMap<ChannelName, Live>,
    next_channel_id: u64,
    next_scan_at: Instant,
    /// Events for each sink, handed over at the end of the turn.
    batches: Vec<Vec<BrokerEvent>>,
    buf: Vec<u8>,
    ready_tx: Option<mpsc::Sender<Result<(), String>>>,
    /// Publish round trips of this turn (merged into the stats at its end).
    publish_latency: LocalHistogram,
    /// `PREFIX:control`, subscribed on pub/sub shard 0.
    control_name: String,
    /// `PREFIX:node:NODE`: this node's survey replies, subscribed with it.
    reply_name: String,
    /// Both confirmed on the current shard-0 connection.
    control_subscribed: bool,
    /// The other nodes heard on the control channel, with when.
    nodes: HashMap<u64, Instant>,
    next_heartbeat_at: Option<Instant>,
    /// This node's surveys waiting for replies, by id.
    surveys: HashMap<u64, Survey>,
    next_survey_id: u64,
}

/// The thread's body: runs until [`super::Broker::stop`].
pub(super) fn run(
    config: BrokerConfig,
    tls: Option<TlsSetup>,
    poll: Poll,
    queue: Arc<Queue>,
    stats: Arc<BrokerStats>,
    outbox: Arc<dyn BrokerOutbox>,
    ready_tx: mpsc::Sender<Result<(), String>>,
) {
    let now = Instant::now();
    let (config_namespace, config_node) = (config.namespace.clone(), config.node_id);
    let mut worker = Worker {
        cmd: Connection::new(now, &config.limits),
        subs: (0..config.pubsub_shards).map(|_| PubSub::new(now, &config.limits)).collect(),
        config,
        tls,
        poll,
        queue,
        stats,
        outbox,
        pending: VecDeque::new(),
        order: AnswerOrder::new(),
        incarnation: None,
        next_info_at: None,
        ping_count: 0,
        presence_ops: Vec::new(),
        publishing: HashMap::new(),
        next_presence_refresh_at: now,
        channels: HashMap::new(),
        next_channel_id: 0,
        next_scan_at: now,
        batches: (0..SinkId::MAX_SINKS).map(|_| Vec::new()).collect(),
        buf: vec![0; 64 << 10],
        ready_tx: Some(ready_tx),
        publish_latency: LocalHistogram::default(),
        control_name: control_channel(&config_namespace),
        reply_name: node_channel(&config_namespace, config_node),
        control_subscribed: false,
        nodes: HashMap::new(),
        next_heartbeat_at: None,
        surveys: HashMap::new(),
        next_survey_id: 0,
    };
    let mut events = Events::with_capacity(64);
    loop {
        let timeout = if worker.cmd.read_pending || worker.subs.iter().any(|sub| sub.conn.read_pending) {
            Some(Duration::ZERO)
        } else {
            worker.next_deadline().map(|at| at.saturating_duration_since(Instant::now()))
        };
        if let Err(e) = worker.poll.poll(&mut events, timeout) {
            if e.kind() != io::ErrorKind::Interrupted {
                warn!("redis broker: poll failed: {e}");
                return;
            }
        }
        let now = Instant::now();
        let mut command_io = worker.cmd.read_pending;
        let mut pubsub_io: Vec<bool> = worker.subs.iter().map(|sub| sub.conn.read_pending).collect();
        for event in events.iter() {
            match event.token() {
                COMMAND => command_io = true,
                Token(n) if n >= PUBSUB_FIRST && n - PUBSUB_FIRST < pubsub_io.len() => {
                    pubsub_io[n - PUBSUB_FIRST] = true
                }
                _ => {}
            }
        }
        let (requests, stopping) = {
            let mut state = worker.queue.requests.lock().unwrap_or_else(|e| e.into_inner());
            (std::mem::take(&mut state.requests), state.stopping)
        };
        if stopping {
            worker.close_all();
            return;
        }
        if command_io {
            worker.command_io(now);
        }
        for (shard, io) in pubsub_io.into_iter().enumerate() {
            if io {
                worker.pubsub_io(shard, now);
            }
        }
        for request in requests {
            worker.handle_request(request, now);
        }
        worker.handle_timers(now);
        worker.flush(now);
        worker.send_batches();
        worker.stats.publish_latency.merge(&mut worker.publish_latency);
        worker.stats.commands_in_flight.store(worker.pending.len() as u64, Ordering::Relaxed);
    }
}

/// Errors after which the server cannot take this connection's writes: reconnect.
fn needs_reconnect(error: &ReplyError) -> bool {
    matches!(error.server_code(), Some("READONLY" | "LOADING" | "MASTERDOWN"))
}

fn resolve(config: &BrokerConfig) -> io::Result<SocketAddr> {
    (config.url.host.as_str(), config.url.port)
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "the redis host has no address"))
}

impl Worker {
    fn limits(&self) -> &Limits {
        &self.config.limits
    }

    fn next_deadline(&self) -> Option<Instant> {
        let mut deadlines = vec![
            self.cmd.retry_at,
            self.cmd.setup_deadline,
            self.pending.front().map(|p| p.sent_at + self.limits().request_timeout),
            self.next_info_at,
        ];
        for sub in &self.subs {
            deadlines.extend([
                sub.conn.retry_at,
                sub.conn.setup_deadline,
                sub.next_ping_at,
                sub.pong_deadline,
            ]);
        }
        deadlines.push(self.next_heartbeat_at);
        deadlines.push(self.surveys.values().map(|s| s.deadline).min());
        if !self.channels.is_empty() {
            deadlines.push(Some(self.next_scan_at));
            deadlines.push(Some(self.next_presence_refresh_at));
        }
        deadlines.into_iter().flatten().min()
    }

    fn close_all(&mut self) {
        if let Some(link) = self.cmd.link.take() {
            link.close(self.poll.registry());
        }
        for sub in &mut self.subs {
            if let Some(link) = sub.conn.link.take() {
                link.close(self.poll.registry());
            }
        }
        self.stats.command_up.store(false, Ordering::Relaxed);
        self.stats.pubsub_up.store(false, Ordering::Relaxed);
    }

    // ---- answers ----

    fn answer(&mut self, sink: SinkId, event: BrokerEvent) {
        let failed = matches!(
            &event,
            BrokerEvent::Published { result: Err(_), .. }
                | BrokerEvent::Read { result: Err(_), .. }
                | BrokerEvent::Subscribed { result: Err(_), .. }
                | BrokerEvent::Presence { result: Err(_), .. }
                | BrokerEvent::Disconnected { result: Err(_), .. }
                | BrokerEvent::Info { result: Err(_), .. }
                | BrokerEvent::Channels { result: Err(_), .. }
        );
        if failed {
            BrokerStats::add(&self.stats.failed, 1);
        }
        self.batches[usize::from(sink.index())].push(event);
    }

    fn send_batches(&mut self) {
        for (index, batch) in self.batches.iter_mut().enumerate() {
            if batch.is_empty() {
                continue;
            }
            let sink = SinkId::new(index as u8).expect("64 batches");
            self.outbox.deliver(sink, std::mem::take(batch));
        }
    }

    fn fail_subscribe(&mut self, waiter: Waiter, channel: ChannelName, error: BrokerError, now: Instant) {
        let Waiter { sink, token, transport, member, .. } = waiter;
        if let Some(conn) = member {
            self.leave_presence(&channel, ConnAddr { sink, conn });
        }
        self.remove_subscription(&channel, sink, transport, now);
        self.answer(sink, BrokerEvent::Subscribed { token, channel, transport, result: Err(error) });
    }

    // ---- requests ----

    fn handle_request(&mut self, request: BrokerRequest, now: Instant) {
        match request {
            BrokerRequest::Publish { sink, token, channel, event, payload } => {
                let ticket = self.order.ticket((sink, token));
                let frames = &self.limits().frames;
                if payload.len_bytes() > frames.max_payload_bytes
                    || event.as_ref().is_some_and(|e| e.len() > frames.max_event_bytes)
                {
                    let event = BrokerEvent::Published { token, result: Err(BrokerError::MessageTooLarge) };
                    self.hand_over(sink, token, ticket, event, None);
                    return;
                }
                let pending = Pending::Publish {
                    sink,
                    token,
                    ticket,
                    channel,
                    event,
                    payload,
                    invoke: Invoke::Sha,
                    retried: false,
                };
                self.send_or_fail(pending, now);
            }
            BrokerRequest::Read { sink, token, channel, since, max_messages } => {
                let ticket = self.order.ticket((sink, token));
                let pending =
                    Pending::Read { sink, token, ticket, channel, since, max_messages, invoke: Invoke::Sha };
                self.send_or_fail(pending, now);
            }
            BrokerRequest::Subscribe { sink, token, channel, since, transport, member } => {
                if !self.cmd.ready {
                    let error = BrokerError::Unavailable("not connected to redis".into());
                    let event = BrokerEvent::Subscribed { token, channel, transport, result: Err(error) };
                    self.answer(sink, event);
                    return;
                }
                let deadline = now + self.limits().request_timeout;
                let live = self.live_entry(&channel);
                live.linger_until = None;
                match live.sinks.iter_mut().find(|(s, _)| *s == sink) {
                    Some((_, n)) => *n += 1,
                    None => live.sinks.push((sink, 1)),
                }
                live.by_transport.add(transport);
                let member_conn = member.as_ref().map(|m| m.conn);
                live.waiting.push(Waiter { sink, token, transport, member: member_conn, since, deadline });
                if let Some(member) = member {
                    self.join_presence(&channel, ConnAddr { sink, conn: member.conn }, member.joining);
                }
                self.settle_waiters(&channel, now);
            }
            BrokerRequest::Refused { sink, token, event } => {
                let ticket = self.order.ticket((sink, token));
                self.hand_over(sink, token, ticket, *event, None);
            }
            BrokerRequest::Unsubscribe { sink, channel, transport, conn } => {
                self.leave_presence(&channel, ConnAddr { sink, conn });
                self.remove_subscription(&channel, sink, transport, now);
            }
            BrokerRequest::Presence { sink, token, channel, list } => {
                let ticket = self.order.ticket((sink, token));
                let pending =
                    Pending::PresenceList { sink, token, ticket, channel, list, invoke: Invoke::Sha };
                self.send_or_fail(pending, now);
            }
            BrokerRequest::Disconnect { sink, token, disconnect } => {
                // One node named: only it applies it. A user: every node, this one once
                // Redis took it (its own echo is ignored).
                let to = disconnect.node;
                let local = to.is_none().then(|| disconnect.clone());
                let control = Control::Disconnect { to, disconnect: (*disconnect).clone() };
                let command = self.control_command(&self.control_name, control);
                let ticket = self.order.ticket((sink, token));
                let answer = Some(DisconnectAnswer { sink, token, ticket, local });
                self.send_or_fail(Pending::ControlPublish { command, answer }, now);
            }
            BrokerRequest::Info { sink, token, channel } => {
                let counts = self.channels.get(&channel).map(|live| live.by_transport).unwrap_or_default();
                let request = |id| Control::InfoRequest { id, channel: channel.clone() };
                let kind = SurveyKind::Info { channel: channel.clone(), counts, meta: None, length: None };
                let Some(id) = self.start_survey(sink, token, kind, request, now) else { return };
                self.send_or_fail(Pending::SurveyMeta { survey: id }, now);
                self.send_or_fail(Pending::SurveyLength { survey: id }, now);
                self.finish_survey(id, now);
            }
            BrokerRequest::Channels { sink, token, prefix, after, limit } => {
                let page = self.local_page(&prefix, after.as_deref(), limit);
                let request =
                    |id| Control::ChannelsRequest { id, prefix: prefix.clone(), after: after.clone(), limit };
                let kind = SurveyKind::Channels { limit, pages: vec![page] };
                let Some(id) = self.start_survey(sink, token, kind, request, now) else { return };
                self.finish_survey(id, now);
            }
        }
    }

    // ---- the control channel (see `crate::redis::control`) ----

    /// `PUBLISH` of `control` from this node on the pub/sub channel `name`.
    fn control_command(&self, name: &str, control: Control) -> Command {
        let frame = control::encode(&ControlFrame { from: self.config.node_id, control });
        control::publish_command(name, &frame)
    }

    fn publish_control(&mut self, name: String, control: Control, now: Instant) {
        let command = self.control_command(&name, control);
        self.send_or_fail(Pending::ControlPublish { command, answer: None }, now);
    }

    /// This node's channels with a subscriber, as a `channels` page.
    fn local_page(&self, prefix: &str, after: Option<&str>, limit: usize) -> ChannelPage {
        let names =
            self.channels.iter().filter(|(_, live)| !live.by_transport.is_empty()).map(|(name, _)| name);
        ChannelPage::of(names, prefix, after, limit)
    }

    /// Records a survey and asks every node (`request` with its id); `None` when it cannot
    /// be made (answered with the reason).
    fn start_survey(
        &mut self,
        sink: SinkId,
        token: u64,
        kind: SurveyKind,
        request: impl FnOnce(u64) -> Control,
        now: Instant,
    ) -> Option<u64> {
        let refused = if !self.cmd.ready {
            Some(BrokerError::Unavailable("not connected to redis".into()))
        } else if !self.control_subscribed {
            Some(BrokerError::Unavailable("not subscribed to the redis control channel".into()))
        } else if self.surveys.len() >= self.config.limits.max_surveys {
            Some(BrokerError::Overloaded)
        } else {
            None
        };
        if let Some(error) = refused {
            let event = match kind {
                SurveyKind::Info { channel, .. } => BrokerEvent::Info { token, channel, result: Err(error) },
                SurveyKind::Channels { .. } => BrokerEvent::Channels { token, result: Err(error) },
            };
            self.answer(sink, event);
            return None;
        }
        self.next_survey_id += 1;
        let id = self.next_survey_id;
        let survey = Survey {
            sink,
            token,
            waiting: self.nodes.keys().copied().collect(),
            answered: HashSet::new(),
            deadline: now + self.config.limits.survey_timeout,
            kind,
        };
        self.surveys.insert(id, survey);
        self.publish_control(self.control_name.clone(), request(id), now);
        Some(id)
    }

    /// Answers survey `id` once every node of the registry answered (or its deadline passed)
    /// and, for `info`, Redis's reads are in.
    fn finish_survey(&mut self, id: u64, now: Instant) {
        let Some(survey) = self.surveys.get(&id) else { return };
        let reads_in = match &survey.kind {
            SurveyKind::Info { meta, length, .. } => meta.is_some() && length.is_some(),
            SurveyKind::Channels { .. } => true,
        };
        let late = survey.deadline <= now;
        if !reads_in || (!survey.waiting.is_empty() && !late) {
            return;
        }
        let survey = self.surveys.remove(&id).expect("found above");
        if !survey.waiting.is_empty() {
            BrokerStats::add(&self.stats.survey_timeouts, 1);
            debug!("redis: survey {id} answered without {} node(s)", survey.waiting.len());
        }
        let event = match survey.kind {
            SurveyKind::Info { channel, counts, meta, length } => {
                let result = match (meta.expect("read"), length.expect("read")) {
                    (Err(e), _) | (_, Err(e)) => Err(e),
                    (Ok(last), Ok(length)) => {
                        let subscribers = counts.total();
                        Ok((last.is_some() || subscribers > 0).then_some(ChannelInfo {
                            subscribers,
                            by_transport: counts,
                            last,
                            // A stream left from an earlier incarnation is not this epoch's.
                            history_messages: if last.is_some() { length } else { 0 },
                            history_bytes: None,
                        }))
                    }
                };
                BrokerEvent::Info { token: survey.token, channel, result }
            }
            SurveyKind::Channels { limit, pages } => {
                BrokerEvent::Channels { token: survey.token, result: Ok(merge_pages(pages, limit)) }
            }
        };
        self.answer(survey.sink, event);
    }

    /// A frame on the control channel or this node's reply channel.
    fn control_message(&mut self, payload: &[u8], now: Instant) {
        let frame = match control::parse(payload, &self.config.limits.control) {
            Ok(frame) => frame,
            Err(e) => {
                debug!("redis: {e}");
                BrokerStats::add(&self.stats.bad_control_frames, 1);
                return;
            }
        };
        let from = frame.from;
        // This node's own frames come back too: it applied (or asked) already.
        if from == self.config.node_id {
            return;
        }
        if self.nodes.insert(from, now).is_none() {
            info!("redis: node {from:016x} joined");
            self.stats.nodes.store(self.nodes.len() as u64, Ordering::Relaxed);
        }
        match frame.control {
            Control::Heartbeat { hello } => {
                if hello && self.cmd.ready {
                    let name = self.control_name.clone();
                    self.publish_control(name, Control::Heartbeat { hello: false }, now);
                }
            }
            Control::Disconnect { to, disconnect } => {
                if to.is_none_or(|node| node == self.config.node_id) {
                    self.outbox.disconnect(Arc::new(disconnect));
                }
            }
            Control::InfoRequest { id, channel } => {
                let counts = self.channels.get(&channel).map(|live| live.by_transport).unwrap_or_default();
                let name = node_channel(&self.config.namespace, from);
                self.publish_control(name, Control::InfoReply { id, counts }, now);
            }
            Control::ChannelsRequest { id, prefix, after, limit } => {
                let page = self.local_page(&prefix, after.as_deref(), limit);
                let name = node_channel(&self.config.namespace, from);
                self.publish_control(name, Control::ChannelsReply { id, page }, now);
            }
            Control::InfoReply { id, counts: theirs } => {
                let Some(survey) = self.surveys.get_mut(&id) else {
                    return BrokerStats::add(&self.stats.survey_late_replies, 1);
                };
                if let SurveyKind::Info { counts, .. } = &mut survey.kind {
                    if survey.answered.insert(from) {
                        counts.merge(&theirs);
                    }
                }
                survey.waiting.remove(&from);
                self.finish_survey(id, now);
            }
            Control::ChannelsReply { id, page } => {
                let Some(survey) = self.surveys.get_mut(&id) else {
                    return BrokerStats::add(&self.stats.survey_late_replies, 1);
                };
                if let SurveyKind::Channels { pages, .. } = &mut survey.kind {
                    if survey.answered.insert(from) {
                        pages.push(page);
                    }
                }
                survey.waiting.remove(&from);
                self.finish_survey(id, now);
            }
        }
    }

    /// The heartbeat, the registry's expiry, and surveys past their deadline.
    fn control_timers(&mut self, now: Instant) {
        if self.next_heartbeat_at.is_some_and(|at| at <= now) {
            self.next_heartbeat_at = Some(now + self.config.limits.heartbeat_interval);
            if self.cmd.ready && self.control_subscribed {
                let name = self.control_name.clone();
                self.publish_control(name, Control::Heartbeat { hello: false }, now);
            }
            let timeout = self.config.limits.node_timeout;
            let before = self.nodes.len();
            self.nodes.retain(|node, seen| {
                let alive = now.saturating_duration_since(*seen) < timeout;
                if !alive {
                    info!("redis: node {node:016x} not heard for {timeout:?}: dropped");
                }
                alive
            });
            if self.nodes.len() != before {
                self.stats.nodes.store(self.nodes.len() as u64, Ordering::Relaxed);
                for survey in self.surveys.values_mut() {
                    survey.waiting.retain(|node| self.nodes.contains_key(node));
                }
            }
        }
        let due: Vec<u64> = self
            .surveys
            .iter()
            .filter(|(_, s)| s.deadline <= now || s.waiting.is_empty())
            .map(|(&id, _)| id)
            .collect();
        for id in due {
            self.finish_survey(id, now);
        }
    }

    // ---- presence ----

    fn member_of(&self, addr: ConnAddr) -> PresenceMember {
        PresenceMember { node: self.config.node_id, conn: conn_number(addr) }
    }

    /// Records a member of this node on a live channel and queues its `add`.
    fn join_presence(&mut self, channel: &ChannelName, addr: ConnAddr, joining: Joining) {
        let member = self.member_of(addr);
        let Some(live) = self.channels.get_mut(channel) else { return };
        let value = PresenceValue {
            user: Arc::from(joining.user.as_deref().unwrap_or("")),
            info: Arc::from(joining.info.as_deref().unwrap_or("").as_bytes()),
        };
        let old = live.members.insert(addr, LocalMember { value: value.clone(), joins: joining.joins });
        live.watchers += usize::from(joining.joins);
        live.watchers -= old.map_or(0, |m| usize::from(m.joins));
        self.presence_ops.push((channel.clone(), PresenceOp::Add(member, value)));
    }

    /// Forgets a member of this node (if it is one) and queues its `remove`.
    fn leave_presence(&mut self, channel: &ChannelName, addr: ConnAddr) {
        let member = self.member_of(addr);
        let Some(live) = self.channels.get_mut(channel) else { return };
        let Some(gone) = live.members.remove(&addr) else { return };
        live.watchers -= usize::from(gone.joins);
        self.presence_ops.push((channel.clone(), PresenceOp::Remove(member)));
    }

    /// Every member of this node again (their expiry moves on): every third of the ttl, and
    /// after the command connection is back (the server may have lost them).
    fn refresh_presence(&mut self) {
        for (channel, live) in &self.channels {
            for (&addr, member) in &live.members {
                let id = PresenceMember { node: self.config.node_id, conn: conn_number(addr) };
                self.presence_ops.push((channel.clone(), PresenceOp::Add(id, member.value.clone())));
            }
        }
    }

    /// Sends this turn's presence changes, consecutive ones of a kind on a channel in one call.
    /// Without a command connection they are dropped: adds come back with the refresh after
    /// the reconnect, and a member whose remove was lost expires after the ttl.
    fn flush_presence(&mut self, now: Instant) {
        let mut ops = std::mem::take(&mut self.presence_ops).into_iter().peekable();
        while let Some((channel, op)) = ops.next() {
            let mut batch = match op {
                PresenceOp::Add(m, v) => PresenceBatch::Add(vec![(m, v)]),
                PresenceOp::Remove(m) => PresenceBatch::Remove(vec![m]),
            };
            while let Some((next, _)) = ops.peek() {
                if *next != channel {
                    break;
                }
                match (&mut batch, ops.peek().map(|(_, op)| op)) {
                    (PresenceBatch::Add(members), Some(PresenceOp::Add(..)))
                        if members.len() < MEMBERS_PER_CALL =>
                    {
                        let Some((_, PresenceOp::Add(m, v))) = ops.next() else { unreachable!() };
                        members.push((m, v));
                    }
                    (PresenceBatch::Remove(members), Some(PresenceOp::Remove(_)))
                        if members.len() < MEMBERS_PER_CALL =>
                    {
                        let Some((_, PresenceOp::Remove(m))) = ops.next() else { unreachable!() };
                        members.push(m);
                    }
                    _ => break,
                }
            }
            if self.cmd.ready {
                self.send_or_fail(Pending::PresenceWrite { channel, batch, invoke: Invoke::Sha }, now);
            }
        }
    }

    /// A join or leave frame from pub/sub (any node's, this one's too): an event for this
    /// node's members of the channel that asked for them, the member itself excepted.
    fn presence_frame(
        &mut self,
        channel: &ChannelName,
        change: Change,
        who: PresenceMember,
        value: Option<PresenceValue>,
    ) {
        let Some(live) = self.channels.get(channel) else { return };
        if live.watchers == 0 {
            return;
        }
        let addr = conn_addr(who.conn);
        let own = who.node == self.config.node_id;
        let notify: Vec<ConnAddr> =
            live.members.iter().filter(|(&a, m)| m.joins && !(own && a == addr)).map(|(&a, _)| a).collect();
        if notify.is_empty() {
            return;
        }
        let member = remote_member(who, value);
        let mut sinks: Vec<SinkId> = notify.iter().map(|a| a.sink).collect();
        sinks.sort_unstable_by_key(|s| s.index());
        sinks.dedup();
        let event = Arc::new(PresenceEvent { channel: channel.clone(), change, member, notify });
        for sink in sinks {
            self.batches[usize::from(sink.index())].push(BrokerEvent::PresenceChange(event.clone()));
        }
    }

    /// The live channel, created (and queued for `SUBSCRIBE`) if missing.
    fn live_entry(&mut self, channel: &ChannelName) -> &mut Live {
        if !self.channels.contains_key(channel) {
            let (sequence, first) = ChannelSequence::new(self.config.limits.max_held_messages);
            let first_read = match first {
                SequenceAction::Read(since) => Some(since),
                SequenceAction::Deliver(_) => None,
            };
            let shard = shard_of(channel, self.subs.len());
            let live = Live {
                id: self.next_channel_id,
                keys: ChannelKeys::new(&self.config.namespace, channel),
                shard,
                sinks: Vec::new(),
                by_transport: TransportCounts::default(),
                subscribed: false,
                sequence,
                first_read,
                read_failed: false,
                waiting: Vec::new(),
                linger_until: None,
                members: HashMap::new(),
                watchers: 0,
                answered: None,
                held: VecDeque::new(),
                last_epoch: None,
                touch_at: None,
            };
            self.next_channel_id += 1;
            if self.subs[shard].conn.ready {
                self.subs[shard].to_subscribe.push(channel.clone());
            }
            self.channels.insert(channel.clone(), live);
            self.stats.live_channels.store(self.channels.len() as u64, Ordering::Relaxed);
        }
        self.channels.get_mut(channel).expect("inserted above")
    }

    fn remove_subscription(
        &mut self,
        channel: &ChannelName,
        sink: SinkId,
        transport: Transport,
        now: Instant,
    ) {
        let Some(live) = self.channels.get_mut(channel) else { return };
        if let Some(i) = live.sinks.iter().position(|&(s, _)| s == sink) {
            live.sinks[i].1 -= 1;
            if live.sinks[i].1 == 0 {
                live.sinks.swap_remove(i);
            }
            live.by_transport.remove(transport);
        }
        if live.subscriptions() == 0 && live.waiting.is_empty() {
            live.linger_until = Some(now + self.config.limits.unsubscribe_linger);
        }
    }

    /// Answers the subscribers waiting on `channel` once live delivery has a starting point.
    fn settle_waiters(&mut self, channel: &ChannelName, now: Instant) {
        let Some(live) = self.channels.get_mut(channel) else { return };
        if !live.is_settled() || live.waiting.is_empty() {
            return;
        }
        let delivered = live.sequence.delivered().expect("settled");
        for waiter in std::mem::take(&mut live.waiting) {
            let Waiter { sink, token, transport, member, since, .. } = waiter;
            match since {
                Since::After(cursor) if cursor != delivered => {
                    let read = SubscribeRead {
                        channel: channel.clone(),
                        sink,
                        token,
                        transport,
                        member,
                        since,
                        replay: None,
                        rounds: 0,
                        invoke: Invoke::Sha,
                    };
                    self.send_or_fail(Pending::SubscribeRead(Box::new(read)), now);
                }
                // From the tail, or from exactly where live delivery is: nothing to replay.
                _ => {
                    let replay = Replay { messages: Vec::new(), gap: false, next: delivered };
                    let channel = channel.clone();
                    let event = BrokerEvent::Subscribed { token, channel, transport, result: Ok(replay) };
                    self.answer(sink, event);
                }
            }
        }
    }

    // ---- the command connection ----

    /// Sends `pending`'s command, or answers its request with the reason it cannot be sent.
    fn send_or_fail(&mut self, pending: Pending, now: Instant) {
        if let Err((pending, error)) = self.send(pending, now) {
            self.fail_pending(pending, error, now);
        }
    }

    /// Hands `event`, the answer to the request of connection (`sink`, `token`) that took
    /// `ticket`, over after the connection's earlier answers, then those of its later requests
    /// that were in before it (`order.rs`): the loops match a connection's answers to its
    /// commands in order, so an answer handed over early would take an earlier command's
    /// place, and a publish's cursor would go to another command (a refusal ahead of the
    /// pipeline: `redis_stall_a_refused_publish_never_takes_the_answer_of_an_earlier_one`;
    /// a publish re-sent after `NOSCRIPT`: `redis_stall_script_flush_keeps_each_connections_answers_in_order`).
    /// `published`: the channel of a publish answered with its cursor, whose deliveries are
    /// held while the answer waits (`Live::held`).
    fn hand_over(
        &mut self,
        sink: SinkId,
        token: u64,
        ticket: u64,
        event: BrokerEvent,
        published: Option<ChannelName>,
    ) {
        let key = (sink, token);
        let waits = published.clone();
        let Some((event, _)) = self.order.answer(key, ticket, (event, published)) else {
            if let Some(channel) = waits {
                self.publishing.entry(channel).or_default().behind += 1;
            }
            return;
        };
        self.answer(sink, event);
        let mut released = Vec::new();
        while let Some((event, published)) = self.order.next_ready(key) {
            self.answer(sink, event);
            released.extend(published);
        }
        // Every answer first, then the deliveries they release.
        for channel in released {
            if let Some(publishing) = self.publishing.get_mut(&channel) {
                publishing.behind -= 1;
                if publishing.in_flight == 0 && publishing.behind == 0 {
                    self.publishing.remove(&channel);
                }
            }
            self.release_held(&channel);
        }
    }

    fn push_in_flight(&mut self, pending: Pending, now: Instant) {
        self.pending.push_back(InFlight { pending, sent_at: now });
    }

    fn send(&mut self, pending: Pending, now: Instant) -> Result<(), (Pending, BrokerError)> {
        let link = match self.cmd.link.as_mut() {
            Some(link) if self.cmd.ready => link,
            _ => return Err((pending, BrokerError::Unavailable("not connected to redis".into()))),
        };
        if self.pending.len() >= self.config.limits.max_pending_requests
            || link.unsent_bytes() >= self.config.limits.max_unsent_bytes
        {
            return Err((pending, BrokerError::Overloaded));
        }
        let incarnation = self.incarnation.expect("ready after INFO");
        let context = ScriptContext {
            incarnation,
            epoch_candidate: epoch_candidate(rand::random(), incarnation),
            history_ttl: self.config.history_ttl,
        };
        let page = self.config.limits.read_page_messages;
        let keys = |channel: &ChannelName| ChannelKeys::new(&self.config.namespace, channel);
        let command = match &pending {
            Pending::Publish { channel, event, payload, invoke, .. } => publish_command(
                &keys(channel),
                &context,
                self.config.max_history_messages,
                event.as_deref(),
                payload,
                *invoke,
            ),
            Pending::Read { channel, since, max_messages, invoke, .. } => {
                read_command(&keys(channel), &context, *since, *max_messages, *invoke)
            }
            Pending::SequenceRead { channel, since, invoke, .. } => {
                let keys = match self.channels.get(channel) {
                    Some(live) => live.keys.clone(),
                    None => keys(channel),
                };
                read_command(&keys, &context, *since, page, *invoke)
            }
            Pending::SubscribeRead(read) => {
                read_command(&keys(&read.channel), &context, read.since, page, read.invoke)
            }
            Pending::PresenceWrite { channel, batch, invoke } => {
                let ttl = self.config.limits.presence_ttl;
                match batch {
                    PresenceBatch::Add(members) => add_command(&keys(channel), members, ttl, *invoke),
                    PresenceBatch::Remove(members) => remove_command(&keys(channel), members, *invoke),
                }
            }
            Pending::PresenceList { channel, invoke, .. } => {
                list_command(&keys(channel), self.config.limits.max_presence_members, *invoke)
            }
            Pending::Info { .. } => info_command(),
            Pending::ControlPublish { command, .. } => command.clone(),
            Pending::MetaTouch { channel } => touch_command(&keys(channel), self.config.history_ttl),
            Pending::SurveyMeta { survey } | Pending::SurveyLength { survey } => {
                let channel = match self.surveys.get(survey).map(|s| &s.kind) {
                    Some(SurveyKind::Info { channel, .. }) => channel,
                    _ => unreachable!("sent for an info survey it was made for"),
                };
                match &pending {
                    Pending::SurveyMeta { .. } => meta_command(&keys(channel)),
                    _ => length_command(&keys(channel)),
                }
            }
            Pending::Handshake | Pending::ShardClaim | Pending::ScriptLoad { .. } => {
                unreachable!("setup commands are sent by connect_command")
            }
        };
        link.queue(&command);
        if let Pending::Publish { channel, .. } = &pending {
            self.publishing.entry(channel.clone()).or_default().in_flight += 1;
        }
        self.push_in_flight(pending, now);
        Ok(())
    }

    /// Answers the request behind `pending` with `error` (and for a sequence read: retried
    /// once the command connection is ready).
    fn fail_pending(&mut self, pending: Pending, error: BrokerError, now: Instant) {
        match pending {
            Pending::Handshake | Pending::Info { .. } | Pending::ShardClaim | Pending::ScriptLoad { .. } => {}
            Pending::Publish { sink, token, ticket, .. } => {
                self.hand_over(
                    sink,
                    token,
                    ticket,
                    BrokerEvent::Published { token, result: Err(error) },
                    None,
                );
            }
            Pending::Read { sink, token, ticket, .. } => {
                self.hand_over(sink, token, ticket, BrokerEvent::Read { token, result: Err(error) }, None)
            }
            Pending::SequenceRead { channel, id, .. } => {
                if let Some(live) = self.channels.get_mut(&channel).filter(|live| live.id == id) {
                    live.sequence.handle_read_failed();
                    live.read_failed = true;
                }
            }
            Pending::SubscribeRead(read) => {
                let SubscribeRead { channel, sink, token, transport, member, since, .. } = *read;
                let waiter = Waiter { sink, token, transport, member, since, deadline: now };
                self.fail_subscribe(waiter, channel, error, now);
            }
            // The next refresh writes the members again; a lost remove expires.
            Pending::PresenceWrite { .. } => {}
            Pending::PresenceList { sink, token, ticket, channel, .. } => {
                let event = BrokerEvent::Presence { token, channel, result: Err(error) };
                self.hand_over(sink, token, ticket, event, None)
            }
            Pending::ControlPublish { answer, .. } => {
                if let Some(DisconnectAnswer { sink, token, ticket, .. }) = answer {
                    let event = BrokerEvent::Disconnected { token, result: Err(error) };
                    self.hand_over(sink, token, ticket, event, None);
                }
            }
            Pending::SurveyMeta { survey } => self.survey_read(survey, Some(Err(error)), None, now),
            Pending::SurveyLength { survey } => self.survey_read(survey, None, Some(Err(error)), now),
            // The next scan refreshes it again.
            Pending::MetaTouch { .. } => {}
        }
    }

    /// An `info` survey's Redis read came back (or failed).
    fn survey_read(
        &mut self,
        id: u64,
        meta_read: Option<Result<Option<Cursor>, BrokerError>>,
        length_read: Option<Result<usize, BrokerError>>,
        now: Instant,
    ) {
        if let Some(Survey { kind: SurveyKind::Info { meta, length, .. }, .. }) = self.surveys.get_mut(&id) {
            if meta_read.is_some() {
                *meta = meta_read;
            }
            if length_read.is_some() {
                *length = length_read;
            }
        }
        self.finish_survey(id, now);
    }

    fn connect_command(&mut self, now: Instant) {
        self.cmd.retry_at = None;
        BrokerStats::add(&self.stats.connects, 1);
        let limits = self.config.limits.resp;
        let opened = resolve(&self.config)
            .and_then(|addr| Link::open(addr, self.tls.as_ref(), self.poll.registry(), COMMAND, limits));
        let mut link = match opened {
            Ok(link) => link,
            Err(e) => return self.command_down(&format!("connect: {e}"), now),
        };
        let name = format!("pushwire-cmd-{}", self.config.node_name);
        for command in self.config.url.handshake_commands(&name) {
            link.queue(&command);
            self.push_in_flight(Pending::Handshake, now);
        }
        link.queue(&info_command());
        self.push_in_flight(Pending::Info { initial: true }, now);
        let (index, count) = (self.config.shard_index, self.config.shard_count);
        link.queue(&crate::redis::shard::claim_command(&self.config.namespace, index, count));
        self.push_in_flight(Pending::ShardClaim, now);
        let loads = load_commands();
        for (i, command) in loads.iter().enumerate() {
            link.queue(command);
            self.push_in_flight(Pending::ScriptLoad { last: i + 1 == loads.len() }, now);
        }
        self.cmd.link = Some(link);
        self.cmd.setup_deadline = Some(now + self.config.limits.request_timeout);
    }

    fn command_down(&mut self, reason: &str, now: Instant) {
        if let Some(link) = self.cmd.link.take() {
            link.close(self.poll.registry());
            BrokerStats::add(&self.stats.disconnects, 1);
        }
        if self.cmd.ready {
            warn!("redis command connection lost: {reason}");
        } else {
            debug!("redis command connection failed: {reason}");
        }
        if let Some(tx) = self.ready_tx.take() {
            let _ = tx.send(Err(reason.to_string()));
        }
        self.cmd.ready = false;
        self.cmd.read_pending = false;
        self.cmd.setup_deadline = None;
        self.stats.command_up.store(false, Ordering::Relaxed);
        self.next_info_at = None;
        self.cmd.retry_at = Some(now + self.cmd.backoff);
        self.cmd.backoff = (self.cmd.backoff * 2).min(self.config.limits.reconnect_max);
        let error = BrokerError::Unavailable(format!("redis connection lost: {reason}"));
        for in_flight in std::mem::take(&mut self.pending) {
            let publish = match &in_flight.pending {
                Pending::Publish { channel, .. } => Some(channel.clone()),
                _ => None,
            };
            self.fail_pending(in_flight.pending, error.clone(), now);
            if let Some(channel) = publish {
                self.publish_settled(&channel, None);
            }
        }
    }

    fn command_ready(&mut self, now: Instant) {
        if self.cmd.was_ready {
            BrokerStats::add(&self.stats.reconnects, 1);
        }
        self.cmd.was_ready = true;
        self.cmd.ready = true;
        self.cmd.setup_deadline = None;
        self.cmd.backoff = self.config.limits.reconnect_min;
        self.next_info_at = Some(now + self.config.limits.info_interval);
        self.stats.command_up.store(true, Ordering::Relaxed);
        info!("redis command connection ready ({})", self.config.url);
        if let Some(tx) = self.ready_tx.take() {
            let _ = tx.send(Ok(()));
        }
        self.retry_failed_reads(now);
        self.refresh_presence();
        self.next_heartbeat_at.get_or_insert(now);
    }

    fn retry_failed_reads(&mut self, now: Instant) {
        let failed: Vec<ChannelName> =
            self.channels.iter().filter(|(_, live)| live.read_failed).map(|(c, _)| c.clone()).collect();
        for channel in failed {
            let Some(live) = self.channels.get_mut(&channel) else { continue };
            live.read_failed = false;
            let mut actions = Vec::new();
            live.sequence.retry(&mut actions);
            self.run_actions(&channel, actions, now);
        }
    }

    fn command_io(&mut self, now: Instant) {
        let Some(link) = self.cmd.link.as_mut() else { return };
        match link.check_connected() {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => return self.command_down(&format!("connect: {e}"), now),
        }
        let mut values = Vec::new();
        let budget = self.config.limits.read_budget_bytes;
        let result = link.read(&mut self.buf, budget, &mut values);
        self.cmd.read_pending = matches!(result, Ok(ReadOutcome::BudgetSpent));
        for value in values {
            self.command_reply(value, now);
            if self.cmd.link.is_none() {
                return;
            }
        }
        if let Err(e) = result {
            self.command_down(&e.to_string(), now);
        }
    }

    fn command_reply(&mut self, value: Value, now: Instant) {
        let Some(in_flight) = self.pending.pop_front() else {
            return self.command_down("a reply without a request", now);
        };
        self.command_reply_to(in_flight.pending, in_flight.sent_at, value, now);
    }

    fn command_reply_to(&mut self, pending: Pending, sent_at: Instant, value: Value, now: Instant) {
        match pending {
            Pending::Handshake => {
                if let Err(e) = ReplyError::check(&value) {
                    self.command_down(&format!("handshake: {e}"), now);
                }
            }
            Pending::Info { initial } => match parse_info(&value) {
                Err(e) => self.command_down(&format!("INFO: {e}"), now),
                Ok(info) if !info.is_master() => {
                    self.command_down(&format!("the server's role is {}, not master", info.role), now)
                }
                Ok(info) => {
                    let incarnation = info.incarnation();
                    if initial {
                        if self.incarnation.is_some_and(|old| old != incarnation) {
                            info!("redis has a new incarnation (restart or failover): channels start new epochs");
                        }
                        self.incarnation = Some(incarnation);
                    } else if self.incarnation != Some(incarnation) {
                        self.command_down("the server's incarnation changed (restart or failover)", now);
                    }
                }
            },
            Pending::ShardClaim => {
                let (index, count) = (self.config.shard_index, self.config.shard_count);
                if let Err(e) = crate::redis::shard::check_claim(&value, index, count, &self.config.namespace)
                {
                    self.command_down(&e, now);
                }
            }
            Pending::ScriptLoad { last } => {
                if let Err(e) = ReplyError::check(&value) {
                    self.command_down(&format!("SCRIPT LOAD: {e}"), now);
                } else if last {
                    self.command_ready(now);
                }
            }
            Pending::Publish { sink, token, ticket, channel, event, payload, invoke, retried } => {
                let parsed = parse_publish_reply(&value);
                // The answer first (or it waits, and the deliveries with it), then the
                // deliveries it releases.
                if let Ok(reply) = &parsed {
                    BrokerStats::add(&self.stats.published, 1);
                    self.publish_latency.observe(now.saturating_duration_since(sent_at));
                    let answer = BrokerEvent::Published { token, result: Ok(reply.id) };
                    self.hand_over(sink, token, ticket, answer, Some(channel.clone()));
                    if let Some(live) = self.channels.get(&channel).filter(|live| live.subscribed) {
                        self.probe_pubsub(live.shard, now);
                    }
                }
                self.publish_settled(&channel, parsed.as_ref().ok().map(|reply| reply.id));
                let publish = |invoke, retried| Pending::Publish {
                    sink,
                    token,
                    ticket,
                    channel,
                    event,
                    payload,
                    invoke,
                    retried,
                };
                match parsed {
                    Ok(_) => {}
                    // Sent again with the same ticket: answered in its place among the
                    // connection's answers, whatever Redis answers first.
                    Err(e @ (ReplyError::NoScript | ReplyError::EpochCollision)) if !retried => {
                        let invoke = if e == ReplyError::NoScript { Invoke::Source } else { invoke };
                        self.send_or_fail(publish(invoke, true), now);
                    }
                    Err(e) => self.reply_failed(publish(invoke, retried), e, now),
                }
            }
            Pending::Read { sink, token, ticket, channel, since, max_messages, invoke } => {
                match parse_read_reply(&channel, since, &value, &self.config.limits.frames, now) {
                    Ok(read) => {
                        let event = BrokerEvent::Read { token, result: Ok(read.replay) };
                        self.hand_over(sink, token, ticket, event, None)
                    }
                    Err(ReplyError::NoScript) if invoke == Invoke::Sha => {
                        let again = Pending::Read {
                            sink,
                            token,
                            ticket,
                            channel,
                            since,
                            max_messages,
                            invoke: Invoke::Source,
                        };
                        self.send_or_fail(again, now);
                    }
                    Err(e) => self.reply_failed(
                        Pending::Read { sink, token, ticket, channel, since, max_messages, invoke },
                        e,
                        now,
                    ),
                }
            }
            Pending::SequenceRead { channel, id, since, invoke } => {
                let parsed = parse_read_reply(&channel, since, &value, &self.config.limits.frames, now);
                let Some(live) = self.channels.get_mut(&channel).filter(|live| live.id == id) else { return };
                match parsed {
                    Ok(read) => {
                        let mut actions = Vec::new();
                        live.sequence.handle_read(&read, &mut actions);
                        self.run_actions(&channel, actions, now);
                    }
                    Err(ReplyError::NoScript) if invoke == Invoke::Sha => {
                        let again = Pending::SequenceRead { channel, id, since, invoke: Invoke::Source };
                        self.send_or_fail(again, now);
                    }
                    Err(e) => self.reply_failed(Pending::SequenceRead { channel, id, since, invoke }, e, now),
                }
            }
            Pending::SubscribeRead(read) => self.subscribe_read_reply(read, &value, now),
            Pending::PresenceWrite { channel, batch, invoke } => match parse_count_reply(&value) {
                Ok(_) => BrokerStats::add(&self.stats.presence_writes, 1),
                Err(ReplyError::NoScript) if invoke == Invoke::Sha => {
                    self.send_or_fail(Pending::PresenceWrite { channel, batch, invoke: Invoke::Source }, now)
                }
                Err(e) => self.reply_failed(Pending::PresenceWrite { channel, batch, invoke }, e, now),
            },
            Pending::PresenceList { sink, token, ticket, channel, list, invoke } => {
                match parse_list_reply(&value, &self.config.limits.frames) {
                    Ok(listing) => {
                        let count = usize::try_from(listing.count).unwrap_or(usize::MAX);
                        let members = if list {
                            listing.members.into_iter().map(|(m, v)| remote_member(m, Some(v))).collect()
                        } else {
                            Vec::new()
                        };
                        let result = Ok(PresenceList { count, members });
                        let event = BrokerEvent::Presence { token, channel, result };
                        self.hand_over(sink, token, ticket, event, None);
                    }
                    Err(ReplyError::NoScript) if invoke == Invoke::Sha => {
                        let invoke = Invoke::Source;
                        let again = Pending::PresenceList { sink, token, ticket, channel, list, invoke };
                        self.send_or_fail(again, now);
                    }
                    Err(e) => self.reply_failed(
                        Pending::PresenceList { sink, token, ticket, channel, list, invoke },
                        e,
                        now,
                    ),
                }
            }
            Pending::ControlPublish { command, answer } => match ReplyError::check(&value) {
                Ok(()) => {
                    if let Some(DisconnectAnswer { sink, token, ticket, local }) = answer {
                        if let Some(disconnect) = local {
                            self.outbox.disconnect(disconnect);
                        }
                        let event = BrokerEvent::Disconnected { token, result: Ok(()) };
                        self.hand_over(sink, token, ticket, event, None);
                    }
                }
                Err(e) => self.reply_failed(Pending::ControlPublish { command, answer }, e, now),
            },
            Pending::SurveyMeta { survey } => {
                let incarnation = self.incarnation.expect("ready after INFO");
                match parse_meta_reply(&value, incarnation) {
                    Ok(last) => self.survey_read(survey, Some(Ok(last)), None, now),
                    Err(e) => self.reply_failed(Pending::SurveyMeta { survey }, e, now),
                }
            }
            Pending::SurveyLength { survey } => match parse_length_reply(&value) {
                Ok(length) => self.survey_read(survey, None, Some(Ok(length)), now),
                Err(e) => self.reply_failed(Pending::SurveyLength { survey }, e, now),
            },
            Pending::MetaTouch { channel } => {
                if let Err(e) = ReplyError::check(&value) {
                    self.reply_failed(Pending::MetaTouch { channel }, e, now);
                }
            }
        }
    }

    /// A usable connection answered `error` for `pending`: fail it, and reconnect if the
    /// server cannot take writes.
    fn reply_failed(&mut self, pending: Pending, error: ReplyError, now: Instant) {
        warn!("redis: {error}");
        let reconnect = needs_reconnect(&error);
        self.fail_pending(pending, BrokerError::Reply(error.clone()), now);
        if reconnect {
            self.command_down(&error.to_string(), now);
        }
    }

    fn subscribe_read_reply(&mut self, mut read: Box<SubscribeRead>, value: &Value, now: Instant) {
        let parsed = parse_read_reply(&read.channel, read.since, value, &self.config.limits.frames, now);
        let reply = match parsed {
            Ok(reply) => reply,
            Err(ReplyError::NoScript) if read.invoke == Invoke::Sha => {
                read.invoke = Invoke::Source;
                return self.send_or_fail(Pending::SubscribeRead(read), now);
            }
            Err(e) => return self.reply_failed(Pending::SubscribeRead(read), e, now),
        };
        let last_offset = reply.last_offset;
        let page = reply.replay;
        let replay =
            read.replay.get_or_insert_with(|| Replay { messages: Vec::new(), gap: false, next: page.next });
        replay.messages.extend(page.messages);
        replay.gap |= page.gap;
        replay.next = page.next;
        read.rounds += 1;
        let next = replay.next;
        let delivered = self.channels.get(&read.channel).and_then(|live| live.sequence.delivered());
        // Behind what the sinks were already given: read on, so the answer covers it.
        let behind = delivered.is_some_and(|d| d.epoch != next.epoch || d.offset > next.offset);
        let more_pages = next.offset < last_offset;
        let full = replay.messages.len() >= self.config.limits.max_replay_messages;
        if (behind || more_pages) && !full && read.rounds < MAX_REPLAY_ROUNDS {
            read.since = Since::After(next);
            return self.send_or_fail(Pending::SubscribeRead(read), now);
        }
        let SubscribeRead { channel, sink, token, transport, replay, .. } = *read;
        let replay = replay.expect("set above");
        self.answer(sink, BrokerEvent::Subscribed { token, channel, transport, result: Ok(replay) });
    }

    /// Carries out what a channel's sequence asked for.
    fn run_actions(&mut self, channel: &ChannelName, actions: Vec<SequenceAction>, now: Instant) {
        for action in actions {
            match action {
                SequenceAction::Deliver(message) => {
                    let publishing = self.publishing.get(channel);
                    let Some(live) = self.channels.get_mut(channel) else { return };
                    if !live.held.is_empty() || holds(publishing, live.answered, &message) {
                        live.held.push_back(message);
                        continue;
                    }
                    deliver(&self.stats, &mut self.batches, live, message);
                }
                SequenceAction::Read(since) => {
                    let Some(live) = self.channels.get(channel) else { return };
                    if live.sequence.delivered().is_some() {
                        BrokerStats::add(&self.stats.repair_reads, 1);
                    }
                    let pending = Pending::SequenceRead {
                        channel: channel.clone(),
                        id: live.id,
                        since,
                        invoke: Invoke::Sha,
                    };
                    self.send_or_fail(pending, now);
                }
            }
        }
        self.settle_waiters(channel, now);
    }

    /// Redis answered one publish of this node to `channel` (with the message's cursor) or
    /// it failed: deliveries held for it are released in order, up to the next one still
    /// waiting for its answer.
    fn publish_settled(&mut self, channel: &ChannelName, cursor: Option<Cursor>) {
        if let Some(publishing) = self.publishing.get_mut(channel) {
            publishing.in_flight = publishing.in_flight.saturating_sub(1);
            if publishing.in_flight == 0 && publishing.behind == 0 {
                self.publishing.remove(channel);
            }
        }
        if let Some(live) = self.channels.get_mut(channel) {
            if cursor.is_some() {
                live.answered = cursor;
            }
        }
        self.release_held(channel);
    }

    /// Hands `channel`'s held deliveries to the sinks in order, up to the first one this
    /// node's publishes still hold.
    fn release_held(&mut self, channel: &ChannelName) {
        let publishing = self.publishing.get(channel);
        let Some(live) = self.channels.get_mut(channel) else { return };
        while let Some(front) = live.held.front() {
            if holds(publishing, live.answered, front) {
                break;
            }
            let message = live.held.pop_front().expect("front exists");
            deliver(&self.stats, &mut self.batches, live, message);
        }
    }

    // ---- the pub/sub connection ----

    fn connect_pubsub(&mut self, shard: usize, now: Instant) {
        self.subs[shard].conn.retry_at = None;
        BrokerStats::add(&self.stats.connects, 1);
        let limits = self.config.limits.resp;
        let token = Token(PUBSUB_FIRST + shard);
        let opened = resolve(&self.config)
            .and_then(|addr| Link::open(addr, self.tls.as_ref(), self.poll.registry(), token, limits));
        let mut link = match opened {
            Ok(link) => link,
            Err(e) => return self.pubsub_down(shard, &format!("connect: {e}"), now),
        };
        let name = format!("pushwire-sub-{}-{shard}", self.config.node_name);
        let handshake = self.config.url.handshake_commands(&name);
        for command in &handshake {
            link.queue(command);
        }
        let sub = &mut self.subs[shard];
        sub.handshake_left = handshake.len();
        sub.conn.link = Some(link);
        sub.conn.setup_deadline = Some(now + self.config.limits.request_timeout);
    }

    fn pubsub_down(&mut self, shard: usize, reason: &str, now: Instant) {
        let sub = &mut self.subs[shard];
        if let Some(link) = sub.conn.link.take() {
            link.close(self.poll.registry());
            BrokerStats::add(&self.stats.disconnects, 1);
        }
        if sub.conn.ready {
            warn!("redis pub/sub connection {shard} lost: {reason}");
        } else {
            debug!("redis pub/sub connection {shard} failed: {reason}");
        }
        sub.conn.ready = false;
        sub.conn.read_pending = false;
        sub.conn.setup_deadline = None;
        self.stats.pubsub_up.store(false, Ordering::Relaxed);
        sub.conn.retry_at = Some(now + sub.conn.backoff);
        sub.conn.backoff = (sub.conn.backoff * 2).min(self.config.limits.reconnect_max);
        sub.next_ping_at = None;
        sub.pong_deadline = None;
        sub.to_subscribe.clear();
        sub.to_unsubscribe.clear();
        for live in self.channels.values_mut().filter(|live| live.shard == shard) {
            live.subscribed = false;
        }
        if shard == 0 {
            self.control_subscribed = false;
            sub.control_to_subscribe = false;
        }
    }

    fn pubsub_ready(&mut self, shard: usize, now: Instant) {
        let sub = &mut self.subs[shard];
        if sub.conn.was_ready {
            BrokerStats::add(&self.stats.reconnects, 1);
        }
        sub.conn.was_ready = true;
        sub.conn.ready = true;
        sub.conn.setup_deadline = None;
        sub.conn.backoff = self.config.limits.reconnect_min;
        sub.next_ping_at = Some(now + self.config.limits.ping_interval);
        sub.to_subscribe =
            self.channels.iter().filter(|(_, live)| live.shard == shard).map(|(c, _)| c.clone()).collect();
        sub.to_unsubscribe.clear();
        sub.control_to_subscribe = shard == 0;
        info!("redis pub/sub connection {shard} ready ({} channels to subscribe)", sub.to_subscribe.len());
        let all_up = self.subs.iter().all(|sub| sub.conn.ready);
        self.stats.pubsub_up.store(all_up, Ordering::Relaxed);
    }

    fn pubsub_io(&mut self, shard: usize, now: Instant) {
        let sub = &mut self.subs[shard];
        let Some(link) = sub.conn.link.as_mut() else { return };
        match link.check_connected() {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => return self.pubsub_down(shard, &format!("connect: {e}"), now),
        }
        if sub.handshake_left == 0 && !sub.conn.ready {
            self.pubsub_ready(shard, now);
        }
        let sub = &mut self.subs[shard];
        let Some(link) = sub.conn.link.as_mut() else { return };
        let mut values = Vec::new();
        let budget = self.config.limits.read_budget_bytes;
        let result = link.read(&mut self.buf, budget, &mut values);
        sub.conn.read_pending = matches!(result, Ok(ReadOutcome::BudgetSpent));
        for value in values {
            self.pubsub_value(shard, value, now);
            if self.subs[shard].conn.link.is_none() {
                return;
            }
        }
        if let Err(e) = result {
            self.pubsub_down(shard, &e.to_string(), now);
        }
    }

    fn pubsub_value(&mut self, shard: usize, value: Value, now: Instant) {
        let sub = &mut self.subs[shard];
        if sub.handshake_left > 0 {
            sub.handshake_left -= 1;
            if let Err(e) = ReplyError::check(&value) {
                return self.pubsub_down(shard, &format!("handshake: {e}"), now);
            }
            if sub.handshake_left == 0 {
                self.pubsub_ready(shard, now);
            }
            return;
        }
        // A PING on a connection with no subscription yet is answered like a normal PING.
        if let Value::BulkString(_) = value {
            sub.pong_deadline = None;
            return;
        }
        match parse_pubsub(value) {
            Ok(PubSubEvent::Message { channel, payload })
                if channel == self.control_name.as_bytes() || channel == self.reply_name.as_bytes() =>
            {
                self.control_message(&payload, now)
            }
            Ok(PubSubEvent::Message { channel, payload }) => self.pubsub_message(&channel, &payload, now),
            Ok(PubSubEvent::Subscribed { channel, .. }) if channel == self.reply_name.as_bytes() => {
                // Subscribed after the control channel (one SUBSCRIBE names both, in order):
                // both are live. Tell the other nodes at once, so they answer with theirs.
                self.control_subscribed = true;
                let name = self.control_name.clone();
                self.publish_control(name, Control::Heartbeat { hello: true }, now);
            }
            Ok(PubSubEvent::Subscribed { channel, .. }) => self.pubsub_subscribed(&channel, now),
            Ok(PubSubEvent::Unsubscribed { .. }) => {}
            Ok(PubSubEvent::Pong(_)) => sub.pong_deadline = None,
            Err(e) => self.pubsub_down(shard, &format!("pub/sub: {e}"), now),
        }
    }

    fn pubsub_subscribed(&mut self, name: &[u8], now: Instant) {
        let Some(channel) = self.config.namespace.channel_of_pubsub(name) else { return };
        let Some(live) = self.channels.get_mut(&channel) else { return };
        if live.subscribed {
            return;
        }
        live.subscribed = true;
        let mut actions = Vec::new();
        match live.first_read.take() {
            Some(since) => actions.push(SequenceAction::Read(since)),
            None => live.sequence.handle_resubscribed(&mut actions),
        }
        self.run_actions(&channel, actions, now);
    }

    fn pubsub_message(&mut self, name: &[u8], payload: &[u8], now: Instant) {
        let Some(channel) = self.config.namespace.channel_of_pubsub(name) else { return };
        let Some(live) = self.channels.get_mut(&channel) else { return };
        let message = match parse_frame(payload, &self.config.limits.frames) {
            Ok(Frame::Message { id, event, payload }) => {
                Arc::new(Message::new(channel.clone(), id, event, payload, now))
            }
            Ok(Frame::Join { member, value }) => {
                return self.presence_frame(&channel, Change::Join, member, Some(value));
            }
            Ok(Frame::Leave { member, value }) => {
                return self.presence_frame(&channel, Change::Leave, member, value);
            }
            Err(e) => {
                // The hole it leaves is read from the history when the next frame comes.
                debug!("redis: bad frame on {}: {e}", channel.as_str());
                BrokerStats::add(&self.stats.bad_frames, 1);
                return;
            }
        };
        let mut actions = Vec::new();
        live.sequence.handle_live(message, &mut actions);
        self.run_actions(&channel, actions, now);
    }

    // ---- timers and writes ----

    fn handle_timers(&mut self, now: Instant) {
        if self.cmd.link.is_none() && self.cmd.retry_at.is_some_and(|at| at <= now) {
            self.connect_command(now);
        }
        let timeout = self.config.limits.request_timeout;
        let command_late = self.pending.front().is_some_and(|p| p.sent_at + timeout <= now)
            || self.cmd.setup_deadline.is_some_and(|at| at <= now);
        if self.cmd.link.is_some() && command_late {
            BrokerStats::add(&self.stats.timeouts, 1);
            let reason = match self.cmd.link.as_ref().is_some_and(Link::is_tls_handshaking) {
                true => format!("TLS handshake not done within {timeout:?} (does this port speak TLS?)"),
                false => format!("no reply within {timeout:?}"),
            };
            self.command_down(&reason, now);
        }
        if self.cmd.ready && self.next_info_at.is_some_and(|at| at <= now) {
            self.next_info_at = Some(now + self.config.limits.info_interval);
            self.send_or_fail(Pending::Info { initial: false }, now);
        }
        for shard in 0..self.subs.len() {
            self.pubsub_timers(shard, now);
        }
        if now >= self.next_scan_at {
            self.next_scan_at = now + CHANNEL_SCAN_INTERVAL;
            self.scan_channels(now);
        }
        self.control_timers(now);
        if now >= self.next_presence_refresh_at {
            self.next_presence_refresh_at = now + self.config.limits.presence_ttl / 3;
            if self.cmd.ready {
                self.refresh_presence();
            }
        }
    }

    /// One pub/sub connection's reconnect, setup and pong deadlines, and its ping.
    fn pubsub_timers(&mut self, shard: usize, now: Instant) {
        let timeout = self.config.limits.request_timeout;
        let sub = &self.subs[shard];
        if sub.conn.link.is_none() && sub.conn.retry_at.is_some_and(|at| at <= now) {
            self.connect_pubsub(shard, now);
        }
        let sub = &self.subs[shard];
        let late = sub.conn.setup_deadline.is_some_and(|at| at <= now)
            || sub.pong_deadline.is_some_and(|at| at <= now);
        if sub.conn.link.is_some() && late {
            BrokerStats::add(&self.stats.timeouts, 1);
            let reason = match sub.conn.link.as_ref().is_some_and(Link::is_tls_handshaking) {
                true => format!("TLS handshake not done within {timeout:?} (does this port speak TLS?)"),
                false => format!("no answer within {timeout:?}"),
            };
            self.pubsub_down(shard, &reason, now);
        }
        let sub = &mut self.subs[shard];
        if sub.conn.ready && sub.next_ping_at.is_some_and(|at| at <= now) {
            sub.next_ping_at = Some(now + self.config.limits.ping_interval);
            self.ping_pubsub(shard, now);
        }
    }

    /// Sends a `PING` on the ready pub/sub connection `shard`, its pong due within the request
    /// timeout; none while one is waiting (its deadline is earlier).
    fn ping_pubsub(&mut self, shard: usize, now: Instant) {
        let sub = &mut self.subs[shard];
        let Some(link) = sub.conn.link.as_mut().filter(|_| sub.conn.ready) else { return };
        if sub.pong_deadline.is_some() {
            return;
        }
        self.ping_count += 1;
        link.queue(&ping_command(self.ping_count.to_string().as_bytes()));
        sub.pong_deadline = Some(now + self.config.limits.request_timeout);
        sub.last_ping_at = Some(now);
    }

    /// One of this node's publishes to a channel subscribed on pub/sub connection `shard` was
    /// answered: Redis wrote the message to that connection before the answer, so a `PING`
    /// sent now is answered after it, unless the connection stalled. Sent at once (at most
    /// one per [`PROBE_MIN_GAP`], none while one waits), so a stalled pub/sub connection is
    /// noticed within the request timeout of such an answer instead of up to a ping interval
    /// later.
    fn probe_pubsub(&mut self, shard: usize, now: Instant) {
        let sub = &self.subs[shard];
        if sub.last_ping_at.is_none_or(|at| now >= at + PROBE_MIN_GAP) {
            self.ping_pubsub(shard, now);
        }
    }

    /// Lingers ended, waiting subscribers past their deadline, failed reads to retry.
    fn scan_channels(&mut self, now: Instant) {
        let mut ended = Vec::new();
        let mut late = Vec::new();
        let mut touches = Vec::new();
        let touch_period = self.config.history_ttl / 3;
        for (channel, live) in &mut self.channels {
            if live.subscriptions() > 0 {
                match live.touch_at {
                    None => live.touch_at = Some(now + touch_period),
                    Some(at) if at <= now && self.cmd.ready && touches.len() < MAX_TOUCHES_PER_SCAN => {
                        live.touch_at = Some(now + touch_period);
                        touches.push(channel.clone());
                    }
                    Some(_) => {}
                }
            }
            if live.linger_until.is_some_and(|at| at <= now)
                && live.subscriptions() == 0
                && live.waiting.is_empty()
            {
                ended.push(channel.clone());
            }
            let (gone, waiting) =
                std::mem::take(&mut live.waiting).into_iter().partition(|w| w.deadline <= now);
            live.waiting = waiting;
            late.extend(gone.into_iter().map(|w: Waiter| (channel.clone(), w)));
        }
        for channel in ended {
            let Some(live) = self.channels.remove(&channel) else { continue };
            let sub = &mut self.subs[live.shard];
            if sub.conn.ready {
                sub.to_unsubscribe.push(live.keys.pubsub);
            }
        }
        self.stats.live_channels.store(self.channels.len() as u64, Ordering::Relaxed);
        for (channel, waiter) in late {
            BrokerStats::add(&self.stats.timeouts, 1);
            let error = BrokerError::Unavailable("the channel's redis subscription is not live yet".into());
            self.fail_subscribe(waiter, channel, error, now);
        }
        for channel in touches {
            self.send_or_fail(Pending::MetaTouch { channel }, now);
        }
        if self.cmd.ready {
            self.retry_failed_reads(now);
        }
    }

    fn flush(&mut self, now: Instant) {
        if !self.presence_ops.is_empty() {
            self.flush_presence(now);
        }
        for sub in &mut self.subs {
            let Some(link) = sub.conn.link.as_mut().filter(|_| sub.conn.ready) else { continue };
            if std::mem::take(&mut sub.control_to_subscribe) {
                link.queue(&subscribe_command([self.control_name.as_str(), self.reply_name.as_str()]));
            }
            let subscribe: Vec<String> = std::mem::take(&mut sub.to_subscribe)
                .iter()
                .filter_map(|c| self.channels.get(c).map(|live| live.keys.pubsub.clone()))
                .collect();
            for names in subscribe.chunks(CHANNELS_PER_COMMAND) {
                link.queue(&subscribe_command(names.iter().map(String::as_str)));
            }
            let unsubscribe = std::mem::take(&mut sub.to_unsubscribe);
            for names in unsubscribe.chunks(CHANNELS_PER_COMMAND) {
                link.queue(&unsubscribe_command(names.iter().map(String::as_str)));
            }
        }
        if let Some(link) = self.cmd.link.as_mut() {
            if let Err(e) = link.flush() {
                self.command_down(&format!("write: {e}"), now);
            }
        }
        for shard in 0..self.subs.len() {
            if let Some(link) = self.subs[shard].conn.link.as_mut() {
                if let Err(e) = link.flush() {
                    self.pubsub_down(shard, &format!("write: {e}"), now);
                }
            }
        }
    }
}

/// A member as the hub shows it, from its Redis form (any node's; a leave carries no value).
fn remote_member(who: PresenceMember, value: Option<PresenceValue>) -> Member {
    let (user, info) = match value {
        Some(v) => {
            let user = (!v.user.is_empty()).then(|| Box::from(&*v.user));
            // Written by a node from a JSON object's text: UTF-8 (checked when parsed).
            let info = std::str::from_utf8(&v.info).ok().filter(|i| !i.is_empty()).map(Box::from);
            (user, info)
        }
        None => (None, None),
    };
    Member { node: who.node, conn: conn_addr(who.conn), user, info, joins: false }
}

/// `message` waits for an answer of this node's publishes to its channel: one Redis has
/// answered waits behind an earlier answer of its connection (any delivery waits: it may be
/// that publish's), or one is in flight and the message is not at or before the last answered
/// (it may be that publish's).
fn holds(publishing: Option<&Publishing>, last_answered: Option<Cursor>, message: &Message) -> bool {
    publishing.is_some_and(|p| p.behind > 0 || (p.in_flight > 0 && !answered(last_answered, message)))
}

/// The message is at or before the last publish of this node Redis answered (same epoch):
/// Redis runs this node's commands in order, so a publish still in flight has a later cursor.
fn answered(answered: Option<Cursor>, message: &Message) -> bool {
    answered.is_some_and(|c| c.epoch == message.id.epoch && c.offset >= message.id.offset)
}

/// Hands `message` to every sink with subscribers on the live channel.
fn deliver(stats: &BrokerStats, batches: &mut [Vec<BrokerEvent>], live: &mut Live, message: Arc<Message>) {
    BrokerStats::add(&stats.delivered, 1);
    if live.last_epoch.is_some_and(|epoch| epoch != message.id.epoch) {
        BrokerStats::add(&stats.epoch_changes, 1);
    }
    live.last_epoch = Some(message.id.epoch);
    for &(sink, _) in &live.sinks {
        batches[usize::from(sink.index())].push(BrokerEvent::Delivery(message.clone()));
    }
}
