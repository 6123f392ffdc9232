//! The accept loops, one per client listener. Takes already-bound listeners so tests can
//! use port 0.
//!
//! As Kafka's `Acceptor.accept` does, a loop accepts the socket first and only then waits
//! for a connection slot, holding the accepted socket: waiting for the slot before
//! `accept()` would make every idle listener hold a slot for a connection that does not
//! exist, shutting clients out of the others.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use super::Shutdown;
use super::budget::RequestBudget;
use super::connection::Connection;
use super::connection_quotas::{ConnectionQuotas, ConnectionSlot};
use crate::broker::Broker;

/// How long in-flight requests get to finish once shutdown starts.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// At most one info line per listener per this interval about entering and leaving the
/// limit: at the limit every close admits one waiting socket and blocks again, and that
/// churn would otherwise log two lines per connection. The rest go to debug.
const LIMIT_NOTICE_INTERVAL: Duration = Duration::from_secs(10);

/// A bound client listener and its name (`PLAINTEXT`, `EXTERNAL`, ...): requests accepted
/// on it are answered with every broker's endpoint on that same listener.
pub struct BoundListener {
    pub name: String,
    pub listener: TcpListener,
}

/// Serves every listener until shutdown. `max.connections` and `queued.max.request.bytes`
/// are broker-wide, as in Kafka: the listeners share one connection count and one budget.
/// The inter-broker listener is not held back by `max.connections` (KIP-402), but it does
/// share the request budget: Kafka's listeners share one memory pool, that one included.
pub async fn serve(listeners: Vec<BoundListener>, broker: Arc<Broker>, shutdown: Shutdown) {
    let names: Vec<&str> = listeners.iter().map(|bound| bound.name.as_str()).collect();
    let slots = Arc::new(ConnectionQuotas::new(
        broker.config.connections_max,
        broker.config.listener_connections_max.clone(),
        &broker.config.inter_broker_listener_name,
        &names,
    ));
    for unserved in
        ConnectionQuotas::unserved_limits(&broker.config.listener_connections_max, &names)
    {
        tracing::warn!(
            listener = unserved,
            "listener.name.<listener>.max.connections names a listener this broker does not \
             serve to clients; it has no effect"
        );
    }
    let budget = broker
        .config
        .queued_request_bytes_max
        .map(|bytes| Arc::new(RequestBudget::new(bytes)));
    if let Some(budget) = &budget {
        crate::metrics::registry().set_budget(budget);
    }
    let mut loops = JoinSet::new();
    for bound in listeners {
        let name: Arc<str> = Arc::from(bound.name);
        let run = {
            let (broker, shutdown, budget, name) = (
                broker.clone(),
                shutdown.clone(),
                budget.clone(),
                name.clone(),
            );
            move |stream: TcpStream, peer: SocketAddr| {
                let _ = stream.set_nodelay(true);
                Connection::new(
                    stream,
                    peer,
                    name.clone(),
                    broker.clone(),
                    shutdown.clone(),
                    budget.clone(),
                )
                .run()
            }
        };
        loops.spawn(accept_loop(
            bound.listener,
            name,
            shutdown.clone(),
            slots.clone(),
            run,
        ));
    }
    while loops.join_next().await.is_some() {}
}

/// Accepts on `listener` until shutdown, running each connection with `run` while it
/// holds a counted slot (freed when `run` returns).
async fn accept_loop<F, R>(
    listener: TcpListener,
    name: Arc<str>,
    mut shutdown: Shutdown,
    slots: Arc<ConnectionQuotas>,
    run: F,
) where
    F: Fn(TcpStream, SocketAddr) -> R,
    R: Future<Output = ()> + Send + 'static,
{
    let gauge = crate::metrics::registry().listener(&name);
    let mut connections = JoinSet::new();
    let mut notice = LimitNotice::default();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.triggered() => break,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(error) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(%error, listener = %name, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Holding the accepted socket while waiting, as Kafka does; later ones wait in
        // the kernel's backlog.
        let permit = tokio::select! {
            permit = next_slot(&slots, &name, &mut notice) => permit,
            _ = shutdown.triggered() => break,
        };
        let connection = run(stream, peer);
        let open = crate::metrics::ConnectionGauge::open(&gauge);
        connections.spawn(async move {
            connection.await;
            drop((permit, open));
        });
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            open = connections.len(),
            listener = %name,
            "connections still busy at shutdown; aborting them"
        );
        connections.shutdown().await;
    }
}

/// When this listener last said at info that it hit the limit.
#[derive(Default)]
struct LimitNotice {
    last_info: Option<Instant>,
}

impl LimitNotice {
    /// Whether this wait is announced at info (else at debug).
    fn at_info(&mut self) -> bool {
        let now = Instant::now();
        let due = self
            .last_info
            .is_none_or(|last| now.duration_since(last) >= LIMIT_NOTICE_INTERVAL);
        if due {
            self.last_info = Some(now);
        }
        due
    }
}

/// A connection slot on `listener`, saying when the limits make it wait (see
/// [`LIMIT_NOTICE_INTERVAL`]).
async fn next_slot(
    slots: &Arc<ConnectionQuotas>,
    listener: &Arc<str>,
    notice: &mut LimitNotice,
) -> ConnectionSlot {
    if let Some(slot) = slots.try_acquire(listener) {
        return slot;
    }
    let (open, on_listener) = slots.open(listener);
    let at_info = notice.at_info();
    if at_info {
        tracing::info!(
            %listener,
            open,
            on_listener,
            "connection limit reached; a new connection waits until one closes"
        );
    } else {
        tracing::debug!(%listener, open, on_listener, "connection limit reached");
    }
    let slot = slots.acquire(listener).await;
    if at_info {
        tracing::info!(%listener, "connection limit: accepting again");
    } else {
        tracing::debug!(%listener, "connection limit: accepting again");
    }
    slot
}

#[cfg(test)]
#[path = "listener_tests.rs"]
mod tests;
