//! Per-listener connection limits: `listener.name.<listener>.max.connections`, as Kafka's
//! `ListenerConnectionQuota` reads it (the listener name lowercased in the key, any case
//! accepted here; names are kept upper-case like our listener names).

use std::collections::BTreeMap;

use super::{ConfigError, parse};

const PREFIX: &str = "listener.name.";
const SUFFIX: &str = ".max.connections";

/// Every `listener.name.<name>.max.connections` given, by upper-cased listener name.
pub fn listener_connections_max(
    explicit: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, usize>, ConfigError> {
    let mut limits = BTreeMap::new();
    for key in explicit.keys() {
        let Some(name) = key
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.strip_suffix(SUFFIX))
        else {
            continue;
        };
        // `listener.name.x.max.connections.something` is some other key.
        if name.is_empty() || name.contains('.') {
            continue;
        }
        // Kafka validates it like `max.connections`, `atLeast(0)`: 0 shuts that listener
        // to every connection, a way to take it out of service without removing it.
        let max: usize = parse(explicit, key, usize::MAX)?;
        limits.insert(name.to_ascii_uppercase(), max);
    }
    Ok(limits)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect()
    }

    #[test]
    fn per_listener_limits_are_read_by_upper_cased_name() {
        let explicit = map(&[
            ("listener.name.internal.max.connections", "7"),
            ("listener.name.EXTERNAL.max.connections", "3"),
            ("listener.name.internal.ssl.keystore.location", "/x"),
            ("max.connections", "10"),
        ]);
        let limits = listener_connections_max(&explicit).unwrap();
        assert_eq!(limits.len(), 2);
        assert_eq!(limits["INTERNAL"], 7);
        assert_eq!(limits["EXTERNAL"], 3);
    }

    #[test]
    fn zero_is_accepted_as_kafka_does_and_an_unparsable_limit_is_an_error() {
        let zero = map(&[("listener.name.a.max.connections", "0")]);
        assert_eq!(listener_connections_max(&zero).unwrap()["A"], 0);
        let junk = map(&[("listener.name.a.max.connections", "many")]);
        assert!(listener_connections_max(&junk).is_err());
        let negative = map(&[("listener.name.a.max.connections", "-1")]);
        assert!(listener_connections_max(&negative).is_err());
    }
}
