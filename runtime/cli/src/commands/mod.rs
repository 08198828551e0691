//! The subcommands, one file each (`doppel VERB` is `commands/VERB.rs`), in the manner of
//! wasmtime's `src/commands/`. Each parses its flags and calls the admin API or the host library;
//! none holds business logic.

mod audit;
mod backup;
mod cluster;
mod completions;
mod deploy;
mod dev_issuer;
mod drain;
mod drill;
mod events;
mod host;
mod hosts;
mod keygen;
mod kv;
mod logs;
mod ls;
mod man;
mod migrate;
mod new;
mod recover;
mod restore;
mod rm;
mod sign;
mod status;
mod tokens;
mod trust;
mod twin;
mod undrain;

use clap::Subcommand;

/// Every `doppel` subcommand.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Start a host on this machine.
    Host(host::Host),
    /// Upload a component and (re)deploy it as a service.
    Deploy(deploy::Deploy),
    /// List deployed services.
    Ls(ls::Ls),
    /// Show every host of the cluster (role, health, how far behind) and every service.
    Status(status::Status),
    /// Manage the cluster's hosts.
    Hosts(hosts::Hosts),
    /// The cluster as a whole: its CA certificate, and rotating the CA.
    Cluster(cluster::Cluster),
    /// Named operator credentials with roles.
    Tokens(tokens::Tokens),
    /// The keys trusted to sign components, and whether every deploy must be signed.
    Trust(trust::Trust),
    /// Make a key pair for signing components (the public half goes to `doppel trust add`).
    Keygen(keygen::Keygen),
    /// Sign a component (optionally recording its release version) with a `doppel keygen` key.
    Sign(sign::Sign),
    /// The audit trail of every admin change and refusal; `--verify` checks every host's copy.
    Audit(audit::Audit),
    /// The backup copy outside the cluster: keys, targets, how far shipping has got.
    Backup(backup::Backup),
    /// Build a new data directory from a backup, at any point it holds.
    Restore(restore::Restore),
    /// Start a new one-host cluster from a stopped host's own state, when a majority of its
    /// cluster is lost for good (`--force-new-cluster`).
    Recover(recover::Recover),
    /// Restore a backup into a sandbox, start it, call every service and compare the state
    /// hash; write a report with the RTO and RPO. Fails when anything did.
    Drill(drill::Drill),
    /// A standby cluster that follows a primary's backup, and its promotion.
    Twin(twin::Twin),
    /// Remove a service.
    Rm(rm::Rm),
    /// Show what a service wrote to stdout/stderr, and what the host noted about it.
    Logs(logs::Logs),
    /// Move a service to another host with no failed request.
    ///
    /// The target gets ready, the switch happens, the old host finishes its requests and then
    /// forwards. Shows each step and what it measured.
    Migrate(migrate::Migrate),
    /// Move every service off a host (evacuate it, or a provider host by host).
    ///
    /// No service becomes active there again until `doppel undrain`.
    Drain(drain::Drain),
    /// Let services be placed on a drained host again.
    Undrain(undrain::Undrain),
    /// Show every placement change (deploys, migrations, drains, failovers), with cause and actor.
    Events(events::Events),
    /// Create a new service crate that builds into a deployable component.
    New(new::New),
    /// Inspect and change a service's key-value state.
    Kv(kv::Kv),
    /// A local identity provider for development: a key, its JWKS, and tokens for any caller.
    DevIssuer(dev_issuer::DevIssuer),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(completions::Completions),
    /// Write the manual pages (doppel(1) and one per subcommand).
    Man(man::Man),
}

impl Command {
    /// Whether this starts a host (which logs more, and never stops on a closed pipe).
    pub fn is_host(&self) -> bool {
        matches!(self, Command::Host(_))
    }

    /// Whether the log goes out as JSON lines (`doppel host --log-format json`).
    pub fn json_log(&self) -> bool {
        matches!(self, Command::Host(h) if h.log_format == "json")
    }

    /// Runs the command.
    pub async fn run(self) -> anyhow::Result<()> {
        match self {
            Command::Host(c) => c.run().await,
            Command::Deploy(c) => c.run().await,
            Command::Ls(c) => c.run().await,
            Command::Status(c) => c.run().await,
            Command::Hosts(c) => c.run().await,
            Command::Cluster(c) => c.run().await,
            Command::Tokens(c) => c.run().await,
            Command::Trust(c) => c.run().await,
            Command::Keygen(c) => c.run(),
            Command::Sign(c) => c.run(),
            Command::Audit(c) => c.run().await,
            Command::Backup(c) => c.run().await,
            Command::Restore(c) => c.run().await,
            Command::Recover(c) => c.run().await,
            Command::Drill(c) => c.run().await,
            Command::Twin(c) => c.run().await,
            Command::Rm(c) => c.run().await,
            Command::Logs(c) => c.run().await,
            Command::Migrate(c) => c.run().await,
            Command::Drain(c) => c.run().await,
            Command::Undrain(c) => c.run().await,
            Command::Events(c) => c.run().await,
            Command::New(c) => c.run(),
            Command::Kv(c) => c.run().await,
            Command::DevIssuer(c) => c.run().await,
            Command::Completions(c) => {
                c.print(crate::definition());
                Ok(())
            }
            Command::Man(c) => c.write(crate::definition()),
        }
    }
}
