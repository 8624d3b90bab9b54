//! A connection's byte stream as the event loop sees it: what it reads from and writes to, and
//! what it waits for.
//!
//! Implements: [`ConnStream`], one variant per way of carrying HTTP/1.1 bytes: plain TCP, and
//! TLS over TCP (issue #15). Besides registering it with mio, the loop calls nothing but
//! [`ConnStream::read`], [`ConnStream::short_read_drains`], [`ConnStream::write_vectored`],
//! [`ConnStream::flush_records`], [`ConnStream::shutdown_write`],
//! [`ConnStream::handshake_deadline`], [`ConnStream::take_handshake_finished`],
//! [`ConnStream::tcp`] and [`interest`], so the TLS variant (`Tls(Box<TlsConn>)`, rustls'
//! `UnbufferedServerConnection` over the socket) lives here without touching `Conn` or the
//! protocol code: its `read` reads records into the loop's buffer, hands them to rustls and
//! hands out plaintext ([`super::tls::TlsStream::read`]); its `write_vectored` seals plaintext
//! into records and writes them, and its `flush_records` writes the records the socket did not
//! take yet ([`super::tls::TlsStream::flush_tls`]);
//! its `wants_write` says records are waiting (a handshake answer, a close_notify) even when
//! the connection has nothing to write, and [`interest`] then asks for writability; its
//! `shutdown_write` sends close_notify before the FIN. A TLS stream also carries its
//! handshake deadline until the handshake completes.
//!
//! Does not: buffer plaintext of its own (the connection's `Output` is the only write queue),
//! or decide anything about the protocol.

use std::io::{self, IoSlice, Read};
use std::net::Shutdown;

use mio::event::Source;
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use std::time::Instant;

use super::tls::TlsStream;

/// Writes `slices` to a TCP socket with `sendmsg(2)` rather than `writev(2)` (what
/// `Write::write_vectored` calls): the socket call goes straight to the socket, past the file
/// layer a `writev` crosses first (its file position lock, `rw_verify_area`, fsnotify). At
/// one small write per delivery that layer was about a tenth of the server's CPU (5,000
/// WebSocket subscribers at 5 messages/s: 142-154 against 163-177 CPU ticks in four A/B
/// pairs, README "Across nodes (Redis)").
pub fn send_vectored(tcp: &TcpStream, slices: &[IoSlice<'_>]) -> io::Result<usize> {
    socket2::SockRef::from(tcp).send_vectored(slices)
}

/// Reads from a TCP socket with `recv(2)` rather than `read(2)`, for the same reason as
/// [`send_vectored`].
pub fn recv(tcp: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    let socket = socket2::SockRef::from(tcp);
    (&*socket).read(buf)
}

/// The byte stream under one connection.
#[derive(Debug)]
pub enum ConnStream {
    /// Plain TCP: bytes are read and written as they are.
    Plain(TcpStream),
    /// TLS over TCP (boxed: rustls' session is large, and a plain stream stays small).
    Tls(Box<TlsConn>),
}

/// A TLS connection's socket, session, and what the loop tracks of its handshake.
#[derive(Debug)]
pub struct TlsConn {
    tcp: TcpStream,
    session: TlsStream,
    /// Until the handshake completes: when it must be done by.
    handshake_deadline: Option<Instant>,
    /// `close_notify` was queued.
    close_notify_sent: bool,
}

impl TlsConn {
    /// `session` over `tcp`, whose handshake must be done by `deadline`.
    pub fn new(tcp: TcpStream, session: TlsStream, deadline: Instant) -> TlsConn {
        TlsConn { tcp, session, handshake_deadline: Some(deadline), close_notify_sent: false }
    }
}

impl ConnStream {
    /// Reads bytes for the connection into `buf`; `Ok(0)` is the end of the stream.
    /// `WouldBlock` means nothing more for now (readiness will be reported again).
    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            ConnStream::Plain(tcp) => recv(tcp, buf),
            ConnStream::Tls(tls) => tls.session.read(&mut tls.tcp, buf),
        }
    }

    /// Whether a read that returned fewer bytes than asked for emptied the socket: true for
    /// plain TCP (`recv` copies until the receive queue is empty or the buffer full), false
    /// for TLS (the session may hold records back).
    pub fn short_read_drains(&self) -> bool {
        matches!(self, ConnStream::Plain(_))
    }

    /// Writes the connection's bytes from `slices`; returns how many it took.
    pub fn write_vectored(&mut self, slices: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            ConnStream::Plain(tcp) => send_vectored(tcp, slices),
            ConnStream::Tls(tls) => tls.session.write_vectored(&mut tls.tcp, slices),
        }
    }

    /// Writes bytes the stream itself holds (records of a secure stream); plain TCP holds
    /// none. Call before and after writing the connection's output.
    pub fn flush_records(&mut self) -> io::Result<()> {
        match self {
            ConnStream::Plain(_) => Ok(()),
            // What the socket does not take now waits for writability (see `wants_write`).
            ConnStream::Tls(tls) => match tls.session.flush_tls(&mut tls.tcp) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
                other => other,
            },
        }
    }

    /// The stream holds bytes of its own to write (see [`ConnStream::flush_records`]).
    pub fn wants_write(&self) -> bool {
        match self {
            ConnStream::Plain(_) => false,
            ConnStream::Tls(tls) => tls.session.wants_write(),
        }
    }

    /// Ends the write side once the connection's last byte is written (TCP FIN); true when
    /// done. A TLS stream first sends close_notify (RFC 8446 §6.1: each party MUST send it
    /// before closing its write side) and returns false while its records wait for the socket:
    /// call again once writable.
    pub fn shutdown_write(&mut self) -> bool {
        match self {
            ConnStream::Plain(tcp) => {
                let _ = tcp.shutdown(Shutdown::Write);
                true
            }
            ConnStream::Tls(tls) => {
                if !tls.close_notify_sent {
                    tls.close_notify_sent = true;
                    tls.session.send_close_notify();
                }
                match tls.session.flush_tls(&mut tls.tcp) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => false,
                    _ => {
                        let _ = tls.tcp.shutdown(Shutdown::Write);
                        true
                    }
                }
            }
        }
    }

    /// When a TLS handshake in progress must be done by; `None` for plain streams and once
    /// the handshake completed.
    pub fn handshake_deadline(&self) -> Option<Instant> {
        match self {
            ConnStream::Plain(_) => None,
            ConnStream::Tls(tls) => tls.handshake_deadline,
        }
    }

    /// Once, when a TLS handshake in progress has completed: `Some(resumed)`, and the deadline
    /// is cleared. `None` otherwise.
    pub fn take_handshake_finished(&mut self) -> Option<bool> {
        match self {
            ConnStream::Plain(_) => None,
            ConnStream::Tls(tls) => {
                if tls.handshake_deadline.is_none() || !tls.session.take_handshake_finished() {
                    return None;
                }
                tls.handshake_deadline = None;
                Some(tls.session.handshake_kind() == Some(rustls::HandshakeKind::Resumed))
            }
        }
    }

    /// The TCP socket underneath, for socket options.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            ConnStream::Plain(tcp) => tcp,
            ConnStream::Tls(tls) => &tls.tcp,
        }
    }
}

impl Source for ConnStream {
    fn register(&mut self, registry: &Registry, token: Token, interests: Interest) -> io::Result<()> {
        match self {
            ConnStream::Plain(tcp) => tcp.register(registry, token, interests),
            ConnStream::Tls(tls) => tls.tcp.register(registry, token, interests),
        }
    }

    fn reregister(&mut self, registry: &Registry, token: Token, interests: Interest) -> io::Result<()> {
        match self {
            ConnStream::Plain(tcp) => tcp.reregister(registry, token, interests),
            ConnStream::Tls(tls) => tls.tcp.reregister(registry, token, interests),
        }
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        match self {
            ConnStream::Plain(tcp) => tcp.deregister(registry),
            ConnStream::Tls(tls) => tls.tcp.deregister(registry),
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
