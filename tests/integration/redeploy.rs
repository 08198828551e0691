//! Redeploying a name under load: requests in flight finish on the old version, new ones go to
//! the new version, none fails.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use doppel_guests as guests;

use crate::support::{Host, http};

#[test]
fn redeploy_under_load_fails_no_request() {
    let host = Host::start();
    host.deploy(guests::HTTP_020, "svc", &[]);
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (stop, ok) = (stop.clone(), ok.clone());
            let url = host.url("/svc/ok");
            std::thread::spawn(move || {
                let client = http();
                let mut failures = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    match client.get(&url).send() {
                        Ok(r) if r.status().as_u16() == 200 => {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(r) => failures.push(format!("status {}", r.status())),
                        Err(e) => failures.push(e.to_string()),
                    }
                }
                failures
            })
        })
        .collect();
    for i in 0..10 {
        let file = if i % 2 == 0 {
            guests::MISBEHAVE
        } else {
            guests::HTTP_020
        };
        host.deploy(file, "svc", &[]);
    }
    stop.store(true, Ordering::Relaxed);
    let failures: Vec<String> = clients
        .into_iter()
        .flat_map(|c| c.join().unwrap())
        .collect();
    let answered = ok.load(Ordering::Relaxed);
    println!(
        "{answered} requests answered during 10 redeploys, {} failed",
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "failed requests during redeploy: {failures:?}"
    );
    assert!(answered > 0);
    let ls: serde_json::Value = serde_json::from_str(&host.cli_ok(&["ls", "--json"])).unwrap();
    assert_eq!(ls[0]["version"], 11);
}
