//! The server API (`POST /api/CALL`, issue #17) and signed tokens, for tests of one node
//! (server_api.rs) and of several on Redis (redis_api.rs): one key, one token secret, a call
//! with or without the key, a call repeated until its answer is as wanted; and HS256 JWTs
//! signed here with `hmac`/`sha2`, independently of the server's own code (also for auth.rs
//! and presence.rs).

use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{json, Value};

use super::{exchange, Response, Server};

/// The API key the tests' servers are started with (`--api-key`).
pub const KEY: &str = "test-api-key-0123456789";
/// The HS256 secret the tests' servers are started with (`--token-secret`).
pub const SECRET: &str = "an-hs256-test-secret-of-32-bytes-or-more";

/// `POST /api/CALL` with `body` and an `Authorization` value (`None`: no field).
pub fn call_raw(server: &Server, call: &str, auth: Option<&str>, body: &[u8]) -> Response {
    let auth = auth.map_or(String::new(), |a| format!("Authorization: {a}\r\n"));
    let mut raw = format!(
        "POST /api/{call} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n{auth}Content-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    raw.extend_from_slice(body);
    exchange(server, &raw)
}

/// A call with the good key; the answer's status and JSON.
pub fn call(server: &Server, call: &str, body: Value) -> (u16, Value) {
    let res = call_raw(server, call, Some(&format!("apikey {KEY}")), body.to_string().as_bytes());
    let json = serde_json::from_slice(&res.body).unwrap_or_else(|e| panic!("{e}: {}", res.text()));
    (res.status, json)
}

/// Calls `call` with `body` until it answers 200 with JSON that `check` accepts, for at most
/// 20 s; that JSON.
pub fn wait_for(server: &Server, call_name: &str, body: Value, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, json) = call(server, call_name, body.clone());
        if status == 200 && check(&json) {
            return json;
        }
        assert!(Instant::now() < deadline, "{call_name} {body}: never as wanted; last {status} {json}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Asks `info` on `channel` until `check` accepts the answer (bounded); that answer.
pub fn wait_info(server: &Server, channel: &str, check: impl Fn(&Value) -> bool) -> Value {
    wait_for(server, "info", json!({ "channel": channel }), check)
}

/// The JOSE header of an HS256 JWT.
pub const HS256_HEADER: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

/// An HS256 JWT (RFC 7515 §7.1) with `header` over `claims`, signed with `secret`.
pub fn jwt_with(secret: &str, header: &str, claims: &Value) -> String {
    let input = format!("{}.{}", URL_SAFE_NO_PAD.encode(header), URL_SAFE_NO_PAD.encode(claims.to_string()));
    let mut mac = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()))
}

/// Seconds since the Unix epoch, for `exp` claims.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

/// An HS256 JWT (RFC 7519) for `user` signed with [`SECRET`], granting everything for ten
/// minutes.
pub fn jwt(user: &str) -> String {
    let claims =
        json!({"sub":user,"exp":unix_now() + 600,"subscribe":["*"],"publish":["*"],"presence":["*"]});
    jwt_with(SECRET, HS256_HEADER, &claims)
}

/// Asks `presence_stats` on `channel` until it counts `count` members (bounded).
pub fn wait_presence(server: &Server, channel: &str, count: u64) {
    wait_for(server, "presence_stats", json!({ "channel": channel }), |stats| stats["count"] == count);
}
