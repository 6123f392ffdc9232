//! The accept loops, one per client listener. Takes already-bound listeners so tests can
//! use port 0.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinSet;

use super::Shutdown;
use super::budget::RequestBudget;
use super::connection::Connection;
use super::connection_quotas::{ConnectionQuotas, ConnectionSlot};
use crate::broker::Broker;

/// How long in-flight requests get to finish once shutdown starts.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

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
    let budget = broker
        .config
        .queued_request_bytes_max
        .map(|bytes| Arc::new(RequestBudget::new(bytes)));
    if let Some(budget) = &budget {
        crate::metrics::registry().set_budget(budget);
    }
    let mut loops = JoinSet::new();
    for bound in listeners {
        loops.spawn(accept_loop(
            bound,
            broker.clone(),
            shutdown.clone(),
            slots.clone(),
            budget.clone(),
        ));
    }
    while loops.join_next().await.is_some() {}
}

async fn accept_loop(
    bound: BoundListener,
    broker: Arc<Broker>,
    mut shutdown: Shutdown,
    slots: Arc<ConnectionQuotas>,
    budget: Option<Arc<RequestBudget>>,
) {
    let BoundListener { name, listener } = bound;
    let name: Arc<str> = Arc::from(name);
    let gauge = crate::metrics::registry().listener(&name);
    let mut connections = JoinSet::new();
    loop {
        let permit = tokio::select! {
            permit = next_slot(&slots, &name) => permit,
            _ = shutdown.triggered() => break,
        };
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
        let _ = stream.set_nodelay(true);
        let connection = Connection::new(
            stream,
            peer,
            name.clone(),
            broker.clone(),
            shutdown.clone(),
            budget.clone(),
        );
        let open = crate::metrics::ConnectionGauge::open(&gauge);
        connections.spawn(async move {
            connection.run().await;
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

/// A connection slot on `listener`, saying once at info when the limits make it wait.
async fn next_slot(slots: &Arc<ConnectionQuotas>, listener: &Arc<str>) -> ConnectionSlot {
    if let Some(slot) = slots.try_acquire(listener) {
        return slot;
    }
    let (open, on_listener) = slots.open(listener);
    tracing::info!(
        %listener,
        open,
        on_listener,
        "connection limit reached; not accepting until a connection closes"
    );
    let slot = slots.acquire(listener).await;
    tracing::info!(%listener, "connection limit: accepting again");
    slot
}
