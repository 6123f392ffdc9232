//! Every advertised API at every advertised version, through the real request path
//! (`api::handle_frame` on a broker with a temp data dir): the response must encode and
//! decode at that version, on success paths and on error paths. Encoders refuse fields
//! a version cannot carry, so this catches a handler setting one for an old client.

use std::collections::BTreeMap;

use bytes::{Buf, Bytes, BytesMut};
use gracchus::api::{APIS, handle_frame};
use gracchus::broker::Broker;
use gracchus::config::BrokerConfig;
use gracchus::log::batch::plain_record;
use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::describe_topic_partitions_request::TopicRequest;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use kafka_protocol::records::{Compression, RecordBatchEncoder, RecordEncodeOptions};

fn name(text: &str) -> TopicName {
    TopicName(StrBytes::from_string(text.to_string()))
}

fn frame<R: Request>(request: &R, version: i16) -> Bytes {
    let header = RequestHeader::default()
        .with_request_api_key(R::KEY)
        .with_request_api_version(version)
        .with_correlation_id(i32::from(version) * 1000 + i32::from(R::KEY))
        .with_client_id(Some(StrBytes::from_static_str("every-version")));
    let mut buffer = BytesMut::new();
    header
        .encode(&mut buffer, R::header_version(version))
        .unwrap();
    request.encode(&mut buffer, version).unwrap();
    save_seed(&buffer);
    buffer.freeze()
}

/// With `GRACCHUS_SEED_DIR` set, every frame this test sends is also written there, one
/// file per frame, as seeds for the `request_dispatch` fuzz target (`scripts/fuzz`).
fn save_seed(frame: &[u8]) {
    use std::hash::{Hash, Hasher};
    let Some(dir) = std::env::var_os("GRACCHUS_SEED_DIR") else {
        return;
    };
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    frame.hash(&mut hasher);
    let key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let name = format!("key{key}-v{version}-{:016x}", hasher.finish());
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(std::path::Path::new(&dir).join(name), frame).unwrap();
}

/// Sends `request` at `version`; returns the decoded response.
async fn call<R: Request>(broker: &Broker, request: &R, version: i16) -> R::Response {
    let handled = handle_frame(broker, frame(request, version), "/127.0.0.1");
    let response = tokio::time::timeout(std::time::Duration::from_secs(10), handled)
        .await
        .unwrap_or_else(|_| panic!("key {} v{version}: no answer within 10 s", R::KEY))
        .unwrap_or_else(|error| panic!("key {} v{version}: {error}", R::KEY))
        .unwrap_or_else(|| panic!("key {} v{version}: no response", R::KEY));
    let mut bytes = response.freeze();
    let size = bytes.get_i32() as usize;
    assert_eq!(size, bytes.len());
    let header_version = R::Response::header_version(version);
    let header = ResponseHeader::decode(&mut bytes, header_version).unwrap();
    assert_eq!(
        header.correlation_id,
        i32::from(version) * 1000 + i32::from(R::KEY)
    );
    let decoded = R::Response::decode(&mut bytes, version).unwrap();
    assert!(
        !bytes.has_remaining(),
        "key {} v{version}: trailing bytes",
        R::KEY
    );
    decoded
}

fn versions(key: ApiKey) -> std::ops::RangeInclusive<i16> {
    let spec = APIS.iter().find(|spec| spec.key == key).unwrap();
    spec.min_version..=spec.max_version
}

fn batch() -> Bytes {
    let key = Some(Bytes::from_static(b"k"));
    let records = [plain_record(0, 1_000, key, Some(Bytes::from_static(b"v")))];
    let mut buffer = BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression: Compression::None,
    };
    RecordBatchEncoder::encode(&mut buffer, &records, &options).unwrap();
    buffer.freeze()
}

async fn open_broker(dir: &std::path::Path) -> std::sync::Arc<Broker> {
    let mut map = BTreeMap::new();
    map.insert("log.dirs".to_string(), dir.display().to_string());
    map.insert(
        "listeners".to_string(),
        "PLAINTEXT://127.0.0.1:9".to_string(),
    );
    map.insert("group.initial.rebalance.delay.ms".into(), "0".into());
    let partitions = OFFSETS_PARTITIONS.to_string();
    map.insert("offsets.topic.num.partitions".into(), partitions);
    Broker::open(BrokerConfig::from_map(map).unwrap(), None)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_api_and_version_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open_broker(dir.path()).await;

    for version in versions(ApiKey::ApiVersions) {
        let request = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("every-version"))
            .with_client_software_version(StrBytes::from_static_str("1.0"));
        let response = call(&broker, &request, version).await;
        assert_eq!(response.error_code, 0);
        assert_eq!(response.api_keys.len(), APIS.len());
        let finalized = response.finalized_features.iter().map(|f| f.name.as_str());
        let expected: &[&str] = if version >= 3 {
            &["metadata.version", "transaction.version", "group.version"]
        } else {
            &[]
        };
        assert_eq!(finalized.collect::<Vec<_>>(), expected, "v{version}");
    }
    admin_versions(&broker).await;
    let topic_id = broker.image().topic("t").unwrap().id;
    data_versions(&broker, topic_id).await;
    describe_versions(&broker).await;
    alter_config_versions(&broker).await;
    client_quota_versions(&broker).await;
    group_offset_versions(&broker).await;
    group_versions(&broker).await;
    consumer_group_versions(&broker, topic_id).await;
    legacy_offset_versions(&broker).await;
    acl_versions(&broker).await;
    log_dir_versions(&broker, dir.path()).await;
    update_features_versions(&broker).await;
}

/// UpdateFeatures at every version: transaction.version goes down (a safe downgrade,
/// v0's allow_downgrade) and back up, ApiVersions follows; a refused update answers
/// INVALID_UPDATE_VERSION (95) at the top level, and per feature up to v1.
async fn update_features_versions(broker: &Broker) {
    use kafka_protocol::messages::update_features_request::FeatureUpdateKey;
    let finalized_tv = || async {
        let request = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("every-version"))
            .with_client_software_version(StrBytes::from_static_str("1.0"));
        let response = call(broker, &request, 3).await;
        response
            .finalized_features
            .iter()
            .find(|f| f.name.as_str() == "transaction.version")
            .map(|f| f.max_version_level)
    };
    for version in versions(ApiKey::UpdateFeatures) {
        let update = |level: i16, downgrade: bool| {
            FeatureUpdateKey::default()
                .with_feature(StrBytes::from_static_str("transaction.version"))
                .with_max_version_level(level)
                .with_allow_downgrade(downgrade && version == 0)
                .with_upgrade_type(if downgrade && version > 0 { 2 } else { 1 })
        };
        let send = |updates: Vec<FeatureUpdateKey>| async move {
            let request = UpdateFeaturesRequest::default()
                .with_timeout_ms(5_000)
                .with_feature_updates(updates);
            call(broker, &request, version).await
        };
        let down = send(vec![update(1, true)]).await;
        assert_eq!(down.error_code, 0, "v{version}: {:?}", down.error_message);
        assert_eq!(finalized_tv().await, Some(1), "v{version}");
        let refused = send(vec![update(0, false)]).await;
        assert_eq!(refused.error_code, 95, "v{version}");
        let per_feature: Vec<i16> = refused.results.iter().map(|r| r.error_code).collect();
        let expected: &[i16] = if version < 2 { &[95] } else { &[] };
        assert_eq!(per_feature, expected, "v{version}");
        let up = send(vec![update(2, false)]).await;
        assert_eq!(up.error_code, 0, "v{version}: {:?}", up.error_message);
        assert_eq!(finalized_tv().await, Some(2), "v{version}");
    }
}

/// AlterClientQuotas and DescribeClientQuotas at every version: a quota is stored and
/// described back (named and default names); a bad key and a bad filter are refused.
async fn client_quota_versions(broker: &Broker) {
    use kafka_protocol::messages::alter_client_quotas_request::{EntityData, EntryData, OpData};
    use kafka_protocol::messages::describe_client_quotas_request::ComponentData;
    for version in versions(ApiKey::AlterClientQuotas) {
        let entry = |client: &str, key: &str, value: f64| {
            EntryData::default()
                .with_entity(vec![
                    EntityData::default()
                        .with_entity_type(StrBytes::from_static_str("client-id"))
                        .with_entity_name(Some(StrBytes::from_string(format!(
                            "{client}{version}"
                        )))),
                    EntityData::default()
                        .with_entity_type(StrBytes::from_static_str("user"))
                        .with_entity_name(None),
                ])
                .with_ops(vec![
                    OpData::default()
                        .with_key(StrBytes::from_string(key.to_string()))
                        .with_value(value),
                ])
        };
        let request = AlterClientQuotasRequest::default().with_entries(vec![
            entry("c", "producer_byte_rate", 1024.0),
            entry("d", "nope", 1.0),
        ]);
        let response = call(broker, &request, version).await;
        let codes: Vec<i16> = response.entries.iter().map(|e| e.error_code).collect();
        assert_eq!(codes, [0, 42], "v{version}");
        assert_eq!(response.entries[0].entity.len(), 2);
    }
    for version in versions(ApiKey::DescribeClientQuotas) {
        let request = DescribeClientQuotasRequest::default()
            .with_components(vec![
                ComponentData::default()
                    .with_entity_type(StrBytes::from_static_str("user"))
                    .with_match_type(1)
                    .with_match(None),
                ComponentData::default()
                    .with_entity_type(StrBytes::from_static_str("client-id"))
                    .with_match_type(2)
                    .with_match(None),
            ])
            .with_strict(true);
        let response = call(broker, &request, version).await;
        assert_eq!(response.error_code, 0, "v{version}");
        let entries = response.entries.unwrap();
        assert_eq!(entries.len(), 2, "v{version}");
        assert_eq!(entries[0].values[0].value, 1024.0);
        let bad = DescribeClientQuotasRequest::default().with_components(vec![
            ComponentData::default()
                .with_entity_type(StrBytes::from_static_str("topic"))
                .with_match_type(2),
        ]);
        let response = call(broker, &bad, version).await;
        assert_eq!(response.error_code, 35, "v{version}");
        assert!(response.entries.is_none());
    }
}

/// No authorizer: every ACL API answers SECURITY_DISABLED (54) at every version.
async fn acl_versions(broker: &Broker) {
    use kafka_protocol::messages::create_acls_request::AclCreation;
    use kafka_protocol::messages::delete_acls_request::DeleteAclsFilter;
    for version in versions(ApiKey::DescribeAcls) {
        let response = call(broker, &DescribeAclsRequest::default(), version).await;
        assert_eq!(response.error_code, 54, "v{version}");
    }
    for version in versions(ApiKey::CreateAcls) {
        let request = CreateAclsRequest::default().with_creations(vec![AclCreation::default()]);
        let response = call(broker, &request, version).await;
        let codes: Vec<i16> = response.results.iter().map(|r| r.error_code).collect();
        assert_eq!(codes, [54], "v{version}");
    }
    for version in versions(ApiKey::DeleteAcls) {
        let request = DeleteAclsRequest::default().with_filters(vec![DeleteAclsFilter::default()]);
        let response = call(broker, &request, version).await;
        let codes: Vec<i16> = response
            .filter_results
            .iter()
            .map(|r| r.error_code)
            .collect();
        assert_eq!(codes, [54], "v{version}");
    }
}

/// DeleteRecords, DescribeLogDirs and AlterReplicaLogDirs at every version, on "t" (which
/// holds records by now): the log start moves, the log dir lists the partition, another
/// dir is refused.
async fn log_dir_versions(broker: &Broker, log_dir: &std::path::Path) {
    use kafka_protocol::messages::alter_replica_log_dirs_request::{
        AlterReplicaLogDir, AlterReplicaLogDirTopic,
    };
    use kafka_protocol::messages::delete_records_request::{
        DeleteRecordsPartition, DeleteRecordsTopic,
    };
    for version in versions(ApiKey::DeleteRecords) {
        let offset = i64::from(version) + 1;
        let partition = |index, offset| {
            DeleteRecordsPartition::default()
                .with_partition_index(index)
                .with_offset(offset)
        };
        let topic = DeleteRecordsTopic::default()
            .with_name(name("t"))
            .with_partitions(vec![partition(0, offset), partition(9, 0)]);
        let request = DeleteRecordsRequest::default()
            .with_timeout_ms(5_000)
            .with_topics(vec![topic]);
        let response = call(broker, &request, version).await;
        let answers = &response.topics[0].partitions;
        let pairs: Vec<(i16, i64)> = answers
            .iter()
            .map(|p| (p.error_code, p.low_watermark))
            .collect();
        assert_eq!(pairs, [(0, offset), (3, -1)], "v{version}");
    }
    // v0 is v1's bytes, which kafka-protocol will not encode; protocol-tests send it.
    for version in versions(ApiKey::DescribeLogDirs).filter(|version| *version >= 1) {
        // An empty topic list asks for no partition; null asks for all.
        let none = call(broker, &DescribeLogDirsRequest::default(), version).await;
        assert!(none.results[0].topics.is_empty(), "v{version}");
        let all = DescribeLogDirsRequest::default().with_topics(None);
        let response = call(broker, &all, version).await;
        assert_eq!(response.results.len(), 1, "v{version}");
        let result = &response.results[0];
        assert_eq!(result.log_dir.as_str(), log_dir.display().to_string());
        let t = result
            .topics
            .iter()
            .find(|topic| topic.name.0.as_str() == "t");
        let partition = &t.unwrap().partitions[0];
        assert!(partition.partition_size > 0, "v{version}");
        assert_eq!((partition.offset_lag, partition.is_future_key), (0, false));
        if version >= 4 {
            assert!(
                result.total_bytes > 0 && result.usable_bytes > 0,
                "v{version}"
            );
        }
    }
    for version in versions(ApiKey::AlterReplicaLogDirs) {
        let topic = |topic_name: &str| {
            AlterReplicaLogDirTopic::default()
                .with_name(name(topic_name))
                .with_partitions(vec![0])
        };
        let dir = |path: String, topics| {
            AlterReplicaLogDir::default()
                .with_path(StrBytes::from_string(path))
                .with_topics(topics)
        };
        let here = log_dir.display().to_string();
        let request = AlterReplicaLogDirsRequest::default().with_dirs(vec![
            dir(here, vec![topic("t"), topic("missing")]),
            dir("/elsewhere".into(), vec![topic("u")]),
        ]);
        let response = call(broker, &request, version).await;
        let mut codes: Vec<(String, i16)> = (response.results.iter())
            .map(|r| (r.topic_name.0.to_string(), r.partitions[0].error_code))
            .collect();
        codes.sort();
        let expected = [("missing".into(), 3), ("t".into(), 0), ("u".into(), 57)];
        assert_eq!(codes, expected, "v{version}");
    }
}

/// Raw-bytes helpers for the versions kafka-protocol cannot encode (see api/legacy_*.rs).
mod legacy {
    use bytes::{Buf, BufMut, Bytes, BytesMut};
    use gracchus::api::handle_frame;
    use gracchus::broker::Broker;

    pub fn string(buffer: &mut BytesMut, text: &str) {
        buffer.put_i16(text.len() as i16);
        buffer.put_slice(text.as_bytes());
    }

    /// Request header v1 (non-flexible, client id), correlation id 4242.
    pub fn header(buffer: &mut BytesMut, key: i16, version: i16) {
        buffer.put_i16(key);
        buffer.put_i16(version);
        buffer.put_i32(4242);
        string(buffer, "legacy");
    }

    /// Sends one frame; returns the response body after its header v0.
    pub async fn send(broker: &Broker, frame: BytesMut) -> Bytes {
        super::save_seed(&frame);
        let response = handle_frame(broker, frame.freeze(), "/127.0.0.1")
            .await
            .unwrap()
            .unwrap();
        let mut bytes = response.freeze();
        assert_eq!(bytes.get_i32() as usize, bytes.len());
        assert_eq!(bytes.get_i32(), 4242);
        bytes
    }
}

/// OffsetCommit v0/v1 and OffsetFetch v0 as a pre-0.10 client sends them, in raw bytes.
async fn legacy_offset_versions(broker: &Broker) {
    use bytes::BufMut;
    use legacy::{header, send, string};
    for version in [0i16, 1] {
        let mut frame = BytesMut::new();
        header(&mut frame, 8, version);
        string(&mut frame, "legacy-group");
        if version == 1 {
            frame.put_i32(-1);
            string(&mut frame, "");
        }
        frame.put_i32(1);
        string(&mut frame, "t");
        frame.put_i32(1);
        frame.put_i32(0);
        frame.put_i64(100 + i64::from(version));
        if version == 1 {
            frame.put_i64(-1);
        }
        string(&mut frame, "old");
        let mut body = send(broker, frame).await;
        let response = OffsetCommitResponse::decode(&mut body, 2).unwrap();
        assert_eq!(response.topics[0].partitions[0].error_code, 0, "v{version}");
    }
    let mut frame = BytesMut::new();
    header(&mut frame, 9, 0);
    string(&mut frame, "legacy-group");
    frame.put_i32(1);
    string(&mut frame, "t");
    frame.put_i32(1);
    frame.put_i32(0);
    let mut body = send(broker, frame).await;
    let response = OffsetFetchResponse::decode(&mut body, 1).unwrap();
    let partition = &response.topics[0].partitions[0];
    assert_eq!(
        (partition.committed_offset, partition.metadata.as_deref()),
        (101, Some("old"))
    );
}

/// Joins `group` as a new consumer at `version` and returns (member id, generation).
async fn join(broker: &Broker, group: &str, version: i16) -> (StrBytes, i32) {
    use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
    let mut request = JoinGroupRequest::default()
        .with_group_id(GroupId(StrBytes::from_string(group.to_string())))
        .with_session_timeout_ms(10_000)
        .with_rebalance_timeout_ms(10_000)
        .with_protocol_type(StrBytes::from_static_str("consumer"))
        .with_protocols(vec![
            JoinGroupRequestProtocol::default()
                .with_name(StrBytes::from_static_str("range"))
                .with_metadata(Bytes::from_static(b"\0\0\0\0\0\0")),
        ]);
    let mut response = call(broker, &request, version).await;
    if version >= 4 {
        assert_eq!(
            response.error_code, 79,
            "v{version}: MEMBER_ID_REQUIRED first"
        );
        request = request.with_member_id(response.member_id.clone());
        response = call(broker, &request, version).await;
    }
    assert_eq!(response.error_code, 0, "v{version}");
    assert_eq!(response.leader, response.member_id, "v{version}");
    assert_eq!(response.members.len(), 1, "v{version}");
    (response.member_id, response.generation_id)
}

async fn group_versions(broker: &Broker) {
    use kafka_protocol::messages::leave_group_request::MemberIdentity;
    use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
    let group = |text: &str| GroupId(StrBytes::from_string(text.to_string()));
    for version in versions(ApiKey::JoinGroup) {
        let (member, generation) = join(broker, &format!("jg{version}"), version).await;
        assert_eq!(generation, 1, "v{version}");
        assert!(!member.is_empty());
    }
    let (member, generation) = join(broker, "sg", 9).await;
    for version in versions(ApiKey::SyncGroup) {
        let request = SyncGroupRequest::default()
            .with_group_id(group("sg"))
            .with_generation_id(generation)
            .with_member_id(member.clone())
            .with_assignments(vec![
                SyncGroupRequestAssignment::default()
                    .with_member_id(member.clone())
                    .with_assignment(Bytes::from_static(b"plan")),
            ]);
        let response = call(broker, &request, version).await;
        assert_eq!(response.error_code, 0, "v{version}");
        assert_eq!(&response.assignment[..], b"plan", "v{version}");
    }
    for version in versions(ApiKey::Heartbeat) {
        let request = HeartbeatRequest::default()
            .with_group_id(group("sg"))
            .with_generation_id(generation)
            .with_member_id(member.clone());
        assert_eq!(
            call(broker, &request, version).await.error_code,
            0,
            "v{version}"
        );
        let stale = request.with_generation_id(generation + 5);
        assert_eq!(
            call(broker, &stale, version).await.error_code,
            22,
            "v{version}"
        );
    }
    for version in versions(ApiKey::DescribeGroups) {
        let request =
            DescribeGroupsRequest::default().with_groups(vec![group("sg"), group("none")]);
        let response = call(broker, &request, version).await;
        assert_eq!(
            response.groups[0].group_state.as_str(),
            "Stable",
            "v{version}"
        );
        assert_eq!(response.groups[0].members.len(), 1, "v{version}");
        assert_eq!(
            response.groups[1].group_state.as_str(),
            "Dead",
            "v{version}"
        );
        // v6 (KIP-1043) also says why: GROUP_ID_NOT_FOUND with a message.
        let missing_code = if version >= 6 { 69 } else { 0 };
        assert_eq!(response.groups[1].error_code, missing_code, "v{version}");
        assert_eq!(response.groups[1].error_message.is_some(), version >= 6);
    }
    for version in versions(ApiKey::ListGroups) {
        let response = call(broker, &ListGroupsRequest::default(), version).await;
        assert!(
            response
                .groups
                .iter()
                .any(|g| g.group_id.0.as_str() == "sg"),
            "v{version}"
        );
    }
    for version in versions(ApiKey::OffsetDelete) {
        let request = OffsetDeleteRequest::default().with_group_id(group("g"));
        assert_eq!(
            call(broker, &request, version).await.error_code,
            0,
            "v{version}"
        );
    }
    for version in versions(ApiKey::LeaveGroup) {
        let name = format!("lg{version}");
        let (member, _) = join(broker, &name, 9).await;
        let request = if version >= 3 {
            LeaveGroupRequest::default()
                .with_group_id(group(&name))
                .with_members(vec![MemberIdentity::default().with_member_id(member)])
        } else {
            LeaveGroupRequest::default()
                .with_group_id(group(&name))
                .with_member_id(member)
        };
        assert_eq!(
            call(broker, &request, version).await.error_code,
            0,
            "v{version}"
        );
    }
    for version in versions(ApiKey::DeleteGroups) {
        let request = DeleteGroupsRequest::default().with_groups_names(vec![
            group(&format!("lg{}", version + 3)),
            group("sg"),
            group("none"),
        ]);
        let codes: Vec<i16> = call(broker, &request, version)
            .await
            .results
            .iter()
            .map(|r| r.error_code)
            .collect();
        assert_eq!(codes, [0, 68, 69], "v{version}");
    }
}

const OFFSETS_PARTITIONS: i32 = 3;

/// ConsumerGroupHeartbeat and ConsumerGroupDescribe at every version: a member joins (v0:
/// the broker makes its id; v1: the client does), is given the topic, is described with
/// its assignment at every describe version, and leaves.
async fn consumer_group_versions(broker: &Broker, topic_id: uuid::Uuid) {
    wait_offsets_loaded(broker).await;
    for version in versions(ApiKey::ConsumerGroupHeartbeat) {
        let group = GroupId(StrBytes::from_string(format!("cg-{version}")));
        let chosen = if version >= 1 {
            uuid::Uuid::new_v4().to_string()
        } else {
            String::new()
        };
        let join = ConsumerGroupHeartbeatRequest::default()
            .with_group_id(group.clone())
            .with_member_id(StrBytes::from_string(chosen.clone()))
            .with_member_epoch(0)
            .with_rebalance_timeout_ms(30_000)
            .with_subscribed_topic_names(Some(vec![name("t")]))
            .with_topic_partitions(Some(Vec::new()));
        let joined = call(broker, &join, version).await;
        assert_eq!(
            joined.error_code, 0,
            "v{version}: {:?}",
            joined.error_message
        );
        assert_eq!(joined.member_epoch, 1, "v{version}");
        let member_id = joined.member_id.clone().unwrap();
        if version >= 1 {
            assert_eq!(member_id.as_str(), chosen);
        } else {
            assert!(!member_id.is_empty());
        }
        let assignment = joined.assignment.unwrap();
        assert_eq!(assignment.topic_partitions.len(), 1, "v{version}");
        assert_eq!(assignment.topic_partitions[0].topic_id, topic_id);
        for describe_version in versions(ApiKey::ConsumerGroupDescribe) {
            let request = ConsumerGroupDescribeRequest::default()
                .with_group_ids(vec![group.clone(), GroupId(StrBytes::from_static_str("g"))])
                .with_include_authorized_operations(true);
            let response = call(broker, &request, describe_version).await;
            let described = &response.groups[0];
            assert_eq!(described.error_code, 0);
            assert_eq!(described.group_state.as_str(), "Stable");
            assert_eq!((described.group_epoch, described.assignment_epoch), (1, 1));
            let member = &described.members[0];
            assert_eq!(member.member_id, member_id);
            let topic = &member.assignment.topic_partitions[0];
            assert_eq!(topic.topic_name.0.as_str(), "t");
            // "g" is a classic group: not described here (clients fall back).
            assert_eq!(response.groups[1].error_code, 69, "v{describe_version}");
        }
        let leave = ConsumerGroupHeartbeatRequest::default()
            .with_group_id(group)
            .with_member_id(member_id)
            .with_member_epoch(-1);
        let left = call(broker, &leave, version).await;
        assert_eq!((left.error_code, left.member_epoch), (0, -1), "v{version}");
    }
}

/// Waits until every offsets partition is loaded: FindCoordinator creates them and their
/// loads run in the background; until then group requests answer
/// COORDINATOR_LOAD_IN_PROGRESS, which real clients retry.
async fn wait_offsets_loaded(broker: &Broker) {
    for _ in 0..1000 {
        if (0..OFFSETS_PARTITIONS).all(|partition| broker.groups.is_loaded(partition)) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("the offsets partitions did not load in 10 s");
}

async fn group_offset_versions(broker: &Broker) {
    use kafka_protocol::messages::offset_commit_request::{
        OffsetCommitRequestPartition, OffsetCommitRequestTopic,
    };
    use kafka_protocol::messages::offset_fetch_request::{
        OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
    };
    // The first FindCoordinator creates the offsets topic and waits for it at most 1 s
    // (COORDINATOR_NOT_AVAILABLE after, which clients retry): retried here until found.
    let first = FindCoordinatorRequest::default().with_key(StrBytes::from_static_str("g"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while call(broker, &first, 0).await.error_code != 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "no group coordinator in 30 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    for version in versions(ApiKey::FindCoordinator) {
        let request = if version >= 4 {
            FindCoordinatorRequest::default()
                .with_coordinator_keys(vec![StrBytes::from_static_str("g"), StrBytes::new()])
        } else {
            FindCoordinatorRequest::default().with_key(StrBytes::from_static_str("g"))
        };
        let response = call(broker, &request, version).await;
        if version >= 4 {
            assert_eq!(response.coordinators[0].node_id.0, 1, "v{version}");
            assert_eq!(response.coordinators[1].error_code, 24, "v{version}");
        } else {
            assert_eq!(
                (response.error_code, response.node_id.0),
                (0, 1),
                "v{version}"
            );
        }
    }
    wait_offsets_loaded(broker).await;
    // v0-1 (hand-decoded, see api/legacy_offsets.rs) are covered by legacy_offset_versions.
    for version in versions(ApiKey::OffsetCommit).filter(|v| *v >= 2) {
        let partition = |index, offset| {
            OffsetCommitRequestPartition::default()
                .with_partition_index(index)
                .with_committed_offset(offset)
                .with_committed_metadata(Some(StrBytes::from_static_str("meta")))
        };
        let request = OffsetCommitRequest::default()
            .with_group_id(GroupId(StrBytes::from_static_str("g")))
            .with_generation_id_or_member_epoch(-1)
            .with_topics(vec![
                OffsetCommitRequestTopic::default()
                    .with_name(name("t"))
                    .with_partitions(vec![partition(0, i64::from(version)), partition(7, 1)]),
            ]);
        let response = call(broker, &request, version).await;
        let codes: Vec<i16> = response.topics[0]
            .partitions
            .iter()
            .map(|p| p.error_code)
            .collect();
        assert_eq!(codes, [0, 3], "v{version}");
    }
    for version in versions(ApiKey::OffsetFetch).filter(|v| *v >= 1) {
        let (offset, metadata) = if version >= 8 {
            let group = OffsetFetchRequestGroup::default()
                .with_group_id(GroupId(StrBytes::from_static_str("g")))
                .with_topics(Some(vec![
                    OffsetFetchRequestTopics::default()
                        .with_name(name("t"))
                        .with_partition_indexes(vec![0, 1]),
                ]));
            let request = OffsetFetchRequest::default().with_groups(vec![group]);
            let response = call(broker, &request, version).await;
            let partitions = &response.groups[0].topics[0].partitions;
            assert_eq!(partitions[1].committed_offset, -1);
            (
                partitions[0].committed_offset,
                partitions[0].metadata.clone(),
            )
        } else {
            let topic = OffsetFetchRequestTopic::default()
                .with_name(name("t"))
                .with_partition_indexes(vec![0, 1]);
            let request = OffsetFetchRequest::default()
                .with_group_id(GroupId(StrBytes::from_static_str("g")))
                .with_topics(Some(vec![topic]));
            let response = call(broker, &request, version).await;
            let partitions = &response.topics[0].partitions;
            assert_eq!(partitions[1].committed_offset, -1);
            (
                partitions[0].committed_offset,
                partitions[0].metadata.clone(),
            )
        };
        assert_eq!(offset, 9, "v{version}");
        assert_eq!(metadata.as_deref(), Some("meta"), "v{version}");
    }
    txn_offset_commit_versions(broker).await;
}

/// TxnOffsetCommit at every version, on its refusals made before any write (a write
/// needs the transactional partition append): an unknown partition, and from v3 on a
/// generation for a group that does not exist.
async fn txn_offset_commit_versions(broker: &Broker) {
    use kafka_protocol::messages::txn_offset_commit_request::{
        TxnOffsetCommitRequestPartition, TxnOffsetCommitRequestTopic,
    };
    for version in versions(ApiKey::TxnOffsetCommit) {
        let partition = TxnOffsetCommitRequestPartition::default()
            .with_partition_index(7)
            .with_committed_offset(1)
            .with_committed_metadata(Some(StrBytes::from_static_str("m")));
        let request = TxnOffsetCommitRequest::default()
            .with_transactional_id(TransactionalId(StrBytes::from_static_str("tx")))
            .with_group_id(GroupId(StrBytes::from_static_str("txn-g")))
            .with_producer_id(ProducerId(1000))
            .with_producer_epoch(0)
            .with_topics(vec![
                TxnOffsetCommitRequestTopic::default()
                    .with_name(name("t"))
                    .with_partitions(vec![partition]),
            ]);
        let response = call(broker, &request, version).await;
        assert_eq!(response.topics[0].partitions[0].error_code, 3, "v{version}");
        if version >= 3 {
            let member = request
                .clone()
                .with_generation_id(5)
                .with_member_id(StrBytes::from_static_str("member-1"));
            let response = call(broker, &member, version).await;
            assert_eq!(
                response.topics[0].partitions[0].error_code, 22,
                "v{version}"
            );
        }
    }
}

async fn admin_versions(broker: &Broker) {
    for version in versions(ApiKey::CreateTopics) {
        let config = CreatableTopicConfig::default()
            .with_name(StrBytes::from_static_str("retention.ms"))
            .with_value(Some(StrBytes::from_static_str("1000")));
        let topic = |topic: &str| {
            CreatableTopic::default()
                .with_name(name(topic))
                .with_num_partitions(1)
                .with_replication_factor(1)
                .with_configs(vec![config.clone()])
        };
        let request = CreateTopicsRequest::default().with_topics(vec![
            topic(&format!("c{version}")),
            topic("bad/name"),
            topic(&format!("c{version}"))
                .with_name(name("t-rf"))
                .with_replication_factor(3),
        ]);
        let response = call(broker, &request, version).await;
        let codes: Vec<i16> = response.topics.iter().map(|t| t.error_code).collect();
        assert_eq!(codes, [0, 17, 38], "v{version}");
    }
    let request = CreateTopicsRequest::default().with_topics(vec![
        CreatableTopic::default()
            .with_name(name("t"))
            .with_num_partitions(2)
            .with_replication_factor(1),
    ]);
    assert_eq!(call(broker, &request, 7).await.topics[0].error_code, 0);

    for version in versions(ApiKey::CreatePartitions) {
        let topic = |count| {
            CreatePartitionsTopic::default()
                .with_name(name("c2"))
                .with_count(count)
                .with_assignments(None)
        };
        let request = CreatePartitionsRequest::default().with_topics(vec![
            topic(2 + i32::from(version)),
            CreatePartitionsTopic::default()
                .with_name(name("nope"))
                .with_count(3),
        ]);
        let response = call(broker, &request, version).await;
        let codes: Vec<i16> = response.results.iter().map(|t| t.error_code).collect();
        assert_eq!(codes, [0, 3], "v{version}");
    }
    for version in versions(ApiKey::DeleteTopics) {
        let doomed = format!("c{}", version + 1);
        let request = if version >= 6 {
            DeleteTopicsRequest::default().with_topics(vec![
                DeleteTopicState::default().with_name(Some(name(&doomed))),
                DeleteTopicState::default().with_name(Some(name("nope"))),
            ])
        } else {
            DeleteTopicsRequest::default().with_topic_names(vec![name(&doomed), name("nope")])
        };
        let response = call(broker, &request, version).await;
        let codes: Vec<i16> = response.responses.iter().map(|t| t.error_code).collect();
        assert_eq!(codes, [0, 3], "v{version}");
    }
}

async fn data_versions(broker: &Broker, topic_id: uuid::Uuid) {
    for version in versions(ApiKey::Produce) {
        let partition = |index| {
            PartitionProduceData::default()
                .with_index(index)
                .with_records(Some(batch()))
        };
        let request = ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(1000)
            .with_topic_data(vec![
                TopicProduceData::default()
                    .with_name(name("t"))
                    .with_partition_data(vec![partition(0), partition(9)]),
            ]);
        let response = call(broker, &request, version).await;
        let partitions = &response.responses[0].partition_responses;
        assert_eq!(partitions[0].error_code, 0, "v{version}");
        assert_eq!(
            partitions[0].base_offset,
            i64::from(version - 3),
            "v{version}"
        );
        assert_eq!(partitions[1].error_code, 3, "v{version}");
    }
    for version in versions(ApiKey::Fetch) {
        let make = |topic_name: &str, id: uuid::Uuid, offset: i64| {
            let partition = FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(offset)
                .with_partition_max_bytes(1 << 20);
            let topic = FetchTopic::default().with_partitions(vec![partition]);
            if version >= 13 {
                topic.with_topic_id(id)
            } else {
                topic.with_topic(name(topic_name))
            }
        };
        let request = FetchRequest::default()
            .with_max_wait_ms(0)
            .with_max_bytes(1 << 20)
            .with_replica_id(BrokerId(-1))
            .with_topics(vec![
                make("t", topic_id, 1),
                make("nope", uuid::Uuid::new_v4(), 0),
                make("t", topic_id, 99),
            ]);
        let response = call(broker, &request, version).await;
        let first = &response.responses[0].partitions[0];
        assert_eq!(first.error_code, 0, "v{version}");
        assert!(
            first.records.as_ref().is_some_and(|r| !r.is_empty()),
            "v{version}"
        );
        assert_eq!(first.high_watermark, 10, "v{version}");
        let unknown = if version >= 13 { 100 } else { 3 };
        assert_eq!(
            response.responses[1].partitions[0].error_code, unknown,
            "v{version}"
        );
        assert_eq!(
            response.responses[2].partitions[0].error_code, 1,
            "v{version}"
        );
    }
    for version in versions(ApiKey::ListOffsets) {
        let partitions = [-2, -1, 0].map(|timestamp| {
            ListOffsetsPartition::default()
                .with_partition_index(0)
                .with_timestamp(timestamp)
        });
        let request = ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(vec![
                ListOffsetsTopic::default()
                    .with_name(name("t"))
                    .with_partitions(partitions.to_vec()),
                ListOffsetsTopic::default()
                    .with_name(name("nope"))
                    .with_partitions(vec![partitions[0].clone()]),
            ]);
        let response = call(broker, &request, version).await;
        let offsets: Vec<i64> = response.topics[0]
            .partitions
            .iter()
            .map(|p| p.offset)
            .collect();
        assert_eq!(offsets, [0, 10, 0], "v{version}");
        assert_eq!(response.topics[1].partitions[0].error_code, 3, "v{version}");
    }
    // v0-1 (hand-encoded, see api/legacy_leader_epoch.rs): legacy_leader_epoch_versions.
    for version in versions(ApiKey::OffsetForLeaderEpoch).filter(|v| *v >= 2) {
        use kafka_protocol::messages::offset_for_leader_epoch_request::{
            OffsetForLeaderPartition, OffsetForLeaderTopic,
        };
        let partition = |index| {
            OffsetForLeaderPartition::default()
                .with_partition(index)
                .with_current_leader_epoch(-1)
                .with_leader_epoch(0)
        };
        let request = OffsetForLeaderEpochRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(vec![
                OffsetForLeaderTopic::default()
                    .with_topic(name("t"))
                    .with_partitions(vec![partition(0), partition(9)]),
            ]);
        let response = call(broker, &request, version).await;
        let answers: Vec<(i16, i32, i64)> = response.topics[0]
            .partitions
            .iter()
            .map(|p| (p.error_code, p.leader_epoch, p.end_offset))
            .collect();
        assert_eq!(answers, [(0, 0, 10), (3, -1, -1)], "v{version}");
    }
    legacy_leader_epoch_versions(broker).await;
    for version in versions(ApiKey::InitProducerId) {
        let response = call(
            broker,
            &InitProducerIdRequest::default()
                .with_transactional_id(None)
                .with_transaction_timeout_ms(1000),
            version,
        )
        .await;
        assert_eq!(response.error_code, 0);
        assert!(response.producer_id.0 >= 0);
    }
}

async fn describe_versions(broker: &Broker) {
    for version in versions(ApiKey::Metadata) {
        let topics = vec![
            MetadataRequestTopic::default().with_name(Some(name("t"))),
            MetadataRequestTopic::default().with_name(Some(name("bad/name"))),
        ];
        let request = MetadataRequest::default()
            .with_topics(Some(topics))
            .with_allow_auto_topic_creation(true);
        let response = call(broker, &request, version).await;
        assert_eq!(response.brokers.len(), 1, "v{version}");
        assert_eq!(response.topics[0].partitions.len(), 2, "v{version}");
        assert_eq!(response.topics[1].error_code, 17, "v{version}");
        let all = call(
            broker,
            &MetadataRequest::default().with_topics(if version == 0 { Some(vec![]) } else { None }),
            version,
        )
        .await;
        let names: Vec<_> = all.topics.iter().filter_map(|t| t.name.as_ref()).collect();
        assert_eq!(names, [&name("t")], "v{version}");
    }
    for version in versions(ApiKey::DescribeConfigs) {
        let resource = |kind: i8, resource: &str| {
            DescribeConfigsResource::default()
                .with_resource_type(kind)
                .with_resource_name(StrBytes::from_string(resource.to_string()))
        };
        let request = DescribeConfigsRequest::default()
            .with_include_synonyms(true)
            .with_resources(vec![
                resource(2, "t"),
                resource(4, "1"),
                resource(2, "nope"),
            ]);
        let response = call(broker, &request, version).await;
        assert_eq!(response.results[0].error_code, 0, "v{version}");
        assert!(
            response.results[0]
                .configs
                .iter()
                .any(|c| c.name.as_str() == "retention.ms")
        );
        assert!(
            response.results[1]
                .configs
                .iter()
                .any(|c| c.name.as_str() == "log.dirs")
        );
        assert_eq!(response.results[2].error_code, 3, "v{version}");
    }
    for version in versions(ApiKey::DescribeCluster) {
        let response = call(
            broker,
            &DescribeClusterRequest::default().with_endpoint_type(1),
            version,
        )
        .await;
        assert_eq!(response.error_code, 0);
        assert_eq!(response.brokers.len(), 1);
    }
    describe_quorum_versions(broker).await;
    elect_leaders_versions(broker).await;
    partition_reassignment_versions(broker).await;
    let request = DescribeTopicPartitionsRequest::default()
        .with_response_partition_limit(1)
        .with_topics(vec![TopicRequest::default().with_name(name("t"))]);
    let response = call(broker, &request, 0).await;
    assert_eq!(response.topics[0].partitions.len(), 1);
    assert_eq!(
        response.next_cursor.as_ref().map(|c| c.partition_index),
        Some(1)
    );
    // The next page from that cursor, then a cursor past the end (issue 6: it panicked).
    for (start, expected) in [(1, vec![1]), (100, vec![])] {
        let cursor = describe_topic_partitions_request::Cursor::default()
            .with_topic_name(name("t"))
            .with_partition_index(start);
        let page = call(broker, &request.clone().with_cursor(Some(cursor)), 0).await;
        let indexes: Vec<i32> = page.topics[0]
            .partitions
            .iter()
            .map(|p| p.partition_index)
            .collect();
        assert_eq!((page.topics[0].error_code, indexes), (0, expected));
        assert!(page.next_cursor.is_none());
    }
}

/// AlterConfigs and IncrementalAlterConfigs at every version: a topic value is stored
/// and described back as DYNAMIC_TOPIC_CONFIG; an unknown topic and key are refused.
async fn alter_config_versions(broker: &Broker) {
    use kafka_protocol::messages::alter_configs_request::{AlterConfigsResource, AlterableConfig};
    use kafka_protocol::messages::incremental_alter_configs_request as incremental;
    let retention = |broker: &Broker| {
        let image = broker.image();
        image
            .topic("t")
            .unwrap()
            .configs
            .get("retention.ms")
            .cloned()
    };
    for version in versions(ApiKey::AlterConfigs) {
        let value = format!("{}", 100_000 + i32::from(version));
        let resource = |topic: &str, key: &str| {
            AlterConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(StrBytes::from_string(topic.to_string()))
                .with_configs(vec![
                    AlterableConfig::default()
                        .with_name(StrBytes::from_string(key.to_string()))
                        .with_value(Some(StrBytes::from_string(value.clone()))),
                ])
        };
        let codes = |request: AlterConfigsRequest| async move {
            let response = call(broker, &request, version).await;
            response
                .responses
                .iter()
                .map(|r| r.error_code)
                .collect::<Vec<i16>>()
        };
        let unknown =
            AlterConfigsRequest::default().with_resources(vec![resource("t", "no.such.config")]);
        assert_eq!(codes(unknown).await, [40], "v{version}");
        // A resource named twice: every copy refused, none applied (INVALID_REQUEST).
        let twice = AlterConfigsRequest::default().with_resources(vec![
            resource("t", "retention.ms"),
            resource("t", "retention.ms"),
        ]);
        assert_eq!(codes(twice).await, [42, 42], "v{version}");
        let request = AlterConfigsRequest::default().with_resources(vec![
            resource("t", "retention.ms"),
            resource("nope", "retention.ms"),
        ]);
        assert_eq!(codes(request).await, [0, 3], "v{version}");
        assert_eq!(retention(broker), Some(value), "v{version}");
    }
    for version in versions(ApiKey::IncrementalAlterConfigs) {
        let value = format!("{}", 200_000 + i32::from(version));
        let op = |key: &str, op: i8| {
            incremental::AlterableConfig::default()
                .with_name(StrBytes::from_string(key.to_string()))
                .with_config_operation(op)
                .with_value(Some(StrBytes::from_string(value.clone())))
        };
        let resource = |ops| {
            incremental::AlterConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(StrBytes::from_static_str("t"))
                .with_configs(ops)
        };
        let codes = |resources| async move {
            let request = IncrementalAlterConfigsRequest::default().with_resources(resources);
            let response = call(broker, &request, version).await;
            response
                .responses
                .iter()
                .map(|r| r.error_code)
                .collect::<Vec<i16>>()
        };
        // APPEND to a non-list config: INVALID_CONFIG.
        assert_eq!(
            codes(vec![resource(vec![op("segment.ms", 2)])]).await,
            [40],
            "v{version}"
        );
        // One resource twice: INVALID_REQUEST for both, nothing applied.
        let twice = vec![resource(vec![op("retention.ms", 0)]), resource(vec![])];
        assert_eq!(codes(twice).await, [42, 42], "v{version}");
        assert_eq!(
            codes(vec![resource(vec![op("retention.ms", 0)])]).await,
            [0],
            "v{version}"
        );
        assert_eq!(retention(broker), Some(value), "v{version}");
    }
    let request = DescribeConfigsRequest::default().with_resources(vec![
        kafka_protocol::messages::describe_configs_request::DescribeConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(StrBytes::from_static_str("t"))
            .with_configuration_keys(Some(vec![StrBytes::from_static_str("retention.ms")])),
    ]);
    let response = call(broker, &request, 4).await;
    let described = &response.results[0].configs[0];
    assert_eq!(described.config_source, 1);
    assert!(
        described
            .value
            .as_ref()
            .is_some_and(|v| v.starts_with("2000"))
    );
}

/// DescribeQuorum on the metadata partition (the status, with v2's nodes) and on another
/// partition (UNKNOWN_TOPIC_OR_PARTITION), at every version.
async fn describe_quorum_versions(broker: &Broker) {
    use kafka_protocol::messages::describe_quorum_request::{PartitionData, TopicData};
    let ask = |topic: &str, partition: i32| {
        DescribeQuorumRequest::default().with_topics(vec![
            TopicData::default()
                .with_topic_name(name(topic))
                .with_partitions(vec![
                    PartitionData::default().with_partition_index(partition),
                ]),
        ])
    };
    for version in versions(ApiKey::DescribeQuorum) {
        let response = call(broker, &ask("__cluster_metadata", 0), version).await;
        assert_eq!(response.error_code, 0);
        let partition = &response.topics[0].partitions[0];
        assert_eq!((partition.error_code, partition.leader_id.0), (0, 1));
        assert!(partition.leader_epoch >= 1 && partition.high_watermark > 0);
        assert_eq!(partition.current_voters[0].replica_id.0, 1);
        assert_eq!(
            response.nodes.len(),
            usize::from(version >= 2),
            "v{version}"
        );
        let response = call(broker, &ask("__cluster_metadata", 1), version).await;
        assert_eq!(response.topics[0].partitions[0].error_code, 3, "v{version}");
    }
}

/// ElectLeaders on "t"-0 (led by its preferred replica: ELECTION_NOT_NEEDED), on a missing
/// topic (UNKNOWN_TOPIC_OR_PARTITION), for every partition (null: nothing to report), and
/// with an unknown election type (INVALID_REQUEST, at the top from v1), at every version.
async fn elect_leaders_versions(broker: &Broker) {
    use kafka_protocol::messages::elect_leaders_request::TopicPartitions;
    let named = Some(vec![
        TopicPartitions::default()
            .with_topic(name("t"))
            .with_partitions(vec![0]),
        TopicPartitions::default()
            .with_topic(name("no-such-topic"))
            .with_partitions(vec![0]),
    ]);
    for version in versions(ApiKey::ElectLeaders) {
        let request = ElectLeadersRequest::default()
            .with_topic_partitions(named.clone())
            .with_timeout_ms(10_000);
        let response = call(broker, &request, version).await;
        assert_eq!(response.error_code, 0, "v{version}");
        let codes: Vec<(String, i32, i16)> = response
            .replica_election_results
            .iter()
            .flat_map(|topic| {
                let name = topic.topic.0.to_string();
                topic
                    .partition_result
                    .iter()
                    .map(move |p| (name.clone(), p.partition_id, p.error_code))
            })
            .collect();
        let expected = [
            ("t".to_string(), 0, 84),
            ("no-such-topic".to_string(), 0, 3),
        ];
        assert_eq!(codes, expected, "v{version}");
        let all = ElectLeadersRequest::default().with_timeout_ms(10_000);
        let response = call(broker, &all, version).await;
        let reported = response
            .replica_election_results
            .iter()
            .map(|topic| topic.partition_result.len())
            .sum::<usize>();
        assert_eq!(
            reported, 0,
            "v{version}: every partition is led by its preferred replica"
        );
        if version >= 1 {
            let bad = ElectLeadersRequest::default()
                .with_election_type(7)
                .with_topic_partitions(named.clone());
            let response = call(broker, &bad, version).await;
            assert_eq!(response.error_code, 42, "v{version}");
        }
    }
}

/// AlterPartitionReassignments on the one-broker "t"-0: to its own replicas (nothing to
/// do), a duplicate and an unregistered broker (INVALID_REPLICA_ASSIGNMENT), a missing
/// topic (UNKNOWN_TOPIC_OR_PARTITION), a cancel of nothing (NO_REASSIGNMENT_IN_PROGRESS);
/// ListPartitionReassignments then lists nothing moving.
async fn partition_reassignment_versions(broker: &Broker) {
    use kafka_protocol::messages::alter_partition_reassignments_request::{
        ReassignablePartition, ReassignableTopic,
    };
    use kafka_protocol::messages::list_partition_reassignments_request::ListPartitionReassignmentsTopics;
    let target = |replicas: Option<Vec<i32>>, index: i32| {
        ReassignablePartition::default()
            .with_partition_index(index)
            .with_replicas(replicas.map(|ids| ids.into_iter().map(BrokerId).collect()))
    };
    for version in versions(ApiKey::AlterPartitionReassignments) {
        let topics = vec![
            ReassignableTopic::default()
                .with_name(name("t"))
                .with_partitions(vec![
                    target(Some(vec![1]), 0),
                    target(Some(vec![1, 1]), 0),
                    target(Some(vec![7]), 0),
                    target(None, 0),
                ]),
            ReassignableTopic::default()
                .with_name(name("no-such-topic"))
                .with_partitions(vec![target(Some(vec![1]), 0)]),
        ];
        let request = AlterPartitionReassignmentsRequest::default()
            .with_timeout_ms(10_000)
            .with_topics(topics);
        let response = call(broker, &request, version).await;
        assert_eq!(response.error_code, 0, "v{version}");
        let codes: Vec<(String, i16)> = (response.responses.iter())
            .flat_map(|topic| {
                let name = topic.name.0.to_string();
                (topic.partitions.iter()).map(move |p| (name.clone(), p.error_code))
            })
            .collect();
        let t = |code: i16| ("t".to_string(), code);
        let expected = [t(0), t(39), t(39), t(85), ("no-such-topic".to_string(), 3)];
        assert_eq!(codes, expected, "v{version}");
    }
    for version in versions(ApiKey::ListPartitionReassignments) {
        let all = ListPartitionReassignmentsRequest::default().with_timeout_ms(10_000);
        let response = call(broker, &all, version).await;
        assert_eq!((response.error_code, response.topics.len()), (0, 0));
        let named = all.with_topics(Some(vec![
            ListPartitionReassignmentsTopics::default()
                .with_name(name("t"))
                .with_partition_indexes(vec![0, 1]),
        ]));
        let response = call(broker, &named, version).await;
        assert_eq!((response.error_code, response.topics.len()), (0, 0));
    }
}

/// OffsetForLeaderEpoch v0 and v1 in raw bytes: topic "t" holds 10 records of epoch 0.
async fn legacy_leader_epoch_versions(broker: &Broker) {
    use bytes::BufMut;
    use legacy::{header, send, string};
    for version in [0i16, 1] {
        let mut frame = BytesMut::new();
        header(&mut frame, ApiKey::OffsetForLeaderEpoch as i16, version);
        frame.put_i32(2);
        string(&mut frame, "t");
        frame.put_i32(3);
        for (partition, epoch) in [(0, 0), (9, 0), (0, 1)] {
            frame.put_i32(partition);
            frame.put_i32(epoch);
        }
        string(&mut frame, "nope");
        frame.put_i32(1);
        frame.put_i32(0);
        frame.put_i32(0);
        let mut body = send(broker, frame).await;
        let mut answers = Vec::new();
        for _ in 0..body.get_i32() {
            let topic_length = body.get_i16() as usize;
            let topic = String::from_utf8(body.split_to(topic_length).to_vec()).unwrap();
            for _ in 0..body.get_i32() {
                let (error, partition) = (body.get_i16(), body.get_i32());
                let epoch = if version >= 1 {
                    Some(body.get_i32())
                } else {
                    None
                };
                answers.push((topic.clone(), error, partition, epoch, body.get_i64()));
            }
        }
        assert!(!body.has_remaining(), "v{version}: trailing bytes");
        let epoch = |value| (version >= 1).then_some(value);
        let expected = [
            ("t".to_string(), 0, 0, epoch(0), 10),
            ("t".to_string(), 3, 9, epoch(-1), -1),
            ("t".to_string(), 0, 0, epoch(-1), -1),
            ("nope".to_string(), 3, 0, epoch(-1), -1),
        ];
        assert_eq!(answers, expected, "v{version}");
    }
}
