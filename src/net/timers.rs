//! Connection deadlines: a min-heap with lazy deletion.
//!
//! A connection's deadline moves often (every request resets its idle timer), so entries are
//! never removed: the loop remembers the earliest time it scheduled for each connection, pushes
//! only earlier ones, and when an entry fires asks the connection for its current deadline.
//! That keeps at most a couple of entries per connection. Each entry carries the connection's
//! generation, so a timer of a closed connection never fires on the slab slot's next tenant.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

/// A connection's slab key and generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnId {
    /// Slab key.
    pub key: usize,
    /// Generation of the connection in that slot.
    pub generation: u32,
}

/// Pending deadlines, earliest first.
#[derive(Debug, Default)]
pub struct Timers {
    heap: BinaryHeap<Reverse<(Instant, ConnId)>>,
}

impl Timers {
    /// Schedules `id` at `at`.
    pub fn push(&mut self, at: Instant, id: ConnId) {
        self.heap.push(Reverse((at, id)));
    }

    /// The earliest deadline, if any.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    /// Removes and returns one entry due at or before `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<(Instant, ConnId)> {
        if self.next_deadline()? <= now {
            self.heap.pop().map(|Reverse(entry)| entry)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn pops_in_deadline_order_only_when_due() {
        let t0 = Instant::now();
        let mut timers = Timers::default();
        let a = ConnId { key: 1, generation: 1 };
        let b = ConnId { key: 2, generation: 7 };
        timers.push(t0 + Duration::from_secs(2), a);
        timers.push(t0 + Duration::from_secs(1), b);
        assert_eq!(timers.next_deadline(), Some(t0 + Duration::from_secs(1)));
        assert_eq!(timers.pop_due(t0), None);
        assert_eq!(timers.pop_due(t0 + Duration::from_secs(5)).map(|e| e.1), Some(b));
        assert_eq!(timers.pop_due(t0 + Duration::from_secs(5)).map(|e| e.1), Some(a));
        assert_eq!(timers.pop_due(t0 + Duration::from_secs(5)), None);
    }
}
