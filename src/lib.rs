//! gracchus: a broker that speaks the Apache Kafka wire protocol.
//!
//! Module map (dependencies point down this list, `types` and `config` are leaves):
//! - [`server`]: TCP listener, per-connection framing, limits, shutdown.
//! - [`api`]: the one table of api_key -> handler + versions; decodes with `kafka-protocol`,
//!   maps domain errors to Kafka error codes, encodes responses.
//! - [`replica`]: the partitions this broker hosts: leader state, high watermark, waits,
//!   and the log cleaner thread that compacts them.
//! - [`group`]: the group coordinator: consumer groups and committed offsets, persisted
//!   in `__consumer_offsets`.
//! - [`txn`]: producer ids, per-partition idempotent-producer state, and the transaction
//!   coordinator (`__transaction_state`, transaction version 1).
//! - [`controller`]: the metadata image (brokers, topics, partitions, configs) and the
//!   commands that change it.
//! - [`log`]: segment files, indexes, recovery, retention, compaction.
//! - [`broker`]: wires the parts together for one process.
//! - [`auto_create`]: topic creation a request starts in the background (internal topics,
//!   Metadata's auto-creation), one at a time per topic.
//! - [`http`]: the HTTP listener (`http.listener`) and its routes.
//! - [`metrics`]: Prometheus counters recorded on the request path, gauges computed from
//!   the broker's state at scrape time; served at `/metrics`.
//! - [`status`]: the status page of the HTTP listener (view, HTML, rates, recent errors).
//! - [`tracing_levels`]: the process's log filter, reloadable per logger (Kafka's
//!   BROKER_LOGGER configs).
//! - [`meta_properties`]: which cluster and node a log directory belongs to (`format`).
//! - [`cli`]: the command-line tools in the same binary (health check, Kafka's console
//!   tools); clients of the broker, never part of it.
//! - [`request_frame`]: a request frame as a client writes it (fetchers, `cli`); a leaf.
//! - [`record_fields`]: the field encodings (fixed and flexible) of the internal topics'
//!   record keys and values, for `group` and `txn`.
//! - [`allocator`]: glibc malloc's mmap threshold fixed at start-up, so memory freed
//!   after a burst goes back to the OS.
#![forbid(unsafe_code)]

pub mod allocator;
pub mod api;
pub mod auto_create;
pub mod broker;
pub mod cli;
pub mod client_quota;
pub mod config;
pub mod controller;
pub mod group;
pub mod http;
pub mod log;
pub mod meta_properties;
pub mod metrics;
pub mod record_fields;
pub mod replica;
pub mod request_frame;
pub mod server;
#[cfg(test)]
pub mod sim_rng;
pub mod status;
pub mod topic_config;
pub mod tracing_levels;
pub mod txn;
pub mod types;
