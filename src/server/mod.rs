//! The network edge: accepts TCP connections, reads length-prefixed Kafka frames, hands
//! each to `api::handle_frame`, and writes responses back in request order.
//!
//! Limits enforced here: `socket.request.max.bytes` per frame, `max.connections` and
//! `listener.name.<l>.max.connections` (the inter-broker listener exempt from the first,
//! KIP-402), `max.connections.per.ip` and its overrides ([`connection_quotas`]), the
//! KIP-612 connection creation rates per broker, listener and IP ([`connection_rates`]),
//! `connections.max.idle.ms`, and `queued.max.request.bytes` broker-wide ([`budget`]).
//! A frame that cannot be parsed closes that connection only. Fetch records go from the
//! segment files to the socket with sendfile ([`sendfile`]).

pub mod budget;
pub mod buffer_pool;
pub mod connection;
pub mod connection_quotas;
pub mod connection_rates;
pub mod listener;
pub mod request_span;
pub mod response_writer;
pub mod sendfile;
pub mod shutdown;
pub mod socket_buffers;

pub use listener::{BoundListener, serve};
pub use shutdown::Shutdown;
