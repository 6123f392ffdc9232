//! DescribeCluster (KIP-700): brokers, controller and cluster id from the image. Lists
//! unfenced brokers; v2 lists fenced ones too when the request includes them.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse};
use kafka_protocol::protocol::StrBytes;

use super::RequestContext;
use super::metadata::{CLUSTER_OPERATIONS_ALL, OPERATIONS_OMITTED};
use crate::broker::Broker;
use crate::controller::MetadataImage;

const ENDPOINT_TYPE_BROKERS: i8 = 1;

pub async fn describe_cluster(
    broker: &Broker,
    context: &RequestContext,
    request: DescribeClusterRequest,
) -> DescribeClusterResponse {
    let image = broker.image();
    let response = DescribeClusterResponse::default()
        .with_cluster_id(StrBytes::from_string(image.cluster_id.clone()))
        .with_controller_id(BrokerId(
            image.controller_for_clients(broker.config.node_id),
        ))
        .with_cluster_authorized_operations(if request.include_cluster_authorized_operations {
            CLUSTER_OPERATIONS_ALL
        } else {
            OPERATIONS_OMITTED
        })
        .with_endpoint_type(request.endpoint_type);
    if context.version >= 1 && request.endpoint_type != ENDPOINT_TYPE_BROKERS {
        // Controller endpoints are served on the controller listener, as in Kafka.
        return response
            .with_error_code(ResponseError::UnsupportedEndpointType.code())
            .with_error_message(Some(StrBytes::from_static_str(
                "The broker listener only describes broker endpoints",
            )));
    }
    // v2 (KIP-1073): fenced brokers only when asked for, flagged as such.
    let include_fenced = context.version >= 2 && request.include_fenced_brokers;
    response.with_brokers(cluster_brokers(
        &image,
        include_fenced,
        &context.listener_name,
    ))
}

/// Unfenced brokers, and fenced ones (flagged) when `include_fenced`; in node id order;
/// each at its endpoint on `listener` (the request's), those without one left out.
fn cluster_brokers(
    image: &MetadataImage,
    include_fenced: bool,
    listener: &str,
) -> Vec<DescribeClusterBroker> {
    image
        .brokers
        .values()
        .filter(|b| include_fenced || !b.fenced)
        .filter_map(|b| Some((b, b.listener(listener)?)))
        .map(|(b, endpoint)| {
            DescribeClusterBroker::default()
                .with_broker_id(BrokerId(b.node_id))
                .with_host(StrBytes::from_string(endpoint.host.clone()))
                .with_port(i32::from(endpoint.port))
                .with_rack(b.rack.clone().map(StrBytes::from_string))
                // Only v2 carries the flag, and only included fenced brokers set it.
                .with_is_fenced(include_fenced && b.fenced)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use kafka_protocol::protocol::Encodable;

    use super::*;
    use crate::controller::commands::{fence_broker_for_tests, register_live_broker};

    #[test]
    fn fenced_brokers_are_listed_only_when_asked_for() {
        let mut image = MetadataImage::default();
        register_live_broker(&mut image, 1);
        register_live_broker(&mut image, 2);
        fence_broker_for_tests(&mut image, 2);
        let listed = |include| -> Vec<(i32, bool)> {
            cluster_brokers(&image, include, "PLAINTEXT")
                .iter()
                .map(|b| (b.broker_id.0, b.is_fenced))
                .collect()
        };
        assert_eq!(listed(false), [(1, false)]);
        assert_eq!(listed(true), [(1, false), (2, true)]);
        // v0/v1 cannot carry the flag: a response without included fenced brokers encodes.
        let response = DescribeClusterResponse::default().with_brokers(cluster_brokers(
            &image,
            false,
            "PLAINTEXT",
        ));
        let mut buffer = bytes::BytesMut::new();
        response.encode(&mut buffer, 0).unwrap();
    }

    #[test]
    fn brokers_are_described_on_the_request_listener() {
        use crate::controller::commands::register_live_broker_on;
        let mut image = MetadataImage::default();
        let both = [
            ("PLAINTEXT", "kafka1", 9092),
            ("EXTERNAL", "localhost", 19092),
        ];
        register_live_broker_on(&mut image, 1, &both);
        register_live_broker_on(&mut image, 2, &[("PLAINTEXT", "kafka2", 9092)]);
        let listed = |listener| -> Vec<(i32, String, i32)> {
            cluster_brokers(&image, false, listener)
                .into_iter()
                .map(|b| (b.broker_id.0, b.host.to_string(), b.port))
                .collect()
        };
        assert_eq!(listed("EXTERNAL"), [(1, "localhost".into(), 19092)]);
        assert_eq!(
            listed("PLAINTEXT"),
            [(1, "kafka1".into(), 9092), (2, "kafka2".into(), 9092)]
        );
    }
}
