//! `doppel deploy`: upload a component and (re)deploy it as a service, with a progress bar.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use doppel_api::{
    DeployRequest, HostInfo, LimitOverrides, ModuleInfo, PlacementRules, ServiceInfo,
};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::Method;

use crate::client::{Client, Target, segment};
use crate::output::{print_json, short};
use crate::units::{human_size, parse_millis, parse_size};

/// `doppel deploy`.
#[derive(Args, Debug)]
pub struct Deploy {
    #[command(flatten)]
    pub target: Target,
    /// The component to deploy (a wasm32-wasip2 build output).
    pub file: PathBuf,
    /// Service name; also its URL prefix. Defaults to the file name without extension.
    #[arg(long)]
    pub name: Option<String>,
    /// A config value (wasi:config and environment), repeatable.
    #[arg(long = "config", value_name = "KEY=VALUE", value_parser = parse_pair)]
    pub config: Vec<(String, String)>,
    /// A secret (wasi:config only), repeatable: `KEY=@FILE` reads the file (one trailing newline
    /// dropped), `KEY=env:VAR` the environment variable. Never a literal, which would stay in
    /// the shell's history. Stored sealed; `ls`, `status`, `events`, logs and `--json` show its
    /// name only.
    #[arg(long = "secret", value_name = "KEY=@FILE|KEY=env:VAR", value_parser = parse_secret)]
    pub secrets: Vec<doppel_api::Secrets>,
    /// Memory one instance may use, e.g. 64MiB.
    #[arg(long, value_parser = parse_size)]
    pub max_memory: Option<u64>,
    /// Time one request may take, e.g. 5s.
    #[arg(long, value_parser = parse_millis)]
    pub timeout: Option<u64>,
    /// Largest request body, e.g. 10MiB.
    #[arg(long, value_parser = parse_size)]
    pub max_body: Option<u64>,
    /// Longest key the service may use, e.g. 1KiB.
    #[arg(long, value_parser = parse_size)]
    pub max_key: Option<u64>,
    /// Largest value the service may store, e.g. 1MiB.
    #[arg(long, value_parser = parse_size)]
    pub max_value: Option<u64>,
    /// Total bytes the service may store, e.g. 1GiB.
    #[arg(long, value_parser = parse_size)]
    pub quota: Option<u64>,
    /// Largest wasi:blobstore object the service may store, e.g. 100MiB (default 256MiB; objects
    /// count in the quota too).
    #[arg(long, value_parser = parse_size)]
    pub max_object: Option<u64>,
    /// Requests the service may run at once on one host (default: a quarter of the host's
    /// 1,000 instances); more wait up to a second, then get 503 with Retry-After.
    #[arg(long)]
    pub max_instances: Option<u64>,
    /// Only hosts with this label may run the service, repeatable (every one must match), e.g.
    /// `--on jurisdiction=de`. Failover honours it: with no such host left, the service answers
    /// 503 with the reason rather than run elsewhere.
    #[arg(long = "on", value_name = "KEY=VALUE", value_parser = doppel_api::parse_label)]
    pub on: Vec<(String, String)>,
    /// How many hosts the service is active on at once.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=i64::from(doppel_api::MAX_REPLICAS)))]
    pub replicas: u32,
    /// The path below the service's prefix that `doppel drill` calls to see that a restored copy
    /// answers (default `/`), e.g. `/health`.
    #[arg(long, value_parser = parse_probe)]
    pub probe: Option<String>,
    /// Refuse this and every later deploy of the name unless the component is signed by a key
    /// the cluster trusts (`doppel sign`, `doppel trust`).
    #[arg(long)]
    pub require_signatures: bool,
    /// Deploy a signed release older than the one running (a rollback on purpose; the audit
    /// trail records it).
    #[arg(long)]
    pub allow_older: bool,
    /// A server the service may call, repeatable: `SCHEME://HOST[:PORT]`, `*.` for sub-domains
    /// (e.g. `https://idp.example.de`, `https://*.bund.de`). None by default; loopback, private
    /// and link-local addresses only when named as addresses.
    #[arg(long = "allow-outbound", value_name = "URL", value_parser = parse_outbound)]
    pub allow_outbound: Vec<String>,
}

fn parse_outbound(text: &str) -> Result<String, String> {
    doppel_api::outbound::OutboundRule::parse(text).map(|_| text.to_string())
}

fn parse_probe(text: &str) -> Result<String, String> {
    doppel_api::check_probe(text).map(|()| text.to_string())
}

pub fn parse_pair(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{text:?} is not KEY=VALUE")),
    }
}

/// `--secret KEY=@FILE` or `KEY=env:VAR`, read (as a one-entry map, which never prints its
/// value). No error names the value.
fn parse_secret(text: &str) -> Result<doppel_api::Secrets, String> {
    let (key, from) = parse_pair(text)?;
    let value = if let Some(path) = from.strip_prefix('@') {
        let mut value = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the secret {key} from {path}: {e}"))?;
        if value.ends_with('\n') {
            value.pop();
            if value.ends_with('\r') {
                value.pop();
            }
        }
        value
    } else if let Some(var) = from.strip_prefix("env:") {
        std::env::var(var).map_err(|e| format!("cannot read the secret {key} from ${var}: {e}"))?
    } else {
        return Err(format!(
            "give the secret {key} as {key}=@FILE or {key}=env:VAR, not on the command line"
        ));
    };
    Ok(doppel_api::Secrets([(key, value)].into()))
}

impl Deploy {
    pub async fn run(self) -> anyhow::Result<()> {
        let target = &self.target;
        let name = match &self.name {
            Some(n) => n.clone(),
            None => self
                .file
                .file_stem()
                .and_then(|s| s.to_str())
                .map(|s| s.replace('_', "-"))
                .context("cannot derive a service name from the file name; pass --name")?,
        };
        doppel_api::check_service_name(&name).map_err(anyhow::Error::msg)?;
        let bytes = tokio::fs::read(&self.file)
            .await
            .with_context(|| format!("cannot read {}", self.file.display()))?;
        let client = Client::connect(target)?;

        let total = bytes.len() as u64;
        let bar = ProgressBar::new(total).with_style(
            ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar.set_message(format!("uploading {}", self.file.display()));
        // Slices of one buffer (no copies), so the bar can advance as each is sent.
        let bytes = bytes::Bytes::from(bytes);
        let chunks: Vec<bytes::Bytes> = (0..bytes.len())
            .step_by(64 << 10)
            .map(|start| bytes.slice(start..(start + (64 << 10)).min(bytes.len())))
            .collect();
        let progress = bar.clone();
        let body = futures::stream::iter(chunks).map(move |chunk| {
            progress.inc(chunk.len() as u64);
            Ok::<_, std::io::Error>(chunk)
        });
        let upload = client
            .request(
                Method::POST,
                &format!("/v1/modules?service={}", segment(&name)),
            )
            .header(reqwest::header::CONTENT_LENGTH, total)
            .body(reqwest::Body::wrap_stream(body));
        let sent = client.send(upload);
        tokio::pin!(sent);
        // Once every byte is sent the host compiles and checks the component: say so.
        let response = loop {
            tokio::select! {
                r = &mut sent => break r,
                () = tokio::time::sleep(Duration::from_millis(100)) => {
                    if bar.position() == total && !bar.is_finished() {
                        bar.set_style(ProgressStyle::with_template("{spinner} {msg}").unwrap_or_else(|_| ProgressStyle::default_spinner()));
                        bar.set_message("host is compiling and checking the component");
                        bar.enable_steady_tick(Duration::from_millis(100));
                    }
                }
            }
        };
        bar.finish_and_clear();
        let module: ModuleInfo = response
            .with_context(|| format!("{} was not accepted", self.file.display()))?
            .json()
            .await?;

        let request = DeployRequest {
            module: module.digest.clone(),
            config: self.config.into_iter().collect::<BTreeMap<_, _>>(),
            secrets: doppel_api::Secrets(self.secrets.into_iter().flat_map(|s| s.0).collect()),
            limits: LimitOverrides {
                max_memory: self.max_memory,
                timeout_ms: self.timeout,
                max_body: self.max_body,
                max_key: self.max_key,
                max_value: self.max_value,
                quota: self.quota,
                max_instances: self.max_instances,
                max_object: self.max_object,
            },
            placement: PlacementRules {
                on: self.on.into_iter().collect(),
                replicas: self.replicas,
            },
            probe: self.probe,
            require_signatures: self.require_signatures,
            allow_older: self.allow_older,
            allow_outbound: self.allow_outbound,
        };
        let deployed: ServiceInfo = client
            .send(
                client
                    .request(Method::PUT, &format!("/v1/services/{}", segment(&name)))
                    .json(&request),
            )
            .await
            .with_context(|| format!("service {name:?} was not deployed"))?
            .json()
            .await?;
        if target.json {
            return print_json(&deployed);
        }
        let host: HostInfo = client.get_json("/v1/host").await?;
        println!(
            "Deployed {} version {} ({}, {})",
            deployed.name,
            deployed.version,
            human_size(module.size),
            short(&module.digest)
        );
        println!("  http://{}/{}/", host.listen, deployed.name);
        if !deployed.signed_by.is_empty() {
            println!(
                "  signed by {}{}",
                deployed.signed_by.join(", "),
                deployed
                    .release
                    .as_ref()
                    .map(|r| format!(", release {r}"))
                    .unwrap_or_default()
            );
        }
        if !deployed.active.is_empty() {
            println!(
                "  active on {} ({})",
                deployed.active.join(", "),
                deployed.placement
            );
        }
        if let Some(unmet) = &deployed.unmet {
            println!("  warning: its placement rules are not met: {unmet}");
        }
        Ok(())
    }
}
