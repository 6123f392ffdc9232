//! Where a node listens and whom it talks to: roles, listeners, advertised listeners,
//! security protocols and the controller quorum, parsed and checked together as Kafka's
//! `KafkaConfig` does (`validateValues`, `effectiveListenerSecurityProtocolMap`,
//! `QuorumConfig.parseVoterConnections`). Messages follow Kafka's wording so an operator
//! who searches for one finds Kafka's explanation.

use std::collections::{BTreeMap, BTreeSet};

use super::{ConfigError, Endpoint, HostPort, ProcessRoles};
use crate::types::NodeId;

const PROCESS_ROLES: &str = "process.roles";
const LISTENERS: &str = "listeners";
const ADVERTISED_LISTENERS: &str = "advertised.listeners";
const CONTROLLER_LISTENER_NAMES: &str = "controller.listener.names";
const PROTOCOL_MAP: &str = "listener.security.protocol.map";
const INTER_BROKER_LISTENER_NAME: &str = "inter.broker.listener.name";
const INTER_BROKER_PROTOCOL: &str = "security.inter.broker.protocol";
const QUORUM_VOTERS: &str = "controller.quorum.voters";
const QUORUM_BOOTSTRAP_SERVERS: &str = "controller.quorum.bootstrap.servers";

/// The embedded default: one client listener on loopback.
const DEFAULT_LISTENERS: &str = "PLAINTEXT://127.0.0.1:9092";
const PLAINTEXT: &str = "PLAINTEXT";
/// Kafka's security protocols; each maps to itself in the default protocol map.
const PROTOCOLS: [&str; 4] = [PLAINTEXT, "SSL", "SASL_PLAINTEXT", "SASL_SSL"];
/// The address that means "every interface": never a place to connect to.
const WILDCARD_HOSTS: [&str; 3] = ["", "0.0.0.0", "::"];
const VOTER_FORM: &str = "each entry should be in the form `{id}@{host}:{port}`";
const BOOTSTRAP_FORM: &str = "each entry should be in the form `{host}:{port}`";

/// The listener and quorum part of a `BrokerConfig`, checked as a whole.
#[derive(Debug)]
pub(super) struct Topology {
    pub roles: ProcessRoles,
    pub listener: Endpoint,
    pub advertised: Endpoint,
    pub listeners: Vec<Endpoint>,
    pub advertised_listeners: Vec<Endpoint>,
    pub controller_listener_names: Vec<String>,
    pub controller_listener: Option<Endpoint>,
    pub protocol_map: BTreeMap<String, String>,
    pub inter_broker_listener_name: String,
    pub quorum_voters: BTreeMap<NodeId, HostPort>,
    pub quorum_bootstrap_servers: Vec<HostPort>,
}

impl Topology {
    pub fn parse(
        explicit: &BTreeMap<String, String>,
        node_id: NodeId,
    ) -> Result<Self, ConfigError> {
        let get = |key: &str| explicit.get(key).map(String::as_str);
        let roles = parse_roles(get(PROCESS_ROLES))?;
        let listeners_value = get(LISTENERS).unwrap_or(DEFAULT_LISTENERS);
        let listeners = parse_endpoints(LISTENERS, listeners_value)?;
        check_distinct_ports(&listeners, listeners_value)?;
        let controller_listener_names = parse_names(get(CONTROLLER_LISTENER_NAMES));
        let protocol_map = protocol_map(get(PROTOCOL_MAP), &controller_listener_names)?;
        let inter_broker_listener_name = inter_broker_listener_name(explicit, &protocol_map)?;
        let advertised_listeners = advertised_listeners(get(ADVERTISED_LISTENERS), &listeners)?;
        let controller_listener = controller_listener_names
            .first()
            .and_then(|name| listeners.iter().find(|listener| &listener.name == name))
            .cloned();
        let draft = Draft {
            node_id,
            roles,
            listeners: &listeners,
            controller_listener_names: &controller_listener_names,
            protocol_map: &protocol_map,
            inter_broker_listener_name: &inter_broker_listener_name,
            quorum_voters: &parse_voters(get(QUORUM_VOTERS).unwrap_or(""))?,
            quorum_bootstrap_servers: &parse_bootstrap_servers(
                get(QUORUM_BOOTSTRAP_SERVERS).unwrap_or(""),
            )?,
        };
        draft.validate()?;
        let quorum_voters = draft.quorum_voters.clone();
        let quorum_bootstrap_servers = draft.quorum_bootstrap_servers.to_vec();
        let index = draft.client_listener_index(controller_listener.as_ref())?;
        Ok(Topology {
            roles,
            listener: listeners[index].clone(),
            advertised: advertised_listeners[index].clone(),
            listeners,
            advertised_listeners,
            controller_listener_names,
            controller_listener,
            protocol_map,
            inter_broker_listener_name,
            quorum_voters,
            quorum_bootstrap_servers,
        })
    }
}

/// The parsed pieces before they are accepted, for the cross-key rules.
struct Draft<'a> {
    node_id: NodeId,
    roles: ProcessRoles,
    listeners: &'a [Endpoint],
    controller_listener_names: &'a [String],
    protocol_map: &'a BTreeMap<String, String>,
    inter_broker_listener_name: &'a str,
    quorum_voters: &'a BTreeMap<NodeId, HostPort>,
    quorum_bootstrap_servers: &'a [HostPort],
}

fn inconsistent(message: String) -> ConfigError {
    ConfigError::Inconsistent(message)
}

impl Draft<'_> {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.node_id < 0 {
            return Err(inconsistent(format!(
                "`node.id` must be >= 0 (found {})",
                self.node_id
            )));
        }
        self.check_protocols()?;
        match (self.roles.broker, self.roles.controller) {
            (true, false) => self.validate_broker_only()?,
            (false, true) => self.validate_controller_only()?,
            _ => self.validate_combined()?,
        }
        if self.roles.broker {
            self.validate_broker_listeners()?;
        }
        Ok(())
    }

    /// The quorum is this node alone, with no address: the embedded default.
    fn is_implicit_single_voter(&self) -> bool {
        self.quorum_voters.is_empty() && self.quorum_bootstrap_servers.is_empty()
    }

    fn is_controller_listener(&self, name: &str) -> bool {
        self.controller_listener_names.iter().any(|n| n == name)
    }

    fn voter_ids(&self) -> String {
        let ids: Vec<String> = self.quorum_voters.keys().map(|id| id.to_string()).collect();
        format!("{QUORUM_VOTERS}=Set({})", ids.join(", "))
    }

    fn require_quorum(&self) -> Result<(), ConfigError> {
        if self.is_implicit_single_voter() {
            return Err(inconsistent(format!(
                "If using {PROCESS_ROLES}, either {QUORUM_BOOTSTRAP_SERVERS} must contain the \
                 set of bootstrap controllers or {QUORUM_VOTERS} must contain a parseable set \
                 of controllers."
            )));
        }
        Ok(())
    }

    fn require_self_among_voters(&self) -> Result<(), ConfigError> {
        if !self.quorum_voters.is_empty() && !self.quorum_voters.contains_key(&self.node_id) {
            return Err(inconsistent(format!(
                "If {PROCESS_ROLES} contains the 'controller' role, the node id {} must be \
                 included in the set of voters {}",
                self.node_id,
                self.voter_ids()
            )));
        }
        Ok(())
    }

    /// Every controller listener name is a listener, and there is at least one.
    fn require_controller_listeners(&self) -> Result<(), ConfigError> {
        let known = |name: &String| self.listeners.iter().any(|l| &l.name == name);
        if !self.controller_listener_names.iter().all(known) {
            return Err(inconsistent(format!(
                "{CONTROLLER_LISTENER_NAMES} must only contain values appearing in the \
                 '{LISTENERS}' configuration when running the KRaft controller role"
            )));
        }
        if self.controller_listener_names.is_empty() {
            return Err(inconsistent(format!(
                "{CONTROLLER_LISTENER_NAMES} must contain at least one value appearing in the \
                 '{LISTENERS}' configuration when running the KRaft controller role"
            )));
        }
        Ok(())
    }

    fn validate_broker_only(&self) -> Result<(), ConfigError> {
        self.require_quorum()?;
        if self.quorum_voters.contains_key(&self.node_id) {
            return Err(inconsistent(format!(
                "If {PROCESS_ROLES} contains just the 'broker' role, the node id {} must not be \
                 included in the set of voters {}",
                self.node_id,
                self.voter_ids()
            )));
        }
        if self.controller_listener_names.is_empty() {
            return Err(inconsistent(format!(
                "{CONTROLLER_LISTENER_NAMES} must contain at least one value when running KRaft \
                 with just the broker role"
            )));
        }
        if self
            .listeners
            .iter()
            .any(|l| self.is_controller_listener(&l.name))
        {
            return Err(inconsistent(format!(
                "{CONTROLLER_LISTENER_NAMES} must not contain a value appearing in the \
                 '{LISTENERS}' configuration when running KRaft with just the broker role"
            )));
        }
        // The listener is another node's: only its protocol is ours to know.
        for name in self.controller_listener_names {
            let protocol = self.protocol_map.get(name).ok_or_else(|| {
                inconsistent(format!(
                    "Controller listener with name {name} defined in \
                     {CONTROLLER_LISTENER_NAMES} not found in {PROTOCOL_MAP} (an explicit \
                     security mapping for each controller listener is required if \
                     {PROTOCOL_MAP} is non-empty, or if there are security protocols other \
                     than PLAINTEXT in use)"
                ))
            })?;
            require_plaintext(name, protocol)?;
        }
        Ok(())
    }

    fn validate_controller_only(&self) -> Result<(), ConfigError> {
        self.require_quorum()?;
        if self
            .listeners
            .iter()
            .any(|l| !self.is_controller_listener(&l.name))
        {
            return Err(inconsistent(format!(
                "The {LISTENERS} config must only contain KRaft controller listeners from \
                 {CONTROLLER_LISTENER_NAMES} when {PROCESS_ROLES}=controller"
            )));
        }
        self.require_self_among_voters()?;
        self.require_controller_listeners()
    }

    fn validate_combined(&self) -> Result<(), ConfigError> {
        if self.is_implicit_single_voter() {
            // Our departure from Kafka: the single voter needs no controller listener, but
            // names given must still be listeners.
            if self.controller_listener_names.is_empty() {
                return Ok(());
            }
            return self.require_controller_listeners();
        }
        self.require_self_among_voters()?;
        self.require_controller_listeners()
    }

    fn validate_broker_listeners(&self) -> Result<(), ConfigError> {
        let broker_names: Vec<&str> = self
            .listeners
            .iter()
            .map(|l| l.name.as_str())
            .filter(|name| !self.is_controller_listener(name))
            .collect();
        if broker_names.is_empty() {
            return Err(inconsistent(format!(
                "There must be at least one broker advertised listener. Perhaps all listeners \
                 appear in {CONTROLLER_LISTENER_NAMES}?"
            )));
        }
        if !broker_names.contains(&self.inter_broker_listener_name) {
            let hint = if self.is_controller_listener(self.inter_broker_listener_name) {
                format!(
                    " ({} is named in {CONTROLLER_LISTENER_NAMES}, which must not include the \
                     inter-broker listener)",
                    self.inter_broker_listener_name
                )
            } else {
                String::new()
            };
            return Err(inconsistent(format!(
                "{INTER_BROKER_LISTENER_NAME} must be a listener name defined in \
                 {ADVERTISED_LISTENERS}. The valid options based on currently configured \
                 listeners are {}{hint}",
                broker_names.join(",")
            )));
        }
        Ok(())
    }

    /// Every listener has a protocol, and it is one we speak.
    fn check_protocols(&self) -> Result<(), ConfigError> {
        for listener in self.listeners {
            let protocol =
                self.protocol_map
                    .get(&listener.name)
                    .ok_or_else(|| ConfigError::Invalid {
                        key: LISTENERS.into(),
                        value: listener.to_string(),
                        reason: format!(
                            "No security protocol defined for listener {} (set {PROTOCOL_MAP})",
                            listener.name
                        ),
                    })?;
            require_plaintext(&listener.name, protocol)?;
        }
        Ok(())
    }

    /// Which listener clients use: the inter-broker one on a broker, else the controller's.
    fn client_listener_index(&self, controller: Option<&Endpoint>) -> Result<usize, ConfigError> {
        let name = if self.roles.broker {
            Some(self.inter_broker_listener_name)
        } else {
            controller.map(|endpoint| endpoint.name.as_str())
        };
        name.and_then(|name| self.listeners.iter().position(|l| l.name == name))
            .ok_or_else(|| inconsistent(format!("no listener in {LISTENERS} serves this node")))
    }
}

fn require_plaintext(listener: &str, protocol: &str) -> Result<(), ConfigError> {
    if protocol == PLAINTEXT {
        return Ok(());
    }
    Err(inconsistent(format!(
        "security protocol {protocol} is not supported yet (listener {listener}): gracchus \
         speaks PLAINTEXT only"
    )))
}

/// `process.roles`: `broker`, `controller` or both; absent means both (our default).
fn parse_roles(value: Option<&str>) -> Result<ProcessRoles, ConfigError> {
    let Some(value) = value else {
        return Ok(ProcessRoles::COMBINED);
    };
    let invalid = |reason: String| ConfigError::Invalid {
        key: PROCESS_ROLES.into(),
        value: value.into(),
        reason,
    };
    let mut roles = ProcessRoles {
        broker: false,
        controller: false,
    };
    for role in value
        .split(',')
        .map(str::trim)
        .filter(|role| !role.is_empty())
    {
        let slot = match role.to_ascii_lowercase().as_str() {
            "broker" => &mut roles.broker,
            "controller" => &mut roles.controller,
            _ => {
                return Err(invalid(format!(
                    "Unknown process role '{role}' (only 'broker' and 'controller' are allowed \
                     roles)"
                )));
            }
        };
        if *slot {
            return Err(invalid(format!(
                "Duplicate role names found in `{PROCESS_ROLES}`"
            )));
        }
        *slot = true;
    }
    if !roles.broker && !roles.controller {
        return Err(invalid(
            "must be 'broker', 'controller' or 'broker,controller'".into(),
        ));
    }
    Ok(roles)
}

/// A comma-separated list of listener names, upper-cased as Kafka normalises them.
fn parse_names(value: Option<&str>) -> Vec<String> {
    value
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .map(str::to_ascii_uppercase)
        .collect()
}

/// `NAME://host:port,...` with distinct names. `[v6]` hosts lose their brackets; an empty
/// host stays empty (every interface).
fn parse_endpoints(key: &str, value: &str) -> Result<Vec<Endpoint>, ConfigError> {
    let invalid = |reason: String| ConfigError::Invalid {
        key: key.into(),
        value: value.into(),
        reason,
    };
    let mut endpoints: Vec<Endpoint> = Vec::new();
    for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let unparsable = || invalid(format!("Unable to parse {entry} to a broker endpoint"));
        let (name, address) = entry.split_once("://").ok_or_else(unparsable)?;
        let name = name.trim().to_ascii_uppercase();
        let address = parse_host_port(address).ok_or_else(unparsable)?;
        if name.is_empty() {
            return Err(unparsable());
        }
        if endpoints.iter().any(|endpoint| endpoint.name == name) {
            return Err(invalid(format!(
                "Each listener must have a different name, listeners: {value}"
            )));
        }
        endpoints.push(Endpoint {
            name,
            host: address.host,
            port: address.port,
        });
    }
    if endpoints.is_empty() {
        return Err(invalid("must name at least one listener".into()));
    }
    Ok(endpoints)
}

/// `host:port` or `[v6]:port`, host characters as Kafka allows them.
pub(super) fn parse_host_port(address: &str) -> Option<HostPort> {
    let address = address.trim();
    let (host, port) = match address.strip_prefix('[') {
        Some(rest) => {
            let (host, after) = rest.split_once(']')?;
            (host, after.strip_prefix(':')?)
        }
        None => address.rsplit_once(':')?,
    };
    let host_char = |c: char| c.is_ascii_alphanumeric() || "-%._:".contains(c);
    if !host.chars().all(host_char) || port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    Some(HostPort {
        host: host.to_string(),
        port: port.parse().ok()?,
    })
}

/// Kafka: each listener has its own port, except port 0 and an IPv4/IPv6 pair.
fn check_distinct_ports(listeners: &[Endpoint], value: &str) -> Result<(), ConfigError> {
    for (index, first) in listeners.iter().enumerate() {
        for second in &listeners[index + 1..] {
            let one_of_each_family = is_ipv4(&first.host) != is_ipv4(&second.host)
                && (is_ip(&first.host) && is_ip(&second.host));
            if first.port != 0 && first.port == second.port && !one_of_each_family {
                return Err(ConfigError::Invalid {
                    key: LISTENERS.into(),
                    value: value.into(),
                    reason: format!("Each listener must have a different port, listeners: {value}"),
                });
            }
        }
    }
    Ok(())
}

fn is_ipv4(host: &str) -> bool {
    host.parse::<std::net::Ipv4Addr>().is_ok()
}

fn is_ip(host: &str) -> bool {
    host.parse::<std::net::IpAddr>().is_ok()
}

/// The map in effect: the key's value, or Kafka's default plus PLAINTEXT for each
/// controller listener name (KRaft's rule when the key is not set).
fn protocol_map(
    value: Option<&str>,
    controller_listener_names: &[String],
) -> Result<BTreeMap<String, String>, ConfigError> {
    let Some(value) = value else {
        let mut map: BTreeMap<String, String> = PROTOCOLS
            .iter()
            .map(|protocol| (protocol.to_string(), protocol.to_string()))
            .collect();
        for name in controller_listener_names {
            map.entry(name.clone()).or_insert_with(|| PLAINTEXT.into());
        }
        return Ok(map);
    };
    let invalid = |reason: String| ConfigError::Invalid {
        key: PROTOCOL_MAP.into(),
        value: value.into(),
        reason,
    };
    let mut map = BTreeMap::new();
    for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (name, protocol) = entry
            .split_once(':')
            .ok_or_else(|| invalid(format!("entry {entry} is not NAME:PROTOCOL")))?;
        let name = name.trim().to_ascii_uppercase();
        let protocol = protocol.trim().to_ascii_uppercase();
        if !PROTOCOLS.contains(&protocol.as_str()) {
            return Err(invalid(format!(
                "Invalid security protocol `{protocol}` defined in {PROTOCOL_MAP}"
            )));
        }
        if map.insert(name.clone(), protocol).is_some() {
            return Err(invalid(format!("listener {name} is mapped twice")));
        }
    }
    Ok(map)
}

/// `inter.broker.listener.name`, or the listener named after
/// `security.inter.broker.protocol` (default PLAINTEXT); never both, as in Kafka.
fn inter_broker_listener_name(
    explicit: &BTreeMap<String, String>,
    protocol_map: &BTreeMap<String, String>,
) -> Result<String, ConfigError> {
    let protocol = explicit.get(INTER_BROKER_PROTOCOL);
    match explicit.get(INTER_BROKER_LISTENER_NAME) {
        Some(_) if protocol.is_some() => Err(inconsistent(format!(
            "Only one of {INTER_BROKER_LISTENER_NAME} and {INTER_BROKER_PROTOCOL} should be set."
        ))),
        Some(name) => {
            let name = name.trim().to_ascii_uppercase();
            if !protocol_map.contains_key(&name) {
                return Err(inconsistent(format!(
                    "Listener with name {name} defined in {INTER_BROKER_LISTENER_NAME} not found \
                     in {PROTOCOL_MAP}."
                )));
            }
            Ok(name)
        }
        None => {
            let protocol = protocol.map_or(PLAINTEXT, String::as_str).trim();
            let protocol = protocol.to_ascii_uppercase();
            if !PROTOCOLS.contains(&protocol.as_str()) {
                return Err(inconsistent(format!(
                    "Invalid security protocol `{protocol}` defined in {INTER_BROKER_PROTOCOL}"
                )));
            }
            Ok(protocol)
        }
    }
}

/// One advertised endpoint per listener, in the listeners' order: the listener's entry of
/// `advertised.listeners`, or the listener itself with a connectable host.
fn advertised_listeners(
    value: Option<&str>,
    listeners: &[Endpoint],
) -> Result<Vec<Endpoint>, ConfigError> {
    let given = match value.map(str::trim).filter(|v| !v.is_empty()) {
        Some(value) => parse_endpoints(ADVERTISED_LISTENERS, value)?,
        None => Vec::new(),
    };
    let names: Vec<&str> = listeners.iter().map(|l| l.name.as_str()).collect();
    for endpoint in &given {
        if !names.contains(&endpoint.name.as_str()) {
            let found: Vec<&str> = given.iter().map(|e| e.name.as_str()).collect();
            return Err(inconsistent(format!(
                "{ADVERTISED_LISTENERS} listener names must be equal to or a subset of the ones \
                 defined in {LISTENERS}. Found {}. The valid options based on the current \
                 configuration are {}",
                found.join(","),
                names.join(",")
            )));
        }
        if endpoint.host == "0.0.0.0" {
            return Err(inconsistent(format!(
                "{ADVERTISED_LISTENERS} cannot use the nonroutable meta-address 0.0.0.0. Use a \
                 routable IP address."
            )));
        }
    }
    let advertised = listeners
        .iter()
        .map(|listener| {
            let chosen = given
                .iter()
                .find(|e| e.name == listener.name)
                .unwrap_or(listener);
            let mut endpoint = chosen.clone();
            if WILDCARD_HOSTS.contains(&endpoint.host.as_str()) {
                endpoint.host = local_host_name();
            }
            endpoint
        })
        .collect();
    Ok(advertised)
}

/// This machine's host name, as Kafka advertises a wildcard listener under
/// `InetAddress.getLocalHost.getCanonicalHostName` (inside a container: the container's
/// name on its network); `localhost` when it cannot be read.
fn local_host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_string())
        .filter(|name| !name.is_empty() && parse_host_port(&format!("{name}:1")).is_some())
        .unwrap_or_else(|| "localhost".into())
}

/// `controller.quorum.voters`: `id@host:port,...`, distinct ids, routable hosts.
fn parse_voters(value: &str) -> Result<BTreeMap<NodeId, HostPort>, ConfigError> {
    let invalid = |reason: String| ConfigError::Invalid {
        key: QUORUM_VOTERS.into(),
        value: value.into(),
        reason,
    };
    let mut voters = BTreeMap::new();
    for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (id, address) = entry
            .split_once('@')
            .filter(|(_, address)| !address.contains('@'))
            .ok_or_else(|| invalid(format!("entry {entry}: {VOTER_FORM}")))?;
        let id: NodeId = id
            .trim()
            .parse()
            .map_err(|_| invalid(format!("Failed to parse voter ID as an integer from {id}")))?;
        let address = parse_host_port(address)
            .filter(|address| !address.host.is_empty())
            .ok_or_else(|| {
                invalid(format!(
                    "Failed to parse host and port from entry {entry}: {VOTER_FORM}"
                ))
            })?;
        if address.host == "0.0.0.0" {
            return Err(invalid("Host string (0.0.0.0) is not routeable".into()));
        }
        if id < 0 {
            return Err(invalid(format!("voter id {id} is negative")));
        }
        if voters.insert(id, address).is_some() {
            return Err(invalid(format!("voter id {id} appears twice")));
        }
    }
    Ok(voters)
}

/// `controller.quorum.bootstrap.servers`: `host:port,...`.
fn parse_bootstrap_servers(value: &str) -> Result<Vec<HostPort>, ConfigError> {
    let mut servers = Vec::new();
    let mut seen = BTreeSet::new();
    for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let server = parse_host_port(entry)
            .filter(|server| !server.host.is_empty())
            .ok_or_else(|| ConfigError::Invalid {
                key: QUORUM_BOOTSTRAP_SERVERS.into(),
                value: value.into(),
                reason: format!("Failed to parse host and port from {entry}: {BOOTSTRAP_FORM}"),
            })?;
        if seen.insert(server.clone()) {
            servers.push(server);
        }
    }
    Ok(servers)
}

#[cfg(test)]
#[path = "topology_tests.rs"]
mod tests;
