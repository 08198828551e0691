//! The operator's side of many hosts: labels and placement rules, live migration, draining a
//! host (the leader included), replicas, and the placement history — under steady load, counting
//! every failed request and checking every acknowledged write.

use std::time::Duration;

use doppel_guests as guests;

use crate::support::{
    Host, Load, assert_all_readable, cluster, cluster_each, eventually, eventually_within, leader,
    logs, name, status,
};

/// The service `name`'s entry in `doppel status --json`.
fn service(host: &Host, name: &str) -> serde_json::Value {
    status(host)["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("{name} not in status"))
}

/// Where `name` is active, or `None` while the host cannot say (an election).
fn try_active(host: &Host, name: &str) -> Option<Vec<String>> {
    let out = host.cli(&["status", "--json"]);
    let st: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    let s = st["services"]
        .as_array()?
        .iter()
        .find(|s| s["name"] == name)?;
    Some(
        s["active"]
            .as_array()?
            .iter()
            .filter_map(|h| h.as_str().map(String::from))
            .collect(),
    )
}

fn active(host: &Host, name: &str) -> Vec<String> {
    service(host, name)["active"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h.as_str().unwrap().to_string())
        .collect()
}

fn index_of(host_name: &str) -> usize {
    (0..26).find(|i| name(*i) == host_name).unwrap()
}

/// A service moved between three hosts (by name, by label, back) under steady writes through
/// every host, with a slow request running on the old host during the switch: no request fails,
/// the slow one finishes and its write counts, every acknowledged write is there, and the
/// history shows each move with its actor.
#[test]
fn migration_under_load_fails_no_request() {
    let hosts = cluster_each(&[
        &["--label", "provider=p1"],
        &["--label", "provider=p2"],
        &["--label", "provider=p3"],
    ]);
    hosts[0].deploy(guests::KV_DRAFT2, "kv", &[]);
    for h in &hosts {
        eventually("every host serves kv", || h.get("/kv/get?k=x").0 == 200);
    }
    let labels = status(&hosts[1]);
    assert!(labels.to_string().contains("provider"), "{labels}");
    assert!(hosts[1].cli_ok(&["status"]).contains("provider=p2"));
    let bases: Vec<String> = hosts.iter().map(|h| h.url("/kv")).collect();
    let load = Load::start(&bases, 4, "m");
    load.wait_for(50);

    // a → b, with a slow request running on a.
    let slow_url = hosts[0].url("/kv/slow-set?k=slow&ms=1000");
    let slow = std::thread::spawn(move || {
        let r = crate::support::http()
            .post(slow_url)
            .body("slow")
            .send()
            .unwrap();
        (r.status().as_u16(), r.text().unwrap())
    });
    eventually("the slow request runs on a", || {
        hosts[0]
            .cli_ok(&["logs", "kv"])
            .contains("slow-set slow: waiting")
    });
    let out = hosts[2].cli_ok(&["migrate", "kv", "--to", "b"]);
    assert!(out.contains("kv moved from a to b"), "{out}");
    // The slow request at least, and whatever writes were running at the switch.
    assert!(out.contains("a finished its "), "{out}");
    assert!(!out.contains("a finished its 0 request(s)"), "{out}");
    assert!(out.contains("0 failed"), "{out}");
    assert_eq!(slow.join().unwrap(), (200, "ok".to_string()));
    assert_eq!(hosts[2].get("/kv/get?k=slow").1, "slow");
    assert_eq!(active(&hosts[0], "kv"), ["b"]);
    load.wait_for(50);

    // b → the host labelled provider=p3, then back to a.
    let out = hosts[0].cli_ok(&["migrate", "kv", "--to", "provider=p3"]);
    assert!(out.contains("kv moved from b to c"), "{out}");
    load.wait_for(50);
    let out = hosts[1].cli_ok(&["migrate", "kv", "--to", "a"]);
    assert!(out.contains("kv moved from c to a"), "{out}");
    load.wait_for(50);
    let (acked, failed) = load.stop();
    assert!(
        failed.is_empty(),
        "requests failed during migration: {failed:#?}"
    );
    println!(
        "{} writes acknowledged across 3 migrations, 0 failed",
        acked.len()
    );
    for h in &hosts {
        assert_all_readable(h, &acked);
    }
    assert_eq!(active(&hosts[1], "kv"), ["a"]);

    // Refusals: already there, an unknown host, a label nobody has.
    let err = hosts[0].cli_err(&["migrate", "kv", "--to", "a"]);
    assert!(err.contains("already active on a"), "{err}");
    let err = hosts[0].cli_err(&["migrate", "kv", "--to", "z"]);
    assert!(err.contains("no host named \"z\""), "{err}");
    let err = hosts[0].cli_err(&["migrate", "kv", "--to", "provider=p9"]);
    assert!(err.contains("no host with provider=p9"), "{err}");
    let err = hosts[0].cli_err(&["migrate", "nope", "--to", "b"]);
    assert!(err.contains("no service named \"nope\""), "{err}");

    // The history: the deploy and two placement changes per migration, each with an actor.
    let events: serde_json::Value =
        serde_json::from_str(&hosts[2].cli_ok(&["events", "kv", "--json"])).unwrap();
    let events = events.as_array().unwrap();
    assert_eq!(events.len(), 7, "{events:#?}");
    assert!(events[0]["cause"].as_str().unwrap().contains("deployed"));
    assert!(
        events[1..]
            .iter()
            .all(|e| e["cause"].as_str().unwrap().starts_with("migrate")),
        "{events:#?}"
    );
    assert!(
        events
            .iter()
            .all(|e| e["actor"].as_str().unwrap().contains(" via ")),
        "{events:#?}"
    );
    let human = hosts[0].cli_ok(&["events"]);
    assert!(human.contains("migrate from c to a"), "{human}");
}

/// The leader carries two services; `doppel drain LEADER --remove` under steady writes (through
/// the other hosts) moves both off, hands the consensus role over and removes the host: no
/// request fails and every acknowledged write is there.
#[test]
fn draining_the_leader_under_load_fails_no_request() {
    let hosts = cluster(3, &[]);
    let l = leader(&hosts);
    hosts[l].deploy(guests::KV_DRAFT2, "kv", &[]);
    hosts[l].deploy(guests::KV_DRAFT2, "kv2", &[]);
    let others: Vec<usize> = (0..3).filter(|i| *i != l).collect();
    for i in &others {
        eventually("the other hosts serve both", || {
            hosts[*i].get("/kv/get?k=x").0 == 200 && hosts[*i].get("/kv2/get?k=x").0 == 200
        });
    }
    assert_eq!(active(&hosts[l], "kv"), [name(l)]);
    let bases: Vec<String> = others
        .iter()
        .flat_map(|i| [hosts[*i].url("/kv"), hosts[*i].url("/kv2")])
        .collect();
    let load = Load::start(&bases, 4, "d");
    load.wait_for(50);
    let out = hosts[others[0]].cli_ok(&["drain", &name(l), "--remove"]);
    assert!(out.contains("2 of 2 service(s) moved"), "{out}");
    load.wait_for(100);
    let (acked, failed) = load.stop();
    assert!(
        failed.is_empty(),
        "requests failed during the drain: {failed:#?}\n{}",
        logs(&hosts)
    );
    println!(
        "{} writes acknowledged across the drain, 0 failed",
        acked.len()
    );
    let st = status(&hosts[others[0]]);
    let members = st["cluster"]["hosts"].as_array().unwrap();
    assert_eq!(members.len(), 2, "{st}");
    assert!(
        members.iter().all(|h| h["name"] != name(l).as_str()),
        "{st}"
    );
    for s in ["kv", "kv2"] {
        let on = active(&hosts[others[0]], s);
        assert!(!on.contains(&name(l)) && on.len() == 1, "{s}: {on:?}");
    }
    for i in &others {
        assert_all_readable(&hosts[*i], &acked);
    }
    let events = hosts[others[1]].cli_ok(&["events"]);
    assert!(events.contains("is drained"), "{events}");
}

/// Rules hold through failover: a service restricted to `j=de` moves only to the other `j=de`
/// host when its host dies, never to the `j=fr` one; a rule no host meets answers 503 with the
/// reason; undrain and restarts let the scheduler place services again.
#[test]
fn placement_rules_hold_through_failover() {
    let mut hosts = cluster_each(&[
        &["--label", "j=de"],
        &["--label", "j=de"],
        &["--label", "j=fr"],
    ]);
    // Deployed through the fr host, it still becomes active on a de host.
    let out = hosts[2].cli_ok(&["deploy", guests::KV_DRAFT2, "--name", "kv", "--on", "j=de"]);
    assert!(out.contains("1 replica on j=de"), "{out}");
    let first = active(&hosts[2], "kv");
    assert!(first == ["a"] || first == ["b"], "{first:?}");
    assert_eq!(hosts[2].post("/kv/set?k=x", "1").0, 200);
    let victim = index_of(&first[0]);
    let other_de = 1 - victim;
    hosts[victim].kill();
    eventually_within(
        Duration::from_secs(30),
        "kv fails over to the other de host",
        || try_active(&hosts[2], "kv") == Some(vec![name(other_de)]),
    );
    assert_eq!(hosts[2].get("/kv/get?k=x").1, "1");
    assert_eq!(hosts[2].post("/kv/set?k=y", "2").0, 200);
    // Draining the only live de host leaves it there (nothing else may run kv), and says so.
    let out = hosts[2].cli_ok(&["drain", &name(other_de)]);
    assert!(out.contains("0 of 1 service(s) moved"), "{out}");
    assert!(out.contains("stay on"), "{out}");
    assert_eq!(active(&hosts[2], "kv"), [name(other_de)]);
    let unmet = service(&hosts[2], "kv")["unmet"].to_string();
    assert!(unmet.contains("is drained"), "{unmet}");
    hosts[2].cli_ok(&["undrain", &name(other_de)]);

    // A rule no host meets: deployed, but it answers 503 with the reason; never runs elsewhere.
    let out = hosts[2].cli_ok(&["deploy", guests::KV_DRAFT2, "--name", "pl", "--on", "j=pl"]);
    assert!(out.contains("placement rules are not met"), "{out}");
    for i in [other_de, 2] {
        eventually("every host knows pl", || {
            hosts[i].get("/pl/get?k=x").0 == 503
        });
        let (code, body) = hosts[i].get("/pl/get?k=x");
        assert_eq!(code, 503);
        assert!(
            body.contains("j=pl") && body.contains("c has j=fr"),
            "{body}"
        );
    }
    let human = hosts[2].cli_ok(&["status"]);
    assert!(human.contains("pl: placement rules not met"), "{human}");
    let err = hosts[2].cli_err(&["deploy", guests::KV_DRAFT2, "--name", "bad", "--on", "j"]);
    assert!(err.contains("is not KEY=VALUE"), "{err}");
}

/// With two replicas, killing one active host (not the leader) leaves the other serving with no
/// failed request, through itself and through the standby; the scheduler then makes the
/// standby the second replica.
#[test]
fn with_two_replicas_one_kill_leaves_no_gap() {
    let mut hosts = cluster(3, &[]);
    let l = leader(&hosts);
    let out = hosts[l].cli_ok(&[
        "deploy",
        guests::KV_DRAFT2,
        "--name",
        "kv",
        "--replicas",
        "2",
    ]);
    assert!(out.contains("2 replicas on any host"), "{out}");
    let replicas = active(&hosts[l], "kv");
    assert_eq!(replicas.len(), 2, "{replicas:?}");
    assert!(replicas.contains(&name(l)), "{replicas:?}");
    let victim = replicas
        .iter()
        .map(|n| index_of(n))
        .find(|i| *i != l)
        .unwrap();
    let standby = (0..3).find(|i| *i != l && *i != victim).unwrap();
    for h in &hosts {
        eventually("every host serves kv", || h.get("/kv/get?k=x").0 == 200);
    }
    let load = Load::start(&[hosts[l].url("/kv"), hosts[standby].url("/kv")], 4, "r");
    load.wait_for(50);
    hosts[victim].kill();
    load.wait_for(200);
    eventually_within(
        Duration::from_secs(30),
        "the standby becomes a replica",
        || {
            try_active(&hosts[l], "kv")
                .is_some_and(|now| now.len() == 2 && now.contains(&name(standby)))
        },
    );
    load.wait_for(50);
    let (acked, failed) = load.stop();
    assert!(
        failed.is_empty(),
        "requests failed after the kill: {failed:#?}"
    );
    println!(
        "{} writes acknowledged while a replica died, 0 failed",
        acked.len()
    );
    assert_all_readable(&hosts[standby], &acked);
}
