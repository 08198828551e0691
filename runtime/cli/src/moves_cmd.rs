//! `doppel migrate`, `doppel drain`, `doppel undrain`, `doppel events`: moving services between
//! hosts, and the history of where they ran.

use std::time::Duration;

use anyhow::{Context as _, bail};
use doppel_api::{DrainRequest, HostStatus, MigrateRequest, PlacementEvent, Progress};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::Method;

use crate::client::{Client, Target, segment};
use crate::commands::{print_json, print_table};
use crate::units::human_time;

/// Reads a stream of progress lines, showing each step on a spinner; returns every line.
async fn follow(response: reqwest::Response, json: bool) -> anyhow::Result<Vec<Progress>> {
    let spinner = if json || !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        ProgressBar::hidden()
    } else {
        let bar = ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.enable_steady_tick(Duration::from_millis(100));
        bar
    };
    let mut lines = Vec::new();
    let mut pending = Vec::new();
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        pending.extend_from_slice(&chunk.context("the host stopped answering mid-way")?);
        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            let progress: Progress = serde_json::from_slice(&line)
                .with_context(|| "the host sent a progress line this CLI does not understand")?;
            match &progress {
                // Steps go to stdout, above the spinner (which only a terminal shows).
                Progress::Step { text } if !json => {
                    spinner.suspend(|| println!("  {text}"));
                    spinner.set_message(text.clone());
                }
                Progress::Step { .. } => {}
                Progress::Moved(_) | Progress::Done { .. } | Progress::Failed { .. } => {}
            }
            lines.push(progress);
        }
    }
    spinner.finish_and_clear();
    Ok(lines)
}

/// The outcome of a progress stream: its last line must say done.
fn outcome(lines: &[Progress]) -> anyhow::Result<&str> {
    match lines.last() {
        Some(Progress::Done { text }) => Ok(text),
        Some(Progress::Failed { error }) => bail!("{error}"),
        _ => bail!("the host stopped before saying whether it finished; see `doppel events`"),
    }
}

/// `doppel migrate NAME --to HOST`.
pub async fn migrate(
    target: &Target,
    name: &str,
    to: &str,
    from: Option<String>,
) -> anyhow::Result<()> {
    let client = Client::connect(target)?;
    let path = format!("/v1/services/{}/migrate", segment(name));
    let request = MigrateRequest {
        to: to.to_string(),
        from,
    };
    let response = client
        .send(client.request(Method::POST, &path).json(&request))
        .await
        .with_context(|| format!("{name} was not moved"))?;
    let lines = follow(response, target.json).await?;
    if target.json {
        print_json(&lines)?;
        return outcome(&lines).map(|_| ());
    }
    let done = outcome(&lines).with_context(|| format!("{name} was not moved"))?;
    println!("{done}");
    for line in &lines {
        if let Progress::Moved(r) = line {
            println!(
                "  target ready in {} ms; switched in {} ms; {} finished its {} request(s) in {} ms",
                r.warm_ms, r.switch_ms, r.from, r.finished, r.drain_ms
            );
            println!(
                "  {} forwarded {} request(s) to {} meanwhile; {} failed",
                r.from, r.forwarded, r.to, r.errors
            );
        }
    }
    Ok(())
}

/// `doppel drain HOST [--remove]`.
pub async fn drain(target: &Target, host: &str, remove: bool) -> anyhow::Result<()> {
    let client = Client::connect(target)?;
    let path = format!("/v1/hosts/{}/drain", segment(host));
    let response = client
        .send(
            client
                .request(Method::POST, &path)
                .json(&DrainRequest { remove }),
        )
        .await
        .with_context(|| format!("{host} was not drained"))?;
    let lines = follow(response, target.json).await?;
    if target.json {
        print_json(&lines)?;
        return outcome(&lines).map(|_| ());
    }
    let done = outcome(&lines).with_context(|| format!("{host} was not fully drained"))?;
    println!("{done}");
    if !remove {
        println!("  `doppel undrain {host}` lets services be placed on it again");
    }
    Ok(())
}

/// `doppel undrain HOST`.
pub async fn undrain(target: &Target, host: &str) -> anyhow::Result<()> {
    let client = Client::connect(target)?;
    let path = format!("/v1/hosts/{}/undrain", segment(host));
    let status: HostStatus = client
        .send(client.request(Method::POST, &path))
        .await?
        .json()
        .await?;
    if target.json {
        return print_json(&status);
    }
    println!(
        "{} is no longer drained: services may be placed on it again (none moves back by itself; \
         use `doppel migrate`)",
        status.name
    );
    Ok(())
}

/// `doppel events [SERVICE]`.
pub async fn events(target: &Target, service: Option<&str>, limit: usize) -> anyhow::Result<()> {
    let client = Client::connect(target)?;
    let mut path = format!("/v1/events?limit={limit}");
    if let Some(service) = service {
        path.push_str(&format!("&service={}", segment(service)));
    }
    let events: Vec<PlacementEvent> = client.get_json(&path).await?;
    if target.json {
        return print_json(&events);
    }
    if events.is_empty() {
        println!("No placement changes recorded yet.");
        return Ok(());
    }
    let mut rows = vec![[
        "TIME".to_string(),
        "SERVICE".into(),
        "EPOCH".into(),
        "ACTIVE ON".into(),
        "CAUSE".into(),
        "BY".into(),
    ]];
    for e in &events {
        let mut active = if e.active.is_empty() {
            "nowhere".to_string()
        } else {
            e.active.join(", ")
        };
        if !e.leaving.is_empty() {
            active.push_str(&format!(" (leaving: {})", e.leaving.join(", ")));
        }
        let mut cause = e.cause.clone();
        if let Some(unmet) = &e.unmet {
            cause.push_str(&format!(" [rules not met: {unmet}]"));
        }
        rows.push([
            human_time(e.time_ms),
            e.service.clone(),
            e.epoch.to_string(),
            active,
            cause,
            e.actor.clone(),
        ]);
    }
    print_table(&rows);
    Ok(())
}
