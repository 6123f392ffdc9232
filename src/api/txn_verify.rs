//! KIP-890 at the API edge: Produce and TxnOffsetCommit verify a transactional write with
//! the transaction coordinator before it is appended (Kafka's
//! `ReplicaManager.maybeSendPartitionsToTransactionCoordinator`).
//!
//! For each partition the partition itself says whether the producer's transaction is
//! open there already (nothing to ask) or hands out the guard the append must present;
//! the partitions that need it go to the coordinator in one question, through
//! `txn::verification`. Transactions version 2 clients (Produce v12, TxnOffsetCommit v5)
//! have the coordinator add the partitions instead; a CONCURRENT_TRANSACTIONS answer
//! there (the previous transaction is still completing) is retried briefly here, as Kafka
//! does, rather than sent back to the client.

use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::error::ResponseError;

use super::errors::replica_error;
use crate::broker::Broker;
use crate::config::dynamic_broker;
use crate::replica::Partition;
use crate::topic_config::DynamicLayers;
use crate::txn::producer_state::Verification;
use crate::txn::verification::{TxnOperation, VerifyRequest};

/// Kafka's `add.partitions.to.txn.retry.backoff.ms` default.
const CONCURRENT_RETRY_BACKOFF: Duration = Duration::from_millis(20);
/// Kafka's `add.partitions.to.txn.retry.backoff.max.ms` default: how long an add answered
/// CONCURRENT_TRANSACTIONS is retried before the client gets the error.
const CONCURRENT_RETRY_MAX: Duration = Duration::from_millis(100);

/// One partition of a transactional write, by the producer and the batch's first sequence.
pub struct Candidate {
    pub topic: String,
    pub partition: i32,
    pub log: Arc<Partition>,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub sequence: i32,
}

/// Whether writes of `operation` are verified here: `transaction.partition.verification.
/// enable` (a dynamic broker config, read at each produce) decides for clients that only
/// verify; version 2 clients always have their partitions added, since they never add them
/// themselves and a partition the coordinator does not know would never see its marker.
pub fn applies(broker: &Broker, operation: TxnOperation) -> bool {
    if operation.adds() {
        return true;
    }
    let image = broker.image();
    let dynamic = DynamicLayers::of(&image.broker_configs, broker.config.node_id);
    dynamic_broker::partition_verification_enable(&broker.config, dynamic)
}

/// Verifies (or adds) every candidate (all of one producer); per candidate, in order, the
/// verification its append presents or why it must not happen. Errors are the
/// coordinator's as `txn::verification` maps them (or the partition's own); the caller
/// maps the retriable ones for its API.
pub async fn verify(
    broker: &Broker,
    transactional_id: &str,
    operation: TxnOperation,
    candidates: &[Candidate],
    now_ms: i64,
) -> Vec<Result<Verification, ResponseError>> {
    if !applies(broker, operation) {
        return vec![Ok(Verification::Off); candidates.len()];
    }
    let started = tokio::time::Instant::now();
    loop {
        let verdicts = verify_once(broker, transactional_id, operation, candidates, now_ms).await;
        let concurrent = verdicts.contains(&Err(ResponseError::ConcurrentTransactions));
        // Each round starts the verification again: the marker that ended the previous
        // transaction meanwhile dropped the guard the last round was given.
        if !operation.adds() || !concurrent || started.elapsed() >= CONCURRENT_RETRY_MAX {
            return verdicts;
        }
        tokio::time::sleep(CONCURRENT_RETRY_BACKOFF).await;
    }
}

/// One round: the guards from the partitions, then one question for those that need it.
async fn verify_once(
    broker: &Broker,
    transactional_id: &str,
    operation: TxnOperation,
    candidates: &[Candidate],
    now_ms: i64,
) -> Vec<Result<Verification, ResponseError>> {
    let mut verdicts = Vec::with_capacity(candidates.len());
    let mut asked = Vec::new();
    for candidate in candidates {
        let started = candidate.log.start_verification(
            candidate.producer_id,
            candidate.producer_epoch,
            candidate.sequence,
            now_ms,
        );
        verdicts.push(match started {
            Err(error) => Err(replica_error(&error)),
            // Open here already; a marker landing before the append fails it there.
            Ok(None) => Ok(Verification::Guard(None)),
            Ok(Some(guard)) => {
                asked.push((candidate.topic.clone(), candidate.partition));
                Ok(Verification::Guard(Some(guard)))
            }
        });
    }
    let Some(first) = candidates.first() else {
        return verdicts;
    };
    if asked.is_empty() {
        return verdicts;
    }
    let request = VerifyRequest {
        transactional_id: transactional_id.to_string(),
        producer_id: first.producer_id,
        producer_epoch: first.producer_epoch,
        partitions: asked,
        operation,
    };
    let unverified = broker.verifier.verify(request).await;
    for (candidate, verdict) in candidates.iter().zip(verdicts.iter_mut()) {
        let key = (candidate.topic.clone(), candidate.partition);
        if let (Ok(Verification::Guard(Some(_))), Some(error)) = (&verdict, unverified.get(&key)) {
            *verdict = Err(*error);
        }
    }
    verdicts
}
