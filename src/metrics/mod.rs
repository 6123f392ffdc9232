//! Prometheus metrics, named as the Prometheus JMX exporter names Kafka's MBeans
//! (`kafka_server_brokertopicmetrics_messagesin_total`, ...) so Kafka dashboards work with
//! few changes; the full mapping is in README ("Metrics").
//!
//! Two kinds, kept apart on purpose:
//! - Event counters and latency histograms ([`registry`]): recorded on the hot path through
//!   handles created once (per API, per topic via its partitions, per listener), each a
//!   relaxed atomic add: no lock, no lookup, no label formatting per request.
//! - State gauges (partitions, leaders, under-replicated, log sizes, Raft, groups and lag,
//!   ...) are computed from the broker's state when scraped ([`scrape`]), never maintained
//!   on the hot path.
//!
//! Counters live in one process-wide registry, as Kafka's Yammer registry does: parts deep
//! in the broker (ISR changes, waits) record without a handle threaded through them.
//!
//! - [`histogram`]: fixed-bucket latency histogram.
//! - [`exposition`]: the text format.
//! - [`request`]: per-request timing (queue, local, remote, send, total) and parked waits.
//! - [`scrape`]: renders everything for `/metrics`, and the HTTP routes.

pub mod exposition;
pub mod histogram;
pub mod request;
pub mod scrape;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, LazyLock, Mutex, Weak};

use kafka_protocol::messages::ApiKey;

use crate::server::budget::RequestBudget;
use histogram::Histogram;

/// Error codes counted per API: Kafka's run from -1 to a little over 130. A code outside
/// is counted as UNKNOWN_SERVER_ERROR (-1) rather than dropped.
const ERROR_CODE_MAX: i16 = 160;
const ERROR_SLOTS: usize = ERROR_CODE_MAX as usize + 2;

/// One API's request metrics (Kafka's `RequestMetrics` with `request=<name>`).
pub struct ApiMetrics {
    pub key: ApiKey,
    /// Kafka's request name (`Produce`, `ApiVersions`, ...).
    pub name: String,
    /// Requests by version, 0 to the highest served.
    requests: Box<[AtomicU64]>,
    /// Responses by error code (index code + 1).
    errors: Box<[AtomicU64]>,
    pub queue_time: Histogram,
    pub local_time: Histogram,
    pub remote_time: Histogram,
    pub send_time: Histogram,
    pub total_time: Histogram,
}

impl ApiMetrics {
    fn new(key: ApiKey, max_version: i16) -> ApiMetrics {
        ApiMetrics::named(key, &format!("{key:?}"), max_version)
    }

    fn named(key: ApiKey, name: &str, max_version: i16) -> ApiMetrics {
        ApiMetrics {
            key,
            name: name.to_string(),
            requests: (0..=max_version.max(0))
                .map(|_| AtomicU64::new(0))
                .collect(),
            errors: (0..ERROR_SLOTS).map(|_| AtomicU64::new(0)).collect(),
            queue_time: Histogram::default(),
            local_time: Histogram::default(),
            remote_time: Histogram::default(),
            send_time: Histogram::default(),
            total_time: Histogram::default(),
        }
    }

    pub fn count_request(&self, version: i16) {
        if let Some(counter) = usize::try_from(version)
            .ok()
            .and_then(|v| self.requests.get(v))
        {
            counter.fetch_add(1, Relaxed);
        }
    }

    /// Counts one error code in a response (0, NONE, is not counted).
    pub fn count_error(&self, code: i16) {
        if code == 0 {
            return;
        }
        let code = if (-1..=ERROR_CODE_MAX).contains(&code) {
            code
        } else {
            -1
        };
        self.errors[(code + 1) as usize].fetch_add(1, Relaxed);
    }

    /// (version, requests) for every version seen.
    pub fn requests(&self) -> impl Iterator<Item = (i16, u64)> + '_ {
        self.requests
            .iter()
            .enumerate()
            .map(|(version, count)| (version as i16, count.load(Relaxed)))
            .filter(|(_, count)| *count > 0)
    }

    /// (error code, responses) for every code seen.
    pub fn errors(&self) -> impl Iterator<Item = (i16, u64)> + '_ {
        self.errors
            .iter()
            .enumerate()
            .map(|(slot, count)| (slot as i16 - 1, count.load(Relaxed)))
            .filter(|(_, count)| *count > 0)
    }
}

/// Kafka's `BrokerTopicMetrics` for one topic. Partitions hold an `Arc` to it.
#[derive(Default)]
pub struct TopicMetrics {
    pub messages_in: AtomicU64,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    pub produce_requests: AtomicU64,
    pub fetch_requests: AtomicU64,
}

impl TopicMetrics {
    pub fn record_in(&self, bytes: usize, messages: u64) {
        self.bytes_in.fetch_add(bytes as u64, Relaxed);
        self.messages_in.fetch_add(messages, Relaxed);
        self.produce_requests.fetch_add(1, Relaxed);
    }

    pub fn record_out(&self, bytes: usize) {
        self.bytes_out.fetch_add(bytes as u64, Relaxed);
        self.fetch_requests.fetch_add(1, Relaxed);
    }
}

/// One client listener's connections (Kafka's `socket-server-metrics` per listener).
#[derive(Default)]
pub struct ListenerMetrics {
    pub connections: AtomicI64,
    pub accepted: AtomicU64,
    /// Closed at once for `max.connections.per.ip`.
    pub refused_per_ip: AtomicU64,
    /// Closed after a delay for the IP's `connection_creation_rate`.
    pub throttled_per_ip: AtomicU64,
    /// Time the acceptor waited for a slot or a creation rate (Kafka's
    /// `AcceptorBlockedPercent` meter counts the same nanoseconds).
    pub blocked_ns: AtomicU64,
}

impl ListenerMetrics {
    pub fn add_blocked(&self, blocked: std::time::Duration) {
        let nanos = u64::try_from(blocked.as_nanos()).unwrap_or(u64::MAX);
        self.blocked_ns.fetch_add(nanos, Relaxed);
    }
}

/// An open connection, counted while this lives.
pub struct ConnectionGauge(Arc<ListenerMetrics>);

impl ConnectionGauge {
    pub fn open(listener: &Arc<ListenerMetrics>) -> ConnectionGauge {
        listener.connections.fetch_add(1, Relaxed);
        listener.accepted.fetch_add(1, Relaxed);
        ConnectionGauge(listener.clone())
    }
}

impl Drop for ConnectionGauge {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Relaxed);
    }
}

/// The process-wide counters.
pub struct Registry {
    /// Indexed by api key; `None` for keys this broker does not serve.
    apis: Vec<Option<ApiMetrics>>,
    /// Fetch timing split by who fetched, as Kafka's `FetchConsumer` / `FetchFollower`.
    pub fetch_consumer: ApiMetrics,
    pub fetch_follower: ApiMetrics,
    topics: Mutex<BTreeMap<Arc<str>, Arc<TopicMetrics>>>,
    listeners: Mutex<BTreeMap<String, Arc<ListenerMetrics>>>,
    /// Follower fetch bytes served (Kafka's `ReplicationBytesOutPerSec`).
    pub replication_bytes_out: AtomicU64,
    /// ISR changes this broker made as leader (`ReplicaManager` `IsrShrinksPerSec`/`...Expands`).
    pub isr_shrinks: AtomicU64,
    pub isr_expands: AtomicU64,
    /// Requests parked in the produce (acks=all) and fetch (min.bytes) waits.
    pub parked_produce: AtomicI64,
    pub parked_fetch: AtomicI64,
    /// The `queued.max.request.bytes` budget, for its memory gauges.
    budget: Mutex<Option<Weak<RequestBudget>>>,
}

impl Registry {
    fn new() -> Registry {
        let key_max = crate::api::APIS
            .iter()
            .map(|api| api.key as i16)
            .max()
            .unwrap_or(0);
        let mut apis: Vec<Option<ApiMetrics>> = (0..=key_max).map(|_| None).collect();
        for api in crate::api::APIS {
            apis[api.key as i16 as usize] = Some(ApiMetrics::new(api.key, api.max_version));
        }
        let fetch_max = crate::api::find_api(ApiKey::Fetch as i16).map_or(0, |api| api.max_version);
        Registry {
            apis,
            fetch_consumer: ApiMetrics::named(ApiKey::Fetch, "FetchConsumer", fetch_max),
            fetch_follower: ApiMetrics::named(ApiKey::Fetch, "FetchFollower", fetch_max),
            topics: Mutex::default(),
            listeners: Mutex::default(),
            replication_bytes_out: AtomicU64::new(0),
            isr_shrinks: AtomicU64::new(0),
            isr_expands: AtomicU64::new(0),
            parked_produce: AtomicI64::new(0),
            parked_fetch: AtomicI64::new(0),
            budget: Mutex::default(),
        }
    }

    /// The API's metrics, by its key as it arrived on the wire.
    pub fn api(&self, api_key: i16) -> Option<&ApiMetrics> {
        self.apis.get(usize::try_from(api_key).ok()?)?.as_ref()
    }

    pub fn apis(&self) -> impl Iterator<Item = &ApiMetrics> {
        self.apis.iter().flatten()
    }

    /// The topic's handle, created on first use; call once per partition, not per request.
    pub fn topic(&self, topic: &Arc<str>) -> Arc<TopicMetrics> {
        let mut topics = self.topics.lock().unwrap_or_else(|p| p.into_inner());
        topics.entry(topic.clone()).or_default().clone()
    }

    pub fn topics(&self) -> Vec<(Arc<str>, Arc<TopicMetrics>)> {
        let topics = self.topics.lock().unwrap_or_else(|p| p.into_inner());
        topics
            .iter()
            .map(|(name, m)| (name.clone(), m.clone()))
            .collect()
    }

    /// The listener's handle, created on first use; once per accept loop.
    pub fn listener(&self, name: &str) -> Arc<ListenerMetrics> {
        let mut listeners = self.listeners.lock().unwrap_or_else(|p| p.into_inner());
        listeners.entry(name.to_string()).or_default().clone()
    }

    pub fn listeners(&self) -> Vec<(String, Arc<ListenerMetrics>)> {
        let listeners = self.listeners.lock().unwrap_or_else(|p| p.into_inner());
        listeners
            .iter()
            .map(|(name, m)| (name.clone(), m.clone()))
            .collect()
    }

    pub fn set_budget(&self, budget: &Arc<RequestBudget>) {
        *self.budget.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::downgrade(budget));
    }

    pub fn budget(&self) -> Option<Arc<RequestBudget>> {
        let budget = self.budget.lock().unwrap_or_else(|p| p.into_inner());
        budget.as_ref().and_then(Weak::upgrade)
    }
}

static REGISTRY: LazyLock<Registry> = LazyLock::new(Registry::new);

pub fn registry() -> &'static Registry {
    &REGISTRY
}

/// Counts an error code in a response of `api` (handlers that see per-partition codes).
pub fn count_error(api: ApiKey, code: i16) {
    if let Some(metrics) = registry().api(api as i16) {
        metrics.count_error(code);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_errors_count_per_version_and_code() {
        let metrics = ApiMetrics::new(ApiKey::Produce, 3);
        metrics.count_request(3);
        metrics.count_request(3);
        metrics.count_request(1);
        metrics.count_request(9); // beyond what is served: not counted, no panic
        metrics.count_request(-1);
        assert_eq!(metrics.requests().collect::<Vec<_>>(), vec![(1, 1), (3, 2)]);
        metrics.count_error(0);
        metrics.count_error(6);
        metrics.count_error(i16::MAX);
        metrics.count_error(-1);
        assert_eq!(metrics.errors().collect::<Vec<_>>(), vec![(-1, 2), (6, 1)]);
        assert_eq!(metrics.name, "Produce");
    }

    #[test]
    fn every_served_api_has_metrics() {
        for api in crate::api::APIS {
            let metrics = registry().api(api.key as i16).expect("registered");
            assert_eq!(metrics.key, api.key);
        }
        assert!(registry().api(-1).is_none());
        assert!(registry().api(i16::MAX).is_none());
    }
}
