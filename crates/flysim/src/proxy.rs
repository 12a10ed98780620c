//! Fly Proxy stand-in. A request reaches a machine's gateway stand-in when it carries
//! `fly-force-instance-id: <machine id>` (how the control plane's router addresses machines), or when its
//! host is `{app}.localhost[:port]` (how a browser opens the per-app WebSocket directly).
//!
//! Like Fly: a forced instance is never replaced by another machine; a stopped machine is started first
//! when its services allow autostart (the field omitted counts as allowed), otherwise the client gets a
//! proxy-generated 503; an unknown machine gets a 502. Bodies of those errors are plain text (Fly's are
//! not JSON; exact text unconfirmed).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, FromRequestParts, Request, WebSocketUpgrade};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use kiloclaw_core::fly::MachineState;

use crate::gateway;
use crate::ids;
use crate::sim::SimState;
use crate::state::World;

pub const FORCE_INSTANCE_HEADER: &str = "fly-force-instance-id";

/// How long the proxy waits for a machine it auto-started.
const AUTOSTART_WAIT: Duration = Duration::from_secs(15);

/// The machine a proxied request lands on.
#[derive(Debug, Clone)]
pub struct Target {
    pub machine_id: String,
    pub app: String,
    pub region: String,
    pub instance_id: String,
    /// `OPENCLAW_GATEWAY_TOKEN` from the environment the machine booted with.
    pub gateway_token: Option<String>,
    /// The environment the gateway process got: after the image's start script decrypted the
    /// `KILOCLAW_ENC_*` values and removed the key ([`crate::image`]).
    pub environment: BTreeMap<String, String>,
    /// The attached volume's directory, if the machine mounts a live volume.
    pub volume_dir: Option<PathBuf>,
}

/// The app named by a `{app}.localhost[:port]` host, if any.
pub fn app_from_host(headers: &HeaderMap) -> Option<String> {
    let host = headers.get("host")?.to_str().ok()?;
    let name = host.rsplit_once(':').map_or(host, |(name, _)| name);
    let app = name.strip_suffix(".localhost")?;
    (!app.is_empty() && !app.contains('.')).then(|| app.to_owned())
}

/// Whether the main listener should hand this request to the proxy.
pub fn is_proxied(headers: &HeaderMap) -> bool {
    headers.contains_key(FORCE_INSTANCE_HEADER) || app_from_host(headers).is_some()
}

enum Resolution {
    Ready(Target),
    Start(String, String),
    Fail(StatusCode, String),
}

fn resolve(
    world: &World,
    sim: &SimState,
    forced: Option<&str>,
    host_app: Option<&str>,
) -> Resolution {
    let candidate = match forced {
        Some(id) => match world.machines.get(id) {
            Some(machine)
                if host_app.is_none_or(|app| app == machine.app)
                    && machine.state != MachineState::Destroyed =>
            {
                machine
            }
            _ => {
                return Resolution::Fail(
                    StatusCode::BAD_GATEWAY,
                    format!("PR02 machine {id} not found\n"),
                );
            }
        },
        None => {
            let Some(app) = host_app else {
                return Resolution::Fail(
                    StatusCode::NOT_FOUND,
                    "no app for this host\n".to_owned(),
                );
            };
            let best = world
                .machines
                .values()
                .filter(|m| m.app == app && m.state != MachineState::Destroyed)
                .min_by_key(|m| (m.state != MachineState::Started, m.created_at.clone()));
            match best {
                Some(machine) => machine,
                None => {
                    return Resolution::Fail(
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!(
                            "PR04 could not find a good candidate: app {app} has no machines\n"
                        ),
                    );
                }
            }
        }
    };
    match candidate.state {
        MachineState::Started => {
            let volume_dir = candidate
                .config
                .mounts
                .first()
                .filter(|mount| {
                    world
                        .volumes
                        .get(&mount.volume)
                        .is_some_and(|v| !v.state.is_deleted())
                })
                .map(|mount| sim.volume_dir(&mount.volume));
            Resolution::Ready(Target {
                machine_id: candidate.id.clone(),
                app: candidate.app.clone(),
                region: candidate.region.clone(),
                instance_id: candidate.instance_id.clone(),
                gateway_token: candidate.boot_env.get("OPENCLAW_GATEWAY_TOKEN").cloned(),
                environment: candidate.boot_env.clone(),
                volume_dir,
            })
        }
        MachineState::Stopped | MachineState::Suspended | MachineState::Created
            if candidate
                .config
                .services
                .iter()
                .all(|s| s.autostart != Some(false)) =>
        {
            Resolution::Start(candidate.app.clone(), candidate.id.clone())
        }
        MachineState::Starting | MachineState::Replacing => {
            Resolution::Start(String::new(), candidate.id.clone())
        }
        ref state => Resolution::Fail(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "PR03 could not find a good candidate: machine {} is {state}\n",
                candidate.id
            ),
        ),
    }
}

/// Waits until `resolve` gives a target (autostarting once), or fails.
async fn locate(
    sim: &Arc<SimState>,
    forced: Option<&str>,
    host_app: Option<&str>,
) -> Result<Target, Response> {
    let deadline = tokio::time::Instant::now() + AUTOSTART_WAIT;
    let mut changes = sim.subscribe();
    let mut started = false;
    loop {
        changes.borrow_and_update();
        match sim.read(|world| resolve(world, sim, forced, host_app)) {
            Resolution::Ready(target) => return Ok(target),
            Resolution::Fail(status, text) => return Err(proxy_error(status, text)),
            Resolution::Start(app, machine_id) => {
                if !started && !app.is_empty() {
                    started = true;
                    let delays = sim.delays();
                    match sim.write(|world| world.start_machine(&app, &machine_id, &delays)) {
                        Ok((_, steps)) => {
                            tracing::info!(tag = "flysim", action = "proxy_autostart", machine_id = %machine_id);
                            sim.schedule(steps);
                        }
                        Err(err) => {
                            return Err(proxy_error(
                                StatusCode::SERVICE_UNAVAILABLE,
                                format!(
                                    "PM01 failed to start machine {machine_id}: {}\n",
                                    err.message
                                ),
                            ));
                        }
                    }
                }
                tokio::select! {
                    _ = changes.changed() => {}
                    () = tokio::time::sleep_until(deadline) => {
                        return Err(proxy_error(
                            StatusCode::SERVICE_UNAVAILABLE,
                            format!("PM05 failed to connect to machine {machine_id}: gave up waiting for it to start\n"),
                        ));
                    }
                }
            }
        }
    }
}

fn proxy_error(status: StatusCode, text: String) -> Response {
    let mut response = (
        status,
        [("content-type", "text/plain; charset=utf-8")],
        text,
    )
        .into_response();
    decorate(&mut response, "sim");
    response
}

fn decorate(response: &mut Response, region: &str) {
    let headers = response.headers_mut();
    headers.insert("server", HeaderValue::from_static("Fly/flysim"));
    headers.insert("via", HeaderValue::from_static("1.1 fly.io"));
    if let Ok(value) = HeaderValue::from_str(&ids::request_id(region)) {
        headers.insert("fly-request-id", value);
    }
}

/// Entry point for every proxied request.
pub async fn handle(sim: Arc<SimState>, request: Request) -> Response {
    let forced = request
        .headers()
        .get(FORCE_INSTANCE_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let host_app = app_from_host(request.headers());
    let target = match locate(&sim, forced.as_deref(), host_app.as_deref()).await {
        Ok(target) => target,
        Err(response) => return response,
    };
    let client_ip = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or_else(|| "127.0.0.1".to_owned(), |info| info.0.ip().to_string());
    let (mut parts, body) = request.into_parts();
    // Fly Proxy consumes the routing header and adds its own.
    parts.headers.remove(FORCE_INSTANCE_HEADER);
    for (name, value) in [
        ("fly-client-ip", client_ip.clone()),
        ("x-forwarded-for", client_ip),
        ("x-forwarded-proto", "http".to_owned()),
        ("x-forwarded-ssl", "off".to_owned()),
        ("fly-forwarded-port", "443".to_owned()),
        ("fly-region", target.region.clone()),
        ("via", "1.1 fly.io".to_owned()),
    ] {
        if let Ok(value) = HeaderValue::from_str(&value) {
            parts.headers.insert(name, value);
        }
    }
    let is_websocket = parts
        .headers
        .get("upgrade")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let region = target.region.clone();
    let mut response = if is_websocket {
        match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
            Ok(upgrade) => {
                let sim = Arc::clone(&sim);
                upgrade
                    .on_upgrade(move |socket| gateway::websocket_session(sim, target, socket))
                    .into_response()
            }
            Err(rejection) => rejection.into_response(),
        }
    } else {
        gateway::http(&target, parts, body).await
    };
    decorate(&mut response, &region);
    response
}
