//! Hands each connection's answers over in the order of its requests, whatever order the
//! broker learns them in.
//!
//! The loops match a connection's answers to its commands in order (one FIFO of pending
//! commands per connection, `transport/rooms.rs`; an HTTP keep-alive connection answers its
//! requests in order too), but the broker learns them out of that order in two cases: a
//! request refused without reaching Redis (pipeline or queue full, not connected, too large)
//! is answered at once, ahead of the same connection's requests still in the pipeline; and a
//! request answered `NOSCRIPT` or with an epoch collision is sent again at the end of the
//! pipeline, behind the same connection's later requests, which Redis may run and answer
//! first (a `SCRIPT FLUSH`, restart or failover empties the script cache; the first `EVAL`
//! re-sent loads the script again, so a later `EVALSHA` already in the pipeline succeeds).
//!
//! Each request whose answer is ordered takes a ticket from [`AnswerOrder::ticket`] when the
//! broker takes it; [`AnswerOrder::answer`] gives its answer back to hand over at once if every
//! earlier ticket of the connection has been handed over, else keeps it until then
//! ([`AnswerOrder::next_ready`]). Pure bookkeeping: no I/O, no clock.
//!
//! Does not: order the execution in Redis (a re-sent publish is stored after the same
//! connection's later publishes that ran before it, so its cursor is higher than theirs),
//! or order requests that take no ticket (a subscribe, answered once its channel is live).

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;

/// The tickets and early answers of every connection with a request in the broker.
#[derive(Debug)]
pub(super) struct AnswerOrder<K, T> {
    lines: HashMap<K, Line<T>>,
}

/// One connection's tickets.
#[derive(Debug)]
struct Line<T> {
    /// The ticket the connection's next request takes.
    next: u64,
    /// The ticket whose answer is handed over next.
    head: u64,
    /// Answers in before the head's, by ticket (at most one per request in the broker).
    early: BTreeMap<u64, T>,
}

impl<K: Hash + Eq + Copy, T> AnswerOrder<K, T> {
    pub(super) fn new() -> AnswerOrder<K, T> {
        AnswerOrder { lines: HashMap::new() }
    }

    /// The ticket of the connection `key`'s next request (taken in the order of its requests).
    pub(super) fn ticket(&mut self, key: K) -> u64 {
        let line = self.lines.entry(key).or_insert_with(|| Line { next: 0, head: 0, early: BTreeMap::new() });
        line.next += 1;
        line.next - 1
    }

    /// The answer to the request that took `ticket`: given back to hand over now when it is
    /// the connection's next one (then call [`AnswerOrder::next_ready`] until `None`), else
    /// kept until the earlier ones are in.
    pub(super) fn answer(&mut self, key: K, ticket: u64, answer: T) -> Option<T> {
        let Some(line) = self.lines.get_mut(&key) else { return Some(answer) };
        if ticket == line.head {
            line.head += 1;
            return Some(answer);
        }
        line.early.insert(ticket, answer);
        None
    }

    /// After an answer of `key` was handed over: the connection's next one if it is in (hand
    /// it over and call again), else `None` (and a connection with nothing left is forgotten).
    pub(super) fn next_ready(&mut self, key: K) -> Option<T> {
        let line = self.lines.get_mut(&key)?;
        if let Some(answer) = line.early.remove(&line.head) {
            line.head += 1;
            return Some(answer);
        }
        if line.head == line.next {
            self.lines.remove(&key);
        }
        None
    }

    /// Connections with a request whose answer is not handed over yet.
    #[cfg(test)]
    fn connections(&self) -> usize {
        self.lines.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Answers `ticket` and returns everything handed over as a result, in order.
    fn answer(
        order: &mut AnswerOrder<u8, &'static str>,
        key: u8,
        ticket: u64,
        a: &'static str,
    ) -> Vec<&'static str> {
        let mut out = Vec::new();
        let mut next = order.answer(key, ticket, a);
        while let Some(a) = next {
            out.push(a);
            next = order.next_ready(key);
        }
        out
    }

    /// A re-sent request (ticket 0) answered after the connection's later ones: they wait for
    /// it and are handed over after it, in ticket order; another connection is not held.
    #[test]
    fn later_answers_wait_for_an_earlier_one_then_come_in_ticket_order() {
        let mut order = AnswerOrder::new();
        let tickets: Vec<u64> = (0..4).map(|_| order.ticket(1)).collect();
        assert_eq!(tickets, [0, 1, 2, 3]);
        let other = order.ticket(2);
        assert_eq!(answer(&mut order, 1, 2, "c"), Vec::<&str>::new());
        assert_eq!(answer(&mut order, 1, 1, "b"), Vec::<&str>::new());
        assert_eq!(answer(&mut order, 2, other, "x"), ["x"], "another connection is not held");
        assert_eq!(answer(&mut order, 1, 0, "a"), ["a", "b", "c"]);
        assert_eq!(order.connections(), 1, "ticket 3 still out");
        assert_eq!(answer(&mut order, 1, 3, "d"), ["d"]);
        assert_eq!(order.connections(), 0, "nothing kept once every answer is out");
    }

    /// In order, every answer is handed over at once and nothing is kept.
    #[test]
    fn answers_in_order_are_handed_over_at_once() {
        let mut order = AnswerOrder::new();
        for _ in 0..3 {
            let t = order.ticket(7);
            assert_eq!(answer(&mut order, 7, t, "a"), ["a"]);
            assert_eq!(order.connections(), 0);
        }
        let (t0, t1) = (order.ticket(7), order.ticket(7));
        assert_eq!(answer(&mut order, 7, t0, "a"), ["a"]);
        assert_eq!(order.connections(), 1);
        assert_eq!(answer(&mut order, 7, t1, "b"), ["b"]);
        assert_eq!(order.connections(), 0);
    }
}
