//! Inspection and fault control, in-process ([`SimAdmin`]) and over HTTP under `/_sim/` on the API
//! listener (no auth: the simulator is a local tool).
//!
//! | Method | Path | Body / effect |
//! |---|---|---|
//! | GET | `/_sim/state` | everything that exists: apps, machines, volumes, hosts (free memory), faults |
//! | GET, DELETE | `/_sim/requests` | the Machines API request log (operation, status, fault; the latest 10,000 requests) / clear it |
//! | GET, DELETE | `/_sim/stats` | `{"requests": {"<operation>": {"<status>": count}}}`: every Machines API request counted by the request log's operation names (`unknown` for unrouted paths) / reset |
//! | GET, POST, DELETE | `/_sim/faults` | list / add a [`FaultRule`] (returns `{"id"}`) / clear all |
//! | DELETE | `/_sim/faults/{id}` | remove one rule |
//! | PUT, DELETE | `/_sim/chaos` | set / clear the seeded [`ChaosProfile`] |
//! | PUT | `/_sim/rate-limits` | `{"enabled": bool}` |
//! | GET, PUT | `/_sim/delays` | lifecycle [`Delays`] in milliseconds (PUT: only the given fields) |
//! | PUT | `/_sim/update-policy` | `{"starts_stopped_machine": bool}` |
//! | PUT | `/_sim/hosts/{zone}` | `{"memory_mb": n}`: one host's RAM (0 = full) |
//! | PUT | `/_sim/regions/{code}` | `{"memory_mb": n}`: RAM of every host in the region |
//! | POST | `/_sim/apps` | `{"name", "org_slug"}`: create an app without the API |
//! | POST | `/_sim/machines/{id}/exit` | `{"exit_code"?}`: the machine's process exits (→ `stopped`) |
//! | POST | `/_sim/fleet` | `{"org_slug", "region"?, "instances": [{"app", "user_id", "state": "started"\|"stopped", "image"?, "metadata_key"?}]}`: seed apps, volumes and machines in bulk ([`crate::fleet`]) → 200 `{"instances": [{"app", "user_id", "machine_id", "volume_id"}]}` in input order |
//! | DELETE | `/_sim/machines/{id}` | lose the machine out of band (404 from then on; a `destroyed` tombstone in the org listing with `include_deleted=true`) |
//! | DELETE | `/_sim/volumes/{id}` | lose the volume and its data out of band |
//! | POST | `/_sim/volumes/{id}/snapshots` | take a snapshot |

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use kiloclaw_core::fly::{Machine, Volume};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::{json_response, parse_body, parse_optional_body};
use crate::config::Delays;
use crate::error::{ApiError, ApiResult};
use crate::faults::{ChaosProfile, FaultRule};
use crate::fleet::{FleetSeed, SeededInstance};
use crate::sim::{RequestRecord, RequestStats, SimState};
use crate::state::{DataEffects, World};

/// In-process control of a running simulator.
#[derive(Debug, Clone)]
pub struct SimAdmin {
    sim: Arc<SimState>,
}

impl SimAdmin {
    pub(crate) fn new(sim: Arc<SimState>) -> Self {
        Self { sim }
    }

    /// Everything that exists, as JSON (the body of `GET /_sim/state`).
    pub fn state(&self) -> Value {
        let mut state = self.sim.read(|world| {
            let counts = world.app_counts();
            json!({
                "apps": world.apps.values().map(|a| {
                    let count = counts.get(a.name.as_str()).copied().unwrap_or_default();
                    let mut view = serde_json::to_value(World::app_view_counted(a, count)).unwrap_or(Value::Null);
                    view["secrets_version"] = json!(a.secrets_version);
                    view["secret_names"] = json!(a.secrets.keys().collect::<Vec<_>>());
                    view["ips"] = json!(a.ips);
                    view
                }).collect::<Vec<_>>(),
                "machines": world.machines.values().map(|m| {
                    let mut view = serde_json::to_value(world.machine_view(m)).unwrap_or(Value::Null);
                    view["app"] = json!(m.app);
                    view["zone"] = json!(m.zone);
                    view
                }).collect::<Vec<_>>(),
                "volumes": world.volumes.values().map(|v| {
                    let mut view = serde_json::to_value(World::volume_view(v)).unwrap_or(Value::Null);
                    view["app"] = json!(v.app);
                    view
                }).collect::<Vec<_>>(),
                "hosts": world.hosts.values().map(|h| json!({
                    "zone": h.zone, "region": h.region, "memory_mb": h.memory_mb,
                    "free_memory_mb": world.free_memory(&h.zone),
                })).collect::<Vec<_>>(),
            })
        });
        state["faults"] = json!(self.sim.faults.rules());
        state["chaos"] = json!(self.sim.faults.chaos());
        state["rate_limits"] = json!(self.sim.limiter.enabled());
        state["delays"] = json!(self.sim.delays());
        state
    }

    pub fn machines(&self) -> Vec<Machine> {
        self.sim.read(|world| {
            world
                .machines
                .values()
                .map(|m| world.machine_view(m))
                .collect()
        })
    }

    pub fn volumes(&self) -> Vec<Volume> {
        self.sim
            .read(|world| world.volumes.values().map(World::volume_view).collect())
    }

    pub fn create_app(&self, name: &str, org_slug: &str) -> Result<(), ApiError> {
        self.sim
            .write(|world| world.create_app(name, org_slug, None))
            .map(|_| ())
    }

    pub fn add_fault(&self, rule: FaultRule) -> u64 {
        self.sim.faults.add(rule)
    }

    pub fn remove_fault(&self, id: u64) -> bool {
        self.sim.faults.remove(id)
    }

    pub fn clear_faults(&self) {
        self.sim.faults.clear();
    }

    pub fn set_chaos(&self, profile: Option<ChaosProfile>) {
        self.sim.faults.set_chaos(profile);
    }

    pub fn set_rate_limits(&self, enabled: bool) {
        self.sim.limiter.set_enabled(enabled);
    }

    pub fn delays(&self) -> Delays {
        self.sim.delays()
    }

    pub fn set_delays(&self, delays: Delays) {
        self.sim.set_delays(delays);
    }

    pub fn set_update_starts_stopped(&self, starts: bool) {
        self.sim
            .update_starts_stopped
            .store(starts, Ordering::Relaxed);
    }

    /// Sets one host's RAM; 0 makes it full.
    pub fn set_host_memory(&self, zone: &str, memory_mb: u64) -> Result<(), ApiError> {
        self.sim.write(|world| {
            let host = world.hosts.get_mut(zone).ok_or_else(|| {
                ApiError::new(StatusCode::NOT_FOUND, format!("host {zone} not found"))
            })?;
            host.memory_mb = memory_mb;
            Ok(())
        })
    }

    /// Sets the RAM of every host in a region; 0 exhausts the region.
    pub fn set_region_memory(&self, region: &str, memory_mb: u64) -> Result<(), ApiError> {
        self.sim.write(|world| {
            let mut found = false;
            for host in world.hosts.values_mut().filter(|h| h.region == region) {
                host.memory_mb = memory_mb;
                found = true;
            }
            if found {
                Ok(())
            } else {
                Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    format!("region {region} not found"),
                ))
            }
        })
    }

    /// The machine's process exits by itself: `started` → `stopped`, no API call involved.
    pub fn exit_machine(&self, machine_id: &str, exit_code: i32) -> Result<(), ApiError> {
        self.sim
            .write(|world| world.exit_machine(machine_id, exit_code))
    }

    /// The machine vanishes out of band; every call about it answers 404.
    /// The org listing with `include_deleted=true` still shows it, as `destroyed`, for
    /// [`Delays::destroyed_retention`] (see [`crate::state::LostMachine`]).
    pub fn lose_machine(&self, machine_id: &str) -> Result<(), ApiError> {
        let retention = self.sim.delays().destroyed_retention;
        self.sim
            .write(|world| world.lose_machine(machine_id, retention))
    }

    /// The volume and its data vanish out of band.
    pub fn lose_volume(&self, volume_id: &str) -> Result<(), ApiError> {
        self.sim.write(|world| {
            world
                .volumes
                .remove(volume_id)
                .map(|_| ())
                .ok_or_else(ApiError::volume_not_found)
        })?;
        self.sim.apply_effects(DataEffects {
            remove_volume_dirs: vec![volume_id.to_owned()],
            copy_volume_dir: None,
        });
        Ok(())
    }

    pub fn snapshot_volume(&self, volume_id: &str) -> Result<(), ApiError> {
        self.sim.write(|world| {
            let app = world
                .volumes
                .get(volume_id)
                .map(|v| v.app.clone())
                .ok_or_else(ApiError::volume_not_found)?;
            world.snapshot_volume(&app, volume_id).map(|_| ())
        })
    }

    /// Where a volume's data lives on disk.
    pub fn volume_dir(&self, volume_id: &str) -> PathBuf {
        self.sim.volume_dir(volume_id)
    }

    pub fn requests(&self) -> Vec<RequestRecord> {
        self.sim.requests()
    }

    pub fn clear_requests(&self) {
        self.sim.clear_requests();
    }

    /// Machines API requests by operation and status, since the start or the last reset.
    pub fn request_stats(&self) -> RequestStats {
        self.sim.request_stats()
    }

    pub fn clear_request_stats(&self) {
        self.sim.clear_request_stats();
    }

    /// Seeds apps, volumes and machines in bulk (see [`crate::fleet`]); all or nothing.
    pub fn seed_fleet(&self, seed: &FleetSeed) -> Result<Vec<SeededInstance>, ApiError> {
        self.sim.write(|world| world.seed_fleet(seed))
    }
}

/// Room for a fleet of 100,000+ instances in one request (axum's default is 2 MB).
const FLEET_BODY_LIMIT: usize = 256 * 1024 * 1024;

type Admin = State<SimAdmin>;

pub fn router(admin: SimAdmin) -> Router {
    Router::new()
        .route(
            "/_sim/state",
            get(|State(a): Admin| async move { axum::Json(a.state()) }),
        )
        .route(
            "/_sim/requests",
            get(|State(a): Admin| async move { axum::Json(a.requests()) }).delete(
                |State(a): Admin| async move {
                    a.clear_requests();
                    StatusCode::NO_CONTENT
                },
            ),
        )
        .route(
            "/_sim/faults",
            get(list_faults).post(add_fault).delete(clear_faults),
        )
        .route("/_sim/faults/{id}", delete(remove_fault))
        .route("/_sim/chaos", put(set_chaos).delete(clear_chaos))
        .route("/_sim/rate-limits", put(set_rate_limits))
        .route(
            "/_sim/delays",
            get(|State(a): Admin| async move { axum::Json(a.delays()) }).put(set_delays),
        )
        .route("/_sim/update-policy", put(set_update_policy))
        .route("/_sim/hosts/{zone}", put(set_host))
        .route("/_sim/regions/{code}", put(set_region))
        .route("/_sim/apps", post(create_app))
        .route(
            "/_sim/stats",
            get(
                |State(a): Admin| async move { axum::Json(json!({"requests": a.request_stats()})) },
            )
            .delete(|State(a): Admin| async move {
                a.clear_request_stats();
                StatusCode::NO_CONTENT
            }),
        )
        .route(
            "/_sim/fleet",
            post(seed_fleet).layer(DefaultBodyLimit::max(FLEET_BODY_LIMIT)),
        )
        .route("/_sim/machines/{id}/exit", post(exit_machine))
        .route("/_sim/machines/{id}", delete(lose_machine))
        .route("/_sim/volumes/{id}", delete(lose_volume))
        .route("/_sim/volumes/{id}/snapshots", post(snapshot_volume))
        .with_state(admin)
}

fn done() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

async fn list_faults(State(admin): Admin) -> Response {
    json_response(StatusCode::OK, &admin.sim.faults.rules())
}

async fn add_fault(State(admin): Admin, body: Bytes) -> ApiResult<Response> {
    let rule: FaultRule = parse_body(&body)?;
    let id = admin.add_fault(rule);
    Ok(json_response(StatusCode::CREATED, &json!({"id": id})))
}

async fn clear_faults(State(admin): Admin) -> Response {
    admin.clear_faults();
    done()
}

async fn remove_fault(State(admin): Admin, Path(id): Path<u64>) -> ApiResult<Response> {
    if admin.remove_fault(id) {
        Ok(done())
    } else {
        Err(ApiError::new(StatusCode::NOT_FOUND, "fault not found"))
    }
}

async fn set_chaos(State(admin): Admin, body: Bytes) -> ApiResult<Response> {
    let profile: ChaosProfile = parse_body(&body)?;
    admin.set_chaos(Some(profile));
    Ok(done())
}

async fn clear_chaos(State(admin): Admin) -> Response {
    admin.set_chaos(None);
    done()
}

#[derive(Deserialize)]
struct Enabled {
    enabled: bool,
}

async fn set_rate_limits(State(admin): Admin, body: Bytes) -> ApiResult<Response> {
    let request: Enabled = parse_body(&body)?;
    admin.set_rate_limits(request.enabled);
    Ok(done())
}

/// Fields left out keep their current value.
async fn set_delays(State(admin): Admin, body: Bytes) -> ApiResult<Response> {
    let patch: Value = parse_body(&body)?;
    let Value::Object(patch) = patch else {
        return Err(ApiError::bad_request(
            "delays must be a JSON object of milliseconds",
        ));
    };
    let mut current = serde_json::to_value(admin.delays()).unwrap_or_else(|_| json!({}));
    for (key, value) in patch {
        if current.get(&key).is_none() {
            return Err(ApiError::bad_request(format!("unknown delay \"{key}\"")));
        }
        current[key.as_str()] = value;
    }
    let delays: Delays = serde_json::from_value(current)
        .map_err(|err| ApiError::bad_request(format!("invalid delays: {err}")))?;
    admin.set_delays(delays);
    Ok(done())
}

#[derive(Deserialize)]
struct UpdatePolicy {
    starts_stopped_machine: bool,
}

async fn set_update_policy(State(admin): Admin, body: Bytes) -> ApiResult<Response> {
    let policy: UpdatePolicy = parse_body(&body)?;
    admin.set_update_starts_stopped(policy.starts_stopped_machine);
    Ok(done())
}

#[derive(Deserialize)]
struct Memory {
    memory_mb: u64,
}

async fn set_host(
    State(admin): Admin,
    Path(zone): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let memory: Memory = parse_body(&body)?;
    admin.set_host_memory(&zone, memory.memory_mb)?;
    Ok(done())
}

async fn set_region(
    State(admin): Admin,
    Path(code): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let memory: Memory = parse_body(&body)?;
    admin.set_region_memory(&code, memory.memory_mb)?;
    Ok(done())
}

#[derive(Deserialize)]
struct NewApp {
    name: String,
    org_slug: String,
}

async fn create_app(State(admin): Admin, body: Bytes) -> ApiResult<Response> {
    let app: NewApp = parse_body(&body)?;
    admin.create_app(&app.name, &app.org_slug)?;
    Ok(StatusCode::CREATED.into_response())
}

#[derive(Deserialize, Default)]
struct Exit {
    #[serde(default)]
    exit_code: i32,
}

async fn exit_machine(
    State(admin): Admin,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let exit: Exit = parse_optional_body(&body)?;
    admin.exit_machine(&id, exit.exit_code)?;
    Ok(done())
}

async fn seed_fleet(State(admin): Admin, body: Bytes) -> ApiResult<Response> {
    let seed: FleetSeed = parse_body(&body)?;
    let instances = admin.seed_fleet(&seed)?;
    tracing::info!(tag = "flysim", action = "seed_fleet", org = %seed.org_slug, instances = instances.len());
    Ok(json_response(
        StatusCode::OK,
        &json!({"instances": instances}),
    ))
}

async fn lose_machine(State(admin): Admin, Path(id): Path<String>) -> ApiResult<Response> {
    admin.lose_machine(&id)?;
    Ok(done())
}

async fn lose_volume(State(admin): Admin, Path(id): Path<String>) -> ApiResult<Response> {
    admin.lose_volume(&id)?;
    Ok(done())
}

async fn snapshot_volume(State(admin): Admin, Path(id): Path<String>) -> ApiResult<Response> {
    admin.snapshot_volume(&id)?;
    Ok(StatusCode::CREATED.into_response())
}
