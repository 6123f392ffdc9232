//! AddPartitionsToTxn v0-5 and AddOffsetsToTxn v0-4: a transactional producer names the
//! partitions (or the group whose offsets) its transaction writes to.
//!
//! v0-3 carry one transaction from a client. v4+ carry a batch from a broker; an entry
//! with `verify_only` asks whether its partitions are already in the ongoing transaction
//! (nothing is added), the others are added for a transaction version 2 producer (Kafka's
//! `transactionVersionForAddPartitionsToTxn`: the partition leader's implicit add, which
//! also starts the transaction when it is Empty or complete).
//!
//! The transactions of one batch are independent: they run at once (up to
//! [`BATCH_TRANSACTIONS_CONCURRENT_MAX`]), so a few slow state writes do not add up to a
//! timeout for the whole batch, which every produce waiting on it would see. Entries
//! naming the same transactional id run one after another, in request order.

use std::collections::HashMap;
use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::add_partitions_to_txn_request::{
    AddPartitionsToTxnTopic, AddPartitionsToTxnTransaction,
};
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::{
    AddOffsetsToTxnRequest, AddOffsetsToTxnResponse, AddPartitionsToTxnRequest,
    AddPartitionsToTxnResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::RequestContext;
use super::errors::txn_error;
use crate::broker::Broker;
use crate::controller::MetadataImage;
use crate::group::OFFSETS_TOPIC;
use crate::txn::records::TxnPartitions;
use crate::txn::{TransactionCoordinator, TxnVersion};

/// The first AddPartitionsToTxn version that knows PRODUCER_FENCED (KIP-588).
const PRODUCER_FENCED_VERSION: i16 = 2;
/// The first version with the batched (broker) form.
const BATCHED_VERSION: i16 = 4;
/// Transactional ids of one batched request handled at once. Kafka handles them all at
/// once; a bound keeps one request from flooding the coordinator's state-log writes. A
/// broker's batch holds the transactions waiting on one coordinator node.
pub const BATCH_TRANSACTIONS_CONCURRENT_MAX: usize = 64;

/// Per-partition answers, by topic, in request order.
type PartitionErrors = Vec<(String, Vec<(i32, i16)>)>;

pub async fn add_partitions(
    broker: &Broker,
    context: &RequestContext,
    request: AddPartitionsToTxnRequest,
) -> AddPartitionsToTxnResponse {
    if context.version < BATCHED_VERSION {
        let transaction = AddPartitionsToTxnTransaction::default()
            .with_transactional_id(request.v3_and_below_transactional_id)
            .with_producer_id(request.v3_and_below_producer_id)
            .with_producer_epoch(request.v3_and_below_producer_epoch)
            .with_topics(request.v3_and_below_topics);
        let fenced_as_old_epoch = context.version < PRODUCER_FENCED_VERSION;
        let image = broker.image();
        let coordinator = &broker.transactions;
        let errors = one_transaction(
            (coordinator, &image),
            &transaction,
            context.version,
            fenced_as_old_epoch,
        )
        .await;
        return AddPartitionsToTxnResponse::default()
            .with_results_by_topic_v3_and_below(topic_results(errors));
    }
    let transactions = request.transactions;
    let state = (&broker.transactions, broker.image());
    let answered = batch_concurrently(state, &transactions, context.version).await;
    let results = transactions
        .iter()
        .zip(answered)
        .map(|(transaction, errors)| {
            AddPartitionsToTxnResult::default()
                .with_transactional_id(transaction.transactional_id.clone())
                .with_topic_results(topic_results(errors))
        })
        .collect();
    AddPartitionsToTxnResponse::default().with_results_by_transaction(results)
}

/// Each transaction's answer, in request order: the entries of one transactional id in
/// order in one task, the ids in up to [`BATCH_TRANSACTIONS_CONCURRENT_MAX`] tasks at once.
async fn batch_concurrently(
    (coordinator, image): (&TransactionCoordinator, Arc<MetadataImage>),
    transactions: &[AddPartitionsToTxnTransaction],
    request_version: i16,
) -> Vec<PartitionErrors> {
    let mut answers: Vec<Option<PartitionErrors>> = vec![None; transactions.len()];
    let mut tasks = tokio::task::JoinSet::new();
    for entries in by_transactional_id(transactions) {
        if tasks.len() >= BATCH_TRANSACTIONS_CONCURRENT_MAX {
            collect_one(&mut tasks, &mut answers).await;
        }
        let coordinator = coordinator.clone();
        let image = Arc::clone(&image);
        let entries: Vec<(usize, AddPartitionsToTxnTransaction)> = entries
            .into_iter()
            .map(|index| (index, transactions[index].clone()))
            .collect();
        tasks.spawn(async move {
            let mut answered = Vec::with_capacity(entries.len());
            for (index, transaction) in entries {
                let state = (&coordinator, &*image);
                let errors = one_transaction(state, &transaction, request_version, false).await;
                answered.push((index, errors));
            }
            answered
        });
    }
    while !tasks.is_empty() {
        collect_one(&mut tasks, &mut answers).await;
    }
    // A task that panicked answered nothing: its transactions were not handled.
    let failed = ResponseError::UnknownServerError.code();
    (answers.into_iter().zip(transactions))
        .map(|(answer, transaction)| {
            answer.unwrap_or_else(|| same_error(&transaction.topics, failed))
        })
        .collect()
}

/// Indexes into `transactions` grouped by transactional id, each group in request order,
/// the groups in the order their ids first appear.
fn by_transactional_id(transactions: &[AddPartitionsToTxnTransaction]) -> Vec<Vec<usize>> {
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut group_of: HashMap<&str, usize> = HashMap::new();
    for (index, transaction) in transactions.iter().enumerate() {
        let id = transaction.transactional_id.0.as_str();
        match group_of.get(id) {
            Some(group) => groups[*group].push(index),
            None => {
                group_of.insert(id, groups.len());
                groups.push(vec![index]);
            }
        }
    }
    groups
}

type TaskAnswers = Vec<(usize, PartitionErrors)>;

/// Waits for one task of `tasks` and files its answers.
async fn collect_one(
    tasks: &mut tokio::task::JoinSet<TaskAnswers>,
    answers: &mut [Option<PartitionErrors>],
) {
    match tasks.join_next().await {
        Some(Ok(answered)) => {
            for (index, errors) in answered {
                answers[index] = Some(errors);
            }
        }
        Some(Err(error)) => tracing::error!(%error, "an AddPartitionsToTxn task failed"),
        None => {}
    }
}

async fn one_transaction(
    (coordinator, image): (&TransactionCoordinator, &MetadataImage),
    transaction: &AddPartitionsToTxnTransaction,
    request_version: i16,
    fenced_as_old_epoch: bool,
) -> PartitionErrors {
    let id = transaction.transactional_id.0.as_str();
    let (producer_id, epoch) = (transaction.producer_id.0, transaction.producer_epoch);
    let partitions = requested(&transaction.topics);
    // Kafka checks the partitions exist first: the unknown ones answer
    // UNKNOWN_TOPIC_OR_PARTITION and the rest OPERATION_NOT_ATTEMPTED.
    if let Some(errors) = unknown_partitions(image, &transaction.topics) {
        return errors;
    }
    let code = |error: &crate::txn::TxnError| txn_error(error, fenced_as_old_epoch).code();
    if transaction.verify_only {
        return match coordinator.verify_partitions(id, producer_id, epoch, &partitions) {
            Ok(verdicts) => group_by_topic(
                verdicts
                    .iter()
                    .map(|(t, p, v)| (t.clone(), *p, v.as_ref().err().map_or(0, code))),
            ),
            Err(error) => same_error(&transaction.topics, code(&error)),
        };
    }
    let version = TxnVersion::for_add_partitions(request_version);
    let added = coordinator
        .add_partitions_as(id, producer_id, epoch, &partitions, version)
        .await;
    same_error(&transaction.topics, added.err().as_ref().map_or(0, code))
}

fn requested(topics: &[AddPartitionsToTxnTopic]) -> TxnPartitions {
    let mut partitions = TxnPartitions::new();
    for topic in topics {
        partitions
            .entry(topic.name.0.to_string())
            .or_default()
            .extend(&topic.partitions);
    }
    partitions
}

fn unknown_partitions(
    image: &MetadataImage,
    topics: &[AddPartitionsToTxnTopic],
) -> Option<PartitionErrors> {
    let known = |topic: &str, partition: i32| image.partition(topic, partition).is_some();
    let any_unknown = topics
        .iter()
        .any(|t| t.partitions.iter().any(|p| !known(t.name.0.as_str(), *p)));
    if !any_unknown {
        return None;
    }
    let unknown = ResponseError::UnknownTopicOrPartition.code();
    let not_attempted = ResponseError::OperationNotAttempted.code();
    Some(group_by_topic(topics.iter().flat_map(|topic| {
        let name = topic.name.0.to_string();
        topic.partitions.iter().map(move |p| {
            let error = if known(&name, *p) {
                not_attempted
            } else {
                unknown
            };
            (name.clone(), *p, error)
        })
    })))
}

fn same_error(topics: &[AddPartitionsToTxnTopic], code: i16) -> PartitionErrors {
    group_by_topic(topics.iter().flat_map(|topic| {
        let name = topic.name.0.to_string();
        topic
            .partitions
            .iter()
            .map(move |p| (name.clone(), *p, code))
    }))
}

fn group_by_topic(entries: impl Iterator<Item = (String, i32, i16)>) -> PartitionErrors {
    let mut grouped: PartitionErrors = Vec::new();
    for (topic, partition, code) in entries {
        match grouped.iter_mut().find(|(name, _)| *name == topic) {
            Some((_, list)) => list.push((partition, code)),
            None => grouped.push((topic, vec![(partition, code)])),
        }
    }
    grouped
}

fn topic_results(errors: PartitionErrors) -> Vec<AddPartitionsToTxnTopicResult> {
    errors
        .into_iter()
        .map(|(topic, partitions)| {
            AddPartitionsToTxnTopicResult::default()
                .with_name(TopicName(StrBytes::from_string(topic)))
                .with_results_by_partition(
                    partitions
                        .into_iter()
                        .map(|(index, code)| {
                            AddPartitionsToTxnPartitionResult::default()
                                .with_partition_index(index)
                                .with_partition_error_code(code)
                        })
                        .collect(),
                )
        })
        .collect()
}

/// AddOffsetsToTxn: adds the group's `__consumer_offsets` partition to the transaction,
/// so TxnOffsetCommit may write there and the markers reach it.
pub async fn add_offsets(
    broker: &Broker,
    context: &RequestContext,
    request: AddOffsetsToTxnRequest,
) -> AddOffsetsToTxnResponse {
    let group = request.group_id.0.as_str();
    if group.is_empty() {
        return AddOffsetsToTxnResponse::default()
            .with_error_code(ResponseError::InvalidGroupId.code());
    }
    let mut partitions = TxnPartitions::new();
    partitions
        .entry(OFFSETS_TOPIC.to_string())
        .or_default()
        .insert(broker.groups.partition_for(group));
    let added = broker
        .transactions
        .add_partitions(
            request.transactional_id.0.as_str(),
            request.producer_id.0,
            request.producer_epoch,
            &partitions,
        )
        .await;
    let fenced_as_old_epoch = context.version < PRODUCER_FENCED_VERSION;
    let code = added
        .err()
        .map_or(0, |error| txn_error(&error, fenced_as_old_epoch).code());
    AddOffsetsToTxnResponse::default().with_error_code(code)
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::path::Path;
    use std::pin::Pin;
    use std::sync::atomic::{AtomicI64, Ordering};
    use std::time::Duration;

    use super::*;
    use crate::group::LedPartition;
    use crate::log::{LastShutdown, LogConfig};
    use crate::replica::{Leadership, Partition, Publish};
    use crate::txn::markers::{MarkerJob, MarkerOutcome, MarkerSender, StillWanted};
    use crate::txn::{ProducerIdSource, TRANSACTION_STATE_TOPIC, TxnCoordinatorConfig, TxnError};
    use crate::types::TopicPartition;
    use kafka_protocol::messages::{ProducerId, TransactionalId};

    fn entry(id: &str) -> AddPartitionsToTxnTransaction {
        AddPartitionsToTxnTransaction::default()
            .with_transactional_id(TransactionalId(StrBytes::from_string(id.to_string())))
    }

    #[test]
    fn entries_of_one_transactional_id_stay_together_in_request_order() {
        let batch: Vec<_> = ["a", "b", "a", "c", "b", "a"].map(entry).into();
        assert_eq!(
            by_transactional_id(&batch),
            vec![vec![0, 2, 5], vec![1, 4], vec![3]]
        );
        assert!(by_transactional_id(&[]).is_empty());
    }

    struct Counter(AtomicI64);

    impl ProducerIdSource for Counter {
        fn next_id(&self) -> Pin<Box<dyn Future<Output = Result<i64, TxnError>> + Send + '_>> {
            Box::pin(async move { Ok(self.0.fetch_add(1, Ordering::SeqCst)) })
        }
    }

    struct NoMarkers;

    impl MarkerSender for NoMarkers {
        fn send(
            &self,
            _job: MarkerJob,
            _still_wanted: StillWanted,
        ) -> Pin<Box<dyn Future<Output = MarkerOutcome> + Send + '_>> {
            Box::pin(async { MarkerOutcome::Written })
        }
    }

    /// An image with topic `t` (one partition), so the adds pass the existence check.
    fn image_with_topic() -> Arc<MetadataImage> {
        use crate::controller::{PartitionImage, TopicImage};
        let mut image = MetadataImage::default();
        let partition = PartitionImage {
            replicas: vec![0],
            isr: vec![0],
            leader: 0,
            leader_epoch: 0,
            partition_epoch: 0,
            adding_replicas: Vec::new(),
            removing_replicas: Vec::new(),
        };
        let topic = TopicImage {
            name: "t".into(),
            id: uuid::Uuid::from_u128(3),
            partitions: vec![partition],
            configs: Default::default(),
        };
        image.topics.insert("t".into(), topic);
        Arc::new(image)
    }

    /// A coordinator over a loaded `__transaction_state-0` that this broker leads.
    async fn coordinator(
        dir: &Path,
        write_timeout: Duration,
    ) -> (TransactionCoordinator, Arc<Partition>) {
        let tp = TopicPartition::new(TRANSACTION_STATE_TOPIC, 0);
        let path = dir.join("__transaction_state-0");
        let log = Partition::open(
            tp,
            uuid::Uuid::from_u128(9),
            path,
            LogConfig::default(),
            0,
            0,
            LastShutdown::Clean,
        );
        let log = Arc::new(log.unwrap());
        log.become_leader(0).unwrap();
        let config = TxnCoordinatorConfig {
            partitions: 1,
            max_timeout_ms: 900_000,
            id_expiration_ms: 86_400_000,
            write_timeout,
        };
        let coordinator = TransactionCoordinator::new(config, Arc::new(NoMarkers));
        let led = LedPartition {
            log: log.clone(),
            leader_epoch: 0,
        };
        coordinator.follow_leadership(&HashMap::from([(0, led)]));
        while !coordinator.is_loaded(0) {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        (coordinator, log)
    }

    #[tokio::test]
    async fn slow_state_writes_of_a_batch_overlap_instead_of_adding_up() {
        const TRANSACTIONS: usize = 6;
        let write_timeout = Duration::from_millis(400);
        let dir = tempfile::tempdir().unwrap();
        let (coordinator, log) = coordinator(dir.path(), write_timeout).await;
        let ids = Counter(AtomicI64::new(1000));
        let mut batch = Vec::new();
        for index in 0..TRANSACTIONS {
            let id = format!("txn-{index}");
            let (producer_id, epoch) = (coordinator.init_producer_id(&id, 60_000, None, &ids))
                .await
                .unwrap();
            let topic = AddPartitionsToTxnTopic::default()
                .with_name(TopicName(StrBytes::from_static_str("t")))
                .with_partitions(vec![0]);
            batch.push(
                entry(&id)
                    .with_producer_id(ProducerId(producer_id))
                    .with_producer_epoch(epoch)
                    .with_topics(vec![topic]),
            );
        }
        // A follower joins the state log's ISR and never fetches: every state write now
        // waits its whole timeout for the high watermark.
        let lagging = Leadership {
            leader: 0,
            leader_epoch: 0,
            partition_epoch: 1,
            replicas: vec![0, 1],
            isr: vec![0, 1],
        };
        log.apply_leadership(0, &lagging, 0, Publish::Background)
            .unwrap();
        let started = tokio::time::Instant::now();
        let answers = batch_concurrently((&coordinator, image_with_topic()), &batch, 5).await;
        let elapsed = started.elapsed();
        assert_eq!(answers.len(), TRANSACTIONS);
        for answer in &answers {
            let codes: Vec<i16> = answer
                .iter()
                .flat_map(|(_, p)| p.iter().map(|(_, c)| *c))
                .collect();
            assert_eq!(codes.len(), 1);
            assert_ne!(codes[0], 0, "no write could commit: {answer:?}");
        }
        // One after another they would take TRANSACTIONS write timeouts.
        assert!(elapsed < write_timeout * 3, "took {elapsed:?}");
        assert!(elapsed >= write_timeout, "took {elapsed:?}");
    }
}
