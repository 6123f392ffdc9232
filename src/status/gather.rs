//! Builds a [`StatusView`] from the broker's state, and the `/` route that renders it.
//!
//! Everything is read from what the node already holds: the metadata image (brokers,
//! topics, leaders, ISR), the partitions hosted here (end offsets, sizes), the groups this
//! node coordinates and their committed offsets (the same rows `/metrics` reports as lag).

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};

use bytes::{Buf, Bytes};
use kafka_protocol::messages::ConsumerProtocolAssignment;
use kafka_protocol::protocol::Decodable;

use super::page;
use super::rates::TopicRates;
use super::recent_errors::RecentErrors;
use super::view::{BrokerRow, GroupRow, LagRow, MemberRow, PartitionRow, StatusView, TopicRow};
use crate::broker::Broker;
use crate::controller::{MetadataImage, NO_LEADER};
use crate::group::GroupState;
use crate::group::consumer::ConsumerGroupConfig;
use crate::group::registry::AnyGroup;
use crate::http::server::{Response, RouteFuture};
use crate::metrics::scrape::committed_lag;

/// The page reloads itself this often.
pub const REFRESH_S: u32 = 5;

/// Process-wide, as the log subscriber that feeds it is (installed in `main`).
pub static RECENT_ERRORS: LazyLock<Arc<RecentErrors>> = LazyLock::new(RecentErrors::new);
static TOPIC_RATES: LazyLock<TopicRates> = LazyLock::new(TopicRates::default);

/// The `/` route.
pub fn page(broker: Arc<Broker>) -> RouteFuture {
    Box::pin(async move {
        let view = gather(&broker).await;
        Response {
            status: 200,
            content_type: "text/html; charset=utf-8",
            body: page::render(&view).into_bytes(),
        }
    })
}

pub async fn gather(broker: &Broker) -> StatusView {
    let image = broker.image();
    let now_ms = crate::types::now_ms();
    StatusView {
        cluster_id: image.cluster_id.clone(),
        node_id: broker.config.node_id,
        version: env!("CARGO_PKG_VERSION").to_string(),
        generated_at_ms: now_ms,
        refresh_s: REFRESH_S,
        brokers: brokers(&image, broker.config.node_id),
        topics: topics(broker, &image, now_ms),
        groups: groups(broker).await,
        errors: RECENT_ERRORS.snapshot(),
    }
}

fn brokers(image: &MetadataImage, this_node: i32) -> Vec<BrokerRow> {
    image
        .brokers
        .values()
        .map(|registration| BrokerRow {
            node_id: registration.node_id,
            endpoint: format!("{}:{}", registration.host, registration.port),
            alive: image.is_broker_live(registration.node_id),
            fenced: registration.fenced,
            controller: registration.node_id == image.controller_id,
            this_node: registration.node_id == this_node,
        })
        .collect()
}

fn topics(broker: &Broker, image: &MetadataImage, now_ms: i64) -> Vec<TopicRow> {
    let mut counts = BTreeMap::new();
    let mut rows: Vec<TopicRow> = image
        .topics
        .values()
        .map(|topic| {
            let partitions: Vec<PartitionRow> = topic
                .partitions
                .iter()
                .enumerate()
                .map(|(index, partition)| {
                    let index = index as i32;
                    let hosted = broker.replicas.get(&topic.name, index);
                    let log_end_offset = hosted
                        .as_ref()
                        .and_then(|hosted| hosted.offsets().ok())
                        .map(|(_, _, log_end)| log_end);
                    let size_bytes = hosted.and_then(|hosted| hosted.log_stats()).map(|s| s.0);
                    PartitionRow {
                        index,
                        leader: (partition.leader != NO_LEADER).then_some(partition.leader),
                        leader_epoch: partition.leader_epoch,
                        replicas: partition.replicas.clone(),
                        isr: partition.isr.clone(),
                        log_end_offset,
                        size_bytes,
                    }
                })
                .collect();
            let hosted_end: i64 = partitions.iter().filter_map(|p| p.log_end_offset).sum();
            counts.insert(topic.name.clone(), hosted_end);
            TopicRow {
                name: topic.name.clone(),
                internal: crate::controller::image::is_internal_topic(&topic.name),
                partitions,
                messages_per_s: None,
            }
        })
        .collect();
    let rates = TOPIC_RATES.observe(now_ms, &counts);
    for row in &mut rows {
        row.messages_per_s = rates.get(&row.name).copied();
    }
    // User topics first, then the internal ones, each by name.
    rows.sort_by(|a, b| (a.internal, &a.name).cmp(&(b.internal, &b.name)));
    rows
}

async fn groups(broker: &Broker) -> Vec<GroupRow> {
    let image = broker.image();
    let config = consumer_config(broker);
    let listed = broker
        .groups
        .registry
        .map_all_groups(|id, group| match group {
            AnyGroup::Classic(group) => GroupRow {
                group_id: id.to_string(),
                state: group.state().as_str().to_string(),
                protocol: group.protocol_name().unwrap_or_default().to_string(),
                members: group
                    .members()
                    .into_iter()
                    .map(|member| MemberRow {
                        assignment: decode_assignment(&member.assignment),
                        member_id: member.member_id,
                        client_id: member.client_id,
                        host: member.client_host,
                    })
                    .collect(),
                lag: Vec::new(),
            },
            AnyGroup::Consumer(group) => GroupRow {
                group_id: id.to_string(),
                state: group.state().name().to_string(),
                // A KIP-848 group has no client-side protocol; it runs a server-side assignor.
                protocol: format!("consumer ({})", group.assignor(&config).name()),
                members: group
                    .members()
                    .map(|member| MemberRow {
                        assignment: (member.assigned.iter())
                            .filter_map(|(topic_id, partitions)| {
                                let name = image.topic_names.get(topic_id)?.clone();
                                Some((name, partitions.iter().copied().collect()))
                            })
                            .collect(),
                        member_id: member.member_id.clone(),
                        client_id: member.client_id.clone(),
                        host: member.client_host.clone(),
                    })
                    .collect(),
                lag: Vec::new(),
            },
        });
    let mut rows: BTreeMap<String, GroupRow> = (listed.await.into_iter())
        .filter(|row| row.state != GroupState::Dead.as_str())
        .map(|row| (row.group_id.clone(), row))
        .collect();
    for ((group, topic, partition), (committed_offset, lag)) in committed_lag(broker) {
        let row = rows.entry(group.clone()).or_insert_with(|| GroupRow {
            group_id: group,
            state: GroupState::Empty.as_str().to_string(),
            protocol: String::new(),
            members: Vec::new(),
            lag: Vec::new(),
        });
        row.lag.push(LagRow {
            topic,
            partition,
            committed_offset,
            end_offset: lag.map(|lag| committed_offset + lag),
        });
    }
    rows.into_values().collect()
}

fn consumer_config(broker: &Broker) -> ConsumerGroupConfig {
    broker.config.consumer_group_settings
}

/// The (topic, partitions) of a consumer-protocol assignment; empty for another protocol
/// or bytes that do not parse (the page shows, it does not judge).
fn decode_assignment(assignment: &[u8]) -> Vec<(String, Vec<i32>)> {
    const VERSION_MAX: i16 = 3;
    let mut bytes = Bytes::copy_from_slice(assignment);
    if bytes.remaining() < 2 {
        return Vec::new();
    }
    // Kafka's ConsumerProtocol reads a newer version with the newest schema it knows.
    let version = bytes.get_i16().clamp(0, VERSION_MAX);
    match ConsumerProtocolAssignment::decode(&mut bytes, version) {
        Ok(decoded) => decoded
            .assigned_partitions
            .into_iter()
            .map(|topic| (topic.topic.0.to_string(), topic.partitions))
            .collect(),
        Err(_) => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use bytes::BufMut;
    use kafka_protocol::messages::TopicName;
    use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition;
    use kafka_protocol::protocol::{Encodable, StrBytes};

    use super::*;

    #[test]
    fn a_consumer_assignment_decodes_to_topics_and_partitions() {
        let assignment = ConsumerProtocolAssignment::default().with_assigned_partitions(vec![
            TopicPartition::default()
                .with_topic(TopicName(StrBytes::from_static_str("orders")))
                .with_partitions(vec![0, 2]),
        ]);
        let mut bytes = bytes::BytesMut::new();
        bytes.put_i16(1);
        assignment.encode(&mut bytes, 1).unwrap();
        assert_eq!(
            decode_assignment(&bytes),
            vec![("orders".to_string(), vec![0, 2])]
        );
    }

    #[test]
    fn other_protocols_and_garbage_decode_to_nothing() {
        assert!(decode_assignment(&[]).is_empty());
        assert!(decode_assignment(&[0]).is_empty());
        assert!(decode_assignment(&[0, 1, 0xff, 0xff, 0xff, 0x7f]).is_empty());
    }
}
