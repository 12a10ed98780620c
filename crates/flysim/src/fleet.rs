//! Bulk fleet seeding for benchmarks (`POST /_sim/fleet`, [`crate::SimAdmin::seed_fleet`]): apps,
//! volumes and machines already in their final state, as the control plane would have left them, without
//! thousands of API calls and lifecycle timers.
//!
//! Each instance gets its app (created in the org when absent), a 1 GB volume in the region, and a
//! machine in `started` or `stopped` whose config mounts the volume at `/root` and carries
//! `metadata[metadata_key] = user_id`, with the volume bound to it. The whole batch is one change of the
//! world (one wake-up, one save when state persistence is on) and is linear in its size, so 100,000
//! instances take seconds.
//!
//! Seeded machines are capacity exempt: they neither reserve nor need host memory, in any state, so a
//! fleet larger than the simulated hosts could hold still seeds, starts and updates. Machines created
//! through the API keep the usual accounting (seeded ones do not count against it).

use std::collections::{BTreeMap, HashMap};

use kiloclaw_core::fly::{MachineConfig, MachineState, VolumeState};
use kiloclaw_core::machine::{METADATA_USER_ID, gateway_service, guest_for, mount};
use serde::{Deserialize, Serialize};

use crate::error::{ApiError, ApiResult};
use crate::ids;
use crate::state::{
    MachineRec, VolumeRec, World, push_event, rfc3339_millis, rfc3339_seconds, valid_app_name,
};

/// The image seeded machines run when the request names none.
pub const DEFAULT_SEED_IMAGE: &str = "registry.fly.io/kiloclaw-machines:latest";
/// Size of each seeded volume.
const SEED_VOLUME_GB: u32 = 1;
/// Seeded volumes' name (Fly does not require unique names).
const SEED_VOLUME_NAME: &str = "kiloclaw_seed";

/// The body of `POST /_sim/fleet`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetSeed {
    pub org_slug: String,
    /// A single region code; the simulator's default region (its first) when absent.
    #[serde(default)]
    pub region: Option<String>,
    pub instances: Vec<SeedInstance>,
}

/// One user's instance to seed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeedInstance {
    pub app: String,
    pub user_id: String,
    pub state: SeedState,
    /// [`DEFAULT_SEED_IMAGE`] when absent.
    #[serde(default)]
    pub image: Option<String>,
    /// [`METADATA_USER_ID`] when absent.
    #[serde(default)]
    pub metadata_key: Option<String>,
}

/// The state a seeded machine is in from the start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SeedState {
    Started,
    Stopped,
}

/// What was created for one instance (the answer lists them in input order).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeededInstance {
    pub app: String,
    pub user_id: String,
    pub machine_id: String,
    pub volume_id: String,
}

impl World {
    /// Seeds the whole batch or nothing: every instance is checked before anything is created.
    pub fn seed_fleet(&mut self, seed: &FleetSeed) -> ApiResult<Vec<SeededInstance>> {
        if seed.org_slug.is_empty() {
            return Err(ApiError::bad_request("org_slug is required"));
        }
        let region = match seed.region.as_deref().map(str::trim) {
            None | Some("") => self
                .regions
                .first()
                .cloned()
                .ok_or_else(|| ApiError::bad_request("the simulator has no regions"))?,
            Some(code) if self.regions.iter().any(|r| r == code) => code.to_owned(),
            Some(code) => {
                return Err(ApiError::bad_request(format!(
                    "invalid region \"{code}\": expected one of the simulator's region codes"
                )));
            }
        };
        let zones: Vec<String> = self
            .hosts
            .values()
            .filter(|h| h.region == region)
            .map(|h| h.zone.clone())
            .collect();
        if zones.is_empty() {
            return Err(ApiError::bad_request(format!(
                "region \"{region}\" has no hosts"
            )));
        }
        for instance in &seed.instances {
            if !valid_app_name(&instance.app) {
                return Err(ApiError::unprocessable(format!(
                    "invalid app name \"{}\": under 63 chars using numbers, lowercase letters and dashes",
                    instance.app
                )));
            }
            if let Some(app) = self.apps.get(&instance.app)
                && app.org_slug != seed.org_slug
            {
                return Err(ApiError::unprocessable(format!(
                    "app \"{}\" already exists in org \"{}\"",
                    instance.app, app.org_slug
                )));
            }
            if instance.metadata_key.as_deref() == Some("") {
                return Err(ApiError::bad_request("metadata_key must not be empty"));
            }
            if instance
                .image
                .as_deref()
                .is_some_and(|i| i.trim().is_empty())
            {
                return Err(ApiError::bad_request("image must not be empty"));
            }
        }

        // Volumes spread over the region's hosts, least loaded first, counted once up front.
        let mut load: HashMap<&str, usize> = zones.iter().map(|z| (z.as_str(), 0)).collect();
        for volume in self.volumes.values() {
            if let Some(count) = load.get_mut(volume.zone.as_str()) {
                *count += 1;
            }
        }
        let mut placements = Vec::with_capacity(seed.instances.len());
        for _ in &seed.instances {
            let zone = zones
                .iter()
                .min_by_key(|z| load.get(z.as_str()).copied().unwrap_or(0))
                .cloned()
                .unwrap_or_default();
            if let Some(count) = load.get_mut(zone.as_str()) {
                *count += 1;
            }
            placements.push(zone);
        }

        let machine_time = rfc3339_seconds();
        let volume_time = rfc3339_millis();
        let guest = guest_for(None);
        let mut seeded = Vec::with_capacity(seed.instances.len());
        for (instance, zone) in seed.instances.iter().zip(placements) {
            self.insert_app(&instance.app, &seed.org_slug, None);
            let machine_id = loop {
                let candidate = ids::machine_id();
                if !self.machine_id_taken(&candidate) {
                    break candidate;
                }
            };
            let volume_id = loop {
                let candidate = ids::volume_id();
                if !self.volumes.contains_key(&candidate) {
                    break candidate;
                }
            };
            let config = MachineConfig {
                image: instance
                    .image
                    .clone()
                    .unwrap_or_else(|| DEFAULT_SEED_IMAGE.to_owned()),
                guest: Some(guest.clone()),
                services: vec![gateway_service()],
                mounts: vec![mount(&volume_id)],
                metadata: BTreeMap::from([(
                    instance
                        .metadata_key
                        .clone()
                        .unwrap_or_else(|| METADATA_USER_ID.to_owned()),
                    instance.user_id.clone(),
                )]),
                ..MachineConfig::default()
            };
            let state = match instance.state {
                SeedState::Started => MachineState::Started,
                SeedState::Stopped => MachineState::Stopped,
            };
            let mut machine = MachineRec {
                id: machine_id.clone(),
                app: instance.app.clone(),
                org_slug: seed.org_slug.clone(),
                name: ids::machine_name(),
                region: region.clone(),
                zone: zone.clone(),
                state: state.clone(),
                instance_id: ids::ulid(),
                boot_env: if state == MachineState::Started {
                    config.env.clone()
                } else {
                    BTreeMap::new()
                },
                config,
                private_ip: ids::private_ip(),
                created_at: machine_time.clone(),
                updated_at: machine_time.clone(),
                events: Vec::new(),
                generation: 1,
                destroyed_at_ms: None,
                capacity_exempt: true,
            };
            push_event(&mut machine, "launch", "created", "user");
            match state {
                MachineState::Started => push_event(&mut machine, "start", "started", "flyd"),
                _ => push_event(&mut machine, "exit", "stopped", "flyd"),
            }
            self.volumes.insert(
                volume_id.clone(),
                VolumeRec {
                    id: volume_id.clone(),
                    app: instance.app.clone(),
                    name: SEED_VOLUME_NAME.to_owned(),
                    region: region.clone(),
                    zone,
                    size_gb: SEED_VOLUME_GB,
                    state: VolumeState::Created,
                    encrypted: true,
                    attached_machine_id: Some(machine_id.clone()),
                    created_at: volume_time.clone(),
                    snapshot_retention: 5,
                    snapshots: Vec::new(),
                    deleted_at_ms: None,
                },
            );
            self.machines.insert(machine_id.clone(), machine);
            seeded.push(SeededInstance {
                app: instance.app.clone(),
                user_id: instance.user_id.clone(),
                machine_id,
                volume_id,
            });
        }
        Ok(seeded)
    }
}
