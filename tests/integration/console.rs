//! The web console in a real browser: headless Chromium (Debian's package) loads it from a
//! 3-host cluster's admin listener with a viewer credential; the rendered page names every host,
//! grouped by provider and jurisdiction, and the deployed service; a screenshot is kept. Without
//! a credential the page holds no data and the API answers nothing.

use std::path::Path;
use std::process::Command;

use doppel_guests as guests;

use crate::support::cluster_each;

/// Runs headless Chromium on `url` with `extra` flags (as root, on a machine with no outside
/// network: no sandbox, no background connections). The host's certificate names the cluster,
/// not 127.0.0.1, so certificate errors are ignored here; an operator's browser trusts the
/// cluster CA instead (README).
fn headless(browser: &str, profile: &Path, url: &str, extra: &[&str]) -> String {
    let out = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--ignore-certificate-errors",
            "--virtual-time-budget=10000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_console_shows_every_host_and_service_in_a_real_browser() {
    let browser = crate::support::install_server("chromium");
    let hosts = cluster_each(&[
        &["--label", "provider=ionos", "--label", "jurisdiction=de"],
        &["--label", "provider=hetzner", "--label", "jurisdiction=de"],
        &["--label", "provider=ovh", "--label", "jurisdiction=fr"],
    ]);
    let a = &hosts[0];
    a.deploy(guests::HELLO, "hello", &[]);
    let viewer = a.cli_ok(&["tokens", "create", "console", "--role", "viewer"]);
    let viewer = viewer.trim();

    // Without a credential: the page (no data in it), and nothing from the API.
    let page = a.admin_http().get(a.admin_url("/console")).send().unwrap();
    assert_eq!(page.status().as_u16(), 200);
    let policy = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(policy.contains("default-src 'none'") && policy.contains("connect-src 'self'"));
    let body = page.text().unwrap();
    assert!(!body.contains("hello") && !body.contains("ionos"), "{body}");
    let refused = a
        .admin_http()
        .get(a.admin_url("/v1/services"))
        .send()
        .unwrap();
    assert_eq!(refused.status().as_u16(), 401);
    // Nothing else under the console's name skips the credential check: a path that is not one
    // of its three assets is refused like any other admin route.
    let other = a
        .admin_http()
        .get(a.admin_url("/console/console.js.map"))
        .send()
        .unwrap();
    assert_ne!(other.status().as_u16(), 200);
    assert_eq!(other.status().as_u16(), 401);

    let profile = tempfile::tempdir().unwrap();
    let url = format!("{}#token={viewer}", a.admin_url("/console"));
    let dom = headless(&browser, profile.path(), &url, &["--dump-dom"]);
    for expected in [
        r#"data-host="a""#,
        r#"data-host="b""#,
        r#"data-host="c""#,
        r#"data-service="hello""#,
        "provider=ionos, jurisdiction=de",
        "provider=ovh, jurisdiction=fr",
        "leader",
    ] {
        assert!(
            dom.contains(expected),
            "{expected} is not on the page:\n{dom}"
        );
    }
    assert!(!dom.contains(viewer), "the credential is on the page");

    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("console.png");
    let _ = std::fs::remove_file(&shot);
    headless(
        &browser,
        profile.path(),
        &url,
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1280,900",
        ],
    );
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG"),
        "no screenshot at {}",
        shot.display()
    );
}
