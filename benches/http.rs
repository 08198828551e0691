//! Hello-world requests/s and latency: doppel against `wasmtime serve` (same wasmtime version,
//! same component: examples/hello), at 1 and 64 connections, alternating in one run.
//! Needs `benches/install-peers.sh` (wasmtime-cli and wrk). Run: `cargo bench -p doppel --bench http`.

mod common;
#[allow(dead_code)]
#[path = "../tests/integration/support.rs"]
mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::wrk;
use support::Host;

const ROUNDS: usize = 3;
const SECONDS: u32 = 8;

fn wasmtime_serve(port: u16) -> std::process::Child {
    let wasmtime = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../benches/.tools/bin/wasmtime"
    );
    Command::new(wasmtime)
        .args([
            "serve",
            "-S",
            "cli",
            "-S",
            "config",
            "-S",
            "config-var=greeting=Moin",
            "--addr",
        ])
        .arg(format!("127.0.0.1:{port}"))
        .arg(doppel_guests::HELLO)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("benches/.tools/bin/wasmtime is missing: run benches/install-peers.sh")
}

fn main() {
    let mut host = Host::start();
    host.deploy(doppel_guests::HELLO, "hello", &[]);
    let ours_url = format!("http://{}/hello/", host.listen);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut theirs = wasmtime_serve(port);
    let theirs_url = format!("http://127.0.0.1:{port}/");
    common::first_answer(&theirs_url, Duration::from_secs(60))
        .expect("wasmtime serve did not answer");
    println!("hello world (examples/hello), median of {ROUNDS} alternating {SECONDS}s runs each:");
    for connections in [1u32, 64] {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            a.push(wrk(&ours_url, connections, SECONDS, "GET"));
            b.push(wrk(&theirs_url, connections, SECONDS, "GET"));
        }
        println!("  {connections} connection(s):");
        let ours = common::summary("doppel", &a);
        let peer = common::summary("wasmtime serve", &b);
        println!(
            "    ratio doppel/wasmtime: {:.2}× requests/s (goal ≥ 1.2×), p99 {:.2}× (goal ≤ 1)",
            ours.rps / peer.rps,
            ours.p99_ms / peer.p99_ms
        );
    }
    let _ = theirs.kill();
    let _ = theirs.wait();
    host.stop();
}
