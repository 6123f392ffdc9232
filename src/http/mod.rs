//! The HTTP listener (`http.listener`, default `127.0.0.1:9644`): a small HTTP/1.1 server
//! for operators' tools, today Prometheus at `/metrics`.
//!
//! Hand-written on tokio rather than hyper/axum: it serves a few GET routes to scrapers,
//! and a framework would cost more build minutes than the whole server. What it accepts
//! is deliberately narrow: GET and HEAD, a request head of at most
//! [`request::HEAD_BYTES_MAX`], no bodies, one request per connection
//! (`Connection: close`), a read timeout and a cap on open connections.
//!
//! - [`request`]: parses a request head (pure, no I/O).
//! - [`server`]: the accept loop, limits, routing by [`server::Route`] table and the
//!   response writer.

pub mod request;
pub mod routes;
pub mod server;

pub use server::{Response, Route, serve};
