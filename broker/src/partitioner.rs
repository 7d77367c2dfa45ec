//! Kafka's default partitioner.
//!
//! Keyed records go where Java and librdkafka clients would put them:
//! `toPositive(murmur2(key)) % partitions`, with the murmur2 variant of
//! Kafka's `org.apache.kafka.common.utils.Utils`. Keyless records use a
//! sticky partitioner: one partition for a whole produce call, the next
//! partition for the next call, so a batch stays one batch on disk while
//! load still spreads over the partitions.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU32, Ordering};

/// Kafka's `Utils.murmur2`: MurmurHash2, 32 bits, seed `0x9747b28c`,
/// returned as the signed `int` Java computes.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;

    // Java takes `data.length` as an int; keys beyond 2 GiB do not occur,
    // and truncating keeps this total instead of panicking.
    let length = data.len() as u32;
    let mut h = SEED ^ length;

    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }

    // The tail, as Java's fall-through switch does it.
    let tail = chunks.remainder();
    if tail.len() >= 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }

    // Java's `>>>` is a logical shift: the unsigned shifts above match it.
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// Kafka's `Utils.toPositive`: clears the sign bit (not `abs`, which would
/// overflow on `i32::MIN` and map differently).
pub fn to_positive(n: i32) -> u32 {
    (n & 0x7fff_ffff) as u32
}

/// The partition Kafka's default partitioner picks for a key.
///
/// `partitions` must be at least 1; 0 is treated as 1 so the function is
/// total (a topic always has a partition).
pub fn partition_for_key(key: &[u8], partitions: u32) -> u32 {
    to_positive(murmur2(key)) % partitions.max(1)
}

/// Picks the partition for keyless records: the same partition for all the
/// records of one produce call, the next one for the next call.
#[derive(Debug)]
pub struct StickyPartitioner {
    next: AtomicU32,
}

impl StickyPartitioner {
    /// A partitioner starting at a random partition, so restarts and several
    /// gateways do not all pile their first batches onto partition 0.
    pub fn new() -> Self {
        let mut hasher = RandomState::new().build_hasher();
        hasher.write_u8(0);
        Self::starting_at(hasher.finish() as u32)
    }

    /// A partitioner whose first call yields `start % partitions`.
    pub fn starting_at(start: u32) -> Self {
        Self {
            next: AtomicU32::new(start),
        }
    }

    /// The partition for the keyless records of one produce call.
    pub fn next_partition(&self, partitions: u32) -> u32 {
        // Wrapping is fine: only the residue matters, and a jump at the
        // wrap point only breaks the round-robin once every 2^32 calls.
        self.next.fetch_add(1, Ordering::Relaxed) % partitions.max(1)
    }
}

impl Default for StickyPartitioner {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn murmur2_matches_kafka_utils_test_vectors() {
        // From Kafka's clients/src/test/java/org/apache/kafka/common/utils/UtilsTest.java.
        let cases: [(&[u8], i32); 6] = [
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            (b"abc", 479_470_107),
        ];
        for (key, expected) in cases {
            assert_eq!(
                murmur2(key),
                expected,
                "murmur2({:?})",
                String::from_utf8_lossy(key)
            );
        }
    }

    #[test]
    fn to_positive_clears_the_sign_bit_like_kafka() {
        assert_eq!(to_positive(-1), 0x7fff_ffff);
        assert_eq!(to_positive(i32::MIN), 0);
        assert_eq!(to_positive(5), 5);
    }

    #[test]
    fn keyed_partition_matches_kafka() {
        // toPositive(-973932308) = 1173551340; 1173551340 % 3 = 0.
        assert_eq!(partition_for_key(b"21", 3), 1_173_551_340 % 3);
        assert_eq!(partition_for_key(b"abc", 10), 479_470_107 % 10);
        assert_eq!(partition_for_key(b"", 1), 0);
    }

    #[test]
    fn sticky_rotates_round_robin_across_calls() {
        let sticky = StickyPartitioner::starting_at(0);
        let picks: Vec<u32> = (0..7).map(|_| sticky.next_partition(3)).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2, 0]);
        assert_eq!(sticky.next_partition(0), 0);
    }

    proptest! {
        #[test]
        fn partition_for_key_is_always_in_range(
            key in proptest::collection::vec(any::<u8>(), 0..64),
            partitions in 1u32..=10_000,
        ) {
            prop_assert!(partition_for_key(&key, partitions) < partitions);
        }

        #[test]
        fn sticky_is_always_in_range(start in any::<u32>(), partitions in 1u32..=10_000) {
            let sticky = StickyPartitioner::starting_at(start);
            for _ in 0..3 {
                prop_assert!(sticky.next_partition(partitions) < partitions);
            }
        }
    }
}
