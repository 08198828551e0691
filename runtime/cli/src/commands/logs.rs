//! `doppel logs`: what a service wrote, and what the host noted about it.

use std::io::Write as _;

use anyhow::Context as _;
use clap::Args;
use doppel_api::LogLine;
use futures::StreamExt;
use reqwest::Method;

use crate::client::{Client, Target, segment};
use crate::output::printable;
use crate::units::human_time;

/// Flags of `doppel logs`.
#[derive(Args, Debug)]
pub struct Logs {
    #[command(flatten)]
    target: Target,
    /// The service.
    name: String,
    /// Keep printing new lines as they come.
    #[arg(long, short)]
    follow: bool,
    /// Only the last N lines.
    #[arg(long)]
    tail: Option<usize>,
}

impl Logs {
    pub async fn run(self) -> anyhow::Result<()> {
        let (target, name, follow, tail) =
            (&self.target, self.name.as_str(), self.follow, self.tail);
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
                        printable(&line.line)
                    )?;
                }
                out.flush()?;
            }
        }
        Ok(())
    }
}
