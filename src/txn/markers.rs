//! Sending transaction markers: WriteTxnMarkers v1 to the leader of every partition of a
//! prepared transaction (Kafka's TransactionMarkerChannelManager), over each leader's
//! inter-broker listener, also when the leader is this broker.
//!
//! Shape: the outstanding transactions live in a [`MarkerQueue`] shared by a dispatcher
//! task and one worker task per destination broker. The dispatcher routes each waiting
//! partition to its current leader, starts (or wakes) that leader's worker, drops jobs the
//! coordinator no longer wants and partitions whose topic is gone (as Kafka drops markers
//! for deleted topics). A worker sends its destination one WriteTxnMarkers at a time
//! carrying the markers of many transactions, so destinations proceed concurrently and a
//! slow or unreachable leader delays only its own partitions. A partition answered
//! NOT_LEADER_OR_FOLLOWER (or any retriable error, or not answered) goes back to the
//! dispatcher, which routes it again from the current image after a backoff.
//!
//! Limits: one request in flight per destination, at most [`DESTINATIONS_MAX`] workers,
//! at most [`MARKERS_PER_REQUEST_MAX`] transactions per request; the request timeout
//! ([`REQUEST_TIMEOUT`]) is longer than the deadline the leader's WriteTxnMarkers handler
//! gives its markers to commit ([`LEADER_COMMIT_TIMEOUT`]), so a slow leader answers
//! REQUEST_TIMED_OUT (retried) instead of the sender dropping the connection.
//!
//! Survival: the jobs live in the shared queue, not in a task. A worker that panics or
//! ends is noticed by the dispatcher, its in-flight claims are released and it is started
//! again; a dispatcher that panics or ends is started again by the futures waiting on its
//! jobs (every [`SUPERVISE_INTERVAL`]) or by the next `send`. A job handed to a dead sender
//! is therefore still completed.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::write_txn_markers_request::{
    WritableTxnMarker, WritableTxnMarkerTopic,
};
use kafka_protocol::messages::write_txn_markers_response::{
    WritableTxnMarkerPartitionResult, WritableTxnMarkerResult, WritableTxnMarkerTopicResult,
};
use kafka_protocol::messages::{
    ApiKey, ProducerId, TopicName, WriteTxnMarkersRequest, WriteTxnMarkersResponse,
};
use kafka_protocol::protocol::StrBytes;
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;

use super::marker_queue::{Claim, MarkerQueue, PartitionKey, Placement};
use super::records::TxnPartitions;
use crate::controller::{Controller, MetadataImage};
use crate::replica::peer_connection::{PeerConnection, PeerError};
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

/// Backoff of a destination whose last request settled nothing.
const RETRY_BACKOFF: Duration = Duration::from_millis(100);
const RETRY_BACKOFF_MAX: Duration = Duration::from_secs(2);
/// How long one WriteTxnMarkers may take before the sender gives up on the connection.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the leader's WriteTxnMarkers handler waits for its markers to commit (its ISR
/// to replicate them): shorter than [`REQUEST_TIMEOUT`], so the leader answers first.
pub const LEADER_COMMIT_TIMEOUT: Duration = Duration::from_secs(25);
const _: () = assert!(LEADER_COMMIT_TIMEOUT.as_millis() + 1_000 < REQUEST_TIMEOUT.as_millis());
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const RESPONSE_FRAME_BYTES_MAX: usize = 16 << 20;
/// Destination workers at once (brokers with markers to write).
pub const DESTINATIONS_MAX: usize = 256;
/// Transactions whose markers one request carries.
pub const MARKERS_PER_REQUEST_MAX: usize = 500;
/// How often the dispatcher looks again while jobs are outstanding: leaders move, jobs
/// stop being wanted, workers die.
const DISPATCH_INTERVAL: Duration = Duration::from_millis(200);
/// How often a waiting `send` checks that the dispatcher is alive.
pub const SUPERVISE_INTERVAL: Duration = Duration::from_secs(1);
/// A worker with nothing to send for this long ends (a new one starts when needed).
const WORKER_IDLE: Duration = Duration::from_secs(30);

/// Sends one WriteTxnMarkers to a destination broker and returns its answer. At most one
/// call per destination is in flight at a time (the sender guarantees it), so an
/// implementation may keep one connection per destination.
pub trait MarkerTransport: Send + Sync + 'static {
    fn write_markers<'a>(
        &'a self,
        destination: NodeId,
        address: &'a str,
        request: &'a WriteTxnMarkersRequest,
    ) -> Pin<Box<dyn Future<Output = Result<WriteTxnMarkersResponse, PeerError>> + Send + 'a>>;
}

/// The real transport: one [`PeerConnection`] per destination, reconnected after a failure
/// or when the destination's address changed.
pub struct PeerTransport {
    client_id: String,
    connections: Mutex<HashMap<NodeId, PeerConnection>>,
}

impl PeerTransport {
    pub fn new(node_id: NodeId) -> PeerTransport {
        PeerTransport {
            client_id: format!("broker-{node_id}-txn-markers"),
            connections: Mutex::new(HashMap::new()),
        }
    }

    fn take(&self, destination: NodeId) -> Option<PeerConnection> {
        let mut connections = self.connections.lock().unwrap_or_else(|p| p.into_inner());
        connections.remove(&destination)
    }
}

impl MarkerTransport for PeerTransport {
    fn write_markers<'a>(
        &'a self,
        destination: NodeId,
        address: &'a str,
        request: &'a WriteTxnMarkersRequest,
    ) -> Pin<Box<dyn Future<Output = Result<WriteTxnMarkersResponse, PeerError>> + Send + 'a>> {
        Box::pin(async move {
            // Taken out while in use: a failed call drops it (reconnected next time).
            let mut connection = match self.take(destination) {
                Some(connection) if connection.address() == address => connection,
                _ => {
                    let client_id = self.client_id.clone();
                    let frame_max = RESPONSE_FRAME_BYTES_MAX;
                    // The kernel's buffer sizes (Kafka gives this channel
                    // socket.receive.buffer.bytes; markers are small).
                    let connecting = PeerConnection::connect(
                        address,
                        client_id,
                        frame_max,
                        None,
                        CONNECT_TIMEOUT,
                    );
                    connecting.await?
                }
            };
            let response = connection
                .call(ApiKey::WriteTxnMarkers, 1, request, REQUEST_TIMEOUT)
                .await?;
            let mut connections = self.connections.lock().unwrap_or_else(|p| p.into_inner());
            connections.insert(destination, connection);
            Ok(response)
        })
    }
}

/// The real sender: see the module doc.
pub struct NetworkMarkerSender {
    channel: Arc<Channel>,
}

/// Where the channel reads the current leaders (the controller's image).
pub type ImageSource = Box<dyn Fn() -> Arc<MetadataImage> + Send + Sync>;

struct Channel {
    images: ImageSource,
    transport: Arc<dyn MarkerTransport>,
    state: Mutex<ChannelState>,
    /// Wakes the dispatcher: a new job, or a worker's answer.
    wake: Notify,
    dispatcher: Mutex<Option<JoinHandle<()>>>,
}

#[derive(Default)]
struct ChannelState {
    queue: MarkerQueue<Waiter>,
    workers: HashMap<NodeId, Worker>,
    /// Numbers workers, so a retiring one removes only its own entry.
    next_generation: u64,
}

/// What a job's `send` waits on.
struct Waiter {
    still_wanted: StillWanted,
    done: oneshot::Sender<MarkerOutcome>,
}

struct Worker {
    generation: u64,
    wake: Arc<Notify>,
    task: JoinHandle<()>,
}

impl NetworkMarkerSender {
    pub fn new(controller: Arc<Controller>, node_id: NodeId) -> NetworkMarkerSender {
        let images: ImageSource = Box::new(move || controller.image());
        NetworkMarkerSender::with_transport(images, Arc::new(PeerTransport::new(node_id)))
    }

    pub fn from_images(images: ImageSource, node_id: NodeId) -> NetworkMarkerSender {
        NetworkMarkerSender::with_transport(images, Arc::new(PeerTransport::new(node_id)))
    }

    pub fn with_transport(
        images: ImageSource,
        transport: Arc<dyn MarkerTransport>,
    ) -> NetworkMarkerSender {
        NetworkMarkerSender {
            channel: Arc::new(Channel {
                images,
                transport,
                state: Mutex::new(ChannelState::default()),
                wake: Notify::new(),
                dispatcher: Mutex::new(None),
            }),
        }
    }

    /// Starts the dispatcher if it is not running (first use, or it died).
    fn ensure_dispatcher(&self) {
        let mut slot = self
            .channel
            .dispatcher
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        match slot.as_ref() {
            Some(task) if !task.is_finished() => return,
            Some(_) => tracing::error!("the transaction marker dispatcher ended; restarting it"),
            None => {}
        }
        *slot = Some(tokio::spawn(run_dispatcher(self.channel.clone())));
    }
}

impl Drop for NetworkMarkerSender {
    fn drop(&mut self) {
        let dispatcher = self
            .channel
            .dispatcher
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(task) = dispatcher.as_ref() {
            task.abort();
        }
        for worker in state(&self.channel).workers.values() {
            worker.task.abort();
        }
    }
}

impl MarkerSender for NetworkMarkerSender {
    fn send(
        &self,
        job: MarkerJob,
        still_wanted: StillWanted,
    ) -> Pin<Box<dyn Future<Output = MarkerOutcome> + Send + '_>> {
        let (done, mut outcome) = oneshot::channel();
        state(&self.channel)
            .queue
            .push(job, Waiter { still_wanted, done });
        self.ensure_dispatcher();
        self.channel.wake.notify_one();
        Box::pin(async move {
            loop {
                tokio::select! {
                    // Dropped unanswered only if the queue itself went away: abandon, and
                    // the coordinator's next owner sends them.
                    answer = &mut outcome => return answer.unwrap_or(MarkerOutcome::Abandoned),
                    _ = tokio::time::sleep(SUPERVISE_INTERVAL) => self.ensure_dispatcher(),
                }
            }
        })
    }
}

fn state(channel: &Channel) -> MutexGuard<'_, ChannelState> {
    channel.state.lock().unwrap_or_else(|p| p.into_inner())
}

/// A partition's destination in `image`.
fn placement_in(image: &MetadataImage) -> impl Fn(&str, i32) -> Placement + '_ {
    move |topic: &str, partition: i32| match image.partition(topic, partition) {
        None => Placement::Gone,
        Some(found) if found.leader >= 0 => Placement::Leader(found.leader),
        Some(_) => Placement::NoLeader,
    }
}

/// The dispatcher: a pass whenever woken, and every [`DISPATCH_INTERVAL`] while jobs wait.
async fn run_dispatcher(channel: Arc<Channel>) {
    loop {
        let notified = channel.wake.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let idle = dispatch(&channel);
        if idle {
            notified.await;
        } else {
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep(DISPATCH_INTERVAL) => {}
            }
        }
    }
}

/// One dispatcher pass; true if no job is left.
fn dispatch(channel: &Arc<Channel>) -> bool {
    abandon_unwanted(channel);
    let image = (channel.images)();
    let placement = placement_in(&image);
    let mut state = state(channel);
    let state = &mut *state;
    // Dead workers (panicked or ended while holding claims): their answers never come, so
    // their claims are released before routing.
    let dead: Vec<NodeId> = (state.workers.iter())
        .filter(|(_, worker)| worker.task.is_finished())
        .map(|(destination, _)| *destination)
        .collect();
    for destination in dead {
        state.workers.remove(&destination);
        let released = state.queue.release(destination);
        tracing::warn!(
            destination,
            released,
            "a transaction marker worker ended; restarting"
        );
    }
    let destinations = state.queue.route(&placement);
    for destination in destinations {
        if let Some(worker) = state.workers.get(&destination) {
            worker.wake.notify_one();
        } else if state.workers.len() < DESTINATIONS_MAX {
            start_worker(channel, state, destination);
        }
    }
    finish(state.queue.take_finished());
    state.queue.is_empty()
}

/// Answers (Abandoned) the jobs the coordinator no longer owns. `still_wanted` is called
/// without the queue's lock held: it may take the coordinator's locks, and the coordinator
/// may be in `send`, which takes the queue's.
fn abandon_unwanted(channel: &Channel) {
    let checks: Vec<(u64, StillWanted)> = (state(channel).queue.waiters())
        .map(|(id, waiter)| (id, waiter.still_wanted.clone()))
        .collect();
    let unwanted: Vec<u64> = (checks.into_iter())
        .filter(|(_, still_wanted)| !still_wanted())
        .map(|(id, _)| id)
        .collect();
    if unwanted.is_empty() {
        return;
    }
    let mut state = state(channel);
    for id in unwanted {
        if let Some(waiter) = state.queue.remove(id) {
            let _ = waiter.done.send(MarkerOutcome::Abandoned);
        }
    }
}

fn finish(waiters: Vec<Waiter>) {
    for waiter in waiters {
        let _ = waiter.done.send(MarkerOutcome::Written);
    }
}

fn start_worker(channel: &Arc<Channel>, state: &mut ChannelState, destination: NodeId) {
    let generation = state.next_generation;
    state.next_generation += 1;
    let wake = Arc::new(Notify::new());
    let task = tokio::spawn(run_worker(
        channel.clone(),
        destination,
        generation,
        wake.clone(),
    ));
    let worker = Worker {
        generation,
        wake,
        task,
    };
    assert!(state.workers.insert(destination, worker).is_none());
}

/// One destination's worker: claim, send, settle, repeat; retires when idle.
async fn run_worker(
    channel: Arc<Channel>,
    destination: NodeId,
    generation: u64,
    wake: Arc<Notify>,
) {
    let mut backoff = RETRY_BACKOFF;
    let mut idle = false;
    loop {
        let notified = wake.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let image = (channel.images)();
        let Some(claim) = claim_or_retire(&channel, &image, destination, generation, idle) else {
            return;
        };
        if claim.is_empty() {
            idle = tokio::time::timeout(WORKER_IDLE, notified).await.is_err();
            continue;
        }
        idle = false;
        let settled = send_claim(&channel, &image, destination, &claim).await;
        // The dispatcher routes what is left (a refused partition may have a new leader).
        channel.wake.notify_one();
        if settled == 0 {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(RETRY_BACKOFF_MAX);
        } else {
            backoff = RETRY_BACKOFF;
        }
    }
}

/// The worker's next claim; `None` when it was idle and still has nothing, after removing
/// its entry in the same critical section, so the dispatcher either saw it alive and
/// woke it before, or sees it gone and starts a new one.
fn claim_or_retire(
    channel: &Channel,
    image: &MetadataImage,
    destination: NodeId,
    generation: u64,
    idle: bool,
) -> Option<Claim> {
    let placement = placement_in(image);
    let mut state = state(channel);
    let claim = state
        .queue
        .claim(destination, &placement, MARKERS_PER_REQUEST_MAX);
    if claim.is_empty() && idle {
        if state.workers.get(&destination).map(|w| w.generation) == Some(generation) {
            state.workers.remove(&destination);
        }
        return None;
    }
    Some(claim)
}

/// Sends `claim` to `destination` and settles the answer; returns how many partitions
/// finished.
async fn send_claim(
    channel: &Channel,
    image: &MetadataImage,
    destination: NodeId,
    claim: &Claim,
) -> usize {
    let (request, producer_ids) = {
        let state = state(channel);
        let jobs: Vec<(&MarkerJob, &[PartitionKey])> = (claim.iter())
            .filter_map(|(id, partitions)| Some((state.queue.job(*id)?, partitions.as_slice())))
            .collect();
        let producer_ids: Vec<i64> = jobs.iter().map(|(job, _)| job.producer_id).collect();
        (batch_request(&jobs), producer_ids)
    };
    let answer = match image.inter_broker_address(destination) {
        Some(address) => {
            let call = channel
                .transport
                .write_markers(destination, &address, &request);
            call.await.map_err(|error| error.to_string())
        }
        None => Err("no inter-broker address".to_string()),
    };
    let mut answered: HashSet<(i64, PartitionKey)> = HashSet::new();
    match answer {
        Ok(response) => {
            for producer_id in producer_ids {
                let done = answered_partitions(&response, producer_id);
                answered.extend(done.into_iter().map(|key| (producer_id, key)));
            }
        }
        Err(error) => tracing::debug!(destination, %error, "WriteTxnMarkers failed; retrying"),
    }
    let done =
        |producer_id: i64, key: &PartitionKey| answered.contains(&(producer_id, key.clone()));
    let mut state = state(channel);
    let settled = state.queue.settle(destination, claim, &done);
    finish(state.queue.take_finished());
    settled
}

/// A response to `request` answering each of its partitions, in request order, with
/// `code(producer id, topic, partition)`.
pub fn answered(
    request: &WriteTxnMarkersRequest,
    code: impl Fn(i64, &str, i32) -> i16,
) -> WriteTxnMarkersResponse {
    let markers = (request.markers.iter())
        .map(|marker| {
            let producer_id = marker.producer_id.0;
            let topics = (marker.topics.iter())
                .map(|topic| {
                    let partitions = (topic.partition_indexes.iter())
                        .map(|&index| {
                            WritableTxnMarkerPartitionResult::default()
                                .with_partition_index(index)
                                .with_error_code(code(producer_id, topic.name.0.as_str(), index))
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
    WriteTxnMarkersResponse::default().with_markers(markers)
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

    use std::collections::BTreeSet;
    use std::sync::atomic::{AtomicBool, Ordering};

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
            let response = answered(&request, |_, _, index| {
                if index == 1 && !refused_once {
                    ResponseError::NotLeaderOrFollower.code()
                } else {
                    0
                }
            });
            refused_once = true;
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
        image_with(&[(1, port)], &[("t", 1, 2)])
    }

    /// Brokers (node id, port) on loopback and topics (name, leader, partitions).
    fn image_with(brokers: &[(NodeId, u16)], topics: &[(&str, NodeId, usize)]) -> MetadataImage {
        use crate::controller::{BrokerEndpoint, BrokerRegistration, PartitionImage, TopicImage};
        let mut image = MetadataImage::default();
        for &(node_id, port) in brokers {
            let registration = BrokerRegistration {
                node_id,
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
            };
            image.brokers.insert(node_id, registration);
        }
        for (index, &(name, leader, count)) in topics.iter().enumerate() {
            let partition = PartitionImage {
                replicas: vec![leader],
                isr: vec![leader],
                leader,
                leader_epoch: 0,
                partition_epoch: 0,
                adding_replicas: Vec::new(),
                removing_replicas: Vec::new(),
            };
            let topic = TopicImage {
                name: name.into(),
                id: uuid::Uuid::from_u128(index as u128 + 1),
                partitions: vec![partition; count],
                configs: BTreeMap::new(),
            };
            image.topics.insert(name.into(), topic);
        }
        image
    }

    /// How a fake destination behaves.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum Behaviour {
        /// Every partition NONE.
        Answer,
        /// Never answers (a leader whose ISR is stuck, or a black hole).
        Hang,
        /// Its first call panics, inside the worker task; later calls answer.
        PanicOnce,
        /// Calls wait until `open` turns true, then answer.
        Gated,
    }

    struct FakeTransport {
        behaviour: HashMap<NodeId, Behaviour>,
        calls: Mutex<Vec<NodeId>>,
        called: Notify,
        panicked: AtomicBool,
        open: tokio::sync::watch::Receiver<bool>,
    }

    impl FakeTransport {
        fn new(
            behaviour: &[(NodeId, Behaviour)],
        ) -> (Arc<FakeTransport>, tokio::sync::watch::Sender<bool>) {
            let (open_sender, open) = tokio::sync::watch::channel(false);
            let transport = FakeTransport {
                behaviour: behaviour.iter().copied().collect(),
                calls: Mutex::new(Vec::new()),
                called: Notify::new(),
                panicked: AtomicBool::new(false),
                open,
            };
            (Arc::new(transport), open_sender)
        }

        fn calls_to(&self, destination: NodeId) -> usize {
            let calls = self.calls.lock().unwrap();
            calls.iter().filter(|&&node| node == destination).count()
        }
    }

    /// Every partition of `request` answered NONE.
    fn all_done(request: &WriteTxnMarkersRequest) -> WriteTxnMarkersResponse {
        answered(request, |_, _, _| 0)
    }

    impl MarkerTransport for FakeTransport {
        fn write_markers<'a>(
            &'a self,
            destination: NodeId,
            _address: &'a str,
            request: &'a WriteTxnMarkersRequest,
        ) -> Pin<Box<dyn Future<Output = Result<WriteTxnMarkersResponse, PeerError>> + Send + 'a>>
        {
            Box::pin(async move {
                self.calls.lock().unwrap().push(destination);
                self.called.notify_one();
                match self.behaviour[&destination] {
                    Behaviour::Answer => {}
                    Behaviour::Hang => std::future::pending::<()>().await,
                    Behaviour::PanicOnce => {
                        if !self.panicked.swap(true, Ordering::SeqCst) {
                            panic!("injected fault in the marker transport");
                        }
                    }
                    Behaviour::Gated => {
                        let mut open = self.open.clone();
                        let _ = open.wait_for(|open| *open).await;
                    }
                }
                Ok(all_done(request))
            })
        }
    }

    use crate::txn::marker_queue::tests::job as job_on;

    /// A sender over `transport` with topic "slow" led by node 1 and "fast" by node 2.
    fn fake_sender(transport: Arc<FakeTransport>) -> NetworkMarkerSender {
        let image = Arc::new(image_with(
            &[(1, 9001), (2, 9002)],
            &[("slow", 1, 2), ("fast", 2, 2)],
        ));
        NetworkMarkerSender::with_transport(Box::new(move || image.clone()), transport)
    }

    const PROMPT: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn one_unresponsive_destination_does_not_delay_the_others() {
        let (transport, _open) =
            FakeTransport::new(&[(1, Behaviour::Hang), (2, Behaviour::Answer)]);
        let sender = fake_sender(transport.clone());
        let wanted: StillWanted = Arc::new(|| true);
        let stuck = sender.send(job_on(1, &[("slow", 0)]), wanted.clone());
        let mixed = sender.send(job_on(2, &[("slow", 1), ("fast", 0)]), wanted.clone());
        let quick = sender.send(job_on(3, &[("fast", 1)]), wanted.clone());
        let started = tokio::time::Instant::now();
        let outcome = tokio::time::timeout(PROMPT, quick).await;
        assert_eq!(
            outcome.expect("delayed by the hung leader"),
            MarkerOutcome::Written
        );
        assert!(started.elapsed() < PROMPT);
        // The others stay pending, not failed; the hung leader got exactly one request
        // (one in flight per destination), holding both transactions' markers for it.
        let pending = tokio::time::timeout(Duration::from_millis(300), async {
            tokio::join!(stuck, mixed)
        });
        assert!(
            pending.await.is_err(),
            "markers for the hung leader cannot be written"
        );
        assert_eq!(transport.calls_to(1), 1);
        assert_eq!(state(&sender.channel).queue.len(), 2);
    }

    #[tokio::test]
    async fn a_worker_that_panics_is_restarted_and_its_job_completes() {
        let (transport, _open) = FakeTransport::new(&[(1, Behaviour::PanicOnce)]);
        let sender = fake_sender(transport.clone());
        let job = job_on(5, &[("slow", 0), ("slow", 1)]);
        let outcome = tokio::time::timeout(PROMPT, sender.send(job, Arc::new(|| true))).await;
        assert_eq!(
            outcome.expect("the job died with its worker"),
            MarkerOutcome::Written
        );
        assert!(transport.panicked.load(Ordering::SeqCst));
        assert_eq!(transport.calls_to(1), 2, "sent again after the panic");
    }

    #[tokio::test]
    async fn jobs_survive_the_death_of_every_sender_task() {
        let (transport, open) = FakeTransport::new(&[(1, Behaviour::Gated)]);
        let sender = fake_sender(transport.clone());
        let sent = sender.send(job_on(6, &[("slow", 0)]), Arc::new(|| true));
        tokio::pin!(sent);
        // Drive the send until its request is in flight.
        tokio::select! {
            _ = &mut sent => panic!("answered before the gate opened"),
            _ = transport.called.notified() => {}
        }
        // Every task of the sender dies mid-request (as if it panicked).
        {
            let dispatcher = sender.channel.dispatcher.lock().unwrap();
            dispatcher.as_ref().expect("started by send").abort();
        }
        for worker in state(&sender.channel).workers.values() {
            worker.task.abort();
        }
        open.send(true).unwrap();
        // The waiting send restarts the dispatcher, which restarts the worker, which sends
        // the marker again: the job completes.
        let outcome = tokio::time::timeout(SUPERVISE_INTERVAL * 5, &mut sent).await;
        assert_eq!(outcome.expect("the job was lost"), MarkerOutcome::Written);
        assert_eq!(transport.calls_to(1), 2);
    }

    #[tokio::test]
    async fn an_unwanted_job_is_abandoned_without_waiting_for_its_leader() {
        let (transport, _open) = FakeTransport::new(&[(1, Behaviour::Hang)]);
        let sender = fake_sender(transport);
        let wanted = Arc::new(AtomicBool::new(true));
        let check = wanted.clone();
        let still_wanted: StillWanted = Arc::new(move || check.load(Ordering::SeqCst));
        let sent = sender.send(job_on(7, &[("slow", 0)]), still_wanted);
        tokio::pin!(sent);
        assert!(
            tokio::time::timeout(Duration::from_millis(300), &mut sent)
                .await
                .is_err()
        );
        wanted.store(false, Ordering::SeqCst);
        let outcome = tokio::time::timeout(PROMPT, &mut sent).await;
        assert_eq!(outcome.expect("never abandoned"), MarkerOutcome::Abandoned);
        assert_eq!(state(&sender.channel).queue.len(), 0);
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
