//! Documents through a guest: MiB/s of a `wasi:blobstore` upload and download (tests/programs/
//! blobs, streaming 64 KiB at a time) against `cp` + `fsync` of the same bytes on the same disk,
//! alternating in one run. The upload is acknowledged only once every chunk is in the raft log
//! with `fdatasync`, as `cp` + `fsync` is once the file is on disk.
//! Run: `cargo bench -p doppel --bench blobs` (`BLOB_MIB=64`, `ROUNDS=5`).

mod common;
#[allow(dead_code)]
#[path = "../tests/integration/support.rs"]
mod support;

use std::io::Write as _;
use std::time::Instant;

use common::median;
use support::{Host, http};

fn main() {
    let mib = common::env_number("BLOB_MIB", 64);
    let rounds = common::env_number("ROUNDS", 5);
    let host = Host::start_with(&[]);
    host.deploy(
        doppel_guests::BLOBS,
        "docs",
        &[
            "--max-body",
            "1GiB",
            "--max-object",
            "1GiB",
            "--quota",
            "100GiB",
            "--timeout",
            "5min",
        ],
    );
    // The same disk as the host's data: next to its data directory.
    let scratch = host.data.with_extension("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    let source = scratch.join("source.bin");
    let bytes: Vec<u8> = (0..mib << 20).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::File::create(&source)
        .unwrap()
        .write_all(&bytes)
        .unwrap();
    let size = (mib << 20) as f64 / (1 << 20) as f64;

    let (mut up, mut down, mut cp) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let url = host.url(&format!("/docs/o/object{round}"));
        let started = Instant::now();
        let r = http().put(&url).body(bytes.clone()).send().unwrap();
        assert_eq!(r.status().as_u16(), 200, "{}", r.text().unwrap());
        up.push(size / started.elapsed().as_secs_f64());

        let started = Instant::now();
        let r = http().get(&url).send().unwrap();
        let got = r.bytes().unwrap();
        down.push(size / started.elapsed().as_secs_f64());
        assert_eq!(got.len(), bytes.len());

        let target = scratch.join(format!("copy{round}.bin"));
        let started = Instant::now();
        std::fs::copy(&source, &target).unwrap();
        std::fs::File::open(&target).unwrap().sync_all().unwrap();
        cp.push(size / started.elapsed().as_secs_f64());
    }
    let (up, down, cp) = (median(&mut up), median(&mut down), median(&mut cp));
    println!("one {mib} MiB object, median of {rounds} alternating rounds:");
    println!(
        "  upload through the guest   {up:>8.1} MiB/s   ({:.2}× cp + fsync)",
        up / cp
    );
    println!(
        "  download through the guest {down:>8.1} MiB/s   ({:.2}× cp + fsync)",
        down / cp
    );
    println!("  cp + fsync, same disk      {cp:>8.1} MiB/s");
    let _ = std::fs::remove_dir_all(&scratch);
}
