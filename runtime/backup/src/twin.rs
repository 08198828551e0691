//! The twin: a standby cluster at other providers that follows a primary's backup target and
//! applies it, and takes over when promoted.
//!
//! **Following** runs on the twin's leader (every host runs a [`Follower`]; only the leader's
//! acts). It seeds the state from the target's latest snapshot, then reads each next manifest by
//! its number — checking its signature, that it names its predecessor's hash and that its
//! indexes follow on — decrypts its segment and applies the entries' commands. What it applies is
//! what a restore carries (services, modules, buckets), not the primary's hosts, placements,
//! credentials or audit trail: the twin places services on its own hosts, and its audit trail
//! records what happens to it. Each batch of entries goes through the twin's raft as one entry
//! together with the progress record, and only on the leader ([`ReplicatedStore::apply_as_leader`]),
//! so every primary entry is applied exactly once across crashes and leader changes.
//!
//! **While following**, services answer reads with the header `x-doppel-twin-lag-ms`, and every
//! write of services' state (a guest's, a deploy, a removal) is refused with the reason
//! ([`refusal`]): the twin's state is the primary's, and nothing else may change it.
//!
//! **Promotion** writes a new *generation* object into the target (`generations/N.json`,
//! created, never overwritten: of two promotions only one can create it), records it, and from
//! then on the twin takes writes. A primary's shipper looks for generations in its targets
//! ([`newer_generation`]); one newer than its own fences it: every host refuses writes and
//! says why. The window in which both accept writes is the time the primary takes to notice —
//! its next look, every [`GENERATION_CHECK`] — or as long as it cannot reach the target.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use doppel_api::TwinStatus;
use doppel_replication::ReplicatedStore;
use doppel_store::{Command, Op, Pairs, Space, Store, portable};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::format::{Image, Kind, Manifest, Segment, manifest_name};
use crate::heartbeat;
use crate::keys::Identity;
use crate::location::{Location, check_url};
use crate::restore::fetch;
use crate::{BackupError, chain, now_ms};

/// The system table of the twin's records.
const TABLE: &str = "twin";
/// What this cluster follows, or that it was promoted ([`Follow`]).
const FOLLOW: &[u8] = b"follow";
/// The identity that decrypts the followed backup (text). Never answered back.
const IDENTITY: &[u8] = b"~identity";
/// How far following has got ([`Progress`]).
const PROGRESS: &[u8] = b"progress";
/// That a newer generation superseded this cluster ([`Fence`]).
const FENCE: &[u8] = b"fence";

/// How often the follower looks for new manifests.
pub const TICK: Duration = Duration::from_millis(500);
/// How often a primary's shipper looks for a newer generation in a target.
pub const GENERATION_CHECK: Duration = Duration::from_secs(2);
/// Most bytes of commands in one entry of the twin's log.
/// Small, because raft gives an append one heartbeat interval (40 ms) to reach a follower: a
/// twin of several hosts must get each entry across in that time.
const MAX_BATCH_BYTES: usize = 256 << 10;

fn space() -> Space {
    Space::system(TABLE)
}

/// What this cluster does as a twin.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Follow {
    url: String,
    state: State,
    /// The name its heartbeats in the target carry ([`heartbeat`]).
    #[serde(default)]
    name: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum State {
    Following,
    /// `doppel twin promote` asked; the follower promotes between two batches.
    PromoteAsked,
    Promoted {
        generation: u64,
        at_ms: u64,
        index: u64,
    },
}

/// How far following has got: the last manifest applied and the primary index it reached.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Progress {
    seq: u64,
    /// The applied manifest file's SHA-256: the next one must name it.
    manifest_sha256: String,
    /// The key the primary signs its manifests with.
    signer: String,
    index: u64,
    /// When the primary shipped the newest entry applied (ms since the epoch).
    entry_ms: u64,
    /// When the follower last found nothing newer in the backup.
    checked_ms: u64,
}

/// A generation object in a target: a twin promoted at `index` of the primary.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Generation {
    generation: u64,
    promoted_at_ms: u64,
    index: u64,
}

/// That a newer generation superseded this cluster.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Fence {
    generation: u64,
    promoted_at_ms: u64,
    url: String,
}

fn generation_name(n: u64) -> String {
    format!("generations/{n:020}.json")
}

fn read<T: serde::de::DeserializeOwned>(store: &ReplicatedStore, key: &[u8]) -> Option<T> {
    let bytes = store.read_local(&space(), key).ok()??;
    serde_json::from_slice(&bytes).ok()
}

fn put(key: &[u8], value: &impl Serialize) -> Command {
    Command::new(Op::Put {
        space: space(),
        key: key.to_vec(),
        value: serde_json::to_vec(value).expect("a twin record always encodes"),
    })
}

/// This cluster's generation: 1, or the one it was promoted to.
pub fn generation(store: &ReplicatedStore) -> u64 {
    match read::<Follow>(store, FOLLOW).map(|f| f.state) {
        Some(State::Promoted { generation, .. }) => generation,
        _ => 1,
    }
}

/// Why this cluster refuses writes of services' state now, if it does (from its own copy of
/// the records: every host answers alike once they are applied).
pub fn refusal(store: &ReplicatedStore) -> Option<String> {
    if let Some(fence) = read::<Fence>(store, FENCE) {
        return Some(format!(
            "this cluster was superseded: its twin was promoted to generation {} at {} (seen in \
             {}); it takes no writes, and its data may lack what the twin has taken since",
            fence.generation,
            crate::rfc3339(fence.promoted_at_ms),
            fence.url
        ));
    }
    match read::<Follow>(store, FOLLOW) {
        Some(Follow {
            url,
            state: State::Following | State::PromoteAsked,
            ..
        }) => Some(format!(
            "this cluster is a standby twin following {url}; it takes writes once promoted \
             (`doppel twin promote`)"
        )),
        _ => None,
    }
}

/// When the standby's state was last known current (ms since the epoch); `None` unless
/// following.
pub fn current_as_of(store: &ReplicatedStore) -> Option<u64> {
    let follow = read::<Follow>(store, FOLLOW)?;
    if matches!(follow.state, State::Promoted { .. }) {
        return None;
    }
    let progress = read::<Progress>(store, PROGRESS)?;
    Some(progress.checked_ms.max(progress.entry_ms))
}

/// Whether `command` changes services' state (their data, records or modules): what a standby
/// or fenced cluster refuses.
pub fn changes_services(command: &Command) -> bool {
    match &command.op {
        Op::Place { .. } | Op::Chain { .. } => false,
        Op::PurgeService { .. } => true,
        Op::Put { space, .. }
        | Op::Delete { space, .. }
        | Op::Increment { space, .. }
        | Op::CompareAndSwap { space, .. }
        | Op::PutMany { space, .. }
        | Op::DeleteMany { space, .. } => followed(space),
    }
}

/// The spaces a twin takes over from its primary: what a restore carries, but the audit trail.
fn followed(space: &Space) -> bool {
    portable::is_restored(space) && !(space.is_system() && space.bucket == "audit")
}

/// The status of this cluster as a twin, for `GET /v1/twin`.
pub fn status(store: &ReplicatedStore, follower: &Follower) -> TwinStatus {
    let error = follower.error();
    if let Some(fence) = read::<Fence>(store, FENCE) {
        return TwinStatus {
            role: "fenced".into(),
            url: Some(fence.url),
            generation: generation(store),
            promoted_at_ms: Some(fence.promoted_at_ms),
            refusal: refusal(store),
            error,
            ..TwinStatus::default()
        };
    }
    let Some(follow) = read::<Follow>(store, FOLLOW) else {
        return TwinStatus {
            role: "primary".into(),
            generation: 1,
            ..TwinStatus::default()
        };
    };
    let progress = read::<Progress>(store, PROGRESS).unwrap_or_default();
    match follow.state {
        State::Promoted {
            generation,
            at_ms,
            index,
        } => TwinStatus {
            role: "promoted".into(),
            url: Some(follow.url),
            generation,
            primary_index: Some(index),
            promoted_at_ms: Some(at_ms),
            ..TwinStatus::default()
        },
        State::Following | State::PromoteAsked => TwinStatus {
            role: "standby".into(),
            url: Some(follow.url),
            name: Some(follow.name),
            generation: 1,
            primary_index: Some(progress.index),
            // Nothing taken yet: no state whose lag could be told.
            lag_ms: (progress.seq > 0)
                .then(|| now_ms().saturating_sub(progress.checked_ms.max(progress.entry_ms))),
            refusal: refusal(store),
            error,
            ..TwinStatus::default()
        },
    }
}

/// Makes this cluster a standby twin called `name` (a random name when `None`) of the backup at
/// `url`, decrypted with `identity`: checks that the identity reads it, then records both.
/// Refused on a cluster that holds services already, or that follows, was promoted or fenced.
/// The identity is kept sealed with `secrets`.
pub async fn follow(
    store: &ReplicatedStore,
    url: &str,
    identity: &str,
    name: Option<&str>,
    secrets: &dyn SecretBox,
) -> Result<(), BackupError> {
    check_url(url)?;
    let name = match name {
        Some(name) => {
            heartbeat::check_name(name)?;
            name.to_string()
        }
        None => {
            let mut bytes = [0u8; 4];
            getrandom::fill(&mut bytes).expect("the system's random source works");
            format!("twin-{}", hex::encode(bytes))
        }
    };
    let identity = Identity::parse(identity, "the identity given")?;
    if store.get(&space(), FOLLOW).await?.is_some() || store.get(&space(), FENCE).await?.is_some() {
        return Err(BackupError::Exists(
            "this cluster's twin role (it follows a backup, or was promoted or fenced)".into(),
        ));
    }
    let services = store.list_keys(&Space::system("services"), None, 1).await?;
    if !services.is_empty() {
        return Err(BackupError::BadLocation(
            "this cluster runs services of its own; a twin starts empty".into(),
        ));
    }
    let location = Location::open(url)?;
    let manifests = chain::read(&location, None).await?;
    let snapshot = latest_snapshot(&manifests)?;
    // Read one object now, so that a wrong identity is refused here and not in the background.
    let _: (Image, u64) = fetch(&location, &identity, snapshot).await?;
    store
        .apply(Command::new(Op::Put {
            space: space(),
            key: IDENTITY.to_vec(),
            value: secrets.seal(IDENTITY_NAME, identity.secret_text().as_bytes())?,
        }))
        .await?;
    store
        .apply(put(
            FOLLOW,
            &Follow {
                url: url.to_string(),
                state: State::Following,
                name,
            },
        ))
        .await?;
    Ok(())
}

fn latest_snapshot(manifests: &[Manifest]) -> Result<&Manifest, BackupError> {
    manifests
        .iter()
        .rev()
        .find(|m| m.body.kind == Kind::Snapshot)
        .ok_or_else(|| BackupError::NotFound("the backup holds no snapshot".into()))
}

/// What a promotion did.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Promoted {
    /// The new generation.
    pub generation: u64,
    /// The primary's index the twin took over at.
    pub index: u64,
    /// When (ms since the epoch).
    pub at_ms: u64,
}

/// Asks the follower to promote this standby, and waits (up to `limit`) until it has.
pub async fn promote(store: &ReplicatedStore, limit: Duration) -> Result<Promoted, BackupError> {
    let Some(bytes) = store.get(&space(), FOLLOW).await? else {
        return Err(BackupError::NotFound(
            "this cluster follows no backup (`doppel twin follow`); there is nothing to promote"
                .into(),
        ));
    };
    let follow: Follow = serde_json::from_slice(&bytes)
        .map_err(|e| BackupError::Broken(format!("the twin record does not decode: {e}")))?;
    match follow.state {
        State::Promoted {
            generation,
            at_ms,
            index,
        } => {
            return Ok(Promoted {
                generation,
                index,
                at_ms,
            });
        }
        State::PromoteAsked => {}
        State::Following => {
            let asked = Follow {
                state: State::PromoteAsked,
                ..follow.clone()
            };
            store
                .apply(Command::new(Op::CompareAndSwap {
                    space: space(),
                    key: FOLLOW.to_vec(),
                    expected: Some(bytes),
                    value: serde_json::to_vec(&asked).expect("always encodes"),
                }))
                .await?;
        }
    }
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(State::Promoted {
            generation,
            at_ms,
            index,
        }) = read::<Follow>(store, FOLLOW).map(|f| f.state)
        {
            return Ok(Promoted {
                generation,
                index,
                at_ms,
            });
        }
        if tokio::time::Instant::now() > deadline {
            return Err(BackupError::Storage(format!(
                "not promoted within {} s: the leader's follower has not written the new \
                 generation into {} yet (`doppel twin status` says why); it goes on trying",
                limit.as_secs(),
                follow.url
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The newest generation object in `location` newer than `own`, if any.
async fn newer_in(location: &Location, own: u64) -> Result<Option<Generation>, BackupError> {
    let newest = location
        .list("generations")
        .await?
        .into_iter()
        .filter_map(|(name, _)| {
            name.strip_prefix("generations/")?
                .strip_suffix(".json")?
                .parse::<u64>()
                .ok()
        })
        .max();
    match newest {
        Some(n) if n > own => {
            let bytes = location.get(&generation_name(n)).await?;
            let generation: Generation = serde_json::from_slice(&bytes).map_err(|e| {
                BackupError::Broken(format!("{} does not decode: {e}", generation_name(n)))
            })?;
            Ok(Some(generation))
        }
        _ => Ok(None),
    }
}

/// For a primary's shipper: looks for a generation in `location` newer than this cluster's,
/// and fences the cluster when one is there. Answers whether it is fenced.
pub async fn newer_generation(
    store: &ReplicatedStore,
    location: &Location,
) -> Result<bool, BackupError> {
    if read::<Fence>(store, FENCE).is_some() {
        return Ok(true);
    }
    let Some(newer) = newer_in(location, generation(store)).await? else {
        return Ok(false);
    };
    tracing::error!(
        generation = newer.generation,
        url = location.url(),
        "a twin was promoted to a newer generation: this cluster is superseded and refuses writes"
    );
    store
        .apply(put(
            FENCE,
            &Fence {
                generation: newer.generation,
                promoted_at_ms: newer.promoted_at_ms,
                url: location.url().to_string(),
            },
        ))
        .await?;
    Ok(true)
}

/// Seals what a twin keeps of its own in the replicated store (the identity that reads the
/// primary's backup) under a key only this cluster's hosts hold, and opens it again.
pub trait SecretBox: Send + Sync {
    /// `secret`, sealed; `what` names it (and binds the sealed form to that name).
    fn seal(&self, what: &str, secret: &[u8]) -> Result<Vec<u8>, BackupError>;
    /// What [`SecretBox::seal`] made.
    fn open(&self, what: &str, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, BackupError>;
}

/// What the twin's identity is sealed as.
const IDENTITY_NAME: &str = "twin identity";

/// Follows the backup while this host leads a standby.
#[derive(Clone, Default)]
pub struct Follower {
    error: Arc<Mutex<Option<String>>>,
}

impl Follower {
    /// Starts following for the host holding `store`; the handle ends it when aborted.
    /// The twin's identity is opened with `secrets`.
    pub fn spawn(
        store: Arc<ReplicatedStore>,
        secrets: Arc<dyn SecretBox>,
    ) -> (Follower, tokio::task::JoinHandle<()>) {
        let follower = Follower::default();
        let handle = tokio::spawn(run(store, follower.clone(), secrets));
        (follower, handle)
    }

    /// Why the last step failed, if it did (this host's view; the leader's is the one that
    /// counts).
    pub fn error(&self) -> Option<String> {
        self.error.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set_error(&self, error: Option<String>) {
        *self.error.lock().unwrap_or_else(|e| e.into_inner()) = error;
    }
}

/// The backup being followed, opened.
struct Session {
    location: Location,
    identity: Identity,
    progress: Progress,
}

async fn run(store: Arc<ReplicatedStore>, follower: Follower, secrets: Arc<dyn SecretBox>) {
    let mut session: Option<Session> = None;
    let mut failures = 0u32;
    let mut reported: Option<std::time::Instant> = None;
    loop {
        tokio::time::sleep(TICK * 2u32.saturating_pow(failures.min(4))).await;
        let follow = read::<Follow>(&store, FOLLOW);
        let active = store.is_leader()
            && follow
                .as_ref()
                .is_some_and(|f| !matches!(f.state, State::Promoted { .. }));
        let Some(follow) = follow.filter(|_| active) else {
            session = None;
            failures = 0;
            continue;
        };
        match step(&store, &mut session, &follow, secrets.as_ref()).await {
            Ok(()) => {
                failures = 0;
                follower.set_error(None);
                if follow.state == State::Following
                    && reported.is_none_or(|at| at.elapsed() >= heartbeat::REPORT_EVERY)
                    && let Some(s) = &session
                {
                    reported = Some(std::time::Instant::now());
                    if let Err(e) = report(s, &follow.name).await {
                        tracing::warn!(url = %follow.url, error = %e, "cannot leave this twin's heartbeat in the primary's backup");
                    }
                }
            }
            Err(e) => {
                failures += 1;
                // Read everything again: an apply that timed out may or may not have happened.
                session = None;
                if failures == 1 || failures.is_multiple_of(20) {
                    tracing::warn!(url = %follow.url, error = %e, failures, "following the primary's backup failed; trying again");
                }
                follower.set_error(Some(e.to_string()));
            }
        }
    }
}

/// Leaves a heartbeat in the target, so that the primary sees how far this twin has got.
async fn report(s: &Session, name: &str) -> Result<(), BackupError> {
    if s.progress.seq == 0 {
        return Ok(());
    }
    let now = now_ms();
    heartbeat::report(
        &s.location,
        &heartbeat::Report {
            twin: name.to_string(),
            primary_index: s.progress.index,
            lag_ms: now.saturating_sub(s.progress.checked_ms.max(s.progress.entry_ms)),
            reported_ms: now,
        },
    )
    .await
}

async fn step(
    store: &ReplicatedStore,
    session: &mut Option<Session>,
    follow: &Follow,
    secrets: &dyn SecretBox,
) -> Result<(), BackupError> {
    if session.is_none() {
        let sealed = store
            .get(&space(), IDENTITY)
            .await?
            .ok_or_else(|| BackupError::NotFound("the twin's identity is missing".into()))?;
        let secret = secrets.open(IDENTITY_NAME, &sealed)?;
        let progress: Progress = match store.get(&space(), PROGRESS).await? {
            Some(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| BackupError::Broken(format!("the twin's progress: {e}")))?,
            None => Progress::default(),
        };
        *session = Some(Session {
            location: Location::open(&follow.url)?,
            identity: Identity::parse(&String::from_utf8_lossy(&secret), "the twin's identity")?,
            progress,
        });
    }
    let s = session.as_mut().expect("just opened");
    if follow.state == State::PromoteAsked {
        return promote_now(store, s, follow).await;
    }
    if s.progress.seq == 0 {
        let manifests = chain::read(&s.location, None).await?;
        let snapshot = latest_snapshot(&manifests)?.clone();
        return take_snapshot(store, s, &snapshot).await;
    }
    // A few manifests per step, so that a promotion asked meanwhile waits little.
    for _ in 0..8 {
        let name = manifest_name(s.progress.seq + 1);
        let bytes = match s.location.get(&name).await {
            Ok(bytes) => bytes,
            Err(BackupError::NotFound(_)) => {
                let mut progress = s.progress.clone();
                progress.checked_ms = now_ms();
                store
                    .apply_as_leader(vec![put(PROGRESS, &progress)])
                    .await?;
                s.progress = progress;
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let manifest = Manifest::parse(&name, &bytes)?;
        if manifest.body.signer != s.progress.signer {
            return Err(BackupError::Broken(format!(
                "{name} is signed by another key than the backup this twin follows"
            )));
        }
        if manifest.body.prev != s.progress.manifest_sha256 {
            return Err(BackupError::Broken(format!(
                "{name} does not follow {}: its predecessor was replaced, altered or reordered",
                manifest_name(s.progress.seq)
            )));
        }
        match manifest.body.kind {
            Kind::Snapshot if manifest.body.last_index > s.progress.index => {
                take_snapshot(store, s, &manifest).await?;
            }
            Kind::Snapshot => {
                let mut progress = s.progress.clone();
                progress.seq = manifest.body.seq;
                progress.manifest_sha256 = manifest.file_sha256.clone();
                store
                    .apply_as_leader(vec![put(PROGRESS, &progress)])
                    .await?;
                s.progress = progress;
            }
            Kind::Segment => take_segment(store, s, &manifest).await?,
        }
    }
    Ok(())
}

/// Applies a segment's entries after the progress, in batches, each with the progress record.
async fn take_segment(
    store: &ReplicatedStore,
    s: &mut Session,
    manifest: &Manifest,
) -> Result<(), BackupError> {
    let (segment, _): (Segment, u64) = fetch(&s.location, &s.identity, manifest).await?;
    let mut progress = s.progress.clone();
    progress.seq = manifest.body.seq;
    progress.manifest_sha256 = manifest.file_sha256.clone();
    let mut batch: Vec<Command> = Vec::new();
    let mut bytes = 0;
    let entries: Vec<_> = segment
        .entries
        .into_iter()
        .filter(|e| e.index > s.progress.index)
        .collect();
    let last = entries.len();
    for (n, entry) in entries.into_iter().enumerate() {
        entry.follows(progress.index, &manifest.body.object)?;
        for mut command in entry.commands {
            if changes_services(&command) {
                // The primary's writer and epoch mean nothing to the twin's placements.
                command.writer = None;
                bytes += command.op.payload_len();
                batch.push(command);
            }
        }
        progress.index = entry.index;
        progress.entry_ms = entry.seen_ms;
        if bytes >= MAX_BATCH_BYTES || n + 1 == last {
            batch.push(put(PROGRESS, &progress));
            apply_all(store, std::mem::take(&mut batch)).await?;
            bytes = 0;
            s.progress = progress.clone();
        }
    }
    if s.progress.seq != progress.seq {
        // Nothing after the progress in this segment: only the manifest moves on.
        store
            .apply_as_leader(vec![put(PROGRESS, &progress)])
            .await?;
        s.progress = progress;
    }
    Ok(())
}

/// Brings the followed spaces to the snapshot's state (only what differs), then records it.
async fn take_snapshot(
    store: &ReplicatedStore,
    s: &mut Session,
    manifest: &Manifest,
) -> Result<(), BackupError> {
    let (image, _): (Image, u64) = fetch(&s.location, &s.identity, manifest).await?;
    let (_, current) = store.export_applied()?;
    let mut have: BTreeMap<Vec<u8>, Vec<u8>> = current
        .into_iter()
        .filter(|(raw, _)| portable::split_key(raw).is_some_and(|(space, _)| followed(&space)))
        .collect();
    let mut puts: HashMap<Space, Pairs> = HashMap::new();
    for (raw, value) in image.pairs {
        let Some((space, key)) = portable::split_key(&raw) else {
            continue;
        };
        if !followed(&space) {
            continue;
        }
        if have.remove(&raw).as_ref() != Some(&value) {
            puts.entry(space).or_default().push((key, value));
        }
    }
    let mut deletes: HashMap<Space, BTreeSet<Vec<u8>>> = HashMap::new();
    for raw in have.into_keys() {
        if let Some((space, key)) = portable::split_key(&raw) {
            deletes.entry(space).or_default().insert(key);
        }
    }
    let mut commands = Vec::new();
    for (space, keys) in deletes {
        commands.push(Command::new(Op::DeleteMany {
            space,
            keys: keys.into_iter().collect(),
        }));
    }
    // Modules before the services that run them, services' records last: a host loads a
    // service as soon as its record appears.
    let mut puts: Vec<(Space, Pairs)> = puts.into_iter().collect();
    puts.sort_by_key(
        |(space, _)| match (space.is_system(), space.bucket.as_str()) {
            (true, "modules") => 0,
            (true, "services") => 2,
            _ => 1,
        },
    );
    for (space, pairs) in puts {
        let mut chunk = Vec::new();
        let mut size = 0;
        for (key, value) in pairs {
            size += key.len() + value.len();
            chunk.push((key, value));
            if size >= MAX_BATCH_BYTES {
                commands.push(Command::new(Op::PutMany {
                    space: space.clone(),
                    pairs: std::mem::take(&mut chunk),
                }));
                size = 0;
            }
        }
        if !chunk.is_empty() {
            commands.push(Command::new(Op::PutMany {
                space,
                pairs: chunk,
            }));
        }
    }
    let progress = Progress {
        seq: manifest.body.seq,
        manifest_sha256: manifest.file_sha256.clone(),
        signer: manifest.body.signer.clone(),
        index: image.index,
        entry_ms: manifest.body.last_ms,
        checked_ms: s.progress.checked_ms,
    };
    // Each command on its own entry (they may be large); the progress last: a crash before it
    // takes the snapshot again, and converging twice changes nothing.
    for command in commands {
        apply_all(store, vec![command]).await?;
    }
    store
        .apply_as_leader(vec![put(PROGRESS, &progress)])
        .await?;
    tracing::info!(index = image.index, manifest = %manifest_name(manifest.body.seq), "the twin took a snapshot of its primary");
    s.progress = progress;
    Ok(())
}

/// Applies `commands` as one entry on this leader; a command the state machine refuses (a
/// quota the twin reached, say) is logged, as the primary refused nothing it shipped.
async fn apply_all(store: &ReplicatedStore, commands: Vec<Command>) -> Result<(), BackupError> {
    for outcome in store.apply_as_leader(commands).await? {
        if let Err(e) = outcome {
            tracing::warn!(error = %e, "the twin refused a command its primary applied");
        }
    }
    Ok(())
}

/// Writes the next generation into the backup, then records the promotion.
async fn promote_now(
    store: &ReplicatedStore,
    s: &mut Session,
    follow: &Follow,
) -> Result<(), BackupError> {
    let newest = newer_in(&s.location, 0).await?.map_or(1, |g| g.generation);
    let generation = Generation {
        generation: newest + 1,
        promoted_at_ms: now_ms(),
        index: s.progress.index,
    };
    s.location
        .create(
            &generation_name(generation.generation),
            serde_json::to_vec_pretty(&generation).expect("always encodes"),
        )
        .await?;
    store
        .apply_as_leader(vec![put(
            FOLLOW,
            &Follow {
                state: State::Promoted {
                    generation: generation.generation,
                    at_ms: generation.promoted_at_ms,
                    index: generation.index,
                },
                ..follow.clone()
            },
        )])
        .await?;
    tracing::info!(generation = generation.generation, index = generation.index, url = %follow.url, "promoted: this twin takes writes now");
    Ok(())
}
