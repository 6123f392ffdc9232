//! DescribeProducers v0 (kafka-transactions.sh describe-producers,
//! Admin.describeProducers): per partition, the producers its leader remembers, with
//! their epoch, last sequence, last timestamp, coordinator epoch and the first offset of
//! their open transaction (-1 for none).
//!
//! Answered by the partition's leader only, in Kafka's order
//! (`ReplicaManager.activeProducerState`): a partition the image does not have is
//! UNKNOWN_TOPIC_OR_PARTITION, one hosted elsewhere or followed here
//! NOT_LEADER_OR_FOLLOWER, one whose log would not open KAFKA_STORAGE_ERROR.

use kafka_protocol::messages::describe_producers_response::{
    PartitionResponse, ProducerState, TopicResponse,
};
use kafka_protocol::messages::{DescribeProducersRequest, DescribeProducersResponse, ProducerId};

use super::RequestContext;
use super::errors::replica_error;
use super::leader_check::{NO_EPOCH, leading_partition};
use crate::broker::Broker;
use crate::controller::MetadataImage;
use crate::txn::producer_state::ActiveProducer;

pub async fn handle(
    broker: &Broker,
    _context: &RequestContext,
    request: DescribeProducersRequest,
) -> DescribeProducersResponse {
    let image = broker.image();
    let topics = request
        .topics
        .iter()
        .map(|topic| {
            let name = topic.name.0.as_str();
            let partitions = topic
                .partition_indexes
                .iter()
                .map(|&index| describe_partition(broker, &image, name, index))
                .collect();
            TopicResponse::default()
                .with_name(topic.name.clone())
                .with_partitions(partitions)
        })
        .collect();
    DescribeProducersResponse::default().with_topics(topics)
}

fn describe_partition(
    broker: &Broker,
    image: &MetadataImage,
    topic: &str,
    index: i32,
) -> PartitionResponse {
    let response = PartitionResponse::default().with_partition_index(index);
    let producers = leading_partition(broker, image, topic, index, NO_EPOCH)
        .and_then(|p| p.active_producers().map_err(|error| replica_error(&error)));
    match producers {
        Ok(producers) => response.with_active_producers(producers.iter().map(wire).collect()),
        Err(error) => response.with_error_code(error.code()),
    }
}

/// One producer as the response carries it.
fn wire(producer: &ActiveProducer) -> ProducerState {
    ProducerState::default()
        .with_producer_id(ProducerId(producer.producer_id))
        .with_producer_epoch(i32::from(producer.epoch))
        .with_last_sequence(producer.last_sequence)
        .with_last_timestamp(producer.last_timestamp)
        .with_coordinator_epoch(producer.coordinator_epoch)
        .with_current_txn_start_offset(producer.txn_start_offset)
}

#[cfg(test)]
mod tests {
    use kafka_protocol::protocol::{Decodable, Encodable};

    use super::*;

    #[test]
    fn a_producer_round_trips_through_the_v0_wire_form() {
        let producer = ActiveProducer {
            producer_id: 4_000,
            epoch: 7,
            last_sequence: 41,
            last_timestamp: 1_700_000_000_000,
            coordinator_epoch: 3,
            txn_start_offset: 12,
        };
        let partition = PartitionResponse::default()
            .with_partition_index(2)
            .with_active_producers(vec![wire(&producer)]);
        let response = DescribeProducersResponse::default().with_topics(vec![
            TopicResponse::default().with_partitions(vec![partition]),
        ]);
        let mut bytes = bytes::BytesMut::new();
        response.encode(&mut bytes, 0).unwrap();
        let decoded = DescribeProducersResponse::decode(&mut bytes.freeze(), 0).unwrap();
        let state = &decoded.topics[0].partitions[0].active_producers[0];
        assert_eq!(state.producer_id.0, 4_000);
        assert_eq!(state.producer_epoch, 7);
        assert_eq!(state.last_sequence, 41);
        assert_eq!(state.last_timestamp, 1_700_000_000_000);
        assert_eq!(state.coordinator_epoch, 3);
        assert_eq!(state.current_txn_start_offset, 12);
        assert_eq!(decoded.topics[0].partitions[0].error_code, 0);
    }
}
