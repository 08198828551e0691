//! `doppel drain`: move every service off a host.

use anyhow::Context as _;
use clap::Args;
use doppel_api::DrainRequest;
use reqwest::Method;

use crate::client::{Client, Target, segment};
use crate::progress::finish;

/// Flags of `doppel drain`.
#[derive(Args, Debug)]
pub struct Drain {
    #[command(flatten)]
    target: Target,
    /// The host.
    host: String,
    /// Then take the host out of the cluster too (hands over its consensus vote).
    #[arg(long)]
    remove: bool,
}

impl Drain {
    pub async fn run(self) -> anyhow::Result<()> {
        let (target, host, remove) = (&self.target, self.host.as_str(), self.remove);
        let client = Client::connect(target)?;
        let path = format!("/v1/hosts/{}/drain", segment(host));
        let response = client
            .send(
                client
                    .request(Method::POST, &path)
                    .json(&DrainRequest { remove }),
            )
            .await
            .with_context(|| format!("{host} was not drained"))?;
        let failed = || format!("{host} was not fully drained");
        let Some((done, _)) = finish(response, target.json, failed).await? else {
            return Ok(());
        };
        println!("{done}");
        if !remove {
            println!("  `doppel undrain {host}` lets services be placed on it again");
        }
        Ok(())
    }
}
