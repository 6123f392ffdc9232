//! A windowed rate as Kafka's `Rate` over a `SampledStat` measures it: values are summed
//! into `samples` buckets of `window_ms` each, the oldest bucket is reused when a new one
//! starts, and buckets older than the whole window are reset when measured. Pure: every
//! call takes the time, so tests drive it with a fake clock.

/// Kafka's `quota.window.num` and `quota.window.size.seconds` defaults.
pub const SAMPLES_DEFAULT: usize = 11;
pub const WINDOW_MS_DEFAULT: u64 = 1000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateConfig {
    pub samples: usize,
    pub window_ms: u64,
}

impl Default for RateConfig {
    fn default() -> Self {
        RateConfig {
            samples: SAMPLES_DEFAULT,
            window_ms: WINDOW_MS_DEFAULT,
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Sample {
    value: f64,
    window_start_ms: u64,
}

/// The least span a rate divides by, while its samples cover less.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum WindowFloor {
    /// Kafka's `Rate`: `samples - 1` whole windows (client quotas).
    WholeWindows,
    /// Kafka's `SimpleRate`: one window (replication quotas), so a throttle set on an idle
    /// broker bites after the first second's bytes rather than after ten seconds' worth.
    OneWindow,
}

#[derive(Clone, Debug)]
pub struct SampledRate {
    config: RateConfig,
    floor: WindowFloor,
    samples: Vec<Sample>,
    current: usize,
    last_record_ms: u64,
}

impl SampledRate {
    pub fn new(config: RateConfig, now_ms: u64) -> SampledRate {
        assert!(config.samples >= 2 && config.window_ms > 0, "{config:?}");
        SampledRate {
            config,
            floor: WindowFloor::WholeWindows,
            samples: vec![Sample {
                value: 0.0,
                window_start_ms: now_ms,
            }],
            current: 0,
            last_record_ms: now_ms,
        }
    }

    /// A rate measured as Kafka's `SimpleRate` (see [`WindowFloor::OneWindow`]).
    pub fn simple(config: RateConfig, now_ms: u64) -> SampledRate {
        SampledRate {
            floor: WindowFloor::OneWindow,
            ..SampledRate::new(config, now_ms)
        }
    }

    /// Adds `value` at `now_ms` (a negative value takes back an earlier record, as
    /// Kafka's fetch quota does for a response it does not send).
    pub fn record(&mut self, value: f64, now_ms: u64) {
        let started = self.samples[self.current].window_start_ms;
        if now_ms.saturating_sub(started) >= self.config.window_ms {
            self.current = (self.current + 1) % self.config.samples;
            let fresh = Sample {
                value: 0.0,
                window_start_ms: now_ms,
            };
            if self.current >= self.samples.len() {
                self.samples.push(fresh);
            } else {
                self.samples[self.current] = fresh;
            }
        }
        self.samples[self.current].value += value;
        self.last_record_ms = self.last_record_ms.max(now_ms);
    }

    /// The rate per second at `now_ms`.
    pub fn measure(&mut self, now_ms: u64) -> f64 {
        self.purge_obsolete(now_ms);
        let total: f64 = self.samples.iter().map(|sample| sample.value).sum();
        total / (self.window_size_ms(now_ms) as f64 / 1000.0)
    }

    /// The span the rate divides by (Kafka's `Rate.windowSize`): from the oldest sample's
    /// start, but never less than `samples - 1` whole windows, so a new client's first
    /// burst is spread over the full window rather than measured over a few milliseconds.
    /// A [`SampledRate::simple`] rate divides by at least one window instead.
    pub fn window_size_ms(&mut self, now_ms: u64) -> u64 {
        self.purge_obsolete(now_ms);
        let oldest = (self.samples.iter())
            .map(|sample| sample.window_start_ms)
            .min()
            .unwrap_or(now_ms);
        let mut elapsed_ms = now_ms.saturating_sub(oldest);
        if self.floor == WindowFloor::OneWindow {
            return elapsed_ms.max(self.config.window_ms);
        }
        let full_windows = elapsed_ms / self.config.window_ms;
        let full_windows_min = (self.config.samples - 1) as u64;
        if full_windows < full_windows_min {
            elapsed_ms += (full_windows_min - full_windows) * self.config.window_ms;
        }
        elapsed_ms
    }

    /// Samples older than the whole window count for nothing (Kafka resets them in place).
    fn purge_obsolete(&mut self, now_ms: u64) {
        let expiry_ms = self.config.samples as u64 * self.config.window_ms;
        for sample in &mut self.samples {
            if now_ms.saturating_sub(sample.window_start_ms) >= expiry_ms {
                *sample = Sample {
                    value: 0.0,
                    window_start_ms: now_ms,
                };
            }
        }
    }

    /// Nothing recorded for a whole window: the rate is zero and the state can go.
    pub fn is_idle(&self, now_ms: u64) -> bool {
        let expiry_ms = self.config.samples as u64 * self.config.window_ms;
        now_ms.saturating_sub(self.last_record_ms) >= expiry_ms
    }
}

/// Kafka's `QuotaUtils.throttleTime`: how long the client must wait for its rate to fall
/// back to `bound`: `(rate - bound) / bound * window`. Zero when within the bound.
pub fn throttle_ms(rate: f64, bound: f64, window_ms: u64) -> u64 {
    if rate <= bound || bound <= 0.0 {
        return 0;
    }
    let throttle = (rate - bound) / bound * window_ms as f64;
    // Rounded as Kafka rounds; a rate that is not a number throttles for nothing.
    if throttle.is_finite() {
        throttle.round().min(i32::MAX as f64) as u64
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_first_burst_is_spread_over_the_full_window() {
        let mut rate = SampledRate::new(RateConfig::default(), 0);
        rate.record(10_000.0, 0);
        // 10 whole windows at least (samples - 1): 10 000 bytes over 10 s.
        assert_eq!(rate.window_size_ms(0), 10_000);
        assert_eq!(rate.measure(0), 1_000.0);
        assert_eq!(rate.window_size_ms(500), 10_500);
    }

    #[test]
    fn samples_roll_and_expire() {
        let config = RateConfig {
            samples: 3,
            window_ms: 1000,
        };
        let mut rate = SampledRate::new(config, 0);
        rate.record(100.0, 0);
        rate.record(100.0, 1000);
        rate.record(100.0, 2000);
        // Three samples, the oldest started at 0: 300 over max(2.5 s, 2 windows).
        assert_eq!(rate.measure(2500), 300.0 / 2.5);
        // The fourth window reuses the first sample: its 100 is gone.
        rate.record(100.0, 3000);
        assert_eq!(rate.measure(3000), 300.0 / 2.0);
        // Long silence: everything expired.
        assert_eq!(rate.measure(10_000), 0.0);
        assert!(rate.is_idle(10_000));
        assert!(!rate.is_idle(3500));
    }

    #[test]
    fn a_simple_rate_divides_by_at_least_one_window() {
        let mut rate = SampledRate::simple(RateConfig::default(), 0);
        rate.record(1000.0, 0);
        assert_eq!(rate.window_size_ms(0), 1000);
        assert_eq!(rate.measure(0), 1000.0);
        assert_eq!(rate.measure(2000), 500.0);
        // Past the whole window (11 samples of 1 s) the bytes no longer count.
        assert_eq!(rate.measure(11_000), 0.0);
    }

    #[test]
    fn a_negative_record_takes_a_value_back() {
        let mut rate = SampledRate::new(RateConfig::default(), 0);
        rate.record(5000.0, 100);
        rate.record(-5000.0, 100);
        assert_eq!(rate.measure(100), 0.0);
    }

    #[test]
    fn throttle_time_is_the_overshoot_over_the_window() {
        assert_eq!(throttle_ms(100.0, 100.0, 10_000), 0);
        assert_eq!(throttle_ms(50.0, 100.0, 10_000), 0);
        // 50% over a 1000 B/s quota, measured over 10 s: wait 5 s.
        assert_eq!(throttle_ms(1500.0, 1000.0, 10_000), 5000);
        assert_eq!(throttle_ms(f64::INFINITY, 1.0, 10_000), 0);
        assert_eq!(throttle_ms(1e300, 1.0, 10_000), i32::MAX as u64);
    }
}
