//! Why the raft log allocates its file ahead of its records: one small record plus `fdatasync`,
//! appended to a growing file (its size changes with every write, which ext4 must journal)
//! against written into space allocated earlier with `fallocate` (only data to flush). Three
//! rounds, alternating, 2,000 syncs each; p50 and p99 per sync, same disk, same run.
//! Run: `cargo bench -p doppel-replication --bench sync` (`SYNC_DIR` picks the disk).

use std::fs::OpenOptions;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::time::Instant;

const SYNCS: usize = 2_000;
const RECORD: [u8; 300] = [7; 300];

fn percentiles(mut micros: Vec<f64>) -> (f64, f64) {
    micros.sort_by(f64::total_cmp);
    (micros[micros.len() / 2], micros[micros.len() * 99 / 100])
}

fn growing(dir: &std::path::Path) -> (f64, f64) {
    let path = dir.join("growing");
    let _ = std::fs::remove_file(&path);
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .unwrap();
    let times = (0..SYNCS)
        .map(|_| {
            let t = Instant::now();
            f.write_all(&RECORD).unwrap();
            f.sync_data().unwrap();
            t.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    percentiles(times)
}

fn preallocated(dir: &std::path::Path) -> (f64, f64) {
    let path = dir.join("preallocated");
    let _ = std::fs::remove_file(&path);
    let f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let len = (SYNCS * RECORD.len()) as libc::off_t;
    // SAFETY: a plain system call on a descriptor `f` owns.
    assert_eq!(unsafe { libc::fallocate(f.as_raw_fd(), 0, 0, len) }, 0);
    f.sync_all().unwrap();
    let times = (0..SYNCS)
        .map(|i| {
            let t = Instant::now();
            f.write_all_at(&RECORD, (i * RECORD.len()) as u64).unwrap();
            f.sync_data().unwrap();
            t.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    percentiles(times)
}

fn main() {
    let dir = match std::env::var_os("SYNC_DIR") {
        Some(d) => tempfile::tempdir_in(d).unwrap(),
        None => tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap(),
    };
    println!("a 300-byte record + fdatasync, {SYNCS} per round (µs per sync):");
    for round in 1..=3 {
        let (g50, g99) = growing(dir.path());
        let (p50, p99) = preallocated(dir.path());
        println!(
            "  round {round}: growing p50 {g50:>5.0} p99 {g99:>5.0}   preallocated p50 {p50:>5.0} p99 {p99:>5.0}   p50 ratio {:.2}",
            p50 / g50
        );
    }
}
