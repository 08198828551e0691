//! The operator's admin routes for moving services: migrate, drain, undrain, and the placement
//! history. Migrations and drains answer with a stream of [`Progress`] lines (JSON lines), so
//! the CLI shows each step as it happens and ends with what was measured.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use axum::Extension;
use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use doppel_api::{DrainRequest, HostStatus, MigrateRequest, PlacementEvent, Progress};
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio_stream::StreamExt as _;

use super::{AdminError, AdminResult, AdminState, actor};
use crate::hosts::{self, HostRecord, RemoveError};
use crate::moves::MoveError;
use crate::placement;

impl From<MoveError> for AdminError {
    fn from(e: MoveError) -> Self {
        let status = match e {
            MoveError::Store(e) => return e.into(),
            MoveError::Refused(_) => StatusCode::CONFLICT,
            MoveError::NoService(_) => StatusCode::NOT_FOUND,
            MoveError::Peer(_) => StatusCode::BAD_GATEWAY,
        };
        AdminError(status, e.to_string())
    }
}

/// A JSON-lines answer fed by the returned sender.
pub(crate) fn progress_stream() -> (mpsc::UnboundedSender<Progress>, Response) {
    let (tx, rx) = mpsc::unbounded_channel::<Progress>();
    let lines = tokio_stream::wrappers::UnboundedReceiverStream::new(rx).map(|p| {
        let mut line = serde_json::to_vec(&p).unwrap_or_default();
        line.push(b'\n');
        Ok::<_, std::convert::Infallible>(Bytes::from(line))
    });
    let response = (
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(lines),
    )
        .into_response();
    (tx, response)
}

fn body<T: for<'de> Deserialize<'de>>(bytes: &Bytes, what: &str) -> AdminResult<T> {
    serde_json::from_slice(bytes)
        .map_err(|e| AdminError(StatusCode::BAD_REQUEST, format!("bad {what} request: {e}")))
}

/// `POST /v1/services/{name}/migrate`.
pub async fn migrate(
    State(state): State<AdminState>,
    Path(name): Path<String>,
    Extension(caller): Extension<super::tokens::Caller>,
    bytes: Bytes,
) -> AdminResult<Response> {
    let request: MigrateRequest = body(&bytes, "migrate")?;
    let mover = state.mover.clone();
    // Refusals (unknown host, a rule, already there) come back as an error status, before any
    // progress line.
    let (placement, source, target) = mover
        .plan_migration(&name, &request.to, request.from.as_deref())
        .await?;
    let actor = actor(&state, &caller);
    let (tx, response) = progress_stream();
    tokio::spawn(async move {
        let step = |text: String| {
            let _ = tx.send(Progress::Step { text });
        };
        let started = Instant::now();
        match mover
            .migrate(&name, placement, source, target, &actor, step)
            .await
        {
            Ok(report) => {
                let text = format!(
                    "{} moved from {} to {} in {} ms (epoch {})",
                    report.service,
                    report.from,
                    report.to,
                    started.elapsed().as_millis(),
                    report.epoch
                );
                let _ = tx.send(Progress::Moved(report));
                let _ = tx.send(Progress::Done { text });
            }
            Err(e) => {
                let _ = tx.send(Progress::Failed {
                    error: e.to_string(),
                });
            }
        }
    });
    Ok(response)
}

fn find_host(state: &AdminState, name: &str) -> AdminResult<HostRecord> {
    state
        .registry
        .placements()
        .hosts()
        .into_values()
        .find(|h| h.name == name || h.id.to_string() == name)
        .ok_or_else(|| {
            AdminError(
                StatusCode::NOT_FOUND,
                format!("no host named {name:?} is in the cluster (see `doppel status`)"),
            )
        })
}

/// `POST /v1/hosts/{name}/drain`: marks the host drained, lets the scheduler hand every service
/// on it over to eligible hosts, reports each move, and optionally removes the host.
pub async fn drain(
    State(state): State<AdminState>,
    Path(name): Path<String>,
    bytes: Bytes,
) -> AdminResult<Response> {
    let request: DrainRequest = if bytes.is_empty() {
        DrainRequest::default()
    } else {
        body(&bytes, "drain")?
    };
    let placements = state.registry.placements().clone();
    placements.refresh().await?;
    let host = find_host(&state, &name)?;
    hosts::set_drained(state.member.store().as_ref(), host.id, true).await?;
    placements.refresh().await?;
    let (tx, response) = progress_stream();
    tokio::spawn(async move {
        let started = Instant::now();
        let say = |text: String| {
            let _ = tx.send(Progress::Step { text });
        };
        say(format!(
            "{} is drained: no service becomes active on it; moving its services off",
            host.name
        ));
        let on_host =
            |p: &placement::Placement| p.active.contains(&host.id) || p.leaving.contains(&host.id);
        let mut remaining: HashSet<String> = placements
            .all()
            .into_iter()
            .filter(|(_, p)| on_host(p))
            .map(|(n, _)| n)
            .collect();
        let total = remaining.len();
        // The longest any hand-over may take: its service's request limit, plus slack.
        let longest = remaining
            .iter()
            .filter_map(|n| state.registry.get(n))
            .map(|s| s.limits.timeout_ms)
            .max()
            .unwrap_or(0);
        let deadline = started + Duration::from_millis(longest + 30_000);
        let mut stuck = Vec::new();
        let mut rounds = 0u64;
        loop {
            // Placement changes reach this host's view as they commit; a read of its own now and
            // then is only a safety net (every read asks the leader).
            rounds += 1;
            if rounds.is_multiple_of(25)
                && let Err(e) = placements.refresh().await
            {
                tracing::warn!(error = %e, "drain: cannot read placements yet");
            }
            let all = placements.all();
            stuck.clear();
            for name in remaining.clone() {
                match all.get(&name) {
                    Some(p) if on_host(p) => {
                        // Kept because no other host may run it.
                        if p.leaving.is_empty() && p.unmet.is_some() {
                            stuck.push(format!("{name} ({})", p.unmet.clone().unwrap_or_default()));
                        }
                    }
                    Some(p) => {
                        let to: Vec<String> = p
                            .active
                            .iter()
                            .map(|id| placements.host_name(*id))
                            .collect();
                        say(format!(
                            "{name}: now active on {} (epoch {}), {} ms into the drain",
                            to.join(", "),
                            p.epoch,
                            started.elapsed().as_millis()
                        ));
                        remaining.remove(&name);
                    }
                    None => {
                        remaining.remove(&name);
                    }
                }
            }
            if remaining.len() == stuck.len() || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let moved = total - remaining.len();
        let took = started.elapsed().as_millis();
        if !remaining.is_empty() {
            say(format!(
                "{} service(s) stay on {}: {}",
                remaining.len(),
                host.name,
                if stuck.is_empty() {
                    "their hand-over did not finish in time".to_string()
                } else {
                    stuck.join("; ")
                }
            ));
        }
        if request.remove {
            if !remaining.is_empty() {
                let _ = tx.send(Progress::Failed {
                    error: format!(
                        "not removing {}: services still run there (see above)",
                        host.name
                    ),
                });
                return;
            }
            say(format!("removing {} from the cluster", host.name));
            match hosts::remove(&state.member, &host.id.to_string()).await {
                Ok(_) => say(format!(
                    "{} is out of the cluster; stop its process (its data directory can go)",
                    host.name
                )),
                Err(RemoveError::NoHost(_)) => {}
                Err(e) => {
                    let _ = tx.send(Progress::Failed {
                        error: format!("cannot remove {}: {e}", host.name),
                    });
                    return;
                }
            }
        }
        let _ = tx.send(Progress::Done {
            text: format!(
                "drained {} in {took} ms: {moved} of {total} service(s) moved",
                host.name
            ),
        });
    });
    Ok(response)
}

/// `POST /v1/hosts/{name}/undrain`.
pub async fn undrain(
    State(state): State<AdminState>,
    Path(name): Path<String>,
) -> AdminResult<Json<HostStatus>> {
    let placements = state.registry.placements();
    placements.refresh().await?;
    let host = find_host(&state, &name)?;
    hosts::set_drained(state.member.store().as_ref(), host.id, false).await?;
    placements.refresh().await?;
    let info = hosts::info(&state.member, &state.mover.liveness).await?;
    info.hosts
        .into_iter()
        .find(|h| h.id == host.id.to_string())
        .map(Json)
        .ok_or_else(|| {
            AdminError(
                StatusCode::NOT_FOUND,
                format!("{name} is no longer a member"),
            )
        })
}

#[derive(Deserialize)]
pub struct EventsQuery {
    service: Option<String>,
    limit: Option<usize>,
}

/// `GET /v1/events`: every placement change, oldest first.
pub async fn events(
    State(state): State<AdminState>,
    Query(q): Query<EventsQuery>,
) -> AdminResult<Json<Vec<PlacementEvent>>> {
    let placements = state.registry.placements();
    let history = placements
        .history(q.service.as_deref(), q.limit.unwrap_or(1_000))
        .await?;
    let names =
        |ids: &[u64]| -> Vec<String> { ids.iter().map(|id| placements.host_name(*id)).collect() };
    Ok(Json(
        history
            .into_iter()
            .map(|(service, p)| PlacementEvent {
                time_ms: p.at_ms,
                service,
                epoch: p.epoch,
                active: names(&p.active),
                leaving: names(&p.leaving),
                cause: p.cause,
                actor: p.actor,
                unmet: p.unmet,
            })
            .collect(),
    ))
}
