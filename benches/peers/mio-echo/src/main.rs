//! A plain mio TCP echo for `benches/compare.sh`: the machine's limit for `pushwire bench echo`.
//!
//! Implements: one event loop per core, each with its own listener on the same address
//! (SO_REUSEPORT, as pushwire does), writing back every byte it reads in the order read. The
//! load generator's `--protocol raw` frames each message with a 4-byte big-endian length; an
//! echo that returns the bytes unchanged returns the frames unchanged, so no parsing is needed
//! and what is measured is the cost of the sockets alone.
//!
//! Does not: parse, buffer more than one read per connection, or speak anything but TCP.
//!
//! Usage: `mio-echo 127.0.0.1:PORT [THREADS]`; prints `mio-echo listening on ADDR` when ready.

use std::io::{self, Read, Write};
use std::net::SocketAddr;

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use socket2::{Domain, Socket, Type};

const LISTENER: Token = Token(usize::MAX);
const READ_BYTES: usize = 64 * 1024;

/// One connection: bytes read and not yet written back.
struct Conn {
    stream: TcpStream,
    pending: Vec<u8>,
}

fn main() {
    let addr: SocketAddr =
        std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:0".into()).parse().expect("addr");
    let threads: usize = std::env::args()
        .nth(2)
        .map(|t| t.parse().expect("threads"))
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let first = listen(addr).expect("listen");
    let addr = first.local_addr().expect("local addr");
    let mut listeners = vec![first];
    for _ in 1..threads {
        listeners.push(listen(addr).expect("listen"));
    }
    println!("mio-echo listening on {addr}");
    let handles: Vec<_> = listeners.into_iter().map(|l| std::thread::spawn(move || serve(l))).collect();
    for handle in handles {
        if let Ok(Err(e)) = handle.join() {
            eprintln!("mio-echo: {e}");
        }
    }
}

fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(TcpListener::from_std(socket.into()))
}

fn serve(mut listener: TcpListener) -> io::Result<()> {
    let mut poll = Poll::new()?;
    poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
    let mut events = Events::with_capacity(1024);
    let mut conns: Vec<Option<Conn>> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let mut buf = vec![0u8; READ_BYTES];
    loop {
        match poll.poll(&mut events, None) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        for event in &events {
            if event.token() == LISTENER {
                while let Ok((mut stream, _)) = listener.accept() {
                    let _ = stream.set_nodelay(true);
                    let index = free.pop().unwrap_or(conns.len());
                    poll.registry().register(
                        &mut stream,
                        Token(index),
                        Interest::READABLE | Interest::WRITABLE,
                    )?;
                    let conn = Some(Conn { stream, pending: Vec::new() });
                    if index == conns.len() {
                        conns.push(conn);
                    } else {
                        conns[index] = conn;
                    }
                }
                continue;
            }
            let index = event.token().0;
            let Some(conn) = conns.get_mut(index).and_then(Option::as_mut) else { continue };
            if echo(conn, &mut buf).is_err() {
                if let Some(mut conn) = conns[index].take() {
                    let _ = poll.registry().deregister(&mut conn.stream);
                    free.push(index);
                }
            }
        }
    }
}

/// Writes back what is pending, then reads and writes back until the socket would block.
/// `Err` when the connection is over.
fn echo(conn: &mut Conn, buf: &mut [u8]) -> io::Result<()> {
    loop {
        while !conn.pending.is_empty() {
            match conn.stream.write(&conn.pending) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    conn.pending.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        match conn.stream.read(buf) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => conn.pending.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}
