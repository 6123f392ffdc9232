//! One Kafka-protocol connection from this broker to another (a follower to its leader):
//! request header + body out, a whole response frame back, one request at a time.

use std::time::Duration;

use bytes::{Buf, Bytes};
use kafka_protocol::messages::{ApiKey, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use thiserror::Error;

use crate::request_frame::encode_request;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::TcpStream;

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

pub struct PeerConnection {
    address: String,
    reader: tokio::net::tcp::OwnedReadHalf,
    writer: BufWriter<tokio::net::tcp::OwnedWriteHalf>,
    client_id: StrBytes,
    next_correlation_id: i32,
    /// The largest response frame accepted (the peer is a broker of ours, but a bound
    /// keeps a confused peer from making us allocate without limit).
    frame_bytes_max: usize,
}

impl PeerConnection {
    pub async fn connect(
        address: &str,
        client_id: String,
        frame_bytes_max: usize,
        timeout: Duration,
    ) -> Result<PeerConnection, PeerError> {
        let connect = TcpStream::connect(address);
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
        stream.set_nodelay(true)?;
        let (reader, writer) = stream.into_split();
        Ok(PeerConnection {
            address: address.to_string(),
            reader,
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
        let mut response = vec![0u8; size];
        self.reader.read_exact(&mut response).await?;
        Ok(Bytes::from(response))
    }
}
