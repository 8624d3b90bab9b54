//! The Redis hub backend: [`HubBackend`] over the broker, so `pushwire serve --redis URL`
//! runs its channels on Redis and any number of nodes share them.
//!
//! Implements: every [`Command`] but `Stats` and `Ready` is submitted to the broker and answered
//! [`Submitted::Later`] (a server API `disconnect` of one connection of this node is handed to
//! this node's loops at once, as on one node; any other goes to every node through the
//! broker's control channel; `info` and `channels` are the broker's surveys of every node); the broker's answers and deliveries become [`LoopEvent`]s in the
//! loops' [`Inbox`]es (the request token carries the connection's [`ConnId`]). A request the
//! broker cannot take is refused with [`HubError::BackendUnavailable`] (503): through the
//! broker, after the connection's earlier requests, when its queue is full (the broker queues
//! the refusal, `redis_broker::Limits::max_queued_requests`); at once when the broker stopped
//! or even its refusals fill the queue.
//!
//! Does not: keep one connection's replies in submission order across kinds (a publish may be
//! answered before an earlier subscribe of the same connection that waits for its channel to
//! be live; publishes and reads keep their order, a refused or re-sent one included: the
//! broker hands each answer over after the connection's earlier requests' answers), expire anything
//! (Redis expires the keys),
//! or count history in `Stats` (only live channels).

use std::sync::Arc;
use std::time::Instant;
use std::{fmt, io};

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

/// The reply shape of a request the broker refused at once.
enum Refused {
    Publish,
    Read,
    Subscribe(ChannelName, Transport),
    Presence(ChannelName),
    Disconnect,
    Info(ChannelName),
    Channels,
}

/// The Redis backend: the broker thread and the way to it.
pub struct RedisHub {
    client: BrokerClient,
    /// The hub's `PresenceLimits::max_info_bytes`, checked before a member is sent.
    max_info_bytes: usize,
    /// The longest user id other nodes accept in a join frame.
    max_user_bytes: usize,
    /// This node's loops' inboxes (a server API `disconnect` for this node only goes to each
    /// without Redis).
    inboxes: Arc<[Inbox]>,
    /// This node's id (presence members, control frames).
    node_id: u64,
    /// Stops the broker thread when the backend is dropped.
    _broker: Broker,
}

impl fmt::Debug for RedisHub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisHub").finish_non_exhaustive()
    }
}

impl RedisHub {
    /// Starts the broker for `redis` with the hub limits of `config` (history length and age),
    /// pushing into `inboxes`; an unreachable or unusable Redis is an error.
    pub fn start(
        config: &Config,
        redis: RedisOptions,
        inboxes: Arc<[Inbox]>,
    ) -> Result<RedisHub, BrokerError> {
        // Never 0: that is the in-memory hub's members' node.
        let node_id = rand::random::<u64>().max(1);
        let presence = config.hub.presence;
        let mut limits = Limits {
            presence_ttl: presence.member_ttl,
            request_timeout: redis.request_timeout,
            max_pending_requests: redis.max_pending_requests,
            ping_interval: redis.ping_interval,
            ..Limits::default()
        };
        limits.max_presence_members = presence.max_members_per_channel;
        limits.frames.max_info_bytes = limits.frames.max_info_bytes.max(presence.max_info_bytes);
        let max_user_bytes = limits.frames.max_user_bytes;
        // A `channels` survey asks at most the API's page; each node answers one more name.
        limits.control.max_names = config.api.limits.max_page_channels.saturating_add(1);
        let broker_config = BrokerConfig {
            url: redis.url,
            tls: redis.tls,
            pubsub_shards: redis.pubsub_shards,
            namespace: Namespace::default(),
            history_ttl: config.hub.max_history_age,
            max_history_messages: config.hub.max_history_messages,
            node_name: format!("{node_id:016x}"),
            node_id,
            limits,
        };
        let broker = Broker::start(broker_config, Arc::new(InboxOutbox { inboxes: inboxes.clone() }))?;
        Ok(RedisHub {
            client: broker.client(),
            max_info_bytes: presence.max_info_bytes,
            max_user_bytes,
            inboxes,
            node_id,
            _broker: broker,
        })
    }

    /// The broker's counters.
    pub fn client(&self) -> &BrokerClient {
        &self.client
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
                let request = BrokerRequest::Unsubscribe { sink, channel, transport, conn: from.conn };
                // Never refused for a full queue (`Limits::max_queued_requests`); it fails only
                // when the broker stops, and then every subscription ends with it.
                let _ = self.client.submit(request);
                return Submitted::NoReply;
            }
            Command::Ready => {
                let stats = self.client.stats();
                let up = stats.command_up.load(std::sync::atomic::Ordering::Relaxed)
                    && stats.pubsub_up.load(std::sync::atomic::Ordering::Relaxed);
                return Submitted::Reply(Reply::Ready(if up {
                    Ok(())
                } else {
                    Err(HubError::BackendUnavailable)
                }));
            }
            Command::Stats => {
                let channels = self.client.stats().live_channels.load(std::sync::atomic::Ordering::Relaxed);
                let backend = Some(Box::new(self.client.stats().figures()));
                let stats = HubStats { channels: channels as usize, backend, ..HubStats::default() };
                return Submitted::Reply(Reply::Stats(stats));
            }
        };
        // What an error answered at once must look like (submit takes the request).
        let refused = match &request {
            BrokerRequest::Publish { .. } => Refused::Publish,
            BrokerRequest::Read { .. } => Refused::Read,
            BrokerRequest::Subscribe { channel, transport, .. } => {
                Refused::Subscribe(channel.clone(), *transport)
            }
            BrokerRequest::Presence { channel, .. } => Refused::Presence(channel.clone()),
            BrokerRequest::Disconnect { .. } => Refused::Disconnect,
            BrokerRequest::Info { channel, .. } => Refused::Info(channel.clone()),
            BrokerRequest::Channels { .. } => Refused::Channels,
            BrokerRequest::Unsubscribe { .. } => unreachable!("answered above"),
            BrokerRequest::Refused { .. } => unreachable!("only queued by the client"),
        };
        match self.client.submit(request) {
            Ok(()) => Submitted::Later,
            Err(error) => {
                log::debug!("redis backend: {error}");
                let error = hub_error(&error);
                Submitted::Reply(match refused {
                    Refused::Publish => Reply::Published(Err(error)),
                    Refused::Read => Reply::Read(Err(error)),
                    Refused::Subscribe(channel, transport) => {
                        Reply::Subscribed { channel, transport, replay: Err(error) }
                    }
                    Refused::Presence(channel) => Reply::Presence { channel, result: Err(error) },
                    Refused::Disconnect => Reply::Sent(Err(error)),
                    Refused::Info(channel) => Reply::Info { channel, result: Err(error) },
                    Refused::Channels => Reply::Channels(Err(error)),
                })
            }
        }
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
