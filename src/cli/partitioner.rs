//! Which partition a record goes to, as Kafka's default partitioner picks it: for a
//! keyed record, murmur2 of the key bytes made positive, modulo the partition count, so
//! our console producer and a Java or librdkafka (`murmur2_random`) producer put the
//! same key in the same partition. Unkeyed records are spread round-robin by the caller.

/// Kafka's `Utils.murmur2` (MurmurHash2, seed 0x9747b28c, little-endian 4-byte blocks).
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    // Java's int arithmetic wraps; the length enters as an int too.
    let mut h = SEED ^ (data.len() as u32);
    let blocks = data.chunks_exact(4);
    let tail = blocks.remainder();
    for block in blocks {
        let mut k = u32::from_le_bytes([block[0], block[1], block[2], block[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    // Java's switch falls through: 3 bytes left mixes all three.
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
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// Kafka's `BuiltInPartitioner.partitionForKey`: `toPositive(murmur2(key)) % count`.
/// `partition_count` is at least 1 (a topic has a partition).
pub fn partition_for_key(key: &[u8], partition_count: i32) -> i32 {
    assert!(partition_count > 0, "a topic has at least one partition");
    (murmur2(key) & 0x7fff_ffff) % partition_count
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Kafka's `UtilsTest.testMurmur2` vectors.
    #[test]
    fn murmur2_matches_kafkas_vectors() {
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
                "key {:?}",
                String::from_utf8_lossy(key)
            );
        }
    }

    #[test]
    fn partitions_are_in_range_and_stable() {
        for count in 1..20 {
            for key in [&b""[..], b"a", b"key-1", b"\xff\xfe\xfd"] {
                let partition = partition_for_key(key, count);
                assert!((0..count).contains(&partition));
                assert_eq!(partition, partition_for_key(key, count));
            }
        }
        // toPositive, not abs: "foobar" hashes negative.
        assert_eq!(
            partition_for_key(b"foobar", 1_000_000),
            (-790_332_482i32 & 0x7fff_ffff) % 1_000_000
        );
    }
}
