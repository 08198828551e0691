//! `wasi:blobstore` end to end: a wasmCloud-style component stores objects through the host,
//! streamed in and out, and they are replicated state like keys: sealed, counted in the quota,
//! alive after SIGKILL and failover.

use std::time::Duration;

use doppel_guests as guests;

use crate::support::*;

/// `len` bytes that differ from any other `seed`'s (and are no run of one byte, which a bug
/// dropping or repeating a chunk could hide behind).
fn content(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn put(host: &Host, path: &str, body: Vec<u8>) -> (u16, String) {
    let r = http().put(host.url(path)).body(body).send().unwrap();
    (r.status().as_u16(), r.text().unwrap())
}

fn get_bytes(host: &Host, path: &str) -> (u16, Vec<u8>) {
    let r = http().get(host.url(path)).send().unwrap();
    (r.status().as_u16(), r.bytes().unwrap().to_vec())
}

fn delete(host: &Host, path: &str) -> (u16, String) {
    let r = http().delete(host.url(path)).send().unwrap();
    (r.status().as_u16(), r.text().unwrap())
}

/// Every call of the proposal a component makes, in both orders components call `write-data`
/// in; objects over many chunks, ranges across chunk borders, copies, moves, deletes; an upload
/// given up leaves nothing behind.
#[test]
fn objects_are_stored_read_by_range_copied_moved_and_deleted() {
    let host = Host::start();
    host.deploy(guests::BLOBS, "docs", &["--max-body", "16MiB"]);
    let a = content(1, 3_000_017);
    assert_eq!(put(&host, "/docs/o/a", a.clone()), (200, "3000017".into()));
    assert_eq!(get_bytes(&host, "/docs/o/a"), (200, a.clone()));
    // A range across the border of the first two 64 KiB chunks, and one to the end.
    let (status, part) = get_bytes(&host, "/docs/o/a?start=65000&end=140000");
    assert_eq!(status, 200);
    assert_eq!(part, a[65000..=140000]);
    let (_, tail) = get_bytes(&host, "/docs/o/a?start=2999999");
    assert_eq!(tail, a[2999999..]);
    assert_eq!(host.get("/docs/sync/a"), (200, "3000017".into()));
    assert_eq!(host.get("/docs/info/a"), (200, "3000017".into()));

    // write-data before the body is written (the other order components use).
    let b = content(2, 200_000);
    assert_eq!(put(&host, "/docs/o/b?order=before", b.clone()).0, 200);
    assert_eq!(get_bytes(&host, "/docs/o/b").1, b);
    // Replacing an object: readers see the new bytes, whole.
    let b2 = content(3, 70_000);
    assert_eq!(put(&host, "/docs/o/b", b2.clone()).0, 200);
    assert_eq!(get_bytes(&host, "/docs/o/b").1, b2);
    let empty = Vec::new();
    assert_eq!(
        put(&host, "/docs/o/empty", empty.clone()),
        (200, "0".into())
    );
    assert_eq!(get_bytes(&host, "/docs/o/empty"), (200, empty));

    assert_eq!(host.post("/docs/copy/a/c", ""), (200, "copied".into()));
    assert_eq!(host.post("/docs/move/b/d", ""), (200, "moved".into()));
    assert_eq!(host.get("/docs/list"), (200, "a\nc\nd\nempty".into()));
    assert_eq!(get_bytes(&host, "/docs/o/c").1, a);
    assert_eq!(get_bytes(&host, "/docs/o/d").1, b2);
    // Sealed like every value: no file of the host holds an object's bytes or its name.
    let canary = b"CANARY-scan-of-a-building-plan-".repeat(5000);
    assert_eq!(
        put(&host, "/docs/o/plan-of-flat-7b.pdf", canary.clone()).0,
        200
    );
    assert_eq!(get_bytes(&host, "/docs/o/plan-of-flat-7b.pdf").1, canary);
    let dirs = [host.data.as_path()];
    assert!(crate::at_rest::files_holding(&dirs, b"CANARY-scan-of").is_empty());
    assert!(crate::at_rest::files_holding(&dirs, b"plan-of-flat-7b").is_empty());
    assert_eq!(delete(&host, "/docs/o/plan-of-flat-7b.pdf").0, 200);
    let (status, text) = host.get("/docs/info/b");
    assert_eq!(status, 500);
    assert!(text.contains("does not exist"), "{text}");

    // An upload dropped without `finish` stores nothing.
    let (status, text) = put(&host, "/docs/abandon/x", content(4, 500_000));
    assert_eq!(
        (status, text.as_str()),
        (200, "500000 written, value dropped")
    );
    assert_eq!(host.get("/docs/list"), (200, "a\nc\nd\nempty".into()));

    assert_eq!(delete(&host, "/docs/o/a"), (200, "deleted".into()));
    assert_eq!(host.get("/docs/list"), (200, "c\nd\nempty".into()));
    assert_eq!(delete(&host, "/docs/container"), (200, "deleted".into()));
    assert_eq!(host.get("/docs/list"), (200, "".into()));
    // Every chunk went with its object: the service stores nothing but its settings.
    let usage = service_usage(&host, "docs");
    assert!(
        usage < 4096,
        "{usage} bytes left after every object was deleted"
    );
}

/// What `ls --json` says the service stores, in bytes.
fn service_usage(host: &Host, name: &str) -> u64 {
    let list: serde_json::Value = serde_json::from_str(&host.cli_ok(&["ls", "--json"])).unwrap();
    let service = list
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("{name} not in {list}"));
    service["storage_bytes"]
        .as_u64()
        .unwrap_or_else(|| panic!("no storage_bytes in {service}"))
}

/// An object larger than the service's limit, or than what its quota leaves, is refused while
/// it streams in, and nothing of it stays.
#[test]
fn objects_over_the_limit_or_the_quota_are_refused() {
    let host = Host::start();
    host.deploy(
        guests::BLOBS,
        "small",
        &["--max-body", "16MiB", "--max-object", "1MiB"],
    );
    let (status, text) = put(&host, "/small/o/big", content(5, 2 << 20));
    assert_eq!(status, 500, "{text}");
    assert!(text.contains("at most 1048576 bytes"), "{text}");
    assert_eq!(host.get("/small/list"), (200, "".into()));
    assert_eq!(put(&host, "/small/o/fits", content(6, 1 << 20)).0, 200);

    host.deploy(
        guests::BLOBS,
        "quota",
        &["--max-body", "16MiB", "--quota", "2MiB"],
    );
    let (status, text) = put(&host, "/quota/o/big", content(7, 3 << 20));
    assert_eq!(status, 500, "{text}");
    assert!(text.contains("quota"), "{text}");
    assert_eq!(host.get("/quota/list"), (200, "".into()));
    eventually("the refused upload's chunks are removed", || {
        service_usage(&host, "quota") < 4096
    });
}

/// Objects are replicated state: after the active host is killed with SIGKILL the service
/// fails over and every byte is read back through the survivors, and through the killed host
/// once it is back.
#[test]
fn objects_survive_sigkill_and_failover() {
    let mut hosts = cluster(3, &[]);
    let active = (leader(&hosts) + 1) % 3;
    hosts[active].deploy(guests::BLOBS, "docs", &["--max-body", "16MiB"]);
    for h in &hosts {
        eventually("every host serves docs", || h.get("/docs/list").0 == 200);
    }
    let bytes = content(8, 5_000_000);
    let (code, text) = put(&hosts[active], "/docs/o/scan.pdf", bytes.clone());
    assert_eq!(code, 200, "{text}");
    hosts[active].kill();
    let survivor = (active + 1) % 3;
    eventually_within(
        Duration::from_secs(30),
        "the object is read after failover",
        || get_bytes(&hosts[survivor], "/docs/o/scan.pdf") == (200, bytes.clone()),
    );
    let st = status(&hosts[survivor]);
    assert_ne!(
        st["services"][0]["active"][0],
        name(active).as_str(),
        "{st}"
    );
    restart_in_place(&mut hosts[active], &name(active));
    assert_eq!(get_bytes(&hosts[active], "/docs/o/scan.pdf"), (200, bytes));
}

/// The peak resident memory of process `pid` so far, in bytes.
fn peak_rss(pid: u32) -> u64 {
    proc_status_bytes(pid, "VmHWM")
}

/// A 50 MiB object streams in and out through a guest, byte for byte, and the host's memory
/// stays bounded: it never holds the object whole (at most an entry being written and one being
/// filled per upload, two chunks per download), and the raft log keeps large entries in its
/// file only. What is left is the storage engine's page cache (sled's, limited to 64 MiB of
/// pages, which costs it a few hundred MiB of memory at most; `benches/README.md`).
#[test]
fn a_50_mib_object_streams_in_and_out_with_bounded_host_memory() {
    let mut host = Host::start();
    host.deploy(guests::BLOBS, "docs", &["--max-body", "64MiB"]);
    let object = content(9, 50 << 20);
    for name in ["first", "second", "third"] {
        assert_eq!(
            put(&host, &format!("/docs/o/{name}"), object.clone()),
            (200, (50u64 << 20).to_string())
        );
    }
    let (status, back) = get_bytes(&host, "/docs/o/second");
    assert_eq!(status, 200);
    assert!(back == object, "the object read back differs");
    let peak = peak_rss(host.pid());
    eprintln!("host peak memory: {} MiB", peak >> 20);
    assert!(
        peak < 480 << 20,
        "the host's peak memory was {} MiB after storing 150 MiB and reading 50 MiB",
        peak >> 20
    );
    // Started again, the host reads its log one record at a time and keeps none of the chunks:
    // its memory does not start at the size of the log.
    assert!(host.stop());
    host.restart();
    assert_eq!(
        host.get("/docs/info/third"),
        (200, (50u64 << 20).to_string())
    );
    let after = peak_rss(host.pid());
    eprintln!("host peak memory after a restart: {} MiB", after >> 20);
    assert!(
        after < 140 << 20,
        "the host's peak memory was {} MiB after a restart with 150 MiB in its log",
        after >> 20
    );
}
