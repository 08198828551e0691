//! `doppel cluster`: cluster-wide settings.

use clap::Subcommand;
use reqwest::Method;

use crate::client::{Client, Target};

/// What `doppel cluster` does.
#[derive(Subcommand, Debug)]
pub enum ClusterAction {
    /// Print the token another host needs to join: `doppel host --join URL --token TOKEN`.
    Token,
}

impl ClusterAction {
    pub async fn run(self, target: &Target) -> anyhow::Result<()> {
        match self {
            ClusterAction::Token => {
                let client = Client::connect(target)?;
                let token = client
                    .send(client.request(Method::GET, "/v1/cluster/token"))
                    .await?
                    .text()
                    .await?;
                println!("{token}");
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
