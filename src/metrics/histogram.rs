//! A latency histogram with fixed buckets, recorded with relaxed atomic adds (no lock, no
//! allocation): cheap enough for every request.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Bucket upper bounds in microseconds (exposed in ms, Kafka's unit for request times):
/// 0.1 ms to 10 s, then +Inf.
pub const BUCKET_BOUNDS_US: [u64; 15] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 10_000_000,
];

pub struct Histogram {
    /// Non-cumulative counts per bucket; the last one is above every bound.
    buckets: [AtomicU64; BUCKET_BOUNDS_US.len() + 1],
    sum_us: AtomicU64,
}

/// A histogram as exposed: cumulative counts per bound, the +Inf count and the sum.
#[derive(Debug, PartialEq)]
pub struct HistogramSnapshot {
    pub cumulative: [u64; BUCKET_BOUNDS_US.len()],
    pub count: u64,
    pub sum_ms: f64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_us: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    pub fn record(&self, elapsed: Duration) {
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        let index = BUCKET_BOUNDS_US.partition_point(|&bound| bound < micros);
        self.buckets[index].fetch_add(1, Relaxed);
        self.sum_us.fetch_add(micros, Relaxed);
    }

    /// Read bucket by bucket while others record: a scrape may see a request in one
    /// bucket and not yet in the sum, which Prometheus tolerates (rates smooth it).
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut cumulative = [0u64; BUCKET_BOUNDS_US.len()];
        let mut running = 0u64;
        for (index, total) in cumulative.iter_mut().enumerate() {
            running += self.buckets[index].load(Relaxed);
            *total = running;
        }
        let count = running + self.buckets[BUCKET_BOUNDS_US.len()].load(Relaxed);
        HistogramSnapshot {
            cumulative,
            count,
            sum_ms: self.sum_us.load(Relaxed) as f64 / 1000.0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.iter().all(|bucket| bucket.load(Relaxed) == 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_land_in_the_first_bucket_that_holds_them() {
        let histogram = Histogram::default();
        assert!(histogram.is_empty());
        histogram.record(Duration::from_micros(100)); // on a bound: that bucket
        histogram.record(Duration::from_micros(101));
        histogram.record(Duration::from_millis(3));
        histogram.record(Duration::from_secs(60)); // above every bound
        let snapshot = histogram.snapshot();
        assert_eq!(snapshot.cumulative[0], 1);
        assert_eq!(snapshot.cumulative[1], 2);
        assert_eq!(snapshot.cumulative[4], 2, "3 ms is above 2.5 ms");
        assert_eq!(snapshot.cumulative[5], 3);
        assert_eq!(*snapshot.cumulative.last().unwrap(), 3);
        assert_eq!(snapshot.count, 4);
        assert!(
            (snapshot.sum_ms - 60_003.201).abs() < 1e-6,
            "{}",
            snapshot.sum_ms
        );
    }
}
