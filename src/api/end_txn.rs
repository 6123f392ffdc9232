//! EndTxn v0-5: commit or abort. Answered once PrepareCommit or PrepareAbort is committed
//! to `__transaction_state`; the markers follow.
//!
//! v0-4 are transaction version 1: the transaction ends at the epoch it ran at and the
//! answer's producer id and epoch are -1. v5 is transaction version 2 (Kafka's
//! `transactionVersionForEndTxn`), whatever the cluster finalized: the epoch is bumped,
//! and the answer names the producer id and epoch the client goes on with (a new producer
//! id at epoch 0 when the old one's epochs ran out).

use kafka_protocol::messages::{EndTxnRequest, EndTxnResponse, ProducerId};

use super::RequestContext;
use super::errors::txn_error;
use crate::broker::Broker;
use crate::txn::TxnVersion;

/// The first EndTxn version that knows PRODUCER_FENCED (KIP-588).
const PRODUCER_FENCED_VERSION: i16 = 2;
/// Kafka's answer without a producer (every error, and transaction version 1).
const NO_PRODUCER: (i64, i16) = (-1, -1);

pub async fn handle(
    broker: &Broker,
    context: &RequestContext,
    request: EndTxnRequest,
) -> EndTxnResponse {
    let transactional_id = request.transactional_id.0.as_str();
    let (producer_id, epoch) = (request.producer_id.0, request.producer_epoch);
    let commit = request.committed;
    let ended = if TxnVersion::for_end_txn(context.version).bumps_epoch() {
        broker
            .transactions
            .end_txn_v2(
                transactional_id,
                producer_id,
                epoch,
                commit,
                &broker.producer_ids,
            )
            .await
    } else {
        broker
            .transactions
            .end_txn(transactional_id, producer_id, epoch, commit)
            .await
            .map(|()| NO_PRODUCER)
    };
    let fenced_as_old_epoch = context.version < PRODUCER_FENCED_VERSION;
    let (code, (next_id, next_epoch)) = match ended {
        Ok(next) => (0, next),
        Err(error) => (txn_error(&error, fenced_as_old_epoch).code(), NO_PRODUCER),
    };
    EndTxnResponse::default()
        .with_error_code(code)
        .with_producer_id(ProducerId(next_id))
        .with_producer_epoch(next_epoch)
}
