//! Who is who in a doppel cluster.
//!
//! Every cluster has its own certificate authority ([`ClusterCa`]), made by the host that creates
//! the cluster. Every host holds a key it made itself ([`HostKey`]) and a certificate from that
//! CA naming it ([`HostIdentity`]: its raft id, its name and the labels it was given), with which
//! it both serves and calls its peers. [`tls`] turns those into the rustls configurations of the
//! peer listener (mutual TLS), the admin listener (server TLS) and their clients.
//!
//! Servers are verified against the CA and the one name every host certificate carries
//! ([`CLUSTER_NAME`]), never against the address dialled: hosts are reached by whatever address
//! they advertise, and what a peer may do follows from the identity in its certificate, which the
//! peer listener checks against the cluster's membership.
//!
//! Nothing here touches the network or the disk: callers keep the PEM texts where they belong.

mod ca;
mod identity;
pub mod tls;

pub use ca::{ClusterCa, HostKey};
pub use identity::{HostIdentity, Labels};

use sha2::{Digest, Sha256};

/// The DNS name in every host certificate, against which clients verify the server they reach.
pub const CLUSTER_NAME: &str = "doppel.cluster";

/// What went wrong making, reading or checking a key or certificate.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    /// A PEM text or DER structure did not parse.
    #[error("{what} does not parse: {why}")]
    Malformed {
        /// What was read.
        what: &'static str,
        /// Why it failed.
        why: String,
    },
    /// A certificate carries no doppel host identity, or a broken one.
    #[error("the certificate names no doppel host: {0}")]
    NoIdentity(String),
    /// Signing or key generation failed.
    #[error("cannot sign: {0}")]
    Signing(String),
    /// A TLS configuration could not be built.
    #[error("TLS: {0}")]
    Tls(String),
}

/// The SHA-256 fingerprint of a DER certificate, as lowercase hex: how an invitation names the
/// CA a joining host must find at the other end.
pub fn fingerprint(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

/// When a DER certificate stops being valid.
pub fn not_after(der: &[u8]) -> Result<std::time::SystemTime, TrustError> {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| TrustError::Malformed {
        what: "a certificate",
        why: e.to_string(),
    })?;
    let secs = u64::try_from(cert.validity().not_after.timestamp()).unwrap_or(0);
    Ok(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
}

/// Every certificate in a PEM text, as DER, in order.
pub fn certificates(pem: &str) -> Result<Vec<Vec<u8>>, TrustError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .map(|c| c.map(|c| c.to_vec()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TrustError::Malformed {
            what: "a certificate",
            why: e.to_string(),
        })
}
