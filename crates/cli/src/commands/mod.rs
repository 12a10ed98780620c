//! One module per subcommand.

pub mod access_code;
pub mod compose;
pub mod fly_sim;
pub mod token;
pub mod up;

use crate::args::{Cli, Command};

/// Runs the parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Token(args) => token::run(&args),
        Command::Compose(args) => compose::run(&args),
        Command::AccessCode(args) => access_code::run(&args),
        Command::Up(args) => {
            init_logging();
            up::run(&args)
        }
        Command::FlySim(args) => {
            init_logging();
            fly_sim::run(&args)
        }
    }
}

/// JSON log lines on stderr (stdout stays for the ready line and the example), level from
/// `RUST_LOG`, default `info`.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // A second initialisation (never in the binary) is harmless, so its error is ignored.
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
