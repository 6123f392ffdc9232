//! The error codes of each response, counted in `kafka_network_requestmetrics_errors_total`
//! as Kafka's `AbstractResponse.errorCounts` feeds `ErrorsPerSec`: every error code in the
//! response, top-level and per topic, partition, group or resource (NONE is not counted:
//! a relaxed add per successful partition would cost the hot path for nothing a
//! dashboard reads). Produce and Fetch count their partitions' errors where they are
//! decided, so Produce's impl here counts nothing (Fetch's response is not a
//! `kafka-protocol` message: `api::fetch_response`).

use kafka_protocol::messages::*;

use crate::metrics;

/// A response whose error codes can be walked.
pub trait ErrorCodes {
    fn error_codes(&self, each: &mut dyn FnMut(i16));
}

/// Counts the error codes of `response`, a response to `api`.
pub fn count<T: ErrorCodes>(api: ApiKey, response: &T) {
    response.error_codes(&mut |code| {
        if code != 0 {
            metrics::count_error(api, code);
        }
    });
}

/// `impl ErrorCodes` from a list of paths to error codes: `field` for a top-level one,
/// `list[].field`, `list[].inner[].field` for nested ones.
macro_rules! error_codes {
    ($response:ty { $($path:tt)* }) => {
        impl ErrorCodes for $response {
            fn error_codes(&self, each: &mut dyn FnMut(i16)) {
                let response = self;
                error_codes!(@paths response each $($path)*);
            }
        }
    };
    (@paths $r:ident $each:ident) => {};
    (@paths $r:ident $each:ident $field:ident; $($rest:tt)*) => {
        $each($r.$field);
        error_codes!(@paths $r $each $($rest)*);
    };
    (@paths $r:ident $each:ident $list:ident[].$field:ident; $($rest:tt)*) => {
        for item in &$r.$list {
            $each(item.$field);
        }
        error_codes!(@paths $r $each $($rest)*);
    };
    (@paths $r:ident $each:ident $list:ident[].$inner:ident[].$field:ident; $($rest:tt)*) => {
        for item in &$r.$list {
            for inner in &item.$inner {
                $each(inner.$field);
            }
        }
        error_codes!(@paths $r $each $($rest)*);
    };
    (@paths $r:ident $each:ident
        $list:ident[].$inner:ident[].$innermost:ident[].$field:ident; $($rest:tt)*) => {
        for item in &$r.$list {
            for inner in &item.$inner {
                for innermost in &inner.$innermost {
                    $each(innermost.$field);
                }
            }
        }
        error_codes!(@paths $r $each $($rest)*);
    };
}

/// Produce counts its partitions' errors where they are decided.
macro_rules! counted_by_handler {
    ($($response:ty),*) => {
        $(impl ErrorCodes for $response {
            fn error_codes(&self, _each: &mut dyn FnMut(i16)) {}
        })*
    };
}

counted_by_handler!(ProduceResponse);
error_codes!(MetadataResponse { topics[].error_code; topics[].partitions[].error_code; });
error_codes!(ListOffsetsResponse { topics[].partitions[].error_code; });
error_codes!(ApiVersionsResponse { error_code; });
error_codes!(CreateTopicsResponse { topics[].error_code; });
error_codes!(DeleteTopicsResponse { responses[].error_code; });
error_codes!(CreatePartitionsResponse { results[].error_code; });
error_codes!(FindCoordinatorResponse { error_code; coordinators[].error_code; });
error_codes!(OffsetCommitResponse { topics[].partitions[].error_code; });
error_codes!(OffsetFetchResponse {
    error_code;
    topics[].partitions[].error_code;
    groups[].error_code;
    groups[].topics[].partitions[].error_code;
});
error_codes!(JoinGroupResponse { error_code; });
error_codes!(SyncGroupResponse { error_code; });
error_codes!(HeartbeatResponse { error_code; });
error_codes!(LeaveGroupResponse { error_code; members[].error_code; });
error_codes!(ListGroupsResponse { error_code; });
error_codes!(DescribeGroupsResponse { groups[].error_code; });
error_codes!(DeleteGroupsResponse { results[].error_code; });
error_codes!(OffsetDeleteResponse { error_code; topics[].partitions[].error_code; });
error_codes!(InitProducerIdResponse { error_code; });
error_codes!(OffsetForLeaderEpochResponse { topics[].partitions[].error_code; });
error_codes!(DescribeConfigsResponse { results[].error_code; });
error_codes!(DeleteRecordsResponse { topics[].partitions[].error_code; });
error_codes!(DescribeLogDirsResponse { error_code; results[].error_code; });
error_codes!(AlterReplicaLogDirsResponse { results[].partitions[].error_code; });
error_codes!(DescribeClusterResponse { error_code; });
error_codes!(DescribeTopicPartitionsResponse {
    topics[].error_code;
    topics[].partitions[].error_code;
});
error_codes!(ElectLeadersResponse {
    error_code;
    replica_election_results[].partition_result[].error_code;
});
error_codes!(AddPartitionsToTxnResponse {
    error_code;
    results_by_transaction[].topic_results[].results_by_partition[].partition_error_code;
    results_by_topic_v3_and_below[].results_by_partition[].partition_error_code;
});
error_codes!(AddOffsetsToTxnResponse { error_code; });
error_codes!(EndTxnResponse { error_code; });
error_codes!(DescribeProducersResponse { topics[].partitions[].error_code; });
error_codes!(DescribeTransactionsResponse { transaction_states[].error_code; });
error_codes!(ListTransactionsResponse { error_code; });
error_codes!(TxnOffsetCommitResponse { topics[].partitions[].error_code; });
error_codes!(DescribeAclsResponse { error_code; });
error_codes!(CreateAclsResponse { results[].error_code; });
error_codes!(DeleteAclsResponse { filter_results[].error_code; });
error_codes!(ConsumerGroupHeartbeatResponse { error_code; });
error_codes!(ConsumerGroupDescribeResponse { groups[].error_code; });
error_codes!(AlterConfigsResponse { responses[].error_code; });
error_codes!(IncrementalAlterConfigsResponse { responses[].error_code; });
error_codes!(DescribeClientQuotasResponse { error_code; });
error_codes!(AlterClientQuotasResponse { entries[].error_code; });
error_codes!(UpdateFeaturesResponse { error_code; results[].error_code; });
error_codes!(AlterPartitionReassignmentsResponse {
    error_code;
    responses[].partitions[].error_code;
});
error_codes!(ListPartitionReassignmentsResponse { error_code; });
error_codes!(DescribeQuorumResponse { error_code; topics[].partitions[].error_code; });
error_codes!(WriteTxnMarkersResponse { markers[].topics[].partitions[].error_code; });

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::metadata_response::{
        MetadataResponsePartition, MetadataResponseTopic,
    };

    use super::*;

    fn codes<T: ErrorCodes>(response: &T) -> Vec<i16> {
        let mut found = Vec::new();
        response.error_codes(&mut |code| found.push(code));
        found
    }

    #[test]
    fn nested_codes_are_all_walked() {
        let partition = |code| MetadataResponsePartition::default().with_error_code(code);
        let response = MetadataResponse::default().with_topics(vec![
            MetadataResponseTopic::default()
                .with_error_code(3)
                .with_partitions(vec![partition(0), partition(6)]),
            MetadataResponseTopic::default().with_partitions(vec![partition(9)]),
        ]);
        assert_eq!(codes(&response), vec![3, 0, 0, 6, 9]);
        assert_eq!(
            codes(&HeartbeatResponse::default().with_error_code(27)),
            vec![27]
        );
        assert!(codes(&ProduceResponse::default()).is_empty());
    }
}
