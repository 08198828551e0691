//! The doppel host: the wasmtime embedding that runs services, where they run, and the admin API.
//!
//! A host is three things on top of its membership (`doppel_replication::Member`, which owns
//! consensus, the peer transport and liveness; this crate never sees them or a peer URL):
//! - **wasm**: each service loaded as a pre-instantiated component (precompiled on disk, so a
//!   restart does not compile), a fresh instance per request with the service's limits, and the
//!   guest contract (`linker`, `keyvalue/`, `state`);
//! - **placement**: where each service is active (`placement`, `schedule`, `scheduler`,
//!   `moves`), and routing each request to be served here or forwarded (`ingress`, `forward`);
//! - **admin**: the API the `doppel` CLI talks to over TLS (`admin/`: its operator routes in
//!   `admin/operator.rs`, named credentials with roles in `admin/tokens.rs`, the hash-chained
//!   audit trail in `admin/audit.rs`), and the hosts table (`hosts`).
//!
//! It serves three listeners (`listener`): service traffic (plain HTTP, for clients), the admin
//! API (TLS with a certificate from the cluster's CA) and the peer routes (mutual TLS, admitted
//! by the replication crate).
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use doppel_host::{HostConfig, IngressLimits};
//! let config = HostConfig {
//!     name: "a".into(),
//!     data_dir: "./doppel-data".into(),
//!     listen: "127.0.0.1:8080".parse()?,
//!     admin: "127.0.0.1:8081".parse()?,
//!     peer: "127.0.0.1:8082".parse()?,
//!     ingress: IngressLimits::default(),
//!     max_module_size: 64 << 20,
//!     grace: std::time::Duration::from_secs(10),
//!     join: None,
//!     advertise: None,
//!     snapshot_every: 10_000,
//!     leader_lease: None,
//!     labels: Default::default(),
//!     require: Default::default(),
//!     cert_lifetime: None,
//!     key: Some(doppel_host::sealing::KeySource::Env),
//! };
//! doppel_host::run(config, |started| println!("serving on {}", started.listen), async {
//!     let _ = tokio::signal::ctrl_c().await;
//! })
//! .await
//! # }
//! ```

mod admin;
mod admission;
#[doc(hidden)]
pub mod bench;
mod blobstore;
mod clock;
mod forward;
#[doc(hidden)]
pub mod fuzzing;
mod host;
mod hosts;
mod ingress;
mod invoke;
mod keyvalue;
mod latency;
mod linker;
mod listener;
mod logging;
mod logs;
mod metrics;
mod mode;
mod module_store;
mod modules;
mod moves;
mod outbound;
mod placement;
mod runtime;
mod schedule;
mod scheduler;
pub mod sealing;
mod services;
mod signatures;
mod state;

pub use doppel_replication::{JoinTarget, ca_path, causes};
pub use host::{Endpoint, HostConfig, Started, endpoint_path, lock_data_dir, run, token_path};
pub use listener::IngressLimits;
pub use modules::{ModuleError, digest};
pub use runtime::{MAX_MEMORY_LIMIT, Runtime};
