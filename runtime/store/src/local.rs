//! [`LocalStore`]: the single-host store, with one committer thread doing group commit.

use std::path::Path;
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;

use async_trait::async_trait;
use tokio::sync::oneshot;

use crate::command::{Command, Outcome};
use crate::engine::Engine;
use crate::wal::{EntryRef, Wal};
use crate::{Space, Store, StoreError};

/// How many bytes of log a segment may hold before sled is checkpointed and the log cut.
const SEGMENT_LIMIT: u64 = 64 << 20;
/// The most commands one group commit takes, and roughly the most bytes.
const GROUP_COMMANDS: usize = 4096;
const GROUP_BYTES: usize = 32 << 20;

type Reply = oneshot::Sender<Result<Outcome, StoreError>>;

struct Pending {
    command: Command,
    reply: Reply,
}

/// A durable key-value store on one host's disk.
///
/// Writes are queued to a committer thread which takes every write waiting, appends them to the
/// write-ahead log with one `fdatasync`, applies them to sled in order and only then answers each
/// caller. Under load many writes share one sync (group commit); a lone write pays one.
pub struct LocalStore {
    engine: Arc<Engine>,
    /// `None` once closed. Dropping the sender is how the committer learns to stop.
    sender: RwLock<Option<SyncSender<Pending>>>,
    committer: Mutex<Option<JoinHandle<()>>>,
}

impl LocalStore {
    /// Opens (or creates) a store in `dir`, replaying any logged writes sled does not yet hold.
    pub fn open(dir: impl AsRef<Path>) -> Result<LocalStore, StoreError> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir)?;
        let engine = Arc::new(Engine::open(&dir.join("state"))?);
        let applied = engine.applied_index()?;
        let (mut wal, replay) = Wal::open(&dir.join("wal"), applied)?;
        let mut next = applied + 1;
        if !replay.is_empty() {
            tracing::info!(entries = replay.len(), "replaying the write-ahead log");
            for entry in &replay {
                // A refusal was a refusal the first time too; only storage errors matter here.
                let _ = engine.apply(entry.index, &entry.command)?;
                next = entry.index + 1;
            }
            engine.checkpoint()?;
            wal.rotate(next)?;
        }
        let (sender, receiver) = mpsc::sync_channel(GROUP_COMMANDS);
        let committer = {
            let engine = engine.clone();
            std::thread::Builder::new()
                .name("doppel-committer".into())
                .spawn(move || commit_loop(engine, wal, next, receiver))?
        };
        Ok(LocalStore {
            engine,
            sender: RwLock::new(Some(sender)),
            committer: Mutex::new(Some(committer)),
        })
    }

    /// Stops taking writes, waits for the committer to finish the ones it has, checkpoints sled.
    /// Blocking; later writes get [`StoreError::Closed`].
    pub fn close_blocking(&self) {
        self.sender
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let handle = self
            .committer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(handle) = handle {
            let _ = handle.join();
        }
    }
}

impl Drop for LocalStore {
    fn drop(&mut self) {
        self.close_blocking();
    }
}

fn commit_loop(engine: Arc<Engine>, mut wal: Wal, mut next: u64, receiver: Receiver<Pending>) {
    // After a storage failure nothing more may be acknowledged: we no longer know what is on disk.
    let mut failed: Option<String> = None;
    while let Ok(first) = receiver.recv() {
        let mut group = vec![first];
        let mut bytes = 0;
        while group.len() < GROUP_COMMANDS && bytes < GROUP_BYTES {
            match receiver.try_recv() {
                Ok(p) => {
                    bytes += approx_size(&p.command);
                    group.push(p);
                }
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }
        if let Some(why) = &failed {
            for p in group {
                let _ = p.reply.send(Err(io_error(why)));
            }
            continue;
        }
        let entries: Vec<EntryRef<'_>> = group
            .iter()
            .enumerate()
            .map(|(i, p)| EntryRef {
                index: next + i as u64,
                command: &p.command,
            })
            .collect();
        if let Err(e) = wal.append(&entries) {
            tracing::error!(error = %e, "write-ahead log append failed; refusing all further writes");
            failed = Some(e.to_string());
            for p in group {
                let _ = p.reply.send(Err(io_error(&e.to_string())));
            }
            continue;
        }
        drop(entries);
        for p in group {
            let result = match engine.apply(next, &p.command) {
                Ok(Ok(outcome)) => Ok(outcome),
                Ok(Err(refused)) => Err(StoreError::Rejected(refused)),
                Err(e) => {
                    tracing::error!(error = %e, "applying a logged write failed; refusing all further writes");
                    failed = Some(e.to_string());
                    Err(e)
                }
            };
            next += 1;
            let _ = p.reply.send(result);
        }
        if failed.is_none()
            && wal.size() > SEGMENT_LIMIT
            && let Err(e) = engine.checkpoint().and_then(|()| wal.rotate(next))
        {
            tracing::error!(error = %e, "checkpoint failed; refusing all further writes");
            failed = Some(e.to_string());
        }
    }
    // Closed: make sled durable so the next start has nothing to replay.
    if failed.is_none()
        && let Err(e) = engine.checkpoint().and_then(|()| wal.rotate(next))
    {
        tracing::error!(error = %e, "final checkpoint failed; the next start replays the log");
    }
}

fn io_error(why: &str) -> StoreError {
    StoreError::Io(std::io::Error::other(format!(
        "the store stopped after a failure: {why}"
    )))
}

fn approx_size(command: &Command) -> usize {
    use crate::Op;
    match &command.op {
        Op::Put { key, value, .. } | Op::CompareAndSwap { key, value, .. } => {
            key.len() + value.len()
        }
        Op::PutMany { pairs, .. } => pairs.iter().map(|(k, v)| k.len() + v.len()).sum(),
        _ => 64,
    }
}

#[async_trait]
impl Store for LocalStore {
    async fn get(&self, space: &Space, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.engine.get(space, key)
    }

    async fn list_keys(
        &self,
        space: &Space,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        self.engine.list_keys(space, after, limit)
    }

    async fn buckets(&self, service: &str) -> Result<Vec<String>, StoreError> {
        self.engine.buckets(service)
    }

    async fn usage(&self, service: &str) -> Result<u64, StoreError> {
        self.engine.usage(service)
    }

    async fn apply(&self, command: Command) -> Result<Outcome, StoreError> {
        let (reply, answer) = oneshot::channel();
        let sender = self
            .sender
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or(StoreError::Closed)?;
        // The channel is bounded, so a flood of writers waits here instead of growing a queue.
        let pending = Pending { command, reply };
        match sender.try_send(pending) {
            Ok(()) => {}
            Err(mpsc::TrySendError::Full(pending)) => {
                tokio::task::spawn_blocking(move || sender.send(pending).is_ok())
                    .await
                    .ok()
                    .filter(|sent| *sent)
                    .ok_or(StoreError::Closed)?;
            }
            Err(mpsc::TrySendError::Disconnected(_)) => return Err(StoreError::Closed),
        }
        answer.await.map_err(|_| StoreError::Closed)?
    }
}
