//! Quota throttling at the API edge (KIP-219): records what a request costs against the
//! client's quotas ([`crate::client_quota`]), puts the throttle time in the response's
//! `throttle_time_ms`, and tells the connection to hold the client for that long
//! (through the request scope, [`metrics::request::set_throttle_ms`]).
//!
//! Produce records the request's size (as Kafka's `request.sizeInBytes`), a consumer's
//! Fetch the size of the response it would send; every request but a follower's Fetch
//! and WriteTxnMarkers (cluster actions, exempt in Kafka too) records the time its handler
//! spent working (polled, not waiting) against `request_percentage`.

use kafka_protocol::messages::*;

use super::RequestContext;
use crate::broker::Broker;
use crate::client_quota::{ANONYMOUS_USER, QuotaKind, monotonic_ms};
use crate::metrics;

/// A response with a `throttle_time_ms` field.
pub trait ThrottleTime {
    fn throttle_time_ms(&mut self) -> Option<&mut i32>;
}

macro_rules! throttle_time_field {
    ($($response:ty),* $(,)?) => {
        $(impl ThrottleTime for $response {
            fn throttle_time_ms(&mut self) -> Option<&mut i32> {
                Some(&mut self.throttle_time_ms)
            }
        })*
    };
}

throttle_time_field!(
    ProduceResponse,
    ListOffsetsResponse,
    MetadataResponse,
    ApiVersionsResponse,
    CreateTopicsResponse,
    DeleteTopicsResponse,
    CreatePartitionsResponse,
    FindCoordinatorResponse,
    OffsetCommitResponse,
    OffsetFetchResponse,
    JoinGroupResponse,
    SyncGroupResponse,
    HeartbeatResponse,
    LeaveGroupResponse,
    ListGroupsResponse,
    DescribeGroupsResponse,
    DeleteGroupsResponse,
    OffsetDeleteResponse,
    InitProducerIdResponse,
    OffsetForLeaderEpochResponse,
    DescribeConfigsResponse,
    DeleteRecordsResponse,
    DescribeLogDirsResponse,
    AlterReplicaLogDirsResponse,
    DescribeClusterResponse,
    DescribeTopicPartitionsResponse,
    ElectLeadersResponse,
    AddPartitionsToTxnResponse,
    AddOffsetsToTxnResponse,
    EndTxnResponse,
    DescribeProducersResponse,
    DescribeTransactionsResponse,
    ListTransactionsResponse,
    TxnOffsetCommitResponse,
    DescribeAclsResponse,
    CreateAclsResponse,
    DeleteAclsResponse,
    AlterConfigsResponse,
    IncrementalAlterConfigsResponse,
    DescribeClientQuotasResponse,
    AlterClientQuotasResponse,
    UpdateFeaturesResponse,
    AlterPartitionReassignmentsResponse,
    ListPartitionReassignmentsResponse,
    ConsumerGroupHeartbeatResponse,
    ConsumerGroupDescribeResponse,
);

/// DescribeQuorum is answered by the controller role and carries no throttle time;
/// WriteTxnMarkers is a cluster action.
macro_rules! no_throttle_time_field {
    ($($response:ty),* $(,)?) => {
        $(impl ThrottleTime for $response {
            fn throttle_time_ms(&mut self) -> Option<&mut i32> {
                None
            }
        })*
    };
}

no_throttle_time_field!(DescribeQuorumResponse, WriteTxnMarkersResponse);

fn client_id(context: &RequestContext) -> &str {
    context.client_id.as_deref().unwrap_or("")
}

/// Records a produce request's bytes; the throttle it earns, in ms.
pub fn record_produce(broker: &Broker, context: &RequestContext) -> u64 {
    let quotas = &broker.client_quotas;
    if !quotas.is_enabled(QuotaKind::Produce) {
        return 0;
    }
    let size = context.size_bytes as f64;
    quotas.record(
        QuotaKind::Produce,
        ANONYMOUS_USER,
        client_id(context),
        size,
        monotonic_ms(),
    )
}

/// The most a consumer's fetch may return under its quota, if it has one.
pub fn fetch_bytes_cap(broker: &Broker, context: &RequestContext) -> Option<usize> {
    let cap = (broker.client_quotas).max_in_window(
        QuotaKind::Fetch,
        ANONYMOUS_USER,
        client_id(context),
    )?;
    // At least one byte, so a fetch under a tiny quota still makes progress.
    Some(cap.clamp(1.0, usize::MAX as f64) as usize)
}

/// Records a consumer fetch response's `size` bytes. When it is throttled the bytes are
/// taken back: the caller answers empty instead (Kafka's `unrecordQuotaSensor`).
pub fn record_fetch(broker: &Broker, context: &RequestContext, size: usize) -> u64 {
    let quotas = &broker.client_quotas;
    if !quotas.is_enabled(QuotaKind::Fetch) {
        return 0;
    }
    let (client, now) = (client_id(context), monotonic_ms());
    let throttle = quotas.record(QuotaKind::Fetch, ANONYMOUS_USER, client, size as f64, now);
    if throttle > 0 {
        quotas.unrecord(QuotaKind::Fetch, ANONYMOUS_USER, client, size as f64, now);
    }
    throttle
}

/// Records the time the request's handler has worked so far (its polls: waits for
/// replicas, Raft commits, rebalances and markers cost nothing), as a percentage of one
/// thread-second.
fn record_request_time(broker: &Broker, context: &RequestContext) -> u64 {
    let quotas = &broker.client_quotas;
    if !quotas.is_enabled(QuotaKind::Request) || metrics::request::is_follower_fetch() {
        return 0;
    }
    let percent_seconds = metrics::request::busy_so_far().as_secs_f64() * 100.0;
    quotas.record(
        QuotaKind::Request,
        ANONYMOUS_USER,
        client_id(context),
        percent_seconds,
        monotonic_ms(),
    )
}

/// Finishes a response: records request time, puts the larger of the throttles in the
/// response's `throttle_time_ms` (keeping one the handler set) and has the connection
/// hold the client for it.
pub fn finish<T: ThrottleTime>(broker: &Broker, context: &RequestContext, response: &mut T) {
    // Responses without a throttle time (DescribeQuorum, WriteTxnMarkers) are exempt:
    // nothing is charged for them, as Kafka does not record their request time.
    let Some(field) = response.throttle_time_ms() else {
        return;
    };
    let request_throttle = record_request_time(broker, context);
    let throttle = (*field).max(i32::try_from(request_throttle).unwrap_or(i32::MAX));
    if throttle > 0 {
        *field = throttle;
        metrics::request::set_throttle_ms(throttle as u64);
    }
}
