//! The cluster key a target carries (`keys/cluster`): services' data keys travel in the shipped
//! log wrapped under it, so a restore or a twin needs it. Sealed to the operator's recipient like
//! every object (the cluster can write it, not read it back), written once per target.

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::BackupError;
use crate::format::{seal, unseal};
use crate::keys::{Identity, Recipient};
use crate::location::Location;

/// Where a target keeps it.
pub const OBJECT: &str = "keys/cluster";

#[derive(Serialize, Deserialize)]
struct Carried {
    key: Vec<u8>,
}

/// Puts `key` in the target, unless it holds one already (it is never replaced).
pub async fn keep(
    location: &Location,
    recipient: &Recipient,
    key: &[u8],
) -> Result<(), BackupError> {
    let sealed = seal(&Carried { key: key.to_vec() }, recipient)?;
    match location.create(OBJECT, sealed).await {
        Ok(()) | Err(BackupError::Exists(_)) => Ok(()),
        Err(e) => Err(e),
    }
}

/// The key the target carries, opened with `identity`; `None` if it carries none (a backup made
/// before encryption at rest).
pub async fn read(
    location: &Location,
    identity: &Identity,
) -> Result<Option<Zeroizing<Vec<u8>>>, BackupError> {
    let bytes = match location.get(OBJECT).await {
        Ok(bytes) => bytes,
        Err(BackupError::NotFound(_)) => return Ok(None),
        Err(e) => return Err(e),
    };
    let carried: Carried = unseal(&bytes, identity, OBJECT)?;
    Ok(Some(Zeroizing::new(carried.key)))
}
