//! The Kubernetes deployment in `deploy/` (SpinKube `SpinApp`, reconcile `CronJob`, Secret example,
//! Spin runtime config, `spin.kube.toml`) checked against the app itself: `spin.toml`'s variables
//! and routes, the platform API's contract (`docs/openapi.json`) and the reconcile budgets in the
//! components. Nothing here talks to a cluster; it catches a deployment that has drifted from the
//! app (a renamed or new required variable, a secret written in clear, a route that moved, a
//! manifest copy that fell behind).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use kiloclaw_manifest::routes::Router;
use kiloclaw_manifest::{HttpTarget, Manifest, Route};
use serde::Deserialize;
use serde_norway::Value;

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// The repository root (this crate is `crates/manifest`).
fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn deploy_dir() -> PathBuf {
    repo_root().join("deploy")
}

fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))
}

/// Every document of a (multi-document) YAML file; empty documents are skipped.
fn yaml_documents(path: &Path) -> Result<Vec<Value>, String> {
    let text = read(path)?;
    let mut documents = Vec::new();
    for document in serde_norway::Deserializer::from_str(&text) {
        let value = Value::deserialize(document)
            .map_err(|e| format!("{} is not valid YAML: {e}", path.display()))?;
        if !value.is_null() {
            documents.push(value);
        }
    }
    Ok(documents)
}

/// The one document of `kind` across deploy/*.yaml.
fn object_of_kind(kind: &str) -> Result<Value, String> {
    let mut found = Vec::new();
    for file in deploy_yaml_files()? {
        for document in yaml_documents(&file)? {
            if document.get("kind").and_then(Value::as_str) == Some(kind) {
                found.push(document);
            }
        }
    }
    match found.len() {
        1 => Ok(found.remove(0)),
        n => Err(format!("expected one `{kind}` in deploy/*.yaml, found {n}")),
    }
}

fn deploy_yaml_files() -> Result<Vec<PathBuf>, String> {
    let dir = deploy_dir();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(|e| format!("reading {}: {e}", dir.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .is_some_and(|ext| ext == "yaml" || ext == "yml")
        })
        .collect();
    files.sort();
    Ok(files)
}

/// A string at a `/`-separated path of mapping keys.
fn str_at<'a>(value: &'a Value, path: &str) -> Result<&'a str, String> {
    at(value, path)?
        .as_str()
        .ok_or_else(|| format!("`{path}` is not a string"))
}

fn at<'a>(value: &'a Value, path: &str) -> Result<&'a Value, String> {
    let mut current = value;
    for key in path.split('/') {
        current = current
            .get(key)
            .ok_or_else(|| format!("missing `{path}` (at `{key}`)"))?;
    }
    Ok(current)
}

fn int_at(value: &Value, path: &str) -> Result<i64, String> {
    at(value, path)?
        .as_i64()
        .ok_or_else(|| format!("`{path}` is not an integer"))
}

fn spin_toml() -> Result<Manifest, String> {
    let path = repo_root().join("spin.toml");
    Manifest::load(&path).map_err(|e| e.to_string())
}

/// A `secretKeyRef` as (Secret name, key).
fn secret_key_ref(value_from: &Value) -> Result<(String, String), String> {
    let reference = value_from
        .get("secretKeyRef")
        .ok_or("valueFrom is not a secretKeyRef")?;
    Ok((
        str_at(reference, "name")?.to_owned(),
        str_at(reference, "key")?.to_owned(),
    ))
}

/// How the SpinApp binds one variable.
#[derive(Debug, Clone, PartialEq)]
enum Binding {
    Literal(String),
    Secret { name: String, key: String },
}

/// The SpinApp's `spec.variables`, by name (duplicates and malformed entries are errors).
fn spinapp_variables(spinapp: &Value) -> Result<BTreeMap<String, Binding>, String> {
    let list = at(spinapp, "spec/variables")?
        .as_sequence()
        .ok_or("spec.variables is not a list")?;
    let mut bindings = BTreeMap::new();
    for entry in list {
        let name = str_at(entry, "name")?.to_owned();
        let binding = match (entry.get("value"), entry.get("valueFrom")) {
            (Some(value), None) => Binding::Literal(
                value
                    .as_str()
                    .ok_or_else(|| format!("variable `{name}`: value must be a string"))?
                    .to_owned(),
            ),
            (None, Some(value_from)) => {
                let (secret, key) =
                    secret_key_ref(value_from).map_err(|e| format!("variable `{name}`: {e}"))?;
                Binding::Secret { name: secret, key }
            }
            _ => {
                return Err(format!(
                    "variable `{name}`: needs exactly one of value, valueFrom"
                ));
            }
        };
        if bindings.insert(name.clone(), binding).is_some() {
            return Err(format!("variable `{name}` is bound twice"));
        }
    }
    Ok(bindings)
}

/// `scheme://host:port` of a URL, without credentials, path or query.
fn origin(url: &str) -> Result<String, String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| format!("`{url}` has no scheme"))?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = authority.rsplit('@').next().unwrap_or_default();
    if host_port.is_empty() {
        return Err(format!("`{url}` has no host"));
    }
    Ok(format!("{scheme}://{host_port}"))
}

/// The Secret in deploy/secret.example.yaml, as key → value.
fn example_secret() -> Result<(String, BTreeMap<String, String>), String> {
    let documents = yaml_documents(&deploy_dir().join("secret.example.yaml"))?;
    let [secret] = documents.as_slice() else {
        return Err("secret.example.yaml must hold exactly one Secret".to_owned());
    };
    if str_at(secret, "kind")? != "Secret" {
        return Err("secret.example.yaml does not hold a Secret".to_owned());
    }
    let name = str_at(secret, "metadata/name")?.to_owned();
    let data = at(secret, "stringData")?
        .as_mapping()
        .ok_or("stringData is not a mapping")?;
    let mut values = BTreeMap::new();
    for (key, value) in data {
        values.insert(
            key.as_str()
                .ok_or("a stringData key is not a string")?
                .to_owned(),
            value
                .as_str()
                .ok_or("a stringData value is not a string")?
                .to_owned(),
        );
    }
    Ok((name, values))
}

#[test]
fn deploy_yaml_files_parse_as_kubernetes_objects() -> TestResult {
    let files = deploy_yaml_files()?;
    let mut kinds = BTreeSet::new();
    for file in &files {
        let documents = yaml_documents(file)?;
        assert!(
            !documents.is_empty(),
            "{} holds no document",
            file.display()
        );
        for document in documents {
            let api_version =
                str_at(&document, "apiVersion").map_err(|e| format!("{}: {e}", file.display()))?;
            let kind = str_at(&document, "kind").map_err(|e| format!("{}: {e}", file.display()))?;
            str_at(&document, "metadata/name").map_err(|e| format!("{}: {e}", file.display()))?;
            kinds.insert(format!("{api_version} {kind}"));
        }
    }
    for expected in [
        "core.spinkube.dev/v1alpha1 SpinApp",
        "batch/v1 CronJob",
        "v1 Secret",
        "v1 Namespace",
    ] {
        assert!(
            kinds.contains(expected),
            "deploy/*.yaml has no {expected}: {kinds:?}"
        );
    }
    Ok(())
}

#[test]
fn every_spinapp_variable_is_declared_in_spin_toml() -> TestResult {
    let manifest = spin_toml()?;
    let spinapp = object_of_kind("SpinApp")?;
    for name in spinapp_variables(&spinapp)?.keys() {
        assert!(
            manifest.variables.contains_key(name),
            "spinapp.yaml binds `{name}` (SPIN_VARIABLE_{}), which spin.toml does not declare in [variables]",
            name.to_uppercase()
        );
    }
    Ok(())
}

#[test]
fn the_spinapp_provides_every_required_variable() -> TestResult {
    let manifest = spin_toml()?;
    let bound = spinapp_variables(&object_of_kind("SpinApp")?)?;
    for (name, declaration) in &manifest.variables {
        if declaration.default.is_none() {
            assert!(
                bound.contains_key(name),
                "spin.toml requires `{name}` (no default) but spinapp.yaml does not provide it: Spin would refuse to start"
            );
        }
    }
    Ok(())
}

#[test]
fn secret_variables_come_from_the_secret_never_literally() -> TestResult {
    let manifest = spin_toml()?;
    let bound = spinapp_variables(&object_of_kind("SpinApp")?)?;
    let (secret_name, example) = example_secret()?;
    for (name, binding) in &bound {
        let declared_secret = manifest.variables.get(name).is_some_and(|d| d.secret);
        match binding {
            Binding::Literal(_) => assert!(
                !declared_secret,
                "`{name}` is `secret = true` in spin.toml but spinapp.yaml gives it a literal value: use valueFrom.secretKeyRef"
            ),
            Binding::Secret { name: secret, key } => {
                assert_eq!(
                    secret, &secret_name,
                    "`{name}` reads Secret `{secret}`, but secret.example.yaml describes `{secret_name}`"
                );
                assert!(
                    example.contains_key(key),
                    "`{name}` reads key `{key}`, which secret.example.yaml does not list"
                );
            }
        }
    }
    // The example holds placeholders only, so nobody mistakes it for (or turns it into) real values.
    for (key, value) in &example {
        assert!(
            value.contains("REPLACE-ME"),
            "secret.example.yaml `{key}` must be an obvious placeholder (containing REPLACE-ME)"
        );
    }
    Ok(())
}

#[test]
fn the_spinapp_keeps_the_instance_store_in_the_shared_redis() -> TestResult {
    let manifest = spin_toml()?;
    let spinapp = object_of_kind("SpinApp")?;
    assert_eq!(str_at(&spinapp, "spec/executor")?, "containerd-shim-spin");
    str_at(&spinapp, "spec/image")?;
    let replicas = int_at(&spinapp, "spec/replicas")?;
    assert!(
        replicas >= 2,
        "this deployment is for more than one replica"
    );
    assert_ne!(
        spinapp.get("spec").and_then(|s| s.get("enableAutoscaling")),
        Some(&Value::Bool(true)),
        "the operator refuses `replicas` together with enableAutoscaling: true"
    );
    let bound = spinapp_variables(&spinapp)?;
    let (_, example) = example_secret()?;

    // The instance store over outbound Redis: the URL (a secret) and the allowed_outbound_hosts
    // entry spin.toml templates from `store_redis_outbound_host`.
    let Some(Binding::Secret { key, .. }) = bound.get("store_redis_url") else {
        panic!(
            "spinapp.yaml must set store_redis_url from the Secret: with several replicas the instance store must be the shared Redis"
        );
    };
    let Some(Binding::Literal(redis_host)) = bound.get("store_redis_outbound_host") else {
        panic!(
            "spinapp.yaml must set store_redis_outbound_host (spin.toml's default names 127.0.0.1)"
        );
    };
    assert!(redis_host.starts_with("redis://"), "{redis_host}");
    assert_eq!(
        &origin(redis_host)?,
        redis_host,
        "store_redis_outbound_host is scheme://host:port only"
    );
    let example_url = example.get(key).ok_or("no example store_redis_url")?;
    assert_eq!(
        origin(example_url)?,
        *redis_host,
        "the example store_redis_url and store_redis_outbound_host must name the same Redis"
    );
    // spin.toml really templates the router's allowed_outbound_hosts from these variables.
    let router = manifest.components.get("router").ok_or("no router")?;
    for template in [
        "{{ store_redis_outbound_host }}",
        "{{ database_outbound_host }}",
    ] {
        assert!(
            router.allowed_outbound_hosts.iter().any(|h| h == template),
            "router's allowed_outbound_hosts no longer has {template}: update deploy/"
        );
    }

    // PostgreSQL for sign-in, likewise.
    let Some(Binding::Secret { key, .. }) = bound.get("database_url") else {
        panic!("spinapp.yaml must set database_url from the Secret");
    };
    let Some(Binding::Literal(db_host)) = bound.get("database_outbound_host") else {
        panic!("spinapp.yaml must set database_outbound_host");
    };
    let example_url = example.get(key).ok_or("no example database_url")?;
    assert_eq!(origin(example_url)?, *db_host);

    assert!(
        !str_at(&spinapp, "spec/runtimeConfig/loadFromSecret")?.is_empty(),
        "the SpinApp loads deploy/runtime-config.toml from a Secret"
    );
    if let Some(Binding::Literal(dev_mode)) = bound.get("dev_mode") {
        assert_eq!(dev_mode, "false", "dev_mode authenticates everyone");
    }
    Ok(())
}

/// `const NAME: u32 = 55_000;` (or `Duration::from_secs(45)`) read from a source file, so the
/// test follows the code instead of repeating its numbers.
fn number_after(path: &Path, marker: &str) -> Result<i64, String> {
    let text = read(path)?;
    let start = text
        .find(marker)
        .ok_or_else(|| format!("`{marker}` not found in {}", path.display()))?
        + marker.len();
    let digits: String = text[start..]
        .chars()
        .skip_while(|c| !c.is_ascii_digit())
        .take_while(|c| c.is_ascii_digit() || *c == '_')
        .filter(|c| *c != '_')
        .collect();
    digits
        .parse()
        .map_err(|e| format!("`{marker}` in {}: {e}", path.display()))
}

#[test]
fn the_reconcile_cronjob_posts_to_the_platform_route_with_the_internal_key() -> TestResult {
    let cronjob = object_of_kind("CronJob")?;
    let spinapp = object_of_kind("SpinApp")?;
    let manifest = spin_toml()?;

    assert_eq!(str_at(&cronjob, "spec/schedule")?, "* * * * *");
    assert_eq!(str_at(&cronjob, "spec/concurrencyPolicy")?, "Forbid");
    let deadline = int_at(&cronjob, "spec/jobTemplate/spec/activeDeadlineSeconds")?;
    assert!(
        deadline < 60,
        "a run must end before the next minute's (activeDeadlineSeconds {deadline})"
    );
    let containers = at(&cronjob, "spec/jobTemplate/spec/template/spec/containers")?
        .as_sequence()
        .ok_or("containers is not a list")?;
    let [container] = containers.as_slice() else {
        return Err("the CronJob runs one container".into());
    };
    let mut env = BTreeMap::new();
    for entry in at(container, "env")?
        .as_sequence()
        .ok_or("env is not a list")?
    {
        env.insert(str_at(entry, "name")?.to_owned(), entry.clone());
    }
    let literal = |name: &str| -> Result<String, String> {
        env.get(name)
            .ok_or_else(|| format!("the CronJob has no env {name}"))
            .and_then(|e| str_at(e, "value").map(str::to_owned))
    };
    let script = container
        .get("args")
        .and_then(Value::as_sequence)
        .and_then(|args| args.last())
        .and_then(Value::as_str)
        .ok_or("the CronJob's script is not its last arg")?;

    // The URL: the operator's Service for the SpinApp (same name and namespace, port 80), and a
    // path spin.toml routes to the router, which the platform API documents as the reconcile route.
    let url = literal("URL")?;
    let spinapp_name = str_at(&spinapp, "metadata/name")?;
    let namespace = str_at(&spinapp, "metadata/namespace")?;
    let service = format!("http://{spinapp_name}.{namespace}.svc.cluster.local/");
    let path = url
        .strip_prefix(&service[..service.len() - 1])
        .ok_or_else(|| format!("URL {url} is not the SpinApp's Service {service}"))?;
    assert_eq!(str_at(&cronjob, "metadata/namespace")?, namespace);
    let routes = manifest
        .http_triggers
        .iter()
        .enumerate()
        .filter_map(|(i, t)| match &t.route {
            Route::Path(route) => Some((i, route.as_str())),
            Route::Private => None,
        });
    let router = Router::build(routes)?;
    let matched = router
        .route(path)
        .ok_or_else(|| format!("spin.toml routes nothing for {path}"))?;
    let trigger = &manifest.http_triggers[matched.target.trigger_index];
    assert!(
        matches!(&trigger.target, HttpTarget::Component(c) if c == "router"),
        "{path} does not reach the router component"
    );
    let openapi: Value = serde_norway::from_str(&read(&repo_root().join("docs/openapi.json"))?)?;
    let operation = at(&openapi, "paths")?
        .get(path)
        .and_then(|p| p.get("post"))
        .ok_or_else(|| format!("docs/openapi.json documents no POST {path}"))?;
    assert_eq!(
        str_at(operation, "operationId")?,
        "run_reconcile",
        "POST {path} is not the reconcile route"
    );
    let security = format!("{:?}", at(operation, "security")?);
    assert!(security.contains("internalApiKey"), "{security}");
    let header = str_at(&openapi, "components/securitySchemes/internalApiKey/name")?;
    assert_eq!(header, "x-internal-api-key");

    // The header carries the same Secret key the SpinApp reads internal_api_secret from.
    let header_at = script
        .find(&format!("{header}: $"))
        .ok_or_else(|| format!("the script sends no `{header}: $VAR` header"))?;
    let var: String = script[header_at + header.len() + 3..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    let key_env = env
        .get(&var)
        .ok_or_else(|| format!("the header's ${var} is not in the CronJob's env"))?;
    let from_cronjob = secret_key_ref(at(key_env, "valueFrom")?)?;
    let Some(Binding::Secret { name, key }) = spinapp_variables(&spinapp)?
        .get("internal_api_secret")
        .cloned()
    else {
        return Err("the SpinApp does not read internal_api_secret from a Secret".into());
    };
    assert_eq!(
        from_cronjob,
        (name, key),
        "the CronJob's key must be the SpinApp's internal_api_secret"
    );

    // curl: POST, fails on an HTTP error but shows the body, gives up after MAX_TIME.
    for flag in [
        "--fail-with-body",
        "--max-time \"$MAX_TIME\"",
        "--request POST \"$URL\"",
        "$BUDGET_MS",
    ] {
        assert!(script.contains(flag), "the script lacks `{flag}`");
    }
    assert!(str_at(container, "image")?.contains("curl"), "a curl image");

    // Budgets: within the route's ceiling and a cron tick's budget (which fits in one claim of the
    // due index), curl's limit a little above it, the Job's deadline above that.
    let budget_ms: i64 = literal("BUDGET_MS")?.parse()?;
    let max_time: i64 = literal("MAX_TIME")?.parse()?;
    let route_ceiling = number_after(
        &repo_root().join("components/router/src/platform.rs"),
        "const MAX_RECONCILE_BUDGET_MS: u32 =",
    )?;
    let tick_budget_s = number_after(
        &repo_root().join("components/reconciler/src/lib.rs"),
        "const TICK_BUDGET: Duration = Duration::from_secs(",
    )?;
    assert!(
        budget_ms > 0 && budget_ms <= route_ceiling,
        "budget {budget_ms} ms"
    );
    assert!(
        budget_ms <= tick_budget_s * 1000,
        "budget {budget_ms} ms exceeds a cron tick's {tick_budget_s} s"
    );
    assert!(
        max_time * 1000 > budget_ms && max_time * 1000 <= budget_ms + 10_000,
        "curl --max-time {max_time} s should be a little above the {budget_ms} ms budget"
    );
    assert!(
        max_time < deadline,
        "curl must give up before the Job is killed"
    );

    // One walker per replica by default.
    let walkers: i64 = literal("WALKERS")?.parse()?;
    assert_eq!(
        walkers,
        int_at(&spinapp, "spec/replicas")?,
        "WALKERS should equal the SpinApp's replicas"
    );
    Ok(())
}

#[test]
fn the_runtime_config_puts_the_default_store_on_the_shared_redis() -> TestResult {
    let text = read(&deploy_dir().join("runtime-config.toml"))?;
    let config: toml::Table = toml::from_str(&text)?;
    // Spin refuses a runtime config with keys it does not use; keep to what this file needs.
    let keys: Vec<&String> = config.keys().collect();
    assert_eq!(keys, ["key_value_store"], "unexpected top-level keys");
    let store = config
        .get("key_value_store")
        .and_then(|s| s.get("default"))
        .and_then(toml::Value::as_table)
        .ok_or("no [key_value_store.default]")?;
    assert_eq!(
        store.get("type").and_then(toml::Value::as_str),
        Some("redis")
    );
    let url = store
        .get("url")
        .and_then(toml::Value::as_str)
        .ok_or("no url")?;
    let Some(Binding::Literal(redis_host)) =
        spinapp_variables(&object_of_kind("SpinApp")?)?.remove("store_redis_outbound_host")
    else {
        return Err("the SpinApp sets no store_redis_outbound_host".into());
    };
    assert_eq!(
        origin(url)?,
        redis_host,
        "the `default` store should be the same Redis server as the instance store"
    );
    Ok(())
}

/// Components a cron trigger uses and no HTTP trigger does.
fn cron_only_components(doc: &toml::Table) -> BTreeSet<String> {
    let components_of = |kind: &str| -> BTreeSet<String> {
        doc.get("trigger")
            .and_then(|t| t.get(kind))
            .and_then(toml::Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|t| t.get("component").and_then(toml::Value::as_str))
            .map(str::to_owned)
            .collect()
    };
    let http = components_of("http");
    components_of("cron")
        .into_iter()
        .filter(|c| !http.contains(c))
        .collect()
}

#[test]
fn spin_kube_toml_is_spin_toml_without_the_cron_trigger() -> TestResult {
    let root = repo_root();
    let original: toml::Table = toml::from_str(&read(&root.join("spin.toml"))?)?;
    let kube_path = deploy_dir().join("spin.kube.toml");
    let kube: toml::Table = toml::from_str(&read(&kube_path)?)?;
    // It is a valid manifest in its own right.
    let loaded = Manifest::load(&kube_path)?;
    assert!(
        loaded.cron_triggers.is_empty(),
        "the shim refuses a cron trigger"
    );

    // Same application, variables and HTTP triggers; no cron trigger.
    for key in ["spin_manifest_version", "application", "variables"] {
        assert_eq!(
            original.get(key),
            kube.get(key),
            "`{key}` differs from spin.toml"
        );
    }
    let triggers = kube
        .get("trigger")
        .and_then(toml::Value::as_table)
        .ok_or("no [trigger]")?;
    assert_eq!(
        triggers.keys().collect::<Vec<_>>(),
        ["http"],
        "spin.kube.toml must have HTTP triggers only"
    );
    assert_eq!(
        original.get("trigger").and_then(|t| t.get("http")),
        triggers.get("http"),
        "the HTTP triggers differ from spin.toml"
    );

    // Components: spin.toml's minus those only a cron trigger uses, each the same except for paths
    // made relative to deploy/.
    let dropped = cron_only_components(&original);
    assert!(
        !dropped.is_empty(),
        "spin.toml has no cron-only component any more: is spin.kube.toml still needed?"
    );
    let components = |doc: &toml::Table| -> Result<toml::Table, String> {
        doc.get("component")
            .and_then(toml::Value::as_table)
            .cloned()
            .ok_or_else(|| "no [component]".to_owned())
    };
    let mut expected = components(&original)?;
    expected.retain(|id, _| !dropped.contains(id));
    for (_, component) in expected.iter_mut() {
        let component = component
            .as_table_mut()
            .ok_or("a component is not a table")?;
        if let Some(toml::Value::String(source)) = component.get_mut("source") {
            *source = format!("../{source}");
        }
        if let Some(toml::Value::Table(build)) = component.get_mut("build") {
            build.insert("workdir".to_owned(), toml::Value::String("..".to_owned()));
        }
    }
    let actual = components(&kube)?;
    assert_eq!(
        expected.keys().collect::<Vec<_>>(),
        actual.keys().collect::<Vec<_>>(),
        "component ids differ"
    );
    for (id, component) in &expected {
        assert_eq!(
            Some(component),
            actual.get(id),
            "[component.{id}] in deploy/spin.kube.toml is not spin.toml's (with ../ paths)"
        );
    }
    Ok(())
}
