//! `doppel completions SHELL`: the shell's completion script, generated from the same clap
//! definitions the command parses with, so it never falls behind.

use clap::Args;
use clap_complete::Shell;

/// Print the completion script for a shell.
#[derive(Args, Debug)]
#[command(after_help = "Install, for example:\n  \
    doppel completions bash > /etc/bash_completion.d/doppel\n  \
    doppel completions zsh > \"${fpath[1]}/_doppel\"\n  \
    doppel completions fish > ~/.config/fish/completions/doppel.fish")]
pub struct Completions {
    /// bash, zsh, fish, elvish or powershell.
    shell: Shell,
}

impl Completions {
    /// Writes the script for `command` (the whole `doppel` command line) to stdout.
    pub fn print(&self, mut command: clap::Command) {
        clap_complete::generate(self.shell, &mut command, "doppel", &mut std::io::stdout());
    }
}
