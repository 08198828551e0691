//! Named operator credentials with roles, kept in the replicated store (system table `tokens`,
//! one record per name) with only a hash of their secret. A credential is
//! `doppel-token-v1:NAME:SECRET`; the name says whose it is (the actor of every event and audit
//! entry), the role what it may do:
//! - `viewer` reads the cluster, services, logs, events and the audit trail;
//! - `operator` also deploys, removes, migrates, drains, and reads and writes services' stored
//!   records;
//! - `admin` also manages hosts (invitations, removal) and credentials.
//!
//! A credential is checked against this host's applied state, without asking the leader, so that
//! an operator can still look at a cluster that has lost its majority; a revocation counts on a
//! host from the moment it has applied it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use doppel_api::{Role, TokenInfo};
use doppel_replication::ReplicatedStore;
use doppel_store::{Command, Op, Outcome, Space, Store, StoreError};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

const TABLE: &str = "tokens";
const PREFIX: &str = "doppel-token-v1";

fn space() -> Space {
    Space::system(TABLE)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn hash(secret: &[u8]) -> String {
    hex::encode(Sha256::digest(secret))
}

/// A credential as the store keeps it.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Record {
    name: String,
    role: Role,
    /// SHA-256 of the secret, hex.
    hash: String,
    created_ms: u64,
    created_by: String,
    #[serde(default)]
    expires_ms: Option<u64>,
    #[serde(default)]
    revoked_ms: Option<u64>,
}

impl Record {
    fn info(&self) -> TokenInfo {
        TokenInfo {
            name: self.name.clone(),
            role: self.role,
            created_ms: self.created_ms,
            created_by: self.created_by.clone(),
            expires_ms: self.expires_ms,
            revoked_ms: self.revoked_ms,
        }
    }
}

/// Who is calling the admin API: the name and role of the credential it presented.
#[derive(Clone, Debug)]
pub struct Caller {
    /// The credential's name.
    pub name: String,
    /// What it may do.
    pub role: Role,
}

/// Why a credential operation failed.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The name is not a valid credential name.
    #[error("{0}")]
    BadName(String),
    /// A credential by that name exists.
    #[error("a credential named {0:?} exists already; revoke it first or choose another name")]
    Exists(String),
    /// No credential by that name.
    #[error("no credential named {0:?}")]
    NoSuch(String),
    /// The store could not answer.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A credential name: 1–63 of `a-z A-Z 0-9 . _ -`.
fn check_name(name: &str) -> Result<(), TokenError> {
    doppel_replication::check_label_part("a credential name", name)
        .map_err(|e| TokenError::BadName(e.to_string()))
}

/// Makes a credential `name` with `role`, good for `ttl` (for ever with `None`). Answers the
/// credential itself, which is never kept and cannot be shown again.
pub async fn create(
    store: &dyn Store,
    name: &str,
    role: Role,
    ttl: Option<Duration>,
    by: &str,
) -> Result<String, TokenError> {
    check_name(name)?;
    let mut raw = [0u8; 32];
    getrandom::fill(&mut raw)
        .map_err(|e| TokenError::Store(StoreError::Io(std::io::Error::other(e.to_string()))))?;
    let secret = hex::encode(raw);
    let now = now_ms();
    let record = Record {
        name: name.to_string(),
        role,
        hash: hash(secret.as_bytes()),
        created_ms: now,
        created_by: by.to_string(),
        expires_ms: ttl
            .map(|t| now.saturating_add(u64::try_from(t.as_millis()).unwrap_or(u64::MAX))),
        revoked_ms: None,
    };
    let swapped = store
        .apply(Command::new(Op::CompareAndSwap {
            space: space(),
            key: name.as_bytes().to_vec(),
            expected: None,
            value: serde_json::to_vec(&record).expect("a credential always encodes"),
        }))
        .await?;
    if matches!(swapped, Outcome::Conflict { .. }) {
        return Err(TokenError::Exists(name.to_string()));
    }
    Ok(format!("{PREFIX}:{name}:{secret}"))
}

/// Every credential (never a secret: the store has none).
pub async fn list(store: &dyn Store) -> Result<Vec<TokenInfo>, TokenError> {
    let mut out = Vec::new();
    for key in store.list_keys(&space(), None, 10_000).await? {
        if let Some(bytes) = store.get(&space(), &key).await?
            && let Ok(record) = serde_json::from_slice::<Record>(&bytes)
        {
            out.push(record.info());
        }
    }
    Ok(out)
}

/// Revokes credential `name`: refused by every host from the moment it applied this.
pub async fn revoke(store: &dyn Store, name: &str) -> Result<TokenInfo, TokenError> {
    let key = name.as_bytes().to_vec();
    let bytes = store
        .get(&space(), &key)
        .await?
        .ok_or_else(|| TokenError::NoSuch(name.to_string()))?;
    let mut record: Record = serde_json::from_slice(&bytes)
        .map_err(|e| TokenError::Store(StoreError::Corrupt(e.to_string())))?;
    record.revoked_ms.get_or_insert_with(now_ms);
    store
        .apply(Command::new(Op::Put {
            space: space(),
            key,
            value: serde_json::to_vec(&record).expect("a credential always encodes"),
        }))
        .await?;
    Ok(record.info())
}

/// Who `presented` (a credential) belongs to, by this host's applied state; why not, in words
/// that never repeat what was presented.
pub fn check(store: &ReplicatedStore, presented: &[u8]) -> Result<Caller, &'static str> {
    const WRONG: &str = "missing or wrong credential";
    let text = std::str::from_utf8(presented).map_err(|_| WRONG)?;
    let mut parts = text.split(':');
    let (Some(PREFIX), Some(name), Some(secret), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(WRONG);
    };
    let bytes = store
        .read_local(&space(), name.as_bytes())
        .ok()
        .flatten()
        .ok_or(WRONG)?;
    let record: Record = serde_json::from_slice(&bytes).map_err(|_| WRONG)?;
    if !doppel_api::auth::same(hash(secret.as_bytes()).as_bytes(), record.hash.as_bytes()) {
        return Err(WRONG);
    }
    if record.revoked_ms.is_some() {
        return Err("this credential was revoked");
    }
    if record.expires_ms.is_some_and(|at| now_ms() >= at) {
        return Err("this credential expired");
    }
    Ok(Caller {
        name: record.name,
        role: record.role,
    })
}

/// The credential in a data directory's `admin-token` file for the local CLI: made on a host's
/// first start (named `admin` on the host that creates the cluster, `admin-NAME` on one that
/// joins), kept while it is still good.
pub async fn ensure_local(
    store: &ReplicatedStore,
    path: &std::path::Path,
    name: &str,
) -> anyhow::Result<()> {
    use anyhow::Context as _;
    if let Ok(kept) = std::fs::read_to_string(path)
        && check(store, kept.trim().as_bytes()).is_ok()
    {
        return Ok(());
    }
    let mut name = name.to_string();
    let token = loop {
        match create(store, &name, Role::Admin, None, "the host's first start").await {
            Ok(token) => break token,
            // Left by an earlier start of a host of the same name whose file is gone.
            Err(TokenError::Exists(_)) => {
                name = format!("{name}-{}", &hash(&now_ms().to_le_bytes())[..6])
            }
            Err(e) => return Err(e).context("while making this host's local credential"),
        }
    };
    doppel_store::files::replace_private(path, token.as_bytes())
        .with_context(|| format!("while writing the local credential to {}", path.display()))?;
    tracing::info!(credential = %name, path = %path.display(), "made a local admin credential");
    Ok(())
}
