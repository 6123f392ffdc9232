//! A connection's outgoing side: responses are gathered in a buffer and sent when the
//! connection flushes (once no whole request is waiting), as tokio's `BufWriter` did, but
//! the buffer is taken from the thread's [`buffer_pool`] for the first byte and given back
//! at each flush, so a connection holds no write buffer between answers.
//!
//! A write of a buffer's size or more is sent directly, after what is gathered. A flush cut
//! short (its future dropped) keeps its place: the next one sends the rest, not all again.

use std::io;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;

use super::buffer_pool::{self, BUFFER_BYTES};

pub struct ResponseWriter {
    socket: OwnedWriteHalf,
    /// Bytes gathered to send; no allocation while nothing is gathered.
    buffer: BytesMut,
    /// How many of `buffer`'s bytes a flush already sent.
    sent: usize,
}

impl ResponseWriter {
    pub fn new(socket: OwnedWriteHalf) -> ResponseWriter {
        ResponseWriter {
            socket,
            buffer: BytesMut::new(),
            sent: 0,
        }
    }

    /// The socket, for writes that bypass the buffer (sendfile); flush first.
    pub fn socket(&self) -> &TcpStream {
        self.socket.as_ref()
    }

    /// Gathers `bytes`, sending what is gathered first if they would not fit; sends them
    /// directly if they are a buffer's size or more.
    pub async fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        if self.buffer.len() + bytes.len() > BUFFER_BYTES {
            self.flush().await?;
        }
        if bytes.len() >= BUFFER_BYTES {
            return self.socket.write_all(bytes).await;
        }
        if self.buffer.capacity() == 0 {
            self.buffer = buffer_pool::take();
        }
        // Fits: the buffer holds BUFFER_BYTES and was flushed if these would pass it.
        self.buffer.extend_from_slice(bytes);
        Ok(())
    }

    /// Sends everything gathered and gives the buffer back to the pool.
    pub async fn flush(&mut self) -> io::Result<()> {
        while self.sent < self.buffer.len() {
            let sent = self.socket.write(&self.buffer[self.sent..]).await?;
            if sent == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            self.sent += sent;
        }
        self.buffer.clear();
        self.sent = 0;
        buffer_pool::give(&mut self.buffer);
        Ok(())
    }

    #[cfg(test)]
    fn holds_buffer(&self) -> bool {
        self.buffer.capacity() > 0
    }
}

#[cfg(test)]
pub mod tests {
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    use super::*;

    /// A writer over one end of a loopback connection, and the other end.
    pub async fn pair() -> (ResponseWriter, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap());
        let (client, accepted) = tokio::join!(client, listener.accept());
        let (_, write) = accepted.unwrap().0.into_split();
        (ResponseWriter::new(write), client.unwrap())
    }

    #[tokio::test]
    async fn writes_arrive_in_order_and_no_buffer_is_held_after_a_flush() {
        let (mut writer, mut client) = pair().await;
        assert!(!writer.holds_buffer());
        let small: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
        let large: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let near_full = vec![7u8; BUFFER_BYTES - 10];
        writer.write_all(&small).await.unwrap();
        assert!(writer.holds_buffer(), "gathered, not sent");
        writer.write_all(&large).await.unwrap(); // sent after the gathered bytes
        writer.write_all(&small).await.unwrap();
        writer.write_all(&near_full).await.unwrap(); // does not fit: the small one goes first
        writer.write_all(b"end").await.unwrap();
        writer.flush().await.unwrap();
        assert!(!writer.holds_buffer());
        drop(writer);
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        let mut expected = small.clone();
        expected.extend(&large);
        expected.extend(&small);
        expected.extend(&near_full);
        expected.extend(b"end");
        assert_eq!(got.len(), expected.len());
        assert!(got == expected, "bytes differ");
    }

    #[tokio::test]
    async fn a_flush_with_nothing_gathered_sends_nothing_and_takes_no_buffer() {
        let (mut writer, mut client) = pair().await;
        writer.flush().await.unwrap();
        assert!(!writer.holds_buffer());
        writer.write_all(b"x").await.unwrap();
        writer.flush().await.unwrap();
        drop(writer);
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"x");
    }
}
