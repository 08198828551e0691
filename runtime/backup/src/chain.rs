//! Reading a target's manifests as one chain, and refusing it when it is not whole: a manifest
//! missing from the numbering, one that does not name its predecessor's hash (reordered,
//! replaced), one signed by another key, one whose indexes do not follow on. Each error names
//! the object.

use crate::BackupError;
use crate::format::{Kind, Manifest, manifest_name, manifest_seq};
use crate::location::Location;

/// The names of the manifests in `location`, in order, with their numbers.
async fn manifest_names(location: &Location) -> Result<Vec<(u64, String)>, BackupError> {
    let mut names: Vec<(u64, String)> = location
        .list("manifests")
        .await?
        .into_iter()
        .filter_map(|(name, _)| manifest_seq(&name).map(|seq| (seq, name)))
        .collect();
    names.sort();
    Ok(names)
}

/// The last manifest of `location`, signature checked; `None` for an empty target.
pub async fn tail(location: &Location) -> Result<Option<Manifest>, BackupError> {
    let Some((_, name)) = manifest_names(location).await?.pop() else {
        return Ok(None);
    };
    let bytes = location.get(&name).await?;
    Manifest::parse(&name, &bytes).map(Some)
}

/// Every manifest of `location`, checked as one chain. With `signer`, the chain must be signed
/// by that key (hex); without, by one key throughout.
pub async fn read(location: &Location, signer: Option<&str>) -> Result<Vec<Manifest>, BackupError> {
    let names = manifest_names(location).await?;
    if names.is_empty() {
        return Err(BackupError::NotFound(format!(
            "{} holds no backup (no manifests/)",
            location.url()
        )));
    }
    let mut chain: Vec<Manifest> = Vec::with_capacity(names.len());
    // A pruned backup starts later than 1, at a snapshot; after its start, no number is missing.
    let start = names[0].0;
    for (position, (seq, name)) in names.iter().enumerate() {
        let expected = start + position as u64;
        if *seq != expected {
            return Err(BackupError::Broken(format!(
                "{} is missing: the manifests go from {} to {name}",
                manifest_name(expected),
                manifest_name(expected - 1)
            )));
        }
        let bytes = location.get(name).await?;
        let manifest = Manifest::parse(name, &bytes)?;
        let body = &manifest.body;
        if body.seq != *seq {
            return Err(BackupError::Broken(format!(
                "{name} says it is manifest {} (moved or renamed)",
                body.seq
            )));
        }
        let want_signer = signer.or(chain.first().map(|m| m.body.signer.as_str()));
        if let Some(want) = want_signer
            && body.signer != want
        {
            return Err(BackupError::Broken(format!(
                "{name} is signed by another key ({}…) than the backup ({}…)",
                &body.signer[..16.min(body.signer.len())],
                &want[..16.min(want.len())]
            )));
        }
        match chain.last() {
            None => {
                if body.kind != Kind::Snapshot || (body.seq == 1 && !body.prev.is_empty()) {
                    return Err(BackupError::Broken(format!(
                        "{name} is not the start of a backup (it should be a snapshot)"
                    )));
                }
            }
            Some(before) => {
                if body.prev != before.file_sha256 {
                    return Err(BackupError::Broken(format!(
                        "{name} does not follow {}: its predecessor was replaced, altered or \
                         reordered",
                        manifest_name(before.body.seq)
                    )));
                }
                let follows = match body.kind {
                    Kind::Segment => body.first_index == before.body.last_index + 1,
                    Kind::Snapshot => body.last_index >= before.body.last_index,
                };
                if !follows || body.first_index > body.last_index {
                    return Err(BackupError::Broken(format!(
                        "{name} covers indexes {}..={} but {} ended at {}",
                        body.first_index,
                        body.last_index,
                        manifest_name(before.body.seq),
                        before.body.last_index
                    )));
                }
            }
        }
        chain.push(manifest);
    }
    Ok(chain)
}

/// What [`prune`] removed (or, in a dry run, would remove).
#[derive(Debug, Default, serde::Serialize)]
pub struct Pruned {
    /// Manifests removed.
    pub manifests: u64,
    /// Objects removed (those manifests' and unreferenced ones before them).
    pub objects: u64,
    /// Their bytes.
    pub bytes: u64,
    /// The manifest the backup now starts at (a snapshot), if anything was removed.
    pub starts_at: Option<String>,
    /// Twins' heartbeats removed (all from before the cut-off but each twin's newest).
    pub twin_reports: u64,
}

/// Removes what a restore to any time from `keep_after_ms` on does not need: everything before
/// the last snapshot shipped at or before that time. The chain is checked whole first, so a
/// damaged backup is not pruned. With `dry_run`, removes nothing and says what it would.
pub async fn prune(
    location: &Location,
    keep_after_ms: u64,
    dry_run: bool,
) -> Result<Pruned, BackupError> {
    let chain = read(location, None).await?;
    let mut pruned = Pruned {
        twin_reports: crate::heartbeat::prune(location, keep_after_ms, dry_run).await?,
        ..Pruned::default()
    };
    let Some(cut) = chain
        .iter()
        .rposition(|m| m.body.kind == Kind::Snapshot && m.body.last_ms <= keep_after_ms)
    else {
        return Ok(pruned);
    };
    let first_kept = chain[cut].body.seq;
    if cut == 0 {
        return Ok(pruned);
    }
    pruned.starts_at = Some(manifest_name(first_kept));
    // Objects first would leave manifests naming missing objects if interrupted; manifests first
    // (oldest first) leaves the chain starting later, at worst with orphan objects.
    for manifest in &chain[..cut] {
        if !dry_run {
            location.delete(&manifest_name(manifest.body.seq)).await?;
        }
        pruned.manifests += 1;
    }
    let kept_object = |name: &str| {
        name.strip_prefix("objects/")
            .and_then(|n| n.split('.').next())
            .and_then(|n| n.parse::<u64>().ok())
            .is_some_and(|seq| seq >= first_kept)
    };
    for (name, size) in location.list("objects").await? {
        if kept_object(&name) {
            continue;
        }
        if !dry_run {
            location.delete(&name).await?;
        }
        pruned.objects += 1;
        pruned.bytes += size;
    }
    Ok(pruned)
}
