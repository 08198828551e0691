//! The admin API client, and how a command finds its host.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use clap::Args;
use doppel_api::ApiError;
use reqwest::{Method, RequestBuilder, Response};

/// Flags every client command shares.
#[derive(Args, Debug, Clone)]
pub struct Target {
    /// Admin API of the host to talk to, e.g. https://10.0.0.5:8081.
    #[arg(long, env = "DOPPEL_ADMIN", global = true)]
    pub admin: Option<String>,
    /// Credential (`doppel tokens create`; on a host's machine, the file `admin-token` in its
    /// data directory).
    #[arg(long, env = "DOPPEL_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,
    /// The cluster's CA certificate, to verify the host with (default: `tls/ca.pem` in the data
    /// directory).
    #[arg(long, env = "DOPPEL_CA", global = true)]
    pub ca: Option<PathBuf>,
    /// Data directory of a host on this machine, used when --admin/--token are not given.
    #[arg(long, default_value = "./doppel-data", global = true)]
    pub data: PathBuf,
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
}

/// A connection to one host's admin API.
pub struct Client {
    base: String,
    token: String,
    http: reqwest::Client,
}

fn read_local(data: &Path) -> anyhow::Result<(String, String)> {
    let endpoint = doppel_host::endpoint_path(data);
    let text = std::fs::read_to_string(&endpoint).map_err(|_| {
        anyhow::anyhow!(
            "no running host found: {} does not exist. Start one with `doppel host`, \
             point --data at its data directory, or pass --admin URL and --token",
            endpoint.display()
        )
    })?;
    let endpoint: doppel_host::Endpoint = serde_json::from_str(&text)
        .with_context(|| format!("while reading {}", endpoint.display()))?;
    let token_file = doppel_host::token_path(data);
    let token = std::fs::read_to_string(&token_file).with_context(|| {
        format!(
            "while reading the admin token from {}",
            token_file.display()
        )
    })?;
    Ok((
        format!("https://{}", endpoint.admin),
        token.trim().to_string(),
    ))
}

impl Client {
    /// Finds the host: flags and environment first, else the local data directory.
    pub fn connect(target: &Target) -> anyhow::Result<Client> {
        let (base, token) = match (&target.admin, &target.token) {
            (Some(admin), Some(token)) => (admin.clone(), token.clone()),
            (Some(admin), None) => {
                let token_file = doppel_host::token_path(&target.data);
                let token = std::fs::read_to_string(&token_file).map_err(|_| {
                    anyhow::anyhow!(
                        "--admin {admin} needs a token: pass --token or set DOPPEL_TOKEN"
                    )
                })?;
                (admin.clone(), token.trim().to_string())
            }
            (None, token) => {
                let (base, local) = read_local(&target.data)?;
                (base, token.clone().unwrap_or(local))
            }
        };
        let mut base = base.trim_end_matches('/').to_string();
        if !base.contains("://") {
            base = format!("https://{base}");
        }
        if !base.starts_with("https://") {
            bail!(
                "--admin must be an https:// URL such as https://127.0.0.1:8081, not {base:?}: \
                 the admin API speaks only TLS"
            );
        }
        let ca_file = target
            .ca
            .clone()
            .unwrap_or_else(|| doppel_host::ca_path(&target.data));
        let ca = std::fs::read_to_string(&ca_file).with_context(|| {
            format!(
                "cannot read the cluster's CA certificate {}: pass --ca FILE (or DOPPEL_CA), or \
                 --data pointing at a host's data directory",
                ca_file.display()
            )
        })?;
        let roots = doppel_trust::certificates(&ca)
            .with_context(|| format!("while reading {}", ca_file.display()))?;
        let tls = doppel_trust::tls::operator_client(&roots)
            .with_context(|| format!("while trusting {}", ca_file.display()))?;
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .https_only(true)
            .build()
            .context("while setting up TLS")?;
        Ok(Client { base, token, http })
    }

    /// A request to `path` (which starts with `/v1/`), with the credential.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
    }

    /// Sends, and turns an error answer into an error carrying the host's message.
    pub async fn send(&self, request: RequestBuilder) -> anyhow::Result<Response> {
        let response = request.send().await.map_err(|e| {
            anyhow::anyhow!(
                "cannot reach the host's admin API at {}; is the host running? ({})",
                self.base,
                doppel_host::causes(&e)
            )
        })?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        match serde_json::from_str::<ApiError>(&body) {
            Ok(e) => bail!("{}", e.error),
            Err(_) => bail!("the host answered {status}: {body}"),
        }
    }

    /// GET and decode JSON.
    pub async fn get_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.call_json(Method::GET, path).await
    }

    /// A request without a body (`DELETE`, a `POST` that needs none), its JSON answer decoded.
    pub async fn call_json<T: serde::de::DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
    ) -> anyhow::Result<T> {
        let response = self.send(self.request(method, path)).await?;
        response
            .json()
            .await
            .context("while reading the host's answer")
    }
}

/// Percent-encodes one path segment.
pub fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
