//! A channel's presence over HTTP: `GET /channels/NAME/presence`.
//!
//! ```no_run
//! use pushwire::client::{presence, PresenceOptions};
//!
//! let room = presence("http://127.0.0.1:8080", "lobby", &PresenceOptions::default())?;
//! println!("{} in {}", room.count, room.channel);
//! for member in &room.members {
//!     println!("{} {}", member.id, member.user.as_deref().unwrap_or("-"));
//! }
//! # Ok::<(), pushwire::client::Error>(())
//! ```
//!
//! Implements: the request (the server URL's path is replaced by the channel's presence path;
//! `Authorization: Bearer` when a token is given, which a `--channel-policy 'NAME=token'`
//! channel needs with `presence` granted), the answer bounded by
//! [`PresenceOptions::max_body_bytes`] and read with
//! [`crate::protocol::envelope::parse_presence`].
//!
//! Does not: follow join and leave events (a `pushwire.v1` subscription with `joins: true`
//! does), or retry.

use crate::hub::ChannelName;
use crate::protocol::envelope::parse_presence;
pub use crate::protocol::envelope::{Presence, PresenceMember};

use super::http::{HttpConn, HttpOptions};
use super::{Error, Timeouts, TlsOptions, Url};

/// How to ask for a channel's presence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceOptions {
    /// Sent as `Authorization: Bearer TOKEN` (RFC 6750 §2.1).
    pub token: Option<String>,
    /// Connect, read and write deadlines.
    pub timeouts: Timeouts,
    /// Largest answer read, in bytes; larger fails before it is read. Default 4 MiB (the
    /// server's default of 10,000 members per channel with small infos fits).
    pub max_body_bytes: u64,
    /// What an `https://` connection trusts. Default: Mozilla's roots only.
    pub tls: TlsOptions,
}

impl Default for PresenceOptions {
    fn default() -> Self {
        PresenceOptions {
            token: None,
            timeouts: Timeouts::default(),
            max_body_bytes: 4 * 1024 * 1024,
            tls: TlsOptions::default(),
        }
    }
}

/// The presence of `channel` on the server at `server_url` (`http://HOST:PORT`, `https://`,
/// or a `ws://` URL of the same server; any path is replaced).
///
/// Errors: [`Error::InvalidOptions`] for a name that is not a channel name; [`Error::Http`]
/// for a refusal (401 or 403 on a policy channel without a token granting `presence`);
/// [`Error::InvalidMessage`] when the answer is not a presence list; I/O errors and timeouts.
pub fn presence(server_url: &str, channel: &str, options: &PresenceOptions) -> Result<Presence, Error> {
    let channel = ChannelName::parse(channel)
        .map_err(|e| Error::InvalidOptions(format!("`{channel}` is not a channel name: {e}")))?;
    let url = Url::parse(server_url)?;
    let http_options = HttpOptions {
        connect_timeout: options.timeouts.connect,
        read_timeout: options.timeouts.read,
        write_timeout: options.timeouts.write,
        max_body_bytes: options.max_body_bytes,
        tls: options.tls.clone(),
    };
    let mut http = HttpConn::connect(&url, &http_options)?;
    let auth = options.token.as_ref().map(|t| format!("Bearer {t}"));
    let mut fields = vec![("Accept", "application/json"), ("Connection", "close")];
    if let Some(auth) = &auth {
        fields.push(("Authorization", auth));
    }
    let target = format!("/channels/{}/presence", channel.as_str());
    let response = http.request("GET", &target, &fields, b"")?;
    http.shutdown();
    if response.head.status != 200 {
        return Err(Error::Http { status: response.head.status, reason: response.body_summary() });
    }
    Ok(parse_presence(&response.body)?)
}
