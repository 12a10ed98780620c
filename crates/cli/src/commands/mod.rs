//! One module per subcommand.

pub mod token;

use crate::args::{Cli, Command};

/// Runs the parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Token(args) => token::run(&args),
        Command::Up(_) | Command::FlySim(_) | Command::Compose(_) => {
            anyhow::bail!("not wired yet")
        }
    }
}
