//! KIP-951 leader hints: a Produce or Fetch partition refused because this broker does not
//! lead it names the current leader and its epoch (`current_leader`), and the response
//! lists that leader's client endpoint (`node_endpoints`), so the client goes straight to
//! it instead of refreshing its metadata first.
//!
//! As Kafka's `KafkaApis` does: Produce v10+ hints on NOT_LEADER_OR_FOLLOWER; Fetch v16+
//! (where `node_endpoints` exists; `current_leader` exists from v12 but Kafka fills it
//! only from v16) hints on NOT_LEADER_OR_FOLLOWER and FENCED_LEADER_EPOCH. The leader and
//! epoch come from the metadata image (Kafka's `getCurrentLeader` falls back to its
//! metadata cache for partitions it does not host); an endpoint is listed only for a live
//! (registered, unfenced) leader, each leader once, like `getAliveBrokerNode`.

use std::collections::BTreeMap;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{BrokerId, produce_response};
use kafka_protocol::protocol::StrBytes;

use crate::controller::MetadataImage;
use crate::controller::image::NO_LEADER;
use crate::types::NodeId;

/// Produce versions that carry `current_leader` and `node_endpoints`.
const PRODUCE_VERSION_MIN: i16 = 10;
/// Fetch versions Kafka fills them at.
const FETCH_VERSION_MIN: i16 = 16;

/// A partition's leader as the image has it; Kafka's (-1, -1) when it has none.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaderHint {
    pub leader_id: NodeId,
    pub leader_epoch: i32,
}

/// One client endpoint of a hinted leader.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: i32,
    pub rack: Option<String>,
}

/// Collects the hints of one response: which errors get one at this version, and the
/// endpoints of the leaders named.
pub struct LeaderHints<'a> {
    image: &'a MetadataImage,
    /// The listener the request came through: endpoints are listed on it.
    listener: &'a str,
    /// False when the version cannot carry hints: every call then answers `None`.
    enabled: bool,
    hinted_errors: &'static [ResponseError],
    endpoints: BTreeMap<NodeId, Endpoint>,
}

impl<'a> LeaderHints<'a> {
    pub fn for_produce(image: &'a MetadataImage, listener: &'a str, version: i16) -> Self {
        Self::new(
            image,
            listener,
            version >= PRODUCE_VERSION_MIN,
            &[ResponseError::NotLeaderOrFollower],
        )
    }

    pub fn for_fetch(image: &'a MetadataImage, listener: &'a str, version: i16) -> Self {
        Self::new(
            image,
            listener,
            version >= FETCH_VERSION_MIN,
            &[
                ResponseError::NotLeaderOrFollower,
                ResponseError::FencedLeaderEpoch,
            ],
        )
    }

    fn new(
        image: &'a MetadataImage,
        listener: &'a str,
        enabled: bool,
        errors: &'static [ResponseError],
    ) -> Self {
        LeaderHints {
            image,
            listener,
            enabled,
            hinted_errors: errors,
            endpoints: BTreeMap::new(),
        }
    }

    /// The hint for `topic`/`partition` refused with `error`, if this version and error get
    /// one; notes the leader's endpoint when it is live.
    pub fn hint(
        &mut self,
        topic: &str,
        partition: i32,
        error: ResponseError,
    ) -> Option<LeaderHint> {
        if !self.enabled || !self.hinted_errors.contains(&error) {
            return None;
        }
        let (leader_id, leader_epoch) = match self.image.partition(topic, partition) {
            Some(assigned) => (assigned.leader, assigned.leader_epoch),
            None => (NO_LEADER, -1),
        };
        // Kafka's `getAliveBrokerNode(leader, listener)`: no endpoint when the leader has
        // none on the request's listener.
        let live = (self.image.brokers.get(&leader_id)).filter(|broker| !broker.fenced);
        let on_listener = live.and_then(|broker| Some((broker, broker.listener(self.listener)?)));
        if let Some((broker, endpoint)) = on_listener {
            self.endpoints.entry(leader_id).or_insert_with(|| Endpoint {
                host: endpoint.host.clone(),
                port: i32::from(endpoint.port),
                rack: broker.rack.clone(),
            });
        }
        Some(LeaderHint {
            leader_id,
            leader_epoch,
        })
    }

    /// `hint` as Produce's `current_leader` (the default, not encoded, when there is none).
    pub fn produce_leader(
        &mut self,
        topic: &str,
        partition: i32,
        error: ResponseError,
    ) -> produce_response::LeaderIdAndEpoch {
        match self.hint(topic, partition, error) {
            Some(hint) => produce_response::LeaderIdAndEpoch::default()
                .with_leader_id(BrokerId(hint.leader_id))
                .with_leader_epoch(hint.leader_epoch),
            None => produce_response::LeaderIdAndEpoch::default(),
        }
    }

    /// Produce's `node_endpoints`: each hinted live leader once, by node id.
    pub fn produce_endpoints(&self) -> Vec<produce_response::NodeEndpoint> {
        (self.endpoints.iter())
            .map(|(node_id, endpoint)| {
                produce_response::NodeEndpoint::default()
                    .with_node_id(BrokerId(*node_id))
                    .with_host(StrBytes::from_string(endpoint.host.clone()))
                    .with_port(endpoint.port)
                    .with_rack(endpoint.rack.clone().map(StrBytes::from_string))
            })
            .collect()
    }

    /// Fetch's `node_endpoints`: each hinted live leader once, by node id.
    pub fn into_endpoints(self) -> Vec<(NodeId, Endpoint)> {
        self.endpoints.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;
    use kafka_protocol::messages::produce_response::{
        PartitionProduceResponse, TopicProduceResponse,
    };
    use kafka_protocol::messages::{FetchResponse, ProduceResponse, TopicName};
    use kafka_protocol::protocol::{Decodable, Encodable};
    use uuid::Uuid;

    use super::*;
    use crate::api::fetch_response::{FetchAnswer, PartitionAnswer, TopicAnswer};
    use crate::controller::image::{
        BrokerEndpoint, BrokerRegistration, PartitionImage, TopicImage,
    };

    fn broker(node_id: NodeId, fenced: bool) -> BrokerRegistration {
        let host = format!("node{node_id}.example");
        BrokerRegistration {
            node_id,
            incarnation_id: Uuid::from_u128(node_id as u128 + 1),
            epoch: 1,
            listeners: vec![BrokerEndpoint {
                name: "PLAINTEXT".into(),
                host: host.clone(),
                port: 9000 + node_id as u16,
            }],
            host,
            port: 9000 + node_id,
            rack: (node_id == 2).then(|| "rack-b".to_string()),
            fenced,
            in_controlled_shutdown: false,
        }
    }

    /// Partition i of "t" is led by `leaders[i]` at epoch 10 + i; node 3 is fenced.
    fn image(leaders: &[NodeId]) -> MetadataImage {
        let mut image = MetadataImage::default();
        for (node_id, fenced) in [(1, false), (2, false), (3, true)] {
            image.brokers.insert(node_id, broker(node_id, fenced));
        }
        let partitions = (leaders.iter().enumerate())
            .map(|(index, &leader)| PartitionImage {
                replicas: vec![1, 2, 3],
                isr: vec![1, 2, 3],
                leader,
                leader_epoch: 10 + index as i32,
                partition_epoch: 0,
                adding_replicas: Vec::new(),
                removing_replicas: Vec::new(),
            })
            .collect();
        let id = Uuid::from_u128(7);
        let topic = TopicImage {
            name: "t".into(),
            id,
            partitions,
            configs: BTreeMap::new(),
        };
        image.topics.insert("t".into(), topic);
        image.topic_names.insert(id, "t".into());
        image
    }

    const NOT_LEADER: ResponseError = ResponseError::NotLeaderOrFollower;
    const FENCED: ResponseError = ResponseError::FencedLeaderEpoch;

    #[test]
    fn hints_name_the_image_leader_and_list_live_leaders_once() {
        let image = image(&[2, 2, 3, NO_LEADER]);
        let mut hints = LeaderHints::for_produce(&image, "PLAINTEXT", 12);
        let hint = |leader_id, leader_epoch| {
            Some(LeaderHint {
                leader_id,
                leader_epoch,
            })
        };
        assert_eq!(hints.hint("t", 0, NOT_LEADER), hint(2, 10));
        assert_eq!(hints.hint("t", 1, NOT_LEADER), hint(2, 11));
        // A fenced leader is named but has no endpoint (Kafka's getAliveBrokerNode).
        assert_eq!(hints.hint("t", 2, NOT_LEADER), hint(3, 12));
        assert_eq!(hints.hint("t", 3, NOT_LEADER), hint(NO_LEADER, 13));
        assert_eq!(hints.hint("gone", 0, NOT_LEADER), hint(NO_LEADER, -1));
        // Produce hints NOT_LEADER_OR_FOLLOWER only.
        assert_eq!(hints.hint("t", 0, FENCED), None);
        let endpoints = hints.produce_endpoints();
        assert_eq!(endpoints.len(), 1);
        assert_eq!(endpoints[0].node_id, BrokerId(2));
        assert_eq!(endpoints[0].host.as_str(), "node2.example");
        assert_eq!(endpoints[0].port, 9002);
        assert_eq!(endpoints[0].rack.as_deref(), Some("rack-b"));

        let mut fetch = LeaderHints::for_fetch(&image, "PLAINTEXT", 16);
        assert_eq!(fetch.hint("t", 1, FENCED), hint(2, 11));
        assert_eq!(fetch.hint("t", 1, ResponseError::OffsetOutOfRange), None);
        assert_eq!(fetch.into_endpoints().len(), 1);
    }

    #[test]
    fn endpoints_are_on_the_request_listener() {
        let mut image = image(&[2, 1]);
        let node2 = image.brokers.get_mut(&2).unwrap();
        node2.listeners.push(BrokerEndpoint {
            name: "EXTERNAL".into(),
            host: "localhost".into(),
            port: 19002,
        });
        let mut hints = LeaderHints::for_produce(&image, "EXTERNAL", 12);
        let named = |leader_id, leader_epoch| {
            Some(LeaderHint {
                leader_id,
                leader_epoch,
            })
        };
        assert_eq!(hints.hint("t", 0, NOT_LEADER), named(2, 10));
        // Node 1 has no EXTERNAL listener: still named as leader, but no endpoint.
        assert_eq!(hints.hint("t", 1, NOT_LEADER), named(1, 11));
        let endpoints = hints.produce_endpoints();
        let listed: Vec<(i32, &str, i32)> = (endpoints.iter())
            .map(|e| (e.node_id.0, e.host.as_str(), e.port))
            .collect();
        assert_eq!(listed, [(2, "localhost", 19002)]);
    }

    #[test]
    fn versions_without_the_fields_get_no_hints() {
        let image = image(&[1]);
        assert_eq!(
            LeaderHints::for_produce(&image, "PLAINTEXT", 9).hint("t", 0, NOT_LEADER),
            None
        );
        assert_eq!(
            LeaderHints::for_fetch(&image, "PLAINTEXT", 15).hint("t", 0, NOT_LEADER),
            None
        );
        assert!(
            LeaderHints::for_fetch(&image, "PLAINTEXT", 16)
                .hint("t", 0, NOT_LEADER)
                .is_some()
        );
    }

    fn produce_response(version: i16, image: &MetadataImage) -> ProduceResponse {
        let mut hints = LeaderHints::for_produce(image, "PLAINTEXT", version);
        let partition = PartitionProduceResponse::default()
            .with_index(0)
            .with_error_code(NOT_LEADER.code())
            .with_current_leader(hints.produce_leader("t", 0, NOT_LEADER));
        ProduceResponse::default()
            .with_responses(vec![
                TopicProduceResponse::default()
                    .with_name(TopicName(StrBytes::from_static_str("t")))
                    .with_partition_responses(vec![partition]),
            ])
            .with_node_endpoints(hints.produce_endpoints())
    }

    fn round_trip<T: Encodable + Decodable>(message: &T, version: i16) -> (T, usize) {
        let mut bytes = BytesMut::new();
        message.encode(&mut bytes, version).unwrap();
        let size = bytes.len();
        (T::decode(&mut bytes.freeze(), version).unwrap(), size)
    }

    #[test]
    fn produce_v10_and_later_carry_the_hint_and_v9_encodes_without_it() {
        let image = image(&[2]);
        for version in 10..=12 {
            let (decoded, _) = round_trip(&produce_response(version, &image), version);
            let partition = &decoded.responses[0].partition_responses[0];
            assert_eq!(
                partition.current_leader.leader_id,
                BrokerId(2),
                "v{version}"
            );
            assert_eq!(partition.current_leader.leader_epoch, 10, "v{version}");
            assert_eq!(decoded.node_endpoints.len(), 1, "v{version}");
            assert_eq!(decoded.node_endpoints[0].port, 9002, "v{version}");
        }
        let v9 = produce_response(9, &image);
        assert_eq!(v9.node_endpoints, vec![]);
        let (decoded, size) = round_trip(&v9, 9);
        assert_eq!(
            decoded.responses[0].partition_responses[0]
                .current_leader
                .leader_id,
            BrokerId(-1)
        );
        // The same response without any hint: byte for byte the same size.
        let bare = ProduceResponse::default().with_responses(v9.responses.clone());
        assert_eq!(round_trip(&bare, 9).1, size);
    }

    /// A fetch answer with one fenced partition, as the broker encodes it, decoded.
    fn fetch_response(version: i16, image: &MetadataImage) -> FetchResponse {
        let mut hints = LeaderHints::for_fetch(image, "PLAINTEXT", version);
        let mut partition = PartitionAnswer::empty(0);
        partition.error_code = FENCED.code();
        partition.current_leader = hints.hint("t", 0, FENCED);
        let answer = FetchAnswer {
            topics: vec![TopicAnswer {
                name: TopicName(StrBytes::from_static_str("t")),
                id: Uuid::from_u128(7),
                partitions: vec![partition],
            }],
            node_endpoints: hints.into_endpoints(),
            ..FetchAnswer::default()
        };
        answer.decoded(version)
    }

    #[test]
    fn fetch_v16_and_later_carry_the_hint_and_earlier_versions_do_not() {
        let image = image(&[1]);
        for version in 16..=17 {
            let decoded = fetch_response(version, &image);
            let partition = &decoded.responses[0].partitions[0];
            assert_eq!(
                partition.current_leader.leader_id,
                BrokerId(1),
                "v{version}"
            );
            assert_eq!(partition.current_leader.leader_epoch, 10, "v{version}");
            let endpoint = &decoded.node_endpoints[0];
            assert_eq!(
                (endpoint.host.as_str(), endpoint.port),
                ("node1.example", 9001)
            );
        }
        for version in [4, 12, 15] {
            let decoded = fetch_response(version, &image);
            let partition = &decoded.responses[0].partitions[0];
            assert_eq!(
                partition.current_leader.leader_id,
                BrokerId(-1),
                "v{version}"
            );
            assert!(decoded.node_endpoints.is_empty(), "v{version}");
        }
    }
}
