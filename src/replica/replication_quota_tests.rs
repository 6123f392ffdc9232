use std::collections::BTreeMap;

use super::*;

fn partitions(list: &[i32]) -> Option<ThrottledReplicas> {
    Some(ThrottledReplicas::Partitions(
        list.iter().copied().collect(),
    ))
}

#[test]
fn replica_lists_are_validated_as_kafka_does() {
    for good in [
        "",
        "*",
        " * ",
        "0:1",
        "0:1,1:2",
        "0:1, 1:2 ,",
        "0:1,,2:3",
        "10:200",
    ] {
        assert_eq!(
            validate_replica_list(LEADER_REPLICAS, good),
            Ok(()),
            "{good:?}"
        );
    }
    for bad in [
        "0", "0:a", "a:0", "*,0:1", "0:1:2", "-1:0", "0:-1", "all", "**", "0 :1",
    ] {
        assert!(
            validate_replica_list(LEADER_REPLICAS, bad).is_err(),
            "{bad:?}"
        );
    }
    assert_eq!(
        validate_replica_list(FOLLOWER_REPLICAS, "0:1, x").unwrap_err(),
        "Invalid value [0:1, x] for configuration follower.replication.throttled.replicas: \
         follower.replication.throttled.replicas must be the literal '*' or a list of replicas \
         in the following format: [partitionId]:[brokerId],[partitionId]:[brokerId],..."
    );
}

#[test]
fn a_broker_throttles_the_partitions_listed_with_its_id() {
    assert_eq!(throttled_here("", 1), None);
    assert_eq!(throttled_here("  ", 1), None);
    assert_eq!(throttled_here("*", 1), Some(ThrottledReplicas::All));
    assert_eq!(throttled_here("0:1,0:2,1:2,3:1", 1), partitions(&[0, 3]));
    assert_eq!(throttled_here("0:1, 3:1", 1), partitions(&[0, 3]));
    assert_eq!(throttled_here("0:2", 1), partitions(&[]));
    assert_eq!(throttled_here("0:x", 1), None);
}

#[test]
fn rates_are_longs_at_least_zero() {
    assert_eq!(validate_rate(LEADER_RATE, "0"), Ok(()));
    assert_eq!(validate_rate(LEADER_RATE, "9223372036854775807"), Ok(()));
    assert_eq!(
        validate_rate(LEADER_RATE, "-1").unwrap_err(),
        "Invalid value -1 for configuration leader.replication.throttled.rate: Value must be at \
         least 0"
    );
    assert_eq!(
        validate_rate(FOLLOWER_RATE, "fast").unwrap_err(),
        "Invalid value fast for configuration follower.replication.throttled.rate: Not a number \
         of type LONG"
    );
}

#[test]
fn only_a_listed_lagging_replica_over_the_bound_is_held() {
    let yes = || true;
    let no = || false;
    assert!(should_throttle(true, no, yes));
    assert!(
        !should_throttle(true, yes, yes),
        "in-sync replicas are never held"
    );
    assert!(!should_throttle(false, no, yes), "not throttled here");
    assert!(!should_throttle(true, no, no), "within the bound");
    // Kafka's order: the rate is not even measured for an in-sync replica.
    let unasked = || -> bool { panic!("measured for an in-sync replica") };
    assert!(!should_throttle(true, yes, unasked));
    assert!(!should_throttle(
        false,
        || panic!("asked for an unlisted one"),
        unasked
    ));
    assert!(!is_over(1e30, RATE_UNBOUNDED));
    assert!(!is_over(100.0, 100));
    assert!(is_over(100.5, 100));
    assert!(is_over(1.0, 0));
}

fn tp(topic: &str, partition: i32) -> TopicPartition {
    TopicPartition {
        topic: topic.into(),
        partition,
    }
}

fn config() -> RateConfig {
    RateConfig {
        samples: 11,
        window_ms: 1000,
    }
}

#[test]
fn the_quota_holds_lagging_throttled_replicas_while_over_its_bound() {
    let quota = ReplicationQuota::new(config());
    let throttled = HashMap::from([("t".to_string(), partitions(&[0]).unwrap())]);
    quota.update(1000, throttled);
    assert_eq!(quota.throttled_partitions(|_| 100), 1);
    assert!(quota.is_throttled(&tp("t", 0)));
    assert!(!quota.is_throttled(&tp("t", 1)));
    assert!(!quota.is_throttled(&tp("u", 0)));
    assert!(
        !quota.holds(&tp("t", 0), || false, 0),
        "nothing measured yet"
    );
    assert_eq!(quota.byte_rate(0), 0.0);
    quota.record(1500, 0);
    // 1500 bytes over one window (SimpleRate's floor): over 1000 B/s.
    assert!(quota.is_exceeded(500));
    assert!(quota.holds(&tp("t", 0), || false, 500));
    assert!(!quota.holds(&tp("t", 0), || true, 500));
    assert!(!quota.holds(&tp("t", 1), || false, 500));
    // Two seconds on, 1500 bytes over 2 s is within the bound again.
    assert!(!quota.is_exceeded(2000));
    // Idle for a whole window: measured afresh from the next use, so an idle stretch does
    // not count as time at rate zero.
    quota.record(5000, 20_000);
    assert!(
        quota.is_exceeded(20_500),
        "5000 bytes over one window, not over 20 s"
    );
    // No bound: never exceeded, whatever was measured.
    quota.update(
        RATE_UNBOUNDED,
        HashMap::from([("t".into(), ThrottledReplicas::All)]),
    );
    assert!(!quota.is_exceeded(500));
    assert!(quota.is_throttled(&tp("t", 7)));
    assert_eq!(
        quota.throttled_partitions(|topic| usize::from(topic == "t") * 3),
        3
    );
    quota.update(1000, HashMap::new());
    assert!(!quota.is_throttled(&tp("t", 7)));
}

#[test]
fn bounds_and_lists_come_from_the_image() {
    let mut image = MetadataImage::default();
    image.broker_configs.insert(
        String::new(),
        BTreeMap::from([(LEADER_RATE.to_string(), "5000".to_string())]),
    );
    image.broker_configs.insert(
        "1".into(),
        BTreeMap::from([(LEADER_RATE.to_string(), "2000".to_string())]),
    );
    let quotas = ReplicationQuotas::new(1, config());
    quotas.update(&image);
    assert_eq!(quotas.leader.bound(), 2000);
    assert_eq!(quotas.follower.bound(), RATE_UNBOUNDED);
    let other = ReplicationQuotas::new(2, config());
    other.update(&image);
    assert_eq!(other.leader.bound(), 5000, "the cluster default");
    assert!(!quotas.leader.is_throttled(&tp("t", 0)));

    let topic = |name: &str, configs: &[(&str, &str)]| crate::controller::image::TopicImage {
        name: name.to_string(),
        id: uuid::Uuid::new_v4(),
        partitions: Vec::new(),
        configs: (configs.iter())
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect(),
    };
    let lists = [(LEADER_REPLICAS, "0:1,0:2"), (FOLLOWER_REPLICAS, "0:3")];
    image
        .topics
        .insert("moving".into(), topic("moving", &lists));
    image
        .topics
        .insert("all".into(), topic("all", &[(FOLLOWER_REPLICAS, "*")]));
    image
        .topics
        .insert("other".into(), topic("other", &[(LEADER_REPLICAS, "5:2")]));
    quotas.update(&image);
    assert!(quotas.leader.is_throttled(&tp("moving", 0)));
    assert!(
        !quotas.follower.is_throttled(&tp("moving", 0)),
        "0:3 is not this broker"
    );
    assert!(quotas.follower.is_throttled(&tp("all", 4)));
    assert!(
        !quotas.leader.is_throttled(&tp("other", 5)),
        "5:2 is not this broker"
    );
    assert_eq!(
        quotas.leader.throttled_partitions(|_| 9),
        1,
        "'other' names none here"
    );
    // The configs removed (as --verify does): nothing is throttled, checks are one load.
    image.topics.clear();
    quotas.update(&image);
    assert!(!quotas.leader.is_throttled(&tp("moving", 0)));
    assert!(!quotas.leader.active.load(Relaxed) && !quotas.follower.active.load(Relaxed));
}
