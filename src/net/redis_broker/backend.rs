//! The Redis hub backend: [`HubBackend`] over the brokers, so `pushwire serve --redis URL`
//! runs its channels on Redis (one server, or several as shards) and any number of nodes
//! share them.
//!
//! Implements: one broker per `--redis` server; every per-channel request (publish, read,
//! subscribe, unsubscribe, presence, info) goes to the broker of
//! [`crate::redis::shard::shard_of`] its channel, a server API `disconnect` / `unsubscribe`
//! for other nodes to shard 0 (whose control channel every node hears, so it is applied once
//! per node), `channels` to every shard (pages merged); `Ready` is up when every shard is,
//! `Stats` sums them. Each request is first recorded in its loop's `ShardOrder` (`shards.rs`),
//! through which the brokers' answers reach the inbox in the order the connection asked (the
//! loops match a connection's answers to its commands in order), with one server as with
//! several: one broker answers a subscribe when its channel is live, after later publishes of
//! the same connection (`redis_nodes_pipelined_ws_commands_are_answered_in_order_on_one_server`).
//! Every [`Command`] is submitted to a broker and answered [`Submitted::Later`] but these:
//! `Stats` and `Ready` are answered at once from the brokers' counters; `Unsubscribe` is
//! submitted and answered [`Submitted::NoReply`]; a `SubscribeMember` whose info or user is too
//! large is answered at once ([`HubError::InfoTooLarge`]) without reaching a broker; a server
//! API `disconnect` of one connection of this node is handed to this node's loops and answered
//! at once, as on one node. Any other `disconnect` goes to every node through the broker's
//! control channel; `info` and `channels` are the broker's surveys of every node. The broker's
//! answers and deliveries become [`LoopEvent`]s in the loops' [`Inbox`]es (the request token
//! carries the connection's [`ConnId`]). A request the broker cannot take is refused with
//! [`HubError::BackendUnavailable`] (503): through the broker, after the connection's earlier
//! requests, when its queue is full (the broker queues the refusal,
//! `redis_broker::Limits::max_queued_requests`); at once when the broker stopped or even its
//! refusals fill the queue.
//!
//! Does not: expire anything (Redis expires the keys), or count history in `Stats` (only live
//! channels).

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use std::{fmt, io};

use super::shards::{sum_figures, Answered, ShardOrder, MAX_REDIS_SHARDS};
use super::{
    Broker, BrokerClient, BrokerConfig, BrokerError, BrokerEvent, BrokerMember, BrokerOutbox, BrokerRequest,
    Limits, RedisOptions,
};
use crate::config::Config;
use crate::hub::backend::{ConnAddr, ConnId, Disconnect, DisconnectTarget, HubBackend, LoopEvent, Submitted};
use crate::hub::{ChannelName, Command, HubError, HubStats, Reply, SinkId};
use crate::net::{serve_with, Bound, Inbox, Listen};
use crate::protocol::Transport;
use crate::redis::keys::Namespace;
use crate::redis::shard::shard_of;

/// The request token for a connection: its slab key and generation.
fn token(conn: ConnId) -> u64 {
    (conn.key() as u64) << 32 | u64::from(conn.generation)
}

fn conn_of(token: u64) -> ConnId {
    ConnId::new((token >> 32) as usize, token as u32)
}

fn hub_error(error: &BrokerError) -> HubError {
    match error {
        BrokerError::MessageTooLarge => HubError::MessageTooLarge,
        _ => HubError::BackendUnavailable,
    }
}

/// Pushes the broker's events into the loops' inboxes.
struct InboxOutbox {
    inboxes: Arc<[Inbox]>,
}

impl BrokerOutbox for InboxOutbox {
    fn deliver(&self, sink: SinkId, events: Vec<BrokerEvent>) {
        let Some(inbox) = self.inboxes.get(usize::from(sink.index())) else { return };
        for event in events {
            let event = match event {
                BrokerEvent::Delivery(message) => LoopEvent::Delivery(message),
                BrokerEvent::Published { token, result } => LoopEvent::Reply {
                    conn: conn_of(token),
                    reply: Box::new(Reply::Published(result.map_err(|e| log_error(&e)))),
                },
                BrokerEvent::Read { token, result } => LoopEvent::Reply {
                    conn: conn_of(token),
                    reply: Box::new(Reply::Read(result.map_err(|e| log_error(&e)))),
                },
                BrokerEvent::Subscribed { token, channel, transport, result } => LoopEvent::Reply {
                    conn: conn_of(token),
                    reply: Box::new(Reply::Subscribed {
                        channel,
                        transport,
                        replay: result.map_err(|e| log_error(&e)),
                    }),
                },
                BrokerEvent::Presence { token, channel, result } => LoopEvent::Reply {
                    conn: conn_of(token),
                    reply: Box::new(Reply::Presence { channel, result: result.map_err(|e| log_error(&e)) }),
                },
                BrokerEvent::PresenceChange(event) => LoopEvent::Presence(event),
                BrokerEvent::Disconnected { token, result } => LoopEvent::Reply {
                    conn: conn_of(token),
                    reply: Box::new(Reply::Sent(result.map_err(|e| log_error(&e)))),
                },
                BrokerEvent::Info { token, channel, result } => LoopEvent::Reply {
                    conn: conn_of(token),
                    reply: Box::new(Reply::Info { channel, result: result.map_err(|e| log_error(&e)) }),
                },
                BrokerEvent::Channels { token, result } => LoopEvent::Reply {
                    conn: conn_of(token),
                    reply: Box::new(Reply::Channels(result.map_err(|e| log_error(&e)))),
                },
            };
            inbox.push(event, true);
        }
    }

    fn disconnect(&self, disconnect: Arc<Disconnect>) {
        for inbox in self.inboxes.iter() {
            inbox.push(LoopEvent::Disconnect(disconnect.clone()), true);
        }
    }
}

fn log_error(error: &BrokerError) -> HubError {
    log::debug!("redis backend: {error}");
    hub_error(error)
}

/// The brokers' answers and deliveries: each loop's [`ShardOrder`] puts them back in the order
/// its connections asked before they reach its inbox.
struct Ordered {
    /// One per loop (sink index).
    orders: Box<[Mutex<ShardOrder>]>,
    inboxes: InboxOutbox,
}

impl Ordered {
    /// Hands `events` from the broker of `shard` to the loop `sink` as its order allows. The
    /// order stays locked while they are pushed, so two brokers' batches never interleave.
    fn hand_over(&self, shard: usize, sink: SinkId, events: Vec<BrokerEvent>) {
        let Some(order) = self.orders.get(usize::from(sink.index())) else { return };
        let mut order = order.lock().unwrap_or_else(|e| e.into_inner());
        let events = order.handle_events(shard, events);
        if !events.is_empty() {
            self.inboxes.deliver(sink, events);
        }
    }

    fn order(&self, sink: SinkId) -> Option<std::sync::MutexGuard<'_, ShardOrder>> {
        let order = self.orders.get(usize::from(sink.index()))?;
        Some(order.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// The outbox of one shard's broker.
struct ShardOutbox {
    shard: usize,
    ordered: Arc<Ordered>,
}

impl BrokerOutbox for ShardOutbox {
    fn deliver(&self, sink: SinkId, events: Vec<BrokerEvent>) {
        self.ordered.hand_over(self.shard, sink, events);
    }

    fn disconnect(&self, disconnect: Arc<Disconnect>) {
        self.ordered.inboxes.disconnect(disconnect);
    }
}

/// The Redis backend: one broker thread per Redis server (shard) and the way to them.
pub struct RedisHub {
    /// One per shard, in the order of the URLs.
    shards: Box<[BrokerClient]>,
    /// The loops' answer orders.
    ordered: Arc<Ordered>,
    /// The hub's `PresenceLimits::max_info_bytes`, checked before a member is sent.
    max_info_bytes: usize,
    /// The longest user id other nodes accept in a join frame.
    max_user_bytes: usize,
    /// This node's loops' inboxes (a server API `disconnect` for this node only goes to each
    /// without Redis).
    inboxes: Arc<[Inbox]>,
    /// This node's id (presence members, control frames), the same on every shard.
    node_id: u64,
    /// Stops the broker threads when the backend is dropped.
    _brokers: Vec<Broker>,
}

impl fmt::Debug for RedisHub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisHub").field("shards", &self.shards.len()).finish_non_exhaustive()
    }
}

impl RedisHub {
    /// Starts one broker per Redis server of `redis` (in order) with the hub limits of
    /// `config` (history length and age), pushing into `inboxes`; an unreachable or unusable
    /// Redis is an error naming its URL, and no broker is left running.
    pub fn start(
        config: &Config,
        redis: RedisOptions,
        inboxes: Arc<[Inbox]>,
    ) -> Result<RedisHub, BrokerError> {
        let count = redis.urls.len();
        if !(1..=MAX_REDIS_SHARDS).contains(&count) {
            return Err(BrokerError::Unavailable(format!(
                "redis: 1 to {MAX_REDIS_SHARDS} servers, not {count}"
            )));
        }
        // Never 0: that is the in-memory hub's members' node.
        let node_id = rand::random::<u64>().max(1);
        let presence = config.hub.presence;
        let mut limits = Limits {
            presence_ttl: presence.member_ttl,
            request_timeout: redis.request_timeout,
            max_pending_requests: redis.max_pending_requests,
            ping_interval: redis.ping_interval,
            heartbeat_interval: redis.heartbeat_interval,
            node_timeout: redis.node_timeout,
            survey_timeout: redis.survey_timeout,
            ..Limits::default()
        };
        limits.max_presence_members = presence.max_members_per_channel;
        limits.frames.max_info_bytes = limits.frames.max_info_bytes.max(presence.max_info_bytes);
        let max_user_bytes = limits.frames.max_user_bytes;
        // A `channels` survey asks at most the API's page; each node answers one more name.
        limits.control.max_names = config.api.limits.max_page_channels.saturating_add(1);
        let orders = (0..inboxes.len()).map(|_| Mutex::new(ShardOrder::new(count))).collect();
        let ordered = Arc::new(Ordered { orders, inboxes: InboxOutbox { inboxes: inboxes.clone() } });
        let mut brokers = Vec::with_capacity(count);
        for (shard, url) in redis.urls.into_iter().enumerate() {
            let broker_config = BrokerConfig {
                url,
                tls: redis.tls.clone(),
                pubsub_shards: redis.pubsub_shards,
                namespace: Namespace::default(),
                history_ttl: config.hub.max_history_age,
                max_history_messages: config.hub.max_history_messages,
                node_name: format!("{node_id:016x}"),
                node_id,
                shard_index: shard,
                shard_count: count,
                limits: limits.clone(),
            };
            let outbox = Arc::new(ShardOutbox { shard, ordered: ordered.clone() });
            brokers.push(Broker::start(broker_config, outbox)?);
        }
        Ok(RedisHub {
            shards: brokers.iter().map(Broker::client).collect(),
            ordered,
            max_info_bytes: presence.max_info_bytes,
            max_user_bytes,
            inboxes,
            node_id,
            _brokers: brokers,
        })
    }

    /// The brokers, one per shard in the order of the URLs (their counters).
    pub fn clients(&self) -> &[BrokerClient] {
        &self.shards
    }

    /// The shard of `channel`.
    fn shard(&self, channel: &ChannelName) -> usize {
        match self.shards.len() {
            1 => 0,
            n => shard_of(channel, n),
        }
    }

    /// Submits `request` (not an `Unsubscribe`): to its channel's shard (a `disconnect` to
    /// shard 0, whose control channel every node hears; `channels` to every shard), recorded
    /// first in its loop's answer order. A request a broker refuses at once is answered
    /// through the order too, after the connection's earlier answers.
    fn submit_ordered(&self, request: BrokerRequest) -> Submitted {
        let ordered = &self.ordered;
        if let BrokerRequest::Channels { sink, token, prefix, after, limit } = request {
            // (Every sink has an order: one per inbox, as `InboxOutbox` has an inbox.)
            if let Some(mut order) = ordered.order(sink) {
                order.expect_channels(token, limit);
            }
            for (shard, client) in self.shards.iter().enumerate() {
                let (prefix, after) = (prefix.clone(), after.clone());
                if let Err(error) =
                    client.submit(BrokerRequest::Channels { sink, token, prefix, after, limit })
                {
                    log::debug!("redis backend: {error}");
                    ordered.hand_over(shard, sink, vec![BrokerEvent::Channels { token, result: Err(error) }]);
                }
            }
            return Submitted::Later;
        }
        let in_order =
            |channel: &ChannelName| (self.shard(channel), Answered::InOrder, Some(channel.clone()));
        let (shard, kind, channel) = match &request {
            BrokerRequest::Publish { channel, .. }
            | BrokerRequest::Read { channel, .. }
            | BrokerRequest::Presence { channel, .. } => in_order(channel),
            BrokerRequest::Subscribe { channel, .. } => {
                (self.shard(channel), Answered::Subscribe, Some(channel.clone()))
            }
            BrokerRequest::Info { channel, .. } => {
                (self.shard(channel), Answered::Info, Some(channel.clone()))
            }
            BrokerRequest::Disconnect { .. } => (0, Answered::InOrder, None),
            BrokerRequest::Channels { .. }
            | BrokerRequest::Unsubscribe { .. }
            | BrokerRequest::Refused { .. } => {
                unreachable!("answered above or only queued by the client")
            }
        };
        let Some((sink, token, refusal)) = request.refusal(BrokerError::Stopped) else {
            unreachable!("every request here is answered")
        };
        if let Some(mut order) = ordered.order(sink) {
            order.expect_one(token, shard, kind, channel);
        }
        if let Err(error) = self.shards[shard].submit(request) {
            log::debug!("redis backend: {error}");
            ordered.hand_over(shard, sink, vec![refusal.with_error(error)]);
        }
        Submitted::Later
    }
}

impl HubBackend for RedisHub {
    fn submit(&self, from: ConnAddr, command: Command, _now: Instant) -> Submitted {
        let (sink, token) = (from.sink, token(from.conn));
        let request = match command {
            // Surveys of every node (README "Server API").
            Command::Info { channel } => BrokerRequest::Info { sink, token, channel },
            Command::Channels { prefix, after, limit } => {
                BrokerRequest::Channels { sink, token, prefix, after, limit }
            }
            // A connection of this node (its id names this node, or no node): applied here
            // only, as on one node; else published on the control channel (README "Server
            // API").
            Command::Disconnect(disconnect) => {
                let here = matches!(disconnect.target, DisconnectTarget::Conn(_))
                    && disconnect.node.is_none_or(|node| node == self.node_id);
                if here {
                    return crate::net::send_disconnect(&self.inboxes, from, disconnect);
                }
                BrokerRequest::Disconnect { sink, token, disconnect }
            }
            Command::Publish { channel, event, payload } => {
                BrokerRequest::Publish { sink, token, channel, event, payload }
            }
            Command::Read { channel, since, max_messages } => {
                BrokerRequest::Read { sink, token, channel, since, max_messages }
            }
            Command::Subscribe { channel, since, transport } => {
                BrokerRequest::Subscribe { sink, token, channel, since, transport, member: None }
            }
            Command::SubscribeMember { channel, since, member } => {
                // Bounded before it is sent: the same limit as the in-memory hub's, and what
                // other nodes accept in a join frame.
                if member.info.as_ref().is_some_and(|i| i.len() > self.max_info_bytes)
                    || member.user.as_ref().is_some_and(|u| u.len() > self.max_user_bytes)
                {
                    let replay = Err(HubError::InfoTooLarge);
                    return Submitted::Reply(Reply::Subscribed {
                        channel,
                        transport: Transport::WebSocket,
                        replay,
                    });
                }
                let member = Some(Box::new(BrokerMember { conn: from.conn, joining: *member }));
                let transport = Transport::WebSocket;
                BrokerRequest::Subscribe { sink, token, channel, since, transport, member }
            }
            Command::Presence { channel, list } => BrokerRequest::Presence { sink, token, channel, list },
            Command::Unsubscribe { channel, transport } => {
                let shard = self.shard(&channel);
                let request = BrokerRequest::Unsubscribe { sink, channel, transport, conn: from.conn };
                // Never refused for a full queue (`Limits::max_queued_requests`); it fails only
                // when the broker stops, and then every subscription ends with it.
                let _ = self.shards[shard].submit(request);
                return Submitted::NoReply;
            }
            Command::Ready => {
                // Ready when every shard is: a channel on a shard that is down fails.
                let up = self.shards.iter().all(|client| {
                    let stats = client.stats();
                    stats.command_up.load(Ordering::Relaxed) && stats.pubsub_up.load(Ordering::Relaxed)
                });
                return Submitted::Reply(Reply::Ready(if up {
                    Ok(())
                } else {
                    Err(HubError::BackendUnavailable)
                }));
            }
            Command::Stats => {
                let figures = match &*self.shards {
                    [one] => one.stats().figures(),
                    several => sum_figures(several.iter().map(|client| client.stats().figures())),
                };
                let channels = figures.pubsub_channels;
                let backend = Some(Box::new(figures));
                let stats = HubStats { channels: channels as usize, backend, ..HubStats::default() };
                return Submitted::Reply(Reply::Stats(stats));
            }
        };
        self.submit_ordered(request)
    }

    fn expire(&self, _now: Instant) {}
}

/// [`crate::net::serve`] with the channels on the Redis server of `redis`: an unreachable or
/// unusable Redis is an error before any connection is accepted.
pub fn serve(
    config: Config,
    listen: Listen,
    redis: RedisOptions,
    on_ready: impl FnOnce(Bound),
) -> io::Result<()> {
    let hub_config = config.clone();
    let backend = move |inboxes: Arc<[Inbox]>| {
        let hub =
            RedisHub::start(&hub_config, redis, inboxes).map_err(|e| io::Error::other(e.to_string()))?;
        Ok(Arc::new(hub) as Arc<dyn HubBackend>)
    };
    serve_with(config, listen, backend, on_ready)
}
