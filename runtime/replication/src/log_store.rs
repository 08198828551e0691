//! The raft log: entries, vote and committed id, durable before openraft hears they are.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{Entry, EntryPayload, LogId, OptionalSend, RaftLogReader, StorageIOError, Vote};
use serde::{Deserialize, Serialize};

use crate::framed;
use crate::types::{Batch, LogReach, NodeId, StorageError, TypeConfig, io_error};

/// When the file has grown this much past what it must hold, it is rewritten after a purge.
/// `DOPPEL_LOG_REWRITE_BYTES` sets another size: the crash tests rewrite after every purge.
const REWRITE_SLACK: u64 = 64 << 20;

fn rewrite_slack() -> u64 {
    std::env::var("DOPPEL_LOG_REWRITE_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(REWRITE_SLACK)
}

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

struct Inner {
    path: PathBuf,
    file: framed::Appender,
    /// See [`REWRITE_SLACK`].
    rewrite_slack: u64,
    entries: BTreeMap<u64, Entry<TypeConfig>>,
    vote: Option<Vote<NodeId>>,
    committed: Option<LogId<NodeId>>,
    last_purged: Option<LogId<NodeId>>,
}

impl Inner {
    fn replay(&mut self, record: Record) {
        match record {
            Record::Append(entries) => {
                for e in entries {
                    self.entries.insert(e.log_id.index, e);
                }
            }
            Record::Vote(v) => self.vote = Some(v),
            Record::Committed(c) => self.committed = c,
            Record::Truncate(since) => {
                self.entries.split_off(&since);
            }
            Record::Purge(id) => {
                self.entries = self.entries.split_off(&(id.index + 1));
                self.last_purged = Some(id);
            }
        }
    }

    /// Appends `record` (synced before returning, unless `sync` is false) and applies it.
    fn write_with(&mut self, record: Record, sync: bool) -> std::io::Result<()> {
        let point = match record {
            Record::Append(_) => "log-append",
            Record::Vote(_) => "log-vote",
            Record::Committed(_) => "log-committed",
            Record::Truncate(_) => "log-truncate",
            Record::Purge(_) => "log-purge",
        };
        self.file
            .append(std::slice::from_ref(&record), sync, point)?;
        self.replay(record);
        Ok(())
    }

    fn write(&mut self, record: Record) -> std::io::Result<()> {
        self.write_with(record, true)
    }

    /// The id of the last entry, or of the last purged one when none is left.
    fn last_log_id(&self) -> Option<LogId<NodeId>> {
        self.entries
            .values()
            .next_back()
            .map(|e| e.log_id)
            .or(self.last_purged)
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
}

impl LogStore {
    /// Opens (or creates) the log in `dir`.
    pub fn open(dir: &Path) -> std::io::Result<LogStore> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("raft-log");
        let (records, file) = framed::open::<Record>(&path)?;
        let mut inner = Inner {
            path,
            file,
            rewrite_slack: rewrite_slack(),
            entries: BTreeMap::new(),
            vote: None,
            committed: None,
            last_purged: None,
        };
        for r in records {
            inner.replay(r);
        }
        Ok(LogStore {
            inner: Arc::new(Mutex::new(inner)),
        })
    }

    /// Rewrites the file with only what the log holds now, so that purged entries are gone from
    /// it (not only marked purged): after an erasure, the bytes of the entries before the
    /// snapshot must not stay on disk.
    pub fn rewrite_now(&self) -> std::io::Result<()> {
        let mut inner = self.lock();
        let records = inner.state_records();
        inner.file = framed::rewrite(&inner.path, &records, "log-rewrite")?;
        Ok(())
    }

    /// How far the log reaches: its last entry's term and index (or the last purged one's).
    pub fn reach(&self) -> LogReach {
        let last = self.lock().last_log_id();
        last.map_or_else(LogReach::default, |id| LogReach {
            term: id.leader_id.term,
            index: id.index,
        })
    }

    /// The index of the last entry this host knew to be committed (0 before any).
    pub fn committed_index(&self) -> u64 {
        self.lock().committed.map_or(0, |id| id.index)
    }

    /// The entries after index `after` up to and including `upto`, at most `max` of them, each
    /// as its index and commands (a blank or membership entry carries none), for shipping the log
    /// elsewhere. `None` when the log no longer holds the entry after `after` (purged into a
    /// snapshot).
    pub fn entries_after(&self, after: u64, upto: u64, max: usize) -> Option<Vec<(u64, Batch)>> {
        let inner = self.lock();
        if inner.last_purged.is_some_and(|p| p.index > after) {
            return None;
        }
        if after >= upto {
            return Some(Vec::new());
        }
        if !inner.entries.contains_key(&(after + 1)) {
            return None;
        }
        Some(
            inner
                .entries
                .range(after + 1..=upto)
                .take(max)
                .map(|(index, entry)| {
                    let commands = match &entry.payload {
                        EntryPayload::Normal(commands) => commands.clone(),
                        _ => Vec::new(),
                    };
                    (*index, commands)
                })
                .collect(),
        )
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
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

// The file writes below block the calling task for one fdatasync. openraft 0.9 awaits each
// append's flush before it goes on anyway, so a committer thread would not batch anything; batching
// happens one level up, where `ReplicatedStore` packs concurrent writes into one entry.
impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let inner = self.lock();
        Ok(LogState {
            last_purged_log_id: inner.last_purged,
            last_log_id: inner.last_log_id(),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError> {
        self.lock()
            .write(Record::Vote(*vote))
            .map_err(|e| io_error(StorageIOError::write_vote, e))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        Ok(self.lock().vote)
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<NodeId>>,
    ) -> Result<(), StorageError> {
        // Called after every commit. It need not be durable on its own (openraft learns the
        // committed index again from the quorum); the next synced append carries it to disk.
        self.lock()
            .write_with(Record::Committed(committed), false)
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
        let result = self.lock().write(Record::Append(entries));
        // Only now is it durable: the write above returned after fdatasync.
        match result {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                let kind = e.kind();
                let text = e.to_string();
                callback.log_io_completed(Err(std::io::Error::new(kind, text)));
                Err(io_error(StorageIOError::write_logs, e))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError> {
        self.lock()
            .write(Record::Truncate(log_id.index))
            .map_err(|e| io_error(StorageIOError::write_logs, e))
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError> {
        let mut inner = self.lock();
        inner
            .write(Record::Purge(log_id))
            .map_err(|e| io_error(StorageIOError::write_logs, e))?;
        // Keep the file from growing without bound: rewrite it with only what it must hold.
        if inner.file.len() > inner.rewrite_slack {
            let records = inner.state_records();
            inner.file = framed::rewrite(&inner.path, &records, "log-rewrite")
                .map_err(|e| io_error(StorageIOError::write_logs, e))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use openraft::testing::log_id;
    use openraft::{Entry, EntryPayload};

    use super::{LogStore, Record};

    fn entry(index: u64) -> Entry<crate::types::TypeConfig> {
        Entry {
            log_id: log_id(1, 1, index),
            payload: EntryPayload::Normal(Vec::new()),
        }
    }

    /// Shipping asks for what follows the last entry it shipped: nothing new is an empty answer,
    /// a purged start is `None`, never a panic.
    #[test]
    fn entries_after_answers_nothing_new_and_purged_starts() {
        let dir = tempfile::tempdir().unwrap();
        let log = LogStore::open(dir.path()).unwrap();
        log.lock()
            .write(Record::Append((1..=5).map(entry).collect()))
            .unwrap();
        let got = log.entries_after(2, 5, 10).unwrap();
        assert_eq!(got.iter().map(|(i, _)| *i).collect::<Vec<_>>(), [3, 4, 5]);
        assert_eq!(log.entries_after(5, 5, 10).unwrap().len(), 0);
        assert_eq!(log.entries_after(7, 5, 10).unwrap().len(), 0);
        assert_eq!(log.entries_after(0, 5, 2).unwrap().len(), 2);
        log.lock().write(Record::Purge(log_id(1, 1, 3))).unwrap();
        assert!(log.entries_after(2, 5, 10).is_none());
        assert_eq!(log.entries_after(3, 5, 10).unwrap().len(), 2);
    }
}
