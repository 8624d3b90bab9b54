//! A tokio-tungstenite peer for `benches/compare.sh`: the same endpoints `pushwire bench` drives.
//!
//! Implements: `GET /echo` (WebSocket) echoes text and binary messages, written the way
//! tokio-tungstenite's own `echo-server` example does (`read.forward(write)`, which batches
//! writes while more input is ready); `GET /channels/NAME` (WebSocket) subscribes to NAME;
//! `POST /channels/NAME` (HTTP/1.1 keep-alive, Content-Length bodies) sends the body as a text
//! message to every subscriber of NAME through a `tokio::sync::broadcast` channel and answers
//! `201`. One tokio multi-thread runtime with a worker per core.
//!
//! With `--tls CERT.pem KEY.pem`, every connection is TLS first (tokio-rustls, rustls' `ring`
//! provider and its default TLS 1.2/1.3 settings, ALPN `http/1.1`, as pushwire's server) and
//! serves the WebSocket endpoints only (no publishing): the TLS echo of `benches/compare.sh`.
//!
//! Does not: keep history, chunked request bodies, pipelining, or anything but what the
//! benchmark needs. Not part of pushwire: its own Cargo project and workspace.
//!
//! Usage: `tt-peer 127.0.0.1:PORT [--tls CERT.pem KEY.pem]`; prints `tt-peer listening on
//! http://ADDR` (or `https://ADDR`) when ready.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{future, SinkExt, StreamExt, TryStreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::Message;

/// Largest request head read, in bytes.
const MAX_HEAD_BYTES: usize = 8 * 1024;
/// Largest publish body, in bytes.
const MAX_BODY_BYTES: usize = 64 * 1024;
/// Messages a subscriber may fall behind before it misses some (the bench counts those).
const BROADCAST_CAPACITY: usize = 16 * 1024;

type Channels = Arc<Mutex<HashMap<String, broadcast::Sender<Message>>>>;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let addr = args.get(1).cloned().unwrap_or_else(|| "127.0.0.1:0".into());
    let acceptor = match args.get(2).map(String::as_str) {
        Some("--tls") if args.len() == 5 => Some(tls_acceptor(&args[3], &args[4])),
        None => None,
        _ => panic!("usage: tt-peer ADDR [--tls CERT.pem KEY.pem]"),
    };
    let listener = TcpListener::bind(&addr).await.expect("bind");
    let scheme = if acceptor.is_some() { "https" } else { "http" };
    println!("tt-peer listening on {scheme}://{}", listener.local_addr().expect("local addr"));
    let channels: Channels = Arc::default();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // EMFILE and the like: wait a little instead of spinning.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        match &acceptor {
            Some(acceptor) => {
                let (acceptor, channels) = (acceptor.clone(), channels.clone());
                tokio::spawn(async move {
                    if let Ok(stream) = acceptor.accept(stream).await {
                        websocket(stream, channels).await;
                    }
                });
            }
            None => {
                tokio::spawn(serve(stream, channels.clone()));
            }
        }
    }
}

/// The TLS server configuration: the certificate chain and key from PEM files.
fn tls_acceptor(cert_path: &str, key_path: &str) -> TlsAcceptor {
    let certs = CertificateDer::pem_file_iter(cert_path)
        .expect("certificate file")
        .collect::<Result<Vec<_>, _>>()
        .expect("certificate PEM");
    let key = PrivateKeyDer::from_pem_file(key_path).expect("key PEM");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("certificate and key");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    TlsAcceptor::from(Arc::new(config))
}

/// Peeks at the request head (leaving it in the socket) and hands the connection on.
async fn serve(stream: TcpStream, channels: Channels) {
    let mut buf = vec![0u8; MAX_HEAD_BYTES];
    for _ in 0..1000 {
        let Ok(n) = stream.peek(&mut buf).await else { return };
        if n == 0 {
            return;
        }
        if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
            if buf.starts_with(b"POST ") {
                publisher(stream, channels).await;
            } else {
                websocket(stream, channels).await;
            }
            return;
        }
        if n == buf.len() {
            return;
        }
        // Only part of the head so far; peek again shortly.
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// A WebSocket: `/echo` echoes, `/channels/NAME` subscribes.
async fn websocket<S: AsyncRead + AsyncWrite + Unpin>(stream: S, channels: Channels) {
    let mut path = String::new();
    let callback = |request: &Request, response: Response| {
        path = request.uri().path().to_string();
        Ok(response)
    };
    let Ok(ws) = tokio_tungstenite::accept_hdr_async(stream, callback).await else { return };
    let (mut write, read) = ws.split();
    if path == "/echo" {
        let _ = read.try_filter(|m| future::ready(m.is_text() || m.is_binary())).forward(write).await;
        return;
    }
    let Some(name) = path.strip_prefix("/channels/") else {
        let _ = write.close().await;
        return;
    };
    let mut messages = sender(&channels, name).subscribe();
    let mut read = read;
    loop {
        tokio::select! {
            message = messages.recv() => match message {
                Ok(message) => {
                    if write.send(message).await.is_err() {
                        return;
                    }
                }
                // Fell behind: those messages are lost, as the bench will report.
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return,
            },
            incoming = read.next() => match incoming {
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                Some(Ok(_)) => {}
            },
        }
    }
}

fn sender(channels: &Channels, name: &str) -> broadcast::Sender<Message> {
    let mut channels = channels.lock().expect("channels lock");
    channels.entry(name.to_string()).or_insert_with(|| broadcast::channel(BROADCAST_CAPACITY).0).clone()
}

/// HTTP/1.1 keep-alive publishes: `POST /channels/NAME` with a Content-Length body.
async fn publisher(mut stream: TcpStream, channels: Channels) {
    let mut buf = Vec::with_capacity(MAX_HEAD_BYTES);
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            if buf.len() > MAX_HEAD_BYTES {
                return;
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let path = head.split(' ').nth(1).unwrap_or("").to_string();
        let length = head
            .lines()
            .find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("content-length").then(|| value.trim().parse::<usize>().ok())?
            })
            .unwrap_or(0);
        if length > MAX_BODY_BYTES {
            let _ = stream.write_all(b"HTTP/1.1 413 Content Too Large\r\nConnection: close\r\n\r\n").await;
            return;
        }
        while buf.len() < head_end + length {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body: Vec<u8> = buf.drain(..head_end + length).skip(head_end).collect();
        let answer: &[u8] = match (path.strip_prefix("/channels/"), String::from_utf8(body)) {
            (Some(name), Ok(text)) => {
                // No subscribers is not an error for a broadcast.
                let _ = sender(&channels, name).send(Message::text(text));
                b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n"
            }
            _ => b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n",
        };
        if stream.write_all(answer).await.is_err() {
            return;
        }
    }
}
