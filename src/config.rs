//! Broker configuration with Kafka's names and defaults.
//!
//! Sources, later wins: built-in defaults, a `.properties` file (`--config FILE`),
//! `KAFKA_`-style environment variables (`KAFKA_LOG_DIRS` -> `log.dirs`, `__` -> `_`,
//! `___` -> `-`, as the common Kafka images do), and `--override key=value` flags.
//! The raw map is kept so DescribeConfigs can tell which keys the operator set.

use std::collections::BTreeMap;
use std::path::PathBuf;

use thiserror::Error;

use crate::types::NodeId;

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid value for {key}: {value:?} ({reason})")]
    Invalid {
        key: String,
        value: String,
        reason: String,
    },
    #[error("bad command line: {0}")]
    Usage(String),
}

/// Where one listener accepts clients.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub name: String,
    pub host: String,
    pub port: u16,
}

#[derive(Clone, Debug)]
pub struct BrokerConfig {
    /// Every key the operator set (file, env, flags), for DescribeConfigs sources.
    pub explicit: BTreeMap<String, String>,
    pub node_id: NodeId,
    pub listener: Endpoint,
    pub advertised: Endpoint,
    pub log_dirs: PathBuf,
    pub num_partitions: i32,
    pub default_replication_factor: i16,
    pub auto_create_topics_enable: bool,
    pub delete_topic_enable: bool,
    /// `socket.request.max.bytes`: a larger frame closes the connection.
    pub frame_bytes_max: usize,
    /// `queued.max.request.bytes`: request bytes in memory broker-wide; a connection
    /// whose next frame does not fit stops reading until it does. `None` (a value <= 0,
    /// as in Kafka) is unbounded. Kafka's default is unbounded; ours is 128 MiB so a
    /// burst of large produces cannot take the broker's memory with it.
    pub queued_request_bytes_max: Option<u32>,
    /// `max.connections`: accepted sockets beyond this wait for a free slot.
    pub connections_max: usize,
    /// `connections.max.idle.ms`: idle connections are closed after this.
    pub connection_idle_ms_max: u64,
    /// Partitions one CreateTopics/CreatePartitions call may create (guards memory and disk).
    pub partitions_per_request_max: i32,
    pub retention_check_interval_ms: u64,
    /// `log.flush.scheduler.interval.ms`-like tick for `flush.ms` (only when it is finite).
    pub flush_check_interval_ms: u64,
    /// `fetch.max.bytes`: cap on one fetch response, whatever the client asks.
    pub fetch_bytes_max: usize,
    /// `offsets.topic.num.partitions`
    pub offsets_topic_partitions: i32,
    /// `offsets.topic.replication.factor`; Kafka's default is 3, ours 1 so that the
    /// embedded single node works without configuration (clusters set 3).
    pub offsets_topic_replication_factor: i16,
    /// `offsets.retention.minutes` in ms (Kafka default 7 days).
    pub offsets_retention_ms: i64,
    /// `offsets.retention.check.interval.ms`
    pub offsets_retention_check_interval_ms: u64,
    /// `group.min.session.timeout.ms`
    pub group_session_timeout_ms_min: i32,
    /// `group.max.session.timeout.ms`
    pub group_session_timeout_ms_max: i32,
    /// `group.initial.rebalance.delay.ms`
    pub group_initial_rebalance_delay_ms: i32,
    /// `group.max.size`
    pub group_size_max: i32,
    /// `log.cleaner.backoff.ms`: how often compacted topics are checked for cleaning.
    pub cleaner_backoff_ms: u64,
    /// `num.recovery.threads.per.data.dir`: threads that open (and recover) logs at
    /// start-up and flush them at shutdown.
    pub recovery_threads_per_data_dir: usize,
    /// `log.cleaner.dedupe.buffer.size`: memory of the cleaner's offset map; a pass that
    /// fills it cleans part of the log and leaves the rest for the next pass.
    pub cleaner_dedupe_buffer_bytes: u64,
}

/// Upper bound of `num.recovery.threads.per.data.dir` (each is an OS thread).
const RECOVERY_THREADS_MAX: usize = 256;

/// Keys whose value may be given in hours/minutes/ms form, resolved ms first as Kafka does.
const TIME_FAMILIES: [(&str, &str, &str, i64); 2] = [
    (
        "log.retention.ms",
        "log.retention.minutes",
        "log.retention.hours",
        168,
    ),
    ("log.roll.ms", "log.roll.minutes", "log.roll.hours", 168),
];

impl BrokerConfig {
    /// Builds the configuration from the process arguments and environment.
    pub fn from_args_and_env(
        args: impl IntoIterator<Item = String>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<BrokerConfig, ConfigError> {
        let mut explicit = BTreeMap::new();
        let mut overrides = Vec::new();
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--config" | "-c" => {
                    let path = PathBuf::from(next_value(&mut args, &arg)?);
                    let text = std::fs::read_to_string(&path)
                        .map_err(|source| ConfigError::File { path, source })?;
                    explicit.extend(parse_properties(&text));
                }
                "--override" | "-o" => overrides.push(next_value(&mut args, &arg)?),
                other => return Err(ConfigError::Usage(format!("unknown argument {other}"))),
            }
        }
        for (name, value) in env {
            if let Some(key) = env_key(&name) {
                explicit.insert(key, value);
            }
        }
        for item in overrides {
            let (key, value) = item
                .split_once('=')
                .ok_or_else(|| ConfigError::Usage(format!("--override wants key=value: {item}")))?;
            explicit.insert(key.trim().to_string(), value.trim().to_string());
        }
        BrokerConfig::from_map(explicit)
    }

    pub fn from_map(explicit: BTreeMap<String, String>) -> Result<BrokerConfig, ConfigError> {
        let get = |key: &str| explicit.get(key).map(String::as_str);
        let listeners = get("listeners").unwrap_or("PLAINTEXT://127.0.0.1:9092");
        let listener = parse_listener("listeners", listeners)?;
        let advertised = match get("advertised.listeners") {
            Some(value) => parse_listener("advertised.listeners", value)?,
            None => listener.clone(),
        };
        let config = BrokerConfig {
            node_id: parse(&explicit, "node.id", 1)?,
            listener,
            advertised,
            log_dirs: PathBuf::from(
                get("log.dirs")
                    .or(get("log.dir"))
                    .unwrap_or("./data")
                    .split(',')
                    .next()
                    .unwrap_or(""),
            ),
            num_partitions: parse(&explicit, "num.partitions", 1)?,
            default_replication_factor: parse(&explicit, "default.replication.factor", 1)?,
            auto_create_topics_enable: parse(&explicit, "auto.create.topics.enable", true)?,
            delete_topic_enable: parse(&explicit, "delete.topic.enable", true)?,
            frame_bytes_max: parse(&explicit, "socket.request.max.bytes", 104_857_600)?,
            queued_request_bytes_max: queued_request_bytes(&explicit)?,
            connections_max: parse(&explicit, "max.connections", 65_536)?,
            connection_idle_ms_max: parse(&explicit, "connections.max.idle.ms", 600_000)?,
            partitions_per_request_max: parse(&explicit, "partitions.per.request.max", 10_000)?,
            retention_check_interval_ms: parse(
                &explicit,
                "log.retention.check.interval.ms",
                300_000,
            )?,
            flush_check_interval_ms: parse(&explicit, "log.flush.scheduler.interval.ms", 1_000)?,
            fetch_bytes_max: parse(&explicit, "fetch.max.bytes", 57_671_680)?,
            offsets_topic_partitions: parse(&explicit, "offsets.topic.num.partitions", 50)?,
            offsets_topic_replication_factor: parse(
                &explicit,
                "offsets.topic.replication.factor",
                1,
            )?,
            offsets_retention_ms: parse::<i64>(&explicit, "offsets.retention.minutes", 10_080)?
                .saturating_mul(60_000),
            offsets_retention_check_interval_ms: parse(
                &explicit,
                "offsets.retention.check.interval.ms",
                600_000,
            )?,
            group_session_timeout_ms_min: parse(&explicit, "group.min.session.timeout.ms", 6_000)?,
            group_session_timeout_ms_max: parse(
                &explicit,
                "group.max.session.timeout.ms",
                1_800_000,
            )?,
            group_initial_rebalance_delay_ms: parse(
                &explicit,
                "group.initial.rebalance.delay.ms",
                3_000,
            )?,
            group_size_max: parse(&explicit, "group.max.size", i32::MAX)?,
            cleaner_backoff_ms: parse(&explicit, "log.cleaner.backoff.ms", 15_000)?,
            // Kafka 4.0 raised the default from 1 to 2 (KIP-1030).
            recovery_threads_per_data_dir: parse(
                &explicit,
                "num.recovery.threads.per.data.dir",
                2,
            )?,
            cleaner_dedupe_buffer_bytes: parse(
                &explicit,
                "log.cleaner.dedupe.buffer.size",
                134_217_728,
            )?,
            explicit,
        };
        config.validate()?;
        Ok(config)
    }

    /// Checks how the limits relate, so a bad combination fails at start-up, not mid-request.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, value: String, reason: &str| ConfigError::Invalid {
            key: key.into(),
            value,
            reason: reason.into(),
        };
        if self.num_partitions < 1 {
            return Err(invalid(
                "num.partitions",
                self.num_partitions.to_string(),
                "must be >= 1",
            ));
        }
        if self.default_replication_factor < 1 {
            let value = self.default_replication_factor.to_string();
            return Err(invalid("default.replication.factor", value, "must be >= 1"));
        }
        if self.frame_bytes_max < 64 || self.frame_bytes_max > i32::MAX as usize {
            let value = self.frame_bytes_max.to_string();
            return Err(invalid(
                "socket.request.max.bytes",
                value,
                "must be 64..=2^31-1",
            ));
        }
        if self.offsets_topic_partitions < 1 {
            let value = self.offsets_topic_partitions.to_string();
            return Err(invalid(
                "offsets.topic.num.partitions",
                value,
                "must be >= 1",
            ));
        }
        if self.connections_max == 0 {
            return Err(invalid("max.connections", "0".into(), "must be >= 1"));
        }
        // Kafka's rule (one cleaner thread here): at least 1 MiB per cleaner thread.
        if self.cleaner_dedupe_buffer_bytes <= 1024 * 1024 {
            let value = self.cleaner_dedupe_buffer_bytes.to_string();
            let reason = "must be more than 1 MiB";
            return Err(invalid("log.cleaner.dedupe.buffer.size", value, reason));
        }
        if self.log_dirs.as_os_str().is_empty() {
            return Err(invalid("log.dirs", String::new(), "must name a directory"));
        }
        if !(1..=RECOVERY_THREADS_MAX).contains(&self.recovery_threads_per_data_dir) {
            let value = self.recovery_threads_per_data_dir.to_string();
            let key = "num.recovery.threads.per.data.dir";
            return Err(invalid(key, value, "must be 1..=256"));
        }
        Ok(())
    }

    /// The broker-level default of a `log.*` key in milliseconds, honouring the
    /// hours/minutes/ms families as Kafka resolves them.
    pub fn time_ms(&self, ms_key: &str) -> Option<i64> {
        let (_, minutes_key, hours_key, hours_default) =
            TIME_FAMILIES.iter().find(|family| family.0 == ms_key)?;
        let get = |key: &str| {
            self.explicit
                .get(key)
                .and_then(|v| v.trim().parse::<i64>().ok())
        };
        Some(
            get(ms_key)
                .or_else(|| get(minutes_key).map(|m| m * 60_000))
                .or_else(|| get(hours_key).map(|h| h * 3_600_000))
                .unwrap_or(hours_default * 3_600_000),
        )
    }
}

fn next_value(args: &mut impl Iterator<Item = String>, flag: &str) -> Result<String, ConfigError> {
    args.next()
        .ok_or_else(|| ConfigError::Usage(format!("{flag} needs a value")))
}

/// `queued.max.request.bytes`; <= 0 means unbounded, as in Kafka.
fn queued_request_bytes(map: &BTreeMap<String, String>) -> Result<Option<u32>, ConfigError> {
    const KEY: &str = "queued.max.request.bytes";
    let bytes: i64 = parse(map, KEY, 134_217_728)?;
    if bytes <= 0 {
        return Ok(None);
    }
    // The budget counts bytes with a u32 semaphore; beyond 4 GiB, set it unbounded.
    u32::try_from(bytes)
        .map(Some)
        .map_err(|_| ConfigError::Invalid {
            key: KEY.into(),
            value: bytes.to_string(),
            reason: "must be <= 4294967295 (or <= 0 for unbounded)".into(),
        })
}

fn parse<T: std::str::FromStr>(
    map: &BTreeMap<String, String>,
    key: &str,
    default: T,
) -> Result<T, ConfigError> {
    match map.get(key) {
        None => Ok(default),
        Some(value) => value.trim().parse().map_err(|_| ConfigError::Invalid {
            key: key.into(),
            value: value.clone(),
            reason: "not a valid value of its type".into(),
        }),
    }
}

/// `KAFKA_LOG_RETENTION_MS` -> `log.retention.ms`; `KAFKA_` prefixed names only.
fn env_key(name: &str) -> Option<String> {
    let rest = name.strip_prefix("KAFKA_")?;
    if rest.is_empty() || rest.starts_with("OPTS") || rest.starts_with("HEAP") {
        return None;
    }
    Some(
        rest.to_lowercase()
            .replace("___", "-")
            .replace("__", "\0")
            .replace('_', ".")
            .replace('\0', "_"),
    )
}

/// Java `.properties` subset: `key=value` or `key: value`, `#`/`!` comments.
pub fn parse_properties(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#') && !line.starts_with('!'))
        .filter_map(|line| {
            let split = line.find(['=', ':'])?;
            Some((
                line[..split].trim().to_string(),
                line[split + 1..].trim().to_string(),
            ))
        })
        .collect()
}

/// `PLAINTEXT://host:port` (first entry of a list). Empty host means all interfaces.
fn parse_listener(key: &str, value: &str) -> Result<Endpoint, ConfigError> {
    let invalid = |reason: &str| ConfigError::Invalid {
        key: key.into(),
        value: value.into(),
        reason: reason.into(),
    };
    let first = value.split(',').next().unwrap_or("").trim();
    let (name, address) = first
        .split_once("://")
        .ok_or_else(|| invalid("want NAME://host:port"))?;
    let (host, port) = address
        .rsplit_once(':')
        .ok_or_else(|| invalid("missing port"))?;
    let port: u16 = port.parse().map_err(|_| invalid("bad port"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Ok(Endpoint {
        name: name.to_string(),
        host: host.to_string(),
        port,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn defaults_are_kafkas() {
        let config = BrokerConfig::from_args_and_env(vec![], vec![]).unwrap();
        assert_eq!(config.listener.port, 9092);
        assert_eq!(config.listener.host, "127.0.0.1");
        assert_eq!(config.log_dirs, PathBuf::from("./data"));
        assert_eq!(config.num_partitions, 1);
        assert!(config.auto_create_topics_enable);
        assert_eq!(config.frame_bytes_max, 104_857_600);
        assert_eq!(config.time_ms("log.retention.ms"), Some(604_800_000));
        assert_eq!(config.recovery_threads_per_data_dir, 2);
        assert_eq!(config.cleaner_dedupe_buffer_bytes, 134_217_728);
    }

    #[test]
    fn the_dedupe_buffer_needs_more_than_one_mebibyte() {
        let config = |value: &str| {
            let arg = format!("log.cleaner.dedupe.buffer.size={value}");
            BrokerConfig::from_args_and_env(args(&["-o", &arg]), vec![])
        };
        assert!(matches!(
            config("1048576"),
            Err(ConfigError::Invalid { .. })
        ));
        assert_eq!(
            config("1048577").unwrap().cleaner_dedupe_buffer_bytes,
            1_048_577
        );
    }

    #[test]
    fn queued_request_bytes_is_bounded_by_default_and_unbounded_at_or_below_zero() {
        let with = |value: &str| {
            let flag = format!("queued.max.request.bytes={value}");
            BrokerConfig::from_args_and_env(args(&["--override", &flag]), vec![])
        };
        let config = BrokerConfig::from_args_and_env(vec![], vec![]).unwrap();
        assert_eq!(config.queued_request_bytes_max, Some(134_217_728));
        assert_eq!(with("-1").unwrap().queued_request_bytes_max, None);
        assert_eq!(with("0").unwrap().queued_request_bytes_max, None);
        assert_eq!(
            with("1048576").unwrap().queued_request_bytes_max,
            Some(1 << 20)
        );
        assert!(matches!(
            with("4294967296"),
            Err(ConfigError::Invalid { key, .. }) if key == "queued.max.request.bytes"
        ));
        assert!(with("lots").is_err());
    }

    #[test]
    fn later_sources_win() {
        let env = vec![
            ("KAFKA_NUM_PARTITIONS".to_string(), "3".to_string()),
            ("KAFKA_LOG_RETENTION_HOURS".to_string(), "1".to_string()),
            ("PATH".to_string(), "/bin".to_string()),
        ];
        let config = BrokerConfig::from_args_and_env(
            args(&[
                "--override",
                "num.partitions=5",
                "-o",
                "listeners=PLAINTEXT://:19092",
            ]),
            env,
        )
        .unwrap();
        assert_eq!(config.num_partitions, 5);
        assert_eq!(config.listener.host, "");
        assert_eq!(config.listener.port, 19092);
        assert_eq!(config.time_ms("log.retention.ms"), Some(3_600_000));
        assert!(config.explicit.contains_key("log.retention.hours"));
    }

    #[test]
    fn env_names_map_like_kafka_images() {
        assert_eq!(env_key("KAFKA_LOG_DIRS").as_deref(), Some("log.dirs"));
        assert_eq!(env_key("KAFKA_A__B___C").as_deref(), Some("a_b-c"));
        assert_eq!(env_key("KAFKA_HEAP_OPTS"), None);
        assert_eq!(env_key("HOME"), None);
    }

    #[test]
    fn bad_values_are_rejected() {
        let err = BrokerConfig::from_args_and_env(args(&["-o", "num.partitions=zero"]), vec![]);
        assert!(matches!(err, Err(ConfigError::Invalid { .. })));
        let err = BrokerConfig::from_args_and_env(args(&["-o", "num.partitions=0"]), vec![]);
        assert!(matches!(err, Err(ConfigError::Invalid { .. })));
        let threads = ["-o", "num.recovery.threads.per.data.dir=0"];
        let err = BrokerConfig::from_args_and_env(args(&threads), vec![]);
        assert!(matches!(err, Err(ConfigError::Invalid { .. })));
        let err = BrokerConfig::from_args_and_env(args(&["--bogus"]), vec![]);
        assert!(matches!(err, Err(ConfigError::Usage(_))));
    }

    #[test]
    fn properties_files_parse() {
        let map = parse_properties("# c\nnode.id=2\nlog.dirs : /x\n\n! other\n");
        assert_eq!(map.get("node.id").map(String::as_str), Some("2"));
        assert_eq!(map.get("log.dirs").map(String::as_str), Some("/x"));
        assert_eq!(map.len(), 2);
    }
}
