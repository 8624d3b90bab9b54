//! Redis key and pub/sub channel names for a pushwire channel, hash-tagged by channel.
//!
//! Implements: the naming scheme (below) and the [Redis Cluster hash tag rule][tags] with its
//! key-to-slot function ([`key_slot`]: CRC16-XMODEM of the tag, modulo 16 384), so every key
//! and the sharded pub/sub channel of one pushwire channel map to the same slot.
//!
//! | name | Redis type | holds |
//! |---|---|---|
//! | `PREFIX:{CHANNEL}:meta` | hash | `epoch` (16 hex digits), `offset` (last offset), `inc` (the [`Incarnation`](crate::redis::info::Incarnation) that created the epoch) |
//! | `PREFIX:{CHANNEL}:hist` | stream | the history: entry id `OFFSET-0`, one field `m` holding the message frame |
//! | `PREFIX:{CHANNEL}:pres` | sorted set | presence: member → expiry time (ms, Redis clock) |
//! | `PREFIX:{CHANNEL}:pinfo` | hash | presence: member → user id and info |
//! | `PREFIX:{CHANNEL}` | pub/sub channel | message, join and leave frames |
//! | `PREFIX:shard` | string | this server's place in the `--redis` list ([`crate::redis::shard::claim_key`]; per server, no tag) |
//!
//! The tag rule ([cluster spec][tags]): "if the key contains a `{` character, and if there is a
//! `}` character on its right, and if there are one or more characters between the first
//! occurrence of `{` and the first occurrence of `}`, then instead of hashing the key, only
//! what is between the first occurrence of `{` and the following first occurrence of `}` is
//! hashed." A [`ChannelName`] is made of `A-Z a-z 0-9 . _ ~ -` only, so it never holds a
//! brace and `{CHANNEL}` is always exactly the tag; the prefix is refused if it holds one
//! ([`Namespace::new`]), so it can never open a tag of its own first.
//!
//! Does not: talk to Redis, or know what the values mean (see [`crate::redis::script`],
//! [`crate::redis::presence`]).
//!
//! [tags]: https://redis.io/docs/latest/operate/oss_and_stack/reference/cluster-spec/#hash-tags

use std::sync::Arc;

use crate::hub::ChannelName;

/// The prefix of every key and pub/sub channel of one pushwire deployment (several may share
/// a Redis under different prefixes). Cloning is a reference count.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Namespace(Arc<str>);

impl Namespace {
    /// Longest prefix, in bytes.
    pub const MAX_BYTES: usize = 64;

    /// A prefix of 1 to 64 bytes of printable ASCII without space, `{` or `}`, so it never
    /// opens a hash tag before the channel's (`app:pushwire` is fine).
    pub fn new(prefix: &str) -> Result<Namespace, String> {
        let valid = (1..=Self::MAX_BYTES).contains(&prefix.len())
            && prefix.bytes().all(|b| b.is_ascii_graphic() && !matches!(b, b'{' | b'}'));
        if !valid {
            return Err(format!(
                "redis key prefix {prefix:?} must be 1-64 printable ASCII bytes without space or braces"
            ));
        }
        Ok(Namespace(Arc::from(prefix)))
    }

    /// The prefix text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The pushwire channel whose pub/sub channel is `name` (`PREFIX:{CHANNEL}`), or `None` for
    /// a name this namespace did not make.
    pub fn channel_of_pubsub(&self, name: &[u8]) -> Option<ChannelName> {
        let rest = name.strip_prefix(self.0.as_bytes())?.strip_prefix(b":{")?;
        let inner = rest.strip_suffix(b"}")?;
        ChannelName::parse(std::str::from_utf8(inner).ok()?).ok()
    }
}

impl Default for Namespace {
    /// The prefix `pushwire`.
    fn default() -> Namespace {
        Namespace(Arc::from("pushwire"))
    }
}

/// Every Redis name of one pushwire channel (see the module docs for the scheme).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelKeys {
    /// The meta hash: epoch, last offset, incarnation.
    pub meta: String,
    /// The history stream.
    pub history: String,
    /// The presence sorted set (member → expiry, ms).
    pub presence: String,
    /// The presence info hash (member → user id and info).
    pub presence_info: String,
    /// The pub/sub channel.
    pub pubsub: String,
}

impl ChannelKeys {
    /// The names of `channel` under `namespace`.
    pub fn new(namespace: &Namespace, channel: &ChannelName) -> ChannelKeys {
        let base = format!("{}:{{{}}}", namespace.as_str(), channel.as_str());
        ChannelKeys {
            meta: format!("{base}:meta"),
            history: format!("{base}:hist"),
            presence: format!("{base}:pres"),
            presence_info: format!("{base}:pinfo"),
            pubsub: base,
        }
    }
}

/// The part of `key` Redis Cluster hashes: the hash tag if the key has one, else the whole key.
pub fn hash_tag(key: &[u8]) -> &[u8] {
    if let Some(open) = key.iter().position(|&b| b == b'{') {
        if let Some(len) = key[open + 1..].iter().position(|&b| b == b'}') {
            // "one or more characters between": `{}` is no tag, the whole key is hashed.
            if len > 0 {
                return &key[open + 1..open + 1 + len];
            }
        }
    }
    key
}

/// The Redis Cluster slot of a key (or of a shard channel of sharded pub/sub):
/// `CRC16(hash_tag(key)) mod 16384`, CRC16 being the XMODEM variant (polynomial 0x1021,
/// initial value 0), as the cluster spec defines ("HASH_SLOT = CRC16(key) mod 16384").
pub fn key_slot(key: &[u8]) -> u16 {
    crc16_xmodem(hash_tag(key)) % 16384
}

/// CRC-16/XMODEM, bit by bit (keys are short; no table needed).
fn crc16_xmodem(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in data {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 { (crc << 1) ^ 0x1021 } else { crc << 1 };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    fn channel(name: &str) -> ChannelName {
        ChannelName::parse(name).unwrap()
    }

    #[test]
    fn channel_keys_scheme() {
        let keys = ChannelKeys::new(&Namespace::default(), &channel("news"));
        assert_eq!(keys.meta, "pushwire:{news}:meta");
        assert_eq!(keys.history, "pushwire:{news}:hist");
        assert_eq!(keys.presence, "pushwire:{news}:pres");
        assert_eq!(keys.presence_info, "pushwire:{news}:pinfo");
        assert_eq!(keys.pubsub, "pushwire:{news}");
    }

    #[test]
    fn cluster_spec_hash_tags_put_a_channel_in_one_slot() {
        let keys = ChannelKeys::new(&Namespace::new("app-1").unwrap(), &channel("a.b_c~d-E9"));
        for name in [&keys.meta, &keys.history, &keys.presence, &keys.presence_info, &keys.pubsub] {
            assert_eq!(hash_tag(name.as_bytes()), b"a.b_c~d-E9", "{name}");
            assert_eq!(key_slot(name.as_bytes()), key_slot(b"a.b_c~d-E9"));
        }
    }

    #[test]
    fn cluster_spec_hash_tag_examples() {
        // The spec's examples.
        assert_eq!(hash_tag(b"{user1000}.following"), b"user1000");
        assert_eq!(hash_tag(b"{user1000}.followers"), b"user1000");
        assert_eq!(hash_tag(b"foo{}{bar}"), b"foo{}{bar}");
        assert_eq!(hash_tag(b"foo{{bar}}zap"), b"{bar");
        assert_eq!(hash_tag(b"foo{bar}{zap}"), b"bar");
        assert_eq!(hash_tag(b"no tag"), b"no tag");
        assert_eq!(hash_tag(b"open{only"), b"open{only");
    }

    #[test]
    fn cluster_spec_crc16_reference_value() {
        // Cluster spec appendix: the CRC16 of "123456789" is 0x31C3.
        assert_eq!(crc16_xmodem(b"123456789"), 0x31C3);
        assert_eq!(key_slot(b"123456789"), 0x31C3, "below 16384 already");
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"{user1000}.followers"));
        // Slots computed by Redis itself (`CLUSTER KEYSLOT`).
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"bar"), 5061);
        assert!(key_slot(&[0xFF; 300]) < 16384);
    }

    #[test]
    fn namespace_prefix_rules() {
        assert_eq!(Namespace::default().as_str(), "pushwire");
        assert!(Namespace::new("pw").is_ok());
        assert!(Namespace::new("app:pushwire").is_ok());
        assert!(Namespace::new(&"x".repeat(64)).is_ok());
        for bad in ["", "a b", "a{b", "a}b", "{a}", "é", "a\n", &"x".repeat(65)] {
            assert!(Namespace::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn namespace_channel_of_pubsub_inverts_the_naming() {
        let with_colon = Namespace::new("app:pw").unwrap();
        let keys = ChannelKeys::new(&with_colon, &channel("x"));
        assert_eq!(keys.pubsub, "app:pw:{x}");
        assert_eq!(with_colon.channel_of_pubsub(keys.pubsub.as_bytes()), Some(channel("x")));
        let ns = Namespace::new("pw").unwrap();
        let keys = ChannelKeys::new(&ns, &channel("room.1"));
        assert_eq!(ns.channel_of_pubsub(keys.pubsub.as_bytes()), Some(channel("room.1")));
        for other in
            [&b"pw:{room.1"[..], b"pw:room.1", b"px:{room.1}", b"pw:{}", b"pw:{a b}", b"pw:{..}", b"pw:{a}x"]
        {
            assert_eq!(ns.channel_of_pubsub(other), None, "{other:?}");
        }
    }
}
