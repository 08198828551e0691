//! Commands: the deterministic operations every write is made of.
//!
//! A command's outcome depends only on the state it is applied to, never on time or on which host
//! applies it. That is what lets the write-ahead log replay it after a crash, and what will let a
//! replicated log apply it on every host with the same result.

use serde::{Deserialize, Serialize};

use crate::Space;

/// One write, with the limits it must respect.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Command {
    /// What to change.
    pub op: Op,
    /// The most bytes the owning service may store once the op is applied; `None` for no limit.
    /// Carried in the command (not looked up while applying) so that replay gives the same answer.
    pub quota: Option<u64>,
    /// Which host writes for the owning service, and the service's epoch as that host knew it
    /// when the request started: the command is refused if the service has since been taken away
    /// from that host (see [`Op::Place`]'s `deposed`). `None` for writes that are not a service's
    /// (operators, the host's own tables).
    pub writer: Option<Writer>,
}

/// A host writing on behalf of a service, at the epoch it knew.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Writer {
    /// The host (its raft id).
    pub host: u64,
    /// The service's epoch as the host knew it when the request started.
    pub epoch: u64,
}

impl Command {
    /// A command without a quota.
    pub fn new(op: Op) -> Self {
        Command {
            op,
            quota: None,
            writer: None,
        }
    }

    /// The same command, written by `host` for its service, which it knew at `epoch`.
    pub fn written_by(mut self, host: u64, epoch: u64) -> Self {
        self.writer = Some(Writer { host, epoch });
        self
    }

    /// The same command, limited to `quota` bytes for its service.
    pub fn with_quota(mut self, quota: u64) -> Self {
        self.quota = Some(quota);
        self
    }
}

/// A change to the store.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Op {
    /// Set `key` to `value`.
    Put {
        /// Where.
        space: Space,
        /// Which key.
        key: Vec<u8>,
        /// The new value.
        value: Vec<u8>,
    },
    /// Remove `key` (a missing key is not an error).
    Delete {
        /// Where.
        space: Space,
        /// Which key.
        key: Vec<u8>,
    },
    /// Add `delta` to the decimal counter at `key` (missing counts as 0).
    Increment {
        /// Where.
        space: Space,
        /// Which key.
        key: Vec<u8>,
        /// How much to add (may be negative).
        delta: i64,
    },
    /// Set `key` to `value` only if it currently holds `expected` (`None`: absent).
    CompareAndSwap {
        /// Where.
        space: Space,
        /// Which key.
        key: Vec<u8>,
        /// The value the caller read.
        expected: Option<Vec<u8>>,
        /// The value to write.
        value: Vec<u8>,
    },
    /// Set many keys of one space at once, all or none.
    PutMany {
        /// Where.
        space: Space,
        /// Keys and their new values.
        pairs: Vec<(Vec<u8>, Vec<u8>)>,
    },
    /// Remove many keys of one space at once.
    DeleteMany {
        /// Where.
        space: Space,
        /// Keys to remove.
        keys: Vec<Vec<u8>>,
    },
    /// Remove every bucket of a service.
    PurgeService {
        /// Whose data.
        service: String,
    },
    /// Append `entry` to the hash chain kept in `space` (a system table): it becomes entry
    /// `n + 1` after the chain's last entry `n`, stored with `SHA-256(hash of entry n || entry)`,
    /// so that changing or removing any entry breaks every hash after it. Computed by the state
    /// machine, so every host holds the same chain. Answers `Outcome::Counter(n + 1)`.
    Chain {
        /// Where the chain is kept.
        space: Space,
        /// What to append (opaque here).
        entry: Vec<u8>,
    },
    /// Move `service` to `epoch` (which must be exactly one past its current epoch, so that of
    /// two hosts deciding at once only one wins) and store its new `placement` record, atomically,
    /// also under the service's placement history. Writes by a `deposed` host carrying an epoch
    /// older than this one are refused from then on; hosts that stay active are not disturbed, so
    /// adding a host, or handing a service over after the old host finished its requests, fails
    /// no request.
    Place {
        /// Which service.
        service: String,
        /// Its new epoch.
        epoch: u64,
        /// The placement record (the host's JSON; opaque here).
        placement: Vec<u8>,
        /// Hosts whose writes for the service must stop (their raft ids).
        deposed: Vec<u64>,
    },
}

impl Op {
    /// The service whose quota this op counts against (`""` for system tables).
    pub fn service(&self) -> &str {
        match self {
            Op::Put { space, .. }
            | Op::Delete { space, .. }
            | Op::Increment { space, .. }
            | Op::CompareAndSwap { space, .. }
            | Op::PutMany { space, .. }
            | Op::DeleteMany { space, .. }
            | Op::Chain { space, .. } => &space.service,
            Op::PurgeService { service } => service,
            // Placement records live in the host's own tables.
            Op::Place { .. } => "",
        }
    }

    /// Roughly how many bytes of keys and values the op carries (for batching limits).
    pub fn payload_len(&self) -> usize {
        match self {
            Op::Put { key, value, .. } => key.len() + value.len(),
            Op::Delete { key, .. } | Op::Increment { key, .. } => key.len() + 8,
            Op::CompareAndSwap {
                key,
                expected,
                value,
                ..
            } => key.len() + expected.as_ref().map_or(0, Vec::len) + value.len(),
            Op::PutMany { pairs, .. } => pairs.iter().map(|(k, v)| k.len() + v.len()).sum(),
            Op::DeleteMany { keys, .. } => keys.iter().map(Vec::len).sum(),
            Op::PurgeService { service } => service.len(),
            Op::Chain { entry, .. } => entry.len() + 48,
            Op::Place { placement, .. } => placement.len(),
        }
    }

    /// Whether this op changes the host's own tables (services, modules, hosts).
    pub fn touches_system(&self) -> bool {
        self.service().is_empty()
    }
}

/// What an applied command returns.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// The write happened.
    Done,
    /// The counter's new value.
    Counter(i64),
    /// A compare-and-swap that did not happen: the key holds `current` instead.
    Conflict {
        /// The value the key holds now.
        current: Option<Vec<u8>>,
    },
}

/// Why the state machine refused a command. Deterministic: applying the same command to the same
/// state refuses it the same way. Nothing is changed by a refused command.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum ApplyError {
    /// The service would store more than its quota.
    #[error(
        "storage quota exceeded: the service would use {would_use} bytes, its quota is {quota}"
    )]
    QuotaExceeded {
        /// Bytes after the write.
        would_use: u64,
        /// The limit.
        quota: u64,
    },
    /// `increment` found a value that is not a decimal integer.
    #[error("the value at this key is not a decimal integer, so it cannot be incremented")]
    NotACounter,
    /// `increment` would leave the range of a signed 64-bit integer.
    #[error("incrementing would overflow a 64-bit integer")]
    Overflow,
    /// The writer was deposed for the service after its request started: another host is
    /// active now.
    #[error(
        "refused: this host was deposed for the service at epoch {deposed_at} (it wrote with epoch {writer})"
    )]
    Fenced {
        /// The writer's epoch.
        writer: u64,
        /// The epoch that deposed it.
        deposed_at: u64,
    },
    /// A placement change that did not start from the current epoch lost a race.
    #[error(
        "placement change refused: it was for epoch {proposed}, the service is at epoch {current}"
    )]
    StaleEpoch {
        /// The epoch proposed.
        proposed: u64,
        /// The service's epoch.
        current: u64,
    },
}
