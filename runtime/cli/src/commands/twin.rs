//! `doppel twin`: this cluster as a standby that follows a primary's backup, and its promotion.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Subcommand;
use doppel_api::{FollowRequest, TwinSeen, TwinStatus};
use reqwest::Method;

use crate::client::{Client, Target};
use crate::output::print_json;

/// What `doppel twin` does.
#[derive(Subcommand, Debug)]
pub enum TwinAction {
    /// Make this (empty) cluster a standby twin of the primary whose backup is at URL: it takes
    /// the latest snapshot, then applies every segment shipped after it. Its services answer
    /// reads (with `x-doppel-twin-lag-ms`) and refuse writes until it is promoted.
    Follow {
        /// The primary's backup target: s3://BUCKET/PREFIX or file:///DIRECTORY.
        url: String,
        /// The age identity the backup is encrypted for. It is kept in this cluster's store, so
        /// the twin can read the backup; it is never shown again.
        #[arg(long)]
        identity: PathBuf,
        /// The twin's name in the primary's view (the heartbeats it leaves in the target):
        /// lower-case letters, digits and dashes. A random one if not given.
        #[arg(long)]
        name: Option<String>,
    },
    /// Make this standby the writable cluster at its last applied entry. It writes a new
    /// generation into the backup; the primary, when it sees it, refuses writes.
    Promote,
    /// What this cluster is: primary, standby (and how far behind), promoted, or fenced.
    Status,
}

/// Flags of `doppel twin`.
#[derive(clap::Args, Debug)]
pub struct Twin {
    #[command(flatten)]
    target: Target,
    #[command(subcommand)]
    action: TwinAction,
}

impl Twin {
    pub async fn run(self) -> anyhow::Result<()> {
        let client = Client::connect(&self.target)?;
        let status: TwinStatus = match self.action {
            TwinAction::Follow {
                url,
                identity,
                name,
            } => {
                if let Some(name) = &name {
                    doppel_backup::heartbeat::check_name(name)?;
                }
                let text = std::fs::read_to_string(&identity)
                    .with_context(|| format!("cannot read the identity {}", identity.display()))?;
                // Checked here too, so that a wrong file is named before anything is sent.
                doppel_backup::keys::Identity::parse(&text, &identity.display().to_string())?;
                let request = FollowRequest {
                    url,
                    identity: text,
                    name,
                };
                client
                    .send(client.request(Method::POST, "/v1/twin").json(&request))
                    .await?
                    .json()
                    .await
                    .context("while reading the host's answer")?
            }
            TwinAction::Promote => client.call_json(Method::POST, "/v1/twin/promote").await?,
            TwinAction::Status => client.get_json("/v1/twin").await?,
        };
        if self.target.json {
            return print_json(&status);
        }
        print!("{}", describe(&status));
        Ok(())
    }
}

/// The status in words (also used by `doppel status`).
pub fn describe(status: &TwinStatus) -> String {
    let url = status.url.as_deref().unwrap_or("?");
    let mut out = match status.role.as_str() {
        "standby" => format!(
            "standby twin {} of {url}: at the primary's index {}, current as of {} ms ago\n",
            status.name.as_deref().unwrap_or("?"),
            status.primary_index.unwrap_or(0),
            status.lag_ms.unwrap_or(0)
        ),
        "promoted" => format!(
            "promoted twin of {url}: generation {}, took over at the primary's index {} ({})\n",
            status.generation,
            status.primary_index.unwrap_or(0),
            doppel_backup::rfc3339(status.promoted_at_ms.unwrap_or(0))
        ),
        "fenced" => "FENCED: a twin was promoted; this cluster takes no writes\n".to_string(),
        _ => format!("primary (generation {})\n", status.generation),
    };
    let now = doppel_backup::now_ms();
    for seen in &status.twins {
        out.push_str(&format!("  {}: {}\n", seen.target, seen_line(seen, now)));
    }
    if status.role == "primary" && status.twins.is_empty() {
        out.push_str("  no twin follows its backup targets (none left a heartbeat)\n");
    }
    if let Some(why) = &status.refusal {
        out.push_str(&format!("  writes refused: {why}\n"));
    }
    if let Some(error) = &status.error {
        out.push_str(&format!(
            "  following failed: {error} (it goes on trying)\n"
        ));
    }
    out
}

/// A twin as its primary sees it, in words.
pub fn seen_line(seen: &TwinSeen, now_ms: u64) -> String {
    match (seen.primary_index, seen.reported_ms) {
        (Some(index), Some(at)) => format!(
            "twin {} at index {index} ({} entries behind), {} ms stale when it reported {} s ago",
            seen.twin,
            seen.behind.unwrap_or(0),
            seen.lag_ms.unwrap_or(0),
            now_ms.saturating_sub(at) / 1000
        ),
        _ => format!("twin {}: no heartbeat for over an hour", seen.twin),
    }
}
