//! `doppel rm`: remove a service, and with `--purge` its data.

use clap::Args;
use doppel_api::ServiceInfo;
use reqwest::Method;

use crate::client::{Client, Target, segment};
use crate::output::print_json;
use crate::units::human_size;

/// Flags of `doppel rm`.
#[derive(Args, Debug)]
pub struct Rm {
    #[command(flatten)]
    target: Target,
    /// The service.
    name: String,
    /// Also delete every bucket of the service.
    #[arg(long)]
    purge: bool,
}

impl Rm {
    pub async fn run(self) -> anyhow::Result<()> {
        let (target, name, purge) = (&self.target, self.name.as_str(), self.purge);
        let client = Client::connect(target)?;
        let path = format!("/v1/services/{}?purge={purge}", segment(name));
        let removed: ServiceInfo = client.call_json(Method::DELETE, &path).await?;
        if target.json {
            return print_json(&removed);
        }
        if purge {
            println!("Removed {} and deleted its data.", removed.name);
        } else {
            println!(
                "Removed {}. Its data ({}) is kept; deploy the name again to use it, or `doppel rm {} --purge` to delete it.",
                removed.name,
                removed.storage_bytes.map_or_else(|| "?".into(), human_size),
                removed.name
            );
        }
        Ok(())
    }
}
