//! A raft node: its storage opened, its timing chosen from the leader lease, and started.

use std::time::Duration;

use crate::log_store::LogStore;
use crate::raft_network::Network;
use crate::state_machine::StateMachine;
use crate::transport::PeerClient;
use crate::types::{NodeId, TypeConfig};
use crate::write_gate::WriteGate;

/// How long a voter refuses to vote for anyone after its last heartbeat from a live leader, by
/// default: openraft 0.9's leader lease, which it takes from `election_timeout_max`. No leader can
/// be replaced sooner, so this bounds failover when the leader dies (see [`crate::liveness`]).
/// `doppel host --leader-lease` sets another.
pub const LEADER_LEASE: Duration = Duration::from_millis(180);

/// Raft timing for the default lease; see [`config_with_lease`].
pub fn config() -> openraft::Config {
    config_with_lease(LEADER_LEASE)
}

/// Raft timing for a leader lease of `lease`: heartbeats every 2/9 of it (40 ms for 180 ms: four
/// or more per lease, so one late heartbeat does not open an election), openraft's own election
/// timer after 2/3 to 1 lease beyond the lease. Hosts do not wait for that timer when a leader's
/// process is gone: they stand as soon as the lease allows.
pub fn config_with_lease(lease: Duration) -> openraft::Config {
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
    /// The log, for how far it reaches (liveness probes answer it).
    pub log: LogStore,
    /// Closed when this node, leading, removes itself ([`WriteGate`]).
    pub gate: WriteGate,
}

/// Starts raft node `id` with its log and state machine in `dir`, talking to peers through
/// `peers`.
pub async fn start(
    id: NodeId,
    dir: &std::path::Path,
    peers: PeerClient,
) -> Result<Node, Box<dyn std::error::Error + Send + Sync>> {
    start_with(id, dir, peers, config()).await
}

/// [`start`] with another raft configuration (e.g. a snapshot policy).
pub async fn start_with(
    id: NodeId,
    dir: &std::path::Path,
    peers: PeerClient,
    config: openraft::Config,
) -> Result<Node, Box<dyn std::error::Error + Send + Sync>> {
    Storage::open(dir)?.start(id, peers, config).await
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

    /// Starts raft node `id` on this storage with `config`, talking to peers through `peers`.
    pub async fn start(
        self,
        id: NodeId,
        peers: PeerClient,
        config: openraft::Config,
    ) -> Result<Node, Box<dyn std::error::Error + Send + Sync>> {
        let config = std::sync::Arc::new(config.validate()?);
        let lease = Duration::from_millis(config.election_timeout_max);
        let Storage { log, state } = self;
        let network = Network::new(peers, lease);
        let raft = openraft::Raft::new(id, config, network, log.clone(), state.clone()).await?;
        Ok(Node {
            raft,
            state,
            log,
            gate: WriteGate::default(),
        })
    }
}
