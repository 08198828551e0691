//! The serving side of raft's peer routes: votes, snapshots and the append stream for openraft;
//! forwarded writes and read-index questions for followers; joins, removals, status, probes and
//! the lease question for membership; enrolment of invited hosts. Who may call which route is
//! decided here ([`admission`]) and enforced by the transport before any route runs; a route
//! whose message names a sender (a vote's candidate, an append's or snapshot's leader, a join's
//! host) also checks that the name is the caller's own.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use openraft::Raft;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::authority::{self, EnrolRequest};
use crate::log_store::LogStore;
use crate::membership::{self, JoinRequest};
use crate::raft_network::LEASE_WARNING_EVERY;
use crate::replicated::ReplicatedStore;
use crate::transport::{
    Admit, ConnectedPeer, LEAVING, PeerServer, RaftRoute, RefusalSink, named_lease, raft_route_of,
};
use crate::types::{Batch, NodeId, TypeConfig};
use crate::write_gate::WriteGate;

#[derive(Clone)]
struct Server {
    store: Arc<ReplicatedStore>,
    raft: Raft<TypeConfig>,
    log: LogStore,
    gate: WriteGate,
    /// When a message refused over different leases was last logged.
    lease_warned: Arc<Mutex<Option<Instant>>>,
}

/// Who may call what, by the identity in the caller's certificate (already verified against the
/// cluster's CAs by the TLS handshake):
/// - a current member (voter or learner): everything — also while it is being removed (its
///   revocation is written first, so that it holds from the moment the removal is decided; the
///   leader removing itself still has to replicate that);
/// - a host removed for good: nothing;
/// - any other host of the cluster's CA: only asking the lease and joining (a host that enrolled
///   and is about to join), and — while this host is not a member of anything yet, because it is
///   joining — everything, since the leader that is taking it in is not yet in its membership.
pub(crate) fn admission(store: Arc<ReplicatedStore>) -> Admit {
    Arc::new(move |who, route| {
        let members = store.members();
        if members.iter().any(|(id, _)| *id == who.id) {
            return Ok(());
        }
        if authority::is_revoked(store.state().engine(), who.id) {
            return Err(format!(
                "{who} was removed from this cluster; its certificate is no longer accepted"
            ));
        }
        if members.is_empty() {
            return Ok(());
        }
        match route {
            Some(RaftRoute::Lease | RaftRoute::Join) => Ok(()),
            _ => Err(format!("{who} is not a member of this cluster")),
        }
    })
}

/// Every peer route of a host: raft's, for the node behind `store`, and the host's own `host`
/// routes, behind the transport's admission.
pub fn peer_router(
    store: Arc<ReplicatedStore>,
    host: axum::Router,
    refusals: RefusalSink,
) -> axum::Router {
    let acceptor = PeerServer::new(admission(store.clone()), refusals);
    let server = Server {
        raft: store.raft().clone(),
        log: store.log().clone(),
        gate: store.gate().clone(),
        store,
        lease_warned: Arc::default(),
    };
    let mut routes = axum::Router::new();
    for route in RaftRoute::ALL {
        let handler = match route {
            RaftRoute::AppendStream => post(append_stream),
            RaftRoute::Vote => post(vote),
            RaftRoute::Snapshot => post(snapshot),
            RaftRoute::Write => post(write),
            RaftRoute::ReadIndex => post(read_index),
            RaftRoute::Join => post(join),
            RaftRoute::Remove => post(remove),
            RaftRoute::Status => post(status),
            RaftRoute::Ping => post(ping),
            RaftRoute::Lease => post(lease),
            RaftRoute::Enrol => post(enrol),
        };
        routes = routes.route(route.path(), handler);
    }
    let raft_routes = routes
        .layer(middleware::from_fn_with_state(
            server.clone(),
            refuse_other_lease,
        ))
        .with_state(server);
    acceptor.router(raft_routes, host)
}

/// The caller's raft id (admission let only callers with a certificate this far, but enrolment).
fn caller(peer: &ConnectedPeer) -> Option<NodeId> {
    peer.0.as_ref().map(|p| p.id)
}

/// A 403 for a message that names a sender other than its caller.
fn impersonation(peer: &ConnectedPeer, named: Option<NodeId>, what: &str) -> Option<Response> {
    if named.is_some() && named == caller(peer) {
        return None;
    }
    let who = peer
        .0
        .as_ref()
        .map_or("(nobody)".to_string(), |p| p.to_string());
    tracing::warn!(caller = %who, ?named, "refused a {what} sent in another host's name");
    Some(
        (
            StatusCode::FORBIDDEN,
            format!("{who} sent a {what} in the name of host {named:?}"),
        )
            .into_response(),
    )
}

/// Decodes a postcard body, or answers 400.
fn decode<T: DeserializeOwned>(body: &Bytes) -> Result<T, Box<Response>> {
    postcard::from_bytes(body).map_err(|e| {
        Box::new(
            (
                StatusCode::BAD_REQUEST,
                format!("malformed raft message: {e}"),
            )
                .into_response(),
        )
    })
}

fn encode(answer: &impl Serialize) -> Response {
    match postcard::to_stdvec(answer) {
        Ok(bytes) => bytes.into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// A 409 for a vote, append or snapshot from a host whose leader lease is not ours (the other
/// routes are questions and forwarded work, which a lease does not affect). A message that names
/// no lease is let through.
async fn refuse_other_lease(
    State(server): State<Server>,
    request: Request,
    next: Next,
) -> Response {
    let theirs = raft_route_of(&request)
        .filter(|r| r.lease_bound())
        .and_then(|_| named_lease(&request));
    let ours = server.raft.config().election_timeout_max;
    let Some(theirs) = theirs.filter(|t| *t != ours) else {
        return next.run(request).await;
    };
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
        tracing::error!(path = request.uri().path(), "refused a raft message: {why}");
    }
    (StatusCode::CONFLICT, why).into_response()
}

/// Decodes a request, runs `handle` on it, encodes its result; a malformed request is a 400.
async fn serve<Req, Resp, F>(body: &Bytes, handle: impl FnOnce(Req) -> F) -> Response
where
    Req: DeserializeOwned,
    Resp: Serialize,
    F: Future<Output = Resp>,
{
    match decode(body) {
        Ok(req) => encode(&handle(req).await),
        Err(refused) => *refused,
    }
}

async fn append_stream(
    State(s): State<Server>,
    Extension(peer): Extension<ConnectedPeer>,
    request: Request,
) -> Response {
    let Some(caller) = caller(&peer) else {
        return StatusCode::UNAUTHORIZED.into_response();
    };
    crate::append_stream::accept(s.raft, caller, request).await
}

async fn vote(
    State(s): State<Server>,
    Extension(peer): Extension<ConnectedPeer>,
    body: Bytes,
) -> Response {
    let req: openraft::raft::VoteRequest<NodeId> = match decode(&body) {
        Ok(req) => req,
        Err(answer) => return *answer,
    };
    if let Some(refused) = impersonation(&peer, req.vote.leader_id().voted_for(), "vote request") {
        return refused;
    }
    encode(&s.raft.vote(req).await)
}

async fn snapshot(
    State(s): State<Server>,
    Extension(peer): Extension<ConnectedPeer>,
    body: Bytes,
) -> Response {
    let req: openraft::raft::InstallSnapshotRequest<TypeConfig> = match decode(&body) {
        Ok(req) => req,
        Err(answer) => return *answer,
    };
    if let Some(refused) = impersonation(&peer, req.vote.leader_id().voted_for(), "snapshot") {
        return refused;
    }
    encode(&s.raft.install_snapshot(req).await)
}

/// A batch of writes forwarded by a follower: the leader proposes it as one entry and answers
/// with each command's outcome. A leader removing itself proposes nothing more and answers
/// [`LEAVING`], and so does a host that is no longer the leader: the follower asks the next one.
async fn write(State(s): State<Server>, body: Bytes) -> Response {
    let Some(_pass) = s.gate.pass().await else {
        return (
            LEAVING,
            "this host is leaving the cluster and proposes no more writes; ask the next leader",
        )
            .into_response();
    };
    let batch: Batch = match decode(&body) {
        Ok(batch) => batch,
        Err(refused) => return *refused,
    };
    let written = match s.raft.client_write(batch).await {
        // This host lost the lead (an election under load) before proposing anything: the same
        // answer as a leader that is leaving, so that the follower asks the next leader instead
        // of failing a write that never happened.
        Err(openraft::error::RaftError::APIError(
            openraft::error::ClientWriteError::ForwardToLeader(_),
        )) => {
            return (
                LEAVING,
                "this host does not lead any more and proposed nothing; ask the next leader",
            )
                .into_response();
        }
        other => other.map(|r| r.data).map_err(|e| e.to_string()),
    };
    encode(&written)
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
        crate::read_index::confirmed_read_index(&s.raft, lease * READ_INDEX_PATIENCE_LEASES)
            .await
            .map(|read| read.unwrap_or(0))
            .map_err(|e| e.to_string())
    })
    .await
}

/// A host asking to join, or to record its new address: make it a learner, then a voter. Only
/// for itself: a host may change no other host's address.
async fn join(
    State(s): State<Server>,
    Extension(peer): Extension<ConnectedPeer>,
    body: Bytes,
) -> Response {
    let req: JoinRequest = match decode(&body) {
        Ok(req) => req,
        Err(answer) => return *answer,
    };
    if let Some(refused) = impersonation(&peer, Some(req.id), "join request") {
        return refused;
    }
    tracing::info!(id = req.id, addr = %req.addr, "a host asks to join");
    encode(&membership::add_member(&s.raft, req).await)
}

/// A host with an invitation asks for its certificate (the one route open without one).
async fn enrol(State(s): State<Server>, body: Bytes) -> Response {
    serve(&body, |req: EnrolRequest| async move {
        authority::redeem(s.store.as_ref(), &req)
            .await
            .map_err(|e| {
                tracing::warn!(id = req.id, error = %e, "refused an enrolment");
                e.to_string()
            })
    })
    .await
}

/// A removal forwarded by a follower's admin API.
async fn remove(State(s): State<Server>, body: Bytes) -> Response {
    serve(&body, |id: NodeId| async move {
        membership::remove_member(&s.raft, &s.gate, id).await
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

/// The leader lease this host runs with, in ms: a joining host takes it, because hosts with
/// different leases would depose each other's leaders.
async fn lease(State(server): State<Server>) -> Vec<u8> {
    postcard::to_stdvec(&server.raft.config().election_timeout_max).unwrap_or_default()
}

/// A liveness probe from a member: answers how far our log reaches.
async fn ping(State(server): State<Server>) -> Vec<u8> {
    postcard::to_stdvec(&server.log.reach()).unwrap_or_default()
}
