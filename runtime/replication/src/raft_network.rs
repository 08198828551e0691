//! The client side of raft's messages: openraft's `RaftNetwork` over the peer transport. Votes
//! and snapshots are one request each; appends, on the path of every write, go over a connection
//! kept open per follower ([`crate::append_stream`]). Votes, appends and snapshots name the
//! sender's leader lease, and a member refuses them from a host whose lease is not its own:
//! members with different leases depose each other's leaders, so they had better not form a
//! cluster at all, and say why.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::BasicNode;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::append_stream::{AppendAnswer, AppendStream, StreamError};
use crate::transport::{LEASE_HEADER, PeerClient, PeerError, RaftRoute};
use crate::types::{NodeId, TypeConfig};

/// How often a refusal over different leases is logged, per peer: it recurs at every heartbeat.
pub(crate) const LEASE_WARNING_EVERY: Duration = Duration::from_secs(10);

/// Makes a client per peer; all share one [`PeerClient`] and this host's leader lease.
#[derive(Clone)]
pub struct Network {
    peers: PeerClient,
    lease_ms: u64,
    /// When each peer's refusal over different leases was last logged. Shared by every client,
    /// because openraft makes a new one for each round of votes.
    lease_warned: Arc<Mutex<HashMap<NodeId, Instant>>>,
    /// Append connections no client holds now, by address.
    idle: IdleStreams,
}

/// Append connections a dropped client left, for the next client to the same address.
///
/// openraft makes a new client for every leadership check (each linearizable read) and drops it
/// after one heartbeat interval: without these, each check would open its connections afresh (a
/// TLS handshake and an upgrade per follower), which often takes longer than that interval, so
/// that reads failed for want of a quorum that was there all along.
#[derive(Clone, Default)]
struct IdleStreams(Arc<Mutex<HashMap<String, Vec<AppendStream>>>>);

/// Idle append connections kept per address.
const IDLE_PER_PEER: usize = 4;

impl IdleStreams {
    fn take(&self, addr: &str) -> Option<AppendStream> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(addr)?
            .pop()
    }

    fn put(&self, addr: &str, stream: AppendStream) {
        let mut idle = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let kept = idle.entry(addr.to_string()).or_default();
        if kept.len() < IDLE_PER_PEER {
            kept.push(stream);
        }
    }
}

impl Network {
    /// A network calling peers through `peers`, naming `lease` as this host's leader lease.
    pub fn new(peers: PeerClient, lease: Duration) -> Network {
        Network {
            peers,
            lease_ms: u64::try_from(lease.as_millis()).unwrap_or(u64::MAX),
            lease_warned: Arc::default(),
            idle: IdleStreams::default(),
        }
    }
}

/// The client side of one peer.
pub struct Peer {
    target: NodeId,
    addr: String,
    peers: PeerClient,
    lease_ms: u64,
    /// The connection appends go over, once opened.
    appends: Option<AppendStream>,
    /// A connection being opened for appends.
    opening: Option<tokio::task::JoinHandle<Result<AppendStream, StreamError>>>,
    lease_warned: Arc<Mutex<HashMap<NodeId, Instant>>>,
    idle: IdleStreams,
}

impl Drop for Peer {
    /// Leaves its append connection, and one still being opened, to the next client.
    fn drop(&mut self) {
        if let Some(stream) = self.appends.take() {
            self.idle.put(&self.addr, stream);
        }
        if let Some(opening) = self.opening.take() {
            let (idle, addr) = (self.idle.clone(), self.addr.clone());
            // Dropped outside a runtime only at shutdown, when nothing is left to hand over.
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    if let Ok(Ok(stream)) = opening.await {
                        idle.put(&addr, stream);
                    }
                });
            }
        }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Peer {
        Peer {
            target,
            addr: node.addr.clone(),
            peers: self.peers.clone(),
            lease_ms: self.lease_ms,
            appends: None,
            opening: None,
            lease_warned: self.lease_warned.clone(),
            idle: self.idle.clone(),
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
        route: RaftRoute,
        req: &Req,
        option: RPCOption,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let body = postcard::to_stdvec(req).map_err(|e| NetworkError::new(&e))?;
        let request = self
            .peers
            .raft(&self.addr, route)
            .header(LEASE_HEADER, self.lease_ms)
            .timeout(option.hard_ttl())
            .body(body);
        let answer = request.send().await.map_err(|e| -> RPCError<_, _, E> {
            if e.is_connect() {
                Unreachable::new(&e).into()
            } else {
                NetworkError::new(&e).into()
            }
        })?;
        let status = answer.status();
        if !status.is_success() {
            let text = answer.text().await.unwrap_or_default();
            if status == reqwest::StatusCode::CONFLICT {
                self.lease_refused(&text);
            }
            return Err(NetworkError::new(&PeerError::Status { status, text }).into());
        }
        let bytes = answer.bytes().await.map_err(|e| NetworkError::new(&e))?;
        let result: Result<Resp, E> =
            postcard::from_bytes(&bytes).map_err(|e| NetworkError::new(&e))?;
        result.map_err(|e| RemoteError::new(self.target, e).into())
    }

    /// One append over the connection kept for appends, opening it if there is none. A kept
    /// connection may have died since its last use (the follower restarted): then the append is
    /// sent once more on a new one (appends are idempotent).
    ///
    /// openraft gives an append one heartbeat interval and drops it after that, so:
    /// - the stream is taken out while an append is on it: an append dropped halfway leaves its
    ///   answer unread, and the stream, out of step, is dropped with it;
    /// - a new stream is opened by a task of its own, which a dropped append leaves running for
    ///   the next one to pick up: opening (a TLS handshake, an upgrade) may take longer than one
    ///   heartbeat interval on a loaded host, and restarting it every time would never finish.
    async fn append_over_stream(
        &mut self,
        rpc: &AppendEntriesRequest<TypeConfig>,
    ) -> Result<AppendAnswer, StreamError> {
        if let Some(mut stream) = self.appends.take().or_else(|| self.idle.take(&self.addr)) {
            match stream.append(rpc).await {
                Ok(answer) => {
                    self.appends = Some(stream);
                    return Ok(answer);
                }
                Err(e) => {
                    tracing::debug!(target = self.target, error = %e, "append stream broke; reopening");
                }
            }
        }
        let opening = self.opening.get_or_insert_with(|| {
            let (peers, addr, lease_ms) = (self.peers.clone(), self.addr.clone(), self.lease_ms);
            tokio::spawn(async move { AppendStream::open(&peers, &addr, lease_ms).await })
        });
        let opened = opening.await;
        self.opening = None;
        let mut stream = opened.map_err(crate::append_stream::broken)??;
        let answer = stream.append(rpc).await;
        if answer.is_ok() {
            self.appends = Some(stream);
        }
        answer
    }
}

impl RaftNetwork<TypeConfig> for Peer {
    /// How long the leader waits before trying an unreachable follower again: one heartbeat
    /// interval, not openraft's 500 ms. A follower that restarts stands for election if it hears
    /// nothing within its election timeout (two thirds of the lease to the lease), which a
    /// leader waiting 500 ms, plus a TLS handshake, would often miss; its election would then
    /// depose a healthy leader. Retrying costs a refused connection per interval while a host is
    /// down (a connection being opened is kept for the next try, never opened twice).
    fn backoff(&self) -> openraft::network::Backoff {
        let interval = Duration::from_millis((self.lease_ms / 4).max(10));
        openraft::network::Backoff::new(std::iter::repeat(interval))
    }

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
            // The stream that was on it was dropped with it (see `append_over_stream`).
            Err(elapsed) => return Err(NetworkError::new(&elapsed).into()),
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
        self.call(RaftRoute::Snapshot, &rpc, option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call(RaftRoute::Vote, &rpc, option).await
    }
}
