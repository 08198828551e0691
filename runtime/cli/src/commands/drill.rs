//! `doppel drill`: a backup restored into a sandbox (a temporary directory, free loopback
//! ports), started as a host, every service called and the state hash compared; the RTO, RPO
//! and what failed written to a report an operator can hand to an auditor.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use doppel_api::{ServiceInfo, StateHash};
use doppel_backup::keys::Identity;
use doppel_backup::location::Location;
use doppel_backup::restore;

use super::restore::{Bar, PointArgs};
use crate::client::{Client, Target};
use crate::drill_report::{DrillReport, ServiceProbe};
use crate::output::print_json;

/// How long the sandbox host may take to start.
const START_LIMIT: Duration = Duration::from_secs(120);
/// How long a service may take to answer once the host runs.
const ANSWER_LIMIT: Duration = Duration::from_secs(60);

/// Flags of `doppel drill`.
#[derive(Args, Debug)]
pub struct Drill {
    /// The backup: s3://BUCKET/PREFIX or file:///DIRECTORY.
    url: String,
    /// The age identity the backup was encrypted for.
    #[arg(long)]
    identity: PathBuf,
    #[command(flatten)]
    point: PointArgs,
    /// Where to write the Markdown report (default: doppel-drill-TIME.md here).
    #[arg(long)]
    report: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

fn elapsed_ms(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
}

impl Drill {
    pub async fn run(self) -> anyhow::Result<()> {
        let started_ms = doppel_backup::now_ms();
        let started = doppel_backup::rfc3339(started_ms);
        let mut report = DrillReport {
            url: self.url.clone(),
            point: self.point.describe(),
            started: started.clone(),
            passed: true,
            ..DrillReport::default()
        };
        let sandbox = tempfile::Builder::new()
            .prefix("doppel-drill-")
            .tempdir()
            .context("cannot make the sandbox directory")?;
        if let Err(e) = self.drill(sandbox.path(), started_ms, &mut report).await {
            report.fail(format!("{e:#}"));
        }
        let path = self
            .report
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("doppel-drill-{started}.md")));
        std::fs::write(&path, report.markdown())
            .with_context(|| format!("cannot write the report {}", path.display()))?;
        if self.json {
            print_json(&report)?;
        } else {
            print!("{}", report.text());
            println!("report written to {}", path.display());
        }
        if !report.passed {
            anyhow::bail!(
                "the drill failed: {}",
                report
                    .failure
                    .as_deref()
                    .unwrap_or("a service did not answer")
            );
        }
        Ok(())
    }

    async fn drill(
        &self,
        sandbox: &Path,
        started_ms: u64,
        report: &mut DrillReport,
    ) -> anyhow::Result<()> {
        let point = self.point.point()?;
        let identity = Identity::read(&self.identity)?;
        let location = Location::open(&self.url)?;
        let data = sandbox.join("data");
        let clock = Instant::now();
        let mut progress = Bar::new(self.json);
        let restored = restore::restore(&location, &identity, &data, point, &mut progress)
            .await
            .context("the restore failed")?;
        // The sandbox host gets a key-encryption key of its own, gone with the sandbox.
        let sandbox_key = doppel_host::sealing::Kek::generate();
        let kek = doppel_host::sealing::Kek::parse(sandbox_key.as_bytes())
            .context("a generated key does not read back")?;
        super::restore::keep_cluster_key(&location, &identity, &data, &kek).await?;
        progress.0.finish_and_clear();
        let restore_ms = elapsed_ms(clock);
        report.restore_ms = Some(restore_ms);
        report.index = Some(restored.index);
        report.keys = Some(restored.keys);
        report.restored_hash = Some(restored.hash.clone());
        report.objects = Some(restored.objects);
        report.bytes = Some(restored.object_bytes);
        report.rpo_ms = Some(started_ms.saturating_sub(restored.last_write_ms));
        report.throughput_mib_s = Some(
            restored.object_bytes as f64 / (1 << 20) as f64 / (restore_ms.max(1) as f64 / 1e3),
        );

        let mut host = SandboxHost::start(sandbox, &data, &sandbox_key).await?;
        let client = Client::connect(&Target {
            admin: None,
            token: None,
            ca: None,
            data: data.clone(),
            json: false,
        })?;
        let hash: StateHash = client.get_json("/v1/status/hash").await?;
        report.host_hash = Some(hash.hash.clone());
        let services: Vec<ServiceInfo> = client.get_json("/v1/services").await?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()?;
        let listen = host.endpoint.listen;
        let probes = services.iter().map(|s| {
            let url = format!("http://{listen}/{}{}", s.name, s.probe);
            probe(&http, s, url, clock)
        });
        report.services = futures::future::join_all(probes).await;
        report.rto_ms = report
            .services
            .iter()
            .map(|s| s.answered_after_ms)
            .collect::<Option<Vec<u64>>>()
            .map(|all| all.into_iter().max().unwrap_or(restore_ms));
        host.stop();

        if hash.hash != restored.hash {
            report.fail(format!(
                "the restored host's state hash {} is not the backup's {}",
                hash.hash, restored.hash
            ));
        }
        let mut names: Vec<&str> = services.iter().map(|s| s.name.as_str()).collect();
        names.sort_unstable();
        let mut expected: Vec<&str> = restored.services.iter().map(String::as_str).collect();
        expected.sort_unstable();
        if names != expected {
            report.fail(format!(
                "the restored host runs {names:?}, the backup holds {expected:?}"
            ));
        }
        let failed: Vec<&str> = report
            .services
            .iter()
            .filter(|s| !s.passed())
            .map(|s| s.name.as_str())
            .collect();
        if !failed.is_empty() {
            report.fail(format!("service(s) did not answer: {}", failed.join(", ")));
        }
        Ok(())
    }
}

/// Calls `url` until it answers below 500 or [`ANSWER_LIMIT`] passes.
async fn probe(
    http: &reqwest::Client,
    service: &ServiceInfo,
    url: String,
    clock: Instant,
) -> ServiceProbe {
    let deadline = Instant::now() + ANSWER_LIMIT;
    let mut last = ServiceProbe {
        name: service.name.clone(),
        probe: service.probe.clone(),
        status: None,
        answered_after_ms: None,
        error: None,
    };
    loop {
        match http.get(&url).send().await {
            Ok(answer) if answer.status().as_u16() < 500 => {
                last.status = Some(answer.status().as_u16());
                last.answered_after_ms = Some(elapsed_ms(clock));
                last.error = None;
                return last;
            }
            Ok(answer) => last.status = Some(answer.status().as_u16()),
            Err(e) => last.error = Some(doppel_host::causes(&e)),
        }
        if Instant::now() > deadline {
            if last.error.is_none() {
                last.error = Some(format!(
                    "answered {} for {} s",
                    last.status.unwrap_or_default(),
                    ANSWER_LIMIT.as_secs()
                ));
            }
            return last;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A `doppel host` on the restored data directory, on free loopback ports; killed (SIGKILL:
/// the sandbox is thrown away) on drop.
struct SandboxHost {
    child: std::process::Child,
    endpoint: doppel_host::Endpoint,
}

impl SandboxHost {
    async fn start(sandbox: &Path, data: &Path, key: &str) -> anyhow::Result<SandboxHost> {
        let log_path = sandbox.join("host.log");
        let log = std::fs::File::create(&log_path)?;
        let mut child = std::process::Command::new(
            std::env::current_exe().context("cannot find the doppel binary")?,
        )
        .arg("host")
        .arg("--data")
        .arg(data)
        .args(["--name", "drill"])
        .args(["--listen", "127.0.0.1:0"])
        .args(["--admin", "127.0.0.1:0"])
        .args(["--peer", "127.0.0.1:0"])
        .env_remove("DOPPEL_KEY_FILE")
        .env_remove("DOPPEL_KEY_COMMAND")
        .env(doppel_host::sealing::KEY_ENV, key)
        // Its first start prints an admin credential: it stays in the sandbox, which goes.
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .context("cannot start a host on the restored data")?;
        let endpoint_file = doppel_host::endpoint_path(data);
        let deadline = Instant::now() + START_LIMIT;
        loop {
            if let Ok(text) = std::fs::read_to_string(&endpoint_file)
                && let Ok(endpoint) = serde_json::from_str::<doppel_host::Endpoint>(&text)
            {
                return Ok(SandboxHost { child, endpoint });
            }
            if let Some(status) = child.try_wait()? {
                anyhow::bail!(
                    "the host on the restored data stopped ({status}) before it was ready: {}",
                    last_lines(&log_path)
                );
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                anyhow::bail!(
                    "the host on the restored data was not ready within {} s: {}",
                    START_LIMIT.as_secs(),
                    last_lines(&log_path)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for SandboxHost {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The last lines of the host's log, for an error message.
fn last_lines(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(5)..].join(" / ")
}
