//! Per-request timing, split as Kafka's `RequestMetrics` splits it:
//! - queue: from the whole frame being in memory to its handling starting. A connection
//!   here handles its requests one at a time as they are read (Kafka's muted channel),
//!   with no shared request queue, so this stays near zero; it is kept for dashboards.
//! - remote: time parked in the produce (acks=all) and fetch (min.bytes) waits, Kafka's
//!   purgatory, measured by [`Parked`] guards;
//! - local: the rest of the handling (decode, append or read, encode); the request-time
//!   quota counts instead the time spent inside the handler's polls ([`busy_so_far`]),
//!   which also leaves out waits for Raft, rebalances and markers;
//! - send: handing the response to the connection's write buffer (and the socket when
//!   the buffer fills);
//! - total: all of the above.
//!
//! The remote time is collected through a task-local set up around the handler by
//! [`with_request_scope`], so the waits deep in the handlers need no handle passed down.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use super::{ApiMetrics, registry};
use crate::api::ApiError;

/// What the handler tells the timer beyond the api key.
#[derive(Default)]
pub struct RequestScope {
    remote: Cell<Duration>,
    /// Time spent inside the handler's polls (work, not waiting), finished polls only.
    busy: Cell<Duration>,
    /// When the poll under way started.
    poll_started: Cell<Option<Instant>>,
    /// Fetch only: whether a follower sent it (Kafka's FetchFollower vs FetchConsumer).
    from_follower: Cell<Option<bool>>,
    /// How long the connection must hold the client for its quotas (KIP-219), in ms.
    throttle_ms: Cell<u64>,
}

impl RequestScope {
    pub fn throttle_ms(&self) -> u64 {
        self.throttle_ms.get()
    }
}

tokio::task_local! {
    static SCOPE: RequestScope;
}

/// Runs `handling` with a fresh scope; returns its output with what it recorded. Each
/// poll of `handling` is timed (two clock reads), so [`busy_so_far`] knows the time the
/// request kept a thread busy, as Kafka's request quota counts thread time.
///
/// The caller pins the handler: taken by value, the handler future was stored again in
/// this future and in the task-local scope's, three copies of a multi-KB future in every
/// connection task (measured: 35 KiB per idle connection before, 19 KiB after, with the
/// rarely used APIs boxed in `api::handle_frame_on`).
pub async fn with_request_scope<F: Future>(mut handling: Pin<&mut F>) -> (F::Output, RequestScope) {
    SCOPE
        .scope(RequestScope::default(), async move {
            let output = std::future::poll_fn(|context| {
                let started = Instant::now();
                SCOPE.with(|scope| scope.poll_started.set(Some(started)));
                let poll = handling.as_mut().poll(context);
                SCOPE.with(|scope| {
                    scope.poll_started.set(None);
                    scope.busy.set(scope.busy.get() + started.elapsed());
                });
                poll
            })
            .await;
            let scope = SCOPE.with(|scope| RequestScope {
                remote: Cell::new(scope.remote.get()),
                busy: Cell::new(scope.busy.get()),
                poll_started: Cell::new(None),
                from_follower: Cell::new(scope.from_follower.get()),
                throttle_ms: Cell::new(scope.throttle_ms.get()),
            });
            (output, scope)
        })
        .await
}

/// The time the request being handled has spent in its handler's polls so far, the poll
/// under way included: its work, without the time it waited (for a Raft commit, a
/// rebalance, a replica, a marker write).
pub fn busy_so_far() -> Duration {
    SCOPE
        .try_with(|scope| {
            let current = scope
                .poll_started
                .get()
                .map_or(Duration::ZERO, |start| start.elapsed());
            scope.busy.get() + current
        })
        .unwrap_or(Duration::ZERO)
}

/// Marks the Fetch being handled as a follower's (`true`) or a consumer's.
pub fn mark_fetch_from_follower(follower: bool) {
    let _ = SCOPE.try_with(|scope| scope.from_follower.set(Some(follower)));
}

/// Whether the Fetch being handled is a follower's.
pub fn is_follower_fetch() -> bool {
    SCOPE
        .try_with(|scope| scope.from_follower.get() == Some(true))
        .unwrap_or(false)
}

/// Asks the connection to hold the client for `throttle_ms` (the largest asked wins).
pub fn set_throttle_ms(throttle_ms: u64) {
    let _ = SCOPE.try_with(|scope| {
        scope
            .throttle_ms
            .set(scope.throttle_ms.get().max(throttle_ms))
    });
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delayed {
    Produce,
    Fetch,
}

/// A request parked in a wait: counted in the purgatory gauge while this lives, and its
/// time added to the request's remote time when dropped.
pub struct Parked {
    kind: Delayed,
    since: Instant,
}

impl Parked {
    pub fn new(kind: Delayed) -> Parked {
        parked_gauge(kind).fetch_add(1, Relaxed);
        Parked {
            kind,
            since: Instant::now(),
        }
    }
}

impl Drop for Parked {
    fn drop(&mut self) {
        parked_gauge(self.kind).fetch_sub(1, Relaxed);
        let waited = self.since.elapsed();
        let _ = SCOPE.try_with(|scope| scope.remote.set(scope.remote.get() + waited));
    }
}

fn parked_gauge(kind: Delayed) -> &'static std::sync::atomic::AtomicI64 {
    match kind {
        Delayed::Produce => &registry().parked_produce,
        Delayed::Fetch => &registry().parked_fetch,
    }
}

/// Times one request from the moment its frame is complete.
pub struct RequestTimer {
    api: Option<&'static ApiMetrics>,
    version: i16,
    received: Instant,
    handling: Instant,
}

impl RequestTimer {
    /// Reads the api key and version from the frame (without its size prefix); a frame
    /// too short or of an unknown API is timed by nobody (the connection closes on it).
    pub fn start(frame: &[u8]) -> RequestTimer {
        let received = Instant::now();
        let (api, version) = match frame {
            [k0, k1, v0, v1, ..] => (
                registry().api(i16::from_be_bytes([*k0, *k1])),
                i16::from_be_bytes([*v0, *v1]),
            ),
            _ => (None, -1),
        };
        RequestTimer {
            api,
            version,
            received,
            handling: Instant::now(),
        }
    }

    /// The request failed as a whole (the connection closes): counted as an error.
    pub fn failed(&self, error: &ApiError) {
        if let Some(api) = self.api {
            api.count_request(self.version);
            api.count_error(api_error_code(error));
        }
    }

    /// Handling ended at `handled` and the response (if any) was written after it.
    pub fn finish(self, handled: Instant, scope: &RequestScope) {
        let Some(api) = self.api else { return };
        let sent = Instant::now();
        let remote = scope.remote.get();
        let local = handled.duration_since(self.handling).saturating_sub(remote);
        let fetch = match scope.from_follower.get() {
            Some(true) => Some(&registry().fetch_follower),
            Some(false) => Some(&registry().fetch_consumer),
            None => None,
        };
        api.count_request(self.version);
        for metrics in std::iter::once(api).chain(fetch) {
            metrics
                .queue_time
                .record(self.handling.duration_since(self.received));
            metrics.local_time.record(local);
            metrics.remote_time.record(remote);
            metrics.send_time.record(sent.duration_since(handled));
            metrics
                .total_time
                .record(sent.duration_since(self.received));
        }
        if let Some(fetch) = fetch {
            fetch.count_request(self.version);
        }
    }
}

/// The Kafka code a request that failed as a whole stands for.
fn api_error_code(error: &ApiError) -> i16 {
    match error {
        ApiError::UnsupportedVersion { .. } => 35, // UNSUPPORTED_VERSION
        ApiError::ShortFrame(_) | ApiError::Decode { .. } => 42, // INVALID_REQUEST
        ApiError::UnknownApiKey(_) | ApiError::Encode { .. } | ApiError::ReadRecords(_) => -1, // UNKNOWN_SERVER_ERROR
    }
}

#[cfg(test)]
mod tests {
    use std::pin::pin;

    use super::*;

    #[tokio::test]
    async fn busy_time_counts_polls_not_waiting() {
        let (busy, scope) = with_request_scope(pin!(async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let spin_until = Instant::now() + Duration::from_millis(20);
            while Instant::now() < spin_until {
                std::hint::spin_loop();
            }
            busy_so_far()
        }))
        .await;
        // The spin counts (the poll under way included); the 300 ms asleep do not (the
        // bound leaves room for a loaded machine descheduling the spin).
        assert!(busy >= Duration::from_millis(20), "{busy:?}");
        assert!(busy < Duration::from_millis(250), "{busy:?}");
        assert!(scope.busy.get() >= busy);
        assert_eq!(busy_so_far(), Duration::ZERO, "outside a request");
    }

    #[tokio::test]
    async fn parked_time_is_the_remote_time_of_the_request() {
        let ((), scope) = with_request_scope(pin!(async {
            let parked = Parked::new(Delayed::Fetch);
            tokio::time::sleep(Duration::from_millis(20)).await;
            drop(parked);
            mark_fetch_from_follower(true);
        }))
        .await;
        assert!(
            scope.remote.get() >= Duration::from_millis(20),
            "{:?}",
            scope.remote
        );
        assert_eq!(scope.from_follower.get(), Some(true));
        let ((), scope) = with_request_scope(pin!(async {})).await;
        assert_eq!(scope.remote.get(), Duration::ZERO);
        assert_eq!(scope.from_follower.get(), None);
        // Outside any request a guard still counts the wait and charges nobody.
        drop(Parked::new(Delayed::Produce));
    }

    #[test]
    fn a_timer_reads_the_api_from_the_frame() {
        let produce = RequestTimer::start(&[0, 0, 0, 9, 0, 0, 0, 1]);
        assert_eq!(
            produce.api.map(|api| api.key),
            Some(kafka_protocol::messages::ApiKey::Produce)
        );
        assert_eq!(produce.version, 9);
        assert!(RequestTimer::start(&[0, 0]).api.is_none());
        assert!(RequestTimer::start(&[0x7f, 0, 0, 0]).api.is_none());
    }
}
