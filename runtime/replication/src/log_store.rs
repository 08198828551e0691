//! The raft log: entries, vote and committed id, durable before openraft hears they are.
//!
//! openraft 0.9 hands every client write to the log as its own `append`, one after another. An
//! `fdatasync` per append would cap a host at one write per disk sync, so the log **group
//! commits**: `append` updates the in-memory log and queues the records for a committer thread,
//! which writes everything queued, syncs once, and only then fires each append's flush callback
//! (openraft's contract: the callback means "durable"). While one sync runs, the next appends
//! queue up behind it and share the next one.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::File;
use std::io::Write;
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{Entry, LogId, OptionalSend, RaftLogReader, StorageIOError, Vote};
use serde::{Deserialize, Serialize};

use crate::{NodeId, StorageError, TypeConfig, framed, io_error};

/// When the file has grown this much past what it must hold, it is rewritten after a purge.
const REWRITE_SLACK: u64 = 64 << 20;

/// Most records one group commit takes, so that callers see progress under a flood.
const MAX_GROUP: usize = 4096;

/// One change to the log, as written to disk. Replaying them in order rebuilds the log.
#[derive(Serialize, Deserialize)]
enum Record {
    Append(Vec<Entry<TypeConfig>>),
    Vote(Vote<NodeId>),
    Committed(Option<LogId<NodeId>>),
    /// Remove every entry from this index on (a follower dropping a conflicting suffix).
    Truncate(u64),
    /// Remove every entry up to and including this id (compacted into a snapshot).
    Purge(LogId<NodeId>),
}

/// Who waits for a write to be durable.
enum Done {
    /// openraft, for an append.
    Flushed(LogFlushed<TypeConfig>),
    /// A caller awaiting it (vote, truncate, purge).
    Waiter(tokio::sync::oneshot::Sender<std::io::Result<()>>),
    /// Nobody: the committed id, which may lag (openraft recovers it from the quorum).
    Nobody,
}

impl Done {
    fn finish(self, result: &std::io::Result<()>) {
        let copy = || match result {
            Ok(()) => Ok(()),
            Err(e) => Err(std::io::Error::new(e.kind(), e.to_string())),
        };
        match self {
            Done::Flushed(callback) => callback.log_io_completed(copy()),
            Done::Waiter(tx) => {
                let _ = tx.send(copy());
            }
            Done::Nobody => {}
        }
    }
}

/// Work for the committer thread, in the order the log changed.
enum Job {
    /// Frames to append, and who waits for them to be durable.
    Write(Vec<u8>, Done),
    /// Replace the file with exactly these frames (after a purge), once everything before is
    /// durable.
    Rewrite(Vec<u8>, Done),
}

/// The in-memory log, always ahead of (or equal to) the file: reads see an append at once, as
/// openraft expects; durability is what the callbacks report.
struct Inner {
    entries: BTreeMap<u64, Entry<TypeConfig>>,
    vote: Option<Vote<NodeId>>,
    committed: Option<LogId<NodeId>>,
    last_purged: Option<LogId<NodeId>>,
    jobs: mpsc::Sender<Job>,
    /// Joined when the last clone of the log is dropped, so that a clean close leaves every
    /// queued record (the committed id among them) on disk.
    committer: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Closing the queue ends the committer once it has written what was queued.
        let (closed, _) = mpsc::channel();
        drop(std::mem::replace(&mut self.jobs, closed));
        if let Some(committer) = self.committer.take() {
            let _ = committer.join();
        }
    }
}

impl Inner {
    fn replay(&mut self, record: &Record) {
        match record {
            Record::Append(entries) => {
                for e in entries {
                    self.entries.insert(e.log_id.index, e.clone());
                }
            }
            Record::Vote(v) => self.vote = Some(*v),
            Record::Committed(c) => self.committed = *c,
            Record::Truncate(since) => {
                self.entries.split_off(since);
            }
            Record::Purge(id) => {
                self.entries = self.entries.split_off(&(id.index + 1));
                self.last_purged = Some(*id);
            }
        }
    }

    /// Applies `record` here and queues it for the file. Holding the lock while queueing keeps
    /// the file in the same order as the in-memory log.
    fn write(&mut self, record: Record, done: Done) -> std::io::Result<()> {
        let mut buf = Vec::new();
        framed::encode(std::slice::from_ref(&record), &mut buf)?;
        self.replay(&record);
        self.jobs
            .send(Job::Write(buf, done))
            .map_err(|_| std::io::Error::other("the raft log's committer has stopped"))
    }

    /// What the file must hold to rebuild the log as it is now.
    fn state_records(&self) -> Vec<Record> {
        let mut records = Vec::new();
        if let Some(id) = self.last_purged {
            records.push(Record::Purge(id));
        }
        if let Some(v) = self.vote {
            records.push(Record::Vote(v));
        }
        records.push(Record::Committed(self.committed));
        records.push(Record::Append(self.entries.values().cloned().collect()));
        records
    }
}

/// The raft log of one host, in `DIR/raft-log`. Cheap to clone: clones share the log.
#[derive(Clone)]
pub struct LogStore {
    inner: Arc<Mutex<Inner>>,
    /// Bytes in the file, kept by the committer.
    size: Arc<AtomicU64>,
}

impl LogStore {
    /// Opens (or creates) the log in `dir`, and starts its committer thread (which ends when
    /// the last clone is dropped).
    pub fn open(dir: &Path) -> std::io::Result<LogStore> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("raft-log");
        let (records, file, size) = framed::open::<Record>(&path)?;
        let (jobs, queue) = mpsc::channel();
        let mut inner = Inner {
            entries: BTreeMap::new(),
            vote: None,
            committed: None,
            last_purged: None,
            jobs,
            committer: None,
        };
        for r in &records {
            inner.replay(r);
        }
        let size = Arc::new(AtomicU64::new(size));
        let committer = Committer {
            path,
            file,
            size: size.clone(),
            failed: None,
        };
        inner.committer = Some(
            std::thread::Builder::new()
                .name("raft-log".into())
                .spawn(move || committer.run(queue))?,
        );
        Ok(LogStore {
            inner: Arc::new(Mutex::new(inner)),
            size,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes `record` and waits until it is durable.
    async fn write_durably(&self, record: Record) -> std::io::Result<()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.lock().write(record, Done::Waiter(tx))?;
        rx.await
            .map_err(|_| std::io::Error::other("the raft log's committer has stopped"))?
    }
}

/// The thread that owns the file.
struct Committer {
    path: PathBuf,
    file: File,
    size: Arc<AtomicU64>,
    /// After a failed write the file's end is unknown: everything after fails too.
    failed: Option<String>,
}

impl Committer {
    fn run(mut self, queue: mpsc::Receiver<Job>) {
        while let Ok(first) = queue.recv() {
            let mut group = vec![first];
            while group.len() < MAX_GROUP {
                match queue.try_recv() {
                    Ok(job) => group.push(job),
                    Err(_) => break,
                }
            }
            let mut buf = Vec::new();
            let mut waiting = Vec::new();
            for job in group {
                match job {
                    Job::Write(frames, done) => {
                        buf.extend_from_slice(&frames);
                        waiting.push(done);
                    }
                    Job::Rewrite(frames, done) => {
                        self.flush(&mut buf, &mut waiting);
                        let result = self.rewrite(&frames);
                        done.finish(&result);
                    }
                }
            }
            self.flush(&mut buf, &mut waiting);
        }
    }

    /// Writes `buf`, syncs once, and tells everyone waiting.
    fn flush(&mut self, buf: &mut Vec<u8>, waiting: &mut Vec<Done>) {
        if waiting.is_empty() {
            return;
        }
        let result = match &self.failed {
            Some(why) => Err(std::io::Error::other(why.clone())),
            None => self
                .file
                .write_all(buf)
                .and_then(|()| self.file.sync_data()),
        };
        match &result {
            Ok(()) => {
                self.size.fetch_add(buf.len() as u64, Ordering::Relaxed);
            }
            Err(e) => {
                tracing::error!(error = %e, "the raft log cannot be written; this host stops acknowledging");
                self.failed = Some(format!("an earlier write to the raft log failed: {e}"));
            }
        }
        for done in waiting.drain(..) {
            done.finish(&result);
        }
        buf.clear();
    }

    fn rewrite(&mut self, frames: &[u8]) -> std::io::Result<()> {
        if let Some(why) = &self.failed {
            return Err(std::io::Error::other(why.clone()));
        }
        let (file, size) = framed::rewrite_frames(&self.path, frames)?;
        self.file = file;
        self.size.store(size, Ordering::Relaxed);
        Ok(())
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError> {
        Ok(self
            .lock()
            .entries
            .range(range)
            .map(|(_, e)| e.clone())
            .collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let inner = self.lock();
        let last = inner
            .entries
            .values()
            .next_back()
            .map(|e| e.log_id)
            .or(inner.last_purged);
        Ok(LogState {
            last_purged_log_id: inner.last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError> {
        self.write_durably(Record::Vote(*vote))
            .await
            .map_err(|e| io_error(StorageIOError::write_vote, e))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        Ok(self.lock().vote)
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<NodeId>>,
    ) -> Result<(), StorageError> {
        // Called after every commit; it rides along with the next sync instead of forcing one.
        self.lock()
            .write(Record::Committed(committed), Done::Nobody)
            .map_err(|e| io_error(StorageIOError::write, e))
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError> {
        Ok(self.lock().committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<_> = entries.into_iter().collect();
        // The callback fires on the committer thread once the group holding these is synced.
        self.lock()
            .write(Record::Append(entries), Done::Flushed(callback))
            .map_err(|e| io_error(StorageIOError::write_logs, e))
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError> {
        self.write_durably(Record::Truncate(log_id.index))
            .await
            .map_err(|e| io_error(StorageIOError::write_logs, e))
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError> {
        let rewrite = {
            let mut inner = self.lock();
            let (tx, rx) = tokio::sync::oneshot::channel();
            inner
                .write(Record::Purge(log_id), Done::Waiter(tx))
                .map_err(|e| io_error(StorageIOError::write_logs, e))?;
            // Keep the file from growing without bound: rewrite it with only what it must hold.
            let rewrite = if self.size.load(Ordering::Relaxed) > REWRITE_SLACK {
                let mut frames = Vec::new();
                framed::encode(&inner.state_records(), &mut frames)
                    .map_err(|e| io_error(StorageIOError::write_logs, e))?;
                let (tx, rx) = tokio::sync::oneshot::channel();
                inner
                    .jobs
                    .send(Job::Rewrite(frames, Done::Waiter(tx)))
                    .map_err(|_| {
                        io_error(
                            StorageIOError::write_logs,
                            std::io::Error::other("the raft log's committer has stopped"),
                        )
                    })?;
                Some(rx)
            } else {
                None
            };
            (rx, rewrite)
        };
        let stopped = || std::io::Error::other("the raft log's committer has stopped");
        for rx in std::iter::once(rewrite.0).chain(rewrite.1) {
            rx.await
                .map_err(|_| stopped())
                .and_then(|r| r)
                .map_err(|e| io_error(StorageIOError::write_logs, e))?;
        }
        Ok(())
    }
}
