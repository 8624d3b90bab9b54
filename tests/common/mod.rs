//! Shared helpers for loopback tests: start the real `pushwire` binary on a free port and talk
//! to it over real sockets with a deadline on every read.

#![allow(dead_code)]

pub mod api;
pub mod pki;
pub mod v1;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Every read in these tests gives up after this long, so a broken server fails a test
/// instead of hanging it.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// A running server, killed when dropped.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
}

impl Server {
    /// Starts `pushwire serve --listen 127.0.0.1:0` with extra flags.
    pub fn start(flags: &[&str]) -> Server {
        Server::start_at("127.0.0.1:0", flags)
    }

    /// Starts `pushwire serve --listen LISTEN` with extra flags (e.g. a port used before).
    pub fn start_at(listen: &str, flags: &[&str]) -> Server {
        Server::try_start_at(listen, flags).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Like [`Server::start_at`], but a server that does not come up (the port is still
    /// taken) is an error instead of a panic.
    pub fn try_start_at(listen: &str, flags: &[&str]) -> Result<Server, String> {
        Server::try_start_listening(listen, flags).map(|(server, _)| server)
    }

    /// Starts `pushwire serve --listen 127.0.0.1:0` with flags that may serve TLS
    /// (`--tls-cert`, `--tls-key`, `--tls-listen`); returns the server, whose `addr` is the
    /// first address it printed, and the TLS address if it serves TLS.
    pub fn start_tls(flags: &[&str]) -> (Server, SocketAddr) {
        let (server, tls) =
            Server::try_start_listening("127.0.0.1:0", flags).unwrap_or_else(|e| panic!("{e}"));
        (server, tls.expect("the server serves TLS"))
    }

    /// Starts `pushwire serve --listen 127.0.0.1:0` with extra flags and environment variables.
    pub fn start_with_env(flags: &[&str], env: &[(&str, &str)]) -> Server {
        Server::try_start_env("127.0.0.1:0", flags, env)
            .map(|(server, _)| server)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn try_start_listening(listen: &str, flags: &[&str]) -> Result<(Server, Option<SocketAddr>), String> {
        Server::try_start_env(listen, flags, &[])
    }

    fn try_start_env(
        listen: &str,
        flags: &[&str],
        env: &[(&str, &str)],
    ) -> Result<(Server, Option<SocketAddr>), String> {
        let mut child = Command::new(env!("CARGO_BIN_EXE_pushwire"))
            .args(["serve", "--listen", listen])
            .args(flags)
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start pushwire");
        // One line per listener: the plain one first, then the TLS one.
        let lines = if flags.contains(&"--tls-cert") && flags.contains(&"--tls-listen") { 2 } else { 1 };
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let (mut plain, mut tls) = (None, None);
        for _ in 0..lines {
            let mut line = String::new();
            stdout.read_line(&mut line).expect("read listening line");
            let line = line.trim();
            if let Some(addr) = line.strip_prefix("pushwire listening on http://") {
                plain = addr.parse().ok();
            } else if let Some(addr) = line.strip_prefix("pushwire listening on https://") {
                tls = addr.parse().ok();
            } else {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("unexpected line: {line:?}"));
            }
        }
        match plain.or(tls) {
            Some(addr) => Ok((Server { child, addr }, tls)),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                Err("no address in the listening lines".into())
            }
        }
    }

    /// A new connection with read and write deadlines.
    pub fn connect(&self) -> TcpStream {
        let stream = TcpStream::connect(self.addr).expect("connect");
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        stream
    }

    /// The process id, for signals.
    /// Kills the server with SIGKILL (no drain, no goodbye), as a crash would.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the process to exit by itself (after a signal), within `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `command` with stdout and stderr piped (each read to its end by a thread of its own,
/// so a chatty child never blocks on a full pipe); kills it and fails the test if it outlives
/// `limit`. Its output.
pub fn output_within(command: &mut Command, limit: Duration) -> std::process::Output {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {command:?}: {e}"));
    let read_all = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            bytes
        })
    };
    let stdout = read_all(Box::new(child.stdout.take().unwrap()));
    let stderr = read_all(Box::new(child.stderr.take().unwrap()));
    let began = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if began.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{command:?} took longer than {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    std::process::Output { status, stdout: stdout.join().unwrap(), stderr: stderr.join().unwrap() }
}

/// A parsed HTTP response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Reads one response with a Content-Length body (or none, for HEAD/1xx/close-delimited
/// reads nothing more) from `reader`, which keeps bytes of later responses buffered.
pub fn read_response(reader: &mut BufReader<TcpStream>, head_request: bool) -> Response {
    loop {
        let mut head = Vec::new();
        loop {
            let mut line = Vec::new();
            let n = reader.read_until(b'\n', &mut line).expect("read response head");
            assert!(n > 0, "connection closed before a response; got {:?}", String::from_utf8_lossy(&head));
            head.extend_from_slice(&line);
            if line == b"\r\n" || line == b"\n" {
                break;
            }
        }
        let mut fields = [httparse::EMPTY_HEADER; 64];
        let mut res = httparse::Response::new(&mut fields);
        res.parse(&head).expect("parse response head");
        let status = res.code.unwrap();
        let headers: Vec<(String, String)> = res
            .headers
            .iter()
            .map(|h| (h.name.to_string(), String::from_utf8_lossy(h.value).into_owned()))
            .collect();
        if status == 100 {
            continue;
        }
        let length = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .map(|(_, v)| v.parse::<usize>().unwrap())
            .unwrap_or(0);
        let mut body = vec![0; if head_request { 0 } else { length }];
        reader.read_exact(&mut body).expect("read response body");
        return Response { status, headers, body };
    }
}

/// Sends raw bytes on a new connection and reads one response.
pub fn exchange(server: &Server, raw: &[u8]) -> Response {
    let mut stream = server.connect();
    stream.write_all(raw).unwrap();
    let head_request = raw.starts_with(b"HEAD ");
    read_response(&mut BufReader::new(stream), head_request)
}

/// The `/metrics` text of `server`, asked on a new connection.
pub fn metrics_text(server: &Server) -> String {
    exchange(server, b"GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").text()
}

/// The value of the sample `name` (the metric with its labels, if any: `pushwire_x{a="b"}`) in
/// a `/metrics` text; panics naming it when it is absent.
pub fn sample(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{metrics}")) as u64
}

/// The value of `pushwire_NAME` (with its labels, if any) in `server`'s `/metrics`.
pub fn metric(server: &Server, name: &str) -> u64 {
    sample(&metrics_text(server), &format!("pushwire_{name}"))
}

/// Asks `/metrics` until `check` holds for its text (a backend's figures change
/// asynchronously); panics with `what` and the last text once `within` has passed.
pub fn metrics_until(server: &Server, what: &str, within: Duration, check: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + within;
    loop {
        let text = metrics_text(server);
        if check(&text) {
            return text;
        }
        assert!(Instant::now() < deadline, "never {what}:\n{text}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Asks `/readyz` on new connections until it answers `status` (a backend's state changes
/// asynchronously); panics with the last answer once `within` has passed.
pub fn readyz_until(server: &Server, status: u16, within: Duration) -> Response {
    let deadline = Instant::now() + within;
    loop {
        let res = exchange(server, b"GET /readyz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
        if res.status == status {
            return res;
        }
        assert!(Instant::now() < deadline, "/readyz never {status}: {} {}", res.status, res.text());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// True when the server closed the connection (EOF) within the IO timeout.
pub fn closed_by_server(reader: &mut BufReader<TcpStream>) -> bool {
    let mut rest = Vec::new();
    reader.read_to_end(&mut rest).is_ok()
}

/// Sends a raw request on a new connection and reads its status line, which must be 200 or
/// 101 (the server routed it: a subscription is registered); the rest is left to read.
pub fn open_request(server: &Server, request: &str) -> BufReader<TcpStream> {
    let mut stream = server.connect();
    stream.write_all(request.as_bytes()).unwrap();
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert!(line.starts_with("HTTP/1.1 200") || line.starts_with("HTTP/1.1 101"), "{line}");
    reader
}

/// An event-stream request for `channel` (with `?token=` when given) whose status line has
/// arrived; unlike [`SseClient`] it does not wait for the opening cursor.
pub fn open_sse(server: &Server, channel: &str, token: Option<&str>) -> BufReader<TcpStream> {
    let query = token.map_or(String::new(), |t| format!("?token={t}"));
    open_request(
        server,
        &format!("GET /channels/{channel}{query} HTTP/1.1\r\nHost: t\r\nAccept: text/event-stream\r\n\r\n"),
    )
}

/// The bytes of a keep-alive `POST /channels/{channel}` with a text body.
pub fn publish_request(channel: &str, body: &str) -> String {
    format!(
        "POST /channels/{channel} HTTP/1.1\r\nHost: t\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// `POST /channels/{channel}` with a text body; returns the new message id.
pub fn publish(server: &Server, channel: &str, body: &str) -> String {
    let res = exchange(server, publish_request(channel, body).as_bytes());
    assert_eq!(res.status, 201, "{}", res.text());
    json_field(&res.text(), "id").expect("id in publish answer")
}

/// `GET /channels/{channel}[?since=…]` and the parsed answer.
pub fn poll(server: &Server, channel: &str, since: Option<&str>) -> Response {
    let target = match since {
        Some(c) => format!("/channels/{channel}?since={}", c.replace(':', "%3A")),
        None => format!("/channels/{channel}"),
    };
    exchange(server, format!("GET {target} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
}

/// The string value of `"name":"…"` in a flat JSON text (enough for pushwire's envelopes,
/// whose cursors and test payloads hold no escapes).
pub fn json_field(json: &str, name: &str) -> Option<String> {
    let key = format!("\"{name}\":\"");
    let start = json.find(&key)? + key.len();
    let end = json[start..].find('"')?;
    Some(json[start..start + end].to_string())
}

/// Every `"data":"…"` value in a poll answer, in order.
pub fn data_values(json: &str) -> Vec<String> {
    json.split("\"data\":\"").skip(1).map(|s| s[..s.find('"').unwrap()].to_string()).collect()
}

/// A child process whose stdout lines arrive on a channel (so reads can time out).
pub struct Lines {
    child: Child,
    rx: std::sync::mpsc::Receiver<String>,
}

impl Lines {
    /// curl as an EventSource would subscribe: `url` with `Accept: text/event-stream`,
    /// unbuffered, for at most 20 s.
    pub fn curl_sse(url: &str) -> Lines {
        Lines::spawn("curl", &["-sN", "--max-time", "20", "-H", "Accept: text/event-stream", url])
    }

    /// Spawns `program args…` with stdout piped line by line.
    pub fn spawn(program: &str, args: &[&str]) -> Lines {
        let mut child = Command::new(program)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {program}: {e}"));
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Lines { child, rx }
    }

    /// The next line, or `None` after `IO_TIMEOUT` or at EOF.
    pub fn next(&self) -> Option<String> {
        self.rx.recv_timeout(IO_TIMEOUT).ok()
    }

    /// Reads the remaining lines until the process's stdout ends; panics if it does not end
    /// within `IO_TIMEOUT`.
    pub fn rest_until_eof(&self) -> Vec<String> {
        let mut rest = Vec::new();
        loop {
            match self.rx.recv_timeout(IO_TIMEOUT) {
                Ok(line) => rest.push(line),
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return rest,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => panic!("no EOF; read {rest:?}"),
            }
        }
    }

    /// Reads lines until one satisfies `want`; panics with what was seen otherwise.
    pub fn until(&self, want: impl Fn(&str) -> bool) -> String {
        let mut seen = Vec::new();
        while let Some(line) = self.next() {
            if want(&line) {
                return line;
            }
            seen.push(line);
        }
        panic!("line not found; saw {seen:#?}");
    }
}

impl Drop for Lines {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends a WebSocket opening handshake for `path` with `extra_headers` (whole lines, each
/// ending in CRLF); returns the stream, the bytes read after the response head, and the head.
pub fn upgrade(server: &Server, path: &str, extra_headers: &str) -> (TcpStream, Vec<u8>, String) {
    let mut stream = server.connect();
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra_headers}\r\n"
    );
    stream.write_all(req.as_bytes()).unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut chunk).expect("read 101");
        assert!(n > 0, "closed during handshake");
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    buf.drain(..end);
    (stream, buf, head)
}

/// A minimal WebSocket client for tests: handshake, masked sends, unmasked frames received.
pub struct RawWs {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl RawWs {
    /// Opens `path` with the given subprotocols; returns the client and the 101 head.
    pub fn connect(server: &Server, path: &str, protocols: &[&str]) -> (RawWs, String) {
        let extra = if protocols.is_empty() {
            String::new()
        } else {
            format!("Sec-WebSocket-Protocol: {}\r\n", protocols.join(", "))
        };
        let (stream, buf, head) = upgrade(server, path, &extra);
        (RawWs { stream, buf }, head)
    }

    /// Sends one masked frame.
    pub fn send(&mut self, opcode: pushwire::ws::OpCode, payload: &[u8]) {
        let mut out = Vec::new();
        pushwire::ws::frame::encode_frame(true, opcode, payload, Some([1, 2, 3, 4]), &mut out);
        self.stream.write_all(&out).unwrap();
    }

    /// The next frame from the server: (opcode, payload); `None` at EOF.
    pub fn recv(&mut self) -> Option<(pushwire::ws::OpCode, Vec<u8>)> {
        let mut chunk = [0u8; 65536];
        loop {
            if let Some((header, len)) = pushwire::ws::FrameHeader::parse(&self.buf).expect("valid frame") {
                let total = len + header.payload_len as usize;
                if self.buf.len() >= total {
                    let payload = self.buf[len..total].to_vec();
                    self.buf.drain(..total);
                    return Some((header.opcode, payload));
                }
            }
            let n = self.stream.read(&mut chunk).expect("read frame");
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// The next text frame's payload as a string, skipping pings.
    pub fn recv_text(&mut self) -> String {
        loop {
            let (op, payload) = self.recv().expect("a frame");
            match op {
                pushwire::ws::OpCode::Text => return String::from_utf8(payload).unwrap(),
                pushwire::ws::OpCode::Ping => continue,
                other => panic!("expected text, got {other:?} {payload:?}"),
            }
        }
    }
}

/// One Server-Sent Event as a raw client sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: String,
}

/// A Server-Sent Events subscriber on raw TCP: sends the request, checks the 200 head, waits for
/// the subscription's opening `id:` (so it is live), then reads events with a deadline.
pub struct SseClient {
    reader: BufReader<TcpStream>,
    /// Bytes of a line read before a read timed out.
    partial: Vec<u8>,
}

impl SseClient {
    /// Subscribes with `GET target` plus `fields` (each ending in CRLF) on a new connection.
    pub fn connect(server: &Server, target: &str, fields: &str) -> SseClient {
        SseClient::on(server.connect(), target, fields)
    }

    /// Subscribes on an already connected stream.
    pub fn on(mut stream: TcpStream, target: &str, fields: &str) -> SseClient {
        let req = format!("GET {target} HTTP/1.1\r\nHost: t\r\nAccept: text/event-stream\r\n{fields}\r\n");
        stream.write_all(req.as_bytes()).unwrap();
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        let mut reader = BufReader::new(stream);
        let mut head = Vec::new();
        loop {
            let mut line = Vec::new();
            let n = reader.read_until(b'\n', &mut line).expect("read SSE head");
            assert!(n > 0, "closed before the SSE head: {:?}", String::from_utf8_lossy(&head));
            head.extend_from_slice(&line);
            if line == b"\r\n" {
                break;
            }
        }
        let head = String::from_utf8_lossy(&head).into_owned();
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(head.to_ascii_lowercase().contains("content-type: text/event-stream"), "{head}");
        let mut client = SseClient { reader, partial: Vec::new() };
        // The subscription opens with its cursor (an `id:` without data), written once the hub
        // has registered it: after this, every publish reaches this client.
        let mut opened = false;
        while let Some(line) = client.line(Instant::now() + IO_TIMEOUT) {
            if line.starts_with("id:") {
                opened = true;
            } else if line.is_empty() && opened {
                return client;
            }
        }
        panic!("no opening cursor on the event stream");
    }

    /// One line without its end, `None` at EOF or when `deadline` passes.
    fn line(&mut self, deadline: Instant) -> Option<String> {
        loop {
            let left = deadline.checked_duration_since(Instant::now()).filter(|d| !d.is_zero())?;
            self.reader.get_ref().set_read_timeout(Some(left)).unwrap();
            match self.reader.read_until(b'\n', &mut self.partial) {
                Ok(0) => return None,
                Ok(_) if self.partial.ends_with(b"\n") => {
                    let mut line = std::mem::take(&mut self.partial);
                    line.pop();
                    if line.ends_with(b"\r") {
                        line.pop();
                    }
                    return Some(String::from_utf8_lossy(&line).into_owned());
                }
                Ok(_) => return None, // EOF inside a line.
                Err(e)
                    if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                Err(_) => return None,
            }
        }
    }

    /// The next event that carries data, within `limit`; events without data (cursors) and
    /// comments (heartbeats) are skipped. `None` at EOF or after `limit`.
    pub fn next_event(&mut self, limit: Duration) -> Option<SseEvent> {
        let deadline = Instant::now() + limit;
        let (mut id, mut event, mut data): (Option<String>, Option<String>, Option<String>) =
            (None, None, None);
        loop {
            let line = self.line(deadline)?;
            if line.is_empty() {
                if let Some(data) = data.take() {
                    return Some(SseEvent { id, event, data });
                }
                (id, event) = (None, None);
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line.as_str(), ""));
            let value = value.strip_prefix(' ').unwrap_or(value).to_string();
            match field {
                "id" => id = Some(value),
                "event" => event = Some(value),
                "data" => {
                    data = Some(match data.take() {
                        Some(d) => d + "\n" + &value,
                        None => value,
                    })
                }
                _ => {} // comments, retry
            }
        }
    }
}

/// A small xorshift generator: the same seed gives the same draws (print the seed and a failure
/// replays), without a dependency.
pub struct Rng(pub u64);

impl Rng {
    /// A number below `n`.
    pub fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// CPU time (user + system) the process `pid` spends in the next second, in clock ticks.
pub fn cpu_ticks_in_one_second(pid: u32) -> u64 {
    let before = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(1));
    cpu_ticks(pid) - before
}

/// CPU time (user + system) of a process so far, in clock ticks, from /proc.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which is in parentheses and may hold spaces).
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}
