//! Publish throughput into Redis through one node's broker (`pushwire::net::redis_broker`),
//! with and without pipelining: the figure of README "Performance", "Across nodes (Redis)".
//!
//! ```sh
//! redis-server --port 6399 --save '' --appendonly no &
//! cargo run --release --example redis_publish_rate -- redis://127.0.0.1:6399 200000 100 1,16,256,4096
//! ```
//!
//! Arguments: the Redis URL, the messages per run, the channels they are spread over (round
//! robin), and the windows to run: the most publishes in flight at once (1 = one round trip
//! per message, no pipelining). Each run starts its own broker (one command connection, as a
//! node has), submits 64-byte messages as the event loops would (through `BrokerClient`),
//! keeps at most `window` unanswered, and prints messages per second from the first submit to
//! the last answer. Every answer must be a cursor; a failure is counted and reported.
//!
//! Does not: go through HTTP or an event loop (that is `pushwire bench fanout`), or subscribe.

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use pushwire::hub::{ChannelName, Payload, SinkId};
use pushwire::net::redis_broker::{Broker, BrokerConfig, BrokerEvent, BrokerOutbox, BrokerRequest, Limits};
use pushwire::redis::keys::Namespace;
use pushwire::redis::url::RedisUrl;

/// Counts the answers: (cursors, failures).
#[derive(Default)]
struct Answers {
    counts: Mutex<(u64, u64)>,
    changed: Condvar,
}

impl BrokerOutbox for Answers {
    fn deliver(&self, _sink: SinkId, events: Vec<BrokerEvent>) {
        let mut counts = self.counts.lock().unwrap();
        for event in events {
            if let BrokerEvent::Published { result, .. } = event {
                match result {
                    Ok(_) => counts.0 += 1,
                    Err(_) => counts.1 += 1,
                }
            }
        }
        self.changed.notify_all();
    }

    // This benchmark makes no server API calls.
    fn disconnect(&self, _: std::sync::Arc<pushwire::hub::backend::Disconnect>) {}
}

impl Answers {
    /// Waits until at most `in_flight` of `submitted` are unanswered; the answers so far.
    fn wait(&self, submitted: u64, in_flight: u64) -> (u64, u64) {
        let mut counts = self.counts.lock().unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while submitted - (counts.0 + counts.1) > in_flight {
            let left = deadline.checked_duration_since(Instant::now()).expect("answers within 60 s");
            counts = self.changed.wait_timeout(counts, left).unwrap().0;
        }
        *counts
    }
}

fn run(url: &RedisUrl, messages: u64, channels: &[ChannelName], window: u64) {
    let answers = Arc::new(Answers::default());
    let config = BrokerConfig {
        url: url.clone(),
        tls: Default::default(),
        namespace: Namespace::default(),
        history_ttl: Duration::from_secs(60),
        max_history_messages: 1_000,
        node_name: format!("rate-{window}"),
        node_id: 1,
        shard_index: 0,
        shard_count: 1,
        pubsub_shards: 1,
        limits: Limits::default(),
    };
    let broker = Broker::start(config, answers.clone()).expect("redis reachable");
    let client = broker.client();
    let sink = SinkId::new(0).unwrap();
    let payload = Payload::Text(Arc::from("x".repeat(64)));
    let start = Instant::now();
    for i in 0..messages {
        if i >= window {
            answers.wait(i, window - 1);
        }
        let channel = &channels[(i % channels.len() as u64) as usize];
        // A full queue: wait for every answer and try again.
        loop {
            let request = BrokerRequest::Publish {
                sink,
                token: i,
                channel: channel.clone(),
                event: None,
                payload: payload.clone(),
            };
            if client.submit(request).is_ok() {
                break;
            }
            answers.wait(i, 0);
        }
    }
    let (ok, failed) = answers.wait(messages, 0);
    let elapsed = start.elapsed();
    println!(
        "window {window:>5}: {ok} published, {failed} failed in {:.2} s: {:.0} messages/s",
        elapsed.as_secs_f64(),
        ok as f64 / elapsed.as_secs_f64()
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let url = RedisUrl::parse(args.get(1).map_or("redis://127.0.0.1:6379", String::as_str))
        .expect("a redis:// URL");
    let messages: u64 = args.get(2).map_or(100_000, |a| a.parse().expect("messages"));
    let channel_count: usize = args.get(3).map_or(100, |a| a.parse().expect("channels"));
    let windows: Vec<u64> = args
        .get(4)
        .map_or("1,16,256,4096", String::as_str)
        .split(',')
        .map(|w| w.parse().expect("window"))
        .collect();
    let channels: Vec<ChannelName> =
        (0..channel_count).map(|i| ChannelName::parse(&format!("rate{i}")).unwrap()).collect();
    println!("{messages} messages of 64 bytes over {channel_count} channels into {url}");
    for window in windows {
        run(&url, messages, &channels, window.max(1));
    }
}
