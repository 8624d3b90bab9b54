//! The seam between the event loops and the channels: every loop reaches the hub only through
//! a [`HubBackend`], submitting its connections' [`Command`]s and receiving replies and
//! deliveries as [`LoopEvent`]s in its inbox.
//!
//! Implements: the contract. A backend answers a submitted command at once
//! ([`Submitted::Reply`], [`Submitted::NoReply`]) or later ([`Submitted::Later`]: the reply
//! arrives as a [`LoopEvent::Reply`] in the inbox of the loop the connection lives on, and
//! that loop is woken). Replies to one connection's commands arrive in the order the commands
//! were submitted, whether at once or later. A published message reaches every loop with
//! subscribers for its channel as a [`LoopEvent::Delivery`], each loop receiving a channel's
//! messages in offset order; a loop's own publishes are delivered through its inbox too.
//!
//! The first backend is `net::LocalHub`: one in-memory [`super::Hub`] behind a mutex, which
//! answers every command at once and pushes deliveries into the loops' inboxes under its lock.
//! A backend shared by many nodes (Redis, `src/redis/` and a broker thread in `src/net/`)
//! answers `Later` and pushes replies and deliveries from its own thread.
//!
//! Ownership of a subscription (ARCHITECTURE.md "Who owns a subscription"): the backend counts
//! subscribers per loop ([`SinkId`](crate::hub::SinkId)); the loop (`crate::fanout`) records which of its
//! connections hold which channel, from the `Subscribed` reply to the `Unsubscribe` it submits
//! when the session ends, the connection closes (any reason: EOF, error, slow consumer, drain)
//! or a `Subscribed` reply arrives for a connection that is already gone: one `Unsubscribe`
//! per subscription answered `Ok`, none for one refused, and never one before the answer to
//! its `Subscribe` (a backend may count a subscription when it takes the `Subscribe` and
//! uncount it when it fails it).
//!
//! Does not: define how a backend reaches a loop's inbox (the I/O layer gives it the inboxes),
//! or bound what a backend queues (see `net::Inbox`).

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

pub use super::addr::{ConnAddr, ConnId, Disconnect, DisconnectTarget};
use super::command::{Command, Reply};
use super::message::Message;
use super::presence::PresenceEvent;

/// Buckets of a [`BackendFigures`] latency histogram: the bounds of
/// `metrics::LATENCY_BUCKETS_US` and `+Inf` (the metrics layer checks they agree).
pub const LATENCY_BUCKETS: usize = 17;

/// The figures of a backend shared by several nodes (Redis) for `/metrics`, a snapshot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BackendFigures {
    /// The command connection is ready.
    pub command_up: bool,
    /// The pub/sub connection is ready.
    pub pubsub_up: bool,
    /// Connections that became ready again after being lost (both kinds).
    pub reconnects: u64,
    /// Connections lost or closed on purpose.
    pub disconnects: u64,
    /// Commands sent and not yet answered now.
    pub commands_in_flight: u64,
    /// Channels subscribed on pub/sub now.
    pub pubsub_channels: u64,
    /// Publishes answered with a cursor.
    pub published: u64,
    /// Requests answered with an error.
    pub failed: u64,
    /// Commands or connections timed out.
    pub timeouts: u64,
    /// History reads made to repair live delivery (holes, reconnects, epoch changes).
    pub repair_reads: u64,
    /// Live channels whose deliveries moved to a new epoch (a gap for their subscribers).
    pub epoch_changes: u64,
    /// Frames from pub/sub that did not parse.
    pub bad_frames: u64,
    /// Presence script calls that wrote this node's members.
    pub presence_writes: u64,
    /// Other nodes in this node's registry (heard on the control channel lately).
    pub nodes: u64,
    /// Control frames from other nodes that did not parse.
    pub bad_control_frames: u64,
    /// `info` / `channels` surveys answered at their timeout without every node's reply.
    pub survey_timeouts: u64,
    /// Survey replies that came after their survey was answered.
    pub survey_late_replies: u64,
    /// Publish round trips (sent to answered), per bucket (not cumulative), in microseconds.
    pub publish_latency_buckets: [u64; LATENCY_BUCKETS],
    /// Their sum, in microseconds.
    pub publish_latency_sum_us: u64,
}

/// What a backend did with a submitted command.
#[derive(Debug)]
pub enum Submitted {
    /// Answered at once: hand the reply to the connection now.
    Reply(Reply),
    /// Done, and the command has no reply (`Unsubscribe`).
    NoReply,
    /// The reply will arrive as a [`LoopEvent::Reply`] in the connection's loop's inbox.
    Later,
}

/// What a backend hands an event loop through its inbox.
#[derive(Debug)]
pub enum LoopEvent {
    /// A message published on a channel this loop has subscribers for.
    Delivery(Arc<Message>),
    /// The reply to a command submitted for `conn` that was answered [`Submitted::Later`].
    Reply {
        /// The connection that submitted the command.
        conn: ConnId,
        /// The reply (boxed: deliveries, the common event, stay small).
        reply: Box<Reply>,
    },
    /// A presence member joined or left: tell the connections of `notify` that live on this
    /// loop (the others' loops get the same event).
    Presence(Arc<PresenceEvent>),
    /// The server API disconnects connections: every loop of this node gets it and ends its
    /// connections that match.
    Disconnect(Arc<Disconnect>),
}

/// The channels as the event loops see them. Implementations are shared by every loop
/// (`Send + Sync`) and called from the loops' threads.
pub trait HubBackend: Send + Sync + fmt::Debug {
    /// Submits one command of the connection at `from`. A command whose answer is
    /// [`Submitted::Later`] keeps its place: later commands of the same connection are
    /// answered after it.
    fn submit(&self, from: ConnAddr, command: Command, now: Instant) -> Submitted;

    /// Drops expired history and idle channels; called about once per `expire_interval` by
    /// one loop.
    fn expire(&self, now: Instant);
}
