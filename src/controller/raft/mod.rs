//! The metadata quorum's Raft machinery (openraft, storage in redb): types and checksummed
//! encoding, the log store, the state machine, controller RPC (framing, client, server).

pub mod log_store;
pub mod network;
pub mod rpc;
pub mod server;
pub mod state_machine;
pub mod types;
