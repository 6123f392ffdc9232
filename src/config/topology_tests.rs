use std::collections::BTreeMap;

use super::*;
use crate::config::BrokerConfig;

fn config(pairs: &[(&str, &str)]) -> Result<BrokerConfig, ConfigError> {
    let map: BTreeMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    BrokerConfig::from_map(map)
}

fn error(pairs: &[(&str, &str)]) -> String {
    match config(pairs) {
        Ok(config) => panic!("accepted {pairs:?}: {config:?}"),
        Err(error) => error.to_string(),
    }
}

fn endpoint(name: &str, host: &str, port: u16) -> Endpoint {
    Endpoint {
        name: name.into(),
        host: host.into(),
        port,
    }
}

fn host_port(host: &str, port: u16) -> HostPort {
    HostPort {
        host: host.into(),
        port,
    }
}

/// A three-voter combined node as the official images configure one.
const COMBINED: [(&str, &str); 5] = [
    ("node.id", "2"),
    ("process.roles", "broker,controller"),
    (
        "listeners",
        "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093",
    ),
    (
        "controller.quorum.voters",
        "1@10.0.0.1:9093,2@10.0.0.2:9093,3@[::1]:9093",
    ),
    ("controller.listener.names", "CONTROLLER"),
];

fn combined_with(extra: &[(&str, &str)]) -> Vec<(&'static str, String)> {
    let mut pairs: BTreeMap<&str, String> =
        COMBINED.iter().map(|(k, v)| (*k, v.to_string())).collect();
    for (key, value) in extra {
        let key: &'static str = Box::leak(key.to_string().into_boxed_str());
        pairs.insert(key, value.to_string());
    }
    pairs.into_iter().collect()
}

fn as_refs<'a>(pairs: &'a [(&'static str, String)]) -> Vec<(&'a str, &'a str)> {
    pairs.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

#[test]
fn the_embedded_default_is_one_combined_node_and_its_own_single_voter() {
    let config = config(&[]).unwrap();
    assert_eq!(config.node_id, 1);
    assert_eq!(config.roles, ProcessRoles::COMBINED);
    assert_eq!(
        config.listeners,
        vec![endpoint("PLAINTEXT", "127.0.0.1", 9092)]
    );
    assert_eq!(config.listener, endpoint("PLAINTEXT", "127.0.0.1", 9092));
    assert_eq!(config.advertised, config.listener);
    assert_eq!(config.advertised_listeners, config.listeners);
    assert!(
        config.quorum_voters.is_empty(),
        "empty voters mean: this node alone"
    );
    assert!(config.quorum_bootstrap_servers.is_empty());
    assert!(config.controller_listener_names.is_empty());
    assert_eq!(config.controller_listener, None);
    assert_eq!(config.inter_broker_listener_name, "PLAINTEXT");
    assert_eq!(config.cluster_id_env, None);
    assert_eq!(config.broker_session_timeout_ms, 9_000);
    assert_eq!(config.broker_heartbeat_interval_ms, 2_000);
    assert_eq!(config.quorum_election_timeout_ms, 1_000);
    assert_eq!(config.quorum_fetch_timeout_ms, 2_000);
    assert_eq!(config.quorum_request_timeout_ms, 2_000);
    assert_eq!(config.metadata_log_max_snapshot_interval_ms, 3_600_000);
    assert_eq!(
        config.metadata_log_max_record_bytes_between_snapshots,
        20_971_520
    );
    assert_eq!(config.broker_rack, None);
    let map = &config.listener_security_protocol_map;
    assert_eq!(map.len(), 4);
    assert_eq!(map.get("SASL_SSL").map(String::as_str), Some("SASL_SSL"));
}

#[test]
fn a_combined_node_of_three_voters_finds_its_listeners() {
    let config = config(&COMBINED).unwrap();
    assert_eq!(config.listener, endpoint("PLAINTEXT", "127.0.0.1", 19092));
    assert_eq!(
        config.controller_listener,
        Some(endpoint("CONTROLLER", "127.0.0.1", 19093))
    );
    assert_eq!(
        config.controller_listener_names,
        vec!["CONTROLLER".to_string()]
    );
    let voters: Vec<(NodeId, HostPort)> = config.quorum_voters.clone().into_iter().collect();
    assert_eq!(
        voters,
        vec![
            (1, host_port("10.0.0.1", 9093)),
            (2, host_port("10.0.0.2", 9093)),
            (3, host_port("::1", 9093)),
        ]
    );
    assert_eq!(config.quorum_voters[&3].to_string(), "[::1]:9093");
    // Not set: Kafka's default map plus CONTROLLER:PLAINTEXT.
    let map = &config.listener_security_protocol_map;
    assert_eq!(map.get("CONTROLLER").map(String::as_str), Some("PLAINTEXT"));
}

#[test]
fn advertised_listeners_default_per_listener_and_wildcards_get_a_host_name() {
    let pairs = combined_with(&[
        ("listeners", "PLAINTEXT://:19092,CONTROLLER://0.0.0.0:19093"),
        ("advertised.listeners", "PLAINTEXT://broker-2.example:9092"),
    ]);
    let config = config(&as_refs(&pairs)).unwrap();
    assert_eq!(config.listener.host, "");
    assert_eq!(
        config.advertised,
        endpoint("PLAINTEXT", "broker-2.example", 9092)
    );
    let controller = &config.advertised_listeners[1];
    assert_eq!(controller.name, "CONTROLLER");
    assert_eq!(controller.port, 19093);
    assert!(!controller.host.is_empty() && controller.host != "0.0.0.0");
    assert_eq!(controller.host, local_host_name());
}

#[test]
fn advertising_the_wildcard_or_an_unknown_listener_is_refused() {
    let pairs = combined_with(&[("advertised.listeners", "PLAINTEXT://0.0.0.0:9092")]);
    assert!(error(&as_refs(&pairs)).contains("nonroutable meta-address 0.0.0.0"));
    let pairs = combined_with(&[("advertised.listeners", "EXTERNAL://host:9092")]);
    assert!(error(&as_refs(&pairs)).contains("must be equal to or a subset"));
}

#[test]
fn roles_parse_like_kafka() {
    assert_eq!(parse_roles(None).unwrap(), ProcessRoles::COMBINED);
    let broker = parse_roles(Some("broker")).unwrap();
    assert!(broker.broker && !broker.controller);
    let both = parse_roles(Some(" controller , broker ")).unwrap();
    assert_eq!(both, ProcessRoles::COMBINED);
    assert!(parse_roles(Some("")).is_err());
    assert!(
        parse_roles(Some("broker,broker"))
            .unwrap_err()
            .to_string()
            .contains("Duplicate")
    );
    let unknown = parse_roles(Some("broker,zookeeper"))
        .unwrap_err()
        .to_string();
    assert!(
        unknown.contains("Unknown process role 'zookeeper'"),
        "{unknown}"
    );
}

#[test]
fn a_controller_must_be_a_voter_and_have_its_listener() {
    let pairs = combined_with(&[("node.id", "4")]);
    let message = error(&as_refs(&pairs));
    assert!(
        message.contains("the node id 4 must be included in the set of voters"),
        "{message}"
    );
    let pairs = combined_with(&[("listeners", "PLAINTEXT://127.0.0.1:19092")]);
    let message = error(&as_refs(&pairs));
    assert!(message.contains("must only contain values appearing in the 'listeners'"));
    // Without controller.listener.names, nothing maps CONTROLLER to a protocol (Kafka too)...
    let mut pairs = combined_with(&[]);
    pairs.retain(|(key, _)| *key != "controller.listener.names");
    let message = error(&as_refs(&pairs));
    assert!(message.contains("No security protocol defined for listener CONTROLLER"));
    // ...and once mapped, a voter still needs a controller listener.
    let mut pairs = combined_with(&[(
        "listener.security.protocol.map",
        "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
    )]);
    pairs.retain(|(key, _)| *key != "controller.listener.names");
    let message = error(&as_refs(&pairs));
    assert!(
        message.contains("must contain at least one value appearing"),
        "{message}"
    );
}

#[test]
fn the_inter_broker_listener_cannot_be_a_controller_listener() {
    let pairs = combined_with(&[("inter.broker.listener.name", "CONTROLLER")]);
    let message = error(&as_refs(&pairs));
    assert!(
        message.contains("inter.broker.listener.name must be a listener name"),
        "{message}"
    );
    assert!(
        message.contains("must not include the inter-broker listener"),
        "{message}"
    );
    let pairs = combined_with(&[
        ("controller.listener.names", "PLAINTEXT"),
        (
            "listener.security.protocol.map",
            "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        ),
    ]);
    let message = error(&as_refs(&pairs));
    assert!(
        message.contains("PLAINTEXT is named in controller.listener.names"),
        "{message}"
    );
}

#[test]
fn the_inter_broker_listener_picks_the_client_listener() {
    let pairs = combined_with(&[
        (
            "listeners",
            "EXTERNAL://127.0.0.1:19094,INTERNAL://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093",
        ),
        (
            "listener.security.protocol.map",
            "EXTERNAL:PLAINTEXT,INTERNAL:PLAINTEXT,CONTROLLER:PLAINTEXT",
        ),
        ("inter.broker.listener.name", "internal"),
    ]);
    let config = config(&as_refs(&pairs)).unwrap();
    assert_eq!(config.inter_broker_listener_name, "INTERNAL");
    assert_eq!(config.listener, endpoint("INTERNAL", "127.0.0.1", 19092));
    // Without the name Kafka looks for a PLAINTEXT listener, and there is none.
    let mut pairs = pairs;
    pairs.retain(|(key, _)| *key != "inter.broker.listener.name");
    let message = error(&as_refs(&pairs));
    assert!(message.contains("valid options based on currently configured listeners are"));
    let both = combined_with(&[
        ("inter.broker.listener.name", "PLAINTEXT"),
        ("security.inter.broker.protocol", "PLAINTEXT"),
    ]);
    assert!(error(&as_refs(&both)).contains("Only one of"));
}

#[test]
fn only_plaintext_is_spoken() {
    let pairs = combined_with(&[(
        "listeners",
        "SSL://127.0.0.1:19092,PLAINTEXT://127.0.0.1:19094,CONTROLLER://127.0.0.1:19093",
    )]);
    let message = error(&as_refs(&pairs));
    assert!(
        message.contains("security protocol SSL is not supported yet"),
        "{message}"
    );
    // An explicit map must name every listener (Kafka adds CONTROLLER only to its default).
    let pairs = combined_with(&[("listener.security.protocol.map", "PLAINTEXT:PLAINTEXT")]);
    let message = error(&as_refs(&pairs));
    assert!(
        message.contains("No security protocol defined for listener CONTROLLER"),
        "{message}"
    );
    let pairs = combined_with(&[("listener.security.protocol.map", "PLAINTEXT:TLS")]);
    assert!(error(&as_refs(&pairs)).contains("Invalid security protocol `TLS`"));
    let pairs = combined_with(&[(
        "listener.security.protocol.map",
        "PLAINTEXT:PLAINTEXT,CONTROLLER:SASL_PLAINTEXT",
    )]);
    assert!(error(&as_refs(&pairs)).contains("SASL_PLAINTEXT is not supported yet"));
}

#[test]
fn a_broker_only_node_is_no_voter_and_does_not_listen_as_a_controller() {
    let broker_only = [
        ("node.id", "4"),
        ("process.roles", "broker"),
        ("listeners", "PLAINTEXT://127.0.0.1:19092"),
        ("controller.quorum.voters", "1@10.0.0.1:9093"),
        ("controller.listener.names", "CONTROLLER"),
    ];
    let config = config(&broker_only).unwrap();
    assert_eq!(config.controller_listener, None);
    assert_eq!(config.listener.port, 19092);
    let mut pairs = broker_only.to_vec();
    pairs[0] = ("node.id", "1");
    assert!(error(&pairs).contains("must not be included in the set of voters"));
    let mut pairs = broker_only.to_vec();
    pairs[2] = (
        "listeners",
        "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093",
    );
    assert!(error(&pairs).contains("must not contain a value appearing in the 'listeners'"));
    let mut pairs = broker_only.to_vec();
    pairs.remove(4);
    assert!(error(&pairs).contains("must contain at least one value when running KRaft"));
    let mut pairs = broker_only.to_vec();
    pairs.remove(3);
    assert!(error(&pairs).contains("must contain a parseable set"));
}

#[test]
fn a_controller_only_node_listens_only_as_a_controller() {
    let controller_only = [
        ("node.id", "1"),
        ("process.roles", "controller"),
        ("listeners", "CONTROLLER://127.0.0.1:19093"),
        ("controller.quorum.voters", "1@127.0.0.1:19093"),
        ("controller.listener.names", "CONTROLLER"),
    ];
    let config = config(&controller_only).unwrap();
    assert_eq!(config.listener, endpoint("CONTROLLER", "127.0.0.1", 19093));
    assert_eq!(config.controller_listener.as_ref(), Some(&config.listener));
    let mut pairs = controller_only.to_vec();
    pairs[2] = (
        "listeners",
        "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093",
    );
    assert!(error(&pairs).contains("must only contain KRaft controller listeners"));
}

#[test]
fn listeners_need_distinct_names_and_ports() {
    let message = error(&[("listeners", "PLAINTEXT://a:1,plaintext://b:2")]);
    assert!(
        message.contains("Each listener must have a different name"),
        "{message}"
    );
    let pairs = combined_with(&[(
        "listeners",
        "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19092",
    )]);
    assert!(error(&as_refs(&pairs)).contains("Each listener must have a different port"));
    let pairs = combined_with(&[(
        "listeners",
        "PLAINTEXT://127.0.0.1:19092,CONTROLLER://[::1]:19092",
    )]);
    assert!(
        config(&as_refs(&pairs)).is_ok(),
        "an IPv4 and an IPv6 host may share a port"
    );
    assert!(error(&[("listeners", "PLAINTEXT:/x:1")]).contains("Unable to parse"));
    assert!(error(&[("listeners", "PLAINTEXT://x:port")]).contains("Unable to parse"));
    assert!(error(&[("listeners", "PLAINTEXT://x:70000")]).contains("Unable to parse"));
    assert!(error(&[("listeners", " , ")]).contains("at least one listener"));
}

#[test]
fn voters_and_bootstrap_servers_parse_and_name_the_key_when_bad() {
    for bad in [
        "1@host",
        "x@host:9093",
        "1@host:9093@2",
        "1host:9093",
        "1@:9093",
        "1@0.0.0.0:9093",
        "1@a:1,1@b:2",
        "-1@a:1",
    ] {
        let error = parse_voters(bad).unwrap_err();
        assert!(
            matches!(&error, ConfigError::Invalid { key, .. } if key == "controller.quorum.voters"),
            "{bad}: {error}"
        );
    }
    assert!(parse_voters("").unwrap().is_empty());
    let servers = parse_bootstrap_servers("a:1, [::1]:2,a:1").unwrap();
    assert_eq!(servers, vec![host_port("a", 1), host_port("::1", 2)]);
    let error = parse_bootstrap_servers("a").unwrap_err();
    let bootstrap_key = "controller.quorum.bootstrap.servers";
    assert!(matches!(&error, ConfigError::Invalid { key, .. } if key == bootstrap_key));
    // A controller may find the quorum through bootstrap servers alone (KIP-853).
    let pairs = [
        ("node.id", "1"),
        (
            "listeners",
            "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093",
        ),
        ("controller.quorum.bootstrap.servers", "127.0.0.1:19093"),
        ("controller.listener.names", "CONTROLLER"),
    ];
    let config = config(&pairs).unwrap();
    assert!(config.quorum_voters.is_empty());
    assert_eq!(
        config.quorum_bootstrap_servers,
        vec![host_port("127.0.0.1", 19093)]
    );
}

#[test]
fn timers_and_rack_parse() {
    let timed = config(&[
        ("broker.session.timeout.ms", "4500"),
        ("broker.heartbeat.interval.ms", "500"),
        ("controller.quorum.election.timeout.ms", "700"),
        ("broker.rack", "rack-a"),
    ])
    .unwrap();
    assert_eq!(timed.broker_session_timeout_ms, 4_500);
    assert_eq!(timed.broker_heartbeat_interval_ms, 500);
    assert_eq!(timed.quorum_election_timeout_ms, 700);
    assert_eq!(timed.broker_rack.as_deref(), Some("rack-a"));
    assert!(config_error_key(
        &[("broker.session.timeout.ms", "0")],
        "broker.session.timeout.ms"
    ));
    assert!(config_error_key(
        &[("controller.quorum.fetch.timeout.ms", "-1")],
        "controller.quorum.fetch.timeout.ms"
    ));
    assert!(matches!(
        config(&[("node.id", "-1")]),
        Err(ConfigError::Inconsistent(_))
    ));
}

fn config_error_key(pairs: &[(&str, &str)], want: &str) -> bool {
    matches!(config(pairs), Err(ConfigError::Invalid { key, .. }) if key == want)
}
