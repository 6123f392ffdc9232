//! OffsetForLeaderEpoch and ListOffsets' leader epochs through the real request path
//! (`api::handle_frame` on a one-node broker with a temp data dir). The partition's epoch
//! is moved the way the reconciler moves it (`Partition::apply_leadership`), so the
//! log holds batches of several epochs: 0 at offsets 0-2, 2 at 3-4, 5 at 5, log end 6.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use gracchus::api::handle_frame;
use gracchus::broker::Broker;
use gracchus::config::BrokerConfig;
use gracchus::log::batch::plain_record;
use gracchus::replica::{Leadership, Partition, Publish};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use kafka_protocol::records::{Compression, RecordBatchEncoder, RecordEncodeOptions};

const TOPIC: &str = "epochs";
const FENCED_LEADER_EPOCH: i16 = 74;
const UNKNOWN_LEADER_EPOCH: i16 = 75;
const NOT_LEADER_OR_FOLLOWER: i16 = 6;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;

fn name(text: &str) -> TopicName {
    TopicName(StrBytes::from_string(text.to_string()))
}

async fn call<R: Request>(broker: &Broker, request: &R, version: i16) -> R::Response {
    let header = RequestHeader::default()
        .with_request_api_key(R::KEY)
        .with_request_api_version(version)
        .with_correlation_id(7);
    let mut frame = BytesMut::new();
    header
        .encode(&mut frame, R::header_version(version))
        .unwrap();
    request.encode(&mut frame, version).unwrap();
    let response = handle_frame(broker, frame.freeze(), "/127.0.0.1")
        .await
        .unwrap()
        .unwrap();
    let mut bytes = response.freeze();
    let size = bytes.get_i32() as usize;
    assert_eq!(size, bytes.len());
    ResponseHeader::decode(&mut bytes, R::Response::header_version(version)).unwrap();
    let decoded = R::Response::decode(&mut bytes, version).unwrap();
    assert!(!bytes.has_remaining());
    decoded
}

async fn open_broker(dir: &std::path::Path) -> Arc<Broker> {
    let mut map = BTreeMap::new();
    map.insert("log.dirs".to_string(), dir.display().to_string());
    map.insert("listeners".into(), "PLAINTEXT://127.0.0.1:9".into());
    Broker::open(BrokerConfig::from_map(map).unwrap(), None)
        .await
        .unwrap()
}

/// One batch of one record stamped at `timestamp_ms`.
fn batch(timestamp_ms: i64) -> Bytes {
    let records = [plain_record(
        0,
        timestamp_ms,
        None,
        Some(Bytes::from_static(b"v")),
    )];
    let mut buffer = BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression: Compression::None,
    };
    RecordBatchEncoder::encode(&mut buffer, &records, &options).unwrap();
    buffer.freeze()
}

async fn produce(broker: &Broker, timestamp_ms: i64) -> i64 {
    let request = ProduceRequest::default()
        .with_acks(1)
        .with_timeout_ms(1000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(name(TOPIC))
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(batch(timestamp_ms))),
                ]),
        ]);
    let response = call(broker, &request, 9).await;
    let partition = &response.responses[0].partition_responses[0];
    assert_eq!(partition.error_code, 0);
    partition.base_offset
}

/// Moves the partition as the reconciler would for an image naming `leader` at `epoch`
/// (this broker is node 1; node 2 is the other replica).
fn set_leader(partition: &Partition, leader: i32, epoch: i32) {
    let leadership = Leadership {
        leader,
        leader_epoch: epoch,
        partition_epoch: epoch,
        replicas: vec![1, 2],
        isr: vec![leader],
    };
    partition
        .apply_leadership(1, &leadership, 0, Publish::Background)
        .unwrap();
}

/// A broker whose partition holds epochs 0 (offsets 0-2), 2 (3-4) and 5 (5); timestamps
/// are 1000 + 100 * offset.
async fn broker_with_epochs(dir: &std::path::Path) -> Arc<Broker> {
    let broker = open_broker(dir).await;
    let request = CreateTopicsRequest::default().with_topics(vec![
        CreatableTopic::default()
            .with_name(name(TOPIC))
            .with_num_partitions(1)
            .with_replication_factor(1),
    ]);
    assert_eq!(call(&broker, &request, 7).await.topics[0].error_code, 0);
    let partition = broker.replicas.get(TOPIC, 0).unwrap();
    for (epoch, offsets) in [(0, 0..3), (2, 3..5), (5, 5..6)] {
        set_leader(&partition, 1, epoch);
        for offset in offsets {
            assert_eq!(produce(&broker, 1_000 + 100 * offset).await, offset);
        }
    }
    broker
}

/// (error, leader epoch, end offset) for `leader_epoch`, asked with `current_leader_epoch`.
async fn end_offset(
    broker: &Broker,
    version: i16,
    topic: &str,
    current_leader_epoch: i32,
    leader_epoch: i32,
) -> (i16, i32, i64) {
    let partition = OffsetForLeaderPartition::default()
        .with_partition(0)
        .with_current_leader_epoch(current_leader_epoch)
        .with_leader_epoch(leader_epoch);
    let request = OffsetForLeaderEpochRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![
            OffsetForLeaderTopic::default()
                .with_topic(name(topic))
                .with_partitions(vec![partition]),
        ]);
    let response = call(broker, &request, version).await;
    let answer = &response.topics[0].partitions[0];
    assert_eq!(answer.partition, 0);
    (answer.error_code, answer.leader_epoch, answer.end_offset)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offset_for_leader_epoch_answers_as_kafka_does() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker_with_epochs(dir.path()).await;
    for version in 2..=4 {
        let current = 5;
        // The largest epoch at or below the one asked, ending where the next one starts.
        for (asked, answer) in [
            (0, (0, 0, 3)),
            (1, (0, 0, 3)),
            (2, (0, 2, 5)),
            (3, (0, 2, 5)),
            (4, (0, 2, 5)),
            (5, (0, 5, 6)),
            (6, (0, -1, -1)),
            (-1, (0, -1, -1)),
        ] {
            let got = end_offset(&broker, version, TOPIC, current, asked).await;
            assert_eq!(got, answer, "v{version} epoch {asked}");
        }
        // No current epoch given: no check.
        assert_eq!(end_offset(&broker, version, TOPIC, -1, 2).await, (0, 2, 5));
        let stale = end_offset(&broker, version, TOPIC, 4, 2).await;
        assert_eq!(stale, (FENCED_LEADER_EPOCH, -1, -1), "v{version}");
        let future = end_offset(&broker, version, TOPIC, 6, 2).await;
        assert_eq!(future, (UNKNOWN_LEADER_EPOCH, -1, -1), "v{version}");
        let unknown = end_offset(&broker, version, "nope", -1, 0).await;
        assert_eq!(unknown, (UNKNOWN_TOPIC_OR_PARTITION, -1, -1), "v{version}");
    }

    // A follower: a stale epoch is fenced first; the current one is sent to the leader.
    let partition = broker.replicas.get(TOPIC, 0).unwrap();
    set_leader(&partition, 2, 7);
    let fenced = end_offset(&broker, 4, TOPIC, 5, 2).await;
    assert_eq!(fenced.0, FENCED_LEADER_EPOCH);
    let follower = end_offset(&broker, 4, TOPIC, 7, 2).await;
    assert_eq!(follower.0, NOT_LEADER_OR_FOLLOWER);
}

/// (error, offset, timestamp, leader epoch) per timestamp asked.
async fn list_offsets(
    broker: &Broker,
    version: i16,
    current_leader_epoch: i32,
    timestamps: &[i64],
) -> Vec<(i16, i64, i64, i32)> {
    let partitions = (timestamps.iter())
        .map(|&timestamp| {
            ListOffsetsPartition::default()
                .with_partition_index(0)
                .with_current_leader_epoch(current_leader_epoch)
                .with_timestamp(timestamp)
        })
        .collect();
    let request = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![
            ListOffsetsTopic::default()
                .with_name(name(TOPIC))
                .with_partitions(partitions),
        ]);
    let response = call(broker, &request, version).await;
    (response.topics[0].partitions.iter())
        .map(|p| (p.error_code, p.offset, p.timestamp, p.leader_epoch))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_offsets_answers_the_epoch_of_each_offset_and_checks_the_current_one() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker_with_epochs(dir.path()).await;
    // Latest, earliest, max timestamp, by timestamp (offsets 1, 3 and 5), past the end.
    let asked = [-1, -2, -3, 1_100, 1_300, 1_450, 1_500, 9_000];
    for version in 4..=10 {
        let answers = list_offsets(&broker, version, 5, &asked).await;
        assert_eq!(
            answers,
            vec![
                (0, 6, -1, 5),
                (0, 0, -1, 0),
                (0, 5, 1_500, 5),
                (0, 1, 1_100, 0),
                (0, 3, 1_300, 2),
                (0, 5, 1_500, 5),
                (0, 5, 1_500, 5),
                (0, -1, -1, -1),
            ],
            "v{version}"
        );
        for (current, error) in [(4, FENCED_LEADER_EPOCH), (6, UNKNOWN_LEADER_EPOCH)] {
            let refused = list_offsets(&broker, version, current, &[-1]).await;
            assert_eq!(refused, vec![(error, -1, -1, -1)], "v{version}");
        }
        assert_eq!(list_offsets(&broker, version, -1, &[-1]).await[0].3, 5);
    }
    // Before v4 there is no leader epoch either way (and no current epoch to check).
    for version in 1..=3 {
        let answers = list_offsets(&broker, version, 5, &[-1, 1_300]).await;
        assert_eq!(answers[0].1, 6, "v{version}");
        assert_eq!(answers[1].1, 3, "v{version}");
        assert!(answers.iter().all(|a| a.0 == 0 && a.3 == -1), "v{version}");
    }
}
