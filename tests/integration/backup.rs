//! The backup copy outside the cluster: shipped continuously and encrypted, restored into a new
//! cluster with the same state, restored to just before a ransomware-style purge, refused when
//! an object is missing, altered or reordered, and shipped on by the next leader after the
//! leader is SIGKILLed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use doppel_guests as guests;

use crate::support::{
    Host, cluster, eventually, eventually_within, http, keygen, leader, state_hash, write_kv,
};

/// Waits until the target `name` has shipped everything `host` has applied so far.
fn wait_shipped(host: &Host, name: &str) {
    let (_, index) = state_hash(host);
    eventually_within(
        std::time::Duration::from_secs(60),
        "the backup has shipped every applied entry",
        || {
            let all: serde_json::Value =
                serde_json::from_str(&host.cli_ok(&["backup", "ls", "--json"])).unwrap();
            let target = all
                .as_array()
                .unwrap()
                .iter()
                .find(|t| t["target"]["name"] == name)
                .cloned()
                .unwrap_or_default();
            assert!(
                target["status"]["error"].is_null(),
                "shipping failed: {target}"
            );
            target["status"]["shipped_index"]
                .as_u64()
                .is_some_and(|shipped| shipped >= index)
        },
    );
}

/// Every file under `dir`, by relative path, with its bytes.
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let rel = path.strip_prefix(dir).unwrap().display().to_string();
                out.insert(rel, std::fs::read(&path).unwrap());
            }
        }
    }
    out
}

/// `doppel restore` as a separate process; its output.
fn restore(url: &str, key: &Path, data: &Path, extra: &[&str]) -> std::process::Output {
    restore_in(&[], url, key, data, extra)
}

/// `doppel restore` with `env` added to its environment (a store's credentials).
fn restore_in(
    env: &[(&str, String)],
    url: &str,
    key: &Path,
    data: &Path,
    extra: &[&str],
) -> std::process::Output {
    crate::support::doppel()
        .args(["restore", url, "--identity"])
        .arg(key)
        .arg("--data")
        .arg(data)
        .args(extra)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .unwrap()
}

fn restore_ok(url: &str, key: &Path, data: &Path, extra: &[&str]) -> serde_json::Value {
    restore_ok_in(&[], url, key, data, extra)
}

fn restore_ok_in(
    env: &[(&str, String)],
    url: &str,
    key: &Path,
    data: &Path,
    extra: &[&str],
) -> serde_json::Value {
    let mut args = extra.to_vec();
    args.push("--json");
    let out = restore_in(env, url, key, data, &args);
    assert!(
        out.status.success(),
        "restore failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn restore_err(url: &str, key: &Path, data: &Path) -> String {
    let out = restore(url, key, data, &[]);
    assert!(!out.status.success(), "restore should have failed");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A backup restored into a new data directory starts a new one-host cluster with the same
/// services and data (the same state hash), while what lies in the target reveals none of the
/// records (it is encrypted to the operator's key). Then an operator credential purges the
/// service and overwrites data, as ransomware would: nothing in the target is changed or
/// deleted, and a restore to just before the purge's audit entry brings every earlier write
/// back.
#[test]
fn a_restored_backup_is_the_same_state_and_undoes_a_purge() {
    let host = Host::start();
    let work = tempfile::tempdir().unwrap();
    host.deploy(guests::KV_DRAFT2, "kv", &[]);
    host.deploy(guests::HTTP_020, "hello", &[]);
    let (key, recipient) = keygen(&host, work.path());
    let target = work.path().join("offsite");
    let url = format!("file://{}", target.display());
    // A recipient that is not one, a URL with credentials in it: refused, nothing stored.
    let bad = host.cli_err(&["backup", "add", "x", &url, "--recipient", "age1nope"]);
    assert!(bad.contains("not an age recipient"), "{bad}");
    let bad = host.cli_err(&[
        "backup",
        "add",
        "x",
        "s3://AKIA:secret@bucket/x",
        "--recipient",
        &recipient,
    ]);
    assert!(bad.contains("must not carry credentials"), "{bad}");
    assert!(!bad.contains("secret"), "{bad}");
    // A directory cannot lock objects for a retention period.
    let bad = host.cli_err(&[
        "backup",
        "add",
        "x",
        &url,
        "--recipient",
        &recipient,
        "--retain",
        "30d",
    ]);
    assert!(bad.contains("cannot lock objects"), "{bad}");
    // A stolen operator credential cannot point the whole state at the thief's own key.
    let operator = host.cli_ok(&["tokens", "create", "mallory", "--role", "operator"]);
    let stolen = operator.trim();
    let thief = work.path().join("thief");
    let refused = host.cli_err(&[
        "backup",
        "add",
        "exfil",
        &format!("file://{}", thief.display()),
        "--recipient",
        &recipient,
        "--token",
        stolen,
    ]);
    assert!(refused.contains("needs an admin"), "{refused}");
    assert!(!thief.exists(), "nothing was shipped to the thief");
    host.cli_ok(&["backup", "add", "offsite", &url, "--recipient", &recipient]);
    let refused = host.cli_err(&["backup", "rm", "offsite", "--token", stolen]);
    assert!(refused.contains("needs an admin"), "{refused}");
    let again = host.cli_err(&["backup", "add", "offsite", &url, "--recipient", &recipient]);
    assert!(again.contains("exists already"), "{again}");
    // The first snapshot, then the writes in segments after it.
    wait_shipped(&host, "offsite");
    for i in 0..40 {
        write_kv(
            &host,
            &format!("citizen-{i}"),
            &format!("canary-record-{i}"),
        );
    }
    wait_shipped(&host, "offsite");
    let (before, _) = state_hash(&host);
    let shipped = files(&target);
    assert!(
        shipped.keys().any(|f| f.contains(".snapshot-")),
        "{:?}",
        shipped.keys()
    );
    assert!(
        shipped.keys().any(|f| f.contains(".segment-")),
        "{:?}",
        shipped.keys()
    );
    for (name, bytes) in &shipped {
        let text = String::from_utf8_lossy(bytes);
        assert!(
            !text.contains("canary-record"),
            "{name} holds a record in clear"
        );
        assert!(!text.contains("citizen-1"), "{name} holds a key in clear");
    }
    let status = host.cli_ok(&["status"]);
    assert!(status.contains("offsite"), "{status}");

    // Restore the latest state into a new directory and start it.
    let restored_dir = work.path().join("restored");
    let restored = restore_ok(&url, &key, &restored_dir, &[]);
    assert_eq!(restored["hash"], before.as_str(), "{restored}");
    let services = restored["services"].as_array().unwrap();
    assert_eq!(services.len(), 2, "{restored}");
    let twin = Host::spawn(&restored_dir, &[]);
    assert_eq!(state_hash(&twin).0, before);
    assert_eq!(twin.get("/kv/get?k=citizen-7").1, "canary-record-7");
    assert_eq!(twin.get("/hello/").0, 200);
    // A restore never lands on a directory that holds a host.
    let busy = restore_err(&url, &key, &restored_dir);
    assert!(busy.contains("holds a host already"), "{busy}");
    drop(twin);

    // The attack: purge the service, overwrite what another service keeps.
    host.cli_ok(&["rm", "kv", "--purge"]);
    host.deploy(guests::KV_DRAFT2, "kv", &[]);
    write_kv(&host, "citizen-1", "encrypted-by-attacker");
    wait_shipped(&host, "offsite");
    let after = files(&target);
    for (name, bytes) in &shipped {
        assert_eq!(
            after.get(name),
            Some(bytes),
            "{name} was changed or deleted"
        );
    }
    let audit: serde_json::Value =
        serde_json::from_str(&host.cli_ok(&["audit", "--json"])).unwrap();
    let purge = audit
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "DELETE /v1/services/kv")
        .unwrap_or_else(|| panic!("no purge in the audit trail: {audit}"));
    let seq = purge["seq"].as_u64().unwrap().to_string();

    let undone_dir = work.path().join("undone");
    let undone = restore_ok(&url, &key, &undone_dir, &["--before-event", &seq]);
    assert_eq!(undone["hash"], before.as_str(), "{undone}");
    let twin = Host::spawn(&undone_dir, &[]);
    for i in 0..40 {
        assert_eq!(
            twin.get(&format!("/kv/get?k=citizen-{i}")).1,
            format!("canary-record-{i}")
        );
    }
    // The new cluster's audit trail carries the old one's, purge excluded.
    let trail = twin.cli_ok(&["audit"]);
    assert!(trail.contains("PUT /v1/services/kv"), "{trail}");

    // Another identity cannot read the backup.
    let (other, _) = keygen(&host, &work.path().join("other-key").tap_mkdir());
    let refused = restore_err(&url, &other, &work.path().join("nope"));
    assert!(refused.contains("cannot decrypt"), "{refused}");
}

trait TapMkdir {
    fn tap_mkdir(self) -> Self;
}

impl TapMkdir for PathBuf {
    fn tap_mkdir(self) -> Self {
        std::fs::create_dir_all(&self).unwrap();
        self
    }
}

/// Copies the backup at `from` to a new directory and lets `damage` change it.
fn damaged(from: &Path, to: &Path, damage: impl FnOnce(&Path)) -> String {
    for (name, bytes) in files(from) {
        let path = to.join(&name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }
    damage(to);
    format!("file://{}", to.display())
}

/// The names of the objects (or manifests) in `dir` of a backup, sorted.
fn names(backup: &Path, dir: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(backup.join(dir))
        .unwrap()
        .map(|e| format!("{dir}/{}", e.unwrap().file_name().to_string_lossy()))
        .collect();
    names.sort();
    names
}

/// A backup with an object removed, altered or put in another's place, or a manifest removed
/// or reordered, is refused at restore with an error naming the object; the intact copy
/// restores.
#[test]
fn a_missing_altered_or_reordered_object_is_named_and_pruning_keeps_what_restores() {
    let work = tempfile::tempdir().unwrap();
    // A snapshot every few entries, so that there is something to prune.
    let host = Host::try_spawn(
        &work.path().join("data"),
        &[],
        &[("DOPPEL_BACKUP_SNAPSHOT_ENTRIES", "8")],
    )
    .unwrap();
    host.deploy(guests::KV_DRAFT2, "kv", &[]);
    let (key, recipient) = keygen(&host, work.path());
    let target = work.path().join("offsite");
    let url = format!("file://{}", target.display());
    host.cli_ok(&["backup", "add", "offsite", &url, "--recipient", &recipient]);
    // Several rounds, each shipped before the next: several segments.
    for round in 0..4 {
        for i in 0..5 {
            write_kv(&host, &format!("r{round}-{i}"), "v");
        }
        wait_shipped(&host, "offsite");
    }
    let objects = names(&target, "objects");
    let manifests = names(&target, "manifests");
    assert!(manifests.len() >= 4, "{manifests:?}");
    let segment = objects
        .iter()
        .find(|o| o.contains(".segment-"))
        .unwrap()
        .clone();

    type Case = (&'static str, Box<dyn FnOnce(&Path)>, String);
    let cases: Vec<Case> = vec![
        (
            "removed object",
            Box::new({
                let segment = segment.clone();
                move |d: &Path| std::fs::remove_file(d.join(&segment)).unwrap()
            }),
            format!("{segment} is missing"),
        ),
        (
            "altered object",
            Box::new({
                let segment = segment.clone();
                move |d: &Path| {
                    let path = d.join(&segment);
                    let mut bytes = std::fs::read(&path).unwrap();
                    let last = bytes.len() - 1;
                    bytes[last] ^= 1;
                    std::fs::write(&path, bytes).unwrap();
                }
            }),
            format!("{segment} was altered"),
        ),
        (
            "removed manifest",
            Box::new({
                let m = manifests[1].clone();
                move |d: &Path| std::fs::remove_file(d.join(&m)).unwrap()
            }),
            format!("{} is missing", manifests[1]),
        ),
        (
            "reordered manifests",
            Box::new({
                let (a, b) = (manifests[1].clone(), manifests[2].clone());
                move |d: &Path| {
                    let tmp = d.join("swap");
                    std::fs::rename(d.join(&a), &tmp).unwrap();
                    std::fs::rename(d.join(&b), d.join(&a)).unwrap();
                    std::fs::rename(&tmp, d.join(&b)).unwrap();
                }
            }),
            manifests[1].clone(),
        ),
    ];
    for (i, (what, damage, expected)) in cases.into_iter().enumerate() {
        let copy = work.path().join(format!("copy-{i}"));
        let copy_url = damaged(&target, &copy, damage);
        let err = restore_err(&copy_url, &key, &work.path().join(format!("r{i}")));
        assert!(
            err.contains(&expected),
            "{what}: expected {expected:?} in:\n{err}"
        );
        println!("{what}: {}", err.lines().last().unwrap_or_default());
    }
    let (now, _) = state_hash(&host);
    let whole = restore_ok(&url, &key, &work.path().join("whole"), &[]);
    assert_eq!(whole["hash"], now.as_str());

    // Pruning: a dry run deletes nothing; a prune keeping nothing older than now deletes all
    // before the last snapshot, and the backup still restores to the same state.
    let snapshots = objects.iter().filter(|o| o.contains(".snapshot-")).count();
    assert!(snapshots >= 2, "{objects:?}");
    let before = files(&target);
    let dry = host.cli_ok(&["backup", "prune", &url, "--keep", "0s", "--dry-run"]);
    assert!(dry.contains("would delete"), "{dry}");
    assert_eq!(files(&target), before);
    let pruned = host.cli_ok(&["backup", "prune", &url, "--keep", "0s"]);
    assert!(pruned.contains("deleted"), "{pruned}");
    assert!(files(&target).len() < before.len());
    let after = restore_ok(&url, &key, &work.path().join("after-prune"), &[]);
    assert_eq!(after["hash"], now.as_str());
    // The cluster goes on shipping after the prune.
    write_kv(&host, "after-prune", "v");
    wait_shipped(&host, "offsite");
}

/// Shipping goes on from the next leader when the leader is SIGKILLed: every write acknowledged
/// before and after the kill is in a restore, and the chain has no gap.
#[test]
fn shipping_is_handed_over_when_the_leader_dies() {
    let mut hosts = cluster(3, &[]);
    let work = tempfile::tempdir().unwrap();
    hosts[0].deploy(guests::KV_DRAFT2, "kv", &[]);
    let (key, recipient) = keygen(&hosts[0], work.path());
    let url = format!("file://{}", work.path().join("offsite").display());
    hosts[0].cli_ok(&["backup", "add", "offsite", &url, "--recipient", &recipient]);
    let first = leader(&hosts);
    let client = http();
    let mut written = Vec::new();
    for i in 0..20 {
        let base = hosts[first].url("/kv");
        let r = client
            .post(format!("{base}/set?k=before-{i}"))
            .body("x")
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        written.push(format!("before-{i}"));
    }
    wait_shipped(&hosts[first], "offsite");
    hosts[first].kill();
    let survivor = (first + 1) % 3;
    let next = leader(&hosts);
    assert_ne!(next, first);
    eventually("writes are accepted again", || {
        client
            .post(hosts[survivor].url("/kv/set?k=after-0"))
            .body("x")
            .send()
            .is_ok_and(|r| r.status().as_u16() == 200)
    });
    written.push("after-0".into());
    for i in 1..20 {
        write_kv(&hosts[survivor], &format!("after-{i}"), "x");
        written.push(format!("after-{i}"));
    }
    wait_shipped(&hosts[next], "offsite");
    let dir = work.path().join("restored");
    restore_ok(&url, &key, &dir, &[]);
    let twin = Host::spawn(&dir, &[]);
    for k in &written {
        assert_eq!(
            twin.get(&format!("/kv/get?k={k}")).1,
            "x",
            "{k} is not in the backup"
        );
    }
}

/// An S3-compatible server (s3s-fs, installed by `tests/install-servers.sh`) on a loopback
/// port, serving `root`; stopped when dropped.
struct S3Server {
    child: std::process::Child,
    port: u16,
}

impl S3Server {
    const KEY: &str = "doppel-test-access";
    const SECRET: &str = "doppel-test-secret-canary";

    fn start(root: &Path) -> S3Server {
        let bin = crate::support::install_server("s3");
        // A port the kernel had free a moment ago; s3s-fs takes no port 0.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = std::process::Command::new(bin)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", Self::KEY, "--secret-key", Self::SECRET])
            .arg(root)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        eventually("the S3 server accepts connections", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        S3Server { child, port }
    }

    /// What a host and the CLI need in their environment to use it.
    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", Self::KEY.to_string()),
            ("AWS_SECRET_ACCESS_KEY", Self::SECRET.to_string()),
            (
                "AWS_ENDPOINT_URL",
                format!("http://127.0.0.1:{}", self.port),
            ),
            ("AWS_REGION", "us-east-1".to_string()),
            ("AWS_ALLOW_HTTP", "true".to_string()),
        ]
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The same backup and restore through an S3-compatible store: shipped, restored to the same
/// state hash, and the store's credentials (given only in the environment) appear in no answer.
#[test]
fn an_s3_compatible_store_holds_the_backup() {
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("s3");
    std::fs::create_dir_all(root.join("state-backups")).unwrap();
    let s3 = S3Server::start(&root);
    let env = s3.env();
    let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let host = Host::try_spawn(&work.path().join("data"), &[], &env_refs).unwrap();
    host.deploy(guests::KV_DRAFT2, "kv", &[]);
    let (key, recipient) = keygen(&host, work.path());
    let url = "s3://state-backups/doppel";
    host.cli_ok(&["backup", "add", "s3", url, "--recipient", &recipient]);
    wait_shipped(&host, "s3");
    for i in 0..20 {
        write_kv(&host, &format!("citizen-{i}"), &format!("record-{i}"));
    }
    wait_shipped(&host, "s3");
    let listed = host.cli_ok(&["backup", "ls", "--json"]);
    assert!(!listed.contains(S3Server::SECRET), "{listed}");
    assert!(!host.log().contains(S3Server::SECRET));
    let stored = files(&root.join("state-backups"));
    assert!(
        stored.keys().any(|k| k.contains("manifests/")),
        "{:?}",
        stored.keys()
    );

    let restored = restore_ok_in(&env, url, &key, &work.path().join("restored"), &[]);
    assert_eq!(restored["hash"], state_hash(&host).0.as_str());
    // Without the store's credentials, nothing is read.
    let refused = restore_err(url, &key, &work.path().join("no-credentials"));
    assert!(refused.contains("cannot restore from"), "{refused}");
}

/// `doppel drill` restores a backup into a sandbox, starts a host on it, calls every service at
/// its probe path and compares the state hash: it passes on a good backup, with its figures in
/// the JSON and the Markdown report; on a backup with one altered object it exits non-zero and
/// the report names the object.
#[test]
fn a_drill_passes_on_a_good_backup_and_fails_on_a_tampered_one() {
    let host = Host::start();
    let work = tempfile::tempdir().unwrap();
    host.deploy(guests::KV_DRAFT2, "kv", &["--probe", "/get?k=citizen-3"]);
    host.deploy(guests::HTTP_020, "hello", &[]);
    let bad = host.cli_err(&[
        "deploy",
        guests::HTTP_020,
        "--name",
        "x",
        "--probe",
        "health",
    ]);
    assert!(bad.contains("must start with '/'"), "{bad}");
    let (key, recipient) = keygen(&host, work.path());
    let target = work.path().join("offsite");
    let url = format!("file://{}", target.display());
    host.cli_ok(&["backup", "add", "offsite", &url, "--recipient", &recipient]);
    for i in 0..10 {
        write_kv(&host, &format!("citizen-{i}"), &format!("record-{i}"));
    }
    wait_shipped(&host, "offsite");
    let (hash, _) = state_hash(&host);

    let report = work.path().join("drill.md");
    let out = crate::support::doppel()
        .args(["drill", &url, "--identity"])
        .arg(&key)
        .arg("--report")
        .arg(&report)
        .arg("--json")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let drill: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(drill["passed"], true, "{drill}");
    assert_eq!(drill["restored_hash"], hash.as_str(), "{drill}");
    assert_eq!(drill["host_hash"], hash.as_str(), "{drill}");
    assert!(drill["rto_ms"].as_u64().unwrap() >= drill["restore_ms"].as_u64().unwrap());
    assert!(drill["rpo_ms"].is_u64(), "{drill}");
    let services = drill["services"].as_array().unwrap();
    assert_eq!(services.len(), 2, "{drill}");
    let kv = services.iter().find(|s| s["name"] == "kv").unwrap();
    assert_eq!(kv["probe"], "/get?k=citizen-3");
    assert_eq!(kv["status"], 200, "{drill}");
    let markdown = std::fs::read_to_string(&report).unwrap();
    assert!(markdown.contains("restore drill: PASSED"), "{markdown}");
    assert!(markdown.contains("| RTO |"), "{markdown}");
    assert!(!markdown.contains("record-3"), "the report holds no data");

    // One altered object: the drill fails and says which.
    let objects = names(&target, "objects");
    let snapshot = objects.iter().find(|o| o.contains(".snapshot-")).unwrap();
    let copy_url = damaged(&target, &work.path().join("tampered"), |d: &Path| {
        let path = d.join(snapshot);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[0] ^= 1;
        std::fs::write(&path, bytes).unwrap();
    });
    let report = work.path().join("tampered.md");
    let out = crate::support::doppel()
        .args(["drill", &copy_url, "--identity"])
        .arg(&key)
        .arg("--report")
        .arg(&report)
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "a tampered backup must fail the drill"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("the drill failed"), "{stderr}");
    let markdown = std::fs::read_to_string(&report).unwrap();
    assert!(markdown.contains("restore drill: FAILED"), "{markdown}");
    assert!(
        markdown.contains(&format!("{snapshot} was altered")),
        "{markdown}"
    );
}
