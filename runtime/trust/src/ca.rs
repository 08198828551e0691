//! The cluster CA, and a host's own key.

use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::CertificateSigningRequestDer;
use rustls::pki_types::pem::PemObject;
use time::OffsetDateTime;

use crate::{CLUSTER_NAME, HostIdentity, TrustError};

fn signing(e: rcgen::Error) -> TrustError {
    TrustError::Signing(e.to_string())
}

/// How long a cluster CA is valid: rotated long before that (`doppel cluster rotate-ca`).
const CA_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// Certificates are dated this much before they are made, so that a peer whose clock is a little
/// behind does not refuse a certificate as not yet valid.
const CLOCK_SKEW: Duration = Duration::from_secs(3600);

fn random_serial() -> Result<rcgen::SerialNumber, TrustError> {
    let mut raw = [0u8; 16];
    getrandom(&mut raw)?;
    // Positive, as DER integers for serials must be.
    raw[0] &= 0x7f;
    Ok(rcgen::SerialNumber::from_slice(&raw))
}

fn getrandom(out: &mut [u8]) -> Result<(), TrustError> {
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(out)
        .map_err(|_| TrustError::Signing("no randomness".into()))
}

/// A cluster's certificate authority: its certificate and signing key.
pub struct ClusterCa {
    cert_pem: String,
    cert_der: Vec<u8>,
    key: KeyPair,
}

impl std::fmt::Debug for ClusterCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterCa")
            .field("fingerprint", &self.fingerprint())
            .field("key", &"<redacted>")
            .finish()
    }
}

impl ClusterCa {
    /// A new CA for the cluster called `cluster` (its certificate's common name).
    pub fn create(cluster: &str) -> Result<ClusterCa, TrustError> {
        let key = KeyPair::generate().map_err(signing)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, format!("doppel cluster CA {cluster}"));
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.serial_number = Some(random_serial()?);
        let now = OffsetDateTime::now_utc();
        params.not_before = now - CLOCK_SKEW;
        params.not_after = now + CA_LIFETIME;
        let cert = params.self_signed(&key).map_err(signing)?;
        Ok(ClusterCa {
            cert_pem: cert.pem(),
            cert_der: cert.der().to_vec(),
            key,
        })
    }

    /// A CA kept as PEM texts (its certificate and its key).
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<ClusterCa, TrustError> {
        let key = KeyPair::from_pem(key_pem).map_err(|e| TrustError::Malformed {
            what: "the CA key",
            why: e.to_string(),
        })?;
        let cert_der = crate::certificates(cert_pem)?
            .into_iter()
            .next()
            .ok_or_else(|| TrustError::Malformed {
                what: "the CA certificate",
                why: "no certificate in it".into(),
            })?;
        Ok(ClusterCa {
            cert_pem: cert_pem.to_string(),
            cert_der,
            key,
        })
    }

    /// The CA's certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA's certificate, DER.
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// The CA's key, PEM (PKCS#8). Secret: written only owner-only, never logged.
    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// The CA certificate's SHA-256 fingerprint.
    pub fn fingerprint(&self) -> String {
        crate::fingerprint(&self.cert_der)
    }

    /// A certificate for `who`, valid for `lifetime` from now, for the public key of `csr_pem` (a
    /// certificate signing request, whose signature proves the requester holds the key). What
    /// the request asks for besides the key is ignored: the identity is the CA's to state.
    pub fn issue(
        &self,
        csr_pem: &str,
        who: &HostIdentity,
        lifetime: Duration,
    ) -> Result<String, TrustError> {
        let now = SystemTime::now();
        self.issue_dated(csr_pem, who, now - CLOCK_SKEW, now + lifetime)
    }

    /// A certificate for `who` valid from `not_before` to `not_after` (see [`ClusterCa::issue`];
    /// tests also play a host whose certificate expired).
    pub fn issue_dated(
        &self,
        csr_pem: &str,
        who: &HostIdentity,
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<String, TrustError> {
        let malformed = |why: String| TrustError::Malformed {
            what: "the certificate request",
            why,
        };
        let csr = CertificateSigningRequestDer::from_pem_slice(csr_pem.as_bytes())
            .map_err(|e| malformed(e.to_string()))?;
        let request = CertificateSigningRequestParams::from_der(&csr)
            .map_err(|e| malformed(e.to_string()))?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, who.name.clone());
        params.distinguished_name = dn;
        params.subject_alt_names =
            vec![SanType::DnsName(CLUSTER_NAME.try_into().map_err(signing)?)];
        for uri in who.uris() {
            params
                .subject_alt_names
                .push(SanType::URI(uri.try_into().map_err(
                    |e: rcgen::Error| {
                        TrustError::Signing(format!("a name or label is not plain ASCII: {e}"))
                    },
                )?));
        }
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(random_serial()?);
        params.not_before = not_before.into();
        params.not_after = not_after.into();
        let issuer =
            Issuer::from_ca_cert_der(&self.cert_der.clone().into(), &self.key).map_err(signing)?;
        let cert = CertificateSigningRequestParams {
            params,
            public_key: request.public_key,
        }
        .signed_by(&issuer)
        .map_err(signing)?;
        Ok(cert.pem())
    }
}

/// A host's own key pair, made on the host and never sent anywhere.
pub struct HostKey {
    key: KeyPair,
}

impl std::fmt::Debug for HostKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HostKey(<redacted>)")
    }
}

impl HostKey {
    /// A new key.
    pub fn generate() -> Result<HostKey, TrustError> {
        Ok(HostKey {
            key: KeyPair::generate().map_err(signing)?,
        })
    }

    /// A key kept as PEM (PKCS#8).
    pub fn from_pem(pem: &str) -> Result<HostKey, TrustError> {
        Ok(HostKey {
            key: KeyPair::from_pem(pem).map_err(|e| TrustError::Malformed {
                what: "the host key",
                why: e.to_string(),
            })?,
        })
    }

    /// The key, PEM. Secret.
    pub fn pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// A certificate signing request for this key (the CA fills in who the host is).
    pub fn request(&self) -> Result<String, TrustError> {
        let params = CertificateParams::default();
        params
            .serialize_request(&self.key)
            .and_then(|csr| csr.pem())
            .map_err(signing)
    }
}
