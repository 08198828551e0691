//! The cluster's authority, kept in the replicated store (system table `trust`), so that whichever
//! host leads can act on it:
//!
//! - `ca`: the cluster CA's certificate and key, with which any member issues certificates to
//!   invited hosts and renews its own (as Consul keeps its CA in its raft state). It never leaves
//!   the store but as a signature: no route answers it. During a rotation it also holds the next
//!   CA (trusted, not yet signing) or the retiring one (still trusted, no longer signing): see
//!   `rotation.rs`.
//! - `lifetime`: how long the certificates it issues are valid.
//! - `hosts/ID`: what each host reports it trusts and which CA issued its certificate, which a
//!   rotation waits on.
//! - `rule`: the residency rule (labels every host must carry), set when the cluster is created.
//! - `invitations/SHA256`: one invitation per hash of its secret (the secret itself is only in
//!   the token the operator was given): the name and labels the invited host will have, when it
//!   expires, and which host used it.
//! - `revoked/ID`: hosts removed for good; their certificates are refused from then on.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use doppel_store::{Command, Op, Outcome, Space, Store, StoreError};
use doppel_trust::{ClusterCa, HostIdentity, Labels};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::ReplicatedStore;
use crate::types::NodeId;

const TABLE: &str = "trust";
const CA: &[u8] = b"ca";
const RULE: &[u8] = b"rule";
const LIFETIME: &[u8] = b"lifetime";

fn space() -> Space {
    Space::system(TABLE)
}

/// How long a host certificate is valid. A host renews its own well before.
pub const CERT_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);

/// The longest an invitation may stay open.
pub const MAX_INVITATION: Duration = Duration::from_secs(7 * 24 * 3600);

/// Why an authority operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AuthorityError {
    /// What was asked for is not allowed (the reason, for the operator).
    #[error("{0}")]
    Refused(String),
    /// The store could not answer.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The kept CA is damaged, or signing failed.
    #[error("{0}")]
    Trust(#[from] doppel_trust::TrustError),
}

/// A CA as the store keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct CaPems {
    pub cert_pem: String,
    pub key_pem: String,
}

impl CaPems {
    fn of(ca: &ClusterCa) -> CaPems {
        CaPems {
            cert_pem: ca.cert_pem().to_string(),
            key_pem: ca.key_pem(),
        }
    }

    pub fn ca(&self) -> Result<ClusterCa, doppel_trust::TrustError> {
        ClusterCa::from_pem(&self.cert_pem, &self.key_pem)
    }
}

/// The cluster's CAs: the one that signs, and during a rotation the next or the retiring one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct KeptCas {
    #[serde(flatten)]
    pub signing: CaPems,
    /// A rotation's first phase: every host is to trust this CA before any host uses it.
    #[serde(default)]
    pub next: Option<CaPems>,
    /// A rotation's second phase: the old CA's certificate, trusted until every host's
    /// certificate comes from the new one.
    #[serde(default)]
    pub retiring: Option<String>,
}

impl KeptCas {
    /// Every CA certificate a host must trust now, PEM.
    pub fn trusted_pem(&self) -> String {
        let mut pem = self.signing.cert_pem.clone();
        if let Some(next) = &self.next {
            pem.push_str(&next.cert_pem);
        }
        if let Some(retiring) = &self.retiring {
            pem.push_str(retiring);
        }
        pem
    }

    /// The fingerprint of the CA that signs.
    pub fn signing_fingerprint(&self) -> String {
        pem_fingerprint(&self.signing.cert_pem)
    }

    pub fn decode(bytes: &[u8]) -> Result<KeptCas, AuthorityError> {
        serde_json::from_slice(bytes)
            .map_err(|e| AuthorityError::Refused(format!("the kept CA is damaged: {e}")))
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("CAs always encode")
    }
}

/// The SHA-256 fingerprint of the first certificate in `pem` (empty if there is none).
pub(crate) fn pem_fingerprint(pem: &str) -> String {
    doppel_trust::certificates(pem)
        .ok()
        .and_then(|c| c.into_iter().next())
        .map(|der| doppel_trust::fingerprint(&der))
        .unwrap_or_default()
}

/// What a host reports about its own trust (`hosts/ID`), for a rotation to wait on.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct HostTrust {
    /// The fingerprints of the CAs it trusts.
    pub trusts: Vec<String>,
    /// The fingerprint of the CA that issued its certificate.
    pub issuer: String,
}

/// An open invitation, as the store keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invitation {
    /// The name the invited host gets.
    pub name: String,
    /// The labels it gets.
    pub labels: Labels,
    /// When it stops being good, in ms since the Unix epoch.
    pub expires_ms: u64,
    /// The host that used it, once one did.
    #[serde(default)]
    pub used_by: Option<NodeId>,
}

/// What a host with an invitation sends to get its certificate.
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct EnrolRequest {
    /// The invitation's secret.
    pub secret: String,
    /// The raft id the host chose.
    pub id: NodeId,
    /// A certificate request for the key it made.
    pub csr_pem: String,
}

/// What it gets back.
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct EnrolAnswer {
    /// Its certificate, then the CA's.
    pub chain_pem: String,
    /// Every CA the cluster trusts.
    pub roots_pem: String,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

fn invitation_key(secret: &str) -> Vec<u8> {
    format!("invitations/{}", hash(secret)).into_bytes()
}

fn revoked_key(id: NodeId) -> Vec<u8> {
    format!("revoked/{id}").into_bytes()
}

/// A name or label part: 1–63 of `a-z A-Z 0-9 . _ -`, as certificates and placement rules carry
/// them.
pub fn check_label_part(what: &str, text: &str) -> Result<(), AuthorityError> {
    let ok = !text.is_empty()
        && text.len() <= 63
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(AuthorityError::Refused(format!(
            "{what} {text:?} must be 1 to 63 letters, digits, '.', '_' or '-'"
        )))
    }
}

/// The token an invited host joins with: the CA's fingerprint (so that it knows it reached the
/// cluster that invited it) and the invitation's secret.
pub struct InvitationToken {
    /// SHA-256 of the CA certificate, hex.
    pub ca_fingerprint: String,
    /// The one-time secret.
    pub secret: String,
}

const TOKEN_PREFIX: &str = "doppel-invitation-v1";

impl InvitationToken {
    /// Reads a token as `doppel hosts invite` printed it.
    pub fn parse(text: &str) -> Result<InvitationToken, String> {
        let mut parts = text.trim().split(':');
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(TOKEN_PREFIX), Some(fp), Some(secret), None)
                if fp.len() == 64 && secret.len() == 64 =>
            {
                Ok(InvitationToken {
                    ca_fingerprint: fp.to_string(),
                    secret: secret.to_string(),
                })
            }
            _ => Err(
                "this is not an invitation: make one on a member with `doppel hosts invite NAME`"
                    .to_string(),
            ),
        }
    }
}

impl std::fmt::Display for InvitationToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{TOKEN_PREFIX}:{}:{}", self.ca_fingerprint, self.secret)
    }
}

/// Keeps `ca` in the store, with the lifetime of the certificates it issues (when the cluster is
/// created).
pub(crate) async fn keep_ca(
    store: &dyn Store,
    ca: &ClusterCa,
    lifetime: Duration,
) -> Result<(), StoreError> {
    let kept = KeptCas {
        signing: CaPems::of(ca),
        next: None,
        retiring: None,
    };
    store
        .apply(Command::new(Op::PutMany {
            space: space(),
            pairs: vec![
                (CA.to_vec(), kept.encode()),
                (
                    LIFETIME.to_vec(),
                    lifetime.as_secs().to_string().into_bytes(),
                ),
            ],
        }))
        .await?;
    Ok(())
}

fn no_ca() -> AuthorityError {
    AuthorityError::Refused("this cluster keeps no CA; it cannot issue certificates".into())
}

/// The cluster's CAs as the leader knows them, with their stored bytes (for a compare-and-swap).
pub(crate) async fn kept_cas(store: &dyn Store) -> Result<(KeptCas, Vec<u8>), AuthorityError> {
    let bytes = store.get(&space(), CA).await?.ok_or_else(no_ca)?;
    Ok((KeptCas::decode(&bytes)?, bytes))
}

/// The cluster's CAs as this host's applied state has them (possibly a little behind).
pub(crate) fn local_cas(store: &ReplicatedStore) -> Result<KeptCas, AuthorityError> {
    let bytes = store.read_local(&space(), CA)?.ok_or_else(no_ca)?;
    KeptCas::decode(&bytes)
}

/// Replaces the kept CAs `was` (their stored bytes) by `next`; false if another change came first.
pub(crate) async fn swap_cas(
    store: &dyn Store,
    was: Vec<u8>,
    next: &KeptCas,
) -> Result<bool, StoreError> {
    let outcome = store
        .apply(Command::new(Op::CompareAndSwap {
            space: space(),
            key: CA.to_vec(),
            expected: Some(was),
            value: next.encode(),
        }))
        .await?;
    Ok(!matches!(outcome, Outcome::Conflict { .. }))
}

async fn kept_ca(store: &dyn Store) -> Result<(ClusterCa, KeptCas), AuthorityError> {
    let (kept, _) = kept_cas(store).await?;
    Ok((kept.signing.ca()?, kept))
}

/// How long the certificates this cluster issues are valid, as this host's applied state says.
pub(crate) fn local_lifetime(store: &ReplicatedStore) -> Duration {
    store
        .read_local(&space(), LIFETIME)
        .ok()
        .flatten()
        .and_then(|b| String::from_utf8(b).ok()?.parse::<u64>().ok())
        .map_or(CERT_LIFETIME, Duration::from_secs)
}

async fn lifetime(store: &dyn Store) -> Result<Duration, StoreError> {
    Ok(store
        .get(&space(), LIFETIME)
        .await?
        .and_then(|b| String::from_utf8(b).ok()?.parse::<u64>().ok())
        .map_or(CERT_LIFETIME, Duration::from_secs))
}

fn host_key(id: NodeId) -> Vec<u8> {
    format!("hosts/{id}").into_bytes()
}

/// Records what host `id` trusts and which CA issued its certificate.
pub(crate) async fn report(
    store: &dyn Store,
    id: NodeId,
    trust: &HostTrust,
) -> Result<(), StoreError> {
    store
        .apply(Command::new(Op::Put {
            space: space(),
            key: host_key(id),
            value: serde_json::to_vec(trust).expect("a report always encodes"),
        }))
        .await?;
    Ok(())
}

/// What host `id` last reported, as the leader knows it.
pub(crate) async fn reported(store: &dyn Store, id: NodeId) -> Result<HostTrust, StoreError> {
    Ok(store
        .get(&space(), &host_key(id))
        .await?
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default())
}

/// The residency rule: labels every host of the cluster must carry.
pub async fn rule(store: &dyn Store) -> Result<Labels, StoreError> {
    Ok(match store.get(&space(), RULE).await? {
        Some(bytes) => serde_json::from_slice(&bytes).unwrap_or_default(),
        None => Labels::new(),
    })
}

/// Sets the residency rule (when the cluster is created).
pub(crate) async fn set_rule(store: &dyn Store, rule: &Labels) -> Result<(), StoreError> {
    store
        .apply(Command::new(Op::Put {
            space: space(),
            key: RULE.to_vec(),
            value: serde_json::to_vec(rule).expect("labels always encode"),
        }))
        .await?;
    Ok(())
}

/// Why `labels` break `rule`, if they do.
pub fn breaks_rule(rule: &Labels, labels: &Labels) -> Option<String> {
    let missing: Vec<String> = rule
        .iter()
        .filter(|(k, v)| labels.get(*k) != Some(*v))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    (!missing.is_empty()).then(|| {
        format!(
            "this cluster requires every host to carry {}: a host without is refused",
            missing.join(", ")
        )
    })
}

/// Opens an invitation for a host called `name` with `labels`, good for one join within `ttl`.
/// Answers the token to give to whoever starts that host.
pub async fn invite(
    store: &dyn Store,
    name: &str,
    labels: &Labels,
    ttl: Duration,
) -> Result<InvitationToken, AuthorityError> {
    check_label_part("the host name", name)?;
    for (k, v) in labels {
        check_label_part("a label key", k)?;
        check_label_part("a label value", v)?;
    }
    if ttl.is_zero() || ttl > MAX_INVITATION {
        return Err(AuthorityError::Refused(format!(
            "an invitation expires within 1 s to {} h",
            MAX_INVITATION.as_secs() / 3600
        )));
    }
    if let Some(why) = breaks_rule(&rule(store).await?, labels) {
        return Err(AuthorityError::Refused(why));
    }
    let (ca, _) = kept_ca(store).await?;
    let mut raw = [0u8; 32];
    getrandom::fill(&mut raw)
        .map_err(|e| AuthorityError::Refused(format!("no randomness: {e}")))?;
    let secret = hex::encode(raw);
    let invitation = Invitation {
        name: name.to_string(),
        labels: labels.clone(),
        expires_ms: now_ms().saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX)),
        used_by: None,
    };
    store
        .apply(Command::new(Op::Put {
            space: space(),
            key: invitation_key(&secret),
            value: serde_json::to_vec(&invitation).expect("an invitation always encodes"),
        }))
        .await?;
    Ok(InvitationToken {
        ca_fingerprint: ca.fingerprint(),
        secret,
    })
}

/// Uses an invitation: checks it, marks it used by `req.id` (once, through the log: of two hosts
/// with the same token only one gets a certificate), and issues the certificate it promises.
pub(crate) async fn redeem(
    store: &dyn Store,
    req: &EnrolRequest,
) -> Result<EnrolAnswer, AuthorityError> {
    let refused = |why: &str| AuthorityError::Refused(why.to_string());
    let key = invitation_key(&req.secret);
    let bytes = store.get(&space(), &key).await?.ok_or_else(|| {
        refused("no such invitation: it was never made, or was made for another cluster")
    })?;
    let invitation: Invitation =
        serde_json::from_slice(&bytes).map_err(|_| refused("the invitation is damaged"))?;
    if invitation.used_by.is_some_and(|by| by != req.id) {
        return Err(refused(
            "the invitation was already used; ask for a new one",
        ));
    }
    if now_ms() >= invitation.expires_ms {
        return Err(refused("the invitation expired; ask for a new one"));
    }
    if store.get(&space(), &revoked_key(req.id)).await?.is_some() {
        return Err(refused("that host id was removed from the cluster"));
    }
    if let Some(why) = breaks_rule(&rule(store).await?, &invitation.labels) {
        return Err(AuthorityError::Refused(why));
    }
    if invitation.used_by.is_none() {
        let used = Invitation {
            used_by: Some(req.id),
            ..invitation.clone()
        };
        let swapped = store
            .apply(Command::new(Op::CompareAndSwap {
                space: space(),
                key,
                expected: Some(bytes),
                value: serde_json::to_vec(&used).expect("an invitation always encodes"),
            }))
            .await?;
        if matches!(swapped, Outcome::Conflict { .. }) {
            return Err(refused(
                "the invitation was already used; ask for a new one",
            ));
        }
    }
    let (ca, kept) = kept_ca(store).await?;
    let who = HostIdentity {
        id: req.id,
        name: invitation.name,
        labels: invitation.labels,
    };
    let cert = ca.issue(&req.csr_pem, &who, lifetime(store).await?)?;
    tracing::info!(host = %who, "issued a certificate to an invited host");
    Ok(EnrolAnswer {
        chain_pem: format!("{cert}{}", ca.cert_pem()),
        roots_pem: kept.trusted_pem(),
    })
}

/// Marks host `id` removed for good: its certificate is refused from now on.
pub(crate) async fn revoke(store: &dyn Store, id: NodeId) -> Result<(), StoreError> {
    store
        .apply(Command::new(Op::Put {
            space: space(),
            key: revoked_key(id),
            value: now_ms().to_string().into_bytes(),
        }))
        .await?;
    Ok(())
}

/// Whether host `id` was removed for good, as this host's applied state says.
pub(crate) fn is_revoked(engine: &doppel_store::Engine, id: NodeId) -> bool {
    engine
        .get(&space(), &revoked_key(id))
        .ok()
        .flatten()
        .is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_reads_back_and_garbage_is_refused() {
        let token = InvitationToken {
            ca_fingerprint: "a".repeat(64),
            secret: "b".repeat(64),
        };
        let back = InvitationToken::parse(&token.to_string()).unwrap();
        assert_eq!(
            (back.ca_fingerprint, back.secret),
            ("a".repeat(64), "b".repeat(64))
        );
        for bad in ["", "doppel-invitation-v1:x:y", &"c".repeat(64)] {
            assert!(InvitationToken::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_rule_names_what_is_missing() {
        let rule: Labels = [("jurisdiction".into(), "de".into())].into();
        let fr: Labels = [("jurisdiction".into(), "fr".into())].into();
        assert!(breaks_rule(&rule, &fr).unwrap().contains("jurisdiction=de"));
        assert!(breaks_rule(&rule, &rule).is_none());
        assert!(breaks_rule(&Labels::new(), &fr).is_none());
    }
}
