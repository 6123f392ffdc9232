//! `socket.send.buffer.bytes` and `socket.receive.buffer.bytes`: the SO_SNDBUF and
//! SO_RCVBUF of every socket a client listener accepts, as Kafka's `SocketServer` sets
//! them; `-1` leaves the kernel's default (and its autotuning) in place.
//!
//! Kafka's defaults (100 KiB each) are kept. The send one is also the cheaper here: with
//! the kernel's autotuned send buffer (megabytes) a fetch's sendfile pushes its whole
//! response through loopback at once; capped, it goes out in cache-sized pieces. Measured
//! with `scripts/bench` consume-1k-none against autotuning: 0.72-0.78x the broker CPU per
//! record, 1.42-1.44x the rate. The receive cap costs large produces a little (1 KiB
//! records, ~380 KB requests: ~1.06x CPU per record, more reads per request; 100 B lz4:
//! no difference): `socket.receive.buffer.bytes=-1` gives the kernel's autotuning back.

use std::io;

use tokio::net::TcpStream;

/// The value that asks for the kernel's default (Kafka's `USE_DEFAULT_BUFFER_SIZE`).
pub const KERNEL_DEFAULT: i32 = -1;

/// The buffer sizes to set on accepted sockets; `None` keeps the kernel's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SocketBuffers {
    pub send_bytes: Option<usize>,
    pub receive_bytes: Option<usize>,
}

impl SocketBuffers {
    /// Sets the configured sizes on `stream` (the kernel doubles each for its bookkeeping,
    /// as it does for Java's `setSendBufferSize`).
    pub fn apply(&self, stream: &TcpStream) -> io::Result<()> {
        use rustix::net::sockopt;
        if let Some(bytes) = self.send_bytes {
            sockopt::set_socket_send_buffer_size(stream, bytes)?;
        }
        if let Some(bytes) = self.receive_bytes {
            sockopt::set_socket_recv_buffer_size(stream, bytes)?;
        }
        Ok(())
    }
}

/// A configured size: `-1` is the kernel's default, a positive value is that many bytes;
/// anything else is refused (Java's socket refuses 0 and negative sizes too).
pub fn buffer_size(value: i32) -> Result<Option<usize>, &'static str> {
    match value {
        KERNEL_DEFAULT => Ok(None),
        1.. => Ok(Some(value as usize)),
        _ => Err("must be -1 (the OS default) or a positive number of bytes"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    #[test]
    fn minus_one_is_the_kernel_default_and_other_non_positive_values_are_refused() {
        assert_eq!(buffer_size(-1), Ok(None));
        assert_eq!(buffer_size(102_400), Ok(Some(102_400)));
        assert_eq!(buffer_size(1), Ok(Some(1)));
        assert!(buffer_size(0).is_err());
        assert!(buffer_size(-2).is_err());
        assert!(buffer_size(i32::MIN).is_err());
    }

    async fn accepted_pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (client, accepted) = tokio::join!(TcpStream::connect(address), listener.accept());
        (client.unwrap(), accepted.unwrap().0)
    }

    #[tokio::test]
    async fn the_configured_sizes_reach_the_socket() {
        let (_client, stream) = accepted_pair().await;
        let buffers = SocketBuffers {
            send_bytes: Some(102_400),
            receive_bytes: Some(65_536),
        };
        buffers.apply(&stream).unwrap();
        // Linux reports twice what was asked (its bookkeeping share, socket(7)).
        let send = rustix::net::sockopt::socket_send_buffer_size(&stream).unwrap();
        let receive = rustix::net::sockopt::socket_recv_buffer_size(&stream).unwrap();
        assert_eq!((send, receive), (2 * 102_400, 2 * 65_536));
    }

    #[tokio::test]
    async fn kernel_defaults_leave_the_socket_as_it_was() {
        let (_client, stream) = accepted_pair().await;
        let before = (
            rustix::net::sockopt::socket_send_buffer_size(&stream).unwrap(),
            rustix::net::sockopt::socket_recv_buffer_size(&stream).unwrap(),
        );
        SocketBuffers::default().apply(&stream).unwrap();
        let after = (
            rustix::net::sockopt::socket_send_buffer_size(&stream).unwrap(),
            rustix::net::sockopt::socket_recv_buffer_size(&stream).unwrap(),
        );
        assert_eq!(before, after);
    }
}
