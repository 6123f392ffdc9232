//! Producer-id expiration on partitions, with Kafka's names and defaults
//! (`TransactionLogConfig`: `producer.id.expiration.ms`,
//! `producer.id.expiration.check.interval.ms`).

use std::collections::BTreeMap;

use super::{ConfigError, parse};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProducerIdExpirationConfig {
    /// `producer.id.expiration.ms`: a partition forgets a producer whose last write is
    /// this old and that has no open transaction there.
    pub expiration_ms: i64,
    /// `producer.id.expiration.check.interval.ms`: how often every partition is checked.
    pub check_interval_ms: u64,
}

impl ProducerIdExpirationConfig {
    pub fn parse(
        explicit: &BTreeMap<String, String>,
    ) -> Result<ProducerIdExpirationConfig, ConfigError> {
        let config = ProducerIdExpirationConfig {
            expiration_ms: parse(explicit, "producer.id.expiration.ms", 86_400_000)?,
            check_interval_ms: parse(
                explicit,
                "producer.id.expiration.check.interval.ms",
                600_000,
            )?,
        };
        config.validate()?;
        Ok(config)
    }

    /// Kafka's ranges: expiration at least 1 ms, the check interval at least 1 ms (a zero
    /// interval would spin).
    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, value: String| ConfigError::Invalid {
            key: key.into(),
            value,
            reason: "must be at least 1".into(),
        };
        if self.expiration_ms < 1 {
            let value = self.expiration_ms.to_string();
            return Err(invalid("producer.id.expiration.ms", value));
        }
        if self.check_interval_ms < 1 {
            let key = "producer.id.expiration.check.interval.ms";
            return Err(invalid(key, "0".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(pairs: &[(&str, &str)]) -> Result<ProducerIdExpirationConfig, ConfigError> {
        let map = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        ProducerIdExpirationConfig::parse(&map)
    }

    #[test]
    fn kafkas_defaults_and_ranges() {
        let config = with(&[]).unwrap();
        assert_eq!(config.expiration_ms, 86_400_000);
        assert_eq!(config.check_interval_ms, 600_000);
        let set = with(&[
            ("producer.id.expiration.ms", "2000"),
            ("producer.id.expiration.check.interval.ms", "500"),
        ])
        .unwrap();
        assert_eq!((set.expiration_ms, set.check_interval_ms), (2_000, 500));
        assert!(with(&[("producer.id.expiration.ms", "0")]).is_err());
        assert!(with(&[("producer.id.expiration.check.interval.ms", "0")]).is_err());
        assert!(with(&[("producer.id.expiration.check.interval.ms", "-5")]).is_err());
    }
}
