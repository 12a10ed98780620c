//! `kiloclaw fly-sim`: the Fly simulator alone; also how `kiloclaw up` starts it in-process.

use std::net::SocketAddr;

use crate::args::FlySimArgs;

/// A running simulator.
#[derive(Debug)]
pub struct RunningSim {
    base_url: String,
}

impl RunningSim {
    /// Base URL of the simulator.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The app variables that point the components at this simulator.
    pub fn app_variables(&self) -> Vec<(String, String)> {
        Vec::new()
    }

    /// Stops it.
    pub async fn shutdown(self) {}
}

/// Starts the simulator on `addr`.
pub async fn start(addr: SocketAddr) -> anyhow::Result<RunningSim> {
    anyhow::bail!("the Fly simulator is not available yet ({addr})")
}

/// Runs `kiloclaw fly-sim`.
pub fn run(args: &FlySimArgs) -> anyhow::Result<()> {
    anyhow::bail!("the Fly simulator is not available yet ({})", args.listen)
}
