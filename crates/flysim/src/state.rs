//! The simulated world (apps, machines, volumes, hosts) and every state transition, as synchronous
//! functions under one lock. Operations return the follow-up steps they schedule; `lifecycle` runs them
//! on timers. A step carries the machine's `generation` at scheduling time and is dropped when a later
//! action changed the machine first, so stale timers never undo newer actions.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::StatusCode;
use kiloclaw_core::fly::{
    App, AppOrganization, CreateMachineRequest, GuestConfig, IpAssignment, Machine, MachineConfig,
    MachineEvent, MachineState, UpdateMachineRequest, Volume, VolumeSnapshot, VolumeState,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::config::{Delays, RegionConfig, region_alias};
use crate::error::{ApiError, ApiResult};
use crate::ids;

/// Fly's default guest memory when a config has no `guest`.
const DEFAULT_MEMORY_MB: u64 = 256;
const MAX_EVENTS: usize = 20;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Host {
    pub zone: String,
    pub region: String,
    pub memory_mb: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SecretRec {
    pub value: String,
    pub digest: String,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AppRec {
    pub id: String,
    pub name: String,
    pub org_slug: String,
    pub network: Option<String>,
    pub created_at_ms: u64,
    pub secrets: BTreeMap<String, SecretRec>,
    pub secrets_version: u64,
    pub ips: Vec<IpAssignment>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MachineRec {
    pub id: String,
    pub app: String,
    /// The app's org (apps never change org): lets the org listing pick an org's machines with a string
    /// comparison instead of an app lookup per machine. Filled from the app for states saved without it.
    #[serde(default)]
    pub org_slug: String,
    pub name: String,
    pub region: String,
    pub zone: String,
    pub state: MachineState,
    pub instance_id: String,
    pub config: MachineConfig,
    pub private_ip: String,
    pub created_at: String,
    pub updated_at: String,
    pub events: Vec<MachineEvent>,
    pub generation: u64,
    pub destroyed_at_ms: Option<u64>,
    /// The environment the running version booted with: config env plus the app's secrets then.
    pub boot_env: BTreeMap<String, String>,
    /// Seeded in bulk (`/_sim/fleet`): never reserves, nor needs, host memory, so a benchmark fleet of
    /// 100,000 running machines does not exhaust the simulated hosts.
    #[serde(default)]
    pub capacity_exempt: bool,
}

/// What is left of a machine lost out of band (`DELETE /_sim/machines/{id}`): every per-app call answers
/// 404 as before, but the org listing with `include_deleted=true` shows it once more as `destroyed`, with
/// `updated_at` the time it was lost, so a client watching changes learns of it. Forgotten after
/// [`Delays::destroyed_retention`] like a destroyed machine (hidden from then on, dropped on the next loss).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LostMachine {
    /// The machine as it was, with state `destroyed` and `updated_at` the time of the loss.
    pub machine: MachineRec,
    pub lost_at_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VolumeRec {
    pub id: String,
    pub app: String,
    pub name: String,
    pub region: String,
    pub zone: String,
    pub size_gb: u32,
    pub state: VolumeState,
    pub encrypted: bool,
    pub attached_machine_id: Option<String>,
    pub created_at: String,
    pub snapshot_retention: u32,
    pub snapshots: Vec<VolumeSnapshot>,
    pub deleted_at_ms: Option<u64>,
}

/// An app's live machines and volumes (for its view).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AppCounts {
    pub machines: usize,
    pub volumes: usize,
}

/// A timed follow-up of an operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scheduled {
    pub target: String,
    pub generation: u64,
    pub delay: Duration,
    pub step: Step,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// `created` → `starting`.
    Launch,
    /// `starting` → `started`.
    Boot,
    /// `stopping` → `stopped`.
    Halt,
    /// `replacing` → `starting` (then boot) or `stopped`.
    Replaced { boot: bool },
    /// `destroying` → `destroyed`.
    Destroy,
    /// Forget a destroyed machine (404 from then on).
    PurgeMachine,
    /// Clear a volume's `attached_machine_id` (target = volume id).
    DetachVolume,
    /// Forget a soft-deleted volume (target = volume id).
    PurgeVolume,
}

/// What a request did, for volume-directory housekeeping outside the lock.
#[derive(Debug, Default)]
pub struct DataEffects {
    pub remove_volume_dirs: Vec<String>,
    pub copy_volume_dir: Option<(String, String)>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct World {
    pub apps: BTreeMap<String, AppRec>,
    pub machines: BTreeMap<String, MachineRec>,
    pub volumes: BTreeMap<String, VolumeRec>,
    pub hosts: BTreeMap<String, Host>,
    pub regions: Vec<String>,
    pub next_ip: u32,
    pub delays: Option<Delays>,
    /// Tombstones of lost machines by id (absent from states saved before they existed).
    #[serde(default)]
    pub lost_machines: BTreeMap<String, LostMachine>,
}

pub fn now_ms() -> u64 {
    u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis(),
    )
    .unwrap_or(u64::MAX)
}

/// Machine `updated_at`/`created_at`: RFC 3339 in UTC with seconds, as Fly writes them. The fixed format
/// (`YYYY-MM-DDTHH:MM:SSZ`) makes string order time order, which the org listing relies on.
pub fn rfc3339_seconds() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

pub(crate) fn rfc3339_millis() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

pub(crate) fn guest_memory(config: &MachineConfig) -> u64 {
    config
        .guest
        .as_ref()
        .map(|g| u64::from(g.memory_mb))
        .filter(|m| *m > 0)
        .unwrap_or(DEFAULT_MEMORY_MB)
}

/// States in which a machine holds its guest memory on its host.
fn reserves_memory(state: &MachineState) -> bool {
    matches!(
        state,
        MachineState::Starting
            | MachineState::Started
            | MachineState::Stopping
            | MachineState::Replacing
            | MachineState::Restarting
            | MachineState::Updating
    )
}

fn insufficient_memory_on_host() -> ApiError {
    ApiError::conflict(
        "aborted: could not reserve resource for machine: insufficient memory available to fulfill request",
    )
}

pub(crate) fn valid_app_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() < 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
}

fn valid_volume_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 30
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

impl World {
    pub fn new(regions: &[RegionConfig], apps: &[(String, String)]) -> Self {
        let mut world = Self::default();
        for region in regions {
            world.regions.push(region.code.clone());
            for index in 0..region.hosts {
                let zone = format!("{:04x}", (world.hosts.len() as u32 + 1) * 0x1f3 + index);
                world.hosts.insert(
                    zone.clone(),
                    Host {
                        zone,
                        region: region.code.clone(),
                        memory_mb: region.host_memory_mb,
                    },
                );
            }
        }
        for (name, org) in apps {
            world.insert_app(name, org, None);
        }
        world
    }

    /// Makes sure the configured apps exist (after loading a saved world).
    pub fn ensure_apps(&mut self, apps: &[(String, String)]) {
        for (name, org) in apps {
            self.insert_app(name, org, None);
        }
    }

    // ---------------------------------------------------------------- capacity

    pub fn free_memory(&self, zone: &str) -> u64 {
        let capacity = self.hosts.get(zone).map_or(0, |h| h.memory_mb);
        let reserved: u64 = self
            .machines
            .values()
            .filter(|m| m.zone == zone && !m.capacity_exempt && reserves_memory(&m.state))
            .map(|m| guest_memory(&m.config))
            .sum();
        capacity.saturating_sub(reserved)
    }

    fn regions_for(&self, requested: Option<&str>) -> ApiResult<Vec<String>> {
        let Some(requested) = requested.map(str::trim).filter(|r| !r.is_empty()) else {
            return Ok(self.regions.iter().take(1).cloned().collect());
        };
        let mut out: Vec<String> = Vec::new();
        for part in requested
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
        {
            let codes: Vec<String> = match region_alias(part) {
                Some(list) => list
                    .iter()
                    .map(|c| (*c).to_owned())
                    .filter(|c| self.regions.contains(c))
                    .collect(),
                None if self.regions.iter().any(|r| r == part) => vec![part.to_owned()],
                None => return Err(ApiError::bad_request(format!("invalid region \"{part}\""))),
            };
            for code in codes {
                if !out.contains(&code) {
                    out.push(code);
                }
            }
        }
        Ok(out)
    }

    /// The host with the most free memory among `regions` (in order) that fits `memory_mb`.
    fn place(&self, regions: &[String], memory_mb: u64) -> Option<&Host> {
        regions.iter().find_map(|region| {
            self.hosts
                .values()
                .filter(|h| &h.region == region)
                .filter(|h| self.free_memory(&h.zone) >= memory_mb)
                .max_by_key(|h| self.free_memory(&h.zone))
        })
    }

    // ---------------------------------------------------------------- apps

    pub(crate) fn insert_app(&mut self, name: &str, org: &str, network: Option<String>) -> &AppRec {
        self.apps.entry(name.to_owned()).or_insert_with(|| AppRec {
            id: ids::app_id(),
            name: name.to_owned(),
            org_slug: org.to_owned(),
            network,
            created_at_ms: now_ms(),
            secrets: BTreeMap::new(),
            secrets_version: 0,
            ips: Vec::new(),
        })
    }

    pub fn app(&self, name: &str) -> ApiResult<&AppRec> {
        self.apps.get(name).ok_or_else(ApiError::app_not_found)
    }

    pub fn app_mut(&mut self, name: &str) -> ApiResult<&mut AppRec> {
        self.apps.get_mut(name).ok_or_else(ApiError::app_not_found)
    }

    pub fn create_app(
        &mut self,
        name: &str,
        org_slug: &str,
        network: Option<String>,
    ) -> ApiResult<Value> {
        if org_slug.is_empty() {
            return Err(ApiError::bad_request("org_slug is required"));
        }
        if !valid_app_name(name) {
            return Err(ApiError::unprocessable(
                "Validation failed: Name under 63 chars using numbers, lowercase letters and dashes",
            ));
        }
        if self.apps.contains_key(name) {
            return Err(
                ApiError::unprocessable("Validation failed: Name has already been taken")
                    .with_code("name_taken"),
            );
        }
        let app = self.insert_app(name, org_slug, network);
        Ok(json!({"id": app.id, "created_at": app.created_at_ms}))
    }

    pub fn app_view(&self, app: &AppRec) -> App {
        let machine_count = self
            .machines
            .values()
            .filter(|m| m.app == app.name && !m.state.is_gone())
            .count();
        let volume_count = self
            .volumes
            .values()
            .filter(|v| v.app == app.name && !v.state.is_deleted())
            .count();
        Self::app_view_counted(
            app,
            AppCounts {
                machines: machine_count,
                volumes: volume_count,
            },
        )
    }

    /// Live machines and volumes of every app in one pass, so listing many apps stays linear (a
    /// benchmark fleet has 100,000 apps; counting per app would be quadratic).
    pub fn app_counts(&self) -> HashMap<&str, AppCounts> {
        let mut counts: HashMap<&str, AppCounts> = HashMap::new();
        for machine in self.machines.values().filter(|m| !m.state.is_gone()) {
            counts.entry(machine.app.as_str()).or_default().machines += 1;
        }
        for volume in self.volumes.values().filter(|v| !v.state.is_deleted()) {
            counts.entry(volume.app.as_str()).or_default().volumes += 1;
        }
        counts
    }

    pub fn app_view_counted(app: &AppRec, counts: AppCounts) -> App {
        let AppCounts {
            machines: machine_count,
            volumes: volume_count,
        } = counts;
        App {
            id: app.id.clone(),
            name: app.name.clone(),
            status: Some(
                if machine_count > 0 {
                    "deployed"
                } else {
                    "pending"
                }
                .to_owned(),
            ),
            organization: Some(AppOrganization {
                name: app.org_slug.clone(),
                slug: app.org_slug.clone(),
            }),
            network: app.network.clone().map(Value::String),
            machine_count: Some(machine_count as u64),
            volume_count: Some(volume_count as u64),
            extra: Map::new(),
        }
    }

    /// Deletes the app and everything in it.
    pub fn delete_app(&mut self, name: &str, effects: &mut DataEffects) -> ApiResult<()> {
        self.apps.remove(name).ok_or_else(ApiError::app_not_found)?;
        self.machines.retain(|_, m| m.app != name);
        self.lost_machines
            .retain(|_, lost| lost.machine.app != name);
        let gone: Vec<String> = self
            .volumes
            .values()
            .filter(|v| v.app == name)
            .map(|v| v.id.clone())
            .collect();
        for id in gone {
            self.volumes.remove(&id);
            effects.remove_volume_dirs.push(id);
        }
        Ok(())
    }

    pub fn allocate_ip(
        &mut self,
        app_name: &str,
        kind: &str,
        network: Option<String>,
    ) -> ApiResult<IpAssignment> {
        self.next_ip += 1;
        let n = self.next_ip;
        let app = self.app_mut(app_name)?;
        let (ip, shared) = match kind {
            "v6" => (format!("2a09:8280:1::{n:x}"), false),
            "v4" => (format!("137.66.{}.{}", n / 250, n % 250 + 1), false),
            "shared_v4" => ("66.241.124.11".to_owned(), true),
            "private_v6" => (format!("fdaa:0:18:0:1::{n:x}"), false),
            "egress_v4" => (format!("149.248.{}.{}", n / 250, n % 250 + 1), false),
            "egress_v6" => (format!("2605:4c40:1::{n:x}"), false),
            other => {
                return Err(ApiError::bad_request(format!(
                    "invalid ip type \"{other}\""
                )));
            }
        };
        let exists = app.ips.iter().any(|existing| {
            existing.extra.get("type").and_then(Value::as_str) == Some(kind)
                && (kind != "private_v6"
                    || existing.extra.get("network").and_then(Value::as_str) == network.as_deref())
        });
        if exists {
            return Err(ApiError::unprocessable(format!(
                "app already has an IP address of type {kind}"
            )));
        }
        let mut extra = Map::new();
        extra.insert("type".to_owned(), json!(kind));
        extra.insert("egress".to_owned(), json!(kind.starts_with("egress")));
        if let Some(network) = network.filter(|_| kind == "private_v6") {
            extra.insert("network".to_owned(), json!(network));
        }
        let assignment = IpAssignment {
            ip: Some(ip),
            region: "global".to_owned(),
            service_name: String::new(),
            shared,
            created_at: rfc3339_seconds(),
            extra,
        };
        app.ips.push(assignment.clone());
        Ok(assignment)
    }

    // ---------------------------------------------------------------- secrets

    pub fn set_secrets(
        &mut self,
        app_name: &str,
        values: &BTreeMap<String, Option<String>>,
    ) -> ApiResult<u64> {
        let app = self.app_mut(app_name)?;
        let now = rfc3339_seconds();
        for (name, value) in values {
            if name.is_empty() {
                return Err(ApiError::bad_request("secret name must not be empty"));
            }
            match value {
                Some(value) => {
                    let digest =
                        hex::encode(&<sha2::Sha256 as sha2::Digest>::digest(value.as_bytes())[..8]);
                    let created_at = app
                        .secrets
                        .get(name)
                        .map_or_else(|| now.clone(), |s| s.created_at.clone());
                    app.secrets.insert(
                        name.clone(),
                        SecretRec {
                            value: value.clone(),
                            digest,
                            created_at,
                            updated_at: now.clone(),
                        },
                    );
                }
                None => {
                    app.secrets.remove(name);
                }
            }
        }
        app.secrets_version += 1;
        Ok(app.secrets_version)
    }

    // ---------------------------------------------------------------- machines

    pub fn machine(&self, app: &str, id: &str) -> ApiResult<&MachineRec> {
        self.app(app)?;
        self.machines
            .get(id)
            .filter(|m| m.app == app)
            .ok_or_else(ApiError::machine_not_found)
    }

    fn live_machine_mut(&mut self, app: &str, id: &str) -> ApiResult<&mut MachineRec> {
        self.app(app)?;
        self.machines
            .get_mut(id)
            .filter(|m| m.app == app && m.state != MachineState::Destroyed)
            .ok_or_else(ApiError::machine_not_found)
    }

    pub fn machine_view(&self, machine: &MachineRec) -> Machine {
        Machine {
            id: machine.id.clone(),
            name: machine.name.clone(),
            state: machine.state.clone(),
            region: machine.region.clone(),
            instance_id: machine.instance_id.clone(),
            version: Some(machine.instance_id.clone()),
            private_ip: Some(machine.private_ip.clone()),
            config: Some(machine.config.clone()),
            created_at: machine.created_at.clone(),
            updated_at: machine.updated_at.clone(),
            events: machine.events.clone(),
            extra: {
                let mut extra = Map::new();
                extra.insert("host_status".to_owned(), json!("ok"));
                extra.insert("cordoned".to_owned(), json!(false));
                extra
            },
        }
    }

    /// Validates the single mount: the volume exists in this app, is not deleted, and is free.
    fn check_mount(
        &self,
        app: &str,
        config: &MachineConfig,
        machine_id: Option<&str>,
    ) -> ApiResult<Option<String>> {
        match config.mounts.as_slice() {
            [] => Ok(None),
            [mount] => {
                let volume = self
                    .volumes
                    .get(&mount.volume)
                    .filter(|v| v.app == app && !v.state.is_deleted())
                    .ok_or_else(|| ApiError::bad_request("volume not found"))?;
                if let Some(holder) = &volume.attached_machine_id
                    && Some(holder.as_str()) != machine_id
                {
                    return Err(ApiError::precondition(format!(
                        "failed_precondition: volume {} is already attached to machine {holder}",
                        volume.id
                    )));
                }
                Ok(Some(volume.id.clone()))
            }
            _ => Err(ApiError::bad_request(
                "only one volume can be mounted per machine",
            )),
        }
    }

    fn check_secrets_version(&self, app: &str, min: Option<u64>) -> ApiResult<()> {
        let current = self.app(app)?.secrets_version;
        match min {
            Some(min) if min > current => Err(ApiError::precondition(format!(
                "min_secrets_version {min} is not yet available on this app"
            ))),
            _ => Ok(()),
        }
    }

    pub fn create_machine(
        &mut self,
        app: &str,
        request: &CreateMachineRequest,
        delays: &Delays,
    ) -> ApiResult<(Machine, Vec<Scheduled>)> {
        self.app(app)?;
        if request.config.image.trim().is_empty() {
            return Err(ApiError::bad_request("config.image is required"));
        }
        self.check_secrets_version(app, request.min_secrets_version)?;
        let launch = !request.skip_launch.unwrap_or(false);
        let memory = guest_memory(&request.config);
        let needed = if launch { memory } else { 0 };
        let (region, zone) = match self.check_mount(app, &request.config, None)? {
            Some(volume_id) => {
                let volume = &self.volumes[&volume_id];
                if self.free_memory(&volume.zone) < needed {
                    return Err(ApiError::precondition(format!(
                        "insufficient resources to create new machine with existing volume '{volume_id}'"
                    ))
                    .with_code("volume_placement_capacity"));
                }
                (volume.region.clone(), volume.zone.clone())
            }
            None => {
                let regions = self.regions_for(request.region.as_deref())?;
                let host = self.place(&regions, needed).ok_or_else(|| {
                    ApiError::precondition(
                        "aborted: insufficient resources available to fulfill request: could not reserve resource for machine: insufficient memory available to fulfill request",
                    )
                    .with_code("insufficient_capacity")
                })?;
                (host.region.clone(), host.zone.clone())
            }
        };
        let now = rfc3339_seconds();
        let id = loop {
            let candidate = ids::machine_id();
            if !self.machine_id_taken(&candidate) {
                break candidate;
            }
        };
        let org_slug = self.app(app)?.org_slug.clone();
        let machine = MachineRec {
            id: id.clone(),
            app: app.to_owned(),
            org_slug,
            name: request
                .name
                .clone()
                .filter(|n| !n.is_empty())
                .unwrap_or_else(ids::machine_name),
            region,
            zone,
            state: MachineState::Created,
            instance_id: ids::ulid(),
            config: request.config.clone(),
            private_ip: ids::private_ip(),
            created_at: now.clone(),
            updated_at: now,
            events: Vec::new(),
            generation: 1,
            destroyed_at_ms: None,
            boot_env: BTreeMap::new(),
            capacity_exempt: false,
        };
        if let Some(mount) = machine.config.mounts.first()
            && let Some(volume) = self.volumes.get_mut(&mount.volume)
        {
            volume.attached_machine_id = Some(id.clone());
        }
        self.machines.insert(id.clone(), machine);
        let machine = self
            .machines
            .get_mut(&id)
            .ok_or_else(ApiError::machine_not_found)?;
        push_event(machine, "launch", "created", "user");
        let view_source = machine.clone();
        let scheduled = if launch {
            vec![Scheduled {
                target: id,
                generation: 1,
                delay: delays.create,
                step: Step::Launch,
            }]
        } else {
            Vec::new()
        };
        Ok((self.machine_view(&view_source), scheduled))
    }

    pub fn update_machine(
        &mut self,
        app: &str,
        id: &str,
        request: &UpdateMachineRequest,
        delays: &Delays,
        update_starts_stopped: bool,
    ) -> ApiResult<(Machine, Vec<Scheduled>)> {
        if request.config.image.trim().is_empty() {
            return Err(ApiError::bad_request("config.image is required"));
        }
        self.check_secrets_version(app, request.min_secrets_version)?;
        let machine = self.machine(app, id)?;
        if machine.state.is_gone() {
            return Err(ApiError::machine_not_found());
        }
        if matches!(
            machine.state,
            MachineState::Replacing | MachineState::Updating
        ) {
            return Err(ApiError::conflict(
                "aborted: machine is replacing: concurrent update in progress",
            ));
        }
        if let Some(expected) = &request.current_version
            && expected != &machine.instance_id
        {
            return Err(ApiError::conflict(format!(
                "machine version mismatch: current_version {expected} is not the current version {}",
                machine.instance_id
            )));
        }
        let old_volume = machine.config.mounts.first().map(|m| m.volume.clone());
        let new_volume = request.config.mounts.first().map(|m| m.volume.clone());
        if old_volume != new_volume || request.config.mounts.len() > 1 {
            return Err(ApiError::bad_request(
                "the mounted volume cannot be changed by an update; destroy the machine and create a new one",
            ));
        }
        let was_running = matches!(
            machine.state,
            MachineState::Started | MachineState::Starting
        );
        let boot = !request.skip_launch.unwrap_or(false) && (was_running || update_starts_stopped);
        if boot && !machine.capacity_exempt {
            let held = if reserves_memory(&machine.state) {
                guest_memory(&machine.config)
            } else {
                0
            };
            let needed = guest_memory(&request.config);
            if self.free_memory(&machine.zone) + held < needed {
                return Err(insufficient_memory_on_host());
            }
        }
        let machine = self.live_machine_mut(app, id)?;
        machine.config = request.config.clone();
        machine.instance_id = ids::ulid();
        let scheduled = begin_user_transition(
            machine,
            id,
            ("update", MachineState::Replacing),
            delays.replace,
            Step::Replaced { boot },
        );
        let snapshot = machine.clone();
        Ok((self.machine_view(&snapshot), vec![scheduled]))
    }

    pub fn start_machine(
        &mut self,
        app: &str,
        id: &str,
        delays: &Delays,
    ) -> ApiResult<(Value, Vec<Scheduled>)> {
        let machine = self.machine(app, id)?;
        let previous = machine.state.clone();
        match previous {
            MachineState::Destroyed | MachineState::Destroying => {
                return Err(ApiError::machine_not_found());
            }
            MachineState::Started => {
                return Ok((
                    json!({"previous_state": "started", "migrated": false, "new_host": ""}),
                    Vec::new(),
                ));
            }
            MachineState::Stopped
            | MachineState::Created
            | MachineState::Suspended
            | MachineState::Failed => {}
            _ => {
                return Err(ApiError::precondition(
                    "unable to start machine from current state",
                ));
            }
        }
        if !machine.capacity_exempt
            && self.free_memory(&machine.zone) < guest_memory(&machine.config)
        {
            return Err(insufficient_memory_on_host());
        }
        let machine = self.live_machine_mut(app, id)?;
        machine.instance_id = ids::ulid();
        let scheduled = begin_user_transition(
            machine,
            id,
            ("start", MachineState::Starting),
            delays.boot,
            Step::Boot,
        );
        Ok((
            json!({"previous_state": previous.as_str(), "migrated": false, "new_host": ""}),
            vec![scheduled],
        ))
    }

    pub fn stop_machine(
        &mut self,
        app: &str,
        id: &str,
        delays: &Delays,
    ) -> ApiResult<Vec<Scheduled>> {
        let machine = self.machine(app, id)?;
        match machine.state {
            MachineState::Destroyed | MachineState::Destroying => {
                Err(ApiError::machine_not_found())
            }
            MachineState::Stopped | MachineState::Created | MachineState::Stopping => {
                Ok(Vec::new())
            }
            MachineState::Suspended => {
                let machine = self.live_machine_mut(app, id)?;
                machine.generation += 1;
                machine.state = MachineState::Stopped;
                machine.updated_at = rfc3339_seconds();
                push_event(machine, "stop", "stopped", "user");
                Ok(Vec::new())
            }
            MachineState::Started | MachineState::Starting => {
                let machine = self.live_machine_mut(app, id)?;
                Ok(vec![begin_user_transition(
                    machine,
                    id,
                    ("stop", MachineState::Stopping),
                    delays.stop,
                    Step::Halt,
                )])
            }
            _ => Err(ApiError::precondition(
                "unable to stop machine from current state",
            )),
        }
    }

    pub fn destroy_machine(
        &mut self,
        app: &str,
        id: &str,
        force: bool,
        delays: &Delays,
    ) -> ApiResult<Vec<Scheduled>> {
        let machine = self.machine(app, id)?;
        match machine.state {
            MachineState::Destroyed => return Err(ApiError::machine_not_found()),
            MachineState::Destroying => return Ok(Vec::new()),
            MachineState::Stopped
            | MachineState::Suspended
            | MachineState::Created
            | MachineState::Failed => {}
            ref other if !force => {
                return Err(ApiError::precondition(format!(
                    "failed_precondition: unable to destroy machine, not currently stopped or suspended (state: {other}); use force=true"
                )));
            }
            _ => {}
        }
        let machine = self.live_machine_mut(app, id)?;
        Ok(vec![begin_user_transition(
            machine,
            id,
            ("destroy", MachineState::Destroying),
            delays.destroy,
            Step::Destroy,
        )])
    }

    /// The process inside the machine exited (admin fault): `started` → `stopped` without a request.
    pub fn exit_machine(&mut self, id: &str, exit_code: i32) -> ApiResult<()> {
        let machine = self
            .machines
            .get_mut(id)
            .ok_or_else(ApiError::machine_not_found)?;
        if !matches!(
            machine.state,
            MachineState::Started | MachineState::Starting
        ) {
            return Err(ApiError::precondition(format!(
                "machine is {}, not running",
                machine.state
            )));
        }
        machine.generation += 1;
        machine.state = MachineState::Stopped;
        machine.updated_at = rfc3339_seconds();
        push_event(machine, "exit", "stopped", "flyd");
        if let Some(event) = machine.events.first_mut() {
            event.extra.insert(
                "request".to_owned(),
                json!({"exit_event": {"exit_code": exit_code, "requested_stop": false, "restarting": false}}),
            );
        }
        Ok(())
    }

    /// Whether a machine id is in use, by a machine or by a lost machine's tombstone (ids never repeat,
    /// so a tombstone cannot be mistaken for a new machine).
    pub(crate) fn machine_id_taken(&self, id: &str) -> bool {
        self.machines.contains_key(id) || self.lost_machines.contains_key(id)
    }

    /// The machine vanishes out of band: gone from every per-app call (404), its volume unbound, and a
    /// tombstone left for the org listing's `include_deleted=true`. Tombstones older than `retention` are
    /// dropped here, so they cannot pile up.
    pub fn lose_machine(&mut self, machine_id: &str, retention: Duration) -> ApiResult<()> {
        let mut machine = self
            .machines
            .remove(machine_id)
            .ok_or_else(ApiError::machine_not_found)?;
        for volume in self.volumes.values_mut() {
            if volume.attached_machine_id.as_deref() == Some(machine.id.as_str()) {
                volume.attached_machine_id = None;
            }
        }
        let now = now_ms();
        let retention_ms = u64::try_from(retention.as_millis()).unwrap_or(u64::MAX);
        self.lost_machines
            .retain(|_, lost| now.saturating_sub(lost.lost_at_ms) <= retention_ms);
        machine.generation += 1;
        machine.state = MachineState::Destroyed;
        machine.updated_at = rfc3339_seconds();
        machine.destroyed_at_ms = Some(now);
        machine.boot_env = BTreeMap::new();
        push_event(&mut machine, "destroy", "destroyed", "flyd");
        self.lost_machines.insert(
            machine.id.clone(),
            LostMachine {
                machine,
                lost_at_ms: now,
            },
        );
        Ok(())
    }

    /// Applies one timed step; returns the steps it schedules in turn.
    pub fn apply_step(&mut self, scheduled: &Scheduled, delays: &Delays) -> Vec<Scheduled> {
        let next = |target: &str, generation: u64, delay: Duration, step: Step| Scheduled {
            target: target.to_owned(),
            generation,
            delay,
            step,
        };
        match scheduled.step {
            Step::DetachVolume => {
                if let Some(volume) = self.volumes.get_mut(&scheduled.target) {
                    let holder_gone = volume.attached_machine_id.as_ref().is_none_or(|m| {
                        self.machines
                            .get(m)
                            .is_none_or(|m| m.state == MachineState::Destroyed)
                    });
                    if holder_gone {
                        volume.attached_machine_id = None;
                    }
                }
                return Vec::new();
            }
            Step::PurgeVolume => {
                if self
                    .volumes
                    .get(&scheduled.target)
                    .is_some_and(|v| v.state.is_deleted())
                {
                    self.volumes.remove(&scheduled.target);
                }
                return Vec::new();
            }
            _ => {}
        }
        let secrets: BTreeMap<String, String> = self
            .machines
            .get(&scheduled.target)
            .and_then(|m| self.apps.get(&m.app))
            .map(|app| {
                app.secrets
                    .iter()
                    .map(|(k, s)| (k.clone(), s.value.clone()))
                    .collect()
            })
            .unwrap_or_default();
        let Some(machine) = self.machines.get_mut(&scheduled.target) else {
            return Vec::new();
        };
        if machine.generation != scheduled.generation {
            return Vec::new();
        }
        let id = machine.id.clone();
        let generation = machine.generation;
        machine.updated_at = rfc3339_seconds();
        match scheduled.step {
            Step::Launch => {
                machine.state = MachineState::Starting;
                push_event(machine, "start", "starting", "flyd");
                vec![next(&id, generation, delays.boot, Step::Boot)]
            }
            Step::Boot => {
                let mut env = secrets;
                env.extend(machine.config.env.clone());
                match crate::image::boot_environment(env) {
                    Ok(env) => {
                        machine.state = MachineState::Started;
                        machine.boot_env = env;
                        push_event(machine, "start", "started", "flyd");
                    }
                    Err(reason) => {
                        // The image's start script exits 1: the machine stops right after booting.
                        tracing::warn!(tag = "flysim", reason = "boot_failed", machine_id = %id, detail = %reason);
                        machine.state = MachineState::Stopped;
                        machine.boot_env = BTreeMap::new();
                        push_event(machine, "exit", "stopped", "flyd");
                        if let Some(event) = machine.events.first_mut() {
                            event.extra.insert(
                                "request".to_owned(),
                                json!({"exit_event": {"exit_code": 1, "requested_stop": false, "restarting": false}, "error": reason}),
                            );
                        }
                    }
                }
                Vec::new()
            }
            Step::Halt => {
                machine.state = MachineState::Stopped;
                push_event(machine, "exit", "stopped", "flyd");
                Vec::new()
            }
            Step::Replaced { boot: true } => {
                machine.state = MachineState::Starting;
                push_event(machine, "start", "starting", "flyd");
                vec![next(&id, generation, delays.boot, Step::Boot)]
            }
            Step::Replaced { boot: false } => {
                machine.state = MachineState::Stopped;
                push_event(machine, "update", "stopped", "flyd");
                Vec::new()
            }
            Step::Destroy => {
                machine.state = MachineState::Destroyed;
                machine.destroyed_at_ms = Some(now_ms());
                push_event(machine, "destroy", "destroyed", "user");
                let volume = machine.config.mounts.first().map(|m| m.volume.clone());
                let mut follow = vec![next(
                    &id,
                    generation,
                    delays.destroyed_retention,
                    Step::PurgeMachine,
                )];
                if let Some(volume) = volume {
                    follow.push(next(&volume, 0, delays.volume_detach, Step::DetachVolume));
                }
                follow
            }
            Step::PurgeMachine => {
                self.machines.remove(&id);
                Vec::new()
            }
            Step::DetachVolume | Step::PurgeVolume => Vec::new(),
        }
    }

    // ---------------------------------------------------------------- volumes

    pub fn volume(&self, app: &str, id: &str) -> ApiResult<&VolumeRec> {
        self.app(app)?;
        self.volumes
            .get(id)
            .filter(|v| v.app == app)
            .ok_or_else(ApiError::volume_not_found)
    }

    pub fn volume_view(volume: &VolumeRec) -> Volume {
        let mut extra = Map::new();
        extra.insert("fstype".to_owned(), json!("ext4"));
        extra.insert("attached_alloc_id".to_owned(), Value::Null);
        extra.insert("type".to_owned(), json!("local"));
        Volume {
            id: volume.id.clone(),
            name: volume.name.clone(),
            state: volume.state.clone(),
            size_gb: volume.size_gb,
            region: volume.region.clone(),
            zone: Some(volume.zone.clone()),
            encrypted: Some(volume.encrypted),
            attached_machine_id: volume.attached_machine_id.clone(),
            created_at: volume.created_at.clone(),
            snapshot_retention: Some(volume.snapshot_retention),
            auto_backup_enabled: Some(true),
            host_status: Some("ok".to_owned()),
            extra,
        }
    }

    pub fn create_volume(
        &mut self,
        app: &str,
        body: &Value,
        effects: &mut DataEffects,
    ) -> ApiResult<Volume> {
        self.app(app)?;
        let text = |key: &str| body.get(key).and_then(Value::as_str).map(str::to_owned);
        let name = text("name").ok_or_else(|| ApiError::bad_request("name is required"))?;
        if !valid_volume_name(&name) {
            return Err(ApiError::bad_request(
                "invalid volume name: use at most 30 lowercase letters, digits and underscores",
            ));
        }
        let size_gb = match body.get("size_gb") {
            None | Some(Value::Null) => 3,
            Some(value) => value
                .as_u64()
                .filter(|s| (1..=500).contains(s))
                .and_then(|s| u32::try_from(s).ok())
                .ok_or_else(|| ApiError::bad_request("size_gb must be between 1 and 500"))?,
        };
        let snapshot_retention = match body.get("snapshot_retention") {
            None | Some(Value::Null) => 5,
            Some(value) => value
                .as_u64()
                .filter(|d| (1..=60).contains(d))
                .and_then(|d| u32::try_from(d).ok())
                .ok_or_else(|| {
                    ApiError::bad_request("snapshot_retention must be between 1 and 60 days")
                })?,
        };
        let source = match text("source_volume_id") {
            Some(source_id) => Some(
                self.volumes
                    .get(&source_id)
                    .filter(|v| v.app == app && !v.state.is_deleted())
                    .ok_or_else(|| {
                        ApiError::bad_request(format!("source volume {source_id} not found"))
                    })?
                    .clone(),
            ),
            None => None,
        };
        let region = match (text("region"), &source) {
            (Some(region), _) => region,
            (None, Some(source)) => source.region.clone(),
            (None, None) => self.regions.first().cloned().unwrap_or_default(),
        };
        if region.contains(',')
            || region_alias(&region).is_some()
            || !self.regions.contains(&region)
        {
            return Err(ApiError::bad_request(format!(
                "invalid region \"{region}\": volumes take a single region code"
            )));
        }
        let compute: Option<GuestConfig> = match body.get("compute") {
            None | Some(Value::Null) => None,
            Some(value) => Some(
                serde_json::from_value(value.clone())
                    .map_err(|err| ApiError::bad_request(format!("invalid compute: {err}")))?,
            ),
        };
        let needed = compute.as_ref().map_or(0, |c| u64::from(c.memory_mb));
        let least_loaded = self
            .hosts
            .values()
            .filter(|h| {
                h.region == region
                    && self.free_memory(&h.zone) >= needed
                    && (needed > 0 || h.memory_mb > 0)
            })
            .min_by_key(|h| self.volumes.values().filter(|v| v.zone == h.zone).count())
            .map(|h| h.zone.clone());
        let zone = least_loaded.ok_or_else(|| {
            ApiError::precondition(format!(
                "insufficient resources to create volume in region {region}"
            ))
            .with_code("insufficient_capacity")
        })?;
        let id = ids::volume_id();
        if let Some(source) = &source {
            effects.copy_volume_dir = Some((source.id.clone(), id.clone()));
        }
        let volume = VolumeRec {
            id: id.clone(),
            app: app.to_owned(),
            name,
            region,
            zone,
            size_gb: size_gb.max(source.as_ref().map_or(0, |s| s.size_gb)),
            state: VolumeState::Created,
            encrypted: body
                .get("encrypted")
                .and_then(Value::as_bool)
                .unwrap_or(true),
            attached_machine_id: None,
            created_at: rfc3339_millis(),
            snapshot_retention,
            snapshots: Vec::new(),
            deleted_at_ms: None,
        };
        let view = Self::volume_view(&volume);
        self.volumes.insert(id, volume);
        Ok(view)
    }

    pub fn delete_volume(
        &mut self,
        app: &str,
        id: &str,
        delays: &Delays,
        effects: &mut DataEffects,
    ) -> ApiResult<(Volume, Vec<Scheduled>)> {
        let volume = self.volume(app, id)?;
        if volume.state.is_deleted() {
            return Ok((Self::volume_view(volume), Vec::new()));
        }
        if let Some(machine) = &volume.attached_machine_id {
            return Err(ApiError::precondition(format!(
                "failed_precondition: volume is currently bound to machine: {machine}"
            )));
        }
        let volume = self
            .volumes
            .get_mut(id)
            .ok_or_else(ApiError::volume_not_found)?;
        volume.state = VolumeState::PendingDestroy;
        volume.deleted_at_ms = Some(now_ms());
        effects.remove_volume_dirs.push(id.to_owned());
        let scheduled = Scheduled {
            target: id.to_owned(),
            generation: 0,
            delay: delays.destroyed_retention,
            step: Step::PurgeVolume,
        };
        Ok((Self::volume_view(volume), vec![scheduled]))
    }

    pub fn snapshot_volume(&mut self, app: &str, id: &str) -> ApiResult<VolumeSnapshot> {
        self.volume(app, id)?;
        let volume = self
            .volumes
            .get_mut(id)
            .ok_or_else(ApiError::volume_not_found)?;
        if volume.state.is_deleted() {
            return Err(ApiError::precondition("volume is being destroyed"));
        }
        let snapshot = VolumeSnapshot {
            id: ids::snapshot_id(),
            size: u64::from(volume.size_gb) * 1024 * 1024 * 1024 / 8,
            volume_size: Some(u64::from(volume.size_gb) * 1024 * 1024 * 1024),
            digest: ids::ulid().to_ascii_lowercase(),
            created_at: rfc3339_millis(),
            status: "created".to_owned(),
            retention_days: Some(volume.snapshot_retention),
            extra: Map::new(),
        };
        volume.snapshots.push(snapshot.clone());
        Ok(snapshot)
    }

    /// Settles transitional states after a restart from persisted state (no timers survived).
    pub fn settle_after_restore(&mut self) {
        let now = rfc3339_seconds();
        for machine in self
            .machines
            .values_mut()
            .chain(
                self.lost_machines
                    .values_mut()
                    .map(|lost| &mut lost.machine),
            )
            .filter(|m| m.org_slug.is_empty())
        {
            if let Some(app) = self.apps.get(&machine.app) {
                machine.org_slug.clone_from(&app.org_slug);
            }
        }
        for machine in self.machines.values_mut() {
            let before = machine.state.clone();
            machine.state = match machine.state {
                MachineState::Creating => MachineState::Created,
                MachineState::Starting
                | MachineState::Replacing
                | MachineState::Restarting
                | MachineState::Updating => MachineState::Started,
                MachineState::Stopping | MachineState::Suspending => MachineState::Stopped,
                MachineState::Destroying => MachineState::Destroyed,
                ref other => other.clone(),
            };
            if machine.state != before {
                machine.updated_at.clone_from(&now);
            }
            if machine.state == MachineState::Started && machine.boot_env.is_empty() {
                machine.boot_env = machine.config.env.clone();
            }
        }
    }
}

/// Moves a machine into the transitional `state` a user's `event` call starts, records the event, and
/// schedules the `step` that finishes it after `delay`. The generation bump voids any step still pending
/// from an earlier transition.
fn begin_user_transition(
    machine: &mut MachineRec,
    id: &str,
    (event, state): (&str, MachineState),
    delay: Duration,
    step: Step,
) -> Scheduled {
    machine.generation += 1;
    let status = state.as_str().to_owned();
    machine.state = state;
    machine.updated_at = rfc3339_seconds();
    push_event(machine, event, &status, "user");
    Scheduled {
        target: id.to_owned(),
        generation: machine.generation,
        delay,
        step,
    }
}

pub(crate) fn push_event(machine: &mut MachineRec, kind: &str, status: &str, source: &str) {
    machine.events.insert(
        0,
        MachineEvent {
            id: Some(ids::ulid()),
            kind: kind.to_owned(),
            status: status.to_owned(),
            source: source.to_owned(),
            timestamp: i64::try_from(now_ms()).unwrap_or(i64::MAX),
            extra: Map::new(),
        },
    );
    machine.events.truncate(MAX_EVENTS);
}

/// Parses Fly's `/wait` `state` list (comma-separated or repeated).
pub fn wait_targets(values: &[String]) -> ApiResult<Vec<String>> {
    let mut out = Vec::new();
    for value in values {
        for part in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part {
                "started" | "stopped" | "suspended" | "destroyed" | "failed" | "settled" => {
                    out.push(part.to_owned())
                }
                other => {
                    return Err(ApiError::new(
                        StatusCode::BAD_REQUEST,
                        format!("invalid_argument: invalid state \"{other}\""),
                    ));
                }
            }
        }
    }
    if out.is_empty() {
        out.push("started".to_owned());
    }
    Ok(out)
}

/// Whether a machine in `state` satisfies a wait target.
pub fn state_matches(state: &MachineState, target: &str) -> bool {
    match target {
        "settled" => !state.is_transitional(),
        other => state.as_str() == other,
    }
}
