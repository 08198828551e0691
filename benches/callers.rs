//! What verifying a caller's bearer token costs inside a guest: requests/s and latency of the
//! same handlers (read one record; write one) on open routes and on routes that verify an RS256, ES256
//! or EdDSA token (`doppel_sdk::auth`: the JWKS, issuer and audience from config, the signature,
//! the claims), alternating in one run, with the open/guarded ratio. A token the host has seen
//! verified is remembered (decision 0010), so the guarded columns measure a session's later
//! requests; the "first" columns (read only) send a token never seen before on every request,
//! from lists minted up front, with the service redeployed before each run so that nothing of
//! the previous run is remembered. One host, wrk. Run:
//! `cargo bench -p doppel --bench callers` (`CALLERS_CONNECTIONS`, default 1,32;
//! `CALLERS_SECONDS` per run, default 5; `CALLERS_ROUNDS`, default 3).

mod common;
#[allow(dead_code)]
#[path = "../tests/integration/issuer.rs"]
mod issuer;
#[allow(dead_code)]
#[path = "../tests/integration/support.rs"]
mod support;

use std::io::Write as _;

use common::{Load, median, wrk_with};
use issuer::Issuer;
use jsonwebtoken::Algorithm;
use support::Host;

fn main() {
    let seconds = common::env_number("CALLERS_SECONDS", 5) as u32;
    let rounds = common::env_number("CALLERS_ROUNDS", 3);
    let connections = common::env_list("CALLERS_CONNECTIONS", "1,32");
    let host = Host::start();
    let issuer = Issuer::shared();
    let args = issuer.deploy_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    host.deploy(doppel_guests::CALLERS, "callers", &args);
    host.cli_ok(&[
        "kv",
        "put",
        "--service",
        "callers",
        "--bucket",
        "records",
        "one",
        "\"a record\"",
    ]);
    let claims = Issuer::claims("ada", &["case-worker"]);
    let variants: Vec<(&str, Option<String>)> = vec![
        ("open", None),
        (
            "RS256",
            Some(issuer.sign(Algorithm::RS256, Some("rsa"), &claims)),
        ),
        (
            "ES256",
            Some(issuer.sign(Algorithm::ES256, Some("ec"), &claims)),
        ),
        (
            "EdDSA",
            Some(issuer.sign(Algorithm::EdDSA, Some("ed"), &claims)),
        ),
    ];
    // How many requests a run of a never-seen token per request can make at most on this kind
    // of machine, with room: more and the list wraps (reported below).
    let firsts: Vec<(&str, tempfile::NamedTempFile, usize)> = [
        ("RS256 first", Algorithm::RS256, "rsa", 1_600),
        ("ES256 first", Algorithm::ES256, "ec", 2_400),
        ("EdDSA first", Algorithm::EdDSA, "ed", 8_000),
    ]
    .into_iter()
    .map(|(name, alg, kid, per_second)| {
        let n = per_second * seconds as usize;
        eprintln!("minting {n} distinct {alg:?} tokens");
        (name, distinct_tokens(issuer, alg, kid, n), n)
    })
    .collect();
    for &c in &connections {
        for (kind, method) in [("read", "GET"), ("write", "POST")] {
            let mut names: Vec<&str> = variants.iter().map(|(name, _)| *name).collect();
            if kind == "read" {
                names.extend(firsts.iter().map(|(name, _, _)| *name));
            }
            let mut runs: Vec<Vec<Load>> = vec![Vec::new(); names.len()];
            for _ in 0..rounds {
                for (i, (_, token)) in variants.iter().enumerate() {
                    let mut script = format!("wrk.method = \"{method}\"\nwrk.body = \"x\"\n");
                    let path = match token {
                        None => format!("/callers/open/{kind}"),
                        Some(token) => {
                            script.push_str(&format!(
                                "wrk.headers[\"Authorization\"] = \"Bearer {token}\"\n"
                            ));
                            format!("/callers/guarded/{kind}")
                        }
                    };
                    runs[i].push(wrk_with(&host.url(&path), c, seconds, Some(&script)));
                }
                if kind != "read" {
                    continue;
                }
                for (j, (name, tokens, n)) in firsts.iter().enumerate() {
                    // A new version of the service starts with nothing remembered.
                    host.deploy(doppel_guests::CALLERS, "callers", &args);
                    let script = each_token_once(tokens.path(), c);
                    let url = host.url("/callers/guarded/read");
                    let load = wrk_with(&url, c, seconds, Some(&script));
                    if load.rps * f64::from(seconds) > *n as f64 {
                        println!("  ({name}: the list of {n} tokens wrapped; later requests hit)");
                    }
                    runs[variants.len() + j].push(load);
                }
            }
            println!("{kind}, {c} connection(s), median of {rounds} rounds of {seconds} s:");
            let mut open_rps = 0.0;
            for (name, loads) in names.iter().zip(&runs) {
                let errors: u64 = loads.iter().map(|l| l.errors).sum();
                let mut rps: Vec<f64> = loads.iter().map(|l| l.rps).collect();
                let mut p50: Vec<f64> = loads.iter().map(|l| l.p50_ms).collect();
                let mut p99: Vec<f64> = loads.iter().map(|l| l.p99_ms).collect();
                let rps = median(&mut rps);
                if *name == "open" {
                    open_rps = rps;
                }
                println!(
                    "  {name:<11} {rps:>8.0} req/s  p50 {:>6.3} ms  p99 {:>6.3} ms  errors {errors}  open/this {:.2}",
                    median(&mut p50),
                    median(&mut p99),
                    open_rps / rps.max(1.0)
                );
            }
        }
    }
}

/// `n` genuine tokens for `alg`, each with a claim of its own (`jti`), one per line in a file.
fn distinct_tokens(
    issuer: &Issuer,
    alg: Algorithm,
    kid: &str,
    n: usize,
) -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    let mut claims = Issuer::claims("ada", &["case-worker"]);
    for i in 0..n {
        claims["jti"] = serde_json::json!(i);
        writeln!(file, "{}", issuer.sign(alg, Some(kid), &claims)).unwrap();
    }
    file.flush().unwrap();
    file
}

/// A wrk script sending the tokens of `path` in turn, each once: wrk's threads (as many as
/// `common::wrk_with` starts for `connections`) take every other one.
fn each_token_once(path: &std::path::Path, connections: u32) -> String {
    let threads = connections.clamp(1, 2);
    format!(
        r#"local started = 0
function setup(thread)
  thread:set("first", started)
  started = started + 1
end
function init(args)
  tokens = {{}}
  for line in io.lines("{path}") do tokens[#tokens + 1] = line end
  next_index = first
end
function request()
  local token = tokens[(next_index % #tokens) + 1]
  next_index = next_index + {threads}
  return wrk.format("GET", nil, {{["Authorization"] = "Bearer " .. token}}, nil)
end
"#,
        path = path.display()
    )
}
