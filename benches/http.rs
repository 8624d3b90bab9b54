//! Request heads (RFC 9112 §2-§5) and routing, per request, on heads real clients send: a curl
//! long poll, a browser's WebSocket upgrade and a browser's `EventSource` request.
//!
//! `scan_parse` is what `Conn` does once per request: the incremental end-of-head scan, then one
//! `parse_request_head` (httparse plus owned copies of the fields and the Host rule). The
//! reference `httparse_only` is the bare httparse parse of the same bytes, borrowing them.
//! `route` picks the transport from a parsed head; a WebSocket route includes the opening
//! handshake checks and the `Sec-WebSocket-Accept` digest (SHA-1, base64).

mod common;

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use pushwire::config::Config;
use pushwire::http1::head::{parse_request_head, HeadScanner};
use pushwire::http1::MAX_HEADERS_CAP;
use pushwire::transport::{route, Route};

const CURL_POLL: &str = "GET /channels/quotes?wait=25&since=00c0ffee00c0ffee:42 HTTP/1.1\r\n\
Host: localhost:8080\r\n\
User-Agent: curl/8.5.0\r\n\
Accept: */*\r\n\
\r\n";

const BROWSER_WEBSOCKET: &str = "GET /channels/quotes HTTP/1.1\r\n\
Host: localhost:8080\r\n\
Connection: Upgrade\r\n\
Pragma: no-cache\r\n\
Cache-Control: no-cache\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36\r\n\
Upgrade: websocket\r\n\
Origin: http://localhost:8080\r\n\
Sec-WebSocket-Version: 13\r\n\
Accept-Encoding: gzip, deflate, br, zstd\r\n\
Accept-Language: en-US,en;q=0.9,de;q=0.8\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\
Sec-WebSocket-Protocol: pushwire.v1\r\n\
\r\n";

const BROWSER_EVENTSOURCE: &str = "GET /channels/quotes HTTP/1.1\r\n\
Host: localhost:8080\r\n\
Connection: keep-alive\r\n\
Accept: text/event-stream\r\n\
Cache-Control: no-cache\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36\r\n\
Origin: http://localhost:8080\r\n\
Referer: http://localhost:8080/\r\n\
Accept-Encoding: gzip, deflate, br, zstd\r\n\
Accept-Language: en-US,en;q=0.9,de;q=0.8\r\n\
Last-Event-ID: 00c0ffee00c0ffee:42\r\n\
\r\n";

const HEADS: [(&str, &str); 3] = [
    ("curl_poll", CURL_POLL),
    ("browser_websocket", BROWSER_WEBSOCKET),
    ("browser_eventsource", BROWSER_EVENTSOURCE),
];

fn heads(c: &mut Criterion) {
    let config = Config::default();
    let limits = config.http.clone();
    let mut group = c.benchmark_group("http_head");
    group.throughput(Throughput::Elements(1));
    for (name, head) in HEADS {
        let bytes = head.as_bytes();
        let id = |what: &str| BenchmarkId::new(format!("{name}/{what}"), bytes.len());
        assert_eq!(HeadScanner::new().scan(bytes, &limits).unwrap(), Some(bytes.len()));
        group.bench_with_input(id("scan_parse"), bytes, |b, bytes| {
            b.iter(|| {
                let bytes = black_box(bytes);
                let end = HeadScanner::new().scan(bytes, &limits).unwrap().unwrap();
                parse_request_head(&bytes[..end], &limits).unwrap()
            })
        });
        // Reference: httparse alone, borrowing the bytes, with the same header capacity.
        group.bench_with_input(id("httparse_only"), bytes, |b, bytes| {
            b.iter(|| {
                let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS_CAP];
                let mut req = httparse::Request::new(&mut storage[..limits.max_headers]);
                req.parse(black_box(bytes)).unwrap().is_complete()
            })
        });
        let parsed = parse_request_head(bytes, &limits).unwrap();
        let routed = route(&parsed, &config).unwrap();
        let expected = match name {
            "curl_poll" => matches!(routed, Route::LongPoll { .. }),
            "browser_websocket" => matches!(routed, Route::WebSocket { .. }),
            _ => matches!(routed, Route::Sse { .. }),
        };
        assert!(expected, "{name} routed to {routed:?}");
        group
            .bench_with_input(id("route"), &parsed, |b, parsed| b.iter(|| route(black_box(parsed), &config)));
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = heads
}
criterion_main!(benches);
