//! TLS for `wss://` and `https://`: the byte stream under [`super::WsClient`] and
//! [`super::HttpConn`], plain TCP or TLS over TCP with `rustls`.
//!
//! Implements: the secure flag of [RFC 6455 §3](https://www.rfc-editor.org/rfc/rfc6455#section-3)
//! and §4.1 ("If /secure/ is true, the client MUST perform a TLS handshake over the connection
//! after opening the connection and before sending the handshake data"), with the URL's host as
//! the TLS Server Name Indication
//! ([RFC 6066 §3](https://www.rfc-editor.org/rfc/rfc6066#section-3)), and the server's
//! certificate checked against Mozilla's root certificates (`webpki-roots`) plus the extra roots
//! of [`TlsOptions::extra_roots_pem`], by `rustls` with the `ring` provider (TLS 1.2 and 1.3).
//! The handshake runs before the HTTP or WebSocket bytes, within the connect deadline; a
//! failure is [`Error::Tls`].
//!
//! Does not: send client certificates, use the operating system's certificate store, resume
//! sessions across connections, or pin certificates. A TCP close without TLS `close_notify` is
//! taken as the end of the stream: every framing the clients read (WebSocket frames, chunked
//! and Content-Length bodies) notices truncation itself; only a close-delimited HTTP body could
//! be cut short unnoticed.

use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

use super::socket::{connect_tcp, io_error, remaining, tls_error};
use super::{Error, Url};

/// What a TLS client trusts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// A PEM file of more CA certificates to trust besides Mozilla's roots, e.g. a private
    /// or test CA. Default: none.
    pub extra_roots_pem: Option<PathBuf>,
}

/// A client's connection: plain TCP for `ws://` and `http://`, TLS over TCP for `wss://` and
/// `https://`. Reads and writes go through TLS when it is on; timeouts and shutdown act on the
/// TCP socket underneath.
#[derive(Debug)]
pub enum Stream {
    /// `ws://`, `http://`.
    Plain(TcpStream),
    /// `wss://`, `https://`; boxed because a TLS connection's state is large.
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Stream {
    /// The TCP socket underneath, for timeouts and options.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(tcp) => tcp,
            Stream::Tls(tls) => tls.get_ref(),
        }
    }

    /// Shuts the connection down; before shutting down the writing side of a TLS connection
    /// it sends `close_notify` (best effort: RFC 8446 §6.1 asks each party to send it before
    /// closing its write side).
    pub fn shutdown(&mut self, how: Shutdown) -> io::Result<()> {
        if let Stream::Tls(tls) = self {
            if how != Shutdown::Read {
                tls.conn.send_close_notify();
                let _ = tls.conn.complete_io(&mut tls.sock);
            }
        }
        self.tcp().shutdown(how)
    }

    /// True when the connection is open and has nothing to read: a read without blocking
    /// would block. Consumes what it reads (a TLS session ticket, or unexpected bytes, which
    /// make it false).
    pub fn is_idle_open(&mut self) -> bool {
        if self.tcp().set_nonblocking(true).is_err() {
            return false;
        }
        let mut byte = [0u8; 1];
        let alive = match self {
            Stream::Plain(tcp) => {
                matches!(tcp.peek(&mut byte), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
            // TLS 1.3 servers send session tickets after the handshake: rustls takes them in,
            // and only application data, an alert or EOF tell the connection is unusable.
            Stream::Tls(tls) => {
                matches!(tls.read(&mut byte), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
        };
        self.tcp().set_nonblocking(false).is_ok() && alive
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(tcp) => tcp.read(buf),
            Stream::Tls(tls) => match tls.read(buf) {
                // rustls reports a TCP close without close_notify as UnexpectedEof; see the
                // module docs for why it is taken as the end of the stream.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(0),
                other => other,
            },
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(tcp) => tcp.write(buf),
            Stream::Tls(tls) => tls.write(buf),
        }
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Stream::Plain(tcp) => tcp.write_vectored(bufs),
            Stream::Tls(tls) => tls.write_vectored(bufs),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(tcp) => tcp.flush(),
            Stream::Tls(tls) => tls.flush(),
        }
    }
}

/// The client configuration for `options`: Mozilla's roots plus the extra ones (also the Redis
/// broker's for `rediss://`, and what `pushwire bench` connects to `wss://` with).
pub(crate) fn client_config(options: &TlsOptions) -> Result<Arc<ClientConfig>, Error> {
    let mut roots = RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    if let Some(path) = &options.extra_roots_pem {
        let bad_file = |why: String| Error::InvalidOptions(format!("CA file {}: {why}", path.display()));
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| bad_file(e.to_string()))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad_file(e.to_string()))?;
        if certs.is_empty() {
            return Err(bad_file("no CERTIFICATE in it".into()));
        }
        for cert in certs {
            roots.add(cert).map_err(|e| bad_file(e.to_string()))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Connects to the server of `url` before `deadline`: TCP, then the TLS handshake when the URL
/// is secure (§4.1: before any HTTP byte is sent).
pub(super) fn connect(url: &Url, tls: &TlsOptions, deadline: Instant) -> Result<Stream, Error> {
    if !url.secure {
        return connect_tcp(url, deadline).map(Stream::Plain);
    }
    const WAITING_FOR: &str = "the TLS handshake";
    let config = client_config(tls)?;
    // RFC 6066 §3 (SNI): the host as in the URL; rustls sends no SNI for an IP address and
    // checks the certificate's IP address SAN instead.
    let name = ServerName::try_from(url.host.clone())
        .map_err(|e| Error::InvalidUrl(format!("{:?} is not a TLS server name: {e}", url.host)))?;
    let conn = ClientConnection::new(config, name).map_err(|e| Error::Tls(e.to_string()))?;
    let mut tcp = connect_tcp(url, deadline)?;
    let mut conn = conn;
    // Bounded: each turn moves at least one TLS record within the time left, or fails.
    while conn.is_handshaking() {
        let left = remaining(deadline, WAITING_FOR)?;
        tcp.set_read_timeout(Some(left))?;
        tcp.set_write_timeout(Some(left))?;
        match conn.complete_io(&mut tcp) {
            Ok((0, 0)) if conn.is_handshaking() => {
                return Err(Error::Tls("the server closed the connection during the TLS handshake".into()))
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                return Err(match tls_error(&e) {
                    Some(tls) => tls,
                    None if e.kind() == io::ErrorKind::UnexpectedEof => {
                        Error::Tls("the server closed the connection during the TLS handshake".into())
                    }
                    None => io_error(e, WAITING_FOR),
                })
            }
        }
    }
    Ok(Stream::Tls(Box::new(StreamOwned::new(conn, tcp))))
}
