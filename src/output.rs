//! A connection's queue of bytes waiting to be written to its socket.
//!
//! Implements: a bounded write queue of byte segments. A message fanned out to many subscribers
//! is encoded once into an `Arc<[u8]>` and pushed here as a shared segment, so fan-out costs a
//! reference count per subscriber, not a copy. Small writes (response heads, control frames) are
//! appended to an owned tail segment.
//!
//! Does not: touch a socket. The event loop asks for [`Output::io_slices`], writes them with
//! `write_vectored`, and reports how much went out with [`Output::consume`].
//!
//! The bound is a policy of the caller: [`Output::len_bytes`] tells how much is queued and the
//! transport decides (before pushing a data message) whether the peer is a slow consumer.
//! Control frames and response heads are always accepted, so they are never the thing dropped.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::sync::Arc;

/// One run of bytes in the queue.
#[derive(Debug)]
enum Segment {
    /// Bytes only this connection writes (heads, control frames, per-connection responses).
    Owned(Vec<u8>),
    /// Bytes shared with other connections (one encoded message fanned out).
    Shared(Arc<[u8]>),
}

impl Segment {
    fn bytes(&self) -> &[u8] {
        match self {
            Segment::Owned(v) => v,
            Segment::Shared(a) => a,
        }
    }
}

/// Owned segments smaller than this are appended to rather than started anew.
const COALESCE_BYTES: usize = 4096;

/// Bytes queued for one connection, front first.
#[derive(Debug, Default)]
pub struct Output {
    segments: VecDeque<Segment>,
    /// How much of the front segment was already written.
    front_written: usize,
    /// Total unwritten bytes.
    len_bytes: usize,
}

impl Output {
    /// An empty queue; allocates nothing until the first push.
    pub fn new() -> Self {
        Self::default()
    }

    /// Unwritten bytes queued.
    pub fn len_bytes(&self) -> usize {
        self.len_bytes
    }

    /// True when nothing waits to be written.
    pub fn is_empty(&self) -> bool {
        self.len_bytes == 0
    }

    /// Appends a copy of `bytes` (coalesced with a small owned tail segment).
    pub fn push_bytes(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        self.len_bytes += bytes.len();
        if let Some(Segment::Owned(tail)) = self.segments.back_mut() {
            // Appending never moves bytes already queued, so a partly written front stays valid.
            if tail.len() + bytes.len() <= COALESCE_BYTES {
                tail.extend_from_slice(bytes);
                return;
            }
        }
        self.segments.push_back(Segment::Owned(bytes.to_vec()));
    }

    /// Appends an owned buffer without copying it.
    pub fn push_owned(&mut self, bytes: Vec<u8>) {
        if bytes.is_empty() {
            return;
        }
        self.len_bytes += bytes.len();
        self.segments.push_back(Segment::Owned(bytes));
    }

    /// Appends bytes shared with other connections (no copy).
    pub fn push_shared(&mut self, bytes: Arc<[u8]>) {
        if bytes.is_empty() {
            return;
        }
        self.len_bytes += bytes.len();
        self.segments.push_back(Segment::Shared(bytes));
    }

    /// Fills `slices` with the unwritten bytes, front first; returns how many slices were set.
    pub fn io_slices<'a>(&'a self, slices: &mut [IoSlice<'a>]) -> usize {
        let mut n = 0;
        for (i, seg) in self.segments.iter().enumerate() {
            if n == slices.len() {
                break;
            }
            let bytes = seg.bytes();
            let bytes = if i == 0 { &bytes[self.front_written..] } else { bytes };
            slices[n] = IoSlice::new(bytes);
            n += 1;
        }
        n
    }

    /// Marks the first `n` bytes as written. `n` larger than [`Output::len_bytes`] is a caller bug
    /// and is clamped.
    pub fn consume(&mut self, mut n: usize) {
        n = n.min(self.len_bytes);
        self.len_bytes -= n;
        while n > 0 {
            let Some(front) = self.segments.front() else {
                break;
            };
            let left = front.bytes().len() - self.front_written;
            if n >= left {
                n -= left;
                self.segments.pop_front();
                self.front_written = 0;
            } else {
                self.front_written += n;
                n = 0;
            }
        }
        if self.segments.is_empty() {
            // Release the ring's allocation so an idle connection holds no buffer.
            self.segments = VecDeque::new();
        }
    }

    /// Copies all unwritten bytes out, front first (tests and the blocking clients use it).
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.len_bytes);
        for (i, seg) in self.segments.iter().enumerate() {
            let bytes = seg.bytes();
            v.extend_from_slice(if i == 0 { &bytes[self.front_written..] } else { bytes });
        }
        v
    }

    /// Takes all unwritten bytes out, leaving the queue empty.
    pub fn take_vec(&mut self) -> Vec<u8> {
        let v = self.to_vec();
        self.consume(self.len_bytes);
        v
    }
}
