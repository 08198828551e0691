//! `doppel kv`: inspect and change a service's key-value state.

use std::io::Write as _;

use clap::Subcommand;
use doppel_api::KeyPage;
use reqwest::Method;

use crate::client::{Client, Target, segment};
use crate::output::print_json;

/// What `doppel kv` does.
#[derive(Subcommand, Debug)]
pub enum KvAction {
    /// List buckets (without --bucket) or the keys of a bucket.
    Ls {
        /// The service whose state to read.
        #[arg(long)]
        service: String,
        /// The bucket; "default" is what guests open as "" or "default".
        #[arg(long)]
        bucket: Option<String>,
        /// Only keys after this one (for paging).
        #[arg(long)]
        after: Option<String>,
        /// At most this many keys.
        #[arg(long, default_value_t = 1000)]
        limit: usize,
    },
    /// Print one value.
    Get {
        /// The service.
        #[arg(long)]
        service: String,
        /// The bucket.
        #[arg(long, default_value = "default")]
        bucket: String,
        /// The key.
        key: String,
    },
    /// Set one value.
    Put {
        /// The service.
        #[arg(long)]
        service: String,
        /// The bucket.
        #[arg(long, default_value = "default")]
        bucket: String,
        /// The key.
        key: String,
        /// The value (as text).
        value: String,
    },
    /// Delete one key.
    Rm {
        /// The service.
        #[arg(long)]
        service: String,
        /// The bucket.
        #[arg(long, default_value = "default")]
        bucket: String,
        /// The key.
        key: String,
    },
}

fn kv_path(service: &str, bucket: &str, key: &str) -> String {
    format!(
        "/v1/services/{}/kv/{}/{}",
        segment(service),
        segment(bucket),
        segment(key)
    )
}

impl KvAction {
    pub async fn run(self, target: &Target) -> anyhow::Result<()> {
        let client = Client::connect(target)?;
        match self {
            KvAction::Ls {
                service,
                bucket: None,
                ..
            } => {
                let buckets: Vec<String> = client
                    .get_json(&format!("/v1/services/{}/kv", segment(&service)))
                    .await?;
                if target.json {
                    return print_json(&buckets);
                }
                for b in buckets {
                    println!("{b}");
                }
            }
            KvAction::Ls {
                service,
                bucket: Some(bucket),
                after,
                limit,
            } => {
                let mut path = format!(
                    "/v1/services/{}/kv/{}?limit={limit}",
                    segment(&service),
                    segment(&bucket)
                );
                if let Some(after) = after {
                    path.push_str(&format!("&after={}", segment(&after)));
                }
                let page: KeyPage = client.get_json(&path).await?;
                if target.json {
                    return print_json(&page);
                }
                for k in &page.keys {
                    println!("{k}");
                }
                if let Some(next) = page.next {
                    eprintln!("(more keys: add --after {next:?})");
                }
            }
            KvAction::Get {
                service,
                bucket,
                key,
            } => {
                let value = client
                    .send(client.request(Method::GET, &kv_path(&service, &bucket, &key)))
                    .await?
                    .bytes()
                    .await?;
                if target.json {
                    return print_json(&serde_json::json!({
                        "key": key,
                        "value": String::from_utf8_lossy(&value),
                        "utf8": std::str::from_utf8(&value).is_ok(),
                    }));
                }
                let mut out = std::io::stdout();
                out.write_all(&value)?;
                if std::io::IsTerminal::is_terminal(&out) && !value.ends_with(b"\n") {
                    writeln!(out)?;
                }
            }
            KvAction::Put {
                service,
                bucket,
                key,
                value,
            } => {
                client
                    .send(
                        client
                            .request(Method::PUT, &kv_path(&service, &bucket, &key))
                            .body(value),
                    )
                    .await?;
            }
            KvAction::Rm {
                service,
                bucket,
                key,
            } => {
                client
                    .send(client.request(Method::DELETE, &kv_path(&service, &bucket, &key)))
                    .await?;
            }
        }
        Ok(())
    }
}

/// Flags of `doppel kv`.
#[derive(clap::Args, Debug)]
pub struct Kv {
    #[command(flatten)]
    target: Target,
    #[command(subcommand)]
    action: KvAction,
}

impl Kv {
    pub async fn run(self) -> anyhow::Result<()> {
        self.action.run(&self.target).await
    }
}
