//! What verifying a caller's bearer token costs inside a guest: requests/s and latency of the
//! same handlers (read one record; write one) on open routes and on routes that verify an RS256, ES256
//! or EdDSA token (`doppel_sdk::auth`: the JWKS, issuer and audience from config, the signature,
//! the claims), alternating in one run, with the open/guarded ratio. One host, wrk. Run:
//! `cargo bench -p doppel --bench callers` (`CALLERS_CONNECTIONS`, default 1,32;
//! `CALLERS_SECONDS` per run, default 5; `CALLERS_ROUNDS`, default 3).

mod common;
#[allow(dead_code)]
#[path = "../tests/integration/issuer.rs"]
mod issuer;
#[allow(dead_code)]
#[path = "../tests/integration/support.rs"]
mod support;

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
    for &c in &connections {
        for (kind, method) in [("read", "GET"), ("write", "POST")] {
            let mut runs: Vec<Vec<Load>> = vec![Vec::new(); variants.len()];
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
            }
            println!("{kind}, {c} connection(s), median of {rounds} rounds of {seconds} s:");
            let mut open_rps = 0.0;
            for ((name, _), loads) in variants.iter().zip(&runs) {
                let errors: u64 = loads.iter().map(|l| l.errors).sum();
                let mut rps: Vec<f64> = loads.iter().map(|l| l.rps).collect();
                let mut p50: Vec<f64> = loads.iter().map(|l| l.p50_ms).collect();
                let mut p99: Vec<f64> = loads.iter().map(|l| l.p99_ms).collect();
                let rps = median(&mut rps);
                if *name == "open" {
                    open_rps = rps;
                }
                println!(
                    "  {name:<6} {rps:>8.0} req/s  p50 {:>6.3} ms  p99 {:>6.3} ms  errors {errors}  open/this {:.2}",
                    median(&mut p50),
                    median(&mut p99),
                    open_rps / rps.max(1.0)
                );
            }
        }
    }
}
