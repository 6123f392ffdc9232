//! A small blocking Kafka client connection for the command-line tools: one request at a
//! time over a `std::net::TcpStream`, messages from `kafka-protocol`, versions chosen from
//! the broker's ApiVersions answer. Nothing here runs inside the broker.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::ResponseHeader;
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, ApiVersionsResponse};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use super::error::CliError;
use crate::request_frame::encode_request;

/// The ApiVersions version sent first, as Kafka 4's clients do; an older broker answers
/// UNSUPPORTED_VERSION with its own range and the request is repeated at that version.
pub const API_VERSIONS_VERSION: i16 = 3;
/// The largest response accepted. Fetches ask for far less (`FETCH_BYTES_MAX` in the
/// consumer); the bound keeps a confused peer from making us allocate without limit.
pub const RESPONSE_BYTES_MAX: usize = 64 * 1024 * 1024;
const CLIENT_ID: &str = "gracchus-cli";
const CLIENT_SOFTWARE_NAME: &str = "gracchus-cli";

pub struct Connection {
    address: String,
    stream: TcpStream,
    /// Each request's own time limit.
    request_timeout: Duration,
    /// A limit over everything this connection does (the health check's budget).
    deadline: Option<Instant>,
    next_correlation_id: i32,
    /// The broker's ApiVersions answer, once asked.
    api_versions: Option<ApiVersionsResponse>,
}

impl Connection {
    /// Connects to `address` (`host:port`, `[v6]:port`), trying each resolved address.
    pub fn connect(
        address: &str,
        request_timeout: Duration,
        deadline: Option<Instant>,
    ) -> Result<Connection, CliError> {
        let connect_error = |source| CliError::Connect {
            address: address.to_string(),
            source,
        };
        let resolved: Vec<_> = address.to_socket_addrs().map_err(connect_error)?.collect();
        let mut last_error = std::io::Error::other("the address resolved to nothing");
        for socket_address in resolved {
            let timeout = remaining(request_timeout, deadline, address)?;
            match TcpStream::connect_timeout(&socket_address, timeout) {
                Ok(stream) => {
                    // Requests are small and answered one at a time: no Nagle delay.
                    let _ = stream.set_nodelay(true);
                    return Ok(Connection {
                        address: address.to_string(),
                        stream,
                        request_timeout,
                        deadline,
                        next_correlation_id: 0,
                        api_versions: None,
                    });
                }
                Err(error) if error.kind() == std::io::ErrorKind::TimedOut => {
                    return Err(timed_out(address, timeout));
                }
                Err(error) => last_error = error,
            }
        }
        Err(connect_error(last_error))
    }

    /// Connects and asks for the broker's API versions.
    pub fn open(
        address: &str,
        request_timeout: Duration,
        deadline: Option<Instant>,
    ) -> Result<Connection, CliError> {
        let mut connection = Connection::connect(address, request_timeout, deadline)?;
        connection.negotiate()?;
        Ok(connection)
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    /// ApiVersions as Kafka's clients send it: v3 first; a broker that does not speak v3
    /// answers UNSUPPORTED_VERSION in the v0 layout with its own ApiVersions range, and
    /// the request is sent again at the highest version both sides know.
    pub fn negotiate(&mut self) -> Result<&ApiVersionsResponse, CliError> {
        let mut version = API_VERSIONS_VERSION;
        for _ in 0..2 {
            let request = ApiVersionsRequest::default()
                .with_client_software_name(StrBytes::from_static_str(CLIENT_SOFTWARE_NAME))
                .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
            let frame = self.exchange(ApiKey::ApiVersions, version, &request)?;
            let response = decode_api_versions(frame, version)?;
            if response.error_code == ResponseError::UnsupportedVersion.code() {
                let broker_max = response
                    .api_keys
                    .iter()
                    .find(|api| api.api_key == ApiKey::ApiVersions as i16)
                    .map(|api| api.max_version);
                match broker_max {
                    Some(max) if max < version && max >= 0 => {
                        version = max;
                        continue;
                    }
                    _ => return Err(CliError::from_code(response.error_code, None)),
                }
            }
            return Ok(self.api_versions.insert(response));
        }
        Err(CliError::Protocol(
            "the broker refused every ApiVersions version".into(),
        ))
    }

    /// The version to send `api_key` at: the highest the broker supports, at most
    /// `ours_max` (the newest layout this tool fills in) and at least `ours_min`.
    pub fn version(&self, api_key: ApiKey, ours_min: i16, ours_max: i16) -> Result<i16, CliError> {
        let api = self
            .api_versions
            .iter()
            .flat_map(|response| response.api_keys.iter())
            .find(|api| api.api_key == api_key as i16)
            .ok_or_else(|| {
                CliError::Protocol(format!("the broker does not support {api_key:?}"))
            })?;
        let version = api.max_version.min(ours_max);
        if version < ours_min || version < api.min_version {
            return Err(CliError::Protocol(format!(
                "no common version of {api_key:?}: broker {}-{}, this tool {ours_min}-{ours_max}",
                api.min_version, api.max_version
            )));
        }
        Ok(version)
    }

    /// Sends `request` as `api_key` v`version` and decodes the response.
    pub fn call<Req: Encodable, Resp: Decodable>(
        &mut self,
        api_key: ApiKey,
        version: i16,
        request: &Req,
    ) -> Result<Resp, CliError> {
        let mut frame = self.exchange(api_key, version, request)?;
        let header = ResponseHeader::decode(&mut frame, api_key.response_header_version(version))
            .map_err(|error| self.malformed(api_key, error))?;
        self.check_correlation(header.correlation_id)?;
        Resp::decode(&mut frame, version).map_err(|error| self.malformed(api_key, error))
    }

    /// Sends a request that gets no response (Produce with acks=0).
    pub fn send_only<Req: Encodable>(
        &mut self,
        api_key: ApiKey,
        version: i16,
        request: &Req,
    ) -> Result<(), CliError> {
        self.write_request(api_key, version, request).map(drop)
    }

    /// Sends a request and returns the whole response frame (header included).
    fn exchange<Req: Encodable>(
        &mut self,
        api_key: ApiKey,
        version: i16,
        request: &Req,
    ) -> Result<Bytes, CliError> {
        let timeout = self.write_request(api_key, version, request)?;
        self.read_frame(timeout)
    }

    /// Writes one request frame; the time left for its response.
    fn write_request<Req: Encodable>(
        &mut self,
        api_key: ApiKey,
        version: i16,
        request: &Req,
    ) -> Result<Duration, CliError> {
        let correlation_id = self.next_correlation_id;
        self.next_correlation_id = correlation_id.wrapping_add(1);
        let client_id = StrBytes::from_static_str(CLIENT_ID);
        let frame = encode_request(api_key, version, correlation_id, client_id, request)
            .map_err(CliError::Protocol)?;
        let timeout = remaining(self.request_timeout, self.deadline, &self.address)?;
        self.io(|stream| stream.set_write_timeout(Some(timeout)))?;
        self.io_timed(timeout, |stream| stream.write_all(&frame))?;
        Ok(timeout)
    }

    fn read_frame(&mut self, timeout: Duration) -> Result<Bytes, CliError> {
        self.io(|stream| stream.set_read_timeout(Some(timeout)))?;
        let mut size = [0u8; 4];
        self.io_timed(timeout, |stream| stream.read_exact(&mut size))?;
        let size = (&size[..]).get_i32();
        let size = usize::try_from(size)
            .ok()
            .filter(|&size| size <= RESPONSE_BYTES_MAX)
            .ok_or_else(|| {
                CliError::Protocol(format!(
                    "{}: response size {size} is outside 0..={RESPONSE_BYTES_MAX}",
                    self.address
                ))
            })?;
        let mut frame = vec![0u8; size];
        self.io_timed(timeout, |stream| stream.read_exact(&mut frame))?;
        Ok(Bytes::from(frame))
    }

    fn io<T>(
        &mut self,
        work: impl FnOnce(&mut TcpStream) -> std::io::Result<T>,
    ) -> Result<T, CliError> {
        work(&mut self.stream).map_err(|source| CliError::Io {
            address: self.address.clone(),
            source,
        })
    }

    /// Like `io`, but a socket timeout is reported as the request's time limit.
    fn io_timed<T>(
        &mut self,
        timeout: Duration,
        work: impl FnOnce(&mut TcpStream) -> std::io::Result<T>,
    ) -> Result<T, CliError> {
        match work(&mut self.stream) {
            Ok(value) => Ok(value),
            Err(error)
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                Err(timed_out(&self.address, timeout))
            }
            Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => Err(CliError::Io {
                address: self.address.clone(),
                source: std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the broker closed the connection",
                ),
            }),
            Err(source) => Err(CliError::Io {
                address: self.address.clone(),
                source,
            }),
        }
    }

    fn check_correlation(&self, got: i32) -> Result<(), CliError> {
        let expected = self.next_correlation_id.wrapping_sub(1);
        if got == expected {
            Ok(())
        } else {
            Err(CliError::Protocol(format!(
                "{}: response correlation id {got}, expected {expected}",
                self.address
            )))
        }
    }

    fn malformed(&self, api_key: ApiKey, error: anyhow::Error) -> CliError {
        CliError::Protocol(format!(
            "{}: cannot decode the {api_key:?} response: {error}",
            self.address
        ))
    }
}

/// Decodes an ApiVersions response frame sent for `version`. A broker that does not
/// speak `version` answers in the v0 layout (KIP-511), so a body that does not decode
/// at `version` is read again as v0, as Kafka's `ApiVersionsResponse.parse` does.
fn decode_api_versions(frame: Bytes, version: i16) -> Result<ApiVersionsResponse, CliError> {
    let malformed = |error: anyhow::Error| {
        CliError::Protocol(format!("cannot decode the ApiVersions response: {error}"))
    };
    let mut body = frame;
    // The ApiVersions response header is v0 at every version (no tagged fields).
    ResponseHeader::decode(
        &mut body,
        ApiKey::ApiVersions.response_header_version(version),
    )
    .map_err(malformed)?;
    let mut at_version = body.clone();
    match ApiVersionsResponse::decode(&mut at_version, version) {
        Ok(response) if response.error_code != ResponseError::UnsupportedVersion.code() => {
            Ok(response)
        }
        _ => ApiVersionsResponse::decode(&mut body, 0).map_err(malformed),
    }
}

/// How long the next step may take: the request timeout, cut to what is left before
/// `deadline`; an error once the deadline has passed.
fn remaining(
    request_timeout: Duration,
    deadline: Option<Instant>,
    address: &str,
) -> Result<Duration, CliError> {
    let Some(deadline) = deadline else {
        return Ok(request_timeout);
    };
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(timed_out(address, request_timeout));
    }
    Ok(left.min(request_timeout))
}

fn timed_out(address: &str, timeout: Duration) -> CliError {
    CliError::TimedOut {
        address: address.to_string(),
        timeout_ms: timeout.as_millis() as u64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use kafka_protocol::messages::api_versions_response::ApiVersion;

    fn encode_response(response: &ApiVersionsResponse, version: i16) -> Bytes {
        let mut frame = BytesMut::new();
        ResponseHeader::default()
            .with_correlation_id(7)
            .encode(&mut frame, 0)
            .unwrap();
        response.encode(&mut frame, version).unwrap();
        frame.freeze()
    }

    #[test]
    fn api_versions_answer_in_the_v0_layout_is_read_as_v0() {
        let answer = ApiVersionsResponse::default()
            .with_error_code(ResponseError::UnsupportedVersion.code())
            .with_api_keys(vec![
                ApiVersion::default()
                    .with_api_key(ApiKey::ApiVersions as i16)
                    .with_max_version(2),
            ]);
        let decoded = decode_api_versions(encode_response(&answer, 0), 3).unwrap();
        assert_eq!(decoded.error_code, ResponseError::UnsupportedVersion.code());
        assert_eq!(decoded.api_keys.len(), 1);
        assert_eq!(decoded.api_keys[0].max_version, 2);
    }

    #[test]
    fn api_versions_answer_at_the_asked_version_is_kept() {
        let answer = ApiVersionsResponse::default().with_api_keys(vec![
            ApiVersion::default()
                .with_api_key(ApiKey::Fetch as i16)
                .with_min_version(4)
                .with_max_version(17),
        ]);
        let decoded = decode_api_versions(encode_response(&answer, 3), 3).unwrap();
        assert_eq!(decoded.error_code, 0);
        assert_eq!(decoded.api_keys[0].max_version, 17);
    }

    #[test]
    fn deadline_passed_is_a_timeout() {
        let past = Instant::now() - Duration::from_millis(1);
        let error = remaining(Duration::from_secs(5), Some(past), "h:1").unwrap_err();
        assert!(matches!(error, CliError::TimedOut { .. }));
        let left = remaining(
            Duration::from_secs(5),
            Some(Instant::now() + Duration::from_secs(1)),
            "h:1",
        )
        .unwrap();
        assert!(left <= Duration::from_secs(1));
    }
}
