//! The twin (`doppel twin follow|promote|status`): this cluster as a standby that follows a
//! primary's backup, its promotion, and whether a newer generation fenced it. The records live
//! in the replicated store; the leader follows (`doppel_backup::twin`).

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use doppel_api::{FollowRequest, TwinSeen, TwinStatus};
use doppel_backup::twin;

use axum::http::StatusCode;

use super::{AdminError, AdminResult, AdminState};

/// How long `POST /v1/twin/promote` waits for the leader's follower to promote.
const PROMOTE_LIMIT: Duration = Duration::from_secs(30);

/// `GET /v1/twin`: what this cluster is to a twin pair; on a primary, with the twins that
/// follow its targets (from the leader's shipping).
pub async fn status(State(state): State<AdminState>) -> Json<TwinStatus> {
    let mut status = twin::status(state.member.store(), &state.follower);
    if status.role == "primary" {
        for (target, shipping) in super::backups::leader_statuses(&state).await {
            status
                .twins
                .extend(shipping.twins.into_iter().map(|seen| TwinSeen {
                    target: target.clone(),
                    ..seen
                }));
        }
    }
    Json(status)
}

/// `POST /v1/twin`: follow a backup as a standby twin (an empty cluster only).
pub async fn follow(
    State(state): State<AdminState>,
    Json(request): Json<FollowRequest>,
) -> AdminResult<Json<TwinStatus>> {
    twin::follow(
        state.member.store(),
        &request.url,
        &request.identity,
        request.name.as_deref(),
        state.sealed.as_ref(),
    )
    .await?;
    // The primary's data keys arrive wrapped under its cluster key, which its backup carries:
    // recorded (under this cluster's key). The shipper writes it before its first manifest, so a
    // backup the checks above accepted has it.
    let location = doppel_backup::location::Location::open(&request.url)?;
    let identity = doppel_backup::keys::Identity::parse(&request.identity, "the identity given")?;
    let carried = doppel_backup::cluster_key::read(&location, &identity)
        .await?
        .ok_or_else(|| {
            AdminError(
                StatusCode::BAD_REQUEST,
                "the backup carries no cluster key (keys/cluster): it was made before encryption \
                 at rest"
                    .into(),
            )
        })?;
    let primary = crate::sealing::ClusterKey::from_bytes(&carried).ok_or_else(|| {
        AdminError(
            StatusCode::BAD_REQUEST,
            "the backup's keys/cluster is not a key".into(),
        )
    })?;
    state
        .sealed
        .adopt_foreign_root(&format!("primary {}", request.url), &primary)
        .await?;
    Ok(Json(twin::status(state.member.store(), &state.follower)))
}

/// `POST /v1/twin/promote`: the standby takes writes from its last applied entry on, after
/// writing a new generation into the backup (which fences the primary).
pub async fn promote(State(state): State<AdminState>) -> AdminResult<Json<TwinStatus>> {
    twin::promote(state.member.store(), PROMOTE_LIMIT).await?;
    // This host's guard follows the records a moment after they are applied; the answer waits
    // for it, so that a write sent right after the answer is taken.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while state.registry.writes_refused() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(Json(twin::status(state.member.store(), &state.follower)))
}
