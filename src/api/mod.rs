//! The Kafka API edge: the one table of supported APIs and versions, request decoding,
//! dispatch to one handler per API family, and response encoding.
//!
//! Callers: `server::connection` hands each whole frame to [`handle_frame`]. This module
//! is the only place that knows Kafka message structs; handlers call the broker's parts
//! and map their typed errors to Kafka error codes ([`errors`]).

mod acls;
mod add_partitions_to_txn;
mod admin_topics;
mod alter_configs;
mod api_versions;
mod client_quotas;
mod cluster;
mod configs;
pub mod consumer_groups;
mod delete_records;
mod describe_producers;
mod describe_quorum;
mod elect_leaders;
mod end_txn;
mod error_counts;
pub mod errors;
mod fetch;
mod fetch_request;
mod fetch_response;
pub mod fetch_session;
mod group_admin;
mod group_offsets;
mod groups;
mod init_producer_id;
mod leader_check;
mod leader_hint;
mod legacy_leader_epoch;
mod legacy_offsets;
mod list_offsets;
mod log_dirs;
mod metadata;
mod offset_for_leader_epoch;
pub mod outgoing;
mod partition_reassignments;
mod produce;
mod request_reader;
pub mod throttle;
mod transactions_admin;
mod txn_coordinator;
mod txn_markers;
mod txn_offset_commit;
mod txn_verify;
mod update_features;

use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use thiserror::Error;

use crate::broker::Broker;
use crate::controller::MetadataImage;
use crate::replica::Partition;
use legacy_leader_epoch::{
    LegacyOffsetForLeaderEpochResponse, OFFSET_FOR_LEADER_EPOCH_STRUCT_VERSION_MIN,
};
use legacy_offsets::{OFFSET_COMMIT_STRUCT_VERSION_MIN, OFFSET_FETCH_STRUCT_VERSION_MIN};
use outgoing::Outgoing;

/// One supported API and the version range we fully serve.
#[derive(Clone, Copy, Debug)]
pub struct ApiSpec {
    pub key: ApiKey,
    pub min_version: i16,
    pub max_version: i16,
}

const fn spec(key: ApiKey, min_version: i16, max_version: i16) -> ApiSpec {
    ApiSpec {
        key,
        min_version,
        max_version,
    }
}

/// Everything this broker serves; ApiVersions is computed from this table. The ranges are
/// the ones Apache Kafka 4.0 advertises, plus OffsetCommit v0-1, OffsetFetch v0 and
/// OffsetForLeaderEpoch v0-1, which 4.0 removed (KIP-896) but old clients still send (see
/// `legacy_offsets` and `legacy_leader_epoch`).
pub const APIS: &[ApiSpec] = &[
    spec(ApiKey::Produce, 3, 12),
    spec(ApiKey::Fetch, 4, 17),
    spec(ApiKey::ListOffsets, 1, 10),
    spec(ApiKey::Metadata, 0, 13),
    spec(ApiKey::OffsetCommit, 0, 9),
    spec(ApiKey::OffsetFetch, 0, 9),
    spec(ApiKey::FindCoordinator, 0, 6),
    spec(ApiKey::JoinGroup, 0, 9),
    spec(ApiKey::Heartbeat, 0, 4),
    spec(ApiKey::LeaveGroup, 0, 5),
    spec(ApiKey::SyncGroup, 0, 5),
    spec(ApiKey::DescribeGroups, 0, 6),
    spec(ApiKey::ListGroups, 0, 5),
    spec(ApiKey::ApiVersions, 0, 4),
    spec(ApiKey::CreateTopics, 2, 7),
    spec(ApiKey::DeleteTopics, 1, 6),
    spec(ApiKey::InitProducerId, 0, 5),
    spec(ApiKey::OffsetForLeaderEpoch, 0, 4),
    spec(ApiKey::DescribeConfigs, 1, 4),
    spec(ApiKey::DeleteGroups, 0, 2),
    spec(ApiKey::CreatePartitions, 0, 3),
    spec(ApiKey::DescribeQuorum, 0, 2),
    spec(ApiKey::DescribeCluster, 0, 2),
    spec(ApiKey::OffsetDelete, 0, 0),
    spec(ApiKey::DescribeTopicPartitions, 0, 0),
    spec(ApiKey::ElectLeaders, 0, 2),
    // Broker to broker, from the transaction coordinator; Kafka 4.0 advertises 1-1.
    spec(ApiKey::WriteTxnMarkers, 1, 1),
    spec(ApiKey::AddPartitionsToTxn, 0, 5),
    spec(ApiKey::AddOffsetsToTxn, 0, 4),
    spec(ApiKey::EndTxn, 0, 5),
    spec(ApiKey::DescribeProducers, 0, 0),
    spec(ApiKey::DescribeTransactions, 0, 0),
    spec(ApiKey::ListTransactions, 0, 1),
    spec(ApiKey::TxnOffsetCommit, 0, 5),
    // No authorizer: answered SECURITY_DISABLED, at Kafka 4.0's ranges (v0 removed, KIP-896).
    spec(ApiKey::DescribeAcls, 1, 3),
    spec(ApiKey::CreateAcls, 1, 3),
    spec(ApiKey::DeleteAcls, 1, 3),
    spec(ApiKey::DeleteRecords, 0, 2),
    // v0, which Kafka 4.0 removed, is byte-identical to v1; kafka-python sends only v0.
    spec(ApiKey::DescribeLogDirs, 0, 4),
    spec(ApiKey::AlterReplicaLogDirs, 1, 2),
    spec(ApiKey::AlterConfigs, 0, 2),
    spec(ApiKey::IncrementalAlterConfigs, 0, 1),
    spec(ApiKey::UpdateFeatures, 0, 2),
    spec(ApiKey::AlterPartitionReassignments, 0, 0),
    spec(ApiKey::ListPartitionReassignments, 0, 0),
    spec(ApiKey::DescribeClientQuotas, 0, 1),
    spec(ApiKey::AlterClientQuotas, 0, 1),
    // KIP-848; advertised only while the consumer protocol is on (`consumer_groups::enabled`).
    spec(ApiKey::ConsumerGroupHeartbeat, 0, 1),
    spec(ApiKey::ConsumerGroupDescribe, 0, 1),
];

/// The APIs served only while KIP-848 consumer groups are on.
pub fn is_consumer_group_api(key: ApiKey) -> bool {
    matches!(
        key,
        ApiKey::ConsumerGroupHeartbeat | ApiKey::ConsumerGroupDescribe
    )
}

pub fn find_api(api_key: i16) -> Option<&'static ApiSpec> {
    APIS.iter().find(|spec| spec.key as i16 == api_key)
}

/// Why a connection must be closed: the stream is no longer a valid Kafka request stream.
#[derive(Debug, Error)]
pub enum ApiError {
    #[error("frame of {0} bytes is too short for a request header")]
    ShortFrame(usize),
    #[error("unknown api key {0}")]
    UnknownApiKey(i16),
    #[error("unsupported version {version} of api key {api_key}")]
    UnsupportedVersion { api_key: i16, version: i16 },
    #[error("cannot decode {api_key:?} v{version}: {reason}")]
    Decode {
        api_key: ApiKey,
        version: i16,
        reason: String,
    },
    #[error("cannot encode {api_key:?} v{version} response: {reason}")]
    Encode {
        api_key: ApiKey,
        version: i16,
        reason: String,
    },
    /// Records a response sends from the segment files could not be read for a caller
    /// that needs the whole frame in memory (`handle_frame`).
    #[error("cannot read the response's records: {0}")]
    ReadRecords(#[from] std::io::Error),
}

/// What a handler knows about the request beyond its body.
#[derive(Clone, Debug)]
pub struct RequestContext {
    pub api_key: ApiKey,
    pub version: i16,
    pub correlation_id: i32,
    pub client_id: Option<StrBytes>,
    /// The peer as Kafka reports it in group descriptions (`/127.0.0.1`); the connection's,
    /// shared rather than copied into every request.
    pub client_host: Arc<str>,
    /// The listener the request arrived on: Metadata, FindCoordinator, DescribeCluster and
    /// leader hints answer with each broker's endpoint on this listener, as Kafka does.
    pub listener_name: Arc<str>,
    /// The request's size without its length prefix (what a produce quota counts).
    pub size_bytes: usize,
}

impl RequestContext {
    /// The error that closes the connection on a body that cannot be decoded.
    fn malformed(&self, reason: impl Into<String>) -> ApiError {
        ApiError::Decode {
            api_key: self.api_key,
            version: self.version,
            reason: reason.into(),
        }
    }

    /// The header's client id, empty when null (what group members record and describe).
    fn client_id_text(&self) -> String {
        (self.client_id.as_ref())
            .map(|id| id.to_string())
            .unwrap_or_default()
    }
}

#[cfg(test)]
impl RequestContext {
    /// A request from a client on 127.0.0.1 over PLAINTEXT, correlation id 7.
    pub(crate) fn for_tests(api_key: ApiKey, version: i16) -> Self {
        RequestContext {
            api_key,
            version,
            correlation_id: 7,
            client_id: None,
            client_host: "/127.0.0.1".into(),
            listener_name: Arc::from("PLAINTEXT"),
            size_bytes: 0,
        }
    }
}

/// A frame whose header has been read: either a request to dispatch, or an ApiVersions
/// with a version we do not speak (answered without decoding its body).
pub enum ParsedFrame {
    Request(RequestContext, Bytes),
    UnsupportedApiVersions { correlation_id: i32 },
}

/// Reads the request header of one whole frame (without its length prefix) and checks
/// the api key and version against [`APIS`].
pub fn parse_frame(
    frame: Bytes,
    client_host: &Arc<str>,
    listener_name: &Arc<str>,
) -> Result<ParsedFrame, ApiError> {
    if frame.len() < 8 {
        return Err(ApiError::ShortFrame(frame.len()));
    }
    let mut peek = &frame[..8];
    let (api_key, version, correlation_id) = (peek.get_i16(), peek.get_i16(), peek.get_i32());
    let spec = find_api(api_key).ok_or(ApiError::UnknownApiKey(api_key))?;
    if version < spec.min_version || version > spec.max_version {
        if spec.key == ApiKey::ApiVersions {
            // Kafka answers any ApiVersions version, so clients can learn what we speak.
            return Ok(ParsedFrame::UnsupportedApiVersions { correlation_id });
        }
        return Err(ApiError::UnsupportedVersion { api_key, version });
    }
    let size_bytes = frame.len();
    let mut body = frame;
    let header_version = spec.key.request_header_version(version);
    let header =
        RequestHeader::decode(&mut body, header_version).map_err(|error| ApiError::Decode {
            api_key: spec.key,
            version,
            reason: error.to_string(),
        })?;
    let context = RequestContext {
        api_key: spec.key,
        version,
        correlation_id: header.correlation_id,
        client_id: header.client_id,
        client_host: client_host.clone(),
        listener_name: listener_name.clone(),
        size_bytes,
    };
    Ok(ParsedFrame::Request(context, body))
}

/// Parses and decodes a frame without handling it: the request-decoding fuzz target.
pub fn decode_frame(frame: Bytes) -> Result<(), ApiError> {
    let nobody: Arc<str> = Arc::from("");
    let (context, mut body) = match parse_frame(frame, &nobody, &nobody)? {
        ParsedFrame::UnsupportedApiVersions { .. } => return Ok(()),
        ParsedFrame::Request(context, body) => (context, body),
    };
    // The decoders the handlers use: by hand for Fetch and the legacy versions,
    // kafka-protocol for the rest, at the struct version `dispatch` maps an older one to.
    match (context.api_key, context.version) {
        (ApiKey::OffsetCommit, version) if version < OFFSET_COMMIT_STRUCT_VERSION_MIN => {
            legacy_offsets::decode_offset_commit(&body, version)
                .map(drop)
                .map_err(|malformed| context.malformed(malformed))
        }
        (ApiKey::Fetch, version) => fetch_request::FetchQuery::decode(&body, version)
            .map(drop)
            .map_err(|malformed| context.malformed(malformed)),
        (ApiKey::OffsetForLeaderEpoch, version)
            if version < OFFSET_FOR_LEADER_EPOCH_STRUCT_VERSION_MIN =>
        {
            legacy_leader_epoch::decode_offset_for_leader_epoch(&body)
                .map(drop)
                .map_err(|malformed| context.malformed(malformed))
        }
        (api_key, version) => {
            let version = match api_key {
                ApiKey::OffsetFetch => version.max(OFFSET_FETCH_STRUCT_VERSION_MIN),
                ApiKey::DescribeLogDirs => version.max(log_dirs::DESCRIBE_STRUCT_VERSION_MIN),
                _ => version,
            };
            kafka_protocol::messages::RequestKind::decode(api_key, &mut body, version)
                .map(drop)
                .map_err(|error| context.malformed(error.to_string()))
        }
    }
}

/// [`handle_frame_on`] as if the frame arrived on the inter-broker listener (the first
/// one a broker registers), the response in one buffer: for tests and fuzzing, which have
/// no listener and no socket.
pub async fn handle_frame(
    broker: &Broker,
    frame: Bytes,
    client_host: &str,
) -> Result<Option<BytesMut>, ApiError> {
    let listener_name = Arc::from(broker.config.listener.name.as_str());
    let outgoing = handle_frame_on(broker, frame, &client_host.into(), &listener_name).await?;
    outgoing
        .map(Outgoing::into_frame)
        .transpose()
        .map_err(ApiError::from)
}

/// Handles one whole frame (without its length prefix) that arrived on listener
/// `listener_name`. `Ok(None)` means the request gets no response (Produce with acks=0);
/// `Err` means close the connection.
pub async fn handle_frame_on(
    broker: &Broker,
    frame: Bytes,
    client_host: &Arc<str>,
    listener_name: &Arc<str>,
) -> Result<Option<Outgoing>, ApiError> {
    match parse_frame(frame, client_host, listener_name)? {
        ParsedFrame::UnsupportedApiVersions { correlation_id } => Ok(Some(
            api_versions::unsupported_version_response(correlation_id).into(),
        )),
        // Fetch alone may leave its records in the files for the connection to send.
        ParsedFrame::Request(context, body) if context.api_key == ApiKey::Fetch => {
            fetch_frame(broker, &context, body).await.map(Some)
        }
        ParsedFrame::Request(context, body) if context.api_key == ApiKey::Produce => {
            Ok(produce_frame(broker, &context, body)
                .await?
                .map(Outgoing::from))
        }
        // Boxed: the largest of the other APIs' futures (~3.3 KB) would otherwise size
        // every connection task, idle or not; Produce and Fetch, the hot paths, stay
        // inline and pay no allocation.
        ParsedFrame::Request(context, body) => Ok(Box::pin(dispatch(broker, &context, body))
            .await?
            .map(Outgoing::from)),
    }
}

async fn produce_frame(
    broker: &Broker,
    context: &RequestContext,
    body: Bytes,
) -> Result<Option<BytesMut>, ApiError> {
    let request = decode(context, body)?;
    match produce::handle(broker, context, request).await {
        Some(mut response) => {
            throttle::finish(broker, context, &mut response);
            Ok(Some(encode_response(context, &response)?))
        }
        None => Ok(None),
    }
}

async fn fetch_frame(
    broker: &Broker,
    context: &RequestContext,
    body: Bytes,
) -> Result<Outgoing, ApiError> {
    let request = fetch_request::FetchQuery::decode(&body, context.version)
        .map_err(|malformed| context.malformed(malformed))?;
    // Partition errors are counted by the handler, where they are decided; a session's
    // error here (Kafka's `errorCounts` counts the top-level code too).
    let mut reply = fetch::handle(broker, context, &request).await;
    if reply.error_code != 0 {
        crate::metrics::count_error(ApiKey::Fetch, reply.error_code);
    }
    throttle::finish(broker, context, &mut reply);
    (reply.encode(context.version, context.correlation_id)).map_err(|error| ApiError::Encode {
        api_key: context.api_key,
        version: context.version,
        reason: format!("{error:?}"),
    })
}

fn decode<T: Decodable>(context: &RequestContext, mut body: Bytes) -> Result<T, ApiError> {
    T::decode(&mut body, context.version).map_err(|error| context.malformed(error.to_string()))
}

/// Bytes reserved up front for an encoded response: most answers (produce acknowledgements,
/// heartbeats, commits) fit, and a larger one grows the buffer by doubling.
const RESPONSE_CAPACITY_DEFAULT: usize = 512;

/// Encodes `header + body` behind a 4-byte length prefix, ready for the socket.
pub fn encode_response<T: Encodable>(
    context: &RequestContext,
    response: &T,
) -> Result<BytesMut, ApiError> {
    encode_response_within(context, response, RESPONSE_CAPACITY_DEFAULT)
}

/// [`encode_response`] into a buffer of `capacity` bytes to begin with (it grows if need
/// be): a caller that knows roughly how large its response is spares the copies.
pub fn encode_response_within<T: Encodable>(
    context: &RequestContext,
    response: &T,
    capacity: usize,
) -> Result<BytesMut, ApiError> {
    let header = (context.api_key, context.version, context.correlation_id);
    encode_frame(header, response, capacity)
}

fn encode_with_header<T: Encodable>(
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    response: &T,
) -> Result<BytesMut, ApiError> {
    let header = (api_key, version, correlation_id);
    encode_frame(header, response, RESPONSE_CAPACITY_DEFAULT)
}

/// The frame of `response` behind its header (api key, version, correlation id).
fn encode_frame<T: Encodable>(
    (api_key, version, correlation_id): (ApiKey, i16, i32),
    response: &T,
    capacity: usize,
) -> Result<BytesMut, ApiError> {
    let fail = |error: anyhow::Error| ApiError::Encode {
        api_key,
        version,
        reason: error.to_string(),
    };
    let header_version = api_key.response_header_version(version);
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    // The length prefix is written once the frame is encoded, from what was encoded:
    // sizing the response first (`compute_size`) walks every field of it a second time,
    // which for a fetch of a thousand partitions costs a third of its encoding.
    let mut buffer = BytesMut::with_capacity(capacity.max(LENGTH_PREFIX_BYTES));
    buffer.put_i32(0);
    header.encode(&mut buffer, header_version).map_err(fail)?;
    response.encode(&mut buffer, version).map_err(fail)?;
    let size = buffer.len() - LENGTH_PREFIX_BYTES;
    let size = i32::try_from(size).map_err(|_| ApiError::Encode {
        api_key,
        version,
        reason: format!("a response of {size} bytes"),
    })?;
    buffer[..LENGTH_PREFIX_BYTES].copy_from_slice(&size.to_be_bytes());
    Ok(buffer)
}

/// The frame's length prefix (an INT32 before every request and response).
const LENGTH_PREFIX_BYTES: usize = 4;

/// The hosted partition a client may produce to or read from here: it must exist in the
/// image (else `unknown`) and this broker must lead it.
fn leader_partition(
    broker: &Broker,
    image: &MetadataImage,
    topic: &str,
    index: i32,
    unknown: ResponseError,
) -> Result<Arc<Partition>, ResponseError> {
    let hosted = || broker.replicas.get(topic, index);
    leader_partition_with(broker, image, (topic, index), unknown, hosted)
}

/// [`leader_partition`] with the hosted partition (`ReplicaManager::get`) from `hosted`:
/// the image decides first (unknown, not the leader); the hosted one, which a fetch may
/// have looked up beforehand with its topic's other partitions, only then.
fn leader_partition_with(
    broker: &Broker,
    image: &MetadataImage,
    (topic, index): (&str, i32),
    unknown: ResponseError,
    hosted: impl FnOnce() -> Option<Arc<Partition>>,
) -> Result<Arc<Partition>, ResponseError> {
    let assigned = image.partition(topic, index).ok_or(unknown)?;
    if assigned.leader != broker.config.node_id {
        return Err(ResponseError::NotLeaderOrFollower);
    }
    match hosted() {
        Some(partition) => Ok(partition),
        // Assigned here but its log would not open: a storage fault, as Kafka reports a
        // partition in a failed log directory.
        None if broker.replicas.open_failure(topic, index).is_some() => {
            Err(ResponseError::KafkaStorageError)
        }
        None => Err(ResponseError::NotLeaderOrFollower),
    }
}

macro_rules! route {
    ($broker:expr, $context:expr, $body:expr, $handler:path) => {{
        let request = decode($context, $body)?;
        let mut response = $handler($broker, $context, request).await;
        error_counts::count($context.api_key, &response);
        throttle::finish($broker, $context, &mut response);
        Ok(Some(encode_response($context, &response)?))
    }};
}

async fn dispatch(
    broker: &Broker,
    context: &RequestContext,
    body: Bytes,
) -> Result<Option<BytesMut>, ApiError> {
    // Produce and Fetch never get here: `handle_frame_on` routes them inline (and keeping
    // an arm for them would size this boxed future by theirs).
    match context.api_key {
        ApiKey::ListOffsets => route!(broker, context, body, list_offsets::handle),
        ApiKey::Metadata => route!(broker, context, body, metadata::handle),
        ApiKey::ApiVersions => route!(broker, context, body, api_versions::handle),
        ApiKey::CreateTopics => route!(broker, context, body, admin_topics::create_topics),
        ApiKey::DeleteTopics => route!(broker, context, body, admin_topics::delete_topics),
        ApiKey::CreatePartitions => route!(broker, context, body, admin_topics::create_partitions),
        ApiKey::FindCoordinator => route!(broker, context, body, group_offsets::find_coordinator),
        ApiKey::OffsetCommit if context.version < OFFSET_COMMIT_STRUCT_VERSION_MIN => {
            let request = legacy_offsets::decode_offset_commit(&body, context.version)
                .map_err(|malformed| context.malformed(malformed))?;
            let response = group_offsets::offset_commit(broker, context, request).await;
            // v0 and v1 responses are byte-identical to v2's.
            let version = OFFSET_COMMIT_STRUCT_VERSION_MIN;
            let encoded =
                encode_with_header(context.api_key, version, context.correlation_id, &response)?;
            Ok(Some(encoded))
        }
        ApiKey::OffsetFetch if context.version < OFFSET_FETCH_STRUCT_VERSION_MIN => {
            // v0 is byte-identical to v1 in both directions.
            let as_v1 = RequestContext {
                version: OFFSET_FETCH_STRUCT_VERSION_MIN,
                ..context.clone()
            };
            route!(broker, &as_v1, body, group_offsets::offset_fetch)
        }
        ApiKey::OffsetCommit => route!(broker, context, body, group_offsets::offset_commit),
        ApiKey::OffsetFetch => route!(broker, context, body, group_offsets::offset_fetch),
        ApiKey::JoinGroup => route!(broker, context, body, groups::join_group),
        ApiKey::SyncGroup => route!(broker, context, body, groups::sync_group),
        ApiKey::Heartbeat => route!(broker, context, body, groups::heartbeat),
        ApiKey::LeaveGroup => route!(broker, context, body, groups::leave_group),
        ApiKey::ListGroups => route!(broker, context, body, group_admin::list_groups),
        ApiKey::DescribeGroups => route!(broker, context, body, group_admin::describe_groups),
        ApiKey::DeleteGroups => route!(broker, context, body, group_admin::delete_groups),
        ApiKey::OffsetDelete => route!(broker, context, body, group_admin::offset_delete),
        ApiKey::InitProducerId => route!(broker, context, body, init_producer_id::handle),
        ApiKey::OffsetForLeaderEpoch
            if context.version < OFFSET_FOR_LEADER_EPOCH_STRUCT_VERSION_MIN =>
        {
            let request = legacy_leader_epoch::decode_offset_for_leader_epoch(&body)
                .map_err(|malformed| context.malformed(malformed))?;
            let response = offset_for_leader_epoch::handle(broker, context, request).await;
            let legacy = LegacyOffsetForLeaderEpochResponse(&response);
            Ok(Some(encode_response(context, &legacy)?))
        }
        ApiKey::OffsetForLeaderEpoch => {
            route!(broker, context, body, offset_for_leader_epoch::handle)
        }
        ApiKey::DescribeConfigs => route!(broker, context, body, configs::describe_configs),
        ApiKey::DeleteRecords => route!(broker, context, body, delete_records::handle),
        ApiKey::DescribeLogDirs => {
            // v0 is byte-identical to v1 in both directions.
            let version = context.version.max(log_dirs::DESCRIBE_STRUCT_VERSION_MIN);
            let as_struct_version = RequestContext {
                version,
                ..context.clone()
            };
            route!(
                broker,
                &as_struct_version,
                body,
                log_dirs::describe_log_dirs
            )
        }
        ApiKey::AlterReplicaLogDirs => {
            route!(broker, context, body, log_dirs::alter_replica_log_dirs)
        }
        ApiKey::DescribeQuorum => route!(broker, context, body, describe_quorum::describe_quorum),
        ApiKey::DescribeCluster => route!(broker, context, body, cluster::describe_cluster),
        ApiKey::DescribeTopicPartitions => {
            route!(broker, context, body, metadata::describe_topic_partitions)
        }
        ApiKey::ElectLeaders => route!(broker, context, body, elect_leaders::handle),
        ApiKey::WriteTxnMarkers => route!(broker, context, body, txn_markers::handle),
        ApiKey::AddPartitionsToTxn => {
            route!(broker, context, body, add_partitions_to_txn::add_partitions)
        }
        ApiKey::AddOffsetsToTxn => {
            route!(broker, context, body, add_partitions_to_txn::add_offsets)
        }
        ApiKey::EndTxn => route!(broker, context, body, end_txn::handle),
        ApiKey::DescribeProducers => route!(broker, context, body, describe_producers::handle),
        ApiKey::DescribeTransactions => {
            route!(broker, context, body, transactions_admin::describe)
        }
        ApiKey::ListTransactions => route!(broker, context, body, transactions_admin::list),
        ApiKey::TxnOffsetCommit => route!(broker, context, body, txn_offset_commit::handle),
        ApiKey::DescribeAcls => route!(broker, context, body, acls::describe_acls),
        ApiKey::CreateAcls => route!(broker, context, body, acls::create_acls),
        ApiKey::DeleteAcls => route!(broker, context, body, acls::delete_acls),
        ApiKey::AlterConfigs => route!(broker, context, body, alter_configs::alter_configs),
        ApiKey::IncrementalAlterConfigs => {
            route!(
                broker,
                context,
                body,
                alter_configs::incremental_alter_configs
            )
        }
        ApiKey::UpdateFeatures => route!(broker, context, body, update_features::handle),
        ApiKey::AlterPartitionReassignments => {
            route!(broker, context, body, partition_reassignments::alter)
        }
        ApiKey::ListPartitionReassignments => {
            route!(broker, context, body, partition_reassignments::list)
        }
        ApiKey::DescribeClientQuotas => route!(broker, context, body, client_quotas::describe),
        ApiKey::AlterClientQuotas => route!(broker, context, body, client_quotas::alter),
        ApiKey::ConsumerGroupHeartbeat => {
            route!(
                broker,
                context,
                body,
                consumer_groups::consumer_group_heartbeat
            )
        }
        ApiKey::ConsumerGroupDescribe => {
            route!(
                broker,
                context,
                body,
                consumer_groups::consumer_group_describe
            )
        }
        other => unreachable!("{other:?} is in APIS but has no handler"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_huge_declared_array_is_a_decode_error_not_an_allocation() {
        // Found by fuzz/request_decode: DescribeConfigs v2 declaring 0x0a000020 resources in
        // 14 bytes. Unpatched kafka-protocol 0.18.0 aborted the process allocating for it.
        let frame = [
            0x00, 0x20, 0x00, 0x02, 0x00, 0x00, 0x00, 0x0a, 0x00, 0x00, 0x20, 0x00, 0x0a, 0x0a,
        ];
        assert!(matches!(
            decode_frame(Bytes::copy_from_slice(&frame)),
            Err(ApiError::Decode { .. })
        ));
    }

    /// The frame `compute_size` used to size: its prefix, then the header and the body.
    fn sized_frame<T: Encodable>(api_key: ApiKey, version: i16, response: &T) -> Vec<u8> {
        let header_version = api_key.response_header_version(version);
        let header = ResponseHeader::default().with_correlation_id(7);
        let size =
            header.compute_size(header_version).unwrap() + response.compute_size(version).unwrap();
        let mut expected = BytesMut::new();
        expected.put_i32(i32::try_from(size).unwrap());
        header.encode(&mut expected, header_version).unwrap();
        response.encode(&mut expected, version).unwrap();
        assert_eq!(expected.len(), 4 + size);
        expected.to_vec()
    }

    #[test]
    fn a_frame_is_prefixed_with_its_encoded_size_whatever_its_buffer_began_with() {
        use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
        use kafka_protocol::messages::{ApiVersionsResponse, FetchResponse, TopicName};
        let partition = |index| {
            PartitionData::default()
                .with_partition_index(index)
                .with_high_watermark(42)
                .with_records(Some(Bytes::from_static(b"records")))
        };
        let topic = |partitions: i32| {
            FetchableTopicResponse::default()
                .with_topic(TopicName(StrBytes::from_static_str("t")))
                .with_partitions((0..partitions).map(partition).collect())
        };
        // One partition fits the default buffer; a thousand grow it.
        for partitions in [1, 1000] {
            let response = FetchResponse::default().with_responses(vec![topic(partitions)]);
            for version in [4, 12, 17] {
                let context = RequestContext::for_tests(ApiKey::Fetch, version);
                let expected = sized_frame(ApiKey::Fetch, version, &response);
                for capacity in [0, 16, RESPONSE_CAPACITY_DEFAULT, 1 << 20] {
                    let frame = encode_response_within(&context, &response, capacity).unwrap();
                    assert_eq!(
                        frame.to_vec(),
                        expected,
                        "v{version}, {partitions} partitions"
                    );
                }
                let frame = encode_response(&context, &response).unwrap();
                assert_eq!(frame.to_vec(), expected);
            }
        }
        // A v0 header (no tagged fields), through the path legacy versions take.
        let response = ApiVersionsResponse::default().with_error_code(35);
        let frame = encode_with_header(ApiKey::ApiVersions, 0, 7, &response).unwrap();
        assert_eq!(
            frame.to_vec(),
            sized_frame(ApiKey::ApiVersions, 0, &response)
        );
    }

    #[test]
    fn short_and_unknown_frames_are_rejected() {
        assert!(matches!(
            decode_frame(Bytes::from_static(&[0, 18, 0])),
            Err(ApiError::ShortFrame(3))
        ));
        let unknown = [0x27, 0x0f, 0, 0, 0, 0, 0, 1];
        assert!(matches!(
            decode_frame(Bytes::copy_from_slice(&unknown)),
            Err(ApiError::UnknownApiKey(9999))
        ));
        let old_produce = [0, 0, 0, 2, 0, 0, 0, 1];
        assert!(matches!(
            decode_frame(Bytes::copy_from_slice(&old_produce)),
            Err(ApiError::UnsupportedVersion {
                api_key: 0,
                version: 2
            })
        ));
    }
}
