//! The client commands: each one admin API call or two, and their output.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use doppel_api::{
    DeployRequest, HostInfo, KeyPage, LimitOverrides, LogLine, ModuleInfo, PlacementRules,
    ServiceInfo,
};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::Method;

use crate::client::{Client, Target, segment};
use crate::units::{human_size, human_time, parse_millis, parse_size};

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
    /// Only hosts with this label may run the service, repeatable (every one must match), e.g.
    /// `--on jurisdiction=de`. Failover honours it: with no such host left, the service answers
    /// 503 with the reason rather than run elsewhere.
    #[arg(long = "on", value_name = "KEY=VALUE", value_parser = doppel_api::parse_label)]
    pub on: Vec<(String, String)>,
    /// How many hosts the service is active on at once.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub replicas: u32,
}

fn parse_pair(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{text:?} is not KEY=VALUE")),
    }
}

pub fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
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
        if !doppel_host::valid_name(&name) {
            anyhow::bail!(
                "invalid service name {name:?}: use 1 to 63 characters a-z, 0-9 and '-', starting with a letter (it becomes the URL prefix)"
            );
        }
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
            .request(Method::POST, "/v1/modules")
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
            limits: LimitOverrides {
                max_memory: self.max_memory,
                timeout_ms: self.timeout,
                max_body: self.max_body,
                max_key: self.max_key,
                max_value: self.max_value,
                quota: self.quota,
            },
            placement: PlacementRules {
                on: self.on.into_iter().collect(),
                replicas: self.replicas,
            },
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

fn short(digest: &str) -> String {
    digest.chars().take("sha256:".len() + 12).collect()
}

/// `doppel ls`.
pub async fn ls(target: &Target) -> anyhow::Result<()> {
    let client = Client::connect(target)?;
    let services: Vec<ServiceInfo> = client.get_json("/v1/services").await?;
    if target.json {
        return print_json(&services);
    }
    if services.is_empty() {
        println!("No services deployed. Deploy one with `doppel deploy FILE.wasm --name NAME`.");
        return Ok(());
    }
    print_table(&ls_rows(&services));
    Ok(())
}

/// The table `doppel ls` prints.
fn ls_rows(services: &[ServiceInfo]) -> Vec<[String; 8]> {
    let mut rows = vec![[
        "NAME".to_string(),
        "VERSION".into(),
        "MODULE".into(),
        "SIZE".into(),
        "DEPLOYED".into(),
        "REQUESTS".into(),
        "ERRORS".into(),
        "STORED".into(),
    ]];
    for s in services {
        rows.push([
            s.name.clone(),
            s.version.to_string(),
            short(&s.module),
            human_size(s.size),
            human_time(s.deployed_at_ms),
            s.requests.to_string(),
            s.errors.to_string(),
            s.storage_bytes.map_or_else(|| "?".into(), human_size),
        ]);
    }
    rows
}

pub fn print_table<const N: usize>(rows: &[[String; N]]) {
    let mut widths = [0; N];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", line.join("  ").trim_end());
    }
}

/// `doppel rm`.
pub async fn rm(target: &Target, name: &str, purge: bool) -> anyhow::Result<()> {
    let client = Client::connect(target)?;
    let path = format!("/v1/services/{}?purge={purge}", segment(name));
    let removed: ServiceInfo = client
        .send(client.request(Method::DELETE, &path))
        .await?
        .json()
        .await?;
    if target.json {
        return print_json(&removed);
    }
    if purge {
        println!("Removed {} and deleted its data.", removed.name);
    } else {
        println!(
            "Removed {}. Its data ({}) is kept; deploy the name again to use it, or `doppel rm {} --purge` to delete it.",
            removed.name,
            removed.storage_bytes.map_or_else(|| "?".into(), human_size),
            removed.name
        );
    }
    Ok(())
}

/// `doppel logs`.
pub async fn logs(
    target: &Target,
    name: &str,
    follow: bool,
    tail: Option<usize>,
) -> anyhow::Result<()> {
    let client = Client::connect(target)?;
    let mut path = format!("/v1/services/{}/logs?follow={follow}", segment(name));
    if let Some(n) = tail {
        path.push_str(&format!("&tail={n}"));
    }
    let response = client.send(client.request(Method::GET, &path)).await?;
    let mut stream = response.bytes_stream();
    let mut pending = Vec::new();
    let mut out = std::io::stdout();
    while let Some(chunk) = stream.next().await {
        pending.extend_from_slice(&chunk.context("the log stream broke off")?);
        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
            let raw: Vec<u8> = pending.drain(..=end).collect();
            if target.json {
                out.write_all(&raw)?;
            } else {
                let line: LogLine = serde_json::from_slice(&raw)?;
                writeln!(
                    out,
                    "{} {:<6} {}",
                    human_time(line.time_ms),
                    line.stream,
                    line.line
                )?;
            }
            out.flush()?;
        }
    }
    Ok(())
}

/// `doppel kv`.
#[derive(Subcommand, Debug)]
pub enum Kv {
    /// List buckets (without --bucket) or the keys of a bucket.
    Ls {
        /// The service whose state to read.
        #[arg(long)]
        service: String,
        /// The bucket; "default" is what guests open as "" or "default".
        #[arg(long)]
        bucket: Option<String>,
        /// Only keys after this one (for paging).
        #[arg(long)]
        after: Option<String>,
        /// At most this many keys.
        #[arg(long, default_value_t = 1000)]
        limit: usize,
    },
    /// Print one value.
    Get {
        /// The service.
        #[arg(long)]
        service: String,
        /// The bucket.
        #[arg(long, default_value = "default")]
        bucket: String,
        /// The key.
        key: String,
    },
    /// Set one value.
    Put {
        /// The service.
        #[arg(long)]
        service: String,
        /// The bucket.
        #[arg(long, default_value = "default")]
        bucket: String,
        /// The key.
        key: String,
        /// The value (as text).
        value: String,
    },
    /// Delete one key.
    Rm {
        /// The service.
        #[arg(long)]
        service: String,
        /// The bucket.
        #[arg(long, default_value = "default")]
        bucket: String,
        /// The key.
        key: String,
    },
}

fn kv_path(service: &str, bucket: &str, key: &str) -> String {
    format!(
        "/v1/services/{}/kv/{}/{}",
        segment(service),
        segment(bucket),
        segment(key)
    )
}

impl Kv {
    pub async fn run(self, target: &Target) -> anyhow::Result<()> {
        let client = Client::connect(target)?;
        match self {
            Kv::Ls {
                service,
                bucket: None,
                ..
            } => {
                let buckets: Vec<String> = client
                    .get_json(&format!("/v1/services/{}/kv", segment(&service)))
                    .await?;
                if target.json {
                    return print_json(&buckets);
                }
                for b in buckets {
                    println!("{b}");
                }
            }
            Kv::Ls {
                service,
                bucket: Some(bucket),
                after,
                limit,
            } => {
                let mut path = format!(
                    "/v1/services/{}/kv/{}?limit={limit}",
                    segment(&service),
                    segment(&bucket)
                );
                if let Some(after) = after {
                    path.push_str(&format!("&after={}", segment(&after)));
                }
                let page: KeyPage = client.get_json(&path).await?;
                if target.json {
                    return print_json(&page);
                }
                for k in &page.keys {
                    println!("{k}");
                }
                if let Some(next) = page.next {
                    eprintln!("(more keys: add --after {next:?})");
                }
            }
            Kv::Get {
                service,
                bucket,
                key,
            } => {
                let value = client
                    .send(client.request(Method::GET, &kv_path(&service, &bucket, &key)))
                    .await?
                    .bytes()
                    .await?;
                if target.json {
                    return print_json(&serde_json::json!({
                        "key": key,
                        "value": String::from_utf8_lossy(&value),
                        "utf8": std::str::from_utf8(&value).is_ok(),
                    }));
                }
                let mut out = std::io::stdout();
                out.write_all(&value)?;
                if std::io::IsTerminal::is_terminal(&out) && !value.ends_with(b"\n") {
                    writeln!(out)?;
                }
            }
            Kv::Put {
                service,
                bucket,
                key,
                value,
            } => {
                client
                    .send(
                        client
                            .request(Method::PUT, &kv_path(&service, &bucket, &key))
                            .body(value),
                    )
                    .await?;
            }
            Kv::Rm {
                service,
                bucket,
                key,
            } => {
                client
                    .send(client.request(Method::DELETE, &kv_path(&service, &bucket, &key)))
                    .await?;
            }
        }
        Ok(())
    }
}
