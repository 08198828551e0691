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
//! - [`Network`] and [`router`]: raft RPCs between hosts over HTTP, authenticated by the cluster
//!   secret; [`start`] runs a node.
//!
//! - [`ReplicatedStore`]: doppel's `Store` over raft. Followers forward writes to the leader and
//!   get a read index from it, so every read and write is linearizable from every host.
//!
//! - [`join`] and the membership routes: a new host becomes a learner, catches up, then votes;
//!   [`ReplicatedStore::remove_member`] removes one for good; [`ReplicatedStore::status`] is the
//!   leader's view of every member.

mod append_stream;
mod framed;
mod log_store;
mod membership;
mod network;
mod replicated;
mod state_machine;

pub use log_store::LogStore;
pub use membership::{
    ClusterStatus, JoinError, JoinRequest, MemberStatus, Refusal, cluster_lease, join,
    running_leases,
};
pub use network::{LEASE_HEADER, LogReach, Network, router};
pub use replicated::ReplicatedStore;
pub use state_machine::StateMachine;

use std::io::Cursor;

use doppel_store::{ApplyError, Command, Outcome};

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

pub use openraft;

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

/// How long a voter refuses to vote for anyone after its last heartbeat from a live leader, by
/// default: openraft 0.9's leader lease, which it takes from `election_timeout_max`. No leader can
/// be replaced sooner, so this bounds failover when the leader dies (see `doppel_host::failover`).
/// `doppel host --leader-lease` sets another.
pub const LEADER_LEASE: std::time::Duration = std::time::Duration::from_millis(180);

/// Raft timing for the default lease; see [`config_with_lease`].
pub fn config() -> openraft::Config {
    config_with_lease(LEADER_LEASE)
}

/// Raft timing for a leader lease of `lease`: heartbeats every 2/9 of it (40 ms for 180 ms: four
/// or more per lease, so one late heartbeat does not open an election), openraft's own election
/// timer after 2/3 to 1 lease beyond the lease. Hosts do not wait for that timer when a leader's
/// process is gone: they stand as soon as the lease allows.
pub fn config_with_lease(lease: std::time::Duration) -> openraft::Config {
    let lease = u64::try_from(lease.as_millis()).unwrap_or(u64::MAX).max(9);
    openraft::Config {
        heartbeat_interval: lease * 2 / 9,
        election_timeout_min: lease * 2 / 3,
        election_timeout_max: lease,
        ..openraft::Config::default()
    }
}

/// A running raft node and the storage it was started on.
#[derive(Clone)]
pub struct Node {
    /// The node.
    pub raft: openraft::Raft<TypeConfig>,
    /// The applied state, for reads.
    pub state: StateMachine,
    /// The log, for how far it reaches (liveness probes answer it; see [`LogReach`]).
    pub log: LogStore,
}

/// Starts raft node `id` with its log and state machine in `dir`, talking to peers with `secret`.
pub async fn start(
    id: NodeId,
    dir: &std::path::Path,
    secret: &str,
) -> Result<Node, Box<dyn std::error::Error + Send + Sync>> {
    start_with(id, dir, secret, config()).await
}

/// [`start`] with another raft configuration (e.g. a snapshot policy).
pub async fn start_with(
    id: NodeId,
    dir: &std::path::Path,
    secret: &str,
    config: openraft::Config,
) -> Result<Node, Box<dyn std::error::Error + Send + Sync>> {
    Storage::open(dir)?.start(id, secret, config).await
}

/// A node's log and state machine, opened but not yet serving: what a host reads before it
/// decides how to run its node (which members to ask for the cluster's leader lease).
pub struct Storage {
    log: LogStore,
    state: StateMachine,
}

impl Storage {
    /// Opens the log and state machine in `dir` (created if missing).
    pub fn open(
        dir: &std::path::Path,
    ) -> Result<Storage, Box<dyn std::error::Error + Send + Sync>> {
        Ok(Storage {
            log: LogStore::open(&dir.join("log"))?,
            state: StateMachine::open(&dir.join("sm"))?,
        })
    }

    /// Every member (id, peer address `HOST:PORT`) as of the last membership change applied
    /// here; none on a new node.
    pub fn members(&self) -> Vec<(NodeId, String)> {
        self.state.members()
    }

    /// Starts raft node `id` on this storage with `config`, talking to peers with `secret`.
    pub async fn start(
        self,
        id: NodeId,
        secret: &str,
        config: openraft::Config,
    ) -> Result<Node, Box<dyn std::error::Error + Send + Sync>> {
        let config = std::sync::Arc::new(config.validate()?);
        let lease = std::time::Duration::from_millis(config.election_timeout_max);
        let Storage { log, state } = self;
        let network = Network::new(secret, lease);
        let raft = openraft::Raft::new(id, config, network, log.clone(), state.clone()).await?;
        Ok(Node { raft, state, log })
    }
}
