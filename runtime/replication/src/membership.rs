//! Who is in the cluster: joining (learner first, then voter), leaving, and the status a leader
//! sees. Membership changes are always made by the leader; any other host points the caller at it.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, ChangeMembers, Raft, ServerState};
use serde::{Deserialize, Serialize};

use crate::{NodeId, TypeConfig};

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

/// Removes `id` from the cluster for good.
pub(crate) async fn remove_member(raft: &Raft<TypeConfig>, id: NodeId) -> Result<(), Refusal> {
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

/// Why joining failed.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// The cluster refused the token.
    #[error(
        "{0} refused the join token; use the token the first host prints with `doppel cluster token`"
    )]
    BadToken(String),
    /// No leader could be reached in time.
    #[error("could not join through {url} within {secs} s: {last}")]
    TimedOut {
        /// The address tried last.
        url: String,
        /// How long we tried.
        secs: u64,
        /// The last problem seen.
        last: String,
    },
}

/// One authenticated request to a member (`path` under its peer routes), made by a host that is
/// joining or starting: its decoded answer, or why there is none yet, which is worth retrying.
/// A refused secret is an error of its own: nothing will change that.
async fn ask<T: serde::de::DeserializeOwned>(
    http: &reqwest::Client,
    member: &str,
    path: &str,
    secret: &str,
    body: Vec<u8>,
) -> Result<Result<T, String>, JoinError> {
    let answer = match http
        .post(format!("{member}/raft/v1/{path}"))
        .bearer_auth(secret)
        .body(body)
        .send()
        .await
    {
        Err(e) => {
            return Ok(Err(format!(
                "{member} unreachable: {}",
                crate::replicated::causes(&e)
            )));
        }
        Ok(r) if r.status() == reqwest::StatusCode::UNAUTHORIZED => {
            return Err(JoinError::BadToken(member.to_string()));
        }
        Ok(r) if !r.status().is_success() => {
            return Ok(Err(format!("{member} answered {}", r.status())));
        }
        Ok(r) => r.bytes().await,
    };
    Ok(match answer.map(|b| postcard::from_bytes::<T>(&b)) {
        Ok(Ok(decoded)) => Ok(decoded),
        Ok(Err(e)) => Err(format!(
            "{member} answered something unexpected to {path}: {e}"
        )),
        Err(e) => Err(format!("{member}: {e}")),
    })
}

/// The leader lease the cluster that `url` (any member's peer address, `http://HOST:PORT`)
/// belongs to runs with. Every member must run with the same one: a host expecting heartbeats
/// sooner than the leader sends them stands for election again and again, and with the higher
/// term it takes it refuses that leader's entries, so it never catches up. A joining host
/// therefore asks for it before it starts its own node. Retries an unreachable member until
/// `patience` runs out.
pub async fn cluster_lease(
    url: &str,
    secret: &str,
    patience: Duration,
) -> Result<Duration, JoinError> {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + patience;
    let url = url.trim_end_matches('/');
    loop {
        let last = match ask::<u64>(&http, url, "lease", secret, Vec::new()).await? {
            Ok(ms) => return Ok(Duration::from_millis(ms)),
            Err(last) => last,
        };
        if Instant::now() >= deadline {
            return Err(JoinError::TimedOut {
                url: url.to_string(),
                secs: patience.as_secs(),
                last,
            });
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The leader lease each running member among `members` (peer addresses, `HOST:PORT`) runs
/// with, asked of all of them at once. A member that does not answer within `patience` (stopped,
/// or cut off) is left out, and so is one that refuses `secret`: whatever listens there is not a
/// member of this cluster.
pub async fn running_leases(
    members: &[String],
    secret: &str,
    patience: Duration,
) -> Vec<(String, Duration)> {
    if members.is_empty() {
        return Vec::new();
    }
    let Ok(http) = reqwest::Client::builder().timeout(patience).build() else {
        return Vec::new();
    };
    let mut asks = tokio::task::JoinSet::new();
    for addr in members {
        let (http, addr, secret) = (http.clone(), addr.clone(), secret.to_string());
        asks.spawn(async move {
            let url = format!("http://{addr}");
            match ask::<u64>(&http, &url, "lease", &secret, Vec::new()).await {
                Ok(Ok(ms)) => Some((addr, Duration::from_millis(ms))),
                _ => None,
            }
        });
    }
    let mut leases: Vec<_> = asks.join_all().await.into_iter().flatten().collect();
    leases.sort();
    leases
}

/// Asks the cluster that `url` (any member's peer address, `http://HOST:PORT`) belongs to to
/// take `req` in, following redirects to the leader and retrying through elections until
/// `patience` runs out. The joining host must already serve its peer routes.
pub async fn join(
    url: &str,
    secret: &str,
    req: &JoinRequest,
    patience: Duration,
) -> Result<(), JoinError> {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + patience;
    let origin = url.trim_end_matches('/').to_string();
    let mut target = origin.clone();
    let body = postcard::to_stdvec(req).expect("a join request always encodes");
    loop {
        let answer = ask::<Result<(), Refusal>>(&http, &target, "join", secret, body.clone());
        let last = match answer.await? {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(Refusal::NotLeader(Some(leader)))) => {
                target = format!("http://{leader}");
                continue;
            }
            Ok(Err(refused)) => refused.to_string(),
            Err(last) => last,
        };
        if Instant::now() >= deadline {
            return Err(JoinError::TimedOut {
                url: target,
                secs: patience.as_secs(),
                last,
            });
        }
        tracing::info!(%last, "joining: retrying");
        // A leader we were sent to may have died since; start again where the operator said.
        target = origin.clone();
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
