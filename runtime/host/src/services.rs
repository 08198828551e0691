//! The services a host runs: their records in the store, and the loaded, pre-instantiated
//! component of each.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use doppel_api::{DeployRequest, Limits, ModuleInfo, PlacementRules, ServiceInfo};
use doppel_store::{Command, Op, Outcome, Space, Store, StoreError};
use serde::{Deserialize, Serialize};
use wasmtime_wasi_config::WasiConfigVariables;
use wasmtime_wasi_http::p2::bindings::ProxyPre;

use crate::clock::now_ms;
use crate::logs::ServiceLog;
use crate::modules::{self, ModuleCache, ModuleError};
use crate::placement::{Change, Placement, Placements};
use crate::runtime::{MAX_MEMORY_LIMIT, Runtime};
use crate::schedule;
use crate::signatures::{self, SignatureError};
use crate::state::RequestState;

/// A deployed service as the store keeps it (JSON under `services/NAME`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceRecord {
    /// The name; also the URL prefix.
    pub name: String,
    /// Digest of its module.
    pub module: String,
    /// Module size in bytes.
    pub size: u64,
    /// Deploy count of this name.
    pub version: u64,
    /// Deploy time, ms since the Unix epoch.
    pub deployed_at_ms: u64,
    /// Values for `wasi:config` and the environment. Never written in the record: they are kept
    /// sealed in the service's own [`SETTINGS_BUCKET`] (a record of an older host may carry them).
    #[serde(default, skip_serializing)]
    pub config: BTreeMap<String, String>,
    /// Values for `wasi:config` only, never shown or logged; kept like `config`.
    #[serde(default, skip_serializing)]
    pub secrets: doppel_api::Secrets,
    /// The names of `config`, which the record keeps (`doppel ls` shows them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub config_names: Vec<String>,
    /// The names of `secrets` (never their values).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secret_names: Vec<String>,
    /// Limits in force.
    pub limits: Limits,
    /// Where it may be active, and on how many hosts at once.
    #[serde(default)]
    pub placement: PlacementRules,
    /// The path a restore drill calls, when not `/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe: Option<String>,
    /// The trusted keys whose signature over the module verified at deploy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub signed_by: Vec<String>,
    /// The release version the signed module carries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<String>,
    /// Whether this name's modules must be signed, whatever the cluster requires.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub require_signatures: bool,
    /// The servers it may call (`doppel deploy --allow-outbound`), as given.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_outbound: Vec<String>,
}

/// The bucket of a service's own space that holds its config and secrets, one entry per
/// version. Guests and operators' `doppel kv` cannot open it (the `doppel:` names are the
/// host's).
pub const SETTINGS_BUCKET: &str = "doppel:settings";

/// A version's config and secrets, as kept in [`SETTINGS_BUCKET`].
#[derive(Serialize, Deserialize)]
struct Settings {
    config: BTreeMap<String, String>,
    secrets: doppel_api::Secrets,
}

/// Counters of one service name on this host.
#[derive(Default)]
pub struct Stats {
    /// Requests answered.
    pub requests: AtomicU64,
    /// Requests that failed in the guest or the host.
    pub errors: AtomicU64,
    /// Requests this host sent on to an active host.
    pub forwarded: AtomicU64,
    /// Requests running in a guest here now.
    pub in_flight: AtomicU64,
    /// Answers this host gave, by status class (1xx … 5xx), forwarded ones included.
    pub classes: [AtomicU64; 5],
    /// Time from a request's arrival to its answer's head, forwarded ones included.
    pub latency: crate::latency::Latency,
}

impl Stats {
    /// Counts one answer with `status`, given `elapsed` after the request arrived.
    pub fn answered(&self, status: http::StatusCode, elapsed: std::time::Duration) {
        let class = usize::from(status.as_u16() / 100).clamp(1, 5) - 1;
        self.classes[class].fetch_add(1, Ordering::Relaxed);
        self.latency.observe(elapsed);
    }
}

/// A service ready to serve: one pre-instantiated component; a fresh instance per request.
pub struct Service {
    /// What was deployed.
    pub record: ServiceRecord,
    /// The component, linked and type-checked, ready to instantiate.
    pub pre: ProxyPre<RequestState>,
    /// Its config, shared by every request.
    pub config: Arc<WasiConfigVariables>,
    /// Its config again, as environment variables.
    pub env: Vec<(String, String)>,
    /// Its limits, shared with the keyvalue context.
    pub limits: Arc<Limits>,
    /// Its name, shared with the keyvalue context.
    pub name: Arc<str>,
    /// Counters.
    pub stats: Arc<Stats>,
    /// Log.
    pub log: Arc<ServiceLog>,
    /// Its share of this host's instances.
    pub slots: crate::admission::Slots,
    /// Its `doppel:local` bucket: this host's memory only, gone with this version.
    pub local: Arc<crate::keyvalue::LocalBucket>,
    /// The servers it may call.
    pub outbound: Arc<Vec<doppel_api::outbound::OutboundRule>>,
}

/// What a deploy did.
pub struct Deployed {
    /// The service as deployed.
    pub info: ServiceInfo,
    /// What the audit trail says when an older release replaced a newer one (`--allow-older`).
    pub rollback: Option<String>,
}

/// Why a deploy or removal was refused.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// The name cannot be a service name (why, from `doppel_api::check_service_name`).
    #[error("{0}")]
    BadName(String),
    /// The module is not in the store.
    #[error(
        "no module {0} has been uploaded; upload it first (`doppel deploy FILE.wasm` does both)"
    )]
    NoModule(String),
    /// No such service.
    #[error("no service named {0:?} is deployed")]
    NoService(String),
    /// The module is unusable.
    #[error(transparent)]
    Module(#[from] ModuleError),
    /// A limit or a placement rule is out of range.
    #[error("{0}")]
    BadLimit(String),
    /// The module digest is malformed (why, from `doppel_api::check_module_digest`).
    #[error("{0}")]
    BadDigest(String),
    /// Another deploy of the same name won a race with this one.
    #[error(
        "another deploy of {0:?} (through another host) happened while this one was loading; nothing was changed by this one — retry to deploy over it"
    )]
    Conflict(String),
    /// The module's signature, or the lack of one, is refused.
    #[error(transparent)]
    Signature(#[from] SignatureError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Anything else (a full disk for the cache, a panicked compile thread).
    #[error("{0:#}")]
    Internal(anyhow::Error),
}

/// What an operator watches of one service name: its log and its counters.
type Observed = (Arc<ServiceLog>, Arc<Stats>);

const SERVICES: &str = "services";

/// Every service on this host.
pub struct Registry {
    runtime: Arc<Runtime>,
    store: Arc<dyn Store>,
    cache: ModuleCache,
    services: RwLock<HashMap<String, Arc<Service>>>,
    /// Per name, not per version: they outlive redeploys and removals.
    observed: Mutex<HashMap<String, Observed>>,
    /// What all services' `doppel:local` buckets hold together.
    local_bytes: crate::keyvalue::HostLocalBytes,
    /// Deploys and removals one at a time, so that version numbers and module clean-up never race.
    changes: tokio::sync::Mutex<()>,
    /// Where each service is active.
    placements: Arc<Placements>,
    /// Names recently found not deployed, and when: a burst of requests for a name that does
    /// not exist asks the store once, not once each.
    absent: Mutex<HashMap<String, std::time::Instant>>,
    /// Whether the cluster takes writes (a standby twin does not).
    mode: tokio::sync::watch::Receiver<crate::mode::Mode>,
}

/// How long a name found not deployed is taken as not deployed without asking the store again.
const ABSENT_FOR: std::time::Duration = std::time::Duration::from_millis(250);

impl Registry {
    /// A registry over `store`, with precompiled modules under `cache`.
    pub fn new(
        runtime: Arc<Runtime>,
        store: Arc<dyn Store>,
        cache: ModuleCache,
        placements: Arc<Placements>,
    ) -> Self {
        Registry {
            runtime,
            store,
            cache,
            services: RwLock::new(HashMap::new()),
            observed: Mutex::new(HashMap::new()),
            local_bytes: Default::default(),
            changes: tokio::sync::Mutex::new(()),
            placements,
            absent: Mutex::new(HashMap::new()),
            mode: tokio::sync::watch::channel(crate::mode::Mode::default()).1,
        }
    }

    /// The same registry, following the cluster's `mode`.
    pub(crate) fn with_mode(
        mut self,
        mode: tokio::sync::watch::Receiver<crate::mode::Mode>,
    ) -> Self {
        self.mode = mode;
        self
    }

    /// Whether this host refuses writes of services' state now (see `crate::mode`).
    pub(crate) fn writes_refused(&self) -> bool {
        self.mode.borrow().refusal.is_some()
    }

    /// On a standby twin: how stale its state may be (ms).
    pub(crate) fn twin_lag_ms(&self) -> Option<u64> {
        let as_of = self.mode.borrow().current_as_of?;
        Some(crate::clock::now_ms().saturating_sub(as_of))
    }

    /// Where each service is active.
    pub fn placements(&self) -> &Arc<Placements> {
        &self.placements
    }

    /// The store services keep their state in.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The runtime.
    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    /// The running service called `name`.
    pub fn get(&self, name: &str) -> Option<Arc<Service>> {
        self.services
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }

    /// The service `name` when it is deployed but this host has not loaded it yet (a deploy
    /// through another host a moment ago): asks the store (linearizably, so a deploy that was
    /// acknowledged is seen) and loads it. `None` when it is not deployed.
    pub async fn load_if_deployed(&self, name: &str) -> Option<Arc<Service>> {
        doppel_api::check_service_name(name).ok()?;
        {
            let mut absent = self.absent.lock().unwrap_or_else(|e| e.into_inner());
            let now = std::time::Instant::now();
            if absent
                .get(name)
                .is_some_and(|t| now.duration_since(*t) < ABSENT_FOR)
            {
                return None;
            }
            if absent.len() > 1024 {
                absent.retain(|_, t| now.duration_since(*t) < ABSENT_FOR);
            }
        }
        let deployed = self
            .store
            .get(&Space::system(SERVICES), name.as_bytes())
            .await
            .ok()
            .flatten()
            .is_some();
        if !deployed {
            self.absent
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(name.to_string(), std::time::Instant::now());
            return None;
        }
        if let Err(e) = self.sync().await {
            tracing::warn!(service = name, error = %e, "cannot load a service deployed elsewhere");
        }
        self.get(name)
    }

    /// How many services run.
    pub fn count(&self) -> usize {
        self.services
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    /// Forgets what `name`'s log holds on this host: its data was erased, and guests' lines may
    /// have carried some of it.
    pub fn forget_log(&self, name: &str) {
        let observed = self.observed.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((log, _)) = observed.get(name) {
            log.clear();
        }
    }

    /// The counters of every service name this host has loaded, by name.
    pub fn all_stats(&self) -> Vec<(String, Arc<Stats>)> {
        let observed = self.observed.lock().unwrap_or_else(|e| e.into_inner());
        let mut all: Vec<(String, Arc<Stats>)> = observed
            .iter()
            .map(|(name, (_, stats))| (name.clone(), stats.clone()))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    pub fn log_and_stats(&self, name: &str) -> (Arc<ServiceLog>, Arc<Stats>) {
        self.observed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(name.to_string())
            .or_default()
            .clone()
    }

    /// Loads every deployed service from the store, from precompiled copies where sound. With
    /// `collect_orphans` (only safe when no other host can be between an upload and its deploy,
    /// i.e. in a one-member cluster), modules no service uses are deleted first.
    pub async fn load_all(&self, collect_orphans: bool) -> anyhow::Result<usize> {
        let records = self.records().await?;
        let count = records.len();
        if collect_orphans {
            self.drop_orphan_modules(&records).await?;
        }
        for record in records {
            let name = record.name.clone();
            match self.load(record).await {
                Ok(service) => {
                    self.insert(service);
                }
                Err(e) => {
                    // One broken service must not keep the others down.
                    tracing::error!(service = %name, error = %e, "cannot load service; it will answer 503 until redeployed");
                    self.log_and_stats(&name)
                        .0
                        .host(format!("cannot load at start: {e}"));
                }
            }
        }
        self.placements.refresh().await?;
        Ok(count)
    }

    /// Brings the running services in line with the store after another host deployed, redeployed
    /// or removed one: new versions are loaded (compiled once, then from the precompiled cache)
    /// before they replace the old, and removed services stop being served.
    pub async fn sync(&self) -> Result<(), StoreError> {
        let _guard = self.changes.lock().await;
        let records = self.records().await?;
        for record in &records {
            let current = self.get(&record.name);
            let same = current.is_some_and(|s| {
                s.record.version == record.version
                    && s.record.module == record.module
                    && s.record.deployed_at_ms == record.deployed_at_ms
            });
            if same {
                continue;
            }
            let name = record.name.clone();
            match self.load(record.clone()).await {
                Ok(service) => {
                    service.log.host(format!(
                        "version {} ({}) deployed through another host",
                        record.version, record.module
                    ));
                    tracing::info!(service = %name, version = record.version, "loaded a deploy made through another host");
                    self.insert(service);
                }
                Err(e) => {
                    tracing::error!(service = %name, error = %e, "cannot load a deploy made through another host");
                    self.log_and_stats(&name)
                        .0
                        .host(format!("cannot load version {}: {e}", record.version));
                }
            }
        }
        {
            let mut services = self.services.write().unwrap_or_else(|e| e.into_inner());
            let gone: Vec<String> = services
                .keys()
                .filter(|name| !records.iter().any(|r| &r.name == *name))
                .cloned()
                .collect();
            for name in gone {
                services.remove(&name);
                tracing::info!(service = %name, "removed through another host");
                self.log_and_stats(&name)
                    .0
                    .host("removed through another host");
            }
        }
        let before = self.placements.all();
        self.placements.refresh().await?;
        self.note_placement_changes(&before);
        Ok(())
    }

    /// Writes a line in each moved service's log: where it is active now, and why.
    fn note_placement_changes(&self, before: &HashMap<String, Placement>) {
        for (name, now) in self.placements.all() {
            if before.get(&name).is_some_and(|b| b.epoch == now.epoch) {
                continue;
            }
            let hosts: Vec<String> = now
                .active
                .iter()
                .map(|id| self.placements.host_name(*id))
                .collect();
            self.log_and_stats(&name).0.host(format!(
                "active on {} from epoch {} ({})",
                hosts.join(", "),
                now.epoch,
                now.cause
            ));
        }
    }

    /// Removes modules no service uses: uploads whose deploy never came (the client died between
    /// the two calls). Runs before the admin API opens, so no upload can be in flight.
    async fn drop_orphan_modules(&self, records: &[ServiceRecord]) -> Result<(), StoreError> {
        let space = Space::modules();
        let mut orphans = Vec::new();
        let mut after: Option<Vec<u8>> = None;
        loop {
            let keys = self.store.list_keys(&space, after.as_deref(), 1000).await?;
            for key in &keys {
                if !records
                    .iter()
                    .any(|r| crate::module_store::belongs_to(key, &r.module))
                {
                    orphans.push(key.clone());
                }
            }
            match keys.last() {
                Some(last) if keys.len() == 1000 => after = Some(last.clone()),
                _ => break,
            }
        }
        for key in orphans {
            let digest = String::from_utf8_lossy(&key).into_owned();
            tracing::info!(module = %digest, "removing a module no service uses");
            self.store
                .apply(Command::new(Op::Delete {
                    space: space.clone(),
                    key,
                }))
                .await?;
            self.cache.remove(&digest);
        }
        Ok(())
    }

    async fn records(&self) -> Result<Vec<ServiceRecord>, StoreError> {
        let space = Space::system(SERVICES);
        let mut records = Vec::new();
        let mut after: Option<Vec<u8>> = None;
        loop {
            let keys = self.store.list_keys(&space, after.as_deref(), 1000).await?;
            for key in &keys {
                if let Some(bytes) = self.store.get(&space, key).await? {
                    let record = serde_json::from_slice(&bytes).map_err(|e| {
                        StoreError::Corrupt(format!(
                            "service record {}: {e}",
                            String::from_utf8_lossy(key)
                        ))
                    })?;
                    records.push(record);
                }
            }
            match keys.last() {
                Some(last) if keys.len() == 1000 => after = Some(last.clone()),
                _ => break,
            }
        }
        Ok(records)
    }

    /// Builds a running service from its record: precompiled copy if sound, else compile.
    async fn load(&self, mut record: ServiceRecord) -> Result<Service, DeployError> {
        self.read_settings(&mut record).await?;
        let runtime = self.runtime.clone();
        let digest = record.module.clone();
        let checked = match self.cache.load(&runtime.engine, &digest) {
            Some(component) => {
                tokio::task::spawn_blocking(move || modules::link(&runtime, component))
                    .await
                    .map_err(|e| DeployError::Internal(e.into()))??
            }
            None => {
                tracing::info!(service = %record.name, module = %digest, "compiling (no sound precompiled copy for this engine)");
                let bytes = crate::module_store::get(&self.store, &digest)
                    .await?
                    .ok_or_else(|| DeployError::NoModule(digest.clone()))?;
                let checked = tokio::task::spawn_blocking(move || modules::check(&runtime, &bytes))
                    .await
                    .map_err(|e| DeployError::Internal(e.into()))??;
                self.cache
                    .store(&digest, &checked.component)
                    .map_err(DeployError::Internal)?;
                checked
            }
        };
        let (log, stats) = self.log_and_stats(&record.name);
        // Checked at deploy; an entry that no longer reads (a record from a newer host) allows
        // nothing.
        let outbound = Arc::new(
            record
                .allow_outbound
                .iter()
                .filter_map(|e| doppel_api::outbound::OutboundRule::parse(e).ok())
                .collect(),
        );
        let config: WasiConfigVariables = record
            .config
            .iter()
            .chain(&record.secrets.0)
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        Ok(Service {
            slots: crate::admission::Slots::new(
                usize::try_from(record.limits.max_instances).unwrap_or(usize::MAX),
            ),
            name: record.name.as_str().into(),
            limits: Arc::new(record.limits.clone()),
            env: record.config.clone().into_iter().collect(),
            config: Arc::new(config),
            pre: checked.pre,
            record,
            stats,
            log,
            local: Arc::new(crate::keyvalue::LocalBucket::new(self.local_bytes.clone())),
            outbound,
        })
    }

    fn insert(&self, service: Service) -> Option<Arc<Service>> {
        self.services
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(service.record.name.clone(), Arc::new(service))
    }

    /// Checks and stores a module; the answer names it by digest. Storing a module twice is cheap.
    /// The signature is checked first, before anything is compiled or stored: against the
    /// cluster's requirement, and `for_service`'s when the upload names the service it is for.
    pub async fn upload(
        &self,
        bytes: Vec<u8>,
        for_service: Option<&str>,
    ) -> Result<ModuleInfo, DeployError> {
        let signed = signatures::examine(self.store.as_ref(), &bytes).await?;
        if signed.is_none() {
            let record = match for_service {
                Some(name) => self.stored_record(name).await?,
                None => None,
            };
            if let Some(who) = self
                .signature_requirement(
                    record.as_ref().is_some_and(|r| r.require_signatures),
                    for_service,
                )
                .await?
            {
                return Err(SignatureError::Unsigned(who).into());
            }
        }
        let digest = modules::digest(&bytes);
        let size = bytes.len() as u64;
        let runtime = self.runtime.clone();
        let (checked, bytes) = tokio::task::spawn_blocking(move || {
            let checked = modules::check(&runtime, &bytes);
            (checked, bytes)
        })
        .await
        .map_err(|e| DeployError::Internal(e.into()))?;
        let checked = checked?;
        self.cache
            .store(&digest, &checked.component)
            .map_err(DeployError::Internal)?;
        if self
            .store
            .get(&Space::modules(), digest.as_bytes())
            .await?
            .is_none()
        {
            crate::module_store::put(&self.store, &digest, bytes).await?;
        }
        Ok(ModuleInfo {
            digest,
            size,
            imports: checked.imports,
        })
    }

    /// Who requires signatures for a deploy of `service` (the cluster, or the service itself),
    /// in words for the refusal; `None` when nobody does.
    async fn signature_requirement(
        &self,
        service_requires: bool,
        service: Option<&str>,
    ) -> Result<Option<String>, DeployError> {
        if signatures::required(self.store.as_ref()).await? {
            return Ok(Some("this cluster".to_string()));
        }
        Ok(service_requires.then(|| format!("service {:?}", service.unwrap_or_default())))
    }

    /// Deploys (or redeploys) `name`. The new version is loaded and ready before the switch;
    /// requests already running finish on the old one.
    pub async fn deploy(
        &self,
        name: &str,
        request: DeployRequest,
        actor: &str,
    ) -> Result<Deployed, DeployError> {
        // Before anything else: a malformed digest must not reach the store or the cache.
        doppel_api::check_module_digest(&request.module).map_err(DeployError::BadDigest)?;
        let _guard = self.changes.lock().await;
        let module = request.module.clone();
        let result = self.deploy_locked(name, request, actor).await;
        if result.is_err() {
            // An upload whose deploy failed must not linger in the store.
            self.forget_module_if_unused(&module).await?;
        }
        result
    }

    async fn deploy_locked(
        &self,
        name: &str,
        request: DeployRequest,
        actor: &str,
    ) -> Result<Deployed, DeployError> {
        let limits = check_request(name, &request)?;
        let bytes = crate::module_store::get(&self.store, &request.module)
            .await?
            .ok_or_else(|| DeployError::NoModule(request.module.clone()))?;
        // Read as bytes too: the record is replaced only if it is still this one, so that two
        // deploys of one name through two hosts at once cannot both become the same version.
        let stored = self
            .store
            .get(&Space::system(SERVICES), name.as_bytes())
            .await?;
        let previous: Option<ServiceRecord> = stored
            .as_deref()
            .map(serde_json::from_slice)
            .transpose()
            .map_err(|e| DeployError::Internal(e.into()))?;
        // Checked again here, not only at upload: a key may have been removed since, and the
        // upload may not have named this service.
        let require_signatures =
            request.require_signatures || previous.as_ref().is_some_and(|p| p.require_signatures);
        let signed = signatures::examine(self.store.as_ref(), &bytes).await?;
        if signed.is_none()
            && let Some(who) = self
                .signature_requirement(require_signatures, Some(name))
                .await?
        {
            return Err(SignatureError::Unsigned(who).into());
        }
        let signed = signed.unwrap_or_default();
        let rollback = signatures::check_rollback(
            name,
            previous.as_ref().and_then(|p| p.release.as_deref()),
            signed.release.as_deref(),
            request.allow_older,
        )?;
        let record = ServiceRecord {
            name: name.to_string(),
            module: request.module.clone(),
            size: bytes.len() as u64,
            version: previous.as_ref().map_or(1, |p| p.version + 1),
            deployed_at_ms: now_ms(),
            config_names: request.config.keys().cloned().collect(),
            secret_names: request.secrets.0.keys().cloned().collect(),
            config: request.config,
            secrets: request.secrets,
            limits,
            placement: request.placement,
            probe: request.probe,
            signed_by: signed.by,
            release: signed.release,
            require_signatures,
            allow_outbound: request.allow_outbound,
        };
        drop(bytes);
        let service = self.load(record.clone()).await?;
        // The settings before the record that names their version: a record never points at
        // settings that are not there. (A lost race leaves them for a version that never was,
        // which the winner's next deploy overwrites.)
        self.write_settings(&record).await?;
        let swapped = self
            .store
            .apply(Command::new(Op::CompareAndSwap {
                space: Space::system(SERVICES),
                key: name.as_bytes().to_vec(),
                expected: stored,
                value: serde_json::to_vec(&record).map_err(|e| DeployError::Internal(e.into()))?,
            }))
            .await?;
        if let Outcome::Conflict { .. } = swapped {
            return Err(DeployError::Conflict(name.to_string()));
        }
        service.log.host(format!(
            "deployed version {} ({})",
            record.version, record.module
        ));
        self.insert(service);
        let placements = &self.placements;
        if !placements.is_placed(name).await? {
            // First deploy of this name: active where the rules allow, preferring this host.
            // Health is the leader's to judge; its scheduler corrects this within a moment.
            let epoch = placements.current_epoch(name).await?;
            let this = placements.this();
            let views = placements.views(placements.hosts().into_keys(), |_| true);
            let plan = schedule::plan(
                &record.placement,
                &[],
                &views,
                &placements.load(),
                Some(this),
            );
            let change = Change {
                active: plan.active,
                cause: format!("deployed through {}", placements.host_name(this)),
                actor: actor.to_string(),
                unmet: plan.unmet,
                ..Change::default()
            };
            // `None`: a deploy of the same name through another host placed it first.
            placements.propose(name, epoch, change).await?;
        }
        placements.refresh().await?;
        if let Some(previous) = previous {
            self.forget_settings(&previous).await?;
            self.forget_module_if_unused(&previous.module).await?;
        }
        tracing::info!(service = name, version = record.version, module = %record.module, "deployed");
        Ok(Deployed {
            info: self.info(name).await?,
            rollback,
        })
    }

    /// Removes `name`; with `purge`, deletes its buckets too.
    pub async fn remove(&self, name: &str, purge: bool) -> Result<ServiceInfo, DeployError> {
        let _guard = self.changes.lock().await;
        let info = self.info(name).await?;
        let record = self
            .stored_record(name)
            .await?
            .ok_or_else(|| DeployError::NoService(name.to_string()))?;
        self.store
            .apply(Command::new(Op::Delete {
                space: Space::system(SERVICES),
                key: name.as_bytes().to_vec(),
            }))
            .await?;
        self.services
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
        self.placements.unplace(name).await?;
        self.placements.refresh().await?;
        if purge {
            self.store
                .apply(Command::new(Op::PurgeService {
                    service: name.to_string(),
                }))
                .await?;
        }
        self.log_and_stats(name).0.host(if purge {
            "removed, with its data"
        } else {
            "removed; its data is kept"
        });
        if !purge {
            self.forget_settings(&record).await?;
        }
        self.forget_module_if_unused(&record.module).await?;
        tracing::info!(service = name, purge, "removed");
        Ok(info)
    }

    /// Where `record`'s config and secrets are kept: its service's own space, so they are sealed
    /// under its data key like its buckets (and erased with them).
    fn settings_at(record: &ServiceRecord) -> (Space, Vec<u8>) {
        (
            Space::bucket(record.name.as_str(), SETTINGS_BUCKET),
            record.version.to_string().into_bytes(),
        )
    }

    /// Written for every version, empty or not: it also gives the service its data key at its
    /// first deploy, so that every deployed service has one for its erasure to destroy.
    async fn write_settings(&self, record: &ServiceRecord) -> Result<(), DeployError> {
        let (space, key) = Self::settings_at(record);
        let value = serde_json::to_vec(&Settings {
            config: record.config.clone(),
            secrets: record.secrets.clone(),
        })
        .map_err(|e| DeployError::Internal(e.into()))?;
        self.store
            .apply(Command::new(Op::Put { space, key, value }))
            .await?;
        Ok(())
    }

    /// Fills in `record`'s config and secrets when it names some and does not carry them.
    async fn read_settings(&self, record: &mut ServiceRecord) -> Result<(), DeployError> {
        let named = !record.config_names.is_empty() || !record.secret_names.is_empty();
        if !named || !record.config.is_empty() || !record.secrets.is_empty() {
            return Ok(());
        }
        let (space, key) = Self::settings_at(record);
        let bytes = self.store.get(&space, &key).await?.ok_or_else(|| {
            DeployError::Internal(anyhow::anyhow!(
                "the config of {} version {} is missing from the store",
                record.name,
                record.version
            ))
        })?;
        let settings: Settings =
            serde_json::from_slice(&bytes).map_err(|e| DeployError::Internal(e.into()))?;
        record.config = settings.config;
        record.secrets = settings.secrets;
        Ok(())
    }

    /// Deletes the settings of a version no longer deployed.
    async fn forget_settings(&self, record: &ServiceRecord) -> Result<(), DeployError> {
        let (space, key) = Self::settings_at(record);
        self.store
            .apply(Command::new(Op::Delete { space, key }))
            .await?;
        Ok(())
    }

    async fn stored_record(&self, name: &str) -> Result<Option<ServiceRecord>, DeployError> {
        match self
            .store
            .get(&Space::system(SERVICES), name.as_bytes())
            .await?
        {
            None => Ok(None),
            Some(bytes) => Ok(Some(
                serde_json::from_slice(&bytes).map_err(|e| DeployError::Internal(e.into()))?,
            )),
        }
    }

    async fn forget_module_if_unused(&self, digest: &str) -> Result<(), DeployError> {
        if self.records().await?.iter().any(|r| r.module == digest) {
            return Ok(());
        }
        crate::module_store::delete(&self.store, digest).await?;
        self.cache.remove(digest);
        Ok(())
    }

    /// What `doppel ls` shows of one service.
    pub async fn info(&self, name: &str) -> Result<ServiceInfo, DeployError> {
        let service = self
            .get(name)
            .ok_or_else(|| DeployError::NoService(name.to_string()))?;
        let record = &service.record;
        let placement = self.placements.get(name);
        let names = |ids: &[u64]| -> Vec<String> {
            ids.iter()
                .map(|id| self.placements.host_name(*id))
                .collect()
        };
        Ok(ServiceInfo {
            active: placement
                .as_ref()
                .map_or_else(Vec::new, |p| names(&p.active)),
            leaving: placement
                .as_ref()
                .map_or_else(Vec::new, |p| names(&p.leaving)),
            unmet: placement.as_ref().and_then(|p| p.unmet.clone()),
            placement: record.placement.clone(),
            probe: record.probe.clone().unwrap_or_else(|| "/".to_string()),
            signed_by: record.signed_by.clone(),
            release: record.release.clone(),
            signatures_required: record.require_signatures,
            allow_outbound: record.allow_outbound.clone(),
            epoch: placement.map_or(0, |p| p.epoch),
            name: record.name.clone(),
            module: record.module.clone(),
            size: record.size,
            version: record.version,
            deployed_at_ms: record.deployed_at_ms,
            requests: service.stats.requests.load(Ordering::Relaxed),
            errors: service.stats.errors.load(Ordering::Relaxed),
            config_keys: if record.config_names.is_empty() {
                record.config.keys().cloned().collect()
            } else {
                record.config_names.clone()
            },
            secret_keys: record.secret_names.clone(),
            limits: record.limits.clone(),
            // Everything else here is this host's own knowledge; only this needs the store,
            // and a listing must not lose a service because the store is between leaders.
            storage_bytes: self.store.usage(name).await.ok(),
        })
    }

    /// Every service, by name.
    pub async fn list(&self) -> Result<Vec<ServiceInfo>, DeployError> {
        let mut names: Vec<String> = self
            .services
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect();
        names.sort();
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            // A service removed meanwhile is simply not listed.
            if let Ok(info) = self.info(&name).await {
                out.push(info);
            }
        }
        Ok(out)
    }
}

/// Checks what a deploy asks for that needs nothing but the request (its name, limits, rules and
/// probe), and gives the limits it asks for.
pub(crate) fn check_request(name: &str, request: &DeployRequest) -> Result<Limits, DeployError> {
    doppel_api::check_service_name(name).map_err(DeployError::BadName)?;
    doppel_api::check_module_digest(&request.module).map_err(DeployError::BadDigest)?;
    let limits = request.limits.apply_to(Limits::default());
    check_limits(&limits)?;
    request.placement.check().map_err(DeployError::BadLimit)?;
    if let Some(probe) = &request.probe {
        doppel_api::check_probe(probe).map_err(DeployError::BadLimit)?;
    }
    if request.allow_outbound.len() > 64 {
        return Err(DeployError::BadLimit(
            "at most 64 --allow-outbound entries".into(),
        ));
    }
    for entry in &request.allow_outbound {
        doppel_api::outbound::OutboundRule::parse(entry).map_err(DeployError::BadLimit)?;
    }
    if let Some(both) = request
        .secrets
        .0
        .keys()
        .find(|k| request.config.contains_key(*k))
    {
        return Err(DeployError::BadLimit(format!(
            "{both} is given both as --config and as --secret; give it once"
        )));
    }
    Ok(limits)
}

fn check_limits(limits: &Limits) -> Result<(), DeployError> {
    let bad = |what: &str| Err(DeployError::BadLimit(what.to_string()));
    if limits.max_memory < (1 << 16) || limits.max_memory > MAX_MEMORY_LIMIT {
        return bad(&format!(
            "--max-memory must be between 64 KiB and {} GiB",
            MAX_MEMORY_LIMIT >> 30
        ));
    }
    if limits.timeout_ms == 0 || limits.timeout_ms > 3_600_000 {
        return bad("--timeout must be between 1 ms and 1 hour");
    }
    if limits.max_key == 0 || limits.max_value == 0 {
        return bad("key and value limits must be positive");
    }
    if limits.max_instances == 0 || limits.max_instances > doppel_api::POOL_INSTANCES {
        return bad(&format!(
            "--max-instances must be between 1 and {} (a host's whole instance pool)",
            doppel_api::POOL_INSTANCES
        ));
    }
    Ok(())
}
