//! One Kafka-protocol connection from this broker to another (a follower to its leader):
//! request header + body out, a whole response frame back, one request at a time.
//!
//! Responses are read into one buffer kept with the connection, not a fresh zeroed one
//! each: a follower's fetch responses run to hundreds of KB several hundred times a
//! second, and a fresh allocation was zero-filled (and its pages faulted in again after
//! malloc gave them back) only to be overwritten by the read. Once the previous
//! response's bytes are dropped the next one reuses the allocation.

use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use thiserror::Error;

use crate::request_frame::encode_request;
use crate::server::socket_buffers;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};

#[derive(Debug, Error)]
pub enum PeerError {
    #[error("connecting to {address}: {source}")]
    Connect {
        address: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("no answer within {0:?}")]
    TimedOut(Duration),
    #[error("cannot encode or decode {api_key:?}: {reason}")]
    Protocol { api_key: ApiKey, reason: String },
    #[error("response frame of {size} bytes is over the {limit}-byte limit")]
    FrameTooLarge { size: usize, limit: usize },
    #[error("response correlation id {got}, expected {expected}")]
    Correlation { got: i32, expected: i32 },
}

/// Responses up to this size are read into the connection's standing buffer (so it holds
/// at most this much between responses); larger ones get an allocation of their own.
const REUSED_RESPONSE_BYTES_MAX: usize = 1 << 20;

pub struct PeerConnection {
    address: String,
    reader: tokio::net::tcp::OwnedReadHalf,
    /// The standing response buffer (empty between responses; see the module comment).
    responses: BytesMut,
    writer: BufWriter<tokio::net::tcp::OwnedWriteHalf>,
    client_id: StrBytes,
    next_correlation_id: i32,
    /// The largest response frame accepted (the peer is a broker of ours, but a bound
    /// keeps a confused peer from making us allocate without limit).
    frame_bytes_max: usize,
}

impl PeerConnection {
    /// Connects to `address` with `receive_bytes` as SO_RCVBUF (`None`: the kernel's).
    pub async fn connect(
        address: &str,
        client_id: String,
        frame_bytes_max: usize,
        receive_bytes: Option<usize>,
        timeout: Duration,
    ) -> Result<PeerConnection, PeerError> {
        let connect = socket_buffers::connect(address, receive_bytes);
        let stream = match tokio::time::timeout(timeout, connect).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(source)) => {
                return Err(PeerError::Connect {
                    address: address.to_string(),
                    source,
                });
            }
            Err(_) => return Err(PeerError::TimedOut(timeout)),
        };
        let (reader, writer) = stream.into_split();
        Ok(PeerConnection {
            address: address.to_string(),
            reader,
            responses: BytesMut::new(),
            writer: BufWriter::new(writer),
            client_id: StrBytes::from_string(client_id),
            next_correlation_id: 0,
            frame_bytes_max,
        })
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    /// Sends `request` as `api_key` v`version` and waits up to `timeout` for its response.
    pub async fn call<Req: Encodable, Resp: Decodable>(
        &mut self,
        api_key: ApiKey,
        version: i16,
        request: &Req,
        timeout: Duration,
    ) -> Result<Resp, PeerError> {
        let exchange = self.exchange(api_key, version, request);
        let mut frame = match tokio::time::timeout(timeout, exchange).await {
            Ok(frame) => frame?,
            Err(_) => return Err(PeerError::TimedOut(timeout)),
        };
        let protocol = |reason: String| PeerError::Protocol { api_key, reason };
        let header = ResponseHeader::decode(&mut frame, api_key.response_header_version(version))
            .map_err(|error| protocol(error.to_string()))?;
        let expected = self.next_correlation_id.wrapping_sub(1);
        if header.correlation_id != expected {
            return Err(PeerError::Correlation {
                got: header.correlation_id,
                expected,
            });
        }
        Resp::decode(&mut frame, version).map_err(|error| protocol(error.to_string()))
    }

    async fn exchange<Req: Encodable>(
        &mut self,
        api_key: ApiKey,
        version: i16,
        request: &Req,
    ) -> Result<Bytes, PeerError> {
        let correlation_id = self.next_correlation_id;
        self.next_correlation_id = correlation_id.wrapping_add(1);
        let protocol = |reason: String| PeerError::Protocol { api_key, reason };
        let client_id = self.client_id.clone();
        let frame = encode_request(api_key, version, correlation_id, client_id, request)
            .map_err(protocol)?;
        self.writer.write_all(&frame).await?;
        self.writer.flush().await?;

        let mut size = [0u8; 4];
        self.reader.read_exact(&mut size).await?;
        let size = usize::try_from((&size[..]).get_i32()).unwrap_or(usize::MAX);
        if size > self.frame_bytes_max {
            return Err(PeerError::FrameTooLarge {
                size,
                limit: self.frame_bytes_max,
            });
        }
        let mut fresh = BytesMut::new();
        let buffer = match size <= REUSED_RESPONSE_BYTES_MAX {
            true => &mut self.responses,
            false => &mut fresh,
        };
        // Nothing of a read cut short (a timed-out call) is taken for this response; then
        // reclaims the allocation in place once the previous response is dropped.
        buffer.clear();
        buffer.reserve(size);
        let mut body = (&mut self.reader).take(size as u64);
        while buffer.len() < size {
            if body.read_buf(buffer).await? == 0 {
                return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
            }
        }
        Ok(buffer.split_to(size).freeze())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::{ApiVersionsRequest, ApiVersionsResponse};
    use tokio::net::TcpListener;

    /// A peer that answers each request with an ApiVersions v0 response whose body is
    /// padded to the next of `sizes` (unknown trailing bytes are left undecoded).
    async fn peer_answering(sizes: Vec<usize>) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            for size in sizes {
                let mut length = [0u8; 4];
                stream.read_exact(&mut length).await.unwrap();
                let mut request = vec![0u8; u32::from_be_bytes(length) as usize];
                stream.read_exact(&mut request).await.unwrap();
                let correlation_id = &request[4..8];
                // correlation id, error 0, no api keys, then padding up to `size`.
                let mut body = correlation_id.to_vec();
                body.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
                body.resize(size, 7);
                stream
                    .write_all(&(body.len() as u32).to_be_bytes())
                    .await
                    .unwrap();
                stream.write_all(&body).await.unwrap();
            }
        });
        address
    }

    async fn exchange(connection: &mut PeerConnection) -> Bytes {
        let request = ApiVersionsRequest::default();
        connection
            .exchange(ApiKey::ApiVersions, 0, &request)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn responses_reuse_one_buffer_once_the_previous_is_dropped() {
        let big = REUSED_RESPONSE_BYTES_MAX + 1;
        let address = peer_answering(vec![300_000, 300_000, 200_000, big, 10]).await;
        let timeout = Duration::from_secs(5);
        let mut connection = PeerConnection::connect(&address, "t".into(), 8 << 20, None, timeout)
            .await
            .unwrap();
        let padded = |response: &Bytes, len: usize| {
            response.len() == len && response[10..].iter().all(|&b| b == 7)
        };
        let first = exchange(&mut connection).await;
        assert!(padded(&first, 300_000));
        let first_at = first.as_ptr();
        drop(first);
        let second = exchange(&mut connection).await;
        assert!(padded(&second, 300_000));
        assert_eq!(
            second.as_ptr(),
            first_at,
            "the dropped response's allocation is reused"
        );
        // Still held: the next response cannot overwrite it.
        let third = exchange(&mut connection).await;
        assert!(padded(&third, 200_000));
        assert_ne!(third.as_ptr(), first_at);
        assert!(padded(&second, 300_000));
        drop((second, third));
        // Over the bound: an allocation of its own.
        let large = exchange(&mut connection).await;
        assert!(padded(&large, big));
        let small = exchange(&mut connection).await;
        assert_eq!(
            &small[..4],
            &4i32.to_be_bytes(),
            "correlation id of the fifth request"
        );
    }

    #[tokio::test]
    async fn a_decoded_response_checks_its_correlation_id() {
        let address = peer_answering(vec![10]).await;
        let timeout = Duration::from_secs(5);
        let mut connection = PeerConnection::connect(&address, "t".into(), 1 << 20, None, timeout)
            .await
            .unwrap();
        let request = ApiVersionsRequest::default();
        let response: ApiVersionsResponse = connection
            .call(ApiKey::ApiVersions, 0, &request, timeout)
            .await
            .unwrap();
        assert_eq!(response.error_code, 0);
    }
}
