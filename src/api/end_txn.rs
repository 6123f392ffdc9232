//! EndTxn v0-5 (transaction version 1): commit or abort. Answered once PrepareCommit or
//! PrepareAbort is committed to `__transaction_state`; the markers follow. v5's producer
//! id and epoch fields are for transaction version 2 and answer -1.

use kafka_protocol::messages::{EndTxnRequest, EndTxnResponse, ProducerId};

use super::RequestContext;
use super::errors::txn_error;
use crate::broker::Broker;

/// The first EndTxn version that knows PRODUCER_FENCED (KIP-588).
const PRODUCER_FENCED_VERSION: i16 = 2;

pub async fn handle(
    broker: &Broker,
    context: &RequestContext,
    request: EndTxnRequest,
) -> EndTxnResponse {
    let ended = broker
        .transactions
        .end_txn(
            request.transactional_id.0.as_str(),
            request.producer_id.0,
            request.producer_epoch,
            request.committed,
        )
        .await;
    let fenced_as_old_epoch = context.version < PRODUCER_FENCED_VERSION;
    let code = ended
        .err()
        .map_or(0, |error| txn_error(&error, fenced_as_old_epoch).code());
    EndTxnResponse::default()
        .with_error_code(code)
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1)
}
