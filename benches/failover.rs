//! Failover on a 3-host loopback cluster: SIGKILL a host while clients write through every host,
//! then time from the kill to the first successful answer to a write sent to a surviving host
//! after the kill. Trials take turns: the service's active host when it does not lead, the raft
//! leader when the service is active elsewhere, and a host with both roles; before each, the
//! service is moved (`doppel migrate`) so that the roles are apart or together as the turn needs.
//! Each result is filed under the roles the killed host really had. After each trial the killed
//! host is restarted, and every acknowledged write is checked on every host: the count of lost
//! acknowledged writes must be 0.
//! Run: `cargo bench -p doppel --bench failover` (`FAILOVER_TRIALS=N` per kind, default 34: 102
//! kills).

#[allow(dead_code)]
#[path = "../tests/integration/support.rs"]
mod support;

use std::time::{Duration, Instant};

use support::{Load, cluster, leader, name, restart_in_place};

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// Where the service is active, and which host leads.
fn roles(hosts: &[support::Host]) -> (usize, usize) {
    let lead = leader(hosts);
    let st = support::status(&hosts[lead]);
    let active_name = st["services"][0]["active"][0].as_str().unwrap().to_string();
    let active = (0..3).find(|i| name(*i) == active_name).unwrap();
    (active, lead)
}

/// Moves the service so that its active host also leads (`together`) or does not.
fn arrange(hosts: &[support::Host], together: bool) {
    for _ in 0..5 {
        let (active, lead) = roles(hosts);
        if (active == lead) == together {
            return;
        }
        let to = if together { lead } else { (lead + 1) % 3 };
        hosts[lead].cli_ok(&["migrate", "kv", "--to", &name(to)]);
    }
    panic!("could not arrange the roles (the leader kept changing)");
}

fn main() {
    let trials: usize = std::env::var("FAILOVER_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(34);
    let mut hosts = cluster(3, &[]);
    hosts[0].deploy(doppel_guests::KV_DRAFT2, "kv", &[]);
    for h in &hosts {
        support::eventually("every host serves kv", || h.get("/kv/get?k=x").0 == 200);
    }
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    // Killed host was: active only, leader only, both.
    let mut times: [Vec<f64>; 3] = [Vec::new(), Vec::new(), Vec::new()];
    let (mut acked_total, mut lost_total) = (0usize, 0usize);
    for trial in 0..3 * trials {
        // 0: the active host, not leading; 1: the leader, the service active elsewhere; 2: both.
        let kind = trial % 3;
        arrange(&hosts, kind == 2);
        // Background writers through every host, recording what was acknowledged.
        let urls: Vec<String> = hosts.iter().map(|h| h.url("/kv")).collect();
        let load = Load::start(&urls, 3, &format!("t{trial}"));
        // Writes are being acknowledged before the kill.
        load.wait_for(300);
        let (active, lead) = roles(&hosts);
        let victim = if kind == 1 { lead } else { active };
        let roles = match (victim == active, victim == lead) {
            (true, false) => 0,
            (false, true) => 1,
            _ => 2,
        };
        let survivor = (victim + 1) % 3;
        let url = hosts[survivor].url(&format!("/kv/set?k=probe{trial}"));
        let logged: Vec<usize> = hosts.iter().map(|h| h.log().len()).collect();
        let killed_at = Instant::now();
        hosts[victim].kill();
        let answered = loop {
            if let Ok(r) = client.post(&url).body("p").send()
                && r.status().is_success()
            {
                break killed_at.elapsed();
            }
            assert!(
                killed_at.elapsed() < Duration::from_secs(30),
                "no failover within 30 s"
            );
        };
        times[roles].push(answered.as_secs_f64() * 1000.0);
        if answered > Duration::from_secs(1) {
            // A slow failover is the one to understand: show what the survivors logged.
            for (i, h) in hosts.iter().enumerate().filter(|(i, _)| *i != victim) {
                let log = h.log();
                eprintln!(
                    "--- {} logged after the kill:\n{}",
                    name(i),
                    log.get(logged[i]..).unwrap_or_default()
                );
            }
        }
        restart_in_place(&mut hosts[victim], &name(victim));
        // Failed writes are expected while the victim is down; only acknowledged ones count.
        let (acked, _failed) = load.stop();
        for h in &hosts {
            for (_, key) in &acked {
                if h.get(&format!("/kv/get?k={key}")).1 != *key {
                    lost_total += 1;
                }
            }
        }
        acked_total += acked.len();
        eprintln!(
            "trial {trial}: killed {} ({}), first answer after {:.0} ms, {} writes acknowledged",
            name(victim),
            ["active", "leader", "active and leader"][roles],
            answered.as_secs_f64() * 1000.0,
            acked.len()
        );
    }
    println!(
        "failover on 3 loopback hosts, {} trials (time from SIGKILL to the first successful write through a surviving host)",
        3 * trials
    );
    for (kind, t) in ["active host", "leader", "active host and leader"]
        .iter()
        .zip(times.iter_mut())
    {
        if t.is_empty() {
            continue;
        }
        t.sort_by(|a, b| a.partial_cmp(b).unwrap());
        println!(
            "  killed the {kind:<22} ({:>3} trials): p50 {:>5.0} ms  p99 {:>5.0} ms  max {:>5.0} ms",
            t.len(),
            percentile(t, 0.5),
            percentile(t, 0.99),
            t[t.len() - 1]
        );
    }
    println!(
        "  acknowledged writes: {acked_total}, checked on each of 3 hosts; lost: {lost_total}"
    );
}
