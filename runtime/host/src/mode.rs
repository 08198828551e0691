//! Whether this cluster takes writes of services' state: not while it is a standby twin, and
//! not once a promoted twin has superseded it (`doppel_backup::twin`). Every host follows the
//! twin records in its own copy of the store; services' writes go through [`GuardedStore`],
//! which refuses them with the reason, and the ingress marks a standby's answers with their lag.

use std::sync::Arc;

use async_trait::async_trait;
use doppel_replication::ReplicatedStore;
use doppel_store::{Command, Outcome, Space, Store, StoreError};
use tokio::sync::watch;

/// This cluster's mode, as of the last change applied here.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Mode {
    /// Why writes of services' state are refused, when they are.
    pub refusal: Option<String>,
    /// For a standby: when its state was last known current (ms since the epoch).
    pub current_as_of: Option<u64>,
}

impl Mode {
    fn of(store: &ReplicatedStore) -> Mode {
        Mode {
            refusal: doppel_backup::twin::refusal(store),
            current_as_of: doppel_backup::twin::current_as_of(store),
        }
    }
}

/// Follows the mode: read now, and again whenever a change to the host's tables is applied.
pub fn follow(store: Arc<ReplicatedStore>) -> (watch::Receiver<Mode>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = watch::channel(Mode::of(&store));
    let mut changes = store.system_changes();
    let task = tokio::spawn(async move {
        while changes.changed().await.is_ok() {
            tx.send_if_modified(|mode| {
                let now = Mode::of(&store);
                let changed = *mode != now;
                *mode = now;
                changed
            });
        }
    });
    (rx, task)
}

/// The store services and deploys write through: refuses a write of services' state while the
/// mode says so.
pub struct GuardedStore {
    inner: Arc<dyn Store>,
    mode: watch::Receiver<Mode>,
}

impl GuardedStore {
    /// Guards `inner` by `mode`.
    pub fn new(inner: Arc<dyn Store>, mode: watch::Receiver<Mode>) -> GuardedStore {
        GuardedStore { inner, mode }
    }
}

#[async_trait]
impl Store for GuardedStore {
    async fn get(&self, space: &Space, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.get(space, key).await
    }

    async fn list_keys(
        &self,
        space: &Space,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        self.inner.list_keys(space, after, limit).await
    }

    async fn buckets(&self, service: &str) -> Result<Vec<String>, StoreError> {
        self.inner.buckets(service).await
    }

    async fn usage(&self, service: &str) -> Result<u64, StoreError> {
        self.inner.usage(service).await
    }

    async fn apply(&self, command: Command) -> Result<Outcome, StoreError> {
        let refusal = self.mode.borrow().refusal.clone();
        if let Some(why) = refusal
            && doppel_backup::twin::changes_services(&command)
        {
            return Err(StoreError::ReadOnly(why));
        }
        self.inner.apply(command).await
    }
}
