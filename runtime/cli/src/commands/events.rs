//! `doppel events`: every placement change, with cause and actor.

use clap::Args;
use doppel_api::PlacementEvent;

use crate::client::{Client, Target, segment};
use crate::output::{print_json, print_table};
use crate::units::human_time;

/// Flags of `doppel events`.
#[derive(Args, Debug)]
pub struct Events {
    #[command(flatten)]
    target: Target,
    /// Only this service.
    service: Option<String>,
    /// Only the last N changes.
    #[arg(long, default_value_t = 100)]
    limit: usize,
}

impl Events {
    pub async fn run(self) -> anyhow::Result<()> {
        let (target, service, limit) = (&self.target, self.service.as_deref(), self.limit);
        let client = Client::connect(target)?;
        let mut path = format!("/v1/events?limit={limit}");
        if let Some(service) = service {
            path.push_str(&format!("&service={}", segment(service)));
        }
        let events: Vec<PlacementEvent> = client.get_json(&path).await?;
        if target.json {
            return print_json(&events);
        }
        if events.is_empty() {
            println!("No placement changes recorded yet.");
            return Ok(());
        }
        let mut rows = vec![[
            "TIME".to_string(),
            "SERVICE".into(),
            "EPOCH".into(),
            "ACTIVE ON".into(),
            "CAUSE".into(),
            "BY".into(),
        ]];
        for e in &events {
            let mut active = if e.active.is_empty() {
                "nowhere".to_string()
            } else {
                e.active.join(", ")
            };
            if !e.leaving.is_empty() {
                active.push_str(&format!(" (leaving: {})", e.leaving.join(", ")));
            }
            let mut cause = e.cause.clone();
            if let Some(unmet) = &e.unmet {
                cause.push_str(&format!(" [rules not met: {unmet}]"));
            }
            rows.push([
                human_time(e.time_ms),
                e.service.clone(),
                e.epoch.to_string(),
                active,
                cause,
                e.actor.clone(),
            ]);
        }
        print_table(&rows);
        Ok(())
    }
}
