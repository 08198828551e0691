//! `doppel audit`: the audit trail, and a check of every host's copy of it.

use clap::Args;
use doppel_api::{AuditEntry, AuditVerdict};

use crate::client::{Client, Target};
use crate::output::{print_json, print_table, printable};
use crate::units::{human_time, parse_millis};

/// Flags of `doppel audit`.
#[derive(Args, Debug)]
pub struct Audit {
    #[command(flatten)]
    target: Target,
    /// Only entries this recent (e.g. 1h, 30m).
    #[arg(long, value_parser = parse_millis)]
    since: Option<u64>,
    /// Have every host check its copy of the trail, and name any whose copy was altered.
    #[arg(long)]
    verify: bool,
}

impl Audit {
    pub async fn run(self) -> anyhow::Result<()> {
        let client = Client::connect(&self.target)?;
        if self.verify {
            let verdict: AuditVerdict = client.get_json("/v1/audit/verify").await?;
            if self.target.json {
                print_json(&verdict)?;
            } else {
                let mut rows = vec![[
                    "HOST".to_string(),
                    "ENTRIES".into(),
                    "CHAIN".into(),
                    "HASH AT".into(),
                ]];
                for c in &verdict.checks {
                    let chain = match (&c.error, c.broken_at) {
                        (Some(e), _) => format!("no answer: {e}"),
                        (None, Some(at)) => format!("BROKEN at entry {at}"),
                        (None, None) => "intact".into(),
                    };
                    let hash = c.hash_at.chars().take(16).collect::<String>();
                    rows.push([
                        c.host.clone(),
                        c.entries.to_string(),
                        chain,
                        format!("#{} {hash}", c.at),
                    ]);
                }
                print_table(&rows);
            }
            if !verdict.altered.is_empty() {
                anyhow::bail!(
                    "the audit trail was altered on: {}",
                    verdict.altered.join(", ")
                );
            }
            if !self.target.json {
                println!("every copy that answered is intact and agrees");
            }
            return Ok(());
        }
        let path = match self.since {
            Some(ms) => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)?
                    .as_millis() as u64;
                format!("/v1/audit?since={}", now.saturating_sub(ms))
            }
            None => "/v1/audit".to_string(),
        };
        let entries: Vec<AuditEntry> = client.get_json(&path).await?;
        if self.target.json {
            return print_json(&entries);
        }
        if entries.is_empty() {
            println!("The audit trail is empty.");
            return Ok(());
        }
        let mut rows = vec![[
            "#".to_string(),
            "TIME".into(),
            "WHO".into(),
            "VIA".into(),
            "WHAT".into(),
            "OUTCOME".into(),
        ]];
        for e in &entries {
            let mut what = e.action.clone();
            if let Some(detail) = &e.detail {
                what.push_str(&format!(" [{detail}]"));
            }
            rows.push([
                e.seq.to_string(),
                human_time(e.time_ms),
                printable(&e.actor).into_owned(),
                e.via.clone(),
                printable(&what).into_owned(),
                printable(&e.outcome).into_owned(),
            ]);
        }
        print_table(&rows);
        Ok(())
    }
}
