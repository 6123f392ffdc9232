//! Connection counting for `max.connections` and `listener.name.<l>.max.connections`, with
//! KIP-402's rule (Kafka's `ConnectionQuotas.connectionSlotAvailable`): every connection
//! counts toward the broker-wide total, but the inter-broker listener is not held back by
//! that total when the broker has more than one listener, so replication and controller
//! traffic still get in while clients fill the broker. A per-listener limit applies to
//! every listener, the inter-broker one included.
//!
//! A listener without a free slot holds the socket it just accepted and accepts no more
//! until a slot frees (as Kafka's acceptor waits in `ConnectionQuotas.inc`); later sockets
//! wait in the kernel's backlog.
//! SEAM(connection-eviction): Kafka also closes the least recently used connection of an
//! unprotected listener while the total exceeds `max.connections` (inter-broker
//! connections can push it over); we do not, so that overshoot lasts until clients leave.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::Notify;

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_listener: BTreeMap<Arc<str>, usize>,
}

#[derive(Debug)]
pub struct ConnectionQuotas {
    counts: Mutex<Counts>,
    freed: Notify,
    broker_max: usize,
    listener_max: BTreeMap<String, usize>,
    /// The inter-broker listener, when it is one of several (Kafka protects it only then:
    /// with one listener, exempting it would exempt everyone).
    protected: Option<String>,
}

/// One counted connection; dropping it frees the slot.
#[derive(Debug)]
pub struct ConnectionSlot {
    quotas: Arc<ConnectionQuotas>,
    listener: Arc<str>,
}

impl ConnectionQuotas {
    pub fn new(
        broker_max: usize,
        listener_max: BTreeMap<String, usize>,
        inter_broker_listener: &str,
        listener_names: &[&str],
    ) -> ConnectionQuotas {
        let protected = (listener_names.len() > 1
            && listener_names.contains(&inter_broker_listener))
        .then(|| inter_broker_listener.to_string());
        ConnectionQuotas {
            counts: Mutex::new(Counts::default()),
            freed: Notify::new(),
            broker_max,
            listener_max,
            protected,
        }
    }

    /// The listeners with a `listener.name.<l>.max.connections` that are not among
    /// `listener_names`: the limit has no effect, most likely a typo worth a warning.
    pub fn unserved_limits<'a>(
        limits: &'a BTreeMap<String, usize>,
        listener_names: &[&str],
    ) -> Vec<&'a str> {
        limits
            .keys()
            .map(String::as_str)
            .filter(|name| !listener_names.contains(name))
            .collect()
    }

    fn counts(&self) -> MutexGuard<'_, Counts> {
        // The counts stay consistent whatever panicked while holding the lock.
        self.counts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn slot_available(&self, counts: &Counts, listener: &str) -> bool {
        let on_listener = counts.per_listener.get(listener).copied().unwrap_or(0);
        let listener_max = self
            .listener_max
            .get(listener)
            .copied()
            .unwrap_or(usize::MAX);
        if on_listener >= listener_max {
            return false;
        }
        if self.protected.as_deref() == Some(listener) {
            return true;
        }
        counts.total < self.broker_max
    }

    /// A slot on `listener` now, or `None` when its limits are reached.
    pub fn try_acquire(self: &Arc<Self>, listener: &Arc<str>) -> Option<ConnectionSlot> {
        let mut counts = self.counts();
        if !self.slot_available(&counts, listener) {
            return None;
        }
        counts.total += 1;
        *counts.per_listener.entry(listener.clone()).or_insert(0) += 1;
        Some(ConnectionSlot {
            quotas: self.clone(),
            listener: listener.clone(),
        })
    }

    /// Waits for a slot on `listener`.
    pub async fn acquire(self: &Arc<Self>, listener: &Arc<str>) -> ConnectionSlot {
        loop {
            // Registered before the check, so a slot freed in between still wakes us.
            let freed = self.freed.notified();
            if let Some(slot) = self.try_acquire(listener) {
                return slot;
            }
            freed.await;
        }
    }

    /// Connections counted now: (broker-wide, on `listener`).
    pub fn open(&self, listener: &str) -> (usize, usize) {
        let counts = self.counts();
        let on_listener = counts.per_listener.get(listener).copied().unwrap_or(0);
        (counts.total, on_listener)
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        {
            let mut counts = self.quotas.counts();
            counts.total = counts.total.saturating_sub(1);
            if let Some(count) = counts.per_listener.get_mut(&self.listener) {
                *count = count.saturating_sub(1);
            }
        }
        self.quotas.freed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quotas(max: usize, limits: &[(&str, usize)], names: &[&str]) -> Arc<ConnectionQuotas> {
        let limits = limits.iter().map(|(n, m)| (n.to_string(), *m)).collect();
        Arc::new(ConnectionQuotas::new(max, limits, "INTERNAL", names))
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
    fn a_limit_on_a_listener_not_served_is_reported() {
        let limits = [("EXTERNAL".to_string(), 1), ("EXTRENAL".to_string(), 2)]
            .into_iter()
            .collect();
        let unserved = ConnectionQuotas::unserved_limits(&limits, &["EXTERNAL", "INTERNAL"]);
        assert_eq!(unserved, ["EXTRENAL"]);
    }

    #[test]
    fn a_zero_listener_limit_shuts_that_listener_only() {
        let quotas = quotas(10, &[("EXTERNAL", 0)], &["EXTERNAL", "INTERNAL"]);
        let (external, internal): (Arc<str>, Arc<str>) = ("EXTERNAL".into(), "INTERNAL".into());
        assert!(quotas.try_acquire(&external).is_none());
        assert!(quotas.try_acquire(&internal).is_some());
    }

    #[tokio::test]
    async fn a_waiting_accept_gets_the_slot_a_closed_connection_frees() {
        let quotas = quotas(1, &[], &["EXTERNAL", "INTERNAL"]);
        let external: Arc<str> = "EXTERNAL".into();
        let held = quotas.try_acquire(&external).unwrap();
        let waiter = {
            let (quotas, external) = (quotas.clone(), external.clone());
            tokio::spawn(async move { quotas.acquire(&external).await })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(held);
        let slot = tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("woken")
            .unwrap();
        assert_eq!(quotas.open("EXTERNAL"), (1, 1));
        drop(slot);
    }
}
