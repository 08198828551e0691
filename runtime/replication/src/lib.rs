//! Replication for doppel: the storage half of openraft over doppel's store.
//!
//! openraft 0.9.25 is pinned exactly (see `ARCHITECTURE.md`): it builds here with `serde` and
//! `storage-v2`, whose storage traits separate the log from the state machine, and the 0.10
//! alphas are still renaming that API. This crate provides:
//!
//! - [`LogStore`]: the raft log, vote and committed id in one append-only file whose every write
//!   is `fdatasync`ed before openraft is told it is durable (openraft's contract: a flushed log
//!   must survive power loss; its FAQ calls a lost log undefined behaviour).
//! - [`StateMachine`]: applies each committed [`Command`] to a [`doppel_store::Engine`], storing
//!   the raft log id and membership in the same atomic batch; snapshots are the engine's exported
//!   state.
//!
//! Not built yet (issue "Many hosts"): the network (peer RPC over hyper), membership admin,
//! joining, forwarding, and a `Store` implementation that proposes commands through raft.

mod framed;
mod log_store;
mod state_machine;

pub use log_store::LogStore;
pub use state_machine::StateMachine;

use std::io::Cursor;

use doppel_store::{ApplyError, Command, Outcome};

/// What applying a command answers: the outcome, or the state machine's deterministic refusal.
pub type Response = Result<Outcome, ApplyError>;

openraft::declare_raft_types!(
    /// doppel's raft types: commands in, outcomes out, hosts numbered by `u64`.
    pub TypeConfig:
        D = Command,
        R = Response,
);

/// A host's id in the cluster.
pub type NodeId = u64;

/// A storage error as openraft wants it.
pub type StorageError = openraft::StorageError<NodeId>;

fn io_error(
    kind: fn(openraft::AnyError) -> openraft::StorageIOError<NodeId>,
    e: impl std::error::Error + 'static,
) -> StorageError {
    StorageError::IO {
        source: kind(openraft::AnyError::new(&e)),
    }
}
