//! The raft types of doppel: what an entry carries, what applying it answers, how hosts are
//! numbered, and how far a log reaches.

use std::io::Cursor;

use doppel_store::{ApplyError, Command, Outcome};
use serde::{Deserialize, Serialize};

/// What applying a command answers: the outcome, or the state machine's deterministic refusal.
pub type Response = Result<Outcome, ApplyError>;

/// One raft entry's payload: the commands that arrived together, applied in order. Packing
/// concurrent writes into one entry is how writes share a log sync (openraft 0.9 syncs each
/// entry it appends before taking the next).
pub type Batch = Vec<Command>;

openraft::declare_raft_types!(
    /// doppel's raft types: batches of commands in, one answer per command out, hosts numbered
    /// by `u64`.
    pub TypeConfig:
        D = Batch,
        R = Vec<Response>,
);

/// A host's id in the cluster.
pub type NodeId = u64;

/// A storage error as openraft wants it.
pub type StorageError = openraft::StorageError<NodeId>;

pub(crate) fn io_error(
    kind: fn(openraft::AnyError) -> openraft::StorageIOError<NodeId>,
    e: impl std::error::Error + 'static,
) -> StorageError {
    StorageError::IO {
        source: kind(openraft::AnyError::new(&e)),
    }
}

/// How far a member's log reaches: its last entry's term, then index. Raft elects only a
/// candidate whose log reaches at least as far as a majority's, so when the leader dies the
/// follower reaching furthest (the lowest id among equals) is the one that should stand: a
/// follower with a shorter log standing again and again only bumps the term and deposes whoever
/// did win. Liveness probes answer it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct LogReach {
    /// The term of the last entry.
    pub term: u64,
    /// The index of the last entry.
    pub index: u64,
}

impl LogReach {
    /// Reads a probe's answer; `None` if it carries none (a host of an older version).
    pub fn from_ping(body: &[u8]) -> Option<LogReach> {
        postcard::from_bytes(body).ok()
    }
}
