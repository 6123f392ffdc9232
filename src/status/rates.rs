//! Message rates per topic for the status page, from successive samples of a monotonic count
//! (the sum of the log end offsets of the partitions hosted here).
//!
//! A rate needs two samples at least [`SAMPLE_INTERVAL_MS_MIN`] apart; page loads closer
//! together than that reuse the last rate instead of dividing by a tiny interval. A count
//! that goes down (truncation, a deleted and re-created topic) restarts the topic's samples
//! rather than showing a negative rate.

use std::collections::BTreeMap;
use std::sync::Mutex;

pub const SAMPLE_INTERVAL_MS_MIN: i64 = 1_000;

#[derive(Clone, Copy, Debug)]
struct Sample {
    time_ms: i64,
    count: i64,
    rate: Option<f64>,
}

#[derive(Debug, Default)]
pub struct TopicRates {
    samples: Mutex<BTreeMap<String, Sample>>,
}

impl TopicRates {
    /// Records this round's counts and returns the rate per topic (None for a topic seen for
    /// the first time). Topics absent from `counts` are forgotten, so the map holds no more
    /// entries than there are topics.
    pub fn observe(&self, time_ms: i64, counts: &BTreeMap<String, i64>) -> BTreeMap<String, f64> {
        let mut samples = self
            .samples
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        samples.retain(|topic, _| counts.contains_key(topic));
        let mut rates = BTreeMap::new();
        for (topic, &count) in counts {
            let fresh = Sample {
                time_ms,
                count,
                rate: None,
            };
            let sample = samples.entry(topic.clone()).or_insert(fresh);
            let elapsed_ms = time_ms - sample.time_ms;
            if count < sample.count || elapsed_ms < 0 {
                *sample = fresh;
            } else if elapsed_ms >= SAMPLE_INTERVAL_MS_MIN {
                let rate = (count - sample.count) as f64 * 1000.0 / elapsed_ms as f64;
                *sample = Sample {
                    time_ms,
                    count,
                    rate: Some(rate),
                };
            }
            if let Some(rate) = sample.rate {
                rates.insert(topic.clone(), rate);
            }
        }
        rates
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(entries: &[(&str, i64)]) -> BTreeMap<String, i64> {
        entries
            .iter()
            .map(|(topic, count)| (topic.to_string(), *count))
            .collect()
    }

    #[test]
    fn the_rate_is_the_count_difference_over_the_interval() {
        let rates = TopicRates::default();
        assert!(rates.observe(10_000, &counts(&[("a", 100)])).is_empty());
        let first = rates.observe(12_000, &counts(&[("a", 300)]));
        assert_eq!(first.get("a"), Some(&100.0));
        // A reload within the minimum interval keeps the last rate and the old base.
        let again = rates.observe(12_500, &counts(&[("a", 1_000)]));
        assert_eq!(again.get("a"), Some(&100.0));
        let later = rates.observe(13_000, &counts(&[("a", 1_300)]));
        assert_eq!(later.get("a"), Some(&1_000.0));
    }

    #[test]
    fn a_count_that_goes_down_restarts_and_gone_topics_are_forgotten() {
        let rates = TopicRates::default();
        rates.observe(0, &counts(&[("a", 500), ("b", 1)]));
        assert!(rates.observe(2_000, &counts(&[("a", 10)])).is_empty());
        assert_eq!(rates.samples.lock().unwrap().len(), 1);
        let next = rates.observe(4_000, &counts(&[("a", 30), ("b", 5)]));
        assert_eq!(next.get("a"), Some(&10.0));
        assert_eq!(next.get("b"), None);
    }
}
