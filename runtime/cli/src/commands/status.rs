//! `doppel status`: every host of the cluster, then every service.

use clap::Args;
use doppel_api::{BackupInfo, ClusterInfo, ServiceInfo, StateHash};

use crate::client::{Client, Target};
use crate::output::{print_json, print_table};

/// Flags of `doppel status`.
#[derive(Args, Debug)]
pub struct Status {
    #[command(flatten)]
    target: Target,
    /// Print only the digest of the services' state on the answering host (records, modules,
    /// buckets): two clusters with the same services and data print the same hash, e.g. a
    /// restored cluster and the backup it came from.
    #[arg(long)]
    hash: bool,
}

impl Status {
    pub async fn run(self) -> anyhow::Result<()> {
        let target = &self.target;
        let client = Client::connect(target)?;
        if self.hash {
            let hash: StateHash = client.get_json("/v1/status/hash").await?;
            if target.json {
                return print_json(&hash);
            }
            println!("{}", hash.hash);
            eprintln!("({} keys at index {})", hash.keys, hash.index);
            return Ok(());
        }
        let cluster: ClusterInfo = client.get_json("/v1/cluster").await?;
        let services: Vec<ServiceInfo> = client.get_json("/v1/services").await?;
        // The hosts and services come first: a failure to read the backups does not hide them.
        let backups: Result<Vec<BackupInfo>, String> = client
            .get_json("/v1/backups")
            .await
            .map_err(|e| format!("{e:#}"));
        let twin: Option<doppel_api::TwinStatus> = client.get_json("/v1/twin").await.ok();
        if target.json {
            return print_json(
                &serde_json::json!({ "cluster": cluster, "services": services, "backups": backups.unwrap_or_default(), "twin": twin }),
            );
        }
        if let Some(twin) = twin.filter(|t| t.role != "primary") {
            print!("{}", super::twin::describe(&twin));
            println!();
        }
        let mut rows = vec![[
            "HOST".to_string(),
            "ROLE".into(),
            "HEALTH".into(),
            "BEHIND".into(),
            "ADMIN".into(),
            "SERVICE TRAFFIC".into(),
            "LABELS".into(),
        ]];
        for h in &cluster.hosts {
            let mark = if h.this { " *" } else { "" };
            rows.push([
                format!("{}{mark}", h.name),
                h.role.clone(),
                if h.drained {
                    format!("{}, drained", h.health)
                } else {
                    h.health.clone()
                },
                h.behind.map_or_else(|| "?".into(), |b| b.to_string()),
                h.admin.clone(),
                h.listen.clone().unwrap_or_else(|| "-".into()),
                h.labels
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(","),
            ]);
        }
        print_table(&rows);
        if !cluster.residency.is_empty() {
            println!(
                "Residency rule: every host carries {}.",
                labels_text(&cluster.residency)
            );
        }
        let leader = cluster.leader.is_some();
        println!(
            "{} host(s), term {}, leader lease {} ms{}  (* = the host that answered)",
            cluster.hosts.len(),
            cluster.term,
            cluster.lease_ms,
            if leader {
                ""
            } else {
                "; NO LEADER: writes are refused until a majority is back"
            }
        );
        println!();
        if services.is_empty() {
            println!(
                "No services deployed. Deploy one with `doppel deploy FILE.wasm --name NAME`."
            );
        } else {
            let mut rows = vec![[
                "SERVICE".to_string(),
                "VERSION".into(),
                "ACTIVE ON".into(),
                "EPOCH".into(),
                "RULES".into(),
                "REQUESTS HERE".into(),
                "ERRORS HERE".into(),
            ]];
            for s in &services {
                rows.push([
                    s.name.clone(),
                    s.version.to_string(),
                    match (s.active.is_empty(), s.leaving.is_empty()) {
                        (true, _) => "NONE".into(),
                        (false, true) => s.active.join(", "),
                        (false, false) => {
                            format!(
                                "{} (leaving: {})",
                                s.active.join(", "),
                                s.leaving.join(", ")
                            )
                        }
                    },
                    s.epoch.to_string(),
                    s.placement.to_string(),
                    s.requests.to_string(),
                    s.errors.to_string(),
                ]);
            }
            print_table(&rows);
            for s in services.iter().filter(|s| s.unmet.is_some()) {
                println!(
                    "{}: placement rules not met: {}",
                    s.name,
                    s.unmet.clone().unwrap_or_default()
                );
            }
            println!("Hosts a service is not active on forward its requests to one that is.");
            println!(
                "--on rules place a service's compute; its data (buckets) is stored on every host of the cluster."
            );
            for s in &services {
                let narrower: Vec<String> = s
                    .placement
                    .on
                    .iter()
                    .filter(|(k, v)| cluster.residency.get(*k) != Some(*v))
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                if !narrower.is_empty() {
                    println!(
                        "warning: {} runs only where {}, but its data is on every host{}",
                        s.name,
                        narrower.join(", "),
                        if cluster.residency.is_empty() {
                            String::new()
                        } else {
                            format!(" (all of which carry {})", labels_text(&cluster.residency))
                        }
                    );
                }
            }
        }
        println!();
        let backups = match backups {
            Ok(backups) => backups,
            Err(e) => {
                println!("warning: cannot read the backup targets: {e}");
                return Ok(());
            }
        };
        if backups.is_empty() {
            println!(
                "warning: no backup outside the cluster; add one with `doppel backup add NAME URL \
                 --recipient KEY`"
            );
        } else {
            super::backup::print_targets(&backups);
        }
        Ok(())
    }
}

fn labels_text(labels: &std::collections::BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}
