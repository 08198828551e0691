//! A host's own raft storage read without raft, for starting a new cluster from it when the
//! rest of its cluster is lost for good (`doppel recover --force-new-cluster`).
//!
//! Raft cannot help here: with a majority gone nothing commits, and no membership change can
//! pass. So the survivor's state is taken out of raft altogether — the applied state plus every
//! entry its log holds beyond it — and becomes the seed of a new one-host cluster, as a restored
//! backup does. Entries past the last index this host *knew* committed are kept too: the lost
//! leader may have committed (and acknowledged) them, and keeping an entry that was never
//! acknowledged is what raft allows for a request whose answer was lost; dropping one that was
//! acknowledged is not.

use std::path::Path;
use std::time::Duration;

use doppel_store::{Engine, StoreError};

use crate::log_store::LogStore;
use crate::state_machine::StateMachine;
use crate::types::NodeId;

/// How far a host's raft storage reaches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Survey {
    /// The last entry applied to its state.
    pub applied: u64,
    /// The last entry it knew to be committed (the leader told it so).
    pub committed: u64,
    /// The last entry its log holds.
    pub last: u64,
    /// The members (id, peer address) as of the last membership change it applied.
    pub members: Vec<(NodeId, String)>,
}

/// Why the storage cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    /// The state machine or log could not be opened or read.
    #[error("{0}")]
    Store(#[from] StoreError),
    /// The log could not be read.
    #[error("while reading the raft log: {0}")]
    Log(#[from] std::io::Error),
    /// The log no longer holds entries the state needs.
    #[error("the raft log no longer holds entry {0}, which the applied state needs next")]
    Gap(u64),
}

/// A host's raft storage (`DATA/raft`), opened outside raft. Its host must be stopped.
pub struct LocalRaft {
    log: LogStore,
    state: StateMachine,
}

impl LocalRaft {
    /// Opens the storage in `raft_dir`.
    pub fn open(raft_dir: &Path) -> Result<LocalRaft, RecoveryError> {
        Ok(LocalRaft {
            log: LogStore::open(&raft_dir.join("log"))?,
            state: StateMachine::open(&raft_dir.join("sm"))?,
        })
    }

    /// How far it reaches.
    pub fn survey(&self) -> Survey {
        Survey {
            applied: self.state.applied_index(),
            committed: self.log.committed_index(),
            last: self.log.reach().index,
            members: self.state.members(),
        }
    }

    /// Rebuilds into `into` (a new, empty engine) the applied state with every entry the log
    /// holds after it applied; answers the index the result stands at.
    pub fn rebuild(&self, into: &Engine) -> Result<u64, RecoveryError> {
        let (mut index, pairs) = self.state.export_applied()?;
        into.import(pairs)?;
        let last = self.log.reach().index;
        while index < last {
            let entries = self
                .log
                .entries_after(index, last, 1024)
                .ok_or(RecoveryError::Gap(index + 1))?;
            for (at, commands) in entries {
                into.apply_all(at, &commands, None)?;
                index = at;
            }
        }
        Ok(index)
    }
}

/// Which of `members`' peer addresses accept a connection within `timeout`, in order. A member
/// counts as reachable when anything listens at its address: when in doubt, a recovery that
/// would split the cluster in two is refused.
pub async fn reachable(members: &[(NodeId, String)], timeout: Duration) -> Vec<bool> {
    let probes = members.iter().map(|(_, addr)| async move {
        matches!(
            tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr.as_str())).await,
            Ok(Ok(_))
        )
    });
    futures::future::join_all(probes).await
}
