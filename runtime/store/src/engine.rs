//! The state machine: commands applied to a sled tree, and checkpoints that make sled durable.

use std::collections::BTreeMap;
use std::fs::File;
use std::ops::Bound;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::command::{ApplyError, Command, Op, Outcome};
use crate::space::{self, Space};
use crate::{StoreError, crash};

/// The applied state: commands applied in log order to one sled tree. Reads go straight to sled;
/// writes come only from whoever owns the log (the local committer thread, or a raft state
/// machine), after the log has made them durable.
pub struct Engine {
    db: sled::Db,
    /// Module bytes, apart from everything else. sled writes a page bigger than a quarter
    /// segment (128 KiB) as a new blob file each time the page changes; a component stored next
    /// to the hot keys (applied index, counters) made every write create and later delete a
    /// file. Module writes are idempotent (keys are digests), so they need not share the atomic
    /// batch of the applied index.
    modules: sled::Tree,
    modules_prefix: Vec<u8>,
    path: PathBuf,
}

/// Every key and value of a state, in key order: what a snapshot carries.
pub type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

/// Changes one command makes, keyed by sled key; `None` deletes. Reads within a command see
/// earlier changes of the same command (a `PutMany` may name a key twice).
type Changes = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

/// Entries whose changes (keys and values) exceed this many bytes go in one atomic sled batch
/// rather than key by key after a record of the whole entry: the record would write them twice.
/// A service's usual write (a counter, a small document) is far below it.
const REDO_LIMIT: usize = 64 * 1024;

/// One entry's effect on the main tree: every change as the final value it leaves, the log
/// owner's meta and the entry's index. Kept as the `REDO` record while the entry is written key
/// by key; also what the atomic batch of a larger entry holds.
#[derive(Serialize, Deserialize)]
struct Redo {
    index: u64,
    meta: Option<Vec<u8>>,
    changes: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

/// An entry planned by [`Engine::plan`].
struct Planned {
    outcomes: Vec<Result<Outcome, ApplyError>>,
    /// Changes to module bytes (kept in their own tree).
    modules: Option<sled::Batch>,
    /// Whether a command changes the host's own tables.
    system: bool,
    /// Changes to the main tree.
    entry: Redo,
}

impl Redo {
    /// Bytes of keys and values it changes.
    fn size(&self) -> usize {
        self.changes
            .iter()
            .map(|(k, v)| k.len() + v.as_ref().map_or(0, Vec::len))
            .sum()
    }

    /// The entry as one atomic sled batch.
    fn batch(&self) -> sled::Batch {
        let mut batch = sled::Batch::default();
        for (k, v) in &self.changes {
            match v {
                Some(v) => batch.insert(k.as_slice(), v.as_slice()),
                None => batch.remove(k.as_slice()),
            }
        }
        if let Some(meta) = &self.meta {
            batch.insert(space::META, meta.as_slice());
        }
        batch.insert(space::APPLIED, &self.index.to_be_bytes());
        batch
    }
}

/// sled's page cache. The working set of keys and records is far smaller; blob chunks are read
/// once per download and need not stay.
const CACHE_BYTES: u64 = 64 << 20;

impl Engine {
    /// Opens (or creates) the state in `path`.
    pub fn open(path: &Path) -> Result<Engine, StoreError> {
        let db = sled::Config::new()
            .path(path)
            .mode(sled::Mode::HighThroughput)
            // sled keeps what it wrote in its page cache up to this size (1 GiB by default): a
            // host storing documents would otherwise grow by every byte written until then.
            .cache_capacity(CACHE_BYTES)
            // sled's background flush is only an optimisation here: durability comes from the
            // write-ahead log, and sled is fsynced at checkpoints.
            .flush_every_ms(Some(1000))
            .open()?;
        let modules = db.open_tree("modules")?;
        let engine = Engine {
            db,
            modules,
            modules_prefix: space::space_prefix(&Space::modules()),
            path: path.to_path_buf(),
        };
        engine.finish_interrupted_entry()?;
        Ok(engine)
    }

    /// The tree that holds `key` (a full sled key).
    fn tree(&self, key: &[u8]) -> &sled::Tree {
        if key.starts_with(&self.modules_prefix) {
            &self.modules
        } else {
            &self.db
        }
    }

    /// The index of the last command whose effect sled holds.
    pub fn applied_index(&self) -> Result<u64, StoreError> {
        Ok(match self.db.get(space::APPLIED)? {
            Some(v) => u64::from_be_bytes(
                v.as_ref()
                    .try_into()
                    .map_err(|_| StoreError::Corrupt("applied index is not 8 bytes".into()))?,
            ),
            None => 0,
        })
    }

    /// The value of `key` in `space`.
    pub fn get(&self, space: &Space, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let k = space::data_key(space, key);
        Ok(self.tree(&k).get(&k)?.map(|v| v.to_vec()))
    }

    /// Up to `limit` keys of `space` after `after`.
    pub fn list_keys(
        &self,
        space: &Space,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        let prefix = space::space_prefix(space);
        let start = match after {
            Some(after) => Bound::Excluded(space::data_key(space, after)),
            None => Bound::Included(prefix.clone()),
        };
        let mut keys = Vec::new();
        for item in self
            .tree(&prefix)
            .range::<Vec<u8>, _>((start, Bound::Unbounded))
        {
            let (k, _) = item?;
            if !k.starts_with(&prefix) || keys.len() >= limit {
                break;
            }
            keys.push(k[prefix.len()..].to_vec());
        }
        Ok(keys)
    }

    /// The bucket names of `service`.
    pub fn buckets(&self, service: &str) -> Result<Vec<String>, StoreError> {
        let prefix = space::service_prefix(service);
        let mut names = Vec::new();
        let mut start = Bound::Included(prefix.clone());
        // Jump from bucket to bucket instead of reading every key.
        while let Some(item) = self
            .db
            .range::<Vec<u8>, _>((start, Bound::Unbounded))
            .next()
        {
            let (k, _) = item?;
            if !k.starts_with(&prefix) {
                break;
            }
            let Some((name, end)) = space::bucket_after(prefix.len(), &k) else {
                return Err(StoreError::Corrupt("malformed data key".into()));
            };
            names.push(name);
            match successor(&k[..end]) {
                Some(next) => start = Bound::Included(next),
                None => break,
            }
        }
        names.sort();
        Ok(names)
    }

    /// Bytes `service` stores.
    pub fn usage(&self, service: &str) -> Result<u64, StoreError> {
        read_u64(self.db.get(space::usage_key(service))?)
    }

    /// Applies command number `index`. The outer error is a storage failure; the inner one a
    /// deterministic refusal (which still consumes the index).
    pub fn apply(
        &self,
        index: u64,
        command: &Command,
    ) -> Result<Result<Outcome, ApplyError>, StoreError> {
        self.apply_with_meta(index, command, None)
    }

    /// Like [`Engine::apply`], and also stores `meta` (the log owner's own record, e.g. the raft
    /// log id and membership) in the same atomic batch.
    pub fn apply_with_meta(
        &self,
        index: u64,
        command: &Command,
        meta: Option<&[u8]>,
    ) -> Result<Result<Outcome, ApplyError>, StoreError> {
        let mut outcomes = self.apply_all(index, std::slice::from_ref(command), meta)?;
        Ok(outcomes.pop().expect("one outcome per command"))
    }

    /// Applies `commands` in order, all under index `index` (one raft entry), with `meta`, so
    /// that each command sees what the ones before it changed and a crash leaves all of them
    /// applied or none. Answers one outcome per command.
    ///
    /// How the entry lands in sled depends on what it changes:
    /// - **A service's own keys, small** (the common write): first one record of the whole entry
    ///   (`REDO`: every change as its final value, the meta, the index), then each change, the
    ///   meta and the index as plain inserts. sled recovers a prefix of its writes, so after a
    ///   crash either the record is whole and [`Engine::open`] finishes the entry from it, or
    ///   nothing of the entry is there and the log owner applies it again. An atomic sled batch
    ///   costs more: sled writes out its buffer twice for each one (`pwrite` and
    ///   `sync_file_range`, on its IO threads, every idle one woken each time). At one client
    ///   that was about a third of the CPU three hosts spent on a write (`replicated` bench).
    /// - **The host's own tables** (deploys, placements, epochs, fences) or **more than 64 KiB**
    ///   (`REDO_LIMIT`): one atomic sled batch. Readers never see such an
    ///   entry half applied (a placement without its epoch), and a large entry is not written
    ///   twice. A service's keys may be seen half applied by a concurrent reader for an instant;
    ///   each key is still read whole and in log order, which is what single-key reads promise.
    pub fn apply_all(
        &self,
        index: u64,
        commands: &[Command],
        meta: Option<&[u8]>,
    ) -> Result<Vec<Result<Outcome, ApplyError>>, StoreError> {
        let planned = self.plan(index, commands, meta)?;
        // Module bytes first: if a crash falls between the two, the entry is applied again,
        // and writing the same digest's bytes again changes nothing.
        if let Some(modules) = planned.modules {
            self.modules.apply_batch(modules)?;
        }
        if planned.system || planned.entry.size() > REDO_LIMIT {
            self.db.apply_batch(planned.entry.batch())?;
        } else {
            self.write_key_by_key(&planned.entry)?;
        }
        Ok(planned.outcomes)
    }

    /// What applying `commands` as entry `index` answers and changes, without writing it.
    fn plan(
        &self,
        index: u64,
        commands: &[Command],
        meta: Option<&[u8]>,
    ) -> Result<Planned, StoreError> {
        let mut state = Overlay {
            engine: self,
            pending: Changes::new(),
        };
        let mut outcomes = Vec::with_capacity(commands.len());
        for command in commands {
            outcomes.push(state.apply(command)?);
        }
        let mut modules = None;
        let mut changes = Vec::with_capacity(state.pending.len());
        for (k, v) in state.pending {
            if k.starts_with(&self.modules_prefix) {
                let batch = modules.get_or_insert_with(sled::Batch::default);
                match v {
                    Some(v) => batch.insert(k, v),
                    None => batch.remove(k),
                }
            } else {
                changes.push((k, v));
            }
        }
        Ok(Planned {
            outcomes,
            modules,
            system: commands.iter().any(|c| c.op.touches_system()),
            entry: Redo {
                index,
                meta: meta.map(<[u8]>::to_vec),
                changes,
            },
        })
    }

    /// Writes `entry` as its `REDO` record, then change by change (see [`Engine::apply_all`]).
    fn write_key_by_key(&self, entry: &Redo) -> Result<(), StoreError> {
        let record = postcard::to_stdvec(entry).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.db.insert(space::REDO, record)?;
        for (i, (k, v)) in entry.changes.iter().enumerate() {
            match v {
                Some(v) => self.db.insert(k, v.as_slice())?,
                None => self.db.remove(k)?,
            };
            if i == 0 {
                // The worst case for a crash here: sled happened to write out the entry so far.
                crash::point("apply", "partial", || {
                    let _ = self.db.flush();
                });
            }
        }
        if let Some(meta) = &entry.meta {
            self.db.insert(space::META, meta.as_slice())?;
        }
        self.db.insert(space::APPLIED, &entry.index.to_be_bytes())?;
        Ok(())
    }

    /// Finishes the entry a crash interrupted while it was written key by key: its `REDO`
    /// record is whole (sled recovers a prefix of its writes, and the record came first), and
    /// its changes are final values, so writing them again is harmless.
    fn finish_interrupted_entry(&self) -> Result<(), StoreError> {
        let Some(record) = self.db.get(space::REDO)? else {
            return Ok(());
        };
        let entry: Redo = postcard::from_bytes(&record)
            .map_err(|e| StoreError::Corrupt(format!("the last entry's redo record: {e}")))?;
        let applied = self.applied_index()?;
        if entry.index > applied {
            tracing::info!(
                entry = entry.index,
                applied,
                "finishing the entry a crash interrupted"
            );
            self.write_key_by_key(&entry)?;
        }
        Ok(())
    }

    /// Records that entry `index` carried no command (a raft blank or membership entry), with the
    /// log owner's `meta`, atomically.
    pub fn advance(&self, index: u64, meta: &[u8]) -> Result<(), StoreError> {
        let entry = Redo {
            index,
            meta: Some(meta.to_vec()),
            changes: Vec::new(),
        };
        self.db.apply_batch(entry.batch())?;
        Ok(())
    }

    /// The log owner's record stored with the last apply.
    pub fn meta(&self) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.db.get(space::META)?.map(|v| v.to_vec()))
    }

    /// Every key and value of the state (including the applied index and meta): a snapshot.
    pub fn export(&self) -> Result<Pairs, StoreError> {
        let mut pairs = Vec::new();
        for item in self.db.iter().chain(self.modules.iter()) {
            let (k, v) = item?;
            // Bookkeeping of this copy's writes, not state.
            if k == space::REDO {
                continue;
            }
            pairs.push((k.to_vec(), v.to_vec()));
        }
        Ok(pairs)
    }

    /// Replaces the whole state with `pairs` (from [`Engine::export`]) and makes it durable.
    pub fn import(&self, pairs: Pairs) -> Result<(), StoreError> {
        self.db.clear()?;
        self.modules.clear()?;
        let mut batch = sled::Batch::default();
        let mut modules = sled::Batch::default();
        for (k, v) in pairs {
            if k.starts_with(&self.modules_prefix) {
                modules.insert(k, v);
            } else {
                batch.insert(k, v);
            }
        }
        self.modules.apply_batch(modules)?;
        self.db.apply_batch(batch)?;
        self.checkpoint()
    }

    /// Makes everything applied so far durable: sled's own flush uses `sync_file_range` (no
    /// device cache flush, no metadata) and writes large values as blob files without any sync,
    /// so after flushing we fsync every file sled owns and the directories that name them.
    pub fn checkpoint(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        for name in ["db", "conf"] {
            let path = self.path.join(name);
            if path.exists() {
                File::open(&path)?.sync_all()?;
            }
        }
        let blobs = self.path.join("blobs");
        if blobs.is_dir() {
            for entry in std::fs::read_dir(&blobs)? {
                File::open(entry?.path())?.sync_all()?;
            }
            sync_dir(&blobs)?;
        }
        sync_dir(&self.path)?;
        Ok(())
    }
}

/// The state as the commands applied so far in one batch leave it: their changes over sled.
struct Overlay<'a> {
    engine: &'a Engine,
    /// Every change of the commands applied so far, keyed by sled key; `None` deletes.
    pending: Changes,
}

impl Overlay<'_> {
    fn get(&self, k: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        match self.pending.get(k) {
            Some(v) => Ok(v.clone()),
            None => Ok(self.engine.tree(k).get(k)?.map(|v| v.to_vec())),
        }
    }

    /// Applies one command to the overlay: its outcome, or its deterministic refusal (which
    /// changes nothing).
    fn apply(&mut self, command: &Command) -> Result<Result<Outcome, ApplyError>, StoreError> {
        let mut changes = Changes::new();
        let planned = match self.fenced(command)? {
            Some(refused) => Err(refused),
            None => self.plan(&command.op, &mut changes)?,
        };
        let outcome = match planned {
            Ok(outcome) => outcome,
            Err(refused) => return Ok(Err(refused)),
        };
        let service = command.op.service();
        let delta = self.size_delta(&changes)?;
        if !service.is_empty() && delta != 0 {
            let key = space::usage_key(service);
            let used = read_u64(self.get(&key)?)?;
            let would_use = used.saturating_add_signed(delta);
            if let Some(quota) = command.quota
                && delta > 0
                && would_use > quota
            {
                return Ok(Err(ApplyError::QuotaExceeded { would_use, quota }));
            }
            changes.insert(key, Some(would_use.to_be_bytes().to_vec()));
        }
        self.pending.extend(changes);
        Ok(Ok(outcome))
    }

    /// The epoch `service` is at (0 before its first placement).
    fn epoch(&self, service: &str) -> Result<u64, StoreError> {
        let raw = self.get(&space::data_key(&Space::epochs(), service.as_bytes()))?;
        Ok(raw
            .and_then(|v| std::str::from_utf8(&v).ok()?.parse().ok())
            .unwrap_or(0))
    }

    /// A refusal if `command`'s writer was deposed for its service after its request started.
    fn fenced(&self, command: &Command) -> Result<Option<ApplyError>, StoreError> {
        let (Some(writer), service) = (command.writer, command.op.service()) else {
            return Ok(None);
        };
        if service.is_empty() {
            return Ok(None);
        }
        let raw = self.get(&space::data_key(
            &Space::fences(),
            &space::fence_key(service, writer.host),
        ))?;
        let deposed_at: u64 = raw
            .and_then(|v| std::str::from_utf8(&v).ok()?.parse().ok())
            .unwrap_or(0);
        Ok((deposed_at > writer.epoch).then_some(ApplyError::Fenced {
            writer: writer.epoch,
            deposed_at,
        }))
    }

    /// Works out the changes an op makes, without writing.
    fn plan(
        &self,
        op: &Op,
        changes: &mut Changes,
    ) -> Result<Result<Outcome, ApplyError>, StoreError> {
        Ok(Ok(match op {
            Op::Put { space, key, value } => {
                changes.insert(space::data_key(space, key), Some(value.clone()));
                Outcome::Done
            }
            Op::Delete { space, key } => {
                changes.insert(space::data_key(space, key), None);
                Outcome::Done
            }
            Op::Increment { space, key, delta } => {
                let k = space::data_key(space, key);
                let current = match self.get(&k)? {
                    None => 0,
                    Some(v) => match std::str::from_utf8(&v)
                        .ok()
                        .and_then(|s| s.trim().parse::<i64>().ok())
                    {
                        Some(n) => n,
                        None => return Ok(Err(ApplyError::NotACounter)),
                    },
                };
                let Some(next) = current.checked_add(*delta) else {
                    return Ok(Err(ApplyError::Overflow));
                };
                changes.insert(k, Some(next.to_string().into_bytes()));
                Outcome::Counter(next)
            }
            Op::CompareAndSwap {
                space,
                key,
                expected,
                value,
            } => {
                let k = space::data_key(space, key);
                let current = self.get(&k)?;
                if current != *expected {
                    return Ok(Ok(Outcome::Conflict { current }));
                }
                changes.insert(k, Some(value.clone()));
                Outcome::Done
            }
            Op::PutMany { space, pairs } => {
                for (key, value) in pairs {
                    changes.insert(space::data_key(space, key), Some(value.clone()));
                }
                Outcome::Done
            }
            Op::DeleteMany { space, keys } => {
                for key in keys {
                    changes.insert(space::data_key(space, key), None);
                }
                Outcome::Done
            }
            Op::PurgeService { service } => {
                let prefix = space::service_prefix(service);
                for item in self.engine.db.scan_prefix(&prefix) {
                    let (k, _) = item?;
                    changes.insert(k.to_vec(), None);
                }
                // And what earlier commands of this batch wrote.
                for k in self.pending.keys().filter(|k| k.starts_with(&prefix)) {
                    changes.insert(k.clone(), None);
                }
                Outcome::Done
            }
            Op::Chain { space, entry } => {
                let head_key = space::data_key(space, crate::chain::HEAD);
                let head = crate::chain::Head::decode(self.get(&head_key)?.as_deref())?;
                let next = head.next(entry);
                changes.insert(
                    space::data_key(space, &crate::chain::entry_key(next.seq)),
                    Some(crate::chain::stored(&next.hash, entry)),
                );
                changes.insert(head_key, Some(next.encode()));
                Outcome::Counter(i64::try_from(next.seq).unwrap_or(i64::MAX))
            }
            Op::Place {
                service,
                epoch,
                placement,
                deposed,
            } => {
                let current = self.epoch(service)?;
                if *epoch != current + 1 {
                    return Ok(Err(ApplyError::StaleEpoch {
                        proposed: *epoch,
                        current,
                    }));
                }
                changes.insert(
                    space::data_key(&Space::epochs(), service.as_bytes()),
                    Some(epoch.to_string().into_bytes()),
                );
                changes.insert(
                    space::data_key(&Space::placements(), service.as_bytes()),
                    Some(placement.clone()),
                );
                changes.insert(
                    space::data_key(
                        &Space::placement_history(),
                        &space::history_key(service, *epoch),
                    ),
                    Some(placement.clone()),
                );
                for host in deposed {
                    changes.insert(
                        space::data_key(&Space::fences(), &space::fence_key(service, *host)),
                        Some(epoch.to_string().into_bytes()),
                    );
                }
                Outcome::Done
            }
        }))
    }

    /// How many bytes the owning service gains (or loses) if `changes` are written.
    fn size_delta(&self, changes: &Changes) -> Result<i64, StoreError> {
        let mut delta: i64 = 0;
        for (k, new) in changes {
            let old = self.get(k)?.map_or(0, |v| k.len() + v.len());
            let new = new.as_ref().map_or(0, |v| k.len() + v.len());
            delta += new as i64 - old as i64;
        }
        Ok(delta)
    }
}

/// fsync a directory, so that the files it names survive a power cut.
pub(crate) fn sync_dir(path: &Path) -> std::io::Result<()> {
    File::open(path)?.sync_all()
}

fn read_u64(v: Option<impl AsRef<[u8]>>) -> Result<u64, StoreError> {
    match v {
        None => Ok(0),
        Some(v) => Ok(u64::from_be_bytes(v.as_ref().try_into().map_err(|_| {
            StoreError::Corrupt("usage counter is not 8 bytes".into())
        })?)),
    }
}

/// The smallest key greater than every key starting with `prefix`.
fn successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut next = prefix.to_vec();
    while let Some(last) = next.pop() {
        if last < u8::MAX {
            next.push(last + 1);
            return Some(next);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket() -> Space {
        Space::bucket("svc", "default")
    }

    fn increment() -> Command {
        Command::new(Op::Increment {
            space: bucket(),
            key: b"n".to_vec(),
            delta: 1,
        })
    }

    #[test]
    fn commands_of_one_entry_see_each_other_and_land_together() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(dir.path()).unwrap();
        let put = Command::new(Op::Put {
            space: bucket(),
            key: b"k".to_vec(),
            value: b"v1".to_vec(),
        });
        let swap = Command::new(Op::CompareAndSwap {
            space: bucket(),
            key: b"k".to_vec(),
            expected: Some(b"v1".to_vec()),
            value: b"v2".to_vec(),
        });
        let not_a_counter = Command::new(Op::Increment {
            space: bucket(),
            key: b"k".to_vec(),
            delta: 1,
        });
        let outcomes = engine
            .apply_all(
                7,
                &[
                    increment(),
                    put,
                    increment(),
                    swap,
                    not_a_counter,
                    increment(),
                ],
                None,
            )
            .unwrap();
        assert_eq!(
            outcomes,
            [
                Ok(Outcome::Counter(1)),
                Ok(Outcome::Done),
                Ok(Outcome::Counter(2)),
                Ok(Outcome::Done),
                Err(ApplyError::NotACounter),
                Ok(Outcome::Counter(3)),
            ]
        );
        assert_eq!(engine.get(&bucket(), b"n").unwrap(), Some(b"3".to_vec()));
        assert_eq!(engine.get(&bucket(), b"k").unwrap(), Some(b"v2".to_vec()));
        assert_eq!(engine.applied_index().unwrap(), 7);
        // Usage counts what the whole entry left: "n" = "3" and "k" = "v2", with their keys.
        let used = engine.usage("svc").unwrap();
        assert!(used > 0);
        // A quota is checked against what the earlier commands of the entry already used.
        let big = |key: &[u8]| {
            Command::new(Op::Put {
                space: bucket(),
                key: key.to_vec(),
                value: vec![b'x'; 100],
            })
            .with_quota(used + 150)
        };
        let outcomes = engine.apply_all(8, &[big(b"a"), big(b"b")], None).unwrap();
        assert!(outcomes[0].is_ok());
        assert!(matches!(outcomes[1], Err(ApplyError::QuotaExceeded { .. })));
        assert_eq!(engine.get(&bucket(), b"b").unwrap(), None);
    }

    fn put(key: &[u8], value: &[u8]) -> Command {
        Command::new(Op::Put {
            space: bucket(),
            key: key.to_vec(),
            value: value.to_vec(),
        })
    }

    /// Entry 2 (an increment and a put) interrupted as a crash would leave it after `written`
    /// of its changes: its record written, then only those changes; sled flushed, then closed.
    fn interrupt_entry_2(dir: &Path, written: usize) {
        let engine = Engine::open(dir).unwrap();
        engine.apply_all(1, &[increment()], Some(b"one")).unwrap();
        let planned = engine
            .plan(2, &[increment(), put(b"k", b"v")], Some(b"two"))
            .unwrap();
        assert!(!planned.system && planned.entry.changes.len() >= 2);
        let record = postcard::to_stdvec(&planned.entry).unwrap();
        engine.db.insert(space::REDO, record).unwrap();
        for (k, v) in planned.entry.changes.iter().take(written) {
            engine.db.insert(k, v.clone().unwrap()).unwrap();
        }
        engine.db.flush().unwrap();
    }

    #[test]
    fn an_entry_a_crash_cut_in_half_is_finished_on_open_and_counts_once() {
        for written in [0, 1] {
            let dir = tempfile::tempdir().unwrap();
            interrupt_entry_2(dir.path(), written);
            let engine = Engine::open(dir.path()).unwrap();
            assert_eq!(
                engine.applied_index().unwrap(),
                2,
                "after {written} changes"
            );
            assert_eq!(engine.meta().unwrap().as_deref(), Some(&b"two"[..]));
            assert_eq!(engine.get(&bucket(), b"n").unwrap(), Some(b"2".to_vec()));
            assert_eq!(engine.get(&bucket(), b"k").unwrap(), Some(b"v".to_vec()));
            // Opening again changes nothing, and the next increment counts from 2.
            drop(engine);
            let engine = Engine::open(dir.path()).unwrap();
            let outcomes = engine.apply_all(3, &[increment()], None).unwrap();
            assert_eq!(outcomes, [Ok(Outcome::Counter(3))]);
        }
    }

    #[test]
    fn a_finished_entry_is_not_written_again_over_later_ones() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(dir.path()).unwrap();
        // Key by key (its record stays), then an atomic batch (a larger entry) over the same key.
        engine.apply_all(1, &[put(b"k", b"small")], None).unwrap();
        let big = vec![b'x'; REDO_LIMIT + 1];
        engine.apply_all(2, &[put(b"k", &big)], None).unwrap();
        engine.advance(3, b"blank").unwrap();
        drop(engine);
        let engine = Engine::open(dir.path()).unwrap();
        assert_eq!(engine.get(&bucket(), b"k").unwrap(), Some(big));
        assert_eq!(engine.applied_index().unwrap(), 3);
        assert_eq!(engine.meta().unwrap().as_deref(), Some(&b"blank"[..]));
        // The record is bookkeeping: a snapshot does not carry it.
        assert!(
            engine
                .export()
                .unwrap()
                .iter()
                .all(|(k, _)| k != space::REDO)
        );
    }
}
