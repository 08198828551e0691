//! Signed modules: which keys the cluster trusts to publish code, and the check every upload
//! and deploy passes before anything is compiled or stored.
//!
//! A signature is the WebAssembly tool-conventions format (`wasmsign2`): an Ed25519 signature
//! over the hash of every section, in a custom section at the front of the component. It covers
//! the whole component, including the `doppel-release` section in which `doppel sign --release`
//! records a version; so neither the code nor the version can be changed without a trusted key.
//!
//! The rules:
//! - a component that carries a signature must be signed by a key the cluster trusts, whether or
//!   not signatures are required: a signature nobody trusted can verify is a component altered
//!   after signing, or one from a publisher nobody vouched for, and either is refused;
//! - an unsigned component is refused when the cluster requires signatures (`doppel trust
//!   require on`, an admin's decision) or its service does (`doppel deploy --require-signatures`,
//!   which then stays set for the name);
//! - a signed release older than the one running is refused unless the deploy says
//!   `--allow-older`, which the audit trail records.
//!
//! The trusted keys live in the replicated store (system table `signers`, one record per name;
//! the requirement in `signing`), so every host applies the same policy. Removing a key stops
//! new deploys signed only by it; services already running keep running, and `doppel ls` shows
//! who signed each.

use doppel_api::signing::{RELEASE_SECTION, Release, SignerInfo};
use doppel_store::{Command, Op, Outcome, Space, Store, StoreError};

use crate::clock::now_ms;
use serde::{Deserialize, Serialize};
use wasmsign2::{PublicKey, PublicKeySet, Section, SectionLike, WSError};

const SIGNERS: &str = "signers";
const POLICY: &str = "signing";
const REQUIRED: &[u8] = b"required";

/// Why a component, a key or a trust change was refused. Every message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum SignatureError {
    /// Unsigned where signatures are required.
    #[error(
        "this component is not signed, and {0} requires signatures: sign it with `doppel sign FILE --key KEY` \
         using a key the cluster trusts (`doppel trust ls`)"
    )]
    Unsigned(String),
    /// Signed, but no trusted key verifies it.
    #[error(
        "this component's signature is not valid for any key this cluster trusts: it was altered after signing, \
         or signed by a key that is not (or no longer) trusted; see `doppel trust ls`"
    )]
    Untrusted,
    /// The signature section cannot be read.
    #[error(
        "this component's signature section cannot be read ({0}); sign it again with `doppel sign`"
    )]
    Malformed(String),
    /// The `doppel-release` section does not hold a version.
    #[error("this component's {RELEASE_SECTION} section is not a release version: {0}")]
    BadRelease(String),
    /// An older signed release than the one running.
    #[error(
        "release {new} is older than release {running}, which {service:?} runs now; deploy with --allow-older \
         to roll back on purpose (the audit trail records it)"
    )]
    Older {
        /// The service.
        service: String,
        /// The release offered.
        new: String,
        /// The release running.
        running: String,
    },
    /// A key could not be added or removed.
    #[error("{0}")]
    Key(String),
    /// A signer by that name exists.
    #[error("a key named {0:?} is trusted already; remove it first or choose another name")]
    Exists(String),
    /// No signer by that name.
    #[error("no trusted key is named {0:?}")]
    NoSuch(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What the signature check found in a signed component.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Signed {
    /// The names of the trusted keys whose signature verified, sorted.
    pub by: Vec<String>,
    /// The release version the component carries, if any.
    pub release: Option<String>,
}

/// A trusted key as the store keeps it.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Record {
    name: String,
    /// The Ed25519 public key, PEM.
    public_key: String,
    added_ms: u64,
    added_by: String,
}

impl Record {
    fn info(&self) -> SignerInfo {
        SignerInfo {
            name: self.name.clone(),
            fingerprint: PublicKey::from_pem(&self.public_key)
                .map_or_else(|_| "unreadable".to_string(), |k| fingerprint(&k)),
            added_ms: self.added_ms,
            added_by: self.added_by.clone(),
        }
    }
}

fn fingerprint(key: &PublicKey) -> String {
    doppel_api::signing::fingerprint(&key.to_bytes())
}

async fn records(store: &dyn Store) -> Result<Vec<Record>, StoreError> {
    let space = Space::system(SIGNERS);
    let mut out = Vec::new();
    for key in store.list_keys(&space, None, 10_000).await? {
        if let Some(bytes) = store.get(&space, &key).await? {
            out.push(
                serde_json::from_slice(&bytes)
                    .map_err(|e| StoreError::Corrupt(format!("trusted key record: {e}")))?,
            );
        }
    }
    Ok(out)
}

/// The trusted keys.
pub async fn signers(store: &dyn Store) -> Result<Vec<SignerInfo>, SignatureError> {
    Ok(records(store).await?.iter().map(Record::info).collect())
}

/// Trusts `public_key` (PEM, DER or raw Ed25519) under `name`.
pub async fn add(
    store: &dyn Store,
    name: &str,
    public_key: &str,
    by: &str,
) -> Result<SignerInfo, SignatureError> {
    doppel_replication::check_label_part("a key name", name)
        .map_err(|e| SignatureError::Key(e.to_string()))?;
    let key = PublicKey::from_any(public_key.trim().as_bytes()).map_err(|_| {
        SignatureError::Key(
            "that is not an Ed25519 public key; pass the NAME.pub file `doppel keygen NAME` wrote"
                .into(),
        )
    })?;
    let fingerprint = fingerprint(&key);
    if let Some(same) = records(store)
        .await?
        .iter()
        .find(|r| PublicKey::from_pem(&r.public_key).is_ok_and(|k| k.to_bytes() == key.to_bytes()))
    {
        return Err(SignatureError::Key(format!(
            "this key ({fingerprint}) is trusted already, as {:?}",
            same.name
        )));
    }
    let record = Record {
        name: name.to_string(),
        public_key: key.to_pem(),
        added_ms: now_ms(),
        added_by: by.to_string(),
    };
    let outcome = store
        .apply(Command::new(Op::CompareAndSwap {
            space: Space::system(SIGNERS),
            key: name.as_bytes().to_vec(),
            expected: None,
            value: serde_json::to_vec(&record).expect("a key record always encodes"),
        }))
        .await?;
    if matches!(outcome, Outcome::Conflict { .. }) {
        return Err(SignatureError::Exists(name.to_string()));
    }
    Ok(record.info())
}

/// Stops trusting the key `name`.
pub async fn remove(store: &dyn Store, name: &str) -> Result<SignerInfo, SignatureError> {
    let space = Space::system(SIGNERS);
    let bytes = store
        .get(&space, name.as_bytes())
        .await?
        .ok_or_else(|| SignatureError::NoSuch(name.to_string()))?;
    let record: Record = serde_json::from_slice(&bytes)
        .map_err(|e| StoreError::Corrupt(format!("trusted key record: {e}")))?;
    store
        .apply(Command::new(Op::Delete {
            space,
            key: name.as_bytes().to_vec(),
        }))
        .await?;
    Ok(record.info())
}

/// Whether the cluster requires every component to be signed.
pub async fn required(store: &dyn Store) -> Result<bool, StoreError> {
    Ok(store
        .get(&Space::system(POLICY), REQUIRED)
        .await?
        .is_some_and(|v| v == b"true"))
}

/// Sets whether the cluster requires every component to be signed. Requiring signatures with
/// no trusted key would refuse every deploy, so it needs one first.
pub async fn set_required(store: &dyn Store, on: bool) -> Result<(), SignatureError> {
    if on && records(store).await?.is_empty() {
        return Err(SignatureError::Key(
            "trust a key first (`doppel trust add NAME KEY.pub`): with none, every deploy would be refused"
                .into(),
        ));
    }
    store
        .apply(Command::new(Op::Put {
            space: Space::system(POLICY),
            key: REQUIRED.to_vec(),
            value: if on {
                b"true".to_vec()
            } else {
                b"false".to_vec()
            },
        }))
        .await?;
    Ok(())
}

/// Checks `bytes` against the trusted keys: `None` for an unsigned component, who signed it
/// otherwise. Reads only the signature and the custom sections; compiles nothing.
pub async fn examine(store: &dyn Store, bytes: &[u8]) -> Result<Option<Signed>, SignatureError> {
    let mut trusted = Vec::new();
    for record in records(store).await? {
        if let Ok(key) = PublicKey::from_pem(&record.public_key) {
            trusted.push((record.name, key));
        }
    }
    check(bytes, &trusted)
}

/// [`examine`] against a given set of keys.
fn check(bytes: &[u8], trusted: &[(String, PublicKey)]) -> Result<Option<Signed>, SignatureError> {
    let malformed = |e: WSError| SignatureError::Malformed(e.to_string());
    // Signed components start with the signature section; only then is there anything to check
    // (anything else unreadable is for the compiler to describe).
    let mut reader = bytes;
    let Ok(stream) = wasmsign2::Module::init_from_reader(&mut reader) else {
        // Not WebAssembly at all: nothing is signed, and the upload says what it is.
        return Ok(None);
    };
    let first = wasmsign2::Module::iterate(stream)
        .map_err(malformed)?
        .next();
    if !matches!(first, Some(Ok(Section::Custom(c))) if c.is_signature_header()) {
        return Ok(None);
    }
    // Verified before anything else is read from the component.
    let set = PublicKeySet::new(trusted.iter().map(|(_, k)| k.clone()).collect());
    let verified = match set.verify(&mut &bytes[..], None) {
        Ok(keys) => keys,
        Err(WSError::VerificationFailed | WSError::NoSignatures) => {
            return Err(SignatureError::Untrusted);
        }
        Err(e) => return Err(malformed(e)),
    };
    let mut by: Vec<String> = trusted
        .iter()
        .filter(|(_, k)| verified.iter().any(|v| v.to_bytes() == k.to_bytes()))
        .map(|(name, _)| name.clone())
        .collect();
    by.sort();
    let mut release = None;
    let mut reader = bytes;
    for section in wasmsign2::Module::iterate(
        wasmsign2::Module::init_from_reader(&mut reader).map_err(malformed)?,
    )
    .map_err(malformed)?
    {
        if let Section::Custom(c) = section.map_err(malformed)?
            && c.name() == RELEASE_SECTION
        {
            let text = std::str::from_utf8(c.payload())
                .map_err(|_| SignatureError::BadRelease("not text".into()))?;
            let version = Release::parse(text).map_err(SignatureError::BadRelease)?;
            if release.replace(version.to_string()).is_some() {
                return Err(SignatureError::BadRelease("it appears twice".into()));
            }
        }
    }
    Ok(Some(Signed { by, release }))
}

/// Refuses `offered` when it is an older release than `running` for `service`, unless allowed;
/// when allowed, answers what the audit trail says of the rollback. A release that names no
/// version replacing one that does counts as older: otherwise an old, validly signed build from
/// before versioning would get past the check.
pub fn check_rollback(
    service: &str,
    running: Option<&str>,
    offered: Option<&str>,
    allow_older: bool,
) -> Result<Option<String>, SignatureError> {
    let Some(running) = running else {
        return Ok(None);
    };
    let older = match offered {
        None => true,
        Some(offered) => match (Release::parse(offered), Release::parse(running)) {
            (Ok(new), Ok(old)) => new < old,
            _ => true,
        },
    };
    let new = offered.unwrap_or("(none)");
    if older && !allow_older {
        return Err(SignatureError::Older {
            service: service.to_string(),
            new: new.to_string(),
            running: running.to_string(),
        });
    }
    Ok(older.then(|| format!("release {new} replaced the newer {running} (--allow-older)")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmsign2::{CustomSection, KeyPair, Module};

    /// The smallest component: the header alone.
    const EMPTY_COMPONENT: [u8; 8] = [0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00];

    fn sign(bytes: &[u8], key: &KeyPair, release: Option<&str>) -> Vec<u8> {
        let mut module = Module::deserialize(&mut &bytes[..]).unwrap();
        if let Some(r) = release {
            module.sections.push(Section::Custom(CustomSection::new(
                RELEASE_SECTION.into(),
                r.as_bytes().to_vec(),
            )));
        }
        let signed = key.sk.sign(module, None).unwrap();
        let mut out = Vec::new();
        signed.serialize(&mut out).unwrap();
        out
    }

    #[test]
    fn only_a_trusted_key_over_these_exact_bytes_passes() {
        let (a, b) = (KeyPair::generate(), KeyPair::generate());
        let trusted = vec![("a".to_string(), a.pk.clone())];
        assert_eq!(check(&EMPTY_COMPONENT, &trusted).unwrap(), None);
        let signed = sign(&EMPTY_COMPONENT, &a, Some("1.2"));
        assert_eq!(
            check(&signed, &trusted).unwrap(),
            Some(Signed {
                by: vec!["a".into()],
                release: Some("1.2".into())
            })
        );
        // The version is covered: changing it breaks the signature.
        let mut bumped = signed.clone();
        let at = bumped.len() - 1;
        bumped[at] = b'9';
        assert!(matches!(
            check(&bumped, &trusted),
            Err(SignatureError::Untrusted)
        ));
        assert!(matches!(
            check(&sign(&EMPTY_COMPONENT, &b, None), &trusted),
            Err(SignatureError::Untrusted)
        ));
        assert!(matches!(
            check(&signed, &[]),
            Err(SignatureError::Untrusted)
        ));
        assert_eq!(check(b"not wasm", &trusted).unwrap(), None);
        // Garbage after a valid header, unsigned: for the compiler to describe.
        let mut garbage = EMPTY_COMPONENT.to_vec();
        garbage.extend_from_slice(&[0xff, 0xff, 0xff]);
        assert_eq!(check(&garbage, &trusted).unwrap(), None);
    }

    #[test]
    fn an_older_or_unversioned_release_needs_allow_older() {
        assert!(check_rollback("s", None, None, false).is_ok());
        assert!(check_rollback("s", Some("1.2"), Some("1.2.0"), false).is_ok());
        assert!(check_rollback("s", Some("1.2"), Some("1.3"), false).is_ok());
        assert!(check_rollback("s", Some("1.2"), Some("1.1.9"), false).is_err());
        assert!(check_rollback("s", Some("1.2"), None, false).is_err());
        assert!(check_rollback("s", Some("1.2"), Some("1.1"), true).is_ok());
    }
}
