//! The objects of a backup and the manifests that describe and chain them.
//!
//! A manifest is JSON: `{"body": "<the body's JSON, as a string>", "signature": "<hex>"}`. The
//! signature is over the body string's bytes exactly, so nothing depends on how JSON is
//! re-encoded. The body names its object, that object's SHA-256 (of the stored, encrypted
//! bytes), the raft indexes it covers and the SHA-256 of the previous manifest file.

use doppel_replication::Batch;
use doppel_store::Pairs;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::BackupError;
use crate::keys::{Recipient, Signer, verify};

/// The version of this layout, in every manifest.
pub const FORMAT: u32 = 1;

/// What a manifest's object holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// The whole applied state at `last_index` (an [`Image`]).
    Snapshot,
    /// Committed entries `first_index..=last_index` (a [`Segment`]).
    Segment,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Snapshot => "snapshot",
            Kind::Segment => "segment",
        }
    }
}

/// What a manifest says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestBody {
    /// [`FORMAT`].
    pub format: u32,
    /// Its number: 1, 2, 3… with no gaps.
    pub seq: u64,
    /// SHA-256 (hex) of manifest `seq - 1`'s file; empty for the first.
    pub prev: String,
    /// What the object holds.
    pub kind: Kind,
    /// The object's name below the target.
    pub object: String,
    /// SHA-256 (hex) of the object as stored.
    pub object_sha256: String,
    /// The object's size as stored.
    pub object_bytes: u64,
    /// The first raft index it covers (a snapshot: its index).
    pub first_index: u64,
    /// The last raft index it covers.
    pub last_index: u64,
    /// When the shipper saw its first and last entry committed (ms since the Unix epoch).
    pub first_ms: u64,
    /// See `first_ms`.
    pub last_ms: u64,
    /// The signing key's public half (hex).
    pub signer: String,
}

/// A manifest as stored.
#[derive(Serialize, Deserialize)]
struct SignedFile {
    body: String,
    signature: String,
}

/// A manifest read back and its signature checked.
#[derive(Clone, Debug)]
pub struct Manifest {
    /// What it says.
    pub body: ManifestBody,
    /// SHA-256 (hex) of its file, which the next manifest's `prev` must be.
    pub file_sha256: String,
}

/// The name of manifest `seq`.
pub fn manifest_name(seq: u64) -> String {
    format!("manifests/{seq:020}.json")
}

/// The number in a manifest's name.
pub fn manifest_seq(name: &str) -> Option<u64> {
    name.strip_prefix("manifests/")?
        .strip_suffix(".json")?
        .parse()
        .ok()
}

/// A fresh name for object `seq` of `kind`. The random part keeps two shippers that briefly both
/// think they lead from ever writing the same object; only one of their manifests can be created.
pub fn object_name(seq: u64, kind: Kind) -> String {
    let mut nonce = [0u8; 8];
    getrandom::fill(&mut nonce).expect("the system's random source works");
    format!("objects/{seq:020}.{}-{}", kind.name(), hex::encode(nonce))
}

/// SHA-256 of `bytes`, hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

impl ManifestBody {
    /// The manifest file: the body signed by `signer`.
    pub fn sign(&self, signer: &Signer) -> Vec<u8> {
        let body = serde_json::to_string(self).expect("a manifest always encodes");
        let signature = signer.sign(body.as_bytes());
        serde_json::to_vec_pretty(&SignedFile { body, signature })
            .expect("a manifest always encodes")
    }
}

impl Manifest {
    /// Reads the manifest file `name` and checks its signature against the key it names.
    pub fn parse(name: &str, bytes: &[u8]) -> Result<Manifest, BackupError> {
        let file: SignedFile = serde_json::from_slice(bytes)
            .map_err(|e| BackupError::Broken(format!("{name} is not a manifest: {e}")))?;
        let body: ManifestBody = serde_json::from_str(&file.body)
            .map_err(|e| BackupError::Broken(format!("{name} is not a manifest: {e}")))?;
        if body.format != FORMAT {
            return Err(BackupError::Broken(format!(
                "{name} is in format {} and this doppel reads format {FORMAT}",
                body.format
            )));
        }
        if !verify(&body.signer, file.body.as_bytes(), &file.signature) {
            return Err(BackupError::Broken(format!(
                "{name} was altered: its signature does not match what it says"
            )));
        }
        Ok(Manifest {
            body,
            file_sha256: sha256_hex(bytes),
        })
    }
}

/// A snapshot: every key and value of the applied state at `index`.
#[derive(Serialize, Deserialize)]
pub struct Image {
    /// The raft index it stands at.
    pub index: u64,
    /// The engine's export.
    pub pairs: Pairs,
}

/// One committed entry as shipped.
#[derive(Serialize, Deserialize)]
pub struct Shipped {
    /// Its raft index.
    pub index: u64,
    /// When the shipper saw it applied (ms since the Unix epoch): what `--at` compares.
    pub seen_ms: u64,
    /// Its commands (none for a raft blank or membership entry).
    pub commands: Batch,
}

impl Shipped {
    /// Checks that this entry, read from `object`, is the one due after index `after`: a
    /// segment holds its entries in order, without gaps.
    pub fn follows(&self, after: u64, object: &str) -> Result<(), BackupError> {
        if self.index == after + 1 {
            return Ok(());
        }
        Err(BackupError::Broken(format!(
            "{object} holds entry {} where {} was due",
            self.index,
            after + 1
        )))
    }
}

/// Consecutive committed entries.
#[derive(Serialize, Deserialize)]
pub struct Segment {
    /// In index order, without gaps.
    pub entries: Vec<Shipped>,
}

/// `value` as stored: postcard, lz4, then age to `recipient`.
pub fn seal<T: Serialize>(value: &T, recipient: &Recipient) -> Result<Vec<u8>, BackupError> {
    let plain =
        postcard::to_stdvec(value).map_err(|e| BackupError::Crypto(format!("encoding: {e}")))?;
    recipient.seal(&lz4_flex::compress_prepend_size(&plain))
}

/// What [`seal`] made, decrypted by `identity`; `what` names the object in errors.
pub fn unseal<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    identity: &crate::keys::Identity,
    what: &str,
) -> Result<T, BackupError> {
    let compressed = identity.open(bytes, what)?;
    let plain = lz4_flex::decompress_size_prepended(&compressed)
        .map_err(|e| BackupError::Broken(format!("{what} does not decompress: {e}")))?;
    postcard::from_bytes(&plain)
        .map_err(|e| BackupError::Broken(format!("{what} does not decode: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(signer: &Signer) -> ManifestBody {
        ManifestBody {
            format: FORMAT,
            seq: 1,
            prev: String::new(),
            kind: Kind::Snapshot,
            object: object_name(1, Kind::Snapshot),
            object_sha256: sha256_hex(b"x"),
            object_bytes: 1,
            first_index: 7,
            last_index: 7,
            first_ms: 1,
            last_ms: 1,
            signer: signer.public_hex(),
        }
    }

    #[test]
    fn a_signed_manifest_reads_back_and_an_altered_one_does_not() {
        let signer = Signer::from_pkcs8(&Signer::generate().unwrap()).unwrap();
        let body = body(&signer);
        let file = body.sign(&signer);
        let read = Manifest::parse("m", &file).unwrap();
        assert_eq!(read.body, body);
        let text = String::from_utf8(file).unwrap();
        let altered = text.replace("\\\"last_index\\\":7", "\\\"last_index\\\":8");
        assert_ne!(altered, text);
        let err = Manifest::parse("m", altered.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("m was altered"), "{err}");
    }

    #[test]
    fn names_sort_by_number() {
        assert!(manifest_name(9) < manifest_name(10));
        assert_eq!(manifest_seq(&manifest_name(42)), Some(42));
        assert_ne!(object_name(1, Kind::Segment), object_name(1, Kind::Segment));
    }
}
