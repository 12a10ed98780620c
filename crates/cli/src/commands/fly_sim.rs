//! `kiloclaw fly-sim`: the Fly simulator alone; also how `kiloclaw up` starts it in-process and
//! which variables point the app at it.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use kiloclaw_flysim::{SimConfig, SimHandle, Simulator};

use crate::args::FlySimArgs;

/// The API token the app sends to a local simulator. The simulator accepts only this one, so a
/// component that forgot to send its token fails locally the way it would against Fly.
pub const SIM_API_TOKEN: &str = "flysim-local-token";

/// The Fly organisation per-user apps are created in locally.
pub const SIM_ORG_SLUG: &str = "kiloclaw-local";

/// The app variables that point the components at a simulator serving the Machines API at
/// `api_url` and the Fly Proxy at `proxy_url`.
pub fn app_variables(api_url: &str, proxy_url: &str) -> Vec<(String, String)> {
    [
        ("fly_api_base_url", api_url),
        // No `{app}` placeholder: the simulator's proxy locates machines by fly-force-instance-id.
        ("fly_proxy_base_url", proxy_url),
        ("fly_proxy_outbound_host", proxy_url),
        ("fly_api_token", SIM_API_TOKEN),
        ("fly_org_slug", SIM_ORG_SLUG),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_owned(), value.to_owned()))
    .collect()
}

/// The simulator's configuration for a local run.
pub fn config(listen: SocketAddr, state_dir: Option<PathBuf>) -> SimConfig {
    SimConfig {
        listen,
        api_tokens: vec![SIM_API_TOKEN.to_owned()],
        state_dir,
        // Fly's newest observed behaviour: an update leaves a stopped machine stopped. The control
        // plane updates with `skip_launch` and starts explicitly, so it works under either behaviour.
        update_starts_stopped_machine: false,
        ..SimConfig::default()
    }
}

/// A simulator running in this process.
#[derive(Debug)]
pub struct RunningSim {
    handle: SimHandle,
}

impl RunningSim {
    /// Base URL of the Machines API (and of the admin API under `/_sim/`).
    pub fn base_url(&self) -> String {
        self.handle.api_url()
    }

    /// The app variables that point the components at this simulator.
    pub fn app_variables(&self) -> Vec<(String, String)> {
        app_variables(&self.handle.api_url(), &self.handle.proxy_url())
    }

    /// Stops it.
    pub async fn shutdown(self) {
        self.handle.shutdown().await;
    }
}

/// Starts the simulator on `listen`, keeping its state (machines, volumes and their files) in
/// `state_dir` so it survives restarts together with the app's key-value store.
pub async fn start(listen: SocketAddr, state_dir: PathBuf) -> anyhow::Result<RunningSim> {
    std::fs::create_dir_all(&state_dir)
        .with_context(|| format!("creating {}", state_dir.display()))?;
    let handle = Simulator::start(config(listen, Some(state_dir)))
        .await
        .with_context(|| format!("starting the Fly simulator on {listen}"))?;
    Ok(RunningSim { handle })
}

/// Runs `kiloclaw fly-sim` until Ctrl-C.
pub fn run(args: &FlySimArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let mut config = config(args.listen, args.state_dir.clone());
    if args.any_token {
        config.api_tokens.clear();
    }
    eprintln!(
        "kiloclaw fly-sim: API token `{SIM_API_TOKEN}`{}",
        if args.any_token {
            " (any token accepted)"
        } else {
            ""
        }
    );
    runtime
        .block_on(kiloclaw_flysim::run_standalone(config))
        .with_context(|| format!("running the Fly simulator on {}", args.listen))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_cover_everything_the_app_needs_from_fly() {
        let vars = app_variables("http://127.0.0.1:1", "http://127.0.0.1:2");
        let get = |name: &str| {
            vars.iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("fly_api_base_url"), Some("http://127.0.0.1:1"));
        assert_eq!(get("fly_proxy_base_url"), Some("http://127.0.0.1:2"));
        assert_eq!(get("fly_proxy_outbound_host"), Some("http://127.0.0.1:2"));
        assert_eq!(get("fly_api_token"), Some(SIM_API_TOKEN));
        assert!(get("fly_org_slug").is_some_and(|s| !s.is_empty()));
    }
}
