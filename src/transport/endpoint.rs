//! The request/response endpoints: the routes answered with one complete response, at once
//! (the pages, `/healthz`, a preflight) or once the hub has answered (a publish, a short poll,
//! `/metrics`).
//!
//! Implements: for each such [`Route`], what to answer or which hub command to wait for
//! ([`handle`]), and the answer to the hub's reply ([`answer_reply`]). The connection
//! (`crate::conn`) writes the [`Answer`] with its framing, keep-alive and CORS fields.
//!
//! Does not: serve the push transports (each has its session, see [`super::session`]).

use std::borrow::Cow;
use std::sync::Arc;

use super::access::PREFLIGHT_FIELDS;
use super::route::Route;
use super::{api, pages, publish, rooms, short_poll};
use crate::config::Config;
use crate::hub::{ChannelName, Command, PresenceList, Reply};
use crate::metrics::Metrics;

/// A complete response to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// A response with its fields and body.
    Full {
        /// The status code.
        status: u16,
        /// Its fields (framing, keep-alive and CORS fields are the connection's).
        fields: Vec<(&'static str, &'static str)>,
        /// Its body.
        body: Cow<'static, [u8]>,
    },
    /// An error response: `{"error":REASON}` as JSON.
    Error {
        /// The status code.
        status: u16,
        /// A one-line explanation.
        reason: String,
    },
}

/// What an endpoint does with a request.
#[derive(Debug)]
pub enum Endpoint {
    /// Answer at once.
    Answer(Answer),
    /// Queue the command; its reply is answered with [`answer_reply`].
    Await(Command),
    /// A server API call: queue the commands; their replies, all in, are answered with
    /// [`answer_api`].
    AwaitApi(api::Submit),
}

/// The endpoint's move for `route` (`None`: a push transport's route, for a session). `text`
/// tells whether a publish's body is declared text, `body` is the request's content and
/// `cross_origin` whether the request came from an allowed foreign origin.
pub fn handle(
    route: &Route,
    text: bool,
    body: Vec<u8>,
    cross_origin: bool,
    config: &Config,
) -> Option<Endpoint> {
    let full =
        |content_type, body| Answer::Full { status: 200, fields: vec![("Content-Type", content_type)], body };
    Some(match route {
        Route::Index => Endpoint::Answer(full("text/html; charset=utf-8", Cow::Borrowed(pages::INDEX_HTML))),
        Route::ClientScript => {
            Endpoint::Answer(full("text/javascript; charset=utf-8", Cow::Borrowed(pages::PUSHWIRE_JS)))
        }
        Route::Healthz => Endpoint::Answer(full("text/plain", Cow::Borrowed(pages::HEALTHZ))),
        Route::Preflight => {
            let mut fields = vec![("Allow", "GET, HEAD, POST, OPTIONS")];
            if cross_origin {
                fields.extend_from_slice(PREFLIGHT_FIELDS);
            }
            Endpoint::Answer(Answer::Full { status: 204, fields, body: Cow::Borrowed(b"") })
        }
        Route::Metrics => Endpoint::Await(Command::Stats),
        Route::Readyz => Endpoint::Await(Command::Ready),
        Route::Publish { channel, event } => match publish::payload(text, body) {
            None => {
                Endpoint::Answer(Answer::Error { status: 400, reason: "a text body must be UTF-8".into() })
            }
            Some(payload) => Endpoint::Await(Command::Publish {
                channel: channel.clone(),
                event: event.as_deref().map(Arc::from),
                payload,
            }),
        },
        Route::ShortPoll { channel, since } => Endpoint::Await(Command::Read {
            channel: channel.clone(),
            since: *since,
            max_messages: config.transport.max_batch_messages,
        }),
        Route::Presence { channel } => {
            Endpoint::Await(Command::Presence { channel: channel.clone(), list: true })
        }
        Route::Api(call) => match api::handle(*call, &body, config) {
            Ok(submit) => Endpoint::AwaitApi(submit),
            Err(answer) => Endpoint::Answer(from_api(answer)),
        },
        Route::LongPoll { .. }
        | Route::Sse { .. }
        | Route::WebSocket { .. }
        | Route::Stream { .. }
        | Route::Channels { .. } => return None,
    })
}

/// `{"channel":"a","count":N,"members":[{"id":…,"user":…,"info":…}]}`.
fn presence_body(channel: &ChannelName, list: &PresenceList) -> Vec<u8> {
    let mut body = rooms::presence_reply(None, channel, list);
    body.push(b'\n');
    body
}

/// A server API answer as a response.
fn from_api(answer: api::ApiAnswer) -> Answer {
    match answer {
        api::ApiAnswer::Json(status, body) => Answer::Full {
            status,
            fields: vec![("Content-Type", "application/json"), ("Cache-Control", "no-store")],
            body: Cow::Owned(body),
        },
        api::ApiAnswer::Error(status, reason) => Answer::Error { status, reason },
    }
}

/// The answer to a server API call once the replies to all its commands are in (in order).
pub fn answer_api(pending: api::Pending, replies: Vec<Reply>, metrics: &Metrics) -> Answer {
    from_api(api::answer(pending, replies, metrics))
}

/// `/readyz` refused: 503 with the reason as plain text (`not ready: REASON`).
pub fn not_ready(reason: &str) -> Answer {
    Answer::Full {
        status: 503,
        fields: vec![("Content-Type", "text/plain"), ("Cache-Control", "no-store")],
        body: Cow::Owned(format!("not ready: {reason}\n").into_bytes()),
    }
}

/// The answer to the hub's reply to an endpoint's command.
pub fn answer_reply(reply: Reply, metrics: &Metrics) -> Answer {
    match reply {
        Reply::Published(Ok(id)) => Answer::Full {
            status: 201,
            fields: vec![("Content-Type", "application/json")],
            body: Cow::Owned(publish::created_body(id)),
        },
        Reply::Read(Ok(replay)) => {
            short_poll::count(&replay, metrics);
            Answer::Full {
                status: 200,
                fields: vec![("Content-Type", "application/json"), ("Cache-Control", "no-store")],
                body: Cow::Owned(short_poll::body(&replay)),
            }
        }
        Reply::Ready(Ok(())) => Answer::Full {
            status: 200,
            fields: vec![("Content-Type", "text/plain"), ("Cache-Control", "no-store")],
            body: Cow::Borrowed(b"ready\n"),
        },
        Reply::Ready(Err(e)) => not_ready(&e.to_string()),
        Reply::Stats(stats) => Answer::Full {
            status: 200,
            fields: vec![("Content-Type", "text/plain; version=0.0.4")],
            body: Cow::Owned(metrics.render(&stats).into_bytes()),
        },
        Reply::Published(Err(e)) | Reply::Read(Err(e)) | Reply::Subscribed { replay: Err(e), .. } => {
            Answer::Error { status: e.status_hint(), reason: e.to_string() }
        }
        Reply::Presence { channel, result: Ok(list) } => Answer::Full {
            status: 200,
            fields: vec![("Content-Type", "application/json"), ("Cache-Control", "no-store")],
            body: Cow::Owned(presence_body(&channel, &list)),
        },
        Reply::Presence { result: Err(e), .. } => {
            Answer::Error { status: e.status_hint(), reason: e.to_string() }
        }
        Reply::Subscribed { replay: Ok(_), .. } => {
            debug_assert!(false, "subscriptions belong to sessions");
            Answer::Error { status: 500, reason: "unexpected subscription".into() }
        }
        // Only server API calls ask these (answered by `answer_api`).
        Reply::Info { .. } | Reply::Channels(_) | Reply::Sent(_) => {
            Answer::Error { status: 500, reason: "unexpected server API reply".into() }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::ChannelName;

    #[test]
    fn pages_are_answered_at_once_and_hub_endpoints_wait_for_their_command() {
        let config = Config::default();
        let Some(Endpoint::Answer(Answer::Full { status: 200, body, .. })) =
            handle(&Route::Healthz, false, Vec::new(), false, &config)
        else {
            panic!("healthz is answered at once")
        };
        assert_eq!(&*body, b"ok\n");
        assert!(matches!(
            handle(&Route::Metrics, false, Vec::new(), false, &config),
            Some(Endpoint::Await(Command::Stats))
        ));
        let channel = ChannelName::parse("a").unwrap();
        let publish = Route::Publish { channel: channel.clone(), event: None };
        assert!(matches!(
            handle(&publish, true, b"hi".to_vec(), false, &config),
            Some(Endpoint::Await(Command::Publish { .. }))
        ));
        assert!(matches!(
            handle(&publish, true, vec![0xff], false, &config),
            Some(Endpoint::Answer(Answer::Error { status: 400, .. }))
        ));
        let sse = Route::Sse { channel, since: crate::hub::Since::Tail.into() };
        assert!(handle(&sse, false, Vec::new(), false, &config).is_none(), "sessions are not endpoints");
    }

    #[test]
    fn a_preflight_names_the_cors_fields_only_for_an_allowed_foreign_origin() {
        let config = Config::default();
        let fields = |cross| match handle(&Route::Preflight, false, Vec::new(), cross, &config) {
            Some(Endpoint::Answer(Answer::Full { status: 204, fields, .. })) => fields,
            other => panic!("{other:?}"),
        };
        assert_eq!(fields(false), [("Allow", "GET, HEAD, POST, OPTIONS")]);
        assert!(fields(true).len() > 1);
    }
}
