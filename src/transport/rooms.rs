//! One connection's channel set ("rooms", issue #13): the channels it is subscribed to; the
//! `pushwire.v1` commands applied to it; and the multi-channel request forms of the HTTP
//! transports.
//!
//! Implements:
//! - [`Rooms::handle_request`]: a parsed command ([`super::commands`]) checked against the
//!   set (already subscribed, not subscribed, [`RoomLimits::max_channels_per_connection`]) and
//!   the channel policies and tokens ([`super::policy`], [`super::token`]), then turned into an
//!   [`Action`] for the hub and/or a reply. Every refusal is a per-command `error` reply with
//!   the command's `req` echoed; none closes the connection (a client that keeps too many
//!   replies waiting is closed by its session, [`Rooms::backlog_full`]).
//! - Replies that wait for the hub ([`Rooms::handle_answer`]): the backend answers one
//!   connection's commands in submission order (`hub/backend.rs`), so one FIFO of pending
//!   commands (bounded by [`RoomLimits::max_pending_commands`]) matches answers to `req`s.
//!   Replies keep the order of the commands: the reply of a command answered here (an
//!   `unsubscribe`, a `refresh`, a refusal) waits in the same FIFO behind the earlier
//!   commands still waiting for the hub ([`Rooms::in_order`], [`Rooms::take_ready`]), at most
//!   [`RoomLimits::max_pending_commands`] of them ([`Rooms::backlog_full`]).
//! - The token's expiry on a live connection, as Centrifugo does: [`Rooms::token_expires_at`]
//!   tells the loop when; a `refresh` command with a new token moves it; when it passes the
//!   connection is closed with [`CLOSE_TOKEN_EXPIRED`] (4001, in RFC 6455 §7.4.2's private-use
//!   range 4000-4999).
//! - [`parse_channels`]: the channels of a multi-channel HTTP request, either the path form
//!   `/channels/a,b,c` or repeated `channel=` parameters on `/channels`; and [`resume_points`]:
//!   where each starts from a composite `since` or `Last-Event-ID`.
//!
//! Does not: hold presence (`hub/presence.rs`), keep cursors (each channel's is its session's
//! [`super::feed::Feed`]'s, kept once: issue #13's bytes per idle subscription), encode
//! messages, or do I/O: the clock comes in as `unix_now_s`.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;

use crate::http1::target::{decode, Target};
use crate::hub::backend::ConnAddr;
use crate::hub::composite::{Composite, CompositeError, Mismatch};
use crate::hub::presence::{Change, Member, PresenceEvent};
use crate::hub::{ChannelName, Cursor, Epoch, HubError, Payload, PresenceList};
use crate::protocol::envelope::write_json_string;

use super::commands::{error_reply, ok_reply, Command, CommandError, Request};
use super::policy::{Action as Grant, Policies};
use super::token::{verify, Claims, TokenError, TokenKey, TokenLimits};

/// The WebSocket close code sent when a connection's token expires without a `refresh`
/// (RFC 6455 §7.4.2: 4000-4999 are for private use).
pub const CLOSE_TOKEN_EXPIRED: u16 = 4001;

pub use super::limits::RoomLimits;

/// What the connection may do: the server's policies and token key, and the clock.
#[derive(Debug, Clone, Copy)]
pub struct Authority<'a> {
    /// Which channels need a token for what.
    pub policies: &'a Policies,
    /// The key tokens are verified with; `None`: the server takes no tokens.
    pub key: Option<&'a TokenKey>,
    /// Token size limit.
    pub token_limits: &'a TokenLimits,
    /// Now, in seconds since the Unix epoch (tokens' `exp`).
    pub unix_now_s: u64,
}

impl Authority<'_> {
    fn verify(&self, token: &str) -> Result<Claims, CommandError> {
        let key = self.key.ok_or(CommandError::BadToken(NO_KEY))?;
        verify(token, key, self.unix_now_s, self.token_limits).map_err(|e| CommandError::BadToken(e.as_str()))
    }
}

/// What the hub must do for a command.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Subscribe the connection from `since` (`None`: from now) and add it to the channel's
    /// presence; answer with [`Rooms::handle_answer`].
    Subscribe {
        /// The channel.
        channel: ChannelName,
        /// Where the client's history ends.
        since: Option<Cursor>,
        /// The user id of the token that granted it, and the client's info.
        user: Option<Box<str>>,
        /// Presence data.
        info: Option<Box<str>>,
        /// The connection wants join and leave events.
        joins: bool,
    },
    /// End the subscription and leave the presence; no answer.
    Unsubscribe {
        /// The channel.
        channel: ChannelName,
    },
    /// Publish; answer with [`Rooms::handle_answer`].
    Publish {
        /// The channel.
        channel: ChannelName,
        /// The event name.
        event: Option<Arc<str>>,
        /// The message.
        payload: Payload,
        /// Do not deliver it to this connection.
        except_self: bool,
    },
    /// Read the channel's presence; answer with [`Rooms::handle_answer`].
    Presence {
        /// The channel.
        channel: ChannelName,
        /// List the members (else only count them).
        list: bool,
    },
}

/// The hub's answer to an [`Action`] that has one, in the order the actions were submitted.
#[derive(Debug, Clone)]
pub enum Answer {
    /// The subscription started after `next` (a replay's last id, or where it starts), or
    /// was refused.
    Subscribed(Result<Cursor, HubError>),
    /// The message got this id, or was refused.
    Published(Result<Cursor, HubError>),
    /// The channel's member count and (for `presence`, not `presence_stats`) its members.
    Presence(PresenceList),
}

/// The result of one command: something for the hub, a reply for the client, or both.
#[derive(Debug, Default)]
pub struct Outcome {
    /// What the hub must do.
    pub action: Option<Action>,
    /// A reply frame's text, to send now (a reply that must wait for earlier commands'
    /// answers is held by the [`Rooms`] instead, [`Rooms::take_ready`]).
    pub reply: Option<Vec<u8>>,
    /// For a command refused over its token, the reason counted in `/metrics`
    /// (`pushwire_token_refusals_total`).
    pub token_refusal: Option<&'static str>,
}

/// Why a command on a channel needing a token had none.
const NEEDS_TOKEN: &str = "this channel needs a token";
/// Why a valid token did not do.
const NOT_GRANTED: &str = "the token does not grant this channel";
/// Why a token was refused on a server without a key.
const NO_KEY: &str = "this server takes no tokens";

/// The `/metrics` reason of a refusal about a token, if it is one.
fn token_reason(e: &CommandError) -> Option<&'static str> {
    match e {
        CommandError::BadToken(NO_KEY) => Some("other"),
        CommandError::BadToken(reason) => Some(reason),
        CommandError::NotAllowed(NEEDS_TOKEN) => Some("missing"),
        CommandError::NotAllowed(NOT_GRANTED) => Some("not_granted"),
        _ => None,
    }
}

/// What [`Rooms::handle_refused`] did.
#[derive(Debug)]
pub struct Refused {
    /// The `error` reply to send.
    pub reply: Vec<u8>,
    /// The channel whose subscription was refused (it left the set).
    pub unsubscribed: Option<ChannelName>,
    /// The refused action was a publish.
    pub was_publish: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Subscribe,
    Publish,
    Presence,
    PresenceStats,
}

#[derive(Debug)]
struct Pending {
    kind: Kind,
    req: Option<Box<str>>,
    channel: ChannelName,
}

/// What a connection's next replies wait for, in command order.
#[derive(Debug)]
enum Waiting {
    /// A command the hub answers.
    Hub(Pending),
    /// The reply of a command answered here, held behind earlier commands the hub answers.
    Reply(Vec<u8>),
}

/// One channel of the set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Room {
    /// The channel.
    pub channel: ChannelName,
}

/// A connection's channels and its token.
#[derive(Debug)]
pub struct Rooms {
    limits: RoomLimits,
    rooms: Vec<Room>,
    claims: Option<Claims>,
    /// Oldest first; never starts with a `Reply` (those are taken as soon as they are first).
    pending: VecDeque<Waiting>,
}

impl Rooms {
    /// An empty set; `claims` is the connection's token, verified when it connected.
    pub fn new(limits: RoomLimits, claims: Option<Claims>) -> Rooms {
        Rooms { limits, rooms: Vec::new(), claims, pending: VecDeque::new() }
    }

    /// The channels, in the order they were subscribed.
    pub fn rooms(&self) -> &[Room] {
        &self.rooms
    }

    /// When the connection's token expires (seconds since the Unix epoch), if it has one: the
    /// loop closes the connection with [`CLOSE_TOKEN_EXPIRED`] then unless a `refresh` came.
    pub fn token_expires_at(&self) -> Option<u64> {
        self.claims.as_ref().map(|c| c.expires_at)
    }

    /// Leaves `channel` without a command (the server API's `unsubscribe`); false when the
    /// connection does not hold it.
    pub fn remove(&mut self, channel: &ChannelName) -> bool {
        let Some(i) = self.position(channel) else { return false };
        self.rooms.remove(i);
        true
    }

    fn position(&self, channel: &ChannelName) -> Option<usize> {
        self.rooms.iter().position(|r| &r.channel == channel)
    }

    /// May the connection do `grant` on `channel`, with `token` (a command's own) or its own?
    /// Returns the user id of the token that decided, if any.
    fn authorize(
        &self,
        grant: Grant,
        channel: &ChannelName,
        token: Option<&str>,
        auth: &Authority<'_>,
    ) -> Result<Option<Box<str>>, CommandError> {
        let own;
        let claims = match token {
            Some(token) => {
                own = auth.verify(token)?;
                Some(&own)
            }
            None => self.claims.as_ref(),
        };
        if auth.policies.needs_token(channel.as_str(), grant) {
            match claims {
                None => return Err(CommandError::NotAllowed(NEEDS_TOKEN)),
                Some(c) if c.expires_at <= auth.unix_now_s => {
                    return Err(CommandError::BadToken(TokenError::Expired.as_str()))
                }
                Some(c) if !c.grants(grant, channel.as_str()) => {
                    return Err(CommandError::NotAllowed(NOT_GRANTED))
                }
                Some(_) => {}
            }
        }
        Ok(claims.and_then(|c| c.user.clone()))
    }

    /// Applies one command. Refusals come back as `reply` with no `action`; a reply is held
    /// while earlier commands wait for the hub ([`Rooms::in_order`]).
    pub fn handle_request(&mut self, request: Request, auth: &Authority<'_>) -> Outcome {
        let mut outcome = self.apply(request, auth);
        outcome.reply = outcome.reply.and_then(|reply| self.in_order(reply));
        outcome
    }

    fn apply(&mut self, request: Request, auth: &Authority<'_>) -> Outcome {
        let Request { req, channel, command } = request;
        let refuse = |e: CommandError| Outcome {
            action: None,
            reply: Some(error_reply(req.as_deref(), channel.as_ref(), &e)),
            token_refusal: token_reason(&e),
        };
        let command = match command {
            Ok(command) => command,
            Err(e) => return refuse(e),
        };
        let waits =
            matches!(command, Command::Subscribe { .. } | Command::Publish { .. } | Command::Presence { .. });
        if waits && self.hub_waiting() >= self.limits.max_pending_commands {
            return refuse(CommandError::Unavailable("too many commands awaiting an answer".into()));
        }
        match command {
            Command::Subscribe { channel, since, joins, token, info } => {
                if self.position(&channel).is_some() {
                    return refuse(CommandError::AlreadySubscribed);
                }
                if self.rooms.len() >= self.limits.max_channels_per_connection {
                    return refuse(CommandError::TooManyChannels);
                }
                let user = match self.authorize(Grant::Subscribe, &channel, token.as_deref(), auth) {
                    Ok(user) => user,
                    Err(e) => return refuse(e),
                };
                self.rooms.push(Room { channel: channel.clone() });
                self.pending.push_back(Waiting::Hub(Pending {
                    kind: Kind::Subscribe,
                    req,
                    channel: channel.clone(),
                }));
                Outcome {
                    action: Some(Action::Subscribe { channel, since, user, info, joins }),
                    reply: None,
                    token_refusal: None,
                }
            }
            Command::Unsubscribe { channel } => {
                let Some(i) = self.position(&channel) else {
                    return refuse(CommandError::NotSubscribed);
                };
                self.rooms.remove(i);
                let reply = ok_reply(req.as_deref(), Some(&channel), None);
                Outcome {
                    action: Some(Action::Unsubscribe { channel }),
                    reply: Some(reply),
                    token_refusal: None,
                }
            }
            Command::Publish { channel, payload, event, except_self } => {
                if let Err(e) = self.authorize(Grant::Publish, &channel, None, auth) {
                    return refuse(e);
                }
                self.pending.push_back(Waiting::Hub(Pending {
                    kind: Kind::Publish,
                    req,
                    channel: channel.clone(),
                }));
                let event = event.map(Arc::from);
                Outcome {
                    action: Some(Action::Publish { channel, event, payload, except_self }),
                    reply: None,
                    token_refusal: None,
                }
            }
            Command::Presence { channel, stats } => {
                if let Err(e) = self.authorize(Grant::Presence, &channel, None, auth) {
                    return refuse(e);
                }
                let kind = if stats { Kind::PresenceStats } else { Kind::Presence };
                self.pending.push_back(Waiting::Hub(Pending { kind, req, channel: channel.clone() }));
                let action = Action::Presence { channel, list: !stats };
                Outcome { action: Some(action), reply: None, token_refusal: None }
            }
            Command::Refresh { token } => match auth.verify(&token) {
                Ok(claims) => {
                    self.claims = Some(claims);
                    Outcome {
                        action: None,
                        reply: Some(ok_reply(req.as_deref(), None, None)),
                        token_refusal: None,
                    }
                }
                Err(e) => refuse(e),
            },
        }
    }

    /// True when the oldest action still waiting is a subscribe whose channel the client
    /// has since unsubscribed and subscribed again (a later subscribe to it waits too): its
    /// answer is not the current subscription's, whose own answer comes after it, so its
    /// replay must not start the channel's feed and its refusal must not take the room away.
    pub fn oldest_is_superseded(&self) -> bool {
        let mut waiting = self.pending.iter().filter_map(|w| match w {
            Waiting::Hub(pending) => Some(pending),
            Waiting::Reply(_) => None,
        });
        let Some(oldest) = waiting.next() else { return false };
        oldest.kind == Kind::Subscribe
            && waiting.any(|p| p.kind == Kind::Subscribe && p.channel == oldest.channel)
    }

    /// Commands waiting for the hub's answer.
    fn hub_waiting(&self) -> usize {
        self.pending.iter().filter(|w| matches!(w, Waiting::Hub(_))).count()
    }

    /// The oldest command waiting for the hub (the front: replies held behind it come after).
    fn pop_hub(&mut self) -> Option<Pending> {
        match self.pending.pop_front()? {
            Waiting::Hub(pending) => Some(pending),
            // Not held at the front (`take_ready` takes them): nothing waits for the hub.
            Waiting::Reply(reply) => {
                self.pending.push_front(Waiting::Reply(reply));
                None
            }
        }
    }

    /// The reply of a command answered without the hub: `Some` to send now when nothing
    /// before it waits, else held until the earlier commands are answered ([`Rooms::take_ready`]).
    pub fn in_order(&mut self, reply: Vec<u8>) -> Option<Vec<u8>> {
        if self.pending.is_empty() {
            return Some(reply);
        }
        self.pending.push_back(Waiting::Reply(reply));
        None
    }

    /// The held replies that may go now (in order), after an answer from the hub was sent.
    pub fn take_ready(&mut self) -> Vec<Vec<u8>> {
        let mut ready = Vec::new();
        while let Some(Waiting::Reply(_)) = self.pending.front() {
            if let Some(Waiting::Reply(reply)) = self.pending.pop_front() {
                ready.push(reply);
            }
        }
        ready
    }

    /// True when as many replies are held as commands may wait for the hub: a client that
    /// keeps sending commands answered here faster than the hub answers (misbehaving) is
    /// closed rather than held without bound.
    pub fn backlog_full(&self) -> bool {
        self.pending.len() - self.hub_waiting() >= self.limits.max_pending_commands
    }

    /// The hub's answer to the oldest action still waiting; returns the reply to send, or
    /// `None` for an answer nothing waits for (a protocol error of the caller's).
    pub fn handle_answer(&mut self, answer: Answer) -> Option<Vec<u8>> {
        let superseded = self.oldest_is_superseded();
        let pending = self.pop_hub()?;
        let (req, channel) = (pending.req.as_deref(), Some(&pending.channel));
        Some(match (pending.kind, answer) {
            // Unsubscribed meanwhile: the client still gets its ok, the room stays gone (the
            // backend applied the Unsubscribe after the Subscribe).
            (Kind::Subscribe, Answer::Subscribed(Ok(_))) => ok_reply(req, channel, None),
            (Kind::Subscribe, Answer::Subscribed(Err(e))) => {
                if let Some(i) = self.position(&pending.channel).filter(|_| !superseded) {
                    self.rooms.remove(i);
                }
                error_reply(req, channel, &hub_error(e))
            }
            (Kind::Publish, Answer::Published(Ok(id))) => ok_reply(req, channel, Some(id)),
            (Kind::Publish, Answer::Published(Err(e))) => error_reply(req, channel, &hub_error(e)),
            (Kind::Presence, Answer::Presence(list)) => presence_reply(req, &pending.channel, &list),
            (Kind::PresenceStats, Answer::Presence(list)) => {
                presence_stats_reply(req, &pending.channel, list.count)
            }
            (kind, answer) => {
                let why = format!("internal: {kind:?} answered with {answer:?}");
                error_reply(req, channel, &CommandError::Unavailable(why))
            }
        })
    }

    /// The hub refused the oldest action still waiting: its `error` reply, and for a
    /// subscribe the channel that left the set. `None` when nothing waits.
    pub fn handle_refused(&mut self, error: HubError) -> Option<Refused> {
        let superseded = self.oldest_is_superseded();
        let pending = self.pop_hub()?;
        let reply = error_reply(pending.req.as_deref(), Some(&pending.channel), &hub_error(error));
        let unsubscribed = (pending.kind == Kind::Subscribe && !superseded)
            .then(|| self.position(&pending.channel).map(|i| self.rooms.remove(i).channel))
            .flatten();
        Some(Refused { reply, unsubscribed, was_publish: pending.kind == Kind::Publish })
    }
}

/// A hub refusal as a command error.
fn hub_error(e: HubError) -> CommandError {
    match e {
        HubError::MessageTooLarge => CommandError::TooLarge("message"),
        HubError::InfoTooLarge => CommandError::TooLarge("info"),
        HubError::InvalidChannelName => CommandError::BadChannel,
        e => CommandError::Unavailable(e.to_string()),
    }
}

/// A connection's public id in presence: its loop, slot and generation as 18 hex digits
/// (unique among live connections of this server).
pub fn member_id(conn: ConnAddr) -> String {
    format!("{:02x}{:08x}{:08x}", conn.sink.index(), conn.conn.key(), conn.conn.generation)
}

/// A member's public id: [`member_id`], after its node's id (16 hex digits and `-`) when the
/// presence table is shared by several nodes (Redis), so ids are unique across the nodes.
fn write_member_id(out: &mut Vec<u8>, member: &Member) {
    if member.node != 0 {
        out.extend_from_slice(format!("{:016x}-", member.node).as_bytes());
    }
    out.extend_from_slice(member_id(member.conn).as_bytes());
}

fn write_member(out: &mut Vec<u8>, member: &Member) {
    out.extend_from_slice(b"{\"id\":\"");
    write_member_id(out, member);
    out.push(b'"');
    if let Some(user) = &member.user {
        out.extend_from_slice(b",\"user\":");
        write_json_string(out, user);
    }
    if let Some(info) = &member.info {
        // Checked to be a JSON object's text by the command parser.
        out.extend_from_slice(b",\"info\":");
        out.extend_from_slice(info.as_bytes());
    }
    out.push(b'}');
}

/// `{"type":"presence","req":…,"channel":"a","count":N,"members":[{"id":…,"user":…,"info":…}]}`;
/// also the body of `GET /channels/NAME/presence` (without `type` and `req` mattering). `N` is
/// every member's count, which with `--redis` may pass the members listed
/// (`--max-presence-members` bounds the list).
pub fn presence_reply(req: Option<&str>, channel: &ChannelName, list: &PresenceList) -> Vec<u8> {
    let members = &list.members;
    let mut out = Vec::with_capacity(64 + members.len() * 48);
    out.extend_from_slice(b"{\"type\":\"presence\"");
    if let Some(req) = req {
        out.extend_from_slice(b",\"req\":");
        out.extend_from_slice(req.as_bytes());
    }
    out.extend_from_slice(
        format!(",\"channel\":\"{}\",\"count\":{},\"members\":[", channel.as_str(), list.count).as_bytes(),
    );
    for (i, member) in members.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_member(&mut out, member);
    }
    out.extend_from_slice(b"]}");
    out
}

/// `{"type":"presence_stats","req":…,"channel":"a","count":N}`.
pub fn presence_stats_reply(req: Option<&str>, channel: &ChannelName, count: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(b"{\"type\":\"presence_stats\"");
    if let Some(req) = req {
        out.extend_from_slice(b",\"req\":");
        out.extend_from_slice(req.as_bytes());
    }
    out.extend_from_slice(format!(",\"channel\":\"{}\",\"count\":{count}}}", channel.as_str()).as_bytes());
    out
}

/// `{"type":"join","channel":"a","member":{…}}` or `"leave"`: one frame for every connection
/// the event notifies, encoded once.
pub fn presence_event(event: &PresenceEvent) -> Vec<u8> {
    let kind = match event.change {
        Change::Join => "join",
        Change::Leave => "leave",
    };
    let mut out = Vec::with_capacity(96);
    out.extend_from_slice(
        format!("{{\"type\":\"{kind}\",\"channel\":\"{}\",\"member\":", event.channel.as_str()).as_bytes(),
    );
    write_member(&mut out, &event.member);
    out.push(b'}');
    out
}

/// Why a multi-channel request's channel list was refused (400).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChannelsError {
    /// No channel named.
    Empty,
    /// More than [`RoomLimits::max_channels_per_request`].
    TooMany,
    /// A name is not a channel name.
    BadName,
    /// A channel named twice.
    Duplicate,
    /// A `channel=` value's percent-encoding is broken.
    BadEncoding,
}

impl ChannelsError {
    /// The HTTP status: always 400.
    pub fn status_hint(self) -> u16 {
        400
    }
}

impl fmt::Display for ChannelsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl ChannelsError {
    /// The one-line reason, as answered in the 400's body.
    pub fn as_str(self) -> &'static str {
        match self {
            ChannelsError::Empty => "name at least one channel",
            ChannelsError::TooMany => "too many channels in one request",
            ChannelsError::BadName => "channel names are 1 to 128 bytes of A-Z a-z 0-9 . _ ~ -",
            ChannelsError::Duplicate => "a channel is named twice",
            ChannelsError::BadEncoding => "a channel parameter is not percent-encoded UTF-8",
        }
    }
}

impl std::error::Error for ChannelsError {}

/// The channels of a subscribe request, in the order named: `/channels/a,b,c` (`,` is not in
/// the channel alphabet), or `/channels?channel=a&channel=b` (repeated parameters; the
/// `channel` parameters of a `/channels/...` path are ignored). `None` for a path that is
/// neither. The count is checked before any name is copied.
pub fn parse_channels(
    target: &Target<'_>,
    limits: &RoomLimits,
) -> Option<Result<Vec<ChannelName>, ChannelsError>> {
    let max = limits.max_channels_per_request();
    let names: Vec<String> = if let Some(list) = target.path.strip_prefix("/channels/") {
        if list.split(',').count() > max {
            return Some(Err(ChannelsError::TooMany));
        }
        list.split(',').map(String::from).collect()
    } else if target.path == "/channels" {
        let pairs =
            || target.query.unwrap_or("").split('&').filter(|p| p.split('=').next() == Some("channel"));
        if pairs().count() > max {
            return Some(Err(ChannelsError::TooMany));
        }
        match pairs().map(|p| decode(p.split_once('=').map_or("", |(_, v)| v))).collect() {
            Ok(names) => names,
            Err(_) => return Some(Err(ChannelsError::BadEncoding)),
        }
    } else {
        return None;
    };
    Some(check_channels(names))
}

fn check_channels(names: Vec<String>) -> Result<Vec<ChannelName>, ChannelsError> {
    if names.is_empty() {
        return Err(ChannelsError::Empty);
    }
    let mut channels: Vec<ChannelName> = Vec::with_capacity(names.len());
    for name in names {
        let channel = ChannelName::parse(&name).map_err(|_| ChannelsError::BadName)?;
        // At most max_channels_per_connection entries: quadratic in a bounded count.
        if channels.contains(&channel) {
            return Err(ChannelsError::Duplicate);
        }
        channels.push(channel);
    }
    Ok(channels)
}

/// Where one channel of a multi-channel request starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// From now, no gap.
    Tail,
    /// After this cursor (the hub's gap rules apply).
    After(Cursor),
    /// From now with a gap event: the client had a position the server cannot read (an
    /// unparseable `Last-Event-ID`, or a compact id whose epochs changed).
    Lost,
}

/// Where a composite cursor text resumes, before the channels' epochs are known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resume {
    /// Each channel's start is known.
    Each(Vec<Start>),
    /// A compact id: resolve it with [`Resume::resolve`] against the channels' current epochs.
    Compact {
        /// The hash of the epochs the offsets count in.
        epochs_hash: u64,
        /// One offset per channel.
        offsets: Vec<u64>,
    },
}

impl Resume {
    /// Each channel's start, given the channels' current epochs (in request order); a compact
    /// id whose hash does not match is [`Start::Lost`] on every channel (it cannot say which
    /// channel changed, `hub/composite.rs`).
    pub fn resolve(self, current: &[Epoch]) -> Vec<Start> {
        match self {
            Resume::Each(starts) => starts,
            Resume::Compact { epochs_hash, offsets } => {
                match Composite::resolve_compact(epochs_hash, &offsets, current) {
                    Ok(cursors) => cursors.into_iter().map(Start::After).collect(),
                    Err(Mismatch) => vec![Start::Lost; offsets.len()],
                }
            }
        }
    }
}

/// Where each of `channels` channels starts. `since` is the explicit `?since=` (a bad one is
/// an error: 400); `last_event_id` is the browser's header, which wins when present and which
/// is never refused: an unreadable one is [`Start::Lost`] on every channel (issue #13 item 7;
/// WHATWG HTML `#the-last-event-id-header` lets the server interpret it as it likes, and a 400
/// would stop the browser's reconnects for good).
pub fn resume_points(
    channels: usize,
    since: Option<&str>,
    last_event_id: Option<&[u8]>,
) -> Result<Resume, CompositeError> {
    if let Some(header) = last_event_id.filter(|h| !h.is_empty()) {
        let parsed = std::str::from_utf8(header).ok().and_then(|text| Composite::parse(text, channels).ok());
        return Ok(parsed.map_or_else(|| Resume::Each(vec![Start::Lost; channels]), from_composite));
    }
    match since {
        None => Ok(Resume::Each(vec![Start::Tail; channels])),
        Some(text) => Composite::parse(text, channels).map(from_composite),
    }
}

fn from_composite(composite: Composite) -> Resume {
    match composite {
        Composite::Full(entries) => {
            Resume::Each(entries.into_iter().map(|e| e.map_or(Start::Tail, Start::After)).collect())
        }
        Composite::Compact { epochs_hash, offsets } => Resume::Compact { epochs_hash, offsets },
    }
}

#[cfg(test)]
mod tests;
