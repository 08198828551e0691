//! Durable key-value state for doppel.
//!
//! Everything a host keeps — service records, module bytes, and every bucket of every service —
//! lives behind the [`Store`] trait. Writes are [`Command`]s: deterministic operations that a
//! state machine applies in log order, so that a replicated store can later put the same commands
//! through consensus and apply them on every host.
//!
//! The [`Engine`] applies commands to sled deterministically; the host's store is
//! `doppel-replication`'s `ReplicatedStore`, which puts every command through raft and applies it
//! with this engine on every host. [`LocalStore`] (a group-committed write-ahead log in front of
//! the same engine, no raft) is what the host used before hosts formed clusters: kept as the
//! reference for the engine's raw write path (`benches/commit.rs`) and as a plain `Store` for
//! tests and tools. See `ARCHITECTURE.md` ("Durability") for why sled's own flush is not enough.
//! [`files`] writes the host's private files (credentials, identity).
//!
//! ```no_run
//! # async fn demo() -> Result<(), doppel_store::StoreError> {
//! use doppel_store::{Command, LocalStore, Op, Space, Store};
//! let store = LocalStore::open("/tmp/doppel-demo")?;
//! let space = Space::bucket("counter", "default");
//! store.apply(Command::new(Op::Put { space: space.clone(), key: b"k".to_vec(), value: b"v".to_vec() })).await?;
//! assert_eq!(store.get(&space, b"k").await?, Some(b"v".to_vec()));
//! # Ok(()) }
//! ```

pub mod chain;
mod command;
pub mod crash;
mod engine;
pub mod files;
mod local;
pub mod portable;
mod space;
mod wal;

pub use command::{ApplyError, Command, Op, Outcome, Writer};
pub use engine::{Engine, Pairs};
pub use local::LocalStore;
pub use space::{Space, fence_key, history_key};

use async_trait::async_trait;

/// What can go wrong talking to a store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The command was well-formed but the state machine refused it (quota, not a number…).
    /// Nothing was changed.
    #[error(transparent)]
    Rejected(#[from] ApplyError),
    /// The disk failed; the write may not have happened.
    #[error("storage I/O failed: {0}")]
    Io(#[from] std::io::Error),
    /// The embedded database failed.
    #[error("embedded database failed: {0}")]
    Db(#[from] sled::Error),
    /// Data on disk does not decode; the store refuses to guess.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// The store has been closed (the host is shutting down).
    #[error("the store is closed")]
    Closed,
    /// The store cannot reach agreement right now (no leader, no majority); nothing was
    /// acknowledged. Retrying later may succeed.
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    /// This cluster takes no writes of services' state now (a standby twin, or a primary
    /// superseded by a promoted twin); the reason says which. Nothing was changed.
    #[error("writes are refused here: {0}")]
    ReadOnly(String),
}

/// The key-value state of a cluster as services and the host's tables see it. Everything that
/// only reads and writes state (services, placements, the keyvalue interfaces) holds an
/// `Arc<dyn Store>`; only the parts that manage the cluster itself hold the replicated store.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// The value stored under `key` in `space`, reflecting every acknowledged write.
    async fn get(&self, space: &Space, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;

    /// Up to `limit` keys of `space` in byte order, starting after `after` when given.
    async fn list_keys(
        &self,
        space: &Space,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Vec<u8>>, StoreError>;

    /// The names of the buckets `service` has written to.
    async fn buckets(&self, service: &str) -> Result<Vec<String>, StoreError>;

    /// Bytes (keys plus values) that `service` stores across all its buckets.
    async fn usage(&self, service: &str) -> Result<u64, StoreError>;

    /// Applies one command; returns only once its effect is durable.
    async fn apply(&self, command: Command) -> Result<Outcome, StoreError>;
}
