//! One event loop's side of pub/sub, without sockets: which of its connections are subscribed
//! to which channel, the pump that takes a connection's queued hub commands to the
//! [`HubBackend`] and hands replies back, and the delivery policy (when a connection's queued
//! output is written before another delivery joins it).
//!
//! Implements: [`Fanout`] (channel → connections, each connection's first channel in
//! [`Subscriptions`]), [`pump`], [`handle_late_reply`] and [`write_before_delivery`]. The event loop
//! (`crate::net`) owns the connections and the sockets and calls these; nothing here does I/O.
//!
//! Ownership of a subscription: it is recorded here when the backend's `Subscribed` reply
//! reaches the connection ([`handle_late_reply`], or at once in [`pump`]), and forgotten when
//! the connection's session queues `Unsubscribe` ([`pump`]) or when the loop removes the
//! connection ([`Fanout::remove_conn`], whose channels the loop then unsubscribes at the
//! backend); a reply for a connection already gone is ended by [`Fanout::reply_to_gone`]. A
//! connection's first subscription is kept in its slot ([`Subscriptions`]); further ones are
//! found through its session's channels, so an idle subscription beyond the first costs the
//! loop only its connection id in the channel's list (issue #13).
//!
//! With a backend that answers later, the loop sends, per channel, exactly one `Unsubscribe`
//! for each subscribe answered `Ok` and none for one answered `Err`, whatever the order of the
//! client's actions and the answers (issue #14): an `Unsubscribe` waits in its connection's
//! queue for its channel's unanswered subscribe ([`pump`]), and the answer decides.
//!
//! Does not: decide what a session subscribes to (the transports do), write, register or
//! schedule anything (the loop does), or time out an answer that never comes (a backend
//! answers every subscribe it took, within its request timeout; until then the commands held
//! behind it wait).

use std::collections::HashMap;
use std::time::Instant;

use crate::conn::Conn;
use crate::hub::backend::{ConnAddr, ConnId, HubBackend, Submitted};
use crate::hub::{ChannelName, Command, Reply};
use crate::metrics::Metrics;
use crate::output::{Output, MAX_IO_SLICES};
use crate::protocol::Transport;

/// The subscription a connection's slot keeps inline: its first one (8 bytes in the slot,
/// no allocation per idle subscriber). A connection's further subscriptions, which only a
/// multi-channel session holds, are recorded only in the loop's [`Fanout`] (channel →
/// connections); the loop finds them again through the session, which names its channels
/// ([`Conn::for_each_held_channel`], also after it ended by closing), so it keeps no list of
/// channel names per connection. The inline one's transport is kept beside it by the slot (a
/// byte its padding holds): the two are lent together as [`SlotSubscriptions`].
#[derive(Debug, Default)]
pub struct Subscriptions(Option<ChannelName>);

/// One connection's inline subscription as its slot keeps it: the channel and its transport
/// (named again in its `Unsubscribe`; meaningless while there is none).
#[derive(Debug)]
pub struct SlotSubscriptions<'a> {
    /// The inline channel.
    pub channels: &'a mut Subscriptions,
    /// The inline subscription's transport.
    pub transport: &'a mut Transport,
}

impl SlotSubscriptions<'_> {
    /// No inline subscription (the connection may still hold others, see [`Subscriptions`]).
    pub fn is_empty(&self) -> bool {
        self.channels.0.is_none()
    }

    /// Keeps `channel` inline when there is room; false when the inline one is taken.
    fn push_inline(&mut self, channel: &ChannelName, transport: Transport) -> bool {
        if self.channels.0.is_some() {
            return false;
        }
        self.channels.0 = Some(channel.clone());
        *self.transport = transport;
        true
    }

    /// Forgets the inline subscription if it is to `channel`.
    fn remove_inline(&mut self, channel: &ChannelName) {
        if self.channels.0.as_ref() == Some(channel) {
            self.channels.0 = None;
        }
    }

    /// Takes the inline subscription out, leaving none.
    fn take(&mut self) -> Option<(ChannelName, Transport)> {
        self.channels.0.take().map(|channel| (channel, *self.transport))
    }
}

/// Which connections of one loop are subscribed to which channel, and which subscribes of
/// its connections a backend answering later has not answered yet.
#[derive(Debug, Default)]
pub struct Fanout {
    subscribers: HashMap<ChannelName, Vec<ConnId>>,
    /// Subscribes submitted and answered [`Submitted::Later`], per connection and channel,
    /// until their answers arrive (also after the connection is gone: [`Fanout::reply_to_gone`]).
    /// Empty with a backend that answers at once; else at most one entry per subscribe in
    /// flight at the backend, which answers each one (within its request timeout).
    unanswered: HashMap<(ConnId, ChannelName), u32>,
}

impl Fanout {
    /// The connections subscribed to `channel`, in the order they subscribed.
    pub fn subscribers(&self, channel: &ChannelName) -> &[ConnId] {
        self.subscribers.get(channel).map_or(&[], Vec::as_slice)
    }

    /// Records a subscription that started, and says whether it did: inline when the
    /// connection has none, else only here. A session that names its channels
    /// ([`Conn::names_channels`]) has it recorded, inline or not, only while it names the
    /// channel: one that no longer names it queued its `Unsubscribe` before this reply arrived
    /// (held until now by [`pump`]), which ends it; recorded, the loop would end it a second
    /// time at removal, taking another connection's count on this loop. A single-channel
    /// session's one subscription is recorded inline.
    fn subscribed(
        &mut self,
        id: ConnId,
        subs: &mut SlotSubscriptions<'_>,
        conn: &Conn,
        channel: ChannelName,
        transport: Transport,
    ) -> bool {
        let named = conn.names_channels();
        if named && !conn.holds_channel(&channel) {
            return false;
        }
        let recorded = subs.push_inline(&channel, transport) || named;
        if recorded {
            self.subscribers.entry(channel).or_default().push(id);
        }
        recorded
    }

    /// True while a subscribe of connection `id` to `channel` waits for its answer.
    fn is_unanswered(&self, id: ConnId, channel: &ChannelName) -> bool {
        self.unanswered.contains_key(&(id, channel.clone()))
    }

    /// A subscribe of connection `id` to `channel` was answered later: false when none waited.
    fn answered(&mut self, id: ConnId, channel: &ChannelName) -> bool {
        let key = (id, channel.clone());
        let Some(left) = self.unanswered.get_mut(&key) else { return false };
        *left -= 1;
        if *left == 0 {
            self.unanswered.remove(&key);
        }
        true
    }

    /// A reply that arrived through the inbox for connection `id`, which the loop has removed:
    /// the `Unsubscribe` to submit for it, if any. Only a subscribe the loop submitted for
    /// `id` and had not seen answered is ended, and only when it started (`Ok`): the backend
    /// counted it and nothing else will end it (the connection's own `Unsubscribe`, if it
    /// queued one, was held back and went with it). A refused one (`Err`) was not counted.
    /// `id` carries the slot's generation, so a reply is never taken for a connection that
    /// reuses the slot.
    pub fn reply_to_gone(&mut self, id: ConnId, reply: Reply) -> Option<Command> {
        let Reply::Subscribed { channel, transport, replay } = reply else { return None };
        if !self.answered(id, &channel) {
            return None;
        }
        replay.is_ok().then_some(Command::Unsubscribe { channel, transport })
    }

    fn unsubscribed(&mut self, id: ConnId, subs: &mut SlotSubscriptions<'_>, channel: &ChannelName) {
        subs.remove_inline(channel);
        self.forget(channel, id);
    }

    /// The connection `id` is going away: forgets its subscriptions (the inline one, and each
    /// channel its session names that is recorded here) and returns their channels and
    /// transports, each of which the loop then unsubscribes at the backend.
    pub fn remove_conn(
        &mut self,
        id: ConnId,
        subs: &mut SlotSubscriptions<'_>,
        conn: &Conn,
    ) -> Vec<(ChannelName, Transport)> {
        let mut ended = Vec::new();
        if let Some((channel, transport)) = subs.take() {
            self.forget(&channel, id);
            ended.push((channel, transport));
        }
        conn.for_each_held_channel(|channel, transport| {
            if self.forget(channel, id) {
                ended.push((channel.clone(), transport));
            }
        });
        ended
    }

    /// Forgets `id`'s subscription to `channel`; false when there was none.
    fn forget(&mut self, channel: &ChannelName, id: ConnId) -> bool {
        let Some(ids) = self.subscribers.get_mut(channel) else { return false };
        let Some(i) = ids.iter().position(|i| *i == id) else { return false };
        ids.remove(i);
        if ids.is_empty() {
            self.subscribers.remove(channel);
        }
        true
    }
}

/// Takes the connection's queued hub commands to `backend`, in order: a reply given at once is
/// handed back to the connection; one given later arrives through the loop's inbox
/// ([`handle_late_reply`]); an `Unsubscribe` is forgotten here as it is submitted.
///
/// An `Unsubscribe` of a channel whose `Subscribe` is not answered yet is held back, with
/// every command queued after it (so the backend still sees the connection's commands in
/// order: a subscribe again, a presence join, and the order of its answers), until that
/// answer arrives: a backend counts a subscription that starts (`Ok`) and not one it refuses
/// (`Err`), so only then is it known whether there is anything to end (the answer drops it for
/// a refusal). Sent ahead of a refusal, it would end another connection's subscription
/// to the channel on this loop. What a client can queue behind it is bounded by its session:
/// a command-mode WebSocket's commands that wait for an answer by
/// `RoomLimits::max_pending_commands` (held ones get none), its unsubscribes by its channels
/// (`RoomLimits::max_channels_per_connection`), a feed's reads to one at a time. Returns true
/// when commands stay queued, held.
pub fn pump(
    conn: &mut Conn,
    subs: &mut SlotSubscriptions<'_>,
    fanout: &mut Fanout,
    backend: &dyn HubBackend,
    from: ConnAddr,
    metrics: &Metrics,
    now: Instant,
) -> bool {
    loop {
        if let Some(Command::Unsubscribe { channel, .. }) = conn.peek_command() {
            if fanout.is_unanswered(from.conn, channel) {
                return true;
            }
        }
        let Some(command) = conn.poll_command() else { return false };
        let (subscribe, unsubscribe) = match &command {
            Command::Subscribe { channel, .. } | Command::SubscribeMember { channel, .. } => {
                (Some(channel.clone()), None)
            }
            Command::Unsubscribe { channel, .. } => (None, Some(channel.clone())),
            _ => (None, None),
        };
        match backend.submit(from, command, now) {
            Submitted::Reply(reply) => handle_reply(conn, subs, fanout, backend, from, reply, metrics, now),
            Submitted::Later => {
                if let Some(channel) = subscribe {
                    *fanout.unanswered.entry((from.conn, channel)).or_default() += 1;
                }
            }
            Submitted::NoReply => {}
        }
        if let Some(channel) = unsubscribe {
            fanout.unsubscribed(from.conn, subs, &channel);
        }
    }
}

/// Hands the live connection `from` a reply its backend answered later, through the loop's
/// inbox, as [`pump`] hands one given at once: a subscription that started is recorded (or
/// ended), the `Unsubscribe` held for a refused one is dropped, a publish is counted. Then
/// call [`pump`], which sends what was held for it.
#[allow(clippy::too_many_arguments)]
pub fn handle_late_reply(
    conn: &mut Conn,
    subs: &mut SlotSubscriptions<'_>,
    fanout: &mut Fanout,
    backend: &dyn HubBackend,
    from: ConnAddr,
    reply: Reply,
    metrics: &Metrics,
    now: Instant,
) {
    if let Reply::Subscribed { channel, .. } = &reply {
        fanout.answered(from.conn, channel);
    }
    handle_reply(conn, subs, fanout, backend, from, reply, metrics, now);
}

/// Hands the connection `from` a reply to one of its commands; a publish is counted. A
/// subscription that started is recorded for fan-out; one that cannot be (its session no
/// longer names the channel) is ended by the `Unsubscribe` its session queued, or else at
/// once, so the backend's count of it is ended exactly once. For a refused subscription, the
/// `Unsubscribe` its session queued meanwhile is dropped: there is nothing to end.
#[allow(clippy::too_many_arguments)]
fn handle_reply(
    conn: &mut Conn,
    subs: &mut SlotSubscriptions<'_>,
    fanout: &mut Fanout,
    backend: &dyn HubBackend,
    from: ConnAddr,
    reply: Reply,
    metrics: &Metrics,
    now: Instant,
) {
    match &reply {
        Reply::Subscribed { channel, transport, replay: Ok(_) } => {
            let recorded = fanout.subscribed(from.conn, subs, conn, channel.clone(), *transport);
            if !recorded && !conn.has_queued_unsubscribe(channel) {
                let unsubscribe = Command::Unsubscribe { channel: channel.clone(), transport: *transport };
                backend.submit(from, unsubscribe, now);
            }
        }
        Reply::Subscribed { channel, replay: Err(_), .. } => {
            conn.drop_queued_unsubscribe(channel);
        }
        Reply::Published(Ok(_)) => Metrics::inc(&metrics.messages_published),
        _ => {}
    }
    conn.handle_reply(reply, now);
}

/// Whether a connection's queued output is written before one more delivery joins it: when
/// more than half the send bound is queued ([`Output::is_past_half`]), so only a peer whose
/// socket will not take the bytes is judged a slow consumer when many deliveries arrive in one
/// turn; or when a full write's worth of segments waits ([`MAX_IO_SLICES`]), so a publisher
/// outrunning a sliced fan-out cannot pile up entries on connections not yet written.
pub fn write_before_delivery(pending: &Output, max_send_buffer_bytes: usize) -> bool {
    pending.is_past_half(max_send_buffer_bytes) || pending.segment_count() >= MAX_IO_SLICES
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    use crate::config::Config;
    use crate::hub::{Hub, SinkId};

    fn name(text: &str) -> ChannelName {
        ChannelName::parse(text).unwrap()
    }

    /// A hub answering either at once or, like a remote backend, `Later` (the replies are kept
    /// in submission order for the test to hand back, as the loop would from its inbox).
    ///
    /// It keeps the Redis broker's count per channel (`counts`): a subscribe counts when it
    /// is submitted and answered `Ok`, not when answered `Err` (a subscribe to a channel of
    /// `refusing` is answered `Err`, once); each `Unsubscribe` uncounts one. An `Unsubscribe`
    /// beyond the count is recorded in `overdrawn` (at the broker it would take another
    /// connection's count on the loop).
    #[derive(Debug)]
    struct TestBackend {
        hub: Mutex<Hub>,
        later: bool,
        submitted: Mutex<Vec<(ConnAddr, String)>>,
        replies: Mutex<Vec<(ConnAddr, Reply)>>,
        refusing: Mutex<Vec<ChannelName>>,
        /// Per channel: subscribes answered `Ok`, `Unsubscribe`s submitted.
        counts: Mutex<HashMap<String, (usize, usize)>>,
        overdrawn: Mutex<Vec<String>>,
    }

    impl TestBackend {
        fn new(later: bool) -> Self {
            TestBackend {
                hub: Mutex::new(Hub::new(Config::default().hub, 7)),
                later,
                submitted: Mutex::new(Vec::new()),
                replies: Mutex::new(Vec::new()),
                refusing: Mutex::new(Vec::new()),
                counts: Mutex::new(HashMap::new()),
                overdrawn: Mutex::new(Vec::new()),
            }
        }

        /// Answers the next subscribe to `channel` with an error.
        fn refuse(&self, channel: &str) {
            self.refusing.lock().unwrap().push(name(channel));
        }

        /// The replies kept so far, oldest first.
        fn take_replies(&self) -> Vec<(ConnAddr, Reply)> {
            std::mem::take(&mut *self.replies.lock().unwrap())
        }

        /// `Unsubscribe`s submitted for `channel`.
        fn unsubscribes(&self, channel: &str) -> usize {
            self.counts.lock().unwrap().get(channel).map_or(0, |c| c.1)
        }

        /// The issue #14 invariant once every answer is in and the connections are gone: per
        /// channel, as many `Unsubscribe`s as subscribes answered `Ok`, and never one ahead.
        fn assert_balanced(&self, case: &str) {
            assert!(self.overdrawn.lock().unwrap().is_empty(), "{case}: {:?}", self.overdrawn);
            for (channel, (ok, unsubscribes)) in self.counts.lock().unwrap().iter() {
                assert_eq!(ok, unsubscribes, "{case}: channel {channel}: Ok answers vs Unsubscribes");
            }
        }
    }

    impl HubBackend for TestBackend {
        fn submit(&self, from: ConnAddr, command: Command, now: Instant) -> Submitted {
            let what = format!("{command:?}");
            self.submitted.lock().unwrap().push((from, what.split([' ', '{']).next().unwrap().to_string()));
            let refused = match &command {
                Command::Subscribe { channel, transport, .. } => Some((channel.clone(), *transport)),
                Command::SubscribeMember { channel, .. } => Some((channel.clone(), WS)),
                _ => None,
            }
            .filter(|(channel, _)| self.refusing.lock().unwrap().contains(channel));
            if let Command::Unsubscribe { channel, .. } = &command {
                let mut counts = self.counts.lock().unwrap();
                let count = counts.entry(channel.as_str().to_string()).or_default();
                count.1 += 1;
                if count.1 > count.0 {
                    self.overdrawn.lock().unwrap().push(channel.as_str().to_string());
                }
            }
            if let Some((channel, _)) = &refused {
                // Only the next one.
                self.refusing.lock().unwrap().retain(|c| c != channel);
            }
            let reply = match refused {
                Some((channel, transport)) => Some(Reply::Subscribed {
                    channel,
                    transport,
                    replay: Err(crate::hub::HubError::BackendUnavailable),
                }),
                None => command.apply(&mut self.hub.lock().unwrap(), from, now).reply,
            };
            if let Some(Reply::Subscribed { channel, replay: Ok(_), .. }) = &reply {
                self.counts.lock().unwrap().entry(channel.as_str().to_string()).or_default().0 += 1;
            }
            match (reply, self.later) {
                (None, _) => Submitted::NoReply,
                (Some(reply), false) => Submitted::Reply(reply),
                (Some(reply), true) => {
                    self.replies.lock().unwrap().push((from, reply));
                    Submitted::Later
                }
            }
        }

        fn expire(&self, _now: Instant) {}
    }

    struct Rig {
        conn: Conn,
        subs: Subscriptions,
        transport: Transport,
        fanout: Fanout,
        metrics: Arc<Metrics>,
        from: ConnAddr,
        now: Instant,
        /// The loop removed the connection ([`Rig::remove`]).
        gone: bool,
    }

    impl Rig {
        fn new() -> Rig {
            let now = Instant::now();
            let metrics = Arc::new(Metrics::default());
            Rig {
                conn: Conn::new(Arc::new(Config::default()), metrics.clone(), now),
                subs: Subscriptions::default(),
                transport: Transport::Poll,
                fanout: Fanout::default(),
                metrics,
                from: ConnAddr { sink: SinkId::new(0).unwrap(), conn: ConnId::new(5, 1) },
                now,
                gone: false,
            }
        }

        /// A new connection on the same loop (its fan-out), in the slot `self`'s had.
        fn successor(&mut self) -> Rig {
            let mut next = Rig::new();
            next.fanout = std::mem::take(&mut self.fanout);
            next.from.conn = ConnId::new(self.from.conn.key(), self.from.conn.generation + 1);
            next
        }

        /// A `pushwire.v1` command from the client, then the pump.
        fn command(&mut self, backend: &TestBackend, text: &str) {
            self.conn.handle_input(&mut client_text(text), self.now);
            self.pump(backend);
        }

        /// The loop removes the connection and unsubscribes what [`Fanout::remove_conn`] ends.
        fn remove(&mut self, backend: &TestBackend) {
            let Rig { conn, fanout, subs, transport, from, .. } = self;
            let subs = &mut SlotSubscriptions { channels: subs, transport };
            for (channel, transport) in fanout.remove_conn(from.conn, subs, conn) {
                backend.submit(*from, Command::Unsubscribe { channel, transport }, self.now);
            }
            self.gone = true;
        }

        fn input(&mut self, request: &str) {
            self.conn.handle_input(&mut request.as_bytes().to_vec(), self.now);
        }

        fn pump(&mut self, backend: &TestBackend) {
            pump(
                &mut self.conn,
                &mut SlotSubscriptions { channels: &mut self.subs, transport: &mut self.transport },
                &mut self.fanout,
                backend,
                self.from,
                &self.metrics,
                self.now,
            );
        }

        /// A reply the backend answered later, as the loop hands it from its inbox: to the
        /// connection, then the pump; or, once the connection is gone, to
        /// [`Fanout::reply_to_gone`].
        fn reply(&mut self, backend: &TestBackend, reply: Reply) {
            if self.gone {
                if let Some(unsubscribe) = self.fanout.reply_to_gone(self.from.conn, reply) {
                    backend.submit(self.from, unsubscribe, self.now);
                }
                return;
            }
            let Rig { conn, subs, transport, fanout, metrics, from, now, .. } = self;
            let subs = &mut SlotSubscriptions { channels: subs, transport };
            handle_late_reply(conn, subs, fanout, backend, *from, reply, metrics, *now);
            self.pump(backend);
        }

        /// Hands back every reply kept so far.
        fn reply_all(&mut self, backend: &TestBackend) {
            for (to, reply) in backend.take_replies() {
                assert_eq!(to, self.from);
                self.reply(backend, reply);
            }
        }

        /// Hands back replies until no more come (an answer may release held commands).
        fn reply_until_done(&mut self, backend: &TestBackend) {
            while !backend.replies.lock().unwrap().is_empty() {
                self.reply_all(backend);
            }
        }

        /// Publishes `text` on `channel` and hands the delivery to this connection as often as
        /// the fan-out lists it; returns that count.
        fn deliver(&mut self, backend: &TestBackend, channel: &str, text: &str) -> usize {
            let payload = crate::hub::Payload::Text(Arc::from(text));
            let published =
                backend.hub.lock().unwrap().publish(&name(channel), None, payload, self.now).unwrap();
            let listed =
                self.fanout.subscribers(&name(channel)).iter().filter(|id| **id == self.from.conn).count();
            for _ in 0..listed {
                self.conn.handle_delivery(&published.message, self.now);
            }
            self.pump(backend);
            listed
        }

        /// The output so far, as text, taken.
        fn take_output(&mut self) -> String {
            let out = String::from_utf8_lossy(&self.conn.pending_output().to_vec()).into_owned();
            let n = self.conn.pending_output().len_bytes();
            self.conn.consume_output(n, self.now);
            out
        }
    }

    const WS: Transport = Transport::WebSocket;
    const SSE_T: Transport = Transport::Sse;
    const SSE: &str = "GET /channels/a HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n";
    const PUBLISH: &str = "POST /channels/a HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi";

    const ROOMS: &str = "GET /channels/a,b,c HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n";

    fn sorted(mut ended: Vec<(ChannelName, Transport)>) -> Vec<(ChannelName, Transport)> {
        ended.sort_by(|x, y| x.0.as_str().cmp(y.0.as_str()));
        ended
    }

    /// Issue #13: a connection's first subscription is kept inline, the others only in the
    /// channels' lists; the loop finds them through the session, also after the session ended
    /// by closing, and every one ends with the connection, once.
    #[test]
    fn the_first_subscription_is_inline_and_the_others_are_found_through_the_session() {
        for (later, close_first) in [(false, false), (false, true), (true, false), (true, true)] {
            let backend = TestBackend::new(later);
            let mut rig = Rig::new();
            rig.input(ROOMS);
            rig.pump(&backend);
            if close_first {
                // The stream ends (a server API disconnect) before or after its replies came.
                rig.conn.handle_disconnect(4002, "bye", rig.now);
                rig.pump(&backend);
            }
            let replies = std::mem::take(&mut *backend.replies.lock().unwrap());
            assert_eq!(replies.len(), if later { 3 } else { 0 });
            for (_, reply) in replies {
                rig.reply(&backend, reply);
            }
            for c in ["a", "b", "c"] {
                assert_eq!(rig.fanout.subscribers(&name(c)), [rig.from.conn], "{c} later={later}");
            }
            assert_eq!(rig.subs.0.as_ref().map(ChannelName::as_str), Some("a"));
            let Rig { conn, fanout, subs, transport, from, .. } = &mut rig;
            let subs = &mut SlotSubscriptions { channels: subs, transport };
            let ended = sorted(fanout.remove_conn(from.conn, subs, conn));
            assert_eq!(ended, [(name("a"), SSE_T), (name("b"), SSE_T), (name("c"), SSE_T)]);
            for c in ["a", "b", "c"] {
                assert!(rig.fanout.subscribers(&name(c)).is_empty());
            }
            assert!(rig.subs.0.is_none());
        }
    }

    const WS_COMMANDS: &str = "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
        Sec-WebSocket-Protocol: pushwire.v1\r\n\r\n";
    const WS_CHANNEL: &str =
        "GET /channels/a HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

    /// A text frame as a client sends it (masked).
    fn client_text(text: &str) -> Vec<u8> {
        let mut frame = Vec::new();
        crate::ws::frame::encode_frame(
            true,
            crate::ws::frame::OpCode::Text,
            text.as_bytes(),
            Some([1, 2, 3, 4]),
            &mut frame,
        );
        frame
    }

    /// A command-mode WebSocket unsubscribes its first channel before a backend that answers
    /// later replied: the late `Subscribed` is not recorded (inline), so the loop does not
    /// unsubscribe the channel a second time when it removes the connection, which would take
    /// another connection's count on the same loop (the Redis broker then UNSUBSCRIBEs it).
    /// A later channel still takes the inline place, and a single-channel session's late
    /// reply is still recorded.
    #[test]
    fn a_late_reply_to_a_command_websockets_unsubscribed_first_channel_is_not_recorded() {
        for close_first in [false, true] {
            let backend = TestBackend::new(true);
            let mut rig = Rig::new();
            rig.input(WS_COMMANDS);
            rig.pump(&backend);
            for frame in [
                r#"{"type":"subscribe","channel":"a","req":1}"#,
                r#"{"type":"unsubscribe","channel":"a","req":2}"#,
                r#"{"type":"subscribe","channel":"b","req":3}"#,
            ] {
                rig.conn.handle_input(&mut client_text(frame), rig.now);
                rig.pump(&backend);
            }
            if close_first {
                rig.conn.handle_disconnect(4002, "bye", rig.now);
                rig.pump(&backend);
            }
            // The unsubscribe, and the subscribe after it, wait for a's answer.
            let mut replies = 0;
            while !backend.replies.lock().unwrap().is_empty() {
                replies += backend.replies.lock().unwrap().len();
                rig.reply_all(&backend);
            }
            assert_eq!(replies, 2, "two Subscribed replies, close_first={close_first}");
            assert!(rig.fanout.subscribers(&name("a")).is_empty(), "close_first={close_first}");
            assert_eq!(rig.fanout.subscribers(&name("b")), [rig.from.conn]);
            assert_eq!(rig.subs.0.as_ref().map(ChannelName::as_str), Some("b"));
            let Rig { conn, fanout, subs, transport, from, .. } = &mut rig;
            let subs = &mut SlotSubscriptions { channels: subs, transport };
            assert_eq!(
                fanout.remove_conn(from.conn, subs, conn),
                [(name("b"), WS)],
                "close_first={close_first}"
            );
        }
        // A single-channel WebSocket's late reply is recorded inline and ended once.
        let backend = TestBackend::new(true);
        let mut rig = Rig::new();
        rig.input(WS_CHANNEL);
        rig.pump(&backend);
        for (_, reply) in std::mem::take(&mut *backend.replies.lock().unwrap()) {
            rig.reply(&backend, reply);
        }
        assert_eq!(rig.fanout.subscribers(&name("a")), [rig.from.conn]);
        let Rig { conn, fanout, subs, transport, from, .. } = &mut rig;
        let subs = &mut SlotSubscriptions { channels: subs, transport };
        assert_eq!(fanout.remove_conn(from.conn, subs, conn), [(name("a"), WS)]);
    }

    const SUB_A: &str = r#"{"type":"subscribe","channel":"a","req":1}"#;
    const UNSUB_A: &str = r#"{"type":"unsubscribe","channel":"a","req":2}"#;

    /// The commands submitted so far, by kind, oldest first.
    fn submitted(backend: &TestBackend) -> Vec<String> {
        backend.submitted.lock().unwrap().iter().map(|(_, c)| c.clone()).collect()
    }

    /// A command-mode WebSocket that subscribed `a` and unsubscribed it, with a backend that
    /// answers later and will refuse `a` unless `ok`; nothing answered yet.
    fn unsubscribed_before_the_answer(ok: bool) -> (TestBackend, Rig) {
        let backend = TestBackend::new(true);
        if !ok {
            backend.refuse("a");
        }
        let mut rig = Rig::new();
        rig.input(WS_COMMANDS);
        rig.command(&backend, SUB_A);
        rig.command(&backend, UNSUB_A);
        (backend, rig)
    }

    /// Issue #14 item 1: a command-mode WebSocket subscribes and unsubscribes `a` before the
    /// backend's later answer, and is removed before that answer arrives. The `Unsubscribe`
    /// waited for the answer and went with the connection; the answer then ends what the
    /// backend counted: once for `Ok`, not at all for `Err` (the unsubscribe sent at once
    /// plus the loop's own for the late `Ok` ended it twice; sent ahead of an `Err`, it
    /// ended a subscription that was never counted).
    #[test]
    fn a_late_answer_for_a_removed_connection_that_unsubscribed_is_ended_once() {
        for ok in [true, false] {
            let (backend, mut rig) = unsubscribed_before_the_answer(ok);
            assert_eq!(backend.unsubscribes("a"), 0, "held for the answer, ok={ok}");
            rig.remove(&backend);
            rig.reply_until_done(&backend);
            assert_eq!(backend.unsubscribes("a"), usize::from(ok), "ok={ok}");
            backend.assert_balanced(&format!("ok={ok}"));
        }
    }

    /// Issue #14 item 3: the subscribe is refused after the client unsubscribed: the
    /// `Unsubscribe` held for its answer is dropped (the backend counted nothing), and the
    /// commands queued behind it go on, in order, once the answer is in. An `Ok` answer sends
    /// it, before them.
    #[test]
    fn an_unsubscribe_waits_for_its_subscribes_answer_and_is_dropped_for_a_refusal() {
        for ok in [true, false] {
            let (backend, mut rig) = unsubscribed_before_the_answer(ok);
            rig.command(&backend, r#"{"type":"publish","channel":"b","data":"x","req":3}"#);
            assert_eq!(submitted(&backend), ["SubscribeMember"], "the rest waits, ok={ok}");
            rig.reply_until_done(&backend);
            let expected: &[&str] = if ok {
                &["SubscribeMember", "Unsubscribe", "Publish"]
            } else {
                &["SubscribeMember", "Publish"]
            };
            assert_eq!(submitted(&backend), expected, "ok={ok}");
            assert!(rig.fanout.subscribers(&name("a")).is_empty() && rig.subs.0.is_none());
            let out = rig.take_output();
            assert!(out.contains(r#""req":3"#), "the publish was answered, ok={ok}: {out}");
            rig.remove(&backend);
            backend.assert_balanced(&format!("ok={ok}"));
        }
    }

    /// Issue #14 item 2: a command-mode WebSocket subscribes `a`, unsubscribes it and
    /// subscribes it again before a backend answering later replied. The second subscribe
    /// waits behind the unsubscribe, which waits for the first answer; the connection is
    /// recorded once, gets each message once, and `a` is ended as often as it started. The
    /// first answer is the ended subscription's: its replay does not go to the new one's
    /// feed, and a refusal of it does not take the new one's channel away. (Before, the two
    /// `Ok`s recorded the connection twice in `a`'s list and removal unsubscribed it twice;
    /// a refused first one unsubscribed `a` once too often and left the second unrecorded.)
    #[test]
    fn subscribing_again_before_the_answers_is_recorded_once_and_ended_once() {
        for first_ok in [true, false] {
            let (backend, mut rig) = unsubscribed_before_the_answer(first_ok);
            rig.command(&backend, r#"{"type":"subscribe","channel":"a","req":3}"#);
            rig.reply_until_done(&backend);
            let case = format!("first_ok={first_ok}");
            let out = rig.take_output();
            let first = if first_ok { r#""type":"ok","req":1"# } else { r#""type":"error","req":1"# };
            assert!(out.contains(first), "{case}: {out}");
            assert!(out.contains(r#""type":"ok","req":3"#), "{case}: {out}");
            assert_eq!(rig.fanout.subscribers(&name("a")), [rig.from.conn], "{case}");
            assert_eq!(rig.subs.0.as_ref().map(ChannelName::as_str), Some("a"), "{case}");
            assert!(rig.conn.holds_channel(&name("a")), "{case}");
            for text in ["m1", "m2"] {
                assert_eq!(rig.deliver(&backend, "a", text), 1, "{case}");
                let out = rig.take_output();
                assert_eq!(out.matches(&format!(r#""data":"{text}""#)).count(), 1, "{case}: {out}");
            }
            rig.remove(&backend);
            assert_eq!(backend.unsubscribes("a"), if first_ok { 2 } else { 1 }, "{case}");
            backend.assert_balanced(&case);
        }
    }

    /// Issue #14 item 3 and the slab: a connection subscribed `a` and went away before the
    /// answer; the connection reusing its slot (a newer generation) subscribes `a` too. The
    /// late answer for the first ends its subscription and never touches the second's: the
    /// second stays recorded and counted, and is ended once when it goes.
    #[test]
    fn a_late_answer_is_never_taken_for_the_connection_reusing_the_slot() {
        for request in [SSE, WS_COMMANDS] {
            let backend = TestBackend::new(true);
            let mut first = Rig::new();
            first.input(request);
            if request == WS_COMMANDS {
                first.command(&backend, SUB_A);
            }
            first.pump(&backend);
            first.remove(&backend);
            let mut next = first.successor();
            next.input(request);
            if request == WS_COMMANDS {
                next.command(&backend, SUB_A);
            }
            next.pump(&backend);
            for (to, reply) in backend.take_replies() {
                if to == next.from {
                    next.reply(&backend, reply);
                } else if let Some(unsubscribe) = next.fanout.reply_to_gone(to.conn, reply) {
                    backend.submit(to, unsubscribe, next.now);
                }
            }
            assert_eq!(backend.unsubscribes("a"), 1, "the first one's, {request}");
            assert_eq!(next.fanout.subscribers(&name("a")), [next.from.conn]);
            assert_eq!(next.deliver(&backend, "a", "m"), 1);
            next.remove(&backend);
            assert_eq!(backend.unsubscribes("a"), 2);
            backend.assert_balanced(request);
        }
    }

    /// Issue #14 item 3: a connection closes while several of its subscribes wait for their
    /// answers (the transports that can: a multi-channel event stream or long poll, a
    /// command-mode WebSocket; a single-channel one has one). One answer came before the
    /// removal (recorded, ended at removal); after it, a refusal ends nothing and an `Ok`
    /// is ended once.
    #[test]
    fn a_connection_closed_with_several_subscribes_unanswered_ends_exactly_those_that_started() {
        let long_poll = "GET /channels/a,b,c?wait=5 HTTP/1.1\r\nHost: x\r\n\r\n";
        for request in [ROOMS, long_poll, WS_COMMANDS] {
            let backend = TestBackend::new(true);
            backend.refuse("b");
            let mut rig = Rig::new();
            rig.input(request);
            if request == WS_COMMANDS {
                for channel in ["a", "b", "c"] {
                    rig.command(&backend, &format!(r#"{{"type":"subscribe","channel":"{channel}"}}"#));
                }
            }
            rig.pump(&backend);
            let mut replies = backend.take_replies().into_iter();
            let (_, first) = replies.next().unwrap();
            rig.reply(&backend, first);
            assert_eq!(rig.fanout.subscribers(&name("a")), [rig.from.conn], "{request}");
            rig.remove(&backend);
            assert_eq!(backend.unsubscribes("a"), 1, "{request}");
            for (_, reply) in replies {
                rig.reply(&backend, reply);
            }
            assert_eq!([backend.unsubscribes("b"), backend.unsubscribes("c")], [0, 1], "{request}");
            backend.assert_balanced(request);
            assert!(rig.fanout.unanswered.is_empty(), "{request}");
        }
    }

    /// An `Ok` answer the loop cannot record (the session does not name the channel) and
    /// that no queued `Unsubscribe` ends is ended at once: whatever the backend counted is
    /// ended exactly once.
    #[test]
    fn a_started_subscription_that_cannot_be_recorded_is_ended_at_once() {
        let backend = TestBackend::new(true);
        let mut rig = Rig::new();
        rig.input(ROOMS);
        rig.pump(&backend);
        rig.reply_all(&backend);
        let replay = Ok(crate::hub::Replay {
            messages: Vec::new(),
            gap: false,
            next: crate::hub::Cursor { epoch: crate::hub::Epoch(7), offset: 0 },
        });
        backend.counts.lock().unwrap().entry("z".into()).or_default().0 += 1;
        rig.reply(&backend, Reply::Subscribed { channel: name("z"), transport: SSE_T, replay });
        assert!(rig.fanout.subscribers(&name("z")).is_empty());
        assert_eq!(backend.unsubscribes("z"), 1);
        rig.remove(&backend);
        backend.assert_balanced("z");
    }

    #[test]
    fn an_unsubscribed_inline_channel_is_not_ended_again_nor_replaced_by_one_not_named() {
        let backend = TestBackend::new(false);
        let mut rig = Rig::new();
        rig.input(ROOMS);
        rig.pump(&backend);
        let id = rig.from.conn;
        let Rig { conn, fanout, subs, transport, .. } = &mut rig;
        let mut subs = SlotSubscriptions { channels: subs, transport };
        fanout.unsubscribed(id, &mut subs, &name("a"));
        fanout.unsubscribed(id, &mut subs, &name("a"));
        assert!(subs.is_empty() && fanout.subscribers(&name("a")).is_empty());
        // A reply for a channel the session does not name is not recorded, inline or not: its
        // session already queued the `Unsubscribe` the backend applied after it.
        fanout.subscribed(id, &mut subs, conn, name("z"), WS);
        assert!(subs.is_empty() && fanout.subscribers(&name("z")).is_empty());
        fanout.subscribed(id, &mut subs, conn, name("y"), WS);
        assert!(fanout.subscribers(&name("y")).is_empty());
        let ended = sorted(fanout.remove_conn(id, &mut subs, conn));
        // b and c through the session; a, y and z not at all.
        assert_eq!(ended, [(name("b"), SSE_T), (name("c"), SSE_T)]);
        assert!(["b", "c"].iter().all(|c| fanout.subscribers(&name(c)).is_empty()));
    }

    #[test]
    fn a_subscription_answered_at_once_is_recorded_and_ends_with_the_connection() {
        let backend = TestBackend::new(false);
        let mut rig = Rig::new();
        rig.input(SSE);
        rig.pump(&backend);
        assert_eq!(rig.fanout.subscribers(&name("a")), [rig.from.conn]);
        assert!(String::from_utf8(rig.conn.pending_output().to_vec()).unwrap().starts_with("HTTP/1.1 200"));
        // The loop removes the connection: its channels come back to be unsubscribed.
        let Rig { conn, fanout, subs, transport, from, .. } = &mut rig;
        let subs = &mut SlotSubscriptions { channels: subs, transport };
        assert_eq!(fanout.remove_conn(from.conn, subs, conn), [(name("a"), Transport::Sse)]);
        assert!(rig.fanout.subscribers(&name("a")).is_empty() && rig.subs.0.is_none());
    }

    #[test]
    fn a_subscription_answered_later_is_recorded_only_when_its_reply_arrives() {
        let backend = TestBackend::new(true);
        let mut rig = Rig::new();
        rig.input(SSE);
        rig.pump(&backend);
        assert_eq!(backend.submitted.lock().unwrap().len(), 1);
        assert!(rig.fanout.subscribers(&name("a")).is_empty(), "not before the reply");
        assert!(rig.conn.pending_output().is_empty(), "the response waits for the replay");
        let (to, reply) = backend.replies.lock().unwrap().pop().unwrap();
        assert_eq!(to, rig.from);
        rig.reply(&backend, reply);
        assert_eq!(rig.fanout.subscribers(&name("a")), [rig.from.conn]);
        assert!(String::from_utf8(rig.conn.pending_output().to_vec()).unwrap().starts_with("HTTP/1.1 200"));
    }

    #[test]
    fn a_publish_is_counted_when_its_reply_is_handed_back() {
        for later in [false, true] {
            let backend = TestBackend::new(later);
            let mut rig = Rig::new();
            rig.input(PUBLISH);
            rig.pump(&backend);
            if later {
                assert_eq!(rig.metrics.messages_published.load(std::sync::atomic::Ordering::Relaxed), 0);
                let (_, reply) = backend.replies.lock().unwrap().pop().unwrap();
                rig.reply(&backend, reply);
            }
            assert_eq!(rig.metrics.messages_published.load(std::sync::atomic::Ordering::Relaxed), 1);
            assert!(String::from_utf8(rig.conn.pending_output().to_vec())
                .unwrap()
                .starts_with("HTTP/1.1 201"));
        }
    }

    #[test]
    fn an_unsubscribe_is_forgotten_as_it_is_submitted() {
        let backend = TestBackend::new(false);
        let mut rig = Rig::new();
        rig.input("GET /channels/a?wait=5 HTTP/1.1\r\nHost: x\r\n\r\n");
        rig.pump(&backend);
        assert_eq!(rig.fanout.subscribers(&name("a")), [rig.from.conn], "the long poll is parked");
        // A message answers the long poll, which then ends its subscription.
        let text = crate::hub::Payload::Text(Arc::from("hi"));
        let published = backend.hub.lock().unwrap().publish(&name("a"), None, text, rig.now).unwrap();
        rig.conn.handle_delivery(&published.message, rig.now);
        rig.pump(&backend);
        assert!(rig.fanout.subscribers(&name("a")).is_empty() && rig.subs.0.is_none());
        let submitted: Vec<String> =
            backend.submitted.lock().unwrap().iter().map(|(_, c)| c.clone()).collect();
        assert_eq!(submitted.first().map(String::as_str), Some("Subscribe"));
        assert_eq!(submitted.last().map(String::as_str), Some("Unsubscribe"));
    }

    #[test]
    fn queued_output_is_written_before_a_delivery_past_half_the_bound_or_a_full_write() {
        let max = 1000;
        let mut out = Output::new();
        out.push_owned(vec![0; 500]);
        assert!(!write_before_delivery(&out, max), "exactly half waits for more");
        out.push_owned(vec![0; 1]);
        assert!(write_before_delivery(&out, max));
        let mut segments = Output::new();
        for _ in 0..MAX_IO_SLICES - 1 {
            segments.push_shared(Arc::from(&b"x"[..]));
        }
        assert!(!write_before_delivery(&segments, max));
        segments.push_shared(Arc::from(&b"x"[..]));
        assert!(write_before_delivery(&segments, max), "a full writev waits");
    }
}
