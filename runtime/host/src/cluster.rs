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
use doppel_replication::{JoinRequest, NodeId, ReplicatedStore, Storage, openraft};
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

/// The leader lease this host runs with, recorded in `identity`. One value per cluster, because
/// members with different leases depose each other's leaders:
/// - the host that creates the cluster chooses it (`asked`, else the default);
/// - a host that joins takes the cluster's; an `asked` lease that disagrees is refused;
/// - a host that restarts takes the lease of the members that are running (`running`: each
///   one's peer address and lease, from [`running_leases`]); an `asked` lease that disagrees is
///   refused. With no other member running it keeps its own, or takes `asked`: that is how a
///   cluster's lease changes (stop every host, start one with the new lease, then the others
///   without it: they take it from the running one).
pub async fn settle_lease(
    identity: &mut Identity,
    first_start: bool,
    join: Option<&JoinTarget>,
    asked: Option<Duration>,
    running: &[(String, Duration)],
) -> anyhow::Result<Duration> {
    let lease = match (first_start, join) {
        (true, Some(target)) => {
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
        (true, None) => asked.unwrap_or(doppel_replication::LEADER_LEASE),
        (false, _) => restart_lease(identity.lease_ms.map(Duration::from_millis), asked, running)?,
    };
    identity.lease_ms = Some(ms(lease));
    Ok(lease)
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A restarting member's lease: see [`settle_lease`]. `kept` is `None` in data directories made
/// before the lease was recorded.
///
/// A member that was stopped while the lease changed still keeps the old one; if it is the first
/// back after every host stopped, the others take its old lease from it. The cluster stays of
/// one lease, just not the newest: knowing the newest would need it in the replicated log, which
/// a host alone cannot read up to date.
fn restart_lease(
    kept: Option<Duration>,
    asked: Option<Duration>,
    running: &[(String, Duration)],
) -> anyhow::Result<Duration> {
    let mut theirs: Vec<Duration> = running.iter().map(|(_, lease)| *lease).collect();
    theirs.sort();
    theirs.dedup();
    let who = || {
        running
            .iter()
            .map(|(addr, lease)| format!("{addr}: {} ms", ms(*lease)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let change = "A cluster's lease changes only while no other member runs: stop every host, \
                  start one with the new --leader-lease, then the others without it.";
    match theirs.as_slice() {
        [] => {
            let lease = asked.or(kept).unwrap_or(doppel_replication::LEADER_LEASE);
            if let Some(kept) = kept.filter(|k| *k != lease) {
                tracing::warn!(
                    from_ms = ms(kept),
                    to_ms = ms(lease),
                    "no other member is running: the cluster's leader lease changes here; the \
                     others take it from the running members as they start"
                );
            }
            Ok(lease)
        }
        [one] => {
            if let Some(asked) = asked.filter(|a| a != one) {
                anyhow::bail!(
                    "the running members of this host's cluster ({}) use a leader lease of {} \
                     ms, and every member must use the same one: --leader-lease {} ms is \
                     refused. {change}",
                    who(),
                    ms(*one),
                    ms(asked)
                );
            }
            if let Some(kept) = kept.filter(|k| k != one) {
                tracing::info!(
                    from_ms = ms(kept),
                    to_ms = ms(*one),
                    "the cluster's leader lease changed while this host was stopped; taking the \
                     running members'"
                );
            }
            Ok(*one)
        }
        _ => anyhow::bail!(
            "the running members of this host's cluster disagree on the leader lease ({}), so \
             this host cannot tell which to run with. {change}",
            who()
        ),
    }
}

/// Opens this host's raft storage in `DATA/raft`, without starting its node yet.
pub fn open(data: &Path) -> anyhow::Result<Storage> {
    Storage::open(&data.join("raft"))
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("while opening the store in {}", data.display()))
}

/// The lease each other member that is running uses, as [`settle_lease`] wants it. A member
/// that does not answer within a second counts as stopped.
pub async fn running_leases(storage: &Storage, identity: &Identity) -> Vec<(String, Duration)> {
    let others: Vec<String> = storage
        .members()
        .into_iter()
        .filter(|(id, _)| *id != identity.id)
        .map(|(_, addr)| addr)
        .collect();
    doppel_replication::running_leases(&others, &identity.secret, Duration::from_secs(1)).await
}

/// Writes this host's identity (first, or again with a changed lease): from now on the data
/// directory belongs to the cluster.
pub fn save_identity(data: &Path, identity: &Identity) -> anyhow::Result<()> {
    crate::host::replace_private(&identity_path(data), &serde_json::to_vec_pretty(identity)?)
}

/// Starts this host's raft node on `storage` (from [`open`]), snapshotting every
/// `snapshot_every` entries, with a leader lease of `lease`.
pub async fn start(
    storage: Storage,
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
    let node = storage
        .start(identity.id, &identity.secret, config)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))
        .context("while starting the raft node")?;
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
        lease_ms: store.raft().config().election_timeout_max,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn millis(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn running(leases: &[(&str, u64)]) -> Vec<(String, Duration)> {
        leases
            .iter()
            .map(|(a, l)| (a.to_string(), millis(*l)))
            .collect()
    }

    #[test]
    fn with_no_member_running_a_restart_keeps_its_lease_or_changes_it() {
        assert_eq!(
            restart_lease(Some(millis(300)), None, &[]).unwrap(),
            millis(300)
        );
        assert_eq!(
            restart_lease(Some(millis(300)), Some(millis(900)), &[]).unwrap(),
            millis(900)
        );
        // A data directory from before the lease was kept.
        assert_eq!(
            restart_lease(None, None, &[]).unwrap(),
            doppel_replication::LEADER_LEASE
        );
    }

    #[test]
    fn a_restart_takes_the_running_members_lease_and_refuses_another() {
        let up = running(&[("b:1", 900), ("c:1", 900)]);
        // Changed while this host was stopped: taken.
        assert_eq!(
            restart_lease(Some(millis(300)), None, &up).unwrap(),
            millis(900)
        );
        assert_eq!(
            restart_lease(None, Some(millis(900)), &up).unwrap(),
            millis(900)
        );
        let refused = restart_lease(Some(millis(900)), Some(millis(300)), &up)
            .unwrap_err()
            .to_string();
        assert!(
            refused.contains("b:1: 900 ms, c:1: 900 ms")
                && refused.contains("--leader-lease 300 ms is refused")
                && refused.contains("stop every host"),
            "{refused}"
        );
    }

    #[test]
    fn running_members_that_disagree_stop_a_restart() {
        let up = running(&[("b:1", 300), ("c:1", 900)]);
        let refused = restart_lease(Some(millis(300)), None, &up)
            .unwrap_err()
            .to_string();
        assert!(
            refused.contains("disagree") && refused.contains("b:1: 300 ms, c:1: 900 ms"),
            "{refused}"
        );
    }
}
