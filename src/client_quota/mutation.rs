//! One request's controller mutation quota (Kafka's `ControllerMutationQuota`): the topic
//! admin requests take each topic's partition count from it as they plan, and the
//! response carries the throttle it earned.

use super::{ClientQuotaManager, monotonic_ms};

/// THROTTLING_QUOTA_EXCEEDED for one topic, with the time until the bucket refills.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exhausted {
    pub throttle_ms: u64,
}

pub struct MutationQuota<'a> {
    /// `None`: unbounded (topics the broker creates itself, or on a client's Metadata).
    manager: Option<&'a ClientQuotaManager>,
    user: &'a str,
    client_id: &'a str,
    strict: bool,
    throttle_ms: u64,
    recorded_at_ms: u64,
}

impl<'a> MutationQuota<'a> {
    /// `strict` for the request versions KIP-599 made strict (CreateTopics v6+,
    /// CreatePartitions v3+, DeleteTopics v5+): they can answer THROTTLING_QUOTA_EXCEEDED.
    pub fn new(
        manager: &'a ClientQuotaManager,
        user: &'a str,
        client_id: &'a str,
        strict: bool,
    ) -> MutationQuota<'a> {
        MutationQuota {
            manager: Some(manager),
            user,
            client_id,
            strict,
            throttle_ms: 0,
            recorded_at_ms: 0,
        }
    }

    /// No quota: Kafka's `UnboundedControllerMutationQuota`, for the internal topics the
    /// broker creates for itself at start-up.
    pub fn unbounded() -> MutationQuota<'static> {
        MutationQuota {
            manager: None,
            user: "",
            client_id: "",
            strict: false,
            throttle_ms: 0,
            recorded_at_ms: 0,
        }
    }

    /// Takes `partitions` mutations; strict and exhausted: refused.
    pub fn record(&mut self, partitions: usize) -> Result<(), Exhausted> {
        let Some(manager) = self.manager else {
            return Ok(());
        };
        let now_ms = monotonic_ms();
        let permits = partitions as f64;
        let recorded =
            manager.record_mutation(self.user, self.client_id, permits, self.strict, now_ms);
        let (Ok(throttle_ms) | Err(throttle_ms)) = recorded;
        if throttle_ms > 0 {
            self.throttle_ms = throttle_ms;
            self.recorded_at_ms = now_ms;
        }
        recorded
            .map(drop)
            .map_err(|throttle_ms| Exhausted { throttle_ms })
    }

    /// The throttle for the response: the last one earned, less the time since (Kafka's
    /// `throttleTime`, as a request may wait long after recording).
    pub fn throttle_time_ms(&self) -> i32 {
        let since = monotonic_ms().saturating_sub(self.recorded_at_ms);
        let left = self.throttle_ms.saturating_sub(since);
        i32::try_from(left).unwrap_or(i32::MAX)
    }
}
