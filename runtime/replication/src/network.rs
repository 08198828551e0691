//! Peer traffic: raft RPCs as HTTP POSTs with postcard bodies, under `/raft/v1/`, each carrying
//! the cluster secret as a bearer token. A process without the secret can neither vote, append,
//! nor install a snapshot. Log appends, on the path of every write, go over a connection kept
//! open per follower instead ([`crate::append_stream`]), opened by an authenticated request too.
//! Votes, appends and snapshots also name the sender's leader lease ([`LEASE_HEADER`]), and a
//! member refuses them from a host whose lease is not its own: members with different leases
//! depose each other's leaders, so they had better not form a cluster at all, and say why.
//! (TLS between hosts is a later capability; nothing here prevents it.)

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, Raft};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::append_stream::{Answer, AppendStream, StreamError};
use crate::membership::{self, JoinRequest};
use crate::{LogStore, NodeId, TypeConfig};

/// Largest raft RPC accepted (an append carrying a module upload, a snapshot chunk).
pub(crate) const MAX_RPC: usize = 256 << 20;

/// The header in which a vote, append or snapshot names its sender's leader lease, in ms.
pub const LEASE_HEADER: &str = "x-doppel-lease-ms";

/// How often a refusal over different leases is logged, per peer: it recurs at every heartbeat.
const LEASE_WARNING_EVERY: Duration = Duration::from_secs(10);

/// Makes a client per peer; all share one connection pool, the cluster secret and this host's
/// leader lease.
#[derive(Clone)]
pub struct Network {
    http: reqwest::Client,
    secret: Arc<str>,
    lease_ms: u64,
    /// When each peer's refusal over different leases was last logged. Shared by every client,
    /// because openraft makes a new one for each round of votes.
    lease_warned: Arc<Mutex<HashMap<NodeId, Instant>>>,
}

impl Network {
    /// A network whose requests carry `secret`, and name `lease` as this host's leader lease.
    pub fn new(secret: &str, lease: Duration) -> Network {
        Network {
            http: reqwest::Client::new(),
            secret: secret.into(),
            lease_ms: u64::try_from(lease.as_millis()).unwrap_or(u64::MAX),
            lease_warned: Arc::default(),
        }
    }
}

/// The client side of one peer.
pub struct Peer {
    target: NodeId,
    base: String,
    http: reqwest::Client,
    secret: Arc<str>,
    lease_ms: u64,
    /// The connection appends go over, once opened.
    appends: Option<AppendStream>,
    lease_warned: Arc<Mutex<HashMap<NodeId, Instant>>>,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Peer {
        Peer {
            target,
            base: format!("http://{}/raft/v1", node.addr),
            http: self.http.clone(),
            secret: self.secret.clone(),
            lease_ms: self.lease_ms,
            appends: None,
            lease_warned: self.lease_warned.clone(),
        }
    }
}

impl Peer {
    /// Logs, now and then, that this peer refuses our messages because its lease differs.
    fn lease_refused(&self, why: &str) {
        let mut warned = self.lease_warned.lock().unwrap_or_else(|e| e.into_inner());
        let last = warned.get(&self.target);
        if last.is_none_or(|at| at.elapsed() >= LEASE_WARNING_EVERY) {
            warned.insert(self.target, Instant::now());
            tracing::error!(
                peer = self.target,
                "a member refuses this host's raft messages: {why}"
            );
        }
    }

    async fn call<Req, Resp, E>(
        &self,
        path: &str,
        req: &Req,
        option: RPCOption,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let body = postcard::to_stdvec(req).map_err(|e| NetworkError::new(&e))?;
        let response = self
            .http
            .post(format!("{}/{path}", self.base))
            .bearer_auth(&*self.secret)
            .header(LEASE_HEADER, self.lease_ms)
            .timeout(option.hard_ttl())
            .body(body)
            .send()
            .await
            .map_err(|e| -> RPCError<NodeId, BasicNode, E> {
                if e.is_connect() {
                    Unreachable::new(&e).into()
                } else {
                    NetworkError::new(&e).into()
                }
            })?;
        if !response.status().is_success() {
            let status = response.status();
            let text = response.text().await.unwrap_or_default();
            if status == StatusCode::CONFLICT {
                self.lease_refused(&text);
            }
            return Err(NetworkError::new(&std::io::Error::other(format!(
                "peer answered {status}: {text}"
            )))
            .into());
        }
        let bytes = response.bytes().await.map_err(|e| NetworkError::new(&e))?;
        let result: Result<Resp, E> =
            postcard::from_bytes(&bytes).map_err(|e| NetworkError::new(&e))?;
        result.map_err(|e| RemoteError::new(self.target, e).into())
    }

    /// One append over the connection kept for appends, opening it if there is none. A kept
    /// connection may have died since its last use (the follower restarted): then the append is
    /// sent once more on a new one (appends are idempotent).
    async fn append_over_stream(
        &mut self,
        rpc: &AppendEntriesRequest<TypeConfig>,
    ) -> Result<Answer, StreamError> {
        if let Some(stream) = &mut self.appends {
            match stream.append(rpc).await {
                Ok(answer) => return Ok(answer),
                Err(e) => {
                    tracing::debug!(target = self.target, error = %e, "append stream broke; reopening");
                    self.appends = None;
                }
            }
        }
        let stream = self
            .appends
            .insert(AppendStream::open(&self.http, &self.base, &self.secret, self.lease_ms).await?);
        let answer = stream.append(rpc).await;
        if answer.is_err() {
            self.appends = None;
        }
        answer
    }
}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        let sent = tokio::time::timeout(option.hard_ttl(), self.append_over_stream(&rpc)).await;
        let answer = match sent {
            Ok(Ok(answer)) => answer,
            Ok(Err(StreamError::Unreachable(e))) => return Err(Unreachable::new(&e).into()),
            Ok(Err(StreamError::Refused(why))) => {
                self.lease_refused(&why);
                return Err(NetworkError::new(&std::io::Error::other(why)).into());
            }
            Ok(Err(e)) => return Err(NetworkError::new(&e).into()),
            Err(elapsed) => {
                // The answer may still come: the connection is out of step, so it goes.
                self.appends = None;
                return Err(NetworkError::new(&elapsed).into());
            }
        };
        answer.map_err(|e| RemoteError::new(self.target, e).into())
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.call("snapshot", &rpc, option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call("vote", &rpc, option).await
    }
}

#[derive(Clone)]
struct Server {
    raft: Raft<TypeConfig>,
    log: LogStore,
    secret: Arc<str>,
    /// When a message refused over different leases was last logged.
    lease_warned: Arc<Mutex<Option<Instant>>>,
}

/// The routes a host serves to its peers, for the raft node `raft` whose log is `log`.
pub fn router(raft: Raft<TypeConfig>, log: LogStore, secret: &str) -> axum::Router {
    let server = Server {
        raft,
        log,
        secret: secret.into(),
        lease_warned: Arc::default(),
    };
    axum::Router::new()
        .route("/raft/v1/append-stream", post(append_stream))
        .route("/raft/v1/vote", post(vote))
        .route("/raft/v1/snapshot", post(snapshot))
        .route("/raft/v1/write", post(write))
        .route("/raft/v1/read-index", post(read_index))
        .route("/raft/v1/join", post(join))
        .route("/raft/v1/remove", post(remove))
        .route("/raft/v1/status", post(status))
        .route("/raft/v1/ping", post(ping))
        .route("/raft/v1/lease", post(lease))
        .layer(DefaultBodyLimit::max(MAX_RPC))
        .layer(middleware::from_fn_with_state(server.clone(), authenticate))
        .with_state(server)
}

/// Constant-time comparison, so the secret cannot be found byte by byte from response times.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn authenticate(State(server): State<Server>, request: Request, next: Next) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match presented {
        Some(secret) if same(secret.as_bytes(), server.secret.as_bytes()) => {
            match refuse_other_lease(&server, &request) {
                Some(refusal) => refusal,
                None => next.run(request).await,
            }
        }
        _ => (StatusCode::UNAUTHORIZED, "not a member of this cluster").into_response(),
    }
}

/// A 409 for a vote, append or snapshot from a host whose leader lease is not ours (the other
/// routes are questions and forwarded work, which a lease does not affect). A message that names
/// no lease is let through.
fn refuse_other_lease(server: &Server, request: &Request) -> Option<Response> {
    let path = request.uri().path();
    if ![
        "/raft/v1/vote",
        "/raft/v1/append-stream",
        "/raft/v1/snapshot",
    ]
    .contains(&path)
    {
        return None;
    }
    let theirs: u64 = request
        .headers()
        .get(LEASE_HEADER)?
        .to_str()
        .ok()?
        .parse()
        .ok()?;
    let ours = server.raft.config().election_timeout_max;
    if theirs == ours {
        return None;
    }
    let why = format!(
        "this host runs with a leader lease of {ours} ms and the sender with {theirs} ms; a \
         cluster runs with one lease, because members with different ones depose each other's \
         leaders. Restart the host whose lease is not the cluster's without --leader-lease"
    );
    let mut warned = server
        .lease_warned
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if warned.is_none_or(|at| at.elapsed() >= LEASE_WARNING_EVERY) {
        *warned = Some(Instant::now());
        tracing::error!(path, "refused a raft message: {why}");
    }
    Some((StatusCode::CONFLICT, why).into_response())
}

/// Decodes a request, runs `handle` on it, encodes its result; a malformed request is a 400.
async fn serve<Req, Resp, F>(body: &Bytes, handle: impl FnOnce(Req) -> F) -> Response
where
    Req: DeserializeOwned,
    Resp: Serialize,
    F: Future<Output = Resp>,
{
    let req = match postcard::from_bytes(body) {
        Ok(req) => req,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("malformed raft message: {e}"),
            )
                .into_response();
        }
    };
    match postcard::to_stdvec(&handle(req).await) {
        Ok(bytes) => bytes.into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn append_stream(State(s): State<Server>, request: Request) -> Response {
    crate::append_stream::accept(s.raft, request).await
}

async fn vote(State(s): State<Server>, body: Bytes) -> Response {
    serve(&body, |req| async move { s.raft.vote(req).await }).await
}

async fn snapshot(State(s): State<Server>, body: Bytes) -> Response {
    serve(
        &body,
        |req| async move { s.raft.install_snapshot(req).await },
    )
    .await
}

/// A batch of writes forwarded by a follower: the leader proposes it as one entry and answers
/// with each command's outcome.
async fn write(State(s): State<Server>, body: Bytes) -> Response {
    serve(&body, |batch: crate::Batch| async move {
        s.raft
            .client_write(batch)
            .await
            .map(|r| r.data)
            .map_err(|e| e.to_string())
    })
    .await
}

/// How many leases the leader keeps asking a slow majority to confirm a follower's read. A leader
/// no majority has answered for that long has in all likelihood lost an election; the follower
/// then answers "unavailable", and its client tries again.
const READ_INDEX_PATIENCE_LEASES: u32 = 5;

/// A follower's linearizable read: the leader confirms it still leads (a heartbeat round to a
/// majority) and answers the log index the follower must have applied before reading.
async fn read_index(State(s): State<Server>, body: Bytes) -> Response {
    let lease = Duration::from_millis(s.raft.config().election_timeout_max);
    serve(&body, |(): ()| async move {
        crate::replicated::confirmed_read_index(&s.raft, lease * READ_INDEX_PATIENCE_LEASES)
            .await
            .map(|read| read.unwrap_or(0))
            .map_err(|e| e.to_string())
    })
    .await
}

/// A host asking to join (it proved it has the secret): make it a learner, then a voter.
async fn join(State(s): State<Server>, body: Bytes) -> Response {
    serve(&body, |req: JoinRequest| async move {
        tracing::info!(id = req.id, addr = %req.addr, "a host asks to join");
        membership::add_member(&s.raft, req).await
    })
    .await
}

/// A removal forwarded by a follower's admin API.
async fn remove(State(s): State<Server>, body: Bytes) -> Response {
    serve(&body, |id: NodeId| async move {
        membership::remove_member(&s.raft, id).await
    })
    .await
}

/// The leader's view of the cluster, for a follower's `doppel status`.
async fn status(State(s): State<Server>, body: Bytes) -> Response {
    serve(&body, |(): ()| async move {
        Ok::<_, String>(membership::status(&s.raft))
    })
    .await
}

/// How far a member's log reaches: its last entry's term, then index. Raft elects only a
/// candidate whose log reaches at least as far as a majority's, so when the leader dies the
/// follower reaching furthest (the lowest id among equals) is the one that should stand: a
/// follower with a shorter log standing again and again only bumps the term and deposes whoever
/// did win. Liveness probes answer it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct LogReach {
    /// The term of the last entry.
    pub term: u64,
    /// The index of the last entry.
    pub index: u64,
}

impl LogReach {
    /// Reads a probe's answer; `None` if it carries none (a host of an older version).
    pub fn from_ping(body: &[u8]) -> Option<LogReach> {
        postcard::from_bytes(body).ok()
    }
}

/// The leader lease this host runs with, in ms: a joining host takes it, because hosts with
/// different leases would depose each other's leaders (see [`crate::cluster_lease`]).
async fn lease(State(server): State<Server>) -> Vec<u8> {
    postcard::to_stdvec(&server.raft.config().election_timeout_max).unwrap_or_default()
}

/// A liveness probe from a member (it proved it has the secret): answers how far our log reaches.
async fn ping(State(server): State<Server>) -> Vec<u8> {
    postcard::to_stdvec(&server.log.reach()).unwrap_or_default()
}
