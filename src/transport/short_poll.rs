//! Short polling: `GET /channels/{name}[?since=CURSOR]` answers at once.
//!
//! ```text
//! {"messages":[{"id":"EPOCH:OFFSET","data":"hi"}],"next":"EPOCH:OFFSET","gap":false}
//! ```
//!
//! Implements: the polling answer shared by short and long polling (RFC 6202 §2 describes the
//! long variant): the messages after `since` (at most the batch limit), the cursor to poll from
//! next, and the gap flag when the hub could not resume exactly.
//!
//! Without `since` the answer holds no old messages, only `next` (the current tail), so a new
//! client polls from now. Each message's JSON envelope is encoded once and shared.
//!
//! Does not: keep any state per client between polls: the cursor carries everything, so any
//! server can answer the next poll.

use crate::hub::{Encoding, Replay};
use crate::metrics::Metrics;

use crate::protocol::envelope::message_envelope;

/// The JSON body answering a poll.
pub fn body(replay: &Replay) -> Vec<u8> {
    let encoded: Vec<_> =
        replay.messages.iter().map(|m| m.encoded(Encoding::JsonEnvelope, message_envelope)).collect();
    let mut out = Vec::with_capacity(encoded.iter().map(|e| e.len() + 1).sum::<usize>() + 64);
    out.extend_from_slice(b"{\"messages\":[");
    for (i, e) in encoded.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(e);
    }
    out.extend_from_slice(b"],\"next\":\"");
    out.extend_from_slice(replay.next.to_string().as_bytes());
    out.extend_from_slice(if replay.gap { b"\",\"gap\":true}\n" } else { b"\",\"gap\":false}\n" });
    out
}

/// Counts what a poll answer (short or long) delivers: its messages, and its gap signal.
pub fn count(replay: &Replay, metrics: &Metrics) {
    metrics.messages_delivered.fetch_add(replay.messages.len() as u64, std::sync::atomic::Ordering::Relaxed);
    if replay.gap {
        Metrics::inc(&metrics.gaps_signalled);
    }
}
