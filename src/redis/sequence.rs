//! Delivery order and repair for one live channel on one node: what the broker delivers to
//! the event loops when pub/sub frames and history reads arrive, so every message goes out
//! once, in offset order, or after a hole the history can no longer fill.
//!
//! Implements the rules of the module docs of [`crate::redis`] as a state machine fed by the
//! broker ([`ChannelSequence::handle_live`] for each message frame from pub/sub,
//! [`ChannelSequence::handle_read`] for each reply of a read it asked for,
//! [`ChannelSequence::handle_resubscribed`] after its pub/sub connection came back) and
//! answering with [`SequenceAction`]s: deliver this message, or read the history after this
//! cursor. At most one read is in flight per channel.
//!
//! - Same epoch, offset at or below the last delivered: a duplicate, dropped.
//! - Same epoch, the next offset, no read in flight: delivered.
//! - A hole (a later offset), or any frame while a read is in flight: held (at most
//!   `max_held_messages`; beyond, dropped and fetched again later), and a read after the last
//!   delivered cursor is asked for. The read's messages are delivered first, page by page,
//!   then the held frames that follow them; if the history lost some (evicted, expired), the
//!   next message delivered is not `last + 1` and the loops report the gap
//!   ([`crate::transport`]'s feeds already signal a hole in the offsets as a gap).
//! - Another epoch (the channel restarted): treated as a hole; the read returns the new
//!   epoch's history and the loops see the epoch change as a gap. Frames of an epoch already
//!   left behind are dropped; a held frame of an epoch the read did not report causes one
//!   more read (it may be older or newer than the read).
//!
//! The first read (started by [`ChannelSequence::new`]'s action, sent once `SUBSCRIBE` is
//! confirmed) sets where live delivery starts: subscribe first, then read, then merge, so no
//! message published around the subscription is lost.
//!
//! Does not: per-subscriber catch-up from a client's cursor (each subscriber's own read, then
//! live deliveries after its `next`; the feeds skip what they already sent), I/O, timers
//! (a failed read is retried by the broker calling [`ChannelSequence::handle_read_failed`]
//! and then [`ChannelSequence::retry`] after its backoff).

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::hub::{Cursor, Epoch, Message, Since};
use crate::redis::script::ReadReply;

/// What the broker must do next for the channel.
#[derive(Debug, Clone)]
pub enum SequenceAction {
    /// Hand this message to the loops with subscribers, in this order.
    Deliver(Arc<Message>),
    /// Send the channel script's `read` after this point (with a page size of the broker's
    /// choice) and pass the reply to [`ChannelSequence::handle_read`].
    Read(Since),
}

/// The delivery state of one channel on one node.
#[derive(Debug)]
pub struct ChannelSequence {
    /// The last message delivered, or the point live delivery starts from; `None` until the
    /// first read answered.
    delivered: Option<Cursor>,
    /// Epochs this channel left behind (most recent last, a few kept): their frames are stale.
    retired: Vec<Epoch>,
    /// Frames received while a read is in flight or ahead of a hole, by (arrival order of
    /// epoch, offset); only frames not yet delivered.
    held: BTreeMap<(u64, u64), Arc<Message>>,
    /// Epochs of held frames in arrival order (index = first key part).
    held_epochs: Vec<Epoch>,
    max_held_messages: usize,
    /// Read again once the current read is answered: a held frame was dropped for lack of
    /// room, or pub/sub was cut while the read was in flight (its snapshot may predate frames
    /// lost in the cut).
    read_again: bool,
    /// A read is in flight.
    reading: bool,
}

/// Most retired epochs remembered.
const MAX_RETIRED_EPOCHS: usize = 4;

impl ChannelSequence {
    /// A channel just subscribed on pub/sub: holds live frames until the first read (from the
    /// tail) answers. Send the returned read once `SUBSCRIBE` is confirmed.
    pub fn new(max_held_messages: usize) -> (ChannelSequence, SequenceAction) {
        let sequence = ChannelSequence {
            delivered: None,
            retired: Vec::new(),
            held: BTreeMap::new(),
            held_epochs: Vec::new(),
            max_held_messages: max_held_messages.max(1),
            read_again: false,
            reading: true,
        };
        (sequence, SequenceAction::Read(Since::Tail))
    }

    /// The last cursor delivered (or where delivery starts), once known.
    pub fn delivered(&self) -> Option<Cursor> {
        self.delivered
    }

    /// Frames held, waiting for a read.
    pub fn held_len(&self) -> usize {
        self.held.len()
    }

    /// True while a read is in flight.
    pub fn is_reading(&self) -> bool {
        self.reading
    }

    /// A message frame from pub/sub.
    pub fn handle_live(&mut self, message: Arc<Message>, out: &mut Vec<SequenceAction>) {
        let id = message.id;
        if self.retired.contains(&id.epoch) {
            return;
        }
        if let Some(last) = self.delivered {
            if id.epoch == last.epoch && id.offset <= last.offset {
                return;
            }
            if !self.reading && id.epoch == last.epoch && id.offset == last.offset + 1 {
                self.delivered = Some(id);
                out.push(SequenceAction::Deliver(message));
                return;
            }
        }
        self.hold(message);
        if !self.reading {
            self.start_read(out);
        }
    }

    /// The reply to the read this sequence asked for.
    pub fn handle_read(&mut self, read: &ReadReply, out: &mut Vec<SequenceAction>) {
        self.reading = false;
        let replay = &read.replay;
        match self.delivered {
            // The first read: live delivery starts at the tail (nothing from before).
            None => self.delivered = Some(replay.next),
            Some(last) => {
                for message in &replay.messages {
                    self.deliver_if_new(message, out);
                }
                let now = self.delivered.unwrap_or(last);
                if replay.next.epoch != now.epoch {
                    // A new epoch with no history yet: start after its tail.
                    self.switch_epoch(replay.next);
                } else if replay.next.offset > now.offset && replay.messages.is_empty() {
                    // Everything up to the tail is gone: go on from the tail.
                    self.delivered = Some(replay.next);
                }
            }
        }
        let last = self.delivered.expect("set above");
        if replay.next.epoch == last.epoch && replay.next.offset < read.last_offset {
            // More pages.
            self.start_read(out);
            return;
        }
        // The read saw everything published before the held frames were received: deliver
        // the held frames of its epoch that follow, in order. A held frame of another epoch
        // is older than the read (the channel restarted before it ran) or newer (it
        // restarted after): the two cannot be told apart by value, so such frames are
        // dropped and one more read decides (a newer epoch's messages then come from its
        // history).
        let current = self.delivered.expect("set above").epoch;
        let held = std::mem::take(&mut self.held);
        let epochs = std::mem::take(&mut self.held_epochs);
        for ((epoch_index, _), message) in held {
            let epoch = epochs[epoch_index as usize];
            if epoch == current {
                self.deliver_if_new(&message, out);
            } else if !self.retired.contains(&epoch) {
                self.read_again = true;
            }
        }
        if std::mem::take(&mut self.read_again) {
            self.start_read(out);
        }
    }

    /// The read failed (the command connection was lost, or Redis answered an error): call
    /// [`ChannelSequence::retry`] after a backoff.
    pub fn handle_read_failed(&mut self) {
        self.reading = false;
    }

    /// Asks for the read again after a failure, if none is in flight.
    pub fn retry(&mut self, out: &mut Vec<SequenceAction>) {
        if !self.reading {
            self.start_read(out);
        }
    }

    /// The pub/sub connection was lost and this channel is subscribed again (confirmed):
    /// whatever was published meanwhile is read from the history.
    pub fn handle_resubscribed(&mut self, out: &mut Vec<SequenceAction>) {
        if self.reading {
            self.read_again = true;
        } else {
            self.start_read(out);
        }
    }

    fn start_read(&mut self, out: &mut Vec<SequenceAction>) {
        self.reading = true;
        out.push(SequenceAction::Read(self.delivered.map_or(Since::Tail, Since::After)));
    }

    /// Delivers `message` if it comes after what was delivered (a later offset of the same
    /// epoch, or a message of a newer epoch), and records it.
    fn deliver_if_new(&mut self, message: &Arc<Message>, out: &mut Vec<SequenceAction>) {
        let id = message.id;
        if self.retired.contains(&id.epoch) {
            return;
        }
        match self.delivered {
            Some(last) if last.epoch == id.epoch && id.offset <= last.offset => {}
            Some(last) if last.epoch != id.epoch => {
                self.retire(last.epoch);
                self.delivered = Some(id);
                out.push(SequenceAction::Deliver(Arc::clone(message)));
            }
            _ => {
                self.delivered = Some(id);
                out.push(SequenceAction::Deliver(Arc::clone(message)));
            }
        }
    }

    fn switch_epoch(&mut self, tail: Cursor) {
        if let Some(last) = self.delivered {
            self.retire(last.epoch);
        }
        self.delivered = Some(tail);
    }

    fn retire(&mut self, epoch: Epoch) {
        if !self.retired.contains(&epoch) {
            if self.retired.len() == MAX_RETIRED_EPOCHS {
                self.retired.remove(0);
            }
            self.retired.push(epoch);
        }
    }

    fn hold(&mut self, message: Arc<Message>) {
        let epoch = message.id.epoch;
        let index = match self.held_epochs.iter().position(|&e| e == epoch) {
            Some(index) => index,
            None => {
                self.held_epochs.push(epoch);
                self.held_epochs.len() - 1
            }
        };
        if self.held.len() >= self.max_held_messages {
            self.read_again = true;
            return;
        }
        self.held.insert((index as u64, message.id.offset), message);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::{ChannelName, Payload, Replay};
    use std::time::Instant;

    const A: Epoch = Epoch(0xa);
    const B: Epoch = Epoch(0xb);

    fn message(epoch: Epoch, offset: u64) -> Arc<Message> {
        Arc::new(Message::new(
            ChannelName::parse("c").unwrap(),
            Cursor { epoch, offset },
            None,
            Payload::Text(Arc::from("x")),
            Instant::now(),
        ))
    }

    fn read(epoch: Epoch, last: u64, offsets: &[u64], gap: bool, next: u64) -> ReadReply {
        ReadReply {
            replay: Replay {
                messages: offsets.iter().map(|&o| message(epoch, o)).collect(),
                gap,
                next: Cursor { epoch, offset: next },
            },
            last_offset: last,
            new_epoch: false,
        }
    }

    fn delivered(out: &[SequenceAction]) -> Vec<(u64, u64)> {
        out.iter()
            .filter_map(|a| match a {
                SequenceAction::Deliver(m) => Some((m.id.epoch.0, m.id.offset)),
                SequenceAction::Read(_) => None,
            })
            .collect()
    }

    fn reads(out: &[SequenceAction]) -> Vec<Since> {
        out.iter()
            .filter_map(|a| match a {
                SequenceAction::Read(since) => Some(*since),
                SequenceAction::Deliver(_) => None,
            })
            .collect()
    }

    fn after(epoch: Epoch, offset: u64) -> Since {
        Since::After(Cursor { epoch, offset })
    }

    /// A sequence that started at A:5.
    fn started() -> ChannelSequence {
        let (mut s, first) = ChannelSequence::new(100);
        assert!(matches!(first, SequenceAction::Read(Since::Tail)));
        let mut out = Vec::new();
        s.handle_read(&read(A, 5, &[], false, 5), &mut out);
        assert!(out.is_empty());
        s
    }

    #[test]
    fn subscribe_then_read_then_merge_holds_live_frames_until_the_first_read() {
        let (mut s, _) = ChannelSequence::new(100);
        let mut out = Vec::new();
        // Published after SUBSCRIBE, before the tail read ran: 6; after it ran: nothing else.
        s.handle_live(message(A, 6), &mut out);
        assert!(out.is_empty(), "held, no second read while the first is in flight");
        // The tail read ran before 6 was published: tail A:5.
        s.handle_read(&read(A, 5, &[], false, 5), &mut out);
        assert_eq!(delivered(&out), [(0xa, 6)]);
        // Or it ran after: tail A:6, and the held 6 is a duplicate.
        let (mut s, _) = ChannelSequence::new(100);
        let mut out = Vec::new();
        s.handle_live(message(A, 6), &mut out);
        s.handle_read(&read(A, 6, &[], false, 6), &mut out);
        assert!(delivered(&out).is_empty());
        assert_eq!(s.delivered(), Some(Cursor { epoch: A, offset: 6 }));
    }

    #[test]
    fn in_order_frames_are_delivered_and_duplicates_dropped() {
        let mut s = started();
        let mut out = Vec::new();
        for offset in [6, 7, 7, 5, 8] {
            s.handle_live(message(A, offset), &mut out);
        }
        assert_eq!(delivered(&out), [(0xa, 6), (0xa, 7), (0xa, 8)]);
        assert!(reads(&out).is_empty());
    }

    #[test]
    fn a_hole_is_filled_from_the_history_before_the_held_frames() {
        let mut s = started();
        let mut out = Vec::new();
        s.handle_live(message(A, 8), &mut out);
        s.handle_live(message(A, 9), &mut out);
        assert_eq!(reads(&out), [after(A, 5)], "one read for the hole");
        assert!(delivered(&out).is_empty());
        out.clear();
        // The read returns 6..=9 (8 and 9 are also held: delivered once).
        s.handle_read(&read(A, 9, &[6, 7, 8, 9], false, 9), &mut out);
        assert_eq!(delivered(&out), [(0xa, 6), (0xa, 7), (0xa, 8), (0xa, 9)]);
        assert_eq!(s.held_len(), 0);
    }

    #[test]
    fn a_hole_the_history_lost_is_passed_on_for_the_gap() {
        let mut s = started();
        let mut out = Vec::new();
        s.handle_live(message(A, 9), &mut out);
        out.clear();
        // 6..=7 evicted: the read returns 8..=9 with a gap.
        s.handle_read(&read(A, 9, &[8, 9], true, 9), &mut out);
        assert_eq!(delivered(&out), [(0xa, 8), (0xa, 9)], "the loops see 5 then 8: a gap");
    }

    #[test]
    fn reads_page_until_the_last_offset() {
        let mut s = started();
        let mut out = Vec::new();
        s.handle_live(message(A, 10), &mut out);
        out.clear();
        s.handle_read(&read(A, 10, &[6, 7], false, 7), &mut out);
        assert_eq!(delivered(&out), [(0xa, 6), (0xa, 7)]);
        assert_eq!(reads(&out), [after(A, 7)]);
        // A live frame during the paging is held, not delivered out of order.
        s.handle_live(message(A, 11), &mut out);
        out.clear();
        s.handle_read(&read(A, 10, &[8, 9, 10], false, 10), &mut out);
        assert_eq!(delivered(&out), [(0xa, 8), (0xa, 9), (0xa, 10), (0xa, 11)]);
    }

    #[test]
    fn a_new_epoch_is_read_and_old_frames_are_dropped_after() {
        let mut s = started();
        let mut out = Vec::new();
        s.handle_live(message(B, 2), &mut out);
        assert_eq!(reads(&out), [after(A, 5)]);
        out.clear();
        // Another epoch than the cursor's: the script returns B's history from the start.
        s.handle_read(&read(B, 2, &[1, 2], true, 2), &mut out);
        assert_eq!(delivered(&out), [(0xb, 1), (0xb, 2)]);
        out.clear();
        // A late frame of A is stale; B goes on.
        s.handle_live(message(A, 6), &mut out);
        s.handle_live(message(B, 3), &mut out);
        assert_eq!(delivered(&out), [(0xb, 3)]);
    }

    #[test]
    fn a_new_epoch_with_empty_history_starts_at_its_tail() {
        let mut s = started();
        let mut out = Vec::new();
        s.handle_resubscribed(&mut out);
        assert_eq!(reads(&out), [after(A, 5)]);
        out.clear();
        s.handle_read(&read(B, 0, &[], true, 0), &mut out);
        assert!(out.is_empty());
        assert_eq!(s.delivered(), Some(Cursor { epoch: B, offset: 0 }));
        s.handle_live(message(B, 1), &mut out);
        assert_eq!(delivered(&out), [(0xb, 1)]);
    }

    #[test]
    fn held_frames_are_bounded_and_refetched() {
        let (mut s, _) = ChannelSequence::new(2);
        let mut out = Vec::new();
        s.handle_read(&read(A, 5, &[], false, 5), &mut out);
        for offset in 7..=10 {
            s.handle_live(message(A, offset), &mut out);
        }
        assert_eq!(s.held_len(), 2);
        assert_eq!(reads(&out), [after(A, 5)]);
        out.clear();
        // The read saw up to 8 only (9 and 10 published after it ran).
        s.handle_read(&read(A, 8, &[6, 7, 8], false, 8), &mut out);
        assert_eq!(delivered(&out), [(0xa, 6), (0xa, 7), (0xa, 8)]);
        assert_eq!(reads(&out), [after(A, 8)], "the dropped frames are read again");
        out.clear();
        s.handle_read(&read(A, 10, &[9, 10], false, 10), &mut out);
        assert_eq!(delivered(&out), [(0xa, 9), (0xa, 10)]);
    }

    #[test]
    fn a_failed_read_is_retried_on_request() {
        let mut s = started();
        let mut out = Vec::new();
        s.handle_live(message(A, 7), &mut out);
        s.handle_read_failed();
        assert!(!s.is_reading());
        out.clear();
        s.retry(&mut out);
        assert_eq!(reads(&out), [after(A, 5)]);
        s.retry(&mut out);
        assert_eq!(reads(&out).len(), 1, "one read in flight");
    }

    /// A model channel: epochs restart at random, the history keeps the last `keep` messages,
    /// pub/sub drops frames at random (a cut connection). Every message the history still held
    /// when a read ran is delivered once, and the delivered ids increase within an epoch.
    #[test]
    fn sequence_model_delivers_once_in_order() {
        let seed = std::cell::Cell::new(0x9e37_79b9_7f4a_7c15u64);
        let rand = |n: u64| {
            let mut x = seed.get();
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            seed.set(x);
            x % n
        };
        for round in 0..200 {
            let keep = 1 + rand(6);
            let mut epoch = Epoch(1000 + round);
            let mut log: Vec<Arc<Message>> = Vec::new();
            let (mut s, _) = ChannelSequence::new(1 + rand(4) as usize);
            let mut out = Vec::new();
            let mut pending_read: Option<Since> = None;
            let answer = |s: &mut ChannelSequence, log: &[Arc<Message>], epoch: Epoch, since: Since| {
                let last = log.last().map_or(0, |m| m.id.offset);
                let history: Vec<&Arc<Message>> = log.iter().rev().take(keep as usize).rev().collect();
                let page = 1 + rand(3) as usize;
                let (messages, gap, next): (Vec<Arc<Message>>, bool, u64) = match since {
                    Since::Tail => (vec![], false, last),
                    Since::After(c) if c.epoch != epoch => {
                        let m: Vec<_> = history.iter().take(page).map(|m| Arc::clone(m)).collect();
                        let next = m.last().map_or(last, |m| m.id.offset);
                        (m, true, next)
                    }
                    Since::After(c) if c.offset >= last => (vec![], c.offset > last, last),
                    Since::After(c) => {
                        let m: Vec<_> = history
                            .iter()
                            .filter(|m| m.id.offset > c.offset)
                            .take(page)
                            .map(|m| Arc::clone(m))
                            .collect();
                        let gap = m.first().is_none_or(|f| f.id.offset != c.offset + 1);
                        let next = m.last().map_or(last, |m| m.id.offset);
                        (m, gap, next)
                    }
                };
                let mut o = Vec::new();
                let reply = ReadReply {
                    replay: Replay { messages, gap, next: Cursor { epoch, offset: next } },
                    last_offset: last,
                    new_epoch: false,
                };
                s.handle_read(&reply, &mut o);
                o
            };
            let mut delivered_ids: Vec<Cursor> = Vec::new();
            let mut cut = false;
            let mut actions = vec![SequenceAction::Read(Since::Tail)];
            for _ in 0..60 {
                for action in actions.drain(..) {
                    match action {
                        SequenceAction::Deliver(m) => delivered_ids.push(m.id),
                        SequenceAction::Read(since) => {
                            assert!(pending_read.is_none(), "one read in flight");
                            pending_read = Some(since);
                        }
                    }
                }
                match rand(10) {
                    0 => {
                        epoch = Epoch(epoch.0 + 1_000_000);
                        log.clear();
                    }
                    1..=5 => {
                        let offset = log.last().map_or(1, |m| m.id.offset + 1);
                        let m = message(epoch, offset);
                        log.push(Arc::clone(&m));
                        // Pub/sub loses frames only while its connection is cut.
                        if rand(4) != 0 && !cut {
                            s.handle_live(m, &mut out);
                        } else {
                            cut = true;
                        }
                    }
                    6 if cut => {
                        cut = false;
                        s.handle_resubscribed(&mut out);
                    }
                    _ => {
                        if let Some(since) = pending_read.take() {
                            out.extend(answer(&mut s, &log, epoch, since));
                        }
                    }
                }
                actions.append(&mut out);
            }
            // Drain: reconnect, then answer reads until none is asked for.
            if cut {
                s.handle_resubscribed(&mut actions);
            }
            for _ in 0..100 {
                for action in actions.drain(..) {
                    match action {
                        SequenceAction::Deliver(m) => delivered_ids.push(m.id),
                        SequenceAction::Read(since) => pending_read = Some(since),
                    }
                }
                match pending_read.take() {
                    Some(since) => actions = answer(&mut s, &log, epoch, since),
                    None => break,
                }
            }
            // Within an epoch, strictly increasing; no id twice.
            for w in delivered_ids.windows(2) {
                if w[0].epoch == w[1].epoch {
                    assert!(w[1].offset > w[0].offset, "round {round}: {delivered_ids:?}");
                }
            }
            let mut unique = delivered_ids.clone();
            unique.sort_by_key(|c| (c.epoch.0, c.offset));
            unique.dedup();
            assert_eq!(unique.len(), delivered_ids.len(), "round {round}: duplicates");
            // Caught up: the sequence stands at the newest message (the history always keeps it).
            if let Some(last) = log.last() {
                assert_eq!(s.delivered(), Some(last.id), "round {round}: caught up");
                // ... and delivered, unless it came before the first read's tail.
                if delivered_ids.iter().any(|c| c.epoch == epoch) {
                    assert_eq!(delivered_ids.iter().rev().find(|c| c.epoch == epoch), Some(&last.id));
                }
            }
        }
    }
}
