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
//! [`TlsStream`] is the per-connection adapter: rustls' `UnbufferedServerConnection` (the
//! unbuffered API) is sans-I/O and keeps only the session, and this drives it over any
//! non-blocking `Read + Write` socket with plain `read`/`write_vectored` semantics, so the
//! event loop and `Conn` treat a TLS connection like a plain one. pushwire owns the record
//! buffers, as it owns a plain connection's: ciphertext is read into the loop's scratch buffer
//! and processed there, plaintext handed out through the same buffer, and records sealed from
//! the connection's `Output`; a connection keeps ciphertext only while a record is split across
//! reads or the socket has not taken what was sealed (bounded by [`MAX_INCOMING_BYTES`] and
//! one write's worth), and frees it once it is empty, so an idle connection holds no buffers.
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
use rustls::server::{
    ClientHello, ResolvesServerCert, ServerConnectionData, ServerSessionMemoryCache,
    UnbufferedServerConnection,
};
use rustls::sign::CertifiedKey;
use rustls::unbuffered::{ConnectionState, EncodeError, EncodeTlsData, EncryptError, WriteTraffic};
use rustls::ServerConfig;

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
        Ok(TlsStream::new(UnbufferedServerConnection::new(self.config.clone())?))
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

/// The largest TLS record on the wire: a 5-byte header and at most 2^14 + 2048 bytes of
/// `TLSCiphertext` ([RFC 5246 §6.2.3](https://www.rfc-editor.org/rfc/rfc5246#section-6.2.3);
/// TLS 1.3 allows only 2^14 + 256, [RFC 8446 §5.2](https://www.rfc-editor.org/rfc/rfc8446#section-5.2),
/// and a record whose length field says more is refused by rustls' deframer, RFC 8446 §5.1).
pub const MAX_RECORD_BYTES: usize = 5 + (1 << 14) + 2048;

/// The most ciphertext a connection keeps between reads: one handshake message being joined
/// from several records (rustls refuses handshake messages above 2^16 - 1 bytes, 4 of header;
/// with their record headers, less than a record more) and the start of the record after it.
/// Only held while a record or handshake message is split across reads; a connection that
/// would need more is a protocol error.
pub const MAX_INCOMING_BYTES: usize = (1 << 16) + 2 * MAX_RECORD_BYTES;

/// The most plaintext encrypted per [`TlsStream::write_vectored`] call (four full records), so
/// the records waiting for the socket stay bounded.
const MAX_SEAL_PLAINTEXT: usize = 4 << 14;

/// An upper bound of what encryption adds per record: the 5-byte header, the TLS 1.3 content
/// type byte and a 16-byte AEAD tag, or TLS 1.2's 8-byte explicit nonce and tag
/// ([RFC 8446 §5.2](https://www.rfc-editor.org/rfc/rfc8446#section-5.2),
/// [RFC 5288 §3](https://www.rfc-editor.org/rfc/rfc5288#section-3)), with room to spare; rustls
/// says when a buffer is too small and the record is then sealed again into a larger one.
const SEAL_OVERHEAD_PER_RECORD: usize = 64;

/// One connection's TLS session over a non-blocking socket passed to each call.
///
/// `read` gives plaintext (driving the handshake as bytes come in), `write_vectored` takes
/// plaintext, and `flush_tls` writes the records the socket has not taken yet. After each call
/// the caller registers for writability while [`TlsStream::wants_write`].
///
/// Built on rustls' unbuffered API (`UnbufferedServerConnection`): rustls keeps the session
/// (keys, record layer, handshake state) and pushwire owns the record buffers, which are empty
/// and unallocated while the connection is idle:
/// - ciphertext is read into the back half of the caller's (the event loop's) buffer and its
///   plaintext handed out through the front half; only the start of a record split across
///   reads is kept, in `incoming`, until the record is complete (at most
///   [`MAX_INCOMING_BYTES`]);
/// - records are sealed into `outgoing` and written at once; what the socket does not take
///   waits there for writability (at most `MAX_SEAL_PLAINTEXT` (64 KiB) of plaintext per call);
/// - plaintext that did not fit the caller's buffer waits in `plain` for the next read.
pub struct TlsStream {
    conn: UnbufferedServerConnection,
    /// Ciphertext received but not yet processed: a record (or a handshake message) split
    /// across reads. Freed once empty.
    incoming: Vec<u8>,
    /// Records sealed but not yet taken by the socket. Freed once written.
    outgoing: Vec<u8>,
    /// Decrypted plaintext that did not fit the caller's buffer, and how much of it was read.
    /// Freed once read.
    plain: Vec<u8>,
    plain_read: usize,
    /// The peer sent close_notify (RFC 8446 §6.1): the stream has ended.
    peer_closed: bool,
    /// rustls has encoded a record for the peer (the server's first flight is out).
    sent_records: bool,
    /// Nothing has been read yet: the first bytes are checked to be TLS.
    first_read: bool,
    /// The handshake was not yet seen to finish (see [`TlsStream::take_handshake_finished`]).
    handshaking: bool,
}

impl fmt::Debug for TlsStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsStream")
            .field("handshaking", &self.conn.is_handshaking())
            .field("incoming", &self.incoming.len())
            .field("outgoing", &self.outgoing.len())
            .field("plain", &(self.plain.len() - self.plain_read))
            .field("peer_closed", &self.peer_closed)
            .finish()
    }
}

/// Appends `bytes` of plaintext to the caller's buffer `out` (from `*filled`) and what does not
/// fit to `spill`.
fn hand_out(bytes: &[u8], out: &mut [u8], filled: &mut usize, spill: &mut Vec<u8>) {
    let fits = bytes.len().min(out.len() - *filled);
    out[*filled..*filled + fits].copy_from_slice(&bytes[..fits]);
    *filled += fits;
    spill.extend_from_slice(&bytes[fits..]);
}

/// Appends to `out` what `fill` writes into a buffer of at least `estimate` bytes; `fill`
/// returns how many it wrote or, when the buffer was too small, how many it needs.
fn append_sized(
    out: &mut Vec<u8>,
    estimate: usize,
    mut fill: impl FnMut(&mut [u8]) -> Result<usize, Option<usize>>,
) -> Result<(), ()> {
    let start = out.len();
    out.resize(start + estimate, 0);
    let written = match fill(&mut out[start..]) {
        Ok(n) => Ok(n),
        Err(Some(required)) => {
            out.resize(start + required, 0);
            fill(&mut out[start..]).map_err(|_| ())
        }
        Err(None) => Err(()),
    };
    match written {
        Ok(n) => {
            out.truncate(start + n);
            Ok(())
        }
        Err(()) => {
            out.truncate(start);
            Err(())
        }
    }
}

/// Appends the handshake record or alert rustls hands over in `EncodeTlsData` to `out`.
fn encode_record(encode: &mut EncodeTlsData<'_, ServerConnectionData>, out: &mut Vec<u8>) -> Result<(), ()> {
    append_sized(out, 4096, |b| {
        encode.encode(b).map_err(|e| match e {
            EncodeError::InsufficientSize(s) => Some(s.required_size),
            EncodeError::AlreadyEncoded => None,
        })
    })
}

/// Encrypts `plain` into records appended to `out`, whose room starts at `estimate` bytes.
fn seal(
    traffic: &mut WriteTraffic<'_, ServerConnectionData>,
    estimate: usize,
    plain: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), ()> {
    append_sized(out, estimate, |b| {
        traffic.encrypt(plain, b).map_err(|e| match e {
            EncryptError::InsufficientSize(s) => Some(s.required_size),
            _ => None,
        })
    })
}

/// What rustls left to do after the records given to [`TlsStream::process`].
enum Processed {
    /// Every complete record was processed; `consumed` bytes of the input can go.
    Done { consumed: usize },
    /// The peer broke the protocol; rustls queued the alert (see [`TlsStream::fail`]).
    Failed(rustls::Error),
}

impl TlsStream {
    fn new(conn: UnbufferedServerConnection) -> TlsStream {
        TlsStream {
            conn,
            incoming: Vec::new(),
            outgoing: Vec::new(),
            plain: Vec::new(),
            plain_read: 0,
            peer_closed: false,
            sent_records: false,
            first_read: true,
            handshaking: true,
        }
    }

    /// Reads plaintext into `buf`, reading from `sock` (and answering the handshake) as needed.
    /// `Ok(0)` is the end of the stream (close_notify, or a TCP close: every framing pushwire
    /// reads notices truncation itself); `WouldBlock` when `sock` has nothing more. A TLS
    /// failure is an `InvalidData` error holding a [`TlsStreamError`]; the connection is then
    /// done.
    pub fn read<S: Read + Write>(&mut self, sock: &mut S, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if self.plain_read < self.plain.len() {
                let n = (self.plain.len() - self.plain_read).min(buf.len());
                buf[..n].copy_from_slice(&self.plain[self.plain_read..self.plain_read + n]);
                self.plain_read += n;
                if self.plain_read == self.plain.len() {
                    self.plain = Vec::new();
                    self.plain_read = 0;
                }
                return Ok(n);
            }
            if self.peer_closed {
                return Ok(0);
            }
            let filled = if self.incoming.is_empty() {
                self.read_into_halves(sock, buf)?
            } else {
                self.read_into_incoming(sock, buf)?
            };
            match filled {
                None => return Ok(0),
                Some(0) => continue,
                Some(n) => return Ok(n),
            }
        }
    }

    /// Reads ciphertext into the back half of `buf` and processes it, plaintext going to the
    /// front half (a record's plaintext is shorter than the record, so it fits). Keeps the
    /// start of a record split across reads in `incoming`. `None` at the end of the stream,
    /// else how much plaintext is in `buf`.
    fn read_into_halves<S: Read + Write>(
        &mut self,
        sock: &mut S,
        buf: &mut [u8],
    ) -> io::Result<Option<usize>> {
        let half = buf.len() / 2;
        let (front, back) = buf.split_at_mut(half);
        let n = sock.read(back)?;
        if n == 0 {
            return Ok(None);
        }
        if self.first_read {
            self.first_read = false;
            if back[0] != HANDSHAKE_RECORD {
                // Best effort: one write of the answer; the caller then closes. What the client
                // sent was read (up to `buf`), so the close is a FIN, not a reset.
                let mut answer = Vec::new();
                write_full(&mut answer, 400, &[("Content-Type", "text/plain")], PLAIN_HTTP_BODY, false, true);
                let _ = sock.write(&answer);
                return Err(TlsStreamError::PlainHttp.into_io());
            }
        }
        let mut filled = 0;
        let consumed = match self.process(&mut back[..n], front, &mut filled) {
            Processed::Done { consumed } => consumed,
            Processed::Failed(error) => return Err(self.fail(sock, error)),
        };
        if consumed < n {
            self.incoming.extend_from_slice(&back[consumed..n]);
        }
        self.flush_while_reading(sock)?;
        Ok(Some(filled))
    }

    /// Reads the rest of a record split across reads into `incoming` (at most one record's
    /// worth per call) and processes what is there, plaintext going to `buf`.
    fn read_into_incoming<S: Read + Write>(
        &mut self,
        sock: &mut S,
        buf: &mut [u8],
    ) -> io::Result<Option<usize>> {
        let held = self.incoming.len();
        if held >= MAX_INCOMING_BYTES {
            let e = rustls::Error::InvalidMessage(rustls::InvalidMessage::MessageTooLarge);
            return Err(TlsStreamError::Protocol(e).into_io());
        }
        self.incoming.resize(held + MAX_RECORD_BYTES.min(MAX_INCOMING_BYTES - held), 0);
        let n = match sock.read(&mut self.incoming[held..]) {
            Ok(n) => n,
            Err(e) => {
                self.incoming.truncate(held);
                return Err(e);
            }
        };
        self.incoming.truncate(held + n);
        if n == 0 {
            return Ok(None);
        }
        let mut incoming = std::mem::take(&mut self.incoming);
        let mut filled = 0;
        let processed = self.process(&mut incoming, buf, &mut filled);
        let consumed = match processed {
            Processed::Done { consumed } => consumed,
            Processed::Failed(error) => return Err(self.fail(sock, error)),
        };
        if consumed < incoming.len() {
            incoming.drain(..consumed);
            self.incoming = incoming;
        }
        self.flush_while_reading(sock)?;
        Ok(Some(filled))
    }

    /// Hands `incoming` to rustls until it needs more: decrypted plaintext goes to `out` (from
    /// `*filled`, the rest to `plain`), handshake messages and alerts it answers with to
    /// `outgoing`.
    fn process(&mut self, incoming: &mut [u8], out: &mut [u8], filled: &mut usize) -> Processed {
        let mut consumed = 0;
        loop {
            let status = self.conn.process_tls_records(&mut incoming[consumed..]);
            let discard = status.discard;
            match status.state {
                Ok(ConnectionState::ReadTraffic(mut traffic)) => {
                    while let Some(record) = traffic.next_record() {
                        match record {
                            Ok(record) => hand_out(record.payload, out, filled, &mut self.plain),
                            Err(error) => return Processed::Failed(error),
                        }
                    }
                }
                Ok(ConnectionState::EncodeTlsData(mut encode)) => {
                    let sealed = encode_record(&mut encode, &mut self.outgoing);
                    self.sent_records = true;
                    if sealed.is_err() {
                        let error = rustls::Error::General("record not encoded".into());
                        return Processed::Failed(error);
                    }
                }
                // The records are in `outgoing`, in order; the caller writes them.
                Ok(ConnectionState::TransmitTlsData(transmit)) => transmit.done(),
                // RFC 8446 §6.1: close_notify ends the peer's data; later records are ignored.
                Ok(ConnectionState::PeerClosed | ConnectionState::Closed) => {
                    self.peer_closed = true;
                    return Processed::Done { consumed: incoming.len() };
                }
                // Every complete record is processed; the rest needs more bytes.
                Ok(ConnectionState::BlockedHandshake | ConnectionState::WriteTraffic(_)) => {
                    return Processed::Done { consumed: consumed + discard };
                }
                // 0-RTT is never offered (`max_early_data_size` is 0): refuse rather than read
                // replayable data.
                Ok(_) => {
                    let error = rustls::Error::General("unexpected TLS state".into());
                    return Processed::Failed(error);
                }
                // rustls queued the alert; `fail` sends it.
                Err(error) => return Processed::Failed(error),
            }
            consumed += discard;
        }
    }

    /// Encodes the alert rustls queued for `e`, writes it if the socket takes it, and makes the
    /// error the caller returns.
    fn fail<S: Write>(&mut self, sock: &mut S, e: rustls::Error) -> io::Error {
        // Only the queued records, popped one per call before rustls looks at any input: the
        // failed input is not handed over again (it would fail again, and alert twice).
        for _ in 0..8 {
            if !self.conn.wants_write() {
                break;
            }
            let status = self.conn.process_tls_records(&mut []);
            let Ok(ConnectionState::EncodeTlsData(mut encode)) = status.state else {
                break;
            };
            let encoded = encode_record(&mut encode, &mut self.outgoing);
            self.sent_records = true;
            if encoded.is_err() {
                break;
            }
        }
        let _ = self.flush_tls(sock);
        TlsStreamError::Protocol(e).into_io()
    }

    /// Runs `f` with the held ciphertext (`incoming`, which rustls may refer to: a handshake
    /// message being joined), then drops the `consumed` bytes `f` returns; frees the buffer
    /// once it is empty.
    fn with_incoming<R>(&mut self, f: impl FnOnce(&mut TlsStream, &mut [u8]) -> (R, usize)) -> R {
        let mut incoming = std::mem::take(&mut self.incoming);
        let (result, consumed) = f(self, &mut incoming);
        if consumed < incoming.len() {
            incoming.drain(..consumed);
            self.incoming = incoming;
        }
        result
    }

    /// Encodes the records rustls has queued (handshake messages, tickets, alerts) into
    /// `outgoing`, without new input (`incoming` is what is held); returns the state it stopped
    /// at and how many bytes of `incoming` can go.
    fn encode_pending(&mut self, incoming: &mut [u8]) -> (Pending, usize) {
        let mut consumed = 0;
        // Each turn encodes one queued record or stops; a flight is a handful of records.
        for _ in 0..64 {
            let status = self.conn.process_tls_records(&mut incoming[consumed..]);
            let discard = status.discard;
            let stop = match status.state {
                Ok(ConnectionState::EncodeTlsData(mut encode)) => {
                    let sealed = encode_record(&mut encode, &mut self.outgoing);
                    self.sent_records = true;
                    sealed.is_err().then_some(Pending::Failed)
                }
                Ok(ConnectionState::TransmitTlsData(transmit)) => {
                    transmit.done();
                    None
                }
                Ok(ConnectionState::PeerClosed) => {
                    self.peer_closed = true;
                    None
                }
                Ok(ConnectionState::WriteTraffic(_)) => Some(Pending::Writable),
                Ok(ConnectionState::BlockedHandshake) => Some(Pending::Handshaking),
                Ok(_) | Err(_) => Some(Pending::Failed),
            };
            consumed += discard;
            if let Some(stop) = stop {
                return (stop, consumed);
            }
        }
        (Pending::Failed, consumed)
    }

    /// Writes `outgoing` after reading: `WouldBlock` is not an error here (the records wait
    /// for writability), any other failure is.
    fn flush_while_reading<S: Write>(&mut self, sock: &mut S) -> io::Result<()> {
        match self.flush_tls(sock) {
            Err(e) if e.kind() != io::ErrorKind::WouldBlock => Err(e),
            _ => Ok(()),
        }
    }

    /// Encrypts plaintext from `bufs` (at most `MAX_SEAL_PLAINTEXT` (64 KiB) bytes) and writes it to
    /// `sock`; returns how much plaintext was taken (which may still wait encrypted when the
    /// socket is full: see [`TlsStream::wants_write`]). `WouldBlock` while earlier records are
    /// still unwritten, or while the handshake is not done.
    pub fn write_vectored<S: Write>(&mut self, sock: &mut S, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.flush_tls(sock)?;
        let total = bufs.iter().map(|b| b.len()).sum::<usize>().min(MAX_SEAL_PLAINTEXT);
        if total == 0 {
            return Ok(0);
        }
        let sealed = self.with_incoming(|this, incoming| this.seal_from(incoming, bufs, total));
        match sealed {
            Ok(()) => {}
            Err(Pending::Handshaking) => {
                self.flush_while_reading(sock)?;
                return Err(io::ErrorKind::WouldBlock.into());
            }
            // The session failed, is closed, or its keys are used up (rustls then queued
            // close_notify): the connection ends.
            Err(_) => {
                let _ = self.flush_tls(sock);
                return Err(io::ErrorKind::BrokenPipe.into());
            }
        }
        self.flush_while_reading(sock)?;
        Ok(total)
    }

    /// Seals `total` bytes of `bufs` into `outgoing` once the handshake is done; `incoming` is
    /// the held ciphertext. Returns how much of `incoming` can go.
    fn seal_from(
        &mut self,
        incoming: &mut [u8],
        bufs: &[IoSlice<'_>],
        total: usize,
    ) -> (Result<(), Pending>, usize) {
        let (pending, consumed) = self.encode_pending(incoming);
        if !matches!(pending, Pending::Writable) {
            return (Err(pending), consumed);
        }
        let status = self.conn.process_tls_records(&mut incoming[consumed..]);
        let consumed = consumed + status.discard;
        let Ok(ConnectionState::WriteTraffic(mut traffic)) = status.state else {
            return (Err(Pending::Failed), consumed);
        };
        let records = total.div_ceil(1 << 14);
        let estimate = total + records * SEAL_OVERHEAD_PER_RECORD;
        let first = bufs.iter().find(|b| !b.is_empty()).map_or(&[][..], |b| &b[..]);
        let sealed = if first.len() >= total {
            // One slice: sealed straight from it.
            seal(&mut traffic, estimate, &first[..total], &mut self.outgoing)
        } else {
            // Several: gathered behind the records' room in `outgoing`, sealed into the room,
            // and the plaintext dropped (one record for them all, as the buffered writer did).
            let start = self.outgoing.len();
            let room = start + estimate;
            self.outgoing.resize(room, 0);
            for b in bufs {
                let take = b.len().min(room + total - self.outgoing.len());
                self.outgoing.extend_from_slice(&b[..take]);
            }
            let (records_room, plain) = self.outgoing.split_at_mut(room);
            match traffic.encrypt(plain, &mut records_room[start..]) {
                Ok(n) => {
                    self.outgoing.truncate(start + n);
                    Ok(())
                }
                Err(EncryptError::InsufficientSize(_)) => {
                    let plain = self.outgoing[room..].to_vec();
                    self.outgoing.truncate(start);
                    seal(&mut traffic, estimate, &plain, &mut self.outgoing)
                }
                Err(_) => {
                    self.outgoing.truncate(start);
                    Err(())
                }
            }
        };
        (sealed.map_err(|()| Pending::Failed), consumed)
    }

    /// Writes the records waiting in `outgoing`; `WouldBlock` when the socket did not take
    /// them all. The buffer is freed once empty.
    pub fn flush_tls<S: Write>(&mut self, sock: &mut S) -> io::Result<()> {
        let mut written = 0;
        let result = loop {
            if written == self.outgoing.len() {
                break Ok(());
            }
            match sock.write(&self.outgoing[written..]) {
                Ok(0) => break Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        if written == self.outgoing.len() {
            self.outgoing = Vec::new();
        } else {
            self.outgoing.drain(..written);
        }
        result
    }

    /// Queues the `close_notify` alert (RFC 8446 §6.1: each party MUST send it before closing
    /// its write side); [`TlsStream::flush_tls`] sends it. Before the server has sent anything
    /// the alert goes in plaintext, as rustls' buffered connection sent it; once the server's
    /// flight is out but the handshake is not done, rustls' unbuffered API offers no way to
    /// seal it, and the close is a bare FIN.
    pub fn send_close_notify(&mut self) {
        self.with_incoming(|this, incoming| {
            let (pending, consumed) = this.encode_pending(incoming);
            if matches!(pending, Pending::Handshaking) && !this.sent_records {
                // RFC 8446 §5.1 and §6: TLSPlaintext { alert(21), legacy_record_version
                // 0x0303, length 2 } holding AlertLevel warning(1), close_notify(0).
                this.outgoing.extend_from_slice(&[21, 3, 3, 0, 2, 1, 0]);
                return ((), consumed);
            }
            if !matches!(pending, Pending::Writable) {
                return ((), consumed);
            }
            let status = this.conn.process_tls_records(&mut incoming[consumed..]);
            let consumed = consumed + status.discard;
            if let Ok(ConnectionState::WriteTraffic(mut traffic)) = status.state {
                let _ = append_sized(&mut this.outgoing, 64, |b| {
                    traffic.queue_close_notify(b).map_err(|e| match e {
                        EncryptError::InsufficientSize(s) => Some(s.required_size),
                        _ => None,
                    })
                });
            }
            ((), consumed)
        })
    }

    /// True while records wait for the socket: register for writability.
    pub fn wants_write(&self) -> bool {
        !self.outgoing.is_empty()
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

    /// Bytes of buffers this stream holds beyond rustls' session: 0 while idle.
    pub fn buffered_bytes(&self) -> usize {
        self.incoming.capacity() + self.outgoing.capacity() + self.plain.capacity()
    }
}

/// Where [`TlsStream::encode_pending`] stopped.
enum Pending {
    /// The handshake is done: application data can be sealed.
    Writable,
    /// The handshake waits for the peer.
    Handshaking,
    /// The session failed or is closed.
    Failed,
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

    /// Reads what the server has until it would block, with a `chunk`-byte buffer.
    fn server_read_all(pair: &mut Pair, chunk: usize) -> Vec<u8> {
        let mut got = Vec::new();
        let mut buf = vec![0u8; chunk];
        loop {
            match pair.server.read(&mut pair.server_sock, &mut buf) {
                Ok(0) => panic!("end of stream"),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return got,
                Err(e) => panic!("server read: {e}"),
            }
        }
    }

    #[test]
    fn an_idle_connection_holds_no_buffers_after_handshake_and_echo() {
        let pki = Pki::new("idle");
        let acceptor = TlsAcceptor::new(pki.pair("server-one"), 16).unwrap();
        for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
            let pair = handshake_and_echo(&pki, &acceptor, version);
            assert_eq!(pair.server.buffered_bytes(), 0, "{version:?}");
        }
    }

    #[test]
    fn rfc8446_5_1_records_split_across_reads_are_joined_then_the_buffer_is_freed() {
        let pki = Pki::new("split");
        let acceptor = TlsAcceptor::new(pki.pair("server-one"), 16).unwrap();
        let mut pair = handshake_and_echo(&pki, &acceptor, &rustls::version::TLS13);
        // 40,000 bytes: three records, of which the first two are full (2^14 bytes).
        let message: Vec<u8> = (0..40_000u32).map(|i| (i % 251) as u8).collect();
        pair.client.writer().write_all(&message).unwrap();
        let mut wire = Vec::new();
        while pair.client.wants_write() {
            pair.client.write_tls(&mut wire).unwrap();
        }
        // Fed in 1,000-byte pieces, read with a buffer smaller than a record.
        let mut got = Vec::new();
        let mut most_held = 0;
        for piece in wire.chunks(1000) {
            pair.client_sock.write_all(piece).unwrap();
            got.extend(server_read_all(&mut pair, 2048));
            most_held = most_held.max(pair.server.buffered_bytes());
        }
        assert_eq!(got, message);
        assert!(most_held > 0 && most_held <= MAX_INCOMING_BYTES + (1 << 14), "{most_held}");
        assert_eq!(pair.server.buffered_bytes(), 0);
    }

    #[test]
    fn rfc8446_5_1_a_client_hello_fragmented_over_two_records_is_joined_across_reads() {
        let pki = Pki::new("fragmented");
        let acceptor = TlsAcceptor::new(pki.pair("server-one"), 16).unwrap();
        let mut pair = Pair::new(&acceptor, pki.client(&[&rustls::version::TLS13], &[b"http/1.1"]));
        let mut hello = Vec::new();
        pair.client.write_tls(&mut hello).unwrap();
        assert_eq!(hello[0], HANDSHAKE_RECORD);
        // RFC 8446 §5.1: a handshake message may be fragmented across records.
        let body = &hello[5..];
        let (one, two) = body.split_at(body.len() / 2);
        let record = |part: &[u8]| {
            let mut r = vec![HANDSHAKE_RECORD, 3, 1, (part.len() >> 8) as u8, part.len() as u8];
            r.extend_from_slice(part);
            r
        };
        pair.client_sock.write_all(&record(one)).unwrap();
        let mut buf = [0u8; 4096];
        let err = pair.server.read(&mut pair.server_sock, &mut buf).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        assert!(pair.server.buffered_bytes() > 0, "the first fragment is held");
        // Writing and closing meanwhile hand rustls the held fragment again, not nothing.
        let err = pair.server.write_vectored(&mut pair.server_sock, &[IoSlice::new(b"early")]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        pair.client_sock.write_all(&record(two)).unwrap();
        pair.client.writer().write_all(b"joined").unwrap();
        pair.until(|p| p.server_got == b"joined");
        assert_eq!(pair.server.alpn_protocol(), Some(&b"http/1.1"[..]));
        assert_eq!(pair.server.buffered_bytes(), 0);
    }

    #[test]
    fn a_large_vectored_write_is_bounded_per_call_waits_for_the_socket_and_then_frees() {
        let pki = Pki::new("write");
        let acceptor = TlsAcceptor::new(pki.pair("server-one"), 16).unwrap();
        for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
            let mut pair = handshake_and_echo(&pki, &acceptor, version);
            let body: Vec<u8> = (0..300_000u32).map(|i| (i % 241) as u8).collect();
            let mut sent = 0;
            let mut got = Vec::new();
            let mut saw_backlog = false;
            for _ in 0..10_000 {
                if got.len() == body.len() {
                    break;
                }
                // Three slices per call, as the event loop writes a frame header and payloads.
                let rest = &body[sent..];
                let (a, b) = rest.split_at(rest.len().min(7));
                let (b, c) = b.split_at(b.len().min(40_000));
                match pair.server.write_vectored(
                    &mut pair.server_sock,
                    &[IoSlice::new(a), IoSlice::new(b), IoSlice::new(c)],
                ) {
                    Ok(n) => {
                        assert!(n <= MAX_SEAL_PLAINTEXT);
                        sent += n;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        saw_backlog = true;
                        let _ = pair.server.flush_tls(&mut pair.server_sock);
                    }
                    Err(e) => panic!("{e}"),
                }
                if pair.server.wants_write() {
                    saw_backlog = true;
                    // Sealed records and, gathered behind them, the plaintext they came from.
                    let bound = 2 * MAX_SEAL_PLAINTEXT + 4 * SEAL_OVERHEAD_PER_RECORD + 4096;
                    assert!(pair.server.buffered_bytes() <= bound, "{}", pair.server.buffered_bytes());
                }
                // The client reads a little each turn.
                if pair.client.read_tls(&mut pair.client_sock).is_ok() {
                    pair.client.process_new_packets().unwrap();
                    got.extend(pair.client_read_all());
                }
            }
            assert_eq!(got.len(), body.len(), "{version:?}");
            assert!(got == body, "{version:?}");
            assert!(saw_backlog, "the socket never filled: the test did not test waiting");
            assert_eq!(pair.server.buffered_bytes(), 0);
        }
    }

    #[test]
    fn rfc8446_6_1_close_notify_both_ways() {
        let pki = Pki::new("close");
        let acceptor = TlsAcceptor::new(pki.pair("server-one"), 16).unwrap();
        // The client closes: the server's stream ends, after the data before it.
        let mut pair = handshake_and_echo(&pki, &acceptor, &rustls::version::TLS13);
        pair.client.writer().write_all(b"last").unwrap();
        pair.client.send_close_notify();
        pair.server_got.clear();
        pair.until(|p| p.server_end.is_some());
        assert_eq!(pair.server_got, b"last");
        assert!(matches!(pair.server_end, Some(Ok(0))));
        // The server closes: the client sees close_notify.
        let mut pair = handshake_and_echo(&pki, &acceptor, &rustls::version::TLS12);
        pair.server.send_close_notify();
        pair.server.flush_tls(&mut pair.server_sock).unwrap();
        pair.client.read_tls(&mut pair.client_sock).unwrap();
        let state = pair.client.process_new_packets().unwrap();
        assert!(state.peer_has_closed());
        assert_eq!(pair.server.buffered_bytes(), 0);
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
