//! The one way hosts talk to each other. Every peer request — raft votes and snapshots, the
//! append stream, liveness probes, writes and read-index questions forwarded to the leader,
//! membership questions, and the host's own peer routes (warm-up, hand-over) — leaves through a
//! [`PeerClient`] and arrives through [`PeerServer::router`], which authenticates it before any
//! route sees it. The peer protocol's URLs, headers and credentials are written here and nowhere
//! else: this is the connector/acceptor pair that mutual TLS wraps.
//!
//! Every connection is mutual TLS ([`accept`] on the serving side): a peer proves who it is with
//! its certificate from the cluster CA, and [`PeerServer`] admits it to a route only if that
//! identity may use it (a current member; a host not removed for the few routes a joining host
//! needs; anyone for enrolment, which is how a host with an invitation gets its certificate). No
//! shared secret crosses the wire. Raft's own routes live under `/raft/v1/`, the host's under
//! `/peer/v1/` ([`HostRoute`]).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use doppel_trust::{HostIdentity, TrustError};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::credentials::Credentials;

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
    /// A host with an invitation asks for its certificate (the one route open to a client
    /// without one).
    Enrol,
}

impl RaftRoute {
    /// Every route.
    pub(crate) const ALL: [RaftRoute; 11] = [
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
        RaftRoute::Enrol,
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
            RaftRoute::Enrol => "/raft/v1/enrol",
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
    /// The peer refused us: we are not (or no longer) a member of its cluster (its reason).
    #[error("it refused this host: {0}")]
    Unauthorized(String),
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

/// The connector: one connection pool, presenting this host's certificate, shared by every peer
/// call.
#[derive(Clone)]
pub struct PeerClient {
    http: reqwest::Client,
}

impl std::fmt::Debug for PeerClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PeerClient")
    }
}

impl PeerClient {
    /// A client presenting `credentials` to its peers and trusting the CAs they name.
    pub fn new(credentials: &Credentials) -> Result<PeerClient, TrustError> {
        let tls = doppel_trust::tls::peer_client(credentials.slot(), credentials.trusted())?;
        Ok(PeerClient::with_tls(tls))
    }

    /// A client for a host that has no certificate yet: it trusts only the CA whose fingerprint
    /// its invitation names, and presents nothing (enrolment is the one route that admits it).
    pub(crate) fn enrolling(ca_fingerprint: &str) -> Result<PeerClient, TrustError> {
        let tls = doppel_trust::tls::pinned_client(ca_fingerprint)?;
        Ok(PeerClient::with_tls(tls))
    }

    fn with_tls(tls: rustls::ClientConfig) -> PeerClient {
        PeerClient {
            // A peer whose machine vanished answers no connection attempt at all; without a
            // bound, a call would wait out its whole timeout on it.
            http: reqwest::Client::builder()
                .use_preconfigured_tls(tls)
                .https_only(true)
                .connect_timeout(Duration::from_secs(1))
                .pool_idle_timeout(POOL_IDLE)
                .build()
                .unwrap_or_default(),
        }
    }

    /// A raft request to `route` of the member at `addr` (`HOST:PORT`), authenticated.
    pub(crate) fn raft(&self, addr: &str, route: RaftRoute) -> reqwest::RequestBuilder {
        self.http.post(format!("https://{addr}{}", route.path()))
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

    /// A request to one of the host's own peer routes on the host at `addr`, with `rest` after
    /// the route's path (a forwarded client request's own path), for the caller to complete.
    pub fn host_request(
        &self,
        addr: &str,
        method: reqwest::Method,
        route: HostRoute,
        rest: &str,
    ) -> reqwest::RequestBuilder {
        self.http.request(
            method,
            format!("https://{addr}{HOST_ROUTES}{}{rest}", route.0),
        )
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
        let url = format!("https://{addr}{HOST_ROUTES}{}", route.0);
        let mut request = match body {
            Some(body) => self.http.post(url).json(body),
            None => self.http.get(url),
        };
        request = request.timeout(timeout);
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
    if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
        return Err(PeerError::Unauthorized(
            answer.text().await.unwrap_or_default(),
        ));
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

/// Who is at the other end of a peer connection: the identity its certificate states, or `None`
/// for a client that presented none (a host enrolling). Put into every request's extensions by
/// [`accept`].
#[derive(Clone, Debug)]
pub struct ConnectedPeer(pub Option<Arc<HostIdentity>>);

/// Makes a TLS connection of `stream`, with the peer listener's configuration: the TLS stream and
/// who is at the other end. rustls has already refused a certificate that is not from one of the
/// cluster's CAs, or expired; what that identity may do is [`PeerServer`]'s to say.
pub async fn accept<IO>(
    config: Arc<rustls::ServerConfig>,
    stream: IO,
) -> std::io::Result<(tokio_rustls::server::TlsStream<IO>, ConnectedPeer)>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let tls = tokio_rustls::TlsAcceptor::from(config)
        .accept(stream)
        .await?;
    let peer = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(|cert| HostIdentity::from_certificate(cert))
        .transpose()
        .map_err(std::io::Error::other)?
        .map(Arc::new);
    Ok((tls, ConnectedPeer(peer)))
}

/// Whether the peer with `identity` may call a route (`None`: one of the host's own), or why not.
pub type Admit = Arc<dyn Fn(&HostIdentity, Option<RaftRoute>) -> Result<(), String> + Send + Sync>;

/// The acceptor: admits every peer request by the identity of its connection before a route sees
/// it.
#[derive(Clone)]
pub struct PeerServer {
    admit: Admit,
    refusals: Arc<std::sync::Mutex<RefusalLog>>,
}

/// Where summaries of refused peers go (for the audit trail): at most one per
/// [`REFUSALS_LOGGED_EVERY`] from each source.
pub type RefusalSink = tokio::sync::mpsc::Sender<String>;

impl PeerServer {
    /// An acceptor admitting requests as `admit` says, reporting refusals to `sink`.
    pub fn new(admit: Admit, sink: RefusalSink) -> PeerServer {
        PeerServer {
            admit,
            refusals: Arc::new(std::sync::Mutex::new(RefusalLog {
                sink: Some(sink),
                ..RefusalLog::default()
            })),
        }
    }

    /// Every peer route in one router: `raft` (raft's routes, at their [`RaftRoute`] paths) and
    /// `host` (the host's own, at their [`HostRoute`] paths), behind admission.
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

/// How often refusals are logged: an attacker knocking must not flood the log.
pub const REFUSALS_LOGGED_EVERY: Duration = Duration::from_secs(10);

/// Refusals counted since the last log line.
#[derive(Default)]
pub struct RefusalLog {
    last: Option<std::time::Instant>,
    since: u64,
    sink: Option<RefusalSink>,
}

impl RefusalLog {
    /// A log that also reports to `sink`.
    pub fn new(sink: RefusalSink) -> RefusalLog {
        RefusalLog {
            sink: Some(sink),
            ..RefusalLog::default()
        }
    }

    /// Counts one refusal of `who` on `what`, and logs (and reports) it with the count since the
    /// last line, if that was long enough ago.
    pub fn refused(&mut self, who: &str, what: &str, why: &str) {
        self.since += 1;
        if self
            .last
            .is_none_or(|at| at.elapsed() >= REFUSALS_LOGGED_EVERY)
        {
            tracing::warn!(
                peer = who,
                what,
                refused_since_last_line = self.since,
                "refused a peer: {why}"
            );
            if let Some(sink) = &self.sink {
                let _ = sink.try_send(format!(
                    "{} peer request(s); the last from {who} on {what}: {why}",
                    self.since
                ));
            }
            self.last = Some(std::time::Instant::now());
            self.since = 0;
        }
    }
}

async fn authenticate(State(server): State<PeerServer>, request: Request, next: Next) -> Response {
    let route = raft_route_of(&request);
    let peer = request
        .extensions()
        .get::<ConnectedPeer>()
        .and_then(|p| p.0.clone());
    let verdict = match (&peer, route) {
        (_, Some(RaftRoute::Enrol)) => Ok(()),
        (None, _) => Err((
            StatusCode::UNAUTHORIZED,
            "a peer request needs a client certificate from this cluster's CA".to_string(),
        )),
        (Some(who), route) => {
            (server.admit)(who, route).map_err(|why| (StatusCode::FORBIDDEN, why))
        }
    };
    match verdict {
        Ok(()) => next.run(request).await,
        Err((status, why)) => {
            let who = peer.map_or_else(|| "(no certificate)".to_string(), |p| p.to_string());
            server
                .refusals
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .refused(&who, request.uri().path(), &why);
            (status, why).into_response()
        }
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
