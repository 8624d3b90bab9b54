//! The push styles pushwire serves, and the routing of a request head to one of them.
//!
//! Implements: the URL space (`/`, `/healthz`, `/channels/{name}`), method checks with `Allow`
//! (RFC 9110 §15.5.6), and one file per transport:
//! [`publish`] (HTTP POST), [`short_poll`] (GET with an immediate answer).
//!
//! Every transport subscribes and replays through the same hub commands, so the cursor
//! (`EPOCH:OFFSET`) and the gap rule are the same whichever way a client connects.
//!
//! Does not: touch sockets; the connection layer ([`crate::conn`]) feeds requests in and takes
//! responses out.

pub mod envelope;
pub mod pages;
pub mod publish;
pub mod short_poll;

use crate::http1::head::RequestHead;
use crate::http1::target::Target;
use crate::hub::{ChannelName, Cursor, Since};

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
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_batch_messages: 100,
            max_event_name_bytes: 64,
            max_send_buffer_bytes: 1024 * 1024,
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
        if self.max_event_name_bytes == 0 {
            return Err("max event name bytes must be at least 1".into());
        }
        Ok(())
    }
}

/// What a request asks for, once its head is routed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `GET /`: the embedded page.
    Index,
    /// `GET /healthz`.
    Healthz,
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
}

/// A request refused at routing, with its status and a short explanation for the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The status code.
    pub status: u16,
    /// The `Allow` field of a 405.
    pub allow: Option<&'static str>,
    /// A one-line explanation (server-made, never echoing the request).
    pub reason: &'static str,
}

impl Refusal {
    fn new(status: u16, reason: &'static str) -> Self {
        Refusal {
            status,
            allow: None,
            reason,
        }
    }
}

const CHANNEL_METHODS: &str = "GET, HEAD, POST";
const PAGE_METHODS: &str = "GET, HEAD";

/// Routes a request head.
pub fn route(head: &RequestHead, limits: &Limits) -> Result<Route, Refusal> {
    let target =
        Target::parse(&head.target).ok_or(Refusal::new(400, "request-target must be an absolute path"))?;
    let method = head.method.as_str();
    let read_only = matches!(method, "GET" | "HEAD");
    // RFC 9110 §15.5.6: a 405 response MUST include an Allow header field.
    let not_allowed = |allow| Refusal {
        status: 405,
        allow: Some(allow),
        reason: "method not allowed",
    };
    match target.path {
        "/" | "/index.html" if read_only => Ok(Route::Index),
        "/healthz" if read_only => Ok(Route::Healthz),
        "/" | "/index.html" | "/healthz" => Err(not_allowed(PAGE_METHODS)),
        path => {
            let Some(name) = path.strip_prefix("/channels/") else {
                return Err(Refusal::new(404, "not found"));
            };
            let channel = ChannelName::parse(name)
                .map_err(|_| Refusal::new(400, "channel names are 1 to 128 bytes of A-Z a-z 0-9 . _ ~ -"))?;
            match method {
                "POST" => Ok(Route::Publish {
                    channel,
                    event: event_param(&target, limits)?,
                }),
                "GET" | "HEAD" => Ok(Route::ShortPoll {
                    channel,
                    since: since_param(&target)?,
                }),
                _ => Err(not_allowed(CHANNEL_METHODS)),
            }
        }
    }
}

/// The `since` cursor of a request: absent means "from now".
pub fn since_param(target: &Target<'_>) -> Result<Since, Refusal> {
    match target.param("since") {
        None => Ok(Since::Tail),
        Some(Ok(text)) => Cursor::parse(&text)
            .map(Since::After)
            .map_err(|_| Refusal::new(400, "since must be a cursor EPOCH:OFFSET")),
        Some(Err(_)) => Err(Refusal::new(400, "bad percent-encoding in query")),
    }
}

/// The `event` name of a publish: an RFC 9110 §5.6.2 token, not the reserved `gap`.
fn event_param(target: &Target<'_>, limits: &Limits) -> Result<Option<String>, Refusal> {
    let Some(value) = target.param("event") else {
        return Ok(None);
    };
    let name = value.map_err(|_| Refusal::new(400, "bad percent-encoding in query"))?;
    if name.is_empty() || name.len() > limits.max_event_name_bytes || !name.bytes().all(is_tchar) {
        return Err(Refusal::new(
            400,
            "event must be a token of at most max-event-name-bytes",
        ));
    }
    if name == "gap" {
        return Err(Refusal::new(
            400,
            "the event name gap is reserved for gap signals",
        ));
    }
    Ok(Some(name))
}

/// RFC 9110 §5.6.2 tchar.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
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
            headers: vec![Header {
                name: "Host".into(),
                value: b"x".to_vec(),
            }],
        }
    }

    fn status(method: &str, target: &str) -> u16 {
        route(&head(method, target), &Limits::default())
            .unwrap_err()
            .status
    }

    #[test]
    fn rfc9110_15_5_6_405_carries_allow() {
        let r = route(&head("DELETE", "/channels/a"), &Limits::default()).unwrap_err();
        assert_eq!((r.status, r.allow), (405, Some(CHANNEL_METHODS)));
        assert_eq!(status("POST", "/healthz"), 405);
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
        assert_eq!(
            status("POST", &format!("/channels/a?event={}", "e".repeat(65))),
            400
        );
        let ok = route(&head("POST", "/channels/a?event=price"), &Limits::default()).unwrap();
        assert!(matches!(ok, Route::Publish { event: Some(e), .. } if e == "price"));
    }

    #[test]
    fn since_must_parse_as_a_cursor() {
        assert_eq!(status("GET", "/channels/a?since=nope"), 400);
        let ok = route(
            &head("GET", "/channels/a?since=00000000000000ab%3A7"),
            &Limits::default(),
        )
        .unwrap();
        assert!(matches!(ok, Route::ShortPoll { since: Since::After(c), .. } if c.offset == 7));
    }
}
