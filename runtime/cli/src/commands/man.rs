//! `doppel man`: manual pages (roff) generated from the clap definitions: `doppel(1)` and one
//! page per subcommand (`doppel-deploy(1)`, `doppel-hosts-invite(1)`, …), as git ships them.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;

/// Write the manual pages.
#[derive(Args, Debug)]
#[command(after_help = "Install, for example:\n  \
    doppel man --dir /usr/local/share/man/man1 && mandb\n  \
    man doppel-deploy")]
pub struct Man {
    /// Folder to write every page into (doppel.1, doppel-deploy.1, …); without it, the main
    /// page goes to stdout.
    #[arg(long)]
    dir: Option<PathBuf>,
}

impl Man {
    /// Writes the pages of `command` (the whole `doppel` command line).
    pub fn write(&self, command: clap::Command) -> anyhow::Result<()> {
        let Some(dir) = &self.dir else {
            return match clap_mangen::Man::new(command).render(&mut std::io::stdout()) {
                // `doppel man | head`: the reader has what it wanted.
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
                other => other.context("cannot write the manual page to stdout"),
            };
        };
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let written = write_pages(command, "doppel", "doppel", dir)?;
        eprintln!("wrote {written} manual pages into {}", dir.display());
        Ok(())
    }
}

/// Writes `command`'s page as `NAME.1` (its usage line saying `BIN`, e.g. `doppel hosts
/// invite`) and its subcommands' as `NAME-SUB.1`; returns how many.
fn write_pages(command: clap::Command, name: &str, bin: &str, dir: &Path) -> anyhow::Result<usize> {
    let command = command.bin_name(bin.to_string());
    let file = dir.join(format!("{name}.1"));
    let mut page = Vec::new();
    clap_mangen::Man::new(command.clone())
        .title(name.to_string())
        .render(&mut page)?;
    std::fs::write(&file, page).with_context(|| format!("cannot write {}", file.display()))?;
    let mut written = 1;
    for sub in command.get_subcommands().filter(|s| s.get_name() != "help") {
        let sub_name = sub.get_name();
        written += write_pages(
            sub.clone(),
            &format!("{name}-{sub_name}"),
            &format!("{bin} {sub_name}"),
            dir,
        )?;
    }
    Ok(written)
}
