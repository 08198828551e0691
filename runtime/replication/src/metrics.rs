//! What the replication layer measures of itself for a host's `/metrics`: how long each sync
//! of the raft log to disk takes (every acknowledged write waits for one).

use std::sync::LazyLock;

use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};

/// Seconds per `fdatasync` of the raft log, since the process started: 50 µs to about 1.6 s.
pub static LOG_SYNC_SECONDS: LazyLock<Histogram> =
    LazyLock::new(|| Histogram::new(exponential_buckets(0.000_05, 2.0, 16)));
