//! Presence: who is subscribed to each channel right now, and the join and leave events that
//! subscribers who opted in receive (issue #13 item 3; Centrifugo's presence and join/leave).
//!
//! Implements: per channel a member table keyed by connection ([`ConnAddr`]), each member with
//! the user id of its token (when authenticated) and the client-supplied `info` (a JSON
//! object's text, bounded by [`PresenceLimits::max_info_bytes`]); the count; and a
//! [`PresenceEvent`] for every join and every leave, addressed to the channel's other members
//! that asked for them (`joins: true`). A member is one subscription: a connection on three
//! channels is a member of three tables. A connection that subscribes twice to one channel is
//! refused ([`PresenceError::AlreadyMember`]): the connection's channel set refuses that first.
//!
//! Memory bounds: at most [`PresenceLimits::max_members_per_channel`] members per channel and
//! `max_info_bytes` per member, both checked before anything is allocated. The number of
//! channel tables is at most the number of live subscriptions (a table is freed with its last
//! member), itself bounded by connections × `max_channels_per_connection`.
//!
//! Wired into the in-memory hub: [`super::Hub`] holds one [`Presence`], which
//! [`super::Command::apply`] joins on a `SubscribeMember` and leaves on every `Unsubscribe`.
//!
//! Never leaks: [`Presence::leave`] is called with every `Unsubscribe` the loop submits, and the
//! loop submits one for each channel a connection held on every way a subscription ends
//! (unsubscribe command, close, timeout, slow-consumer close, drain; see `hub/backend.rs`
//! "Ownership of a subscription"). [`Presence::leave_sink`] drops every member of an event loop
//! at once (a loop that stops). A test drives random joins, leaves and kills against a model.
//!
//! Does not: encode presence for a wire (the transport does, `transport/rooms.rs`), decide who
//! may see it (`transport/policy.rs`, `transport/token.rs`), or expire members of dead nodes
//! (a single process's members leave with their connections; see `redis/presence.rs` for the
//! cluster-wide table with expiry).

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use super::addr::ConnAddr;
use super::ChannelName;

/// Bounds on the presence tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PresenceLimits {
    /// Most members one channel's table holds; a subscribe beyond is refused
    /// ([`PresenceError::ChannelFull`]). Default 10 000 (a presence list of that size is about
    /// 1 MiB of JSON at the default info size: larger rooms should not list members).
    pub max_members_per_channel: usize,
    /// Longest `info` of one member, in bytes of its JSON text; longer is refused
    /// ([`PresenceError::InfoTooLarge`]). Default 256.
    pub max_info_bytes: usize,
    /// How long a member stays in a presence table shared by several nodes (Redis,
    /// `redis/presence.rs`) without its node refreshing it: a node refreshes its members every
    /// third of it, so a node that dies (kill -9) leaves no member longer than this after its
    /// last refresh. Unused by the in-memory hub (its members leave with their connections).
    /// Default 30 s.
    pub member_ttl: Duration,
}

impl Default for PresenceLimits {
    fn default() -> PresenceLimits {
        PresenceLimits {
            max_members_per_channel: 10_000,
            max_info_bytes: 256,
            member_ttl: Duration::from_secs(30),
        }
    }
}

/// One member of a channel's presence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The node the connection lives on: 0 for this process's own hub; the node id drawn at
    /// start by each node of a Redis deployment (so members of different nodes differ).
    pub node: u64,
    /// The connection (on `node`).
    pub conn: ConnAddr,
    /// The user id of the connection's token, when it has one.
    pub user: Option<Box<str>>,
    /// Client-supplied presence data: a JSON object's text.
    pub info: Option<Box<str>>,
    /// The member receives join and leave events of the channel.
    pub joins: bool,
}

/// What a subscriber shows in presence when it joins (a [`Member`] without its connection,
/// which the hub knows from the command's sender).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joining {
    /// The user id of the token that granted the subscription.
    pub user: Option<Box<str>>,
    /// Client-supplied presence data: a JSON object's text.
    pub info: Option<Box<str>>,
    /// The member receives join and leave events of the channel.
    pub joins: bool,
}

/// Why a join was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PresenceError {
    /// The channel already has [`PresenceLimits::max_members_per_channel`] members.
    ChannelFull,
    /// The member's info is over [`PresenceLimits::max_info_bytes`].
    InfoTooLarge,
    /// The connection is already a member of the channel.
    AlreadyMember,
}

impl fmt::Display for PresenceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PresenceError::ChannelFull => "the channel has too many members",
            PresenceError::InfoTooLarge => "info is too large",
            PresenceError::AlreadyMember => "already subscribed",
        })
    }
}

impl std::error::Error for PresenceError {}

/// Whether a member came or went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// It subscribed.
    Join,
    /// Its subscription ended.
    Leave,
}

/// A join or leave, and the connections to tell (the channel's other members with
/// `joins: true`, in no particular order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceEvent {
    /// The channel.
    pub channel: ChannelName,
    /// Join or leave.
    pub change: Change,
    /// Who joined or left (for a leave: as it was when it joined).
    pub member: Member,
    /// The connections that asked for join and leave events, the member itself excluded.
    pub notify: Vec<ConnAddr>,
}

/// The presence tables of every channel.
#[derive(Debug, Default)]
pub struct Presence {
    limits: PresenceLimits,
    channels: HashMap<ChannelName, Table>,
}

#[derive(Debug, Default)]
struct Table {
    members: HashMap<ConnAddr, Entry>,
    /// How many members have `joins: true` (so a channel nobody watches costs no scan).
    watchers: usize,
}

#[derive(Debug, Clone)]
struct Entry {
    user: Option<Box<str>>,
    info: Option<Box<str>>,
    joins: bool,
}

impl Presence {
    /// Empty tables with these limits.
    pub fn new(limits: PresenceLimits) -> Presence {
        Presence { limits, channels: HashMap::new() }
    }

    /// Adds `member` to `channel`. Returns the join event (with nobody to notify when no other
    /// member asked for joins). The limits are checked before anything is allocated.
    pub fn join(&mut self, channel: &ChannelName, member: Member) -> Result<PresenceEvent, PresenceError> {
        if member.info.as_ref().is_some_and(|info| info.len() > self.limits.max_info_bytes) {
            return Err(PresenceError::InfoTooLarge);
        }
        if let Some(table) = self.channels.get(channel) {
            if table.members.contains_key(&member.conn) {
                return Err(PresenceError::AlreadyMember);
            }
            if table.members.len() >= self.limits.max_members_per_channel {
                return Err(PresenceError::ChannelFull);
            }
        }
        let table = self.channels.entry(channel.clone()).or_default();
        let entry = Entry { user: member.user.clone(), info: member.info.clone(), joins: member.joins };
        table.watchers += usize::from(member.joins);
        table.members.insert(member.conn, entry);
        let notify = watchers_except(table, member.conn);
        Ok(PresenceEvent { channel: channel.clone(), change: Change::Join, member, notify })
    }

    /// Removes the connection from `channel`. Returns the leave event, or `None` when it was
    /// not a member (a refused or never-acknowledged subscription: nothing to undo).
    pub fn leave(&mut self, channel: &ChannelName, conn: ConnAddr) -> Option<PresenceEvent> {
        let table = self.channels.get_mut(channel)?;
        let entry = table.members.remove(&conn)?;
        table.watchers -= usize::from(entry.joins);
        let notify = watchers_except(table, conn);
        if table.members.is_empty() {
            self.channels.remove(channel);
        }
        let member = Member { node: 0, conn, user: entry.user, info: entry.info, joins: entry.joins };
        Some(PresenceEvent { channel: channel.clone(), change: Change::Leave, member, notify })
    }

    /// Removes every member living on event loop `sink` (the loop stopped), with their leave
    /// events. Scans every table: for shutdown, not for the path of one connection.
    pub fn leave_sink(&mut self, sink: super::SinkId) -> Vec<PresenceEvent> {
        let gone: Vec<(ChannelName, ConnAddr)> = self
            .channels
            .iter()
            .flat_map(|(channel, table)| {
                table.members.keys().filter(|c| c.sink == sink).map(move |&c| (channel.clone(), c))
            })
            .collect();
        gone.into_iter().filter_map(|(channel, conn)| self.leave(&channel, conn)).collect()
    }

    /// How many members `channel` has.
    pub fn count(&self, channel: &ChannelName) -> usize {
        self.channels.get(channel).map_or(0, |t| t.members.len())
    }

    /// The members of `channel`, in no particular order.
    pub fn members<'a>(&'a self, channel: &ChannelName) -> impl Iterator<Item = Member> + 'a {
        self.channels.get(channel).into_iter().flat_map(|t| {
            t.members.iter().map(|(&conn, e)| Member {
                node: 0,
                conn,
                user: e.user.clone(),
                info: e.info.clone(),
                joins: e.joins,
            })
        })
    }

    /// How many channels have at least one member.
    pub fn channel_count(&self) -> usize {
        self.channels.len()
    }

    /// How many members there are across all channels.
    pub fn member_count(&self) -> usize {
        self.channels.values().map(|t| t.members.len()).sum()
    }
}

fn watchers_except(table: &Table, conn: ConnAddr) -> Vec<ConnAddr> {
    if table.watchers == 0 {
        return Vec::new();
    }
    table.members.iter().filter(|(&c, e)| e.joins && c != conn).map(|(&c, _)| c).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::backend::ConnId;
    use crate::hub::SinkId;
    use std::collections::{BTreeMap, BTreeSet};

    fn addr(sink: u8, key: usize) -> ConnAddr {
        ConnAddr { sink: SinkId::new(sink).unwrap(), conn: ConnId::new(key, 1) }
    }

    fn name(text: &str) -> ChannelName {
        ChannelName::parse(text).unwrap()
    }

    fn member(conn: ConnAddr, joins: bool) -> Member {
        Member { node: 0, conn, user: None, info: None, joins }
    }

    #[test]
    fn join_and_leave_reach_the_other_watchers_only() {
        let mut p = Presence::default();
        let a = name("a");
        let e = p.join(&a, member(addr(0, 1), true)).unwrap();
        assert_eq!((e.change, e.notify), (Change::Join, vec![]));
        p.join(&a, member(addr(0, 2), false)).unwrap();
        let e = p.join(&a, member(addr(1, 3), true)).unwrap();
        assert_eq!(e.notify, vec![addr(0, 1)]);
        assert_eq!(p.count(&a), 3);
        let e = p.leave(&a, addr(0, 2)).unwrap();
        assert_eq!(e.change, Change::Leave);
        let notified: BTreeSet<_> = e.notify.iter().map(|c| (c.sink.index(), c.conn.key())).collect();
        assert_eq!(notified, BTreeSet::from([(0, 1), (1, 3)]));
        assert_eq!(p.leave(&a, addr(0, 2)), None, "a second leave is nothing");
        assert_eq!(p.count(&a), 2);
    }

    #[test]
    fn members_carry_user_and_info() {
        let mut p = Presence::default();
        let m = Member {
            node: 0,
            conn: addr(0, 1),
            user: Some("alice".into()),
            info: Some("{\"n\":1}".into()),
            joins: false,
        };
        p.join(&name("a"), m.clone()).unwrap();
        assert_eq!(p.members(&name("a")).collect::<Vec<_>>(), vec![m]);
        assert_eq!(p.members(&name("b")).count(), 0);
    }

    #[test]
    fn limits_are_checked_before_allocating() {
        let mut p = Presence::new(PresenceLimits {
            max_members_per_channel: 2,
            max_info_bytes: 4,
            ..PresenceLimits::default()
        });
        let a = name("a");
        let big = Member { info: Some("{\"x\":1}".into()), ..member(addr(0, 9), false) };
        assert_eq!(p.join(&a, big), Err(PresenceError::InfoTooLarge));
        assert_eq!(p.channel_count(), 0, "a refused first join leaves no table");
        p.join(&a, member(addr(0, 1), false)).unwrap();
        assert_eq!(p.join(&a, member(addr(0, 1), true)), Err(PresenceError::AlreadyMember));
        p.join(&a, member(addr(0, 2), false)).unwrap();
        assert_eq!(p.join(&a, member(addr(0, 3), false)), Err(PresenceError::ChannelFull));
        assert_eq!(p.count(&a), 2);
    }

    #[test]
    fn leave_sink_drops_every_member_of_a_loop() {
        let mut p = Presence::default();
        for (i, ch) in ["a", "b", "c"].iter().enumerate() {
            p.join(&name(ch), member(addr(0, i), false)).unwrap();
            p.join(&name(ch), member(addr(1, i), true)).unwrap();
        }
        let events = p.leave_sink(SinkId::new(1).unwrap());
        assert_eq!(events.len(), 3);
        assert!(events.iter().all(|e| e.notify.is_empty()), "the remaining members did not ask for joins");
        assert_eq!(p.member_count(), 3);
        assert!(p.members(&name("b")).all(|m| m.conn.sink.index() == 0));
    }

    /// Presence under churn: random joins, leaves and connection kills (a kill is the leave of
    /// every channel the connection held, as the loop submits them) against a model; at every
    /// step the tables equal the live subscriptions and nothing is left once all are gone.
    #[test]
    fn presence_equals_live_subscriptions_under_churn() {
        let mut p = Presence::new(PresenceLimits {
            max_members_per_channel: 40,
            max_info_bytes: 16,
            ..PresenceLimits::default()
        });
        let mut model: BTreeMap<(u8, usize), BTreeSet<String>> = BTreeMap::new();
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for _ in 0..20_000 {
            let conn = (next(4) as u8, next(250) as usize);
            let channel = format!("c{}", next(12));
            match next(10) {
                0..=5 => {
                    let held = model.entry(conn).or_default();
                    let result = p.join(&name(&channel), member(addr(conn.0, conn.1), next(2) == 0));
                    match result {
                        Ok(_) => assert!(held.insert(channel)),
                        Err(PresenceError::AlreadyMember) => assert!(held.contains(&channel)),
                        Err(PresenceError::ChannelFull) => {
                            assert_eq!(model.values().filter(|s| s.contains(&channel)).count(), 40)
                        }
                        Err(e) => panic!("{e}"),
                    }
                }
                6..=8 => {
                    let was = model.get_mut(&conn).is_some_and(|s| s.remove(&channel));
                    assert_eq!(p.leave(&name(&channel), addr(conn.0, conn.1)).is_some(), was);
                }
                _ => {
                    for channel in model.remove(&conn).unwrap_or_default() {
                        assert!(p.leave(&name(&channel), addr(conn.0, conn.1)).is_some());
                    }
                }
            }
        }
        for c in 0..12 {
            let channel = format!("c{c}");
            let live: BTreeSet<_> =
                model.iter().filter(|(_, s)| s.contains(&channel)).map(|(&k, _)| k).collect();
            let listed: BTreeSet<_> =
                p.members(&name(&channel)).map(|m| (m.conn.sink.index(), m.conn.conn.key())).collect();
            assert_eq!(listed, live, "{channel}");
        }
        for (conn, channels) in std::mem::take(&mut model) {
            for channel in channels {
                p.leave(&name(&channel), addr(conn.0, conn.1)).unwrap();
            }
        }
        assert_eq!((p.channel_count(), p.member_count()), (0, 0), "nothing leaks");
    }
}
