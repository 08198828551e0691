//! `doppel cluster`: cluster-wide settings.

use clap::Subcommand;
use reqwest::Method;

use crate::client::{Client, Target};

/// What `doppel cluster` does.
#[derive(Subcommand, Debug)]
pub enum ClusterAction {
    /// Print the cluster CA's certificate (public), for `--ca` on an operator's machine. Hosts
    /// join with `doppel hosts invite`, not with a lasting token.
    Ca,
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
