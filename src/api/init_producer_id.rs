//! InitProducerId v0-5.
//!
//! Without a transactional id: an idempotent producer gets a fresh producer id at epoch 0
//! (a KIP-360 re-initialisation gets a new id too: it cannot collide with the old one's
//! sequences). With one: the transaction coordinator of the id answers (new id, epoch
//! bump, fencing), creating `__transaction_state` on first use.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use super::RequestContext;
use super::errors::{controller_error, internal_topic_error, txn_error};
use crate::broker::Broker;
use crate::controller::ControllerError;
use crate::txn::TRANSACTION_STATE_TOPIC;

/// The first InitProducerId version that knows PRODUCER_FENCED (KIP-588).
const PRODUCER_FENCED_VERSION: i16 = 4;

pub async fn handle(
    broker: &Broker,
    context: &RequestContext,
    request: InitProducerIdRequest,
) -> InitProducerIdResponse {
    let failed = |code: i16| {
        InitProducerIdResponse::default()
            .with_error_code(code)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1)
    };
    if let Some(transactional_id) = &request.transactional_id {
        let (producer_id, epoch) = (request.producer_id.0, request.producer_epoch);
        // Kafka: both or neither of the producer id and epoch.
        let expected = match (producer_id, epoch) {
            (-1, -1) => None,
            (-1, _) | (_, -1) => return failed(ResponseError::InvalidRequest.code()),
            (id, epoch) => Some((id, epoch)),
        };
        if let Err(error) = broker
            .ensure_transaction_topic(crate::broker::auto_create_deadline())
            .await
        {
            return failed(internal_topic_error(TRANSACTION_STATE_TOPIC, &error).code());
        }
        let initialised = broker
            .transactions
            .init_producer_id(
                transactional_id.0.as_str(),
                request.transaction_timeout_ms,
                expected,
                &broker.producer_ids,
            )
            .await;
        return match initialised {
            Ok((id, epoch)) => InitProducerIdResponse::default()
                .with_producer_id(ProducerId(id))
                .with_producer_epoch(epoch),
            Err(error) => {
                let fenced_as_old_epoch = context.version < PRODUCER_FENCED_VERSION;
                failed(txn_error(&error, fenced_as_old_epoch).code())
            }
        };
    }
    if request.producer_id.0 >= 0 {
        tracing::debug!(
            producer_id = request.producer_id.0,
            "re-initialising idempotent producer"
        );
    }
    match broker.producer_ids.next_id().await {
        Ok(id) => InitProducerIdResponse::default()
            .with_producer_id(ProducerId(id))
            .with_producer_epoch(0),
        // No block from the controller in time: Kafka's broker answers
        // COORDINATOR_LOAD_IN_PROGRESS, which every client retries (older Java producers
        // treat REQUEST_TIMED_OUT here as fatal, KAFKA-14417).
        Err(ControllerError::Unavailable(reason)) => {
            tracing::debug!(%reason, "no producer id yet");
            failed(ResponseError::CoordinatorLoadInProgress.code())
        }
        Err(error) => failed(controller_error(&error).code()),
    }
}
