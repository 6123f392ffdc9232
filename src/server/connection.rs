//! One client connection: frames in, responses out, strictly in request order (Kafka
//! clients match responses to requests by order as well as correlation id).
//!
//! Requests on one connection are handled one at a time, as Kafka's muted channel does;
//! pipelined requests wait in the read buffer, and responses are flushed when no whole
//! request is waiting, so a pipelining client gets its responses in batches.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use super::Shutdown;
use crate::api::{self, ApiError};
use crate::broker::Broker;

const READ_BUFFER_BYTES: usize = 64 * 1024;
const WRITE_BUFFER_BYTES: usize = 64 * 1024;
const RESERVE_STEP_BYTES: usize = 1024 * 1024;

#[derive(Debug, Error)]
enum ConnectionError {
    #[error("frame of {size} bytes exceeds socket.request.max.bytes {max}")]
    FrameTooLarge { size: i64, max: usize },
    #[error("peer closed the connection in the middle of a frame")]
    Truncated,
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

pub struct Connection {
    reader: OwnedReadHalf,
    writer: BufWriter<OwnedWriteHalf>,
    buffer: BytesMut,
    peer: SocketAddr,
    /// `/ip` as Kafka shows client hosts.
    client_host: String,
    broker: Arc<Broker>,
    shutdown: Shutdown,
}

impl Connection {
    pub fn new(
        stream: TcpStream,
        peer: SocketAddr,
        broker: Arc<Broker>,
        shutdown: Shutdown,
    ) -> Self {
        let (reader, writer) = stream.into_split();
        Connection {
            reader,
            writer: BufWriter::with_capacity(WRITE_BUFFER_BYTES, writer),
            buffer: BytesMut::with_capacity(READ_BUFFER_BYTES),
            client_host: format!("/{}", peer.ip()),
            peer,
            broker,
            shutdown,
        }
    }

    pub async fn run(mut self) {
        tracing::debug!(peer = %self.peer, "connection opened");
        match self.serve().await {
            Ok(()) => tracing::debug!(peer = %self.peer, "connection closed"),
            Err(ConnectionError::Io(error)) => {
                tracing::debug!(peer = %self.peer, %error, "connection dropped")
            }
            Err(error) => tracing::warn!(peer = %self.peer, %error, "closing connection"),
        }
    }

    async fn serve(&mut self) -> Result<(), ConnectionError> {
        let idle = Duration::from_millis(self.broker.config.connection_idle_ms_max);
        let mut shutdown = self.shutdown.clone();
        loop {
            let frame = tokio::select! {
                frame = self.read_frame() => frame?,
                _ = shutdown.triggered() => None,
                _ = tokio::time::sleep(idle) => None,
            };
            let Some(frame) = frame else {
                self.writer.flush().await?;
                return Ok(());
            };
            if let Some(response) =
                api::handle_frame(&self.broker, frame.freeze(), &self.client_host).await?
            {
                self.writer.write_all(&response).await?;
            }
            if !self.whole_frame_buffered() {
                self.writer.flush().await?;
            }
            if self.shutdown.is_triggered() {
                self.writer.flush().await?;
                return Ok(());
            }
        }
    }

    /// The next frame without its size prefix; `None` on a clean close between frames.
    async fn read_frame(&mut self) -> Result<Option<BytesMut>, ConnectionError> {
        loop {
            if let Some(frame) = self.parse_frame()? {
                return Ok(Some(frame));
            }
            if self.reader.read_buf(&mut self.buffer).await? == 0 {
                return if self.buffer.is_empty() {
                    Ok(None)
                } else {
                    Err(ConnectionError::Truncated)
                };
            }
        }
    }

    /// Splits one whole frame off the buffer, or reserves room for the rest of it.
    fn parse_frame(&mut self) -> Result<Option<BytesMut>, ConnectionError> {
        if self.buffer.len() < 4 {
            return Ok(None);
        }
        let size = i64::from(i32::from_be_bytes(
            self.buffer[..4].try_into().expect("4 bytes"),
        ));
        let max = self.broker.config.frame_bytes_max;
        if size < 0 || size as u64 > max as u64 {
            return Err(ConnectionError::FrameTooLarge { size, max });
        }
        let total = 4 + size as usize;
        if self.buffer.len() < total {
            // Grow in steps: an announced size is a claim, not bytes that have arrived.
            self.buffer
                .reserve((total - self.buffer.len()).min(RESERVE_STEP_BYTES));
            return Ok(None);
        }
        self.buffer.advance(4);
        Ok(Some(self.buffer.split_to(size as usize)))
    }

    fn whole_frame_buffered(&self) -> bool {
        if self.buffer.len() < 4 {
            return false;
        }
        let size = i32::from_be_bytes(self.buffer[..4].try_into().expect("4 bytes"));
        size >= 0 && self.buffer.len() >= 4 + size as usize
    }
}
