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
        let mut hub = self.hub.lock().unwrap_or_else(|e| e.into_inner());
        let applied = command.apply(&mut hub, from.sink, now);
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
