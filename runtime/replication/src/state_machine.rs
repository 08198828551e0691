//! The raft state machine: committed commands applied to doppel's [`Engine`].

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use doppel_store::{Engine, Outcome, StoreError, crash};
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    BasicNode, Entry, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, SnapshotMeta,
    StorageIOError, StoredMembership,
};
use serde::{Deserialize, Serialize};

use crate::framed;
use crate::types::{NodeId, Response, StorageError, TypeConfig, io_error};

/// What the state machine records with every apply, in the same atomic batch as the change.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Meta {
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, BasicNode>,
    /// The entry and how many of its commands were applied, when a crash fell in the middle of
    /// an entry. Builds before entries were applied as one atomic sled batch wrote it (each
    /// command was its own batch); it is still honoured when found in their data, so that a
    /// re-applied entry skips what was applied (an increment applied twice would count twice).
    /// Nothing writes it any more.
    partial: Option<(LogId<NodeId>, u32)>,
}

/// A snapshot as kept on disk: its metadata and the engine's exported state.
#[derive(Serialize, Deserialize)]
struct SnapshotFile {
    meta: SnapshotMeta<NodeId, BasicNode>,
    data: Vec<u8>,
}

struct Shared {
    engine: Engine,
    /// Held while applying and while exporting, so that a snapshot is one consistent state.
    meta: Mutex<Meta>,
    snapshot_path: PathBuf,
    /// Bumped whenever the host's own tables change (a deploy, a removal, a snapshot install), so
    /// that every host can bring its running services in line with the store.
    system_changes: tokio::sync::watch::Sender<u64>,
}

/// doppel's state machine over an [`Engine`] in `DIR/state`, with its latest snapshot in
/// `DIR/snapshot`.
#[derive(Clone)]
pub struct StateMachine {
    shared: Arc<Shared>,
}

fn sm_error(e: impl std::error::Error + 'static) -> StorageError {
    io_error(StorageIOError::write_state_machine, e)
}

impl StateMachine {
    /// Opens (or creates) the state machine in `dir`.
    pub fn open(dir: &Path) -> Result<StateMachine, StoreError> {
        std::fs::create_dir_all(dir)?;
        let engine = Engine::open(&dir.join("state"))?;
        let mut meta: Meta = match engine.meta()? {
            Some(bytes) => postcard::from_bytes(&bytes)
                .map_err(|e| StoreError::Corrupt(format!("raft state-machine record: {e}")))?,
            None => Meta::default(),
        };
        let snapshot_path = dir.join("snapshot");
        // Applies are not synced (openraft re-applies from the log), and a snapshot lets openraft
        // drop the log before it. So if the applied state on disk is older than the latest
        // snapshot (a crash lost applies the purged log no longer holds), the snapshot — synced
        // when it was written — is the state to start from.
        if snapshot_path.exists() {
            let mut files = framed::read::<SnapshotFile>(&snapshot_path)?;
            if let Some(file) = files.pop()
                && file.meta.last_log_id > meta.last_applied
            {
                tracing::warn!(
                    applied = ?meta.last_applied,
                    snapshot = ?file.meta.last_log_id,
                    "the applied state is older than the last snapshot; restoring the snapshot"
                );
                let pairs: doppel_store::Pairs = postcard::from_bytes(&file.data)
                    .map_err(|e| StoreError::Corrupt(format!("raft snapshot: {e}")))?;
                engine.import(pairs)?;
                meta = Meta {
                    last_applied: file.meta.last_log_id,
                    membership: file.meta.last_membership.clone(),
                    partial: None,
                };
                let bytes =
                    postcard::to_stdvec(&meta).map_err(|e| StoreError::Corrupt(e.to_string()))?;
                engine.advance(meta.last_applied.map_or(0, |id| id.index), &bytes)?;
                engine.checkpoint()?;
            }
        }
        Ok(StateMachine {
            shared: Arc::new(Shared {
                engine,
                meta: Mutex::new(meta),
                snapshot_path,
                system_changes: tokio::sync::watch::Sender::new(0),
            }),
        })
    }

    /// The applied state, for reads.
    pub fn engine(&self) -> &Engine {
        &self.shared.engine
    }

    /// Changes whenever a command to the host's own tables (services, modules, hosts) has been
    /// applied or a snapshot installed.
    pub fn system_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.shared.system_changes.subscribe()
    }

    fn note_system_change(&self) {
        self.shared.system_changes.send_modify(|n| *n += 1);
    }

    /// Every member (id, peer address) as of the last membership change applied here.
    pub fn members(&self) -> Vec<(NodeId, String)> {
        self.lock()
            .membership
            .nodes()
            .map(|(id, node)| (*id, node.addr.clone()))
            .collect()
    }

    /// The index of the last entry applied here (0 before any).
    pub fn applied_index(&self) -> u64 {
        self.lock().last_applied.map_or(0, |id| id.index)
    }

    /// The whole applied state and the index it stands at, taken as one consistent state (under
    /// the lock that applies hold, as a raft snapshot is).
    pub fn export_applied(&self) -> Result<(u64, doppel_store::Pairs), StoreError> {
        let meta = self.lock();
        let pairs = self.shared.engine.export()?;
        Ok((meta.last_applied.map_or(0, |id| id.index), pairs))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Meta> {
        self.shared.meta.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn read_snapshot(&self) -> std::io::Result<Option<SnapshotFile>> {
        if !self.shared.snapshot_path.exists() {
            return Ok(None);
        }
        let mut files = framed::read::<SnapshotFile>(&self.shared.snapshot_path)?;
        Ok(files.pop())
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let started = std::time::Instant::now();
        // One consistent state: taken under the lock that applies hold, which is quick (the
        // export reads sled's in-memory pages).
        let (meta, pairs) = {
            let meta = self.lock();
            (meta.clone(), self.shared.engine.export().map_err(sm_error)?)
        };
        let exported = started.elapsed();
        // Everything slow happens off the lock and off the async threads, so writes go on.
        // Once this returns, openraft may drop the log up to the snapshot, so the state it stands
        // for must survive a crash: the snapshot file itself is synced, and `open` restores it if
        // the applied state on disk is older. (Checkpointing sled here instead would stall every
        // write for the length of a flush, and sled 0.34's flush can deadlock with a concurrent
        // batch.)
        let shared = self.shared.clone();
        let file = tokio::task::spawn_blocking(move || -> std::io::Result<SnapshotFile> {
            let data = postcard::to_stdvec(&pairs).map_err(std::io::Error::other)?;
            let snapshot_id = match meta.last_applied {
                Some(id) => format!("{}-{}-{}", id.leader_id, id.index, data.len()),
                None => format!("empty-{}", data.len()),
            };
            let file = SnapshotFile {
                meta: SnapshotMeta {
                    last_log_id: meta.last_applied,
                    last_membership: meta.membership.clone(),
                    snapshot_id,
                },
                data,
            };
            framed::rewrite(
                &shared.snapshot_path,
                [Ok::<_, std::io::Error>(&file)],
                "snapshot-file",
            )?;
            Ok(file)
        })
        .await
        .map_err(sm_error)?
        .map_err(sm_error)?;
        // Built and synced, but openraft does not know yet (so has not purged the log).
        crash::point("snapshot", "built", || {});
        tracing::info!(
            up_to = file.meta.last_log_id.map_or(0, |id| id.index),
            bytes = file.data.len(),
            export_ms = exported.as_millis() as u64,
            total_ms = started.elapsed().as_millis() as u64,
            "built a snapshot (writes go on meanwhile)"
        );
        Ok(Snapshot {
            meta: file.meta,
            snapshot: Box::new(Cursor::new(file.data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = StateMachine;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, BasicNode>), StorageError> {
        let meta = self.lock();
        Ok((meta.last_applied, meta.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Vec<Response>>, StorageError>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut meta = self.lock();
        let mut responses = Vec::new();
        let mut system = false;
        for entry in entries {
            let mut next = meta.clone();
            next.last_applied = Some(entry.log_id);
            next.partial = None;
            let index = entry.log_id.index;
            match entry.payload {
                // Neither touches a service's state: only the meta moves on.
                payload @ (EntryPayload::Blank | EntryPayload::Membership(_)) => {
                    if let EntryPayload::Membership(membership) = payload {
                        next.membership = StoredMembership::new(Some(entry.log_id), membership);
                    }
                    let bytes = postcard::to_stdvec(&next).map_err(sm_error)?;
                    self.shared
                        .engine
                        .advance(index, &bytes)
                        .map_err(sm_error)?;
                    *meta = next;
                    responses.push(vec![Ok(Outcome::Done)]);
                }
                EntryPayload::Normal(commands) => {
                    let done = match meta.partial {
                        Some((id, n)) if id == entry.log_id => (n as usize).min(commands.len()),
                        _ => 0,
                    };
                    for command in &commands {
                        system |= command.op.touches_system();
                    }
                    let bytes = postcard::to_stdvec(&next).map_err(sm_error)?;
                    // Applied before a crash; nobody waits for their answers any more.
                    let mut outcomes = vec![Ok(Outcome::Done); done];
                    outcomes.extend(
                        self.shared
                            .engine
                            .apply_all(index, &commands[done..], Some(&bytes))
                            .map_err(|e| StorageError::IO {
                                source: StorageIOError::apply(
                                    entry.log_id,
                                    openraft::AnyError::new(&e),
                                ),
                            })?,
                    );
                    // Applied in sled; openraft does not know yet.
                    crash::point("apply", "applied", || {});
                    *meta = next;
                    responses.push(outcomes);
                }
            }
        }
        drop(meta);
        if system {
            self.note_system_change();
        }
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        snapshot_meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let pairs: doppel_store::Pairs = postcard::from_bytes(&data).map_err(sm_error)?;
        let mut meta = self.lock();
        let next = Meta {
            last_applied: snapshot_meta.last_log_id,
            membership: snapshot_meta.last_membership.clone(),
            partial: None,
        };
        self.shared.engine.import(pairs).map_err(sm_error)?;
        crash::point("install", "imported", || {});
        // The imported state carries the sender's meta; ours must be exactly the snapshot's.
        let bytes = postcard::to_stdvec(&next).map_err(sm_error)?;
        let index = next.last_applied.map_or(0, |id| id.index);
        self.shared
            .engine
            .advance(index, &bytes)
            .map_err(sm_error)?;
        self.shared.engine.checkpoint().map_err(sm_error)?;
        *meta = next;
        let file = SnapshotFile {
            meta: snapshot_meta.clone(),
            data,
        };
        framed::rewrite(
            &self.shared.snapshot_path,
            [Ok::<_, std::io::Error>(&file)],
            "snapshot-file",
        )
        .map_err(sm_error)?;
        drop(meta);
        tracing::info!(up_to = index, "installed a snapshot from the leader");
        self.note_system_change();
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let file = self
            .read_snapshot()
            .map_err(|e| io_error(StorageIOError::read_state_machine, e))?;
        Ok(file.map(|file| Snapshot {
            meta: file.meta,
            snapshot: Box::new(Cursor::new(file.data)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use doppel_store::{Command, Op, Outcome, Space};
    use openraft::storage::RaftStateMachine;
    use openraft::testing::log_id;
    use openraft::{Entry, EntryPayload};

    use super::{Meta, StateMachine};

    /// A crash after two of an entry's three commands were applied leaves the record "entry 1,
    /// two done"; openraft then applies the whole entry again, and only the third command runs.
    #[tokio::test]
    async fn an_entry_reapplied_after_a_crash_mid_batch_counts_once() {
        let dir = tempfile::tempdir().unwrap();
        let space = Space::bucket("svc", "default");
        let increment = Command::new(Op::Increment {
            space: space.clone(),
            key: b"n".to_vec(),
            delta: 1,
        });
        let id = log_id(1, 1, 1);
        {
            // What the first two steps of applying the entry leave on disk.
            let sm = StateMachine::open(dir.path()).unwrap();
            let partial = Meta {
                partial: Some((id, 2)),
                ..Meta::default()
            };
            let bytes = postcard::to_stdvec(&partial).unwrap();
            for _ in 0..2 {
                sm.engine()
                    .apply_with_meta(1, &increment, Some(&bytes))
                    .unwrap()
                    .unwrap();
            }
        }
        let mut sm = StateMachine::open(dir.path()).unwrap();
        let entry = Entry::<crate::types::TypeConfig> {
            log_id: id,
            payload: EntryPayload::Normal(vec![increment.clone(); 3]),
        };
        let answers = sm.apply([entry]).await.unwrap();
        assert_eq!(answers[0][2], Ok(Outcome::Counter(3)));
        assert_eq!(sm.engine().get(&space, b"n").unwrap(), Some(b"3".to_vec()));
        assert_eq!(sm.applied_state().await.unwrap().0, Some(id));
    }
}
