//! The server's configuration: each layer's `Limits`, composed and validated once at startup.
//!
//! Every limit a peer can push against lives in one of these structs, with its unit, default
//! and what happens when it is exceeded; `pushwire serve --help` lists a flag for each.

use crate::http1::Limits as HttpLimits;
use crate::hub::Limits as HubLimits;
use crate::net::limits::Limits as NetLimits;
use crate::transport::access::Access;
use crate::transport::api::limits::ApiConfig;
use crate::transport::limits::{Limits as TransportLimits, WebSocketLimits};

/// Everything the server needs to know, shared read-only by every connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    /// HTTP/1.1 message limits and timeouts.
    pub http: HttpLimits,
    /// Transport limits (batches, event names, send buffers, heartbeats).
    pub transport: TransportLimits,
    /// WebSocket limits and heartbeat.
    pub websocket: WebSocketLimits,
    /// Origin policy and tokens.
    pub access: Access,
    /// Channel history bounds.
    pub hub: HubLimits,
    /// Event loop and socket limits.
    pub net: NetLimits,
    /// The server API: its key (off without one) and request bounds.
    pub api: ApiConfig,
}

impl Config {
    /// Checks every layer's limits; the message names the first problem found.
    pub fn validate(&self) -> Result<(), String> {
        self.http.validate()?;
        self.transport.validate()?;
        self.websocket.validate()?;
        self.hub.validate()?;
        self.access.validate()?;
        self.api.validate()?;
        self.net.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert_eq!(Config::default().validate(), Ok(()));
    }

    #[test]
    fn invalid_limits_are_refused_at_startup() {
        let mut config = Config::default();
        config.http.max_headers = 0;
        assert!(config.validate().is_err());
    }

    #[test]
    fn event_loop_counts_of_zero_are_refused_at_startup() {
        let refused = |change: fn(&mut Config)| {
            let mut config = Config::default();
            change(&mut config);
            config.validate().is_err()
        };
        assert!(refused(|c| c.net.flush_slice_connections = 0));
        assert!(refused(|c| c.net.threads = 0));
        assert!(refused(|c| c.net.max_connections = 0));
        assert!(refused(|c| c.net.max_connections_per_ip = 0));
    }
}
