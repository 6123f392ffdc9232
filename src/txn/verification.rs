//! The partition leader's questions to transaction coordinators (Kafka's
//! `AddPartitionsToTxnManager`, KIP-890).
//!
//! Before a leader appends the first transactional batch of a producer's transaction, it
//! asks the coordinator of the request's transactional id whether the partition is in that
//! transaction (`verify_only`, part 1), or, for clients of transactions version 2 that no
//! longer send AddPartitionsToTxn themselves, adds it (part 2). The questions go as
//! AddPartitionsToTxn v5 in its batched (broker) form to the node that leads the id's
//! `__transaction_state` partition, over its inter-broker listener (this node's own too).
//!
//! Batching as Kafka does: one request in flight per coordinator node; what arrives
//! meanwhile is queued and sent together next, at most one entry per transactional id (a
//! newer entry displaces an older one of the same epoch with a retriable error, one of a
//! higher epoch fences it). [`Batches`] is that bookkeeping, pure; [`TxnVerifier`] the
//! shell that sends. The guard that makes a verification hold until the append is the
//! partition's (`producer_state`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::add_partitions_to_txn_request::{
    AddPartitionsToTxnTopic, AddPartitionsToTxnTransaction,
};
use kafka_protocol::messages::{
    AddPartitionsToTxnRequest, AddPartitionsToTxnResponse, ApiKey, ProducerId, TopicName,
    TransactionalId,
};
use kafka_protocol::protocol::StrBytes;
use tokio::sync::oneshot;

use super::TRANSACTION_STATE_TOPIC;
use super::markers::ImageSource;
use crate::controller::MetadataImage;
use crate::group::offsets::partition_for;
use crate::replica::peer_connection::PeerConnection;
use crate::types::NodeId;

/// The AddPartitionsToTxn version sent: the batched form with TRANSACTION_ABORTABLE.
pub const REQUEST_VERSION: i16 = 5;
/// Transactions queued for one coordinator node while a request is in flight. Kafka has no
/// bound; past this one a produce is answered with a retriable error instead of waiting.
pub const QUEUED_PER_NODE_MAX: usize = 1_000;
/// Kafka's `request.timeout.ms` default, for one AddPartitionsToTxn round trip.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const RESPONSE_FRAME_BYTES_MAX: usize = 16 << 20;

/// What the client's request version lets the leader do and answer (Kafka's
/// `TransactionSupportedOperation`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxnOperation {
    /// Verify only; the client predates TRANSACTION_ABORTABLE (INVALID_TXN_STATE instead).
    DefaultError,
    /// Verify only; the client knows TRANSACTION_ABORTABLE.
    GenericError,
    /// Add the partition to the transaction (transactions version 2 clients).
    AddPartition,
}

impl TxnOperation {
    /// Kafka's `produceRequestVersionToTransactionSupportedOperation`.
    pub fn for_produce(version: i16) -> TxnOperation {
        match version {
            12.. => TxnOperation::AddPartition,
            11 => TxnOperation::GenericError,
            _ => TxnOperation::DefaultError,
        }
    }

    /// Kafka's `txnOffsetCommitRequestVersionToTransactionSupportedOperation`.
    pub fn for_txn_offset_commit(version: i16) -> TxnOperation {
        match version {
            5.. => TxnOperation::AddPartition,
            4 => TxnOperation::GenericError,
            _ => TxnOperation::DefaultError,
        }
    }

    pub fn adds(self) -> bool {
        self == TxnOperation::AddPartition
    }
}

/// One question for a transaction coordinator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyRequest {
    pub transactional_id: String,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub partitions: Vec<(String, i32)>,
    pub operation: TxnOperation,
}

/// The partitions that failed, with the error the coordinator's answer means for the
/// append (absent: verified or added).
pub type Unverified = BTreeMap<(String, i32), ResponseError>;

/// Every partition of `request` failed with `error`.
pub fn all_failed(request: &VerifyRequest, error: ResponseError) -> Unverified {
    request
        .partitions
        .iter()
        .map(|partition| (partition.clone(), error))
        .collect()
}

/// A request waiting for its node's turn, with whatever answers it (`R`).
pub struct Queued<R> {
    pub request: VerifyRequest,
    pub reply: R,
}

/// A queued request answered at once, without asking the coordinator.
pub struct Refused<R> {
    pub queued: Queued<R>,
    pub error: ResponseError,
}

/// The requests waiting per coordinator node, and which nodes have one in flight.
pub struct Batches<R> {
    queued: HashMap<NodeId, Vec<Queued<R>>>,
    in_flight: HashSet<NodeId>,
}

impl<R> Default for Batches<R> {
    fn default() -> Self {
        Batches {
            queued: HashMap::new(),
            in_flight: HashSet::new(),
        }
    }
}

/// What [`Batches::enqueue`] decided.
pub struct Enqueued<R> {
    /// Requests to answer now with their error (displaced, fenced or over the bound).
    pub refused: Vec<Refused<R>>,
    /// No request is in flight for the node: the caller starts its sender.
    pub start_sender: bool,
}

impl<R> Batches<R> {
    /// Queues `entry` for `node`, applying Kafka's rule of one entry per transactional id:
    /// a queued entry of an older epoch is fenced (INVALID_PRODUCER_EPOCH), one of the same
    /// epoch is displaced (NETWORK_EXCEPTION, so the client retries), and a new entry of
    /// an older epoch than the queued one is itself fenced.
    pub fn enqueue(&mut self, node: NodeId, entry: Queued<R>) -> Enqueued<R> {
        let mut refused = Vec::new();
        let queue = self.queued.entry(node).or_default();
        let id = &entry.request.transactional_id;
        if let Some(at) = queue.iter().position(|q| q.request.transactional_id == *id) {
            let queued_epoch = queue[at].request.producer_epoch;
            if entry.request.producer_epoch < queued_epoch {
                refused.push(Refused {
                    queued: entry,
                    error: ResponseError::InvalidProducerEpoch,
                });
                return Enqueued {
                    refused,
                    start_sender: false,
                };
            }
            let error = if queued_epoch < entry.request.producer_epoch {
                ResponseError::InvalidProducerEpoch
            } else {
                ResponseError::NetworkException
            };
            refused.push(Refused {
                queued: queue.remove(at),
                error,
            });
        }
        if queue.len() >= QUEUED_PER_NODE_MAX {
            refused.push(Refused {
                queued: entry,
                error: ResponseError::CoordinatorNotAvailable,
            });
        } else {
            queue.push(entry);
        }
        let start_sender = !queue.is_empty() && self.in_flight.insert(node);
        Enqueued {
            refused,
            start_sender,
        }
    }

    /// The next batch for `node`'s sender, which is in flight until it takes an empty one
    /// (then its sender stops; the next enqueue starts another).
    pub fn take(&mut self, node: NodeId) -> Vec<Queued<R>> {
        let batch = self.queued.remove(&node).unwrap_or_default();
        if batch.is_empty() {
            self.in_flight.remove(&node);
        }
        batch
    }

    /// `node`'s sender died (a panic): nothing is in flight any more, and what was queued
    /// is handed back to be answered, so the next enqueue starts a new sender.
    pub fn sender_died(&mut self, node: NodeId) -> Vec<Queued<R>> {
        self.in_flight.remove(&node);
        self.queued.remove(&node).unwrap_or_default()
    }

    pub fn queued_count(&self, node: NodeId) -> usize {
        self.queued.get(&node).map_or(0, Vec::len)
    }
}

/// One AddPartitionsToTxn (batched form) carrying every queued transaction.
pub fn build_request<R>(batch: &[Queued<R>]) -> AddPartitionsToTxnRequest {
    let transactions = batch
        .iter()
        .map(|queued| {
            let request = &queued.request;
            let mut topics: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
            for (topic, partition) in &request.partitions {
                topics.entry(topic).or_default().push(*partition);
            }
            let topics = topics
                .into_iter()
                .map(|(name, partitions)| {
                    AddPartitionsToTxnTopic::default()
                        .with_name(TopicName(StrBytes::from_string(name.to_string())))
                        .with_partitions(partitions)
                })
                .collect();
            AddPartitionsToTxnTransaction::default()
                .with_transactional_id(TransactionalId(StrBytes::from_string(
                    request.transactional_id.clone(),
                )))
                .with_producer_id(ProducerId(request.producer_id))
                .with_producer_epoch(request.producer_epoch)
                .with_verify_only(!request.operation.adds())
                .with_topics(topics)
        })
        .collect();
    AddPartitionsToTxnRequest::default().with_transactions(transactions)
}

/// What the coordinator's answer means for `request`'s partitions (Kafka's
/// `AddPartitionsToTxnHandler.onComplete`): PRODUCER_FENCED becomes INVALID_PRODUCER_EPOCH
/// (what producers expect on a produce), TRANSACTION_ABORTABLE becomes INVALID_TXN_STATE
/// for clients that predate it, a top-level CLUSTER_AUTHORIZATION_FAILED becomes
/// INVALID_TXN_STATE; a partition the answer leaves out failed with NETWORK_EXCEPTION.
pub fn interpret(request: &VerifyRequest, response: &AddPartitionsToTxnResponse) -> Unverified {
    if let Some(error) = ResponseError::try_from_code(response.error_code) {
        let error = match error {
            ResponseError::ClusterAuthorizationFailed => ResponseError::InvalidTxnState,
            other => other,
        };
        return all_failed(request, error);
    }
    let Some(result) = response
        .results_by_transaction
        .iter()
        .find(|result| result.transactional_id.0.as_str() == request.transactional_id)
    else {
        return all_failed(request, ResponseError::NetworkException);
    };
    let mut answered: HashMap<(&str, i32), i16> = HashMap::new();
    for topic in &result.topic_results {
        for partition in &topic.results_by_partition {
            let key = (topic.name.0.as_str(), partition.partition_index);
            answered.insert(key, partition.partition_error_code);
        }
    }
    let mut unverified = Unverified::new();
    for (topic, partition) in &request.partitions {
        let error = match answered.get(&(topic.as_str(), *partition)) {
            None => Some(ResponseError::NetworkException),
            Some(code) => ResponseError::try_from_code(*code)
                .map(|error| client_facing(error, request.operation)),
        };
        if let Some(error) = error {
            unverified.insert((topic.clone(), *partition), error);
        }
    }
    unverified
}

fn client_facing(error: ResponseError, operation: TxnOperation) -> ResponseError {
    match error {
        ResponseError::ProducerFenced => ResponseError::InvalidProducerEpoch,
        ResponseError::TransactionAbortable if operation == TxnOperation::DefaultError => {
            ResponseError::InvalidTxnState
        }
        other => other,
    }
}

/// The error a produce gets for a failed verification (Kafka 4.0's ReplicaManager
/// `postVerificationCallback`): the coordinator's retriable errors become
/// NOT_ENOUGH_REPLICAS, which every client retries without refreshing metadata; the rest
/// (INVALID_TXN_STATE for a partition not in the transaction, INVALID_PRODUCER_EPOCH,
/// TRANSACTION_ABORTABLE, ...) go to the client as they are. CONCURRENT_TRANSACTIONS is
/// the exception for transactions version 2 (Produce v12+, KAFKA-18662): the add was
/// already retried here, and those clients retry it themselves as what it is.
pub fn produce_error(error: ResponseError, operation: TxnOperation) -> ResponseError {
    match error {
        ResponseError::ConcurrentTransactions if operation.adds() => error,
        ResponseError::ConcurrentTransactions
        | ResponseError::NetworkException
        | ResponseError::CoordinatorLoadInProgress
        | ResponseError::CoordinatorNotAvailable
        | ResponseError::NotCoordinator => ResponseError::NotEnoughReplicas,
        other => other,
    }
}

/// The node leading `transactional_id`'s `__transaction_state` partition, if it has one.
pub fn coordinator_node(
    image: &MetadataImage,
    transactional_id: &str,
    state_partitions: i32,
) -> Option<NodeId> {
    let partition = partition_for(transactional_id, state_partitions);
    let leader = image.partition(TRANSACTION_STATE_TOPIC, partition)?.leader;
    (leader >= 0 && image.brokers.contains_key(&leader)).then_some(leader)
}

type Reply = oneshot::Sender<Unverified>;

/// The shell: queues questions per coordinator node and runs one sender per node while it
/// has any.
pub struct TxnVerifier {
    shared: Arc<Shared>,
}

struct Shared {
    images: ImageSource,
    node_id: NodeId,
    state_partitions: i32,
    batches: Mutex<Batches<Reply>>,
    /// Idle connections by node; a sender takes its node's out while it uses it.
    connections: Mutex<HashMap<NodeId, PeerConnection>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl TxnVerifier {
    pub fn new(images: ImageSource, node_id: NodeId, state_partitions: i32) -> TxnVerifier {
        assert!(state_partitions > 0);
        TxnVerifier {
            shared: Arc::new(Shared {
                images,
                node_id,
                state_partitions,
                batches: Mutex::new(Batches::default()),
                connections: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Asks the coordinator of `request.transactional_id` about its partitions; answers
    /// with those that failed (COORDINATOR_NOT_AVAILABLE for all when it has no leader).
    pub async fn verify(&self, request: VerifyRequest) -> Unverified {
        let image = (self.shared.images)();
        let coordinator = coordinator_node(
            &image,
            &request.transactional_id,
            self.shared.state_partitions,
        );
        let Some(node) = coordinator else {
            return all_failed(&request, ResponseError::CoordinatorNotAvailable);
        };
        let fallback = all_failed(&request, ResponseError::NetworkException);
        let (reply, answer) = oneshot::channel();
        let enqueued = lock(&self.shared.batches).enqueue(node, Queued { request, reply });
        for refused in enqueued.refused {
            let errors = all_failed(&refused.queued.request, refused.error);
            let _ = refused.queued.reply.send(errors);
        }
        if enqueued.start_sender {
            tokio::spawn(run_sender(self.shared.clone(), node));
        }
        // A dropped reply (the sender task died) is a network failure: the client retries.
        answer.await.unwrap_or(fallback)
    }
}

/// Clears a panicked sender's in-flight mark and answers what it left queued: without it
/// the mark would stay set, no sender would ever start for `node` again, and every later
/// verification there would wait forever. (The batch it was sending is answered by its
/// dropped reply channels: `verify` takes that as a network failure.)
struct SenderGuard {
    shared: Arc<Shared>,
    node: NodeId,
}

impl Drop for SenderGuard {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let orphans = lock(&self.shared.batches).sender_died(self.node);
        for queued in orphans {
            let errors = all_failed(&queued.request, ResponseError::NetworkException);
            let _ = queued.reply.send(errors);
        }
    }
}

/// Sends `node`'s batches one at a time until none is queued.
async fn run_sender(shared: Arc<Shared>, node: NodeId) {
    let _guard = SenderGuard {
        shared: shared.clone(),
        node,
    };
    loop {
        let batch = lock(&shared.batches).take(node);
        if batch.is_empty() {
            return;
        }
        let request = build_request(&batch);
        let response = send(&shared, node, &request).await;
        for queued in batch {
            let errors = match &response {
                Some(response) => interpret(&queued.request, response),
                None => all_failed(&queued.request, ResponseError::NetworkException),
            };
            let _ = queued.reply.send(errors);
        }
    }
}

/// One round trip to `node`; `None` when it cannot be reached or does not answer (the
/// connection is dropped then, and made again next time).
async fn send(
    shared: &Shared,
    node: NodeId,
    request: &AddPartitionsToTxnRequest,
) -> Option<AddPartitionsToTxnResponse> {
    let idle = lock(&shared.connections).remove(&node);
    let mut connection = match idle {
        Some(connection) => connection,
        None => {
            let address = (shared.images)().inter_broker_address(node)?;
            let client_id = format!("broker-{}-txn-verification", shared.node_id);
            let connecting = PeerConnection::connect(
                &address,
                client_id,
                RESPONSE_FRAME_BYTES_MAX,
                None, // the kernel's buffer sizes: small requests and answers
                CONNECT_TIMEOUT,
            );
            match connecting.await {
                Ok(connection) => connection,
                Err(error) => {
                    tracing::debug!(node, %error, "cannot reach a transaction coordinator");
                    return None;
                }
            }
        }
    };
    let answer = connection
        .call::<_, AddPartitionsToTxnResponse>(
            ApiKey::AddPartitionsToTxn,
            REQUEST_VERSION,
            request,
            REQUEST_TIMEOUT,
        )
        .await;
    match answer {
        Ok(response) => {
            lock(&shared.connections).insert(node, connection);
            Some(response)
        }
        Err(error) => {
            tracing::debug!(node, %error, "AddPartitionsToTxn to a coordinator failed");
            None
        }
    }
}

#[cfg(test)]
#[path = "verification_tests.rs"]
mod tests;
