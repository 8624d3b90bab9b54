//! Tests of a connection's channel set: commands, authorization, answers, cursors, the
//! composite event id, multi-channel request forms and `Last-Event-ID` resumption.

use super::*;
use crate::hub::backend::ConnId;
use crate::hub::composite;
use crate::hub::SinkId;
use crate::transport::commands::{parse, CommandLimits};
use crate::transport::policy::{ChannelPattern, ChannelPolicy};
use crate::transport::token::{sign, Grant};

const CMD: CommandLimits =
    CommandLimits { max_info_bytes: 256, max_token_bytes: 4096, max_event_name_bytes: 64 };
const NOW: u64 = 1_800_000_000;

fn name(text: &str) -> ChannelName {
    ChannelName::parse(text).unwrap()
}

fn c(epoch: u64, offset: u64) -> Cursor {
    Cursor { epoch: Epoch(epoch), offset }
}

fn key() -> TokenKey {
    TokenKey::new(&[7u8; 32], None).unwrap()
}

fn policies() -> Policies {
    Policies(vec![
        ChannelPolicy::parse("private.*=token").unwrap(),
        ChannelPolicy::parse("news=publish-token").unwrap(),
    ])
}

fn token(user: &str, subscribe: &str, expires_at: u64) -> String {
    let patterns = [ChannelPattern::parse(subscribe).unwrap()];
    let grant =
        Grant { user: Some(user), expires_at, subscribe: &patterns, publish: &patterns, presence: &patterns };
    sign(&grant, &key())
}

struct World {
    policies: Policies,
    key: TokenKey,
    token_limits: TokenLimits,
}

impl World {
    fn new() -> World {
        World { policies: policies(), key: key(), token_limits: TokenLimits::default() }
    }
    fn auth(&self) -> Authority<'_> {
        Authority {
            policies: &self.policies,
            key: Some(&self.key),
            token_limits: &self.token_limits,
            unix_now_s: NOW,
        }
    }
}

/// Applies `text`. The outcome's reply is also one held behind commands waiting for the hub (a
/// copy: it stays held), so a test reads every command's reply, sent now or later.
fn send(rooms: &mut Rooms, world: &World, text: &str) -> Outcome {
    send_as(rooms, &world.auth(), text)
}

fn send_as(rooms: &mut Rooms, auth: &Authority<'_>, text: &str) -> Outcome {
    let mut out = rooms.handle_request(parse(text, &CMD), auth);
    if out.reply.is_none() {
        if let Some(Waiting::Reply(reply)) = rooms.pending.back() {
            out.reply = Some(reply.clone());
        }
    }
    out
}

fn json(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes).unwrap()
}

fn code(outcome: &Outcome) -> String {
    assert!(outcome.action.is_none(), "a refusal does nothing");
    json(outcome.reply.as_ref().unwrap())["code"].as_str().unwrap().to_string()
}

#[test]
fn subscribe_waits_for_the_hub_then_answers_with_req() {
    let world = World::new();
    let mut rooms = Rooms::new(RoomLimits::default(), None);
    let out =
        send(&mut rooms, &world, r#"{"type":"subscribe","channel":"a","joins":true,"info":{"n":1},"req":1}"#);
    assert!(out.reply.is_none());
    let Some(Action::Subscribe { channel, since: None, user: None, info: Some(info), joins: true }) =
        out.action
    else {
        panic!("{:?}", out.action)
    };
    assert_eq!((channel.as_str(), &*info), ("a", r#"{"n":1}"#));
    let reply = rooms.handle_answer(Answer::Subscribed(Ok(c(1, 4)))).unwrap();
    assert_eq!(json(&reply), serde_json::json!({"type":"ok","req":1,"channel":"a"}));
    assert_eq!(rooms.rooms(), &[Room { channel: name("a") }]);
    assert_eq!(rooms.handle_answer(Answer::Subscribed(Ok(c(1, 4)))), None, "nothing waits");
}

#[test]
fn per_channel_errors_answer_the_command_only() {
    let world = World::new();
    let mut rooms = Rooms::new(RoomLimits { max_channels_per_connection: 2, max_pending_commands: 8 }, None);
    send(&mut rooms, &world, r#"{"type":"subscribe","channel":"a"}"#);
    assert_eq!(
        code(&send(&mut rooms, &world, r#"{"type":"subscribe","channel":"a","req":"x"}"#)),
        "already_subscribed"
    );
    send(&mut rooms, &world, r#"{"type":"subscribe","channel":"b"}"#);
    let out = send(&mut rooms, &world, r#"{"type":"subscribe","channel":"c","req":9}"#);
    assert_eq!(code(&out), "too_many_channels");
    assert_eq!(json(out.reply.as_ref().unwrap())["req"], 9);
    assert_eq!(code(&send(&mut rooms, &world, r#"{"type":"unsubscribe","channel":"z"}"#)), "not_subscribed");
    assert_eq!(code(&send(&mut rooms, &world, r#"{"type":"dance"}"#)), "unknown_command");
    assert_eq!(code(&send(&mut rooms, &world, r#"{"type":"subscribe","channel":"a b"}"#)), "bad_channel");
    assert_eq!(rooms.rooms().len(), 2, "the set is unchanged by refusals");
}

#[test]
fn unsubscribe_frees_a_slot_at_once_and_its_ok_follows_the_subscribes() {
    let world = World::new();
    let mut rooms = Rooms::new(RoomLimits { max_channels_per_connection: 1, max_pending_commands: 8 }, None);
    rooms.handle_request(parse(r#"{"type":"subscribe","channel":"a","req":1}"#, &CMD), &world.auth());
    let out =
        rooms.handle_request(parse(r#"{"type":"unsubscribe","channel":"a","req":2}"#, &CMD), &world.auth());
    assert_eq!(out.action, Some(Action::Unsubscribe { channel: name("a") }));
    assert_eq!(out.reply, None, "held behind the subscribe's answer");
    assert!(rooms.rooms().is_empty(), "the slot is free at once");
    assert!(rooms.take_ready().is_empty());
    // The subscribe's answer still arrives (the backend applied both in order): ok, no room;
    // then the unsubscribe's ok.
    let reply = rooms.handle_answer(Answer::Subscribed(Ok(c(1, 0)))).unwrap();
    assert_eq!(json(&reply), serde_json::json!({"type":"ok","req":1,"channel":"a"}));
    let ready: Vec<_> = rooms.take_ready().iter().map(|r| json(r)).collect();
    assert_eq!(ready, [serde_json::json!({"type":"ok","req":2,"channel":"a"})]);
    assert!(rooms.rooms().is_empty());
    // Nothing waits now: a reply goes at once.
    let out = send(&mut rooms, &world, r#"{"type":"unsubscribe","channel":"z","req":3}"#);
    assert_eq!(code(&out), "not_subscribed");
    assert!(rooms.pending.is_empty());
    assert!(send(&mut rooms, &world, r#"{"type":"subscribe","channel":"b"}"#).action.is_some());
}

/// Replies keep the order of the commands: replies made here wait behind commands waiting for
/// the hub, at most `max_pending_commands` of them.
#[test]
fn replies_made_here_wait_behind_earlier_commands_and_are_bounded() {
    let world = World::new();
    let mut rooms = Rooms::new(RoomLimits { max_channels_per_connection: 8, max_pending_commands: 2 }, None);
    let sent = |rooms: &mut Rooms, text: &str| rooms.handle_request(parse(text, &CMD), &world.auth()).reply;
    assert_eq!(sent(&mut rooms, r#"{"type":"publish","channel":"a","data":"x","req":1}"#), None);
    assert_eq!(sent(&mut rooms, r#"{"type":"dance","req":2}"#), None);
    assert_eq!(sent(&mut rooms, r#"{"type":"presence","channel":"a","req":3}"#), None);
    assert!(!rooms.backlog_full());
    assert_eq!(sent(&mut rooms, r#"{"type":"unsubscribe","channel":"z","req":4}"#), None);
    assert!(rooms.backlog_full(), "two replies held, as many as commands may wait");
    let reqs = |replies: Vec<Vec<u8>>| replies.iter().map(|r| json(r)["req"].clone()).collect::<Vec<_>>();
    let one = rooms.handle_answer(Answer::Published(Ok(c(1, 1)))).unwrap();
    assert_eq!(json(&one)["req"], 1);
    assert_eq!(reqs(rooms.take_ready()), [serde_json::json!(2)]);
    let list = crate::hub::PresenceList { count: 0, members: Vec::new() };
    let three = rooms.handle_answer(Answer::Presence(list)).unwrap();
    assert_eq!(json(&three)["req"], 3);
    assert_eq!(reqs(rooms.take_ready()), [serde_json::json!(4)]);
    assert!(rooms.pending.is_empty() && !rooms.backlog_full());
    // A refusal by the hub releases the replies behind it the same way.
    sent(&mut rooms, r#"{"type":"subscribe","channel":"b","req":5}"#);
    sent(&mut rooms, r#"{"type":"subscribe","channel":"b","req":6}"#);
    let refused = rooms.handle_refused(HubError::BackendUnavailable).unwrap();
    assert_eq!(json(&refused.reply)["req"], 5);
    let six = rooms.take_ready();
    assert_eq!(
        (json(&six[0])["req"].clone(), json(&six[0])["code"].clone()),
        (serde_json::json!(6), serde_json::json!("already_subscribed"))
    );
}

#[test]
fn a_refused_subscription_leaves_the_set() {
    let world = World::new();
    let mut rooms = Rooms::new(RoomLimits::default(), None);
    send(&mut rooms, &world, r#"{"type":"subscribe","channel":"a","req":1}"#);
    let reply = rooms.handle_answer(Answer::Subscribed(Err(HubError::TooManyChannels))).unwrap();
    assert_eq!(json(&reply)["code"], "unavailable");
    assert!(rooms.rooms().is_empty());
}

/// Issue #14 item 2: subscribed, unsubscribed and subscribed again before the answers: the
/// first answer is the ended subscription's (superseded), so refused it leaves the room,
/// which is the second subscribe's, in place; refused too, the second takes it away.
#[test]
fn a_refused_answer_to_a_superseded_subscribe_leaves_the_new_room() {
    for refuse in [HubError::BackendUnavailable, HubError::TooManyChannels] {
        let world = World::new();
        let mut rooms = Rooms::new(RoomLimits::default(), None);
        send(&mut rooms, &world, r#"{"type":"subscribe","channel":"a","req":1}"#);
        send(&mut rooms, &world, r#"{"type":"unsubscribe","channel":"a","req":2}"#);
        send(&mut rooms, &world, r#"{"type":"subscribe","channel":"a","req":3}"#);
        assert!(rooms.oldest_is_superseded());
        let ready_after =
            |rooms: &mut Rooms| rooms.take_ready().iter().map(|r| json(r)["req"].clone()).collect::<Vec<_>>();
        // One through the hub's answer, one through a refusal before the hub (both paths).
        let reply = match refuse {
            HubError::BackendUnavailable => rooms.handle_answer(Answer::Subscribed(Err(refuse))).unwrap(),
            _ => {
                let refused = rooms.handle_refused(refuse).unwrap();
                assert_eq!(refused.unsubscribed, None);
                refused.reply
            }
        };
        assert_eq!(json(&reply)["req"], 1);
        assert_eq!(ready_after(&mut rooms), [serde_json::json!(2)], "the unsubscribe's ok, held behind it");
        assert_eq!(rooms.rooms(), [Room { channel: name("a") }]);
        assert!(!rooms.oldest_is_superseded(), "the second one's answer is its own");
        let refused = rooms.handle_refused(HubError::BackendUnavailable).unwrap();
        assert_eq!(refused.unsubscribed, Some(name("a")));
        assert!(rooms.rooms().is_empty());
    }
}

#[test]
fn answers_match_commands_in_submission_order() {
    let world = World::new();
    let mut rooms = Rooms::new(RoomLimits::default(), None);
    send(&mut rooms, &world, r#"{"type":"publish","channel":"a","data":"x","except_self":true,"req":1}"#);
    send(&mut rooms, &world, r#"{"type":"presence","channel":"a","req":2}"#);
    send(&mut rooms, &world, r#"{"type":"publish","channel":"b","data":"y","req":3}"#);
    let one = json(&rooms.handle_answer(Answer::Published(Ok(c(1, 1)))).unwrap());
    assert_eq!((one["req"].clone(), one["id"].clone()), (1.into(), "0000000000000001:1".into()));
    let member = Member {
        node: 0,
        conn: ConnAddr { sink: SinkId::new(1).unwrap(), conn: ConnId::new(5, 2) },
        user: Some("al\"ice".into()),
        info: Some(r#"{"n":1}"#.into()),
        joins: false,
    };
    let list = PresenceList { count: 1, members: vec![member] };
    let two = json(&rooms.handle_answer(Answer::Presence(list)).unwrap());
    assert_eq!(
        two,
        serde_json::json!({"type":"presence","req":2,"channel":"a","count":1,
            "members":[{"id":"010000000500000002","user":"al\"ice","info":{"n":1}}]})
    );
    let three = json(&rooms.handle_answer(Answer::Published(Err(HubError::MessageTooLarge))).unwrap());
    assert_eq!((three["req"].clone(), three["code"].clone()), (3.into(), "too_large".into()));
}

#[test]
fn pending_commands_are_bounded() {
    let world = World::new();
    let mut rooms = Rooms::new(RoomLimits { max_channels_per_connection: 8, max_pending_commands: 2 }, None);
    send(&mut rooms, &world, r#"{"type":"publish","channel":"a","data":"x"}"#);
    send(&mut rooms, &world, r#"{"type":"publish","channel":"a","data":"x"}"#);
    assert_eq!(
        code(&send(&mut rooms, &world, r#"{"type":"publish","channel":"a","data":"x"}"#)),
        "unavailable"
    );
    // Unsubscribe waits for nothing and is still taken.
    assert_eq!(code(&send(&mut rooms, &world, r#"{"type":"unsubscribe","channel":"a"}"#)), "not_subscribed");
    rooms.handle_answer(Answer::Published(Ok(c(1, 1))));
    assert!(send(&mut rooms, &world, r#"{"type":"publish","channel":"a","data":"x"}"#).action.is_some());
}

/// The authorization matrix of `pushwire.v1` on a `private.*=token` channel: missing,
/// malformed, expired, wrong-signature and wrong-channel tokens are refused, each with its
/// code; a good one lets the user in with its user id; unmatched channels stay anonymous.
#[test]
fn authorization_matrix() {
    let world = World::new();
    let good = token("alice", "private.a", NOW + 60);
    let forged = {
        let mut t = token("alice", "private.a", NOW + 60);
        let last = t.pop().unwrap();
        t.push(if last == 'A' { 'B' } else { 'A' });
        t
    };
    let other_key = sign(
        &Grant {
            user: Some("eve"),
            expires_at: NOW + 60,
            subscribe: &[ChannelPattern::Any],
            ..Grant::default()
        },
        &TokenKey::new(&[8u8; 32], None).unwrap(),
    );
    let rows: [(Option<&str>, &str, &str); 6] = [
        (None, "private.a", "not_allowed"),
        (Some("not.a.jwt"), "private.a", "bad_token"),
        (Some(&token("alice", "private.a", NOW - 1)), "private.a", "bad_token"),
        (Some(&forged), "private.a", "bad_token"),
        (Some(&other_key), "private.a", "bad_token"),
        (Some(&good), "private.b", "not_allowed"),
    ];
    for (token, channel, expected) in rows {
        let mut rooms = Rooms::new(RoomLimits::default(), None);
        let mut cmd = serde_json::json!({"type":"subscribe","channel":channel});
        if let Some(t) = token {
            cmd["token"] = t.into();
        }
        assert_eq!(code(&send(&mut rooms, &world, &cmd.to_string())), expected, "{token:?} {channel}");
    }
    let mut rooms = Rooms::new(RoomLimits::default(), None);
    let cmd = serde_json::json!({"type":"subscribe","channel":"private.a","token":good});
    let Some(Action::Subscribe { user, .. }) = send(&mut rooms, &world, &cmd.to_string()).action else {
        panic!()
    };
    assert_eq!(user.as_deref(), Some("alice"));
    assert!(send(&mut rooms, &world, r#"{"type":"subscribe","channel":"public"}"#).action.is_some());
    // news=publish-token: reading is anonymous, publishing is not.
    assert!(send(&mut rooms, &world, r#"{"type":"subscribe","channel":"news"}"#).action.is_some());
    assert_eq!(
        code(&send(&mut rooms, &world, r#"{"type":"publish","channel":"news","data":"x"}"#)),
        "not_allowed"
    );
    assert_eq!(
        code(&send(&mut rooms, &world, r#"{"type":"presence","channel":"private.b"}"#)),
        "not_allowed"
    );
}

#[test]
fn the_connection_token_is_refreshed_and_its_expiry_told() {
    let world = World::new();
    let claims = verify(&token("bob", "private.*", NOW + 10), &world.key, NOW, &world.token_limits).unwrap();
    let mut rooms = Rooms::new(RoomLimits::default(), Some(claims));
    assert_eq!(rooms.token_expires_at(), Some(NOW + 10));
    assert!(send(&mut rooms, &world, r#"{"type":"publish","channel":"private.x","data":"x"}"#)
        .action
        .is_some());
    let bad = send(&mut rooms, &world, r#"{"type":"refresh","token":"x.y.z","req":1}"#);
    assert_eq!(code(&bad), "bad_token");
    assert_eq!(rooms.token_expires_at(), Some(NOW + 10), "a bad refresh keeps the old token");
    let cmd = serde_json::json!({"type":"refresh","token":token("bob", "private.*", NOW + 3600),"req":2});
    let out = send(&mut rooms, &world, &cmd.to_string());
    assert_eq!(json(&out.reply.unwrap()), serde_json::json!({"type":"ok","req":2}));
    assert_eq!(rooms.token_expires_at(), Some(NOW + 3600));
    // Past its expiry, the connection's own token no longer grants anything.
    let late = Authority { unix_now_s: NOW + 3600, ..world.auth() };
    let out = send_as(&mut rooms, &late, r#"{"type":"subscribe","channel":"private.y"}"#);
    assert_eq!(code(&out), "bad_token");
    assert_eq!(CLOSE_TOKEN_EXPIRED, 4001);
}

#[test]
fn a_composite_event_id_resumes_every_channel_while_their_epochs_hold() {
    let world = World::new();
    let mut rooms = Rooms::new(RoomLimits::default(), None);
    send(&mut rooms, &world, r#"{"type":"subscribe","channel":"a"}"#);
    send(&mut rooms, &world, r#"{"type":"subscribe","channel":"b"}"#);
    rooms.handle_answer(Answer::Subscribed(Ok(c(1, 4))));
    rooms.handle_answer(Answer::Subscribed(Ok(c(2, 0))));
    let mut id = String::new();
    composite::write_compact(&mut id, [c(1, 4), c(2, 1)]);
    // It resumes both channels exactly while their epochs hold, and is Lost on both otherwise.
    let resume = resume_points(2, None, Some(id.as_bytes())).unwrap();
    assert_eq!(
        resume.clone().resolve(&[Epoch(1), Epoch(2)]),
        vec![Start::After(c(1, 4)), Start::After(c(2, 1))]
    );
    assert_eq!(resume.resolve(&[Epoch(1), Epoch(3)]), vec![Start::Lost, Start::Lost]);
    let channels: Vec<&ChannelName> = rooms.rooms().iter().map(|r| &r.channel).collect();
    assert_eq!(channels, [&name("a"), &name("b")]);
}

/// Issue #13 item 7 (WHATWG HTML `#the-last-event-id-header`): the browser sends the header by
/// itself, so an unreadable one resumes from now with a gap instead of a 400 that would stop
/// EventSource's reconnects; an explicit `?since=` that does not parse is still a 400.
#[test]
fn unreadable_last_event_id_is_a_gap_but_a_bad_since_is_refused() {
    for header in [&b"nonsense"[..], b"0000000000000001:5", b"\xff\xfe", b"0123456789abcdef.1.2.3"] {
        assert_eq!(
            resume_points(2, Some("ignored"), Some(header)),
            Ok(Resume::Each(vec![Start::Lost; 2])),
            "{header:?}"
        );
    }
    assert_eq!(
        resume_points(2, None, Some(b"0000000000000001:5,")),
        Ok(Resume::Each(vec![Start::After(c(1, 5)), Start::Tail]))
    );
    assert_eq!(resume_points(2, None, Some(b"")), Ok(Resume::Each(vec![Start::Tail; 2])));
    assert!(resume_points(2, Some("nonsense"), None).is_err());
    assert_eq!(
        resume_points(1, Some("0000000000000001:5"), None),
        Ok(Resume::Each(vec![Start::After(c(1, 5))]))
    );
}

fn channels(target: &str, max: usize) -> Option<Result<Vec<String>, ChannelsError>> {
    let limits = RoomLimits { max_channels_per_connection: max, max_pending_commands: 1 };
    parse_channels(&Target::parse(target).unwrap(), &limits)
        .map(|r| r.map(|v| v.iter().map(|c| c.as_str().to_string()).collect()))
}

#[test]
fn multi_channel_requests_name_channels_by_path_or_parameters() {
    let v = |names: &[&str]| Some(Ok(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()));
    assert_eq!(channels("/channels/a,b,c", 3), v(&["a", "b", "c"]));
    assert_eq!(channels("/channels/a?channel=z", 3), v(&["a"]));
    assert_eq!(channels("/channels?channel=a&since=x&channel=b%2Ec", 3), v(&["a", "b.c"]));
    assert_eq!(channels("/channels/a,b,c,d", 3), Some(Err(ChannelsError::TooMany)));
    assert_eq!(channels("/channels?channel=a&channel=b", 1), Some(Err(ChannelsError::TooMany)));
    assert_eq!(channels("/channels/a,,b", 3), Some(Err(ChannelsError::BadName)));
    assert_eq!(channels("/channels/a,a", 3), Some(Err(ChannelsError::Duplicate)));
    assert_eq!(channels("/channels", 3), Some(Err(ChannelsError::Empty)));
    assert_eq!(channels("/channels?channel=%ff", 3), Some(Err(ChannelsError::BadEncoding)));
    assert_eq!(channels("/channels?channel=a%20b", 3), Some(Err(ChannelsError::BadName)));
    assert_eq!(channels("/metrics", 3), None);
    let long = format!("/channels/{}", vec!["x"; 10_000].join(","));
    assert_eq!(channels(&long, 64), Some(Err(ChannelsError::TooMany)), "counted before copying");
    // A connection limit above 64 is for /ws: an HTTP list stops at MAX_CHANNELS_PER_REQUEST.
    let list =
        |n: usize| format!("/channels/{}", (0..n).map(|i| format!("c{i}")).collect::<Vec<_>>().join(","));
    assert_eq!(channels(&list(64), 255).map(|r| r.map(|v| v.len())), Some(Ok(64)));
    assert_eq!(channels(&list(65), 255), Some(Err(ChannelsError::TooMany)));
}

#[test]
fn presence_events_are_encoded_once_per_change() {
    let member = Member {
        node: 0,
        conn: ConnAddr { sink: SinkId::new(0).unwrap(), conn: ConnId::new(1, 1) },
        user: None,
        info: None,
        joins: true,
    };
    let event = PresenceEvent { channel: name("a"), change: Change::Leave, member, notify: vec![] };
    assert_eq!(
        json(&presence_event(&event)),
        serde_json::json!({"type":"leave","channel":"a","member":{"id":"000000000100000001"}})
    );
}
