//! Independent Redis servers as shards: which shard a request goes to, and how the answers of
//! the brokers (one per shard, each on its own thread; one server is one shard) are handed to
//! a loop in the order its connections asked.
//!
//! Implements:
//! - [`ShardOrder`], one per event loop (sink): a FIFO per connection of the shards its
//!   answered requests went to. An answer is handed over once every earlier answer of the
//!   same connection was; until then it is held. An answer finds its request by shard and
//!   [`Answered`] kind: a broker answers a connection's publishes, reads, presence reads and
//!   disconnects in request order (its tickets), but a subscribe when its channel is live and
//!   an `info` when its survey is done, so those two are matched by their channel. A
//!   `channels` request goes to every shard and
//!   its answer is the pages merged ([`merge_pages`]) once all are in. While an answer
//!   carrying a channel (publish, read, subscribe, presence, info) is held, that channel's
//!   deliveries and presence changes are held behind it, so what one broker guarantees still
//!   holds: a publish is answered before its delivery to the same loop (`except_self`), and a
//!   subscriber's replay covers every delivery handed over before its answer. Deliveries of a
//!   channel come from its one shard in order, and stay in order.
//! - [`sum_figures`]: one node's backend figures over its brokers.
//!
//! Bounds: what is held is bounded by the requests the brokers accepted (each broker's queue
//! and pipeline limits) and, for deliveries, in time: every request is answered, or fails,
//! within its broker's `request_timeout` (a survey within `survey_timeout`), and its held
//! deliveries go with it.
//!
//! So a connection's answers come in request order across kinds too, with one shard as with
//! several (one broker may answer a publish before an earlier subscribe waiting for its
//! channel).
//!
//! Does not: do I/O (the caller hands the events to the loop's inbox while it holds this
//! loop's order, so two brokers never interleave).

use std::collections::{HashMap, HashSet, VecDeque};

use super::{BrokerError, BrokerEvent};
use crate::hub::backend::BackendFigures;
use crate::hub::{ChannelName, ChannelPage};

/// The most Redis servers one node spreads its channels over (`--redis` given this many times).
pub const MAX_REDIS_SHARDS: usize = 64;

/// How a broker answers a request, which tells which request an answer is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answered {
    /// In request order among the connection's others of this kind: a publish, read,
    /// presence read or disconnect (each takes a ticket in the broker).
    InOrder,
    /// When its channel is live: a subscribe (matched by its channel).
    Subscribe,
    /// When its survey is done: an `info` (matched by its channel).
    Info,
}

/// What a connection waits for, in the order it asked.
#[derive(Debug)]
enum Slot {
    /// The answer of one shard (any request but `channels`).
    One {
        /// The shard asked.
        shard: usize,
        /// How it is answered.
        kind: Answered,
        /// The channel of the request, if it has one (its deliveries wait behind the answer),
        /// and the answer's marker in that channel's queue once it is in.
        channel: Option<(ChannelName, u64)>,
        /// The answer, once in.
        answer: Option<BrokerEvent>,
    },
    /// A `channels` page from every shard.
    Channels {
        /// One per shard, once in.
        pages: Vec<Option<Result<ChannelPage, BrokerError>>>,
        /// The request's `limit`.
        limit: usize,
    },
}

impl Slot {
    fn is_complete(&self) -> bool {
        match self {
            Slot::One { answer, .. } => answer.is_some(),
            Slot::Channels { pages, .. } => pages.iter().all(Option::is_some),
        }
    }
}

/// What waits on one channel: answers not handed over yet (by marker) and the deliveries and
/// presence changes that came after them, in arrival order.
#[derive(Debug)]
enum Held {
    /// An answer of the channel, held in its connection's queue.
    Answer(u64),
    /// A delivery or presence change of the channel.
    Event(BrokerEvent),
}

/// The answers of one event loop's connections, put back in the order asked (see the module
/// docs).
#[derive(Debug)]
pub struct ShardOrder {
    shards: usize,
    /// Per connection (its request token), what it waits for, oldest first; no empty queue.
    conns: HashMap<u64, VecDeque<Slot>>,
    /// Per channel with an answer held: the answers' markers and the events behind them; no
    /// empty queue. An event waits only for the answers in before it, so a connection that
    /// keeps publishing does not hold its channel's deliveries for longer than one answer.
    held: HashMap<ChannelName, VecDeque<Held>>,
    /// Markers of answers handed over while not at the front of their channel's queue.
    released: HashSet<u64>,
    /// The next answer's marker.
    next_marker: u64,
}

impl ShardOrder {
    /// An empty order for a loop whose requests go to `shards` brokers.
    pub fn new(shards: usize) -> ShardOrder {
        ShardOrder {
            shards,
            conns: HashMap::new(),
            held: HashMap::new(),
            released: HashSet::new(),
            next_marker: 0,
        }
    }

    /// Records that the connection of `token` asked `shard` for something answered `kind`
    /// (call before submitting it). `channel` is the request's channel, if any (a subscribe
    /// and an `info` have one).
    pub fn expect_one(&mut self, token: u64, shard: usize, kind: Answered, channel: Option<ChannelName>) {
        let slot = Slot::One { shard, kind, channel: channel.map(|c| (c, 0)), answer: None };
        self.conns.entry(token).or_default().push_back(slot);
    }

    /// Records that the connection of `token` asked every shard for a `channels` page of at most
    /// `limit` names (call before submitting them).
    pub fn expect_channels(&mut self, token: u64, limit: usize) {
        let pages = (0..self.shards).map(|_| None).collect();
        self.conns.entry(token).or_default().push_back(Slot::Channels { pages, limit });
    }

    /// Takes `events` from the broker of `shard` (in its order) and returns what may be handed
    /// to the loop now, in order.
    pub fn handle_events(&mut self, shard: usize, events: Vec<BrokerEvent>) -> Vec<BrokerEvent> {
        let mut out = Vec::with_capacity(events.len());
        for event in events {
            self.handle_event(shard, event, &mut out);
        }
        out
    }

    /// Nothing is waiting or held.
    #[cfg(test)]
    fn is_idle(&self) -> bool {
        self.conns.is_empty() && self.held.is_empty() && self.released.is_empty()
    }

    fn handle_event(&mut self, shard: usize, event: BrokerEvent, out: &mut Vec<BrokerEvent>) {
        let token = match &event {
            BrokerEvent::Delivery(message) => return self.pass_or_hold(&message.channel.clone(), event, out),
            BrokerEvent::PresenceChange(change) => {
                return self.pass_or_hold(&change.channel.clone(), event, out)
            }
            BrokerEvent::Published { token, .. }
            | BrokerEvent::Read { token, .. }
            | BrokerEvent::Subscribed { token, .. }
            | BrokerEvent::Presence { token, .. }
            | BrokerEvent::Disconnected { token, .. }
            | BrokerEvent::Info { token, .. }
            | BrokerEvent::Channels { token, .. } => *token,
        };
        let Some(slots) = self.conns.get_mut(&token) else {
            // Not expected (cannot happen: every answered request is recorded first); handing
            // it over keeps the loop's view of its connection honest.
            log::debug!("redis shards: an answer for an unknown request of {token:#x}");
            out.push(event);
            return;
        };
        if let BrokerEvent::Channels { result, .. } = event {
            let slot = slots.iter_mut().find_map(|slot| match slot {
                Slot::Channels { pages, .. } if pages[shard].is_none() => Some(&mut pages[shard]),
                _ => None,
            });
            match slot {
                Some(page) => *page = Some(result),
                None => out.push(BrokerEvent::Channels { token, result }),
            }
        } else {
            let (kind, named) = match &event {
                BrokerEvent::Subscribed { channel, .. } => (Answered::Subscribe, Some(channel.clone())),
                BrokerEvent::Info { channel, .. } => (Answered::Info, Some(channel.clone())),
                _ => (Answered::InOrder, None),
            };
            let slot = slots.iter_mut().find_map(|slot| match slot {
                Slot::One { shard: s, kind: k, channel, answer: answer @ None }
                    if *s == shard
                        && *k == kind
                        && (named.is_none() || channel.as_ref().map(|(c, _)| c) == named.as_ref()) =>
                {
                    Some((channel, answer))
                }
                _ => None,
            });
            match slot {
                Some((channel, answer)) => {
                    if let Some((channel, marker)) = channel {
                        *marker = self.next_marker;
                        self.next_marker += 1;
                        self.held.entry(channel.clone()).or_default().push_back(Held::Answer(*marker));
                    }
                    *answer = Some(event);
                }
                None => out.push(event),
            }
        }
        self.release(token, out);
    }

    /// Hands over the connection's complete answers from the front of its queue.
    fn release(&mut self, token: u64, out: &mut Vec<BrokerEvent>) {
        let Some(slots) = self.conns.get_mut(&token) else { return };
        while slots.front().is_some_and(Slot::is_complete) {
            match slots.pop_front() {
                Some(Slot::One { channel, answer: Some(answer), .. }) => {
                    out.push(answer);
                    if let Some((channel, marker)) = channel {
                        self.released.insert(marker);
                        Self::drain(&mut self.held, &mut self.released, channel, out);
                    }
                }
                Some(Slot::Channels { pages, limit }) => {
                    let result = merge_pages(pages.into_iter().flatten(), limit);
                    out.push(BrokerEvent::Channels { token, result });
                }
                _ => unreachable!("a complete slot"),
            }
        }
        if slots.is_empty() {
            self.conns.remove(&token);
        }
    }

    /// Hands over the front of `channel`'s queue up to its first answer still held.
    fn drain(
        held: &mut HashMap<ChannelName, VecDeque<Held>>,
        released: &mut HashSet<u64>,
        channel: ChannelName,
        out: &mut Vec<BrokerEvent>,
    ) {
        let Some(queue) = held.get_mut(&channel) else { return };
        while let Some(front) = queue.front() {
            match front {
                Held::Answer(marker) if !released.remove(marker) => break,
                Held::Answer(_) => {}
                Held::Event(_) => {}
            }
            if let Some(Held::Event(event)) = queue.pop_front() {
                out.push(event);
            }
        }
        if queue.is_empty() {
            held.remove(&channel);
        }
    }

    fn pass_or_hold(&mut self, channel: &ChannelName, event: BrokerEvent, out: &mut Vec<BrokerEvent>) {
        match self.held.get_mut(channel) {
            Some(queue) => queue.push_back(Held::Event(event)),
            None => out.push(event),
        }
    }
}

/// One `channels` answer from every shard's page of at most `limit` names: the first error if
/// any shard failed (the list would be incomplete), else the smallest `limit` names of all in
/// byte order, with `more` when a shard had more or the union is longer. (A channel lives on
/// one shard, but its subscribers' nodes all report it there, so names do not repeat across
/// shards; duplicates are dropped all the same.)
pub fn merge_pages(
    pages: impl IntoIterator<Item = Result<ChannelPage, BrokerError>>,
    limit: usize,
) -> Result<ChannelPage, BrokerError> {
    let mut channels = Vec::new();
    let mut more = false;
    for page in pages {
        let page = page?;
        more |= page.more;
        channels.extend(page.channels);
    }
    channels.sort_unstable();
    channels.dedup();
    if channels.len() > limit {
        channels.truncate(limit);
        more = true;
    }
    Ok(ChannelPage { channels, more })
}

/// One node's backend figures over its brokers: counters and latency buckets summed, the up
/// flags true only when every shard's are, `nodes` the most any shard's registry holds (every
/// node runs a broker on every shard, so the registries agree once settled).
pub fn sum_figures(shards: impl IntoIterator<Item = BackendFigures>) -> BackendFigures {
    let mut sum = BackendFigures { command_up: true, pubsub_up: true, ..BackendFigures::default() };
    for f in shards {
        sum.command_up &= f.command_up;
        sum.pubsub_up &= f.pubsub_up;
        sum.reconnects += f.reconnects;
        sum.disconnects += f.disconnects;
        sum.commands_in_flight += f.commands_in_flight;
        sum.pubsub_channels += f.pubsub_channels;
        sum.published += f.published;
        sum.failed += f.failed;
        sum.timeouts += f.timeouts;
        sum.repair_reads += f.repair_reads;
        sum.epoch_changes += f.epoch_changes;
        sum.bad_frames += f.bad_frames;
        sum.presence_writes += f.presence_writes;
        sum.nodes = sum.nodes.max(f.nodes);
        sum.bad_control_frames += f.bad_control_frames;
        sum.survey_timeouts += f.survey_timeouts;
        sum.survey_late_replies += f.survey_late_replies;
        for (total, n) in sum.publish_latency_buckets.iter_mut().zip(f.publish_latency_buckets) {
            *total += n;
        }
        sum.publish_latency_sum_us += f.publish_latency_sum_us;
    }
    sum
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Instant;

    use super::*;
    use crate::hub::cursor::Epoch;
    use crate::hub::{Cursor, Message, Payload};

    fn name(text: &str) -> ChannelName {
        ChannelName::parse(text).unwrap()
    }

    fn published(token: u64, offset: u64) -> BrokerEvent {
        BrokerEvent::Published { token, result: Ok(Cursor { epoch: Epoch(7), offset }) }
    }

    fn delivery(channel: &str, offset: u64) -> BrokerEvent {
        let payload = Payload::Text(format!("m{offset}").into());
        let id = Cursor { epoch: Epoch(7), offset };
        let message = Message::new(name(channel), id, None, payload, Instant::now());
        BrokerEvent::Delivery(Arc::new(message))
    }

    /// A short text per event, to compare sequences.
    fn show(events: &[BrokerEvent]) -> Vec<String> {
        events
            .iter()
            .map(|e| match e {
                BrokerEvent::Published { token, result: Ok(c) } => format!("ack {token} {}", c.offset),
                BrokerEvent::Published { token, result: Err(e) } => format!("ack {token} {e}"),
                BrokerEvent::Delivery(m) => format!("msg {} {}", m.channel.as_str(), m.id.offset),
                BrokerEvent::Channels { token, result: Ok(page) } => format!(
                    "channels {token} {:?} {}",
                    page.channels.iter().map(|c| c.as_str()).collect::<Vec<_>>(),
                    page.more
                ),
                other => format!("{other:?}"),
            })
            .collect()
    }

    /// A connection publishing to shard 0 then shard 1 gets shard 1's answer only after shard
    /// 0's, and the delivery of its shard-1 message only after that answer.
    #[test]
    fn a_later_shards_answer_and_its_delivery_wait_for_an_earlier_shards_answer() {
        let mut order = ShardOrder::new(2);
        order.expect_one(1, 0, Answered::InOrder, Some(name("a")));
        order.expect_one(1, 1, Answered::InOrder, Some(name("b")));
        order.expect_one(2, 1, Answered::InOrder, Some(name("c")));
        // Shard 1 answers first: connection 1's is held, connection 2's passes; b's delivery
        // waits behind its answer, c's does not.
        let out = order
            .handle_events(1, vec![published(1, 5), published(2, 9), delivery("b", 5), delivery("c", 9)]);
        assert_eq!(show(&out), ["ack 2 9", "msg c 9"]);
        let out = order.handle_events(1, vec![delivery("b", 6)]);
        assert!(out.is_empty(), "{:?}", show(&out));
        let out = order.handle_events(0, vec![published(1, 3), delivery("a", 3)]);
        assert_eq!(show(&out), ["ack 1 3", "ack 1 5", "msg b 5", "msg b 6", "msg a 3"]);
        assert!(order.is_idle());
    }

    /// A delivery waits only for the answers of its channel that were in before it: a
    /// connection that keeps publishing does not hold its channel's deliveries for longer.
    #[test]
    fn a_delivery_waits_only_for_the_answers_in_before_it() {
        let mut order = ShardOrder::new(2);
        for _ in 0..2 {
            order.expect_one(1, 0, Answered::InOrder, Some(name("a")));
            order.expect_one(1, 1, Answered::InOrder, Some(name("x")));
        }
        let out = order
            .handle_events(1, vec![published(1, 1), delivery("x", 1), published(1, 2), delivery("x", 2)]);
        assert!(out.is_empty(), "{:?}", show(&out));
        let out = order.handle_events(0, vec![published(1, 11)]);
        assert_eq!(show(&out), ["ack 1 11", "ack 1 1", "msg x 1"]);
        let out = order.handle_events(0, vec![published(1, 12), delivery("a", 11), delivery("a", 12)]);
        assert_eq!(show(&out), ["ack 1 12", "ack 1 2", "msg x 2", "msg a 11", "msg a 12"]);
        assert!(order.is_idle());
    }

    /// Answers from one shard keep that shard's order, even across kinds.
    #[test]
    fn one_shards_answers_keep_its_order() {
        let mut order = ShardOrder::new(2);
        order.expect_one(1, 1, Answered::InOrder, Some(name("a")));
        order.expect_one(1, 1, Answered::InOrder, Some(name("b")));
        let out = order.handle_events(1, vec![published(1, 2)]);
        assert_eq!(show(&out), ["ack 1 2"]);
        let out = order.handle_events(1, vec![published(1, 1)]);
        assert_eq!(show(&out), ["ack 1 1"]);
        assert!(order.is_idle());
    }

    /// One broker answers a publish before an earlier subscribe of the same connection (it
    /// waits for its channel to be live): the publish's answer waits for the subscribe's, and
    /// its channel's delivery for it (not the subscribe's channel's).
    #[test]
    fn a_publish_answered_before_an_earlier_subscribe_waits_with_its_own_channel() {
        let mut order = ShardOrder::new(2);
        order.expect_one(1, 1, Answered::Subscribe, Some(name("x")));
        order.expect_one(1, 1, Answered::InOrder, Some(name("y")));
        let out = order.handle_events(1, vec![published(1, 1), delivery("y", 1)]);
        assert!(out.is_empty(), "the delivery of y waits for its answer: {:?}", show(&out));
        let subscribed = BrokerEvent::Subscribed {
            token: 1,
            channel: name("x"),
            transport: crate::protocol::Transport::WebSocket,
            result: Err(BrokerError::Overloaded),
        };
        let out = order.handle_events(1, vec![subscribed, delivery("x", 4)]);
        assert_eq!(show(&out)[1..], ["ack 1 1", "msg y 1", "msg x 4"]);
        assert!(matches!(out[0], BrokerEvent::Subscribed { .. }));
        assert!(order.is_idle());
    }

    /// A `channels` answer waits for every shard's page and merges them in order.
    #[test]
    fn channels_pages_of_every_shard_are_merged_in_order() {
        let mut order = ShardOrder::new(2);
        order.expect_channels(4, 2);
        order.expect_one(4, 0, Answered::InOrder, None);
        let page =
            |names: &[&str], more| ChannelPage { channels: names.iter().map(|n| name(n)).collect(), more };
        let out = order.handle_events(
            0,
            vec![published(4, 1), BrokerEvent::Channels { token: 4, result: Ok(page(&["b", "d"], false)) }],
        );
        assert!(out.is_empty(), "{:?}", show(&out));
        let out = order
            .handle_events(1, vec![BrokerEvent::Channels { token: 4, result: Ok(page(&["a", "c"], false)) }]);
        assert_eq!(show(&out), ["channels 4 [\"a\", \"b\"] true", "ack 4 1"]);
        assert!(order.is_idle());
        let failed = merge_pages([Ok(page(&["a"], false)), Err(BrokerError::Overloaded)], 5);
        assert_eq!(failed, Err(BrokerError::Overloaded));
        assert_eq!(
            merge_pages([Ok(page(&["b"], true)), Ok(page(&["a"], false))], 5),
            Ok(page(&["a", "b"], true))
        );
    }

    #[test]
    fn figures_sum_and_up_flags_and() {
        let one = BackendFigures {
            command_up: true,
            pubsub_up: true,
            published: 2,
            nodes: 3,
            ..Default::default()
        };
        let two = BackendFigures {
            command_up: false,
            pubsub_up: true,
            published: 5,
            nodes: 2,
            ..Default::default()
        };
        let sum = sum_figures([one, two]);
        assert!(!sum.command_up && sum.pubsub_up);
        assert_eq!((sum.published, sum.nodes), (7, 3));
    }
}
