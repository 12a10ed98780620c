//! Inspects the built components' component-model imports and exports with `wasmparser`.
//!
//! A component that imports anything a Spin 3.5+ host does not provide would fail to instantiate
//! there (and in our host) only at deploy time; this test fails at build time instead.

use std::path::Path;

use anyhow::Context;
use kiloclaw_e2e::components;
use wasmparser::{Parser, Payload};

/// WASI 0.2 packages Spin provides (any 0.2.x patch release).
const WASI_02_PACKAGES: &[&str] = &[
    "cli",
    "io",
    "clocks",
    "random",
    "filesystem",
    "sockets",
    "http",
];

/// True when a component may import `name` and still run on a Spin 3.5+ host (plus composition with
/// our own components for `kiloclaw:platform`).
fn allowed_import(name: &str) -> bool {
    let Some((package, rest)) = name.split_once('/') else {
        return false;
    };
    let Some((_interface, version)) = rest.split_once('@') else {
        return false;
    };
    match package {
        "fermyon:spin" | "fermyon:spin-cron" => version == "2.0.0",
        "wasi:keyvalue" => version == "0.2.0-draft2",
        // spin-sdk 5.2's `pg4`; Spin 3.2+ provides it (Spin 4.0.2 as 4.2.0, a compatible superset).
        "spin:postgres" => version == "4.0.0",
        "kiloclaw:types" | "kiloclaw:auth" | "kiloclaw:instances" => version == "0.1.0",
        _ => package.strip_prefix("wasi:").is_some_and(|wasi_package| {
            WASI_02_PACKAGES.contains(&wasi_package)
                && version.strip_prefix("0.2.").is_some_and(|patch| {
                    !patch.is_empty() && patch.bytes().all(|b| b.is_ascii_digit())
                })
        }),
    }
}

/// The top-level component's import and export names (nested components and modules skipped).
///
/// Type imports (`ComponentTypeRef::Type`) are skipped: a world-level `use` (the cron world's
/// `use cron-types.{metadata, error}`) imports its types by name with an equality bound to the
/// interface's own types, which needs nothing from the host.
fn imports_and_exports(path: &Path) -> anyhow::Result<(Vec<String>, Vec<String>)> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let mut imports = Vec::new();
    let mut exports = Vec::new();
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(&bytes) {
        match payload.with_context(|| format!("parsing {}", path.display()))? {
            Payload::Version { encoding, .. } if depth == 0 => {
                anyhow::ensure!(
                    encoding == wasmparser::Encoding::Component,
                    "{} is a core module, not a component",
                    path.display()
                );
            }
            Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => depth += 1,
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentImportSection(section) if depth == 0 => {
                for import in section {
                    let import = import?;
                    if !matches!(import.ty, wasmparser::ComponentTypeRef::Type(_)) {
                        imports.push(import.name.0.to_owned());
                    }
                }
            }
            Payload::ComponentExportSection(section) if depth == 0 => {
                for export in section {
                    exports.push(export?.name.0.to_owned());
                }
            }
            _ => {}
        }
    }
    Ok((imports, exports))
}

#[test]
fn the_allow_list_accepts_spin_interfaces_and_rejects_everything_else() {
    for good in [
        "wasi:cli/environment@0.2.6",
        "wasi:io/streams@0.2.0",
        "wasi:http/outgoing-handler@0.2.6",
        "wasi:http/types@0.2.10",
        "fermyon:spin/variables@2.0.0",
        "wasi:keyvalue/atomics@0.2.0-draft2",
        "fermyon:spin-cron/cron-types@2.0.0",
        "kiloclaw:instances/instances@0.1.0",
        "kiloclaw:types/types@0.1.0",
        "spin:postgres/postgres@4.0.0",
    ] {
        assert!(allowed_import(good), "{good} should be allowed");
    }
    for bad in [
        "wasi:http/handler@0.3.0",
        "wasi:cli/environment@0.3.0-rc-2026-01-06",
        "wasi:http/types@0.2.0-rc-2023-11-10",
        "wasi:keyvalue/store@0.2.0-draft",
        "wasi:config/store@0.2.0-draft-2024-09-27",
        "spin:key-value/key-value@3.0.0",
        "spin:postgres/postgres@3.0.0",
        "fermyon:spin/variables@3.0.0",
        "kiloclaw:instances/instances@0.2.0",
        // The old single-package layout, which Spin's composer refuses for the router.
        "kiloclaw:platform/instances@0.1.0",
        "wasi:nn/tensor@0.2.0",
        "wasi:cli/environment",
        "greeting",
    ] {
        assert!(!allowed_import(bad), "{bad} should be rejected");
    }
}

#[test]
fn every_component_imports_only_what_spin_provides_and_exports_its_role() -> anyhow::Result<()> {
    let built = components()?;
    let mut failures = Vec::new();
    for (package, path) in built.all() {
        let (imports, exports) = imports_and_exports(path)?;
        if imports.is_empty() {
            failures.push(format!(
                "{package}: no imports found; is the parser reading the right section?"
            ));
        }
        for import in imports.iter().filter(|name| !allowed_import(name)) {
            failures.push(format!(
                "{package} imports {import}, which Spin hosts do not provide"
            ));
        }
        let (must_export, must_import): (&[&str], &[&str]) = match package {
            "kiloclaw-auth" => (
                &["kiloclaw:auth/auth@0.1.0"],
                &[
                    "fermyon:spin/variables@2.0.0",
                    "wasi:keyvalue/atomics@0.2.0-draft2",
                    "spin:postgres/postgres@4.0.0",
                ],
            ),
            "kiloclaw-instances" => (
                &["kiloclaw:instances/instances@0.1.0"],
                &[
                    "wasi:keyvalue/store@0.2.0-draft2",
                    "wasi:keyvalue/atomics@0.2.0-draft2",
                    "spin:postgres/postgres@4.0.0",
                ],
            ),
            "kiloclaw-router" => (
                &["wasi:http/incoming-handler@0.2.0"],
                &[
                    "kiloclaw:auth/auth@0.1.0",
                    "kiloclaw:instances/instances@0.1.0",
                ],
            ),
            "kiloclaw-reconciler" => (
                &["handle-cron-event"],
                &["kiloclaw:instances/instances@0.1.0"],
            ),
            other => anyhow::bail!("unexpected component {other}"),
        };
        for name in must_export {
            if !exports.iter().any(|export| export == name) {
                failures.push(format!(
                    "{package} does not export {name} (exports: {exports:?})"
                ));
            }
        }
        for name in must_import {
            if !imports.iter().any(|import| import == name) {
                failures.push(format!(
                    "{package} does not import {name} (imports: {imports:?})"
                ));
            }
        }
        if package == "kiloclaw-router"
            && imports
                .iter()
                .any(|i| i.starts_with("spin:postgres/") || i.starts_with("wasi:keyvalue/"))
        {
            failures.push(
                "kiloclaw-router must reach the store and the database only through its dependencies"
                    .to_owned(),
            );
        }
    }
    anyhow::ensure!(
        failures.is_empty(),
        "component interface violations:\n{}",
        failures.join("\n")
    );
    Ok(())
}
