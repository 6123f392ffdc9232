//! InitProducerId for idempotent producers: a fresh producer id at epoch 0.
//!
//! Transactional ids need the transaction coordinator, which does not exist yet. A
//! transactional producer first asks FindCoordinator, which we do not advertise, so it
//! never gets here; if one does, INVALID_REQUEST is safer than an id that would make it
//! believe it has transactions.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use super::RequestContext;
use super::errors::controller_error;
use crate::broker::Broker;

pub async fn handle(
    broker: &Broker,
    _context: &RequestContext,
    request: InitProducerIdRequest,
) -> InitProducerIdResponse {
    let failed = |code: i16| {
        InitProducerIdResponse::default()
            .with_error_code(code)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1)
    };
    if request.transactional_id.is_some() {
        return failed(ResponseError::InvalidRequest.code());
    }
    if request.producer_id.0 >= 0 {
        // KIP-360 epoch bump of an idempotent producer: a new id is just as good and
        // cannot collide with the old one's sequences.
        tracing::debug!(
            producer_id = request.producer_id.0,
            "re-initialising idempotent producer"
        );
    }
    match broker.producer_ids.next_id().await {
        Ok(id) => InitProducerIdResponse::default()
            .with_producer_id(ProducerId(id))
            .with_producer_epoch(0),
        Err(error) => failed(controller_error(&error).code()),
    }
}
