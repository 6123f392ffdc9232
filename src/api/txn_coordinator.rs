//! FindCoordinator for transactional ids (key type 1): the leader of the id's
//! `__transaction_state` partition, creating the topic on first use as Kafka does.

use kafka_protocol::error::ResponseError;

use super::errors::internal_topic_error;
use super::group_offsets::coordinator_endpoint;
use crate::broker::Broker;
use crate::txn::TRANSACTION_STATE_TOPIC;

/// FindCoordinator's key type for transactional ids.
pub const KEY_TYPE_TRANSACTION: i8 = 1;

/// The node coordinating `transactional_id`, at its endpoint on `listener`:
/// (node id, host, port).
pub async fn locate(
    broker: &Broker,
    transactional_id: &str,
    listener: &str,
    deadline: tokio::time::Instant,
) -> Result<(i32, String, i32), ResponseError> {
    if transactional_id.is_empty() {
        return Err(ResponseError::InvalidRequest);
    }
    broker
        .ensure_transaction_topic(deadline)
        .await
        .map_err(|error| internal_topic_error(TRANSACTION_STATE_TOPIC, &error))?;
    let partition = broker.transactions.partition_for(transactional_id);
    coordinator_endpoint(
        &broker.image(),
        TRANSACTION_STATE_TOPIC,
        partition,
        listener,
    )
}
