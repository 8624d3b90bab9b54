//! Routing: a request head to a [`Route`] or a [`Refusal`], with the access verdict decided
//! once on the way.
//!
//! Implements: the URL space (`/`, `/healthz`, `/metrics`, `/pushwire.js`, `/echo`, `/ws`,
//! `/channels/{name}`, `/channels/{name}/presence`, `/api/…` through [`super::api::route`]), method checks with `Allow` (RFC 9110 §9.1, §15.5.6), the access policy
//! of [`super::access`] applied once per head (origin, then the token the route needs: the
//! signed token a `--channel-policy` asks for, else the static one), and the choice
//! of transport for `GET /channels/{name}` (see [`super`], "Choosing a transport").
//!
//! Does not: answer anything (the connection and the sessions do).

use std::time::Duration;

use super::access::Denied;
use super::feed::Start;
use super::policy::Action;
use super::publish::check_event_name;
use super::refusal::Refusal;
use super::rooms::{parse_channels, resume_points, Resume};
use super::{sse, websocket, Limits};
use crate::config::Config;
use crate::http1::head::{Headers, RequestHead};
use crate::http1::target::Target;
use crate::hub::{ChannelName, Cursor, Since};
use crate::protocol::Transport;

/// What a request asks for, once its head is routed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `GET /`: the embedded page.
    Index,
    /// `GET /pushwire.js`: the browser client.
    ClientScript,
    /// `GET /healthz`: liveness, 200 while the process serves at all.
    Healthz,
    /// `GET /readyz`: readiness, 503 while draining or while the backend is unreachable.
    Readyz,
    /// `GET /metrics`: Prometheus text format.
    Metrics,
    /// `OPTIONS`: a CORS preflight (or a plain OPTIONS), answered 204.
    Preflight,
    /// `POST /channels/{name}`: publish the body.
    Publish {
        /// The channel.
        channel: ChannelName,
        /// The event name from `?event=`, validated.
        event: Option<String>,
    },
    /// `GET /channels/{name}`: answer at once with what follows `since`.
    ShortPoll {
        /// The channel.
        channel: ChannelName,
        /// Where the client's history ends.
        since: Since,
    },
    /// `GET /channels/{name}?wait=SECONDS`: answer when something follows `since`, or after
    /// `wait` with nothing.
    LongPoll {
        /// The channel.
        channel: ChannelName,
        /// Where the client's history ends.
        since: Since,
        /// How long to park (already capped).
        wait: Duration,
    },
    /// `GET /channels/{name}` as an event stream.
    Sse {
        /// The channel.
        channel: ChannelName,
        /// Where the client's history ends (`Last-Event-ID`, `last_event_id` or `since`), or
        /// [`Start::Lost`] for an unreadable `Last-Event-ID`.
        since: Start,
    },
    /// A WebSocket upgrade, accepted: `/echo`, one channel, or `/ws` (command mode).
    WebSocket {
        /// What it serves: for a channel, where the client's history ends.
        channel: websocket::WsTarget,
        /// The handshake's answer.
        accepted: crate::ws::Accepted,
        /// Messages the client sends are published (publishing allowed and token given).
        may_publish: bool,
    },
    /// `GET /channels/{name}/presence`: the channel's presence members as JSON.
    Presence {
        /// The channel.
        channel: ChannelName,
    },
    /// `GET /channels/{name}` as a chunked NDJSON stream.
    Stream {
        /// The channel.
        channel: ChannelName,
        /// Where the client's history ends.
        since: Since,
    },
    /// `POST /api/CALL`: a server API call, its key already checked (see [`super::api`]).
    Api(super::api::Call),
    /// `GET /channels/a,b,c` or `GET /channels?channel=a&channel=b` as an event stream, a
    /// chunked stream, a long poll or a short poll (a WebSocket is [`Route::WebSocket`] with
    /// [`websocket::WsTarget::Channels`]); see [`super::channels`].
    Channels {
        /// The channels, in the order named (at most `max_channels_per_connection`).
        channels: Vec<ChannelName>,
        /// `Sse`, `Stream`, `LongPoll` or `Poll`.
        mode: Transport,
        /// Where each channel starts (a composite `since` or `Last-Event-ID`).
        resume: Resume,
        /// A long poll's wait (already capped).
        wait: Duration,
    },
}

const CHANNEL_METHODS: &[(&str, &str)] = &[("Allow", "GET, HEAD, POST")];
const PAGE_METHODS: &[(&str, &str)] = &[("Allow", "GET, HEAD")];
/// `/ws` is a WebSocket upgrade, a GET only (RFC 6455 §4.1).
const WS_METHODS: &[(&str, &str)] = &[("Allow", "GET")];

/// A routed request head: the route (or why it is refused) and the access verdict it was
/// decided with, handed on so that nothing downstream checks the head again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routed {
    /// The route, or the refusal to answer with.
    pub route: Result<Route, Refusal>,
    /// The request's origin when it is allowed and cross-origin: the answer (a refusal's too)
    /// names it in its CORS fields (see [`super::access`]).
    pub cors_origin: Option<String>,
    /// For a subscription admitted by signed tokens (a `--channel-policy` asked for them): the
    /// earliest of their expiries, in seconds since the Unix epoch. The connection ends the
    /// subscription then, whatever its transport (issue #13: an expired token on a live
    /// connection); `/ws` command mode keeps its own (it can `refresh`).
    pub token_expires_at: Option<u64>,
}

/// Routes a request head at Unix time 0 (see [`route_request`], which also gives the CORS
/// origin and takes the time signed tokens are checked at).
pub fn route(head: &RequestHead, config: &Config) -> Result<Route, Refusal> {
    route_request(head, config, 0).route
}

/// Routes a request head, deciding access once: the origin for every request, then for a
/// channel the signed token its `--channel-policy` needs (checked at `unix_now_s`), else the
/// static publish token for a publish or a WebSocket that may publish and the subscribe token
/// for a subscription; for `/ws` the connection token.
pub fn route_request(head: &RequestHead, config: &Config, unix_now_s: u64) -> Routed {
    let origin = config.access.check_origin(head);
    let cors_origin = origin.as_ref().ok().and_then(Clone::clone);
    let mut token_expires_at = None;
    let route = route_with(head, config, origin.map(drop), unix_now_s, &mut token_expires_at);
    let token_expires_at = token_expires_at.filter(|_| route.is_ok());
    Routed { route, cors_origin, token_expires_at }
}

/// Checks `action` on `channel`: the signed token when a channel policy asks for one (its
/// expiry returned, in Unix seconds), else the static token (`check_static`).
fn check_channel(
    head: &RequestHead,
    target: &Target<'_>,
    config: &Config,
    channel: &ChannelName,
    action: Action,
    unix_now_s: u64,
    check_static: impl FnOnce() -> Result<(), Denied>,
) -> Result<Option<u64>, Refusal> {
    match config.access.check_channel(head, target, channel.as_str(), action, unix_now_s) {
        Some(verdict) => verdict.map(|claims| Some(claims.expires_at)).map_err(Refusal::Denied),
        None => check_static().map(|()| None).map_err(Refusal::Denied),
    }
}

fn route_with(
    head: &RequestHead,
    config: &Config,
    origin: Result<(), Denied>,
    unix_now_s: u64,
    token_expires_at: &mut Option<u64>,
) -> Result<Route, Refusal> {
    let limits = &config.transport;
    let target = Target::parse(&head.target).ok_or(Refusal::BadTarget)?;
    origin.map_err(Refusal::Denied)?;
    let method = head.method.as_str();
    // RFC 9110 §9.1: an origin server that receives a request method that is unrecognized or
    // not implemented SHOULD respond with 501; a known method the resource does not allow gets
    // 405 with Allow (§15.5.6). Method names are case-sensitive, so `get` is unrecognized.
    if !matches!(
        method,
        "GET" | "HEAD" | "POST" | "PUT" | "DELETE" | "CONNECT" | "OPTIONS" | "TRACE" | "PATCH"
    ) {
        return Err(Refusal::MethodNotImplemented);
    }
    if method == "OPTIONS" {
        return Ok(Route::Preflight);
    }
    let read_only = matches!(method, "GET" | "HEAD");
    // RFC 9110 §15.5.6: a 405 response MUST include an Allow header field.
    let not_allowed = |allow| Refusal::MethodNotAllowed { allow };
    match target.path {
        "/" | "/index.html" if read_only => Ok(Route::Index),
        "/pushwire.js" if read_only => Ok(Route::ClientScript),
        "/healthz" if read_only => Ok(Route::Healthz),
        "/readyz" if read_only => Ok(Route::Readyz),
        "/metrics" if read_only => Ok(Route::Metrics),
        "/" | "/index.html" | "/pushwire.js" | "/healthz" | "/readyz" | "/metrics" => {
            Err(not_allowed(PAGE_METHODS))
        }
        "/echo" => websocket_route(head, &target, websocket::WsTarget::Echo, config, unix_now_s),
        "/ws" if method == "GET" => {
            // A valid signed token is the connection's identity and stands for the static
            // subscribe token; an invalid one is refused before the upgrade.
            let claims =
                config.access.connection_token(head, &target, unix_now_s).map_err(Refusal::Denied)?;
            if claims.is_none() {
                config.access.check_subscribe(head, &target).map_err(Refusal::Denied)?;
            }
            let commands = websocket::WsTarget::Commands(claims.map(Box::new));
            websocket_route(head, &target, commands, config, unix_now_s)
        }
        "/ws" => Err(not_allowed(WS_METHODS)),
        path if path == "/api" || path.starts_with("/api/") => {
            super::api::route(head, path, method, config).map(Route::Api)
        }
        path if path == "/channels" || path.strip_prefix("/channels/").is_some_and(|l| l.contains(',')) => {
            match method {
                "GET" | "HEAD" => channels_route(head, &target, config, unix_now_s, token_expires_at),
                "POST" => Err(Refusal::PublishNeedsOneChannel),
                _ => Err(not_allowed(CHANNEL_METHODS)),
            }
        }
        path => {
            let Some(name) = path.strip_prefix("/channels/") else {
                return Err(Refusal::NotFound);
            };
            // `/` is not in the channel alphabet, so `NAME/presence` names no channel.
            if let Some(name) = name.strip_suffix("/presence") {
                let channel = ChannelName::parse(name).map_err(|_| Refusal::BadChannelName)?;
                if !read_only {
                    return Err(not_allowed(PAGE_METHODS));
                }
                let static_check = || config.access.check_subscribe(head, &target);
                check_channel(head, &target, config, &channel, Action::Presence, unix_now_s, static_check)?;
                return Ok(Route::Presence { channel });
            }
            let channel = ChannelName::parse(name).map_err(|_| Refusal::BadChannelName)?;
            match method {
                "POST" => {
                    let static_check = || config.access.check_publish(head, &target);
                    check_channel(
                        head,
                        &target,
                        config,
                        &channel,
                        Action::Publish,
                        unix_now_s,
                        static_check,
                    )?;
                    Ok(Route::Publish { channel, event: event_param(&target, limits)? })
                }
                "GET" | "HEAD" => {
                    let static_check = || config.access.check_subscribe(head, &target);
                    *token_expires_at = check_channel(
                        head,
                        &target,
                        config,
                        &channel,
                        Action::Subscribe,
                        unix_now_s,
                        static_check,
                    )?;
                    subscribe_route(head, &target, channel, config, unix_now_s)
                }
                _ => Err(not_allowed(CHANNEL_METHODS)),
            }
        }
    }
}

/// Picks the transport of a subscription (see the module docs for the order); HEAD gets the
/// short poll's fields.
fn pick_mode(head: &RequestHead, target: &Target<'_>, limits: &Limits) -> Result<Transport, Refusal> {
    let mode = match target.param("mode") {
        Some(Ok(m)) => Transport::parse(&m).ok_or(Refusal::BadMode)?,
        Some(Err(_)) => return Err(Refusal::BadQueryEncoding),
        None if head.has_token("upgrade", "websocket") => Transport::WebSocket,
        None if accepts(head, "text/event-stream") => Transport::Sse,
        None if accepts(head, "application/x-ndjson") => Transport::Stream,
        None if target.param("wait").is_some() => Transport::LongPoll,
        None => Transport::Poll,
    };
    // HEAD cannot stream or park: it gets the short poll's fields.
    let mode = if head.method == "HEAD" { Transport::Poll } else { mode };
    if limits.disabled.contains(&mode) {
        return Err(Refusal::TransportDisabled);
    }
    Ok(mode)
}

/// A long poll's `?wait=`, capped (absent: the cap).
fn wait_param(target: &Target<'_>, limits: &Limits) -> Result<Duration, Refusal> {
    let wait = match target.param("wait") {
        None => limits.longpoll_max_wait,
        Some(Ok(w)) => parse_wait(&w).ok_or(Refusal::BadWait)?,
        Some(Err(_)) => return Err(Refusal::BadQueryEncoding),
    };
    Ok(wait.min(limits.longpoll_max_wait))
}

/// Routes a multi-channel subscription (issue #13): the channel list (counted before any name
/// is copied), each channel's access (its policy and token, as a single-channel subscription's,
/// the earliest expiry of the tokens that admitted them set in `token_expires_at`),
/// the transport, and where each channel starts: `Last-Event-ID` on an event stream (never
/// refused: unreadable is a gap on every channel), else `?since=` (a composite cursor; a bad
/// one is 400).
fn channels_route(
    head: &RequestHead,
    target: &Target<'_>,
    config: &Config,
    unix_now_s: u64,
    token_expires_at: &mut Option<u64>,
) -> Result<Route, Refusal> {
    let limits = &config.transport;
    let channels = match parse_channels(target, &limits.rooms) {
        Some(Ok(channels)) => channels,
        Some(Err(e)) => return Err(Refusal::BadChannelList(e)),
        None => return Err(Refusal::NotFound),
    };
    for channel in &channels {
        let static_check = || config.access.check_subscribe(head, target);
        let expiry =
            check_channel(head, target, config, channel, Action::Subscribe, unix_now_s, static_check)?;
        *token_expires_at = match (*token_expires_at, expiry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
    let mode = pick_mode(head, target, limits)?;
    let since = match target.param("since") {
        None => None,
        Some(Ok(text)) => Some(text),
        Some(Err(_)) => return Err(Refusal::BadQueryEncoding),
    };
    let last_event_id = if mode == Transport::Sse { head.header("last-event-id") } else { None };
    let resume = resume_points(channels.len(), since.as_deref(), last_event_id)
        .map_err(|_| Refusal::BadCompositeSince)?;
    let wait = if mode == Transport::LongPoll { wait_param(target, limits)? } else { Duration::ZERO };
    match mode {
        // RFC 9112 §7: a server MUST NOT send chunked to an HTTP/1.0 client.
        Transport::Stream if head.minor_version == 0 => Err(Refusal::StreamNeedsHttp11),
        Transport::WebSocket => {
            let target_ws = websocket::WsTarget::Channels(channels, resume);
            websocket_route(head, target, target_ws, config, unix_now_s)
        }
        mode => Ok(Route::Channels { channels, mode, resume, wait }),
    }
}

/// Picks the transport of a `GET /channels/{name}` (see the module docs for the order).
fn subscribe_route(
    head: &RequestHead,
    target: &Target<'_>,
    channel: ChannelName,
    config: &Config,
    unix_now_s: u64,
) -> Result<Route, Refusal> {
    let limits = &config.transport;
    let mode = pick_mode(head, target, limits)?;
    let since = since_param(target)?;
    match mode {
        Transport::Poll => Ok(Route::ShortPoll { channel, since }),
        Transport::LongPoll => Ok(Route::LongPoll { channel, since, wait: wait_param(target, limits)? }),
        Transport::Sse => Ok(Route::Sse { channel, since: sse::since(head, target)? }),
        // RFC 9112 §7: a server MUST NOT send chunked to an HTTP/1.0 client.
        Transport::Stream if head.minor_version == 0 => Err(Refusal::StreamNeedsHttp11),
        Transport::Stream => Ok(Route::Stream { channel, since }),
        Transport::WebSocket => {
            websocket_route(head, target, websocket::WsTarget::Channel(channel, since), config, unix_now_s)
        }
    }
}

/// Runs the opening handshake checks (RFC 6455 §4.2.1) for `/echo`, a channel or `/ws`.
fn websocket_route(
    head: &RequestHead,
    target: &Target<'_>,
    channel: websocket::WsTarget,
    config: &Config,
    unix_now_s: u64,
) -> Result<Route, Refusal> {
    let echo = matches!(channel, websocket::WsTarget::Echo);
    let options = crate::ws::ServerOptions {
        protocols: if echo { Vec::new() } else { vec![websocket::PROTOCOL_V1.to_string()] },
        // The Origin policy was applied to every request before routing (see `access`).
        allowed_origins: None,
        deflate: config.websocket.deflate,
    };
    // On a channel whose policy needs a signed token to publish, the token decides; command
    // mode checks each publish's channel itself.
    let may_publish = config.websocket.client_publish
        && match &channel {
            websocket::WsTarget::Channel(name, _) => config
                .access
                .check_channel(head, target, name.as_str(), Action::Publish, unix_now_s)
                .map_or_else(|| config.access.check_publish(head, target).is_ok(), |v| v.is_ok()),
            _ => config.access.check_publish(head, target).is_ok(),
        };
    match crate::ws::handshake::accept(head, &options) {
        Ok(accepted)
            if matches!(channel, websocket::WsTarget::Commands(_))
                && accepted.protocol.as_deref() != Some(websocket::PROTOCOL_V1) =>
        {
            Err(Refusal::CommandsNeedV1)
        }
        Ok(accepted) => Ok(Route::WebSocket { channel, accepted, may_publish }),
        Err(e) => Err(Refusal::Handshake(e)),
    }
}

/// True when the request's `Accept` lists `media` (RFC 9110 §12.5.1; parameters ignored).
fn accepts(head: &RequestHead, media: &str) -> bool {
    head.fields()
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("accept"))
        .flat_map(|h| h.value.split(|&b| b == b','))
        .any(|range| {
            let range = range.split(|&b| b == b';').next().unwrap_or_default().trim_ascii();
            range.eq_ignore_ascii_case(media.as_bytes())
        })
}

/// A `?wait=` value: decimal seconds, at most 6 digits before and 3 after the point.
fn parse_wait(text: &str) -> Option<Duration> {
    let (whole, frac) = text.split_once('.').unwrap_or((text, ""));
    let digits = |s: &str, max: usize| s.len() <= max && s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !digits(whole, 6) || !digits(frac, 3) {
        return None;
    }
    let millis: u64 = format!("{whole}{frac:0<3}").parse().ok()?;
    Some(Duration::from_millis(millis))
}

/// The `since` cursor of a request: absent means "from now".
pub fn since_param(target: &Target<'_>) -> Result<Since, Refusal> {
    match target.param("since") {
        None => Ok(Since::Tail),
        Some(Ok(text)) => Cursor::parse(&text).map(Since::After).map_err(|_| Refusal::BadSince),
        Some(Err(_)) => Err(Refusal::BadQueryEncoding),
    }
}

/// The `event` name of a publish: an RFC 9110 §5.6.2 token, not the reserved `gap` or
/// `token_expired`.
fn event_param(target: &Target<'_>, limits: &Limits) -> Result<Option<String>, Refusal> {
    let Some(value) = target.param("event") else {
        return Ok(None);
    };
    let name = value.map_err(|_| Refusal::BadQueryEncoding)?;
    check_event_name(&name, limits.max_event_name_bytes).map_err(Refusal::from)?;
    Ok(Some(name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http1::head::Header;

    fn head(method: &str, target: &str) -> RequestHead {
        RequestHead {
            method: method.into(),
            target: target.into(),
            minor_version: 1,
            headers: vec![Header { name: "Host".into(), value: b"x".to_vec() }],
        }
    }

    fn status(method: &str, target: &str) -> u16 {
        route(&head(method, target), &Config::default()).unwrap_err().status()
    }

    #[test]
    fn rfc9110_9_1_unrecognized_methods_are_501() {
        assert_eq!(status("BREW", "/channels/a"), 501);
        assert_eq!(status("get", "/healthz"), 501);
        assert_eq!(status("PUT", "/channels/a"), 405);
    }

    #[test]
    fn rfc9110_15_5_6_405_carries_allow() {
        let r = route(&head("DELETE", "/channels/a"), &Config::default()).unwrap_err();
        assert_eq!((r.status(), r.headers()), (405, CHANNEL_METHODS));
        assert_eq!(status("POST", "/healthz"), 405);
    }

    #[test]
    fn pages_are_routed_and_read_only() {
        let config = Config::default();
        assert_eq!(route(&head("GET", "/"), &config), Ok(Route::Index));
        assert_eq!(route(&head("GET", "/pushwire.js"), &config), Ok(Route::ClientScript));
        assert_eq!(route(&head("HEAD", "/pushwire.js?v=1"), &config), Ok(Route::ClientScript));
        let r = route(&head("POST", "/pushwire.js"), &config).unwrap_err();
        assert_eq!((r.status(), r.headers()), (405, PAGE_METHODS));
    }

    #[test]
    fn unknown_paths_are_404_and_bad_names_400() {
        assert_eq!(status("GET", "/nope"), 404);
        assert_eq!(status("GET", "/channels/"), 400);
        assert_eq!(status("GET", "/channels/a%20b"), 400);
        assert_eq!(status("GET", &format!("/channels/{}", "a".repeat(129))), 400);
    }

    #[test]
    fn publish_event_must_be_a_token_and_not_gap() {
        assert_eq!(status("POST", "/channels/a?event=gap"), 400);
        assert_eq!(status("POST", "/channels/a?event=a%20b"), 400);
        assert_eq!(status("POST", &format!("/channels/a?event={}", "e".repeat(65))), 400);
        let ok = route(&head("POST", "/channels/a?event=price"), &Config::default()).unwrap();
        assert!(matches!(ok, Route::Publish { event: Some(e), .. } if e == "price"));
    }

    #[test]
    fn transport_is_chosen_by_mode_then_headers_then_wait() {
        let mut h = head("GET", "/channels/a");
        h.headers
            .push(Header { name: "Accept".into(), value: b"text/html, text/event-stream;q=0.9".to_vec() });
        assert!(matches!(route(&h, &Config::default()), Ok(Route::Sse { .. })));
        h.target = "/channels/a?mode=poll".into();
        assert!(matches!(route(&h, &Config::default()), Ok(Route::ShortPoll { .. })));
        let mut n = head("GET", "/channels/a");
        n.headers.push(Header { name: "Accept".into(), value: b"application/x-ndjson".to_vec() });
        assert!(matches!(route(&n, &Config::default()), Ok(Route::Stream { .. })));
        let lp = route(&head("GET", "/channels/a?wait=2.5"), &Config::default()).unwrap();
        assert!(matches!(lp, Route::LongPoll { wait, .. } if wait == Duration::from_millis(2500)));
        let capped = route(&head("GET", "/channels/a?wait=999"), &Config::default()).unwrap();
        assert!(matches!(capped, Route::LongPoll { wait, .. } if wait == Duration::from_secs(30)));
        assert_eq!(status("GET", "/channels/a?wait=-1"), 400);
        assert_eq!(status("GET", "/channels/a?wait=1e3"), 400);
        assert_eq!(status("GET", "/channels/a?mode=carrier-pigeon"), 400);
    }

    #[test]
    fn disabled_transports_are_refused_with_403() {
        let mut config = Config::default();
        config.transport.disabled = vec![Transport::Sse];
        let r = route(&head("GET", "/channels/a?mode=sse"), &config).unwrap_err();
        assert_eq!(r.status(), 403);
        assert!(route(&head("GET", "/channels/a?mode=stream"), &config).is_ok());
    }

    /// Issue #13 item 7, HTML `#the-last-event-id-header`: the browser sends `Last-Event-ID`
    /// by itself, so an unreadable one starts from now with a gap ([`Start::Lost`]) instead of
    /// a 400 that would end its reconnects; `?last_event_id=` and `?since=` stay 400.
    #[test]
    fn html_sse_unreadable_last_event_id_is_a_gap_not_a_refusal() {
        let sse = |target: &str, last_event_id: Option<&[u8]>| {
            let mut h = head("GET", target);
            h.headers.push(Header { name: "Accept".into(), value: b"text/event-stream".to_vec() });
            if let Some(value) = last_event_id {
                h.headers.push(Header { name: "Last-Event-ID".into(), value: value.to_vec() });
            }
            route(&h, &Config::default()).map(|r| match r {
                Route::Sse { since, .. } => since,
                other => panic!("{other:?}"),
            })
        };
        for garbage in [&b"garbage"[..], b"\xc3\x28", b"0123456789abcdef.1.2", b"00000000000000ab:"] {
            assert_eq!(sse("/channels/a", Some(garbage)), Ok(Start::Lost), "{garbage:?}");
        }
        let good = Start::Since(Since::After(Cursor::parse("00000000000000ab:7").unwrap()));
        assert_eq!(
            sse("/channels/a?last_event_id=nope", Some(b"00000000000000ab:7")),
            Ok(good),
            "the header wins"
        );
        assert_eq!(sse("/channels/a", Some(b"")), Ok(Start::Since(Since::Tail)));
        assert_eq!(sse("/channels/a?last_event_id=x", None).unwrap_err().status(), 400);
        assert_eq!(sse("/channels/a?since=x", None).unwrap_err().status(), 400);
    }

    #[test]
    fn since_must_parse_as_a_cursor() {
        assert_eq!(status("GET", "/channels/a?since=nope"), 400);
        let ok = route(&head("GET", "/channels/a?since=00000000000000ab%3A7"), &Config::default()).unwrap();
        assert!(matches!(ok, Route::ShortPoll { since: Since::After(c), .. } if c.offset == 7));
    }
}
