//! The server side of controller RPC on the controller listener (`CONTROLLER://...`).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use super::rpc::{Envelope, Request, Response, read_frame, write_frame};
use crate::controller::Controller;
use crate::controller::rejection::Rejection;
use crate::server::Shutdown;

/// Connections the controller listener serves at once (voters and observers hold two
/// each); more are closed as they arrive.
const CONNECTIONS_MAX: usize = 1024;
/// A connection silent this long is closed (peers reconnect on their next call).
const IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// At most one "other cluster" error line per this interval.
const WRONG_CLUSTER_LOG_EVERY_MS: i64 = 10_000;

/// Accepts peers until shutdown; each connection is served in order, one request at a time.
pub async fn serve(listener: TcpListener, controller: Arc<Controller>, mut shutdown: Shutdown) {
    let slots = Arc::new(Semaphore::new(CONNECTIONS_MAX));
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    // Accepting never stops (a voter reconnecting must get through); a
                    // connection over the limit is closed at once.
                    let Ok(slot) = slots.clone().try_acquire_owned() else {
                        tracing::warn!("controller listener at its connection limit");
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    let controller = controller.clone();
                    let mut stop = shutdown.clone();
                    tokio::spawn(async move {
                        // A stopped node's open connections close with it.
                        tokio::select! {
                            _ = connection(stream, controller) => {}
                            _ = stop.triggered() => {}
                        }
                        drop(slot);
                    });
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
        let envelope: Envelope =
            match tokio::time::timeout(IDLE_TIMEOUT, read_frame(&mut stream)).await {
                Ok(Ok(Some(envelope))) => envelope,
                Ok(Ok(None)) | Err(_) => return,
                Ok(Err(error)) => {
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
        static LAST_LOGGED_MS: AtomicI64 = AtomicI64::new(0);
        let now = crate::types::now_ms();
        if now - LAST_LOGGED_MS.swap(now, Ordering::Relaxed) >= WRONG_CLUSTER_LOG_EVERY_MS {
            tracing::error!(
                from = envelope.from,
                their_cluster = %envelope.cluster_id,
                our_cluster = %controller.cluster_id(),
                "refusing controller RPC from a node of another cluster"
            );
        }
        return Response::WrongCluster(controller.cluster_id().to_string());
    }
    let from = envelope.from;
    let Some(raft) = controller.raft() else {
        // An observer serves no controller RPC; this answer fails the caller's request.
        return Response::WrongCluster(String::new());
    };
    match envelope.request {
        Request::AppendEntries(rpc) => Response::AppendEntries(raft.append_entries(rpc).await),
        // A voter rebuilt from an empty directory has forgotten what it acknowledged: it
        // grants no vote until it has caught up, so it cannot elect a leader that lacks a
        // committed entry.
        Request::Probe => {
            let metrics = raft.metrics().borrow().clone();
            Response::Probe {
                initialized: metrics.last_log_index.is_some(),
                last_log_index: metrics.last_log_index.unwrap_or(0),
            }
        }
        Request::Vote(rpc) if controller.refuses_vote(&rpc) => {
            Response::Vote(Ok(openraft::raft::VoteResponse {
                vote: rpc.vote,
                vote_granted: false,
                last_log_id: None,
            }))
        }
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
