//! The admin API the `doppel` CLI talks to: HTTPS + JSON under `/v1`, a named credential with a
//! role required (`tokens`), every change and refusal written to the audit trail (`audit`). The
//! routes are listed in the `doppel-api` crate; the operator's routes for moving services are in
//! `operator`.

pub(crate) mod audit;
pub(crate) mod backups;
mod console;
pub(crate) mod operator;
pub(crate) mod tokens;
mod trust;
mod twin;

use std::sync::Arc;

use axum::Extension;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use doppel_api::{
    ApiError, ClusterInfo, DeployRequest, HostInfo, HostStatus, InvitationAnswer, InviteRequest,
    KeyPage, NewToken, Progress, Role, TokenInfo, TokenRequest,
};
use doppel_replication::{AuthorityError, Member};
use doppel_store::{Command, Op, Space, StoreError};
use futures::StreamExt;
use serde::Deserialize;
use tokio_stream::wrappers::BroadcastStream;

use self::tokens::{Caller, TokenError};
use crate::hosts::{self, RemoveError};
use crate::moves::Mover;
use crate::services::{DeployError, Registry};
use crate::signatures::SignatureError;

/// What the admin handlers share.
#[derive(Clone)]
pub struct AdminState {
    /// The services.
    pub registry: Arc<Registry>,
    /// The audit trail every change and refusal is written to.
    pub audit: audit::Audit,
    /// Largest module upload accepted, in bytes.
    pub max_module_size: usize,
    /// What `GET /v1/host` answers.
    pub info: Arc<HostInfo>,
    /// This host's membership, for status, removals and the join token.
    pub member: Arc<Member>,
    /// Moves services between hosts.
    pub mover: Mover,
    /// Ships the log to the backup targets while this host leads.
    pub shipper: doppel_backup::ship::Shipper,
    /// Follows a primary's backup while this host leads a standby twin.
    pub follower: doppel_backup::twin::Follower,
    /// What `/metrics` reports.
    pub metrics: crate::metrics::Sources,
    /// The store services' state is sealed in (for the audit trail's pseudonyms of keys).
    pub sealed: Arc<crate::sealing::SealedStore>,
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
            DeployError::Signature(SignatureError::Older { .. }) => StatusCode::CONFLICT,
            DeployError::Signature(SignatureError::Store(StoreError::Unavailable(_))) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            DeployError::Signature(SignatureError::Store(_)) => StatusCode::INTERNAL_SERVER_ERROR,
            DeployError::BadName(_)
            | DeployError::Signature(_)
            | DeployError::Module(_)
            | DeployError::BadLimit(_)
            | DeployError::BadDigest(_) => StatusCode::UNPROCESSABLE_ENTITY,
            DeployError::NoModule(_) | DeployError::NoService(_) => StatusCode::NOT_FOUND,
            DeployError::Conflict(_) | DeployError::Store(StoreError::ReadOnly(_)) => {
                StatusCode::CONFLICT
            }
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
        .route("/metrics", get(metrics))
        .route("/console", get(console::index))
        .route("/console/", get(console::index))
        .route("/console/console.js", get(console::script))
        .route("/console/console.css", get(console::style))
        .route("/v1/cluster", get(cluster_status))
        .route("/v1/hosts/invitations", post(invite))
        .route("/v1/cluster/ca", get(cluster_ca))
        .route("/v1/cluster/rotate-ca", post(rotate_ca))
        .route("/v1/tokens", get(list_tokens).post(create_token))
        .route("/v1/tokens/{name}", axum::routing::delete(revoke_token))
        .route("/v1/trust", get(trust::show))
        .route("/v1/trust/signers", post(trust::add))
        .route(
            "/v1/trust/signers/{name}",
            axum::routing::delete(trust::remove),
        )
        .route("/v1/trust/required", axum::routing::put(trust::require))
        .route("/v1/audit", get(audit::list))
        .route("/v1/audit/verify", get(audit::verify))
        .route("/v1/backups", get(backups::list).post(backups::add))
        .route("/v1/backups/{name}", axum::routing::delete(backups::remove))
        .route("/v1/status/hash", get(backups::hash))
        .route("/v1/twin", get(twin::status).post(twin::follow))
        .route("/v1/twin/promote", post(twin::promote))
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

/// The role a request needs: reading needs a viewer, except services' stored records (people's
/// data), which need an operator like every change; hosts and credentials need an admin.
fn needed_role(method: &Method, path: &str) -> Role {
    // A backup target receives the whole state (encrypted to whoever the caller names), and
    // removing one stops the copy outside the cluster: both are an admin's. So are making this
    // cluster a twin (it takes its state from elsewhere) and promoting it (it fences another).
    let admin = path.starts_with("/v1/tokens")
        || (method != Method::GET && path.starts_with("/v1/backups"))
        || path.starts_with("/v1/hosts/invitations")
        || path.starts_with("/v1/cluster/rotate-ca")
        || (method != Method::GET && path.starts_with("/v1/trust"))
        || (method != Method::GET && path.starts_with("/v1/twin"))
        || (method == Method::DELETE && path.starts_with("/v1/hosts/"));
    if admin {
        Role::Admin
    } else if method == Method::GET && !path.contains("/kv/") {
        Role::Viewer
    } else {
        Role::Operator
    }
}

/// Checks the caller's credential and role, lets the request through with the caller in its
/// extensions, and writes every change and every refusal to the audit trail.
async fn authenticate(
    State(state): State<AdminState>,
    mut request: Request,
    next: Next,
) -> Response {
    let method = request.method().clone();
    // A record's key can be personal data (an e-mail address): the audit trail, which is never
    // erased, keeps a pseudonym instead, which the service's erasure makes meaningless.
    let path = audited_path(&state, request.uri().path()).await;
    // The console's page, script and style hold no data (the page asks the API, with a
    // credential, for everything it shows).
    if method == Method::GET && console::is_asset(&path) {
        return next.run(request).await;
    }
    let presented = doppel_api::auth::bearer(
        request
            .headers()
            .get(header::AUTHORIZATION)
            .map(|v| v.as_bytes()),
    );
    let caller = match presented.map(|p| tokens::check(state.member.store(), p)) {
        Some(Ok(caller)) => caller,
        refused => {
            let why = match refused {
                Some(Err(why)) => why,
                _ => "missing credential",
            };
            state.audit.knocked(&method, &path);
            // Never echo what was presented: a mistyped credential is often one character
            // from the real one.
            return AdminError(
                StatusCode::UNAUTHORIZED,
                format!(
                    "{why}; pass --token (or DOPPEL_TOKEN), or run on the host with --data \
                     pointing at its data directory"
                ),
            )
            .into_response();
        }
    };
    let needed = needed_role(&method, &path);
    if caller.role < needed {
        state
            .audit
            .record(&caller.name, &method, &path, "refused: role", None)
            .await;
        return AdminError(
            StatusCode::FORBIDDEN,
            format!(
                "the credential {:?} is a {}; this needs an {needed} (or more)",
                caller.name, caller.role
            ),
        )
        .into_response();
    }
    request.extensions_mut().insert(caller.clone());
    // Where the log stood before a change: a restore to here undoes it.
    let started_at = (method != Method::GET).then(|| state.member.store().last_log_index());
    let response = next.run(request).await;
    if method != Method::GET {
        let result = response.status();
        let detail = response
            .extensions()
            .get::<AuditDetail>()
            .map(|d| d.0.clone());
        let outcome = if result.is_success() {
            "done".to_string()
        } else {
            format!("failed: {}", result.as_u16())
        };
        state
            .audit
            .record_at(&caller.name, &method, &path, &outcome, detail, started_at)
            .await;
    }
    response
}

/// `path` as the audit trail keeps it: a key-value route's key replaced by its pseudonym.
async fn audited_path(state: &AdminState, path: &str) -> String {
    // The key is the rest of the path, slashes and all.
    let parts: Vec<&str> = path.splitn(7, '/').collect();
    match parts.as_slice() {
        ["", "v1", "services", service, "kv", bucket, key] => {
            let bucket = if bucket.is_empty() { "default" } else { bucket };
            let pseudonym = state
                .sealed
                .pseudonym(service, bucket, key.as_bytes())
                .await;
            format!("/v1/services/{service}/kv/{bucket}/{pseudonym}")
        }
        _ => path.to_string(),
    }
}

/// What a handler adds to its answer for the audit trail (a deploy's module digest).
#[derive(Clone)]
pub(crate) struct AuditDetail(pub String);

/// `GET /metrics`: for Prometheus (see `crate::metrics`).
async fn metrics(State(state): State<AdminState>) -> Response {
    (
        [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
        crate::metrics::render(&state.metrics).await,
    )
        .into_response()
}

async fn cluster_status(State(state): State<AdminState>) -> AdminResult<Json<ClusterInfo>> {
    Ok(Json(
        hosts::info(&state.member, &state.mover.liveness).await?,
    ))
}

/// The CA certificates this host trusts (public; the key is never answered).
async fn cluster_ca(State(state): State<AdminState>) -> String {
    state.member.credentials().roots_pem()
}

/// How long a CA rotation waits for every host at each of its steps.
const ROTATION_PATIENCE: std::time::Duration = std::time::Duration::from_secs(60);

/// Rotates the cluster CA (`doppel cluster rotate-ca`), answering with progress lines.
async fn rotate_ca(State(state): State<AdminState>) -> axum::response::Response {
    let (tx, response) = operator::progress_stream();
    tokio::spawn(async move {
        let step_tx = tx.clone();
        let step = move |text: String| {
            let _ = step_tx.send(Progress::Step { text });
        };
        let started = std::time::Instant::now();
        match state.member.rotate_ca(ROTATION_PATIENCE, &step).await {
            Ok(rotated) => {
                let _ = tx.send(Progress::Done {
                    text: format!(
                        "rotated the cluster CA from {} to {} in {} ms; `doppel cluster ca` prints \
                         the new one for operators who keep a copy",
                        rotated.from,
                        rotated.to,
                        started.elapsed().as_millis()
                    ),
                });
            }
            Err(e) => {
                let _ = tx.send(Progress::Failed {
                    error: e.to_string(),
                });
            }
        }
    });
    response
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
            AuthorityError::Trust(e) => {
                AdminError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
            }
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

#[derive(Deserialize)]
pub(crate) struct UploadQuery {
    /// The service the module is for: its own signature requirement is checked before the
    /// upload is compiled or stored.
    service: Option<String>,
}

async fn upload(
    State(state): State<AdminState>,
    Query(q): Query<UploadQuery>,
    body: Body,
) -> AdminResult<Response> {
    let max = state.max_module_size;
    let bytes = axum::body::to_bytes(body, max).await.map_err(|_| {
        AdminError(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the module is larger than this host accepts ({max} bytes); start the host with a larger --max-module-size"),
        )
    })?;
    let info = state
        .registry
        .upload(bytes.to_vec(), q.service.as_deref())
        .await?;
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
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> AdminResult<Response> {
    let request: DeployRequest = serde_json::from_slice(&body)
        .map_err(|e| AdminError(StatusCode::BAD_REQUEST, format!("bad deploy request: {e}")))?;
    let module = request.module.clone();
    let actor = actor(&state, &caller);
    let deployed = state.registry.deploy(&name, request, &actor).await?;
    // A rollback let through by --allow-older is named in the audit trail.
    let detail = match deployed.rollback {
        Some(rollback) => format!("{module}; {rollback}"),
        None => module,
    };
    let mut response = Json(deployed.info).into_response();
    response.extensions_mut().insert(AuditDetail(detail));
    Ok(response)
}

/// Who is asking, for the placement history: the name of the credential presented (never what
/// a client says of itself), and the host the request came through.
pub(crate) fn actor(state: &AdminState, caller: &Caller) -> String {
    format!("{} via {}", caller.name, state.info.name)
}

/// `GET /v1/tokens`.
async fn list_tokens(State(state): State<AdminState>) -> AdminResult<Json<Vec<TokenInfo>>> {
    Ok(Json(
        tokens::list(state.member.store().as_ref())
            .await
            .map_err(token_error)?,
    ))
}

/// `POST /v1/tokens`.
async fn create_token(
    State(state): State<AdminState>,
    Extension(caller): Extension<Caller>,
    Json(req): Json<TokenRequest>,
) -> AdminResult<Json<NewToken>> {
    let ttl = req.expires_secs.map(std::time::Duration::from_secs);
    let store = state.member.store().as_ref();
    let token = tokens::create(store, &req.name, req.role, ttl, &caller.name)
        .await
        .map_err(token_error)?;
    let info = tokens::list(store)
        .await
        .map_err(token_error)?
        .into_iter()
        .find(|t| t.name == req.name)
        .ok_or_else(|| AdminError(StatusCode::INTERNAL_SERVER_ERROR, "made, then lost".into()))?;
    Ok(Json(NewToken { info, token }))
}

/// `DELETE /v1/tokens/{name}`.
async fn revoke_token(
    State(state): State<AdminState>,
    Path(name): Path<String>,
) -> AdminResult<Json<TokenInfo>> {
    Ok(Json(
        tokens::revoke(state.member.store().as_ref(), &name)
            .await
            .map_err(token_error)?,
    ))
}

fn token_error(e: TokenError) -> AdminError {
    match e {
        TokenError::BadName(_) => AdminError(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()),
        TokenError::Exists(_) => AdminError(StatusCode::CONFLICT, e.to_string()),
        TokenError::NoSuch(_) => AdminError(StatusCode::NOT_FOUND, e.to_string()),
        TokenError::Store(e) => e.into(),
    }
}

#[derive(Deserialize)]
pub(crate) struct RemoveQuery {
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
pub(crate) struct LogQuery {
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
    if bucket.starts_with("doppel:") {
        return Err(AdminError(
            StatusCode::NOT_FOUND,
            format!(
                "{bucket} is not a bucket operators read or write (doppel: names are the host's)"
            ),
        ));
    }
    let bucket = if bucket.is_empty() { "default" } else { bucket };
    Ok(Space::bucket(service, bucket))
}

async fn buckets(
    State(state): State<AdminState>,
    Path(name): Path<String>,
) -> AdminResult<Response> {
    space(&state, &name, "default")?;
    let mut buckets = state.registry.store().buckets(&name).await?;
    buckets.retain(|b| !b.starts_with("doppel:"));
    Ok(Json(buckets).into_response())
}

#[derive(Deserialize)]
pub(crate) struct KeyQuery {
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
