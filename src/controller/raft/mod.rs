//! The metadata quorum's Raft machinery (openraft, storage in redb): types and checksummed
//! encoding, the log store, the state machine, controller RPC (framing, client, server).

// openraft's StorageError is the error type its storage traits demand; it is large, and
// boxing it is not ours to choose.
#[allow(clippy::result_large_err)]
pub mod log_store;
pub mod network;
pub mod rpc;
pub mod server;
#[allow(clippy::result_large_err)]
pub mod state_machine;
pub mod types;
