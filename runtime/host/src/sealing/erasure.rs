//! Crypto-erasure on every host: when a service's data key leaves the keyring (applied here
//! like any entry), this host stops using the key at once, compacts its log, so the ciphertext of that service's writes goes
//! from the log file as well (it was unreadable from the moment the key was gone), and forgets
//! the service's log lines, which its guests may have filled with the same data.

use std::collections::BTreeSet;
use std::sync::Arc;

use doppel_replication::ReplicatedStore;
use doppel_store::Space;

use super::store::{KEYRING, SealedStore};
use crate::services::Registry;

fn names(store: &ReplicatedStore) -> BTreeSet<Vec<u8>> {
    store
        .scan_local(&Space::system(KEYRING))
        .map(|rows| rows.into_iter().map(|(k, _)| k).collect())
        .unwrap_or_default()
}

/// Watches this host's keyring and compacts the log after each destroyed key.
pub fn follow(
    store: Arc<ReplicatedStore>,
    sealed: Arc<SealedStore>,
    registry: Arc<Registry>,
) -> tokio::task::JoinHandle<()> {
    let mut changes = store.system_changes();
    tokio::spawn(async move {
        let mut known = names(&store);
        while changes.changed().await.is_ok() {
            let now = names(&store);
            let destroyed: Vec<String> = known
                .difference(&now)
                .map(|k| String::from_utf8_lossy(k).into_owned())
                .collect();
            known = now;
            if destroyed.is_empty() {
                continue;
            }
            for name in &destroyed {
                sealed.forget(name);
                registry.forget_log(name);
            }
            match store.compact().await {
                Ok(start) => {
                    tracing::info!(services = ?destroyed, log_starts_after = start, "data keys destroyed; log compacted")
                }
                Err(e) => {
                    tracing::warn!(services = ?destroyed, error = %e, "data keys destroyed; compacting the log failed (the data is unreadable anyway)")
                }
            }
        }
    })
}
