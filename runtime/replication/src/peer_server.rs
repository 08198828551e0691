//! The serving side of raft's peer routes: votes, snapshots and the append stream for openraft;
//! forwarded writes and read-index questions for followers; joins, removals, status, probes and
//! the lease question for membership. Authentication is the transport's, before any of these.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use openraft::Raft;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::log_store::LogStore;
use crate::membership::{self, JoinRequest};
use crate::raft_network::LEASE_WARNING_EVERY;
use crate::transport::{LEAVING, PeerServer, RaftRoute, named_lease, raft_route_of};
use crate::types::{Batch, NodeId, TypeConfig};
use crate::write_gate::WriteGate;

#[derive(Clone)]
struct Server {
    raft: Raft<TypeConfig>,
    log: LogStore,
    gate: WriteGate,
    /// When a message refused over different leases was last logged.
    lease_warned: Arc<Mutex<Option<Instant>>>,
}

/// Every peer route of a host: raft's, for the node `raft` whose log is `log` and whose writes
/// pass `gate`, and the host's own `host` routes, behind `acceptor`'s authentication.
pub fn peer_router(
    raft: Raft<TypeConfig>,
    log: LogStore,
    gate: WriteGate,
    acceptor: &PeerServer,
    host: axum::Router,
) -> axum::Router {
    let server = Server {
        raft,
        log,
        gate,
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
/// with each command's outcome. A leader removing itself proposes nothing more and answers
/// [`LEAVING`]: the follower asks the next leader.
async fn write(State(s): State<Server>, body: Bytes) -> Response {
    let Some(_pass) = s.gate.pass().await else {
        return (
            LEAVING,
            "this host is leaving the cluster and proposes no more writes; ask the next leader",
        )
            .into_response();
    };
    serve(&body, |batch: Batch| async move {
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
        crate::read_index::confirmed_read_index(&s.raft, lease * READ_INDEX_PATIENCE_LEASES)
            .await
            .map(|read| read.unwrap_or(0))
            .map_err(|e| e.to_string())
    })
    .await
}

/// A host asking to join (it proved it is a peer): make it a learner, then a voter.
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
