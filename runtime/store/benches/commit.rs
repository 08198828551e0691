//! Store-level durable writes/s (no HTTP, no wasm) at 1 and 64 concurrent writers, next to a raw
//! write+fdatasync loop on the same disk. Separates the store's cost from the host's.
//! Run: `cargo bench -p doppel-store --bench commit`.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use doppel_store::{Command, LocalStore, Op, Space, Store};

const SECONDS: u64 = 5;

fn raw(dir: &std::path::Path) -> f64 {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("raw.log"))
        .unwrap();
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < Duration::from_secs(SECONDS) {
        f.write_all(&[7u8; 64]).unwrap();
        f.sync_data().unwrap();
        n += 1;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(LocalStore::open(dir.path().join("store")).unwrap());
    println!("store commits (increment of one counter) vs raw write+fdatasync loop:");
    for writers in [1usize, 64] {
        let raw = raw(dir.path());
        let done = rt.block_on(async {
            let start = Instant::now();
            let tasks: Vec<_> = (0..writers)
                .map(|_| {
                    let store = store.clone();
                    tokio::spawn(async move {
                        let mut n = 0u64;
                        while start.elapsed() < Duration::from_secs(SECONDS) {
                            let op = Op::Increment {
                                space: Space::bucket("bench", "default"),
                                key: b"n".to_vec(),
                                delta: 1,
                            };
                            store.apply(Command::new(op)).await.unwrap();
                            n += 1;
                        }
                        n
                    })
                })
                .collect();
            let mut total = 0;
            for t in tasks {
                total += t.await.unwrap();
            }
            total as f64 / start.elapsed().as_secs_f64()
        });
        println!(
            "  {writers:>2} writers: store {done:>8.0}/s   raw {raw:>8.0}/s   ratio {:.2}",
            done / raw
        );
    }
}
