//! The backup targets a cluster ships to, kept in the replicated store (system table `backups`,
//! one JSON record per name) so that whichever host leads ships to all of them; and the
//! cluster's manifest-signing key, kept in the same table under a name no target can have.

use doppel_api::BackupTarget;
use doppel_replication::ReplicatedStore;
use doppel_store::{Command, Op, Outcome, Space, Store};

use crate::BackupError;
use crate::keys::{Recipient, Signer};
use crate::location::check_url;

const TABLE: &str = "backups";
/// Not a valid target name (names are checked by `doppel_api::check_service_name`).
const SIGNING_KEY: &[u8] = b"~signing-key";

fn space() -> Space {
    Space::system(TABLE)
}

/// Checks a target before it is stored: its name, URL and recipient.
pub fn check(target: &BackupTarget) -> Result<(), BackupError> {
    doppel_api::check_service_name(&target.name)
        .map_err(|e| BackupError::BadLocation(format!("target name: {e}")))?;
    let url = check_url(&target.url)?;
    Recipient::parse(&target.recipient)?;
    if target.retain_ms.is_some() && url.scheme() != "s3" {
        return Err(BackupError::BadLocation(format!(
            "{} cannot lock objects: --retain needs an s3:// target whose bucket has Object \
             Lock enabled",
            target.url
        )));
    }
    Ok(())
}

/// Stores `target`; refuses a name that is taken.
pub async fn add(store: &ReplicatedStore, target: &BackupTarget) -> Result<(), BackupError> {
    check(target)?;
    let value = serde_json::to_vec(target).expect("a target always encodes");
    let outcome = store
        .apply(Command::new(Op::CompareAndSwap {
            space: space(),
            key: target.name.as_bytes().to_vec(),
            expected: None,
            value,
        }))
        .await?;
    match outcome {
        Outcome::Conflict { .. } => Err(BackupError::Exists(format!(
            "a backup target called {:?}",
            target.name
        ))),
        _ => Ok(()),
    }
}

/// Removes the target `name` (shipping to it stops; nothing there is deleted). The removed
/// target, or `None` if there was none.
pub async fn remove(
    store: &ReplicatedStore,
    name: &str,
) -> Result<Option<BackupTarget>, BackupError> {
    let Some(bytes) = store.get(&space(), name.as_bytes()).await? else {
        return Ok(None);
    };
    store
        .apply(Command::new(Op::Delete {
            space: space(),
            key: name.as_bytes().to_vec(),
        }))
        .await?;
    Ok(serde_json::from_slice(&bytes).ok())
}

fn decode(rows: Vec<(Vec<u8>, Vec<u8>)>) -> Vec<BackupTarget> {
    rows.into_iter()
        .filter(|(k, _)| k != SIGNING_KEY)
        .filter_map(|(_, v)| serde_json::from_slice(&v).ok())
        .collect()
}

/// Every target (linearizable).
pub async fn list(store: &ReplicatedStore) -> Result<Vec<BackupTarget>, BackupError> {
    let mut rows = Vec::new();
    let mut after: Option<Vec<u8>> = None;
    loop {
        let keys = store.list_keys(&space(), after.as_deref(), 1000).await?;
        let Some(last) = keys.last().cloned() else {
            break;
        };
        for key in keys {
            if let Some(value) = store.get(&space(), &key).await? {
                rows.push((key, value));
            }
        }
        after = Some(last);
    }
    Ok(decode(rows))
}

/// Every target as this host has applied it (for the leader's shipper, which applied everything
/// committed).
pub fn list_local(store: &ReplicatedStore) -> Result<Vec<BackupTarget>, BackupError> {
    Ok(decode(store.scan_local(&space())?))
}

/// The cluster's signing key, made (once, whoever gets there first) when it is first needed.
pub async fn signing_key(store: &ReplicatedStore) -> Result<Signer, BackupError> {
    if let Some(pkcs8) = store.read_local(&space(), SIGNING_KEY)? {
        return Signer::from_pkcs8(&pkcs8);
    }
    let fresh = Signer::generate()?;
    let outcome = store
        .apply(Command::new(Op::CompareAndSwap {
            space: space(),
            key: SIGNING_KEY.to_vec(),
            expected: None,
            value: fresh.clone(),
        }))
        .await?;
    match outcome {
        Outcome::Conflict {
            current: Some(theirs),
        } => Signer::from_pkcs8(&theirs),
        _ => Signer::from_pkcs8(&fresh),
    }
}
