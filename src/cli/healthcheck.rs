//! `gracchus healthcheck [--bootstrap-server HOST:PORT] [--timeout-ms N] [--config F]
//! [--override k=v]...`: an ApiVersions round trip, for a container's HEALTHCHECK.
//!
//! Healthy means: the listener accepts a connection, answers ApiVersions (v3, or the
//! version the broker falls back to) with error code 0, and lists the APIs every client
//! needs (Produce, Fetch, Metadata). Exit 0 then; otherwise exit 1 with one line on
//! stderr saying why. The whole check, connecting included, ends within `--timeout-ms`.
//!
//! With no `--bootstrap-server` the address comes from the node's own configuration (the
//! same `--config`, `--override` and `KAFKA_*` environment the broker reads): the client
//! listener the broker binds, with a wildcard host (empty, `0.0.0.0`, `::`) replaced by
//! 127.0.0.1, so `HEALTHCHECK CMD ["gracchus","healthcheck"]` follows KAFKA_LISTENERS.

use std::time::{Duration, Instant};

use kafka_protocol::messages::ApiKey;

use super::client::Connection;
use super::error::CliError;
use crate::config::BrokerConfig;

pub const TIMEOUT_MS_DEFAULT: u64 = 5_000;
/// What a client cannot work without.
const REQUIRED_APIS: [ApiKey; 3] = [ApiKey::Produce, ApiKey::Fetch, ApiKey::Metadata];
const WILDCARD_HOSTS: [&str; 3] = ["", "0.0.0.0", "::"];

/// What the health check was asked to do.
#[derive(Debug, PartialEq, Eq)]
pub struct HealthcheckArgs {
    pub bootstrap_server: Option<String>,
    pub timeout_ms: u64,
    /// Everything else: the broker's own configuration flags.
    pub config_args: Vec<String>,
}

pub fn parse_args(args: &[String]) -> Result<HealthcheckArgs, CliError> {
    let mut parsed = HealthcheckArgs {
        bootstrap_server: None,
        timeout_ms: TIMEOUT_MS_DEFAULT,
        config_args: Vec::new(),
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((name, value)) if name.starts_with("--") => (name, Some(value.to_string())),
            _ => (arg.as_str(), None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| args.next().cloned())
                .ok_or_else(|| CliError::Usage(format!("Option {name} requires an argument")))
        };
        match name {
            "--bootstrap-server" => parsed.bootstrap_server = Some(value()?),
            "--timeout-ms" => {
                let text = value()?;
                parsed.timeout_ms = text
                    .parse()
                    .ok()
                    .filter(|&ms| ms > 0)
                    .ok_or_else(|| CliError::Usage(format!("bad --timeout-ms {text}")))?;
            }
            _ => parsed.config_args.push(arg.clone()),
        }
    }
    Ok(parsed)
}

/// Runs the check; the exit code.
pub fn run(args: &[String]) -> i32 {
    let outcome = parse_args(args).and_then(|args| {
        let address = match &args.bootstrap_server {
            Some(address) => address.clone(),
            None => address_from_config(&args.config_args)?,
        };
        check(&address, Duration::from_millis(args.timeout_ms))
    });
    match outcome {
        Ok(line) => {
            println!("{line}");
            0
        }
        Err(error) => {
            eprintln!("unhealthy: {error}");
            1
        }
    }
}

/// Where this node serves clients, from its configuration.
fn address_from_config(config_args: &[String]) -> Result<String, CliError> {
    let config = BrokerConfig::from_args_and_env(config_args.to_vec(), std::env::vars())
        .map_err(|error| CliError::Usage(format!("reading the node's configuration: {error}")))?;
    if !config.roles.broker {
        return Err(CliError::Usage(
            "process.roles has no broker: this node serves no Kafka clients to check \
             (pass --bootstrap-server)"
                .into(),
        ));
    }
    Ok(connect_address(&config.listener.host, config.listener.port))
}

/// `host:port` to connect to for a listener bound to `host`.
pub fn connect_address(host: &str, port: u16) -> String {
    if WILDCARD_HOSTS.contains(&host) {
        format!("127.0.0.1:{port}")
    } else if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// One ApiVersions round trip to `address` within `timeout`; a line describing success.
fn check(address: &str, timeout: Duration) -> Result<String, CliError> {
    let deadline = Instant::now() + timeout;
    let mut connection = Connection::connect(address, timeout, Some(deadline))?;
    let response = connection.negotiate()?;
    if response.error_code != 0 {
        return Err(CliError::from_code(response.error_code, None));
    }
    let missing: Vec<String> = REQUIRED_APIS
        .iter()
        .filter(|&&api| !response.api_keys.iter().any(|a| a.api_key == api as i16))
        .map(|api| format!("{api:?}"))
        .collect();
    if !missing.is_empty() {
        return Err(CliError::Failed(format!(
            "{address} does not offer {}",
            missing.join(", ")
        )));
    }
    Ok(format!(
        "{address}: ApiVersions answered, {} APIs",
        response.api_keys.len()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|item| item.to_string()).collect()
    }

    #[test]
    fn flags_and_config_arguments_are_separated() {
        let args = strings(&[
            "--timeout-ms",
            "250",
            "--config",
            "/etc/x.properties",
            "--override",
            "node.id=2",
        ]);
        let parsed = parse_args(&args).unwrap();
        assert_eq!(parsed.bootstrap_server, None);
        assert_eq!(parsed.timeout_ms, 250);
        assert_eq!(
            parsed.config_args,
            strings(&["--config", "/etc/x.properties", "--override", "node.id=2"])
        );
        let parsed = parse_args(&strings(&["--bootstrap-server=h:1"])).unwrap();
        assert_eq!(parsed.bootstrap_server.as_deref(), Some("h:1"));
        assert_eq!(parsed.timeout_ms, TIMEOUT_MS_DEFAULT);
        assert!(parse_args(&strings(&["--timeout-ms", "0"])).is_err());
        assert!(parse_args(&strings(&["--bootstrap-server"])).is_err());
    }

    #[test]
    fn wildcard_hosts_become_loopback() {
        assert_eq!(connect_address("", 9092), "127.0.0.1:9092");
        assert_eq!(connect_address("0.0.0.0", 9092), "127.0.0.1:9092");
        assert_eq!(connect_address("::", 19092), "127.0.0.1:19092");
        assert_eq!(connect_address("kafka-1", 9092), "kafka-1:9092");
        assert_eq!(connect_address("::1", 9092), "[::1]:9092");
    }

    #[test]
    fn the_address_follows_the_listeners_override() {
        let args = strings(&[
            "--override",
            "listeners=PLAINTEXT://0.0.0.0:29092",
            "--override",
            "log.dirs=/nonexistent",
        ]);
        assert_eq!(address_from_config(&args).unwrap(), "127.0.0.1:29092");
    }
}
