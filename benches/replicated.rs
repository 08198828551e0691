//! Replicated durable writes at 1, 16 and 256 concurrent clients, side by side in one run:
//! - doppel: a 3-host loopback cluster, each write a keyvalue `set` through a guest, sent to the
//!   service's active host (which also leads), acknowledged once a majority has it fdatasynced;
//! - etcd: a 3-member loopback cluster (Debian's etcd-server, `benches/install-peers.sh`), each
//!   write a `put` through its JSON gateway (`POST /v3/kv/put`), sent to the leader; its members
//!   talk mutual TLS to each other and TLS to clients, as doppel's hosts talk mutual TLS
//!   (`REPLICATED_ETCD_TLS=0` runs it in plain HTTP);
//! - one doppel host, for what replication costs.
//!
//! Same load generator (wrk), same key written over and over, same machine (2 cores, one disk:
//! every member's syncs hit the same device). Each run also reports the CPU time the system's
//! processes used (wrk's not counted) per write: where a run saturates the machine, as 256
//! clients do, writes/s follow it. Run: `cargo bench -p doppel --bench replicated`
//! (`REPLICATED_CLIENTS=1` for one client count only, `REPLICATED_ROUNDS=5` for five rounds
//! and the median of their ratios).

mod common;
#[allow(dead_code)]
#[path = "../tests/integration/support.rs"]
mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Load, cpu_seconds, free_port, wrk_with};
use support::{Host, cluster, eventually, leader};

const SECONDS: u32 = 10;

/// A 3-member etcd cluster on loopback; killed on drop.
struct Etcd {
    members: Vec<Child>,
    clients: Vec<String>,
    _dir: tempfile::TempDir,
}

/// Whether etcd runs with TLS (the default; `REPLICATED_ETCD_TLS=0` for plain HTTP).
fn etcd_tls() -> bool {
    std::env::var("REPLICATED_ETCD_TLS").map_or(true, |v| v.trim() != "0")
}

/// A CA and one certificate for 127.0.0.1 (server and client use) in `dir`: `ca.pem`,
/// `etcd.pem`, `etcd.key`.
fn write_etcd_certificates(dir: &std::path::Path) {
    use rcgen::{
        BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
        SanType,
    };
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::default();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut leaf = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    leaf.subject_alt_names
        .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
    leaf.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let issuer = Issuer::from_ca_cert_der(ca_cert.der(), &ca_key).unwrap();
    let cert = leaf.signed_by(&key, &issuer).unwrap();
    std::fs::write(dir.join("ca.pem"), ca_cert.pem()).unwrap();
    std::fs::write(dir.join("etcd.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("etcd.key"), key.serialize_pem()).unwrap();
}

impl Etcd {
    fn start() -> Option<Etcd> {
        if Command::new("etcd").arg("--version").output().is_err() {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let tls = etcd_tls();
        let scheme = if tls { "https" } else { "http" };
        if tls {
            write_etcd_certificates(dir.path());
        }
        let file = |name: &str| dir.path().join(name).display().to_string();
        let peers: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let clients: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let initial: Vec<String> = peers
            .iter()
            .enumerate()
            .map(|(i, p)| format!("e{i}={scheme}://127.0.0.1:{p}"))
            .collect();
        let members = (0..3)
            .map(|i| {
                let peer = format!("{scheme}://127.0.0.1:{}", peers[i]);
                let client = format!("{scheme}://127.0.0.1:{}", clients[i]);
                let mut etcd = Command::new("etcd");
                if tls {
                    etcd.args(["--peer-client-cert-auth", "--peer-auto-tls=false"])
                        .args(["--peer-trusted-ca-file", &file("ca.pem")])
                        .args(["--peer-cert-file", &file("etcd.pem")])
                        .args(["--peer-key-file", &file("etcd.key")])
                        // Clients get server TLS, as doppel's clients do: etcd 3.4 given a
                        // client CA refuses clients without a certificate, which wrk cannot
                        // present.
                        .args(["--cert-file", &file("etcd.pem")])
                        .args(["--key-file", &file("etcd.key")]);
                }
                etcd.args(["--name", &format!("e{i}")])
                    .arg("--data-dir")
                    .arg(dir.path().join(format!("e{i}")))
                    .args(["--listen-peer-urls", &peer])
                    .args(["--initial-advertise-peer-urls", &peer])
                    .args(["--listen-client-urls", &client])
                    .args(["--advertise-client-urls", &client])
                    .args(["--initial-cluster", &initial.join(",")])
                    .args(["--initial-cluster-state", "new"])
                    .args(["--initial-cluster-token", "doppel-bench"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("cannot start etcd")
            })
            .collect();
        Some(Etcd {
            members,
            clients: clients
                .iter()
                .map(|p| format!("{scheme}://127.0.0.1:{p}"))
                .collect(),
            _dir: dir,
        })
    }

    /// The members' process ids.
    fn pids(&self) -> Vec<u32> {
        self.members.iter().map(Child::id).collect()
    }

    /// The leader's client URL, once the cluster has one and accepts writes.
    fn leader(&self) -> String {
        let mut http = reqwest::blocking::Client::builder();
        if let Ok(pem) = std::fs::read(self._dir.path().join("ca.pem")) {
            http = http.add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap());
        }
        let http = http.build().unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            assert!(Instant::now() < deadline, "etcd did not elect a leader");
            for url in &self.clients {
                let status: Option<serde_json::Value> = http
                    .post(format!("{url}/v3/maintenance/status"))
                    .body("{}")
                    .send()
                    .ok()
                    .and_then(|r| r.json().ok());
                if let Some(s) = status
                    && s["leader"].is_string()
                    && s["leader"] == s["header"]["member_id"]
                    && http
                        .post(format!("{url}/v3/kv/put"))
                        .body(PUT)
                        .send()
                        .is_ok_and(|r| r.status().is_success())
                {
                    return url.clone();
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for m in &mut self.members {
            let _ = m.kill();
            let _ = m.wait();
        }
    }
}

/// key "counter", value "1", base64 as the gateway wants them.
const PUT: &str = r#"{"key":"Y291bnRlcg==","value":"MQ=="}"#;

fn post(body: &str, content_type: &str) -> String {
    format!(
        "wrk.method = \"POST\"\nwrk.body = '{body}'\nwrk.headers[\"Content-Type\"] = \"{content_type}\"\n"
    )
}

/// A load run on a system, with the CPU time its processes used meanwhile (wrk's own not
/// counted): on a machine the run saturates, CPU per write is what decides writes/s.
struct Run {
    load: Load,
    cpu: f64,
}

impl Run {
    fn measure(pids: &[u32], load: impl FnOnce() -> Load) -> Run {
        let before = cpu_seconds(pids);
        let load = load();
        Run {
            load,
            cpu: cpu_seconds(pids) - before,
        }
    }

    /// CPU time per acknowledged write, in µs.
    fn cpu_per_write(&self) -> f64 {
        self.cpu * 1e6 / (self.load.rps * f64::from(SECONDS))
    }
}

fn cell(run: &Run) -> String {
    let load = &run.load;
    format!(
        "{:>6.0}/s p50 {:>6.2} ms p99 {:>7.2} ms  CPU {:.2} cores, {:>4.0} µs a write{}",
        load.rps,
        load.p50_ms,
        load.p99_ms,
        run.cpu / f64::from(SECONDS),
        run.cpu_per_write(),
        if load.errors > 0 {
            format!(" ({} errors)", load.errors)
        } else {
            String::new()
        }
    )
}

/// Rounds per client count, each running the three systems one after the other:
/// `REPLICATED_ROUNDS`, 1 unless set. On a shared machine one round's ratio can swing by a
/// quarter; the median of several is the figure to quote.
fn rounds() -> u32 {
    match std::env::var("REPLICATED_ROUNDS") {
        Ok(n) => n
            .trim()
            .parse()
            .ok()
            .filter(|&n| n > 0)
            .unwrap_or_else(|| panic!("REPLICATED_ROUNDS: {n:?} is not a positive number")),
        Err(_) => 1,
    }
}

/// 1, 16 and 256 clients, or those listed in `REPLICATED_CLIENTS` (e.g. `1,16`) for a quicker run.
fn client_counts() -> Vec<u32> {
    match std::env::var("REPLICATED_CLIENTS") {
        Ok(list) => list
            .split(',')
            .map(|n| {
                n.trim()
                    .parse()
                    .unwrap_or_else(|_| panic!("REPLICATED_CLIENTS: {n:?} is not a number"))
            })
            .collect(),
        Err(_) => vec![1, 16, 256],
    }
}

fn main() {
    let single = Host::start();
    single.deploy(doppel_guests::KV_DRAFT2, "kv", &[]);
    let hosts = cluster(3, &[]);
    let lead = leader(&hosts);
    hosts[lead].deploy(doppel_guests::KV_DRAFT2, "kv", &[]);
    for h in &hosts {
        eventually("every host serves kv", || h.get("/kv/get?k=x").0 == 200);
    }
    let etcd = Etcd::start();
    let etcd_leader = etcd.as_ref().map(Etcd::leader);
    if etcd.is_none() {
        println!("etcd is not installed (benches/install-peers.sh): its column is left out");
    } else {
        println!(
            "etcd runs {}",
            if etcd_tls() {
                "with mutual TLS between members and TLS to clients"
            } else {
                "in plain HTTP (REPLICATED_ETCD_TLS=0)"
            }
        );
    }
    let doppel_put = post("1", "text/plain");
    let etcd_put = post(PUT, "application/json");
    println!("replicated durable writes (a put of one key), {SECONDS} s per run");
    // An election during a run would cost writes; a timing too tight for the load shows here.
    let term = || {
        support::status(&hosts[lead])["cluster"]["term"]
            .as_u64()
            .unwrap()
    };
    let term_before = term();
    let three_pids: Vec<u32> = hosts.iter().map(Host::pid).collect();
    let etcd_pids: Vec<u32> = etcd.as_ref().map(Etcd::pids).unwrap_or_default();
    let rounds = rounds();
    for clients in client_counts() {
        println!("  {clients:>3} clients");
        let mut ratios = Vec::new();
        for round in 1..=rounds {
            let three = Run::measure(&three_pids, || {
                wrk_with(
                    &hosts[lead].url("/kv/set?k=counter"),
                    clients,
                    SECONDS,
                    Some(&doppel_put),
                )
            });
            let theirs = etcd_leader.as_ref().map(|url| {
                Run::measure(&etcd_pids, || {
                    wrk_with(
                        &format!("{url}/v3/kv/put"),
                        clients,
                        SECONDS,
                        Some(&etcd_put),
                    )
                })
            });
            let one = Run::measure(&[single.pid()], || {
                wrk_with(
                    &single.url("/kv/set?k=counter"),
                    clients,
                    SECONDS,
                    Some(&doppel_put),
                )
            });
            if rounds > 1 {
                println!("    round {round}");
            }
            println!("      doppel, 3 hosts  {}", cell(&three));
            if let Some(theirs) = &theirs {
                let ratio = three.load.rps / theirs.load.rps;
                ratios.push(ratio);
                println!(
                    "      etcd, 3 members  {}   doppel/etcd {ratio:.2}, CPU a write {:.2}",
                    cell(theirs),
                    three.cpu_per_write() / theirs.cpu_per_write()
                );
            }
            println!(
                "      doppel, 1 host   {}   3 hosts/1 host {:.2}",
                cell(&one),
                three.load.rps / one.load.rps
            );
        }
        if ratios.len() > 1 {
            let low = ratios.iter().copied().fold(f64::INFINITY, f64::min);
            let high = ratios.iter().copied().fold(0.0, f64::max);
            println!(
                "    doppel/etcd over {} rounds: median {:.2}, range {low:.2}–{high:.2}",
                ratios.len(),
                common::median(&mut ratios)
            );
        }
    }
    if std::env::var_os("REPLICATED_BACKUP").is_some() {
        backup_cost(&hosts[lead], &three_pids, &doppel_put);
    }
    println!(
        "  elections on the 3-host cluster during the runs: {}",
        term() - term_before
    );
}

/// What continuous backup costs the 3-host cluster's writes (`REPLICATED_BACKUP=1`): each
/// client count runs without a target, then with one (a directory, shipping every committed
/// entry), then without again, and the ratio is to the mean of the two runs without.
fn backup_cost(lead: &Host, pids: &[u32], put: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (_, recipient) = support::keygen(lead, dir.path());
    println!("continuous backup to a directory on the same disk, off / on / off");
    let run = |clients| {
        Run::measure(pids, || {
            wrk_with(&lead.url("/kv/set?k=counter"), clients, SECONDS, Some(put))
        })
    };
    for (n, clients) in client_counts().into_iter().enumerate() {
        let before = run(clients);
        let name = format!("bench{n}");
        let url = format!("file://{}", dir.path().join(&name).display());
        lead.cli_ok(&["backup", "add", &name, &url, "--recipient", &recipient]);
        eventually("the first snapshot is shipped", || {
            let all: serde_json::Value =
                serde_json::from_str(&lead.cli_ok(&["backup", "ls", "--json"])).unwrap();
            all.as_array().unwrap().iter().any(|t| {
                t["target"]["name"] == name.as_str()
                    && t["status"]["shipped_index"].as_u64().unwrap_or(0) > 0
            })
        });
        let on = run(clients);
        let lag: serde_json::Value =
            serde_json::from_str(&lead.cli_ok(&["backup", "ls", "--json"])).unwrap();
        lead.cli_ok(&["backup", "rm", &name]);
        let after = run(clients);
        let off = (before.load.rps + after.load.rps) / 2.0;
        println!("  {clients:>3} clients");
        println!("      off  {}", cell(&before));
        println!("      on   {}", cell(&on));
        println!("      off  {}", cell(&after));
        println!(
            "      on/off {:.2}; lag at the end of the run {} ms",
            on.load.rps / off,
            lag.as_array()
                .unwrap()
                .iter()
                .find(|t| t["target"]["name"] == name.as_str())
                .map_or(0, |t| t["status"]["lag_ms"].as_u64().unwrap_or(0))
        );
    }
}
