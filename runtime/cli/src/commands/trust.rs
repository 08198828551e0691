//! `doppel trust`: the keys the cluster trusts to sign components, and whether every deploy
//! must be signed. Changes need an admin credential.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Subcommand;
use doppel_api::signing::{AddSigner, RequireSignatures, SignerInfo, TrustPolicy};
use reqwest::Method;

use crate::client::{Client, Target, segment};
use crate::output::{print_json, print_table};
use crate::units::human_time;

/// What `doppel trust` does.
#[derive(Subcommand, Debug)]
pub enum TrustAction {
    /// Trust a public key (the `.pub` file of `doppel keygen`) to sign components.
    Add {
        /// A name for the key: deploys and `doppel ls` say who signed by it.
        name: String,
        /// The public key file.
        key: PathBuf,
    },
    /// List the trusted keys and whether signatures are required.
    Ls,
    /// Stop trusting a key: new deploys signed only by it are refused (running services stay).
    Rm {
        /// Its name.
        name: String,
    },
    /// Require (`on`) or stop requiring (`off`) a trusted signature on every deploy.
    Require {
        /// `on` or `off`.
        #[arg(value_parser = ["on", "off"])]
        state: String,
    },
}

/// Flags of `doppel trust`.
#[derive(clap::Args, Debug)]
pub struct Trust {
    #[command(flatten)]
    target: Target,
    #[command(subcommand)]
    action: TrustAction,
}

impl Trust {
    pub async fn run(self) -> anyhow::Result<()> {
        let target = &self.target;
        let client = Client::connect(target)?;
        let policy = match self.action {
            TrustAction::Add { name, key } => {
                let public_key = std::fs::read_to_string(&key)
                    .with_context(|| format!("cannot read {}", key.display()))?;
                let request = AddSigner { name, public_key };
                let added: SignerInfo = client
                    .send(
                        client
                            .request(Method::POST, "/v1/trust/signers")
                            .json(&request),
                    )
                    .await?
                    .json()
                    .await?;
                if target.json {
                    return print_json(&added);
                }
                println!("trusting {} ({})", added.name, added.fingerprint);
                return Ok(());
            }
            TrustAction::Rm { name } => {
                let path = format!("/v1/trust/signers/{}", segment(&name));
                let removed: SignerInfo = client.call_json(Method::DELETE, &path).await?;
                if target.json {
                    return print_json(&removed);
                }
                println!(
                    "no longer trusting {} ({})",
                    removed.name, removed.fingerprint
                );
                return Ok(());
            }
            TrustAction::Require { state } => {
                let request = RequireSignatures {
                    required: state == "on",
                };
                client
                    .send(
                        client
                            .request(Method::PUT, "/v1/trust/required")
                            .json(&request),
                    )
                    .await?
                    .json::<TrustPolicy>()
                    .await?
            }
            TrustAction::Ls => client.get_json::<TrustPolicy>("/v1/trust").await?,
        };
        if target.json {
            return print_json(&policy);
        }
        println!(
            "signatures: {}",
            if policy.signatures_required {
                "required for every deploy"
            } else {
                "required only by services deployed with --require-signatures"
            }
        );
        let mut rows = vec![[
            "NAME".to_string(),
            "FINGERPRINT".into(),
            "ADDED".into(),
            "BY".into(),
        ]];
        for s in &policy.signers {
            rows.push([
                s.name.clone(),
                s.fingerprint.clone(),
                human_time(s.added_ms),
                s.added_by.clone(),
            ]);
        }
        print_table(&rows);
        Ok(())
    }
}
