//! Replication settings, with Kafka's names and defaults (`ReplicationConfigs`).

use std::collections::BTreeMap;

use super::{ConfigError, parse, socket_buffer};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicationConfig {
    /// `replica.lag.time.max.ms`: a follower not caught up for this long leaves the ISR.
    pub lag_time_max_ms: u64,
    /// `replica.fetch.wait.max.ms`: how long a follower's fetch waits at the leader.
    pub fetch_wait_max_ms: i32,
    /// `replica.fetch.min.bytes`
    pub fetch_min_bytes: i32,
    /// `replica.fetch.max.bytes`: per partition in one follower fetch.
    pub fetch_max_bytes: i32,
    /// `replica.fetch.response.max.bytes`: one follower fetch response in all.
    pub fetch_response_max_bytes: i32,
    /// `replica.fetch.backoff.ms`: the pause after a failed fetch.
    pub fetch_backoff_ms: u64,
    /// `replica.socket.timeout.ms`: the longest a follower waits on its leader's socket.
    pub socket_timeout_ms: u64,
    /// `replica.socket.receive.buffer.bytes`: SO_RCVBUF of a follower's connection to its
    /// leader (`None`: -1, the kernel's default).
    pub socket_receive_bytes: Option<usize>,
    /// `replica.high.watermark.checkpoint.interval.ms`
    pub high_watermark_checkpoint_interval_ms: u64,
    /// `replication.quota.window.num` and `replication.quota.window.size.seconds`: the
    /// replication throttles' rates are measured over this many samples of this long.
    pub quota_window_samples: usize,
    pub quota_window_seconds: u64,
}

impl ReplicationConfig {
    pub fn parse(explicit: &BTreeMap<String, String>) -> Result<ReplicationConfig, ConfigError> {
        let config = ReplicationConfig {
            lag_time_max_ms: parse(explicit, "replica.lag.time.max.ms", 30_000)?,
            fetch_wait_max_ms: parse(explicit, "replica.fetch.wait.max.ms", 500)?,
            fetch_min_bytes: parse(explicit, "replica.fetch.min.bytes", 1)?,
            fetch_max_bytes: parse(explicit, "replica.fetch.max.bytes", 1_048_576)?,
            fetch_response_max_bytes: parse(
                explicit,
                "replica.fetch.response.max.bytes",
                10_485_760,
            )?,
            fetch_backoff_ms: parse(explicit, "replica.fetch.backoff.ms", 1_000)?,
            socket_timeout_ms: parse(explicit, "replica.socket.timeout.ms", 30_000)?,
            socket_receive_bytes: socket_buffer(
                explicit,
                "replica.socket.receive.buffer.bytes",
                65_536,
            )?,
            high_watermark_checkpoint_interval_ms: parse(
                explicit,
                "replica.high.watermark.checkpoint.interval.ms",
                5_000,
            )?,
            quota_window_samples: parse(explicit, "replication.quota.window.num", 11)?,
            quota_window_seconds: parse(explicit, "replication.quota.window.size.seconds", 1)?,
        };
        config.validate()?;
        Ok(config)
    }

    /// Kafka's constraints: the fetch wait must be shorter than the socket timeout and
    /// the lag limit, or a caught-up follower would look stuck.
    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, value: String, reason: &str| ConfigError::Invalid {
            key: key.into(),
            value,
            reason: reason.into(),
        };
        let wait = u64::try_from(self.fetch_wait_max_ms).unwrap_or(0);
        if self.fetch_wait_max_ms < 0 || wait >= self.socket_timeout_ms {
            let reason = "must be >= 0 and less than replica.socket.timeout.ms";
            return Err(invalid(
                "replica.fetch.wait.max.ms",
                wait.to_string(),
                reason,
            ));
        }
        if wait >= self.lag_time_max_ms {
            let reason = "must be less than replica.lag.time.max.ms";
            return Err(invalid(
                "replica.fetch.wait.max.ms",
                wait.to_string(),
                reason,
            ));
        }
        for (key, value) in [
            ("replica.fetch.min.bytes", self.fetch_min_bytes),
            ("replica.fetch.max.bytes", self.fetch_max_bytes),
            (
                "replica.fetch.response.max.bytes",
                self.fetch_response_max_bytes,
            ),
        ] {
            if value < 0 {
                return Err(invalid(key, value.to_string(), "must be >= 0"));
            }
        }
        if self.high_watermark_checkpoint_interval_ms == 0 {
            let key = "replica.high.watermark.checkpoint.interval.ms";
            return Err(invalid(key, "0".into(), "must be > 0"));
        }
        // Kafka: both atLeast(1); a rate needs two samples here to have a window to
        // measure over (as `quota.window.num`).
        if !(2..=1000).contains(&self.quota_window_samples) {
            let value = self.quota_window_samples.to_string();
            return Err(invalid(
                "replication.quota.window.num",
                value,
                "must be 2..=1000",
            ));
        }
        if !(1..=3600).contains(&self.quota_window_seconds) {
            let value = self.quota_window_seconds.to_string();
            let key = "replication.quota.window.size.seconds";
            return Err(invalid(key, value, "must be 1..=3600"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(pairs: &[(&str, &str)]) -> Result<ReplicationConfig, ConfigError> {
        let map = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        ReplicationConfig::parse(&map)
    }

    #[test]
    fn kafkas_defaults_and_constraints() {
        let config = with(&[]).unwrap();
        assert_eq!(config.lag_time_max_ms, 30_000);
        assert_eq!(config.fetch_wait_max_ms, 500);
        assert_eq!(config.fetch_response_max_bytes, 10_485_760);
        assert!(with(&[("replica.fetch.wait.max.ms", "30000")]).is_err());
        assert!(with(&[("replica.lag.time.max.ms", "400")]).is_err());
        assert!(with(&[("replica.fetch.max.bytes", "-1")]).is_err());
        assert!(with(&[("replica.lag.time.max.ms", "2000")]).is_ok());
        assert_eq!(
            (config.quota_window_samples, config.quota_window_seconds),
            (11, 1)
        );
        assert!(with(&[("replication.quota.window.num", "1")]).is_err());
        assert!(with(&[("replication.quota.window.size.seconds", "0")]).is_err());
        assert_eq!(config.socket_receive_bytes, Some(65_536));
        let kernels = with(&[("replica.socket.receive.buffer.bytes", "-1")]).unwrap();
        assert_eq!(kernels.socket_receive_bytes, None);
        assert!(with(&[("replica.socket.receive.buffer.bytes", "0")]).is_err());
    }
}
