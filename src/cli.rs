//! The client subcommands of the `pushwire` binary: `sub`, `pub`, `presence`, `ws` and `token`.
//!
//! Implements: command-line front ends over [`pushwire::client`]: a subscriber that prints
//! messages and reports gaps, a publisher of arguments or stdin lines, a channel's presence
//! list (`GET /channels/NAME/presence`), and an interactive
//! WebSocket shell (stdin read on its own thread, the socket polled with a short read timeout;
//! at the end of stdin it waits until the server is quiet for `--linger`, then performs the
//! closing handshake, printing what arrives before the server's close), and a signed token
//! for a server's secret (`token`, as Centrifugo's `gentoken`).
//!
//! `https://` and `wss://` URLs go over TLS, trusting Mozilla's roots and `--ca-file`.
//!
//! Does not: read binary messages from stdin other than line by line.
//! Errors are one line on stderr, `pushwire CMD: …`, with exit code 1.

use std::io::{self, BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use clap::Args;

use pushwire::client::{
    Backoff, Error, Item, Payload, PresenceOptions, PublishOptions, Publisher, SubscribeOptions, Subscriber,
    Timeouts, TlsOptions, Transport, WsClient, WsOptions,
};
use pushwire::hub::Cursor;
use pushwire::transport::policy::ChannelPattern;
use pushwire::transport::token::{sign, verify, Grant, TokenKey, TokenLimits, MAX_USER_ID_BYTES};
use pushwire::ws::{CloseCode, Event, Message};

use crate::seconds;

fn transport(text: &str) -> Result<Transport, String> {
    Transport::parse(text).ok_or_else(|| format!("`{text}` is not one of ws, sse, longpoll, poll, stream"))
}

fn cursor(text: &str) -> Result<Cursor, String> {
    Cursor::parse(text).map_err(|e| format!("`{text}` is not a cursor EPOCH:OFFSET: {e}"))
}

/// `pushwire sub`.
#[derive(Args)]
pub struct SubArgs {
    /// The channel's URL, `http://HOST:PORT/channels/NAME` (or `ws://`; the transport decides
    /// how to connect; `https://` and `wss://` for TLS). With `--channel`, the server's URL
    /// (`http://HOST:PORT`; a path is replaced by `/channels/A,B`).
    url: String,
    /// Subscribe to this channel (repeatable, or `a,b,c`): several channels on one connection,
    /// each message printed after its channel and a tab (in `--json`, as `"channel"`).
    #[arg(long = "channel", value_name = "NAME")]
    channels: Vec<String>,
    /// A PEM file of CA certificates to trust for TLS, besides Mozilla's roots.
    #[arg(long, value_name = "PATH")]
    ca_file: Option<PathBuf>,
    /// How to subscribe: ws (pushwire.v1), sse, longpoll, poll or stream.
    #[arg(long, value_name = "TRANSPORT", value_parser = transport, default_value = "ws")]
    transport: Transport,
    /// Start after this cursor (EPOCH:OFFSET) instead of from now.
    #[arg(long, value_name = "CURSOR", value_parser = cursor)]
    since: Option<Cursor>,
    /// Print each message as its JSON envelope: {"id":…,"event":…,"data"|"data_b64":…}.
    #[arg(long)]
    json: bool,
    /// Bearer token (the server's --subscribe-token).
    #[arg(long, value_name = "TOKEN")]
    token: Option<String>,
    /// Exit after this many messages.
    #[arg(long, value_name = "COUNT")]
    count: Option<u64>,
    /// First reconnection delay ceiling, in seconds (full jitter, doubling per attempt).
    #[arg(long, value_name = "SECONDS", value_parser = seconds, default_value = "0.25")]
    backoff_base: Duration,
    /// Largest reconnection delay, in seconds.
    #[arg(long, value_name = "SECONDS", value_parser = seconds, default_value = "30")]
    backoff_cap: Duration,
    /// Longest silence before a connection is given up and reconnected, in seconds.
    #[arg(long, value_name = "SECONDS", value_parser = seconds, default_value = "60")]
    read_timeout: Duration,
    /// Short poll: pause after an empty answer, in seconds.
    #[arg(long, value_name = "SECONDS", value_parser = seconds, default_value = "1")]
    poll_interval: Duration,
}

/// `pushwire pub`.
#[derive(Args)]
pub struct PubArgs {
    /// The channel's URL: `http://…/channels/NAME` publishes with POST, `ws://…` over WebSocket
    /// (`https://` and `wss://` for TLS).
    url: String,
    /// A PEM file of CA certificates to trust for TLS, besides Mozilla's roots.
    #[arg(long, value_name = "PATH")]
    ca_file: Option<PathBuf>,
    /// The message; `-` (the default) publishes each line of stdin.
    #[arg(default_value = "-")]
    data: String,
    /// Event name (HTTP only).
    #[arg(long, value_name = "NAME")]
    event: Option<String>,
    /// Publish binary messages (the bytes of DATA or of each line) instead of text.
    #[arg(long)]
    binary: bool,
    /// Bearer token (the server's --publish-token).
    #[arg(long, value_name = "TOKEN")]
    token: Option<String>,
}

/// `pushwire presence`.
#[derive(Args)]
pub struct PresenceArgs {
    /// The server's URL, `http://HOST:PORT` (`https://` for TLS; a path is replaced).
    url: String,
    /// The channel whose members are listed.
    channel: String,
    /// A PEM file of CA certificates to trust for TLS, besides Mozilla's roots.
    #[arg(long, value_name = "PATH")]
    ca_file: Option<PathBuf>,
    /// Bearer token: a signed token granting `presence` on a `--channel-policy` channel.
    #[arg(long, value_name = "TOKEN")]
    token: Option<String>,
}

/// `pushwire ws`.
#[derive(Args)]
pub struct WsArgs {
    /// A `ws://` or `wss://` (or `http://`, `https://`) URL.
    url: String,
    /// A PEM file of CA certificates to trust for TLS, besides Mozilla's roots.
    #[arg(long, value_name = "PATH")]
    ca_file: Option<PathBuf>,
    /// Send each stdin line as a binary message instead of text.
    #[arg(long)]
    binary: bool,
    /// Write received binary messages to stdout as they are, instead of one base64 line each.
    #[arg(long)]
    raw: bool,
    /// A subprotocol to offer (repeatable, most preferred first).
    #[arg(long = "protocol", value_name = "P")]
    protocols: Vec<String>,
    /// A request header field, `Name: value` (repeatable).
    #[arg(long = "header", value_name = "NAME: VALUE")]
    headers: Vec<String>,
    /// After stdin ends, how long the server must have been quiet before the closing
    /// handshake starts, in seconds (so answers to the last lines are not cut off by a server
    /// that stops answering once it sees the close).
    #[arg(long, value_name = "SECONDS", value_parser = seconds, default_value = "0.25")]
    linger: Duration,
    /// Time allowed for the handshake, and for the server's close after stdin ends, in seconds.
    #[arg(long, value_name = "SECONDS", value_parser = seconds, default_value = "10")]
    timeout: Duration,
    /// Do not offer permessage-deflate (RFC 7692).
    #[arg(long)]
    no_deflate: bool,
}

/// The one-line error and the failing exit code.
fn fail(cmd: &str, error: impl std::fmt::Display) -> ExitCode {
    eprintln!("pushwire {cmd}: {error}");
    ExitCode::FAILURE
}

fn base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// `scheme://authority` of a URL (its path and query dropped).
fn server_base(url: &str) -> &str {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    match url[after_scheme..].find(['/', '?']) {
        Some(i) => &url[..after_scheme + i],
        None => url,
    }
}

/// The JSON envelope of a message, as the server writes it (with its channel first on a
/// multi-channel connection).
fn envelope(channel: Option<&str>, id: Cursor, event: Option<&str>, payload: &Payload) -> String {
    let json = |s: &str| serde_json::Value::from(s).to_string();
    let mut out = match channel {
        Some(channel) => format!("{{\"channel\":{},\"id\":\"{id}\"", json(channel)),
        None => format!("{{\"id\":\"{id}\""),
    };
    if let Some(event) = event {
        out += &format!(",\"event\":{}", json(event));
    }
    match payload {
        Payload::Text(text) => out += &format!(",\"data\":{}}}", json(text)),
        Payload::Binary(bytes) => out += &format!(",\"data_b64\":\"{}\"}}", base64(bytes)),
    }
    out
}

/// Runs `pushwire sub`.
pub fn sub(args: SubArgs) -> ExitCode {
    let options = SubscribeOptions {
        transport: args.transport,
        since: args.since,
        token: args.token,
        timeouts: Timeouts { read: args.read_timeout, ..Timeouts::default() },
        backoff: Backoff { base: args.backoff_base, cap: args.backoff_cap },
        poll_interval: args.poll_interval,
        tls: TlsOptions { extra_roots_pem: args.ca_file },
        ..SubscribeOptions::default()
    };
    let channels: Vec<&str> =
        args.channels.iter().flat_map(|c| c.split(',')).filter(|c| !c.is_empty()).collect();
    let url = match channels.as_slice() {
        [] => args.url.clone(),
        // One channel is the single-channel URL; several are `/channels/a,b` (at least two
        // names, so the server serves it as a multi-channel request).
        [one] => format!("{}/channels/{one}", server_base(&args.url)),
        many => format!("{}/channels/{}", server_base(&args.url), many.join(",")),
    };
    let multi = channels.len() > 1;
    let mut subscriber = match Subscriber::connect(&url, options) {
        Ok(s) => s,
        Err(e) => return fail("sub", e),
    };
    let stdout = io::stdout();
    let mut received = 0u64;
    // Bounded by --count when given; otherwise runs until an error that retrying cannot fix.
    while args.count.is_none_or(|count| received < count) {
        let line = match subscriber.recv() {
            Ok(Item::Message { channel, id, event, payload }) => {
                received += 1;
                let text = match (&payload, args.json) {
                    (_, true) => envelope(channel.as_deref(), id, event.as_deref(), &payload),
                    (Payload::Text(text), false) => text.clone(),
                    (Payload::Binary(bytes), false) => base64(bytes),
                };
                match channel {
                    Some(channel) if multi && !args.json => format!("{channel}\t{text}"),
                    _ => text,
                }
            }
            Ok(Item::Gap { channel, next }) => {
                let on = channel.map(|c| format!(" on {c}")).unwrap_or_default();
                eprintln!("pushwire sub: gap{on}: messages were lost; continuing after {next}");
                continue;
            }
            Err(e) => return fail("sub", e),
        };
        let mut out = stdout.lock();
        if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
            return ExitCode::SUCCESS; // stdout closed (e.g. `| head`)
        }
    }
    ExitCode::SUCCESS
}

/// A stdin line without its line end.
fn strip_line_end(mut line: Vec<u8>) -> Vec<u8> {
    if line.last() == Some(&b'\n') {
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
    }
    line
}

fn payload(bytes: Vec<u8>, binary: bool) -> Result<Payload, String> {
    if binary {
        return Ok(Payload::Binary(bytes));
    }
    String::from_utf8(bytes)
        .map(Payload::Text)
        .map_err(|_| "the message is not UTF-8 text; use --binary".into())
}

/// Runs `pushwire pub`.
pub fn publish(args: PubArgs) -> ExitCode {
    let options = PublishOptions {
        token: args.token,
        tls: TlsOptions { extra_roots_pem: args.ca_file },
        ..PublishOptions::default()
    };
    let mut publisher = match Publisher::connect(&args.url, options) {
        Ok(p) => p,
        Err(e) => return fail("pub", e),
    };
    let mut one = |bytes: Vec<u8>| -> Result<(), String> {
        let payload = payload(bytes, args.binary)?;
        let id = publisher.publish(&payload, args.event.as_deref()).map_err(|e| e.to_string())?;
        let mut out = io::stdout().lock();
        writeln!(out, "{id}").and_then(|()| out.flush()).map_err(|e| format!("stdout: {e}"))
    };
    let result = if args.data == "-" {
        let mut stdin = io::stdin().lock();
        // Bounded by stdin: one message per line.
        loop {
            let mut line = Vec::new();
            match stdin.read_until(b'\n', &mut line) {
                Ok(0) => break Ok(()),
                Ok(_) => {
                    if let Err(e) = one(strip_line_end(line)) {
                        break Err(e);
                    }
                }
                Err(e) => break Err(format!("stdin: {e}")),
            }
        }
    } else {
        one(args.data.clone().into_bytes())
    };
    let closed = publisher.close();
    match (result, closed) {
        (Err(e), _) => fail("pub", e),
        (Ok(()), Err(e)) => fail("pub", e),
        (Ok(()), Ok(())) => ExitCode::SUCCESS,
    }
}

/// Runs `pushwire presence`: the line `CHANNEL COUNT`, then one line per member,
/// `ID<TAB>USER<TAB>INFO` (`-` for a user or info the member has not).
pub fn presence(args: PresenceArgs) -> ExitCode {
    let options = PresenceOptions {
        token: args.token,
        tls: TlsOptions { extra_roots_pem: args.ca_file },
        ..PresenceOptions::default()
    };
    let room = match pushwire::client::presence(&args.url, &args.channel, &options) {
        Ok(room) => room,
        Err(e) => return fail("presence", e),
    };
    let mut text = format!("{} {}\n", room.channel, room.count);
    for member in &room.members {
        let user = member.user.as_deref().unwrap_or("-");
        let info = member.info.as_deref().unwrap_or("-");
        text.push_str(&format!("{}\t{user}\t{info}\n", member.id));
    }
    let mut out = io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail("presence", format!("stdout: {e}")),
    }
}

/// `pushwire token`.
#[derive(Args)]
pub struct TokenArgs {
    /// The server's --token-secret (prefer --token-secret-file, which keeps it out of the
    /// process list).
    #[arg(long, value_name = "SECRET", conflicts_with = "token_secret_file")]
    token_secret: Option<String>,
    /// Read the secret from FILE (one trailing newline is dropped), as the server does.
    #[arg(long, value_name = "FILE")]
    token_secret_file: Option<PathBuf>,
    /// The user id (`sub`), shown in presence and matched by the API's `disconnect`.
    #[arg(long, value_name = "USER")]
    user: Option<String>,
    /// Seconds from now until the token expires (`exp`).
    #[arg(long, value_name = "SECONDS", default_value_t = 3600)]
    ttl: u64,
    /// A channel pattern the token grants subscribing to: `*`, a prefix ending in `*`, or a
    /// channel name (repeatable).
    #[arg(long, value_name = "PATTERN")]
    subscribe: Vec<String>,
    /// A channel pattern the token grants publishing to (repeatable).
    #[arg(long, value_name = "PATTERN")]
    publish: Vec<String>,
    /// A channel pattern whose presence the token grants (repeatable).
    #[arg(long, value_name = "PATTERN")]
    presence: Vec<String>,
}

/// Runs `pushwire token`: prints the token on its own line.
pub fn token(args: TokenArgs) -> ExitCode {
    match mint(&args) {
        Ok(token) => {
            let mut out = io::stdout().lock();
            match writeln!(out, "{token}").and_then(|()| out.flush()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail("token", format!("stdout: {e}")),
            }
        }
        Err(e) => fail("token", e),
    }
}

/// The token `args` ask for, checked as the server will check it.
fn mint(args: &TokenArgs) -> Result<String, String> {
    let secret = crate::token_secret(args.token_secret.as_deref(), args.token_secret_file.as_deref())?
        .ok_or("give the server's secret: --token-secret-file FILE or --token-secret SECRET")?;
    let key = TokenKey::new(&secret, None)?;
    if args.user.as_ref().is_some_and(|u| u.is_empty() || u.len() > MAX_USER_ID_BYTES) {
        return Err(format!("--user must be 1 to {MAX_USER_ID_BYTES} bytes"));
    }
    if args.ttl == 0 {
        return Err("--ttl must be at least 1 second".into());
    }
    let patterns = |flag: &str, texts: &[String]| {
        texts
            .iter()
            .map(|t| ChannelPattern::parse(t).map_err(|e| format!("--{flag} {t:?}: {e}")))
            .collect::<Result<Vec<_>, _>>()
    };
    let (subscribe, publish, presence) = (
        patterns("subscribe", &args.subscribe)?,
        patterns("publish", &args.publish)?,
        patterns("presence", &args.presence)?,
    );
    let unix_now_s =
        SystemTime::now().duration_since(UNIX_EPOCH).map_err(|e| format!("clock: {e}"))?.as_secs();
    let expires_at = unix_now_s.checked_add(args.ttl).ok_or("--ttl is too large")?;
    let grant = Grant {
        user: args.user.as_deref(),
        expires_at,
        subscribe: &subscribe,
        publish: &publish,
        presence: &presence,
    };
    let token = sign(&grant, &key);
    // The server's own check, for what the flags above cannot tell (its length limit).
    verify(&token, &key, unix_now_s, &TokenLimits::default())
        .map_err(|e| format!("a server would refuse this token: {e}"))?;
    Ok(token)
}

/// How often the shell looks at stdin's lines while waiting for the socket.
const WS_POLL: Duration = Duration::from_millis(20);

/// Runs `pushwire ws`.
pub fn ws(args: WsArgs) -> ExitCode {
    let mut headers = Vec::new();
    for header in &args.headers {
        match header.split_once(':') {
            Some((name, value)) if !name.trim().is_empty() => {
                headers.push((name.trim().to_string(), value.trim().to_string()));
            }
            _ => return fail("ws", format!("--header {header:?} is not `Name: value`")),
        }
    }
    let options = WsOptions {
        protocols: args.protocols.clone(),
        headers,
        connect_timeout: args.timeout,
        read_timeout: Some(WS_POLL),
        close_timeout: args.timeout,
        limits: pushwire::ws::Limits {
            max_frame_payload_bytes: 16 * 1024 * 1024,
            max_message_bytes: 16 * 1024 * 1024,
        },
        tls: TlsOptions { extra_roots_pem: args.ca_file.clone() },
        deflate: !args.no_deflate,
        ..WsOptions::default()
    };
    let mut client = match WsClient::connect(&args.url, &options) {
        Ok(c) => c,
        Err(e) => return fail("ws", e),
    };
    // stdin on its own thread; `None` is its end.
    let (lines_tx, lines) = mpsc::channel::<Option<Vec<u8>>>();
    std::thread::spawn(move || {
        let mut stdin = io::stdin().lock();
        loop {
            let mut line = Vec::new();
            let end = !matches!(stdin.read_until(b'\n', &mut line), Ok(n) if n > 0);
            let sent = if end { lines_tx.send(None) } else { lines_tx.send(Some(strip_line_end(line))) };
            if end || sent.is_err() {
                return;
            }
        }
    });
    // After stdin ends: when the server has been quiet long enough to close.
    let mut quiet_until: Option<Instant> = None;
    let mut close_deadline: Option<Instant> = None;
    let stdout = io::stdout();
    // Bounded: after stdin ends, by the linger (each message received extends it) and then
    // the close deadline.
    loop {
        if close_deadline.is_none() && quiet_until.is_some_and(|t| Instant::now() >= t) {
            // RFC 6455 §7.1.2: start the closing handshake, then keep reading (and printing)
            // until the server's close frame.
            if let Err(e) = client.send_close(CloseCode::NORMAL, "") {
                return fail("ws", e);
            }
            close_deadline = Some(Instant::now() + args.timeout);
        }
        while quiet_until.is_none() {
            match lines.try_recv() {
                Ok(Some(line)) => {
                    let message = match payload(line, args.binary) {
                        Ok(Payload::Text(text)) => Message::Text(text),
                        Ok(Payload::Binary(bytes)) => Message::Binary(bytes),
                        Err(e) => return fail("ws", e),
                    };
                    if let Err(e) = client.send(&message) {
                        return fail("ws", e);
                    }
                }
                Ok(None) | Err(mpsc::TryRecvError::Disconnected) => {
                    quiet_until = Some(Instant::now() + args.linger);
                }
                Err(mpsc::TryRecvError::Empty) => break,
            }
        }
        let mut out = stdout.lock();
        let event = client.recv();
        if matches!(event, Ok(Event::Message(_))) && close_deadline.is_none() {
            quiet_until = quiet_until.map(|_| Instant::now() + args.linger);
        }
        let written = match event {
            Ok(Event::Message(Message::Text(text))) => writeln!(out, "{text}"),
            Ok(Event::Message(Message::Binary(bytes))) if args.raw => out.write_all(&bytes),
            Ok(Event::Message(Message::Binary(bytes))) => writeln!(out, "{}", base64(&bytes)),
            Ok(Event::Ping(_) | Event::Pong(_)) => Ok(()),
            Ok(Event::Close(frame)) => {
                let _ = out.flush();
                return match frame {
                    Some(f) if close_deadline.is_none() || f.code != CloseCode::NORMAL => {
                        eprintln!(
                            "pushwire ws: the server closed the connection with {} {}",
                            f.code.0, f.reason
                        );
                        ExitCode::SUCCESS
                    }
                    _ => ExitCode::SUCCESS,
                };
            }
            Err(Error::Timeout { .. }) => {
                if close_deadline.is_some_and(|deadline| Instant::now() >= deadline) {
                    return fail("ws", "the server did not answer the close frame in time");
                }
                Ok(())
            }
            Err(e) => return fail("ws", e),
        };
        if written.and_then(|()| out.flush()).is_err() {
            return ExitCode::SUCCESS;
        }
    }
}
