//! Choosing the shard of a channel: a consistent hash of the channel name over an ordered list,
//! the same on every node: of independent Redis servers (the `--redis` list: `RedisHub` sends
//! each request to its channel's server) and of one broker's pub/sub connections.
//!
//! Implements: [`shard_of`] = jump consistent hash (Lamping and Veach, "A Fast, Minimal
//! Memory, Consistent Hash Algorithm", 2014, <https://arxiv.org/abs/1406.2294>) of the 64-bit
//! FNV-1a hash of the channel name. Both are fixed functions of the bytes, with no seed and no
//! dependence on the platform, the process or the order channels are seen in, so every node
//! configured with the same list sends a channel to the same shard.
//!
//! Consistency: going from `n` to `n + 1` shards moves about `1 / (n + 1)` of the channels,
//! all of them to the new shard, and no others. A moved channel finds no meta on its new
//! shard and starts a new epoch there (its subscribers see a gap, never wrong data); its old
//! keys expire with their ttl. Shards must therefore be added at the end of the list, and the
//! list must be the same on every node. Removing a shard other than the last moves many
//! channels.
//!
//! The place check ([`claim_command`], [`check_claim`]): each broker claims its server's place
//! in the list and the list's length, `SET PREFIX:shard INDEX/COUNT NX GET`, every time its
//! command connection opens; a server already claimed at another place or in a list of another
//! length is refused, so a node whose list differs from the others' (another order, a server
//! missing or added) fails at start instead of splitting channels between servers: with `n`
//! and `n + 1` shards the nodes disagree on about `1 / (n + 1)` of the channels, whose messages
//! would then miss the other nodes' subscribers without a gap. Changing the list on purpose
//! (adding a shard) is therefore a restart of every node, with `DEL PREFIX:shard` on every
//! server in between.
//!
//! Does not: talk to the shards, or know Redis Cluster (which routes by hash slot; see
//! [`crate::redis::keys::key_slot`] and the notes in [`crate::redis`]).

use crate::hub::ChannelName;
use crate::redis::keys::Namespace;
use crate::redis::resp::{Command, Value};

/// The key holding a server's place in the shard list: `PREFIX:shard` (no hash tag: it is
/// per server, never a channel's).
pub fn claim_key(namespace: &Namespace) -> String {
    format!("{}:shard", namespace.as_str())
}

/// `SET PREFIX:shard INDEX/COUNT NX GET` (Redis 7.0 or later): claims place `index` in a list
/// of `count` servers for this server unless one is claimed, and returns the claimed one.
pub fn claim_command(namespace: &Namespace, index: usize, count: usize) -> Command {
    Command::new("SET").arg(claim_key(namespace)).arg(claim_value(index, count)).arg("NX").arg("GET")
}

/// The value a claim stores: `INDEX/COUNT`.
fn claim_value(index: usize, count: usize) -> String {
    format!("{index}/{count}")
}

/// Checks the reply to [`claim_command`] for place `index` of `count`: unclaimed before (now
/// claimed) or claimed at the same place of a list as long is fine; another place, another
/// length, or an error, is why not.
pub fn check_claim(reply: &Value, index: usize, count: usize, namespace: &Namespace) -> Result<(), String> {
    let claimed = match reply {
        Value::NullBulkString => return Ok(()),
        Value::BulkString(bytes) => String::from_utf8_lossy(bytes).into_owned(),
        Value::Error(e) => {
            return Err(format!("SET {}: {}", claim_key(namespace), String::from_utf8_lossy(e)))
        }
        other => return Err(format!("SET {}: unexpected reply {other:?}", claim_key(namespace))),
    };
    if claimed == claim_value(index, count) {
        return Ok(());
    }
    let (claimed_index, claimed_count) = claimed.split_once('/').unwrap_or((&claimed, "?"));
    Err(format!(
        "this server is shard {claimed_index} (counting from 0) of {claimed_count} for the nodes that \
         claimed it, but --redis lists it as shard {index} of {count} here: every node must list the \
         same servers in the same order (to change the list on purpose, stop every node and run \
         DEL {} on every server first)",
        claim_key(namespace)
    ))
}

/// The index (below `shards`) of the shard that holds `channel`. `shards` must be at least 1.
pub fn shard_of(channel: &ChannelName, shards: usize) -> usize {
    debug_assert!(shards >= 1, "at least one shard");
    jump_consistent_hash(fnv1a_64(channel.as_str().as_bytes()), shards.max(1))
}

/// FNV-1a, 64-bit (offset basis 0xcbf29ce484222325, prime 0x100000001b3).
fn fnv1a_64(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(0xcbf2_9ce4_8422_2325, |hash, &b| (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3))
}

/// Jump consistent hash, as published: a bucket in `0..buckets` for `key`.
fn jump_consistent_hash(mut key: u64, buckets: usize) -> usize {
    let buckets = buckets as i64;
    let (mut b, mut j): (i64, i64) = (-1, 0);
    while j < buckets {
        b = j;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        j = (((b + 1) as f64) * ((1u64 << 31) as f64 / (((key >> 33) + 1) as f64))) as i64;
    }
    // b is in 0..buckets.
    b as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(i: usize) -> ChannelName {
        ChannelName::parse(&format!("channel-{i}")).unwrap()
    }

    #[test]
    fn fnv1a_reference_values() {
        assert_eq!(fnv1a_64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a_64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a_64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn jump_hash_reference_values() {
        // The test vectors other implementations of the paper's algorithm share.
        for (key, buckets, expected) in [
            (1, 1, 0),
            (42, 57, 43),
            (0xDEAD10CC, 1, 0),
            (0xDEAD10CC, 666, 361),
            (256, 1024, 520),
            (1, 128, 55),
            (129, 128, 120),
            (u64::MAX, 128, 92),
            (128, 100_000_000, 38_172_097),
        ] {
            assert_eq!(jump_consistent_hash(key, buckets), expected, "key {key} buckets {buckets}");
        }
        for key in 0..1000u64 {
            assert_eq!(jump_consistent_hash(key, 1), 0);
            assert!(jump_consistent_hash(key, 7) < 7);
        }
    }

    #[test]
    fn shard_of_is_stable_and_fixed() {
        // Pinned (computed independently from the two published algorithms): a change here
        // would move channels between shards across an upgrade of some nodes only.
        let pinned: Vec<usize> = (0..8).map(|i| shard_of(&name(i), 5)).collect();
        assert_eq!(pinned, [1, 2, 4, 0, 1, 3, 0, 1]);
        assert_eq!(shard_of(&ChannelName::parse("news").unwrap(), 3), 2);
        assert_eq!(shard_of(&ChannelName::parse("news").unwrap(), 1), 0);
    }

    #[test]
    fn adding_a_shard_moves_only_to_the_new_one_and_about_one_in_n_plus_1() {
        let channels = 10_000;
        for n in 1..8 {
            let mut moved = 0usize;
            for i in 0..channels {
                let before = shard_of(&name(i), n);
                let after = shard_of(&name(i), n + 1);
                if before != after {
                    assert_eq!(after, n, "a moved channel goes to the new shard");
                    moved += 1;
                }
            }
            let expected = channels / (n + 1);
            assert!(
                moved.abs_diff(expected) < expected / 5,
                "n={n}: moved {moved}, expected about {expected}"
            );
        }
    }

    #[test]
    fn a_claim_is_kept_at_its_place_and_refused_at_another_place_or_length() {
        let namespace = Namespace::default();
        let command = claim_command(&namespace, 1, 2);
        assert_eq!(command.argc(), 5);
        assert_eq!(check_claim(&Value::NullBulkString, 1, 2, &namespace), Ok(()));
        assert_eq!(check_claim(&Value::BulkString(b"1/2".to_vec()), 1, 2, &namespace), Ok(()));
        let refused = check_claim(&Value::BulkString(b"0/2".to_vec()), 1, 2, &namespace).unwrap_err();
        assert!(
            refused.contains("shard 0 (counting from 0) of 2") && refused.contains("shard 1 of 2 here"),
            "{refused}"
        );
        assert!(refused.contains("DEL pushwire:shard"), "{refused}");
        // The same place in a longer or shorter list: the nodes would split channels.
        for other in ["1/3", "1/1", "1"] {
            let refused = check_claim(&Value::BulkString(other.as_bytes().to_vec()), 1, 2, &namespace);
            assert!(refused.is_err(), "{other}");
        }
        let error = check_claim(&Value::Error(b"NOPERM no".to_vec()), 1, 2, &namespace).unwrap_err();
        assert!(error.contains("NOPERM"), "{error}");
    }

    #[test]
    fn shards_are_balanced() {
        let mut counts = [0usize; 4];
        for i in 0..20_000 {
            counts[shard_of(&name(i), 4)] += 1;
        }
        for count in counts {
            assert!(count.abs_diff(5_000usize) < 500, "{counts:?}");
        }
    }
}
