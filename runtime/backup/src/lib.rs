//! The backup copy of a doppel cluster, kept outside it.
//!
//! The leader ships the committed raft log to every backup target it is given: first a full,
//! consistent snapshot of the applied state at a log index, then every committed entry in
//! segments at most about a second apart, and a new snapshot now and then ([`ship`]). Each object
//! is compressed and encrypted to the operator's age recipient ([`keys`]), so the cluster can
//! write its backups but never read them back; each is described by a manifest that names the
//! object's hash and the previous manifest's hash and is signed by the cluster's backup key
//! ([`format`]). The cluster only ever creates objects ([`location`]): it overwrites and deletes
//! nothing. A restore ([`restore`]) reads the manifests, checks the chain ([`chain`]) — a
//! missing, reordered or altered object is named — decrypts with the operator's identity and
//! replays the log up to the point asked for, into the data directory of a new one-host
//! cluster. The same takeover serves a lone survivor of a lost majority ([`recover`]): its own
//! state, not a backup's, seeds the new cluster. A standby twin cluster follows a target
//! continuously and takes over when promoted ([`twin`]); a newer generation in a target fences
//! the primary that ships to it.
//!
//! Layout of a target:
//!
//! ```text
//! manifests/00000000000000000001.json            signed, chained by the previous manifest's hash
//! objects/00000000000000000001.snapshot-NONCE    age(lz4(postcard(Image)))
//! objects/00000000000000000002.segment-NONCE     age(lz4(postcard(Segment)))
//! generations/00000000000000000002.json          a twin promoted (written by the twin)
//! twins/NAME/HOUR/MS.json                        a following twin's heartbeat (by the twin)
//! keys/cluster                                   age(lz4(postcard(the cluster key)))
//! ```

pub mod chain;
pub mod cluster_key;
pub mod format;
pub mod heartbeat;
pub mod keys;
pub mod location;
pub mod recover;
pub mod restore;
pub mod ship;
pub mod targets;
pub mod twin;

/// What can go wrong with a backup.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// A key file or recipient that does not parse.
    #[error("{0}")]
    BadKey(String),
    /// A target URL we cannot use.
    #[error("{0}")]
    BadLocation(String),
    /// The object store failed.
    #[error("object storage: {0}")]
    Storage(String),
    /// The object to create exists already (another shipper got there first).
    #[error("{0} exists already")]
    Exists(String),
    /// The backup is not whole or not genuine; the message names the object.
    #[error("{0}")]
    Broken(String),
    /// Nothing to restore from, or no point matching what was asked.
    #[error("{0}")]
    NotFound(String),
    /// Encryption or decryption failed (a wrong identity, most often).
    #[error("{0}")]
    Crypto(String),
    /// A local file.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The store being backed up or restored into.
    #[error("store: {0}")]
    Store(#[from] doppel_store::StoreError),
}

/// `ms` since the Unix epoch as RFC 3339 (UTC, milliseconds).
pub fn rfc3339(ms: u64) -> String {
    let nanos = i128::from(ms) * 1_000_000;
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("{ms} ms"))
}

/// Milliseconds since the Unix epoch now.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
