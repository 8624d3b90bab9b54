//! The `pushwire` command: `pushwire serve` runs the server on its embedded defaults (each
//! setting is a flag, a `PUSHWIRE_*` environment variable and a key of the `--config` file, see
//! `config_file.rs`); `pushwire config` prints, checks and shows configurations; `pushwire sub`,
//! `pub`, `presence` and `ws` are clients, and `pushwire token` prints a signed token for a
//! server's secret (see `cli.rs`); `pushwire bench MODE` is the load generator (see
//! `pushwire::bench`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};

use pushwire::bench;
use pushwire::config::Config;
use pushwire::http1::Limits as HttpLimits;
use pushwire::hub::Limits as HubLimits;
use pushwire::net::tls::{TlsAcceptor, TlsFiles};
use pushwire::net::Limits as NetLimits;
use pushwire::net::Listen;
use pushwire::protocol::Transport;
use pushwire::transport::api::{ApiKey, ApiLimits};
use pushwire::transport::limits::{Limits as TransportLimits, WebSocketLimits};
use pushwire::transport::policy::{ChannelPolicy, Policies};
use pushwire::transport::token::TokenKey;

mod cli;
mod config_file;
mod logs;

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
    /// Print, check or show a configuration (see README "Configuration").
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Subscribe to a channel and print each message on its own line; reconnects and resumes.
    Sub(cli::SubArgs),
    /// Publish DATA, or each line of stdin with `-`, to a channel; prints each message's id.
    Pub(cli::PubArgs),
    /// List a channel's presence: `CHANNEL COUNT`, then `ID<TAB>USER<TAB>INFO` per member.
    Presence(cli::PresenceArgs),
    /// An interactive WebSocket shell against any RFC 6455 server: stdin lines become
    /// messages, received messages go to stdout.
    Ws(cli::WsArgs),
    /// Print a signed token (HS256 JWT) for a server's --token-secret: its user and the
    /// channel patterns it grants.
    Token(cli::TokenArgs),
    /// Load generator: measure pushwire or a peer over loopback.
    Bench(BenchArgs),
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print a complete, commented TOML file of every setting at its default.
    Defaults,
    /// Check a TOML file: exit 0, or 2 with one line naming the file's first faulty key, its
    /// line:column and what is allowed.
    Check {
        /// The file to check.
        file: PathBuf,
    },
    /// Print the effective configuration, as TOML, that `pushwire serve` would run with the
    /// same flags, environment and --config file.
    Show(Box<ServeArgs>),
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

/// A [`Seconds`] that must be more than zero.
fn positive_seconds(text: &str) -> Result<Seconds, String> {
    match seconds(text)? {
        d if d.is_zero() => Err(format!("`{text}` is not a positive number of seconds")),
        d => Ok(Seconds(d)),
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
fn api() -> ApiLimits {
    ApiLimits::default()
}
fn net() -> NetLimits {
    NetLimits::default()
}
fn redis() -> pushwire::net::redis_broker::Limits {
    pushwire::net::redis_broker::Limits::default()
}

#[derive(Args)]
struct ServeArgs {
    /// A TOML file of settings (keys: these flags without `--`, `_` for `-`); flags and
    /// PUSHWIRE_* environment variables override it (`pushwire config defaults` prints one).
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Address to listen on (port 0 picks a free port; the bound address is printed). With
    /// --tls-cert and without --tls-listen, it speaks TLS.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Run the channels on this Redis server, shared with every node given the same URL:
    /// `redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]`, or `rediss://...` for TLS (see README
    /// "Many nodes"). Repeatable, up to 64 distinct servers: each channel lives on one of them
    /// (a consistent hash of its name), so every node must list the same servers in the same
    /// order, and a server is added only at the end. Without it the channels live in this
    /// process.
    #[arg(long, value_name = "URL")]
    redis: Vec<String>,
    /// With a rediss:// URL: a PEM file of CA certificates the Redis server's certificate may
    /// chain to, besides Mozilla's roots (a private CA).
    #[arg(long, value_name = "PATH", requires = "redis")]
    redis_ca_file: Option<PathBuf>,
    /// With --redis: spread the channels this node subscribes to over this many pub/sub
    /// connections (by a consistent hash of the channel name), so a lost connection or a
    /// full Redis output buffer touches only their share.
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u16).range(1..=pushwire::net::redis_broker::MAX_PUBSUB_SHARDS as i64))]
    redis_pubsub_shards: u16,
    /// With --redis: how long Redis may take to answer a command (or a pub/sub PING), or to
    /// accept a connection; past it the connection is dropped and reopened (counted in
    /// pushwire_redis_timeouts_total) and what waited on it answers 503. A stalled Redis is
    /// noticed within this.
    #[arg(long, value_name = "SECONDS", default_value_t = Seconds(redis().request_timeout))]
    redis_request_timeout: Seconds,
    /// With --redis: most commands sent to Redis and not yet answered (the pipeline); a
    /// publish beyond it answers 503 at once instead of waiting in memory.
    #[arg(long, value_name = "N", default_value_t = redis().max_pending_requests as u64,
          value_parser = clap::value_parser!(u64).range(1..))]
    redis_max_pending: u64,
    /// With --redis: how often each pub/sub connection is pinged (its pong due within
    /// --redis-request-timeout). A stalled pub/sub connection is noticed at the latest this
    /// plus --redis-request-timeout after it stopped, or within --redis-request-timeout of
    /// this node's next publish to one of its channels (README "Many nodes"). More than 0.
    #[arg(long, value_name = "SECONDS", default_value_t = Seconds(redis().ping_interval),
          value_parser = positive_seconds)]
    redis_ping_interval: Seconds,
    /// With --redis: how often this node announces itself to the others on the control channel
    /// (the node registry the server API's info and channels surveys wait for). More than 0.
    #[arg(long, value_name = "SECONDS", default_value_t = Seconds(redis().heartbeat_interval),
          value_parser = positive_seconds)]
    redis_heartbeat_interval: Seconds,
    /// With --redis: a node not heard from for this long is dropped from the registry, so
    /// surveys stop waiting for it. Longer than --redis-heartbeat-interval (give every node the
    /// same values: a node heartbeating less often than this is dropped between heartbeats).
    #[arg(long, value_name = "SECONDS", default_value_t = Seconds(redis().node_timeout),
          value_parser = positive_seconds)]
    redis_node_timeout: Seconds,
    /// With --redis: longest wait for the other nodes' replies to an info or channels call of
    /// the server API; past it the call answers with the replies in. More than 0.
    #[arg(long, value_name = "SECONDS", default_value_t = Seconds(redis().survey_timeout),
          value_parser = positive_seconds)]
    redis_survey_timeout: Seconds,
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
    #[arg(long, value_name = "TOKEN", conflicts_with = "publish_token_file")]
    publish_token: Option<String>,
    /// Read --publish-token from this file (its first line), to keep it out of argv and env.
    #[arg(long, value_name = "PATH")]
    publish_token_file: Option<PathBuf>,
    /// Require `Authorization: Bearer TOKEN` (or `?token=`) to subscribe or poll.
    #[arg(long, value_name = "TOKEN", conflicts_with = "subscribe_token_file")]
    subscribe_token: Option<String>,
    /// Most channels one `/ws` command-mode connection holds, and one multi-channel HTTP
    /// request names (there at most 64).
    #[arg(long, value_name = "N", default_value_t = transport().rooms.max_channels_per_connection)]
    max_channels_per_connection: usize,
    /// Longest event name a publish may give (`?event=`, a `/ws` publish, the server API), in
    /// bytes; longer is refused (400, or the command's `too_large`).
    #[arg(long, value_name = "BYTES", default_value_t = transport().max_event_name_bytes)]
    max_event_name_bytes: usize,
    /// Most presence members of one channel; another subscribe is refused.
    #[arg(long, value_name = "N", default_value_t = hub().presence.max_members_per_channel)]
    max_presence_members: usize,
    /// Longest presence `info` of one member, in bytes of JSON.
    #[arg(long, value_name = "BYTES", default_value_t = hub().presence.max_info_bytes)]
    max_presence_info_bytes: usize,
    /// With --redis: how long a presence member outlives its node's last refresh (a node
    /// refreshes its members every third of it), so a killed node's members are gone by then.
    #[arg(long, value_name = "SECONDS", default_value_t = Seconds(hub().presence.member_ttl))]
    presence_ttl: Seconds,
    /// Read --subscribe-token from this file (its first line).
    #[arg(long, value_name = "PATH")]
    subscribe_token_file: Option<PathBuf>,
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
    /// Turn the server API (`POST /api/…`) on: requests must carry `Authorization: apikey
    /// KEY` (at least 16 bytes; prefer --api-key-file, which keeps it out of the process list).
    #[arg(long, value_name = "KEY", conflicts_with = "api_key_file")]
    api_key: Option<String>,
    /// Read --api-key from this file (its first line).
    #[arg(long, value_name = "PATH")]
    api_key_file: Option<PathBuf>,
    /// Largest server API request body, in bytes; larger gets 413.
    #[arg(long, value_name = "BYTES", default_value_t = api().max_body_bytes)]
    api_max_body_bytes: u64,
    /// Most channels of one server API broadcast.
    #[arg(long, value_name = "N", default_value_t = api().max_broadcast_channels)]
    api_max_broadcast_channels: usize,
    /// Refuse a transport with 403 (repeatable): ws, sse, stream, longpoll or poll.
    #[arg(long, value_name = "MODE", value_parser = mode)]
    disable: Vec<Transport>,
    /// Log lines as `text` or `json` (one object per line: timestamp, level, target, message,
    /// fields); RUST_LOG filters them either way (see README "Logs").
    #[arg(long, value_name = "FORMAT", default_value_t = logs::LogFormat::Text)]
    log_format: logs::LogFormat,
}

fn mode(text: &str) -> Result<Transport, String> {
    Transport::parse(text).ok_or_else(|| format!("`{text}` is not one of ws, sse, stream, longpoll, poll"))
}

/// A secret given inline or as a file: the file's first line, without its line end.
fn secret(inline: &Option<String>, file: &Option<PathBuf>, flag: &str) -> Result<Option<String>, String> {
    match file {
        None => Ok(inline.clone()),
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("--{flag}-file {}: {e}", path.display()))?;
            let line = text.lines().next().unwrap_or("").trim_end();
            if line.is_empty() {
                return Err(format!("--{flag}-file {}: the file is empty", path.display()));
            }
            Ok(Some(line.to_string()))
        }
    }
}

impl ServeArgs {
    /// The configuration these settings give; reads secret files.
    fn config(&self) -> Result<Config, String> {
        let mut config = Config::default();
        if let Some(secret) = token_secret(self.token_secret.as_deref(), self.token_secret_file.as_deref())? {
            config.access.token_key = Some(TokenKey::new(&secret, None)?);
        }
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
        config.transport.rooms.max_channels_per_connection = self.max_channels_per_connection;
        config.transport.max_event_name_bytes = self.max_event_name_bytes;
        config.hub.presence.max_members_per_channel = self.max_presence_members;
        config.hub.presence.max_info_bytes = self.max_presence_info_bytes;
        config.hub.presence.member_ttl = self.presence_ttl.0;
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
        config.access.publish_token = secret(&self.publish_token, &self.publish_token_file, "publish-token")?;
        config.access.subscribe_token =
            secret(&self.subscribe_token, &self.subscribe_token_file, "subscribe-token")?;
        config.access.policies = Policies(self.channel_policy.clone());
        if let Some(key) = secret(&self.api_key, &self.api_key_file, "api-key")? {
            config.api.key = Some(ApiKey::new(&key)?);
        }
        config.api.limits.max_body_bytes = self.api_max_body_bytes;
        config.api.limits.max_broadcast_channels = self.api_max_broadcast_channels;
        // The broker's own limits are not in `Config`; this pair is checked here, so that
        // `config check` refuses it too (each alone is checked by its parser).
        if self.redis_node_timeout.0 <= self.redis_heartbeat_interval.0 {
            return Err("--redis-node-timeout must be longer than --redis-heartbeat-interval".into());
        }
        Ok(config)
    }
}

/// The `serve` subcommand with every setting's environment variable.
fn serve_command() -> clap::Command {
    Cli::command()
        .mut_subcommand("serve", config_file::with_env)
        .find_subcommand("serve")
        .cloned()
        .expect("serve is a subcommand")
}

/// `serve`'s definition without environment variables (`config defaults` and `config check`
/// must not depend on the environment they run in).
fn serve_command_without_env() -> clap::Command {
    Cli::command().find_subcommand("serve").cloned().expect("serve is a subcommand")
}

fn seconds_type() -> std::any::TypeId {
    std::any::TypeId::of::<Seconds>()
}

/// Reads `serve`'s settings from `rest` (its arguments), the environment (when `command` has
/// the variables) and the `--config` file, flags first; then builds and validates the
/// [`Config`]. Clap errors (unknown flags, `--help`) exit here; the `Err` is one line.
fn settings(
    command: &clap::Command,
    rest: Vec<std::ffi::OsString>,
) -> Result<(ServeArgs, Config, clap::ArgMatches), String> {
    let argv = |extra: Vec<std::ffi::OsString>| {
        std::iter::once("serve".into()).chain(extra).collect::<Vec<std::ffi::OsString>>()
    };
    let given = command.clone().try_get_matches_from(argv(rest.clone())).unwrap_or_else(|e| e.exit());
    let mut entries = Vec::new();
    let file = given.get_one::<PathBuf>("config").cloned();
    if let Some(path) = &file {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        entries = config_file::parse(&text, command, seconds_type()).map_err(|e| e.render(path))?;
    }
    let entries = config_file::underlay(entries, &given);
    let mut layered: Vec<std::ffi::OsString> = entries.iter().flat_map(|e| e.flags.iter().cloned()).collect();
    layered.extend(rest);
    // What passed alone and fails now (a file's flag that needs or excludes another) is the file's.
    let matches = command.clone().try_get_matches_from(argv(layered)).map_err(|e| {
        let path = file.as_deref().unwrap_or(std::path::Path::new("--config"));
        format!("{}: {}", path.display(), config_file::clap_reason(&e))
    })?;
    let args = ServeArgs::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let config = args.config().map_err(|e| format!("invalid configuration: {e}"))?;
    if let Err(problem) = config.validate() {
        // Name the file's key when that key alone is what the checks refuse.
        let plain = serve_command_without_env();
        for entry in &entries {
            let alone = plain.clone().try_get_matches_from(argv(entry.flags.clone())).ok();
            let alone = alone.and_then(|m| ServeArgs::from_arg_matches(&m).ok());
            let refused = alone.and_then(|a| a.config().ok()).is_some_and(|c| c.validate().is_err());
            if let (true, Some(path)) = (refused, &file) {
                let error = config_file::FileError {
                    at: Some(entry.at),
                    message: format!("{}: out of range: {problem}", entry.id),
                };
                return Err(error.render(path));
            }
        }
        return Err(format!("invalid configuration: {problem}"));
    }
    Ok((args, config, matches))
}

/// The arguments after the first `depth` ones (the program and its subcommands).
fn rest_of_argv(depth: usize) -> Vec<std::ffi::OsString> {
    std::env::args_os().skip(depth).collect()
}

/// The token secret of `--token-secret` or of `--token-secret-file` (one trailing newline
/// dropped), as `serve` and `token` take it.
fn token_secret(secret: Option<&str>, file: Option<&Path>) -> Result<Option<Vec<u8>>, String> {
    match (secret, file) {
        (Some(secret), _) => Ok(Some(secret.as_bytes().to_vec())),
        (None, Some(path)) => {
            let mut bytes =
                std::fs::read(path).map_err(|e| format!("--token-secret-file {}: {e}", path.display()))?;
            if bytes.last() == Some(&b'\n') {
                bytes.pop();
            }
            Ok(Some(bytes))
        }
        (None, None) => Ok(None),
    }
}

fn main() -> ExitCode {
    let command = Cli::command()
        .mut_subcommand("serve", config_file::with_env)
        .mut_subcommand("config", |c| c.mut_subcommand("show", config_file::with_env));
    let matches = command.get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    // `serve` installs the logger once its settings (and so its log format) are read.
    if !matches!(cli.command, Command::Serve(_)) {
        logs::init(logs::LogFormat::Text);
    }
    match cli.command {
        Command::Bench(args) => run_bench(&args),
        Command::Sub(args) => cli::sub(args),
        Command::Pub(args) => cli::publish(args),
        Command::Presence(args) => cli::presence(args),
        Command::Ws(args) => cli::ws(args),
        Command::Token(args) => cli::token(args),
        Command::Config(ConfigCommand::Defaults) => {
            let header = format!(
                "pushwire {} configuration: every setting at its default.\n\
                 Keys are `pushwire serve`'s flags without `--`, with `_` for `-`; each is also an\n\
                 environment variable PUSHWIRE_KEY. Precedence: flags > environment > this file > defaults.",
                env!("CARGO_PKG_VERSION")
            );
            print!(
                "{}",
                config_file::render(
                    &serve_command_without_env(),
                    seconds_type(),
                    &header,
                    config_file::default_values
                )
            );
            ExitCode::SUCCESS
        }
        Command::Config(ConfigCommand::Check { file }) => {
            let rest = vec!["--config".into(), file.clone().into_os_string()];
            match settings(&serve_command_without_env(), rest) {
                Ok(_) => {
                    println!("{}: ok", file.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("pushwire config check: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Config(ConfigCommand::Show(_)) => match settings(&serve_command(), rest_of_argv(3)) {
            Ok((_, _, matches)) => {
                let header =
                    "pushwire's effective configuration (flags > environment > --config file > defaults).";
                let command = serve_command_without_env();
                print!(
                    "{}",
                    config_file::render(&command, seconds_type(), header, |arg| config_file::raw_values(
                        &matches, arg
                    ))
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("pushwire: {e}");
                ExitCode::from(2)
            }
        },
        Command::Serve(_) => match settings(&serve_command(), rest_of_argv(2)) {
            Ok((args, config, _)) => {
                logs::init(args.log_format);
                serve(&args, config)
            }
            Err(e) => {
                eprintln!("pushwire: {e}");
                ExitCode::from(2)
            }
        },
    }
}

/// Runs the server until it has drained after SIGINT/SIGTERM.
fn serve(args: &ServeArgs, mut config: Config) -> ExitCode {
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
    let files = open_files_and_connections(&mut config, args.max_connections.is_none());
    let startup = StartupFields::new(args, &config, files);
    let on_ready = |bound: pushwire::net::Bound| {
        // Tests and scripts read these lines to find a port picked with :0 (the plain
        // one first when there are both).
        if let Some(addr) = bound.plain {
            println!("pushwire listening on http://{addr}");
        }
        if let Some(addr) = bound.tls {
            println!("pushwire listening on https://{addr}");
        }
        startup.log(&bound);
    };
    let result = if args.redis.is_empty() {
        pushwire::net::serve(config, listen, on_ready)
    } else {
        let urls = match redis_urls(&args.redis) {
            Ok(urls) => urls,
            Err(e) => {
                eprintln!("pushwire: --redis: {e}");
                return ExitCode::from(2);
            }
        };
        if args.redis_ca_file.is_some() && !urls.iter().any(|url| url.tls) {
            eprintln!("pushwire: --redis-ca-file needs a rediss:// URL (TLS to Redis)");
            return ExitCode::from(2);
        }
        let tls = pushwire::client::TlsOptions { extra_roots_pem: args.redis_ca_file.clone() };
        let redis = pushwire::net::redis_broker::RedisOptions {
            urls,
            tls,
            pubsub_shards: usize::from(args.redis_pubsub_shards),
            request_timeout: args.redis_request_timeout.0,
            max_pending_requests: usize::try_from(args.redis_max_pending).unwrap_or(usize::MAX),
            ping_interval: args.redis_ping_interval.0,
            heartbeat_interval: args.redis_heartbeat_interval.0,
            node_timeout: args.redis_node_timeout.0,
            survey_timeout: args.redis_survey_timeout.0,
        };
        pushwire::net::redis_broker::serve(config, listen, redis, on_ready)
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pushwire: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The `--redis` URLs, parsed, in order: at most `MAX_REDIS_SHARDS`, no server twice (the
/// same host and port; two databases of one server share its pub/sub, so they cannot be two
/// shards).
fn redis_urls(given: &[String]) -> Result<Vec<pushwire::redis::url::RedisUrl>, String> {
    let max = pushwire::net::redis_broker::MAX_REDIS_SHARDS;
    if given.len() > max {
        return Err(format!("{} servers given; at most {max}", given.len()));
    }
    let mut urls: Vec<pushwire::redis::url::RedisUrl> = Vec::with_capacity(given.len());
    for text in given {
        let url = pushwire::redis::url::RedisUrl::parse(text).map_err(|e| e.to_string())?;
        if let Some(first) =
            urls.iter().find(|u| u.host.eq_ignore_ascii_case(&url.host) && u.port == url.port)
        {
            return Err(format!(
                "{url} is the server of {first} again (each shard must be a distinct server: \
                 databases of one server share its pub/sub)"
            ));
        }
        urls.push(url);
    }
    Ok(urls)
}

/// Raises the soft open-file limit to the hard one and derives `--max-connections` from it
/// unless it was given (`derive`); warns when a given one does not fit. The limits in force
/// are logged by the startup line ([`Startup`]).
fn open_files_and_connections(config: &mut Config, derive: bool) -> pushwire::net::open_files::OpenFiles {
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
    files
}

/// What the startup line says besides the addresses, which come once bound: the backend, the
/// effective limits and the enabled features (README "Logs").
struct StartupFields {
    backend: String,
    threads: usize,
    max_connections: usize,
    max_connections_derived: bool,
    max_connections_per_ip: usize,
    open_files: u64,
    open_files_hard: u64,
    open_files_raised_from: Option<u64>,
    max_body_bytes: u64,
    ws_max_message_bytes: u64,
    history_messages: usize,
    history_bytes: usize,
    history_age_s: f64,
    total_history_bytes: usize,
    max_channels: usize,
    tls: bool,
    deflate: bool,
    signed_tokens: bool,
    channel_policies: usize,
    publish_token: bool,
    subscribe_token: bool,
    api_key: bool,
    redis: bool,
    disabled: String,
}

impl StartupFields {
    /// The values of `args` and the validated `config` (its connection limit derived from
    /// `files` unless `--max-connections` was given).
    fn new(args: &ServeArgs, config: &Config, files: pushwire::net::open_files::OpenFiles) -> StartupFields {
        let backend = match redis_urls(&args.redis) {
            Ok(urls) if urls.is_empty() => "memory".to_owned(),
            // Display leaves the password out.
            Ok(urls) => urls.iter().map(|url| url.to_string()).collect::<Vec<_>>().join(","),
            Err(_) => "redis (bad URL)".to_owned(),
        };
        let disabled: Vec<&str> = config.transport.disabled.iter().map(|t| t.name()).collect();
        StartupFields {
            backend,
            threads: config.net.threads,
            max_connections: config.net.max_connections,
            max_connections_derived: args.max_connections.is_none(),
            max_connections_per_ip: config.net.max_connections_per_ip,
            open_files: files.soft,
            open_files_hard: files.hard,
            open_files_raised_from: (files.soft > files.soft_before).then_some(files.soft_before),
            max_body_bytes: config.http.max_body_bytes,
            ws_max_message_bytes: config.websocket.channel.max_message_bytes,
            history_messages: config.hub.max_history_messages,
            history_bytes: config.hub.max_history_bytes,
            history_age_s: config.hub.max_history_age.as_secs_f64(),
            total_history_bytes: config.hub.max_total_history_bytes,
            max_channels: config.hub.max_channels,
            tls: args.tls_cert.is_some(),
            deflate: config.websocket.deflate,
            signed_tokens: config.access.token_key.is_some(),
            channel_policies: config.access.policies.0.len(),
            publish_token: config.access.publish_token.is_some(),
            subscribe_token: config.access.subscribe_token.is_some(),
            api_key: config.api.key.is_some(),
            redis: !args.redis.is_empty(),
            disabled: disabled.join(","),
        }
    }

    /// Logs the one startup line (info), once the addresses are bound.
    fn log(&self, bound: &pushwire::net::Bound) {
        let http = bound.plain.map(|a| format!("http://{a}"));
        let https = bound.tls.map(|a| format!("https://{a}"));
        let listen: Vec<&str> = http.iter().chain(https.iter()).map(String::as_str).collect();
        let s = self;
        log::info!(
            version = env!("CARGO_PKG_VERSION"),
            listen_http = http.as_deref(),
            listen_https = https.as_deref(),
            backend = s.backend.as_str(),
            threads = s.threads,
            max_connections = s.max_connections,
            max_connections_derived = s.max_connections_derived,
            max_connections_per_ip = s.max_connections_per_ip,
            open_files = s.open_files,
            open_files_hard = s.open_files_hard,
            open_files_raised_from = s.open_files_raised_from,
            max_body_bytes = s.max_body_bytes,
            ws_max_message_bytes = s.ws_max_message_bytes,
            history_messages = s.history_messages,
            history_bytes = s.history_bytes,
            history_age_s = s.history_age_s,
            total_history_bytes = s.total_history_bytes,
            max_channels = s.max_channels,
            tls = s.tls,
            deflate = s.deflate,
            signed_tokens = s.signed_tokens,
            channel_policies = s.channel_policies,
            publish_token = s.publish_token,
            subscribe_token = s.subscribe_token,
            api_key = s.api_key,
            redis = s.redis,
            disabled = s.disabled.as_str();
            "pushwire {} started on {} ({} backend, {} event loops, max connections {}, per IP {})",
            env!("CARGO_PKG_VERSION"),
            listen.join(" and "),
            if s.redis { "redis" } else { "memory" },
            s.threads,
            s.max_connections,
            s.max_connections_per_ip
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch_file(name: &str, text: &str) -> PathBuf {
        let path = std::env::temp_dir().join(format!("pushwire-main-{}-{name}", std::process::id()));
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn config_defaults_file_reads_back_as_the_default_config() {
        let text = config_file::render(
            &serve_command_without_env(),
            seconds_type(),
            "",
            config_file::default_values,
        );
        let path = scratch_file("defaults.toml", &text);
        let (_, config, _) =
            settings(&serve_command_without_env(), vec!["--config".into(), path.clone().into()]).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(config, Config::default());
    }

    #[test]
    fn every_serve_setting_is_a_file_key_with_a_type() {
        // A flag added to `serve` appears in the defaults file (commented out when unset).
        let text = config_file::render(
            &serve_command_without_env(),
            seconds_type(),
            "",
            config_file::default_values,
        );
        for arg in serve_command_without_env().get_arguments() {
            let id = arg.get_id().as_str();
            if ["help", "version", "config"].contains(&id) {
                continue;
            }
            let set = format!("\n{id} = ");
            let unset = format!("\n# {id} = ");
            assert!(text.contains(&set) || text.contains(&unset), "{id} missing from the defaults file");
        }
    }

    #[test]
    fn secrets_are_redacted_by_config_show() {
        assert!(config_file::is_secret("publish_token"));
        assert!(config_file::is_secret("api_key"));
        assert!(!config_file::is_secret("publish_token_file"));
        assert!(!config_file::is_secret("tls_key"));
    }

    #[test]
    fn serve_without_flags_is_the_default_config() {
        let cli = Cli::try_parse_from(["pushwire", "serve"]).unwrap();
        let Command::Serve(args) = cli.command else { panic!("not serve") };
        assert_eq!(args.config(), Ok(Config::default()));
    }

    #[test]
    fn seconds_show_as_they_are_written() {
        assert_eq!(Seconds(Duration::from_secs(10)).to_string(), "10");
        assert_eq!(Seconds(Duration::from_millis(250)).to_string(), "0.25");
        assert_eq!("0.25".parse::<Seconds>(), Ok(Seconds(Duration::from_millis(250))));
    }
}
