//! `doppel migrate`: move a service to another host with no failed request.

use anyhow::Context as _;
use clap::Args;
use doppel_api::{MigrateRequest, Progress};
use reqwest::Method;

use crate::client::{Client, Target, segment};
use crate::progress::finish;

/// Flags of `doppel migrate`.
#[derive(Args, Debug)]
pub struct Migrate {
    #[command(flatten)]
    target: Target,
    /// The service.
    name: String,
    /// A host name, or KEY=VALUE for the least busy eligible host with that label.
    #[arg(long)]
    to: String,
    /// Which active host to move it off, when it runs on several (default: the first).
    #[arg(long)]
    from: Option<String>,
}

impl Migrate {
    pub async fn run(self) -> anyhow::Result<()> {
        let (target, name, to) = (&self.target, self.name.as_str(), self.to.as_str());
        let from = self.from.clone();
        let client = Client::connect(target)?;
        let path = format!("/v1/services/{}/migrate", segment(name));
        let request = MigrateRequest {
            to: to.to_string(),
            from,
        };
        let response = client
            .send(client.request(Method::POST, &path).json(&request))
            .await
            .with_context(|| format!("{name} was not moved"))?;
        let failed = || format!("{name} was not moved");
        let Some((done, lines)) = finish(response, target.json, failed).await? else {
            return Ok(());
        };
        println!("{done}");
        for line in &lines {
            if let Progress::Moved(r) = line {
                println!(
                    "  target ready in {} ms; switched in {} ms; {} finished its {} request(s) in {} ms",
                    r.warm_ms, r.switch_ms, r.from, r.finished, r.drain_ms
                );
                println!(
                    "  {} forwarded {} request(s) to {} meanwhile; {} failed",
                    r.from, r.forwarded, r.to, r.errors
                );
            }
        }
        Ok(())
    }
}
