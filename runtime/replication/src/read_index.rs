//! Confirming leadership for a linearizable read, patiently.

use std::time::{Duration, Instant};

use openraft::error::{CheckIsLeaderError, RaftError};
use openraft::{BasicNode, Raft};

use crate::types::{NodeId, TypeConfig};

/// How long to wait before asking the majority again after a leadership check came back short.
const CONFIRM_AGAIN_AFTER: Duration = Duration::from_millis(10);

/// The log index a linearizable read must see (`None`: the log is empty), once this host has
/// confirmed with a majority that it still leads.
///
/// openraft 0.9 confirms with one heartbeat round whose replies are due within the heartbeat
/// interval (40 ms at the default lease). A majority that is slow for a moment (a loaded
/// machine, a congested link) misses that, and the check fails with `QuorumNotEnough` though
/// nothing is wrong; the next round usually succeeds. So this asks again until `patience` runs
/// out. A read is still only served after a round that a majority answered.
pub(crate) async fn confirmed_read_index(
    raft: &Raft<TypeConfig>,
    patience: Duration,
) -> Result<Option<u64>, RaftError<NodeId, CheckIsLeaderError<NodeId, BasicNode>>> {
    let deadline = Instant::now() + patience;
    loop {
        match raft.get_read_log_id().await {
            Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(short)))
                if Instant::now() + CONFIRM_AGAIN_AFTER < deadline =>
            {
                tracing::debug!(%short, "leadership not confirmed in one round; asking again");
                tokio::time::sleep(CONFIRM_AGAIN_AFTER).await;
            }
            other => return other.map(|(read, _applied)| read.map(|id| id.index)),
        }
    }
}
