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
//!
//! Errors come back with a 4xx/5xx status and an [`ApiError`] body.

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

/// Body of `PUT /v1/services/{name}`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeployRequest {
    /// Digest of a module uploaded with `POST /v1/modules`.
    pub module: String,
    /// Values the service reads through `wasi:config/store` (and its environment).
    #[serde(default)]
    pub config: BTreeMap<String, String>,
    /// Limits to change from the host's defaults.
    #[serde(default)]
    pub limits: LimitOverrides,
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
    /// The limits in force.
    pub limits: Limits,
    /// Bytes the service stores.
    pub storage_bytes: u64,
    /// The hosts the service is active on (the others forward to them).
    #[serde(default)]
    pub active: Vec<String>,
    /// Its epoch: bumped whenever its active hosts change.
    #[serde(default)]
    pub epoch: u64,
}

/// One line a service wrote to stdout or stderr, or the host wrote about it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LogLine {
    /// Milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// `stdout`, `stderr` or `host`.
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
    /// Every member.
    pub hosts: Vec<HostStatus>,
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
}
