//! The transports' limits and options, a leaf (it names no other part of the server but the
//! codecs' own limits and [`crate::protocol`]) so that [`crate::config`] composes them without
//! importing the router or the sessions.

use std::time::Duration;

use crate::protocol::Transport;
use crate::ws;

/// Bounds on one connection's channel set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoomLimits {
    /// Most channels one connection holds; another subscribe is refused with
    /// `too_many_channels`, a longer HTTP channel list with 400 (that list also stops at
    /// [`MAX_CHANNELS_PER_REQUEST`]: [`RoomLimits::max_channels_per_request`]). Default 64.
    pub max_channels_per_connection: usize,
    /// Most commands awaiting the hub's answer on one connection; another is refused with
    /// `unavailable` until answers arrive. Default 64.
    pub max_pending_commands: usize,
}

impl Default for RoomLimits {
    fn default() -> RoomLimits {
        RoomLimits { max_channels_per_connection: MAX_CHANNELS_PER_REQUEST, max_pending_commands: 64 }
    }
}

/// Most channels one multi-channel HTTP request names, whatever
/// [`RoomLimits::max_channels_per_connection`] allows a `/ws` connection: below Nchan's 255
/// because a multi-channel SSE id carries every channel's offset, and at 64 channels its
/// compact form is at most 16 + 64 × 21 = 1,360 bytes (the full form 64 × 38 = 2,432), well
/// within a request head when the browser sends it back as `Last-Event-ID`; at 255 the full
/// form would be 9.7 KB, on every event.
pub const MAX_CHANNELS_PER_REQUEST: usize = 64;

impl RoomLimits {
    /// Most channels of one multi-channel HTTP request: the connection's limit, at most
    /// [`MAX_CHANNELS_PER_REQUEST`].
    pub fn max_channels_per_request(&self) -> usize {
        self.max_channels_per_connection.min(MAX_CHANNELS_PER_REQUEST)
    }
}

/// Limits and options of the transports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Most messages in one poll response; a client with more to catch up polls again from the
    /// returned `next`. Default 100.
    pub max_batch_messages: usize,
    /// Longest event name given with `?event=`, in bytes; longer gets 400. Default 64.
    pub max_event_name_bytes: usize,
    /// Most unwritten bytes queued for one connection. A streaming subscriber past it is a
    /// slow consumer and is closed; a request/response connection past it stops being read
    /// until its peer reads. Default 1 MiB.
    pub max_send_buffer_bytes: usize,
    /// Interval of the heartbeat on SSE (a comment line) and stream (a heartbeat line)
    /// responses, so idle proxies and clients see the connection alive. Default 15 s.
    pub keepalive_interval: Duration,
    /// The `retry:` reconnection hint sent first on every SSE response. Default 2 s.
    pub sse_retry: Duration,
    /// Longest `?wait=` a long poll may park for; longer waits are capped. Default 30 s, below
    /// the 60 s idle timeout common in load balancers.
    pub longpoll_max_wait: Duration,
    /// Transports refused with 403, e.g. to make clients fall back, or where a proxy cannot
    /// carry them. Default none.
    pub disabled: Vec<Transport>,
    /// Bounds on one connection's channel set (command mode).
    pub rooms: RoomLimits,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_batch_messages: 100,
            max_event_name_bytes: 64,
            max_send_buffer_bytes: 1024 * 1024,
            keepalive_interval: Duration::from_secs(15),
            sse_retry: Duration::from_secs(2),
            longpoll_max_wait: Duration::from_secs(30),
            disabled: Vec::new(),
            rooms: RoomLimits::default(),
        }
    }
}

impl Limits {
    /// Checks the limits once at startup.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_batch_messages == 0 {
            return Err("max batch messages must be at least 1".into());
        }
        if self.max_send_buffer_bytes < 4096 {
            return Err("max send buffer bytes must be at least 4096".into());
        }
        if self.keepalive_interval.is_zero() || self.longpoll_max_wait.is_zero() {
            return Err("keepalive interval and long-poll max wait must be positive".into());
        }
        if self.max_event_name_bytes == 0 {
            return Err("max event name bytes must be at least 1".into());
        }
        if self.rooms.max_channels_per_connection == 0 || self.rooms.max_pending_commands == 0 {
            return Err("max channels per connection and max pending commands must be at least 1".into());
        }
        Ok(())
    }
}

/// WebSocket limits and options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebSocketLimits {
    /// Frame and message limits on `/channels/{name}` (default: 64 KiB, the publish limit).
    pub channel: ws::Limits,
    /// Frame and message limits on `/echo` (default 16 MiB: conformance cases send 16 MiB).
    pub echo: ws::Limits,
    /// A connection quiet this long is pinged; `None` disables pings. Default 25 s, under
    /// common load-balancer idle timeouts.
    pub ping_interval: Option<Duration>,
    /// How long after a ping some traffic must come back before the connection is closed.
    /// Default 10 s.
    pub pong_timeout: Duration,
    /// How long the server waits for the peer's close after sending its own. Default 5 s.
    pub close_timeout: Duration,
    /// Messages sent by clients on a channel are published to it. Default true.
    pub client_publish: bool,
    /// Accept permessage-deflate offers (RFC 7692). Default true.
    pub deflate: bool,
    /// Smallest message compressed on a permessage-deflate connection, in bytes; shorter ones,
    /// and those compression does not shrink, go out uncompressed. Default 128.
    pub deflate_min_bytes: usize,
}

impl Default for WebSocketLimits {
    fn default() -> Self {
        let echo_bytes = 16 * 1024 * 1024;
        WebSocketLimits {
            channel: ws::Limits::default(),
            echo: ws::Limits { max_frame_payload_bytes: echo_bytes, max_message_bytes: echo_bytes },
            ping_interval: Some(Duration::from_secs(25)),
            pong_timeout: Duration::from_secs(10),
            close_timeout: Duration::from_secs(5),
            client_publish: true,
            deflate: true,
            deflate_min_bytes: crate::ws::deflate::codec::DEFAULT_MIN_BYTES,
        }
    }
}

impl WebSocketLimits {
    /// Checks the limits once at startup.
    pub fn validate(&self) -> Result<(), String> {
        self.channel.validate()?;
        self.echo.validate()?;
        if self.ping_interval.is_some_and(|d| d.is_zero()) || self.pong_timeout.is_zero() {
            return Err("WebSocket ping interval and pong timeout must be positive".into());
        }
        if self.close_timeout.is_zero() {
            return Err("WebSocket close timeout must be positive".into());
        }
        Ok(())
    }
}
