//! Chaos across three `pushwire serve --redis` nodes and one `redis-server` (no persistence):
//! SSE subscribers that resume with `Last-Event-ID` on a random live node whenever their
//! stream ends, a publisher that publishes to random live nodes (retrying a failed publish
//! with a new payload, so an attempt that ran without its answer shows as one more message,
//! never as a duplicate of another), and faults injected meanwhile: a node killed (SIGKILL)
//! and another started, the nodes' pub/sub connections cut (`CLIENT KILL TYPE pubsub`), and
//! one Redis restart (its data lost: a new epoch).
//!
//! Checked for every subscriber: within an epoch, offsets advance by one (nothing lost,
//! nothing twice); a gap is announced only where the epoch changes (where Redis lost data);
//! every cursor carries the same message on every subscriber; and every publish answered in
//! the last epoch reached every subscriber.
//!
//! Bounded: 600 messages, every subscriber gives up (failing the test) after a deadline.

mod common;
mod redis_support;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use redis_support::RedisServer;

const MESSAGES: usize = 600;
const SUBSCRIBERS: usize = 6;
const DEADLINE: Duration = Duration::from_secs(90);

/// One event as a subscriber received it.
#[derive(Debug, Clone)]
enum Got {
    Message { id: String, data: String },
    Gap { next: String },
}

fn epoch(id: &str) -> &str {
    id.split(':').next().unwrap()
}

fn offset(id: &str) -> u64 {
    id.rsplit(':').next().unwrap().parse().unwrap()
}

type Nodes = Arc<Mutex<Vec<Option<SocketAddr>>>>;

fn live_node(nodes: &Nodes, rng: &mut Rng) -> SocketAddr {
    loop {
        let live: Vec<SocketAddr> = nodes.lock().unwrap().iter().flatten().copied().collect();
        if !live.is_empty() {
            return live[rng.below(live.len())];
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Reads one SSE stream until it ends; pushes what it brings. `Err` when it never opened.
fn read_stream(addr: SocketAddr, last: Option<&str>, got: &mut Vec<Got>) -> Result<(), String> {
    let mut stream = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let resume = last.map(|id| format!("Last-Event-ID: {id}\r\n")).unwrap_or_default();
    let request =
        format!("GET /channels/chaos HTTP/1.1\r\nHost: t\r\nAccept: text/event-stream\r\n{resume}\r\n");
    stream.write_all(request.as_bytes()).map_err(|e| e.to_string())?;
    let mut reader = BufReader::new(stream);
    let mut status = String::new();
    reader.read_line(&mut status).map_err(|e| e.to_string())?;
    if !status.starts_with("HTTP/1.1 200") {
        return Err(status);
    }
    let (mut id, mut event, mut data) = (None::<String>, None::<String>, None::<String>);
    let mut in_head = true;
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return Ok(()),
            Ok(_) if !line.ends_with('\n') => return Ok(()), // Torn by a kill: not an event.
            Ok(_) => {}
        }
        let line = line.trim_end_matches(['\r', '\n']);
        if in_head {
            in_head = !line.is_empty();
            continue;
        }
        if line.is_empty() {
            if let Some(data) = data.take() {
                let id = id.take().expect("every event has an id");
                got.push(match event.take().as_deref() {
                    Some("gap") => Got::Gap { next: id },
                    None => Got::Message { id, data },
                    Some(other) => panic!("unexpected event {other}"),
                });
            }
            (id, event) = (None, None);
            continue;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value).to_string();
        match field {
            "id" => id = Some(value),
            "event" => event = Some(value),
            "data" => data = Some(value),
            _ => {}
        }
    }
}

fn last_id(got: &[Got]) -> Option<String> {
    got.last().map(|g| match g {
        Got::Message { id, .. } => id.clone(),
        Got::Gap { next } => next.clone(),
    })
}

fn ends(got: &[Got]) -> bool {
    got.iter().any(|g| matches!(g, Got::Message { data, .. } if data.starts_with("end.")))
}

/// Publishes `body` to live nodes until one answers 201; the cursor.
fn publish_somewhere(nodes: &Nodes, rng: &mut Rng, body: &str) -> String {
    let deadline = Instant::now() + DEADLINE;
    let mut attempt = 0;
    loop {
        assert!(Instant::now() < deadline, "publish {body} never succeeded");
        let addr = live_node(nodes, rng);
        // A new payload per attempt: an attempt that ran without its answer is one more message.
        let payload = format!("{body}.{attempt}");
        attempt += 1;
        let Ok(mut stream) = TcpStream::connect(addr) else { continue };
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        // One request per connection, so the answer ends with the connection.
        let request =
            publish_request("chaos", &payload).replacen("\r\n\r\n", "\r\nConnection: close\r\n\r\n", 1);
        if stream.write_all(request.as_bytes()).is_err() {
            continue;
        }
        let mut reader = BufReader::new(stream);
        let mut status = String::new();
        if reader.read_line(&mut status).is_err() || !status.starts_with("HTTP/1.1 201") {
            thread::sleep(Duration::from_millis(20));
            continue;
        }
        let mut rest = String::new();
        let _ = std::io::Read::read_to_string(&mut reader, &mut rest);
        if let Some(id) = rest.split("\"id\":\"").nth(1).and_then(|s| s.split('"').next()) {
            return id.to_string();
        }
    }
}

fn start_node(redis: &RedisServer) -> Server {
    Server::start(&["--redis", &format!("redis://127.0.0.1:{}", redis.port), "--threads", "1"])
}

#[test]
fn redis_chaos_three_nodes_node_kills_pubsub_cuts_and_a_redis_restart() {
    let seed =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1;
    eprintln!("redis chaos seed {seed}");
    let mut redis = RedisServer::start();
    let mut servers: Vec<Option<Server>> = (0..3).map(|_| Some(start_node(&redis))).collect();
    let nodes: Nodes = Arc::new(Mutex::new(servers.iter().map(|s| s.as_ref().map(|s| s.addr)).collect()));
    // The channel exists (with an epoch) before the subscribers start from its tail.
    let mut rng = Rng(seed);
    let first = publish_somewhere(&nodes, &mut rng, "start");

    let subscribers: Vec<_> = (0..SUBSCRIBERS)
        .map(|i| {
            let nodes = nodes.clone();
            let first = first.clone();
            thread::spawn(move || {
                let mut rng = Rng(seed.wrapping_mul(i as u64 + 3) | 1);
                let mut got = vec![Got::Message { id: first, data: "start.0".into() }];
                let deadline = Instant::now() + DEADLINE;
                while !ends(&got) {
                    assert!(Instant::now() < deadline, "subscriber {i} did not finish: {got:?}");
                    let addr = live_node(&nodes, &mut rng);
                    if read_stream(addr, last_id(&got).as_deref(), &mut got).is_err() {
                        thread::sleep(Duration::from_millis(50));
                    }
                }
                got
            })
        })
        .collect();

    let mut acked: Vec<(String, String)> = Vec::new();
    for i in 0..MESSAGES {
        let body = format!("m{i}");
        let id = publish_somewhere(&nodes, &mut rng, &body);
        acked.push((id, body));
        match i {
            // A node is killed and a new one takes its place a little later.
            150 => {
                let victim = rng.below(3);
                if let Some(mut server) = servers[victim].take() {
                    nodes.lock().unwrap()[victim] = None;
                    server.kill9();
                }
            }
            250 => {
                let slot = servers.iter().position(Option::is_none).unwrap();
                let server = start_node(&redis);
                nodes.lock().unwrap()[slot] = Some(server.addr);
                servers[slot] = Some(server);
            }
            // Every node's pub/sub connection is cut.
            100 | 300 => {
                let mut admin = redis.client();
                admin.call(
                    &pushwire::redis::resp::Command::new("CLIENT").arg("KILL").arg("TYPE").arg("pubsub"),
                );
            }
            // Redis restarts without its data: every channel starts a new epoch. (A moment
            // first, so the subscribers mostly caught up and the gap is not only the restart's.)
            400 => {
                thread::sleep(Duration::from_millis(300));
                redis.kill9();
                redis.restart();
            }
            _ => {}
        }
        if i % 50 == 0 {
            thread::sleep(Duration::from_millis(20));
        }
    }
    publish_somewhere(&nodes, &mut rng, "end");
    let results: Vec<Vec<Got>> = subscribers.into_iter().map(|s| s.join().unwrap()).collect();

    let last_epoch = epoch(&acked.last().unwrap().0).to_string();
    let epochs: std::collections::BTreeSet<&str> = acked.iter().map(|(id, _)| epoch(id)).collect();
    assert_eq!(epochs.len(), 2, "one epoch before the Redis restart, one after");
    let extra = acked.iter().filter(|(id, _)| epoch(id) == last_epoch).count();
    eprintln!("{} publishes answered, {extra} in the last epoch", acked.len());
    let mut by_id: HashMap<String, String> = HashMap::new();
    for (i, got) in results.iter().enumerate() {
        let mut previous: Option<&str> = None;
        let mut after_gap = false;
        for item in got {
            match item {
                Got::Gap { .. } => after_gap = true,
                Got::Message { id, data } => {
                    if let Some(prev) = previous {
                        if epoch(prev) == epoch(id) {
                            assert!(!after_gap, "subscriber {i}: a gap within epoch {} at {id}", epoch(id));
                            assert_eq!(offset(id), offset(prev) + 1, "subscriber {i}: {prev} then {id}");
                        } else {
                            assert!(after_gap, "subscriber {i}: epoch changed at {id} without a gap");
                        }
                    }
                    after_gap = false;
                    previous = Some(id);
                    let seen = by_id.entry(id.clone()).or_insert_with(|| data.clone());
                    assert_eq!(seen, data, "subscriber {i}: {id} carries another message elsewhere");
                }
            }
        }
        let gaps = got.iter().filter(|g| matches!(g, Got::Gap { .. })).count();
        let first_epoch =
            got.iter().filter(|g| matches!(g, Got::Message { id, .. } if epoch(id) != last_epoch)).count();
        eprintln!("subscriber {i}: {} items, {first_epoch} of the first epoch, {gaps} gaps", got.len());
        assert!(gaps >= 1, "subscriber {i}: the Redis restart is a gap");
        // Every publish answered in the last epoch reached this subscriber.
        for (id, body) in acked.iter().filter(|(id, _)| epoch(id) == last_epoch) {
            let data = got.iter().find_map(|g| match g {
                Got::Message { id: got_id, data } if got_id == id => Some(data),
                _ => None,
            });
            let data = data.unwrap_or_else(|| panic!("subscriber {i} never got {id} ({body})"));
            assert!(data.starts_with(&format!("{body}.")), "{id}: {data} is not {body}");
        }
    }
    drop(servers);
}
