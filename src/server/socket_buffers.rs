//! The socket options Kafka sets on its own sockets, with its config names:
//! - `socket.receive.buffer.bytes` (SO_RCVBUF) and `socket.listen.backlog.size` on a
//!   listening socket before it listens, as Kafka's `Acceptor.openServerSocket` does: the
//!   accepted sockets inherit the buffer, and the window scale offered in the handshake
//!   already fits it;
//! - `socket.send.buffer.bytes` (SO_SNDBUF), SO_KEEPALIVE and TCP_NODELAY on each accepted
//!   socket, as `Acceptor.configureAcceptedSocketChannel` does;
//! - `replica.socket.receive.buffer.bytes` on a follower's connection to its leader, set
//!   before connecting, as Kafka's `Selector.connect` does for the replica fetcher.
//!
//! `-1` leaves the kernel's default (and its autotuning) in place.
//!
//! Kafka's defaults (100 KiB each) are kept. The send one is also the cheaper here: with
//! the kernel's autotuned send buffer (megabytes) a fetch's sendfile pushes its whole
//! response through loopback at once; capped, it goes out in cache-sized pieces. Measured
//! with `scripts/bench` consume-1k-none against autotuning: 0.72-0.78x the broker CPU per
//! record, 1.42-1.44x the rate. The receive cap costs large produces a little (1 KiB
//! records, ~380 KB requests: ~1.06x CPU per record, more reads per request; 100 B lz4:
//! no difference): `socket.receive.buffer.bytes=-1` gives the kernel's autotuning back.

use std::io;
use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpSocket, TcpStream};

/// The value that asks for the kernel's default (Kafka's `USE_DEFAULT_BUFFER_SIZE`).
pub const KERNEL_DEFAULT: i32 = -1;

/// The buffer sizes to set on accepted sockets; `None` keeps the kernel's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SocketBuffers {
    pub send_bytes: Option<usize>,
    pub receive_bytes: Option<usize>,
}

impl SocketBuffers {
    /// Sets what Kafka sets on an accepted socket: TCP_NODELAY, SO_KEEPALIVE and the
    /// configured send buffer (the kernel doubles it for its bookkeeping, as it does for
    /// Java's `setSendBufferSize`). The receive buffer came with the listening socket.
    pub fn apply_accepted(&self, stream: &TcpStream) -> io::Result<()> {
        use rustix::net::sockopt;
        stream.set_nodelay(true)?;
        sockopt::set_socket_keepalive(stream, true)?;
        if let Some(bytes) = self.send_bytes {
            sockopt::set_socket_send_buffer_size(stream, bytes)?;
        }
        Ok(())
    }

    /// Binds `address` (a host or IP and a port) and listens with `backlog` pending
    /// connections at most, the receive buffer set before listening. A name that
    /// resolves to several addresses takes the first that binds, as
    /// `TcpListener::bind` does.
    pub async fn bind_listener(&self, address: &str, backlog: u32) -> io::Result<TcpListener> {
        let mut failed = None;
        for resolved in tokio::net::lookup_host(address).await? {
            match self.listen_on(resolved, backlog) {
                Ok(listener) => return Ok(listener),
                Err(error) => failed = Some(error),
            }
        }
        Err(failed.unwrap_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "resolves to no address")
        }))
    }

    fn listen_on(&self, address: SocketAddr, backlog: u32) -> io::Result<TcpListener> {
        let socket = new_socket(address)?;
        // What std and tokio set on a listener too: a restart can bind its port again
        // while the previous run's connections sit in TIME_WAIT.
        socket.set_reuseaddr(true)?;
        set_receive_buffer(&socket, self.receive_bytes)?;
        socket.bind(address)?;
        socket.listen(backlog)
    }
}

/// Connects to `address` as Kafka's `Selector.connect` does for a broker's own client
/// connections: SO_KEEPALIVE, `receive_bytes` as SO_RCVBUF before connecting (`None`:
/// the kernel's), TCP_NODELAY.
pub async fn connect(address: &str, receive_bytes: Option<usize>) -> io::Result<TcpStream> {
    let mut failed = None;
    for resolved in tokio::net::lookup_host(address).await? {
        let attempt = async {
            let socket = new_socket(resolved)?;
            socket.set_keepalive(true)?;
            set_receive_buffer(&socket, receive_bytes)?;
            let stream = socket.connect(resolved).await?;
            stream.set_nodelay(true)?;
            Ok::<_, io::Error>(stream)
        };
        match attempt.await {
            Ok(stream) => return Ok(stream),
            Err(error) => failed = Some(error),
        }
    }
    Err(failed
        .unwrap_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "resolves to no address")))
}

fn new_socket(address: SocketAddr) -> io::Result<TcpSocket> {
    if address.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
}

fn set_receive_buffer(socket: &TcpSocket, bytes: Option<usize>) -> io::Result<()> {
    match bytes {
        // Sizes come from positive i32 configs, so they fit.
        Some(bytes) => socket.set_recv_buffer_size(u32::try_from(bytes).unwrap_or(u32::MAX)),
        None => Ok(()),
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
    use rustix::net::sockopt;

    #[test]
    fn minus_one_is_the_kernel_default_and_other_non_positive_values_are_refused() {
        assert_eq!(buffer_size(-1), Ok(None));
        assert_eq!(buffer_size(102_400), Ok(Some(102_400)));
        assert_eq!(buffer_size(1), Ok(Some(1)));
        assert!(buffer_size(0).is_err());
        assert!(buffer_size(-2).is_err());
        assert!(buffer_size(i32::MIN).is_err());
    }

    /// A listener bound with `buffers`, and a client connected to it and the socket it
    /// accepted, configured as the listener configures it.
    async fn accepted_pair(buffers: SocketBuffers) -> (TcpStream, TcpStream) {
        let listener = buffers.bind_listener("127.0.0.1:0", 50).await.unwrap();
        let address = listener.local_addr().unwrap();
        let (client, accepted) = tokio::join!(TcpStream::connect(address), listener.accept());
        let accepted = accepted.unwrap().0;
        buffers.apply_accepted(&accepted).unwrap();
        (client.unwrap(), accepted)
    }

    fn sizes(stream: &TcpStream) -> (usize, usize) {
        (
            sockopt::socket_send_buffer_size(stream).unwrap(),
            sockopt::socket_recv_buffer_size(stream).unwrap(),
        )
    }

    #[tokio::test]
    async fn the_configured_sizes_reach_the_accepted_socket() {
        let buffers = SocketBuffers {
            send_bytes: Some(102_400),
            receive_bytes: Some(65_536),
        };
        let (_client, stream) = accepted_pair(buffers).await;
        // Linux reports twice what was asked (its bookkeeping share, socket(7)); the
        // receive size is the listener's, inherited.
        assert_eq!(sizes(&stream), (2 * 102_400, 2 * 65_536));
        assert!(sockopt::socket_keepalive(&stream).unwrap());
        assert!(stream.nodelay().unwrap());
    }

    #[tokio::test]
    async fn kernel_defaults_leave_the_socket_as_the_kernel_made_it() {
        let (client, stream) = accepted_pair(SocketBuffers::default()).await;
        // A plain connected socket has the kernel's defaults: the accepted one matches.
        assert_eq!(sizes(&stream), sizes(&client));
    }

    #[tokio::test]
    async fn a_name_is_resolved_and_a_port_in_use_is_refused() {
        let buffers = SocketBuffers::default();
        let listener = buffers.bind_listener("localhost:0", 50).await.unwrap();
        let taken = listener.local_addr().unwrap();
        let again = buffers.bind_listener(&taken.to_string(), 50).await;
        assert_eq!(again.unwrap_err().kind(), io::ErrorKind::AddrInUse);
    }

    #[tokio::test]
    async fn a_connection_made_here_carries_the_receive_buffer_asked_for() {
        let listener = SocketBuffers::default()
            .bind_listener("127.0.0.1:0", 50)
            .await
            .unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let stream = connect(&address, Some(65_536)).await.unwrap();
        assert_eq!(
            sockopt::socket_recv_buffer_size(&stream).unwrap(),
            2 * 65_536
        );
        assert!(sockopt::socket_keepalive(&stream).unwrap());
        assert!(stream.nodelay().unwrap());
        let unset = connect(&address, None).await.unwrap();
        let plain = TcpStream::connect(&address).await.unwrap();
        assert_eq!(sizes(&unset), sizes(&plain));
    }
}
