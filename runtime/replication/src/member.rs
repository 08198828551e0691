//! Being a member of a cluster: who this host is (its id and the cluster's lease, kept in
//! `DATA/cluster.json`; its certificate and key, in `DATA/tls/`), starting its raft node, creating
//! a cluster (and its CA) or joining one with an invitation, settling the leader lease with the
//! other members, serving the peer routes, watching liveness, and stopping cleanly. [`Member`] is
//! what a host holds; it never sees raft itself.
//!
//! Starting is three steps, because peers must reach a joining host before it is a member:
//! [`Member::open`] (identity, storage, lease, node), then the host serves
//! [`Member::peer_router`], then [`Member::enter`] (create or join; only then is the identity
//! saved, so that a first start that fails can simply be retried).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use doppel_trust::{ClusterCa, HostIdentity, HostKey, Labels};

use crate::authority::{
    self, AuthorityError, CERT_LIFETIME, EnrolAnswer, EnrolRequest, InvitationToken,
};
use crate::credentials::{Credentials, CredentialsError, tls_dir};
use crate::liveness::{self, Liveness};
use crate::membership::{ClusterStatus, JoinRequest, Refusal};
use crate::node::{LEADER_LEASE, Storage, config_with_lease};
use crate::peer_server::peer_router;
use crate::replicated::ReplicatedStore;
use crate::rotation::{self, Rotated};
use crate::transport::{PeerClient, PeerError, RaftRoute, RefusalSink};
use crate::types::NodeId;

/// Where to join, from `doppel host --join ADDR --token INVITATION`.
#[derive(Clone)]
pub struct JoinTarget {
    /// Any member's peer address (`HOST:PORT`, or `https://HOST:PORT`).
    pub url: String,
    /// The invitation (`doppel hosts invite`).
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

impl JoinTarget {
    /// The member's `HOST:PORT`, as the transport names peers.
    fn addr(&self) -> &str {
        let url = self.url.trim_end_matches('/');
        url.strip_prefix("https://").unwrap_or(url)
    }
}

/// What a host's membership needs to know.
#[derive(Clone, Debug)]
pub struct MemberConfig {
    /// The host's name, for its certificate when it creates a cluster (an invited host gets the
    /// invitation's).
    pub name: String,
    /// Its labels, likewise (an invited host gets the invitation's).
    pub labels: Labels,
    /// Labels every host of a cluster this host creates must carry (`--require-label`).
    pub require: Labels,
    /// The host's data directory: `cluster.json` and `raft/` live in it.
    pub data_dir: PathBuf,
    /// The cluster to join on first start; `None` starts (or reopens) a cluster of its own.
    pub join: Option<JoinTarget>,
    /// The leader lease asked for (`--leader-lease`); see [`settle_lease`].
    pub leader_lease: Option<Duration>,
    /// Log entries between snapshots.
    pub snapshot_every: u64,
    /// How long the certificates of a cluster this host creates are valid (hosts renew theirs
    /// when a third is left); `None` for a year.
    pub cert_lifetime: Option<Duration>,
}

/// Why a host could not become or stay a member.
#[derive(Debug, thiserror::Error)]
pub enum MemberError {
    /// `cluster.json` could not be read or written.
    #[error("{what} {path}: {source}")]
    Identity {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why it failed.
        source: std::io::Error,
    },
    /// `cluster.json` does not decode.
    #[error("{path} is damaged; it holds this host's cluster id: {why}")]
    Damaged {
        /// The file.
        path: PathBuf,
        /// The decoding error.
        why: String,
    },
    /// The raft storage would not open, or the node would not start or stop.
    #[error("{0}")]
    Raft(String),
    /// The leader lease asked for disagrees with the cluster's (the reason, in full).
    #[error("{0}")]
    Lease(String),
    /// Joining failed.
    #[error(transparent)]
    Join(#[from] JoinError),
    /// The store refused or could not agree.
    #[error(transparent)]
    Store(#[from] doppel_store::StoreError),
    /// The TLS files could not be read or written.
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
    /// A key or certificate could not be made.
    #[error(transparent)]
    Trust(#[from] doppel_trust::TrustError),
    /// The cluster's authority refused (an invitation, the residency rule).
    #[error(transparent)]
    Authority(#[from] AuthorityError),
    /// A data directory of a member with no certificate (made before hosts spoke TLS).
    #[error(
        "{0} holds a cluster member but no certificate (tls/host.pem): it was made by a doppel \
         without TLS between hosts. Start this host with a new data directory and an invitation"
    )]
    NoCertificate(PathBuf),
}

/// Why joining failed.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// The cluster refused this host (why).
    #[error("the cluster refused this host: {0}")]
    Refused(String),
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

/// Who this host is in its cluster: kept in `DATA/cluster.json`, owner-only. (Its certificate
/// says the same id; the certificate is what peers believe.)
#[derive(Clone, Serialize, Deserialize)]
struct Identity {
    /// This host's raft id, random, chosen at its first start.
    id: NodeId,
    /// The cluster's leader lease in ms, the same on every member (see [`settle_lease`]).
    /// Missing in data directories made before it was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    lease_ms: Option<u64>,
}

fn identity_path(data: &Path) -> PathBuf {
    data.join("cluster.json")
}

fn random_bytes<const N: usize>() -> Result<[u8; N], MemberError> {
    let mut raw = [0u8; N];
    getrandom::fill(&mut raw).map_err(|e| MemberError::Raft(format!("no randomness: {e}")))?;
    Ok(raw)
}

/// The raft id of the host whose data directory is `data`, if it has become a member.
pub fn member_id(data: &Path) -> Result<Option<NodeId>, MemberError> {
    Ok(read_identity(data)?.map(|identity| identity.id))
}

/// The identity stored in `data`, if this host has started before.
fn read_identity(data: &Path) -> Result<Option<Identity>, MemberError> {
    let path = identity_path(data);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| MemberError::Damaged {
                path,
                why: e.to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(MemberError::Identity {
            what: "while reading",
            path,
            source,
        }),
    }
}

/// A new identity with a fresh id. Not yet on disk: [`save_identity`] writes it once the host is
/// a member, so that a first start that fails (an unreachable cluster) leaves nothing behind
/// that a corrected retry would trip over.
fn new_identity() -> Result<Identity, MemberError> {
    // Id 0 reads as "none" in logs; avoid it.
    let id = u64::from_le_bytes(random_bytes::<8>()?).max(1);
    Ok(Identity { id, lease_ms: None })
}

/// Writes this host's identity (first, or again with a changed lease): from now on the data
/// directory belongs to the cluster. Replaced whole, never rewritten in place.
fn save_identity(data: &Path, identity: &Identity) -> Result<(), MemberError> {
    let path = identity_path(data);
    let bytes = serde_json::to_vec_pretty(identity).expect("an identity always encodes");
    doppel_store::files::replace_private(&path, &bytes).map_err(|source| MemberError::Identity {
        what: "while writing",
        path,
        source,
    })
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// This host as a member of its cluster.
pub struct Member {
    data_dir: PathBuf,
    identity: Identity,
    first_start: bool,
    join: Option<JoinTarget>,
    lease: Duration,
    store: Arc<ReplicatedStore>,
    peers: PeerClient,
    credentials: Arc<Credentials>,
    /// The CA of a cluster this start creates, kept in the store by [`Member::enter`].
    new_ca: Option<(ClusterCa, Labels)>,
    cert_lifetime: Duration,
    liveness: Mutex<Option<(Liveness, tokio::task::JoinHandle<()>)>>,
    keeper: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Member {
    /// Reads (or makes) this host's identity, opens its raft storage, settles the leader lease
    /// with the members that are running, and starts the raft node. The host is not yet a member
    /// on a first start: serve [`Member::peer_router`], then [`Member::enter`].
    pub async fn open(config: MemberConfig) -> Result<Member, MemberError> {
        let data = &config.data_dir;
        let (mut identity, first_start) = match read_identity(data)? {
            Some(identity) => {
                if config.join.is_some() {
                    tracing::warn!("this host is already a cluster member; --join is ignored");
                }
                (identity, false)
            }
            None => {
                // A first start that never finished (no identity was saved) may have left raft
                // state for an id that no longer exists; start that part afresh.
                let raft_dir = data.join("raft");
                if raft_dir.exists() {
                    std::fs::remove_dir_all(&raft_dir).map_err(|source| MemberError::Identity {
                        what: "while clearing an unfinished first start in",
                        path: raft_dir.clone(),
                        source,
                    })?;
                }
                (new_identity()?, true)
            }
        };
        let (credentials, new_ca) = credentials(&config, &mut identity, first_start).await?;
        let storage = Storage::open(&data.join("raft")).map_err(|e| {
            MemberError::Raft(format!(
                "while opening the store in {}: {e}",
                data.display()
            ))
        })?;
        let peers = PeerClient::new(&credentials)?;
        let others: Vec<String> = storage
            .members()
            .into_iter()
            .filter(|(id, _)| *id != identity.id)
            .map(|(_, addr)| addr)
            .collect();
        let running = running_leases(&peers, &others, Duration::from_secs(1)).await;
        let kept = identity.lease_ms;
        let lease = settle_lease(
            &mut identity,
            first_start,
            config.join.as_ref().map(|j| (&peers, j)),
            config.leader_lease,
            &running,
        )
        .await?;
        if !first_start && identity.lease_ms != kept {
            save_identity(data, &identity)?;
        }
        let every = config.snapshot_every.max(1);
        let raft_config = openraft::Config {
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(every),
            // Keep some entries past a snapshot, so that a host a little behind catches up by log.
            max_in_snapshot_log_to_keep: (every / 5).max(1),
            ..config_with_lease(lease)
        };
        tracing::info!(
            lease_ms = raft_config.election_timeout_max,
            heartbeat_ms = raft_config.heartbeat_interval,
            "raft timing"
        );
        let node = storage
            .start(identity.id, peers.clone(), raft_config)
            .await
            .map_err(|e| MemberError::Raft(format!("while starting the raft node: {e}")))?;
        let store = Arc::new(ReplicatedStore::new(node, peers.clone()));
        Ok(Member {
            data_dir: data.clone(),
            credentials: Arc::new(credentials),
            new_ca,
            cert_lifetime: config.cert_lifetime.unwrap_or(CERT_LIFETIME),
            identity,
            first_start,
            join: config.join,
            lease,
            store,
            peers,
            liveness: Mutex::new(None),
            keeper: Mutex::new(None),
        })
    }

    /// Every peer route this host serves: raft's and the host's own `host_routes` (paths below
    /// the host's prefix, see [`crate::HostRoute`]), behind the transport's admission, which
    /// reports refusals to `refusals`.
    pub fn peer_router(&self, host_routes: axum::Router, refusals: RefusalSink) -> axum::Router {
        peer_router(self.store.clone(), host_routes, refusals)
    }

    /// Makes this host a member on its first start — the only member of a new cluster, or one
    /// of the cluster it was told to join (waiting until it votes) — and then saves its
    /// identity. Peers must reach [`Member::peer_router`] already. Answers whether it joined.
    pub async fn enter(&self, advertise: &str) -> Result<bool, MemberError> {
        if !self.first_start {
            self.keep_credentials();
            return Ok(false);
        }
        let id = self.id();
        let joined = match &self.join {
            Some(target) => {
                tracing::info!(url = %target.url, "joining the cluster");
                let req = JoinRequest {
                    id,
                    addr: advertise.to_string(),
                };
                join(&self.peers, target, &req, Duration::from_secs(120)).await?;
                true
            }
            None => {
                let members = [(id, openraft::BasicNode::new(advertise))]
                    .into_iter()
                    .collect::<std::collections::BTreeMap<_, _>>();
                self.store.raft().initialize(members).await.map_err(|e| {
                    MemberError::Raft(format!("while creating a one-member cluster: {e}"))
                })?;
                if let Some((ca, rule)) = &self.new_ca {
                    authority::keep_ca(self.store.as_ref(), ca, self.cert_lifetime).await?;
                    authority::set_rule(self.store.as_ref(), rule).await?;
                    self.credentials.save(&self.data_dir)?;
                    let key = tls_dir(&self.data_dir).join("ca.key");
                    doppel_store::files::replace_private(&key, ca.key_pem().as_bytes()).map_err(
                        |source| MemberError::Identity {
                            what: "while writing",
                            path: key,
                            source,
                        },
                    )?;
                }
                false
            }
        };
        save_identity(&self.data_dir, &self.identity)?;
        self.keep_credentials();
        Ok(joined)
    }

    /// Starts the task that keeps this host's certificate and trusted CAs current (see
    /// `rotation.rs`).
    fn keep_credentials(&self) {
        let task = rotation::spawn_keeper(
            self.store.clone(),
            self.credentials.clone(),
            self.data_dir.clone(),
            self.id(),
        );
        if let Some(old) = self
            .keeper
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .replace(task)
        {
            old.abort();
        }
    }

    /// Rotates the cluster CA with no downtime (`doppel cluster rotate-ca`), telling `step` what
    /// happens; goes on with a rotation that stopped half-way. Waits up to `patience` for every
    /// member at each step.
    pub async fn rotate_ca(
        &self,
        patience: Duration,
        step: &(dyn Fn(String) + Send + Sync),
    ) -> Result<Rotated, AuthorityError> {
        rotation::rotate_ca(&self.store, &self.identity().name, patience, step).await
    }

    /// Records `advertise` as this host's peer address when the cluster has another (it
    /// restarted on a new address). Needs a majority.
    pub async fn advertise(&self, advertise: &str) -> Result<(), MemberError> {
        if self.store.address_of(self.id()).as_deref() != Some(advertise) {
            tracing::info!(%advertise, "this host's address changed; telling the cluster");
            self.store.set_address(self.id(), advertise).await?;
        }
        Ok(())
    }

    /// This host's id.
    pub fn id(&self) -> NodeId {
        self.identity.id
    }

    /// Whether this start made the data directory a member (it was not one before).
    pub fn first_start(&self) -> bool {
        self.first_start
    }

    /// Who this host's certificate says it is: its id, name and labels.
    pub fn identity(&self) -> &HostIdentity {
        self.credentials.identity()
    }

    /// This host's certificate and the CAs it trusts.
    pub fn credentials(&self) -> &Credentials {
        &self.credentials
    }

    /// Opens an invitation for a host called `name` with `labels`, good for one join within
    /// `ttl` (`doppel hosts invite`).
    pub async fn invite(
        &self,
        name: &str,
        labels: &Labels,
        ttl: Duration,
    ) -> Result<InvitationToken, AuthorityError> {
        authority::invite(self.store.as_ref(), name, labels, ttl).await
    }

    /// The labels every host of this cluster must carry.
    pub async fn residency_rule(&self) -> Result<Labels, MemberError> {
        Ok(authority::rule(self.store.as_ref()).await?)
    }

    /// The cluster's leader lease.
    pub fn lease(&self) -> Duration {
        self.lease
    }

    /// The replicated store.
    pub fn store(&self) -> &Arc<ReplicatedStore> {
        &self.store
    }

    /// The connector for the host's own peer calls.
    pub fn peers(&self) -> &PeerClient {
        &self.peers
    }

    /// Whether this host leads now.
    pub fn is_leader(&self) -> bool {
        self.store.is_leader()
    }

    /// The cluster as its leader sees it (with each member's replication progress).
    pub async fn status(&self) -> ClusterStatus {
        self.store.status().await
    }

    /// The liveness verdicts of this host's probe loop, which the first call starts.
    pub fn liveness(&self) -> Liveness {
        let mut slot = self.liveness.lock().unwrap_or_else(|e| e.into_inner());
        let (watch, _) = slot.get_or_insert_with(|| {
            liveness::spawn(self.store.clone(), self.peers.clone(), self.id())
        });
        watch.clone()
    }

    /// Removes host `id` from the cluster for good (through the leader). Its certificate is
    /// refused from the moment the removal is decided, before its membership ends.
    pub async fn remove(&self, id: NodeId) -> Result<(), MemberError> {
        authority::revoke(self.store.as_ref(), id).await?;
        Ok(self.store.remove_member(id).await?)
    }

    /// Stops probing and the raft node, and makes the applied state durable.
    pub async fn shutdown(&self) -> Result<(), MemberError> {
        if let Some((_, task)) = self
            .liveness
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            task.abort();
        }
        if let Some(task) = self.keeper.lock().unwrap_or_else(|e| e.into_inner()).take() {
            task.abort();
        }
        self.store
            .raft()
            .shutdown()
            .await
            .map_err(|e| MemberError::Raft(format!("while stopping the consensus node: {e}")))?;
        let state = self.store.state().clone();
        tokio::task::spawn_blocking(move || state.engine().checkpoint())
            .await
            .map_err(|e| MemberError::Raft(format!("while closing the store: {e}")))??;
        Ok(())
    }
}

/// This host's certificate. A host that restarts has its own in `DATA/tls/`; one that creates a
/// cluster makes the CA (kept by [`Member::enter`]) and issues its own, with the name and labels
/// it was started with; one that joins enrols with its invitation and keeps what it gets at once
/// (the invitation is used up), taking the id in it if an earlier start enrolled already.
async fn credentials(
    config: &MemberConfig,
    identity: &mut Identity,
    first_start: bool,
) -> Result<(Credentials, Option<(ClusterCa, Labels)>), MemberError> {
    let data = &config.data_dir;
    if !first_start {
        let kept =
            Credentials::load(data)?.ok_or_else(|| MemberError::NoCertificate(data.clone()))?;
        return Ok((kept, None));
    }
    match &config.join {
        None => {
            if let Some(why) = authority::breaks_rule(&config.require, &config.labels) {
                return Err(AuthorityError::Refused(format!(
                    "{why}; give this host the labels with --label"
                ))
                .into());
            }
            authority::check_label_part("the host name", &config.name)?;
            let ca = ClusterCa::create(&config.name)?;
            let key = HostKey::generate()?;
            let who = HostIdentity {
                id: identity.id,
                name: config.name.clone(),
                labels: config.labels.clone(),
            };
            let lifetime = config.cert_lifetime.unwrap_or(CERT_LIFETIME);
            let cert = ca.issue(&key.request()?, &who, lifetime)?;
            let own = Credentials::from_pem(
                &format!("{cert}{}", ca.cert_pem()),
                &key.pem(),
                ca.cert_pem(),
            )?;
            Ok((own, Some((ca, config.require.clone()))))
        }
        Some(target) => {
            if let Some(enrolled) = Credentials::load(data)? {
                identity.id = enrolled.identity().id;
                return Ok((enrolled, None));
            }
            let enrolled = enrol(target, identity.id, Duration::from_secs(120)).await?;
            enrolled.save(data)?;
            let who = enrolled.identity();
            tracing::info!(name = %who.name, labels = ?who.labels, "enrolled: the cluster issued this host's certificate");
            Ok((enrolled, None))
        }
    }
}

/// Uses the invitation in `target` to get a certificate for host `id`, for a key made here.
async fn enrol(
    target: &JoinTarget,
    id: NodeId,
    patience: Duration,
) -> Result<Credentials, MemberError> {
    let token = InvitationToken::parse(&target.token).map_err(JoinError::Refused)?;
    let client = PeerClient::enrolling(&token.ca_fingerprint)?;
    let key = HostKey::generate()?;
    let req = EnrolRequest {
        secret: token.secret,
        id,
        csr_pem: key.request()?,
    };
    let body = postcard::to_stdvec(&req).expect("an enrolment always encodes");
    let deadline = Instant::now() + patience;
    loop {
        let answer = ask::<Result<EnrolAnswer, String>>(
            &client,
            target.addr(),
            RaftRoute::Enrol,
            body.clone(),
            None,
        )
        .await?;
        let last = match answer {
            Ok(Ok(answer)) => {
                return Ok(Credentials::from_pem(
                    &answer.chain_pem,
                    &key.pem(),
                    &answer.roots_pem,
                )?);
            }
            Ok(Err(refused)) => return Err(JoinError::Refused(refused).into()),
            Err(last) => last,
        };
        if Instant::now() >= deadline {
            return Err(JoinError::TimedOut {
                url: target.url.clone(),
                secs: patience.as_secs(),
                last: format!("while enrolling: {last}"),
            }
            .into());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
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
async fn settle_lease(
    identity: &mut Identity,
    first_start: bool,
    join: Option<(&PeerClient, &JoinTarget)>,
    asked: Option<Duration>,
    running: &[(String, Duration)],
) -> Result<Duration, MemberError> {
    let lease = match (first_start, join) {
        (true, Some((peers, target))) => {
            let theirs = cluster_lease(peers, target, Duration::from_secs(120)).await?;
            if let Some(asked) = asked.filter(|a| *a != theirs) {
                return Err(MemberError::Lease(format!(
                    "the cluster at {} runs with a leader lease of {} ms, and every member must \
                     use the same one: --leader-lease {} ms is refused. Join without \
                     --leader-lease and this host takes the cluster's",
                    target.url,
                    ms(theirs),
                    ms(asked)
                )));
            }
            theirs
        }
        (true, None) => asked.unwrap_or(LEADER_LEASE),
        (false, _) => restart_lease(identity.lease_ms.map(Duration::from_millis), asked, running)
            .map_err(MemberError::Lease)?,
    };
    identity.lease_ms = Some(ms(lease));
    Ok(lease)
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
) -> Result<Duration, String> {
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
            let lease = asked.or(kept).unwrap_or(LEADER_LEASE);
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
                return Err(format!(
                    "the running members of this host's cluster ({}) use a leader lease of {} \
                     ms, and every member must use the same one: --leader-lease {} ms is \
                     refused. {change}",
                    who(),
                    ms(*one),
                    ms(asked)
                ));
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
        _ => Err(format!(
            "the running members of this host's cluster disagree on the leader lease ({}), so \
             this host cannot tell which to run with. {change}",
            who()
        )),
    }
}

/// One question to a member by a host that is joining or starting: the decoded answer, or why
/// there is none yet, which is worth retrying. A refused credential is an error of its own:
/// nothing will change that.
async fn ask<T: serde::de::DeserializeOwned>(
    peers: &PeerClient,
    addr: &str,
    route: RaftRoute,
    body: Vec<u8>,
    timeout: Option<Duration>,
) -> Result<Result<T, String>, JoinError> {
    match peers.ask(addr, route, body, timeout).await {
        Ok(answer) => Ok(Ok(answer)),
        Err(PeerError::Unauthorized(why)) => Err(JoinError::Refused(format!("{addr}: {why}"))),
        // The TLS handshake failed on the CA: the token names another cluster.
        Err(e)
            if e.to_string()
                .contains(doppel_trust::tls::NOT_THE_INVITING_CLUSTER) =>
        {
            Err(JoinError::Refused(format!("{addr}: {e}")))
        }
        Err(e) => Ok(Err(format!("{addr}: {e}"))),
    }
}

/// The leader lease the cluster that `target` belongs to runs with. Every member must run with
/// the same one: a host expecting heartbeats sooner than the leader sends them stands for
/// election again and again, and with the higher term it takes it refuses that leader's entries,
/// so it never catches up. A joining host therefore asks for it before it starts its own node.
/// Retries an unreachable member until `patience` runs out.
async fn cluster_lease(
    peers: &PeerClient,
    target: &JoinTarget,
    patience: Duration,
) -> Result<Duration, JoinError> {
    let deadline = Instant::now() + patience;
    loop {
        let last =
            match ask::<u64>(peers, target.addr(), RaftRoute::Lease, Vec::new(), None).await? {
                Ok(ms) => return Ok(Duration::from_millis(ms)),
                Err(last) => last,
            };
        if Instant::now() >= deadline {
            return Err(JoinError::TimedOut {
                url: target.url.clone(),
                secs: patience.as_secs(),
                last: format!("while asking for its leader lease: {last}"),
            });
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The leader lease each running member among `members` (peer addresses, `HOST:PORT`) runs
/// with, asked of all of them at once. A member that does not answer within `patience` (stopped,
/// or cut off) is left out, and so is one that refuses our credential: whatever listens there is
/// not a member of this cluster.
async fn running_leases(
    peers: &PeerClient,
    members: &[String],
    patience: Duration,
) -> Vec<(String, Duration)> {
    let mut asks = tokio::task::JoinSet::new();
    for addr in members {
        let (peers, addr) = (peers.clone(), addr.clone());
        asks.spawn(async move {
            match ask::<u64>(&peers, &addr, RaftRoute::Lease, Vec::new(), Some(patience)).await {
                Ok(Ok(ms)) => Some((addr, Duration::from_millis(ms))),
                _ => None,
            }
        });
    }
    let mut leases: Vec<_> = asks.join_all().await.into_iter().flatten().collect();
    leases.sort();
    leases
}

/// Asks the cluster that `target` belongs to to take `req` in, following redirects to the leader
/// and retrying through elections until `patience` runs out. The joining host must already serve
/// its peer routes.
async fn join(
    peers: &PeerClient,
    target: &JoinTarget,
    req: &JoinRequest,
    patience: Duration,
) -> Result<(), JoinError> {
    let deadline = Instant::now() + patience;
    let mut addr = target.addr().to_string();
    let body = postcard::to_stdvec(req).expect("a join request always encodes");
    loop {
        let answer = ask::<Result<(), Refusal>>(peers, &addr, RaftRoute::Join, body.clone(), None);
        let last = match answer.await? {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(Refusal::NotLeader(Some(leader)))) => {
                addr = leader;
                continue;
            }
            Ok(Err(refused)) => refused.to_string(),
            Err(last) => last,
        };
        if Instant::now() >= deadline {
            return Err(JoinError::TimedOut {
                url: addr.clone(),
                secs: patience.as_secs(),
                last,
            });
        }
        tracing::info!(%last, "joining: retrying");
        // A leader we were sent to may have died since; start again where the operator said.
        addr = target.addr().to_string();
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
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
        assert_eq!(restart_lease(None, None, &[]).unwrap(), LEADER_LEASE);
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
        let refused = restart_lease(Some(millis(900)), Some(millis(300)), &up).unwrap_err();
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
        let refused = restart_lease(Some(millis(300)), None, &up).unwrap_err();
        assert!(
            refused.contains("disagree") && refused.contains("b:1: 300 ms, c:1: 900 ms"),
            "{refused}"
        );
    }

    #[test]
    fn a_join_target_names_its_peer_address() {
        let target = |url: &str| JoinTarget {
            url: url.into(),
            token: "t".into(),
        };
        assert_eq!(target("https://a:1/").addr(), "a:1");
        assert_eq!(target("a:1").addr(), "a:1");
    }
}
