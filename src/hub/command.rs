//! Requests for the hub, queued by connections and submitted by the event loop to the hub
//! backend ([`super::backend::HubBackend`]).
//!
//! A connection never calls the hub itself: it queues a [`Command`]; the loop submits it, and
//! the backend applies it ([`Command::apply`], under the lock of the in-memory backend) and
//! hands the [`Reply`] back, at once or through the loop's inbox. That keeps the hub ignorant
//! of connections and lets the loop batch its work.

use std::sync::Arc;
use std::time::Instant;

use super::{ChannelName, Cursor, Hub, HubError, HubStats, Payload, Published, Replay, Since, SinkId};

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
    },
    /// End the connection's subscription to a channel; no reply.
    Unsubscribe {
        /// The channel.
        channel: ChannelName,
    },
    /// Read the hub's figures for monitoring; answered by [`Reply::Stats`].
    Stats,
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
        /// The replay, or the refusal.
        replay: Result<Replay, HubError>,
    },
    /// The hub's figures.
    Stats(HubStats),
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
}

impl Command {
    /// Applies the command to the hub. `sink` is the event loop the connection lives on.
    pub fn apply(self, hub: &mut Hub, sink: SinkId, now: Instant) -> Applied {
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
            Command::Subscribe { channel, since } => {
                let replay = hub.subscribe(&channel, since, sink, now);
                let channel = hub.channel_name(&channel).unwrap_or(channel);
                let subscribed = replay.is_ok().then(|| channel.clone());
                Applied {
                    reply: Some(Reply::Subscribed { channel, replay }),
                    subscribed,
                    ..Applied::default()
                }
            }
            Command::Unsubscribe { channel } => {
                hub.unsubscribe(&channel, sink, now);
                Applied { unsubscribed: Some(channel), ..Applied::default() }
            }
            Command::Stats => Applied { reply: Some(Reply::Stats(hub.stats())), ..Applied::default() },
        }
    }
}
