//! Every interface of the guest contract, exercised through real components.

use doppel_guests as guests;

use crate::support::Host;

#[test]
fn http_config_env_logs_clocks_random_and_denied_capabilities() {
    let host = Host::start();
    host.deploy(
        guests::HTTP_BASICS,
        "basics",
        &["--config", "greeting=hallo", "--config", "DB=main"],
    );
    // The component sees the rest of the path; the prefix travels in x-forwarded-prefix.
    assert_eq!(
        host.post("/basics/echo?x=1&y=2", "payload"),
        (
            200,
            "method=Method::Post path=/echo?x=1&y=2 prefix=/basics body=payload".into()
        )
    );
    assert_eq!(host.get("/basics/config?key=greeting").1, "hallo");
    assert_eq!(host.get("/basics/config?key=missing").1, "<unset>");
    assert_eq!(host.get("/basics/config-all").1, "DB=main,greeting=hallo");
    assert_eq!(host.get("/basics/env?name=DB").1, "main");
    assert_eq!(
        host.get("/basics/env?name=PATH").1,
        "<unset>",
        "no host environment leaks in"
    );
    let (_, clock) = host.get("/basics/clock-random");
    assert!(clock.ends_with("random_differs=true"), "{clock}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let guest_time: u64 = clock.split(['=', ' ']).nth(1).unwrap().parse().unwrap();
    assert!(
        guest_time.abs_diff(now) < 60,
        "guest clock {guest_time} vs {now}"
    );
    assert!(host.get("/basics/outbound").1.contains("HttpRequestDenied"));
    assert!(host.get("/basics/file").1.starts_with("file refused"));
    assert!(host.get("/basics/socket").1.starts_with("socket refused"));
    assert_eq!(host.get("/basics/nope").0, 404);
}

#[test]
fn handlers_built_for_wasi_http_0_2_0_run() {
    let host = Host::start();
    host.deploy(guests::HTTP_020, "old", &[]);
    assert_eq!(
        host.get("/old/anything"),
        (200, "hello from wasi 0.2.0\n".into())
    );
}

/// A component built for Spin or wasmCloud logs through `wasi:logging`: every level reaches the
/// service's log with its context, and a runaway message is cut to what the log keeps.
#[test]
fn wasi_logging_messages_reach_the_service_log_with_their_level() {
    let host = Host::start();
    host.deploy(guests::LOGGING, "logger", &[]);
    assert_eq!(host.get("/logger/"), (200, "logged".into()));
    let lines: Vec<serde_json::Value> = host
        .cli_ok(&["logs", "logger", "--json"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for level in ["trace", "debug", "info", "warn", "error", "critical"] {
        assert!(
            lines.iter().any(|l| l["stream"] == level
                && l["line"] == format!("checkout: a {level} message").as_str()),
            "no {level} line in {lines:?}"
        );
    }
    let long = lines
        .iter()
        .find(|l| l["line"].as_str().is_some_and(|t| t.starts_with("xxx")))
        .unwrap();
    assert_eq!(long["line"].as_str().unwrap().len(), 16 << 10);
}

/// The SDK's batch calls (`wasi:keyvalue/batch`): many keys written, removed and read at once.
#[test]
fn the_sdk_writes_removes_and_reads_many_keys_in_one_call() {
    let host = Host::start();
    host.deploy(guests::CALLERS, "batches", &[]);
    assert_eq!(
        host.post("/batches/open/batch", ""),
        (200, "[Some(1), None, Some(3), None]".into())
    );
}

/// A loopback HTTP server answering every request with `body`; its port.
fn outside_server(body: &'static str) -> u16 {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream);
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                line.clear();
            }
            let _ = write!(
                reader.get_mut(),
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    port
}

/// Outbound HTTP goes only where a service's allow-list says, checked on the address actually
/// connected to: nothing by default; another port or scheme is denied; a name that resolves to
/// loopback is refused after resolution (as the cloud metadata address or a rebinding name
/// would be); an address named as such is allowed; a malformed entry is refused at deploy.
#[test]
fn outbound_calls_go_only_where_the_allow_list_says() {
    let port = outside_server("from outside");
    let host = Host::start();
    let call = |service: &str, to: &str| host.get(&format!("/{service}/outbound?to={to}")).1;
    let to = format!("http://127.0.0.1:{port}/x");

    host.deploy(guests::HTTP_BASICS, "closed", &[]);
    assert!(call("closed", &to).contains("HttpRequestDenied"));

    let entry = format!("http://127.0.0.1:{port}");
    host.deploy(guests::HTTP_BASICS, "open", &["--allow-outbound", &entry]);
    assert_eq!(call("open", &to), "outbound 200: from outside");
    let other_port = format!("http://127.0.0.1:{}/x", port + 1);
    assert!(call("open", &other_port).contains("HttpRequestDenied"));
    let other_scheme = format!("https://127.0.0.1:{port}/x");
    assert!(call("open", &other_scheme).contains("HttpRequestDenied"));
    assert!(call("open", "http://169.254.169.254/latest/meta-data/").contains("HttpRequestDenied"));

    let named = format!("http://localhost:{port}");
    host.deploy(guests::HTTP_BASICS, "named", &["--allow-outbound", &named]);
    let answer = call("named", &format!("http://localhost:{port}/x"));
    assert!(answer.contains("DestinationIpProhibited"), "{answer}");

    let err = host.cli_err(&[
        "deploy",
        guests::HTTP_BASICS,
        "--name",
        "bad",
        "--allow-outbound",
        "ftp://files.example.de",
    ]);
    assert!(err.contains("the scheme must be http or https"), "{err}");
    let listed = host.cli_ok(&["ls", "--json"]);
    assert!(listed.contains(&entry), "{listed}");

    // The SDK's client: the answer's body, or a problem that names the flag to use.
    host.deploy(guests::CALLERS, "sdk-open", &["--allow-outbound", &entry]);
    assert_eq!(
        host.get(&format!("/sdk-open/open/fetch?to={to}")),
        (200, "from outside".into())
    );
    host.deploy(guests::CALLERS, "sdk-closed", &[]);
    let (status, body) = host.get(&format!("/sdk-closed/open/fetch?to={to}"));
    assert_eq!(status, 500);
    assert!(body.contains("--allow-outbound"), "{body}");
}

/// The same scenario through both keyvalue drafts.
fn keyvalue_scenario(host: &Host, service: &str) {
    let call = |path: &str, body: &str| {
        let (status, text) = host.post(&format!("/{service}{path}"), body.to_string());
        assert_eq!(status, 200, "{service}{path}: {text}");
        text
    };
    assert_eq!(call("/get?k=a", ""), "<none>");
    assert_eq!(call("/exists?k=a", ""), "false");
    assert_eq!(call("/set?k=a", "one"), "ok");
    assert_eq!(call("/get?k=a", ""), "one");
    assert_eq!(call("/exists?k=a", ""), "true");
    // "" and "default" are one bucket; other names are separate.
    assert_eq!(call("/get?b=default&k=a", ""), "one");
    assert_eq!(call("/get?b=other&k=a", ""), "<none>");
    assert_eq!(call("/set?b=other&k=a", "two"), "ok");
    assert_eq!(call("/get?k=a", ""), "one");
    assert_eq!(call("/delete?k=a", ""), "ok");
    assert_eq!(call("/get?k=a", ""), "<none>");
    assert_eq!(call("/get?b=other&k=a", ""), "two");
    // Counters.
    assert_eq!(call("/increment?k=n&d=5", ""), "5");
    assert_eq!(call("/increment?k=n&d=7", ""), "12");
    assert_eq!(call("/get?k=n", ""), "12");
    // Batches.
    assert_eq!(call("/set-many?b=batch", "x=1\ny=2\nz=3"), "ok");
    assert_eq!(call("/get-many?b=batch&k=x,nope,z", ""), "x=1,-,z=3");
    assert_eq!(call("/delete-many?b=batch&k=x,y", ""), "ok");
    assert_eq!(call("/get-many?b=batch&k=x,y,z", ""), "-,-,z=3");
    // Listing follows cursors across pages (1000 keys a page), every key once. Keys are stored
    // sealed, so pages follow the sealed keys' order (the interface promises none).
    let many: String = (0..2500).map(|i| format!("key{i:05}=v\n")).collect();
    assert_eq!(call("/set-many?b=big", &many), "ok");
    assert_eq!(
        call("/list?b=big", ""),
        "pages=3 count=2500 distinct=2500 first=Some(\"key00000\") last=Some(\"key02499\")"
    );
}

#[test]
fn keyvalue_draft_works_end_to_end() {
    let host = Host::start();
    host.deploy(guests::KV_DRAFT, "kv", &[]);
    keyvalue_scenario(&host, "kv");
    // Draft 1 counters are unsigned: going below zero is a guest-visible error.
    let (status, text) = host.post("/kv/increment?k=n&d=18446744073709551615", "");
    assert_eq!(status, 500);
    assert!(text.contains("larger than"), "{text}");
}

#[test]
fn keyvalue_draft2_works_end_to_end_with_compare_and_swap() {
    let host = Host::start();
    host.deploy(guests::KV_DRAFT2, "kv", &[]);
    keyvalue_scenario(&host, "kv");
    assert_eq!(host.post("/kv/increment?k=n&d=-20", "").1, "-8");
    assert_eq!(host.post("/kv/cas?k=c", "first").1, "swapped (was None)");
    assert_eq!(
        host.post("/kv/cas?k=c", "second").1,
        "swapped (was Some(\"first\"))"
    );
    // Someone else writes between the read and the swap: the swap must not happen.
    assert_eq!(
        host.post("/kv/cas?k=c&race=1", "lost").1,
        "conflict (now Some(\"interloper\"))"
    );
    assert_eq!(host.get("/kv/get?k=c").1, "interloper");
    // A value that is not a number cannot be incremented.
    let (status, text) = host.post("/kv/increment?k=c&d=1", "");
    assert_eq!(status, 500);
    assert!(text.contains("not a decimal integer"), "{text}");
}

#[test]
fn services_cannot_see_each_others_buckets() {
    let host = Host::start();
    host.deploy(guests::KV_DRAFT, "alpha", &[]);
    host.deploy(guests::KV_DRAFT2, "beta", &[]);
    host.post("/alpha/set?k=secret", "alpha's");
    host.post("/alpha/set?b=shared&k=secret", "alpha's");
    assert_eq!(host.get("/beta/get?k=secret").1, "<none>");
    assert_eq!(host.get("/beta/get?b=shared&k=secret").1, "<none>");
    assert_eq!(
        host.get("/beta/list?b=shared").1,
        "pages=1 count=0 distinct=0 first=None last=None"
    );
    // Both drafts share one store: a service redeployed with the other draft sees its data.
    host.deploy(guests::KV_DRAFT2, "alpha", &[]);
    assert_eq!(host.get("/alpha/get?k=secret").1, "alpha's");
}

/// Whether any file under `dir` holds `needle`, byte for byte.
fn any_file_holds(dir: &std::path::Path, needle: &str) -> Option<std::path::PathBuf> {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        let found = if path.is_dir() {
            any_file_holds(&path, needle)
        } else {
            std::fs::read(&path)
                .unwrap_or_default()
                .windows(needle.len())
                .any(|w| w == needle.as_bytes())
                .then_some(path)
        };
        if found.is_some() {
            return found;
        }
    }
    None
}

/// `doppel:local` (decision 0010) is memory of one host: it outlives a request, is never
/// written to disk (so it does not outlive the process), is not another service's, and refuses
/// what only replicated state can do.
#[test]
fn the_host_local_bucket_outlives_requests_but_never_reaches_the_disk() {
    let mut host = Host::start();
    host.deploy(guests::KV_DRAFT, "kv", &[]);
    host.deploy(guests::KV_DRAFT2, "other", &[]);
    let canary = "local-canary-7c41e0";
    assert_eq!(
        host.post("/kv/set?b=doppel:local&k=t", canary),
        (200, "ok".into())
    );
    assert_eq!(
        host.post("/kv/set?k=replicated", "kept"),
        (200, "ok".into())
    );
    // Every request is a fresh instance: this is another one, and it finds the value.
    assert_eq!(host.get("/kv/get?b=doppel:local&k=t"), (200, canary.into()));
    assert_eq!(host.get("/kv/exists?b=doppel:local&k=t").1, "true");
    assert_eq!(host.get("/other/get?b=doppel:local&k=t").1, "<none>");
    assert_eq!(
        host.post("/kv/set-many?b=doppel:local", "a=1\nb=2"),
        (200, "ok".into())
    );
    assert_eq!(
        host.get("/kv/get-many?b=doppel:local&k=a,b,c").1,
        "a=1,b=2,-"
    );

    for refused in [
        "/kv/list?b=doppel:local",
        "/kv/increment?b=doppel:local&k=n",
    ] {
        let (status, text) = host.post(refused, "");
        assert_eq!(status, 500, "{refused}");
        assert!(text.contains("not replicated state"), "{refused}: {text}");
    }

    assert_eq!(
        any_file_holds(&host.data, canary),
        None,
        "a local value reached a file"
    );
    host.kill();
    host.restart();
    assert_eq!(host.get("/kv/get?b=doppel:local&k=t").1, "<none>");
    assert_eq!(host.get("/kv/get?k=replicated").1, "kept");
}
