//! A lost majority: of three hosts two are SIGKILLed for good, and `doppel recover
//! --force-new-cluster` on the third starts a new one-host cluster from its own state with every
//! acknowledged write; refused while the host runs, while a majority is reachable, and without
//! confirmation.

use doppel_guests as guests;

use crate::support::{Host, cluster, doppel, eventually, leader, state_hash};

/// `doppel recover --force-new-cluster --data DATA` with `extra`, stdin not a terminal.
fn recover(host: &Host, extra: &[&str]) -> std::process::Output {
    doppel()
        .args(["recover", "--force-new-cluster", "--data"])
        .arg(&host.data)
        .args(extra)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
}

fn recover_err(host: &Host, extra: &[&str]) -> String {
    let out = recover(host, extra);
    assert!(!out.status.success(), "recover should have been refused");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_lone_survivor_starts_a_new_cluster_with_everything_it_had() {
    let mut hosts = cluster(3, &[]);
    let lead = leader(&hosts);
    hosts[lead].deploy(guests::KV_DRAFT2, "kv", &[]);
    for i in 0..30 {
        let (status, body) =
            hosts[lead].post(&format!("/kv/set?k=citizen-{i}"), format!("record-{i}"));
        assert_eq!(status, 200, "{body}");
    }
    let survivor = (lead + 1) % 3;
    let (hash, _) = state_hash(&hosts[lead]);
    eventually("the survivor has applied every write", || {
        state_hash(&hosts[survivor]).0 == hash
    });

    // Not while its host runs, not while a majority is up, not without confirmation.
    let busy = recover_err(&hosts[survivor], &["--yes"]);
    assert!(busy.contains("in use by a running doppel host"), "{busy}");
    hosts[survivor].kill();
    let split = recover_err(&hosts[survivor], &["--yes"]);
    assert!(split.contains("a majority"), "{split}");
    let raft = hosts[survivor].data.join("raft");
    assert!(raft.exists());
    for (i, h) in hosts.iter_mut().enumerate() {
        if i != survivor {
            h.kill();
        }
    }
    let unconfirmed = recover_err(&hosts[survivor], &[]);
    assert!(unconfirmed.contains("pass --yes"), "{unconfirmed}");
    assert!(raft.exists(), "nothing changed without confirmation");

    let out = recover(&hosts[survivor], &["--yes", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let recovered: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(recovered["hash"], hash.as_str(), "{recovered}");
    assert_eq!(recovered["services"], serde_json::json!(["kv"]));
    assert_eq!(recovered["lost"].as_array().unwrap().len(), 2);
    assert!(recovered["index"].as_u64().unwrap() >= recovered["committed"].as_u64().unwrap());
    let superseded = std::path::PathBuf::from(recovered["superseded"].as_str().unwrap());
    assert!(
        superseded.join("raft").exists(),
        "the old membership is kept"
    );
    assert!(!raft.exists());

    // It starts a new cluster of one, with the services and every acknowledged write.
    let host = &mut hosts[survivor];
    host.restart();
    assert_eq!(state_hash(host).0, hash);
    for i in 0..30 {
        assert_eq!(
            host.get(&format!("/kv/get?k=citizen-{i}")),
            (200, format!("record-{i}"))
        );
    }
    let (status, body) = host.post("/kv/set?k=after", "recovered".to_string());
    assert_eq!(status, 200, "{body}");
    let st = crate::support::status(host);
    assert_eq!(
        st["cluster"]["hosts"].as_array().unwrap().len(),
        1,
        "a new cluster of one: {st}"
    );
    // Nothing left to recover: it is its own majority.
    host.kill();
    let alone = recover_err(host, &["--yes"]);
    assert!(alone.contains("alone is its cluster's majority"), "{alone}");
}
