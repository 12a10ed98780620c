//! The system under test: the Fly simulator and our Spin host running the built components from
//! the repository's own `spin.toml`, both in-process on 127.0.0.1:0, plus an HTTP client and
//! helpers that speak the platform and user APIs.
//!
//! Components are built once per test process (`kiloclaw_e2e::components`); every test gets a
//! fresh simulator and a fresh in-memory key-value store, so tests are independent and parallel.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail, ensure};
use kiloclaw_host::{App, HostConfig, ServerHandle};
use reqwest::{Method, RequestBuilder};
use serde_json::{Value, json};

pub use super::sim::{Fly, FlyFault};
use crate::spin::SpinProcess;
pub use crate::spin::SpinStore;

/// Test secrets: fixed, long enough for the JWT validator, never used outside tests.
const NEXTAUTH_SECRET: &str = "e2e-nextauth-secret-0123456789abcdef0123456789";
const INTERNAL_API_SECRET: &str = "e2e-internal-api-key-0123456789abcdef";
const GATEWAY_TOKEN_SECRET: &str = "e2e-gateway-token-secret-0123456789abcdef";

/// Bound on any single HTTP exchange with the system; a hang fails the test instead of CI. Above
/// the longest legitimate answer: a start under Fly faults may wait for `started` (Fly caps a wait
/// at 60 s), recover from a capacity error and wait again.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(180);

/// The manifest with component paths pointing at the built files, written once per process.
fn manifest() -> anyhow::Result<&'static PathBuf> {
    static MANIFEST: OnceLock<Result<(tempfile::TempDir, PathBuf), String>> = OnceLock::new();
    MANIFEST
        .get_or_init(|| {
            (|| -> anyhow::Result<(tempfile::TempDir, PathBuf)> {
                let built = kiloclaw_e2e::components()?;
                let artifacts: BTreeMap<String, PathBuf> = built
                    .all()
                    .iter()
                    .map(|(package, path)| ((*package).to_owned(), path.to_path_buf()))
                    .collect();
                let dir = tempfile::tempdir()?;
                let source = kiloclaw_e2e::workspace_root().join("spin.toml");
                let out = dir.path().join("spin.toml");
                let resolved = kiloclaw_cli::manifest::resolve_manifest(&source, &artifacts, &out)?;
                Ok((dir, resolved))
            })()
            .map_err(|e| format!("{e:#}"))
        })
        .as_ref()
        .map(|(_, path)| path)
        .map_err(|message| anyhow::anyhow!("preparing the manifest failed: {message}"))
}

/// A reply, read in full.
#[derive(Debug)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// Response headers.
    pub headers: reqwest::header::HeaderMap,
    /// Body as text.
    pub text: String,
}

impl Reply {
    /// The body as JSON.
    pub fn json(&self) -> anyhow::Result<Value> {
        serde_json::from_str(&self.text)
            .with_context(|| format!("status {} body is not JSON: {:?}", self.status, self.text))
    }

    /// Asserts the status and returns the JSON body.
    pub fn expect(&self, status: u16) -> anyhow::Result<Value> {
        ensure!(
            self.status == status,
            "expected status {status}, got {} with body {}",
            self.status,
            self.text
        );
        self.json()
    }

    /// Asserts the status and the exact JSON body.
    pub fn expect_json(&self, status: u16, body: Value) -> anyhow::Result<()> {
        let got = self.expect(status)?;
        ensure!(
            got == body,
            "status {status}: expected body {body}, got {got}"
        );
        Ok(())
    }

    /// Asserts the status and parses the gateway stand-in's echo of the request it received.
    pub fn expect_echo(&self, status: u16) -> anyhow::Result<Echo> {
        let body = self.expect(status)?;
        Echo::parse(&body)
    }
}

/// What the OpenClaw gateway stand-in on a simulated machine saw.
#[derive(Debug)]
pub struct Echo {
    /// The machine that served the request.
    pub machine_id: String,
    /// Request method.
    pub method: String,
    /// Path without the query.
    pub path: String,
    /// Raw query string ("" when none).
    pub query: String,
    /// Request body as text.
    pub body: String,
    /// Headers the machine received (lower-case names).
    pub headers: BTreeMap<String, String>,
}

impl Echo {
    fn parse(body: &Value) -> anyhow::Result<Self> {
        let text = |field: &str| -> anyhow::Result<String> {
            body[field]
                .as_str()
                .map(str::to_owned)
                .with_context(|| format!("not a gateway echo (no `{field}`): {body}"))
        };
        Ok(Self {
            machine_id: text("machine_id")?,
            method: text("method")?,
            path: text("path")?,
            query: text("query")?,
            body: text("body")?,
            headers: body["headers"]
                .as_object()
                .into_iter()
                .flatten()
                .filter_map(|(k, v)| Some((k.to_ascii_lowercase(), v.as_str()?.to_owned())))
                .collect(),
        })
    }

    /// A header the machine received.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }
}

/// What runs the components: our host in-process, or real Spin processes.
enum Runtime {
    Host {
        server: Option<ServerHandle>,
        /// `GET /metrics` on a port of its own, as `kiloclaw up --metrics-listen` serves it.
        metrics: Option<ServerHandle>,
        app: App,
    },
    /// One or more `spin up` processes sharing a store (stopped when dropped).
    Spin(Vec<SpinProcess>),
}

/// Everything a test needs, torn down when dropped.
pub struct System {
    client: reqwest::Client,
    /// One per serving process; requests go to the first unless a test picks one.
    base_urls: Vec<String>,
    runtime: Runtime,
    sim: Fly,
    /// The extra variables it was started with, kept for a restart.
    variables: Vec<(String, String)>,
    _state: tempfile::TempDir,
}

impl std::fmt::Debug for System {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("System")
            .field("base_urls", &self.base_urls)
            .finish()
    }
}

impl Drop for System {
    fn drop(&mut self) {
        // Dropping the handle aborts the server tasks (Spin processes stop in their own Drop);
        // the simulator stops with its own guard.
        if let Runtime::Host {
            server, metrics, ..
        } = &mut self.runtime
        {
            server.take();
            metrics.take();
        }
    }
}

impl System {
    /// Starts a simulator and the app against it.
    pub async fn boot() -> anyhow::Result<Self> {
        let sim = Fly::start().await?;
        Self::start_with_sim(sim).await
    }

    async fn start_with_sim(sim: Fly) -> anyhow::Result<Self> {
        Self::start_app(sim, manifest()?, Vec::new()).await
    }

    /// Starts a simulator and the app in our host with its instance store on `store` (e.g. the
    /// Redis at 127.0.0.1:6379 over the outbound Redis interface).
    pub async fn boot_with_store(store: SpinStore) -> anyhow::Result<Self> {
        let mut variables = store.variables();
        variables.push(private_key_variable());
        Self::start_app(Fly::start().await?, manifest()?, variables).await
    }

    /// Starts a simulator and the app with extra Spin variables (e.g. `agent_env_vars_private_key`).
    pub async fn boot_with_variables(variables: Vec<(String, String)>) -> anyhow::Result<Self> {
        Self::start_app(Fly::start().await?, manifest()?, variables).await
    }

    /// Starts a simulator and the app of another manifest (e.g. the output of `kiloclaw compose`).
    pub async fn boot_manifest(manifest: &std::path::Path) -> anyhow::Result<Self> {
        Self::start_app(Fly::start().await?, manifest, Vec::new()).await
    }

    /// The repository's manifest, pointed at the built components.
    pub fn resolved_manifest() -> anyhow::Result<&'static PathBuf> {
        manifest()
    }

    async fn start_app(
        sim: Fly,
        manifest: &std::path::Path,
        extra_variables: Vec<(String, String)>,
    ) -> anyhow::Result<Self> {
        let state = tempfile::tempdir()?;
        let runtime_config = state.path().join("runtime-config.toml");
        // An in-memory store: each System starts empty and nothing outlives the test.
        std::fs::write(
            &runtime_config,
            "[key_value_store.default]\ntype = \"memory\"\n",
        )?;
        let mut config = HostConfig::new(manifest);
        config.state_dir = Some(state.path().to_path_buf());
        config.runtime_config_file = Some(runtime_config);
        config.listen = "127.0.0.1:0".parse()?;
        // The tests drive the reconciler explicitly; a background cron tick would race them.
        config.cron = false;
        config.variables = vec![
            ("nextauth_secret".into(), NEXTAUTH_SECRET.into()),
            ("internal_api_secret".into(), INTERNAL_API_SECRET.into()),
            ("gateway_token_secret".into(), GATEWAY_TOKEN_SECRET.into()),
        ];
        config.variables.extend(sim.app_variables());
        config.variables.extend(extra_variables.iter().cloned());
        config.metric_labels = std::sync::Arc::new(kiloclaw_cli::metric_labels::KiloClawLabels);
        let app = App::load(&config)
            .await
            .context("loading the app in the host")?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let server = app.serve(listener);
        let base_url = format!("http://{}", server.local_addr());
        let metrics = app.serve_metrics(tokio::net::TcpListener::bind("127.0.0.1:0").await?);
        Ok(Self {
            client: http_client()?,
            base_urls: vec![base_url],
            runtime: Runtime::Host {
                server: Some(server),
                metrics: Some(metrics),
                app,
            },
            sim,
            variables: extra_variables,
            _state: state,
        })
    }

    /// Starts a simulator and `replicas` real Spin processes (`spin up`) running the repository's
    /// own `spin.toml` against it, all on `store`.
    pub async fn boot_on_spin(store: SpinStore, replicas: usize) -> anyhow::Result<Self> {
        Self::boot_on_spin_with(store, replicas, Vec::new()).await
    }

    /// As [`System::boot_on_spin`], with extra Spin variables (e.g. a database).
    pub async fn boot_on_spin_with(
        store: SpinStore,
        replicas: usize,
        extra_variables: Vec<(String, String)>,
    ) -> anyhow::Result<Self> {
        let sim = Fly::start().await?;
        let state = tempfile::tempdir()?;
        let mut variables = vec![
            ("nextauth_secret".to_owned(), NEXTAUTH_SECRET.to_owned()),
            (
                "internal_api_secret".to_owned(),
                INTERNAL_API_SECRET.to_owned(),
            ),
            (
                "gateway_token_secret".to_owned(),
                GATEWAY_TOKEN_SECRET.to_owned(),
            ),
        ];
        variables.extend(sim.app_variables());
        variables.extend(store.variables());
        variables.push(private_key_variable());
        variables.extend(extra_variables);
        let app_dir = crate::spin::app_dir(state.path())?;
        let mut processes = Vec::new();
        for replica in 0..replicas {
            // Each process has its own state dir (logs, SQLite file), as separate hosts would;
            // with SQLite they share the app's one file instead, as `spin up` processes do.
            let state_dir = match store {
                SpinStore::Sqlite => app_dir.join(".spin"),
                SpinStore::Redis { .. } => state.path().join(format!("replica-{replica}")),
            };
            processes.push(SpinProcess::start(&app_dir, &state_dir, &variables).await?);
        }
        Ok(Self {
            client: http_client()?,
            base_urls: processes.iter().map(SpinProcess::base_url).collect(),
            runtime: Runtime::Spin(processes),
            sim,
            variables: Vec::new(),
            _state: state,
        })
    }

    /// The same simulator (Fly keeps everything) and variables, a new host with an empty
    /// key-value store: the control plane has lost all its state.
    pub async fn restart_with_empty_store(mut self) -> anyhow::Result<Self> {
        if let Runtime::Host { server, .. } = &mut self.runtime
            && let Some(server) = server.take()
        {
            server.shutdown().await;
        }
        let sim = self.sim.clone();
        let variables = std::mem::take(&mut self.variables);
        drop(self);
        Self::start_app(sim, manifest()?, variables).await
    }

    /// The simulator's admin side.
    pub fn sim(&self) -> &Fly {
        &self.sim
    }

    /// The internal API key.
    pub fn internal_key(&self) -> &'static str {
        INTERNAL_API_SECRET
    }

    /// `base64url(userId)`.
    pub fn sandbox_id(user: &str) -> String {
        kiloclaw_core::ids::sandbox_id_from_user_id(user).unwrap_or_default()
    }

    /// The gateway token the system should hand out for `user`.
    pub fn expected_gateway_token(&self, user: &str) -> String {
        kiloclaw_core::ids::gateway_token(GATEWAY_TOKEN_SECRET, &Self::sandbox_id(user))
    }

    /// Seconds since the epoch.
    pub fn now_s() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default()
    }

    /// A request to the app (its first process).
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.request_via(0, method, path)
    }

    /// A request to the app's serving process `replica` (modulo the number of processes).
    pub fn request_via(&self, replica: usize, method: Method, path: &str) -> RequestBuilder {
        let base_url = &self.base_urls[replica % self.base_urls.len()];
        self.client.request(method, format!("{base_url}{path}"))
    }

    /// The app's address (`host:port` of its first process), for tests that speak raw TCP.
    pub fn address(&self) -> String {
        self.base_urls[0].trim_start_matches("http://").to_owned()
    }

    /// The Spin processes serving the app (none on our host).
    pub fn spin_processes(&self) -> &[SpinProcess] {
        match &self.runtime {
            Runtime::Spin(processes) => processes,
            Runtime::Host { .. } => &[],
        }
    }

    /// How many processes serve the app.
    pub fn replicas(&self) -> usize {
        self.base_urls.len()
    }

    /// Sends and reads the whole reply.
    /// Sends a request and reads the reply, which must match docs/openapi.json ([`super::openapi`]).
    pub async fn send(&self, request: RequestBuilder) -> anyhow::Result<Reply> {
        let (client, request) = request.build_split();
        let request = request.context("building a request")?;
        let method = request.method().as_str().to_owned();
        let path = request.url().path().to_owned();
        let response = client
            .execute(request)
            .await
            .context("sending a request to the app")?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.context("reading the app's reply")?;
        let content_type = headers
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        super::openapi::check(&method, &path, status, content_type, &text)?;
        Ok(Reply {
            status,
            headers,
            text,
        })
    }

    /// `GET path` without credentials.
    pub async fn get(&self, path: &str) -> anyhow::Result<Reply> {
        self.send(self.request(Method::GET, path)).await
    }

    /// A platform call with the internal key and an optional JSON body.
    pub async fn platform(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Reply> {
        let mut request = self
            .request(method, path)
            .header("x-internal-api-key", INTERNAL_API_SECRET);
        if let Some(body) = body {
            request = request.json(&body);
        }
        self.send(request).await
    }

    /// A platform call with a raw body and the given key (or none).
    pub async fn platform_raw(
        &self,
        method: Method,
        path: &str,
        body: &str,
        key: Option<&str>,
    ) -> anyhow::Result<Reply> {
        let mut request = self
            .request(method, path)
            .header("content-type", "application/json")
            .body(body.to_owned());
        if let Some(key) = key {
            request = request.header("x-internal-api-key", key);
        }
        self.send(request).await
    }

    /// Provisions `user` with no config; returns the sandbox id.
    pub async fn provision(&self, user: &str) -> anyhow::Result<String> {
        let body = self
            .platform(
                Method::POST,
                "/api/platform/provision",
                Some(json!({"userId": user})),
            )
            .await?
            .expect(201)?;
        body["sandboxId"]
            .as_str()
            .map(str::to_owned)
            .with_context(|| format!("provision reply without sandboxId: {body}"))
    }

    async fn lifecycle(&self, action: &str, user: &str) -> anyhow::Result<()> {
        self.platform(
            Method::POST,
            &format!("/api/platform/{action}"),
            Some(json!({"userId": user})),
        )
        .await?
        .expect_json(200, json!({"ok": true}))
        .with_context(|| format!("{action} {user}"))
    }

    /// `POST /api/platform/start`, asserting `{ok:true}`.
    pub async fn start(&self, user: &str) -> anyhow::Result<()> {
        self.lifecycle("start", user).await
    }

    /// `POST /api/platform/stop`, asserting `{ok:true}`.
    pub async fn stop(&self, user: &str) -> anyhow::Result<()> {
        self.lifecycle("stop", user).await
    }

    /// `POST /api/platform/destroy`, asserting `{ok:true}`.
    pub async fn destroy(&self, user: &str) -> anyhow::Result<()> {
        self.lifecycle("destroy", user).await
    }

    /// Waits (bounded) until a destroy has completed; runs the reconciler if it was left pending.
    pub async fn settle_destroy(&self, user: &str) -> anyhow::Result<()> {
        for _ in 0..10 {
            let status = self.status(user).await?;
            if status["status"].is_null() {
                return Ok(());
            }
            ensure!(
                status["status"] == "destroying",
                "unexpected status while destroying: {status}"
            );
            // Fly keeps a volume bound until its machine is destroyed, so the volume delete of
            // the first pass can fail; the reconciler finishes it on a later pass.
            tokio::time::sleep(Duration::from_millis(200)).await;
            self.reconcile(user).await?;
        }
        bail!("destroy of {user} did not complete")
    }

    /// `GET /api/platform/status?userId=`, asserting 200.
    pub async fn status(&self, user: &str) -> anyhow::Result<Value> {
        self.platform(
            Method::GET,
            &format!("/api/platform/status?userId={}", urlencode(user)),
            None,
        )
        .await?
        .expect(200)
    }

    /// One string field of the instance status (`flyMachineId`, `flyVolumeId`, …); empty when unset.
    pub async fn status_field(&self, user: &str, field: &str) -> anyhow::Result<String> {
        Ok(self.status(user).await?[field]
            .as_str()
            .unwrap_or_default()
            .to_owned())
    }

    /// A valid one-hour user JWT.
    pub fn token(&self, user: &str) -> anyhow::Result<String> {
        let now = Self::now_s();
        self.token_with_claims(
            json!({"kiloUserId": user, "version": 3, "iat": now, "exp": now + 3600}),
        )
    }

    /// A JWT with arbitrary claims under the app's secret.
    pub fn token_with_claims(&self, claims: Value) -> anyhow::Result<String> {
        self.token_signed_with(NEXTAUTH_SECRET.as_bytes(), claims)
    }

    /// A JWT with arbitrary claims under any key.
    pub fn token_signed_with(&self, key: &[u8], claims: Value) -> anyhow::Result<String> {
        sign_token(jsonwebtoken::Algorithm::HS256, key, claims)
    }

    /// A token with a header of the caller's choosing (e.g. `{"alg":"none"}`), whose signature is
    /// HMAC-SHA256 with the app's secret (`sign: true`) or empty: what an attacker can forge.
    pub fn token_with_header(
        &self,
        header: Value,
        claims: Value,
        sign: bool,
    ) -> anyhow::Result<String> {
        use base64::Engine;
        let encode = |value: &Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value.to_string())
        };
        let message = format!("{}.{}", encode(&header), encode(&claims));
        let signature = if sign {
            jsonwebtoken::crypto::sign(
                message.as_bytes(),
                &jsonwebtoken::EncodingKey::from_secret(NEXTAUTH_SECRET.as_bytes()),
                jsonwebtoken::Algorithm::HS256,
            )?
        } else {
            String::new()
        };
        Ok(format!("{message}.{signature}"))
    }

    /// A token signed with the app's secret under another algorithm (e.g. HS512).
    pub fn token_with_algorithm(
        &self,
        algorithm: jsonwebtoken::Algorithm,
        claims: Value,
    ) -> anyhow::Result<String> {
        sign_token(algorithm, NEXTAUTH_SECRET.as_bytes(), claims)
    }

    /// A request as `user` (Bearer JWT).
    pub fn as_user(
        &self,
        user: &str,
        method: Method,
        path: &str,
    ) -> anyhow::Result<RequestBuilder> {
        Ok(self.request(method, path).bearer_auth(self.token(user)?))
    }

    /// Runs the reconciler's cron handler once, as the cron trigger would (our host only: on
    /// Spin the cron plugin ticks on its own schedule).
    /// Scrapes the host's metrics listener (`GET /metrics`), as Prometheus would.
    pub async fn scrape_metrics(&self) -> anyhow::Result<String> {
        let Runtime::Host {
            metrics: Some(metrics),
            ..
        } = &self.runtime
        else {
            bail!("only our host serves metrics")
        };
        let response = self
            .client
            .get(format!("http://{}/metrics", metrics.local_addr()))
            .send()
            .await?;
        ensure!(response.status() == 200, "metrics: {}", response.status());
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        ensure!(
            content_type.starts_with("text/plain; version=0.0.4"),
            "{content_type}"
        );
        Ok(response.text().await?)
    }

    pub async fn cron_tick(&self) -> anyhow::Result<()> {
        match &self.runtime {
            Runtime::Host { app, .. } => app
                .run_cron_once("reconciler")
                .await
                .map_err(|e| anyhow::anyhow!("cron tick: {e}")),
            Runtime::Spin(_) => bail!("on Spin the cron trigger plugin ticks by itself"),
        }
    }

    /// Reconciles `user` now, whatever its cadence says; returns the outcome
    /// (`{checked, rateLimited, status, nextCheckAt}`).
    pub async fn reconcile(&self, user: &str) -> anyhow::Result<Value> {
        let reply = self
            .platform(
                Method::POST,
                "/api/platform/reconcile",
                Some(json!({"userId": user})),
            )
            .await?;
        reply
            .expect(200)
            .with_context(|| format!("reconcile {user}"))
    }

    /// Writes a file on the user's volume through the gateway stand-in (a proxied request).
    pub async fn write_volume_file(
        &self,
        user: &str,
        path: &str,
        content: &str,
    ) -> anyhow::Result<()> {
        let reply = self
            .send(
                self.as_user(user, Method::PUT, &super::sim::volume_file_path(path))?
                    .body(content.to_owned()),
            )
            .await?;
        ensure!(
            (200..300).contains(&reply.status),
            "writing {path}: {} {}",
            reply.status,
            reply.text
        );
        Ok(())
    }

    /// Reads a file on the user's volume through the gateway stand-in; `None` when absent.
    pub async fn read_volume_file(&self, user: &str, path: &str) -> anyhow::Result<Option<String>> {
        let reply = self
            .send(self.as_user(user, Method::GET, &super::sim::volume_file_path(path))?)
            .await?;
        match reply.status {
            200 => Ok(Some(reply.text)),
            404 => Ok(None),
            other => bail!("reading {path}: {other} {}", reply.text),
        }
    }

    /// Opens a WebSocket directly to the user's gateway (as the browser does) with `token`;
    /// true when the gateway accepted it.
    pub async fn gateway_websocket_accepts(&self, user: &str, token: &str) -> anyhow::Result<bool> {
        let status = self.status(user).await?;
        let app = status["flyAppName"].as_str().context("no app")?;
        self.sim.websocket_accepts(app, token).await
    }
}

fn sign_token(
    algorithm: jsonwebtoken::Algorithm,
    key: &[u8],
    claims: Value,
) -> anyhow::Result<String> {
    Ok(jsonwebtoken::encode(
        &jsonwebtoken::Header::new(algorithm),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(key),
    )?)
}

fn http_client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()?)
}

/// Percent-encodes a query value.
pub fn urlencode(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

/// `agent_env_vars_private_key` set to the key that opens the Node-made fixture envelopes.
pub fn private_key_variable() -> (String, String) {
    (
        "agent_env_vars_private_key".to_owned(),
        kiloclaw_core::testing::NodeEnvelopes::load().private_key_pem,
    )
}
