//! The twin: a second cluster follows the primary's backup and serves its reads (marked with
//! their lag) while refusing writes; after the primary is SIGKILLed it is promoted and takes
//! writes with every write the primary shipped; the old primary, started again, sees the newer
//! generation in its backup and refuses writes, saying why. Every primary entry is applied once
//! across changes of the twin's leader, and a replayed or altered manifest is refused.

use doppel_guests as guests;

use crate::support::{
    Host, backup_offsite, eventually, eventually_within, http, state_hash, write_kv,
};

fn twin_status(host: &Host) -> serde_json::Value {
    serde_json::from_str(&host.cli_ok(&["twin", "status", "--json"])).unwrap()
}

#[test]
fn a_twin_follows_is_promoted_and_fences_the_old_primary() {
    let work = tempfile::tempdir().unwrap();
    let mut primary = Host::start();
    primary.deploy(guests::KV_DRAFT2, "kv", &[]);
    let (key, url) = backup_offsite(&primary, work.path());
    for i in 0..10 {
        write_kv(&primary, &format!("citizen-{i}"), &format!("record-{i}"));
    }
    assert_eq!(twin_status(&primary)["role"], "primary");
    // A cluster with services of its own cannot become a twin.
    let busy = primary.cli_err(&["twin", "follow", &url, "--identity", key.to_str().unwrap()]);
    assert!(busy.contains("services of its own"), "{busy}");

    let twin = Host::start();
    let key_arg = key.to_str().unwrap();
    let bad_name = twin.cli_err(&[
        "twin",
        "follow",
        &url,
        "--identity",
        key_arg,
        "--name",
        "../x",
    ]);
    assert!(bad_name.contains("cannot name a twin"), "{bad_name}");
    eventually_within(
        std::time::Duration::from_secs(60),
        "the backup has a snapshot to follow",
        || {
            twin.cli(&[
                "twin",
                "follow",
                &url,
                "--identity",
                key_arg,
                "--name",
                "east",
            ])
            .status
            .success()
        },
    );
    for i in 10..20 {
        write_kv(&primary, &format!("citizen-{i}"), &format!("record-{i}"));
    }
    let (primary_hash, primary_index) = state_hash(&primary);
    eventually_within(
        std::time::Duration::from_secs(60),
        "the twin has everything the primary has",
        || state_hash(&twin).0 == primary_hash,
    );
    // The twin keeps the identity that reads the primary's backup sealed: never in its files.
    let identity = std::fs::read_to_string(&key).unwrap();
    let secret = identity
        .lines()
        .find(|l| l.starts_with("AGE-SECRET-KEY-"))
        .unwrap();
    let found = crate::at_rest::files_holding(&[twin.data.as_path()], secret.as_bytes());
    assert!(
        found.is_empty(),
        "the twin's identity is readable in {found:?}"
    );
    // And it reads the primary's records, whose data keys it opens with the primary's cluster key.
    assert_eq!(twin.get("/kv/get?k=citizen-3"), (200, "record-3".into()));
    // The primary sees its twin, from the heartbeats the twin leaves in the target.
    eventually_within(
        std::time::Duration::from_secs(60),
        "the primary sees how far its twin has got",
        || {
            let twins = twin_status(&primary)["twins"].clone();
            twins[0]["twin"] == "east"
                && twins[0]["target"] == "offsite"
                && twins[0]["primary_index"].as_u64() >= Some(primary_index)
        },
    );
    let words = primary.cli_ok(&["status"]);
    assert!(words.contains("offsite: twin east at index"), "{words}");
    // Reads answer, with their lag.
    let answer = http().get(twin.url("/kv/get?k=citizen-19")).send().unwrap();
    let lag = answer
        .headers()
        .get("x-doppel-twin-lag-ms")
        .expect("a standby's answers carry their lag")
        .to_str()
        .unwrap()
        .parse::<u64>()
        .unwrap();
    assert!(lag < 60_000, "{lag}");
    assert_eq!(answer.text().unwrap(), "record-19");
    let status = twin_status(&twin);
    assert_eq!(status["role"], "standby", "{status}");
    assert!(!status.to_string().contains("AGE-SECRET-KEY"), "{status}");
    // Writes are refused: a guest's, and a deploy.
    let (code, body) = twin.post("/kv/set?k=citizen-1", "overwritten".to_string());
    assert_eq!(code, 500, "{body}");
    assert!(body.contains("standby twin"), "{body}");
    let deploy = twin.cli_err(&["deploy", guests::HTTP_020, "--name", "hello"]);
    assert!(deploy.contains("standby twin"), "{deploy}");

    // The primary is lost; the twin takes over with everything it shipped.
    primary.kill();
    let promoted: serde_json::Value =
        serde_json::from_str(&twin.cli_ok(&["twin", "promote", "--json"])).unwrap();
    assert_eq!(promoted["role"], "promoted", "{promoted}");
    assert_eq!(promoted["generation"], 2, "{promoted}");
    write_kv(&twin, "after", "promoted");
    for i in 0..20 {
        assert_eq!(
            twin.get(&format!("/kv/get?k=citizen-{i}")),
            (200, format!("record-{i}"))
        );
    }
    let answer = http().get(twin.url("/kv/get?k=after")).send().unwrap();
    assert!(answer.headers().get("x-doppel-twin-lag-ms").is_none());

    // The old primary comes back: it finds the newer generation and refuses writes.
    primary.restart();
    eventually("the old primary is fenced", || {
        let (code, body) = primary.post("/kv/set?k=late", "lost".to_string());
        code == 500 && body.contains("superseded")
    });
    let fenced = twin_status(&primary);
    assert_eq!(fenced["role"], "fenced", "{fenced}");
    let words = primary.cli_ok(&["status"]);
    assert!(words.contains("FENCED"), "{words}");
}

/// Exactly once across the twin's changes of leader: the primary counts with increments while
/// the leader of a 3-host twin is SIGKILLed twice mid-stream. An entry applied twice (by the
/// deposed leader and its successor) would show in the count and the state hash.
#[test]
fn a_twin_applies_each_primary_entry_once_across_leader_kills() {
    let work = tempfile::tempdir().unwrap();
    let primary = Host::start();
    primary.deploy(guests::KV_DRAFT2, "kv", &[]);
    let (key, url) = backup_offsite(&primary, work.path());
    let mut twins = crate::support::cluster(3, &[]);
    eventually_within(
        std::time::Duration::from_secs(60),
        "the backup has a snapshot to follow",
        || {
            twins[0]
                .cli(&["twin", "follow", &url, "--identity", key.to_str().unwrap()])
                .status
                .success()
        },
    );

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let counter = std::thread::spawn({
        let (stop, url) = (stop.clone(), primary.url("/kv/increment?k=counter"));
        move || {
            let client = http();
            let mut acked = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let r = client.post(&url).send().unwrap();
                assert_eq!(r.status(), 200, "{}", r.text().unwrap());
                acked += 1;
            }
            acked
        }
    });
    let index = |host: &Host| twin_status(host)["primary_index"].as_u64().unwrap_or(0);
    for round in 0..2 {
        let lead = crate::support::leader(&twins);
        let before = index(&twins[lead]);
        eventually(&format!("round {round}: the twin applies more"), || {
            index(&twins[lead]) > before
        });
        twins[lead].kill();
        let survivor = (lead + 1) % 3;
        eventually(
            &format!("round {round}: a new twin leader applies more"),
            || index(&twins[survivor]) > before + 1,
        );
        let name = crate::support::name(lead);
        crate::support::restart_in_place(&mut twins[lead], &name);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let acked = counter.join().unwrap();
    assert_eq!(primary.get("/kv/get?k=counter").1, acked.to_string());
    let primary_hash = state_hash(&primary).0;
    eventually_within(
        std::time::Duration::from_secs(60),
        "every twin host has exactly the primary's state",
        || twins.iter().all(|t| state_hash(t).0 == primary_hash),
    );
    for t in &twins {
        assert_eq!(t.get("/kv/get?k=counter").1, acked.to_string());
    }
}

/// The twin checks what it follows as a restore does: a genuine manifest replayed under the
/// next number, or a manifest altered in the target, is refused with the reason in `doppel twin
/// status`, and nothing of it is applied.
#[test]
fn a_twin_refuses_a_replayed_or_altered_manifest() {
    let work = tempfile::tempdir().unwrap();
    let mut primary = Host::start();
    primary.deploy(guests::KV_DRAFT2, "kv", &[]);
    let (key, url) = backup_offsite(&primary, work.path());
    for i in 0..5 {
        write_kv(&primary, &format!("citizen-{i}"), &format!("record-{i}"));
    }
    let twin = Host::start();
    eventually_within(
        std::time::Duration::from_secs(60),
        "the backup has a snapshot to follow",
        || {
            twin.cli(&["twin", "follow", &url, "--identity", key.to_str().unwrap()])
                .status
                .success()
        },
    );
    let (hash, _) = state_hash(&primary);
    eventually_within(
        std::time::Duration::from_secs(60),
        "the twin has everything the primary has",
        || state_hash(&twin).0 == hash,
    );
    // No more genuine manifests from here on.
    primary.kill();
    let manifests = work.path().join("offsite/manifests");
    let mut names: Vec<String> = std::fs::read_dir(&manifests)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let last: u64 = names
        .last()
        .unwrap()
        .trim_end_matches(".json")
        .parse()
        .unwrap();
    let next = manifests.join(format!("{:020}.json", last + 1));
    let refused = |why: &str| {
        eventually(&format!("the twin refuses: {why}"), || {
            twin_status(&twin)["error"]
                .as_str()
                .is_some_and(|e| e.contains(why))
        });
        assert_eq!(state_hash(&twin).0, hash, "nothing of it was applied");
    };
    // Replayed: a genuine, signed manifest under the next number.
    let genuine = std::fs::read(manifests.join(&names[names.len() - 1])).unwrap();
    std::fs::write(&next, &genuine).unwrap();
    refused("does not follow");
    // Altered: the same file with one byte of what it says changed.
    let text = String::from_utf8(genuine).unwrap();
    let altered = text.replacen("\\\"seq\\\":", "\\\"seq\\\": ", 1);
    assert_ne!(altered, text);
    std::fs::write(&next, altered).unwrap();
    refused("was altered");
}
