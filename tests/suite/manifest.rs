//! `spin.toml` is a valid Spin manifest v2 for this app: it loads in our host, wires the components
//! the way the WIT contracts need, and follows the Spin rules our host does not need to enforce
//! (dependencies carry no configuration of their own; secrets are marked).

use std::collections::BTreeSet;

use anyhow::Context;
use kiloclaw_e2e::{COMPONENTS, workspace_root};
use kiloclaw_host::manifest::{DependencySource, HttpTarget, Manifest, Route};

/// DESIGN.md decision 8 plus original-behaviour.md §7.1: the variables the app is configured by.
const VARIABLES: &[&str] = &[
    "nextauth_secret",
    "internal_api_secret",
    "gateway_token_secret",
    "fly_api_token",
    "fly_app_name",
    "fly_org_slug",
    "fly_region",
    "fly_api_base_url",
    "fly_proxy_base_url",
    "fly_proxy_outbound_host",
    "fly_registry_app",
    "fly_image_tag",
    "worker_env",
    "dev_mode",
    "database_url",
    "database_outbound_host",
    "revocation_cache_ttl_seconds",
    "lease_ttl_seconds",
    "kilocode_api_base_url",
    "telegram_dm_policy",
    "discord_dm_policy",
    "openclaw_allowed_origins",
    "agent_env_vars_private_key",
    "store_redis_url",
    "store_redis_outbound_host",
    "store_redis_key_prefix",
];

const SECRETS: &[&str] = &[
    "nextauth_secret",
    "internal_api_secret",
    "gateway_token_secret",
    "fly_api_token",
    "database_url",
    "agent_env_vars_private_key",
    "store_redis_url",
];

/// Keys a `{ component = … }` dependency may not set (Spin: "Dependencies may not have their own
/// resources or permissions").
const FORBIDDEN_ON_DEPENDENCIES: &[&str] = &[
    "ai_models",
    "allowed_http_hosts",
    "allowed_outbound_hosts",
    "dependencies",
    "environment",
    "files",
    "key_value_stores",
    "sqlite_databases",
    "variables",
];

fn raw_manifest() -> anyhow::Result<toml::Table> {
    let path = workspace_root().join("spin.toml");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok(toml::from_str(&text)?)
}

#[test]
fn spin_toml_loads_in_our_host_and_wires_the_components() -> anyhow::Result<()> {
    let manifest = Manifest::load(&workspace_root().join("spin.toml"))?;

    let [http] = manifest.http_triggers.as_slice() else {
        anyhow::bail!("expected one HTTP trigger")
    };
    assert_eq!(http.route, Route::Path("/...".to_owned()));
    assert!(matches!(&http.target, HttpTarget::Component(id) if id == "router"));
    // Two walkers a host: two triggers on one schedule.
    let [first, second] = manifest.cron_triggers.as_slice() else {
        anyhow::bail!("expected two cron triggers")
    };
    for cron in [first, second] {
        assert_eq!(cron.component, "reconciler");
        assert_eq!(
            cron.expression, "0 * * * * *",
            "every minute, seconds-first"
        );
    }

    for (parent, deps) in [
        ("router", &["auth", "instances"][..]),
        ("reconciler", &["instances"][..]),
    ] {
        let component = manifest
            .components
            .get(parent)
            .with_context(|| format!("no component {parent}"))?;
        assert_eq!(
            component.key_value_stores,
            vec!["default".to_owned()],
            "{parent} key_value_stores"
        );
        assert!(
            component.dependencies_inherit_configuration,
            "{parent} must pass its configuration on"
        );
        let wired: BTreeSet<&str> = component
            .dependencies
            .iter()
            .map(|dependency| match &dependency.source {
                DependencySource::Component(id) => {
                    assert_eq!(dependency.name, format!("kiloclaw:{id}/{id}"));
                    Ok(id.as_str())
                }
                DependencySource::Path(path) => Err(anyhow::anyhow!(
                    "{parent} depends on a path: {}",
                    path.display()
                )),
            })
            .collect::<anyhow::Result<_>>()?;
        assert_eq!(
            wired,
            deps.iter().copied().collect(),
            "{parent} dependencies"
        );
    }

    // Every component's source is the artifact its package builds.
    for (package, file) in COMPONENTS {
        let id = package.trim_start_matches("kiloclaw-");
        let component = manifest
            .components
            .get(id)
            .with_context(|| format!("no component {id}"))?;
        assert!(
            component
                .source
                .ends_with(format!("target/wasm32-wasip2/release/{file}")),
            "{id} source"
        );
        let build = component
            .build
            .as_ref()
            .with_context(|| format!("{id} has no build command"))?;
        assert!(
            build
                .commands
                .iter()
                .any(|c| c.contains(&format!("-p {package}"))),
            "{id} builds {package}"
        );
    }

    let declared: BTreeSet<&str> = manifest.variables.keys().map(String::as_str).collect();
    let expected: BTreeSet<&str> = VARIABLES.iter().copied().collect();
    assert_eq!(declared, expected, "application variables");
    for secret in SECRETS {
        assert!(
            manifest.variables[*secret].secret,
            "{secret} must be marked secret = true"
        );
    }
    assert_eq!(
        manifest.variables["fly_region"].default.as_deref(),
        Some("dfw,yyz,cdg")
    );
    assert_eq!(
        manifest.variables["fly_api_base_url"].default.as_deref(),
        Some("https://api.machines.dev")
    );
    assert_eq!(
        manifest.variables["fly_proxy_base_url"].default.as_deref(),
        Some("https://{app}.fly.dev")
    );
    Ok(())
}

#[test]
fn dependencies_declare_no_configuration_and_parents_expose_every_variable() -> anyhow::Result<()> {
    let raw = raw_manifest()?;
    let components = raw
        .get("component")
        .and_then(toml::Value::as_table)
        .context("no [component] table")?;
    for dependency in ["auth", "instances"] {
        let table = components
            .get(dependency)
            .and_then(toml::Value::as_table)
            .context("dependency missing")?;
        for key in FORBIDDEN_ON_DEPENDENCIES {
            assert!(
                !table.contains_key(*key),
                "component {dependency} must not set {key} (Spin rejects it)"
            );
        }
    }
    // The router is the parent of both dependencies, so it must expose every variable they read.
    let router_vars = components["router"]
        .get("variables")
        .and_then(toml::Value::as_table)
        .context("router has no variables")?;
    for name in VARIABLES
        .iter()
        // Allow-list entries, used by the manifest itself, not read by the components.
        .filter(|n| {
            !matches!(
                **n,
                "fly_proxy_outbound_host" | "store_redis_outbound_host" | "database_outbound_host"
            )
        })
    {
        assert_eq!(
            router_vars.get(*name).and_then(toml::Value::as_str),
            Some(format!("{{{{ {name} }}}}").as_str()),
            "router variable {name}"
        );
    }
    Ok(())
}
