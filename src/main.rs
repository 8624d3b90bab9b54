//! The `pushwire` command: `pushwire serve` runs the server on its embedded defaults (every
//! limit has a flag); `pushwire sub`, `pub` and `ws` are clients (see `cli.rs`); `pushwire bench
//! MODE` is the load generator (see `pushwire::bench`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use pushwire::bench;
use pushwire::config::Config;
use pushwire::http1::Limits as HttpLimits;
use pushwire::hub::Limits as HubLimits;
use pushwire::net::tls::{TlsAcceptor, TlsFiles};
use pushwire::net::Limits as NetLimits;
use pushwire::net::Listen;
use pushwire::protocol::Transport;
use pushwire::transport::limits::{Limits as TransportLimits, WebSocketLimits};
use pushwire::transport::policy::{ChannelPolicy, Policies};
use pushwire::transport::token::TokenKey;

mod cli;

#[derive(Parser)]
#[command(
    name = "pushwire",
    version,
    about = "A push server: WebSocket, SSE, long polling, short polling and chunked streaming over pub/sub channels"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (defaults need no configuration file).
    Serve(Box<ServeArgs>),
    /// Subscribe to a channel and print each message on its own line; reconnects and resumes.
    Sub(cli::SubArgs),
    /// Publish DATA, or each line of stdin with `-`, to a channel; prints each message's id.
    Pub(cli::PubArgs),
    /// An interactive WebSocket shell against any RFC 6455 server: stdin lines become
    /// messages, received messages go to stdout.
    Ws(cli::WsArgs),
    /// Load generator: measure pushwire or a peer over loopback.
    Bench(BenchArgs),
}

#[derive(Args)]
struct BenchArgs {
    /// Print one JSON object instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    mode: BenchMode,
}

#[derive(Subcommand)]
enum BenchMode {
    /// WebSocket messages/s and round-trip latency against an RFC 6455 echo server.
    Echo(bench::echo::EchoOptions),
    /// One publisher, many subscribers: deliveries/s, delivery latency, missing messages.
    Fanout(bench::fanout::FanoutOptions),
    /// Server memory per idle ws or sse subscription (needs --pid).
    Idle(bench::idle::IdleOptions),
    /// WebSocket opening handshakes per second.
    Connect(bench::connect::ConnectOptions),
}

/// Runs one bench mode and prints its report; exits 1 when the run failed (e.g. missing
/// messages) and 2 when it could not run.
fn run_bench(args: &BenchArgs) -> ExitCode {
    let result = match &args.mode {
        BenchMode::Echo(options) => bench::echo::run(options),
        BenchMode::Fanout(options) => bench::fanout::run(options),
        BenchMode::Idle(options) => bench::idle::run(options),
        BenchMode::Connect(options) => bench::connect::run(options),
    };
    match result {
        Ok(report) => {
            if args.json {
                println!("{}", report.to_json());
            } else {
                print!("{}", report.to_table());
            }
            if report.failure.is_some() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("pushwire bench: {e}");
            ExitCode::from(2)
        }
    }
}

/// Seconds as a `Duration`; fractions allowed (`0.5`).
pub(crate) fn seconds(text: &str) -> Result<Duration, String> {
    let secs: f64 = text.parse().map_err(|_| format!("`{text}` is not a number of seconds"))?;
    Duration::try_from_secs_f64(secs).map_err(|_| format!("`{text}` is not a valid duration"))
}

/// A number of seconds on the command line: parsed by [`seconds`], shown (in `--help`'s
/// defaults) as the shortest decimal that reads back the same.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Seconds(Duration);

impl std::str::FromStr for Seconds {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        seconds(text).map(Seconds)
    }
}

impl std::fmt::Display for Seconds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0.as_secs_f64())
    }
}

// Every flag's default is read from the layer's own `Default` (the one place a default is
// written); `serve_without_flags_is_the_default_config` checks that they agree.
fn http() -> HttpLimits {
    HttpLimits::default()
}
fn hub() -> HubLimits {
    HubLimits::default()
}
fn transport() -> TransportLimits {
    TransportLimits::default()
}
fn websocket() -> WebSocketLimits {
    WebSocketLimits::default()
}
fn net() -> NetLimits {
    NetLimits::default()
}

#[derive(Args)]
struct ServeArgs {
    /// Address to listen on (port 0 picks a free port; the bound address is printed). With
    /// --tls-cert and without --tls-listen, it speaks TLS.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Run the channels on this Redis server, shared with every node given the same URL:
    /// `redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]` (see README "Many nodes"). Without it the
    /// channels live in this process.
    #[arg(long, value_name = "URL")]
    redis: Option<String>,
    /// Serve TLS with this certificate chain (PEM, the server's certificate first); needs
    /// --tls-key. SIGHUP reloads both files (a pair that fails to load keeps the current one).
    #[arg(long, value_name = "PATH", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM: PKCS #8, PKCS #1 or SEC1).
    #[arg(long, value_name = "PATH", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Serve TLS on this address as well, and plain HTTP on --listen (needs --tls-cert).
    #[arg(long, value_name = "ADDR", requires = "tls_cert")]
    tls_listen: Option<SocketAddr>,
    /// Time a TLS client has to complete its handshake, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = Seconds(net().tls_handshake_timeout))]
    tls_handshake_timeout: Seconds,
    /// Most TLS handshakes in progress per event loop (beyond: the connection is closed).
    #[arg(long, value_name = "COUNT", default_value_t = net().max_tls_handshakes)]
    max_tls_handshakes: usize,
    /// TLS sessions remembered for resumption by session id (tickets need none).
    #[arg(long, value_name = "COUNT", default_value_t = net().tls_session_cache_entries)]
    tls_session_cache_entries: usize,

    /// Largest request head, in bytes (larger: 431).
    #[arg(long, value_name = "BYTES", default_value_t = http().max_head_bytes)]
    max_head_bytes: usize,
    /// Longest request-target, in bytes (longer: 414).
    #[arg(long, value_name = "BYTES", default_value_t = http().max_target_bytes)]
    max_target_bytes: usize,
    /// Most header fields in a request (more: 431).
    #[arg(long, value_name = "COUNT", default_value_t = http().max_headers)]
    max_headers: usize,
    /// Largest request body, i.e. the largest message published over HTTP, in bytes (larger: 413).
    #[arg(long, value_name = "BYTES", default_value_t = http().max_body_bytes)]
    max_body_bytes: u64,
    /// Time from a request's first byte to its end, in seconds (slower: 408 and close).
    #[arg(long, value_name = "SECONDS", default_value_t = Seconds(http().request_timeout))]
    request_timeout: Seconds,
    /// Idle time allowed between requests on a keep-alive connection, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = Seconds(http().keep_alive_timeout))]
    keep_alive_timeout: Seconds,

    /// Messages kept per channel for resuming clients.
    #[arg(long, value_name = "COUNT", default_value_t = hub().max_history_messages)]
    history_messages: usize,
    /// Age after which a message leaves the history, in seconds (also the idle time after
    /// which an empty channel with no subscribers is freed).
    #[arg(long, value_name = "SECONDS", default_value_t = Seconds(hub().max_history_age))]
    history_age: Seconds,
    /// Payload bytes kept per channel.
    #[arg(long, value_name = "BYTES", default_value_t = hub().max_history_bytes)]
    history_bytes: usize,
    /// Payload bytes kept across all channels (publishes beyond: 503).
    #[arg(long, value_name = "BYTES", default_value_t = hub().max_total_history_bytes)]
    total_history_bytes: usize,
    /// Most channels (creating more: 503).
    #[arg(long, value_name = "COUNT", default_value_t = hub().max_channels)]
    max_channels: usize,

    /// Most messages in one poll response.
    #[arg(long, value_name = "COUNT", default_value_t = transport().max_batch_messages)]
    max_batch_messages: usize,
    /// Most unwritten bytes queued for one connection.
    #[arg(long, value_name = "BYTES", default_value_t = transport().max_send_buffer_bytes)]
    max_send_buffer_bytes: usize,
    /// Most open connections from one client address (beyond: 503 and close).
    #[arg(long, value_name = "COUNT", default_value_t = net().max_connections_per_ip)]
    max_connections_per_ip: usize,
    /// SO_SNDBUF of accepted sockets, in bytes (default: the kernel's autotuning). Smaller makes
    /// stalled subscribers slow consumers sooner.
    #[arg(long, value_name = "BYTES")]
    socket_send_buffer_bytes: Option<usize>,
    /// Connections a fan-out writes per loop turn before the loop polls again; messages
    /// published meanwhile share the writes of the rest.
    #[arg(long, value_name = "COUNT", default_value_t = net().flush_slice_connections)]
    flush_slice_connections: usize,
    /// Event loops, one thread each (default: the number of cores).
    #[arg(long, value_name = "COUNT")]
    threads: Option<usize>,
    /// Most open connections (beyond: 503 and close). Default: the open-file limit (its soft
    /// limit raised to the hard one at start) minus 32 and 8 per event loop.
    #[arg(long, value_name = "COUNT")]
    max_connections: Option<usize>,

    /// Heartbeat interval of SSE (comment) and stream (heartbeat line) responses, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = Seconds(transport().keepalive_interval))]
    keepalive_interval: Seconds,
    /// The retry hint sent first on SSE responses, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = Seconds(transport().sse_retry))]
    sse_retry: Seconds,
    /// Longest wait a long poll may park for, in seconds (longer ?wait= values are capped).
    #[arg(long, value_name = "SECONDS", default_value_t = Seconds(transport().longpoll_max_wait))]
    longpoll_max_wait: Seconds,

    /// Largest WebSocket frame payload on channels, in bytes (larger: close 1009).
    #[arg(long, value_name = "BYTES", default_value_t = websocket().channel.max_frame_payload_bytes)]
    ws_max_frame_bytes: u64,
    /// Largest WebSocket message on channels, in bytes (larger: close 1009).
    #[arg(long, value_name = "BYTES", default_value_t = websocket().channel.max_message_bytes)]
    ws_max_message_bytes: u64,
    /// Largest frame payload and message on /echo, in bytes (larger: close 1009).
    #[arg(long, value_name = "BYTES", default_value_t = websocket().echo.max_message_bytes)]
    echo_max_message_bytes: u64,
    /// Ping a WebSocket quiet for this long, in seconds (0 disables pings).
    #[arg(long, value_name = "SECONDS", default_value_t = Seconds(websocket().ping_interval.unwrap_or(Duration::ZERO)))]
    ws_ping_interval: Seconds,
    /// Close a WebSocket that sends nothing within this long after a ping, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = Seconds(websocket().pong_timeout))]
    ws_pong_timeout: Seconds,
    /// How long to wait for the peer's close after the server's, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = Seconds(websocket().close_timeout))]
    ws_close_timeout: Seconds,
    /// Do not publish messages that WebSocket clients send on a channel.
    #[arg(long)]
    ws_no_client_publish: bool,
    /// Decline permessage-deflate (RFC 7692) offers: every WebSocket frame goes uncompressed.
    #[arg(long)]
    ws_no_deflate: bool,
    /// Smallest WebSocket message compressed on a permessage-deflate connection, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = websocket().deflate_min_bytes)]
    ws_deflate_min_bytes: usize,
    /// A browser origin allowed besides the server's own and loopback ones (repeatable; `*`
    /// allows every origin). Others get 403 on every transport.
    #[arg(long, value_name = "ORIGIN")]
    allow_origin: Vec<String>,
    /// Require `Authorization: Bearer TOKEN` (or `?token=`) to publish over HTTP or WebSocket.
    #[arg(long, value_name = "TOKEN")]
    publish_token: Option<String>,
    /// Require `Authorization: Bearer TOKEN` (or `?token=`) to subscribe or poll.
    #[arg(long, value_name = "TOKEN")]
    subscribe_token: Option<String>,
    /// The secret HS256 tokens are signed with (at least 32 bytes; prefer
    /// --token-secret-file, which keeps it out of the process list).
    #[arg(long, value_name = "SECRET", conflicts_with = "token_secret_file")]
    token_secret: Option<String>,
    /// Read the token secret from FILE (one trailing newline is dropped).
    #[arg(long, value_name = "FILE")]
    token_secret_file: Option<PathBuf>,
    /// A per-channel rule (repeatable, first match wins): `PATTERN=token` (subscribe, publish
    /// and presence need a signed token granting them) or `PATTERN=publish-token`; PATTERN is
    /// `*`, a prefix ending in `*` (`private.*`) or a channel name. Unmatched channels stay
    /// anonymous.
    #[arg(long, value_name = "PATTERN=RULE", value_parser = ChannelPolicy::parse)]
    channel_policy: Vec<ChannelPolicy>,
    /// On SIGINT/SIGTERM, spread the closing of open connections over this long, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = Seconds(net().drain_period))]
    drain_seconds: Seconds,
    /// Refuse a transport with 403 (repeatable): ws, sse, stream, longpoll or poll.
    #[arg(long, value_name = "MODE", value_parser = mode)]
    disable: Vec<Transport>,
}

fn mode(text: &str) -> Result<Transport, String> {
    Transport::parse(text).ok_or_else(|| format!("`{text}` is not one of ws, sse, stream, longpoll, poll"))
}

impl ServeArgs {
    /// The configuration, with the token secret read from its file (the only flag that does
    /// I/O); not yet validated.
    fn config_with_secret(&self) -> Result<Config, String> {
        let mut config = self.config();
        let secret = match (&self.token_secret, &self.token_secret_file) {
            (Some(secret), _) => Some(secret.clone().into_bytes()),
            (None, Some(path)) => {
                let mut bytes = std::fs::read(path)
                    .map_err(|e| format!("--token-secret-file {}: {e}", path.display()))?;
                if bytes.last() == Some(&b'\n') {
                    bytes.pop();
                }
                Some(bytes)
            }
            (None, None) => None,
        };
        if let Some(secret) = secret {
            config.access.token_key = Some(TokenKey::new(&secret, None)?);
        }
        Ok(config)
    }

    fn config(&self) -> Config {
        let mut config = Config::default();
        let http = &mut config.http;
        http.max_head_bytes = self.max_head_bytes;
        http.max_target_bytes = self.max_target_bytes;
        http.max_headers = self.max_headers;
        http.max_body_bytes = self.max_body_bytes;
        http.request_timeout = self.request_timeout.0;
        http.keep_alive_timeout = self.keep_alive_timeout.0;
        let hub = &mut config.hub;
        hub.max_history_messages = self.history_messages;
        hub.max_history_age = self.history_age.0;
        hub.max_history_bytes = self.history_bytes;
        hub.max_total_history_bytes = self.total_history_bytes;
        hub.max_channels = self.max_channels;
        config.transport.max_batch_messages = self.max_batch_messages;
        config.transport.max_send_buffer_bytes = self.max_send_buffer_bytes;
        if let Some(max) = self.max_connections {
            config.net.max_connections = max;
        }
        config.net.max_connections_per_ip = self.max_connections_per_ip;
        config.net.socket_send_buffer_bytes = self.socket_send_buffer_bytes;
        config.net.flush_slice_connections = self.flush_slice_connections;
        if let Some(threads) = self.threads {
            config.net.threads = threads;
        }
        config.net.drain_period = self.drain_seconds.0;
        config.net.tls_handshake_timeout = self.tls_handshake_timeout.0;
        config.net.max_tls_handshakes = self.max_tls_handshakes;
        config.net.tls_session_cache_entries = self.tls_session_cache_entries;
        config.transport.keepalive_interval = self.keepalive_interval.0;
        config.transport.sse_retry = self.sse_retry.0;
        config.transport.longpoll_max_wait = self.longpoll_max_wait.0;
        config.transport.disabled = self.disable.clone();
        let ws = &mut config.websocket;
        ws.channel.max_frame_payload_bytes = self.ws_max_frame_bytes;
        ws.channel.max_message_bytes = self.ws_max_message_bytes;
        ws.echo.max_frame_payload_bytes = self.echo_max_message_bytes;
        ws.echo.max_message_bytes = self.echo_max_message_bytes;
        ws.ping_interval = (!self.ws_ping_interval.0.is_zero()).then_some(self.ws_ping_interval.0);
        ws.pong_timeout = self.ws_pong_timeout.0;
        ws.close_timeout = self.ws_close_timeout.0;
        ws.client_publish = !self.ws_no_client_publish;
        ws.deflate = !self.ws_no_deflate;
        ws.deflate_min_bytes = self.ws_deflate_min_bytes;
        config.access.allowed_origins = self.allow_origin.clone();
        config.access.publish_token = self.publish_token.clone();
        config.access.subscribe_token = self.subscribe_token.clone();
        config.access.policies = Policies(self.channel_policy.clone());
        config
    }
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    match cli.command {
        Command::Bench(args) => run_bench(&args),
        Command::Sub(args) => cli::sub(args),
        Command::Pub(args) => cli::publish(args),
        Command::Ws(args) => cli::ws(args),
        Command::Serve(args) => {
            let mut config = match args.config_with_secret() {
                Ok(config) => config,
                Err(e) => {
                    eprintln!("pushwire: invalid configuration: {e}");
                    return ExitCode::from(2);
                }
            };
            if let Err(e) = config.validate() {
                eprintln!("pushwire: invalid configuration: {e}");
                return ExitCode::from(2);
            }
            open_files_and_connections(&mut config, args.max_connections.is_none());
            let listen = match (&args.tls_cert, &args.tls_key) {
                (Some(cert), Some(key)) => {
                    let files = TlsFiles { cert_pem: cert.clone(), key_pem: key.clone() };
                    let acceptor = match TlsAcceptor::new(files, config.net.tls_session_cache_entries) {
                        Ok(acceptor) => Arc::new(acceptor),
                        Err(e) => {
                            eprintln!("pushwire: TLS: {e}");
                            return ExitCode::from(2);
                        }
                    };
                    match args.tls_listen {
                        Some(tls) => Listen { plain: Some(args.listen), tls: Some((tls, acceptor)) },
                        None => Listen { plain: None, tls: Some((args.listen, acceptor)) },
                    }
                }
                _ => Listen::plain(args.listen),
            };
            let on_ready = |bound: pushwire::net::Bound| {
                // Tests and scripts read these lines to find a port picked with :0 (the plain
                // one first when there are both).
                if let Some(addr) = bound.plain {
                    println!("pushwire listening on http://{addr}");
                }
                if let Some(addr) = bound.tls {
                    println!("pushwire listening on https://{addr}");
                }
            };
            let result = match &args.redis {
                None => pushwire::net::serve(config, listen, on_ready),
                Some(url) => match pushwire::redis::url::RedisUrl::parse(url) {
                    Ok(url) => pushwire::net::redis_broker::serve(config, listen, url, on_ready),
                    Err(e) => {
                        eprintln!("pushwire: --redis: {e}");
                        return ExitCode::from(2);
                    }
                },
            };
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("pushwire: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// Raises the soft open-file limit to the hard one, derives `--max-connections` from it unless
/// it was given (`derive`), and logs the limits in force.
fn open_files_and_connections(config: &mut Config, derive: bool) {
    let (files, error) = pushwire::net::open_files::raise_to_hard_limit();
    if let Some(e) = error {
        log::warn!("{e}");
    }
    let fits = pushwire::net::limits::max_connections_for_open_files(files.soft, config.net.threads);
    let net = &mut config.net;
    if derive {
        net.max_connections = fits;
    } else if net.max_connections > fits {
        log::warn!(
            "--max-connections {} is more than the open-file limit {} leaves ({fits}): past it, \
             accepting pauses on EMFILE instead of answering 503",
            net.max_connections,
            files.soft
        );
    }
    let soft = if files.soft > files.soft_before {
        format!("soft limit raised from {}", files.soft_before)
    } else {
        "the soft limit".to_owned()
    };
    log::info!(
        "limits: open files {} ({soft}, hard {}), max connections {}{}, per IP {}, {} event loops",
        files.soft,
        files.hard,
        net.max_connections,
        if derive { " (from the open-file limit)" } else { "" },
        net.max_connections_per_ip,
        net.threads
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serve_without_flags_is_the_default_config() {
        let cli = Cli::try_parse_from(["pushwire", "serve"]).unwrap();
        let Command::Serve(args) = cli.command else { panic!("not serve") };
        assert_eq!(args.config(), Config::default());
    }

    #[test]
    fn seconds_show_as_they_are_written() {
        assert_eq!(Seconds(Duration::from_secs(10)).to_string(), "10");
        assert_eq!(Seconds(Duration::from_millis(250)).to_string(), "0.25");
        assert_eq!("0.25".parse::<Seconds>(), Ok(Seconds(Duration::from_millis(250))));
    }
}
