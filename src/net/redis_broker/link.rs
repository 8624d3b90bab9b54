//! One non-blocking connection to Redis: a mio `TcpStream`, the bytes waiting to be written,
//! and the RESP decoder of what comes back.
//!
//! Implements: a non-blocking connect (completion seen on the first writable event), writes
//! drained to `WouldBlock`, reads bounded per call by a byte budget (the caller comes back for
//! the rest), and replies decoded with [`crate::redis::resp::Decoder`] (bounded by its
//! [`Limits`]).
//!
//! Does not: know what the commands mean or match replies to them (see the broker).

use std::io::{self, Read, Write};
use std::net::SocketAddr;

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};

use crate::redis::resp::{Command, Decoded, Decoder, Limits, Value};

/// What a read found.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum ReadOutcome {
    /// Drained to `WouldBlock`.
    Drained,
    /// The budget ran out first: read again without waiting for readiness.
    BudgetSpent,
}

/// One connection to Redis.
#[derive(Debug)]
pub(super) struct Link {
    stream: TcpStream,
    /// Encoded commands not yet written, from `out_sent` on.
    out: Vec<u8>,
    out_sent: usize,
    decoder: Decoder,
    connected: bool,
}

impl Link {
    /// Starts connecting to `addr` and registers the socket for reads and writes.
    pub(super) fn open(
        addr: SocketAddr,
        registry: &Registry,
        token: Token,
        limits: Limits,
    ) -> io::Result<Link> {
        let mut stream = TcpStream::connect(addr)?;
        registry.register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)?;
        Ok(Link { stream, out: Vec::new(), out_sent: 0, decoder: Decoder::new(limits), connected: false })
    }

    /// Deregisters the socket (it closes when dropped).
    pub(super) fn close(mut self, registry: &Registry) {
        let _ = registry.deregister(&mut self.stream);
    }

    /// Queues a command (written by the next [`Link::flush`]).
    pub(super) fn queue(&mut self, command: &Command) {
        command.encode(&mut self.out);
    }

    /// Bytes queued and not yet written.
    pub(super) fn unsent_bytes(&self) -> usize {
        self.out.len() - self.out_sent
    }

    /// Checks whether a pending connect finished (call on readiness); an error if it failed.
    pub(super) fn check_connected(&mut self) -> io::Result<bool> {
        if self.connected {
            return Ok(true);
        }
        if let Some(error) = self.stream.take_error()? {
            return Err(error);
        }
        match self.stream.peer_addr() {
            Ok(_) => {
                self.connected = true;
                self.stream.set_nodelay(true)?;
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Writes queued bytes until done or `WouldBlock`.
    pub(super) fn flush(&mut self) -> io::Result<()> {
        if !self.connected {
            return Ok(());
        }
        while self.out_sent < self.out.len() {
            match self.stream.write(&self.out[self.out_sent..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.out_sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.out_sent == self.out.len() {
            self.out.clear();
            self.out_sent = 0;
        } else if self.out_sent > (1 << 20) {
            self.out.drain(..self.out_sent);
            self.out_sent = 0;
        }
        Ok(())
    }

    /// Reads at most `budget_bytes` (through `buf`) and appends every complete reply to
    /// `values`. EOF and codec errors are errors: the connection is then unusable.
    pub(super) fn read(
        &mut self,
        buf: &mut [u8],
        budget_bytes: usize,
        values: &mut Vec<Value>,
    ) -> io::Result<ReadOutcome> {
        if !self.connected {
            return Ok(ReadOutcome::Drained);
        }
        let mut read = 0;
        while read < budget_bytes {
            let n = match self.stream.read(buf) {
                Ok(0) => {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "redis closed the connection"))
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(ReadOutcome::Drained),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            read += n;
            let mut input = &buf[..n];
            while !input.is_empty() {
                let Decoded { consumed, value } =
                    self.decoder.decode(input).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                input = &input[consumed..];
                match value {
                    Some(value) => values.push(value),
                    None => break,
                }
            }
        }
        Ok(ReadOutcome::BudgetSpent)
    }
}
