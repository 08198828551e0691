//! Several hosts on loopback: joining, one store seen through every host, deploys that reach
//! every host, SIGKILL of the leader and of followers under writes, catching up by log and by
//! snapshot, and a host left alone refusing to acknowledge.

use std::time::Duration;

use doppel_guests as guests;

use crate::support::{
    Host, Load, assert_all_readable, cluster, cluster_each, doppel, eventually, eventually_within,
    http, id_of, identity, leader, logs, name, restart_in_place, status,
};

#[test]
fn three_hosts_serve_one_state() {
    let hosts = cluster(3, &[]);
    let st = status(&hosts[1]);
    let members = st["cluster"]["hosts"].as_array().unwrap();
    assert_eq!(members.len(), 3, "{st}");
    let mut names: Vec<&str> = members
        .iter()
        .map(|h| h["name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["a", "b", "c"]);
    assert_eq!(
        members.iter().filter(|h| h["role"] == "leader").count(),
        1,
        "{st}"
    );
    let human = hosts[2].cli_ok(&["status"]);
    assert!(
        human.contains("leader") && human.contains("voter"),
        "{human}"
    );

    // Deploy through one host: every host serves it, on one state — at once: a host that has not
    // loaded it yet asks the store and loads it rather than answering 404.
    hosts[0].deploy(guests::KV_DRAFT2, "kv", &[]);
    assert_eq!(hosts[2].get("/kv/get?k=none").0, 200);
    for h in &hosts {
        eventually("every host serves the deployed service", || {
            h.get("/kv/get?k=none").0 == 200
        });
    }
    assert_eq!(hosts[1].post("/kv/set?k=city", "Kiel").0, 200);
    assert_eq!(hosts[2].get("/kv/get?k=city").1, "Kiel");
    assert_eq!(hosts[0].get("/kv/get?k=city").1, "Kiel");
    // Counters through different hosts: one sequence, nothing lost.
    for (i, h) in hosts.iter().cycle().take(9).enumerate() {
        assert_eq!(h.post("/kv/increment?k=n", "").1, (i + 1).to_string());
    }
    // The state is visible to operators from any host too.
    assert_eq!(
        hosts[2]
            .cli_ok(&["kv", "get", "--service", "kv", "city"])
            .trim(),
        "Kiel"
    );

    // A redeploy through another host reaches every host; a removal too.
    hosts[2].deploy(guests::KV_DRAFT, "kv", &[]);
    eventually("the redeploy reaches host a", || {
        hosts[0]
            .cli_ok(&["ls", "--json"])
            .contains("\"version\": 2")
            || hosts[0].cli_ok(&["ls", "--json"]).contains("\"version\":2")
    });
    hosts[1].cli_ok(&["rm", "kv"]);
    for h in &hosts {
        eventually("the removal reaches every host", || {
            h.get("/kv/get?k=city").0 == 404
        });
    }
}

#[test]
fn a_wrong_join_token_is_refused() {
    let first = Host::start_with(&["--name", "a"]);
    let dir = tempfile::tempdir().unwrap();
    let real = first.invite("b", &[]);
    let fingerprint = real[3].split(':').nth(1).unwrap().to_string();
    let forged = format!("doppel-invitation-v1:{fingerprint}:{}", "5".repeat(64));
    let other_cluster = format!("doppel-invitation-v1:{}:{}", "7".repeat(64), "5".repeat(64));
    for (token, says) in [
        ("not-the-token", "this is not an invitation"),
        (forged.as_str(), "no such invitation"),
        (
            other_cluster.as_str(),
            "not the cluster that invited this host",
        ),
    ] {
        let out = doppel()
            .args(["host", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
            .args(["--peer", "127.0.0.1:0", "--data"])
            .arg(dir.path().join("b"))
            .args(["--join", &first.peer.to_string(), "--token", token])
            .output()
            .unwrap();
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(says), "{stderr}");
        assert!(
            !stderr.contains(&"5".repeat(64)),
            "the token must not be echoed: {stderr}"
        );
    }
    // The cluster is unchanged.
    let st = status(&first);
    assert_eq!(st["cluster"]["hosts"].as_array().unwrap().len(), 1, "{st}");
    // The refused starts left nothing that stops a corrected retry on the same data directory.
    let real: Vec<&str> = real.iter().map(String::as_str).collect();
    let _second = Host::spawn(&dir.path().join("b"), &real);
    let st = status(&first);
    assert_eq!(st["cluster"]["hosts"].as_array().unwrap().len(), 2, "{st}");
}

/// Writers go through every host while hosts are SIGKILLed — the service's active host (at first
/// also the leader), the leader, the active host, a standby — and restarted. Every acknowledged
/// write must be readable through every host at the end.
#[test]
fn acknowledged_writes_survive_killing_hosts() {
    let mut hosts = cluster(3, &[]);
    hosts[0].deploy(guests::KV_DRAFT2, "kv", &[]);
    for h in &hosts {
        eventually("every host serves kv", || h.get("/kv/get?k=x").0 == 200);
    }
    let mut acked = Vec::new();
    // The service starts active on a, which also leads: round 0 kills both roles at once.
    for (round, victim) in ["active host", "leader", "active host", "a follower"]
        .into_iter()
        .enumerate()
    {
        let urls: Vec<String> = hosts.iter().map(|h| h.url("/kv")).collect();
        let load = Load::start(&urls, 6, &format!("r{round}"));
        load.wait_for(100 + 50 * round);
        let leader = leader(&hosts);
        let active_name = status(&hosts[leader])["services"][0]["active"][0]
            .as_str()
            .unwrap()
            .to_string();
        let active = (0..3).find(|i| name(*i) == active_name).unwrap();
        let index = match victim {
            "active host" => active,
            "leader" => leader,
            _ => (0..3)
                .find(|i| *i != leader && *i != active)
                .unwrap_or((leader + 1) % 3),
        };
        let roles = match (index == active, index == leader) {
            (true, true) => "active host and leader",
            (true, false) => "active host",
            (false, true) => "leader",
            (false, false) => "standby follower",
        };
        hosts[index].kill();
        // Writes are acknowledged again after the kill (within the wait's 60 s).
        load.wait_for(50);
        restart_in_place(&mut hosts[index], &name(index));
        // Failures are expected around a kill; what matters is what was acknowledged.
        let (round_acked, _failed) = load.stop();
        acked.extend(round_acked);
        println!(
            "round {round}: killed {} ({roles}); {} writes acknowledged so far",
            name(index),
            acked.len()
        );
    }
    for h in &hosts {
        assert_all_readable(h, &acked);
    }
    let total = acked.len();
    println!("{total} acknowledged writes, all readable through each of 3 hosts after 4 SIGKILLs");
}

/// A host down while the others write (and snapshot and drop their log) catches up by snapshot
/// when it comes back, and serves everything written meanwhile.
#[test]
fn a_host_that_was_down_catches_up_by_snapshot() {
    let mut hosts = cluster(3, &["--snapshot-every", "50"]);
    hosts[0].deploy(guests::KV_DRAFT2, "kv", &[]);
    for h in &hosts {
        eventually("every host serves kv", || h.get("/kv/get?k=x").0 == 200);
    }
    let down = (leader(&hosts) + 1) % 3;
    hosts[down].kill();
    let up: Vec<usize> = (0..3).filter(|i| *i != down).collect();
    let client = http();
    for i in 0..300 {
        let h = &hosts[up[i % 2]];
        let r = client
            .post(h.url(&format!("/kv/set?k=k{i}")))
            .body(format!("v{i}"))
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "write {i}");
    }
    restart_in_place(&mut hosts[down], &name(down));
    let back = &hosts[down];
    for i in (0..300).step_by(7) {
        assert_eq!(back.get(&format!("/kv/get?k=k{i}")).1, format!("v{i}"));
    }
    assert!(
        back.log().contains("installed a snapshot from the leader"),
        "the host should have caught up by snapshot:\n{}",
        back.log()
    );
}

/// A host cut off from the majority (here: the other two are dead) acknowledges nothing; once a
/// peer is back, writes succeed again.
#[test]
fn a_host_alone_acknowledges_no_write() {
    let mut hosts = cluster(3, &[]);
    hosts[0].deploy(guests::KV_DRAFT2, "kv", &[]);
    for h in &hosts {
        eventually("every host serves kv", || h.get("/kv/get?k=x").0 == 200);
    }
    assert_eq!(hosts[2].post("/kv/set?k=before", "1").0, 200);
    hosts[0].kill();
    hosts[1].kill();
    let (code, body) = hosts[2].post("/kv/set?k=alone", "1");
    assert!(
        code >= 500,
        "a lone host acknowledged a write: {code} {body}"
    );
    let st = hosts[2].cli_ok(&["status"]);
    assert!(st.contains("down"), "{st}");
    restart_in_place(&mut hosts[1], "b");
    eventually_within(
        Duration::from_secs(60),
        "writes succeed with a majority back",
        || hosts[2].post("/kv/set?k=again", "1").0 == 200,
    );
    assert_eq!(hosts[1].get("/kv/get?k=before").1, "1");
}

/// The host a service is active on dies: the leader moves the service to a live host in the next
/// epoch, and requests through every surviving host succeed again. The dead host, back, is a
/// standby that forwards.
#[test]
fn the_active_host_fails_over_and_comes_back_as_standby() {
    let mut hosts = cluster(3, &[]);
    let active = (leader(&hosts) + 1) % 3;
    hosts[active].deploy(guests::KV_DRAFT2, "kv", &[]);
    for h in &hosts {
        eventually("every host serves kv", || h.get("/kv/get?k=x").0 == 200);
    }
    let st = status(&hosts[0]);
    assert_eq!(
        st["services"][0]["active"],
        serde_json::json!([name(active)]),
        "{st}"
    );
    assert_eq!(st["services"][0]["epoch"], 1, "{st}");
    assert_eq!(hosts[(active + 1) % 3].post("/kv/set?k=before", "1").0, 200);

    hosts[active].kill();
    let survivors: Vec<usize> = (0..3).filter(|i| *i != active).collect();
    for i in &survivors {
        eventually_within(
            Duration::from_secs(30),
            "writes succeed after failover",
            || hosts[*i].post("/kv/set?k=after", "2").0 == 200,
        );
    }
    let st = status(&hosts[survivors[0]]);
    let now_active = st["services"][0]["active"][0].as_str().unwrap().to_string();
    assert_ne!(now_active, name(active), "{st}");
    assert_eq!(st["services"][0]["epoch"], 2, "{st}");
    // Each host notes a placement change in the service's log when it sees the change, which
    // may be a moment after the status shows it.
    let note = format!("failover: {} stopped answering", name(active));
    eventually("the failover is noted in the service's log", || {
        hosts[survivors[0]].cli_ok(&["logs", "kv"]).contains(&note)
    });

    restart_in_place(&mut hosts[active], &name(active));
    let back = &hosts[active];
    assert_eq!(back.get("/kv/get?k=before").1, "1");
    assert_eq!(back.get("/kv/get?k=after").1, "2");
    let st = status(back);
    assert_eq!(st["services"][0]["active"][0], now_active.as_str(), "{st}");
}

/// A host that is frozen (SIGSTOP) while one of its requests is running is replaced; when it
/// resumes, the request's write carries the old epoch and the store refuses it.
#[test]
fn a_deposed_hosts_late_write_is_refused() {
    let hosts = cluster(3, &[]);
    let active = (leader(&hosts) + 1) % 3;
    hosts[active].deploy(guests::KV_DRAFT2, "kv", &[]);
    for h in &hosts {
        eventually("every host serves kv", || h.get("/kv/get?k=x").0 == 200);
    }
    let url = hosts[active].url("/kv/slow-set?k=late&ms=1500");
    let request = std::thread::spawn(move || {
        let r = http().post(url).body("stale").send().unwrap();
        (r.status().as_u16(), r.text().unwrap())
    });
    eventually("the slow request runs", || {
        hosts[active]
            .cli_ok(&["logs", "kv"])
            .contains("slow-set late: waiting")
    });
    let pid = hosts[active].pid();
    unsafe { libc::kill(pid as i32, libc::SIGSTOP) };
    let other = (active + 1) % 3;
    eventually_within(
        Duration::from_secs(30),
        "the service moves to another host",
        || status(&hosts[other])["services"][0]["epoch"] == 2,
    );
    unsafe { libc::kill(pid as i32, libc::SIGCONT) };
    let (code, body) = request.join().unwrap();
    assert_eq!(code, 500, "{body}");
    assert!(body.contains("deposed"), "{body}");
    assert_eq!(hosts[other].get("/kv/get?k=late").1, "<none>");
    // Through the resumed host, writes work again (it forwards to the new active host).
    eventually_within(Duration::from_secs(30), "the resumed host forwards", || {
        hosts[active].post("/kv/set?k=k", "v").0 == 200
    });
    assert_eq!(hosts[other].get("/kv/get?k=k").1, "v");
}

/// A leader whose followers are both slow for a moment (frozen here, as an overloaded machine or
/// a congested link would make them) still serves a linearizable read once they answer. openraft
/// confirms leadership with one heartbeat round whose replies are due within 40 ms; a read must
/// not fail because one such round came back short.
#[test]
fn a_read_waits_out_a_majority_that_is_slow_for_a_moment() {
    let hosts = cluster(3, &[]);
    let l = leader(&hosts);
    hosts[l].deploy(guests::KV_DRAFT2, "kv", &[]);
    assert_eq!(hosts[l].post("/kv/set?k=city", "Kiel").0, 200);
    let followers: Vec<u32> = (0..3).filter(|i| *i != l).map(|i| hosts[i].pid()).collect();
    for pid in &followers {
        unsafe { libc::kill(*pid as i32, libc::SIGSTOP) };
    }
    let url = hosts[l].url("/kv/get?k=city");
    let read = std::thread::spawn(move || {
        let r = http().get(url).send().unwrap();
        (r.status().as_u16(), r.text().unwrap())
    });
    // Not a wait for readiness: the time the majority stays silent, several heartbeat rounds.
    std::thread::sleep(Duration::from_millis(300));
    for pid in &followers {
        unsafe { libc::kill(*pid as i32, libc::SIGCONT) };
    }
    let (code, body) = read.join().unwrap();
    assert_eq!((code, body.as_str()), (200, "Kiel"), "{}", logs(&hosts));
}

/// SIGKILL of the leader under writes through another host, where the service runs. A write
/// already on a connection to the old leader when it dies fails (it may or may not have been
/// committed), but none fails because the leader's connection is refused: those were never sent,
/// so they wait for the next leader instead of failing through the whole election.
#[test]
fn killing_the_leader_fails_only_the_writes_on_their_way_to_it() {
    let mut hosts = cluster(3, &[]);
    let l = leader(&hosts);
    let active = (l + 1) % 3;
    hosts[active].deploy(guests::KV_DRAFT2, "kv", &[]);
    let load = Load::start(&[hosts[active].url("/kv")], 4, "k");
    load.wait_for(100);
    hosts[l].kill();
    eventually("a new leader", || {
        status(&hosts[active])["cluster"]["leader"]
            .as_str()
            .is_some_and(|id| id != id_of(&hosts[l]))
    });
    load.wait_for(100);
    let (acked, failed) = load.stop();
    println!(
        "{} writes acknowledged, {} failed: {failed:#?}",
        acked.len(),
        failed.len()
    );
    assert!(
        failed.iter().all(|f| !f.contains("refused")),
        "writes that never reached the dead leader failed: {failed:#?}"
    );
    assert_all_readable(&hosts[active], &acked);
}

/// Deploys of one name through two hosts at once never become the same version: each race has
/// one winner (the other is told to retry and changes nothing), or both land one after the
/// other; the final version counts exactly the deploys that succeeded. The deploy calls go to the
/// admin API directly, released together, to make them overlap (on an idle 2-core machine one
/// often finishes before the other reads; under load they do collide, and one is refused).
#[test]
fn concurrent_deploys_through_two_hosts_never_share_a_version() {
    let hosts = cluster(3, &[]);
    hosts[0].deploy(guests::KV_DRAFT2, "kv", &[]);
    let digest = serde_json::from_str::<serde_json::Value>(&hosts[0].cli_ok(&["ls", "--json"]))
        .unwrap()[0]["module"]
        .as_str()
        .unwrap()
        .to_string();
    let (mut succeeded, mut refused) = (1, 0);
    for _ in 0..20 {
        let barrier = std::sync::Barrier::new(2);
        let statuses: Vec<(u16, String)> = std::thread::scope(|s| {
            let runs: Vec<_> = hosts[..2]
                .iter()
                .map(|h| {
                    let (barrier, digest) = (&barrier, &digest);
                    s.spawn(move || {
                        let request = h
                            .admin_http()
                            .put(h.admin_url("/v1/services/kv"))
                            .bearer_auth(h.token().trim())
                            .json(&serde_json::json!({ "module": digest }));
                        barrier.wait();
                        let r = request.send().unwrap();
                        (r.status().as_u16(), r.text().unwrap())
                    })
                })
                .collect();
            runs.into_iter().map(|r| r.join().unwrap()).collect()
        });
        for (code, body) in statuses {
            match code {
                200 => succeeded += 1,
                409 => {
                    assert!(body.contains("another deploy of"), "{body}");
                    refused += 1;
                }
                _ => panic!("deploy answered {code}: {body}"),
            }
        }
    }
    let services: serde_json::Value =
        serde_json::from_str(&hosts[2].cli_ok(&["ls", "--json"])).unwrap();
    assert_eq!(services[0]["version"], succeeded, "{services}");
    println!("41 deploys, 40 of them in concurrent pairs: {succeeded} landed, {refused} refused");
    assert_eq!(hosts[2].post("/kv/set?k=a", "1").0, 200);
}

/// The last raft timing a host's log reports: the lease it runs with now.
fn lease_in_log(host: &Host) -> String {
    let log = host.log();
    let line = log.lines().rev().find(|l| l.contains("raft timing"));
    line.unwrap_or_default().to_string()
}

/// One leader lease per cluster: the creating host's. A joining host takes it without being
/// told, and a `--leader-lease` that disagrees, on joining or on a restart, is refused with the
/// cluster's value and changes nothing.
#[test]
fn every_member_runs_with_its_clusters_leader_lease() {
    let mut hosts = cluster_each(&[&["--leader-lease", "300ms"], &[]]);
    assert!(
        lease_in_log(&hosts[1]).contains("lease_ms=300 "),
        "{}",
        hosts[1].log()
    );

    let invitation = hosts[0].invite("c", &[]);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("c");
    let join: Vec<&str> = invitation.iter().map(String::as_str).collect();
    let Err(refused) =
        Host::try_spawn(&data, &[&join[..], &["--leader-lease", "1s"]].concat(), &[])
    else {
        panic!("a host asking for another lease joined");
    };
    assert!(!refused.success());
    let log = std::fs::read_to_string(data.with_extension("log")).unwrap();
    assert!(log.contains("runs with a leader lease of 300 ms"), "{log}");
    assert!(
        !data.join("cluster.json").exists(),
        "the refused host kept a cluster identity"
    );
    // It did keep the certificate it enrolled for (the invitation is used up), so that it joins
    // with it once it asks for the right lease.
    assert_eq!(
        status(&hosts[0])["cluster"]["hosts"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    let (listen, admin, peer) = (
        hosts[1].listen.to_string(),
        hosts[1].admin.to_string(),
        hosts[1].peer.to_string(),
    );
    hosts[1].kill();
    let again = [
        "--name", "b", "--listen", &listen, "--admin", &admin, "--peer", &peer,
    ];
    let Err(refused) = Host::try_spawn(
        &hosts[1].data,
        &[&again[..], &["--leader-lease", "500ms"]].concat(),
        &[],
    ) else {
        panic!("a member restarted with another lease");
    };
    assert!(!refused.success());
    assert!(
        hosts[1].log().contains("use a leader lease of 300 ms"),
        "{}",
        hosts[1].log()
    );
    // The flag agreeing with the cluster is fine, and a third host joins without it.
    hosts[1].restart_with(&[&again[..], &["--leader-lease", "300ms"]].concat());
    assert!(
        lease_in_log(&hosts[1]).contains("lease_ms=300 "),
        "{}",
        hosts[1].log()
    );
    let c = Host::spawn(&data, &join);
    assert!(lease_in_log(&c).contains("lease_ms=300 "), "{}", c.log());
    hosts[0].deploy(guests::KV_DRAFT2, "kv", &[]);
    eventually("writes succeed through the new member", || {
        c.post("/kv/set?k=x", "1").0 == 200
    });
}

/// A cluster's lease changes while every host is stopped: the first host started again with a
/// new `--leader-lease` takes it (no member runs to disagree), the others, started without the
/// flag, take it from the running one, and the cluster goes on with all its data.
#[test]
fn a_clusters_lease_changes_while_every_host_is_stopped() {
    let mut hosts = cluster(3, &[]);
    hosts[0].deploy(guests::KV_DRAFT2, "kv", &[]);
    eventually("a write is acknowledged", || {
        hosts[2].post("/kv/set?k=before", "kept").0 == 200
    });
    let places: Vec<[String; 3]> = hosts
        .iter()
        .map(|h| {
            [
                h.listen.to_string(),
                h.admin.to_string(),
                h.peer.to_string(),
            ]
        })
        .collect();
    let args = |i: usize| -> Vec<String> {
        let [listen, admin, peer] = places[i].clone();
        [
            "--name".into(),
            name(i),
            "--listen".into(),
            listen,
            "--admin".into(),
            admin,
            "--peer".into(),
            peer,
        ]
        .into()
    };
    for h in &mut hosts {
        h.kill();
    }

    let [a, b, c] = &mut hosts[..] else {
        unreachable!()
    };
    std::thread::scope(|s| {
        // Not ready until a second host is back (no majority alone): started in the background.
        let first = [args(0), vec!["--leader-lease".into(), "600ms".into()]].concat();
        s.spawn(move || a.restart_with(&first.iter().map(String::as_str).collect::<Vec<_>>()));
        eventually("the first host back listens for its peers", || {
            std::net::TcpStream::connect(&places[0][2]).is_ok()
        });
        for (i, host) in [(1, b), (2, c)] {
            let again = args(i);
            s.spawn(move || {
                host.restart_with(&again.iter().map(String::as_str).collect::<Vec<_>>())
            });
        }
    });

    for h in &hosts {
        assert!(lease_in_log(h).contains("lease_ms=600 "), "{}", h.log());
        assert_eq!(identity(h)["lease_ms"], 600);
    }
    assert!(
        hosts[0]
            .log()
            .contains("the cluster's leader lease changes here"),
        "{}",
        hosts[0].log()
    );
    assert!(
        hosts[1]
            .log()
            .contains("leader lease changed while this host was stopped"),
        "{}",
        hosts[1].log()
    );
    eventually("writes are acknowledged again", || {
        hosts[1].post("/kv/set?k=after", "new").0 == 200
    });
    assert_eq!(hosts[2].get("/kv/get?k=before").1, "kept");
    assert_eq!(status(&hosts[2])["cluster"]["lease_ms"], 600);
    assert!(
        hosts[2].cli_ok(&["status"]).contains("leader lease 600 ms"),
        "the lease is in doppel status"
    );
}

/// A data directory made before the lease was kept in `cluster.json` starts, and from then on
/// keeps the lease it ran with.
#[test]
fn a_data_directory_from_before_the_lease_was_kept_records_it() {
    let mut host = Host::start();
    host.kill();
    let mut old = identity(&host);
    old.as_object_mut().unwrap().remove("lease_ms");
    std::fs::write(host.data.join("cluster.json"), old.to_string()).unwrap();
    host.restart();
    assert!(
        lease_in_log(&host).contains("lease_ms=180 "),
        "{}",
        host.log()
    );
    let kept = identity(&host);
    assert_eq!(kept["lease_ms"], 180);
    assert_eq!(kept["id"], old["id"]);
}

/// Hosts far apart get a longer leader lease (`--leader-lease`); a cluster started with one still
/// replaces a dead leader, and a lease out of range is refused with the allowed range.
#[test]
fn a_longer_leader_lease_still_replaces_a_dead_leader() {
    let dir = tempfile::tempdir().unwrap();
    let out = doppel()
        .args(["host", "--leader-lease", "20ms", "--data"])
        .arg(dir.path().join("x"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("100ms to 10s"), "{stderr}");
    assert!(
        !dir.path().join("x").exists(),
        "a refused start wrote a data directory"
    );

    let mut hosts = cluster(3, &["--leader-lease", "800ms"]);
    for h in &hosts {
        assert!(
            h.log().contains("lease_ms=800 heartbeat_ms=177"),
            "{}",
            h.log()
        );
    }
    hosts[0].deploy(guests::KV_DRAFT2, "kv", &[]);
    assert_eq!(hosts[1].post("/kv/set?k=before", "1").0, 200);
    let old = leader(&hosts);
    let term = status(&hosts[(old + 1) % 3])["cluster"]["term"]
        .as_u64()
        .unwrap();
    hosts[old].kill();
    for i in (0..3).filter(|i| *i != old) {
        eventually("writes succeed with a new leader", || {
            hosts[i].post("/kv/set?k=after", "2").0 == 200
        });
    }
    // `leader` only finds running hosts: it fails if the dead host is still named leader.
    assert_ne!(leader(&hosts), old);
    let survivor = &hosts[(old + 1) % 3];
    let st = status(survivor);
    assert!(st["cluster"]["term"].as_u64().unwrap() > term, "{st}");
    assert_eq!(survivor.get("/kv/get?k=before").1, "1");
}
