//! Replication throttles (Kafka's `ReplicationQuotaManager`, KIP-73): what
//! `kafka-reassign-partitions --throttle` sets to keep a reassignment's copying from
//! starving clients.
//!
//! Two dynamic broker configs bound this broker's replication bytes per second:
//! `leader.replication.throttled.rate` (what it sends followers) and
//! `follower.replication.throttled.rate` (what its fetchers take in), each set per broker
//! or as the cluster default, `Long.MAX_VALUE` (no bound) otherwise. Two topic configs say
//! which replicas the bounds apply to: `leader.replication.throttled.replicas` and
//! `follower.replication.throttled.replicas`, `*` or `partition:broker,...`; a broker
//! throttles partition p on one side when that side's list has `*` or `p:<its id>`.
//!
//! The bytes of throttled partitions are measured over `replication.quota.window.num`
//! samples of `replication.quota.window.size.seconds` (Kafka's `SimpleRate`). While the
//! rate is over the bound, a throttled replica that is not caught up gets nothing more:
//! the leader answers its fetch without records ([`ReplicationQuota::holds`] in
//! `api/fetch.rs`), the follower leaves it out of its fetch (`fetcher.rs`). The leader
//! never holds an ISR member (their bytes still count). The follower side, as Kafka's,
//! counts a partition caught up only once a fetch reached the leader's high watermark
//! since its last leader change: with its quota over the bound, a follower just after a
//! leader change can hold an in-sync partition for a while (delaying acks=all, at worst
//! leaving the ISR after `replica.lag.time.max.ms`), as in Kafka; throttle only the
//! replicas that move, as `kafka-reassign-partitions` does, and this does not arise.
//!
//! Cheap when unused: without a throttled-replicas list naming this broker, a check is one
//! atomic load, and nothing is measured.
//!
//! SEAM(alter-log-dirs-throttle): `replica.alter.log.dirs.io.max.bytes.per.second` is not
//! applied: there is one log directory per broker, so no intra-broker moves to throttle.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering::Relaxed};
use std::sync::{Mutex, RwLock};

use crate::client_quota::rate::{RateConfig, SampledRate};
use crate::controller::MetadataImage;
use crate::topic_config::DynamicLayers;
use crate::types::{NodeId, TopicPartition};

pub const LEADER_RATE: &str = "leader.replication.throttled.rate";
pub const FOLLOWER_RATE: &str = "follower.replication.throttled.rate";
pub const LEADER_REPLICAS: &str = "leader.replication.throttled.replicas";
pub const FOLLOWER_REPLICAS: &str = "follower.replication.throttled.replicas";

/// The dynamic broker configs of this module, alterable per broker and cluster-wide.
pub const RATE_CONFIGS: [&str; 2] = [FOLLOWER_RATE, LEADER_RATE];

/// Kafka's default rate (`QUOTA_BYTES_PER_SECOND_DEFAULT`): no bound.
pub const RATE_UNBOUNDED: i64 = i64::MAX;

/// Which partitions of one topic a side throttles on this broker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ThrottledReplicas {
    /// `*`: every partition.
    All,
    /// The partitions listed with this broker's id (maybe none).
    Partitions(BTreeSet<i32>),
}

impl ThrottledReplicas {
    fn contains(&self, partition: i32) -> bool {
        match self {
            ThrottledReplicas::All => true,
            ThrottledReplicas::Partitions(partitions) => partitions.contains(&partition),
        }
    }
}

/// Kafka's `ThrottledReplicaListValidator`: `*`, or items `partition:broker` (digits
/// only), items trimmed, empty items allowed. The error is Kafka's whole message, the
/// value shown as Kafka's parsed list (`[0:1, x]`).
pub fn validate_replica_list(name: &str, value: &str) -> Result<(), String> {
    let items = list_items(value);
    let well_formed = |item: &&str| {
        item.is_empty()
            || item
                .split_once(':')
                .is_some_and(|(partition, broker)| is_digits(partition) && is_digits(broker))
    };
    if items.iter().all(well_formed) || items.concat() == "*" {
        return Ok(());
    }
    Err(format!(
        "Invalid value [{}] for configuration {name}: {name} must be the literal '*' or a list \
         of replicas in the following format: [partitionId]:[brokerId],[partitionId]:[brokerId],...",
        items.join(", ")
    ))
}

/// A LIST value's items as Kafka's `ConfigDef` parses them: trimmed, none for "".
fn list_items(value: &str) -> Vec<&str> {
    let value = value.trim();
    if value.is_empty() {
        return Vec::new();
    }
    value.split(',').map(str::trim).collect()
}

fn is_digits(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|byte| byte.is_ascii_digit())
}

/// Kafka's `ConfigHandler.parseThrottledPartitions`: the partitions `broker` throttles
/// under a list value; `None` for "" (or a value validation would have refused).
pub fn throttled_here(value: &str, broker: NodeId) -> Option<ThrottledReplicas> {
    let items = list_items(value);
    if items.is_empty() || validate_replica_list("", value).is_err() {
        return None;
    }
    if items.concat() == "*" {
        return Some(ThrottledReplicas::All);
    }
    let partitions = items
        .iter()
        .filter_map(|item| item.split_once(':'))
        .filter(|(_, listed)| listed.parse::<i64>() == Ok(i64::from(broker)))
        .filter_map(|(partition, _)| partition.parse::<i32>().ok())
        .collect();
    Some(ThrottledReplicas::Partitions(partitions))
}

/// A rate's value: Kafka's `LONG`, `atLeast(0)`. The error is what clients show.
pub fn validate_rate(name: &str, value: &str) -> Result<(), String> {
    let reason = match value.trim().parse::<i64>() {
        Ok(rate) if rate >= 0 => return Ok(()),
        Ok(_) => "Value must be at least 0",
        Err(_) => "Not a number of type LONG",
    };
    Err(format!(
        "Invalid value {value} for configuration {name}: {reason}"
    ))
}

/// Kafka's `shouldLeaderThrottle` / `shouldFollowerThrottle`: hold a replica back only
/// if its partition is throttled on this side, it is not caught up (else the ISR would
/// thrash) and the side's rate is over its bound. Asked in Kafka's order, each only if
/// the one before held: the rate is measured only for a listed replica that lags.
pub fn should_throttle(
    listed: bool,
    in_sync: impl FnOnce() -> bool,
    exceeded: impl FnOnce() -> bool,
) -> bool {
    listed && !in_sync() && exceeded()
}

/// Kafka's comparison (`Quota.acceptable`): a rate equal to the bound is within it.
pub fn is_over(rate: f64, bound: i64) -> bool {
    bound != RATE_UNBOUNDED && rate > bound as f64
}

/// One side's throttle on this broker: the bound, the throttled partitions, the rate.
pub struct ReplicationQuota {
    /// Bytes per second; [`RATE_UNBOUNDED`] for none.
    bound: AtomicI64,
    /// Any topic has a throttled-replicas list naming this broker (or `*`).
    active: AtomicBool,
    throttled: RwLock<HashMap<String, ThrottledReplicas>>,
    config: RateConfig,
    /// Made at the first check or record, and made afresh once idle for a whole window
    /// (Kafka's sensor, made on first use): an idle stretch before the throttled traffic
    /// began must not count as time at rate zero, or the first seconds could burst.
    rate: Mutex<Option<SampledRate>>,
}

impl ReplicationQuota {
    pub fn new(config: RateConfig) -> ReplicationQuota {
        ReplicationQuota {
            bound: AtomicI64::new(RATE_UNBOUNDED),
            active: AtomicBool::new(false),
            throttled: RwLock::new(HashMap::new()),
            config,
            rate: Mutex::new(None),
        }
    }

    fn is_active(&self) -> bool {
        self.active.load(Relaxed)
    }

    /// Whether [`Self::holds`] may hold anything back now: a list names this broker (or
    /// `*`) and a bound is set.
    pub fn may_hold(&self) -> bool {
        self.is_active() && self.bound() != RATE_UNBOUNDED
    }

    /// Kafka's `isThrottled`: the partition is on this side's list for this broker.
    pub fn is_throttled(&self, tp: &TopicPartition) -> bool {
        if !self.is_active() {
            return false;
        }
        let throttled = self.throttled.read().unwrap_or_else(|p| p.into_inner());
        (throttled.get(&*tp.topic)).is_some_and(|replicas| replicas.contains(tp.partition))
    }

    /// Kafka's `isQuotaExceeded`: the measured rate is over the bound.
    pub fn is_exceeded(&self, now_ms: u64) -> bool {
        let bound = self.bound.load(Relaxed);
        if bound == RATE_UNBOUNDED {
            return false;
        }
        self.with_rate(now_ms, |rate| is_over(rate.measure(now_ms), bound))
    }

    /// Whether a replica of `tp` is held back now ([`should_throttle`]); `in_sync` is
    /// only asked for a throttled partition.
    pub fn holds(&self, tp: &TopicPartition, in_sync: impl FnOnce() -> bool, now_ms: u64) -> bool {
        should_throttle(self.is_throttled(tp), in_sync, || self.is_exceeded(now_ms))
    }

    /// Counts bytes of a throttled partition, sent or fetched (Kafka's `record`).
    pub fn record(&self, bytes: usize, now_ms: u64) {
        self.with_rate(now_ms, |rate| rate.record(bytes as f64, now_ms));
    }

    /// The measured rate in bytes per second (the `byte-rate` metric).
    pub fn byte_rate(&self, now_ms: u64) -> f64 {
        let mut rate = self.rate.lock().unwrap_or_else(|p| p.into_inner());
        rate.as_mut().map_or(0.0, |rate| rate.measure(now_ms))
    }

    pub fn bound(&self) -> i64 {
        self.bound.load(Relaxed)
    }

    /// How many partitions this side throttles here; a `*` topic counts
    /// `partitions_of(topic)` (the metric's cost is paid when scraped).
    pub fn throttled_partitions(&self, partitions_of: impl Fn(&str) -> usize) -> usize {
        let throttled = self.throttled.read().unwrap_or_else(|p| p.into_inner());
        (throttled.iter())
            .map(|(topic, replicas)| match replicas {
                ThrottledReplicas::All => partitions_of(topic),
                ThrottledReplicas::Partitions(partitions) => partitions.len(),
            })
            .sum()
    }

    fn update(&self, bound: i64, throttled: HashMap<String, ThrottledReplicas>) {
        self.bound.store(bound, Relaxed);
        let mut current = self.throttled.write().unwrap_or_else(|p| p.into_inner());
        if *current != throttled {
            self.active.store(!throttled.is_empty(), Relaxed);
            *current = throttled;
        }
    }

    fn with_rate<T>(&self, now_ms: u64, use_rate: impl FnOnce(&mut SampledRate) -> T) -> T {
        let mut rate = self.rate.lock().unwrap_or_else(|p| p.into_inner());
        let current = match rate.take() {
            Some(current) if !current.is_idle(now_ms) => current,
            _ => SampledRate::simple(self.config, now_ms),
        };
        use_rate(rate.insert(current))
    }
}

/// Both sides' throttles of this broker, kept in step with the image by the reconciler.
pub struct ReplicationQuotas {
    node_id: NodeId,
    pub leader: ReplicationQuota,
    pub follower: ReplicationQuota,
}

impl ReplicationQuotas {
    pub fn new(node_id: NodeId, config: RateConfig) -> ReplicationQuotas {
        ReplicationQuotas {
            node_id,
            leader: ReplicationQuota::new(config),
            follower: ReplicationQuota::new(config),
        }
    }

    /// Takes the bounds and lists the image has for this broker (Kafka's
    /// `BrokerConfigHandler` and `TopicConfigHandler` for these keys).
    pub fn update(&self, image: &MetadataImage) {
        let dynamic = DynamicLayers::of(&image.broker_configs, self.node_id);
        for (quota, rate_key, list_key) in [
            (&self.leader, LEADER_RATE, LEADER_REPLICAS),
            (&self.follower, FOLLOWER_RATE, FOLLOWER_REPLICAS),
        ] {
            let throttled = image
                .topics
                .iter()
                .filter_map(|(name, topic)| {
                    let value = topic.configs.get(list_key)?;
                    let replicas = throttled_here(value, self.node_id)?;
                    Some((name.clone(), replicas))
                })
                .filter(|(_, replicas)| *replicas != ThrottledReplicas::Partitions([].into()))
                .collect();
            quota.update(effective_rate(dynamic, rate_key), throttled);
        }
    }
}

/// This broker's bound: its own dynamic value, the cluster default, else none. A value
/// that does not parse (validation refuses those) counts as none, as unset.
pub fn effective_rate(dynamic: DynamicLayers, key: &str) -> i64 {
    let value = (dynamic.per_broker.and_then(|configs| configs.get(key)))
        .or_else(|| dynamic.cluster.and_then(|configs| configs.get(key)));
    value
        .and_then(|value| value.trim().parse::<i64>().ok())
        .filter(|rate| *rate >= 0)
        .unwrap_or(RATE_UNBOUNDED)
}

#[cfg(test)]
#[path = "replication_quota_tests.rs"]
mod tests;
