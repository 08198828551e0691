//! `doppel backup`: the copy of the cluster kept outside it — a key for it, and where it goes.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Subcommand;
use doppel_api::{BackupInfo, BackupTarget};
use doppel_backup::keys::{Identity, Recipient};
use reqwest::Method;

use crate::client::{Client, Target, segment};
use crate::output::{print_json, print_table};
use crate::units::{human_size, human_time, parse_millis};

/// Lag past which `doppel backup ls` and `doppel status` warn.
pub const LAG_WARNING_MS: u64 = doppel_backup::ship::LAG_WARNING.as_millis() as u64;
/// A twin whose newest heartbeat is older than this is warned about: a few missed reports and
/// looks, not one late one.
const SILENT_TWIN_MS: u64 = 6 * doppel_backup::heartbeat::REPORT_EVERY.as_millis() as u64
    + doppel_backup::heartbeat::CHECK_EVERY.as_millis() as u64;

/// What `doppel backup` does.
#[derive(Subcommand, Debug)]
pub enum BackupAction {
    /// Make a new age identity for restoring, in FILE (owner-only; never overwritten), and print
    /// its public recipient as the last line. Keep FILE off the cluster: whoever holds it reads
    /// every backup. Identities made by `age-keygen` work too.
    Keygen {
        /// Where to write the identity.
        file: PathBuf,
    },
    /// Ship the cluster's state to a new target, encrypted to RECIPIENT.
    Add {
        /// A name for the target.
        name: String,
        /// Where: s3://BUCKET/PREFIX (credentials and endpoint from AWS_* on every host) or
        /// file:///DIRECTORY (a local or mounted directory on every host).
        url: String,
        /// The age recipient (age1…) backups are encrypted to.
        #[arg(long)]
        recipient: String,
        /// Have the store keep every object at least this long (30d, 1y…), even from the
        /// bucket's owner: S3 Object Lock in compliance mode. The bucket must have Object Lock
        /// enabled; s3:// targets only.
        #[arg(long, value_parser = parse_millis)]
        retain: Option<u64>,
    },
    /// List the targets and how far shipping to each has got.
    Ls,
    /// Stop shipping to a target (nothing there is deleted).
    Rm {
        /// The target's name.
        name: String,
    },
    /// Delete old backups from storage, keeping every point in time of the last DURATION.
    ///
    /// Talks to the storage directly, with the storage's own credentials (AWS_* in this
    /// environment), not through the cluster: the cluster's credentials may only create objects.
    /// The chain is checked whole first; a damaged backup is not pruned.
    Prune {
        /// The backup: s3://BUCKET/PREFIX or file:///DIRECTORY.
        url: String,
        /// How far back restores must stay possible (30d, 12h…).
        #[arg(long, value_parser = parse_millis)]
        keep: u64,
        /// Say what would be deleted, delete nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

/// Flags of `doppel backup`.
#[derive(clap::Args, Debug)]
pub struct Backup {
    #[command(flatten)]
    target: Target,
    #[command(subcommand)]
    action: BackupAction,
}

impl Backup {
    pub async fn run(self) -> anyhow::Result<()> {
        let target = &self.target;
        match self.action {
            BackupAction::Keygen { file } => {
                let identity = Identity::generate();
                identity.write_new(&file)?;
                let recipient = identity.recipient().to_string();
                if target.json {
                    return print_json(&serde_json::json!({
                        "identity_file": file.display().to_string(),
                        "recipient": recipient,
                    }));
                }
                eprintln!(
                    "wrote a new identity to {} (owner-only); keep it off the cluster. Its recipient:",
                    file.display()
                );
                println!("{recipient}");
                Ok(())
            }
            BackupAction::Add {
                name,
                url,
                recipient,
                retain,
            } => {
                // Checked here too, so that a typo is named before anything is sent.
                Recipient::parse(&recipient)?;
                doppel_backup::location::check_url(&url)?;
                let client = Client::connect(target)?;
                let request = BackupTarget {
                    name,
                    url,
                    recipient,
                    added_ms: 0,
                    retain_ms: retain,
                };
                let added: BackupTarget = client
                    .send(client.request(Method::POST, "/v1/backups").json(&request))
                    .await?
                    .json()
                    .await
                    .context("the host answered something unexpected")?;
                if target.json {
                    return print_json(&added);
                }
                println!(
                    "added backup target {} ({}); the leader starts with a snapshot within a \
                     second. `doppel backup ls` shows how far it has got.",
                    added.name, added.url
                );
                Ok(())
            }
            BackupAction::Ls => {
                let client = Client::connect(target)?;
                let all: Vec<BackupInfo> = client.get_json("/v1/backups").await?;
                if target.json {
                    return print_json(&all);
                }
                if all.is_empty() {
                    println!(
                        "No backup targets. Add one with `doppel backup add NAME URL --recipient \
                         KEY` (`doppel backup keygen FILE` makes a key)."
                    );
                    return Ok(());
                }
                print_targets(&all);
                Ok(())
            }
            BackupAction::Prune { url, keep, dry_run } => {
                let location = doppel_backup::location::Location::open(&url)?;
                let cutoff = doppel_backup::now_ms().saturating_sub(keep);
                let pruned = doppel_backup::chain::prune(&location, cutoff, dry_run)
                    .await
                    .with_context(|| format!("cannot prune {url}"))?;
                if target.json {
                    return print_json(&pruned);
                }
                let verb = if dry_run { "would delete" } else { "deleted" };
                match &pruned.starts_at {
                    None => println!(
                        "nothing to prune: no snapshot in {url} is older than {}",
                        doppel_backup::rfc3339(cutoff)
                    ),
                    Some(start) => println!(
                        "{verb} {} manifests and {} objects ({}); the backup starts at {start}",
                        pruned.manifests,
                        pruned.objects,
                        human_size(pruned.bytes)
                    ),
                }
                if pruned.twin_reports > 0 {
                    println!("{verb} {} old twin heartbeats", pruned.twin_reports);
                }
                Ok(())
            }
            BackupAction::Rm { name } => {
                let client = Client::connect(target)?;
                let path = format!("/v1/backups/{}", segment(&name));
                let removed: BackupTarget = client.call_json(Method::DELETE, &path).await?;
                if target.json {
                    return print_json(&removed);
                }
                println!(
                    "stopped shipping to {} ({}); what is there stays (`doppel backup prune` \
                     deletes old backups with the store's own credentials)",
                    removed.name, removed.url
                );
                Ok(())
            }
        }
    }
}

/// The table of targets.
pub fn rows(all: &[BackupInfo]) -> Vec<[String; 6]> {
    let mut rows = vec![[
        "BACKUP".to_string(),
        "URL".into(),
        "SHIPPED INDEX".into(),
        "LAG".into(),
        "SHIPPED BY LEADER".into(),
        "LAST SNAPSHOT".into(),
    ]];
    for info in all {
        let (index, lag, shipped, snapshot) = match &info.status {
            Some(s) => (
                format!("{} of {}", s.shipped_index, s.applied_index),
                format!("{} ms", s.lag_ms),
                format!("{} objects, {}", s.objects, human_size(s.bytes)),
                if s.last_snapshot_ms == 0 {
                    "-".into()
                } else {
                    human_time(s.last_snapshot_ms)
                },
            ),
            None => ("?".into(), "?".into(), "-".into(), "-".into()),
        };
        rows.push([
            info.target.name.clone(),
            match info.target.retain_ms {
                Some(ms) => format!(
                    "{} (locked {})",
                    info.target.url,
                    humantime::format_duration(std::time::Duration::from_millis(ms))
                ),
                None => info.target.url.clone(),
            },
            index,
            lag,
            shipped,
            snapshot,
        ]);
    }
    rows
}

/// The targets' table, the twins that follow them, and what an operator should hear.
pub fn print_targets(all: &[BackupInfo]) {
    print_table(&rows(all));
    for info in all {
        for seen in info.status.iter().flat_map(|s| &s.twins) {
            println!(
                "{}: {}",
                info.target.name,
                super::twin::seen_line(seen, doppel_backup::now_ms())
            );
        }
    }
    for info in all {
        for warning in warnings(info) {
            println!("warning: {warning}");
        }
    }
}

/// What an operator should hear about a target and the twins that follow it.
pub fn warnings(info: &BackupInfo) -> Vec<String> {
    let name = &info.target.name;
    let Some(s) = &info.status else {
        return vec![format!(
            "{name}: the leader reports no shipping yet (just added, or no leader)"
        )];
    };
    let mut all = Vec::new();
    if let Some(error) = &s.error {
        all.push(format!("{name}: shipping fails: {error}"));
    } else if s.lag_ms > LAG_WARNING_MS {
        all.push(format!(
            "{name}: the backup lags {} s behind the cluster",
            s.lag_ms / 1000
        ));
    }
    let now = doppel_backup::now_ms();
    for seen in &s.twins {
        match (seen.reported_ms, seen.lag_ms) {
            (None, _) => all.push(format!(
                "{name}: twin {} has sent no heartbeat for over an hour",
                seen.twin
            )),
            (Some(at), _) if now.saturating_sub(at) > SILENT_TWIN_MS => all.push(format!(
                "{name}: twin {} has sent no heartbeat for {} s",
                seen.twin,
                now.saturating_sub(at) / 1000
            )),
            (_, Some(lag)) if lag > LAG_WARNING_MS => all.push(format!(
                "{name}: twin {} lags {} s behind",
                seen.twin,
                lag / 1000
            )),
            _ => {}
        }
    }
    all
}
