//! A connection's byte stream as the event loop sees it: what it reads from and writes to, and
//! what it waits for.
//!
//! Implements: [`ConnStream`], one variant per way of carrying HTTP/1.1 bytes. Today the only
//! one is plain TCP. The loop calls nothing but [`ConnStream::read`],
//! [`ConnStream::write_vectored`], [`ConnStream::flush_records`], [`ConnStream::shutdown_write`]
//! and [`interest`], so a TLS variant (`Tls { tcp, tls: Box<super::tls::TlsStream> }`, rustls'
//! `ServerConnection` over the socket) slots in here without touching `Conn` or the protocol
//! code: its `read` pulls records (`read_tls`, `process_new_packets`) and hands out plaintext
//! ([`super::tls::TlsStream::read`]); its `write_vectored` takes plaintext into the session and
//! its `flush_records` pushes records out (`write_tls`, [`super::tls::TlsStream::flush_tls`]);
//! its `wants_write` says records are waiting (a handshake answer, a close_notify) even when
//! the connection has nothing to write, and [`interest`] then asks for writability; its
//! `shutdown_write` sends close_notify before the FIN.
//!
//! Does not: buffer plaintext of its own (the connection's `Output` is the only write queue),
//! or decide anything about the protocol.

use std::io::{self, IoSlice, Read, Write};
use std::net::Shutdown;

use mio::event::Source;
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};

/// The byte stream under one connection.
#[derive(Debug)]
pub enum ConnStream {
    /// Plain TCP: bytes are read and written as they are.
    Plain(TcpStream),
}

impl ConnStream {
    /// Reads bytes for the connection into `buf`; `Ok(0)` is the end of the stream.
    /// `WouldBlock` means nothing more for now (readiness will be reported again).
    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            ConnStream::Plain(tcp) => tcp.read(buf),
        }
    }

    /// Writes the connection's bytes from `slices`; returns how many it took.
    pub fn write_vectored(&mut self, slices: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            ConnStream::Plain(tcp) => tcp.write_vectored(slices),
        }
    }

    /// Writes bytes the stream itself holds (records of a secure stream); plain TCP holds
    /// none. Call before and after writing the connection's output.
    pub fn flush_records(&mut self) -> io::Result<()> {
        match self {
            ConnStream::Plain(_) => Ok(()),
        }
    }

    /// The stream holds bytes of its own to write (see [`ConnStream::flush_records`]).
    pub fn wants_write(&self) -> bool {
        match self {
            ConnStream::Plain(_) => false,
        }
    }

    /// Ends the write side once the connection's last byte is written (TCP FIN).
    pub fn shutdown_write(&mut self) {
        match self {
            ConnStream::Plain(tcp) => {
                let _ = tcp.shutdown(Shutdown::Write);
            }
        }
    }

    /// The TCP socket underneath, for socket options.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            ConnStream::Plain(tcp) => tcp,
        }
    }
}

impl Source for ConnStream {
    fn register(&mut self, registry: &Registry, token: Token, interests: Interest) -> io::Result<()> {
        match self {
            ConnStream::Plain(tcp) => tcp.register(registry, token, interests),
        }
    }

    fn reregister(&mut self, registry: &Registry, token: Token, interests: Interest) -> io::Result<()> {
        match self {
            ConnStream::Plain(tcp) => tcp.reregister(registry, token, interests),
        }
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        match self {
            ConnStream::Plain(tcp) => tcp.deregister(registry),
        }
    }
}

/// The readiness to wait for, derived in this one place from what the connection wants
/// (`conn_has_output`: unwritten output) and what the stream wants (its own bytes to write):
/// always readable (a peer's EOF or RST must be seen even while reading is paused), writable
/// only while something waits to be written, so an idle connection is not woken for nothing.
pub fn interest(conn_has_output: bool, stream: &ConnStream) -> Interest {
    if conn_has_output || stream.wants_write() {
        Interest::READABLE | Interest::WRITABLE
    } else {
        Interest::READABLE
    }
}
