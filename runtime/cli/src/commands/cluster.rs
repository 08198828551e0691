//! `doppel cluster`: cluster-wide settings.

use anyhow::Context as _;
use clap::Subcommand;
use reqwest::Method;

use crate::client::{Client, Target};
use crate::progress::finish;

/// What `doppel cluster` does.
#[derive(Subcommand, Debug)]
pub enum ClusterAction {
    /// Print the cluster CA's certificate (public), for `--ca` on an operator's machine. Hosts
    /// join with `doppel hosts invite`, not with a lasting token.
    Ca,
    /// Replace the cluster CA with a new one, with no downtime: every host first trusts the new
    /// CA beside the old, then renews its certificate from it, then stops trusting the old one.
    /// A rotation that stopped (a host was down) goes on from where it stopped when run again.
    /// Needs an admin credential.
    RotateCa,
}

impl ClusterAction {
    pub async fn run(self, target: &Target) -> anyhow::Result<()> {
        match self {
            ClusterAction::Ca => {
                let client = Client::connect(target)?;
                let pem = client
                    .send(client.request(Method::GET, "/v1/cluster/ca"))
                    .await?
                    .text()
                    .await?;
                print!("{pem}");
                Ok(())
            }
            ClusterAction::RotateCa => {
                let client = Client::connect(target)?;
                let response = client
                    .send(client.request(Method::POST, "/v1/cluster/rotate-ca"))
                    .await
                    .context("the cluster CA was not rotated")?;
                let failed = || "the cluster CA was not rotated".to_string();
                if let Some((done, _)) = finish(response, target.json, failed).await? {
                    println!("{done}");
                }
                Ok(())
            }
        }
    }
}

/// Flags of `doppel cluster`.
#[derive(clap::Args, Debug)]
pub struct Cluster {
    #[command(flatten)]
    target: Target,
    #[command(subcommand)]
    action: ClusterAction,
}

impl Cluster {
    pub async fn run(self) -> anyhow::Result<()> {
        self.action.run(&self.target).await
    }
}
