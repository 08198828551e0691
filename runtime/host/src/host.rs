//! Starting and stopping a host: data directory, admin token, store, services, both servers.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::serve::ListenerExt as _;
use doppel_api::HostInfo;
use doppel_replication::ReplicatedStore;
use doppel_store::{Store, StoreError};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

use crate::admin::{AdminState, router};
use crate::cluster::{self, HostRecord, JoinTarget};
use crate::failover;
use crate::ingress::{self, IngressLimits};
use crate::modules::ModuleCache;
use crate::moves::{self, Mover};
use crate::placement::Placements;
use crate::runtime::Runtime;
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
    /// Admin API address.
    pub admin: SocketAddr,
    /// Limits on client connections.
    pub ingress: IngressLimits,
    /// Largest module upload accepted, in bytes.
    pub max_module_size: usize,
    /// How long in-flight requests may run on after a stop signal.
    pub grace: Duration,
    /// The cluster to join on first start; `None` starts (or reopens) a cluster of its own.
    pub join: Option<JoinTarget>,
    /// The admin address peers use to reach this host (default: the bound admin address).
    pub advertise: Option<String>,
    /// Log entries between snapshots (after which the log before them is dropped).
    pub snapshot_every: u64,
    /// How long after a leader falls silent other hosts may elect another (raft's leader lease).
    /// Failover after a leader dies takes about this long; hosts far apart need more. One value
    /// per cluster: `None` takes the cluster's (`doppel_replication::LEADER_LEASE` for a new
    /// one); a value that disagrees with the running members' is refused, and with none running
    /// it becomes the cluster's (`cluster::settle_lease`).
    pub leader_lease: Option<Duration>,
    /// Labels placement rules match (`--label provider=ionos`).
    pub labels: BTreeMap<String, String>,
}

/// What a started host tells whoever started it.
#[derive(Clone, Debug)]
pub struct Started {
    /// Where service traffic is served (the real port when 0 was asked for).
    pub listen: SocketAddr,
    /// Where the admin API is served.
    pub admin: SocketAddr,
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
    /// The host's process id.
    pub pid: u32,
}

/// The token file in a data directory.
pub fn token_path(data_dir: &Path) -> PathBuf {
    data_dir.join("admin-token")
}

/// The endpoint file in a data directory.
pub fn endpoint_path(data_dir: &Path) -> PathBuf {
    data_dir.join("host.json")
}

/// Reads the admin token, creating one (owner-only) on first start.
fn admin_token(data_dir: &Path) -> anyhow::Result<String> {
    let path = token_path(data_dir);
    match std::fs::read_to_string(&path) {
        Ok(token) => {
            let mode = std::fs::metadata(&path)?.permissions().mode();
            if mode & 0o077 != 0 {
                tracing::warn!(path = %path.display(), "the admin token file is readable by others; run `chmod 600` on it");
            }
            Ok(token.trim().to_string())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut raw = [0u8; 32];
            getrandom::fill(&mut raw)
                .map_err(|e| anyhow::anyhow!("no randomness for the admin token: {e}"))?;
            let token = hex::encode(raw);
            write_private(&path, token.as_bytes())?;
            Ok(token)
        }
        Err(e) => Err(e).with_context(|| format!("while reading {}", path.display())),
    }
}

/// Creates `path` (which must not exist) readable by the owner only, with `bytes`, synced.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("while creating {}", path.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(())
}

/// Writes `bytes` to `path`, owner-only, in place of whatever was there: a new file, synced, then
/// renamed over the old one, so that a crash leaves the old or the new one whole.
pub(crate) fn replace_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    // Left by a crash between writing and renaming: the file it was to replace is still whole.
    let _ = std::fs::remove_file(&tmp);
    write_private(&tmp, bytes)?;
    std::fs::rename(&tmp, path).with_context(|| format!("while replacing {}", path.display()))?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
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
    // One host per data directory: the lock is held (by keeping the file open) until we return.
    let lock = std::fs::File::create(data.join("lock"))?;
    if lock.try_lock().is_err() {
        anyhow::bail!(
            "the data directory {} is in use by another doppel host",
            data.display()
        );
    }
    let token = admin_token(data)?;
    let (mut identity, first_start) = match cluster::read_identity(data)? {
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
                std::fs::remove_dir_all(&raft_dir).with_context(|| {
                    format!(
                        "while clearing an unfinished first start in {}",
                        raft_dir.display()
                    )
                })?;
            }
            (cluster::new_identity(config.join.as_ref())?, true)
        }
    };
    let storage = cluster::open(data)?;
    let running = cluster::running_leases(&storage, &identity).await;
    let kept_lease = identity.lease_ms;
    let lease = cluster::settle_lease(
        &mut identity,
        first_start,
        config.join.as_ref(),
        config.leader_lease,
        &running,
    )
    .await?;
    if !first_start && identity.lease_ms != kept_lease {
        cluster::save_identity(data, &identity)?;
    }
    let store = cluster::start(storage, &identity, config.snapshot_every, lease).await?;

    let ingress_listener = bind(config.listen, "--listen").await?;
    let admin_listener = bind(config.admin, "--admin").await?;
    let listen = ingress_listener.local_addr()?;
    let admin_addr = admin_listener.local_addr()?;
    let advertise = config
        .advertise
        .clone()
        .unwrap_or_else(|| admin_addr.to_string());

    let runtime = Runtime::new()?;
    let cache = ModuleCache::new(&data.join("cache"), &runtime.engine)
        .with_context(|| format!("while creating the module cache in {}", data.display()))?;
    let placements = Arc::new(Placements::new(identity.id));
    let registry = Arc::new(Registry::new(
        runtime,
        store.clone() as Arc<dyn Store>,
        cache,
        placements.clone(),
    ));
    let info = Arc::new(HostInfo {
        name: config.name.clone(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        listen: listen.to_string(),
        admin: admin_addr.to_string(),
        data_dir: data.display().to_string(),
        // Filled in per request from the registry.
        services: 0,
    });
    let mover = Mover {
        store: store.clone(),
        registry: registry.clone(),
        secret: identity.secret.as_str().into(),
        http: reqwest::Client::new(),
    };
    let admin_state = AdminState {
        mover: mover.clone(),
        registry: registry.clone(),
        token: token.into(),
        max_module_size: config.max_module_size,
        info,
        cluster: store.clone(),
        identity: identity.clone(),
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    // Peers must reach this host (votes, log entries, a joining host's catch-up) before it is
    // ready, so the admin server, which also serves the peer routes, starts first.
    let admin = tokio::spawn(
        axum::serve(
            // Raft messages are small and answered at once: send each without waiting to fill
            // a segment.
            admin_listener.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            }),
            router(admin_state)
                .merge(doppel_replication::router(
                    store.raft().clone(),
                    store.log().clone(),
                    &identity.secret,
                ))
                .merge(moves::peer_router(mover.clone())),
        )
        .with_graceful_shutdown(stopped(stop_rx.clone()))
        .into_future(),
    );
    let joined = match (&config.join, first_start) {
        (Some(target), true) => {
            tracing::info!(url = %target.url, "joining the cluster");
            cluster::join(target, identity.id, &advertise).await?;
            true
        }
        (None, true) => {
            cluster::create(&store, identity.id, &advertise).await?;
            false
        }
        _ => false,
    };
    if first_start {
        cluster::save_identity(data, &identity)?;
    }
    let services = load_when_available(&registry, &store).await?;
    if store.address_of(identity.id).as_deref() != Some(advertise.as_str()) {
        tracing::info!(%advertise, "this host's address changed; telling the cluster");
        store
            .set_address(identity.id, &advertise)
            .await
            .context("while recording this host's new address in the cluster")?;
    }
    cluster::register(
        store.as_ref(),
        &HostRecord {
            id: identity.id,
            name: config.name.clone(),
            admin: advertise.clone(),
            listen: listen.to_string(),
            labels: config.labels.clone(),
            removed: false,
        },
    )
    .await
    .context("while registering this host in the cluster")?;
    let syncing = tokio::spawn(follow_deploys(
        registry.clone(),
        store.state().system_changes(),
    ));
    let failing_over = tokio::spawn(failover::run(mover));

    let ingress = tokio::spawn(ingress::serve(
        ingress_listener,
        registry.clone(),
        config.ingress.clone(),
        stopped(stop_rx),
        config.grace,
    ));
    let hosts = store.member_count();
    let started = Started {
        listen,
        admin: admin_addr,
        token_file: token_path(data),
        first_start,
        services,
        hosts,
        joined,
    };
    write_endpoint(
        data,
        &Endpoint {
            name: config.name.clone(),
            listen,
            admin: admin_addr,
            pid: std::process::id(),
        },
    )?;
    tracing::info!(name = %config.name, id = identity.id, %listen, admin = %admin_addr, services, hosts, "host ready");
    ready(&started);

    shutdown.await;
    tracing::info!("stopping: no new connections; letting requests in flight finish");
    let _ = stop_tx.send(true);
    let _ = ingress.await;
    syncing.abort();
    failing_over.abort();
    let _ = tokio::time::timeout(config.grace, admin).await;
    let _ = std::fs::remove_file(endpoint_path(data));
    drop(registry);
    store
        .raft()
        .shutdown()
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))
        .context("while stopping the consensus node")?;
    let state = store.state().clone();
    tokio::task::spawn_blocking(move || state.engine().checkpoint())
        .await
        .context("while closing the store")?
        .context("while closing the store")?;
    tracing::info!("stopped cleanly");
    drop(lock);
    Ok(())
}

/// Loads the deployed services once the store can answer linearizably, which needs a majority
/// of the cluster; a host restarting while most of its cluster is down waits for it.
async fn load_when_available(
    registry: &Registry,
    store: &ReplicatedStore,
) -> anyhow::Result<usize> {
    loop {
        let alone = store.member_count() == 1;
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
