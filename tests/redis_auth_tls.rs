//! `pushwire serve --redis` with a password and over TLS, against a real `redis-server` 7
//! (Debian's is built with TLS): `redis://:PASSWORD@` (`requirepass`) and
//! `redis://USER:PASSWORD@` (an ACL user) send `AUTH` on every connection, a wrong password
//! is a clear error at start; `rediss://` with `--redis-ca-file` (a test CA made at test time
//! with rcgen) carries every connection over TLS (`CLIENT LIST` shows them on the TLS port),
//! and a certificate the node does not trust, or TLS to a plain port, is a clear error at start.

mod common;
mod redis_support;

use std::process::Command;

use common::pki::TestPki;
use common::*;
use pushwire::redis::resp::{Command as RespCommand, Value};
use redis_support::RedisServer;

fn url(server: &Server, path: &str) -> String {
    format!("http://{}{}", server.addr, path)
}

/// `pushwire serve --redis URL EXTRA...` that must fail to start: its exit code and stderr.
fn failed_start(redis_url: &str, extra: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_pushwire"))
        .args(["serve", "--listen", "127.0.0.1:0", "--redis", redis_url])
        .args(extra)
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    assert!(!out.status.success(), "started with {redis_url}");
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// A message published on `a` reaches an SSE subscriber on `b` (pub/sub) and a short poll on
/// `b` (the history), with one cursor.
fn assert_shared(a: &Server, b: &Server, channel: &str) {
    let since = json_field(&poll(b, channel, None).text(), "next").unwrap();
    let query = format!("since={}", since.replace(':', "%3A"));
    let sse = Lines::curl_sse(&url(b, &format!("/channels/{channel}?{query}")));
    // The stream opens with the starting cursor: then the subscription is live.
    let opened = format!("id: {since}");
    assert_eq!(sse.until(|l| l.starts_with("id:")), opened);
    let id = publish(a, channel, "over redis");
    assert_eq!(sse.until(|l| l.starts_with("id:")), format!("id: {id}"));
    assert_eq!(sse.next().as_deref(), Some("data: over redis"));
    assert_eq!(data_values(&poll(b, channel, Some(&since)).text()), vec!["over redis"]);
}

/// `CLIENT LIST` lines of pushwire's connections.
fn pushwire_clients(redis: &RedisServer) -> Vec<String> {
    let Value::BulkString(list) = redis.client().call(&RespCommand::new("CLIENT").arg("LIST")) else {
        panic!("CLIENT LIST is a bulk string")
    };
    String::from_utf8(list)
        .unwrap()
        .lines()
        .filter(|l| l.contains(" name=pushwire-"))
        .map(String::from)
        .collect()
}

#[test]
fn redis_url_password_sends_auth_with_requirepass_and_an_acl_user() {
    let redis =
        RedisServer::start_args(&["--user", "alice", "on", ">alice-pw", "~*", "&*", "+@all"], Some("s3cret"));
    let a = Server::start(&["--redis", &format!("redis://:s3cret@127.0.0.1:{}", redis.port)]);
    let b = Server::start(&["--redis", &format!("redis://alice:alice-pw@127.0.0.1:{}", redis.port)]);
    assert_shared(&a, &b, "auth");
    let clients = pushwire_clients(&redis);
    assert_eq!(clients.len(), 4, "a command and a pub/sub connection per node: {clients:#?}");
    assert_eq!(clients.iter().filter(|l| l.contains(" user=alice ")).count(), 2, "{clients:#?}");
    assert_eq!(clients.iter().filter(|l| l.contains(" user=default ")).count(), 2, "{clients:#?}");

    // A wrong password, a wrong user, no password: a clear error at start, naming the server
    // (never the password).
    for bad in [
        format!("redis://:wrong@127.0.0.1:{}", redis.port),
        format!("redis://bob:alice-pw@127.0.0.1:{}", redis.port),
        format!("redis://127.0.0.1:{}", redis.port),
    ] {
        let (_, stderr) = failed_start(&bad, &[]);
        assert!(stderr.contains(&format!("127.0.0.1:{}", redis.port)), "{bad}: {stderr}");
        assert!(stderr.contains("WRONGPASS") || stderr.contains("NOAUTH"), "{bad}: {stderr}");
        assert!(!stderr.contains("wrong@") && !stderr.contains("alice-pw"), "{stderr}");
    }
}

#[test]
fn redis_rediss_url_runs_every_connection_over_tls_with_a_private_ca() {
    let pki = TestPki::new("rediss", &["localhost", "127.0.0.1"]);
    let redis = RedisServer::start_tls(&pki.cert(), &pki.key(), &pki.ca());
    let tls_port = redis.tls_port.unwrap();
    let ca = pki.ca();
    let ca = ca.to_str().unwrap();
    // By IP address (the certificate's IP SAN) and by name (SNI and the DNS SAN).
    let a = Server::start(&["--redis", &format!("rediss://127.0.0.1:{tls_port}"), "--redis-ca-file", ca]);
    let b = Server::start(&["--redis", &format!("rediss://localhost:{tls_port}"), "--redis-ca-file", ca]);
    assert_shared(&a, &b, "secure");
    let clients = pushwire_clients(&redis);
    assert_eq!(clients.len(), 4, "{clients:#?}");
    let on_tls_port = format!(" laddr=127.0.0.1:{tls_port} ");
    assert!(
        clients.iter().all(|l| l.contains(&on_tls_port)),
        "every connection on the TLS port: {clients:#?}"
    );
}

#[test]
fn redis_rediss_untrusted_certificate_or_plain_port_is_a_clear_error_at_start() {
    let pki = TestPki::new("rediss-bad", &["localhost", "127.0.0.1"]);
    let redis = RedisServer::start_tls(&pki.cert(), &pki.key(), &pki.ca());
    let tls_port = redis.tls_port.unwrap();
    // Mozilla's roots only: the test CA is unknown.
    let (_, stderr) = failed_start(&format!("rediss://127.0.0.1:{tls_port}"), &[]);
    assert!(stderr.contains("certificate"), "{stderr}");
    assert!(stderr.contains(&format!("rediss://127.0.0.1:{tls_port}")), "{stderr}");
    // A name the certificate does not carry.
    let other = TestPki::new("rediss-other", &["elsewhere.example"]);
    let redis_other = RedisServer::start_tls(&other.cert(), &other.key(), &other.ca());
    let other_ca = other.ca();
    let (_, stderr) = failed_start(
        &format!("rediss://127.0.0.1:{}", redis_other.tls_port.unwrap()),
        &["--redis-ca-file", other_ca.to_str().unwrap()],
    );
    assert!(stderr.contains("certificate"), "{stderr}");
    // TLS to the plain port: Redis takes the ClientHello for an unfinished inline command and
    // waits; the handshake times out.
    let ca = pki.ca();
    let (_, stderr) = failed_start(
        &format!("rediss://127.0.0.1:{}", redis.port),
        &["--redis-ca-file", ca.to_str().unwrap()],
    );
    assert!(stderr.contains("TLS handshake"), "{stderr}");
    // A CA file without a rediss:// URL is a usage error.
    let (code, stderr) = failed_start(
        &format!("redis://127.0.0.1:{}", redis.port),
        &["--redis-ca-file", ca.to_str().unwrap()],
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("rediss://"), "{stderr}");
}
