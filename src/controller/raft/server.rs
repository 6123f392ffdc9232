//! The server side of controller RPC on the controller listener (`CONTROLLER://...`).

use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};

use super::rpc::{Envelope, Request, Response, read_frame, write_frame};
use crate::controller::Controller;
use crate::controller::rejection::Rejection;
use crate::server::Shutdown;

/// Accepts peers until shutdown; each connection is served in order, one request at a time.
pub async fn serve(listener: TcpListener, controller: Arc<Controller>, mut shutdown: Shutdown) {
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    tokio::spawn(connection(stream, controller.clone()));
                }
                Err(error) => {
                    tracing::warn!(%error, "controller listener accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            },
            _ = shutdown.triggered() => return,
        }
    }
}

async fn connection(mut stream: TcpStream, controller: Arc<Controller>) {
    loop {
        let envelope: Envelope = match read_frame(&mut stream).await {
            Ok(Some(envelope)) => envelope,
            Ok(None) => return,
            Err(error) => {
                tracing::debug!(%error, "controller RPC connection closed");
                return;
            }
        };
        let response = answer(&controller, envelope).await;
        if let Err(error) = write_frame(&mut stream, &response).await {
            tracing::debug!(%error, "controller RPC reply failed");
            return;
        }
    }
}

async fn answer(controller: &Controller, envelope: Envelope) -> Response {
    if envelope.cluster_id != controller.cluster_id() {
        tracing::error!(
            from = envelope.from,
            their_cluster = %envelope.cluster_id,
            our_cluster = %controller.cluster_id(),
            "refusing controller RPC from a node of another cluster"
        );
        return Response::WrongCluster(controller.cluster_id().to_string());
    }
    let from = envelope.from;
    let Some(raft) = controller.raft() else {
        return Response::Vote(Err(openraft::error::RaftError::Fatal(
            openraft::error::Fatal::Stopped,
        )));
    };
    match envelope.request {
        Request::AppendEntries(rpc) => Response::AppendEntries(raft.append_entries(rpc).await),
        Request::Vote(rpc) => Response::Vote(raft.vote(rpc).await),
        Request::InstallSnapshot(rpc) => {
            Response::InstallSnapshot(raft.install_snapshot(rpc).await)
        }
        Request::Submit(command) => Response::Submit(
            controller
                .submit_as_leader(command)
                .await
                .map_err(|error| Rejection::from(&error)),
        ),
        Request::Heartbeat(beat) => Response::Heartbeat(
            controller
                .heartbeat_as_leader(beat)
                .await
                .map_err(|error| Rejection::from(&error)),
        ),
        Request::FetchMetadata {
            from_index,
            max_wait_ms,
        } => Response::FetchMetadata(
            controller
                .serve_fetch(from, from_index, max_wait_ms)
                .await
                .map_err(|error| Rejection::from(&error)),
        ),
        Request::DescribeQuorum => Response::DescribeQuorum(
            controller
                .local_quorum_status()
                .map_err(|error| Rejection::from(&error)),
        ),
    }
}
