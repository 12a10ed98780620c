//! The command line: every subcommand and flag, with `--help` text.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// KiloClaw: per-user OpenClaw gateways on Fly.io Machines, run as Spin components.
#[derive(Debug, Parser)]
#[command(name = "kiloclaw", version, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build the components and serve the app locally (against the Fly simulator by default).
    Up(UpArgs),
    /// Print a user JWT the router accepts (HS256 over nextauth_secret).
    Token(TokenArgs),
    /// Run the Fly simulator alone (Machines API, Fly Proxy, OpenClaw gateway stand-in).
    FlySim(FlySimArgs),
    /// Write pre-composed router and reconciler components for Spin hosts that cannot compose.
    Compose(ComposeArgs),
}

/// Which Fly the app talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FlyMode {
    /// An in-process Fly simulator; no account or token needed.
    Sim,
    /// The real Fly Machines API (needs SPIN_VARIABLE_FLY_API_TOKEN and SPIN_VARIABLE_FLY_ORG_SLUG).
    Api,
}

/// Where the app's manifest and state live.
#[derive(Debug, Args)]
pub struct AppLocation {
    /// The Spin manifest [default: spin.toml in the current or nearest parent directory]
    #[arg(long, value_name = "FILE")]
    pub manifest: Option<PathBuf>,
    /// State directory (key-value database, generated dev secrets) [default: .spin next to spin.toml]
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
}

/// `kiloclaw up`.
#[derive(Debug, Args)]
pub struct UpArgs {
    /// Address the app's HTTP trigger listens on.
    #[arg(
        long,
        value_name = "ADDR",
        default_value = "127.0.0.1:3000",
        env = "SPIN_HTTP_LISTEN_ADDR"
    )]
    pub listen: SocketAddr,
    /// Which Fly to talk to.
    #[arg(long, value_enum, default_value_t = FlyMode::Sim)]
    pub fly: FlyMode,
    /// Address of the in-process Fly simulator (with --fly sim).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:4280")]
    pub sim_listen: SocketAddr,
    /// Spin runtime config (key-value stores, ...) [default: SQLite key-value store in the state dir]
    #[arg(long, value_name = "FILE", env = "RUNTIME_CONFIG_FILE")]
    pub runtime_config_file: Option<PathBuf>,
    /// Use the components already built instead of running cargo first.
    #[arg(long)]
    pub no_build: bool,
    #[command(flatten)]
    pub location: AppLocation,
}

/// `kiloclaw token`.
#[derive(Debug, Args)]
pub struct TokenArgs {
    /// The user id (`kiloUserId` claim).
    #[arg(long, value_name = "ID")]
    pub user: String,
    /// How long the token stays valid, e.g. 5m, 1h, 30days.
    #[arg(long, value_name = "DURATION", default_value = "1h")]
    pub ttl: humantime::Duration,
    /// The `env` claim; the router checks it against its worker_env variable when both are set.
    #[arg(long, value_name = "ENV", env = "SPIN_VARIABLE_WORKER_ENV")]
    pub env: Option<String>,
    #[command(flatten)]
    pub location: AppLocation,
}

/// `kiloclaw fly-sim`.
#[derive(Debug, Args)]
pub struct FlySimArgs {
    /// Address the simulator listens on (Machines API, Fly Proxy and admin API share it).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:4280")]
    pub listen: SocketAddr,
    /// Keep machines, volumes and volume files here across restarts [default: in memory]
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Accept any non-empty API token instead of only the local one.
    #[arg(long)]
    pub any_token: bool,
}

/// `kiloclaw compose`.
#[derive(Debug, Args)]
pub struct ComposeArgs {
    /// Directory to write the composed `.wasm` files into (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Use the components already built instead of running cargo first.
    #[arg(long)]
    pub no_build: bool,
    /// The Spin manifest [default: spin.toml in the current or nearest parent directory]
    #[arg(long, value_name = "FILE")]
    pub manifest: Option<PathBuf>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn up_defaults() -> anyhow::Result<()> {
        let cli = Cli::try_parse_from(["kiloclaw", "up"])?;
        let Command::Up(up) = cli.command else {
            anyhow::bail!("not up")
        };
        assert_eq!(up.fly, FlyMode::Sim);
        assert_eq!(up.sim_listen.to_string(), "127.0.0.1:4280");
        assert!(!up.no_build);
        Ok(())
    }

    #[test]
    fn up_flags() -> anyhow::Result<()> {
        let cli = Cli::try_parse_from([
            "kiloclaw",
            "up",
            "--listen",
            "127.0.0.1:0",
            "--fly",
            "api",
            "--state-dir",
            "/tmp/s",
            "--no-build",
            "--runtime-config-file",
            "rc.toml",
        ])?;
        let Command::Up(up) = cli.command else {
            anyhow::bail!("not up")
        };
        assert_eq!(up.listen.port(), 0);
        assert_eq!(up.fly, FlyMode::Api);
        assert!(up.no_build);
        assert_eq!(
            up.location.state_dir.as_deref(),
            Some(std::path::Path::new("/tmp/s"))
        );
        assert_eq!(
            up.runtime_config_file.as_deref(),
            Some(std::path::Path::new("rc.toml"))
        );
        Ok(())
    }

    #[test]
    fn token_needs_a_user_and_parses_ttl() -> anyhow::Result<()> {
        assert!(Cli::try_parse_from(["kiloclaw", "token"]).is_err());
        let cli = Cli::try_parse_from(["kiloclaw", "token", "--user", "u1", "--ttl", "90m"])?;
        let Command::Token(token) = cli.command else {
            anyhow::bail!("not token")
        };
        assert_eq!(token.user, "u1");
        assert_eq!(token.ttl.as_secs(), 5400);
        assert!(
            Cli::try_parse_from(["kiloclaw", "token", "--user", "u", "--ttl", "soon"]).is_err()
        );
        Ok(())
    }

    #[test]
    fn every_subcommand_has_help() {
        for sub in ["up", "token", "fly-sim", "compose"] {
            let err = Cli::try_parse_from(["kiloclaw", sub, "--help"]).err();
            assert!(
                matches!(
                    err.as_ref().map(|e| e.kind()),
                    Some(clap::error::ErrorKind::DisplayHelp)
                ),
                "{sub} --help"
            );
        }
    }

    #[test]
    fn compose_needs_out() {
        assert!(Cli::try_parse_from(["kiloclaw", "compose"]).is_err());
        assert!(Cli::try_parse_from(["kiloclaw", "compose", "--out", "dist"]).is_ok());
    }
}
