//! A Spin-compatible host on wasmtime: it runs an unmodified Spin app (`spin.toml` manifest v2
//! plus WASI 0.2 components built with spin-sdk 5.2) the way Spin 3.5+ does, for developers and
//! tests that cannot install the Spin CLI.
//!
//! # Using it
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use kiloclaw_host::{App, HostConfig};
//! let mut config = HostConfig::new("spin.toml");
//! config.variables.push(("fly_app_name".into(), "dev".into()));
//! let app = App::load(&config).await?;                // parse, validate, resolve, compose, compile
//! let server = app.serve(tokio::net::TcpListener::bind("127.0.0.1:3000").await?);
//! println!("ready on http://{}", server.local_addr());
//! server.shutdown().await;                            // graceful
//! # Ok(()) }
//! ```
//!
//! [`compose_component`] returns one component with its dependencies composed in, for hosts that
//! cannot compose (`kiloclaw compose`). [`manifest::Manifest::load`] gives the validated manifest
//! (component `build` commands included) without compiling anything. [`App::run_cron_once`] runs
//! one cron tick on demand; [`App::run_cron`] runs the cron schedules alone, like Spin's separate
//! cron process.
//!
//! The library logs through `tracing` and leaves the output format to the embedder; the
//! `kiloclaw-host-serve` test runner and the `kiloclaw` CLI install a JSON subscriber, which makes
//! every event one JSON line: `tag = "access"` per request (method, path, status, duration_ms,
//! component), `tag = "guest"` per guest stdout/stderr line (component, stream), `tag = "cron"`
//! per tick, `tag = "load"` for load steps.
//!
//! # Tests
//!
//! `cargo test -p kiloclaw-host` runs the unit tests beside each module and the conformance
//! suite in `tests/all/` (one binary). The suite builds the spin-sdk 5.2 guests in
//! `tests/guests/` (their own wasm workspace) once per run, instantiates one scenario folder per
//! behaviour from `tests/scenarios/<name>/` (`spin.toml`, optional `runtime-config.toml`), and
//! talks to the host over 127.0.0.1. It needs Redis at 127.0.0.1:6379 (keys are prefixed per
//! run; nothing is flushed) and PostgreSQL at 127.0.0.1:5432 with trust auth for user `postgres`
//! and a database `test` (each test creates and drops its own tables). Set
//! `KILOCLAW_HOST_GUEST_TARGET_DIR` to reuse a guest build dir.
//!
//! # What is implemented (and matches Spin)
//!
//! * **Manifest v2** ([`manifest`]): unknown fields rejected; kebab ids, lower_snake variables,
//!   `required` XOR `default`, templates over declared variables only, trigger and dependency
//!   references, `{ private = true }` routes, 6-field cron expressions, Spin's "dependencies may
//!   not have their own resources" rule. Errors name the item.
//! * **Runtime config** ([`runtime_config`]): `state_dir`, `[key_value_store.*]` (`spin`,
//!   `redis`, and our `memory`), `[[variables_provider]]` (`static`, `env`); unknown keys fail.
//! * **Composition** ([`compose`]): `[component.x.dependencies]` from `path` or in-app
//!   `{ component = "…" }`, composed with wac-graph at load.
//! * **HTTP trigger** ([`trigger::http`], [`routes`], [`headers`]): routefinder precedence,
//!   Spin's `spin-*` headers (client-sent ones removed), well-known endpoints, 404/500 with
//!   empty bodies, fresh instance per request from an `InstancePre` with the pooling allocator,
//!   header and body size limits, graceful shutdown, one JSON access-log line per request.
//! * **Cron trigger** ([`trigger::cron`]): `fermyon:spin-cron@2.0.0`, croner with seconds
//!   required and dom AND dow, UTC, fresh instance per tick, overlapping ticks, errors logged.
//! * **Key-value** ([`kv`]): `fermyon:spin/key-value@2.0.0` and `wasi:keyvalue@0.2.0-draft2`
//!   (store, atomics, batch) on one store per label; SQLite with Spin's file and table layout,
//!   Redis, memory; `access-denied` for unlisted labels; `list-keys` cursors rejected as in Spin.
//! * **Variables** ([`variables`]): `fermyon:spin/variables@2.0.0`; overrides > runtime-config
//!   providers > `SPIN_VARIABLE_<NAME>` > default; a missing required variable fails the load;
//!   secret values are never logged.
//! * **Outbound HTTP** ([`outbound`]): `wasi:http/outgoing-handler` with Spin's
//!   `allowed_outbound_hosts` grammar and `{{ var }}` templates (denied → `HttpRequestDenied`),
//!   a pooled keep-alive client, TLS with the webpki roots, connect/first-byte timeouts.
//! * **Outbound Redis** ([`outbound::redis`]): `fermyon:spin/redis@2.0.0` with Spin's semantics
//!   (allow-list checked as `redis://host:port`, denied → `invalid-address`, `execute` results
//!   flattened, error replies → `other`) on one shared connection per address, commands that bind
//!   a connection (`MULTI`, `SELECT`, blocking pops …) moved to one of their own, and connect and
//!   command timeouts; no TLS (`rediss://`).
//! * **Outbound PostgreSQL** ([`outbound::postgres`]): `spin:postgres/postgres@4.0.0` (spin-sdk
//!   5.2's `pg4`) with Spin's type mapping and error variants (allow-list checked as
//!   `postgres://host:port` for every host, denied → `connection-failed`, database errors →
//!   `query-failed(db-error)` with the SQLSTATE) on pooled connections, one per guest connection
//!   so transactions work; a connection that may be inside a transaction is never pooled, others
//!   are reset first; connect and query timeouts, a timed-out query cancelled on the server; no
//!   TLS.
//! * **WASI** ([`wasi`]): environment and `files` as Spin gives them; guest stdout/stderr become
//!   host log lines tagged with the component id.
//!
//! # Where we are deliberately stricter than Spin
//!
//! Compare-and-swap is a real compare-and-swap on every backend, including insert-if-absent and
//! across processes sharing the SQLite file or the Redis server (see [`kv`] for the contract).
//! Spin's SQLite backend turns a swap on an absent key into a blind upsert (two creators both
//! succeed), and its Redis backend is unusable (measured on Spin 4.0.2: its trailing
//! `UNWATCH <key>` is rejected by Redis, so every swap is written and reported as failed); by
//! reading, its Cosmos and DynamoDB backends are safe. Components must therefore not rely on CAS
//! creating keys on real Spin, and use outbound Redis rather than Spin's Redis key-value store.
//!
//! # Where we follow Spin's refusals
//!
//! Composition registers each dependency under its WIT package name, as Spin's composer does, so
//! two dependencies from one package fail here with Spin's error; templated
//! `allowed_outbound_hosts` entries are checked with their variables' defaults at load, as Spin
//! does. `tests/suite/spin_parity.rs` (workspace root) loads such manifests on the real Spin and
//! on this host and requires both to refuse them for the same reason.
//!
//! # What is not implemented
//!
//! * **WebSockets**: impossible in Spin's model (no upgrade path in the HTTP trigger, and
//!   `upgrade`/`connection` are forbidden wasi:http headers). Our host does not add them either.
//! * **WASI 0.3 / spin-sdk 6–7 guests** (`wasi:http/handler@0.3.0`, `spin:*@3` APIs) and the
//!   `spin:cron@3.0.0` world: out of scope; guests are spin-sdk 5.2 / WASI 0.2.
//! * **Service chaining** (`*.spin.internal`) and self-requests (`self` hosts, relative URLs):
//!   not implemented; such requests are denied or fail to resolve.
//! * **Deny adapter**: Spin composes a deny adapter over dependencies that do not inherit
//!   configuration. Here a dependency always runs with its parent's configuration, as if
//!   `dependencies_inherit_configuration = true`; a warning is logged when it is not set and the
//!   dependency imports a capability the adapter would deny.
//! * Other Spin features: SQLite databases, MySQL/MQTT outbound, PostgreSQL `@3.0.0` and the
//!   older `fermyon:spin` `postgres`/`rdbms-types` interfaces, LLM,
//!   registry/URL sources and dependencies, `[[client_tls]]`, `block_networks`, vault/Azure
//!   variable providers, `.env` files, WAGI, WASI 0.3 instance reuse, TLS on the listener.
//!   They are load-time errors where a manifest or runtime config asks for them.
//! * **Process model**: real `spin up` runs the HTTP trigger and the cron plugin as two processes
//!   that share only the SQLite file. This host can run both in one process
//!   ([`HostConfig::cron`]); behaviour is the same because components keep no shared memory.

pub mod clock;
pub mod compose;
pub mod headers;
pub mod kv;
pub mod logging;
pub mod metrics;
pub mod outbound;
pub mod runtime_config;
pub mod trigger;
pub mod variables;
pub mod wasi;

mod admission;
mod bindings;
mod crash;
mod engine;
mod state;

pub use kiloclaw_manifest as manifest;
pub use kiloclaw_manifest::routes;
pub use trigger::cron::CronError;

use manifest::{DependencySource, HttpTarget, Manifest, Route};
use runtime_config::RuntimeConfig;
use state::{ComponentRuntime, InstanceState};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use wasmtime::component::InstancePre;

/// Resource limits of the host.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest request body accepted; larger declared bodies get 413. Default 16 MiB.
    pub max_request_body_bytes: u64,
    /// Buffer for the request line and headers (hyper rounds up to at least 8 KiB). Default 64 KiB.
    pub max_request_header_bytes: usize,
    /// Instances alive at once (pooling allocator slots): requests and cron ticks beyond it wait
    /// for a slot (see [`Limits::admission_wait`]). Default 256.
    pub max_instances: u32,
    /// How long a request or cron tick waits for a free instance slot before it is refused (HTTP:
    /// 503 with a JSON body and `Retry-After: 1`). Default 5 s.
    pub admission_wait: std::time::Duration,
    /// How long a client may take to send a request's line and headers before the connection is
    /// closed. Default 10 s.
    pub header_read_timeout: std::time::Duration,
    /// How long a request body may stall between two chunks before the guest's read fails.
    /// Default 30 s.
    pub body_idle_timeout: std::time::Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_request_body_bytes: 16 * 1024 * 1024,
            max_request_header_bytes: 64 * 1024,
            max_instances: 256,
            admission_wait: std::time::Duration::from_secs(5),
            header_read_timeout: std::time::Duration::from_secs(10),
            body_idle_timeout: std::time::Duration::from_secs(30),
        }
    }
}

/// How to load and run an app.
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// Path to `spin.toml`.
    pub manifest_path: PathBuf,
    /// State directory (default store `<state_dir>/sqlite_key_value.db`). Default: the runtime
    /// config's `state_dir`, else `<app dir>/.spin`.
    pub state_dir: Option<PathBuf>,
    /// `runtime-config.toml`, if any.
    pub runtime_config_file: Option<PathBuf>,
    /// Where [`App::bind_and_serve`] listens. Default `127.0.0.1:3000` as `spin up`.
    pub listen: SocketAddr,
    /// Variable overrides (Spin's `--variable`), highest precedence; later entries win.
    pub variables: Vec<(String, String)>,
    /// Whether [`App::serve`] also runs the cron triggers. Default true.
    pub cron: bool,
    /// Use the pooling allocator (falls back to on-demand if the address space is too small).
    pub pooling: bool,
    /// Where compiled code is cached between runs. Default: `$KILOCLAW_HOST_CACHE_DIR`, else
    /// `$XDG_CACHE_HOME/kiloclaw-host`, else `$HOME/.cache/kiloclaw-host`; `None` when none is set.
    pub compile_cache_dir: Option<PathBuf>,
    /// Size limits.
    pub limits: Limits,
    /// Outbound PostgreSQL connect and query time limits.
    pub postgres_timeouts: outbound::postgres::PgTimeouts,
    /// What the metrics call routes and outbound calls. Default: components and hosts only.
    pub metric_labels: Arc<dyn metrics::MetricLabels>,
    /// An offset added to the wall clock the guests see ([`clock::WallClockOffset`], for benchmarks
    /// and tests that compress time). Default `None`: the real clock.
    pub clock_offset: Option<clock::WallClockOffset>,
}

impl HostConfig {
    /// Defaults for the manifest at `manifest_path`.
    pub fn new(manifest_path: impl Into<PathBuf>) -> Self {
        let cache = std::env::var_os("KILOCLAW_HOST_CACHE_DIR")
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("kiloclaw-host"))
            })
            .or_else(|| {
                std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/kiloclaw-host"))
            });
        Self {
            manifest_path: manifest_path.into(),
            state_dir: None,
            runtime_config_file: None,
            listen: SocketAddr::from(([127, 0, 0, 1], 3000)),
            variables: Vec::new(),
            cron: true,
            pooling: true,
            compile_cache_dir: cache,
            limits: Limits::default(),
            postgres_timeouts: outbound::postgres::PgTimeouts::default(),
            metric_labels: Arc::new(metrics::ComponentLabels),
            clock_offset: None,
        }
    }
}

/// Why an app could not be loaded. All are configuration or build problems; none is retryable
/// without a change, except [`LoadError::KeyValue`] when a backend (Redis) is down.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// `spin.toml` is missing or invalid.
    #[error(transparent)]
    Manifest(#[from] manifest::ManifestError),
    /// `runtime-config.toml` is missing or invalid.
    #[error(transparent)]
    RuntimeConfig(#[from] runtime_config::RuntimeConfigError),
    /// A required variable has no value, or a template cannot be rendered.
    #[error("variables: {0}")]
    Variables(String),
    /// A key-value label is unknown or its backend cannot be opened.
    #[error("key-value store `{label}`: {message}")]
    KeyValue { label: String, message: String },
    /// A component cannot be read, composed, compiled or linked.
    #[error("component `{id}`: {message}")]
    Component { id: String, message: String },
    /// The wasmtime engine could not be created.
    #[error("engine: {0}")]
    Engine(String),
}

fn component_error(id: &str, message: impl std::fmt::Display) -> LoadError {
    LoadError::Component {
        id: id.to_string(),
        message: message.to_string(),
    }
}

pub(crate) struct HttpComponent {
    pub(crate) runtime: Arc<ComponentRuntime>,
    pub(crate) pre: wasmtime_wasi_http::p2::bindings::ProxyPre<InstanceState>,
}

pub(crate) struct CronComponent {
    pub(crate) runtime: Arc<ComponentRuntime>,
    pub(crate) pre: bindings::cron::CronGuestPre<InstanceState>,
}

pub(crate) struct AppInner {
    pub(crate) manifest: Manifest,
    pub(crate) router: routes::Router,
    pub(crate) http_components: BTreeMap<String, HttpComponent>,
    pub(crate) cron_components: BTreeMap<String, CronComponent>,
    pub(crate) outbound: outbound::OutboundClient,
    pub(crate) limits: Limits,
    pub(crate) slots: admission::InstanceSlots,
    pub(crate) metrics: Arc<metrics::Metrics>,
    /// `Keep-Alive: timeout=N` for HTTP/1.1 replies: hyper closes a keep-alive connection that
    /// waits longer than the header read timeout for its next request, and saying so lets clients
    /// (Node's undici, for one) retire idle connections first instead of sending on a closing one.
    pub(crate) keep_alive: Option<http::HeaderValue>,
    engine: wasmtime::Engine,
    cron_enabled: bool,
    listen: SocketAddr,
}

impl AppInner {
    pub(crate) fn metrics_text(&self) -> String {
        self.metrics
            .render(self.slots.in_use(), self.slots.capacity(), &self.engine)
    }
}

/// A loaded, ready-to-serve app. Cheap to clone.
#[derive(Clone)]
pub struct App {
    inner: Arc<AppInner>,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("name", &self.inner.manifest.app_name)
            .finish()
    }
}

/// Reads a component's bytes and composes its dependencies into it.
fn component_bytes(manifest: &Manifest, id: &str) -> Result<Vec<u8>, LoadError> {
    let component = manifest
        .components
        .get(id)
        .ok_or_else(|| component_error(id, "no such component"))?;
    let read = |path: &Path| {
        std::fs::read(path)
            .map_err(|e| component_error(id, format!("cannot read {}: {e}", path.display())))
    };
    let main = read(&component.source)?;
    if component.dependencies.is_empty() {
        return Ok(main);
    }
    let mut dependencies = Vec::new();
    for dependency in &component.dependencies {
        let path = match &dependency.source {
            DependencySource::Path(p) => p.clone(),
            DependencySource::Component(other) => manifest
                .components
                .get(other)
                .map(|c| c.source.clone())
                .ok_or_else(|| {
                    component_error(id, format!("unknown dependency component `{other}`"))
                })?,
        };
        dependencies.push((dependency.clone(), read(&path)?));
    }
    let started = std::time::Instant::now();
    let composed =
        compose::compose(id, &main, &dependencies).map_err(|e| component_error(id, e))?;
    tracing::info!(
        tag = "load",
        component = id,
        action = "compose",
        dependencies = dependencies.len(),
        duration_ms = started.elapsed().as_secs_f64() * 1000.0,
    );
    Ok(composed)
}

/// Composes `component_id` of the app at `manifest_path` with its dependencies (for
/// `kiloclaw compose`). A component without dependencies is returned unchanged.
pub fn compose_component(manifest_path: &Path, component_id: &str) -> Result<Vec<u8>, LoadError> {
    let manifest = Manifest::load(manifest_path)?;
    component_bytes(&manifest, component_id)
}

/// Interfaces a Spin deny adapter would block in a dependency that does not inherit
/// configuration (prefixes of import names).
const DENIED_WITHOUT_INHERIT: &[&str] = &[
    "wasi:http/outgoing-handler",
    "fermyon:spin/key-value",
    "wasi:keyvalue/store",
    "fermyon:spin/variables",
    "fermyon:spin/redis",
    "spin:postgres/postgres",
    "wasi:filesystem/preopens",
    "wasi:cli/environment",
    "wasi:sockets/",
];

impl App {
    /// Parses and validates the manifest and runtime config, resolves variables, opens the
    /// key-value stores, composes dependencies and compiles every triggered component.
    pub async fn load(config: &HostConfig) -> Result<Self, LoadError> {
        let started = std::time::Instant::now();
        let manifest = Manifest::load(&config.manifest_path)?;
        let runtime_config = match &config.runtime_config_file {
            Some(path) => RuntimeConfig::load(path)?,
            None => RuntimeConfig::default(),
        };
        let state_dir = config
            .state_dir
            .clone()
            .or_else(|| runtime_config.state_dir.clone())
            .unwrap_or_else(|| manifest.base_dir.join(".spin"));

        let env = |name: &str| std::env::var(name).ok();
        let app_variables = variables::resolve(
            &manifest,
            &variables::VariableSources {
                overrides: &config.variables,
                providers: &runtime_config.variables_providers,
                env: &env,
            },
        )
        .map_err(LoadError::Variables)?;

        // Every listed label must be configured (or be `default`) before anything is opened.
        for component in manifest.components.values() {
            for label in &component.key_value_stores {
                if label != "default" && !runtime_config.key_value_stores.contains_key(label) {
                    return Err(LoadError::KeyValue {
                        label: label.clone(),
                        message: format!(
                            "unknown key_value_stores label `{label}` for component `{}`",
                            component.id
                        ),
                    });
                }
            }
        }
        let stores = kv::StoreManager::open(&runtime_config.key_value_stores, &state_dir)
            .await
            .map_err(|(label, e)| LoadError::KeyValue {
                label,
                message: e.to_string(),
            })?;

        let engine = engine::build(config)?;
        let metrics = Arc::new(metrics::Metrics::new(config.metric_labels.clone()));
        let linker = state::linker(&engine).map_err(|e| LoadError::Engine(format!("{e:#}")))?;

        let mut triggered: BTreeMap<String, (bool, bool)> = BTreeMap::new();
        for t in &manifest.http_triggers {
            if let HttpTarget::Component(id) = &t.target {
                triggered.entry(id.clone()).or_default().0 = true;
            }
        }
        for t in &manifest.cron_triggers {
            triggered.entry(t.component.clone()).or_default().1 = true;
        }

        let mut http_components = BTreeMap::new();
        let mut cron_components = BTreeMap::new();
        let files_root = state_dir.join("files");
        for (id, (is_http, is_cron)) in &triggered {
            let component = &manifest.components[id];
            let mut runtime = Self::component_runtime(
                &manifest,
                component,
                &app_variables,
                &stores,
                &files_root,
                &metrics,
            )?;
            runtime.wasi.set_clock_offset(config.clock_offset.clone());
            let runtime = Arc::new(runtime);
            let bytes = component_bytes(&manifest, id)?;
            let compiled = wasmtime::component::Component::new(&engine, &bytes)
                .map_err(|e| component_error(id, format!("compile: {e:#}")))?;
            if !component.dependencies.is_empty() && !component.dependencies_inherit_configuration {
                let denied: Vec<String> = compiled
                    .component_type()
                    .imports(&engine)
                    .map(|(name, _)| name.to_string())
                    .filter(|name| DENIED_WITHOUT_INHERIT.iter().any(|p| name.starts_with(p)))
                    .collect();
                if !denied.is_empty() {
                    tracing::warn!(
                        tag = "load",
                        component = %id,
                        imports = %denied.join(","),
                        reason = "on Spin a dependency without inherited configuration is denied these; set dependencies_inherit_configuration = true",
                    );
                }
            }
            let pre: InstancePre<InstanceState> = linker
                .instantiate_pre(&compiled)
                .map_err(|e| component_error(id, format!("link: {e:#}")))?;
            if *is_http {
                let proxy =
                    wasmtime_wasi_http::p2::bindings::ProxyPre::new(pre.clone()).map_err(|e| {
                        component_error(
                            id,
                            format!("does not export wasi:http/incoming-handler@0.2: {e:#}"),
                        )
                    })?;
                http_components.insert(
                    id.clone(),
                    HttpComponent {
                        runtime: runtime.clone(),
                        pre: proxy,
                    },
                );
            }
            if *is_cron {
                let cron = bindings::cron::CronGuestPre::new(pre.clone()).map_err(|e| {
                    component_error(
                        id,
                        format!(
                            "does not export handle-cron-event (fermyon:spin-cron@2.0.0): {e:#}"
                        ),
                    )
                })?;
                cron_components.insert(id.clone(), CronComponent { runtime, pre: cron });
            }
        }

        let router = routes::Router::build(manifest.http_triggers.iter().enumerate().filter_map(
            |(i, t)| match &t.route {
                Route::Path(p) => Some((i, p.as_str())),
                Route::Private => None,
            },
        ))
        .map_err(|e| {
            LoadError::Manifest(manifest::ManifestError::Invalid {
                item: "trigger.http".into(),
                reason: e,
            })
        })?;

        tracing::info!(
            tag = "load",
            app = %manifest.app_name,
            action = "loaded",
            http_components = http_components.len(),
            cron_components = cron_components.len(),
            state_dir = %state_dir.display(),
            duration_ms = started.elapsed().as_secs_f64() * 1000.0,
        );
        Ok(Self {
            inner: Arc::new(AppInner {
                manifest,
                router,
                http_components,
                cron_components,
                outbound: outbound::OutboundClient::new()
                    .with_postgres_timeouts(config.postgres_timeouts),
                limits: config.limits.clone(),
                slots: admission::InstanceSlots::new(
                    config.limits.max_instances,
                    config.limits.admission_wait,
                ),
                metrics,
                keep_alive: http::HeaderValue::from_str(&format!(
                    "timeout={}",
                    config.limits.header_read_timeout.as_secs().max(1)
                ))
                .ok(),
                engine,
                cron_enabled: config.cron,
                listen: config.listen,
            }),
        })
    }

    fn component_runtime(
        manifest: &Manifest,
        component: &manifest::Component,
        app_variables: &variables::ResolvedVariables,
        stores: &kv::StoreManager,
        files_root: &Path,
        metrics: &Arc<metrics::Metrics>,
    ) -> Result<ComponentRuntime, LoadError> {
        let id = &component.id;
        let component_variables =
            variables::ComponentVariables::render(&component.variables, app_variables)
                .map_err(|e| component_error(id, e))?;
        let mut hosts = Vec::new();
        for entry in &component.allowed_outbound_hosts {
            let rendered = variables::Template::parse(entry)
                .and_then(|t| t.try_render(|name| app_variables.get(name)))
                .map_err(|e| component_error(id, e))?;
            hosts.push(rendered);
        }
        let allowed_hosts = outbound::AllowedHosts::parse(&hosts)
            .map_err(|e| component_error(id, format!("allowed_outbound_hosts: {e}")))?;
        let mut component_stores = BTreeMap::new();
        for label in &component.key_value_stores {
            let store = stores.get(label).ok_or_else(|| LoadError::KeyValue {
                label: label.clone(),
                message: format!("unknown key_value_stores label `{label}` for component `{id}`"),
            })?;
            component_stores.insert(label.clone(), store.clone());
        }
        let wasi = wasi::WasiSetup::prepare(component, &manifest.base_dir, files_root)
            .map_err(|e| component_error(id, format!("files: {e}")))?;
        Ok(ComponentRuntime {
            id: Arc::from(id.as_str()),
            stores: component_stores,
            variables: component_variables,
            allowed_hosts: Arc::new(allowed_hosts),
            wasi,
            metrics: metrics.clone(),
        })
    }

    /// The validated manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.inner.manifest
    }

    /// Serves HTTP on `listener` (and runs the cron triggers if [`HostConfig::cron`]).
    /// Must be called inside a tokio runtime.
    pub fn serve(&self, listener: tokio::net::TcpListener) -> ServerHandle {
        let local_addr = listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn(trigger::http::serve(
            self.inner.clone(),
            listener,
            stopped.clone(),
        ));
        if self.inner.cron_enabled && !self.inner.cron_components.is_empty() {
            tasks.spawn(trigger::cron::run_schedules(self.inner.clone(), stopped));
        }
        tracing::info!(tag = "http", action = "listen", address = %local_addr);
        ServerHandle {
            local_addr,
            stop,
            tasks,
        }
    }

    /// Binds [`HostConfig::listen`] and serves.
    pub async fn bind_and_serve(&self) -> std::io::Result<ServerHandle> {
        let listener = tokio::net::TcpListener::bind(self.inner.listen).await?;
        Ok(self.serve(listener))
    }

    /// Runs the cron triggers only (Spin's separate cron process), until the handle shuts down.
    pub fn run_cron(&self) -> ServerHandle {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn(trigger::cron::run_schedules(self.inner.clone(), stopped));
        ServerHandle {
            local_addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            stop,
            tasks,
        }
    }

    /// Serves the Prometheus metrics (`GET /metrics`) on `listener`, a port of their own, until
    /// the handle shuts down. Must be called inside a tokio runtime.
    pub fn serve_metrics(&self, listener: tokio::net::TcpListener) -> ServerHandle {
        let local_addr = listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn(metrics::serve(self.inner.clone(), listener, stopped));
        tracing::info!(tag = "metrics", action = "listen", address = %local_addr);
        ServerHandle {
            local_addr,
            stop,
            tasks,
        }
    }

    /// The metrics in Prometheus' text format, as `GET /metrics` serves them.
    pub fn metrics_text(&self) -> String {
        self.inner.metrics_text()
    }

    /// Runs one cron tick of `component_id` now, in a fresh instance (for tests and tools).
    pub async fn run_cron_once(&self, component_id: &str) -> Result<(), CronError> {
        trigger::cron::run_once(&self.inner, component_id).await
    }
}

/// A running server. Dropping it without [`ServerHandle::shutdown`] aborts it.
#[derive(Debug)]
pub struct ServerHandle {
    local_addr: SocketAddr,
    stop: tokio::sync::watch::Sender<bool>,
    tasks: tokio::task::JoinSet<()>,
}

impl ServerHandle {
    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, waits for in-flight requests (bounded grace period), stops cron.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        while self.tasks.join_next().await.is_some() {}
        tracing::info!(tag = "http", action = "shutdown", address = %self.local_addr);
    }

    /// Waits until the server stops by itself (it only does so after `shutdown`).
    pub async fn wait(&mut self) {
        while self.tasks.join_next().await.is_some() {}
    }
}

#[cfg(test)]
mod tests {
    fn assert_send_sync<T: Send + Sync + 'static>() {}

    #[test]
    fn public_handles_can_cross_tasks() {
        assert_send_sync::<super::App>();
        assert_send_sync::<super::ServerHandle>();
        assert_send_sync::<super::LoadError>();
        assert_send_sync::<super::CronError>();
    }
}
