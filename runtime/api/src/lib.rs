//! The admin API's wire types, shared by the doppel host (server) and the `doppel` CLI (client).
//!
//! The admin API is HTTP + JSON under `/v1`, every request carrying `Authorization: Bearer TOKEN`:
//!
//! | method and path | body | answer |
//! |---|---|---|
//! | `POST /v1/modules` | component bytes | [`ModuleInfo`] (validated, stored content-addressed) |
//! | `PUT /v1/services/{name}` | [`DeployRequest`] | [`ServiceInfo`] |
//! | `GET /v1/services` | | `[`[`ServiceInfo`]`]` |
//! | `DELETE /v1/services/{name}?purge=true` | | [`ServiceInfo`] |
//! | `GET /v1/services/{name}/logs?follow=true&tail=N` | | [`LogLine`]s as JSON lines |
//! | `GET /v1/services/{name}/kv/{bucket}?after=K&limit=N` | | [`KeyPage`] |
//! | `GET`/`PUT`/`DELETE /v1/services/{name}/kv/{bucket}/{key}` | value bytes | value bytes |
//! | `GET /v1/host` | | [`HostInfo`] |
//! | `GET /v1/cluster` | | [`ClusterInfo`] |
//! | `GET /v1/cluster/token` | | the join token, as text |
//! | `DELETE /v1/hosts/{name}` | | [`HostStatus`] of the removed host |
//! | `POST /v1/services/{name}/migrate` | [`MigrateRequest`] | [`Progress`] as JSON lines |
//! | `POST /v1/hosts/{name}/drain` | [`DrainRequest`] | [`Progress`] as JSON lines |
//! | `POST /v1/hosts/{name}/undrain` | | [`HostStatus`] |
//! | `GET /v1/events?service=S&limit=N` | | `[`[`PlacementEvent`]`]`, oldest first |
//!
//! Errors come back with a 4xx/5xx status and an [`ApiError`] body.
//!
//! The wire-level rules both sides check live here too, once: service names
//! ([`check_service_name`]), labels ([`parse_label`]), the replicas range ([`MAX_REPLICAS`]), and
//! how a bearer credential is compared ([`auth`]).

pub mod auth;
pub mod outbound;
pub mod signing;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Resource limits of one service. Every field is set on the host; deploy requests send
/// [`LimitOverrides`] and the host fills in its defaults.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Linear memory one instance may grow to, in bytes.
    pub max_memory: u64,
    /// Wall-clock time one request may run, in milliseconds.
    pub timeout_ms: u64,
    /// Largest request body accepted, in bytes.
    pub max_body: u64,
    /// Longest key, in bytes.
    pub max_key: u64,
    /// Largest value, in bytes.
    pub max_value: u64,
    /// Total bytes (keys plus values) the service may store across its buckets.
    pub quota: u64,
    /// Requests the service may run at once on one host (its share of the host's instance
    /// pool); more wait briefly, then get 503 with `Retry-After`.
    #[serde(default = "default_max_instances")]
    pub max_instances: u64,
    /// Largest `wasi:blobstore` object, in bytes (objects count in [`Limits::quota`] too).
    #[serde(default = "default_max_object")]
    pub max_object: u64,
}

fn default_max_object() -> u64 {
    256 << 20
}

/// The instance pool every host has ([`Limits::max_instances`] is at most this).
pub const POOL_INSTANCES: u64 = 1000;

fn default_max_instances() -> u64 {
    POOL_INSTANCES / 4
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_memory: 128 << 20,
            timeout_ms: 30_000,
            max_body: 10 << 20,
            max_key: 1 << 10,
            max_value: 1 << 20,
            quota: 1 << 30,
            max_instances: default_max_instances(),
            max_object: default_max_object(),
        }
    }
}

/// Limits a deploy asks to change; `None` keeps the default.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitOverrides {
    /// See [`Limits::max_memory`].
    pub max_memory: Option<u64>,
    /// See [`Limits::timeout_ms`].
    pub timeout_ms: Option<u64>,
    /// See [`Limits::max_body`].
    pub max_body: Option<u64>,
    /// See [`Limits::max_key`].
    pub max_key: Option<u64>,
    /// See [`Limits::max_value`].
    pub max_value: Option<u64>,
    /// See [`Limits::quota`].
    pub quota: Option<u64>,
    /// See [`Limits::max_instances`].
    #[serde(default)]
    pub max_instances: Option<u64>,
    /// See [`Limits::max_object`].
    #[serde(default)]
    pub max_object: Option<u64>,
}

impl LimitOverrides {
    /// The defaults with these overrides applied.
    pub fn apply_to(&self, mut limits: Limits) -> Limits {
        let set = |field: &mut u64, value: Option<u64>| {
            if let Some(v) = value {
                *field = v;
            }
        };
        set(&mut limits.max_memory, self.max_memory);
        set(&mut limits.timeout_ms, self.timeout_ms);
        set(&mut limits.max_body, self.max_body);
        set(&mut limits.max_key, self.max_key);
        set(&mut limits.max_value, self.max_value);
        set(&mut limits.quota, self.quota);
        set(&mut limits.max_instances, self.max_instances);
        set(&mut limits.max_object, self.max_object);
        limits
    }
}

/// A stored, validated module.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ModuleInfo {
    /// `sha256:` and the hex digest of the component bytes.
    pub digest: String,
    /// Size of the component in bytes.
    pub size: u64,
    /// The interfaces the component imports.
    pub imports: Vec<String>,
}

/// A service's secrets by name. Printed (`{:?}`) as their names only, so that no log line, error
/// or panic that shows a request or a record ever shows a value.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secrets(pub BTreeMap<String, String>);

impl Secrets {
    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.0.keys().map(|k| (k, "(secret)")))
            .finish()
    }
}

/// Body of `PUT /v1/services/{name}`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeployRequest {
    /// Digest of a module uploaded with `POST /v1/modules`.
    pub module: String,
    /// Values the service reads through `wasi:config/store` (and its environment).
    #[serde(default)]
    pub config: BTreeMap<String, String>,
    /// Values the service reads through `wasi:config/store` only, kept sealed and never shown,
    /// logged or echoed (`doppel deploy --secret KEY=@FILE`).
    #[serde(default, skip_serializing_if = "Secrets::is_empty")]
    pub secrets: Secrets,
    /// Limits to change from the host's defaults.
    #[serde(default)]
    pub limits: LimitOverrides,
    /// Where the service may run and on how many hosts at once.
    #[serde(default)]
    pub placement: PlacementRules,
    /// The path (below the service's prefix) a restore drill calls to see that it answers;
    /// `/` when not given. See [`check_probe`].
    #[serde(default)]
    pub probe: Option<String>,
    /// Whether this service's components must be signed by a key the cluster trusts. Once set it
    /// stays set for later deploys of the name (see `doppel trust`).
    #[serde(default)]
    pub require_signatures: bool,
    /// Deploy a signed release older than the one running (refused otherwise; audited).
    #[serde(default)]
    pub allow_older: bool,
    /// Servers the service may call (`SCHEME://HOST[:PORT]`, see [`outbound`]); none by default.
    #[serde(default)]
    pub allow_outbound: Vec<String>,
}

/// The longest probe path a deploy accepts.
pub const MAX_PROBE_LEN: usize = 1024;

/// Checks a probe path: it starts with `/`, is at most [`MAX_PROBE_LEN`] bytes and holds only
/// printable ASCII without spaces (it is sent as a request target as it is).
pub fn check_probe(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err(format!("--probe must start with '/', not {path:?}"));
    }
    if path.len() > MAX_PROBE_LEN {
        return Err(format!("--probe is longer than {MAX_PROBE_LEN} bytes"));
    }
    if !path.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "--probe must be printable ASCII without spaces (percent-encode the rest): {path:?}"
        ));
    }
    Ok(())
}

/// Where a service may be active, and on how many hosts at once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlacementRules {
    /// Labels a host must have (every one) for the service to be active on it (`--on KEY=VALUE`).
    #[serde(default)]
    pub on: BTreeMap<String, String>,
    /// How many hosts the service is active on at once (`--replicas N`).
    #[serde(default = "one")]
    pub replicas: u32,
}

fn one() -> u32 {
    1
}

/// The most hosts a service may be active on at once (`--replicas`).
pub const MAX_REPLICAS: u32 = 100;

impl PlacementRules {
    /// Checks the rules as a deploy must: every label well-formed, replicas within
    /// `1..=`[`MAX_REPLICAS`].
    pub fn check(&self) -> Result<(), String> {
        for (key, value) in &self.on {
            check_label(key, value)?;
        }
        if !(1..=MAX_REPLICAS).contains(&self.replicas) {
            return Err(format!("--replicas must be between 1 and {MAX_REPLICAS}"));
        }
        Ok(())
    }
}

impl Default for PlacementRules {
    fn default() -> Self {
        PlacementRules {
            on: BTreeMap::new(),
            replicas: 1,
        }
    }
}

impl std::fmt::Display for PlacementRules {
    /// `2 replicas on provider=ionos, jurisdiction=de`, or `1 replica on any host`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let plural = if self.replicas == 1 { "" } else { "s" };
        write!(f, "{} replica{plural} on ", self.replicas)?;
        if self.on.is_empty() {
            return f.write_str("any host");
        }
        let labels: Vec<String> = self.on.iter().map(|(k, v)| format!("{k}={v}")).collect();
        f.write_str(&labels.join(", "))
    }
}

/// A deployed service as `doppel ls` shows it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ServiceInfo {
    /// The service name, also its URL prefix.
    pub name: String,
    /// Digest of the module it runs.
    pub module: String,
    /// Size of that module in bytes.
    pub size: u64,
    /// How many times this name has been deployed.
    pub version: u64,
    /// When the current version was deployed, in milliseconds since the Unix epoch.
    pub deployed_at_ms: u64,
    /// Requests answered by this host since it started.
    pub requests: u64,
    /// Requests that ended in a trap, a timeout or a 5xx from the host.
    pub errors: u64,
    /// Config keys set at deploy (values are not shown: they may be secrets).
    pub config_keys: Vec<String>,
    /// The names of its secrets (never their values).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secret_keys: Vec<String>,
    /// The limits in force.
    pub limits: Limits,
    /// Bytes the service stores.
    /// (`None` when the store could not say, e.g. during an election.)
    pub storage_bytes: Option<u64>,
    /// The hosts the service is active on (the others forward to them).
    #[serde(default)]
    pub active: Vec<String>,
    /// Its epoch: bumped whenever its active hosts change.
    #[serde(default)]
    pub epoch: u64,
    /// Where it may run and on how many hosts at once.
    #[serde(default)]
    pub placement: PlacementRules,
    /// Why its placement rules are not met now, when they are not.
    #[serde(default)]
    pub unmet: Option<String>,
    /// Hosts handing it over (finishing their requests, forwarding new ones).
    #[serde(default)]
    pub leaving: Vec<String>,
    /// The path a restore drill calls (below the service's prefix).
    #[serde(default = "root_path")]
    pub probe: String,
    /// The trusted keys whose signature over its component verified at deploy (by name).
    #[serde(default)]
    pub signed_by: Vec<String>,
    /// The release version its signed component carries, if any.
    #[serde(default)]
    pub release: Option<String>,
    /// Whether this service requires its components to be signed (the cluster may require it
    /// of every service: see `GET /v1/trust`).
    #[serde(default)]
    pub signatures_required: bool,
    /// The servers it may call.
    #[serde(default)]
    pub allow_outbound: Vec<String>,
}

fn root_path() -> String {
    "/".to_string()
}

/// Body of `POST /v1/services/{name}/migrate`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MigrateRequest {
    /// A host name, or `KEY=VALUE` for the least busy eligible host with that label.
    pub to: String,
    /// Which active host to move it off when it has several (default: the first one).
    #[serde(default)]
    pub from: Option<String>,
}

/// Body of `POST /v1/hosts/{name}/drain`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrainRequest {
    /// Also take the host out of the cluster once no service is active on it.
    #[serde(default)]
    pub remove: bool,
}

/// One line of the progress stream of a migration or a drain (JSON lines).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Progress {
    /// A step began or ended.
    Step {
        /// What happens.
        text: String,
    },
    /// One service moved.
    Moved(MoveReport),
    /// The operation failed; nothing further follows.
    Failed {
        /// Why.
        error: String,
    },
    /// The operation finished.
    Done {
        /// A one-line summary.
        text: String,
    },
}

/// What one move of a service measured.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MoveReport {
    /// The service.
    pub service: String,
    /// The host it left.
    pub from: String,
    /// The host it is active on now.
    pub to: String,
    /// Its epoch once the move is complete.
    pub epoch: u64,
    /// Milliseconds to get the target ready (its copy of the module loaded and instantiated).
    pub warm_ms: u64,
    /// Milliseconds from the start of the switch until the target was active.
    pub switch_ms: u64,
    /// Milliseconds the old host took to finish the requests it was running.
    pub drain_ms: u64,
    /// Requests the old host was running when it stopped taking new ones.
    pub finished: u64,
    /// Requests the old host forwarded to the target during the move.
    pub forwarded: u64,
    /// Requests of the service that failed on the old host during the move.
    pub errors: u64,
}

/// One placement change, as `doppel events` shows it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PlacementEvent {
    /// Milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// The service.
    pub service: String,
    /// The epoch it started.
    pub epoch: u64,
    /// Hosts active from then on.
    pub active: Vec<String>,
    /// Hosts handing it over.
    pub leaving: Vec<String>,
    /// Why.
    pub cause: String,
    /// Who.
    pub actor: String,
    /// Rules not met, if any.
    pub unmet: Option<String>,
}

/// One line a service wrote to stdout or stderr, or the host wrote about it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LogLine {
    /// Milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// `stdout`, `stderr`, `host`, or the level of a `wasi:logging` message (`trace`, `debug`,
    /// `info`, `warn`, `error`, `critical`).
    pub stream: String,
    /// The text, without its newline.
    pub line: String,
}

/// One page of keys of a bucket.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct KeyPage {
    /// The keys, in byte order.
    pub keys: Vec<String>,
    /// Pass as `after` for the next page; absent on the last page.
    pub next: Option<String>,
}

/// What `GET /v1/host` says about the host.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HostInfo {
    /// The host's name.
    pub name: String,
    /// doppel's version.
    pub version: String,
    /// Where service traffic is served.
    pub listen: String,
    /// Where the admin API is served.
    pub admin: String,
    /// The data directory.
    pub data_dir: String,
    /// How many services are deployed.
    pub services: usize,
}

/// The body of every error answer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ApiError {
    /// What went wrong and, where there is one, what to do about it.
    pub error: String,
}

/// The cluster as `doppel status` shows it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ClusterInfo {
    /// The leader's id, when one is known.
    pub leader: Option<String>,
    /// The raft term (it grows with every election).
    pub term: u64,
    /// The leader lease the answering host runs with, in ms: every member runs with the same.
    #[serde(default)]
    pub lease_ms: u64,
    /// Every member.
    pub hosts: Vec<HostStatus>,
    /// The residency rule: labels every host of the cluster carries (`--require-label`).
    #[serde(default)]
    pub residency: BTreeMap<String, String>,
}

/// What a credential may do; each role may do what the ones before it may.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads the cluster, services, logs, events and the audit trail.
    Viewer,
    /// Also deploys, removes, migrates, drains, and reads and writes services' records.
    Operator,
    /// Also manages hosts and credentials.
    Admin,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        })
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Role, String> {
        match s {
            "viewer" => Ok(Role::Viewer),
            "operator" => Ok(Role::Operator),
            "admin" => Ok(Role::Admin),
            _ => Err(format!("{s:?} is not a role: viewer, operator or admin")),
        }
    }
}

/// One entry of the audit trail.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Its number in the chain (from 1).
    #[serde(default)]
    pub seq: u64,
    /// When (ms since the Unix epoch, the recording host's clock).
    pub time_ms: u64,
    /// Who: the credential's name, `(unauthenticated)` or `(peer)`.
    pub actor: String,
    /// Through which host.
    pub via: String,
    /// What: method and path.
    pub action: String,
    /// How it ended: `done`, `failed: STATUS`, `refused: …`.
    pub outcome: String,
    /// More: a deploy's module digest.
    #[serde(default)]
    pub detail: Option<String>,
    /// The last raft log index when the action started: restoring a backup to this index
    /// (`doppel restore --before-event SEQ`) gives the state just before it. Absent in entries
    /// not tied to a request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<u64>,
}

/// One host's check of its own copy of the audit trail.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AuditCheck {
    /// The host (its name, or its address if it did not answer).
    pub host: String,
    /// How many entries its copy has.
    pub entries: u64,
    /// The entry whose hash it reports.
    pub at: u64,
    /// That entry's hash (hex).
    pub hash_at: String,
    /// The first entry whose link is broken in its copy, if one is.
    pub broken_at: Option<u64>,
    /// Why it did not answer, if it did not.
    pub error: Option<String>,
}

/// `doppel audit --verify`: every host's check, and the hosts whose copy was altered.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AuditVerdict {
    /// Every host's check.
    pub checks: Vec<AuditCheck>,
    /// Hosts whose copy is broken, or differs from most copies at the same entry.
    pub altered: Vec<String>,
    /// Hosts that did not answer.
    pub unreachable: Vec<String>,
}

impl AuditVerdict {
    /// The verdict on `checks`: a copy is altered if its chain is broken, or if its hash at the
    /// entry it was asked about differs from the hash most copies that reach that entry have.
    pub fn of(checks: Vec<AuditCheck>) -> AuditVerdict {
        let answered: Vec<&AuditCheck> = checks.iter().filter(|c| c.error.is_none()).collect();
        let mut most: BTreeMap<(u64, &str), usize> = BTreeMap::new();
        for c in &answered {
            *most.entry((c.at, c.hash_at.as_str())).or_default() += 1;
        }
        let majority = |at: u64| {
            most.iter()
                .filter(|((a, _), _)| *a == at)
                .max_by_key(|(_, n)| **n)
                .map(|((_, h), _)| *h)
        };
        let altered = answered
            .iter()
            .filter(|c| c.broken_at.is_some() || majority(c.at) != Some(c.hash_at.as_str()))
            .map(|c| c.host.clone())
            .collect();
        let unreachable = checks
            .iter()
            .filter(|c| c.error.is_some())
            .map(|c| c.host.clone())
            .collect();
        AuditVerdict {
            checks,
            altered,
            unreachable,
        }
    }
}

/// `POST /v1/tokens`: make a named credential.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TokenRequest {
    /// Its name (whose it is).
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// Seconds until it expires; `None`: never.
    #[serde(default)]
    pub expires_secs: Option<u64>,
}

/// The answer: the credential, shown this once.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NewToken {
    /// What the store keeps of it.
    pub info: TokenInfo,
    /// The credential (`--token`, `DOPPEL_TOKEN`); not kept anywhere by the cluster.
    pub token: String,
}

/// A credential as `doppel tokens ls` shows it (never its secret).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TokenInfo {
    /// Its name.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// When it was made (ms since the Unix epoch).
    pub created_ms: u64,
    /// Who made it.
    pub created_by: String,
    /// When it expires, if it does.
    pub expires_ms: Option<u64>,
    /// When it was revoked, if it was.
    pub revoked_ms: Option<u64>,
}

/// `POST /v1/hosts/invitations`: invite a host to join.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct InviteRequest {
    /// The name the host will have.
    pub name: String,
    /// The labels it will carry (bound into its certificate).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Seconds until the invitation expires.
    pub expires_secs: u64,
}

/// The answer: the one-time token to start the host with.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct InvitationAnswer {
    /// The host's name.
    pub name: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// `doppel host --join PEER --token TOKEN`: good for one join.
    pub token: String,
    /// Peer addresses of the cluster's members, any of which the host may join through.
    pub peers: Vec<String>,
    /// Seconds until it expires.
    pub expires_secs: u64,
}

/// One member of the cluster.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HostStatus {
    /// Raft id.
    pub id: String,
    /// Name given at its start.
    pub name: String,
    /// Admin (and peer) address.
    pub admin: String,
    /// Service traffic address, once the host has registered.
    pub listen: Option<String>,
    /// `leader`, `voter` or `learner` (still catching up).
    pub role: String,
    /// Log entries it is behind the leader, when the leader knows.
    pub behind: Option<u64>,
    /// `up` when it answered a probe just now, else `down`.
    pub health: String,
    /// Whether this is the host that answered.
    pub this: bool,
    /// Its labels (`--label KEY=VALUE` at start).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Whether it is drained: no service becomes active on it until `doppel undrain`.
    #[serde(default)]
    pub drained: bool,
}

/// Checks one label or placement rule, `KEY=VALUE`: keys and values of 1 to 63 characters
/// `a-z A-Z 0-9 - _ . /`, so that they read the same in flags, JSON and `doppel status`.
pub fn parse_label(text: &str) -> Result<(String, String), String> {
    let Some((key, value)) = text.split_once('=') else {
        return Err(format!(
            "{text:?} is not KEY=VALUE (for example provider=ionos)"
        ));
    };
    check_label(key, value)?;
    Ok((key.to_string(), value.to_string()))
}

/// See [`parse_label`].
pub fn check_label(key: &str, value: &str) -> Result<(), String> {
    let ok = |s: &str| {
        (1..=63).contains(&s.len())
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
    };
    if !ok(key) || !ok(value) {
        return Err(format!(
            "label {key}={value}: keys and values are 1 to 63 characters a-z, A-Z, 0-9, '-', '_', '.', '/'"
        ));
    }
    Ok(())
}

/// Checks a service name: it becomes a URL path segment and a bucket namespace, so 1 to 63
/// characters `a-z 0-9 -`, starting with a letter. The error says so in full.
pub fn check_service_name(name: &str) -> Result<(), String> {
    let valid = (1..=63).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "invalid service name {name:?}: use 1 to 63 characters a-z, 0-9 and '-', starting \
             with a letter (it becomes the URL prefix)"
        ))
    }
}

/// Checks a module digest as the API takes it: `sha256:` and 64 lowercase hex digits, nothing
/// else (a digest also names a file in a host's module cache).
pub fn check_module_digest(digest: &str) -> Result<(), String> {
    let hex = digest.strip_prefix("sha256:").unwrap_or_default();
    if hex.len() == 64
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        Ok(())
    } else {
        Err(format!(
            "{digest:?} is not a module digest: it is `sha256:` and 64 lowercase hex digits, as \
             the upload answered"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_digests() {
        let good = format!("sha256:{}", "0a".repeat(32));
        assert!(check_module_digest(&good).is_ok());
        for bad in [
            "sha256:../../victim".to_string(),
            format!("sha256:{}", "0A".repeat(32)),
            format!("sha256:{}", "0a".repeat(31)),
            format!("sha256:{}/", "0a".repeat(32)),
            "0a".repeat(32),
            String::new(),
        ] {
            assert!(check_module_digest(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn service_names() {
        for good in ["a", "hello", "permits-2", &"a".repeat(63)] {
            assert!(check_service_name(good).is_ok(), "{good}");
        }
        for bad in ["", "2a", "-a", "Hello", "a_b", "a/b", &"a".repeat(64)] {
            let why = check_service_name(bad).unwrap_err();
            assert!(why.contains("starting with a letter"), "{why}");
        }
    }

    #[test]
    fn replicas_range() {
        let rules = |replicas| PlacementRules {
            replicas,
            ..PlacementRules::default()
        };
        assert!(rules(1).check().is_ok());
        assert!(rules(MAX_REPLICAS).check().is_ok());
        assert!(rules(0).check().unwrap_err().contains("between 1 and 100"));
        assert!(rules(MAX_REPLICAS + 1).check().is_err());
    }
}

/// A backup target (`POST /v1/backups` takes one; `added_ms` is filled in by the host).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupTarget {
    /// Its name in this cluster.
    pub name: String,
    /// Where: `s3://BUCKET/PREFIX` or `file:///DIRECTORY`.
    pub url: String,
    /// The age recipient (`age1…`) backups are encrypted to.
    pub recipient: String,
    /// When it was added (ms since the Unix epoch).
    #[serde(default)]
    pub added_ms: u64,
    /// S3 Object Lock: every object shipped is kept by the store (compliance mode) at least
    /// this long (ms). `None`: no lock headers (a bucket's default retention still applies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retain_ms: Option<u64>,
}

/// How shipping to one target goes, as the leader sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShipStatus {
    /// The last raft index shipped (0: none yet).
    pub shipped_index: u64,
    /// The last index applied on the leader.
    pub applied_index: u64,
    /// How long the oldest entry not yet shipped has waited, in ms (0 when none waits); at most
    /// this long, as the shipper learns it between two steps.
    pub lag_ms: u64,
    /// Since when (ms since the epoch) the oldest entry not yet shipped has waited; the leader
    /// turns it into `lag_ms` when asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_since_ms: Option<u64>,
    /// Manifests written to the target so far (by any leader).
    pub manifests: u64,
    /// Objects and bytes this leader created there since it started shipping.
    pub objects: u64,
    /// See `objects`.
    pub bytes: u64,
    /// When the last snapshot shipped covered, in ms since the Unix epoch (0: none by this
    /// leader).
    pub last_snapshot_ms: u64,
    /// Why the last attempt failed, if it did (shipping goes on trying).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The twins that follow this target, from their heartbeats in it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub twins: Vec<TwinSeen>,
}

/// A twin that follows a backup target, as its primary sees it from the twin's newest
/// heartbeat in the target (the fields are `None` when it sent none for over an hour).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TwinSeen {
    /// The target it follows (empty inside a target's own status).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub target: String,
    /// The twin's name.
    pub twin: String,
    /// The primary's raft index the twin stood at when it reported.
    pub primary_index: Option<u64>,
    /// How many entries it was behind the primary's applied index when the primary last looked.
    pub behind: Option<u64>,
    /// How stale the twin's state was when it reported, in ms.
    pub lag_ms: Option<u64>,
    /// When it reported (ms since the epoch).
    pub reported_ms: Option<u64>,
}

/// Body of `POST /v1/twin`: follow a backup target as a standby twin.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FollowRequest {
    /// The primary's backup target (`s3://…` or `file:///…`).
    pub url: String,
    /// The age identity that decrypts it (the text of the key file). A secret: it is kept in
    /// this cluster's store and never answered back.
    pub identity: String,
    /// The twin's name in the primary's view (its heartbeats in the target); a random one if
    /// none is given.
    #[serde(default)]
    pub name: Option<String>,
}

/// What this cluster is to a twin pair (`GET /v1/twin`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TwinStatus {
    /// `primary` (no twin role), `standby` (following a backup), `promoted` (a twin that took
    /// over), or `fenced` (superseded by a promoted twin: takes no writes).
    pub role: String,
    /// The backup followed, or the one whose newer generation fenced this cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// This cluster's generation (1 for a primary never superseded).
    pub generation: u64,
    /// The primary's raft index the twin's state stands at (standby or promoted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_index: Option<u64>,
    /// How stale the standby's state may be, in ms: since it last found nothing newer in the
    /// backup, or the age of the newest entry it applied while catching up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_ms: Option<u64>,
    /// When it was promoted, or when the generation that fenced it was (ms since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promoted_at_ms: Option<u64>,
    /// Why writes are refused here, when they are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<String>,
    /// Why following failed last, if it did (it goes on trying).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// A standby's name (its heartbeats in the target carry it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// On a primary: the twins following its backup targets, as their heartbeats say.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub twins: Vec<TwinSeen>,
}

/// A target and how shipping to it goes (`GET /v1/backups`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BackupInfo {
    /// The target.
    pub target: BackupTarget,
    /// Its shipping, from the leader (`None` before the leader started on it, or when no leader
    /// answers).
    #[serde(default)]
    pub status: Option<ShipStatus>,
}

/// A digest of the services' state on one host (`GET /v1/status/hash`): two clusters holding the
/// same services with the same data answer the same hash, whatever their hosts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateHash {
    /// The raft index the state stands at on this host.
    pub index: u64,
    /// How many keys (service records, modules, bucket keys) the hash covers.
    pub keys: u64,
    /// SHA-256, hex.
    pub hash: String,
}
