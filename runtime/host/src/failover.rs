//! Failover and the scheduler: every host probes every other member several times a second; the
//! raft leader — and only the leader, so a host cut off from the majority never decides anything —
//! keeps every service placed as its rules say: a service whose active host stopped answering
//! moves to a live eligible standby in the next epoch (the dead host fenced), missing replicas
//! are added, and a service on a drained host is handed over. Each change is one command through
//! the store, so it happens once, everywhere, or not at all. A follower whose
//! leader stopped answering stands for election at once rather than after its election timer.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use doppel_replication::{LogReach, NodeId, ReplicatedStore};
use doppel_store::{ApplyError, StoreError};

use crate::moves::Mover;
use crate::placement::{self, Change, Placement};
use crate::schedule::{self, HostView};

/// How often members are probed, how long a probe may take, how long without an answer before a
/// host counts as dead, and how long a silent leader is given: all follow the leader lease
/// (`doppel host --leader-lease`), so hosts far apart, which need a longer lease, are not declared
/// dead for a slow answer either. The floors are what the default 180 ms lease uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ProbeTiming {
    every: Duration,
    timeout: Duration,
    /// Several probe rounds: one lost packet or a slow answer does not move a service.
    dead_after: Duration,
    /// How long without an answer from the leader before a follower stands for election itself
    /// instead of waiting for its election timer (which openraft starts only after the leader's
    /// lease, then adds 2/3 to 1 lease more and, for a follower with a shorter log, 2 leases more)
    /// when the leader is merely silent: a slow leader is not a dead one. At least the lease and
    /// a margin: standing while voters still refuse would only bump the term and depose a live
    /// leader.
    leader_dead_after: Duration,
}

impl ProbeTiming {
    fn for_lease(lease: Duration) -> ProbeTiming {
        let ms = Duration::from_millis;
        ProbeTiming {
            every: (lease / 4).max(ms(50)),
            timeout: lease.max(ms(250)),
            dead_after: (lease * 2).max(ms(350)),
            leader_dead_after: (lease + ms(120)).max(ms(300)),
        }
    }
}

/// Consecutive probes *refused* (the host's machine answered that nothing listens on the port:
/// the process is gone) after which a host counts as dead without waiting for `dead_after`. A
/// refusal is an answer, not a silence, so it cannot come from a slow or overloaded host.
const REFUSED_DEAD: u32 = 2;

/// What one probe of a member found.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Probe {
    /// It answered, with how far its raft log reaches (nowhere, if it did not say).
    Answered(LogReach),
    /// Connection refused: nothing listens there any more.
    Refused,
    /// No answer in time, or an error answer.
    Silent,
}

fn refused(e: &reqwest::Error) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::ConnectionRefused
        {
            return true;
        }
        source = cause.source();
    }
    false
}

/// Probes members and, while this host leads, keeps every service placed by its rules: off dead
/// hosts at once, off drained ones by hand-over. Runs until aborted.
pub async fn run(mover: Mover) {
    let (store, registry) = (mover.store.clone(), mover.registry.clone());
    let secret = mover.secret.to_string();
    let http = mover.http.clone();
    let handing_over = Arc::new(std::sync::Mutex::new(HashSet::new()));
    let this = registry.placements().this();
    let started = Instant::now();
    let mut last_ok: HashMap<NodeId, Instant> = HashMap::new();
    let mut last_stood: Option<Instant> = None;
    let mut refusals: HashMap<NodeId, u32> = HashMap::new();
    let mut reach: HashMap<NodeId, LogReach> = HashMap::new();
    // When the leader's process is gone (its probes are refused), a follower stands as soon as
    // the voters' lease has run out: this long after the leader last answered a probe.
    // Heartbeats and probes leave the leader together, so the lease (counted from the last
    // heartbeat) is over by then or within a probe round; a vote refused for the lease is asked
    // again the next round.
    let lease = Duration::from_millis(store.raft().config().election_timeout_max);
    let timing = ProbeTiming::for_lease(lease);
    let mut ticker = tokio::time::interval(timing.every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut metrics = store.raft().metrics();
    let mut leading = false;
    let mut last_leader: Option<NodeId> = None;
    loop {
        // A host that has just won an election places services at once rather than at the next
        // tick: when it was elected because the leader died, the leader's services wait for it.
        tokio::select! {
            _ = ticker.tick() => {}
            Ok(()) = metrics.changed() => {
                let now_leading = store.is_leader();
                let won = now_leading && !leading;
                leading = now_leading;
                if !won {
                    continue;
                }
                ticker.reset();
            }
        }
        leading = store.is_leader();
        let members = store.members();
        let probes = members
            .iter()
            .filter(|(id, _)| *id != this)
            .map(|(id, addr)| {
                let http = http.clone();
                let secret = secret.clone();
                async move {
                    let probe = match http
                        .post(format!("http://{addr}/raft/v1/ping"))
                        .bearer_auth(&secret)
                        .timeout(timing.timeout)
                        .send()
                        .await
                    {
                        Ok(r) if r.status().is_success() => {
                            let body = r.bytes().await.unwrap_or_default();
                            Probe::Answered(LogReach::from_ping(&body).unwrap_or_default())
                        }
                        Err(e) if refused(&e) => Probe::Refused,
                        _ => Probe::Silent,
                    };
                    (*id, probe)
                }
            });
        let now = Instant::now();
        for (id, probe) in futures::future::join_all(probes).await {
            match probe {
                Probe::Answered(r) => {
                    last_ok.insert(id, now);
                    refusals.remove(&id);
                    reach.insert(id, r);
                }
                Probe::Refused => *refusals.entry(id).or_default() += 1,
                Probe::Silent => {
                    refusals.remove(&id);
                }
            }
        }
        last_ok.insert(this, now);
        let alive = |id: &NodeId| {
            members.iter().any(|(m, _)| m == id)
                && now.duration_since(*last_ok.get(id).unwrap_or(&started)) < timing.dead_after
                && refusals.get(id).copied().unwrap_or(0) < REFUSED_DEAD
        };
        if !leading {
            // A candidate knows no leader; it remembers the one it lost so it can stand again.
            if let Some(l) = store.raft().metrics().borrow().current_leader {
                last_leader = Some(l);
            }
            let leader = last_leader;
            // Voters refuse a new leader until their lease on the old one runs out, whatever we
            // know. When the leader's process is gone (refused probes) a follower stands as soon
            // as that lease is over, and again each round until someone wins; when it is only
            // silent, after `timing.leader_dead_after`. Only the live follower whose log reaches
            // furthest stands (the lowest id among equals): raft would refuse the others, and a
            // follower standing again and again with a shorter log bumps the term each time and
            // deposes whoever won (seen as 2–5 s leader kills). Two standing at once split the
            // vote. If the one we pick cannot win, openraft's own timer still elects someone.
            let rivals = members
                .iter()
                .filter(|(id, _)| Some(*id) != leader && *id != this && alive(id))
                .map(|(id, _)| (*id, reach.get(id).copied().unwrap_or_default()));
            let furthest = reaches_furthest((this, store.log().reach()), rivals);
            if let Some(leader) = leader
                && leader != this
                && furthest
            {
                let gone = refusals.get(&leader).copied().unwrap_or(0) >= REFUSED_DEAD;
                let (wait, again) = if gone {
                    (lease, timing.every)
                } else {
                    (timing.leader_dead_after, timing.leader_dead_after)
                };
                let silent = now.duration_since(*last_ok.get(&leader).unwrap_or(&started));
                if silent > wait && last_stood.is_none_or(|t| now.duration_since(t) >= again) {
                    tracing::warn!(
                        leader,
                        gone,
                        "the leader stopped answering; standing for election"
                    );
                    last_stood = Some(now);
                    let _ = store.raft().trigger().elect().await;
                }
            }
            continue;
        }
        if let Err(e) = keep_rules(&mover, &members, &alive, &handing_over).await {
            tracing::warn!(error = %e, "scheduler: cannot place services yet");
        }
    }
}

/// Whether `me` (id, how far its log reaches) should stand rather than any of the live `rivals`:
/// its log reaches further than each of theirs, or as far and its id is lower.
fn reaches_furthest(
    me: (NodeId, LogReach),
    mut rivals: impl Iterator<Item = (NodeId, LogReach)>,
) -> bool {
    let rank = |(id, reach): (NodeId, LogReach)| (reach, std::cmp::Reverse(id));
    rivals.all(|rival| rank(rival) < rank(me))
}

/// How long a host may stay leaving a service before the scheduler deposes it anyway, on top of
/// the service's request time limit (the hand-over's coordinator died, say).
const LEAVING_GRACE_MS: u64 = 5_000;

/// One pass of the scheduler: every service placed as its rules say, given who is alive now.
/// Dead hosts are dropped at once; moves off live hosts are hand-overs, finished in the
/// background.
async fn keep_rules(
    mover: &Mover,
    members: &[(NodeId, String)],
    alive: &impl Fn(&NodeId) -> bool,
    handing_over: &Arc<std::sync::Mutex<HashSet<String>>>,
) -> Result<(), StoreError> {
    let store = mover.store.as_ref();
    let registry = &mover.registry;
    let placements = registry.placements();
    let hosts = placements.hosts();
    let views: Vec<HostView> = members
        .iter()
        .map(|(id, _)| {
            let record = hosts.get(id);
            HostView {
                id: *id,
                name: record.map_or("(unregistered)", |h| h.name.as_str()),
                labels: record.map_or(&NO_LABELS, |h| &h.labels),
                alive: alive(id),
                drained: placements.is_drained(*id),
            }
        })
        .collect();
    let mut load = placements.load();
    let all = placements.all();
    let mut names: Vec<&String> = all.keys().collect();
    names.sort();
    let actor = format!("scheduler on {}", placements.host_name(placements.this()));
    let mut moved = false;
    for name in names {
        let placement = &all[name];
        if handing_over
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(name)
        {
            continue;
        }
        let Some(service) = registry.get(name) else {
            continue;
        };
        let rules = &service.record.placement;
        if !placement.leaving.is_empty() {
            // A hand-over under way; depose the leaving hosts if its coordinator vanished.
            let grace = service.limits.timeout_ms + LEAVING_GRACE_MS;
            if crate::logs::now_ms().saturating_sub(placement.at_ms) > grace {
                let change = Change {
                    active: placement.active.clone(),
                    deposed: placement.leaving.clone(),
                    cause: "hand-over timed out".into(),
                    actor: actor.clone(),
                    unmet: placement.unmet.clone(),
                    ..Change::default()
                };
                moved |= try_place(store, name, placement.epoch, change)
                    .await?
                    .is_some();
            }
            continue;
        }
        let plan = schedule::plan(rules, &placement.active, &views, &load, None);
        if plan.active == placement.active
            && plan.leaving.is_empty()
            && plan.deposed.is_empty()
            && plan.unmet == placement.unmet
        {
            continue;
        }
        let name_of = |ids: &[NodeId]| -> String {
            ids.iter()
                .map(|id| placements.host_name(*id))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let cause = if !plan.deposed.is_empty() {
            format!("failover: {} stopped answering", name_of(&plan.deposed))
        } else if !plan.leaving.is_empty() {
            let why: Vec<String> = plan
                .leaving
                .iter()
                .filter_map(|id| views.iter().find(|v| v.id == *id))
                .filter_map(|v| schedule::why_not(rules, v))
                .collect();
            format!("moving off: {}", why.join("; "))
        } else if plan.active.len() > placement.active.len() {
            format!("{rules}: now active on {}", name_of(&plan.active))
        } else {
            "placement rules cannot be met".to_string()
        };
        for id in &plan.active {
            if !placement.active.contains(id) {
                *load.entry(*id).or_default() += 1;
            }
        }
        let leaving = !plan.leaving.is_empty();
        let change = Change {
            active: plan.active,
            leaving: plan.leaving,
            deposed: plan.deposed,
            cause,
            actor: actor.clone(),
            unmet: plan.unmet,
        };
        if let Some(placed) = try_place(store, name, placement.epoch, change).await? {
            moved = true;
            tracing::warn!(service = %name, active = %name_of(&placed.active), epoch = placed.epoch, cause = %placed.cause, "placement changed");
            if leaving {
                handing_over
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(name.clone());
                let (mover, name, actor, handing_over) = (
                    mover.clone(),
                    name.clone(),
                    actor.clone(),
                    handing_over.clone(),
                );
                tokio::spawn(async move {
                    mover.finish_leaving(&name, placed, &actor).await;
                    handing_over
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&name);
                });
            }
        }
    }
    if moved {
        placements.refresh(store).await?;
    }
    Ok(())
}

static NO_LABELS: BTreeMap<String, String> = BTreeMap::new();

/// Writes a placement change; `None` when someone moved the service first (a previous leader's
/// last act, a migration): the next pass sees it.
async fn try_place(
    store: &ReplicatedStore,
    name: &str,
    epoch: u64,
    change: Change,
) -> Result<Option<Placement>, StoreError> {
    match placement::place(store, name, epoch, change).await {
        Ok(p) => Ok(Some(p)),
        Err(StoreError::Rejected(ApplyError::StaleEpoch { .. })) => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(term: u64, index: u64) -> LogReach {
        LogReach { term, index }
    }

    #[test]
    fn only_the_follower_whose_log_reaches_furthest_stands() {
        // A longer log in the same term wins; a later term wins over a longer log.
        assert!(reaches_furthest(
            (2, at(5, 100)),
            [(1, at(5, 99))].into_iter()
        ));
        assert!(!reaches_furthest(
            (1, at(5, 99)),
            [(2, at(5, 100))].into_iter()
        ));
        assert!(reaches_furthest(
            (3, at(6, 10)),
            [(1, at(5, 99))].into_iter()
        ));
        // Equal logs: the lowest id stands, and only it.
        assert!(reaches_furthest(
            (1, at(5, 100)),
            [(2, at(5, 100))].into_iter()
        ));
        assert!(!reaches_furthest(
            (2, at(5, 100)),
            [(1, at(5, 100))].into_iter()
        ));
        // Alone (every rival dead), a follower stands.
        assert!(reaches_furthest((7, at(1, 1)), std::iter::empty()));
    }

    #[test]
    fn probe_timing_follows_the_lease() {
        let ms = Duration::from_millis;
        // The default lease: the timings the failover bench measured (a silent host was dead
        // after 350 ms then; a killed one is found by refused probes, not by this).
        let default = ProbeTiming::for_lease(doppel_replication::LEADER_LEASE);
        assert_eq!(default.every, ms(50));
        assert_eq!(default.timeout, ms(250));
        assert_eq!(default.dead_after, ms(360));
        assert_eq!(default.leader_dead_after, ms(300));
        // Hosts far apart: nothing is declared dead before two leases without an answer.
        let far = ProbeTiming::for_lease(ms(2_000));
        assert_eq!(far.every, ms(500));
        assert_eq!(far.timeout, ms(2_000));
        assert_eq!(far.dead_after, ms(4_000));
        assert_eq!(far.leader_dead_after, ms(2_120));
    }
}
