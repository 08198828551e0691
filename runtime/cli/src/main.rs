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
mod moves_cmd;
mod new;
mod units;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use crate::client::Target;
use crate::cluster_cmd::{ClusterCmd, Hosts};
use crate::commands::{Deploy, Kv};
use crate::host_cmd::HostArgs;
use crate::new::NewArgs;

// A host allocates and frees a guest's worth of small objects for every request, from many
// threads: glibc's malloc spent ~13 % of a busy host's CPU on it. Built without transparent
// huge pages (feature `no_thp`): with them an idle host held 150 MB instead of 46.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// Move a service to another host with no failed request.
    ///
    /// The target gets ready, the switch happens, the old host finishes its requests and then
    /// forwards. Shows each step and what it measured.
    Migrate {
        #[command(flatten)]
        target: Target,
        /// The service.
        name: String,
        /// A host name, or KEY=VALUE for the least busy eligible host with that label.
        #[arg(long)]
        to: String,
        /// Which active host to move it off, when it runs on several (default: the first).
        #[arg(long)]
        from: Option<String>,
    },
    /// Move every service off a host (evacuate it, or a provider host by host).
    ///
    /// No service becomes active there again until `doppel undrain`.
    Drain {
        #[command(flatten)]
        target: Target,
        /// The host.
        host: String,
        /// Then take the host out of the cluster too (hands over its consensus vote).
        #[arg(long)]
        remove: bool,
    },
    /// Let services be placed on a drained host again.
    Undrain {
        #[command(flatten)]
        target: Target,
        /// The host.
        host: String,
    },
    /// Show every placement change (deploys, migrations, drains, failovers), with cause and actor.
    Events {
        #[command(flatten)]
        target: Target,
        /// Only this service.
        service: Option<String>,
        /// Only the last N changes.
        #[arg(long, default_value_t = 100)]
        limit: usize,
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
    // A client command whose reader goes away early (`doppel status | head`) ends quietly, as
    // other command-line tools do, instead of panicking on its next line of output. A host keeps
    // Rust's default (the signal ignored): a closed pipe must never stop it.
    if !matches!(cli.command, Command::Host(_)) {
        // SAFETY: sets the signal's disposition back to the default; no handler runs our code.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
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
        // A line that cannot be written (stderr closed) is dropped: reporting that on stderr
        // too would panic, and a host must not stop over its log.
        .log_internal_errors(false)
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
            Command::Migrate {
                target,
                name,
                to,
                from,
            } => moves_cmd::migrate(&target, &name, &to, from).await,
            Command::Drain {
                target,
                host,
                remove,
            } => moves_cmd::drain(&target, &host, remove).await,
            Command::Undrain { target, host } => moves_cmd::undrain(&target, &host).await,
            Command::Events {
                target,
                service,
                limit,
            } => moves_cmd::events(&target, service.as_deref(), limit).await,
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
