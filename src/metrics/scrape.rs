//! `/metrics`: the counters of [`super::registry`] plus gauges computed now from the
//! broker's state (metadata image, hosted partitions, controller, groups).
//!
//! Per-node view, as each Kafka broker's JMX is: partitions and leaders are this node's,
//! the controller gauges are non-zero only on the active controller, and consumer lag is
//! reported by the group's coordinator for the partitions this node leads (see README).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use super::exposition::{CONTENT_TYPE, Exposition, Kind};
use super::{ApiMetrics, ListenerMetrics, registry};
use crate::broker::Broker;
use crate::controller::MetadataImage;
use crate::controller::image::NO_LEADER;
use crate::group::GroupState;
use crate::group::registry::AnyGroup;
use crate::http::server::{Response, RouteFuture};

/// The `/metrics` route.
pub fn page(broker: Arc<Broker>) -> RouteFuture {
    Box::pin(async move {
        Response {
            status: 200,
            content_type: CONTENT_TYPE,
            body: render(&broker).await.into_bytes(),
        }
    })
}

pub async fn render(broker: &Broker) -> String {
    let mut out = Exposition::default();
    requests(&mut out);
    topics(&mut out);
    let image = broker.image();
    replica_manager(&mut out, broker, &image);
    fetch_sessions(&mut out, broker);
    replication_quotas(&mut out, broker, &image);
    controller(&mut out, broker, &image);
    raft(&mut out, broker, &image);
    logs(&mut out, broker);
    network(&mut out);
    groups(&mut out, broker).await;
    out.finish()
}

/// Kafka's `RequestMetrics`: requests and errors per API, and the time histograms.
fn requests(out: &mut Exposition) {
    let registry = registry();
    let fetch_split = [&registry.fetch_consumer, &registry.fetch_follower];
    let timed: Vec<&ApiMetrics> = registry.apis().chain(fetch_split).collect();
    let name = "kafka_network_requestmetrics_requests_total";
    out.family(name, Kind::Counter, "Requests handled, by API and version.");
    for api in &timed {
        for (version, count) in api.requests() {
            let version = version.to_string();
            let labels = [
                ("request", api.name.as_str()),
                ("version", version.as_str()),
            ];
            out.sample(name, &labels, count as f64);
        }
    }
    let name = "kafka_network_requestmetrics_errors_total";
    out.family(
        name,
        Kind::Counter,
        "Error codes in responses, by API and error.",
    );
    for api in registry.apis() {
        for (code, count) in api.errors() {
            let error = error_name(code);
            out.sample(
                name,
                &[("request", &api.name), ("error", &error)],
                count as f64,
            );
        }
    }
    type Pick = fn(&ApiMetrics) -> &super::histogram::Histogram;
    let histograms: [(&str, &str, Pick); 5] = [
        ("requestqueuetimems", "Time from arrival to handling", |a| {
            &a.queue_time
        }),
        ("localtimems", "Time handling, without waits", |a| {
            &a.local_time
        }),
        ("remotetimems", "Time parked in produce/fetch waits", |a| {
            &a.remote_time
        }),
        ("responsesendtimems", "Time writing the response", |a| {
            &a.send_time
        }),
        (
            "totaltimems",
            "Time from arrival to response written",
            |a| &a.total_time,
        ),
    ];
    for (suffix, help, pick) in histograms {
        let name = format!("kafka_network_requestmetrics_{suffix}");
        out.family(&name, Kind::Histogram, &format!("{help}, in ms."));
        for api in timed.iter().filter(|api| !pick(api).is_empty()) {
            out.histogram(&name, &[("request", &api.name)], &pick(api).snapshot());
        }
    }
}

/// Kafka's `BrokerTopicMetrics`: per topic, and the all-topics series without a label.
fn topics(out: &mut Exposition) {
    let topics = registry().topics();
    type Pick = fn(&super::TopicMetrics) -> u64;
    let families: [(&str, &str, Pick); 5] = [
        ("messagesin_total", "Records appended by produce.", |t| {
            t.messages_in.load(Relaxed)
        }),
        ("bytesin_total", "Record bytes appended by produce.", |t| {
            t.bytes_in.load(Relaxed)
        }),
        ("bytesout_total", "Record bytes sent to consumers.", |t| {
            t.bytes_out.load(Relaxed)
        }),
        (
            "totalproducerequests_total",
            "Produce requests per topic.",
            |t| t.produce_requests.load(Relaxed),
        ),
        (
            "totalfetchrequests_total",
            "Consumer fetches per topic.",
            |t| t.fetch_requests.load(Relaxed),
        ),
    ];
    for (suffix, help, pick) in families {
        let name = format!("kafka_server_brokertopicmetrics_{suffix}");
        out.family(&name, Kind::Counter, help);
        let mut all = 0u64;
        for (topic, metrics) in &topics {
            let value = pick(metrics);
            all += value;
            out.sample(&name, &[("topic", topic)], value as f64);
        }
        out.sample(&name, &[], all as f64);
    }
    let name = "kafka_server_brokertopicmetrics_replicationbytesout_total";
    out.family(
        name,
        Kind::Counter,
        "Record bytes sent to follower replicas.",
    );
    out.sample(
        name,
        &[],
        registry().replication_bytes_out.load(Relaxed) as f64,
    );
}

/// Kafka's `FetchSessionCache` metrics: sessions and partitions cached, and evictions.
fn fetch_sessions(out: &mut Exposition, broker: &Broker) {
    let sessions = &broker.fetch_sessions;
    let (count, partitions) = sessions.sizes();
    let gauges = [
        (
            "numincrementalfetchsessions",
            "Incremental fetch sessions cached.",
            count,
        ),
        (
            "numincrementalfetchpartitionscached",
            "Partitions cached over all incremental fetch sessions.",
            partitions,
        ),
    ];
    for (suffix, help, value) in gauges {
        let name = format!("kafka_server_fetchsessioncache_{suffix}");
        out.family(&name, Kind::Gauge, help);
        out.sample(&name, &[], value as f64);
    }
    let name = "kafka_server_fetchsessioncache_incrementalfetchsessionevictions_total";
    out.family(
        name,
        Kind::Counter,
        "Incremental fetch sessions evicted to make room for new ones.",
    );
    out.sample(name, &[], sessions.evictions() as f64);
}

/// Kafka's `ReplicaManager` gauges from the image, and its ISR change counters.
fn replica_manager(out: &mut Exposition, broker: &Broker, image: &MetadataImage) {
    let local = broker.config.node_id;
    let (mut hosted, mut leading, mut under_replicated, mut under_min_isr) = (0, 0, 0, 0);
    let mut reassigning = 0;
    for topic in image.topics.values() {
        let min_isr = topic
            .configs
            .get("min.insync.replicas")
            .and_then(|value| value.parse::<usize>().ok())
            .unwrap_or(1);
        for partition in &topic.partitions {
            hosted += usize::from(partition.replicas.contains(&local));
            if partition.leader != local {
                continue;
            }
            leading += 1;
            // Kafka's replication factor during a reassignment leaves the removing
            // replicas out (`OngoingReassignmentState`).
            let factor =
                (partition.replicas.len()).saturating_sub(partition.removing_replicas.len());
            under_replicated += usize::from(partition.isr.len() < factor);
            reassigning += usize::from(partition.is_reassigning());
            under_min_isr += usize::from(partition.isr.len() < min_isr);
        }
    }
    let gauges = [
        (
            "partitioncount",
            "Partitions with a replica on this broker.",
            hosted,
        ),
        ("leadercount", "Partitions this broker leads.", leading),
        (
            "underreplicatedpartitions",
            "Led partitions with ISR < replicas.",
            under_replicated,
        ),
        (
            "underminisrpartitioncount",
            "Led partitions with ISR < min.insync.replicas.",
            under_min_isr,
        ),
        (
            "reassigningpartitions",
            "Led partitions with a reassignment under way.",
            reassigning,
        ),
    ];
    for (suffix, help, value) in gauges {
        let name = format!("kafka_server_replicamanager_{suffix}");
        out.family(&name, Kind::Gauge, help);
        out.sample(&name, &[], value as f64);
    }
    let counters = [
        (
            "isrshrinks_total",
            "ISR shrinks committed for partitions led here.",
            &registry().isr_shrinks,
        ),
        (
            "isrexpands_total",
            "ISR expansions committed for partitions led here.",
            &registry().isr_expands,
        ),
    ];
    for (suffix, help, counter) in counters {
        let name = format!("kafka_server_replicamanager_{suffix}");
        out.family(&name, Kind::Counter, help);
        out.sample(&name, &[], counter.load(Relaxed) as f64);
    }
}

/// Kafka's replication quota metrics (`LeaderReplication` / `FollowerReplication`
/// `byte-rate`: the bytes of throttled partitions per second), and how many partitions
/// each side throttles here (ours).
fn replication_quotas(out: &mut Exposition, broker: &Broker, image: &MetadataImage) {
    let quotas = &broker.replication_quotas;
    let now = crate::client_quota::monotonic_ms();
    let sides = [
        ("leader", "leaderreplication", &quotas.leader),
        ("follower", "followerreplication", &quotas.follower),
    ];
    for (_, kind, quota) in sides {
        let name = format!("kafka_server_{kind}_byte_rate");
        let help = "Bytes per second of throttled partitions' replication traffic.";
        out.family(&name, Kind::Gauge, help);
        out.sample(&name, &[], quota.byte_rate(now));
    }
    let name = "kafka_server_replicationquota_throttled_partitions";
    out.family(
        name,
        Kind::Gauge,
        "Partitions whose replication is throttled here, by side.",
    );
    let partitions_of = |topic: &str| image.topic(topic).map_or(0, |t| t.partitions.len());
    for (side, _, quota) in sides {
        let count = quota.throttled_partitions(partitions_of);
        out.sample(name, &[("side", side)], count as f64);
    }
}

/// Kafka's `KafkaController` gauges: cluster-wide, reported by the active controller only
/// (0 elsewhere), so a sum over brokers counts each partition once.
fn controller(out: &mut Exposition, broker: &Broker, image: &MetadataImage) {
    let active = broker.config.roles.controller && broker.controller.is_leader();
    let offline = image
        .topics
        .values()
        .flat_map(|topic| &topic.partitions)
        .filter(|partition| partition.leader == NO_LEADER)
        .count();
    let only_active = |value: usize| if active { value as f64 } else { 0.0 };
    let gauges = [
        (
            "activecontrollercount",
            "1 on the active controller.",
            only_active(1),
        ),
        (
            "offlinepartitionscount",
            "Partitions without a leader.",
            only_active(offline),
        ),
        (
            "globalpartitioncount",
            "Partitions in the cluster.",
            only_active(image.partition_count()),
        ),
        (
            "globaltopiccount",
            "Topics in the cluster.",
            only_active(image.topics.len()),
        ),
    ];
    for (suffix, help, value) in gauges {
        let name = format!("kafka_controller_kafkacontroller_{suffix}");
        out.family(&name, Kind::Gauge, help);
        out.sample(&name, &[], value);
    }
}

/// Kafka's `raft-metrics` on a controller, and every node's applied metadata offset.
fn raft(out: &mut Exposition, broker: &Broker, image: &MetadataImage) {
    let name = "kafka_server_broker_metadata_metrics_last_applied_record_offset";
    out.family(
        name,
        Kind::Gauge,
        "Index of the last metadata record applied here.",
    );
    out.sample(name, &[], image.applied_index as f64);
    let Some(raft) = broker.controller.raft_gauges() else {
        return;
    };
    let gauges = [
        ("current_epoch", "The Raft term.", raft.current_epoch as f64),
        (
            "current_leader",
            "The active controller's id, -1 if none.",
            raft.current_leader as f64,
        ),
        (
            "log_end_offset",
            "Offset after the last metadata log entry.",
            raft.log_end_offset as f64,
        ),
        (
            "high_watermark",
            "Offset after the last committed entry applied.",
            raft.high_watermark as f64,
        ),
    ];
    for (suffix, help, value) in gauges {
        let name = format!("kafka_server_raftmetrics_{suffix}");
        out.family(&name, Kind::Gauge, help);
        out.sample(&name, &[], value);
    }
    let name = "kafka_server_raftmetrics_current_state";
    out.family(name, Kind::Gauge, "1 for this node's Raft state.");
    out.sample(name, &[("state", raft.state)], 1.0);
    let name = "kafka_server_raftmetrics_replica_lag";
    out.family(
        name,
        Kind::Gauge,
        "On the leader: entries each replica is behind.",
    );
    for (replica, lag) in &raft.follower_lag {
        out.sample(name, &[("replica", &replica.to_string())], *lag as f64);
    }
}

/// Kafka's `Log` gauges per hosted partition.
fn logs(out: &mut Exposition, broker: &Broker) {
    let mut rows = Vec::new();
    for partition in broker.replicas.all() {
        let (Some((size, segments)), Ok((start, _, end))) =
            (partition.log_stats(), partition.offsets())
        else {
            continue;
        };
        let index = partition.tp.partition.to_string();
        rows.push((
            partition.tp.topic.clone(),
            index,
            [size as f64, segments as f64, start as f64, end as f64],
        ));
    }
    rows.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    let families = [
        ("size", "Bytes of the partition's log segments."),
        ("numlogsegments", "Segments of the partition's log."),
        ("logstartoffset", "The log start offset."),
        ("logendoffset", "The log end offset."),
    ];
    for (column, (suffix, help)) in families.iter().enumerate() {
        let name = format!("kafka_log_log_{suffix}");
        out.family(&name, Kind::Gauge, help);
        for (topic, index, values) in &rows {
            out.sample(
                &name,
                &[("topic", topic), ("partition", index)],
                values[column],
            );
        }
    }
}

/// A per-listener counter family: name, help, and how to read it.
type ListenerCounter = (&'static str, &'static str, fn(&ListenerMetrics) -> f64);

/// Connections per listener, parked requests, and request memory.
fn network(out: &mut Exposition) {
    let registry = registry();
    let listeners = registry.listeners();
    let name = "kafka_server_socketservermetrics_connection_count";
    out.family(name, Kind::Gauge, "Open client connections, by listener.");
    for (listener, metrics) in &listeners {
        out.sample(
            name,
            &[("listener", listener)],
            metrics.connections.load(Relaxed) as f64,
        );
    }
    let name = "kafka_server_socketservermetrics_connection_creation_total";
    out.family(
        name,
        Kind::Counter,
        "Client connections accepted, by listener.",
    );
    for (listener, metrics) in &listeners {
        out.sample(
            name,
            &[("listener", listener)],
            metrics.accepted.load(Relaxed) as f64,
        );
    }
    let counters: [ListenerCounter; 3] = [
        (
            "kafka_server_socketservermetrics_connection_refused_per_ip_total",
            "Connections closed at once for max.connections.per.ip, by listener.",
            |m| m.refused_per_ip.load(Relaxed) as f64,
        ),
        (
            "kafka_server_socketservermetrics_connection_throttled_per_ip_total",
            "Connections closed after a delay for the ip's connection_creation_rate.",
            |m| m.throttled_per_ip.load(Relaxed) as f64,
        ),
        (
            "kafka_network_acceptor_acceptorblockedpercent_total",
            "Seconds the acceptor waited for a connection slot or creation rate.",
            |m| m.blocked_ns.load(Relaxed) as f64 / 1e9,
        ),
    ];
    for (name, help, value) in counters {
        out.family(name, Kind::Counter, help);
        for (listener, metrics) in &listeners {
            out.sample(name, &[("listener", listener)], value(metrics));
        }
    }
    let name = "kafka_server_delayedoperationpurgatory_purgatorysize";
    out.family(name, Kind::Gauge, "Requests parked waiting, by kind.");
    let produce = registry.parked_produce.load(Relaxed) as f64;
    out.sample(name, &[("delayedOperation", "Produce")], produce);
    let fetch = registry.parked_fetch.load(Relaxed) as f64;
    out.sample(name, &[("delayedOperation", "Fetch")], fetch);
    // Unbounded queued.max.request.bytes: no pool to report, as in Kafka.
    let Some(budget) = registry.budget() else {
        return;
    };
    let max = f64::from(budget.bytes_max());
    let available = budget.available() as f64;
    let name = "kafka_network_socketserver_memorypoolused";
    out.family(
        name,
        Kind::Gauge,
        "Request bytes held under queued.max.request.bytes.",
    );
    out.sample(name, &[], max - available);
    let name = "kafka_network_socketserver_memorypoolavailable";
    out.family(
        name,
        Kind::Gauge,
        "Request bytes free under queued.max.request.bytes.",
    );
    out.sample(name, &[], available);
}

/// A group's state as its kind names it.
enum GroupStateOf {
    Classic(GroupState),
    Consumer(&'static str),
}

impl GroupStateOf {
    fn name(&self) -> &'static str {
        match self {
            GroupStateOf::Classic(state) => state.as_str(),
            GroupStateOf::Consumer(name) => name,
        }
    }
}

/// Groups coordinated here: Kafka's `GroupMetadataManager` counts by state, and
/// kafka-exporter's per-group members, committed offsets and lag.
async fn groups(out: &mut Exposition, broker: &Broker) {
    // Each group locked once: its kind's state and its member count.
    let all = broker
        .groups
        .registry
        .map_all_groups(|id, group| match group {
            AnyGroup::Classic(group) => {
                let state = GroupStateOf::Classic(group.state());
                (id.to_string(), state, group.members().len())
            }
            AnyGroup::Consumer(group) => {
                let state = GroupStateOf::Consumer(group.state().name());
                (id.to_string(), state, group.members().count())
            }
        })
        .await;
    let states = [
        ("", None),
        ("preparingrebalance", Some(GroupState::PreparingRebalance)),
        ("completingrebalance", Some(GroupState::CompletingRebalance)),
        ("stable", Some(GroupState::Stable)),
        ("dead", Some(GroupState::Dead)),
        ("empty", Some(GroupState::Empty)),
    ];
    for (suffix, state) in states {
        let name = format!("kafka_coordinator_group_groupmetadatamanager_numgroups{suffix}");
        let count = (all.iter())
            .filter(|(_, of, _)| match of {
                GroupStateOf::Classic(got) => state.is_none_or(|want| *got == want),
                GroupStateOf::Consumer(_) => false,
            })
            .count();
        out.family(&name, Kind::Gauge, "Groups coordinated here (by state).");
        out.sample(&name, &[], count as f64);
    }
    let name = "kafka_server_group_coordinator_metrics_consumer_group_count";
    let help = "KIP-848 consumer groups coordinated here (by state).";
    out.family(name, Kind::Gauge, help);
    for state in ["Empty", "Assigning", "Reconciling", "Stable"] {
        let count = (all.iter())
            .filter(|(_, of, _)| matches!(of, GroupStateOf::Consumer(name) if *name == state))
            .count();
        out.sample(name, &[("state", &state.to_lowercase())], count as f64);
    }
    let name = "kafka_consumergroup_members";
    out.family(name, Kind::Gauge, "Members of the group.");
    for (id, _, members) in &all {
        out.sample(name, &[("consumergroup", id)], *members as f64);
    }
    let name = "kafka_consumergroup_state";
    out.family(name, Kind::Gauge, "1 for the group's state.");
    for (id, state, _) in &all {
        out.sample(name, &[("consumergroup", id), ("state", state.name())], 1.0);
    }
    committed_offsets(out, broker);
}

/// Every committed offset of the groups coordinated here, keyed by (group, topic,
/// partition), with the lag (high watermark minus the offset) for partitions this node
/// leads. The status page shows the same rows.
pub type CommittedLag = BTreeMap<(String, String, i32), (i64, Option<i64>)>;

pub fn committed_lag(broker: &Broker) -> CommittedLag {
    let mut rows = CommittedLag::new();
    for group in broker.groups.offset_group_ids() {
        let Ok(offsets) = broker.groups.fetch_offsets(&group, None) else {
            continue;
        };
        for ((topic, index), committed) in offsets {
            let Some(committed) = committed else { continue };
            let high_watermark = broker
                .replicas
                .get(&topic, index)
                .filter(|partition| partition.leadership().1)
                .and_then(|partition| partition.offsets().ok())
                .map(|(_, high_watermark, _)| high_watermark);
            let lag = high_watermark.map(|hw| (hw - committed.offset).max(0));
            rows.insert((group.clone(), topic, index), (committed.offset, lag));
        }
    }
    rows
}

/// kafka-exporter's `kafka_consumergroup_current_offset` and `_lag` (high watermark minus
/// the committed offset, for partitions this node leads).
fn committed_offsets(out: &mut Exposition, broker: &Broker) {
    let rows = committed_lag(broker);
    let name = "kafka_consumergroup_current_offset";
    out.family(name, Kind::Gauge, "The group's committed offset.");
    for ((group, topic, index), (offset, _)) in &rows {
        let index = index.to_string();
        let labels = [
            ("consumergroup", group.as_str()),
            ("topic", topic),
            ("partition", &index),
        ];
        out.sample(name, &labels, *offset as f64);
    }
    let name = "kafka_consumergroup_lag";
    out.family(
        name,
        Kind::Gauge,
        "High watermark minus the committed offset.",
    );
    for ((group, topic, index), (_, lag)) in &rows {
        let Some(lag) = lag else { continue };
        let index = index.to_string();
        let labels = [
            ("consumergroup", group.as_str()),
            ("topic", topic),
            ("partition", &index),
        ];
        out.sample(name, &labels, *lag as f64);
    }
}

/// Kafka's name for an error code (`NOT_LEADER_OR_FOLLOWER`), as its `ErrorsPerSec`
/// labels it; `UNKNOWN_<code>` for one kafka-protocol does not know.
fn error_name(code: i16) -> String {
    use kafka_protocol::error::ResponseError;
    match ResponseError::try_from_code(code) {
        None => "NONE".into(),
        Some(ResponseError::Unknown(code)) => format!("UNKNOWN_{code}"),
        Some(error) => upper_snake(&format!("{error:?}")),
    }
}

fn upper_snake(camel: &str) -> String {
    let mut out = String::with_capacity(camel.len() + 8);
    for (index, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() && index > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_get_kafka_names() {
        assert_eq!(error_name(6), "NOT_LEADER_OR_FOLLOWER");
        assert_eq!(error_name(35), "UNSUPPORTED_VERSION");
        assert_eq!(error_name(-1), "UNKNOWN_SERVER_ERROR");
        assert_eq!(error_name(0), "NONE");
        assert_eq!(error_name(999), "UNKNOWN_999");
    }
}
