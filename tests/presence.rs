//! Loopback tests of presence (issue #13 item 3) against the real binary: the `presence` and
//! `presence_stats` commands and `GET /channels/NAME/presence`; join and leave events in
//! order, only to members that asked; the user id of an authenticated member; the presence
//! grant of a channel policy; and churn: hundreds of connections joining and leaving random
//! channels and ending in every way a subscription ends (unsubscribe, close, abrupt socket
//! kill, heartbeat timeout, slow-consumer close), after which every presence list matches the
//! live subscriptions exactly and ends empty.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::api::{jwt_with, unix_now, HS256_HEADER, SECRET};
use common::v1::V1;
use common::*;
use serde_json::{json, Value};

fn sub(channel: &str, req: u64) -> Value {
    json!({"type":"subscribe","channel":channel,"req":req})
}

/// `GET /channels/NAME/presence` (with `fields`) and its status and JSON body.
fn http_presence(server: &Server, channel: &str, fields: &str) -> (u16, Value) {
    let raw = format!("GET /channels/{channel}/presence HTTP/1.1\r\nHost: t\r\n{fields}\r\n");
    let r = exchange(server, raw.as_bytes());
    (r.status, serde_json::from_slice(&r.body).unwrap_or(Value::Null))
}

/// Member ids of a presence answer, sorted.
fn ids(presence: &Value) -> Vec<String> {
    let mut ids: Vec<String> = presence["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

#[test]
fn presence_lists_members_and_join_leave_reach_only_watchers_in_order() {
    let server = Server::start(&[]);
    let mut watcher = V1::connect(&server, None);
    let reply =
        watcher.ask(json!({"type":"subscribe","channel":"room","joins":true,"info":{"name":"w"},"req":1}));
    assert_eq!(reply["type"], "ok", "{reply}");
    let mut quiet = V1::connect(&server, None);
    assert_eq!(quiet.ask(sub("room", 1))["type"], "ok");
    let mut b = V1::connect(&server, None);
    assert_eq!(b.ask(json!({"type":"subscribe","channel":"room","info":{"name":"b"},"req":1}))["type"], "ok");

    // The watcher is told of each join, in order, with the member's info; the quiet one,
    // which did not ask, is told nothing (checked below by what it receives next).
    let join_quiet = watcher.next();
    assert_eq!((join_quiet["type"].as_str(), join_quiet["channel"].as_str()), (Some("join"), Some("room")));
    assert!(join_quiet["member"].get("info").is_none(), "{join_quiet}");
    let join_b = watcher.next();
    assert_eq!(join_b["type"], "join", "{join_b}");
    assert_eq!(join_b["member"]["info"], json!({"name":"b"}));
    let b_id = join_b["member"]["id"].as_str().unwrap().to_string();

    // presence: every member with its id and info; presence_stats and HTTP agree.
    let list = quiet.ask(json!({"type":"presence","channel":"room","req":"p"}));
    assert_eq!((list["req"].as_str(), list["count"].as_u64()), (Some("p"), Some(3)), "{list}");
    assert!(ids(&list).contains(&b_id));
    let stats = quiet.ask(json!({"type":"presence_stats","channel":"room","req":2}));
    assert_eq!(stats, json!({"type":"presence_stats","req":2,"channel":"room","count":3}));
    let (status, http) = http_presence(&server, "room", "");
    assert_eq!((status, ids(&http)), (200, ids(&list)), "{http}");
    let (status, empty) = http_presence(&server, "nobody-here", "");
    assert_eq!((status, empty["count"].as_u64()), (200, Some(0)));

    // Leaves: an unsubscribe, then a close; each reaches the watcher once, in order.
    assert_eq!(b.ask(json!({"type":"unsubscribe","channel":"room","req":3}))["type"], "ok");
    let leave_b = watcher.next();
    assert_eq!(
        (leave_b["type"].as_str(), leave_b["member"]["id"].as_str()),
        (Some("leave"), Some(b_id.as_str()))
    );
    assert_eq!(leave_b["member"]["info"], json!({"name":"b"}), "a leave shows the member as it joined");
    let quiet_id = join_quiet["member"]["id"].as_str().unwrap().to_string();
    drop(quiet);
    let leave_quiet = watcher.next();
    assert_eq!(
        (leave_quiet["type"].as_str(), leave_quiet["member"]["id"].as_str()),
        (Some("leave"), Some(quiet_id.as_str()))
    );
    // Messages and presence events share one order per channel.
    publish(&server, "room", "after");
    assert_eq!(watcher.next()["data"], "after");
    let (_, http) = http_presence(&server, "room", "");
    assert_eq!(http["count"], 1, "{http}");
    // b, no longer subscribed, got no presence event of the channel.
    assert_eq!(b.ask(sub("other", 4))["type"], "ok");
    publish(&server, "other", "x");
    assert_eq!(b.next()["data"], "x");
}

/// A token for `user` with `claims`, valid for ten minutes.
fn token(user: &str, claims: Value) -> String {
    let mut claims = claims;
    claims["sub"] = user.into();
    claims["exp"] = (unix_now() + 600).into();
    jwt_with(SECRET, HS256_HEADER, &claims)
}

#[test]
fn authenticated_members_show_their_user_id_and_presence_needs_its_grant() {
    let server = Server::start(&["--token-secret", SECRET, "--channel-policy", "team.*=token"]);
    let alice = token("alice", json!({"subscribe":["team.*"],"presence":["team.*"]}));
    let bob = token("bob", json!({"subscribe":["team.*"]}));
    let mut a = V1::connect(&server, Some(&alice));
    let mut b = V1::connect(&server, Some(&bob));
    assert_eq!(a.ask(sub("team.x", 1))["type"], "ok");
    assert_eq!(b.ask(sub("team.x", 1))["type"], "ok");
    let list = a.ask(json!({"type":"presence","channel":"team.x","req":2}));
    let mut users: Vec<&str> =
        list["members"].as_array().unwrap().iter().map(|m| m["user"].as_str().unwrap()).collect();
    users.sort();
    assert_eq!(users, ["alice", "bob"], "{list}");
    // Bob's token grants reading, not presence.
    let refused = b.ask(json!({"type":"presence","channel":"team.x","req":3}));
    assert_eq!(refused["code"], "not_allowed", "{refused}");
    assert_eq!(http_presence(&server, "team.x", "").0, 401);
    assert_eq!(http_presence(&server, "team.x", &format!("Authorization: Bearer {bob}\r\n")).0, 403);
    let (status, body) = http_presence(&server, "team.x", &format!("Authorization: Bearer {alice}\r\n"));
    assert_eq!((status, body["count"].as_u64()), (200, Some(2)));
}

/// Polls `GET /channels/NAME/presence` until every channel's member count is `want`'s (the
/// server learns of abrupt closes on its own time); panics with the difference after 30 s.
fn await_presence(server: &Server, want: &BTreeMap<String, usize>) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let seen: BTreeMap<String, usize> = want
            .keys()
            .map(|c| (c.clone(), http_presence(server, c, "").1["count"].as_u64().unwrap() as usize))
            .collect();
        if &seen == want {
            return;
        }
        assert!(Instant::now() < deadline, "presence {seen:?}, live subscriptions {want:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[derive(Debug, Clone, Copy)]
enum End {
    /// `unsubscribe` every channel, then close.
    Unsubscribe,
    /// The WebSocket closing handshake.
    Close,
    /// The socket dropped without a close frame.
    Kill,
    /// Left open, without its subscriptions (they ended by `unsubscribe`), until the round
    /// ends.
    Linger,
}

#[test]
fn presence_under_churn_matches_live_subscriptions_and_never_leaks() {
    // No heartbeat here (the timeout is the next test's), whatever the load; small send buffers
    // so that a client that never reads is closed as a slow consumer.
    let server = Server::start(&[
        "--ws-ping-interval",
        "0",
        "--max-send-buffer-bytes",
        "65536",
        "--socket-send-buffer-bytes",
        "8192",
    ]);
    let channels: Vec<String> = (0..12).map(|i| format!("churn.{i}")).collect();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut live: BTreeMap<String, usize> = channels.iter().map(|c| (c.clone(), 0)).collect();
    let mut total = 0;
    // A watcher of every channel counts joins and leaves (it answers pings by sending a
    // command now and then, below).
    let mut watcher = V1::connect(&server, None);
    for (i, c) in channels.iter().enumerate() {
        let reply = watcher.ask(json!({"type":"subscribe","channel":c,"joins":true,"req":i}));
        assert_eq!(reply["type"], "ok");
    }
    for round in 0..5 {
        // 200 connections per round, each on 1 to 4 random channels.
        let mut clients: Vec<(V1, BTreeSet<String>, End)> = Vec::new();
        let mut round_subscriptions = 0;
        for _ in 0..200 {
            let mut client = V1::connect(&server, None);
            let mut mine = BTreeSet::new();
            for req in 0..1 + rng.below(4) {
                let channel = channels[rng.below(channels.len())].clone();
                if mine.insert(channel.clone()) {
                    // Answered once the hub applied it.
                    assert_eq!(client.ask(sub(&channel, req as u64))["type"], "ok");
                    *live.get_mut(&channel).unwrap() += 1;
                }
            }
            round_subscriptions += mine.len();
            let end = [End::Unsubscribe, End::Close, End::Kill, End::Linger][rng.below(4)];
            clients.push((client, mine, end));
        }
        total += clients.len();
        await_presence(&server, &live.iter().map(|(c, n)| (c.clone(), n + 1)).collect());
        // End them all, each its own way.
        let mut lingering = Vec::new();
        for (mut client, mine, end) in clients {
            match end {
                End::Unsubscribe | End::Linger => {
                    for (req, c) in mine.iter().enumerate() {
                        let reply = client.ask(json!({"type":"unsubscribe","channel":c,"req":req}));
                        assert_eq!(reply["type"], "ok", "{reply}");
                    }
                    if matches!(end, End::Linger) {
                        lingering.push(client);
                    }
                }
                End::Close => client.ws.send(pushwire::ws::OpCode::Close, &1000u16.to_be_bytes()),
                End::Kill => drop(client),
            }
            for c in &mine {
                *live.get_mut(c).unwrap() -= 1;
            }
        }
        await_presence(&server, &live.iter().map(|(c, n)| (c.clone(), n + 1)).collect());
        drop(lingering);
        // The watcher saw every join and every leave of the round (each connection's own
        // subscriptions once each), and nothing else.
        let mut joins = 0;
        let mut leaves = 0;
        while joins < round_subscriptions || leaves < round_subscriptions {
            match watcher.next()["type"].as_str() {
                Some("join") => joins += 1,
                Some("leave") => leaves += 1,
                other => panic!("unexpected {other:?}"),
            }
        }
        let stats = watcher.ask(json!({"type":"presence_stats","channel":"churn.0","req":round}));
        assert_eq!(stats["type"], "presence_stats");
        assert!(watcher.others_is_empty(), "more presence events than subscriptions");
    }
    assert_eq!(total, 1000);

    // Slow consumers: subscribed, never reading, flooded until the server closes them.
    let big = "x".repeat(60_000);
    let mut slow: Vec<V1> = (0..4).map(|_| V1::connect(&server, None)).collect();
    for client in &mut slow {
        assert_eq!(client.ask(sub("churn.slow", 1))["type"], "ok");
    }
    let mut want = live.clone();
    want.insert("churn.slow".into(), 4);
    await_presence(
        &server,
        &want.iter().map(|(c, n)| (c.clone(), if c == "churn.slow" { *n } else { n + 1 })).collect(),
    );
    let closes = || {
        let text = metrics_text(&server);
        text.lines()
            .find_map(|l| l.strip_prefix("pushwire_slow_consumer_closes_total "))
            .unwrap()
            .parse::<u64>()
            .unwrap()
    };
    for _ in 0..2000 {
        if closes() >= 4 {
            break;
        }
        publish(&server, "churn.slow", &big);
    }
    assert!(closes() >= 4, "the slow consumers were closed");
    want.insert("churn.slow".into(), 0);
    drop(watcher);
    await_presence(&server, &want.keys().map(|c| (c.clone(), 0)).collect());
    drop(slow);
}

#[test]
fn presence_entries_leave_with_connections_that_time_out() {
    // Clients that never answer the server's pings are closed by the heartbeat (RFC 6455
    // §5.5.2) after about ping + pong + close timeouts.
    let server =
        Server::start(&["--ws-ping-interval", "1", "--ws-pong-timeout", "1", "--ws-close-timeout", "1"]);
    let silent: Vec<V1> = (0..50)
        .map(|i| {
            let mut client = V1::connect(&server, None);
            let reply = client.ask(sub(&format!("idle.{}", i % 5), 1));
            assert_eq!(reply["type"], "ok", "{reply}");
            client
        })
        .collect();
    // They may already be timing out: the count only goes down, to zero.
    let want: BTreeMap<String, usize> = (0..5).map(|i| (format!("idle.{i}"), 0)).collect();
    await_presence(&server, &want);
    drop(silent);
}

#[test]
fn command_limits_come_from_the_flags() {
    let server = Server::start(&[
        "--max-channels-per-connection",
        "2",
        "--max-presence-members",
        "1",
        "--max-presence-info-bytes",
        "16",
    ]);
    let mut a = V1::connect(&server, None);
    assert_eq!(a.ask(sub("l.a", 1))["type"], "ok");
    assert_eq!(a.ask(sub("l.b", 2))["type"], "ok");
    assert_eq!(a.ask(sub("l.c", 3))["code"], "too_many_channels");
    let mut b = V1::connect(&server, None);
    let full = b.ask(sub("l.a", 1));
    assert_eq!(
        (full["code"].as_str(), full["reason"].as_str()),
        (Some("unavailable"), Some("the channel has too many members")),
        "{full}"
    );
    let big = b.ask(json!({"type":"subscribe","channel":"l.d","info":{"name":"a long name"},"req":2}));
    assert_eq!(big["code"], "too_large", "{big}");
    // The refused subscriptions left nothing behind: b can still take two channels.
    assert_eq!(b.ask(sub("l.e", 3))["type"], "ok");
    assert_eq!(b.ask(sub("l.f", 4))["type"], "ok");
    assert_eq!(http_presence(&server, "l.a", "").1["count"], 1);
    assert_eq!(http_presence(&server, "l.d", "").1["count"], 0);
}
