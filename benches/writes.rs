//! Durable writes per second from a guest (examples/counter: each POST is an atomic increment,
//! acknowledged only after fdatasync) at 1 and 64 concurrent clients, next to a raw
//! write+fdatasync loop on the same disk in the same run. Run: `cargo bench -p doppel --bench writes`.

mod common;
#[allow(dead_code)]
#[path = "../tests/integration/support.rs"]
mod support;

use std::io::Write;
use std::time::{Duration, Instant};

use common::wrk;
use support::Host;

/// One thread appending 64-byte records with fdatasync after each: the disk's floor.
fn raw_fsync_loop(dir: &std::path::Path, seconds: u64) -> f64 {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("raw.log"))
        .unwrap();
    let record = [7u8; 64];
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < Duration::from_secs(seconds) {
        f.write_all(&record).unwrap();
        f.sync_data().unwrap();
        n += 1;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let mut host = Host::start();
    host.deploy(doppel_guests::COUNTER, "counter", &[]);
    let url = format!("http://{}/counter/visits", host.listen);
    println!(
        "durable writes: examples/counter POST (increment + fdatasync) vs raw write+fdatasync loop"
    );
    for clients in [1u32, 64] {
        let raw = raw_fsync_loop(dir.path(), 5);
        let ours = wrk(&url, clients, 10, "POST");
        println!(
            "  {clients:>2} clients: doppel {:>8.0} writes/s (p50 {:.2} ms, p99 {:.2} ms, errors {})   raw fsync loop {:>8.0}/s   ratio {:.2}",
            ours.rps,
            ours.p50_ms,
            ours.p99_ms,
            ours.errors,
            raw,
            ours.rps / raw
        );
    }
    host.stop();
}
