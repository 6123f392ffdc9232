//! A map of per-client state (rates, buckets) with an explicit bound: clients choose their
//! ids and addresses, so their number must not grow memory without limit, and a full map
//! must not cost a scan of every entry for every new client.

use std::collections::HashMap;
use std::hash::Hash;

use super::rate::SampledRate;
use super::token_bucket::TokenBucket;

/// A map entry that may be dropped once unused for a while.
pub trait Expiring {
    fn is_idle(&self, now_ms: u64) -> bool;
}

impl Expiring for SampledRate {
    fn is_idle(&self, now_ms: u64) -> bool {
        SampledRate::is_idle(self, now_ms)
    }
}

impl Expiring for TokenBucket {
    fn is_idle(&self, now_ms: u64) -> bool {
        TokenBucket::is_idle(self, now_ms)
    }
}

#[derive(Debug)]
pub struct Bounded<K, V> {
    pub(super) map: HashMap<K, V>,
    max: usize,
    /// New entries since the last scan for idle ones found none.
    pub(super) unscanned_inserts: Option<usize>,
}

impl<K: Eq + Hash + Clone, V: Expiring> Bounded<K, V> {
    pub fn new(max: usize) -> Bounded<K, V> {
        assert!(max > 0, "a bounded map holds at least one entry");
        Bounded {
            map: HashMap::new(),
            max,
            unscanned_inserts: None,
        }
    }

    /// A full map in which a scan found nothing idle is scanned again only after this many
    /// new entries (each of which meanwhile replaces one arbitrary entry).
    fn scan_every(&self) -> usize {
        (self.max / 10).max(1)
    }

    /// The entry of `key`, made on first use. A full map drops its idle entries (a scan),
    /// or, when the last scan found none and fewer than a tenth of the bound came since,
    /// one arbitrary entry (its client restarts from a fresh rate).
    pub fn entry(&mut self, key: K, now_ms: u64, make: impl FnOnce() -> V) -> &mut V {
        if self.map.len() >= self.max && !self.map.contains_key(&key) {
            let scan = (self.unscanned_inserts).is_none_or(|n| n >= self.scan_every());
            if scan {
                self.map.retain(|_, entry| !entry.is_idle(now_ms));
            }
            if self.map.len() >= self.max {
                if let Some(victim) = self.map.keys().next().cloned() {
                    self.map.remove(&victim);
                }
                self.unscanned_inserts = Some(if scan {
                    0
                } else {
                    self.unscanned_inserts.unwrap_or(0) + 1
                });
            } else {
                self.unscanned_inserts = None;
            }
        }
        self.map.entry(key).or_insert_with(make)
    }

    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        self.map.get_mut(key)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}
