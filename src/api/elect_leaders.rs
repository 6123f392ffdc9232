//! ElectLeaders v0-2 (KIP-183 preferred, KIP-460 unclean): `kafka-leader-election`,
//! `AdminClient.electLeaders`.
//!
//! Kafka 4.0 forwards this to the active controller, whose `ReplicationControlManager`
//! answers it; here the handler names the partitions by topic id and submits one
//! `ElectLeaders` command (forwarded like every command), then answers per partition:
//! - v0 has no election type: preferred;
//! - null `topic_partitions` means every partition, and then partitions that need no
//!   election are left out of the answer (Kafka's rule), topics kept;
//! - an unknown topic or partition: UNKNOWN_TOPIC_OR_PARTITION, "No such topic as t" /
//!   "No such partition as t-p";
//! - an unknown election type, or a controller failure: the top-level error (v1+), and
//!   the same error on every partition named (Kafka's `getErrorResponse`).

use std::collections::BTreeMap;
use std::time::Duration;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::{ElectLeadersRequest, ElectLeadersResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use super::RequestContext;
use super::errors::controller_error;
use crate::broker::Broker;
use crate::controller::{
    CommandOutcome, ControllerError, Election, ElectionResult, MetadataCommand, MetadataImage,
};

/// Version 1 added `election_type` and the top-level error code.
const ELECTION_TYPE_VERSION_MIN: i16 = 1;

/// One partition the request names (or that "all" stands for), and what became of it.
struct Named {
    topic: String,
    partition: i32,
    /// Known here: the topic id to send; else the answer is already decided.
    target: Result<Uuid, (ResponseError, String)>,
}

pub async fn handle(
    broker: &Broker,
    context: &RequestContext,
    request: ElectLeadersRequest,
) -> ElectLeadersResponse {
    let election_type = if context.version >= ELECTION_TYPE_VERSION_MIN {
        request.election_type
    } else {
        0
    };
    let image = broker.image();
    let elect_all = request.topic_partitions.is_none();
    let named = name_partitions(&image, &request);
    let Some(election) = Election::from_kafka(election_type) else {
        let reason = format!("Unknown election type {election_type}");
        return failed(
            &named,
            ResponseError::InvalidRequest,
            &reason,
            context.version,
        );
    };
    let targets: Vec<(Uuid, i32)> = named
        .iter()
        .filter_map(|n| n.target.as_ref().ok().map(|id| (*id, n.partition)))
        .collect();
    let results = if targets.is_empty() {
        Vec::new()
    } else {
        match elect(broker, election, targets, request.timeout_ms).await {
            Ok(results) => results,
            Err(error) => {
                let code = controller_error(&error);
                return failed(&named, code, &error.to_string(), context.version);
            }
        }
    };
    answer(named, results, elect_all)
}

/// Every partition the request names, in its order (every partition of every topic, in
/// name order, for a null list), with the topic id to elect for when the topic exists.
fn name_partitions(image: &MetadataImage, request: &ElectLeadersRequest) -> Vec<Named> {
    let Some(topics) = &request.topic_partitions else {
        return image
            .topics
            .values()
            .flat_map(|topic| {
                (0..topic.partitions.len()).map(move |index| Named {
                    topic: topic.name.clone(),
                    partition: index as i32,
                    target: Ok(topic.id),
                })
            })
            .collect();
    };
    let mut named = Vec::new();
    for topic in topics {
        let name = topic.topic.0.as_str();
        for &partition in &topic.partitions {
            let target = match image.topic(name) {
                Some(found) => Ok(found.id),
                None => Err((
                    ResponseError::UnknownTopicOrPartition,
                    format!("No such topic as {name}"),
                )),
            };
            named.push(Named {
                topic: name.to_string(),
                partition,
                target,
            });
        }
    }
    named
}

/// Submits the election; its results, one per target, in order.
async fn elect(
    broker: &Broker,
    election: Election,
    partitions: Vec<(Uuid, i32)>,
    timeout_ms: i32,
) -> Result<Vec<ElectionResult>, ControllerError> {
    let count = partitions.len();
    let command = MetadataCommand::ElectLeaders {
        election,
        partitions,
    };
    let submitted = broker.controller.submit(command);
    // The client's deadline, where it gave one; the submit has its own bound besides.
    let outcome = match u64::try_from(timeout_ms) {
        Ok(ms) if ms > 0 => tokio::time::timeout(Duration::from_millis(ms), submitted)
            .await
            .unwrap_or_else(|_| {
                Err(ControllerError::Unavailable(format!(
                    "the election was not applied within {ms} ms (it may still be)"
                )))
            }),
        _ => submitted.await,
    }?;
    match outcome {
        CommandOutcome::LeadersElected(results) if results.len() == count => {
            Ok(results.into_iter().map(|r| r.result).collect())
        }
        other => Err(ControllerError::InvalidRequest(format!(
            "the election answered {other:?}"
        ))),
    }
}

/// Kafka's code and message for one partition's result (`ApiError`: NONE has none, the
/// others carry their error's default message).
fn partition_error(result: ElectionResult) -> (Option<ResponseError>, Option<&'static str>) {
    match result {
        ElectionResult::Elected { .. } => (None, None),
        ElectionResult::ElectionNotNeeded => (
            Some(ResponseError::ElectionNotNeeded),
            Some("Leader election not needed for topic partition."),
        ),
        ElectionResult::PreferredLeaderNotAvailable => (
            Some(ResponseError::PreferredLeaderNotAvailable),
            Some("The preferred leader was not available."),
        ),
        ElectionResult::EligibleLeadersNotAvailable => (
            Some(ResponseError::EligibleLeadersNotAvailable),
            Some("Eligible topic partition leaders are not available."),
        ),
        ElectionResult::UnknownPartition => (Some(ResponseError::UnknownTopicOrPartition), None),
        // Only the controller's own automatic elections ask for this check.
        ElectionResult::UncleanDisabled => (Some(ResponseError::ElectionNotNeeded), None),
    }
}

/// The response, topics in the order first named; `results` answer the known partitions
/// in order.
fn answer(
    named: Vec<Named>,
    results: Vec<ElectionResult>,
    elect_all: bool,
) -> ElectLeadersResponse {
    let mut results = results.into_iter();
    let mut topics: Vec<ReplicaElectionResult> = Vec::new();
    let mut index_of: BTreeMap<String, usize> = BTreeMap::new();
    for entry in named {
        let (code, message) = match entry.target {
            Err((code, message)) => (Some(code), Some(message)),
            Ok(_) => {
                let result = results
                    .next()
                    .unwrap_or(ElectionResult::EligibleLeadersNotAvailable);
                let (code, message) = partition_error(result);
                let message = match result {
                    ElectionResult::UnknownPartition => Some(format!(
                        "No such partition as {}-{}",
                        entry.topic, entry.partition
                    )),
                    _ => message.map(str::to_string),
                };
                (code, message)
            }
        };
        let slot = *index_of.entry(entry.topic.clone()).or_insert_with(|| {
            topics.push(
                ReplicaElectionResult::default()
                    .with_topic(TopicName(StrBytes::from_string(entry.topic.clone()))),
            );
            topics.len() - 1
        });
        if elect_all && code == Some(ResponseError::ElectionNotNeeded) {
            continue;
        }
        topics[slot].partition_result.push(
            PartitionResult::default()
                .with_partition_id(entry.partition)
                .with_error_code(code.map_or(0, |c| c.code()))
                .with_error_message(message.map(StrBytes::from_string)),
        );
    }
    ElectLeadersResponse::default().with_replica_election_results(topics)
}

/// The whole request failed: the error at the top (v1+) and on every partition named.
fn failed(
    named: &[Named],
    code: ResponseError,
    message: &str,
    version: i16,
) -> ElectLeadersResponse {
    let mut topics: Vec<ReplicaElectionResult> = Vec::new();
    for entry in named {
        let result = PartitionResult::default()
            .with_partition_id(entry.partition)
            .with_error_code(code.code())
            .with_error_message(Some(StrBytes::from_string(message.to_string())));
        match topics
            .iter_mut()
            .find(|t| t.topic.0.as_str() == entry.topic)
        {
            Some(topic) => topic.partition_result.push(result),
            None => topics.push(
                ReplicaElectionResult::default()
                    .with_topic(TopicName(StrBytes::from_string(entry.topic.clone())))
                    .with_partition_result(vec![result]),
            ),
        }
    }
    let top = if version >= ELECTION_TYPE_VERSION_MIN {
        code.code()
    } else {
        0
    };
    ElectLeadersResponse::default()
        .with_error_code(top)
        .with_replica_election_results(topics)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(topic: &str, partition: i32, known: bool) -> Named {
        Named {
            topic: topic.into(),
            partition,
            target: if known {
                Ok(Uuid::from_u128(1))
            } else {
                Err((
                    ResponseError::UnknownTopicOrPartition,
                    format!("No such topic as {topic}"),
                ))
            },
        }
    }

    fn codes(response: &ElectLeadersResponse) -> Vec<(String, i32, i16, Option<String>)> {
        response
            .replica_election_results
            .iter()
            .flat_map(|topic| {
                topic.partition_result.iter().map(|p| {
                    (
                        topic.topic.0.to_string(),
                        p.partition_id,
                        p.error_code,
                        p.error_message.as_ref().map(|m| m.to_string()),
                    )
                })
            })
            .collect()
    }

    #[test]
    fn each_partition_gets_kafkas_code_and_message() {
        let request = vec![
            named("a", 0, true),
            named("a", 1, true),
            named("gone", 0, false),
            named("a", 9, true),
            named("b", 0, true),
        ];
        let results = vec![
            ElectionResult::Elected { leader: 2 },
            ElectionResult::ElectionNotNeeded,
            ElectionResult::UnknownPartition,
            ElectionResult::PreferredLeaderNotAvailable,
        ];
        let response = answer(request, results, false);
        assert_eq!(response.error_code, 0);
        let topics: Vec<_> = response
            .replica_election_results
            .iter()
            .map(|t| t.topic.0.to_string())
            .collect();
        assert_eq!(topics, ["a", "gone", "b"]);
        assert_eq!(
            codes(&response),
            [
                ("a".into(), 0, 0, None),
                (
                    "a".into(),
                    1,
                    84,
                    Some("Leader election not needed for topic partition.".into())
                ),
                ("a".into(), 9, 3, Some("No such partition as a-9".into())),
                ("gone".into(), 0, 3, Some("No such topic as gone".into())),
                (
                    "b".into(),
                    0,
                    80,
                    Some("The preferred leader was not available.".into())
                ),
            ]
        );
    }

    #[test]
    fn electing_all_leaves_out_partitions_that_need_no_election() {
        let request = vec![
            named("a", 0, true),
            named("a", 1, true),
            named("b", 0, true),
        ];
        let results = vec![
            ElectionResult::ElectionNotNeeded,
            ElectionResult::Elected { leader: 1 },
            ElectionResult::ElectionNotNeeded,
        ];
        let response = answer(request, results, true);
        assert_eq!(codes(&response), [("a".into(), 1, 0, None)]);
        assert_eq!(
            response.replica_election_results.len(),
            2,
            "topics are listed even when none of their partitions is"
        );
    }

    #[test]
    fn a_failed_request_carries_its_error_at_the_top_from_v1_and_on_every_partition() {
        let request = vec![named("a", 0, true), named("a", 1, true)];
        let v1 = failed(
            &request,
            ResponseError::InvalidRequest,
            "Unknown election type 7",
            1,
        );
        assert_eq!(v1.error_code, ResponseError::InvalidRequest.code());
        assert_eq!(v1.replica_election_results.len(), 1);
        assert!(codes(&v1).iter().all(|(_, _, code, message)| *code == 42
            && message.as_deref() == Some("Unknown election type 7")));
        let v0 = failed(&request, ResponseError::RequestTimedOut, "slow", 0);
        assert_eq!(v0.error_code, 0, "v0 has no top-level error");
        assert_eq!(codes(&v0).len(), 2);
    }
}
