//! WriteTxnMarkers v1 (broker to broker): the transaction coordinator asks each
//! partition's leader to end a producer's transaction there with a commit or abort marker.
//!
//! Every partition of the request is appended first (`Partition::append_txn_marker`, acks=all
//! rules), then all the appends are awaited together until the high watermark passes their
//! markers, so one slow partition costs its own replication time, not the sum. Per
//! partition: not leading it is NOT_LEADER_OR_FOLLOWER, an unknown one
//! UNKNOWN_TOPIC_OR_PARTITION, a marker epoch below the producer's INVALID_PRODUCER_EPOCH,
//! a coordinator epoch below the last seen TRANSACTION_COORDINATOR_FENCED, a marker not
//! committed within `LEADER_COMMIT_TIMEOUT` (shorter than the sender's request timeout)
//! REQUEST_TIMED_OUT (the coordinator retries; a repeated marker ends an
//! empty transaction, which changes nothing, as in Kafka).

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{WriteTxnMarkersRequest, WriteTxnMarkersResponse};
use tokio::task::JoinSet;

use super::errors::replica_error;
use super::{RequestContext, leader_partition};
use crate::broker::Broker;
use crate::group::OFFSETS_TOPIC;
use crate::replica::Partition;
use crate::txn::markers::LEADER_COMMIT_TIMEOUT;
use crate::txn::producer_state::TxnMarker;
use crate::types::now_ms;

/// Where one partition's answer goes: (marker, topic, partition) positions.
type Slot = (usize, usize, usize);

pub async fn handle(
    broker: &Broker,
    _context: &RequestContext,
    request: WriteTxnMarkersRequest,
) -> WriteTxnMarkersResponse {
    let image = broker.image();
    let now = now_ms();
    // Shorter than the sender's request timeout: a slow ISR is answered REQUEST_TIMED_OUT
    // (retried) before the sender would give up on the connection.
    let deadline = tokio::time::Instant::now() + LEADER_COMMIT_TIMEOUT;
    let mut response = skeleton(&request);
    let mut pending = JoinSet::new();
    for (marker_index, written) in request.markers.iter().enumerate() {
        let marker = TxnMarker {
            committed: written.transaction_result,
            coordinator_epoch: written.coordinator_epoch,
        };
        let producer_id = written.producer_id.0;
        for (topic_index, topic) in written.topics.iter().enumerate() {
            let name = topic.name.0.as_str();
            for (position, &index) in topic.partition_indexes.iter().enumerate() {
                let slot = (marker_index, topic_index, position);
                let unknown = ResponseError::UnknownTopicOrPartition;
                let appended =
                    leader_partition(broker, &image, name, index, unknown).and_then(|partition| {
                        let epoch = written.producer_epoch;
                        partition
                            .append_txn_marker(producer_id, epoch, marker, now)
                            .map(|outcome| (partition, outcome))
                            .map_err(|error| replica_error(&error))
                    });
                match appended {
                    Ok((partition, outcome)) => {
                        // Until the wait answers: a wait that never does is no success.
                        set_error(&mut response, slot, ResponseError::UnknownServerError);
                        pending.spawn(wait_committed(slot, partition, outcome, deadline));
                    }
                    Err(error) => set_error(&mut response, slot, error),
                }
            }
        }
    }
    while let Some(joined) = pending.join_next().await {
        let Ok((slot, result)) = joined else {
            // A wait cannot panic; if one did, its partition keeps UNKNOWN_SERVER_ERROR.
            continue;
        };
        match result {
            Ok(marker_offset) => {
                set_code(&mut response, slot, 0);
                let (marker_index, topic_index, partition_slot) = slot;
                let written = &request.markers[marker_index];
                let topic = &written.topics[topic_index];
                if topic.name.0.as_str() == OFFSETS_TOPIC {
                    // The marker is committed: the group coordinator makes the
                    // transaction's offsets visible or drops them. (No partition lock is
                    // held here; the group coordinator takes its offsets lock first.)
                    broker.groups.complete_transaction(
                        topic.partition_indexes[partition_slot],
                        written.producer_id.0,
                        written.transaction_result,
                        marker_offset,
                    );
                }
            }
            Err(error) => set_error(&mut response, slot, error),
        }
    }
    response
}

/// Waits for one appended marker to commit.
async fn wait_committed(
    slot: Slot,
    partition: Arc<Partition>,
    outcome: crate::replica::ProduceOutcome,
    deadline: tokio::time::Instant,
) -> (Slot, Result<i64, ResponseError>) {
    let committed = partition
        .wait_committed(outcome.end_offset, outcome.leader_epoch, deadline)
        .await;
    if let Err(error) = &committed {
        tracing::debug!(tp = %partition.tp, %error, "transaction marker not committed");
    }
    let marker_offset = outcome.base_offset;
    (
        slot,
        committed
            .map(|()| marker_offset)
            .map_err(|error| replica_error(&error)),
    )
}

/// The response with every partition answered NONE, in request order; failures and
/// pending waits write their codes over it.
fn skeleton(request: &WriteTxnMarkersRequest) -> WriteTxnMarkersResponse {
    crate::txn::markers::answered(request, |_, _, _| 0)
}

fn set_error(response: &mut WriteTxnMarkersResponse, slot: Slot, error: ResponseError) {
    set_code(response, slot, error.code());
}

fn set_code(response: &mut WriteTxnMarkersResponse, slot: Slot, code: i16) {
    let (marker, topic, partition) = slot;
    response.markers[marker].topics[topic].partitions[partition].error_code = code;
}
