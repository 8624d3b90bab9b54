//! Where a connection lives, as the hub and its backends name it: its event loop ([`SinkId`])
//! and its slot there with the slot's generation.
//!
//! Implements: [`ConnId`] and [`ConnAddr`], small `Copy` keys for tables (fan-out, timers,
//! presence members).
//!
//! Does not: know anything of connections beyond their address.

use super::{ChannelName, SinkId};

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

/// Which connections a server API `disconnect` ends, and what they are told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disconnect {
    /// The connections to end.
    pub target: DisconnectTarget,
    /// The WebSocket close code (a 4xxx private-use code, RFC 6455 §7.4.2).
    pub code: u16,
    /// The close reason (within a close frame's 123 bytes); other transports end their
    /// response.
    pub reason: Box<str>,
    /// Set: only unsubscribe the connections from this channel (a command-mode WebSocket is
    /// told with an `unsubscribe` notice) instead of closing them.
    pub channel: Option<ChannelName>,
    /// The node a `Conn` target's id named (the Redis backend's `NODE-CONN` form): the Redis
    /// backend applies it on that node only. `None`: this node (an id without a node part)
    /// or, for a user, every node. The in-memory hub ignores it.
    pub node: Option<u64>,
}

/// A connection by its address, or every connection of a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DisconnectTarget {
    /// One connection (its presence id names it).
    Conn(ConnAddr),
    /// Every connection whose signed token's `sub` is this user id.
    User(Box<str>),
}
