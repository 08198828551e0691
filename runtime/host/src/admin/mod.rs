//! The admin API the `doppel` CLI talks to: HTTP + JSON under `/v1`, bearer token required.
//! The routes are listed in the `doppel-api` crate; the operator's routes for moving services
//! are in `operator`.

mod operator;

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use doppel_api::{
    ApiError, ClusterInfo, DeployRequest, HostInfo, HostStatus, InvitationAnswer, InviteRequest,
    KeyPage,
};
use doppel_replication::{AuthorityError, Member};
use doppel_store::{Command, Op, Space, StoreError};
use futures::StreamExt;
use serde::Deserialize;
use tokio_stream::wrappers::BroadcastStream;

use crate::hosts::{self, RemoveError};
use crate::moves::Mover;
use crate::services::{DeployError, Registry};

/// What the admin handlers share.
#[derive(Clone)]
pub struct AdminState {
    /// The services.
    pub registry: Arc<Registry>,
    /// The bearer token every request must carry.
    pub token: Arc<str>,
    /// Largest module upload accepted, in bytes.
    pub max_module_size: usize,
    /// What `GET /v1/host` answers.
    pub info: Arc<HostInfo>,
    /// This host's membership, for status, removals and the join token.
    pub member: Arc<Member>,
    /// Moves services between hosts.
    pub mover: Mover,
}

/// An error answer: a status and a message for humans.
pub struct AdminError(pub StatusCode, pub String);

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        (self.0, Json(ApiError { error: self.1 })).into_response()
    }
}

impl From<DeployError> for AdminError {
    fn from(e: DeployError) -> Self {
        let status = match &e {
            DeployError::BadName(_)
            | DeployError::Module(_)
            | DeployError::BadLimit(_)
            | DeployError::BadDigest(_) => StatusCode::UNPROCESSABLE_ENTITY,
            DeployError::NoModule(_) | DeployError::NoService(_) => StatusCode::NOT_FOUND,
            DeployError::Conflict(_) => StatusCode::CONFLICT,
            DeployError::Store(StoreError::Rejected(_)) => StatusCode::UNPROCESSABLE_ENTITY,
            DeployError::Store(StoreError::Unavailable(_)) => StatusCode::SERVICE_UNAVAILABLE,
            DeployError::Store(_) | DeployError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        AdminError(status, e.to_string())
    }
}

impl From<StoreError> for AdminError {
    fn from(e: StoreError) -> Self {
        DeployError::Store(e).into()
    }
}

/// What an admin handler answers.
pub(crate) type AdminResult<T> = Result<T, AdminError>;

/// The admin router.
pub fn router(state: AdminState) -> Router {
    let max = state.max_module_size;
    Router::new()
        .route("/v1/host", get(host))
        .route("/v1/cluster", get(cluster_status))
        .route("/v1/hosts/invitations", post(invite))
        .route("/v1/cluster/ca", get(cluster_ca))
        .route("/v1/hosts/{name}", axum::routing::delete(remove_host))
        .route("/v1/hosts/{name}/drain", post(operator::drain))
        .route("/v1/hosts/{name}/undrain", post(operator::undrain))
        .route("/v1/services/{name}/migrate", post(operator::migrate))
        .route("/v1/events", get(operator::events))
        .route(
            "/v1/modules",
            post(upload).layer(DefaultBodyLimit::disable()),
        )
        .route("/v1/services", get(list))
        .route("/v1/services/{name}", get(show).put(deploy).delete(remove))
        .route("/v1/services/{name}/logs", get(logs))
        .route("/v1/services/{name}/kv", get(buckets))
        .route("/v1/services/{name}/kv/{bucket}", get(keys))
        .route(
            "/v1/services/{name}/kv/{bucket}/{*key}",
            get(kv_get).put(kv_put).delete(kv_delete),
        )
        .layer(DefaultBodyLimit::max(max))
        .layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .with_state(state)
}

async fn authenticate(State(state): State<AdminState>, request: Request, next: Next) -> Response {
    let presented = request.headers().get(header::AUTHORIZATION);
    if doppel_api::auth::bears(presented.map(|v| v.as_bytes()), &state.token) {
        return next.run(request).await;
    }
    // Never echo what was presented: a mistyped token is often one character from the real one.
    AdminError(
        StatusCode::UNAUTHORIZED,
        "missing or wrong admin token; pass --token (or DOPPEL_TOKEN), or run on the host \
         with --data pointing at its data directory"
            .into(),
    )
    .into_response()
}

async fn cluster_status(State(state): State<AdminState>) -> AdminResult<Json<ClusterInfo>> {
    Ok(Json(
        hosts::info(&state.member, &state.mover.liveness).await?,
    ))
}

/// The join token, behind the admin token like everything here.
/// The CA certificates this host trusts (public; the key is never answered).
async fn cluster_ca(State(state): State<AdminState>) -> String {
    state.member.credentials().roots_pem().to_string()
}

/// Opens an invitation for one host (`doppel hosts invite`).
async fn invite(
    State(state): State<AdminState>,
    Json(req): Json<InviteRequest>,
) -> AdminResult<Json<InvitationAnswer>> {
    let ttl = std::time::Duration::from_secs(req.expires_secs);
    let token = state
        .member
        .invite(&req.name, &req.labels, ttl)
        .await
        .map_err(|e| match e {
            AuthorityError::Refused(why) => AdminError(StatusCode::UNPROCESSABLE_ENTITY, why),
            AuthorityError::Store(e) => e.into(),
            AuthorityError::Trust(e) => AdminError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        })?;
    let peers = state
        .member
        .store()
        .members()
        .into_iter()
        .map(|(_, addr)| addr)
        .collect();
    Ok(Json(InvitationAnswer {
        name: req.name,
        labels: req.labels,
        token: token.to_string(),
        peers,
        expires_secs: req.expires_secs,
    }))
}

async fn remove_host(
    State(state): State<AdminState>,
    Path(name): Path<String>,
) -> AdminResult<Json<HostStatus>> {
    let record = hosts::remove(&state.member, &name)
        .await
        .map_err(|e| match e {
            RemoveError::NoHost(_) => AdminError(StatusCode::NOT_FOUND, e.to_string()),
            RemoveError::Store(e) => e.into(),
            RemoveError::Member(e) => AdminError(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        })?;
    Ok(Json(HostStatus {
        id: record.id.to_string(),
        name: record.name,
        admin: record.admin,
        listen: Some(record.listen),
        role: "removed".into(),
        behind: None,
        health: "removed".into(),
        this: record.id == state.member.id(),
        labels: record.labels,
        drained: false,
    }))
}

async fn host(State(state): State<AdminState>) -> Json<HostInfo> {
    let mut info = (*state.info).clone();
    info.services = state.registry.count();
    Json(info)
}

async fn upload(State(state): State<AdminState>, body: Body) -> AdminResult<Response> {
    let max = state.max_module_size;
    let bytes = axum::body::to_bytes(body, max).await.map_err(|_| {
        AdminError(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the module is larger than this host accepts ({max} bytes); start the host with a larger --max-module-size"),
        )
    })?;
    let info = state.registry.upload(bytes.to_vec()).await?;
    Ok((StatusCode::CREATED, Json(info)).into_response())
}

async fn list(State(state): State<AdminState>) -> AdminResult<Response> {
    Ok(Json(state.registry.list().await?).into_response())
}

async fn show(State(state): State<AdminState>, Path(name): Path<String>) -> AdminResult<Response> {
    Ok(Json(state.registry.info(&name).await?).into_response())
}

async fn deploy(
    State(state): State<AdminState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> AdminResult<Response> {
    let request: DeployRequest = serde_json::from_slice(&body)
        .map_err(|e| AdminError(StatusCode::BAD_REQUEST, format!("bad deploy request: {e}")))?;
    let actor = actor(&state, &headers);
    Ok(Json(state.registry.deploy(&name, request, &actor).await?).into_response())
}

/// Who is asking, for the placement history: the CLI's `x-doppel-actor` (user@machine), and
/// the host the request came through.
pub(crate) fn actor(state: &AdminState, headers: &HeaderMap) -> String {
    let who: String = headers
        .get("x-doppel-actor")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("an operator")
        .chars()
        .filter(|c| !c.is_control())
        .take(64)
        .collect();
    format!("{who} via {}", state.info.name)
}

#[derive(Deserialize)]
struct RemoveQuery {
    #[serde(default)]
    purge: bool,
}

async fn remove(
    State(state): State<AdminState>,
    Path(name): Path<String>,
    Query(q): Query<RemoveQuery>,
) -> AdminResult<Response> {
    Ok(Json(state.registry.remove(&name, q.purge).await?).into_response())
}

#[derive(Deserialize)]
struct LogQuery {
    #[serde(default)]
    follow: bool,
    tail: Option<usize>,
}

async fn logs(
    State(state): State<AdminState>,
    Path(name): Path<String>,
    Query(q): Query<LogQuery>,
) -> AdminResult<Response> {
    if state.registry.get(&name).is_none() {
        return Err(DeployError::NoService(name).into());
    }
    let (log, _) = state.registry.log_and_stats(&name);
    // Subscribe before reading the tail, so that no line falls between the two.
    let live = log.subscribe();
    let to_line = |l: &doppel_api::LogLine| {
        let mut s = serde_json::to_string(l).unwrap_or_default();
        s.push('\n');
        Ok::<_, std::convert::Infallible>(Bytes::from(s))
    };
    let past: Vec<_> = log
        .tail(q.tail.unwrap_or(usize::MAX))
        .iter()
        .map(to_line)
        .collect();
    let past = futures::stream::iter(past);
    let body = if q.follow {
        let live = BroadcastStream::new(live)
            .filter_map(move |l| async move { l.ok().map(|l| to_line(&l)) });
        Body::from_stream(past.chain(live))
    } else {
        Body::from_stream(past)
    };
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response())
}

fn space(state: &AdminState, service: &str, bucket: &str) -> AdminResult<Space> {
    if state.registry.get(service).is_none() {
        return Err(DeployError::NoService(service.to_string()).into());
    }
    let bucket = if bucket.is_empty() { "default" } else { bucket };
    Ok(Space::bucket(service, bucket))
}

async fn buckets(
    State(state): State<AdminState>,
    Path(name): Path<String>,
) -> AdminResult<Response> {
    space(&state, &name, "default")?;
    Ok(Json(state.registry.store().buckets(&name).await?).into_response())
}

#[derive(Deserialize)]
struct KeyQuery {
    after: Option<String>,
    limit: Option<usize>,
}

async fn keys(
    State(state): State<AdminState>,
    Path((name, bucket)): Path<(String, String)>,
    Query(q): Query<KeyQuery>,
) -> AdminResult<Response> {
    let space = space(&state, &name, &bucket)?;
    let limit = q.limit.unwrap_or(1000).clamp(1, 10_000);
    let keys = state
        .registry
        .store()
        .list_keys(&space, q.after.as_deref().map(str::as_bytes), limit)
        .await?;
    let next = if keys.len() == limit {
        keys.last().map(|k| String::from_utf8_lossy(k).into_owned())
    } else {
        None
    };
    let keys = keys
        .into_iter()
        .map(|k| String::from_utf8_lossy(&k).into_owned())
        .collect();
    Ok(Json(KeyPage { keys, next }).into_response())
}

async fn kv_get(
    State(state): State<AdminState>,
    Path((name, bucket, key)): Path<(String, String, String)>,
) -> AdminResult<Response> {
    let space = space(&state, &name, &bucket)?;
    match state.registry.store().get(&space, key.as_bytes()).await? {
        Some(value) => {
            Ok(([(header::CONTENT_TYPE, "application/octet-stream")], value).into_response())
        }
        None => Err(AdminError(
            StatusCode::NOT_FOUND,
            format!("no key {key:?} in bucket {bucket:?} of {name}"),
        )),
    }
}

async fn kv_put(
    State(state): State<AdminState>,
    Path((name, bucket, key)): Path<(String, String, String)>,
    value: Bytes,
) -> AdminResult<Response> {
    let space = space(&state, &name, &bucket)?;
    let limits = state
        .registry
        .get(&name)
        .map(|s| s.limits.clone())
        .unwrap_or_default();
    if key.len() as u64 > limits.max_key || value.len() as u64 > limits.max_value {
        return Err(AdminError(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "keys are limited to {} bytes and values to {} bytes for {name}",
                limits.max_key, limits.max_value
            ),
        ));
    }
    let command = Command::new(Op::Put {
        space,
        key: key.into_bytes(),
        value: value.to_vec(),
    })
    .with_quota(limits.quota);
    state.registry.store().apply(command).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn kv_delete(
    State(state): State<AdminState>,
    Path((name, bucket, key)): Path<(String, String, String)>,
) -> AdminResult<Response> {
    let space = space(&state, &name, &bucket)?;
    state
        .registry
        .store()
        .apply(Command::new(Op::Delete {
            space,
            key: key.into_bytes(),
        }))
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
