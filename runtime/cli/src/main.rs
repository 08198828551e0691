//! `doppel`: run a host, deploy and operate services.
//!
//! `doppel host` starts a host; every other command talks to a host's admin API, found from
//! `--admin`/`--token` (or `DOPPEL_ADMIN`/`DOPPEL_TOKEN`) or else from the data directory of a
//! host on this machine (`--data`, default `./doppel-data`). No business logic lives here: each
//! command parses, calls a library or the API, and prints.

mod client;
mod cluster_cmd;
mod commands;
mod host_cmd;
mod new;
mod units;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use crate::client::Target;
use crate::cluster_cmd::{ClusterCmd, Hosts};
use crate::commands::{Deploy, Kv};
use crate::host_cmd::HostArgs;
use crate::new::NewArgs;

/// Keep public services running when a cloud disappears.
#[derive(Parser, Debug)]
#[command(name = "doppel", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Start a host on this machine.
    Host(HostArgs),
    /// Upload a component and (re)deploy it as a service.
    Deploy(Deploy),
    /// List deployed services.
    Ls {
        #[command(flatten)]
        target: Target,
    },
    /// Show every host of the cluster (role, health, how far behind) and every service.
    Status {
        #[command(flatten)]
        target: Target,
    },
    /// Manage the cluster's hosts.
    Hosts {
        #[command(flatten)]
        target: Target,
        #[command(subcommand)]
        action: Hosts,
    },
    /// Cluster-wide settings: the join token.
    Cluster {
        #[command(flatten)]
        target: Target,
        #[command(subcommand)]
        action: ClusterCmd,
    },
    /// Remove a service.
    Rm {
        #[command(flatten)]
        target: Target,
        /// The service.
        name: String,
        /// Also delete every bucket of the service.
        #[arg(long)]
        purge: bool,
    },
    /// Show what a service wrote to stdout/stderr, and what the host noted about it.
    Logs {
        #[command(flatten)]
        target: Target,
        /// The service.
        name: String,
        /// Keep printing new lines as they come.
        #[arg(long, short)]
        follow: bool,
        /// Only the last N lines.
        #[arg(long)]
        tail: Option<usize>,
    },
    /// Create a new service crate that builds into a deployable component.
    New(NewArgs),
    /// Inspect and change a service's key-value state.
    Kv {
        #[command(flatten)]
        target: Target,
        #[command(subcommand)]
        action: Kv,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // openraft narrates every election at info; a host's own lines are what an operator reads.
    let default_level = if matches!(cli.command, Command::Host(_)) {
        "info,openraft=warn"
    } else {
        "warn"
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("DOPPEL_LOG").unwrap_or_else(|_| EnvFilter::new(default_level)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Host(args) => args.run().await,
            Command::Deploy(deploy) => deploy.run().await,
            Command::Ls { target } => commands::ls(&target).await,
            Command::Status { target } => cluster_cmd::status(&target).await,
            Command::Hosts { target, action } => action.run(&target).await,
            Command::Cluster { target, action } => action.run(&target).await,
            Command::Rm {
                target,
                name,
                purge,
            } => commands::rm(&target, &name, purge).await,
            Command::Logs {
                target,
                name,
                follow,
                tail,
            } => commands::logs(&target, &name, follow, tail).await,
            Command::Kv { target, action } => action.run(&target).await,
            Command::New(args) => args.run(),
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
