//! The in-memory hub backend: one [`Hub`] behind a mutex, shared by every event loop of this
//! process.
//!
//! Implements: [`HubBackend`] by applying each command at once under the lock
//! ([`Submitted::Reply`] or [`Submitted::NoReply`], never `Later`), and handing a published
//! message to the inbox of every loop with subscribers for its channel while still holding the
//! lock, so every loop receives a channel's messages in offset order. A loop's own inbox gets
//! its deliveries without a wake (it drains its inbox at the end of the turn); the others are
//! woken once per batch.
//!
//! Does not: share channels with other processes (a Redis-backed backend does that).

use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::Inbox;
use crate::hub::backend::{ConnAddr, HubBackend, LoopEvent, Submitted};
use crate::hub::{Command, Hub};

/// The hub of a single-node server.
#[derive(Debug)]
pub struct LocalHub {
    hub: Mutex<Hub>,
    /// Every loop's inbox, indexed by its sink.
    inboxes: Arc<[Inbox]>,
}

impl LocalHub {
    /// Serves `hub` to the loops whose inboxes are `inboxes`.
    pub fn new(hub: Hub, inboxes: Arc<[Inbox]>) -> Self {
        LocalHub { hub: Mutex::new(hub), inboxes }
    }
}

impl HubBackend for LocalHub {
    fn submit(&self, from: ConnAddr, command: Command, now: Instant) -> Submitted {
        if let Command::Disconnect(disconnect) = command {
            return super::send_disconnect(&self.inboxes, from, disconnect);
        }
        let mut hub = self.hub.lock().unwrap_or_else(|e| e.into_inner());
        let applied = command.apply(&mut hub, from, now);
        if let Some(event) = applied.presence.filter(|e| !e.notify.is_empty()) {
            // Under the lock too, so a join or leave reaches each loop in order with the
            // channel's messages; one event per loop that has a connection to tell.
            let event = Arc::new(event);
            let mut sinks: Vec<_> = event.notify.iter().map(|c| c.sink).collect();
            sinks.sort_unstable_by_key(|s| s.index());
            sinks.dedup();
            for target in sinks {
                self.inboxes[target.index() as usize]
                    .push(LoopEvent::Presence(event.clone()), target != from.sink);
            }
        }
        if let Some(published) = applied.published {
            // Still under the hub's lock: offsets reach every loop's inbox (the publisher's
            // too) in the order the hub assigned them, so each loop sees a channel in order.
            for target in published.sinks.iter() {
                let event = LoopEvent::Delivery(published.message.clone());
                self.inboxes[target.index() as usize].push(event, target != from.sink);
            }
        }
        drop(hub);
        match applied.reply {
            Some(reply) => Submitted::Reply(reply),
            None => Submitted::NoReply,
        }
    }

    fn expire(&self, now: Instant) {
        self.hub.lock().unwrap_or_else(|e| e.into_inner()).expire(now);
    }
}
