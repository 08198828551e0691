//! Live migration and draining on a 3-host loopback cluster, under a steady load of writes
//! through every host.
//!
//! 1. Migrations: a service moves a → b → c → a … (`doppel migrate`, as an operator runs it).
//!    For each one, the *request-visible pause* is the longest time any request took among those
//!    running at any moment of the migration; the same figure for equally long windows without a
//!    migration is the baseline it is compared with. Every failed request is counted, and every
//!    acknowledged write is checked on every host at the end (lost must be 0).
//! 2. Drains: 20 services active on one host, `doppel drain HOST` timed from start to its last
//!    line; then undrain and move them back for the next trial.
//!
//! Run: `cargo bench -p doppel --bench migrate` (`MIGRATE_TRIALS=N`, default 30;
//! `DRAIN_TRIALS=N`, default 5).

mod common;
#[allow(dead_code)]
#[path = "../tests/integration/support.rs"]
mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::env_number as env;
use support::{Host, cluster, name};

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// One request of the load: when it started, how long it took, whether it succeeded.
#[derive(Clone, Copy)]
struct Sample {
    start: Instant,
    ms: f64,
    ok: bool,
}

struct Writers {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<Sample>>>,
    acked: Arc<Mutex<Vec<String>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

fn start_writers(hosts: &[Host], threads: usize) -> Writers {
    let urls: Vec<String> = hosts.iter().map(|h| h.url("/kv")).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let samples = Arc::new(Mutex::new(Vec::new()));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let (all_samples, all_acked) = (samples.clone(), acked.clone());
    let threads = support::writer_threads(
        threads,
        Duration::from_secs(10),
        &stop,
        move |client, t, i| {
            let key = format!("w{t}-{i}");
            let url = format!("{}/set?k={key}", urls[(t + i) % urls.len()]);
            let start = Instant::now();
            let ok = client
                .post(url)
                .body(key.clone())
                .send()
                .is_ok_and(|r| r.status().is_success());
            let ms = start.elapsed().as_secs_f64() * 1000.0;
            all_samples.lock().unwrap().push(Sample { start, ms, ok });
            if ok {
                all_acked.lock().unwrap().push(key);
            }
        },
    );
    Writers {
        stop,
        samples,
        acked,
        threads,
    }
}

/// The longest request that overlapped `[from, to]`.
fn worst_in(samples: &[Sample], from: Instant, to: Instant) -> f64 {
    samples
        .iter()
        .filter(|s| s.start <= to && s.start + Duration::from_secs_f64(s.ms / 1000.0) >= from)
        .map(|s| s.ms)
        .fold(0.0, f64::max)
}

fn summary(label: &str, v: &mut [f64]) {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "  {label:<44} p50 {:>6.1} ms  p99 {:>6.1} ms  max {:>6.1} ms  ({} samples)",
        percentile(v, 0.5),
        percentile(v, 0.99),
        v[v.len() - 1],
        v.len()
    );
}

fn main() {
    let trials = env("MIGRATE_TRIALS", 30);
    let drains = env("DRAIN_TRIALS", 5);
    let hosts = cluster(3, &[]);
    hosts[0].deploy(doppel_guests::KV_DRAFT2, "kv", &[]);
    for h in &hosts {
        support::eventually("every host serves kv", || h.get("/kv/get?k=x").0 == 200);
    }

    // 1. Migrations under load.
    let writers = start_writers(&hosts, 4);
    std::thread::sleep(Duration::from_millis(500));
    let mut windows = Vec::new();
    let mut switch_ms = Vec::new();
    for trial in 0..trials {
        let to = name((trial + 1) % 3);
        let started = Instant::now();
        let out = hosts[trial % 3].cli_ok(&["migrate", "kv", "--to", &to]);
        let ended = Instant::now();
        windows.push((started, ended));
        if let Some(ms) = out
            .split("switched in ")
            .nth(1)
            .and_then(|rest| rest.split(' ').next())
            .and_then(|ms| ms.parse::<f64>().ok())
        {
            switch_ms.push(ms);
        }
        eprintln!("migration {trial}: {}", out.lines().next().unwrap_or(""));
        // A quiet stretch as long as the migration, for the baseline.
        std::thread::sleep(ended - started + Duration::from_millis(200));
    }
    writers.stop.store(true, Ordering::Relaxed);
    for t in writers.threads {
        t.join().unwrap();
    }
    let samples = writers.samples.lock().unwrap().clone();
    let failed = samples.iter().filter(|s| !s.ok).count();
    let mut pauses: Vec<f64> = windows
        .iter()
        .map(|(from, to)| worst_in(&samples, *from, *to))
        .collect();
    let mut baseline: Vec<f64> = windows
        .iter()
        .map(|(from, to)| {
            let quiet = *to + Duration::from_millis(100);
            worst_in(&samples, quiet, quiet + (*to - *from))
        })
        .collect();
    let mut durations: Vec<f64> = windows
        .iter()
        .map(|(from, to)| (*to - *from).as_secs_f64() * 1000.0)
        .collect();
    let acked = writers.acked.lock().unwrap().clone();
    let mut lost = 0;
    for h in &hosts {
        for key in &acked {
            if h.get(&format!("/kv/get?k={key}")).1 != *key {
                lost += 1;
            }
        }
    }
    let mut all: Vec<f64> = samples.iter().map(|s| s.ms).collect();
    println!(
        "live migration on 3 loopback hosts, {trials} migrations under 4 writers through every host"
    );
    summary("worst request during a migration (pause)", &mut pauses);
    summary("worst request in an equal window without", &mut baseline);
    summary("every request of the run", &mut all);
    summary("`doppel migrate` from start to end", &mut durations);
    if !switch_ms.is_empty() {
        summary("switch (placement change committed)", &mut switch_ms);
    }
    println!(
        "  requests: {} sent, {failed} failed; acknowledged writes {} checked on each of 3 hosts, lost {lost}",
        samples.len(),
        acked.len()
    );

    // 2. Drains of a host carrying 20 services.
    let names: Vec<String> = (1..=20).map(|i| format!("s{i:02}")).collect();
    for n in &names {
        hosts[0].deploy(doppel_guests::KV_DRAFT2, n, &[]);
    }
    let mut drain_ms = Vec::new();
    for trial in 0..drains {
        let target = trial % 3;
        let host = name(target);
        // Bring every service to the host to drain.
        for n in &names {
            let st = support::status(&hosts[0]);
            let on = st["services"]
                .as_array()
                .unwrap()
                .iter()
                .find(|s| s["name"] == n.as_str())
                .map(|s| s["active"][0].as_str().unwrap_or("").to_string())
                .unwrap_or_default();
            if on != host {
                hosts[0].cli_ok(&["migrate", n, "--to", &host]);
            }
        }
        let started = Instant::now();
        let out = hosts[(target + 1) % 3].cli_ok(&["drain", &host]);
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        // Every service on the host moved (the 20, and kv when it was there too).
        let moved = out
            .split("ms: ")
            .nth(1)
            .and_then(|rest| rest.split(" service(s) moved").next())
            .and_then(|counts| counts.split_once(" of "))
            .filter(|(moved, total)| moved == total)
            .and_then(|(moved, _)| moved.parse::<usize>().ok());
        assert!(moved.is_some_and(|n| n >= 20), "{out}");
        drain_ms.push(ms);
        eprintln!("drain {trial} of {host}: {ms:.0} ms");
        hosts[0].cli_ok(&["undrain", &host]);
    }
    if !drain_ms.is_empty() {
        println!(
            "draining a host carrying 20 services ({drains} trials, `doppel drain` wall time)"
        );
        summary("drain", &mut drain_ms);
    }
}
