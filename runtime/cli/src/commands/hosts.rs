//! `doppel hosts`: manage the cluster's hosts.

use clap::Subcommand;
use doppel_api::HostStatus;
use reqwest::Method;

use crate::client::{Client, Target, segment};
use crate::output::print_json;

/// What `doppel hosts` does.
#[derive(Subcommand, Debug)]
pub enum HostsAction {
    /// Remove a host from the cluster for good (it is dead, or leaving). Its data directory is
    /// no longer a member: to bring the machine back, start it with a fresh one and `--join`.
    Rm {
        /// The host's name (or id) as `doppel status` shows it.
        name: String,
    },
}

impl HostsAction {
    pub async fn run(self, target: &Target) -> anyhow::Result<()> {
        match self {
            HostsAction::Rm { name } => {
                let client = Client::connect(target)?;
                let path = format!("/v1/hosts/{}", segment(&name));
                let removed: HostStatus = client.call_json(Method::DELETE, &path).await?;
                if target.json {
                    return print_json(&removed);
                }
                println!(
                    "removed host {} ({}) from the cluster",
                    removed.name, removed.admin
                );
                Ok(())
            }
        }
    }
}

/// Flags of `doppel hosts`.
#[derive(clap::Args, Debug)]
pub struct Hosts {
    #[command(flatten)]
    target: Target,
    #[command(subcommand)]
    action: HostsAction,
}

impl Hosts {
    pub async fn run(self) -> anyhow::Result<()> {
        self.action.run(&self.target).await
    }
}
