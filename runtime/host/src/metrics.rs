//! `GET /metrics` on the admin listener (a viewer's credential, like every read there): what a
//! Prometheus server scrapes, in the OpenMetrics text format (`prometheus-client`).
//!
//! Per service, as this host saw it: answers by status class, the time to an answer's head, the
//! instances in use, the requests forwarded to another host, the failures. Per host: the raft
//! term, the last log index and the applied index, whether it leads, the log's bytes on disk,
//! the time each log sync takes, the failovers and moves it made, and how far each backup target
//! is behind. A scrape reads counters the request path keeps anyway; it takes no lock a request
//! waits for.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use doppel_api::ShipStatus;
use doppel_replication::Member;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use crate::services::{Registry, Stats};

/// The `Content-Type` of a scrape's answer.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Where a host's figures come from.
#[derive(Clone)]
pub struct Sources {
    /// The services.
    pub registry: Arc<Registry>,
    /// Consensus and the store.
    pub member: Arc<Member>,
    /// The backup targets' progress.
    pub shipper: doppel_backup::ship::Shipper,
    /// The data directory (the raft log's size on disk).
    pub data_dir: PathBuf,
}

/// Everything one scrape reports, read once before encoding (the encoder cannot wait).
struct Snapshot {
    services: Vec<(String, Arc<Stats>)>,
    term: u64,
    last_log_index: u64,
    applied_index: u64,
    leader: bool,
    log_bytes: u64,
    failovers: u64,
    moves: u64,
    backups: Vec<(String, ShipStatus)>,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("services", &self.services.len())
            .field("term", &self.term)
            .finish_non_exhaustive()
    }
}

/// The answer to one scrape.
pub async fn render(sources: &Sources) -> String {
    let status = sources.member.status().await;
    let store = sources.member.store();
    let made = &sources.registry.placements().made;
    let snapshot = Snapshot {
        services: sources.registry.all_stats(),
        term: status.term,
        last_log_index: store.last_log_index(),
        applied_index: store.applied_index(),
        leader: sources.member.is_leader(),
        log_bytes: dir_bytes(&sources.data_dir.join("raft").join("log")),
        failovers: made.failovers.load(Ordering::Relaxed),
        moves: made.moves.load(Ordering::Relaxed),
        backups: sources.shipper.status().into_iter().collect(),
    };
    let mut registry = prometheus_client::registry::Registry::default();
    registry.register_collector(Box::new(snapshot));
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
    out
}

/// The bytes of the files directly in `dir` (0 when it cannot be read).
fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let metric = ConstCounter::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: i64,
) -> Result<(), std::fmt::Error> {
    let metric = ConstGauge::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

fn signed(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Snapshot {
    /// One family with a sample per service: a counter or a gauge read from `value`.
    fn per_service(
        &self,
        encoder: &mut DescriptorEncoder,
        name: &str,
        help: &str,
        kind: MetricType,
        value: impl Fn(&Stats) -> &std::sync::atomic::AtomicU64,
    ) -> Result<(), std::fmt::Error> {
        let mut family = encoder.encode_descriptor(name, help, None, kind)?;
        for (service, stats) in &self.services {
            let labels = [("service", service.as_str())];
            let v = value(stats).load(Ordering::Relaxed);
            match kind {
                MetricType::Counter => {
                    ConstCounter::new(v).encode(family.encode_family(&labels)?)?
                }
                _ => ConstGauge::new(signed(v)).encode(family.encode_family(&labels)?)?,
            }
        }
        Ok(())
    }
}

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];
        let mut family = encoder.encode_descriptor(
            "doppel_service_requests",
            "Answers this host gave a service's callers, by status class (forwarded ones included).",
            None,
            MetricType::Counter,
        )?;
        for (name, stats) in &self.services {
            for (class, count) in CLASSES.iter().zip(&stats.classes) {
                let labels = [("service", name.as_str()), ("class", class)];
                ConstCounter::new(count.load(Ordering::Relaxed))
                    .encode(family.encode_family(&labels)?)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "doppel_service_request_duration_seconds",
            "Time from a request's arrival to its answer's head, on this host.",
            None,
            MetricType::Histogram,
        )?;
        for (name, stats) in &self.services {
            stats
                .latency
                .encode(family.encode_family(&[("service", name.as_str())])?)?;
        }
        self.per_service(
            &mut encoder,
            "doppel_service_instances_in_use",
            "Requests of a service running in a guest on this host now.",
            MetricType::Gauge,
            |s| &s.in_flight,
        )?;
        self.per_service(
            &mut encoder,
            "doppel_service_forwarded",
            "Requests this host sent on to the host a service is active on.",
            MetricType::Counter,
            |s| &s.forwarded,
        )?;
        self.per_service(
            &mut encoder,
            "doppel_service_failures",
            "Requests that ended in a trap, a timeout or a 5xx from the host.",
            MetricType::Counter,
            |s| &s.errors,
        )?;

        gauge(
            &mut encoder,
            "doppel_raft_term",
            "The raft term (it grows with every election).",
            signed(self.term),
        )?;
        gauge(
            &mut encoder,
            "doppel_raft_last_log_index",
            "The index of the last entry in this host's log.",
            signed(self.last_log_index),
        )?;
        gauge(
            &mut encoder,
            "doppel_raft_applied_index",
            "The index of the last entry this host applied.",
            signed(self.applied_index),
        )?;
        gauge(
            &mut encoder,
            "doppel_raft_leader",
            "1 while this host leads the cluster.",
            i64::from(self.leader),
        )?;
        gauge(
            &mut encoder,
            "doppel_raft_log_bytes",
            "Bytes of the raft log on this host's disk.",
            signed(self.log_bytes),
        )?;
        let sync = &*doppel_replication::metrics::LOG_SYNC_SECONDS;
        sync.encode(encoder.encode_descriptor(
            "doppel_raft_log_sync_duration_seconds",
            "Time each sync of the raft log to disk took (every acknowledged write waits for one).",
            None,
            MetricType::Histogram,
        )?)?;
        counter(
            &mut encoder,
            "doppel_failovers",
            "Services this host moved off a host that stopped answering.",
            self.failovers,
        )?;
        counter(
            &mut encoder,
            "doppel_moves",
            "Services this host moved otherwise (migrations, drains, rules), hand-overs included.",
            self.moves,
        )?;

        let mut family = encoder.encode_descriptor(
            "doppel_backup_lag_seconds",
            "How far a backup target is behind what this host applied (reported by the leader).",
            None,
            MetricType::Gauge,
        )?;
        for (target, status) in &self.backups {
            ConstGauge::new(status.lag_ms as f64 / 1000.0)
                .encode(family.encode_family(&[("target", target.as_str())])?)?;
        }
        let mut family = encoder.encode_descriptor(
            "doppel_backup_shipped_index",
            "The last log index a backup target holds.",
            None,
            MetricType::Gauge,
        )?;
        for (target, status) in &self.backups {
            ConstGauge::new(signed(status.shipped_index))
                .encode(family.encode_family(&[("target", target.as_str())])?)?;
        }
        Ok(())
    }
}
