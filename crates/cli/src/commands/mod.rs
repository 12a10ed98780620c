//! One module per subcommand.

pub mod access_code;
pub mod compose;
pub mod fly_sim;
pub mod status;
pub mod token;
pub mod up;

use crate::args::{Cli, Command, LogFormatArg};
use kiloclaw_host::logging::{self, LogFormat};

/// Runs the parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    let log_format = match cli.log_format {
        Some(LogFormatArg::Json) => LogFormat::Json,
        Some(LogFormatArg::Pretty) => LogFormat::Pretty,
        None => LogFormat::for_stderr(),
    };
    match cli.command {
        Command::Token(args) => token::run(&args),
        Command::Compose(args) => compose::run(&args),
        Command::AccessCode(args) => access_code::run(&args),
        Command::Status(args) => status::run(&args),
        Command::Up(args) => {
            logging::init(log_format, "info");
            up::run(&args)
        }
        Command::FlySim(args) => {
            logging::init(log_format, "info");
            fly_sim::run(&args)
        }
    }
}
