//! Choosing the shard of a channel: a consistent hash of the channel name over an ordered list
//! (of independent Redis servers, or of one broker's pub/sub connections, which is what the
//! broker uses it for today), the same on every node.
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
//! list must be the same on every node (the broker can check by publishing the list's digest
//! at start; not done here). Removing a shard other than the last moves many channels.
//!
//! Does not: talk to the shards, or know Redis Cluster (which routes by hash slot; see
//! [`crate::redis::keys::key_slot`] and the notes in [`crate::redis`]).

use crate::hub::ChannelName;

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
