//! The process's open-file limit: raised at start, and what it allows in connections.
//!
//! Implements: raising the soft `RLIMIT_NOFILE` to the hard limit (getrlimit(2), setrlimit(2);
//! an unlimited hard limit is capped at `/proc/sys/fs/nr_open`, the most the kernel lets a
//! process have), so a server started from a shell with the usual soft limit of 1,024 can hold
//! as many connections as the machine was configured for.
//!
//! Does not: raise the hard limit (only root can: `ulimit -Hn`, `LimitNOFILE=` in a systemd
//! unit), or change system-wide settings (`fs.file-max`, `fs.nr_open`). The connection limit
//! derived from the result is [`crate::net::limits::max_connections_for_open_files`].

use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};

/// Used when the hard limit is unlimited and `/proc/sys/fs/nr_open` cannot be read: Linux's
/// default `nr_open`.
const DEFAULT_NR_OPEN: u64 = 1 << 20;

/// The open-file limits before and after [`raise_to_hard_limit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenFiles {
    /// The soft limit the process started with.
    pub soft_before: u64,
    /// The soft limit now in force.
    pub soft: u64,
    /// The hard limit (capped at `nr_open` when unlimited).
    pub hard: u64,
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit. Returns the limits, and the error text
/// when raising failed (the soft limit is then unchanged).
pub fn raise_to_hard_limit() -> (OpenFiles, Option<String>) {
    let limit = getrlimit(Resource::Nofile);
    let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(DEFAULT_NR_OPEN);
    let hard = limit.maximum.unwrap_or(nr_open);
    let soft_before = limit.current.unwrap_or(hard);
    let mut files = OpenFiles { soft_before, soft: soft_before, hard };
    if soft_before >= hard {
        return (files, None);
    }
    match setrlimit(Resource::Nofile, Rlimit { current: Some(hard), maximum: limit.maximum }) {
        Ok(()) => {
            files.soft = hard;
            (files, None)
        }
        Err(e) => (files, Some(format!("cannot raise RLIMIT_NOFILE from {soft_before} to {hard}: {e}"))),
    }
}
