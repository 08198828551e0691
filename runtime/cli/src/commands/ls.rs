//! `doppel ls`: the deployed services.

use clap::Args;
use doppel_api::ServiceInfo;

use crate::client::{Client, Target};
use crate::output::{print_json, print_table, short};
use crate::units::{human_size, human_time};

/// Flags of `doppel ls`.
#[derive(Args, Debug)]
pub struct Ls {
    #[command(flatten)]
    target: Target,
}

impl Ls {
    pub async fn run(self) -> anyhow::Result<()> {
        let target = &self.target;
        let client = Client::connect(target)?;
        let services: Vec<ServiceInfo> = client.get_json("/v1/services").await?;
        if target.json {
            return print_json(&services);
        }
        if services.is_empty() {
            println!(
                "No services deployed. Deploy one with `doppel deploy FILE.wasm --name NAME`."
            );
            return Ok(());
        }
        print_table(&ls_rows(&services));
        Ok(())
    }
}

/// The table `doppel ls` prints.
fn ls_rows(services: &[ServiceInfo]) -> Vec<[String; 8]> {
    let mut rows = vec![[
        "NAME".to_string(),
        "VERSION".into(),
        "MODULE".into(),
        "SIZE".into(),
        "DEPLOYED".into(),
        "REQUESTS".into(),
        "ERRORS".into(),
        "STORED".into(),
    ]];
    for s in services {
        rows.push([
            s.name.clone(),
            s.version.to_string(),
            short(&s.module),
            human_size(s.size),
            human_time(s.deployed_at_ms),
            s.requests.to_string(),
            s.errors.to_string(),
            s.storage_bytes.map_or_else(|| "?".into(), human_size),
        ]);
    }
    rows
}
