//! Connection admission, Kafka's `ConnectionQuotas`: counts for `max.connections` and
//! `listener.name.<l>.max.connections` with KIP-402's rule (`connectionSlotAvailable`):
//! every connection counts toward the broker-wide total, but the inter-broker listener is
//! not held back by that total when the broker has more than one listener, so replication
//! and controller traffic still get in while clients fill the broker. A per-listener limit
//! applies to every listener, the inter-broker one included.
//!
//! Then per client address: `max.connections.per.ip` (or its entry in
//! `max.connections.per.ip.overrides`) closes a connection over it at once, and the IP's
//! `connection_creation_rate` quota closes one over it after the throttle time
//! ([`connection_rates`](super::connection_rates), with the broker and listener creation
//! rates the acceptor waits out first).
//!
//! A listener without a free slot holds the socket it just accepted and accepts no more
//! until a slot frees (as Kafka's acceptor waits in `ConnectionQuotas.inc`); later sockets
//! wait in the kernel's backlog. Every limit may change at run time ([`update_limits`],
//! [`update_ip_quotas`]); a waiting acceptor re-checks at once.
//!
//! SEAM(connection-eviction): Kafka also closes the least recently used connection of an
//! unprotected listener while the total exceeds `max.connections` (inter-broker
//! connections, or a lowered limit, can push it over); we do not, so that overshoot lasts
//! until clients leave.
//! SEAM(listener-max-fallback): Kafka configures a listener's `max.connections` from the
//! broker-wide value when the listener has none of its own, which limits the protected
//! inter-broker listener by `max.connections` on its own count; here it is unlimited
//! unless `listener.name.<l>.max.connections` is set (the behaviour before this change).
//!
//! [`update_limits`]: ConnectionQuotas::update_limits
//! [`update_ip_quotas`]: ConnectionQuotas::update_ip_quotas

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::Notify;

use super::connection_rates::{ConnectionRates, IpQuotas};
use crate::client_quota::monotonic_ms;
use crate::client_quota::rate::RateConfig;
use crate::config::connection_limits::ConnectionLimits;
use crate::controller::client_quotas::ClientQuotas;

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_listener: BTreeMap<Arc<str>, usize>,
    per_ip: HashMap<IpAddr, usize>,
}

#[derive(Debug)]
struct State {
    counts: Counts,
    limits: ConnectionLimits,
    /// `max.connections.per.ip.overrides` with host names resolved.
    per_ip_overrides: HashMap<IpAddr, usize>,
    rates: ConnectionRates,
}

#[derive(Debug)]
pub struct ConnectionQuotas {
    state: Mutex<State>,
    freed: Notify,
    /// The inter-broker listener, when it is one of several (Kafka protects it only then:
    /// with one listener, exempting it would exempt everyone).
    protected: Option<String>,
}

/// One counted connection; dropping it frees the slot.
#[derive(Debug)]
pub struct ConnectionSlot {
    quotas: Arc<ConnectionQuotas>,
    listener: Arc<str>,
    ip: IpAddr,
}

/// What becomes of an accepted socket.
#[derive(Debug)]
pub enum Admission {
    Admitted(ConnectionSlot),
    /// Over `max.connections.per.ip` (or its override): closed at once, as Kafka's
    /// `TooManyConnectionsException`.
    TooManyFromIp {
        max: usize,
    },
    /// Over the IP's `connection_creation_rate`: held this long, then closed, as Kafka's
    /// `ConnectionThrottledException`, so the client backs off before reconnecting.
    Throttled {
        delay_ms: u64,
    },
}

impl ConnectionQuotas {
    pub fn new(
        limits: ConnectionLimits,
        per_ip_overrides: HashMap<IpAddr, usize>,
        rate_config: RateConfig,
        inter_broker_listener: &str,
        listener_names: &[&str],
    ) -> ConnectionQuotas {
        let protected = (listener_names.len() > 1
            && listener_names.contains(&inter_broker_listener))
        .then(|| inter_broker_listener.to_string());
        ConnectionQuotas {
            state: Mutex::new(State {
                counts: Counts::default(),
                limits,
                per_ip_overrides,
                rates: ConnectionRates::new(rate_config, monotonic_ms()),
            }),
            freed: Notify::new(),
            protected,
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // The counts stay consistent whatever panicked while holding the lock.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn is_protected(&self, listener: &str) -> bool {
        self.protected.as_deref() == Some(listener)
    }

    /// Applies new limits; an acceptor waiting for a slot re-checks at once (Kafka's
    /// `updateBrokerMaxConnections` notifies its waiters). Connections already open stay.
    /// `per_ip_overrides` resolved anew, or `None` when they did not change.
    pub fn update_limits(
        &self,
        limits: ConnectionLimits,
        per_ip_overrides: Option<HashMap<IpAddr, usize>>,
    ) {
        {
            let mut state = self.state();
            tracing::info!(?limits, "connection limits updated");
            state.limits = limits;
            if let Some(overrides) = per_ip_overrides {
                state.per_ip_overrides = overrides;
            }
        }
        self.freed.notify_waiters();
    }

    /// Puts in place the overrides `resolved` from `wanted` (host names looked up off the
    /// reconciler), unless the limits moved on to other overrides meanwhile.
    pub fn set_resolved_overrides(
        &self,
        wanted: &BTreeMap<String, usize>,
        resolved: HashMap<IpAddr, usize>,
    ) {
        {
            let mut state = self.state();
            if state.limits.per_ip_overrides != *wanted {
                return;
            }
            state.per_ip_overrides = resolved;
        }
        self.freed.notify_waiters();
    }

    /// Applies the image's `connection_creation_rate` ip quotas; rates measured so far
    /// are kept.
    pub fn update_ip_quotas(&self, quotas: &ClientQuotas) {
        let ip_quotas = IpQuotas::from_image(quotas);
        let mut state = self.state();
        if *state.rates.ip_quotas() != ip_quotas {
            tracing::info!(?ip_quotas, "ip connection creation rate quotas updated");
            state.rates.set_ip_quotas(ip_quotas);
        }
    }

    /// The limits applied now.
    pub fn limits(&self) -> ConnectionLimits {
        self.state().limits.clone()
    }

    fn slot_available(&self, state: &State, listener: &str) -> bool {
        let on_listener = state
            .counts
            .per_listener
            .get(listener)
            .copied()
            .unwrap_or(0);
        let listener_max = (state.limits.listener_connections_max.get(listener))
            .copied()
            .unwrap_or(usize::MAX);
        if on_listener >= listener_max {
            return false;
        }
        if self.is_protected(listener) {
            return true;
        }
        state.counts.total < state.limits.connections_max
    }

    /// Records a new connection on `listener` against the creation rates and returns how
    /// long the acceptor must wait before admitting it.
    pub fn record_creation(&self, listener: &str, now_ms: u64) -> u64 {
        let protected = self.is_protected(listener);
        let mut state = self.state();
        let broker_max = state.limits.creation_rate_max;
        let listener_max = state.limits.listener_rate_max(listener);
        (state.rates).record_listener(listener, protected, broker_max, listener_max, now_ms)
    }

    /// The connection from `ip` on `listener` admitted or refused now; `None` while the
    /// listener has no free slot (Kafka checks the IP only once a slot is there).
    pub fn try_admit(
        self: &Arc<Self>,
        listener: &Arc<str>,
        ip: IpAddr,
        now_ms: u64,
    ) -> Option<Admission> {
        let mut state = self.state();
        if !self.slot_available(&state, listener) {
            return None;
        }
        let protected = self.is_protected(listener);
        let delay_ms = state.rates.record_ip(ip, listener, protected, now_ms);
        if delay_ms > 0 {
            return Some(Admission::Throttled { delay_ms });
        }
        let from_ip = state.counts.per_ip.get(&ip).copied().unwrap_or(0);
        let max = (state.per_ip_overrides.get(&ip).copied()).unwrap_or(state.limits.per_ip_max);
        if from_ip >= max {
            return Some(Admission::TooManyFromIp { max });
        }
        let counts = &mut state.counts;
        counts.total += 1;
        *counts.per_listener.entry(listener.clone()).or_insert(0) += 1;
        *counts.per_ip.entry(ip).or_insert(0) += 1;
        Some(Admission::Admitted(ConnectionSlot {
            quotas: self.clone(),
            listener: listener.clone(),
            ip,
        }))
    }

    /// Waits for a slot on `listener`, then admits or refuses the connection from `ip`.
    pub async fn admit(self: &Arc<Self>, listener: &Arc<str>, ip: IpAddr) -> Admission {
        loop {
            // Registered before the check, so a slot freed in between still wakes us.
            let freed = self.freed.notified();
            if let Some(admission) = self.try_admit(listener, ip, monotonic_ms()) {
                return admission;
            }
            freed.await;
        }
    }

    /// Connections counted now: (broker-wide, on `listener`).
    pub fn open(&self, listener: &str) -> (usize, usize) {
        let state = self.state();
        let on_listener = state
            .counts
            .per_listener
            .get(listener)
            .copied()
            .unwrap_or(0);
        (state.counts.total, on_listener)
    }

    /// Connections counted now from `ip`.
    pub fn open_from(&self, ip: IpAddr) -> usize {
        self.state().counts.per_ip.get(&ip).copied().unwrap_or(0)
    }

    /// Connections per second accepted on `listener` (for metrics).
    pub fn creation_rate(&self, listener: &str) -> f64 {
        self.state().rates.listener_rate(listener, monotonic_ms())
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        {
            let mut state = self.quotas.state();
            let counts = &mut state.counts;
            counts.total = counts.total.saturating_sub(1);
            if let Some(count) = counts.per_listener.get_mut(&self.listener) {
                *count = count.saturating_sub(1);
            }
            if let Some(count) = counts.per_ip.get_mut(&self.ip) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    counts.per_ip.remove(&self.ip);
                }
            }
        }
        self.quotas.freed.notify_waiters();
    }
}

/// `max.connections.per.ip.overrides` by address: an IP literal as is, a host name as
/// every address it resolves to now (Kafka takes the first of `InetAddress.getByName`;
/// all of them is what an operator naming a host means). A name that does not resolve is
/// skipped with a warning. Blocking: call off the async workers.
/// The overrides given as IP addresses, without any lookup.
pub fn literal_overrides(overrides: &BTreeMap<String, usize>) -> HashMap<IpAddr, usize> {
    (overrides.iter())
        .filter_map(|(host, max)| Some((host.parse::<IpAddr>().ok()?, *max)))
        .collect()
}

/// Whether some override names a host rather than an address (a lookup is needed).
pub fn names_hosts(overrides: &BTreeMap<String, usize>) -> bool {
    overrides.keys().any(|host| host.parse::<IpAddr>().is_err())
}

pub fn resolve_overrides(overrides: &BTreeMap<String, usize>) -> HashMap<IpAddr, usize> {
    use std::net::ToSocketAddrs;
    let mut resolved = literal_overrides(overrides);
    for (host, max) in overrides {
        if host.parse::<IpAddr>().is_ok() {
            continue;
        }
        match (host.as_str(), 0).to_socket_addrs() {
            Ok(addresses) => {
                for address in addresses {
                    resolved.entry(address.ip()).or_insert(*max);
                }
            }
            Err(error) => tracing::warn!(
                host,
                %error,
                "max.connections.per.ip.overrides names a host that does not resolve; \
                 its override is not applied"
            ),
        }
    }
    resolved
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::connection_limits::UNLIMITED;

    const CLIENT: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));

    fn limits(max: usize, listener_max: &[(&str, usize)]) -> ConnectionLimits {
        ConnectionLimits {
            connections_max: max,
            listener_connections_max: (listener_max.iter())
                .map(|(name, max)| (name.to_string(), *max))
                .collect(),
            ..ConnectionLimits::default()
        }
    }

    fn quotas(max: usize, listener_max: &[(&str, usize)], names: &[&str]) -> Arc<ConnectionQuotas> {
        let limits = limits(max, listener_max);
        Arc::new(ConnectionQuotas::new(
            limits,
            HashMap::new(),
            RateConfig::default(),
            "INTERNAL",
            names,
        ))
    }

    impl ConnectionQuotas {
        /// A slot for a connection from `CLIENT`, when admitted.
        fn try_acquire(self: &Arc<Self>, listener: &Arc<str>) -> Option<ConnectionSlot> {
            self.try_acquire_from(listener, CLIENT)
        }

        fn try_acquire_from(
            self: &Arc<Self>,
            listener: &Arc<str>,
            ip: IpAddr,
        ) -> Option<ConnectionSlot> {
            match self.try_admit(listener, ip, 0)? {
                Admission::Admitted(slot) => Some(slot),
                _ => None,
            }
        }
    }

    #[test]
    fn the_inter_broker_listener_is_not_held_back_by_the_broker_wide_limit() {
        let quotas = quotas(2, &[], &["EXTERNAL", "INTERNAL"]);
        let (external, internal): (Arc<str>, Arc<str>) = ("EXTERNAL".into(), "INTERNAL".into());
        let clients: Vec<_> = (0..2)
            .map(|_| quotas.try_acquire(&external).unwrap())
            .collect();
        assert!(quotas.try_acquire(&external).is_none());
        let brokers: Vec<_> = (0..3)
            .map(|_| quotas.try_acquire(&internal).unwrap())
            .collect();
        // Inter-broker connections count toward the total, so clients stay out...
        assert_eq!(quotas.open("INTERNAL"), (5, 3));
        drop(clients);
        assert!(quotas.try_acquire(&external).is_none());
        // ...until the total is below the limit again.
        drop(brokers);
        assert!(quotas.try_acquire(&external).is_some());
        assert_eq!(quotas.open("EXTERNAL"), (0, 0));
        assert_eq!(quotas.open_from(CLIENT), 0);
    }

    #[test]
    fn with_one_listener_the_inter_broker_listener_is_limited_like_any_other() {
        let quotas = quotas(1, &[], &["INTERNAL"]);
        let internal: Arc<str> = "INTERNAL".into();
        let _first = quotas.try_acquire(&internal).unwrap();
        assert!(quotas.try_acquire(&internal).is_none());
    }

    #[test]
    fn a_per_listener_limit_applies_to_the_inter_broker_listener_too() {
        let quotas = quotas(
            100,
            &[("INTERNAL", 1), ("EXTERNAL", 2)],
            &["EXTERNAL", "INTERNAL"],
        );
        let (external, internal): (Arc<str>, Arc<str>) = ("EXTERNAL".into(), "INTERNAL".into());
        let _broker = quotas.try_acquire(&internal).unwrap();
        assert!(quotas.try_acquire(&internal).is_none());
        let _a = quotas.try_acquire(&external).unwrap();
        let _b = quotas.try_acquire(&external).unwrap();
        assert!(quotas.try_acquire(&external).is_none());
    }

    #[test]
    fn a_zero_listener_limit_shuts_that_listener_only() {
        let quotas = quotas(10, &[("EXTERNAL", 0)], &["EXTERNAL", "INTERNAL"]);
        let (external, internal): (Arc<str>, Arc<str>) = ("EXTERNAL".into(), "INTERNAL".into());
        assert!(quotas.try_acquire(&external).is_none());
        assert!(quotas.try_acquire(&internal).is_some());
    }

    #[test]
    fn an_ip_over_its_limit_is_refused_and_an_override_raises_or_lowers_it() {
        let quotas = quotas(100, &[], &["EXTERNAL"]);
        let external: Arc<str> = "EXTERNAL".into();
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        let overrides = HashMap::from([(other, 3)]);
        let per_ip = ConnectionLimits {
            per_ip_max: 1,
            ..quotas.limits()
        };
        quotas.update_limits(per_ip, Some(overrides));
        let _one = quotas.try_acquire(&external).unwrap();
        let refused = quotas.try_admit(&external, CLIENT, 0).unwrap();
        assert!(
            matches!(refused, Admission::TooManyFromIp { max: 1 }),
            "{refused:?}"
        );
        // A refused connection takes no slot.
        assert_eq!(quotas.open("EXTERNAL"), (1, 1));
        let others: Vec<_> = (0..3)
            .map(|_| quotas.try_acquire_from(&external, other).unwrap())
            .collect();
        assert!(quotas.try_acquire_from(&external, other).is_none());
        assert_eq!(quotas.open_from(other), 3);
        drop(others);
        assert_eq!(quotas.open_from(other), 0);
    }

    #[test]
    fn an_ip_over_its_creation_rate_is_throttled_without_a_slot() {
        let quotas = quotas(100, &[], &["EXTERNAL"]);
        let external: Arc<str> = "EXTERNAL".into();
        let entity = crate::controller::client_quotas::QuotaEntity {
            ip: Some(crate::controller::client_quotas::QuotaName::Named(
                CLIENT.to_string(),
            )),
            ..Default::default()
        };
        let image: ClientQuotas = [(
            entity,
            [("connection_creation_rate".to_string(), 1.0)].into(),
        )]
        .into();
        quotas.update_ip_quotas(&image);
        let admitted: Vec<_> = (0..10)
            .map(|_| quotas.try_acquire(&external).unwrap())
            .collect();
        let throttled = quotas.try_admit(&external, CLIENT, 0).unwrap();
        assert!(matches!(throttled, Admission::Throttled { delay_ms } if delay_ms > 0));
        assert_eq!(quotas.open_from(CLIENT), 10);
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        assert!(quotas.try_acquire_from(&external, other).is_some());
        drop(admitted);
    }

    #[test]
    fn creation_rates_apply_live() {
        let quotas = quotas(100, &[], &["EXTERNAL", "INTERNAL"]);
        for _ in 0..50 {
            assert_eq!(quotas.record_creation("EXTERNAL", 0), 0);
        }
        let limited = ConnectionLimits {
            creation_rate_max: 2,
            ..quotas.limits()
        };
        quotas.update_limits(limited, None);
        assert!(quotas.record_creation("EXTERNAL", 0) > 0);
        // The protected listener has its own rate only, the broker-wide one by default.
        assert!(quotas.record_creation("INTERNAL", 0) == 0);
        let unlimited = ConnectionLimits {
            creation_rate_max: UNLIMITED,
            ..quotas.limits()
        };
        quotas.update_limits(unlimited, None);
        assert_eq!(quotas.record_creation("EXTERNAL", 0), 0);
    }

    /// An accept of `CLIENT` on `listener` waiting for its admission, as a task.
    fn spawn_admit(
        quotas: &Arc<ConnectionQuotas>,
        listener: &Arc<str>,
    ) -> tokio::task::JoinHandle<Admission> {
        let (quotas, listener) = (quotas.clone(), listener.clone());
        tokio::spawn(async move { quotas.admit(&listener, CLIENT).await })
    }

    #[tokio::test]
    async fn a_waiting_accept_gets_the_slot_a_closed_connection_frees() {
        let quotas = quotas(1, &[], &["EXTERNAL", "INTERNAL"]);
        let external: Arc<str> = "EXTERNAL".into();
        let held = quotas.try_acquire(&external).unwrap();
        let waiter = spawn_admit(&quotas, &external);
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(held);
        let admission = tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("woken")
            .unwrap();
        assert!(matches!(admission, Admission::Admitted(_)));
        assert_eq!(quotas.open("EXTERNAL"), (1, 1));
    }

    #[tokio::test]
    async fn a_raised_limit_wakes_a_waiting_accept() {
        let quotas = quotas(1, &[], &["EXTERNAL", "INTERNAL"]);
        let external: Arc<str> = "EXTERNAL".into();
        let _held = quotas.try_acquire(&external).unwrap();
        let waiter = spawn_admit(&quotas, &external);
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        quotas.update_limits(limits(2, &[]), None);
        let admission = tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("woken")
            .unwrap();
        assert!(matches!(admission, Admission::Admitted(_)));
    }

    #[test]
    fn overrides_resolve_literals_and_names() {
        let overrides = [("127.0.0.1".to_string(), 5), ("::1".to_string(), 6)].into();
        let resolved = resolve_overrides(&overrides);
        assert_eq!(resolved[&"127.0.0.1".parse::<IpAddr>().unwrap()], 5);
        assert_eq!(resolved[&"::1".parse::<IpAddr>().unwrap()], 6);
        assert_eq!(resolved.len(), 2);
        // A name from the hosts file, so the test needs no DNS.
        let by_name = resolve_overrides(&[("localhost".to_string(), 4)].into());
        assert!(by_name.values().all(|max| *max == 4) && !by_name.is_empty());
        // Without a lookup: the addresses alone, and whether a name needs one.
        let mixed: BTreeMap<String, usize> =
            [("10.0.0.1".to_string(), 2), ("localhost".to_string(), 4)].into();
        assert_eq!(literal_overrides(&mixed).len(), 1);
        assert!(names_hosts(&mixed) && !names_hosts(&overrides));
    }
}
