//! ApiVersions: computed from the one table in `api/mod.rs`; from v3 on it also carries
//! the supported and finalized feature levels of `controller::features` (KIP-584).

use bytes::BytesMut;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::api_versions_response::{
    ApiVersion, FinalizedFeatureKey, SupportedFeatureKey,
};
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, ApiVersionsResponse};
use kafka_protocol::protocol::StrBytes;

use super::{
    APIS, ApiSpec, RequestContext, consumer_groups, encode_with_header, is_consumer_group_api,
};
use crate::broker::Broker;
use crate::controller::MetadataImage;
use crate::controller::features;

/// The first version with feature fields (tagged), and the first whose clients accept a
/// supported range starting at level 0 (KAFKA-17492).
const FEATURES_VERSION_MIN: i16 = 3;
const LEVEL_ZERO_VERSION_MIN: i16 = 4;

/// Produce is advertised from v0 although v0-2 are refused (the connection is closed, as
/// Kafka 4.0's `Processor.parseRequestHeader` does): librdkafka will not produce
/// compressed batches to a broker whose Produce range does not start at 0 (KAFKA-18659,
/// Kafka's `ApiKeys.PRODUCE_API_VERSIONS_RESPONSE_MIN_VERSION`).
const PRODUCE_ADVERTISED_VERSION_MIN: i16 = 0;

fn advertised_min_version(spec: &ApiSpec) -> i16 {
    if spec.key == ApiKey::Produce {
        PRODUCE_ADVERTISED_VERSION_MIN
    } else {
        spec.min_version
    }
}

/// Every API served; `consumer_groups`: with the KIP-848 ones (Kafka leaves them out while
/// the consumer protocol is off).
fn api_list(consumer_groups: bool) -> Vec<ApiVersion> {
    APIS.iter()
        .filter(|spec| consumer_groups || !is_consumer_group_api(spec.key))
        .map(|spec| {
            ApiVersion::default()
                .with_api_key(spec.key as i16)
                .with_min_version(advertised_min_version(spec))
                .with_max_version(spec.max_version)
        })
        .collect()
}

pub async fn handle(
    broker: &Broker,
    context: &RequestContext,
    request: ApiVersionsRequest,
) -> ApiVersionsResponse {
    let image = broker.image();
    let consumer_groups = consumer_groups::enabled(broker, &image).is_some();
    let response = ApiVersionsResponse::default().with_api_keys(api_list(consumer_groups));
    if context.version < FEATURES_VERSION_MIN {
        return response;
    }
    if !(valid_software_field(&request.client_software_name)
        && valid_software_field(&request.client_software_version))
    {
        return response.with_error_code(ResponseError::InvalidRequest.code());
    }
    with_features(response, &image, context.version)
}

/// Adds the feature fields as Kafka's `ApiVersionsResponse.Builder` fills them: supported
/// ranges (those starting at 0 only from v4 on), finalized levels other than 0 (Kafka
/// never sends a level-0 finalized feature: a missing one reads as 0), and the epoch.
fn with_features(
    response: ApiVersionsResponse,
    image: &MetadataImage,
    version: i16,
) -> ApiVersionsResponse {
    let supported = features::SUPPORTED
        .iter()
        .filter(|feature| feature.min_level > 0 || version >= LEVEL_ZERO_VERSION_MIN)
        .map(|feature| {
            SupportedFeatureKey::default()
                .with_name(StrBytes::from_static_str(feature.name))
                .with_min_version(feature.min_level)
                .with_max_version(feature.max_level)
        })
        .collect();
    let finalized = features::finalized(image)
        .into_iter()
        .filter(|&(_, level)| level != 0)
        .map(|(name, level)| {
            FinalizedFeatureKey::default()
                .with_name(StrBytes::from_static_str(name))
                .with_min_version_level(level)
                .with_max_version_level(level)
        })
        .collect();
    let epoch = features::finalized_epoch(image);
    assert!(
        epoch >= 0,
        "a finalized features epoch of -1 would hide the features"
    );
    response
        .with_supported_features(supported)
        .with_finalized_features(finalized)
        .with_finalized_features_epoch(epoch)
}

/// Kafka's `[a-zA-Z0-9](?:[a-zA-Z0-9\-.]*[a-zA-Z0-9])?` for client software name/version.
fn valid_software_field(value: &str) -> bool {
    let bytes = value.as_bytes();
    let edge_ok = |b: Option<&u8>| b.is_some_and(u8::is_ascii_alphanumeric);
    edge_ok(bytes.first())
        && edge_ok(bytes.last())
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'.')
}

/// The answer to an ApiVersions version we do not speak: UNSUPPORTED_VERSION with a v0
/// body (and v0 header) listing only ApiVersions' own range, so the client can retry with
/// a version it shares and learn the rest from that answer. This is Kafka's answer
/// (KIP-511, `ApiVersionsRequest.getErrorResponse`); listing every API here would also
/// advertise APIs that are off, since this answer is built before any config is read.
pub fn unsupported_version_response(correlation_id: i32) -> BytesMut {
    let own_range = APIS
        .iter()
        .find(|spec| spec.key == ApiKey::ApiVersions)
        .map(|spec| {
            ApiVersion::default()
                .with_api_key(spec.key as i16)
                .with_min_version(spec.min_version)
                .with_max_version(spec.max_version)
        });
    let response = ApiVersionsResponse::default()
        .with_error_code(ResponseError::UnsupportedVersion.code())
        .with_api_keys(own_range.into_iter().collect());
    encode_with_header(ApiKey::ApiVersions, 0, correlation_id, &response)
        .expect("an ApiVersions v0 response always encodes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn software_names_follow_kafka_pattern() {
        assert!(valid_software_field("librdkafka"));
        assert!(valid_software_field("2.12.0-RC1"));
        assert!(valid_software_field("a"));
        assert!(!valid_software_field(""));
        assert!(!valid_software_field("-x"));
        assert!(!valid_software_field("x."));
        assert!(!valid_software_field("has space"));
    }

    #[test]
    fn unsupported_version_answer_is_a_v0_body() {
        use bytes::Buf;
        use kafka_protocol::protocol::Decodable;
        let mut bytes = unsupported_version_response(77).freeze();
        let size = bytes.get_i32() as usize;
        assert_eq!(size, bytes.len());
        assert_eq!(bytes.get_i32(), 77);
        let body = ApiVersionsResponse::decode(&mut bytes, 0).unwrap();
        assert_eq!(body.error_code, 35);
        let versions = body.api_keys.iter().find(|k| k.api_key == 18).unwrap();
        assert_eq!((versions.min_version, versions.max_version), (0, 4));
        assert_eq!(
            body.api_keys.len(),
            1,
            "only ApiVersions itself, as Kafka answers"
        );
    }

    #[test]
    fn consumer_group_apis_are_listed_only_while_the_protocol_is_on() {
        let heartbeat = ApiKey::ConsumerGroupHeartbeat as i16;
        let on = api_list(true);
        let listed = on.iter().find(|k| k.api_key == heartbeat).unwrap();
        assert_eq!((listed.min_version, listed.max_version), (0, 1));
        let off = api_list(false);
        assert!(off.iter().all(|k| k.api_key != heartbeat));
        assert_eq!(off.len() + 2, on.len());
    }

    #[test]
    fn produce_is_advertised_from_v0_but_served_from_v3() {
        let listed = api_list(true);
        let produce = listed.iter().find(|k| k.api_key == 0).unwrap();
        assert_eq!((produce.min_version, produce.max_version), (0, 12));
        assert_eq!(super::super::find_api(0).unwrap().min_version, 3);
        let fetch = listed.iter().find(|k| k.api_key == 1).unwrap();
        assert_eq!(fetch.min_version, 4);
    }

    fn features_round_trip(version: i16) -> ApiVersionsResponse {
        use kafka_protocol::protocol::{Decodable, Encodable};
        let image = MetadataImage {
            applied_index: 12,
            ..MetadataImage::default()
        };
        let response = with_features(ApiVersionsResponse::default(), &image, version);
        let mut bytes = BytesMut::new();
        response.encode(&mut bytes, version).unwrap();
        ApiVersionsResponse::decode(&mut bytes.freeze(), version).unwrap()
    }

    #[test]
    fn v4_lists_every_feature_and_finalizes_only_nonzero_levels() {
        let decoded = features_round_trip(4);
        let supported: Vec<(&str, i16, i16)> = decoded
            .supported_features
            .iter()
            .map(|f| (f.name.as_str(), f.min_version, f.max_version))
            .collect();
        assert_eq!(
            supported,
            [
                ("metadata.version", 7, 25),
                ("kraft.version", 0, 0),
                ("transaction.version", 0, 2),
                ("group.version", 0, 1)
            ]
        );
        let finalized: Vec<(&str, i16, i16)> = decoded
            .finalized_features
            .iter()
            .map(|f| (f.name.as_str(), f.min_version_level, f.max_version_level))
            .collect();
        let transactions = features::TRANSACTION_VERSION_FINALIZED;
        let mut expected = vec![("metadata.version", 25, 25)];
        if transactions != 0 {
            expected.push(("transaction.version", transactions, transactions));
        }
        expected.push(("group.version", 1, 1));
        assert_eq!(finalized, expected);
        assert_eq!(decoded.finalized_features_epoch, 12);
        assert!(!decoded.zk_migration_ready);
    }

    #[test]
    fn v3_leaves_out_ranges_that_start_at_zero() {
        let decoded = features_round_trip(3);
        let names: Vec<&str> = decoded
            .supported_features
            .iter()
            .map(|f| f.name.as_str())
            .collect();
        assert_eq!(names, ["metadata.version"]);
        // metadata.version, group.version, and transaction.version unless it is at 0.
        let finalized_count = if features::TRANSACTION_VERSION_FINALIZED != 0 {
            3
        } else {
            2
        };
        assert_eq!(decoded.finalized_features.len(), finalized_count);
        assert_eq!(decoded.finalized_features_epoch, 12);
    }
}
