//! Backup targets (`doppel backup add|ls|rm`) and the state hash (`doppel status --hash`). The
//! targets live in the replicated store (`doppel_backup::targets`); the leader ships to them
//! (`doppel_backup::ship`), so how shipping goes is asked of the leader.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use doppel_api::{BackupInfo, BackupTarget, ShipStatus, StateHash};
use doppel_backup::{BackupError, targets};
use doppel_replication::HostRoute;
use doppel_store::portable;

use super::{AdminError, AdminResult, AdminState};

/// The peer route on which the leader answers how shipping goes.
const STATUS: HostRoute = HostRoute("/backup/status");

impl From<BackupError> for AdminError {
    fn from(e: BackupError) -> Self {
        let status = match e {
            BackupError::Store(e) => return e.into(),
            BackupError::BadKey(_) | BackupError::BadLocation(_) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            BackupError::Exists(_) => StatusCode::CONFLICT,
            BackupError::NotFound(_) => StatusCode::NOT_FOUND,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        AdminError(status, e.to_string())
    }
}

/// `POST /v1/backups`: adds a target; shipping to it starts within a second.
pub async fn add(
    State(state): State<AdminState>,
    Json(mut target): Json<BackupTarget>,
) -> AdminResult<Json<BackupTarget>> {
    target.added_ms = crate::clock::now_ms();
    targets::add(state.member.store(), &target).await?;
    Ok(Json(target))
}

/// `DELETE /v1/backups/{name}`: stops shipping to a target; deletes nothing there.
pub async fn remove(
    State(state): State<AdminState>,
    Path(name): Path<String>,
) -> AdminResult<Json<BackupTarget>> {
    match targets::remove(state.member.store(), &name).await? {
        Some(target) => Ok(Json(target)),
        None => Err(AdminError(
            StatusCode::NOT_FOUND,
            format!("there is no backup target called {name:?}; `doppel backup ls` lists them"),
        )),
    }
}

/// `GET /v1/backups`: every target and how shipping to it goes.
pub async fn list(State(state): State<AdminState>) -> AdminResult<Json<Vec<BackupInfo>>> {
    // Without a majority this host's own copy still says which targets there are (`doppel
    // status` must work on a host cut off from the others).
    let targets = match targets::list(state.member.store()).await {
        Err(BackupError::Store(doppel_store::StoreError::Unavailable(_))) => {
            targets::list_local(state.member.store())?
        }
        other => other?,
    };
    let statuses = leader_statuses(&state).await;
    Ok(Json(
        targets
            .into_iter()
            .map(|target| BackupInfo {
                status: statuses.get(&target.name).cloned(),
                target,
            })
            .collect(),
    ))
}

/// How shipping goes, from the leader (empty when no leader answers).
pub async fn leader_statuses(state: &AdminState) -> BTreeMap<String, ShipStatus> {
    let store = state.member.store();
    if store.is_leader() {
        return state.shipper.status();
    }
    let Some(leader) = state.member.status().await.leader else {
        return BTreeMap::new();
    };
    let Some(addr) = store.address_of(leader) else {
        return BTreeMap::new();
    };
    state
        .member
        .peers()
        .call::<(), BTreeMap<String, ShipStatus>>(&addr, STATUS, None, Duration::from_secs(3))
        .await
        .unwrap_or_default()
}

/// `GET /v1/status/hash`: the digest of this host's copy of the services' state.
pub async fn hash(State(state): State<AdminState>) -> AdminResult<Json<StateHash>> {
    let store = state.member.store().clone();
    let answer = tokio::task::spawn_blocking(move || -> Result<StateHash, AdminError> {
        let (index, pairs) = store.export_applied()?;
        let (hash, keys) = portable::state_hash(&pairs);
        Ok(StateHash {
            index,
            keys,
            hash: hex::encode(hash),
        })
    })
    .await
    .map_err(|e| AdminError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
    Ok(Json(answer))
}

/// The peer route on which this host answers how its shipping goes.
pub fn peer_routes(shipper: doppel_backup::ship::Shipper) -> axum::Router {
    axum::Router::new().route(
        STATUS.0,
        axum::routing::get(move || {
            let shipper = shipper.clone();
            async move { Json(shipper.status()) }
        }),
    )
}
