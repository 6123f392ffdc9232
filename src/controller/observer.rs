//! An observer: a broker that is not a controller voter follows the committed metadata log
//! by fetching it from the active controller, as Kafka's brokers fetch
//! `__cluster_metadata`. It applies each entry with the voters' own apply function, so its
//! image is theirs; when its position was purged behind a snapshot it takes the whole
//! committed image instead. It keeps no copy on disk: a restart fetches the image anew.

use std::sync::Arc;
use std::time::Duration;

use super::Controller;
use super::raft::rpc::{MetadataBatch, Request, Response};
use super::raft::state_machine::apply_command;
use crate::types::NodeId;

/// How long the active controller may hold a fetch open waiting for a new entry.
const FETCH_WAIT_MS: u64 = 500;
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// Fetches and applies until the controller is shut down.
pub async fn follow(controller: Arc<Controller>) {
    let mut stopped = controller.stop_signal();
    let voters: Vec<NodeId> = controller.settings().voters.keys().copied().collect();
    let mut next_voter = 0usize;
    let timeout = Duration::from_millis(controller.settings().request_timeout_ms + FETCH_WAIT_MS);
    loop {
        let target = match controller.leader() {
            Some(leader) => leader,
            None if voters.is_empty() => return,
            None => {
                next_voter = (next_voter + 1) % voters.len();
                voters[next_voter]
            }
        };
        let from_index = controller.image().applied_index + 1;
        let request = Request::FetchMetadata {
            from_index,
            max_wait_ms: FETCH_WAIT_MS,
        };
        let fetched = tokio::select! {
            fetched = controller.call_voter(target, request, timeout) => fetched,
            _ = stopped.changed() => return,
        };
        match fetched {
            Ok(Response::FetchMetadata(Ok(batch))) => apply(&controller, from_index, batch),
            Ok(other) => {
                tracing::debug!(
                    target,
                    ?other,
                    "metadata fetch refused; trying another voter"
                );
                controller.set_leader_hint(-1);
                tokio::time::sleep(RETRY_PAUSE).await;
            }
            Err(error) => {
                tracing::debug!(target, %error, "metadata fetch failed; trying another voter");
                controller.set_leader_hint(-1);
                tokio::time::sleep(RETRY_PAUSE).await;
            }
        }
    }
}

fn apply(controller: &Controller, from_index: u64, batch: MetadataBatch) {
    match batch {
        MetadataBatch::Entries { leader, entries } => {
            controller.set_leader_hint(leader);
            if entries.is_empty() {
                return;
            }
            let mut image = super::MetadataImage::clone(&controller.image());
            for (expected, (index, command)) in (from_index..).zip(entries) {
                if index != expected {
                    // Never apply around a gap: fetch again from where we are.
                    tracing::warn!(
                        index,
                        expected,
                        "metadata fetch skipped entries; refetching"
                    );
                    break;
                }
                match command {
                    Some(command) => drop(apply_command(&mut image, index, &command)),
                    None => image.applied_index = index,
                }
            }
            controller.publisher().publish(&image);
        }
        MetadataBatch::Image { leader, image } => {
            controller.set_leader_hint(leader);
            if image.applied_index >= from_index {
                tracing::info!(
                    offset = image.applied_index,
                    "took the committed metadata image"
                );
                controller.publisher().publish(&image);
            }
        }
    }
}
