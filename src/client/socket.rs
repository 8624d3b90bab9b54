//! The blocking socket steps every client driver shares: connecting to a URL's host within a
//! deadline, the time left until a deadline, and turning I/O errors into [`Error`]s (a timeout,
//! a TLS failure, or the I/O error itself).
//!
//! Does not: speak any protocol (the drivers in `ws.rs`, `http.rs` and `tls.rs` do).

use std::io;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use super::{Error, Url};

/// A timeout becomes [`Error::Timeout`], a TLS failure [`Error::Tls`]; anything else stays an
/// I/O error.
pub(super) fn io_error(e: io::Error, waiting_for: &'static str) -> Error {
    if let Some(tls) = tls_error(&e) {
        return tls;
    }
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Error::Timeout { waiting_for },
        _ => Error::Io(e),
    }
}

/// Time left until `deadline`, or the timeout error when none is.
pub(super) fn remaining(deadline: Instant, waiting_for: &'static str) -> Result<Duration, Error> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(Error::Timeout { waiting_for });
    }
    Ok(left)
}

/// Connects to the first address of `url` that answers before `deadline`.
pub(super) fn connect_tcp(url: &Url, deadline: Instant) -> Result<TcpStream, Error> {
    let addrs: Vec<SocketAddr> = (url.host.as_str(), url.port).to_socket_addrs()?.collect();
    let mut last = None;
    for addr in addrs {
        let left = remaining(deadline, "the TCP connection")?;
        match TcpStream::connect_timeout(&addr, left) {
            Ok(stream) => return Ok(stream),
            Err(e) => last = Some(io_error(e, "the TCP connection")),
        }
    }
    Err(last.unwrap_or_else(|| {
        Error::Io(io::Error::new(io::ErrorKind::NotFound, format!("{} resolved to no address", url.host)))
    }))
}

/// The `rustls::Error` inside an I/O error from rustls, as [`Error::Tls`].
pub(super) fn tls_error(e: &io::Error) -> Option<Error> {
    let inner = e.get_ref()?.downcast_ref::<rustls::Error>()?;
    Some(Error::Tls(inner.to_string()))
}
