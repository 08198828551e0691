//! `doppel host`: start a host and print where everything is.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use doppel_host::sealing::KeySource;
use doppel_host::{HostConfig, IngressLimits, JoinTarget, Started};

use crate::units::{parse_millis, parse_size};

/// Flags of `doppel host`.
#[derive(Args, Debug)]
pub struct Host {
    /// How the host writes its own log to stderr: `text` for people, `json` (one object per
    /// line) for a log collector.
    #[arg(long, env = "DOPPEL_LOG_FORMAT", value_parser = ["text", "json"], default_value = "text")]
    pub log_format: String,
    /// This host's name (default: the machine's hostname).
    #[arg(long, env = "DOPPEL_NAME")]
    pub name: Option<String>,
    /// Data directory: store, admin token, precompiled modules.
    #[arg(long, env = "DOPPEL_DATA", default_value = "./doppel-data")]
    pub data: PathBuf,
    /// Address for service traffic.
    #[arg(long, env = "DOPPEL_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Address for the admin API (HTTPS, with a certificate from the cluster's CA).
    #[arg(long, env = "DOPPEL_ADMIN_LISTEN", default_value = "127.0.0.1:8081")]
    pub admin: SocketAddr,
    /// Address for other hosts (mutual TLS: raft, forwarded requests, moves).
    #[arg(long, env = "DOPPEL_PEER_LISTEN", default_value = "127.0.0.1:8082")]
    pub peer: SocketAddr,
    /// Largest module upload accepted.
    #[arg(long, default_value = "64MiB", value_parser = parse_size)]
    pub max_module_size: u64,
    /// Client connections served at once.
    #[arg(long, default_value_t = 10_000)]
    pub max_connections: usize,
    /// Connections served at once from one client address, on the service and the admin port;
    /// more are answered 503 and closed (one client cannot take every connection). Behind a
    /// reverse proxy every client has the proxy's address: raise it there.
    #[arg(long, default_value_t = 512)]
    pub max_connections_per_client: usize,
    /// Time a client has to send a request's headers, on the service and the admin port alike
    /// (also how long a kept connection may wait for its next request). At least 1s.
    #[arg(long, default_value = "10s", value_parser = parse_header_timeout)]
    pub header_timeout: u64,
    /// Join the cluster one of whose hosts has this peer address (`HOST:PORT`), on this host's
    /// first start. Needs --token.
    #[arg(long, env = "DOPPEL_JOIN", requires = "token")]
    pub join: Option<String>,
    /// The invitation `doppel hosts invite NAME` printed on a member: good for one join, it
    /// gives this host its name and labels.
    #[arg(
        long,
        env = "DOPPEL_JOIN_TOKEN",
        hide_env_values = true,
        requires = "join"
    )]
    pub token: Option<String>,
    /// The peer address other hosts reach this one at (default: the --peer address).
    #[arg(long, env = "DOPPEL_ADVERTISE")]
    pub advertise: Option<String>,
    /// Log entries between snapshots of the store (the log before a snapshot is then dropped).
    #[arg(long, default_value_t = 10_000, hide = true)]
    pub snapshot_every: u64,
    /// How long after the raft leader falls silent the other hosts may elect another: failover
    /// after a leader dies takes about this long. Raise it for hosts far apart (several times
    /// their round trip); how often hosts probe each other and how long a silent host has before
    /// its services move follow it. 100ms to 10s. One value per cluster: set it on the host that
    /// creates the cluster (default 180ms); joining and restarting hosts take the running
    /// members', and a value that disagrees with theirs is refused. To change it, stop every
    /// host, start one with the new value, then the others without it.
    #[arg(long, value_parser = parse_lease)]
    pub leader_lease: Option<u64>,
    /// How long the host certificates of a cluster this host creates are valid, 10s to 10y
    /// (default 365d). Every host renews its own, from the cluster CA, when a third of it is
    /// left. Only for the host that creates a cluster.
    #[arg(long, value_parser = parse_cert_lifetime)]
    pub cert_lifetime: Option<Duration>,
    /// A label placement rules can match (`doppel deploy --on KEY=VALUE`), repeatable, e.g.
    /// `--label provider=ionos --label jurisdiction=de`. Only for the host that creates a
    /// cluster: an invited host carries its invitation's labels, bound into its certificate.
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = doppel_api::parse_label)]
    pub labels: Vec<(String, String)>,
    /// A label every host of the cluster must carry (a residency rule, e.g.
    /// `--require-label jurisdiction=de`), repeatable; set when the cluster is created. An
    /// invitation whose labels break it is refused.
    #[arg(long = "require-label", value_name = "KEY=VALUE", value_parser = doppel_api::parse_label)]
    pub require: Vec<(String, String)>,
    /// How long requests in flight may finish after SIGINT/SIGTERM.
    #[arg(long, default_value = "10s", value_parser = parse_millis)]
    pub grace: u64,
    #[command(flatten)]
    pub key: KeyArgs,
}

/// Where this host's key-encryption key comes from.
#[derive(Args, Debug)]
pub struct KeyArgs {
    /// A file holding this host's key-encryption key (32 bytes as base64 or hex; `doppel keygen
    /// --encryption PATH` makes one). It wraps the host's copy of the cluster key, which wraps
    /// every service's data key. Hosts may each have their own. Without this flag and
    /// `--key-command`, the key is read from the environment variable DOPPEL_KEY.
    #[arg(
        long,
        env = "DOPPEL_KEY_FILE",
        value_name = "PATH",
        conflicts_with = "key_command"
    )]
    pub key_file: Option<PathBuf>,
    /// A command (run with `sh -c`) that prints the key-encryption key: a KMS or PKCS#11 client
    /// that unwraps it, a secrets manager's CLI.
    #[arg(long, env = "DOPPEL_KEY_COMMAND", value_name = "CMD")]
    pub key_command: Option<String>,
}

impl KeyArgs {
    /// Where the key comes from: a command, a file, or `DOPPEL_KEY` itself; `None` if nowhere.
    pub fn source(&self) -> Option<KeySource> {
        match (&self.key_command, &self.key_file) {
            (Some(command), _) => Some(KeySource::Command(command.clone())),
            (None, Some(file)) => Some(KeySource::File(file.clone())),
            (None, None) => std::env::var_os(doppel_host::sealing::KEY_ENV).map(|_| KeySource::Env),
        }
    }
}

/// `--header-timeout`: at least a second, because hosts let their own idle connections to each
/// other go after half a second, before the other side closes them.
fn parse_header_timeout(text: &str) -> Result<u64, String> {
    let ms = parse_millis(text)?;
    if ms < 1_000 {
        return Err(format!(
            "{text:?} is too short; a header timeout is at least 1s"
        ));
    }
    Ok(ms)
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "doppel".to_string())
}

async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(mut int), Ok(mut term)) => {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Prints what the host serves and where. Written with its errors ignored: a host whose output
/// goes nowhere (a closed pipe, `doppel host | head -1`) must go on serving, not stop.
fn banner(name: &str, data: &std::path::Path, started: &Started) {
    use std::fmt::Write as _;
    use std::io::Write as _;
    let mut text = String::new();
    let _ = writeln!(text, "doppel host {name:?} is running");
    let _ = writeln!(
        text,
        "  services   http://{}/<service>/...  ({} deployed)",
        started.listen, started.services
    );
    let _ = writeln!(
        text,
        "  admin API  https://{}  (credential in {})",
        started.admin,
        started.token_file.display()
    );
    let _ = writeln!(text, "  peers      {}  (mutual TLS)", started.peer);
    let first = if started.first_start {
        "  (created on this start)"
    } else {
        ""
    };
    let _ = writeln!(text, "  data       {}{first}", data.display());
    if started.joined {
        let _ = writeln!(text, "  cluster    joined; {} hosts", started.hosts);
    } else if started.hosts > 1 {
        let _ = writeln!(text, "  cluster    {} hosts", started.hosts);
    } else {
        let _ = writeln!(
            text,
            "  cluster    this host alone; add one with `doppel hosts invite NAME`"
        );
    }
    let _ = writeln!(
        text,
        "Deploy a service:  doppel deploy app.wasm --name app   (then: doppel ls, doppel logs app)"
    );
    let _ = writeln!(text, "Stop with Ctrl-C (in-flight requests finish first).");
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
}

impl Host {
    pub async fn run(self) -> anyhow::Result<()> {
        let name = self.name.unwrap_or_else(hostname);
        let labels = label_map("--label", self.labels)?;
        let require = label_map("--require-label", self.require)?;
        let config = HostConfig {
            name: name.clone(),
            data_dir: self.data.clone(),
            listen: self.listen,
            admin: self.admin,
            peer: self.peer,
            ingress: IngressLimits {
                max_connections: self.max_connections.max(1),
                max_per_client: self.max_connections_per_client.max(1),
                header_timeout: Duration::from_millis(self.header_timeout),
                ..IngressLimits::default()
            },
            max_module_size: usize::try_from(self.max_module_size).unwrap_or(usize::MAX),
            grace: Duration::from_millis(self.grace),
            join: match (self.join, self.token) {
                (Some(url), Some(token)) => Some(JoinTarget {
                    url,
                    token: token.trim().to_string(),
                }),
                _ => None,
            },
            advertise: self.advertise,
            snapshot_every: self.snapshot_every,
            leader_lease: self.leader_lease.map(Duration::from_millis),
            labels,
            require,
            cert_lifetime: self.cert_lifetime,
            key: self.key.source(),
        };
        tracing::info!(?config, "starting");
        let data = self.data;
        doppel_host::run(
            config,
            |started| banner(&started.name, &data, started),
            stop_signal(),
        )
        .await
    }
}

/// Repeated `KEY=VALUE` flags as a map; a key given twice is an error.
fn label_map(
    flag: &str,
    given: Vec<(String, String)>,
) -> anyhow::Result<std::collections::BTreeMap<String, String>> {
    let mut labels = std::collections::BTreeMap::new();
    for (key, value) in given {
        if let Some(earlier) = labels.insert(key.clone(), value.clone()) {
            anyhow::bail!("{flag} {key} is given twice ({earlier} and {value}); give it once");
        }
    }
    Ok(labels)
}

/// A leader lease: a duration from 100 ms to 10 s.
fn parse_cert_lifetime(text: &str) -> Result<Duration, String> {
    let lifetime = humantime::parse_duration(text)
        .map_err(|e| format!("{text} is not a duration such as 90d or 12h: {e}"))?;
    if !(Duration::from_secs(10)..=Duration::from_secs(10 * 365 * 24 * 3600)).contains(&lifetime) {
        return Err(format!(
            "{text} is out of range: a certificate lifetime is 10s to 10y (default 365d)"
        ));
    }
    Ok(lifetime)
}

fn parse_lease(text: &str) -> Result<u64, String> {
    let ms = parse_millis(text)?;
    if !(100..=10_000).contains(&ms) {
        return Err(format!(
            "{text} is out of range: a leader lease is 100ms to 10s (default 180ms)"
        ));
    }
    Ok(ms)
}
