//! This host's certificate, key and the CAs it trusts, kept in `DATA/tls/` (the key owner-only):
//! `host.pem` (its certificate, then the CA's), `host.key`, `ca.pem` (every CA the cluster
//! trusts now). The host that created the cluster also keeps the CA's key there (`ca.key`), for
//! offline keeping; the cluster's copy is in the replicated store (see `authority.rs`).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use doppel_trust::tls::{self, CredentialSlot, TrustedRoots};
use doppel_trust::{HostIdentity, HostKey, TrustError};

/// The directory in a data directory that holds the TLS files.
pub fn tls_dir(data: &Path) -> PathBuf {
    data.join("tls")
}

/// The CA bundle a CLI on the same machine trusts the host's admin listener with.
pub fn ca_path(data: &Path) -> PathBuf {
    tls_dir(data).join("ca.pem")
}

/// A host's credentials: its certificate (renewable) and the CAs it trusts (replaceable during a
/// CA rotation), both taken up by the TLS configurations built from them at the next handshake.
/// Its identity never changes: a renewed certificate must name the same host.
pub struct Credentials {
    slot: Arc<CredentialSlot>,
    trusted: Arc<TrustedRoots>,
    identity: HostIdentity,
    files: Mutex<Files>,
}

/// The PEM texts as they are kept in `DATA/tls/`.
struct Files {
    chain_pem: String,
    key_pem: String,
    roots_pem: String,
    roots: Vec<Vec<u8>>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("identity", &self.identity)
            .field("key", &"<redacted>")
            .finish()
    }
}

impl Credentials {
    /// Credentials from PEM texts: the certificate chain (the host's own first), its key, and the
    /// CAs to trust.
    pub fn from_pem(
        chain_pem: &str,
        key_pem: &str,
        roots_pem: &str,
    ) -> Result<Credentials, TrustError> {
        let key = tls::certified_key(chain_pem, key_pem)?;
        let own = key.cert.first().map(|c| c.to_vec()).unwrap_or_default();
        let identity = HostIdentity::from_certificate(&own)?;
        let roots = doppel_trust::certificates(roots_pem)?;
        Ok(Credentials {
            slot: Arc::new(CredentialSlot::new(key)),
            trusted: TrustedRoots::new(&roots)?,
            identity,
            files: Mutex::new(Files {
                chain_pem: chain_pem.to_string(),
                key_pem: key_pem.to_string(),
                roots_pem: roots_pem.to_string(),
                roots,
            }),
        })
    }

    fn files(&self) -> MutexGuard<'_, Files> {
        self.files.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The credentials kept in `data`, if there are any.
    pub fn load(data: &Path) -> Result<Option<Credentials>, CredentialsError> {
        let dir = tls_dir(data);
        let read = |name: &str| -> Result<Option<String>, CredentialsError> {
            let path = dir.join(name);
            match std::fs::read_to_string(&path) {
                Ok(text) => Ok(Some(text)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(source) => Err(CredentialsError::Io { path, source }),
            }
        };
        let (Some(chain), Some(key), Some(roots)) =
            (read("host.pem")?, read("host.key")?, read("ca.pem")?)
        else {
            return Ok(None);
        };
        Credentials::from_pem(&chain, &key, &roots)
            .map(Some)
            .map_err(|e| CredentialsError::Damaged {
                dir: dir.clone(),
                why: e,
            })
    }

    /// Writes the credentials into `data` (the key owner-only), each file replaced whole. The key
    /// never changes after the first save, so a host stopped between two files still finds a
    /// certificate for its key (the old one or the new one) when it starts again.
    pub fn save(&self, data: &Path) -> Result<(), CredentialsError> {
        let dir = tls_dir(data);
        std::fs::create_dir_all(&dir).map_err(|source| CredentialsError::Io {
            path: dir.clone(),
            source,
        })?;
        let files = self.files();
        for (name, text) in [
            ("host.key", &files.key_pem),
            ("host.pem", &files.chain_pem),
            ("ca.pem", &files.roots_pem),
        ] {
            let path = dir.join(name);
            doppel_store::files::replace_private(&path, text.as_bytes())
                .map_err(|source| CredentialsError::Io { path, source })?;
        }
        Ok(())
    }

    /// Who the certificate says this host is.
    pub fn identity(&self) -> &HostIdentity {
        &self.identity
    }

    /// The CAs this host trusts (DER).
    pub fn roots(&self) -> Vec<Vec<u8>> {
        self.files().roots.clone()
    }

    /// The SHA-256 fingerprints of the CAs this host trusts, in order.
    pub fn root_fingerprints(&self) -> Vec<String> {
        self.files()
            .roots
            .iter()
            .map(|r| doppel_trust::fingerprint(r))
            .collect()
    }

    /// The CAs this host trusts, PEM (public).
    pub fn roots_pem(&self) -> String {
        self.files().roots_pem.clone()
    }

    /// The fingerprint of the CA that issued this host's certificate (the second in its chain).
    pub fn issuer_fingerprint(&self) -> Option<String> {
        let files = self.files();
        let chain = doppel_trust::certificates(&files.chain_pem).ok()?;
        chain.get(1).map(|ca| doppel_trust::fingerprint(ca))
    }

    /// When this host's certificate stops being valid.
    pub fn not_after(&self) -> Result<SystemTime, TrustError> {
        let files = self.files();
        let chain = doppel_trust::certificates(&files.chain_pem)?;
        doppel_trust::not_after(chain.first().map(Vec::as_slice).unwrap_or_default())
    }

    /// A certificate signing request for this host's key (for its renewal).
    pub fn request(&self) -> Result<String, TrustError> {
        HostKey::from_pem(&self.files().key_pem)?.request()
    }

    /// Presents `chain_pem` (a new certificate for the same key, then its CA) from the next
    /// handshake on. Refused if it names another host.
    pub fn renew(&self, chain_pem: &str) -> Result<(), TrustError> {
        let mut files = self.files();
        let key = tls::certified_key(chain_pem, &files.key_pem)?;
        let own = key.cert.first().map(|c| c.to_vec()).unwrap_or_default();
        let named = HostIdentity::from_certificate(&own)?;
        if named != self.identity {
            return Err(TrustError::NoIdentity(format!(
                "a renewed certificate must name {}, not {named}",
                self.identity
            )));
        }
        self.slot.replace(key);
        files.chain_pem = chain_pem.to_string();
        Ok(())
    }

    /// Trusts the CAs in `roots_pem` instead, from the next handshake on.
    pub fn trust(&self, roots_pem: &str) -> Result<(), TrustError> {
        let roots = doppel_trust::certificates(roots_pem)?;
        self.trusted.replace(&roots)?;
        let mut files = self.files();
        files.roots = roots;
        files.roots_pem = roots_pem.to_string();
        Ok(())
    }

    /// The certificate this host presents.
    pub fn slot(&self) -> Arc<CredentialSlot> {
        self.slot.clone()
    }

    /// The CAs this host trusts, as its TLS configurations see them.
    pub fn trusted(&self) -> Arc<TrustedRoots> {
        self.trusted.clone()
    }

    /// The admin listener's TLS configuration.
    pub fn admin_server(&self) -> Result<Arc<rustls::ServerConfig>, TrustError> {
        tls::admin_server(self.slot())
    }

    /// The peer listener's TLS configuration.
    pub fn peer_server(&self) -> Result<Arc<rustls::ServerConfig>, TrustError> {
        tls::peer_server(self.slot(), self.trusted())
    }
}

/// Why the TLS files could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The files do not make credentials.
    #[error("the TLS files in {dir} are damaged: {why}")]
    Damaged {
        /// The directory.
        dir: PathBuf,
        /// Why.
        why: TrustError,
    },
}
