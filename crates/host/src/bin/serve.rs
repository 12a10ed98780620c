//! `kiloclaw-host-serve`: a minimal runner around the library, used by the host's own tests to
//! start a second host process (the `kiloclaw` CLI is the real front end).
//!
//! Usage: `kiloclaw-host-serve <spin.toml> [--listen ADDR] [--state-dir DIR]
//! [--runtime-config-file FILE] [--variable k=v]... [--no-cron]`. Prints
//! `kiloclaw-host: ready on http://ADDR` once serving; stops on SIGINT/SIGTERM or when stdin closes.

use anyhow::{Context, bail};
use kiloclaw_host::{App, HostConfig};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    kiloclaw_host::logging::init(kiloclaw_host::logging::LogFormat::Json, "info");
    let mut args = std::env::args().skip(1);
    let manifest = args
        .next()
        .context("usage: kiloclaw-host-serve <spin.toml> [options]")?;
    let mut config = HostConfig::new(manifest);
    config.listen = "127.0.0.1:0".parse()?;
    while let Some(flag) = args.next() {
        let mut value = || args.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--listen" => config.listen = value()?.parse()?,
            "--state-dir" => config.state_dir = Some(value()?.into()),
            "--runtime-config-file" => config.runtime_config_file = Some(value()?.into()),
            "--variable" => {
                let v = value()?;
                let (k, val) = v.split_once('=').context("--variable needs k=v")?;
                config.variables.push((k.to_string(), val.to_string()));
            }
            "--no-cron" => config.cron = false,
            other => bail!("unknown option {other}"),
        }
    }
    let app = App::load(&config).await?;
    let server = app.bind_and_serve().await?;
    println!("kiloclaw-host: ready on http://{}", server.local_addr());
    let stdin_closed = async {
        use tokio::io::AsyncReadExt;
        let mut buf = [0u8; 64];
        let mut stdin = tokio::io::stdin();
        while matches!(stdin.read(&mut buf).await, Ok(n) if n > 0) {}
    };
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
        _ = stdin_closed => {}
    }
    server.shutdown().await;
    Ok(())
}
