//! Client quota enforcement (Kafka's `ClientQuotaManager`, KIP-13/KIP-124/KIP-219): each
//! client's produce bytes, consumer fetch bytes and request handling time are measured as
//! windowed rates against the quota that applies to it, and a client over its quota is
//! throttled: its response carries `throttle_time_ms` and its connection reads nothing
//! more for that long.
//!
//! The quotas come from the metadata image ([`ClientQuotaManager::update`], called by the
//! broker's reconciler on every node); which one applies to a client is decided by
//! [`resolve`], Kafka's `DefaultQuotaCallback` order. Clients that resolve to the same
//! entity share one rate (e.g. every client id of a user with a user-level quota).
//!
//! Cheap when unused: with no quota of a kind in the image, recording it is one atomic
//! load. Quotas are per broker, as in Kafka.
//!
//! `request_percentage` here: Kafka counts the time request handler and network threads
//! spend on a client's requests. Requests are async tasks here, not pinned to threads, so
//! the time counted is a request's local handling time: from dispatch to its response,
//! less the time parked in produce and fetch waits (Kafka's purgatory). 100 is one
//! thread's worth of time.
//!
//! `controller_mutation_rate` (KIP-599): CreateTopics, CreatePartitions and DeleteTopics
//! take their partition counts from a token bucket ([`token_bucket`], with
//! `controller.quota.window.*`) through a per-request [`MutationQuota`]. Kafka enforces it
//! on the active controller, to which brokers forward these requests; here the broker that
//! receives them enforces it (clients send them to the controller Metadata names, which is
//! the active controller whenever it is a live broker).
//! SEAM(sasl-principal): the quota user is always `ANONYMOUS` (no SASL yet); with
//! authentication it must be the connection's principal name.
//! SEAM(quota-metrics): no per-client `throttle-time`/`byte-rate` metrics yet.

pub mod bounded;
pub mod mutation;
pub mod rate;
pub mod resolve;
pub mod token_bucket;

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Mutex, MutexGuard, PoisonError};

use bounded::Bounded;
pub use mutation::MutationQuota;
use rate::{RateConfig, SampledRate, throttle_ms};
pub use resolve::{QuotaKind, QuotaTable, Resolved};
use token_bucket::TokenBucket;

use crate::controller::client_quotas::ClientQuotas;

/// The user name quotas see for a connection without authentication: Kafka's principal
/// there is `User:ANONYMOUS`, and user quotas match the principal's name.
pub const ANONYMOUS_USER: &str = "ANONYMOUS";

/// Kafka caps a request-time throttle at one quota window (`ClientRequestQuotaManager`).
/// Byte-rate throttles are not capped there beyond what the window gives.
const REQUEST_THROTTLE_WINDOWS_MAX: u64 = 1;

/// Rates kept at most (and as many mutation buckets); idle ones are dropped first when the
/// map is full. A client id is client-chosen, so the number of distinct ones must not grow
/// memory without bound.
pub const RATES_MAX: usize = 100_000;

/// Milliseconds on a monotonic clock (since first use): rates must not jump when the
/// wall clock is set.
pub fn monotonic_ms() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_millis() as u64
}

/// Where a rate lives: the kind and the entity the client resolved to.
type RateKey = (QuotaKind, resolve::BucketKey);

struct State {
    table: QuotaTable,
    /// The image's quotas the table was built from, to skip rebuilding for other changes.
    source: ClientQuotas,
    rates: Bounded<RateKey, SampledRate>,
    /// Controller mutation quotas' token buckets, by the entity the client resolved to.
    buckets: Bounded<resolve::BucketKey, TokenBucket>,
}

pub struct ClientQuotaManager {
    config: RateConfig,
    /// `controller.quota.window.num` / `controller.quota.window.size.seconds`.
    mutation_config: RateConfig,
    /// One flag per kind: any quota of that kind in the image.
    enabled: [AtomicBool; QuotaKind::COUNT],
    state: Mutex<State>,
}

impl ClientQuotaManager {
    pub fn new(config: RateConfig, mutation_config: RateConfig) -> ClientQuotaManager {
        ClientQuotaManager {
            config,
            mutation_config,
            enabled: Default::default(),
            state: Mutex::new(State {
                table: QuotaTable::default(),
                source: ClientQuotas::new(),
                rates: Bounded::new(RATES_MAX),
                buckets: Bounded::new(RATES_MAX),
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Rates are counters: whatever panicked mid-update leaves them usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Applies the image's quotas; rates measured so far are kept (a changed quota applies
    /// to the traffic already seen, as Kafka updates a sensor's quota in place).
    pub fn update(&self, quotas: &ClientQuotas) {
        let mut state = self.state();
        if state.source == *quotas {
            return;
        }
        state.table = QuotaTable::from_image(quotas);
        state.source = quotas.clone();
        for kind in QuotaKind::ALL {
            self.enabled[kind as usize].store(state.table.has(kind), Relaxed);
        }
    }

    pub fn is_enabled(&self, kind: QuotaKind) -> bool {
        self.enabled[kind as usize].load(Relaxed)
    }

    /// Records `value` for the client and returns how long it must be throttled, in ms
    /// (Kafka's `maybeRecordAndGetThrottleTimeMs`).
    pub fn record(
        &self,
        kind: QuotaKind,
        user: &str,
        client_id: &str,
        value: f64,
        now_ms: u64,
    ) -> u64 {
        if !self.is_enabled(kind) {
            return 0;
        }
        let mut state = self.state();
        let Some(resolved) = state.table.resolve(kind, user, client_id) else {
            return 0;
        };
        let config = self.config;
        let rate = (state.rates).entry((kind, resolved.bucket), now_ms, || {
            SampledRate::new(config, now_ms)
        });
        rate.record(value, now_ms);
        let measured = rate.measure(now_ms);
        let window_ms = rate.window_size_ms(now_ms);
        let throttle = throttle_ms(measured, resolved.quota, window_ms);
        match kind {
            QuotaKind::Request => throttle.min(REQUEST_THROTTLE_WINDOWS_MAX * config.window_ms),
            _ => throttle,
        }
    }

    /// Takes back a recorded value (a fetch answered empty because it is throttled).
    pub fn unrecord(&self, kind: QuotaKind, user: &str, client_id: &str, value: f64, now_ms: u64) {
        if !self.is_enabled(kind) {
            return;
        }
        let mut state = self.state();
        if let Some(resolved) = state.table.resolve(kind, user, client_id)
            && let Some(rate) = state.rates.get_mut(&(kind, resolved.bucket))
        {
            rate.record(-value, now_ms);
        }
    }

    /// Takes `permits` (partitions) from the client's controller mutation bucket (KIP-599).
    /// Strict: refused, with the throttle, while the bucket is below zero, else taken with
    /// no throttle (Kafka's `StrictControllerMutationQuota`). Permissive (older request
    /// versions): always taken; the throttle is the time to refill the bucket to zero.
    pub fn record_mutation(
        &self,
        user: &str,
        client_id: &str,
        permits: f64,
        strict: bool,
        now_ms: u64,
    ) -> Result<u64, u64> {
        let kind = QuotaKind::ControllerMutation;
        if !self.is_enabled(kind) {
            return Ok(0);
        }
        let mut state = self.state();
        let Some(resolved) = state.table.resolve(kind, user, client_id) else {
            return Ok(0);
        };
        let (quota, config) = (resolved.quota, self.mutation_config);
        let bucket = (state.buckets).entry(resolved.bucket, now_ms, || {
            TokenBucket::new(quota, config, now_ms)
        });
        if strict {
            let tokens = bucket.tokens(quota, now_ms);
            if tokens < 0.0 {
                return Err(token_bucket::throttle_ms(tokens, quota));
            }
            bucket.take(permits, quota, now_ms);
            Ok(0)
        } else {
            bucket.take(permits, quota, now_ms);
            Ok(token_bucket::throttle_ms(
                bucket.tokens(quota, now_ms),
                quota,
            ))
        }
    }

    /// The most a client may take in one quota window (`getMaxValueInQuotaWindow`): a
    /// fetch asks for no more, so one response cannot overshoot the quota by much.
    pub fn max_in_window(&self, kind: QuotaKind, user: &str, client_id: &str) -> Option<f64> {
        if !self.is_enabled(kind) {
            return None;
        }
        let state = self.state();
        let resolved = state.table.resolve(kind, user, client_id)?;
        let windows = (self.config.samples - 1) as f64 * self.config.window_ms as f64 / 1000.0;
        Some(resolved.quota * windows)
    }
}

#[cfg(test)]
mod tests;
