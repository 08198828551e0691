//! [`ReplicatedStore`]: doppel's [`Store`] over raft. A write is acknowledged once a majority has
//! it durably in their logs and it is applied here; every read is linearizable.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use doppel_store::{Command, Outcome, Pairs, Space, Store, StoreError};
use openraft::Raft;
use openraft::error::{CheckIsLeaderError, ClientWriteError, RaftError};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::log_store::LogStore;
use crate::membership::{self, ClusterStatus, JoinRequest, Refusal};
use crate::node::Node;
use crate::read_index::confirmed_read_index;
use crate::read_rounds::ReadRounds;
use crate::state_machine::StateMachine;
use crate::transport::{LEAVING, PeerClient, PeerError, RaftRoute};
use crate::types::{NodeId, Response, TypeConfig};
use crate::write_gate::WriteGate;

/// Most commands packed into one raft entry, and most bytes of keys and values.
const MAX_BATCH: usize = 512;
const MAX_BATCH_BYTES: usize = 8 << 20;
/// Entries proposed at once: while one is on its way, the next fills up. One, not two: openraft
/// 0.9 appends and syncs one entry at a time anyway, so a second entry in flight only made
/// entries smaller and appends more frequent (`replicated` bench, alternated four times: 16
/// clients 7.4–8.1k writes/s with two against 8.2–8.8k with one; one host 10.8–11.7k against
/// 13.2–14.9k; 1 and 256 clients unchanged within noise).
const IN_FLIGHT: usize = 1;

/// The store of one host in a cluster.
pub struct ReplicatedStore {
    core: Arc<Core>,
    /// Writes waiting to be packed into an entry.
    queue: tokio::sync::mpsc::UnboundedSender<Pending>,
}

/// What the store and its batcher share.
struct Core {
    raft: Raft<TypeConfig>,
    /// Closed when this host, leading, removes itself: then its writes go to the next leader.
    gate: WriteGate,
    state: StateMachine,
    log: LogStore,
    peers: PeerClient,
    /// How long a write or read may wait for agreement before answering "unavailable", in ms. A
    /// host cut off from the majority therefore refuses instead of hanging, and never
    /// acknowledges.
    timeout_ms: AtomicU64,
    /// Entries on their way (at most `IN_FLIGHT`), shared by the batcher and writers that
    /// propose their own.
    in_flight: Arc<tokio::sync::Semaphore>,
    /// Writes in the batcher's queue.
    queued: AtomicUsize,
    /// Linearizable reads share their leadership confirmations.
    reads: ReadRounds,
}

/// A write waiting for its entry.
struct Pending {
    command: Command,
    answer: tokio::sync::oneshot::Sender<Result<Outcome, StoreError>>,
}

/// How long to wait before asking the leader again after a connection to it was refused.
const ASK_AGAIN_AFTER: Duration = Duration::from_millis(10);

fn unavailable(why: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(why.to_string())
}

impl ReplicatedStore {
    /// A store over the raft `node`, asking the leader through `peers`.
    /// Must be called within a tokio runtime: it starts the task that batches writes.
    pub fn new(node: Node, peers: PeerClient) -> ReplicatedStore {
        let Node {
            raft,
            state,
            log,
            gate,
        } = node;
        let core = Arc::new(Core {
            raft,
            gate,
            state,
            log,
            peers,
            timeout_ms: AtomicU64::new(5_000),
            in_flight: Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT)),
            queued: AtomicUsize::new(0),
            reads: ReadRounds::new(),
        });
        let (queue, pending) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(batcher(core.clone(), pending));
        ReplicatedStore { core, queue }
    }

    /// The same store with another agreement timeout.
    pub fn with_timeout(self, timeout: Duration) -> ReplicatedStore {
        let ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        self.core.timeout_ms.store(ms, Ordering::Relaxed);
        self
    }

    /// The raft node.
    pub(crate) fn raft(&self) -> &Raft<TypeConfig> {
        &self.core.raft
    }

    /// The raft log of this host.
    pub(crate) fn log(&self) -> &LogStore {
        &self.core.log
    }

    /// The gate this host's writes pass while it leads.
    pub(crate) fn gate(&self) -> &WriteGate {
        &self.core.gate
    }

    /// The state machine (the applied state).
    pub(crate) fn state(&self) -> &StateMachine {
        &self.core.state
    }

    /// Changes whenever an applied entry touched the host's own tables (services, modules,
    /// placements, hosts): a host watches it to load deploys made through other hosts.
    pub fn system_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.core.state.system_changes()
    }

    /// The cluster as its leader sees it (with each member's replication progress); this host's
    /// own view when no leader answers.
    pub async fn status(&self) -> ClusterStatus {
        let local = membership::status(&self.core.raft);
        if local.leader.is_none() || local.leader == Some(local.reported_by) {
            return local;
        }
        self.core
            .ask_leader(RaftRoute::Status, &())
            .await
            .unwrap_or(local)
    }

    /// Records that host `id` is now reached at `addr` (it restarted on another address).
    pub async fn set_address(&self, id: NodeId, addr: &str) -> Result<(), StoreError> {
        let req = JoinRequest {
            id,
            addr: addr.to_string(),
        };
        let here = membership::add_member(&self.core.raft, req.clone()).await;
        self.or_through_leader(here, RaftRoute::Join, &req).await
    }

    /// A membership change made here, or — when this host is not the leader — made by the leader
    /// through its `route`.
    async fn or_through_leader<Req: Serialize>(
        &self,
        here: Result<(), Refusal>,
        route: RaftRoute,
        req: &Req,
    ) -> Result<(), StoreError> {
        match here {
            Ok(()) => Ok(()),
            Err(Refusal::NotLeader(_)) => {
                self.core.ask_leader_as::<_, (), Refusal>(route, req).await
            }
            Err(Refusal::Failed(why)) => Err(unavailable(why)),
        }
    }

    /// `key` in this host's applied state, without asking the leader: possibly a little behind.
    /// For checks that must work when no majority answers (an operator's credential).
    pub fn read_local(&self, space: &Space, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.core.state.engine().get(space, key)
    }

    /// Every key and value of `space` in this host's applied state, in key order, without asking
    /// the leader (for checking this host's own copy of something).
    pub fn scan_local(&self, space: &Space) -> Result<Pairs, StoreError> {
        let engine = self.core.state.engine();
        let mut rows = Vec::new();
        let mut after: Option<Vec<u8>> = None;
        loop {
            let keys = engine.list_keys(space, after.as_deref(), 1000)?;
            let Some(last) = keys.last().cloned() else {
                return Ok(rows);
            };
            for key in keys {
                if let Some(value) = engine.get(space, &key)? {
                    rows.push((key, value));
                }
            }
            after = Some(last);
        }
    }

    /// Compacts this host's log: a snapshot of the applied state, then every entry it covers
    /// purged and the log file rewritten without them. After a service's data key is destroyed,
    /// this takes the (now unreadable) ciphertext of its writes out of the log too. Returns the
    /// index the log now starts after.
    pub async fn compact(&self) -> Result<u64, StoreError> {
        let raft = &self.core.raft;
        let target = self.applied_index();
        raft.trigger()
            .snapshot()
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        let mut metrics = raft.metrics();
        let snapshot = loop {
            let at = metrics.borrow().snapshot.map_or(0, |id| id.index);
            if at >= target {
                break at;
            }
            tokio::time::timeout(Duration::from_secs(30), metrics.changed())
                .await
                .map_err(|_| unavailable("the snapshot took over 30 s"))?
                .map_err(|e| unavailable(e.to_string()))?;
        };
        raft.trigger()
            .purge_log(snapshot)
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        // A leader purges only what every follower has; wait a moment for it, then rewrite
        // with whatever is purged by then.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while metrics.borrow().purged.map_or(0, |id| id.index) < snapshot
            && tokio::time::Instant::now() < deadline
        {
            let _ = tokio::time::timeout_at(deadline, metrics.changed()).await;
        }
        self.core.log.rewrite_now()?;
        Ok(metrics.borrow().purged.map_or(0, |id| id.index))
    }

    /// The index of the last entry applied on this host.
    pub fn applied_index(&self) -> u64 {
        self.core.state.applied_index()
    }

    /// The index of the last entry in this host's log (committed or not).
    pub fn last_log_index(&self) -> u64 {
        self.core.log.reach().index
    }

    /// This host's whole applied state and the index it stands at (for a backup's snapshot).
    pub fn export_applied(&self) -> Result<(u64, Pairs), StoreError> {
        self.core.state.export_applied()
    }

    /// Applied entries after index `after` (at most `max`), each as its index and commands, for
    /// shipping the log elsewhere: only entries applied here, so only committed ones. `None` when
    /// the log was purged past `after` (the shipper then starts from a new snapshot).
    pub fn applied_entries(&self, after: u64, max: usize) -> Option<Vec<(u64, crate::Batch)>> {
        let upto = self.core.state.applied_index();
        self.core.log.entries_after(after, upto, max)
    }

    /// Applies `commands` as one raft entry — atomically, each with its own outcome — and only
    /// if this host leads: never forwarded. A host that lost the lead mid-way therefore cannot
    /// apply through the new leader what the new leader applies itself; whoever replays another
    /// cluster's log with a progress record in the same entry gets each entry exactly once.
    pub async fn apply_as_leader(
        &self,
        commands: Vec<Command>,
    ) -> Result<Vec<Result<Outcome, StoreError>>, StoreError> {
        let core = &self.core;
        let written = async {
            let Some(_pass) = core.gate.pass().await else {
                return Err(unavailable("this host is leaving the cluster"));
            };
            match core.raft.client_write(commands).await {
                Ok(written) => Ok(written.data),
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => {
                    Err(unavailable("this host does not lead"))
                }
                Err(e) => Err(unavailable(e)),
            }
        };
        let responses = tokio::time::timeout(core.timeout(), written)
            .await
            .unwrap_or_else(|_| {
                Err(unavailable(
                    "no majority acknowledged the write in time; it may or may not have happened",
                ))
            })?;
        Ok(responses.into_iter().map(outcome).collect())
    }

    /// The membership now.
    fn membership(&self) -> openraft::Membership<NodeId, openraft::BasicNode> {
        self.core
            .raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .clone()
    }

    /// The address the membership records for host `id`.
    pub fn address_of(&self, id: NodeId) -> Option<String> {
        self.membership().get_node(&id).map(|n| n.addr.clone())
    }

    /// Whether this host is the leader now.
    pub fn is_leader(&self) -> bool {
        self.core.raft.metrics().borrow().state == openraft::ServerState::Leader
    }

    /// Every member: its id and peer address.
    pub fn members(&self) -> Vec<(NodeId, String)> {
        self.membership()
            .nodes()
            .map(|(id, node)| (*id, node.addr.clone()))
            .collect()
    }

    /// How many hosts are members.
    pub fn member_count(&self) -> usize {
        self.membership().nodes().count()
    }

    /// Removes host `id` from the cluster for good (through the leader).
    pub async fn remove_member(&self, id: NodeId) -> Result<(), StoreError> {
        let here = membership::remove_member(&self.core.raft, &self.core.gate, id).await;
        self.or_through_leader(here, RaftRoute::Remove, &id).await
    }

    /// Waits until reading the local state machine is linearizable: for a confirmation that
    /// started after now, shared with every other read waiting for one ([`ReadRounds`]).
    async fn read_barrier(&self) -> Result<(), StoreError> {
        self.core.reads.join(|| self.confirm_read()).await
    }

    /// One confirmation: the index a read must see, confirmed by a majority, applied here.
    async fn confirm_read(&self) -> Result<(), StoreError> {
        let timeout = self.core.timeout();
        let barrier = async {
            let index = match confirmed_read_index(&self.core.raft, timeout).await {
                Ok(index) => index,
                Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(_))) => {
                    // Not the leader: ask it how far this host must have applied.
                    Some(
                        self.core
                            .ask_leader::<_, u64>(RaftRoute::ReadIndex, &())
                            .await?,
                    )
                }
                Err(e) => return Err(unavailable(e)),
            };
            let Some(index) = index else {
                return Ok(());
            };
            self.core
                .raft
                .wait(Some(timeout))
                .applied_index_at_least(Some(index), "linearizable read")
                .await
                .map(|_| ())
                .map_err(unavailable)
        };
        tokio::time::timeout(timeout, barrier)
            .await
            .map_err(|_| unavailable("no majority confirmed the read in time"))?
    }
}

impl Core {
    fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms.load(Ordering::Relaxed))
    }

    /// The leader and its address; during an election, waits (within the timeout) for one.
    async fn leader_addr(&self) -> Result<(NodeId, String), StoreError> {
        let metrics = self
            .raft
            .wait(Some(self.timeout()))
            // A leader just removed from the cluster is no leader to ask: wait for the next.
            .metrics(
                |m| {
                    m.current_leader
                        .is_some_and(|l| m.membership_config.membership().get_node(&l).is_some())
                },
                "a known leader that is a member",
            )
            .await
            .map_err(|_| unavailable("no leader is known"))?;
        let leader = metrics
            .current_leader
            .ok_or_else(|| unavailable("no leader is known"))?;
        let node = metrics
            .membership_config
            .membership()
            .get_node(&leader)
            .ok_or_else(|| unavailable(format!("leader {leader} is not a member")))?;
        Ok((leader, node.addr.clone()))
    }

    /// Calls `route` on the leader with a postcard body; the leader answers `Result<T, String>`.
    async fn ask_leader<Req: Serialize, T: DeserializeOwned>(
        &self,
        route: RaftRoute,
        req: &Req,
    ) -> Result<T, StoreError> {
        self.ask_leader_as::<Req, T, String>(route, req).await
    }

    /// Like `ask_leader`, for routes whose error type is `E`.
    async fn ask_leader_as<Req: Serialize, T: DeserializeOwned, E>(
        &self,
        route: RaftRoute,
        req: &Req,
    ) -> Result<T, StoreError>
    where
        E: DeserializeOwned + std::fmt::Display,
    {
        // Shared, not copied, by each attempt.
        let body = axum::body::Bytes::from(
            postcard::to_stdvec(req).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        );
        let deadline = Instant::now() + self.timeout();
        let answer = loop {
            let (leader, addr) = self.leader_addr().await?;
            let asked =
                self.peers
                    .ask::<Result<T, E>>(&addr, route, body.clone(), Some(self.timeout()));
            let asked = asked.await;
            let again = Instant::now() + ASK_AGAIN_AFTER < deadline;
            match asked {
                Ok(answer) => break answer,
                // A leader removing itself, or a host that lost the lead before proposing,
                // proposed nothing: ask whoever leads next.
                Err(PeerError::Status { status, .. }) if status == LEAVING && again => {
                    tracing::debug!(leader, "the leader is leaving the cluster; asking again");
                }
                // Not even connected, so nothing was sent: the leader's process is gone (killed,
                // restarting) and this host has not heard of the next one yet. Ask whoever leads
                // once one is known rather than failing every write of the election. Anything
                // else (a reset mid-request, a timeout) may have reached the leader and is not
                // repeated: a write sent twice could count twice.
                Err(PeerError::Unreachable(why)) if again => {
                    tracing::debug!(leader, error = %why, "leader unreachable; asking again");
                }
                Err(e @ (PeerError::Unreachable(_) | PeerError::Broken(_))) => {
                    return Err(unavailable(format!("leader {leader} unreachable: {e}")));
                }
                Err(e) => return Err(unavailable(format!("leader {leader}: {e}"))),
            }
            tokio::time::sleep(ASK_AGAIN_AFTER).await;
        };
        answer.map_err(unavailable)
    }

    /// Proposes `batch` as one entry (through the leader when this host is not it) and answers
    /// each write.
    async fn propose(&self, batch: Vec<Pending>) {
        let (commands, answers): (Vec<Command>, Vec<_>) =
            batch.into_iter().map(|p| (p.command, p.answer)).unzip();
        let written = async {
            // Keep a copy for forwarding: the leader may change between asking and proposing.
            let here = match self.gate.pass().await {
                // Held until the entry is proposed and answered: a removal of this leader waits.
                Some(_pass) => Some(self.raft.client_write(commands.clone()).await),
                None => None,
            };
            match here {
                Some(Ok(written)) => Ok(written.data),
                Some(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_)))) | None => {
                    self.ask_leader::<_, Vec<Response>>(RaftRoute::Write, &commands)
                        .await
                }
                Some(Err(e)) => Err(unavailable(e)),
            }
        };
        let result = tokio::time::timeout(self.timeout(), written)
            .await
            .unwrap_or_else(|_| {
                Err(unavailable(
                    "no majority acknowledged the write in time; it may or may not have happened",
                ))
            });
        match result {
            Ok(responses) if responses.len() == answers.len() => {
                for (answer, response) in answers.into_iter().zip(responses) {
                    let _ = answer.send(outcome(response));
                }
            }
            Ok(responses) => {
                let why = format!(
                    "the leader answered {} outcomes for {} writes",
                    responses.len(),
                    answers.len()
                );
                for answer in answers {
                    let _ = answer.send(Err(StoreError::Corrupt(why.clone())));
                }
            }
            Err(e) => {
                let why = match e {
                    StoreError::Unavailable(why) => why,
                    other => other.to_string(),
                };
                for answer in answers {
                    let _ = answer.send(Err(StoreError::Unavailable(why.clone())));
                }
            }
        }
    }
}

/// Packs waiting writes into entries: takes everything queued (within limits) whenever fewer
/// than `IN_FLIGHT` entries are on their way, so writes that arrive during a sync share the next.
async fn batcher(core: Arc<Core>, mut queue: tokio::sync::mpsc::UnboundedReceiver<Pending>) {
    loop {
        let Ok(permit) = core.in_flight.clone().acquire_owned().await else {
            return;
        };
        let Some(first) = queue.recv().await else {
            return;
        };
        core.queued.fetch_sub(1, Ordering::AcqRel);
        let mut bytes = first.command.op.payload_len();
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH && bytes < MAX_BATCH_BYTES {
            match queue.try_recv() {
                Ok(next) => {
                    core.queued.fetch_sub(1, Ordering::AcqRel);
                    bytes += next.command.op.payload_len();
                    batch.push(next);
                }
                Err(_) => break,
            }
        }
        let core = core.clone();
        tokio::spawn(async move {
            core.propose(batch).await;
            drop(permit);
        });
    }
}

fn outcome(response: Response) -> Result<Outcome, StoreError> {
    response.map_err(StoreError::Rejected)
}

#[async_trait]
impl Store for ReplicatedStore {
    async fn get(&self, space: &Space, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.read_barrier().await?;
        self.core.state.engine().get(space, key)
    }

    async fn list_keys(
        &self,
        space: &Space,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        self.read_barrier().await?;
        self.core.state.engine().list_keys(space, after, limit)
    }

    async fn buckets(&self, service: &str) -> Result<Vec<String>, StoreError> {
        self.read_barrier().await?;
        self.core.state.engine().buckets(service)
    }

    async fn usage(&self, service: &str) -> Result<u64, StoreError> {
        self.read_barrier().await?;
        self.core.state.engine().usage(service)
    }

    async fn apply(&self, command: Command) -> Result<Outcome, StoreError> {
        let (answer, answered) = tokio::sync::oneshot::channel();
        // Nothing queued and room for another entry: the batcher would propose this write alone
        // at once anyway, so propose it here and save two hand-offs between tasks (what a lone
        // writer waits for). Under load writes queue and the batcher packs them.
        if self.core.queued.load(Ordering::Acquire) == 0
            && let Ok(permit) = self.core.in_flight.try_acquire()
        {
            self.core.propose(vec![Pending { command, answer }]).await;
            drop(permit);
            return answered.await.map_err(|_| StoreError::Closed)?;
        }
        self.core.queued.fetch_add(1, Ordering::AcqRel);
        self.queue
            .send(Pending { command, answer })
            .map_err(|_| StoreError::Closed)?;
        // The batcher answers within the agreement timeout; the margin covers queueing.
        tokio::time::timeout(self.core.timeout() * 2, answered)
            .await
            .map_err(|_| {
                unavailable(
                    "no majority acknowledged the write in time; it may or may not have happened",
                )
            })?
            .map_err(|_| StoreError::Closed)?
    }
}
