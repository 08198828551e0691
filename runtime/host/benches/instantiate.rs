//! Per-request instantiation: doppel's path (fresh store with the service's capabilities, limits
//! and deadline, then instantiate the pre-instantiated component) against wasmtime's bare
//! minimum, same engine, same component, alternating in blocks. Run:
//! `cargo bench -p doppel-host --bench instantiate`.

use std::time::{Duration, Instant};

use doppel_host::bench::Instantiation;

const BLOCK: usize = 2_000;
const ROUNDS: usize = 10;

fn main() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let dir = tempfile::tempdir()?;
        let component = std::fs::read(doppel_guests::HELLO)?;
        let bench = Instantiation::new(component, dir.path()).await?;
        // Warm up both paths (page faults, pool slots).
        for _ in 0..BLOCK {
            bench.ours().await?;
            bench.bare().await?;
        }
        let (mut ours, mut bare) = (Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            let t = Instant::now();
            for _ in 0..BLOCK {
                bench.ours().await?;
            }
            ours.push(t.elapsed() / BLOCK as u32);
            let t = Instant::now();
            for _ in 0..BLOCK {
                bench.bare().await?;
            }
            bare.push(t.elapsed() / BLOCK as u32);
        }
        ours.sort();
        bare.sort();
        let median = |v: &[Duration]| v[v.len() / 2];
        let (o, b) = (median(&ours), median(&bare));
        println!(
            "per-request instantiation of examples/hello, median of {ROUNDS} blocks of {BLOCK}:"
        );
        println!(
            "  doppel (full per-request store)  {:>8.2} µs",
            o.as_secs_f64() * 1e6
        );
        println!(
            "  wasmtime bare store              {:>8.2} µs",
            b.as_secs_f64() * 1e6
        );
        println!(
            "  ratio doppel / bare              {:>8.3}  (goal: within 1.10)",
            o.as_secs_f64() / b.as_secs_f64()
        );
        Ok(())
    })
}
