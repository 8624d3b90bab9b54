//! Publishing to a channel over HTTP or WebSocket.
//!
//! ```no_run
//! use pushwire::client::{Payload, PublishOptions, Publisher};
//!
//! let mut publisher = Publisher::connect("http://127.0.0.1:8080/channels/news", PublishOptions::default())?;
//! let id = publisher.publish(&Payload::Text("hello".into()), Some("greeting"))?;
//! println!("published as {id}");
//! # Ok::<(), pushwire::client::Error>(())
//! ```
//!
//! Implements:
//! - **HTTP** (`http://` URLs): `POST /channels/NAME[?event=NAME]` with the message as the body,
//!   `Content-Type: text/plain; charset=utf-8` for text and `application/octet-stream` for
//!   binary (the server's text/binary rule), answered `201 {"id":"EPOCH:OFFSET"}`; one
//!   persistent connection (RFC 9112 §9.3) is reused while the server keeps it open.
//! - **WebSocket** (`ws://` URLs): a `pushwire.v1` connection to the channel; each message is
//!   a text or binary frame, which the server publishes. The protocol has no acknowledgement,
//!   so the publisher learns the id from its own subscription: the first message after the
//!   subscription's cursor with the same payload. Another client publishing the very same
//!   payload at the same moment can make that id the other one's.
//!
//! Does not: retry a failed publish (a POST is not idempotent: RFC 9110 §9.2.2; a request that
//! may have been applied is not sent again), name events over WebSocket (the server publishes
//! WebSocket messages without one: [`Error::InvalidOptions`]).

use std::time::{Duration, Instant};

use crate::hub::Cursor;
use crate::ws::{self, CloseCode, Event};

use super::http::{with_query, HttpConn, HttpOptions};
use super::subscribe::Timeouts;
use super::{Error, TlsOptions, Url, WsClient, WsOptions};
use crate::protocol::envelope::{parse_created, parse_envelope, Envelope, Payload, Received};
use crate::protocol::PROTOCOL_V1;

/// How to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishOptions {
    /// Sent as `Authorization: Bearer TOKEN` (RFC 6750 §2.1).
    pub token: Option<String>,
    /// Connect, read (the answer) and write deadlines.
    pub timeouts: Timeouts,
    /// Largest message, in bytes, accepted back on the WebSocket subscription. Default 16 MiB.
    pub max_message_bytes: usize,
    /// What `https://` and `wss://` connections trust. Default: Mozilla's roots only.
    pub tls: TlsOptions,
}

impl Default for PublishOptions {
    fn default() -> Self {
        PublishOptions {
            token: None,
            timeouts: Timeouts::default(),
            max_message_bytes: 16 * 1024 * 1024,
            tls: TlsOptions::default(),
        }
    }
}

#[derive(Debug)]
enum Inner {
    Http(Option<HttpConn>),
    Ws { ws: Box<WsClient>, cursor: Option<Cursor> },
}

/// Publishes messages to one channel; see the module docs.
#[derive(Debug)]
pub struct Publisher {
    url: Url,
    options: PublishOptions,
    inner: Inner,
}

/// True for `ws://` (and `wss://`) URLs.
pub fn is_websocket_url(url: &str) -> bool {
    url.split_once("://")
        .is_some_and(|(scheme, _)| scheme.eq_ignore_ascii_case("ws") || scheme.eq_ignore_ascii_case("wss"))
}

impl Publisher {
    /// Connects to the channel at `url`: over WebSocket for `ws://`, over HTTP for `http://`
    /// (and the same over TLS for `wss://` and `https://`). Next: [`Publisher::publish`].
    pub fn connect(url: &str, options: PublishOptions) -> Result<Publisher, Error> {
        let parsed = Url::parse(url)?;
        let http_options = HttpOptions {
            connect_timeout: options.timeouts.connect,
            read_timeout: options.timeouts.read,
            write_timeout: options.timeouts.write,
            max_body_bytes: 64 * 1024,
            tls: options.tls.clone(),
        };
        let inner = if is_websocket_url(url) {
            let bytes = (options.max_message_bytes.saturating_mul(4) / 3 + 4096) as u64;
            let ws_options = WsOptions {
                protocols: vec![PROTOCOL_V1.to_string()],
                headers: options
                    .token
                    .iter()
                    .map(|t| ("Authorization".to_string(), format!("Bearer {t}")))
                    .collect(),
                connect_timeout: options.timeouts.connect,
                read_timeout: Some(options.timeouts.read),
                write_timeout: Some(options.timeouts.write),
                close_timeout: Duration::from_secs(2),
                limits: ws::Limits { max_frame_payload_bytes: bytes, max_message_bytes: bytes },
                tls: options.tls.clone(),
                // permessage-deflate offered (WsOptions::default).
                ..WsOptions::default()
            };
            let target = with_query(&parsed.resource_name, &["mode", "since"], &[]);
            let mut ws = WsClient::connect(&parsed.websocket_url(&target), &ws_options)?;
            if ws.protocol() != Some(PROTOCOL_V1) {
                return Err(Error::NotPushwire("the WebSocket server did not select pushwire.v1".into()));
            }
            // The subscription opens with its cursor: messages after it are candidates for
            // the ids of what we publish.
            let deadline = Instant::now() + options.timeouts.read;
            let cursor = loop {
                match next_envelope(&mut ws, deadline)? {
                    Envelope::Open { next } | Envelope::Gap { next } => break Some(next),
                    Envelope::Message(Received { id, .. }) => break Some(id),
                    Envelope::Heartbeat | Envelope::Other => {}
                }
            };
            Inner::Ws { ws: Box::new(ws), cursor }
        } else {
            Inner::Http(Some(HttpConn::connect(&parsed, &http_options)?))
        };
        Ok(Publisher { url: parsed, options, inner })
    }

    /// Publishes one message and returns its id. Over HTTP `event` names the event
    /// (`?event=`); over WebSocket it must be `None`.
    ///
    /// Errors: [`Error::Http`] for a refusal (401/403 without the publish token, 413 too
    /// large, 400 for a bad event name); [`Error::ClosedByServer`] when the WebSocket server
    /// refuses publishing (1008); I/O errors and timeouts. Nothing is retried.
    pub fn publish(&mut self, payload: &Payload, event: Option<&str>) -> Result<Cursor, Error> {
        match &mut self.inner {
            Inner::Http(conn) => {
                let mut http = match conn.take().and_then(|mut http| http.is_reusable().then_some(http)) {
                    Some(http) => http,
                    None => {
                        let t = &self.options.timeouts;
                        let options = HttpOptions {
                            connect_timeout: t.connect,
                            read_timeout: t.read,
                            write_timeout: t.write,
                            max_body_bytes: 64 * 1024,
                            tls: self.options.tls.clone(),
                        };
                        HttpConn::connect(&self.url, &options)?
                    }
                };
                let add: Vec<(&str, String)> = event.map(|e| ("event", e.to_string())).into_iter().collect();
                let target = with_query(&self.url.resource_name, &["event"], &add);
                let (content_type, body) = match payload {
                    Payload::Text(text) => ("text/plain; charset=utf-8", text.as_bytes()),
                    Payload::Binary(bytes) => ("application/octet-stream", bytes.as_slice()),
                };
                let auth = self.options.token.as_ref().map(|t| format!("Bearer {t}"));
                let mut fields = vec![("Content-Type", content_type)];
                if let Some(auth) = &auth {
                    fields.push(("Authorization", auth));
                }
                let response = http.request("POST", &target, &fields, body)?;
                if response.head.status != 201 {
                    return Err(Error::Http {
                        status: response.head.status,
                        reason: response.body_summary(),
                    });
                }
                let id = parse_created(&response.body)?;
                *conn = Some(http);
                Ok(id)
            }
            Inner::Ws { ws, cursor } => {
                if event.is_some() {
                    return Err(Error::InvalidOptions(
                        "WebSocket messages are published without an event name; use an http:// URL".into(),
                    ));
                }
                let message = match payload {
                    Payload::Text(text) => ws::Message::Text(text.clone()),
                    Payload::Binary(bytes) => ws::Message::Binary(bytes.clone()),
                };
                ws.send(&message)?;
                let deadline = Instant::now() + self.options.timeouts.read;
                // Bounded by the deadline: each turn reads one envelope.
                loop {
                    match next_envelope(ws, deadline)? {
                        Envelope::Message(received) => {
                            let after = cursor.is_none_or(|c| {
                                c.epoch != received.id.epoch || received.id.offset > c.offset
                            });
                            if after {
                                *cursor = Some(received.id);
                                if received.payload == *payload {
                                    return Ok(received.id);
                                }
                            }
                        }
                        Envelope::Gap { next } | Envelope::Open { next } => *cursor = Some(next),
                        Envelope::Heartbeat | Envelope::Other => {}
                    }
                }
            }
        }
    }

    /// Ends the connection: the WebSocket closing handshake (1000), or closing TCP.
    pub fn close(self) -> Result<(), Error> {
        match self.inner {
            Inner::Http(conn) => {
                if let Some(mut http) = conn {
                    http.shutdown();
                }
                Ok(())
            }
            Inner::Ws { mut ws, .. } => ws.close(CloseCode::NORMAL, ""),
        }
    }
}

/// The next envelope on a `pushwire.v1` connection, before `deadline`.
fn next_envelope(ws: &mut WsClient, deadline: Instant) -> Result<Envelope, Error> {
    const WAITING_FOR: &str = "the server to deliver the published message";
    // Bounded by the deadline: each turn reads one event.
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Error::Timeout { waiting_for: WAITING_FOR });
        }
        ws.set_read_timeout(Some(left));
        match ws.recv()? {
            Event::Message(ws::Message::Text(text)) => return Ok(parse_envelope(text.as_bytes())?),
            Event::Message(ws::Message::Binary(_)) => {
                return Err(Error::InvalidMessage(
                    "a binary frame in pushwire.v1 (envelopes are text)".into(),
                ))
            }
            Event::Ping(_) | Event::Pong(_) => {}
            Event::Close(frame) => return Err(Error::ClosedByServer(frame)),
        }
    }
}
