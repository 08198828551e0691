//! [`SealedStore`]: the [`Store`] services' state is written through, sealing each service's keys
//! and values under that service's own data key before they reach raft, and opening them on the
//! way back. The data keys live in the system table `keyring`, wrapped under the cluster key.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use async_trait::async_trait;
use doppel_store::{ApplyError, Command, Op, Outcome, Space, Store, StoreError};

use super::cipher::{
    ServiceCipher, Unopenable, new_service_key, open_cluster_secret, seal_cluster_secret,
    unwrap_foreign_root, unwrap_service_key, wrap_foreign_root,
};
use super::root::ClusterKey;

/// The system table of services' data keys, each wrapped under the cluster key.
pub const KEYRING: &str = "keyring";
/// The system table of other clusters' keys this cluster opens data keys with (a twin's
/// primary's), each wrapped under this cluster's key. Not carried or followed.
pub const KEYROOTS: &str = "keyroots";
/// The system table holding one key wrapped like a service's, which only the cluster key opens:
/// how a host holding another cluster key is told apart, before it writes anything. Not
/// carried by restores or followed by twins (each cluster has its own; the keyring's entries
/// are checked too).
const KEYCHECK: &str = "keycheck";

/// How many times an `increment` reads and compare-and-swaps before it gives up on a key that
/// every attempt finds changed.
const INCREMENT_ATTEMPTS: usize = 1000;

fn keyring() -> Space {
    Space::system(KEYRING)
}

/// Seals services' buckets (keys and values) on the way in and opens them on the way out;
/// system tables pass through unchanged.
pub struct SealedStore {
    inner: Arc<dyn Store>,
    /// The cluster key, once this host has it (it may have to ask a member for it first).
    root: OnceLock<Arc<ClusterKey>>,
    /// Data keys already unwrapped, and how many keys have been forgotten so far: a key read
    /// from the keyring before a [`SealedStore::forget`] is not remembered after it.
    ciphers: Mutex<(u64, HashMap<String, Arc<ServiceCipher>>)>,
}

impl SealedStore {
    /// Seals what services write to `inner` under keys wrapped with the cluster key, which
    /// [`SealedStore::set_cluster_key`] gives it.
    pub fn new(inner: Arc<dyn Store>) -> SealedStore {
        SealedStore {
            inner,
            root: OnceLock::new(),
            ciphers: Mutex::new((0, HashMap::new())),
        }
    }

    /// Stops using `service`'s data key: it left the keyring (an erasure, applied here through
    /// the log; `erasure::follow` calls this on every host).
    pub fn forget(&self, service: &str) {
        let mut cache = self.ciphers.lock().expect("cipher cache");
        cache.0 += 1;
        cache.1.remove(service);
    }

    /// Gives the store the cluster key (once; later calls change nothing).
    pub fn set_cluster_key(&self, key: Arc<ClusterKey>) {
        let _ = self.root.set(key);
    }

    /// The cluster key, for handing to a joining member.
    pub fn cluster_key(&self) -> Option<Arc<ClusterKey>> {
        self.root.get().cloned()
    }

    fn root(&self) -> Result<&ClusterKey, StoreError> {
        self.root
            .get()
            .map(|k| k.as_ref())
            .ok_or_else(|| StoreError::Unavailable("this host has no cluster key yet".into()))
    }

    /// Records `foreign` (another cluster's key, e.g. a twin's primary's, named `name`) so that
    /// data keys wrapped under it open here too.
    pub async fn adopt_foreign_root(
        &self,
        name: &str,
        foreign: &ClusterKey,
    ) -> Result<(), StoreError> {
        let wrapped = wrap_foreign_root(self.root()?, name, foreign);
        self.inner
            .apply(Command::new(Op::Put {
                space: Space::system(KEYROOTS),
                key: name.as_bytes().to_vec(),
                value: wrapped,
            }))
            .await?;
        Ok(())
    }

    /// Opens `service`'s wrapped data key with the cluster key, or with one of the foreign keys
    /// the cluster recorded.
    async fn open_service_key(
        &self,
        service: &str,
        wrapped: &[u8],
    ) -> Result<ServiceCipher, StoreError> {
        let root = self.root()?;
        if let Ok(cipher) = unwrap_service_key(root, service, wrapped) {
            return Ok(cipher);
        }
        let roots = Space::system(KEYROOTS);
        for name in self.inner.list_keys(&roots, None, 100).await? {
            let Some(entry) = self.inner.get(&roots, &name).await? else {
                continue;
            };
            let name = String::from_utf8_lossy(&name);
            if let Ok(foreign) = unwrap_foreign_root(root, &name, &entry)
                && let Ok(cipher) = unwrap_service_key(&foreign, service, wrapped)
            {
                return Ok(cipher);
            }
        }
        Err(StoreError::Corrupt(format!(
            "the data key of service {service:?} opens with none of this cluster's keys"
        )))
    }

    /// Checks that this host's cluster key is the cluster's (or, for a new cluster, marks it
    /// so): a host holding another refuses to run rather than write data no other host can read.
    pub async fn check_cluster_key(&self) -> Result<(), StoreError> {
        let wrong = || {
            StoreError::Corrupt(
                "this host's cluster key is not the cluster's: the cluster's data keys do not \
                 open with it"
                    .into(),
            )
        };
        let root = self.root()?;
        // A restored keyring was wrapped elsewhere: one of its keys must open too.
        if let Some(service) = self.inner.list_keys(&keyring(), None, 1).await?.pop() {
            let wrapped = self
                .inner
                .get(&keyring(), &service)
                .await?
                .unwrap_or_default();
            let name = String::from_utf8_lossy(&service);
            self.open_service_key(&name, &wrapped)
                .await
                .map_err(|_| wrong())?;
        }
        let space = Space::system(KEYCHECK);
        let current = match self.inner.get(&space, b"").await? {
            Some(current) => current,
            None => {
                let (_, wrapped) = new_service_key(root, "");
                self.put_if_absent(space, b"", wrapped).await?.1
            }
        };
        unwrap_service_key(root, "", &current)
            .map(|_| ())
            .map_err(|_| wrong())
    }

    /// A stand-in for `key` of `service`'s `bucket` that the audit trail can keep: the same for
    /// the same key (so entries about one record can be linked), derived from the service's data
    /// key (so it says nothing of the key, and nothing at all once the key is destroyed).
    pub async fn pseudonym(&self, service: &str, bucket: &str, key: &[u8]) -> String {
        match self.cipher(service, false).await {
            Ok(Some(cipher)) => {
                let sealed = cipher.seal_key(bucket, key);
                format!("key-{}", hex::encode(&sealed[..12]))
            }
            _ => "key-(none stored)".to_string(),
        }
    }

    /// Destroys `service`'s data key on every host (through the log): from the moment it is
    /// applied, what the service stored opens nowhere.
    async fn destroy_key(&self, service: &str) -> Result<(), StoreError> {
        self.inner
            .apply(Command::new(Op::Delete {
                space: keyring(),
                key: service.as_bytes().to_vec(),
            }))
            .await?;
        self.forget(service);
        Ok(())
    }

    /// `service`'s data key: from memory, from the keyring, or — when `create` and there is
    /// none — a new one, put in the keyring by compare-and-swap so that two hosts creating one
    /// at once agree on the winner's.
    async fn cipher(
        &self,
        service: &str,
        create: bool,
    ) -> Result<Option<Arc<ServiceCipher>>, StoreError> {
        let now = {
            let cache = self.ciphers.lock().expect("cipher cache");
            if let Some(cipher) = cache.1.get(service) {
                return Ok(Some(cipher.clone()));
            }
            cache.0
        };
        let space = keyring();
        let wrapped = match self.inner.get(&space, service.as_bytes()).await? {
            Some(wrapped) => wrapped,
            None if !create => return Ok(None),
            None => {
                let (cipher, wrapped) = new_service_key(self.root()?, service);
                match self
                    .put_if_absent(space, service.as_bytes(), wrapped)
                    .await?
                {
                    (true, _) => return Ok(Some(self.remember(service, now, cipher))),
                    (false, theirs) => theirs,
                }
            }
        };
        let cipher = self.open_service_key(service, &wrapped).await?;
        Ok(Some(self.remember(service, now, cipher)))
    }

    /// Puts `value` at `key` unless something is there: whether ours went in, and what is there
    /// now (so that of two hosts creating a key at once, both use the winner's).
    async fn put_if_absent(
        &self,
        space: Space,
        key: &[u8],
        value: Vec<u8>,
    ) -> Result<(bool, Vec<u8>), StoreError> {
        let swap = Op::CompareAndSwap {
            space,
            key: key.to_vec(),
            expected: None,
            value: value.clone(),
        };
        Ok(match self.inner.apply(Command::new(swap)).await? {
            Outcome::Conflict {
                current: Some(theirs),
            } => (false, theirs),
            _ => (true, value),
        })
    }

    fn remember(&self, service: &str, seen: u64, cipher: ServiceCipher) -> Arc<ServiceCipher> {
        let cipher = Arc::new(cipher);
        let mut cache = self.ciphers.lock().expect("cipher cache");
        if cache.0 == seen {
            cache.1.insert(service.to_string(), cipher.clone());
        }
        cipher
    }

    /// The stored (sealed) value of `key` in `space`, and that value opened.
    async fn read_sealed(
        &self,
        cipher: &ServiceCipher,
        space: &Space,
        at: &[u8],
    ) -> Result<Option<(Vec<u8>, Vec<u8>)>, StoreError> {
        let Some(sealed) = self.inner.get(space, at).await? else {
            return Ok(None);
        };
        let open = cipher
            .open_value(&space.bucket, at, &sealed)
            .map_err(|e| corrupt(space, e))?;
        Ok(Some((sealed, open)))
    }

    /// A compare-and-swap on the plaintext the caller read: compared here, then swapped against
    /// the sealed value actually stored (so a write in between still makes it a conflict).
    async fn compare_and_swap(
        &self,
        cipher: &ServiceCipher,
        command: &Command,
        space: &Space,
        key: &[u8],
        expected: Option<Vec<u8>>,
        value: &[u8],
    ) -> Result<Outcome, StoreError> {
        let at = cipher.seal_key(&space.bucket, key);
        loop {
            let stored = self.read_sealed(cipher, space, &at).await?;
            let (stored_sealed, stored_open) = stored.unzip();
            if stored_open != expected {
                return Ok(Outcome::Conflict {
                    current: stored_open,
                });
            }
            let swap = Op::CompareAndSwap {
                space: space.clone(),
                key: at.clone(),
                expected: stored_sealed,
                value: cipher.seal_value(&space.bucket, &at, value),
            };
            match self.inner.apply(with_op(command, swap)).await? {
                // Changed between the read and the swap: decide again on what it holds now.
                Outcome::Conflict { .. } => continue,
                outcome => return Ok(outcome),
            }
        }
    }

    /// A counter's increment, as the engine would do it (missing is 0, decimal text), by
    /// compare-and-swap on the sealed value: the engine cannot add to what it cannot read.
    async fn increment(
        &self,
        cipher: &ServiceCipher,
        command: &Command,
        space: &Space,
        key: &[u8],
        delta: i64,
    ) -> Result<Outcome, StoreError> {
        let at = cipher.seal_key(&space.bucket, key);
        for _ in 0..INCREMENT_ATTEMPTS {
            let stored = self.read_sealed(cipher, space, &at).await?;
            let current = match &stored {
                None => 0,
                Some((_, open)) => std::str::from_utf8(open)
                    .ok()
                    .and_then(|s| s.trim().parse::<i64>().ok())
                    .ok_or(ApplyError::NotACounter)?,
            };
            let next = current.checked_add(delta).ok_or(ApplyError::Overflow)?;
            let swap = Op::CompareAndSwap {
                space: space.clone(),
                key: at.clone(),
                expected: stored.map(|(sealed, _)| sealed),
                value: cipher.seal_value(&space.bucket, &at, next.to_string().as_bytes()),
            };
            match self.inner.apply(with_op(command, swap)).await? {
                Outcome::Conflict { .. } => continue,
                _ => return Ok(Outcome::Counter(next)),
            }
        }
        Err(StoreError::Unavailable(format!(
            "the counter changed under each of {INCREMENT_ATTEMPTS} attempts to increment it"
        )))
    }
}

fn corrupt(space: &Space, e: Unopenable) -> StoreError {
    StoreError::Corrupt(format!(
        "a stored record of service {:?} (bucket {:?}) {e}; it is not served",
        space.service, space.bucket
    ))
}

/// `command`'s quota and writer, with another op.
fn with_op(command: &Command, op: Op) -> Command {
    Command {
        op,
        quota: command.quota,
        writer: command.writer,
    }
}

// What the cluster keeps of its own secrets in its tables (a twin's identity) is sealed under
// the cluster key like the services' data keys.
impl doppel_backup::twin::SecretBox for SealedStore {
    fn seal(&self, what: &str, secret: &[u8]) -> Result<Vec<u8>, doppel_backup::BackupError> {
        let root = self.root().map_err(doppel_backup::BackupError::Store)?;
        Ok(seal_cluster_secret(root, what, secret))
    }

    fn open(
        &self,
        what: &str,
        sealed: &[u8],
    ) -> Result<zeroize::Zeroizing<Vec<u8>>, doppel_backup::BackupError> {
        let root = self.root().map_err(doppel_backup::BackupError::Store)?;
        open_cluster_secret(root, what, sealed)
            .map_err(|e| doppel_backup::BackupError::Crypto(format!("the cluster's {what} {e}")))
    }
}

#[async_trait]
impl Store for SealedStore {
    async fn get(&self, space: &Space, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        if space.is_system() {
            return self.inner.get(space, key).await;
        }
        let Some(cipher) = self.cipher(&space.service, false).await? else {
            return Ok(None);
        };
        let at = cipher.seal_key(&space.bucket, key);
        Ok(self
            .read_sealed(&cipher, space, &at)
            .await?
            .map(|(_, open)| open))
    }

    async fn list_keys(
        &self,
        space: &Space,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        if space.is_system() {
            return self.inner.list_keys(space, after, limit).await;
        }
        let Some(cipher) = self.cipher(&space.service, false).await? else {
            return Ok(Vec::new());
        };
        // Pages follow the order of the sealed keys; a cursor (the last key of a page) seals to
        // the same stored key, so the next page starts right after it.
        let after = after.map(|key| cipher.seal_key(&space.bucket, key));
        self.inner
            .list_keys(space, after.as_deref(), limit)
            .await?
            .iter()
            .map(|sealed| {
                cipher
                    .open_key(&space.bucket, sealed)
                    .map_err(|e| corrupt(space, e))
            })
            .collect()
    }

    async fn buckets(&self, service: &str) -> Result<Vec<String>, StoreError> {
        self.inner.buckets(service).await
    }

    async fn usage(&self, service: &str) -> Result<u64, StoreError> {
        self.inner.usage(service).await
    }

    async fn apply(&self, command: Command) -> Result<Outcome, StoreError> {
        if let Op::PurgeService { service } = &command.op {
            // The key first: once it is gone, whatever of the service any log, snapshot or copy
            // still holds opens nowhere, even if the purge itself never happens.
            self.destroy_key(service).await?;
            return self.inner.apply(command).await;
        }
        let service = command.op.service().to_string();
        if service.is_empty() {
            return self.inner.apply(command).await;
        }
        let creates = matches!(
            command.op,
            Op::Put { .. } | Op::PutMany { .. } | Op::Increment { .. } | Op::CompareAndSwap { .. }
        );
        let Some(cipher) = self.cipher(&service, creates).await? else {
            // Nothing of the service is stored: a delete has nothing to do.
            return Ok(Outcome::Done);
        };
        let sealed = match &command.op {
            Op::Put { space, key, value } => {
                let at = cipher.seal_key(&space.bucket, key);
                Op::Put {
                    space: space.clone(),
                    value: cipher.seal_value(&space.bucket, &at, value),
                    key: at,
                }
            }
            Op::Delete { space, key } => Op::Delete {
                space: space.clone(),
                key: cipher.seal_key(&space.bucket, key),
            },
            Op::PutMany { space, pairs } => Op::PutMany {
                space: space.clone(),
                pairs: pairs
                    .iter()
                    .map(|(key, value)| {
                        let at = cipher.seal_key(&space.bucket, key);
                        let value = cipher.seal_value(&space.bucket, &at, value);
                        (at, value)
                    })
                    .collect(),
            },
            Op::DeleteMany { space, keys } => Op::DeleteMany {
                space: space.clone(),
                keys: keys
                    .iter()
                    .map(|key| cipher.seal_key(&space.bucket, key))
                    .collect(),
            },
            Op::Increment { space, key, delta } => {
                return self.increment(&cipher, &command, space, key, *delta).await;
            }
            Op::CompareAndSwap {
                space,
                key,
                expected,
                value,
            } => {
                return self
                    .compare_and_swap(&cipher, &command, space, key, expected.clone(), value)
                    .await;
            }
            // Only system tables hold chains and placements.
            Op::Chain { .. } | Op::Place { .. } | Op::PurgeService { .. } => {
                return self.inner.apply(command).await;
            }
        };
        self.inner.apply(with_op(&command, sealed)).await
    }
}
