//! ApiVersions: computed from the one table in `api/mod.rs`.

use bytes::BytesMut;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, ApiVersionsResponse};

use super::{APIS, RequestContext, encode_with_header};
use crate::broker::Broker;

fn api_list() -> Vec<ApiVersion> {
    APIS.iter()
        .map(|spec| {
            ApiVersion::default()
                .with_api_key(spec.key as i16)
                .with_min_version(spec.min_version)
                .with_max_version(spec.max_version)
        })
        .collect()
}

pub async fn handle(
    _broker: &Broker,
    context: &RequestContext,
    request: ApiVersionsRequest,
) -> ApiVersionsResponse {
    let response = ApiVersionsResponse::default().with_api_keys(api_list());
    if context.version >= 3
        && !(valid_software_field(&request.client_software_name)
            && valid_software_field(&request.client_software_version))
    {
        return response.with_error_code(ResponseError::InvalidRequest.code());
    }
    response
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
/// body (and v0 header) listing our ranges, so the client can retry with one it shares.
pub fn unsupported_version_response(correlation_id: i32) -> BytesMut {
    let response = ApiVersionsResponse::default()
        .with_error_code(ResponseError::UnsupportedVersion.code())
        .with_api_keys(api_list());
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
        assert_eq!(body.api_keys.len(), APIS.len());
    }
}
