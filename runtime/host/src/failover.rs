//! Failover: every host probes every other member several times a second; the raft leader — and
//! only the leader, so a host cut off from the majority never decides anything — moves a service
//! whose active host stopped answering to a live standby, in the next epoch. The move is one
//! command through the store, so it happens once, everywhere, or not at all. A follower whose
//! leader stopped answering stands for election at once rather than after its election timer.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use doppel_replication::{NodeId, ReplicatedStore};
use doppel_store::{ApplyError, StoreError};

use crate::placement;
use crate::services::Registry;

/// How often members are probed.
const PROBE_EVERY: Duration = Duration::from_millis(100);
/// How long a probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_millis(250);
/// How long without an answer before a host counts as dead. Three probe rounds: one lost packet
/// or a slow answer does not move a service.
const DEAD_AFTER: Duration = Duration::from_millis(350);
/// How long without an answer from the leader before a follower stands for election itself
/// instead of waiting for its election timer (which openraft starts only after the leader's lease,
/// then adds 150–300 ms and, for a follower with a shorter log, 600 ms more). Voters still refuse
/// while the lease (300 ms since the leader's last heartbeat) lasts, so this cannot depose a live
/// leader that merely answered a probe late.
const LEADER_DEAD_AFTER: Duration = Duration::from_millis(300);

/// Probes members and, while this host leads, moves services off dead hosts. Runs until aborted.
pub async fn run(store: Arc<ReplicatedStore>, registry: Arc<Registry>, secret: String) {
    let http = reqwest::Client::new();
    let this = registry.placements().this();
    let started = Instant::now();
    let mut last_ok: HashMap<NodeId, Instant> = HashMap::new();
    let mut last_stood: Option<Instant> = None;
    let mut ticker = tokio::time::interval(PROBE_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let members = store.members();
        let probes = members
            .iter()
            .filter(|(id, _)| *id != this)
            .map(|(id, addr)| {
                let http = http.clone();
                let secret = secret.clone();
                async move {
                    let ok = http
                        .post(format!("http://{addr}/raft/v1/ping"))
                        .bearer_auth(&secret)
                        .timeout(PROBE_TIMEOUT)
                        .send()
                        .await
                        .is_ok_and(|r| r.status().is_success());
                    (*id, ok)
                }
            });
        let now = Instant::now();
        for (id, ok) in futures::future::join_all(probes).await {
            if ok {
                last_ok.insert(id, now);
            }
        }
        last_ok.insert(this, now);
        if !store.is_leader() {
            let leader = store.raft().metrics().borrow().current_leader;
            if let Some(leader) = leader
                && leader != this
                && now.duration_since(*last_ok.get(&leader).unwrap_or(&started)) > LEADER_DEAD_AFTER
                && last_stood.is_none_or(|t| now.duration_since(t) > LEADER_DEAD_AFTER)
            {
                tracing::warn!(
                    leader,
                    "the leader stopped answering; standing for election"
                );
                last_stood = Some(now);
                let _ = store.raft().trigger().elect().await;
            }
            continue;
        }
        let alive = |id: &NodeId| {
            members.iter().any(|(m, _)| m == id)
                && now.duration_since(*last_ok.get(id).unwrap_or(&started)) < DEAD_AFTER
        };
        if let Err(e) = move_off_dead_hosts(&store, &registry, &members, &alive).await {
            tracing::warn!(error = %e, "failover: cannot move services yet");
        }
    }
}

/// One pass: every service with a dead active host gets a live one instead.
async fn move_off_dead_hosts(
    store: &ReplicatedStore,
    registry: &Registry,
    members: &[(NodeId, String)],
    alive: &impl Fn(&NodeId) -> bool,
) -> Result<(), StoreError> {
    let placements = registry.placements();
    let all = placements.all();
    // How many services each host is active for, to spread the moved ones.
    let mut load: HashMap<NodeId, usize> = HashMap::new();
    for p in all.values() {
        for id in &p.active {
            *load.entry(*id).or_default() += 1;
        }
    }
    let mut names: Vec<&String> = all.keys().collect();
    names.sort();
    let mut moved = false;
    for name in names {
        let placement = &all[name];
        let (live, dead): (Vec<NodeId>, Vec<NodeId>) =
            placement.active.iter().partition(|id| alive(id));
        if dead.is_empty() {
            continue;
        }
        let mut candidates: Vec<NodeId> = members
            .iter()
            .map(|(id, _)| *id)
            .filter(|id| alive(id) && !placement.active.contains(id))
            .collect();
        candidates.sort_by_key(|id| (load.get(id).copied().unwrap_or(0), *id));
        let mut active = live;
        for replacement in candidates.into_iter().take(dead.len()) {
            *load.entry(replacement).or_default() += 1;
            active.push(replacement);
        }
        if active.is_empty() {
            // No live host to move to: nothing to gain from a new epoch.
            continue;
        }
        let dead_names: Vec<String> = dead.iter().map(|id| placements.host_name(*id)).collect();
        let cause = format!("failover: {} stopped answering", dead_names.join(", "));
        match placement::place(store, name, placement.epoch, active.clone(), cause).await {
            Ok(p) => {
                moved = true;
                let to: Vec<String> = active.iter().map(|id| placements.host_name(*id)).collect();
                tracing::warn!(service = %name, from = ?dead_names, to = ?to, epoch = p.epoch, "failover");
            }
            // Someone moved it first (a previous leader's last act): the next pass sees it.
            Err(StoreError::Rejected(ApplyError::StaleEpoch { .. })) => moved = true,
            Err(e) => return Err(e),
        }
    }
    if moved {
        placements.refresh(store).await?;
    }
    Ok(())
}
