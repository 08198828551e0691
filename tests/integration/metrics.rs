//! `/metrics`, scraped the way an operator's monitoring would: by a real Prometheus server
//! (Debian's package, started here) over the admin listener's TLS with a viewer credential, and
//! queried through its own API. Without a credential, nothing is answered.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use doppel_guests as guests;

use crate::support::{Host, eventually_within, http};

/// A Prometheus server scraping `target` (the admin address) every second; stopped when dropped.
struct Prometheus {
    child: Child,
    port: u16,
}

impl Prometheus {
    fn start(dir: &Path, target: &str, ca: &Path, token: &str) -> Prometheus {
        let bin = crate::support::install_server("prometheus");
        let token_file = dir.join("token");
        std::fs::write(&token_file, token).unwrap();
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
                 scrape_configs:\n  - job_name: doppel\n    scheme: https\n    \
                 tls_config:\n      ca_file: {ca}\n      server_name: {name}\n    \
                 authorization:\n      credentials_file: {token}\n    \
                 static_configs:\n      - targets: ['{target}']\n",
                ca = ca.display(),
                // Host certificates name the cluster, not an address.
                name = doppel_trust::CLUSTER_NAME,
                token = token_file.display(),
            ),
        )
        .unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let server = Prometheus { child, port };
        eventually_within(Duration::from_secs(60), "Prometheus is ready", || {
            http()
                .get(server.url("/-/ready"))
                .send()
                .is_ok_and(|r| r.status().is_success())
        });
        server
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// What Prometheus says of its scrape targets (their health and last error).
    fn targets(&self) -> String {
        http()
            .get(self.url("/api/v1/targets"))
            .send()
            .and_then(|r| r.text())
            .unwrap_or_else(|e| e.to_string())
    }

    /// The value of an instant query's only sample, if there is one.
    fn query(&self, query: &str) -> Option<String> {
        let encoded: String = query
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() {
                    char::from(b).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        let answer: serde_json::Value = http()
            .get(self.url(&format!("/api/v1/query?query={encoded}")))
            .send()
            .ok()?
            .json()
            .ok()?;
        let result = answer["data"]["result"].as_array()?;
        (result.len() == 1).then(|| result[0]["value"][1].as_str().map(String::from))?
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_prometheus_server_scrapes_a_host_with_a_viewer_credential() {
    let host = Host::start();
    host.deploy(guests::HELLO, "hello", &[]);
    for _ in 0..3 {
        assert_eq!(host.get("/hello/").0, 200);
    }
    let viewer = host.cli_ok(&["tokens", "create", "prometheus", "--role", "viewer"]);
    let viewer = viewer.trim();

    // Nothing without a credential.
    let anonymous = host
        .admin_http()
        .get(host.admin_url("/metrics"))
        .send()
        .unwrap();
    assert_eq!(anonymous.status().as_u16(), 401);
    let text = host
        .admin_http()
        .get(host.admin_url("/metrics"))
        .bearer_auth(viewer)
        .send()
        .unwrap()
        .text()
        .unwrap();
    for expected in [
        r#"doppel_service_requests_total{service="hello",class="2xx"} 3"#,
        r#"doppel_service_request_duration_seconds_count{service="hello"} 3"#,
        "doppel_raft_leader 1",
        "doppel_raft_log_sync_duration_seconds_count",
        "# EOF",
    ] {
        assert!(text.contains(expected), "{expected} missing from:\n{text}");
    }

    let dir = tempfile::tempdir().unwrap();
    let prometheus = Prometheus::start(
        dir.path(),
        &host.admin.to_string(),
        &host.data.join("tls/ca.pem"),
        viewer,
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while prometheus
        .query(r#"doppel_service_requests_total{service="hello",class="2xx"}"#)
        .as_deref()
        != Some("3")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "Prometheus has not scraped the host's answers; its targets: {}",
            prometheus.targets()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(prometheus.query("up").as_deref(), Some("1"));
    // A query over a histogram: the 99th percentile of hello's answers, from its buckets.
    let p99 = prometheus
        .query(r#"histogram_quantile(0.99, doppel_service_request_duration_seconds_bucket{service="hello"})"#)
        .unwrap();
    assert!(
        p99.parse::<f64>().is_ok_and(|s| s > 0.0 && s < 8.0),
        "{p99}"
    );
}

/// `--log-format json`: every line the host writes to its log is one JSON object with a level
/// and a message, for a log collector.
#[test]
fn a_host_logs_json_lines_when_asked() {
    let host = Host::start_with(&["--log-format", "json"]);
    host.deploy(guests::HELLO, "hello", &[]);
    let log = host.log();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["level"] == "INFO" && l["fields"]["message"] == "deployed"),
        "{log}"
    );
}
