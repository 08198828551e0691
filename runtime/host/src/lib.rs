//! The doppel host: the wasmtime embedding that runs services, and the servers around it.
//!
//! A host keeps every service's record, module and buckets in a [`doppel_store::Store`] — the
//! replicated one of `doppel-replication`; a host started alone is a one-member cluster — loads
//! each service as a pre-instantiated component (precompiled on disk, so a restart does not
//! compile), and serves two listeners: service traffic (`ingress`), where each request gets a
//! fresh instance with the service's limits, and the admin API the `doppel` CLI talks to.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use doppel_host::{HostConfig, IngressLimits};
//! let config = HostConfig {
//!     name: "a".into(),
//!     data_dir: "./doppel-data".into(),
//!     listen: "127.0.0.1:8080".parse()?,
//!     admin: "127.0.0.1:8081".parse()?,
//!     ingress: IngressLimits::default(),
//!     max_module_size: 64 << 20,
//!     grace: std::time::Duration::from_secs(10),
//!     join: None,
//!     advertise: None,
//!     snapshot_every: 10_000,
//!     leader_lease: None,
//!     labels: Default::default(),
//! };
//! doppel_host::run(config, |started| println!("serving on {}", started.listen), async {
//!     let _ = tokio::signal::ctrl_c().await;
//! })
//! .await
//! # }
//! ```

mod admin;
#[doc(hidden)]
pub mod bench;
mod cluster;
mod failover;
mod forward;
mod host;
mod ingress;
mod invoke;
mod keyvalue;
mod linker;
mod logs;
mod modules;
mod moves;
mod operator;
mod placement;
mod runtime;
mod schedule;
mod services;
mod state;

pub use cluster::JoinTarget;
pub use host::{Endpoint, HostConfig, Started, endpoint_path, run, token_path};
pub use ingress::IngressLimits;
pub use modules::{ModuleError, digest};
pub use runtime::{MAX_MEMORY_LIMIT, Runtime};
pub use services::valid_name;
