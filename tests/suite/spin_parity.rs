//! Manifests real Spin refuses are refused by our host too, for the same reason — so the two
//! cannot drift apart again (our host once accepted a dependency layout Spin 4.0.2 refuses).
//!
//! Each case is a small app whose components are synthesised from WIT (dummy core modules that
//! are never run): Spin refuses these apps while loading, before any code executes. The case
//! names a phrase both refusals must contain.

use std::path::Path;

use anyhow::{Context, ensure};
use kiloclaw_host::{App, HostConfig};
use wit_component::{ComponentEncoder, StringEncoding, dummy_module, embed_component_metadata};
use wit_parser::{ManglingAndAbi, Resolve};

/// Worlds for the synthesised components.
const WIT: &str = r#"
    package parity:worlds;
    world plain { export run: func() -> u32; }
    world main-shared { import shared:pkg/a@1.0.0; import shared:pkg/b@1.0.0; export run: func() -> u32; }
    world export-shared-a { export shared:pkg/a@1.0.0; }
    world export-shared-b { export shared:pkg/b@1.0.0; }
    world main-own { import solo:a/a@1.0.0; export run: func() -> u32; }
    world export-own-a { export solo:a/a@1.0.0; }
    package shared:pkg@1.0.0 { interface a { f: func() -> u32; } interface b { g: func(x: string); } }
    package solo:a@1.0.0 { interface a { f: func() -> u32; } }
"#;

fn write_component(dir: &Path, world: &str) -> anyhow::Result<()> {
    let mut resolve = Resolve::default();
    let package = resolve.push_str("parity.wit", WIT)?;
    let world_id = resolve.select_world(&[package], Some(world))?;
    let mut module = dummy_module(&resolve, world_id, ManglingAndAbi::Standard32);
    embed_component_metadata(&mut module, &resolve, world_id, StringEncoding::UTF8)?;
    let component = ComponentEncoder::default()
        .module(&module)?
        .validate(true)
        .encode()?;
    std::fs::write(dir.join(format!("{world}.wasm")), component)?;
    Ok(())
}

/// The manifest head shared by every case: one HTTP route to component `main`.
const HEAD: &str = r#"spin_manifest_version = 2

[application]
name = "parity"

[[trigger.http]]
route = "/..."
component = "main"
"#;

/// Writes the case's app, asks Spin and our host to load it, and checks that both refuse it
/// with `reason` in their error.
async fn refused_by_both(body: &str, reason: &str) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    for world in [
        "plain",
        "main-shared",
        "export-shared-a",
        "export-shared-b",
        "main-own",
        "export-own-a",
    ] {
        write_component(dir.path(), world)?;
    }
    let manifest = dir.path().join("spin.toml");
    std::fs::write(&manifest, format!("{HEAD}{body}"))?;

    let spin = crate::spin::refusal(&manifest).context("asking Spin")?;
    ensure!(
        spin.contains(reason),
        "Spin refused, but not with {reason:?}: {spin}"
    );

    let mut config = HostConfig::new(&manifest);
    config.state_dir = Some(dir.path().join(".spin"));
    config.cron = false;
    let ours = match App::load(&config).await {
        Ok(_) => anyhow::bail!("our host accepted what Spin refuses ({reason:?}): {spin}"),
        Err(error) => format!("{error:#}"),
    };
    ensure!(
        ours.contains(reason),
        "our host refused, but not with {reason:?}: {ours} (Spin: {spin})"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_dependencies_from_one_wit_package() -> anyhow::Result<()> {
    refused_by_both(
        r#"
[component.main]
source = "main-shared.wasm"
dependencies_inherit_configuration = true
[component.main.dependencies]
"shared:pkg/a" = { component = "a" }
"shared:pkg/b" = { component = "b" }
[component.a]
source = "export-shared-a.wasm"
[component.b]
source = "export-shared-b.wasm"
"#,
        "package `shared:pkg` has already been registered in the graph",
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dependency_that_matches_no_import() -> anyhow::Result<()> {
    refused_by_both(
        r#"
[component.main]
source = "main-own.wasm"
[component.main.dependencies]
"solo:b/b" = { component = "a" }
[component.a]
source = "export-own-a.wasm"
"#,
        "doesn't match any imports of component 'main'",
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_app_dependency_with_its_own_resources() -> anyhow::Result<()> {
    refused_by_both(
        r#"
[component.main]
source = "main-own.wasm"
[component.main.dependencies]
"solo:a/a" = { component = "a" }
[component.a]
source = "export-own-a.wasm"
key_value_stores = ["default"]
"#,
        "Dependencies may not have their own resources",
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allowed_outbound_host_template_that_renders_empty() -> anyhow::Result<()> {
    refused_by_both(
        r#"
[variables]
host = { default = "" }
[component.main]
source = "plain.wasm"
allowed_outbound_hosts = ["{{ host }}"]
"#,
        "is not an allowed outbound host format",
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_variable_both_required_and_defaulted() -> anyhow::Result<()> {
    refused_by_both(
        r#"
[variables]
token = { required = true, default = "x" }
[component.main]
source = "plain.wasm"
"#,
        "`required` OR have a `default`",
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_component_field() -> anyhow::Result<()> {
    refused_by_both(
        r#"
[component.main]
source = "plain.wasm"
allowed_hosts_typo = ["https://example.com"]
"#,
        "unknown field `allowed_hosts_typo`",
    )
    .await
}
