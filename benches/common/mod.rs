//! What the process-level benchmarks share besides the tests' `support::Host`: wrk, polling for
//! a first answer, medians.

#![allow(dead_code)]

use std::process::Command;
use std::time::{Duration, Instant};

/// What wrk measured.
#[derive(Clone, Copy, Debug, Default)]
pub struct Load {
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub errors: u64,
}

fn parse_ms(text: &str) -> f64 {
    let t = text.trim();
    if let Some(v) = t.strip_suffix("us") {
        v.parse::<f64>().unwrap_or(0.0) / 1000.0
    } else if let Some(v) = t.strip_suffix("ms") {
        v.parse().unwrap_or(0.0)
    } else if let Some(v) = t.strip_suffix('s') {
        v.parse::<f64>().unwrap_or(0.0) * 1000.0
    } else {
        0.0
    }
}

/// Runs wrk against `url` with `connections` for `seconds`; `method` GET or POST.
pub fn wrk(url: &str, connections: u32, seconds: u32, method: &str) -> Load {
    let script = (method == "POST").then_some("wrk.method = \"POST\"\n");
    wrk_with(url, connections, seconds, script)
}

/// Runs wrk with a Lua `script` (request method, body, headers), or plain GETs without one.
pub fn wrk_with(url: &str, connections: u32, seconds: u32, script: Option<&str>) -> Load {
    let threads = connections.clamp(1, 2).to_string();
    let mut cmd = Command::new("wrk");
    cmd.args([
        "--latency",
        "-t",
        &threads,
        "-c",
        &connections.to_string(),
        "-d",
        &format!("{seconds}s"),
    ]);
    // Removed when this returns (it used to be left in /tmp after every run).
    let script_file = script.map(|lua| {
        let mut file = tempfile::Builder::new()
            .prefix("doppel-wrk-")
            .suffix(".lua")
            .tempfile()
            .unwrap();
        std::io::Write::write_all(&mut file, lua.as_bytes()).unwrap();
        file
    });
    if let Some(file) = &script_file {
        cmd.arg("-s").arg(file.path());
    }
    let out = cmd
        .arg(url)
        .output()
        .expect("wrk is not installed: run benches/install-peers.sh");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut load = Load::default();
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["Requests/sec:", v] => load.rps = v.parse().unwrap_or(0.0),
            ["50%", v] => load.p50_ms = parse_ms(v),
            ["99%", v] => load.p99_ms = parse_ms(v),
            ["Non-2xx", "or", "3xx", "responses:", v] => {
                load.errors += v.parse::<u64>().unwrap_or(0)
            }
            ["Socket", "errors:", rest @ ..] => {
                load.errors += rest
                    .iter()
                    .filter_map(|w| w.trim_end_matches(',').parse::<u64>().ok())
                    .sum::<u64>()
            }
            _ => {}
        }
    }
    load
}

/// Waits until `url` answers 200, polling as fast as a connect allows; returns when.
pub fn first_answer(url: &str, deadline: Duration) -> Option<Instant> {
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let start = Instant::now();
    while start.elapsed() < deadline {
        if let Ok(r) = client.get(url).send()
            && r.status().is_success()
        {
            return Some(Instant::now());
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    None
}

/// CPU time (user + system) the processes `pids` have used so far, in seconds, from
/// `/proc/PID/stat`: what a load cost them, measured around it, whatever the machine's noise.
pub fn cpu_seconds(pids: &[u32]) -> f64 {
    // SAFETY: sysconf only reads a constant of the system.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    pids.iter()
        .map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .unwrap_or_else(|e| panic!("cannot read /proc/{pid}/stat: {e}"));
            // The command name may hold spaces; the fields after it are fixed: utime is the
            // 14th field of the line, stime the 15th.
            let after_name = &stat[stat.rfind(')').expect("a /proc stat line") + 2..];
            let fields: Vec<&str> = after_name.split_whitespace().collect();
            let used: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
            used as f64 / ticks
        })
        .sum()
}

pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// A loopback port free when asked (for a peer the bench starts itself).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The number in environment variable `name`, or `default` when it is unset or not a number.
pub fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A comma-separated list of numbers from the environment variable `name`, or `default`.
pub fn env_list(name: &str, default: &str) -> Vec<u32> {
    std::env::var(name)
        .unwrap_or_else(|_| default.into())
        .split(',')
        .filter_map(|n| n.trim().parse().ok())
        .collect()
}

/// The median of each of `runs`' figures (errors summed), printed as one line named `name`.
pub fn summary(name: &str, runs: &[Load]) -> Load {
    let pick = |f: fn(&Load) -> f64| {
        let mut v: Vec<f64> = runs.iter().map(f).collect();
        median(&mut v)
    };
    let load = Load {
        rps: pick(|l| l.rps),
        p50_ms: pick(|l| l.p50_ms),
        p99_ms: pick(|l| l.p99_ms),
        errors: runs.iter().map(|l| l.errors).sum(),
    };
    println!(
        "    {name:<15} {:>9.0} req/s   p50 {:>6.3} ms   p99 {:>6.3} ms   errors {}",
        load.rps, load.p50_ms, load.p99_ms, load.errors
    );
    load
}
