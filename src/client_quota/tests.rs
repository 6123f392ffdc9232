use super::resolve::BucketKey;
use super::*;
use crate::controller::client_quotas::{QuotaEntity, QuotaName};

fn name(text: Option<&str>) -> QuotaName {
    QuotaName::from_wire(text)
}

/// (user, client id, key, value); a part is `None` when absent, `Some(None)` for the
/// default, `Some(Some(name))` when named.
type Entry<'a> = (
    Option<Option<&'a str>>,
    Option<Option<&'a str>>,
    &'a str,
    f64,
);

fn quotas(entries: &[Entry]) -> ClientQuotas {
    let mut quotas = ClientQuotas::new();
    for (user, client_id, key, value) in entries {
        let entity = QuotaEntity {
            user: user.map(name),
            client_id: client_id.map(name),
            ip: None,
        };
        quotas
            .entry(entity)
            .or_default()
            .insert(key.to_string(), *value);
    }
    quotas
}

const P: &str = "producer_byte_rate";

#[test]
fn resolution_follows_kafkas_order() {
    // Eight entities, each with its own value: removing the most specific one at a time
    // must walk down Kafka's order.
    let all = [
        (Some(Some("u")), Some(Some("c")), P, 1.0),
        (Some(Some("u")), Some(None), P, 2.0),
        (Some(Some("u")), None, P, 3.0),
        (Some(None), Some(Some("c")), P, 4.0),
        (Some(None), Some(None), P, 5.0),
        (Some(None), None, P, 6.0),
        (None, Some(Some("c")), P, 7.0),
        (None, Some(None), P, 8.0),
    ];
    let buckets: [BucketKey; 8] = [
        (Some("u".into()), Some("c".into())),
        (Some("u".into()), Some("c".into())),
        (Some("u".into()), None),
        (Some("u".into()), Some("c".into())),
        (Some("u".into()), Some("c".into())),
        (Some("u".into()), None),
        (None, Some("c".into())),
        (None, Some("c".into())),
    ];
    for skip in 0..all.len() {
        let table = QuotaTable::from_image(&quotas(&all[skip..]));
        let resolved = table.resolve(QuotaKind::Produce, "u", "c").unwrap();
        assert_eq!(resolved.quota, (skip + 1) as f64, "after removing {skip}");
        assert_eq!(resolved.bucket, buckets[skip], "after removing {skip}");
    }
    // Another user and client id match only the defaults.
    let table = QuotaTable::from_image(&quotas(&all));
    assert_eq!(
        table.resolve(QuotaKind::Produce, "v", "d").unwrap().quota,
        5.0
    );
    assert!(
        table.resolve(QuotaKind::Fetch, "u", "c").is_none(),
        "no fetch quota"
    );
}

#[test]
fn each_kind_resolves_on_its_own_key() {
    let table = QuotaTable::from_image(&quotas(&[
        (None, Some(Some("c")), P, 100.0),
        (None, Some(None), "consumer_byte_rate", 50.0),
    ]));
    assert_eq!(
        table
            .resolve(QuotaKind::Produce, ANONYMOUS_USER, "c")
            .unwrap()
            .quota,
        100.0
    );
    assert!(
        table
            .resolve(QuotaKind::Produce, ANONYMOUS_USER, "other")
            .is_none()
    );
    assert_eq!(
        table
            .resolve(QuotaKind::Fetch, ANONYMOUS_USER, "c")
            .unwrap()
            .quota,
        50.0
    );
}

fn manager(entries: &[Entry]) -> ClientQuotaManager {
    let manager = ClientQuotaManager::new(RateConfig::default(), RateConfig::default());
    manager.update(&quotas(entries));
    manager
}

#[test]
fn a_client_over_its_byte_quota_is_throttled_for_its_overshoot() {
    let manager = manager(&[(None, Some(Some("c")), P, 1000.0)]);
    // 10 000 bytes at once are exactly 1000 B/s over the 10 s minimum window.
    assert_eq!(
        manager.record(QuotaKind::Produce, ANONYMOUS_USER, "c", 10_000.0, 0),
        0
    );
    // 5 000 more: 1500 B/s, 50% over a 10 s window.
    assert_eq!(
        manager.record(QuotaKind::Produce, ANONYMOUS_USER, "c", 5_000.0, 0),
        5000
    );
    // Another client id has no quota; nor do other kinds.
    assert_eq!(
        manager.record(QuotaKind::Produce, ANONYMOUS_USER, "d", 1e9, 0),
        0
    );
    assert_eq!(
        manager.record(QuotaKind::Fetch, ANONYMOUS_USER, "c", 1e9, 0),
        0
    );
    // Once the whole window has passed, the rate is back under.
    assert_eq!(
        manager.record(QuotaKind::Produce, ANONYMOUS_USER, "c", 100.0, 20_000),
        0
    );
}

#[test]
fn clients_share_a_user_quota_but_not_a_default_client_quota() {
    let shared = manager(&[(Some(Some(ANONYMOUS_USER)), None, P, 1000.0)]);
    assert_eq!(
        shared.record(QuotaKind::Produce, ANONYMOUS_USER, "a", 10_000.0, 0),
        0
    );
    assert!(shared.record(QuotaKind::Produce, ANONYMOUS_USER, "b", 5_000.0, 0) > 0);
    let separate = manager(&[(None, Some(None), P, 1000.0)]);
    assert_eq!(
        separate.record(QuotaKind::Produce, ANONYMOUS_USER, "a", 10_000.0, 0),
        0
    );
    assert_eq!(
        separate.record(QuotaKind::Produce, ANONYMOUS_USER, "b", 10_000.0, 0),
        0
    );
}

#[test]
fn removing_the_quota_lifts_the_throttle_and_unrecord_takes_bytes_back() {
    let manager = manager(&[(None, Some(Some("c")), "consumer_byte_rate", 100.0)]);
    assert!(manager.is_enabled(QuotaKind::Fetch));
    assert!(!manager.is_enabled(QuotaKind::Produce));
    assert_eq!(
        manager.max_in_window(QuotaKind::Fetch, ANONYMOUS_USER, "c"),
        Some(1000.0)
    );
    assert!(manager.record(QuotaKind::Fetch, ANONYMOUS_USER, "c", 5000.0, 0) > 0);
    manager.unrecord(QuotaKind::Fetch, ANONYMOUS_USER, "c", 5000.0, 0);
    assert_eq!(
        manager.record(QuotaKind::Fetch, ANONYMOUS_USER, "c", 500.0, 0),
        0
    );
    manager.update(&ClientQuotas::new());
    assert!(!manager.is_enabled(QuotaKind::Fetch));
    assert_eq!(
        manager.record(QuotaKind::Fetch, ANONYMOUS_USER, "c", 1e9, 0),
        0
    );
    assert_eq!(
        manager.max_in_window(QuotaKind::Fetch, ANONYMOUS_USER, "c"),
        None
    );
}

#[test]
fn a_request_time_throttle_is_capped_at_one_window() {
    let manager = manager(&[(None, Some(None), "request_percentage", 1.0)]);
    // 100 = one second of handling time, against 1% of one thread.
    let throttle = manager.record(QuotaKind::Request, ANONYMOUS_USER, "c", 100.0, 0);
    assert_eq!(throttle, 1000);
}

const M: &str = "controller_mutation_rate";

#[test]
fn strict_mutations_are_refused_once_the_bucket_is_below_zero() {
    // 2 partitions/s: a burst of 22 (11 one-second windows).
    let manager = manager(&[(None, Some(Some("admin")), M, 2.0)]);
    assert!(manager.is_enabled(QuotaKind::ControllerMutation));
    assert_eq!(
        manager.record_mutation(ANONYMOUS_USER, "admin", 20.0, true, 0),
        Ok(0)
    );
    // 2 left: still accepted, even though it takes the bucket to -8.
    assert_eq!(
        manager.record_mutation(ANONYMOUS_USER, "admin", 10.0, true, 0),
        Ok(0)
    );
    // Now below zero: refused, with the 4 s it takes to refill 8 at 2/s, and not taken.
    assert_eq!(
        manager.record_mutation(ANONYMOUS_USER, "admin", 1.0, true, 0),
        Err(4000)
    );
    assert_eq!(
        manager.record_mutation(ANONYMOUS_USER, "admin", 1.0, true, 3000),
        Err(1000)
    );
    assert_eq!(
        manager.record_mutation(ANONYMOUS_USER, "admin", 1.0, true, 4000),
        Ok(0)
    );
    // Another client id has no quota.
    assert_eq!(
        manager.record_mutation(ANONYMOUS_USER, "other", 1e6, true, 0),
        Ok(0)
    );
}

#[test]
fn permissive_mutations_are_always_taken_and_throttled_after() {
    let manager = manager(&[(None, Some(None), M, 1.0)]);
    assert_eq!(
        manager.record_mutation(ANONYMOUS_USER, "old", 11.0, false, 0),
        Ok(0)
    );
    assert_eq!(
        manager.record_mutation(ANONYMOUS_USER, "old", 3.0, false, 0),
        Ok(3000)
    );
    assert_eq!(
        manager.record_mutation(ANONYMOUS_USER, "old", 1.0, false, 0),
        Ok(4000)
    );
    // Each client id has its own bucket at the default quota.
    assert_eq!(
        manager.record_mutation(ANONYMOUS_USER, "new", 11.0, false, 0),
        Ok(0)
    );
}

#[test]
fn a_full_map_scans_for_idle_entries_only_every_so_often() {
    let config = RateConfig::default();
    let mut map: Bounded<u64, SampledRate> = Bounded::new(RATES_MAX);
    for key in 0..RATES_MAX as u64 {
        map.map.insert(key, SampledRate::new(config, 0));
    }
    // Nothing idle at 0: the scan finds nothing, one arbitrary entry makes room.
    map.entry(u64::MAX, 0, || SampledRate::new(config, 0));
    assert_eq!(map.map.len(), RATES_MAX);
    assert_eq!(map.unscanned_inserts, Some(0));
    // Everything old is idle by 11 s, but new clients soon after do not scan again.
    map.entry(u64::MAX - 1, 11_000, || SampledRate::new(config, 11_000));
    assert_eq!(map.map.len(), RATES_MAX);
    assert_eq!(map.unscanned_inserts, Some(1));
    // Once a tenth of the bound came, a scan drops every idle entry.
    map.unscanned_inserts = Some(RATES_MAX / 10);
    map.entry(u64::MAX - 2, 11_000, || SampledRate::new(config, 11_000));
    assert_eq!(map.map.len(), 2, "only the two recent clients stay");
    assert_eq!(map.unscanned_inserts, None);
}
