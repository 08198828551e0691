//! The scheduler: while this host leads, it keeps every service placed as its rules say, acting
//! on each round of the liveness verdicts (`doppel-replication`'s probe loop). A service whose
//! active host stopped answering moves to a live eligible standby in the next epoch (the dead
//! host fenced), missing replicas are added, and a service on a drained host is handed over.
//! Only the leader acts, so a host cut off from the majority never decides anything; each change
//! is one placement proposal through the store, so it happens once, everywhere, or not at all.
//!
//! A round whose inputs are those of the last pass — the same members alive and no change to
//! the cluster's tables (services, placements, hosts, drain marks) since — is skipped, except
//! once every [`FULL_PASS_EVERY`] (hand-overs time out by the clock): with 1,000 services,
//! planning each one every 45 ms was most of an idle host's CPU.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use doppel_replication::LiveView;
use doppel_store::StoreError;

use crate::clock::now_ms;
use crate::moves::Mover;
use crate::placement::Change;
use crate::schedule;

/// Services whose hand-over the scheduler is finishing in the background.
type HandingOver = Arc<std::sync::Mutex<HashSet<String>>>;

/// Keeps every service placed by its rules while this host leads: off dead hosts at once, off
/// drained ones by hand-over. Runs until the liveness watch ends or the task is aborted.
pub async fn run(mover: Mover) {
    let handing_over = HandingOver::default();
    let mut liveness = mover.liveness.clone();
    let changes = mover.member.store().system_changes();
    let mut last: Option<Inputs> = None;
    let mut last_pass = Instant::now();
    while let Some(view) = liveness.next().await {
        if !view.leading {
            last = None;
            continue;
        }
        let inputs = Inputs {
            members: view.member_ids().collect(),
            alive: view.alive.clone(),
            tables: *changes.borrow(),
        };
        if last.as_ref() == Some(&inputs) && last_pass.elapsed() < FULL_PASS_EVERY {
            continue;
        }
        match keep_rules(&mover, &view, &handing_over).await {
            Ok(()) => {
                last = Some(inputs);
                last_pass = Instant::now();
            }
            Err(e) => {
                last = None;
                tracing::warn!(error = %e, "scheduler: cannot place services yet");
            }
        }
    }
}

/// What a pass of the scheduler decides from.
#[derive(PartialEq, Eq)]
struct Inputs {
    members: Vec<doppel_replication::NodeId>,
    alive: BTreeSet<doppel_replication::NodeId>,
    /// The count of changes to the cluster's tables.
    tables: u64,
}

/// How long the scheduler goes without a pass when nothing it decides from has changed.
const FULL_PASS_EVERY: Duration = Duration::from_secs(1);

/// How long a host may stay leaving a service before the scheduler deposes it anyway, on top of
/// the service's request time limit (the hand-over's coordinator died, say).
const LEAVING_GRACE_MS: u64 = 5_000;

/// One pass of the scheduler: every service placed as its rules say, given who is alive now.
/// Dead hosts are dropped at once; moves off live hosts are hand-overs, finished in the
/// background.
async fn keep_rules(
    mover: &Mover,
    live: &LiveView,
    handing_over: &HandingOver,
) -> Result<(), StoreError> {
    let registry = &mover.registry;
    let placements = registry.placements();
    let views = placements.views(live.member_ids(), |id| live.is_alive(id));
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
            if now_ms().saturating_sub(placement.at_ms) > grace {
                let change = Change {
                    active: placement.active.clone(),
                    deposed: placement.leaving.clone(),
                    cause: "hand-over timed out".into(),
                    actor: actor.clone(),
                    unmet: placement.unmet.clone(),
                    ..Change::default()
                };
                moved |= placements
                    .propose(name, placement.epoch, change)
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
        let name_of = |ids: &[_]| placements.host_names(ids);
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
        if let Some(placed) = placements.propose(name, placement.epoch, change).await? {
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
        placements.refresh().await?;
    }
    Ok(())
}
