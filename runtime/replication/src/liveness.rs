//! Liveness: every host probes every other member several times a second, keeps a verdict on
//! who is alive, and — when the leader stopped answering — stands for election at once rather
//! than after openraft's election timer. The verdicts are published as a [`LiveView`] after each
//! round; the host's scheduler acts on them while this host leads, and operators' moves and
//! `doppel status` read them. This is the one probe loop of a host.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::replicated::ReplicatedStore;
use crate::transport::{PeerClient, Probe};
use crate::types::{LogReach, NodeId};

/// How often members are probed, how long a probe may take, how long without an answer before a
/// host counts as dead, and how long a silent leader is given: all follow the leader lease
/// (`doppel host --leader-lease`), so hosts far apart, which need a longer lease, are not declared
/// dead for a slow answer either. The floors are what the default 180 ms lease uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ProbeTiming {
    pub(crate) every: Duration,
    pub(crate) timeout: Duration,
    /// Several probe rounds: one lost packet or a slow answer does not move a service.
    pub(crate) dead_after: Duration,
    /// How long without an answer from the leader before a follower stands for election itself
    /// instead of waiting for its election timer (which openraft starts only after the leader's
    /// lease, then adds 2/3 to 1 lease more and, for a follower with a shorter log, 2 leases more)
    /// when the leader is merely silent: a slow leader is not a dead one. At least the lease and
    /// a margin: standing while voters still refuse would only bump the term and depose a live
    /// leader.
    pub(crate) leader_dead_after: Duration,
}

impl ProbeTiming {
    pub(crate) fn for_lease(lease: Duration) -> ProbeTiming {
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

/// What one host knows of the cluster's liveness after a probe round.
#[derive(Clone, Debug, Default)]
pub struct LiveView {
    /// Whether this host leads (and so may act on the verdicts).
    pub leading: bool,
    /// Every member: id and peer address.
    pub members: Vec<(NodeId, String)>,
    /// The members that answered recently (this host always).
    pub alive: BTreeSet<NodeId>,
}

impl LiveView {
    /// Whether member `id` is alive.
    pub fn is_alive(&self, id: NodeId) -> bool {
        self.alive.contains(&id)
    }

    /// The members' ids.
    pub fn member_ids(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.members.iter().map(|(id, _)| *id)
    }
}

/// A watch on this host's [`LiveView`], updated after every probe round.
#[derive(Clone)]
pub struct Liveness {
    view: watch::Receiver<Arc<LiveView>>,
}

impl Liveness {
    /// The latest verdicts.
    pub fn now(&self) -> Arc<LiveView> {
        self.view.borrow().clone()
    }

    /// Waits for the next round's verdicts; `None` once the probe loop has stopped.
    pub async fn next(&mut self) -> Option<Arc<LiveView>> {
        self.view.changed().await.ok()?;
        Some(self.view.borrow_and_update().clone())
    }
}

/// Starts the probe loop for host `this`; it runs until the returned task is aborted.
pub(crate) fn spawn(
    store: Arc<ReplicatedStore>,
    peers: PeerClient,
    this: NodeId,
) -> (Liveness, tokio::task::JoinHandle<()>) {
    let members = store.members();
    // Until the first round, every member counts as alive: nobody has been silent for long.
    let first = LiveView {
        leading: store.is_leader(),
        alive: members.iter().map(|(id, _)| *id).collect(),
        members,
    };
    let (tx, rx) = watch::channel(Arc::new(first));
    let task = tokio::spawn(probe_loop(store, peers, this, tx));
    (Liveness { view: rx }, task)
}

async fn probe_loop(
    store: Arc<ReplicatedStore>,
    peers: PeerClient,
    this: NodeId,
    publish: watch::Sender<Arc<LiveView>>,
) {
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
        // A host that has just won an election publishes at once rather than at the next tick:
        // when it was elected because the leader died, the leader's services wait for it.
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
                let peers = peers.clone();
                async move { (*id, peers.ping(addr, timing.timeout).await) }
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
            now.duration_since(*last_ok.get(id).unwrap_or(&started)) < timing.dead_after
                && refusals.get(id).copied().unwrap_or(0) < REFUSED_DEAD
        };
        let view = LiveView {
            leading,
            alive: members
                .iter()
                .map(|(id, _)| *id)
                .filter(|id| alive(id))
                .collect(),
            members: members.clone(),
        };
        if publish.send(Arc::new(view)).is_err() {
            return;
        }
        if leading {
            continue;
        }
        // A candidate knows no leader; it remembers the one it lost so it can stand again.
        if let Some(l) = store.raft().metrics().borrow().current_leader {
            last_leader = Some(l);
        }
        let Some(leader) = last_leader.filter(|l| *l != this) else {
            continue;
        };
        // Voters refuse a new leader until their lease on the old one runs out, whatever we
        // know. When the leader's process is gone (refused probes) a follower stands as soon as
        // that lease is over, and again each round until someone wins; when it is only silent,
        // after `timing.leader_dead_after`. Only the live follower whose log reaches furthest
        // stands (the lowest id among equals): raft would refuse the others, and a follower
        // standing again and again with a shorter log bumps the term each time and deposes
        // whoever won (seen as 2–5 s leader kills). Two standing at once split the vote. If the
        // one we pick cannot win, openraft's own timer still elects someone.
        let rivals = members
            .iter()
            .filter(|(id, _)| *id != leader && *id != this && alive(id))
            .map(|(id, _)| (*id, reach.get(id).copied().unwrap_or_default()));
        if !reaches_furthest((this, store.log().reach()), rivals) {
            continue;
        }
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
        let default = ProbeTiming::for_lease(crate::node::LEADER_LEASE);
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
