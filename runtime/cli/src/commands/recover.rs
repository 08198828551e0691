//! `doppel recover --force-new-cluster`: a new one-host cluster from a stopped survivor's own
//! state, when a majority of its cluster is lost for good.

use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use doppel_backup::recover::{Recovered, Survivor};

use crate::output::print_json;

/// How long a member's address has to accept a connection to count as reachable.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Flags of `doppel recover`.
#[derive(Args, Debug)]
pub struct Recover {
    /// Start a new one-member cluster from this host's own state (the only recovery there is;
    /// the flag says that you mean it).
    #[arg(long)]
    force_new_cluster: bool,
    /// The stopped host's data directory.
    #[arg(long)]
    data: PathBuf,
    /// Do not ask for confirmation.
    #[arg(long)]
    yes: bool,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

impl Recover {
    pub async fn run(self) -> anyhow::Result<()> {
        if !self.force_new_cluster {
            anyhow::bail!(
                "say --force-new-cluster: this starts a new cluster from this host's state alone \
                 (for when a majority of its cluster is lost for good)"
            );
        }
        let data = &self.data;
        let _lock = doppel_host::lock_data_dir(data)
            .context("stop the host before recovering from its data directory")?;
        let survivor = Survivor::open(data)
            .with_context(|| format!("cannot recover from {}", data.display()))?;
        let others = survivor.others(PROBE_TIMEOUT).await;
        if let Some(why) = survivor.refusal(&others) {
            anyhow::bail!("refusing to force a new cluster: {why}");
        }
        let survey = &survivor.survey;
        if !self.json {
            println!(
                "host {} of a {}-member cluster; unreachable: {}",
                survivor.id(),
                others.len() + 1,
                others
                    .iter()
                    .map(|o| format!("{} ({})", o.id, o.addr))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            println!(
                "  its log reaches index {}; it knew entries up to {} committed and had applied up to {}",
                survey.last, survey.committed, survey.applied
            );
        }
        if !self.yes {
            confirm()?;
        }
        let recovered = survivor
            .recover(others)
            .with_context(|| format!("cannot recover from {}", data.display()))?;
        if self.json {
            return print_json(&recovered);
        }
        report(&recovered, data);
        Ok(())
    }
}

/// Asks on the terminal; refuses without one (scripts say `--yes`).
fn confirm() -> anyhow::Result<()> {
    if !std::io::stdin().is_terminal() {
        anyhow::bail!("refusing without confirmation: no terminal to ask on (pass --yes)");
    }
    print!(
        "The other members will no longer be part of this host's cluster; they rejoin a new one \
         afresh. Type \"force\" to go on: "
    );
    std::io::stdout().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    if answer.trim() != "force" {
        anyhow::bail!("not confirmed; nothing was changed");
    }
    Ok(())
}

fn report(recovered: &Recovered, data: &std::path::Path) {
    println!(
        "recovered {} service(s) at index {}: {}",
        recovered.services.len(),
        recovered.index,
        recovered.services.join(", ")
    );
    println!("  {} keys, state hash {}", recovered.keys, recovered.hash);
    if recovered.index > recovered.committed {
        println!(
            "  entries {}..={} are kept though this host never learnt they were committed; \
             the lost leader may have acknowledged them",
            recovered.committed + 1,
            recovered.index
        );
    }
    println!(
        "  missing: whatever the lost members committed after index {} (this host cannot know \
         how much)",
        recovered.index
    );
    println!(
        "  the old membership (raft storage, certificates, identity) is kept in {}",
        recovered.superseded.display()
    );
    println!(
        "Start it with `doppel host --data {}`: it begins a new cluster with a new CA and admin \
         credential, and the other hosts join it with invitations, from empty data directories.",
        data.display()
    );
}
