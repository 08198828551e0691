//! `doppel restore`: a new data directory rebuilt from a backup, at any point it holds.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;
use doppel_backup::keys::Identity;
use doppel_backup::location::Location;
use doppel_backup::restore::{self, Point, Progress};
use doppel_host::sealing::{Kek, KeyError};
use indicatif::{ProgressBar, ProgressStyle};

use crate::output::print_json;

/// Flags of `doppel restore`.
#[derive(Args, Debug)]
pub struct Restore {
    /// The backup: s3://BUCKET/PREFIX or file:///DIRECTORY (as given to `doppel backup add`).
    url: String,
    /// The age identity the backup was encrypted for (from `doppel backup keygen` or
    /// `age-keygen`).
    #[arg(long)]
    identity: PathBuf,
    /// The new data directory; `doppel host --data DIR` then starts a new one-host cluster with
    /// the restored services and their data.
    #[arg(long)]
    data: PathBuf,
    #[command(flatten)]
    point: PointArgs,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
    /// The key-encryption key of the host that will start on the restored directory: the
    /// backup's cluster key is kept there under it.
    #[command(flatten)]
    key: super::host::KeyArgs,
}

/// Where in a backup's history to restore to (latest when none is given).
#[derive(Args, Debug)]
pub struct PointArgs {
    /// Restore the state as of this time (RFC 3339, e.g. 2026-12-04T10:00:00Z).
    #[arg(long, conflicts_with_all = ["before_event", "index"])]
    at: Option<String>,
    /// Restore the state just before the admin action recorded as this audit entry (`doppel
    /// audit` numbers them).
    #[arg(long, conflicts_with = "index")]
    before_event: Option<u64>,
    /// Restore the state up to and including this raft index of the old cluster.
    #[arg(long)]
    index: Option<u64>,
}

impl PointArgs {
    /// The point asked for.
    pub fn point(&self) -> anyhow::Result<Point> {
        Ok(match (&self.at, self.before_event, self.index) {
            (Some(at), _, _) => Point::Time(parse_time(at)?),
            (_, Some(seq), _) => Point::BeforeEvent(seq),
            (_, _, Some(index)) => Point::Index(index),
            _ => Point::Latest,
        })
    }

    /// The point as the flags said it.
    pub fn describe(&self) -> String {
        match (&self.at, self.before_event, self.index) {
            (Some(at), _, _) => format!("--at {at}"),
            (_, Some(seq), _) => format!("--before-event {seq}"),
            (_, _, Some(index)) => format!("--index {index}"),
            _ => "the latest state".to_string(),
        }
    }
}

/// Keeps the backup's cluster key in the restored directory `data`, under `kek`.
pub async fn keep_cluster_key(
    location: &Location,
    identity: &Identity,
    data: &std::path::Path,
    kek: &Kek,
) -> anyhow::Result<()> {
    let carried = doppel_backup::cluster_key::read(location, identity)
        .await?
        .context(
            "the backup carries no cluster key (keys/cluster): it was made before encryption at \
             rest, and its data cannot be opened by this version",
        )?;
    doppel_host::sealing::adopt_carried(data, kek, &carried)?;
    Ok(())
}

/// A restore's progress on a bar (hidden when `hidden`, e.g. for `--json` or no terminal).
pub struct Bar(pub ProgressBar);

impl Bar {
    pub fn new(hidden: bool) -> Bar {
        Bar(
            if hidden || !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
                ProgressBar::hidden()
            } else {
                ProgressBar::new(0).with_style(
                    ProgressStyle::with_template(
                        "{msg} [{bar:30}] {pos}/{len} objects ({elapsed})",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
                )
            },
        )
    }
}

impl Progress for Bar {
    fn objects(&mut self, done: u64, total: u64) {
        self.0.set_length(total);
        self.0.set_position(done);
    }
    fn phase(&mut self, what: &str) {
        self.0.set_message(what.to_string());
    }
}

impl Restore {
    pub async fn run(self) -> anyhow::Result<()> {
        let point = self.point.point()?;
        let source = self.key.source().ok_or(KeyError::Missing)?;
        let kek = Kek::load(&source)?;
        let identity = Identity::read(&self.identity)?;
        let location = Location::open(&self.url)?;
        let mut progress = Bar::new(self.json);
        let restored = restore::restore(&location, &identity, &self.data, point, &mut progress)
            .await
            .with_context(|| format!("cannot restore from {}", self.url))?;
        keep_cluster_key(&location, &identity, &self.data, &kek).await?;
        progress.0.finish_and_clear();
        if self.json {
            return print_json(&restored);
        }
        println!("restored {} into {}", restored.url, self.data.display());
        println!(
            "  state at index {} (last write shipped {})",
            restored.index,
            doppel_backup::rfc3339(restored.last_write_ms)
        );
        println!(
            "  {} service(s): {}",
            restored.services.len(),
            restored.services.join(", ")
        );
        println!("  {} keys, state hash {}", restored.keys, restored.hash);
        println!(
            "  read {} objects ({} bytes), signed by {}…",
            restored.objects,
            restored.object_bytes,
            &restored.signer[..16.min(restored.signer.len())]
        );
        println!(
            "Start it with `doppel host --data {}`; `doppel status --hash` then answers the same \
             hash.",
            self.data.display()
        );
        Ok(())
    }
}

fn parse_time(text: &str) -> anyhow::Result<u64> {
    let at = humantime::parse_rfc3339_weak(text).with_context(|| {
        format!("{text:?} is not a time in RFC 3339 (e.g. 2026-12-04T10:00:00Z)")
    })?;
    let ms = at
        .duration_since(std::time::UNIX_EPOCH)
        .context("a time before 1970")?
        .as_millis();
    Ok(u64::try_from(ms).unwrap_or(u64::MAX))
}
