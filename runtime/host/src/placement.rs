//! Where each service is active, and at which epoch. A service's placement record lists its
//! active hosts; every other host is a warm standby (the service is loaded and precompiled there
//! too) that forwards the service's requests to an active host. Every state write a service makes
//! carries the epoch its host knew when the request started; the store refuses writes from an
//! older epoch, so a host that was replaced (and does not know it yet) cannot change state.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::RwLock;

use doppel_replication::NodeId;
use doppel_store::{Command, Op, Space, Store, StoreError};
use serde::{Deserialize, Serialize};

use crate::cluster::HostRecord;
use crate::logs::now_ms;

/// A service's placement as the store keeps it (JSON under `placements/NAME`, written only with
/// [`Op::Place`], which also moves the service's epoch and keeps the record in the service's
/// placement history, which `doppel events` shows).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    /// The epoch this placement started.
    pub epoch: u64,
    /// The hosts the service is active on.
    pub active: Vec<NodeId>,
    /// Hosts handing the service over: they finish the requests they are running and forward
    /// new ones to the active hosts; once done they are deposed (fenced) in the next epoch.
    #[serde(default)]
    pub leaving: Vec<NodeId>,
    /// Why it changed (`deployed through a`, `failover: b stopped answering`…).
    pub cause: String,
    /// Who changed it (`alice via a`, `scheduler on c`).
    #[serde(default)]
    pub actor: String,
    /// When, ms since the Unix epoch.
    pub at_ms: u64,
    /// Why the service's placement rules are not met, when they are not (too few eligible
    /// hosts). With no active host at all, requests get this as their 503 reason.
    #[serde(default)]
    pub unmet: Option<String>,
}

/// A placement to write: the next one after the current.
#[derive(Clone, Debug, Default)]
pub struct Change {
    /// See [`Placement::active`].
    pub active: Vec<NodeId>,
    /// See [`Placement::leaving`].
    pub leaving: Vec<NodeId>,
    /// Hosts whose writes for the service are refused from now on (their requests must be done).
    pub deposed: Vec<NodeId>,
    /// See [`Placement::cause`].
    pub cause: String,
    /// See [`Placement::actor`].
    pub actor: String,
    /// See [`Placement::unmet`].
    pub unmet: Option<String>,
}

/// How a request for a service is served here.
pub enum Route {
    /// Here, writing with this epoch (`None`: the service has no placement yet; unfenced).
    Local(Option<u64>),
    /// By one of these hosts' service listeners (`HOST:PORT`), in order of preference.
    Forward(Vec<String>),
    /// Nowhere: no host may run it now; the reason.
    Unavailable(String),
}

/// This host's copy of every placement and of the hosts' service addresses, refreshed whenever
/// the host's own tables change.
pub struct Placements {
    this: NodeId,
    placements: RwLock<HashMap<String, Placement>>,
    hosts: RwLock<HashMap<NodeId, HostRecord>>,
    drained: RwLock<HashSet<NodeId>>,
}

impl Placements {
    /// An empty view for host `this`.
    pub fn new(this: NodeId) -> Placements {
        Placements {
            this,
            placements: RwLock::default(),
            hosts: RwLock::default(),
            drained: RwLock::default(),
        }
    }

    /// This host's id.
    pub fn this(&self) -> NodeId {
        self.this
    }

    /// The placement of `service`.
    pub fn get(&self, service: &str) -> Option<Placement> {
        self.placements
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(service)
            .cloned()
    }

    /// Every placement, by service.
    pub fn all(&self) -> HashMap<String, Placement> {
        self.placements
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// How to serve a request for `service` that came through `hops` other hosts. A host
    /// leaving the service forwards new requests like a standby — also those a host with an
    /// older view forwarded to it, since its own requests must be over before it is deposed.
    /// Otherwise a forwarded request is served here whatever the placement says (it moved
    /// meanwhile): the store is linearizable wherever the request runs, and after two hops
    /// nothing is forwarded again, so views that disagree cannot make a loop. Whatever the hops,
    /// a host whose labels the service's rules (`on`) exclude never serves it.
    pub fn route(&self, service: &str, hops: usize, on: &BTreeMap<String, String>) -> Route {
        // On every request: look, don't clone.
        let placements = self.placements.read().unwrap_or_else(|e| e.into_inner());
        let Some(placement) = placements.get(service) else {
            return Route::Local(None);
        };
        if placement.active.contains(&self.this) {
            return Route::Local(Some(placement.epoch));
        }
        let leaving = placement.leaving.contains(&self.this);
        let allowed = || {
            on.is_empty()
                || self
                    .hosts
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(&self.this)
                    .is_some_and(|h| on.iter().all(|(k, v)| h.labels.get(k) == Some(v)))
        };
        if ((hops > 0 && !leaving) || hops >= 2) && allowed() {
            return Route::Local(Some(placement.epoch));
        }
        if hops >= 3 {
            return Route::Unavailable(format!(
                "this host may not run {service:?} and the request was already forwarded {hops} times"
            ));
        }
        if placement.active.is_empty() {
            return Route::Unavailable(
                placement.unmet.clone().unwrap_or_else(|| {
                    format!("the service {service:?} is not active on any host")
                }),
            );
        }
        let hosts = self.hosts.read().unwrap_or_else(|e| e.into_inner());
        let targets: Vec<String> = placement
            .active
            .iter()
            .filter_map(|id| hosts.get(id).map(|h| h.listen.clone()))
            .collect();
        if targets.is_empty() {
            if allowed() {
                Route::Local(Some(placement.epoch))
            } else {
                Route::Unavailable(format!(
                    "the hosts {service:?} is active on have not registered their addresses yet"
                ))
            }
        } else {
            Route::Forward(targets)
        }
    }

    /// Reloads every placement and the hosts' addresses from the store.
    pub async fn refresh(&self, store: &dyn Store) -> Result<(), StoreError> {
        let mut placements = HashMap::new();
        for (key, bytes) in read_table(store, &Space::placements()).await? {
            let placement: Placement = serde_json::from_slice(&bytes).map_err(|e| {
                StoreError::Corrupt(format!("placement {}: {e}", String::from_utf8_lossy(&key)))
            })?;
            placements.insert(String::from_utf8_lossy(&key).into_owned(), placement);
        }
        let hosts = crate::cluster::hosts(store)
            .await?
            .into_iter()
            .map(|h| (h.id, h))
            .collect();
        let drained = crate::cluster::drained(store).await?;
        *self.placements.write().unwrap_or_else(|e| e.into_inner()) = placements;
        *self.hosts.write().unwrap_or_else(|e| e.into_inner()) = hosts;
        *self.drained.write().unwrap_or_else(|e| e.into_inner()) = drained;
        Ok(())
    }

    /// Every registered host that is still in the cluster, by id.
    pub fn hosts(&self) -> HashMap<NodeId, HostRecord> {
        self.hosts
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(_, h)| !h.removed)
            .map(|(id, h)| (*id, h.clone()))
            .collect()
    }

    /// How many services each host is active for.
    pub fn load(&self) -> HashMap<NodeId, usize> {
        let mut load = HashMap::new();
        for p in self
            .placements
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
        {
            for id in &p.active {
                *load.entry(*id).or_default() += 1;
            }
        }
        load
    }

    /// Whether host `id` is drained (no service may become active on it).
    pub fn is_drained(&self, id: NodeId) -> bool {
        self.drained
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&id)
    }

    /// The name of host `id`, as it registered (its id when it has not).
    pub fn host_name(&self, id: NodeId) -> String {
        self.hosts
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .map_or_else(|| format!("#{id}"), |h| h.name.clone())
    }
}

/// Every key and value of a system table.
async fn read_table(
    store: &dyn Store,
    space: &Space,
) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StoreError> {
    let mut out = Vec::new();
    let mut after: Option<Vec<u8>> = None;
    loop {
        let keys = store.list_keys(space, after.as_deref(), 1000).await?;
        for key in &keys {
            if let Some(value) = store.get(space, key).await? {
                out.push((key.clone(), value));
            }
        }
        match keys.last() {
            Some(last) if keys.len() == 1000 => after = Some(last.clone()),
            _ => return Ok(out),
        }
    }
}

/// The epoch `service` is at in the store (0 before its first placement).
pub async fn current_epoch(store: &dyn Store, service: &str) -> Result<u64, StoreError> {
    Ok(store
        .get(&Space::epochs(), service.as_bytes())
        .await?
        .and_then(|v| String::from_utf8(v).ok()?.parse().ok())
        .unwrap_or(0))
}

/// Moves `service` from `from_epoch` to the next epoch with `change`. Fails with a `StaleEpoch`
/// refusal if someone else moved it first.
pub async fn place(
    store: &dyn Store,
    service: &str,
    from_epoch: u64,
    change: Change,
) -> Result<Placement, StoreError> {
    let placement = Placement {
        epoch: from_epoch + 1,
        active: change.active,
        leaving: change.leaving,
        cause: change.cause,
        actor: change.actor,
        at_ms: now_ms(),
        unmet: change.unmet,
    };
    store
        .apply(Command::new(Op::Place {
            service: service.to_string(),
            epoch: placement.epoch,
            placement: serde_json::to_vec(&placement).expect("a placement always encodes"),
            deposed: change.deposed,
        }))
        .await?;
    Ok(placement)
}

/// Every placement every service has had (`doppel events`), oldest first; at most `limit`, the
/// newest ones.
pub async fn history(
    store: &dyn Store,
    service: Option<&str>,
    limit: usize,
) -> Result<Vec<(String, Placement)>, StoreError> {
    let mut out = Vec::new();
    for (key, bytes) in read_table(store, &Space::placement_history()).await? {
        let key = String::from_utf8_lossy(&key).into_owned();
        let Some((name, _)) = key.rsplit_once('/') else {
            continue;
        };
        if service.is_some_and(|s| s != name) {
            continue;
        }
        let placement: Placement = serde_json::from_slice(&bytes)
            .map_err(|e| StoreError::Corrupt(format!("placement history {key}: {e}")))?;
        out.push((name.to_string(), placement));
    }
    out.sort_by_key(|(name, p)| (p.at_ms, name.clone(), p.epoch));
    let skip = out.len().saturating_sub(limit);
    Ok(out.split_off(skip))
}

/// Forgets `service`'s placement (it was removed); its epoch stays, so a later deploy of the same
/// name starts past every write of the old one.
pub async fn unplace(store: &dyn Store, service: &str) -> Result<(), StoreError> {
    store
        .apply(Command::new(Op::Delete {
            space: Space::placements(),
            key: service.as_bytes().to_vec(),
        }))
        .await?;
    Ok(())
}
