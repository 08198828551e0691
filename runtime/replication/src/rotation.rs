//! Keeping this host's certificate current, and rotating the cluster CA with no downtime.
//!
//! Every host runs a keeper ([`spawn_keeper`]) that follows the kept CAs (`authority.rs`) in its
//! applied state:
//! - it trusts exactly the CAs the cluster trusts now (and rewrites `DATA/tls/ca.pem`, which the
//!   CLI on the same machine reads);
//! - it renews its own certificate, for the same key and identity, when a third of its lifetime
//!   is left or when the CA that issued it no longer signs;
//! - a host that keeps the CA key in its data directory (`tls/ca.key`) keeps the signing one;
//! - it reports what it trusts and which CA issued its certificate (`hosts/ID`).
//!
//! A rotation ([`rotate_ca`]) takes three steps, each a compare-and-swap on the kept CAs, and
//! waits between them for every member's report, so that no host ever presents a certificate a
//! peer does not trust yet:
//! 1. a new CA is made and trusted beside the old one (`next`);
//! 2. once every host trusts it, it signs and the old one is only trusted (`retiring`): every
//!    host renews its certificate from the new CA;
//! 3. once every host presents a certificate from the new CA, the old one is trusted no more.
//!
//! A rotation that stopped (a member was down, the host driving it died) goes on from where it
//! stopped when it is asked for again; until then the cluster works with both CAs trusted.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use doppel_store::StoreError;
use doppel_trust::ClusterCa;

use crate::ReplicatedStore;
use crate::authority::{self, AuthorityError, CaPems, HostTrust, KeptCas, pem_fingerprint};
use crate::credentials::{Credentials, tls_dir};
use crate::types::NodeId;

/// How often the keeper looks at its certificate when nothing in the store changed.
const TICK: Duration = Duration::from_millis(500);

/// Starts this host's keeper.
pub(crate) fn spawn_keeper(
    store: Arc<ReplicatedStore>,
    credentials: Arc<Credentials>,
    data: PathBuf,
    id: NodeId,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut changes = store.system_changes();
        let mut reported: Option<HostTrust> = None;
        let mut last_error = String::new();
        loop {
            match keep(&store, &credentials, &data, id, &mut reported).await {
                Ok(()) => last_error.clear(),
                // Said once per distinct problem: the keeper tries again every tick.
                Err(e) if e.to_string() != last_error => {
                    last_error = e.to_string();
                    tracing::warn!(error = %last_error, "could not keep this host's certificate current");
                }
                Err(_) => {}
            }
            tokio::select! {
                changed = changes.changed() => if changed.is_err() { tokio::time::sleep(TICK).await },
                () = tokio::time::sleep(TICK) => {}
            }
        }
    })
}

/// One look: trust what the cluster trusts, renew if due, keep the CA key, report.
async fn keep(
    store: &ReplicatedStore,
    credentials: &Credentials,
    data: &Path,
    id: NodeId,
    reported: &mut Option<HostTrust>,
) -> Result<(), AuthorityError> {
    let kept = match authority::local_cas(store) {
        Ok(kept) => kept,
        // A cluster being created keeps its CA a moment after it starts.
        Err(AuthorityError::Refused(_)) if reported.is_none() => return Ok(()),
        Err(e) => return Err(e),
    };
    let trusted = kept.trusted_pem();
    if credentials.roots_pem() != trusted {
        credentials.trust(&trusted)?;
        credentials.save(data).map_err(refused)?;
        tracing::info!(cas = ?credentials.root_fingerprints(), "this host now trusts the cluster's CAs");
    }
    let lifetime = authority::local_lifetime(store);
    let left = credentials
        .not_after()?
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    let signing = kept.signing_fingerprint();
    let rotated = credentials.issuer_fingerprint().as_deref() != Some(signing.as_str());
    if rotated || left < lifetime / 3 {
        let ca = kept.signing.ca()?;
        let cert = ca.issue(&credentials.request()?, credentials.identity(), lifetime)?;
        credentials.renew(&format!("{cert}{}", ca.cert_pem()))?;
        credentials.save(data).map_err(refused)?;
        let why = if rotated {
            "the cluster CA was rotated"
        } else {
            "a third of its lifetime is left"
        };
        tracing::info!(
            why,
            valid_for_s = lifetime.as_secs(),
            "renewed this host's certificate"
        );
    }
    keep_ca_key(data, &kept.signing)?;
    let now = HostTrust {
        trusts: credentials.root_fingerprints(),
        issuer: credentials.issuer_fingerprint().unwrap_or_default(),
    };
    if reported.as_ref() != Some(&now) {
        authority::report(store, id, &now).await?;
        *reported = Some(now);
    }
    Ok(())
}

fn refused(e: impl std::fmt::Display) -> AuthorityError {
    AuthorityError::Refused(e.to_string())
}

/// The host that keeps the CA key in its data directory (for offline keeping) keeps the one
/// that signs now.
fn keep_ca_key(data: &Path, signing: &CaPems) -> Result<(), AuthorityError> {
    let path = tls_dir(data).join("ca.key");
    match std::fs::read_to_string(&path) {
        Ok(text) if text != signing.key_pem => {
            doppel_store::files::replace_private(&path, signing.key_pem.as_bytes())
                .map_err(|e| refused(format!("{}: {e}", path.display())))?;
            tracing::info!(path = %path.display(), "kept the new CA key");
            Ok(())
        }
        _ => Ok(()),
    }
}

/// What a finished rotation replaced.
#[derive(Clone, Debug)]
pub struct Rotated {
    /// The fingerprint of the CA trusted no more.
    pub from: String,
    /// The fingerprint of the CA that signs now.
    pub to: String,
}

/// Rotates the cluster CA (see the module's doc), telling `step` what happens. Waits up to
/// `patience` for every member at each step.
pub(crate) async fn rotate_ca(
    store: &ReplicatedStore,
    name: &str,
    patience: Duration,
    step: &(dyn Fn(String) + Send + Sync),
) -> Result<Rotated, AuthorityError> {
    let (mut kept, mut bytes) = authority::kept_cas(store).await?;
    let from = match &kept.retiring {
        Some(old) => pem_fingerprint(old),
        None => kept.signing_fingerprint(),
    };
    if kept.next.is_none() && kept.retiring.is_none() {
        let new = ClusterCa::create(name)?;
        let next = KeptCas {
            next: Some(CaPems {
                cert_pem: new.cert_pem().to_string(),
                key_pem: new.key_pem(),
            }),
            ..kept.clone()
        };
        advance(store, bytes, &next).await?;
        step(format!(
            "made a new CA {}: every host trusts it beside the old one {}",
            short(&new.fingerprint()),
            short(&from)
        ));
        (kept, bytes) = authority::kept_cas(store).await?;
    } else {
        step(format!(
            "a rotation away from CA {} was under way; going on with it",
            short(&from)
        ));
    }
    if let Some(next) = kept.next.clone() {
        let fp = pem_fingerprint(&next.cert_pem);
        every_host(store, patience, "trust the new CA", step, |r| {
            r.trusts.contains(&fp)
        })
        .await?;
        let signing = KeptCas {
            signing: next,
            next: None,
            retiring: Some(kept.signing.cert_pem.clone()),
        };
        advance(store, bytes, &signing).await?;
        step(format!(
            "every host trusts CA {}: it signs from now on, and every host renews its certificate from it",
            short(&fp)
        ));
        (kept, bytes) = authority::kept_cas(store).await?;
    }
    let to = kept.signing_fingerprint();
    if kept.retiring.is_some() {
        every_host(
            store,
            patience,
            "present a certificate from the new CA",
            step,
            |r| r.issuer == to,
        )
        .await?;
        let done = KeptCas {
            retiring: None,
            ..kept.clone()
        };
        advance(store, bytes, &done).await?;
        step(format!(
            "every host presents a certificate from CA {}: the old CA {} is trusted no more",
            short(&to),
            short(&from)
        ));
        every_host(store, patience, "drop the old CA", step, |r| {
            r.trusts == [to.clone()]
        })
        .await?;
    }
    Ok(Rotated { from, to })
}

fn short(fingerprint: &str) -> &str {
    fingerprint.get(..16).unwrap_or(fingerprint)
}

async fn advance(
    store: &ReplicatedStore,
    was: Vec<u8>,
    next: &KeptCas,
) -> Result<(), AuthorityError> {
    if authority::swap_cas(store, was, next).await? {
        Ok(())
    } else {
        Err(AuthorityError::Refused(
            "the cluster's CAs changed while this rotation went on (another rotation?); run \
             `doppel cluster rotate-ca` again to go on from where it is"
                .into(),
        ))
    }
}

/// Waits until every member's report satisfies `done`.
async fn every_host(
    store: &ReplicatedStore,
    patience: Duration,
    what: &str,
    step: &(dyn Fn(String) + Send + Sync),
    done: impl Fn(&HostTrust) -> bool,
) -> Result<(), AuthorityError> {
    let deadline = Instant::now() + patience;
    let mut said = false;
    loop {
        let mut behind = Vec::new();
        for (id, addr) in store.members() {
            let report = authority::reported(store, id)
                .await
                .map_err(|e: StoreError| AuthorityError::Store(e))?;
            if !done(&report) {
                behind.push(format!("host {id} at {addr}"));
            }
        }
        if behind.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(AuthorityError::Refused(format!(
                "{} did not {what} within {} s (down, or cut off?). The rotation stops here and \
                 the cluster keeps working with both CAs trusted: run `doppel cluster rotate-ca` \
                 again once every host is back, or remove the missing ones with `doppel hosts rm`",
                behind.join(", "),
                patience.as_secs()
            )));
        }
        if !said {
            step(format!("waiting for {} to {what}", behind.join(", ")));
            said = true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
