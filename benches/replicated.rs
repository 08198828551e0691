//! Replicated durable writes: examples/counter increments (each acknowledged only once a majority
//! has it fdatasynced) at 1, 16 and 256 concurrent clients, on a 3-host loopback cluster (the
//! clients talk to the service's active host, which is also the raft leader) next to a single
//! host in the same run. All hosts share this machine's cores and disk, so the cluster pays three
//! syncs per group on one disk. Run: `cargo bench -p doppel --bench replicated`.

mod common;
#[allow(dead_code)]
#[path = "../tests/integration/support.rs"]
mod support;

use common::wrk;
use support::{Host, cluster, eventually, leader};

fn main() {
    let single = Host::start();
    single.deploy(doppel_guests::COUNTER, "counter", &[]);
    let hosts = cluster(3, &[]);
    let lead = leader(&hosts);
    hosts[lead].deploy(doppel_guests::COUNTER, "counter", &[]);
    for h in &hosts {
        eventually("every host serves counter", || {
            h.get("/counter/visits").0 == 200
        });
    }
    println!("replicated durable writes (examples/counter POST), 10 s per run");
    for clients in [1u32, 16, 256] {
        let one = wrk(&single.url("/counter/visits"), clients, 10, "POST");
        let three = wrk(&hosts[lead].url("/counter/visits"), clients, 10, "POST");
        println!(
            "  {clients:>3} clients: 3 hosts {:>6.0}/s (p50 {:>6.2} ms, p99 {:>7.2} ms, errors {})   1 host {:>6.0}/s (p50 {:>6.2} ms, p99 {:>7.2} ms)   ratio {:.2}",
            three.rps,
            three.p50_ms,
            three.p99_ms,
            three.errors,
            one.rps,
            one.p50_ms,
            one.p99_ms,
            three.rps / one.rps
        );
    }
}
