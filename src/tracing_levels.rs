//! The process's log filter, and Kafka's BROKER_LOGGER resource over it: the filter is
//! built at start from `log.filter` (or `RUST_LOG`), and a logger's level can then be
//! described and changed while the broker runs (`kafka-configs --entity-type
//! broker-loggers`, DescribeConfigs / IncrementalAlterConfigs on resource type 8).
//!
//! As in Kafka, a changed level lives in this process only (it is gone after a restart)
//! and applies to this broker only. A logger is a `tracing` target: the root (the
//! filter's default level), this crate, each of its top-level modules, and the
//! dependencies that log ([`LOGGERS`]). A logger with no level of its own has the level
//! the start-up filter gives its target (its most specific directive), else the root's.
//!
//! Levels are Kafka's names (`LogLevelConfig.VALID_LOG_LEVELS`); tracing has no level
//! above ERROR, so FATAL filters as ERROR (and is described as FATAL when set so).
//!
//! The filter is a `reload` layer: a change rebuilds it from the start-up directives plus
//! the per-logger levels, the root's replacing the start-up default level. Reloading
//! rebuilds the callsite interest cache, so disabled callsites still cost one check.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, OnceLock};

use thiserror::Error;
use tracing_subscriber::{EnvFilter, Registry, reload};

pub const ROOT_LOGGER: &str = "root";

/// Kafka's log levels with the tracing level each filters at.
const LEVELS: [(&str, &str); 6] = [
    ("FATAL", "error"),
    ("ERROR", "error"),
    ("WARN", "warn"),
    ("INFO", "info"),
    ("DEBUG", "debug"),
    ("TRACE", "trace"),
];

/// Every logger that can be described and set (a unit test keeps the crate's modules
/// complete).
pub const LOGGERS: &[&str] = &[
    ROOT_LOGGER,
    "gracchus",
    "gracchus::allocator",
    "gracchus::api",
    "gracchus::auto_create",
    "gracchus::broker",
    "gracchus::cli",
    "gracchus::client_quota",
    "gracchus::config",
    "gracchus::controller",
    "gracchus::group",
    "gracchus::http",
    "gracchus::log",
    "gracchus::tracing_levels",
    "gracchus::meta_properties",
    "gracchus::metrics",
    "gracchus::record_fields",
    "gracchus::replica",
    "gracchus::request_frame",
    "gracchus::server",
    "gracchus::status",
    "gracchus::topic_config",
    "gracchus::txn",
    "gracchus::types",
    "openraft",
];

/// A filter text used where none was installed (tests, tools): the `log.filter` default.
const DEFAULT_FILTER: &str = "info";

#[derive(Debug, Error, PartialEq, Eq)]
pub enum LoggerError {
    /// Kafka's InvalidConfigException (INVALID_CONFIG).
    #[error("{0}")]
    InvalidConfig(String),
    /// Kafka's InvalidRequestException (INVALID_REQUEST).
    #[error("{0}")]
    InvalidRequest(String),
}

/// An IncrementalAlterConfigs operation on a logger; APPEND and SUBTRACT are refused by
/// the API before they get here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LoggerOp {
    Set(String),
    Delete,
}

pub struct LoggerLevels {
    state: Mutex<State>,
}

struct State {
    /// The start-up filter's directives.
    base: String,
    /// Levels set since start (Kafka names), by logger.
    levels: BTreeMap<String, String>,
    /// The live filter; `None` when the process installed no subscriber through
    /// [`LoggerLevels::install`] (tests): levels are kept and described, nothing reloads.
    handle: Option<reload::Handle<EnvFilter, Registry>>,
}

/// The process's one instance.
pub fn global() -> &'static LoggerLevels {
    static LEVELS: OnceLock<LoggerLevels> = OnceLock::new();
    LEVELS.get_or_init(|| LoggerLevels::new(DEFAULT_FILTER))
}

impl LoggerLevels {
    fn new(base: &str) -> LoggerLevels {
        LoggerLevels {
            state: Mutex::new(State {
                base: base.to_string(),
                levels: BTreeMap::new(),
                handle: None,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Parses `filter` (RUST_LOG syntax) and returns the layer to put first on the
    /// registry; later changes reload it.
    pub fn install(
        &self,
        filter: &str,
    ) -> Result<reload::Layer<EnvFilter, Registry>, tracing_subscriber::filter::ParseError> {
        let parsed = EnvFilter::try_new(filter)?;
        let (layer, handle) = reload::Layer::new(parsed);
        let mut state = self.lock();
        state.base = filter.to_string();
        state.handle = Some(handle);
        Ok(layer)
    }

    /// Every logger with its level (Kafka's `Log4jController.loggers`).
    pub fn describe(&self) -> Vec<(String, String)> {
        let state = self.lock();
        LOGGERS
            .iter()
            .map(|logger| (logger.to_string(), state.level_of(logger)))
            .collect()
    }

    /// Checks `ops` as Kafka's `ConfigAdminManager.validateLogLevelConfigs` does.
    pub fn validate(ops: &[(String, LoggerOp)]) -> Result<(), LoggerError> {
        for (logger, op) in ops {
            if !LOGGERS.contains(&logger.as_str()) {
                return Err(LoggerError::InvalidConfig(format!(
                    "Logger {logger} does not exist!"
                )));
            }
            match op {
                LoggerOp::Set(level) if tracing_level(level).is_none() => {
                    let valid: Vec<&str> = LEVELS.iter().map(|(name, _)| *name).collect();
                    return Err(LoggerError::InvalidConfig(format!(
                        "Cannot set the log level of {logger} to {level} as it is not a \
                         supported log level. Valid log levels are {}",
                        valid.join(", ")
                    )));
                }
                LoggerOp::Delete if logger == ROOT_LOGGER => {
                    return Err(LoggerError::InvalidRequest(format!(
                        "Removing the log level of the {ROOT_LOGGER} logger is not allowed"
                    )));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Validates, then applies `ops` together: the filter is rebuilt once.
    pub fn apply(&self, ops: &[(String, LoggerOp)]) -> Result<(), LoggerError> {
        Self::validate(ops)?;
        let mut state = self.lock();
        let mut levels = state.levels.clone();
        for (logger, op) in ops {
            match op {
                LoggerOp::Set(level) => levels.insert(logger.clone(), level.clone()),
                LoggerOp::Delete => levels.remove(logger),
            };
        }
        let text = filter_text(&state.base, &levels);
        if let Some(handle) = &state.handle {
            let filter = EnvFilter::try_new(&text).map_err(|error| {
                LoggerError::InvalidConfig(format!("the log filter {text:?} is invalid: {error}"))
            })?;
            handle.reload(filter).map_err(|error| {
                LoggerError::InvalidConfig(format!("reloading the log filter failed: {error}"))
            })?;
        }
        state.levels = levels;
        tracing::info!(filter = %text, "log levels changed");
        Ok(())
    }
}

impl State {
    /// A logger's own level, else what the live filter gives its target: the most
    /// specific directive (a parent logger's level, or the start-up filter's), else the
    /// root's.
    fn level_of(&self, logger: &str) -> String {
        if let Some(level) = self.levels.get(logger) {
            return level.clone();
        }
        let text = filter_text(&self.base, &self.levels);
        let level = match logger {
            ROOT_LOGGER => default_level(&text),
            _ => most_specific(&text, logger).or_else(|| default_level(&text)),
        };
        level.map_or_else(|| "OFF".to_string(), |level| kafka_name(&level))
    }
}

/// The tracing level a Kafka level name filters at (case-sensitive, as Kafka's check).
fn tracing_level(kafka: &str) -> Option<&'static str> {
    LEVELS
        .iter()
        .find(|(name, _)| *name == kafka)
        .map(|(_, level)| *level)
}

fn kafka_name(tracing: &str) -> String {
    match tracing.to_ascii_lowercase().as_str() {
        "off" => "OFF".to_string(),
        other => other.to_ascii_uppercase(),
    }
}

fn is_level(text: &str) -> bool {
    ["off", "error", "warn", "info", "debug", "trace"]
        .iter()
        .any(|level| level.eq_ignore_ascii_case(text))
}

/// The directives of a filter text that name a target and a level, without span or
/// field filters: (target, level). A bare target (no `=`) enables it at TRACE.
fn target_directives(base: &str) -> impl Iterator<Item = (&str, &str)> {
    base.split(',')
        .map(str::trim)
        .filter(|directive| !directive.is_empty() && !directive.contains('['))
        .filter_map(|directive| match directive.split_once('=') {
            Some((target, level)) => Some((target, level)),
            None if is_level(directive) => None,
            None => Some((directive, "trace")),
        })
}

/// The default level of a filter text: its last bare level.
fn default_level(base: &str) -> Option<String> {
    base.split(',')
        .map(str::trim)
        .rfind(|directive| is_level(directive))
        .map(str::to_string)
}

/// The level of the most specific directive of `base` whose target `logger` starts with.
fn most_specific(base: &str, logger: &str) -> Option<String> {
    target_directives(base)
        .filter(|(target, _)| logger.starts_with(target))
        .max_by_key(|(target, _)| target.len())
        .map(|(_, level)| level.to_string())
}

/// The filter text for `base` with `levels` on top: the root's level replaces the
/// default level, a logger's replaces a directive for exactly its target.
fn filter_text(base: &str, levels: &BTreeMap<String, String>) -> String {
    let mut directives: Vec<String> = base
        .split(',')
        .map(str::trim)
        .filter(|directive| !directive.is_empty())
        .filter(|directive| {
            if is_level(directive) {
                return !levels.contains_key(ROOT_LOGGER);
            }
            let target = directive.split_once('=').map_or(*directive, |(t, _)| t);
            !levels.contains_key(target)
        })
        .map(str::to_string)
        .collect();
    for (logger, level) in levels {
        let level = tracing_level(level).unwrap_or("info");
        if logger == ROOT_LOGGER {
            directives.insert(0, level.to_string());
        } else {
            directives.push(format!("{logger}={level}"));
        }
    }
    directives.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(logger: &str, level: &str) -> (String, LoggerOp) {
        (logger.to_string(), LoggerOp::Set(level.to_string()))
    }

    fn delete(logger: &str) -> (String, LoggerOp) {
        (logger.to_string(), LoggerOp::Delete)
    }

    fn level(levels: &LoggerLevels, logger: &str) -> String {
        let described = levels.describe();
        described
            .into_iter()
            .find(|(name, _)| name == logger)
            .map(|(_, level)| level)
            .unwrap()
    }

    #[test]
    fn loggers_inherit_from_the_start_up_filter_then_the_root() {
        let levels = LoggerLevels::new("info,openraft=warn,gracchus::replica=debug");
        assert_eq!(level(&levels, ROOT_LOGGER), "INFO");
        assert_eq!(level(&levels, "openraft"), "WARN");
        assert_eq!(level(&levels, "gracchus::replica"), "DEBUG");
        assert_eq!(level(&levels, "gracchus::api"), "INFO");
        levels.apply(&[set(ROOT_LOGGER, "ERROR")]).unwrap();
        assert_eq!(level(&levels, "gracchus::api"), "ERROR");
        assert_eq!(level(&levels, "openraft"), "WARN");
        assert_eq!(LoggerLevels::new("gracchus=debug").describe()[0].1, "OFF");
    }

    #[test]
    fn set_and_delete_rebuild_the_filter_text() {
        let levels = LoggerLevels::new("info,openraft=warn");
        levels
            .apply(&[set("openraft", "DEBUG"), set("gracchus::txn", "TRACE")])
            .unwrap();
        assert_eq!(level(&levels, "openraft"), "DEBUG");
        assert_eq!(level(&levels, "gracchus::txn"), "TRACE");
        // A child logger follows its parent's level, as in log4j.
        levels.apply(&[set("gracchus", "WARN")]).unwrap();
        assert_eq!(level(&levels, "gracchus::api"), "WARN");
        levels.apply(&[delete("gracchus")]).unwrap();
        let text = {
            let state = levels.lock();
            filter_text(&state.base, &state.levels)
        };
        assert_eq!(text, "info,gracchus::txn=trace,openraft=debug");
        levels
            .apply(&[delete("openraft"), set(ROOT_LOGGER, "FATAL")])
            .unwrap();
        let text = {
            let state = levels.lock();
            filter_text(&state.base, &state.levels)
        };
        assert_eq!(text, "error,openraft=warn,gracchus::txn=trace");
        assert_eq!(level(&levels, "openraft"), "WARN");
        assert_eq!(level(&levels, ROOT_LOGGER), "FATAL");
        EnvFilter::try_new(&text).unwrap();
    }

    #[test]
    fn kafka_errors_for_unknown_loggers_levels_and_removing_the_root() {
        let levels = LoggerLevels::new("info");
        assert_eq!(
            levels.apply(&[set("kafka.server.X", "DEBUG")]),
            Err(LoggerError::InvalidConfig(
                "Logger kafka.server.X does not exist!".into()
            ))
        );
        let bad = levels.apply(&[set("gracchus", "LOUD")]).unwrap_err();
        assert!(matches!(&bad, LoggerError::InvalidConfig(m)
            if m.starts_with("Cannot set the log level of gracchus to LOUD")));
        // Kafka's level names are case-sensitive.
        assert!(levels.apply(&[set("gracchus", "debug")]).is_err());
        assert_eq!(
            levels.apply(&[delete(ROOT_LOGGER)]),
            Err(LoggerError::InvalidRequest(
                "Removing the log level of the root logger is not allowed".into()
            ))
        );
        // A refused request changes nothing, even its valid parts.
        assert!(
            levels
                .apply(&[set("gracchus", "DEBUG"), set("nope", "DEBUG")])
                .is_err()
        );
        assert_eq!(level(&levels, "gracchus"), "INFO");
    }

    #[test]
    fn every_top_level_module_is_a_logger() {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
        let mut test_only = false;
        for line in lib.lines() {
            // A `#[cfg(test)]` module never runs in the broker.
            if line.trim() == "#[cfg(test)]" {
                test_only = true;
                continue;
            }
            let skip = std::mem::take(&mut test_only);
            if let Some(module) = line.strip_prefix("pub mod ").filter(|_| !skip) {
                let logger = format!("gracchus::{}", module.trim_end_matches(';'));
                assert!(LOGGERS.contains(&logger.as_str()), "{logger} missing");
            }
        }
    }
}
