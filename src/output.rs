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
//!
//! Memory: an emptied queue keeps its allocations (its box, the ring and its owned tail) so the
//! next bytes cost no allocation; a [`Cork`] takes them from a connection whose queue was written
//! out and lends them to the next connection that writes, so buffers are reused across
//! connections while an idle connection holds none: its [`Output`] is one null pointer.

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

/// [`Output::push_with`] grows the owned tail up to this size rather than start a new segment:
/// a turn's answers share one buffer, which a [`Cork`] then reuses (so it stops growing).
const TAIL_GROW_BYTES: usize = 128 * 1024;

/// Most buffers handed to one `write_vectored` call (the event loop's write, and the count at
/// which a full write waits, see `crate::fanout::write_before_delivery`).
pub const MAX_IO_SLICES: usize = 64;

/// Bytes queued for one connection, front first.
///
/// One pointer while it holds no buffers (every idle connection): the queue itself is boxed,
/// created by the first push or lent by a [`Cork`].
#[derive(Debug, Default)]
pub struct Output {
    queue: Option<Box<Queue>>,
}

/// The queue behind an [`Output`] that holds buffers.
#[derive(Debug, Default)]
struct Queue {
    segments: VecDeque<Segment>,
    /// How much of the front segment was already written.
    front_written: usize,
    /// Total unwritten bytes.
    len_bytes: usize,
}

impl Queue {
    /// Heap bytes of the box, its ring and its owned segments.
    fn allocated_bytes(&self) -> usize {
        let owned: usize = self
            .segments
            .iter()
            .map(|seg| match seg {
                Segment::Owned(v) => v.capacity(),
                Segment::Shared(_) => 0,
            })
            .sum();
        std::mem::size_of::<Queue>() + self.segments.capacity() * std::mem::size_of::<Segment>() + owned
    }
}

impl Output {
    /// An empty queue; allocates nothing until the first push.
    pub fn new() -> Self {
        Self::default()
    }

    fn queue(&mut self) -> &mut Queue {
        self.queue.get_or_insert_with(Box::default)
    }

    /// Unwritten bytes queued.
    pub fn len_bytes(&self) -> usize {
        self.queue.as_ref().map_or(0, |q| q.len_bytes)
    }

    /// More than half of `max_bytes` (the send bound) is queued: the point at which a
    /// catching-up feed stops reading pages and a fan-out writes before delivering more.
    pub fn is_past_half(&self, max_bytes: usize) -> bool {
        self.len_bytes() > max_bytes / 2
    }

    /// Segments queued (each an I/O slice of the next write).
    pub fn segment_count(&self) -> usize {
        self.queue.as_ref().map_or(0, |q| q.segments.len())
    }

    /// True when nothing waits to be written.
    pub fn is_empty(&self) -> bool {
        self.len_bytes() == 0
    }

    /// Appends a copy of `bytes` to the owned tail (see [`Output::push_with`]).
    pub fn push_bytes(&mut self, bytes: &[u8]) {
        if !bytes.is_empty() {
            self.push_with(bytes.len(), |tail| tail.extend_from_slice(bytes));
        }
    }

    /// Appends what `write` appends to the `Vec` it is given, with no intermediate buffer: the
    /// `Vec` is the owned tail segment when it is empty or stays within its capacity or
    /// `TAIL_GROW_BYTES` (128 KiB) with `reserve_bytes` more, else a new segment of that capacity.
    /// `write` must only append (what it appends is counted).
    pub fn push_with(&mut self, reserve_bytes: usize, write: impl FnOnce(&mut Vec<u8>)) {
        let q = self.queue();
        let fits = matches!(q.segments.back(), Some(Segment::Owned(tail))
            if tail.is_empty() || tail.len() + reserve_bytes <= tail.capacity().max(TAIL_GROW_BYTES));
        if !fits {
            q.segments.push_back(Segment::Owned(Vec::with_capacity(reserve_bytes)));
        }
        if let Some(Segment::Owned(tail)) = q.segments.back_mut() {
            // Appending never moves bytes already queued, so a partly written front stays valid.
            let before = tail.len();
            write(tail);
            q.len_bytes += tail.len().saturating_sub(before);
        }
    }

    /// Appends an owned buffer without copying it.
    pub fn push_owned(&mut self, bytes: Vec<u8>) {
        if bytes.is_empty() {
            return;
        }
        let q = self.queue();
        q.len_bytes += bytes.len();
        q.segments.push_back(Segment::Owned(bytes));
    }

    /// Appends bytes shared with other connections (no copy).
    pub fn push_shared(&mut self, bytes: Arc<[u8]>) {
        if bytes.is_empty() {
            return;
        }
        let q = self.queue();
        q.len_bytes += bytes.len();
        q.segments.push_back(Segment::Shared(bytes));
    }

    /// Fills `slices` with the unwritten bytes, front first; returns how many slices were set.
    pub fn io_slices<'a>(&'a self, slices: &mut [IoSlice<'a>]) -> usize {
        let Some(q) = &self.queue else { return 0 };
        let mut n = 0;
        for (i, seg) in q.segments.iter().enumerate() {
            if n == slices.len() {
                break;
            }
            let bytes = seg.bytes();
            let bytes = if i == 0 { &bytes[q.front_written..] } else { bytes };
            // An emptied tail kept for its capacity is no slice.
            if !bytes.is_empty() {
                slices[n] = IoSlice::new(bytes);
                n += 1;
            }
        }
        n
    }

    /// Marks the first `n` bytes as written. `n` larger than [`Output::len_bytes`] is a caller bug
    /// and is clamped.
    pub fn consume(&mut self, n: usize) {
        let Some(q) = &mut self.queue else { return };
        let mut n = n.min(q.len_bytes);
        q.len_bytes -= n;
        // When everything gets written, one emptied owned buffer stays for the next bytes (a
        // [`Cork`] takes it away from a connection that goes idle): the largest, so a turn that
        // grew its answers over several segments does not grow them again the next turn.
        let mut largest: Option<Vec<u8>> = None;
        loop {
            let last = q.segments.len() == 1;
            let Some(front) = q.segments.front() else {
                break;
            };
            let left = front.bytes().len() - q.front_written;
            if left > n {
                q.front_written += n;
                break;
            }
            n -= left;
            q.front_written = 0;
            if let Some(Segment::Owned(buffer)) = q.segments.pop_front() {
                if q.len_bytes == 0 && largest.as_ref().is_none_or(|l| buffer.capacity() > l.capacity()) {
                    largest = Some(buffer);
                }
            }
            if last {
                if let Some(mut buffer) = largest.take() {
                    buffer.clear();
                    q.segments.push_back(Segment::Owned(buffer));
                }
                break;
            }
        }
    }

    /// Heap bytes this queue owns (its box, ring and owned segments; shared segments belong to
    /// no one connection). Zero for a new queue and after [`Cork::reclaim`].
    pub fn allocated_bytes(&self) -> usize {
        self.queue.as_deref().map_or(0, Queue::allocated_bytes)
    }

    /// Copies all unwritten bytes out, front first (tests and the blocking clients use it).
    pub fn to_vec(&self) -> Vec<u8> {
        let Some(q) = &self.queue else { return Vec::new() };
        let mut v = Vec::with_capacity(q.len_bytes);
        for (i, seg) in q.segments.iter().enumerate() {
            let bytes = seg.bytes();
            v.extend_from_slice(if i == 0 { &bytes[q.front_written..] } else { bytes });
        }
        v
    }

    /// Takes all unwritten bytes out, leaving the queue empty.
    pub fn take_vec(&mut self) -> Vec<u8> {
        let v = self.to_vec();
        self.consume(self.len_bytes());
        v
    }
}

/// A spare output queue larger than this is freed rather than kept by a [`Cork`] (one huge
/// message must not pin its buffer in the loop for good).
const MAX_SPARE_BYTES: usize = 256 * 1024;

/// A [`Cork`] keeps spare queues up to this many bytes in all (one event loop's): enough for a
/// fan-out to tens of thousands of subscribers (a queue that carried only shared segments is
/// about 200 bytes) to reuse the queues of the previous one. The queues existed at once during
/// that fan-out, so keeping them raises no peak; it only keeps the memory from going back.
const MAX_CORK_BYTES: usize = 8 * 1024 * 1024;

/// One event loop's spare output buffers, lent to the connections being served ("corking", as
/// uWebSockets calls it): responses are encoded straight into buffers that were allocated once
/// for the loop, not once per connection or per message.
///
/// Implements: [`Cork::lend`] before a connection is given input or a delivery,
/// [`Cork::reclaim`] after its output was written. A connection whose socket took everything
/// gives the buffers back, so an idle connection holds none; one left with unwritten bytes keeps
/// them (they are its queue). The cork keeps a stack of spare queues (bounded by
/// `MAX_CORK_BYTES` (8 MiB)): a fan-out queues a delivery on many connections before writing any, and
/// each takes a spare, so a steady fan-out allocates no queue per subscriber.
///
/// Does not: copy bytes. The buffers change owner by moving one box.
#[derive(Debug, Default)]
pub struct Cork {
    // The boxes are what is kept: each is handed out whole to a connection (one pointer there).
    #[allow(clippy::vec_box)]
    spares: Vec<Box<Queue>>,
    /// Heap bytes of the queues in `spares`.
    spare_bytes: usize,
}

impl Cork {
    /// A cork with no spare buffers yet (the first connections served allocate them).
    pub fn new() -> Self {
        Self::default()
    }

    /// Gives `out` a spare queue when it holds none. Next: let the connection write, write
    /// `out` to the socket, then [`Cork::reclaim`].
    pub fn lend(&mut self, out: &mut Output) {
        if out.queue.is_none() {
            out.queue = self.spares.pop();
            if let Some(queue) = &out.queue {
                self.spare_bytes -= queue.allocated_bytes();
            }
        }
    }

    /// Takes the buffers of an `out` that was written out, leaving it holding none; they become
    /// a spare unless they are over `MAX_SPARE_BYTES` (256 KiB) or the spares would pass
    /// `MAX_CORK_BYTES` (then they are freed). An `out` with bytes left keeps everything.
    pub fn reclaim(&mut self, out: &mut Output) {
        if !out.is_empty() {
            return;
        }
        let Some(queue) = out.queue.take() else { return };
        let bytes = queue.allocated_bytes();
        if bytes <= MAX_SPARE_BYTES && self.spare_bytes + bytes <= MAX_CORK_BYTES {
            self.spare_bytes += bytes;
            self.spares.push(queue);
        }
    }

    /// Heap bytes of the spare buffers.
    pub fn allocated_bytes(&self) -> usize {
        self.spare_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segments(out: &Output) -> usize {
        out.queue.as_ref().map_or(0, |q| q.segments.len())
    }

    fn written(out: &Output) -> Vec<u8> {
        let mut slices = [IoSlice::new(&[]); 8];
        let n = out.io_slices(&mut slices);
        slices[..n].iter().flat_map(|s| s.iter().copied()).collect()
    }

    #[test]
    fn push_with_appends_to_the_owned_tail_and_counts_it() {
        let mut out = Output::new();
        out.push_bytes(b"head ");
        out.push_with(4, |v| v.extend_from_slice(b"body"));
        assert_eq!(out.len_bytes(), 9);
        assert_eq!(segments(&out), 1);
        out.push_shared(Arc::from(&b" shared"[..]));
        out.push_with(5, |v| v.extend_from_slice(b" tail"));
        assert_eq!(segments(&out), 3);
        // The tail grows to a bound, then a new segment starts.
        out.push_with(TAIL_GROW_BYTES - 10, |v| v.resize(v.len() + TAIL_GROW_BYTES - 10, b'.'));
        assert_eq!(segments(&out), 3);
        out.push_with(10, |v| v.extend_from_slice(b"0123456789"));
        assert_eq!(segments(&out), 4);
        assert_eq!(out.len_bytes(), 21 + TAIL_GROW_BYTES);
        let all = out.to_vec();
        assert!(all.starts_with(b"head body shared tail..") && all.ends_with(b".0123456789"));
        assert!(written(&out) == all);
    }

    #[test]
    fn a_written_out_queue_keeps_its_largest_buffer() {
        let mut out = Output::new();
        out.push_with(TAIL_GROW_BYTES, |v| v.resize(TAIL_GROW_BYTES, 1));
        out.push_with(16, |v| v.extend_from_slice(&[2; 16])); // the tail is full: a new segment
        assert_eq!(out.segment_count(), 2);
        out.consume(TAIL_GROW_BYTES + 16); // one write took everything
        assert!(out.is_empty());
        assert_eq!(out.segment_count(), 1);
        assert!(out.allocated_bytes() >= TAIL_GROW_BYTES, "the large buffer is the one kept");
        // The next turn's answers go into it, however many fit.
        out.push_with(1024, |v| v.extend_from_slice(&[3; 1024]));
        out.push_with(1024, |v| v.extend_from_slice(&[4; 1024]));
        assert_eq!(out.segment_count(), 1);
        assert_eq!(out.len_bytes(), 2048);
    }

    #[test]
    fn a_written_out_queue_keeps_its_buffers_without_bytes() {
        let mut out = Output::new();
        out.push_with(32, |v| v.extend_from_slice(&[7; 32]));
        out.consume(10);
        assert_eq!(written(&out), vec![7; 22]);
        out.consume(22);
        assert!(out.is_empty());
        assert!(out.allocated_bytes() > 0);
        // The emptied tail yields no slice, and takes the next bytes without a new segment.
        assert_eq!(out.io_slices(&mut [IoSlice::new(&[]); 4]), 0);
        out.push_with(8, |v| v.extend_from_slice(b"next one"));
        assert_eq!(segments(&out), 1);
        assert_eq!(out.take_vec(), b"next one");
    }

    #[test]
    fn consume_across_segments_and_empty_ones() {
        let mut out = Output::new();
        out.push_shared(Arc::from(&b"ab"[..]));
        out.push_with(0, |_| {}); // an empty owned segment
        out.push_shared(Arc::from(&b"cd"[..]));
        out.push_bytes(b"ef");
        assert_eq!(written(&out), b"abcdef");
        out.consume(3);
        assert_eq!(written(&out), b"def");
        out.consume(100);
        assert!(out.is_empty());
        assert_eq!(written(&out), b"");
    }

    #[test]
    fn cork_lends_to_one_connection_and_reclaims_when_written_out() {
        let mut cork = Cork::new();
        let mut a = Output::new();
        cork.lend(&mut a);
        a.push_with(32, |v| v.extend_from_slice(&[1; 32]));
        a.consume(32);
        cork.reclaim(&mut a);
        // Idle connection holds no buffer; the loop's spare does.
        assert_eq!(a.allocated_bytes(), 0);
        let spare = cork.allocated_bytes();
        assert!(spare > 0);
        // The next connection writes into the same buffers: no allocation.
        let mut b = Output::new();
        cork.lend(&mut b);
        assert_eq!(b.allocated_bytes(), spare);
        assert_eq!(cork.allocated_bytes(), 0);
        b.push_with(32, |v| v.extend_from_slice(&[2; 32]));
        assert_eq!(b.allocated_bytes(), spare);
        b.consume(32);
        cork.reclaim(&mut b);
        assert_eq!((b.allocated_bytes(), cork.allocated_bytes()), (0, spare));
    }

    #[test]
    fn cork_remainder_after_a_partial_write_stays_with_its_connection() {
        let mut cork = Cork::new();
        let mut warm = Output::new();
        warm.push_bytes(b"x");
        warm.consume(1);
        cork.reclaim(&mut warm);
        let mut a = Output::new();
        cork.lend(&mut a);
        a.push_with(100, |v| v.extend((0..100).map(|i| i as u8)));
        // The socket took 60 bytes: the other 40 stay queued, in order, with the connection.
        a.consume(60);
        cork.reclaim(&mut a);
        assert_eq!(a.to_vec(), (60..100).map(|i| i as u8).collect::<Vec<_>>());
        assert_eq!(cork.allocated_bytes(), 0);
        // Meanwhile another connection gets fresh buffers, and gives them back.
        let mut b = Output::new();
        cork.lend(&mut b);
        b.push_bytes(b"pong");
        assert_eq!(b.take_vec(), b"pong");
        cork.reclaim(&mut b);
        assert_eq!(b.allocated_bytes(), 0);
        // A connection with bytes queued is lent nothing; once drained, its buffers go back.
        let before = a.allocated_bytes();
        cork.lend(&mut a);
        assert_eq!(a.allocated_bytes(), before);
        a.push_bytes(b"more");
        assert_eq!(a.len_bytes(), 44);
        a.consume(44);
        cork.reclaim(&mut a);
        assert_eq!(a.allocated_bytes(), 0);
    }

    #[test]
    fn cork_lends_a_spare_to_each_of_many_connections_and_takes_them_all_back() {
        // A fan-out queues on many connections before writing any: each takes a spare.
        let mut cork = Cork::new();
        let mut outs: Vec<Output> = (0..100).map(|_| Output::new()).collect();
        let message: Arc<[u8]> = Arc::from(&b"fanned out"[..]);
        for round in 0..2 {
            for out in &mut outs {
                cork.lend(out);
                out.push_shared(message.clone());
            }
            for out in &mut outs {
                out.consume(out.len_bytes());
                cork.reclaim(out);
                assert_eq!(out.allocated_bytes(), 0);
            }
            if round == 0 {
                assert!(cork.allocated_bytes() >= 100 * std::mem::size_of::<Queue>());
            }
        }
        let kept = cork.allocated_bytes();
        let mut lent = 0;
        for out in &mut outs {
            cork.lend(out);
            lent += out.allocated_bytes();
        }
        assert_eq!((lent, cork.allocated_bytes()), (kept, 0), "every queue was a spare");
    }

    #[test]
    fn cork_frees_a_spare_over_the_bound() {
        let mut cork = Cork::new();
        let mut a = Output::new();
        a.push_with(MAX_SPARE_BYTES + 1, |v| v.resize(MAX_SPARE_BYTES + 1, 0));
        a.consume(MAX_SPARE_BYTES + 1);
        cork.reclaim(&mut a);
        assert_eq!((a.allocated_bytes(), cork.allocated_bytes()), (0, 0));
    }
}
