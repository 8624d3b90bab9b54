//! The fan-out publisher: `POST`s numbered, timestamped messages on one keep-alive connection.
//!
//! Implements: an HTTP/1.1 client for one request at a time (RFC 9112): a `text/plain` body with
//! Content-Length, a response read by Content-Length, chunked coding (§7.1) or close (§6.3),
//! reconnecting when the server closes or says `Connection: close` (§9.6). Any 2xx counts as
//! published (pushwire answers 201, Nchan 201 or 202). Messages go as fast as the answers come,
//! or on a schedule of `rate` per second.
//!
//! [`get`] reads one answer the same way (the server's `/metrics`, see [`super::window`]).
//!
//! Does not: pipeline requests, retry a failed publish, or read more than 1 MiB of answer.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::http1::chunked::{ChunkedDecoder, ChunkedLimits};
use crate::http1::head::{parse_response_head, HeadScanner, Headers};

use super::payload::{encode_json, encode_text};
use super::url::Url;

/// Every read and write of the publisher gives up after this long.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest publish answer read, in bytes.
const MAX_ANSWER_BYTES: usize = 1024 * 1024;

/// What the publisher did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Published {
    /// Messages the server accepted.
    pub messages: u64,
    /// From the first request to the last answer.
    pub elapsed: Duration,
}

/// Publishes `count` messages of `size_bytes` to `urls` in turn (message `seq` to
/// `urls[seq % len]`, all on one server), marked with `run` and numbered 0..,
/// each stamped with the microseconds since `start` at which its request was written. Stops
/// early when `stop` is set. `json`: a JSON document (see [`encode_json`]) instead of padding.
#[allow(clippy::too_many_arguments)]
pub fn publish(
    urls: &[Url],
    run: u64,
    count: u64,
    size_bytes: usize,
    json: bool,
    rate_per_s: Option<f64>,
    start: Instant,
    stop: &AtomicBool,
) -> Result<Published, String> {
    let began = Instant::now();
    let mut connection: Option<TcpStream> = None;
    for seq in 0..count {
        if stop.load(Ordering::Relaxed) {
            return Ok(Published { messages: seq, elapsed: began.elapsed() });
        }
        if let Some(rate) = rate_per_s {
            let due = began + Duration::from_secs_f64(seq as f64 / rate);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
        }
        let url = &urls[(seq % urls.len() as u64) as usize];
        let stream = match connection.take() {
            Some(stream) => stream,
            None => open(url)?, // every URL has the same address
        };
        let sent_us = start.elapsed().as_micros() as u64;
        let body = if json {
            encode_json(run, seq, sent_us, size_bytes)
        } else {
            encode_text(run, seq, sent_us, size_bytes)
        };
        let (status, keep_alive, _) = exchange(&stream, "POST", url, &body)
            .map_err(|e| format!("publishing message {seq} to http://{}{}: {e}", url.host, url.path))?;
        if !(200..300).contains(&status) {
            return Err(format!(
                "publishing message {seq} to http://{}{}: status {status}",
                url.host, url.path
            ));
        }
        if keep_alive {
            connection = Some(stream);
        }
    }
    Ok(Published { messages: count, elapsed: began.elapsed() })
}

fn open(url: &Url) -> Result<TcpStream, String> {
    let stream = TcpStream::connect_timeout(&url.addr, IO_TIMEOUT)
        .map_err(|e| format!("connect {}: {e}", url.addr))?;
    stream.set_read_timeout(Some(IO_TIMEOUT)).map_err(|e| e.to_string())?;
    stream.set_write_timeout(Some(IO_TIMEOUT)).map_err(|e| e.to_string())?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    Ok(stream)
}

/// GETs `url` on a connection of its own; returns the answer's body if the status is 2xx.
pub fn get(url: &Url) -> Result<Vec<u8>, String> {
    let stream = open(url)?;
    let (status, _, body) =
        exchange(&stream, "GET", url, "").map_err(|e| format!("GET http://{}{}: {e}", url.host, url.path))?;
    if !(200..300).contains(&status) {
        return Err(format!("GET http://{}{}: status {status}", url.host, url.path));
    }
    Ok(body)
}

/// Sends one request and reads its whole answer; returns the status, whether the connection
/// may carry the next request, and the answer's body.
fn exchange(
    mut stream: &TcpStream,
    method: &str,
    url: &Url,
    body: &str,
) -> Result<(u16, bool, Vec<u8>), String> {
    let request = format!(
        "{method} {} HTTP/1.1\r\nHost: {}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
        url.path,
        url.host,
        body.len()
    );
    stream.write_all(request.as_bytes()).map_err(|e| format!("write: {e}"))?;
    let limits = crate::http1::Limits::default();
    let mut buf = Vec::new();
    let mut scanner = HeadScanner::new();
    let mut chunk = [0u8; 16 * 1024];
    let head_len = loop {
        if let Some(len) = scanner.scan(&buf, &limits).map_err(|e| format!("answer head: {e}"))? {
            break len;
        }
        let n = read_some(stream, &mut chunk)?;
        buf.extend_from_slice(&chunk[..n]);
    };
    let (head, _) = parse_response_head(&buf[..head_len], &limits)
        .map_err(|e| format!("answer head: {e}"))?
        .ok_or("malformed answer head")?;
    let mut rest = buf.split_off(head_len);
    let keep_alive = head.minor_version >= 1 && !head.has_token("Connection", "close");
    if head.has_token("Transfer-Encoding", "chunked") {
        let limits = ChunkedLimits { max_body_bytes: MAX_ANSWER_BYTES as u64, ..ChunkedLimits::default() };
        let mut decoder = ChunkedDecoder::new(limits);
        let mut answer = Vec::new();
        loop {
            if decoder.decode(&rest, &mut answer).map_err(|e| format!("chunked answer: {e}"))?.done {
                break;
            }
            let n = read_some(stream, &mut chunk)?;
            rest = chunk[..n].to_vec();
        }
        return Ok((head.status, keep_alive, answer));
    } else if let Some(value) = head.header("Content-Length") {
        let length: usize = std::str::from_utf8(value)
            .ok()
            .and_then(|v| v.parse().ok())
            .ok_or("unreadable Content-Length")?;
        if length > MAX_ANSWER_BYTES {
            return Err(format!("answer of {length} bytes"));
        }
        while rest.len() < length {
            let n = read_some(stream, &mut chunk)?;
            rest.extend_from_slice(&chunk[..n]);
        }
        rest.truncate(length);
        return Ok((head.status, keep_alive, rest));
    } else if head.status >= 200 && head.status != 204 && head.status != 304 {
        // RFC 9112 §6.3 item 8: no length, so the body runs until the server closes.
        while rest.len() <= MAX_ANSWER_BYTES {
            match stream.read(&mut chunk).map_err(|e| format!("read: {e}"))? {
                0 => break,
                n => rest.extend_from_slice(&chunk[..n]),
            }
        }
        return Ok((head.status, false, rest));
    }
    Ok((head.status, keep_alive, Vec::new()))
}

fn read_some(mut stream: &TcpStream, chunk: &mut [u8]) -> Result<usize, String> {
    match stream.read(chunk) {
        Ok(0) => Err("the server closed the connection mid-answer".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("read: {e}")),
    }
}
