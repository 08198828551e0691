//! Shipping: on the leader, one task per backup target follows the applied log and writes it to
//! the target — a snapshot first, then segments of committed entries every [`TICK`], and a new
//! snapshot every [`snapshot_entries`] entries or [`snapshot_age`], or when the log no longer
//! holds what was not shipped yet. Every host runs a [`Shipper`]; only the leader's ships, and a
//! new leader picks up from the target's last manifest, so shipping is handed over on failover.
//!
//! It is off the write path: it reads what is already applied, on its own tasks, and a slow or
//! failing target only makes its own lag grow. If two hosts briefly both lead, both may write an
//! object, but only one can create the next manifest (objects and manifests are created, never
//! overwritten); the other reads the tail again and goes on from there.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use doppel_api::{BackupTarget, ShipStatus};
use doppel_replication::ReplicatedStore;
use zeroize::Zeroizing;

use crate::format::{Image, Kind, ManifestBody, Segment, Shipped, manifest_name, object_name};
use crate::keys::{Recipient, Signer};
use crate::location::Location;
use crate::{BackupError, chain, format, now_ms, targets};

/// How often a target's task looks for newly applied entries: segments are at most about this
/// far apart (plus the upload).
pub const TICK: Duration = Duration::from_millis(500);
/// Most entries in one segment.
const MAX_SEGMENT: usize = 20_000;
/// Lag past which shipping warns in the log.
pub const LAG_WARNING: Duration = Duration::from_secs(30);

/// Entries shipped between snapshots (`DOPPEL_BACKUP_SNAPSHOT_ENTRIES`; default 100,000): a
/// restore replays at most this many entries after its snapshot.
pub fn snapshot_entries() -> u64 {
    env_or("DOPPEL_BACKUP_SNAPSHOT_ENTRIES", 100_000)
}

/// Longest time between snapshots (`DOPPEL_BACKUP_SNAPSHOT_SECS`; default an hour).
pub fn snapshot_age() -> Duration {
    Duration::from_secs(env_or("DOPPEL_BACKUP_SNAPSHOT_SECS", 3600))
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(default)
}

type Statuses = Arc<Mutex<BTreeMap<String, ShipStatus>>>;

/// Gives the cluster key to carry into each target, once the host has it.
pub type KeyToCarry = Arc<dyn Fn() -> Option<Zeroizing<Vec<u8>>> + Send + Sync>;

/// Ships the cluster's log to every backup target while this host leads.
#[derive(Clone)]
pub struct Shipper {
    statuses: Statuses,
}

impl Shipper {
    /// Starts shipping for the host holding `store`; the handle ends it when aborted. Each
    /// target also gets the cluster key `carry` gives (sealed to its recipient), before any
    /// object that needs it.
    pub fn spawn(
        store: Arc<ReplicatedStore>,
        carry: KeyToCarry,
    ) -> (Shipper, tokio::task::JoinHandle<()>) {
        let statuses = Statuses::default();
        let shipper = Shipper {
            statuses: statuses.clone(),
        };
        let handle = tokio::spawn(reconcile(store, statuses, carry));
        (shipper, handle)
    }

    /// How shipping to each target goes (by target name); empty unless this host leads. The
    /// lag is as of now: it grows between two steps while entries wait.
    pub fn status(&self) -> BTreeMap<String, ShipStatus> {
        let now = now_ms();
        let mut all = self
            .statuses
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for status in all.values_mut() {
            status.lag_ms = status
                .waiting_since_ms
                .map_or(0, |at| now.saturating_sub(at));
        }
        all
    }
}

/// The targets' tasks, aborted with it: when the host stops and aborts `reconcile`, they stop too.
#[derive(Default)]
struct Running(BTreeMap<String, (BackupTarget, tokio::task::JoinHandle<()>)>);

impl Drop for Running {
    fn drop(&mut self) {
        for (_, task) in self.0.values() {
            task.abort();
        }
    }
}

/// Keeps one task per target running while this host leads.
async fn reconcile(store: Arc<ReplicatedStore>, statuses: Statuses, carry: KeyToCarry) {
    let mut running = Running::default();
    let running = &mut running.0;
    loop {
        let wanted = if store.is_leader() {
            targets::list_local(&store).unwrap_or_default()
        } else {
            Vec::new()
        };
        running.retain(|name, (target, task)| {
            if task.is_finished() {
                // A target's task only ends by being aborted; anything else is a bug, and
                // shipping must go on: it is started again below.
                tracing::error!(target = %name, "the backup shipping task stopped; starting it again");
            }
            let keep = !task.is_finished() && wanted.iter().any(|w| w == target);
            if !keep {
                task.abort();
                statuses
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(name);
            }
            keep
        });
        for target in wanted {
            if !running.contains_key(&target.name) {
                let task = tokio::spawn(follow(
                    store.clone(),
                    target.clone(),
                    statuses.clone(),
                    carry.clone(),
                ));
                running.insert(target.name.clone(), (target, task));
            }
        }
        tokio::time::sleep(TICK).await;
    }
}

/// Where a target's chain ends.
struct Cursor {
    seq: u64,
    prev: String,
    last_index: u64,
    since_snapshot: u64,
    snapshot_ms: u64,
}

/// Ships to one target until aborted.
async fn follow(
    store: Arc<ReplicatedStore>,
    target: BackupTarget,
    statuses: Statuses,
    carry: KeyToCarry,
) {
    let set = |f: &dyn Fn(&mut ShipStatus)| {
        let mut all = statuses.lock().unwrap_or_else(|e| e.into_inner());
        f(all.entry(target.name.clone()).or_default());
    };
    let mut shipper = loop {
        let opened = match Target::open(&store, &target).await {
            Ok(shipper) => shipper.carry_key(&carry).await.map(|()| shipper),
            Err(e) => Err(e),
        };
        match opened {
            Ok(shipper) => break shipper,
            Err(e) => {
                tracing::error!(target = %target.name, error = %e, "cannot ship backups to this target; trying again");
                set(&|s| s.error = Some(e.to_string()));
                tokio::time::sleep(TICK * 10).await;
            }
        }
    };
    let mut waiting_since: Option<u64> = None;
    let mut warned = 0u64;
    let mut failures = 0u32;
    let mut generations_checked: Option<std::time::Instant> = None;
    let mut twins_checked: Option<std::time::Instant> = None;
    loop {
        if twins_checked.is_none_or(|at| at.elapsed() >= crate::heartbeat::CHECK_EVERY) {
            twins_checked = Some(std::time::Instant::now());
            match crate::heartbeat::seen(&shipper.location, store.applied_index(), now_ms()).await {
                Ok(twins) => set(&|s| s.twins = twins.clone()),
                Err(e) => {
                    tracing::warn!(target = %target.name, error = %e, "cannot read the twins' heartbeats");
                }
            }
        }
        // A twin promoted from this target fences this cluster: looked for at once when
        // shipping starts (a primary coming back), then every few seconds.
        if generations_checked.is_none_or(|at| at.elapsed() >= crate::twin::GENERATION_CHECK) {
            generations_checked = Some(std::time::Instant::now());
            if let Err(e) = crate::twin::newer_generation(&store, &shipper.location).await {
                tracing::warn!(target = %target.name, error = %e, "cannot look for a newer twin generation");
            }
        }
        let step_started = now_ms();
        let result = shipper.step(&store).await;
        let now = now_ms();
        match result {
            Ok(()) => {
                failures = 0;
                let shipped = shipper.cursor.as_ref().map_or(0, |c| c.last_index);
                // Everything applied before this step began is shipped now; what was applied
                // since has waited at most since then.
                waiting_since = (shipped < store.applied_index()).then_some(step_started);
                set(&|s| {
                    s.shipped_index = shipped;
                    s.applied_index = store.applied_index();
                    s.waiting_since_ms = waiting_since;
                    s.manifests = shipper.cursor.as_ref().map_or(0, |c| c.seq);
                    s.objects = shipper.objects;
                    s.bytes = shipper.bytes;
                    s.last_snapshot_ms = shipper.cursor.as_ref().map_or(0, |c| c.snapshot_ms);
                    s.error = None;
                });
            }
            Err(e) => {
                failures += 1;
                shipper.cursor = None;
                waiting_since = waiting_since.or(Some(now));
                if failures == 1 || failures.is_multiple_of(20) {
                    tracing::warn!(target = %target.name, error = %e, failures, "shipping a backup failed; trying again");
                }
                set(&|s| {
                    s.error = Some(e.to_string());
                    s.waiting_since_ms = waiting_since;
                });
            }
        }
        let lag = waiting_since.map_or(0, |at| now.saturating_sub(at));
        if lag > LAG_WARNING.as_millis() as u64 && now.saturating_sub(warned) > 60_000 {
            warned = now;
            tracing::warn!(target = %target.name, lag_ms = lag, "the backup lags behind the cluster");
        }
        let pause = TICK * 2u32.saturating_pow(failures.min(4));
        tokio::time::sleep(pause).await;
    }
}

/// One target being shipped to.
struct Target {
    name: String,
    location: Location,
    recipient: Recipient,
    signer: Signer,
    cursor: Option<Cursor>,
    objects: u64,
    bytes: u64,
}

impl Target {
    /// Puts the cluster key in the target (once; it is never replaced). Without it nothing is
    /// shipped: a backup whose data keys nobody can open restores nothing.
    async fn carry_key(&self, carry: &KeyToCarry) -> Result<(), BackupError> {
        let key = carry().ok_or_else(|| {
            BackupError::NotFound("this host has no cluster key yet to carry".into())
        })?;
        crate::cluster_key::keep(&self.location, &self.recipient, &key).await
    }

    async fn open(store: &ReplicatedStore, target: &BackupTarget) -> Result<Target, BackupError> {
        Ok(Target {
            name: target.name.clone(),
            location: match target.retain_ms {
                Some(ms) => Location::open_locked(&target.url, Duration::from_millis(ms))?,
                None => Location::open(&target.url)?,
            },
            recipient: Recipient::parse(&target.recipient)?,
            signer: targets::signing_key(store).await?,
            cursor: None,
            objects: 0,
            bytes: 0,
        })
    }

    /// Ships what is applied and not shipped yet (reading where the chain ends first, when not
    /// known).
    async fn step(&mut self, store: &Arc<ReplicatedStore>) -> Result<(), BackupError> {
        if self.cursor.is_none() {
            self.cursor = Some(self.read_tail().await?);
        }
        let cursor = self.cursor.as_ref().expect("just read");
        let applied = store.applied_index();
        if cursor.seq > 0 && applied < cursor.last_index {
            // Shipped by an earlier leader further than this one has applied yet.
            return Ok(());
        }
        let due = cursor.seq == 0
            || cursor.since_snapshot >= snapshot_entries()
            || now_ms().saturating_sub(cursor.snapshot_ms) >= snapshot_age().as_millis() as u64;
        if due {
            return self.ship_snapshot(store).await;
        }
        match store.applied_entries(cursor.last_index, MAX_SEGMENT) {
            None => self.ship_snapshot(store).await,
            Some(entries) if entries.is_empty() => Ok(()),
            Some(entries) => {
                let seen_ms = now_ms();
                let segment = Segment {
                    entries: entries
                        .into_iter()
                        .map(|(index, commands)| Shipped {
                            index,
                            seen_ms,
                            commands,
                        })
                        .collect(),
                };
                self.ship_segment(segment).await
            }
        }
    }

    async fn read_tail(&self) -> Result<Cursor, BackupError> {
        let Some(tail) = chain::tail(&self.location).await? else {
            tracing::info!(target = %self.name, url = self.location.url(), "starting a new backup chain");
            return Ok(Cursor {
                seq: 0,
                prev: String::new(),
                last_index: 0,
                since_snapshot: 0,
                snapshot_ms: 0,
            });
        };
        if tail.body.signer != self.signer.public_hex() {
            return Err(BackupError::Broken(format!(
                "{} holds a backup signed by another key (another cluster's?); this cluster \
                 never writes into it. Give this cluster a target of its own",
                self.location.url()
            )));
        }
        Ok(Cursor {
            seq: tail.body.seq,
            prev: tail.file_sha256,
            last_index: tail.body.last_index,
            // Unknown from the tail alone: count from here.
            since_snapshot: 0,
            snapshot_ms: if tail.body.kind == Kind::Snapshot {
                tail.body.last_ms
            } else {
                now_ms()
            },
        })
    }

    async fn ship_snapshot(&mut self, store: &Arc<ReplicatedStore>) -> Result<(), BackupError> {
        // The export holds the apply lock while it reads sled's pages, as a raft snapshot does;
        // it and the sealing run off the async threads.
        let (store, recipient) = (store.clone(), self.recipient.clone());
        let (index, sealed) = tokio::task::spawn_blocking(move || {
            let (index, pairs) = store.export_applied()?;
            format::seal(&Image { index, pairs }, &recipient).map(|sealed| (index, sealed))
        })
        .await
        .map_err(|e| BackupError::Crypto(e.to_string()))??;
        let now = now_ms();
        self.write(Kind::Snapshot, sealed, index, index, now, now)
            .await?;
        if let Some(cursor) = &mut self.cursor {
            cursor.since_snapshot = 0;
            cursor.snapshot_ms = now;
        }
        tracing::info!(target = %self.name, index, "shipped a backup snapshot");
        Ok(())
    }

    async fn ship_segment(&mut self, segment: Segment) -> Result<(), BackupError> {
        let first = segment.entries.first().map_or(0, |e| e.index);
        let last = segment.entries.last().map_or(0, |e| e.index);
        let seen = segment.entries.first().map_or(0, |e| e.seen_ms);
        let count = segment.entries.len() as u64;
        let recipient = self.recipient.clone();
        let sealed = tokio::task::spawn_blocking(move || format::seal(&segment, &recipient))
            .await
            .map_err(|e| BackupError::Crypto(e.to_string()))??;
        self.write(Kind::Segment, sealed, first, last, seen, seen)
            .await?;
        if let Some(cursor) = &mut self.cursor {
            cursor.since_snapshot += count;
        }
        Ok(())
    }

    /// Creates the object, then its manifest after the chain's last; moves the cursor on.
    async fn write(
        &mut self,
        kind: Kind,
        sealed: Vec<u8>,
        first_index: u64,
        last_index: u64,
        first_ms: u64,
        last_ms: u64,
    ) -> Result<(), BackupError> {
        let cursor = self.cursor.as_mut().expect("read before writing");
        let seq = cursor.seq + 1;
        let object = object_name(seq, kind);
        let body = ManifestBody {
            format: format::FORMAT,
            seq,
            prev: cursor.prev.clone(),
            kind,
            object: object.clone(),
            object_sha256: format::sha256_hex(&sealed),
            object_bytes: sealed.len() as u64,
            first_index,
            last_index,
            first_ms,
            last_ms,
            signer: self.signer.public_hex(),
        };
        let object_bytes = sealed.len() as u64;
        self.location.create(&object, sealed).await?;
        let manifest = body.sign(&self.signer);
        let manifest_bytes = manifest.len() as u64;
        let file_sha256 = format::sha256_hex(&manifest);
        self.location.create(&manifest_name(seq), manifest).await?;
        cursor.seq = seq;
        cursor.prev = file_sha256;
        cursor.last_index = last_index;
        self.objects += 2;
        self.bytes += object_bytes + manifest_bytes;
        Ok(())
    }
}
