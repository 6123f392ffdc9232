//! The client side of controller RPC: one TCP connection per peer and purpose, opened
//! lazily and dropped on any error (the next call reconnects).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use openraft::BasicNode;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use tokio::net::TcpStream;

use super::rpc::{Envelope, FrameError, Request, Response, read_frame, write_frame};
use super::types::TypeConfig;
use crate::types::NodeId;

/// Who we are, as every request says; and which peers said they belong to another cluster.
#[derive(Clone, Debug)]
pub struct Identity {
    pub cluster_id: String,
    pub node_id: NodeId,
    /// Peer address -> the cluster id it answered with.
    wrong_cluster: Arc<std::sync::Mutex<BTreeMap<String, String>>>,
}

impl Identity {
    pub fn new(cluster_id: String, node_id: NodeId) -> Identity {
        Identity {
            cluster_id,
            node_id,
            wrong_cluster: Arc::default(),
        }
    }

    fn note_wrong_cluster(&self, address: &str, theirs: &str) {
        let mut peers = self.wrong_cluster.lock().unwrap_or_else(|e| e.into_inner());
        peers.insert(address.to_string(), theirs.to_string());
    }

    /// The other cluster's id once at least `peers` distinct peers answered with it.
    pub fn wrong_cluster(&self, peers: usize) -> Option<String> {
        let answers = self.wrong_cluster.lock().unwrap_or_else(|e| e.into_inner());
        if answers.len() >= peers.max(1) {
            answers.values().next().cloned()
        } else {
            None
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("cannot reach {0}: {1}")]
    Unreachable(String, std::io::Error),
    #[error("{0}")]
    Frame(#[from] FrameError),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("{address} belongs to cluster {theirs}, not ours")]
    WrongCluster { address: String, theirs: String },
    #[error("unexpected answer")]
    Unexpected,
}

/// A lazily connected channel to one peer address.
pub struct Channel {
    identity: Identity,
    address: String,
    stream: Option<TcpStream>,
}

const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

impl Channel {
    pub fn new(identity: Identity, address: String) -> Channel {
        Channel {
            identity,
            address,
            stream: None,
        }
    }

    /// One request, one response, within `timeout`; any failure drops the connection.
    pub async fn call(
        &mut self,
        request: Request,
        timeout: Duration,
    ) -> Result<Response, CallError> {
        let result = tokio::time::timeout(timeout, self.exchange(request)).await;
        let result = match result {
            Ok(result) => result,
            Err(_) => Err(CallError::Timeout(timeout)),
        };
        if result.is_err() {
            self.stream = None;
        }
        match result? {
            Response::WrongCluster(theirs) => {
                self.identity.note_wrong_cluster(&self.address, &theirs);
                Err(CallError::WrongCluster {
                    address: self.address.clone(),
                    theirs,
                })
            }
            response => Ok(response),
        }
    }

    async fn exchange(&mut self, request: Request) -> Result<Response, CallError> {
        if self.stream.is_none() {
            let connect = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&self.address));
            let stream = match connect.await {
                Ok(Ok(stream)) => stream,
                Ok(Err(error)) => return Err(CallError::Unreachable(self.address.clone(), error)),
                Err(_) => {
                    return Err(CallError::Unreachable(
                        self.address.clone(),
                        std::io::Error::from(std::io::ErrorKind::TimedOut),
                    ));
                }
            };
            let _ = stream.set_nodelay(true);
            self.stream = Some(stream);
        }
        let stream = self.stream.as_mut().expect("connected above");
        let envelope = Envelope {
            cluster_id: self.identity.cluster_id.clone(),
            from: self.identity.node_id,
            request,
        };
        write_frame(stream, &envelope).await?;
        match read_frame(stream).await? {
            Some(response) => Ok(response),
            None => Err(CallError::Frame(FrameError::Io(std::io::Error::from(
                std::io::ErrorKind::UnexpectedEof,
            )))),
        }
    }
}

/// Creates openraft's per-target clients.
pub struct Network {
    pub identity: Identity,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> PeerClient {
        PeerClient {
            target,
            channel: Channel::new(self.identity.clone(), node.addr.clone()),
        }
    }
}

pub struct PeerClient {
    target: u64,
    channel: Channel,
}

type RpcResult<T, E = openraft::error::Infallible> =
    Result<T, RPCError<u64, BasicNode, RaftError<u64, E>>>;

impl PeerClient {
    async fn send(
        &mut self,
        request: Request,
        option: &RPCOption,
    ) -> Result<Response, RPCError<u64, BasicNode, RaftError<u64, InstallSnapshotError>>> {
        self.channel
            .call(request, option.hard_ttl())
            .await
            .map_err(|error| match error {
                CallError::Unreachable(..) | CallError::WrongCluster { .. } => {
                    RPCError::Unreachable(Unreachable::new(&error))
                }
                other => RPCError::Network(NetworkError::new(&other)),
            })
    }

    fn remote<E: std::error::Error>(
        &self,
        error: RaftError<u64, E>,
    ) -> RPCError<u64, BasicNode, RaftError<u64, E>> {
        RPCError::RemoteError(RemoteError::new(self.target, error))
    }
}

/// Narrows an RPC error of the snapshot call's type to another error type (transport
/// errors carry no remote payload, so nothing is lost).
fn narrow<E: std::error::Error>(
    error: RPCError<u64, BasicNode, RaftError<u64, InstallSnapshotError>>,
) -> RPCError<u64, BasicNode, RaftError<u64, E>> {
    match error {
        RPCError::Unreachable(e) => RPCError::Unreachable(e),
        RPCError::Network(e) => RPCError::Network(e),
        RPCError::Timeout(e) => RPCError::Timeout(e),
        other => RPCError::Network(NetworkError::new(&other)),
    }
}

fn unexpected<E: std::error::Error>() -> RPCError<u64, BasicNode, RaftError<u64, E>> {
    RPCError::Network(NetworkError::new(&CallError::Unexpected))
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<u64>> {
        match self
            .send(Request::AppendEntries(rpc), &option)
            .await
            .map_err(narrow)?
        {
            Response::AppendEntries(Ok(response)) => Ok(response),
            Response::AppendEntries(Err(error)) => Err(self.remote(error)),
            _ => Err(unexpected()),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<u64>, InstallSnapshotError> {
        match self.send(Request::InstallSnapshot(rpc), &option).await? {
            Response::InstallSnapshot(Ok(response)) => Ok(response),
            Response::InstallSnapshot(Err(error)) => Err(self.remote(error)),
            _ => Err(unexpected()),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<u64>> {
        match self
            .send(Request::Vote(rpc), &option)
            .await
            .map_err(narrow)?
        {
            Response::Vote(Ok(response)) => Ok(response),
            Response::Vote(Err(error)) => Err(self.remote(error)),
            _ => Err(unexpected()),
        }
    }
}
