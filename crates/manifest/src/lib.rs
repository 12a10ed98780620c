//! Spin application manifests (`spin.toml`, manifest v2) as the KiloClaw host reads them.
//!
//! A crate of its own, without wasmtime, so that the parser can be fuzzed and reused cheaply; the
//! host (`kiloclaw-host`) re-exports it as `kiloclaw_host::manifest`.
//!
//! [`Manifest::load`] parses the file with [`schema`] (unknown fields rejected) and then checks
//! every cross-reference Spin's loader checks, with messages naming the offending item:
//! kebab-case component ids, lower_snake variable names, `required` XOR `default`, component
//! variable templates over declared application variables only, trigger → component references,
//! routes, 6-field cron expressions, dependency sources and the "dependencies may not have their
//! own resources" rule for `{ component = "…" }` dependencies. Key-value labels are checked
//! against the runtime config later, by the host (`kiloclaw_host::App::load`).

pub mod allowed_hosts;
pub mod cron;
pub mod routes;
pub mod schema;
pub mod template;

use allowed_hosts::AllowedHosts;
use schema::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use template::Template;

/// Why a manifest could not be loaded. Every variant is a configuration error: fix the file.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The file could not be read.
    #[error("cannot read manifest {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The TOML is malformed or has unknown / mistyped fields.
    #[error("invalid manifest {path}: {message}")]
    Parse { path: PathBuf, message: String },
    /// A field is well-formed but its value or a reference is not valid.
    #[error("invalid manifest: {item}: {reason}")]
    Invalid { item: String, reason: String },
}

fn invalid(item: impl Into<String>, reason: impl Into<String>) -> ManifestError {
    ManifestError::Invalid {
        item: item.into(),
        reason: reason.into(),
    }
}

/// A validated application.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// `application.name`.
    pub app_name: String,
    /// `application.version`.
    pub app_version: Option<String>,
    /// The directory holding `spin.toml`; relative paths resolve against it.
    pub base_dir: PathBuf,
    /// `[variables]`.
    pub variables: BTreeMap<String, VariableDecl>,
    /// `[[trigger.http]]` in declaration order.
    pub http_triggers: Vec<HttpTrigger>,
    /// `[[trigger.cron]]` in declaration order.
    pub cron_triggers: Vec<CronTrigger>,
    /// `[component.<id>]` (inline trigger components included, under generated ids).
    pub components: BTreeMap<String, Component>,
}

/// One application variable.
#[derive(Debug, Clone)]
pub struct VariableDecl {
    /// `Some` when the variable has a default; `None` when it is `required`.
    pub default: Option<String>,
    /// Secret values are never logged.
    pub secret: bool,
}

/// An HTTP trigger after validation.
#[derive(Debug, Clone)]
pub struct HttpTrigger {
    /// Where the trigger is reachable.
    pub route: Route,
    /// What serves it.
    pub target: HttpTarget,
}

/// The route of an HTTP trigger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// The raw route string as written in the manifest.
    Path(String),
    /// `{ private = true }`: no route; reachable only by service chaining.
    Private,
}

/// What serves an HTTP trigger.
#[derive(Debug, Clone)]
pub enum HttpTarget {
    /// A component id.
    Component(String),
    /// A `static_response` table.
    Static(StaticResponse),
}

/// `static_response`.
#[derive(Debug, Clone)]
pub struct StaticResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

/// A cron trigger after validation.
#[derive(Debug, Clone)]
pub struct CronTrigger {
    pub component: String,
    /// A 6-field, seconds-first expression (already checked to parse).
    pub expression: String,
}

/// A component after validation.
#[derive(Debug, Clone)]
pub struct Component {
    pub id: String,
    /// Absolute path to the `.wasm` file.
    pub source: PathBuf,
    /// Component variables: name → template over application variables.
    pub variables: BTreeMap<String, Template>,
    pub environment: BTreeMap<String, String>,
    pub files: Vec<FileMount>,
    /// Raw `allowed_outbound_hosts` entries (templates resolved at load).
    pub allowed_outbound_hosts: Vec<String>,
    pub key_value_stores: Vec<String>,
    pub dependencies_inherit_configuration: bool,
    pub dependencies: Vec<Dependency>,
    pub build: Option<BuildSpec>,
}

/// A `files` entry.
#[derive(Debug, Clone)]
pub enum FileMount {
    /// A glob pattern relative to the app directory; matches are mounted at the same relative path.
    Pattern(String),
    /// A file or directory mounted at `destination`.
    Placement {
        source: PathBuf,
        destination: String,
    },
}

/// A `[component.x.dependencies]` entry.
#[derive(Debug, Clone)]
pub struct Dependency {
    /// The key: `pkg:name/iface@ver`, `pkg:name/iface`, `pkg:name[@ver]` or a plain kebab name.
    pub name: String,
    pub source: DependencySource,
    /// Which export of the dependency satisfies the import (default: the same name).
    pub export: Option<String>,
}

/// Where a dependency's component comes from.
#[derive(Debug, Clone)]
pub enum DependencySource {
    /// A local `.wasm` file.
    Path(PathBuf),
    /// Another component of this app.
    Component(String),
}

/// `build`, for the CLI (the host never builds).
#[derive(Debug, Clone)]
pub struct BuildSpec {
    pub commands: Vec<String>,
    pub workdir: PathBuf,
}

impl Manifest {
    /// Reads and validates `spin.toml`.
    pub fn load(path: &Path) -> Result<Self, ManifestError> {
        let text = std::fs::read_to_string(path).map_err(|source| ManifestError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let base_dir = path
            .parent()
            .map(|p| {
                if p.as_os_str().is_empty() {
                    PathBuf::from(".")
                } else {
                    p.to_path_buf()
                }
            })
            .unwrap_or_else(|| PathBuf::from("."));
        let base_dir = std::path::absolute(&base_dir).unwrap_or(base_dir);
        Self::parse(&text, &base_dir).map_err(|e| match e {
            ManifestError::Parse { message, .. } => ManifestError::Parse {
                path: path.to_path_buf(),
                message,
            },
            other => other,
        })
    }

    /// Parses and validates manifest text; relative paths resolve against `base_dir`.
    pub fn parse(text: &str, base_dir: &Path) -> Result<Self, ManifestError> {
        let raw: RawManifest = toml::from_str(text).map_err(|e| ManifestError::Parse {
            path: PathBuf::from("spin.toml"),
            message: e.to_string(),
        })?;
        validate(raw, base_dir)
    }
}

fn validate(raw: RawManifest, base_dir: &Path) -> Result<Manifest, ManifestError> {
    if raw.spin_manifest_version.as_integer() != Some(2) {
        return Err(invalid(
            "spin_manifest_version",
            "only manifest version 2 is supported",
        ));
    }
    if let Some(trigger) = &raw.application.trigger {
        for (kind, settings) in trigger {
            match kind.as_str() {
                "http" => {
                    let base = settings.get("base").and_then(|b| b.as_str()).unwrap_or("/");
                    if base != "/" || settings.as_table().is_some_and(|t| t.len() > 1) {
                        return Err(invalid(
                            "application.trigger.http",
                            "only `base = \"/\"` is supported (Spin ignores other bases too)",
                        ));
                    }
                }
                "cron" => {
                    return Err(invalid(
                        "application.trigger.cron",
                        "the cron trigger has no application-level settings",
                    ));
                }
                other => {
                    return Err(invalid(
                        format!("application.trigger.{other}"),
                        "unknown trigger type",
                    ));
                }
            }
        }
    }

    let mut variables = BTreeMap::new();
    for (name, decl) in &raw.variables {
        template::validate_name(name)
            .map_err(|reason| invalid(format!("variables.{name}"), reason))?;
        if decl.required == decl.default.is_some() {
            return Err(invalid(
                format!("variables.{name}"),
                "must be `required` OR have a `default`",
            ));
        }
        variables.insert(
            name.clone(),
            VariableDecl {
                default: decl.default.clone(),
                secret: decl.secret,
            },
        );
    }

    // Declared ids are checked before inline components join them under generated ids, which are
    // not kebab-case on purpose: a declared id can then never take (or be overwritten by) one.
    for id in raw.component.keys() {
        validate_kebab_id(id).map_err(|reason| invalid(format!("component.{id}"), reason))?;
    }
    let mut raw_components = raw.component.clone();
    let mut resolve_ref = |item: &str, r: &RawComponentRef| -> Result<String, ManifestError> {
        match r {
            RawComponentRef::Id(id) => Ok(id.clone()),
            RawComponentRef::Inline(component) => {
                // Spin names inline components after the trigger; these ids cannot collide with
                // kebab-case ids declared by hand because of the `--` separator.
                let id = format!("inline-component--{}", raw_components.len());
                raw_components.insert(id.clone(), (**component).clone());
                let _ = item;
                Ok(id)
            }
        }
    };

    let mut http_triggers = Vec::new();
    for (index, t) in raw.trigger.http.iter().enumerate() {
        let item = format!("trigger.http[{index}]");
        let route = match &t.route {
            RawRoute::Path(p) => {
                if !p.starts_with('/') {
                    return Err(invalid(&item, format!("route `{p}` must start with `/`")));
                }
                routes::check_route_syntax(p).map_err(|reason| invalid(&item, reason))?;
                Route::Path(p.clone())
            }
            RawRoute::Private(p) if p.private => Route::Private,
            RawRoute::Private(_) => {
                return Err(invalid(
                    &item,
                    "`route = { private = false }` is not allowed; give a route path instead",
                ));
            }
        };
        if let Some(executor) = &t.executor
            && executor.kind != "http"
            && executor.kind != "spin"
        {
            return Err(invalid(
                &item,
                format!(
                    "executor type `{}` is not supported (only `http`)",
                    executor.kind
                ),
            ));
        }
        let target = match (&t.component, &t.static_response) {
            (Some(c), None) => HttpTarget::Component(resolve_ref(&item, c)?),
            (None, Some(s)) if s.status_code.is_some_and(|c| !(100..=599).contains(&c)) => {
                return Err(invalid(
                    &item,
                    format!(
                        "static_response status_code {} is not an HTTP status",
                        s.status_code.unwrap_or_default()
                    ),
                ));
            }
            (None, Some(s)) => HttpTarget::Static(StaticResponse {
                status: s.status_code.unwrap_or(200),
                headers: s
                    .headers
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                body: s.body.clone().unwrap_or_default(),
            }),
            _ => {
                return Err(invalid(
                    &item,
                    "exactly one of `component` or `static_response` must be set",
                ));
            }
        };
        http_triggers.push(HttpTrigger { route, target });
    }

    let mut cron_triggers = Vec::new();
    for (index, t) in raw.trigger.cron.iter().enumerate() {
        let item = format!("trigger.cron[{index}]");
        cron::parse_expression(&t.cron_expression).map_err(|e| {
            invalid(
                &item,
                format!("invalid cron_expression `{}`: {e}", t.cron_expression),
            )
        })?;
        cron_triggers.push(CronTrigger {
            component: resolve_ref(&item, &t.component)?,
            expression: t.cron_expression.clone(),
        });
    }

    let mut components = BTreeMap::new();
    for (id, c) in &raw_components {
        components.insert(id.clone(), validate_component(id, c, &variables, base_dir)?);
    }

    for (index, t) in http_triggers.iter().enumerate() {
        if let HttpTarget::Component(id) = &t.target
            && !components.contains_key(id)
        {
            return Err(invalid(
                format!("trigger.http[{index}]"),
                format!("references unknown component `{id}`"),
            ));
        }
    }
    for (index, t) in cron_triggers.iter().enumerate() {
        if !components.contains_key(&t.component) {
            return Err(invalid(
                format!("trigger.cron[{index}]"),
                format!("references unknown component `{}`", t.component),
            ));
        }
    }
    for c in components.values() {
        for dep in &c.dependencies {
            if let DependencySource::Component(target) = &dep.source {
                let item = format!("component.{}.dependencies.\"{}\"", c.id, dep.name);
                let Some(raw_target) = raw_components.get(target) else {
                    return Err(invalid(item, format!("unknown component `{target}`")));
                };
                if target == &c.id {
                    return Err(invalid(item, "a component cannot depend on itself"));
                }
                check_dependency_has_no_resources(target, raw_target)
                    .map_err(|reason| invalid(item, reason))?;
            }
        }
    }

    Ok(Manifest {
        app_name: raw.application.name.clone(),
        app_version: raw.application.version.clone(),
        base_dir: base_dir.to_path_buf(),
        variables,
        http_triggers,
        cron_triggers,
        components,
    })
}

fn validate_component(
    id: &str,
    c: &RawComponent,
    app_variables: &BTreeMap<String, VariableDecl>,
    base_dir: &Path,
) -> Result<Component, ManifestError> {
    let item = format!("component.{id}");
    let source = match &c.source {
        RawSource::Path(p) => base_dir.join(p),
        RawSource::Remote(r) => {
            let form = if r.url.is_some() {
                "url"
            } else {
                "registry package"
            };
            return Err(invalid(
                format!("{item}.source"),
                format!(
                    "{form} sources are not supported by this host; build the component and give a local path"
                ),
            ));
        }
    };
    if !c.sqlite_databases.is_empty() {
        return Err(invalid(
            format!("{item}.sqlite_databases"),
            "SQLite databases are not supported by this host",
        ));
    }
    if !c.ai_models.is_empty() {
        return Err(invalid(
            format!("{item}.ai_models"),
            "AI models are not supported by this host",
        ));
    }
    let mut variables = BTreeMap::new();
    for (name, template) in &c.variables {
        let var_item = format!("{item}.variables.{name}");
        template::validate_name(name).map_err(|reason| invalid(&var_item, reason))?;
        let parsed = Template::parse(template).map_err(|reason| invalid(&var_item, reason))?;
        for reference in parsed.references() {
            if !app_variables.contains_key(reference) {
                return Err(invalid(
                    &var_item,
                    format!("unknown variable `{reference}` (not declared in [variables])"),
                ));
            }
        }
        variables.insert(name.clone(), parsed);
    }
    let mut allowed_outbound_hosts = c.allowed_outbound_hosts.clone();
    for host in &c.allowed_http_hosts {
        // Spin's conversion of the deprecated field: a bare host allows both schemes.
        if host == "insecure:allow-all" {
            allowed_outbound_hosts.push("*://*:*".to_string());
        } else if host.contains("://") {
            allowed_outbound_hosts.push(host.clone());
        } else {
            allowed_outbound_hosts.push(format!("http://{host}"));
            allowed_outbound_hosts.push(format!("https://{host}"));
        }
    }
    for entry in &allowed_outbound_hosts {
        let entry_item = format!("{item}.allowed_outbound_hosts");
        let template = Template::parse(entry).map_err(|reason| invalid(&entry_item, reason))?;
        if template.references().next().is_none() {
            AllowedHosts::parse_entry(entry)
                .map_err(|reason| invalid(&entry_item, format!("`{entry}`: {reason}")))?;
        } else {
            let mut defaults = Some(String::new());
            for reference in template.references() {
                let Some(variable) = app_variables.get(reference) else {
                    return Err(invalid(
                        &entry_item,
                        format!("unknown variable `{reference}` in `{entry}`"),
                    ));
                };
                if variable.default.is_none() {
                    defaults = None;
                }
            }
            // Spin validates a templated entry with the variables' defaults at load (a value
            // supplied at run time cannot repair a default that does not parse); an entry with a
            // variable lacking a default is only checked when it is resolved.
            if defaults.is_some() {
                let rendered = template.render_with(|name| {
                    app_variables
                        .get(name)
                        .and_then(|v| v.default.clone())
                        .unwrap_or_default()
                });
                AllowedHosts::parse_entry(&rendered).map_err(|reason| {
                    invalid(
                        &entry_item,
                        format!(
                            "`allowed_outbound_hosts` is malformed: using default variable value(s) \
                             with template {entry:?} results in invalid config {rendered:?}: \
                             {rendered:?} is not an allowed outbound host format ({reason})"
                        ),
                    )
                })?;
            }
        }
    }
    for label in &c.key_value_stores {
        let ok = !label.is_empty()
            && label
                .chars()
                .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '-' || ch == '_');
        if !ok {
            return Err(invalid(
                format!("{item}.key_value_stores"),
                format!("invalid label `{label}`"),
            ));
        }
    }
    let mut files = Vec::new();
    for f in &c.files {
        files.push(match f {
            RawFileMount::Pattern(p) => FileMount::Pattern(p.clone()),
            RawFileMount::Placement(p) => {
                if !p.destination.starts_with('/') {
                    return Err(invalid(
                        format!("{item}.files"),
                        format!("destination `{}` must be absolute", p.destination),
                    ));
                }
                FileMount::Placement {
                    source: base_dir.join(&p.source),
                    destination: p.destination.clone(),
                }
            }
        });
    }
    let mut dependencies = Vec::new();
    for (name, dep) in &c.dependencies {
        let dep_item = format!("{item}.dependencies.\"{name}\"");
        validate_dependency_name(name).map_err(|reason| invalid(&dep_item, reason))?;
        let table = match dep {
            RawDependency::VersionRequirement(_) => {
                return Err(invalid(
                    &dep_item,
                    "registry dependencies are not supported by this host; use `path` or `component`",
                ));
            }
            RawDependency::Table(t) => t,
        };
        if table.export.is_some() && !name.contains('/') && name.contains(':') {
            return Err(invalid(
                &dep_item,
                "`export` is not allowed with a package-level dependency name",
            ));
        }
        let source = match (&table.path, &table.component, &table.url, &table.version) {
            (Some(path), None, None, None) => DependencySource::Path(base_dir.join(path)),
            (None, Some(component), None, None) => DependencySource::Component(component.clone()),
            (None, None, Some(_), _) | (None, None, None, Some(_)) => {
                return Err(invalid(
                    &dep_item,
                    "url and registry dependencies are not supported by this host; use `path` or `component`",
                ));
            }
            _ => {
                return Err(invalid(
                    &dep_item,
                    "exactly one of `path`, `component`, `url` or `version` must be set",
                ));
            }
        };
        if let Some(inherit) = &table.inherit_configuration
            && inherit.as_bool().is_none()
        {
            return Err(invalid(
                &dep_item,
                "`inherit_configuration` lists are not supported; use true or false",
            ));
        }
        dependencies.push(Dependency {
            name: name.clone(),
            source,
            export: table.export.clone(),
        });
    }
    let build = c.build.as_ref().map(|b| BuildSpec {
        commands: match &b.command {
            RawCommand::One(s) => vec![s.clone()],
            RawCommand::Many(v) => v.clone(),
        },
        workdir: b
            .workdir
            .as_ref()
            .map(|w| base_dir.join(w))
            .unwrap_or_else(|| base_dir.to_path_buf()),
    });
    Ok(Component {
        id: id.to_string(),
        source,
        variables,
        environment: c.environment.clone(),
        files,
        allowed_outbound_hosts,
        key_value_stores: c.key_value_stores.clone(),
        dependencies_inherit_configuration: c.dependencies_inherit_configuration,
        dependencies,
        build,
    })
}

/// Spin's `KebabId`: `-`-separated words, each starting with a letter, alphanumeric, and all
/// lowercase or all uppercase.
pub fn validate_kebab_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("component id must not be empty".into());
    }
    for word in id.split('-') {
        let first_ok = word.chars().next().is_some_and(|c| c.is_ascii_alphabetic());
        let alnum = word.chars().all(|c| c.is_ascii_alphanumeric());
        let lower = word.chars().all(|c| !c.is_ascii_uppercase());
        let upper = word.chars().all(|c| !c.is_ascii_lowercase());
        if !first_ok || !alnum || !(lower || upper) {
            return Err(format!(
                "`{id}` is not a kebab-case id (words start with a letter, are alphanumeric, all lower or all upper case)"
            ));
        }
    }
    Ok(())
}

fn validate_dependency_name(name: &str) -> Result<(), String> {
    if name.contains(':') {
        let (package, rest) = name.split_once(':').unwrap_or((name, ""));
        if package.is_empty() || rest.is_empty() {
            return Err(format!("`{name}` is not a valid dependency name"));
        }
        Ok(())
    } else {
        validate_kebab_id(name)
    }
}

/// Spin's rule for `{ component = "…" }` dependencies: all configuration comes from the parent.
fn check_dependency_has_no_resources(id: &str, c: &RawComponent) -> Result<(), String> {
    let offending: Vec<&str> = [
        ("ai_models", !c.ai_models.is_empty()),
        ("allowed_http_hosts", !c.allowed_http_hosts.is_empty()),
        (
            "allowed_outbound_hosts",
            !c.allowed_outbound_hosts.is_empty(),
        ),
        ("dependencies", !c.dependencies.is_empty()),
        ("environment", !c.environment.is_empty()),
        ("files", !c.files.is_empty()),
        ("key_value_stores", !c.key_value_stores.is_empty()),
        ("sqlite_databases", !c.sqlite_databases.is_empty()),
        ("variables", !c.variables.is_empty()),
    ]
    .into_iter()
    .filter_map(|(name, set)| set.then_some(name))
    .collect();
    if offending.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "Dependencies may not have their own resources or permissions: component `{id}` sets {}",
            offending.join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Manifest, ManifestError> {
        Manifest::parse(text, Path::new("/app"))
    }

    const HEAD: &str = "spin_manifest_version = 2\n[application]\nname = \"t\"\n";

    #[test]
    fn unknown_field_is_rejected_with_its_name() {
        let err = parse(&format!(
            "{HEAD}[component.a]\nsource = \"a.wasm\"\nallowed_outbund_hosts = []\n"
        ))
        .expect_err("typo must fail");
        assert!(err.to_string().contains("allowed_outbund_hosts"), "{err}");
    }

    #[test]
    fn required_xor_default() {
        let err = parse(&format!(
            "{HEAD}[variables]\nx = {{ required = true, default = \"1\" }}\n"
        ))
        .expect_err("both set");
        assert!(err.to_string().contains("variables.x"), "{err}");
        let err =
            parse(&format!("{HEAD}[variables]\nx = {{ secret = true }}\n")).expect_err("none");
        assert!(
            err.to_string()
                .contains("must be `required` OR have a `default`")
        );
    }

    #[test]
    fn component_template_must_reference_declared_variable() {
        let err = parse(&format!(
            "{HEAD}[component.a]\nsource = \"a.wasm\"\nvariables = {{ k = \"{{{{ nope }}}}\" }}\n"
        ))
        .expect_err("unknown variable");
        assert!(err.to_string().contains("component.a.variables.k"), "{err}");
        assert!(err.to_string().contains("nope"), "{err}");
    }

    #[test]
    fn trigger_must_reference_existing_component() {
        let err = parse(&format!(
            "{HEAD}[[trigger.http]]\nroute = \"/\"\ncomponent = \"missing\"\n"
        ))
        .expect_err("unknown component");
        assert!(err.to_string().contains("trigger.http[0]"), "{err}");
    }

    #[test]
    fn kebab_ids() {
        assert!(validate_kebab_id("router").is_ok());
        assert!(validate_kebab_id("my-COMP-x2").is_ok());
        assert!(validate_kebab_id("My-comp").is_err());
        assert!(validate_kebab_id("a_b").is_err());
        assert!(validate_kebab_id("1a").is_err());
        assert!(validate_kebab_id("a--b").is_err());
        assert!(validate_kebab_id("a-2x").is_err());
    }

    #[test]
    fn a_declared_id_shaped_like_an_inline_components_is_refused() {
        // Found by the manifest fuzz target's properties: the check used to skip any id starting
        // with the inline prefix, so a declared `inline-component--1` was accepted, and then
        // overwritten by the first inline trigger component.
        for declared in ["inline-component--x", "inline-component--1"] {
            let err = parse(&format!(
                "{HEAD}[component.\"{declared}\"]\nsource = \"a.wasm\"\n\
                 [[trigger.http]]\nroute = \"/\"\ncomponent = {{ source = \"b.wasm\" }}\n"
            ))
            .expect_err("not a kebab-case id");
            assert!(err.to_string().contains(declared), "{err}");
        }
        let inline = parse(&format!(
            "{HEAD}[[trigger.http]]\nroute = \"/\"\ncomponent = {{ source = \"b.wasm\" }}\n"
        ))
        .expect("an inline component is fine");
        assert_eq!(inline.components.len(), 1);
    }

    #[test]
    fn cron_needs_six_fields_and_no_extra_keys() {
        let base = format!("{HEAD}[component.c]\nsource = \"c.wasm\"\n");
        assert!(
            parse(&format!(
                "{base}[[trigger.cron]]\ncomponent = \"c\"\ncron_expression = \"*/2 * * * * *\"\n"
            ))
            .is_ok()
        );
        let err = parse(&format!(
            "{base}[[trigger.cron]]\ncomponent = \"c\"\ncron_expression = \"* * * * *\"\n"
        ))
        .expect_err("5 fields");
        assert!(err.to_string().contains("trigger.cron[0]"), "{err}");
        assert!(
            parse(&format!(
                "{base}[[trigger.cron]]\ncomponent = \"c\"\ncron_expression = \"* * * * * *\"\nextra = 1\n"
            ))
            .is_err()
        );
    }

    #[test]
    fn templated_outbound_hosts_are_checked_with_their_defaults_as_spin_does() {
        let manifest = |default: &str| {
            format!(
                "{HEAD}[variables]\nhost = {{ {default} }}\n[component.a]\nsource = \"a.wasm\"\nallowed_outbound_hosts = [\"{{{{ host }}}}\"]\n"
            )
        };
        let err = parse(&manifest("default = \"\"")).expect_err("empty default");
        assert!(
            err.to_string().contains(
                "using default variable value(s) with template \"{{ host }}\" results in invalid config \"\""
            ),
            "{err}"
        );
        parse(&manifest("default = \"redis://127.0.0.1:6379\"")).expect("valid default");
        // No default: checked only once resolved at run time.
        parse(&manifest("required = true")).expect("required variable");
    }

    #[test]
    fn component_dependency_may_not_have_resources() {
        let err = parse(&format!(
            "{HEAD}[component.a]\nsource = \"a.wasm\"\n[component.a.dependencies]\n\"x:y/z\" = {{ component = \"b\" }}\n[component.b]\nsource = \"b.wasm\"\nkey_value_stores = [\"default\"]\n"
        ))
        .expect_err("dependency with resources");
        assert!(
            err.to_string().contains("may not have their own resources"),
            "{err}"
        );
        assert!(err.to_string().contains("key_value_stores"), "{err}");
    }

    #[test]
    fn private_false_is_rejected() {
        let err = parse(&format!(
            "{HEAD}[component.a]\nsource = \"a.wasm\"\n[[trigger.http]]\nroute = {{ private = false }}\ncomponent = \"a\"\n"
        ))
        .expect_err("private=false");
        assert!(err.to_string().contains("private = false"), "{err}");
    }

    #[test]
    fn bad_outbound_host_names_the_component() {
        let err = parse(&format!(
            "{HEAD}[component.a]\nsource = \"a.wasm\"\nallowed_outbound_hosts = [\"example.com\"]\n"
        ))
        .expect_err("scheme required");
        assert!(
            err.to_string()
                .contains("component.a.allowed_outbound_hosts"),
            "{err}"
        );
    }
}
