//! Sending transaction markers: WriteTxnMarkers v1 to the leader of every partition of a
//! prepared transaction (Kafka's TransactionMarkerChannelManager), over each leader's
//! inter-broker listener, also when the leader is this broker.
//!
//! The partitions are grouped by their current leader, one request per leader; a partition
//! that answers NOT_LEADER_OR_FOLLOWER (or any retriable error, or whose leader cannot be
//! reached) is looked up again and retried after a backoff, until every partition has
//! answered NONE. It gives up only when the coordinator no longer owns the transaction
//! (`still_wanted` turns false: unloaded, another coordinator epoch) or a partition's topic
//! is gone (that partition is dropped, as Kafka drops markers for deleted topics).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::write_txn_markers_request::{
    WritableTxnMarker, WritableTxnMarkerTopic,
};
use kafka_protocol::messages::{
    ApiKey, ProducerId, TopicName, WriteTxnMarkersRequest, WriteTxnMarkersResponse,
};
use kafka_protocol::protocol::StrBytes;

use super::records::TxnPartitions;
use crate::controller::{Controller, MetadataImage};
use crate::replica::peer_connection::PeerConnection;
use crate::types::NodeId;

/// The markers of one transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MarkerJob {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub commit: bool,
    /// The `__transaction_state` partition's leader epoch the transaction is owned under.
    pub coordinator_epoch: i32,
    pub partitions: TxnPartitions,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MarkerOutcome {
    /// Every partition has its marker (or its topic is gone).
    Written,
    /// The coordinator lost the transaction meanwhile: its new owner sends them.
    Abandoned,
}

pub type StillWanted = Arc<dyn Fn() -> bool + Send + Sync>;

/// Writes a transaction's markers to every partition, retrying until done or abandoned.
pub trait MarkerSender: Send + Sync {
    fn send(
        &self,
        job: MarkerJob,
        still_wanted: StillWanted,
    ) -> Pin<Box<dyn Future<Output = MarkerOutcome> + Send + '_>>;
}

/// Backoff between rounds for the partitions that did not answer NONE.
const RETRY_BACKOFF: Duration = Duration::from_millis(100);
const RETRY_BACKOFF_MAX: Duration = Duration::from_secs(2);
/// How long one WriteTxnMarkers may take (the leader waits for its ISR).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const RESPONSE_FRAME_BYTES_MAX: usize = 16 << 20;

/// The real sender: the metadata image says where each partition leads.
pub struct NetworkMarkerSender {
    controller: Arc<Controller>,
    node_id: NodeId,
}

impl NetworkMarkerSender {
    pub fn new(controller: Arc<Controller>, node_id: NodeId) -> NetworkMarkerSender {
        NetworkMarkerSender {
            controller,
            node_id,
        }
    }

    async fn send_all(&self, job: MarkerJob, still_wanted: StillWanted) -> MarkerOutcome {
        let mut left: BTreeSet<(String, i32)> = job
            .partitions
            .iter()
            .flat_map(|(topic, ids)| ids.iter().map(move |id| (topic.clone(), *id)))
            .collect();
        let mut backoff = RETRY_BACKOFF;
        let mut connections: HashMap<NodeId, PeerConnection> = HashMap::new();
        while !left.is_empty() {
            if !still_wanted() {
                return MarkerOutcome::Abandoned;
            }
            let image = self.controller.image();
            let by_leader = group_by_leader(&image, &mut left);
            for (leader, partitions) in by_leader {
                let Some(address) = leader_address(&image, leader) else {
                    continue;
                };
                let answered = self
                    .send_to(&mut connections, leader, &address, &job, &partitions)
                    .await;
                for done in answered {
                    left.remove(&done);
                }
            }
            if left.is_empty() {
                break;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(RETRY_BACKOFF_MAX);
        }
        MarkerOutcome::Written
    }

    /// One request to `leader`; returns the partitions that answered NONE. A broken
    /// connection is dropped (reconnected next round).
    async fn send_to(
        &self,
        connections: &mut HashMap<NodeId, PeerConnection>,
        leader: NodeId,
        address: &str,
        job: &MarkerJob,
        partitions: &[(String, i32)],
    ) -> Vec<(String, i32)> {
        if !connections.contains_key(&leader) {
            let client_id = format!("broker-{}-txn-markers", self.node_id);
            match PeerConnection::connect(
                address,
                client_id,
                RESPONSE_FRAME_BYTES_MAX,
                CONNECT_TIMEOUT,
            )
            .await
            {
                Ok(connection) => {
                    connections.insert(leader, connection);
                }
                Err(error) => {
                    tracing::debug!(leader, %error, "cannot reach a leader for markers");
                    return Vec::new();
                }
            }
        }
        let Some(connection) = connections.get_mut(&leader) else {
            return Vec::new();
        };
        let request = marker_request(job, partitions);
        let call = connection.call::<_, WriteTxnMarkersResponse>(
            ApiKey::WriteTxnMarkers,
            1,
            &request,
            REQUEST_TIMEOUT,
        );
        match call.await {
            Ok(response) => answered_partitions(&response, job.producer_id),
            Err(error) => {
                tracing::debug!(leader, %error, "WriteTxnMarkers failed; retrying");
                connections.remove(&leader);
                Vec::new()
            }
        }
    }
}

impl MarkerSender for NetworkMarkerSender {
    fn send(
        &self,
        job: MarkerJob,
        still_wanted: StillWanted,
    ) -> Pin<Box<dyn Future<Output = MarkerOutcome> + Send + '_>> {
        Box::pin(self.send_all(job, still_wanted))
    }
}

/// The partitions left, by their current leader. A partition whose topic is gone is
/// dropped from `left` (no marker can or need be written); one without a leader waits.
fn group_by_leader(
    image: &MetadataImage,
    left: &mut BTreeSet<(String, i32)>,
) -> BTreeMap<NodeId, Vec<(String, i32)>> {
    let mut by_leader: BTreeMap<NodeId, Vec<(String, i32)>> = BTreeMap::new();
    left.retain(|(topic, partition)| {
        let Some(found) = image.partition(topic, *partition) else {
            tracing::info!(topic, partition, "no marker for a partition that is gone");
            return false;
        };
        if found.leader >= 0 {
            by_leader
                .entry(found.leader)
                .or_default()
                .push((topic.clone(), *partition));
        }
        true
    });
    by_leader
}

/// A leader's inter-broker endpoint: its first registered listener.
fn leader_address(image: &MetadataImage, leader: NodeId) -> Option<String> {
    let broker = image.brokers.get(&leader)?;
    let endpoint = broker.listeners.first()?;
    Some(format!("{}:{}", endpoint.host, endpoint.port))
}

pub fn marker_request(job: &MarkerJob, partitions: &[(String, i32)]) -> WriteTxnMarkersRequest {
    let mut topics: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for (topic, partition) in partitions {
        topics.entry(topic).or_default().push(*partition);
    }
    let topics = topics
        .into_iter()
        .map(|(name, ids)| {
            WritableTxnMarkerTopic::default()
                .with_name(TopicName(StrBytes::from_string(name.to_string())))
                .with_partition_indexes(ids)
        })
        .collect();
    let marker = WritableTxnMarker::default()
        .with_producer_id(ProducerId(job.producer_id))
        .with_producer_epoch(job.producer_epoch)
        .with_transaction_result(job.commit)
        .with_topics(topics)
        .with_coordinator_epoch(job.coordinator_epoch);
    WriteTxnMarkersRequest::default().with_markers(vec![marker])
}

/// The partitions done: NONE, or an error that retrying cannot change for this
/// transaction (Kafka's channel manager completes those too: a newer epoch or
/// coordinator owns the producer there, so this marker is moot).
pub fn answered_partitions(
    response: &WriteTxnMarkersResponse,
    producer_id: i64,
) -> Vec<(String, i32)> {
    let mut done = Vec::new();
    for marker in &response.markers {
        if marker.producer_id.0 != producer_id {
            continue;
        }
        for topic in &marker.topics {
            for partition in &topic.partitions {
                let finished = match ResponseError::try_from_code(partition.error_code) {
                    None => true,
                    Some(
                        ResponseError::InvalidProducerEpoch
                        | ResponseError::TransactionCoordinatorFenced
                        | ResponseError::UnknownTopicOrPartition,
                    ) => {
                        tracing::warn!(
                            topic = %topic.name.0,
                            partition = partition.partition_index,
                            error_code = partition.error_code,
                            "marker refused for good; not retried"
                        );
                        true
                    }
                    Some(_) => false,
                };
                if finished {
                    done.push((topic.name.0.to_string(), partition.partition_index));
                }
            }
        }
    }
    done
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::write_txn_markers_response::{
        WritableTxnMarkerPartitionResult, WritableTxnMarkerResult, WritableTxnMarkerTopicResult,
    };

    use super::*;

    #[test]
    fn one_request_names_every_partition_by_topic() {
        let job = MarkerJob {
            producer_id: 4,
            producer_epoch: 2,
            commit: true,
            coordinator_epoch: 9,
            partitions: TxnPartitions::new(),
        };
        let partitions = [
            ("b".to_string(), 1),
            ("a".to_string(), 0),
            ("b".to_string(), 0),
        ];
        let request = marker_request(&job, &partitions);
        let marker = &request.markers[0];
        assert_eq!((marker.producer_id.0, marker.producer_epoch), (4, 2));
        assert!(marker.transaction_result);
        assert_eq!(marker.coordinator_epoch, 9);
        assert_eq!(marker.topics.len(), 2);
        assert_eq!(marker.topics[1].partition_indexes, vec![1, 0]);
    }

    #[test]
    fn retriable_answers_are_not_done() {
        let partition = |index, error: Option<ResponseError>| {
            WritableTxnMarkerPartitionResult::default()
                .with_partition_index(index)
                .with_error_code(error.map_or(0, |e| e.code()))
        };
        let topic = WritableTxnMarkerTopicResult::default()
            .with_name(TopicName(StrBytes::from_static_str("t")))
            .with_partitions(vec![
                partition(0, None),
                partition(1, Some(ResponseError::NotLeaderOrFollower)),
                partition(2, Some(ResponseError::InvalidProducerEpoch)),
                partition(3, Some(ResponseError::NotEnoughReplicas)),
            ]);
        let response = WriteTxnMarkersResponse::default().with_markers(vec![
            WritableTxnMarkerResult::default()
                .with_producer_id(ProducerId(4))
                .with_topics(vec![topic]),
        ]);
        let done = answered_partitions(&response, 4);
        assert_eq!(done, vec![("t".to_string(), 0), ("t".to_string(), 2)]);
        assert!(answered_partitions(&response, 5).is_empty());
    }
}
