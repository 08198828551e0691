//! `doppel hosts`: manage the cluster's hosts.

use clap::Subcommand;
use doppel_api::{HostStatus, InvitationAnswer, InviteRequest};
use reqwest::Method;

use crate::client::{Client, Target, segment};
use crate::output::print_json;

/// What `doppel hosts` does.
#[derive(Subcommand, Debug)]
pub enum HostsAction {
    /// Invite a host: prints a token good for one join, within --expires, by that name and with
    /// those labels (bound into its certificate; the host cannot claim others).
    Invite {
        /// The name the host will have.
        name: String,
        /// A label it will carry, repeatable (`--label jurisdiction=de`).
        #[arg(long = "label", value_name = "KEY=VALUE", value_parser = doppel_api::parse_label)]
        labels: Vec<(String, String)>,
        /// How long the invitation stays good (at most 7 days).
        #[arg(long, default_value = "1h", value_parser = crate::units::parse_millis)]
        expires: u64,
    },
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
            HostsAction::Invite {
                name,
                labels,
                expires,
            } => {
                let client = Client::connect(target)?;
                let request = InviteRequest {
                    name,
                    labels: labels.into_iter().collect(),
                    expires_secs: expires.div_ceil(1000),
                };
                let answer: InvitationAnswer = client
                    .send(
                        client
                            .request(Method::POST, "/v1/hosts/invitations")
                            .json(&request),
                    )
                    .await?
                    .json()
                    .await?;
                if target.json {
                    return print_json(&answer);
                }
                let peer = answer.peers.first().cloned().unwrap_or_default();
                eprintln!(
                    "invited {} for one join within {} s; on the new machine run:",
                    answer.name, answer.expires_secs
                );
                println!("doppel host --join {peer} --token {}", answer.token);
                Ok(())
            }
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
