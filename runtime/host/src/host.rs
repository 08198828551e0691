//! Starting and stopping a host: data directory, admin token, membership, services, both
//! servers.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use doppel_api::HostInfo;
use doppel_replication::{JoinTarget, Member, MemberConfig};
use doppel_store::{Store, StoreError};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

use crate::admin::{AdminState, router};
use crate::hosts::{self, HostRecord};
use crate::ingress;
use crate::listener::{self, IngressLimits, Tls};
use crate::modules::ModuleCache;
use crate::moves::{self, Mover};
use crate::placement::Placements;
use crate::runtime::Runtime;
use crate::scheduler;
use crate::services::Registry;

/// Everything `doppel host` can be told. Built by the CLI from flags; validated here.
#[derive(Clone, Debug)]
pub struct HostConfig {
    /// This host's name.
    pub name: String,
    /// Where the store, the token and the precompiled modules live.
    pub data_dir: PathBuf,
    /// Service traffic address.
    pub listen: SocketAddr,
    /// Admin API address (TLS).
    pub admin: SocketAddr,
    /// Peer address (mutual TLS): raft, forwarded requests, moves.
    pub peer: SocketAddr,
    /// Limits on client connections.
    pub ingress: IngressLimits,
    /// Largest module upload accepted, in bytes.
    pub max_module_size: usize,
    /// How long in-flight requests may run on after a stop signal.
    pub grace: Duration,
    /// The cluster to join on first start; `None` starts (or reopens) a cluster of its own.
    pub join: Option<JoinTarget>,
    /// The peer address other hosts use to reach this host (default: the bound peer address).
    pub advertise: Option<String>,
    /// Log entries between snapshots (after which the log before them is dropped).
    pub snapshot_every: u64,
    /// How long after a leader falls silent other hosts may elect another (raft's leader lease).
    /// Failover after a leader dies takes about this long; hosts far apart need more. One value
    /// per cluster: `None` takes the cluster's (`doppel_replication::LEADER_LEASE` for a new
    /// one); a value that disagrees with the running members' is refused, and with none running
    /// it becomes the cluster's (`doppel_replication::Member::open`).
    pub leader_lease: Option<Duration>,
    /// Labels placement rules match (`--label provider=ionos`): only for the host that creates a
    /// cluster; a host that joins gets the labels of its invitation, bound into its certificate.
    pub labels: BTreeMap<String, String>,
    /// Labels every host of a cluster this host creates must carry (`--require-label`).
    pub require: BTreeMap<String, String>,
    /// How long the host certificates of a cluster this host creates are valid (`None`: a year).
    /// Hosts renew their own when a third of it is left.
    pub cert_lifetime: Option<Duration>,
    /// Where the operator's encryption key comes from (`None`: it was not given, and the host
    /// refuses to start).
    pub key: Option<crate::sealing::KeySource>,
}

/// What a started host tells whoever started it.
#[derive(Clone, Debug)]
pub struct Started {
    /// Where service traffic is served (the real port when 0 was asked for).
    pub listen: SocketAddr,
    /// Where the admin API is served.
    pub admin: SocketAddr,
    /// Where peers reach this host.
    pub peer: SocketAddr,
    /// The host's name (an invited host's comes from its invitation).
    pub name: String,
    /// The file holding the admin token.
    pub token_file: PathBuf,
    /// Whether the data directory was created by this start.
    pub first_start: bool,
    /// How many services were loaded from the store.
    pub services: usize,
    /// How many hosts the cluster has.
    pub hosts: usize,
    /// Whether this start joined an existing cluster.
    pub joined: bool,
}

/// The file a running host writes into its data directory so that local CLI commands (and tests)
/// find it without flags. Removed on a clean stop.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Endpoint {
    /// The host's name.
    pub name: String,
    /// Service traffic address.
    pub listen: SocketAddr,
    /// Admin API address.
    pub admin: SocketAddr,
    /// Peer address.
    #[serde(default = "unspecified")]
    pub peer: SocketAddr,
    /// The host's process id.
    pub pid: u32,
}

fn unspecified() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 0))
}

/// The token file in a data directory.
pub fn token_path(data_dir: &Path) -> PathBuf {
    data_dir.join("admin-token")
}

/// The endpoint file in a data directory.
pub fn endpoint_path(data_dir: &Path) -> PathBuf {
    data_dir.join("host.json")
}

fn write_endpoint(data_dir: &Path, endpoint: &Endpoint) -> anyhow::Result<()> {
    let path = endpoint_path(data_dir);
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(endpoint)?)?;
    std::fs::rename(&tmp, &path)?;
    Ok(())
}

async fn bind(addr: SocketAddr, flag: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}; is another program using it? Choose another address with {flag}"))
}

/// Locks the data directory `data` for this process (while the file answered stays open):
/// one host per data directory, and no offline change to one a host is running on.
pub fn lock_data_dir(data: &Path) -> anyhow::Result<std::fs::File> {
    let path = data.join("lock");
    let lock =
        std::fs::File::create(&path).with_context(|| format!("cannot open {}", path.display()))?;
    if lock.try_lock().is_err() {
        anyhow::bail!(
            "the data directory {} is in use by a running doppel host",
            data.display()
        );
    }
    Ok(lock)
}

/// Takes group and other permissions off everything below `dir` (symbolic links are left alone:
/// their targets are not ours to change).
fn private_tree(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_symlink() {
            continue;
        }
        let path = entry.path();
        let mode = entry.metadata()?.permissions().mode();
        if mode & 0o077 != 0 {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode & 0o700))?;
        }
        if kind.is_dir() {
            private_tree(&path)?;
        }
    }
    Ok(())
}

/// Runs a host until `shutdown` resolves. `ready` is called once both servers accept connections.
pub async fn run(
    config: HostConfig,
    ready: impl FnOnce(&Started),
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let data = &config.data_dir;
    std::fs::create_dir_all(data)
        .with_context(|| format!("while creating the data directory {}", data.display()))?;
    std::fs::set_permissions(data, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("while restricting {} to its owner", data.display()))?;
    // Everything this process creates from now on is its owner's only (sled, the raft log and
    // the module cache create their files with the default mode), and what an older version
    // left readable is made so.
    // SAFETY: umask only sets the process's file-creation mask; it cannot fail.
    unsafe { libc::umask(0o077) };
    private_tree(data)
        .with_context(|| format!("while restricting {} to its owner", data.display()))?;
    // One host per data directory: the lock is held (by keeping the file open) until we return.
    let lock = lock_data_dir(data)?;
    // Nothing is opened before the key is known to be the data directory's.
    let key_source = config
        .key
        .clone()
        .ok_or(crate::sealing::KeyError::Missing)?;
    let kek = crate::sealing::Kek::load(&key_source)?;
    let kept_key = crate::sealing::ClusterKey::load(data, &kek, &key_source)?;
    if doppel_backup::recover::interrupted(data) {
        anyhow::bail!(
            "a `doppel recover --force-new-cluster` of {} was interrupted; run it again to \
             finish it before starting the host",
            data.display()
        );
    }
    if config.join.is_some() && doppel_backup::restore::pending(data)?.is_some() {
        anyhow::bail!(
            "{} holds a restored backup, which starts a new cluster; start it without --join \
             (other hosts join it afterwards)",
            data.display()
        );
    }
    let member = Member::open(MemberConfig {
        name: config.name.clone(),
        labels: config.labels.clone(),
        require: config.require.clone(),
        data_dir: data.clone(),
        join: config.join.clone(),
        leader_lease: config.leader_lease,
        snapshot_every: config.snapshot_every,
        cert_lifetime: config.cert_lifetime,
    })
    .await?;
    let member = Arc::new(member);
    let store = member.store().clone();
    let first_start = member.first_start();
    // The host that creates a cluster makes its key (kept before anything is written under it);
    // a joining host asks a member for it once it is one.
    let creates = first_start && config.join.is_none();
    let kept_key = match kept_key {
        None if creates => {
            let key = crate::sealing::ClusterKey::generate();
            key.save(data, &kek)?;
            Some(key)
        }
        kept => kept,
    };
    let me = member.identity().clone();
    if me.name != config.name {
        tracing::info!(name = %me.name, "this host's certificate names it; --name is not used");
    }
    if !member.first_start() && !config.labels.is_empty() && config.labels != me.labels {
        tracing::warn!(certificate = ?me.labels, flags = ?config.labels, "a host's labels are those its certificate carries; --label is ignored");
    }

    let ingress_listener = bind(config.listen, "--listen").await?;
    let admin_listener = bind(config.admin, "--admin").await?;
    let peer_listener = bind(config.peer, "--peer").await?;
    let listen = ingress_listener.local_addr()?;
    let admin_addr = admin_listener.local_addr()?;
    let peer_addr = peer_listener.local_addr()?;
    let advertise = config
        .advertise
        .clone()
        .unwrap_or_else(|| peer_addr.to_string());
    let admin_tls = member.credentials().admin_server()?;
    let peer_tls = member.credentials().peer_server()?;

    let runtime = Runtime::new()?;
    let _ = runtime
        .own_listeners
        .set(Arc::new(vec![listen, admin_addr, peer_addr]));
    let cache = ModuleCache::new(&data.join("cache"), &runtime.engine)
        .with_context(|| format!("while creating the module cache in {}", data.display()))?;
    let placements = Arc::new(Placements::new(
        member.id(),
        store.clone() as Arc<dyn Store>,
    ));
    // A standby twin, or a primary a promoted twin superseded, takes no writes of services'
    // state: services and deploys write through the guard.
    let (mode, following_mode) = crate::mode::follow(store.clone());
    let guarded: Arc<dyn Store> = Arc::new(crate::mode::GuardedStore::new(
        store.clone() as Arc<dyn Store>,
        mode.clone(),
    ));
    // Services' keys and values are sealed under their own data keys before they reach raft.
    let sealed = Arc::new(crate::sealing::SealedStore::new(guarded));
    if let Some(key) = kept_key {
        sealed.set_cluster_key(Arc::new(key));
    }
    let guarded: Arc<dyn Store> = sealed.clone();
    let registry =
        Arc::new(Registry::new(runtime, guarded, cache, placements.clone()).with_mode(mode));
    // Watching the keyring from before anything is read through it: no destroyed data key is
    // remembered past the entry that destroyed it.
    let erasing = crate::sealing::erasure::follow(store.clone(), sealed.clone(), registry.clone());
    let info = Arc::new(HostInfo {
        name: me.name.clone(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        listen: listen.to_string(),
        admin: admin_addr.to_string(),
        data_dir: data.display().to_string(),
        // Filled in per request from the registry.
        services: 0,
    });
    let mover = Mover {
        member: member.clone(),
        registry: registry.clone(),
        liveness: member.liveness(),
    };
    let carry: doppel_backup::ship::KeyToCarry = {
        let sealed = sealed.clone();
        Arc::new(move || {
            sealed
                .cluster_key()
                .map(|k| zeroize::Zeroizing::new(k.expose().to_vec()))
        })
    };
    let (shipper, shipping) = doppel_backup::ship::Shipper::spawn(store.clone(), carry);
    let (follower, following) = doppel_backup::twin::Follower::spawn(store.clone(), sealed.clone());
    let admin_state = AdminState {
        metrics: crate::metrics::Sources {
            registry: registry.clone(),
            member: member.clone(),
            shipper: shipper.clone(),
            data_dir: config.data_dir.clone(),
        },
        shipper: shipper.clone(),
        follower,
        mover: mover.clone(),
        registry: registry.clone(),
        audit: crate::admin::audit::Audit::new(store.clone(), &me.name),
        sealed: sealed.clone(),
        max_module_size: config.max_module_size,
        info,
        member: member.clone(),
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    // Peers must reach this host (votes, log entries, a joining host's catch-up) before it is
    // ready, so the peer server starts first. Both it and the admin server have the same
    // connection limits and header timeout as the service listener.
    let audit = admin_state.audit.clone();
    // Refused peers (a bad certificate, a non-member), counted and summarised at both ends of
    // the peer listener, go to the audit trail.
    let (refusals, mut refused) = tokio::sync::mpsc::channel::<String>(16);
    let auditing = tokio::spawn(async move {
        while let Some(summary) = refused.recv().await {
            audit.peers_refused(summary);
        }
    });
    let peer_routes = member.peer_router(
        moves::host_routes(mover.clone())
            .merge(ingress::peer_routes(
                registry.clone(),
                member.peers().clone(),
            ))
            .merge(crate::admin::audit::peer_routes(admin_state.audit.clone()))
            .merge(crate::admin::backups::peer_routes(shipper))
            .merge(crate::sealing::handover::peer_routes(sealed.clone())),
        refusals.clone(),
    );
    let peers = tokio::spawn({
        let (limits, stopped, grace) = (
            // Peers are the cluster's own hosts, authenticated, with pools of connections to
            // each other: no per-address cap between them.
            // Their raft appends stream through long-lived connections: hyper's own read-ahead.
            IngressLimits {
                max_per_client: usize::MAX,
                read_ahead: None,
                ..config.ingress.clone()
            },
            stopped(stop_rx.clone()),
            config.grace,
        );
        let service = hyper_util::service::TowerToHyperService::new(peer_routes);
        let tls = Tls::Peers(
            peer_tls,
            Arc::new(std::sync::Mutex::new(doppel_replication::RefusalLog::new(
                refusals,
            ))),
        );
        async move {
            listener::serve("peer", peer_listener, &limits, tls, service, stopped, grace).await;
        }
    });
    let admin = tokio::spawn({
        let (limits, stopped, grace) = (
            config.ingress.clone(),
            stopped(stop_rx.clone()),
            config.grace,
        );
        let service = hyper_util::service::TowerToHyperService::new(router(admin_state));
        let tls = Tls::Server(admin_tls);
        async move {
            listener::serve(
                "admin",
                admin_listener,
                &limits,
                tls,
                service,
                stopped,
                grace,
            )
            .await;
        }
    });
    let joined = member
        .enter(&advertise)
        .await
        .context("while becoming a member of the cluster")?;
    take_over_restore(data, &member).await?;
    if sealed.cluster_key().is_none() {
        let key = crate::sealing::handover::fetch(&member)
            .await
            .context("while getting the cluster key from a member")?;
        key.save(data, &kek)?;
        sealed.set_cluster_key(Arc::new(key));
    }
    check_key_when_available(&sealed).await?;
    let services = load_when_available(&registry, &member).await?;
    member
        .advertise(&advertise)
        .await
        .context("while recording this host's new address in the cluster")?;
    hosts::register(
        store.as_ref(),
        &HostRecord {
            id: member.id(),
            name: me.name.clone(),
            admin: admin_addr.to_string(),
            peer: advertise.clone(),
            listen: listen.to_string(),
            labels: me.labels.clone(),
            removed: false,
        },
    )
    .await
    .context("while registering this host in the cluster")?;
    // The local CLI's credential: `admin` on the host that created the cluster.
    let local_name = if first_start && !joined {
        "admin".to_string()
    } else {
        format!("admin-{}", me.name)
    };
    crate::admin::tokens::ensure_local(&store, &token_path(data), &local_name).await?;
    let syncing = tokio::spawn(follow_deploys(registry.clone(), store.system_changes()));
    let scheduling = tokio::spawn(scheduler::run(mover));

    let ingress = tokio::spawn(ingress::serve(
        ingress_listener,
        registry.clone(),
        member.peers().clone(),
        config.ingress.clone(),
        stopped(stop_rx),
        config.grace,
    ));
    let hosts = store.member_count();
    let started = Started {
        listen,
        admin: admin_addr,
        peer: peer_addr,
        name: me.name.clone(),
        token_file: token_path(data),
        first_start,
        services,
        hosts,
        joined,
    };
    write_endpoint(
        data,
        &Endpoint {
            name: me.name.clone(),
            listen,
            admin: admin_addr,
            peer: peer_addr,
            pid: std::process::id(),
        },
    )?;
    tracing::info!(name = %me.name, id = member.id(), %listen, admin = %admin_addr, peer = %peer_addr, services, hosts, "host ready");
    ready(&started);

    shutdown.await;
    tracing::info!("stopping: no new connections; letting requests in flight finish");
    let _ = stop_tx.send(true);
    let _ = ingress.await;
    syncing.abort();
    erasing.abort();
    shipping.abort();
    following.abort();
    following_mode.abort();
    auditing.abort();
    scheduling.abort();
    let _ = tokio::time::timeout(config.grace, admin).await;
    let _ = tokio::time::timeout(config.grace, peers).await;
    let _ = std::fs::remove_file(endpoint_path(data));
    drop(registry);
    member.shutdown().await.context("while stopping")?;
    tracing::info!("stopped cleanly");
    drop(lock);
    Ok(())
}

/// Takes over the state a `doppel restore` left in the data directory, if one is waiting: its
/// services' records, modules, buckets and audit trail are written into this new cluster
/// before the services load.
async fn take_over_restore(data: &Path, member: &Member) -> anyhow::Result<()> {
    let Some(pending) = doppel_backup::restore::pending(data)? else {
        return Ok(());
    };
    tracing::info!(from = %pending.url, index = pending.index, services = pending.services.len(), "taking over a restored backup");
    let store = member.store().clone() as Arc<dyn Store>;
    doppel_backup::restore::seed(data, store.as_ref(), &mut doppel_backup::restore::Quiet)
        .await
        .context("while taking over the restored backup (starting again takes it over again)")?;
    tracing::info!(index = pending.index, hash = %pending.hash, "restored backup taken over");
    Ok(())
}

/// Checks this host's key against the cluster's once the store can answer linearizably.
async fn check_key_when_available(sealed: &crate::sealing::SealedStore) -> anyhow::Result<()> {
    loop {
        match sealed.check_cluster_key().await {
            Ok(()) => return Ok(()),
            Err(doppel_store::StoreError::Unavailable(why)) => {
                tracing::warn!(error = %why, "waiting for a majority of the cluster to check the encryption key");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => {
                return Err(anyhow::Error::new(e)
                    .context("while checking this host's encryption key against the cluster's"));
            }
        }
    }
}

/// Loads the deployed services once the store can answer linearizably, which needs a majority
/// of the cluster; a host restarting while most of its cluster is down waits for it.
async fn load_when_available(registry: &Registry, member: &Member) -> anyhow::Result<usize> {
    loop {
        let alone = member.store().member_count() == 1;
        match registry.load_all(alone).await {
            Ok(count) => return Ok(count),
            Err(e) if is_unavailable(&e) => {
                tracing::warn!(error = %e, "waiting for a majority of the cluster to load the services");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(e.context("while loading deployed services")),
        }
    }
}

fn is_unavailable(e: &anyhow::Error) -> bool {
    matches!(
        e.downcast_ref::<StoreError>(),
        Some(StoreError::Unavailable(_))
    )
}

/// Keeps the running services in line with deploys and removals made through other hosts.
async fn follow_deploys(registry: Arc<Registry>, mut changes: tokio::sync::watch::Receiver<u64>) {
    while changes.changed().await.is_ok() {
        // Several changes may arrive in a burst; one sync sees them all.
        changes.mark_unchanged();
        if let Err(e) = registry.sync().await {
            tracing::warn!(error = %e, "cannot bring services in line with the store; retrying");
            tokio::time::sleep(Duration::from_millis(500)).await;
            changes.mark_changed();
        }
    }
}
