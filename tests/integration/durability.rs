//! What survives a SIGKILL, and what a restart does (and does not) redo.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use doppel_guests as guests;

use crate::support::{Host, eventually, http};

/// Clients write as fast as they can; the host is SIGKILLed mid-stream; after a restart every
/// write that was acknowledged (HTTP 200) is there. Three rounds, killed at different points.
#[test]
fn acknowledged_writes_survive_sigkill() {
    let mut host = Host::start();
    host.deploy(guests::KV_DRAFT2, "kv", &[]);
    let mut total_acked = 0;
    for (round, kill_after) in [50usize, 250, 600].into_iter().enumerate() {
        let acked = Arc::new(std::sync::Mutex::new(Vec::new()));
        let count = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let writers: Vec<_> = (0..8)
            .map(|t| {
                let (acked, count, stop) = (acked.clone(), count.clone(), stop.clone());
                let base = host.url("/kv");
                std::thread::spawn(move || {
                    let client = http();
                    for i in 0.. {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let key = format!("r{round}-t{t}-{i}");
                        match client
                            .post(format!("{base}/set?k={key}"))
                            .body(key.clone())
                            .send()
                        {
                            Ok(r) if r.status().as_u16() == 200 => {
                                acked.lock().unwrap().push(key);
                                count.fetch_add(1, Ordering::Relaxed);
                            }
                            // Refused or cut off by the kill: not acknowledged, nothing promised.
                            _ => {
                                if stop.load(Ordering::Relaxed) {
                                    break;
                                }
                            }
                        }
                    }
                })
            })
            .collect();
        eventually("enough acknowledged writes", || {
            count.load(Ordering::Relaxed) >= kill_after
        });
        host.kill();
        stop.store(true, Ordering::Relaxed);
        for w in writers {
            w.join().unwrap();
        }
        host.restart();
        let acked = acked.lock().unwrap();
        for key in acked.iter() {
            assert_eq!(
                host.get(&format!("/kv/get?k={key}")).1,
                *key,
                "acknowledged write {key} lost"
            );
        }
        total_acked += acked.len();
        println!(
            "round {round}: {} acknowledged writes, all present after SIGKILL and restart",
            acked.len()
        );
    }
    println!("{total_acked} acknowledged writes checked across 3 SIGKILLs; none lost");
}

#[test]
fn counters_never_lose_an_acknowledged_increment() {
    let mut host = Host::start();
    host.deploy(guests::KV_DRAFT, "kv", &[]);
    let mut last = 0u64;
    for _ in 0..200 {
        let (status, text) = host.post("/kv/increment?k=n&d=1", "");
        assert_eq!(status, 200);
        last = text.parse().unwrap();
    }
    host.kill();
    host.restart();
    assert_eq!(host.get("/kv/get?k=n").1, last.to_string());
}

#[test]
fn restart_serves_again_without_recompiling_and_recompiles_a_damaged_copy() {
    let mut host = Host::start();
    host.deploy(guests::HTTP_020, "old", &[]);
    host.deploy(guests::KV_DRAFT, "kv", &[]);
    host.post("/kv/set?k=a", "kept");
    assert!(host.stop(), "clean stop exits 0");
    host.restart();
    assert_eq!(host.get("/old/").0, 200);
    assert_eq!(host.get("/kv/get?k=a").1, "kept");
    assert!(
        !host.log().contains("compiling"),
        "a restart must not compile:\n{}",
        host.log()
    );

    // Damage every precompiled copy: the next start notices, says so, recompiles, serves.
    host.kill();
    let cache = crate::support::precompiled_dir(&host);
    for entry in std::fs::read_dir(&cache).unwrap() {
        let path = entry.unwrap().path();
        let mut bytes = std::fs::read(&path).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0xff;
        std::fs::write(&path, bytes).unwrap();
    }
    host.restart();
    let log = host.log();
    assert!(
        log.contains("damaged") && log.contains("compiling"),
        "{log}"
    );
    assert_eq!(host.get("/old/").0, 200);
    assert_eq!(host.get("/kv/get?k=a").1, "kept");
}

#[test]
fn sigterm_lets_requests_in_flight_finish() {
    let mut host = Host::start();
    host.deploy(guests::MISBEHAVE, "slow", &[]);
    let url = host.url("/slow/sleep?ms=1500");
    let started = Arc::new(AtomicBool::new(false));
    let request = {
        let started = started.clone();
        std::thread::spawn(move || {
            started.store(true, Ordering::Relaxed);
            let r = http().get(url).send().unwrap();
            (r.status().as_u16(), r.text().unwrap())
        })
    };
    // Wait until the request is being handled (it shows in the service's counters).
    eventually("the slow request is in flight", || {
        let ls: serde_json::Value = serde_json::from_str(&host.cli_ok(&["ls", "--json"])).unwrap();
        ls[0]["requests"].as_u64() == Some(1)
    });
    // Counted means its guest task is running; graceful shutdown must now wait for it.
    assert!(host.stop(), "the host exits cleanly");
    assert_eq!(request.join().unwrap(), (200, "slept".to_string()));
}

#[test]
fn a_second_host_on_the_same_data_directory_is_refused() {
    let host = Host::start();
    let out = crate::support::host_command(&host.data).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("in use by a running doppel host"),
        "{stderr}"
    );
}
