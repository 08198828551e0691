//! A real network partition: three hosts, each in its own Linux network namespace on a bridge;
//! the leader is cut off from its peers (blackhole routes inside its namespace) while the test,
//! outside, can still reach all three. The cut-off host must acknowledge no write; the majority
//! side elects a new leader and keeps acknowledging; after healing, the old leader catches up.
//! Needs root and iproute2; skipped, with the reason printed, where either is missing.

use std::process::Command;
use std::time::Duration;

use doppel_guests as guests;

use crate::support::{Host, eventually_within, name};

/// Namespaces, a bridge and veths, removed again on drop.
struct Net {
    tag: String,
    subnet: String,
}

fn ip(args: &[&str]) -> bool {
    Command::new("ip")
        .args(args)
        .status()
        .is_ok_and(|s| s.success())
}

fn must(args: &[&str]) {
    assert!(ip(args), "ip {} failed", args.join(" "));
}

/// A set-up step: failing means this machine cannot run the test.
fn step(args: &[&str]) -> Result<(), String> {
    if ip(args) {
        Ok(())
    } else {
        Err(format!("`ip {}` failed", args.join(" ")))
    }
}

impl Net {
    /// Sets up `n` namespaces; `None` (with the reason) where this machine cannot.
    fn new(n: usize) -> Result<Net, String> {
        if unsafe { libc::geteuid() } != 0 {
            return Err("needs root to create network namespaces".into());
        }
        let has_ip = Command::new("ip")
            .arg("-V")
            .output()
            .is_ok_and(|o| o.status.success());
        if !has_ip {
            return Err("needs iproute2 (`apt-get install iproute2`)".into());
        }
        let id = std::process::id() % 10_000;
        let net = Net {
            tag: format!("dp{id}"),
            subnet: format!("10.{}.{}", 100 + id % 100, id / 100 % 250),
        };
        let bridge = format!("{}br", net.tag);
        // From here on, `net` is dropped (and cleans up) if a step fails.
        step(&["link", "add", &bridge, "type", "bridge"])?;
        step(&[
            "addr",
            "add",
            &format!("{}.254/24", net.subnet),
            "dev",
            &bridge,
        ])?;
        step(&["link", "set", &bridge, "up"])?;
        for i in 0..n {
            let ns = net.ns(i);
            let outside = format!("{}v{i}", net.tag);
            let inside = |args: &[&str]| {
                let mut all = vec!["netns", "exec", ns.as_str(), "ip"];
                all.extend_from_slice(args);
                step(&all)
            };
            step(&["netns", "add", &ns])?;
            step(&[
                "link", "add", &outside, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ])?;
            step(&["link", "set", &outside, "master", &bridge, "up"])?;
            inside(&["addr", "add", &format!("{}/24", net.addr(i)), "dev", "eth0"])?;
            inside(&["link", "set", "eth0", "up"])?;
            inside(&["link", "set", "lo", "up"])?;
        }
        Ok(net)
    }

    fn ns(&self, i: usize) -> String {
        format!("{}n{i}", self.tag)
    }

    fn addr(&self, i: usize) -> String {
        format!("{}.{}", self.subnet, i + 1)
    }

    /// Cuts host `i` off from hosts `others` (both directions: its packets to them vanish, so
    /// neither its requests nor its answers arrive).
    fn cut(&self, i: usize, others: &[usize]) {
        self.routes("add", i, others);
    }

    fn heal(&self, i: usize, others: &[usize]) {
        self.routes("del", i, others);
    }

    fn routes(&self, action: &str, i: usize, others: &[usize]) {
        for j in others {
            let to = format!("{}/32", self.addr(*j));
            must(&[
                "netns",
                "exec",
                &self.ns(i),
                "ip",
                "route",
                action,
                "blackhole",
                &to,
            ]);
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        // Deleting the outside end of a veth removes both ends at once; a namespace's teardown
        // otherwise waits for the kernel to release its last sockets.
        for i in 0..8 {
            for args in [
                vec!["link", "del", &format!("{}v{i}", self.tag)],
                vec!["netns", "del", &self.ns(i)],
            ] {
                let _ = Command::new("ip")
                    .args(args)
                    .stderr(std::process::Stdio::null())
                    .status();
            }
        }
        let _ = Command::new("ip")
            .args(["link", "del", &format!("{}br", self.tag)])
            .status();
    }
}

#[test]
fn a_partitioned_leader_acknowledges_nothing_and_the_majority_goes_on() {
    let net = match Net::new(3) {
        Ok(net) => net,
        Err(why) => {
            println!("skipped: {why}");
            return;
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let mut hosts: Vec<Host> = Vec::new();
    for i in 0..3 {
        let ns = net.ns(i);
        let wrapper = ["ip", "netns", "exec", ns.as_str()];
        let (listen, admin, peer) = (
            format!("{}:8080", net.addr(i)),
            format!("{}:8081", net.addr(i)),
            format!("{}:8082", net.addr(i)),
        );
        let host_name = name(i);
        let mut args = vec![
            "--name", &host_name, "--listen", &listen, "--admin", &admin, "--peer", &peer,
        ];
        let invitation = if i > 0 {
            hosts[0].invite(&host_name, &[])
        } else {
            Vec::new()
        };
        args.extend(invitation.iter().map(String::as_str));
        hosts.push(Host::spawn_under(
            &wrapper,
            &dir.path().join(&host_name),
            &args,
        ));
    }
    hosts[0].deploy(guests::KV_DRAFT2, "kv", &[]);
    for h in &hosts {
        eventually_within(Duration::from_secs(30), "every host serves kv", || {
            h.get("/kv/get?k=x").0 == 200
        });
    }
    assert_eq!(hosts[1].post("/kv/set?k=before", "1").0, 200);

    let leader = crate::support::leader(&hosts);
    let others: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    net.cut(leader, &others);

    // The cut-off leader still runs and still answers HTTP, but acknowledges no write.
    for attempt in 0..3 {
        let (code, body) = hosts[leader].post(&format!("/kv/set?k=minority{attempt}"), "x");
        assert!(
            code >= 500,
            "the cut-off host acknowledged a write: {code} {body}"
        );
    }
    // The majority elects a new leader and acknowledges writes.
    let majority = &hosts[others[0]];
    eventually_within(
        Duration::from_secs(30),
        "the majority acknowledges writes",
        || majority.post("/kv/set?k=during", "2").0 == 200,
    );
    assert_eq!(hosts[others[1]].get("/kv/get?k=during").1, "2");

    net.heal(leader, &others);
    // Healed, the old leader catches up and serves what the majority wrote; the writes it was
    // asked for while cut off never happened anywhere.
    eventually_within(Duration::from_secs(30), "the old leader catches up", || {
        hosts[leader].get("/kv/get?k=during").1 == "2"
    });
    for h in &hosts {
        for attempt in 0..3 {
            assert_eq!(h.get(&format!("/kv/get?k=minority{attempt}")).1, "<none>");
        }
    }
    drop(hosts);
}
