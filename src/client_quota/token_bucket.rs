//! Kafka's `TokenBucket` stat, which KIP-599's controller mutation quota uses instead of a
//! windowed rate: a bucket of `burst = samples * window * quota` tokens refilled at `quota`
//! per second; a mutation takes its partition count out of it, and the bucket may go
//! negative by one request. The quota is exceeded while the bucket is below zero, and the
//! throttle is the time to refill it to zero. Pure: every call takes the time.

use super::rate::RateConfig;

/// The quota is passed to every call, not kept: a changed quota applies to the bucket at
/// once, as Kafka updates a sensor's quota in place.
#[derive(Clone, Debug)]
pub struct TokenBucket {
    config: RateConfig,
    tokens: f64,
    last_update_ms: u64,
    /// The quota of the last call: idleness needs to know when a debt is repaid.
    quota: f64,
}

impl TokenBucket {
    /// A full bucket: Kafka's starts empty at time 0, so its first refill fills it.
    pub fn new(quota: f64, config: RateConfig, now_ms: u64) -> TokenBucket {
        TokenBucket {
            config,
            tokens: burst(quota, config),
            last_update_ms: now_ms,
            quota,
        }
    }

    fn refill(&mut self, quota: f64, now_ms: u64) {
        let elapsed_s = now_ms.saturating_sub(self.last_update_ms) as f64 / 1000.0;
        self.tokens = (self.tokens + quota * elapsed_s).min(burst(quota, self.config));
        self.last_update_ms = self.last_update_ms.max(now_ms);
        self.quota = quota;
    }

    /// The tokens left at `now_ms`.
    pub fn tokens(&mut self, quota: f64, now_ms: u64) -> f64 {
        self.refill(quota, now_ms);
        self.tokens
    }

    /// Takes `permits` out (Kafka's `record`); the bucket never holds more than its burst.
    pub fn take(&mut self, permits: f64, quota: f64, now_ms: u64) {
        self.refill(quota, now_ms);
        self.tokens = (self.tokens - permits).min(burst(quota, self.config));
    }

    /// Unused for a whole window (`samples * window`), as [`super::rate::SampledRate`]
    /// counts idleness, and out of debt by now: dropping a bucket still below zero would
    /// forgive the client its debt.
    pub fn is_idle(&self, now_ms: u64) -> bool {
        let expiry_ms = self.config.samples as u64 * self.config.window_ms;
        let elapsed_ms = now_ms.saturating_sub(self.last_update_ms);
        let refilled = self.tokens + self.quota * elapsed_ms as f64 / 1000.0;
        elapsed_ms >= expiry_ms && refilled >= 0.0
    }
}

fn burst(quota: f64, config: RateConfig) -> f64 {
    config.samples as f64 * config.window_ms as f64 / 1000.0 * quota
}

/// Kafka's `ControllerMutationQuotaManager.throttleTimeMs`: the time to refill a negative
/// bucket to zero, `-tokens / quota` seconds. Zero when the bucket is not negative; a
/// quota of zero never refills, so it throttles for the longest time a response can say.
pub fn throttle_ms(tokens: f64, quota: f64) -> u64 {
    if tokens >= 0.0 {
        return 0;
    }
    let throttle = -tokens / quota * 1000.0;
    if throttle.is_finite() {
        throttle.round().min(i32::MAX as f64) as u64
    } else {
        i32::MAX as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: RateConfig = RateConfig {
        samples: 11,
        window_ms: 1000,
    };

    #[test]
    fn a_new_bucket_holds_a_burst_of_samples_windows() {
        // 2 partitions/s over 11 one-second windows: 22 partitions at once.
        let mut bucket = TokenBucket::new(2.0, CONFIG, 0);
        assert_eq!(bucket.tokens(2.0, 0), 22.0);
        bucket.take(30.0, 2.0, 0);
        assert_eq!(bucket.tokens(2.0, 0), -8.0);
        // 8 tokens short at 2/s: 4 s to wait.
        assert_eq!(throttle_ms(-8.0, 2.0), 4000);
        assert_eq!(bucket.tokens(2.0, 1000), -6.0);
        assert_eq!(bucket.tokens(2.0, 4000), 0.0);
        // Refilling stops at the burst.
        assert_eq!(bucket.tokens(2.0, 100_000), 22.0);
        assert!(!bucket.is_idle(100_000 + 10_999));
        assert!(bucket.is_idle(100_000 + 11_000));
    }

    #[test]
    fn throttle_is_zero_within_the_quota_and_bounded_without_refill() {
        assert_eq!(throttle_ms(0.0, 5.0), 0);
        assert_eq!(throttle_ms(3.0, 5.0), 0);
        assert_eq!(throttle_ms(-1.0, 0.0), i32::MAX as u64);
        assert_eq!(throttle_ms(-1e300, 1e-300), i32::MAX as u64);
    }

    #[test]
    fn a_bucket_in_debt_is_not_idle_until_it_is_repaid() {
        let mut bucket = TokenBucket::new(1.0, CONFIG, 0);
        bucket.take(1011.0, 1.0, 0);
        // 1000 tokens short at 1/s: unused for long past the window, still owing.
        assert!(!bucket.is_idle(500_000));
        assert!(bucket.is_idle(1_000_000));
    }

    #[test]
    fn a_lowered_quota_caps_the_bucket_at_its_new_burst() {
        let mut bucket = TokenBucket::new(10.0, CONFIG, 0);
        assert_eq!(bucket.tokens(10.0, 0), 110.0);
        bucket.take(1.0, 1.0, 0);
        assert_eq!(bucket.tokens(1.0, 0), 10.0);
    }
}
