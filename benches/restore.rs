//! Restoring a large state, side by side with etcd's snapshot restore.
//!
//! - doppel: a one-host cluster holding `RESTORE_MIB` MiB (default 1024) of 1 KiB values in one
//!   service, shipped to a `file://` backup; then `doppel drill`, which restores into a sandbox,
//!   starts a host, has it take the state over and waits for the service to answer — its RTO is
//!   the figure (restore start to the service answering a read).
//! - etcd: one member holding the same keys and values (written in transactions of 128 puts),
//!   `etcdctl snapshot save`, then `etcdctl snapshot restore` into a new data directory and a new
//!   member started on it until it answers a read of one of the keys.
//!
//! Both on the same disk. Run: `cargo bench -p doppel --bench restore` (etcd and etcdctl from
//! `benches/install-peers.sh`).

mod common;
#[allow(dead_code)]
#[path = "../tests/integration/support.rs"]
mod support;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use common::free_port;
use support::{Host, eventually_within, http};

const VALUE: usize = 1024;
const PER_REQUEST: u64 = 256;
const WRITERS: u64 = 4;

fn mib() -> u64 {
    common::env_number("RESTORE_MIB", 1024).max(1) as u64
}

fn key(i: u64) -> String {
    format!("k{i:09}")
}

/// A value of `VALUE` bytes, different per key and about as compressible as text (letters
/// from a generator seeded by the key): a repeated pattern would measure lz4, not a restore.
fn value(i: u64) -> String {
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..VALUE)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (b'a' + (x % 26) as u8) as char
        })
        .collect()
}

/// Writes keys `0..n` from `WRITERS` threads, `PER_REQUEST` at a time, with `send`.
fn load(n: u64, send: impl Fn(&reqwest::blocking::Client, u64, u64) + Send + Sync + 'static) {
    let send = Arc::new(send);
    let next = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..WRITERS)
        .map(|_| {
            let (send, next) = (send.clone(), next.clone());
            std::thread::spawn(move || {
                let client = http();
                loop {
                    let from = next.fetch_add(PER_REQUEST, Ordering::Relaxed);
                    if from >= n {
                        return;
                    }
                    send(&client, from, (from + PER_REQUEST).min(n));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

fn doppel_side(n: u64) {
    let work = tempfile::tempdir().unwrap();
    let host = Host::start();
    let quota = format!("{}MiB", mib() * 4);
    host.deploy(
        doppel_guests::KV_DRAFT2,
        "kv",
        &["--quota", &quota, "--probe", &format!("/get?k={}", key(0))],
    );
    let (keyfile, url) = support::backup_offsite(&host, work.path());
    let started = Instant::now();
    let base = host.url("/kv/set-many");
    load(n, move |client, from, to| {
        let body: String = (from..to)
            .map(|i| format!("{}={}\n", key(i), value(i)))
            .collect();
        let r = client.post(&base).body(body).send().unwrap();
        assert!(r.status().is_success(), "{}", r.text().unwrap());
    });
    println!(
        "doppel: wrote {n} keys in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    eventually_within(Duration::from_secs(600), "everything is shipped", || {
        let all: serde_json::Value =
            serde_json::from_str(&host.cli_ok(&["backup", "ls", "--json"])).unwrap();
        let s = &all[0]["status"];
        s["shipped_index"].as_u64().unwrap_or(0) >= s["applied_index"].as_u64().unwrap_or(1)
    });
    drop(host);
    let out = support::doppel()
        .args(["drill", &url, "--identity"])
        .arg(&keyfile)
        .arg("--report")
        .arg(work.path().join("drill.md"))
        .arg("--json")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let drill: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    println!(
        "doppel: drill restored {} keys ({:.0} MiB read) in {:.1} s; the service answered {:.1} s \
         after the restore began (RTO); hashes equal: {}",
        drill["keys"],
        drill["bytes"].as_f64().unwrap_or(0.0) / f64::from(1 << 20),
        drill["restore_ms"].as_f64().unwrap_or(0.0) / 1000.0,
        drill["rto_ms"].as_f64().unwrap_or(0.0) / 1000.0,
        drill["restored_hash"] == drill["host_hash"]
    );
}

fn etcd(dir: &std::path::Path, data: &str, port: u16, peer: u16) -> std::process::Child {
    Command::new("etcd")
        .args(["--name", "e0", "--data-dir"])
        .arg(dir.join(data))
        .args(["--listen-client-urls", &format!("http://127.0.0.1:{port}")])
        .args([
            "--advertise-client-urls",
            &format!("http://127.0.0.1:{port}"),
        ])
        .args(["--listen-peer-urls", &format!("http://127.0.0.1:{peer}")])
        .args([
            "--initial-advertise-peer-urls",
            &format!("http://127.0.0.1:{peer}"),
        ])
        .args(["--initial-cluster", &format!("e0=http://127.0.0.1:{peer}")])
        .args(["--quota-backend-bytes", &(8u64 << 30).to_string()])
        .args(["--max-txn-ops", &PER_REQUEST.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("cannot start etcd")
}

/// Waits until etcd at `port` answers a read of key 0 with its value.
fn etcd_reads(port: u16, limit: Duration) {
    let body = format!("{{\"key\":\"{}\"}}", B64.encode(key(0)));
    let want = B64.encode(value(0));
    let client = http();
    eventually_within(limit, "etcd answers a read", || {
        client
            .post(format!("http://127.0.0.1:{port}/v3/kv/range"))
            .body(body.clone())
            .send()
            .ok()
            .and_then(|r| r.text().ok())
            .is_some_and(|t| t.contains(&want))
    });
}

/// Runs `etcdctl` (API v3) with the arguments `args` adds; panics with its stderr if it fails.
fn etcdctl(args: impl FnOnce(&mut Command) -> &mut Command) {
    let mut command = Command::new("etcdctl");
    command.env("ETCDCTL_API", "3");
    let out = args(&mut command).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn etcd_side(n: u64) {
    if Command::new("etcdctl").arg("version").output().is_err() {
        println!("etcd: etcdctl is not installed (benches/install-peers.sh); left out");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (port, peer) = (free_port(), free_port());
    let mut member = etcd(dir.path(), "e0", port, peer);
    etcd_reads_any(port);
    let started = Instant::now();
    let url = format!("http://127.0.0.1:{port}/v3/kv/txn");
    load(n, move |client, from, to| {
        let puts: Vec<String> = (from..to)
            .map(|i| {
                format!(
                    "{{\"requestPut\":{{\"key\":\"{}\",\"value\":\"{}\"}}}}",
                    B64.encode(key(i)),
                    B64.encode(value(i))
                )
            })
            .collect();
        let body = format!("{{\"success\":[{}]}}", puts.join(","));
        let r = client.post(&url).body(body).send().unwrap();
        assert!(r.status().is_success(), "{}", r.text().unwrap());
    });
    println!(
        "etcd: wrote {n} keys in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let snapshot = dir.path().join("snap.db");
    etcdctl(|c| {
        c.args(["--endpoints", &format!("http://127.0.0.1:{port}")])
            .args(["snapshot", "save"])
            .arg(&snapshot)
    });
    let _ = member.kill();
    let _ = member.wait();
    let size = std::fs::metadata(&snapshot).map_or(0, |m| m.len());
    let (port, peer) = (free_port(), free_port());
    let started = Instant::now();
    etcdctl(|c| {
        c.args(["snapshot", "restore"])
            .arg(&snapshot)
            .arg("--data-dir")
            .arg(dir.path().join("restored"))
            .args(["--name", "e0"])
            .args(["--initial-cluster", &format!("e0=http://127.0.0.1:{peer}")])
            .args([
                "--initial-advertise-peer-urls",
                &format!("http://127.0.0.1:{peer}"),
            ])
    });
    let restored = started.elapsed();
    let mut member = etcd(dir.path(), "restored", port, peer);
    etcd_reads(port, Duration::from_secs(600));
    println!(
        "etcd: snapshot of {:.0} MiB restored in {:.1} s; a member on it answered {:.1} s after \
         the restore began",
        size as f64 / f64::from(1 << 20),
        restored.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    let _ = member.kill();
    let _ = member.wait();
}

/// Waits until a fresh etcd at `port` answers at all.
fn etcd_reads_any(port: u16) {
    let client = http();
    eventually_within(Duration::from_secs(60), "etcd starts", || {
        client
            .get(format!("http://127.0.0.1:{port}/health"))
            .send()
            .is_ok_and(|r| r.status().is_success())
    });
}

fn main() {
    let n = mib() * (1 << 20) / VALUE as u64;
    println!("{n} keys of {VALUE} bytes ({} MiB of values)", mib());
    doppel_side(n);
    etcd_side(n);
}
