//! `/v1/trust`: the keys the cluster trusts to sign components, and whether every deploy must
//! be signed. Reading is a viewer's; every change is an admin's (an operator credential alone
//! must not be able to widen what code the cluster accepts).

use axum::Extension;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use doppel_api::signing::{AddSigner, RequireSignatures, SignerInfo, TrustPolicy};

use super::tokens::Caller;
use super::{AdminError, AdminResult, AdminState};
use crate::signatures::{self, SignatureError};

fn error(e: SignatureError) -> AdminError {
    let status = match &e {
        SignatureError::Exists(_) => StatusCode::CONFLICT,
        SignatureError::NoSuch(_) => StatusCode::NOT_FOUND,
        SignatureError::Store(_) => return crate::services::DeployError::from(e).into(),
        _ => StatusCode::UNPROCESSABLE_ENTITY,
    };
    AdminError(status, e.to_string())
}

async fn policy(state: &AdminState) -> AdminResult<TrustPolicy> {
    let store = state.member.store().as_ref();
    Ok(TrustPolicy {
        signatures_required: signatures::required(store).await?,
        signers: signatures::signers(store).await.map_err(error)?,
    })
}

/// `GET /v1/trust`.
pub(crate) async fn show(State(state): State<AdminState>) -> AdminResult<Json<TrustPolicy>> {
    Ok(Json(policy(&state).await?))
}

/// `POST /v1/trust/signers`.
pub(crate) async fn add(
    State(state): State<AdminState>,
    Extension(caller): Extension<Caller>,
    Json(req): Json<AddSigner>,
) -> AdminResult<(StatusCode, Json<SignerInfo>)> {
    let added = signatures::add(
        state.member.store().as_ref(),
        &req.name,
        &req.public_key,
        &caller.name,
    )
    .await
    .map_err(error)?;
    Ok((StatusCode::CREATED, Json(added)))
}

/// `DELETE /v1/trust/signers/{name}`.
pub(crate) async fn remove(
    State(state): State<AdminState>,
    Path(name): Path<String>,
) -> AdminResult<Json<SignerInfo>> {
    Ok(Json(
        signatures::remove(state.member.store().as_ref(), &name)
            .await
            .map_err(error)?,
    ))
}

/// `PUT /v1/trust/required`.
pub(crate) async fn require(
    State(state): State<AdminState>,
    Json(req): Json<RequireSignatures>,
) -> AdminResult<Json<TrustPolicy>> {
    signatures::set_required(state.member.store().as_ref(), req.required)
        .await
        .map_err(error)?;
    Ok(Json(policy(&state).await?))
}
