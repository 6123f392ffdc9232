//! A size-prefixed Kafka request frame, as a client writes it. The broker's own clients
//! (a follower's fetcher, the command-line tools) share it; a leaf like `types`.

use bytes::{BufMut, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader};
use kafka_protocol::protocol::{Encodable, StrBytes};

/// Encodes `request` at `version` behind its header and a 4-byte size, in one buffer.
/// The error says what could not be encoded.
pub fn encode_request<Req: Encodable>(
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    client_id: StrBytes,
    request: &Req,
) -> Result<BytesMut, String> {
    let header = RequestHeader::default()
        .with_request_api_key(api_key as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(client_id));
    let mut frame = BytesMut::new();
    frame.put_i32(0); // the size, written once the body is known
    header
        .encode(&mut frame, api_key.request_header_version(version))
        .map_err(|error| format!("cannot encode the {api_key:?} v{version} header: {error}"))?;
    request
        .encode(&mut frame, version)
        .map_err(|error| format!("cannot encode {api_key:?} v{version}: {error}"))?;
    let size = i32::try_from(frame.len() - 4)
        .map_err(|_| format!("{api_key:?} request too large: {} bytes", frame.len() - 4))?;
    frame[..4].copy_from_slice(&size.to_be_bytes());
    Ok(frame)
}

#[cfg(test)]
mod tests {
    use bytes::Buf;
    use kafka_protocol::messages::ApiVersionsRequest;
    use kafka_protocol::protocol::Decodable;

    use super::*;

    #[test]
    fn the_frame_is_its_size_then_the_header_then_the_request() {
        let request = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("t"))
            .with_client_software_version(StrBytes::from_static_str("1"));
        let client = StrBytes::from_static_str("c");
        let mut frame = encode_request(ApiKey::ApiVersions, 3, 7, client, &request).unwrap();
        let size = frame.get_i32();
        assert_eq!(size as usize, frame.len());
        let header = RequestHeader::decode(&mut frame, 2).unwrap();
        assert_eq!(
            (header.request_api_key, header.request_api_version),
            (ApiKey::ApiVersions as i16, 3)
        );
        assert_eq!(header.correlation_id, 7);
        assert_eq!(header.client_id.as_deref(), Some("c"));
        assert_eq!(ApiVersionsRequest::decode(&mut frame, 3).unwrap(), request);
        assert!(frame.is_empty());
    }
}
