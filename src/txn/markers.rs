//! Sending transaction markers: WriteTxnMarkers v1 to the leader of every partition of a
//! prepared transaction (Kafka's TransactionMarkerChannelManager), over each leader's
//! inter-broker listener, also when the leader is this broker.
//!
//! The partitions of every outstanding transaction are grouped by their current leader,
//! one request per leader (markers of many transactions batched); a partition
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

/// The real sender: one task per coordinator (started on first use) drains a queue of
/// transactions, groups their outstanding partitions by current leader and sends each
/// leader one WriteTxnMarkers carrying every transaction's markers for it (Kafka's
/// TransactionMarkerChannelManager batches per destination broker the same way).
pub struct NetworkMarkerSender {
    shared: Arc<Channel>,
}

/// Where the channel reads the current leaders (the controller's image).
pub type ImageSource = Box<dyn Fn() -> Arc<MetadataImage> + Send + Sync>;

struct Channel {
    images: ImageSource,
    node_id: NodeId,
    queue: std::sync::Mutex<Vec<Outstanding>>,
    wake: tokio::sync::Notify,
    started: std::sync::atomic::AtomicBool,
}

/// One transaction whose markers are not all written yet.
struct Outstanding {
    job: MarkerJob,
    left: BTreeSet<(String, i32)>,
    still_wanted: StillWanted,
    done: tokio::sync::oneshot::Sender<MarkerOutcome>,
}

impl NetworkMarkerSender {
    pub fn new(controller: Arc<Controller>, node_id: NodeId) -> NetworkMarkerSender {
        NetworkMarkerSender::from_images(Box::new(move || controller.image()), node_id)
    }

    pub fn from_images(images: ImageSource, node_id: NodeId) -> NetworkMarkerSender {
        NetworkMarkerSender {
            shared: Arc::new(Channel {
                images,
                node_id,
                queue: std::sync::Mutex::new(Vec::new()),
                wake: tokio::sync::Notify::new(),
                started: std::sync::atomic::AtomicBool::new(false),
            }),
        }
    }
}

impl MarkerSender for NetworkMarkerSender {
    fn send(
        &self,
        job: MarkerJob,
        still_wanted: StillWanted,
    ) -> Pin<Box<dyn Future<Output = MarkerOutcome> + Send + '_>> {
        let (done, outcome) = tokio::sync::oneshot::channel();
        let left = job
            .partitions
            .iter()
            .flat_map(|(topic, ids)| ids.iter().map(move |id| (topic.clone(), *id)))
            .collect();
        let outstanding = Outstanding {
            job,
            left,
            still_wanted,
            done,
        };
        queue(&self.shared).push(outstanding);
        if !self
            .shared
            .started
            .swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            tokio::spawn(run_channel(self.shared.clone()));
        }
        self.shared.wake.notify_one();
        // A dropped sender (the task died) abandons: the next coordinator retries.
        Box::pin(async move { outcome.await.unwrap_or(MarkerOutcome::Abandoned) })
    }
}

fn queue(channel: &Channel) -> std::sync::MutexGuard<'_, Vec<Outstanding>> {
    channel.queue.lock().unwrap_or_else(|p| p.into_inner())
}

/// The channel's task: rounds until the queue is empty, then waits for work.
async fn run_channel(channel: Arc<Channel>) {
    let mut connections: HashMap<NodeId, PeerConnection> = HashMap::new();
    let mut backoff = RETRY_BACKOFF;
    loop {
        let mut batch = std::mem::take(&mut *queue(&channel));
        if batch.is_empty() {
            channel.wake.notified().await;
            continue;
        }
        let progressed = round(&channel, &mut connections, &mut batch).await;
        let mut unfinished = Vec::new();
        for outstanding in batch {
            if !(outstanding.still_wanted)() {
                let _ = outstanding.done.send(MarkerOutcome::Abandoned);
            } else if outstanding.left.is_empty() {
                let _ = outstanding.done.send(MarkerOutcome::Written);
            } else {
                unfinished.push(outstanding);
            }
        }
        if unfinished.is_empty() {
            backoff = RETRY_BACKOFF;
            continue;
        }
        queue(&channel).extend(unfinished);
        if progressed {
            backoff = RETRY_BACKOFF;
        } else {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(RETRY_BACKOFF_MAX);
        }
    }
}

/// One transaction's share of a leader's request: its index in the batch, its partitions.
type BatchEntry = (usize, Vec<(String, i32)>);

/// One request per leader for every wanted transaction's outstanding partitions; removes
/// the partitions answered from each `left`. Returns whether any partition was answered.
async fn round(
    channel: &Channel,
    connections: &mut HashMap<NodeId, PeerConnection>,
    batch: &mut [Outstanding],
) -> bool {
    let image = (channel.images)();
    // leader -> (index into batch, partitions)
    let mut by_leader: BTreeMap<NodeId, Vec<BatchEntry>> = BTreeMap::new();
    let mut producers = BTreeSet::new();
    for (index, outstanding) in batch.iter_mut().enumerate() {
        // One marker per producer per request: responses are matched by producer id.
        if !(outstanding.still_wanted)() || !producers.insert(outstanding.job.producer_id) {
            continue;
        }
        for (leader, partitions) in group_by_leader(&image, &mut outstanding.left) {
            by_leader
                .entry(leader)
                .or_default()
                .push((index, partitions));
        }
    }
    let mut progressed = false;
    for (leader, entries) in by_leader {
        let Some(address) = image.inter_broker_address(leader) else {
            continue;
        };
        let jobs: Vec<(&MarkerJob, &[(String, i32)])> = entries
            .iter()
            .map(|(index, partitions)| (&batch[*index].job, partitions.as_slice()))
            .collect();
        let request = batch_request(&jobs);
        let Some(response) = call(channel, connections, leader, &address, &request).await else {
            continue;
        };
        for (index, _) in &entries {
            let producer_id = batch[*index].job.producer_id;
            for done in answered_partitions(&response, producer_id) {
                progressed |= batch[*index].left.remove(&done);
            }
        }
    }
    progressed
}

/// Sends `request` to `leader`, connecting first if needed; a failed call drops the
/// connection (reconnected next round).
async fn call(
    channel: &Channel,
    connections: &mut HashMap<NodeId, PeerConnection>,
    leader: NodeId,
    address: &str,
    request: &WriteTxnMarkersRequest,
) -> Option<WriteTxnMarkersResponse> {
    if let std::collections::hash_map::Entry::Vacant(slot) = connections.entry(leader) {
        let client_id = format!("broker-{}-txn-markers", channel.node_id);
        let connecting = PeerConnection::connect(
            address,
            client_id,
            RESPONSE_FRAME_BYTES_MAX,
            CONNECT_TIMEOUT,
        );
        match connecting.await {
            Ok(connection) => {
                slot.insert(connection);
            }
            Err(error) => {
                tracing::debug!(leader, %error, "cannot reach a leader for markers");
                return None;
            }
        }
    }
    let connection = connections.get_mut(&leader)?;
    let answer = connection
        .call::<_, WriteTxnMarkersResponse>(ApiKey::WriteTxnMarkers, 1, request, REQUEST_TIMEOUT)
        .await;
    match answer {
        Ok(response) => Some(response),
        Err(error) => {
            tracing::debug!(leader, %error, "WriteTxnMarkers failed; retrying");
            connections.remove(&leader);
            None
        }
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

/// One WriteTxnMarkers v1 with a marker per transaction, each naming its partitions by
/// topic.
pub fn batch_request(jobs: &[(&MarkerJob, &[(String, i32)])]) -> WriteTxnMarkersRequest {
    let markers = jobs
        .iter()
        .map(|(job, partitions)| {
            let mut topics: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
            for (topic, partition) in partitions.iter() {
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
            WritableTxnMarker::default()
                .with_producer_id(ProducerId(job.producer_id))
                .with_producer_epoch(job.producer_epoch)
                .with_transaction_result(job.commit)
                .with_topics(topics)
                .with_coordinator_epoch(job.coordinator_epoch)
        })
        .collect();
    WriteTxnMarkersRequest::default().with_markers(markers)
}

/// The partitions done: NONE, or a fencing error that retrying cannot change (a newer
/// producer epoch or coordinator owns the producer there, so this marker is moot; Kafka's
/// channel manager stops sending those too).
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
                    // UNKNOWN_TOPIC_OR_PARTITION is retried, as Kafka does: a new leader
                    // may not have opened the partition yet (a topic that is gone is
                    // dropped from the image check instead).
                    Some(
                        ResponseError::InvalidProducerEpoch
                        | ResponseError::TransactionCoordinatorFenced,
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
    fn one_request_batches_every_transaction_by_topic() {
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
        let other = MarkerJob {
            producer_id: 5,
            commit: false,
            ..job.clone()
        };
        let request = batch_request(&[(&job, &partitions), (&other, &partitions[..1])]);
        assert_eq!(request.markers.len(), 2);
        assert_eq!(request.markers[1].producer_id.0, 5);
        assert!(!request.markers[1].transaction_result);
        assert_eq!(request.markers[1].topics[0].partition_indexes, vec![1]);
        let marker = &request.markers[0];
        assert_eq!((marker.producer_id.0, marker.producer_epoch), (4, 2));
        assert!(marker.transaction_result);
        assert_eq!(marker.coordinator_epoch, 9);
        assert_eq!(marker.topics.len(), 2);
        assert_eq!(marker.topics[1].partition_indexes, vec![1, 0]);
    }

    /// A leader that answers partition 1 NOT_LEADER_OR_FOLLOWER once, everything else
    /// NONE; returns how many markers each request carried.
    async fn fake_leader(
        listener: tokio::net::TcpListener,
        seen: Arc<std::sync::Mutex<Vec<usize>>>,
    ) {
        use bytes::{Buf, BufMut, BytesMut};
        use kafka_protocol::messages::RequestHeader;
        use kafka_protocol::messages::write_txn_markers_response::{
            WritableTxnMarkerPartitionResult, WritableTxnMarkerResult, WritableTxnMarkerTopicResult,
        };
        use kafka_protocol::protocol::{Decodable, Encodable};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut refused_once = false;
        loop {
            let mut size = [0u8; 4];
            if socket.read_exact(&mut size).await.is_err() {
                return;
            }
            let mut body = vec![0u8; i32::from_be_bytes(size) as usize];
            socket.read_exact(&mut body).await.unwrap();
            let mut body = bytes::Bytes::from(body);
            let header_version = ApiKey::WriteTxnMarkers.request_header_version(1);
            let header = RequestHeader::decode(&mut body, header_version).unwrap();
            let request = WriteTxnMarkersRequest::decode(&mut body, 1).unwrap();
            seen.lock().unwrap().push(request.markers.len());
            let markers = request
                .markers
                .iter()
                .map(|marker| {
                    let topics = marker
                        .topics
                        .iter()
                        .map(|topic| {
                            let partitions = topic
                                .partition_indexes
                                .iter()
                                .map(|index| {
                                    let refuse = *index == 1 && !refused_once;
                                    let code = if refuse {
                                        ResponseError::NotLeaderOrFollower.code()
                                    } else {
                                        0
                                    };
                                    WritableTxnMarkerPartitionResult::default()
                                        .with_partition_index(*index)
                                        .with_error_code(code)
                                })
                                .collect();
                            WritableTxnMarkerTopicResult::default()
                                .with_name(topic.name.clone())
                                .with_partitions(partitions)
                        })
                        .collect();
                    WritableTxnMarkerResult::default()
                        .with_producer_id(marker.producer_id)
                        .with_topics(topics)
                })
                .collect();
            refused_once = true;
            let response = WriteTxnMarkersResponse::default().with_markers(markers);
            let mut frame = BytesMut::new();
            frame.put_i32(0);
            let response_header = kafka_protocol::messages::ResponseHeader::default()
                .with_correlation_id(header.correlation_id);
            let response_header_version = ApiKey::WriteTxnMarkers.response_header_version(1);
            response_header
                .encode(&mut frame, response_header_version)
                .unwrap();
            response.encode(&mut frame, 1).unwrap();
            let size = (frame.len() - 4) as i32;
            frame[..4].copy_from_slice(&size.to_be_bytes());
            socket.write_all(&frame).await.unwrap();
            let _ = body.remaining();
        }
    }

    fn image_with_leader(port: u16) -> MetadataImage {
        use crate::controller::{BrokerEndpoint, BrokerRegistration, PartitionImage, TopicImage};
        let mut image = MetadataImage::default();
        image.brokers.insert(
            1,
            BrokerRegistration {
                node_id: 1,
                incarnation_id: uuid::Uuid::nil(),
                epoch: 1,
                listeners: vec![BrokerEndpoint {
                    name: "PLAINTEXT".into(),
                    host: "127.0.0.1".into(),
                    port,
                }],
                host: "127.0.0.1".into(),
                port: i32::from(port),
                rack: None,
                fenced: false,
                in_controlled_shutdown: false,
            },
        );
        let partition = PartitionImage {
            replicas: vec![1],
            isr: vec![1],
            leader: 1,
            leader_epoch: 0,
            partition_epoch: 0,
        };
        let topic = TopicImage {
            name: "t".into(),
            id: uuid::Uuid::from_u128(1),
            partitions: vec![partition.clone(), partition],
            configs: BTreeMap::new(),
        };
        image.topics.insert("t".into(), topic);
        image
    }

    #[tokio::test]
    async fn markers_of_many_transactions_share_a_request_and_refusals_are_retried() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let server = tokio::spawn(fake_leader(listener, seen.clone()));
        let image = Arc::new(image_with_leader(port));
        let sender = NetworkMarkerSender::from_images(Box::new(move || image.clone()), 7);
        let job = |producer_id, gone_topic: bool| {
            let mut partitions = TxnPartitions::from([("t".to_string(), BTreeSet::from([0, 1]))]);
            if gone_topic {
                partitions.insert("deleted".into(), BTreeSet::from([0]));
            }
            MarkerJob {
                producer_id,
                producer_epoch: 0,
                commit: true,
                coordinator_epoch: 3,
                partitions,
            }
        };
        let wanted: StillWanted = Arc::new(|| true);
        let first = sender.send(job(4, false), wanted.clone());
        let second = sender.send(job(5, true), wanted);
        let outcomes = tokio::time::timeout(Duration::from_secs(20), async {
            (first.await, second.await)
        })
        .await
        .expect("the markers were never all written");
        assert_eq!(outcomes, (MarkerOutcome::Written, MarkerOutcome::Written));
        // Both transactions in the first request; the refused partition retried after.
        let requests = seen.lock().unwrap().clone();
        assert_eq!(requests[0], 2, "{requests:?}");
        assert!(requests.len() >= 2, "{requests:?}");
        let abandoned = sender.send(job(6, false), Arc::new(|| false));
        assert_eq!(abandoned.await, MarkerOutcome::Abandoned);
        drop(sender);
        server.abort();
        let _ = server.await;
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
                partition(4, Some(ResponseError::UnknownTopicOrPartition)),
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
