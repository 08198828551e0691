//! `doppel`: run a host, deploy and operate services.
//!
//! `doppel host` starts a host; every other command talks to a host's admin API, found from
//! `--admin`/`--token` (or `DOPPEL_ADMIN`/`DOPPEL_TOKEN`) or else from the data directory of a
//! host on this machine (`--data`, default `./doppel-data`). No business logic lives here: each
//! command parses, calls a library or the API, and prints.

mod client;
mod commands;
mod drill_report;
mod output;
mod progress;
mod units;

use clap::Parser;
use tracing_subscriber::EnvFilter;

// A host allocates and frees a guest's worth of small objects for every request, from many
// threads: glibc's malloc spent ~13 % of a busy host's CPU on it. Built without transparent
// huge pages (feature `no_thp`): with them an idle host held 150 MB instead of 46.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// What `doppel --version` says: ours, and the engine and consensus versions built in (an
/// operator comparing hosts, or reading an advisory, needs both).
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (wasmtime ",
    env!("DOPPEL_WASMTIME_VERSION"),
    ", openraft ",
    env!("DOPPEL_OPENRAFT_VERSION"),
    ")"
);

/// Keep public services running when a cloud disappears.
#[derive(Parser, Debug)]
#[command(name = "doppel", version = VERSION, about)]
struct Cli {
    #[command(subcommand)]
    command: commands::Command,
}

/// The whole command line's definition, for what is generated from it (completions, manual).
fn definition() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let host = cli.command.is_host();
    // A client command whose reader goes away early (`doppel status | head`) ends quietly, as
    // other command-line tools do, instead of panicking on its next line of output. SIGPIPE
    // itself stays ignored (Rust's default), for client and host alike: a host that answers a
    // refused upload before reading it closes the connection, and a client killed by the signal
    // then would never print the host's reason.
    if !host {
        let default_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let text = info
                .payload()
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| info.payload().downcast_ref::<&str>().copied())
                .unwrap_or_default();
            if text.contains("failed printing to stdout") && text.contains("Broken pipe") {
                std::process::exit(141);
            }
            default_hook(info);
        }));
    }
    // openraft narrates every election at info; a host's own lines are what an operator reads.
    let default_level = if host { "info,openraft=warn" } else { "warn" };
    let log = tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("DOPPEL_LOG").unwrap_or_else(|_| EnvFilter::new(default_level)),
        )
        .with_writer(std::io::stderr)
        // A line that cannot be written (stderr closed) is dropped: reporting that on stderr
        // too would panic, and a host must not stop over its log.
        .log_internal_errors(false);
    if cli.command.json_log() {
        log.json().with_current_span(false).init();
    } else {
        log.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init();
    }
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
    match runtime.block_on(cli.command.run()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
