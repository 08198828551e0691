//! Crash recovery at each persistence step. A host is made to abort at exactly one step of
//! writing its state (`DOPPEL_CRASH_AT`, see `doppel_store::crash`), after dropping what a power
//! cut at that instant would lose (bytes written but not yet synced), while clients write and
//! increment a counter through it. Restarted normally, it must have every acknowledged write and
//! must have counted every acknowledged increment exactly once (never more than were sent).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use doppel_guests as guests;

use crate::support::{Host, cluster, restart_in_place};

/// What clients saw while the host ran (and then crashed).
#[derive(Default)]
struct Seen {
    keys: Mutex<Vec<String>>,
    increments_acked: AtomicU64,
    increments_sent: AtomicU64,
}

/// Two writers setting keys and two incrementing `n`, through `base` (the service URL), until
/// `stop`.
fn clients(
    base: String,
    seen: Arc<Seen>,
    stop: Arc<AtomicBool>,
) -> Vec<std::thread::JoinHandle<()>> {
    (0..4)
        .map(|t| {
            let (base, seen, stop) = (base.clone(), seen.clone(), stop.clone());
            std::thread::spawn(move || {
                let client = reqwest::blocking::Client::builder()
                    .timeout(Duration::from_secs(5))
                    .build()
                    .unwrap();
                for i in 0.. {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    if t % 2 == 0 {
                        let key = format!("k{t}-{i}");
                        let ok = client
                            .post(format!("{base}/set?k={key}"))
                            .body(key.clone())
                            .send()
                            .is_ok_and(|r| r.status().is_success());
                        if ok {
                            seen.keys.lock().unwrap().push(key);
                        }
                    } else {
                        seen.increments_sent.fetch_add(1, Ordering::SeqCst);
                        let ok = client
                            .post(format!("{base}/increment?k=n"))
                            .send()
                            .is_ok_and(|r| r.status().is_success());
                        if ok {
                            seen.increments_acked.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                }
            })
        })
        .collect()
}

/// Checks `host` has everything `seen` was told was done.
fn check(host: &Host, seen: &Seen, point: &str) {
    for key in seen.keys.lock().unwrap().iter() {
        assert_eq!(
            host.get(&format!("/kv/get?k={key}")).1,
            *key,
            "after a crash at {point}: acknowledged write {key} is missing"
        );
    }
    let (_, n) = host.get("/kv/get?k=n");
    let n: u64 = if n == "<none>" { 0 } else { n.parse().unwrap() };
    let (acked, sent) = (
        seen.increments_acked.load(Ordering::SeqCst),
        seen.increments_sent.load(Ordering::SeqCst),
    );
    assert!(
        acked <= n && n <= sent,
        "after a crash at {point}: counter {n}, but {acked} increments were acknowledged of {sent} sent"
    );
    println!(
        "crash at {point}: {} writes and {acked} increments acknowledged, all there (counter {n} of {sent} sent)",
        seen.keys.lock().unwrap().len()
    );
}

/// One lone host (a one-member cluster, snapshotting every 40 entries) crashed at `point`.
fn crash_a_lone_host_at(point: &str) {
    crash_a_lone_host_with(point, &[]);
}

/// [`crash_a_lone_host_at`], the armed host also given `env`.
fn crash_a_lone_host_with(point: &str, env: &[(&str, &str)]) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let extra = ["--name", "a", "--snapshot-every", "40"];
    let mut host = Host::spawn(&data, &extra);
    host.deploy(guests::KV_DRAFT2, "kv", &[]);
    assert_eq!(host.post("/kv/set?k=before", "before").0, 200);
    host.kill();

    let seen = Arc::new(Seen::default());
    seen.keys.lock().unwrap().push("before".into());
    let mut env = env.to_vec();
    env.push(("DOPPEL_CRASH_AT", point));
    match Host::try_spawn(&data, &extra, &env) {
        // Crashed while starting.
        Err(status) => assert!(!status.success(), "{point}: {status}"),
        Ok(mut armed) => {
            let stop = Arc::new(AtomicBool::new(false));
            let threads = clients(armed.url("/kv"), seen.clone(), stop.clone());
            let status = armed.wait_exit(Duration::from_secs(60));
            stop.store(true, Ordering::Relaxed);
            for t in threads {
                t.join().unwrap();
            }
            let status = status.unwrap_or_else(|| panic!("{point} was never reached in 60 s"));
            assert!(!status.success(), "{point}: {status}");
        }
    }
    let log = std::fs::read_to_string(data.with_extension("log")).unwrap();
    let step = point.split('@').next().unwrap();
    assert!(
        log.contains(&format!("crashing at {step}")),
        "{point}: {log}"
    );
    let host = Host::spawn(&data, &extra);
    check(&host, &seen, point);
    if step == "apply:partial" {
        // The half-written entry was finished from its record, not lost and applied again.
        let log = std::fs::read_to_string(data.with_extension("log")).unwrap();
        assert!(
            log.contains("finishing the entry a crash interrupted"),
            "{point}: {log}"
        );
    }
    // And it goes on working.
    assert_eq!(host.post("/kv/set?k=after", "after").0, 200);
}

#[test]
fn a_crash_at_each_step_of_the_raft_log_loses_nothing() {
    for point in [
        "log-append:unsynced@30",
        "log-append:synced@30",
        "log-committed:unsynced@30",
    ] {
        crash_a_lone_host_at(point);
    }
}

#[test]
fn a_crash_at_each_step_of_applying_and_snapshotting_loses_nothing() {
    for point in [
        "apply:applied@100",
        "apply:partial@100",
        "snapshot-file:unsynced@1",
        "snapshot-file:renamed@1",
        "snapshot:built@1",
        "log-purge:unsynced@1",
        "log-purge:synced@1",
    ] {
        crash_a_lone_host_at(point);
    }
}

/// The log file is rewritten without its purged records (here after every purge instead of
/// every 64 MiB): a crash before the new file is synced, or just after it replaced the old one.
#[test]
fn a_crash_while_rewriting_the_raft_log_loses_nothing() {
    for point in ["log-rewrite:unsynced@2", "log-rewrite:renamed@2"] {
        crash_a_lone_host_with(point, &[("DOPPEL_LOG_REWRITE_BYTES", "0")]);
    }
}

/// Starts a cluster host that was killed again on its old ports and data, armed to crash at
/// `point` (`Err` if it already crashed while starting).
fn respawn_armed(host: &Host, name: &str, point: &str) -> Result<Host, std::process::ExitStatus> {
    let (listen, admin, peer) = (
        host.listen.to_string(),
        host.admin.to_string(),
        host.peer.to_string(),
    );
    let extra = [
        "--name", name, "--listen", &listen, "--admin", &admin, "--peer", &peer,
    ];
    Host::try_spawn(&host.data, &extra, &[("DOPPEL_CRASH_AT", point)])
}

/// A host that was down catches up by snapshot and crashes right after importing it (before its
/// own bookkeeping and snapshot file are written); restarted, it catches up again and serves
/// everything acknowledged meanwhile.
#[test]
fn a_crash_while_installing_a_snapshot_loses_nothing() {
    let mut hosts = cluster(3, &["--snapshot-every", "40"]);
    hosts[0].deploy(guests::KV_DRAFT2, "kv", &[]);
    crate::support::eventually("c serves kv", || hosts[2].get("/kv/get?k=x").0 == 200);
    hosts[2].kill();
    let mut keys = Vec::new();
    for i in 0..200 {
        let key = format!("w{i}");
        assert_eq!(
            hosts[i % 2]
                .post(&format!("/kv/set?k={key}"), key.clone())
                .0,
            200
        );
        keys.push(key);
    }
    match respawn_armed(&hosts[2], "c", "install:imported") {
        Err(status) => assert!(!status.success(), "{status}"),
        Ok(mut armed) => {
            let status = armed.wait_exit(Duration::from_secs(60));
            assert!(status.is_some_and(|s| !s.success()), "{status:?}");
        }
    }
    let log = std::fs::read_to_string(hosts[2].data.with_extension("log")).unwrap();
    assert!(log.contains("crashing at install:imported"), "{log}");
    restart_in_place(&mut hosts[2], "c");
    for key in &keys {
        assert_eq!(hosts[2].get(&format!("/kv/get?k={key}")).1, *key);
    }
    assert_eq!(hosts[2].post("/kv/set?k=after", "1").0, 200);
}

/// A follower crashes while saving its vote in the election that follows the leader's death
/// (with the unsynced vote dropped, or just after syncing it); restarted with the old leader, the
/// cluster has every acknowledged write.
#[test]
fn a_crash_while_saving_a_vote_loses_nothing() {
    for point in ["log-vote:unsynced", "log-vote:synced"] {
        let mut hosts = cluster(3, &[]);
        hosts[0].deploy(guests::KV_DRAFT2, "kv", &[]);
        for h in &hosts {
            crate::support::eventually("every host serves kv", || h.get("/kv/get?k=x").0 == 200);
        }
        let leader = crate::support::leader(&hosts);
        let voter = (leader + 1) % 3;
        let other = (leader + 2) % 3;
        // Restart the voter armed.
        hosts[voter].kill();
        let name = crate::support::name(voter);
        // An election while it was down (two hosts on a busy machine can miss a heartbeat) makes
        // the voter save a vote as it starts, which crashes it there: a crash at the same point,
        // only too early for this test. Arm it again then.
        let mut attempts = 0;
        let mut armed = loop {
            match respawn_armed(&hosts[voter], &name, point) {
                Ok(armed) => break armed,
                Err(status) => {
                    let log =
                        std::fs::read_to_string(hosts[voter].data.with_extension("log")).unwrap();
                    attempts += 1;
                    assert!(
                        attempts < 5 && log.contains(&format!("crashing at {point}")),
                        "{point}: the voter died at start ({status}): {log}"
                    );
                }
            }
        };
        let mut keys = Vec::new();
        for i in 0..30 {
            let key = format!("v{i}");
            let via = [leader, other][i % 2];
            assert_eq!(
                hosts[via].post(&format!("/kv/set?k={key}"), key.clone()).0,
                200
            );
            keys.push(key);
        }
        // The leader dies: the armed voter takes part in the election and crashes saving its vote.
        hosts[leader].kill();
        let status = armed.wait_exit(Duration::from_secs(60));
        assert!(status.is_some_and(|s| !s.success()), "{point}: {status:?}");
        drop(armed);
        let log = std::fs::read_to_string(hosts[voter].data.with_extension("log")).unwrap();
        assert!(log.contains(&format!("crashing at {point}")), "{log}");
        restart_in_place(&mut hosts[voter], &name);
        let leader_name = crate::support::name(leader);
        restart_in_place(&mut hosts[leader], &leader_name);
        for h in &hosts {
            for key in &keys {
                assert_eq!(h.get(&format!("/kv/get?k={key}")).1, *key, "{point}");
            }
        }
        assert_eq!(hosts[voter].post("/kv/set?k=after", "1").0, 200);
        println!("crash at {point}: the 30 acknowledged writes are on all 3 hosts");
    }
}

/// How far `host`'s raft log reaches, asked as its peers ask (a liveness probe).
fn log_reach(host: &Host) -> doppel_replication::LogReach {
    let body = crate::support::peer_http(host)
        .post(format!("https://{}/raft/v1/ping", host.peer))
        .send()
        .and_then(|r| r.error_for_status())
        .and_then(|r| r.bytes())
        .unwrap();
    doppel_replication::LogReach::from_ping(&body).unwrap()
}

/// A follower drops a conflicting suffix of its log (`log-truncate`) and crashes doing it. The
/// suffix is made on purpose: the leader appends entries while both followers are down, so no
/// one else has them; it is killed, the followers come back and elect a new leader whose log
/// differs from there on, and the old leader, restarted armed, must drop those entries when it
/// rejoins. Restarted again normally, every host has every acknowledged write, and the write
/// that only the old leader ever had is gone. (The followers are killed, not frozen: a frozen
/// process's socket still takes in what the leader sends, and it reads that on waking.)
#[test]
fn a_crash_while_dropping_a_conflicting_suffix_loses_nothing() {
    for point in ["log-truncate:unsynced", "log-truncate:synced"] {
        let mut hosts = cluster(3, &[]);
        let old = crate::support::leader(&hosts);
        // Active on the leader, so that the write below is proposed there, not forwarded.
        hosts[old].deploy(guests::KV_DRAFT2, "kv", &[]);
        for h in &hosts {
            crate::support::eventually("every host serves kv", || h.get("/kv/get?k=x").0 == 200);
        }
        let mut keys = Vec::new();
        for i in 0..20 {
            let key = format!("t{i}");
            let via = &hosts[(old + i) % 3];
            assert_eq!(via.post(&format!("/kv/set?k={key}"), key.clone()).0, 200);
            keys.push(key);
        }
        let followers = [(old + 1) % 3, (old + 2) % 3];
        for f in followers {
            hosts[f].kill();
        }
        // Whatever the followers have, or had in flight, ends at or before this entry.
        let frozen_at = log_reach(&hosts[old]);
        let url = hosts[old].url("/kv/set?k=lost");
        let lost = std::thread::spawn(move || crate::support::http().post(url).body("x").send());
        crate::support::eventually("the leader appends entries no one else has", || {
            log_reach(&hosts[old]).index > frozen_at.index
        });
        hosts[old].kill();
        // Never acknowledged: the leader died with it (or, slower, gave up on a majority).
        let answer = lost.join().unwrap();
        assert!(
            answer.as_ref().map_or(true, |r| r.status() != 200),
            "{answer:?}"
        );
        // Back together they are a majority (each waits for one before it is ready).
        std::thread::scope(|scope| {
            for (i, h) in hosts.iter_mut().enumerate() {
                if i != old {
                    scope.spawn(move || restart_in_place(h, &crate::support::name(i)));
                }
            }
        });
        let old_id = crate::support::id_of(&hosts[old]);
        crate::support::eventually("the followers elect a new leader", || {
            let leader = crate::support::status(&hosts[followers[0]])["cluster"]["leader"].clone();
            leader.is_string() && leader != old_id.as_str()
        });
        let name = crate::support::name(old);
        match respawn_armed(&hosts[old], &name, point) {
            Err(status) => assert!(!status.success(), "{point}: {status}"),
            Ok(mut armed) => {
                let status = armed.wait_exit(Duration::from_secs(60));
                assert!(status.is_some_and(|s| !s.success()), "{point}: {status:?}");
            }
        }
        let log = std::fs::read_to_string(hosts[old].data.with_extension("log")).unwrap();
        assert!(log.contains(&format!("crashing at {point}")), "{log}");
        restart_in_place(&mut hosts[old], &name);
        crate::support::eventually("the old leader catches up", || {
            hosts[old].get("/kv/get?k=t19").1 == "t19"
        });
        // Its log is the leader's again, to the last entry: nothing of the dropped suffix is left.
        crate::support::eventually("every log reaches as far as the others", || {
            let reach = log_reach(&hosts[0]);
            hosts.iter().all(|h| log_reach(h) == reach)
        });
        for h in &hosts {
            for key in &keys {
                assert_eq!(h.get(&format!("/kv/get?k={key}")).1, *key, "{point}");
            }
            assert_eq!(h.get("/kv/get?k=lost").1, "<none>", "{point}");
        }
        assert_eq!(hosts[old].post("/kv/set?k=after", "1").0, 200);
        println!(
            "crash at {point}: the 20 acknowledged writes are on all 3 hosts, the lost one on none"
        );
    }
}
