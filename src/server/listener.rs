//! The accept loops, one per client listener. Takes already-bound listeners so tests can
//! use port 0.
//!
//! As Kafka's `Acceptor.accept` does, a loop accepts the socket first and only then waits
//! for a connection slot, holding the accepted socket: waiting for the slot before
//! `accept()` would make every idle listener hold a slot for a connection that does not
//! exist, shutting clients out of the others.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use super::Shutdown;
use super::budget::RequestBudget;
use super::connection::Connection;
use super::connection_quotas::{Admission, ConnectionQuotas};
use crate::broker::Broker;
use crate::client_quota::monotonic_ms;
use crate::config::connection_limits;

/// How long in-flight requests get to finish once shutdown starts.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// At most one info line per listener per this interval about entering and leaving the
/// limit: at the limit every close admits one waiting socket and blocks again, and that
/// churn would otherwise log two lines per connection. The rest go to debug.
const LIMIT_NOTICE_INTERVAL: Duration = Duration::from_secs(10);

/// Sockets refused for their IP's creation rate held open per listener at most (Kafka
/// holds any number); each holds a descriptor until its throttle time ends.
const THROTTLED_SOCKETS_MAX: usize = 1024;

/// A bound client listener and its name (`PLAINTEXT`, `EXTERNAL`, ...): requests accepted
/// on it are answered with every broker's endpoint on that same listener.
pub struct BoundListener {
    pub name: String,
    pub listener: TcpListener,
}

/// Serves every listener until shutdown. `max.connections` and `queued.max.request.bytes`
/// are broker-wide, as in Kafka: the listeners share one connection count
/// (`broker.connections`) and one budget. The inter-broker listener is not held back by
/// `max.connections` (KIP-402), but it does share the request budget: Kafka's listeners
/// share one memory pool, that one included.
pub async fn serve(listeners: Vec<BoundListener>, broker: Arc<Broker>, shutdown: Shutdown) {
    let names: Vec<&str> = listeners.iter().map(|bound| bound.name.as_str()).collect();
    let limits = broker.connections.limits();
    for unserved in connection_limits::unserved_listeners(&limits, &names) {
        tracing::warn!(
            listener = unserved,
            "a listener.name.<listener>.max.connection* limit names a listener this broker \
             does not serve to clients; it has no effect"
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
            let buffers = broker.config.socket_buffers;
            move |stream: TcpStream, peer: SocketAddr| {
                if let Err(error) = buffers.apply_accepted(&stream) {
                    tracing::warn!(%peer, %error, "could not set the socket's options");
                }
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
            broker.connections.clone(),
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
    let mut throttled = JoinSet::new();
    let mut notice = LimitNotice::default();
    loop {
        // Biased: once serving ends no connection is taken, even one ready at that moment.
        let accepted = tokio::select! {
            biased;
            _ = shutdown.triggered() => break,
            accepted = listener.accept() => accepted,
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
        // An IPv4 client of a listener bound to `::` arrives as `::ffff:a.b.c.d`: counted
        // and matched (overrides, ip quotas) as the IPv4 address it is, as Java does.
        let ip = peer.ip().to_canonical();
        // Holding the accepted socket while waiting, as Kafka does; later ones wait in
        // the kernel's backlog.
        let admission = tokio::select! {
            biased;
            _ = shutdown.triggered() => break,
            admission = next_admission(&slots, &name, ip, &mut notice, &gauge) => admission,
        };
        match admission {
            Admission::Admitted(permit) => {
                let connection = run(stream, peer);
                let open = crate::metrics::ConnectionGauge::open(&gauge);
                connections.spawn(async move {
                    connection.await;
                    drop((permit, open));
                });
            }
            Admission::TooManyFromIp { max } => {
                // Kafka's message; closed at once (dropped here).
                tracing::info!(
                    listener = %name,
                    "Rejected connection from {}, address already has the configured \
                     maximum of {max} connections.",
                    ip
                );
                gauge.refused_per_ip.fetch_add(1, Relaxed);
                drop(stream);
            }
            Admission::Throttled { delay_ms } => {
                gauge.throttled_per_ip.fetch_add(1, Relaxed);
                hold_then_close(&mut throttled, stream, peer, delay_ms);
            }
        }
        while connections.try_join_next().is_some() {}
        while throttled.try_join_next().is_some() {}
    }
    // Kafka's acceptor closes the throttled sockets it holds when it stops.
    throttled.shutdown().await;
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

/// Holds a socket refused for its IP's connection creation rate for `delay_ms`, then
/// closes it (Kafka's `throttledSockets`): the client sees its connection accepted but no
/// answer, and backs off. At most [`THROTTLED_SOCKETS_MAX`] are held per listener; past
/// that a refused socket is closed at once (a flood must not hold descriptors).
fn hold_then_close(
    throttled: &mut JoinSet<()>,
    stream: TcpStream,
    peer: SocketAddr,
    delay_ms: u64,
) {
    tracing::debug!(%peer, delay_ms, "delaying the close of a throttled connection");
    if throttled.len() >= THROTTLED_SOCKETS_MAX {
        return;
    }
    throttled.spawn(async move {
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        drop(stream);
    });
}

/// The admission of a connection from `ip` on `listener`: first the wait the broker and
/// listener creation rates impose (Kafka's acceptor sleeps it out, accepting nothing),
/// then a free slot, saying when the limits make it wait (see [`LIMIT_NOTICE_INTERVAL`]).
async fn next_admission(
    slots: &Arc<ConnectionQuotas>,
    listener: &Arc<str>,
    ip: IpAddr,
    notice: &mut LimitNotice,
    gauge: &crate::metrics::ListenerMetrics,
) -> Admission {
    let throttle_ms = slots.record_creation(listener, monotonic_ms());
    if throttle_ms > 0 {
        tracing::debug!(%listener, throttle_ms, "connection creation rate reached");
        let blocked = Instant::now();
        tokio::time::sleep(Duration::from_millis(throttle_ms)).await;
        gauge.add_blocked(blocked.elapsed());
    }
    if let Some(admission) = slots.try_admit(listener, ip, monotonic_ms()) {
        return admission;
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
    let blocked = Instant::now();
    let admission = slots.admit(listener, ip).await;
    gauge.add_blocked(blocked.elapsed());
    if at_info {
        tracing::info!(%listener, "connection limit: accepting again");
    } else {
        tracing::debug!(%listener, "connection limit: accepting again");
    }
    admission
}

#[cfg(test)]
#[path = "listener_tests.rs"]
mod tests;
