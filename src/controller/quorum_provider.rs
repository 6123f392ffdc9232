//! lead: replaced by the Raft quorum.
//!
//! A stand-in [`Controller::quorum_status`] for the single-voter controller of today: the
//! local node is the only voter and always the leader, everything in the image is
//! committed. The Raft quorum replaces this file with the leader's real view (terms,
//! per-voter progress, observers, controller listener endpoints).

use super::image::MetadataImage;
use super::quorum_status::{NO_LEADER, QuorumNode, QuorumStatus, ReplicaProgress};
use super::{Controller, ControllerError};
use crate::types::now_ms;

/// The only epoch a single voter that never lost an election has (Raft terms start at 1
/// once a leader is elected).
const SINGLE_VOTER_EPOCH: i32 = 1;

/// The listener the single voter is reached on: the embedded node has one listener that
/// serves every role.
const SINGLE_VOTER_LISTENER: &str = "PLAINTEXT";

impl Controller {
    /// The quorum as the leader sees it. lead: replaced by the Raft quorum.
    pub async fn quorum_status(&self) -> Result<QuorumStatus, ControllerError> {
        Ok(single_voter_status(&self.image(), now_ms()))
    }
}

/// The quorum of one voter, `image.controller_id`, that has committed the whole image.
/// An image that was never bootstrapped has no leader yet.
pub fn single_voter_status(image: &MetadataImage, now_ms: i64) -> QuorumStatus {
    if image.cluster_id.is_empty() {
        return QuorumStatus {
            leader_id: NO_LEADER,
            leader_epoch: 0,
            high_watermark: 0,
            voters: Vec::new(),
            observers: Vec::new(),
            nodes: Vec::new(),
        };
    }
    let high_watermark = i64::try_from(image.applied_index)
        .unwrap_or(i64::MAX - 1)
        .saturating_add(1);
    let voter = ReplicaProgress {
        replica_id: image.controller_id,
        replica_directory_id: uuid::Uuid::nil(),
        log_end_offset: high_watermark,
        last_fetch_timestamp: now_ms,
        last_caught_up_timestamp: now_ms,
    };
    let listeners = image
        .brokers
        .get(&image.controller_id)
        .and_then(|registration| {
            let port = u16::try_from(registration.port).ok()?;
            Some((
                SINGLE_VOTER_LISTENER.to_string(),
                registration.host.clone(),
                port,
            ))
        })
        .into_iter()
        .collect();
    QuorumStatus {
        leader_id: image.controller_id,
        leader_epoch: SINGLE_VOTER_EPOCH,
        high_watermark,
        voters: vec![voter],
        observers: Vec::new(),
        nodes: vec![QuorumNode {
            node_id: image.controller_id,
            listeners,
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::BrokerRegistration;

    #[test]
    fn an_unbootstrapped_image_has_no_leader() {
        let status = single_voter_status(&MetadataImage::default(), 5);
        assert!(!status.has_leader());
        assert!(status.voters.is_empty());
    }

    #[test]
    fn the_controller_is_the_one_caught_up_voter() {
        let mut image = MetadataImage {
            cluster_id: "c".into(),
            controller_id: 3,
            applied_index: 41,
            ..MetadataImage::default()
        };
        image.brokers.insert(
            3,
            BrokerRegistration {
                node_id: 3,
                host: "h".into(),
                port: 9092,
                rack: None,
            },
        );
        let status = single_voter_status(&image, 1_000);
        assert_eq!((status.leader_id, status.leader_epoch), (3, 1));
        assert_eq!(status.high_watermark, 42);
        assert_eq!(status.voters.len(), 1);
        assert_eq!(status.voters[0].replica_id, 3);
        assert_eq!(status.voters[0].log_end_offset, 42);
        assert_eq!(status.voters[0].last_caught_up_timestamp, 1_000);
        assert!(status.observers.is_empty());
        let listeners = &status.nodes[0].listeners;
        assert_eq!(
            listeners,
            &[("PLAINTEXT".to_string(), "h".to_string(), 9092)]
        );
    }
}
