//! `doppel undrain`: let services be placed on a drained host again.

use clap::Args;
use doppel_api::HostStatus;
use reqwest::Method;

use crate::client::{Client, Target, segment};
use crate::output::print_json;

/// Flags of `doppel undrain`.
#[derive(Args, Debug)]
pub struct Undrain {
    #[command(flatten)]
    target: Target,
    /// The host.
    host: String,
}

impl Undrain {
    pub async fn run(self) -> anyhow::Result<()> {
        let (target, host) = (&self.target, self.host.as_str());
        let client = Client::connect(target)?;
        let path = format!("/v1/hosts/{}/undrain", segment(host));
        let status: HostStatus = client.call_json(Method::POST, &path).await?;
        if target.json {
            return print_json(&status);
        }
        println!(
            "{} is no longer drained: services may be placed on it again (none moves back by itself; \
             use `doppel migrate`)",
            status.name
        );
        Ok(())
    }
}
