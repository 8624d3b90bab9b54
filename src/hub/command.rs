//! Requests for the hub, queued by connections and submitted by the event loop to the hub
//! backend ([`super::backend::HubBackend`]).
//!
//! A connection never calls the hub itself: it queues a [`Command`]; the loop submits it, and
//! the backend applies it ([`Command::apply`], under the lock of the in-memory backend) and
//! hands the [`Reply`] back, at once or through the loop's inbox. That keeps the hub ignorant
//! of connections and lets the loop batch its work.

use std::sync::Arc;
use std::time::Instant;

use super::addr::{ConnAddr, Disconnect};
use super::presence::{Joining, Member, PresenceError, PresenceEvent};
use super::{
    ChannelInfo, ChannelName, ChannelPage, Cursor, Hub, HubError, HubStats, Payload, Published, Replay, Since,
};
use crate::protocol::Transport;

/// A request for the hub.
#[derive(Debug)]
pub enum Command {
    /// Append a message to a channel; answered by [`Reply::Published`].
    Publish {
        /// The channel.
        channel: ChannelName,
        /// The event name, if any.
        event: Option<Arc<str>>,
        /// The message.
        payload: Payload,
    },
    /// Read what follows a cursor without subscribing; answered by [`Reply::Read`].
    Read {
        /// The channel.
        channel: ChannelName,
        /// Where the client's history ends.
        since: Since,
        /// The most messages to return.
        max_messages: usize,
    },
    /// Subscribe the connection and replay what follows `since`; answered by
    /// [`Reply::Subscribed`]. Live messages then arrive as deliveries.
    Subscribe {
        /// The channel.
        channel: ChannelName,
        /// Where the client's history ends.
        since: Since,
        /// The transport that holds the subscription (counted per transport for `info`).
        transport: Transport,
    },
    /// Subscribe like [`Command::Subscribe`] and join the channel's presence as a member;
    /// answered by [`Reply::Subscribed`] (refused as a whole when presence is full or the info
    /// too large). The [`Command::Unsubscribe`] that ends the subscription also leaves. Only
    /// a command-mode WebSocket joins presence: the subscription counts as a WebSocket's.
    SubscribeMember {
        /// The channel.
        channel: ChannelName,
        /// Where the client's history ends.
        since: Since,
        /// What the member shows (boxed: the common commands stay small).
        member: Box<Joining>,
    },
    /// Read a channel's presence; answered by [`Reply::Presence`].
    Presence {
        /// The channel.
        channel: ChannelName,
        /// List the members too (else only the count).
        list: bool,
    },
    /// End the connection's subscription to a channel (and its presence, if it is a member);
    /// no reply.
    Unsubscribe {
        /// The channel.
        channel: ChannelName,
        /// The transport it subscribed with (as its `Subscribe` said and its `Subscribed`
        /// reply echoed).
        transport: Transport,
    },
    /// Read one channel's figures without creating it (the server API's `info`); answered by
    /// [`Reply::Info`].
    Info {
        /// The channel.
        channel: ChannelName,
    },
    /// List channel names by prefix, a page at a time (the server API's `channels`);
    /// answered by [`Reply::Channels`].
    Channels {
        /// Only names starting with this.
        prefix: String,
        /// Only names after this one (the last of the previous page).
        after: Option<String>,
        /// The most names (already capped by the caller).
        limit: usize,
    },
    /// End connections (the server API's `disconnect`): the backend hands it to every event
    /// loop as [`super::backend::LoopEvent::Disconnect`] (the Redis backend: of every node, by
    /// its control channel); answered by [`Reply::Sent`]. Never reaches the hub itself.
    Disconnect(Arc<Disconnect>),
    /// Read the hub's figures for monitoring; answered by [`Reply::Stats`].
    Stats,
    /// Ask whether the backend can serve requests now (`/readyz`); answered by
    /// [`Reply::Ready`]. The in-memory hub always can; Redis can while both its connections
    /// are up.
    Ready,
}

/// The hub's answer to a [`Command`].
#[derive(Debug)]
pub enum Reply {
    /// The published message's id, or why it was refused.
    Published(Result<Cursor, HubError>),
    /// What follows the cursor, or why it could not be read.
    Read(Result<Replay, HubError>),
    /// The replay that starts a subscription, or why it was refused.
    Subscribed {
        /// The hub's own copy of the channel's name: a subscriber keeps it instead of the
        /// copy its request made, so idle subscribers of one channel share one name.
        channel: ChannelName,
        /// The transport the `Subscribe` named, echoed: a loop that must end a subscription
        /// whose connection is gone names it in its `Unsubscribe`.
        transport: Transport,
        /// The replay, or the refusal.
        replay: Result<Replay, HubError>,
    },
    /// The hub's figures.
    Stats(HubStats),
    /// A [`Command::Disconnect`] was handed to every event loop (with Redis: published to the
    /// other nodes too), or why not ([`HubError::BackendUnavailable`]).
    Sent(Result<(), HubError>),
    /// One channel's figures (`None`: no such channel), or why they cannot be read.
    Info {
        /// The channel.
        channel: ChannelName,
        /// Its figures.
        result: Result<Option<ChannelInfo>, HubError>,
    },
    /// A page of channel names, or why it cannot be read.
    Channels(Result<ChannelPage, HubError>),
    /// The backend can serve requests, or why not ([`HubError::BackendUnavailable`]).
    Ready(Result<(), HubError>),
    /// A channel's presence: the count and, when asked, the members; or why it cannot be read.
    Presence {
        /// The channel.
        channel: ChannelName,
        /// The member count and list.
        result: Result<PresenceList, HubError>,
    },
}

/// A channel's presence as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceList {
    /// How many members.
    pub count: usize,
    /// The members, when listed (else empty), in no particular order.
    pub members: Vec<Member>,
}

/// What applying a command did.
#[derive(Debug, Default)]
pub struct Applied {
    /// Goes back to the connection that queued the command.
    pub reply: Option<Reply>,
    /// A new message and the sinks (event loops) that have subscribers for it.
    pub published: Option<Published>,
    /// The connection is now subscribed to this channel (the loop records it for fan-out).
    pub subscribed: Option<ChannelName>,
    /// The connection is no longer subscribed to this channel.
    pub unsubscribed: Option<ChannelName>,
    /// A member joined or left: the connections to tell (`notify`, possibly on other loops).
    pub presence: Option<PresenceEvent>,
}

impl Command {
    /// Applies the command to the hub for the connection at `from` (its loop is the sink).
    pub fn apply(self, hub: &mut Hub, from: ConnAddr, now: Instant) -> Applied {
        let sink = from.sink;
        match self {
            Command::Publish { channel, event, payload } => {
                match hub.publish(&channel, event, payload, now) {
                    Ok(published) => Applied {
                        reply: Some(Reply::Published(Ok(published.message.id))),
                        published: Some(published),
                        ..Applied::default()
                    },
                    Err(e) => Applied { reply: Some(Reply::Published(Err(e))), ..Applied::default() },
                }
            }
            Command::Read { channel, since, max_messages } => Applied {
                reply: Some(Reply::Read(hub.read(&channel, since, max_messages, now))),
                ..Applied::default()
            },
            Command::Subscribe { channel, since, transport } => {
                let replay = hub.subscribe(&channel, since, sink, transport, now);
                let channel = hub.channel_name(&channel).unwrap_or(channel);
                let subscribed = replay.is_ok().then(|| channel.clone());
                Applied {
                    reply: Some(Reply::Subscribed { channel, transport, replay }),
                    subscribed,
                    ..Applied::default()
                }
            }
            Command::SubscribeMember { channel, since, member } => {
                let transport = Transport::WebSocket;
                let replay = hub.subscribe(&channel, since, sink, transport, now);
                let channel = hub.channel_name(&channel).unwrap_or(channel);
                let mut presence = None;
                let replay = replay.and_then(|replay| {
                    let Joining { user, info, joins } = *member;
                    match hub.presence_mut().join(&channel, Member { node: 0, conn: from, user, info, joins })
                    {
                        Ok(event) => presence = Some(event),
                        // Cannot happen (a connection's channel set refuses a second
                        // subscribe first); the member is there already.
                        Err(PresenceError::AlreadyMember) => {}
                        Err(e) => {
                            // Refused as a whole: the subscription just made is undone.
                            hub.unsubscribe(&channel, sink, transport, now);
                            return Err(match e {
                                PresenceError::InfoTooLarge => HubError::InfoTooLarge,
                                _ => HubError::PresenceFull,
                            });
                        }
                    }
                    Ok(replay)
                });
                let subscribed = replay.is_ok().then(|| channel.clone());
                Applied {
                    reply: Some(Reply::Subscribed { channel, transport, replay }),
                    subscribed,
                    presence,
                    ..Applied::default()
                }
            }
            Command::Presence { channel, list } => {
                let presence = hub.presence();
                let members = if list { presence.members(&channel).collect() } else { Vec::new() };
                let result = Ok(PresenceList { count: presence.count(&channel), members });
                Applied { reply: Some(Reply::Presence { channel, result }), ..Applied::default() }
            }
            Command::Unsubscribe { channel, transport } => {
                hub.unsubscribe(&channel, sink, transport, now);
                // Every way a subscription ends submits this (hub/backend.rs, "Ownership of a
                // subscription"), so presence never outlives it; not a member: nothing.
                let presence = hub.presence_mut().leave(&channel, from);
                Applied { unsubscribed: Some(channel), presence, ..Applied::default() }
            }
            Command::Info { channel } => {
                let result = Ok(hub.info(&channel));
                Applied { reply: Some(Reply::Info { channel, result }), ..Applied::default() }
            }
            Command::Channels { prefix, after, limit } => {
                let page = hub.list(&prefix, after.as_deref(), limit);
                Applied { reply: Some(Reply::Channels(Ok(page))), ..Applied::default() }
            }
            Command::Stats => Applied { reply: Some(Reply::Stats(hub.stats())), ..Applied::default() },
            // The backend hands it to the loops before the hub would see it.
            Command::Disconnect(_) => Applied { reply: Some(Reply::Sent(Ok(()))), ..Applied::default() },
            Command::Ready => Applied { reply: Some(Reply::Ready(Ok(()))), ..Applied::default() },
        }
    }
}
