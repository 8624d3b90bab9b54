//! Connection deadlines: a min-heap with lazy deletion.
//!
//! A connection's deadline moves often (every request resets its idle timer), so entries are
//! never removed: the loop remembers the earliest time it scheduled for each connection, pushes
//! only earlier ones, and when an entry fires asks the connection for its current deadline.
//! That keeps at most a couple of entries per connection. Each entry carries the connection's
//! generation, so a timer of a closed connection never fires on the slab slot's next tenant.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::num::NonZeroU64;
use std::time::{Duration, Instant};

pub use crate::hub::backend::ConnId;

/// A deadline as whole milliseconds after the heap's base instant, rounded up (so it never
/// fires early), plus one so that `Option<Tick>` is 8 bytes. 64 bits: it never wraps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Tick(NonZeroU64);

/// One heap entry: 16 bytes.
type Entry = Reverse<(Tick, ConnId)>;

/// Pending deadlines, earliest first.
#[derive(Debug)]
pub struct Timers {
    base: Instant,
    heap: BinaryHeap<Entry>,
}

impl Timers {
    /// An empty heap counting ticks from `base` (deadlines before it count as `base`).
    pub fn new(base: Instant) -> Self {
        Timers { base, heap: BinaryHeap::new() }
    }

    /// The tick of `at`: the first millisecond boundary at or after it.
    pub fn tick(&self, at: Instant) -> Tick {
        let since = at.saturating_duration_since(self.base);
        let millis = since.as_millis() + u128::from(!since.subsec_nanos().is_multiple_of(1_000_000));
        let millis = u64::try_from(millis).unwrap_or(u64::MAX - 1);
        Tick(NonZeroU64::MIN.saturating_add(millis))
    }

    /// The instant a tick stands for.
    pub fn instant(&self, tick: Tick) -> Instant {
        self.base + Duration::from_millis(tick.0.get() - 1)
    }

    /// Schedules `id` at `at` (see [`Timers::tick`]).
    pub fn push(&mut self, at: Tick, id: ConnId) {
        self.heap.push(Reverse((at, id)));
    }

    /// The earliest deadline, if any.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _))| self.instant(*at))
    }

    /// Removes and returns one entry due at or before `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<(Tick, ConnId)> {
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
        let mut timers = Timers::new(t0);
        let a = ConnId::new(1, 1);
        let b = ConnId::new(2, 7);
        timers.push(timers.tick(t0 + Duration::from_secs(2)), a);
        timers.push(timers.tick(t0 + Duration::from_secs(1)), b);
        assert_eq!(timers.next_deadline(), Some(t0 + Duration::from_secs(1)));
        assert_eq!(timers.pop_due(t0), None);
        assert_eq!(timers.pop_due(t0 + Duration::from_secs(5)).map(|e| e.1), Some(b));
        assert_eq!(timers.pop_due(t0 + Duration::from_secs(5)).map(|e| e.1), Some(a));
        assert_eq!(timers.pop_due(t0 + Duration::from_secs(5)), None);
    }

    #[test]
    fn ticks_round_up_so_a_deadline_never_fires_early() {
        let t0 = Instant::now();
        let mut timers = Timers::new(t0);
        let at = t0 + Duration::from_micros(1_500);
        timers.push(timers.tick(at), ConnId::new(3, 2));
        assert_eq!(timers.next_deadline(), Some(t0 + Duration::from_millis(2)));
        assert_eq!(timers.pop_due(at), None);
        assert!(timers.pop_due(t0 + Duration::from_millis(2)).is_some());
        assert!(timers.tick(t0) < timers.tick(at));
        assert_eq!(timers.tick(t0 - Duration::from_millis(5)), timers.tick(t0));
        assert_eq!(std::mem::size_of::<Option<Tick>>(), 8);
        assert_eq!(std::mem::size_of::<Entry>(), 16);
    }
}
