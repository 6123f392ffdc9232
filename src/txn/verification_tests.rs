use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnResult, AddPartitionsToTxnTopicResult,
};

use super::*;

fn request(id: &str, epoch: i16, operation: TxnOperation) -> VerifyRequest {
    VerifyRequest {
        transactional_id: id.to_string(),
        producer_id: 7,
        producer_epoch: epoch,
        partitions: vec![("b".into(), 1), ("a".into(), 0), ("b".into(), 0)],
        operation,
    }
}

fn queued(id: &str, epoch: i16, tag: u32) -> Queued<u32> {
    Queued {
        request: request(id, epoch, TxnOperation::DefaultError),
        reply: tag,
    }
}

fn refused(enqueued: &Enqueued<u32>) -> Vec<(u32, ResponseError)> {
    enqueued
        .refused
        .iter()
        .map(|r| (r.queued.reply, r.error))
        .collect()
}

#[test]
fn operations_follow_the_client_request_version() {
    assert_eq!(TxnOperation::for_produce(3), TxnOperation::DefaultError);
    assert_eq!(TxnOperation::for_produce(10), TxnOperation::DefaultError);
    assert_eq!(TxnOperation::for_produce(11), TxnOperation::GenericError);
    assert_eq!(TxnOperation::for_produce(12), TxnOperation::AddPartition);
    assert_eq!(
        TxnOperation::for_txn_offset_commit(3),
        TxnOperation::DefaultError
    );
    assert_eq!(
        TxnOperation::for_txn_offset_commit(4),
        TxnOperation::GenericError
    );
    assert_eq!(
        TxnOperation::for_txn_offset_commit(5),
        TxnOperation::AddPartition
    );
}

#[test]
fn one_sender_per_node_and_queued_requests_are_merged() {
    let mut batches = Batches::default();
    let first = batches.enqueue(1, queued("t1", 0, 1));
    assert!(first.start_sender && first.refused.is_empty());
    // The sender took the first batch: it is in flight, later ones queue behind it.
    assert_eq!(batches.take(1).len(), 1);
    assert!(!batches.enqueue(1, queued("t2", 0, 2)).start_sender);
    assert!(!batches.enqueue(1, queued("t3", 0, 3)).start_sender);
    // Another node gets its own sender.
    assert!(batches.enqueue(2, queued("t4", 0, 4)).start_sender);
    let next: Vec<u32> = batches.take(1).into_iter().map(|q| q.reply).collect();
    assert_eq!(next, vec![2, 3], "queued requests go in one batch");
    // Nothing left: the sender stops, and the next request starts a new one.
    assert!(batches.take(1).is_empty());
    assert!(batches.enqueue(1, queued("t5", 0, 5)).start_sender);
}

#[test]
fn one_entry_per_transactional_id_as_kafka_keeps() {
    let mut batches = Batches::default();
    batches.enqueue(1, queued("t", 3, 1));
    // Same epoch: the client is retrying; the older entry gets a retriable error.
    let same = batches.enqueue(1, queued("t", 3, 2));
    assert_eq!(refused(&same), vec![(1, ResponseError::NetworkException)]);
    // Higher epoch: the queued entry is fenced.
    let higher = batches.enqueue(1, queued("t", 4, 3));
    assert_eq!(
        refused(&higher),
        vec![(2, ResponseError::InvalidProducerEpoch)]
    );
    // Lower epoch: the new entry is fenced and the queued one stays.
    let lower = batches.enqueue(1, queued("t", 2, 4));
    assert_eq!(
        refused(&lower),
        vec![(4, ResponseError::InvalidProducerEpoch)]
    );
    let left: Vec<u32> = batches.take(1).into_iter().map(|q| q.reply).collect();
    assert_eq!(left, vec![3]);
}

#[test]
fn a_full_queue_refuses_with_a_retriable_error() {
    let mut batches = Batches::default();
    for tag in 0..QUEUED_PER_NODE_MAX as u32 {
        let enqueued = batches.enqueue(1, queued(&format!("t{tag}"), 0, tag));
        assert!(enqueued.refused.is_empty());
    }
    let over = batches.enqueue(1, queued("late", 0, 9_999));
    assert_eq!(
        refused(&over),
        vec![(9_999, ResponseError::CoordinatorNotAvailable)]
    );
    assert_eq!(batches.queued_count(1), QUEUED_PER_NODE_MAX);
    assert_eq!(
        produce_error(
            ResponseError::CoordinatorNotAvailable,
            TxnOperation::AddPartition
        ),
        ResponseError::NotEnoughReplicas
    );
}

#[test]
fn the_request_groups_partitions_by_topic_and_adds_only_for_version_2_clients() {
    let batch = vec![
        Queued {
            request: request("v1", 0, TxnOperation::GenericError),
            reply: (),
        },
        Queued {
            request: request("v2", 5, TxnOperation::AddPartition),
            reply: (),
        },
    ];
    let built = build_request(&batch);
    assert_eq!(built.transactions.len(), 2);
    let first = &built.transactions[0];
    assert_eq!(first.transactional_id.0.as_str(), "v1");
    assert!(first.verify_only);
    assert_eq!(first.topics.len(), 2);
    assert_eq!(first.topics[0].name.0.as_str(), "a");
    assert_eq!(first.topics[1].partitions, vec![1, 0]);
    let second = &built.transactions[1];
    assert!(!second.verify_only);
    assert_eq!((second.producer_id.0, second.producer_epoch), (7, 5));
}

fn response(id: &str, codes: &[(&str, i32, Option<ResponseError>)]) -> AddPartitionsToTxnResponse {
    let topics = codes
        .iter()
        .map(|(topic, partition, error)| {
            AddPartitionsToTxnTopicResult::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                .with_results_by_partition(vec![
                    AddPartitionsToTxnPartitionResult::default()
                        .with_partition_index(*partition)
                        .with_partition_error_code(error.map_or(0, |e| e.code())),
                ])
        })
        .collect();
    AddPartitionsToTxnResponse::default().with_results_by_transaction(vec![
        AddPartitionsToTxnResult::default()
            .with_transactional_id(TransactionalId(StrBytes::from_string(id.to_string())))
            .with_topic_results(topics),
    ])
}

#[test]
fn coordinator_answers_map_to_what_producers_expect() {
    let asked = request("t", 0, TxnOperation::DefaultError);
    let answer = response(
        "t",
        &[
            ("b", 1, Some(ResponseError::ProducerFenced)),
            ("a", 0, Some(ResponseError::TransactionAbortable)),
            // b-0 left out of the answer.
        ],
    );
    let unverified = interpret(&asked, &answer);
    assert_eq!(
        unverified.get(&("b".into(), 1)),
        Some(&ResponseError::InvalidProducerEpoch)
    );
    assert_eq!(
        unverified.get(&("a".into(), 0)),
        Some(&ResponseError::InvalidTxnState),
        "clients before the generic-error version do not know TRANSACTION_ABORTABLE"
    );
    assert_eq!(
        unverified.get(&("b".into(), 0)),
        Some(&ResponseError::NetworkException)
    );
    // Clients from Produce v11 get TRANSACTION_ABORTABLE as it is.
    let generic = request("t", 0, TxnOperation::GenericError);
    assert_eq!(
        interpret(&generic, &answer).get(&("a".into(), 0)),
        Some(&ResponseError::TransactionAbortable)
    );
    // A partition not in the transaction: what the coordinator says.
    let answer = response(
        "t",
        &[
            ("b", 1, Some(ResponseError::InvalidTxnState)),
            ("a", 0, None),
            ("b", 0, None),
        ],
    );
    let unverified = interpret(&asked, &answer);
    assert_eq!(unverified.len(), 1);
    assert_eq!(
        produce_error(unverified[&("b".into(), 1)], TxnOperation::DefaultError),
        ResponseError::InvalidTxnState
    );
}

#[test]
fn top_level_and_retriable_errors() {
    let asked = request("t", 0, TxnOperation::DefaultError);
    let denied = AddPartitionsToTxnResponse::default()
        .with_error_code(ResponseError::ClusterAuthorizationFailed.code());
    let unverified = interpret(&asked, &denied);
    assert_eq!(unverified.len(), 3);
    assert!(
        unverified
            .values()
            .all(|e| *e == ResponseError::InvalidTxnState)
    );
    // No result for the id at all.
    let other = response("someone-else", &[("a", 0, None)]);
    assert!(
        interpret(&asked, &other)
            .values()
            .all(|e| *e == ResponseError::NetworkException)
    );
}

/// What a produce answers for each error the coordinator (or the sender) may give a
/// verification or add, per client generation, after `interpret` (Kafka 4.0's
/// `AddPartitionsToTxnManager` and `ReplicaManager` tables).
#[test]
fn produce_errors_per_request_version() {
    use ResponseError::*;
    use TxnOperation::*;
    let operations = [DefaultError, GenericError, AddPartition];
    // The coordinator's partition error -> the produce's, for Produce v<=10, v11, v12+.
    let table = [
        (
            ConcurrentTransactions,
            [NotEnoughReplicas, NotEnoughReplicas, ConcurrentTransactions],
        ),
        (NetworkException, [NotEnoughReplicas; 3]),
        (CoordinatorLoadInProgress, [NotEnoughReplicas; 3]),
        (CoordinatorNotAvailable, [NotEnoughReplicas; 3]),
        (NotCoordinator, [NotEnoughReplicas; 3]),
        (ProducerFenced, [InvalidProducerEpoch; 3]),
        (InvalidProducerEpoch, [InvalidProducerEpoch; 3]),
        (
            TransactionAbortable,
            [InvalidTxnState, TransactionAbortable, TransactionAbortable],
        ),
        (InvalidTxnState, [InvalidTxnState; 3]),
        (InvalidProducerIdMapping, [InvalidProducerIdMapping; 3]),
    ];
    for (coordinator, expected) in table {
        for (operation, expected) in operations.into_iter().zip(expected) {
            let asked = request("t", 0, operation);
            let answer = response("t", &[("b", 1, Some(coordinator)), ("a", 0, None)]);
            let unverified = interpret(&asked, &answer);
            let error = unverified[&("b".into(), 1)];
            assert_eq!(
                produce_error(error, operation),
                expected,
                "{coordinator:?} for {operation:?}"
            );
        }
    }
}

#[test]
fn the_coordinator_is_the_leader_of_the_ids_state_partition() {
    use crate::controller::{BrokerRegistration, PartitionImage, TopicImage};
    let mut image = MetadataImage::default();
    assert_eq!(coordinator_node(&image, "t", 3), None);
    let partition = |leader| PartitionImage {
        replicas: vec![leader],
        isr: vec![leader],
        leader,
        leader_epoch: 0,
        partition_epoch: 0,
        adding_replicas: Vec::new(),
        removing_replicas: Vec::new(),
    };
    image.topics.insert(
        TRANSACTION_STATE_TOPIC.into(),
        TopicImage {
            name: TRANSACTION_STATE_TOPIC.into(),
            id: uuid::Uuid::from_u128(9),
            partitions: vec![partition(1), partition(2), partition(-1)],
            configs: BTreeMap::new(),
        },
    );
    for node in [1, 2] {
        image.brokers.insert(
            node,
            BrokerRegistration {
                node_id: node,
                incarnation_id: uuid::Uuid::nil(),
                epoch: 1,
                listeners: Vec::new(),
                host: "127.0.0.1".into(),
                port: 9092,
                rack: None,
                fenced: false,
                in_controlled_shutdown: false,
            },
        );
    }
    let by_partition = |wanted: i32| {
        (0..1000)
            .map(|n| format!("id-{n}"))
            .find(|id| partition_for(id, 3) == wanted)
            .unwrap()
    };
    assert_eq!(coordinator_node(&image, &by_partition(0), 3), Some(1));
    assert_eq!(coordinator_node(&image, &by_partition(1), 3), Some(2));
    assert_eq!(coordinator_node(&image, &by_partition(2), 3), None);
}
