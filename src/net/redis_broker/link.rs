//! One non-blocking connection to Redis: a mio `TcpStream`, TLS over it for `rediss://`, the
//! bytes waiting to be written, and the RESP decoder of what comes back.
//!
//! Implements: a non-blocking connect (completion seen on the first writable event), writes
//! drained to `WouldBlock`, reads bounded per call by a byte budget (the caller comes back for
//! the rest), and replies decoded with [`crate::redis::resp::Decoder`] (bounded by its
//! [`Limits`]). With TLS ([RFC 8446](https://www.rfc-editor.org/rfc/rfc8446), TLS 1.2 and 1.3
//! by rustls), a `ClientConnection` (sans-I/O) sits between the commands and the socket: the
//! commands queued before the handshake ends are buffered by rustls (bounded by its
//! buffer limit; the rest waits in [`Link`]'s own buffer) and sent once it is done; the
//! server's certificate must be valid for the URL's host (RFC 6066 §3 SNI for a name, the IP
//! address SAN for an address) and chain to the trusted roots. A certificate or protocol
//! failure is an `InvalidData` error naming it; the caller closes the connection.
//!
//! Does not: know what the commands mean or match replies to them (see the broker); send a
//! client certificate (Redis's `--tls-auth-clients yes` would refuse the connection).

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection};

use crate::redis::resp::{Command, Decoded, Decoder, Limits, Value};

/// What a read found.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum ReadOutcome {
    /// Drained to `WouldBlock`.
    Drained,
    /// The budget ran out first: read again without waiting for readiness.
    BudgetSpent,
}

/// What a `rediss://` connection needs: the client configuration (trusted roots) and the name
/// the server's certificate must carry.
#[derive(Debug, Clone)]
pub(super) struct TlsSetup {
    pub(super) config: Arc<ClientConfig>,
    pub(super) name: ServerName<'static>,
}

/// One connection to Redis.
#[derive(Debug)]
pub(super) struct Link {
    stream: TcpStream,
    /// The TLS session for `rediss://`; boxed, its state is large.
    tls: Option<Box<ClientConnection>>,
    /// Encoded commands not yet written, from `out_sent` on.
    out: Vec<u8>,
    out_sent: usize,
    decoder: Decoder,
    connected: bool,
}

impl Link {
    /// Starts connecting to `addr` (with TLS when `tls` is given) and registers the socket for
    /// reads and writes.
    pub(super) fn open(
        addr: SocketAddr,
        tls: Option<&TlsSetup>,
        registry: &Registry,
        token: Token,
        limits: Limits,
    ) -> io::Result<Link> {
        let tls = match tls {
            Some(setup) => Some(Box::new(
                ClientConnection::new(setup.config.clone(), setup.name.clone()).map_err(io::Error::other)?,
            )),
            None => None,
        };
        let mut stream = TcpStream::connect(addr)?;
        registry.register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)?;
        Ok(Link {
            stream,
            tls,
            out: Vec::new(),
            out_sent: 0,
            decoder: Decoder::new(limits),
            connected: false,
        })
    }

    /// Deregisters the socket (it closes when dropped).
    pub(super) fn close(mut self, registry: &Registry) {
        let _ = registry.deregister(&mut self.stream);
    }

    /// Queues a command (written by the next [`Link::flush`]).
    pub(super) fn queue(&mut self, command: &Command) {
        command.encode(&mut self.out);
    }

    /// True while a TLS handshake has not finished (for a clearer timeout).
    pub(super) fn is_tls_handshaking(&self) -> bool {
        self.tls.as_ref().is_some_and(|tls| tls.is_handshaking())
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

    /// Writes queued bytes until done or `WouldBlock` (through TLS when it is on).
    pub(super) fn flush(&mut self) -> io::Result<()> {
        if !self.connected {
            return Ok(());
        }
        match self.tls.as_deref_mut() {
            None => {
                while self.out_sent < self.out.len() {
                    match self.stream.write(&self.out[self.out_sent..]) {
                        Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                        Ok(n) => self.out_sent += n,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
            }
            Some(tls) => loop {
                // rustls takes plaintext up to its buffer limit (also while handshaking), ...
                let taken = match self.out.get(self.out_sent..).filter(|rest| !rest.is_empty()) {
                    Some(rest) => tls.writer().write(rest)?,
                    None => 0,
                };
                self.out_sent += taken;
                // ... and the records it made go to the socket.
                if !write_records(tls, &mut self.stream)? || taken == 0 {
                    break;
                }
            },
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
            let n = match self.read_some(buf) {
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

    /// Reads some plaintext: from the socket, or through TLS (taking records from the socket
    /// and answering the handshake as needed). `Ok(0)` is the end of the stream (a TCP close,
    /// or TLS `close_notify`; a TCP close without it too, as the RESP decoder notices a cut
    /// reply).
    fn read_some(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(tls) = self.tls.as_deref_mut() else {
            return self.stream.read(buf);
        };
        loop {
            match tls.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) => return Err(e),
            }
            if tls.read_tls(&mut self.stream)? == 0 {
                return Ok(0);
            }
            let processed = tls.process_new_packets();
            // Handshake messages or an alert it made: best effort here, `flush` writes the rest.
            let _ = write_records(tls, &mut self.stream);
            if let Err(e) = processed {
                return Err(io::Error::new(io::ErrorKind::InvalidData, format!("TLS: {e}")));
            }
        }
    }
}

/// Writes the TLS records rustls holds; `Ok(false)` when the socket is full.
fn write_records(tls: &mut ClientConnection, stream: &mut TcpStream) -> io::Result<bool> {
    while tls.wants_write() {
        match tls.write_tls(stream) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}
