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
    /// Log lines on stderr: `pretty` (one readable line per event) or `json` (one object per line,
    /// guest fields merged) [default: pretty on a terminal, json otherwise]. Filter with RUST_LOG.
    #[arg(
        long,
        global = true,
        value_name = "FORMAT",
        env = "KILOCLAW_LOG_FORMAT"
    )]
    pub log_format: Option<LogFormatArg>,
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormatArg {
    /// One readable line per event.
    Pretty,
    /// One JSON object per line.
    Json,
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
    /// Issue a one-time access code for the access gateway (sign a browser in to a running app).
    AccessCode(AccessCodeArgs),
    /// List the instances in the app's key-value store with their machines' state in Fly.
    Status(StatusArgs),
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
    /// Serve Prometheus metrics at http://ADDR/metrics (a port of their own) [default: off]
    #[arg(long, value_name = "ADDR", env = "KILOCLAW_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Address of the in-process Fly simulator (with --fly sim).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:4280")]
    pub sim_listen: SocketAddr,
    /// Send user traffic (the catch-all proxy) to this http(s) URL instead of the Fly simulator's
    /// proxy or Fly: sets fly_proxy_base_url to URL and fly_proxy_outbound_host to its
    /// scheme://host:port. The Machines API stays the simulator (or Fly). `{app}` may be the
    /// host's first label. Without it, a SPIN_VARIABLE_FLY_PROXY_BASE_URL you set is used.
    #[arg(long, value_name = "URL", value_parser = ProxyUpstream::parse)]
    pub proxy_upstream: Option<ProxyUpstream>,
    /// Spin runtime config (key-value stores, ...) [default: SQLite key-value store in the state dir]
    #[arg(long, value_name = "FILE", env = "RUNTIME_CONFIG_FILE")]
    pub runtime_config_file: Option<PathBuf>,
    /// Use the components already built instead of running cargo first.
    #[arg(long)]
    pub no_build: bool,
    /// The Next.js app's PostgreSQL (postgres://USER@HOST:PORT/DB, tables as in db/schema.sql):
    /// turns on the token-revocation check, access codes in kiloclaw_access_codes and restoring
    /// lost records. Without it none of these needs a database.
    #[arg(long, value_name = "URL", env = "SPIN_VARIABLE_DATABASE_URL", value_parser = DatabaseUrl::parse)]
    pub database_url: Option<DatabaseUrl>,
    #[command(flatten)]
    pub location: AppLocation,
}

/// A validated `--database-url`.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl {
    /// The URL as given (the `database_url` variable).
    pub url: String,
    /// `postgres://host:port`: the `database_outbound_host` variable (no credentials).
    pub outbound_host: String,
}

impl std::fmt::Debug for DatabaseUrl {
    // The URL may carry a password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseUrl")
            .field("outbound_host", &self.outbound_host)
            .finish_non_exhaustive()
    }
}

impl DatabaseUrl {
    /// Accepts `postgres://` and `postgresql://` URLs with a host.
    pub fn parse(input: &str) -> Result<Self, String> {
        let url = url::Url::parse(input).map_err(|e| format!("not a URL: {e}"))?;
        if !matches!(url.scheme(), "postgres" | "postgresql") {
            return Err("the scheme must be postgres:// or postgresql://".into());
        }
        let host = url
            .host_str()
            .filter(|host| !host.is_empty())
            .ok_or("the URL needs a host (Unix sockets are not supported)")?;
        let port = url.port().unwrap_or(5432);
        Ok(Self {
            url: input.to_owned(),
            outbound_host: format!("postgres://{host}:{port}"),
        })
    }
}

/// `kiloclaw access-code`.
#[derive(Debug, Args)]
pub struct AccessCodeArgs {
    /// The user the code signs in.
    #[arg(long, value_name = "ID")]
    pub user: String,
    /// The running app (`kiloclaw up`'s address).
    #[arg(
        long,
        value_name = "URL",
        default_value = "http://127.0.0.1:3000",
        env = "KILOCLAW_URL"
    )]
    pub url: String,
    #[command(flatten)]
    pub location: AppLocation,
}

/// A validated `--proxy-upstream` URL: `http(s)://host[:port][/path]`, no credentials, query or
/// fragment (the request's own path and query are appended to it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyUpstream {
    /// The URL without a trailing `/`: the `fly_proxy_base_url` value.
    pub base_url: String,
    /// Its `scheme://host:port` (port made explicit): the `fly_proxy_outbound_host` value.
    pub outbound_host: String,
}

impl ProxyUpstream {
    /// Parses and validates a URL given on the command line.
    pub fn parse(url: &str) -> Result<Self, String> {
        if url.contains(['?', '#']) {
            return Err(
                "no query or fragment: the request's own path and query are appended".into(),
            );
        }
        let outbound_host = outbound_host_of(url)?;
        Ok(Self {
            base_url: url.trim_end_matches('/').to_owned(),
            outbound_host,
        })
    }
}

/// The `allowed_outbound_hosts` entry (`scheme://host:port`) covering a proxy base URL such as
/// `http://127.0.0.1:8080/prefix` or `https://{app}.fly.dev` (a leading `{app}` label becomes
/// `*`). Only http and https; no credentials; the port defaults by scheme.
pub fn outbound_host_of(url: &str) -> Result<String, String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| format!("`{url}` is not an http:// or https:// URL"))?;
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "http" => 80,
        "https" => 443,
        _ => return Err(format!("`{url}`: the scheme must be http or https")),
    };
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    if authority.contains('@') {
        return Err(format!("`{url}`: credentials in the URL are not supported"));
    }
    let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        let (ip, after) = bracketed
            .split_once(']')
            .ok_or_else(|| format!("`{url}`: unclosed `[` in the host"))?;
        (format!("[{ip}]"), after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host.to_owned(), Some(port)),
            None => (authority.to_owned(), None),
        }
    };
    let port = match port {
        Some(port) => port
            .parse::<u16>()
            .map_err(|_| format!("`{url}`: invalid port `{port}`"))?,
        None => default_port,
    };
    let (wildcard, name) = match host.strip_prefix("{app}.") {
        Some(domain) => ("*.", domain),
        None => ("", host.as_str()),
    };
    if name.is_empty() || name.contains(['{', '}', '*', ' ']) {
        return Err(format!(
            "`{url}`: invalid host (a `{{app}}` placeholder may only be the first label)"
        ));
    }
    Ok(format!("{scheme}://{wildcard}{name}:{port}"))
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

/// `kiloclaw status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Which Fly to ask about the machines.
    #[arg(long, value_enum, default_value_t = FlyMode::Sim)]
    pub fly: FlyMode,
    /// The Fly simulator's URL (with --fly sim): `kiloclaw up`'s --sim-listen.
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:4280")]
    pub sim_url: String,
    /// Spin runtime config defining the `default` store [default: SQLite in the state dir]
    #[arg(long, value_name = "FILE", env = "RUNTIME_CONFIG_FILE")]
    pub runtime_config_file: Option<PathBuf>,
    /// Print JSON (an array of objects) instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub location: AppLocation,
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
    fn database_urls_are_checked_and_allow_listed_without_credentials() {
        let parsed =
            DatabaseUrl::parse("postgres://me:secret@db.internal:6543/app?sslmode=disable")
                .expect("valid");
        assert_eq!(parsed.outbound_host, "postgres://db.internal:6543");
        assert!(!format!("{parsed:?}").contains("secret"), "{parsed:?}");
        assert_eq!(
            DatabaseUrl::parse("postgresql://127.0.0.1/app")
                .expect("valid")
                .outbound_host,
            "postgres://127.0.0.1:5432"
        );
        assert!(DatabaseUrl::parse("mysql://127.0.0.1/app").is_err());
        assert!(DatabaseUrl::parse("postgres:///app?host=/run/postgresql").is_err());
        assert!(DatabaseUrl::parse("not a url").is_err());
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
        assert_eq!(up.proxy_upstream, None);
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
    fn proxy_upstream_is_validated() -> anyhow::Result<()> {
        let cli = Cli::try_parse_from([
            "kiloclaw",
            "up",
            "--proxy-upstream",
            "http://127.0.0.1:8080/base/",
        ])?;
        let Command::Up(up) = cli.command else {
            anyhow::bail!("not up")
        };
        assert_eq!(
            up.proxy_upstream,
            Some(ProxyUpstream {
                base_url: "http://127.0.0.1:8080/base".into(),
                outbound_host: "http://127.0.0.1:8080".into(),
            })
        );
        let outbound = |url: &str| ProxyUpstream::parse(url).map(|u| u.outbound_host);
        assert_eq!(
            outbound("https://example.com"),
            Ok("https://example.com:443".into())
        );
        assert_eq!(outbound("HTTP://[::1]"), Ok("http://[::1]:80".into()));
        assert_eq!(outbound("http://[::1]:81/x"), Ok("http://[::1]:81".into()));
        assert_eq!(
            outbound("https://{app}.fly.dev"),
            Ok("https://*.fly.dev:443".into())
        );
        for bad in [
            "127.0.0.1:8080",
            "ftp://h",
            "http://",
            "http://:80",
            "http://h:port",
            "http://h:70000",
            "http://user:pw@h",
            "http://h/?q=1",
            "http://h/#f",
            "http://a-{app}.h",
            "http://*.h",
        ] {
            assert!(ProxyUpstream::parse(bad).is_err(), "{bad}");
        }
        assert!(Cli::try_parse_from(["kiloclaw", "up", "--proxy-upstream", "nope"]).is_err());
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
