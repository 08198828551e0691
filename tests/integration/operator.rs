//! The operator's surface: first start, the CLI's commands, the admin API's auth, bad deploys.

use std::os::unix::fs::PermissionsExt;

use doppel_guests as guests;

use crate::support::{Host, doppel};

#[test]
fn first_start_creates_a_private_token_and_serves_nothing_yet() {
    let host = Host::start();
    let mode = std::fs::metadata(host.data.join("admin-token"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(
        mode & 0o777,
        0o600,
        "the token must be readable by its owner only"
    );
    let mode = std::fs::metadata(&host.data).unwrap().permissions().mode();
    assert_eq!(mode & 0o077, 0, "the data directory must be private");
    assert!(host.cli_ok(&["ls"]).contains("No services deployed"));
    assert_eq!(host.cli_ok(&["ls", "--json"]).trim(), "[]");
    let (status, body) = host.get("/");
    assert_eq!(status, 404);
    assert!(body.contains("doppel host"));
    let (status, body) = host.get("/nothing/here");
    assert_eq!(status, 404);
    assert!(body.contains("no service named \"nothing\""));
}

#[test]
fn admin_api_refuses_a_wrong_token_and_never_echoes_it() {
    let host = Host::start();
    let url = host.admin_url("/v1/services");
    let http = host.admin_http();
    let none = http.get(&url).send().unwrap();
    assert_eq!(none.status().as_u16(), 401);
    let guess = "0123456789abcdef-not-the-token";
    let wrong = http.get(&url).bearer_auth(guess).send().unwrap();
    assert_eq!(wrong.status().as_u16(), 401);
    assert!(!wrong.text().unwrap().contains(guess));
    let right = http.get(&url).bearer_auth(host.token()).send().unwrap();
    assert_eq!(right.status().as_u16(), 200);
    // The CLI with a wrong token says what to do.
    let ca = host.data.join("tls/ca.pem");
    let out = doppel()
        .args([
            "ls",
            "--admin",
            &format!("https://{}", host.admin),
            "--token",
            guess,
            "--ca",
            ca.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("wrong credential"), "{stderr}");
    assert!(!stderr.contains(guess));
}

#[test]
fn client_without_a_host_says_how_to_find_one() {
    let dir = tempfile::tempdir().unwrap();
    let out = doppel()
        .args(["ls", "--data"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("Start one with `doppel host`"));
}

#[test]
fn a_client_whose_reader_goes_away_ends_quietly() {
    let host = Host::start();
    // `doppel status | head -0`: the read end is closed before the client writes a line.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = doppel()
        .args(["status", "--data"])
        .arg(&host.data)
        .stdout(writer)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    // Ends with 141, the status a shell gives a writer that SIGPIPE ended (`head`'s other
    // writers), and no error of its own. The signal itself stays ignored: a host that refuses an
    // upload before reading it closes the connection, and the CLI must live to print why.
    assert_eq!(out.status.code(), Some(141), "{stderr}");
    assert!(stderr.is_empty(), "{stderr}");
}

#[test]
fn a_host_whose_output_goes_nowhere_goes_on_serving() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // `doppel host 2>&1 | head -0`: nobody reads the banner or the log lines.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let mut host = crate::support::host_command(&data)
        .stdout(writer.try_clone().unwrap())
        .stderr(writer)
        .spawn()
        .unwrap();
    let ls = || doppel().args(["ls", "--data"]).arg(&data).output().unwrap();
    crate::support::eventually("the host answers", || {
        assert!(host.try_wait().unwrap().is_none(), "the host stopped");
        ls().status.success()
    });
    // Deploying makes it log; it must still be there afterwards.
    let deploy = doppel()
        .args(["deploy", guests::HELLO, "--name", "hello", "--data"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        deploy.status.success(),
        "{}",
        String::from_utf8_lossy(&deploy.stderr)
    );
    assert!(ls().status.success());
    assert!(host.try_wait().unwrap().is_none(), "the host stopped");
    let _ = host.kill();
    let _ = host.wait();
}

#[test]
fn deploy_ls_logs_rm() {
    let host = Host::start();
    host.deploy(
        guests::HTTP_BASICS,
        "basics",
        &["--config", "greeting=hallo"],
    );
    let listed = host.cli_ok(&["ls"]);
    assert!(
        listed.contains("basics") && listed.contains("sha256:"),
        "{listed}"
    );
    assert_eq!(
        host.get("/basics/config?key=greeting"),
        (200, "hallo".into())
    );
    host.get("/basics/log?msg=hello-log");
    let ls: serde_json::Value = serde_json::from_str(&host.cli_ok(&["ls", "--json"])).unwrap();
    assert_eq!(ls[0]["name"], "basics");
    assert_eq!(ls[0]["version"], 1);
    assert!(ls[0]["requests"].as_u64().unwrap() >= 2);
    assert_eq!(ls[0]["config_keys"][0], "greeting");
    let logs = host.cli_ok(&["logs", "basics"]);
    assert!(logs.contains("stdout to stdout: hello-log"), "{logs}");
    assert!(logs.contains("stderr to stderr: hello-log"), "{logs}");
    let json_logs = host.cli_ok(&["logs", "basics", "--json", "--tail", "1"]);
    let last: serde_json::Value = serde_json::from_str(json_logs.trim()).unwrap();
    assert_eq!(last["stream"], "stderr");

    let removed = host.cli_ok(&["rm", "basics"]);
    assert!(removed.contains("data"), "{removed}");
    assert_eq!(host.get("/basics/config?key=greeting").0, 404);
    assert!(host.cli_err(&["rm", "basics"]).contains("no service named"));
}

#[test]
fn logs_follow_streams_new_lines() {
    let host = Host::start();
    host.deploy(guests::HTTP_BASICS, "basics", &[]);
    let mut follow = doppel()
        .args(["logs", "basics", "--follow", "--data"])
        .arg(&host.data)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = follow.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    // Keep logging until the follower has seen a line written after it started.
    let mut seen = false;
    for i in 0..200 {
        host.get(&format!("/basics/log?msg=live-{i}"));
        while let Ok(line) = rx.recv_timeout(std::time::Duration::from_millis(50)) {
            seen |= line.contains("live-");
        }
        if seen {
            break;
        }
    }
    let _ = follow.kill();
    let _ = follow.wait();
    assert!(seen, "logs --follow printed no new line");
}

#[test]
fn kv_commands_inspect_and_change_state() {
    let host = Host::start();
    host.deploy(guests::KV_DRAFT2, "kv", &[]);
    assert_eq!(host.post("/kv/set?k=greeting", "hello").0, 200);
    assert_eq!(host.post("/kv/set?b=audit&k=e1", "x").0, 200);
    assert_eq!(
        host.cli_ok(&["kv", "ls", "--service", "kv"]),
        "audit\ndefault\n"
    );
    assert_eq!(
        host.cli_ok(&["kv", "ls", "--service", "kv", "--bucket", "default"]),
        "greeting\n"
    );
    assert_eq!(
        host.cli_ok(&["kv", "get", "--service", "kv", "greeting"]),
        "hello"
    );
    host.cli_ok(&[
        "kv",
        "put",
        "--service",
        "kv",
        "greeting",
        "changed by operator",
    ]);
    assert_eq!(host.get("/kv/get?k=greeting").1, "changed by operator");
    host.cli_ok(&["kv", "rm", "--service", "kv", "greeting"]);
    assert_eq!(host.get("/kv/get?k=greeting").1, "<none>");
    assert!(
        host.cli_err(&["kv", "get", "--service", "kv", "greeting"])
            .contains("no key")
    );
    assert!(
        host.cli_err(&["kv", "ls", "--service", "nope"])
            .contains("no service named")
    );
}

/// Every kind of bad deploy is refused with a message saying what is wrong, stores nothing, and
/// leaves running services alone.
#[test]
fn bad_deploys_are_refused_and_change_nothing() {
    let host = Host::start_with(&["--max-module-size", "200KiB"]);
    host.deploy(guests::HTTP_020, "steady", &[]);
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("notes.wasm");
    std::fs::write(&text, "these are not the bytes you are looking for").unwrap();
    let core = dir.path().join("core.wasm");
    // The smallest valid core module: magic, version 1, no sections.
    std::fs::write(&core, b"\0asm\x01\0\0\0").unwrap();
    let garbage = dir.path().join("garbage.wasm");
    std::fs::write(&garbage, b"\0asm\x0d\0\x01\0\xff\xff\xff").unwrap();

    let cases: &[(&str, &str, &str)] = &[
        (text.to_str().unwrap(), "text", "not WebAssembly"),
        (
            core.to_str().unwrap(),
            "core",
            "core WebAssembly module, not a component",
        ),
        (
            garbage.to_str().unwrap(),
            "garbage",
            "the component is invalid",
        ),
        (
            guests::UNSUPPORTED_IMPORT,
            "unsupported",
            "test:nope/teleport",
        ),
        (
            guests::NO_HANDLER,
            "nohandler",
            "does not export wasi:http/incoming-handler",
        ),
        (
            guests::HTTP_BASICS,
            "toolarge",
            "larger than this host accepts",
        ),
        (guests::HTTP_020, "Bad_Name", "invalid service name"),
        (
            "/no/such/file.wasm",
            "missing",
            "cannot read /no/such/file.wasm",
        ),
    ];
    for (file, name, expected) in cases {
        let stderr = host.cli_err(&["deploy", file, "--name", name]);
        assert!(
            stderr.contains(expected),
            "deploy {name}: expected {expected:?} in:\n{stderr}"
        );
    }
    let stderr = host.cli_err(&[
        "deploy",
        guests::HTTP_020,
        "--name",
        "x",
        "--max-memory",
        "lots",
    ]);
    assert!(stderr.contains("not a size"), "{stderr}");
    let stderr = host.cli_err(&[
        "deploy",
        guests::HTTP_020,
        "--name",
        "x",
        "--max-memory",
        "64GiB",
    ]);
    assert!(stderr.contains("--max-memory must be between"), "{stderr}");

    let ls: serde_json::Value = serde_json::from_str(&host.cli_ok(&["ls", "--json"])).unwrap();
    assert_eq!(
        ls.as_array().unwrap().len(),
        1,
        "only the steady service exists: {ls}"
    );
    assert_eq!(host.get("/steady/").0, 200);
    // Nothing was stored: the only module on disk is the steady service's.
    let cache = crate::support::precompiled_dir(&host);
    let cached: Vec<_> = std::fs::read_dir(cache).unwrap().collect();
    assert_eq!(cached.len(), 1, "precompiled copies: {cached:?}");
}

/// `doppel new` makes a crate that builds into a component that deploys and answers.
#[test]
fn new_service_builds_deploys_and_answers() {
    let dir = tempfile::tempdir().unwrap();
    let out = doppel()
        .args(["new", "town-hall", "--path"])
        .arg(dir.path().join("town-hall"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("cargo build --release"), "{stdout}");
    let again = doppel()
        .args(["new", "town-hall", "--path"])
        .arg(dir.path().join("town-hall"))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));

    // Share the guests' target directory so the SDK's dependencies are already built.
    let target = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/guests");
    let build = std::process::Command::new(env!("CARGO"))
        .args(["build", "--release", "--quiet", "--offline"])
        .current_dir(dir.path().join("town-hall"))
        .env("CARGO_TARGET_DIR", &target)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .output()
        .unwrap();
    assert!(
        build.status.success(),
        "{}",
        String::from_utf8_lossy(&build.stderr)
    );
    let wasm = target.join("wasm32-wasip2/release/town_hall.wasm");
    let host = Host::start();
    host.deploy(
        wasm.to_str().unwrap(),
        "town-hall",
        &["--config", "greeting=Servus"],
    );
    assert_eq!(
        host.get("/town-hall/hello/world"),
        (200, "Servus, world!\n".into())
    );
    let (status, body) = host.post("/town-hall/visits/front", "");
    assert_eq!(status, 200);
    assert!(body.contains("\"count\":1"), "{body}");
}

/// An upload whose deploy never came (the client died between the two calls) does not linger:
/// the next start removes it.
#[test]
fn orphan_uploads_are_removed_at_start() {
    let mut host = Host::start();
    host.deploy(guests::HTTP_020, "kept", &[]);
    let bytes = std::fs::read(guests::HELLO).unwrap();
    let uploaded = host
        .admin_http()
        .post(host.admin_url("/v1/modules"))
        .bearer_auth(host.token())
        .body(bytes)
        .send()
        .unwrap();
    assert_eq!(uploaded.status().as_u16(), 201);
    let cache_dir = crate::support::precompiled_dir(&host);
    let count = || std::fs::read_dir(&cache_dir).unwrap().count();
    assert_eq!(count(), 2);
    assert!(host.stop());
    host.restart();
    assert_eq!(count(), 1, "the orphan's precompiled copy is gone");
    assert!(host.log().contains("removing a module no service uses"));
    assert_eq!(host.get("/kept/").0, 200);
}

/// A module digest is a file name in the host's cache: one that climbs out of it is refused before
/// it reaches the store or the disk (it once deleted a file outside the data directory).
#[test]
fn a_module_digest_that_climbs_out_of_the_cache_is_refused_and_deletes_nothing() {
    let host = Host::start();
    host.deploy(guests::HELLO, "hello", &[]);
    // `DATA/cache/ENGINE/../../victim.cwasm` is `DATA/victim.cwasm`.
    let victim = host.data.join("victim.cwasm");
    std::fs::write(&victim, b"keep me").unwrap();
    let url = host.admin_url("/v1/services/evil");
    let http = || host.admin_http();
    for digest in [
        "sha256:../../victim",
        "sha256:../../victim\u{0}",
        "../../victim",
    ] {
        let answer = http()
            .put(&url)
            .bearer_auth(host.token())
            .json(&serde_json::json!({ "module": digest }))
            .send()
            .unwrap();
        assert_eq!(answer.status().as_u16(), 422, "{digest:?}");
        let body = answer.text().unwrap();
        assert!(body.contains("is not a module digest"), "{body}");
    }
    assert_eq!(std::fs::read(&victim).unwrap(), b"keep me");
    // The cache still serves the real service.
    assert_eq!(host.get("/hello/").0, 200);
}

/// What a service writes reaches an operator's terminal escaped: an escape sequence in a log line
/// (clear the screen, retitle the window) is shown, not obeyed; `--json` keeps it exactly.
#[test]
fn terminal_control_characters_in_service_logs_are_escaped_when_printed() {
    let host = Host::start();
    host.deploy(guests::HTTP_BASICS, "basics", &[]);
    assert_eq!(host.get("/basics/log?msg=%1b[2J%1b]0;pwned%07done").0, 200);
    let printed = host.cli_ok(&["logs", "basics"]);
    assert!(
        !printed.contains('\u{1b}') && !printed.contains('\u{7}'),
        "{printed:?}"
    );
    assert!(
        printed.contains("\\u{1b}[2J\\u{1b}]0;pwned\\u{7}done"),
        "{printed}"
    );
    let json = host.cli_ok(&["logs", "basics", "--json", "--tail", "1"]);
    let last: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    assert_eq!(last["line"], "to stderr: \u{1b}[2J\u{1b}]0;pwned\u{7}done");
}
