//! Raft membership changes: a host joins (learner first, then voter) or leaves, and the status a
//! leader sees. Membership changes are always made by the leader; any other host points the
//! caller at it. Asking a cluster to take a host in is [`crate::member`]'s.

use std::collections::BTreeSet;

use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, ChangeMembers, Raft, ServerState};
use serde::{Deserialize, Serialize};

use crate::types::{NodeId, TypeConfig};
use crate::write_gate::WriteGate;

/// A host asking to join: its id and the address its peers reach it at.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JoinRequest {
    /// The joining host's id (random, chosen by the joiner and kept in its data directory).
    pub id: NodeId,
    /// Where its peer routes are served (`HOST:PORT`).
    pub addr: String,
}

/// Why a membership change was not made.
#[derive(Clone, Debug, Serialize, Deserialize, thiserror::Error)]
pub enum Refusal {
    /// This host is not the leader; the leader's address when known.
    #[error("not the leader (leader: {})", .0.as_deref().unwrap_or("unknown"))]
    NotLeader(Option<String>),
    /// The change failed.
    #[error("{0}")]
    Failed(String),
}

fn refusal(e: RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>) -> Refusal {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
            Refusal::NotLeader(f.leader_node.map(|n| n.addr))
        }
        other => Refusal::Failed(other.to_string()),
    }
}

/// Makes `req.id` a voter: first a learner, which catches up by log or snapshot (this call
/// waits for that), then a voter. Joining again with the same id only updates its address.
pub(crate) async fn add_member(raft: &Raft<TypeConfig>, req: JoinRequest) -> Result<(), Refusal> {
    let metrics = raft.metrics().borrow().clone();
    let membership = metrics.membership_config.membership().clone();
    if membership.voter_ids().any(|id| id == req.id) {
        let nodes = [(req.id, BasicNode::new(req.addr))].into_iter().collect();
        raft.change_membership(ChangeMembers::SetNodes(nodes), true)
            .await
            .map_err(refusal)?;
        return Ok(());
    }
    raft.add_learner(req.id, BasicNode::new(req.addr), true)
        .await
        .map_err(refusal)?;
    raft.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([req.id])), false)
        .await
        .map_err(refusal)?;
    Ok(())
}

/// Removes `id` from the cluster for good. When that is this node and it leads, its `gate` is
/// closed first: no write is proposed behind its removal.
pub(crate) async fn remove_member(
    raft: &Raft<TypeConfig>,
    gate: &WriteGate,
    id: NodeId,
) -> Result<(), Refusal> {
    let metrics = raft.metrics().borrow().clone();
    let itself = id == metrics.id && metrics.state == ServerState::Leader;
    if itself {
        gate.close().await;
    }
    let removed = change_to_remove(raft, id).await;
    if itself && removed.is_err() {
        gate.reopen().await;
    }
    removed
}

async fn change_to_remove(raft: &Raft<TypeConfig>, id: NodeId) -> Result<(), Refusal> {
    let metrics = raft.metrics().borrow().clone();
    let membership = metrics.membership_config.membership().clone();
    let change = if membership.voter_ids().any(|v| v == id) {
        ChangeMembers::RemoveVoters(BTreeSet::from([id]))
    } else if membership.get_node(&id).is_some() {
        ChangeMembers::RemoveNodes(BTreeSet::from([id]))
    } else {
        return Err(Refusal::Failed(format!("host {id} is not a member")));
    };
    raft.change_membership(change, false)
        .await
        .map_err(refusal)?;
    Ok(())
}

/// The cluster as one host sees it; complete (with replication progress) when that host leads.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// The host that answered.
    pub reported_by: NodeId,
    /// The leader, when one is known.
    pub leader: Option<NodeId>,
    /// The current term.
    pub term: u64,
    /// The index of the last entry in the reporter's log.
    pub last_log_index: u64,
    /// Every member.
    pub members: Vec<MemberStatus>,
}

/// One member of the cluster.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MemberStatus {
    /// Its id.
    pub id: NodeId,
    /// Its peer address.
    pub addr: String,
    /// Whether it votes (else it is a learner, still catching up).
    pub voter: bool,
    /// The last log index the leader knows it holds; `None` when the reporter is not the leader
    /// or the member has not answered yet.
    pub matched: Option<u64>,
}

/// The status as `raft` sees it now.
pub(crate) fn status(raft: &Raft<TypeConfig>) -> ClusterStatus {
    let metrics = raft.metrics().borrow().clone();
    let membership = metrics.membership_config.membership();
    let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
    let leading = metrics.state == ServerState::Leader;
    let members = membership
        .nodes()
        .map(|(id, node)| MemberStatus {
            id: *id,
            addr: node.addr.clone(),
            voter: voters.contains(id),
            matched: if *id == metrics.id && leading {
                metrics.last_log_index
            } else {
                metrics
                    .replication
                    .as_ref()
                    .and_then(|r| r.get(id).cloned().flatten())
                    .map(|log_id| log_id.index)
            },
        })
        .collect();
    ClusterStatus {
        reported_by: metrics.id,
        leader: metrics.current_leader,
        term: metrics.current_term,
        last_log_index: metrics.last_log_index.unwrap_or(0),
        members,
    }
}
