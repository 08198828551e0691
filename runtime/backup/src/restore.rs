//! Restoring: a target's chain checked, its objects checked against their manifests and
//! decrypted with the operator's identity, and the state rebuilt at the point asked for into
//! `DATA/restore/state`; the next `doppel host --data DATA` starts a new one-host cluster and
//! takes the services' state over from there ([`pending`], [`seed`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use doppel_store::chain::entry_key;
use doppel_store::{Command, Engine, Op, Space, Store, portable};
use serde::{Deserialize, Serialize};

use crate::format::{Image, Kind, Manifest, Segment, manifest_name, sha256_hex, unseal};
use crate::keys::Identity;
use crate::location::Location;
use crate::{BackupError, chain, rfc3339};

/// Where in the backup's history to restore to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Point {
    /// Everything the backup holds.
    Latest,
    /// Up to and including this raft index.
    Index(u64),
    /// Every entry shipped at or before this time (ms since the Unix epoch).
    Time(u64),
    /// Just before the admin action recorded as this audit entry started.
    BeforeEvent(u64),
}

/// What a restore rebuilt (also kept as `DATA/restore/restored.json`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Restored {
    /// Where from.
    pub url: String,
    /// The raft index of the old cluster the state stands at.
    pub index: u64,
    /// When the last entry restored was shipped (ms since the Unix epoch).
    pub last_write_ms: u64,
    /// The services whose records it holds.
    pub services: Vec<String>,
    /// How many service-state keys (records, modules, bucket keys) it holds.
    pub keys: u64,
    /// The state hash `doppel status --hash` answers for the same state.
    pub hash: String,
    /// How many objects were read, and their bytes.
    pub objects: u64,
    /// See `objects`.
    pub object_bytes: u64,
    /// The key that signed the chain (hex).
    pub signer: String,
}

/// The directory a restore leaves for the host.
pub fn restore_dir(data: &Path) -> PathBuf {
    data.join("restore")
}

fn record_path(data: &Path) -> PathBuf {
    restore_dir(data).join("restored.json")
}

/// What a restore is doing, for a progress bar.
pub trait Progress: Send {
    /// `done` of `total` objects read and applied.
    fn objects(&mut self, done: u64, total: u64);
    /// A phase starts (`reading the manifests`, `finding audit entry 12`…).
    fn phase(&mut self, what: &str);
}

/// Progress nobody watches.
pub struct Quiet;

impl Progress for Quiet {
    fn objects(&mut self, _: u64, _: u64) {}
    fn phase(&mut self, _: &str) {}
}

/// Rebuilds the state of the backup at `location` at `point` into the new data directory `data`
/// (which must not hold a host already).
pub async fn restore(
    location: &Location,
    identity: &Identity,
    data: &Path,
    point: Point,
    progress: &mut dyn Progress,
) -> Result<Restored, BackupError> {
    if ["raft", "tls", "cluster.json", "host.json"]
        .iter()
        .any(|f| data.join(f).exists())
    {
        return Err(BackupError::BadLocation(format!(
            "{} holds a host already; restore builds a new data directory",
            data.display()
        )));
    }
    if restore_dir(data).exists() {
        return Err(BackupError::BadLocation(format!(
            "{} holds a restore already ({}); remove it to restore again",
            data.display(),
            restore_dir(data).display()
        )));
    }
    progress.phase("reading and checking the manifests");
    let chain = chain::read(location, None).await?;
    let point = match point {
        Point::BeforeEvent(seq) => {
            progress.phase(&format!("finding audit entry {seq}"));
            let scan = data.join("restore-scan");
            let _ = std::fs::remove_dir_all(&scan);
            let found = event_index(location, identity, &chain, &scan, seq, progress).await;
            let _ = std::fs::remove_dir_all(&scan);
            Point::Index(found?)
        }
        other => other,
    };
    let dir = restore_dir(data);
    let work = data.join("restore-partial");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    progress.phase("restoring");
    let replayed = replay(
        location,
        identity,
        &chain,
        &work.join("state"),
        point,
        progress,
    )
    .await?;
    // Objects the replay did not need (before its snapshot, after its point) are checked too: a
    // backup missing or altering any of them is not whole, and the next restore may need them.
    progress.phase("checking the other objects");
    for manifest in &chain {
        if !replayed.read.contains(&manifest.body.seq) {
            check_object(location, manifest).await?;
        }
    }
    let (hash, keys) = portable::state_hash(&replayed.engine.export()?);
    let services = replayed
        .engine
        .list_keys(&Space::system("services"), None, usize::MAX)?
        .into_iter()
        .map(|k| String::from_utf8_lossy(&k).into_owned())
        .collect();
    replayed.engine.checkpoint()?;
    drop(replayed.engine);
    let restored = Restored {
        url: location.url().to_string(),
        index: replayed.index,
        last_write_ms: replayed.last_ms,
        services,
        keys,
        hash: hex::encode(hash),
        objects: replayed.objects,
        object_bytes: replayed.object_bytes,
        signer: chain[0].body.signer.clone(),
    };
    std::fs::write(
        work.join("restored.json"),
        serde_json::to_vec_pretty(&restored).expect("always encodes"),
    )?;
    // Whole or not at all: the host only ever sees a finished restore.
    std::fs::rename(&work, &dir)?;
    Ok(restored)
}

struct Replayed {
    engine: Engine,
    /// The manifests whose objects were read (and so checked).
    read: Vec<u64>,
    index: u64,
    last_ms: u64,
    objects: u64,
    object_bytes: u64,
}

/// Reads object `manifest.object`, checks it against the manifest and decrypts it.
pub(crate) async fn fetch<T: serde::de::DeserializeOwned>(
    location: &Location,
    identity: &Identity,
    manifest: &Manifest,
) -> Result<(T, u64), BackupError> {
    let bytes = check_object(location, manifest).await?;
    let value = unseal(&bytes, identity, &manifest.body.object)?;
    Ok((value, bytes.len() as u64))
}

/// Reads object `manifest.object` and checks it is the one the manifest names.
pub(crate) async fn check_object(
    location: &Location,
    manifest: &Manifest,
) -> Result<bytes::Bytes, BackupError> {
    let body = &manifest.body;
    let named_by = manifest_name(body.seq);
    let bytes = location.get(&body.object).await.map_err(|e| match e {
        BackupError::NotFound(_) => {
            BackupError::Broken(format!("{} is missing (named by {named_by})", body.object))
        }
        other => other,
    })?;
    if bytes.len() as u64 != body.object_bytes || sha256_hex(&bytes) != body.object_sha256 {
        return Err(BackupError::Broken(format!(
            "{} was altered: it is not the object {named_by} names",
            body.object
        )));
    }
    Ok(bytes)
}

/// Whether the state after an entry (its index, when it was shipped) is within `point`.
fn fits(point: Point, index: u64, ms: u64) -> bool {
    match point {
        Point::Latest | Point::BeforeEvent(_) => true,
        Point::Index(i) => index <= i,
        Point::Time(t) => ms <= t,
    }
}

/// The state at `point`, rebuilt in a new engine at `path`.
async fn replay(
    location: &Location,
    identity: &Identity,
    chain: &[Manifest],
    path: &Path,
    point: Point,
    progress: &mut dyn Progress,
) -> Result<Replayed, BackupError> {
    let last = &chain[chain.len() - 1].body;
    if let Point::Index(i) = point
        && i > last.last_index
    {
        return Err(BackupError::NotFound(format!(
            "the backup reaches index {} ({}); it holds no index {i}",
            last.last_index,
            rfc3339(last.last_ms)
        )));
    }
    let base = chain
        .iter()
        .rposition(|m| {
            m.body.kind == Kind::Snapshot && fits(point, m.body.last_index, m.body.last_ms)
        })
        .ok_or_else(|| {
            let first = &chain[0].body;
            BackupError::NotFound(format!(
                "the backup starts at index {} ({}), after the point asked for",
                first.last_index,
                rfc3339(first.last_ms)
            ))
        })?;
    let total = chain.len() as u64 - base as u64;
    let (image, bytes): (Image, u64) = fetch(location, identity, &chain[base]).await?;
    let engine = Engine::open(path)?;
    engine.import(image.pairs)?;
    let mut out = Replayed {
        engine,
        read: vec![chain[base].body.seq],
        index: image.index,
        last_ms: chain[base].body.last_ms,
        objects: 1,
        object_bytes: bytes,
    };
    progress.objects(1, total);
    'manifests: for manifest in &chain[base + 1..] {
        if manifest.body.kind == Kind::Snapshot
            || !fits(point, manifest.body.first_index, manifest.body.first_ms)
        {
            break;
        }
        let (segment, bytes): (Segment, u64) = fetch(location, identity, manifest).await?;
        out.read.push(manifest.body.seq);
        out.objects += 1;
        out.object_bytes += bytes;
        for entry in segment.entries {
            if !fits(point, entry.index, entry.seen_ms) {
                break 'manifests;
            }
            entry.follows(out.index, &manifest.body.object)?;
            out.engine.apply_all(entry.index, &entry.commands, None)?;
            out.index = entry.index;
            out.last_ms = entry.seen_ms;
        }
        progress.objects(out.objects, total);
    }
    Ok(out)
}

/// The log index at which the action of audit entry `seq` started, found by replaying the
/// backup until the entry appears.
async fn event_index(
    location: &Location,
    identity: &Identity,
    chain: &[Manifest],
    scratch: &Path,
    seq: u64,
    progress: &mut dyn Progress,
) -> Result<u64, BackupError> {
    let replayed = replay(location, identity, chain, scratch, Point::Latest, progress).await?;
    let audit = Space::system("audit");
    let Some(stored) = replayed.engine.get(&audit, &entry_key(seq))? else {
        let head = doppel_store::chain::Head::decode(
            replayed
                .engine
                .get(&audit, doppel_store::chain::HEAD)?
                .as_deref(),
        )?;
        return Err(BackupError::NotFound(format!(
            "the backup's audit trail has entries 1 to {}; there is no entry {seq}",
            head.seq
        )));
    };
    let entry: doppel_api::AuditEntry = serde_json::from_slice(stored.get(32..).unwrap_or(&[]))
        .map_err(|e| BackupError::Broken(format!("audit entry {seq} does not decode: {e}")))?;
    let index = entry.index.ok_or_else(|| {
        BackupError::NotFound(format!(
            "audit entry {seq} ({} {}) does not record where the log stood when it started; \
             use --index or --at",
            entry.action, entry.outcome
        ))
    })?;
    Ok(index)
}

/// The restore waiting in `data` for its host to take it over, if one is.
pub fn pending(data: &Path) -> Result<Option<Restored>, BackupError> {
    let path = record_path(data);
    if !path.exists() {
        return Ok(None);
    }
    let bytes = std::fs::read(&path)?;
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| BackupError::Broken(format!("{} does not decode: {e}", path.display())))
}

/// Most bytes of keys and values written in one command while seeding.
const SEED_BATCH: usize = 4 << 20;

/// Writes the restored services' state (records, modules, buckets) and audit trail from
/// `data`'s pending restore into `store` (a new cluster's), then removes the restore. Safe to
/// repeat after a crash: it writes the same values again.
pub async fn seed(
    data: &Path,
    store: &dyn Store,
    progress: &mut dyn Progress,
) -> Result<Option<Restored>, BackupError> {
    let Some(restored) = pending(data)? else {
        return Ok(None);
    };
    let engine = Engine::open(&restore_dir(data).join("state"))?;
    let mut spaces: BTreeMap<(String, String), doppel_store::Pairs> = BTreeMap::new();
    for (raw, value) in engine.export()? {
        if let Some((space, key)) = portable::split_key(&raw)
            && portable::is_restored(&space)
        {
            spaces
                .entry((space.service, space.bucket))
                .or_default()
                .push((key, value));
        }
    }
    drop(engine);
    let total = spaces.len() as u64;
    for (done, ((service, bucket), pairs)) in spaces.into_iter().enumerate() {
        let space = Space { service, bucket };
        let mut batch = Vec::new();
        let mut size = 0;
        for (key, value) in pairs {
            size += key.len() + value.len();
            batch.push((key, value));
            if size >= SEED_BATCH {
                put_many(store, &space, std::mem::take(&mut batch)).await?;
                size = 0;
            }
        }
        if !batch.is_empty() {
            put_many(store, &space, batch).await?;
        }
        progress.objects(done as u64 + 1, total);
    }
    std::fs::remove_dir_all(restore_dir(data))?;
    Ok(Some(restored))
}

async fn put_many(
    store: &dyn Store,
    space: &Space,
    pairs: Vec<(Vec<u8>, Vec<u8>)>,
) -> Result<(), BackupError> {
    store
        .apply(Command::new(Op::PutMany {
            space: space.clone(),
            pairs,
        }))
        .await?;
    Ok(())
}
