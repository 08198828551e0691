//! The two keys above the services' data keys (decision 0012).
//!
//! - A host's **key-encryption key** ([`Kek`]) comes from the operator and never touches the disk
//!   through doppel: a file the operator placed (`--key-file`, e.g. a mounted secret), the
//!   environment (`DOPPEL_KEY`), or a command's output (`--key-command`, e.g. a KMS or PKCS#11
//!   client that unwraps it). Each host may have its own (each cloud's own KMS).
//! - The **cluster key** ([`ClusterKey`]) is made by the host that creates the cluster, handed to
//!   joining hosts over mutual TLS, and kept by each host in `DATA/keys/cluster`, wrapped under
//!   its key-encryption key: a host without its key-encryption key, or with another, cannot
//!   open it and refuses to start.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use zeroize::Zeroizing;

/// The environment variable that may hold the key itself (base64 or hex).
pub const KEY_ENV: &str = "DOPPEL_KEY";
/// Where in the data directory this host keeps the cluster key, wrapped under its own key.
const CLUSTER_FILE: &str = "keys/cluster";
const CLUSTER_AAD: &[u8] = b"doppel cluster key v1";

/// Where a host's key-encryption key comes from.
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
        "no encryption key: a host keeps what it stores sealed under a key-encryption key the \
         operator supplies. Give it with --key-file PATH, the environment variable {KEY_ENV}, or \
         --key-command CMD (`doppel keygen --encryption PATH` makes one; start the host with the \
         same one every time)"
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
         ({CLUSTER_FILE} does not open with it); start the host with the key it was created with"
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

/// A host's key-encryption key, from the operator, in memory only (wiped when dropped). It
/// wraps one thing: this host's copy of the cluster key, in `DATA/keys/cluster`.
pub struct Kek {
    bytes: Zeroizing<[u8; 32]>,
}

impl fmt::Debug for Kek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Kek(…)")
    }
}

impl Kek {
    /// Reads the key from `source`.
    pub fn load(source: &KeySource) -> Result<Kek, KeyError> {
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
        let bytes = parse(&text).ok_or(KeyError::Malformed(name))?;
        Ok(Kek { bytes })
    }

    /// A key from its text (base64 or hex of 32 bytes).
    pub fn parse(text: &[u8]) -> Option<Kek> {
        parse(text).map(|bytes| Kek { bytes })
    }

    /// A new random key, as the text [`Kek::load`] reads.
    pub fn generate() -> Zeroizing<String> {
        let mut bytes = Zeroizing::new([0u8; 32]);
        getrandom::fill(bytes.as_mut()).expect("the system's random source works");
        Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(bytes.as_ref()))
    }

    fn aead(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(derive(self.bytes.as_ref(), "host-kek").as_ref().into())
    }
}

/// 32 bytes as standard base64 or as hex, surrounding whitespace ignored.
fn parse(text: &[u8]) -> Option<Zeroizing<[u8; 32]>> {
    let text = std::str::from_utf8(text).ok()?.trim();
    let raw = Zeroizing::new(if text.len() == 64 {
        hex::decode(text).ok()?
    } else {
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .ok()?
    });
    let bytes: [u8; 32] = raw.as_slice().try_into().ok()?;
    Some(Zeroizing::new(bytes))
}

/// The cluster key: made by the host that creates a cluster, handed to each joining host over
/// mutual TLS, kept by each host wrapped under its own [`Kek`]. Every service's data key is
/// wrapped under it (under a key derived from it, for that use only).
pub struct ClusterKey {
    bytes: Zeroizing<[u8; 32]>,
}

impl fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClusterKey(…)")
    }
}

impl ClusterKey {
    /// A new random cluster key.
    pub fn generate() -> ClusterKey {
        let mut bytes = Zeroizing::new([0u8; 32]);
        getrandom::fill(bytes.as_mut()).expect("the system's random source works");
        ClusterKey { bytes }
    }

    /// The key's bytes, to hand to a joining host or seal into a backup.
    pub fn expose(&self) -> &[u8; 32] {
        &self.bytes
    }

    /// A key from its bytes.
    pub fn from_bytes(bytes: &[u8]) -> Option<ClusterKey> {
        let bytes: [u8; 32] = bytes.try_into().ok()?;
        Some(ClusterKey {
            bytes: Zeroizing::new(bytes),
        })
    }

    /// A key for one `purpose`, derived with HKDF-SHA256 (never the cluster key itself).
    pub(crate) fn derive(&self, purpose: &str) -> Zeroizing<[u8; 32]> {
        derive(self.bytes.as_ref(), purpose)
    }

    /// This host's copy in `data`, opened with `kek`; `None` if there is none yet.
    pub fn load(
        data: &Path,
        kek: &Kek,
        source: &KeySource,
    ) -> Result<Option<ClusterKey>, KeyError> {
        let path = data.join(CLUSTER_FILE);
        let sealed = match std::fs::read(&path) {
            Ok(sealed) => sealed,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(KeyError::Io(path.display().to_string(), e)),
        };
        let wrong = || KeyError::Wrong {
            source_name: source.to_string(),
            dir: data.display().to_string(),
        };
        if sealed.len() < 24 {
            return Err(wrong());
        }
        let opened = Zeroizing::new(
            kek.aead()
                .decrypt(
                    XNonce::from_slice(&sealed[..24]),
                    Payload {
                        msg: &sealed[24..],
                        aad: CLUSTER_AAD,
                    },
                )
                .map_err(|_| wrong())?,
        );
        ClusterKey::from_bytes(&opened).map(Some).ok_or_else(wrong)
    }

    /// Keeps this key in `data`, wrapped under `kek` (owner-only, replaced whole).
    pub fn save(&self, data: &Path, kek: &Kek) -> Result<(), KeyError> {
        let path = data.join(CLUSTER_FILE);
        let mut nonce = [0u8; 24];
        getrandom::fill(&mut nonce).expect("the system's random source works");
        let mut sealed = nonce.to_vec();
        sealed.extend(
            kek.aead()
                .encrypt(
                    XNonce::from_slice(&nonce),
                    Payload {
                        msg: self.bytes.as_ref(),
                        aad: CLUSTER_AAD,
                    },
                )
                .expect("wrapping 32 bytes cannot fail"),
        );
        let io = |e| KeyError::Io(path.display().to_string(), e);
        std::fs::create_dir_all(data.join("keys")).map_err(io)?;
        doppel_store::files::replace_private(&path, &sealed).map_err(io)
    }
}

/// Makes `carried` (a backup's cluster key) this data directory's, kept under `kek`: a host
/// started on a restored directory opens the restored data keys with it.
pub fn adopt_carried(data: &Path, kek: &Kek, carried: &[u8]) -> Result<(), KeyError> {
    let key = ClusterKey::from_bytes(carried)
        .ok_or_else(|| KeyError::Malformed("the backup's keys/cluster".into()))?;
    key.save(data, kek)
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
        let text = Kek::generate();
        let key = Kek::parse(text.as_bytes()).unwrap();
        let hex = hex::encode(key.bytes.as_ref());
        let again = Kek::parse(format!("  {hex}\n").as_bytes()).unwrap();
        assert_eq!(key.bytes.as_ref(), again.bytes.as_ref());
        assert!(Kek::parse(b"short").is_none());
        assert!(Kek::parse(&[b'a'; 44]).is_none());
        assert!(!format!("{key:?}").contains(&hex));
    }

    #[test]
    fn the_cluster_key_opens_only_with_the_host_key_it_was_kept_under() {
        let dir = tempfile::tempdir().unwrap();
        let source = KeySource::Env;
        let kek = Kek::parse(Kek::generate().as_bytes()).unwrap();
        assert!(
            ClusterKey::load(dir.path(), &kek, &source)
                .unwrap()
                .is_none()
        );
        let cluster = ClusterKey::generate();
        cluster.save(dir.path(), &kek).unwrap();
        let back = ClusterKey::load(dir.path(), &kek, &source)
            .unwrap()
            .unwrap();
        assert_eq!(back.expose(), cluster.expose());
        let raw = std::fs::read(dir.path().join(CLUSTER_FILE)).unwrap();
        assert!(!raw.windows(32).any(|w| w == cluster.expose()));
        let other = Kek::parse(Kek::generate().as_bytes()).unwrap();
        let err = ClusterKey::load(dir.path(), &other, &source).unwrap_err();
        assert!(matches!(err, KeyError::Wrong { .. }), "{err}");
    }
}
