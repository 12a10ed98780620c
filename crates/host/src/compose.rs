//! Load-time composition of `[component.x.dependencies]` with `wac-graph`, as Spin's
//! `crates/compose` does.
//!
//! The main component and each dependency are instantiated in one graph; every import of the
//! main component that a dependency name matches is satisfied from that dependency's export (the
//! `export` override, else the export with the import's name); every export of the main component
//! is re-exported. Whatever the dependencies still import becomes an import of the composed
//! component, satisfied by the host, so dependencies run in the parent's store with the parent's
//! configuration.
//!
//! Dependency names: `pkg:name/iface@ver` (exact), `pkg:name/iface` (any version),
//! `pkg:name[@ver]` (every import of the package), or a plain kebab name (a plain import).
//! An import matched by two dependencies, a dependency that matches nothing, and two dependencies
//! from one WIT package (Spin registers each under its package name) are errors, with Spin's
//! messages.

use crate::manifest::Dependency;
use std::collections::BTreeMap;
use wac_graph::types::{Package, SubtypeChecker, WorldId};
use wac_graph::{CompositionGraph, EncodeOptions, NodeId};

/// Why composition failed, in Spin's words (`spin/crates/compose`), so that an app our host
/// refuses is refused by Spin with the same message and the other way round.
#[derive(Debug, thiserror::Error)]
pub enum ComposeError {
    #[error("dependency '{dependency}' doesn't match any imports of component '{component}'")]
    UnmatchedDependencyName {
        component: String,
        dependency: String,
    },
    #[error("component '{component}' has dependency conflicts: {}", format_conflicts(.conflicts))]
    DependencyConflicts {
        component: String,
        conflicts: Vec<(String, Vec<String>)>,
    },
    #[error("dependency '{dependency}' doesn't export '{export}' to satisfy import '{import}'")]
    MissingExport {
        dependency: String,
        export: String,
        import: String,
    },
    /// Spin's `PrepareError`: its message is the cause, e.g. wac-graph's "package `x:y` has
    /// already been registered in the graph" when two dependencies come from one WIT package.
    #[error("an error occurred when preparing dependencies: {0}")]
    Prepare(String),
    #[error("failed to encode composition graph: {0}")]
    Encode(String),
}

fn format_conflicts(conflicts: &[(String, Vec<String>)]) -> String {
    conflicts
        .iter()
        .map(|(import, dependencies)| {
            format!(
                "import '{import}' satisfied by dependencies: '{}'",
                dependencies.join(", ")
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Splits `ns:pkg/iface@ver` into (`ns:pkg`, Some(`iface`), Some(`ver`)).
fn split_name(name: &str) -> (&str, Option<&str>, Option<&str>) {
    let (base, version) = match name.split_once('@') {
        Some((b, v)) => (b, Some(v)),
        None => (name, None),
    };
    match base.split_once('/') {
        Some((package, iface)) => (package, Some(iface), version),
        None => (base, None, version),
    }
}

/// Whether dependency key `key` satisfies the main component's import `import`.
pub fn dependency_matches(key: &str, import: &str) -> bool {
    if !key.contains(':') {
        return key == import;
    }
    let (k_pkg, k_iface, k_ver) = split_name(key);
    let (i_pkg, i_iface, i_ver) = split_name(import);
    if k_pkg != i_pkg {
        return false;
    }
    match k_iface {
        Some(iface) => Some(iface) == i_iface && (k_ver.is_none() || k_ver == i_ver),
        None => k_ver.is_none() || k_ver == i_ver,
    }
}

/// The name Spin registers a dependency's package under in the composition graph: the key's
/// package without interface or version (`kiloclaw:auth/auth@0.1.0` → `kiloclaw:auth`), or the
/// plain name. Two dependencies with one package name therefore cannot be composed, on Spin or here.
fn graph_package_name(key: &str) -> &str {
    split_name(key).0
}

fn register(
    graph: &mut CompositionGraph,
    name: &str,
    bytes: Vec<u8>,
) -> Result<(WorldId, NodeId), ComposeError> {
    let package = Package::from_bytes(name, None, bytes, graph.types_mut())
        .map_err(|e| ComposeError::Prepare(format!("{e:#}")))?;
    let world = package.ty();
    let id = graph
        .register_package(package)
        .map_err(|e| ComposeError::Prepare(e.to_string()))?;
    Ok((world, graph.instantiate(id)))
}

/// Composes component `component_id` (`main`, bytes already read) with its dependencies, in
/// the order and with the checks of Spin's composer: every dependency must match an import,
/// registers under its package name, no import may be matched twice, and each export must be a
/// subtype of the import it satisfies.
pub fn compose(
    component_id: &str,
    main: &[u8],
    dependencies: &[(Dependency, Vec<u8>)],
) -> Result<Vec<u8>, ComposeError> {
    if dependencies.is_empty() {
        return Ok(main.to_vec());
    }
    let mut graph = CompositionGraph::new();
    let (main_world, main_instance) = register(&mut graph, component_id, main.to_vec())?;
    let main_imports: Vec<String> = graph.types()[main_world].imports.keys().cloned().collect();

    struct Registered<'a> {
        name: &'a str,
        export: Option<&'a str>,
        world: WorldId,
        instance: NodeId,
    }
    let mut by_import: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    let mut registered = Vec::new();
    for (dependency, bytes) in dependencies {
        let matched: Vec<&String> = main_imports
            .iter()
            .filter(|import| dependency_matches(&dependency.name, import))
            .collect();
        if matched.is_empty() {
            return Err(ComposeError::UnmatchedDependencyName {
                component: component_id.to_owned(),
                dependency: dependency.name.clone(),
            });
        }
        let (world, instance) = register(
            &mut graph,
            graph_package_name(&dependency.name),
            bytes.clone(),
        )?;
        for import in matched {
            by_import
                .entry(import.clone())
                .or_default()
                .push(registered.len());
        }
        registered.push(Registered {
            name: &dependency.name,
            export: dependency.export.as_deref(),
            world,
            instance,
        });
    }
    let conflicts: Vec<(String, Vec<String>)> = by_import
        .iter()
        .filter(|(_, users)| users.len() > 1)
        .map(|(import, users)| {
            let names = users.iter().map(|i| registered[*i].name.to_owned());
            (import.clone(), names.collect())
        })
        .collect();
    if !conflicts.is_empty() {
        return Err(ComposeError::DependencyConflicts {
            component: component_id.to_owned(),
            conflicts,
        });
    }

    let mut cache = Default::default();
    let mut checker = SubtypeChecker::new(&mut cache);
    for (import, users) in &by_import {
        let dependency = &registered[users[0]];
        let export = dependency.export.unwrap_or(import);
        let missing = || ComposeError::MissingExport {
            dependency: dependency.name.to_owned(),
            export: export.to_owned(),
            import: import.clone(),
        };
        let export_ty = *graph.types()[dependency.world]
            .exports
            .get(export)
            .ok_or_else(missing)?;
        let import_ty = *graph.types()[main_world]
            .imports
            .get(import)
            .ok_or_else(missing)?;
        checker
            .is_subtype(export_ty, graph.types(), import_ty, graph.types())
            .map_err(|e| {
                ComposeError::Prepare(format!(
                    "dependency '{}' exports '{export}' which is not compatible with import '{import}': {e:#}",
                    dependency.name
                ))
            })?;
        let alias = graph
            .alias_instance_export(dependency.instance, export)
            .map_err(|e| ComposeError::Prepare(e.to_string()))?;
        graph
            .set_instantiation_argument(main_instance, import, alias)
            .map_err(|e| ComposeError::Prepare(e.to_string()))?;
    }
    let main_exports: Vec<String> = graph.types()[main_world].exports.keys().cloned().collect();
    for export in &main_exports {
        let alias = graph
            .alias_instance_export(main_instance, export)
            .map_err(|e| ComposeError::Prepare(e.to_string()))?;
        graph
            .export(alias, export)
            .map_err(|e| ComposeError::Prepare(e.to_string()))?;
    }
    graph
        .encode(EncodeOptions::default())
        .map_err(|e| ComposeError::Encode(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::{ComposeError, compose, dependency_matches};
    use crate::manifest::{Dependency, DependencySource};
    use wit_component::{ComponentEncoder, StringEncoding, dummy_module, embed_component_metadata};
    use wit_parser::{ManglingAndAbi, Resolve};

    #[test]
    fn dependency_name_forms() {
        let import = "kiloclaw:auth/auth@0.1.0";
        assert!(dependency_matches("kiloclaw:auth/auth@0.1.0", import));
        assert!(dependency_matches("kiloclaw:auth/auth", import));
        assert!(dependency_matches("kiloclaw:auth", import));
        assert!(dependency_matches("kiloclaw:auth@0.1.0", import));
        assert!(!dependency_matches("kiloclaw:auth@0.2.0", import));
        assert!(!dependency_matches("kiloclaw:auth/instances", import));
        assert!(!dependency_matches("kiloclaw:other", import));
        assert!(dependency_matches("my-dep", "my-dep"));
        assert!(!dependency_matches("my-dep", import));
    }

    /// Two interfaces in one package (`shared:pkg`, the layout Spin refuses) and the same two
    /// interfaces in packages of their own (`solo:a`, `solo:b`), with an exporter of each and an
    /// importer of both.
    const WIT: &str = r#"
        package test:worlds;
        world main-shared { import shared:pkg/a@1.0.0; import shared:pkg/b@1.0.0; export run: func() -> u32; }
        world export-shared-a { export shared:pkg/a@1.0.0; }
        world export-shared-b { export shared:pkg/b@1.0.0; }
        world main-own { import solo:a/a@1.0.0; import solo:b/b@1.0.0; export run: func() -> u32; }
        world export-own-a { export solo:a/a@1.0.0; }
        world export-own-b { export solo:b/b@1.0.0; }
        world export-wrong-b { export solo:b/b@1.0.0; export solo:a/a@1.0.0; }
        package shared:pkg@1.0.0 { interface a { f: func() -> u32; } interface b { g: func(x: string); } }
        package solo:a@1.0.0 { interface a { f: func() -> u32; } }
        package solo:b@1.0.0 { interface b { g: func(x: string); } }
    "#;

    /// A component of `world` whose functions are never called (a dummy core module).
    fn component(world: &str) -> Vec<u8> {
        let mut resolve = Resolve::default();
        let package = resolve.push_str("test.wit", WIT).expect("test WIT parses");
        let world = resolve
            .select_world(&[package], Some(world))
            .expect("world exists");
        let mut module = dummy_module(&resolve, world, ManglingAndAbi::Standard32);
        embed_component_metadata(&mut module, &resolve, world, StringEncoding::UTF8)
            .expect("metadata embeds");
        ComponentEncoder::default()
            .module(&module)
            .and_then(|encoder| encoder.validate(true).encode())
            .expect("component encodes")
    }

    fn dependency(name: &str, world: &str) -> (Dependency, Vec<u8>) {
        let dependency = Dependency {
            name: name.to_owned(),
            source: DependencySource::Component(world.to_owned()),
            export: None,
        };
        (dependency, component(world))
    }

    #[test]
    fn two_dependencies_from_one_package_are_refused_with_spins_error() {
        let deps = [
            dependency("shared:pkg/a", "export-shared-a"),
            dependency("shared:pkg/b", "export-shared-b"),
        ];
        let error = compose("main", &component("main-shared"), &deps).expect_err("Spin refuses");
        assert!(matches!(error, ComposeError::Prepare(_)), "{error}");
        assert!(
            error
                .to_string()
                .contains("package `shared:pkg` has already been registered in the graph"),
            "{error}"
        );
    }

    #[test]
    fn one_package_per_dependency_composes_and_keeps_the_main_exports() {
        let deps = [
            dependency("solo:a/a", "export-own-a"),
            dependency("solo:b/b@1.0.0", "export-own-b"),
        ];
        let composed = compose("main", &component("main-own"), &deps).expect("composes");
        let mut validator =
            wasmparser::Validator::new_with_features(wasmparser::WasmFeatures::all());
        validator.validate_all(&composed).expect("valid component");
    }

    #[test]
    fn unmatched_conflicting_and_missing_dependencies_use_spins_messages() {
        let main = component("main-own");
        let unmatched = compose("main", &main, &[dependency("solo:c/c", "export-own-a")])
            .expect_err("matches nothing");
        assert_eq!(
            unmatched.to_string(),
            "dependency 'solo:c/c' doesn't match any imports of component 'main'"
        );

        let conflict = compose(
            "main",
            &main,
            &[
                dependency("solo:a", "export-own-a"),
                dependency("solo:a/a@1.0.0", "export-own-a"),
            ],
        )
        .expect_err("one import, two dependencies");
        // Spin registers both under `solo:a` before it looks for conflicts, so this is the error.
        assert!(
            conflict
                .to_string()
                .contains("package `solo:a` has already been registered in the graph"),
            "{conflict}"
        );

        let missing = compose(
            "main",
            &main,
            &[
                dependency("solo:a/a", "export-own-b"),
                dependency("solo:b/b", "export-own-b"),
            ],
        )
        .expect_err("export-own-b exports no solo:a/a");
        assert!(
            missing
                .to_string()
                .contains("doesn't export 'solo:a/a@1.0.0'"),
            "{missing}"
        );
    }
}
