//! The Redis server's identity from `INFO`: its `run_id`, `master_replid` and role, and the
//! [`Incarnation`] the channel script folds into every epoch.
//!
//! Implements: the `INFO` command and the parsing of its reply (a bulk string of
//! `field:value` lines under `# Section` headers, CRLF-separated; see
//! <https://redis.io/docs/latest/commands/info/>), and the incarnation digest.
//!
//! Why both fields: `run_id` is "a random value identifying the Redis server", drawn anew at
//! every process start, so it changes on a restart from RDB or AOF. It does not change when a
//! running replica is promoted (`REPLICAOF NO ONE`, a Sentinel or Cluster failover), which is
//! when `master_replid` changes (every promotion draws a new replication id). A master that
//! restarted gets a new `master_replid` too (checked against Redis 7.0), but a restart is
//! covered by `run_id` whatever a version does. Together they change whenever the data a
//! server serves may have been rolled back relative to what a script last wrote; see
//! [`crate::redis::script`] for the guarantee.
//!
//! Does not: send `INFO` (the broker does, on every new connection before the first script
//! call on it, and every few seconds to notice a changed incarnation; it reconnects when a
//! reply says `READONLY`, `LOADING` or `MASTERDOWN`, or the incarnation changed).

use std::fmt;

use sha1::{Digest, Sha1};

use crate::redis::resp::{Command, Value};
use crate::redis::ReplyError;

/// `INFO` with the default sections (which include `server` and `replication`, in every
/// Redis version; asking for two named sections at once needs Redis 7).
pub fn info_command() -> Command {
    Command::new("INFO")
}

/// What pushwire reads from `INFO`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerInfo {
    /// `redis_version`.
    pub redis_version: String,
    /// `run_id`: random per process start (40 hex digits in Redis).
    pub run_id: String,
    /// `master_replid`: the replication id, new at every promotion (empty before Redis 4.0,
    /// which does not report it).
    pub master_replid: String,
    /// `role`: `master` or `slave`. Scripts write, so the broker refuses a connection whose
    /// role is not `master`.
    pub role: String,
}

impl ServerInfo {
    /// True when the server accepts writes.
    pub fn is_master(&self) -> bool {
        self.role == "master"
    }

    /// The incarnation of this server's data.
    pub fn incarnation(&self) -> Incarnation {
        let digest = Sha1::new()
            .chain_update(&self.run_id)
            .chain_update(":")
            .chain_update(&self.master_replid)
            .finalize();
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        Incarnation(u64::from_be_bytes(first))
    }
}

/// Longest field value kept from `INFO`, in bytes (the ones read are at most 40).
const MAX_FIELD_BYTES: usize = 128;

/// Parses the `INFO` reply. Unknown fields and sections are skipped; `run_id`, `role` and
/// `redis_version` are required ([`ReplyError::InfoFieldMissing`]).
pub fn parse_info(value: &Value) -> Result<ServerInfo, ReplyError> {
    ReplyError::check(value)?;
    let text = value.as_bytes().ok_or(ReplyError::Unexpected("INFO text"))?;
    let mut info = ServerInfo {
        redis_version: String::new(),
        run_id: String::new(),
        master_replid: String::new(),
        role: String::new(),
    };
    for line in text.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|&b| b == b':') else { continue };
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        let slot = match name {
            b"redis_version" => &mut info.redis_version,
            b"run_id" => &mut info.run_id,
            b"master_replid" => &mut info.master_replid,
            b"role" => &mut info.role,
            _ => continue,
        };
        if value.is_empty() || value.len() > MAX_FIELD_BYTES || !value.iter().all(u8::is_ascii_graphic) {
            return Err(ReplyError::Unexpected("a printable INFO field of at most 128 bytes"));
        }
        // Printable ASCII, checked just above.
        *slot = String::from_utf8_lossy(value).into_owned();
    }
    for (name, field) in
        [("run_id", &info.run_id), ("role", &info.role), ("redis_version", &info.redis_version)]
    {
        if field.is_empty() {
            return Err(ReplyError::InfoFieldMissing(name));
        }
    }
    Ok(info)
}

/// The digest of one server incarnation (`run_id` and `master_replid`): the first 64 bits of
/// their SHA-1, written as 16 hex digits in the channel meta (`inc`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Incarnation(u64);

impl Incarnation {
    /// An incarnation with this digest (for tests, and for a broker restoring one it logged).
    pub fn from_raw(digest: u64) -> Incarnation {
        Incarnation(digest)
    }

    /// The digest.
    pub fn raw(self) -> u64 {
        self.0
    }
}

impl fmt::Display for Incarnation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "# Server\r\nredis_version:7.0.15\r\nredis_mode:standalone\r\nrun_id:b99b3bde9ecf1ca19d072f9a042bbd53a26931cd\r\ntcp_port:6379\r\n\r\n# Replication\r\nrole:master\r\nconnected_slaves:0\r\nmaster_replid:791fe738f0ea11eaeeca46b9c02069f031be7a2d\r\nmaster_replid2:0000000000000000000000000000000000000000\r\n";

    fn info(text: &str) -> Result<ServerInfo, ReplyError> {
        parse_info(&Value::BulkString(text.as_bytes().to_vec()))
    }

    #[test]
    fn info_fields_are_read() {
        let parsed = info(SAMPLE).unwrap();
        assert_eq!(parsed.redis_version, "7.0.15");
        assert_eq!(parsed.run_id, "b99b3bde9ecf1ca19d072f9a042bbd53a26931cd");
        assert_eq!(parsed.master_replid, "791fe738f0ea11eaeeca46b9c02069f031be7a2d");
        assert!(parsed.is_master());
        assert_eq!(info_command().to_bytes(), b"*1\r\n$4\r\nINFO\r\n");
    }

    #[test]
    fn incarnation_changes_with_either_id() {
        let base = info(SAMPLE).unwrap();
        let restarted = ServerInfo { run_id: "a".repeat(40), ..base.clone() };
        let promoted = ServerInfo { master_replid: "b".repeat(40), ..base.clone() };
        let same = base.incarnation();
        assert_eq!(same, info(SAMPLE).unwrap().incarnation());
        assert_ne!(same, restarted.incarnation());
        assert_ne!(same, promoted.incarnation());
        assert_eq!(same.to_string().len(), 16);
        assert_eq!(Incarnation::from_raw(0xab).to_string(), "00000000000000ab");
        // The digest is SHA-1("run_id:master_replid"), first 8 bytes.
        let digest = Sha1::digest(
            b"b99b3bde9ecf1ca19d072f9a042bbd53a26931cd:791fe738f0ea11eaeeca46b9c02069f031be7a2d",
        );
        assert_eq!(same.raw().to_be_bytes(), digest[..8]);
    }

    #[test]
    fn info_missing_or_odd_fields() {
        assert_eq!(
            info("# Server\r\nredis_version:7\r\nrole:master\r\n"),
            Err(ReplyError::InfoFieldMissing("run_id"))
        );
        assert_eq!(info("run_id:x\r\nredis_version:7\r\n"), Err(ReplyError::InfoFieldMissing("role")));
        assert!(matches!(info("run_id:a b\r\n"), Err(ReplyError::Unexpected(_))));
        assert!(matches!(info(&format!("run_id:{}\r\n", "a".repeat(129))), Err(ReplyError::Unexpected(_))));
        // LF-only lines are read too; master_replid may be absent (Redis before 4.0).
        let old = info("redis_version:3.2\nrun_id:abc\nrole:master\n").unwrap();
        assert_eq!(old.master_replid, "");
        assert!(matches!(parse_info(&Value::Integer(1)), Err(ReplyError::Unexpected(_))));
    }
}
