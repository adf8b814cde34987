//! What a package installs besides the binary, generated from the command-line
//! definition itself so that it cannot drift from it: man pages (`clap_mangen`)
//! and shell completions (`clap_complete`). `scripts/package.sh` calls these
//! while building the .deb.

use std::io::{self, Write};
use std::path::Path;

use clap::CommandFactory;
use clap_complete::Shell;

use crate::Cli;

/// Writes `tapswitch.1` and one page per visible subcommand (`tapswitch-port-add.1`, …)
/// into `dir`, which is created if needed.
pub fn man_pages(dir: &Path) -> Result<(), String> {
    let shown = dir.display();
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {shown}: {e}"))?;
    clap_mangen::generate_to(Cli::command(), dir)
        .map_err(|e| format!("writing man pages into {shown}: {e}"))
}

/// The completion script for `shell` on stdout.
pub fn completions(shell: Shell) -> Result<(), String> {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "tapswitch", &mut out);
    let mut stdout = io::stdout().lock();
    stdout
        .write_all(&out)
        .and_then(|()| stdout.flush())
        .map_err(|e| format!("writing the completion script: {e}"))
}
