//! The `kiloclaw` binary: parses the command line and runs the subcommand.

use clap::Parser;
use kiloclaw_cli::args::Cli;

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match kiloclaw_cli::commands::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("kiloclaw: error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
