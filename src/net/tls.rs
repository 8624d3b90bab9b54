//! Server TLS: certificate loading, the reloadable certificate, and one connection's TLS
//! session driven over a non-blocking socket.
//!
//! Implements: TLS 1.3 ([RFC 8446](https://www.rfc-editor.org/rfc/rfc8446)) and TLS 1.2
//! ([RFC 5246](https://www.rfc-editor.org/rfc/rfc5246)) by `rustls` on the `ring` provider; a
//! certificate chain and private key read from PEM files (through `rustls::pki_types`' PEM
//! parser, files bounded by [`MAX_PEM_FILE_BYTES`]) and checked to match; ALPN `http/1.1`
//! ([RFC 7301 §3.2](https://www.rfc-editor.org/rfc/rfc7301#section-3.2): a client offering
//! only other protocols gets the `no_application_protocol` alert); session resumption with
//! stateless tickets (TLS 1.3 and RFC 5077 for TLS 1.2) and a bounded server-side session cache
//! ([`Limits::tls_session_cache_entries`](super::Limits::tls_session_cache_entries));
//! replacing the certificate and key while connections stay open ([`TlsAcceptor::reload`],
//! driven by SIGHUP: connections keep the certificate they were opened with, new ones get the
//! new one, and a pair that fails to load leaves the old one in place); and a clear `400` in
//! plain text for a client that speaks plain HTTP to the TLS port.
//!
//! [`TlsStream`] is the per-connection adapter: rustls' `ServerConnection` is itself sans-I/O
//! (`read_tls`, `process_new_packets`, `reader`, `writer`, `write_tls`), and this drives it over
//! any non-blocking `Read + Write` socket with plain `read`/`write_vectored` semantics, so the
//! event loop and `Conn` treat a TLS connection like a plain one. It holds no buffers of
//! pushwire's own: the plaintext is read into the loop's scratch buffer and written from the
//! connection's `Output`, and only rustls' own state (its record buffers, which are empty while
//! the connection is idle) stays with the connection.
//!
//! Does not: ask for client certificates, staple OCSP, accept 0-RTT early data (replayable),
//! choose a certificate by SNI (one certificate serves every name), speak SSLv2-compatible
//! ClientHellos, or negotiate `h2`.

use std::fmt;
use std::io::{self, IoSlice, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, ServerSessionMemoryCache};
use rustls::sign::CertifiedKey;
use rustls::{ServerConfig, ServerConnection};

use crate::http1::response::write_full;

/// Largest certificate or key file read, in bytes. A chain of a few certificates is a few
/// kilobytes; a larger file is refused before it is read whole.
pub const MAX_PEM_FILE_BYTES: u64 = 1024 * 1024;

/// The first byte of every TLS record carrying a handshake message, the ClientHello included
/// ([RFC 8446 §5.1](https://www.rfc-editor.org/rfc/rfc8446#section-5.1): `ContentType`
/// `handshake(22)`).
pub const HANDSHAKE_RECORD: u8 = 0x16;

/// The answer to a client that speaks plain HTTP to the TLS port.
const PLAIN_HTTP_BODY: &[u8] = b"This port speaks TLS: use https:// (or wss://).\n";

/// Why the certificate and key could not be loaded.
#[derive(Debug)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read.
    Read {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        source: io::Error,
    },
    /// A file is larger than [`MAX_PEM_FILE_BYTES`].
    FileTooLarge {
        /// The file.
        path: PathBuf,
    },
    /// A file is not valid PEM.
    Pem {
        /// The file.
        path: PathBuf,
        /// What the PEM parser said.
        why: String,
    },
    /// The certificate file has no `CERTIFICATE` section.
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// The key file has no private key section (PKCS #8, PKCS #1 or SEC1).
    NoPrivateKey {
        /// The file.
        path: PathBuf,
    },
    /// The key is of a kind the provider cannot sign with, or does not belong to the
    /// certificate.
    KeyRejected {
        /// What rustls said.
        why: String,
    },
    /// rustls refused the configuration.
    Config(rustls::Error),
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::Read { path, source } => write!(f, "cannot read {}: {source}", path.display()),
            TlsError::FileTooLarge { path } => {
                write!(f, "{} is larger than {MAX_PEM_FILE_BYTES} bytes", path.display())
            }
            TlsError::Pem { path, why } => write!(f, "{} is not valid PEM: {why}", path.display()),
            TlsError::NoCertificate { path } => {
                write!(f, "{} holds no CERTIFICATE section", path.display())
            }
            TlsError::NoPrivateKey { path } => write!(f, "{} holds no private key", path.display()),
            TlsError::KeyRejected { why } => write!(f, "the private key was refused: {why}"),
            TlsError::Config(e) => write!(f, "TLS configuration: {e}"),
        }
    }
}

impl std::error::Error for TlsError {}

/// Where the certificate chain and its private key are read from (and read again on reload).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM file of the certificate chain, the server's own certificate first.
    pub cert_pem: PathBuf,
    /// PEM file of the private key (PKCS #8, PKCS #1 or SEC1).
    pub key_pem: PathBuf,
}

/// Reads a whole file of at most [`MAX_PEM_FILE_BYTES`].
fn read_bounded(path: &Path) -> Result<Vec<u8>, TlsError> {
    let read_error = |source| TlsError::Read { path: path.to_owned(), source };
    let file = std::fs::File::open(path).map_err(read_error)?;
    let mut bytes = Vec::new();
    file.take(MAX_PEM_FILE_BYTES + 1).read_to_end(&mut bytes).map_err(read_error)?;
    if bytes.len() as u64 > MAX_PEM_FILE_BYTES {
        return Err(TlsError::FileTooLarge { path: path.to_owned() });
    }
    Ok(bytes)
}

/// Loads and checks the certificate chain and key of `files`.
pub fn load_certified_key(
    files: &TlsFiles,
    provider: &CryptoProvider,
) -> Result<Arc<CertifiedKey>, TlsError> {
    let pem_error = |path: &Path, e: rustls::pki_types::pem::Error| TlsError::Pem {
        path: path.to_owned(),
        why: e.to_string(),
    };
    let cert_bytes = read_bounded(&files.cert_pem)?;
    let chain = CertificateDer::pem_slice_iter(&cert_bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(&files.cert_pem, e))?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate { path: files.cert_pem.clone() });
    }
    let key_bytes = read_bounded(&files.key_pem)?;
    let key = match PrivateKeyDer::from_pem_slice(&key_bytes) {
        Ok(key) => key,
        Err(rustls::pki_types::pem::Error::NoItemsFound) => {
            return Err(TlsError::NoPrivateKey { path: files.key_pem.clone() })
        }
        Err(e) => return Err(pem_error(&files.key_pem, e)),
    };
    let certified = CertifiedKey::from_der(chain, key, provider)
        .map_err(|e| TlsError::KeyRejected { why: e.to_string() })?;
    Ok(Arc::new(certified))
}

/// The certificate new handshakes are answered with; replaced whole on reload.
#[derive(Debug)]
struct CurrentCert(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for CurrentCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.read().unwrap_or_else(|e| e.into_inner()).clone())
    }
}

/// The server's TLS configuration, shared by every event loop: makes a [`TlsStream`] per
/// accepted connection and reloads the certificate in place.
#[derive(Debug)]
pub struct TlsAcceptor {
    files: TlsFiles,
    provider: Arc<CryptoProvider>,
    current: Arc<CurrentCert>,
    config: Arc<ServerConfig>,
}

impl TlsAcceptor {
    /// Loads `files` and builds the configuration: TLS 1.2 and 1.3, ALPN `http/1.1`, tickets
    /// and a session cache of `session_cache_entries`.
    pub fn new(files: TlsFiles, session_cache_entries: usize) -> Result<TlsAcceptor, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = load_certified_key(&files, &provider)?;
        let current = Arc::new(CurrentCert(RwLock::new(key)));
        let mut config = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(TlsError::Config)?
            .with_no_client_auth()
            .with_cert_resolver(current.clone());
        // RFC 7301 §3.2: the server picks from the client's list; HTTP/1.1 is all we speak.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        // Resumption: stateless tickets (rotating keys, the same for every loop, and kept
        // across certificate reloads), and a bounded cache for TLS 1.2 clients without them.
        config.ticketer = rustls::crypto::ring::Ticketer::new().map_err(TlsError::Config)?;
        config.session_storage = ServerSessionMemoryCache::new(session_cache_entries.max(1));
        Ok(TlsAcceptor { files, provider, current, config: Arc::new(config) })
    }

    /// Loads the files again; on success new handshakes use the new pair, on failure the
    /// current pair stays and the error says why. Open connections are not touched.
    pub fn reload(&self) -> Result<(), TlsError> {
        let key = load_certified_key(&self.files, &self.provider)?;
        *self.current.0.write().unwrap_or_else(|e| e.into_inner()) = key;
        Ok(())
    }

    /// The files the pair is loaded from.
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// A new server-side session for an accepted connection; then drive it with
    /// [`TlsStream::read`] and [`TlsStream::write_vectored`].
    pub fn accept(&self) -> Result<TlsStream, rustls::Error> {
        Ok(TlsStream {
            conn: ServerConnection::new(self.config.clone())?,
            first_read: true,
            handshaking: true,
        })
    }
}

/// Why a TLS connection ended with an error (inside the `io::Error` that [`TlsStream::read`]
/// returns; see [`TlsStreamError::of`]).
#[derive(Debug)]
#[non_exhaustive]
pub enum TlsStreamError {
    /// The client's first byte was not a TLS handshake record: it was answered with a plain
    /// `400` saying the port speaks TLS.
    PlainHttp,
    /// The peer broke the TLS protocol (a bad or truncated ClientHello, a bad record, a
    /// failed handshake); rustls has queued the alert, which was sent if the socket took it.
    Protocol(rustls::Error),
}

impl fmt::Display for TlsStreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsStreamError::PlainHttp => write!(f, "plain HTTP on the TLS port"),
            TlsStreamError::Protocol(e) => write!(f, "TLS: {e}"),
        }
    }
}

impl std::error::Error for TlsStreamError {}

impl TlsStreamError {
    /// The TLS error inside an I/O error from a [`TlsStream`], if that is what it is.
    pub fn of(e: &io::Error) -> Option<&TlsStreamError> {
        e.get_ref()?.downcast_ref::<TlsStreamError>()
    }

    fn into_io(self) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, self)
    }
}

/// One connection's TLS session over a non-blocking socket passed to each call.
///
/// `read` gives plaintext (driving the handshake as bytes come in), `write_vectored` takes
/// plaintext, and `flush_tls` writes what rustls has encrypted. After each call the caller
/// registers for writability while [`TlsStream::wants_write`].
#[derive(Debug)]
pub struct TlsStream {
    conn: ServerConnection,
    /// Nothing has been read yet: the first bytes are checked to be TLS.
    first_read: bool,
    /// The handshake was not yet seen to finish (see [`TlsStream::take_handshake_finished`]).
    handshaking: bool,
}

impl TlsStream {
    /// Reads plaintext into `buf`, reading from `sock` (and answering the handshake) as needed.
    /// `Ok(0)` is the end of the stream (close_notify, or a TCP close: every framing pushwire
    /// reads notices truncation itself); `WouldBlock` when `sock` has nothing more. A TLS
    /// failure is an `InvalidData` error holding a [`TlsStreamError`]; the connection is then
    /// done.
    pub fn read<S: Read + Write>(&mut self, sock: &mut S, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.first_read {
            return self.read_first(sock, buf);
        }
        loop {
            match self.conn.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // A TCP close without close_notify: the end of the stream (see above).
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) => return Err(e),
            }
            // Nothing decrypted is waiting: take more records from the socket.
            match self.conn.read_tls(sock) {
                Ok(_) => self.process(sock)?,
                Err(e) => return Err(e),
            }
        }
    }

    /// The first read: the bytes go through the loop's buffer so the first one can be checked
    /// before rustls sees them.
    fn read_first<S: Read + Write>(&mut self, sock: &mut S, buf: &mut [u8]) -> io::Result<usize> {
        let n = sock.read(buf)?;
        if n == 0 {
            return Ok(0);
        }
        self.first_read = false;
        if buf[0] != HANDSHAKE_RECORD {
            // Best effort: one write of the answer; the caller then closes. What the client
            // sent was read (up to `buf`), so the close is a FIN, not a reset.
            let mut answer = Vec::new();
            write_full(&mut answer, 400, &[("Content-Type", "text/plain")], PLAIN_HTTP_BODY, false, true);
            let _ = sock.write(&answer);
            return Err(TlsStreamError::PlainHttp.into_io());
        }
        let mut rest = &buf[..n];
        // rustls takes a bounded amount per call; each call's records are processed before
        // the next, as read_tls asks.
        while !rest.is_empty() {
            match self.conn.read_tls(&mut rest) {
                Ok(0) => break,
                Ok(_) => self.process(sock)?,
                Err(e) => return Err(e),
            }
        }
        // The first flight holds no application data (no 0-RTT), so there is nothing to hand
        // back yet: go on reading from the socket.
        self.read(sock, buf)
    }

    /// Processes the records read, then writes whatever they made rustls answer (handshake
    /// messages, tickets, alerts).
    fn process<S: Write>(&mut self, sock: &mut S) -> io::Result<()> {
        let result = self.conn.process_new_packets();
        match self.flush_tls(sock) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) if result.is_ok() => return Err(e),
            Err(_) => {} // The TLS error below says more.
        }
        result.map(|_| ()).map_err(|e| TlsStreamError::Protocol(e).into_io())
    }

    /// Encrypts plaintext from `bufs` and writes it to `sock`; returns how much plaintext was
    /// taken (which rustls may still hold encrypted when the socket is full: see
    /// [`TlsStream::wants_write`]). `WouldBlock` while earlier records are still unwritten.
    pub fn write_vectored<S: Write>(&mut self, sock: &mut S, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.flush_tls(sock)?;
        let n = self.conn.writer().write_vectored(bufs)?;
        if n == 0 && bufs.iter().any(|b| !b.is_empty()) {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        match self.flush_tls(sock) {
            Ok(()) => Ok(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(n),
            Err(e) => Err(e),
        }
    }

    /// Writes the records rustls holds; `WouldBlock` when the socket did not take them all.
    pub fn flush_tls<S: Write>(&mut self, sock: &mut S) -> io::Result<()> {
        while self.conn.wants_write() {
            match self.conn.write_tls(sock) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Queues the `close_notify` alert (RFC 8446 §6.1: each party MUST send it before closing
    /// its write side); [`TlsStream::flush_tls`] sends it.
    pub fn send_close_notify(&mut self) {
        self.conn.send_close_notify();
    }

    /// True while rustls holds records the socket has not taken: register for writability.
    pub fn wants_write(&self) -> bool {
        self.conn.wants_write()
    }

    /// True until the handshake completes.
    pub fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// True once, the first time it is called after the handshake completed (to count
    /// handshakes in progress).
    pub fn take_handshake_finished(&mut self) -> bool {
        let finished = self.handshaking && !self.conn.is_handshaking();
        if finished {
            self.handshaking = false;
        }
        finished
    }

    /// The negotiated TLS version, once the handshake is done.
    pub fn protocol_version(&self) -> Option<rustls::ProtocolVersion> {
        self.conn.protocol_version()
    }

    /// The negotiated ALPN protocol, if the client offered ALPN.
    pub fn alpn_protocol(&self) -> Option<&[u8]> {
        self.conn.alpn_protocol()
    }

    /// Whether this session was resumed from an earlier one (ticket or cache).
    pub fn handshake_kind(&self) -> Option<rustls::HandshakeKind> {
        self.conn.handshake_kind()
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixStream;

    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
    use rustls::pki_types::ServerName;
    use rustls::{ClientConfig, ClientConnection, HandshakeKind, ProtocolVersion, RootCertStore};

    use super::*;

    /// A throwaway CA, and server pairs it signs, in a fresh temporary folder.
    struct Pki {
        dir: PathBuf,
        ca_key: KeyPair,
        ca_params: CertificateParams,
        ca_pem: String,
    }

    impl Pki {
        fn new(tag: &str) -> Pki {
            let dir = std::env::temp_dir().join(format!("pushwire-net-tls-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            let ca_key = KeyPair::generate().unwrap();
            let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
            ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            ca_params.distinguished_name.push(DnType::CommonName, format!("pushwire unit CA {tag}"));
            ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
            let ca_pem = ca_params.clone().self_signed(&ca_key).unwrap().pem();
            Pki { dir, ca_key, ca_params, ca_pem }
        }

        /// Writes a `localhost` pair named `name` (common name `name`); returns its files.
        fn pair(&self, name: &str) -> TlsFiles {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
            params.distinguished_name.push(DnType::CommonName, name);
            let issuer = Issuer::new(self.ca_params.clone(), &self.ca_key);
            let cert = params.signed_by(&key, &issuer).unwrap();
            let files = TlsFiles {
                cert_pem: self.dir.join(format!("{name}.pem")),
                key_pem: self.dir.join(format!("{name}.key")),
            };
            std::fs::write(&files.cert_pem, cert.pem()).unwrap();
            std::fs::write(&files.key_pem, key.serialize_pem()).unwrap();
            files
        }

        fn client(
            &self,
            versions: &[&'static rustls::SupportedProtocolVersion],
            alpn: &[&[u8]],
        ) -> Arc<ClientConfig> {
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(self.ca_pem.as_bytes()) {
                roots.add(cert.unwrap()).unwrap();
            }
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let mut config = ClientConfig::builder_with_provider(provider)
                .with_protocol_versions(versions)
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
            config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
            Arc::new(config)
        }
    }

    impl Drop for Pki {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    /// A rustls client and a [`TlsStream`] over a non-blocking socket pair, pumped by hand.
    struct Pair {
        client: ClientConnection,
        client_sock: UnixStream,
        server: TlsStream,
        server_sock: UnixStream,
        /// Plaintext the server has read.
        server_got: Vec<u8>,
        /// The server's last read result other than data or WouldBlock.
        server_end: Option<io::Result<usize>>,
    }

    impl Pair {
        fn new(acceptor: &TlsAcceptor, client: Arc<ClientConfig>) -> Pair {
            let (client_sock, server_sock) = UnixStream::pair().unwrap();
            client_sock.set_nonblocking(true).unwrap();
            server_sock.set_nonblocking(true).unwrap();
            let name = ServerName::try_from("localhost").unwrap();
            Pair {
                client: ClientConnection::new(client, name).unwrap(),
                client_sock,
                server: acceptor.accept().unwrap(),
                server_sock,
                server_got: Vec::new(),
                server_end: None,
            }
        }

        /// One round: the client writes and reads, the server reads until it would block.
        fn turn(&mut self) {
            while self.client.wants_write() {
                match self.client.write_tls(&mut self.client_sock) {
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => panic!("client write: {e}"),
                }
            }
            if self.server_end.is_none() {
                let mut buf = [0u8; 4096];
                loop {
                    match self.server.read(&mut self.server_sock, &mut buf) {
                        Ok(0) => {
                            self.server_end = Some(Ok(0));
                            break;
                        }
                        Ok(n) => self.server_got.extend_from_slice(&buf[..n]),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => {
                            self.server_end = Some(Err(e));
                            break;
                        }
                    }
                }
            }
            match self.client.read_tls(&mut self.client_sock) {
                Ok(_) => {
                    let _ = self.client.process_new_packets();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("client read: {e}"),
            }
        }

        /// Turns until `done`, at most 100 turns.
        fn until(&mut self, mut done: impl FnMut(&mut Pair) -> bool) {
            for _ in 0..100 {
                if done(self) {
                    return;
                }
                self.turn();
            }
            panic!("not done after 100 turns");
        }

        fn client_read_all(&mut self) -> Vec<u8> {
            let mut out = Vec::new();
            let _ = self.client.reader().read_to_end(&mut out);
            out
        }

        fn peer_common_name_contains(&self, name: &str) -> bool {
            let cert = &self.client.peer_certificates().unwrap()[0];
            cert.as_ref().windows(name.len()).any(|w| w == name.as_bytes())
        }
    }

    fn handshake_and_echo(
        pki: &Pki,
        acceptor: &TlsAcceptor,
        version: &'static rustls::SupportedProtocolVersion,
    ) -> Pair {
        let mut pair = Pair::new(acceptor, pki.client(&[version], &[b"http/1.1"]));
        pair.client.writer().write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        pair.until(|p| p.server_got.len() == 18);
        assert_eq!(pair.server_got, b"GET / HTTP/1.1\r\n\r\n");
        assert!(!pair.server.is_handshaking());
        assert!(pair.server.take_handshake_finished() && !pair.server.take_handshake_finished());
        assert_eq!(pair.server.alpn_protocol(), Some(&b"http/1.1"[..]));
        // The answer, written as the event loop writes: vectored, from several buffers.
        let parts = [IoSlice::new(b"HTTP/1.1 200 OK\r\n"), IoSlice::new(b"content-length: 0\r\n\r\n")];
        let n = pair.server.write_vectored(&mut pair.server_sock, &parts).unwrap();
        assert_eq!(n, 38);
        assert!(!pair.server.wants_write());
        pair.until(|p| p.client.process_new_packets().is_ok_and(|s| s.plaintext_bytes_to_read() == 38));
        assert_eq!(pair.client_read_all(), b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
        pair
    }

    #[test]
    fn rfc8446_and_rfc5246_handshake_alpn_http11_and_data_both_ways() {
        let pki = Pki::new("versions");
        let acceptor = TlsAcceptor::new(pki.pair("server-one"), 16).unwrap();
        for (version, want) in [
            (&rustls::version::TLS13, ProtocolVersion::TLSv1_3),
            (&rustls::version::TLS12, ProtocolVersion::TLSv1_2),
        ] {
            let pair = handshake_and_echo(&pki, &acceptor, version);
            assert_eq!(pair.server.protocol_version(), Some(want));
            assert_eq!(pair.server.handshake_kind(), Some(HandshakeKind::Full));
        }
    }

    #[test]
    fn rfc8446_2_2_and_rfc5077_sessions_resume() {
        let pki = Pki::new("resume");
        let acceptor = TlsAcceptor::new(pki.pair("server-one"), 16).unwrap();
        for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
            // One client configuration keeps its session store across connections.
            let client = pki.client(&[version], &[b"http/1.1"]);
            let mut first = Pair::new(&acceptor, client.clone());
            first.client.writer().write_all(b"x").unwrap();
            first.until(|p| p.server_got == b"x");
            // TLS 1.3 tickets come after the handshake: let the client take them.
            first.turn();
            let mut second = Pair::new(&acceptor, client);
            second.client.writer().write_all(b"y").unwrap();
            second.until(|p| p.server_got == b"y");
            assert_eq!(second.server.handshake_kind(), Some(HandshakeKind::Resumed), "{version:?}");
        }
    }

    #[test]
    fn rfc7301_3_2_a_client_offering_only_other_protocols_is_refused() {
        let pki = Pki::new("alpn");
        let acceptor = TlsAcceptor::new(pki.pair("server-one"), 16).unwrap();
        let mut pair = Pair::new(&acceptor, pki.client(&[&rustls::version::TLS13], &[b"h2"]));
        pair.until(|p| p.server_end.is_some());
        let err = pair.server_end.take().unwrap().unwrap_err();
        assert!(
            matches!(
                TlsStreamError::of(&err),
                Some(TlsStreamError::Protocol(rustls::Error::NoApplicationProtocol))
            ),
            "{err}"
        );
        // Without ALPN at all the handshake goes through.
        let mut pair = Pair::new(&acceptor, pki.client(&[&rustls::version::TLS13], &[]));
        pair.client.writer().write_all(b"z").unwrap();
        pair.until(|p| p.server_got == b"z");
        assert_eq!(pair.server.alpn_protocol(), None);
    }

    #[test]
    fn plain_http_on_the_tls_port_gets_a_plain_400() {
        let pki = Pki::new("plain");
        let acceptor = TlsAcceptor::new(pki.pair("server-one"), 16).unwrap();
        let (mut client, mut server_sock) = UnixStream::pair().unwrap();
        server_sock.set_nonblocking(true).unwrap();
        client.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut server = acceptor.accept().unwrap();
        let err = server.read(&mut server_sock, &mut [0u8; 1024]).unwrap_err();
        assert!(matches!(TlsStreamError::of(&err), Some(TlsStreamError::PlainHttp)), "{err}");
        drop(server_sock);
        let mut answer = String::new();
        client.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
        assert!(answer.ends_with("This port speaks TLS: use https:// (or wss://).\n"), "{answer}");
    }

    #[test]
    fn rfc8446_5_1_garbage_and_truncated_client_hellos_end_the_connection() {
        let pki = Pki::new("garbage");
        let acceptor = TlsAcceptor::new(pki.pair("server-one"), 16).unwrap();
        // A handshake record whose body is not a ClientHello: a TLS error (and an alert).
        let (mut client, mut server_sock) = UnixStream::pair().unwrap();
        server_sock.set_nonblocking(true).unwrap();
        client.write_all(&[0x16, 0x03, 0x01, 0x00, 0x05, 0xff, 0xff, 0xff, 0xff, 0xff]).unwrap();
        let mut server = acceptor.accept().unwrap();
        let err = server.read(&mut server_sock, &mut [0u8; 1024]).unwrap_err();
        assert!(matches!(TlsStreamError::of(&err), Some(TlsStreamError::Protocol(_))), "{err}");
        // A record longer than TLS allows (RFC 8446 §5.1: 2^14 + 256 at most).
        let (mut client, mut server_sock) = UnixStream::pair().unwrap();
        server_sock.set_nonblocking(true).unwrap();
        client.write_all(&[0x16, 0x03, 0x01, 0xff, 0xff, 0x01]).unwrap();
        let mut server = acceptor.accept().unwrap();
        let err = server.read(&mut server_sock, &mut [0u8; 1024]).unwrap_err();
        assert!(matches!(TlsStreamError::of(&err), Some(TlsStreamError::Protocol(_))), "{err}");
        // A real ClientHello cut short, then the peer goes: waits for more, then ends.
        let mut hello = Vec::new();
        let mut real = ClientConnection::new(
            pki.client(&[&rustls::version::TLS13], &[b"http/1.1"]),
            ServerName::try_from("localhost").unwrap(),
        )
        .unwrap();
        real.write_tls(&mut hello).unwrap();
        let (mut client, mut server_sock) = UnixStream::pair().unwrap();
        server_sock.set_nonblocking(true).unwrap();
        client.write_all(&hello[..hello.len() / 2]).unwrap();
        let mut server = acceptor.accept().unwrap();
        let mut buf = [0u8; 1024];
        assert_eq!(server.read(&mut server_sock, &mut buf).unwrap_err().kind(), io::ErrorKind::WouldBlock);
        assert!(server.is_handshaking());
        drop(client);
        assert_eq!(server.read(&mut server_sock, &mut buf).unwrap(), 0);
    }

    #[test]
    fn reload_serves_the_new_pair_to_new_connections_and_keeps_the_old_on_failure() {
        let pki = Pki::new("reload");
        let files = pki.pair("server-one");
        let acceptor = TlsAcceptor::new(files.clone(), 16).unwrap();
        let mut old = handshake_and_echo(&pki, &acceptor, &rustls::version::TLS13);
        assert!(old.peer_common_name_contains("server-one"));
        // Replace the files in place, as an operator renewing a certificate does.
        let two = pki.pair("server-two");
        std::fs::copy(&two.cert_pem, &files.cert_pem).unwrap();
        std::fs::copy(&two.key_pem, &files.key_pem).unwrap();
        acceptor.reload().unwrap();
        let new = handshake_and_echo(&pki, &acceptor, &rustls::version::TLS13);
        assert!(new.peer_common_name_contains("server-two"));
        // The connection opened before goes on with its session.
        old.client.writer().write_all(b"still here").unwrap();
        old.server_got.clear();
        old.until(|p| p.server_got == b"still here");
        // A broken file: the reload fails and the current pair stays.
        std::fs::write(&files.key_pem, "not a key").unwrap();
        assert!(matches!(acceptor.reload(), Err(TlsError::NoPrivateKey { .. })));
        let after = handshake_and_echo(&pki, &acceptor, &rustls::version::TLS13);
        assert!(after.peer_common_name_contains("server-two"));
    }

    #[test]
    fn bad_certificate_and_key_files_are_refused_with_the_reason() {
        let pki = Pki::new("bad");
        let one = pki.pair("server-one");
        let two = pki.pair("server-two");
        let with = |cert: &Path, key: &Path| {
            TlsAcceptor::new(TlsFiles { cert_pem: cert.to_owned(), key_pem: key.to_owned() }, 16).unwrap_err()
        };
        let missing = pki.dir.join("missing.pem");
        assert!(matches!(with(&missing, &one.key_pem), TlsError::Read { .. }));
        assert!(matches!(with(&one.cert_pem, &missing), TlsError::Read { .. }));
        // A key file given as the certificate, and the other way round.
        assert!(matches!(with(&one.key_pem, &one.key_pem), TlsError::NoCertificate { .. }));
        assert!(matches!(with(&one.cert_pem, &one.cert_pem), TlsError::NoPrivateKey { .. }));
        // A key that belongs to another certificate.
        let err = with(&one.cert_pem, &two.key_pem);
        assert!(matches!(err, TlsError::KeyRejected { .. }), "{err}");
        // A PEM section without its end.
        let broken = pki.dir.join("broken.pem");
        std::fs::write(&broken, "-----BEGIN CERTIFICATE-----\nAAAA\n").unwrap();
        assert!(matches!(with(&broken, &one.key_pem), TlsError::Pem { .. }));
        // Larger than MAX_PEM_FILE_BYTES: refused before it is read whole.
        let large = pki.dir.join("large.pem");
        std::fs::write(&large, vec![b'#'; MAX_PEM_FILE_BYTES as usize + 1]).unwrap();
        let err = with(&large, &one.key_pem);
        assert!(matches!(err, TlsError::FileTooLarge { .. }));
        assert!(err.to_string().contains("large.pem"), "{err}");
    }
}
