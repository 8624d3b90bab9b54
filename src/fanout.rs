//! One event loop's side of pub/sub, without sockets: which of its connections are subscribed
//! to which channel, the pump that takes a connection's queued hub commands to the
//! [`HubBackend`] and hands replies back, and the delivery policy (when a connection's queued
//! output is written before another delivery joins it).
//!
//! Implements: [`Fanout`] (channel → connections, each connection's first channel in
//! [`Subscriptions`]), [`pump`], [`handle_reply`] and [`write_before_delivery`]. The event loop
//! (`crate::net`) owns the connections and the sockets and calls these; nothing here does I/O.
//!
//! Ownership of a subscription: it is recorded here when the backend's `Subscribed` reply
//! reaches the connection ([`handle_reply`]), and forgotten when the connection's session
//! queues `Unsubscribe` ([`pump`]) or when the loop removes the connection
//! ([`Fanout::remove_conn`], whose channels the loop then unsubscribes at the backend). A
//! connection's first subscription is kept in its slot ([`Subscriptions`]); further ones are
//! found through its session's channels, so an idle subscription beyond the first costs the
//! loop only its connection id in the channel's list (issue #13).
//!
//! Does not: decide what a session subscribes to (the transports do), or write, register or
//! schedule anything (the loop does).

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

/// Which connections of one loop are subscribed to which channel.
#[derive(Debug, Default)]
pub struct Fanout {
    subscribers: HashMap<ChannelName, Vec<ConnId>>,
}

impl Fanout {
    /// The connections subscribed to `channel`, in the order they subscribed.
    pub fn subscribers(&self, channel: &ChannelName) -> &[ConnId] {
        self.subscribers.get(channel).map_or(&[], Vec::as_slice)
    }

    /// Records a subscription that started: inline when the connection has none, else only
    /// here. A session that names its channels ([`Conn::names_channels`]) has it recorded,
    /// inline or not, only while it names the channel: one that no longer names it queued its
    /// `Unsubscribe` before this reply arrived (a backend answering later), and the backend
    /// applied both in order, so there is nothing left to record, and nothing for the loop to
    /// end when it removes the connection (recorded inline, the loop would unsubscribe it a
    /// second time, taking another connection's count on this loop). A single-channel
    /// session's one subscription is always recorded inline.
    fn subscribed(
        &mut self,
        id: ConnId,
        subs: &mut SlotSubscriptions<'_>,
        conn: &Conn,
        channel: ChannelName,
        transport: Transport,
    ) {
        let named = conn.names_channels();
        if named && !conn.holds_channel(&channel) {
            return;
        }
        if subs.push_inline(&channel, transport) || named {
            self.subscribers.entry(channel).or_default().push(id);
        }
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
/// handed back ([`handle_reply`]); one given later arrives through the loop's inbox; an
/// `Unsubscribe` is forgotten here as it is submitted.
pub fn pump(
    conn: &mut Conn,
    subs: &mut SlotSubscriptions<'_>,
    fanout: &mut Fanout,
    backend: &dyn HubBackend,
    from: ConnAddr,
    metrics: &Metrics,
    now: Instant,
) {
    while let Some(command) = conn.poll_command() {
        let unsubscribe = match &command {
            Command::Unsubscribe { channel, .. } => Some(channel.clone()),
            _ => None,
        };
        match backend.submit(from, command, now) {
            Submitted::Reply(reply) => handle_reply(conn, subs, fanout, from.conn, reply, metrics, now),
            Submitted::NoReply | Submitted::Later => {}
        }
        if let Some(channel) = unsubscribe {
            fanout.unsubscribed(from.conn, subs, &channel);
        }
    }
}

/// Hands the connection `id` a reply to one of its commands: a subscription that started is
/// recorded for fan-out, a publish is counted.
pub fn handle_reply(
    conn: &mut Conn,
    subs: &mut SlotSubscriptions<'_>,
    fanout: &mut Fanout,
    id: ConnId,
    reply: Reply,
    metrics: &Metrics,
    now: Instant,
) {
    match &reply {
        Reply::Subscribed { channel, transport, replay: Ok(_) } => {
            fanout.subscribed(id, subs, conn, channel.clone(), *transport)
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
    #[derive(Debug)]
    struct TestBackend {
        hub: Mutex<Hub>,
        later: bool,
        submitted: Mutex<Vec<(ConnAddr, String)>>,
        replies: Mutex<Vec<(ConnAddr, Reply)>>,
    }

    impl TestBackend {
        fn new(later: bool) -> Self {
            TestBackend {
                hub: Mutex::new(Hub::new(Config::default().hub, 7)),
                later,
                submitted: Mutex::new(Vec::new()),
                replies: Mutex::new(Vec::new()),
            }
        }
    }

    impl HubBackend for TestBackend {
        fn submit(&self, from: ConnAddr, command: Command, now: Instant) -> Submitted {
            let what = format!("{command:?}");
            self.submitted.lock().unwrap().push((from, what.split([' ', '{']).next().unwrap().to_string()));
            let applied = command.apply(&mut self.hub.lock().unwrap(), from, now);
            match (applied.reply, self.later) {
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
            }
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

        fn reply(&mut self, reply: Reply) {
            let Rig { conn, subs, transport, fanout, metrics, from, now } = self;
            let subs = &mut SlotSubscriptions { channels: subs, transport };
            handle_reply(conn, subs, fanout, from.conn, reply, metrics, *now);
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
                rig.reply(reply);
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
            let replies = std::mem::take(&mut *backend.replies.lock().unwrap());
            assert_eq!(replies.len(), 2, "two Subscribed replies, close_first={close_first}");
            for (_, reply) in replies {
                rig.reply(reply);
            }
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
            rig.reply(reply);
        }
        assert_eq!(rig.fanout.subscribers(&name("a")), [rig.from.conn]);
        let Rig { conn, fanout, subs, transport, from, .. } = &mut rig;
        let subs = &mut SlotSubscriptions { channels: subs, transport };
        assert_eq!(fanout.remove_conn(from.conn, subs, conn), [(name("a"), WS)]);
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
        rig.reply(reply);
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
                rig.reply(reply);
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
