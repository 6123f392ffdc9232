//! Producer id allocation: blocks of ids reserved through the controller's log, handed
//! out one by one. A restart loses the unused rest of a block, never reuses an id.

use std::sync::Arc;

use tokio::sync::Mutex;

use crate::controller::{CommandOutcome, Controller, ControllerError, MetadataCommand};

/// Ids reserved per controller round trip (Kafka's `ProducerIdsBlock` size).
pub const PRODUCER_ID_BLOCK_SIZE: i64 = 1000;

/// How long an InitProducerId waits for a block: a healthy quorum answers in milliseconds.
const ALLOCATION_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

pub struct ProducerIdManager {
    controller: Arc<Controller>,
    /// Next id to hand out and the end (exclusive) of the current block.
    block: Mutex<(i64, i64)>,
}

impl ProducerIdManager {
    pub fn new(controller: Arc<Controller>) -> ProducerIdManager {
        ProducerIdManager {
            controller,
            block: Mutex::new((0, 0)),
        }
    }

    /// The next id, reserving a new block first when this one is used up. Waits at most
    /// `ALLOCATION_WAIT` (for the lock and the controller together): without a quorum the
    /// caller answers a retriable error at once, as Kafka's broker does when its next
    /// block has not arrived, instead of holding InitProducerId for the submit deadline.
    /// A reservation cut short may still commit: its ids are skipped, never reused.
    pub async fn next_id(&self) -> Result<i64, ControllerError> {
        match tokio::time::timeout(ALLOCATION_WAIT, self.next_id_unbounded()).await {
            Ok(result) => result,
            Err(_) => Err(ControllerError::Unavailable(
                "no producer id block from the controller in time".into(),
            )),
        }
    }

    async fn next_id_unbounded(&self) -> Result<i64, ControllerError> {
        let mut block = self.block.lock().await;
        if block.0 >= block.1 {
            let command = MetadataCommand::AllocateProducerIds {
                count: PRODUCER_ID_BLOCK_SIZE,
            };
            match self.controller.submit(command).await? {
                CommandOutcome::ProducerIdBlock { first, count } => *block = (first, first + count),
                other => {
                    return Err(ControllerError::InvalidRequest(format!(
                        "producer id allocation answered {other:?}"
                    )));
                }
            }
        }
        let id = block.0;
        block.0 += 1;
        Ok(id)
    }
}
