//! What the load generator asks of the operating system: file descriptors, source addresses,
//! non-blocking connects and another process's memory.
//!
//! Implements: raising the soft `RLIMIT_NOFILE` to the hard limit (getrlimit(2), setrlimit(2)),
//! a non-blocking connect from a chosen loopback source address (bind(2) then connect(2), so
//! more than one port range of connections fits), and `VmRSS` from `/proc/PID/status` (proc(5)).
//!
//! Does not: change system-wide settings (`ip_local_port_range`, `somaxconn`, the hard limit);
//! it says which one is in the way instead.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use rustix::process::{getrlimit, setrlimit, Resource};
use socket2::{Domain, Socket, Type};

/// File descriptors the process needs besides its connections (stdio, the poll, the publisher).
const SPARE_FDS: u64 = 32;

/// Connections that one source address is given (the default ephemeral port range on Linux,
/// 32768-60999, holds 28,232 ports; leave some for everything else on the machine).
pub const CONNECTIONS_PER_SOURCE_ADDR: usize = 25_000;

/// Makes room for `connections` open sockets: raises the soft RLIMIT_NOFILE up to the hard
/// limit when needed. Returns the soft limit now in force, or a message saying what to raise.
pub fn ensure_open_files(connections: usize) -> Result<u64, String> {
    let needed = connections as u64 + SPARE_FDS;
    let limit = getrlimit(Resource::Nofile);
    let soft = limit.current.unwrap_or(u64::MAX);
    if soft >= needed {
        return Ok(soft);
    }
    let hard = limit.maximum.unwrap_or(u64::MAX);
    if hard < needed {
        return Err(format!(
            "{connections} connections need {needed} file descriptors but RLIMIT_NOFILE is {soft} \
             (hard limit {hard}); raise the hard limit (e.g. `ulimit -Hn {needed}` as root, or \
             LimitNOFILE in a systemd unit) and run again"
        ));
    }
    setrlimit(Resource::Nofile, rustix::process::Rlimit { current: Some(needed), maximum: limit.maximum })
        .map_err(|e| format!("cannot raise RLIMIT_NOFILE from {soft} to {needed}: {e}"))?;
    Ok(needed)
}

/// The soft "Max open files" of process `pid` from `/proc/PID/limits`, if readable.
pub fn open_files_limit_of(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..].split_whitespace().next()?.parse().ok()
}

/// Resident memory of process `pid` in bytes: `VmRSS` of `/proc/PID/status` (given in kB).
pub fn resident_bytes(pid: u32) -> Result<u64, String> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {path}: {e}"))?;
    let line = text.lines().find(|l| l.starts_with("VmRSS:")).ok_or_else(|| format!("no VmRSS in {path}"))?;
    let kib: u64 = line["VmRSS:".len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .map_err(|_| format!("unreadable VmRSS line in {path}: {line:?}"))?;
    Ok(kib * 1024)
}

/// Source addresses to spread `connections` over: none (the kernel picks) when they fit in one
/// port range or `target` is not loopback, else 127.0.0.1, 127.0.0.2, … as many as needed.
/// `wanted` overrides the count (0 means automatic).
pub fn source_addrs(target: SocketAddr, connections: usize, wanted: usize) -> Vec<IpAddr> {
    let count = if wanted > 0 { wanted } else { connections.div_ceil(CONNECTIONS_PER_SOURCE_ADDR) };
    if !target.ip().is_loopback() || !target.is_ipv4() || (wanted == 0 && count <= 1) {
        return Vec::new();
    }
    (1..=count.min(254) as u8).map(|last| IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))).collect()
}

/// Starts a non-blocking connect to `target`, from `source` when given (port chosen by the
/// kernel). Completion shows as writability; then check `take_error`.
pub fn connect_from(source: Option<IpAddr>, target: SocketAddr) -> io::Result<mio::net::TcpStream> {
    let socket = Socket::new(Domain::for_address(target), Type::STREAM, None)?;
    socket.set_nonblocking(true)?;
    socket.set_tcp_nodelay(true)?;
    if let Some(ip) = source {
        socket.bind(&SocketAddr::new(ip, 0).into())?;
    }
    match socket.connect(&target.into()) {
        Ok(()) => {}
        Err(e) if rustix::io::Errno::from_io_error(&e) == Some(rustix::io::Errno::INPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(mio::net::TcpStream::from_std(socket.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_addrs_only_when_one_port_range_is_not_enough() {
        let local: SocketAddr = "127.0.0.1:80".parse().unwrap();
        assert!(source_addrs(local, 100, 0).is_empty());
        let many = source_addrs(local, 60_000, 0);
        assert_eq!(many.len(), 3);
        assert_eq!(many[2], IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3)));
        assert_eq!(source_addrs(local, 10, 2).len(), 2);
        assert!(source_addrs("10.0.0.1:80".parse().unwrap(), 60_000, 0).is_empty());
    }

    #[test]
    fn proc_status_of_this_process_has_a_resident_size() {
        assert!(resident_bytes(std::process::id()).unwrap() > 0);
        assert!(open_files_limit_of(std::process::id()).is_some());
        assert!(ensure_open_files(1).is_ok());
    }
}
