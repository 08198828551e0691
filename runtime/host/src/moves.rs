//! Planned moves of a service between hosts, with no failed request:
//!
//! 1. the target gets ready: it has the service's version loaded and instantiates it once;
//! 2. the switch: one placement change makes the target active and the old host *leaving* —
//!    from then on every host, the old one included, sends new requests to the target, while the
//!    old host's requests keep running and keep their right to write;
//! 3. the old host reports once its last request is done (it counts them from before their route
//!    is decided, so none slips through);
//! 4. a second placement change deposes the old host: any write it still tried would be refused.
//!
//! `doppel migrate` runs these steps from the host the operator talks to; the scheduler runs
//! steps 3–4 for the moves it decides itself (a drained host, changed rules). The steps that run
//! on the old host and on the target are the host's peer routes here ([`host_routes`]), served
//! and authenticated by the peer transport like every peer route.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use doppel_api::MoveReport;
use doppel_replication::{HostRoute, Liveness, Member, NodeId, PeerError};
use doppel_store::StoreError;
use serde::{Deserialize, Serialize};

use crate::invoke::new_store;
use crate::placement::{Change, Placement};
use crate::schedule;
use crate::services::Registry;

/// What the move steps need.
#[derive(Clone)]
pub struct Mover {
    /// This host's membership: the peer transport for the steps on other hosts.
    pub member: Arc<Member>,
    /// This host's services.
    pub registry: Arc<Registry>,
    /// Who is alive, from the probe loop.
    pub liveness: Liveness,
}

/// Step 1, on the target: get ready to serve a service.
const WARM: HostRoute = HostRoute("/warm");
/// Step 3, on the old host: report once the requests of a service running here are done.
const HANDOVER: HostRoute = HostRoute("/handover");
/// A service's counters on a host, read before a move to report what it forwarded meanwhile.
const COUNTERS: HostRoute = HostRoute("/counters");

/// Why a move could not be made.
#[derive(Debug, thiserror::Error)]
pub enum MoveError {
    /// The operator asked for something that cannot be (unknown host, a rule, already there).
    #[error("{0}")]
    Refused(String),
    /// No such service.
    #[error("no service named {0:?} is deployed")]
    NoService(String),
    /// A peer did not do its part.
    #[error("{0}")]
    Peer(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What [`WARM`] asks.
#[derive(Serialize, Deserialize)]
struct WarmRequest {
    service: String,
    version: u64,
}

/// What [`HANDOVER`] asks.
#[derive(Serialize, Deserialize)]
struct HandoverRequest {
    service: String,
    /// The epoch that made this host leaving.
    epoch: u64,
}

/// A service's counters on one host.
#[derive(Serialize, Deserialize, Default, Clone, Copy)]
struct Counters {
    forwarded: u64,
    errors: u64,
    in_flight: u64,
}

#[derive(Serialize, Deserialize)]
struct HandoverReport {
    /// Requests running when this host learned it was leaving.
    finished: u64,
    /// How long they took to finish.
    drain_ms: u64,
    /// Requests still running at the deadline (they will be refused if they write).
    left: u64,
    counters: Counters,
}

/// The host's peer routes of moves, for [`Member::peer_router`], which serves and authenticates
/// them.
pub fn host_routes(mover: Mover) -> Router {
    Router::new()
        .route(WARM.0, post(warm))
        .route(HANDOVER.0, post(handover))
        .route(COUNTERS.0, post(counters))
        .with_state(mover)
}

fn peer_error(status: StatusCode, text: impl Into<String>) -> Response {
    (status, text.into()).into_response()
}

async fn warm(State(mover): State<Mover>, Json(req): Json<WarmRequest>) -> Response {
    let deadline = Instant::now() + Duration::from_secs(60);
    let started = Instant::now();
    let service = loop {
        match mover.registry.get(&req.service) {
            Some(s) if s.record.version >= req.version => break s,
            _ if Instant::now() > deadline => {
                return peer_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!(
                        "version {} of {} is not loaded here after 60 s",
                        req.version, req.service
                    ),
                );
            }
            _ => {
                if let Err(e) = mover.registry.sync().await {
                    tracing::warn!(error = %e, "warm-up: cannot sync services yet");
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    // One instance, so the first real request finds its memory and code paged in.
    let mut wstore = new_store(
        mover.registry.runtime(),
        mover.registry.store(),
        &service,
        None,
    );
    if let Err(e) = service.pre.instantiate_async(&mut wstore).await {
        return peer_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot instantiate {}: {e:#}", req.service),
        );
    }
    Json(started.elapsed().as_millis() as u64).into_response()
}

fn counters_of(registry: &Registry, service: &str) -> Counters {
    let (_, stats) = registry.log_and_stats(service);
    Counters {
        forwarded: stats.forwarded.load(Ordering::Relaxed),
        errors: stats.errors.load(Ordering::Relaxed),
        in_flight: stats.in_flight.load(Ordering::SeqCst),
    }
}

async fn counters(State(mover): State<Mover>, Json(service): Json<String>) -> Json<Counters> {
    Json(counters_of(&mover.registry, &service))
}

async fn handover(State(mover): State<Mover>, Json(req): Json<HandoverRequest>) -> Response {
    let registry = &mover.registry;
    let placements = registry.placements();
    // Route by the placement that makes this host leaving before counting what still runs.
    if placements.get(&req.service).map_or(0, |p| p.epoch) < req.epoch
        && let Err(e) = placements.refresh().await
    {
        return peer_error(StatusCode::SERVICE_UNAVAILABLE, e.to_string());
    }
    let timeout = registry
        .get(&req.service)
        .map_or(30_000, |s| s.limits.timeout_ms);
    let (_, stats) = registry.log_and_stats(&req.service);
    let started = Instant::now();
    let finished = stats.in_flight.load(Ordering::SeqCst);
    let deadline = started + Duration::from_millis(timeout + 1_000);
    while stats.in_flight.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let counters = counters_of(registry, &req.service);
    Json(HandoverReport {
        finished,
        drain_ms: started.elapsed().as_millis() as u64,
        left: counters.in_flight,
        counters,
    })
    .into_response()
}

impl Mover {
    fn peer_of(&self, id: NodeId) -> Result<String, MoveError> {
        self.registry
            .placements()
            .hosts()
            .get(&id)
            .map(|h| h.peer.clone())
            .ok_or_else(|| MoveError::Peer(format!("host #{id} has not registered an address")))
    }

    /// Runs `route` on host `host` (with `body` as a POST); errors name the host.
    async fn call<T: Serialize, R: for<'de> Deserialize<'de>>(
        &self,
        host: NodeId,
        route: HostRoute,
        body: Option<&T>,
        timeout: Duration,
    ) -> Result<R, MoveError> {
        let name = self.registry.placements().host_name(host);
        let addr = self.peer_of(host)?;
        self.member
            .peers()
            .call(&addr, route, body, timeout)
            .await
            .map_err(|e| match e {
                PeerError::Status { status, text } => {
                    MoveError::Peer(format!("{name} refused ({status}): {text}"))
                }
                e => MoveError::Peer(format!("{name} does not answer: {e}")),
            })
    }

    /// Whether host `host` answers probes now.
    fn answers(&self, host: NodeId) -> bool {
        self.liveness.now().is_alive(host)
    }

    /// Finds the host `to` names: a host name (or id), or `KEY=VALUE` for the least busy live
    /// host with that label where the service may run and is not active yet.
    async fn resolve_target(
        &self,
        service: &str,
        to: &str,
        placement: &Placement,
    ) -> Result<NodeId, MoveError> {
        let placements = self.registry.placements();
        let hosts = placements.hosts();
        let rules = self
            .registry
            .get(service)
            .map(|s| s.record.placement.clone())
            .unwrap_or_default();
        let view = |id: NodeId| {
            let mut views = placements.views([id], |id| self.answers(id));
            views.remove(0)
        };
        if let Some((key, value)) = to.split_once('=') {
            let load = placements.load();
            let mut candidates: Vec<NodeId> = hosts
                .values()
                .filter(|h| h.labels.get(key).is_some_and(|v| v == value))
                .filter(|h| !placement.active.contains(&h.id))
                .map(|h| h.id)
                .collect();
            candidates.sort_by_key(|id| (load.get(id).copied().unwrap_or(0), *id));
            let mut refusals = Vec::new();
            for id in candidates {
                match schedule::why_not(&rules, &view(id)) {
                    None => return Ok(id),
                    Some(why) => refusals.push(why),
                }
            }
            return Err(MoveError::Refused(if refusals.is_empty() {
                format!("no host with {to} where {service} is not active already")
            } else {
                format!(
                    "no host with {to} can take {service}: {}",
                    refusals.join("; ")
                )
            }));
        }
        let id = hosts
            .values()
            .find(|h| h.name == to || h.id.to_string() == to)
            .map(|h| h.id)
            .ok_or_else(|| {
                MoveError::Refused(format!(
                    "no host named {to:?} is in the cluster (see `doppel status`)"
                ))
            })?;
        if placement.active.contains(&id) {
            return Err(MoveError::Refused(format!(
                "{service} is already active on {to}"
            )));
        }
        if let Some(why) = schedule::why_not(&rules, &view(id)) {
            return Err(MoveError::Refused(format!(
                "{service} cannot move to {to}: {why} (it needs {rules})"
            )));
        }
        Ok(id)
    }

    /// Checks a migration can start; returns the service's placement, the source and target.
    pub async fn plan_migration(
        &self,
        service: &str,
        to: &str,
        from: Option<&str>,
    ) -> Result<(Placement, NodeId, NodeId), MoveError> {
        let placements = self.registry.placements();
        placements.refresh().await?;
        if self.registry.get(service).is_none() {
            return Err(MoveError::NoService(service.to_string()));
        }
        let placement = placements
            .get(service)
            .ok_or_else(|| MoveError::NoService(service.to_string()))?;
        if !placement.leaving.is_empty() {
            let names: Vec<String> = placement
                .leaving
                .iter()
                .map(|id| placements.host_name(*id))
                .collect();
            return Err(MoveError::Refused(format!(
                "{service} is being handed over from {} already; wait a moment",
                names.join(", ")
            )));
        }
        let source = match from {
            Some(from) => *placement
                .active
                .iter()
                .find(|id| placements.host_name(**id) == from || id.to_string() == from)
                .ok_or_else(|| {
                    MoveError::Refused(format!("{service} is not active on {from:?}"))
                })?,
            None => *placement.active.first().ok_or_else(|| {
                MoveError::Refused(format!(
                    "{service} is not active anywhere: {}",
                    placement.unmet.clone().unwrap_or_default()
                ))
            })?,
        };
        let target = self.resolve_target(service, to, &placement).await?;
        Ok((placement, source, target))
    }

    /// Moves `service` from `source` to `target` (from [`Mover::plan_migration`]), telling
    /// `progress` about each step.
    pub async fn migrate(
        &self,
        service: &str,
        placement: Placement,
        source: NodeId,
        target: NodeId,
        actor: &str,
        progress: impl Fn(String),
    ) -> Result<MoveReport, MoveError> {
        let placements = self.registry.placements();
        let (from_name, to_name) = (placements.host_name(source), placements.host_name(target));
        let version = self
            .registry
            .get(service)
            .ok_or_else(|| MoveError::NoService(service.to_string()))?
            .record
            .version;
        let source_up = self.answers(source);
        let before = if source_up {
            self.call(source, COUNTERS, Some(&service), Duration::from_secs(5))
                .await?
        } else {
            Counters::default()
        };
        progress(format!("warming up {service} on {to_name}"));
        let warm_ms: u64 = self
            .call(
                target,
                WARM,
                Some(&WarmRequest {
                    service: service.to_string(),
                    version,
                }),
                Duration::from_secs(90),
            )
            .await?;
        progress(format!("switching {service} to {to_name}"));
        let switch = Instant::now();
        let mut active: Vec<NodeId> = vec![target];
        active.extend(placement.active.iter().filter(|id| **id != source));
        let cause = format!("migrate from {from_name} to {to_name}");
        let switched = placements
            .propose(
                service,
                placement.epoch,
                Change {
                    active: active.clone(),
                    leaving: if source_up { vec![source] } else { vec![] },
                    deposed: if source_up { vec![] } else { vec![source] },
                    cause: cause.clone(),
                    actor: actor.to_string(),
                    unmet: placement.unmet.clone(),
                },
            )
            .await?
            .ok_or_else(|| moved_meanwhile(service))?;
        placements.refresh().await?;
        let switch_ms = switch.elapsed().as_millis() as u64;
        if !source_up {
            return Ok(MoveReport {
                service: service.to_string(),
                from: from_name,
                to: to_name,
                epoch: switched.epoch,
                warm_ms,
                switch_ms,
                drain_ms: 0,
                finished: 0,
                forwarded: 0,
                errors: 0,
            });
        }
        progress(format!(
            "{from_name} is finishing its requests of {service}"
        ));
        let (report, epoch) = self
            .finish_handover(service, &switched, source, actor, &cause)
            .await?;
        Ok(MoveReport {
            service: service.to_string(),
            from: from_name,
            to: to_name,
            epoch,
            warm_ms,
            switch_ms,
            drain_ms: report.drain_ms,
            finished: report.finished,
            forwarded: report.counters.forwarded.saturating_sub(before.forwarded),
            errors: report.counters.errors.saturating_sub(before.errors),
        })
    }

    /// Steps 3 and 4 for the host `leaving` that `switched` made leaving: waits for its requests,
    /// then deposes it. Returns its report and the final epoch.
    async fn finish_handover(
        &self,
        service: &str,
        switched: &Placement,
        leaving: NodeId,
        actor: &str,
        cause: &str,
    ) -> Result<(HandoverReport, u64), MoveError> {
        let report = match self
            .call::<_, HandoverReport>(
                leaving,
                HANDOVER,
                Some(&HandoverRequest {
                    service: service.to_string(),
                    epoch: switched.epoch,
                }),
                Duration::from_secs(3_700),
            )
            .await
        {
            Ok(report) => report,
            // Gone meanwhile: nothing of it can finish; depose it all the same.
            Err(MoveError::Peer(why)) => {
                tracing::warn!(service, %why, "hand-over: the old host did not report; deposing it");
                HandoverReport {
                    finished: 0,
                    drain_ms: 0,
                    left: 0,
                    counters: Counters::default(),
                }
            }
            Err(e) => return Err(e),
        };
        let placements = self.registry.placements();
        let done = placements
            .propose(
                service,
                switched.epoch,
                Change {
                    active: switched.active.clone(),
                    leaving: switched
                        .leaving
                        .iter()
                        .copied()
                        .filter(|id| *id != leaving)
                        .collect(),
                    deposed: vec![leaving],
                    cause: format!(
                        "{cause}: {} finished its requests",
                        placements.host_name(leaving)
                    ),
                    actor: actor.to_string(),
                    unmet: switched.unmet.clone(),
                },
            )
            .await?
            .ok_or_else(|| moved_meanwhile(service))?;
        placements.refresh().await?;
        Ok((report, done.epoch))
    }

    /// For the scheduler: finishes the hand-over from every host `switched` made leaving.
    pub async fn finish_leaving(&self, service: &str, switched: Placement, actor: &str) {
        let cause = switched.cause.clone();
        let mut current = switched;
        for leaving in current.leaving.clone() {
            match self
                .finish_handover(service, &current, leaving, actor, &cause)
                .await
            {
                Ok(_) => match self.registry.placements().get(service) {
                    Some(p) => current = p,
                    None => return,
                },
                Err(e) => {
                    tracing::warn!(service, error = %e, "hand-over not finished; the scheduler retries later");
                    return;
                }
            }
        }
    }
}

fn moved_meanwhile(service: &str) -> MoveError {
    MoveError::Refused(format!(
        "{service} was moved by someone else meanwhile; see `doppel events {service}` and retry"
    ))
}
