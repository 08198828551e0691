//! A host's identity as its certificate states it: subject alternative names of the form
//! `urn:doppel:host:ID`, `urn:doppel:name:NAME` and `urn:doppel:label:KEY=VALUE`, beside the DNS
//! name [`crate::CLUSTER_NAME`]. The CA writes them from an invitation, never from what a host
//! asks for, so a host cannot claim an id, a name or a jurisdiction it was not given.

use std::collections::BTreeMap;

use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use crate::TrustError;

/// Labels placement rules match (`jurisdiction=de`).
pub type Labels = BTreeMap<String, String>;

const HOST: &str = "urn:doppel:host:";
const NAME: &str = "urn:doppel:name:";
const LABEL: &str = "urn:doppel:label:";

/// Who a host certificate names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostIdentity {
    /// The host's raft id.
    pub id: u64,
    /// Its name.
    pub name: String,
    /// Its labels.
    pub labels: Labels,
}

impl HostIdentity {
    /// The subject alternative names stating this identity.
    pub(crate) fn uris(&self) -> Vec<String> {
        let mut uris = vec![format!("{HOST}{}", self.id), format!("{NAME}{}", self.name)];
        uris.extend(self.labels.iter().map(|(k, v)| format!("{LABEL}{k}={v}")));
        uris
    }

    /// The identity a DER certificate states. Does not verify the certificate: that is the TLS
    /// handshake's job, done before anyone asks who the peer is.
    pub fn from_certificate(der: &[u8]) -> Result<HostIdentity, TrustError> {
        let (_, cert) = X509Certificate::from_der(der).map_err(|e| TrustError::Malformed {
            what: "a certificate",
            why: e.to_string(),
        })?;
        let names = cert
            .subject_alternative_name()
            .map_err(|e| TrustError::NoIdentity(e.to_string()))?
            .ok_or_else(|| TrustError::NoIdentity("it has no alternative names".into()))?;
        let (mut id, mut name, mut labels) = (None, None, Labels::new());
        for general in &names.value.general_names {
            let GeneralName::URI(uri) = general else {
                continue;
            };
            if let Some(raw) = uri.strip_prefix(HOST) {
                id = Some(raw.parse::<u64>().map_err(|_| {
                    TrustError::NoIdentity(format!("the host id {raw:?} is not a number"))
                })?);
            } else if let Some(raw) = uri.strip_prefix(NAME) {
                name = Some(raw.to_string());
            } else if let Some(raw) = uri.strip_prefix(LABEL) {
                let (k, v) = raw
                    .split_once('=')
                    .ok_or_else(|| TrustError::NoIdentity(format!("the label {raw:?} has no =")))?;
                labels.insert(k.to_string(), v.to_string());
            }
        }
        match (id, name) {
            (Some(id), Some(name)) => Ok(HostIdentity { id, name, labels }),
            _ => Err(TrustError::NoIdentity(
                "it names no host id and name".into(),
            )),
        }
    }
}

impl std::fmt::Display for HostIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (id {})", self.name, self.id)
    }
}
