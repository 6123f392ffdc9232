//! The connection limits Kafka's `SocketServer` and `ConnectionQuotas` apply, read from one
//! flat config map (the static configs with the dynamic layers over them, see
//! [`layered`]): `max.connections`, `max.connections.per.ip`,
//! `max.connections.per.ip.overrides`, `max.connection.creation.rate`, and per listener
//! `listener.name.<listener>.max.connections` / `.max.connection.creation.rate` (the
//! listener name lowercased in the key as Kafka writes it, any case accepted here; names
//! are kept upper-case like our listener names).
//!
//! Every one of them may change at run time through IncrementalAlterConfigs (Kafka's
//! `SocketServer.ReconfigurableConfigs` and `ListenerReconfigurableConfigs`), per broker or
//! as the cluster default: [`is_live`] names them, [`validate_value`] checks one value
//! with Kafka's messages, [`ConnectionLimits::from_configs`] checks how they fit together.

use std::collections::BTreeMap;

const PREFIX: &str = "listener.name.";
pub const MAX_CONNECTIONS: &str = "max.connections";
pub const MAX_CONNECTIONS_PER_IP: &str = "max.connections.per.ip";
pub const MAX_CONNECTIONS_PER_IP_OVERRIDES: &str = "max.connections.per.ip.overrides";
pub const MAX_CONNECTION_CREATION_RATE: &str = "max.connection.creation.rate";

/// Kafka's default is `Int.MaxValue`; ours bounds the broker (each connection holds buffers
/// and a task) while staying far above what one client fleet needs.
pub const CONNECTIONS_MAX_DEFAULT: usize = 65_536;
/// Kafka's `Int.MaxValue` defaults: no limit.
pub const UNLIMITED: u32 = i32::MAX as u32;
/// Overrides kept at most: each is looked up on every accept, and a config value is not
/// the place for a list longer than this.
pub const PER_IP_OVERRIDES_MAX: usize = 10_000;

/// The broker configs here that are reconfigurable; the listener-prefixed ones are matched
/// by [`is_live`].
pub const LIVE_CONFIGS: &[&str] = &[
    MAX_CONNECTION_CREATION_RATE,
    MAX_CONNECTIONS,
    MAX_CONNECTIONS_PER_IP,
    MAX_CONNECTIONS_PER_IP_OVERRIDES,
];

/// What the listeners enforce. Listener names upper-case; rates in connections per second.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionLimits {
    pub connections_max: usize,
    pub per_ip_max: usize,
    /// By host name or IP address as written; the server resolves names.
    pub per_ip_overrides: BTreeMap<String, usize>,
    pub creation_rate_max: u32,
    pub listener_connections_max: BTreeMap<String, usize>,
    pub listener_creation_rate_max: BTreeMap<String, u32>,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            connections_max: CONNECTIONS_MAX_DEFAULT,
            per_ip_max: UNLIMITED as usize,
            per_ip_overrides: BTreeMap::new(),
            creation_rate_max: UNLIMITED,
            listener_connections_max: BTreeMap::new(),
            listener_creation_rate_max: BTreeMap::new(),
        }
    }
}

/// `listener.name.<l>.<config>` -> (`l`, `config`) for the two listener limits.
fn listener_key(key: &str) -> Option<(&str, &str)> {
    let (name, config) = key.strip_prefix(PREFIX)?.split_once('.')?;
    let limit = [MAX_CONNECTIONS, MAX_CONNECTION_CREATION_RATE].contains(&config);
    (!name.is_empty() && limit).then_some((name, config))
}

/// Whether `key` is a connection limit applied live here.
pub fn is_live(key: &str) -> bool {
    LIVE_CONFIGS.contains(&key) || listener_key(key).is_some()
}

/// Kafka's INT parse and `atLeast(0)`, with `ConfigDef`'s messages. A listener-prefixed key
/// is checked as the config it prefixes (`validateConfigTypes`).
fn non_negative_int(key: &str, value: &str) -> Result<u32, String> {
    let base = listener_key(key).map_or(key, |(_, config)| config);
    let number: i32 = value.trim().parse().map_err(|_| {
        format!("Invalid value {value} for configuration {base}: Not a number of type INT")
    })?;
    u32::try_from(number).map_err(|_| {
        format!("Invalid value {value} for configuration {base}: Value must be at least 0")
    })
}

/// Checks one value set dynamically; the error is Kafka's message.
pub fn validate_value(key: &str, value: &str) -> Result<(), String> {
    if key == MAX_CONNECTIONS_PER_IP_OVERRIDES {
        return parse_overrides(value).map(drop);
    }
    let number = non_negative_int(key, value)?;
    // A listener's `ListenerConnectionQuota.validateReconfiguration` refuses what is not
    // positive, and Kafka reports it wrapped in this message.
    if listener_key(key).is_some() && number == 0 {
        return Err("Invalid dynamic configuration".to_string());
    }
    Ok(())
}

/// Kafka's `Csv.parseCsvMap` then `toInt` and `Utils.validHostPattern`: "host:count,..."
/// split at the last ':' of each pair, so IPv6 addresses keep theirs.
pub fn parse_overrides(value: &str) -> Result<BTreeMap<String, usize>, String> {
    let mut overrides = BTreeMap::new();
    if value.is_empty() {
        return Ok(overrides);
    }
    let mut invalid = Vec::new();
    for pair in value.split(',').map(str::trim) {
        let Some((host, count)) = pair.rsplit_once(':') else {
            return Err(format!(
                "Error parsing configuration property '{MAX_CONNECTIONS_PER_IP_OVERRIDES}': \
                 begin 0, end -1, length {}",
                pair.len()
            ));
        };
        let (host, count) = (host.trim(), count.trim());
        let count: i32 = count
            .parse()
            .map_err(|_| format!("For input string: \"{count}\""))?;
        let valid_host = host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-%._:".contains(c));
        if !valid_host {
            invalid.push(host.to_string());
        }
        // Kafka takes a negative override as is; it admits nobody, as 0 does.
        overrides.insert(host.to_string(), usize::try_from(count).unwrap_or(0));
    }
    if !invalid.is_empty() {
        return Err(format!(
            "{MAX_CONNECTIONS_PER_IP_OVERRIDES} contains invalid addresses : {}",
            invalid.join(",")
        ));
    }
    if overrides.len() > PER_IP_OVERRIDES_MAX {
        return Err(format!(
            "{MAX_CONNECTIONS_PER_IP_OVERRIDES} has {} entries, more than {PER_IP_OVERRIDES_MAX}",
            overrides.len()
        ));
    }
    Ok(overrides)
}

impl ConnectionLimits {
    /// The limits `configs` give, checked as Kafka's `KafkaConfig` checks them.
    pub fn from_configs(configs: &BTreeMap<String, String>) -> Result<ConnectionLimits, String> {
        let int = |key: &str, default: u32| match configs.get(key) {
            Some(value) => non_negative_int(key, value),
            None => Ok(default),
        };
        let overrides = configs
            .get(MAX_CONNECTIONS_PER_IP_OVERRIDES)
            .map_or(Ok(BTreeMap::new()), |value| parse_overrides(value))?;
        let per_ip_max = int(MAX_CONNECTIONS_PER_IP, UNLIMITED)?;
        if per_ip_max == 0 && overrides.is_empty() {
            return Err(format!(
                "requirement failed: {MAX_CONNECTIONS_PER_IP} can be set to zero only if \
                 {MAX_CONNECTIONS_PER_IP_OVERRIDES} property is set."
            ));
        }
        let mut limits = ConnectionLimits {
            connections_max: configs
                .get(MAX_CONNECTIONS)
                .map_or(Ok(CONNECTIONS_MAX_DEFAULT), |value| {
                    non_negative_int(MAX_CONNECTIONS, value).map(|max| max as usize)
                })?,
            per_ip_max: per_ip_max as usize,
            per_ip_overrides: overrides,
            creation_rate_max: int(MAX_CONNECTION_CREATION_RATE, UNLIMITED)?,
            ..ConnectionLimits::default()
        };
        for (key, value) in configs {
            let Some((name, config)) = listener_key(key) else {
                continue;
            };
            // Kafka validates these like the broker-wide ones, `atLeast(0)`: 0 shuts that
            // listener to every connection, a way to take it out of service.
            let number = non_negative_int(key, value)?;
            let name = name.to_ascii_uppercase();
            if config == MAX_CONNECTIONS {
                limits
                    .listener_connections_max
                    .insert(name, number as usize);
            } else {
                limits.listener_creation_rate_max.insert(name, number);
            }
        }
        Ok(limits)
    }

    /// The connection creation rate limit of `listener`: its own, else the broker-wide one
    /// (Kafka configures a listener's quota from its prefixed values with the unprefixed
    /// ones under them, so the broker-wide rate is also each listener's own).
    pub fn listener_rate_max(&self, listener: &str) -> u32 {
        self.listener_creation_rate_max
            .get(listener)
            .copied()
            .unwrap_or(self.creation_rate_max)
    }
}

/// The static configs with the connection limits of the dynamic layers over them: the
/// cluster default, then this broker's own (Kafka's precedence, key by key).
pub fn layered(
    explicit: &BTreeMap<String, String>,
    cluster: Option<&BTreeMap<String, String>>,
    per_broker: Option<&BTreeMap<String, String>>,
) -> BTreeMap<String, String> {
    let mut configs: BTreeMap<String, String> = explicit
        .iter()
        .filter(|(key, _)| is_live(key))
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    for layer in [cluster, per_broker].into_iter().flatten() {
        for (key, value) in layer.iter().filter(|(key, _)| is_live(key)) {
            configs.insert(key.clone(), value.clone());
        }
    }
    configs
}

/// The listeners named by a listener limit that are not among `listener_names`: the limit
/// has no effect, most likely a typo worth a warning.
pub fn unserved_listeners<'a>(
    limits: &'a ConnectionLimits,
    listener_names: &[&str],
) -> Vec<&'a str> {
    let named =
        (limits.listener_connections_max.keys()).chain(limits.listener_creation_rate_max.keys());
    let mut unserved: Vec<&str> = named
        .map(String::as_str)
        .filter(|name| !listener_names.contains(name))
        .collect();
    unserved.sort_unstable();
    unserved.dedup();
    unserved
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
            ("listener.name.external.max.connection.creation.rate", "20"),
            ("listener.name.internal.ssl.keystore.location", "/x"),
            ("max.connections", "10"),
        ]);
        let limits = ConnectionLimits::from_configs(&explicit).unwrap();
        assert_eq!(limits.listener_connections_max.len(), 2);
        assert_eq!(limits.listener_connections_max["INTERNAL"], 7);
        assert_eq!(limits.listener_connections_max["EXTERNAL"], 3);
        assert_eq!(limits.connections_max, 10);
        assert_eq!(limits.listener_rate_max("EXTERNAL"), 20);
        assert_eq!(limits.listener_rate_max("INTERNAL"), UNLIMITED);
    }

    #[test]
    fn defaults_are_kafkas_but_max_connections() {
        let limits = ConnectionLimits::from_configs(&BTreeMap::new()).unwrap();
        assert_eq!(limits, ConnectionLimits::default());
        assert_eq!(limits.per_ip_max, i32::MAX as usize);
        assert_eq!(limits.creation_rate_max, i32::MAX as u32);
    }

    #[test]
    fn zero_is_accepted_as_kafka_does_and_an_unparsable_limit_is_an_error() {
        let zero = map(&[("listener.name.a.max.connections", "0")]);
        let limits = ConnectionLimits::from_configs(&zero).unwrap();
        assert_eq!(limits.listener_connections_max["A"], 0);
        let junk = map(&[("listener.name.a.max.connections", "many")]);
        assert_eq!(
            ConnectionLimits::from_configs(&junk).unwrap_err(),
            "Invalid value many for configuration max.connections: Not a number of type INT"
        );
        let negative = map(&[("max.connection.creation.rate", "-1")]);
        assert_eq!(
            ConnectionLimits::from_configs(&negative).unwrap_err(),
            "Invalid value -1 for configuration max.connection.creation.rate: \
             Value must be at least 0"
        );
        let too_big = map(&[("max.connections", "2147483648")]);
        assert!(ConnectionLimits::from_configs(&too_big).is_err());
    }

    #[test]
    fn overrides_parse_as_kafkas_csv_map() {
        let overrides = parse_overrides("127.0.0.1:5, broker-1.example:0 ,::1:7").unwrap();
        assert_eq!(overrides["127.0.0.1"], 5);
        assert_eq!(overrides["broker-1.example"], 0);
        assert_eq!(overrides["::1"], 7);
        assert!(parse_overrides("").unwrap().is_empty());
        assert_eq!(
            parse_overrides("127.0.0.1:x").unwrap_err(),
            "For input string: \"x\""
        );
        assert_eq!(
            parse_overrides("a b:1,c/d:2").unwrap_err(),
            "max.connections.per.ip.overrides contains invalid addresses : a b,c/d"
        );
        assert!(
            parse_overrides("nocolon")
                .unwrap_err()
                .starts_with("Error parsing")
        );
    }

    #[test]
    fn zero_per_ip_needs_overrides() {
        let alone = map(&[("max.connections.per.ip", "0")]);
        let error = ConnectionLimits::from_configs(&alone).unwrap_err();
        assert!(error.contains("can be set to zero only if"), "{error}");
        let with = map(&[
            ("max.connections.per.ip", "0"),
            ("max.connections.per.ip.overrides", "10.0.0.1:3"),
        ]);
        let limits = ConnectionLimits::from_configs(&with).unwrap();
        assert_eq!(limits.per_ip_max, 0);
        assert_eq!(limits.per_ip_overrides["10.0.0.1"], 3);
    }

    #[test]
    fn live_keys_and_dynamic_values() {
        assert!(is_live("max.connections.per.ip.overrides"));
        assert!(is_live(
            "listener.name.external.max.connection.creation.rate"
        ));
        assert!(!is_live("listener.name.external.max.connections.per.ip"));
        assert!(!is_live("listener.name..max.connections"));
        assert!(!is_live("num.network.threads"));
        assert!(validate_value("max.connections", "0").is_ok());
        assert!(validate_value("listener.name.a.max.connections", "1").is_ok());
        assert_eq!(
            validate_value("listener.name.a.max.connections", "0").unwrap_err(),
            "Invalid dynamic configuration"
        );
        assert!(validate_value("max.connections.per.ip.overrides", "h:1").is_ok());
    }

    #[test]
    fn dynamic_layers_win_key_by_key() {
        let explicit = map(&[("max.connections", "10"), ("log.dirs", "/x")]);
        let cluster = map(&[("max.connections", "20"), ("max.connections.per.ip", "3")]);
        let broker = map(&[("max.connections.per.ip", "4"), ("message.max.bytes", "5")]);
        let layered = layered(&explicit, Some(&cluster), Some(&broker));
        assert_eq!(
            layered,
            map(&[("max.connections", "20"), ("max.connections.per.ip", "4")])
        );
    }

    #[test]
    fn a_limit_on_a_listener_not_served_is_reported() {
        let configs = map(&[
            ("listener.name.external.max.connections", "1"),
            ("listener.name.extrenal.max.connections", "2"),
            ("listener.name.extrenal.max.connection.creation.rate", "2"),
        ]);
        let limits = ConnectionLimits::from_configs(&configs).unwrap();
        let unserved = unserved_listeners(&limits, &["EXTERNAL", "INTERNAL"]);
        assert_eq!(unserved, ["EXTRENAL"]);
    }
}
