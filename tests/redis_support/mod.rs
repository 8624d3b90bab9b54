//! Helpers for tests against a real `redis-server` (Debian's `redis-server` package, Redis 7):
//! a server per test on a free loopback port in its own temporary directory, killed when
//! dropped, and a tiny blocking client over `std::net::TcpStream` that speaks through
//! pushwire's own RESP codec.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pushwire::redis::resp::{Command as RespCommand, Decoded, Decoder, Limits, RespError, Value};

/// Every read gives up after this long, so a broken server fails a test instead of hanging it.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a starting server may take to answer `PING`.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A `redis-server` child process, killed (SIGKILL) and its directory removed when dropped.
pub struct RedisServer {
    child: Option<Child>,
    /// Its loopback port.
    pub port: u16,
    /// Its TLS port, when started with [`RedisServer::start_tls`].
    pub tls_port: Option<u16>,
    /// More configuration given at start (kept for a restart).
    extra: Vec<String>,
    /// `requirepass`, when set: the readiness check and [`RedisServer::client`] send `AUTH`.
    password: Option<String>,
    /// Its working directory (the RDB file lives here).
    pub dir: PathBuf,
    persistent: bool,
}

/// Persistence of a started server.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Persistence {
    /// `--save '' --appendonly no`: nothing survives a restart.
    Off,
    /// `--dbfilename dump.rdb` in the server's directory, written by an explicit `SAVE` (no
    /// automatic save points), loaded at start.
    Rdb,
}

fn temp_dir() -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("pushwire-redis-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A port that was free a moment ago (Redis has no `--port 0`): bind port 0, read the port,
/// release it. Another process may take it first; [`RedisServer::start`] then retries.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl RedisServer {
    /// A server without persistence.
    pub fn start() -> RedisServer {
        RedisServer::start_with(Persistence::Off)
    }

    /// A server with the given persistence, on a fresh port and directory.
    pub fn start_with(persistence: Persistence) -> RedisServer {
        RedisServer::start_configured(persistence, &[], None, false)
    }

    /// A server without persistence taking more configuration (`--name value...`, as
    /// `redis-server` takes any `redis.conf` line) and, if given, requiring `password`
    /// (`requirepass`) of the default user.
    pub fn start_args(extra: &[&str], password: Option<&str>) -> RedisServer {
        RedisServer::start_configured(Persistence::Off, extra, password, false)
    }

    /// A server that also serves TLS on [`RedisServer::tls_port`] with the certificate and key
    /// of `pki` (`--tls-port`, `--tls-cert-file`, `--tls-key-file`, `--tls-ca-cert-file`, and
    /// `--tls-auth-clients no`: no client certificate asked), besides plain TCP on
    /// [`RedisServer::port`] (for the test's own checks).
    pub fn start_tls(cert: &Path, key: &Path, ca: &Path) -> RedisServer {
        let path = |p: &Path| p.to_str().unwrap().to_string();
        let extra = [
            "--tls-cert-file".to_string(),
            path(cert),
            "--tls-key-file".into(),
            path(key),
            "--tls-ca-cert-file".into(),
            path(ca),
            "--tls-auth-clients".into(),
            "no".into(),
        ];
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        RedisServer::start_configured(Persistence::Off, &extra, None, true)
    }

    fn start_configured(
        persistence: Persistence,
        extra: &[&str],
        password: Option<&str>,
        tls: bool,
    ) -> RedisServer {
        let dir = temp_dir();
        let mut last_error = String::new();
        for _ in 0..5 {
            let mut extra: Vec<String> = extra.iter().map(|a| a.to_string()).collect();
            if let Some(password) = password {
                extra.extend(["--requirepass".to_string(), password.to_string()]);
            }
            let tls_port = tls.then(free_port);
            if let Some(port) = tls_port {
                extra.extend(["--tls-port".to_string(), port.to_string()]);
            }
            let config = Config { persistence, extra, password: password.map(String::from), tls_port };
            match spawn(free_port(), &dir, config) {
                Ok(child) => return child,
                Err(e) => last_error = e,
            }
        }
        panic!("redis-server did not start: {last_error}");
    }

    /// Kills the server with SIGKILL (no save, no goodbye), as a crash would.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes the server with SIGSTOP: its sockets stay open (the kernel still accepts
    /// connections into the backlog and takes bytes into the buffers) and nothing is answered,
    /// as with a stalled Redis. [`RedisServer::thaw`] resumes it; dropping it kills it anyway
    /// (SIGKILL ends a stopped process).
    pub fn freeze(&self) {
        sigstop(self.pid());
    }

    /// Resumes a server frozen by [`RedisServer::freeze`] (SIGCONT).
    pub fn thaw(&self) {
        sigcont(self.pid());
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("a running server").id()
    }

    /// Starts the server again on the same port and directory (loading `dump.rdb` if
    /// persistent), after [`RedisServer::kill9`].
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "kill9 first");
        let persistence = if self.persistent { Persistence::Rdb } else { Persistence::Off };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let config = Config {
                persistence,
                extra: self.extra.clone(),
                password: self.password.clone(),
                tls_port: self.tls_port,
            };
            // The killed server's port may linger for a moment.
            match spawn(self.port, &self.dir, config) {
                Ok(mut started) => {
                    self.child = started.child.take();
                    return;
                }
                Err(e) if Instant::now() > deadline => panic!("redis-server did not restart: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// A new client on this server (authenticated if it requires a password), through
    /// pushwire's codec.
    pub fn client(&self) -> Client {
        let mut client = Client::connect(self.port);
        if let Some(password) = &self.password {
            let ok = client.call(&RespCommand::new("AUTH").arg(password));
            assert_eq!(ok, Value::SimpleString(b"OK".to_vec()));
        }
        client
    }

    /// A connection of the `redis` crate, the independent checker.
    pub fn checker(&self) -> redis::Connection {
        let client = redis::Client::open(format!("redis://127.0.0.1:{}/", self.port)).unwrap();
        let connection = client.get_connection_with_timeout(IO_TIMEOUT).unwrap();
        connection.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        connection
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill9();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// How a server is started.
struct Config {
    persistence: Persistence,
    extra: Vec<String>,
    password: Option<String>,
    tls_port: Option<u16>,
}

fn spawn(port: u16, dir: &Path, config: Config) -> Result<RedisServer, String> {
    let Config { persistence, extra, password, tls_port } = config;
    let log = std::fs::File::create(dir.join("redis.log")).map_err(|e| e.to_string())?;
    let mut command = Command::new("redis-server");
    command
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--daemonize", "no"])
        .args(["--save", "", "--appendonly", "no", "--protected-mode", "yes"])
        .arg("--dir")
        .arg(dir)
        .args(&extra)
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log);
    if persistence == Persistence::Rdb {
        command.args(["--dbfilename", "dump.rdb"]);
    }
    let child = command
        .spawn()
        .map_err(|e| format!("cannot run redis-server (apt-get install redis-server): {e}"))?;
    let mut server = RedisServer {
        child: Some(child),
        port,
        tls_port,
        extra,
        password,
        dir: dir.to_path_buf(),
        persistent: persistence == Persistence::Rdb,
    };
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Some(status) = server.child.as_mut().unwrap().try_wait().map_err(|e| e.to_string())? {
            server.child = None;
            let log = std::fs::read_to_string(dir.join("redis.log")).unwrap_or_default();
            return Err(format!("exited with {status} on port {port}: {log}"));
        }
        if let Ok(stream) = TcpStream::connect(("127.0.0.1", port)) {
            let mut client = Client::from_stream(stream);
            let authed = match &server.password {
                Some(password) => client.try_call(&RespCommand::new("AUTH").arg(password)).is_ok(),
                None => true,
            };
            // While loading a dump, Redis answers -LOADING: wait for PONG.
            if authed
                && client.try_call(&RespCommand::new("PING")).ok()
                    == Some(Value::SimpleString(b"PONG".to_vec()))
            {
                return Ok(server);
            }
        }
        if Instant::now() > deadline {
            return Err(format!("no PONG on port {port} within {START_TIMEOUT:?}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A blocking RESP client: pushwire's [`Decoder`] over a `TcpStream`, every read bounded by
/// [`IO_TIMEOUT`].
pub struct Client {
    stream: TcpStream,
    decoder: Decoder,
    /// Bytes read but not yet consumed by the decoder (after a value ended mid-read).
    pending: Vec<u8>,
}

impl Client {
    /// Connects to `127.0.0.1:port`.
    pub fn connect(port: u16) -> Client {
        Client::from_stream(TcpStream::connect(("127.0.0.1", port)).unwrap())
    }

    /// A client on an open stream.
    pub fn from_stream(stream: TcpStream) -> Client {
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        Client { stream, decoder: Decoder::new(Limits::default()), pending: Vec::new() }
    }

    /// Sends commands without waiting (a pipeline); panics if the write fails.
    pub fn send(&mut self, commands: &[RespCommand]) {
        self.try_send(commands).unwrap_or_else(|e| panic!("{e}"));
    }

    /// Sends commands without waiting, or says why not.
    fn try_send(&mut self, commands: &[RespCommand]) -> Result<(), String> {
        let mut out = Vec::new();
        for command in commands {
            command.encode(&mut out);
        }
        self.stream.write_all(&out).map_err(|e| format!("write: {e}"))
    }

    /// Reads the next value; panics on a codec error, EOF or timeout.
    pub fn read(&mut self) -> Value {
        self.try_read().unwrap_or_else(|e| panic!("{e}"))
    }

    /// Reads the next value, or says why not.
    pub fn try_read(&mut self) -> Result<Value, String> {
        loop {
            if !self.pending.is_empty() {
                let Decoded { consumed, value } =
                    self.decoder.decode(&self.pending).map_err(|e| e.to_string())?;
                self.pending.drain(..consumed);
                if let Some(value) = value {
                    return Ok(value);
                }
            }
            let mut buf = [0u8; 4096];
            let n = self.stream.read(&mut buf).map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                return Err("EOF".into());
            }
            self.pending.extend_from_slice(&buf[..n]);
        }
    }

    /// Reads until the decoder fails, returning its error (for fake peers sending garbage).
    pub fn read_error(&mut self) -> RespError {
        loop {
            if !self.pending.is_empty() {
                match self.decoder.decode(&self.pending) {
                    Err(e) => return e,
                    Ok(Decoded { consumed, .. }) => {
                        self.pending.drain(..consumed);
                        continue;
                    }
                }
            }
            let mut buf = [0u8; 4096];
            let n = self.stream.read(&mut buf).unwrap();
            assert!(n > 0, "EOF before the decoder failed");
            self.pending.extend_from_slice(&buf[..n]);
        }
    }

    /// Sends one command and reads its reply.
    pub fn call(&mut self, command: &RespCommand) -> Value {
        self.send(std::slice::from_ref(command));
        self.read()
    }

    /// Sends one command and reads its reply, or says why not (the start probe: a server
    /// still starting may reset the connection).
    fn try_call(&mut self, command: &RespCommand) -> Result<Value, String> {
        self.try_send(std::slice::from_ref(command))?;
        self.try_read()
    }

    /// Sends commands in one write and reads their replies, in order.
    pub fn pipeline(&mut self, commands: &[RespCommand]) -> Vec<Value> {
        self.send(commands);
        commands.iter().map(|_| self.read()).collect()
    }
}

/// A TCP proxy in front of a [`RedisServer`] that can stall pushwire's pub/sub connections
/// alone: each connection is copied both ways by its own thread, and one whose first bytes
/// name it `pushwire-sub-…` (`CLIENT SETNAME`) is a pub/sub connection. The proxy stops when
/// dropped (a stalled connection's thread then ends too).
pub struct RedisProxy {
    /// Its loopback port (give `redis://127.0.0.1:PORT` to the node).
    pub port: u16,
    shared: Arc<ProxyShared>,
}

struct ProxyShared {
    upstream: u16,
    stop: AtomicBool,
    conns: Mutex<Vec<Arc<ProxyConn>>>,
}

#[derive(Default)]
struct ProxyConn {
    pubsub: AtomicBool,
    stalled: AtomicBool,
}

impl RedisProxy {
    /// A proxy to the server on `upstream` (its port).
    pub fn start(upstream: u16) -> RedisProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let shared =
            Arc::new(ProxyShared { upstream, stop: AtomicBool::new(false), conns: Mutex::new(Vec::new()) });
        let accepting = shared.clone();
        std::thread::spawn(move || {
            // Bounded by `stop`, set when the proxy is dropped.
            while !accepting.stop.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((client, _)) => {
                        client.set_nonblocking(false).unwrap();
                        let Ok(server) = TcpStream::connect(("127.0.0.1", accepting.upstream)) else {
                            continue;
                        };
                        let conn = Arc::new(ProxyConn::default());
                        accepting.conns.lock().unwrap().push(conn.clone());
                        let shared = accepting.clone();
                        std::thread::spawn(move || copy_both_ways(client, server, &conn, &shared));
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(2))
                    }
                    Err(_) => return,
                }
            }
        });
        RedisProxy { port, shared }
    }

    /// Stops copying, both ways, on every pub/sub connection open now: its sockets stay open
    /// and nothing more reaches either side, as on a stalled path (SIGSTOP would stall the
    /// command connection too). Later connections are copied as usual. Returns how many
    /// connections stalled.
    pub fn stall_pubsub(&self) -> usize {
        let conns = self.shared.conns.lock().unwrap();
        let pubsub = conns.iter().filter(|c| c.pubsub.load(Ordering::SeqCst));
        pubsub.map(|c| c.stalled.store(true, Ordering::SeqCst)).count()
    }

    /// Pub/sub connections opened through the proxy so far.
    pub fn pubsub_connections(&self) -> usize {
        let conns = self.shared.conns.lock().unwrap();
        conns.iter().filter(|c| c.pubsub.load(Ordering::SeqCst)).count()
    }
}

impl Drop for RedisProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
    }
}

/// Copies bytes both ways until either side ends or the proxy stops; while `conn` is stalled
/// nothing is read or written.
fn copy_both_ways(client: TcpStream, server: TcpStream, conn: &ProxyConn, shared: &ProxyShared) {
    for s in [&client, &server] {
        s.set_read_timeout(Some(Duration::from_millis(2))).unwrap();
        s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        s.set_nodelay(true).unwrap();
    }
    let mut buf = vec![0u8; 64 * 1024];
    // The client's first bytes, until the connection's kind is known.
    let mut head = Vec::new();
    // Bounded: ends on EOF, an error or the proxy's drop.
    while !shared.stop.load(Ordering::SeqCst) {
        if conn.stalled.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(2));
            continue;
        }
        for (mut from, mut to, from_client) in [(&client, &server, true), (&server, &client, false)] {
            match from.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    if from_client && head.len() < 4096 {
                        head.extend_from_slice(&buf[..n]);
                        if head.windows(13).any(|w| w == b"pushwire-sub-") {
                            conn.pubsub.store(true, Ordering::SeqCst);
                        }
                    }
                    if to.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
                Err(e)
                    if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                Err(_) => return,
            }
        }
    }
}

/// Stops process `pid` with SIGSTOP and waits until every thread of it has stopped. kill(2)
/// returns once the signal is queued; the kernel wakes one thread to take it, and the others
/// stop only when that one runs, so on a busy machine they may go on serving for a moment.
pub fn sigstop(pid: u32) {
    signal(pid, "STOP");
    let deadline = Instant::now() + START_TIMEOUT;
    while !every_thread_stopped(pid) {
        assert!(Instant::now() < deadline, "process {pid} never stopped");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Resumes process `pid` after [`sigstop`] (SIGCONT).
pub fn sigcont(pid: u32) {
    signal(pid, "CONT");
}

fn signal(pid: u32, name: &str) {
    let status = Command::new("kill").args([&format!("-{name}"), &pid.to_string()]).status().unwrap();
    assert!(status.success(), "kill -{name} {pid}");
}

/// Whether every thread of `pid` is in state `T` (stopped by a signal, proc(5)
/// `/proc/PID/task/TID/stat`).
fn every_thread_stopped(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return false };
    tasks.flatten().all(|task| {
        std::fs::read_to_string(task.path().join("stat")).is_ok_and(|stat| {
            // The state follows `(comm)`, whose name may itself hold spaces or parentheses.
            stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next()) == Some("T")
        })
    })
}
