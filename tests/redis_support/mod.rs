//! Helpers for tests against a real `redis-server` (Debian's `redis-server` package, Redis 7):
//! a server per test on a free loopback port in its own temporary directory, killed when
//! dropped, and a tiny blocking client over `std::net::TcpStream` that speaks through
//! pushwire's own RESP codec.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
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
        let dir = temp_dir();
        let mut last_error = String::new();
        for _ in 0..5 {
            match spawn(free_port(), &dir, persistence) {
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

    /// Starts the server again on the same port and directory (loading `dump.rdb` if
    /// persistent), after [`RedisServer::kill9`].
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "kill9 first");
        let persistence = if self.persistent { Persistence::Rdb } else { Persistence::Off };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            // The killed server's port may linger for a moment.
            match spawn(self.port, &self.dir, persistence) {
                Ok(mut started) => {
                    self.child = started.child.take();
                    return;
                }
                Err(e) if Instant::now() > deadline => panic!("redis-server did not restart: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// A new client on this server, through pushwire's codec.
    pub fn client(&self) -> Client {
        Client::connect(self.port)
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

fn spawn(port: u16, dir: &Path, persistence: Persistence) -> Result<RedisServer, String> {
    let log = std::fs::File::create(dir.join("redis.log")).map_err(|e| e.to_string())?;
    let mut command = Command::new("redis-server");
    command
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--daemonize", "no"])
        .args(["--save", "", "--appendonly", "no", "--protected-mode", "yes"])
        .arg("--dir")
        .arg(dir)
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
            // While loading a dump, Redis answers -LOADING: wait for PONG.
            if client.try_call(&RespCommand::new("PING")).ok() == Some(Value::SimpleString(b"PONG".to_vec()))
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

    /// Sends commands without waiting (a pipeline).
    pub fn send(&mut self, commands: &[RespCommand]) {
        let mut out = Vec::new();
        for command in commands {
            command.encode(&mut out);
        }
        self.stream.write_all(&out).unwrap();
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

    fn try_call(&mut self, command: &RespCommand) -> Result<Value, String> {
        self.send(std::slice::from_ref(command));
        self.try_read()
    }

    /// Sends commands in one write and reads their replies, in order.
    pub fn pipeline(&mut self, commands: &[RespCommand]) -> Vec<Value> {
        self.send(commands);
        commands.iter().map(|_| self.read()).collect()
    }
}
