//! Joining a host, with everything mutual TLS adds to it: an invitation made on a member
//! (`doppel hosts invite`), the new host's key and certificate request, the pinned handshake, the
//! leader issuing its certificate, then catching up and becoming a voter. Measured from starting
//! `doppel hosts invite` to the new host answering as a member (its banner: it is a voter with
//! the log caught up), for `JOIN_TRIALS` joins (default 10), each into a fresh one-host cluster
//! so every join is the same. The peer is a restart of the same host (the same process start
//! and catch-up, with no enrolment), in the same run. Run: `cargo bench -p doppel --bench join`.

mod common;
#[allow(dead_code)]
#[path = "../tests/integration/support.rs"]
mod support;

use std::time::Instant;

use common::median;
use support::{Host, join};

fn trials() -> usize {
    std::env::var("JOIN_TRIALS")
        .ok()
        .and_then(|n| n.trim().parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(10)
}

fn main() {
    let (mut joins, mut restarts) = (Vec::new(), Vec::new());
    for _ in 0..trials() {
        let first = Host::start_with(&["--name", "a"]);
        first.deploy(doppel_guests::HELLO, "hello", &[]);
        let start = Instant::now();
        let mut second = join(&first, "b", &[]);
        joins.push(start.elapsed().as_secs_f64() * 1000.0);
        assert!(second.stop());
        let start = Instant::now();
        support::restart_in_place(&mut second, "b");
        restarts.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    let n = joins.len();
    let (j50, r50) = (median(&mut joins), median(&mut restarts));
    println!("joining a one-host cluster with one service, {n} trials:");
    println!(
        "  join (invite, enrol, TLS, catch up, vote)   p50 {j50:.0} ms   max {:.0} ms",
        joins.iter().copied().fold(0.0, f64::max)
    );
    println!(
        "  restart of the same host (peer)             p50 {r50:.0} ms   max {:.0} ms",
        restarts.iter().copied().fold(0.0, f64::max)
    );
    println!("  join/restart {:.2}", j50 / r50);
}
