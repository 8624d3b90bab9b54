//! The Redis broker: one thread per node and `--redis` server, with its own `mio::Poll`, that
//! runs pushwire's channels on that server, so any number of nodes share channels, history and
//! cursors.
//!
//! Implements the design of [`crate::redis`] ("How the broker uses these pieces") with the
//! pure pieces there, around one non-blocking command connection and
//! [`BrokerConfig::pubsub_shards`] non-blocking pub/sub connections:
//!
//! - **The command connection**, pipelined: handshake (TLS for `rediss://`, then `AUTH`,
//!   `SELECT`, `CLIENT SETNAME`),
//!   `INFO` (a replica is refused; its incarnation goes into every script call), `SCRIPT LOAD`,
//!   then publishes and reads in the order asked, matched to replies by a FIFO of pending
//!   requests bounded by [`Limits::max_pending_requests`] (full: the request fails at once
//!   with [`BrokerError::Overloaded`]). `NOSCRIPT` re-sends that one request with `EVAL`; an
//!   epoch collision re-sends it with a new candidate; either way the same connection's later
//!   requests may be answered first, and a refusal comes at once: each connection's answers
//!   are still handed over in the order of its requests (`order.rs`). `READONLY`, `LOADING`, `MASTERDOWN`, a
//!   codec error, EOF, a request older than [`Limits::request_timeout`], or an `INFO` re-read
//!   (every [`Limits::info_interval`]) showing another incarnation close the connection: the
//!   pending requests fail with [`BrokerError::Unavailable`] (HTTP 503) and the broker
//!   reconnects with exponential backoff ([`Limits::reconnect_min`] to
//!   [`Limits::reconnect_max`]).
//! - **The pub/sub connections** ([`BrokerConfig::pubsub_shards`], default one; a channel is
//!   on the one [`crate::redis::shard::shard_of`] picks, each connection has its own
//!   handshake, ping, backoff and reconnect, and a reconnect catches up only its channels):
//!   `SUBSCRIBE` when a channel's first subscriber on this node
//!   appears, `UNSUBSCRIBE` after [`Limits::unsubscribe_linger`] once the last left, batched
//!   per turn; a `PING` every [`Limits::ping_interval`] whose `pong` must come back within
//!   [`Limits::request_timeout`], and one at once (at most one per 100 ms, never two waiting)
//!   when this node's publish to one of its channels is answered on the command connection:
//!   Redis wrote the message to pub/sub before that answer, so a missing pong means a stalled
//!   connection, noticed within the request timeout of the answer. On reconnect every live channel is subscribed again and
//!   caught up from its last delivered cursor
//!   ([`crate::redis::sequence::ChannelSequence::handle_resubscribed`]).
//!
//! Per live channel a [`crate::redis::sequence::ChannelSequence`] orders what pub/sub
//! brings, drops duplicates, reads holes from the history, and treats an epoch change as a
//! gap. Deliveries go to every event loop ("sink") with subscribers on the channel.
//!
//! **Subscribing** ([`BrokerRequest::Subscribe`]) is "subscribe first, then read, then merge":
//! the channel is subscribed on pub/sub (if it is not yet), its sequence learns where live
//! delivery starts, and only then the subscriber's replay is read with the channel script.
//! The replay is read again from its `next` until it reaches what was already delivered to
//! the sinks, so the answer's [`Replay::next`] is at or after every delivery of that channel
//! pushed to the subscriber's sink before the answer: a subscriber that joins its loop's
//! fan-out when the answer arrives misses nothing, and the feed skips deliveries at or before
//! its cursor ([`crate::transport::feed`]). A replay is capped at
//! [`Limits::max_replay_messages`]; a longer one is answered up to there and the feed reports
//! the remaining hole as a gap.
//!
//! The loops reach the broker through [`BrokerClient::submit`] (a bounded queue and the
//! broker's waker, never blocking a loop; full: the refusal, [`BrokerError::Overloaded`], is
//! queued in order behind the connection's earlier requests, and `submit` fails at once only
//! when the queue holds twice the bound ([`Limits::max_queued_requests`]) or the broker has
//! stopped) and get answers and deliveries through their [`BrokerOutbox`], one batch per sink
//! per broker turn.
//!
//! [`RedisHub`] (`backend.rs`) is the [`crate::hub::backend::HubBackend`] over the broker, and
//! [`serve`] what `pushwire serve --redis URL` runs.
//!
//! **A publish is answered before its delivery** to the same sink: while this node has
//! publishes in flight to a channel, that channel's deliveries are held until the answers
//! covering them are handed over (the answer comes on the command connection, the message on
//! pub/sub, in either order), so `except_self` can skip the delivery by the answered id; an
//! answer kept behind an earlier one of its connection holds the channel's deliveries too.
//!
//! **Presence** ([`BrokerRequest::Subscribe`] with a [`BrokerMember`]): the broker keeps this
//! node's members per live channel, writes them with the presence script
//! ([`crate::redis::presence`]) at the end of the turn they joined or left in (consecutive
//! changes of a channel in one call), re-adds all of them every third of
//! [`Limits::presence_ttl`] and after the command connection is back, lists a channel's
//! members across the nodes ([`BrokerRequest::Presence`]), and turns the join and leave
//! frames on pub/sub into [`BrokerEvent::PresenceChange`] for the sinks of its members that
//! asked for them.
//!
//! **The control channel** ([`crate::redis::control`]): pub/sub shard 0 also subscribes
//! `PREFIX:control` and this node's reply channel `PREFIX:node:NODE` (again after each
//! reconnect). The broker publishes a heartbeat there every [`Limits::heartbeat_interval`]
//! (and a `hello` one once subscribed, which the others answer at once), keeps the other
//! nodes heard within [`Limits::node_timeout`] (the registry), publishes the server API's
//! `disconnect` / `unsubscribe` ([`BrokerRequest::Disconnect`]) and applies the other nodes'
//! through [`BrokerOutbox::disconnect`], and answers `info` / `channels` by a survey
//! ([`BrokerRequest::Info`], [`BrokerRequest::Channels`]): its own figures, every registry
//! node's reply on its reply channel, and for `info` the channel's meta (`HMGET`) and history
//! length (`XLEN`), answered when all are in or at [`Limits::survey_timeout`] (late replies are
//! counted and dropped; at most [`Limits::max_surveys`] wait at once).
//!
//! **TLS** (`rediss://`): every connection runs a rustls client session over its socket
//! (`link.rs`), trusting Mozilla's roots plus [`BrokerConfig::tls`]; the commands queued at
//! connect wait in rustls until the handshake is done, and a handshake not done within
//! [`Limits::request_timeout`] closes the connection like a late reply.
//!
//! **Several Redis servers as shards** (`--redis` given several times, at most
//! [`MAX_REDIS_SHARDS`]): one broker per server, each knowing only its own server (its own
//! thread, `Poll`, connections, incarnation, node registry and control channel) and the
//! channels [`crate::redis::shard::shard_of`] gives it; [`RedisHub`] routes each request and,
//! with more than one, restores each connection's answer order across the brokers
//! (`shards.rs`). Its figures ([`BrokerStats`], summed over the shards) reach `/metrics` as
//! `HubStats::backend` and `/readyz` through `Command::Ready`.
//!
//! Each broker claims its server's place in the list at every connect
//! ([`crate::redis::shard::claim_command`], after `INFO`, before `SCRIPT LOAD`): a server
//! claimed at another place or in a list of another length (another node lists other servers
//! or another order) fails the connection, and at start the node.
//!
//! Does not (yet): Redis Cluster (see the notes in [`crate::redis`]).

mod backend;
mod link;
mod order;
mod shards;
mod worker;

pub use backend::{serve, RedisHub};
pub use shards::MAX_REDIS_SHARDS;

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use mio::{Poll, Waker};

use crate::client::TlsOptions;
use crate::hub::backend::{BackendFigures, ConnId, Disconnect};
use crate::hub::presence::{Joining, PresenceEvent};
use crate::hub::{
    ChannelInfo, ChannelName, ChannelPage, Cursor, Message, Payload, PresenceList, Replay, Since, SinkId,
};
use crate::metrics::LatencyHistogram;
use crate::protocol::Transport;
use crate::redis::control::ControlLimits;
use crate::redis::frame::FrameLimits;
use crate::redis::keys::Namespace;
use crate::redis::url::RedisUrl;
use crate::redis::{resp, ReplyError};

/// Bounds and timings of the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Most requests queued from the loops and not yet taken by the broker thread; beyond,
    /// a request is refused with [`BrokerError::Overloaded`], the refusal itself queued (as
    /// [`BrokerRequest::Refused`]) so that it is handed over after the same connection's
    /// earlier requests, as a pipeline refusal is ([`Limits::max_pending_requests`]). At most
    /// as many refusals again are queued; beyond those, [`BrokerClient::submit`] fails at once.
    /// An `Unsubscribe` is always queued: it has no answer to refuse with, dropping it would
    /// leave a subscription counted that nothing ends, and there is at most one per
    /// subscription the broker accepted, so live subscriptions bound them. Default 65 536.
    pub max_queued_requests: usize,
    /// Most commands sent on the command connection and not yet answered (the pipeline);
    /// beyond, a request is refused at once with [`BrokerError::Overloaded`] (HTTP 503)
    /// rather than waiting in memory; the refusal is handed over right after the answers to
    /// the same connection's earlier requests still in the pipeline, so each connection's
    /// answers keep the order of its requests. Default 65 536 (`--redis-max-pending`).
    pub max_pending_requests: usize,
    /// Most bytes waiting to be written to Redis; beyond, a publish fails with
    /// [`BrokerError::Overloaded`]. Default 64 MiB.
    pub max_unsent_bytes: usize,
    /// How long Redis may take to answer a command (or a pub/sub `PING`), or to accept a
    /// connection; past it the connection is closed and reopened, and what was pending fails
    /// with [`BrokerError::Unavailable`]. Default 5 s (`--redis-request-timeout`).
    pub request_timeout: Duration,
    /// First delay before reconnecting after a lost connection; doubled at each failure.
    /// Default 100 ms.
    pub reconnect_min: Duration,
    /// Longest delay between reconnection attempts. Default 5 s.
    pub reconnect_max: Duration,
    /// How long a channel stays subscribed on pub/sub after its last subscriber on this node
    /// left, so a subscriber that comes back at once does not churn `SUBSCRIBE`. Default 3 s.
    pub unsubscribe_linger: Duration,
    /// How often each pub/sub connection is pinged (one `PING` waiting at a time, its pong due
    /// within [`Limits::request_timeout`]), so a stalled one is noticed at the latest this plus
    /// the request timeout after it stopped; sooner when this node publishes to one of its
    /// channels (a publish answered sends a `PING` at once, see the module docs). Default 5 s
    /// (`--redis-ping-interval`).
    pub ping_interval: Duration,
    /// How often `INFO` is read again to notice a restarted or promoted server. Default 5 s.
    pub info_interval: Duration,
    /// Messages read per history page (repairs, replays). Default 1 000.
    pub read_page_messages: usize,
    /// Most live frames held per channel while a repair read is in flight (beyond, they are
    /// read again from the history). Default 10 000.
    pub max_held_messages: usize,
    /// Most messages in one subscriber's replay. Default 100 000.
    pub max_replay_messages: usize,
    /// Bytes read from one connection per broker turn before the other gets its turn.
    /// Default 1 MiB.
    pub read_budget_bytes: usize,
    /// Bounds of the RESP decoder on every connection.
    pub resp: resp::Limits,
    /// Bounds of frames from other nodes (payload, event name, presence user and info).
    pub frames: FrameLimits,
    /// How long a presence member lives in Redis without this node refreshing it; refreshed
    /// every third of it. Default 30 s (the hub's `PresenceLimits::member_ttl`).
    pub presence_ttl: Duration,
    /// Most members a presence answer lists (`ZRANGE` bound). Default 10 000.
    pub max_presence_members: usize,
    /// How often this node announces itself on the control channel (the node registry of
    /// [`crate::redis::control`]). Default 2 s (`--redis-heartbeat-interval`).
    pub heartbeat_interval: Duration,
    /// A node not heard from for this long is dropped from the registry (surveys stop waiting
    /// for it); longer than [`Limits::heartbeat_interval`]. Default 6 s (three heartbeats,
    /// `--redis-node-timeout`).
    pub node_timeout: Duration,
    /// Longest wait for the other nodes' answers to an `info` or `channels` survey; past it
    /// the call is answered with the replies in (late ones are counted). Default 2 s
    /// (`--redis-survey-timeout`).
    pub survey_timeout: Duration,
    /// Most surveys of this node waiting for replies; beyond, a survey fails with
    /// [`BrokerError::Overloaded`]. Default 1 024.
    pub max_surveys: usize,
    /// Bounds of control frames from other nodes.
    pub control: ControlLimits,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_queued_requests: 65_536,
            max_pending_requests: 65_536,
            max_unsent_bytes: 64 << 20,
            request_timeout: Duration::from_secs(5),
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(5),
            unsubscribe_linger: Duration::from_secs(3),
            ping_interval: Duration::from_secs(5),
            info_interval: Duration::from_secs(5),
            read_page_messages: 1_000,
            max_held_messages: 10_000,
            max_replay_messages: 100_000,
            read_budget_bytes: 1 << 20,
            resp: resp::Limits::default(),
            frames: FrameLimits::default(),
            presence_ttl: Duration::from_secs(30),
            max_presence_members: 10_000,
            heartbeat_interval: Duration::from_secs(2),
            node_timeout: Duration::from_secs(6),
            survey_timeout: Duration::from_secs(2),
            max_surveys: 1_024,
            control: ControlLimits::default(),
        }
    }
}

impl Limits {
    /// Checks the limits once at startup.
    pub fn validate(&self) -> Result<(), String> {
        self.resp.validate()?;
        if self.max_queued_requests == 0 || self.max_pending_requests == 0 {
            return Err("redis broker: request queues must hold at least 1".into());
        }
        if self.read_page_messages == 0 || self.max_held_messages == 0 || self.max_replay_messages == 0 {
            return Err("redis broker: page, held and replay bounds must be at least 1".into());
        }
        if self.request_timeout.is_zero() || self.reconnect_min.is_zero() {
            return Err("redis broker: request timeout and reconnect delay must be positive".into());
        }
        if self.reconnect_max < self.reconnect_min {
            return Err("redis broker: reconnect_max must be at least reconnect_min".into());
        }
        if self.ping_interval.is_zero() || self.info_interval.is_zero() {
            return Err("redis broker: ping and info intervals must be positive".into());
        }
        if self.presence_ttl < Duration::from_millis(300) || self.max_presence_members == 0 {
            return Err(
                "redis broker: presence ttl must be at least 300 ms and the list bound at least 1".into()
            );
        }
        if self.heartbeat_interval.is_zero()
            || self.node_timeout <= self.heartbeat_interval
            || self.survey_timeout.is_zero()
            || self.max_surveys == 0
        {
            return Err("redis broker: heartbeat and survey timings must be positive, the node \
                 timeout longer than the heartbeat, and at least 1 survey allowed"
                .into());
        }
        if self.read_budget_bytes < 4096 {
            return Err("redis broker: read budget must be at least 4096 bytes".into());
        }
        Ok(())
    }
}

/// Most pub/sub connections one broker opens (`--redis-pubsub-shards`).
pub const MAX_PUBSUB_SHARDS: usize = 64;

/// What `pushwire serve --redis URL` was told about Redis.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// `--redis`, once per shard (1 to [`MAX_REDIS_SHARDS`]): each channel lives on the one
    /// [`crate::redis::shard::shard_of`] picks, so the order must be the same on every node.
    pub urls: Vec<RedisUrl>,
    /// `--redis-ca-file`: more roots a `rediss://` server's certificate may chain to (every
    /// shard's).
    pub tls: TlsOptions,
    /// `--redis-pubsub-shards`: see [`BrokerConfig::pubsub_shards`].
    pub pubsub_shards: usize,
    /// `--redis-request-timeout`: [`Limits::request_timeout`].
    pub request_timeout: Duration,
    /// `--redis-max-pending`: [`Limits::max_pending_requests`].
    pub max_pending_requests: usize,
    /// `--redis-ping-interval`: [`Limits::ping_interval`].
    pub ping_interval: Duration,
    /// `--redis-heartbeat-interval`: [`Limits::heartbeat_interval`].
    pub heartbeat_interval: Duration,
    /// `--redis-node-timeout`: [`Limits::node_timeout`].
    pub node_timeout: Duration,
    /// `--redis-survey-timeout`: [`Limits::survey_timeout`].
    pub survey_timeout: Duration,
}

/// What one node's broker needs to know.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// The Redis server.
    pub url: RedisUrl,
    /// What a `rediss://` connection trusts besides Mozilla's roots (`--redis-ca-file`);
    /// unused for `redis://`.
    pub tls: TlsOptions,
    /// The key prefix shared by the nodes of one deployment.
    pub namespace: Namespace,
    /// How long a channel's keys live after its last publish (and its meta after its last
    /// read): the hub's `max_history_age`.
    pub history_ttl: Duration,
    /// About how many messages each channel's history keeps (`XADD MAXLEN ~`).
    pub max_history_messages: usize,
    /// Names this node's connections in `CLIENT LIST` (`pushwire-cmd-NODE`,
    /// `pushwire-sub-NODE-SHARD`).
    pub node_name: String,
    /// How many pub/sub connections the live channels are spread over (by a consistent hash
    /// of the channel name), 1 to [`MAX_PUBSUB_SHARDS`].
    pub pubsub_shards: usize,
    /// This node's id in presence members (drawn at start, never 0).
    pub node_id: u64,
    /// This server's place in the `--redis` list (0 with one server) and the list's length:
    /// claimed on the server at every connect, and a server claimed at another place or in a
    /// list of another length is refused ([`crate::redis::shard::check_claim`]).
    pub shard_index: usize,
    /// How many servers the `--redis` list has (1 with one server).
    pub shard_count: usize,
    /// Bounds and timings.
    pub limits: Limits,
}

/// A request from an event loop. Every request but `Unsubscribe` is answered by one
/// [`BrokerEvent`] carrying its `token`, pushed to its `sink`.
#[derive(Debug)]
pub enum BrokerRequest {
    /// Publish a message; answered by [`BrokerEvent::Published`].
    Publish {
        /// The loop to answer.
        sink: SinkId,
        /// Chosen by the loop, echoed in the answer.
        token: u64,
        /// The channel.
        channel: ChannelName,
        /// The event name, if any.
        event: Option<Arc<str>>,
        /// The body.
        payload: Payload,
    },
    /// Read the history after a cursor; answered by [`BrokerEvent::Read`].
    Read {
        /// The loop to answer.
        sink: SinkId,
        /// Echoed in the answer.
        token: u64,
        /// The channel.
        channel: ChannelName,
        /// Where the client's history ends.
        since: Since,
        /// The most messages to return.
        max_messages: usize,
    },
    /// Subscribe one connection of `sink` and replay what follows `since`; answered by
    /// [`BrokerEvent::Subscribed`] (see the module docs for what the replay covers). On
    /// success the channel's deliveries go to `sink` until the matching `Unsubscribe`.
    Subscribe {
        /// The loop of the connection.
        sink: SinkId,
        /// Echoed in the answer.
        token: u64,
        /// The channel.
        channel: ChannelName,
        /// Where the client's history ends.
        since: Since,
        /// The transport holding it (this node's counts per transport), echoed.
        transport: Transport,
        /// The connection joins the channel's presence (a `pushwire.v1` subscriber).
        member: Option<Box<BrokerMember>>,
    },
    /// One subscription of `sink` (answered `Ok` before) ended; no answer. If the connection
    /// was a presence member of the channel, it leaves.
    Unsubscribe {
        /// The loop of the connection.
        sink: SinkId,
        /// The channel.
        channel: ChannelName,
        /// The transport it subscribed with.
        transport: Transport,
        /// The connection.
        conn: ConnId,
    },
    /// Read a channel's presence across every node; answered by [`BrokerEvent::Presence`].
    Presence {
        /// The loop to answer.
        sink: SinkId,
        /// Echoed in the answer.
        token: u64,
        /// The channel.
        channel: ChannelName,
        /// List the members (else only the count).
        list: bool,
    },
    /// The server API's `disconnect` / `unsubscribe` for other nodes: published on the control
    /// channel (to every node, or to `disconnect.node` only); answered by
    /// [`BrokerEvent::Disconnected`] once Redis took it. A user's disconnect (no node) is
    /// applied on this node too, through [`BrokerOutbox::disconnect`], once published.
    Disconnect {
        /// The loop to answer.
        sink: SinkId,
        /// Echoed in the answer.
        token: u64,
        /// What to apply.
        disconnect: Arc<Disconnect>,
    },
    /// A channel's figures across every node (a survey); answered by [`BrokerEvent::Info`].
    Info {
        /// The loop to answer.
        sink: SinkId,
        /// Echoed in the answer.
        token: u64,
        /// The channel.
        channel: ChannelName,
    },
    /// Channel names with a subscriber on some node (a survey); answered by
    /// [`BrokerEvent::Channels`].
    Channels {
        /// The loop to answer.
        sink: SinkId,
        /// Echoed in the answer.
        token: u64,
        /// Names starting with this.
        prefix: String,
        /// Names after this one.
        after: Option<String>,
        /// The most names (capped by the server API).
        limit: usize,
    },
    /// Queued by [`BrokerClient::submit`] in place of a request it refused (the queue was
    /// full, [`Limits::max_queued_requests`]): the broker hands `event` to `sink` after the
    /// answers to the same connection's earlier requests, which are ahead of it in the queue
    /// or in the pipeline (the loops match a connection's answers to its commands in order).
    Refused {
        /// The loop to answer.
        sink: SinkId,
        /// The refused request's token.
        token: u64,
        /// Its answer (an [`BrokerError::Overloaded`] error).
        event: Box<BrokerEvent>,
    },
}

impl BrokerRequest {
    /// The answer to this request when it fails with `error`: its sink, token and event;
    /// `None` for one that has no answer (`Unsubscribe`, `Refused`).
    fn refusal(&self, error: BrokerError) -> Option<(SinkId, u64, BrokerEvent)> {
        let (sink, token, event) = match self {
            BrokerRequest::Publish { sink, token, .. } => {
                (sink, token, BrokerEvent::Published { token: *token, result: Err(error) })
            }
            BrokerRequest::Read { sink, token, .. } => {
                (sink, token, BrokerEvent::Read { token: *token, result: Err(error) })
            }
            BrokerRequest::Subscribe { sink, token, channel, transport, .. } => {
                let channel = channel.clone();
                (
                    sink,
                    token,
                    BrokerEvent::Subscribed {
                        token: *token,
                        channel,
                        transport: *transport,
                        result: Err(error),
                    },
                )
            }
            BrokerRequest::Presence { sink, token, channel, .. } => (
                sink,
                token,
                BrokerEvent::Presence { token: *token, channel: channel.clone(), result: Err(error) },
            ),
            BrokerRequest::Disconnect { sink, token, .. } => {
                (sink, token, BrokerEvent::Disconnected { token: *token, result: Err(error) })
            }
            BrokerRequest::Info { sink, token, channel } => (
                sink,
                token,
                BrokerEvent::Info { token: *token, channel: channel.clone(), result: Err(error) },
            ),
            BrokerRequest::Channels { sink, token, .. } => {
                (sink, token, BrokerEvent::Channels { token: *token, result: Err(error) })
            }
            BrokerRequest::Unsubscribe { .. } | BrokerRequest::Refused { .. } => return None,
        };
        Some((*sink, *token, event))
    }
}

/// A connection joining a channel's presence with its subscription.
#[derive(Debug)]
pub struct BrokerMember {
    /// The connection (on the request's sink).
    pub conn: ConnId,
    /// What it shows.
    pub joining: Joining,
}

/// An answer or a delivery for one event loop.
#[derive(Debug)]
pub enum BrokerEvent {
    /// The answer to [`BrokerRequest::Publish`]: the message's cursor.
    Published {
        /// The request's token.
        token: u64,
        /// The cursor, or why not.
        result: Result<Cursor, BrokerError>,
    },
    /// The answer to [`BrokerRequest::Read`].
    Read {
        /// The request's token.
        token: u64,
        /// What follows the cursor, by the hub's gap rules.
        result: Result<Replay, BrokerError>,
    },
    /// The answer to [`BrokerRequest::Subscribe`].
    Subscribed {
        /// The request's token.
        token: u64,
        /// The channel.
        channel: ChannelName,
        /// The request's transport.
        transport: Transport,
        /// The replay; on an error the subscription was not made.
        result: Result<Replay, BrokerError>,
    },
    /// A message of a channel the sink has subscribers on, in offset order per channel.
    Delivery(Arc<Message>),
    /// The answer to [`BrokerRequest::Presence`]: every node's members (at most
    /// [`Limits::max_presence_members`]).
    Presence {
        /// The request's token.
        token: u64,
        /// The channel.
        channel: ChannelName,
        /// The members, or why not.
        result: Result<PresenceList, BrokerError>,
    },
    /// A member joined or left a channel (on any node): tell the connections of `notify` on
    /// this sink.
    PresenceChange(Arc<PresenceEvent>),
    /// The answer to [`BrokerRequest::Disconnect`]: published on the control channel.
    Disconnected {
        /// The request's token.
        token: u64,
        /// Published, or why not.
        result: Result<(), BrokerError>,
    },
    /// The answer to [`BrokerRequest::Info`].
    Info {
        /// The request's token.
        token: u64,
        /// The channel.
        channel: ChannelName,
        /// Its figures summed over the nodes that answered (`None`: no such channel in Redis
        /// and no subscriber anywhere), or why not.
        result: Result<Option<ChannelInfo>, BrokerError>,
    },
    /// The answer to [`BrokerRequest::Channels`].
    Channels {
        /// The request's token.
        token: u64,
        /// The merged page, or why not.
        result: Result<ChannelPage, BrokerError>,
    },
}

impl BrokerEvent {
    /// This answer with its result replaced by `error` (a delivery or presence change is
    /// returned as it is).
    fn with_error(mut self, error: BrokerError) -> BrokerEvent {
        match &mut self {
            BrokerEvent::Published { result, .. } => *result = Err(error),
            BrokerEvent::Read { result, .. } | BrokerEvent::Subscribed { result, .. } => *result = Err(error),
            BrokerEvent::Presence { result, .. } => *result = Err(error),
            BrokerEvent::Disconnected { result, .. } => *result = Err(error),
            BrokerEvent::Info { result, .. } => *result = Err(error),
            BrokerEvent::Channels { result, .. } => *result = Err(error),
            BrokerEvent::Delivery(_) | BrokerEvent::PresenceChange(_) => {}
        }
        self
    }
}

/// Where the broker pushes answers and deliveries: the event loops' inboxes.
pub trait BrokerOutbox: Send + Sync {
    /// Hands `events` (in order) to the loop `sink` and wakes it. Called once per sink per
    /// broker turn; must not block for long.
    fn deliver(&self, sink: SinkId, events: Vec<BrokerEvent>);

    /// Hands a server API `disconnect` (from another node, or this node's own once published)
    /// to every event loop of this node.
    fn disconnect(&self, disconnect: Arc<Disconnect>);
}

/// Why the broker could not serve a request. Every variant answers HTTP 503 but
/// [`BrokerError::MessageTooLarge`] (413).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BrokerError {
    /// No usable connection to Redis now (down, reconnecting, or lost with this request in
    /// flight); the reason is for logs.
    Unavailable(String),
    /// A queue is full (requests from the loops, the pipeline, or unsent bytes).
    Overloaded,
    /// Redis answered, but not with something usable.
    Reply(ReplyError),
    /// The payload or event name is larger than other nodes accept ([`Limits::frames`]).
    MessageTooLarge,
    /// The broker thread has stopped.
    Stopped,
}

impl BrokerError {
    /// The HTTP status to answer a request that failed with this error.
    pub fn status_hint(&self) -> u16 {
        match self {
            BrokerError::MessageTooLarge => 413,
            _ => 503,
        }
    }
}

impl fmt::Display for BrokerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BrokerError::Unavailable(reason) => write!(f, "redis unavailable: {reason}"),
            BrokerError::Overloaded => f.write_str("redis broker overloaded"),
            BrokerError::Reply(e) => write!(f, "{e}"),
            BrokerError::MessageTooLarge => f.write_str("message larger than the redis frame limits"),
            BrokerError::Stopped => f.write_str("redis broker stopped"),
        }
    }
}

impl std::error::Error for BrokerError {}

/// Counters and state for `/metrics` and `/readyz`.
#[derive(Debug, Default)]
pub struct BrokerStats {
    /// The command connection is ready (handshake, `INFO` and scripts done).
    pub command_up: AtomicBool,
    /// Every pub/sub connection is ready.
    pub pubsub_up: AtomicBool,
    /// Connections opened (both kinds), the first ones included.
    pub connects: AtomicU64,
    /// Connections lost or closed on purpose.
    pub disconnects: AtomicU64,
    /// Publishes answered with a cursor.
    pub published: AtomicU64,
    /// Requests answered with an error.
    pub failed: AtomicU64,
    /// Messages handed to the loops (once per message, whatever the number of sinks).
    pub delivered: AtomicU64,
    /// History reads made to repair live delivery (holes, reconnects, epoch changes).
    pub repair_reads: AtomicU64,
    /// Frames from pub/sub that did not parse (repaired from the history, or a gap).
    pub bad_frames: AtomicU64,
    /// Requests or commands timed out.
    pub timeouts: AtomicU64,
    /// Channels subscribed on pub/sub now.
    pub live_channels: AtomicU64,
    /// Presence script calls that added, refreshed or removed this node's members.
    pub presence_writes: AtomicU64,
    /// Connections that became ready again after being lost (both kinds).
    pub reconnects: AtomicU64,
    /// Commands sent on the command connection and not answered yet (set every turn).
    pub commands_in_flight: AtomicU64,
    /// Live channels whose deliveries moved to another epoch.
    pub epoch_changes: AtomicU64,
    /// Publish round trips, sent to answered (merged once per broker turn).
    pub publish_latency: LatencyHistogram,
    /// Other nodes in the registry now (heard from within [`Limits::node_timeout`]).
    pub nodes: AtomicU64,
    /// Control frames from other nodes that did not parse (dropped).
    pub bad_control_frames: AtomicU64,
    /// Surveys answered at their timeout without every node's reply.
    pub survey_timeouts: AtomicU64,
    /// Survey replies that came after their survey was answered (dropped).
    pub survey_late_replies: AtomicU64,
}

impl BrokerStats {
    /// A snapshot for `/metrics`.
    pub fn figures(&self) -> BackendFigures {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let latency = self.publish_latency.snapshot();
        BackendFigures {
            command_up: self.command_up.load(Ordering::Relaxed),
            pubsub_up: self.pubsub_up.load(Ordering::Relaxed),
            reconnects: load(&self.reconnects),
            disconnects: load(&self.disconnects),
            commands_in_flight: load(&self.commands_in_flight),
            pubsub_channels: load(&self.live_channels),
            published: load(&self.published),
            failed: load(&self.failed),
            timeouts: load(&self.timeouts),
            repair_reads: load(&self.repair_reads),
            epoch_changes: load(&self.epoch_changes),
            bad_frames: load(&self.bad_frames),
            presence_writes: load(&self.presence_writes),
            nodes: load(&self.nodes),
            bad_control_frames: load(&self.bad_control_frames),
            survey_timeouts: load(&self.survey_timeouts),
            survey_late_replies: load(&self.survey_late_replies),
            publish_latency_buckets: latency.buckets(),
            publish_latency_sum_us: latency.sum_us(),
        }
    }
}

impl BrokerStats {
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// The request queue shared by the loops and the broker thread.
struct Queue {
    requests: Mutex<QueueState>,
    waker: Waker,
    max: usize,
}

struct QueueState {
    requests: VecDeque<BrokerRequest>,
    stopping: bool,
}

impl fmt::Debug for Queue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Queue").field("max", &self.max).finish_non_exhaustive()
    }
}

/// How the event loops reach the broker: cheap to clone, one per loop.
#[derive(Debug, Clone)]
pub struct BrokerClient {
    queue: Arc<Queue>,
    stats: Arc<BrokerStats>,
}

impl BrokerClient {
    /// Queues a request and wakes the broker; never blocks. A full queue queues the request's
    /// [`BrokerError::Overloaded`] refusal instead (an `Unsubscribe` is queued anyway, see
    /// [`Limits::max_queued_requests`]); a stopped broker, or a queue already holding twice
    /// its bound, is an error at once (answer the client with its
    /// [`BrokerError::status_hint`]).
    pub fn submit(&self, request: BrokerRequest) -> Result<(), BrokerError> {
        let mut state = self.queue.requests.lock().unwrap_or_else(|e| e.into_inner());
        if state.stopping {
            return Err(BrokerError::Stopped);
        }
        let unsubscribe = matches!(request, BrokerRequest::Unsubscribe { .. });
        if state.requests.len() >= self.queue.max && !unsubscribe {
            BrokerStats::add(&self.stats.failed, 1);
            // The refusal waits its turn behind the connection's earlier requests (at most
            // `max` refusals beyond the `max` requests, see `Limits::max_queued_requests`).
            let refusal = request.refusal(BrokerError::Overloaded);
            let Some((sink, token, event)) = refusal.filter(|_| state.requests.len() < 2 * self.queue.max)
            else {
                return Err(BrokerError::Overloaded);
            };
            state.requests.push_back(BrokerRequest::Refused { sink, token, event: Box::new(event) });
            return Ok(());
        }
        let first = state.requests.is_empty();
        state.requests.push_back(request);
        drop(state);
        if first {
            let _ = self.queue.waker.wake();
        }
        Ok(())
    }

    /// The broker's counters.
    pub fn stats(&self) -> &BrokerStats {
        &self.stats
    }
}

/// The running broker thread; stopped when dropped.
#[derive(Debug)]
pub struct Broker {
    client: BrokerClient,
    thread: Option<JoinHandle<()>>,
}

impl Broker {
    /// Starts the broker thread and waits until its command connection is ready (connected,
    /// `INFO` read from a master, scripts loaded), at most [`Limits::request_timeout`] plus
    /// a second. An unreachable or unusable Redis is an error naming the URL and the reason.
    pub fn start(config: BrokerConfig, outbox: Arc<dyn BrokerOutbox>) -> Result<Broker, BrokerError> {
        config.limits.validate().map_err(BrokerError::Unavailable)?;
        if !(1..=MAX_PUBSUB_SHARDS).contains(&config.pubsub_shards) {
            return Err(BrokerError::Unavailable(format!(
                "redis broker: pub/sub shards must be 1 to {MAX_PUBSUB_SHARDS}"
            )));
        }
        let tls = match config.url.tls {
            false => None,
            true => Some(link::TlsSetup {
                config: crate::client::tls::client_config(&config.tls)
                    .map_err(|e| BrokerError::Unavailable(e.to_string()))?,
                name: rustls::pki_types::ServerName::try_from(config.url.host.clone()).map_err(|e| {
                    BrokerError::Unavailable(format!("{:?} is not a TLS server name: {e}", config.url.host))
                })?,
            }),
        };
        let poll = Poll::new().map_err(|e| BrokerError::Unavailable(format!("poll: {e}")))?;
        let waker = Waker::new(poll.registry(), worker::WAKER)
            .map_err(|e| BrokerError::Unavailable(format!("waker: {e}")))?;
        let queue = Arc::new(Queue {
            requests: Mutex::new(QueueState { requests: VecDeque::new(), stopping: false }),
            waker,
            max: config.limits.max_queued_requests,
        });
        let stats = Arc::new(BrokerStats::default());
        let client = BrokerClient { queue: queue.clone(), stats: stats.clone() };
        let wait = config.limits.request_timeout + Duration::from_secs(1);
        let url = config.url.to_string();
        let (ready_tx, ready_rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("pushwire-redis".into())
            .spawn(move || worker::run(config, tls, poll, queue, stats, outbox, ready_tx))
            .map_err(|e| BrokerError::Unavailable(format!("thread: {e}")))?;
        let broker = Broker { client, thread: Some(thread) };
        match ready_rx.recv_timeout(wait) {
            Ok(Ok(())) => Ok(broker),
            Ok(Err(reason)) => Err(BrokerError::Unavailable(format!("{url}: {reason}"))),
            Err(_) => Err(BrokerError::Unavailable(format!("{url}: not ready within {wait:?}"))),
        }
    }

    /// A client for one event loop.
    pub fn client(&self) -> BrokerClient {
        self.client.clone()
    }

    /// Stops the thread: queued requests are dropped unanswered.
    pub fn stop(&mut self) {
        let mut state = self.client.queue.requests.lock().unwrap_or_else(|e| e.into_inner());
        state.stopping = true;
        drop(state);
        let _ = self.client.queue.waker.wake();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client whose queue no broker thread drains (the queue stays as `submit` left it).
    fn undrained(max: usize) -> (BrokerClient, Poll) {
        let poll = Poll::new().unwrap();
        let waker = Waker::new(poll.registry(), mio::Token(0)).unwrap();
        let queue = Arc::new(Queue {
            requests: Mutex::new(QueueState { requests: VecDeque::new(), stopping: false }),
            waker,
            max,
        });
        (BrokerClient { queue, stats: Arc::new(BrokerStats::default()) }, poll)
    }

    fn read(sink: SinkId, token: u64) -> BrokerRequest {
        let channel = ChannelName::parse("a").unwrap();
        BrokerRequest::Read { sink, token, channel, since: Since::Tail, max_messages: 10 }
    }

    /// A request refused because the queue is full is queued as its refusal, behind the
    /// requests already queued (so the broker answers it after the same connection's earlier
    /// ones, as it does a pipeline refusal), up to as many refusals again; then at once. An
    /// unsubscribe is queued even on a full queue (dropping it would leave its count).
    #[test]
    fn a_full_queue_queues_the_refusal_behind_earlier_requests_up_to_a_bound() {
        let (client, _poll) = undrained(2);
        let sink = SinkId::new(1).unwrap();
        assert!(client.submit(read(sink, 1)).is_ok() && client.submit(read(sink, 2)).is_ok());
        assert!(client.submit(read(sink, 3)).is_ok(), "queued as a refusal");
        let channel = ChannelName::parse("b").unwrap();
        let subscribe = BrokerRequest::Subscribe {
            sink,
            token: 4,
            channel: channel.clone(),
            since: Since::Tail,
            transport: Transport::WebSocket,
            member: None,
        };
        assert!(client.submit(subscribe).is_ok());
        let unsubscribe = BrokerRequest::Unsubscribe {
            sink,
            channel,
            transport: Transport::WebSocket,
            conn: ConnId::new(1, 1),
        };
        assert!(client.submit(unsubscribe).is_ok(), "an unsubscribe is never dropped");
        assert!(matches!(client.submit(read(sink, 5)), Err(BrokerError::Overloaded)), "past the bound");
        assert_eq!(client.stats().failed.load(Ordering::Relaxed), 3);
        let state = client.queue.requests.lock().unwrap();
        let queued: Vec<String> = state
            .requests
            .iter()
            .map(|r| match r {
                BrokerRequest::Read { token, .. } => format!("read {token}"),
                BrokerRequest::Unsubscribe { channel, .. } => format!("unsubscribe {}", channel.as_str()),
                BrokerRequest::Refused { sink: s, token, event } if *s == sink => match &**event {
                    BrokerEvent::Read { token: t, result: Err(BrokerError::Overloaded) } if t == token => {
                        format!("refused read {token}")
                    }
                    BrokerEvent::Subscribed {
                        token: t,
                        channel,
                        result: Err(BrokerError::Overloaded),
                        ..
                    } if t == token => {
                        format!("refused subscribe {token} {}", channel.as_str())
                    }
                    other => format!("unexpected {other:?}"),
                },
                other => format!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(queued, ["read 1", "read 2", "refused read 3", "refused subscribe 4 b", "unsubscribe b"]);
    }
}
