//! Where each service is active, and at which epoch. A service's placement record lists its
//! active hosts; every other host is a warm standby (the service is loaded and precompiled there
//! too) that forwards the service's requests to an active host. Every state write a service makes
//! carries the epoch its host knew when the request started; the store refuses writes from an
//! older epoch, so a host that was replaced (and does not know it yet) cannot change state.
//!
//! Placements have one way in: [`Placements::propose`] is the only writer of [`Op::Place`], used
//! by deploys, the leader's scheduler and operators' moves alike, each deciding from the same
//! [`Placements::views`] of the hosts.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, RwLock};

use doppel_replication::NodeId;
use doppel_store::{ApplyError, Command, Op, Space, Store, StoreError};
use serde::{Deserialize, Serialize};

use crate::clock::now_ms;
use crate::hosts::{self, HostRecord};
use crate::schedule::HostView;

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
#[derive(Debug, PartialEq, Eq)]
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
    store: Arc<dyn Store>,
    placements: RwLock<HashMap<String, Placement>>,
    hosts: RwLock<HashMap<NodeId, HostRecord>>,
    drained: RwLock<HashSet<NodeId>>,
    /// Placement changes this host made, by kind, since it started (for `/metrics`).
    pub made: ChangesMade,
}

/// Placement changes one host made, by kind.
#[derive(Default)]
pub struct ChangesMade {
    /// Services moved off a host that stopped answering.
    pub failovers: std::sync::atomic::AtomicU64,
    /// Services moved (migrations, drains, rules no longer met), hand-overs included.
    pub moves: std::sync::atomic::AtomicU64,
}

impl Placements {
    /// An empty view for host `this`, read from `store`.
    pub fn new(this: NodeId, store: Arc<dyn Store>) -> Placements {
        Placements {
            this,
            store,
            placements: RwLock::default(),
            hosts: RwLock::default(),
            drained: RwLock::default(),
            made: ChangesMade::default(),
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
            .filter_map(|id| hosts.get(id).map(|h| h.peer.clone()))
            .filter(|peer| !peer.is_empty())
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
    pub async fn refresh(&self) -> Result<(), StoreError> {
        let store = self.store.as_ref();
        let mut placements = HashMap::new();
        for (key, bytes) in read_table(store, &Space::placements()).await? {
            let placement: Placement = serde_json::from_slice(&bytes).map_err(|e| {
                StoreError::Corrupt(format!("placement {}: {e}", String::from_utf8_lossy(&key)))
            })?;
            placements.insert(String::from_utf8_lossy(&key).into_owned(), placement);
        }
        let hosts = hosts::hosts(store)
            .await?
            .into_iter()
            .map(|h| (h.id, h))
            .collect();
        let drained = hosts::drained(store).await?;
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

    /// The names of hosts `ids`, joined for a message.
    pub fn host_names(&self, ids: &[NodeId]) -> String {
        ids.iter()
            .map(|id| self.host_name(*id))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// What the planner knows of each of `members`: its name and labels as it registered (a
    /// member that has not registered yet has none), whether it is `alive`, whether it is
    /// drained. Every placement decision starts from this.
    pub fn views(
        &self,
        members: impl IntoIterator<Item = NodeId>,
        alive: impl Fn(NodeId) -> bool,
    ) -> Vec<HostView> {
        let hosts = self.hosts.read().unwrap_or_else(|e| e.into_inner());
        members
            .into_iter()
            .map(|id| {
                let record = hosts.get(&id).filter(|h| !h.removed);
                HostView {
                    id,
                    name: record.map_or_else(|| "(unregistered)".into(), |h| h.name.clone()),
                    labels: record.map(|h| h.labels.clone()).unwrap_or_default(),
                    alive: alive(id),
                    drained: self.is_drained(id),
                }
            })
            .collect()
    }

    /// Moves `service` from `from_epoch` to the next epoch with `change`: the one way a placement
    /// is written. `None` when someone moved it first (a deploy through another host, a previous
    /// leader's last act, a migration): the caller decides again from what is stored now.
    pub async fn propose(
        &self,
        service: &str,
        from_epoch: u64,
        change: Change,
    ) -> Result<Option<Placement>, StoreError> {
        let kind = if change.cause.starts_with("failover") {
            Some(&self.made.failovers)
        } else if !change.leaving.is_empty() || !change.deposed.is_empty() {
            Some(&self.made.moves)
        } else {
            None
        };
        let placement = Placement {
            epoch: from_epoch + 1,
            active: change.active,
            leaving: change.leaving,
            cause: change.cause,
            actor: change.actor,
            at_ms: now_ms(),
            unmet: change.unmet,
        };
        let command = Command::new(Op::Place {
            service: service.to_string(),
            epoch: placement.epoch,
            placement: serde_json::to_vec(&placement).expect("a placement always encodes"),
            deposed: change.deposed,
        });
        match self.store.apply(command).await {
            Ok(_) => {
                if let Some(count) = kind {
                    count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                Ok(Some(placement))
            }
            Err(StoreError::Rejected(ApplyError::StaleEpoch { .. })) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The epoch `service` is at in the store (0 before its first placement).
    pub async fn current_epoch(&self, service: &str) -> Result<u64, StoreError> {
        Ok(self
            .store
            .get(&Space::epochs(), service.as_bytes())
            .await?
            .and_then(|v| String::from_utf8(v).ok()?.parse().ok())
            .unwrap_or(0))
    }

    /// Whether `service` has a placement in the store (read linearizably, not from this view).
    pub async fn is_placed(&self, service: &str) -> Result<bool, StoreError> {
        Ok(self
            .store
            .get(&Space::placements(), service.as_bytes())
            .await?
            .is_some())
    }

    /// Every placement every service has had (`doppel events`), oldest first; at most `limit`, the
    /// newest ones.
    pub async fn history(
        &self,
        service: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Placement)>, StoreError> {
        let mut out = Vec::new();
        for (key, bytes) in read_table(self.store.as_ref(), &Space::placement_history()).await? {
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

    /// Forgets `service`'s placement (it was removed); its epoch stays, so a later deploy of the
    /// same name starts past every write of the old one.
    pub async fn unplace(&self, service: &str) -> Result<(), StoreError> {
        self.store
            .apply(Command::new(Op::Delete {
                space: Space::placements(),
                key: service.as_bytes().to_vec(),
            }))
            .await?;
        Ok(())
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

#[cfg(test)]
mod tests {
    //! The routing rules on a real store (a `LocalStore` in a temporary folder): each case writes
    //! placements and hosts the way the cluster does, refreshes a host's view, and asks it where
    //! a request goes.

    use super::*;
    use crate::hosts::register;

    const A: NodeId = 1;
    const B: NodeId = 2;
    const C: NodeId = 3;

    struct Cluster {
        _dir: tempfile::TempDir,
        store: Arc<dyn Store>,
    }

    /// Three registered hosts, `a` and `b` labelled `j=de`, `c` labelled `j=fr`.
    async fn cluster() -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(doppel_store::LocalStore::open(dir.path().join("store")).unwrap());
        for (id, name, j) in [(A, "a", "de"), (B, "b", "de"), (C, "c", "fr")] {
            let record = HostRecord {
                id,
                name: name.into(),
                admin: format!("{name}:81"),
                peer: format!("{name}:82"),
                listen: format!("{name}:80"),
                labels: [("j".to_string(), j.to_string())].into(),
                removed: false,
            };
            register(store.as_ref(), &record).await.unwrap();
        }
        Cluster { _dir: dir, store }
    }

    impl Cluster {
        /// Host `this`'s view, refreshed.
        async fn view(&self, this: NodeId) -> Placements {
            let view = Placements::new(this, self.store.clone());
            view.refresh().await.unwrap();
            view
        }

        /// Places `svc` next: active on `active`, `leaving` handing it over.
        async fn place(&self, active: &[NodeId], leaving: &[NodeId]) -> Placement {
            let any = self.view(A).await;
            let epoch = any.current_epoch("svc").await.unwrap();
            let change = Change {
                active: active.to_vec(),
                leaving: leaving.to_vec(),
                cause: "test".into(),
                ..Change::default()
            };
            any.propose("svc", epoch, change).await.unwrap().unwrap()
        }
    }

    fn no_rules() -> BTreeMap<String, String> {
        BTreeMap::new()
    }

    fn forward(to: &str) -> Route {
        Route::Forward(vec![to.to_string()])
    }

    #[tokio::test]
    async fn an_unplaced_service_is_served_here_unfenced() {
        let cluster = cluster().await;
        assert_eq!(
            cluster.view(B).await.route("svc", 0, &no_rules()),
            Route::Local(None)
        );
    }

    #[tokio::test]
    async fn the_active_host_serves_and_a_standby_forwards_once() {
        let cluster = cluster().await;
        let placed = cluster.place(&[A], &[]).await;
        let rules = no_rules();
        assert_eq!(
            cluster.view(A).await.route("svc", 0, &rules),
            Route::Local(Some(placed.epoch))
        );
        let b = cluster.view(B).await;
        assert_eq!(b.route("svc", 0, &rules), forward("a:82"));
        // Forwarded once already: served where it lands, whatever this host's view says.
        assert_eq!(b.route("svc", 1, &rules), Route::Local(Some(placed.epoch)));
    }

    #[tokio::test]
    async fn a_leaving_host_sends_new_requests_on_until_the_second_hop() {
        let cluster = cluster().await;
        cluster.place(&[A], &[]).await;
        let switched = cluster.place(&[B], &[A]).await;
        let a = cluster.view(A).await;
        let rules = no_rules();
        assert_eq!(a.route("svc", 0, &rules), forward("b:82"));
        // A host with an older view forwarded it here: it goes on to the new active host.
        assert_eq!(a.route("svc", 1, &rules), forward("b:82"));
        // After two hops it is served wherever it is, so views that disagree cannot loop.
        assert_eq!(
            a.route("svc", 2, &rules),
            Route::Local(Some(switched.epoch))
        );
    }

    #[tokio::test]
    async fn a_host_the_rules_exclude_never_serves_and_stops_after_three_hops() {
        let cluster = cluster().await;
        cluster.place(&[A], &[]).await;
        let c = cluster.view(C).await;
        let de: BTreeMap<String, String> = [("j".to_string(), "de".to_string())].into();
        for hops in 0..3 {
            assert_eq!(c.route("svc", hops, &de), forward("a:82"), "hops {hops}");
        }
        match c.route("svc", 3, &de) {
            Route::Unavailable(why) => assert!(why.contains("forwarded 3 times"), "{why}"),
            _ => panic!("a fourth hop must not be forwarded or served"),
        }
    }

    #[tokio::test]
    async fn a_service_active_nowhere_is_unavailable_with_its_reason() {
        let cluster = cluster().await;
        let any = cluster.view(A).await;
        let change = Change {
            unmet: Some("no host has j=se".into()),
            ..Change::default()
        };
        any.propose("svc", 0, change).await.unwrap().unwrap();
        let unavailable = Route::Unavailable("no host has j=se".into());
        assert_eq!(
            cluster.view(B).await.route("svc", 0, &no_rules()),
            unavailable
        );
    }

    #[tokio::test]
    async fn a_view_behind_a_failover_forwards_to_the_new_host_once_refreshed() {
        let cluster = cluster().await;
        cluster.place(&[A], &[]).await;
        let c = cluster.view(C).await;
        assert_eq!(c.route("svc", 0, &no_rules()), forward("a:82"));
        // The scheduler moves it off a dead `a`; `c` has not heard yet.
        cluster.place(&[B], &[]).await;
        assert_eq!(c.route("svc", 0, &no_rules()), forward("a:82"));
        c.refresh().await.unwrap();
        assert_eq!(c.route("svc", 0, &no_rules()), forward("b:82"));
    }

    #[tokio::test]
    async fn of_two_proposals_from_one_epoch_only_the_first_is_written() {
        let cluster = cluster().await;
        let view = cluster.view(A).await;
        let to = |active: NodeId| Change {
            active: vec![active],
            ..Change::default()
        };
        assert!(view.propose("svc", 0, to(A)).await.unwrap().is_some());
        assert!(view.propose("svc", 0, to(B)).await.unwrap().is_none());
        view.refresh().await.unwrap();
        assert_eq!(view.get("svc").unwrap().active, [A]);
        assert_eq!(view.current_epoch("svc").await.unwrap(), 1);
    }

    #[tokio::test]
    async fn views_name_unregistered_members_and_carry_health_and_drain() {
        let cluster = cluster().await;
        crate::hosts::set_drained(cluster.store.as_ref(), B, true)
            .await
            .unwrap();
        let view = cluster.view(A).await;
        let views = view.views([A, B, 9], |id| id != A);
        assert_eq!(views[0].name, "a");
        assert!(!views[0].alive && !views[0].drained);
        assert!(views[1].alive && views[1].drained);
        assert_eq!(views[2].name, "(unregistered)");
        assert!(views[2].labels.is_empty());
    }
}
