//! The raft state machine: committed commands applied to doppel's [`Engine`].

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use doppel_store::{Engine, Outcome, StoreError};
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    BasicNode, Entry, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, SnapshotMeta,
    StorageIOError, StoredMembership,
};
use serde::{Deserialize, Serialize};

use crate::{NodeId, Response, StorageError, TypeConfig, framed, io_error};

/// What the state machine records with every apply, in the same atomic batch as the change.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Meta {
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, BasicNode>,
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
        let meta = match engine.meta()? {
            Some(bytes) => postcard::from_bytes(&bytes)
                .map_err(|e| StoreError::Corrupt(format!("raft state-machine record: {e}")))?,
            None => Meta::default(),
        };
        Ok(StateMachine {
            shared: Arc::new(Shared {
                engine,
                meta: Mutex::new(meta),
                snapshot_path: dir.join("snapshot"),
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

    fn lock(&self) -> std::sync::MutexGuard<'_, Meta> {
        self.shared.meta.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn read_snapshot(&self) -> std::io::Result<Option<SnapshotFile>> {
        if !self.shared.snapshot_path.exists() {
            return Ok(None);
        }
        let (mut files, _, _) = framed::open::<SnapshotFile>(&self.shared.snapshot_path)?;
        Ok(files.pop())
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let (meta, pairs) = {
            let meta = self.lock();
            // The snapshot stands for every entry up to `last_applied`; once openraft purges those
            // entries from the log, this state must survive a crash, so make it durable now.
            self.shared.engine.checkpoint().map_err(sm_error)?;
            (meta.clone(), self.shared.engine.export().map_err(sm_error)?)
        };
        let data = postcard::to_stdvec(&pairs).map_err(sm_error)?;
        let snapshot_id = match meta.last_applied {
            Some(id) => format!("{}-{}-{}", id.leader_id, id.index, data.len()),
            None => format!("empty-{}", data.len()),
        };
        let snapshot_meta = SnapshotMeta {
            last_log_id: meta.last_applied,
            last_membership: meta.membership.clone(),
            snapshot_id,
        };
        let file = SnapshotFile {
            meta: snapshot_meta.clone(),
            data,
        };
        framed::rewrite(&self.shared.snapshot_path, std::slice::from_ref(&file))
            .map_err(sm_error)?;
        Ok(Snapshot {
            meta: snapshot_meta,
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

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError>
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
            let index = entry.log_id.index;
            let response = match entry.payload {
                EntryPayload::Blank => {
                    let bytes = postcard::to_stdvec(&next).map_err(sm_error)?;
                    self.shared
                        .engine
                        .advance(index, &bytes)
                        .map_err(sm_error)?;
                    Ok(Outcome::Done)
                }
                EntryPayload::Membership(membership) => {
                    next.membership = StoredMembership::new(Some(entry.log_id), membership);
                    let bytes = postcard::to_stdvec(&next).map_err(sm_error)?;
                    self.shared
                        .engine
                        .advance(index, &bytes)
                        .map_err(sm_error)?;
                    Ok(Outcome::Done)
                }
                EntryPayload::Normal(command) => {
                    system |= command.op.touches_system();
                    let bytes = postcard::to_stdvec(&next).map_err(sm_error)?;
                    self.shared
                        .engine
                        .apply_with_meta(index, &command, Some(&bytes))
                        .map_err(|e| StorageError::IO {
                            source: StorageIOError::apply(
                                entry.log_id,
                                openraft::AnyError::new(&e),
                            ),
                        })?
                }
            };
            *meta = next;
            responses.push(response);
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
        };
        self.shared.engine.import(pairs).map_err(sm_error)?;
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
        framed::rewrite(&self.shared.snapshot_path, std::slice::from_ref(&file))
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
