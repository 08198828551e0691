//! The one way hosts talk to each other. Every peer request — raft votes and snapshots, the
//! append stream, liveness probes, writes and read-index questions forwarded to the leader,
//! membership questions, and the host's own peer routes (warm-up, hand-over) — leaves through a
//! [`PeerClient`] and arrives through [`PeerServer::router`], which authenticates it before any
//! route sees it. The peer protocol's URLs, headers and credentials are written here and nowhere
//! else: this is the connector/acceptor pair that mutual TLS wraps.
//!
//! Today a peer proves membership with the cluster secret as a bearer token. Raft's own routes
//! live under `/raft/v1/`, the host's under `/peer/v1/` ([`HostRoute`]).

use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Largest peer request accepted (an append carrying a module upload, a snapshot chunk).
pub(crate) const MAX_RPC: usize = 256 << 20;

/// The status of a forwarded write a leader refused without proposing it, because it is removing
/// itself from the cluster: safe to send again, to the next leader.
pub(crate) const LEAVING: StatusCode = StatusCode::MISDIRECTED_REQUEST;

/// The header in which a vote, append or snapshot names its sender's leader lease, in ms.
pub const LEASE_HEADER: &str = "x-doppel-lease-ms";

/// Raft's peer routes, each a POST with a postcard body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RaftRoute {
    /// Upgraded to the kept connection appends go over ([`crate::append_stream`]).
    AppendStream,
    /// A candidate asks for a vote.
    Vote,
    /// The leader installs a snapshot.
    Snapshot,
    /// A follower forwards a batch of writes to the leader.
    Write,
    /// A follower asks the leader for a linearizable read's index.
    ReadIndex,
    /// A host asks to join (or to record its new address).
    Join,
    /// A follower forwards a removal to the leader.
    Remove,
    /// The leader's view of every member.
    Status,
    /// A liveness probe; answers how far the log reaches.
    Ping,
    /// The leader lease this member runs with.
    Lease,
}

impl RaftRoute {
    /// Every route.
    pub(crate) const ALL: [RaftRoute; 10] = [
        RaftRoute::AppendStream,
        RaftRoute::Vote,
        RaftRoute::Snapshot,
        RaftRoute::Write,
        RaftRoute::ReadIndex,
        RaftRoute::Join,
        RaftRoute::Remove,
        RaftRoute::Status,
        RaftRoute::Ping,
        RaftRoute::Lease,
    ];

    /// The route's path.
    pub(crate) fn path(self) -> &'static str {
        match self {
            RaftRoute::AppendStream => "/raft/v1/append-stream",
            RaftRoute::Vote => "/raft/v1/vote",
            RaftRoute::Snapshot => "/raft/v1/snapshot",
            RaftRoute::Write => "/raft/v1/write",
            RaftRoute::ReadIndex => "/raft/v1/read-index",
            RaftRoute::Join => "/raft/v1/join",
            RaftRoute::Remove => "/raft/v1/remove",
            RaftRoute::Status => "/raft/v1/status",
            RaftRoute::Ping => "/raft/v1/ping",
            RaftRoute::Lease => "/raft/v1/lease",
        }
    }

    /// Whether the route carries a raft message that the sender's leader lease affects: a
    /// member refuses those from a host with another lease (the others are questions and
    /// forwarded work).
    pub(crate) fn lease_bound(self) -> bool {
        matches!(
            self,
            RaftRoute::Vote | RaftRoute::AppendStream | RaftRoute::Snapshot
        )
    }

    fn of_path(path: &str) -> Option<RaftRoute> {
        RaftRoute::ALL.into_iter().find(|r| r.path() == path)
    }
}

/// Where the host's own peer routes are mounted.
const HOST_ROUTES: &str = "/peer/v1";

/// A route the host serves to its peers (registered with [`PeerServer::router`]); the host names
/// it by its path below the host's prefix, e.g. `/warm`.
#[derive(Clone, Copy, Debug)]
pub struct HostRoute(pub &'static str);

/// What went wrong calling a peer.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// No connection could be made: nothing was sent.
    #[error("cannot connect: {0}")]
    Unreachable(String),
    /// The peer refused our credential: we are not a member of its cluster.
    #[error("it refused this host's credential: not a member of its cluster")]
    Unauthorized,
    /// The peer answered with an error status (its text).
    #[error("it answered {status}: {text}")]
    Status {
        /// The status.
        status: StatusCode,
        /// What it said.
        text: String,
    },
    /// The request failed on the way or the answer did not decode (it may have been served).
    #[error("{0}")]
    Broken(String),
}

impl PeerError {
    fn from_reqwest(e: &reqwest::Error) -> PeerError {
        if e.is_connect() {
            PeerError::Unreachable(causes(e))
        } else {
            PeerError::Broken(causes(e))
        }
    }
}

/// `e` and its causes, joined: reqwest's own text ("error sending request for url ...") leaves out
/// whether the connection was refused, reset or timed out, which is what an operator needs.
pub fn causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Whether `e` (or a cause of it) is a refused connection: the peer's machine answered that
/// nothing listens on the port, so its process is gone. A refusal is an answer, not a silence.
pub(crate) fn refused(e: &reqwest::Error) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::ConnectionRefused
        {
            return true;
        }
        source = cause.source();
    }
    false
}

/// How long the connector keeps an idle connection for reuse. A host closes a kept connection
/// that has sent no request for its header timeout (at least 1 s); a client that reused one at
/// that very moment would see its request fail ("connection closed before message completed")
/// though the peer is fine, so the connector lets them go well before.
const POOL_IDLE: Duration = Duration::from_millis(500);

/// The connector: one connection pool and this host's credential, shared by every peer call.
#[derive(Clone)]
pub struct PeerClient {
    http: reqwest::Client,
    secret: std::sync::Arc<str>,
}

impl std::fmt::Debug for PeerClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PeerClient { credential: <redacted> }")
    }
}

impl PeerClient {
    /// A client presenting `secret` to its peers.
    pub fn new(secret: &str) -> PeerClient {
        PeerClient {
            // A peer whose machine vanished answers no connection attempt at all; without a
            // bound, a call would wait out its whole timeout on it.
            http: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(1))
                .pool_idle_timeout(POOL_IDLE)
                .build()
                .unwrap_or_default(),
            secret: secret.into(),
        }
    }

    /// A raft request to `route` of the member at `addr` (`HOST:PORT`), authenticated.
    pub(crate) fn raft(&self, addr: &str, route: RaftRoute) -> reqwest::RequestBuilder {
        self.http
            .post(format!("http://{addr}{}", route.path()))
            .bearer_auth(&*self.secret)
    }

    /// Calls `route` of the member at `addr` with a postcard body and decodes a postcard answer.
    pub(crate) async fn ask<T: DeserializeOwned>(
        &self,
        addr: &str,
        route: RaftRoute,
        body: impl Into<reqwest::Body>,
        timeout: Option<Duration>,
    ) -> Result<T, PeerError> {
        let mut request = self.raft(addr, route).body(body);
        if let Some(timeout) = timeout {
            request = request.timeout(timeout);
        }
        let answer = request
            .send()
            .await
            .map_err(|e| PeerError::from_reqwest(&e))?;
        let bytes = ok_body(answer).await?;
        postcard::from_bytes(&bytes).map_err(|e| {
            PeerError::Broken(format!(
                "it answered something unexpected to {}: {e}",
                route.path()
            ))
        })
    }

    /// A liveness probe of the member at `addr`: how far its log reaches, or why there is no
    /// answer.
    pub(crate) async fn ping(&self, addr: &str, timeout: Duration) -> Probe {
        match self
            .raft(addr, RaftRoute::Ping)
            .timeout(timeout)
            .send()
            .await
        {
            Ok(r) if r.status().is_success() => {
                let body = r.bytes().await.unwrap_or_default();
                Probe::Answered(crate::types::LogReach::from_ping(&body).unwrap_or_default())
            }
            Err(e) if refused(&e) => Probe::Refused,
            _ => Probe::Silent,
        }
    }

    /// Calls one of the host's own peer routes on the host at `addr` (`HOST:PORT`): `GET` without
    /// a body, `POST` with `body` as JSON; decodes a JSON answer.
    pub async fn call<T: Serialize, R: DeserializeOwned>(
        &self,
        addr: &str,
        route: HostRoute,
        body: Option<&T>,
        timeout: Duration,
    ) -> Result<R, PeerError> {
        let url = format!("http://{addr}{HOST_ROUTES}{}", route.0);
        let mut request = match body {
            Some(body) => self.http.post(url).json(body),
            None => self.http.get(url),
        };
        request = request.bearer_auth(&*self.secret).timeout(timeout);
        let answer = request
            .send()
            .await
            .map_err(|e| PeerError::from_reqwest(&e))?;
        let bytes = ok_body(answer).await?;
        serde_json::from_slice(&bytes)
            .map_err(|e| PeerError::Broken(format!("it answered something unexpected: {e}")))
    }
}

/// The body of a successful answer; the error status and text otherwise.
async fn ok_body(answer: reqwest::Response) -> Result<bytes::Bytes, PeerError> {
    let status = answer.status();
    if status == StatusCode::UNAUTHORIZED {
        return Err(PeerError::Unauthorized);
    }
    if !status.is_success() {
        let text = answer.text().await.unwrap_or_default();
        return Err(PeerError::Status { status, text });
    }
    answer
        .bytes()
        .await
        .map_err(|e| PeerError::Broken(causes(&e)))
}

/// What one probe of a member found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Probe {
    /// It answered, with how far its raft log reaches (nowhere, if it did not say).
    Answered(crate::types::LogReach),
    /// Connection refused: nothing listens there any more.
    Refused,
    /// No answer in time, or an error answer.
    Silent,
}

/// The acceptor: checks every peer request's credential before a route sees it.
#[derive(Clone)]
pub struct PeerServer {
    secret: std::sync::Arc<str>,
}

impl PeerServer {
    /// An acceptor for peers presenting `secret`.
    pub fn new(secret: &str) -> PeerServer {
        PeerServer {
            secret: secret.into(),
        }
    }

    /// Every peer route in one router: `raft` (raft's routes, at their [`RaftRoute`] paths) and
    /// `host` (the host's own, at their [`HostRoute`] paths), behind authentication.
    pub(crate) fn router(&self, raft: axum::Router, host: axum::Router) -> axum::Router {
        raft.nest(HOST_ROUTES, host)
            .layer(DefaultBodyLimit::max(MAX_RPC))
            .layer(middleware::from_fn_with_state(self.clone(), authenticate))
    }
}

/// The raft route a request is for, if it is one (a lease check needs to know).
pub(crate) fn raft_route_of(request: &Request) -> Option<RaftRoute> {
    RaftRoute::of_path(request.uri().path())
}

async fn authenticate(State(server): State<PeerServer>, request: Request, next: Next) -> Response {
    let presented = request.headers().get(header::AUTHORIZATION);
    if doppel_api::auth::bears(presented.map(|v| v.as_bytes()), &server.secret) {
        next.run(request).await
    } else {
        (StatusCode::UNAUTHORIZED, "not a member of this cluster").into_response()
    }
}

/// The leader lease a raft message names ([`LEASE_HEADER`]), if it names one.
pub(crate) fn named_lease(request: &Request) -> Option<u64> {
    request
        .headers()
        .get(LEASE_HEADER)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}
