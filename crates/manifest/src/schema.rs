//! The serde shape of a Spin manifest v2 (`spin.toml`), field for field as Spin's
//! `crates/manifest/src/schema/v2.rs` declares it. Unknown fields are rejected everywhere, as in
//! Spin, so a typo is a load-time error instead of a silently ignored setting.

use serde::Deserialize;
use std::collections::BTreeMap;

/// The whole `spin.toml` document.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawManifest {
    /// Must be `2`.
    pub spin_manifest_version: toml::Value,
    /// `[application]`.
    pub application: RawApplication,
    /// `[variables]`: application variables.
    #[serde(default)]
    pub variables: BTreeMap<String, RawVariable>,
    /// `[[trigger.<type>]]` tables.
    #[serde(default)]
    pub trigger: RawTriggers,
    /// `[component.<id>]` tables.
    #[serde(default)]
    pub component: BTreeMap<String, RawComponent>,
}

/// `[application]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApplication {
    pub name: String,
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub authors: Vec<String>,
    #[serde(default)]
    pub targets: Vec<String>,
    /// Global trigger settings (`[application.trigger.http] base = "/"` and friends).
    #[serde(default)]
    pub trigger: Option<toml::Table>,
    /// Tool settings; Spin ignores them and so do we.
    #[serde(default)]
    pub tool: Option<toml::Table>,
}

/// One `[variables]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawVariable {
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub required: bool,
    #[serde(default)]
    pub default: Option<String>,
    #[serde(default)]
    pub secret: bool,
}

/// The trigger types this host runs. Any other type is an unknown field, hence a load error.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTriggers {
    #[serde(default)]
    pub http: Vec<RawHttpTrigger>,
    #[serde(default)]
    pub cron: Vec<RawCronTrigger>,
}

/// `[[trigger.http]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHttpTrigger {
    #[serde(default)]
    pub id: Option<String>,
    pub route: RawRoute,
    #[serde(default)]
    pub component: Option<RawComponentRef>,
    #[serde(default)]
    pub static_response: Option<RawStaticResponse>,
    #[serde(default)]
    pub executor: Option<RawExecutor>,
}

/// `route = "/x"` or `route = { private = true }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RawRoute {
    Path(String),
    Private(RawPrivateRoute),
}

/// `{ private = true }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPrivateRoute {
    pub private: bool,
}

/// `component = "id"` or an inline component table.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RawComponentRef {
    Id(String),
    Inline(Box<RawComponent>),
}

/// `static_response = { status_code?, headers?, body? }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStaticResponse {
    #[serde(default)]
    pub status_code: Option<u16>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub body: Option<String>,
}

/// `executor = { type = "http" }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawExecutor {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub argv: Option<String>,
    #[serde(default)]
    pub entrypoint: Option<String>,
}

/// `[[trigger.cron]]`: exactly `component` and `cron_expression`, as the plugin's schema.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCronTrigger {
    pub component: RawComponentRef,
    pub cron_expression: String,
}

/// `[component.<id>]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawComponent {
    pub source: RawSource,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub variables: BTreeMap<String, String>,
    #[serde(default)]
    pub environment: BTreeMap<String, String>,
    #[serde(default)]
    pub files: Vec<RawFileMount>,
    #[serde(default)]
    pub exclude_files: Vec<String>,
    #[serde(default)]
    pub allowed_outbound_hosts: Vec<String>,
    /// Deprecated spelling; converted like Spin does (`host` → `https://host` and `http://host`).
    #[serde(default)]
    pub allowed_http_hosts: Vec<String>,
    #[serde(default)]
    pub key_value_stores: Vec<String>,
    #[serde(default)]
    pub sqlite_databases: Vec<String>,
    #[serde(default)]
    pub ai_models: Vec<String>,
    #[serde(default)]
    pub targets: Vec<String>,
    #[serde(default)]
    pub build: Option<RawBuild>,
    #[serde(default)]
    pub tool: Option<toml::Table>,
    #[serde(default)]
    pub dependencies_inherit_configuration: bool,
    #[serde(default)]
    pub dependencies: BTreeMap<String, RawDependency>,
    #[serde(default)]
    pub profile: Option<toml::Table>,
}

/// `source = "path.wasm"`, `{ url, digest }` or `{ registry?, package, version }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RawSource {
    Path(String),
    Remote(RawRemoteSource),
}

/// The non-local source forms; parsed so the error can say which one is unsupported.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRemoteSource {
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub digest: Option<String>,
    #[serde(default)]
    pub registry: Option<String>,
    #[serde(default)]
    pub package: Option<String>,
    #[serde(default)]
    pub version: Option<String>,
}

/// A `files` entry: a glob pattern or `{ source, destination }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RawFileMount {
    Pattern(String),
    Placement(RawFilePlacement),
}

/// `{ source = "dir-or-file", destination = "/guest/path" }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFilePlacement {
    pub source: String,
    pub destination: String,
}

/// `build = { command, workdir?, watch? }`; only `kiloclaw up` runs it, the host never does.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBuild {
    pub command: RawCommand,
    #[serde(default)]
    pub workdir: Option<String>,
    #[serde(default)]
    pub watch: Vec<String>,
}

/// A build command: one shell string or several run in order.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RawCommand {
    One(String),
    Many(Vec<String>),
}

/// A `[component.x.dependencies]` value.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RawDependency {
    VersionRequirement(String),
    Table(RawDependencyTable),
}

/// The table form of a dependency. Exactly one of `path`, `component`, `url`, `version` is set.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDependencyTable {
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub component: Option<String>,
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub digest: Option<String>,
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub registry: Option<String>,
    #[serde(default)]
    pub package: Option<String>,
    #[serde(default)]
    pub export: Option<String>,
    #[serde(default)]
    pub inherit_configuration: Option<toml::Value>,
}
