use std::collections::BTreeMap;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::fetch_request::{
    FetchPartition, FetchTopic, ForgottenTopic, ReplicaState,
};
use kafka_protocol::messages::{BrokerId, FetchRequest, TopicName};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use super::*;
use crate::sim_rng::Rng;

const ROUNDS: usize = 300;

#[test]
fn decodes_what_kafka_protocol_encodes_at_every_version() {
    let mut rng = Rng::new(0xfe7c);
    for version in VERSIONS {
        for round in 0..ROUNDS {
            let request = random_request(&mut rng, version);
            let body = encoded(&request, version);
            let query = FetchQuery::decode(&body, version)
                .unwrap_or_else(|error| panic!("v{version} round {round}: {error:?}"));
            // What kafka-protocol itself reads back: fields a version lacks at their defaults.
            let reference = FetchRequest::decode(&mut Bytes::from(body.clone()), version).unwrap();
            assert_eq!(
                query,
                expected(&reference, version),
                "v{version} round {round}"
            );
        }
    }
}

#[test]
fn a_body_cut_anywhere_is_refused() {
    let mut rng = Rng::new(0xc07);
    for version in VERSIONS {
        for _ in 0..20 {
            let body = encoded(&random_request(&mut rng, version), version);
            for cut in 0..body.len() {
                assert!(
                    FetchQuery::decode(&body[..cut], version).is_err(),
                    "v{version}: {cut} of {} bytes decoded",
                    body.len()
                );
            }
        }
    }
}

/// Damaged bodies: never a panic, and where both decoders accept one they agree. (They
/// may differ on accepting: kafka-protocol checks the UTF-8 of the cluster and rack ids,
/// which are skipped here, and reads varints and array counts more loosely.)
#[test]
fn damaged_bodies_are_refused_or_read_as_kafka_protocol_reads_them() {
    let mut rng = Rng::new(0xbad);
    let mut both = 0;
    for version in VERSIONS {
        for _ in 0..ROUNDS {
            let mut body = encoded(&random_request(&mut rng, version), version);
            for _ in 0..1 + rng.below(3) {
                let at = rng.below(body.len() as u64) as usize;
                body[at] = rng.below(256) as u8;
            }
            let ours = FetchQuery::decode(&body, version);
            let theirs = FetchRequest::decode(&mut Bytes::from(body.clone()), version);
            if let (Ok(ours), Ok(theirs)) = (ours, theirs) {
                assert_eq!(ours, expected(&theirs, version), "v{version}");
                both += 1;
            }
        }
    }
    assert!(
        both > ROUNDS,
        "too few damaged bodies both accepted: {both}"
    );
}

/// The bytes of a v4 fetch as `scripts/bench.py`'s long polls write it, by hand.
#[test]
fn a_v4_body_by_hand() {
    let mut body = Vec::new();
    body.extend_from_slice(&(-1i32).to_be_bytes()); // replica id
    body.extend_from_slice(&500i32.to_be_bytes()); // max wait
    body.extend_from_slice(&1i32.to_be_bytes()); // min bytes
    body.extend_from_slice(&(1i32 << 20).to_be_bytes()); // max bytes
    body.push(1); // read_committed
    body.extend_from_slice(&1i32.to_be_bytes()); // one topic
    body.extend_from_slice(&2i16.to_be_bytes());
    body.extend_from_slice(b"lp");
    body.extend_from_slice(&2i32.to_be_bytes()); // two partitions
    for partition in [3i32, 5] {
        body.extend_from_slice(&partition.to_be_bytes());
        body.extend_from_slice(&(i64::from(partition) * 10).to_be_bytes());
        body.extend_from_slice(&4096i32.to_be_bytes());
    }
    let query = FetchQuery::decode(&body, 4).unwrap();
    let partition = |partition: i32| QueryPartition {
        partition,
        current_leader_epoch: -1,
        fetch_offset: i64::from(partition) * 10,
        log_start_offset: -1,
        partition_max_bytes: 4096,
    };
    assert_eq!(
        query,
        FetchQuery {
            replica_id: -1,
            replica_epoch: -1,
            max_wait_ms: 500,
            min_bytes: 1,
            max_bytes: 1 << 20,
            isolation_level: 1,
            session_id: 0,
            session_epoch: -1,
            topics: vec![QueryTopic {
                name: "lp",
                topic_id: uuid::Uuid::nil(),
                partitions: 0..2,
            }],
            partitions: vec![partition(3), partition(5)],
            forgotten: Vec::new(),
        }
    );
    assert_eq!(query.partitions_of(&query.topics[0]).len(), 2);
    // One partition more than the bytes left can hold.
    body[4 + 4 + 4 + 4 + 1 + 4 + 2 + 2 + 3] = 3;
    assert!(FetchQuery::decode(&body, 4).is_err());
}

#[test]
fn a_count_beyond_the_body_is_refused_before_any_allocation() {
    // v4: the topics' count says 2^31 - 1.
    let mut body = vec![0u8; 4 * 4 + 1];
    body.extend_from_slice(&i32::MAX.to_be_bytes());
    body.extend_from_slice(&[0; 64]);
    assert_eq!(
        FetchQuery::decode(&body, 4),
        Err(Malformed("an array longer than the body"))
    );
    assert!(
        FetchQuery::decode(&body, 3).is_err(),
        "v3 is not decoded here"
    );
    assert!(
        FetchQuery::decode(&body, 18).is_err(),
        "v18 is not decoded here"
    );
}

fn encoded(request: &FetchRequest, version: i16) -> Vec<u8> {
    let mut body = BytesMut::new();
    request.encode(&mut body, version).unwrap();
    body.to_vec()
}

/// Our reading of `request` as decoded at `version`.
fn expected(request: &FetchRequest, version: i16) -> FetchQuery<'_> {
    let mut partitions = Vec::new();
    let topics = (request.topics.iter())
        .map(|topic| {
            let first = partitions.len();
            partitions.extend(topic.partitions.iter().map(|p| QueryPartition {
                partition: p.partition,
                current_leader_epoch: p.current_leader_epoch,
                fetch_offset: p.fetch_offset,
                log_start_offset: p.log_start_offset,
                partition_max_bytes: p.partition_max_bytes,
            }));
            QueryTopic {
                name: topic.topic.0.as_str(),
                topic_id: topic.topic_id,
                partitions: first..partitions.len(),
            }
        })
        .collect();
    let forgotten = (request.forgotten_topics_data.iter())
        .flat_map(|topic| {
            (topic.partitions.iter()).map(move |&partition| Forgotten {
                name: topic.topic.0.as_str(),
                topic_id: topic.topic_id,
                partition,
            })
        })
        .collect();
    let (replica_id, replica_epoch) = match version >= REPLICA_STATE_MIN_VERSION {
        true => (
            request.replica_state.replica_id.0,
            request.replica_state.replica_epoch,
        ),
        false => (request.replica_id.0, -1),
    };
    FetchQuery {
        replica_id,
        replica_epoch,
        max_wait_ms: request.max_wait_ms,
        min_bytes: request.min_bytes,
        max_bytes: request.max_bytes,
        isolation_level: request.isolation_level,
        session_id: request.session_id,
        session_epoch: request.session_epoch,
        topics,
        partitions,
        forgotten,
    }
}

fn random_request(rng: &mut Rng, version: i16) -> FetchRequest {
    let int = |rng: &mut Rng| rng.next_u64() as i32 >> rng.below(32);
    let long = |rng: &mut Rng| rng.next_u64() as i64 >> rng.below(64);
    let by_id = version >= TOPIC_IDS_MIN_VERSION;
    let flexible = version >= FLEXIBLE_MIN_VERSION;
    let name = |rng: &mut Rng| {
        let length = [0, 1, 7, 126, 127, 128, 249][rng.below(7) as usize];
        let text: String = (0..length)
            .map(|_| (b'a' + rng.below(26) as u8) as char)
            .collect();
        TopicName(StrBytes::from_string(
            text + ["", "é", "名"][rng.below(3) as usize],
        ))
    };
    let unknown_tags = |rng: &mut Rng, first_free: i32| -> BTreeMap<i32, Bytes> {
        if !flexible || !rng.chance(20) {
            return BTreeMap::new();
        }
        (0..1 + rng.below(2))
            .map(|i| {
                let value: Vec<u8> = (0..rng.below(300)).map(|_| rng.below(256) as u8).collect();
                (first_free + i as i32 * 7, Bytes::from(value))
            })
            .collect()
    };
    let topics = (0..rng.below(4))
        .map(|_| {
            let most = if rng.chance(10) { 200 } else { 5 };
            let partitions = (0..rng.below(most))
                .map(|_| {
                    let mut partition = FetchPartition::default()
                        .with_partition(int(rng))
                        .with_fetch_offset(long(rng))
                        .with_partition_max_bytes(int(rng))
                        .with_unknown_tagged_fields(unknown_tags(rng, 2));
                    if version >= LEADER_EPOCH_MIN_VERSION {
                        partition.current_leader_epoch = int(rng);
                    }
                    if version >= LAST_FETCHED_EPOCH_MIN_VERSION {
                        partition.last_fetched_epoch = int(rng);
                    }
                    if version >= LOG_START_MIN_VERSION {
                        partition.log_start_offset = long(rng);
                    }
                    if version >= REPLICA_DIRECTORY_MIN_VERSION && rng.chance(30) {
                        partition.replica_directory_id =
                            uuid::Uuid::from_u128(rng.next_u64().into());
                    }
                    partition
                })
                .collect();
            let topic = FetchTopic::default()
                .with_partitions(partitions)
                .with_unknown_tagged_fields(unknown_tags(rng, 0));
            match by_id {
                true => topic.with_topic_id(uuid::Uuid::from_u128(rng.next_u64().into())),
                false => topic.with_topic(name(rng)),
            }
        })
        .collect();
    let mut request = FetchRequest::default()
        .with_max_wait_ms(int(rng))
        .with_min_bytes(int(rng))
        .with_max_bytes(int(rng))
        .with_isolation_level(rng.below(2) as i8)
        .with_topics(topics)
        .with_unknown_tagged_fields(unknown_tags(rng, 2));
    match version >= REPLICA_STATE_MIN_VERSION {
        true if rng.chance(50) => {
            request.replica_state = ReplicaState::default()
                .with_replica_id(BrokerId(int(rng)))
                .with_replica_epoch(long(rng))
                .with_unknown_tagged_fields(unknown_tags(rng, 0));
        }
        true => {}
        false => request.replica_id = BrokerId(int(rng)),
    }
    if version >= SESSION_MIN_VERSION {
        request.session_id = int(rng);
        request.session_epoch = int(rng);
        request.forgotten_topics_data = (0..rng.below(3))
            .map(|_| {
                let partitions = (0..rng.below(6)).map(|_| int(rng)).collect();
                let topic = ForgottenTopic::default()
                    .with_partitions(partitions)
                    .with_unknown_tagged_fields(unknown_tags(rng, 0));
                match by_id {
                    true => topic.with_topic_id(uuid::Uuid::from_u128(rng.next_u64().into())),
                    false => topic.with_topic(name(rng)),
                }
            })
            .collect();
    }
    if version >= RACK_MIN_VERSION {
        request.rack_id = name(rng).0;
    }
    if flexible && rng.chance(30) {
        request.cluster_id = Some(name(rng).0);
    }
    request
}
