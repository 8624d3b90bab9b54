//! Tests of [`super::Hub`]: history, cursors, the gap rule, subscriptions and limits.

use super::*;
use crate::hub::backend::{ConnAddr, ConnId};
use std::collections::HashSet;

/// The fake clock's origin; every other instant is this plus a `Duration`. The one clock
/// read in `src/hub/`, test-only (shared with the other files' tests).
pub(super) fn t0() -> Instant {
    Instant::now()
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn name(text: &str) -> ChannelName {
    ChannelName::parse(text).unwrap()
}

fn text(body: &str) -> Payload {
    Payload::Text(Arc::from(body))
}

fn sink(index: u8) -> SinkId {
    SinkId::new(index).unwrap()
}

fn at(epoch: Epoch, offset: u64) -> Since {
    Since::After(Cursor { epoch, offset })
}

fn offsets(replay: &Replay) -> Vec<u64> {
    replay.messages.iter().map(|m| m.id.offset).collect()
}

fn small_limits() -> Limits {
    Limits {
        max_history_messages: 3,
        max_history_age: secs(10),
        max_history_bytes: 100,
        max_total_history_bytes: 1_000,
        max_channels: 4,
        presence: PresenceLimits::default(),
    }
}

/// Publishes `count` messages "m1", "m2", ... and returns the channel's epoch.
fn publish_n(hub: &mut Hub, channel: &ChannelName, count: u64, now: Instant) -> Epoch {
    let mut epoch = None;
    for i in 1..=count {
        let published = hub.publish(channel, None, text(&format!("m{i}")), now).unwrap();
        epoch = Some(published.message.id.epoch);
    }
    epoch.unwrap()
}

/// The hub's counters agree with its channels, and every bound holds.
fn check_invariants(hub: &Hub) {
    let limits = hub.limits;
    let (mut messages, mut bytes, mut subscriptions) = (0, 0, 0);
    assert!(hub.channels.by_name.len() <= limits.max_channels);
    for (channel_name, ch) in &hub.channels.by_name {
        assert!(ch.history.len() <= limits.max_history_messages);
        assert!(ch.history_bytes <= limits.max_history_bytes);
        let sum: usize = ch.history.iter().map(|m| m.history_bytes()).sum();
        assert_eq!(sum, ch.history_bytes);
        let first = ch.last_offset + 1 - ch.history.len() as u64;
        for (i, m) in ch.history.iter().enumerate() {
            assert_eq!(m.id.offset, first + i as u64);
            assert_eq!(m.id.epoch, ch.epoch);
            assert_eq!(&m.channel, channel_name);
        }
        assert!(ch.subscribers.iter().all(|&(_, count)| count > 0));
        messages += ch.history.len();
        bytes += ch.history_bytes;
        subscriptions += ch.subscribers.iter().map(|&(_, count)| count).sum::<usize>();
    }
    assert!(bytes <= limits.max_total_history_bytes);
    let stats = hub.stats();
    assert_eq!(stats.history_messages, messages);
    assert_eq!(stats.history_bytes, bytes);
    assert_eq!(stats.subscriptions, subscriptions);
}

#[test]
fn limits_default_is_valid() {
    let limits = Limits::default();
    assert_eq!(limits.validate(), Ok(()));
    assert_eq!(limits.max_history_messages, 1_000);
    assert_eq!(limits.max_history_age, secs(300));
    assert_eq!(limits.max_history_bytes, 64 * 1024 * 1024);
    assert_eq!(limits.max_total_history_bytes, 1024 * 1024 * 1024);
    assert_eq!(limits.max_channels, 100_000);
}

#[test]
fn limits_validate_rejects_nonsense() {
    let ok = small_limits();
    assert_eq!(ok.validate(), Ok(()));
    for bad in [
        Limits { max_history_messages: 0, ..ok },
        Limits { max_history_age: Duration::ZERO, ..ok },
        Limits { max_history_bytes: 0, ..ok },
        Limits { max_history_bytes: ok.max_total_history_bytes + 1, ..ok },
        Limits { max_channels: 0, ..ok },
    ] {
        assert!(bad.validate().is_err(), "{bad:?}");
    }
}

#[test]
fn hub_error_status_hints() {
    assert_eq!(HubError::InvalidChannelName.status_hint(), 400);
    assert_eq!(HubError::TooManyChannels.status_hint(), 503);
    assert_eq!(HubError::HistoryFull.status_hint(), 503);
    assert_eq!(HubError::MessageTooLarge.status_hint(), 413);
    assert_eq!(HubError::OffsetsExhausted.status_hint(), 503);
}

#[test]
fn sink_id_is_below_64_and_sink_set_iterates_in_order() {
    assert_eq!(SinkId::new(63).map(SinkId::index), Some(63));
    assert_eq!(SinkId::new(64), None);
    assert_eq!(SinkId::new(255), None);
    let set = SinkSet(sink(0).bit() | sink(5).bit() | sink(63).bit());
    assert_eq!(set.iter().collect::<Vec<_>>(), [sink(0), sink(5), sink(63)]);
    assert!(set.contains(sink(5)) && !set.contains(sink(6)));
    assert_eq!(set.bits(), 1 | 1 << 5 | 1 << 63);
    assert!(SinkSet::default().is_empty() && !set.is_empty());
}

#[test]
fn epoch_is_splitmix64_of_seed_plus_counter() {
    // SplitMix64 seeded with 0: first output 0xe220a8397b1dcdaf.
    assert_eq!(splitmix64(0), 0xe220_a839_7b1d_cdaf);
    let now = t0();
    let mut hub = Hub::new(Limits::default(), u64::MAX);
    let a = hub.read(&name("a"), Since::Tail, 0, now).unwrap();
    let b = hub.read(&name("b"), Since::Tail, 0, now).unwrap();
    assert_eq!(a.next.epoch, Epoch(splitmix64(u64::MAX)));
    assert_eq!(b.next.epoch, Epoch(splitmix64(0)));
}

#[test]
fn channel_created_on_first_access_with_fresh_epoch() {
    let now = t0();
    let mut hub = Hub::new(Limits::default(), 42);
    let news = name("news");
    let first = hub.read(&news, Since::Tail, 10, now).unwrap();
    assert_eq!(first.next.offset, 0);
    assert_eq!(hub.stats().channels, 1);
    let epoch = first.next.epoch;
    let m1 = hub.publish(&news, None, text("a"), now).unwrap().message;
    let m2 = hub.publish(&news, None, text("b"), now).unwrap().message;
    assert_eq!(m1.id, Cursor { epoch, offset: 1 });
    assert_eq!(m2.id, Cursor { epoch, offset: 2 });
    assert_eq!(m2.channel, news);
    let other = hub.subscribe(&name("other"), Since::Tail, sink(0), Transport::Sse, now).unwrap();
    assert_ne!(other.next.epoch, epoch);
    assert_eq!(hub.stats().channels, 2);
    check_invariants(&hub);
}

#[test]
fn since_tail_returns_nothing_and_the_tail() {
    let now = t0();
    let mut hub = Hub::new(Limits::default(), 1);
    let ch = name("c");
    let epoch = publish_n(&mut hub, &ch, 3, now);
    let replay = hub.read(&ch, Since::Tail, 10, now).unwrap();
    assert!(replay.messages.is_empty());
    assert!(!replay.gap);
    assert_eq!(replay.next, Cursor { epoch, offset: 3 });
}

#[test]
fn cursor_in_epoch_returns_messages_after_it() {
    let now = t0();
    let mut hub = Hub::new(Limits::default(), 1);
    let ch = name("c");
    let epoch = publish_n(&mut hub, &ch, 3, now);
    let replay = hub.read(&ch, at(epoch, 1), 10, now).unwrap();
    assert_eq!(offsets(&replay), [2, 3]);
    assert!(!replay.gap);
    assert_eq!(replay.next, Cursor { epoch, offset: 3 });
    let all = hub.read(&ch, at(epoch, 0), 10, now).unwrap();
    assert_eq!(offsets(&all), [1, 2, 3]);
    assert!(!all.gap);
}

#[test]
fn cursor_at_tail_returns_nothing_without_gap() {
    let now = t0();
    let mut hub = Hub::new(Limits::default(), 1);
    let ch = name("c");
    let epoch = publish_n(&mut hub, &ch, 3, now);
    let replay = hub.read(&ch, at(epoch, 3), 10, now).unwrap();
    assert!(replay.messages.is_empty() && !replay.gap);
    assert_eq!(replay.next, Cursor { epoch, offset: 3 });
    // Before any message, `epoch:0` is the tail.
    let empty = hub.read(&name("e"), Since::Tail, 10, now).unwrap().next;
    let replay = hub.read(&name("e"), Since::After(empty), 10, now).unwrap();
    assert!(replay.messages.is_empty() && !replay.gap);
    assert_eq!(replay.next, empty);
}

#[test]
fn read_pages_by_max_messages_without_gap() {
    let now = t0();
    let mut hub = Hub::new(Limits::default(), 1);
    let ch = name("c");
    let epoch = publish_n(&mut hub, &ch, 5, now);
    let mut since = at(epoch, 0);
    let mut pages = Vec::new();
    loop {
        let replay = hub.read(&ch, since, 2, now).unwrap();
        assert!(!replay.gap);
        if replay.messages.is_empty() {
            assert_eq!(Since::After(replay.next), since);
            break;
        }
        pages.push(offsets(&replay));
        since = Since::After(replay.next);
    }
    assert_eq!(pages, [vec![1, 2], vec![3, 4], vec![5]]);
    let none = hub.read(&ch, at(epoch, 1), 0, now).unwrap();
    assert!(none.messages.is_empty() && !none.gap);
    assert_eq!(none.next, Cursor { epoch, offset: 1 });
}

#[test]
fn cursor_after_eviction_signals_gap() {
    let now = t0();
    let mut hub = Hub::new(small_limits(), 1);
    let ch = name("c");
    let epoch = publish_n(&mut hub, &ch, 5, now); // keeps 3, 4, 5
    let replay = hub.read(&ch, at(epoch, 1), 10, now).unwrap();
    assert!(replay.gap);
    assert_eq!(offsets(&replay), [3, 4, 5]);
    assert_eq!(replay.next, Cursor { epoch, offset: 5 });
    // `first - 1` is still contiguous: no gap.
    let replay = hub.read(&ch, at(epoch, 2), 10, now).unwrap();
    assert!(!replay.gap);
    assert_eq!(offsets(&replay), [3, 4, 5]);
    // A gap page continues without a second gap.
    let page = hub.read(&ch, at(epoch, 0), 1, now).unwrap();
    assert!(page.gap);
    assert_eq!(offsets(&page), [3]);
    let rest = hub.read(&ch, Since::After(page.next), 10, now).unwrap();
    assert!(!rest.gap);
    assert_eq!(offsets(&rest), [4, 5]);
    // With max_messages 0, `next` moves to the oldest position still available.
    let none = hub.read(&ch, at(epoch, 0), 0, now).unwrap();
    assert!(none.gap && none.messages.is_empty());
    assert_eq!(none.next, Cursor { epoch, offset: 2 });
}

#[test]
fn cursor_from_another_epoch_signals_gap() {
    let now = t0();
    let mut hub = Hub::new(Limits::default(), 1);
    let ch = name("c");
    let epoch = publish_n(&mut hub, &ch, 2, now);
    let foreign = Epoch(epoch.0 ^ 1);
    let replay = hub.read(&ch, at(foreign, 1), 10, now).unwrap();
    assert!(replay.gap);
    assert_eq!(offsets(&replay), [1, 2]);
    assert_eq!(replay.next, Cursor { epoch, offset: 2 });
    let empty = name("empty");
    let replay = hub.read(&empty, at(foreign, 0), 10, now).unwrap();
    assert!(replay.gap && replay.messages.is_empty());
    assert_eq!(replay.next.offset, 0);
    assert_ne!(replay.next.epoch, foreign);
}

#[test]
fn cursor_from_the_future_signals_gap() {
    let now = t0();
    let mut hub = Hub::new(Limits::default(), 1);
    let ch = name("c");
    let epoch = publish_n(&mut hub, &ch, 2, now);
    for offset in [3, 10, u64::MAX] {
        let replay = hub.read(&ch, at(epoch, offset), 10, now).unwrap();
        assert!(replay.gap && replay.messages.is_empty());
        assert_eq!(replay.next, Cursor { epoch, offset: 2 });
    }
}

#[test]
fn history_evicts_oldest_over_max_history_messages() {
    let now = t0();
    let mut hub = Hub::new(small_limits(), 1);
    let ch = name("c");
    let epoch = publish_n(&mut hub, &ch, 10, now);
    assert_eq!(hub.stats().history_messages, 3);
    let replay = hub.read(&ch, Since::After(Cursor { epoch, offset: 7 }), 10, now);
    assert_eq!(offsets(&replay.unwrap()), [8, 9, 10]);
    check_invariants(&hub);
}

#[test]
fn history_evicts_oldest_over_max_history_bytes() {
    let now = t0();
    let limits = Limits { max_history_messages: 100, max_history_bytes: 10, ..small_limits() };
    let mut hub = Hub::new(limits, 1);
    let ch = name("c");
    for body in ["aaaa", "bbbb", "cccc"] {
        hub.publish(&ch, None, text(body), now).unwrap();
    }
    let replay = hub.read(&ch, at(Epoch(0), 0), 10, now).unwrap();
    assert_eq!(offsets(&replay), [2, 3]);
    assert_eq!(hub.stats().history_bytes, 8);
    // The event name counts too: 2 + 8 bytes fill the history alone.
    hub.publish(&ch, Some(Arc::from("ev")), text("dddddddd"), now).unwrap();
    let replay = hub.read(&ch, at(Epoch(0), 0), 10, now).unwrap();
    assert_eq!(offsets(&replay), [4]);
    assert_eq!(hub.stats().history_bytes, 10);
    check_invariants(&hub);
}

#[test]
fn message_larger_than_max_history_bytes_refused() {
    let now = t0();
    let limits = Limits { max_history_bytes: 10, ..small_limits() };
    let mut hub = Hub::new(limits, 1);
    let ch = name("c");
    let epoch = publish_n(&mut hub, &ch, 1, now);
    let big = Payload::Binary(Arc::from(vec![0u8; 11]));
    assert_eq!(hub.publish(&ch, None, big, now).unwrap_err(), HubError::MessageTooLarge);
    // Nothing changed: the history is intact and the offset was not used.
    assert_eq!(hub.stats().history_messages, 1);
    let next = hub.publish(&ch, None, text("ok"), now).unwrap().message.id;
    assert_eq!(next, Cursor { epoch, offset: 2 });
}

#[test]
fn history_full_refuses_publish_beyond_total() {
    let now = t0();
    let limits = Limits { max_history_bytes: 10, max_total_history_bytes: 20, ..small_limits() };
    let mut hub = Hub::new(limits, 1);
    let ten = || text("0123456789");
    hub.publish(&name("a"), None, ten(), now).unwrap();
    hub.publish(&name("b"), None, ten(), now).unwrap();
    assert_eq!(hub.publish(&name("c"), None, text("x"), now).unwrap_err(), HubError::HistoryFull);
    // Replacing a channel's own history does not grow the total.
    let replaced = hub.publish(&name("a"), None, ten(), now).unwrap();
    assert_eq!(replaced.message.id.offset, 2);
    assert_eq!(hub.stats().history_bytes, 20);
    // Once history ages out, publishing works again.
    hub.expire(now + secs(10));
    assert_eq!(hub.stats().history_bytes, 0);
    hub.publish(&name("c"), None, text("x"), now + secs(10)).unwrap();
    check_invariants(&hub);
}

#[test]
fn too_many_channels_refused() {
    let now = t0();
    let limits = Limits { max_channels: 2, ..small_limits() };
    let mut hub = Hub::new(limits, 1);
    hub.publish(&name("a"), None, text("x"), now).unwrap();
    hub.read(&name("b"), Since::Tail, 1, now).unwrap();
    let c = name("c");
    let refused = HubError::TooManyChannels;
    assert_eq!(hub.publish(&c, None, text("x"), now).unwrap_err(), refused);
    assert_eq!(hub.read(&c, Since::Tail, 1, now).unwrap_err(), refused);
    assert_eq!(hub.subscribe(&c, Since::Tail, sink(0), Transport::Sse, now).unwrap_err(), refused);
    assert_eq!(hub.stats().subscriptions, 0);
    // Existing channels still work; once `b` is freed, `c` can be created.
    hub.publish(&name("b"), None, text("y"), now).unwrap();
    hub.expire(now + secs(10));
    assert_eq!(hub.stats().channels, 0);
    hub.read(&c, Since::Tail, 1, now + secs(10)).unwrap();
    check_invariants(&hub);
}

#[test]
fn history_older_than_max_age_dropped_on_access() {
    let now = t0();
    let mut hub = Hub::new(small_limits(), 1);
    let ch = name("c");
    let epoch = publish_n(&mut hub, &ch, 1, now);
    publish_n(&mut hub, &ch, 1, now + secs(5));
    let young = hub.read(&ch, at(epoch, 0), 10, now + secs(9)).unwrap();
    assert_eq!(offsets(&young), [1, 2]);
    // At age 10 s (= max_history_age) message 1 is gone.
    let replay = hub.read(&ch, at(epoch, 0), 10, now + secs(10)).unwrap();
    assert!(replay.gap);
    assert_eq!(offsets(&replay), [2]);
    assert_eq!(hub.stats().history_messages, 1);
    check_invariants(&hub);
}

#[test]
fn expire_drops_old_history_and_frees_idle_channel() {
    let now = t0();
    let mut hub = Hub::new(small_limits(), 1);
    publish_n(&mut hub, &name("c"), 2, now);
    hub.expire(now + secs(9));
    assert_eq!(hub.stats().history_messages, 2);
    hub.expire(now + secs(10));
    assert_eq!(hub.stats(), HubStats::default());
}

#[test]
fn expire_keeps_recently_active_channel() {
    let now = t0();
    let mut hub = Hub::new(small_limits(), 1);
    let ch = name("c");
    publish_n(&mut hub, &ch, 1, now);
    hub.read(&ch, Since::Tail, 1, now + secs(5)).unwrap();
    hub.expire(now + secs(10));
    let stats = hub.stats();
    assert_eq!((stats.channels, stats.history_messages), (1, 0));
    hub.expire(now + secs(15));
    assert_eq!(hub.stats().channels, 0);
}

#[test]
fn channel_with_subscribers_never_freed() {
    let now = t0();
    let mut hub = Hub::new(small_limits(), 1);
    let ch = name("c");
    let epoch = hub.subscribe(&ch, Since::Tail, sink(1), Transport::Sse, now).unwrap().next.epoch;
    hub.expire(now + secs(1_000));
    assert_eq!(hub.stats().channels, 1);
    hub.unsubscribe(&ch, sink(1), Transport::Sse, now + secs(1_000));
    hub.expire(now + secs(1_009));
    assert_eq!(hub.stats().channels, 1);
    let still = hub.read(&ch, Since::Tail, 1, now + secs(1_009)).unwrap();
    assert_eq!(still.next.epoch, epoch);
    hub.expire(now + secs(1_019));
    assert_eq!(hub.stats().channels, 0);
}

#[test]
fn freed_channel_recreated_with_new_epoch_old_cursor_gets_gap() {
    let now = t0();
    let mut hub = Hub::new(small_limits(), 1);
    let ch = name("c");
    let old = publish_n(&mut hub, &ch, 2, now);
    hub.expire(now + secs(60));
    assert_eq!(hub.stats().channels, 0);
    let later = now + secs(60);
    let fresh = hub.publish(&ch, None, text("new"), later).unwrap().message;
    assert_ne!(fresh.id.epoch, old);
    assert_eq!(fresh.id.offset, 1);
    for offset in [0, 1, 2] {
        let replay = hub.read(&ch, at(old, offset), 10, later).unwrap();
        assert!(replay.gap, "old cursor {offset} must signal a gap");
        assert_eq!(offsets(&replay), [1]);
        assert_eq!(replay.next, fresh.id);
    }
}

#[test]
fn subscribe_replays_and_registers_atomically() {
    let now = t0();
    let mut hub = Hub::new(Limits::default(), 1);
    let ch = name("c");
    let epoch = publish_n(&mut hub, &ch, 2, now);
    let replay = hub.subscribe(&ch, at(epoch, 1), sink(3), Transport::Sse, now).unwrap();
    assert!(!replay.gap);
    assert_eq!(offsets(&replay), [2]);
    assert_eq!(replay.next, Cursor { epoch, offset: 2 });
    // The very next publish is live for the sink and follows `next` without a hole.
    let live = hub.publish(&ch, None, text("m3"), now).unwrap();
    assert!(live.sinks.contains(sink(3)));
    assert_eq!(live.message.id.offset, replay.next.offset + 1);
    // From the tail: nothing replayed, live continues right after.
    let tail = hub.subscribe(&ch, Since::Tail, sink(4), Transport::Sse, now).unwrap();
    assert!(tail.messages.is_empty());
    let live = hub.publish(&ch, None, text("m4"), now).unwrap();
    assert!(live.sinks.contains(sink(4)));
    assert_eq!(live.message.id.offset, tail.next.offset + 1);
}

/// Issue #7 (idle connection memory): subscribers keep the hub's copy of the name, not
/// one allocation per request.
#[test]
fn subscribers_share_the_hubs_channel_name() {
    let now = t0();
    let mut hub = Hub::new(Limits::default(), 1);
    let first = name("shared");
    let command = |channel: &ChannelName| Command::Subscribe {
        channel: channel.clone(),
        since: Since::Tail,
        transport: Transport::Sse,
    };
    let applied = command(&first).apply(&mut hub, ConnAddr { sink: sink(0), conn: ConnId::new(0, 0) }, now);
    let second = name("shared");
    assert_ne!(first.as_str().as_ptr(), second.as_str().as_ptr());
    let applied_again =
        command(&second).apply(&mut hub, ConnAddr { sink: sink(0), conn: ConnId::new(0, 0) }, now);
    for applied in [applied, applied_again] {
        let Some(Reply::Subscribed { channel, replay: Ok(_), .. }) = applied.reply else { panic!() };
        assert_eq!(channel.as_str().as_ptr(), first.as_str().as_ptr());
        assert_eq!(applied.subscribed.unwrap().as_str().as_ptr(), first.as_str().as_ptr());
    }
}

#[test]
fn subscribe_replays_everything_available() {
    let now = t0();
    let limits = Limits { max_history_messages: 2_000, ..Limits::default() };
    let mut hub = Hub::new(limits, 1);
    let ch = name("c");
    let epoch = publish_n(&mut hub, &ch, 1_500, now);
    let replay = hub.subscribe(&ch, at(epoch, 0), sink(0), Transport::Sse, now).unwrap();
    assert!(!replay.gap);
    assert_eq!(replay.messages.len(), 1_500);
    assert_eq!(replay.next, Cursor { epoch, offset: 1_500 });
}

#[test]
fn publish_returns_exactly_the_sinks_with_subscribers() {
    let now = t0();
    let mut hub = Hub::new(Limits::default(), 1);
    let ch = name("c");
    assert!(hub.publish(&ch, None, text("x"), now).unwrap().sinks.is_empty());
    for index in [0, 5, 5, 63] {
        hub.subscribe(&ch, Since::Tail, sink(index), Transport::Sse, now).unwrap();
    }
    hub.subscribe(&name("elsewhere"), Since::Tail, sink(9), Transport::Sse, now).unwrap();
    let sinks = |hub: &mut Hub| {
        let published = hub.publish(&ch, None, text("x"), now).unwrap();
        published.sinks.iter().map(SinkId::index).collect::<Vec<_>>()
    };
    assert_eq!(sinks(&mut hub), [0, 5, 63]);
    assert_eq!(hub.stats().subscriptions, 5);
    hub.unsubscribe(&ch, sink(5), Transport::Sse, now);
    assert_eq!(sinks(&mut hub), [0, 5, 63]);
    hub.unsubscribe(&ch, sink(5), Transport::Sse, now);
    assert_eq!(sinks(&mut hub), [0, 63]);
    // Unknown registrations are no-ops and create nothing.
    hub.unsubscribe(&ch, sink(5), Transport::Sse, now);
    hub.unsubscribe(&ch, sink(7), Transport::Sse, now);
    hub.unsubscribe(&name("nowhere"), sink(0), Transport::Sse, now);
    assert_eq!(sinks(&mut hub), [0, 63]);
    let stats = hub.stats();
    assert_eq!((stats.channels, stats.subscriptions), (2, 3));
    check_invariants(&hub);
}

#[test]
fn earlier_instant_counts_as_latest_seen() {
    let now = t0();
    let mut hub = Hub::new(small_limits(), 1);
    let ch = name("c");
    let late = hub.publish(&ch, None, text("a"), now + secs(5)).unwrap();
    let early = hub.publish(&ch, None, text("b"), now).unwrap();
    assert_eq!(late.message.published_at, now + secs(5));
    assert_eq!(early.message.published_at, now + secs(5));
    hub.expire(now);
    assert_eq!(hub.stats().history_messages, 2);
    hub.expire(now + secs(15));
    assert_eq!(hub.stats().channels, 0);
}

/// xorshift64 (Marsaglia 2003): deterministic test randomness without a crate.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// What the test knows from the hub's answers alone.
#[derive(Default)]
struct Model {
    /// Every epoch the hub ever issued.
    epochs: HashSet<Epoch>,
    /// The latest epoch seen per channel.
    current: HashMap<ChannelName, Epoch>,
    /// Every message published per epoch, in order (index = offset - 1).
    log: HashMap<Epoch, Vec<Arc<Message>>>,
    /// Cursors the hub returned, per channel.
    cursors: Vec<(ChannelName, Cursor)>,
    /// Subscription counts per channel and sink.
    subscriptions: HashMap<(ChannelName, SinkId), usize>,
}

impl Model {
    /// Records the epoch the hub reports for `channel`: unchanged, or a never-seen one.
    fn observe_epoch(&mut self, channel: &ChannelName, epoch: Epoch) {
        if self.current.get(channel) != Some(&epoch) {
            assert!(self.epochs.insert(epoch), "re-created channel reused an epoch");
            assert!(self.log.insert(epoch, Vec::new()).is_none());
            self.current.insert(channel.clone(), epoch);
        }
    }

    fn sinks(&self, channel: &ChannelName) -> SinkSet {
        let mut bits = 0;
        for ((c, sink), count) in &self.subscriptions {
            if c == channel && *count > 0 {
                bits |= sink.bit();
            }
        }
        SinkSet(bits)
    }

    /// Checks a replay against everything published and records its cursors.
    fn check_replay(&mut self, hub: &Hub, channel: &ChannelName, since: Since, max: usize, replay: &Replay) {
        let epoch = replay.next.epoch;
        self.observe_epoch(channel, epoch);
        let log = &self.log[&epoch];
        let last = log.len() as u64;
        let ch = &hub.channels.by_name[channel];
        assert_eq!((ch.epoch, ch.last_offset), (epoch, last));
        let first = last + 1 - ch.history.len() as u64;
        // Messages are this incarnation's, contiguous, and the very ones published.
        for (i, m) in replay.messages.iter().enumerate() {
            assert_eq!(m.id.epoch, epoch);
            if i > 0 {
                assert_eq!(m.id.offset, replay.messages[i - 1].id.offset + 1);
            }
            assert!(Arc::ptr_eq(m, &log[m.id.offset as usize - 1]));
        }
        assert!(replay.messages.len() <= max);
        let from = match since {
            Since::Tail => {
                assert!(!replay.gap && replay.messages.is_empty());
                last
            }
            Since::After(c) if !replay.gap => {
                // No gap: exactly the messages after the cursor, up to `max`.
                assert_eq!(c.epoch, epoch);
                assert!(c.offset <= last);
                c.offset
            }
            Since::After(c) if c.epoch == epoch && c.offset > last => {
                assert!(replay.messages.is_empty());
                last
            }
            Since::After(c) => {
                // A gap within the epoch only when the next message was evicted.
                if c.epoch == epoch {
                    assert!(c.offset + 1 < first, "gap reported though nothing was lost");
                }
                first - 1
            }
        };
        let expected = (last - from).min(max as u64) as usize;
        assert_eq!(replay.messages.len(), expected);
        if let Some(m) = replay.messages.first() {
            assert_eq!(m.id.offset, from + 1);
        }
        let next = replay.messages.last().map_or(from, |m| m.id.offset);
        assert_eq!(replay.next, Cursor { epoch, offset: next });
        self.cursors.push((channel.clone(), replay.next));
    }
}

#[test]
fn random_operations_keep_hub_invariants() {
    let limits = Limits {
        max_history_messages: 4,
        max_history_age: secs(20),
        max_history_bytes: 24,
        max_total_history_bytes: 60,
        max_channels: 3,
        presence: PresenceLimits::default(),
    };
    let names: Vec<ChannelName> = ["a", "b", "c", "d", "e"].iter().map(|n| name(n)).collect();
    for seed in 1..=8u64 {
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15 ^ seed);
        let mut hub = Hub::new(limits, seed);
        let mut model = Model::default();
        let mut now = t0();
        for _ in 0..5_000 {
            // Mostly busy, sometimes long quiet spells that let history age and channels go.
            let step_ms = if rng.below(40) == 0 { 30_000 } else { rng.below(800) };
            now += Duration::from_millis(step_ms);
            let channel = names[rng.below(names.len() as u64) as usize].clone();
            let sink = sink(rng.below(4) as u8);
            let exists = hub.channels.by_name.contains_key(&channel);
            let at_capacity = hub.channels.by_name.len() >= limits.max_channels;
            let since = match rng.below(7) {
                0 => Since::Tail,
                1 => Since::After(Cursor { epoch: Epoch(rng.next()), offset: rng.below(10) }),
                2 => {
                    let epoch = model.current.get(&channel).copied().unwrap_or(Epoch(0));
                    Since::After(Cursor { epoch, offset: rng.below(30) })
                }
                // The latest cursor the hub returned for this channel (a client keeping up).
                3 | 4 => model
                    .cursors
                    .iter()
                    .rev()
                    .find(|(c, _)| *c == channel)
                    .map_or(Since::Tail, |&(_, cursor)| Since::After(cursor)),
                // Any cursor the hub returned, possibly for another channel.
                _ if model.cursors.is_empty() => Since::Tail,
                _ => {
                    let i = rng.below(model.cursors.len() as u64) as usize;
                    Since::After(model.cursors[i].1)
                }
            };
            match rng.below(10) {
                0..=3 => {
                    let len = rng.below(14) as usize;
                    let event = (rng.below(3) == 0).then(|| Arc::from("ev"));
                    let bytes = len + event.as_ref().map_or(0, |e: &Arc<str>| e.len());
                    let payload = Payload::Binary(Arc::from(vec![7u8; len]));
                    match hub.publish(&channel, event, payload, now) {
                        Ok(published) => {
                            let id = published.message.id;
                            model.observe_epoch(&channel, id.epoch);
                            let log = model.log.get_mut(&id.epoch).unwrap();
                            // Offsets strictly increase, by one, from 1.
                            assert_eq!(id.offset, log.len() as u64 + 1);
                            log.push(Arc::clone(&published.message));
                            assert_eq!(published.sinks, model.sinks(&channel));
                            model.cursors.push((channel.clone(), id));
                        }
                        Err(HubError::TooManyChannels) => assert!(!exists && at_capacity),
                        Err(HubError::MessageTooLarge) => {
                            assert!(bytes > limits.max_history_bytes)
                        }
                        Err(HubError::HistoryFull) => {
                            assert!(hub.stats().history_bytes + bytes > limits.max_total_history_bytes)
                        }
                        Err(e) => panic!("unexpected {e:?}"),
                    }
                }
                4..=6 => {
                    let max = rng.below(6) as usize;
                    match hub.read(&channel, since, max, now) {
                        Ok(replay) => model.check_replay(&hub, &channel, since, max, &replay),
                        Err(e) => {
                            assert!(e == HubError::TooManyChannels && !exists && at_capacity)
                        }
                    }
                }
                7 => match hub.subscribe(&channel, since, sink, Transport::Sse, now) {
                    Ok(replay) => {
                        model.check_replay(&hub, &channel, since, usize::MAX, &replay);
                        let last = model.log[&replay.next.epoch].len() as u64;
                        assert_eq!(replay.next.offset, last, "live must follow the replay");
                        *model.subscriptions.entry((channel.clone(), sink)).or_default() += 1;
                    }
                    Err(e) => assert!(e == HubError::TooManyChannels && !exists && at_capacity),
                },
                8 => {
                    // Usually end a live subscription, sometimes an unknown one (a no-op).
                    let live: Vec<_> = model
                        .subscriptions
                        .iter()
                        .filter(|(_, count)| **count > 0)
                        .map(|(key, _)| key.clone())
                        .collect();
                    let (channel, sink) = match live.len() {
                        0 => (channel, sink),
                        n if rng.below(4) > 0 => live[rng.below(n as u64) as usize].clone(),
                        _ => (channel, sink),
                    };
                    hub.unsubscribe(&channel, sink, Transport::Sse, now);
                    if let Some(count) = model.subscriptions.get_mut(&(channel.clone(), sink)) {
                        *count = count.saturating_sub(1);
                    }
                }
                _ => {
                    hub.expire(now);
                    for ch in hub.channels.by_name.values() {
                        for m in &ch.history {
                            assert!(now.duration_since(m.published_at) < limits.max_history_age);
                        }
                    }
                    // A channel with subscribers is never freed.
                    for ((c, _), count) in &model.subscriptions {
                        if *count > 0 {
                            assert!(hub.channels.by_name.contains_key(c));
                        }
                    }
                }
            }
            check_invariants(&hub);
            if model.cursors.len() > 200 {
                model.cursors.drain(..100);
            }
        }
    }
}

/// Issue #17 (server API `info`): a channel's figures, read without creating it.
#[test]
fn info_reads_a_channels_figures_without_creating_it() {
    let now = Instant::now();
    let mut hub = Hub::new(Limits::default(), 1);
    assert_eq!(hub.info(&name("a")), None);
    assert_eq!(hub.stats().channels, 0, "not created by asking");
    let epoch = publish_n(&mut hub, &name("a"), 3, now);
    hub.subscribe(&name("a"), Since::Tail, sink(0), Transport::Sse, now).unwrap();
    hub.subscribe(&name("a"), Since::Tail, sink(1), Transport::Sse, now).unwrap();
    hub.subscribe(&name("a"), Since::Tail, sink(1), Transport::WebSocket, now).unwrap();
    hub.subscribe(&name("a"), Since::Tail, sink(0), Transport::LongPoll, now).unwrap();
    hub.unsubscribe(&name("a"), sink(0), Transport::LongPoll, now);
    let info = hub.info(&name("a")).unwrap();
    assert_eq!(info.subscribers, 3);
    let by = info.by_transport;
    assert_eq!(
        (by.get(Transport::Sse), by.get(Transport::WebSocket), by.get(Transport::LongPoll)),
        (2, 1, 0)
    );
    assert_eq!((by.get(Transport::Stream), by.get(Transport::Poll), by.total()), (0, 0, 3));
    assert_eq!(info.last, Some(Cursor { epoch, offset: 3 }));
    assert_eq!(info.history_messages, 3);
    assert_eq!(info.history_bytes, Some(hub.stats().history_bytes));
}

/// Issue #17 (server API `channels`): names by prefix in byte order, a bounded page at a time.
#[test]
fn list_pages_names_by_prefix_in_byte_order() {
    let now = Instant::now();
    let mut hub = Hub::new(Limits::default(), 1);
    for n in ["b.2", "a", "b.1", "b.3", "c", "b.10"] {
        hub.read(&name(n), Since::Tail, 1, now).unwrap();
    }
    let page = hub.list("b.", None, 2);
    assert_eq!((page.channels.clone(), page.more), (vec![name("b.1"), name("b.10")], true));
    let page = hub.list("b.", Some("b.10"), 2);
    assert_eq!((page.channels.clone(), page.more), (vec![name("b.2"), name("b.3")], false));
    assert_eq!(hub.list("", None, 100).channels.len(), 6);
    assert!(hub.list("z", None, 5).channels.is_empty());
}
