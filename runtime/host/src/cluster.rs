//! This host's place in its cluster. Every host is a raft member: one started alone is a
//! one-member cluster (elected at once, so it starts as fast as before), and `--join` adds a host
//! to an existing cluster. Here: the host's identity (its id and the cluster secret, kept in
//! `DATA/cluster.json`, owner-only), starting the raft node, creating or joining the cluster, and
//! the hosts table every member writes its name and addresses to.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use doppel_api::{ClusterInfo, HostStatus};
use doppel_replication::{JoinRequest, NodeId, ReplicatedStore, openraft};
use doppel_store::{Command, Op, Space, Store, StoreError};
use serde::{Deserialize, Serialize};

/// Where to join, from `doppel host --join URL --token TOKEN`.
#[derive(Clone)]
pub struct JoinTarget {
    /// Any member's admin address (`http://HOST:PORT`).
    pub url: String,
    /// The cluster's join token (its secret).
    pub token: String,
}

// Written by hand so that logging a host's configuration never prints the token.
impl std::fmt::Debug for JoinTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinTarget")
            .field("url", &self.url)
            .field("token", &"<redacted>")
            .finish()
    }
}

/// Who this host is in its cluster: kept in `DATA/cluster.json`, owner-only.
#[derive(Clone, Serialize, Deserialize)]
pub struct Identity {
    /// This host's raft id, random, chosen at its first start.
    pub id: NodeId,
    /// The secret every member presents to every other; also the join token.
    pub secret: String,
    /// The cluster's leader lease in ms, the same on every member (see [`settle_lease`]).
    /// Missing in data directories made before it was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_ms: Option<u64>,
}

fn identity_path(data: &Path) -> std::path::PathBuf {
    data.join("cluster.json")
}

fn random_u64() -> anyhow::Result<u64> {
    let mut raw = [0u8; 8];
    getrandom::fill(&mut raw).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    // Id 0 reads as "none" in logs; avoid it.
    Ok(u64::from_le_bytes(raw).max(1))
}

/// The identity stored in `data`, if this host has started before.
pub fn read_identity(data: &Path) -> anyhow::Result<Option<Identity>> {
    let path = identity_path(data);
    match std::fs::read(&path) {
        Ok(bytes) => Ok(Some(serde_json::from_slice(&bytes).with_context(|| {
            format!(
                "{} is damaged; it holds this host's cluster id",
                path.display()
            )
        })?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("while reading {}", path.display())),
    }
}

/// A new identity for this host: a fresh id, and either a fresh secret (a new cluster) or the
/// join token it was given. Not yet on disk: [`save_identity`] writes it once the host is a
/// member, so that a first start that fails (a wrong token, an unreachable cluster) leaves
/// nothing behind that a corrected retry would trip over.
pub fn new_identity(join: Option<&JoinTarget>) -> anyhow::Result<Identity> {
    let secret = match join {
        Some(join) => join.token.clone(),
        None => {
            let mut raw = [0u8; 32];
            getrandom::fill(&mut raw).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
            hex::encode(raw)
        }
    };
    Ok(Identity {
        id: random_u64()?,
        secret,
        lease_ms: None,
    })
}

/// The leader lease this host runs with, recorded in `identity`. It is chosen once per cluster:
/// by the host that creates it (`asked`, else the default), taken from the cluster by every host
/// that joins, and kept for every later start. Members with different leases depose each
/// other's leaders, so an `asked` lease that disagrees is refused, not quietly overridden.
pub async fn settle_lease(
    identity: &mut Identity,
    first_start: bool,
    join: Option<&JoinTarget>,
    asked: Option<Duration>,
) -> anyhow::Result<Duration> {
    let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    let lease = match (identity.lease_ms, first_start, join) {
        (Some(kept), false, _) => {
            if let Some(asked) = asked.filter(|a| ms(*a) != kept) {
                anyhow::bail!(
                    "this host's cluster runs with a leader lease of {kept} ms, chosen when the \
                     cluster was created, and every member must use the same one: \
                     --leader-lease {} ms is refused. Start the host without --leader-lease",
                    ms(asked)
                );
            }
            Duration::from_millis(kept)
        }
        (_, true, Some(target)) => {
            let theirs = doppel_replication::cluster_lease(
                &target.url,
                &target.token,
                Duration::from_secs(120),
            )
            .await
            .with_context(|| format!("while asking {} for its leader lease", target.url))?;
            if let Some(asked) = asked.filter(|a| *a != theirs) {
                anyhow::bail!(
                    "the cluster at {} runs with a leader lease of {} ms, and every member must \
                     use the same one: --leader-lease {} ms is refused. Join without \
                     --leader-lease and this host takes the cluster's",
                    target.url,
                    ms(theirs),
                    ms(asked)
                );
            }
            theirs
        }
        // A new cluster, or a member whose data directory predates the recorded lease.
        _ => asked.unwrap_or(doppel_replication::LEADER_LEASE),
    };
    identity.lease_ms = Some(ms(lease));
    Ok(lease)
}

/// Writes this host's identity: from now on the data directory belongs to the cluster.
pub fn save_identity(data: &Path, identity: &Identity) -> anyhow::Result<()> {
    crate::host::write_private(&identity_path(data), &serde_json::to_vec_pretty(identity)?)
}

/// Starts this host's raft node from `DATA/raft`, snapshotting every `snapshot_every` entries,
/// with a leader lease of `lease`.
pub async fn start(
    data: &Path,
    identity: &Identity,
    snapshot_every: u64,
    lease: std::time::Duration,
) -> anyhow::Result<Arc<ReplicatedStore>> {
    let config = openraft::Config {
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(snapshot_every.max(1)),
        // Keep some entries past a snapshot, so that a host a little behind catches up by log.
        max_in_snapshot_log_to_keep: (snapshot_every / 5).max(1),
        ..doppel_replication::config_with_lease(lease)
    };
    tracing::info!(
        lease_ms = config.election_timeout_max,
        heartbeat_ms = config.heartbeat_interval,
        "raft timing"
    );
    let node =
        doppel_replication::start_with(identity.id, &data.join("raft"), &identity.secret, config)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))
            .with_context(|| format!("while opening the store in {}", data.display()))?;
    Ok(Arc::new(ReplicatedStore::new(node, &identity.secret)))
}

/// Makes a brand-new host the only member of a new cluster.
pub async fn create(store: &ReplicatedStore, id: NodeId, advertise: &str) -> anyhow::Result<()> {
    let members = [(id, openraft::BasicNode::new(advertise))]
        .into_iter()
        .collect();
    store
        .raft()
        .initialize::<std::collections::BTreeMap<_, _>>(members)
        .await
        .context("while creating a one-member cluster")?;
    Ok(())
}

/// Asks the cluster at `target` to take this host in, and waits until it is a voter.
pub async fn join(target: &JoinTarget, id: NodeId, advertise: &str) -> anyhow::Result<()> {
    let req = JoinRequest {
        id,
        addr: advertise.to_string(),
    };
    doppel_replication::join(&target.url, &target.token, &req, Duration::from_secs(120))
        .await
        .with_context(|| format!("while joining the cluster through {}", target.url))
}

const HOSTS: &str = "hosts";

/// A host as the hosts table keeps it (JSON under `hosts/ID`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HostRecord {
    /// Raft id.
    pub id: NodeId,
    /// Name given at start.
    pub name: String,
    /// Admin (and peer) address.
    pub admin: String,
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

/// Whether the peer at `addr` answers with our secret within a short time.
async fn answers(http: &reqwest::Client, addr: &str, secret: &str) -> bool {
    http.post(format!("http://{addr}/raft/v1/ping"))
        .bearer_auth(secret)
        .timeout(Duration::from_millis(500))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
}

/// What `doppel status` shows of the cluster: every member with its role, how far behind the
/// leader it is, and whether it answers now.
pub async fn info(
    store: &ReplicatedStore,
    this: NodeId,
    secret: &str,
) -> Result<ClusterInfo, StoreError> {
    let status = store.status().await;
    // The hosts table needs a majority to read; without one, show what raft knows.
    let records = hosts(store).await.unwrap_or_default();
    let drained = drained(store).await.unwrap_or_default();
    let leader_log = status
        .members
        .iter()
        .find(|m| Some(m.id) == status.leader)
        .and_then(|m| m.matched);
    let http = reqwest::Client::new();
    let probes = status.members.iter().map(|m| {
        let http = http.clone();
        async move { m.id == this || answers(&http, &m.addr, secret).await }
    });
    let alive = futures::future::join_all(probes).await;
    let hosts = status
        .members
        .iter()
        .zip(alive)
        .map(|(m, alive)| {
            let record = records.iter().find(|r| r.id == m.id);
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
        hosts,
    })
}

/// Removes the host called `name` (or with that id) from the cluster for good.
pub async fn remove(store: &ReplicatedStore, name: &str) -> Result<HostRecord, RemoveError> {
    let records = hosts(store).await?;
    let mut record = records
        .into_iter()
        .find(|r| !r.removed && (r.name == name || r.id.to_string() == name))
        .ok_or_else(|| RemoveError::NoHost(name.to_string()))?;
    store.remove_member(record.id).await?;
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
}
