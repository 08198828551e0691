//! What a host keeps on its disk, looked at as an auditor of that disk would.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use doppel_guests as guests;

use crate::support::Host;

/// Every file and folder below `dir` that its group or others may read, write or enter.
fn not_private(dir: &Path) -> Vec<(PathBuf, u32)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let meta = std::fs::symlink_metadata(entry.path()).unwrap();
        if meta.file_type().is_symlink() {
            continue;
        }
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            found.push((entry.path(), mode));
        }
        if meta.is_dir() {
            found.extend(not_private(&entry.path()));
        }
    }
    found
}

/// The store, the raft log, the module cache, keys and credentials: all owner-only, including
/// what an older version left readable in the data directory.
#[test]
fn every_file_and_folder_in_the_data_directory_is_its_owners_only() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let older = data.join("left-by-an-older-version");
    std::fs::create_dir_all(&older).unwrap();
    std::fs::write(older.join("file"), "x").unwrap();
    std::fs::set_permissions(&older, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(older.join("file"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let host = Host::spawn(&data, &[]);
    host.deploy(guests::COUNTER, "counter", &[]);
    for _ in 0..3 {
        assert_eq!(host.post("/counter/visits", "").0, 200);
    }
    let open = not_private(&data);
    assert!(open.is_empty(), "readable by others: {open:?}");
    assert_eq!(
        std::fs::metadata(&data).unwrap().permissions().mode() & 0o777,
        0o700
    );
}

/// Every file below `dirs` (and the hosts' own logs) in which `needle` occurs, byte for byte.
pub fn files_holding(dirs: &[&Path], needle: &[u8]) -> Vec<PathBuf> {
    fn walk(dir: &Path, needle: &[u8], found: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                walk(&path, needle, found);
            } else if meta.is_file() {
                let bytes = std::fs::read(&path).unwrap_or_default();
                if bytes.windows(needle.len()).any(|w| w == needle) {
                    found.push(path);
                }
            }
        }
    }
    let mut found = Vec::new();
    for dir in dirs {
        walk(dir, needle, &mut found);
        let log = dir.with_extension("log");
        if std::fs::read(&log).is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle)) {
            found.push(log);
        }
    }
    found
}

/// A stored record (its key and its value), a config value and a secret, written through a
/// 3-host cluster: none is in any file of any host (the raft log, the state, snapshots, the
/// module cache, the hosts' logs), nor in what operators are shown, while the services read
/// them back.
#[test]
fn canaries_are_in_no_file_of_any_host_nor_in_what_operators_see() {
    let hosts = crate::support::cluster(3, &["--snapshot-every", "20"]);
    let secrets = tempfile::tempdir().unwrap();
    let secret_file = secrets.path().join("api-key");
    std::fs::write(&secret_file, "canary-secret-4f1b9\n").unwrap();
    let secret_arg = format!("API_KEY=@{}", secret_file.display());
    hosts[0].deploy(
        guests::HTTP_BASICS,
        "basics",
        &[
            "--config",
            "DB_PASSWORD=canary-config-77d2e",
            "--secret",
            &secret_arg,
        ],
    );
    hosts[0].deploy(guests::KV_DRAFT2, "kv", &[]);
    let (status, body) = hosts[1].post(
        "/kv/set?k=anna.canary-key@example.de",
        "canary-record-2c8a0",
    );
    assert_eq!(status, 200, "{body}");
    // Enough writes for every host to take a snapshot (one every 20 entries).
    for i in 0..60 {
        crate::support::write_kv(&hosts[i % 3], &format!("filler{i}"), "x");
    }
    for host in &hosts {
        assert_eq!(
            host.get("/kv/get?k=anna.canary-key@example.de"),
            (200, "canary-record-2c8a0".into())
        );
        assert_eq!(
            host.get("/basics/config?key=API_KEY"),
            (200, "canary-secret-4f1b9".into())
        );
        assert_eq!(
            host.get("/basics/config?key=DB_PASSWORD"),
            (200, "canary-config-77d2e".into())
        );
    }
    // An operator's change names its key in the request; the audit trail keeps a pseudonym.
    hosts[2].cli_ok(&[
        "kv",
        "put",
        "--service",
        "kv",
        "bert.canary-key@example.de",
        "x",
    ]);
    assert_eq!(
        hosts[0].get("/kv/get?k=bert.canary-key@example.de"),
        (200, "x".into())
    );
    let shown = [
        hosts[0].cli_ok(&["ls", "--json"]),
        hosts[0].cli_ok(&["ls"]),
        hosts[1].cli_ok(&["status", "--json"]),
        hosts[2].cli_ok(&["events", "basics"]),
        hosts[0].cli_ok(&["logs", "basics"]),
        hosts[0].cli_ok(&["audit", "--json"]),
    ]
    .concat();
    assert!(
        shown.contains("API_KEY"),
        "the secret's name is shown: {shown}"
    );
    let dirs: Vec<&Path> = hosts.iter().map(|h| h.data.as_path()).collect();
    for canary in [
        "canary-record-2c8a0",
        "canary-key",
        "canary-config-77d2e",
        "canary-secret-4f1b9",
    ] {
        assert!(!shown.contains(canary), "{canary} shown to an operator");
        let found = files_holding(&dirs, canary.as_bytes());
        assert!(found.is_empty(), "{canary} readable in {found:?}");
    }
    // Operators cannot read the settings as a bucket either.
    let err = hosts[0].cli_err(&[
        "kv",
        "get",
        "--service",
        "basics",
        "--bucket",
        "doppel:settings",
        "1",
    ]);
    assert!(!err.contains("canary"), "{err}");
}

/// `rm --purge` destroys the service's data key on every host and each host compacts its log;
/// the other service keeps its data, and a new service of the same name starts empty under a
/// new key.
#[test]
fn a_purge_destroys_the_data_key_everywhere_and_spares_other_services() {
    let hosts = crate::support::cluster(3, &[]);
    hosts[0].deploy(guests::KV_DRAFT2, "kv", &[]);
    hosts[0].deploy(guests::KV_DRAFT2, "other", &[]);
    hosts[0].deploy(guests::HTTP_BASICS, "talker", &[]);
    crate::support::write_kv(&hosts[0], "person", "canary-erased-91c3");
    assert_eq!(hosts[0].post("/other/set?k=kept", "still-here").0, 200);
    // A guest that logged a person's data: its log lines go with the erasure, on every host.
    for host in &hosts {
        assert_eq!(host.get("/talker/log?msg=canary-logged-5e7d").0, 200);
    }
    let logged = || hosts[0].cli_ok(&["logs", "talker"]);
    crate::support::eventually("the guest's line is in its log", || {
        logged().contains("canary-logged-5e7d")
    });
    hosts[1].cli_ok(&["rm", "kv", "--purge"]);
    hosts[1].cli_ok(&["rm", "talker", "--purge"]);
    for host in &hosts {
        crate::support::eventually("every host compacts its log after the purge", || {
            host.log().contains("data keys destroyed; log compacted")
        });
        assert_eq!(host.get("/other/get?k=kept"), (200, "still-here".into()));
    }
    hosts[0].deploy(guests::HTTP_BASICS, "talker", &[]);
    for host in &hosts {
        let mut lines = String::new();
        crate::support::eventually("the host has the new deploy", || {
            let out = host.cli(&["logs", "talker"]);
            lines = String::from_utf8_lossy(&out.stdout).into_owned();
            out.status.success()
        });
        assert!(!lines.contains("canary-logged-5e7d"), "{lines}");
    }
    hosts[2].deploy(guests::KV_DRAFT2, "kv", &[]);
    for host in &hosts {
        assert_eq!(host.get("/kv/get?k=person"), (200, "<none>".into()));
    }
}

/// A host started without its key-encryption key, or with another than its data directory was
/// written under, refuses to start and says why (never printing a key). Each host has its own:
/// one joining with another key gets the cluster key over mutual TLS and serves the same data.
#[test]
fn a_host_without_its_key_or_with_another_refuses_to_start() {
    let mut host = Host::start();
    host.deploy(guests::KV_DRAFT2, "kv", &[]);
    crate::support::write_kv(&host, "k", "v");
    assert!(host.stop());
    let missing = crate::support::host_command(&host.data)
        .env_remove("DOPPEL_KEY")
        .output()
        .unwrap();
    assert!(!missing.status.success());
    let said = String::from_utf8_lossy(&missing.stderr);
    assert!(said.contains("no encryption key"), "{said}");
    let other = "b3RoZXIga2V5IG9mIHRoaXJ0eS10d28gYnl0ZXMhISE=";
    let wrong = crate::support::host_command(&host.data)
        .env("DOPPEL_KEY", other)
        .output()
        .unwrap();
    assert!(!wrong.status.success());
    let said = String::from_utf8_lossy(&wrong.stderr);
    assert!(said.contains("is not the key"), "{said}");
    assert!(
        !said.contains(other) && !said.contains(crate::support::TEST_KEY),
        "{said}"
    );
    host.restart();
    assert_eq!(host.get("/kv/get?k=k"), (200, "v".into()));
    // A host with a key of its own joins, is handed the cluster key, and serves the data.
    let invitation = host.invite("second", &[]);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut args: Vec<&str> = invitation.iter().map(String::as_str).collect();
    args.extend(["--name", "second"]);
    let mut second = Host::try_spawn(&data, &args, &[("DOPPEL_KEY", other)]).unwrap_or_else(|_| {
        panic!(
            "{}",
            std::fs::read_to_string(data.with_extension("log")).unwrap()
        )
    });
    assert_eq!(second.get("/kv/get?k=k"), (200, "v".into()));
    let cluster_file = std::fs::read(data.join("keys/cluster")).unwrap();
    assert_ne!(
        cluster_file,
        std::fs::read(host.data.join("keys/cluster")).unwrap()
    );
    second.kill();
    let wrong = crate::support::host_command(&data).output().unwrap();
    assert!(
        !wrong.status.success(),
        "the second host started with the first's key"
    );
}

/// The cluster key is handed over the peer port to members only: a member's certificate gets
/// it, a removed host's (stolen from its disk) does not, nor a client without a certificate.
#[test]
fn the_cluster_key_is_handed_to_members_only() {
    let mut hosts = crate::support::cluster(3, &[]);
    let stolen = tempfile::tempdir().unwrap();
    crate::trust::copy_dir(&hosts[2].data.join("tls"), stolen.path());
    let url = format!("https://{}/peer/v1/cluster-key", hosts[0].peer);
    let answer = crate::support::peer_http_as(stolen.path())
        .get(&url)
        .send()
        .unwrap();
    assert_eq!(answer.status().as_u16(), 200, "a member is refused");
    hosts[2].kill();
    hosts[0].cli_ok(&["hosts", "rm", "c"]);
    crate::support::eventually("the removed host's certificate is refused", || {
        crate::support::peer_http_as(stolen.path())
            .get(&url)
            .send()
            .is_ok_and(|r| r.status().as_u16() == 403)
    });
    let anonymous = reqwest::blocking::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap()
        .get(&url)
        .send();
    assert!(
        anonymous.is_err() || anonymous.is_ok_and(|r| !r.status().is_success()),
        "a client without a certificate got the key"
    );
}
