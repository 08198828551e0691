//! Starting real `doppel host` processes on loopback ports and talking to them.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One `doppel host` process with its own data directory.
pub struct Host {
    child: Option<Child>,
    /// The data directory (kept across restarts).
    pub data: PathBuf,
    /// Service traffic address.
    pub listen: SocketAddr,
    /// Admin API address (HTTPS).
    pub admin: SocketAddr,
    /// Peer address (mutual TLS).
    pub peer: SocketAddr,
    /// Keeps the temporary directory alive.
    _dir: Option<tempfile::TempDir>,
}

/// The encryption key every host of these tests is given (`DOPPEL_KEY`), as an operator gives
/// every host of a cluster the same one.
pub const TEST_KEY: &str = "dGVzdHMgb2YgZG9wcGVsOiBub3QgYSByZWFsIGtleSE=";

/// The `doppel` binary cargo built for these tests, or `DOPPEL_BIN` when set: benchmarks that
/// compare two builds alternate between them with it. It has the tests' encryption key.
pub fn doppel() -> Command {
    let mut command = match std::env::var_os("DOPPEL_BIN") {
        Some(bin) => Command::new(bin),
        None => Command::new(env!("CARGO_BIN_EXE_doppel")),
    };
    command.env("DOPPEL_KEY", TEST_KEY);
    command
}

/// `doppel host` on `data` and ports the kernel chooses, to be spawned by hand (for tests that
/// watch how a start fails or where its output goes).
pub fn host_command(data: &Path) -> Command {
    let mut command = doppel();
    command
        .args([
            "host",
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--peer",
            "127.0.0.1:0",
            "--data",
        ])
        .arg(data);
    command
}

/// An HTTP client with a generous timeout (debug builds under parallel tests are slow).
pub fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

impl Host {
    /// A new host on a fresh data directory.
    pub fn start() -> Host {
        Host::start_with(&[])
    }

    /// A new host on a fresh data directory, with extra `doppel host` flags.
    pub fn start_with(extra: &[&str]) -> Host {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let mut host = Host::spawn(&data, extra);
        host._dir = Some(dir);
        host
    }

    /// Starts a host on `data` and waits until it answers. `extra` may name it (`--name`) and
    /// fix its ports (`--listen`, `--admin`); otherwise it is `test` on ports chosen by the kernel.
    pub fn spawn(data: &Path, extra: &[&str]) -> Host {
        Host::spawn_under(&[], data, extra)
    }

    /// Like `spawn`, run under `wrapper` (e.g. `ip netns exec NS`), which must exec the host.
    pub fn spawn_under(wrapper: &[&str], data: &Path, extra: &[&str]) -> Host {
        match Host::try_spawn_under(wrapper, data, extra, &[]) {
            Ok(host) => host,
            Err(status) => panic!(
                "host exited ({status}) before it was ready; log:\n{}",
                std::fs::read_to_string(data.with_extension("log")).unwrap_or_default()
            ),
        }
    }

    /// Like `spawn`, with `env` set; `Err` with its exit status if the process ended before it
    /// was ready (a crash test's host may).
    pub fn try_spawn(
        data: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Host, std::process::ExitStatus> {
        Host::try_spawn_under(&[], data, extra, env)
    }

    fn try_spawn_under(
        wrapper: &[&str],
        data: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Host, std::process::ExitStatus> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(data.with_extension("log"))
            .unwrap();
        let mut command = match wrapper.split_first() {
            None => doppel(),
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(env!("CARGO_BIN_EXE_doppel"));
                c.env("DOPPEL_KEY", TEST_KEY);
                c
            }
        };
        command.arg("host");
        for (flag, default) in [
            ("--name", "test"),
            ("--listen", "127.0.0.1:0"),
            ("--admin", "127.0.0.1:0"),
            ("--peer", "127.0.0.1:0"),
        ] {
            if !extra.contains(&flag) {
                command.args([flag, default]);
            }
        }
        let mut child = command
            .arg("--data")
            .arg(data)
            .args(extra)
            .env("DOPPEL_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("cannot start doppel host");
        // The banner is printed once both servers accept connections: that is readiness.
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let mut sent = false;
            while let Some(Ok(line)) = lines.next() {
                if !sent && line.starts_with("doppel host") {
                    let _ = tx.send(());
                    sent = true;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(()) => break,
                Err(_) => {
                    if let Ok(Some(status)) = child.try_wait() {
                        return Err(status);
                    }
                    if Instant::now() > deadline {
                        let _ = child.kill();
                        panic!(
                            "host did not start; log:\n{}",
                            std::fs::read_to_string(data.with_extension("log")).unwrap_or_default()
                        );
                    }
                }
            }
        }
        let endpoint: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(data.join("host.json")).unwrap())
                .unwrap();
        Ok(Host {
            child: Some(child),
            data: data.to_path_buf(),
            listen: endpoint["listen"].as_str().unwrap().parse().unwrap(),
            admin: endpoint["admin"].as_str().unwrap().parse().unwrap(),
            peer: endpoint["peer"].as_str().unwrap().parse().unwrap(),
            _dir: None,
        })
    }

    /// Waits (up to `limit`) for the process to end on its own; its exit status.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        let child = self.child.as_mut()?;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The host's log (stderr) so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data.with_extension("log")).unwrap_or_default()
    }
    /// `http://listen/path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}/{}", self.listen, path.trim_start_matches('/'))
    }

    /// `https://admin/path`: a URL of the admin API.
    pub fn admin_url(&self, path: &str) -> String {
        format!("https://{}/{}", self.admin, path.trim_start_matches('/'))
    }

    /// An HTTPS client that trusts this host's cluster CA (as the CLI does), for calling the
    /// admin API by hand.
    pub fn admin_http(&self) -> reqwest::blocking::Client {
        let pem = std::fs::read_to_string(self.data.join("tls/ca.pem")).unwrap();
        let roots = doppel_trust::certificates(&pem).unwrap();
        reqwest::blocking::Client::builder()
            .use_preconfigured_tls(doppel_trust::tls::operator_client(&roots).unwrap())
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap()
    }

    /// An invitation for a host called `name` with `labels` (`KEY=VALUE`): the `doppel host`
    /// flags that join with it.
    pub fn invite(&self, name: &str, labels: &[&str]) -> Vec<String> {
        let mut args = vec!["hosts", "invite", name];
        for label in labels {
            args.extend(["--label", label]);
        }
        let line = self.cli_ok(&args);
        // `doppel host --join PEER --token TOKEN`
        let words: Vec<&str> = line.split_whitespace().collect();
        vec![
            "--join".into(),
            words[3].to_string(),
            "--token".into(),
            words[5].to_string(),
        ]
    }

    /// The admin token.
    pub fn token(&self) -> String {
        std::fs::read_to_string(self.data.join("admin-token")).unwrap()
    }

    /// Runs a `doppel` client command against this host (found through its data directory).
    pub fn cli(&self, args: &[&str]) -> Output {
        doppel()
            .args(args)
            .arg("--data")
            .arg(&self.data)
            .output()
            .unwrap()
    }

    /// Runs a client command that must succeed; returns its stdout.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "doppel {args:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs a client command that must fail; returns its stderr.
    pub fn cli_err(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(!out.status.success(), "doppel {args:?} should have failed");
        String::from_utf8(out.stderr).unwrap()
    }

    /// Deploys `file` as `name`.
    pub fn deploy(&self, file: &str, name: &str, extra: &[&str]) {
        let mut args = vec!["deploy", file, "--name", name];
        args.extend_from_slice(extra);
        self.cli_ok(&args);
    }

    /// GET, returning status and body.
    pub fn get(&self, path: &str) -> (u16, String) {
        let r = http().get(self.url(path)).send().unwrap();
        (r.status().as_u16(), r.text().unwrap())
    }

    /// POST `body`, returning status and body.
    pub fn post(&self, path: &str, body: impl Into<reqwest::blocking::Body>) -> (u16, String) {
        let r = http().post(self.url(path)).body(body).send().unwrap();
        (r.status().as_u16(), r.text().unwrap())
    }

    /// SIGKILL: no chance to flush or close anything.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then wait for the process to exit; returns whether it exited successfully.
    pub fn stop(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return false;
        };
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status.success();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("host did not stop within 60 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the host again on the same data directory (after `kill` or `stop`).
    pub fn restart(&mut self) {
        self.restart_with(&[]);
    }

    /// Starts the host again on the same data directory with `extra` flags.
    pub fn restart_with(&mut self, extra: &[&str]) {
        let dir = self._dir.take();
        let mut again = Host::spawn(&self.data, extra);
        again._dir = dir;
        *self = again;
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the host is not running").id()
    }

    /// Whether the process is running (not killed or stopped by the test).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Every host's log, each under its data directory: for a failure message, since the logs go
/// with the test's temporary directory.
pub fn logs(hosts: &[Host]) -> String {
    hosts
        .iter()
        .map(|h| format!("--- {} ---\n{}", h.data.display(), h.log()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Waits until `check` holds, polling; panics with `what` after 30 s.
pub fn eventually(what: &str, check: impl FnMut() -> bool) {
    eventually_within(Duration::from_secs(30), what, check);
}

/// Waits until `check` holds, polling; panics with `what` after `limit`.
pub fn eventually_within(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts `n` hosts named a, b, c…: the first creates the cluster, the others join it. `extra`
/// goes to every host.
pub fn cluster(n: usize, extra: &[&str]) -> Vec<Host> {
    cluster_each(&vec![extra; n])
}

/// Starts one host per entry of `extra` (its own flags), named a, b, c…, in one cluster.
pub fn cluster_each(extra: &[&[&str]]) -> Vec<Host> {
    let mut first_args = vec!["--name", "a"];
    first_args.extend_from_slice(extra[0]);
    let first = Host::start_with(&first_args);
    let mut hosts = vec![first];
    for (i, own) in extra.iter().enumerate().skip(1) {
        hosts.push(join(&hosts[0], &name(i), own));
    }
    hosts
}

/// An HTTPS client presenting the certificate kept in `host`'s data directory (a host's own,
/// read from its `tls/` files) and trusting its CA: the test plays that host towards its peers.
pub fn peer_http(host: &Host) -> reqwest::blocking::Client {
    peer_http_as(&host.data.join("tls"))
}

/// An HTTPS client presenting the certificate `host.pem`/`host.key` in `tls` and trusting the
/// CAs in `tls/ca.pem`.
pub fn peer_http_as(tls: &Path) -> reqwest::blocking::Client {
    let read = |name: &str| std::fs::read_to_string(tls.join(name)).unwrap();
    let key = doppel_trust::tls::certified_key(&read("host.pem"), &read("host.key")).unwrap();
    let roots = doppel_trust::certificates(&read("ca.pem")).unwrap();
    let slot = std::sync::Arc::new(doppel_trust::tls::CredentialSlot::new(key));
    reqwest::blocking::Client::builder()
        .use_preconfigured_tls(
            doppel_trust::tls::peer_client(
                slot,
                doppel_trust::tls::TrustedRoots::new(&roots).unwrap(),
            )
            .unwrap(),
        )
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// Starts a host that joins `member`'s cluster with an invitation for `name`. The `--label`s in
/// `extra` go into the invitation (a host's labels come from its certificate); the other flags to
/// `doppel host`.
pub fn join(member: &Host, name: &str, extra: &[&str]) -> Host {
    let (labels, flags) = split_labels(extra);
    let invitation = member.invite(name, &labels);
    let mut args: Vec<&str> = invitation.iter().map(String::as_str).collect();
    args.extend(flags);
    Host::start_with(&args)
}

/// `--label X` pairs apart from the other flags.
pub fn split_labels<'a>(extra: &[&'a str]) -> (Vec<&'a str>, Vec<&'a str>) {
    let (mut labels, mut flags) = (Vec::new(), Vec::new());
    let mut rest = extra.iter();
    while let Some(flag) = rest.next() {
        if *flag == "--label" {
            labels.extend(rest.next());
        } else {
            flags.push(*flag);
        }
    }
    (labels, flags)
}

/// `threads` threads, each with its own HTTP client (`timeout` a request), calling
/// `write(client, thread, i)` for i = 0, 1, … until `stop` is set.
pub fn writer_threads(
    threads: usize,
    timeout: Duration,
    stop: &Arc<AtomicBool>,
    write: impl Fn(&reqwest::blocking::Client, usize, usize) + Send + Sync + 'static,
) -> Vec<std::thread::JoinHandle<()>> {
    let write = Arc::new(write);
    (0..threads)
        .map(|t| {
            let (stop, write) = (stop.clone(), write.clone());
            std::thread::spawn(move || {
                let client = reqwest::blocking::Client::builder()
                    .timeout(timeout)
                    .build()
                    .unwrap();
                for i in 0.. {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    write(&client, t, i);
                }
            })
        })
        .collect()
}

/// Steady writes through a service's `/set` on several hosts, from several threads, counting
/// what was acknowledged and what failed (any answer but 200, or no answer).
pub struct Load {
    stop: Arc<AtomicBool>,
    count: Arc<AtomicUsize>,
    acked: Arc<Mutex<Vec<(String, String)>>>,
    failed: Arc<Mutex<Vec<String>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    /// `threads` writers, each cycling through `bases` (URLs of a service, e.g.
    /// `http://127.0.0.1:8080/kv`), writing keys tagged `tag`.
    pub fn start(bases: &[String], threads: usize, tag: &str) -> Load {
        let load = Load {
            stop: Arc::default(),
            count: Arc::default(),
            acked: Arc::default(),
            failed: Arc::default(),
            threads: Vec::new(),
        };
        let (count, acked, failed) = (load.count.clone(), load.acked.clone(), load.failed.clone());
        let (bases, tag) = (bases.to_vec(), tag.to_string());
        let threads = writer_threads(
            threads,
            Duration::from_secs(30),
            &load.stop,
            move |client, t, i| {
                let key = format!("{tag}-t{t}-{i}");
                let base = &bases[(t + i) % bases.len()];
                let answer = client
                    .post(format!("{base}/set?k={key}"))
                    .body(key.clone())
                    .send();
                match answer {
                    Ok(r) if r.status().as_u16() == 200 => {
                        acked.lock().unwrap().push((base.clone(), key));
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(r) => failed.lock().unwrap().push(format!(
                        "{base} {key}: {} {}",
                        r.status(),
                        r.text().unwrap_or_default()
                    )),
                    Err(e) => failed.lock().unwrap().push(format!("{base} {key}: {e}")),
                }
            },
        );
        Load { threads, ..load }
    }

    /// Writes acknowledged so far.
    pub fn acknowledged(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// Waits until `n` more writes are acknowledged.
    pub fn wait_for(&self, n: usize) {
        let target = self.acknowledged() + n;
        eventually_within(Duration::from_secs(60), "writes are acknowledged", || {
            self.acknowledged() >= target
        });
    }

    /// Stops the writers; returns the acknowledged writes (service URL, key) and the failures.
    pub fn stop(self) -> (Vec<(String, String)>, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        let acked = std::mem::take(&mut *self.acked.lock().unwrap());
        let failed = std::mem::take(&mut *self.failed.lock().unwrap());
        (acked, failed)
    }
}

/// Checks every acknowledged write (service URL base and key, value = key) is readable through
/// `host`'s service listener, for a service at the same path.
pub fn assert_all_readable(host: &Host, acked: &[(String, String)]) {
    let client = http();
    for (base, key) in acked {
        let path = base.rsplit_once('/').map_or("", |(_, p)| p);
        let url = host.url(&format!("/{path}/get?k={key}"));
        let got = client.get(url).send().unwrap().text().unwrap();
        assert_eq!(
            &got, key,
            "acknowledged write {key} (through {base}) is missing"
        );
    }
}

/// The folder of `host`'s precompiled modules: the one folder under `DATA/cache` (named after the
/// engine that compiled them).
pub fn precompiled_dir(host: &Host) -> PathBuf {
    std::fs::read_dir(host.data.join("cache"))
        .unwrap()
        .next()
        .expect("no precompiled modules yet")
        .unwrap()
        .path()
}

/// This host's cluster identity as its data directory keeps it (`DATA/cluster.json`: id, leader
/// lease).
pub fn identity(host: &Host) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(host.data.join("cluster.json")).unwrap()).unwrap()
}

/// This host's raft id, from its data directory.
pub fn id_of(host: &Host) -> String {
    identity(host)["id"].as_u64().unwrap().to_string()
}

/// `doppel status --json` of `host`.
pub fn status(host: &Host) -> serde_json::Value {
    serde_json::from_str(&host.cli_ok(&["status", "--json"])).unwrap()
}

/// The index in `hosts` of the current leader, asked of a running host.
pub fn leader(hosts: &[Host]) -> usize {
    let asker = hosts.iter().find(|h| h.is_running()).unwrap();
    let mut found = None;
    eventually("a leader is known", || {
        let id = status(asker)["cluster"]["leader"]
            .as_str()
            .map(String::from);
        found = id.and_then(|id| hosts.iter().position(|h| h.is_running() && id_of(h) == id));
        found.is_some()
    });
    found.unwrap()
}

/// Restarts a killed host on its old ports (its peers know it by its peer address).
pub fn restart_in_place(host: &mut Host, name: &str) {
    let (listen, admin, peer) = (
        host.listen.to_string(),
        host.admin.to_string(),
        host.peer.to_string(),
    );
    host.restart_with(&[
        "--name", name, "--listen", &listen, "--admin", &admin, "--peer", &peer,
    ]);
}

/// The name `cluster` gave host `i`.
pub fn name(i: usize) -> String {
    ((b'a' + i as u8) as char).to_string()
}

/// A new backup identity in `dir/key.txt`, made with `doppel backup keygen`; its recipient.
pub fn keygen(host: &Host, dir: &Path) -> (PathBuf, String) {
    let key = dir.join("key.txt");
    let out = host.cli_ok(&["backup", "keygen", key.to_str().unwrap()]);
    let recipient = out.lines().last().unwrap().trim().to_string();
    assert!(recipient.starts_with("age1"), "{out}");
    (key, recipient)
}

/// `host`'s cluster ships to a new target `offsite`, the directory `dir/offsite`, encrypted to
/// a new identity in `dir/key.txt`: that identity's file and the target's URL.
pub fn backup_offsite(host: &Host, dir: &Path) -> (PathBuf, String) {
    let (key, recipient) = keygen(host, dir);
    let url = format!("file://{}", dir.join("offsite").display());
    host.cli_ok(&["backup", "add", "offsite", &url, "--recipient", &recipient]);
    (key, url)
}

/// The services' state hash and the index it stands at, as `host` answers it.
pub fn state_hash(host: &Host) -> (String, u64) {
    let v: serde_json::Value =
        serde_json::from_str(&host.cli_ok(&["status", "--hash", "--json"])).unwrap();
    (
        v["hash"].as_str().unwrap().to_string(),
        v["index"].as_u64().unwrap(),
    )
}

/// Stores `value` under `key` through the test service deployed as `kv`.
pub fn write_kv(host: &Host, key: &str, value: &str) {
    let (status, body) = host.post(&format!("/kv/set?k={key}"), value.to_string());
    assert_eq!(status, 200, "{body}");
}

/// Installs (if missing) one of the servers the tests start, with `tests/install-servers.sh`
/// (`s3`, `prometheus`, `chromium`); answers the path of its program.
pub fn install_server(name: &str) -> String {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/install-servers.sh"
    );
    let out = Command::new(script).arg(name).output().unwrap();
    assert!(
        out.status.success(),
        "cannot install {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A field of `/proc/PID/status` counted in KiB (`VmRSS`, `VmHWM`…), in bytes.
pub fn proc_status_bytes(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"));
    kib << 10
}
