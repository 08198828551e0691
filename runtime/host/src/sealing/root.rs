//! The operator's key: the root that every key a host stores is wrapped under.
//!
//! It never touches the disk through doppel: it comes from a file the operator placed (`--key-file`,
//! e.g. a mounted secret), from the environment (`DOPPEL_KEY`), or from a command's output
//! (`--key-command`, e.g. a KMS or PKCS#11 client that unwraps it). Every host of a cluster, and
//! every cluster that restores or follows its backups, is given the same key (decision 0012).

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use zeroize::Zeroizing;

/// The environment variable that may hold the key itself (base64 or hex).
pub const KEY_ENV: &str = "DOPPEL_KEY";
/// Where in the data directory the proof of the key is kept (never the key).
const CHECK_FILE: &str = "keys/check";
const CHECK_AAD: &[u8] = b"doppel key check v1";
const CHECK_TEXT: &[u8] = b"this data directory is sealed under the operator's key";

/// Where the operator's key comes from.
#[derive(Clone)]
pub enum KeySource {
    /// A file holding the key (base64 or hex; surrounding whitespace ignored).
    File(PathBuf),
    /// The environment variable [`KEY_ENV`].
    Env,
    /// A shell command whose standard output is the key.
    Command(String),
}

// A key command can carry a credential of its own (a token in an argument): never printed.
impl fmt::Debug for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySource::File(path) => write!(f, "File({})", path.display()),
            KeySource::Env => write!(f, "Env({KEY_ENV})"),
            KeySource::Command(_) => write!(f, "Command(…)"),
        }
    }
}

impl fmt::Display for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySource::File(path) => write!(f, "--key-file {}", path.display()),
            KeySource::Env => write!(f, "the environment variable {KEY_ENV}"),
            KeySource::Command(_) => write!(f, "--key-command"),
        }
    }
}

/// Why the key could not be had or does not fit. No variant ever holds key material.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// No source was given.
    #[error(
        "no encryption key: a host encrypts what it stores under a key the operator supplies. \
         Give one with --key-file PATH, the environment variable {KEY_ENV}, or --key-command CMD \
         (`doppel keygen --encryption PATH` makes one; every host of a cluster takes the same key)"
    )]
    Missing,
    /// The file or the variable could not be read.
    #[error("cannot read the encryption key from {source_name}: {why}")]
    Unreadable {
        /// Which source.
        source_name: String,
        /// What failed.
        why: String,
    },
    /// The text is not a key.
    #[error(
        "the encryption key from {0} is not 32 bytes written as base64 or hex \
         (`doppel keygen --encryption PATH` makes one)"
    )]
    Malformed(String),
    /// The key command failed.
    #[error("the key command failed ({0}); its output was not used")]
    CommandFailed(String),
    /// The key does not open what the data directory was sealed under.
    #[error(
        "the encryption key from {source_name} is not the key {dir} was written under \
         ({CHECK_FILE} does not open with it); start the host with the key it was created with"
    )]
    Wrong {
        /// Which source.
        source_name: String,
        /// The data directory.
        dir: String,
    },
    /// The check file could not be written.
    #[error("cannot write {0}: {1}")]
    Io(String, std::io::Error),
}

/// The operator's key, in memory only (wiped when dropped).
pub struct RootKey {
    bytes: Zeroizing<[u8; 32]>,
}

impl fmt::Debug for RootKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RootKey(…)")
    }
}

impl RootKey {
    /// Reads the key from `source`.
    pub fn load(source: &KeySource) -> Result<RootKey, KeyError> {
        let name = source.to_string();
        let unreadable = |why: String| KeyError::Unreadable {
            source_name: name.clone(),
            why,
        };
        let text = Zeroizing::new(match source {
            KeySource::File(path) => std::fs::read(path).map_err(|e| unreadable(e.to_string()))?,
            KeySource::Env => std::env::var(KEY_ENV)
                .map_err(|e| unreadable(e.to_string()))?
                .into_bytes(),
            KeySource::Command(command) => {
                let out = Command::new("sh")
                    .args(["-c", command])
                    .stdin(std::process::Stdio::null())
                    .stderr(std::process::Stdio::inherit())
                    .output()
                    .map_err(|e| KeyError::CommandFailed(e.to_string()))?;
                if !out.status.success() {
                    return Err(KeyError::CommandFailed(out.status.to_string()));
                }
                out.stdout
            }
        });
        RootKey::parse(&text).ok_or(KeyError::Malformed(name))
    }

    /// A key from its text: 32 bytes as standard base64 or as hex.
    pub fn parse(text: &[u8]) -> Option<RootKey> {
        let text = std::str::from_utf8(text).ok()?.trim();
        let raw = Zeroizing::new(if text.len() == 64 {
            hex::decode(text).ok()?
        } else {
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .ok()?
        });
        let bytes: [u8; 32] = raw.as_slice().try_into().ok()?;
        Some(RootKey {
            bytes: Zeroizing::new(bytes),
        })
    }

    /// A new random key, as the text [`RootKey::parse`] reads.
    pub fn generate() -> Zeroizing<String> {
        let mut bytes = Zeroizing::new([0u8; 32]);
        getrandom::fill(bytes.as_mut()).expect("the system's random source works");
        Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(bytes.as_ref()))
    }

    /// A key for one `purpose`, derived with HKDF-SHA256 (never the root itself).
    pub(crate) fn derive(&self, purpose: &str) -> Zeroizing<[u8; 32]> {
        derive(self.bytes.as_ref(), purpose)
    }

    /// Checks that this key is the one `data` was sealed under, and marks a new directory as
    /// sealed under it. The mark is the encryption of a known text, so it says nothing of the
    /// key but whether a key is it.
    pub fn check_data_dir(&self, data: &Path, source: &KeySource) -> Result<(), KeyError> {
        let path = data.join(CHECK_FILE);
        let aead = XChaCha20Poly1305::new(self.derive("check").as_ref().into());
        match std::fs::read(&path) {
            Ok(sealed) => {
                let opens = sealed.len() > 24
                    && aead
                        .decrypt(
                            XNonce::from_slice(&sealed[..24]),
                            Payload {
                                msg: &sealed[24..],
                                aad: CHECK_AAD,
                            },
                        )
                        .is_ok_and(|text| text == CHECK_TEXT);
                if opens {
                    Ok(())
                } else {
                    Err(KeyError::Wrong {
                        source_name: source.to_string(),
                        dir: data.display().to_string(),
                    })
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut nonce = [0u8; 24];
                getrandom::fill(&mut nonce).expect("the system's random source works");
                let mut sealed = nonce.to_vec();
                sealed.extend(
                    aead.encrypt(
                        XNonce::from_slice(&nonce),
                        Payload {
                            msg: CHECK_TEXT,
                            aad: CHECK_AAD,
                        },
                    )
                    .expect("sealing a short text cannot fail"),
                );
                let io = |e| KeyError::Io(path.display().to_string(), e);
                std::fs::create_dir_all(data.join("keys")).map_err(io)?;
                doppel_store::files::write_private(&path, &sealed).map_err(io)
            }
            Err(e) => Err(KeyError::Io(path.display().to_string(), e)),
        }
    }
}

/// HKDF-SHA256 of `secret` for `purpose`.
pub(crate) fn derive(secret: &[u8], purpose: &str) -> Zeroizing<[u8; 32]> {
    let mut out = Zeroizing::new([0u8; 32]);
    hkdf::Hkdf::<sha2::Sha256>::new(None, secret)
        .expand(format!("doppel/{purpose}/v1").as_bytes(), out.as_mut())
        .expect("32 bytes is a valid HKDF-SHA256 length");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_reads_as_base64_or_hex_and_nothing_else() {
        let text = RootKey::generate();
        let key = RootKey::parse(text.as_bytes()).unwrap();
        let hex = hex::encode(key.bytes.as_ref());
        let again = RootKey::parse(format!("  {hex}\n").as_bytes()).unwrap();
        assert_eq!(key.bytes.as_ref(), again.bytes.as_ref());
        assert!(RootKey::parse(b"short").is_none());
        assert!(RootKey::parse(&[b'a'; 44]).is_none());
        assert!(format!("{key:?}").find(&hex).is_none());
    }

    #[test]
    fn a_data_directory_opens_only_with_the_key_it_was_sealed_under() {
        let dir = tempfile::tempdir().unwrap();
        let source = KeySource::Env;
        let key = RootKey::parse(RootKey::generate().as_bytes()).unwrap();
        key.check_data_dir(dir.path(), &source).unwrap();
        key.check_data_dir(dir.path(), &source).unwrap();
        let other = RootKey::parse(RootKey::generate().as_bytes()).unwrap();
        let err = other.check_data_dir(dir.path(), &source).unwrap_err();
        assert!(matches!(err, KeyError::Wrong { .. }), "{err}");
    }
}
