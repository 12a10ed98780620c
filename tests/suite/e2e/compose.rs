//! `kiloclaw compose`: the pre-composed components (what SpinKube and Fermyon deploy) serve the
//! same API as the composed-at-load app, including the reconcile route hosts without cron use.

use anyhow::ensure;
use reqwest::Method;
use serde_json::json;

use super::system::System;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_precomposed_app_serves_the_same_api() -> anyhow::Result<()> {
    let out = tempfile::tempdir()?;
    let original = kiloclaw_e2e::workspace_root().join("spin.toml");
    let written = kiloclaw_cli::commands::compose::compose_into(
        &original,
        System::resolved_manifest()?,
        out.path(),
    )?;
    let composed_manifest = out.path().join("spin.toml");
    ensure!(written.contains(&composed_manifest), "written: {written:?}");
    let text = std::fs::read_to_string(&composed_manifest)?;
    let doc: toml::Table = toml::from_str(&text)?;
    let components = doc["component"].as_table().cloned().unwrap_or_default();
    ensure!(
        components.keys().map(String::as_str).collect::<Vec<_>>() == ["reconciler", "router"],
        "only the triggered components remain: {text}"
    );
    ensure!(
        components.values().all(|c| c.get("dependencies").is_none()),
        "no dependencies left: {text}"
    );

    let sys = System::boot_manifest(&composed_manifest).await?;
    sys.get("/health").await?.expect_json(
        200,
        json!({"status": "ok", "service": "kiloclaw", "gateway_port": 18789}),
    )?;
    let user = "user-composed";
    sys.provision(user).await?;
    sys.start(user).await?;
    let echo = sys
        .send(sys.as_user(user, Method::GET, "/composed?q=1")?)
        .await?
        .expect_echo(200)?;
    ensure!(echo.path == "/composed" && echo.query == "q=1", "{echo:?}");
    // The reconcile route (what a scheduler calls on hosts without the cron trigger).
    let body = sys
        .platform(Method::POST, "/api/platform/reconcile", Some(json!({})))
        .await?
        .expect(200)?;
    ensure!(body.is_object(), "{body}");
    sys.destroy(user).await?;
    sys.settle_destroy(user).await?;
    Ok(())
}
