//! Tests of [`super::Conn`]: scripted byte conversations with a hub driven by hand and a fake
//! clock.

use super::*;
use crate::hub::{ChannelName, Hub, Payload, SinkId};
use std::time::Duration;

/// A connection and a hub driven by hand, with a fake clock. Messages published (by the
/// connection or by [`Script::publish`]) are delivered to the connection while it is
/// subscribed, as the event loop would.
struct Script {
    conn: Conn,
    hub: Hub,
    now: Instant,
    subscribed: Vec<ChannelName>,
}

impl Script {
    fn new(config: Config) -> Script {
        let now = Instant::now();
        let hub = Hub::new(config.hub, 7);
        let metrics = Arc::new(Metrics::default());
        Script { conn: Conn::new(Arc::new(config), metrics, now), hub, now, subscribed: Vec::new() }
    }

    /// The one connection's address.
    fn addr(&self) -> crate::hub::backend::ConnAddr {
        crate::hub::backend::ConnAddr {
            sink: SinkId::new(0).unwrap(),
            conn: crate::hub::backend::ConnId::new(0, 0),
        }
    }

    fn run_commands(&mut self) {
        while let Some(command) = self.conn.poll_command() {
            let from = self.addr();
            let applied = command.apply(&mut self.hub, from, self.now);
            if let Some(channel) = applied.subscribed {
                self.subscribed.push(channel);
            }
            if let Some(channel) = applied.unsubscribed {
                self.subscribed.retain(|c| *c != channel);
            }
            if let Some(reply) = applied.reply {
                self.conn.handle_reply(reply, self.now);
            }
            if let Some(published) = applied.published {
                self.deliver(&published.message);
            }
        }
    }

    fn deliver(&mut self, msg: &Arc<Message>) {
        if self.subscribed.contains(&msg.channel) {
            self.conn.handle_delivery(msg, self.now);
            self.run_commands();
        }
    }

    /// Publishes from elsewhere and delivers, returning what the connection wrote.
    fn publish(&mut self, channel: &str, text: &str) -> String {
        let channel = ChannelName::parse(channel).unwrap();
        let published = self.hub.publish(&channel, None, Payload::Text(Arc::from(text)), self.now).unwrap();
        self.deliver(&published.message);
        self.take_output()
    }

    /// Feeds `input` in pieces of `piece` bytes, applying commands after each, and returns
    /// everything written.
    fn send_in_pieces(&mut self, input: &[u8], piece: usize) -> String {
        for chunk in input.chunks(piece.max(1)) {
            self.conn.handle_input(&mut chunk.to_vec(), self.now);
            self.run_commands();
        }
        self.take_output()
    }

    fn send(&mut self, input: &[u8]) -> String {
        self.send_in_pieces(input, input.len())
    }

    fn take_output(&mut self) -> String {
        let n = self.conn.pending_output().len_bytes();
        let bytes = self.conn.pending_output().to_vec();
        self.conn.consume_output(n, self.now);
        String::from_utf8(bytes).unwrap()
    }

    fn hub_epoch(&mut self, channel: &str) -> String {
        let channel = ChannelName::parse(channel).unwrap();
        let replay = self.hub.read(&channel, crate::hub::Since::Tail, 0, self.now).unwrap();
        replay.next.epoch.to_string()
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
        if self.conn.poll_timeout().is_some_and(|t| t <= self.now) {
            self.conn.handle_timeout(self.now);
            self.run_commands();
        }
    }
}

const PIPELINE: &[u8] = b"POST /channels/a HTTP/1.1\r\nHost: t\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n\
        GET /channels/a?since=0000000000000000:0 HTTP/1.1\r\nHost: t\r\n\r\n\
        HEAD /healthz HTTP/1.1\r\nHost: t\r\n\r\n";

#[test]
fn rfc9112_9_3_pipelined_conversation_is_split_invariant() {
    let whole = Script::new(Config::default()).send(PIPELINE);
    assert_eq!(whole.matches("HTTP/1.1 ").count(), 3, "{whole}");
    assert!(whole.contains("201 Created"));
    assert!(whole.contains("\"data\":\"hi\""));
    for piece in [1, 2, 3, 7, 50] {
        assert_eq!(Script::new(Config::default()).send_in_pieces(PIPELINE, piece), whole, "piece {piece}");
    }
}

#[test]
fn idle_connection_holds_no_input_buffer() {
    let mut s = Script::new(Config::default());
    s.send_in_pieces(PIPELINE, 5);
    assert!(s.conn.rare.is_none());
    assert!(s.conn.pending_output().is_empty());
}

/// Issue #7 (idle connection memory): every connection, idle ones included, carries a
/// `Conn` in the event loop's slab, its session inline (a WebSocket one too: no box); a
/// layout regression shows here before it shows in `pushwire bench idle`.
#[test]
fn idle_connection_sizes_stay_pinned() {
    use crate::transport::websocket::WsSession;
    use std::mem::size_of;
    assert!(size_of::<Conn>() <= 136, "Conn is {} bytes", size_of::<Conn>());
    assert!(size_of::<Phase>() <= 96, "Phase is {} bytes", size_of::<Phase>());
    assert!(size_of::<Session>() <= 96, "Session is {} bytes", size_of::<Session>());
    assert!(size_of::<WsSession>() <= 96, "WsSession is {} bytes", size_of::<WsSession>());
    let feed = size_of::<crate::transport::feed::Feed>();
    assert!(feed <= 32, "Feed is {feed} bytes (a one-channel session holds one)");
    let ws = size_of::<crate::ws::WsConn>();
    assert!(ws <= 40, "WsConn is {ws} bytes");
    assert_eq!(size_of::<crate::output::Output>(), 8, "an idle connection's output is one pointer");
}

/// The open-transport gauge is kept by the connection (no guard): counted while serving,
/// uncounted when the response completes or the connection is dropped.
#[test]
fn transport_gauge_counts_serving_connections() {
    let gauge = |metrics: &Metrics, transport: &str, n: u32| {
        let text = metrics.render(&Default::default());
        let line = format!("pushwire_transport_connections_open{{transport=\"{transport}\"}} {n}\n");
        assert!(text.contains(&line), "{text}");
    };
    let mut s = Script::new(Config::default());
    let metrics = s.conn.env.metrics.clone();
    s.send(b"GET /channels/g HTTP/1.1\r\nHost: t\r\nAccept: text/event-stream\r\n\r\n");
    gauge(&metrics, "sse", 1);
    drop(s);
    gauge(&metrics, "sse", 0);
    let mut s = Script::new(Config::default());
    let metrics = s.conn.env.metrics.clone();
    s.send(b"GET /channels/g?wait=10 HTTP/1.1\r\nHost: t\r\n\r\n");
    gauge(&metrics, "longpoll", 1);
    let parked = |metrics: &Metrics, n: u32| {
        let text = metrics.render(&Default::default());
        assert!(text.contains(&format!("pushwire_longpolls_parked {n}\n")), "{text}");
    };
    parked(&metrics, 1);
    s.publish("g", "wake");
    gauge(&metrics, "longpoll", 0);
    parked(&metrics, 0);
    assert!(s.send(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n").contains("200 OK"));
    // A parked poll whose connection goes away is uncounted too.
    s.send(b"GET /channels/g?wait=10 HTTP/1.1\r\nHost: t\r\n\r\n");
    parked(&metrics, 1);
    drop(s);
    parked(&metrics, 0);
    gauge(&metrics, "longpoll", 0);
}

#[test]
fn idle_subscription_holds_no_command_queue() {
    let mut s = Script::new(Config::default());
    s.send(b"GET /channels/q HTTP/1.1\r\nHost: t\r\nAccept: text/event-stream\r\n\r\n");
    assert!(s.conn.transport().is_some());
    assert!(!s.conn.commands.is_allocated());
}

#[test]
fn rfc9110_15_5_9_slow_head_gets_408_at_the_request_deadline() {
    let mut s = Script::new(Config::default());
    assert_eq!(s.send(b"GET / HTTP/1.1\r\nHo"), "");
    s.advance(Duration::from_millis(9_999));
    assert_eq!(s.take_output(), "");
    s.advance(Duration::from_millis(1));
    let out = s.take_output();
    assert!(out.starts_with("HTTP/1.1 408 "), "{out}");
    assert!(out.contains("Connection: close"));
    assert!(s.conn.wants_write_shutdown());
}

#[test]
fn slowloris_gains_nothing_by_trickling_bytes() {
    let mut s = Script::new(Config::default());
    let mut out = String::new();
    for byte in b"GET / HTTP/1.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaa" {
        out += &s.send(&[*byte]);
        s.advance(Duration::from_millis(300));
    }
    assert!(out.starts_with("HTTP/1.1 408 "), "{out}");
}

#[test]
fn rfc9112_9_5_idle_keep_alive_connection_closes_quietly() {
    let mut s = Script::new(Config::default());
    assert!(s.send(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n").contains("200 OK"));
    s.advance(Duration::from_secs(59));
    assert!(!s.conn.wants_write_shutdown());
    s.advance(Duration::from_secs(1));
    assert!(s.conn.wants_write_shutdown());
    assert_eq!(s.take_output(), "");
}

#[test]
fn rfc9112_9_6_closing_discards_input_until_eof_or_linger() {
    let mut s = Script::new(Config::default());
    assert!(s.send(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").contains("Connection: close"));
    assert!(s.conn.wants_write_shutdown() && s.conn.wants_read());
    assert_eq!(s.send(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"), "");
    s.advance(Duration::from_secs(2));
    assert!(s.conn.is_closed());

    let mut s = Script::new(Config::default());
    s.send(b"BAD\r\n\r\n");
    s.conn.handle_eof(s.now);
    assert!(s.conn.is_closed());
}

#[test]
fn a_new_connection_that_sends_nothing_is_closed_at_the_request_timeout() {
    let mut s = Script::new(Config::default());
    s.advance(Duration::from_secs(10));
    assert!(s.conn.wants_write_shutdown());
}

#[test]
fn pipelined_requests_stop_being_read_while_output_is_over_the_bound() {
    let mut config = Config::default();
    config.transport.max_send_buffer_bytes = 4096;
    let mut s = Script::new(config);
    let mut many = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n".repeat(20);
    s.conn.handle_input(&mut many, s.now);
    s.run_commands();
    assert!(!s.conn.wants_read(), "backpressure once output passes the bound");
    let answered = s.take_output().matches("HTTP/1.1 200").count();
    assert!(answered < 20);
    // Draining the output resumes the buffered requests.
    let mut total = answered;
    for _ in 0..20 {
        s.run_commands();
        total += s.take_output().matches("HTTP/1.1 200").count();
    }
    assert_eq!(total, 20);
}

#[test]
fn eof_while_a_reply_is_pending_still_answers_then_closes() {
    let mut s = Script::new(Config::default());
    s.conn.handle_input(&mut b"GET /channels/q HTTP/1.1\r\nHost: t\r\n\r\n".to_vec(), s.now);
    s.conn.handle_eof(s.now);
    s.run_commands();
    let out = s.take_output();
    assert!(out.starts_with("HTTP/1.1 200 OK") && out.contains("Connection: close"), "{out}");
}

#[test]
fn html_sse_stream_replays_then_delivers_live_with_heartbeats() {
    let mut s = Script::new(Config::default());
    s.publish("n", "before");
    let head = s.send(
        b"GET /channels/n?since=0000000000000000:0 HTTP/1.1\r\nHost: t\r\nAccept: text/event-stream\r\n\r\n",
    );
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(head.contains("Content-Type: text/event-stream\r\n") && head.contains("Connection: close\r\n"));
    assert!(head.contains("retry: 2000\n\n"));
    // The foreign epoch is a gap; what is still there follows it.
    assert!(head.contains("event: gap\n"), "{head}");
    assert!(head.ends_with("data: before\n\n"), "{head}");
    assert_eq!(s.publish("n", "a\nb"), format!("id: {}:2\ndata: a\ndata: b\n\n", s.hub_epoch("n")));
    s.advance(Duration::from_secs(15));
    assert_eq!(s.take_output(), ": keepalive\n");
    // Input from an event-stream client is meaningless and ignored.
    assert_eq!(s.send(b"junk"), "");
}

#[test]
fn html_sse_last_event_id_resumes_exactly() {
    let mut s = Script::new(Config::default());
    s.publish("r", "one");
    s.publish("r", "two");
    let epoch = s.hub_epoch("r");
    let out = s.send(format!("GET /channels/r HTTP/1.1\r\nHost: t\r\nAccept: text/event-stream\r\nLast-Event-ID: {epoch}:1\r\n\r\n").as_bytes());
    assert!(!out.contains("gap"), "{out}");
    assert!(out.ends_with(&format!("id: {epoch}:2\ndata: two\n\n")), "{out}");
}

#[test]
fn rfc9112_7_1_stream_sends_one_chunk_per_message_and_heartbeats() {
    let mut s = Script::new(Config::default());
    let head = s.send(b"GET /channels/st HTTP/1.1\r\nHost: t\r\nAccept: application/x-ndjson\r\n\r\n");
    assert!(head.contains("Transfer-Encoding: chunked\r\n"), "{head}");
    let epoch = s.hub_epoch("st");
    let open = format!("{{\"type\":\"open\",\"next\":\"{epoch}:0\"}}\n");
    assert!(head.ends_with(&format!("\r\n\r\n{:x}\r\n{open}\r\n", open.len())), "{head}");
    let line = format!("{{\"id\":\"{epoch}:1\",\"data\":\"hi\"}}\n");
    assert_eq!(s.publish("st", "hi"), format!("{:x}\r\n{line}\r\n", line.len()));
    s.advance(Duration::from_secs(15));
    assert_eq!(s.take_output(), "15\r\n{\"type\":\"heartbeat\"}\n\r\n");
}

#[test]
fn rfc6202_2_long_poll_parks_until_a_publish_then_serves_the_next_poll() {
    let mut s = Script::new(Config::default());
    let tail = s.send(b"GET /channels/lp HTTP/1.1\r\nHost: t\r\n\r\n");
    let next = tail.split("\"next\":\"").nth(1).unwrap().split('"').next().unwrap().to_string();
    let parked =
        s.send(format!("GET /channels/lp?wait=10&since={next} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
    assert_eq!(parked, "", "parked: nothing written yet");
    s.advance(Duration::from_secs(3));
    let answer = s.publish("lp", "wake");
    assert!(answer.starts_with("HTTP/1.1 200 OK") && answer.contains("\"data\":\"wake\""), "{answer}");
    assert!(s.subscribed.is_empty(), "answered polls unsubscribe");
    // Keep-alive: the same connection serves the next poll.
    assert!(s.send(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n").contains("200 OK"));
}

#[test]
fn rfc6202_2_long_poll_expires_with_an_empty_answer_and_the_same_next() {
    let mut s = Script::new(Config::default());
    let out = s.send(b"GET /channels/x?wait=5 HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(out, "");
    s.advance(Duration::from_millis(4_999));
    assert_eq!(s.take_output(), "");
    s.advance(Duration::from_millis(1));
    let answer = s.take_output();
    assert!(answer.contains("\"messages\":[]") && answer.contains("\"gap\":false"), "{answer}");
    assert!(s.subscribed.is_empty());
}

#[test]
fn long_poll_answers_at_once_when_messages_follow_the_cursor() {
    let mut s = Script::new(Config::default());
    s.publish("y", "ready");
    let epoch = s.hub_epoch("y");
    let out =
        s.send(format!("GET /channels/y?wait=30&since={epoch}:0 HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
    assert!(out.contains("\"data\":\"ready\""), "{out}");
}

#[test]
fn parked_client_that_disconnects_is_forgotten() {
    let mut s = Script::new(Config::default());
    s.send(b"GET /channels/z?wait=30 HTTP/1.1\r\nHost: t\r\n\r\n");
    s.conn.handle_eof(s.now);
    assert!(s.conn.is_closed());
}

#[test]
fn slow_live_sse_consumer_is_closed_at_the_send_buffer_bound() {
    let mut config = Config::default();
    config.transport.max_send_buffer_bytes = 4096;
    let mut s = Script::new(config);
    s.conn.handle_input(
        &mut b"GET /channels/slow HTTP/1.1\r\nHost: t\r\nAccept: text/event-stream\r\n\r\n".to_vec(),
        s.now,
    );
    s.run_commands();
    let big = "x".repeat(1000);
    for _ in 0..10 {
        let channel = ChannelName::parse("slow").unwrap();
        let p = s.hub.publish(&channel, None, Payload::Text(Arc::from(big.as_str())), s.now).unwrap();
        s.deliver(&p.message);
    }
    assert_eq!(s.conn.close_reason(), Some("slow consumer"));
    assert!(s.conn.pending_output().len_bytes() <= 4096);
}

#[test]
fn a_replay_larger_than_the_send_buffer_is_paged_from_the_history() {
    let mut config = Config::default();
    config.transport.max_send_buffer_bytes = 4096;
    config.transport.max_batch_messages = 3;
    let mut s = Script::new(config);
    for i in 0..20 {
        s.publish("big", &format!("{i:0>500}"));
    }
    let epoch = s.hub_epoch("big");
    let mut out = s.send(
        format!("GET /channels/big?since={epoch}:0 HTTP/1.1\r\nHost: t\r\nAccept: text/event-stream\r\n\r\n")
            .as_bytes(),
    );
    // Each drain lets the feed read another page; a publish meanwhile is not lost.
    for round in 0..40 {
        if round == 5 {
            out += &s.publish("big", "live");
        }
        s.run_commands();
        out += &s.take_output();
    }
    let ids: Vec<u64> = out
        .lines()
        .filter_map(|l| l.strip_prefix("id: "))
        .map(|id| id.rsplit(':').next().unwrap().parse().unwrap())
        .collect();
    // id 0 is the opening cursor (an id line without data), then every message once.
    assert_eq!(ids, (0..=21).collect::<Vec<_>>(), "every message once, in order");
    assert!(!out.contains("gap"));
    assert_eq!(s.conn.close_reason(), None);
}
