//! The host's Spin manifest loader: `kiloclaw_manifest::Manifest::parse(text, base_dir)`.
//!
//! Properties, beyond "never panics":
//! - parsing is deterministic;
//! - every component of an accepted manifest is one the text declared (`[component.<id>]`) or an
//!   inline trigger component, none is lost or overwritten (the count adds up), and every id is a
//!   kebab-case id or a generated `inline-component--<n>`;
//! - every variable name is valid, every trigger references an existing component, every route
//!   starts with `/` and passes the route syntax check, every cron expression parses, every static
//!   response status is an HTTP status, and no component depends on itself or on an unknown one;
#![no_main]

use std::path::Path;

use kiloclaw_manifest::{
    DependencySource, FileMount, HttpTarget, Manifest, Route, validate_kebab_id,
};
use libfuzzer_sys::fuzz_target;

const BASE: &str = "/app";

fn is_generated_inline_id(id: &str) -> bool {
    id.strip_prefix("inline-component--")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Declared components plus inline trigger components, counted from the TOML itself.
fn expected_component_count(text: &str) -> Option<usize> {
    let table: toml::Table = toml::from_str(text).ok()?;
    let declared = table
        .get("component")
        .and_then(toml::Value::as_table)
        .map_or(0, toml::map::Map::len);
    let mut inline = 0;
    if let Some(triggers) = table.get("trigger").and_then(toml::Value::as_table) {
        for kind in ["http", "cron"] {
            for trigger in triggers
                .get(kind)
                .and_then(toml::Value::as_array)
                .into_iter()
                .flatten()
            {
                if trigger.get("component").is_some_and(toml::Value::is_table) {
                    inline += 1;
                }
            }
        }
    }
    Some(declared + inline)
}

fn check(text: &str, manifest: &Manifest) {
    let base = Path::new(BASE);
    assert_eq!(manifest.base_dir, base);
    if let Some(expected) = expected_component_count(text) {
        assert_eq!(
            manifest.components.len(),
            expected,
            "components lost or merged: {:?}",
            manifest.components.keys().collect::<Vec<_>>()
        );
    }
    for name in manifest.variables.keys() {
        assert!(
            kiloclaw_manifest::template::validate_name(name).is_ok(),
            "accepted variable {name:?}"
        );
    }
    for (id, component) in &manifest.components {
        assert_eq!(id, &component.id);
        assert!(
            validate_kebab_id(id).is_ok() || is_generated_inline_id(id),
            "accepted component id {id:?}"
        );
        for name in component.variables.keys() {
            assert!(kiloclaw_manifest::template::validate_name(name).is_ok());
        }
        for dependency in &component.dependencies {
            if let DependencySource::Component(target) = &dependency.source {
                assert_ne!(target, id, "a component depends on itself");
                assert!(manifest.components.contains_key(target));
            }
        }
        for file in &component.files {
            if let FileMount::Placement { destination, .. } = file {
                assert!(destination.starts_with('/'));
            }
        }
    }
    for trigger in &manifest.http_triggers {
        if let Route::Path(route) = &trigger.route {
            assert!(route.starts_with('/'));
            assert!(kiloclaw_manifest::routes::check_route_syntax(route).is_ok());
        }
        match &trigger.target {
            HttpTarget::Component(id) => assert!(manifest.components.contains_key(id)),
            HttpTarget::Static(response) => assert!((100..=599).contains(&response.status)),
        }
    }
    for trigger in &manifest.cron_triggers {
        assert!(manifest.components.contains_key(&trigger.component));
        assert!(kiloclaw_manifest::cron::parse_expression(&trigger.expression).is_ok());
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let first = Manifest::parse(text, Path::new(BASE));
    let second = Manifest::parse(text, Path::new(BASE));
    assert_eq!(
        format!("{first:?}"),
        format!("{second:?}"),
        "not deterministic"
    );
    if let Ok(manifest) = &first {
        check(text, manifest);
    }
});
