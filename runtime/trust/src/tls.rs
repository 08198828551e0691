//! The rustls configurations of a host's listeners and of the clients that reach them.
//!
//! - The peer listener asks every client for a certificate from the cluster CA and verifies it
//!   when one is given; the peer transport then refuses every route but enrolment to a client
//!   without one, and checks what the identity in it may do.
//! - The admin listener proves itself with the same host certificate and asks for none: operators
//!   authenticate with named credentials.
//! - Clients verify a server against the cluster CA and [`CLUSTER_NAME`] (whatever address they
//!   dialled); a joining host, which has no CA yet, pins the CA by the fingerprint its invitation
//!   carries.
//!
//! A host's own certificate sits in a [`CredentialSlot`] and the CAs it trusts in
//! [`TrustedRoots`], so that a renewed certificate or a rotated CA is used from the next handshake
//! on without restarting anything.

use std::sync::{Arc, RwLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{
    ClientConfig, DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig,
    SignatureScheme,
};

use crate::{CLUSTER_NAME, TrustError};

/// What a joining host's handshake failure says when the server's CA is not the invitation's.
pub const NOT_THE_INVITING_CLUSTER: &str = "this is not the cluster that invited this host";

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn tls(e: impl std::fmt::Display) -> TrustError {
    TrustError::Tls(e.to_string())
}

/// A certificate chain (the host's certificate first) and its key, ready for rustls.
pub fn certified_key(chain_pem: &str, key_pem: &str) -> Result<Arc<CertifiedKey>, TrustError> {
    let chain: Vec<CertificateDer<'static>> = crate::certificates(chain_pem)?
        .into_iter()
        .map(CertificateDer::from)
        .collect();
    if chain.is_empty() {
        return Err(TrustError::Malformed {
            what: "the host certificate",
            why: "no certificate in it".into(),
        });
    }
    let key =
        PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| TrustError::Malformed {
            what: "the host key",
            why: e.to_string(),
        })?;
    let key = provider().key_provider.load_private_key(key).map_err(tls)?;
    Ok(Arc::new(CertifiedKey::new(chain, key)))
}

/// The certificate a host presents, replaceable while it runs (renewal).
#[derive(Debug, Default)]
pub struct CredentialSlot(RwLock<Option<Arc<CertifiedKey>>>);

impl CredentialSlot {
    /// A slot holding `key`.
    pub fn new(key: Arc<CertifiedKey>) -> CredentialSlot {
        CredentialSlot(RwLock::new(Some(key)))
    }

    /// Presents `key` from the next handshake on.
    pub fn replace(&self, key: Arc<CertifiedKey>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Some(key);
    }

    fn current(&self) -> Option<Arc<CertifiedKey>> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl ResolvesServerCert for CredentialSlot {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current()
    }
}

impl ResolvesClientCert for CredentialSlot {
    fn resolve(&self, _: &[&[u8]], _: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        self.current()
    }

    fn has_certs(&self) -> bool {
        self.current().is_some()
    }
}

fn root_store(roots: &[Vec<u8>]) -> Result<Arc<RootCertStore>, TrustError> {
    let mut store = RootCertStore::empty();
    for der in roots {
        store
            .add(CertificateDer::from(der.clone()))
            .map_err(|e| TrustError::Malformed {
                what: "a CA certificate",
                why: e.to_string(),
            })?;
    }
    if store.is_empty() {
        return Err(TrustError::Tls("no CA certificate to trust".into()));
    }
    Ok(Arc::new(store))
}

/// The CAs a host trusts, replaceable while it runs: during a CA rotation the old and the new
/// CA are both trusted, then only the new one.
#[derive(Debug)]
pub struct TrustedRoots(RwLock<Verifiers>);

#[derive(Clone, Debug)]
struct Verifiers {
    clients: Arc<dyn ClientCertVerifier>,
    servers: Arc<WebPkiServerVerifier>,
}

impl Verifiers {
    fn of(roots: &[Vec<u8>]) -> Result<Verifiers, TrustError> {
        let store = root_store(roots)?;
        let clients = WebPkiClientVerifier::builder_with_provider(store.clone(), provider())
            .allow_unauthenticated()
            .build()
            .map_err(tls)?;
        let servers = WebPkiServerVerifier::builder_with_provider(store, provider())
            .build()
            .map_err(tls)?;
        Ok(Verifiers { clients, servers })
    }
}

impl TrustedRoots {
    /// Trusts the CAs `roots` (DER).
    pub fn new(roots: &[Vec<u8>]) -> Result<Arc<TrustedRoots>, TrustError> {
        Ok(Arc::new(TrustedRoots(RwLock::new(Verifiers::of(roots)?))))
    }

    /// Trusts `roots` instead, from the next handshake on.
    pub fn replace(&self, roots: &[Vec<u8>]) -> Result<(), TrustError> {
        let verifiers = Verifiers::of(roots)?;
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = verifiers;
        Ok(())
    }

    fn current(&self) -> Verifiers {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// The peer listener's configuration: presents `credentials`, asks every client for a
/// certificate from one of `roots`, and lets one without a certificate finish the handshake (a
/// joining host enrols before it has one; the transport refuses it everything else).
pub fn peer_server(
    credentials: Arc<CredentialSlot>,
    roots: Arc<TrustedRoots>,
) -> Result<Arc<ServerConfig>, TrustError> {
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(tls)?
        .with_client_cert_verifier(Arc::new(PeerClients(roots)))
        .with_cert_resolver(credentials);
    Ok(Arc::new(config))
}

/// The admin listener's configuration: presents `credentials`, asks for no client certificate.
pub fn admin_server(credentials: Arc<CredentialSlot>) -> Result<Arc<ServerConfig>, TrustError> {
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(tls)?
        .with_no_client_auth()
        .with_cert_resolver(credentials);
    Ok(Arc::new(config))
}

/// A host calling its peers: presents `credentials` and trusts a server with a certificate for
/// [`CLUSTER_NAME`] from one of `roots`.
pub fn peer_client(
    credentials: Arc<CredentialSlot>,
    roots: Arc<TrustedRoots>,
) -> Result<ClientConfig, TrustError> {
    Ok(ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(tls)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(ClusterServer(roots)))
        .with_client_cert_resolver(credentials))
}

/// An operator's client (the CLI): trusts a server with a certificate for [`CLUSTER_NAME`] from
/// one of `roots`, presents none of its own.
pub fn operator_client(roots: &[Vec<u8>]) -> Result<ClientConfig, TrustError> {
    Ok(ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(tls)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(ClusterServer(TrustedRoots::new(roots)?)))
        .with_no_client_auth())
}

/// A joining host's client before it has the CA: trusts a server whose chain ends in the CA
/// certificate with SHA-256 `fingerprint` (from the invitation), and a certificate for
/// [`CLUSTER_NAME`] from it.
pub fn pinned_client(fingerprint: &str) -> Result<ClientConfig, TrustError> {
    Ok(ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(tls)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedCa {
            fingerprint: fingerprint.to_ascii_lowercase(),
        }))
        .with_no_client_auth())
}

/// Verifies a server against the cluster CA and [`CLUSTER_NAME`], not the name dialled.
#[derive(Debug)]
struct ClusterServer(Arc<TrustedRoots>);

/// Verifies a peer's client certificate, if it shows one, against the CAs trusted now.
#[derive(Debug)]
struct PeerClients(Arc<TrustedRoots>);

impl ClientCertVerifier for PeerClients {
    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // Hints are optional; a host presents the one certificate it has whatever they say.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.0
            .current()
            .clients
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0
            .current()
            .clients
            .verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0
            .current()
            .clients
            .verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.current().clients.supported_verify_schemes()
    }
}

fn cluster_name() -> ServerName<'static> {
    ServerName::try_from(CLUSTER_NAME).expect("the cluster name is a DNS name")
}

impl ServerCertVerifier for ClusterServer {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _dialled: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.0.current().servers.verify_server_cert(
            end_entity,
            intermediates,
            &cluster_name(),
            ocsp,
            now,
        )
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0
            .current()
            .servers
            .verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0
            .current()
            .servers
            .verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.current().servers.supported_verify_schemes()
    }
}

/// Verifies a server against the CA its chain carries, if that CA has the pinned fingerprint.
#[derive(Debug)]
struct PinnedCa {
    fingerprint: String,
}

impl ServerCertVerifier for PinnedCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        dialled: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let ca = intermediates
            .iter()
            .find(|c| crate::fingerprint(c) == self.fingerprint)
            .ok_or_else(|| {
                rustls::Error::General(format!(
                    "the server's CA is not the one the invitation names: {NOT_THE_INVITING_CLUSTER}"
                ))
            })?;
        let roots =
            TrustedRoots::new(&[ca.to_vec()]).map_err(|e| rustls::Error::General(e.to_string()))?;
        ClusterServer(roots).verify_server_cert(end_entity, &[], dialled, ocsp, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}
