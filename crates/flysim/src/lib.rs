//! A Fly.io simulator: Machines API, Fly Proxy, OpenClaw gateway stand-in and fault injection.
//!
//! The same client code drives it and the real API: it speaks the paths, methods, JSON and status codes of
//! `shared/reference/fly-machines-api.md`, and its own tests drive it with `kiloclaw_core::fly::FlyClient`.
//!
//! # Running it
//!
//! - In-process (tests): [`Simulator::start`] on a tokio runtime returns a [`SimHandle`] with
//!   [`SimHandle::api_url`], [`SimHandle::proxy_url`], [`SimHandle::admin`] and [`SimHandle::shutdown`].
//!   [`Simulator::start_blocking`] runs it on its own thread and runtime for synchronous callers.
//! - Standalone: [`run_standalone`] (what `kiloclaw fly-sim --listen ADDR` calls) serves until Ctrl-C;
//!   [`run_until`] until a future completes.
//!
//! # Addressing
//!
//! One listener serves everything. A request goes to the **Fly Proxy** when it carries
//! `fly-force-instance-id: <machine id>` or its host is `{app}.localhost[:port]`; otherwise paths under
//! `/v1/` are the **Machines API** (bearer token required) and `/_sim/` the **admin API** (see [`admin`]).
//! So `fly_api_base_url` and `fly_proxy_base_url` can both be the listener's URL. An optional second
//! listener ([`SimConfig::proxy_listen`]) proxies every request regardless of headers.
//!
//! # Modelled
//!
//! - Machines: create (name, region incl. lists/aliases, config, metadata, `skip_launch`,
//!   `min_secrets_version`), get, list (`metadata.{k}={v}` ANDed, `region`, `state`, `include_deleted`),
//!   update (whole config, new `instance_id`, `current_version`, `replacing`, concurrent-update 409,
//!   immutable mount), start (412 from non-startable states), stop (optional body; array → 400),
//!   delete (`force`/`kill`; 412 on a running machine without it), wait (`state` lists incl. `settled`,
//!   `timeout` 1–60 s else 400, `instance_id`/`version` required for `stopped`, 408 with Fly's text),
//!   exec (a few commands, see [`exec`]), events (newest first).
//! - Org-wide machine listing `GET /v1/orgs/{org}/machines` (`cursor`, `limit` ≤ 1000, `updated_after`,
//!   `state`, `region`, `summary`, `include_deleted`), ordered and paged by (`updated_at`, `id`); every
//!   state change bumps `updated_at` (seconds). An org is only its apps' `org_slug`: an org without apps
//!   lists nothing (200). `error_regions` is always empty. See `api/orgs.rs`.
//! - Lifecycle `created → starting → started → stopping → stopped → destroying → destroyed` with
//!   configurable [`Delays`]; destroyed machines stay visible for a while, then 404. Lost machines
//!   answer 404 at once but leave a `destroyed` tombstone in the org listing (`include_deleted=true`)
//!   for the same while.
//! - Volumes: list, create (single region, name rule, size 1–500, `source_volume_id` fork copying the
//!   data directory, `compute` placement hint, `snapshot_retention`), get, delete (412 while bound, soft
//!   delete to `pending_destroy`, purged later), snapshots (list, create). One machine per volume; the
//!   binding can outlive the machine ([`Delays::volume_detach`]).
//! - Capacity: regions of hosts with RAM; running machines reserve their guest memory on their host. A
//!   create with a volume on a full host → 412 `insufficient resources to create new machine with
//!   existing volume 'vol_…'`; start/update on a full host → 409 `aborted: could not reserve resource for
//!   machine: insufficient memory available to fulfill request`; a full region → 412 `insufficient_capacity`.
//!   Machines seeded in bulk ([`fleet`]) are exempt from capacity accounting.
//! - Apps: create (`app_name` or `name`, `org_slug`, `network`; 422 `name_taken`, 422 invalid name), list
//!   by org, get, delete (202, cascades to machines, volumes and their data), IP assignments.
//! - Secrets: set one (201) / many, unset, list, get (`show_secrets`), an increasing version that gates
//!   `min_secrets_version` (412 when ahead); machines boot with the app's secrets in their environment,
//!   and `KILOCLAW_ENC_*` values are decrypted with `KILOCLAW_ENV_KEY` as the image does ([`image`]); a
//!   machine whose environment cannot be decrypted stops right after booting (exit code 1).
//! - Auth: `Bearer X`, `FlyV1 X`, `Bearer FlyV1 X`; 401 `{"error":"invalid token"}`.
//! - Rate limits (off by default): 1 req/s burst 3 per action and machine/app (the org listing per org),
//!   gets 5 req/s burst 10, app deletions 100/min; 429 with `Retry-After: 1`.
//! - Observation: a request log of the latest 10,000 Machines API requests and per-operation/status
//!   counters ([`admin`]); bulk fleet seeding for benchmarks ([`fleet`]).
//! - Proxy and gateway stand-in: see [`proxy`] and [`gateway`]; `fly-request-id` on every response.
//! - Faults: per-endpoint errors, latency, hung requests, capacity, errors after the effect, lost machines
//!   and volumes, a process exit, and a seeded random profile ([`faults`]).
//! - Persistence: optional `state.json` plus volume directories in [`SimConfig::state_dir`].
//!
//! # Not modelled
//!
//! Leases and nonces, suspend/resume, restart/signal, cordon, metadata endpoints, machine versions
//! listing, `from_event_id`, `/ps`, org-wide volume listing, org membership (orgs are not objects of
//! their own), `summary` on the per-app machine listing, volume extend/update, fork states
//! (`hydrating`), `require_unique_zone`, `fly-replay`, autostop, health checks, TLS, the 6PN network,
//! real containers or images (any image boots; only the start script's env decryption is modelled, see
//! [`image`]), the rest of OpenClaw's protocol after the handshake (frames are echoed).
//!
//! # Choices where Fly's behaviour is unconfirmed
//!
//! Start of a started machine → 200 no-op; stop of a stopped/created machine → 200 no-op; every start
//! (not only update) issues a new `instance_id`; waiting with an `instance_id` that is not current → 400;
//! update of a stopped machine leaves it stopped unless configured otherwise; machine names are not
//! unique; an existing IP type → 422; unknown secrets on delete → 404; app delete stops and removes
//! running machines without `force`; the proxy's 502 (unknown machine)
//! and 503 (not running, autostart off) bodies are plain text.

pub mod admin;
mod api;
pub mod config;
pub mod error;
pub mod exec;
pub mod faults;
pub mod fleet;
pub mod gateway;
mod ids;
pub mod image;
mod persist;
pub mod proxy;
mod ratelimit;
mod sim;
pub mod state;
pub mod transport;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use admin::SimAdmin;
pub use config::{Delays, RegionConfig, SimConfig, default_regions};
pub use faults::{ChaosProfile, FaultEffect, FaultRule};
pub use fleet::{FleetSeed, SeedInstance, SeedState, SeededInstance};
pub use sim::{RequestRecord, RequestStats};
pub use transport::BlockingTransport;

use crate::sim::SimState;

/// Entry point.
#[derive(Debug)]
pub struct Simulator;

/// A running simulator. Dropping it without [`SimHandle::shutdown`] aborts the servers.
#[derive(Debug)]
pub struct SimHandle {
    api_addr: SocketAddr,
    proxy_addr: SocketAddr,
    admin: SimAdmin,
    stop: Vec<oneshot::Sender<()>>,
    servers: Vec<JoinHandle<()>>,
}

impl Simulator {
    /// Binds the listeners and starts serving on the current tokio runtime.
    pub async fn start(config: SimConfig) -> io::Result<SimHandle> {
        let sim = Arc::new(SimState::new(&config)?);
        let admin = SimAdmin::new(Arc::clone(&sim));
        let main_app = main_router(Arc::clone(&sim), admin.clone());
        let listener = TcpListener::bind(config.listen).await?;
        let api_addr = listener.local_addr()?;
        let mut stop = Vec::new();
        let mut servers = Vec::new();
        let (tx, rx) = oneshot::channel();
        stop.push(tx);
        servers.push(tokio::spawn(serve(listener, main_app, rx)));
        let proxy_addr = match config.proxy_listen {
            Some(addr) => {
                let listener = TcpListener::bind(addr).await?;
                let proxy_addr = listener.local_addr()?;
                let proxy_sim = Arc::clone(&sim);
                let proxy_app = Router::new().fallback(move |request: Request| {
                    proxy::handle(Arc::clone(&proxy_sim), request)
                });
                let (tx, rx) = oneshot::channel();
                stop.push(tx);
                servers.push(tokio::spawn(serve(listener, proxy_app, rx)));
                proxy_addr
            }
            None => api_addr,
        };
        tracing::info!(tag = "flysim", action = "started", api = %api_addr, proxy = %proxy_addr);
        Ok(SimHandle {
            api_addr,
            proxy_addr,
            admin,
            stop,
            servers,
        })
    }

    /// Runs the simulator on a thread of its own (own runtime), for synchronous callers and tests.
    pub fn start_blocking(config: SimConfig) -> io::Result<BlockingSim> {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("flysim".to_owned())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(err) => {
                        let _ = ready_tx.send(Err(err));
                        return;
                    }
                };
                runtime.block_on(async move {
                    match Simulator::start(config).await {
                        Ok(handle) => {
                            let info =
                                (handle.api_url(), handle.proxy_url(), handle.admin().clone());
                            let _ = ready_tx.send(Ok(info));
                            let _ = stop_rx.await;
                            handle.shutdown().await;
                        }
                        Err(err) => {
                            let _ = ready_tx.send(Err(err));
                        }
                    }
                });
            })?;
        let (api_url, proxy_url, admin) = ready_rx
            .recv()
            .map_err(|_| io::Error::other("simulator thread exited before it was ready"))??;
        Ok(BlockingSim {
            api_url,
            proxy_url,
            admin,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }
}

impl SimHandle {
    /// Base URL for the Machines API client (without `/v1`).
    pub fn api_url(&self) -> String {
        format!("http://{}", self.api_addr)
    }

    /// Base URL the control plane forwards user traffic to (with `fly-force-instance-id`).
    pub fn proxy_url(&self) -> String {
        format!("http://{}", self.proxy_addr)
    }

    pub fn api_addr(&self) -> SocketAddr {
        self.api_addr
    }

    pub fn proxy_addr(&self) -> SocketAddr {
        self.proxy_addr
    }

    pub fn admin(&self) -> &SimAdmin {
        &self.admin
    }

    /// Stops accepting, gives in-flight requests a moment, then aborts long polls and WebSockets.
    pub async fn shutdown(mut self) {
        for stop in self.stop.drain(..) {
            let _ = stop.send(());
        }
        for server in self.servers.drain(..) {
            let abort = server.abort_handle();
            if tokio::time::timeout(Duration::from_millis(500), server)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        for server in &self.servers {
            server.abort();
        }
    }
}

/// A simulator on its own thread; stops when dropped.
#[derive(Debug)]
pub struct BlockingSim {
    api_url: String,
    proxy_url: String,
    admin: SimAdmin,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl BlockingSim {
    pub fn api_url(&self) -> &str {
        &self.api_url
    }

    pub fn proxy_url(&self) -> &str {
        &self.proxy_url
    }

    pub fn admin(&self) -> &SimAdmin {
        &self.admin
    }
}

impl Drop for BlockingSim {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// `kiloclaw fly-sim --listen ADDR`: serves until Ctrl-C. Prints `kiloclaw fly-sim: ready on URL` once
/// it accepts requests.
pub async fn run_standalone(config: SimConfig) -> io::Result<()> {
    run_until(config, async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!(tag = "flysim", reason = "signal_failed", error = %err);
        }
    })
    .await
}

/// Serves until `shutdown` completes.
pub async fn run_until(config: SimConfig, shutdown: impl Future<Output = ()>) -> io::Result<()> {
    let handle = Simulator::start(config).await?;
    println!(
        "kiloclaw fly-sim: ready on {} (Machines API under /v1, proxy by fly-force-instance-id, admin under /_sim)",
        handle.api_url()
    );
    shutdown.await;
    handle.shutdown().await;
    Ok(())
}

fn main_router(sim: Arc<SimState>, admin: SimAdmin) -> Router {
    api::router(Arc::clone(&sim))
        .merge(admin::router(admin))
        .layer(middleware::from_fn_with_state(sim, dispatch))
}

/// Sends proxied requests (forced instance or `{app}.localhost` host) to the proxy before routing.
async fn dispatch(State(sim): State<Arc<SimState>>, request: Request, next: Next) -> Response {
    if proxy::is_proxied(request.headers()) {
        proxy::handle(sim, request).await
    } else {
        next.run(request).await
    }
}

async fn serve(listener: TcpListener, app: Router, stop: oneshot::Receiver<()>) {
    let service = app.into_make_service_with_connect_info::<SocketAddr>();
    let result = axum::serve(listener, service)
        .with_graceful_shutdown(async move {
            let _ = stop.await;
        })
        .await;
    if let Err(err) = result {
        tracing::error!(tag = "flysim", reason = "server_failed", error = %err);
    }
}
