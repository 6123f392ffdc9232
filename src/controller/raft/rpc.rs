//! Controller RPC: the messages voters exchange on the controller listener, and their
//! framing: `u32 length (big endian) || crc32c || json` ([`super::types::encode`]).
//!
//! Every request names the sender's cluster id; a node answers a request from another
//! cluster with `WrongCluster` and never acts on it, so two clusters that share an address
//! by mistake cannot mix their logs.

use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::types::{Applied, TypeConfig, decode, encode};
use crate::controller::commands::MetadataCommand;
use crate::controller::quorum_status::QuorumStatus;
use crate::controller::rejection::Rejection;
use crate::types::NodeId;

/// Largest frame accepted (snapshots travel in chunks of `snapshot_max_chunk_size`).
pub const FRAME_BYTES_MAX: usize = 64 * 1024 * 1024;

#[derive(Debug, Serialize, Deserialize)]
pub struct Envelope {
    pub cluster_id: String,
    pub from: NodeId,
    pub request: Request,
}

#[derive(Debug, Serialize, Deserialize)]
pub enum Request {
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<u64>),
    InstallSnapshot(InstallSnapshotRequest<TypeConfig>),
    /// A command for the active controller (admin requests reach it from any node).
    Submit(MetadataCommand),
    /// A broker's liveness report to the active controller.
    Heartbeat(BrokerHeartbeat),
    /// The quorum as the active controller sees it (DescribeQuorum from any node).
    DescribeQuorum,
    /// An observer (a broker that is not a voter) follows the committed log from the
    /// active controller, as Kafka's brokers fetch the metadata log: entries from
    /// `from_index` on, waiting up to `max_wait_ms` for one to be committed.
    FetchMetadata {
        from_index: u64,
        max_wait_ms: u64,
    },
    /// Whether the receiver holds a Raft log: a voter without one asks before it either
    /// forms the quorum with others as empty as itself or catches up with an existing one.
    Probe,
}

/// Committed metadata for an observer.
#[derive(Debug, Serialize, Deserialize)]
pub enum MetadataBatch {
    /// Entries in index order; `None` for entries that change no image (blank, membership).
    Entries {
        leader: NodeId,
        entries: Vec<(u64, Option<MetadataCommand>)>,
    },
    /// The log before the observer's position is gone (purged behind a snapshot): the whole
    /// committed image instead.
    Image {
        leader: NodeId,
        image: Box<crate::controller::MetadataImage>,
    },
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct BrokerHeartbeat {
    pub node_id: NodeId,
    pub broker_epoch: i64,
    /// The sender's applied metadata offset: a fenced broker is unfenced once caught up.
    pub applied_index: u64,
}

#[derive(Debug, Serialize, Deserialize)]
pub enum Response {
    AppendEntries(Result<AppendEntriesResponse<u64>, RaftError<u64>>),
    Vote(Result<VoteResponse<u64>, RaftError<u64>>),
    InstallSnapshot(Result<InstallSnapshotResponse<u64>, RaftError<u64, InstallSnapshotError>>),
    /// The apply result and the entry's index (the proposer waits to have applied it).
    Submit(Result<(Applied, u64), Rejection>),
    Heartbeat(Result<(), Rejection>),
    DescribeQuorum(Result<QuorumStatus, Rejection>),
    FetchMetadata(Result<MetadataBatch, Rejection>),
    Probe {
        initialized: bool,
        last_log_index: u64,
    },
    /// The request came from another cluster; the receiver's id is attached.
    WrongCluster(String),
}

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("frame of {0} bytes exceeds the limit")]
    TooLarge(usize),
    #[error("bad frame: {0}")]
    Codec(#[from] super::types::CodecError),
}

pub async fn write_frame<W, T>(writer: &mut W, value: &T) -> Result<(), FrameError>
where
    W: AsyncWriteExt + Unpin,
    T: Serialize,
{
    let body = encode(value);
    if body.len() > FRAME_BYTES_MAX {
        return Err(FrameError::TooLarge(body.len()));
    }
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(&body);
    writer.write_all(&frame).await?;
    writer.flush().await?;
    Ok(())
}

/// Reads one frame; `Ok(None)` on a clean end of stream before a frame starts.
pub async fn read_frame<R, T>(reader: &mut R) -> Result<Option<T>, FrameError>
where
    R: AsyncReadExt + Unpin,
    T: serde::de::DeserializeOwned,
{
    let mut size = [0u8; 4];
    match reader.read_exact(&mut size).await {
        Ok(_) => {}
        Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(error) => return Err(error.into()),
    }
    let size = u32::from_be_bytes(size) as usize;
    if size > FRAME_BYTES_MAX {
        return Err(FrameError::TooLarge(size));
    }
    // The announced size is a claim: the buffer grows with the bytes that really arrive.
    const INITIAL_BYTES: usize = 64 * 1024;
    let mut body = Vec::with_capacity(size.min(INITIAL_BYTES));
    (&mut *reader)
        .take(size as u64)
        .read_to_end(&mut body)
        .await?;
    if body.len() != size {
        return Err(FrameError::Io(std::io::ErrorKind::UnexpectedEof.into()));
    }
    Ok(Some(decode(&body)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_and_damage_is_refused() {
        let mut buffer = Vec::new();
        let beat = BrokerHeartbeat {
            node_id: 3,
            broker_epoch: 7,
            applied_index: 9,
        };
        write_frame(&mut buffer, &beat).await.unwrap();
        let back: BrokerHeartbeat = read_frame(&mut buffer.as_slice()).await.unwrap().unwrap();
        assert_eq!(
            (back.node_id, back.broker_epoch, back.applied_index),
            (3, 7, 9)
        );
        let last = buffer.len() - 1;
        buffer[last] ^= 1;
        assert!(
            read_frame::<_, BrokerHeartbeat>(&mut buffer.as_slice())
                .await
                .is_err()
        );
        let huge = (FRAME_BYTES_MAX as u32 + 1).to_be_bytes();
        assert!(matches!(
            read_frame::<_, BrokerHeartbeat>(&mut huge.as_slice()).await,
            Err(FrameError::TooLarge(_))
        ));
        let empty: &[u8] = &[];
        assert!(
            read_frame::<_, BrokerHeartbeat>(&mut &*empty)
                .await
                .unwrap()
                .is_none()
        );
    }
}
