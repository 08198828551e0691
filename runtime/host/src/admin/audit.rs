//! The audit trail: every admin change and every refused attempt (who, what, on what, how it
//! ended, when, through which host; a deploy's module digest), appended through raft to a hash
//! chain in the replicated store (`Op::Chain`, system table `audit`), so that every host holds the
//! same chain and an entry changed on one host breaks its copy there. `doppel audit` lists it;
//! `doppel audit --verify` has every host check its own copy and compares their heads.
//!
//! Refusals of callers without a valid credential (and of peers without a valid certificate) are
//! counted and written as one entry per [`KNOCKS_EVERY`] at most, so that nobody can flood the
//! replicated log by knocking.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::extract::{Query, State};
use axum::http::Method;
use doppel_api::{AuditCheck, AuditEntry, AuditVerdict};
use doppel_replication::{HostRoute, ReplicatedStore};
use doppel_store::chain::{self, HEAD};
use doppel_store::{Command, Op, Space, Store};
use serde::Deserialize;

use super::{AdminResult, AdminState};

const TABLE: &str = "audit";

/// At most one entry for refused unauthenticated callers per this long, per host.
pub const KNOCKS_EVERY: Duration = Duration::from_secs(10);

/// The peer route on which a host checks its own copy of the chain.
pub const CHECK: HostRoute = HostRoute("/audit/check");

fn space() -> Space {
    Space::system(TABLE)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Writes to the audit trail.
#[derive(Clone)]
pub struct Audit {
    store: Arc<ReplicatedStore>,
    host: String,
    knocks: Arc<Mutex<Knocks>>,
}

#[derive(Default)]
struct Knocks {
    count: u64,
    first: Option<(Method, String)>,
    written: Option<Instant>,
}

impl Audit {
    /// The trail in `store`, written by the host called `host`.
    pub fn new(store: Arc<ReplicatedStore>, host: &str) -> Audit {
        Audit {
            store,
            host: host.to_string(),
            knocks: Arc::default(),
        }
    }

    /// Appends an entry: `actor` did `method path`, which ended as `outcome`.
    pub async fn record(
        &self,
        actor: &str,
        method: &Method,
        path: &str,
        outcome: &str,
        detail: Option<String>,
    ) {
        self.record_at(actor, method, path, outcome, detail, None)
            .await
    }

    /// Like [`Audit::record`], for an action that started when the log reached `index`.
    pub async fn record_at(
        &self,
        actor: &str,
        method: &Method,
        path: &str,
        outcome: &str,
        detail: Option<String>,
        index: Option<u64>,
    ) {
        let entry = AuditEntry {
            seq: 0,
            time_ms: now_ms(),
            actor: actor.to_string(),
            via: self.host.clone(),
            action: format!("{method} {path}"),
            outcome: outcome.to_string(),
            detail,
            index,
        };
        let bytes = serde_json::to_vec(&entry).expect("an audit entry always encodes");
        let appended = self
            .store
            .apply(Command::new(Op::Chain {
                space: space(),
                entry: bytes,
            }))
            .await;
        if let Err(e) = appended {
            tracing::error!(error = %e, actor, action = %entry.action, outcome, "cannot write to the audit trail");
        }
    }

    /// Counts a refused caller without a valid credential; writes the count now and then.
    pub fn knocked(&self, method: &Method, path: &str) {
        let mut knocks = self.knocks.lock().unwrap_or_else(|e| e.into_inner());
        knocks.count += 1;
        knocks
            .first
            .get_or_insert_with(|| (method.clone(), path.to_string()));
        if knocks.written.is_some_and(|at| at.elapsed() < KNOCKS_EVERY) {
            return;
        }
        knocks.written = Some(Instant::now());
        let (count, (method, path)) = (
            std::mem::take(&mut knocks.count),
            knocks.first.take().unwrap_or_default(),
        );
        let audit = self.clone();
        tokio::spawn(async move {
            let outcome = format!("refused: {count} request(s) without a valid credential");
            audit
                .record("(unauthenticated)", &method, &path, &outcome, None)
                .await;
        });
    }

    /// Writes a summary of refused peers (the transport and the listener aggregate them).
    pub fn peers_refused(&self, summary: String) {
        let audit = self.clone();
        tokio::spawn(async move {
            audit
                .record(
                    "(peer)",
                    &Method::POST,
                    "/peer",
                    &format!("refused: {summary}"),
                    None,
                )
                .await;
        });
    }

    /// This host's copy of the chain, checked whole, with the hash of its entry `at` (its last
    /// entry if it has fewer) for comparing copies that reach different lengths.
    pub fn check(&self, at: u64) -> AuditCheck {
        let rows = self.store.scan_local(&space()).unwrap_or_default();
        let entries = rows.iter().filter(|(k, _)| k != HEAD).count() as u64;
        let at = at.min(entries);
        let hash_at = rows
            .iter()
            .find(|(k, _)| *k == chain::entry_key(at))
            .map(|(_, v)| hex::encode(&v[..32.min(v.len())]))
            .unwrap_or_default();
        AuditCheck {
            host: self.host.clone(),
            entries,
            at,
            hash_at,
            broken_at: chain::verify(&rows).err(),
            error: None,
        }
    }
}

#[derive(Deserialize)]
pub struct ListQuery {
    /// Only entries at or after this time (ms since the Unix epoch).
    #[serde(default)]
    since: Option<u64>,
}

/// `GET /v1/audit`: the trail (linearizable: every change acknowledged before is in it).
pub async fn list(
    State(state): State<AdminState>,
    Query(query): Query<ListQuery>,
) -> AdminResult<Json<Vec<AuditEntry>>> {
    let store = state.member.store();
    let mut out = Vec::new();
    let mut after: Option<Vec<u8>> = None;
    loop {
        let keys = store.list_keys(&space(), after.as_deref(), 1000).await?;
        let Some(last) = keys.last().cloned() else {
            break;
        };
        for key in keys.into_iter().filter(|k| k != HEAD) {
            let Some(value) = store.get(&space(), &key).await? else {
                continue;
            };
            let Ok(mut entry) =
                serde_json::from_slice::<AuditEntry>(value.get(32..).unwrap_or_default())
            else {
                continue;
            };
            entry.seq = std::str::from_utf8(&key)
                .ok()
                .and_then(|k| k.parse().ok())
                .unwrap_or(0);
            if query.since.is_none_or(|since| entry.time_ms >= since) {
                out.push(entry);
            }
        }
        after = Some(last);
    }
    Ok(Json(out))
}

/// `GET /v1/audit/verify`: every member checks its own copy; the verdict names the hosts whose
/// copy is broken or ends elsewhere than most.
pub async fn verify(State(state): State<AdminState>) -> AdminResult<Json<AuditVerdict>> {
    let own = state.audit.check(u64::MAX);
    let at = own.entries;
    let mut checks = vec![own];
    let this = state.member.id();
    let peers = state.member.peers().clone();
    let mut asks = tokio::task::JoinSet::new();
    for (id, addr) in state.member.store().members() {
        if id == this {
            continue;
        }
        let peers = peers.clone();
        asks.spawn(async move {
            peers
                .call::<u64, AuditCheck>(&addr, CHECK, Some(&at), Duration::from_secs(5))
                .await
                .unwrap_or_else(|e| AuditCheck {
                    host: addr.clone(),
                    entries: 0,
                    at: 0,
                    hash_at: String::new(),
                    broken_at: None,
                    error: Some(e.to_string()),
                })
        });
    }
    checks.extend(asks.join_all().await);
    Ok(Json(AuditVerdict::of(checks)))
}

/// The peer route a host checks its copy on.
pub fn peer_routes(audit: Audit) -> axum::Router {
    axum::Router::new().route(
        CHECK.0,
        axum::routing::post(move |Json(at): Json<u64>| {
            let audit = audit.clone();
            async move { Json(audit.check(at)) }
        }),
    )
}
