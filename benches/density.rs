//! Density: N services on one host (default 1,000), each from a module of its own — the hello
//! example with a custom section naming the service, so every module has its own digest, its own
//! stored copy and its own precompiled code. Reports the deploy time of each through the CLI,
//! the host's memory, its idle CPU, and a restart until every service answers.
//! Goals (issue 21): deploy p50 ≤ 100 ms, RSS ≤ 2 GiB, idle CPU ≤ 2 % of a core, restart ≤ 2 s.
//! Run: `cargo bench -p doppel --bench density` (`DENSITY_SERVICES=1000`).

mod common;
#[allow(dead_code)]
#[path = "../tests/integration/support.rs"]
mod support;

use std::time::{Duration, Instant};

use common::median;
use support::{Host, http};

/// `value` as unsigned LEB128.
fn leb128(mut value: usize, out: &mut Vec<u8>) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// `component` with a custom section `doppel-bench` holding `tag` appended.
fn distinct(component: &[u8], tag: &str) -> Vec<u8> {
    let name = b"doppel-bench";
    let mut payload = Vec::new();
    leb128(name.len(), &mut payload);
    payload.extend_from_slice(name);
    payload.extend_from_slice(tag.as_bytes());
    let mut out = component.to_vec();
    out.push(0);
    leb128(payload.len(), &mut out);
    out.extend(payload);
    out
}

fn rss_mib(pid: u32) -> f64 {
    support::proc_status_bytes(pid, "VmRSS") as f64 / (1 << 20) as f64
}

fn main() {
    let n = common::env_number("DENSITY_SERVICES", 1000);
    let mut host = Host::start();
    let hello = std::fs::read(doppel_guests::HELLO).unwrap();
    let modules = host.data.with_extension("modules");
    std::fs::create_dir_all(&modules).unwrap();
    let mut deploys = Vec::with_capacity(n);
    let started = Instant::now();
    for i in 0..n {
        let file = modules.join(format!("s{i}.wasm"));
        std::fs::write(&file, distinct(&hello, &format!("s{i}"))).unwrap();
        let t = Instant::now();
        host.deploy(file.to_str().unwrap(), &format!("s{i}"), &[]);
        deploys.push(t.elapsed().as_secs_f64() * 1000.0);
        if (i + 1) % 100 == 0 {
            eprintln!(
                "  {} deployed, {:.0} s",
                i + 1,
                started.elapsed().as_secs_f64()
            );
        }
    }
    for i in [0, n / 2, n - 1] {
        assert_eq!(host.get(&format!("/s{i}/")).0, 200);
    }
    let mut sorted = deploys.clone();
    let p50 = median(&mut sorted);
    let p99 = sorted[(sorted.len() * 99 / 100).min(sorted.len() - 1)];
    // Idle: nothing is asked of the host for ten seconds.
    std::thread::sleep(Duration::from_secs(2));
    let rss = rss_mib(host.pid());
    let before = common::cpu_seconds(&[host.pid()]);
    std::thread::sleep(Duration::from_secs(10));
    let idle = (common::cpu_seconds(&[host.pid()]) - before) / 10.0 * 100.0;

    assert!(host.stop());
    let restart = Instant::now();
    host.restart();
    let ready = restart.elapsed();
    let client = http();
    for i in 0..n {
        let url = host.url(&format!("/s{i}/"));
        while client.get(&url).send().map(|r| r.status().as_u16()).ok() != Some(200) {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let all = restart.elapsed();
    println!("{n} services from {n} distinct modules on one host:");
    println!("  deploy through the CLI: p50 {p50:.0} ms, p99 {p99:.0} ms (goal p50 ≤ 100 ms)");
    println!("  host memory: {rss:.0} MiB (goal ≤ 2048 MiB)");
    println!("  idle CPU: {idle:.2} % of a core (goal ≤ 2 %)");
    println!(
        "  restart: host ready {:.2} s, every service answering {:.2} s (goal ≤ 2 s)",
        ready.as_secs_f64(),
        all.as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&modules);
}
