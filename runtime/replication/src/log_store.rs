//! The raft log: entries, vote and committed id, durable before openraft hears they are.
//!
//! Small entries are kept in memory as well as in the file; an entry whose record is over
//! [`SPILL`] bytes (blob chunks, module parts: up to 256 KiB each) is kept only in the file and
//! read back when raft or shipping asks for it, so that the host's memory does not grow with the
//! bytes written since the last snapshot.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{Entry, EntryPayload, LogId, OptionalSend, RaftLogReader, StorageIOError, Vote};
use serde::{Deserialize, Serialize};

use crate::framed::{self, Place};
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

/// Entries whose record is larger than this are not kept in memory.
const SPILL: u32 = 16 << 10;

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
    log: Replayed,
}

/// The log as the records replayed so far make it.
#[derive(Default)]
struct Replayed {
    entries: BTreeMap<u64, Slot>,
    vote: Option<Vote<NodeId>>,
    committed: Option<LogId<NodeId>>,
    last_purged: Option<LogId<NodeId>>,
}

/// An entry of the log: in memory, or only where the file holds it.
enum Slot {
    Held(Entry<TypeConfig>),
    /// The entry is the `nth` of the `Append` record at `place`.
    OnDisk {
        log_id: LogId<NodeId>,
        place: Place,
        nth: usize,
    },
}

impl Slot {
    fn log_id(&self) -> LogId<NodeId> {
        match self {
            Slot::Held(e) => e.log_id,
            Slot::OnDisk { log_id, .. } => *log_id,
        }
    }
}

impl Replayed {
    /// Applies `record`, which the file holds at `place` (if it was just read or written there).
    fn replay(&mut self, record: Record, place: Option<Place>) {
        match record {
            Record::Append(entries) => {
                let spill = place.filter(|p| p.len > SPILL);
                for (nth, e) in entries.into_iter().enumerate() {
                    let slot = match spill {
                        Some(place) => Slot::OnDisk {
                            log_id: e.log_id,
                            place,
                            nth,
                        },
                        None => Slot::Held(e),
                    };
                    self.entries.insert(slot.log_id().index, slot);
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

    /// The id of the last entry, or of the last purged one when none is left.
    fn last_log_id(&self) -> Option<LogId<NodeId>> {
        self.entries
            .values()
            .next_back()
            .map(Slot::log_id)
            .or(self.last_purged)
    }
}

impl Inner {
    /// Appends `record` (synced before returning, unless `sync` is false) and applies it.
    fn write_with(&mut self, record: Record, sync: bool) -> std::io::Result<()> {
        let point = match record {
            Record::Append(_) => "log-append",
            Record::Vote(_) => "log-vote",
            Record::Committed(_) => "log-committed",
            Record::Truncate(_) => "log-truncate",
            Record::Purge(_) => "log-purge",
        };
        let places = self
            .file
            .append(std::slice::from_ref(&record), sync, point)?;
        self.log.replay(record, places.first().copied());
        Ok(())
    }

    /// Appends `entries`, each as a record of its own (so that a large one can be read back
    /// alone), with one sync, and applies them.
    fn append_entries(&mut self, entries: Vec<Entry<TypeConfig>>) -> std::io::Result<()> {
        let records: Vec<Record> = entries
            .into_iter()
            .map(|e| Record::Append(vec![e]))
            .collect();
        let places = self.file.append(&records, true, "log-append")?;
        for (record, place) in records.into_iter().zip(places) {
            self.log.replay(record, Some(place));
        }
        Ok(())
    }

    /// The entry in `slot`, read back from the file if it is not in memory.
    fn read(&self, slot: &Slot) -> std::io::Result<Entry<TypeConfig>> {
        match slot {
            Slot::Held(e) => Ok(e.clone()),
            Slot::OnDisk { place, nth, log_id } => match self.file.read_at::<Record>(*place)? {
                Record::Append(mut entries) if *nth < entries.len() => {
                    let entry = entries.swap_remove(*nth);
                    if entry.log_id == *log_id {
                        Ok(entry)
                    } else {
                        Err(not_there(*log_id))
                    }
                }
                _ => Err(not_there(*log_id)),
            },
        }
    }

    /// Rewrites the file with only what the log holds now, one entry at a time, and notes where
    /// each entry is in the new file.
    fn rewrite(&mut self) -> std::io::Result<()> {
        let mut header = Vec::new();
        if let Some(id) = self.log.last_purged {
            header.push(Record::Purge(id));
        }
        if let Some(v) = self.log.vote {
            header.push(Record::Vote(v));
        }
        header.push(Record::Committed(self.log.committed));
        let skip = header.len();
        let indexes: Vec<u64> = self.log.entries.keys().copied().collect();
        let entries = indexes.iter().map(|i| {
            let slot = self.log.entries.get(i).ok_or_else(|| not_in_log(*i))?;
            Ok(Record::Append(vec![self.read(slot)?]))
        });
        let (file, places) = framed::rewrite(
            &self.path,
            header.into_iter().map(Ok).chain(entries),
            "log-rewrite",
        )?;
        self.file = file;
        for (index, place) in indexes.iter().zip(&places[skip..]) {
            if let Some(Slot::OnDisk { place: p, nth, .. }) = self.log.entries.get_mut(index) {
                *p = *place;
                *nth = 0;
            }
        }
        Ok(())
    }

    fn write(&mut self, record: Record) -> std::io::Result<()> {
        self.write_with(record, true)
    }
}

fn not_there(id: LogId<NodeId>) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!("the raft log file does not hold entry {id} where it was written"),
    )
}

fn not_in_log(index: u64) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::NotFound,
        format!("entry {index} left the log while it was rewritten"),
    )
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
        let mut replayed = Replayed::default();
        let file = framed::open::<Record>(&path, |r, place| replayed.replay(r, Some(place)))?;
        let inner = Inner {
            path,
            file,
            rewrite_slack: rewrite_slack(),
            log: replayed,
        };
        Ok(LogStore {
            inner: Arc::new(Mutex::new(inner)),
        })
    }

    /// Rewrites the file with only what the log holds now, so that purged entries are gone from
    /// it (not only marked purged): after an erasure, the bytes of the entries before the
    /// snapshot must not stay on disk.
    pub fn rewrite_now(&self) -> std::io::Result<()> {
        self.lock().rewrite()
    }

    /// How far the log reaches: its last entry's term and index (or the last purged one's).
    pub fn reach(&self) -> LogReach {
        let last = self.lock().log.last_log_id();
        last.map_or_else(LogReach::default, |id| LogReach {
            term: id.leader_id.term,
            index: id.index,
        })
    }

    /// The index of the last entry this host knew to be committed (0 before any).
    pub fn committed_index(&self) -> u64 {
        self.lock().log.committed.map_or(0, |id| id.index)
    }

    /// The entries after index `after` up to and including `upto`, at most `max` of them, each
    /// as its index and commands (a blank or membership entry carries none), for shipping the log
    /// elsewhere. `None` when the log no longer holds the entry after `after` (purged into a
    /// snapshot).
    pub fn entries_after(&self, after: u64, upto: u64, max: usize) -> Option<Vec<(u64, Batch)>> {
        let inner = self.lock();
        if inner.log.last_purged.is_some_and(|p| p.index > after) {
            return None;
        }
        if after >= upto {
            return Some(Vec::new());
        }
        if !inner.log.entries.contains_key(&(after + 1)) {
            return None;
        }
        let mut out = Vec::new();
        for (index, slot) in inner.log.entries.range(after + 1..=upto).take(max) {
            let entry = match inner.read(slot) {
                Ok(entry) => entry,
                Err(e) => {
                    tracing::error!("cannot read the raft log for shipping: {e}");
                    return None;
                }
            };
            let commands = match entry.payload {
                EntryPayload::Normal(commands) => commands,
                _ => Vec::new(),
            };
            out.push((*index, commands));
        }
        Some(out)
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
        let inner = self.lock();
        inner
            .log
            .entries
            .range(range)
            .map(|(_, slot)| inner.read(slot))
            .collect::<std::io::Result<_>>()
            .map_err(|e| io_error(StorageIOError::read_logs, e))
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
            last_purged_log_id: inner.log.last_purged,
            last_log_id: inner.log.last_log_id(),
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
        Ok(self.lock().log.vote)
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
        Ok(self.lock().log.committed)
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
        let result = self.lock().append_entries(entries);
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
            inner
                .rewrite()
                .map_err(|e| io_error(StorageIOError::write_logs, e))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use openraft::testing::log_id;
    use openraft::{Entry, EntryPayload};

    use doppel_store::{Command, Op, Space};
    use openraft::RaftLogReader as _;

    use super::{LogStore, Record, Slot};

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

    fn big_entry(index: u64, fill: u8) -> Entry<crate::types::TypeConfig> {
        let op = Op::Put {
            space: Space::bucket("s", "b"),
            key: b"k".to_vec(),
            value: vec![fill; 100 << 10],
        };
        Entry {
            log_id: log_id(1, 1, index),
            payload: EntryPayload::Normal(vec![Command::new(op)]),
        }
    }

    fn value_of(entry: &Entry<crate::types::TypeConfig>) -> Option<u8> {
        match &entry.payload {
            EntryPayload::Normal(batch) => match &batch[0].op {
                Op::Put { value, .. } => value.first().copied(),
                _ => None,
            },
            _ => None,
        }
    }

    /// A large entry is not kept in memory: it is read back from the file whenever it is asked
    /// for, after appends, a rewrite and a reopening alike; small ones stay in memory.
    #[tokio::test]
    async fn large_entries_live_in_the_file_only_and_read_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = LogStore::open(dir.path()).unwrap();
        log.lock()
            .append_entries(vec![entry(1), big_entry(2, 7), big_entry(3, 9), entry(4)])
            .unwrap();
        let on_disk = |log: &LogStore| {
            log.lock()
                .log
                .entries
                .values()
                .map(|s| matches!(s, Slot::OnDisk { .. }))
                .collect::<Vec<_>>()
        };
        assert_eq!(on_disk(&log), [false, true, true, false]);
        let read = log.try_get_log_entries(1..=4).await.unwrap();
        assert_eq!(
            read.iter().map(|e| e.log_id.index).collect::<Vec<_>>(),
            [1, 2, 3, 4]
        );
        assert_eq!(value_of(&read[1]), Some(7));
        assert_eq!(value_of(&read[2]), Some(9));

        log.lock().write(Record::Purge(log_id(1, 1, 2))).unwrap();
        log.rewrite_now().unwrap();
        let read = log.try_get_log_entries(3..=4).await.unwrap();
        assert_eq!(value_of(&read[0]), Some(9));
        drop(log);

        let mut log = LogStore::open(dir.path()).unwrap();
        assert_eq!(on_disk(&log), [true, false]);
        let read = log.try_get_log_entries(..).await.unwrap();
        assert_eq!(
            read.iter().map(|e| e.log_id.index).collect::<Vec<_>>(),
            [3, 4]
        );
        assert_eq!(value_of(&read[0]), Some(9));
        let shipped = log.entries_after(2, 4, 10).unwrap();
        assert_eq!(shipped.len(), 2);
    }
}
