//! Stress harness for planned moves, which promise zero failed requests: many migrations and
//! drains under a steady load of writes, each failed request recorded with everything needed to
//! find its cause.
//!
//! Three labelled hosts (`zone=a|b|c`), a keyvalue service, 4 writer threads sending traced
//! writes (`x-doppel-trace`, so each answer names the host that served it) through every host in
//! turn — to the active host (served there) and to standbys (forwarded).
//! 1. Migrations: by name and by label in turn, the command sent through the active host, a
//!    standby and the leader in turn.
//! 2. Drains of the raft leader, each followed by an undrain.
//! 3. Drains of the leader with `--remove` (each on a fresh cluster: the host leaves for good).
//!
//! For every failed request it prints the status and body (or the client's error), the host it
//! entered and the one that answered, and its start and end relative to each step of the move
//! it overlapped (warm-up, switch, hand-over, done); the hosts' logs are kept in a folder it
//! names. Exits non-zero if any request failed.
//!
//! Run: `cargo bench -p doppel --bench moves` (`MOVES_MIGRATIONS=N`, default 200;
//! `MOVES_DRAINS=N`, default 20; `MOVES_REMOVALS=N`, default 5).

mod common;
#[allow(dead_code)]
#[path = "../tests/integration/support.rs"]
mod support;

use std::io::BufRead as _;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::env_number as env;
use support::{Host, cluster_each, doppel, eventually, leader, name};

/// One request of the load.
#[derive(Clone, Debug)]
struct Sample {
    start: Instant,
    end: Instant,
    /// The host the request was sent to.
    entry: String,
    /// `None` when it succeeded; otherwise the status and body, or the client's error.
    failure: Option<String>,
    /// The host that answered, as the answer names it.
    served_by: Option<String>,
}

struct Writers {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<Sample>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Writers {
    /// `threads` writers cycling through `through` (host indexes into `hosts`).
    fn start(hosts: &[Host], through: &[usize], threads: usize, tag: &'static str) -> Writers {
        let targets: Vec<(String, String)> = through
            .iter()
            .map(|i| (name(*i), hosts[*i].url("/kv")))
            .collect();
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let all = samples.clone();
        let threads = support::writer_threads(
            threads,
            Duration::from_secs(10),
            &stop,
            move |client, t, i| {
                let (entry, base) = &targets[(t + i) % targets.len()];
                let key = format!("{tag}-{t}-{i}");
                let start = Instant::now();
                let answer = client
                    .post(format!("{base}/set?k={key}"))
                    .header("x-doppel-trace", "1")
                    .body(key)
                    .send();
                let (failure, served_by) = match answer {
                    Ok(r) => {
                        let served_by = r
                            .headers()
                            .get("x-doppel-served-by")
                            .and_then(|v| v.to_str().ok())
                            .map(String::from);
                        let status = r.status();
                        let failure = (status != 200)
                            .then(|| format!("{status}: {}", r.text().unwrap_or_default().trim()));
                        (failure, served_by)
                    }
                    Err(e) => (Some(format!("client error: {e:?}")), None),
                };
                all.lock().unwrap().push(Sample {
                    start,
                    end: Instant::now(),
                    entry: entry.clone(),
                    failure,
                    served_by,
                });
            },
        );
        Writers {
            stop,
            samples,
            threads,
        }
    }

    fn stop(self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        std::mem::take(&mut *self.samples.lock().unwrap())
    }
}

/// One move as the CLI reported it: when it started, each line it printed (with when), its end.
#[derive(Debug)]
struct Move {
    what: String,
    start: Instant,
    steps: Vec<(Instant, String)>,
    end: Instant,
    ok: bool,
}

/// Runs a `doppel` command that reports progress (migrate, drain) through `via`, timing each line.
fn run_move(via: &Host, what: String, args: &[&str]) -> Move {
    let start = Instant::now();
    let mut child = doppel()
        .args(args)
        .arg("--data")
        .arg(&via.data)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut steps = Vec::new();
    for line in std::io::BufReader::new(child.stdout.take().unwrap()).lines() {
        steps.push((Instant::now(), line.unwrap().trim().to_string()));
    }
    let out = child.wait_with_output().unwrap();
    if !out.status.success() {
        steps.push((
            Instant::now(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ));
    }
    Move {
        what,
        start,
        steps,
        end: Instant::now(),
        ok: out.status.success(),
    }
}

fn ms(from: Instant, to: Instant) -> String {
    if to >= from {
        format!("+{:.0} ms", (to - from).as_secs_f64() * 1000.0)
    } else {
        format!("-{:.0} ms", (from - to).as_secs_f64() * 1000.0)
    }
}

/// Prints every failed request with the moves it overlapped; answers how many failed.
fn report(samples: &[Sample], moves: &[Move]) -> usize {
    let failed: Vec<&Sample> = samples.iter().filter(|s| s.failure.is_some()).collect();
    for s in &failed {
        println!(
            "  FAILED: entered {}, answered by {}: {}",
            s.entry,
            s.served_by.as_deref().unwrap_or("(no answer)"),
            s.failure.as_deref().unwrap_or_default()
        );
        for m in moves.iter().filter(|m| {
            s.start <= m.end + Duration::from_secs(1) && s.end + Duration::from_secs(1) >= m.start
        }) {
            println!(
                "    during {}: request {} .. {} from its start",
                m.what,
                ms(m.start, s.start),
                ms(m.start, s.end)
            );
            for (at, line) in &m.steps {
                println!("      {} {line}", ms(m.start, *at));
            }
        }
    }
    failed.len()
}

fn summary(label: &str, samples: &[Sample], moves: &[Move]) -> usize {
    let forwarded = samples
        .iter()
        .filter(|s| s.served_by.as_ref().is_some_and(|by| *by != s.entry))
        .count();
    let failed = report(samples, moves);
    let refused = moves.iter().filter(|m| !m.ok).count();
    println!(
        "{label}: {} moves ({refused} refused), {} requests sent ({forwarded} forwarded), {failed} failed",
        moves.len(),
        samples.len()
    );
    for m in moves.iter().filter(|m| !m.ok) {
        println!("  move refused: {}: {:?}", m.what, m.steps.last());
    }
    failed
}

fn labelled() -> Vec<Host> {
    cluster_each(&[
        &["--label", "zone=a"],
        &["--label", "zone=b"],
        &["--label", "zone=c"],
    ])
}

fn deploy_kv(hosts: &[Host]) {
    hosts[0].deploy(doppel_guests::KV_DRAFT2, "kv", &[]);
    for h in hosts {
        eventually("every host serves kv", || h.get("/kv/get?k=x").0 == 200);
    }
}

/// Where `kv` is active now, as host indexes.
fn active(hosts: &[Host]) -> Vec<usize> {
    let st = support::status(&hosts[0]);
    st["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "kv")
        .map(|s| {
            s["active"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|n| n.as_str())
                .filter_map(|n| (0..hosts.len()).find(|i| name(*i) == n))
                .collect()
        })
        .unwrap_or_default()
}

fn keep_logs(hosts: &[Host], label: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("doppel-moves-{}-{label}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (i, h) in hosts.iter().enumerate() {
        std::fs::write(dir.join(format!("{}.log", name(i))), h.log()).unwrap();
    }
    dir
}

fn main() {
    let migrations = env("MOVES_MIGRATIONS", 200);
    let drains = env("MOVES_DRAINS", 20);
    let removals = env("MOVES_REMOVALS", 5);
    let mut failed = 0;

    // 1. Migrations.
    let hosts = labelled();
    deploy_kv(&hosts);
    let writers = Writers::start(&hosts, &[0, 1, 2], 4, "m");
    let mut moves = Vec::new();
    for trial in 0..migrations {
        let from = active(&hosts)[0];
        let to = (from + 1 + trial % 2) % 3;
        let target = if trial % 2 == 0 {
            name(to)
        } else {
            format!("zone={}", name(to))
        };
        let via = match trial % 3 {
            0 => from,
            1 => (from + 1) % 3,
            _ => leader(&hosts),
        };
        let what = format!(
            "migration {trial} of kv from {} to {target} via {}",
            name(from),
            name(via)
        );
        let m = run_move(&hosts[via], what, &["migrate", "kv", "--to", &target]);
        eprintln!("{} {}", m.what, if m.ok { "done" } else { "REFUSED" });
        moves.push(m);
    }
    let samples = writers.stop();
    let n = summary(&format!("{migrations} migrations"), &samples, &moves);
    if n > 0 {
        println!("  host logs: {}", keep_logs(&hosts, "migrations").display());
    }
    failed += n;

    // 2. Drains of the leader, each undone.
    let writers = Writers::start(&hosts, &[0, 1, 2], 4, "d");
    let mut moves = Vec::new();
    for trial in 0..drains {
        let l = leader(&hosts);
        // Bring kv to the leader first, so that the drain moves it.
        if active(&hosts) != [l] {
            let m = run_move(
                &hosts[l],
                format!("migration before drain {trial}"),
                &["migrate", "kv", "--to", &name(l)],
            );
            moves.push(m);
        }
        let via = (l + 1) % 3;
        let m = run_move(
            &hosts[via],
            format!("drain {trial} of the leader {}", name(l)),
            &["drain", &name(l)],
        );
        eprintln!("{} {}", m.what, if m.ok { "done" } else { "REFUSED" });
        moves.push(m);
        hosts[via].cli_ok(&["undrain", &name(l)]);
    }
    let samples = writers.stop();
    let n = summary(&format!("{drains} drains of the leader"), &samples, &moves);
    if n > 0 {
        println!("  host logs: {}", keep_logs(&hosts, "drains").display());
    }
    failed += n;
    drop(hosts);

    // 3. Drains of the leader with --remove, each on a fresh cluster, with writes through the
    // hosts that stay (the removed one is outside the cluster once it is done).
    let mut samples = Vec::new();
    let mut moves = Vec::new();
    for trial in 0..removals {
        let hosts = labelled();
        deploy_kv(&hosts);
        let l = leader(&hosts);
        if active(&hosts) != [l] {
            hosts[0].cli_ok(&["migrate", "kv", "--to", &name(l)]);
        }
        let stay: Vec<usize> = (0..3).filter(|i| *i != l).collect();
        let writers = Writers::start(&hosts, &stay, 4, "r");
        std::thread::sleep(Duration::from_millis(300));
        let what = format!("drain --remove {trial} of the leader {}", name(l));
        let m = run_move(&hosts[stay[0]], what, &["drain", &name(l), "--remove"]);
        eprintln!("{} {}", m.what, if m.ok { "done" } else { "REFUSED" });
        moves.push(m);
        std::thread::sleep(Duration::from_millis(300));
        let these = writers.stop();
        if these.iter().any(|s| s.failure.is_some()) {
            println!(
                "  host logs: {}",
                keep_logs(&hosts, &format!("removal-{trial}")).display()
            );
        }
        samples.extend(these);
    }
    failed += summary(
        &format!("{removals} drains of the leader with --remove"),
        &samples,
        &moves,
    );

    println!("failed requests in all: {failed}");
    if failed > 0 {
        std::process::exit(1);
    }
}
