use std::collections::BTreeMap;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::fetch_request::{self, FetchPartition, FetchTopic, ReplicaState};
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
fn the_versions_decoded_are_the_versions_served() {
    let spec = crate::api::find_api(kafka_protocol::messages::ApiKey::Fetch as i16).unwrap();
    assert_eq!(VERSIONS, spec.min_version..=spec.max_version);
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

/// Damaged bodies: never a panic, and where both decoders accept one they agree, for this
/// seed. They may differ on accepting: kafka-protocol checks the cluster id's UTF-8, which
/// is skipped here, and reads varints and array counts more loosely. And they could differ
/// on what they read where the damage hits a known tagged field's size: kafka-protocol
/// reads the value from the body whatever its declared size, this decoder within it.
/// Whether both accepting ever disagreed outside such a case is what this tests.
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
            topics: vec![TopicRun {
                name: "lp",
                topic_id: uuid::Uuid::nil(),
                partitions: 0..2,
            }],
            partitions: vec![partition(3), partition(5)],
            forgotten: Vec::new(),
            forgotten_partitions: Vec::new(),
        }
    );
    assert_eq!(query.partitions_of(&query.topics[0]).len(), 2);
    // One partition more than the bytes left can hold.
    body[4 + 4 + 4 + 4 + 1 + 4 + 2 + 2 + 3] = 3;
    assert!(FetchQuery::decode(&body, 4).is_err());
}

/// A v7 body by hand: a follower's incremental fetch that forgets partitions of two topics.
#[test]
fn a_v7_body_with_forgotten_topics_by_hand() {
    let mut body = Vec::new();
    for value in [2i32, 100, 1, 1 << 20] {
        body.extend_from_slice(&value.to_be_bytes()); // replica, wait, min and max bytes
    }
    body.push(0);
    body.extend_from_slice(&5i32.to_be_bytes()); // session id
    body.extend_from_slice(&3i32.to_be_bytes()); // session epoch
    body.extend_from_slice(&0i32.to_be_bytes()); // no topics
    body.extend_from_slice(&2i32.to_be_bytes()); // two forgotten topics
    for (name, partitions) in [("a", &[1i32, 2][..]), ("bc", &[7][..])] {
        body.extend_from_slice(&(name.len() as i16).to_be_bytes());
        body.extend_from_slice(name.as_bytes());
        body.extend_from_slice(&(partitions.len() as i32).to_be_bytes());
        for partition in partitions {
            body.extend_from_slice(&partition.to_be_bytes());
        }
    }
    let query = FetchQuery::decode(&body, 7).unwrap();
    assert_eq!((query.replica_id, query.replica_epoch), (2, -1));
    assert_eq!((query.session_id, query.session_epoch), (5, 3));
    let forgotten: Vec<(&str, &[i32])> = (query.forgotten.iter())
        .map(|topic| (topic.name, query.forgotten_of(topic)))
        .collect();
    assert_eq!(forgotten, [("a", &[1, 2][..]), ("bc", &[7][..])]);
    assert!(query.topics.is_empty() && query.partitions.is_empty());
}

/// A flexible body by hand, v14-v17: no topics, nothing forgotten, an empty rack id, then
/// the request's tagged fields `tags`.
fn flexible_body(version: i16, topics: &[u8], tags: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    if version < REPLICA_STATE_MIN_VERSION {
        body.extend_from_slice(&4i32.to_be_bytes());
    }
    for value in [100i32, 1, 1 << 20] {
        body.extend_from_slice(&value.to_be_bytes());
    }
    body.push(0);
    body.extend_from_slice(&0i32.to_be_bytes()); // session id
    body.extend_from_slice(&(-1i32).to_be_bytes()); // session epoch
    body.extend_from_slice(topics);
    body.extend_from_slice(&[1, 1]); // nothing forgotten, an empty rack id
    body.extend_from_slice(tags);
    body
}

#[test]
fn replica_state_is_read_within_its_tagged_field_from_v15_only() {
    // Tag 1, 15 bytes: replica 7, epoch 9, no tagged fields of its own, 2 bytes more.
    let mut tags = vec![1, 1, 15];
    tags.extend_from_slice(&7i32.to_be_bytes());
    tags.extend_from_slice(&9i64.to_be_bytes());
    tags.extend_from_slice(&[0, 0xee, 0xee]);
    let body = flexible_body(15, &[1], &tags);
    let query = FetchQuery::decode(&body, 15).unwrap();
    assert_eq!((query.replica_id, query.replica_epoch), (7, 9));
    // Too short for its two fields.
    let short = [1, 1, 4, 0, 0, 0, 7];
    assert!(FetchQuery::decode(&flexible_body(15, &[1], &short), 15).is_err());
    // Not a field of v14, whose replica id comes first.
    assert!(FetchQuery::decode(&flexible_body(14, &[1], &tags), 14).is_err());
    assert_eq!(
        FetchQuery::decode(&flexible_body(14, &[1], &[0]), 14)
            .unwrap()
            .replica_id,
        4
    );
    // An unknown tag is skipped.
    let unknown = [1, 6, 2, 0xee, 0xee];
    let body = flexible_body(16, &[1], &unknown);
    let query = FetchQuery::decode(&body, 16).unwrap();
    assert_eq!((query.replica_id, query.replica_epoch), (-1, -1));
}

#[test]
fn a_partitions_replica_directory_is_a_field_of_v17_only() {
    let id = uuid::Uuid::from_u128(0x1234);
    // One topic (by id) of one partition whose tagged field 0 holds a directory id.
    let mut topics = vec![2];
    topics.extend_from_slice(id.as_bytes());
    topics.push(2);
    topics.extend_from_slice(&3i32.to_be_bytes()); // partition
    topics.extend_from_slice(&5i32.to_be_bytes()); // current leader epoch
    topics.extend_from_slice(&40i64.to_be_bytes()); // fetch offset
    topics.extend_from_slice(&4i32.to_be_bytes()); // last fetched epoch
    topics.extend_from_slice(&(-1i64).to_be_bytes()); // log start offset
    topics.extend_from_slice(&512i32.to_be_bytes()); // max bytes
    topics.extend_from_slice(&[1, 0, 16]);
    topics.extend_from_slice(uuid::Uuid::from_u128(9).as_bytes());
    topics.push(0); // the topic's tagged fields
    let body = flexible_body(17, &topics, &[0]);
    let query = FetchQuery::decode(&body, 17).unwrap();
    assert_eq!(query.topics.len(), 1);
    assert_eq!(query.topics[0].topic_id, id);
    let partition = query.partitions_of(&query.topics[0])[0];
    assert_eq!((partition.partition, partition.fetch_offset), (3, 40));
    assert_eq!(partition.current_leader_epoch, 5);
    assert_eq!(partition.partition_max_bytes, 512);
    assert!(FetchQuery::decode(&flexible_body(16, &topics, &[0]), 16).is_err());
}

#[test]
fn a_count_beyond_the_body_is_refused() {
    // Refused as soon as it is read: nothing is reserved from it.
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
            TopicRun {
                name: topic.topic.0.as_str(),
                topic_id: topic.topic_id,
                partitions: first..partitions.len(),
            }
        })
        .collect();
    let mut forgotten_partitions = Vec::new();
    let forgotten = (request.forgotten_topics_data.iter())
        .map(|topic| {
            let first = forgotten_partitions.len();
            forgotten_partitions.extend_from_slice(&topic.partitions);
            TopicRun {
                name: topic.topic.0.as_str(),
                topic_id: topic.topic_id,
                partitions: first..forgotten_partitions.len(),
            }
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
        forgotten_partitions,
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
    // A topic's name before v13, its id from v13 (the other left at its default).
    let key = |rng: &mut Rng| match by_id {
        true => (
            TopicName::default(),
            uuid::Uuid::from_u128(rng.next_u64().into()),
        ),
        false => (name(rng), uuid::Uuid::nil()),
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
            let (topic, topic_id) = key(rng);
            FetchTopic::default()
                .with_topic(topic)
                .with_topic_id(topic_id)
                .with_partitions(partitions)
                .with_unknown_tagged_fields(unknown_tags(rng, 0))
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
                let (topic, topic_id) = key(rng);
                fetch_request::ForgottenTopic::default()
                    .with_topic(topic)
                    .with_topic_id(topic_id)
                    .with_partitions(partitions)
                    .with_unknown_tagged_fields(unknown_tags(rng, 0))
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
