//! `doppel tokens`: named operator credentials with roles.

use clap::Subcommand;
use doppel_api::{NewToken, Role, TokenInfo, TokenRequest};
use reqwest::Method;

use crate::client::{Client, Target, segment};
use crate::output::{print_json, print_table};
use crate::units::{human_time, parse_millis};

/// What `doppel tokens` does.
#[derive(Subcommand, Debug)]
pub enum TokensAction {
    /// Make a credential and print it (once: the cluster keeps only its hash).
    Create {
        /// Whose it is: the name every event and audit entry it makes carries.
        name: String,
        /// What it may do: viewer (reads), operator (also deploys, migrates, drains, reads and
        /// writes services' records), admin (also manages hosts and credentials).
        #[arg(long, value_parser = parse_role)]
        role: Role,
        /// How long it stays good (default: until revoked).
        #[arg(long, value_parser = parse_millis)]
        expires: Option<u64>,
    },
    /// List the credentials (never their secrets).
    Ls,
    /// Revoke a credential: every host refuses it from then on.
    Revoke {
        /// Its name.
        name: String,
    },
}

fn parse_role(text: &str) -> Result<Role, String> {
    text.parse()
}

impl TokensAction {
    pub async fn run(self, target: &Target) -> anyhow::Result<()> {
        let client = Client::connect(target)?;
        match self {
            TokensAction::Create {
                name,
                role,
                expires,
            } => {
                let request = TokenRequest {
                    name,
                    role,
                    expires_secs: expires.map(|ms| ms.div_ceil(1000)),
                };
                let made: NewToken = client
                    .send(client.request(Method::POST, "/v1/tokens").json(&request))
                    .await?
                    .json()
                    .await?;
                if target.json {
                    return print_json(&made);
                }
                eprintln!(
                    "made credential {} ({}); it is shown only now:",
                    made.info.name, made.info.role
                );
                println!("{}", made.token);
                Ok(())
            }
            TokensAction::Ls => {
                let all: Vec<TokenInfo> = client.get_json("/v1/tokens").await?;
                if target.json {
                    return print_json(&all);
                }
                let mut rows = vec![[
                    "NAME".to_string(),
                    "ROLE".into(),
                    "CREATED".into(),
                    "BY".into(),
                    "EXPIRES".into(),
                    "STATE".into(),
                ]];
                for t in &all {
                    rows.push([
                        t.name.clone(),
                        t.role.to_string(),
                        human_time(t.created_ms),
                        t.created_by.clone(),
                        t.expires_ms.map_or("never".into(), human_time),
                        t.revoked_ms
                            .map_or("good".into(), |at| format!("revoked {}", human_time(at))),
                    ]);
                }
                print_table(&rows);
                Ok(())
            }
            TokensAction::Revoke { name } => {
                let path = format!("/v1/tokens/{}", segment(&name));
                let revoked: TokenInfo = client.call_json(Method::DELETE, &path).await?;
                if target.json {
                    return print_json(&revoked);
                }
                println!("revoked credential {}", revoked.name);
                Ok(())
            }
        }
    }
}

/// Flags of `doppel tokens`.
#[derive(clap::Args, Debug)]
pub struct Tokens {
    #[command(flatten)]
    target: Target,
    #[command(subcommand)]
    action: TokensAction,
}

impl Tokens {
    pub async fn run(self) -> anyhow::Result<()> {
        self.action.run(&self.target).await
    }
}
