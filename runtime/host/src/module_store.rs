//! Modules in the replicated store, in pieces a raft entry can carry.
//!
//! A module travels through the replicated log like any write, and raft gives an append one
//! heartbeat interval (40 ms at the default lease) to reach a follower and be written there. A
//! component of a few MiB — the shipped services are about 1.5 MiB with their token
//! verification — does not make it in time, least of all between providers, and the leader
//! then sends it again and again. So a module over [`PART`] bytes is stored as parts under
//! `DIGEST/part/NNNNNN`, each its own entry, and then a small manifest under `DIGEST` that names
//! them; readers put the parts together and check the whole against the digest. A module
//! that fits in one part is stored whole under its digest, as before.

use std::sync::Arc;

use doppel_store::{Command, Op, Space, Store, StoreError};
use serde::{Deserialize, Serialize};

/// The largest piece of a module one entry carries.
pub const PART: usize = 256 << 10;

/// What marks a manifest (a component starts with `\0asm`, never with this).
const MANIFEST: &[u8] = b"doppel-module-parts:";

#[derive(Serialize, Deserialize)]
struct Manifest {
    parts: u32,
    size: u64,
}

fn part_key(digest: &str, n: u32) -> Vec<u8> {
    format!("{digest}/part/{n:06}").into_bytes()
}

/// Whether `key` in the modules space belongs to the module `digest` (its manifest, its whole
/// bytes, or one of its parts).
pub fn belongs_to(key: &[u8], digest: &str) -> bool {
    key == digest.as_bytes()
        || key
            .strip_prefix(digest.as_bytes())
            .is_some_and(|rest| rest.starts_with(b"/part/"))
}

/// Stores `bytes` as the module `digest`: in parts, each its own entry, then the manifest.
pub async fn put(store: &Arc<dyn Store>, digest: &str, bytes: Vec<u8>) -> Result<(), StoreError> {
    if bytes.len() <= PART {
        return store
            .apply(Command::new(Op::Put {
                space: Space::modules(),
                key: digest.as_bytes().to_vec(),
                value: bytes,
            }))
            .await
            .map(|_| ());
    }
    let mut parts = 0u32;
    for chunk in bytes.chunks(PART) {
        store
            .apply(Command::new(Op::Put {
                space: Space::modules(),
                key: part_key(digest, parts),
                value: chunk.to_vec(),
            }))
            .await?;
        parts += 1;
    }
    let mut manifest = MANIFEST.to_vec();
    manifest.extend(
        serde_json::to_vec(&Manifest {
            parts,
            size: bytes.len() as u64,
        })
        .expect("a manifest always encodes"),
    );
    store
        .apply(Command::new(Op::Put {
            space: Space::modules(),
            key: digest.as_bytes().to_vec(),
            value: manifest,
        }))
        .await
        .map(|_| ())
}

/// The module `digest`, put together and checked against its digest; `None` when there is no
/// such module (or only some of its parts, an upload cut short).
pub async fn get(store: &Arc<dyn Store>, digest: &str) -> Result<Option<Vec<u8>>, StoreError> {
    let Some(stored) = store.get(&Space::modules(), digest.as_bytes()).await? else {
        return Ok(None);
    };
    let Some(manifest) = stored.strip_prefix(MANIFEST) else {
        return check(digest, stored).map(Some);
    };
    let manifest: Manifest = serde_json::from_slice(manifest)
        .map_err(|e| StoreError::Corrupt(format!("the parts list of module {digest}: {e}")))?;
    let mut bytes = Vec::with_capacity(usize::try_from(manifest.size).unwrap_or(0));
    for n in 0..manifest.parts {
        let part = store
            .get(&Space::modules(), &part_key(digest, n))
            .await?
            .ok_or_else(|| {
                StoreError::Corrupt(format!("part {n} of module {digest} is missing"))
            })?;
        bytes.extend(part);
    }
    check(digest, bytes).map(Some)
}

/// `bytes` if they hash to `digest`: a module read from the store is the one that was uploaded
/// (and signed), or it is not used at all.
fn check(digest: &str, bytes: Vec<u8>) -> Result<Vec<u8>, StoreError> {
    if crate::modules::digest(&bytes) != digest {
        return Err(StoreError::Corrupt(format!(
            "the stored bytes of module {digest} do not match its digest"
        )));
    }
    Ok(bytes)
}

/// Removes the module `digest` and its parts.
pub async fn delete(store: &Arc<dyn Store>, digest: &str) -> Result<(), StoreError> {
    let mut keys = vec![digest.as_bytes().to_vec()];
    let prefix = format!("{digest}/part/").into_bytes();
    let mut after = Some(prefix.clone());
    loop {
        let listed = store
            .list_keys(&Space::modules(), after.as_deref(), 1000)
            .await?;
        let ours: Vec<Vec<u8>> = listed
            .iter()
            .take_while(|k| k.starts_with(&prefix))
            .cloned()
            .collect();
        let more = ours.len() == 1000;
        after = ours.last().cloned();
        keys.extend(ours);
        if !more {
            break;
        }
    }
    store
        .apply(Command::new(Op::DeleteMany {
            space: Space::modules(),
            keys,
        }))
        .await
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_modules_parts_belong_to_it_and_no_other() {
        let digest = "sha256:ab";
        assert!(belongs_to(b"sha256:ab", digest));
        assert!(belongs_to(&part_key(digest, 7), digest));
        assert!(!belongs_to(b"sha256:abc", digest));
        assert!(!belongs_to(&part_key("sha256:abc", 0), digest));
        assert!(!belongs_to(b"sha256:ab/other", digest));
    }

    #[tokio::test]
    async fn stored_modules_come_back_whole_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(doppel_store::LocalStore::open(dir.path()).unwrap());
        let bytes: Vec<u8> = (0..PART * 3 + 17).map(|i| (i % 251) as u8).collect();
        let digest = crate::modules::digest(&bytes);
        put(&store, &digest, bytes.clone()).await.unwrap();
        let keys = store.list_keys(&Space::modules(), None, 100).await.unwrap();
        assert_eq!(keys.len(), 5, "four parts and the manifest");
        assert_eq!(get(&store, &digest).await.unwrap(), Some(bytes));
        // A part altered in the store is caught by the digest.
        store
            .apply(Command::new(Op::Put {
                space: Space::modules(),
                key: part_key(&digest, 1),
                value: vec![0; PART],
            }))
            .await
            .unwrap();
        assert!(matches!(
            get(&store, &digest).await,
            Err(StoreError::Corrupt(_))
        ));
        delete(&store, &digest).await.unwrap();
        // So is a module stored whole.
        let small = b"\0asm small".to_vec();
        let small_digest = crate::modules::digest(&small);
        put(&store, &small_digest, small.clone()).await.unwrap();
        assert_eq!(get(&store, &small_digest).await.unwrap(), Some(small));
        put(&store, &small_digest, b"\0asm other".to_vec())
            .await
            .unwrap();
        assert!(matches!(
            get(&store, &small_digest).await,
            Err(StoreError::Corrupt(_))
        ));
        delete(&store, &small_digest).await.unwrap();
        assert!(
            store
                .list_keys(&Space::modules(), None, 100)
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(get(&store, &digest).await.unwrap(), None);
    }
}
