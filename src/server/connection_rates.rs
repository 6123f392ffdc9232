//! KIP-612 connection creation rates, measured as Kafka's `ConnectionQuotas` sensors measure
//! them (windowed rates over `quota.window.num` x `quota.window.size.seconds`):
//! - broker-wide `max.connection.creation.rate` (the protected inter-broker listener does
//!   not count toward it, KIP-402's rule) and per listener
//!   `listener.name.<l>.max.connection.creation.rate`: over either, the acceptor waits the
//!   throttle time before it takes the connection;
//! - per IP, the `connection_creation_rate` client quota of the ip entity, else of the
//!   default ip entity: a connection over it is accepted and closed after the throttle time,
//!   and counts toward none of the rates (Kafka un-records it everywhere).
//!
//! Every throttle is capped at one quota window, as Kafka's `maxThrottleTimeMs`. Pure: the
//! caller passes the time.

use std::collections::HashMap;
use std::net::IpAddr;

use crate::client_quota::bounded::Bounded;
use crate::client_quota::rate::{RateConfig, SampledRate, throttle_ms};
use crate::config::connection_limits::UNLIMITED;
use crate::controller::client_quotas::{CONNECTION_CREATION_RATE, ClientQuotas, QuotaName};

/// Per-IP rates kept at most; idle ones go first when full. Source addresses are the
/// client's to choose, so their number must not grow memory without bound.
pub const IP_RATES_MAX: usize = 100_000;

/// The `connection_creation_rate` quotas of the image's ip entities.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct IpQuotas {
    default: Option<f64>,
    by_ip: HashMap<IpAddr, f64>,
}

impl IpQuotas {
    pub fn from_image(quotas: &ClientQuotas) -> IpQuotas {
        let mut ip_quotas = IpQuotas::default();
        for (entity, values) in quotas {
            let (Some(ip), Some(rate)) = (&entity.ip, values.get(CONNECTION_CREATION_RATE)) else {
                continue;
            };
            match ip {
                QuotaName::Default => ip_quotas.default = Some(*rate),
                // Named ip entities are validated as addresses when altered.
                QuotaName::Named(name) => {
                    if let Ok(address) = name.parse() {
                        ip_quotas.by_ip.insert(address, *rate);
                    }
                }
            }
        }
        ip_quotas
    }

    /// Kafka's `connectionRateForIp`: the ip's own quota, else the default ip entity's;
    /// `None` when neither limits it (Kafka's `Int.MaxValue` means no quota).
    pub fn quota(&self, ip: IpAddr) -> Option<f64> {
        let quota = self.by_ip.get(&ip).copied().or(self.default)?;
        (quota < UNLIMITED as f64).then_some(quota)
    }

    pub fn is_empty(&self) -> bool {
        self.default.is_none() && self.by_ip.is_empty()
    }
}

#[derive(Debug)]
pub struct ConnectionRates {
    config: RateConfig,
    broker: SampledRate,
    listeners: HashMap<String, SampledRate>,
    ip_quotas: IpQuotas,
    ips: Bounded<IpAddr, SampledRate>,
}

impl ConnectionRates {
    pub fn new(config: RateConfig, now_ms: u64) -> ConnectionRates {
        ConnectionRates {
            config,
            broker: SampledRate::new(config, now_ms),
            listeners: HashMap::new(),
            ip_quotas: IpQuotas::default(),
            ips: Bounded::new(IP_RATES_MAX),
        }
    }

    /// Kafka's `maxThrottleTimeMs`: one quota window.
    fn throttle_ms_max(&self) -> u64 {
        self.config.window_ms
    }

    pub fn set_ip_quotas(&mut self, quotas: IpQuotas) {
        self.ip_quotas = quotas;
    }

    pub fn ip_quotas(&self) -> &IpQuotas {
        &self.ip_quotas
    }

    /// Records one more connection against `rate` and returns how long to wait for the
    /// rate to fall back to `bound` (Kafka's `recordAndGetThrottleTimeMs`).
    fn record_and_throttle(rate: &mut SampledRate, bound: f64, cap_ms: u64, now_ms: u64) -> u64 {
        rate.record(1.0, now_ms);
        if bound <= 0.0 {
            // A rate of 0: every connection waits the longest a throttle may (Kafka's
            // infinite throttle, capped at one window).
            return cap_ms;
        }
        let measured = rate.measure(now_ms);
        let window_ms = rate.window_size_ms(now_ms);
        throttle_ms(measured, bound, window_ms).min(cap_ms)
    }

    /// Records a new connection on `listener` and returns how long the acceptor waits
    /// before taking it: the longer of the broker-wide and the listener throttle (Kafka's
    /// `recordConnectionAndGetThrottleTimeMs`).
    pub fn record_listener(
        &mut self,
        listener: &str,
        protected: bool,
        broker_max: u32,
        listener_max: u32,
        now_ms: u64,
    ) -> u64 {
        let cap_ms = self.throttle_ms_max();
        let broker_ms = if protected {
            0
        } else {
            Self::record_and_throttle(&mut self.broker, broker_max as f64, cap_ms, now_ms)
        };
        let config = self.config;
        let rate = (self.listeners.entry(listener.to_string()))
            .or_insert_with(|| SampledRate::new(config, now_ms));
        let listener_ms = Self::record_and_throttle(rate, listener_max as f64, cap_ms, now_ms);
        broker_ms.max(listener_ms)
    }

    /// Records a connection from `ip`; over its quota, returns the throttle and takes the
    /// connection back out of every rate (Kafka's `recordIpConnectionMaybeThrottle`: the
    /// connection is refused, so it must not slow anyone else down).
    pub fn record_ip(&mut self, ip: IpAddr, listener: &str, protected: bool, now_ms: u64) -> u64 {
        let Some(quota) = self.ip_quotas.quota(ip) else {
            return 0;
        };
        let cap_ms = self.throttle_ms_max();
        let rate = self.ip_rate(ip, now_ms);
        let throttle = Self::record_and_throttle(rate, quota, cap_ms, now_ms);
        if throttle > 0 {
            rate.record(-1.0, now_ms);
            if !protected {
                self.broker.record(-1.0, now_ms);
            }
            if let Some(rate) = self.listeners.get_mut(listener) {
                rate.record(-1.0, now_ms);
            }
        }
        throttle
    }

    /// The rate of `ip`, created on first use; a full map makes room as
    /// [`Bounded::entry`] does (no scan of 100k entries per new address).
    fn ip_rate(&mut self, ip: IpAddr, now_ms: u64) -> &mut SampledRate {
        let config = self.config;
        (self.ips).entry(ip, now_ms, || SampledRate::new(config, now_ms))
    }

    /// Connections per second accepted on `listener` now (for metrics).
    pub fn listener_rate(&mut self, listener: &str, now_ms: u64) -> f64 {
        self.listeners
            .get_mut(listener)
            .map_or(0.0, |rate| rate.measure(now_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::client_quotas::QuotaEntity;

    fn config() -> RateConfig {
        RateConfig {
            samples: 11,
            window_ms: 1000,
        }
    }

    fn ip_entity(
        name: QuotaName,
        rate: f64,
    ) -> (QuotaEntity, std::collections::BTreeMap<String, f64>) {
        let entity = QuotaEntity {
            ip: Some(name),
            ..QuotaEntity::default()
        };
        (
            entity,
            [(CONNECTION_CREATION_RATE.to_string(), rate)].into(),
        )
    }

    #[test]
    fn an_ip_resolves_to_its_own_quota_else_the_default() {
        let image: ClientQuotas = [
            ip_entity(QuotaName::Named("10.0.0.1".into()), 2.0),
            ip_entity(QuotaName::Default, 5.0),
        ]
        .into();
        let quotas = IpQuotas::from_image(&image);
        assert_eq!(quotas.quota("10.0.0.1".parse().unwrap()), Some(2.0));
        assert_eq!(quotas.quota("10.0.0.2".parse().unwrap()), Some(5.0));
        let only_named: ClientQuotas = [ip_entity(QuotaName::Named("::1".into()), 1.0)].into();
        let quotas = IpQuotas::from_image(&only_named);
        assert_eq!(quotas.quota("::1".parse().unwrap()), Some(1.0));
        assert_eq!(quotas.quota("10.0.0.2".parse().unwrap()), None);
        assert!(IpQuotas::from_image(&ClientQuotas::new()).is_empty());
    }

    #[test]
    fn a_listener_over_its_rate_waits_and_the_protected_one_skips_the_broker_rate() {
        let mut rates = ConnectionRates::new(config(), 0);
        // 10 windows at least: a rate of 2/s admits 20 connections in the first instant.
        for _ in 0..20 {
            assert_eq!(rates.record_listener("A", false, 2, UNLIMITED, 0), 0);
        }
        let throttle = rates.record_listener("A", false, 2, UNLIMITED, 0);
        assert_eq!(throttle, 500, "(21/10 - 2) / 2 * 10 s");
        // The protected listener is not held back by the broker-wide rate...
        assert_eq!(rates.record_listener("INTERNAL", true, 1, UNLIMITED, 0), 0);
        // ...but by its own.
        for _ in 0..9 {
            rates.record_listener("INTERNAL", true, 1, 1, 0);
        }
        assert!(rates.record_listener("INTERNAL", true, 1, 1, 0) > 0);
        // Capped at one window however far over.
        for _ in 0..1000 {
            rates.record_listener("A", false, 1, UNLIMITED, 0);
        }
        assert_eq!(rates.record_listener("A", false, 1, UNLIMITED, 0), 1000);
    }

    #[test]
    fn a_throttled_ip_is_taken_back_out_of_every_rate() {
        let mut rates = ConnectionRates::new(config(), 0);
        let image: ClientQuotas = [ip_entity(QuotaName::Named("10.0.0.1".into()), 1.0)].into();
        rates.set_ip_quotas(IpQuotas::from_image(&image));
        let (limited, other): (IpAddr, IpAddr) =
            ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let mut throttled = 0;
        for _ in 0..30 {
            rates.record_listener("A", false, UNLIMITED, UNLIMITED, 0);
            if rates.record_ip(limited, "A", false, 0) > 0 {
                throttled += 1;
            }
        }
        assert_eq!(
            throttled, 20,
            "10 admitted in the first windows, the rest refused"
        );
        for _ in 0..30 {
            rates.record_listener("A", false, UNLIMITED, UNLIMITED, 0);
            assert_eq!(rates.record_ip(other, "A", false, 0), 0);
        }
        // The refused ones do not count: 10 + 30 admitted over 10 s.
        assert_eq!(rates.listener_rate("A", 0), 4.0);
        assert_eq!(rates.broker.measure(0), 4.0);
        // Later the ip is admitted again.
        assert_eq!(rates.record_ip(limited, "A", false, 20_000), 0);
    }
}
