//! One-time import of the single-node metadata log (`metadata.log`, or the older
//! `metadata.jsonl`) into the Raft quorum, for data directories written before it.
//!
//! The old log is replayed (strictly: any bad complete record stops start-up, as before),
//! its image is proposed as one `Restore` command, and only once that is committed and
//! applied is the old file renamed `*.imported` (fsynced). A crash in between leaves the
//! old file in place; the next start sees the quorum already holds that cluster and only
//! renames it. Nothing is deleted.

use std::path::Path;
use std::time::Duration;

use super::store::CommandLog;
use super::{Controller, ControllerError, MetadataCommand};

const OLD_FILES: [&str; 2] = ["metadata.log", "metadata.jsonl"];
const IMPORTED_SUFFIX: &str = ".imported";

fn old_files_present(dir: &Path) -> bool {
    OLD_FILES.iter().any(|name| dir.join(name).exists())
}

/// Imports the old log under `dir` if there is one; a no-op otherwise.
pub async fn import_if_present(controller: &Controller, dir: &Path) -> Result<(), ControllerError> {
    if !old_files_present(dir) {
        return Ok(());
    }
    if controller.settings().voters.len() > 1 {
        return Err(ControllerError::InvalidRequest(format!(
            "{} holds a single-node metadata log, which only a single-voter node imports \
             (voters cannot be added afterwards yet)",
            dir.display()
        )));
    }
    let (_, image) = tokio::task::block_in_place(|| CommandLog::open(dir))?;
    // The lone voter re-applies its committed tail at start: read the image only after it
    // has applied everything in its log (a Restore from a crashed earlier attempt included).
    if controller
        .wait_for_leader(Duration::from_secs(30))
        .await
        .is_none()
    {
        return Err(ControllerError::Unavailable(
            "no active controller for the import".into(),
        ));
    }
    controller
        .wait_applied_log_end(Duration::from_secs(30))
        .await?;
    let current = controller.image();
    if current.cluster_id.is_empty() {
        tracing::info!(
            topics = image.topics.len(),
            brokers = image.brokers.len(),
            "importing the single-node metadata log into the metadata quorum"
        );
        let cluster_id = image.cluster_id.clone();
        let restored = controller
            .submit(MetadataCommand::Restore {
                image: Box::new(image),
            })
            .await;
        // Refused because a Restore of the same cluster got there first: that is success.
        if let Err(error) = restored
            && controller.image().cluster_id != cluster_id
        {
            return Err(error);
        }
    } else if current.cluster_id != image.cluster_id {
        return Err(ControllerError::ClusterIdMismatch {
            ours: image.cluster_id,
            theirs: current.cluster_id.clone(),
        });
    }
    tokio::task::block_in_place(|| set_old_files_aside(dir))?;
    Ok(())
}

fn set_old_files_aside(dir: &Path) -> std::io::Result<()> {
    for name in OLD_FILES {
        let path = dir.join(name);
        if path.exists() {
            std::fs::rename(&path, dir.join(format!("{name}{IMPORTED_SUFFIX}")))?;
        }
    }
    crate::log::durable::sync_directory(dir)
}
