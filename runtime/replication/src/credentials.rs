//! This host's certificate, key and the CAs it trusts, kept in `DATA/tls/` (the key owner-only):
//! `host.pem` (its certificate, then the CA's), `host.key`, `ca.pem` (every CA the cluster
//! trusts now). The host that created the cluster also keeps the CA's key there (`ca.key`), for
//! offline keeping; the cluster's copy is in the replicated store (see `authority.rs`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use doppel_trust::tls::{self, CredentialSlot};
use doppel_trust::{HostIdentity, TrustError};

/// The directory in a data directory that holds the TLS files.
pub fn tls_dir(data: &Path) -> PathBuf {
    data.join("tls")
}

/// The CA bundle a CLI on the same machine trusts the host's admin listener with.
pub fn ca_path(data: &Path) -> PathBuf {
    tls_dir(data).join("ca.pem")
}

/// A host's credentials.
pub struct Credentials {
    slot: Arc<CredentialSlot>,
    chain_pem: String,
    key_pem: String,
    roots_pem: String,
    roots: Vec<Vec<u8>>,
    identity: HostIdentity,
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
            chain_pem: chain_pem.to_string(),
            key_pem: key_pem.to_string(),
            roots_pem: roots_pem.to_string(),
            roots,
            identity,
        })
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

    /// Writes the credentials into `data` (the key owner-only), each file replaced whole.
    pub fn save(&self, data: &Path) -> Result<(), CredentialsError> {
        let dir = tls_dir(data);
        std::fs::create_dir_all(&dir).map_err(|source| CredentialsError::Io {
            path: dir.clone(),
            source,
        })?;
        for (name, text) in [
            ("host.key", &self.key_pem),
            ("host.pem", &self.chain_pem),
            ("ca.pem", &self.roots_pem),
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
    pub fn roots(&self) -> &[Vec<u8>] {
        &self.roots
    }

    /// The CAs this host trusts, PEM (public).
    pub fn roots_pem(&self) -> &str {
        &self.roots_pem
    }

    /// The certificate this host presents.
    pub fn slot(&self) -> Arc<CredentialSlot> {
        self.slot.clone()
    }

    /// The admin listener's TLS configuration.
    pub fn admin_server(&self) -> Result<Arc<rustls::ServerConfig>, TrustError> {
        tls::admin_server(self.slot())
    }

    /// The peer listener's TLS configuration.
    pub fn peer_server(&self) -> Result<Arc<rustls::ServerConfig>, TrustError> {
        tls::peer_server(self.slot(), &self.roots)
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
