//! Restart to first answer with 10 services deployed (goal ≤ 100 ms): a stopped host is started
//! again and a client polls one service until it answers. Precompiled copies mean no compiling.
//! Run: `cargo bench -p doppel --bench restart`.

mod common;
#[allow(dead_code)]
#[path = "../tests/integration/support.rs"]
mod support;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::median;
use support::{Host, doppel};

fn main() {
    let mut host = Host::start();
    for i in 0..10 {
        host.deploy(doppel_guests::HELLO, &format!("svc{i}"), &[]);
    }
    assert!(host.stop());
    let data = host.data.clone();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/svc9/");
    let mut times = Vec::new();
    for _ in 0..15 {
        let start = Instant::now();
        let mut child = doppel()
            .args([
                "host",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--admin",
                "127.0.0.1:0",
                "--peer",
                "127.0.0.1:0",
                "--data",
            ])
            .arg(&data)
            .env("DOPPEL_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let answered =
            common::first_answer(&url, Duration::from_secs(30)).expect("no answer within 30 s");
        times.push((answered - start).as_secs_f64() * 1000.0);
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        child.wait().unwrap();
    }
    let mut sorted = times.clone();
    let p50 = median(&mut sorted);
    println!("restart to first answer, 10 services deployed, 15 restarts:");
    println!(
        "  p50 {p50:.1} ms   min {:.1} ms   max {:.1} ms   (goal ≤ 100 ms)",
        sorted[0],
        sorted[sorted.len() - 1]
    );
}
