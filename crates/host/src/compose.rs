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
//! An import matched by two dependencies, or a dependency that matches nothing, is an error.

use crate::manifest::Dependency;
use wac_graph::types::Package;
use wac_graph::{CompositionGraph, EncodeOptions};

/// Why composition failed; the message names the dependency or import.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ComposeError(String);

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

/// Composes `main` with its dependencies (bytes already read) and returns the new component.
pub fn compose(
    main: &[u8],
    dependencies: &[(Dependency, Vec<u8>)],
) -> Result<Vec<u8>, ComposeError> {
    let mut graph = CompositionGraph::new();
    let main_package =
        Package::from_bytes("root:component", None, main.to_vec(), graph.types_mut())
            .map_err(|e| ComposeError(format!("main component: {e:#}")))?;
    let main_world = &graph.types()[main_package.ty()];
    let main_imports: Vec<String> = main_world.imports.keys().cloned().collect();
    let main_exports: Vec<String> = main_world.exports.keys().cloned().collect();
    let main_id = graph
        .register_package(main_package)
        .map_err(|e| ComposeError(format!("main component: {e}")))?;
    let main_instance = graph.instantiate(main_id);

    let mut dependency_instances = Vec::new();
    for (index, (dependency, bytes)) in dependencies.iter().enumerate() {
        let package = Package::from_bytes(
            &format!("dependency:d{index}"),
            None,
            bytes.clone(),
            graph.types_mut(),
        )
        .map_err(|e| ComposeError(format!("dependency `{}`: {e:#}", dependency.name)))?;
        let id = graph
            .register_package(package)
            .map_err(|e| ComposeError(format!("dependency `{}`: {e}", dependency.name)))?;
        dependency_instances.push(graph.instantiate(id));
    }

    let mut used = vec![false; dependencies.len()];
    for import in &main_imports {
        let matching: Vec<usize> = dependencies
            .iter()
            .enumerate()
            .filter(|(_, (d, _))| dependency_matches(&d.name, import))
            .map(|(i, _)| i)
            .collect();
        let index = match matching.as_slice() {
            [] => continue,
            [one] => *one,
            many => {
                let names: Vec<&str> = many
                    .iter()
                    .map(|i| dependencies[*i].0.name.as_str())
                    .collect();
                return Err(ComposeError(format!(
                    "import `{import}` is matched by more than one dependency: {}",
                    names.join(", ")
                )));
            }
        };
        used[index] = true;
        let dependency = &dependencies[index].0;
        let export = match (&dependency.export, dependency.name.contains('/')) {
            (Some(export), _) => export.clone(),
            _ => import.clone(),
        };
        let alias = graph
            .alias_instance_export(dependency_instances[index], &export)
            .map_err(|e| {
                ComposeError(format!(
                    "dependency `{}` does not export `{export}` needed for import `{import}`: {e}",
                    dependency.name
                ))
            })?;
        graph
            .set_instantiation_argument(main_instance, import, alias)
            .map_err(|e| {
                ComposeError(format!(
                    "dependency `{}` cannot satisfy import `{import}`: {e}",
                    dependency.name
                ))
            })?;
    }
    if let Some(unused) = used.iter().position(|u| !u) {
        return Err(ComposeError(format!(
            "dependency `{}` matches no import of the component",
            dependencies[unused].0.name
        )));
    }
    for export in &main_exports {
        let alias = graph
            .alias_instance_export(main_instance, export)
            .map_err(|e| ComposeError(format!("re-exporting `{export}`: {e}")))?;
        graph
            .export(alias, export)
            .map_err(|e| ComposeError(format!("re-exporting `{export}`: {e}")))?;
    }
    graph
        .encode(EncodeOptions::default())
        .map_err(|e| ComposeError(format!("encoding the composition: {e}")))
}

#[cfg(test)]
mod tests {
    use super::dependency_matches;

    #[test]
    fn dependency_name_forms() {
        let import = "kiloclaw:platform/auth@0.1.0";
        assert!(dependency_matches("kiloclaw:platform/auth@0.1.0", import));
        assert!(dependency_matches("kiloclaw:platform/auth", import));
        assert!(dependency_matches("kiloclaw:platform", import));
        assert!(dependency_matches("kiloclaw:platform@0.1.0", import));
        assert!(!dependency_matches("kiloclaw:platform@0.2.0", import));
        assert!(!dependency_matches("kiloclaw:platform/instances", import));
        assert!(!dependency_matches("kiloclaw:other", import));
        assert!(dependency_matches("my-dep", "my-dep"));
        assert!(!dependency_matches("my-dep", import));
    }
}
