//! The open-file limit at start and the connection limit derived from it (issue #16), checked
//! on the real binary run under `prlimit(1)` with a small limit, over real sockets.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// A server started under `prlimit --nofile=SOFT:HARD`, its address and the fields of its
/// startup log line (`--log-format json`, README "Logs").
struct Limited {
    child: Child,
    addr: SocketAddr,
    limits: serde_json::Value,
}

impl Drop for Limited {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_limited(soft: u64, hard: u64, flags: &[&str]) -> Limited {
    let mut child = Command::new("prlimit")
        .arg(format!("--nofile={soft}:{hard}"))
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_pushwire"))
        .args(["serve", "--listen", "127.0.0.1:0", "--threads", "1", "--log-format", "json"])
        .args(flags)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start pushwire under prlimit (util-linux)");
    let (tx, rx) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("\"open_files\"") {
                let _ = tx.send(line);
            }
        }
    });
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    let addr = first
        .trim()
        .strip_prefix("pushwire listening on http://")
        .expect("the listening line")
        .parse()
        .unwrap();
    let line = rx.recv_timeout(IO_TIMEOUT).expect("the startup line in the log");
    let line: serde_json::Value = serde_json::from_str(&line).expect("a JSON log line");
    Limited { child, addr, limits: line["fields"].clone() }
}

/// The status code of `GET /healthz` on `stream` (kept open).
fn healthz(stream: &mut TcpStream) -> u16 {
    stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).unwrap() == 0 {
            break;
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    // Read the short body so the next request starts clean.
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap())
        })
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    let _ = stream.read_exact(&mut body);
    status
}

fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream
}

#[test]
fn default_max_connections_follows_the_raised_open_file_limit() {
    // Soft 100, hard 140: the server raises its soft limit to 140 and keeps 32 + 8 (one loop).
    let server = start_limited(100, 140, &[]);
    let line = &server.limits;
    assert_eq!(
        (&line["open_files"], &line["open_files_raised_from"], &line["open_files_hard"]),
        (&140.into(), &100.into(), &140.into()),
        "{line}"
    );
    assert_eq!(
        (&line["max_connections"], &line["max_connections_derived"]),
        (&100.into(), &true.into()),
        "{line}"
    );
    // End to end: 100 connections are served, the 101st is answered 503, and one closing makes
    // room again.
    let mut open: Vec<TcpStream> = (0..100).map(|_| connect(server.addr)).collect();
    for stream in &mut open {
        assert_eq!(healthz(stream), 200);
    }
    let mut extra = connect(server.addr);
    assert_eq!(healthz(&mut extra), 503, "past the derived limit");
    drop(open.pop());
    let deadline = Instant::now() + IO_TIMEOUT;
    loop {
        let mut again = connect(server.addr);
        match healthz(&mut again) {
            200 => break,
            _ if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            status => panic!("still {status} after a connection closed"),
        }
    }
}

#[test]
fn explicit_max_connections_is_kept_and_a_larger_hard_limit_is_used() {
    let server = start_limited(64, 4096, &["--max-connections", "50", "--max-connections-per-ip", "20"]);
    let line = &server.limits;
    assert_eq!(
        (&line["open_files"], &line["open_files_raised_from"], &line["open_files_hard"]),
        (&4096.into(), &64.into(), &4096.into()),
        "{line}"
    );
    assert_eq!(
        (&line["max_connections"], &line["max_connections_per_ip"]),
        (&50.into(), &20.into()),
        "{line}"
    );
    assert_eq!(line["max_connections_derived"], false, "{line}");
}
