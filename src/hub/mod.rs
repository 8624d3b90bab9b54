//! The pub/sub core shared by all five transports: channels, history rings, cursors and
//! per-event-loop subscriber counts.
//!
//! Implements:
//! - Channels by [`ChannelName`], each with an [`Epoch`], a `u64` offset counter and a bounded
//!   history ring of [`Message`]s (`Arc`-shared with every delivery; each wire format encoded
//!   once per message by [`Message::encoded`]).
//! - Resumption by [`Cursor`] (`EPOCH:OFFSET`, "seen up to and including OFFSET") with an
//!   explicit gap flag: a client is told when messages it has not seen can no longer be
//!   replayed, and is never silently skipped past them.
//! - Subscriber counts per *sink* (one event loop, [`SinkId`] below 64): a publish returns the
//!   [`SinkSet`] of loops to notify, and each loop fans out to its own connections.
//!
//! Does not: touch connections, sockets, the clock or randomness. Time comes in as
//! `now: Instant`, the epoch seed as an argument to [`Hub::new`]. It does not queue deliveries
//! per connection (the event loops do) and does not lock (the server wraps the `Hub` in a
//! `Mutex`). (The channel map is std's `HashMap`, whose SipHash keys come from the OS: it
//! resists hash flooding by peer-chosen names, and no result depends on its iteration order.)
//!
//! # Channel lifetime and epochs
//!
//! A channel exists from its first [`Hub::publish`], [`Hub::read`] or [`Hub::subscribe`] (if
//! fewer than [`Limits::max_channels`] exist) and gets a fresh epoch then:
//! `splitmix64(epoch_seed + n)` for the n-th channel incarnation of this hub, distinct for every
//! incarnation. Its messages get offsets 1, 2, 3, ... The epoch never changes while the channel
//! lives. [`Hub::expire`] frees a channel with no subscribers, no history and no activity
//! (publish, read, subscribe, unsubscribe) for [`Limits::max_history_age`]; if it is created
//! again it gets a new epoch, so every cursor from before is answered with a gap. The I/O layer
//! draws the seed, so a restarted server has new epochs too.
//!
//! # Cursor and gap rules
//!
//! The *tail* cursor is `epoch:last_offset` (`epoch:0` before any message). Let `first` be the
//! oldest retained offset (`last_offset + 1` when the history is empty). A [`Replay`] answers
//! [`Since`] as follows:
//!
//! | since | messages | gap | next |
//! |---|---|---|---|
//! | `Tail` | none | false | the tail |
//! | `After(c)`, `c.epoch == epoch`, `first - 1 <= c.offset <= last` | `c.offset + 1 ..= last` | false | last returned id, or `c` |
//! | `After(c)`, another epoch, or `c.offset < first - 1` (evicted) | `first ..= last` | **true** | last returned id, or `epoch:first-1` (the tail when history is empty) |
//! | `After(c)`, `c.epoch == epoch`, `c.offset > last` (from the future) | none | **true** | the tail |
//!
//! Messages come oldest first; [`Hub::read`] returns at most `max_messages` of them (then
//! `next` is where the next page starts, without a gap), [`Hub::subscribe`] all of them. In
//! the gap rows the client's cursor is replaced by the oldest position still available
//! (`epoch:first-1`) or the tail, so reading on from `next` never reports the same gap twice.
//!
//! # Memory bounds
//!
//! - Per channel, at most [`Limits::max_history_messages`] messages and
//!   [`Limits::max_history_bytes`] bytes (payload plus event name): a publish evicts the oldest
//!   messages until the new one fits. A message larger than `max_history_bytes` is refused
//!   ([`HubError::MessageTooLarge`]).
//! - A message is dropped once its age reaches [`Limits::max_history_age`], on every access to
//!   its channel and by [`Hub::expire`].
//! - Across all channels, at most [`Limits::max_total_history_bytes`] bytes: a publish that
//!   would exceed it is refused ([`HubError::HistoryFull`]).
//! - At most [`Limits::max_channels`] channels: creating another is refused
//!   ([`HubError::TooManyChannels`]).
//!
//! Several event loops call into one hub with instants read at slightly different moments, so
//! within a channel an instant earlier than one already seen counts as the latest one seen:
//! publish times never decrease along a history.

pub mod addr;
pub mod backend;
pub mod channel_name;
pub mod command;
pub mod composite;
pub mod cursor;
pub mod message;
pub mod presence;

pub use channel_name::ChannelName;
pub use command::{Applied, Command, PresenceList, Reply};
pub use cursor::{Cursor, CursorError, Epoch};
pub use message::{Encoding, Message, Payload};
pub use presence::{Presence, PresenceLimits};

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::protocol::Transport;

/// Bounds on the memory the hub holds, whatever publishers and subscribers do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most messages kept per channel for replay; a publish evicts the oldest beyond.
    /// Default 1 000.
    pub max_history_messages: usize,
    /// Age at which a message is dropped from history; also how long an empty channel with no
    /// subscribers stays after its last activity before it is freed. Default 300 s.
    pub max_history_age: Duration,
    /// Most bytes (payload plus event name) kept per channel; a publish evicts the oldest
    /// beyond, and a single larger message is refused with 413. Default 64 MiB.
    pub max_history_bytes: usize,
    /// Most bytes kept across all channels; a publish beyond is refused with 503. Default 1 GiB.
    pub max_total_history_bytes: usize,
    /// Most channels at once; creating another is refused with 503. Default 100 000.
    pub max_channels: usize,
    /// Presence bounds: members per channel, info bytes per member.
    pub presence: PresenceLimits,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_history_messages: 1_000,
            max_history_age: Duration::from_secs(300),
            max_history_bytes: 64 << 20,
            max_total_history_bytes: 1 << 30,
            max_channels: 100_000,
            presence: PresenceLimits::default(),
        }
    }
}

impl Limits {
    /// Checks that the limits make sense together: every bound positive, and one channel's
    /// history bytes within the total.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_history_messages == 0 {
            return Err("hub: max_history_messages must be at least 1".into());
        }
        if self.max_history_age.is_zero() {
            return Err("hub: max_history_age must be positive".into());
        }
        if self.max_history_bytes == 0 {
            return Err("hub: max_history_bytes must be at least 1".into());
        }
        if self.max_history_bytes > self.max_total_history_bytes {
            return Err(format!(
                "hub: max_history_bytes ({}) exceeds max_total_history_bytes ({})",
                self.max_history_bytes, self.max_total_history_bytes
            ));
        }
        if self.max_channels == 0 {
            return Err("hub: max_channels must be at least 1".into());
        }
        if self.presence.max_members_per_channel == 0 {
            return Err("hub: max_presence_members must be at least 1".into());
        }
        if self.presence.member_ttl < Duration::from_secs(1) {
            return Err("hub: presence_ttl must be at least 1 second".into());
        }
        Ok(())
    }
}

/// One event loop that holds subscriptions: an index below [`SinkId::MAX_SINKS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SinkId(u8);

impl SinkId {
    /// Number of distinct sinks (the width of a [`SinkSet`]).
    pub const MAX_SINKS: usize = 64;

    /// The sink with this index, or `None` if `index >= 64`.
    pub fn new(index: u8) -> Option<SinkId> {
        (usize::from(index) < Self::MAX_SINKS).then_some(SinkId(index))
    }

    /// The index, below 64.
    pub fn index(self) -> u8 {
        self.0
    }

    /// This sink's bit in a [`SinkSet`].
    fn bit(self) -> u64 {
        1 << self.0
    }
}

/// A set of sinks, as a bitmask (bit `i` set: sink `i` is in the set).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct SinkSet(u64);

impl SinkSet {
    /// The bitmask: bit `i` is set when sink `i` is in the set.
    pub fn bits(self) -> u64 {
        self.0
    }

    /// Whether `sink` is in the set.
    pub fn contains(self, sink: SinkId) -> bool {
        self.0 & sink.bit() != 0
    }

    /// Whether the set is empty (nobody to notify).
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The sinks in the set, lowest index first.
    pub fn iter(self) -> impl Iterator<Item = SinkId> {
        (0..64u8).map(SinkId).filter(move |sink| self.contains(*sink))
    }
}

/// Where a replay starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Since {
    /// From now on: no history, only the tail cursor.
    Tail,
    /// After the messages up to and including this cursor (see the module docs for the gap
    /// rules).
    After(Cursor),
}

/// The answer to a read or subscribe: messages to send, whether some were lost, where to go on.
#[derive(Debug, Clone)]
pub struct Replay {
    /// Messages in offset order, oldest first.
    pub messages: Vec<Arc<Message>>,
    /// True when messages after the client's cursor can no longer be replayed (evicted, the
    /// channel re-created, or a cursor this channel never issued); the client should resync.
    pub gap: bool,
    /// The cursor to hand the client: pass it back as `Since::After(next)` to continue.
    pub next: Cursor,
}

/// The result of a publish.
#[derive(Debug, Clone)]
pub struct Published {
    /// The stored message, with its id.
    pub message: Arc<Message>,
    /// The sinks with at least one subscriber on the channel: each must be told of `message`.
    pub sinks: SinkSet,
}

/// Counters for monitoring.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HubStats {
    /// Channels alive.
    pub channels: usize,
    /// Subscriptions across all channels and sinks.
    pub subscriptions: usize,
    /// Messages held in histories.
    pub history_messages: usize,
    /// Bytes (payload plus event name) held in histories.
    pub history_bytes: usize,
    /// A shared backend's own figures (Redis); `None` for the in-memory hub.
    pub backend: Option<Box<backend::BackendFigures>>,
}

/// Subscriptions counted per transport (the server API's `info`): one number per entry of
/// [`Transport::ALL`]. A short poll holds no subscription, so its count stays 0.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TransportCounts([usize; Transport::ALL.len()]);

impl TransportCounts {
    fn index(transport: Transport) -> usize {
        match transport {
            Transport::WebSocket => 0,
            Transport::Sse => 1,
            Transport::Stream => 2,
            Transport::LongPoll => 3,
            Transport::Poll => 4,
        }
    }

    /// The subscriptions held over `transport`.
    pub fn get(&self, transport: Transport) -> usize {
        self.0[Self::index(transport)]
    }

    /// Counts one more subscription over `transport`.
    pub fn add(&mut self, transport: Transport) {
        self.0[Self::index(transport)] += 1;
    }

    /// Counts one subscription over `transport` fewer (never below zero).
    pub fn remove(&mut self, transport: Transport) {
        let count = &mut self.0[Self::index(transport)];
        *count = count.saturating_sub(1);
    }

    /// Sets the count of `transport` (a node's figure read back from elsewhere).
    pub fn set(&mut self, transport: Transport, count: usize) {
        self.0[Self::index(transport)] = count;
    }

    /// Adds `other`'s counts to these (summing nodes).
    pub fn merge(&mut self, other: &TransportCounts) {
        for (mine, theirs) in self.0.iter_mut().zip(other.0) {
            *mine = mine.saturating_add(theirs);
        }
    }

    /// Every transport's count summed.
    pub fn total(&self) -> usize {
        self.0.iter().sum()
    }

    /// True when no transport holds a subscription.
    pub fn is_empty(&self) -> bool {
        self.total() == 0
    }
}

/// What the hub holds for one channel (the server API's `info`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelInfo {
    /// Subscriptions across every event loop.
    pub subscribers: usize,
    /// The same subscriptions by the transport that holds each.
    pub by_transport: TransportCounts,
    /// The tail cursor: the newest message's id (`EPOCH:0` before any). `None` with Redis when
    /// the channel has subscribers but no epoch in Redis (expired, or Redis restarted).
    pub last: Option<Cursor>,
    /// Messages held in its history.
    pub history_messages: usize,
    /// Bytes (payload plus event name) held in its history; `None` with Redis (a stream's
    /// payload bytes cannot be read without reading every entry).
    pub history_bytes: Option<usize>,
}

/// One page of channel names (the server API's `channels`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelPage {
    /// The names, in byte order.
    pub channels: Vec<ChannelName>,
    /// More names follow the last one (ask again with it as `after`).
    pub more: bool,
}

impl ChannelPage {
    /// The names of `names` starting with `prefix` and sorting after `after` (byte order), the
    /// smallest `limit` of them, and whether more match. Costs one step per name and holds at
    /// most `limit + 1` names while it looks.
    pub fn of<'a>(
        names: impl Iterator<Item = &'a ChannelName>,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> ChannelPage {
        let mut smallest = std::collections::BinaryHeap::new();
        for name in names {
            let text = name.as_str();
            if !text.starts_with(prefix) || after.is_some_and(|a| text <= a) {
                continue;
            }
            smallest.push(name);
            if smallest.len() > limit.saturating_add(1) {
                smallest.pop();
            }
        }
        let mut channels: Vec<ChannelName> = smallest.into_sorted_vec().into_iter().cloned().collect();
        let more = channels.len() > limit;
        channels.truncate(limit);
        ChannelPage { channels, more }
    }
}

/// Why the hub refused an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum HubError {
    /// The channel name is not 1 to 128 bytes of `A-Z a-z 0-9 . _ ~ -`, or is `.` or `..` (peer
    /// fault).
    InvalidChannelName,
    /// Creating the channel would exceed [`Limits::max_channels`].
    TooManyChannels,
    /// Storing the message would exceed [`Limits::max_total_history_bytes`].
    HistoryFull,
    /// The message alone is larger than [`Limits::max_history_bytes`] (peer fault).
    MessageTooLarge,
    /// The channel has used every `u64` offset.
    OffsetsExhausted,
    /// The shared backend (Redis) cannot serve the request now: unreachable, reconnecting,
    /// or its queues are full.
    BackendUnavailable,
    /// The channel's presence has [`PresenceLimits::max_members_per_channel`] members.
    PresenceFull,
    /// A member's info is over [`PresenceLimits::max_info_bytes`] (peer fault).
    InfoTooLarge,
}

impl HubError {
    /// The HTTP status to answer with: 400 for a bad name, 413 for a message that can never
    /// fit, 503 when the server is at a capacity limit.
    pub fn status_hint(self) -> u16 {
        match self {
            HubError::InvalidChannelName => 400,
            HubError::MessageTooLarge | HubError::InfoTooLarge => 413,
            HubError::PresenceFull
            | HubError::TooManyChannels
            | HubError::HistoryFull
            | HubError::OffsetsExhausted
            | HubError::BackendUnavailable => 503,
        }
    }
}

impl fmt::Display for HubError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HubError::InvalidChannelName => "channel name is not 1-128 bytes of [A-Za-z0-9._~-]",
            HubError::TooManyChannels => "too many channels",
            HubError::HistoryFull => "total history bytes at the limit",
            HubError::MessageTooLarge => "message larger than a channel's history",
            HubError::OffsetsExhausted => "channel offsets exhausted",
            HubError::BackendUnavailable => "the shared backend (redis) is unavailable",
            HubError::PresenceFull => "the channel has too many members",
            HubError::InfoTooLarge => "info is too large",
        })
    }
}

impl std::error::Error for HubError {}

/// One channel incarnation.
#[derive(Debug)]
struct Channel {
    epoch: Epoch,
    /// Offset of the newest message published (0: none yet).
    last_offset: u64,
    /// Retained messages; offsets `last_offset - len + 1 ..= last_offset`, contiguous.
    history: VecDeque<Arc<Message>>,
    /// Sum of `Message::history_bytes` over `history`.
    history_bytes: usize,
    /// Subscription count per sink, only sinks with a count above zero.
    subscribers: Vec<(SinkId, usize)>,
    /// The same subscriptions counted per transport.
    by_transport: TransportCounts,
    /// Latest instant seen by any operation on the channel; never decreases.
    last_active: Instant,
}

/// Hub-wide sums, kept in step with every change to a channel.
#[derive(Debug, Default)]
struct Totals {
    history_messages: usize,
    history_bytes: usize,
    subscriptions: usize,
}

/// The pub/sub core. Call [`Hub::publish`], [`Hub::read`], [`Hub::subscribe`] and
/// [`Hub::unsubscribe`] as requests come in, [`Hub::expire`] periodically (e.g. once a second).
#[derive(Debug)]
pub struct Hub {
    limits: Limits,
    channels: Channels,
    totals: Totals,
    /// Who is subscribed with presence (command-mode subscribers), per channel.
    presence: Presence,
}

/// The live channels and the source of their epochs.
#[derive(Debug)]
struct Channels {
    by_name: HashMap<ChannelName, Channel>,
    epoch_seed: u64,
    /// Channel incarnations created so far.
    epoch_counter: u64,
}

impl Hub {
    /// An empty hub. `limits` should have passed [`Limits::validate`]; `epoch_seed` should be
    /// drawn at random by the I/O layer so that a restarted server issues new epochs.
    pub fn new(limits: Limits, epoch_seed: u64) -> Hub {
        Hub {
            limits,
            channels: Channels { by_name: HashMap::new(), epoch_seed, epoch_counter: 0 },
            totals: Totals::default(),
            presence: Presence::new(limits.presence),
        }
    }

    /// The presence tables.
    pub fn presence(&self) -> &Presence {
        &self.presence
    }

    /// The presence tables, to join and leave ([`Command::apply`] keeps them in step with the
    /// subscriptions).
    pub fn presence_mut(&mut self) -> &mut Presence {
        &mut self.presence
    }

    /// Appends a message to `channel` (creating it if absent) and returns it with the sinks to
    /// notify. Evicts the channel's oldest messages as needed to stay within
    /// `max_history_messages` and `max_history_bytes`.
    ///
    /// Errors: [`HubError::TooManyChannels`], [`HubError::MessageTooLarge`],
    /// [`HubError::HistoryFull`] (retry after [`Hub::expire`] frees space),
    /// [`HubError::OffsetsExhausted`]. A refused publish changes no history.
    pub fn publish(
        &mut self,
        channel: &ChannelName,
        event: Option<Arc<str>>,
        payload: Payload,
        now: Instant,
    ) -> Result<Published, HubError> {
        let limits = self.limits;
        let ch = self.channels.access(channel, now, &limits, &mut self.totals)?;
        let offset = ch.last_offset.checked_add(1).ok_or(HubError::OffsetsExhausted)?;
        let id = Cursor { epoch: ch.epoch, offset };
        let message = Arc::new(Message::new(channel.clone(), id, event, payload, ch.last_active));
        let new_bytes = message.history_bytes();
        if new_bytes > limits.max_history_bytes {
            return Err(HubError::MessageTooLarge);
        }
        // Plan the eviction first, so a refused publish leaves the history as it was.
        let mut evicted = 0;
        let mut freed_bytes = 0;
        for old in &ch.history {
            let kept = ch.history.len() - evicted;
            let kept_bytes = ch.history_bytes.saturating_sub(freed_bytes);
            if kept < limits.max_history_messages
                && kept_bytes.saturating_add(new_bytes) <= limits.max_history_bytes
            {
                break;
            }
            freed_bytes += old.history_bytes();
            evicted += 1;
        }
        let total_bytes = self.totals.history_bytes.saturating_sub(freed_bytes).saturating_add(new_bytes);
        if total_bytes > limits.max_total_history_bytes {
            return Err(HubError::HistoryFull);
        }
        ch.history.drain(..evicted);
        ch.history.push_back(Arc::clone(&message));
        ch.history_bytes = ch.history_bytes.saturating_sub(freed_bytes) + new_bytes;
        ch.last_offset = offset;
        self.totals.history_bytes = total_bytes;
        self.totals.history_messages = self.totals.history_messages - evicted + 1;
        let sinks = ch.sinks();
        Ok(Published { message, sinks })
    }

    /// Answers a poll: the messages after `since` (at most `max_messages`, oldest first), the
    /// gap flag and the cursor to continue from, per the rules in the module docs. Creates the
    /// channel if absent, so `next` carries an epoch that stays valid while the channel lives.
    ///
    /// Errors: [`HubError::TooManyChannels`].
    pub fn read(
        &mut self,
        channel: &ChannelName,
        since: Since,
        max_messages: usize,
        now: Instant,
    ) -> Result<Replay, HubError> {
        let ch = self.channels.access(channel, now, &self.limits, &mut self.totals)?;
        Ok(ch.replay(since, max_messages))
    }

    /// Registers one subscription of `sink` on `channel` (creating it if absent) and replays
    /// every retained message after `since`, in one step: no publish can fall between the
    /// replay and live delivery. Live messages follow `Replay::next` without a gap. Each call
    /// must be matched by one [`Hub::unsubscribe`].
    ///
    /// Errors: [`HubError::TooManyChannels`] (nothing is registered then).
    pub fn subscribe(
        &mut self,
        channel: &ChannelName,
        since: Since,
        sink: SinkId,
        transport: Transport,
        now: Instant,
    ) -> Result<Replay, HubError> {
        let ch = self.channels.access(channel, now, &self.limits, &mut self.totals)?;
        // Counts cannot overflow: each subscription is held by a live connection.
        match ch.subscribers.iter_mut().find(|(s, _)| *s == sink) {
            Some((_, count)) => *count += 1,
            None => ch.subscribers.push((sink, 1)),
        }
        ch.by_transport.add(transport);
        let replay = ch.replay(since, usize::MAX);
        self.totals.subscriptions += 1;
        Ok(replay)
    }

    /// The hub's own copy of `name`, if the channel exists (to share instead of a copy).
    pub fn channel_name(&self, name: &ChannelName) -> Option<ChannelName> {
        self.channels.by_name.get_key_value(name).map(|(key, _)| key.clone())
    }

    /// Removes one subscription of `sink` over `transport` on `channel` (the transport it
    /// subscribed with); once its count is zero the sink is no longer in
    /// [`Published::sinks`]. Without such a subscription this does nothing (it does not create
    /// the channel).
    pub fn unsubscribe(&mut self, channel: &ChannelName, sink: SinkId, transport: Transport, now: Instant) {
        let Some(ch) = self.channels.by_name.get_mut(channel) else {
            return;
        };
        let Some(index) = ch.subscribers.iter().position(|(s, _)| *s == sink) else {
            return;
        };
        // Entries only exist with a count of at least 1.
        let count = &mut ch.subscribers[index].1;
        *count -= 1;
        if *count == 0 {
            ch.subscribers.swap_remove(index);
        }
        ch.by_transport.remove(transport);
        self.totals.subscriptions -= 1;
        ch.last_active = ch.last_active.max(now);
        let now = ch.last_active;
        drop_expired_history(ch, &mut self.totals, self.limits.max_history_age, now);
    }

    /// Drops history older than `max_history_age` from every channel, then frees channels with
    /// no subscribers, no history and no activity for `max_history_age`. Costs one step per
    /// channel: call it periodically, not per request.
    pub fn expire(&mut self, now: Instant) {
        let max_age = self.limits.max_history_age;
        let totals = &mut self.totals;
        self.channels.by_name.retain(|_, ch| {
            drop_expired_history(ch, totals, max_age, now);
            let idle = now.saturating_duration_since(ch.last_active);
            !ch.subscribers.is_empty() || !ch.history.is_empty() || idle < max_age
        });
    }

    /// What the hub holds for `channel`, without creating it (`None`: no such channel).
    pub fn info(&self, channel: &ChannelName) -> Option<ChannelInfo> {
        let ch = self.channels.by_name.get(channel)?;
        Some(ChannelInfo {
            subscribers: ch.subscribers.iter().map(|(_, count)| count).sum(),
            by_transport: ch.by_transport,
            last: Some(Cursor { epoch: ch.epoch, offset: ch.last_offset }),
            history_messages: ch.history.len(),
            history_bytes: Some(ch.history_bytes),
        })
    }

    /// The names starting with `prefix` that sort after `after` (byte order), at most `limit`
    /// of them, smallest first. Costs one step per channel and holds at most `limit + 1`
    /// names while it looks.
    pub fn list(&self, prefix: &str, after: Option<&str>, limit: usize) -> ChannelPage {
        ChannelPage::of(self.channels.by_name.keys(), prefix, after, limit)
    }

    /// Current counters.
    pub fn stats(&self) -> HubStats {
        HubStats {
            channels: self.channels.by_name.len(),
            subscriptions: self.totals.subscriptions,
            history_messages: self.totals.history_messages,
            history_bytes: self.totals.history_bytes,
            backend: None,
        }
    }
}

impl Channels {
    /// The channel named `name`, created (with a fresh epoch) if absent and fewer than
    /// `limits.max_channels` exist, marked active at `now`, with its expired history dropped.
    fn access(
        &mut self,
        name: &ChannelName,
        now: Instant,
        limits: &Limits,
        totals: &mut Totals,
    ) -> Result<&mut Channel, HubError> {
        let full = self.by_name.len() >= limits.max_channels;
        let ch = match self.by_name.entry(name.clone()) {
            Entry::Occupied(entry) => entry.into_mut(),
            Entry::Vacant(entry) => {
                if full {
                    return Err(HubError::TooManyChannels);
                }
                let epoch = Epoch(splitmix64(self.epoch_seed.wrapping_add(self.epoch_counter)));
                self.epoch_counter = self.epoch_counter.wrapping_add(1);
                entry.insert(Channel {
                    epoch,
                    last_offset: 0,
                    history: VecDeque::new(),
                    history_bytes: 0,
                    subscribers: Vec::new(),
                    by_transport: TransportCounts::default(),
                    last_active: now,
                })
            }
        };
        ch.last_active = ch.last_active.max(now);
        let now = ch.last_active;
        drop_expired_history(ch, totals, limits.max_history_age, now);
        Ok(ch)
    }
}

impl Channel {
    /// The sinks with at least one subscription.
    fn sinks(&self) -> SinkSet {
        SinkSet(self.subscribers.iter().fold(0, |bits, (sink, _)| bits | sink.bit()))
    }

    /// Applies the cursor and gap rules of the module docs.
    fn replay(&self, since: Since, max_messages: usize) -> Replay {
        let last = self.last_offset;
        // History offsets are contiguous and end at `last`, so `first - 1` is:
        let before_first = last.saturating_sub(self.history.len() as u64);
        let (from, gap) = match since {
            Since::Tail => (last, false),
            // Another incarnation's cursor: its messages are gone.
            Since::After(c) if c.epoch != self.epoch => (before_first, true),
            // Messages after the cursor were evicted.
            Since::After(c) if c.offset < before_first => (before_first, true),
            // An offset this incarnation never issued.
            Since::After(c) if c.offset > last => (last, true),
            Since::After(c) => (c.offset, false),
        };
        // `before_first <= from <= last`, so the skip is at most the history length.
        let skip = usize::try_from(from - before_first).unwrap_or(usize::MAX);
        let messages: Vec<Arc<Message>> =
            self.history.range(skip.min(self.history.len())..).take(max_messages).cloned().collect();
        let offset = messages.last().map_or(from, |m| m.id.offset);
        Replay { messages, gap, next: Cursor { epoch: self.epoch, offset } }
    }
}

/// Drops the messages of `ch` whose age at `now` reached `max_age` (publish times never
/// decrease along a history, so they are all at the front).
fn drop_expired_history(ch: &mut Channel, totals: &mut Totals, max_age: Duration, now: Instant) {
    while let Some(oldest) = ch.history.front() {
        if now.saturating_duration_since(oldest.published_at) < max_age {
            break;
        }
        let bytes = oldest.history_bytes();
        ch.history.pop_front();
        ch.history_bytes -= bytes;
        totals.history_bytes -= bytes;
        totals.history_messages -= 1;
    }
}

/// SplitMix64's output function (Steele, Lea, Flood 2014): a bijection on `u64`, so distinct
/// inputs give distinct epochs.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests;
