//! Where a connection lives, as the hub and its backends name it: its event loop ([`SinkId`])
//! and its slot there with the slot's generation.
//!
//! Implements: [`ConnId`] and [`ConnAddr`], small `Copy` keys for tables (fan-out, timers,
//! presence members).
//!
//! Does not: know anything of connections beyond their address.

use super::SinkId;

/// A connection's slab key and generation, in 8 bytes: the timer heap, the fan-out table and
/// the loop's lists hold one per entry. The slab key fits 32 bits, as in the poll token (which
/// holds it in its low 32 bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnId {
    key: u32,
    /// Generation of the connection in that slot.
    pub generation: u32,
}

impl ConnId {
    /// The connection in slab slot `key` of generation `generation`.
    pub fn new(key: usize, generation: u32) -> Self {
        ConnId { key: key as u32, generation }
    }

    /// Its slab key.
    pub fn key(self) -> usize {
        self.key as usize
    }
}

/// Where a connection lives: its event loop and its slot there. A reply submitted for it goes
/// to that loop's inbox; the generation tells a reply for a closed connection from one for the
/// slot's next tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnAddr {
    /// The event loop.
    pub sink: SinkId,
    /// The connection on that loop.
    pub conn: ConnId,
}
