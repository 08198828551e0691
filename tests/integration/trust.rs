//! Trust between hosts and operators, tried as an attacker would: a relay on the path sees no
//! secret; a peer without the cluster's certificate, with another cluster's, an expired or a
//! removed host's is refused; invitations are one-time and bind the labels; a host may not speak
//! for another; credentials have roles and can be revoked; every refusal is in the audit trail.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use doppel_guests as guests;
use doppel_trust::{ClusterCa, HostIdentity, HostKey};

use crate::support::{
    Host, cluster, doppel, eventually, id_of, join, peer_http, peer_http_as, status,
};

/// A TCP relay on the path: forwards every byte both ways and keeps a copy.
struct Relay {
    addr: String,
    seen: Arc<Mutex<Vec<u8>>>,
}

impl Relay {
    /// A relay to `target` on a port of its own.
    fn to(target: String) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let copy = seen.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = TcpStream::connect(&target) else {
                    continue;
                };
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    let copy = copy.clone();
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 16 << 10];
                        while let Ok(n) = from.read(&mut buf) {
                            if n == 0 || to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                            copy.lock().unwrap().extend_from_slice(&buf[..n]);
                        }
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Relay { addr, seen }
    }

    fn captured(&self) -> Vec<u8> {
        self.seen.lock().unwrap().clone()
    }
}

/// A loopback port nothing listens on now.
fn free_port() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// Every byte between two hosts, and between the CLI and a host, goes through relays that keep a
/// copy: a config value, a stored record, the operator's credential and the module bytes cross
/// them, yet none of them (and no bearer token) is in what the relays saw.
#[test]
fn a_relay_on_the_path_sees_no_secret() {
    let (a_peer, b_peer) = (free_port(), free_port());
    let (to_a, to_b) = (Relay::to(a_peer.clone()), Relay::to(b_peer.clone()));
    let a = Host::start_with(&["--name", "a", "--peer", &a_peer, "--advertise", &to_a.addr]);
    let b = join(&a, "b", &["--peer", &b_peer, "--advertise", &to_b.addr]);
    let to_admin = Relay::to(a.admin.to_string());
    let token = a.token();
    let ca = a.data.join("tls/ca.pem");
    let through_relay = |args: &[&str]| {
        let out = doppel()
            .args(args)
            .args(["--admin", &format!("https://{}", to_admin.addr)])
            .args(["--token", token.trim(), "--ca", ca.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let config_canary = "DB_PASSWORD=canary-config-5f1e";
    through_relay(&[
        "deploy",
        guests::HTTP_BASICS,
        "--name",
        "web",
        "--config",
        config_canary,
    ]);
    through_relay(&["deploy", guests::KV_DRAFT2, "--name", "kv"]);
    through_relay(&[
        "kv",
        "put",
        "--service",
        "kv",
        "citizen",
        "canary-record-77ab",
    ]);
    eventually("b serves the config value", || {
        b.get("/web/config?key=DB_PASSWORD")
            .1
            .contains("canary-config-5f1e")
    });
    // A record written through b (forwarded to, or replicated from, the other host).
    eventually("a record written through b", || {
        b.post("/kv/set?k=person", "canary-body-9c3d").0 == 200
    });
    eventually("the record reached a", || {
        a.get("/kv/get?k=person").1 == "canary-body-9c3d"
    });
    let between_hosts = [to_a.captured(), to_b.captured()].concat();
    let from_cli = to_admin.captured();
    assert!(
        between_hosts.len() > 10_000,
        "the relays saw the hosts' traffic"
    );
    assert!(from_cli.len() > 10_000, "the relay saw the CLI's traffic");
    let module = std::fs::read(guests::HTTP_BASICS).unwrap();
    let sample = String::from_utf8_lossy(&module[module.len() / 2..module.len() / 2 + 64]);
    for seen in [&between_hosts, &from_cli] {
        for canary in [
            "canary-config-5f1e",
            "canary-record-77ab",
            "canary-body-9c3d",
            token.trim(),
            "Bearer",
            "doppel-token-v1",
        ] {
            assert!(
                !contains(seen, canary),
                "{canary:?} crossed the relay in clear"
            );
        }
        assert!(
            !contains(seen, &sample),
            "module bytes crossed the relay in clear"
        );
    }
}

/// A peer request with no certificate, a self-signed one, one from another cluster's CA or an
/// expired one is refused, and the refusals reach the log and the audit trail.
#[test]
fn peers_without_a_valid_certificate_are_refused() {
    let a = Host::start_with(&["--name", "a"]);
    let ping = format!("https://{}/raft/v1/ping", a.peer);
    // No certificate: the handshake passes (enrolment needs it), the request does not.
    let anonymous = a.admin_http().post(&ping).send().unwrap();
    assert_eq!(anonymous.status().as_u16(), 401);
    // Another cluster's host.
    let other = Host::start_with(&["--name", "z"]);
    let refused = peer_http(&other).post(&ping).send();
    assert!(
        refused.is_err(),
        "a host of another cluster was served: {refused:?}"
    );
    // Self-signed, and expired but from the right CA, as written by someone holding a's CA key.
    let dir = tempfile::tempdir().unwrap();
    let ca_pem = std::fs::read_to_string(a.data.join("tls/ca.pem")).unwrap();
    let ca_key = std::fs::read_to_string(a.data.join("tls/ca.key")).unwrap();
    let real = ClusterCa::from_pem(&ca_pem, &ca_key).unwrap();
    let impostor = ClusterCa::create("impostor").unwrap();
    let me = HostIdentity {
        id: id_of(&a).parse().unwrap(),
        name: "a".into(),
        labels: Default::default(),
    };
    let hour = Duration::from_secs(3600);
    let now = SystemTime::now();
    for (name, ca, from, to) in [
        ("self-signed", &impostor, now - hour, now + hour),
        ("expired", &real, now - 3 * hour, now - hour),
    ] {
        let tls = dir.path().join(name);
        write_certificate(&tls, ca, &me, from, to, &ca_pem);
        let refused = peer_http_as(&tls).post(&ping).send();
        assert!(
            refused.is_err(),
            "a {name} certificate was served: {refused:?}"
        );
    }
    eventually("the refusals are logged", || {
        a.log().contains("refused a peer")
    });
    eventually("the refusals are in the audit trail", || {
        a.cli_ok(&["audit", "--json"]).contains("(peer)")
    });
    assert!(a.cli_ok(&["audit", "--json"]).contains("peer request(s)"));
}

/// `tls/host.pem` and `host.key` for `who`, from `ca`, valid `from` to `to`, trusting `roots`.
pub(crate) fn write_certificate(
    tls: &Path,
    ca: &ClusterCa,
    who: &HostIdentity,
    from: SystemTime,
    to: SystemTime,
    roots: &str,
) {
    std::fs::create_dir_all(tls).unwrap();
    let key = HostKey::generate().unwrap();
    let cert = ca
        .issue_dated(&key.request().unwrap(), who, from, to)
        .unwrap();
    std::fs::write(tls.join("host.pem"), format!("{cert}{}", ca.cert_pem())).unwrap();
    std::fs::write(tls.join("host.key"), key.pem()).unwrap();
    std::fs::write(tls.join("ca.pem"), roots).unwrap();
}

/// A removed host's certificate is refused from its removal on, and it cannot join again with it;
/// a member may not change another member's address; a host that is not a member may not probe.
#[test]
fn a_removed_host_and_a_host_speaking_for_another_are_refused() {
    let mut hosts = cluster(3, &[]);
    let c_tls = tempfile::tempdir().unwrap();
    copy_dir(&hosts[2].data.join("tls"), c_tls.path());
    let ping = format!("https://{}/raft/v1/ping", hosts[0].peer);
    assert!(
        peer_http_as(c_tls.path())
            .post(&ping)
            .send()
            .unwrap()
            .status()
            .is_success()
    );
    hosts[2].kill();
    hosts[0].cli_ok(&["hosts", "rm", "c"]);
    eventually("the removed host's certificate is refused", || {
        peer_http_as(c_tls.path())
            .post(&ping)
            .send()
            .is_ok_and(|r| r.status().as_u16() == 403)
    });
    let answer = peer_http_as(c_tls.path()).post(&ping).send().unwrap();
    assert!(answer.text().unwrap().contains("was removed"));
    // b asks to be recorded at a new address in a's name: refused.
    let a_id: u64 = id_of(&hosts[0]).parse().unwrap();
    let forged = postcard::to_stdvec(&(a_id, "127.0.0.1:9".to_string())).unwrap();
    let answer = peer_http(&hosts[1])
        .post(format!("https://{}/raft/v1/join", hosts[0].peer))
        .body(forged)
        .send()
        .unwrap();
    assert_eq!(answer.status().as_u16(), 403, "{:?}", answer.text());
    let st = status(&hosts[0]);
    let a_addr = st["cluster"]["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["name"] == "a")
        .unwrap()["admin"]
        .clone();
    assert_ne!(a_addr, "127.0.0.1:9");
    assert!(
        hosts[0]
            .log()
            .contains("refused a join request sent in another host's name")
    );
}

pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

/// Labels come from the invitation, bound into the certificate: a host started with a label it
/// was not given does not carry it, and a service placed by that label does not go there. A
/// cluster declared German refuses an invitation for a host that is not.
#[test]
fn labels_come_from_the_invitation_and_the_residency_rule_holds() {
    let a = Host::start_with(&[
        "--name",
        "a",
        "--label",
        "jurisdiction=de",
        "--require-label",
        "jurisdiction=de",
    ]);
    let refused = a.cli_err(&["hosts", "invite", "fr1", "--label", "jurisdiction=fr"]);
    assert!(
        refused.contains("requires every host to carry jurisdiction=de"),
        "{refused}"
    );
    let refused = a.cli_err(&["hosts", "invite", "none"]);
    assert!(refused.contains("jurisdiction=de"), "{refused}");
    // A rogue invited as de, started claiming another provider too: it gets only what it was given.
    let invitation = a.invite("b", &["jurisdiction=de"]);
    let mut args: Vec<&str> = invitation.iter().map(String::as_str).collect();
    args.extend(["--label", "provider=trusted", "--name", "rogue"]);
    let b = Host::start_with(&args);
    assert!(b.log().contains("--label is ignored") || b.log().contains("--name is not used"));
    let st = status(&a);
    let hosts = st["cluster"]["hosts"].as_array().unwrap();
    let b_status = hosts
        .iter()
        .find(|h| h["name"] == "b")
        .expect("b is named by its invitation");
    assert_eq!(
        b_status["labels"],
        serde_json::json!({"jurisdiction": "de"})
    );
    a.deploy(guests::HELLO, "hello", &["--on", "provider=trusted"]);
    let placed = a.cli_ok(&["ls", "--json"]);
    assert!(
        !placed.contains("\"b\""),
        "placed on a label the host only claimed: {placed}"
    );
    // Status says where data lives, and warns of a rule narrower than the cluster's.
    let told = a.cli_ok(&["status"]);
    for says in [
        "Residency rule: every host carries jurisdiction=de.",
        "its data (buckets) is stored on every host of the cluster",
        "warning: hello runs only where provider=trusted, but its data is on every host",
    ] {
        assert!(told.contains(says), "{told}");
    }
    // A cluster cannot be created breaking its own rule.
    let dir = tempfile::tempdir().unwrap();
    let out = crate::support::host_command(&dir.path().join("x"))
        .args(["--require-label", "jurisdiction=de"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("give this host the labels"));
}

/// An invitation is good once, and not after it expired.
#[test]
fn an_invitation_is_good_once_and_not_after_it_expires() {
    let a = Host::start_with(&["--name", "a"]);
    let invitation = a.invite("b", &[]);
    let args: Vec<&str> = invitation.iter().map(String::as_str).collect();
    let _b = Host::start_with(&args);
    let dir = tempfile::tempdir().unwrap();
    let try_join = |token: &str| -> String {
        let mut child = crate::support::host_command(&dir.path().join("late"))
            .args(["--join", &a.peer.to_string(), "--token", token])
            .stderr(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // A host that joined would run on: give up on it rather than wait forever.
        let deadline = Instant::now() + Duration::from_secs(60);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("a host joined with an invitation that should have been refused");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut stderr = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        stderr
    };
    let used = try_join(&invitation[3]);
    assert!(used.contains("the invitation was already used"), "{used}");

    let expiring = a.cli_ok(&["hosts", "invite", "late", "--expires", "1s"]);
    let made = Instant::now();
    let token = expiring.split_whitespace().last().unwrap().to_string();
    // Expiry is by the wall clock, so this waits for the clock, not for a process.
    std::thread::sleep(Duration::from_millis(1500).saturating_sub(made.elapsed()));
    let late = try_join(&token);
    assert!(late.contains("the invitation expired"), "{late}");
}

/// Credentials have roles and names: a viewer reads but does not deploy, an operator deploys but
/// does not make credentials, a revoked credential is refused; the events and the audit trail
/// name the credential, never what a client says of itself.
#[test]
fn credentials_have_roles_and_can_be_revoked() {
    let a = Host::start_with(&["--name", "a"]);
    let viewer = a.cli_ok(&["tokens", "create", "vera", "--role", "viewer"]);
    let operator = a.cli_ok(&["tokens", "create", "otto", "--role", "operator"]);
    let as_ = |token: &str, args: &[&str]| {
        doppel()
            .args(args)
            .args(["--token", token.trim(), "--data"])
            .arg(&a.data)
            .output()
            .unwrap()
    };
    assert!(as_(&viewer, &["ls"]).status.success());
    let denied = as_(&viewer, &["deploy", guests::HELLO, "--name", "hello"]);
    assert!(!denied.status.success());
    let stderr = String::from_utf8_lossy(&denied.stderr);
    assert!(stderr.contains("\"vera\" is a viewer"), "{stderr}");
    let deployed = as_(&operator, &["deploy", guests::HELLO, "--name", "hello"]);
    assert!(
        deployed.status.success(),
        "{}",
        String::from_utf8_lossy(&deployed.stderr)
    );
    let denied = as_(
        &operator,
        &["tokens", "create", "mallory", "--role", "admin"],
    );
    assert!(String::from_utf8_lossy(&denied.stderr).contains("this needs an admin"));
    // The actor is the credential's name, whatever header a client sends.
    let events = a
        .admin_http()
        .get(a.admin_url("/v1/events"))
        .bearer_auth(operator.trim())
        .header("x-doppel-actor", "someone-else@nowhere")
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(events.contains("otto via a"), "{events}");
    assert!(!events.contains("someone-else"));
    a.cli_ok(&["tokens", "revoke", "otto"]);
    let revoked = as_(&operator, &["ls"]);
    assert!(String::from_utf8_lossy(&revoked.stderr).contains("revoked"));
    let listed = a.cli_ok(&["tokens", "ls", "--json"]);
    assert!(!listed.contains(operator.trim().rsplit(':').next().unwrap()));
    let audit = a.cli_ok(&["audit", "--json"]);
    for expected in [
        "\"actor\": \"vera\"",
        "refused: role",
        "\"actor\": \"otto\"",
        "DELETE /v1/tokens/otto",
    ] {
        assert!(audit.contains(expected), "{expected} missing from {audit}");
    }
    assert!(a.cli_ok(&["audit", "--verify"]).contains("intact"));
}
