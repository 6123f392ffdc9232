//! The cleaner's offset map, bounded by `log.cleaner.dedupe.buffer.size` as Kafka's
//! `SkimpyOffsetMap` is: a fixed table of (128-bit key hash, offset) slots with open
//! addressing, never grown. The whole key is never stored, so memory does not depend on
//! key sizes and cannot exceed the buffer, whatever clients produce.
//!
//! The hash is two SipHash-1-3 values under two fresh random keys (std `RandomState`),
//! drawn per map, i.e. per cleaning pass. Two distinct keys share an entry only if both
//! 64-bit halves collide, about 2^-128 per pair: an attacker cannot aim at it (the keys are
//! secret and change every pass) and by chance it does not happen in practice. Kafka makes
//! the same bet with MD5.
//!
//! Like Kafka, the table is filled to at most 90% of its slots (its default
//! `log.cleaner.io.buffer.load.factor`), so linear probing stays short.

use std::hash::{BuildHasher, RandomState};

/// Bytes one slot takes: a 128-bit hash and an offset, as in Kafka (16-byte MD5 + 8).
pub(crate) const SLOT_BYTES: u64 = 24;
/// Words (u64) per slot: hash high, hash low, offset + 1 (0 marks an empty slot).
const SLOT_WORDS: usize = 3;
/// Kafka's `log.cleaner.io.buffer.load.factor` default: fill at most 90% of the slots.
const LOAD_PERCENT: u64 = 90;

/// Key hash -> offset of the latest record of that key seen so far.
pub(crate) struct OffsetMap {
    /// `SLOT_WORDS` words per slot. Allocated zeroed, so the pages of a large buffer are
    /// only backed by memory as they are touched.
    slots: Vec<u64>,
    slot_count: usize,
    capacity: usize,
    len: usize,
    hashers: [RandomState; 2],
}

/// The map has no room for another key; updates of keys already in it still work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct MapFull;

impl OffsetMap {
    /// A map that fits in `buffer_bytes`, or of two slots (one key) if it is smaller.
    pub(crate) fn with_buffer_bytes(buffer_bytes: u64) -> OffsetMap {
        let slot_count = usize::try_from(buffer_bytes / SLOT_BYTES)
            .unwrap_or(usize::MAX / SLOT_WORDS)
            .max(2);
        // One slot always stays empty, so a probe for an absent key ends.
        let capacity = (slot_count as u64 * LOAD_PERCENT / 100) as usize;
        OffsetMap {
            slots: vec![0; slot_count * SLOT_WORDS],
            slot_count,
            capacity: capacity.clamp(1, slot_count - 1),
            len: 0,
            hashers: [RandomState::new(), RandomState::new()],
        }
    }

    /// Keys the map can hold.
    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Record `offset` as the latest of `key`, unless a later offset is already there.
    /// `Err(MapFull)` when `key` is new and the map is at capacity: nothing changes.
    pub(crate) fn put(&mut self, key: &[u8], offset: i64) -> Result<(), MapFull> {
        assert!(offset >= 0, "log offsets are never negative");
        let hash = self.hash(key);
        let slot = self.find(hash);
        let stored = self.slots[slot * SLOT_WORDS + 2];
        if stored == 0 {
            if self.len == self.capacity {
                return Err(MapFull);
            }
            self.slots[slot * SLOT_WORDS] = hash[0];
            self.slots[slot * SLOT_WORDS + 1] = hash[1];
            self.len += 1;
        }
        let new = offset as u64 + 1;
        self.slots[slot * SLOT_WORDS + 2] = stored.max(new);
        Ok(())
    }

    /// The latest offset recorded for `key`.
    pub(crate) fn get(&self, key: &[u8]) -> Option<i64> {
        let slot = self.find(self.hash(key));
        let stored = self.slots[slot * SLOT_WORDS + 2];
        (stored != 0).then(|| (stored - 1) as i64)
    }

    fn hash(&self, key: &[u8]) -> [u64; 2] {
        [self.hashers[0].hash_one(key), self.hashers[1].hash_one(key)]
    }

    /// The slot holding `hash`, or the empty slot where it would go. Terminates because
    /// the capacity keeps at least one slot empty.
    fn find(&self, hash: [u64; 2]) -> usize {
        let mut slot = (hash[0] % self.slot_count as u64) as usize;
        loop {
            let words = &self.slots[slot * SLOT_WORDS..(slot + 1) * SLOT_WORDS];
            if words[2] == 0 || (words[0] == hash[0] && words[1] == hash[1]) {
                return slot;
            }
            slot = (slot + 1) % self.slot_count;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_latest_offset_of_each_key() {
        let mut map = OffsetMap::with_buffer_bytes(SLOT_BYTES * 1000);
        for offset in 0..500 {
            map.put(format!("k{}", offset % 100).as_bytes(), offset)
                .unwrap();
        }
        assert_eq!(map.len(), 100);
        for key in 0..100 {
            assert_eq!(map.get(format!("k{key}").as_bytes()), Some(400 + key));
        }
        assert_eq!(map.get(b"absent"), None);
        // An older offset never replaces a newer one.
        map.put(b"k7", 3).unwrap();
        assert_eq!(map.get(b"k7"), Some(407));
    }

    #[test]
    fn a_full_map_refuses_new_keys_but_updates_known_ones() {
        let mut map = OffsetMap::with_buffer_bytes(SLOT_BYTES * 10);
        assert_eq!(map.capacity(), 9);
        for key in 0..9 {
            map.put(&[key], i64::from(key)).unwrap();
        }
        assert_eq!(map.put(b"new", 100), Err(MapFull));
        assert_eq!(map.get(b"new"), None);
        map.put(&[4], 200).unwrap();
        assert_eq!(map.get(&[4]), Some(200));
        assert_eq!(map.len(), 9);
        // Every slot probe still ends: a lookup of an absent key in a nearly full table.
        assert_eq!(map.get(b"still absent"), None);
    }

    #[test]
    fn the_smallest_buffer_still_holds_one_key() {
        let mut map = OffsetMap::with_buffer_bytes(1);
        assert_eq!(map.capacity(), 1);
        map.put(b"a", 0).unwrap();
        assert_eq!(map.put(b"b", 1), Err(MapFull));
        assert_eq!(map.get(b"b"), None);
        assert_eq!(map.get(b"a"), Some(0));
    }

    #[test]
    fn the_table_fits_in_the_buffer() {
        let map = OffsetMap::with_buffer_bytes(134_217_728);
        let table_bytes = map.slots.len() as u64 * 8;
        assert!(table_bytes <= 134_217_728);
        assert_eq!(map.capacity() as u64, 134_217_728 / SLOT_BYTES * 9 / 10);
    }
}
