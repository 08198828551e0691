//! The hosts table (`hosts/ID`: each member's name, addresses and labels, which every member
//! writes for itself at start), the drained marks, and what `doppel status` shows of the
//! cluster. Being a member is `doppel-replication`'s; this is what the host adds to it.

use std::collections::{BTreeMap, HashSet};

use doppel_api::{ClusterInfo, HostStatus};
use doppel_replication::{Liveness, Member, MemberError, NodeId};
use doppel_store::{Command, Op, Space, Store, StoreError};
use serde::{Deserialize, Serialize};

const HOSTS: &str = "hosts";

/// A host as the hosts table keeps it (JSON under `hosts/ID`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HostRecord {
    /// Raft id.
    pub id: NodeId,
    /// Name given at start.
    pub name: String,
    /// Admin address.
    pub admin: String,
    /// Peer address (records from before the peer listener had its own port have the admin
    /// address here).
    #[serde(default)]
    pub peer: String,
    /// Service traffic address.
    pub listen: String,
    /// Labels given at start (`--label provider=ionos`), which placement rules match.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Removed from the cluster for good; the record stays so that the placement history can
    /// still name it.
    #[serde(default)]
    pub removed: bool,
}

const DRAINED: &str = "drained";

/// Every drained host: no service may become active on one until it is undrained.
pub async fn drained(store: &dyn Store) -> Result<HashSet<NodeId>, StoreError> {
    Ok(store
        .list_keys(&Space::system(DRAINED), None, 10_000)
        .await?
        .iter()
        .filter_map(|k| std::str::from_utf8(k).ok()?.parse().ok())
        .collect())
}

/// Marks host `id` drained (`true`) or not.
pub async fn set_drained(store: &dyn Store, id: NodeId, drained: bool) -> Result<(), StoreError> {
    let space = Space::system(DRAINED);
    let key = id.to_string().into_bytes();
    let op = if drained {
        Op::Put {
            space,
            key,
            value: b"drained".to_vec(),
        }
    } else {
        Op::Delete { space, key }
    };
    store.apply(Command::new(op)).await?;
    Ok(())
}

/// Writes (or updates) this host's entry in the hosts table.
pub async fn register(store: &dyn Store, record: &HostRecord) -> Result<(), StoreError> {
    store
        .apply(Command::new(Op::Put {
            space: Space::system(HOSTS),
            key: record.id.to_string().into_bytes(),
            value: serde_json::to_vec(record).expect("a host record always encodes"),
        }))
        .await?;
    Ok(())
}

/// Every entry of the hosts table.
pub async fn hosts(store: &dyn Store) -> Result<Vec<HostRecord>, StoreError> {
    let space = Space::system(HOSTS);
    let mut out = Vec::new();
    for key in store.list_keys(&space, None, 10_000).await? {
        if let Some(bytes) = store.get(&space, &key).await? {
            out.push(
                serde_json::from_slice(&bytes)
                    .map_err(|e| StoreError::Corrupt(format!("host record: {e}")))?,
            );
        }
    }
    Ok(out)
}

/// What `doppel status` shows of the cluster: every member with its role, how far behind the
/// leader it is, and whether this host's probes find it alive.
pub async fn info(member: &Member, liveness: &Liveness) -> Result<ClusterInfo, StoreError> {
    let this = member.id();
    let status = member.status().await;
    let store = member.store().as_ref();
    // The hosts table needs a majority to read; without one, show what raft knows.
    let records = hosts(store).await.unwrap_or_default();
    let drained = drained(store).await.unwrap_or_default();
    let live = liveness.now();
    let leader_log = status
        .members
        .iter()
        .find(|m| Some(m.id) == status.leader)
        .and_then(|m| m.matched);
    let hosts = status
        .members
        .iter()
        .map(|m| {
            let record = records.iter().find(|r| r.id == m.id);
            let alive = m.id == this || live.is_alive(m.id);
            HostStatus {
                id: m.id.to_string(),
                name: record.map_or_else(|| format!("#{}", m.id), |r| r.name.clone()),
                admin: m.addr.clone(),
                listen: record.map(|r| r.listen.clone()),
                role: if Some(m.id) == status.leader {
                    "leader"
                } else if m.voter {
                    "voter"
                } else {
                    "learner"
                }
                .to_string(),
                behind: match (leader_log, m.matched) {
                    (Some(l), Some(x)) => Some(l.saturating_sub(x)),
                    _ => None,
                },
                health: if alive { "up" } else { "down" }.to_string(),
                this: m.id == this,
                labels: record.map(|r| r.labels.clone()).unwrap_or_default(),
                drained: drained.contains(&m.id),
            }
        })
        .collect();
    Ok(ClusterInfo {
        leader: status.leader.map(|l| l.to_string()),
        term: status.term,
        lease_ms: u64::try_from(member.lease().as_millis()).unwrap_or(u64::MAX),
        hosts,
        residency: member.residency_rule().await.unwrap_or_default(),
    })
}

/// Removes the host called `name` (or with that id) from the cluster for good.
pub async fn remove(member: &Member, name: &str) -> Result<HostRecord, RemoveError> {
    let store = member.store().as_ref();
    let records = hosts(store).await?;
    let mut record = records
        .into_iter()
        .find(|r| !r.removed && (r.name == name || r.id.to_string() == name))
        .ok_or_else(|| RemoveError::NoHost(name.to_string()))?;
    member.remove(record.id).await?;
    record.removed = true;
    register(store, &record).await?;
    Ok(record)
}

/// Why a host could not be removed.
#[derive(Debug, thiserror::Error)]
pub enum RemoveError {
    /// No such host.
    #[error("no host named {0:?} is in the cluster (see `doppel status`)")]
    NoHost(String),
    /// The store refused or could not agree.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The membership change failed.
    #[error(transparent)]
    Member(#[from] MemberError),
}
