//! Producer id allocation: blocks of ids reserved through the controller's log, handed
//! out one by one. A restart loses the unused rest of a block, never reuses an id.

use std::sync::Arc;

use tokio::sync::Mutex;

use crate::controller::{CommandOutcome, Controller, ControllerError, MetadataCommand};

/// Ids reserved per controller round trip (Kafka's `ProducerIdsBlock` size).
pub const PRODUCER_ID_BLOCK_SIZE: i64 = 1000;

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

    pub async fn next_id(&self) -> Result<i64, ControllerError> {
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
