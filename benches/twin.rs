//! The twin under load: how stale a standby and the backup it follows are while the primary
//! takes a steady stream of writes (sampled every 100 ms: the primary's shipping lag, the
//! standby's own lag, and end to end: how long ago the primary had applied the index the
//! standby has reached, to within the sampling interval), and how long promotion takes
//! from `doppel twin promote` to the first acknowledged write on the twin after the primary is
//! SIGKILLed, and how long the old primary, started again, takes writes before it finds the new
//! generation and refuses them (the window in which both clusters take writes); then, with a
//! second pair, how long a primary that keeps running goes on taking writes after its twin is
//! promoted (the partition case). One host per
//! cluster, the backup target a directory on the same disk. Run:
//! `cargo bench -p doppel --bench twin` (`TWIN_SECONDS` of load, default 20; `TWIN_WRITERS`
//! writing threads, default 4).

mod common;
#[allow(dead_code)]
#[path = "../tests/integration/support.rs"]
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use support::{Host, eventually_within, http};

fn json(host: &Host, args: &[&str]) -> serde_json::Value {
    serde_json::from_str(&host.cli_ok(args)).unwrap()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A new one-host cluster following the backup at `url` (once it has a snapshot).
fn following(url: &str, key: &std::path::Path) -> Host {
    let twin = Host::start();
    eventually_within(Duration::from_secs(60), "the twin follows", || {
        twin.cli(&["twin", "follow", url, "--identity", key.to_str().unwrap()])
            .status
            .success()
    });
    twin
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let seconds = common::env_number("TWIN_SECONDS", 20).max(1) as u64;
    let writers = common::env_number("TWIN_WRITERS", 4).max(1);
    let work = tempfile::tempdir().unwrap();
    let mut primary = Host::start();
    primary.deploy(doppel_guests::KV_DRAFT2, "kv", &[]);
    let (key, url) = support::backup_offsite(&primary, work.path());
    let twin = following(&url, &key);

    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..writers)
        .map(|w| {
            let (stop, acked, base) = (stop.clone(), acked.clone(), primary.url("/kv/set?k="));
            std::thread::spawn(move || {
                let client = http();
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let r = client
                        .post(format!("{base}w{w}-{n}"))
                        .body(format!("v{n}"))
                        .send();
                    if r.is_ok_and(|r| r.status().is_success()) {
                        acked.fetch_add(1, Ordering::Relaxed);
                    }
                    n += 1;
                }
            })
        })
        .collect();
    // Each sample: the primary's applied index (when it was read), and the twin's. The twin's
    // end-to-end lag is how long ago the primary had applied what the twin has now.
    let (mut ship_lag, mut twin_lag, mut behind) = (Vec::new(), Vec::new(), Vec::new());
    let mut history: Vec<(Instant, u64)> = Vec::new();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(seconds) {
        std::thread::sleep(Duration::from_millis(100));
        let backups = json(&primary, &["backup", "ls", "--json"]);
        let status = &backups[0]["status"];
        history.push((
            Instant::now(),
            status["applied_index"].as_u64().unwrap_or(0),
        ));
        let twin_status = json(&twin, &["twin", "status", "--json"]);
        let at = twin_status["primary_index"].as_u64().unwrap_or(0);
        if at == 0 {
            continue; // the twin has not taken the first snapshot yet
        }
        ship_lag.push(status["lag_ms"].as_u64().unwrap_or(0));
        twin_lag.push(twin_status["lag_ms"].as_u64().unwrap_or(0));
        let reached = history
            .iter()
            .find(|(_, applied)| *applied >= at)
            .map_or(Instant::now(), |(when, _)| *when);
        behind.push(reached.elapsed().as_millis() as u64);
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    let rate = acked.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64();
    for v in [&mut ship_lag, &mut twin_lag, &mut behind] {
        v.sort_unstable();
    }
    println!(
        "{writers} writers, {rate:.0} acknowledged writes/s for {seconds} s, {} samples",
        ship_lag.len()
    );
    println!(
        "  backup shipping lag   p50 {:>5} ms  p99 {:>5} ms  max {:>5} ms",
        percentile(&ship_lag, 0.5),
        percentile(&ship_lag, 0.99),
        ship_lag.last().unwrap_or(&0)
    );
    println!(
        "  twin lag (its status) p50 {:>5} ms  p99 {:>5} ms  max {:>5} ms",
        percentile(&twin_lag, 0.5),
        percentile(&twin_lag, 0.99),
        twin_lag.last().unwrap_or(&0)
    );
    println!(
        "  twin end to end       p50 {:>5} ms  p99 {:>5} ms  max {:>5} ms",
        percentile(&behind, 0.5),
        percentile(&behind, 0.99),
        behind.last().unwrap_or(&0)
    );

    primary.kill();
    let start = Instant::now();
    twin.cli_ok(&["twin", "promote"]);
    let promoted = start.elapsed();
    let client = http();
    loop {
        let r = client
            .post(twin.url("/kv/set?k=first-after-promotion"))
            .body("x")
            .send();
        if r.is_ok_and(|r| r.status().is_success()) {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    println!(
        "  promotion: `twin promote` {:.0} ms, to the first acknowledged write {:.0} ms",
        promoted.as_secs_f64() * 1000.0,
        start.elapsed().as_secs_f64() * 1000.0
    );

    // The window in which both take writes: the old primary comes back; from its start, how
    // long until it refuses writes (and how many it took meanwhile).
    let start = Instant::now();
    primary.restart();
    let ready = start.elapsed();
    let mut taken = 0;
    loop {
        let r = client
            .post(primary.url(&format!("/kv/set?k=late-{taken}")))
            .body("x")
            .send()
            .unwrap();
        if r.status().is_success() {
            taken += 1;
            continue;
        }
        let body = r.text().unwrap_or_default();
        assert!(body.contains("superseded"), "{body}");
        break;
    }
    println!(
        "  the old primary restarted: ready after {:.0} ms, refusing writes {:.0} ms after its \
         start; {taken} writes taken in between (lost to the twin)",
        ready.as_secs_f64() * 1000.0,
        start.elapsed().as_secs_f64() * 1000.0
    );
    promote_while_the_primary_runs(writers);
}

/// The partition case: the twin is promoted while the primary still runs and takes writes (an
/// operator who cannot reach the primary, which can still reach the target). Measures how long
/// after the new generation was written the primary still acknowledged writes, and how many
/// entries it applied beyond the index the twin took over at (what the twin lacks).
fn promote_while_the_primary_runs(writers: usize) {
    let work = tempfile::tempdir().unwrap();
    let primary = Host::start();
    primary.deploy(doppel_guests::KV_DRAFT2, "kv", &[]);
    let (key, url) = support::backup_offsite(&primary, work.path());
    let twin = following(&url, &key);
    let threads: Vec<_> = (0..writers)
        .map(|w| {
            let base = primary.url("/kv/set?k=");
            // Each writer: when its acknowledged writes were answered, until the first refusal.
            std::thread::spawn(move || {
                let client = http();
                let mut acked = Vec::new();
                for n in 0u64.. {
                    let r = client
                        .post(format!("{base}p{w}-{n}"))
                        .body(format!("v{n}"))
                        .send();
                    match r {
                        Ok(r) if r.status().is_success() => acked.push(now_ms()),
                        Ok(r) => {
                            let body = r.text().unwrap_or_default();
                            assert!(body.contains("superseded"), "{body}");
                            return (acked, now_ms());
                        }
                        Err(e) => panic!("{e}"),
                    }
                }
                unreachable!()
            })
        })
        .collect();
    eventually_within(Duration::from_secs(60), "the twin is current", || {
        json(&twin, &["twin", "status", "--json"])["primary_index"].as_u64() > Some(100)
    });
    std::thread::sleep(Duration::from_secs(2));
    let promoted = json(&twin, &["twin", "promote", "--json"]);
    let at_ms = promoted["promoted_at_ms"].as_u64().unwrap();
    let twin_index = promoted["primary_index"].as_u64().unwrap();
    let mut after = 0;
    let mut refused_ms = Vec::new();
    let mut last_ack = 0;
    for t in threads {
        let (acked, refused) = t.join().unwrap();
        after += acked.iter().filter(|&&ms| ms > at_ms).count();
        last_ack = last_ack.max(acked.last().copied().unwrap_or(0));
        refused_ms.push(refused.saturating_sub(at_ms));
    }
    refused_ms.sort_unstable();
    let primary_index = support::state_hash(&primary).1;
    println!(
        "promoted while the primary runs ({writers} writers): the primary's last acknowledged \
         write {} ms after the generation was written, every writer refused within {} ms; {after} \
         writes acknowledged after the generation; {} entries applied on the primary beyond the \
         index the twin took over at",
        last_ack.saturating_sub(at_ms),
        refused_ms.last().unwrap_or(&0),
        primary_index.saturating_sub(twin_index)
    );
}
